"""Survey presets, morphological families and their parameter priors, as frozen value objects.

Magnitudes are AB. Image units are the survey's: DECaLS nanomaggies (zeropoint 22.5, so
``flux = 10 ** (-0.4 * (mag - 22.5))``), HST/ACS F814W counts per second (zeropoint 25.94, the
units of the real COSMOS stamps in ``shared/data/cosmos-f814w``). Angles are degrees, sizes arcsec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammainc, gammaincinv

from galclust.exceptions import GalclustValueError

FAMILIES = ("elliptical", "lenticular", "spiral", "edge_on", "irregular", "compact")


@dataclass(frozen=True)
class Survey:
    """How a survey sees galaxies: bands, pixels, seeing, depth and zeropoint."""

    name: str
    bands: tuple[str, ...]
    pixel_scale: float  # arcsec / pixel
    psf_fwhm: float  # arcsec, median seeing
    psf_fwhm_scatter: float  # arcsec, 1-sigma scatter between galaxies
    zeropoint: float  # AB mag of one image unit
    sky_sigma: tuple[float, ...]  # Gaussian noise per pixel per band, image units
    mag_range: tuple[float, float]  # r-band (or the single band) magnitudes drawn
    # "white": independent pixels; "cosmos": correlated like drizzled HST/ACS F814W COSMOS
    # mosaics (GalSim's measured correlation function; 2x2-binned noise is 3x, not 2x, a pixel's)
    noise: str = "white"
    # arcsec of one unit of the size priors: the median seeing unless given. Seeing-limited
    # surveys resolve galaxies a few FWHM across; at HST resolution the same galaxies are many
    # PSFs across, so there sizes come from the galaxies' own (magnitude-limited) distribution.
    size_unit: float | None = None


SURVEYS = {
    # DECaLS DR8-like: g,r,z at 0.262"/px, ~1.2" seeing, nanomaggies; per-pixel noise of the
    # coadds, roughly 0.004 / 0.006 / 0.015 nanomaggies
    "decals": Survey("decals", ("g", "r", "z"), 0.262, 1.2, 0.15, 22.5, (0.004, 0.006, 0.015),
                     (15.5, 20.5)),
    # COSMOS HST/ACS F814W as in the real stamps of shared/data/cosmos-f814w: 0.03"/px, ~0.09"
    # PSF, counts/s with zeropoint 25.94, median noise sigma 0.0026; sizes in units of 0.15":
    # disc half-light radii near 0.3", as the stamps' median flux radius 0.2". Magnitudes 19-27
    # reach a magnitude past the stamps' 20.2-26.0: a regressor trained on 20-26 pulled the
    # faintest real galaxies 0.19 mag bright, towards the middle of what it had seen.
    "hst-cosmos": Survey("hst-cosmos", ("i",), 0.03, 0.09, 0.01, 25.94, (0.0026,),
                         (19.0, 27.0), noise="cosmos", size_unit=0.15),
}  # fmt: skip

# Colours (g-r, r-z) of the stellar populations: old bulges red, disks bluer, knots bluest.
_COLOURS = {"red": (0.80, 0.45), "blue": (0.45, 0.25), "knots": (0.15, 0.00)}


def survey_named(name: str, **overrides: object) -> Survey:
    """A preset by name, with any field overridden (``bands``, ``pixel_scale``, ...)."""
    try:
        preset = SURVEYS[name]
    except KeyError:
        raise GalclustValueError(
            f"--survey {name!r} is unknown; choose one of {', '.join(SURVEYS)}"
        ) from None
    fields = {k: v for k, v in overrides.items() if v is not None}
    if "bands" in fields:
        bands: tuple[str, ...] = tuple(fields["bands"])  # type: ignore[arg-type]
        unknown = [b for b in bands if b not in preset.bands]
        if unknown:
            raise GalclustValueError(
                f"--bands {','.join(bands)}: band {unknown[0]!r} is not in the {name} preset; "
                f"choose from {','.join(preset.bands)}"
            )
        if "sky_sigma" not in fields:
            fields["sky_sigma"] = tuple(preset.sky_sigma[preset.bands.index(b)] for b in bands)
    values = {**preset.__dict__, **fields}
    return Survey(**values)


@dataclass(frozen=True)
class Component:
    """One light component: a profile, its r-band flux fraction and its colours."""

    kind: str  # "sersic", "exponential", "inclined_exponential", "knots"
    fraction: float  # of the galaxy's r-band flux
    hlr: float  # half-light radius, arcsec
    n: float = 1.0  # Sersic index (4 for de Vaucouleurs, 1 for exponential)
    q: float = 1.0  # axis ratio
    inclination: float = 0.0  # degrees, inclined_exponential only
    h_over_r: float = 0.1  # scale height / scale radius, inclined_exponential only
    npoints: int = 0  # knots only
    colour: tuple[float, float] = (0.0, 0.0)  # (g - r, r - z) of this component
    bulge: bool = False  # part of the spheroid: counted by the bulge-to-total ratio

    def enclosed(self, radius: float) -> float:
        """Fraction of this component's light within ``radius`` (arcsec) of its face-on,
        circular profile: GalSim's half-light radius is that of the circularised (area-kept)
        profile, and of the face-on disk for an inclined one. Knots scatter like a Gaussian."""
        if self.kind == "knots":
            return float(1 - 2 ** (-((radius / self.hlr) ** 2)))
        n = self.n if self.kind == "sersic" else 1.0
        b = gammaincinv(2 * n, 0.5)
        return float(gammainc(2 * n, b * (radius / self.hlr) ** (1 / n)))


@dataclass(frozen=True)
class GalaxyParams:
    """Everything needed to render one galaxy, drawn from its family's priors.

    ``repr`` evaluates back to the same object (with ``Component`` in scope).
    """

    family: str
    mag: float  # AB magnitude in r (DECaLS) or the single band
    pa: float  # position angle, degrees
    components: tuple[Component, ...]
    psf_fwhm: float  # arcsec
    stamp_size: int  # pixels of the original random stamp, before crop or pad
    seed: int

    @property
    def bulge_to_total(self) -> float:
        """r-band light fraction of the spheroid: the bulge of a disk galaxy, all of an
        elliptical or of a red compact galaxy, none of a blue compact one or an irregular."""
        return sum(c.fraction for c in self.components if c.bulge)

    @property
    def half_light_radius(self) -> float:
        """Half-light radius (arcsec, before the PSF) of the whole galaxy: the radius within
        which its components' circularised profiles hold half the r-band light together."""
        if len(self.components) == 1:
            return self.components[0].hlr
        total = sum(c.fraction for c in self.components)

        def excess(radius: float) -> float:
            return sum(c.fraction * c.enclosed(radius) for c in self.components) / total - 0.5

        lo = min(c.hlr for c in self.components)
        hi = max(c.hlr for c in self.components)
        if math.isclose(lo, hi) or excess(lo) >= 0:
            return lo
        return float(brentq(excess, lo, hi, xtol=1e-6 * hi))


def _lognormal(
    rng: np.random.Generator, median: float, sigma: float, lo: float, hi: float
) -> float:
    return float(np.clip(median * np.exp(sigma * rng.standard_normal()), lo, hi))


def _colour(rng: np.random.Generator, population: str) -> tuple[float, float]:
    g_r, r_z = _COLOURS[population]
    return g_r + 0.08 * float(rng.standard_normal()), r_z + 0.08 * float(rng.standard_normal())


def _sersic_n(value: float) -> float:
    # quantised: GalSim builds and caches one Sersic table per index (~30 ms each)
    return round(min(max(value, 0.5), 6.0) * 10) / 10


def draw_params(
    family: str, survey: Survey, seed: int, *, stamp_range: tuple[int, int] = (64, 256)
) -> GalaxyParams:
    """Draw the parameters of one galaxy of ``family`` from its priors, from ``seed`` alone.

    Sizes are drawn in units of the survey's ``size_unit`` (its median seeing unless set), so
    that seeing-limited surveys resolve each family alike.
    """
    if family not in FAMILIES:
        raise GalclustValueError(f"family {family!r} is unknown; choose from {', '.join(FAMILIES)}")
    rng = np.random.default_rng(seed)
    scale = survey.size_unit or survey.psf_fwhm  # arcsec of one unit of size
    mag = float(rng.uniform(*survey.mag_range))
    comps: list[Component]
    if family == "elliptical":
        hlr = _lognormal(rng, 1.5 * scale, 0.4, 0.5 * scale, 5 * scale)
        comps = [
            Component(
                "sersic",
                1.0,
                hlr,
                n=_sersic_n(rng.uniform(3, 6)),
                q=float(rng.uniform(0.6, 1.0)),
                colour=_colour(rng, "red"),
                bulge=True,
            )
        ]
    elif family == "lenticular":
        hlr = _lognormal(rng, 1.8 * scale, 0.35, 0.7 * scale, 5 * scale)
        bt = float(rng.uniform(0.5, 0.8))
        comps = [
            Component(
                "sersic",
                bt,
                hlr * float(rng.uniform(0.2, 0.4)),
                n=4.0,
                q=float(rng.uniform(0.7, 1.0)),
                colour=_colour(rng, "red"),
                bulge=True,
            ),
            Component(
                "exponential",
                1 - bt,
                hlr,
                q=float(rng.uniform(0.3, 1.0)),
                colour=_colour(rng, "red"),
            ),
        ]
    elif family == "spiral":
        hlr = _lognormal(rng, 2.0 * scale, 0.35, 0.8 * scale, 6 * scale)
        bt = float(rng.uniform(0.0, 0.25))
        knots = float(rng.uniform(0.15, 0.4)) * (1 - bt)
        q = float(rng.uniform(0.5, 1.0))
        comps = [
            Component(
                "sersic", bt, 0.2 * hlr, n=4.0, q=0.9, colour=_colour(rng, "red"), bulge=True
            ),
            Component("exponential", 1 - bt - knots, hlr, q=q, colour=_colour(rng, "blue")),
            Component(
                "knots",
                knots,
                hlr,
                q=q,
                npoints=int(rng.integers(20, 80)),
                colour=_colour(rng, "knots"),
            ),
        ]
    elif family == "edge_on":
        hlr = _lognormal(rng, 2.2 * scale, 0.3, 1.0 * scale, 6 * scale)
        bt = float(rng.uniform(0.0, 0.3))
        comps = [
            Component(
                "sersic", bt, 0.25 * hlr, n=4.0, q=0.8, colour=_colour(rng, "red"), bulge=True
            ),
            Component(
                "inclined_exponential",
                1 - bt,
                hlr,
                inclination=float(rng.uniform(80, 90)),
                h_over_r=float(rng.uniform(0.08, 0.15)),
                colour=_colour(rng, "blue"),
            ),
        ]
    elif family == "irregular":
        hlr = _lognormal(rng, 1.8 * scale, 0.35, 0.8 * scale, 5 * scale)
        knots = float(rng.uniform(0.5, 0.9))
        comps = [
            Component(
                "exponential",
                1 - knots,
                hlr,
                q=float(rng.uniform(0.4, 1.0)),
                colour=_colour(rng, "blue"),
            ),
            Component(
                "knots",
                knots,
                hlr * float(rng.uniform(0.8, 1.3)),
                npoints=int(rng.integers(5, 25)),
                colour=_colour(rng, "knots"),
            ),
        ]
    else:  # compact: barely resolved; a red one is a compact spheroid, a blue one is not
        hlr = float(rng.uniform(0.1, 0.35)) * scale
        n = _sersic_n(rng.uniform(1, 4))
        q = float(rng.uniform(0.5, 1.0))
        red = bool(rng.random() < 0.5)
        colour = _colour(rng, "red" if red else "blue")
        comps = [Component("sersic", 1.0, hlr, n=n, q=q, colour=colour, bulge=red)]
        bright, faint = survey.mag_range  # compacts are faint: no brighter than 2 mag below
        mag = float(rng.uniform(bright + min(2.0, (faint - bright) / 2), faint))
    fwhm = max(
        survey.psf_fwhm + survey.psf_fwhm_scatter * float(rng.standard_normal()),
        0.6 * survey.psf_fwhm,
    )
    return GalaxyParams(
        family=family,
        mag=mag,
        pa=float(rng.uniform(0, 180)),
        components=tuple(comps),
        psf_fwhm=fwhm,
        stamp_size=int(rng.integers(stamp_range[0], stamp_range[1] + 1)),
        seed=seed,
    )  # fmt: skip
