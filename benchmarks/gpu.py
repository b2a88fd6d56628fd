"""Benchmark the GPU path of training the reference VAE at 256 px from a packed store.

Prints, and writes to ``OUT/gpu.txt`` and ``OUT/gpu.json`` (the JSON after every section, so
that a run stopped by a time limit still leaves what it measured):

1. the time to build a packed store (uint8, field frame) of ``--n`` 3x256x256 PNG cutouts:
   write the cutouts (toy galaxies, as benchmarks/scale.py), ``galclust.scan``, ``pack``;
2. loader throughput from the store with 0, 1, 2, 4 and 8 workers, batch 64 (images/s, and per
   worker), measured on a second pass, once the workers are up;
3. training throughput of a hand-written loop on the device (cuda, else cpu) from one batch
   held on the device, so the GPU and not the loader is measured: (a) float32 NCHW,
   (b) bfloat16 autocast + channels-last, (c) as (b) + ``torch.compile``, with the compile time
   (warm-up steps) apart from the steady state; peak GPU memory, the final loss, and ratios;
4. one real ``train_vae`` run (Lightning, accelerator and precision auto) of one epoch;
5. the loader workers needed to feed the fastest training variant;
6. device, torch and galclust versions, CPU count.

A failing section is printed and the rest still run; sections left when ``--budget`` seconds
have passed are skipped with a note.

Run from the repository root::

    .venv/bin/python benchmarks/gpu.py                     # GPU machine; about 5 minutes
    .venv/bin/python benchmarks/gpu.py --smoke --out /tmp/gpu-smoke   # CPU check, tiny
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import galclust
from galclust.data.dataset import open_source
from galclust.data.pack import PackOptions, pack
from galclust.data.transforms import Preprocess
from galclust.models.lightning import vae_loss
from galclust.models.vae import VAE
from galclust.train import TrainOptions, make_loader, resolve_precision, train_vae

SIZE = 256
START = time.perf_counter()


class Bench:
    """Printed lines and results, saved to ``out`` after every section."""

    def __init__(self, out: Path, budget: float) -> None:
        self.out, self.budget = out, budget
        self.lines: list[str] = []
        self.results: dict[str, Any] = {"errors": {}, "skipped": []}
        out.mkdir(parents=True, exist_ok=True)

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def save(self) -> None:
        self.results["elapsed_s"] = round(time.perf_counter() - START, 1)
        dump = json.dumps(self.results, indent=2, default=str)
        for name, text in (("gpu.json", dump), ("gpu.txt", "\n".join(self.lines) + "\n")):
            (self.out / f"{name}.tmp").write_text(text)
            (self.out / f"{name}.tmp").replace(self.out / name)

    def over(self) -> bool:
        return time.perf_counter() - START > self.budget

    def section(self, name: str, fn: Any, *args: Any, always: bool = False) -> None:
        """Run one section, unless over budget; print a failure and go on; save."""
        if self.over() and not always:
            self.say(f"\n[{name}: skipped, {self.budget:.0f} s budget spent]")
            self.results["skipped"].append(name)
        else:
            try:
                fn(self, *args)
            except Exception as exc:
                self.say(f"\n[{name} FAILED: {type(exc).__name__}: {exc}]")
                self.results["errors"][name] = traceback.format_exc()
        self.save()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(b: Bench, args: argparse.Namespace, work: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scale import make_cutouts  # benchmarks/scale.py

    b.say(f"1. packed store of {args.n} cutouts, 3x{SIZE}x{SIZE}, uint8, field frame")
    cutouts, catalog, store = work / "cutouts", work / "catalog.parquet", work / "store"
    seconds = {"cutouts": make_cutouts(cutouts, args.n, SIZE, args.pool)}
    t = time.perf_counter()
    galclust.scan(cutouts, output=catalog, workers=args.workers or 2)
    seconds["scan"] = time.perf_counter() - t
    t = time.perf_counter()
    options = PackOptions(str(catalog), str(store), image_size=SIZE, dtype="uint8",
                          frame="field", workers=args.workers or 2, overwrite=True)  # fmt: skip
    report = pack(options)
    seconds["pack"] = time.perf_counter() - t
    b.say(
        f"   write PNGs {seconds['cutouts']:.1f} s, scan {seconds['scan']:.1f} s, pack "
        f"{seconds['pack']:.1f} s; total {sum(seconds.values()):.1f} s"
    )
    b.say(f"   {report.summary()}")
    b.results["build"] = {"n": report.count, "dtype": report.dtype, "seconds": seconds}
    b.results["store"] = str(store)


def loaders(b: Bench, args: argparse.Namespace) -> None:
    data = open_source(b.results["store"]).dataset(Preprocess(SIZE))
    b.say(f"\n2. loader from the packed store, batch 64, {len(data)} images a pass (images/s)")
    b.results["loader"] = rows = {}
    for workers in args.loader_workers:
        loader = make_loader(data, 64, workers)
        for _ in loader:  # first pass: workers start, page cache warms
            pass
        t, count = time.perf_counter(), 0
        for images in loader:
            count += len(images)
        rate = count / (time.perf_counter() - t)
        rows[workers] = {"images_per_s": rate, "per_worker": rate / max(workers, 1)}
        b.say(f"   {workers} workers  {rate:9,.0f}   per worker {rate / max(workers, 1):8,.0f}")
        del loader


def train_rate(
    x: torch.Tensor, steps: int, warmup: int, fast: bool, compile_: bool
) -> dict[str, Any]:
    """Images/s of Adam steps on the batch ``x``; ``fast``: bf16 autocast + channels-last."""
    device = x.device
    torch.manual_seed(0)
    model = VAE(3, SIZE, 35).to(device).train()
    if fast:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    net = torch.compile(model) if compile_ else model
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    def run(n: int) -> tuple[float, float]:
        sync(device)
        t = time.perf_counter()
        for _ in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
                recon, mu, logvar = net(x)
                loss = vae_loss(recon, x, mu, logvar, 1e-3)["loss"]
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        sync(device)
        return time.perf_counter() - t, float(loss.detach())

    warm_s, _ = run(warmup)
    seconds, loss = run(steps)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    rate = steps * len(x) / seconds
    return {"images_per_s": rate, "warmup_s": warm_s, "peak_mb": peak, "loss": loss}


def training(b: Bench, args: argparse.Namespace) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = open_source(b.results["store"]).dataset(Preprocess(SIZE))
    x = next(iter(make_loader(data, args.batch, 0))).to(device)
    b.say(
        f"\n3. training on {device}, batch {len(x)} held on the device, {args.warmup} warm-up "
        f"+ {args.steps} timed steps"
    )
    b.say(f"   {'variant':<34} {'images/s':>9} {'warm-up s':>10} {'peak MB':>8} {'loss':>9}")
    b.results["training"] = rows = {}
    variants = (("a", "float32 NCHW", False, False),
                ("b", "bf16 autocast + channels-last", True, False),
                ("c", "(b) + torch.compile", True, True))  # fmt: skip
    for key, label, fast, compile_ in variants:
        if b.over():
            b.say(f"   ({key}) skipped: budget spent")
            continue
        if compile_ and device.type == "cpu" and args.smoke:
            b.say(f"   ({key}) {label}: skipped in --smoke on CPU (compiling takes minutes)")
            continue
        try:
            rows[key] = row = train_rate(x, args.steps, args.warmup, fast, compile_)
        except Exception as exc:
            rows[key] = {"error": f"{type(exc).__name__}: {exc}"}
            b.say(f"   ({key}) {label}: FAILED {rows[key]['error'][:300]}")
            continue
        peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:,.0f}"
        b.say(
            f"   ({key}) {label:<30} {row['images_per_s']:9,.1f} {row['warmup_s']:10.1f} "
            f"{peak:>8} {row['loss']:9.5f}"
        )
        b.save()
    base = rows.get("a", {}).get("images_per_s")
    for key in ("b", "c"):
        if base and "images_per_s" in rows.get(key, {}):
            rows[f"{key}/a"] = rows[key]["images_per_s"] / base
            b.say(f"   ratio ({key})/(a) {rows[f'{key}/a']:.2f}x")


def lightning(b: Bench, args: argparse.Namespace, work: Path) -> None:
    precision = resolve_precision("auto", "auto")
    b.say(
        f"\n4. train_vae (Lightning), accelerator auto, precision auto -> {precision}, 1 epoch, "
        f"batch {args.batch}, {args.workers} workers"
    )
    options = TrainOptions(b.results["store"], str(work / "run"), epochs=1, batch_size=args.batch,
                           workers=args.workers, accelerator="auto", precision="auto",
                           plot_every=100, progress=False, overwrite=True)  # fmt: skip
    report = train_vae(options)
    rate = float(report.metrics["images_per_s"].iloc[-1])
    b.results["lightning"] = {"images_per_s": rate, "precision": precision,
                              "seconds": report.seconds, "train_count": report.train_count,
                              "val_loss": report.best_val_loss}  # fmt: skip
    b.say(
        f"   {rate:,.1f} images/s over {report.train_count} images; {report.seconds:.1f} s in "
        f"all; val loss {report.best_val_loss:.5f}"
    )


def feed(b: Bench) -> None:
    rows = b.results.get("training", {}).values()
    rates = [r["images_per_s"] for r in rows if isinstance(r, dict) and "images_per_s" in r]
    loader = b.results.get("loader", {})
    if not rates or not loader:
        raise RuntimeError("needs sections 2 and 3")
    most = max(loader)  # per-worker rate at the most workers measured
    per = loader[most]["per_worker"]
    need = math.ceil(max(rates) / per)
    b.results["workers_needed"] = need
    b.say(
        f"\n5. workers needed to feed the GPU: ceil({max(rates):,.0f} / {per:,.0f} per worker "
        f"at {most} workers) = {need}"
    )


def about(b: Bench) -> None:
    info = b.results["about"]
    b.say(
        f"\n6. {info['device']}; torch {info['torch']}; galclust {info['galclust']}; "
        f"{info['cpus']} CPUs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny run, fine on a CPU")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-bench")
    parser.add_argument("--work", help="work folder (default: a temporary one)")
    parser.add_argument("--n", type=int, help="images in the store (default 4096; smoke 128)")
    parser.add_argument("--pool", type=int, help="distinct toy galaxies (default 128; smoke 16)")
    parser.add_argument("--steps", type=int, help="timed steps (default 200; smoke 3)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (default 10; smoke 1)")
    parser.add_argument("--batch", type=int, help="training batch (default 64; smoke 16)")
    parser.add_argument("--workers", type=int, help="train_vae workers (default 8; smoke 0)")
    parser.add_argument("--budget", type=float, default=420, help="seconds (default 420)")
    args = parser.parse_args()
    defaults = {"n": (4096, 128), "pool": (128, 16), "steps": (200, 3), "warmup": (10, 1),
                "batch": (64, 16), "workers": (8, 0)}  # fmt: skip
    for name, (full, smoke) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else full)
    args.loader_workers = (0, 1, 2) if args.smoke else (0, 1, 2, 4, 8)
    logging.basicConfig(level=logging.WARNING)
    b = Bench(Path(args.out), args.budget)
    cuda = torch.cuda.is_available()
    b.results["about"] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu (no CUDA)",
        "torch": torch.__version__,
        "galclust": galclust.__version__,
        "cpus": os.cpu_count(),
        "args": dict(vars(args)),
    }
    b.save()
    with tempfile.TemporaryDirectory(prefix="galclust-gpu-") as tmp:
        work = Path(args.work or tmp)
        b.section("1. build", build, args, work)
        b.section("2. loader", loaders, args)
        b.section("3. training", training, args)
        b.section("4. train_vae", lightning, args, work)
        b.section("5. workers needed", feed, always=True)
        b.section("6. about", about, always=True)
    b.say(f"\n{time.perf_counter() - START:.0f} s in all; results in {b.out}")
    b.save()


if __name__ == "__main__":
    main()
