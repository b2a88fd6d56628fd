"""``galclust scan``: turn folders of galaxy cutouts into a catalog, reading headers only.

The scan runs in two passes. The walk lists every candidate file with ``os.scandir`` (one
``stat`` each, following folder symlinks but visiting each real folder once). The read pass
parses each new or changed file's header in ``workers`` processes and appends its row to a
journal beside the output (``.<name>.scan-journal.jsonl``), flushed every chunk. The catalog is
written only at the end, atomically; after Ctrl-C or a crash, rerunning the same command reuses
the journal and the previous catalog, and re-reads only what is missing or changed (by size and
modification time).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import multiprocessing
import os
import signal
import stat
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from galclust.catalog.readers import (
    IMAGE_SUFFIXES,
    ImageInfo,
    format_from_name,
    inspect_file,
    stem_of,
)
from galclust.catalog.schema import (
    SCAN_COLUMNS,
    atomic_write_text,
    check_catalog_suffix,
    coerce_scan_columns,
    empty_catalog,
    read_catalog,
    write_catalog,
)
from galclust.exceptions import GalclustFileError, GalclustValueError, NoImagesFoundWarning
from galclust.progress import Progress

log = logging.getLogger(__name__)

CHUNK = 256
_ID_SEPARATOR = "__"


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


@dataclass(frozen=True, slots=True)
class _Found:
    path: str  # as the file system gives it (may hold surrogates for non-UTF-8 bytes)
    size: int
    mtime: float
    error: str = ""  # set when stat failed: the row is rejected without reading


def _matches(name: str, rel: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p) for p in patterns)


def walk(
    roots: Sequence[str], patterns: Sequence[str] = (), *, unreadable: list[str] | None = None
) -> tuple[list[_Found], int]:
    """List candidate image files below ``roots``; return them and the count of other files.

    Folder symlinks are followed, but each real folder is visited once, so symlink loops end.
    """
    found: list[_Found] = []
    skipped = 0
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        root_path = os.path.abspath(root)
        if os.path.isfile(root_path):
            found.append(_stat_file(root_path))
            continue
        stack = [root_path]
        while stack:
            folder = stack.pop()
            try:
                info = os.stat(folder)
            except OSError:
                continue
            key = (info.st_dev, info.st_ino)
            if key in seen_dirs:
                continue
            seen_dirs.add(key)
            try:
                with os.scandir(folder) as entries:
                    listed = sorted(entries, key=lambda e: e.name)
            except OSError as exc:
                if unreadable is not None:
                    unreadable.append(f"{folder} ({exc.strerror})")
                continue
            subfolders = []
            for entry in listed:
                try:
                    is_dir = entry.is_dir(follow_symlinks=True)
                except OSError:
                    is_dir = False
                if is_dir:
                    subfolders.append(entry.path)
                    continue
                rel = os.path.relpath(entry.path, root_path)
                wanted = (
                    _matches(entry.name, rel, patterns)
                    if patterns
                    else format_from_name(entry.name) is not None
                )
                if not wanted:
                    skipped += 1
                    continue
                found.append(_stat_file(entry.path))
            stack.extend(reversed(subfolders))  # depth first, in name order
    return found, skipped


def _stat_file(path: str) -> _Found:
    try:
        info = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            target = os.readlink(path)
            why = "symlink loop" if exc.errno == 40 else f"broken symlink to {target}"
            return _Found(path, 0, 0.0, f"{why} ({exc.strerror})")
        return _Found(path, 0, 0.0, exc.strerror or str(exc))
    if not stat.S_ISREG(info.st_mode):
        return _Found(path, 0, info.st_mtime, "not a regular file")
    return _Found(path, info.st_size, info.st_mtime)


def _display_path(path: str) -> tuple[str, bool]:
    """Return a UTF-8 string for ``path`` and whether the name was valid UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace"), False
    return path, True


def _inspect(job: tuple[str, int, bool]) -> ImageInfo:
    path, size, verify = job
    return inspect_file(path, size, verify=verify)


def _inspect_chunk(jobs: list[tuple[str, int, bool]]) -> list[ImageInfo]:
    return [_inspect(job) for job in jobs]


def _row(found: _Found, info: ImageInfo, verify: bool) -> dict[str, object]:
    loc, _ = _display_path(found.path)
    return {
        "file_loc": loc,
        "format": info.format,
        "channels": info.channels,
        "height": info.height,
        "width": info.width,
        "dtype": info.dtype,
        "hdu": info.hdu,
        "bytes": found.size,
        "mtime": found.mtime,
        "status": info.status,
        "detail": info.detail,
        "verified": verify and info.status == "ok",
    }


def _precheck(found: _Found, patterns: Sequence[str]) -> ImageInfo | None:
    """Rows decided without opening the file (stat failed, bad name, unknown format)."""
    fmt = format_from_name(found.path)
    if found.error:
        return ImageInfo(fmt, status="unreadable", detail=found.error)
    _, valid_name = _display_path(found.path)
    if not valid_name:
        return ImageInfo(
            fmt,
            status="bad_filename",
            detail="file name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)",
        )
    if fmt is None and patterns:
        return ImageInfo(
            None,
            status="unsupported_format",
            detail="not a FITS, PNG, JPEG, TIFF or .npy name; narrow --pattern",
        )
    return None


def _journal_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.scan-journal.jsonl")


_ARROW_TYPES = {"string": "string", "Int64": "int64", "int64": "int64", "float64": "float64"}


def _read_journal(path: Path) -> pd.DataFrame:
    """Rows of a scan journal; lines torn by a crash are skipped."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    schema = pa.schema(
        [(name, _ARROW_TYPES.get(dtype, "bool")) for name, dtype in SCAN_COLUMNS.items()]
    )
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:  # fast, columnar: no Python object per row
        return coerce_scan_columns(pa_json.read_json(path, parse_options=options).to_pandas())
    except pa.ArrowInvalid:
        pass
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write
    return coerce_scan_columns(pd.DataFrame(rows)) if rows else empty_catalog()


def _load_prior(output: Path | None) -> pd.DataFrame:
    """Rows from an earlier catalog at ``output`` and from an interrupted scan's journal."""
    frames = []
    if output is not None and output.exists():
        frames.append(read_catalog(output, validate=False))
    if output is not None and _journal_path(output).exists():
        frames.append(_read_journal(_journal_path(output)))
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_catalog()
    prior = pd.concat([coerce_scan_columns(f) for f in frames], ignore_index=True)
    return prior.drop_duplicates("file_loc", keep="last").reset_index(drop=True)


def apply_shape(frame: pd.DataFrame, shape: tuple[int, int, int] | None) -> pd.DataFrame:
    """Set ``status`` to ok or wrong_shape for every row whose header was read fine."""
    readable = frame["status"].isin(["ok", "wrong_shape"])
    if shape is None:
        frame.loc[readable, "status"] = "ok"
        frame.loc[readable & frame["detail"].str.startswith("shape ", na=False), "detail"] = ""
        return frame
    matches = (
        (frame["channels"] == shape[0])
        & (frame["height"] == shape[1])
        & (frame["width"] == shape[2])
    ).fillna(False)
    wrong = readable & ~matches
    frame.loc[readable & matches, "status"] = "ok"
    frame.loc[wrong, "status"] = "wrong_shape"
    wanted = ",".join(map(str, shape))
    frame.loc[wrong, "detail"] = (
        "shape "
        + frame.loc[wrong, "channels"].astype(str)
        + ","
        + frame.loc[wrong, "height"].astype(str)
        + ","
        + frame.loc[wrong, "width"].astype(str)
        + f", not {wanted}"
    )
    return frame


def assign_ids(paths: Sequence[str]) -> list[str]:
    """Unique ``id_str`` for each path: the file stem, with parent folders where stems clash.

    ``a/gal1.fits`` and ``b/gal1.fits`` get ``a__gal1`` and ``b__gal1``; a stem used once keeps
    its plain name. Files of one folder that differ only in extension get the extension added.
    Depends only on the set of paths, so rescanning the same files gives the same ids.
    """
    parts = [p.split(os.sep) for p in paths]
    depth = [0] * len(paths)

    def make(i: int) -> str:
        comps = parts[i]
        stem = stem_of(comps[-1])
        level = depth[i]
        if level < len(comps):
            return _ID_SEPARATOR.join([*comps[-1 - level : -1], stem])
        return _ID_SEPARATOR.join([*comps[1:-1], comps[-1]])  # folders + full file name

    ids = [make(i) for i in range(len(paths))]
    while True:
        counts = Counter(ids)
        clashing = [i for i, ident in enumerate(ids) if counts[ident] > 1]
        if not clashing:
            return ids
        for i in clashing:
            depth[i] += 1
            ids[i] = make(i)


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
        A root does not exist.
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

    unreadable: list[str] = []
    found, skipped = walk(options.roots, options.patterns, unreadable=unreadable)
    log.info("found %d candidate files in %.1f s", len(found), time.perf_counter() - start)
    prior = _load_prior(output)
    known = {
        loc: (size, mtime, verified)
        for loc, size, mtime, verified in zip(
            prior["file_loc"], prior["bytes"], prior["mtime"], prior["verified"], strict=True
        )
    }

    to_read: list[_Found] = []
    decided: list[dict[str, object]] = []
    reused = 0
    for item in found:
        early = _precheck(item, options.patterns)
        if early is not None:
            decided.append(_row(item, early, False))
            continue
        old = known.get(item.path)
        if (
            old is not None
            and old[0] == item.size
            and abs(old[1] - item.mtime) < 1e-3
            and (old[2] or not options.verify)
        ):
            reused += 1
        else:
            to_read.append(item)

    journal = _journal_path(output) if output is not None else None
    _read_headers(to_read, options, journal, decided)

    seen = {_display_path(item.path)[0] for item in found}
    fresh = _read_journal(journal) if journal is not None and journal.exists() else None
    if fresh is None:
        fresh = pd.DataFrame(decided) if decided else empty_catalog()
    frames = [coerce_scan_columns(f) for f in (prior, fresh) if len(f)]
    catalog = (
        pd.concat(frames, ignore_index=True).drop_duplicates("file_loc", keep="last")
        if frames
        else empty_catalog()
    )
    catalog = catalog[catalog["file_loc"].isin(seen)].sort_values("file_loc").reset_index(drop=True)
    catalog = apply_shape(catalog, options.shape)
    catalog["id_str"] = pd.array(assign_ids(list(catalog["file_loc"])), dtype="string")
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
        counts=dict(Counter(catalog["status"])),
        files_read=len(to_read),
        files_reused=reused,
        skipped_non_images=skipped,
        seconds=time.perf_counter() - start,
        unreadable_folders=unreadable,
    )
    if output is not None:
        write_scan_outputs(report, output)
        if journal is not None:
            journal.unlink(missing_ok=True)
    return report


def _read_headers(
    to_read: list[_Found],
    options: ScanOptions,
    journal: Path | None,
    decided: list[dict[str, object]],
) -> None:
    """Read headers of ``to_read`` in parallel; append every row to the journal (or ``decided``)."""
    jobs = [(item.path, item.size, options.verify) for item in to_read]
    chunks = [jobs[i : i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    progress = Progress(len(jobs), "reading headers" if not options.verify else "verifying")
    sink = open(journal, "a+", encoding="utf-8") if journal is not None else None  # noqa: SIM115
    try:
        if sink is not None and sink.tell() > 0:
            sink.write("\n")  # end a line torn by an earlier crash; blank lines are skipped
        if sink is not None and decided:
            sink.write("".join(json.dumps(r) + "\n" for r in decided))
            sink.flush()
        offset = 0
        for infos in map_inspect(chunks, options.workers):
            rows = [
                _row(item, info, options.verify)
                for item, info in zip(to_read[offset : offset + len(infos)], infos, strict=True)
            ]
            offset += len(infos)
            if sink is not None:
                sink.write("".join(json.dumps(r) + "\n" for r in rows))
                sink.flush()
            else:
                decided.extend(rows)
            progress.update(len(infos))
    finally:
        progress.close()
        if sink is not None:
            sink.close()


def _ignore_sigint() -> None:
    """Leave Ctrl-C to the main process, which keeps the journal and ends the pool cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def map_inspect(
    chunks: Sequence[list[tuple[str, int, bool]]], workers: int
) -> Iterator[list[ImageInfo]]:
    """Inspect chunks of (path, size, verify) jobs in order, in ``workers`` processes.

    With one worker (or one chunk) the work runs in this process.
    """
    if workers == 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield _inspect_chunk(chunk)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(workers, initializer=_ignore_sigint) as pool:
        yield from pool.imap(_inspect_chunk, chunks)


def write_scan_outputs(report: ScanReport, output: Path) -> None:
    """Write the catalog, ``<stem>.txt`` (kept paths) and ``<stem>.rejected.txt``, atomically."""
    catalog = report.catalog
    write_catalog(catalog, output)
    kept = catalog.loc[catalog["status"] == "ok", "file_loc"]
    atomic_write_text(output.with_suffix(".txt"), "".join(f"{p}\n" for p in kept))
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
