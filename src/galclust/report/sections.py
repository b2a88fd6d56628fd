"""One report section per stage: the numbers a reader wants in tables, the pictures beside them.

Each function reads what its stage wrote (see :mod:`galclust.report.stages`) and never fails
on a partial folder: a missing table is said in a note, a missing picture becomes a counted
placeholder.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from galclust.catalog.schema import read_catalog
from galclust.report.html import Page, esc, heading, note, pairs, para, records, table
from galclust.report.stages import Stage

_REJECTED_SHOWN = 20
_LEAST_CONFIDENT = 12


def _read_table(path: Path) -> pd.DataFrame | None:
    """A stage's table, None where it is missing or unreadable (a report never fails on it)."""
    try:
        return read_catalog(path, validate=False)
    except (OSError, ValueError):  # GalclustFileError / CatalogError included
        return None


def _where(stage: Stage) -> str:
    return f'<p class="note">From <code>{esc(stage.path)}</code>.</p>'


def scan(page: Page, stage: Stage) -> str:
    about = stage.info
    counts: dict[str, int] = dict(about.get("results", {}).get("counts", {}))
    options = about.get("options", {})
    parts = [_where(stage)]
    if counts:
        total = sum(counts.values())
        kept = counts.get("ok", 0)
        shape = options.get("shape")
        rule = f" of shape {','.join(str(s) for s in shape)}" if shape else ""
        parts.append(para(f"{kept:,} of {total:,} files kept{rule}."))
        ordered = sorted(counts.items(), key=lambda kv: -int(kv[1]))
        frame = pd.DataFrame(ordered, columns=["status", "files"])
        parts.append(table(frame))
    rejected = stage.path.with_suffix(".rejected.txt")
    if rejected.is_file():
        rows = []
        with rejected.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("#") or not line.strip():
                    continue
                fields = line.rstrip("\n").split("\t")
                rows.append([*fields, "", "", ""][:3])
                if len(rows) == _REJECTED_SHOWN:
                    break
        if rows:
            parts.append(heading(f"Rejected files (first {len(rows)}; all in {rejected.name})"))
            parts.append(table(pd.DataFrame(rows, columns=["file", "reason", "detail"])))
    return "".join(parts)


def simulate(page: Page, stage: Stage) -> str:
    options = stage.info.get("options", {})
    survey = stage.info.get("survey") or {"name": options.get("survey", "?")}
    parts = [_where(stage)]
    catalog = _read_table(stage.path / "catalog.parquet")
    if catalog is not None:
        parts.append(
            para(
                f"{len(catalog):,} galaxies simulated with GalSim for the "
                f"{survey.get('name', '?')} survey ({', '.join(survey.get('bands', []))} bands, "
                f"{survey.get('pixel_scale', '?')} arcsec/pixel, {options.get('size', '?')} px)."
            )
        )
        columns = [c for c in ("family", "split") if c in catalog]
        for column in columns:
            counts = catalog[column].value_counts().rename_axis(column).reset_index(name="galaxies")
            parts.append(table(counts))
        magnitudes = [c for c in catalog.columns if c.startswith("mag_")]
        if magnitudes:
            described = catalog[magnitudes + [c for c in ("hlr", "sersic_n", "q", "bt")
                                              if c in catalog]].describe().T  # fmt: skip
            parts.append(heading("Truth catalogue"))
            parts.append(table(described[["min", "50%", "max"]].round(3), index=True))
    else:
        parts.append(note("catalog.parquet is missing or unreadable."))
    parts.append(page.figure(stage.path / "previews" / "families.png", "example galaxies"))
    return "".join(parts)


def sweep(page: Page, stage: Stage) -> str:
    parts = [_where(stage)]
    frame = _read_table(stage.path / "sweep.csv")
    if frame is not None:
        parts.append(table(frame))
    for name, caption in (
        ("loss_curves.png", "loss curves of every latent size"),
        ("val_loss_vs_latent.png", "final validation loss against latent size"),
        ("reconstructions.png", "the same galaxies reconstructed at each latent size"),
    ):
        parts.append(page.figure(stage.path / name, caption))
    return "".join(parts)


def train(page: Page, stage: Stage) -> str:
    options = stage.info.get("options", {})
    parts = [_where(stage)]
    parts.append(
        pairs(
            (key, options[key])
            for key in ("model", "latent_dim", "epochs", "batch_size", "frame", "image_size",
                        "source")
            if key in options
        )
    )  # fmt: skip
    metrics = _read_table(stage.path / "metrics.csv")
    if metrics is not None and len(metrics):
        losses = metrics["val_loss"] if "val_loss" in metrics else pd.Series(dtype=float)
        best = metrics[losses == losses.min()].iloc[0] if losses.notna().any() else None
        shown = metrics.tail(1).copy()
        parts.append(heading("Last epoch"))
        parts.append(table(shown.drop(columns=["skipped"], errors="ignore")))
        if best is not None:
            parts.append(
                note(f"best validation loss {best['val_loss']:.5g} at epoch {int(best['epoch'])}")
            )
    parts.append(page.figure(stage.path / "loss.png", "training and validation loss"))
    for name, caption in (
        ("reconstructions.png", "validation galaxies (top) and their reconstructions"),
        ("views.png", "validation galaxies above random training views"),
    ):
        if (stage.path / name).exists() or (
            name == "reconstructions.png" and options.get("model", "vae") == "vae"
        ):
            parts.append(page.figure(stage.path / name, caption))
    return "".join(parts)


def embed(page: Page, stage: Stage) -> str:
    import pyarrow.parquet as pq

    parts = [_where(stage)]
    try:
        schema = pq.read_schema(stage.path)
        rows = pq.read_metadata(stage.path).num_rows
        dims = sum(1 for name in schema.names if name.startswith("z_"))
        parts.append(para(f"{rows:,} galaxies, {dims} latent dimensions."))
    except (OSError, ValueError):
        parts.append(note("the latents table is unreadable."))
    checkpoint = stage.info.get("options", {}).get("checkpoint")
    if checkpoint:
        parts.append(note(f"encoder: {checkpoint}"))
    return "".join(parts)


def cluster(page: Page, stage: Stage) -> str:
    summary = stage.info
    folder = stage.path
    parts = [_where(stage)]
    parts.append(
        para(
            f"{summary.get('galaxies', 0):,} galaxies in {summary.get('k', '?')} clusters; "
            f"{summary.get('outliers', 0):,} outliers, {summary.get('unclassified', 0):,} "
            f"unclassified. {summary.get('choice', '')}"
        )
    )
    scores = summary.get("label_scores")
    if scores:
        parts.append(heading(f"Agreement with the labels ({summary.get('label_column', '')})"))
        frame = pd.DataFrame(
            [{"clustering": name, **values} for name, values in scores.items()]
        )  # fmt: skip
        parts.append(table(frame))
        parts.append(page.figure(folder / "confusion.png", "labels against galclust clusters"))
        if "pixel_baseline" in scores:
            parts.append(
                page.figure(folder / "confusion_baseline.png", "labels against raw-pixel k-means")
            )
    parts.append(heading("Choosing the number of clusters"))
    per_k = summary.get("scores_per_k", [])
    if per_k:
        parts.append(table(records(per_k, ["k", "bic", "silhouette", "stability"])))
    parts.append(page.figure(folder / "scores_vs_k.png", "BIC, silhouette and stability against k"))
    parts.append(heading("Map and clusters"))
    parts.append(page.figure(folder / "map.png", "2-D map of the latents, coloured by cluster"))
    clusters = summary.get("clusters", [])
    if clusters:
        columns = ["cluster", "size", "mean_confidence", "confidence_p10", "outlier_share"]
        parts.append(table(records(clusters, columns)))
    parts.append(page.figure(folder / "overview.png", "the most typical galaxies of each cluster"))
    parts.append(heading("Galleries"))
    for row in clusters:
        number = int(row["cluster"])
        if number < 0:
            continue
        parts.append(
            page.figure(
                folder / "gallery" / f"cluster_{number:02d}.png",
                f"cluster {number}: {row.get('size', '?')} galaxies",
                width=520,
            )
        )
    result = _read_table(folder / "clusters.parquet")
    if result is not None and {"id_str", "confidence"} <= set(result.columns):
        doubtful = result.sort_values("confidence").head(_LEAST_CONFIDENT)
        parts.append(heading(f"The {len(doubtful)} least confident galaxies"))
        shown = [c for c in ("id_str", "cluster", "confidence", "is_outlier", "distance")
                 if c in doubtful]  # fmt: skip
        parts.append(table(doubtful[shown]))
    return "".join(parts)


_REGRESS_OPTIONS = ("targets", "image_size", "epochs", "batch_size", "seeing", "apertures",
                    "nll_beta", "ema", "views", "source")  # fmt: skip


def regress(page: Page, stage: Stage) -> str:
    folder = stage.path
    options = stage.info.get("options", {})
    parts = [_where(stage)]
    parts.append(
        pairs(
            (key, ", ".join(options[key]) if isinstance(options[key], list) else options[key])
            for key in _REGRESS_OPTIONS
            if key in options
        )
    )
    metrics: dict[str, Any] = {}
    path = folder / "metrics.json"
    if path.is_file():
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            parts.append(note("metrics.json is unreadable."))
    else:
        parts.append(note("no metrics.json: the run has not finished its test."))
    columns = ["target", "unit", "n", "rmse", "bias", "nmad", "outlier_fraction",
               "within_1sigma", "within_2sigma", "median_abs_relative_error"]  # fmt: skip
    for key, title in (("test_snr20", "Test galaxies with S/N >= 20"), ("test", "All test")):
        rows = [{"target": name, **values} for name, values in metrics.get(key, {}).items()]
        if rows:
            parts.append(heading(title))
            parts.append(table(records(rows, columns)))
    for what, value in metrics.get("headline", {}).items():
        parts.append(note(f"{what}: {value:.3f}"))
    baseline = metrics.get("baseline")
    if baseline:
        parts.append(heading(f"Against a Sersic fit ({baseline.get('galaxies', 0)} galaxies)"))
        rows = []
        for name, fit in baseline.get("scores", {}).items():
            cnn = baseline.get("cnn_scores", {}).get(name, {})
            rows.append({"target": name, "fit RMSE": fit.get("rmse"), "CNN RMSE": cnn.get("rmse"),
                         "fit NMAD": fit.get("nmad"), "CNN NMAD": cnn.get("nmad")})  # fmt: skip
        parts.append(table(pd.DataFrame(rows)))
        speedup = baseline.get("speedup_cnn_vs_fit")
        parts.append(
            para(
                f"Per galaxy: CNN {metrics.get('cnn_ms_per_galaxy', math.nan):.2f} ms, fit "
                f"{baseline.get('seconds_per_galaxy', math.nan) * 1e3:.0f} ms"
                + (f" ({speedup:.0f}x)." if speedup else ".")
            )
        )
    parts.append(page.figure(folder / "loss.png", "training and validation loss"))
    for target in metrics.get("targets", []):
        parts.append(
            page.figure(
                folder / "plots" / f"{target}.png",
                f"{target}: predicted against true, and errors against magnitude",
            )
        )
    return "".join(parts)


def provenance(records_: list[tuple[Path, dict[str, Any]]]) -> str:
    """One row per stage: command, when, how long, versions, and the command line."""
    rows = []
    for path, about in records_:
        duration = math.nan
        try:
            started = datetime.fromisoformat(about["started"])
            finished = datetime.fromisoformat(about["finished"])
            duration = (finished - started).total_seconds()
        except (KeyError, TypeError, ValueError):
            pass
        versions = about.get("versions", {})
        rows.append(
            {
                "command": about.get("command", "?"),
                "file": str(path),
                "started": about.get("started", ""),
                "seconds": duration,
                "galclust": versions.get("galclust", ""),
                "torch": versions.get("torch", ""),
                "command line": " ".join(about.get("argv", [])),
            }
        )
    if not rows:
        return note("No provenance records were found.")
    return table(pd.DataFrame(rows))


def _relative_url(path: str) -> str:
    """A relative link: quoted, and starting with ./ so that no file name reads as a scheme."""
    posix = Path(path).as_posix()
    return quote(posix) if posix.startswith("../") else "./" + quote(posix)


def explore(page: Page, stage: Stage) -> str:
    """A link to the explorer page, relative to the report so that the two travel together."""
    target = os.path.relpath(stage.path.resolve(), page.folder) if page.folder else str(stage.path)
    points = stage.info.get("results", {}).get("points")
    count = f" of {points:,} galaxies" if isinstance(points, int) else ""
    return (
        _where(stage)
        + f'<p><a id="explorer-link" href="{esc(_relative_url(target))}">Open the interactive '
        f"map{esc(count)}</a>: pan and zoom, colour by any column, hover for thumbnails, click "
        "a galaxy for its nearest neighbours in latent space.</p>"
    )


SECTIONS: dict[str, Callable[[Page, Stage], str]] = {
    "scan": scan,
    "simulate": simulate,
    "sweep": sweep,
    "train": train,
    "embed": embed,
    "cluster": cluster,
    "regress": regress,
    "explore": explore,
}
