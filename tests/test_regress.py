"""The regressor: targets, position-angle augmentation, `galclust train regressor`, calibration,
scores and the classical baseline, `galclust predict`, and each bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import galsim
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from galclust.cli import main
from galclust.data.pack import PackOptions, pack
from galclust.data.transforms import symmetry
from galclust.exceptions import GalclustFileError, GalclustValueError
from galclust.models.regressor import (
    WARMUP_STEPS,
    Regressor,
    RegressorModule,
    aperture_masks,
    aperture_photometry,
    gaussian_nll,
    turn_targets,
)
from galclust.regress import (
    Calibration,
    FluxScaling,
    RegressorOptions,
    Targets,
    calibrate,
    load_regressor,
    predict,
    train_regressor,
)
from galclust.regress.baseline import fit_sersic
from galclust.regress.evaluate import infer
from galclust.regress.targets import RegressionData
from galclust.regress.training import RegressorReport
from galclust.simulate import SimulateOptions, simulate
from galclust.train import TrainOptions, ema_average, train_vae

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 simulated 32x32 DECaLS galaxies (train/val/test 128/16/16)."""
    out = tmp_path_factory.mktemp("sims") / "sims"
    simulate(SimulateOptions(n=160, output=str(out), size=32, stamp_range=(32, 48)))
    return out


def options(source: Path, run: Path, **changes: object) -> RegressorOptions:
    base = RegressorOptions(
        source=str(source), output=str(run), epochs=2, batch_size=32, baseline=0, workers=0,
        accelerator="cpu", precision="32-true", progress=False,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(sims: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "reg"
    train_regressor(options(sims, run, targets=("mag_r", "hlr", "pa"), baseline=2))
    return run


def test_targets_round_trip_in_catalog_units() -> None:
    table = pd.DataFrame({"mag_r": [18.0, 19.5], "hlr": [0.5, 2.0], "pa": [10.0, 170.0]})
    targets = Targets(("mag_r", "hlr", "pa"))
    assert targets.outputs == ("mag_r", "log10_hlr", "pa_cos", "pa_sin")
    raw = targets.raw(table)
    np.testing.assert_allclose(raw[:, 1], np.log10([0.5, 2.0]), rtol=1e-6)
    decoded = targets.decode(raw, np.full_like(raw, 0.01))
    for name in ("mag_r", "hlr", "pa"):
        np.testing.assert_allclose(decoded[name], table[name], rtol=1e-5, atol=1e-4)
    # 0.01 dex on a size is 2.3% of it; 0.01 on cos 2PA and sin 2PA (a unit vector) is 0.01 rad
    # on 2 PA, so 0.005 rad on PA
    np.testing.assert_allclose(decoded["hlr_err"], table["hlr"] * math.log(10) * 0.01, rtol=1e-5)
    np.testing.assert_allclose(decoded["pa_err"], math.degrees(0.005), rtol=1e-4)
    np.testing.assert_allclose(decoded["mag_r_err"], 0.01, rtol=1e-6)
    missing = targets.raw(pd.DataFrame({"mag_r": [np.nan], "hlr": [-1.0], "pa": [5.0]}))
    assert np.isnan(missing[0, :2]).all()


def _moment_angle(image: np.ndarray) -> float:
    """Position angle (degrees from +x = columns towards +y = rows) from second moments."""
    y, x = np.indices(image.shape)
    w = image.clip(0)
    mx, my = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
    xx = (w * (x - mx) ** 2).sum()
    yy = (w * (y - my) ** 2).sum()
    xy = (w * (x - mx) * (y - my)).sum()
    return math.degrees(0.5 * math.atan2(2 * xy, xx - yy)) % 180


@pytest.mark.parametrize("pa", [20.0, 65.0, 130.0])
def test_flips_and_turns_move_the_position_angle_as_the_image(pa: float) -> None:
    """GalSim's angle (as the simulation's ``pa``) is measured from columns towards rows; each
    of the 8 symmetries must change (cos 2PA, sin 2PA) as it turns the pixels."""
    galaxy = galsim.Exponential(half_light_radius=1.0).shear(q=0.4, beta=pa * galsim.degrees)
    image = galaxy.drawImage(nx=48, ny=48, scale=0.2).array
    assert abs((_moment_angle(image) - pa + 90) % 180 - 90) < 2
    c2, s2 = math.cos(math.radians(2 * pa)), math.sin(math.radians(2 * pa))
    raw = torch.tensor([[c2, s2, 0.4 * c2, 0.4 * s2]])  # cos 2PA, sin 2PA, e1, e2
    for s in range(8):
        turned = symmetry(torch.from_numpy(image.copy()), s).numpy()
        c, sn, e1, e2 = turn_targets(raw, torch.tensor([s]), [0, 2], [1, 3])[0].tolist()
        for expected in (math.degrees(0.5 * math.atan2(sn, c)) % 180,
                         math.degrees(0.5 * math.atan2(e2, e1)) % 180):  # fmt: skip
            assert abs((_moment_angle(turned) - expected + 90) % 180 - 90) < 2, s


def test_regressor_shapes_follow_its_parameters() -> None:
    model = Regressor(in_channels=2, image_size=48, n_outputs=5)
    mean, logvar = model(torch.zeros(3, 2, 48, 48))
    assert mean.shape == logvar.shape == (3, 5)
    told = Regressor(in_channels=2, image_size=48, n_outputs=5, n_conditions=1).eval()
    images = torch.randn(3, 2, 48, 48)
    with torch.no_grad():
        a, _ = told(images, torch.zeros(3, 1))
        b, _ = told(images, torch.ones(3, 1))
    assert a.shape == (3, 5) and not torch.equal(a, b)  # the head sees the condition
    with pytest.raises(ValueError, match=r"needs \(3, 1\) conditions, got None"):
        told(images)
    # the last two conditions are measurements: standardised, and also a linear path to the
    # outputs, so that a mean can follow them exactly
    measuring = Regressor(in_channels=2, image_size=48, n_outputs=5, n_conditions=3, n_measured=2)
    with torch.no_grad():
        measuring.head[-1].weight.zero_()
        measuring.head[-1].bias.zero_()
        measuring.direct.weight.zero_()
        measuring.direct.weight[0, 1] = 1.0  # the first mean is the second measurement
        measuring.direct.bias.zero_()
        measured = torch.tensor([[0.0, 1.0, 4.0], [5.0, 2.0, 5.0], [-3.0, 3.0, 6.0]])
        mean, _ = measuring.eval()(images, measured)
    torch.testing.assert_close(mean[:, 0], torch.tensor([4.0, 5.0, 6.0]))
    with pytest.raises(ValueError, match="n_measured 2 must be from 0 to n_conditions"):
        Regressor(n_conditions=1, n_measured=2)
    assert isinstance(Regressor().head[2], torch.nn.GELU)
    assert isinstance(Regressor(head_activation="relu").head[2], torch.nn.ReLU)
    with pytest.raises(ValueError, match="head_activation 'tanh'"):
        Regressor(head_activation="tanh")


def test_beta_nll_stops_a_large_variance_from_muting_an_output() -> None:
    """With beta = 1 the means learn as from a squared error, whatever variance is predicted;
    with beta = 0 (the plain likelihood) an output given a large variance barely learns."""
    target = torch.tensor([[1.0, 1.0]])
    logvar = torch.tensor([[0.0, 4.0]])  # the second output has "given up": variance e^4
    for beta, ratio in ((0.0, math.exp(-4.0)), (0.5, math.exp(-2.0)), (1.0, 1.0)):
        mean = torch.zeros(1, 2, requires_grad=True)
        gaussian_nll(mean, logvar, target, beta).backward()
        assert mean.grad is not None
        grad = mean.grad[0]
        assert float(grad[1] / grad[0]) == pytest.approx(ratio, rel=1e-5), beta
    plain = gaussian_nll(torch.zeros(1, 2), logvar, target)
    assert float(plain) == pytest.approx(0.25 * (0 + 1 + 4 + math.exp(-4.0)), rel=1e-6)


def test_train_regressor_writes_scores_plots_and_calibrated_checkpoint(
    trained: Path, sims: Path
) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["targets"] == ["mag_r", "hlr", "pa"] and metrics["test_count"] == 16
    for name, unit in (("mag_r", "mag"), ("hlr", "dex"), ("pa", "degrees")):
        row = metrics["test"][name]
        assert row["unit"] == unit and row["n"] == 16
        assert {"rmse", "bias", "nmad", "outlier_fraction", "within_1sigma"} <= set(row)
        assert (trained / "plots" / f"{name}.png").stat().st_size > 1000
    assert "median_abs_relative_error" in metrics["test"]["hlr"]
    assert metrics["by_magnitude"]["mag_r"] and metrics["by_snr"]["mag_r"]
    baseline = metrics["baseline"]
    assert baseline["galaxies"] == 2 and set(baseline["scores"]) == {"mag_r", "hlr", "pa"}
    assert baseline["speedup_cnn_vs_fit"] > 1
    table = pd.read_parquet(trained / "test_predictions.parquet")
    assert len(table) == 16 and {"true_mag_r", "mag_r", "mag_r_err", "pa_err"} <= set(table)
    assert table["pa"].between(0, 180).all()
    _, about = load_regressor(trained / "checkpoints" / "best.ckpt")
    assert len(about["sigma_scale"]) == len(about["offset"]) == 4  # mag, log hlr, cos/sin 2PA
    assert about["offset"][2:] == [0.0, 0.0]  # orientation: no mean error to correct
    assert metrics["headline"] == {}  # no q, no Sersic index among the targets
    # checkpoints calibrated before offsets and views: no offset, one view
    assert Calibration.of({"sigma_scale": [2.0, 3.0]}) == Calibration((0.0, 0.0), (2.0, 3.0), 1)
    assert Calibration.of({}) is None
    run_state = json.loads((trained / "run.json").read_text())
    assert run_state["finished"] and run_state["options"]["targets"] == ["mag_r", "hlr", "pa"]
    # the simulation has each galaxy's seeing: the network is given it (--seeing auto)
    assert run_state["options"]["seeing"] == "psf_fwhm"
    catalog = pd.read_parquet(sims / "catalog.parquet")
    train = catalog.loc[catalog["split"] == "train", "psf_fwhm"]
    module = load_regressor(trained / "checkpoints" / "best.ckpt")[0]
    seeing = module.hparams["seeing"]
    assert seeing["column"] == "psf_fwhm" and seeing["median"] == pytest.approx(train.median())
    assert module.model.n_conditions == 1 + 3 * 4  # the seeing, 4 apertures in each of 3 bands
    assert (seeing["min"], seeing["max"]) == pytest.approx((train.min(), train.max()))


def test_averaged_views_turn_with_the_image(trained: Path, sims: Path) -> None:
    """The mean over all 8 symmetries of an image is what the network says of the galaxy
    whichever way it lies: for a turned or mirrored image, the same magnitude and size, and
    the position angle turned or mirrored as the image. Two views (image and mirror image)
    are the mean of the two single predictions."""
    module, _ = load_regressor(trained / "checkpoints" / "best.ckpt")
    catalog = pd.read_parquet(sims / "catalog.parquet").head(6)
    data = RegressionData(catalog, FluxScaling.from_dict(module.hparams["scaling"]))
    images = torch.stack([data[i][0] for i in range(len(data))])
    seeing = torch.tensor(catalog[["psf_fwhm"]].to_numpy(np.float32))
    with torch.inference_mode():
        mean, sigma = module.predict_raw(images, 8, seeing)
        for s in range(8):
            turned, turned_sigma = module.predict_raw(symmetry(images, s), 8, seeing)
            expected = turn_targets(mean, torch.full((6,), s), [2], [3])  # cos 2PA, sin 2PA
            torch.testing.assert_close(turned, expected, atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(turned_sigma, sigma, atol=2e-4, rtol=1e-4)
        one, _ = module.predict_raw(images, 1, seeing)
        mirrored, _ = module.predict_raw(symmetry(images, 4), 1, seeing)
        mirrored[:, 3] = -mirrored[:, 3]
        torch.testing.assert_close(module.predict_raw(images, 2, seeing)[0], (one + mirrored) / 2)
    with pytest.raises(GalclustValueError, match="--views 3"):
        train_regressor(options(sims, trained.parent / "v", views=3))
    with pytest.raises(GalclustValueError, match=r"--nll-beta 2\.0: choose from 0 to 1"):
        train_regressor(options(sims, trained.parent / "v", nll_beta=2.0))


def test_aperture_photometry_is_each_bands_flux_over_its_noise() -> None:
    rng = np.random.default_rng(3)
    noise = (0.5, 1.0, 4.0)
    yy, xx = np.mgrid[:32, :32]
    galaxy = 3000 * np.exp(-((yy - 15.5) ** 2 + (xx - 15.5) ** 2) / 8.0)
    pixels = np.stack(
        [galaxy * b + rng.normal(0, n, galaxy.shape) for b, n in zip((1, 2, 5), noise, strict=True)]
    )
    scaled = torch.from_numpy(FluxScaling(32, noise)(pixels))[None]
    masks = aperture_masks(32)
    assert masks.shape == (4, 32, 32)  # the image, then circles of radius 8, 4 and 2 px
    assert masks[0].sum() == 32 * 32 and masks[1].sum() == pytest.approx(math.pi * 8**2, rel=0.05)
    got = aperture_photometry(scaled, masks).reshape(3, 4).numpy()
    for band in range(3):
        for k, mask in enumerate(masks.numpy()):
            snr = (pixels[band] * mask).sum() / (noise[band] * math.sqrt(mask.sum()))
            assert got[band, k] == pytest.approx(math.asinh(snr) / 5, rel=1e-4)
    for s in range(8):  # the same whichever way the image lies
        torch.testing.assert_close(
            aperture_photometry(symmetry(scaled, s), masks),
            torch.from_numpy(got.reshape(1, -1)),
            rtol=1e-5,
            atol=1e-6,
        )


def test_the_network_starts_from_the_photometrys_least_squares_fit(sims: Path) -> None:
    catalog = pd.read_parquet(sims / "catalog.parquet")
    targets = Targets(("mag_r", "hlr")).fitted(Targets(("mag_r", "hlr")).raw(catalog))
    scaling = FluxScaling(32, (0.004, 0.006, 0.015))
    module = RegressorModule(3, 32, targets=targets.to_dict(), apertures=True).eval()
    raw = targets.raw(catalog)
    data = RegressionData(catalog, scaling, raw)
    images = torch.stack([data[i][0] for i in range(len(data))])
    module.start_from_photometry(module.photometry(images), torch.from_numpy(raw))
    with torch.no_grad():  # the linear path alone
        module.model.head[-1].weight.zero_()
        module.model.head[-1].bias.zero_()
        mean, sigma = module.predict_raw(images)
    error = mean.numpy() - raw
    spread = raw.std(0)
    assert np.sqrt((error[:, 0] ** 2).mean()) < 0.1 * spread[0]  # a magnitude from the fluxes
    rmse = np.sqrt((error**2).mean(0))
    np.testing.assert_allclose(sigma.numpy().mean(0), rmse, rtol=0.05)  # the fit's scatter
    with pytest.raises(ValueError, match=r"not given aperture photometry \(apertures=False\)"):
        plain = RegressorModule(3, 32, targets=targets.to_dict())
        plain.start_from_photometry(module.photometry(images), torch.from_numpy(raw))


def test_the_learning_rate_warms_up_over_the_first_steps() -> None:
    """The rate rises linearly from lr / WARMUP_STEPS at the first step (at the full rate
    Adam's first steps silenced most of the head's hidden units), the epoch schedule intact."""
    targets = {"names": ["mag_r"], "outputs": ["mag_r"], "mean": [0.0], "std": [1.0]}
    module = RegressorModule(3, 16, targets=targets, lr=1e-2, augment=False)
    rates: list[float] = []

    class Record(L.Callback):
        def on_before_optimizer_step(self, trainer: L.Trainer, *_: object) -> None:
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    data = torch.utils.data.TensorDataset(
        torch.randn(24, 3, 16, 16), torch.zeros(24, 1), torch.randn(24, 1)
    )
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", callbacks=[Record()], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer.fit(module, loader, loader)
    assert len(rates) == 6
    expected = [1e-2 * (k + 1) / WARMUP_STEPS for k in range(6)]
    np.testing.assert_allclose(rates[:3], expected[:3], rtol=1e-6)  # epoch 1: the full rate's
    cosine = 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi / 29))  # epoch 2 of 30
    np.testing.assert_allclose(rates[3:], [r * cosine for r in expected[3:]], rtol=1e-6)


def test_the_moving_average_warms_up_then_follows_the_weights_slowly() -> None:
    average = ema_average(0.999)
    weights, counter = torch.zeros(3), torch.tensor(0)
    average([weights, counter], [torch.ones(3), torch.tensor(7)], torch.tensor(1))
    # at the first update after the copy, the decay is (1 + 1) / (10 + 1): mostly the new weights
    torch.testing.assert_close(weights, torch.full((3,), 9 / 11))
    assert int(counter) == 7
    average([weights], [torch.full((3,), 2.0)], torch.tensor(10**6))  # the decay is 0.999 now
    torch.testing.assert_close(weights, torch.full((3,), 0.999 * 9 / 11 + 0.001 * 2))


def test_checkpoints_keep_the_averaged_weights_and_those_being_trained(
    trained: Path, sims: Path, tmp_path: Path
) -> None:
    # best.ckpt is the epoch whose means were closest on the validation split
    history = pd.read_csv(trained / "metrics.csv").groupby("epoch")["val_mse"].mean()
    best = torch.load(trained / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] + 1 == history.idxmin(), history
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = torch.load(trained / "checkpoints" / name, weights_only=True)
        averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
        assert averaged.keys() == current.keys()
        assert not all(torch.equal(averaged[k], current[k]) for k in averaged)
    plain = tmp_path / "plain"
    train_regressor(options(sims, plain, epochs=1, ema=0.0))
    assert "current_model_state" not in torch.load(plain / "checkpoints" / "last.ckpt")
    with pytest.raises(GalclustValueError, match=r"--ema 1\.0: give a decay from 0"):
        train_regressor(options(sims, tmp_path / "e", ema=1.0))


def test_calibration_removes_a_mean_error_measured_on_the_validation_split(
    trained: Path, sims: Path, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes((trained / "checkpoints" / "best.ckpt").read_bytes())
    module, about = load_regressor(checkpoint)
    before = Calibration.of(about)
    assert before is not None
    with torch.no_grad():  # every magnitude now comes out 0.5 standard deviations too faint
        module.model.head[-1].bias[0] += 0.5
    shift = 0.5 * float(module.std[0])
    catalog = pd.read_parquet(sims / "catalog.parquet")
    val = catalog[catalog["split"] == "val"].reset_index(drop=True)
    targets = Targets.from_dict(module.hparams["targets"])
    scaling = FluxScaling.from_dict(module.hparams["scaling"])
    data = RegressionData(val, scaling, targets.raw(val), seeing=val["psf_fwhm"].to_numpy())
    after = calibrate(module, checkpoint, data, 32, 0, before.views)
    assert after.views == 2  # the default
    assert after.offset[0] == pytest.approx(before.offset[0] - shift, abs=0.02 * shift)
    assert after.offset[1:] == pytest.approx(before.offset[1:], abs=1e-4)
    assert Calibration.of(load_regressor(checkpoint)[1]) == after  # stored in the checkpoint
    mean, _, _, truth = infer(module, data, 32, 0, after)
    assert abs(float(np.mean(truth[:, 0] - mean[:, 0]))) < 0.2 * shift


def test_regressor_learns_magnitude_far_better_than_the_mean(tmp_path: Path) -> None:
    sims = tmp_path / "sims"
    simulate(SimulateOptions(n=1000, output=str(sims), size=32, stamp_range=(32, 48)))
    report = train_regressor(options(sims, tmp_path / "mag", epochs=8, batch_size=64))
    test = report.metrics["test"]["mag_r"]
    assert 0.5 < test["within_1sigma"] < 0.85  # calibrated on the validation split (68%)
    catalog = pd.read_parquet(sims / "catalog.parquet")
    spread = float(catalog.loc[catalog["split"] == "test", "mag_r"].std())
    assert test["rmse"] < 0.3 * spread, (test["rmse"], spread)


def test_resume_continues_and_refuses_other_targets(sims: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    train_regressor(options(sims, run, epochs=1))
    module = load_regressor(run / "checkpoints" / "best.ckpt")[0]
    assert isinstance(module.model.head[2], torch.nn.GELU)  # the default
    with pytest.raises(GalclustFileError, match="already holds a finished run"):
        train_regressor(options(sims, run, epochs=2))
    report = train_regressor(options(sims, run, epochs=2, resume=True))
    assert report.epochs == 2
    with pytest.raises(GalclustValueError, match="trained with targets"):
        train_regressor(options(sims, run, epochs=3, resume=True, targets=("hlr",)))
    with pytest.raises(GalclustValueError, match="trained with seeing='psf_fwhm', not 'none'"):
        train_regressor(options(sims, run, epochs=3, resume=True, seeing="none"))
    with pytest.raises(GalclustValueError, match=r"trained with nll_beta=0\.25, not 0\.5"):
        train_regressor(options(sims, run, epochs=3, resume=True, nll_beta=0.5))
    with pytest.raises(GalclustValueError, match=r"trained with ema=0\.999, not 0\.0"):
        train_regressor(options(sims, run, epochs=3, resume=True, ema=0.0))
    with pytest.raises(GalclustValueError, match="trained with head_activation='gelu', not 'relu'"):
        train_regressor(options(sims, run, epochs=3, resume=True, head_activation="relu"))


def test_a_run_from_before_seeing_and_beta_resumes_as_it_was_trained(
    sims: Path, tmp_path: Path
) -> None:
    run = tmp_path / "old"
    old = {"seeing": "none", "nll_beta": 0.0, "ema": 0.0, "apertures": False,
           "head_activation": "relu"}  # fmt: skip
    train_regressor(options(sims, run, epochs=1, **old))
    state = json.loads((run / "run.json").read_text())
    for name in old:  # as galclust wrote run.json before these options
        del state["options"][name]
    (run / "run.json").write_text(json.dumps(state))
    with pytest.raises(GalclustValueError, match=r"trained with nll_beta=0\.0, not 0\.25"):
        train_regressor(options(sims, run, epochs=2, resume=True))
    with pytest.raises(GalclustValueError, match=r"trained with ema=0\.0, not 0\.999"):
        train_regressor(options(sims, run, epochs=2, resume=True, nll_beta=0.0))
    with pytest.raises(GalclustValueError, match=r"trained with apertures=False, not True"):
        train_regressor(options(sims, run, epochs=2, resume=True, nll_beta=0.0, ema=0.0))
    as_trained = {"nll_beta": 0.0, "ema": 0.0, "apertures": False}
    with pytest.raises(GalclustValueError, match="trained with head_activation='relu', not 'gelu'"):
        train_regressor(options(sims, run, epochs=2, resume=True, **as_trained))
    report = train_regressor(
        options(sims, run, epochs=2, resume=True, head_activation="relu", **as_trained)
    )
    assert report.epochs == 2  # --seeing auto took the run's own: none
    module = load_regressor(run / "checkpoints" / "best.ckpt")[0]
    assert module.hparams["seeing"] is None
    assert module.model.n_conditions == 0


def test_nan_targets_are_dropped_and_counted(sims: Path, tmp_path: Path) -> None:
    catalog = pd.read_parquet(sims / "catalog.parquet")
    missing = int(catalog["hlr_bulge"].isna().sum())
    assert missing > 0  # families without a bulge
    report = train_regressor(options(sims, tmp_path / "b", epochs=1, targets=("hlr_bulge",)))
    assert report.dropped == missing
    assert report.train_count + report.val_count + report.test_count == len(catalog) - missing
    # a seeing column is needed only in the rows kept (here it is missing where the target is)
    kept = train_regressor(
        options(sims, tmp_path / "c", epochs=1, targets=("hlr_bulge",), seeing="hlr_bulge",
                head_activation="relu")
    )  # fmt: skip
    assert kept.dropped == missing
    module = load_regressor(tmp_path / "c" / "checkpoints" / "best.ckpt")[0]
    assert isinstance(module.model.head[2], torch.nn.ReLU)  # the checkpoint rebuilds it


def test_bad_targets_and_splits_are_refused(sims: Path, tmp_path: Path) -> None:
    with pytest.raises(GalclustValueError, match=r"'mag_x' is not a column of .* choose from"):
        train_regressor(options(sims, tmp_path / "x", targets=("mag_x",)))
    with pytest.raises(GalclustValueError, match=r"'family' .* is not numeric"):
        train_regressor(options(sims, tmp_path / "x", targets=("family",)))
    with pytest.raises(GalclustValueError, match="--head-activation tanh: choose relu or gelu"):
        train_regressor(options(sims, tmp_path / "x", head_activation="tanh"))
    no_test = tmp_path / "no_test"
    simulate(SimulateOptions(n=20, output=str(no_test), size=32, split=(0.9, 0.1, 0.0)))
    with pytest.raises(GalclustValueError, match=r"has no test split.*--split 0\.8,0\.1,0\.1"):
        train_regressor(options(no_test, tmp_path / "y"))


def test_predict_on_a_simulation_and_bad_inputs(trained: Path, sims: Path, tmp_path: Path) -> None:
    checkpoint = trained / "checkpoints" / "best.ckpt"
    report = predict(checkpoint, sims, tmp_path / "p.parquet", workers=0)
    table = pd.read_parquet(tmp_path / "p.parquet")
    assert len(table) == 160 and list(table.columns) == [
        "id_str", "mag_r", "mag_r_err", "hlr", "hlr_err", "pa", "pa_err"
    ]  # fmt: skip
    assert not report.notes  # the simulation says its pixel scale and zeropoint
    test = pd.read_parquet(trained / "test_predictions.parquet")
    same = table.set_index("id_str").loc[test["id_str"]]
    for column in ("mag_r", "mag_r_err", "hlr", "hlr_err"):  # same preprocessing, calibration
        np.testing.assert_allclose(same[column], test[column], rtol=1e-5)
    store = tmp_path / "store"
    pack(PackOptions(str(sims), str(store), frame="field", workers=1))
    with pytest.raises(GalclustValueError, match=r"is a packed store.*the catalog it was packed"):
        predict(checkpoint, store, workers=0)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "a.npy", np.zeros((3, 32, 32), np.float32))
    np.save(mixed / "b.npy", np.zeros((1, 32, 32), np.float32))
    pd.DataFrame({"id_str": ["a", "b"], "file_loc": [str(mixed / "a.npy"), str(mixed / "b.npy")],
                  "channels": [3, 3]}).to_csv(mixed / "cat.csv", index=False)  # fmt: skip
    with pytest.raises(GalclustValueError, match=r"b\.npy has 1 band\(s\).*takes 3"):
        predict(checkpoint, mixed / "cat.csv", workers=0)
    with pytest.raises(GalclustValueError, match=r"--pixel-scale 0\.0 must be > 0"):
        predict(checkpoint, sims, pixel_scale=0.0)
    # a VAE checkpoint is not a regressor
    vae_run = tmp_path / "vae"
    train_vae(TrainOptions(str(sims), str(vae_run), latent_dim=4, epochs=1, batch_size=32,
                           workers=0, frame="field", progress=False))  # fmt: skip
    with pytest.raises(GalclustValueError, match=r"is a vae checkpoint; give .* train regressor"):
        predict(vae_run / "checkpoints" / "best.ckpt", sims, workers=0)
    one_band = tmp_path / "r_only"
    simulate(SimulateOptions(n=8, output=str(one_band), size=32, bands=("r",)))
    with pytest.raises(
        GalclustValueError, match="has 1-band images, the regressor was trained on 3"
    ):
        predict(checkpoint, one_band, workers=0)
    coarse = tmp_path / "coarse"
    simulate(SimulateOptions(n=8, output=str(coarse), size=32, pixel_scale=0.5))
    with pytest.raises(
        GalclustValueError, match=r"0\.5 arcsec/pixel, the regressor was trained at 0\.262"
    ):
        predict(checkpoint, coarse, workers=0)


def test_predict_gives_the_network_each_galaxys_seeing(
    trained: Path, sims: Path, tmp_path: Path
) -> None:
    """From the catalog's column, else --psf-fwhm, else the training median, with a note."""
    checkpoint = trained / "checkpoints" / "best.ckpt"
    with_column = predict(checkpoint, sims, workers=0).table
    catalog = pd.read_parquet(sims / "catalog.parquet")
    median = load_regressor(checkpoint)[0].hparams["seeing"]["median"]
    catalog.drop(columns="psf_fwhm").to_parquet(tmp_path / "no_psf.parquet")
    assumed = predict(checkpoint, tmp_path / "no_psf.parquet", workers=0)
    assert any(f"no psf_fwhm column: assumed the training median seeing, {median:.3g}" in n
               for n in assumed.notes)  # fmt: skip
    same = predict(checkpoint, tmp_path / "no_psf.parquet", psf_fwhm=median, workers=0).table
    pd.testing.assert_frame_equal(assumed.table, same)
    worse = predict(checkpoint, tmp_path / "no_psf.parquet", psf_fwhm=5.0, workers=0)
    assert any("160 galaxies have a PSF FWHM outside the training range" in n
               for n in worse.notes)  # fmt: skip
    assert not np.allclose(worse.table["hlr"], with_column["hlr"])  # the network uses it
    catalog.loc[:4, "psf_fwhm"] = np.nan
    catalog.to_parquet(tmp_path / "gaps.parquet")
    gaps = predict(checkpoint, tmp_path / "gaps.parquet", workers=0)
    assert any("5 rows without a positive psf_fwhm" in n for n in gaps.notes)
    assert np.isfinite(gaps.table["hlr"]).all()
    with pytest.raises(GalclustValueError, match=r"--psf-fwhm -1\.0 must be > 0"):
        predict(checkpoint, sims, psf_fwhm=-1.0)
    with pytest.raises(GalclustValueError, match=r"--psf-fwhm inf must be > 0"):
        predict(checkpoint, sims, psf_fwhm=math.inf)
    # --psf-fwhm wins over the catalog's column, and says so
    override = predict(checkpoint, sims, psf_fwhm=5.0, workers=0)
    assert "--psf-fwhm 5 used for every galaxy, not column psf_fwhm" in override.notes
    np.testing.assert_allclose(override.table["hlr"], worse.table["hlr"], rtol=1e-5)


def test_predict_subtracts_each_images_sky_level_from_the_catalog(
    trained: Path, sims: Path, tmp_path: Path
) -> None:
    """Images on a sky pedestal, with their level in a column named by --sky (or its per-band
    columns), are measured as the sky-subtracted originals; the pedestal alone would be
    measured as galaxy light."""
    checkpoint = trained / "checkpoints" / "best.ckpt"
    clean = predict(checkpoint, sims, workers=0).table
    catalog = pd.read_parquet(sims / "catalog.parquet")
    levels = np.array([0.004, 0.006, 0.015], np.float32) * 3  # 3 sigma of each band's noise
    images = np.load(catalog["file_loc"].iloc[0]) + levels[:, None, None]
    np.save(tmp_path / "raised.npy", images)
    catalog["file_loc"] = str(tmp_path / "raised.npy")
    catalog.to_parquet(tmp_path / "no_sky.parquet")
    catalog["sky"] = float(levels[1])
    for band, level in zip("grz", levels, strict=True):
        catalog[f"level_{band}"] = float(level)
    catalog.to_parquet(tmp_path / "sky.parquet")
    raised = predict(checkpoint, tmp_path / "no_sky.parquet", workers=0).table
    assert (raised["mag_r"] < clean["mag_r"] - 0.1).mean() > 0.9  # the pedestal adds light
    per_band = predict(checkpoint, tmp_path / "sky.parquet", sky="level", workers=0)
    assert (
        "sky level subtracted from columns level_g, level_r, level_z (median 0.018 image units "
        "per pixel)"
    ) in per_band.notes
    np.testing.assert_allclose(per_band.table["mag_r"], clean["mag_r"], atol=1e-3)
    one = predict(checkpoint, tmp_path / "sky.parquet", sky="sky", workers=0)  # every band
    assert any(n.startswith("sky level subtracted from column sky (") for n in one.notes)
    assert not np.allclose(one.table["mag_r"], clean["mag_r"], atol=1e-3)  # g and z are off
    ignored = predict(checkpoint, tmp_path / "sky.parquet", workers=0)  # only when asked
    pd.testing.assert_frame_equal(ignored.table, raised)
    assert any("has a sky column, not subtracted: give --sky sky" in n for n in ignored.notes)
    with pytest.raises(GalclustValueError, match=r"--sky bg: .* no column 'bg' nor bg_g, bg_r"):
        predict(checkpoint, tmp_path / "sky.parquet", sky="bg", workers=0)
    catalog.loc[3, "level_z"] = np.nan
    catalog.to_parquet(tmp_path / "gap.parquet")
    with pytest.raises(
        GalclustValueError, match=r"column level_z is not a finite number in 1 rows \(first: "
    ):
        predict(checkpoint, tmp_path / "gap.parquet", sky="level", workers=0)


def test_seeing_column_is_checked_and_can_be_left_out(sims: Path, tmp_path: Path) -> None:
    with pytest.raises(GalclustValueError, match=r"--seeing 'fwhm' is not a column .* none"):
        train_regressor(options(sims, tmp_path / "x", seeing="fwhm"))
    with pytest.raises(GalclustValueError, match=r"--seeing 'hlr_bulge' .* not a positive number"):
        train_regressor(options(sims, tmp_path / "x", seeing="hlr_bulge"))
    run = tmp_path / "pixels"
    train_regressor(options(sims, run, epochs=1, seeing="none"))
    checkpoint = run / "checkpoints" / "best.ckpt"
    assert load_regressor(checkpoint)[0].hparams["seeing"] is None
    report = predict(checkpoint, sims, psf_fwhm=1.0, workers=0)
    assert report.notes == ["--psf-fwhm ignored: this regressor was trained without the seeing"]


def test_flux_scaling_keeps_brightness_and_applies_the_zeropoint() -> None:
    scaling = FluxScaling(16, (0.01,))
    image = np.full((1, 20, 20), 0.5, np.float32)
    bright, faint = scaling(image), scaling(image, gain=10 ** (-0.4 * 2.5))
    assert bright.shape == (1, 16, 16) and (bright > faint).all()
    np.testing.assert_allclose(faint, scaling(image / 10), rtol=1e-5)
    # a small stamp whose border still holds galaxy light is padded at the sky (zero), not at
    # the border's level, which would add flux (real COSMOS stamps are as small as 16 px)
    small = np.full((1, 6, 6), 0.5, np.float32)
    padded = scaling(small)[0]
    outside = np.ones((16, 16), bool)
    outside[5:11, 5:11] = False
    assert abs(float(np.median(padded[outside]))) < 0.05 < float(padded[8, 8])


def test_sersic_fit_recovers_a_clean_galaxy() -> None:
    psf = galsim.Moffat(beta=3.5, fwhm=1.2)
    galaxy = galsim.Sersic(2.5, half_light_radius=1.5, flux=20.0).shear(
        q=0.6, beta=40 * galsim.degrees
    )
    image = galsim.Convolve(galaxy, psf).drawImage(nx=48, ny=48, scale=0.262).array
    image += np.random.default_rng(0).normal(0, 0.0005, image.shape)
    fit = fit_sersic(image, 0.0005, 1.2, 0.262)
    assert fit["ok"] == 1.0
    assert abs(fit["flux"] / 20 - 1) < 0.02 and abs(fit["hlr"] / 1.5 - 1) < 0.05
    assert abs(fit["sersic_n"] - 2.5) < 0.3 and abs(fit["q"] - 0.6) < 0.05
    assert abs(fit["pa"] - 40) < 3


@pytest.mark.skipif(not (SHARED / "cosmos-f814w").is_dir(), reason="needs ../shared/data")
def test_predict_reads_real_cosmos_stamps(tmp_path: Path) -> None:
    sims = tmp_path / "hst"
    simulate(SimulateOptions(n=40, output=str(sims), size=32, survey="hst-cosmos"))
    run = tmp_path / "hst-run"
    train_regressor(options(sims, run, epochs=1, targets=("mag_i",)))
    cosmos = pd.read_csv(SHARED / "cosmos-f814w" / "catalog.csv")
    cosmos["file_loc"] = [str(SHARED / "cosmos-f814w" / f) for f in cosmos["file_loc"]]
    cosmos[["id_str", "file_loc"]].to_csv(tmp_path / "cosmos.csv", index=False)
    report = predict(run / "checkpoints" / "best.ckpt", tmp_path / "cosmos.csv", workers=0)
    assert len(report.table) == 100 and np.isfinite(report.table["mag_i"]).all()
    assert any("zeropoint unknown" in n for n in report.notes)
    assert not any("pixel scale" in n for n in report.notes)  # PIXSCALE 0.03 read and matched
    masked = predict(
        run / "checkpoints" / "best.ckpt", tmp_path / "cosmos.csv", workers=0,
        mask_neighbours=True,
    ).table  # fmt: skip
    touched = masked["masked_pixels"] > 0
    assert 0 < touched.sum() < 100  # stamps with detached neighbours, not all
    np.testing.assert_array_equal(
        masked.loc[~touched, "mag_i"], report.table.loc[~touched, "mag_i"]
    )
    assert (masked.loc[touched, "mag_i"] != report.table.loc[touched, "mag_i"]).any()


def test_cli_train_regressor_and_predict(
    trained: Path, sims: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "regressor", str(sims), "-o", str(tmp_path / "c"), "--epochs", "1",
            "--workers", "0", "--baseline", "0", "--accelerator", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "trained 1 epochs" in capsys.readouterr().out
    assert main([*args[:4], str(tmp_path / "d"), *args[5:], "--targets", "mag_r,nope"]) == 2
    assert "'nope' is not a column" in capsys.readouterr().err
    out = tmp_path / "p.csv"
    assert main(["predict", str(trained / "checkpoints" / "best.ckpt"), str(sims), "-o", str(out),
                 "--workers", "0"]) == 0  # fmt: skip
    assert "predicted mag_r, hlr, pa for 160 galaxies" in capsys.readouterr().out
    assert len(pd.read_csv(out)) == 160
    assert main(["predict", str(trained / "checkpoints" / "best.ckpt"), str(sims), "-o", str(out),
                 "--workers", "0", "--sky", "bg"]) == 2  # fmt: skip
    assert "--sky bg: " in capsys.readouterr().err


def test_summary_says_when_no_test_galaxy_is_bright_enough() -> None:
    report = RegressorReport(Path("run"), 2, 1.0, 10, 2, 2, 0,
                             {"test_snr20": {"mag_r": {"n": 0, "unit": "mag"}}})  # fmt: skip
    assert "mag_r: no test galaxy with S/N >= 20" in report.summary()


def test_two_process_ddp_trains_and_only_rank_0_calibrates_and_scores(
    sims: Path, tmp_path: Path
) -> None:
    run = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "galclust", "train", "regressor", str(sims), "-o", str(run),
         "--epochs", "1", "--batch-size", "16", "--workers", "0", "--baseline", "0",
         "--accelerator", "cpu", "--devices", "2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("trained 1 epochs") == 1
    assert result.stderr.count("uncertainties rescaled") == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_count"] == 16  # every test galaxy scored once, by rank 0
    assert len(pd.read_parquet(run / "test_predictions.parquet")) == 16
    stored = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert len(stored["galclust"]["sigma_scale"]) == 1
