"""Reading galclust checkpoints safely: ``weights_only`` loading, and a one-line error for a
missing, truncated or foreign file, or a checkpoint of another kind of model."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch

from galclust.exceptions import GalclustFileError, GalclustValueError

Module = TypeVar("Module", bound=L.LightningModule)


def load_checkpoint(
    path: str | os.PathLike[str], kinds: Mapping[str, type[Module]], wanted: str
) -> tuple[Module, dict[str, Any]]:
    """The module of a galclust checkpoint (eval mode, on the CPU) and the checkpoint's
    ``galclust`` block (its kind, version and any calibration).

    Parameters
    ----------
    path : path
        The checkpoint file.
    kinds : mapping
        The checkpoint kinds accepted, each with the LightningModule class that loads it.
    wanted : str
        What to give instead, for the error message, e.g. ``"a checkpoint of galclust train
        regressor"``.

    Raises
    ------
    GalclustFileError
        The file is missing, truncated or not a checkpoint.
    GalclustValueError
        A checkpoint of another kind of model, or of another architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise GalclustFileError(f"checkpoint {path} not found; give RUN/checkpoints/best.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise GalclustFileError(
            f"{path} is not a readable checkpoint (truncated or corrupt: "
            f"{str(exc).splitlines()[0][:120]}); use another, e.g. checkpoints/last.ckpt"
        ) from exc
    about = checkpoint.get("galclust", {}) if isinstance(checkpoint, dict) else {}
    kind = about.get("kind") if isinstance(about, dict) else None
    if kind not in kinds or "hyper_parameters" not in checkpoint:
        what = (
            f"a {kind.removeprefix('galclust-')} checkpoint"
            if isinstance(kind, str)
            else "not a galclust model checkpoint"
        )
        raise GalclustValueError(f"{path} is {what}; give {wanted}")
    try:
        module = kinds[str(kind)](**dict(checkpoint["hyper_parameters"]))
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except (TypeError, RuntimeError, KeyError) as exc:
        raise GalclustValueError(
            f"{path} holds weights of another architecture ({str(exc).splitlines()[0][:120]}); "
            "train again with this galclust version"
        ) from exc
    return module.eval(), dict(about)
