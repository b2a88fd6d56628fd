"""``galclust catalog check``: validate a catalog made elsewhere (Zoobot CSV, FITS table, ...).

Every row's ``file_loc`` is looked up and its header read, as ``galclust scan`` would; the
result is the same catalog with the scan columns filled in, so that a Zoobot-style catalog can
be used by every later galclust command.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from galclust.catalog.rows import to_frame, write_rows
from galclust.catalog.scan import apply_shape
from galclust.catalog.schema import SCAN_COLUMNS, coerce_scan_columns, read_catalog
from galclust.progress import Progress


@dataclass
class CheckReport:
    """A checked catalog and the count of rows per status."""

    source: str
    catalog: pd.DataFrame
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        """True when every row's file exists, is readable and has the expected shape."""
        return set(self.counts) <= {"ok"}

    def summary(self) -> str:
        total = sum(self.counts.values())
        lines = [f"{self.source}: {self.counts.get('ok', 0)} of {total} rows ok"]
        for status, count in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            if status == "ok":
                continue
            example = self.catalog.loc[self.catalog.status == status].iloc[0]
            lines.append(
                f"  {count:>7} {status}: e.g. {example.id_str} {example.file_loc}: {example.detail}"
            )
        return "\n".join(lines)


_SHAPE_COLUMNS = ("channels", "height", "width")


def check_catalog(
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, int, int] | None = None,
    workers: int = 2,
    verify: bool = False,
) -> CheckReport:
    """Check that every file of a catalog exists, is a readable image, and has the right shape.

    Parameters
    ----------
    path : path
        Catalog as Parquet, CSV or FITS table with at least ``id_str`` and ``file_loc``.
    shape : (C, H, W), optional
        Expected shape; rows of another shape get ``status == "wrong_shape"``.
    workers : int, default 2
        Processes reading headers.
    verify : bool, default False
        Also decode pixels (see ``galclust scan --verify``).

    Returns
    -------
    CheckReport
        ``catalog`` holds the input columns plus the scan columns; ``status`` is ``missing``
        for absent files and ``stale`` where the catalog's own shape columns disagree with the
        file's header.
    """
    frame = read_catalog(path)
    has_shape = set(_SHAPE_COLUMNS) <= set(frame)
    recorded = frame[list(_SHAPE_COLUMNS)].reset_index(drop=True) if has_shape else None
    progress = Progress(len(frame), "checking files")
    try:
        table = write_rows(
            frame["file_loc"].fillna("").tolist(),
            None,
            progress,
            workers=workers,
            verify=verify,
            picked=True,
        )
    finally:
        progress.close()
    rows = to_frame(table)
    scan_columns = [c for c in SCAN_COLUMNS if c not in ("id_str", "file_loc")]
    out = frame.drop(columns=[c for c in scan_columns if c in frame])
    out = pd.concat([out.reset_index(drop=True), rows[scan_columns]], axis=1)
    out = apply_shape(coerce_scan_columns(out), shape)
    if recorded is not None:
        header = out[list(_SHAPE_COLUMNS)].astype("Int64")
        stored = recorded.apply(pd.to_numeric, errors="coerce").astype("Int64")
        differs = ((header != stored) & stored.notna() & header.notna()).any(axis=1).to_numpy()
        for i in differs.nonzero()[0]:
            out.loc[out.index[i], "status"] = "stale"
            out.loc[out.index[i], "detail"] = (
                f"catalog says shape {','.join(map(str, stored.iloc[i]))}, "
                f"header says {','.join(map(str, header.iloc[i]))}; rerun galclust scan"
            )
    return CheckReport(source=str(Path(path)), catalog=out, counts=dict(Counter(out["status"])))
