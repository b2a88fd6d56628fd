"""A self-supervised contrastive encoder for galaxy morphology (SimCLR, Chen et al. 2020, as
used for galaxies by Hayat et al. 2021 and Stein et al. 2022).

Two random views of each galaxy (:func:`galclust.data.augment.galaxy_views`: rotations,
flips, zoom, shift, blur, brightness, colour, noise) go through the same encoder; the loss
(NT-Xent) pulls the two views of a galaxy together and pushes the other galaxies of the batch
away. What the augmentations change (orientation, exact size, seeing, depth) is therefore
left out of the representation, and what they keep (shape, structure, colour) is what it
holds: the morphology.

The encoder is a small residual CNN ending in global average pooling and a linear layer to
``latent_dim`` numbers, the representation that ``galclust embed`` writes; a two-layer
projection head on top of it is used only by the loss, as in SimCLR.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from galclust import __version__
from galclust.data.augment import galaxy_views
from galclust.models.lightning import mix_seed, usable_images

#: Marks a checkpoint as a galclust contrastive encoder, checked when one is loaded.
CHECKPOINT_KIND = "galclust-contrastive"


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    """Two 3x3 convolutions with a skip connection (ResNet's basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Encoder(nn.Module):
    """Image (B, C, S, S) -> representation (B, latent_dim); any S >= 16.

    Parameters
    ----------
    in_channels : int
        Bands of the images.
    latent_dim : int
        Size of the representation.
    width : int
        Channels of the first stage; each of the three later stages doubles them.
    """

    def __init__(self, in_channels: int = 3, latent_dim: int = 32, width: int = 32) -> None:
        super().__init__()
        stages: list[nn.Module] = [_conv(in_channels, width)]
        channels = width
        for _ in range(3):
            stages += [_conv(channels, 2 * channels, stride=2), _Residual(2 * channels)]
            channels *= 2
        self.features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out = nn.Linear(channels, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))  # type: ignore[no-any-return]


def _similarity(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities between all 2B views (a view with itself: -inf), in float32, and
    for each view the index of the other view of its galaxy."""
    with torch.autocast(first.device.type, enabled=False):
        z = F.normalize(torch.cat([first, second]).float(), dim=1)
        similarity = z @ z.T
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own positive
    n = first.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return similarity, target


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy for two views of B galaxies."""
    similarity, target = _similarity(first, second)
    return F.cross_entropy(similarity / temperature, target)


@torch.no_grad()
def pair_accuracy(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Share of views whose most similar other view is the other view of the same galaxy."""
    similarity, target = _similarity(first, second)
    return (similarity.argmax(1) == target).float().mean()


class ContrastiveModule(L.LightningModule):
    """Training logic of the contrastive encoder (same checkpoints and logging as the VAE).

    Parameters
    ----------
    in_channels, latent_dim : int
        Bands of the images and size of the representation.
    image_size : int
        Side of the inputs (kept for embedding; the encoder takes any size).
    lr : float
        AdamW learning rate, multiplied by ``gamma`` every epoch (a schedule that does not
        depend on the number of epochs, so that a finished run can be extended exactly).
    temperature : float
        Of the NT-Xent loss.
    rotation : float
        Largest random turn of the views, degrees: 180 for cutouts in any orientation, small
        for galaxies aligned by the framing (see :func:`galclust.data.augment.galaxy_views`).
    preprocess : dict, optional
        The images' :class:`~galclust.data.transforms.Preprocess`, kept for embedding.
    seed : int
        Seed of the augmentations.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 64,
        latent_dim: int = 32,
        *,
        lr: float = 2e-3,
        temperature: float = 0.2,
        gamma: float = 0.97,
        rotation: float = 180.0,
        weight_decay: float = 1e-4,
        width: int = 32,
        preprocess: dict[str, Any] | None = None,
        seed: int = 0,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = Encoder(in_channels, latent_dim, width)
        self.head = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.ReLU(inplace=True), nn.Linear(128, 64)
        )
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # type: ignore[no-any-return]

    def _shared_step(self, batch: torch.Tensor, stage: str, batch_idx: int) -> torch.Tensor | None:
        images = usable_images(self, batch, stage)
        if len(images) < 2:  # a contrastive loss needs another galaxy to push away
            # a zero loss, not None: under DDP every device must take part in every step
            return sum(p.sum() for p in self.parameters()) * 0.0  # type: ignore[return-value]
        # validation views are the same every epoch, so its loss is comparable between epochs
        epoch = self.current_epoch if stage == "train" else 0
        parts = [self.hparams["seed"], epoch, batch_idx, int(stage == "val"), self.global_rank]
        generator = torch.Generator().manual_seed(mix_seed(parts))
        views = [
            galaxy_views(images, generator, rotation=self.hparams["rotation"]).contiguous(
                memory_format=self.memory_format
            )
            for _ in range(2)
        ]
        first, second = (self.head(self.model(v)) for v in views)
        loss = nt_xent(first, second, self.hparams["temperature"])
        self.log_dict(
            {f"{stage}_loss": loss, f"{stage}_pair_accuracy": pair_accuracy(first, second)},
            on_step=False,
            on_epoch=True,
            prog_bar=stage == "val",
            batch_size=images.shape[0],
            sync_dist=True,
        )
        return loss

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        return self._shared_step(batch, "train", batch_idx)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        return self._shared_step(batch, "val", batch_idx)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["galclust"] = {"kind": CHECKPOINT_KIND, "version": __version__}

    def configure_optimizers(self) -> Any:
        optimiser = torch.optim.AdamW(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=self.hparams["gamma"])
        return {"optimizer": optimiser, "lr_scheduler": scheduler}
