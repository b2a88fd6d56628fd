"""The reference convolutional VAE of the original study (``shared/docs/reference-vae.md``).

For ``in_channels=3, image_size=256, latent_dim=35`` it is exactly the study's network: five
stride-2 convolution blocks (32-512 channels) down to 8x8, linear layers to the mean and log
variance of a 35-d latent, and a mirrored decoder ending in a Tanh, so inputs must be scaled to
[-1, 1]. Every size derives from the three numbers: a 1x128x128 HST stamp gives a 4x4
bottleneck and ``fc_mu`` of 512*4*4 -> latent_dim. Unlike the PyTorch-VAE repository the
architecture comes from, nothing is hard-coded to 3 channels or 64 pixels and ``hidden_dims``
is never modified.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from galclust.exceptions import GalclustValueError


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(),
    )


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, kernel_size=3, stride=2, padding=1, output_padding=1),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(),
    )


def check_image_size(image_size: int, blocks: int = 5) -> int:
    """The downsampling factor ``2 ** blocks``; a clear error unless it divides ``image_size``."""
    factor = 2**blocks
    if image_size < factor or image_size % factor:
        nearest = max(factor, round(image_size / factor) * factor)
        raise GalclustValueError(
            f"image size {image_size} is not a multiple of {factor} (2 ** {blocks} "
            f"encoder blocks); use e.g. --image-size {nearest}"
        )
    return int(factor)


class VAE(nn.Module):
    """Convolutional variational autoencoder.

    Parameters
    ----------
    in_channels : int
        Bands of the images (3 for g,r,z or RGB, 1 for HST F814W).
    image_size : int
        Height = width of the images, pixels; a multiple of ``2 ** len(hidden_dims)``.
    latent_dim : int
        Size of the latent vector.
    hidden_dims : sequence of int
        Channels of the encoder blocks (the decoder mirrors them).

    Examples
    --------
    >>> model = VAE(in_channels=1, image_size=128, latent_dim=16)
    >>> model.fc_mu.in_features
    8192
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 256,
        latent_dim: int = 35,
        hidden_dims: Sequence[int] = (32, 64, 128, 256, 512),
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden_dims)
        if not hidden or min(hidden) < 1:
            raise GalclustValueError(f"hidden_dims {hidden_dims!r}: give positive channel counts")
        if in_channels < 1 or latent_dim < 1:
            raise GalclustValueError(
                f"in_channels {in_channels} and latent_dim {latent_dim} must be positive"
            )
        factor = check_image_size(image_size, len(hidden))
        self.in_channels = in_channels
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.hidden_dims = hidden
        self.bottleneck = image_size // factor
        flat = hidden[-1] * self.bottleneck**2

        self.encoder = nn.Sequential(
            *(_down(c_in, c_out) for c_in, c_out in itertools.pairwise((in_channels, *hidden)))
        )
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_var = nn.Linear(flat, latent_dim)
        self.decoder_input = nn.Linear(latent_dim, flat)
        reverse = hidden[::-1]
        self.decoder = nn.Sequential(
            *(_up(c_in, c_out) for c_in, c_out in itertools.pairwise(reverse))
        )
        self.final_layer = nn.Sequential(
            nn.ConvTranspose2d(
                reverse[-1], reverse[-1], kernel_size=3, stride=2, padding=1, output_padding=1
            ),
            nn.BatchNorm2d(reverse[-1]),
            nn.LeakyReLU(),
            nn.Conv2d(reverse[-1], in_channels, kernel_size=3, padding=1),
            nn.Tanh(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance, each of shape (batch, latent_dim), of images (batch, C, H, W)."""
        features = torch.flatten(self.encoder(x), start_dim=1)
        return self.fc_mu(features), self.fc_var(features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images of shape (batch, C, H, W) in [-1, 1] from latents of shape (batch, latent_dim)."""
        side = self.bottleneck
        x = self.decoder_input(z).view(-1, self.hidden_dims[-1], side, side)
        decoded: torch.Tensor = self.final_layer(self.decoder(x))
        return decoded

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """A sample of N(mu, exp(logvar)) that gradients flow through."""
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, mean and log variance of a batch of images."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar
