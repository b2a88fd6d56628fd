"""``galclust cluster`` and ``galclust assign``: cluster a latents table and show the evidence.

``cluster LATENTS -o DIR`` writes::

    clusters.parquet     id_str, cluster (-1: unclassified/noise), confidence, is_outlier, distance
    summary.json         method, chosen k and why, scores per k, sizes, label scores, settings
    model.joblib         the fitted AutoCluster, for galclust assign
    scores_vs_k.png      BIC, silhouette and stability against k
    map.png              2-D map (UMAP) of the latents coloured by cluster
    overview.png         one row per cluster: its most typical galaxies
    gallery/cluster_NN.png   typical (closest to the centre) and random members of each cluster
    confusion.png        with --labels: labels against clusters, for galclust and the baseline
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from galclust.catalog.schema import atomic_write, atomic_write_text, read_catalog, write_catalog
from galclust.cluster.auto import UNCLASSIFIED, AutoCluster, check_latents, make_umap
from galclust.cluster.evaluate import confusion, label_scores, pixel_baseline
from galclust.cluster.figures import (
    cluster_map,
    confusion_matrix,
    gallery,
    scores_against_k,
    thumbnail,
)
from galclust.data.dataset import ImageDataset, open_source
from galclust.exceptions import GalclustFileError, GalclustValueError

log = logging.getLogger(__name__)

_BASELINE_SAMPLE = 3000


@dataclass(frozen=True)
class ClusterOptions:
    """Everything that decides a clustering run; saved in ``summary.json``."""

    latents: str
    output: str
    method: str = "auto"
    k: int | None = None
    k_min: int = 2
    k_max: int = 30
    scaling: str = "whiten"
    variance: float = 1.0
    min_confidence: float = 0.0
    labels: str | None = None  # CATALOG:COLUMN
    data: str | None = None
    map: str = "umap"
    map_sample: int = 5000
    gallery_size: int = 8
    seed: int = 0


@dataclass
class ClusterReport:
    """What ``cluster`` found."""

    output: Path
    model: AutoCluster
    table: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        sizes = self.summary["sizes"]
        lines = [
            f"{len(self.table)} galaxies in {self.model.n_clusters_} clusters "
            f"({self.summary['seconds']['fit']:.1f} s): {self.model.choice_}",
            "sizes: " + ", ".join(f"{c}: {n}" for c, n in sizes.items()),
            f"{self.summary['outliers']} outliers, {self.summary['unclassified']} unclassified",
        ]
        for name in ("galclust", "pixel_baseline"):
            scores = self.summary.get("label_scores", {}).get(name)
            if scores:
                lines.append(
                    f"against {self.summary['label_column']} ({name}): ARI {scores['ari']:.3f}, "
                    f"NMI {scores['nmi']:.3f}, purity {scores['purity']:.3f}, "
                    f"accuracy {scores['accuracy']:.3f}"
                )
        return "\n".join(lines)


def read_latents(
    path: str | os.PathLike[str], *, at_least: int = 2
) -> tuple[pd.DataFrame, np.ndarray]:
    """The table written by ``galclust embed`` and its (n, d) latent matrix ``z_0..``.

    Repeated rows of one galaxy are dropped with a warning (the first is kept).
    """
    path = Path(path)
    if not path.is_file():
        raise GalclustFileError(f"latents table {path} not found; make one with galclust embed")
    table = read_catalog(path, validate=False)
    columns = sorted(
        (c for c in table.columns if c.startswith("z_") and c[2:].isdigit()),
        key=lambda c: int(c[2:]),
    )
    if "id_str" not in table or not columns:
        raise GalclustValueError(
            f"{path} has no id_str and z_0, z_1, ... columns; give a table from galclust embed"
        )
    repeated = table["id_str"].duplicated()
    if repeated.any():
        warnings.warn(
            f"{path}: {int(repeated.sum())} repeated rows of the same galaxies dropped (e.g. "
            f"{table.loc[repeated, 'id_str'].iloc[0]}); the first of each is kept",
            stacklevel=2,
        )
        table = table[~repeated]
    table = table.reset_index(drop=True)
    X = check_latents(
        table[columns].to_numpy(np.float64), table["id_str"].to_numpy(), at_least=at_least
    )
    return table, X


def read_labels(spec: str, ids: pd.Series) -> tuple[str, pd.Series, dict[str, int]]:
    """Labels ``CATALOG:COLUMN`` for ``ids`` (NaN where missing) and what was left out."""
    if ":" not in spec:
        raise GalclustValueError(f"--labels {spec!r}: give CATALOG:COLUMN, e.g. sims:family")
    path, column = spec.rsplit(":", 1)
    source = Path(path)
    catalog = read_catalog(
        source / "catalog.parquet" if source.is_dir() else source, validate=False
    )
    if "id_str" not in catalog or column not in catalog:
        have = ", ".join(str(c) for c in catalog.columns[:12])
        raise GalclustValueError(
            f"--labels {spec}: {path} needs id_str and {column!r} columns (it has {have})"
        )
    unique = catalog.drop_duplicates("id_str")
    labels = unique.set_index(unique["id_str"].astype(str))[column]
    matched = ids.astype(str).map(labels)
    known = matched.notna()
    counts = {
        "labelled": int(known.sum()),
        "missing_label": int(ids.astype(str).isin(labels.index).sum() - known.sum()),
        "not_in_labels": int((~ids.astype(str).isin(labels.index)).sum()),
    }
    if not counts["labelled"]:
        raise GalclustValueError(
            f"--labels {spec}: none of the {len(ids)} galaxies has a label there (ids such as "
            f"{ids.iloc[0]!r} do not match {labels.index[0]!r}); use the catalog the latents "
            "came from"
        )
    if counts["missing_label"] or counts["not_in_labels"]:
        warnings.warn(
            f"--labels {spec}: scored on the {counts['labelled']} labelled galaxies; "
            f"{counts['missing_label']} have no label and {counts['not_in_labels']} are not in "
            "the catalog",
            stacklevel=2,
        )
    return column, matched, counts


class Images:
    """Pixels of galaxies by id: from ``--data`` or from the latents' own ``file_loc``."""

    def __init__(self, table: pd.DataFrame, data: str | None) -> None:
        rows = open_source(data).catalog if data else table
        if "file_loc" not in rows:
            self.rows = None
            return
        self.rows = rows.drop_duplicates("id_str").set_index(rows["id_str"].astype(str))
        self.reader = ImageDataset(self.rows, None)
        self.position = {id_: i for i, id_ in enumerate(self.rows.index)}

    def get(self, ids: Any) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for id_ in ids:
            i = self.position.get(str(id_)) if self.rows is not None else None
            try:
                out.append(None if i is None else self.reader.pixels(i))
            except (OSError, ValueError):
                out.append(None)
        return out


def make_map(Z: np.ndarray, how: str, seed: int) -> np.ndarray:
    if Z.shape[1] < 2:  # one dimension: spread along y by rank, for a readable strip
        return np.column_stack([Z[:, 0], np.argsort(np.argsort(Z[:, 0])) / max(1, len(Z) - 1)])
    if how == "pca" or len(Z) < 16:
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(Z)  # type: ignore[no-any-return]
    if how != "umap":
        raise GalclustValueError(f"--map {how!r}: choose umap or pca")
    return make_umap(2, seed).fit_transform(Z)  # type: ignore[no-any-return]


def cluster_latents(options: ClusterOptions) -> ClusterReport:
    """Cluster the latents of ``options.latents`` into ``options.output`` (module docstring)."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    table, X = read_latents(options.latents)
    out = Path(options.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GalclustFileError(f"cannot write in {out} ({exc.strerror})") from exc
    ids = table["id_str"].astype(str)
    label_column, truth, label_counts = (
        read_labels(options.labels, ids) if options.labels else (None, None, {})
    )
    if options.map_sample < 1 or options.gallery_size < 1:
        raise GalclustValueError(
            f"--map-sample {options.map_sample} and gallery size {options.gallery_size} must be "
            "at least 1"
        )
    model = AutoCluster(
        method=options.method,
        n_clusters=options.k,
        k_min=options.k_min,
        k_max=options.k_max,
        scaling=options.scaling,
        variance=options.variance,
        min_confidence=options.min_confidence,
        random_state=options.seed,
    ).fit(X)
    times["fit"] = time.perf_counter() - t
    result = pd.DataFrame(
        {
            "id_str": ids,
            "cluster": model.labels_,
            "confidence": model.confidence_,
            "is_outlier": model.is_outlier_,
            "distance": model.distance_,
        }
    )
    write_catalog(result, out / "clusters.parquet")
    atomic_write(out / "model.joblib", lambda tmp: _dump(model, tmp))
    if len(model.scores_):
        scores_against_k(model.scores_, model.n_clusters_, out / "scores_vs_k.png")

    t = time.perf_counter()
    rng = np.random.default_rng(options.seed)
    Z = model.transform_latents(X)
    shown = np.sort(rng.choice(len(Z), min(len(Z), options.map_sample), replace=False))
    xy = make_map(Z[shown], options.map, options.seed)
    cluster_map(
        xy,
        model.labels_[shown],
        out / "map.png",
        title=f"{len(shown)} of {len(Z)} galaxies, {options.map.upper()} of the latents",
    )
    times["map"] = time.perf_counter() - t

    t = time.perf_counter()
    images = Images(table, options.data)
    _galleries(model, result, images, out, options.gallery_size, rng)
    times["galleries"] = time.perf_counter() - t

    summary: dict[str, Any] = {
        "method": options.method,
        "k": model.n_clusters_,
        "choice": model.choice_,
        "scores_per_k": model.scores_.to_dict(orient="records"),
        "sizes": {str(c): int(n) for c, n in result["cluster"].value_counts().sort_index().items()},
        "clusters": per_cluster(result),
        "outliers": int(result["is_outlier"].sum()),
        "unclassified": int((result["cluster"] == UNCLASSIFIED).sum()),
        "galaxies": len(result),
        "dimensions": int(X.shape[1]),
        "settings": asdict(options),
        "seconds": times,
    }
    if truth is not None:
        summary.update(_score_labels(model, result, truth, images, out, options, label_column))
        summary["label_counts"] = label_counts
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    return ClusterReport(out, model, result, summary)


def per_cluster(result: pd.DataFrame) -> list[dict[str, Any]]:
    """Size, mean and lowest-decile confidence, and outlier share of each cluster (-1 included)."""
    groups = result.groupby("cluster")
    return [
        {
            "cluster": int(str(c)),
            "size": len(g),
            "mean_confidence": float(g["confidence"].mean()),
            "confidence_p10": float(g["confidence"].quantile(0.1)),
            "outlier_share": float(g["is_outlier"].mean()),
        }
        for c, g in groups
    ]


def _dump(model: AutoCluster, path: Path) -> None:
    import joblib

    joblib.dump(model, path)


def _galleries(
    model: AutoCluster,
    result: pd.DataFrame,
    images: Images,
    out: Path,
    size: int,
    rng: np.random.Generator,
) -> None:
    if images.rows is None:
        log.info("no image locations (file_loc) known: galleries skipped; pass --data")
        return
    overview = []
    (out / "gallery").mkdir(exist_ok=True)
    for c in range(model.n_clusters_):
        members = result[result["cluster"] == c]
        if members.empty:
            continue
        typical = members.nsmallest(size, "distance")["id_str"]
        random = members["id_str"].iloc[
            np.sort(rng.choice(len(members), min(size, len(members)), replace=False))
        ]
        pictures = [
            [thumbnail(p) for p in images.get(group) if p is not None]
            for group in (typical, random)
        ]
        label = f"cluster {c}\n{len(members)} galaxies"
        gallery(
            [("most typical", pictures[0]), ("random", pictures[1])],
            out / "gallery" / f"cluster_{c:02d}.png",
            title=label.replace("\n", ": "),
        )
        overview.append((label, pictures[0]))
    if overview:
        gallery(overview, out / "overview.png", title="most typical galaxies of each cluster")


def _score_labels(
    model: AutoCluster,
    result: pd.DataFrame,
    truth: pd.Series,
    images: Images,
    out: Path,
    options: ClusterOptions,
    column: str | None,
) -> dict[str, Any]:
    known = truth.notna().to_numpy()
    labels = truth[known].astype(str).to_numpy()
    clusters = result["cluster"].to_numpy()[known]
    scores = {"galclust": label_scores(labels, clusters)}
    confusion_matrix(
        confusion(labels, clusters),
        out / "confusion.png",
        title=f"{column} against galclust clusters",
    )
    rng = np.random.default_rng(options.seed)
    picked = np.flatnonzero(known)
    picked = np.sort(rng.choice(picked, min(len(picked), _BASELINE_SAMPLE), replace=False))
    pixels = images.get(result["id_str"].iloc[picked]) if images.rows is not None else []
    usable = [i for i, p in enumerate(pixels) if p is not None]
    shapes = {pixels[i].shape for i in usable}  # type: ignore[union-attr]
    if len(usable) > model.n_clusters_ and len(shapes) == 1:
        stack = np.stack([pixels[i] for i in usable]).astype(np.float32)  # type: ignore[misc]
        base = pixel_baseline(stack, max(1, model.n_clusters_), options.seed)
        base_truth = truth.iloc[picked[usable]].astype(str).to_numpy()
        scores["pixel_baseline"] = label_scores(base_truth, base)
        scores["galclust_same_galaxies"] = label_scores(
            base_truth, result["cluster"].to_numpy()[picked[usable]]
        )
        confusion_matrix(
            confusion(base_truth, base),
            out / "confusion_baseline.png",
            title=f"{column} against raw-pixel PCA + k-means",
        )
    else:
        log.info("raw-pixel baseline skipped: images not readable or not all of one shape")
    return {"label_column": column, "label_scores": scores}


def load_cluster_model(model_path: str | os.PathLike[str]) -> AutoCluster:
    """The fitted :class:`AutoCluster` saved by ``galclust cluster`` (``DIR/model.joblib``).

    Raises
    ------
    GalclustFileError
        No file there, or not a readable model.
    GalclustValueError
        A readable file that is not a galclust cluster model.
    """
    import joblib

    path = Path(model_path)
    if not path.is_file():
        raise GalclustFileError(f"model {path} not found; give DIR/model.joblib from cluster")
    try:
        model = joblib.load(path)
    except Exception as exc:  # joblib raises many kinds for a file that is not a model
        raise GalclustFileError(f"{path} is not a readable galclust cluster model ({exc})") from exc
    if not isinstance(model, AutoCluster):
        raise GalclustValueError(f"{path} is not a galclust cluster model")
    return model


def assign(
    model_path: str | os.PathLike[str],
    latents: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Put the galaxies of a new latents table into the clusters of a saved model."""
    model = load_cluster_model(model_path)
    table, X = read_latents(latents, at_least=1)
    if X.shape[1] != model.n_features_in_:
        raise GalclustValueError(
            f"{latents} has {X.shape[1]} latent dimensions, the model {model.n_features_in_}; "
            "embed with the same checkpoint as the clustered galaxies"
        )
    result = model.assign(X)
    result.insert(0, "id_str", table["id_str"].astype(str).to_numpy())
    if output is not None:
        write_catalog(result, output)
    return result
