"""The galclust error hierarchy.

Which to raise
--------------
- ``GalclustValueError``: a value the user gave is wrong (an option, a column, a shape string).
- ``GalclustFileError``: a path the user named is missing, unreadable or of the wrong kind.
- ``CatalogError``: a catalog file exists but does not follow the schema in
  :mod:`galclust.catalog.schema` (missing column, duplicate ``id_str``, unreadable table).
- ``GalclustError``: anything else that is the user's to fix.

A message names the thing, the value received, the rule, and the fix, on one line, e.g.
``"catalog.parquet has no column 'file_loc'; expected columns: id_str, file_loc (see galclust
scan --help)"``. The command-line interface prints it as one line and exits with status 2;
anything that is not a ``GalclustError`` is a bug and keeps its traceback.

Problems with single image files during a scan are not errors: they become rejected catalog
rows with a ``status`` and a ``detail`` (see :mod:`galclust.catalog.schema`).

Warnings
--------
- ``NoImagesFoundWarning``: a valid request found nothing to work on (an empty folder).
"""

from __future__ import annotations


class GalclustError(Exception):
    """Base class of every error that galclust reports to the user as a one-line message."""


class GalclustValueError(GalclustError, ValueError):
    """A value given by the user (option, shape, column name) is not valid."""


class GalclustFileError(GalclustError, OSError):
    """A path given by the user does not exist, cannot be read, or is of the wrong kind."""


class CatalogError(GalclustError, ValueError):
    """A catalog table does not follow the galclust catalog schema."""


class GalclustWarning(UserWarning):
    """Base class of galclust warnings."""


class NoImagesFoundWarning(GalclustWarning):
    """A scan or a catalog held no image files; the result is empty but valid."""
