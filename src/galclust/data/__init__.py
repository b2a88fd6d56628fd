"""From catalog rows to network inputs: preprocessing, datasets, packed stores."""

from galclust.data.transforms import Preprocess, dihedral, fit_to_size

__all__ = ["Preprocess", "dihedral", "fit_to_size"]
