"""Which galclust stages a set of run folders holds, found from the files each stage writes.

Every stage leaves a marker that says what it is, so a report can be built from a demo folder,
from a user's scattered run folders, or from one stage alone:

==============  =========================================================================
stage           marker
==============  =========================================================================
``simulate``    a folder with ``simulation.json`` (or ``provenance.json`` of ``simulate``)
``scan``        ``X.parquet`` with ``X.provenance.json`` whose command is ``scan``
``sweep``       a folder with ``sweep.csv`` (its runs, one per latent size, are not listed apart)
``train``       a folder with ``run.json`` of a VAE or contrastive run and ``metrics.csv``
``embed``       ``X.parquet`` with ``X.provenance.json`` whose command is ``embed``
``cluster``     a folder with ``summary.json`` holding ``scores_per_k``
``regress``     a folder with ``run.json`` of a regressor run (its options name ``targets``)
``explore``     ``X.html`` with ``X.provenance.json`` whose command is ``explore``
==============  =========================================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from galclust.exceptions import GalclustValueError
from galclust.provenance import provenance_path

#: Stages in pipeline order, with the title of their report section.
STAGES = {
    "simulate": "Simulated galaxies",
    "scan": "Catalogue of cutouts",
    "sweep": "Latent-size comparison",
    "train": "Encoder training",
    "embed": "Latent vectors",
    "cluster": "Clusters",
    "regress": "Measuring galaxies (regressor)",
    "explore": "Interactive explorer",
}
_MAX_DEPTH = 3  # a demo folder holds its stages one or two levels down
_SKIP = {"checkpoints", "cutouts", "previews", "reconstructions", "gallery", "plots", "thumbs"}


@dataclass(frozen=True)
class Stage:
    """One stage's output: its kind, where it is, and what it says about itself."""

    kind: str
    path: Path  # the folder, or the parquet file of a scan or embed stage
    info: dict[str, Any]  # run.json / summary.json / provenance.json content, as found

    @property
    def name(self) -> str:
        return self.path.name


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _folder_stages(folder: Path) -> Iterator[Stage]:
    if (folder / "simulation.json").is_file():
        yield Stage("simulate", folder, _read_json(folder / "simulation.json") or {})
    elif (folder / "images.npy").is_file() and (folder / "provenance.json").is_file():
        about = _read_json(folder / "provenance.json") or {}
        if about.get("command") == "simulate":  # made before simulation.json was written
            yield Stage("simulate", folder, about)
    if (folder / "sweep.csv").is_file():
        yield Stage("sweep", folder, _read_json(folder / "provenance.json") or {})
    run = _read_json(folder / "run.json") if (folder / "run.json").is_file() else None
    if run is not None:
        options = run.get("options", {})
        if "targets" in options:
            yield Stage("regress", folder, run)
        elif (folder / "metrics.csv").is_file():
            yield Stage("train", folder, run)
    summary = _read_json(folder / "summary.json") if (folder / "summary.json").is_file() else None
    if summary is not None and "scores_per_k" in summary:
        yield Stage("cluster", folder, summary)
    for provenance in sorted(folder.glob("*.provenance.json")):
        about = _read_json(provenance) or {}
        table = folder / (provenance.name.removesuffix(".provenance.json") + ".parquet")
        if about.get("command") in ("scan", "embed") and table.is_file():
            yield Stage("scan" if about["command"] == "scan" else "embed", table, about)
        page = table.with_suffix(".html")
        if about.get("command") == "explore" and page.is_file():
            yield Stage("explore", page, about)


def _walk(folder: Path, depth: int) -> Iterator[Stage]:
    yield from _folder_stages(folder)
    if depth >= _MAX_DEPTH or (folder / "sweep.csv").is_file():  # its runs are in its section
        return
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in _SKIP)
    except OSError:
        return
    for child in children:
        if not child.name.startswith("."):
            yield from _walk(child, depth + 1)


def find_stages(runs: Sequence[str | os.PathLike[str]]) -> list[Stage]:
    """Every stage output under the run folders ``runs`` (searched three levels down), in
    pipeline order.

    Raises
    ------
    GalclustValueError
        A run that is not a folder, or no galclust output under any of them.
    """
    if not runs:
        raise GalclustValueError("give at least one run folder (e.g. galclust-demo)")
    found: list[Stage] = []
    for run in runs:
        folder = Path(run)
        if not folder.is_dir():
            what = "does not exist" if not folder.exists() else "is a file, not a folder"
            raise GalclustValueError(
                f"{folder} {what}; give run folders (a galclust demo folder, or the -o folder "
                "of train, cluster, simulate ...)"
            )
        found.extend(_walk(folder, 0))
    if not found:
        listed = ", ".join(str(r) for r in runs)
        raise GalclustValueError(
            f"{listed} holds no galclust output (no simulation.json, run.json, summary.json, "
            "sweep.csv or scan/embed provenance); give a folder written by galclust demo, "
            "train, cluster or simulate"
        )
    unique = {(s.kind, s.path.resolve()): s for s in found}
    order = list(STAGES)
    return sorted(unique.values(), key=lambda s: (order.index(s.kind), str(s.path)))


def provenance_files(stages: Sequence[Stage]) -> list[tuple[Path, dict[str, Any]]]:
    """The provenance record of each stage (``provenance.json`` in its folder, or
    ``X.provenance.json`` beside its file), where one was written."""
    out = []
    for stage in stages:
        record = provenance_path(stage.path)
        about = _read_json(record) if record.is_file() else None
        if about is not None:
            out.append((record, about))
    return out
