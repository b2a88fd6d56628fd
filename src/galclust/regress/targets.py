"""What a regressor predicts and sees: :class:`Targets` (catalog columns -> standardised
network outputs and back) and :class:`FluxScaling` (pixels -> inputs that keep absolute
brightness), with the dataset and loader that pair them."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from galclust.data.dataset import ImageDataset
from galclust.data.framing import mask_neighbours
from galclust.data.transforms import finite_pixels, fit_to_size
from galclust.exceptions import GalclustValueError
from galclust.models.regressor import ASINH_NORM
from galclust.train import make_loader

log = logging.getLogger(__name__)


_LOG_NAMES = ("sersic_n", "n_bulge", "n_disk")


def target_kind(name: str) -> str:
    """How a target is regressed: ``log``, ``angle`` or ``linear``."""
    if name == "pa":
        return "angle"
    if name.startswith(("hlr", "flux_")) or name in _LOG_NAMES:
        return "log"
    return "linear"


# --- targets and images --------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """The regressed catalog columns, the network outputs they become, and the standardisation
    (mean and spread of each output over the training set)."""

    names: tuple[str, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def outputs(self) -> tuple[str, ...]:
        out: list[str] = []
        for name in self.names:
            kind = target_kind(name)
            out += (
                ["pa_cos", "pa_sin"]
                if kind == "angle"
                else [f"log10_{name}" if kind == "log" else name]
            )
        return tuple(out)

    def raw(self, table: pd.DataFrame) -> np.ndarray:
        """(N, outputs) float32: the catalog values as the network predicts them; NaN where a
        value is missing, not finite, or not positive for a log target."""
        columns: list[np.ndarray] = []
        for name in self.names:
            values = pd.to_numeric(table[name], errors="coerce").to_numpy(np.float64)
            kind = target_kind(name)
            if kind == "angle":
                angle = np.deg2rad(2 * values)
                columns += [np.cos(angle), np.sin(angle)]
            elif kind == "log":
                with np.errstate(divide="ignore", invalid="ignore"):
                    columns.append(np.where(values > 0, np.log10(values), np.nan))
            else:
                columns.append(values)
        out = np.stack(columns, axis=1)
        out[~np.isfinite(out)] = np.nan
        return out.astype(np.float32)

    def fitted(self, raw: np.ndarray) -> Targets:
        """These targets standardised on ``raw`` (the training rows)."""
        std = np.nanstd(raw, axis=0)
        return replace(
            self,
            mean=tuple(float(m) for m in np.nanmean(raw, axis=0)),
            std=tuple(float(s) if s > 0 else 1.0 for s in std),
        )

    def decode(self, mean: np.ndarray, sigma: np.ndarray) -> pd.DataFrame:
        """Network outputs (raw units) -> one column per target and ``<target>_err`` (1 sigma),
        in the catalog's units (degrees for ``pa``)."""
        table: dict[str, np.ndarray] = {}
        i = 0
        for name in self.names:
            kind = target_kind(name)
            if kind == "angle":
                c, s, dc, ds = mean[:, i], mean[:, i + 1], sigma[:, i], sigma[:, i + 1]
                table[name] = np.rad2deg(0.5 * np.arctan2(s, c)) % 180.0
                r2 = np.maximum(c**2 + s**2, 1e-12)
                table[f"{name}_err"] = np.rad2deg(0.5 * np.sqrt((s * dc) ** 2 + (c * ds) ** 2) / r2)
                i += 2
                continue
            if kind == "log":
                value = 10.0 ** mean[:, i]
                table[name], table[f"{name}_err"] = value, value * math.log(10) * sigma[:, i]
            else:
                table[name], table[f"{name}_err"] = mean[:, i], sigma[:, i]
            i += 1
        return pd.DataFrame(table)

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "outputs": list(self.outputs),
                "mean": list(self.mean), "std": list(self.std)}  # fmt: skip

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Targets:
        return cls(tuple(values["names"]), tuple(values["mean"]), tuple(values["std"]))


def positive_values(table: pd.DataFrame, column: str) -> np.ndarray:
    """``column`` as float64 (a copy), NaN where it is not a positive number."""
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64, copy=True)
    values[~(np.isfinite(values) & (values > 0))] = np.nan
    return values


def fit_seeing(column: str, values: np.ndarray) -> dict[str, Any]:
    """How a regressor is told the seeing: the catalog ``column`` of PSF FWHM (arcsec) and its
    training ``mean``, ``std``, ``median``, ``min`` and ``max``."""
    std = float(np.std(values))
    return {"column": column, "mean": float(np.mean(values)), "std": std if std > 0 else 1.0,
            "median": float(np.median(values)), "min": float(np.min(values)),
            "max": float(np.max(values))}  # fmt: skip


@dataclass(frozen=True)
class FluxScaling:
    """Pixels (survey image units, sky-subtracted) -> network input: centre-cropped or padded
    to ``image_size`` with zero-mean noise as strong as the stamp border's, then
    ``asinh(x / noise) / 5`` per band, the same for every galaxy."""

    image_size: int
    noise: tuple[float, ...]  # per band, image units

    def __call__(self, pixels: np.ndarray, gain: float = 1.0) -> np.ndarray:
        """``gain`` converts the image to the training zeropoint first."""
        finite = finite_pixels(np.asarray(pixels, dtype=np.float32))
        if finite is None:
            return np.full((len(self.noise), self.image_size, self.image_size), np.nan, np.float32)
        # sky-subtracted (simulations, survey stamps): pad at zero, with the border's noise
        fitted = fit_to_size(finite, self.image_size, sky=0.0) * np.float32(gain)
        noise = np.asarray(self.noise, np.float32)[:, None, None]
        scaled: np.ndarray = (np.arcsinh(fitted / noise) / ASINH_NORM).astype(np.float32)
        return scaled

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "noise": list(self.noise)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FluxScaling:
        return cls(int(values["image_size"]), tuple(float(v) for v in values["noise"]))


_Row = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class RegressionData(Dataset[_Row]):
    """Rows of a catalog as (scaled image, seeing, raw targets); targets may be empty
    (prediction), and the seeing (each row's PSF FWHM in arcsec, shape (1,)) is empty when
    ``seeing`` is None.

    With ``mask_neighbours`` (prediction only: simulations have no neighbours) every source but
    the central galaxy is replaced by sky noise first (:func:`galclust.data.framing.
    mask_neighbours`), and the second element of a row is instead the number of pixels replaced.
    ``sky`` (N, C), in image units per pixel, is subtracted from each row's pixels before all else
    (prediction on images that are not sky-subtracted; simulations are).
    """

    def __init__(
        self,
        catalog: pd.DataFrame,
        scaling: FluxScaling,
        targets: np.ndarray | None = None,
        gain: float = 1.0,
        *,
        seeing: np.ndarray | None = None,
        mask_neighbours: bool = False,
        sky: np.ndarray | None = None,
    ) -> None:
        if mask_neighbours and targets is not None:
            raise ValueError("mask_neighbours is for prediction, without targets")
        self.images = ImageDataset(catalog, None)
        self.scaling = scaling
        self.targets = (
            torch.from_numpy(targets) if targets is not None else torch.zeros((len(catalog), 0))
        )
        self.gain = gain
        self.seeing = (
            torch.zeros((len(catalog), 0))
            if seeing is None
            else torch.tensor(np.asarray(seeing, np.float32).reshape(len(catalog), 1))
        )
        self.mask_neighbours = mask_neighbours
        self.sky = None if sky is None else np.asarray(sky, np.float32).reshape(len(catalog), -1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> _Row:
        """Row ``i``; an unreadable image becomes all NaN (a NaN prediction, counted)."""
        bands = len(self.scaling.noise)
        try:
            pixels = self.images.pixels(i)
        except (OSError, ValueError, EOFError) as exc:  # changed since the scan
            log.warning("cannot read %s (%s); its prediction is NaN", self.images.locs[i], exc)
            size = self.scaling.image_size
            blank = torch.full((bands, size, size), float("nan"))
            second = torch.zeros(1) if self.mask_neighbours else self.targets[i]
            return blank, self.seeing[i], second
        if pixels.ndim != 3 or pixels.shape[0] != bands:
            raise GalclustValueError(
                f"{self.images.locs[i]} has {pixels.shape[0] if pixels.ndim == 3 else 1} band(s) "
                f"of shape {pixels.shape}, the regressor takes {bands}; remove it from the "
                "catalog or give images of the training bands"
            )
        if self.sky is not None:
            pixels = np.asarray(pixels, np.float32) - self.sky[i][:, None, None]
        if self.mask_neighbours:
            pixels, masked = mask_neighbours(np.asarray(pixels, np.float32), seed=i)
            image = torch.from_numpy(self.scaling(pixels, self.gain))
            return image, self.seeing[i], torch.tensor([float(masked)])
        image = torch.from_numpy(self.scaling(pixels, self.gain))
        return image, self.seeing[i], self.targets[i]


def _stack(batch: Sequence[_Row]) -> _Row:
    images, seeing, targets = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(seeing), torch.stack(targets)


def loader(
    data: RegressionData, batch_size: int, workers: int, seed: int | None = None
) -> DataLoader[_Row]:
    """(images, seeing, targets) batches, shuffled per epoch from ``seed``, or in order."""
    return make_loader(data, batch_size, workers, shuffle_seed=seed, collate_fn=_stack)
