"""Data sources and datasets of preprocessed images.

A data source is one of:

- a scan catalog (only rows with ``status == "ok"`` are used),
- any catalog with ``id_str`` and ``file_loc`` (Zoobot style; CSV, Parquet or FITS),
- a ``galclust simulate`` folder, whose ``catalog.parquet`` points into ``images.npy``,
- a packed store made by ``galclust pack``: images already preprocessed to the network's size
  and scaling, read from a memory-mapped array without decoding anything.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from galclust.catalog.readers import format_from_name, read_pixels
from galclust.catalog.schema import read_catalog
from galclust.data.transforms import Preprocess, asinh_scale, finite_pixels, fit_to_size
from galclust.exceptions import GalclustFileError, GalclustValueError

log = logging.getLogger(__name__)

PACK_FILE = "pack.json"
DEFAULT_IMAGE_SIZE = 256


def default_frame(stretch: str) -> str:
    """The framing when none is asked for: the galaxy frame, except with a dataset-wide
    stretch, which keeps brightness differences between whole cutouts."""
    return "field" if stretch == "dataset" else "galaxy"


class PreprocessChoices(Protocol):
    """The preprocessing options shared by ``PackOptions`` and ``TrainOptions``."""

    @property
    def mode(self) -> str: ...
    @property
    def scaling(self) -> str: ...
    @property
    def stretch(self) -> str: ...
    @property
    def frame(self) -> str | None: ...
    @property
    def extent(self) -> float: ...
    @property
    def align(self) -> bool: ...


@dataclass(frozen=True)
class Source:
    """The usable rows of a data source and what kind of source it is.

    Attributes
    ----------
    path : Path
        What the user gave (a catalog file or a folder).
    catalog : pandas.DataFrame
        One row per usable image, index 0..n-1.
    kind : {"catalog", "simulation", "packed"}
    packed : dict, optional
        The ``pack.json`` of a packed store: ``image_size``, ``channels``, ``dtype`` and the
        ``preprocess`` that made it.
    """

    path: Path
    catalog: pd.DataFrame
    kind: str
    packed: dict[str, Any] | None = None

    def channels(self) -> int:
        """Bands per image; a clear error if the source mixes channel counts."""
        if self.packed is not None:
            return int(self.packed["channels"])
        if "channels" in self.catalog and self.catalog["channels"].notna().all():
            counts = self.catalog["channels"].astype(int).value_counts()
            if len(counts) > 1:
                mix = ", ".join(f"{n} images with {c}" for c, n in counts.items())
                raise GalclustValueError(
                    f"{self.path} mixes channel counts ({mix}); train on one kind, e.g. "
                    f"galclust scan ... --shape {counts.index[0]},H,W"
                )
            return int(counts.index[0])
        return int(ImageDataset(self.catalog.head(1), None).pixels(0).shape[0])

    def default_image_size(self) -> int:
        """The images' own size when all share one that the VAE accepts, else 256."""
        if self.packed is not None:
            return int(self.packed["image_size"])
        if self.kind == "simulation":
            loc = str(self.catalog["file_loc"].iloc[0])
            return int(np.load(loc, mmap_mode="r").shape[-1])
        if {"height", "width"} <= set(self.catalog.columns):
            sizes = set(self.catalog["height"].astype(int)) | set(self.catalog["width"].astype(int))
            if len(sizes) == 1 and (size := sizes.pop()) % 32 == 0:
                return size
        return DEFAULT_IMAGE_SIZE

    def preprocess(
        self,
        size: int,
        mode: str,
        scaling: str,
        stretch: str = "image",
        *,
        frame: str = "field",
        extent: float = 1.5,
        align: bool = True,
    ) -> Preprocess:
        """The preprocessing of this source's images (see :class:`Preprocess`).

        ``stretch="dataset"`` fixes the arcsinh softening and bright level for every image to
        the medians measured on up to 256 images spread over the source, so that brightness
        differences between galaxies survive; ``"image"`` measures them per image.
        ``frame="galaxy"`` centres and crops each image on its galaxy and scales it by the
        galaxy's own brightness.
        """
        if stretch not in ("image", "dataset"):
            raise GalclustValueError(f"--stretch {stretch!r}: choose image or dataset")
        if frame == "galaxy" and stretch == "dataset":
            raise GalclustValueError(
                "--frame galaxy scales each galaxy by its own brightness, --stretch dataset "
                "keeps brightness differences: choose one"
            )
        if stretch == "image":
            return Preprocess(size, mode, scaling, frame=frame, extent=extent, align=align)
        data = ImageDataset(self.catalog, None)
        picks = np.unique(np.linspace(0, len(data) - 1, min(256, len(data))).astype(int))
        scales = []
        for i in picks:
            try:
                pixels = finite_pixels(data.pixels(int(i)))
            except (OSError, ValueError):
                continue
            if pixels is not None and pixels.dtype.kind == "f":
                scale = asinh_scale(fit_to_size(pixels, size, mode=mode))
                if np.isfinite(scale).all():
                    scales.append(scale)
        if not scales:  # 8-bit images: nothing to stretch
            return Preprocess(size, mode, scaling)
        a, b = np.median(np.array(scales), axis=0)
        return Preprocess(size, mode, scaling, (float(a), float(b)))

    def preprocess_for(self, size: int, options: PreprocessChoices) -> Preprocess:
        """:meth:`preprocess` with the choices of a pack or training run's options."""
        return self.preprocess(
            size,
            options.mode,
            options.scaling,
            options.stretch,
            frame=options.frame or default_frame(options.stretch),
            extent=options.extent,
            align=options.align,
        )

    def dataset(
        self, preprocess: Preprocess, rows: np.ndarray | None = None, *, channels: int | None = None
    ) -> GalaxyData:
        """The images of ``rows`` (all by default) as network inputs; with ``channels``, an
        image file with another channel count is a clear error."""
        catalog = self.catalog if rows is None else self.catalog.iloc[rows]
        if self.packed is None:
            data = ImageDataset(catalog, preprocess)
            data.channels = channels
            return data
        stored = Preprocess.from_dict(self.packed["preprocess"])
        if stored.image_size != preprocess.image_size:
            raise GalclustValueError(
                f"{self.path} was packed at {stored.image_size} px, not {preprocess.image_size}; "
                f"use --image-size {stored.image_size} or pack again with "
                f"--image-size {preprocess.image_size}"
            )
        return PackedDataset(self.path / "images.npy", catalog["image_index"].to_numpy())


def open_source(path: str | os.PathLike[str]) -> Source:
    """Read a data source (see the module docstring); an error if it has no usable image."""
    path = Path(path)
    kind, packed = "catalog", None
    if path.is_dir():
        catalog_file = path / "catalog.parquet"
        if not catalog_file.is_file():
            raise GalclustFileError(
                f"{path} is a folder without catalog.parquet; give a catalog file, a folder "
                "made by galclust simulate, or a store made by galclust pack"
            )
        if (path / PACK_FILE).is_file():
            kind, packed = "packed", json.loads((path / PACK_FILE).read_text())
        else:
            kind = "simulation"
        catalog = read_catalog(catalog_file)
    else:
        catalog = read_catalog(path)
    total = len(catalog)
    if "status" in catalog:
        catalog = catalog[catalog["status"] == "ok"]
    if catalog.empty:
        why = f"none of its {total} rows has status ok" if total else "it has no rows"
        raise GalclustValueError(
            f"{path} has no usable images ({why}); scan a folder of cutouts first, e.g. "
            "galclust scan cutouts/ -o catalog.parquet"
        )
    return Source(path, catalog.reset_index(drop=True), kind, packed)


def load_source(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The usable rows of a data source (see :func:`open_source`)."""
    return open_source(path).catalog


def collate(batch: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack single images into a batch; a batch read at once is passed through."""
    return batch if isinstance(batch, torch.Tensor) else torch.stack(list(batch))


class ImageDataset(Dataset[torch.Tensor]):
    """Images of ``catalog`` as (C, S, S) float32 tensors in [-1, 1], preprocessed on the fly.

    Parameters
    ----------
    catalog : pandas.DataFrame
        Rows with ``file_loc`` (and ``format``/``hdu`` from a scan, or ``image_index`` into a
        ``.npy`` store from a simulation).
    preprocess : Preprocess, optional
        Size and scaling; the same object is stored with a trained model. Only :meth:`pixels`
        works without one.
    """

    def __init__(self, catalog: pd.DataFrame, preprocess: Preprocess | None) -> None:
        self.locs = catalog["file_loc"].astype(str).tolist()
        self.indices = (
            catalog["image_index"].astype(int).tolist() if "image_index" in catalog else None
        )
        given = catalog["format"].tolist() if "format" in catalog else [None] * len(self.locs)
        self.formats = [
            f if isinstance(f, str) and f else format_from_name(loc)
            for f, loc in zip(given, self.locs, strict=True)
        ]
        self.hdus = (
            [None if pd.isna(h) else int(h) for h in catalog["hdu"]]
            if "hdu" in catalog
            else [None] * len(self.locs)
        )
        self.preprocess = preprocess
        self.channels: int | None = None  # checked against every image once set
        self._stores: dict[str, np.ndarray] = {}  # opened lazily, once per worker process

    def __len__(self) -> int:
        return len(self.locs)

    def pixels(self, i: int) -> np.ndarray:
        """The raw (C, H, W) pixels of row ``i``."""
        if self.indices is not None:
            store = self._stores.get(self.locs[i])
            if store is None:
                store = self._stores[self.locs[i]] = np.load(self.locs[i], mmap_mode="r")
            return np.asarray(store[self.indices[i]])
        return read_pixels(self.locs[i], self.formats[i] or "fits", self.hdus[i])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.load(i)[0]

    def load(self, i: int) -> tuple[torch.Tensor, str]:
        """Row ``i`` as a network input, and how it went: ``unreadable``, or the status of
        :meth:`Preprocess.apply` (``field``, ``blank`` or a galaxy-framing status)."""
        assert self.preprocess is not None, "ImageDataset needs a Preprocess for images"
        try:
            pixels = self.pixels(i)
        except (OSError, ValueError, EOFError) as exc:  # changed since the scan: skip, count
            log.warning("cannot read %s (%s); skipped", self.locs[i], exc)
            size = self.preprocess.image_size
            return torch.full((self.channels or 1, size, size), float("nan")), "unreadable"
        if self.channels is not None and pixels.shape[0] != self.channels:
            raise GalclustValueError(
                f"{self.locs[i]} has {pixels.shape[0]} channels, the others {self.channels}; "
                "remove it from the catalog or scan with --shape C,H,W"
            )
        image, status = self.preprocess.apply(pixels)
        return torch.from_numpy(image), status


class MemoryDataset(Dataset[torch.Tensor]):
    """Network inputs prepared once and held in memory (see :func:`preload`)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]

    def __getitems__(self, items: Sequence[int]) -> torch.Tensor:
        return self.images[torch.as_tensor(items, dtype=torch.long)]


def _load_chunk(data: ImageDataset, rows: range) -> tuple[torch.Tensor, list[str]]:
    loaded = [data.load(i) for i in rows]
    return torch.stack([image for image, _ in loaded]), [status for _, status in loaded]


def preload(data: ImageDataset, workers: int) -> tuple[MemoryDataset, dict[str, int]]:
    """Prepare every image of ``data`` once, in ``workers`` processes, and keep them in memory;
    also count the preprocessing statuses (see :meth:`ImageDataset.load`)."""
    from galclust.parallel import ordered_map
    from galclust.progress import Progress

    n = len(data)
    chunks = (range(s, min(n, s + 32)) for s in range(0, n, 32))
    parts: list[torch.Tensor] = []
    counts: dict[str, int] = {}
    progress = Progress(n, "preparing images", unit="images")
    try:
        for images, statuses in ordered_map(
            functools.partial(_load_chunk, data), chunks, max(1, workers)
        ):
            parts.append(images)
            for status in statuses:
                counts[status] = counts.get(status, 0) + 1
            progress.update(len(images))
    finally:
        progress.close()
    if not parts:
        return MemoryDataset(torch.empty(0)), counts
    return MemoryDataset(torch.cat(parts)), counts


class PackedDataset(Dataset[torch.Tensor]):
    """Rows of a packed store: no decoding, a batch is one read of a memory-mapped array.

    Parameters
    ----------
    images : Path
        The store's ``images.npy``: (N, C, S, S) ``uint8`` (``x / 127.5 - 1``) or ``float16``.
    indices : array of int
        The rows of ``images`` this dataset serves, in order.
    """

    def __init__(self, images: Path, indices: np.ndarray) -> None:
        self.images_path = images
        self.indices = np.asarray(indices, dtype=np.int64)
        self._images: np.ndarray | None = None  # opened lazily, once per worker process

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        if self._images is None:
            self._images = np.load(self.images_path, mmap_mode="r")
        order = np.argsort(rows, kind="stable")  # sequential reads, then back in order
        block = np.empty((len(rows), *self._images.shape[1:]), self._images.dtype)
        block[order] = self._images[rows[order]]
        tensor = torch.from_numpy(block)
        if tensor.dtype == torch.uint8:
            return tensor.float().div_(127.5).sub_(1.0)
        return tensor.float()

    def __getitem__(self, i: int) -> torch.Tensor:
        return self._read(self.indices[[i]])[0]

    def __getitems__(self, items: Sequence[int]) -> torch.Tensor:
        """A whole batch in one read (used by DataLoader with :func:`collate`)."""
        return self._read(self.indices[np.asarray(items, dtype=np.int64)])


GalaxyData = ImageDataset | PackedDataset | MemoryDataset
