"""``galclust train vae|contrastive`` and ``galclust sweep``: train the reference VAE or the
contrastive encoder with Lightning.

A run folder holds::

    checkpoints/best.ckpt     lowest validation loss so far
    checkpoints/last.ckpt     end of the last finished epoch (what --resume continues from)
    metrics.csv               one row per epoch: losses, learning rate, images/s, skipped images
    loss.png                  training and validation loss against epoch
    reconstructions.png       fixed validation galaxies (top) above their reconstructions
    reconstructions/epoch_NNNN.png   the same, every few epochs
    views.png                 (contrastive) validation galaxies above random training views
    run.json                  the options and whether the run finished
    provenance.json

Lightning runs the loop, the checkpoints and the devices (``--accelerator``, ``--devices``,
``--num-nodes``, ``--precision``). Checkpoints are written to a temporary file and renamed, so a
full disk never destroys the previous one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, Dataset, Sampler

from galclust.catalog.schema import atomic_write_text, write_catalog
from galclust.data.augment import galaxy_views
from galclust.data.dataset import (
    GalaxyData,
    ImageDataset,
    Source,
    collate,
    default_frame,
    open_source,
    preload,
)
from galclust.data.transforms import Preprocess
from galclust.exceptions import GalclustFileError, GalclustValueError
from galclust.models.contrastive import ContrastiveModule
from galclust.models.lightning import VAEModule
from galclust.models.vae import check_image_size
from galclust.plots import image_rows, loss_curves, metric_against
from galclust.provenance import is_lead

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
#: Options that define the model and data of a run: a resumed run must keep them.
_FIXED = ("source", "model", "latent_dim", "image_size", "kld_weight", "temperature", "lr",
          "seed", "val_fraction", "augment", "mode", "scaling", "stretch", "frame", "extent",
          "align", "batch_size")  # fmt: skip
MODELS = ("vae", "contrastive")
CONTRASTIVE_SIZE = 64  # default input of the contrastive encoder, pixels
ALIGNED_ROTATION = 15.0  # random turns of aligned galaxies' views, degrees (measured: 15 > 180)
_PRELOAD_BYTES = 2 * 1024**3  # framed images are prepared once and held in memory up to this
_GRID = 8  # galaxies in the reconstruction figures
_METRICS = {"vae": ("loss", "mse", "kld"), "contrastive": ("loss", "pair_accuracy")}
_LOSS_LABELS = {"vae": "loss (MSE + kld_weight x KL)", "contrastive": "loss (NT-Xent)"}


@dataclass(frozen=True)
class TrainOptions:
    """Everything that decides a training run; saved in ``run.json`` and the provenance.

    The defaults of ``latent_dim`` and ``lr`` are the VAE's; ``galclust train contrastive``
    uses 32 and 2e-3. ``frame`` None (the default) frames images on their galaxy, and keeps a
    packed store's own framing; ``"field"`` trains on whole cutouts, as the original study did.
    ``extent`` and ``align`` only matter with ``frame="galaxy"``.
    """

    source: str
    output: str
    model: str = "vae"  # or "contrastive"
    latent_dim: int = 35
    image_size: int | None = None
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    kld_weight: float = 1e-3
    temperature: float = 0.2  # contrastive only
    seed: int = 0
    val_fraction: float = 0.1
    augment: bool = True
    mode: str = "crop"
    scaling: str = "auto"
    stretch: str = "image"
    frame: str | None = None  # None: a packed store's framing, else "galaxy"
    extent: float = 1.5
    align: bool = True
    workers: int = 2
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    strategy: str = "auto"  # Lightning's: ddp with several devices, ddp_spawn, fsdp, ...
    plot_every: int = 5
    resume: bool = False
    overwrite: bool = False
    progress: bool | None = None  # a bar on a terminal, log lines elsewhere


@dataclass
class TrainReport:
    """How a run went."""

    output: Path
    epochs: int
    best_val_loss: float
    metrics: pd.DataFrame
    seconds: float
    train_count: int
    val_count: int
    skipped: int = 0
    resumed_from: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        last = self.metrics.iloc[-1] if len(self.metrics) else None
        rate = f", {last['images_per_s']:.1f} images/s" if last is not None else ""
        resumed = f" (resumed after epoch {self.resumed_from})" if self.resumed_from else ""
        skipped = f"; {self.skipped} all-NaN images skipped" if self.skipped else ""
        return (
            f"trained {self.epochs} epochs on {self.train_count} galaxies "
            f"({self.val_count} for validation) in {self.seconds:.0f} s{rate}{resumed}; "
            f"best validation loss {self.best_val_loss:.5f}{skipped}"
        )


# --- data ----------------------------------------------------------------------------------------


def split_rows(source: Source, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of the training and validation sets.

    A simulation keeps its own ``split`` column (its test set stays unseen). Otherwise each
    galaxy's set follows from a hash of its ``id_str`` and the seed, so the split is the same
    on every run and adding galaxies to a catalog does not move the old ones between sets.
    """
    catalog = source.catalog
    if "split" in catalog and set(catalog["split"]) >= {"train", "val"}:
        split = catalog["split"].astype(str).to_numpy()
        return np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    if not 0 < val_fraction < 1:
        raise GalclustValueError(f"--val-fraction {val_fraction}: give a number between 0 and 1")
    ids = pd.Series(catalog["id_str"].astype(str))
    hashed = pd.util.hash_pandas_object(ids, index=False, hash_key=f"{seed % 10**16:016d}")
    uniform = hashed.to_numpy().astype(np.float64) / 2.0**64
    val = uniform < val_fraction
    if len(ids) >= 2 and not val.any():
        val[np.argmin(uniform)] = True
    if val.all():
        val[np.argmax(uniform)] = False
    return np.flatnonzero(~val), np.flatnonzero(val)


class EpochSampler(Sampler[int]):
    """A shuffled order per epoch drawn from (seed, epoch): a resumed run sees the same order.

    Lightning calls :meth:`set_epoch` at the start of each epoch.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def _release_batch_memory(_worker: int) -> None:
    """In a loader worker, have glibc give each freed batch buffer back to the system.

    Its malloc raises the size served from mmap to that of the largest block freed so far, so
    once a batch is freed later batches come from the heap, whose freed space it keeps: each
    worker then holds 0.7 GB more after a pass over 300,000 64-px images (measured). A fixed
    threshold of 128 kB keeps batches in mmap, returned when freed. Other C libraries: no-op."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass


def make_loader(
    data: Dataset[Any],
    batch_size: int,
    workers: int,
    *,
    shuffle_seed: int | None = None,
    collate_fn: Callable[[Any], Any] = collate,
) -> DataLoader[Any]:
    """A DataLoader over ``data``: shuffled per epoch from a seed, or in order."""
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=EpochSampler(len(data), shuffle_seed) if shuffle_seed is not None else None,  # type: ignore[arg-type]
        num_workers=workers,
        worker_init_fn=_release_batch_memory if workers > 0 else None,
        collate_fn=collate_fn,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        # a last batch of one image would break BatchNorm's training statistics
        drop_last=shuffle_seed is not None
        and len(data) > batch_size  # type: ignore[arg-type]
        and len(data) % batch_size == 1,  # type: ignore[arg-type]
    )


# --- callbacks -----------------------------------------------------------------------------------


class History(L.Callback):
    """One row per epoch in ``metrics.csv`` and ``loss.png``; kept in checkpoints for resuming."""

    def __init__(
        self, run: Path, train_count: int, metrics: Sequence[str], loss_label: str = "loss"
    ) -> None:
        self.run = run
        self.loss_label = loss_label
        self.train_count = train_count
        self.logged = [f"{stage}_{name}" for stage in ("train", "val") for name in metrics]
        self.rows: list[dict[str, float]] = []
        self._started = time.perf_counter()
        self._trained: float | None = None
        self._lr = math.nan

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        self._trained = None
        self._lr = float(trainer.optimizers[0].param_groups[0]["lr"])  # before the epoch's step

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._trained = time.perf_counter()  # the last one marks the end of training

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        now = time.perf_counter()
        seconds = now - self._started
        training = (self._trained or now) - self._started
        row = {
            "epoch": trainer.current_epoch + 1,
            **{name: metrics.get(name, math.nan) for name in self.logged},
            "lr": self._lr,
            "seconds": seconds,
            "images_per_s": self.train_count / training if training else math.nan,
            "skipped": metrics.get("train_skipped", 0.0) + metrics.get("val_skipped", 0.0),
        }
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:
            frame = self.frame()
            write_catalog(frame, self.run / "metrics.csv")
            loss_curves(
                {"run": frame}, self.run / "loss.png", title=self.run.name, ylabel=self.loss_label
            )
            log.info(
                "epoch %d/%d: train loss %.5f, validation loss %.5f, %.1f images/s",
                row["epoch"],
                trainer.max_epochs,
                row["train_loss"],
                row["val_loss"],
                row["images_per_s"],
            )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


class Reconstructions(L.Callback):
    """Fixed validation galaxies above their reconstructions, every ``every`` epochs."""

    def __init__(self, run: Path, images: torch.Tensor, every: int) -> None:
        self.run = run
        self.images = images
        self.every = max(1, every)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        if not trainer.is_global_zero or not (epoch == 1 or epoch % self.every == 0 or last):
            return
        recon = reconstruct(pl_module, self.images)  # type: ignore[arg-type]
        rows = [("input", self.images.numpy()), (f"epoch {epoch}", recon)]
        image_rows(rows, self.run / "reconstructions" / f"epoch_{epoch:04d}.png")
        shutil.copyfile(
            self.run / "reconstructions" / f"epoch_{epoch:04d}.png",
            self.run / "reconstructions.png",
        )


class Views(L.Callback):
    """``views.png``, once: fixed validation galaxies above three random training views of
    each, to check what the contrastive augmentations do."""

    def __init__(self, run: Path, images: torch.Tensor, rotation: float) -> None:
        self.run = run
        self.images = images
        self.rotation = rotation

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not len(self.images):
            return
        generator = torch.Generator().manual_seed(0)
        rows = [("input", self.images.numpy())]
        rows += [
            (f"view {i + 1}", galaxy_views(self.images, generator, rotation=self.rotation).numpy())
            for i in range(3)
        ]
        image_rows(rows, self.run / "views.png")


def _preload(
    train: ImageDataset, val: ImageDataset, channels: int, size: int, workers: int
) -> tuple[GalaxyData, GalaxyData]:
    """Both sets prepared once in memory when they fit; the framing statuses logged."""
    need = (len(train) + len(val)) * channels * size * size * 4  # float32
    if need > _PRELOAD_BYTES:
        log.warning(
            "%d framed images need %.1f GiB, more than the 2 GiB held in memory: they are "
            "framed again every epoch; galclust pack --frame galaxy first to do it once",
            len(train) + len(val),
            need / 1024**3,
        )
        return train, val
    counts: dict[str, int] = {}
    loaded = []
    for data in (train, val):
        memory, statuses = preload(data, workers)
        loaded.append(memory)
        for status, count in statuses.items():
            counts[status] = counts.get(status, 0) + count
    log.info(
        "framed %d galaxies: %s",
        sum(counts.values()),
        ", ".join(f"{count} {status}" for status, count in sorted(counts.items())),
    )
    return loaded[0], loaded[1]


class LogProgress(L.Callback):
    """Where no progress bar is drawn: a log line every ``every`` seconds with rate and ETA."""

    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self._last = 0.0
        self._start = 0.0
        self._images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last = time.perf_counter()
        self._images = 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch  # (images, targets)
        self._images += len(images)
        now = time.perf_counter()
        if now - self._last < self.every or not trainer.is_global_zero:
            return
        self._last = now
        batches = trainer.num_training_batches
        rate = (batch_idx + 1) / (now - self._start)
        left_epoch = (batches - batch_idx - 1) / rate
        epochs_left = (trainer.max_epochs or 1) - trainer.current_epoch - 1
        left = left_epoch + epochs_left * batches / rate
        log.info(
            "epoch %d/%s: batch %d/%d, %.1f images/s, %.0f s left in the epoch, %.0f s in all",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            batch_idx + 1,
            batches,
            self._images / (now - self._start),
            left_epoch,
            left,
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint beside its destination and rename it over, so that an error (a
    full disk) leaves the previous checkpoint whole."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as stream:
                torch.save(checkpoint, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:  # torch's zip writer raises RuntimeError
            tmp.unlink(missing_ok=True)
            why = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
            raise GalclustFileError(
                f"cannot write checkpoint {path} ({why}); the previous checkpoint is kept: free "
                "some space and run again with --resume"
            ) from exc


def ema_average(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], Any], None]:
    """The update of an exponential moving average of tensors, as
    :class:`torch.optim.swa_utils.AveragedModel` calls it (``multi_avg_fn``) at its update
    ``n`` (1, 2, ...). The decay rises as (1 + n) / (10 + n), up to ``decay``, so that the
    average of a short run is of its last steps, not of its first. Counters (batch norm's
    ``num_batches_tracked``) are copied."""

    @torch.no_grad()
    def average(averaged: list[torch.Tensor], current: list[torch.Tensor], n: Any) -> None:
        weight = 1.0 - min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        for mean, now in zip(averaged, current, strict=True):
            if mean.is_floating_point():
                mean.lerp_(now, weight)
            else:
                mean.copy_(now)

    return average


class WeightEMA(L.pytorch.callbacks.WeightAveraging):
    """An exponential moving average of the weights and batch-norm statistics
    (:func:`ema_average`), updated after each optimiser step. Lightning's callback validates
    it and saves it in the checkpoints' ``state_dict`` in place of the weights being trained
    (which it keeps beside, for ``--resume``). The weights of the last steps scatter about the
    minimum; their average lies nearer it."""

    def __init__(self, decay: float) -> None:
        super().__init__(multi_avg_fn=ema_average(decay))


# --- running -------------------------------------------------------------------------------------


def reconstruct(module: VAEModule, images: torch.Tensor) -> np.ndarray:
    """Reconstructions of ``images`` from their latent means, in eval mode."""
    model = module.model
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        device = next(model.parameters()).device
        mu, _ = model.encode(images.to(device))
        out = model.decode(mu).float().cpu().numpy()
    model.train(was_training)
    return out


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bfloat16 autocast where the hardware does it fast, else float32."""
    if precision != "auto":
        return precision
    gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if accelerator in ("auto", "cpu") and torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        fast = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return "bf16-mixed" if fast else "32-true"
    return "32-true"


class RunChoices(Protocol):
    """The options every training run has (``TrainOptions``, ``RegressorOptions``)."""

    @property
    def epochs(self) -> int: ...
    @property
    def accelerator(self) -> str: ...
    @property
    def devices(self) -> str: ...
    @property
    def num_nodes(self) -> int: ...
    @property
    def resume(self) -> bool: ...
    @property
    def overwrite(self) -> bool: ...
    @property
    def precision(self) -> str: ...
    @property
    def strategy(self) -> str: ...
    @property
    def progress(self) -> bool | None: ...


def trainer_for(
    options: RunChoices, precision: str, callbacks: list[L.Callback], run: Path, progress: bool
) -> L.Trainer:
    """A Lightning Trainer for ``options`` (device errors as one-line GalclustValueErrors)."""
    try:
        return _trainer(options, precision, callbacks, run, progress)
    except (MisconfigurationException, ValueError, RuntimeError) as exc:
        raise GalclustValueError(
            f"--accelerator {options.accelerator} --devices {options.devices} --strategy "
            f"{options.strategy} --precision {precision}: {str(exc).splitlines()[0]}"
        ) from exc


def fit(
    module: L.LightningModule,
    options: RunChoices,
    run: Path,
    callbacks: list[L.Callback],
    loaders: tuple[DataLoader[Any], DataLoader[Any]],
    resume_from: Path | None,
    describe: str,
    monitor: str = "val_loss",
) -> L.Trainer:
    """Train ``module`` into the run folder ``run``: ``checkpoints/best.ckpt`` (lowest
    ``monitor``, by default the validation loss) and ``last.ckpt``, ``callbacks`` and, where
    no progress bar is drawn, periodic progress lines; logs ``describe`` with the precision and
    device first. Ctrl-C raises KeyboardInterrupt (the last checkpoint is kept for
    ``--resume``)."""
    progress = sys.stderr.isatty() if options.progress is None else options.progress
    best, last = (
        L.pytorch.callbacks.ModelCheckpoint(
            dirpath=run / "checkpoints",
            filename=name,
            monitor=watched,
            mode="min",
            save_top_k=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )
        # last.ckpt has its own callback (no monitor: every epoch): Lightning's save_last
        # writes it only in epochs that also improve best.ckpt, and --resume would lose the rest
        for name, watched in (("best", monitor), ("last", None))
    )
    callbacks = [*callbacks, best, last, *([] if progress else [LogProgress()])]
    precision = resolve_precision(options.precision, options.accelerator)
    trainer = trainer_for(options, precision, callbacks, run, progress)
    device = trainer.accelerator.__class__.__name__.replace("Accelerator", "")
    log.info("%s, %s on %s", describe, precision, device)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\)")
            # the run folder is checked before (refused, resumed or overwritten)
            warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
            trainer.fit(module, loaders[0], loaders[1], ckpt_path=resume_from)
    except SystemExit:
        if trainer.interrupted:  # Lightning turns Ctrl-C into exit(1); report it as Ctrl-C
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt from None
        raise
    return trainer


def _trainer(
    options: RunChoices, precision: str, callbacks: list[L.Callback], run: Path, progress: bool
) -> L.Trainer:
    return L.Trainer(
        max_epochs=options.epochs,
        accelerator=options.accelerator,
        devices=parse_devices(options.devices),
        num_nodes=options.num_nodes,
        strategy=options.strategy,
        precision=precision,  # type: ignore[arg-type]
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run,
    )


def parse_devices(devices: str) -> int | str | list[int]:
    """``--devices`` as Lightning takes it: ``auto``, a count, or a list such as ``0,1``."""
    if devices == "auto":
        return devices
    try:
        if "," in devices:
            return [int(d) for d in devices.split(",") if d]
        return int(devices)
    except ValueError:
        raise GalclustValueError(
            f"--devices {devices!r}: give a number, a list such as 0,1, or auto"
        ) from None


def _changed(
    before: dict[str, Any], now: dict[str, Any], fixed: Sequence[str] = _FIXED
) -> list[str]:
    """The model- and data-defining options (``fixed``) that differ between two runs."""

    def same(key: str) -> bool:
        if key == "source":
            return bool(Path(before[key]).resolve() == Path(now[key]).resolve())
        return bool(before[key] == now[key])

    return [k for k in fixed if k in before and not same(k)]


def check_run_folder(
    run: Path,
    options: Any,
    fixed: Sequence[str] = _FIXED,
    older: dict[str, Any] | None = None,
) -> Path | None:
    """The checkpoint to resume from, None for a fresh run; refuse to clobber a run, or to
    resume one with other ``fixed`` options. ``options`` is a dataclass of :class:`RunChoices`;
    ``older`` gives the value of options that a run.json written before they existed lacks."""
    last = run / "checkpoints" / "last.ckpt"
    state = json.loads((run / RUN_FILE).read_text()) if (run / RUN_FILE).is_file() else None
    if options.overwrite:
        for name in ("checkpoints", "reconstructions", "plots"):
            shutil.rmtree(run / name, ignore_errors=True)
        for name in (RUN_FILE, "metrics.csv", "loss.png", "reconstructions.png", "views.png",
                     "metrics.json", "test_predictions.parquet"):  # fmt: skip
            (run / name).unlink(missing_ok=True)
        return None
    if state is None and not last.exists():
        if run.is_dir() and any(p.suffix == ".ckpt" for p in run.rglob("*")):
            raise GalclustFileError(f"{run} holds checkpoints of something else; choose another -o")
        return None
    if not options.resume:
        what = "a finished run" if state and state.get("finished") else "an interrupted run"
        raise GalclustFileError(
            f"{run} already holds {what}; pass --resume to continue it (more --epochs after a "
            "finished one), --overwrite to start again, or choose another -o"
        )
    if state is not None:
        before = {**(older or {}), **state["options"]}
        now = json.loads(json.dumps(asdict(options)))  # as run.json holds it: lists, not tuples
        changed = _changed(before, now, fixed)
        if changed:
            k = changed[0]
            raise GalclustValueError(
                f"{run} was trained with {k}={before[k]!r}, not {now[k]!r}; resume "
                "with the same options or choose another -o"
            )
    return last if last.exists() else None


def _validate(options: TrainOptions) -> None:
    if options.model not in MODELS:
        raise GalclustValueError(f"model {options.model!r}: choose one of {', '.join(MODELS)}")
    if options.model == "contrastive" and not options.augment:
        raise GalclustValueError(
            "--no-augment: a contrastive encoder learns from random views; it cannot train "
            "without them"
        )
    if options.temperature <= 0:
        raise GalclustValueError(f"--temperature {options.temperature} must be > 0 (try 0.2)")
    if options.latent_dim < 1:
        raise GalclustValueError(
            f"--latent-dim {options.latent_dim}: the latent vector needs at least one "
            "dimension (the study used 35)"
        )
    for name in ("epochs", "batch_size", "plot_every", "num_nodes"):
        if getattr(options, name) < 1:
            flag = name.replace("_", "-")
            raise GalclustValueError(f"--{flag} {getattr(options, name)} must be at least 1")
    if options.lr <= 0 or options.kld_weight < 0:
        raise GalclustValueError(
            f"--lr {options.lr} must be > 0 and --kld-weight {options.kld_weight} >= 0"
        )
    if options.workers < 0:
        raise GalclustValueError(f"--workers {options.workers} must be 0 or more")
    if options.image_size is not None:
        _check_size(options.model, options.image_size)


def _check_store(options: TrainOptions, packed: dict[str, Any]) -> None:
    """A packed store fixes the framing: refuse options that ask for another one."""
    stored = Preprocess.from_dict(packed["preprocess"])
    if stored.frame != options.frame or (
        stored.frame == "galaxy"
        and (stored.extent, stored.align) != (options.extent, options.align)
    ):
        raise GalclustValueError(
            f"{options.source} was packed with --frame {stored.frame} (extent "
            f"{stored.extent}, align {stored.align}), not --frame {options.frame} (extent "
            f"{options.extent}, align {options.align}); pass the store's settings or pack "
            f"again with --frame {options.frame}"
        )


def _check_size(model: str, size: int) -> None:
    if model == "vae":
        check_image_size(size)
    elif size < 16:
        raise GalclustValueError(f"--image-size {size}: the encoder needs at least 16 pixels")


def train_vae(options: TrainOptions) -> TrainReport:
    """Train the model ``options.model`` (the reference VAE, or the contrastive encoder of
    :mod:`galclust.models.contrastive`) on ``options.source`` into the run folder
    ``options.output``.

    Images framed on their galaxy (``frame="galaxy"``) are prepared once and held in memory
    when they fit in 2 GiB (else prepared on the fly: pack them first with galclust pack).

    Raises
    ------
    GalclustValueError
        A bad option, an empty source, mixed channel counts, or a resume with other options.
    GalclustFileError
        The run folder already holds a run (pass ``resume`` or ``overwrite``), or a
        checkpoint cannot be written.
    """
    start = time.perf_counter()
    _validate(options)
    source = open_source(options.source)
    channels = source.channels()
    if source.packed is not None:
        if options.frame is None:  # the store's framing: it cannot be changed after packing
            stored = Preprocess.from_dict(source.packed["preprocess"])
            options = replace(options, frame=stored.frame, extent=stored.extent, align=stored.align)
        _check_store(options, source.packed)
    elif options.frame is None:
        options = replace(options, frame=default_frame(options.stretch))
    if options.image_size:
        size = options.image_size
    elif source.packed is not None:
        size = int(source.packed["image_size"])
    else:
        size = source.default_image_size() if options.model == "vae" else CONTRASTIVE_SIZE
    _check_size(options.model, size)
    options = replace(options, image_size=size)
    if options.frame == "field":  # recorded as the defaults, so that a resume compares alike
        options = replace(options, extent=TrainOptions.extent, align=TrainOptions.align)
    run = Path(options.output)
    if is_lead():
        resume_from = check_run_folder(run, options)
    else:  # a process Lightning started for another device: rank 0 has checked the folder
        last = run / "checkpoints" / "last.ckpt"
        resume_from = last if options.resume and last.exists() else None
    resumed_from = 0
    if resume_from is not None:  # exactly the preprocessing the run started with
        resumed = torch.load(resume_from, map_location="cpu", weights_only=True)
        preprocess = Preprocess.from_dict(resumed["hyper_parameters"]["preprocess"])
        resumed_from = int(resumed["epoch"]) + 1
        del resumed
    elif source.packed is not None:
        preprocess = Preprocess.from_dict(source.packed["preprocess"])
    else:
        preprocess = source.preprocess_for(size, options)
    train_rows, val_rows = split_rows(source, options.val_fraction, options.seed)
    if len(train_rows) < 2 or not len(val_rows):
        raise GalclustValueError(
            f"{options.source} has {len(source.catalog)} usable images: too few to split into "
            "training and validation sets"
        )
    train_data = source.dataset(preprocess, train_rows, channels=channels)
    val_data = source.dataset(preprocess, val_rows, channels=channels)
    framed = preprocess.frame == "galaxy"
    if framed and isinstance(train_data, ImageDataset) and isinstance(val_data, ImageDataset):
        train_data, val_data = _preload(train_data, val_data, channels, size, options.workers)
    state = {"options": asdict(options), "finished": False, "channels": channels}
    try:
        run.mkdir(parents=True, exist_ok=True)
        if is_lead():
            atomic_write_text(run / RUN_FILE, json.dumps(state, indent=2) + "\n")
    except OSError as exc:
        raise GalclustFileError(f"cannot write in {run} ({exc.strerror})") from exc

    L.seed_everything(options.seed, verbose=False)
    module: VAEModule | ContrastiveModule
    grid = torch.stack([val_data[i] for i in range(min(_GRID, len(val_data)))])
    pictures: L.Callback
    if options.model == "vae":
        module = VAEModule(
            channels,
            size,
            options.latent_dim,
            lr=options.lr,
            kld_weight=options.kld_weight,
            augment=options.augment,
            preprocess=preprocess.to_dict(),
            seed=options.seed,
        )
        pictures = Reconstructions(run, grid, options.plot_every)
    else:
        module = ContrastiveModule(
            channels,
            size,
            options.latent_dim,
            lr=options.lr,
            temperature=options.temperature,
            rotation=ALIGNED_ROTATION if preprocess.frame == "galaxy" and preprocess.align else 180,
            preprocess=preprocess.to_dict(),
            seed=options.seed,
        )
        pictures = Views(run, grid, module.hparams["rotation"])
    history = History(run, len(train_data), _METRICS[options.model], _LOSS_LABELS[options.model])
    describe = (
        f"training a {options.latent_dim}-d "
        f"{'VAE' if options.model == 'vae' else 'contrastive encoder'} on {len(train_data)} "
        f"galaxies ({len(val_data)} validation), {size} px, {channels} channels"
    )
    train_loader = make_loader(
        train_data, options.batch_size, options.workers, shuffle_seed=options.seed
    )
    val_loader = make_loader(val_data, options.batch_size, options.workers)
    trainer = fit(
        module, options, run, [history, pictures], (train_loader, val_loader), resume_from, describe
    )
    frame = history.frame()
    skipped = int(frame["skipped"].iloc[-1]) if len(frame) else 0
    if skipped:
        warnings.warn(
            f"{skipped} all-NaN images were skipped in each epoch; find them with "
            "galclust scan --verify (status non_finite)",
            stacklevel=2,
        )
    if trainer.is_global_zero:
        state["finished"] = True
        atomic_write_text(run / RUN_FILE, json.dumps(state, indent=2) + "\n")
    return TrainReport(
        output=run,
        epochs=int(frame["epoch"].max()) if len(frame) else 0,
        best_val_loss=float(frame["val_loss"].min()) if len(frame) else math.nan,
        metrics=frame,
        seconds=time.perf_counter() - start,
        train_count=len(train_data),
        val_count=len(val_data),
        skipped=skipped,
        resumed_from=resumed_from,
    )


# --- sweep ---------------------------------------------------------------------------------------


@dataclass
class SweepReport:
    """The runs of a latent-size sweep and their final validation losses."""

    output: Path
    final_val_loss: dict[int, float]
    reports: dict[int, TrainReport]

    def summary(self) -> str:
        losses = ", ".join(f"{d}: {v:.5f}" for d, v in self.final_val_loss.items())
        return f"final validation loss by latent size: {losses}"


def choose_latent_dim(final_val_loss: Mapping[int, float], tolerance: float = 0.05) -> int:
    """The smallest latent size whose final validation loss is within ``tolerance`` (relative)
    of the best size's: beyond it, more dimensions buy little reconstruction and cost
    clustering (more dimensions to whiten and model).

    Raises
    ------
    GalclustValueError
        No size has a finite loss.
    """
    finite = {d: v for d, v in final_val_loss.items() if math.isfinite(v)}
    if not finite:
        raise GalclustValueError("no latent size finished with a finite validation loss")
    best = min(finite.values())
    return min(d for d, v in finite.items() if v <= best + tolerance * abs(best))


def sweep(options: TrainOptions, latent_dims: Sequence[int]) -> SweepReport:
    """Train one VAE per latent size (same data, seed and epochs) into ``options.output``.

    Each size gets its own run folder ``latent_NN``; a finished size is not trained again and
    an interrupted one resumes, so rerunning the same sweep continues it. Writes
    ``loss_curves.png`` (every size on one plot), ``val_loss_vs_latent.png``,
    ``reconstructions.png`` (rows = sizes, the same galaxies) and ``sweep.csv``.
    """
    dims = sorted(set(latent_dims))
    if not dims:
        raise GalclustValueError("--latent-dims: give at least one size, e.g. 2,8,16,35,64")
    out = Path(options.output)
    reports: dict[int, TrainReport] = {}
    for dim in dims:
        run = out / f"latent_{dim:02d}"
        log.info("sweep: latent size %d -> %s", dim, run)
        state_file = run / RUN_FILE
        state = json.loads(state_file.read_text()) if state_file.is_file() else None
        wanted = asdict(replace(options, latent_dim=dim))
        done = (
            state is not None
            and state.get("finished")
            and state["options"].get("epochs") == options.epochs
            and not _changed(state["options"], wanted)
        )
        if done and not options.overwrite:
            reports[dim] = _finished_report(run)
            continue
        reports[dim] = train_vae(replace(options, output=str(run), latent_dim=dim, resume=True))
    if not is_lead():
        return SweepReport(out, {}, reports)
    curves = {f"latent {d}": r.metrics for d, r in reports.items()}
    loss_curves(
        curves, out / "loss_curves.png", title="VAE loss by latent size", ylabel=_LOSS_LABELS["vae"]
    )
    final = {d: float(r.metrics["val_loss"].iloc[-1]) for d, r in reports.items()}
    metric_against(
        final,
        out / "val_loss_vs_latent.png",
        xlabel="latent size",
        ylabel="final validation loss",
    )
    _sweep_reconstructions(options, dims, out)
    table = pd.DataFrame(
        {
            "latent_dim": dims,
            "final_val_loss": [final[d] for d in dims],
            "best_val_loss": [reports[d].best_val_loss for d in dims],
            "final_val_mse": [float(reports[d].metrics["val_mse"].iloc[-1]) for d in dims],
        }
    )
    write_catalog(table, out / "sweep.csv")
    return SweepReport(out, final, reports)


def _finished_report(run: Path) -> TrainReport:
    frame = pd.read_csv(run / "metrics.csv")
    return TrainReport(run, int(frame["epoch"].max()), float(frame["val_loss"].min()), frame, 0.0,
                       0, 0)  # fmt: skip


def _sweep_reconstructions(options: TrainOptions, dims: Sequence[int], out: Path) -> None:
    from galclust.embed import load_model

    rows: list[tuple[str, np.ndarray]] = []
    for dim in dims:
        module = load_model(out / f"latent_{dim:02d}" / "checkpoints" / "best.ckpt")
        assert isinstance(module, VAEModule), "a sweep trains VAEs"
        if not rows:
            source = open_source(options.source)
            _, val_rows = split_rows(source, options.val_fraction, options.seed)
            preprocess = Preprocess.from_dict(module.hparams["preprocess"])
            data = source.dataset(preprocess, val_rows[:_GRID])
            images = torch.stack([data[i] for i in range(len(data))])
            rows.append(("input", images.numpy()))
        rows.append((f"latent {dim}", reconstruct(module, images)))
    image_rows(rows, out / "reconstructions.png", title="the same galaxies by latent size")
