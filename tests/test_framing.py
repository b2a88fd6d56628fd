"""Galaxy framing (centre, crop to the galaxy, neighbours out, align) on GalSim-rendered
cutouts and real SDSS JPEGs: it must never fail, and must say when it fell back."""

from __future__ import annotations

import math
from pathlib import Path

import galsim
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galclust.data.framing import frame_galaxy, mask_neighbours, sky
from galclust.data.transforms import Preprocess


def render(
    size: int = 128,
    *,
    radius: float = 6.0,
    q: float = 1.0,
    angle: float = 0.0,
    shift: tuple[float, float] = (0.0, 0.0),
    star: tuple[float, float] | None = None,
    bands: int = 3,
    noise: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """(bands, size, size) float image: a Sersic n=1 galaxy, optionally a bright star, sky
    level 10 and Gaussian noise."""
    galaxy = galsim.Sersic(1.0, half_light_radius=radius, flux=4000.0 * radius)
    galaxy = galaxy.shear(q=q, beta=angle * galsim.degrees).shift(*shift)
    image = galaxy.drawImage(nx=size, ny=size, scale=1.0).array
    if star is not None:
        point = galsim.Gaussian(sigma=1.2, flux=20000.0).shift(*star)
        image = image + point.drawImage(nx=size, ny=size, scale=1.0).array
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            image * (1 + 0.2 * b) + 10 + noise * rng.standard_normal(image.shape)
            for b in range(bands)
        ]
    )


def centroid(image: np.ndarray) -> tuple[float, float, float]:
    """(x, y, angle in degrees of the major axis) from the positive pixels' moments."""
    flux = np.clip(image.sum(0), 0, None)
    y, x = np.mgrid[: flux.shape[0], : flux.shape[1]]
    total = flux.sum()
    mx, my = (flux * x).sum() / total, (flux * y).sum() / total
    xx = (flux * (x - mx) ** 2).sum() / total
    yy = (flux * (y - my) ** 2).sum() / total
    xy = (flux * (x - mx) * (y - my)).sum() / total
    return mx, my, math.degrees(0.5 * math.atan2(2 * xy, xx - yy))


def test_sky_level_and_noise() -> None:
    level, noise = sky(render(noise=2.0))
    assert level == pytest.approx([10, 10, 10], abs=0.3)
    assert noise == pytest.approx([2, 2, 2], rel=0.1)


def test_centred_galaxy_fills_the_frame_whatever_its_size() -> None:
    fills = []
    for radius in (3.0, 8.0):
        framed, galaxy = frame_galaxy(render(radius=radius), 32)
        assert galaxy.status == "ok"
        assert framed.shape == (3, 32, 32) and framed.dtype == np.float32
        # the same galaxy at two sizes looks alike once framed: same share of light inside r=8
        flux = framed.sum(0)
        y, x = np.mgrid[:32, :32]
        fills.append(flux[np.hypot(x - 15.5, y - 15.5) < 8].sum() / flux.sum())
    assert fills[0] == pytest.approx(fills[1], abs=0.08)


def test_off_centre_galaxy_is_found_and_centred() -> None:
    framed, galaxy = frame_galaxy(render(shift=(30, -25)), 32)
    assert galaxy.status == "off_centre"
    assert galaxy.x == pytest.approx(63.5 + 30, abs=1) and galaxy.y == pytest.approx(
        63.5 - 25, abs=1
    )
    x, y, _ = centroid(framed)
    assert (x, y) == pytest.approx((15.5, 15.5), abs=1.0)


def test_galaxy_running_off_the_cutout_is_framed_with_sky_beyond() -> None:
    framed, galaxy = frame_galaxy(render(radius=12, shift=(0, 30)), 32)
    assert galaxy.status == "edge"
    assert np.isfinite(framed).all()
    corner = framed[:, -4:, :4]  # beyond the cutout: sky noise, not zeros or a copy
    assert 0 < corner.std() < 5 and abs(corner.mean()) < 3
    # bigger than the cutout: its sky cannot be measured, but it must not fail
    big, galaxy = frame_galaxy(render(size=64, radius=30), 32)
    assert np.isfinite(big).all() and big.std() > 0


def test_bright_neighbour_is_replaced_by_sky() -> None:
    with_star = render(radius=5, star=(14, 0))
    framed, galaxy = frame_galaxy(with_star, 32, extent=3.0, align=False)
    kept, _ = frame_galaxy(with_star, 32, extent=3.0, align=False, neighbours=False)
    assert galaxy.status == "ok"
    # the star sits 14 px right of the galaxy: output x = 15.5 + 14 * 32 / (2 * 3 * r90)
    scale = 32 / (2 * 3.0 * galaxy.radius)
    column = round(15.5 + 14 * scale)
    assert kept[:, 14:18, column].max() > 5 * framed[:, 14:18, column].max()
    assert abs(framed[:, 14:18, column].mean()) < 3.0  # sky noise, not the star


def test_mask_neighbours_keeps_the_galaxy_and_its_clumps() -> None:
    clean = render(radius=5)
    with_star = render(radius=5, star=(30, 0))
    masked, count = mask_neighbours(with_star)
    assert count > 20 and masked.shape == with_star.shape
    star = (slice(None), slice(60, 68), slice(90, 98))  # the star at column 63.5 + 30
    assert with_star[star].max() > 200 and abs(masked[star].mean() - 10) < 1.0  # sky level kept
    galaxy = (slice(None), slice(48, 80), slice(48, 80))
    np.testing.assert_array_equal(masked[galaxy], with_star[galaxy])
    assert masked.sum() == pytest.approx(clean.sum(), rel=0.01)
    # a star touching the galaxy above the threshold is left with it: no galaxy is ever split
    touching, _ = mask_neighbours(render(radius=5, star=(7, 0)))
    np.testing.assert_array_equal(touching[galaxy], render(radius=5, star=(7, 0))[galaxy])


@pytest.mark.parametrize("angle", [0.0, 35.0, -60.0, 90.0])
def test_alignment_turns_the_major_axis_horizontal(angle: float) -> None:
    image = render(radius=6, q=0.3, angle=angle)
    framed, galaxy = frame_galaxy(image, 48, align=True)
    assert galaxy.axis_ratio == pytest.approx(0.3, abs=0.1)
    assert abs(centroid(framed)[2]) < 3.0
    unaligned, _ = frame_galaxy(image, 48, align=False)
    # angles in images: y points down, so a counter-clockwise angle on the sky is negative here
    measured = centroid(unaligned)[2]
    assert min(abs(measured - angle), abs(abs(measured - angle) - 180)) < 3.0


def test_tiny_galaxy_single_band_blank_and_flat_images_do_not_fail() -> None:
    tiny, galaxy = frame_galaxy(render(radius=0.7), 32)
    assert galaxy.status == "ok" and np.isfinite(tiny).all()
    assert galaxy.radius < 3  # framed with the smallest allowed frame, not zoomed to a pixel
    single, galaxy = frame_galaxy(render(bands=1), 32)
    assert single.shape == (1, 32, 32) and galaxy.status == "ok"
    for blank in (np.zeros((3, 64, 64)), np.full((1, 64, 64), 7.0)):
        out, galaxy = frame_galaxy(blank, 32)
        assert galaxy.status == "no_source"
        assert out.shape == (blank.shape[0], 32, 32) and np.isfinite(out).all()
    noise = np.random.default_rng(0).normal(size=(3, 64, 64))
    out, galaxy = frame_galaxy(noise, 32)
    assert np.isfinite(out).all()


def test_preprocess_galaxy_frame_scales_by_the_galaxy_and_round_trips() -> None:
    pre = Preprocess(32, frame="galaxy", extent=2.0, align=False)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    faint, status = pre.apply(render(noise=0.1) * 0.1)
    bright, _ = pre.apply(render(noise=0.1) * 10)
    assert status == "ok"
    assert faint.min() >= -1 and faint.max() <= 1
    np.testing.assert_allclose(faint, bright, atol=0.05)  # brightness is scaled away
    blank = pre.apply(np.full((3, 40, 40), np.nan, np.float32))
    assert blank[1] == "blank" and np.isnan(blank[0]).all()
    with pytest.raises(ValueError, match="extent"):
        Preprocess(32, frame="galaxy", extent=0)
    with pytest.raises(ValueError, match="frame"):
        Preprocess(32, frame="stamp")


def test_real_sdss_galaxies_are_all_framed(shared_data: Path) -> None:
    catalog = pd.read_csv(shared_data / "gz1-sdss-dev" / "catalog.csv").groupby("label").head(4)
    pre = Preprocess(64, frame="galaxy")
    for loc in catalog["file_loc"]:
        pixels = np.asarray(Image.open(shared_data / "gz1-sdss-dev" / loc)).transpose(2, 0, 1)
        image, status = pre.apply(pixels)
        assert status == "ok", loc
        assert image.shape == (3, 64, 64) and np.isfinite(image).all()
        x, y, _ = centroid((image + 1) / 2)
        assert (x, y) == pytest.approx((31.5, 31.5), abs=3), loc
