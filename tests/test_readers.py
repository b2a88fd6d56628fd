"""Header readers: every format and variant gives the right (C, H, W), dtype and status."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from PIL import Image

from conftest import write_fits, write_png
from galclust.catalog.readers import inspect_file, read_pixels, stem_of


def inspect(path: Path, verify: bool = False):
    return inspect_file(str(path), path.stat().st_size, verify=verify)


def test_real_decals_png_is_3x424x424(shared_data: Path) -> None:
    path = next((shared_data / "decals-rings-sample" / "images").glob("*.png"))
    info = inspect(path)
    assert (info.format, info.shape, info.dtype, info.status) == (
        "png",
        (3, 424, 424),
        "uint8",
        "ok",
    )


def test_real_sdss_jpeg_is_3x423x423(shared_data: Path) -> None:
    path = next((shared_data / "gz1-sdss-dev" / "images").glob("*.jpeg"))
    info = inspect(path)
    assert (info.format, info.shape, info.status) == ("jpeg", (3, 423, 423), "ok")


def test_real_hst_stamps_match_catalog_sizes(shared_data: Path) -> None:
    folder = shared_data / "cosmos-f814w"
    catalog = pd.read_csv(folder / "catalog.csv")
    for row in catalog.head(25).itertuples():
        info = inspect(folder / row.file_loc)
        assert info.shape == (1, row.ny, row.nx), row.file_loc
        assert (info.dtype, info.hdu, info.status) == ("float32", 0, "ok")


def test_header_shape_matches_decoded_pixels(mixed_folder: Path) -> None:
    for path in mixed_folder.iterdir():
        info = inspect(path, verify=True)
        assert info.status == "ok", (path, info)
        pixels = read_pixels(str(path), info.format, info.hdu)
        assert pixels.shape == info.shape, path.name


@pytest.mark.parametrize(
    ("numpy_shape", "expected"),
    [((16, 24), (1, 16, 24)), ((3, 16, 24), (3, 16, 24)), ((5, 16, 24), (5, 16, 24))],
)
def test_fits_2d_and_cubes(tmp_path: Path, numpy_shape: tuple[int, ...], expected: tuple) -> None:
    info = inspect(write_fits(tmp_path / "x.fits", numpy_shape))
    assert (info.shape, info.dtype, info.hdu, info.status) == (expected, "float32", 0, "ok")


def test_fits_image_in_extension_after_empty_primary(tmp_path: Path) -> None:
    path = tmp_path / "ext.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(50))])
    image = fits.ImageHDU(np.zeros((2, 20, 30), dtype=np.int16))
    fits.HDUList([fits.PrimaryHDU(), table, image]).writeto(path)
    info = inspect(path)
    assert (info.shape, info.dtype, info.hdu) == ((2, 20, 30), "int16", 2)


def test_fits_unsigned_16_bit(tmp_path: Path) -> None:
    path = tmp_path / "u16.fits"
    fits.PrimaryHDU(np.arange(64, dtype=np.uint16).reshape(8, 8)).writeto(path)
    assert inspect(path).dtype == "uint16"


def test_gzipped_fits(tmp_path: Path) -> None:
    plain = write_fits(tmp_path / "x.fits", (3, 20, 20))
    packed = tmp_path / "x.fits.gz"
    with open(plain, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    info = inspect(packed, verify=True)
    assert (info.format, info.shape, info.status) == ("fits", (3, 20, 20), "ok")
    assert stem_of(packed.name) == "x"


def test_tile_compressed_fz(tmp_path: Path) -> None:
    path = tmp_path / "x.fits.fz"
    data = np.random.default_rng(0).normal(size=(40, 30)).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(path)
    info = inspect(path, verify=True)
    assert (info.shape, info.dtype, info.hdu, info.status) == ((1, 40, 30), "float32", 1, "ok")
    assert "tile-compressed" in info.detail


def test_fits_without_image_hdu(tmp_path: Path) -> None:
    path = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(5))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    info = inspect(path)
    assert info.status == "no_image_hdu"
    assert "2 HDU" in info.detail


def test_4d_fits_is_rejected_but_degenerate_axes_are_dropped(tmp_path: Path) -> None:
    info = inspect(write_fits(tmp_path / "cube4.fits", (2, 3, 16, 16)))
    assert info.status == "unsupported_ndim"
    assert "4-D" in info.detail
    radio = inspect(write_fits(tmp_path / "radio.fits", (1, 1, 16, 12)))
    assert (radio.status, radio.shape) == ("ok", (1, 16, 12))


def test_truncated_fits_is_caught_from_the_header(tmp_path: Path) -> None:
    path = write_fits(tmp_path / "cut.fits", (3, 64, 64))
    path.write_bytes(path.read_bytes()[:10000])
    info = inspect(path)
    assert info.status == "truncated"
    assert "file has 10000" in info.detail


def test_text_file_named_fits(tmp_path: Path) -> None:
    path = tmp_path / "notes.fits"
    path.write_text("hello, this is not FITS\n")
    info = inspect(path)
    assert info.status == "corrupt"
    assert "not a FITS file" in info.detail


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    assert inspect(path).status == "empty_file"


def test_truncated_png_header_and_verify(tmp_path: Path) -> None:
    path = write_png(tmp_path / "cut.png", (3, 64, 64))
    path.write_bytes(path.read_bytes()[:3000])
    info = inspect(path)
    assert (info.status, info.shape) == ("truncated", (3, 64, 64))


def test_png_modes(tmp_path: Path) -> None:
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.arange(400, dtype=np.uint16).reshape(20, 20) * 100).save(gray16)
    assert (inspect(gray16).shape, inspect(gray16).dtype) == ((1, 20, 20), "uint16")
    assert read_pixels(str(gray16), "png").max() == 39900
    assert inspect(write_png(tmp_path / "rgba.png", (4, 10, 12))).shape == (4, 10, 12)
    assert inspect(write_png(tmp_path / "gray.png", (1, 10, 12))).shape == (1, 10, 12)
    palette = tmp_path / "palette.png"
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).convert("P").save(palette)
    assert inspect(palette).shape == (3, 8, 9)
    assert read_pixels(str(palette), "png").shape == (3, 8, 9)


def test_cmyk_jpeg_is_read_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (30, 20), (10, 200, 30, 0)).save(path)
    info = inspect(path)
    assert (info.shape, info.status) == ((3, 20, 30), "ok")
    assert "CMYK" in info.detail
    assert read_pixels(str(path), "jpeg").shape == (3, 20, 30)


def test_grayscale_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "g.jpeg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30), np.uint8)).save(path)
    assert inspect(path).shape == (1, 20, 30)


def test_truncated_jpeg_is_caught_by_verify(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:4000])
    assert inspect(path).status == "ok"  # the header alone is intact
    info = inspect(path, verify=True)
    assert info.status == "truncated", info


@pytest.mark.parametrize(
    ("array_shape", "expected"),
    [((20, 30), (1, 20, 30)), ((20, 30, 3), (3, 20, 30)), ((3, 20, 30), (3, 20, 30))],
)
def test_npy_layouts(tmp_path: Path, array_shape: tuple[int, ...], expected: tuple) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=array_shape).astype(np.float32))
    assert inspect(path).shape == expected
    assert read_pixels(str(path), "npy").shape == expected


def test_npy_4d_and_truncated(tmp_path: Path) -> None:
    path = tmp_path / "x4.npy"
    np.save(path, np.zeros((2, 3, 8, 8), np.float32))
    assert inspect(path).status == "unsupported_ndim"
    cut = tmp_path / "cut.npy"
    np.save(cut, np.ones((3, 64, 64), np.float32))
    cut.write_bytes(cut.read_bytes()[:2000])
    assert inspect(cut).status == "truncated"


def test_verify_rejects_blank_and_non_finite(tmp_path: Path) -> None:
    blank = tmp_path / "blank.fits"
    fits.PrimaryHDU(np.zeros((16, 16), np.float32)).writeto(blank)
    assert inspect(blank).status == "ok"
    assert inspect(blank, verify=True).status == "empty_image"
    nan = tmp_path / "nan.npy"
    values = np.ones((3, 16, 16), np.float32)
    values[0, 3, 4] = np.nan
    np.save(nan, values)
    info = inspect(nan, verify=True)
    assert info.status == "non_finite"
    assert "1 of 768" in info.detail


def test_png_named_jpg_is_read_and_noted(tmp_path: Path) -> None:
    path = write_png(tmp_path / "mislabelled.png").rename(tmp_path / "mislabelled.jpg")
    info = inspect(path)
    assert (info.format, info.status) == ("png", "ok")
    assert "content is PNG" in info.detail
