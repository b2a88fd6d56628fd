"""galclust simulate: determinism, family mix, splits, truth that agrees with the pixels."""

from __future__ import annotations

import errno
import importlib
import subprocess
import sys
from pathlib import Path

import galsim
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galclust.exceptions import GalclustFileError, GalclustValueError
from galclust.simulate import (
    FAMILIES,
    Component,
    GalaxyParams,
    SimulateOptions,
    render,
    simulate,
    simulation_survey,
)
from galclust.simulate.params import draw_params, survey_named

simulate_module = importlib.import_module("galclust.simulate")


def small(tmp_path: Path, name: str = "sims", **changes: object) -> SimulateOptions:
    values: dict[str, object] = {
        "n": 24,
        "output": str(tmp_path / name),
        "size": 48,
        "stamp_range": (32, 64),
        "workers": 1,
    }
    values.update(changes)
    return SimulateOptions(**values)  # type: ignore[arg-type]


def test_same_seed_same_images_whatever_the_workers(tmp_path: Path) -> None:
    one = simulate(small(tmp_path, "one", workers=1))
    two = simulate(small(tmp_path, "two", workers=2))
    a = np.load(tmp_path / "one" / "images.npy")
    b = np.load(tmp_path / "two" / "images.npy")
    assert a.shape == (24, 3, 48, 48) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(
        one.catalog.drop(columns="file_loc"), two.catalog.drop(columns="file_loc")
    )
    other = simulate(small(tmp_path, "other", seed=1))
    assert not np.array_equal(a, np.load(other.output / "images.npy"))


def test_family_mix_split_schema_and_finite_pixels(tmp_path: Path) -> None:
    report = simulate(small(tmp_path, n=60))
    catalog = pd.read_parquet(tmp_path / "sims" / "catalog.parquet")
    assert catalog["family"].value_counts().to_dict() == dict.fromkeys(FAMILIES, 10)
    assert catalog["split"].value_counts().to_dict() == {"train": 48, "val": 6, "test": 6}
    assert catalog["id_str"].is_unique
    for column in ("mag_g", "mag_r", "mag_z", "hlr", "sersic_n", "q", "pa", "e1", "e2", "bt"):
        assert column in catalog, column
    for column in ("g_r", "psf_fwhm", "sky_sigma_r", "snr_r", "stamp_size", "seed"):
        assert column in catalog, column
    assert (catalog["file_loc"] == str((tmp_path / "sims" / "images.npy").resolve())).all()
    assert np.isfinite(np.load(tmp_path / "sims" / "images.npy")).all()
    preview = np.asarray(Image.open(tmp_path / "sims" / "previews" / "families.png"))
    assert preview.shape == (6 * 48, 8 * 48, 3)
    assert preview.std() > 5  # galaxies on a sky background, not a blank picture
    assert report.redrawn == 0


def test_single_band_and_hst_preset(tmp_path: Path) -> None:
    r_only = simulate(small(tmp_path, "r", bands=("r",), n=6))
    assert np.load(r_only.output / "images.npy").shape == (6, 1, 48, 48)
    assert "mag_g" not in r_only.catalog and "mag_r" in r_only.catalog
    hst = simulate(small(tmp_path, "hst", survey="hst-cosmos", n=6))
    assert "mag_i" in hst.catalog
    assert hst.catalog["sky_sigma_i"].iloc[0] == pytest.approx(0.0026)


def test_preset_overrides(tmp_path: Path) -> None:
    report = simulate(
        small(tmp_path, n=6, bands=("r",), sky_sigma=(0.05,), psf_fwhm=2.0, zeropoint=30.0)
    )
    assert (report.catalog["sky_sigma_r"] == 0.05).all()
    assert report.catalog["psf_fwhm"].between(1.0, 3.0).all()
    flux = 10 ** (-0.4 * (report.catalog["mag_r"] - 30.0))
    np.testing.assert_allclose(report.catalog["flux_r"], flux)
    ranges = simulate(small(tmp_path, "ranges", n=30, mag_range=(18.0, 18.5), stamp_range=(9, 12)))
    assert ranges.catalog["mag_r"].between(18.0, 18.5).all()
    assert ranges.catalog["stamp_size"].between(9, 12).all()
    assert simulation_survey(ranges.output).mag_range == (18.0, 18.5)  # type: ignore[union-attr]


def test_noiseless_flux_matches_the_magnitude() -> None:
    survey = survey_named("decals", sky_sigma=(0.0, 0.0, 0.0))
    for seed in range(5):
        params = draw_params("compact", survey, seed, stamp_range=(128, 128))
        image, truth = render(params, survey, 128)
        for b, band in enumerate(survey.bands):
            assert image[b].sum() == pytest.approx(truth[f"flux_{band}"], rel=0.01)
            mag = survey.zeropoint - 2.5 * np.log10(image[b].sum())
            assert mag == pytest.approx(truth[f"mag_{band}"], abs=0.011)


def test_measured_half_light_radius_matches_truth() -> None:
    survey = survey_named("decals", bands=("r",), sky_sigma=(0.0,), pixel_scale=0.05)
    component = Component("sersic", 1.0, hlr=1.0, n=1.5, q=1.0)
    params = GalaxyParams("elliptical", 17.0, 0.0, (component,), 0.02, 256, seed=3)
    image, truth = render(params, survey, 256)
    y, x = np.indices(image[0].shape)
    radius = np.hypot(x - 127.5, y - 127.5) * survey.pixel_scale
    order = np.argsort(radius.ravel())
    cumulative = np.cumsum(image[0].ravel()[order])
    measured = radius.ravel()[order][np.searchsorted(cumulative, cumulative[-1] / 2)]
    assert measured == pytest.approx(truth["hlr"], rel=0.03)


def _measured_hlr(image: np.ndarray, scale: float) -> float:
    y, x = np.indices(image.shape)
    centre = (image.shape[0] - 1) / 2
    radius = np.hypot(x - centre, y - centre).ravel() * scale
    order = np.argsort(radius)
    cumulative = np.cumsum(image.ravel()[order])
    return float(radius[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def test_half_light_radius_is_the_whole_galaxys() -> None:
    """A compact bulge and a large disk: the truth is the radius holding half of both together,
    not the bulge's (the brighter component's) own radius."""
    survey = survey_named("decals", bands=("r",), sky_sigma=(0.0,), pixel_scale=0.05)
    bulge = Component("sersic", 0.6, hlr=0.4, n=4.0, q=1.0, bulge=True)
    disk = Component("exponential", 0.4, hlr=2.0, q=1.0)
    params = GalaxyParams("lenticular", 17.0, 0.0, (bulge, disk), 0.02, 384, seed=3)
    image, truth = render(params, survey, 384)
    assert 0.4 * 1.2 < truth["hlr"] < 2.0
    assert _measured_hlr(image[0], survey.pixel_scale) == pytest.approx(truth["hlr"], rel=0.03)
    assert truth["bt"] == pytest.approx(0.6) and truth["hlr_bulge"] == 0.4


def _isophote_axis_ratio(image: np.ndarray, light: float) -> float:
    """Axis ratio of the region inside the isophote that holds ``light`` of the flux."""
    ordered = np.sort(image.ravel())[::-1]
    cumulative = np.cumsum(ordered)
    level = ordered[np.searchsorted(cumulative, light * cumulative[-1])]
    y, x = np.nonzero(image >= level)
    small, large = np.linalg.eigvalsh(np.cov(np.vstack([x, y]).astype(float)))
    return float(np.sqrt(small / large))


def test_axis_ratio_of_a_bulge_and_disk_galaxy_is_its_disks() -> None:
    """A lenticular's bright round bulge does not make the galaxy round: its q is the disk's
    (the inclination), which the outer isophotes show; both components' own q are kept too."""
    survey = survey_named("decals", bands=("r",), sky_sigma=(0.0,), pixel_scale=0.1)
    for bt, bulge_size in ((0.5, 0.2), (0.8, 0.4)):
        bulge = Component("sersic", bt, hlr=2.0 * bulge_size, n=4.0, q=0.9, bulge=True)
        disk = Component("exponential", 1 - bt, hlr=2.0, q=0.4)
        params = GalaxyParams("lenticular", 17.0, 30.0, (bulge, disk), 0.3, 160, seed=3)
        image, truth = render(params, survey, 160)
        assert (truth["q"], truth["q_bulge"], truth["q_disk"]) == (0.4, 0.9, 0.4)
        outer = _isophote_axis_ratio(image[0], 0.9)
        assert abs(outer - truth["q"]) < abs(outer - truth["q_bulge"]), outer
        e = (1 - 0.4) / (1 + 0.4)
        assert np.hypot(truth["e1"], truth["e2"]) == pytest.approx(e)
    spheroid = Component("sersic", 1.0, hlr=1.0, n=4.0, q=0.7, bulge=True)
    _, truth = render(
        GalaxyParams("elliptical", 17.0, 0.0, (spheroid,), 0.3, 64, seed=1), survey, 64
    )
    assert truth["q"] == truth["q_bulge"] == 0.7 and np.isnan(truth["q_disk"])


def test_bulge_to_total_follows_the_spheroid_not_the_sersic_index() -> None:
    survey = survey_named("decals")
    for seed in range(40):
        elliptical = draw_params("elliptical", survey, seed)
        assert elliptical.bulge_to_total == 1.0  # also when n < 3.5
        compact = draw_params("compact", survey, seed)
        g_r = compact.components[0].colour[0]  # red population 0.80, blue 0.45, scatter 0.08
        assert compact.bulge_to_total in (0.0, 1.0)
        if abs(g_r - 0.625) > 0.2:
            assert compact.bulge_to_total == (1.0 if g_r > 0.625 else 0.0)
        assert draw_params("irregular", survey, seed).bulge_to_total == 0.0
        spiral = draw_params("spiral", survey, seed)
        assert spiral.bulge_to_total == spiral.components[0].fraction < 0.25


def test_hst_sizes_are_those_of_cosmos_galaxies_not_psf_multiples() -> None:
    """At HST resolution galaxies are not a few PSFs across: the preset draws sizes in units of
    0.15", so that resolved galaxies have the median flux radius of the real COSMOS stamps
    (0.2-0.3"); DECaLS keeps its seeing as the unit."""
    hst, decals = survey_named("hst-cosmos"), survey_named("decals")
    resolved = [f for f in FAMILIES if f != "compact"]
    for survey, low, high in ((hst, 0.18, 0.4), (decals, 1.7, 3.0)):
        hlr = [draw_params(f, survey, s).half_light_radius for f in resolved for s in range(40)]
        assert low < float(np.median(hlr)) < high, (survey.name, np.median(hlr))
    assert survey_named("hst-cosmos", size_unit=0.3).size_unit == 0.3


def test_hst_noise_is_correlated_like_the_cosmos_mosaics() -> None:
    """Drizzled ACS noise: a 2x2-binned pixel is ~3x as noisy as one pixel (2x for white
    noise), as measured on the real stamps of shared/data/cosmos-f814w (2.98)."""
    from galclust.simulate.render import sky_noise

    hst = sky_noise(survey_named("hst-cosmos"), 128, seed=5)[0]
    white = sky_noise(survey_named("decals"), 128, seed=5)[1]
    for noise, sigma, ratio in ((hst, 0.0026, 3.0), (white, 0.006, 2.0)):
        binned = noise.reshape(64, 2, 64, 2).sum(axis=(1, 3))
        assert noise.std() == pytest.approx(sigma, rel=0.05)
        assert binned.std() / noise.std() == pytest.approx(ratio, rel=0.06)
    assert np.array_equal(hst, sky_noise(survey_named("hst-cosmos"), 128, seed=5)[0])


def test_padding_is_noise_not_zeros(tmp_path: Path) -> None:
    report = simulate(small(tmp_path, n=6, size=64, stamp_range=(32, 32)))
    images = np.load(report.output / "images.npy")
    border = images[:, :, :8, :]
    assert (border != 0).all()
    assert border[:, 1].std() == pytest.approx(0.006, rel=0.15)  # r-band sky sigma


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n": 0}, "-n 0"),
        ({"size": -5}, "--size -5"),
        ({"split": (0.5, 0.5, 0.5)}, "sum to 1"),
        ({"bands": ("g", "x")}, "band 'x' is not in the decals preset"),
        ({"families": ("spiral", "bar")}, "'bar' is not a family"),
        ({"survey": "sdss"}, "--survey 'sdss' is unknown"),
        ({"sky_sigma": (0.01, 0.02)}, "gives 2 values for 3 bands"),
        ({"psf_fwhm": -1.0}, "--psf-fwhm -1.0 must be positive"),
        ({"mag_range": (27.0, 20.0)}, r"--mag-range 27.0,20.0: .* brightest first"),
        ({"mag_range": (20.0, float("nan"))}, r"--mag-range 20.0,nan"),
        ({"stamp_range": (4, 64)}, r"--stamp-sizes 4,64: .* 8 <= min <= max"),
        ({"stamp_range": (16,)}, r"--stamp-sizes 16: give the smallest and largest"),
        ({"mag_range": (20.0,)}, r"--mag-range 20.0: give the brightest and faintest"),
    ],
)
def test_bad_options(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(GalclustValueError, match=message):
        simulate(small(tmp_path, **changes))


def test_finished_simulation_is_not_overwritten(tmp_path: Path) -> None:
    simulate(small(tmp_path, n=6))
    before = (tmp_path / "sims" / "images.npy").read_bytes()
    with pytest.raises(GalclustFileError, match="already holds a finished simulation"):
        simulate(small(tmp_path, n=6, seed=5))
    assert (tmp_path / "sims" / "images.npy").read_bytes() == before
    simulate(small(tmp_path, n=6, seed=5, overwrite=True))
    assert (tmp_path / "sims" / "images.npy").read_bytes() != before


def test_full_disk_leaves_no_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(simulate_module, "write_catalog", no_space)
    with pytest.raises(GalclustFileError, match="No space left on device"):
        simulate(small(tmp_path, n=6))
    assert not (tmp_path / "sims" / "catalog.parquet").exists()


def test_galsim_failure_is_redrawn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    original = simulate_module.render

    def flaky(params: GalaxyParams, survey: object, size: int) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise galsim.GalSimFFTSizeError("too big", 99999)
        return original(params, survey, size)  # type: ignore[arg-type]

    monkeypatch.setattr(simulate_module, "render", flaky)
    report = simulate(small(tmp_path, n=6))
    assert report.redrawn == 1
    assert len(report.catalog) == 6


def test_interrupted_run_resumes_to_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = simulate(small(tmp_path, "reference"))
    monkeypatch.setattr(simulate_module, "_BLOCK", 4)
    original = simulate_module._render_block
    calls = {"n": 0, "stop_at": 3}

    def flaky(indices: range, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == calls["stop_at"]:
            raise KeyboardInterrupt
        return original(indices, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(simulate_module, "_render_block", flaky)
    with pytest.raises(KeyboardInterrupt):
        simulate(small(tmp_path, "resumed"))
    assert not (tmp_path / "resumed" / "catalog.parquet").exists()
    assert len(list((tmp_path / "resumed" / ".simulate-journal").glob("block-*"))) == 2

    calls.update(n=0, stop_at=-1)
    resumed = simulate(small(tmp_path, "resumed"))
    assert calls["n"] == 4  # the 4 blocks left of 6, not all of them
    np.testing.assert_array_equal(
        np.load(tmp_path / "reference" / "images.npy"), np.load(resumed.output / "images.npy")
    )
    pd.testing.assert_frame_equal(
        reference.catalog.drop(columns="file_loc"), resumed.catalog.drop(columns="file_loc")
    )
    assert not (tmp_path / "resumed" / ".simulate-journal").exists()


def test_cli_simulate(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "galclust", "simulate", "-n", "12", "-o", str(out)]
    result = subprocess.run(
        [*command, "--size", "32", "--workers", "2", "--mag-range", "17,18", "--stamp-sizes",
         "16,24"], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "simulated 12 galaxies" in result.stdout
    catalog = pd.read_parquet(out / "catalog.parquet")
    assert catalog["mag_r"].between(17, 18).all() and catalog["stamp_size"].between(16, 24).all()
    assert (out / "provenance.json").is_file() and (out / "catalog.parquet").is_file()
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_simulating_leaves_the_thread_count_of_this_process_alone(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    simulate(SimulateOptions(n=2, output=str(tmp_path / "s"), size=32, workers=1))
    assert torch.get_num_threads() == before
