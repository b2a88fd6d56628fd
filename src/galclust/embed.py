"""``galclust embed``: the latent vector of every galaxy, from a trained VAE or contrastive
encoder checkpoint.

The output table has one row per galaxy: ``id_str``, ``z_0 .. z_{d-1}`` (the VAE's latent mean
mu, or the contrastive encoder's representation), for a VAE ``logvar_mean`` (the mean log
variance: how unsure the encoder is) and ``recon_mse`` (the reconstruction error from mu, large
for unusual galaxies and artefacts), and where the image is
(``file_loc``, with ``image_index``, ``format`` and ``hdu`` when the source has them).
Images are prepared exactly as in training (the checkpoint stores the preprocessing).
``invariant`` averages mu over the 8 flips and quarter turns of each galaxy, so that
orientation does not drive the clustering.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.data import Subset

from galclust.catalog.schema import write_catalog
from galclust.data.dataset import open_source
from galclust.data.transforms import Preprocess, symmetry, usable
from galclust.exceptions import GalclustFileError, GalclustValueError
from galclust.models import contrastive
from galclust.models.checkpoint import load_checkpoint
from galclust.models.lightning import CHECKPOINT_KIND, VAEModule
from galclust.progress import Progress

log = logging.getLogger(__name__)


def load_model(path: str | os.PathLike[str]) -> VAEModule | contrastive.ContrastiveModule:
    """A trained VAE or contrastive encoder from a galclust checkpoint, in eval mode on the CPU.

    Loaded with ``weights_only=True`` (no code in the file is run).

    Raises
    ------
    GalclustFileError
        The file is missing, truncated or not a checkpoint.
    GalclustValueError
        A checkpoint of another model (a regressor: use galclust predict) or architecture.
    """
    kinds: dict[str, type[VAEModule] | type[contrastive.ContrastiveModule]] = {
        CHECKPOINT_KIND: VAEModule,
        contrastive.CHECKPOINT_KIND: contrastive.ContrastiveModule,
    }
    wanted = (
        "a checkpoint of galclust train vae or train contrastive (regressors: galclust predict)"
    )
    module, _ = load_checkpoint(path, kinds, wanted)
    return module


def fused(module: VAEModule | contrastive.ContrastiveModule) -> nn.Module:
    """A copy of the network for inference with each BatchNorm folded into its convolution."""
    import copy

    model = copy.deepcopy(module.model).eval().float()
    for sequence in model.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        layers = list(sequence)
        for i in range(len(layers) - 1):
            conv, norm = layers[i], layers[i + 1]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(
                norm, nn.BatchNorm2d
            ):
                transpose = isinstance(conv, nn.ConvTranspose2d)
                sequence[i] = fuse_conv_bn_eval(conv, norm, transpose=transpose)
                sequence[i + 1] = nn.Identity()
    return model


def image_locations(catalog: pd.DataFrame) -> dict[str, np.ndarray]:
    """Where each galaxy's original image is (``file_loc``, and ``image_index``, ``format``,
    ``hdu`` where known), so that galleries can show it; for a packed store, the file it was
    packed from rather than the store."""
    packed = "source_loc" in catalog
    columns = {
        "file_loc": "source_loc" if packed else "file_loc",
        "image_index": "source_index" if packed else "image_index",
        "format": "format",
        "hdu": "hdu",
    }
    return {
        name: catalog[column].to_numpy() for name, column in columns.items() if column in catalog
    }


@dataclass
class EmbedReport:
    """What was embedded."""

    output: Path
    count: int
    latent_dim: int
    seconds: float
    skipped: list[str]
    images_per_s: float  # while encoding (without loading the model and catalog)

    def summary(self) -> str:
        return (
            f"embedded {self.count} galaxies into {self.latent_dim} dimensions in "
            f"{self.seconds:.1f} s ({self.images_per_s:,.0f}/s); {len(self.skipped)} all-NaN "
            "images skipped"
        )


def _encode(
    model: nn.Module, images: torch.Tensor, is_vae: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(latent, log variance) of a VAE, (representation, None) of a contrastive encoder."""
    if is_vae:
        mu, logvar = model.encode(images)  # type: ignore[operator]
        return mu.float(), logvar.float()
    return model(images).float(), None


_PRECISIONS = {"bf16-mixed": "bf16", "bf16-true": "bf16", "32-true": "32"}


def _fabric(accelerator: str, devices: str, num_nodes: int, strategy: str) -> L.Fabric:
    """Lightning Fabric on the chosen devices, launched: the other processes of a multi-device
    run start here (Fabric runs the command again for each; under torchrun or srun they are
    already running) and the process group is set up."""
    from galclust.train import parse_devices

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise GalclustValueError("--accelerator gpu: no GPU is visible; use --accelerator cpu")
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise GalclustValueError(f"--accelerator {accelerator!r}: choose cpu, gpu or auto")
    if num_nodes < 1:
        raise GalclustValueError(f"--num-nodes {num_nodes} must be at least 1")
    if strategy not in ("auto", "ddp"):
        raise GalclustValueError(
            f"--strategy {strategy!r}: embed runs one process per device with auto or ddp"
        )
    gpu = accelerator != "cpu" and torch.cuda.is_available()
    count = parse_devices(devices)  # its own one-line error
    try:
        fabric = L.Fabric(
            accelerator="cuda" if gpu else "cpu",
            devices=count,
            num_nodes=num_nodes,
            strategy=strategy,
            precision="32-true",  # embed casts the weights itself (bf16 where fast)
        )
    except (ValueError, RuntimeError, MisconfigurationException) as exc:  # e.g. too many devices
        raise GalclustValueError(
            f"--devices {devices} --num-nodes {num_nodes} --strategy {strategy}: {exc}"
        ) from None
    fabric.launch()
    return fabric


def _gather(fabric: L.Fabric, n: int, shares: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Every rank's share of each array, put back in row order (rank r holds the r-th of
    ``np.array_split(range(n), world_size)``); the shares are padded to one length for the
    collective and the padding dropped."""
    world = fabric.world_size
    sizes = [len(s) for s in np.array_split(np.arange(n), world)]
    out = []
    for local in shares:
        padded = np.full((sizes[0], *local.shape[1:]), np.nan, np.float32)
        padded[: len(local)] = local
        mine = torch.from_numpy(padded).to(fabric.device)  # NCCL gathers on the GPU
        every = [torch.empty_like(mine) for _ in range(world)]
        torch.distributed.all_gather(every, mine)  # the group Fabric set up
        out.append(np.concatenate([every[r][: sizes[r]].cpu().numpy() for r in range(world)]))
    return tuple(out)


def embed(
    checkpoint: str | os.PathLike[str],
    source_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 128,
    invariant: bool = False,
    recon_error: bool = True,
    workers: int = 2,
    accelerator: str = "auto",
    precision: str = "auto",
    devices: str = "1",
    num_nodes: int = 1,
    strategy: str = "auto",
) -> tuple[pd.DataFrame, EmbedReport]:
    """Latent vectors of every usable galaxy of ``source_path``; written to ``output`` if given.

    With several devices or nodes (``devices``, ``num_nodes``; or when started by torchrun or
    srun) Lightning Fabric runs one process per device (DDP). Each process encodes a contiguous
    share of the rows, every row exactly once (no sampler padding), and rank 0 gathers the
    shares in catalog order and writes the table: the same table as one process. The other
    ranks return an empty table. One device is the default here, because Fabric starts the
    other processes by running the command again; the command line passes ``--devices auto``,
    every visible device.

    Parameters
    ----------
    recon_error : bool
        Also run the VAE's decoder for ``recon_mse`` (about 3x the cost of the latents alone at
        256 px on a CPU); a contrastive encoder has none.
    precision : {"auto", "bf16", "32"}
        ``auto`` uses bfloat16 weights where the hardware does it fast (Lightning's names
        ``bf16-mixed``, ``bf16-true`` and ``32-true`` are accepted too).
    """
    from galclust.train import make_loader, resolve_precision

    start = time.perf_counter()
    if batch_size < 1:
        raise GalclustValueError(f"--batch-size {batch_size} must be at least 1")
    module = load_model(checkpoint)
    is_vae = isinstance(module, VAEModule)
    recon_error = recon_error and is_vae
    preprocess = Preprocess.from_dict(module.hparams["preprocess"])
    source = open_source(source_path)
    channels = source.channels()
    if channels != module.hparams["in_channels"]:
        raise GalclustValueError(
            f"{source_path} has {channels}-channel images, the model was trained on "
            f"{module.hparams['in_channels']}; embed data like the training data"
        )
    if (
        source.packed is not None
        and Preprocess.from_dict(source.packed["preprocess"]) != preprocess
    ):
        raise GalclustValueError(
            f"{source_path} was packed with other preprocessing ({source.packed['preprocess']}) "
            f"than the model was trained with ({preprocess.to_dict()}); pack again with the "
            "training settings or embed the catalog itself"
        )
    data = source.dataset(preprocess, channels=channels)
    precision = _PRECISIONS.get(precision, precision)
    if precision not in ("auto", "bf16", "32"):
        raise GalclustValueError(f"--precision {precision!r}: choose auto, bf16 or 32")
    fabric = _fabric(accelerator, devices, num_nodes, strategy)
    device = fabric.device
    use_bf16 = precision == "bf16" or (
        precision == "auto" and resolve_precision("auto", device.type).startswith("bf16")
    )
    # inference in bfloat16 weights outright: no per-batch casts as under autocast
    dtype = torch.bfloat16 if use_bf16 else torch.float32
    model = fused(module).to(device, dtype, memory_format=torch.channels_last)  # type: ignore[call-overload]
    latent = int(module.hparams["latent_dim"])
    n = len(data)
    world, rank = fabric.world_size, fabric.global_rank
    share = np.array_split(np.arange(n), world)[rank]
    mu_all = np.full((len(share), latent), np.nan, np.float32)
    logvar_all = np.full(len(share), np.nan, np.float32)
    mse_all = np.full(len(share), np.nan, np.float32)
    loader = make_loader(Subset(data, share.tolist()), batch_size, workers)
    what = "embedding" if world == 1 else f"embedding (rank {rank} of {world}, its share)"
    progress = Progress(len(share), what, unit="galaxies")
    done = 0
    try:
        looped = time.perf_counter()
        with torch.inference_mode():
            for batch in loader:
                rows = slice(done, done + len(batch))
                done += len(batch)
                keep = usable(batch)
                images = batch[keep].to(device, dtype, non_blocking=True)
                if not len(images):
                    progress.update(len(batch))
                    continue
                images = images.contiguous(memory_format=torch.channels_last)
                mu, logvar = _encode(model, images, is_vae)
                plain = mu  # the reconstruction error is that of the image as it is
                if invariant:
                    for s in range(1, 8):
                        mu = mu + _encode(model, symmetry(images, s), is_vae)[0]
                    mu = mu / 8
                picked = keep.numpy()
                mu_all[rows][picked] = mu.cpu().numpy()
                if logvar is not None:
                    logvar_all[rows][picked] = logvar.mean(1).cpu().numpy()
                if recon_error:
                    recon = model.decode(plain.to(dtype)).float()
                    err = (recon - images.float()).pow(2).flatten(1).mean(1)
                    mse_all[rows][picked] = err.cpu().numpy()
                progress.update(len(batch))
    finally:
        progress.close()
    looped = time.perf_counter() - looped
    if world > 1:
        mu_all, logvar_all, mse_all = _gather(fabric, n, (mu_all, logvar_all, mse_all))
        if rank != 0:
            return pd.DataFrame(), EmbedReport(Path(), 0, latent, 0.0, [], 0.0)
    ids = source.catalog["id_str"].astype(str).to_numpy()
    bad = np.isnan(mu_all[:, 0])
    table = pd.DataFrame(mu_all[~bad], columns=[f"z_{i}" for i in range(latent)])
    table.insert(0, "id_str", ids[~bad])
    if is_vae:
        table["logvar_mean"] = logvar_all[~bad]
    if recon_error:
        table["recon_mse"] = mse_all[~bad]
    for column, values in image_locations(source.catalog).items():
        table[column] = values[~bad]
    skipped = ids[bad].tolist()
    if skipped:
        shown = ", ".join(skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        warnings.warn(f"skipped {len(skipped)} all-NaN images: {shown}", stacklevel=2)
    if output is not None:
        try:
            write_catalog(table, output)
        except OSError as exc:
            raise GalclustFileError(f"cannot write {output} ({exc.strerror})") from exc
    report = EmbedReport(
        Path(output) if output else Path(),
        len(table),
        latent,
        time.perf_counter() - start,
        skipped,
        n / looped if looped else float("inf"),  # all ranks together
    )
    return table, report
