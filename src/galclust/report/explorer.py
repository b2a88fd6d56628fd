"""``galclust explore``: an interactive page of the 2-D map of every galaxy of a clustering.

The page (plain JavaScript on a canvas, nothing fetched from the network) pans and zooms the
map, colours it by cluster or by any catalog column, shows a galaxy's thumbnail on hover, and
on a click its id, cluster, confidence and nearest neighbours in latent space as thumbnails.

Files written::

    explorer.html                  the page
    explorer_files/data.js         positions, columns and neighbours of every galaxy
    explorer_files/sheet_NNNN.png  thumbnails, 256 to a sheet: a browser loads a sheet only
                                   when one of its galaxies is shown, so 100,000 galaxies stay
                                   responsive
    explorer.provenance.json       (by the command) how it was made

Neighbours are found in the space the clusters were fitted in (the clustering model's
whitened latents), so they are the galaxies the clustering sees as most alike.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from galclust.catalog.schema import atomic_write_text, read_catalog
from galclust.cluster.figures import thumbnail
from galclust.cluster.run import Images, load_cluster_model, make_map, read_latents
from galclust.exceptions import GalclustFileError, GalclustValueError
from galclust.progress import Progress
from galclust.report.html import esc

log = logging.getLogger(__name__)

PER_ROW = 16  # thumbnails per sheet row; a sheet holds PER_ROW ** 2
_MAX_CATEGORIES = 30  # a text or integer column with more values is not offered for colour
_MAX_COLUMNS = 40


@dataclass(frozen=True)
class ExploreOptions:
    """Everything that decides an explorer page; saved in its provenance."""

    clusters: str  # the folder written by galclust cluster
    output: str = "explorer.html"
    latents: str | None = None  # default: the latents the clusters were made from
    catalog: str | None = None  # more columns to colour by, matched on id_str
    data: str | None = None  # where the images are (default: the latents' file_loc)
    max_points: int = 100_000  # a random sample beyond this
    neighbours: int = 8
    map: str | None = None  # umap or pca; default: the clustering's
    thumb_size: int = 48
    seed: int = 0


@dataclass
class ExplorerResult:
    """What the page holds."""

    output: Path
    points: int
    galaxies: int
    columns: list[str]
    missing_thumbnails: int
    seconds: float
    times: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        shown = f"{self.points:,} galaxies"
        if self.points < self.galaxies:
            shown += f" (a random {self.points:,} of {self.galaxies:,})"
        text = (
            f"wrote {self.output}: {shown}, colour by {', '.join(self.columns)}; "
            f"in {self.seconds:.1f} s"
        )
        if self.missing_thumbnails:
            text += f"\n{self.missing_thumbnails} image(s) unreadable: grey placeholders shown"
        return text


def _settings(folder: Path) -> dict[str, Any]:
    summary = folder / "summary.json"
    if not summary.is_file():
        raise GalclustFileError(
            f"{folder} has no summary.json; give the folder written by galclust cluster"
        )
    try:
        settings: dict[str, Any] = json.loads(summary.read_text(encoding="utf-8"))["settings"]
    except (ValueError, KeyError) as exc:
        raise GalclustFileError(f"{summary} is not a galclust cluster summary") from exc
    return settings


def _colour_columns(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The columns worth colouring by, as the page wants them: categories (as indices into a
    list of names) or numbers (NaN as null)."""
    out: dict[str, dict[str, Any]] = {}
    skip = {
        "id_str",
        "file_loc",
        "source_loc",
        "hdu",
        "image_index",
        "source_index",
        "seed",
        "distance",
        "logvar_mean",
    }
    for name in frame.columns:
        if name in skip or str(name).startswith("z_") or len(out) >= _MAX_COLUMNS:
            continue
        column = frame[name]
        uniques = column.dropna().unique()
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if not numeric or (pd.api.types.is_integer_dtype(column) and len(uniques) <= 12):
            if not 1 <= len(uniques) <= _MAX_CATEGORIES:
                continue
            names = sorted(str(u) for u in uniques)
            index = {n: i for i, n in enumerate(names)}
            codes = [index[str(v)] if pd.notna(v) else -1 for v in column]
            out[str(name)] = {"kind": "category", "categories": names, "values": codes}
        else:
            values = column.astype(float).to_numpy()
            if not np.isfinite(values).any():
                continue
            rounded = [None if not math.isfinite(v) else float(f"{v:.5g}") for v in values]
            out[str(name)] = {"kind": "number", "values": rounded}
    return out


def _sheets(images: Images, ids: list[str], folder: Path, size: int) -> tuple[list[str], int]:
    """Write the thumbnail sheets; returns their file names and how many images were missing."""
    per_sheet = PER_ROW * PER_ROW
    names: list[str] = []
    missing = 0
    progress = Progress(len(ids), "thumbnails", unit="galaxies")
    placeholder = np.full((size, size, 3), 90, np.uint8)
    placeholder[np.eye(size, dtype=bool) | np.eye(size, dtype=bool)[::-1]] = 160
    for start in range(0, len(ids), per_sheet):
        chunk = ids[start : start + per_sheet]
        rows = math.ceil(len(chunk) / PER_ROW)
        sheet = Image.new("RGB", (PER_ROW * size, rows * size), (0, 0, 0))
        for k, pixels in enumerate(images.get(chunk)):
            if pixels is None:
                missing += 1
                tile = Image.fromarray(placeholder)
            else:
                tile = Image.fromarray(thumbnail(pixels)).resize(
                    (size, size), Image.Resampling.LANCZOS
                )
            sheet.paste(tile, ((k % PER_ROW) * size, (k // PER_ROW) * size))
        name = f"sheet_{start // per_sheet:04d}.png"
        sheet.save(folder / name, optimize=False)
        names.append(name)
        progress.update(len(chunk))
    progress.close()
    return names, missing


def build_explorer(options: ExploreOptions) -> ExplorerResult:
    """Write the explorer page of the clustering in ``options.clusters``.

    Raises
    ------
    GalclustFileError
        The clusters folder, its model or its latents are missing or unreadable.
    GalclustValueError
        A bad option, or latents that do not match the clustering.
    """
    start = time.perf_counter()
    times: dict[str, float] = {}
    if options.max_points < 2 or options.neighbours < 1 or options.thumb_size < 8:
        raise GalclustValueError(
            f"--max-points {options.max_points} (>= 2), --neighbours {options.neighbours} "
            f"(>= 1) and --thumb-size {options.thumb_size} (>= 8) are out of range"
        )
    folder = Path(options.clusters)
    settings = _settings(folder)
    model = load_cluster_model(folder / "model.joblib")
    latents_path = options.latents or settings.get("latents")
    if not latents_path:
        raise GalclustValueError(f"{folder}/summary.json does not name its latents; give --latents")
    table, X = read_latents(latents_path)
    if X.shape[1] != model.n_features_in_:
        raise GalclustValueError(
            f"{latents_path} has {X.shape[1]} latent dimensions, the clustering "
            f"{model.n_features_in_}; give the latents that were clustered (--latents)"
        )
    clusters = read_catalog(folder / "clusters.parquet", validate=False)
    frame = table.drop(columns=[c for c in table.columns if str(c).startswith("z_")])
    frame["id_str"] = frame["id_str"].astype(str)
    clusters["id_str"] = clusters["id_str"].astype(str)
    frame = frame.merge(clusters, on="id_str", how="left", suffixes=("", "_cluster"))
    added: list[str] = []
    if options.catalog:
        extra = read_catalog(options.catalog, validate=False)
        if "id_str" not in extra:
            raise GalclustValueError(f"--catalog {options.catalog} has no id_str column")
        extra = extra.drop_duplicates("id_str").astype({"id_str": str})
        added = [c for c in extra.columns if c not in frame.columns]
        frame = frame.merge(extra[["id_str", *added]], on="id_str", how="left")
    rng = np.random.default_rng(options.seed)
    shown = np.arange(len(frame))
    if len(shown) > options.max_points:
        shown = np.sort(rng.choice(len(frame), options.max_points, replace=False))
    frame = frame.iloc[shown].reset_index(drop=True)
    Z = model.transform_latents(X[shown])
    times["read"] = time.perf_counter() - start

    t = time.perf_counter()
    xy = make_map(Z, options.map or settings.get("map", "umap"), options.seed)
    times["map"] = time.perf_counter() - t
    t = time.perf_counter()
    from sklearn.neighbors import NearestNeighbors

    k = min(options.neighbours, len(Z) - 1)
    _, nearest = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z)
    neighbours = [[int(j) for j in row if j != i][:k] for i, row in enumerate(nearest)]
    times["neighbours"] = time.perf_counter() - t

    output = Path(options.output)
    files = output.with_name(output.stem + "_files")
    staging = output.with_name(f".{output.stem}_files.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise GalclustFileError(f"cannot write beside {output} ({exc.strerror})") from exc
    t = time.perf_counter()
    images = Images(table, options.data or settings.get("data"))  # the latents' own files
    ids = frame["id_str"].tolist()
    sheets, missing = _sheets(images, ids, staging, options.thumb_size)
    times["thumbnails"] = time.perf_counter() - t

    # the menu: the clustering's columns, then the catalog's, then the latents table's
    first = [c for c in ("cluster", "confidence", "is_outlier") if c in frame]
    catalog_columns = [c for c in frame.columns if c in added and c not in first]
    rest = [c for c in frame.columns if c not in first and c not in catalog_columns]
    columns = _colour_columns(frame[first + catalog_columns + rest])
    title = f"{folder} | {len(ids):,} galaxies"
    data = {
        "ids": ids,
        "x": [float(f"{v:.5g}") for v in xy[:, 0]],
        "y": [float(f"{v:.5g}") for v in xy[:, 1]],
        "columns": columns,
        "info": {
            name: [
                None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for v in frame[name]
            ]
            for name in ("cluster", "confidence", "is_outlier")
            if name in frame
        },
        "neighbours": neighbours,
        "thumbs": {
            "size": options.thumb_size,
            "per_row": PER_ROW,
            "sheets": [f"{files.name}/{s}" for s in sheets],
        },
        "title": title,
    }
    script = "window.GALCLUST_DATA = " + json.dumps(data, separators=(",", ":")) + ";\n"
    (staging / "data.js").write_text(script, encoding="utf-8")
    (staging / "explorer.js").write_text(_asset("explorer.js"), encoding="utf-8")
    shutil.rmtree(files, ignore_errors=True)
    os.replace(staging, files)
    atomic_write_text(output, _page(title, files.name))
    return ExplorerResult(
        output=output,
        points=len(ids),
        galaxies=len(table),
        columns=list(columns),
        missing_thumbnails=missing,
        seconds=time.perf_counter() - start,
        times=times,
    )


def _asset(name: str) -> str:
    return resources.files("galclust.report").joinpath(name).read_text(encoding="utf-8")


def _page(title: str, files: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc('galclust explorer: ' + title)}</title>"
        f"<style>{_asset('explorer.css')}</style></head><body>"
        '<div id="bar"><strong>galclust explorer</strong> '
        f'<span id="title">{esc(title)}</span>'
        '<label>colour by <select id="colour"></select></label>'
        '<button id="reset" type="button">reset view</button>'
        '<span id="hint">drag to pan, wheel to zoom, click a galaxy</span></div>'
        '<div id="main"><canvas id="map"></canvas><div id="legend"></div>'
        '<div id="tooltip" hidden></div></div>'
        '<aside id="panel"><p class="empty">Click a galaxy to see it and its nearest '
        "neighbours in latent space.</p></aside>"
        f'<script src="{esc(files)}/data.js"></script>'
        f'<script src="{esc(files)}/explorer.js"></script></body></html>\n'
    )
