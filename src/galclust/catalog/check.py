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

from galclust.catalog.readers import ImageInfo
from galclust.catalog.scan import CHUNK, apply_shape, map_inspect
from galclust.catalog.schema import coerce_scan_columns, read_catalog


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
    recorded = frame[list(_SHAPE_COLUMNS)].copy() if set(_SHAPE_COLUMNS) <= set(frame) else None
    locs = [str(loc) for loc in frame["file_loc"]]
    sizes = []
    for loc in locs:
        try:
            sizes.append(os.stat(loc).st_size)
        except OSError:
            sizes.append(-1)
    jobs = [(loc, size, verify) for loc, size in zip(locs, sizes, strict=True) if size >= 0]
    infos = iter(
        info
        for chunk in map_inspect([jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)], workers)
        for info in chunk
    )
    results = [
        next(infos)
        if size >= 0
        else ImageInfo(None, status="missing", detail="file does not exist")
        for size in sizes
    ]
    out = frame.drop(columns=[c for c in ("status", "detail") if c in frame]).copy()
    for name in ("format", "channels", "height", "width", "dtype", "hdu", "status", "detail"):
        out[name] = [getattr(info, name) for info in results]
    out["bytes"] = [max(size, 0) for size in sizes]
    out["mtime"] = [
        os.stat(loc).st_mtime if size >= 0 else 0.0 for loc, size in zip(locs, sizes, strict=True)
    ]
    out["verified"] = [verify and info.status == "ok" for info in results]
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
