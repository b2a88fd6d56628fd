"""The thin LightningModule that trains a :class:`~galclust.models.vae.VAE`.

It owns the loss, the optimiser, the scheduler and logging; the network stays a plain
``nn.Module``. Loss (the same formula for train and validation, so that runs with different
latent sizes are comparable)::

    loss = mean squared error per pixel  +  kld_weight * KL divergence per latent dimension

both averaged over the batch; ``kld_weight`` defaults to 1e-3, which keeps reconstructions
sharp while the latent space stays close to a unit Gaussian.

Runs are reproducible and resume exactly: augmentations and the sampling noise draw from
generators seeded by (seed, epoch, batch).
Images that are all NaN (unreadable data) are dropped from their batch and counted in the
``skipped`` metric.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from galclust import __version__
from galclust.data.transforms import dihedral, usable
from galclust.models.vae import VAE

#: Marks a checkpoint as a galclust VAE, checked when one is loaded.
CHECKPOINT_KIND = "galclust-vae"


def mix_seed(values: list[int]) -> int:
    """One 63-bit seed from several integers."""
    return int(np.random.SeedSequence(values).generate_state(1, np.uint64)[0] >> 1)


def usable_images(module: L.LightningModule, batch: Any, stage: str) -> torch.Tensor:
    """The images of ``batch`` that are not all NaN; the others are counted in the
    ``{stage}_skipped`` metric."""
    images: torch.Tensor = batch[0] if isinstance(batch, (list, tuple)) else batch
    keep = usable(images)
    skipped = int((~keep).sum())
    module.log(
        f"{stage}_skipped",
        float(skipped),
        on_step=False,
        on_epoch=True,
        reduce_fx="sum",
        sync_dist=True,
    )
    return images[keep] if skipped else images


def vae_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    kld_weight: float,
) -> dict[str, torch.Tensor]:
    """Reconstruction (MSE per pixel), KL divergence (per latent dimension) and their sum."""
    mse = F.mse_loss(recon, target)
    kld = torch.mean(-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()))
    return {"loss": mse + kld_weight * kld, "mse": mse, "kld": kld}


class VAEModule(L.LightningModule):
    """Training logic for a VAE: one ``_shared_step`` for training and validation.

    Parameters
    ----------
    in_channels, image_size, latent_dim : int
        Passed to :class:`~galclust.models.vae.VAE`.
    lr : float
        Adam learning rate, decayed by ``gamma`` every epoch.
    kld_weight : float
        Weight of the KL term.
    augment : bool
        Random flips and 90-degree rotations of training batches.
    preprocess : dict, optional
        :meth:`galclust.data.Preprocess.to_dict` of the training data, kept in the checkpoint so
        that embedding prepares images the same way.
    seed : int
        Seed of the augmentations.
    channels_last : bool
        Keep weights and batches in channels-last memory order (faster convolutions with
        bfloat16 on CPUs and tensor cores).
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 256,
        latent_dim: int = 35,
        *,
        lr: float = 1e-3,
        gamma: float = 0.95,
        kld_weight: float = 1e-3,
        augment: bool = True,
        preprocess: dict[str, Any] | None = None,
        seed: int = 0,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = VAE(in_channels, image_size, latent_dim)
        self.kld_weight = kld_weight
        self.augment = augment
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model(x)  # type: ignore[no-any-return]

    def _shared_step(self, batch: torch.Tensor, stage: str, batch_idx: int) -> torch.Tensor | None:
        images = usable_images(self, batch, stage)
        if not len(images):
            return None
        if stage == "train" and self.augment:
            seed = [self.hparams["seed"], self.current_epoch, batch_idx]
            generator = torch.Generator().manual_seed(mix_seed(seed))
            images = dihedral(images, generator)
        images = images.contiguous(memory_format=self.memory_format)
        recon, mu, logvar = self.model(images)
        losses = vae_loss(
            recon.float(), images.float(), mu.float(), logvar.float(), self.kld_weight
        )
        self.log_dict(
            {f"{stage}_{name}": value for name, value in losses.items()},
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=images.shape[0],
            sync_dist=True,  # reduced once per epoch: every device's share counts
        )
        return losses["loss"]

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        return self._shared_step(batch, "train", batch_idx)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        return self._shared_step(batch, "val", batch_idx)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["galclust"] = {"kind": CHECKPOINT_KIND, "version": __version__}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._seed_noise(0, batch_idx)

    def on_validation_batch_start(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._seed_noise(1, batch_idx)

    def _seed_noise(self, stage: int, batch_idx: int) -> None:
        """Sampling noise drawn from (seed, epoch, batch, rank): a resumed run continues exactly
        and validation losses are comparable between runs."""
        parts = [self.hparams["seed"], self.current_epoch, batch_idx, stage, self.global_rank]
        torch.manual_seed(mix_seed(parts))

    def configure_optimizers(self) -> Any:
        optimiser = torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=self.hparams["gamma"])
        return {"optimizer": optimiser, "lr_scheduler": scheduler}
