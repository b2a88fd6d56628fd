"""Preprocessing that turns any cutout into a network input in [-1, 1], and augmentations.

Defaults per kind of data (documented for ``galclust train vae``):

- 8-bit PNG/JPEG colour composites: ``x / 127.5 - 1``.
- Float images (FITS, simulated flux): ``asinh(x / a) / asinh(b / a)`` mapped to [-1, 1] and
  clipped, with ``a`` = 3 x the robust noise (1.4826 x MAD) and ``b`` = the 99.5th percentile,
  measured per image, or fixed for a whole dataset (``asinh_scale``), so that faint outskirts
  and bright cores both stay visible.

Images of another size are centre-cropped, padded with noise like their own border (never with
zeros, which would draw a frame around every small cutout), or resized.

``frame="galaxy"`` first centres each cutout on its galaxy, subtracts the sky, replaces
neighbours with sky noise and crops to the galaxy's own extent (optionally rotating its major
axis to horizontal; see :mod:`galclust.data.framing`). Its scaling is then relative to the
galaxy, so that bright and faint, near and far galaxies look alike: with ``b`` the 99.5th
percentile of the framed galaxy, 8-bit composites (already stretched for display) are scaled
linearly, ``x / b``, and float images by ``asinh(x / a) / asinh(b / a)`` with ``a = b / 10``.

Non-finite pixels (masked or saturated ones in FITS) are set to the median of the finite pixels
of their channel. An image with no finite pixel at all becomes all NaN, which training and
embedding recognise, skip and count (see :func:`usable`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from galclust.data.framing import frame_galaxy
from galclust.exceptions import GalclustValueError

_MODES = ("crop", "resize")
_SCALINGS = ("auto", "uint8", "asinh")
_FRAMES = ("field", "galaxy")
_SOFTENING = 10.0  # galaxy frame, float images: b / a of the asinh stretch


def _border(image: np.ndarray, width: int = 4) -> np.ndarray:
    w = max(1, min(width, image.shape[-1] // 4, image.shape[-2] // 4))
    return np.concatenate(
        [
            image[:, :w].reshape(image.shape[0], -1),
            image[:, -w:].reshape(image.shape[0], -1),
            image[:, :, :w].reshape(image.shape[0], -1),
            image[:, :, -w:].reshape(image.shape[0], -1),
        ],
        axis=1,
    )


def fit_to_size(
    image: np.ndarray,
    size: int,
    *,
    mode: str = "crop",
    rng: np.random.Generator | None = None,
    sky: float | None = None,
) -> np.ndarray:
    """Bring an image of shape (C, H, W) to (C, size, size).

    ``crop``: centre-crop each larger axis and pad each smaller one with Gaussian noise of the
    median (or ``sky``, for sky-subtracted images) and robust spread of the image's own border,
    per channel. ``resize``: area-average
    down or bilinear up, keeping the whole field.
    """
    if mode not in _MODES:
        raise GalclustValueError(f"resize mode {mode!r}: choose one of {', '.join(_MODES)}")
    channels, height, width = image.shape
    if (height, width) == (size, size):
        return image
    if mode == "resize":
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        shrink = height > size and width > size
        method = "area" if shrink else "bilinear"
        kwargs = {} if shrink else {"align_corners": False}
        resized = F.interpolate(tensor, size=(size, size), mode=method, **kwargs)
        out: np.ndarray = resized[0].numpy().astype(image.dtype, copy=False)
        return out
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    cropped = image[:, top : top + min(height, size), left : left + min(width, size)]
    if cropped.shape[1:] == (size, size):
        return cropped
    border = _border(image.astype(np.float64))
    # the padding's level: the border's median, or ``sky`` for sky-subtracted images, whose
    # border may still hold galaxy light when the stamp is small
    own = np.median(border, axis=1)
    spread = 1.4826 * np.median(np.abs(border - own[:, None]), axis=1)
    median = own if sky is None else np.full(len(border), sky)
    rng = rng if rng is not None else np.random.default_rng(0)
    canvas = median[:, None, None] + spread[:, None, None] * rng.standard_normal(
        (channels, size, size)
    )
    if image.dtype == np.uint8:
        canvas = np.clip(np.round(canvas), 0, 255)
    padded: np.ndarray = canvas.astype(image.dtype)
    y0, x0 = (size - cropped.shape[1]) // 2, (size - cropped.shape[2]) // 2
    padded[:, y0 : y0 + cropped.shape[1], x0 : x0 + cropped.shape[2]] = cropped
    return padded


@dataclass(frozen=True)
class Preprocess:
    """How images become inputs in [-1, 1]; saved with a model so embedding does the same.

    Parameters
    ----------
    image_size : int
        Side of the network's input, pixels.
    mode : {"crop", "resize"}
        How other sizes are brought to ``image_size`` (see :func:`fit_to_size`).
    scaling : {"auto", "uint8", "asinh"}
        ``auto`` picks ``uint8`` for 8-bit images and ``asinh`` for the rest.
    asinh_scale : (a, b), optional
        Softening and bright level for the whole dataset; measured per image when None.
    frame : {"field", "galaxy"}
        ``field`` keeps the cutout as it is; ``galaxy`` centres and crops it to the galaxy.
    extent : float
        Galaxy frame: half-side of the crop in units of the galaxy's 90%-light radius.
    align : bool
        Galaxy frame: rotate the major axis to horizontal.
    """

    image_size: int
    mode: str = "crop"
    scaling: str = "auto"
    asinh_scale: tuple[float, float] | None = None
    frame: str = "field"
    extent: float = 1.5
    align: bool = True

    def __post_init__(self) -> None:
        if self.scaling not in _SCALINGS:
            raise GalclustValueError(
                f"scaling {self.scaling!r}: choose one of {', '.join(_SCALINGS)}"
            )
        if self.mode not in _MODES:
            raise GalclustValueError(
                f"resize mode {self.mode!r}: choose one of {', '.join(_MODES)}"
            )
        if self.frame not in _FRAMES:
            raise GalclustValueError(f"frame {self.frame!r}: choose one of {', '.join(_FRAMES)}")
        if self.frame == "galaxy" and self.asinh_scale is not None:
            raise GalclustValueError(
                "the galaxy frame scales each galaxy by its own brightness: it takes no "
                "dataset-wide asinh scale (--stretch dataset)"
            )
        if not self.extent > 0:
            raise GalclustValueError(
                f"--extent {self.extent} must be > 0 (half-side of the frame in r90; try 1.5)"
            )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(C, H, W) pixels of any type -> (C, image_size, image_size) float32 in [-1, 1]."""
        return self.apply(image)[0]

    def apply(self, image: np.ndarray) -> tuple[np.ndarray, str]:
        """Like calling the object, and also how the image was framed: ``field`` when not
        framing, ``blank`` for an image without finite pixels, else a status of
        :mod:`galclust.data.framing`."""
        finite = finite_pixels(image)
        if finite is None:
            blank = np.full((image.shape[0], self.image_size, self.image_size), np.nan)
            return blank.astype(np.float32), "blank"
        if self.frame == "galaxy":
            framed, galaxy = frame_galaxy(
                finite, self.image_size, extent=self.extent, align=self.align
            )
            display = self.scaling == "uint8" or (
                self.scaling == "auto" and finite.dtype == np.uint8
            )
            return self._galaxy_stretch(framed, display), galaxy.status
        return self._field(finite), "field"

    def _galaxy_stretch(self, framed: np.ndarray, display: bool) -> np.ndarray:
        """Framed, sky-subtracted pixels to [-1, 1], relative to the galaxy's brightness;
        ``display``: the source was an 8-bit composite, already stretched."""
        b = float(np.percentile(framed, 99.5))
        if not b > 0:  # nothing brighter than the sky
            b = float(np.abs(framed).max()) or 1.0
        a = b / _SOFTENING
        scaled = framed / b if display else np.arcsinh(framed / a) / np.arcsinh(b / a)
        result: np.ndarray = (2 * scaled - 1).clip(-1, 1).astype(np.float32)
        return result

    def _field(self, finite: np.ndarray) -> np.ndarray:
        fitted = fit_to_size(finite, self.image_size, mode=self.mode)
        scaling = self.scaling
        if scaling == "auto":
            scaling = "uint8" if finite.dtype == np.uint8 else "asinh"
        if scaling == "uint8":
            scaled: np.ndarray = (fitted.astype(np.float32) / 127.5 - 1.0).clip(-1, 1)
            return scaled
        a, b = self.asinh_scale if self.asinh_scale is not None else asinh_scale(fitted)
        stretched = np.arcsinh(fitted.astype(np.float32) / a) / np.arcsinh(b / a)
        result: np.ndarray = (2 * stretched - 1).clip(-1, 1).astype(np.float32)
        return result

    def to_dict(self) -> dict[str, object]:
        """Plain values, as stored in a checkpoint or a packed store."""
        return {
            "image_size": self.image_size,
            "mode": self.mode,
            "scaling": self.scaling,
            "asinh_scale": None if self.asinh_scale is None else list(self.asinh_scale),
            "frame": self.frame,
            "extent": self.extent,
            "align": self.align,
        }

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> Preprocess:
        """The inverse of :meth:`to_dict`."""
        scale = values.get("asinh_scale")
        return cls(
            image_size=int(values["image_size"]),  # type: ignore[call-overload]
            mode=str(values.get("mode", "crop")),
            scaling=str(values.get("scaling", "auto")),
            asinh_scale=None if scale is None else tuple(scale),  # type: ignore[arg-type]
            frame=str(values.get("frame", "field")),
            extent=float(values.get("extent", 1.5)),  # type: ignore[arg-type]
            align=bool(values.get("align", True)),
        )


def finite_pixels(image: np.ndarray) -> np.ndarray | None:
    """``image`` with non-finite pixels set to their channel's finite median; None if none is."""
    if image.dtype.kind != "f":
        return image
    good = np.isfinite(image)
    if good.all():
        return image
    if not good.any():
        return None
    image = image.copy()
    for channel, mask in zip(image, good, strict=True):
        channel[~mask] = np.median(channel[mask]) if mask.any() else 0.0
    return image


def usable(batch: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the images of a (B, C, H, W) batch that are not all NaN."""
    return ~torch.isnan(batch.flatten(1)[:, 0])


def asinh_scale(image: np.ndarray) -> tuple[float, float]:
    """Softening (3 x robust noise) and bright level (99.5th percentile) of a float image."""
    values = image.astype(np.float64).ravel()
    median = np.median(values)
    noise = 1.4826 * np.median(np.abs(values - median))
    bright = float(np.percentile(values, 99.5))
    a = 3 * noise if noise > 0 else max(abs(bright), 1.0) * 1e-3
    return float(a), max(bright, 2 * a)


def dihedral(
    batch: torch.Tensor, generator: torch.Generator | None = None, *, k: torch.Tensor | None = None
) -> torch.Tensor:
    """Each image of a (B, C, H, W) batch flipped and rotated by one of the 8 symmetries of the
    square, at random (or symmetry ``k[i]`` for image i, see :func:`symmetry`): galaxies have
    no preferred orientation."""
    if k is None:
        k = torch.randint(0, 8, (batch.shape[0],), generator=generator)
    k = k.to(batch.device)
    out = torch.empty_like(batch)
    for s in range(8):
        picked = torch.nonzero(k == s).flatten()
        if len(picked):
            out[picked] = symmetry(batch[picked], s)
    return out


def symmetry(batch: torch.Tensor, s: int) -> torch.Tensor:
    """Symmetry ``s`` (0-7) of the square applied to (..., H, W): ``s % 4`` quarter turns, then
    a left-right flip if ``s >= 4``."""
    turned = torch.rot90(batch, s % 4, dims=(-2, -1))
    return torch.flip(turned, dims=(-1,)) if s >= 4 else turned
