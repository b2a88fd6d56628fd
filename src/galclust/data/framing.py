"""Galaxy framing: put every galaxy at the same place and scale before a network sees it.

Survey cutouts are centred on a catalogue position with a fixed angular size, so a small
galaxy is a few pixels in a sea of sky and neighbours while a big one fills the frame. A
network trained on such cutouts spends its capacity on size, brightness, background and
neighbours rather than morphology. :func:`frame_galaxy` removes those:

1. the sky level is measured per channel (sigma-clipped median) and subtracted;
2. sources are detected on the channel mean with SEP (Source Extractor's library) at 1.5 sigma;
   the galaxy is the source covering the central pixel, else the nearest one to the centre;
3. its centroid, 90%-light radius ``r90`` (other sources masked), axis ratio and position
   angle are measured;
4. pixels of other sources (dilated by two pixels) are replaced by sky noise;
5. a square of half-side ``extent x r90`` around the centroid is resampled to the output size
   (anti-aliased), optionally rotated so that the major axis is horizontal.

Each image gets a status, so that fall-backs are counted rather than hidden:

``ok``
    the galaxy covers the central pixel and its frame lies inside the image;
``off_centre``
    no source covers the central pixel; the nearest source to the centre was framed;
``edge``
    the galaxy or its frame runs off the image (a big galaxy, or one near the border); the
    missing part is filled with sky noise;
``no_source``
    nothing was detected (blank, flat or very faint image): the whole image is used,
    sky-subtracted;
``failed``
    SEP could not analyse the image (e.g. too many blended pixels): the whole image is used.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import sep
from scipy import ndimage

STATUSES = ("ok", "off_centre", "edge", "no_source", "failed")
_THRESHOLD = 1.5  # detection threshold, in sky sigma
_SKY_SAMPLE = 20_000  # pixels per channel used to measure the sky
_MIN_HALF = 6.0  # smallest half-side of a frame, input pixels: never zoom into a few pixels


@dataclass(frozen=True)
class Galaxy:
    """Where the galaxy of a cutout is and how big, in input pixels (x = column, y = row)."""

    x: float
    y: float
    radius: float  # 90% light radius
    axis_ratio: float  # b / a, 1 = round
    angle: float  # major axis, radians from +x (columns) towards +y (rows), in [-pi/2, pi/2]
    status: str


def sky(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sky level and noise of a (C, H, W) image: 3-sigma clipped median and
    1.4826 x MAD of the clipped pixels."""
    levels, noises = [], []
    stride = max(1, image[0].size // _SKY_SAMPLE)  # a regular sample is plenty for a level
    for channel in image:
        values = channel.ravel()[::stride].astype(np.float64)
        for _ in range(5):
            median = np.median(values)
            spread = 1.4826 * np.median(np.abs(values - median))
            if spread == 0:
                break
            kept = values[np.abs(values - median) < 3 * spread]
            if len(kept) == len(values) or len(kept) < 16:
                break
            values = kept
        median = np.median(values)
        levels.append(median)
        noises.append(1.4826 * np.median(np.abs(values - median)))
    return np.asarray(levels), np.asarray(noises)


def find_galaxy(
    image: np.ndarray,
    level: np.ndarray | None = None,
    noise: np.ndarray | None = None,
    *,
    deblend: bool = True,
) -> tuple[Galaxy, np.ndarray | None]:
    """The central galaxy of a (C, H, W) image and the segmentation map (0 = sky, the
    galaxy's pixels = -1, other sources > 0), None when nothing was detected.

    ``level`` and ``noise`` are the per-channel sky (see :func:`sky`), measured when not given.
    Without ``deblend`` only sources detached from the galaxy (above the detection threshold)
    are other sources: a clumpy galaxy is never split, a touching neighbour stays with it.
    """
    if level is None or noise is None:
        level, noise = sky(image)
    height, width = image.shape[-2:]
    whole = Galaxy((width - 1) / 2, (height - 1) / 2, max(height, width) / 2, 1.0, 0.0, "no_source")
    detection = np.ascontiguousarray(
        (image.astype(np.float64) - level[:, None, None]).mean(axis=0), dtype=np.float32
    )
    sigma = float(np.sqrt(np.mean(noise**2)) / math.sqrt(len(noise)))
    if image.dtype == np.uint8:  # a flat 8-bit sky has no spread: one level is the floor
        sigma = max(sigma, 0.5)
    if not np.isfinite(sigma) or sigma <= 0:
        peak = float(np.abs(detection).max())
        if peak == 0:
            return whole, None
        sigma = peak * 1e-3
    try:
        objects, segmap = sep.extract(
            detection,
            _THRESHOLD,
            err=sigma,
            minarea=5,
            segmentation_map=True,
            deblend_cont=0.005 if deblend else 1.0,
        )
    except Exception:  # SEP raises plain Exceptions for buffer overflows and the like
        return Galaxy(whole.x, whole.y, whole.radius, 1.0, 0.0, "failed"), None
    if len(objects) == 0:
        return whole, None
    cy, cx = height // 2, width // 2
    label = int(segmap[cy, cx])
    status = "ok"
    if label == 0:
        distance = np.hypot(objects["x"] - (width - 1) / 2, objects["y"] - (height - 1) / 2)
        label = int(np.argmin(distance)) + 1
        status = "off_centre"
    target = objects[label - 1]
    x, y = float(target["x"]), float(target["y"])
    a, b = float(target["a"]), float(target["b"])
    rmax = float(np.clip(6 * a, 3.0, math.hypot(height, width)))
    try:
        radius, _ = sep.flux_radius(
            detection, x, y, rmax, 0.9, seg_id=label, segmap=segmap, subpix=5
        )
        radius = float(radius)
    except Exception:
        radius = math.nan
    if not np.isfinite(radius) or radius <= 0:
        radius = 3 * a if a > 0 else whole.radius
    segmap = segmap.astype(np.int32)
    segmap[segmap == label] = -1
    ratio = b / a if a > 0 else 1.0
    cut = (
        target["xmin"] <= 0
        or target["ymin"] <= 0
        or target["xmax"] >= width - 1
        or target["ymax"] >= height - 1
    )
    if cut and status == "ok":
        status = "edge"
    return Galaxy(x, y, radius, float(ratio), float(target["theta"]), status), segmap


def _noise_rng(pixels: np.ndarray, seed: int | None) -> np.random.Generator:
    """Sky noise drawn from the image itself: reproducible, and different for every galaxy."""
    return np.random.default_rng(zlib.crc32(pixels[:, :4].tobytes()) if seed is None else seed)


def _replace_others(
    pixels: np.ndarray,
    segmap: np.ndarray,
    noise: np.ndarray,
    rng: np.random.Generator,
    level: np.ndarray | None = None,
) -> int:
    """Replace, in place, the pixels of other sources (dilated by two pixels) with sky noise
    around ``level`` (zero: sky-subtracted pixels); returns how many pixels were replaced."""
    others = ndimage.binary_dilation(segmap > 0, iterations=2) & (segmap != -1)
    count = int(others.sum())
    if count:
        fill = noise[:, None] * rng.standard_normal((pixels.shape[0], count))
        pixels[:, others] = fill if level is None else fill + level[:, None]
    return count


def mask_neighbours(image: np.ndarray, seed: int | None = None) -> tuple[np.ndarray, int]:
    """(C, H, W) image with every source detached from the central galaxy replaced by sky
    noise (at the image's own sky level), and the number of pixels replaced. The galaxy (all of
    its clumps), its position and the stamp size are untouched."""
    level, noise = sky(image)
    _, segmap = find_galaxy(image, level, noise, deblend=False)
    if segmap is None:
        return image, 0
    pixels = image.astype(image.dtype if image.dtype.kind == "f" else np.float32)  # a copy
    count = _replace_others(pixels, segmap, noise, _noise_rng(pixels, seed), level)
    return (pixels, count) if count else (image, 0)


def frame_galaxy(
    image: np.ndarray,
    size: int,
    *,
    extent: float = 1.5,
    align: bool = False,
    neighbours: bool = True,
    seed: int | None = None,
) -> tuple[np.ndarray, Galaxy]:
    """Sky-subtracted (C, size, size) float32 image of the central galaxy, and the galaxy.

    ``extent`` is the half-side of the frame in units of ``r90``; ``align`` rotates the major
    axis to horizontal; ``neighbours`` replaces other sources with sky noise (drawn from a seed
    made from the image when ``seed`` is None). Never raises on
    pixel content: the fall-backs are given by ``Galaxy.status`` (see the module notes).
    """
    pixels = image.astype(np.float64)
    channels, height, width = pixels.shape
    level, noise = sky(pixels)
    pixels -= level[:, None, None]
    galaxy, segmap = find_galaxy(image, level, noise)
    rng = _noise_rng(pixels, seed)
    if segmap is not None and neighbours:
        _replace_others(pixels, segmap, noise, rng)
    if galaxy.status in ("no_source", "failed"):
        half = max(height, width) / 2
    else:
        half = max(extent * galaxy.radius, _MIN_HALF)
        inside = (
            galaxy.x - half >= -0.5
            and galaxy.y - half >= -0.5
            and galaxy.x + half <= width - 0.5
            and galaxy.y + half <= height - 0.5
        )
        if not inside and galaxy.status == "ok":
            galaxy = Galaxy(
                galaxy.x, galaxy.y, galaxy.radius, galaxy.axis_ratio, galaxy.angle, "edge"
            )
    step = 2 * half / size  # input pixels per output pixel
    angle = galaxy.angle if align and galaxy.status not in ("no_source", "failed") else 0.0
    # output (row, col) -> input (row, col): scale, then turn the output's columns onto the
    # major axis, which points along (cos, sin) in (column, row) of the input.
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = step * np.array([[cos, sin], [-sin, cos]])
    centre_out = np.array([(size - 1) / 2, (size - 1) / 2])
    centre_in = np.array([galaxy.y, galaxy.x])
    offset = centre_in - matrix @ centre_out
    blur = math.sqrt(max(step**2 - 1, 0.0)) / 2
    framed = np.empty((channels, size, size), np.float64)
    for c in range(channels):
        source = ndimage.gaussian_filter(pixels[c], blur) if blur > 0.1 else pixels[c]
        framed[c] = ndimage.affine_transform(
            source, matrix, offset, output_shape=(size, size), order=1, mode="constant", cval=0.0
        )
    covered = ndimage.affine_transform(
        np.ones((height, width)), matrix, offset, output_shape=(size, size), order=0, cval=0.0
    )
    outside = covered < 0.5
    if outside.any():
        quiet = noise / max(step, 1.0)
        framed[:, outside] = quiet[:, None] * rng.standard_normal((channels, int(outside.sum())))
    return framed.astype(np.float32), galaxy
