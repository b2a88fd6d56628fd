"""Catalog rows for image files, made in worker processes and kept in a journal on disk.

Each worker turns a chunk of paths into finished rows (stat, header, status) serialised as JSON
lines, so the main process only writes text: that keeps the scan fast on two cores. The journal
is append-only and flushed after every chunk, so a crash or Ctrl-C loses nothing already read;
:func:`read_journal` reads it back into a columnar table with pyarrow.
"""

from __future__ import annotations

import errno
import functools
import io
import itertools
import json
import multiprocessing
import os
import signal
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json

from galclust.catalog.readers import ImageInfo, format_from_name, inspect_file
from galclust.catalog.schema import SCAN_COLUMNS, coerce_scan_columns, empty_catalog
from galclust.progress import Progress

CHUNK = 256
_WINDOW = 4  # chunks in flight per worker: enough to keep workers busy, bounded memory

_NOTHING = object()
_T = TypeVar("_T")
_R = TypeVar("_R")


def display_path(path: str) -> tuple[str, bool]:
    """Return a UTF-8 string for ``path`` and whether the name was valid UTF-8.

    Non-UTF-8 bytes (which Python holds as surrogates) are shown as ``\\xNN`` escapes.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace"), False
    return path, True


def _stat_failure(path: str, exc: OSError) -> ImageInfo:
    fmt = format_from_name(path)
    if os.path.islink(path):
        if exc.errno == errno.ELOOP:
            return ImageInfo(fmt, status="unreadable", detail=f"symlink loop ({exc.strerror})")
        target = os.readlink(path)
        return ImageInfo(fmt, status="unreadable", detail=f"broken symlink to {target}")
    if exc.errno == errno.ENOENT:
        return ImageInfo(fmt, status="missing", detail="file does not exist")
    return ImageInfo(fmt, status="unreadable", detail=exc.strerror or str(exc))


def file_row(path: str, *, verify: bool = False, picked: bool = False) -> dict[str, object]:
    """The catalog row of one file (every scan column but ``id_str``).

    Parameters
    ----------
    path : str
        The file.
    verify : bool
        Decode the pixels too.
    picked : bool
        The file was chosen explicitly (``--pattern`` or a catalog), so a name that is no image
        format becomes an ``unsupported_format`` row instead of being read.
    """
    loc, valid_name = display_path(path)
    size, mtime = 0, 0.0
    try:
        info_stat = os.stat(path)
    except OSError as exc:
        info = _stat_failure(path, exc)
    else:
        size, mtime = info_stat.st_size, info_stat.st_mtime
        fmt = format_from_name(path)
        if not stat.S_ISREG(info_stat.st_mode):
            info = ImageInfo(fmt, status="unreadable", detail="not a regular file")
        elif not valid_name:
            info = ImageInfo(
                fmt,
                status="bad_filename",
                detail="file name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf8)",
            )
        elif fmt is None and picked:
            info = ImageInfo(
                None,
                status="unsupported_format",
                detail="not a FITS, PNG, JPEG, TIFF or .npy file name",
            )
        else:
            info = inspect_file(path, size, verify=verify)
    return {
        "file_loc": loc,
        "format": info.format,
        "channels": info.channels,
        "height": info.height,
        "width": info.width,
        "dtype": info.dtype,
        "hdu": info.hdu,
        "bytes": size,
        "mtime": mtime,
        "status": info.status,
        "detail": info.detail,
        "verified": verify and info.status == "ok",
    }


def _rows_json(paths: list[str], verify: bool, picked: bool) -> str:
    return "".join(json.dumps(file_row(p, verify=verify, picked=picked)) + "\n" for p in paths)


def _ignore_sigint() -> None:
    """Leave Ctrl-C to the main process, which keeps the journal and ends the pool cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def ordered_map(func: Callable[[_T], _R], items: Iterable[_T], workers: int) -> Iterator[_R]:
    """``map`` in ``workers`` processes, in order, with a bounded number of items in flight.

    Unlike ``Pool.imap``, which queues its whole input at once, this pulls ``items`` lazily,
    so a generator of millions of paths is never held in memory. One worker runs in-process.
    """
    iterator = iter(items)
    first = next(iterator, _NOTHING)
    if first is _NOTHING:
        return  # nothing to do: no pool to start
    if workers <= 1:
        yield func(first)  # type: ignore[arg-type]
        yield from map(func, iterator)
        return
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    with context.Pool(workers, initializer=_ignore_sigint) as pool:
        pending: deque[multiprocessing.pool.AsyncResult[_R]] = deque()
        for item in itertools.chain([first], iterator):
            pending.append(pool.apply_async(func, (item,)))
            if len(pending) >= _WINDOW * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_rows(
    paths: Iterable[str],
    sink: TextIO | None,
    progress: Progress,
    *,
    workers: int = 2,
    verify: bool = False,
    picked: bool = False,
) -> pd.DataFrame:
    """Make the rows of ``paths`` in ``workers`` processes, in order, and return them.

    Each chunk of rows is appended to ``sink`` (the journal) and flushed as soon as it comes
    back, then parsed into columns while the workers read the next chunks.
    """
    work = functools.partial(_rows_json, verify=verify, picked=picked)
    tables = []
    for lines in ordered_map(work, _chunks(paths, CHUNK), workers):
        if sink is not None:
            sink.write(lines)
            sink.flush()
        tables.append(_parse_json_lines(io.BytesIO(lines.encode("utf-8"))))
        progress.update(tables[-1].num_rows)
    if not tables:
        return empty_catalog()
    return coerce_scan_columns(pa.concat_tables(tables).to_pandas())


def open_journal(path: Path) -> TextIO:
    """Open a journal for appending after the rows of an interrupted scan, if any."""
    sink = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - the caller closes it
    if sink.tell() > 0:
        sink.write("\n")  # end a line torn by an earlier crash; blank lines are skipped
        sink.flush()
    return sink


_ARROW_TYPES = {"string": "string", "Int64": "int64", "int64": "int64", "float64": "float64"}
_SCHEMA = pa.schema(
    [(name, _ARROW_TYPES.get(dtype, "bool")) for name, dtype in SCAN_COLUMNS.items()]
)


def _parse_json_lines(source: BinaryIO) -> pa.Table:
    """Parse JSON lines into columns with pyarrow, block by block (no Python object per row)."""
    reader = pa_json.open_json(
        source,
        read_options=pa_json.ReadOptions(use_threads=False),
        parse_options=pa_json.ParseOptions(
            explicit_schema=_SCHEMA, unexpected_field_behavior="ignore"
        ),
    )
    return reader.read_all()


def read_journal(path: Path) -> pd.DataFrame:
    """Rows of a journal left by an interrupted scan; lines torn by a crash are skipped."""
    with open(path, "rb") as fh:
        try:
            return coerce_scan_columns(_parse_json_lines(fh).to_pandas())
        except pa.ArrowInvalid:
            fh.seek(0)
            lines = fh.read().decode("utf-8", "replace").splitlines()
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # blank, or torn by a crash mid-write
    return coerce_scan_columns(pd.DataFrame(rows)) if rows else empty_catalog()
