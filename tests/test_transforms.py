"""Preprocessing to [-1, 1], fitting to size without zero frames, and the dihedral augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from galclust.data import Preprocess, dihedral, fit_to_size
from galclust.datasets import make_toy_galaxies
from galclust.exceptions import GalclustValueError


def test_uint8_maps_to_minus_one_and_one() -> None:
    image = np.array([[[0, 255], [127, 128]]], dtype=np.uint8)
    out = Preprocess(image_size=2)(image)
    assert out.dtype == np.float32
    assert out[0, 0, 0] == -1 and out[0, 0, 1] == 1
    assert abs(out[0, 1, 0]) < 0.01


def test_asinh_keeps_order_and_range() -> None:
    images, _ = make_toy_galaxies(3, 64, seed=1)
    for image in images:
        out = Preprocess(image_size=64)(image)
        assert out.min() >= -1 and out.max() <= 1
        flat_in, flat_out = image.ravel(), out.ravel()
        order = np.argsort(flat_in)
        assert np.all(np.diff(flat_out[order]) >= -1e-6)  # monotonic
        assert out.max() > 0.5  # the galaxy uses the range


def test_dataset_scale_is_the_same_for_every_image() -> None:
    prep = Preprocess(image_size=8, scaling="asinh", asinh_scale=(0.1, 10.0))
    faint = prep(np.full((1, 8, 8), 1.0, np.float32))
    bright = prep(np.full((1, 8, 8), 5.0, np.float32))
    assert faint.max() < bright.min()


def test_decals_png_is_centre_cropped_to_256(shared_data) -> None:  # type: ignore[no-untyped-def]
    path = next((shared_data / "decals-rings-sample" / "images").glob("*.png"))
    image = np.moveaxis(np.asarray(Image.open(path)), 2, 0)
    out = fit_to_size(image, 256)
    assert out.shape == (3, 256, 256)
    np.testing.assert_array_equal(out, image[:, 84:340, 84:340])


def test_small_image_is_padded_with_noise_not_zeros() -> None:
    rng = np.random.default_rng(0)
    image = (rng.normal(5.0, 0.5, (2, 40, 40))).astype(np.float32)
    out = fit_to_size(image, 64)
    assert out.shape == (2, 64, 64)
    np.testing.assert_array_equal(out[:, 12:52, 12:52], image)
    pad = out[:, :10, :]
    assert abs(pad.mean() - 5.0) < 0.1 and abs(pad.std() - 0.5) < 0.1


def test_resize_keeps_the_whole_field() -> None:
    image = np.zeros((1, 128, 128), np.float32)
    image[:, :64] = 1.0
    out = fit_to_size(image, 32, mode="resize")
    assert out.shape == (1, 32, 32)
    assert out[0, :16].mean() == pytest.approx(1.0) and out[0, 16:].mean() == pytest.approx(0.0)


def test_bad_modes() -> None:
    with pytest.raises(GalclustValueError, match="resize mode 'stretch'"):
        Preprocess(image_size=64, mode="stretch")
    with pytest.raises(GalclustValueError, match="scaling 'log'"):
        Preprocess(image_size=64, scaling="log")


def test_dihedral_gives_one_of_eight_symmetries() -> None:
    image = torch.arange(16.0).reshape(1, 4, 4)
    symmetries = []
    for k in range(4):
        rotated = torch.rot90(image, k, dims=(1, 2))
        symmetries += [rotated, torch.flip(rotated, dims=(2,))]
    batch = image.expand(64, 1, 4, 4).clone()
    out = dihedral(batch, torch.Generator().manual_seed(0))
    seen = {next(i for i, s in enumerate(symmetries) if torch.equal(o, s)) for o in out}
    assert len(seen) == 8
