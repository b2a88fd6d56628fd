"""Random views of galaxies for contrastive training: what may change without changing the
morphology.

Each view of a (B, C, H, W) batch in [-1, 1] (sky at -1) gets, per galaxy:

- a rotation by any angle and a flip (galaxies have no preferred orientation);
- a zoom of up to +-20% and a shift of up to 5% of the frame (centring and size measurements
  are not exact);
- a Gaussian blur of 0-1.2 pixels (seeing / PSF);
- a brightness change of up to +-20% and a colour change of up to ~5% per band (calibration,
  extinction), small enough that colour still tells red from blue galaxies;
- Gaussian noise of 0-0.04 (depth).

All draws come from ``generator``, so runs are reproducible and resume exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_ZOOM = 0.2
_SHIFT = 0.05
_BLUR = 1.2
_BRIGHTNESS = 0.2
_COLOUR = 0.05
_NOISE = 0.04


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _blur(batch: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image blurred by its own Gaussian ``sigma`` (pixels), separably."""
    n, channels, height, width = batch.shape
    radius = max(1, math.ceil(2.5 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=batch.dtype, device=batch.device)
    safe = sigma.clamp(min=1e-3).to(batch.dtype)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(channels, 0)
    flat = batch.reshape(1, n * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * channels)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * channels)
    return flat.reshape(n, channels, height, width)


def galaxy_views(
    batch: torch.Tensor, generator: torch.Generator | None = None, *, rotation: float = 180.0
) -> torch.Tensor:
    """One random view of each galaxy of ``batch`` (see the module notes).

    ``rotation``: the largest turn, degrees; 180 for any orientation. Galaxies already turned
    to a common orientation (framing with ``align``) need only a small one: with the flips
    and a half turn they cover what the alignment leaves undecided.
    """
    n, channels = batch.shape[:2]
    device = batch.device
    # every random number from the (CPU) generator, the image work where the batch is
    half_turn = torch.where(torch.rand(n, generator=generator) < 0.5, math.pi, 0.0)
    angle = _uniform(n, -math.radians(rotation), math.radians(rotation), generator) + half_turn
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    zoom = torch.exp(_uniform(n, -_ZOOM, _ZOOM, generator))
    shift = _uniform(2 * n, -2 * _SHIFT, 2 * _SHIFT, generator).reshape(n, 2)
    blur = _uniform(n, 0.0, _BLUR, generator)
    gain = torch.exp(_uniform(n, -_BRIGHTNESS, _BRIGHTNESS, generator))[:, None]
    gain = gain * torch.exp(_COLOUR * torch.randn(n, channels, generator=generator))
    sigma = _uniform(n, 0.0, _NOISE, generator)[:, None, None, None]
    noise = torch.randn(batch.shape, generator=generator)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], 1),
            torch.stack([sin * flip, cos, shift[:, 1]], 1),
        ],
        1,
    ).to(device)
    x = batch.float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # sample (x + 1) so that what comes in from outside the frame is sky (-1), not grey
    x = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = _blur(x, blur.to(device))
    x = x * gain.to(device)[:, :, None, None] - 1
    x = x + sigma.to(device) * noise.to(device)
    return x.clamp(-1, 1).to(batch.dtype)
