"""The galclust command: help, one-line errors with exit status 2, provenance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_png
from galclust.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "galclust", *args], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("command", [[], ["scan"], ["catalog"], ["catalog", "check"], ["demo"]])
def test_help_text(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: galclust")
    assert len(text.splitlines()) > 5


def test_scan_writes_catalog_and_provenance(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "catalog.parquet"
    result = run("scan", str(mixed_folder), "-o", str(out), "--shape", "3,32,32", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "kept 5 of 6 image files" in result.stdout
    assert "rejected       1 wrong_shape" in result.stdout
    assert len(pd.read_parquet(out)) == 6
    record = json.loads((tmp_path / "catalog.provenance.json").read_text())
    assert record["command"] == "scan"
    assert record["options"]["shape"] == [3, 32, 32]
    assert set(record["versions"]) >= {"galclust", "python", "numpy", "torch", "galsim", "astropy"}
    assert record["versions"]["torch"] != "not installed"
    assert record["results"]["counts"] == {"ok": 5, "wrong_shape": 1}
    assert record["started"] <= record["finished"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "/no/such/folder", "-o", "{tmp}/c.parquet"], "/no/such/folder does not exist"),
        (["scan", "{tmp}", "-o", "{tmp}/c.parquet", "--shape", "3x256"], "--shape '3x256'"),
        (["scan", "{tmp}", "-o", "{tmp}/c.xlsx"], "unknown catalog type '.xlsx'"),
        (["scan", "{tmp}", "-o", "{tmp}/c.parquet", "--workers", "0"], "--workers 0"),
        (["scan", "{tmp}", "-o", "{tmp}/c.parquet", "--workers", "two"], "invalid int value"),
        (["catalog", "check", "{tmp}/missing.csv"], "missing.csv does not exist"),
        (["catalog", "check", "{tmp}/bad.parquet"], "cannot read it as a parquet table"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.parquet").write_text("garbage")
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run("--debug", "scan", str(tmp_path / "nowhere"), "-o", str(tmp_path / "c.parquet"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "GalclustFileError" in result.stderr


def test_empty_folder_warns_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("scan", str(tmp_path / "empty"), "-o", str(tmp_path / "c.parquet"))
    assert result.returncode == 0
    warning_lines = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warning_lines) == 1
    assert warning_lines[0].startswith("galclust: warning: no image files found")
    assert pd.read_parquet(tmp_path / "c.parquet").empty


def test_catalog_check_exit_status(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    pd.DataFrame({"id_str": ["a", "b"], "file_loc": ["a.png", "b.png"]}).to_csv(
        tmp_path / "cat.csv", index=False
    )
    result = run("catalog", "check", str(tmp_path / "cat.csv"), "-o", str(tmp_path / "out.parquet"))
    assert result.returncode == 1
    assert "1 of 2 rows ok" in result.stdout and "missing" in result.stdout
    assert (tmp_path / "out.provenance.json").is_file()
    assert list(pd.read_parquet(tmp_path / "out.parquet").status) == ["ok", "missing"]
