"""ImageDataset over real catalogs, scan catalogs and simulate folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import galclust
from conftest import write_png
from galclust.data import ImageDataset, Preprocess, load_source
from galclust.exceptions import GalclustFileError
from galclust.simulate import SimulateOptions, simulate


def test_zoobot_catalog_of_real_sdss_jpegs(shared_data: Path) -> None:
    catalog = load_source(shared_data / "gz1-sdss-dev" / "catalog.csv").head(4)
    data = ImageDataset(catalog, Preprocess(image_size=64, mode="resize"))
    image = data[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1 and image.std() > 0.05


def test_scan_catalog_keeps_only_ok_rows(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", (3, 32, 32))
    write_png(tmp_path / "b.png", (3, 48, 48))
    galclust.scan(tmp_path, shape=(3, 32, 32), output=tmp_path / "cat.parquet")
    catalog = load_source(tmp_path / "cat.parquet")
    assert list(catalog["file_loc"].map(lambda p: Path(p).name)) == ["a.png"]
    assert ImageDataset(catalog, Preprocess(image_size=32))[0].shape == (3, 32, 32)


def test_simulate_folder_reads_the_npy_store(tmp_path: Path) -> None:
    simulate(SimulateOptions(n=6, output=str(tmp_path / "sims"), size=32, stamp_range=(32, 32)))
    data = ImageDataset(load_source(tmp_path / "sims"), Preprocess(image_size=32))
    stored = np.load(tmp_path / "sims" / "images.npy")
    np.testing.assert_array_equal(data.pixels(5), stored[5])
    assert data[5].shape == (3, 32, 32)


def test_folder_without_catalog(tmp_path: Path) -> None:
    with pytest.raises(GalclustFileError, match=r"without catalog\.parquet"):
        load_source(tmp_path)
