"""A 300,000-galaxy run on one machine: scan -> pack -> embed -> cluster, time and memory.

Writes ``--n`` RGB PNG cutouts of 3x``--size``x``--size`` (default 300,000 at 64 px) into
folders of 1,000, then runs each stage as a user would, one ``galclust`` command in a fresh
process each:

1. ``galclust scan CUTOUTS --shape 3,S,S``: the catalog, from headers;
2. ``galclust pack``: the memory-mapped store (uint8, galaxy framing as by default);
3. ``galclust train vae`` on the first ``--train`` galaxies of the store for ``--epochs`` (the
   "trained model"; reported, not part of the pipeline's total);
4. ``galclust embed`` of every galaxy of the store;
5. ``galclust cluster`` of the latents (k chosen automatically, galleries and map included).

For each stage it prints the wall time, the rate, and two peaks sampled every 0.2 s over the
stage's process and all its children (loader and pool workers), each as a proportional set
size (a page shared by several processes, such as a forked worker's copy-on-write memory, is
split between them rather than counted in each): the anonymous memory (what the processes
allocated: the memory a stage really needs) and all resident memory (which also counts pages of
memory-mapped files, such as the store, that the kernel can drop at will). The data size is
printed beside them, so that "peak memory far below the data size" can be read off.

Cutouts are made from a pool of ``--pool`` GalSim toy galaxies, each file a random flip or turn
of one of them with its own noise, so no two files are the same.

Run from the repository root::

    .venv/bin/python benchmarks/scale.py --dir /tmp/scale            # about an hour on 2 cores
    .venv/bin/python benchmarks/scale.py --dir /tmp/scale --n 20000  # a few minutes
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

GALCLUST = [sys.executable, "-m", "galclust"]
PER_FOLDER = 1000


def _write_folder(args: tuple[Path, np.ndarray, int, int]) -> int:
    """Write folder ``index`` of PNGs: random symmetries of the pool, each with its own noise."""
    from PIL import Image

    out, pool, index, count = args
    rng = np.random.default_rng(index)
    folder = out / f"{index:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    for j in range(count):
        image = pool[rng.integers(len(pool))]
        image = np.rot90(image, int(rng.integers(4)))
        if rng.random() < 0.5:
            image = image[:, ::-1]
        noisy = image.astype(np.int16) + rng.integers(-3, 4, image.shape, dtype=np.int16)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"g{j:04d}.png")
    return count


def make_cutouts(out: Path, n: int, size: int, pool_size: int) -> float:
    """``n`` PNG cutouts under ``out``; returns the seconds taken."""
    from galclust.datasets import make_toy_galaxies, to_rgb8

    start = time.perf_counter()
    images, _ = make_toy_galaxies(pool_size, size, seed=1)
    pool = np.stack([to_rgb8(image) for image in images])  # (pool, S, S, 3) uint8
    jobs = [(out, pool, i, min(PER_FOLDER, n - i * PER_FOLDER))
            for i in range((n + PER_FOLDER - 1) // PER_FOLDER)]  # fmt: skip
    done = 0
    with ProcessPoolExecutor(2) as executor:
        for count in executor.map(_write_folder, jobs):
            done += count
            if done % 50_000 < PER_FOLDER:
                print(f"  wrote {done:,} of {n:,} cutouts", flush=True)
    return time.perf_counter() - start


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def _memory(pids: list[int]) -> tuple[int, int]:
    """Summed proportional (anonymous, all) kB of ``pids``: pages shared between the processes
    (forked workers, the memory-mapped store) are split between them, not counted in each."""
    anon = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss_Anon:"):
                        anon += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return anon, pss


def run(name: str, args: list[str], count: int, rows: list[tuple[str, float, float, float, float]]
        ) -> None:  # fmt: skip
    """Run one galclust command, sampling its memory; append (name, s, rate, anon, pss)."""
    start = time.perf_counter()
    process = subprocess.Popen([*GALCLUST, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    peaks = [0, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            anon, pss = _memory(_tree(process.pid))
            peaks[0], peaks[1] = max(peaks[0], anon), max(peaks[1], pss)
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert process.stdout is not None
    for line in process.stdout:  # the command's own progress lines, as it runs
        print(f"  | {line.rstrip()}", flush=True)
    process.wait()
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - start
    if process.returncode:
        sys.exit(f"{name} failed (exit {process.returncode})")
    rows.append((name, seconds, count / seconds, peaks[0] / 1024, peaks[1] / 1024))
    print(f"{name}: {seconds:.0f} s", flush=True)


def size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300_000, help="cutouts (default: 300,000)")
    parser.add_argument("--size", type=int, default=64, help="pixels a side (default: 64)")
    parser.add_argument("--pool", type=int, default=2000, help="distinct toy galaxies")
    parser.add_argument("--train", type=int, default=5000, help="galaxies the VAE trains on")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", help="work and keep the files here (default: a temporary "
                        "folder, deleted); cutouts already there are reused")  # fmt: skip
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="galclust-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    n, s, w = args.n, args.size, str(args.workers)
    cutouts = work / "cutouts"
    try:
        if not (cutouts / f"{(n - 1) // PER_FOLDER:04d}").is_dir():
            print(f"writing {n:,} PNG cutouts of 3x{s}x{s} into {cutouts}", flush=True)
            print(f"  {make_cutouts(cutouts, n, s, args.pool):.0f} s", flush=True)
        rows: list[tuple[str, float, float, float, float]] = []
        catalog, store = work / "catalog.parquet", work / "store"
        run("scan", ["scan", str(cutouts), "-o", str(catalog), "--shape", f"3,{s},{s}",
                     "--workers", w], n, rows)  # fmt: skip
        run("pack", ["pack", str(catalog), "-o", str(store), "--workers", w, "--overwrite"],
            n, rows)  # fmt: skip
        subset = work / "train.csv"
        import pandas as pd

        pd.read_parquet(catalog).head(args.train).to_csv(subset, index=False)
        model = work / "vae"
        run("train vae (subset)", ["train", "vae", str(subset), "-o", str(model),
            "--epochs", str(args.epochs), "--workers", w, "--overwrite"],
            args.train * args.epochs, rows)  # fmt: skip
        latents = work / "latents.parquet"
        run("embed", ["embed", str(model / "checkpoints" / "best.ckpt"), str(store), "-o",
                      str(latents), "--workers", w], n, rows)  # fmt: skip
        run("cluster", ["cluster", str(latents), "-o", str(work / "clusters")], n, rows)
        print(f"\n{n:,} cutouts of 3x{s}x{s} on {os.cpu_count()} cores; cutouts "
              f"{size_mb(cutouts):,.0f} MB on disk, packed store {size_mb(store):,.0f} MB, "
              f"latents {size_mb(latents):,.0f} MB")  # fmt: skip
        print(f"{'stage':<20} {'seconds':>8} {'per s':>9} {'peak anon MB':>13} "
              f"{'peak PSS MB':>12}")  # fmt: skip
        for name, seconds, rate, anon, pss in rows:
            print(f"{name:<20} {seconds:8.0f} {rate:9,.0f} {anon:13,.0f} {pss:12,.0f}")
        pipeline = sum(r[1] for r in rows if not r[0].startswith("train"))
        print(f"scan + pack + embed + cluster: {pipeline / 60:.1f} min")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
