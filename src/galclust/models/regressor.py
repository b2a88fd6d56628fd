"""A CNN that measures galaxy parameters, with an uncertainty for each, and its training logic.

:class:`Regressor` is a plain ``nn.Module``: a strided stem (a learned 2x2 binning: survey
pixels sample the PSF finely, so this loses little and quarters the cost), four residual stages
and a small head that gives, for every output, a mean and a log-variance. Shapes follow from
``in_channels``, ``image_size`` and ``n_outputs``. The head can also be told per-galaxy numbers
that the pixels do not hold, such as the seeing (``n_conditions``): a barely resolved galaxy's
size and shape follow from its image only once the PSF's size is known. The last of those
numbers may be measurements of the image (``n_measured``), such as its aperture photometry
(:func:`aperture_photometry`), which also have a linear path to the outputs.

:class:`RegressorModule` trains it with the Gaussian negative log-likelihood of standardised
targets, each term weighted by its predicted variance to the power ``nll_beta`` (so that a hard
output is not given a large variance and left unlearned), so each prediction carries its own
uncertainty; random flips and quarter turns of the
training images are applied with the matching change of the position-angle outputs
(``cos 2PA``, ``sin 2PA``) and of the ellipticity components ``e1``, ``e2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from galclust import __version__
from galclust.data.transforms import dihedral, symmetry
from galclust.models.lightning import mix_seed

#: The symmetries (see :func:`galclust.data.transforms.symmetry`) a prediction averages over,
#: by their number.
VIEWS = {1: (0,), 2: (0, 4), 4: (0, 1, 2, 3), 8: tuple(range(8))}
#: Marks a checkpoint as a galclust regressor, checked when one is loaded.
CHECKPOINT_KIND = "galclust-regressor"
#: Steps over which the learning rate rises linearly to its peak at the start of training.
WARMUP_STEPS = 300
_LOGVAR = (-12.0, 6.0)  # clamp of the predicted log-variance of standardised targets
#: Network input = asinh(flux / sky noise) / ASINH_NORM per pixel: a bright core ends near 1-2.
ASINH_NORM = 5.0
#: Radii of the circular apertures of :func:`aperture_photometry`, as fractions of the image
#: size; the whole image is one more aperture.
APERTURE_RADII = (1 / 4, 1 / 8, 1 / 16)
#: Activations of the head's hidden layer. With ReLU about half of its 256 units never fire
#: (even after the warm-up); GELU (the default) keeps a gradient below zero.
HEAD_ACTIVATIONS = ("relu", "gelu")


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
    )


class _Stage(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = _block(c_in, c_out, stride)
        self.skip: nn.Module = (
            nn.Identity()
            if c_in == c_out and stride == 1
            else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.body(x) + self.skip(x))
        return out


class Regressor(nn.Module):
    """Images (B, in_channels, image_size, image_size) -> (mean, log-variance), each
    (B, n_outputs), in standardised target units."""

    measured_mean: torch.Tensor  # buffers (with n_measured): the measurements' standardisation
    measured_std: torch.Tensor

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 128,
        n_outputs: int = 1,
        width: int = 24,
        n_conditions: int = 0,
        n_measured: int = 0,
        head_activation: str = "gelu",
    ) -> None:
        super().__init__()
        if head_activation not in HEAD_ACTIVATIONS:
            raise ValueError(f"head_activation {head_activation!r}: choose {HEAD_ACTIVATIONS}")
        if not 0 <= n_measured <= n_conditions:
            raise ValueError(f"n_measured {n_measured} must be from 0 to n_conditions")
        if image_size < 16:
            raise ValueError(f"image_size {image_size} < 16")
        self.n_outputs = n_outputs
        self.n_conditions = n_conditions
        self.n_measured = n_measured
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            _Stage(width, widths[0], 1),
            _Stage(widths[0], widths[1], 2),
            _Stage(widths[1], widths[2], 2),
            _Stage(widths[2], widths[3], 2),
            nn.AdaptiveAvgPool2d(4),  # keeps where the light is, not only how much
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(widths[3] * 16 + n_conditions, 256),
            nn.ReLU(inplace=True) if head_activation == "relu" else nn.GELU(),
            nn.Linear(256, 2 * n_outputs),
        )
        if n_measured:  # standardised, and also mapped linearly to the outputs
            self.register_buffer("measured_mean", torch.zeros(n_measured))
            self.register_buffer("measured_std", torch.ones(n_measured))
            self.direct = nn.Linear(n_measured, 2 * n_outputs)

    def forward(
        self, x: torch.Tensor, conditions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``conditions``: (B, n_conditions), required when n_conditions > 0: standardised
        ones first, then ``n_measured`` measurements of the image (such as its photometry)."""
        features = self.head[0](self.features(x))  # flattened
        direct = None
        if self.n_conditions:
            if conditions is None or conditions.shape != (len(x), self.n_conditions):
                got = None if conditions is None else tuple(conditions.shape)
                raise ValueError(
                    f"this regressor needs ({len(x)}, {self.n_conditions}) conditions, got {got}"
                )
            if self.n_measured:  # in float32: a magnitude follows from these to 0.01 mag
                with torch.autocast(x.device.type, enabled=False):
                    measured = conditions[:, -self.n_measured :].float() - self.measured_mean
                    measured = measured / self.measured_std
                    direct = self.direct(measured)
                conditions = torch.cat([conditions[:, : -self.n_measured], measured], dim=1)
            features = torch.cat([features, conditions.to(features.dtype)], dim=1)
        out = self.head[1:](features).float()
        if direct is not None:
            out = out + direct.float()
        mean, logvar = out[:, : self.n_outputs], out[:, self.n_outputs :]
        return mean, logvar.clamp(*_LOGVAR)


def aperture_masks(image_size: int) -> torch.Tensor:
    """(n_apertures, image_size, image_size) weights of the apertures of
    :func:`aperture_photometry`: the whole image, then circles of :data:`APERTURE_RADII` about
    the image centre (symmetric under every flip and quarter turn of the image)."""
    centre = (image_size - 1) / 2
    y, x = torch.meshgrid(torch.arange(image_size), torch.arange(image_size), indexing="ij")
    r = torch.hypot(y - centre, x - centre)
    circles = [(r <= f * image_size).float() for f in APERTURE_RADII]
    return torch.stack([torch.ones_like(r), *circles])


def aperture_photometry(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(B, bands * n_apertures) photometry of network inputs ``x`` (B, bands, H, W): in each
    aperture of ``masks`` (:func:`aperture_masks`) the flux undone from the input scaling, in
    units of its noise (the flux over sky noise * sqrt(area)), as asinh(S/N) / ASINH_NORM.

    A curve of growth per band, summed in float32 from linear pixels: after the input's
    asinh, a convolutional network sums a bright galaxy's flux only roughly (a stamp's pixel
    sum measured magnitudes better than the network did for most galaxies) and a size or
    concentration follows from these ratios."""
    with torch.autocast(x.device.type, enabled=False):
        flux = torch.sinh(ASINH_NORM * x.float()).flatten(2)  # in units of the sky noise
        weights = masks.flatten(1).to(flux.device)
        sums = flux @ weights.T / weights.sum(1).sqrt()
        return (torch.asinh(sums) / ASINH_NORM).flatten(1)


def gaussian_nll(
    mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor, beta: float = 0.0
) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood per output, constant dropped. With ``beta`` > 0
    each term is weighted by its predicted variance to the power ``beta``, held constant (the
    beta-NLL of Seitzer et al. 2022): the plain likelihood lets the network give a hard output a
    large variance and stop learning it; beta = 1 weights errors like a squared error."""
    nll = 0.5 * (logvar + (target - mean) ** 2 * torch.exp(-logvar))
    if beta:
        nll = nll * torch.exp(beta * logvar.detach())
    return nll.mean()


def turn_targets(
    targets: torch.Tensor, k: torch.Tensor, cos_like: Sequence[int], sin_like: Sequence[int]
) -> torch.Tensor:
    """Raw (unstandardised) targets after symmetry ``k`` of their images (see
    :func:`galclust.data.transforms.symmetry`): only orientation-bearing outputs change,
    ``cos_like`` (cos 2PA, e1) and ``sin_like`` (sin 2PA, e2). A quarter turn adds 90 degrees to
    PA (2 PA + 180: both change sign); a left-right flip negates PA (the sin-like ones change
    sign)."""
    if not cos_like and not sin_like:
        return targets
    out = targets.clone()
    turned = (k % 4) % 2 == 1
    flipped = k >= 4
    for i in cos_like:
        out[turned, i] = -out[turned, i]
    for i in sin_like:
        out[turned, i] = -out[turned, i]
        out[flipped, i] = -out[flipped, i]
    return out


class RegressorModule(L.LightningModule):
    """Training logic of a :class:`Regressor`.

    Parameters
    ----------
    in_channels, image_size : int
        Passed to :class:`Regressor`.
    targets : dict
        :meth:`galclust.regress.Targets.to_dict`: names, transforms and the standardisation,
        kept in the checkpoint with everything else that prediction needs.
    lr : float
        Peak AdamW learning rate, reached linearly over the first :data:`WARMUP_STEPS` steps,
        decayed along a half cosine to 2% of it at epoch ``epochs``
        (a stable end point: the validation loss of a constant rate jumps from epoch to epoch).
    epochs : int
        Length of the decay; a resumed run with more epochs stretches it.
    augment : bool
        Random flips and quarter turns of training images (position angle turned alike).
    scaling : dict
        How images were scaled (:meth:`galclust.regress.FluxScaling.to_dict`).
    survey : dict, optional
        The training simulation's survey (pixel scale, zeropoint, bands), checked by predict.
    seeing : dict, optional
        The catalog column of each galaxy's PSF FWHM that the network is also given (``column``)
        with its training ``mean``, ``std``, ``median``, ``min`` and ``max`` (arcsec); None:
        pixels only.
    nll_beta : float
        The beta of :func:`gaussian_nll` (0: the plain likelihood).
    apertures : bool
        Also give the network the :func:`aperture_photometry` of each image in every band.
    seed : int
        Seed of the augmentations.
    head_activation : str
        Of the head's hidden layer, one of :data:`HEAD_ACTIVATIONS`. The default here, relu, is
        what checkpoints from before the option hold; training passes its own (gelu by default).
    """

    mean: torch.Tensor  # buffers: the standardisation of the raw outputs
    std: torch.Tensor
    masks: torch.Tensor  # the apertures (not saved: they follow from the image size)

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 128,
        *,
        targets: dict[str, Any],
        lr: float = 1e-3,
        epochs: int = 30,
        augment: bool = True,
        scaling: dict[str, Any] | None = None,
        survey: dict[str, Any] | None = None,
        seeing: dict[str, Any] | None = None,
        nll_beta: float = 0.0,
        apertures: bool = False,
        seed: int = 0,
        head_activation: str = "relu",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        outputs = targets["outputs"]
        masks = aperture_masks(image_size) if apertures else torch.zeros(0, image_size, image_size)
        self.register_buffer("masks", masks, persistent=False)
        measured = in_channels * len(masks)
        self.model = Regressor(
            in_channels, image_size, len(outputs), n_conditions=int(bool(seeing)) + measured,
            n_measured=measured, head_activation=head_activation,
        )  # fmt: skip
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.cos_like = [i for i, name in enumerate(outputs) if name in ("pa_cos", "e1")]
        self.sin_like = [i for i, name in enumerate(outputs) if name in ("pa_sin", "e2")]
        self.register_buffer("mean", torch.tensor(targets["mean"], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(targets["std"], dtype=torch.float32))

    def forward(
        self, x: torch.Tensor, seeing: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``seeing``: (B, 1) PSF FWHM in arcsec, used when the regressor was trained with it."""
        conditions = []
        if self.hparams.get("seeing"):
            if seeing is None or seeing.shape != (len(x), 1):
                got = None if seeing is None else tuple(seeing.shape)
                raise ValueError(
                    f"this regressor takes each galaxy's seeing, ({len(x)}, 1) PSF FWHM in "
                    f"arcsec, got {got}: build its data with RegressionData(..., seeing="
                    f"catalog[{self.hparams['seeing']['column']!r}])"
                )
            spec = self.hparams["seeing"]
            conditions.append((seeing - spec["mean"]) / spec["std"])
        if len(self.masks):
            conditions.append(self.photometry(x))
        x = x.contiguous(memory_format=torch.channels_last)
        given = torch.cat(conditions, 1) if conditions else None
        return self.model(x, given)  # type: ignore[no-any-return]

    def _step(
        self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], stage: str, batch_idx: int
    ) -> torch.Tensor:
        images, seeing, raw = batch
        if stage == "train" and self.hparams["augment"]:
            seed = mix_seed([self.hparams["seed"], self.current_epoch, batch_idx])
            k = torch.randint(
                0, 8, (images.shape[0],), generator=torch.Generator().manual_seed(seed)
            )
            images = dihedral(images, k=k)
            raw = turn_targets(raw, k.to(raw.device), self.cos_like, self.sin_like)
        target = (raw - self.mean) / self.std
        mean, logvar = self(images, seeing)
        loss = gaussian_nll(mean, logvar, target, self.hparams.get("nll_beta", 0.0))
        mse = ((mean - target) ** 2).mean()
        self.log_dict(
            {f"{stage}_loss": loss, f"{stage}_mse": mse},
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=images.shape[0],
            sync_dist=True,
        )
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val", batch_idx)

    def photometry(self, x: torch.Tensor) -> torch.Tensor:
        """The :func:`aperture_photometry` of network inputs ``x`` that the network is given."""
        return aperture_photometry(x, self.masks)

    @torch.no_grad()
    def start_from_photometry(self, photometry: torch.Tensor, raw: torch.Tensor) -> None:
        """Start the linear path from the aperture photometry to the outputs (see
        :class:`Regressor`'s ``n_measured``) at the least-squares fit of the standardised
        targets of training galaxies from their ``photometry`` (:meth:`photometry`) and ``raw``
        targets (B, outputs), each log-variance at that fit's residual variance. The
        photometry is standardised by its mean and standard deviation there, fixed from then on
        (batch statistics would move the fit's outputs from batch to batch), and the last
        layer of the rest of the network is scaled down tenfold, so that it first adds little.

        The network then learns what photometry misses instead of first finding how a
        magnitude follows from a sum of fluxes (at a learning rate that moves weights by about
        1e-3 a step, a slow search). (A last layer of zeros instead let Adam's first steps
        silence every hidden unit of the head: the network stopped learning.)"""
        model = self.model
        if not model.n_measured:
            raise ValueError("this regressor is not given aperture photometry (apertures=False)")
        target = ((raw.to(self.mean) - self.mean) / self.std).double()
        finite = torch.isfinite(photometry).all(1) & torch.isfinite(target).all(1)
        if int(finite.sum()) < 2:  # unreadable images are NaN: nothing to fit
            return
        measured, target = photometry[finite].double(), target[finite]
        mean, std = measured.mean(0), measured.std(0).clamp_min(1e-6)
        model.measured_mean.copy_(mean)
        model.measured_std.copy_(std)
        z = (measured - mean) / std
        design = torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], dim=1)
        solution = torch.linalg.lstsq(design, target).solution  # (n_measured + 1, outputs)
        residual = (target - design @ solution).var(0).clamp_min(1e-6)
        n = model.n_outputs
        model.direct.weight[:n] = solution[:-1].T.float()
        model.direct.bias[:n] = solution[-1].float()
        model.direct.weight[n:] = 0.0
        model.direct.bias[n:] = residual.log().float()
        last = model.head[-1]
        assert isinstance(last, nn.Linear)
        last.weight.mul_(0.1)
        last.bias.zero_()

    def predict_raw(
        self, images: torch.Tensor, views: int = 1, seeing: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and standard deviations of the raw (unstandardised) outputs, averaged over
        ``views`` symmetries of each image (:data:`VIEWS`: 1, the image; 2, it and its mirror
        image; 4, its quarter turns; 8, all), with the orientation outputs turned back: the
        network's errors differ from view to view, so their mean is closer to the truth.
        ``seeing`` as in :meth:`forward`."""
        means, sigmas = [], []
        for s in VIEWS[views]:
            mean, logvar = self(symmetry(images, s) if s else images, seeing)
            k = torch.full((len(images),), s, device=mean.device)
            means.append(turn_targets(mean * self.std + self.mean, k, self.cos_like, self.sin_like))
            sigmas.append(torch.exp(0.5 * logvar) * self.std)
        return torch.stack(means).mean(0), torch.stack(sigmas).mean(0)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        # the likelihood's gradients spike when a predicted variance collapses: cap them
        self.clip_gradients(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Warm the learning rate up linearly over the first :data:`WARMUP_STEPS` steps. At
        the full rate from the first step, Adam moved every weight of the head's first layer
        (3,000 inputs) by about the rate at once and silenced most of its hidden units for
        good: in trained models 200-225 of the 256 gave 0 for every galaxy. A hook, not part of
        the epoch-wise scheduler, so that runs trained before it resume on their own schedule."""
        step = self.global_step
        if step >= WARMUP_STEPS:
            return
        scheduler = self.lr_schedulers()
        optimiser = self.optimizers()
        assert scheduler is not None and not isinstance(scheduler, list)
        assert not isinstance(optimiser, list)
        for group, rate in zip(optimiser.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = rate * (step + 1) / WARMUP_STEPS

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["galclust"] = {"kind": CHECKPOINT_KIND, "version": __version__}

    def configure_optimizers(self) -> Any:
        optimiser = torch.optim.AdamW(self.parameters(), lr=self.hparams["lr"], weight_decay=1e-4)
        last = max(1, self.hparams["epochs"] - 1)

        def factor(epoch: int) -> float:
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(epoch, last) / last))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
        return {
            "optimizer": optimiser,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
