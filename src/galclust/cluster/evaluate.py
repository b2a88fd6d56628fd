"""Scores of a clustering against labels, and the raw-pixel baseline it must beat."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

BASELINE_SIZE = 32  # raw-pixel baseline: images area-averaged to 32x32 before PCA


def confusion(truth: np.ndarray, clusters: np.ndarray) -> pd.DataFrame:
    """Counts of each label (rows) in each cluster (columns)."""
    return pd.crosstab(pd.Series(truth, name="label"), pd.Series(clusters, name="cluster"))


def label_scores(truth: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """Adjusted Rand index, normalised mutual information, purity and matched accuracy.

    Purity: the share of galaxies whose cluster's most common label is their own. Matched
    accuracy: the share correct when each label is matched to one cluster (Hungarian), every
    other cluster counting as wrong, so that splitting the data into many small pure clusters
    does not score well.
    """
    table = confusion(truth, clusters).to_numpy()
    n = table.sum()
    rows, cols = linear_sum_assignment(-table)
    return {
        "ari": float(adjusted_rand_score(truth, clusters)),
        "nmi": float(normalized_mutual_info_score(truth, clusters)),
        "purity": float(table.max(axis=0).sum() / n),
        "accuracy": float(table[rows, cols].sum() / n),
    }


def small_pixels(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) images -> (n, C * 32 * 32) area-averaged, arcsinh-stretched pixels."""
    clean = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    tensor = torch.from_numpy(np.ascontiguousarray(clean))
    small = F.adaptive_avg_pool2d(tensor, BASELINE_SIZE).flatten(1).numpy()
    scale = np.median(np.abs(small), axis=1, keepdims=True) + 1e-12
    stretched: np.ndarray = np.arcsinh(small / scale)
    return stretched


def pixel_baseline(images: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Cluster labels from raw pixels: 32x32 pixels -> PCA (50 components) -> k-means."""
    flat = small_pixels(images)
    components = max(1, min(50, len(flat) - 1, flat.shape[1]))
    reduced = PCA(components, random_state=seed).fit_transform(flat)
    labels: np.ndarray = KMeans(k, n_init=3, random_state=seed).fit_predict(reduced)
    return labels
