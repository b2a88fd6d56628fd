"""Subcommands of the model stages: ``pack``, ``train vae``, ``sweep``, ``embed``, ``cluster``,
``assign`` (the parser and error handling are in :mod:`galclust.cli`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from galclust.cli import _add_workers, _ints, _Parser, _wrote

if TYPE_CHECKING:
    from galclust.train import TrainOptions


_EPILOG_TRAIN = """\
examples:
  galclust train vae catalog.parquet -o runs/vae35
  galclust train vae sims/decals -o runs/sim --latent-dim 16 --epochs 20
  galclust train vae store/ -o runs/big --accelerator gpu --devices 4 --num-nodes 2
  galclust train vae catalog.parquet -o runs/vae35 --resume --epochs 150   # continue

DATA is a scan catalog (rows with status ok), any catalog with id_str and file_loc, a folder
made by galclust simulate (its train/val split is used), or a store made by galclust pack
(fastest). Each image is first framed on its galaxy (centred, cropped to 1.5 x its 90%-light
radius, neighbours replaced by sky, major axis horizontal) and scaled by the galaxy's own
brightness; --frame field keeps the whole cutout, as the original study did: 8-bit images
x/127.5-1, float images by a robust arcsinh stretch, other sizes centre-cropped or noise-padded
(--resize-mode resize keeps the whole field). The run folder gets checkpoints/best.ckpt and
last.ckpt, metrics.csv, loss.png and reconstructions.png.
"""


def _add_vae_options(p: argparse.ArgumentParser) -> None:
    """Options of ``train vae`` and ``sweep``."""
    _add_training_options(p, batch_size=64)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument(
        "--kld-weight", type=float, default=1e-3,
        help="weight of the KL term against the per-pixel MSE (default: 1e-3)",
    )  # fmt: skip
    p.add_argument(
        "--plot-every", type=int, default=5, metavar="N",
        help="write a reconstruction grid every N epochs (default: %(default)s)",
    )  # fmt: skip


def _add_training_options(p: argparse.ArgumentParser, *, batch_size: int) -> None:
    """Options shared by every training command."""
    p.add_argument("data", metavar="DATA", help="catalog, simulate folder or packed store")
    p.add_argument(
        "--image-size", type=int, metavar="PX",
        help="network input size, a multiple of 32 (default: the images' own size when they "
        "share one that is, else 256)",
    )  # fmt: skip
    p.add_argument("--epochs", type=int, default=100, help="epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=batch_size, help="default: %(default)s")
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
    _add_frame(p, None)
    _add_workers(p, "data-loading processes")
    add_device_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace what is in the folder")


_TRAINING_PRECISION = "auto (bf16-mixed where fast, else 32-true), 32-true, bf16-mixed, 16-mixed"


_TRAINING_STRATEGY = "Lightning strategy: auto (DDP with several devices), ddp, ddp_spawn, fsdp"


def add_device_options(
    p: argparse.ArgumentParser,
    precision: str = _TRAINING_PRECISION,
    strategy: str = _TRAINING_STRATEGY,
) -> None:
    """``--accelerator``, ``--devices``, ``--num-nodes``, ``--strategy`` and ``--precision``
    (whose choices ``strategy`` and ``precision`` say) of training and embedding."""
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto (default)")
    p.add_argument("--devices", default="auto", help="number or list of devices (default: auto)")
    p.add_argument("--num-nodes", type=int, default=1, help="machines (default: 1)")
    p.add_argument("--strategy", default="auto", help=strategy)
    p.add_argument("--precision", default="auto", help=precision)


def _add_stretch(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stretch", choices=("image", "dataset"), default="image",
        help="arcsinh scale of float images measured per image (default) or once for the "
        "dataset, keeping brightness differences",
    )  # fmt: skip


def _add_frame(p: argparse.ArgumentParser, default: str | None) -> None:
    said = "galaxy (a packed store: its own)" if default is None else default
    p.add_argument(
        "--frame", choices=("field", "galaxy"), default=default,
        help="galaxy: centre and crop on the galaxy, neighbours replaced by sky, scaled by its "
        "own brightness; field: the whole cutout, as the original study (default: "
        f"{said})",
    )  # fmt: skip
    p.add_argument(
        "--extent", type=float, default=1.5,
        help="galaxy frame: half-side of the crop in 90%%-light radii (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--no-align", action="store_true",
        help="galaxy frame: keep the orientation (default: major axis turned horizontal)",
    )  # fmt: skip


def _train_options(args: argparse.Namespace, **extra: object) -> TrainOptions:
    from galclust.train import TrainOptions

    return TrainOptions(
        source=args.data,
        output=args.output,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        val_fraction=args.val_fraction,
        augment=not args.no_augment,
        mode=args.resize_mode,
        scaling=args.scaling,
        stretch=args.stretch,
        frame=args.frame,
        extent=args.extent,
        align=not args.no_align,
        workers=args.workers,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        precision=args.precision,
        overwrite=args.overwrite,
        **extra,  # type: ignore[arg-type]
    )


def add_train(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (vae: the reference VAE; contrastive: the morphology encoder; "
        "regressor: measures galaxy parameters)",
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
    _add_vae_options(vae)
    _add_run_options(vae, "runs/vae", latent_dim=35)
    contrastive = train_sub.add_parser(
        "contrastive",
        help="a self-supervised contrastive encoder (SimCLR) for morphology",
        description="Train a small residual CNN with SimCLR's contrastive loss: two random "
        "views of each galaxy (any rotation, flips, +-20%% zoom, small shifts, blur, "
        "brightness, colour and noise) must be recognised as the same galaxy among the batch. "
        "Images are framed on their galaxy first (see galclust train vae --help).",
        epilog=_EPILOG_CONTRASTIVE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_training_options(contrastive, batch_size=128)
    contrastive.add_argument(
        "--lr", type=float, default=2e-3,
        help="AdamW learning rate, x 0.97 every epoch (default: %(default)s)",
    )  # fmt: skip
    contrastive.add_argument(
        "--temperature", type=float, default=0.2,
        help="of the contrastive loss (default: %(default)s)",
    )  # fmt: skip
    _add_run_options(contrastive, "runs/contrastive", latent_dim=32)
    from galclust.cli_regress import add_regressor

    add_regressor(train_sub)


def _add_run_options(p: argparse.ArgumentParser, output: str, *, latent_dim: int) -> None:
    p.add_argument("-o", "--output", default=output, metavar="RUN", help="run folder")
    p.add_argument(
        "--latent-dim", type=int, default=latent_dim,
        help="size of the latent vector (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--resume", action="store_true",
        help="continue the run in RUN from its last checkpoint (exactly where it stopped)",
    )  # fmt: skip
    p.set_defaults(run=_run_train)


_EPILOG_CONTRASTIVE = """\
examples:
  galclust train contrastive catalog.parquet -o runs/simclr --epochs 100
  galclust embed runs/simclr/checkpoints/best.ckpt catalog.parquet -o latents.parquet
  galclust cluster latents.parquet -o clusters/

Network input: 64 px by default (--image-size). The run folder gets checkpoints/best.ckpt and
last.ckpt, metrics.csv (loss and pair_accuracy: how often a view's nearest neighbour in the
batch is the other view of its galaxy), loss.png and views.png (what the augmentations do).
"""


def _run_train(args: argparse.Namespace) -> int:
    from galclust.provenance import now
    from galclust.train import train_vae

    started = now()
    model = args.train_command
    extra: dict[str, object] = {"model": model, "latent_dim": args.latent_dim}
    if model == "vae":
        extra |= {"kld_weight": args.kld_weight, "plot_every": args.plot_every}
    else:
        extra |= {"temperature": args.temperature}
    options = _train_options(args, resume=args.resume, **extra)
    report = train_vae(options)
    print(report.summary())
    _wrote(
        args.output,
        f"train {model}",
        options,
        started,
        {"best_val_loss": report.best_val_loss, "epochs": report.epochs},
    )
    return 0


def add_sweep(sub: argparse._SubParsersAction[_Parser]) -> None:
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
    _add_vae_options(p)
    p.add_argument("-o", "--output", default="runs/sweep", metavar="DIR", help="sweep folder")
    p.add_argument(
        "--latent-dims", type=_ints, default=(2, 8, 16, 35, 64), metavar="D,D",
        help="latent sizes (default: 2,8,16,35,64)",
    )  # fmt: skip
    p.set_defaults(run=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    from galclust.provenance import now
    from galclust.train import sweep

    started = now()
    options = _train_options(args, kld_weight=args.kld_weight, plot_every=args.plot_every)
    report = sweep(options, args.latent_dims)
    print(report.summary())
    _wrote(args.output, "sweep", options, started, {"final_val_loss": report.final_val_loss})
    return 0


def add_embed(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "embed",
        help="write every galaxy's latent vector from a trained VAE or contrastive encoder",
        description="Encode every usable galaxy of DATA with the model in CHECKPOINT, prepared "
        "exactly as in training. Writes id_str, z_0..z_{d-1} (the VAE's latent mean or the "
        "contrastive representation), for a VAE logvar_mean and recon_mse, and file_loc.",
        epilog="examples:\n"
        "  galclust embed runs/vae35/checkpoints/best.ckpt catalog.parquet -o latents.parquet\n"
        "  galclust embed runs/vae35/checkpoints/best.ckpt store/ -o latents.parquet "
        "--invariant\n"
        "  galclust embed runs/vae35/checkpoints/best.ckpt store/ -o latents.parquet "
        "--accelerator gpu --devices 4   # one process per GPU, each a share of the rows",
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
    add_device_options(
        p,
        precision="auto (bfloat16 where the hardware does it fast), bf16 or 32",
        strategy="auto or ddp: one process per device, each a share of the galaxies",
    )
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
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
    )
    print(report.summary())
    _wrote(args.output, "embed", vars(args) | {"run": None}, started, {"count": report.count})
    return 0


def add_pack(sub: argparse._SubParsersAction[_Parser]) -> None:
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
        help="stored size: a multiple of 32 for the VAE (default: as galclust train vae)",
    )  # fmt: skip
    p.add_argument(
        "--dtype", choices=DTYPES, default="auto",
        help="auto: uint8 (lossless) for 8-bit images, float16 for float ones",
    )  # fmt: skip
    p.add_argument("--resize-mode", choices=("crop", "resize"), default="crop")
    p.add_argument("--scaling", choices=("auto", "uint8", "asinh"), default="auto")
    _add_stretch(p)
    _add_frame(p, "galaxy")
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
        frame=args.frame,
        extent=args.extent,
        align=not args.no_align,
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


def add_cluster(sub: argparse._SubParsersAction[_Parser]) -> None:
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


def add_assign(sub: argparse._SubParsersAction[_Parser]) -> None:
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
