"""Benchmark ``galclust simulate``: galaxies per second with 1 and 2 workers, and where time goes.

One run prints, side by side:

1. the whole ``simulate`` of ``--n`` galaxies (default 50,000, 3 bands, 128x128) with 2 workers,
   against the issue's target of at most 6 minutes (about 140 galaxies/s);
2. the same with 1 worker on ``--n-small`` galaxies (default 5,000), and the speed-up;
3. per family, the steady-state render time per galaxy in this process (after GalSim's Sersic
   tables are built), and the one-off cost of building those tables.

Run from the repository root::

    .venv/bin/python benchmarks/simulate.py                 # defaults, about 5 minutes
    .venv/bin/python benchmarks/simulate.py --n 3000 --n-small 1000   # quick check
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import galclust
from galclust.simulate import FAMILIES, SimulateOptions, simulate
from galclust.simulate.params import draw_params, survey_named
from galclust.simulate.render import render


def whole_run(n: int, workers: int, folder: Path) -> float:
    """Seconds for ``simulate`` of ``n`` galaxies into a fresh folder."""
    start = time.perf_counter()
    simulate(SimulateOptions(n=n, output=str(folder), workers=workers, overwrite=True))
    return time.perf_counter() - start


def per_family(samples: int) -> list[tuple[str, float, float]]:
    """(family, first-draw ms incl. table building, steady ms) per family, in this process."""
    survey = survey_named("decals")
    rows = []
    for family in FAMILIES:
        cold = [draw_params(family, survey, seed) for seed in range(samples)]
        start = time.perf_counter()
        for params in cold:
            render(params, survey, 128)
        first = (time.perf_counter() - start) / samples * 1e3
        warm = [draw_params(family, survey, seed) for seed in range(samples, 2 * samples)]
        start = time.perf_counter()
        for params in warm:
            render(params, survey, 128)
        rows.append((family, first, (time.perf_counter() - start) / samples * 1e3))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="galaxies, 2 workers")
    parser.add_argument("--n-small", type=int, default=5_000, help="galaxies, 1 worker")
    parser.add_argument("--samples", type=int, default=200, help="galaxies per family timed")
    args = parser.parse_args()
    print(f"galclust {galclust.__version__}, Python {platform.python_version()}")
    families = per_family(args.samples)  # first: this process has built no Sersic table yet

    with tempfile.TemporaryDirectory(prefix="galclust-bench-sim-") as scratch:
        t2 = whole_run(args.n, 2, Path(scratch) / "two")
        t1 = whole_run(args.n_small, 1, Path(scratch) / "one")
        t2_small = whole_run(args.n_small, 2, Path(scratch) / "two-small")
    rate2, rate1, rate2_small = args.n / t2, args.n_small / t1, args.n_small / t2_small
    verdict = "PASS" if t2 <= 360 else "FAIL"
    print(f"\n{'run':<40} {'galaxies':>9} {'seconds':>8} {'galaxies/s':>11}")
    print(f"{'2 workers':<40} {args.n:>9,} {t2:>8.1f} {rate2:>11.0f}  [<= 360 s] {verdict}")
    print(f"{'2 workers':<40} {args.n_small:>9,} {t2_small:>8.1f} {rate2_small:>11.0f}")
    print(f"{'1 worker':<40} {args.n_small:>9,} {t1:>8.1f} {rate1:>11.0f}")
    print(f"speed-up of 2 workers over 1 at {args.n_small:,} galaxies: {rate2_small / rate1:.2f}x")

    print(f"\nper family, one process, {args.samples} galaxies each (ms per galaxy):")
    print(f"{'family':<12} {'first draws':>12} {'steady':>8}")
    for family, first, steady in families:
        print(f"{family:<12} {first:>12.1f} {steady:>8.1f}")
    print(
        "first draws include building GalSim's Sersic tables (one per quantised index, per "
        "process); steady is the cost once they exist."
    )


if __name__ == "__main__":
    main()
