"""``galclust explore``: an interactive page of the 2-D map of every galaxy of a clustering.

The page (plain JavaScript on a canvas, nothing fetched from the network) pans and zooms the
map, colours it by cluster or by any catalog column, shows a galaxy's thumbnail on hover, and
on a click its id, cluster, confidence and nearest neighbours in latent space as thumbnails.

Files written::

    explorer.html                  the page
    explorer_files/data.js         positions, columns and neighbours of every galaxy
    explorer_files/sheet_NNNN.jpg  thumbnails, 256 to a sheet: a browser loads a sheet only
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
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
_LABEL_COLUMNS = ("cluster", "is_outlier")  # always categories
_MAX_LABELS = 500


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


def _categories(column: pd.Series, uniques: Any) -> dict[str, Any]:
    """A category column for the page: names in numeric order when they are numbers (cluster 2
    before 10), a cluster -1 (unclassified) and NaN as code -1, drawn grey."""

    def name_of(value: Any) -> str:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    def order(value: Any) -> tuple[int, float, str]:
        try:
            return (0, float(value), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(value))

    kept = sorted((u for u in uniques if name_of(u) != "-1"), key=order)
    names = [name_of(u) for u in kept]
    index = {n: i for i, n in enumerate(names)}
    codes = [index.get(name_of(v), -1) if pd.notna(v) else -1 for v in column]
    return {"kind": "category", "categories": names, "values": codes}


def _beside(path: Path, folder: Path) -> Path:
    """``path`` as the clustering recorded it (relative to where it ran), else found beside the
    clusters folder (the run folder moved, or the command runs from elsewhere)."""
    for candidate in (path, folder.parent / path, folder.parent / path.name):
        if candidate.exists():
            return candidate
    return path


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
        try:
            uniques = column.dropna().unique()
        except TypeError:  # lists or arrays in a cell: nothing to colour by
            continue
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        labels = name in _LABEL_COLUMNS  # whatever their count and dtype (NaN: not clustered)
        if labels or not numeric or (pd.api.types.is_integer_dtype(column) and len(uniques) <= 12):
            if not 1 <= len(uniques) <= (_MAX_LABELS if labels else _MAX_CATEGORIES):
                continue
            out[str(name)] = _categories(column, uniques)
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
        name = f"sheet_{start // per_sheet:04d}.jpg"  # a quarter of a PNG's size
        sheet.save(folder / name, quality=88)
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
    if not options.latents:
        latents_path = _beside(Path(latents_path), folder)
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
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{files.name}.", dir=output.parent))
    except OSError as exc:
        raise GalclustFileError(f"cannot write beside {output} ({exc.strerror})") from exc
    try:
        t = time.perf_counter()
        data_path = options.data or settings.get("data")
        if data_path and not options.data:
            data_path = str(_beside(Path(data_path), folder))
        images = Images(table, data_path)  # the latents' own files unless --data
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
            "x": [float(f"{v:.4g}") for v in xy[:, 0]],
            "y": [float(f"{v:.4g}") for v in xy[:, 1]],
            "columns": columns,
            "info": {
                name: [
                    None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
                    for v in frame[name]
                ]
                for name in ("cluster", "confidence", "is_outlier")
                if name in frame
            },
            "neighbours": neighbours,
            "thumbs": {
                "size": options.thumb_size,
                "per_row": PER_ROW,
                "sheets": [_url(f"{files.name}/{s}") for s in sheets],
            },
        }
        # a JSON string parsed at load: faster than a large object literal, and no text of the
        # data can end the script
        text = json.dumps(data, separators=(",", ":"))
        script = f"window.GALCLUST_DATA = JSON.parse({json.dumps(text)});\n"
        (staging / "data.js").write_text(script, encoding="utf-8")
        (staging / "explorer.js").write_text(_asset("explorer.js"), encoding="utf-8")
        _swap_in(staging, files)
        atomic_write_text(output, _page(title, files.name))
    except OSError as exc:
        raise GalclustFileError(
            f"cannot write the explorer {output} ({exc.strerror or exc}); free some space or "
            "choose another -o"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExplorerResult(
        output=output,
        points=len(ids),
        galaxies=len(table),
        columns=list(columns),
        missing_thumbnails=missing,
        seconds=time.perf_counter() - start,
        times=times,
    )


def _url(relative: str) -> str:
    """A relative URL for a file name: quoted (a '#', '?' or '%' stays part of the name) and
    starting with ./ (a name such as 'javascript:x' is never read as a scheme)."""
    return "./" + quote(relative)


def _swap_in(staging: Path, files: Path) -> None:
    """Put the new files folder in place of the old one; the old one is moved aside first and
    removed only once the new one is there, and only if galclust wrote it (it has data.js)."""
    old = None
    if files.exists():
        if not (files / "data.js").is_file():
            raise GalclustFileError(
                f"{files} exists and was not written by galclust explore; move it or choose "
                "another -o"
            )
        old = files.with_name(f".{files.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(files, old)
    os.replace(staging, files)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
        f'<script src="{esc(_url(files + "/data.js"))}"></script>'
        f'<script src="{esc(_url(files + "/explorer.js"))}"></script></body></html>\n'
    )
