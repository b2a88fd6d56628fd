"""Benchmark VAE training, data loading and embedding at 256 px, side by side in one run.

Prints:

1. training throughput of the reference network at 256 px: the plain float32 NCHW loop of the
   reference repository (hand-written, no Lightning) against ``galclust train vae`` (Lightning,
   bfloat16 autocast where the CPU has it, channels-last), both on the same packed data, and
   the ratio (required: >= 3x);
2. the final validation loss of the same short run in float32 and with galclust's defaults
   (required: within 2%);
3. loader throughput from the packed store (required: >= 5x the training throughput) and from
   PNG files with 2 workers;
4. embedding throughput while encoding (required: >= 250 images/s here), with and without the
   decoder pass that gives ``recon_mse``, and with ``--invariant``;
5. peak memory (resident set) of this process and of its worker processes.

Run from the repository root::

    .venv/bin/python benchmarks/train_vae.py             # about 10 minutes on 2 cores
    .venv/bin/python benchmarks/train_vae.py --quick     # fewer images and steps
"""

from __future__ import annotations

import argparse
import logging
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

import galclust
from galclust.data.dataset import open_source
from galclust.data.pack import PackOptions, pack
from galclust.data.transforms import Preprocess
from galclust.datasets import grz_to_rgb8
from galclust.embed import embed
from galclust.models.lightning import vae_loss
from galclust.models.vae import VAE
from galclust.simulate import SimulateOptions, simulate
from galclust.train import TrainOptions, make_loader, train_vae

SIZE = 256
BATCH = 64  # the reference repository's and galclust's default


def reference_loop(images: torch.Tensor, batch: int, steps: int) -> float:
    """Images/s of the reference repository's loop: float32, NCHW, Adam, MSE + KL."""
    torch.manual_seed(0)
    model = VAE(3, SIZE, 35).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    count, start = 0, 0.0
    for step in range(steps + 1):  # the first step warms up and is not timed
        if step == 1:
            start = time.perf_counter()
        x = images[(step * batch) % len(images) :][:batch]
        recon, mu, logvar = model(x)
        loss = vae_loss(recon, x, mu, logvar, 1e-3)["loss"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        count += len(x) if step else 0
    return count / (time.perf_counter() - start)


def loader_rate(data: object, batch: int, workers: int, limit: int) -> float:
    """Images/s served by a DataLoader (one pass over at most ``limit`` images)."""
    loader = make_loader(data, batch, workers)  # type: ignore[arg-type]
    start, count = time.perf_counter(), 0
    for images in loader:
        count += len(images)
        if count >= limit:
            break
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run")
    args = parser.parse_args()
    n = 320 if args.quick else 640
    steps = 3 if args.quick else 6
    epochs = 2 if args.quick else 3
    logging.basicConfig(level=logging.WARNING)
    print(f"galclust {galclust.__version__}, torch {torch.__version__}, {platform.processor()}")
    print(f"{torch.get_num_threads()} threads; {n} simulated galaxies at {SIZE} px, 3 bands\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        sims = root / "sims"
        simulate(SimulateOptions(n=n, output=str(sims), size=SIZE, workers=2))
        print(f"simulated {n} galaxies in {time.perf_counter() - t:.0f} s")
        t = time.perf_counter()
        store = root / "store"
        pack(PackOptions(str(sims), str(store), frame="field", workers=2))
        print(f"packed them (float16) in {time.perf_counter() - t:.1f} s\n")

        source = open_source(store)
        data = source.dataset(Preprocess(SIZE))
        images = torch.stack([data[i] for i in range(2 * BATCH)])

        # 1. training throughput -----------------------------------------------------------
        plain = reference_loop(images, BATCH, steps)
        train_rows = int((source.catalog["split"] == "train").sum())
        runs = {}
        for label, precision in (("float32", "32-true"), ("galclust", "auto")):
            options = TrainOptions(
                str(store),
                str(root / f"run-{label}"),
                epochs=epochs,
                batch_size=BATCH,
                workers=0,
                precision=precision,
                plot_every=100,
                progress=False,
            )
            t = time.perf_counter()
            report = train_vae(options)
            runs[label] = (report, time.perf_counter() - t)
        fast = runs["galclust"][0].metrics["images_per_s"].iloc[1:].mean()
        full = runs["float32"][0].metrics["images_per_s"].iloc[1:].mean()
        print(f"1. training at 256 px, batch {BATCH} (images/s; epochs after the first)")
        print(f"   reference loop, float32 NCHW, no Lightning  {plain:7.1f}")
        print(f"   galclust train vae --precision 32-true       {full:7.1f}")
        print(f"   galclust train vae (defaults)                {fast:7.1f}")
        print(f"   ratio galclust / reference loop              {fast / plain:7.2f}x  (need >= 3)")

        # 2. quality of the short run ------------------------------------------------------
        loss32 = runs["float32"][0].metrics["val_loss"].iloc[-1]
        loss_fast = runs["galclust"][0].metrics["val_loss"].iloc[-1]
        print(f"\n2. final validation loss after {epochs} epochs on {train_rows} galaxies")
        print(f"   float32 {loss32:.5f}   galclust defaults {loss_fast:.5f}   "
              f"difference {100 * (loss_fast / loss32 - 1):+.2f}%  (need within 2%)")  # fmt: skip

        # 3. loaders ------------------------------------------------------------------------
        pngs = root / "pngs"
        pngs.mkdir()
        stored = np.load(sims / "images.npy", mmap_mode="r")
        for i in range(n):
            Image.fromarray(grz_to_rgb8(stored[i])).save(pngs / f"g{i:05d}.png")
        galclust.scan(pngs, output=root / "pngs.parquet")
        png_data = open_source(root / "pngs.parquet").dataset(Preprocess(SIZE))
        packed_rate = loader_rate(data, 64, 0, n)
        packed_rate2 = loader_rate(data, 64, 2, n)
        png_rate = loader_rate(png_data, 64, 2, n)
        print("\n3. loading 256 px images (images/s)")
        print(f"   packed store, 0 workers   {packed_rate:8.0f}   "
              f"{packed_rate / fast:5.1f}x training  (need >= 5)")  # fmt: skip
        print(f"   packed store, 2 workers   {packed_rate2:8.0f}   {packed_rate2 / fast:5.1f}x")
        print(f"   PNG files, 2 workers      {png_rate:8.0f}   {png_rate / fast:5.1f}x")

        # 4. embedding ----------------------------------------------------------------------
        ckpt = root / "run-galclust" / "checkpoints" / "best.ckpt"
        print("\n4. embedding at 256 px from the packed store (images/s)")
        for label, kwargs in (
            ("latents only (--no-recon-error)", {"recon_error": False}),
            ("latents + recon_mse (default)", {}),
            ("latents only, float32", {"recon_error": False, "precision": "32"}),
            ("--invariant, latents only", {"recon_error": False, "invariant": True}),
        ):
            table, report = embed(ckpt, store, batch_size=128, workers=0, **kwargs)  # type: ignore[arg-type]
            note = "  (need >= 250)" if label.startswith("latents only (") else ""
            print(f"   {label:34s} {report.images_per_s:7.0f}{note}")
        assert isinstance(table, pd.DataFrame)

    # 5. memory -------------------------------------------------------------------------------
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\n5. peak resident memory: this process {own:.0f} MB, largest worker {children:.0f} MB")


if __name__ == "__main__":
    main()
