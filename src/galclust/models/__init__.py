"""Networks as plain ``torch.nn.Module``s whose sizes derive from their inputs."""

from galclust.models.contrastive import Encoder
from galclust.models.regressor import Regressor
from galclust.models.vae import VAE

__all__ = ["VAE", "Encoder", "Regressor"]
