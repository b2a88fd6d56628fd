"""``galclust simulate``: labelled GalSim galaxies with known parameters and morphologies.

Writes into the output folder::

    images.npy         (N, bands, size, size) float32, survey image units, memory-mappable
    catalog.parquet    id_str, file_loc (images.npy), image_index, split, family, every truth column
    simulation.json    the survey (bands, pixel scale, zeropoint, noise, PSF) and the options
    previews/families.png   example galaxies of each family, one row per family
    provenance.json

Every galaxy's parameters and noise come from its own seed, derived from ``--seed`` and its
index, so the same seed gives identical images and catalog whatever ``--workers`` is. Blocks of
galaxies are journaled as they finish (``.simulate-journal/``); an interrupted run with the same
options resumes where it stopped and gives the same result as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from galclust.catalog.schema import atomic_write_text, write_catalog
from galclust.exceptions import GalclustFileError, GalclustValueError
from galclust.parallel import ordered_map
from galclust.progress import Progress
from galclust.simulate.params import (
    FAMILIES,
    SURVEYS,
    Component,
    GalaxyParams,
    Survey,
    draw_params,
    survey_named,
)
from galclust.simulate.render import render

__all__ = [
    "FAMILIES",
    "SURVEYS",
    "Component",
    "GalaxyParams",
    "SimulateOptions",
    "SimulateReport",
    "Survey",
    "draw_params",
    "render",
    "simulate",
    "simulation_survey",
]

log = logging.getLogger(__name__)

_BLOCK = 32  # galaxies per task
_MAX_TRIES = 5
_SPLITS = ("train", "val", "test")
SIMULATION_FILE = "simulation.json"


@dataclass(frozen=True)
class SimulateOptions:
    """Everything that decides a simulation; saved in its provenance file."""

    n: int
    output: str
    size: int = 128
    survey: str = "decals"
    bands: tuple[str, ...] | None = None
    pixel_scale: float | None = None
    psf_fwhm: float | None = None
    zeropoint: float | None = None
    sky_sigma: tuple[float, ...] | None = None
    seed: int = 0
    workers: int = 2
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    families: tuple[str, ...] = FAMILIES
    stamp_range: tuple[int, int] = (64, 256)  # pixels of the random stamps, before crop or pad
    mag_range: tuple[float, float] | None = None  # magnitudes drawn (None: the preset's)
    overwrite: bool = False


@dataclass
class SimulateReport:
    """The catalog of a simulation and how it went."""

    catalog: pd.DataFrame
    output: Path
    seconds: float
    redrawn: int
    family_counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rate = len(self.catalog) / self.seconds if self.seconds else float("inf")
        mix = ", ".join(f"{n} {f}" for f, n in self.family_counts.items())
        return (
            f"simulated {len(self.catalog)} galaxies in {self.seconds:.1f} s ({rate:,.0f}/s): "
            f"{mix}; {self.redrawn} redrawn after a GalSim failure"
        )


def galaxy_seed(seed: int, index: int, attempt: int = 0) -> int:
    """The seed of galaxy ``index``: independent of the worker that renders it."""
    return int(np.random.SeedSequence([seed, index, attempt]).generate_state(1)[0])


def _validate(options: SimulateOptions) -> Survey:
    if options.n < 1:
        raise GalclustValueError(f"-n {options.n}: give at least one galaxy to simulate")
    if options.size < 16:
        raise GalclustValueError(f"--size {options.size}: images must be at least 16 pixels")
    stamps = tuple(options.stamp_range)
    if len(stamps) != 2 or stamps[0] < 8 or stamps[1] < stamps[0]:
        raise GalclustValueError(
            f"--stamp-sizes {','.join(map(str, options.stamp_range))}: give the smallest and "
            "largest stamp in pixels, 8 <= min <= max, e.g. --stamp-sizes 16,192"
        )
    if options.mag_range is not None and not (
        len(options.mag_range) == 2
        and np.isfinite(options.mag_range).all()
        and options.mag_range[0] < options.mag_range[1]
    ):
        raise GalclustValueError(
            f"--mag-range {','.join(map(str, options.mag_range))}: give the brightest and "
            "faintest magnitude drawn, brightest first, e.g. --mag-range 20,27"
        )
    if len(options.split) != 3 or min(options.split) < 0 or abs(sum(options.split) - 1) > 1e-6:
        raise GalclustValueError(
            f"--split {','.join(map(str, options.split))}: give three fractions >= 0 for "
            "train,val,test that sum to 1, e.g. --split 0.8,0.1,0.1"
        )
    unknown = [f for f in options.families if f not in FAMILIES]
    if unknown or not options.families:
        raise GalclustValueError(
            f"--families: {unknown[0] if unknown else 'none given'!r} is not a family; "
            f"choose from {','.join(FAMILIES)}"
        )
    if options.workers < 1:
        raise GalclustValueError(f"--workers {options.workers} must be at least 1")
    if options.sky_sigma is not None and min(options.sky_sigma) < 0:
        raise GalclustValueError(f"--sky-sigma {options.sky_sigma}: noise must be >= 0")
    for name in ("pixel_scale", "psf_fwhm"):
        value = getattr(options, name)
        if value is not None and value <= 0:
            raise GalclustValueError(f"--{name.replace('_', '-')} {value} must be positive")
    survey = survey_named(
        options.survey,
        bands=options.bands,
        pixel_scale=options.pixel_scale,
        psf_fwhm=options.psf_fwhm,
        zeropoint=options.zeropoint,
        sky_sigma=options.sky_sigma,
        mag_range=options.mag_range,
    )
    if len(survey.sky_sigma) != len(survey.bands):
        raise GalclustValueError(
            f"--sky-sigma gives {len(survey.sky_sigma)} values for {len(survey.bands)} bands "
            f"({','.join(survey.bands)}); give one per band"
        )
    return survey


def _render_block(
    indices: range, options: SimulateOptions, survey: Survey
) -> tuple[np.ndarray, list[dict[str, Any]], int]:
    """Render galaxies ``indices``; a draw GalSim refuses is redrawn with the next seed."""
    import galsim

    # one thread per process: with its default (all cores) two workers ran slower than one.
    # OpenMP's setting is per process and shared with PyTorch, so it is put back afterwards:
    # the main process renders too, and may train a network next.
    threads = galsim.utilities.get_omp_threads()
    galsim.utilities.set_omp_threads(1)
    try:
        return _render_galaxies(indices, options, survey)
    finally:
        galsim.utilities.set_omp_threads(threads)


def _render_galaxies(
    indices: range, options: SimulateOptions, survey: Survey
) -> tuple[np.ndarray, list[dict[str, Any]], int]:
    import galsim

    images = np.empty((len(indices), len(survey.bands), options.size, options.size), np.float32)
    rows = []
    redrawn = 0
    for j, index in enumerate(indices):
        family = options.families[index % len(options.families)]
        for attempt in range(_MAX_TRIES):
            params = draw_params(
                family,
                survey,
                galaxy_seed(options.seed, index, attempt),
                stamp_range=options.stamp_range,
            )
            try:
                images[j], truth = render(params, survey, options.size)
                break
            except (galsim.GalSimError, ValueError, RuntimeError, MemoryError):
                redrawn += 1
        else:  # pragma: no cover - the priors are chosen so that this does not happen
            raise GalclustValueError(f"galaxy {index} ({family}) failed {_MAX_TRIES} draws")
        rows.append({"image_index": index, **truth})
    return images, rows, redrawn


def _splits(n: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    counts = [math.floor(n * f) for f in fractions]
    counts[0] += n - sum(counts)
    labels = np.repeat(np.array(_SPLITS), counts)
    return np.random.default_rng([seed, 7]).permutation(labels)


def simulate(options: SimulateOptions) -> SimulateReport:
    """Simulate ``options.n`` galaxies into ``options.output``.

    Returns
    -------
    SimulateReport
        The catalog (one row per galaxy, truth columns documented in
        :func:`galclust.simulate.render.render`), timing and the number of redraws.

    Raises
    ------
    GalclustValueError
        A bad option (n < 1, a split not summing to 1, an unknown band or family).
    GalclustFileError
        The output already holds a finished simulation (pass ``overwrite``), or cannot be
        written (full disk: nothing half-written is left under the final names).
    """
    start = time.perf_counter()
    survey = _validate(options)
    out = Path(options.output)
    if (out / "catalog.parquet").exists() and not options.overwrite:
        raise GalclustFileError(
            f"{out} already holds a finished simulation; choose another -o or pass --overwrite"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "catalog.parquet").unlink(missing_ok=True)  # the last file written marks "done"
        partial = out / ".images.npy.partial"
        shape = (options.n, len(survey.bands), options.size, options.size)
        journal = out / ".simulate-journal"
        images, done = _open_partial(partial, journal, options, survey, shape)
        blocks = [range(i, min(i + _BLOCK, options.n)) for i in range(0, options.n, _BLOCK)]
        todo = [block for block in blocks if block.start not in done]
        work = functools.partial(_render_block, options=options, survey=survey)
        progress = Progress(options.n, "simulating", unit="galaxies")
        progress.update(options.n - sum(len(block) for block in todo))
        try:
            for block, (pixels, truth, redraws) in zip(
                todo, ordered_map(work, todo, options.workers), strict=True
            ):
                images[block.start : block.stop] = pixels
                images.flush()  # pixels on disk before the block is marked done
                name = journal / f"block-{block.start:09d}-{redraws}.parquet"
                write_catalog(pd.DataFrame(truth), name)
                progress.update(len(block))
        finally:
            progress.close()
        del images
        parts = sorted(journal.glob("block-*.parquet"))
        rows = pd.concat([pd.read_parquet(part) for part in parts], ignore_index=True)
        redrawn = sum(int(part.stem.rsplit("-", 1)[1]) for part in parts)
        os.replace(partial, out / "images.npy")
        catalog = _catalog(rows, options, out)
        _write_previews(out, catalog, survey)
        about = {"survey": asdict(survey), "options": asdict(options)}
        atomic_write_text(out / SIMULATION_FILE, json.dumps(about, indent=2, default=list) + "\n")
        write_catalog(catalog, out / "catalog.parquet")
        shutil.rmtree(journal)
    except OSError as exc:
        raise GalclustFileError(
            f"cannot write the simulation in {out} ({exc.strerror}); free some space or choose "
            "another -o, then run again"
        ) from exc
    counts = catalog["family"].value_counts()
    return SimulateReport(
        catalog=catalog,
        output=out,
        seconds=time.perf_counter() - start,
        redrawn=redrawn,
        family_counts={f: int(counts.get(f, 0)) for f in options.families},
    )


def _open_partial(
    partial: Path, journal: Path, options: SimulateOptions, survey: Survey, shape: tuple[int, ...]
) -> tuple[np.memmap[Any, Any], set[int]]:
    """The image store of this run and the blocks already done by an interrupted one.

    An interrupted run is resumed only if it had the same options (workers aside) and the same
    survey (a preset can change between galclust versions); otherwise its leftovers are
    discarded.
    """
    settings = {k: v for k, v in asdict(options).items() if k not in ("workers", "overwrite")}
    settings["survey_fields"] = asdict(survey)
    key = json.dumps(settings, sort_keys=True, default=list)
    stamp = journal / "options.json"
    if partial.exists() and stamp.exists() and stamp.read_text() == key:
        images = np.lib.format.open_memmap(partial, mode="r+")
        if images.shape == shape:
            done = {int(p.name.split("-")[1]) for p in journal.glob("block-*.parquet")}
            log.info("resuming an interrupted run: %d blocks already simulated", len(done))
            return images, done
    shutil.rmtree(journal, ignore_errors=True)
    journal.mkdir()
    stamp.write_text(key)
    return np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape), set()


def simulation_survey(folder: str | os.PathLike[str]) -> Survey | None:
    """The survey a ``galclust simulate`` folder was made for; None for folders made before
    galclust wrote ``simulation.json``."""
    path = Path(folder) / SIMULATION_FILE
    if not path.is_file():
        return None
    stored: dict[str, Any] = json.loads(path.read_text())["survey"]
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
    return Survey(**fields)


def _catalog(rows: pd.DataFrame, options: SimulateOptions, out: Path) -> pd.DataFrame:
    catalog = rows.reset_index(drop=True)
    width = max(6, len(str(options.n - 1)))
    catalog.insert(0, "id_str", [f"sim_{i:0{width}d}" for i in catalog["image_index"]])
    catalog.insert(1, "file_loc", str((out / "images.npy").resolve()))
    catalog.insert(3, "split", _splits(options.n, options.split, options.seed))
    return catalog


def _write_previews(out: Path, catalog: pd.DataFrame, survey: Survey, per_family: int = 8) -> None:
    """A PNG with ``per_family`` example galaxies per family, as colour (or stretched) images."""
    from PIL import Image

    from galclust.datasets import grz_to_rgb8, to_rgb8

    # g,r,z in nanomaggies as the Legacy Surveys viewer shows them; anything else stretched
    picture = grz_to_rgb8 if survey.bands == ("g", "r", "z") else to_rgb8
    images = np.load(out / "images.npy", mmap_mode="r")
    families = [f for f in FAMILIES if f in set(catalog["family"])]
    size = images.shape[-1]
    grid = np.zeros((len(families) * size, per_family * size, 3), dtype=np.uint8)
    for r, family in enumerate(families):
        picks = catalog.loc[catalog["family"] == family, "image_index"].to_numpy()[:per_family]
        for c, index in enumerate(picks):
            grid[r * size : (r + 1) * size, c * size : (c + 1) * size] = picture(images[index])
    (out / "previews").mkdir(exist_ok=True)
    Image.fromarray(grid).save(out / "previews" / "families.png")
