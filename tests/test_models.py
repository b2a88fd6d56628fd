"""The reference VAE: exactly the study's network, with every size derived from the inputs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from galclust.exceptions import GalclustValueError
from galclust.models import VAE

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "docs" / "reference-vae.md"


def _normalised(printout: str) -> list[str]:
    """Lines without indentation, and without the ``bias=True`` PyTorch 2.13 adds to BatchNorm."""
    lines = [line.strip() for line in printout.strip().splitlines()]
    return [re.sub(r"(BatchNorm2d\(.*), bias=True", r"\1", line) for line in lines if line]


def test_printout_matches_the_reference_exactly() -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"{REFERENCE} not found")
    block = REFERENCE.read_text().split("```")[1]
    assert _normalised(str(VAE(3, 256, 35))) == _normalised(block)


@pytest.mark.parametrize(
    ("channels", "size", "latent", "flat"),
    [(3, 256, 35, 512 * 8 * 8), (1, 128, 35, 512 * 4 * 4), (3, 64, 8, 512 * 2 * 2)],
)
def test_sizes_derive_from_inputs(channels: int, size: int, latent: int, flat: int) -> None:
    model = VAE(channels, size, latent).eval()
    assert model.fc_mu.in_features == flat and model.fc_mu.out_features == latent
    x = torch.rand(2, channels, size, size) * 2 - 1
    with torch.no_grad():
        recon, mu, logvar = model(x)
    assert recon.shape == x.shape
    assert mu.shape == logvar.shape == (2, latent)
    assert recon.abs().max() <= 1


def test_small_custom_network_and_hidden_dims_untouched() -> None:
    hidden = [8, 16]
    model = VAE(in_channels=4, image_size=32, latent_dim=4, hidden_dims=hidden)
    assert hidden == [8, 16]
    assert model.hidden_dims == (8, 16) and model.bottleneck == 8
    assert model(torch.zeros(1, 4, 32, 32))[0].shape == (1, 4, 32, 32)


def test_image_size_not_a_multiple_is_a_clear_error() -> None:
    with pytest.raises(GalclustValueError, match=r"image size 100 is not a multiple of 32"):
        VAE(3, 100, 35)
    with pytest.raises(GalclustValueError, match="must be positive"):
        VAE(0, 64, 35)
