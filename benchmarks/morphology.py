"""Do galclust's clusters mean morphology on real galaxies? Every representation side by side.

Data: the 600 Galaxy Zoo 1 SDSS galaxies of ``shared/data/gz1-sdss-dev`` (200 elliptical,
200 edge-on disc, 200 spiral) plus the 160 DECaLS PNGs of ``decals-rings-sample``, labels
unused for training. Models are trained on all 760 and the 600 labelled ones are embedded and
clustered. Printed for each representation, in one table:

- ``k``: clusters (3 = the number of classes, or chosen automatically by galclust's AutoCluster);
- NMI, ARI, purity against the three labels;
- ``kNN``: 5-fold accuracy of a 10-nearest-neighbour vote in the representation, how much of
  the labels the representation holds at all (a supervised yardstick, not a clustering score);
- training time.

It also prints a supervised yardstick: an RBF SVM trained on the labels (5-fold) on the framed
pixels, which shows how much of the labels the images hold at this resolution (0.78 measured;
the labels come from volunteer votes with unstated thresholds, and many disagree with the
image: inclined discs called edge-on or spiral, bluish discs called elliptical).

Representations: raw pixels (PCA 50) as the baseline; the reference VAE (64 px, latent 35,
whole field resized, as in the study); galaxy-framed pixels (PCA 10, no training: what the
preprocessing alone gives); the reference VAE on galaxy-framed images; the contrastive encoder
on galaxy-framed images (the new default path).

Goal (issue 9): with k chosen automatically, purity >= 0.8 and NMI >= 0.3; contrastive training
on the 760 galaxies in at most 30 minutes on this 2-core CPU.

Run from the repository root::

    .venv/bin/python benchmarks/morphology.py                 # about 15 minutes
    .venv/bin/python benchmarks/morphology.py --quick         # few epochs, a smoke run
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

from galclust.cluster import AutoCluster
from galclust.cluster.evaluate import label_scores
from galclust.data.dataset import open_source, preload
from galclust.data.transforms import Preprocess
from galclust.embed import embed
from galclust.train import TrainOptions, train_vae

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def catalogs(work: Path) -> tuple[Path, Path, np.ndarray]:
    """The training catalog (760 galaxies), the labelled one (600) and its labels."""
    gz = pd.read_csv(SHARED / "gz1-sdss-dev" / "catalog.csv")
    gz["file_loc"] = [str(SHARED / "gz1-sdss-dev" / loc) for loc in gz["file_loc"]]
    decals = pd.read_csv(SHARED / "decals-rings-sample" / "catalog.csv")
    decals["file_loc"] = [str(SHARED / "decals-rings-sample" / loc) for loc in decals["file_loc"]]
    both = pd.concat([gz[["id_str", "file_loc"]], decals[["id_str", "file_loc"]]])
    both.to_csv(work / "train.csv", index=False)
    gz[["id_str", "file_loc", "label"]].to_csv(work / "labelled.csv", index=False)
    return work / "train.csv", work / "labelled.csv", gz["label"].to_numpy(dtype=str)


def pixels(catalog: Path, preprocess: Preprocess) -> np.ndarray:
    """Every image of ``catalog`` prepared by ``preprocess``, flattened."""
    source = open_source(catalog)
    data = source.dataset(preprocess, channels=3)
    memory, _ = preload(data, 2)  # type: ignore[arg-type]
    return memory.images.reshape(len(memory), -1).numpy()


def scores(name: str, Z: np.ndarray, labels: np.ndarray, seconds: float) -> list[dict[str, object]]:
    Z = np.asarray(Z, np.float64)
    knn = cross_val_score(KNeighborsClassifier(10), (Z - Z.mean(0)) / (Z.std(0) + 1e-9), labels,
                          cv=5).mean()  # fmt: skip
    rows = []
    three = KMeans(3, n_init=10, random_state=0).fit_predict(Z)  # as the study: on mu itself
    auto = AutoCluster(random_state=0).fit(Z)
    for k, clusters in (("3 (k-means)", three), (f"{auto.n_clusters_} (auto)", auto.labels_)):
        s = label_scores(labels, clusters)
        rows.append({"representation": name, "k": k, "nmi": s["nmi"], "ari": s["ari"],
                     "purity": s["purity"], "kNN": knn, "train s": seconds})  # fmt: skip
    print(pd.DataFrame(rows).to_string(index=False, header=False, float_format="%.3f"), flush=True)
    return rows


def ceiling(Z: np.ndarray, labels: np.ndarray) -> float:
    """5-fold accuracy of an RBF SVM trained on the labels: how far the labels can be told
    apart from these inputs at all, a bound for what unsupervised clusters can reach."""
    Z = (Z - Z.mean(0)) / Z[:, 0].std()  # one scale for all components: keeps PCA's weighting
    return float(cross_val_score(SVC(C=1.0), Z, labels, cv=5).mean())


def latents(table: pd.DataFrame) -> np.ndarray:
    return table[[c for c in table if c.startswith("z_")]].to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs each: a smoke run")
    parser.add_argument("--vae-epochs", type=int, default=12)
    parser.add_argument("--contrastive-epochs", type=int, default=60)
    parser.add_argument("--work", help="keep runs here (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    vae_epochs = 2 if args.quick else args.vae_epochs
    contrastive_epochs = 2 if args.quick else args.contrastive_epochs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        train, labelled, labels = catalogs(work)
        rows: list[dict[str, object]] = []

        raw = pixels(labelled, Preprocess(32, mode="resize"))
        rows += scores("raw pixels, PCA 50", PCA(50, random_state=0).fit_transform(raw), labels, 0)
        framed = pixels(labelled, Preprocess(64, frame="galaxy"))
        rows += scores("galaxy-framed pixels, PCA 10",
                       PCA(10, random_state=0).fit_transform(framed), labels, 0)  # fmt: skip
        supervised = ceiling(PCA(20, random_state=0).fit_transform(framed), labels)

        common = {"workers": 2, "progress": False, "overwrite": True, "image_size": 64}
        for name, extra, epochs in (
            ("reference VAE (field)", {"mode": "resize", "frame": "field"}, vae_epochs),
            ("reference VAE (galaxy frame)", {"frame": "galaxy"}, vae_epochs),
            ("contrastive (galaxy frame)", {"frame": "galaxy", "model": "contrastive",
             "latent_dim": 32, "lr": 2e-3, "batch_size": 128}, contrastive_epochs),
        ):  # fmt: skip
            run = work / name.split()[0] / str(extra.get("frame", "field"))
            options = TrainOptions(str(train), str(run), epochs=epochs, **common, **extra)  # type: ignore[arg-type]
            start = time.perf_counter()
            train_vae(options)
            seconds = time.perf_counter() - start
            table, _ = embed(run / "checkpoints" / "best.ckpt", labelled, recon_error=False)
            rows += scores(name, latents(table), labels, seconds)

        print("\nrepresentation, k, NMI, ARI, purity, kNN accuracy, training seconds")
        print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"))
        print(f"\nsupervised yardstick: an RBF SVM trained on the labels (5-fold) reaches "
              f"{supervised:.3f} on galaxy-framed pixels (PCA 20)")  # fmt: skip


if __name__ == "__main__":
    main()
