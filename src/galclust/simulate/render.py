"""Render one galaxy with GalSim: each light component drawn once, then combined per band.

Bands differ only in the flux of each component (bulge, disk and knots have their own colours),
so a galaxy costs one PSF-convolved draw per component whatever the number of bands. The stamp
is drawn at ``min(stamp_size, size)`` pixels (the centre crop of a larger stamp), placed in the
centre of a ``size`` x ``size`` canvas, and Gaussian sky noise of the band's level is added to
the whole canvas, so padding carries noise like the rest of the image, never zeros. The noise is
white, or correlated between neighbouring pixels as in drizzled HST mosaics (``Survey.noise``).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import galsim
import numpy as np

from galclust.exceptions import GalclustValueError
from galclust.simulate.params import Component, GalaxyParams, Survey

_GSPARAMS = galsim.GSParams(maximum_fft_size=16384)


def _profile(comp: Component, pa: float, seed: int) -> galsim.GSObject:
    beta = pa * galsim.degrees
    if comp.kind == "inclined_exponential":
        disk = galsim.InclinedExponential(
            comp.inclination * galsim.degrees,
            half_light_radius=comp.hlr,
            scale_h_over_r=comp.h_over_r,
            gsparams=_GSPARAMS,
        )
        return disk.rotate(beta)
    if comp.kind == "sersic":
        profile = galsim.Sersic(comp.n, half_light_radius=comp.hlr, gsparams=_GSPARAMS)
    elif comp.kind == "exponential":
        profile = galsim.Exponential(half_light_radius=comp.hlr, gsparams=_GSPARAMS)
    else:  # knots: star-forming clumps scattered like a disk of this size
        profile = galsim.RandomKnots(
            comp.npoints,
            half_light_radius=comp.hlr,
            flux=1.0,
            rng=galsim.BaseDeviate(seed),
            gsparams=_GSPARAMS,
        )
    return profile.shear(q=comp.q, beta=beta) if comp.q < 1 else profile


@functools.cache
def _cosmos_noise() -> galsim.BaseCorrelatedNoise:
    """GalSim's correlation function of COSMOS F814W noise, read once per process."""
    return galsim.getCOSMOSNoise()


def sky_noise(survey: Survey, size: int, seed: int) -> np.ndarray:
    """(bands, size, size) float32 sky noise of ``survey``, from ``seed`` alone."""
    bands = len(survey.bands)
    if survey.noise == "white":
        sigmas = np.asarray(survey.sky_sigma)[:, None, None]
        noise: np.ndarray = np.random.default_rng(seed).standard_normal((bands, size, size))
        white: np.ndarray = (noise * sigmas).astype(np.float32)
        return white
    if survey.noise != "cosmos":
        raise GalclustValueError(f"noise model {survey.noise!r} is unknown; choose white or cosmos")
    out = np.empty((bands, size, size), np.float32)
    for b, sigma in enumerate(float(s) for s in survey.sky_sigma):
        canvas = galsim.ImageF(size, size, scale=survey.pixel_scale)
        if sigma > 0:
            model = _cosmos_noise().withVariance(sigma**2)
            canvas.addNoise(model.copy(rng=galsim.BaseDeviate(seed * 7 + b + 1)))
        out[b] = canvas.array
    return out


def band_fluxes(params: GalaxyParams, survey: Survey) -> np.ndarray:
    """Flux of each component in each band, image units: array of shape (n_components, n_bands)."""
    total = 10 ** (-0.4 * (params.mag - survey.zeropoint))
    out = np.empty((len(params.components), len(survey.bands)))
    for k, comp in enumerate(params.components):
        in_r = total * comp.fraction
        for b, band in enumerate(survey.bands):
            if band == "g":
                out[k, b] = in_r * 10 ** (-0.4 * comp.colour[0])
            elif band == "z":
                out[k, b] = in_r * 10 ** (0.4 * comp.colour[1])
            else:  # r, or the single band of a one-band survey
                out[k, b] = in_r
    return out


def render(params: GalaxyParams, survey: Survey, size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Render ``params`` as a noisy (bands, size, size) float32 image and its truth row.

    Returns
    -------
    image : ndarray of shape (n_bands, size, size), float32
        Flux per pixel in the survey's image units, with sky noise.
    truth : dict
        Magnitudes and fluxes per band, sizes, shapes, colours, PSF, noise, S/N, seed.
    """
    draw = min(params.stamp_size, size)
    psf = galsim.Moffat(beta=3.5, fwhm=params.psf_fwhm, gsparams=_GSPARAMS)
    comps = np.empty((len(params.components), draw, draw), dtype=np.float64)
    for k, comp in enumerate(params.components):
        galaxy = galsim.Convolve(_profile(comp, params.pa, params.seed + k), psf)
        comps[k] = galaxy.drawImage(nx=draw, ny=draw, scale=survey.pixel_scale).array
    fluxes = band_fluxes(params, survey)
    clean = np.einsum("kb,kyx->byx", fluxes, comps)
    image = sky_noise(survey, size, params.seed)
    lo = (size - draw) // 2
    image[:, lo : lo + draw, lo : lo + draw] += clean
    return image, _truth(params, survey, fluxes, clean)


def _axis_ratio(comp: Component) -> float:
    """Apparent axis ratio of ``comp``; that of a thick disk follows from its inclination."""
    if comp.kind == "inclined_exponential":
        return math.sqrt(math.cos(math.radians(comp.inclination)) ** 2 + comp.h_over_r**2)
    return comp.q


def _truth(
    params: GalaxyParams, survey: Survey, fluxes: np.ndarray, clean: np.ndarray
) -> dict[str, Any]:
    main = max(params.components, key=lambda c: c.fraction)
    bulge = next((c for c in params.components if c.bulge), None)
    disk = next((c for c in params.components if "exponential" in c.kind), None)
    # the galaxy's axis ratio is its disk's when it has a bulge and a disk (the inclination a
    # bulge + disk decomposition reports, and the shape of the outer isophotes: a lenticular's
    # small round bulge sits under the seeing), otherwise that of its brightest component
    shape = disk if bulge is not None and disk is not None else main
    q = _axis_ratio(shape)
    ellipticity = (1 - q) / (1 + q)
    row: dict[str, Any] = {
        "family": params.family,
        "hlr": params.half_light_radius,  # of the whole galaxy
        "sersic_n": main.n,  # of its brightest component
        "hlr_bulge": bulge.hlr if bulge else np.nan,
        "n_bulge": bulge.n if bulge else np.nan,
        "hlr_disk": disk.hlr if disk else np.nan,
        "n_disk": 1.0 if disk else np.nan,
        "q_bulge": bulge.q if bulge else np.nan,
        "q_disk": _axis_ratio(disk) if disk else np.nan,
        "bt": params.bulge_to_total,
        "q": q,
        "pa": params.pa,
        "e1": ellipticity * math.cos(math.radians(2 * params.pa)),
        "e2": ellipticity * math.sin(math.radians(2 * params.pa)),
        "psf_fwhm": params.psf_fwhm,
        "stamp_size": params.stamp_size,
        "seed": params.seed,
    }
    totals = fluxes.sum(axis=0)
    for b, band in enumerate(survey.bands):
        row[f"flux_{band}"] = float(totals[b])
        row[f"mag_{band}"] = survey.zeropoint - 2.5 * math.log10(totals[b])
        row[f"sky_sigma_{band}"] = survey.sky_sigma[b]
        # matched-filter S/N of the noiseless image (infinite without noise)
        signal = float(np.sqrt((clean[b] ** 2).sum()))
        row[f"snr_{band}"] = signal / survey.sky_sigma[b] if survey.sky_sigma[b] else math.inf
    if {"g", "r"} <= set(survey.bands):
        row["g_r"] = row["mag_g"] - row["mag_r"]
    if {"r", "z"} <= set(survey.bands):
        row["r_z"] = row["mag_r"] - row["mag_z"]
    return row
