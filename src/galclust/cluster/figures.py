"""Pictures of a clustering: model-selection scores, the 2-D map, galleries, confusion matrix."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from galclust.datasets import to_rgb8
from galclust.plots import save


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) pixels as an (H, W, 3) uint8 picture: 8-bit colour as it is, float images
    arcsinh-stretched (3 bands as colour, else the first band in grey)."""
    if pixels.dtype == np.uint8:
        if pixels.shape[0] >= 3:
            return np.moveaxis(pixels[:3], 0, 2)
        return np.repeat(np.moveaxis(pixels[:1], 0, 2), 3, axis=2)
    finite = np.nan_to_num(pixels.astype(np.float32))
    return to_rgb8(finite if finite.shape[0] == 3 else finite[:1])


def scores_against_k(scores: pd.DataFrame, chosen: int, path: str | os.PathLike[str]) -> None:
    """BIC, silhouette and bootstrap stability against k, the chosen k marked."""
    figure = Figure(figsize=(9.5, 3.0))
    axes = figure.subplots(1, 3)
    for ax, (column, label) in zip(
        axes,
        [
            ("bic", "BIC (lower is better)"),
            ("silhouette", "silhouette"),
            ("stability", "bootstrap stability (ARI)"),
        ],
        strict=True,
    ):
        ax.plot(scores["k"], scores[column], "-o", ms=3)
        ax.axvline(chosen, color="C3", ls="--", lw=1, label=f"chosen k = {chosen}")
        ax.set_xlabel("k")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    save(figure, path)


def cluster_map(
    xy: np.ndarray, labels: np.ndarray, path: str | os.PathLike[str], *, title: str
) -> None:
    """2-D map of the latents, one colour per cluster (grey: unclassified / noise)."""
    figure = Figure(figsize=(6.2, 5.6))
    ax = figure.subplots()
    noise = labels < 0
    ax.scatter(xy[noise, 0], xy[noise, 1], s=3, c="0.7", label="unclassified", rasterized=True)
    cmap = "tab20" if labels.max() >= 10 else "tab10"
    ax.scatter(
        xy[~noise, 0],
        xy[~noise, 1],
        s=3,
        c=labels[~noise],
        cmap=cmap,
        vmin=0,
        vmax=max(9, labels.max()),
        rasterized=True,
    )
    for c in np.unique(labels[~noise]):
        cx, cy = np.median(xy[labels == c], axis=0)
        ax.annotate(
            str(c),
            (cx, cy),
            fontsize=10,
            weight="bold",
            ha="center",
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7},
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    save(figure, path)


def gallery(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> None:
    """Rows of thumbnails ((H, W, 3) uint8 each), each row labelled on the left."""
    width = max(len(images) for _, images in rows) or 1
    figure = Figure(figsize=(1.0 * width + 1.4, 1.05 * len(rows) + (0.35 if title else 0)))
    axes = figure.subplots(len(rows), width, squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(width):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest")
        axes[r, 0].text(
            -0.08, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8
        )
    if title:
        figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(wspace=0.04, hspace=0.08, left=0.12)
    save(figure, path)


def confusion_matrix(table: pd.DataFrame, path: str | os.PathLike[str], *, title: str) -> None:
    """Counts of each label (rows) per cluster (columns), as a heat map with numbers."""
    figure = Figure(figsize=(0.55 * table.shape[1] + 2.5, 0.45 * table.shape[0] + 1.6))
    ax = figure.subplots()
    ax.imshow(
        table.to_numpy() / np.maximum(table.to_numpy().sum(axis=0), 1),
        cmap="Blues",
        aspect="auto",
        vmin=0,
        vmax=1,
    )
    for (i, j), value in np.ndenumerate(table.to_numpy()):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], fontsize=8)
    ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index], fontsize=8)
    ax.set_xlabel("cluster")
    ax.set_title(title, fontsize=9)
    save(figure, path)
