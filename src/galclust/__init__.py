"""galclust: unsupervised morphological grouping of galaxy cutouts.

Stages, each writing an artifact on disk that the next reads: ``scan`` (folders -> catalog), and
in later releases the VAE (images -> latents), clustering and the GalSim-trained regressor.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("galclust")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from galclust.catalog.scan import scan
from galclust.catalog.schema import read_catalog, write_catalog

__all__ = ["__version__", "read_catalog", "scan", "write_catalog"]
