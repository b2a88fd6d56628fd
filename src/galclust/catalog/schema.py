"""The galclust catalog: one row per image file, and how catalogs are read and written.

Columns follow the Zoobot / galaxy-datasets convention (``id_str``, ``file_loc``), so a Zoobot
catalog is a galclust catalog. Only those two columns are required of a catalog made elsewhere;
a catalog written by ``galclust scan`` has all of them:

============  ========  =====================================================================
column        type      meaning
============  ========  =====================================================================
id_str        string    unique galaxy id: the file stem, with parent folders prepended
                        (joined by ``__``) where two files share a stem
file_loc      string    absolute path of the image file
format        string    ``fits``, ``png``, ``jpeg``, ``tiff`` or ``npy`` (from the file's
                        content; the extension is only a hint)
channels      Int64     C of the image as (C, H, W); null when the header could not be read
height        Int64     H in pixels
width         Int64     W in pixels
dtype         string    pixel type as stored (``uint8``, ``uint16``, ``float32``, ...)
hdu           Int64     FITS: index of the HDU holding the image; null for other formats
bytes         int64     file size in bytes
mtime         float64   modification time, seconds since the Unix epoch
status        string    ``ok`` or the rejection reason (see ``STATUSES``)
detail        string    short human-readable explanation ("" when ok)
verified      bool      pixels were decoded and checked (``galclust scan --verify``)
============  ========  =====================================================================

Shapes are always (C, H, W): an RGB PNG of 424x424 pixels is 3,424,424; a grayscale PNG or a 2-D
FITS image is 1,H,W; a FITS cube of three bands is 3,H,W.

Relative ``file_loc`` values in a catalog read from disk are taken relative to the catalog's
own folder, as in the catalogs that ship beside image folders.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from galclust.exceptions import CatalogError, GalclustFileError, GalclustValueError

REQUIRED_COLUMNS = ("id_str", "file_loc")

#: Column name -> pandas dtype of a catalog written by ``galclust scan``.
SCAN_COLUMNS: dict[str, str] = {
    "id_str": "string",
    "file_loc": "string",
    "format": "string",
    "channels": "Int64",
    "height": "Int64",
    "width": "Int64",
    "dtype": "string",
    "hdu": "Int64",
    "bytes": "int64",
    "mtime": "float64",
    "status": "string",
    "detail": "string",
    "verified": "bool",
}

#: Every value ``status`` can take, with what it means.
STATUSES: dict[str, str] = {
    "ok": "kept",
    "wrong_shape": "readable, but not of the shape asked for with --shape",
    "unreadable": "could not be opened (permission, broken link, symlink loop, I/O error)",
    "empty_file": "zero bytes long",
    "corrupt": "content is not a valid image of any supported format",
    "truncated": "shorter than its header says: the file was cut off",
    "no_image_hdu": "FITS file without any HDU holding a 2-D or 3-D image",
    "unsupported_ndim": "image has more than 3 non-degenerate dimensions",
    "unsupported_format": "a file picked by --pattern that is not FITS, PNG, JPEG, TIFF or .npy",
    "bad_filename": "file name is not valid UTF-8 and cannot be stored in a catalog",
    "empty_image": "--verify: every pixel has the same value (blank image)",
    "non_finite": "--verify: pixels hold NaN or infinity",
    "missing": "galclust catalog check: file_loc does not exist",
    "stale": "galclust catalog check: the header no longer matches the shape in the catalog",
}

CATALOG_SUFFIXES = (".parquet", ".pq", ".csv", ".fits", ".fit")


def empty_catalog() -> pd.DataFrame:
    """Return a catalog with the scan columns and no rows."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in SCAN_COLUMNS.items()})


def coerce_scan_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every scan column its documented dtype, adding missing ones as nulls."""
    columns: dict[str, pd.Series] = {}
    for name, dtype in SCAN_COLUMNS.items():
        if name in frame:
            column = frame[name]
        else:
            column = pd.Series(pd.NA if dtype != "bool" else False, index=frame.index)
        # astype copies even an already-typed column: skip it then
        same = str(column.dtype) == dtype
        columns[name] = column if same else column.astype(dtype)  # type: ignore[call-overload]
    extra = {c: frame[c] for c in frame.columns if c not in SCAN_COLUMNS}
    return pd.DataFrame({**columns, **extra}, index=frame.index, copy=False)


def check_catalog_suffix(path: Path) -> str:
    """Return the lower-case suffix of a catalog path, or raise if it is not a catalog type."""
    suffix = path.suffix.lower()
    if suffix not in CATALOG_SUFFIXES:
        raise GalclustValueError(
            f"{path}: unknown catalog type {suffix!r}; use one of "
            f"{', '.join(CATALOG_SUFFIXES)} (Parquet is the default for galclust scan -o)"
        )
    return suffix


def read_catalog(path: str | os.PathLike[str], *, validate: bool = True) -> pd.DataFrame:
    """Read a catalog from Parquet, CSV or a FITS table.

    Parameters
    ----------
    path : str or path-like
        ``.parquet``/``.pq``, ``.csv``, or ``.fits``/``.fit`` (first table HDU).
    validate : bool, default True
        Check the required columns and that ``id_str`` is unique.

    Returns
    -------
    pandas.DataFrame
        One row per galaxy. ``file_loc`` is made absolute, relative paths being taken from the
        catalog's folder.

    Raises
    ------
    GalclustFileError
        The file does not exist.
    CatalogError
        The table cannot be parsed, lacks ``id_str``/``file_loc``, or repeats an ``id_str``.

    Examples
    --------
    >>> cat = read_catalog("catalog.parquet")  # doctest: +SKIP
    >>> cat.loc[cat.status == "ok", "file_loc"].head()  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise GalclustFileError(f"catalog {path} does not exist; make one with galclust scan")
    suffix = check_catalog_suffix(path)
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            frame = pd.read_csv(path, dtype={"id_str": "string", "file_loc": "string"})
        else:
            from astropy.table import Table

            frame = Table.read(path, format="fits").to_pandas()
            for column in frame.columns:
                if frame[column].dtype == object:
                    frame[column] = frame[column].map(
                        lambda v: v.decode() if isinstance(v, bytes) else v
                    )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CatalogError(
            f"{path}: cannot read it as a {suffix[1:]} table ({first_line}); "
            "is it a catalog written by galclust scan or a Zoobot-style CSV?"
        ) from exc
    if validate:
        validate_catalog(frame, source=str(path))
    if "file_loc" in frame:
        base = path.resolve().parent
        frame["file_loc"] = (
            frame["file_loc"]
            .astype("string")
            .map(lambda loc: loc if pd.isna(loc) or os.path.isabs(loc) else str(base / loc))
        )
    if "id_str" in frame:
        frame["id_str"] = frame["id_str"].astype("string")
    return frame


def validate_catalog(frame: pd.DataFrame, *, source: str = "catalog") -> None:
    """Raise ``CatalogError`` unless ``frame`` has ``id_str`` and ``file_loc`` with unique ids."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns[:8])) or "none"
        raise CatalogError(
            f"{source} has no column {missing[0]!r}; expected columns: "
            f"{', '.join(REQUIRED_COLUMNS)} (found: {found}; see galclust scan --help)"
        )
    if frame["id_str"].isna().any():
        row = int(np.flatnonzero(frame["id_str"].isna().to_numpy())[0])
        raise CatalogError(f"{source}: id_str is empty in row {row}; give every galaxy an id")
    duplicated = frame["id_str"][frame["id_str"].duplicated()]
    if len(duplicated):
        raise CatalogError(
            f"{source}: id_str {duplicated.iloc[0]!r} appears more than once "
            f"({len(duplicated)} duplicates); ids must be unique"
        )


def _default_mode() -> int:
    """Permissions of a newly created file under this process's umask (mkstemp makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``; the file
    gets the permissions a plain ``open`` would have given it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that readers never see a half-written file."""

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(Path(path), write)


def write_catalog(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a catalog atomically as Parquet, CSV or a FITS table, chosen by the suffix.

    The file is written beside its destination and renamed over it, so an interrupted write
    never leaves a half-written catalog.
    """
    path = Path(path)
    suffix = check_catalog_suffix(path)

    def write(tmp: Path) -> None:
        if suffix in (".parquet", ".pq"):
            frame.to_parquet(tmp, index=False)
        elif suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            from astropy.table import Table

            plain = frame.copy()
            for column in plain.columns:
                if isinstance(plain[column].dtype, pd.StringDtype):
                    plain[column] = plain[column].fillna("").astype(str)
                elif str(plain[column].dtype) == "Int64":
                    plain[column] = plain[column].fillna(-1).astype("int64")
            Table.from_pandas(plain).write(tmp, format="fits", overwrite=True)

    atomic_write(path, write)
