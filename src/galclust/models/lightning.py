"""The thin LightningModule that trains a :class:`~galclust.models.vae.VAE`.

It owns the loss, the optimiser, the scheduler and logging; the network stays a plain
``nn.Module``. Loss (the same formula for train and validation, so that runs with different
latent sizes are comparable)::

    loss = mean squared error per pixel  +  kld_weight * KL divergence per latent dimension

both averaged over the batch; ``kld_weight`` defaults to 1e-3, which keeps reconstructions
sharp while the latent space stays close to a unit Gaussian.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from galclust.data.transforms import dihedral
from galclust.models.vae import VAE


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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = VAE(in_channels, image_size, latent_dim)
        self.kld_weight = kld_weight
        self.augment = augment

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model(x)  # type: ignore[no-any-return]

    def _shared_step(self, batch: torch.Tensor, stage: str) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        if stage == "train" and self.augment:
            images = dihedral(images)
        recon, mu, logvar = self.model(images)
        losses = vae_loss(recon, images, mu, logvar, self.kld_weight)
        self.log_dict(
            {f"{stage}_{name}": value for name, value in losses.items()},
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=images.shape[0],
        )
        return losses["loss"]

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def configure_optimizers(self) -> Any:
        optimiser = torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=self.hparams["gamma"])
        return {"optimizer": optimiser, "lr_scheduler": scheduler}
