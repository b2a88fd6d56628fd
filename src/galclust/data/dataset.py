"""Datasets of preprocessed images from any galclust data source.

A data source is a scan catalog (rows with ``status == "ok"``), any catalog with ``id_str`` and
``file_loc`` (Zoobot style; CSV, Parquet or FITS), or a ``galclust simulate`` folder, whose
``catalog.parquet`` points into ``images.npy`` with ``image_index``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from galclust.catalog.readers import format_from_name, read_pixels
from galclust.catalog.schema import read_catalog
from galclust.data.transforms import Preprocess
from galclust.exceptions import GalclustFileError


def load_source(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The rows of a data source (a catalog file or a simulate folder), usable images only."""
    path = Path(path)
    if path.is_dir():
        catalog_file = path / "catalog.parquet"
        if not catalog_file.is_file():
            raise GalclustFileError(
                f"{path} is a folder without catalog.parquet; give a catalog file, or a folder "
                "made by galclust simulate"
            )
        path = catalog_file
    catalog = read_catalog(path)
    if "status" in catalog:
        catalog = catalog[catalog["status"] == "ok"]
    return catalog.reset_index(drop=True)


class ImageDataset(Dataset[torch.Tensor]):
    """Images of ``catalog`` as (C, S, S) float32 tensors in [-1, 1], preprocessed on the fly.

    Parameters
    ----------
    catalog : pandas.DataFrame
        Rows with ``file_loc`` (and ``format``/``hdu`` from a scan, or ``image_index`` into a
        ``.npy`` store from a simulation).
    preprocess : Preprocess
        Size and scaling; the same object is stored with a trained model.
    """

    def __init__(self, catalog: pd.DataFrame, preprocess: Preprocess) -> None:
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
        return torch.from_numpy(self.preprocess(self.pixels(i)))
