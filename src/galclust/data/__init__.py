"""From catalog rows to network inputs: preprocessing, datasets, packed stores."""

from galclust.data.dataset import ImageDataset, load_source
from galclust.data.transforms import Preprocess, dihedral, fit_to_size

__all__ = ["ImageDataset", "Preprocess", "dihedral", "fit_to_size", "load_source"]
