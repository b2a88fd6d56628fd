"""``galclust report``: one self-contained HTML page from whatever stages run folders hold.

The page has a section per stage found (:mod:`galclust.report.stages`), in pipeline order, with
the figures embedded (no network is needed to view it, and it can be mailed as one file), the
numbers in tables, the stages that are not there listed at the top, and the provenance of
every stage at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from galclust import __version__
from galclust.catalog.schema import atomic_write_text
from galclust.exceptions import GalclustFileError
from galclust.provenance import now
from galclust.report.html import Page
from galclust.report.sections import SECTIONS, provenance
from galclust.report.stages import STAGES, Stage, find_stages, provenance_files

__all__ = ["STAGES", "ReportResult", "Stage", "build_report", "find_stages"]


@dataclass
class ReportResult:
    """Where the report went and what it holds."""

    output: Path
    stages: list[Stage]
    absent: list[str]  # stage kinds not found
    images: int  # embedded
    missing_images: list[str]
    seconds: float

    def summary(self) -> str:
        found = ", ".join(dict.fromkeys(s.kind for s in self.stages))
        lines = [
            f"wrote {self.output}: {len(self.stages)} stage(s) ({found}), {self.images} images "
            f"embedded, in {self.seconds:.1f} s"
        ]
        if self.absent:
            lines.append(f"not in these runs: {', '.join(self.absent)}")
        if self.missing_images:
            lines.append(
                f"{len(self.missing_images)} image(s) missing, shown as placeholders: "
                + ", ".join(self.missing_images[:3])
                + (" ..." if len(self.missing_images) > 3 else "")
            )
        return "\n".join(lines)


def build_report(
    runs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    title: str = "galclust report",
) -> ReportResult:
    """Write the HTML report of the run folders ``runs`` to ``output``.

    Parameters
    ----------
    runs : sequence of paths
        Run folders: a ``galclust demo`` folder, or the ``-o`` folders of ``simulate``,
        ``train``, ``sweep``, ``cluster``, ``train regressor``, or folders holding a scanned
        catalog or a latents table with their provenance files. Searched three levels down.
    output : path
        The HTML file, written atomically.

    Raises
    ------
    GalclustValueError
        A run that is not a folder, or no galclust output in any of them.
    GalclustFileError
        ``output`` cannot be written.
    """
    start = time.perf_counter()
    stages = find_stages(runs)
    path = Path(output)
    page = Page(
        title,
        subtitle=f"{', '.join(str(r) for r in runs)} | galclust {__version__} | "
        f"{now():%Y-%m-%d %H:%M} UTC",
        folder=path.resolve().parent,
    )
    counts: dict[str, int] = {}
    for stage in stages:
        counts[stage.kind] = counts.get(stage.kind, 0) + 1
    for stage in stages:
        title_ = STAGES[stage.kind]
        if counts[stage.kind] > 1:
            title_ = f"{title_}: {stage.name}"
        anchor = f"{stage.kind}-{len(page.sections)}"
        page.add(anchor, title_, SECTIONS[stage.kind](page, stage))
    page.add("provenance", "Provenance", provenance(provenance_files(stages)))
    absent = [kind for kind in STAGES if kind not in counts]
    try:
        atomic_write_text(path, page.render([STAGES[k] for k in absent]))
    except OSError as exc:
        raise GalclustFileError(
            f"cannot write the report {path} ({exc.strerror}); choose another -o"
        ) from exc
    return ReportResult(
        path, stages, absent, page.images, page.missing, time.perf_counter() - start
    )
