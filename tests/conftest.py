"""Shared fixtures: real survey files from ../shared/data and small image files made in code."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

SHARED_DATA = Path(
    os.environ.get("GALCLUST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real DECaLS, SDSS and HST files (shared/data beside the checkout)."""
    if not (SHARED_DATA / "decals-rings-sample").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}; set GALCLUST_SHARED_DATA")
    return SHARED_DATA


def write_png(path: Path, shape: tuple[int, int, int] = (3, 32, 32), seed: int = 0) -> Path:
    """Write a random uint8 PNG of shape (C, H, W) with C in 1, 3, 4."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(shape[1], shape[2], shape[0]), dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if shape[0] == 1 else pixels).save(path)
    return path


def write_fits(path: Path, shape: tuple[int, ...] = (3, 32, 32), seed: int = 0) -> Path:
    """Write a float32 FITS image whose numpy shape is ``shape`` in the primary HDU."""
    rng = np.random.default_rng(seed)
    fits.PrimaryHDU(rng.normal(size=shape).astype(np.float32)).writeto(path, overwrite=True)
    return path


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """A folder with one good file of each format, 3x32x32, plus one 3x48x48 PNG."""
    root = tmp_path / "cutouts"
    root.mkdir()
    write_png(root / "a.png")
    write_fits(root / "b.fits")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "c.jpg")
    np.save(root / "d.npy", rng.normal(size=(32, 32, 3)).astype(np.float32))
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "e.tiff")
    write_png(root / "big.png", (3, 48, 48))
    return root


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots): test-artifacts/, ignored
    by git, or GALCLUST_TEST_ARTIFACTS."""
    default = Path(__file__).resolve().parents[1] / "test-artifacts"
    folder = Path(os.environ.get("GALCLUST_TEST_ARTIFACTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Chromium driven by Selenium, from Debian's chromium and chromium-driver
    packages (.ci/run installs them). Skipped where they are missing, except in CI."""
    chromium, driver = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if not (chromium.exists() and driver.exists()):
        message = "headless Chromium missing: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(service=Service(str(driver)), options=options)
    try:
        yield session
    finally:
        session.quit()
