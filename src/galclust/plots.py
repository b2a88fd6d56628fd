"""Figures written as PNG files: loss curves, reconstruction grids, latent-size comparisons.

Figures are drawn with matplotlib's object interface (no pyplot, no display needed) and saved
atomically, so a figure being rewritten every epoch is never seen half-written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from galclust.catalog.schema import atomic_write


def save(figure: Figure, path: str | os.PathLike[str]) -> None:
    """Save ``figure`` as a PNG at ``path`` atomically."""
    FigureCanvasAgg(figure)

    def write(tmp: Path) -> None:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")

    atomic_write(Path(path), write)


def to_display(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) network images in [-1, 1] -> (N, H, W, 3) in [0, 1] for showing.

    Three channels are shown as they are (RGB composites, or g,r,z as blue, green, red would
    need the order reversed: see ``bands``); one channel in grey; otherwise the first channel.
    """
    images = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=-1.0)
    shown = (images.clip(-1, 1) + 1) / 2
    if shown.shape[1] == 3:
        return np.moveaxis(shown, 1, -1)
    return np.repeat(shown[:, :1], 3, axis=1).transpose(0, 2, 3, 1)


def image_rows(
    rows: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike[str], title: str = ""
) -> None:
    """One labelled strip per row, each (N, C, H, W) in [-1, 1]: e.g. inputs above their
    reconstructions, or the same galaxies reconstructed by several models."""
    count = max(len(images) for _, images in rows)
    size = rows[0][1].shape[-1]
    gap = max(1, size // 32)
    figure = Figure(figsize=(1.1 * count + 1.2, 1.15 * len(rows) + (0.4 if title else 0)))
    axes = figure.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, images) in zip(axes, rows, strict=True):
        strip = np.ones((size, count * (size + gap) - gap, 3), np.float32)
        for i, image in enumerate(to_display(images)):
            strip[:, i * (size + gap) : i * (size + gap) + size] = image
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10)
    save(figure, path)


def loss_curves(
    runs: Mapping[str, pd.DataFrame],
    path: str | os.PathLike[str],
    title: str = "",
    ylabel: str = "loss",
) -> None:
    """Training (dashed) and validation (solid) loss against epoch, one colour per run; a log
    axis when every loss is positive (a likelihood loss can be negative: a linear axis then).

    Each frame has the columns of ``metrics.csv``: ``epoch``, ``train_loss``, ``val_loss``.
    """
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.subplots()
    single = len(runs) == 1
    for i, (label, frame) in enumerate(runs.items()):
        colour = f"C{i % 10}"
        epochs = frame["epoch"]
        train_label = "training" if single else None
        ax.plot(epochs, frame["train_loss"], "--", color=colour, alpha=0.7, label=train_label)
        val_label = "validation" if single else label
        ax.plot(epochs, frame["val_loss"], "-o", color=colour, ms=3, label=val_label)
    later = [f.loc[f["epoch"] > 1, ["train_loss", "val_loss"]].to_numpy() for f in runs.values()]
    later_values = np.concatenate([v.ravel() for v in later]) if later else np.array([])
    later_values = later_values[np.isfinite(later_values)]
    every = [f[["train_loss", "val_loss"]].to_numpy().ravel() for f in runs.values()]
    values = np.concatenate(every) if every else np.array([])
    positive = bool((values[np.isfinite(values)] > 0).all())
    if len(later_values) > 2:  # the first epoch's loss is far above: show where runs differ
        low, high = later_values.min(), later_values.max()
        if positive:
            ax.set_ylim(low * 0.97, high * 1.05)
        else:
            margin = 0.05 * (high - low) or 0.05 * abs(high) or 1.0
            ax.set_ylim(low - margin, high + margin)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log" if positive else "linear")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, title=None if single else "validation (solid), training (dashed)")
    ax.set_title(title, fontsize=10)
    save(figure, path)


def metric_against(
    values: Mapping[int, float], path: str | os.PathLike[str], *, xlabel: str, ylabel: str
) -> None:
    """One metric against an integer setting (e.g. final validation loss against latent size)."""
    figure = Figure(figsize=(5.0, 3.6))
    ax = figure.subplots()
    keys = sorted(values)
    ax.plot(keys, [values[k] for k in keys], "-o")
    ax.set_xscale("log", base=2)
    ax.set_xticks(keys, [str(k) for k in keys])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    save(figure, path)
