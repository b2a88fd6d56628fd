"""``galclust pack``: preprocess a data source once into a memory-mapped store.

A store is a folder::

    images.npy        (N, C, S, S) uint8 (x / 127.5 - 1 gives the network input) or float16
    catalog.parquet   the source's columns, with file_loc = images.npy, image_index and
                      source_loc (where each image came from)
    pack.json         image_size, channels, dtype, the preprocessing, counts (written last)

Training and embedding then read a batch with one slice of a memory map instead of decoding a
PNG or FITS file per image every epoch. ``uint8`` is lossless for 8-bit PNG/JPEG sources and the
default for them; float sources default to ``float16``. Images that cannot be read or are all
NaN are skipped, counted and listed in the warning. An interrupted pack resumes where it
stopped when run again with the same options.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from galclust.catalog.schema import atomic_write_text, write_catalog
from galclust.data.dataset import PACK_FILE, ImageDataset, open_source
from galclust.data.framing import STATUSES
from galclust.data.transforms import Preprocess
from galclust.exceptions import GalclustFileError, GalclustValueError
from galclust.parallel import ordered_map
from galclust.progress import Progress

log = logging.getLogger(__name__)

DTYPES = ("auto", "uint8", "float16")
#: How each image was prepared, as stored while packing (see ImageDataset.load).
_STATUS_CODES = ("pending", "field", "blank", "unreadable", *STATUSES)
_CHUNK = 128  # images per task


@dataclass(frozen=True)
class PackOptions:
    """Everything that decides a packed store; saved in its provenance file."""

    source: str
    output: str
    image_size: int | None = None
    dtype: str = "auto"
    mode: str = "crop"
    scaling: str = "auto"
    stretch: str = "image"
    frame: str = "galaxy"
    extent: float = 1.5
    align: bool = True
    workers: int = 2
    overwrite: bool = False


@dataclass
class PackReport:
    """What was packed."""

    output: Path
    count: int
    image_size: int
    dtype: str
    seconds: float
    skipped: dict[str, str] = field(default_factory=dict)  # id_str -> why
    framing: dict[str, int] = field(default_factory=dict)  # galaxy frame: status -> count

    def summary(self) -> str:
        rate = (self.count + len(self.skipped)) / self.seconds if self.seconds else float("inf")
        framed = ""
        if self.framing:
            framed = "; framing: " + ", ".join(
                f"{count} {status}" for status, count in sorted(self.framing.items())
            )
        return (
            f"packed {self.count} images at {self.image_size} px as {self.dtype} in "
            f"{self.seconds:.1f} s ({rate:,.0f}/s); {len(self.skipped)} skipped{framed}"
        )


def encode(batch: np.ndarray, dtype: str) -> np.ndarray:
    """Network inputs in [-1, 1] as stored: uint8 levels or float16."""
    if dtype == "uint8":
        return np.rint((batch + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    return batch.astype(np.float16)


def _pack_chunk(
    rows: pd.DataFrame, preprocess: Preprocess, dtype: str, channels: int
) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """Preprocess and encode ``rows``; for each, None or why it was skipped, and the code of
    its preparation status."""
    data = ImageDataset(rows, preprocess)
    data.channels = channels
    size = preprocess.image_size
    out = np.zeros((len(rows), channels, size, size), np.float32)
    why: list[str | None] = []
    codes = np.zeros(len(rows), np.uint8)
    for i in range(len(rows)):
        image, status = data.load(i)
        codes[i] = _STATUS_CODES.index(status)
        if status == "unreadable":
            why.append("unreadable")
            continue
        if status == "blank":
            why.append("all NaN")
            continue
        out[i] = image.numpy()
        why.append(None)
    return encode(out, dtype), why, codes


def pack(options: PackOptions) -> PackReport:
    """Pack ``options.source`` into the store ``options.output``.

    Raises
    ------
    GalclustValueError
        An empty source, mixed channel counts, a bad size or dtype.
    GalclustFileError
        The output holds a finished store (pass ``overwrite``) or cannot be written.
    """
    start = time.perf_counter()
    if options.dtype not in DTYPES:
        raise GalclustValueError(f"--dtype {options.dtype!r}: choose one of {', '.join(DTYPES)}")
    if options.workers < 1:
        raise GalclustValueError(f"--workers {options.workers} must be at least 1")
    source = open_source(options.source)
    if source.packed is not None:
        raise GalclustValueError(
            f"{options.source} is already a packed store; train or embed from it directly"
        )
    channels = source.channels()
    size = options.image_size or source.default_image_size()
    preprocess = source.preprocess_for(size, options)
    if size < 16:
        raise GalclustValueError(f"--image-size {size} is too small; give 16 px or more")
    dtype = options.dtype
    if dtype == "auto":
        first = ImageDataset(source.catalog.head(1), None).pixels(0)
        dtype = "uint8" if first.dtype == np.uint8 else "float16"
    out = Path(options.output)
    foreign = (out / "catalog.parquet").exists() or (out / "images.npy").exists()
    if foreign and not (out / PACK_FILE).exists() and not (out / ".pack-progress.json").exists():
        raise GalclustFileError(
            f"{out} holds a catalog or images.npy that galclust pack did not write (a "
            "simulation?); choose another -o"
        )
    if (out / PACK_FILE).exists() and not options.overwrite:
        raise GalclustFileError(
            f"{out} already holds a packed store; choose another -o or pass --overwrite"
        )
    catalog = source.catalog
    n = len(catalog)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / PACK_FILE).unlink(missing_ok=True)  # the last file written marks "done"
        ids = int(pd.util.hash_pandas_object(catalog["id_str"].astype(str), index=False).sum())
        settings = asdict(options) | {"image_size": size, "dtype": dtype, "n": n, "ids": ids}
        status_file = out / ".status.npy.partial"
        try:
            status = np.lib.format.open_memmap(status_file, mode="r+")
            if status.shape != (n,):
                raise ValueError("another pack's statuses")
        except (OSError, ValueError):  # no statuses of this pack: it cannot resume
            (out / ".images.npy.partial").unlink(missing_ok=True)
            status = np.lib.format.open_memmap(status_file, mode="w+", dtype=np.uint8, shape=(n,))
        images, done, skipped = _open_partial(out, settings, (n, channels, size, size), dtype)
        starts = [s for s in range(0, n, _CHUNK) if s >= done]
        work = functools.partial(_pack_chunk, preprocess=preprocess, dtype=dtype, channels=channels)
        chunks = (catalog.iloc[s : s + _CHUNK] for s in starts)
        progress = Progress(n, "packing", unit="images")
        progress.update(done)
        try:
            for s, (encoded, why, codes) in zip(
                starts, ordered_map(work, chunks, options.workers), strict=True
            ):
                images[s : s + len(encoded)] = encoded
                images.flush()  # pixels on disk before the progress says so
                status[s : s + len(codes)] = codes
                status.flush()
                for i, reason in enumerate(why):
                    if reason is not None:
                        skipped[str(catalog["id_str"].iloc[s + i])] = reason
                _save_progress(out, settings, s + len(encoded), skipped)
                progress.update(len(encoded))
        finally:
            progress.close()
        del images
        statuses = np.asarray(_STATUS_CODES)[np.asarray(status)]
        del status
        os.replace(out / ".images.npy.partial", out / "images.npy")
        kept = catalog[~catalog["id_str"].astype(str).isin(skipped)].copy()
        index = np.flatnonzero(~catalog["id_str"].astype(str).isin(skipped).to_numpy())
        framing: dict[str, int] = {}
        if preprocess.frame == "galaxy":
            kept["frame_status"] = statuses[index]
            names, counts = np.unique(statuses[index], return_counts=True)
            framing = {str(k): int(v) for k, v in zip(names, counts, strict=True)}
        kept["source_loc"] = kept["file_loc"].astype(str)
        if "image_index" in kept:  # a simulation: where in its images.npy
            kept["source_index"] = kept["image_index"]
        kept["file_loc"] = "images.npy"
        kept["image_index"] = index
        write_catalog(kept.reset_index(drop=True), out / "catalog.parquet")
        info = {
            "format": "galclust-pack",
            "version": 1,
            "image_size": size,
            "channels": channels,
            "dtype": dtype,
            "preprocess": preprocess.to_dict(),
            "count": len(kept),
            "skipped": len(skipped),
            "framing": framing,
            "source": str(Path(options.source).resolve()),
        }
        atomic_write_text(out / PACK_FILE, json.dumps(info, indent=2) + "\n")
        (out / ".pack-progress.json").unlink()
        status_file.unlink()
    except OSError as exc:
        raise GalclustFileError(
            f"cannot write the packed store in {out} ({exc.strerror}); free some space or choose "
            "another -o, then run again to resume"
        ) from exc
    if skipped:
        shown = "; ".join(f"{k} ({v})" for k, v in list(skipped.items())[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"skipped {len(skipped)} images: {shown}{more}", stacklevel=2)
    seconds = time.perf_counter() - start
    return PackReport(out, len(kept), size, dtype, seconds, skipped, framing)


def _save_progress(out: Path, settings: dict[str, Any], done: int, skipped: dict[str, str]) -> None:
    state = {"settings": settings, "done": done, "skipped": skipped}
    atomic_write_text(out / ".pack-progress.json", json.dumps(state, default=list))


def _open_partial(
    out: Path, settings: dict[str, Any], shape: tuple[int, ...], dtype: str
) -> tuple[np.memmap[Any, Any], int, dict[str, str]]:
    """The store being written and how far an interrupted run with the same options got."""
    partial = out / ".images.npy.partial"
    progress = out / ".pack-progress.json"
    keep = {k: v for k, v in settings.items() if k not in ("workers", "overwrite")}
    if partial.exists() and progress.exists():
        state = json.loads(progress.read_text())
        same = {k: v for k, v in state["settings"].items() if k not in ("workers", "overwrite")}
        if json.loads(json.dumps(keep, default=list)) == same:
            images = np.lib.format.open_memmap(partial, mode="r+")
            if images.shape == shape:
                log.info("resuming an interrupted pack: %d images already done", state["done"])
                return images, int(state["done"]), dict(state["skipped"])
    partial.unlink(missing_ok=True)
    _save_progress(out, settings, 0, {})
    images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.dtype(dtype), shape=shape)
    return images, 0, {}
