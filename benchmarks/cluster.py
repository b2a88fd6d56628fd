"""Benchmark ``AutoCluster`` on 10k, 100k and 300k latents of 35 dimensions, and the 2-D map.

Latents are drawn from a mixture of 8 anisotropic Gaussians in 35 dimensions (stand-ins for VAE
latents of real galaxies). For each size the whole automatic clustering (scaling, choosing k over
2..30 on a subsample, the three-method consensus on everything, outliers) is timed, with the
chosen k and the ARI against the true components; then the UMAP map of 5,000 galaxies is timed
separately (first call includes numba's compilation). Peak memory (resident set) is printed.

Required here (2 cores): the automatic clustering of 300,000 x 35 in at most 60 s; with
``--million`` also 1,000,000 x 35, which must complete (time and memory reported). Peak memory
is that of the whole run so far, so the last size's is its own.

Run from the repository root::

    .venv/bin/python benchmarks/cluster.py            # about 3 minutes
    .venv/bin/python benchmarks/cluster.py --quick    # 10k only
    .venv/bin/python benchmarks/cluster.py --million  # and 1,000,000
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

from galclust.cluster import AutoCluster
from galclust.cluster.auto import make_umap


def mixture(n: int, dims: int = 35, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of ``k`` anisotropic Gaussian components with random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, dims))
    labels = rng.integers(0, k, n)
    scales = rng.uniform(0.5, 1.5, size=(k, dims))
    return centres[labels] + rng.normal(size=(n, dims)) * scales[labels], labels


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k galaxies only")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 galaxies")
    args = parser.parse_args()
    sizes = [10_000] if args.quick else [10_000, 100_000, 300_000]
    sizes += [1_000_000] if args.million else []
    print("automatic clustering (k chosen over 2..30, consensus, outliers), 35 dimensions")
    print(f"{'galaxies':>10} {'seconds':>8} {'k':>3} {'ARI':>6} {'peak MB':>8}")
    for n in sizes:
        X, y = mixture(n)
        start = time.perf_counter()
        model = AutoCluster().fit(X)
        seconds = time.perf_counter() - start
        ari = adjusted_rand_score(y, model.labels_)
        need = "  (need <= 60 s)" if n == 300_000 else ""
        print(f"{n:>10,} {seconds:8.1f} {model.n_clusters_:>3} {ari:6.3f} {peak_mb():8.0f}{need}")
    X, _ = mixture(5000)
    for call in ("first (numba compiles)", "second"):
        start = time.perf_counter()
        make_umap(2, 0).fit_transform(X)
        print(f"UMAP map of 5,000 galaxies, {call}: {time.perf_counter() - start:.1f} s")
    print(f"peak resident memory: {peak_mb():.0f} MB")


if __name__ == "__main__":
    main()
