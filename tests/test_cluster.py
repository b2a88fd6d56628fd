"""`galclust cluster` and `assign`: k from the data, confidence, outliers, evidence, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from galclust.cli import main
from galclust.cluster import (
    AutoCluster,
    ClusterOptions,
    assign,
    auto_cluster,
    cluster_latents,
    label_scores,
)
from galclust.cluster.auto import supported_dims
from galclust.exceptions import GalclustFileError, GalclustValueError


def blobs(n: int = 1200, k: int = 4, dims: int = 8, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n, n_features=dims, centers=k, cluster_std=1.0, random_state=seed)
    return X, y


def latents_file(path: Path, X: np.ndarray, **extra: object) -> Path:
    table = pd.DataFrame(X, columns=[f"z_{i}" for i in range(X.shape[1])])
    table.insert(0, "id_str", [f"g{i:05d}" for i in range(len(X))])
    for name, values in extra.items():
        table[name] = values
    table.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("k", [3, 6])
def test_true_k_of_separated_blobs_is_recovered(k: int) -> None:
    X, y = blobs(k=k, seed=k)
    model = AutoCluster(k_max=10).fit(X)
    assert model.n_clusters_ == k, model.choice_
    assert adjusted_rand_score(y, model.labels_) > 0.95
    assert list(model.scores_["k"]) == list(range(2, 11))
    assert f"k = {k}" in model.choice_
    assert np.median(model.confidence_) > 0.9


def test_sklearn_estimator_contract_and_function_twin() -> None:
    X, _ = blobs()
    model = AutoCluster(n_clusters=4, random_state=3)
    assert clone(model).get_params() == model.get_params()
    labels = model.fit_predict(X)
    np.testing.assert_array_equal(labels, model.labels_)
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    np.testing.assert_array_equal(auto_cluster(X, n_clusters=4, random_state=3).labels_, labels)
    assert model.scores_.empty and model.choice_ == "k = 4 was given"


def test_disagreement_lowers_confidence_and_can_be_unclassified() -> None:
    rng = np.random.default_rng(0)
    X, _ = blobs(k=3)
    between = rng.uniform(X.min(0), X.max(0), size=(60, X.shape[1]))  # scattered galaxies
    both = np.vstack([X, between])
    model = AutoCluster(n_clusters=3, min_confidence=0.9).fit(both)
    assert model.confidence_[: len(X)].mean() > model.confidence_[len(X) :].mean()
    assert (model.labels_ == -1).sum() > 0
    assert model.is_outlier_[len(X) :].mean() > model.is_outlier_[: len(X)].mean()


def test_hdbscan_marks_noise_as_outliers() -> None:
    X, y = blobs(n=600, k=3, dims=6)
    noise = np.random.default_rng(1).uniform(-40, 40, size=(30, 6))
    model = AutoCluster(method="hdbscan").fit(np.vstack([X, noise]))
    assert model.n_clusters_ == 3
    assert adjusted_rand_score(y, model.labels_[:600]) > 0.9
    flagged = np.flatnonzero(model.is_outlier_)
    assert len(flagged) and (flagged >= 600).mean() > 0.7  # outliers are the scattered points


def test_bad_latents() -> None:
    X, _ = blobs(n=20)
    X[[3, 7]] = np.nan
    with pytest.raises(
        GalclustValueError, match=r"2 galaxies have NaN or infinite latents \(3, 7\)"
    ):
        AutoCluster().fit(X)
    with pytest.raises(GalclustValueError, match="1 galaxy: clustering needs at least 2"):
        AutoCluster().fit(np.zeros((1, 4)))
    with pytest.warns(UserWarning, match="--k-max 30 is more than the 12 galaxies allow"):
        model = AutoCluster().fit(blobs(n=12, k=2)[0])
    assert model.n_clusters_ <= 11
    with pytest.raises(GalclustValueError, match="method 'dbscan'"):
        AutoCluster(method="dbscan").fit(blobs()[0])


def test_label_scores() -> None:
    truth = np.array(["a"] * 4 + ["b"] * 4)
    assert label_scores(truth, np.array([0] * 4 + [1] * 4)) == {
        "ari": 1.0, "nmi": 1.0, "purity": 1.0, "accuracy": 1.0,
    }  # fmt: skip
    split = label_scores(truth, np.arange(8))  # every galaxy its own cluster: pure but useless
    assert split["purity"] == 1.0 and split["accuracy"] == 0.25


@pytest.fixture
def clustered(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A latents table of 3 blobs whose 'images' are .npy files, and a labels catalog."""
    X, y = blobs(n=300, k=3, dims=6)
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    locs = []
    for i, label in enumerate(y):
        image = rng.normal(size=(3, 16, 16)).astype(np.float32)
        image[:, 4:12, 4:12] += 5 * (label + 1)  # the pixels know the class too
        locs.append(str(folder / f"g{i:05d}.npy"))
        np.save(locs[-1], image)
    latents = latents_file(tmp_path / "latents.parquet", X, file_loc=locs)
    names = np.array(["elliptical", "spiral", "edge_on"])[y].astype(object)
    names[:10] = None  # missing labels are ignored and counted
    catalog = pd.DataFrame({"id_str": [f"g{i:05d}" for i in range(300)], "family": names})
    catalog.to_csv(tmp_path / "labels.csv", index=False)
    return latents, tmp_path / "labels.csv", y


def test_cluster_command_writes_tables_figures_and_scores(
    clustered: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    latents, labels, y = clustered
    out = tmp_path / "out"
    options = ClusterOptions(str(latents), str(out), k_max=6, labels=f"{labels}:family", map="pca")
    with pytest.warns(UserWarning, match="10 have no label"):
        report = cluster_latents(options)
    table = pd.read_parquet(out / "clusters.parquet")
    assert list(table.columns) == ["id_str", "cluster", "confidence", "is_outlier", "distance"]
    assert adjusted_rand_score(y, table["cluster"]) > 0.95
    for name in ("summary.json", "model.joblib", "scores_vs_k.png", "map.png", "overview.png",
                 "gallery/cluster_00.png", "confusion.png", "confusion_baseline.png"):  # fmt: skip
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == 3 and len(summary["scores_per_k"]) == 5
    assert [c["cluster"] for c in summary["clusters"]] == [0, 1, 2]
    assert all(0 <= c["mean_confidence"] <= 1 for c in summary["clusters"])
    assert summary["label_counts"] == {"labelled": 290, "missing_label": 10, "not_in_labels": 0}
    scores = summary["label_scores"]
    assert scores["galclust"]["ari"] > 0.95 and "pixel_baseline" in scores
    assert "ARI" in report.text()
    # new galaxies go to the same clusters
    again = assign(out / "model.joblib", latents)
    np.testing.assert_array_equal(again["cluster"], table["cluster"])


def test_labels_that_match_nothing(
    clustered: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    latents, _, _ = clustered
    pd.DataFrame({"id_str": ["x1", "x2"], "family": ["a", "b"]}).to_csv(tmp_path / "other.csv")
    options = ClusterOptions(
        str(latents), str(tmp_path / "o"), labels=f"{tmp_path}/other.csv:family"
    )
    with pytest.raises(GalclustValueError, match="none of the 300 galaxies has a label there"):
        cluster_latents(options)
    options = ClusterOptions(str(latents), str(tmp_path / "o"), labels=f"{tmp_path}/other.csv:kind")
    with pytest.raises(GalclustValueError, match="needs id_str and 'kind' columns"):
        cluster_latents(options)


def test_repeated_rows_are_dropped_with_a_warning(tmp_path: Path) -> None:
    X, _ = blobs(n=200, k=2)
    path = latents_file(tmp_path / "z.parquet", np.vstack([X, X[:5]]))
    table = pd.read_parquet(path)
    table.loc[200:, "id_str"] = table["id_str"].iloc[:5].to_numpy()
    table.to_parquet(path, index=False)
    with pytest.warns(UserWarning, match="5 repeated rows of the same galaxies dropped"):
        report = cluster_latents(ClusterOptions(str(path), str(tmp_path / "o"), k=2, map="pca"))
    assert len(report.table) == 200


def test_cli_cluster_and_assign(clustered: tuple[Path, Path, np.ndarray], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    latents, _, _ = clustered
    out = tmp_path / "c"
    assert main(["cluster", str(latents), "-o", str(out), "--k", "3", "--map", "pca"]) == 0
    assert "300 galaxies in 3 clusters" in capsys.readouterr().out
    assert (out / "provenance.json").is_file()
    assert (
        main(["assign", str(out / "model.joblib"), str(latents), "-o", str(tmp_path / "a.csv")])
        == 0
    )
    assert len(pd.read_csv(tmp_path / "a.csv")) == 300
    wide = latents_file(tmp_path / "wide.parquet", np.zeros((4, 9)))
    assert main(["assign", str(out / "model.joblib"), str(wide)]) == 2
    assert "9 latent dimensions, the model 6" in capsys.readouterr().err
    assert main(["cluster", str(tmp_path / "missing.parquet")]) == 2
    with pytest.raises(GalclustFileError, match="not a readable galclust cluster model"):
        assign(latents, latents)


def test_whitening_can_keep_only_the_leading_components() -> None:
    X, _ = blobs(n=400, k=3, dims=8)
    X[:, 7] = 1.0  # a constant latent is dropped, never magnified
    every = AutoCluster(n_clusters=3).fit(X)
    assert every.keep_.sum() == 7
    leading = AutoCluster(n_clusters=3, variance=0.5).fit(X)
    assert 1 <= leading.keep_.sum() < 7
    assert leading.transform_latents(X).shape == (400, leading.keep_.sum())


def test_few_galaxies_keep_only_the_dimensions_a_mixture_can_fit() -> None:
    assert [supported_dims(n) for n in (10, 600, 3000, 5000)] == [1, 14, 33, 43]
    X, y = blobs(n=300, k=3, dims=35)
    model = AutoCluster(n_clusters=3).fit(X)
    assert model.keep_.sum() == supported_dims(300) < 35
    assert adjusted_rand_score(y, model.labels_) > 0.95


def test_unstable_best_k_falls_back_to_a_coarser_stable_one() -> None:
    scores = pd.DataFrame({"k": [2, 3, 4, 5, 6], "bic": [50.0, 40, 30, 10, 20],
                           "silhouette": 0.5, "stability": [0.9, 0.8, 0.7, 0.4, 0.95]})  # fmt: skip
    k, _, why = AutoCluster()._choose(scores, 2, 6)
    assert k == 4 and "stable smaller" in why  # never the finer, stable k = 6
    scores["stability"] = [0.1, 0.1, 0.1, 0.4, 0.95]
    k, _, why = AutoCluster()._choose(scores, 2, 6)
    assert k == 5 and "caution" in why


def test_one_new_galaxy_is_assigned_and_labels_may_repeat_ids(
    clustered: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    latents, labels, _ = clustered
    out = tmp_path / "c"
    catalog = pd.read_csv(labels)
    pd.concat([catalog, catalog.head(3)]).to_csv(tmp_path / "twice.csv", index=False)
    options = ClusterOptions(str(latents), str(out), k=3, map="pca",
                             labels=f"{tmp_path / 'twice.csv'}:family")  # fmt: skip
    with pytest.warns(UserWarning, match="10 have no label"):
        cluster_latents(options)
    one = latents_file(
        tmp_path / "one.parquet", pd.read_parquet(latents).filter(like="z_").head(1).to_numpy()
    )
    assert len(assign(out / "model.joblib", one)) == 1
