"""Small galaxy images made with GalSim, for tests, examples and ``galclust demo``.

These are quick toys (one Sersic profile with a disk-like colour gradient, Gaussian PSF,
Gaussian noise); ``galclust simulate`` makes the labelled training sets.
"""

from __future__ import annotations

import galsim
import numpy as np
import pandas as pd

_BANDS = ("g", "r", "z")
# flux ratio g:r:z of a red (old, bulge) and a blue (young, disk) population
_RED = np.array([0.5, 1.0, 1.6])
_BLUE = np.array([0.9, 1.0, 1.1])


def make_toy_galaxies(
    n: int,
    size: int = 64,
    seed: int = 0,
    *,
    bands: int = 3,
    pixel_scale: float = 0.262,
    noise_sigma: float = 0.02,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Render ``n`` toy galaxies with GalSim.

    Parameters
    ----------
    n : int
        Number of galaxies.
    size : int, default 64
        Stamp size in pixels.
    seed : int, default 0
        Random seed; the same seed gives the same images.
    bands : int, default 3
        Channels (1 or 3: g, r, z).
    pixel_scale : float, default 0.262
        Arcsec per pixel (DECaLS).
    noise_sigma : float, default 0.02
        Gaussian noise per pixel, in units of the peak-normalised flux.

    Returns
    -------
    images : ndarray of shape (n, bands, size, size), float32
        Sky-subtracted flux with noise.
    truth : pandas.DataFrame
        One row per galaxy: ``sersic_n``, ``hlr`` (arcsec), ``q``, ``beta`` (deg), ``flux``,
        ``kind`` (``smooth`` for n > 2.5, ``disk`` otherwise).
    """
    if bands not in (1, 3):
        raise ValueError(f"bands={bands}; toy galaxies come in 1 or 3 bands")
    rng = np.random.default_rng(seed)
    images = np.empty((n, bands, size, size), dtype=np.float32)
    rows = []
    psf = galsim.Gaussian(fwhm=1.2)
    for i in range(n):
        # quantised: GalSim caches one Sersic table per index, new indices cost ~30 ms each
        sersic_n = round(float(rng.uniform(0.75, 5.0)) * 4) / 4
        hlr = float(rng.uniform(0.6, 2.5))
        q = float(rng.uniform(0.25, 1.0) if sersic_n < 2.5 else rng.uniform(0.6, 1.0))
        beta = float(rng.uniform(0.0, 180.0))
        flux = float(10 ** rng.uniform(0.0, 1.0))
        colour = _RED if sersic_n > 2.5 else _BLUE
        profile = galsim.Sersic(n=sersic_n, half_light_radius=hlr, flux=1.0)
        profile = profile.shear(q=q, beta=beta * galsim.degrees)
        stamp = galsim.Convolve(profile, psf).drawImage(nx=size, ny=size, scale=pixel_scale).array
        stamp = stamp / stamp.max() * flux
        band_scale = colour if bands == 3 else colour[1:2]
        noise = rng.normal(0.0, noise_sigma * flux, size=(bands, size, size))
        images[i] = stamp[None] * band_scale[:, None, None] + noise
        rows.append(
            {
                "sersic_n": sersic_n,
                "hlr": hlr,
                "q": q,
                "beta": beta,
                "flux": flux,
                "kind": "smooth" if sersic_n > 2.5 else "disk",
            }
        )
    return images, pd.DataFrame(rows)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Turn a (C, H, W) flux image into an (H, W, 3) uint8 colour picture (arcsinh stretch)."""
    channels = image if image.shape[0] == 3 else np.repeat(image[:1], 3, axis=0)
    scale = np.percentile(channels, 99.5) or 1.0
    stretched = np.arcsinh(np.clip(channels, 0, None) / (0.1 * scale)) / np.arcsinh(10.0)
    rgb = np.clip(stretched[::-1], 0, 1)  # z, r, g -> red, green, blue
    return np.moveaxis((rgb * 255).round().astype(np.uint8), 0, 2)


def grz_to_rgb8(
    image: np.ndarray,
    *,
    scales: tuple[float, float, float] = (6.0, 3.4, 2.2),
    q: float = 20.0,
    m: float = 0.03,
) -> np.ndarray:
    """Colour picture of a g,r,z image in nanomaggies, as the Legacy Surveys viewer draws them.

    The "sdss" asinh colour scheme of legacypipe: each band scaled (g x6.0, r x3.4, z x2.2),
    offset by ``m``, and stretched by ``asinh(q * I) / sqrt(q)`` of the mean intensity ``I``,
    which keeps colours while compressing bright cores. Returns (H, W, 3) uint8, z->red,
    r->green, g->blue.
    """
    scaled = np.maximum(image * np.asarray(scales)[:, None, None] + m, 0.0)
    intensity = scaled.mean(axis=0)
    intensity = np.where(intensity > 0, intensity, 1e-12)
    stretch = np.arcsinh(q * intensity) / np.sqrt(q) / intensity
    rgb = np.clip(scaled[::-1] * stretch, 0.0, 1.0)
    return np.moveaxis((rgb * 255).round().astype(np.uint8), 0, 2)
