"""Networks as plain ``torch.nn.Module``s whose sizes derive from their inputs."""

from galclust.models.vae import VAE

__all__ = ["VAE"]
