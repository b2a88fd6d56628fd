"""Catalog files made elsewhere: reading, validation errors, and galclust catalog check."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from astropy.table import Table

from conftest import write_png
from galclust.catalog import check_catalog, read_catalog, write_catalog
from galclust.exceptions import CatalogError, GalclustFileError, GalclustValueError


def test_zoobot_csv_with_relative_paths(shared_data: Path) -> None:
    catalog = read_catalog(shared_data / "gz1-sdss-dev" / "catalog.csv")
    assert len(catalog) == 600
    assert Path(catalog.file_loc.iloc[0]).is_absolute()
    assert Path(catalog.file_loc.iloc[0]).is_file()
    assert set(catalog.label) == {"elliptical", "edge_on", "spiral"}


def test_check_real_catalogs(shared_data: Path) -> None:
    gz = check_catalog(shared_data / "gz1-sdss-dev" / "catalog.csv", shape=(3, 423, 423))
    assert gz.ok and gz.counts == {"ok": 600}
    assert "label" in gz.catalog  # the user's columns are kept
    hst = check_catalog(shared_data / "cosmos-f814w" / "catalog.csv", shape=(1, 54, 54))
    assert not hst.ok
    assert hst.counts["wrong_shape"] > 90


def test_check_reports_missing_files_and_stale_shapes(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", (3, 16, 16))
    write_png(tmp_path / "b.png", (3, 20, 20))
    frame = pd.DataFrame(
        {
            "id_str": ["a", "b", "c"],
            "file_loc": ["a.png", str(tmp_path / "b.png"), "gone.png"],
            "channels": [3, 3, 3],
            "height": [16, 16, 16],
            "width": [16, 16, 16],
        }
    )
    frame.to_csv(tmp_path / "cat.csv", index=False)
    report = check_catalog(tmp_path / "cat.csv")
    assert report.counts == {"ok": 1, "stale": 1, "missing": 1}
    stale = report.catalog.set_index("id_str").loc["b"]
    assert "catalog says shape 3,16,16, header says 3,20,20" in stale.detail
    assert "missing" in report.summary() and "gone.png" in report.summary()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits"])
def test_every_table_format_is_checked(tmp_path: Path, suffix: str) -> None:
    write_png(tmp_path / "a.png")
    frame = pd.DataFrame({"id_str": ["a"], "file_loc": [str(tmp_path / "a.png")], "z": [0.1]})
    path = tmp_path / f"cat{suffix}"
    if suffix == ".fits":
        Table.from_pandas(frame).write(path)
    else:
        write_catalog(frame, path)
    report = check_catalog(path)
    assert report.ok
    assert report.catalog.height.iloc[0] == 32


def test_missing_required_column(tmp_path: Path) -> None:
    pd.DataFrame({"id_str": ["a"], "path": ["a.png"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(CatalogError, match=r"c.csv has no column 'file_loc'; expected columns"):
        read_catalog(tmp_path / "c.csv")


def test_duplicate_ids(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id_str": ["a", "a"], "file_loc": ["x.png", "y.png"]})
    frame.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(CatalogError, match="id_str 'a' appears more than once"):
        read_catalog(tmp_path / "c.csv")


def test_unreadable_and_missing_catalogs(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(CatalogError, match=r"bad.parquet: cannot read it as a parquet table"):
        read_catalog(tmp_path / "bad.parquet")
    with pytest.raises(GalclustFileError, match="does not exist"):
        read_catalog(tmp_path / "nope.csv")
    (tmp_path / "cat.xlsx").write_text("x")
    with pytest.raises(GalclustValueError, match=r"unknown catalog type '.xlsx'"):
        read_catalog(tmp_path / "cat.xlsx")
