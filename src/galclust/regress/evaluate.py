"""Loading, calibrating and scoring a trained regressor on the test split."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from galclust.catalog.schema import atomic_write_text, write_catalog
from galclust.models.checkpoint import load_checkpoint
from galclust.models.regressor import CHECKPOINT_KIND, RegressorModule
from galclust.regress.targets import RegressionData, Targets, loader, target_kind
from galclust.train import AtomicCheckpointIO

log = logging.getLogger(__name__)

#: Scores of a subset of the test galaxies, also given in metrics.json's ``headline``:
#: (key, what it is, the score).
_SUBSETS = (
    ("sersic_n_single_component_snr20", "NMAD of log10 n, single-component families", "nmad"),
    ("q_resolved_snr20", "q RMSE, resolved galaxies (hlr >= half the PSF FWHM)", "rmse"),
)


# --- inference, calibration and scores ----------------------------------------------------------


def load_regressor(path: str | os.PathLike[str]) -> tuple[RegressorModule, dict[str, Any]]:
    """A trained regressor (eval mode, CPU) and the ``galclust`` block of its checkpoint
    (with ``offset`` and ``sigma_scale``, its :class:`Calibration`, once calibrated).

    Raises
    ------
    GalclustFileError
        The file is missing or unreadable.
    GalclustValueError
        A checkpoint of another kind (a VAE, a contrastive encoder) or architecture.
    """
    return load_checkpoint(path, {CHECKPOINT_KIND: RegressorModule},
                           "RUN/checkpoints/best.ckpt of galclust train regressor")  # fmt: skip


@dataclass(frozen=True)
class Calibration:
    """How predictions are made and corrected, measured on the validation split
    (:func:`calibrate`): each is the mean over ``views`` symmetries of the image
    (:meth:`RegressorModule.predict_raw`); ``offset`` is then added to each raw output's mean
    (the network's mean error there) and ``scale`` multiplies its sigma."""

    offset: tuple[float, ...]
    scale: tuple[float, ...]
    views: int = 1

    @classmethod
    def of(cls, about: dict[str, Any]) -> Calibration | None:
        """The calibration stored in a checkpoint's ``galclust`` block, None if it has none
        (checkpoints older than the offset have scales only: no offset, one view)."""
        if "sigma_scale" not in about:
            return None
        scale = tuple(float(s) for s in about["sigma_scale"])
        offset = tuple(float(o) for o in about.get("offset", [0.0] * len(scale)))
        return cls(offset, scale, int(about.get("views", 1)))

    def apply(self, mean: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (mean + np.asarray(self.offset, np.float32),
                sigma * np.asarray(self.scale, np.float32))  # fmt: skip


def infer(
    module: RegressorModule,
    data: RegressionData,
    batch_size: int,
    workers: int,
    calibration: Calibration | None = None,
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Raw-unit means and sigmas (N, outputs) for every row of ``data``, the seconds the
    network took per galaxy (reading excluded), and the rows' second elements (targets, or the
    masked-pixel counts of a prediction), made and corrected as ``calibration`` says (one view
    and no correction without it)."""
    means, sigmas, seconds, extras = [], [], 0.0, []
    views = calibration.views if calibration is not None else 1
    with torch.inference_mode():
        for images, seeing, second in loader(data, batch_size, workers):
            t = time.perf_counter()
            mean, sigma = module.predict_raw(images, views, seeing)
            seconds += time.perf_counter() - t
            means.append(mean.numpy())
            sigmas.append(sigma.numpy())
            extras.append(second.numpy())
    outputs = len(module.mean)
    mean_all = np.concatenate(means) if means else np.zeros((0, outputs))
    sigma_all = np.concatenate(sigmas) if sigmas else np.zeros((0, outputs))
    rows = np.concatenate(extras) if extras else np.zeros((0, 0))
    if calibration is not None:
        mean_all, sigma_all = calibration.apply(mean_all, sigma_all)
    return mean_all, sigma_all, seconds / max(len(data), 1), rows


def calibrate(
    module: RegressorModule,
    checkpoint: Path,
    val: RegressionData,
    batch_size: int,
    workers: int,
    views: int = 1,
) -> Calibration:
    """Measure on the validation split, for predictions averaged over ``views`` symmetries, per
    output, the network's mean error (sigma-clipped at 4 sigma, so that a few failures do not
    set it), then the factor that gives the offset-corrected normalised residuals unit spread
    (68% within 1 sigma for Gaussian errors); store all three in ``checkpoint`` (the file
    ``module`` was loaded from) and return them."""
    from astropy.stats import sigma_clipped_stats

    outputs = len(module.mean)
    plain = Calibration((0.0,) * outputs, (1.0,) * outputs, views)
    mean, sigma, _, _ = infer(module, val, batch_size, workers, plain)
    error = val.targets.numpy() - mean
    offset = np.asarray(sigma_clipped_stats(error, sigma=4.0, axis=0)[0], np.float64)
    # a turned galaxy is as likely as any other: orientation outputs have no mean error to fix
    offset[[*module.cos_like, *module.sin_like]] = 0.0
    z = (error - offset) / np.maximum(sigma, 1e-12)
    scale = 1.4826 * np.median(np.abs(z), axis=0)  # robust: outliers aside
    calibration = Calibration(
        tuple(float(o) for o in offset), tuple(float(s) for s in scale), views
    )
    stored = torch.load(checkpoint, map_location="cpu", weights_only=True)
    stored["galclust"]["offset"] = list(calibration.offset)
    stored["galclust"]["sigma_scale"] = list(calibration.scale)
    stored["galclust"]["views"] = views
    AtomicCheckpointIO().save_checkpoint(stored, checkpoint)  # whole, or the old one kept
    log.info(
        "on the validation split: means shifted by %s, uncertainties rescaled by %s",
        ", ".join(f"{o:+.3g}" for o in calibration.offset),
        ", ".join(f"{s:.2f}" for s in calibration.scale),
    )
    return calibration


def residuals(name: str, true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Errors in the unit a target is judged in: dex for log targets, degrees (wrapped to
    [-90, 90)) for ``pa``, the catalog's unit otherwise."""
    kind = target_kind(name)
    delta: np.ndarray
    if kind == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.log10(pred / true)
    elif kind == "angle":
        delta = (pred - true + 90.0) % 180.0 - 90.0
    else:
        delta = pred - true
    return delta


def unit(name: str) -> str:
    """The unit errors of ``name`` are given in."""
    kind = target_kind(name)
    if kind in ("log", "angle"):
        return "dex" if kind == "log" else "degrees"
    return "mag" if name.startswith("mag_") or name in ("g_r", "r_z") else "-"


def scores(name: str, true: np.ndarray, pred: np.ndarray, err: np.ndarray) -> dict[str, Any]:
    """RMSE, bias (mean error), NMAD (1.4826 x median absolute deviation of the errors),
    outlier fraction (errors beyond 3 NMAD from their median), the fractions within 1 and 2
    predicted sigmas, and for log targets the median absolute relative error."""
    delta = residuals(name, true, pred)
    if not len(delta):
        return {"n": 0, "unit": unit(name)}
    sigma = err if target_kind(name) != "log" else err / (pred * math.log(10))  # in dex
    middle = float(np.median(delta))
    nmad = float(1.4826 * np.median(np.abs(delta - middle)))
    row: dict[str, Any] = {
        "n": len(delta),
        "unit": unit(name),
        "rmse": float(np.sqrt(np.mean(delta**2))),
        "bias": float(np.mean(delta)),
        "nmad": nmad,
        "outlier_fraction": float(np.mean(np.abs(delta - middle) > 3 * nmad)) if nmad else 0.0,
    }
    if np.isfinite(sigma).any():  # the classical fit gives no uncertainties
        z = np.abs(delta) / np.maximum(sigma, 1e-12)
        row["within_1sigma"] = float(np.mean(z <= 1))
        row["within_2sigma"] = float(np.mean(z <= 2))
    if target_kind(name) == "log":
        row["median_abs_relative_error"] = float(np.median(np.abs(pred / true - 1)))
    return row


def _binned(
    names: Sequence[str],
    truth: pd.DataFrame,
    pred: pd.DataFrame,
    by: str,
    edges: Sequence[float] | np.ndarray,
) -> dict[str, list[dict[str, Any]]]:
    values = truth[by].to_numpy()
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        rows = []
        for lo, hi in itertools.pairwise(edges):
            inside = (values >= lo) & (values < hi)
            if inside.any():
                row = scores(name, truth[name].to_numpy()[inside], pred[name].to_numpy()[inside],
                             pred[f"{name}_err"].to_numpy()[inside])  # fmt: skip
                rows.append({"bin": [float(lo), float(hi)], **row})
        out[name] = rows
    return out


def evaluate(
    module: RegressorModule,
    calibration: Calibration | None,
    test: RegressionData,
    run: Path,
    truth: pd.DataFrame,
    *,
    batch_size: int = 128,
    workers: int = 0,
    baseline: int = 0,
) -> dict[str, Any]:
    """Score ``module`` (corrected by ``calibration``, see :func:`calibrate`) on the test
    rows; write ``metrics.json``,
    ``test_predictions.parquet`` (truth, prediction and sigma per target) and
    ``plots/<target>.png`` (predicted against true with the 1:1 line, errors against the true
    magnitude). Scores are given for all test galaxies, for those with S/N >= 20, and in bins of
    magnitude and S/N; with ``baseline`` > 0 the classical Sersic fit is scored on the
    first test galaxies alike (:mod:`galclust.regress.baseline`)."""
    targets = Targets.from_dict(module.hparams["targets"])
    mean, sigma, seconds, _ = infer(module, test, batch_size, workers, calibration)
    pred = targets.decode(mean, sigma)
    truth = truth.reset_index(drop=True)
    mag = _reference(truth, "mag_")
    snr = _reference(truth, "snr_")
    metrics: dict[str, Any] = {
        "targets": list(targets.names),
        "test_count": len(truth),
        "cnn_ms_per_galaxy": seconds * 1e3,
        "magnitude_column": mag,
        "snr_column": snr,
    }
    names = targets.names
    metrics["test"] = {n: scores(n, truth[n].to_numpy(), pred[n].to_numpy(),
                                 pred[f"{n}_err"].to_numpy()) for n in names}  # fmt: skip
    if snr is not None:
        bright = truth[snr].to_numpy() >= 20
        metrics["test_snr20"] = {
            n: scores(n, truth[n].to_numpy()[bright], pred[n].to_numpy()[bright],
                      pred[f"{n}_err"].to_numpy()[bright])
            for n in names
        }  # fmt: skip
        metrics["by_snr"] = _binned(names, truth, pred, snr, [0, 10, 20, 50, 100, 300, np.inf])
    if mag is not None:
        lo, hi = np.floor(truth[mag].min()), np.ceil(truth[mag].max())
        metrics["by_magnitude"] = _binned(names, truth, pred, mag, np.arange(lo, hi + 1, 1.0))
    if "family" in truth and "sersic_n" in names:
        single = truth["family"].isin(["elliptical", "compact"]).to_numpy().copy()
        if snr is not None:
            single &= truth[snr].to_numpy() >= 20
        metrics["sersic_n_single_component_snr20"] = scores(
            "sersic_n", truth["sersic_n"].to_numpy()[single], pred["sersic_n"].to_numpy()[single],
            pred["sersic_n_err"].to_numpy()[single],
        )  # fmt: skip
    if {"hlr", "psf_fwhm"} <= set(truth) and "q" in names:
        # a galaxy smaller than half the PSF's FWHM is round in the image whatever its q
        resolved = (truth["hlr"] >= 0.5 * truth["psf_fwhm"]).to_numpy()
        if snr is not None:
            resolved = resolved & (truth[snr].to_numpy() >= 20)
        metrics["q_resolved_snr20"] = scores(
            "q", truth["q"].to_numpy()[resolved], pred["q"].to_numpy()[resolved],
            pred["q_err"].to_numpy()[resolved],
        )  # fmt: skip
    cut = " (S/N >= 20)" if snr is not None else ""
    metrics["headline"] = {
        f"{what}{cut}": metrics[key][score]
        for key, what, score in _SUBSETS
        if metrics.get(key, {}).get("n")  # an empty subset has no scores
    }
    survey = module.hparams.get("survey") or {}
    if baseline and survey:
        from galclust.regress.baseline import fit_sersic_batch

        metrics["baseline"] = fit_sersic_batch(
            test, truth, pred, names, baseline, cnn_ms=metrics["cnn_ms_per_galaxy"],
            pixel_scale=survey["pixel_scale"], zeropoint=survey["zeropoint"], workers=workers,
        )  # fmt: skip
    elif baseline:
        log.warning("the simulation does not say its pixel scale (no simulation.json): no baseline")
    table = pd.concat(
        [truth[["id_str", *[c for c in ("family", mag, snr)
                            if c and c in truth and c not in names]]],
         truth[list(names)].add_prefix("true_"), pred], axis=1,
    )  # fmt: skip
    write_catalog(table, run / "test_predictions.parquet")
    _plots(names, truth, pred, mag, run / "plots")
    atomic_write_text(run / "metrics.json", json.dumps(metrics, indent=2, default=float) + "\n")
    return metrics


def _reference(truth: pd.DataFrame, prefix: str) -> str | None:
    """The r-band (else first) column with ``prefix``: what scores are binned by."""
    columns = [c for c in truth.columns if c.startswith(prefix)]
    return f"{prefix}r" if f"{prefix}r" in columns else (columns[0] if columns else None)


def _plots(
    names: Sequence[str], truth: pd.DataFrame, pred: pd.DataFrame, mag: str | None, folder: Path
) -> None:
    import matplotlib.pyplot as plt

    from galclust.plots import save

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        true, guess = truth[name].to_numpy(), pred[name].to_numpy()
        figure, axes = plt.subplots(1, 2, figsize=(9, 4))
        log_axes = target_kind(name) == "log"
        axes[0].scatter(true, guess, s=3, alpha=0.4, lw=0)
        span = [np.nanmin([true.min(), guess.min()]), np.nanmax([true.max(), guess.max()])]
        axes[0].plot(span, span, "k-", lw=1, label="1:1")
        if log_axes:
            axes[0].set(xscale="log", yscale="log")
        axes[0].set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=name)
        axes[0].legend(loc="upper left")
        delta = residuals(name, true, guess)
        x = truth[mag].to_numpy() if mag else true
        axes[1].scatter(x, delta, s=3, alpha=0.4, lw=0)
        axes[1].axhline(0, color="k", lw=1)
        axes[1].set(xlabel=f"true {mag or name}", ylabel=f"error ({unit(name)})",
                    title="error against magnitude")  # fmt: skip
        figure.tight_layout()
        save(figure, folder / f"{name}.png")
        plt.close(figure)
