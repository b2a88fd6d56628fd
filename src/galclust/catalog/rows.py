"""Catalog rows for image files, made in worker processes and kept in a journal on disk.

Each worker turns a chunk of paths into finished rows (stat, header, status) as one Arrow
record batch, so the main process only appends batches: that keeps the scan fast on two cores.
The journal (:class:`Journal`) is a folder of Arrow IPC stream files, one per run, each batch
flushed as it arrives, so a crash or Ctrl-C loses nothing already read; a batch cut short by a
crash is dropped when the journal is read back.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa

from galclust.catalog.readers import ImageInfo, format_from_name, inspect_file
from galclust.catalog.schema import SCAN_COLUMNS, coerce_scan_columns, empty_catalog
from galclust.parallel import ordered_map
from galclust.progress import Progress

CHUNK = 512  # paths per task: measured best of 128-1024 on 20,000 mixed cutouts


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
        target, _ = display_path(os.readlink(path))
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
            info = inspect_file(path, size, verify=verify, hinted=fmt)
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


def _rows_batch(paths: list[str], verify: bool, picked: bool) -> pa.RecordBatch:
    rows = [file_row(p, verify=verify, picked=picked) for p in paths]
    return pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)


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
    journal: Journal | None,
    progress: Progress,
    *,
    workers: int = 2,
    verify: bool = False,
    picked: bool = False,
) -> pa.Table:
    """Make the rows of ``paths`` in ``workers`` processes, in order, and return them.

    Each chunk of rows is appended to ``journal`` and flushed as soon as it comes back.
    """
    work = functools.partial(_rows_batch, verify=verify, picked=picked)
    batches = []
    for batch in ordered_map(work, _chunks(paths, CHUNK), workers):
        if journal is not None:
            journal.append(batch)
        batches.append(batch)
        progress.update(batch.num_rows)
    return pa.Table.from_batches(batches, schema=ROW_SCHEMA)


def to_frame(table: pa.Table) -> pd.DataFrame:
    """Rows as a catalog frame with the scan dtypes, converting each column once."""
    if not table.num_rows:
        return empty_catalog()
    return coerce_scan_columns(table.to_pandas(types_mapper=_PANDAS_TYPES.get))


class Journal:
    """Rows of a scan in progress: a folder of Arrow IPC streams, one per run.

    Parameters
    ----------
    folder : Path
        The journal folder (created on the first :meth:`append`).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._open: tuple[BinaryIO, pa.ipc.RecordBatchStreamWriter] | None = None

    def append(self, batch: pa.RecordBatch) -> None:
        """Write one batch and flush it to the operating system."""
        if self._open is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            part = self.folder / f"run-{time.time_ns()}-{os.getpid()}.arrows"
            stream = open(part, "wb")  # noqa: SIM115 - closed in close()
            self._open = (stream, pa.ipc.new_stream(stream, ROW_SCHEMA))
        sink, writer = self._open
        writer.write_batch(batch)
        sink.flush()

    def close(self) -> None:
        """Finish this run's stream; a later :meth:`append` starts a new one."""
        if self._open is not None:
            sink, writer = self._open
            writer.close()
            sink.close()
            self._open = None

    def read(self) -> pd.DataFrame:
        """Every complete batch of every run, oldest run first."""
        batches = []
        for part in sorted(self.folder.glob("run-*.arrows")):
            with pa.OSFile(str(part)) as source:
                try:
                    reader = pa.ipc.open_stream(source)
                    while True:
                        batches.append(reader.read_next_batch())
                except StopIteration:
                    pass
                except (pa.ArrowInvalid, OSError):
                    pass  # a batch cut short by a crash: keep the ones before it
        rows = pa.Table.from_batches(
            [b.cast(ROW_SCHEMA) if b.schema != ROW_SCHEMA else b for b in batches],
            schema=ROW_SCHEMA,
        )
        return to_frame(rows)

    def remove(self) -> None:
        """Delete the journal once its rows are in the catalog."""
        self.close()
        if self.folder.is_dir():
            for part in self.folder.glob("run-*.arrows"):
                part.unlink()
            self.folder.rmdir()


_ARROW_TYPES = {"string": pa.string(), "Int64": pa.int64(), "int64": pa.int64()}
_PANDAS_TYPES = {pa.string(): pd.StringDtype("pyarrow"), pa.int64(): pd.Int64Dtype()}
#: Schema of a row as workers make it: every scan column but ``id_str``.
ROW_SCHEMA = pa.schema(
    [
        (name, _ARROW_TYPES.get(dtype, pa.float64() if dtype == "float64" else pa.bool_()))
        for name, dtype in SCAN_COLUMNS.items()
        if name != "id_str"
    ]
)
