"""The classical baseline of the regressor: a single Sersic profile convolved with the PSF,
fitted to each test galaxy by least squares (GalSim draws the model, scipy fits it).

This is what GALFIT-like codes do, given the true PSF (a Moffat of the galaxy's own FWHM, as
GALFIT is given a PSF model) and the sky noise. Free parameters: flux, half-light radius,
Sersic index (0.3-6.2, GalSim's range, on a 0.01 grid so that GalSim's per-index tables are
reused), the two ellipticity components and the centre. It measures the galaxy in one band and
gives that band's magnitude, ``hlr``, ``sersic_n``, ``q`` and ``pa``, scored exactly as the CNN.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import galsim
import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from galclust.parallel import ordered_map
from galclust.regress.targets import RegressionData

log = logging.getLogger(__name__)

_MEASURED = ("hlr", "sersic_n", "q", "pa")
_N_RANGE = (0.3, 6.2)
_GSPARAMS = galsim.GSParams(maximum_fft_size=16384)


def _model(params: np.ndarray, size: int, scale: float, psf: galsim.GSObject) -> np.ndarray:
    log_flux, log_hlr, n, e1, e2, dx, dy = params
    n = round(float(np.clip(n, *_N_RANGE)), 2)
    e = math.hypot(e1, e2)
    if e >= 0.95:  # keep the shear physical
        e1, e2 = e1 * 0.95 / e, e2 * 0.95 / e
    galaxy = (
        galsim.Sersic(n, half_light_radius=math.exp(log_hlr), flux=math.exp(log_flux),
                      gsparams=_GSPARAMS)
        .shear(e1=e1, e2=e2)
        .shift(dx, dy)
    )  # fmt: skip
    image = galsim.Convolve(galaxy, psf).drawImage(nx=size, ny=size, scale=scale)
    drawn: np.ndarray = image.array
    return drawn


def fit_sersic(
    image: np.ndarray, sigma: float, psf_fwhm: float, pixel_scale: float
) -> dict[str, float]:
    """Fit one (H, W) image in image units with sky noise ``sigma``; sizes in arcsec.

    Returns
    -------
    dict
        flux (image units), hlr (arcsec), sersic_n, q, pa (degrees in [0, 180)), chi2 per
        pixel, and ``ok`` (1.0 when the fit converged).
    """
    size = image.shape[-1]
    psf = galsim.Moffat(beta=3.5, fwhm=psf_fwhm, gsparams=_GSPARAMS)
    flux = float(max(image.sum(), 10 * sigma))
    yy, xx = np.indices(image.shape) - (size - 1) / 2
    radius = np.hypot(xx, yy).ravel()
    order = np.argsort(radius)
    cumulative = np.cumsum(np.clip(image.ravel()[order], 0, None))
    half = (
        radius[order][np.searchsorted(cumulative, cumulative[-1] / 2)] if cumulative[-1] > 0 else 2
    )
    hlr = max(float(half) * pixel_scale, pixel_scale)
    start = np.array([math.log(flux), math.log(hlr), 2.0, 0.0, 0.0, 0.0, 0.0])
    lower = [math.log(flux) - 3, math.log(pixel_scale / 10), _N_RANGE[0], -0.95, -0.95,
             -size * pixel_scale / 4, -size * pixel_scale / 4]  # fmt: skip
    upper = [math.log(flux) + 3, math.log(size * pixel_scale), _N_RANGE[1], 0.95, 0.95,
             size * pixel_scale / 4, size * pixel_scale / 4]  # fmt: skip

    def residual(params: np.ndarray) -> np.ndarray:
        diff: np.ndarray = ((_model(params, size, pixel_scale, psf) - image) / sigma).ravel()
        return diff

    try:
        result = least_squares(
            residual, start, bounds=(lower, upper), x_scale=[0.1, 0.1, 0.5, 0.1, 0.1,
            pixel_scale, pixel_scale], diff_step=[1e-3, 1e-3, 0.02, 1e-3, 1e-3, 1e-3, 1e-3],
            max_nfev=200,
        )  # fmt: skip
        params, ok = result.x, float(result.success)
        chi2 = float(np.mean(result.fun**2))
    except (galsim.GalSimError, ValueError, RuntimeError):
        params, ok, chi2 = start, 0.0, math.nan
    log_flux, log_hlr, n, e1, e2, _, _ = params
    e = math.hypot(e1, e2)
    # GalSim's shear (e1, e2): |e| = (1 - q^2) / (1 + q^2), angle 2 beta
    q = math.sqrt((1 - e) / (1 + e)) if e < 1 else 0.0
    pa = math.degrees(0.5 * math.atan2(e2, e1)) % 180.0
    return {"flux": math.exp(log_flux), "hlr": math.exp(log_hlr), "sersic_n": round(n, 2),
            "q": q, "pa": pa, "chi2": chi2, "ok": ok}  # fmt: skip


def _fit_one(
    item: tuple[np.ndarray, float, float, float],
) -> tuple[dict[str, float], float]:
    image, sigma, fwhm, scale = item
    start = time.perf_counter()
    fitted = fit_sersic(image, sigma, fwhm, scale)
    return fitted, time.perf_counter() - start


def fit_sersic_batch(
    test: RegressionData,
    truth: pd.DataFrame,
    cnn: pd.DataFrame,
    names: Sequence[str],
    count: int,
    *,
    cnn_ms: float,
    pixel_scale: float,
    zeropoint: float,
    workers: int = 2,
) -> dict[str, Any]:
    """Fit the first ``count`` test galaxies and score the targets among ``names`` that a
    single Sersic measures, as :func:`galclust.regress.evaluate.scores` scores the CNN (also
    on the same galaxies from its predictions ``cnn``, for a like-for-like comparison); with
    seconds per galaxy and the speed ratio against the CNN's ``cnn_ms`` per galaxy."""
    from galclust.regress.evaluate import scores

    bands = [c.removeprefix("sky_sigma_") for c in truth.columns if c.startswith("sky_sigma_")]
    wanted = [n.removeprefix("mag_") for n in names if n.startswith("mag_")] or bands
    band = "r" if "r" in wanted else wanted[0]
    b = bands.index(band)
    rows = range(min(count, len(test)))
    sky, fwhm = truth[f"sky_sigma_{band}"].to_numpy(), truth["psf_fwhm"].to_numpy()
    items = [
        (np.asarray(test.images.pixels(i), np.float64)[b], float(sky[i]), float(fwhm[i]),
         pixel_scale)
        for i in rows
    ]  # fmt: skip
    log.info("fitting a Sersic profile to %d test galaxies in %s (the classical baseline)",
             len(items), band)  # fmt: skip
    results = list(ordered_map(_fit_one, items, workers))
    fits = pd.DataFrame([r for r, _ in results])
    seconds = np.array([s for _, s in results])
    fits[f"mag_{band}"] = zeropoint - 2.5 * np.log10(fits["flux"].clip(lower=1e-30))
    subset = truth.iloc[list(rows)].reset_index(drop=True)
    measured = [n for n in names if n in (*_MEASURED, f"mag_{band}")]
    out: dict[str, Any] = {
        "galaxies": len(items),
        "band": band,
        "seconds_per_galaxy": float(seconds.mean()) if len(seconds) else math.nan,
        "converged_fraction": float(fits["ok"].mean()) if len(fits) else math.nan,
        "scores": {
            n: scores(n, subset[n].to_numpy(), fits[n].to_numpy(), np.full(len(fits), np.nan))
            for n in measured
        },
        "cnn_scores": {
            n: scores(
                n,
                subset[n].to_numpy(),
                cnn[n].to_numpy()[: len(subset)],
                cnn[f"{n}_err"].to_numpy()[: len(subset)],
            )
            for n in measured
        },
    }
    if cnn_ms > 0:
        out["speedup_cnn_vs_fit"] = out["seconds_per_galaxy"] * 1e3 / cnn_ms
    return out
