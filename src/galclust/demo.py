"""``galclust demo``: every stage end to end on DECaLS-like galaxies simulated here with GalSim.

The run folder has the layout of a run on your own data, so it doubles as a worked example::

    DIR/sims/               galclust simulate: images.npy, catalog.parquet (truth, family, split)
    DIR/cutouts/            the simulated galaxies as FITS cutouts, some of another size and
                            three broken files, as real survey folders have
    DIR/catalog.parquet     galclust scan --shape 3,64,64, with catalog.txt, catalog.rejected.txt
    DIR/store/              galclust pack: galaxy-framed images, decoded once for training
    DIR/sweep/              galclust sweep: one short VAE per latent size, loss curves together
    DIR/vae/                galclust train vae at the chosen latent size
    DIR/latents.parquet     galclust embed: one latent vector per galaxy
    DIR/clusters/           galclust cluster --labels sims:family: galleries, map, label scores
    DIR/explorer.html       galclust explore: the map of every galaxy, thumbnails, neighbours
    DIR/regressor/          galclust train regressor --targets mag_r: metrics, plots
    DIR/report.html         galclust report DIR

Every stage writes its provenance; rerunning the demo into the same folder starts afresh.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from astropy.io import fits

from galclust.catalog.scan import ScanOptions, scan_catalog
from galclust.cluster import ClusterOptions, cluster_latents
from galclust.data.pack import PackOptions, pack
from galclust.embed import embed
from galclust.provenance import now, write_provenance
from galclust.regress import RegressorOptions, train_regressor
from galclust.report import build_report
from galclust.report.explorer import ExploreOptions, build_explorer
from galclust.simulate import SimulateOptions, simulate
from galclust.train import TrainOptions, choose_latent_dim, sweep, train_vae

_SIZE = 64
_ODD_SIZE = 80  # every 10th cutout: rejected by --shape 3,64,64, as in a real folder
T = TypeVar("T")


@dataclass(frozen=True)
class DemoPlan:
    """How big each stage of the demo is."""

    galaxies: int
    latent_dims: tuple[int, ...]
    sweep_epochs: int
    vae_epochs: int
    regressor_epochs: int
    baseline: int  # test galaxies also measured by the Sersic fit
    map: str

    @classmethod
    def make(cls, quick: bool) -> DemoPlan:
        if quick:  # about 2 minutes on 2 cores: for tests and a first look
            return cls(300, (2, 8), 1, 2, 2, 3, "pca")
        return cls(3000, (4, 8, 16, 32), 3, 12, 8, 20, "umap")


def write_cutouts(folder: Path, images: np.ndarray, ids: list[str], seed: int) -> int:
    """Write ``images`` (N, 3, H, W) as FITS cutouts named by ``ids``; every 10th is padded
    with sky noise to 80x80 pixels (another shape), and three broken files are added. Returns
    the number of files written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pad = (_ODD_SIZE - _SIZE) // 2
    for i, (image, name) in enumerate(zip(images, ids, strict=True)):
        data = np.asarray(image, np.float32)
        if i % 10 == 9:
            sigma = data[:, :4].std(axis=(1, 2))[:, None, None]
            canvas = rng.standard_normal((3, _ODD_SIZE, _ODD_SIZE)).astype(np.float32) * sigma
            canvas[:, pad : pad + _SIZE, pad : pad + _SIZE] = data
            data = canvas
        header = fits.Header({"BUNIT": "nanomaggy", "PIXSCALE": 0.262, "BANDS": "g,r,z"})
        fits.PrimaryHDU(data, header=header).writeto(folder / f"{name}.fits", overwrite=True)
    broken = folder / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "notes.fits").write_text("observing notes, not a FITS file\n")
    (broken / "empty.fits").write_bytes(b"")
    good = (folder / f"{ids[0]}.fits").read_bytes()
    (broken / "cut.fits").write_bytes(good[: len(good) // 2])
    return len(ids) + 3


class _Stages:
    """Runs numbered stages, each timed and with its provenance, and prints one line each."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.seconds: dict[str, float] = {}

    def run(
        self,
        name: str,
        output: Path,
        work: Callable[[], T],
        options: Any,
        results: Callable[[T], Mapping[str, Any]] | None = None,
    ) -> T:
        start, started = time.perf_counter(), now()
        value = work()
        write_provenance(
            output,
            command=name,
            options=options,
            started=started,
            results=dict(results(value)) if results else None,
        )
        self.done += 1
        self.seconds[name] = time.perf_counter() - start
        print(f"[{self.done}/{self.total}] {name}: {self.seconds[name]:.1f} s -> {output}")
        return value


def run_demo(output: str | Path, *, quick: bool = False, seed: int = 0) -> Path:
    """Run the demo into ``output`` and return the folder.

    Parameters
    ----------
    output : path
        Run folder; created if needed, its stage folders replaced.
    quick : bool, default False
        A smaller run (300 galaxies, one-epoch models; about 2 minutes on 2 cores).
    seed : int, default 0
        Random seed of the simulated galaxies and of every model.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    plan = DemoPlan.make(quick)
    stages = _Stages(11)
    start = time.perf_counter()

    sims = out / "sims"
    sim_options = SimulateOptions(
        n=plan.galaxies, output=str(sims), size=_SIZE, seed=seed, workers=2, overwrite=True
    )
    simulated = stages.run("simulate", sims, lambda: simulate(sim_options), sim_options,
                           lambda r: {"galaxies": len(r.catalog)})  # fmt: skip
    catalog = simulated.catalog

    def cutouts() -> int:
        shutil.rmtree(out / "cutouts", ignore_errors=True)
        images = np.load(sims / "images.npy", mmap_mode="r")
        return write_cutouts(out / "cutouts", images, list(catalog["id_str"]), seed)

    stages.run("demo: cutouts", out / "cutouts", cutouts, {"size": _SIZE, "odd": _ODD_SIZE},
               lambda n: {"files": n})  # fmt: skip

    scan_options = ScanOptions(
        roots=(str(out / "cutouts"),), output=str(out / "catalog.parquet"), shape=(3, _SIZE, _SIZE)
    )
    scanned = stages.run("scan", out / "catalog.parquet", lambda: scan_catalog(scan_options),
                         scan_options, lambda r: {"counts": r.counts})  # fmt: skip
    print(scanned.summary())

    # framed on each galaxy (the default): measured to double the agreement of the clusters
    # with the simulated families, and to lift it on real Galaxy Zoo galaxies
    pack_options = PackOptions(str(out / "catalog.parquet"), str(out / "store"), workers=2,
                               overwrite=True)  # fmt: skip
    stages.run("pack", out / "store", lambda: pack(pack_options), pack_options,
               lambda r: {"count": r.count})  # fmt: skip

    def vae_options(folder: str, latent_dim: int, epochs: int) -> TrainOptions:
        # one device: on a multi-GPU node Lightning would start one process per GPU by running
        # the whole demo again in each
        return TrainOptions(source=str(out / "store"), output=folder, latent_dim=latent_dim,
                            epochs=epochs, batch_size=32, workers=0, seed=seed, devices="1",
                            overwrite=True, progress=False)  # fmt: skip

    sweep_options = vae_options(str(out / "sweep"), plan.latent_dims[0], plan.sweep_epochs)
    swept = stages.run("sweep", out / "sweep", lambda: sweep(sweep_options, plan.latent_dims),
                       {"options": sweep_options, "latent_dims": plan.latent_dims},
                       lambda r: {"final_val_loss": r.final_val_loss})  # fmt: skip
    chosen = choose_latent_dim(swept.final_val_loss)
    print(f"{swept.summary()}; chosen latent size: {chosen}")

    train_options = vae_options(str(out / "vae"), chosen, plan.vae_epochs)
    trained = stages.run("train vae", out / "vae", lambda: train_vae(train_options),
                         train_options)  # fmt: skip
    print(trained.summary())

    checkpoint = out / "vae" / "checkpoints" / "best.ckpt"
    stages.run(
        "embed", out / "latents.parquet",
        lambda: embed(checkpoint, out / "store", out / "latents.parquet", workers=0),
        {"checkpoint": str(checkpoint), "source": str(out / "store")},
        lambda r: {"count": r[1].count},
    )  # fmt: skip

    cluster_options = ClusterOptions(
        latents=str(out / "latents.parquet"), output=str(out / "clusters"),
        k_max=8 if quick else 15, map=plan.map, labels=f"{sims}:family", seed=seed,
    )  # fmt: skip
    clustered = stages.run("cluster", out / "clusters", lambda: cluster_latents(cluster_options),
                           cluster_options)  # fmt: skip
    print(clustered.text())

    explore_options = ExploreOptions(str(out / "clusters"), str(out / "explorer.html"),
                                     catalog=str(sims / "catalog.parquet"), seed=seed)  # fmt: skip
    explored = stages.run("explore", out / "explorer.html",
                          lambda: build_explorer(explore_options), explore_options,
                          lambda r: {"points": r.points})  # fmt: skip
    print(explored.summary())

    regressor_options = RegressorOptions(
        source=str(sims), output=str(out / "regressor"), targets=("mag_r",),
        epochs=plan.regressor_epochs, baseline=plan.baseline, workers=0, seed=seed, devices="1",
        overwrite=True, progress=False,
    )  # fmt: skip
    measured = stages.run(
        "train regressor", out / "regressor", lambda: train_regressor(regressor_options),
        regressor_options,
    )  # fmt: skip
    print(measured.summary())

    report = stages.run("report", out / "report.html",
                        lambda: build_report([out], out / "report.html", title="galclust demo"),
                        {"runs": [str(out)]})  # fmt: skip
    print(report.summary())
    print(f"done in {time.perf_counter() - start:.0f} s: open {out / 'report.html'}")
    return out
