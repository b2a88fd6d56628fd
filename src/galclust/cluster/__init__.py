"""Automatic morphological clustering of latent vectors (``galclust cluster``, ``assign``)."""

from galclust.cluster.auto import METHODS, SCALINGS, UNCLASSIFIED, AutoCluster, auto_cluster
from galclust.cluster.evaluate import label_scores, pixel_baseline
from galclust.cluster.run import ClusterOptions, ClusterReport, assign, cluster_latents

__all__ = [
    "METHODS",
    "SCALINGS",
    "UNCLASSIFIED",
    "AutoCluster",
    "ClusterOptions",
    "ClusterReport",
    "assign",
    "auto_cluster",
    "cluster_latents",
    "label_scores",
    "pixel_baseline",
]
