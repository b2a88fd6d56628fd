"""``galclust scan``: turn folders of galaxy cutouts into a catalog, reading headers only.

A first pass lists the folders below each root (loop-safe) and counts candidate files. The
second pass streams file paths to ``workers`` processes, which stat each file, parse its header
and return finished rows; the main process appends them to a journal beside the output
(the folder ``.<name>.scan-journal``), flushed every chunk. The catalog is written only at the end,
atomically. After Ctrl-C or a crash, rerunning the same command reuses the journal and the
previous catalog and re-reads only what is missing or changed (by size and modification time).
Memory grows only with the catalog itself (a few hundred bytes per file), never with pixels.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from galclust.catalog.readers import IMAGE_SUFFIXES, STEM_SUFFIXES, stem_of
from galclust.catalog.rows import ROW_SCHEMA, Journal, to_frame, write_rows
from galclust.catalog.schema import (
    SCAN_COLUMNS,
    atomic_write_text,
    check_catalog_suffix,
    coerce_scan_columns,
    empty_catalog,
    read_catalog,
    write_catalog,
)
from galclust.catalog.walk import iter_files, list_folders
from galclust.exceptions import (
    CatalogError,
    GalclustFileError,
    GalclustValueError,
    NoImagesFoundWarning,
)
from galclust.progress import Progress

log = logging.getLogger(__name__)

_ID_SEPARATOR = "__"
#: Rows with these statuses are re-read on every rescan: fixing them changes no size or mtime.
_ALWAYS_REREAD = frozenset({"unreadable", "missing"})


def parse_shape(text: str) -> tuple[int, int, int]:
    """Parse ``"C,H,W"`` (e.g. ``"3,256,256"``) into a tuple of three positive ints."""
    parts = text.replace("x", ",").split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise GalclustValueError(
            f"--shape {text!r} is not C,H,W; give three positive integers, e.g. --shape 3,256,256"
        )
    return values[0], values[1], values[2]


@dataclass(frozen=True)
class ScanOptions:
    """Everything that decides a scan's result; saved in the provenance file."""

    roots: tuple[str, ...]
    output: str | None = None
    shape: tuple[int, int, int] | None = None
    patterns: tuple[str, ...] = ()
    workers: int = 2
    verify: bool = False


@dataclass
class ScanReport:
    """The catalog a scan produced and how it got there."""

    catalog: pd.DataFrame
    counts: dict[str, int]
    files_read: int
    files_reused: int
    skipped_non_images: int
    seconds: float
    unreadable_folders: list[str] = field(default_factory=list)

    @property
    def files_per_second(self) -> float:
        total = self.files_read + self.files_reused
        return total / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        """A few lines for the terminal: kept, rejected per reason, speed."""
        kept = self.counts.get("ok", 0)
        total = sum(self.counts.values())
        lines = [
            f"kept {kept} of {total} image files; read {self.files_read} headers, reused "
            f"{self.files_reused} unchanged rows, {self.files_per_second:,.0f} files/s"
        ]
        for status, count in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            if status != "ok":
                example = self.catalog.loc[self.catalog.status == status].iloc[0]
                lines.append(
                    f"  rejected {count:>7} {status}: e.g. {example.file_loc}: {example.detail}"
                )
        if self.skipped_non_images:
            lines.append(f"  ignored {self.skipped_non_images} files that are not images by name")
        for folder in self.unreadable_folders[:5]:
            lines.append(f"  could not list folder {folder}")
        return "\n".join(lines)


def _journal(output: Path) -> Journal:
    return Journal(output.with_name(f".{output.name}.scan-journal"))


def _load_prior(output: Path | None) -> pd.DataFrame:
    """Rows from an earlier catalog at ``output`` and from an interrupted scan's journal."""
    frames = []
    if output is not None and output.exists():
        earlier = read_catalog(output, validate=False)
        missing = [c for c in ("file_loc", "bytes", "mtime", "status") if c not in earlier]
        if missing:
            raise CatalogError(
                f"{output} exists but is not a galclust scan catalog (no column {missing[0]!r}); "
                "choose another -o, or check it with galclust catalog check"
            )
        frames.append(coerce_scan_columns(earlier))
    if output is not None and _journal(output).folder.is_dir():
        frames.append(_journal(output).read())
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_catalog()
    prior = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return prior.drop_duplicates("file_loc", keep="last").reset_index(drop=True)


def apply_shape(frame: pd.DataFrame, shape: tuple[int, int, int] | None) -> pd.DataFrame:
    """Set ``status`` to ok or wrong_shape for every row whose header was read fine."""
    readable = frame["status"].isin(["ok", "wrong_shape"]).to_numpy(dtype=bool)
    if shape is None:
        wrong = np.zeros(len(frame), dtype=bool)
    else:
        dims = frame[["channels", "height", "width"]].fillna(-1).to_numpy(dtype=np.int64)
        wrong = readable & (dims != np.array(shape)).any(axis=1)
    ok = readable & ~wrong
    frame.loc[ok, "status"] = "ok"
    stale_detail = ok & frame["detail"].str.startswith("shape ").fillna(False).to_numpy(dtype=bool)
    frame.loc[stale_detail, "detail"] = ""
    if wrong.any() and shape is not None:
        # few distinct shapes among many rows: one message per shape
        codes, shapes = pd.MultiIndex.from_arrays(list(dims[wrong].T)).factorize()
        wanted = ",".join(map(str, shape))
        texts = np.array([f"shape {c},{h},{w}, not {wanted}" for c, h, w in shapes], dtype=object)
        frame.loc[wrong, "status"] = "wrong_shape"
        frame.loc[wrong, "detail"] = texts[codes]
    return frame


def assign_ids(paths: Sequence[str]) -> list[str]:
    """Unique ``id_str`` for each path: the file stem, with parent folders where stems clash.

    ``a/gal1.fits`` and ``b/gal1.fits`` get ``a__gal1`` and ``b__gal1``; a stem used once keeps
    its plain name. Files of one folder that differ only in extension get the extension added.
    Depends only on the set of paths, so rescanning the same files gives the same ids.
    """
    ids = [stem_of(os.path.basename(p)) for p in paths]
    return _disambiguate(paths, ids)


def _ids_of(locs: pd.Series) -> pd.Series:
    """:func:`assign_ids` for a column, vectorised: only clashing stems go through Python."""
    names = locs.str.replace(r"^.*/", "", regex=True)
    stems = names.str.replace(f"(?i){STEM_SUFFIXES.pattern}", "", regex=True)  # RE2 in pyarrow
    stems = stems.where(stems != "", names)
    clash = stems.duplicated(keep=False).to_numpy()
    if not clash.any():
        return stems.astype("string")
    ids = np.array(stems.astype(object).to_numpy(), dtype=object)
    rows = np.flatnonzero(clash)
    ids[rows] = _disambiguate([locs.iloc[i] for i in rows], [ids[i] for i in rows])
    result = pd.Series(ids, index=locs.index, dtype="string")
    if result.duplicated().any():  # a new id met an unclashed stem: redo on every path
        result = pd.Series(assign_ids(list(locs)), index=locs.index, dtype="string")
    return result


def _disambiguate(paths: Sequence[str], ids: list[str]) -> list[str]:
    """Prepend parent folders to the ids that clash until every id is unique."""
    depth: dict[int, int] = {}
    while True:
        counts = Counter(ids)
        clashing = [i for i, ident in enumerate(ids) if counts[ident] > 1]
        if not clashing:
            return ids
        for i in clashing:  # only clashing paths are split into folders: few, in practice
            depth[i] = level = depth.get(i, 0) + 1
            comps = paths[i].split(os.sep)
            if level < len(comps):
                ids[i] = _ID_SEPARATOR.join([*comps[-1 - level : -1], stem_of(comps[-1])])
            elif level == len(comps):  # every folder used: the full name tells them apart
                ids[i] = _ID_SEPARATOR.join([*comps[1:-1], comps[-1]])
            else:  # the same path given twice
                ids[i] = f"{_ID_SEPARATOR.join([*comps[1:-1], comps[-1]])}~{i}"


def scan_catalog(options: ScanOptions) -> ScanReport:
    """Scan folders into a catalog, reusing an earlier catalog or journal at ``options.output``.

    Parameters
    ----------
    options : ScanOptions
        Roots, output path (optional: without one nothing is written), ``shape`` to keep,
        ``patterns`` (file-name globs; default: every image suffix), ``workers``, ``verify``.

    Returns
    -------
    ScanReport
        The catalog (columns in :data:`galclust.catalog.schema.SCAN_COLUMNS`) and counts.

    Raises
    ------
    GalclustFileError
        A root does not exist, or the output folder cannot be made.
    GalclustValueError
        ``workers`` < 1, or the output is not a catalog type.
    """
    start = time.perf_counter()
    for root in options.roots:
        if not os.path.exists(root):
            raise GalclustFileError(f"{root} does not exist; give folders of image files to scan")
    if options.workers < 1:
        raise GalclustValueError(f"--workers {options.workers} must be at least 1")
    output = Path(options.output).resolve() if options.output else None
    if output is not None:
        check_catalog_suffix(output)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GalclustFileError(
                f"cannot create the output folder {output.parent} ({exc.strerror}); "
                "choose another -o path"
            ) from exc

    tree = list_folders(options.roots, options.patterns)
    log.info(
        "found %d candidate files in %d folders in %.1f s",
        tree.candidates, len(tree.folders), time.perf_counter() - start,
    )  # fmt: skip
    prior = _load_prior(output)
    reuse = _Reuse(prior, options.verify)
    journal = _journal(output) if output is not None else None
    progress = Progress(
        tree.candidates, "verifying images" if options.verify else "reading headers"
    )
    try:
        fresh = write_rows(
            reuse.filter(iter_files(tree, options.patterns), progress),
            journal,
            progress,
            workers=options.workers,
            verify=options.verify,
            picked=bool(options.patterns),
        )
    except OSError as exc:  # per-file problems are rows: this is the journal itself
        raise GalclustFileError(
            f"cannot write the scan journal {journal and journal.folder} ({exc.strerror}); "
            "free some space and run the same command again: rows already written are kept"
        ) from exc
    finally:
        progress.close()
        if journal is not None:
            journal.close()

    files_read = fresh.num_rows
    kept = prior[reuse.keep]
    if len(kept):
        earlier = pa.Table.from_pandas(
            kept[ROW_SCHEMA.names], schema=ROW_SCHEMA, preserve_index=False
        )
        fresh = pa.concat_tables([earlier, fresh])
    # sorted in Arrow (stable: of two rows for one file, the later stays later), then one
    # conversion to pandas: the fewest copies of the catalog in memory
    catalog = to_frame(fresh.take(pc.sort_indices(fresh, [("file_loc", "ascending")])))
    del fresh
    if len(prior) or tree.files:  # otherwise the walk listed each file once
        catalog = catalog.drop_duplicates("file_loc", keep="last").reset_index(drop=True)
    catalog = apply_shape(catalog, options.shape)
    catalog["id_str"] = _ids_of(catalog["file_loc"])
    catalog = coerce_scan_columns(catalog[list(SCAN_COLUMNS)])

    if catalog.empty:
        warnings.warn(
            f"no image files found under {', '.join(options.roots)}; the catalog is empty "
            f"(looked for {', '.join(options.patterns or IMAGE_SUFFIXES)})",
            NoImagesFoundWarning,
            stacklevel=2,
        )
    report = ScanReport(
        catalog=catalog,
        counts={str(k): int(v) for k, v in catalog["status"].value_counts().items()},
        files_read=files_read,
        files_reused=reuse.count,
        skipped_non_images=tree.others,
        seconds=time.perf_counter() - start,
        unreadable_folders=tree.unreadable,
    )
    if output is not None:
        try:
            write_scan_outputs(report, output)
        except OSError as exc:
            raise GalclustFileError(
                f"cannot write {output} ({exc.strerror}); the previous catalog, if any, is "
                "unchanged and the scan journal is kept: fix this and run the same command again"
            ) from exc
        _journal(output).remove()
    return report


class _Reuse:
    """Decide which files an earlier catalog already describes (same size and mtime)."""

    def __init__(self, prior: pd.DataFrame, verify: bool) -> None:
        usable = ~prior["status"].isin(list(_ALWAYS_REREAD)).to_numpy(dtype=bool)
        if verify:
            usable &= prior["verified"].to_numpy(dtype=bool)
        locs = prior["file_loc"].tolist()
        self.index = {locs[i]: int(i) for i in np.flatnonzero(usable)}
        self.sizes = prior["bytes"].to_numpy()
        self.mtimes = prior["mtime"].to_numpy()
        self.keep = np.zeros(len(prior), dtype=bool)
        self.count = 0

    def filter(self, paths: Iterable[str], progress: Progress) -> Iterator[str]:
        """Yield the paths that must be read; mark the others kept."""
        for path in paths:
            i = self.index.get(path)
            if i is not None:
                try:
                    info = os.stat(path)
                except OSError:
                    yield path
                    continue
                if info.st_size == self.sizes[i] and abs(info.st_mtime - self.mtimes[i]) < 1e-3:
                    self.keep[i] = True
                    self.count += 1
                    progress.update(1)
                    continue
            yield path


def write_scan_outputs(report: ScanReport, output: Path) -> None:
    """Write the catalog, ``<stem>.txt`` (kept paths) and ``<stem>.rejected.txt``, atomically."""
    catalog = report.catalog
    write_catalog(catalog, output)
    kept = catalog.loc[catalog["status"] == "ok", "file_loc"]
    atomic_write_text(output.with_suffix(".txt"), "".join(f"{p}\n" for p in kept.tolist()))
    rejected = catalog.loc[catalog["status"] != "ok"]
    lines = [f"# {len(rejected)} of {len(catalog)} files rejected"]
    lines += [
        f"# {count:>8} {status}" for status, count in Counter(rejected["status"]).most_common()
    ]
    lines += [
        f"{row.file_loc}\t{row.status}\t{row.detail}" for row in rejected.itertuples(index=False)
    ]
    atomic_write_text(output.with_suffix(".rejected.txt"), "\n".join(lines) + "\n")


def scan(
    roots: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    shape: tuple[int, int, int] | str | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    patterns: Sequence[str] = (),
    workers: int = 2,
    verify: bool = False,
) -> pd.DataFrame:
    """Scan folders of galaxy cutouts into a catalog (one row per image file).

    Parameters
    ----------
    roots : path or iterable of paths
        Folders (searched recursively) or single files.
    shape : (C, H, W) or "C,H,W", optional
        Keep only images of exactly this shape; others get ``status == "wrong_shape"``.
    output : path, optional
        Write the catalog here (Parquet, CSV or FITS by suffix) with ``<stem>.txt`` and
        ``<stem>.rejected.txt`` beside it; an existing catalog there is updated incrementally.
    patterns : sequence of str
        File-name globs to pick files (default: every FITS/PNG/JPEG/TIFF/.npy suffix).
    workers : int, default 2
        Processes reading headers.
    verify : bool, default False
        Decode every image and reject truncated, corrupt, blank and non-finite ones.

    Returns
    -------
    pandas.DataFrame
        The catalog; see :mod:`galclust.catalog.schema` for the columns.

    Examples
    --------
    >>> cat = scan("cutouts/", shape=(3, 256, 256))  # doctest: +SKIP
    >>> cat.status.value_counts()  # doctest: +SKIP
    """
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    if isinstance(shape, str):
        shape = parse_shape(shape)
    options = ScanOptions(
        roots=tuple(os.fspath(r) for r in roots),
        output=os.fspath(output) if output is not None else None,
        shape=shape,
        patterns=tuple(patterns),
        workers=workers,
        verify=verify,
    )
    return scan_catalog(options).catalog
