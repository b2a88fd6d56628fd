"""Command-line parsers of ``galclust train regressor`` and ``galclust predict``."""

from __future__ import annotations

import argparse

from galclust.cli import _add_workers, _Parser, _wrote

_EPILOG_REGRESSOR = """\
examples:
  galclust simulate -n 50000 -o sims
  galclust train regressor sims -o runs/mag --targets mag_r
  galclust train regressor sims -o runs/all --targets mag_g,mag_r,mag_z,hlr,sersic_n,q,pa,bt
  galclust predict runs/mag/checkpoints/best.ckpt catalog.parquet -o predictions.parquet

Targets are catalog columns; sizes (hlr*), Sersic indices and fluxes are learned in log10, the
position angle pa as (cos 2PA, sin 2PA). Each prediction is the mean over --views symmetries
of the image and comes with a 1-sigma uncertainty; the mean error and the spread of the errors
on the validation split are measured after training and corrected in every prediction.
Training stops early when the validation loss stops improving (--patience). The run folder
gets checkpoints/, metrics.csv and loss.png per epoch, then metrics.json (test-split RMSE,
bias, NMAD, outliers, coverage of the uncertainties; for all, for S/N >= 20, by magnitude and
by S/N; and the classical Sersic fit on --baseline test galaxies), test_predictions.parquet
and plots/<target>.png.
"""


def add_regressor(train_sub: argparse._SubParsersAction[_Parser]) -> None:
    """``galclust train regressor``, under ``galclust train``."""
    from galclust.cli_models import add_device_options

    p = train_sub.add_parser(
        "regressor",
        help="a CNN that measures galaxy parameters (magnitude, size, Sersic index, shape)",
        description="Train a CNN on a galclust simulate folder to predict catalog columns, "
        "each with an uncertainty; score it on the simulation's test split against a classical "
        "Sersic fit.",
        epilog=_EPILOG_REGRESSOR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", metavar="SIMS", help="a folder made by galclust simulate")
    p.add_argument("-o", "--output", default="runs/regressor", metavar="RUN", help="run folder")
    p.add_argument(
        "--targets", default="",
        help="comma-separated catalog columns (default: mag_r, else the first mag_ column)",
    )  # fmt: skip
    p.add_argument("--image-size", type=int, help="crop/pad stamps to this (default: as simulated)")
    p.add_argument("--epochs", type=int, default=30, help="at most (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    p.add_argument(
        "--lr",
        type=float,
        default=1e-3,
        help="peak AdamW learning rate, cosine-decayed over --epochs (default: 1e-3)",
    )
    p.add_argument(
        "--patience", type=int, default=6,
        help="stop after this many epochs without a better validation loss (default: 6)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--no-augment", action="store_true", help="no random flips and quarter turns")
    p.add_argument(
        "--seeing", default="auto", metavar="COLUMN",
        help="catalog column of each galaxy's PSF FWHM (arcsec), given to the network beside the "
        "pixels: the size and shape of a barely resolved galaxy depend on it; auto = psf_fwhm "
        "when the simulation has it, none = pixels only (default: auto)",
    )  # fmt: skip
    p.add_argument(
        "--nll-beta", type=float, default=0.25, metavar="BETA",
        help="weight each output's likelihood by its predicted variance to this power (beta-NLL, "
        "Seitzer et al. 2022): 0 is the plain likelihood, which lets the network give up on a "
        "hard output such as q; 1 weights errors as a squared error does (default: 0.25)",
    )  # fmt: skip
    p.add_argument(
        "--no-apertures", action="store_true",
        help="pixels only: do not also give the network each band's flux in four apertures (the "
        "whole image and circles of 1/4, 1/8 and 1/16 of its size), summed from linear pixels",
    )  # fmt: skip
    p.add_argument(
        "--ema", type=float, default=0.999, metavar="DECAY",
        help="validate and keep an exponential moving average of the weights with this decay "
        "per step, 0 for the weights as trained (default: 0.999)",
    )  # fmt: skip
    p.add_argument(
        "--views", type=int, default=2, choices=(1, 2, 4, 8),
        help="predictions average the image's symmetries: 2 = it and its mirror image (magnitude "
        "errors 3-6%% smaller on the default simulation, for twice the time); 4 = quarter "
        "turns; 8 = all (default: 2)",
    )  # fmt: skip
    p.add_argument(
        "--head-activation", default="gelu", choices=("relu", "gelu"),
        help="of the hidden layer of the network's head: gelu keeps every unit learning; with "
        "relu (the default before) about half never fire (default: gelu)",
    )  # fmt: skip
    p.add_argument(
        "--baseline", type=int, default=100, metavar="N",
        help="test galaxies also fitted with a Sersic profile, 0 for none (default: 100)",
    )  # fmt: skip
    _add_workers(p, "data-loading processes")
    add_device_options(p)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN")
    p.add_argument("--overwrite", action="store_true", help="replace what is in the folder")
    p.set_defaults(run=_run_regressor)


def _run_regressor(args: argparse.Namespace) -> int:
    from galclust.provenance import is_lead, now
    from galclust.regress import RegressorOptions, train_regressor

    started = now()
    options = RegressorOptions(
        source=args.data,
        output=args.output,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
        augment=not args.no_augment,
        seeing=args.seeing,
        nll_beta=args.nll_beta,
        ema=args.ema,
        apertures=not args.no_apertures,
        views=args.views,
        head_activation=args.head_activation,
        baseline=args.baseline,
        workers=args.workers,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        precision=args.precision,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    report = train_regressor(options)
    if is_lead():  # one summary, not one per device
        print(report.summary())
    _wrote(args.output, "train regressor", options, started, {"epochs": report.epochs})
    return 0


def add_predict(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "predict",
        help="measure galaxy parameters with a trained regressor",
        description="Apply a regressor (galclust train regressor) to a catalog, a scanned "
        "folder or a simulation: one row per galaxy with each target and its 1-sigma "
        "uncertainty. Images are cropped or noise-padded to the training size and scaled as "
        "in training; the pixel scale must match the training simulation's.",
        epilog="example:\n  galclust predict runs/mag/checkpoints/best.ckpt cosmos.csv -o "
        "predictions.parquet --zeropoint 25.94",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="RUN/checkpoints/best.ckpt")
    p.add_argument("data", metavar="DATA", help="catalog, scan catalog or simulate folder")
    p.add_argument("-o", "--output", default="predictions.parquet", help="parquet or csv")
    p.add_argument(
        "--pixel-scale", type=float,
        help="arcsec/pixel of the images (default: from the FITS header, else the training's)",
    )  # fmt: skip
    p.add_argument(
        "--zeropoint", type=float,
        help="AB magnitude of one image unit (default: the training simulation's)",
    )  # fmt: skip
    p.add_argument(
        "--psf-fwhm", type=float, metavar="ARCSEC",
        help="seeing of every image, for a regressor trained with it (default: the catalog's "
        "column, else the training median)",
    )  # fmt: skip
    p.add_argument(
        "--mask-neighbours", action="store_true",
        help="replace sources detached from the central galaxy by sky noise first (the "
        "regressor learned on isolated galaxies); adds column masked_pixels",
    )  # fmt: skip
    p.add_argument(
        "--sky", metavar="COLUMN",
        help="for images that are not sky-subtracted: the catalog column of each image's sky "
        "level per pixel (image units), subtracted first; COLUMN_<band> per band also works "
        "(default: none subtracted)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
    _add_workers(p, "image-reading processes")
    p.set_defaults(run=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from galclust.provenance import now
    from galclust.regress import predict

    started = now()
    report = predict(
        args.checkpoint,
        args.data,
        args.output,
        pixel_scale=args.pixel_scale,
        zeropoint=args.zeropoint,
        psf_fwhm=args.psf_fwhm,
        batch_size=args.batch_size,
        workers=args.workers,
        mask_neighbours=args.mask_neighbours,
        sky=args.sky,
    )
    print(report.summary())
    _wrote(
        args.output, "predict", vars(args) | {"run": None}, started, {"count": len(report.table)}
    )
    return 0
