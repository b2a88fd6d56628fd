"""The ``galclust`` command line: parse arguments, call one library function, report.

Expected failures (a bad path, a bad option, an unreadable catalog) print one line and exit with
status 2; ``--debug`` shows the traceback instead. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import NoReturn

from galclust import __version__
from galclust.exceptions import GalclustError

EXIT_USAGE = 2
EXIT_PROBLEMS = 1
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_EPILOG_SCAN = """\
examples:
  galclust scan cutouts/ -o catalog.parquet --shape 3,256,256
  galclust scan survey/ -o catalog.parquet --pattern '*.fits.fz' --workers 4
  galclust scan cutouts/ -o catalog.parquet --verify      # also decode every image

Rescanning into an existing catalog re-reads only new or changed files; an interrupted scan
resumes where it stopped. Beside the catalog: <stem>.txt (kept paths, one per line),
<stem>.rejected.txt (why each file was rejected) and <stem>.provenance.json.
"""


def _add_scan(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "scan",
        help="catalog folders of cutouts (FITS, PNG, JPEG, TIFF, .npy) from their headers",
        description="Find image files below ROOT folders, read each header (not the pixels), "
        "and write one catalog row per file with its shape (C,H,W) and status: ok, or why "
        "it was rejected.",
        epilog=_EPILOG_SCAN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "roots", nargs="+", metavar="ROOT", help="folders to search recursively, or files"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="CATALOG",
        help="catalog to write or update: .parquet (recommended), .csv or .fits",
    )
    p.add_argument(
        "--pattern",
        action="append",
        default=[],
        metavar="GLOB",
        help="file-name glob to include, repeatable (default: every image suffix)",
    )
    _add_read_options(p)
    p.set_defaults(run=_run_scan)


def _wrote(
    output: str, command: str, options: object, started: datetime, results: Mapping[str, object]
) -> None:
    """Write the provenance file beside ``output`` and say where the output is (in the process
    of rank 0 only, when Lightning runs one per device)."""
    from galclust.provenance import is_lead, write_provenance

    if not is_lead():
        return

    write_provenance(
        output, command=command, options=options, started=started, results=dict(results)
    )
    print(f"wrote {output}")


def _add_workers(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        metavar="N",
        help=f"{what} (default: %(default)s)",
    )


def _add_read_options(p: argparse.ArgumentParser) -> None:
    """--shape, --workers and --verify: how files are read and judged (scan, catalog check)."""
    p.add_argument(
        "--shape",
        metavar="C,H,W",
        help="keep only images of this shape, e.g. 3,256,256; others are marked wrong_shape",
    )
    _add_workers(p, "processes reading headers")
    p.add_argument(
        "--verify",
        action="store_true",
        help="also decode pixels: reject truncated, corrupt, blank and NaN/inf images (slower)",
    )


def _run_scan(args: argparse.Namespace) -> int:
    from galclust.catalog.scan import ScanOptions, parse_shape, scan_catalog
    from galclust.provenance import now

    started = now()
    options = ScanOptions(
        roots=tuple(args.roots),
        output=args.output,
        shape=parse_shape(args.shape) if args.shape else None,
        patterns=tuple(args.pattern),
        workers=args.workers,
        verify=args.verify,
    )
    report = scan_catalog(options)
    print(report.summary())
    _wrote(
        args.output,
        "scan",
        options,
        started,
        {"counts": report.counts, "files_per_second": round(report.files_per_second, 1)},
    )
    return 0


def _add_catalog(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "catalog",
        help="work with catalogs made elsewhere (Zoobot CSV, FITS tables)",
        description="Catalog tools. A catalog is a table with at least id_str and file_loc "
        "columns (relative paths are taken from the catalog's folder).",
    )
    catalog_sub = p.add_subparsers(dest="catalog_command", metavar="COMMAND", required=True)
    check = catalog_sub.add_parser(
        "check",
        help="check that every file exists, is readable, and has the expected shape",
        description="Read every file's header, as galclust scan does, and report missing "
        "files, unreadable images and shape mismatches. Exits 1 when any row has a problem.",
        epilog="example:\n"
        "  galclust catalog check gz1/catalog.csv --shape 3,423,423 -o checked.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("catalog", metavar="CATALOG", help="catalog as .csv, .parquet or .fits")
    _add_read_options(check)
    check.add_argument(
        "-o",
        "--output",
        metavar="CATALOG",
        help="write the checked catalog, with the scan columns filled in, here",
    )
    check.set_defaults(run=_run_catalog_check)


def _run_catalog_check(args: argparse.Namespace) -> int:
    from galclust.catalog.check import check_catalog
    from galclust.catalog.scan import parse_shape
    from galclust.catalog.schema import write_catalog
    from galclust.provenance import now

    started = now()
    shape = parse_shape(args.shape) if args.shape else None
    report = check_catalog(args.catalog, shape=shape, workers=args.workers, verify=args.verify)
    print(report.summary())
    if args.output:
        write_catalog(report.catalog, args.output)
        _wrote(args.output, "catalog check", vars(args) | {"run": None}, started, report.counts)
    return 0 if report.ok else EXIT_PROBLEMS


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated numbers") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _add_simulate(sub: argparse._SubParsersAction[_Parser]) -> None:
    from galclust.simulate.params import FAMILIES, SURVEYS

    p = sub.add_parser(
        "simulate",
        help="render labelled GalSim galaxies of known morphology and parameters",
        description="Draw galaxies of six morphological families (elliptical, lenticular, "
        "face-on spiral, edge-on disk, irregular, compact) from their priors, render them with "
        "GalSim (PSF, sky noise, random stamp sizes centre-cropped or noise-padded to --size), "
        "and write images.npy, catalog.parquet (truth, family, train/val/test split) and "
        "previews.",
        epilog="examples:\n"
        "  galclust simulate -n 50000 -o sims/decals\n"
        "  galclust simulate -n 5000 -o sims/hst --survey hst-cosmos --size 128\n"
        "  galclust simulate -n 1000 -o sims/r --bands r --families elliptical,spiral",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-n", type=int, required=True, metavar="N", help="number of galaxies")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default: 128)")
    p.add_argument(
        "--survey", default="decals", choices=list(SURVEYS), help="survey preset (default: decals)"
    )
    p.add_argument("--bands", type=_names, metavar="B,B", help="subset of the preset's bands")
    p.add_argument("--pixel-scale", type=float, metavar="ARCSEC", help="override the preset's")
    p.add_argument("--psf-fwhm", type=float, metavar="ARCSEC", help="median seeing (override)")
    p.add_argument("--zeropoint", type=float, metavar="MAG", help="AB mag of one image unit")
    p.add_argument(
        "--sky-sigma", type=_floats, metavar="S,S",
        help="Gaussian noise per pixel per band, image units (override the preset's depth)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_workers(p, "processes rendering galaxies")
    p.add_argument(
        "--split", type=_floats, default=(0.8, 0.1, 0.1), metavar="TRAIN,VAL,TEST",
        help="fractions of the train/val/test split (default: 0.8,0.1,0.1)",
    )  # fmt: skip
    p.add_argument(
        "--families", type=_names, default=FAMILIES, metavar="F,F",
        help=f"families to draw, in equal numbers (default: {','.join(FAMILIES)})",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace a finished simulation")
    p.set_defaults(run=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from galclust.provenance import now
    from galclust.simulate import SimulateOptions, simulate

    started = now()
    options = SimulateOptions(
        n=args.n,
        output=args.output,
        size=args.size,
        survey=args.survey,
        bands=args.bands,
        pixel_scale=args.pixel_scale,
        psf_fwhm=args.psf_fwhm,
        zeropoint=args.zeropoint,
        sky_sigma=args.sky_sigma,
        seed=args.seed,
        workers=args.workers,
        split=args.split,
        families=args.families,
        overwrite=args.overwrite,
    )
    report = simulate(options)
    print(report.summary())
    _wrote(
        args.output,
        "simulate",
        options,
        started,
        {"redrawn": report.redrawn, "families": report.family_counts},
    )
    return 0


_EPILOG_TRAIN = """\
examples:
  galclust train vae catalog.parquet -o runs/vae35
  galclust train vae sims/decals -o runs/sim --latent-dim 16 --epochs 20
  galclust train vae store/ -o runs/big --accelerator gpu --devices 4 --num-nodes 2
  galclust train vae catalog.parquet -o runs/vae35 --resume --epochs 150   # continue

DATA is a scan catalog (rows with status ok), any catalog with id_str and file_loc, a folder
made by galclust simulate (its train/val split is used), or a store made by galclust pack
(fastest). Inputs are scaled to [-1, 1]: 8-bit images x/127.5-1, float images by a robust
arcsinh stretch; other sizes are centre-cropped or noise-padded (--resize-mode resize keeps the
whole field). The run folder gets checkpoints/best.ckpt and last.ckpt, metrics.csv, loss.png
and reconstructions.png.
"""


def _add_training_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train vae`` and ``sweep``."""
    p.add_argument("data", metavar="DATA", help="catalog, simulate folder or packed store")
    p.add_argument(
        "--image-size", type=int, metavar="PX",
        help="network input size, a multiple of 32 (default: the images' own size when they "
        "share one that is, else 256)",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, default=100, help="epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument(
        "--kld-weight", type=float, default=1e-3,
        help="weight of the KL term against the per-pixel MSE (default: 1e-3)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument(
        "--val-fraction", type=float, default=0.1,
        help="share of galaxies held out for validation (default: 0.1; simulations use their "
        "own split)",
    )  # fmt: skip
    p.add_argument("--no-augment", action="store_true", help="no random flips and rotations")
    p.add_argument(
        "--resize-mode", choices=("crop", "resize"), default="crop",
        help="images of another size: centre-crop/noise-pad (default) or resize",
    )  # fmt: skip
    p.add_argument(
        "--scaling", choices=("auto", "uint8", "asinh"), default="auto",
        help="to [-1, 1]: auto = uint8 for 8-bit images, asinh for float ones",
    )  # fmt: skip
    _add_stretch(p)
    _add_workers(p, "data-loading processes")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default)")
    p.add_argument("--devices", default="auto", help="number or list of devices (default: auto)")
    p.add_argument("--num-nodes", type=int, default=1, help="machines (default: 1)")
    p.add_argument(
        "--precision", default="auto",
        help="auto (bf16-mixed where fast, else 32-true), 32-true, bf16-mixed, 16-mixed",
    )  # fmt: skip
    p.add_argument(
        "--plot-every", type=int, default=5, metavar="N",
        help="write a reconstruction grid every N epochs (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace what is in the folder")


def _add_stretch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stretch", choices=("image", "dataset"), default="image",
        help="arcsinh scale of float images measured per image (default) or once for the "
        "dataset, keeping brightness differences",
    )  # fmt: skip


def _train_options(args: argparse.Namespace, **extra: object) -> object:
    from galclust.train import TrainOptions

    return TrainOptions(
        source=args.data,
        output=args.output,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        kld_weight=args.kld_weight,
        seed=args.seed,
        val_fraction=args.val_fraction,
        augment=not args.no_augment,
        mode=args.resize_mode,
        scaling=args.scaling,
        stretch=args.stretch,
        workers=args.workers,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        precision=args.precision,
        plot_every=args.plot_every,
        overwrite=args.overwrite,
        **extra,  # type: ignore[arg-type]
    )


def _add_train(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (vae: the reference VAE)",
        description="Train a model on a catalog, a simulation or a packed store.",
    )
    train_sub = p.add_subparsers(dest="train_command", metavar="MODEL", required=True)
    vae = train_sub.add_parser(
        "vae",
        help="the reference convolutional VAE of the original study",
        description="Train the reference VAE (5 stride-2 conv blocks, 32-512 channels) with "
        "Lightning; loss = per-pixel MSE + kld_weight x KL.",
        epilog=_EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_training_options(vae)
    vae.add_argument("-o", "--output", default="runs/vae", metavar="RUN", help="run folder")
    vae.add_argument("--latent-dim", type=int, default=35, help="latent size (default: 35)")
    vae.add_argument(
        "--resume", action="store_true",
        help="continue the run in RUN from its last checkpoint (exactly where it stopped)",
    )  # fmt: skip
    vae.set_defaults(run=_run_train_vae)


def _run_train_vae(args: argparse.Namespace) -> int:
    from galclust.provenance import now
    from galclust.train import train_vae

    started = now()
    options = _train_options(args, latent_dim=args.latent_dim, resume=args.resume)
    report = train_vae(options)  # type: ignore[arg-type]
    print(report.summary())
    _wrote(
        args.output,
        "train vae",
        options,
        started,
        {"best_val_loss": report.best_val_loss, "epochs": report.epochs},
    )
    return 0


def _add_sweep(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "sweep",
        help="compare VAE latent sizes: one model per size, the study's figures",
        description="Train one VAE per latent size with the same data, seed and epochs, then "
        "plot training and validation loss of every size on one figure, final validation loss "
        "against size, and the same galaxies reconstructed by every size. Rerunning continues "
        "an interrupted sweep.",
        epilog="example:\n  galclust sweep sims/decals --latent-dims 2,8,16,35,64 --epochs 20 "
        "-o runs/sweep",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_training_options(p)
    p.add_argument("-o", "--output", default="runs/sweep", metavar="DIR", help="sweep folder")
    p.add_argument(
        "--latent-dims", type=_ints, default=(2, 8, 16, 35, 64), metavar="D,D",
        help="latent sizes (default: 2,8,16,35,64)",
    )  # fmt: skip
    p.set_defaults(run=_run_sweep)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers") from None


def _run_sweep(args: argparse.Namespace) -> int:
    from galclust.provenance import now
    from galclust.train import sweep

    started = now()
    options = _train_options(args)
    report = sweep(options, args.latent_dims)  # type: ignore[arg-type]
    print(report.summary())
    _wrote(args.output, "sweep", options, started, {"final_val_loss": report.final_val_loss})
    return 0


def _add_embed(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "embed",
        help="write every galaxy's latent vector from a trained VAE",
        description="Encode every usable galaxy of DATA with the VAE in CHECKPOINT, prepared "
        "exactly as in training. Writes id_str, z_0..z_{d-1} (the latent mean), logvar_mean, "
        "recon_mse and file_loc.",
        epilog="examples:\n"
        "  galclust embed runs/vae35/checkpoints/best.ckpt catalog.parquet -o latents.parquet\n"
        "  galclust embed runs/vae35/checkpoints/best.ckpt store/ -o latents.parquet "
        "--invariant",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a .ckpt from galclust train vae")
    p.add_argument("data", metavar="DATA", help="catalog, simulate folder or packed store")
    p.add_argument("-o", "--output", default="latents.parquet", help="table: .parquet or .csv")
    p.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
    p.add_argument(
        "--invariant", action="store_true",
        help="average the latent mean over the 8 flips and quarter turns (8x slower)",
    )  # fmt: skip
    p.add_argument(
        "--no-recon-error", action="store_true",
        help="skip recon_mse: only the encoder runs (about 3x faster at 256 px on a CPU)",
    )  # fmt: skip
    _add_workers(p, "data-loading processes")
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default)")
    p.add_argument(
        "--precision", choices=("auto", "bf16", "32"), default="auto",
        help="auto: bfloat16 where the hardware does it fast",
    )  # fmt: skip
    p.set_defaults(run=_run_embed)


def _run_embed(args: argparse.Namespace) -> int:
    from galclust.embed import embed
    from galclust.provenance import now

    started = now()
    _, report = embed(
        args.checkpoint,
        args.data,
        args.output,
        batch_size=args.batch_size,
        invariant=args.invariant,
        recon_error=not args.no_recon_error,
        workers=args.workers,
        accelerator=args.accelerator,
        precision=args.precision,
    )
    print(report.summary())
    _wrote(args.output, "embed", vars(args) | {"run": None}, started, {"count": report.count})
    return 0


def _add_pack(sub: argparse._SubParsersAction[_Parser]) -> None:
    from galclust.data.pack import DTYPES

    p = sub.add_parser(
        "pack",
        help="preprocess a catalog once into a fast memory-mapped store",
        description="Decode, resize and scale every usable image of DATA once, into STORE/"
        "images.npy (N, C, S, S) with its catalog, so that training and embedding read "
        "batches without decoding files.",
        epilog="example:\n  galclust pack catalog.parquet -o store/ --image-size 256",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="catalog or simulate folder")
    p.add_argument("-o", "--output", required=True, metavar="STORE", help="store folder")
    p.add_argument(
        "--image-size", type=int, metavar="PX",
        help="stored size, a multiple of 32 (default: as galclust train vae)",
    )  # fmt: skip
    p.add_argument(
        "--dtype", choices=DTYPES, default="auto",
        help="auto: uint8 (lossless) for 8-bit images, float16 for float ones",
    )  # fmt: skip
    p.add_argument("--resize-mode", choices=("crop", "resize"), default="crop")
    p.add_argument("--scaling", choices=("auto", "uint8", "asinh"), default="auto")
    _add_stretch(p)
    _add_workers(p, "processes decoding images")
    p.add_argument("--overwrite", action="store_true", help="replace a finished store")
    p.set_defaults(run=_run_pack)


def _run_pack(args: argparse.Namespace) -> int:
    from galclust.data.pack import PackOptions, pack
    from galclust.provenance import now

    started = now()
    options = PackOptions(
        source=args.data,
        output=args.output,
        image_size=args.image_size,
        dtype=args.dtype,
        mode=args.resize_mode,
        scaling=args.scaling,
        stretch=args.stretch,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    report = pack(options)
    print(report.summary())
    _wrote(args.output, "pack", options, started, {"count": report.count})
    return 0


_EPILOG_CLUSTER = """\
examples:
  galclust cluster latents.parquet -o clusters/
  galclust cluster latents.parquet -o clusters/ --labels sims/decals:family
  galclust cluster latents.parquet -o clusters/ --method hdbscan --data store/
  galclust assign clusters/model.joblib new_latents.parquet -o assigned.parquet

The number of clusters is chosen from the data (Gaussian-mixture BIC over --k-min..--k-max,
checked by bootstrap stability); k-means, the mixture and Ward clustering vote, and galaxies they
disagree on get low confidence (--min-confidence labels them -1, unclassified). Writes
clusters.parquet, summary.json, model.joblib, scores_vs_k.png, map.png, overview.png and
gallery/cluster_NN.png; with --labels also the scores against the labels, for galclust and for a
raw-pixel PCA + k-means baseline, and confusion matrices.
"""


def _add_cluster(sub: argparse._SubParsersAction[_Parser]) -> None:
    from galclust.cluster import METHODS, SCALINGS

    p = sub.add_parser(
        "cluster",
        help="group galaxies by their latent vectors, choosing the number of groups",
        description="Cluster the latents written by galclust embed, with per-galaxy "
        "confidence, outliers, galleries and a map.",
        epilog=_EPILOG_CLUSTER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("latents", metavar="LATENTS", help="table from galclust embed")
    p.add_argument("-o", "--output", default="clusters", metavar="DIR", help="output folder")
    p.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="auto: vote of gmm, kmeans and agglomerative (default)",
    )
    p.add_argument("--k", type=int, metavar="K", help="fix the number of clusters")
    p.add_argument("--k-min", type=int, default=2, help="default: %(default)s")
    p.add_argument("--k-max", type=int, default=30, help="default: %(default)s")
    p.add_argument(
        "--scaling",
        choices=SCALINGS,
        default="whiten",
        help="of the latents before clustering (default: whiten, PCA-whitening)",
    )
    p.add_argument(
        "--variance",
        type=float,
        default=1.0,
        metavar="F",
        help="with whiten: keep the principal components explaining this share (default: all)",
    )
    p.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        metavar="C",
        help="label galaxies below this confidence -1, unclassified (default: 0)",
    )
    p.add_argument(
        "--labels",
        metavar="CATALOG:COLUMN",
        help="score the clusters against a label column, e.g. sims/decals:family",
    )
    p.add_argument(
        "--data",
        metavar="DATA",
        help="where the images are, for galleries and the baseline (default: the "
        "latents' file_loc)",
    )
    p.add_argument("--map", choices=("umap", "pca"), default="umap", help="2-D map method")
    p.add_argument("--map-sample", type=int, default=5000, help="galaxies on the map")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(run=_run_cluster)


def _run_cluster(args: argparse.Namespace) -> int:
    from galclust.cluster import ClusterOptions, cluster_latents
    from galclust.provenance import now

    started = now()
    options = ClusterOptions(
        latents=args.latents,
        output=args.output,
        method=args.method,
        k=args.k,
        k_min=args.k_min,
        k_max=args.k_max,
        scaling=args.scaling,
        variance=args.variance,
        min_confidence=args.min_confidence,
        labels=args.labels,
        data=args.data,
        map=args.map,
        map_sample=args.map_sample,
        seed=args.seed,
    )
    report = cluster_latents(options)
    print(report.text())
    _wrote(args.output, "cluster", options, started, {"k": report.model.n_clusters_})
    return 0


def _add_assign(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "assign",
        help="put new galaxies into the clusters of a saved model",
        description="Assign each galaxy of a latents table (embedded with the same checkpoint) "
        "to the clusters of MODEL, with confidence and outlier flags.",
    )
    p.add_argument("model", metavar="MODEL", help="model.joblib from galclust cluster")
    p.add_argument("latents", metavar="LATENTS", help="table from galclust embed")
    p.add_argument("-o", "--output", default="assigned.parquet", help="table to write")
    p.set_defaults(run=_run_assign)


def _run_assign(args: argparse.Namespace) -> int:
    from galclust.cluster import assign
    from galclust.provenance import now

    started = now()
    result = assign(args.model, args.latents, args.output)
    counts = result["cluster"].value_counts().sort_index()
    print(f"assigned {len(result)} galaxies: " + ", ".join(f"{c}: {n}" for c, n in counts.items()))
    _wrote(args.output, "assign", vars(args) | {"run": None}, started, {"count": len(result)})
    return 0


def _add_demo(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run every stage end to end on built-in data",
        description="Generate a small set of galaxy cutouts with GalSim (mixed formats and "
        "sizes, a few broken files) and run every galclust stage on them, writing the same "
        "layout a run on your own data would have.",
    )
    p.add_argument(
        "-o",
        "--output",
        default="galclust-demo",
        metavar="DIR",
        help="run folder (default: %(default)s)",
    )
    p.add_argument("--quick", action="store_true", help="a smaller run, for tests")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from galclust.demo import run_demo

    run_demo(args.output, quick=args.quick, seed=args.seed)
    return 0


def build_parser() -> _Parser:
    """The ``galclust`` argument parser with every subcommand."""
    parser = _Parser(
        prog="galclust",
        description="Group galaxy cutouts by morphology without labels: catalog the images, "
        "reduce them with a VAE, cluster the latents. Start with: galclust demo",
    )
    parser.add_argument("--version", action="version", version=f"galclust {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for add in (
        _add_scan, _add_catalog, _add_simulate, _add_pack, _add_train, _add_sweep,
        _add_embed, _add_cluster, _add_assign, _add_demo,
    ):  # fmt: skip
        add(sub)
    return parser


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    print(f"galclust: warning: {message}", file=sys.stderr)


def _configure_logging(*, quiet: bool) -> None:
    """Progress lines of galclust's own loggers on stderr; other libraries keep their settings."""
    logger = logging.getLogger("galclust")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    # Lightning's banners (devices, tips); galclust logs the device and precision it uses
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def use_system_allocator() -> None:
    """Give pyarrow the system allocator for this process, as the galclust command does.

    pyarrow's default pool (mimalloc in the wheels) keeps what a stage frees for itself, so the
    next stage's pandas and numpy memory comes on top; with the shared system allocator a
    100,000-file scan measured 167 MB peak instead of 196 MB (104 MB of it is the imports).
    """
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def _one_line(exc: BaseException) -> str:
    """The message of ``exc``; for one re-raised from a DataLoader worker, the original one."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``galclust`` command; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(quiet=args.quiet)
    use_system_allocator()
    run: Callable[[argparse.Namespace], int] = args.run
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return run(args)
    except GalclustError as exc:
        if args.debug:
            raise
        print(f"galclust {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.debug:
            raise
        again = "again with --resume" if args.command == "train" else "the same command again"
        print(
            f"galclust {args.command}: interrupted; finished work is kept, run {again} to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
