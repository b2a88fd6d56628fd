"""How well and how fast does the CNN measure galaxies, against a classical Sersic fit?

1. DECaLS-like simulation (``--sims``, or ``--n`` galaxies simulated here): trains
   ``galclust train regressor`` on its train split and prints, for the test galaxies with
   S/N >= 20 and for the ``--baseline`` test galaxies fitted both ways, RMSE / bias / NMAD of
   every target, the coverage of the uncertainties, and the time per galaxy of the CNN and of
   the GalSim + scipy Sersic fit side by side, with their ratio.
2. ``--cosmos``: trains a magnitude regressor on an HST/COSMOS-like simulation and predicts the
   100 real COSMOS F814W stamps of ``shared/data/cosmos-f814w``, comparing with the catalogue's
   ``mag_f814w`` (the stamps' own photometry): RMSE and bias, bias by magnitude, with and
   without subtracting each stamp's sky level as the COSMOS real-galaxy catalogue records it.

Issue targets (S/N >= 20, default 50,000-galaxy simulation): magnitude RMSE <= 0.05 mag, hlr
median |relative error| <= 7%, q RMSE <= 0.05, NMAD of log10 n <= 0.1 (single-component
families), B/T RMSE <= 0.1, 68 +- 5% within 1 sigma; the CNN at least as accurate as the fit on
magnitude and >= 100x faster; COSMOS magnitude RMSE <= 0.15 mag.

Run from the repository root::

    .venv/bin/python benchmarks/regress.py --sims /data/sims50k --targets mag_r --epochs 12
    .venv/bin/python benchmarks/regress.py --skip-decals --cosmos --epochs 10  # about 10 min
    .venv/bin/python benchmarks/regress.py --skip-decals --cosmos-checkpoint CKPT  # no training
    .venv/bin/python benchmarks/regress.py --sims /data/sims50k --rescore RUN  # no training
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from galclust.regress import (
    FluxScaling,
    RegressorOptions,
    Targets,
    calibrate,
    evaluate,
    load_regressor,
    predict,
    train_regressor,
)
from galclust.regress.targets import RegressionData
from galclust.simulate import SimulateOptions, simulate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per target: the CNN at S/N >= 20, then CNN and fit on the same galaxies."""
    rows = []
    snr20 = metrics.get("test_snr20", {})
    baseline = metrics.get("baseline", {})
    for name in metrics["targets"]:
        cnn = snr20.get(name, {})
        row = {"target": name, "unit": cnn.get("unit"), "n (S/N>=20)": cnn.get("n"),
               "CNN RMSE": cnn.get("rmse"), "CNN bias": cnn.get("bias"),
               "CNN NMAD": cnn.get("nmad"), "within 1 sigma": cnn.get("within_1sigma"),
               "median |rel|": cnn.get("median_abs_relative_error")}  # fmt: skip
        fit = baseline.get("scores", {}).get(name)
        same = baseline.get("cnn_scores", {}).get(name)
        if fit and same:
            row |= {"fit RMSE": fit["rmse"], "fit NMAD": fit["nmad"],
                    "CNN RMSE (same)": same["rmse"]}  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def show(metrics: dict[str, Any]) -> None:
    """The scores, the subsets' headline figures and the speed against the fit."""
    print(table(metrics).to_string(index=False, float_format="%.4g"))
    for what, value in metrics.get("headline", {}).items():
        print(f"{what}: {value:.3f}")
    baseline = metrics.get("baseline")
    if baseline:
        print(f"\nper galaxy: CNN {metrics['cnn_ms_per_galaxy']:.2f} ms, Sersic fit "
              f"{baseline['seconds_per_galaxy'] * 1e3:.0f} ms (one core each): the CNN is "
              f"{baseline['speedup_cnn_vs_fit']:.0f}x faster; fit converged on "
              f"{baseline['converged_fraction']:.0%} of {baseline['galaxies']}")  # fmt: skip


def rescore(run: Path, sims: Path, views: int, batch_size: int) -> dict[str, Any]:
    """Calibrate ``run``'s best checkpoint on the validation split again, with predictions
    averaged over ``views`` symmetries, and score it on the test split (the code of this
    galclust, the weights of that run)."""
    module, _ = load_regressor(run / "checkpoints" / "best.ckpt")
    targets = Targets.from_dict(module.hparams["targets"])
    scaling = FluxScaling.from_dict(module.hparams["scaling"])
    catalog = pd.read_parquet(sims / "catalog.parquet")
    data, truth = {}, {}
    for split in ("val", "test"):
        rows = catalog[catalog["split"] == split]
        raw = targets.raw(rows)
        truth[split] = rows[np.isfinite(raw).all(axis=1)].reset_index(drop=True)
        spec = module.hparams.get("seeing")
        seeing = truth[split][spec["column"]].to_numpy() if spec else None
        data[split] = RegressionData(
            truth[split], scaling, targets.raw(truth[split]), seeing=seeing
        )
    best = run / "checkpoints" / "best.ckpt"
    calibration = calibrate(module, best, data["val"], batch_size, 1, views)
    return evaluate(module, calibration, data["test"], run, truth["test"],
                    batch_size=batch_size, workers=1, baseline=100)  # fmt: skip


def decals(args: argparse.Namespace, work: Path) -> None:
    if args.rescore:
        if not args.sims:
            raise SystemExit("--rescore RUN needs --sims, the simulation RUN was trained on")
        t = time.perf_counter()
        metrics = rescore(Path(args.rescore), Path(args.sims), args.views, args.batch_size)
        print(f"rescored {args.rescore} in {time.perf_counter() - t:.0f} s")
        show(metrics)
        return
    sims = Path(args.sims) if args.sims else work / "sims"
    if not args.sims:
        t = time.perf_counter()
        simulate(SimulateOptions(n=args.n, output=str(sims), workers=2))
        print(f"simulated {args.n} galaxies in {time.perf_counter() - t:.0f} s")
    options = RegressorOptions(
        str(sims), str(work / "run"), targets=tuple(args.targets.split(",")),
        image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
        baseline=args.baseline, workers=args.workers, views=args.views, progress=False,
        overwrite=True,
    )  # fmt: skip
    report = train_regressor(options)
    metrics = report.metrics
    print(f"\ntrained {report.epochs} epochs on {report.train_count} galaxies in "
          f"{report.seconds / 60:.1f} min (including the test and the baseline)")  # fmt: skip
    show(metrics)
    (work / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))


def cosmos(args: argparse.Namespace, work: Path) -> None:
    sims = work / "hst"
    t = time.perf_counter()
    simulate(SimulateOptions(n=args.cosmos_n, output=str(sims), size=args.cosmos_size,
                             survey="hst-cosmos", workers=2))  # fmt: skip
    print(f"\nsimulated {args.cosmos_n} HST galaxies in {time.perf_counter() - t:.0f} s")
    options = RegressorOptions(
        str(sims), str(work / "hst-run"), targets=("mag_i",), epochs=args.epochs,
        batch_size=args.batch_size, baseline=0, workers=args.workers, progress=False,
        overwrite=True,
    )  # fmt: skip
    report = train_regressor(options)
    print(f"trained {report.seconds / 60:.1f} min")
    check_cosmos(work / "hst-run" / "checkpoints" / "best.ckpt", work)


def check_cosmos(checkpoint: Path, work: Path) -> None:
    """Predict the 100 real COSMOS stamps and compare with the catalogue."""
    catalog = pd.read_csv(SHARED / "cosmos-f814w" / "catalog.csv")
    catalog["file_loc"] = [str(SHARED / "cosmos-f814w" / f) for f in catalog["file_loc"]]
    catalog["sky"], catalog["held"], catalog["held_err"] = stamp_sky_and_flux(catalog)
    catalog[["id_str", "file_loc", "sky"]].to_csv(work / "cosmos.csv", index=False)
    print(f"COSMOS F814W, 100 real stamps, {checkpoint}")
    for sky in (None, "sky"):
        result = predict(checkpoint, work / "cosmos.csv", zeropoint=25.94, workers=0, sky=sky)
        merged = result.table.merge(catalog, on="id_str")
        delta = merged["mag_i"] - merged["mag_f814w"]
        pull = (delta / merged["mag_i_err"]).abs()
        worst = delta.abs().idxmax()
        rest = delta.drop(worst)
        print(
            f"  sky {'subtracted' if sky == 'sky' else 'not subtracted'}: RMSE "
            f"{np.sqrt(np.mean(delta**2)):.3f} mag, bias {delta.mean():+.3f}, NMAD "
            f"{1.4826 * np.median(np.abs(delta - delta.median())):.3f}, within 1 / 2 sigma "
            f"{(pull < 1).mean():.0%} / {(pull < 2).mean():.0%}; worst {merged['id_str'][worst]} "
            f"{delta[worst]:+.2f}, RMSE without it {np.sqrt(np.mean(rest**2)):.3f}"
        )
        held = (merged["held"] - 1).abs() < 3 * merged["held_err"]
        others = ", ".join(merged["id_str"][~held])
        print(
            f"  on the {int(held.sum())} stamps whose pixels hold their catalogued flux within "
            f"3 sigma: RMSE {np.sqrt(np.mean(delta[held] ** 2)):.3f}, bias "
            f"{delta[held].mean():+.3f}; the others: {others}"
        )
        bins = pd.cut(merged["mag_f814w"], [19, 23, 24, 25, 25.5, 26])
        by = delta.groupby(bins, observed=True).agg(["count", "mean", "std"])
        print("  by catalogue magnitude: " + "; ".join(
            f"{b}: {int(r['count'])} bias {r['mean']:+.3f} scatter {r['std']:.3f}"
            for b, r in by.iterrows()))  # fmt: skip
    print("  worst five (sky subtracted), and the share of the catalogued flux the stamp holds:")
    for _, row in merged.reindex(delta.abs().sort_values().index[::-1][:5]).iterrows():
        print(f"    {row['id_str']}: {row['mag_f814w']:.2f} mag, {row['ny']}x{row['nx']} px, CNN "
              f"{row['mag_i'] - row['mag_f814w']:+.2f} mag; stamp holds {row['held']:.0%} +- "
              f"{row['held_err']:.0%}")  # fmt: skip


def stamp_sky_and_flux(catalog: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each stamp's sky level (counts/s per pixel) as the COSMOS real-galaxy catalogue records it
    (NOISE_MEAN, by the IDENT of the stamp's header); the share of its catalogued flux its pixels
    hold (their sum less that sky); and the 1-sigma noise of that share: a sum of n pixels of
    COSMOS noise varies about 5 n times as much as one pixel (measured on the hst-cosmos
    simulation's correlated noise)."""
    from astropy.io import fits

    table = fits.getdata(SHARED / "cosmos-f814w" / "real_galaxy_catalog_26_extension_example.fits")
    level = dict(zip(table["IDENT"].tolist(), table["NOISE_MEAN"].tolist(), strict=True))
    skies, sums, noise = [], [], []
    for loc, variance in zip(catalog["file_loc"], catalog["noise_variance"], strict=True):
        pixels, header = fits.getdata(loc, header=True)
        sky = level[int(header["IDENT"])]
        skies.append(sky)
        sums.append(pixels.astype(np.float64).sum() - sky * pixels.size)
        noise.append(np.sqrt(5 * variance * pixels.size))
    flux = 10 ** (-0.4 * (catalog["mag_f814w"].to_numpy() - 25.94))
    return np.array(skies), np.array(sums) / flux, np.array(noise) / flux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", help="an existing galclust simulate folder (DECaLS)")
    parser.add_argument("--n", type=int, default=50_000, help="galaxies to simulate otherwise")
    parser.add_argument("--targets", default="mag_r")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--baseline", type=int, default=100)
    parser.add_argument("--views", type=int, default=2, help="symmetries a prediction averages")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rescore", metavar="RUN",
                        help="calibrate and score a trained run on --sims again (rewrites its "
                        "checkpoint's calibration and metrics.json)")  # fmt: skip
    parser.add_argument("--cosmos", action="store_true", help="also the real COSMOS check")
    parser.add_argument("--cosmos-n", type=int, default=20_000)
    parser.add_argument("--cosmos-size", type=int, default=64, help="HST stamps (0.03 arcsec px)")
    parser.add_argument("--cosmos-checkpoint", metavar="CKPT",
                        help="check this trained HST regressor on the COSMOS stamps instead "
                        "of training one")  # fmt: skip
    parser.add_argument("--skip-decals", action="store_true")
    parser.add_argument("--work", help="keep runs here (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_decals:
            decals(args, work)
        if args.cosmos_checkpoint:
            check_cosmos(Path(args.cosmos_checkpoint), work)
        elif args.cosmos:
            cosmos(args, work)


if __name__ == "__main__":
    main()
