"""Catalogs of galaxy cutouts: scanning folders, reading headers, the catalog schema.

``galclust.scan`` (the function) lives in :mod:`galclust.catalog.scan`; it is not re-exported
here so that ``galclust.catalog.scan`` keeps naming the module.
"""

from galclust.catalog.check import CheckReport, check_catalog
from galclust.catalog.readers import ImageInfo, inspect_file, read_pixels
from galclust.catalog.scan import (
    ScanOptions,
    ScanReport,
    assign_ids,
    parse_shape,
    scan_catalog,
)
from galclust.catalog.schema import (
    REQUIRED_COLUMNS,
    SCAN_COLUMNS,
    STATUSES,
    read_catalog,
    validate_catalog,
    write_catalog,
)

__all__ = [
    "REQUIRED_COLUMNS",
    "SCAN_COLUMNS",
    "STATUSES",
    "CheckReport",
    "ImageInfo",
    "ScanOptions",
    "ScanReport",
    "assign_ids",
    "check_catalog",
    "inspect_file",
    "parse_shape",
    "read_catalog",
    "read_pixels",
    "scan_catalog",
    "validate_catalog",
    "write_catalog",
]
