"""Training a regressor on a ``galclust simulate`` folder (:func:`train_regressor`)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from galclust.catalog.schema import atomic_write_text
from galclust.data.dataset import ImageDataset, open_source
from galclust.exceptions import GalclustFileError, GalclustValueError
from galclust.models.regressor import HEAD_ACTIVATIONS, VIEWS, RegressorModule
from galclust.provenance import is_lead
from galclust.regress.evaluate import calibrate, evaluate, load_regressor
from galclust.regress.targets import (
    FluxScaling,
    RegressionData,
    Targets,
    fit_seeing,
    loader,
    positive_values,
)
from galclust.simulate import Survey, simulation_survey

log = logging.getLogger(__name__)


_FIXED = ("source", "targets", "image_size", "lr", "seed", "augment", "batch_size", "seeing",
          "nll_beta", "ema", "apertures", "head_activation")  # fmt: skip
#: What picks best.ckpt and stops a run: the mean squared error of the standardised means.
_MONITOR = "val_mse"
#: What runs trained before an option existed did: no seeing, the plain likelihood, no average,
#: pixels only, a ReLU head.
_OLDER = {"seeing": "none", "nll_beta": 0.0, "ema": 0.0, "apertures": False,
          "head_activation": "relu"}  # fmt: skip


@dataclass(frozen=True)
class RegressorOptions:
    """Everything that decides a regressor run; saved in ``run.json``."""

    source: str
    output: str
    targets: tuple[str, ...] = ()  # empty: the simulation's first magnitude column
    image_size: int | None = None  # None: the simulation's stamp size
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    patience: int = 6  # epochs without a better validation loss before stopping
    seed: int = 0
    augment: bool = True
    seeing: str = "auto"  # column of each galaxy's PSF FWHM the network is given; auto, none
    nll_beta: float = 0.25  # each likelihood term weighted by its predicted variance ** this
    ema: float = 0.999  # decay of the moving average of the weights that is kept; 0: none
    apertures: bool = True  # give the network each band's aperture photometry too
    head_activation: str = "gelu"  # of the head's hidden layer: gelu or relu
    views: int = 2  # symmetries of each image a prediction averages over (1, 2, 4 or 8)
    baseline: int = 100  # test galaxies also measured by the classical Sersic fit (0: none)
    workers: int = 2
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    strategy: str = "auto"  # Lightning's: ddp with several devices, ddp_spawn, fsdp, ...
    resume: bool = False
    overwrite: bool = False
    progress: bool | None = None


@dataclass
class RegressorReport:
    """How a regressor run went, with the test-set scores of :func:`evaluate`."""

    output: Path
    epochs: int
    seconds: float
    train_count: int
    val_count: int
    test_count: int
    dropped: int
    metrics: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"trained {self.epochs} epochs on {self.train_count} galaxies ({self.val_count} "
            f"validation) in {self.seconds:.0f} s; tested on {self.test_count} into {self.output}"
            + (f"; {self.dropped} rows without a finite target dropped" if self.dropped else "")
        ]
        for name, row in self.metrics.get("test_snr20", {}).items():
            if not row.get("n"):
                lines.append(f"  {name:>10}: no test galaxy with S/N >= 20")
                continue
            lines.append(
                f"  {name:>10}: RMSE {row['rmse']:.4g}  bias {row['bias']:+.3g}  NMAD "
                f"{row['nmad']:.3g}  within 1 sigma {row['within_1sigma']:.0%}  (S/N >= 20, "
                f"{row['n']} galaxies; {row['unit']})"
            )
        return "\n".join(lines)


def _default_targets(catalog: pd.DataFrame, source: str) -> tuple[str, ...]:
    mags = [c for c in catalog.columns if c.startswith("mag_")]
    if not mags:
        raise GalclustValueError(f"{source} has no mag_* column; name the targets with --targets")
    return ("mag_r",) if "mag_r" in mags else (mags[0],)


def _simulation(options: RegressorOptions) -> tuple[pd.DataFrame, Survey | None]:
    source = open_source(options.source)
    if source.kind != "simulation":
        raise GalclustValueError(
            f"{options.source} is not a galclust simulate folder; the regressor learns from "
            "simulated galaxies with known parameters (galclust simulate -n 50000 -o sims)"
        )
    catalog = source.catalog
    split = catalog["split"].astype(str) if "split" in catalog else pd.Series(dtype=str)
    missing = [s for s in ("train", "val", "test") if not (split == s).any()]
    if missing:
        raise GalclustValueError(
            f"{options.source} has no {missing[0]} split (its split column has "
            f"{', '.join(sorted(set(split))) or 'nothing'}); simulate again with "
            "--split 0.8,0.1,0.1"
        )
    return catalog, simulation_survey(options.source)


def _check_targets(names: Sequence[str], catalog: pd.DataFrame, source: str) -> None:
    for name in names:
        if name not in catalog.columns:
            numeric = [c for c in catalog.columns if pd.api.types.is_numeric_dtype(catalog[c])]
            raise GalclustValueError(
                f"--targets {name!r} is not a column of {source}; choose from "
                f"{', '.join(c for c in numeric if c not in ('image_index', 'seed'))}"
            )
        if not pd.api.types.is_numeric_dtype(catalog[name]):
            raise GalclustValueError(f"--targets {name!r} of {source} is not numeric")
    if len(set(names)) != len(names):
        raise GalclustValueError(f"--targets {','.join(names)} names a column twice")


def _validate(options: RegressorOptions) -> None:
    for name in ("epochs", "batch_size", "patience", "num_nodes"):
        if getattr(options, name) < 1:
            raise GalclustValueError(
                f"--{name.replace('_', '-')} {getattr(options, name)} must be at least 1"
            )
    if options.lr <= 0:
        raise GalclustValueError(f"--lr {options.lr} must be > 0")
    if options.baseline < 0 or options.workers < 0:
        raise GalclustValueError("--baseline and --workers must be 0 or more")
    if options.image_size is not None and options.image_size < 16:
        raise GalclustValueError(f"--image-size {options.image_size}: give 16 px or more")
    if not 0 <= options.nll_beta <= 1:
        raise GalclustValueError(f"--nll-beta {options.nll_beta}: choose from 0 to 1")
    if not 0 <= options.ema < 1:
        raise GalclustValueError(
            f"--ema {options.ema}: give a decay from 0 (no average) to below 1, e.g. 0.999"
        )
    if options.views not in VIEWS:
        raise GalclustValueError(f"--views {options.views}: choose 1, 2, 4 or 8")
    if options.head_activation not in HEAD_ACTIVATIONS:
        raise GalclustValueError(
            f"--head-activation {options.head_activation}: choose {' or '.join(HEAD_ACTIVATIONS)}"
        )


def train_regressor(options: RegressorOptions) -> RegressorReport:
    """Train a :class:`~galclust.models.regressor.Regressor` on a simulation, then score it on
    the simulation's test split (:func:`evaluate`).

    Rows whose targets are missing (NaN, or not positive for a log target) are dropped and
    counted.

    Raises
    ------
    GalclustValueError
        Not a simulation, no train/val/test split, a target that is not a numeric column, a bad
        option, or a resume with other options.
    GalclustFileError
        The run folder holds another run (pass ``resume`` or ``overwrite``).
    """
    from galclust.train import History, WeightEMA, check_run_folder, fit

    start = time.perf_counter()
    _validate(options)
    catalog, survey = _simulation(options)
    names = options.targets or _default_targets(catalog, options.source)
    _check_targets(names, catalog, options.source)
    images = ImageDataset(catalog.head(1), None).pixels(0)
    size = options.image_size or int(images.shape[-1])
    options = replace(options, targets=tuple(names), image_size=size)
    targets = Targets(tuple(names))
    raw = targets.raw(catalog)
    usable = np.isfinite(raw).all(axis=1)
    dropped = int((~usable).sum())
    if dropped:
        log.warning("%d of %d rows have no finite %s: dropped", dropped, len(raw), ", ".join(names))
    split = catalog["split"].astype(str).to_numpy()
    rows = {s: np.flatnonzero((split == s) & usable) for s in ("train", "val", "test")}
    if len(rows["train"]) < 2 or not len(rows["val"]) or not len(rows["test"]):
        raise GalclustValueError(
            f"{options.source} has {len(rows['train'])} train, {len(rows['val'])} val and "
            f"{len(rows['test'])} test galaxies with finite targets: too few; simulate more"
        )
    run = Path(options.output)
    if options.seeing == "auto" and options.resume:  # as the run was trained
        options = replace(options, seeing=_stored(run, "seeing") or "auto")
    seeing = _seeing_column(options, catalog, usable)
    options = replace(options, seeing=seeing[0] if seeing else "none")
    seeing_spec = fit_seeing(seeing[0], seeing[1][rows["train"]]) if seeing else None
    noise = _noise(catalog, survey, int(images.shape[0]), options.source)
    scaling = FluxScaling(size, noise)
    resume_from = check_run_folder(run, options, _FIXED, _OLDER) if is_lead() else None
    if not is_lead():
        last = run / "checkpoints" / "last.ckpt"
        resume_from = last if options.resume and last.exists() else None
    if resume_from is not None and is_lead():  # the old model's scores: rewritten at the end
        for name in ("metrics.json", "test_predictions.parquet"):
            (run / name).unlink(missing_ok=True)
    # a resumed run has the same source, targets and split (checked), so the same standardisation
    targets = targets.fitted(raw[rows["train"]])
    data = {
        s: RegressionData(
            catalog.iloc[r].reset_index(drop=True),
            scaling,
            raw[r],
            seeing=seeing[1][r] if seeing else None,
        )
        for s, r in rows.items()
    }
    state = {"options": asdict(options), "finished": False}
    try:
        run.mkdir(parents=True, exist_ok=True)
        if is_lead():
            atomic_write_text(run / "run.json", json.dumps(state, indent=2) + "\n")
    except OSError as exc:
        raise GalclustFileError(f"cannot write in {run} ({exc.strerror})") from exc
    L.seed_everything(options.seed, verbose=False)
    module = RegressorModule(
        int(images.shape[0]),
        size,
        targets=targets.to_dict(),
        lr=options.lr,
        epochs=options.epochs,
        augment=options.augment,
        scaling=scaling.to_dict(),
        survey=None if survey is None else asdict(survey),
        seeing=seeing_spec,
        nll_beta=options.nll_beta,
        apertures=options.apertures,
        seed=options.seed,
        head_activation=options.head_activation,
    )
    if options.apertures and resume_from is None:
        _start_from_photometry(module, data["train"], options.seed)
    history = History(
        run, len(data["train"]), ("loss", "mse"),
        f"loss (Gaussian NLL of standardised targets, beta {options.nll_beta:g})",
    )  # fmt: skip
    # the means' error picks the checkpoint: the likelihood on the validation split also
    # worsens when the variances grow overconfident, which the calibration corrects afterwards
    stopping = _EarlyStopping(_MONITOR, patience=options.patience, mode="min")
    describe = (
        f"training a regressor of {', '.join(names)} on {len(data['train'])} galaxies "
        f"({len(data['val'])} validation), {size} px, {images.shape[0]} bands"
    )
    loaders = (
        loader(data["train"], options.batch_size, options.workers, options.seed),
        loader(data["val"], options.batch_size, options.workers),
    )
    callbacks: list[L.Callback] = [history, stopping]
    if options.ema:
        callbacks.append(WeightEMA(options.ema))
    trainer = fit(module, options, run, callbacks, loaders, resume_from, describe, _MONITOR)
    metrics: dict[str, Any] = {}
    if trainer.is_global_zero:
        best = run / "checkpoints" / "best.ckpt"
        best_module, _ = load_regressor(best)
        calibration = calibrate(
            best_module, best, data["val"], options.batch_size, options.workers, options.views
        )
        metrics = evaluate(
            best_module, calibration, data["test"], run, catalog.iloc[rows["test"]],
            batch_size=options.batch_size, workers=options.workers, baseline=options.baseline,
        )  # fmt: skip
        state["finished"] = True
        atomic_write_text(run / "run.json", json.dumps(state, indent=2) + "\n")
    frame = history.frame()
    return RegressorReport(
        output=run,
        epochs=int(frame["epoch"].max()) if len(frame) else 0,
        seconds=time.perf_counter() - start,
        train_count=len(data["train"]),
        val_count=len(data["val"]),
        test_count=len(data["test"]),
        dropped=dropped,
        metrics=metrics,
    )


def _start_from_photometry(module: RegressorModule, train: RegressionData, seed: int) -> None:
    """:meth:`RegressorModule.start_from_photometry` on up to 4,096 training galaxies."""
    rows = np.random.default_rng(seed).permutation(len(train))[:4096]
    log.info("fitting the photometry's linear start on %d training galaxies", len(rows))
    photometry, targets = [], []
    for chunk in np.array_split(rows, math.ceil(len(rows) / 256)):
        images, _, raw = zip(*(train[int(i)] for i in chunk), strict=True)
        photometry.append(module.photometry(torch.stack(images)))
        targets.append(torch.stack(raw))
    module.start_from_photometry(torch.cat(photometry), torch.cat(targets))


class _EarlyStopping(L.pytorch.callbacks.EarlyStopping):
    """Early stopping whose patience is this run's ``--patience`` also after ``--resume`` (a
    checkpoint would restore the old patience and count, and stop a continued run at once)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience, self.wait_count, self.stopped_epoch = patience, 0, 0


def _stored(run: Path, name: str) -> Any:
    """Option ``name`` of the run in ``run`` (as it was trained), None if there is none."""
    try:
        state = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return {**_OLDER, **state.get("options", {})}.get(name)


def _seeing_column(
    options: RegressorOptions, catalog: pd.DataFrame, usable: np.ndarray
) -> tuple[str, np.ndarray] | None:
    """The catalog column of the PSF FWHM the network is given and its values, None for
    pixels only; ``auto`` takes ``psf_fwhm`` when the simulation has it. Only the ``usable``
    rows (those with finite targets) must have a positive value."""
    name = options.seeing
    if name == "none" or (name == "auto" and "psf_fwhm" not in catalog):
        return None
    name = "psf_fwhm" if name == "auto" else name
    if name not in catalog:
        raise GalclustValueError(
            f"--seeing {name!r} is not a column of {options.source}; give the column of each "
            "galaxy's PSF FWHM in arcsec (psf_fwhm in galclust simulations), or --seeing none"
        )
    values = positive_values(catalog, name)
    bad = np.isnan(values) & usable
    if bad.any():
        raise GalclustValueError(
            f"--seeing {name!r} of {options.source} is not a positive number in {int(bad.sum())} "
            "rows; give a column of PSF FWHM in arcsec, or --seeing none"
        )
    return name, values


def _noise(
    catalog: pd.DataFrame, survey: Survey | None, bands: int, source: str
) -> tuple[float, ...]:
    """Sky noise per band of a simulation: its survey's, else the catalog's sky_sigma_* columns."""
    if survey is not None and len(survey.sky_sigma) == bands:
        return tuple(float(s) for s in survey.sky_sigma)
    columns = [c for c in catalog.columns if c.startswith("sky_sigma_")]
    if len(columns) != bands:
        raise GalclustValueError(
            f"{source} does not say its sky noise per band (simulation.json or sky_sigma_* "
            "columns); simulate it again with this galclust version"
        )
    return tuple(float(catalog[c].median()) for c in columns)
