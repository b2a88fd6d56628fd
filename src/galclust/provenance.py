"""Provenance files: what command made an output, with which options and versions, and when."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from galclust.catalog.schema import atomic_write_text

_PACKAGES = ("galclust", "numpy", "torch", "galsim", "astropy", "pandas", "pyarrow", "pillow")


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape galclust's results."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def provenance_path(output: str | os.PathLike[str]) -> Path:
    """Where the provenance of ``output`` goes.

    ``DIR/provenance.json`` for a run folder, ``<stem>.provenance.json`` beside a file.
    """
    path = Path(output)
    if path.is_dir() or not path.suffix:
        return path / "provenance.json"
    return path.with_suffix(".provenance.json")


def write_provenance(
    output: str | os.PathLike[str],
    *,
    command: str,
    options: Any,
    started: datetime,
    results: dict[str, Any] | None = None,
) -> Path:
    """Write the provenance file next to ``output`` and return its path.

    It records the command line, the resolved options, package versions, host, start and end
    times, and a few result figures.
    """
    record = {
        "command": command,
        "argv": [os.fsdecode(a) for a in sys.argv],
        "options": _jsonable(options),
        "versions": versions(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": _jsonable(results or {}),
    }
    path = provenance_path(output)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def now() -> datetime:
    """The current time in UTC, for ``started``."""
    return datetime.now(UTC)


def is_lead() -> bool:
    """True in the process of global rank 0: the one that checks and writes output folders.

    Lightning starts the processes of other devices by running the same command again with
    their rank in the environment; these variables are the ones Lightning reads, in its order.
    """
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(name)
        if value is not None:
            return int(value) == 0
    return True
