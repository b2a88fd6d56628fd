"""The ``galclust`` command line: parse arguments, call one library function, report.

Expected failures (a bad path, a bad option, an unreadable catalog) print one line and exit with
status 2; ``--debug`` shows the traceback instead. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers") from None


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
    p.add_argument(
        "--mag-range", type=_floats, metavar="BRIGHT,FAINT",
        help="magnitudes drawn, uniformly (r band, or the single band; default: the preset's, "
        "decals 15.5,20.5, hst-cosmos 19,27); reach past the galaxies you will measure",
    )  # fmt: skip
    p.add_argument(
        "--stamp-sizes", type=_ints, default=(64, 256), metavar="MIN,MAX",
        help="pixels of the random stamps, centre-cropped or noise-padded to --size (default: "
        "64,256)",
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
        stamp_range=args.stamp_sizes,
        mag_range=args.mag_range,
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


def _add_report(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "report",
        help="one HTML page of every stage in run folders",
        description="Write one self-contained HTML page (figures embedded, no network needed) "
        "from whatever stages the run folders hold: data, latent-size comparison, training, "
        "clusters with galleries and label scores, regression metrics, and the provenance of "
        "every stage. Stages that are not there are listed at the top.",
        epilog="examples:\n  galclust report galclust-demo -o report.html\n"
        "  galclust report runs/vae35 runs/clusters runs/mag -o report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, searched 3 levels down")
    p.add_argument("-o", "--output", default="report.html", help="default: %(default)s")
    p.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from galclust.report import build_report

    print(build_report(args.runs, args.output).summary())
    return 0


def _add_explore(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "explore",
        help="an interactive map of a clustering, with thumbnails and neighbours",
        description="Write an HTML page (no server, no network) with the 2-D map of every "
        "galaxy of a clustering: pan, zoom, colour by cluster or any column, hover for a "
        "thumbnail, click for the galaxy's details and its nearest neighbours in latent space. "
        "Thumbnails go to OUTPUT_files/ beside the page, loaded only when shown.",
        epilog="example:\n  galclust explore runs/clusters -o explorer.html --catalog "
        "sims/catalog.parquet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("clusters", metavar="CLUSTERS", help="the folder written by galclust cluster")
    p.add_argument("-o", "--output", default="explorer.html", help="default: %(default)s")
    p.add_argument("--catalog", help="more columns to colour by, matched on id_str")
    p.add_argument("--latents", help="default: the latents the clusters were made from")
    p.add_argument("--data", help="where the images are (default: the latents' file_loc)")
    p.add_argument(
        "--max-points", type=int, default=100_000,
        help="show a random sample beyond this many galaxies (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--map", choices=("umap", "pca"), help="default: the clustering's")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    p.set_defaults(run=_run_explore)


def _run_explore(args: argparse.Namespace) -> int:
    from galclust.provenance import now
    from galclust.report.explorer import ExploreOptions, build_explorer

    started = now()
    options = ExploreOptions(
        clusters=args.clusters, output=args.output, latents=args.latents, catalog=args.catalog,
        data=args.data, max_points=args.max_points, map=args.map, seed=args.seed,
    )  # fmt: skip
    result = build_explorer(options)
    print(result.summary())
    _wrote(args.output, "explore", options, started, {"points": result.points})
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
    from galclust import cli_models as models
    from galclust.cli_regress import add_predict

    for add in (
        _add_scan, _add_catalog, _add_simulate, models.add_pack, models.add_train,
        models.add_sweep, models.add_embed, models.add_cluster, models.add_assign,
        add_predict, _add_explore, _add_report, _add_demo,
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
    from galclust.provenance import is_lead

    lead = is_lead()  # the other ranks of a distributed run: rank 0 speaks for all of them
    _configure_logging(quiet=args.quiet or not lead)
    use_system_allocator()
    run: Callable[[argparse.Namespace], int] = args.run
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        if lead:
            return run(args)
        with open(os.devnull, "w") as silent, contextlib.redirect_stdout(silent):
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
