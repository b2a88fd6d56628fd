"""galclust scan: statuses, bad input, ids, incremental rescans, interruption, outputs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import galclust
from conftest import write_fits, write_png
from galclust.catalog import rows as rows_module
from galclust.catalog import scan as scan_module
from galclust.catalog.rows import Journal
from galclust.catalog.scan import ScanOptions, assign_ids, scan_catalog
from galclust.catalog.schema import SCAN_COLUMNS, STATUSES, read_catalog
from galclust.exceptions import CatalogError, GalclustFileError, NoImagesFoundWarning


def statuses(catalog: pd.DataFrame) -> dict[str, str]:
    return {
        Path(loc).name: status for loc, status in zip(catalog.file_loc, catalog.status, strict=True)
    }


def test_decals_sample_kept_at_its_shape_and_rejected_at_another(shared_data: Path) -> None:
    folder = shared_data / "decals-rings-sample"
    kept = galclust.scan(folder, shape=(3, 424, 424))
    assert len(kept) == 160
    assert (kept.status == "ok").all()
    rejected = galclust.scan(folder, shape="3,256,256")
    assert (rejected.status == "wrong_shape").all()
    assert rejected.detail.iloc[0] == "shape 3,424,424, not 3,256,256"


def test_catalog_has_documented_columns_and_statuses(mixed_folder: Path) -> None:
    catalog = galclust.scan(mixed_folder, shape=(3, 32, 32))
    assert list(catalog.columns) == list(SCAN_COLUMNS)
    assert set(catalog.status) <= set(STATUSES)
    assert statuses(catalog) == {
        "a.png": "ok", "b.fits": "ok", "c.jpg": "ok", "d.npy": "ok", "e.tiff": "ok",
        "big.png": "wrong_shape",
    }  # fmt: skip
    assert all(os.path.isabs(p) for p in catalog.file_loc)
    assert catalog.id_str.is_unique


def test_without_shape_every_readable_image_is_ok(mixed_folder: Path) -> None:
    assert (galclust.scan(mixed_folder).status == "ok").all()


def test_two_workers_give_the_same_catalog(mixed_folder: Path) -> None:
    for i in range(600):  # more than one chunk per worker
        write_png(mixed_folder / f"many{i:04d}.png", (3, 8, 8), seed=i)
    one = galclust.scan(mixed_folder, workers=1)
    two = galclust.scan(mixed_folder, workers=2)
    pd.testing.assert_frame_equal(one, two)


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GalclustFileError, match="nowhere does not exist"):
        galclust.scan(tmp_path / "nowhere")


def test_empty_folder_warns_and_gives_empty_catalog(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("no images here")
    with pytest.warns(NoImagesFoundWarning, match="no image files found"):
        catalog = galclust.scan(tmp_path)
    assert catalog.empty
    assert list(catalog.columns) == list(SCAN_COLUMNS)


def test_same_stem_in_two_folders_gets_distinct_ids(tmp_path: Path) -> None:
    for folder in ("north", "south"):
        (tmp_path / folder).mkdir()
        write_png(tmp_path / folder / "J1234+5678.png")
    write_png(tmp_path / "north" / "unique.png")
    write_png(tmp_path / "north__unique.png")  # looks like a disambiguated id
    (tmp_path / "east").mkdir()
    write_png(tmp_path / "east" / "unique.png")
    catalog = galclust.scan(tmp_path)
    assert catalog.id_str.is_unique
    ids = set(catalog.id_str)
    assert {"north__J1234+5678", "south__J1234+5678", "east__unique"} <= ids
    assert catalog.id_str.tolist() == assign_ids(catalog.file_loc.tolist())


def test_ids_for_clashing_stems_and_extensions() -> None:
    paths = ["/d/a/x.fits", "/d/b/x.fits", "/d/a/y.png", "/d/a/y.fits", "/e/a/x.fits"]
    ids = assign_ids(paths)
    assert len(set(ids)) == len(ids)
    assert ids[2:4] == ["d__a__y.png", "d__a__y.fits"]
    assert ids[0] == "d__a__x" and ids[4] == "e__a__x"
    assert assign_ids(paths) == ids
    assert len(set(assign_ids(["/a/x.png", "/a/x.png"]))) == 2


def test_symlink_loops_do_not_hang_or_duplicate(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "b.png")
    (tmp_path / "sub" / "up").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "self.png").symlink_to(tmp_path / "self.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    catalog = galclust.scan(tmp_path)
    found = statuses(catalog)
    assert found["a.png"] == found["b.png"] == "ok"
    assert len(catalog) == 4
    rows = catalog.set_index(catalog.file_loc.map(lambda p: Path(p).name))
    assert rows.loc["self.png", "status"] == "unreadable"
    assert "symlink loop" in rows.loc["self.png", "detail"]
    assert "broken symlink" in rows.loc["dangling.png", "detail"]


def test_non_utf8_file_name_is_a_rejected_row(tmp_path: Path) -> None:
    write_png(tmp_path / "good.png")
    bad = os.path.join(os.fsencode(tmp_path), b"gal\xe9.png")
    with open(bad, "wb") as fh:
        fh.write((tmp_path / "good.png").read_bytes())
    os.symlink(os.path.join(os.fsencode(tmp_path), b"gone\xe9.png"), tmp_path / "link.png")
    out = tmp_path / "cat.parquet"
    catalog = galclust.scan(tmp_path, output=out)
    row = catalog[catalog.status == "bad_filename"].iloc[0]
    assert row.file_loc.endswith("gal\\xe9.png")
    assert "not valid UTF-8" in row.detail
    link = catalog[catalog.file_loc.str.endswith("link.png")].iloc[0]
    assert link.detail.endswith("gone\\xe9.png")
    assert len(read_catalog(out)) == 3


def _scan_as_user(root: Path, uid: int) -> dict[str, str]:
    """Scan ``root`` in a child process running as ``uid``; return file name -> status."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(read_end)
            os.setgid(uid)
            os.setuid(uid)
            catalog = galclust.scan(root, workers=1)
            os.write(write_end, json.dumps(statuses(catalog)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(payload)


def test_file_without_read_permission_is_a_rejected_row() -> None:
    root = Path(tempfile.mkdtemp(prefix="galclust-perm-"))
    try:
        root.chmod(0o755)
        write_png(root / "open.png").chmod(0o644)
        write_png(root / "locked.png").chmod(0o000)
        # root reads everything: scan as an ordinary user instead
        as_root = os.geteuid() == 0
        found = _scan_as_user(root, 65534) if as_root else statuses(galclust.scan(root))
        assert found == {"open.png": "ok", "locked.png": "unreadable"}
    finally:
        shutil.rmtree(root)


def test_outputs_written_atomically_beside_catalog(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "catalog.parquet"
    galclust.scan(mixed_folder, shape=(3, 32, 32), output=out)
    kept = (out.parent / "catalog.txt").read_text().splitlines()
    assert len(kept) == 5 and all(Path(p).is_file() for p in kept)
    rejected = (out.parent / "catalog.rejected.txt").read_text()
    assert "#        1 wrong_shape" in rejected
    assert "big.png\twrong_shape\tshape 3,48,48, not 3,32,32" in rejected
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "catalog.parquet", "catalog.rejected.txt", "catalog.txt",
    ]  # fmt: skip
    umask = os.umask(0)
    os.umask(umask)
    for name in ("catalog.parquet", "catalog.txt"):  # as open() would make them, not 0600
        assert (out.parent / name).stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".fits"])
def test_catalog_round_trips_in_every_format(
    mixed_folder: Path, tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"catalog{suffix}"
    written = galclust.scan(mixed_folder, output=out)
    back = read_catalog(out)
    assert list(back.id_str) == list(written.id_str)
    assert list(back.file_loc) == list(written.file_loc)
    assert list(back.height.astype(int)) == list(written.height.astype(int))


def _touch_later(path: Path) -> None:
    stamp = path.stat().st_mtime + 10
    os.utime(path, (stamp, stamp))


def test_rescan_rereads_only_new_and_changed_files(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "catalog.parquet"
    first = scan_catalog(ScanOptions(roots=(str(mixed_folder),), output=str(out), workers=1))
    assert (first.files_read, first.files_reused) == (6, 0)

    write_png(mixed_folder / "a.png", (3, 40, 40))  # changed content and size
    _touch_later(mixed_folder / "a.png")
    write_png(mixed_folder / "new.png")
    (mixed_folder / "c.jpg").unlink()
    second = scan_catalog(
        ScanOptions(roots=(str(mixed_folder),), output=str(out), workers=1, shape=(3, 32, 32))
    )
    assert (second.files_read, second.files_reused) == (2, 4)
    found = statuses(second.catalog)
    assert "c.jpg" not in found
    assert found["a.png"] == "wrong_shape" and found["new.png"] == "ok"
    assert found["big.png"] == "wrong_shape"  # re-judged from the stored header, not re-read
    pd.testing.assert_frame_equal(read_catalog(out), second.catalog)


def test_rescan_with_verify_rereads_unverified_rows(mixed_folder: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "catalog.parquet")
    scan_catalog(ScanOptions(roots=(str(mixed_folder),), output=out, workers=1))
    verified = scan_catalog(ScanOptions(roots=(str(mixed_folder),), output=out, verify=True))
    assert verified.files_read == 6
    again = scan_catalog(ScanOptions(roots=(str(mixed_folder),), output=out, verify=True))
    assert again.files_read == 0
    assert again.catalog.verified.all()


@pytest.fixture
def interrupt_after(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Make the scan raise KeyboardInterrupt once ``limit[0]`` more chunks are read."""
    monkeypatch.setattr(rows_module, "CHUNK", 3)
    limit = [1000]
    original = rows_module._rows_batch

    def flaky(paths: list[str], verify: bool, picked: bool) -> pa.RecordBatch:
        if limit[0] == 0:
            raise KeyboardInterrupt
        limit[0] -= 1
        return original(paths, verify, picked)

    monkeypatch.setattr(rows_module, "_rows_batch", flaky)
    yield limit


def test_interrupted_scan_keeps_rows_and_resumes(
    tmp_path: Path, interrupt_after: list[int]
) -> None:
    root = tmp_path / "cutouts"
    root.mkdir()
    for i in range(10):
        write_png(root / f"g{i}.png", (3, 8, 8), seed=i)
    out = tmp_path / "catalog.parquet"
    galclust.scan(root, output=out, workers=1)
    before = out.read_bytes()
    for i in range(10, 20):
        write_png(root / f"g{i}.png", (3, 8, 8), seed=i)

    interrupt_after[0] = 2
    with pytest.raises(KeyboardInterrupt):
        galclust.scan(root, output=out, workers=1)
    assert out.read_bytes() == before  # the finished catalog is untouched
    journal = tmp_path / ".catalog.parquet.scan-journal"
    assert len(Journal(journal).read()) == 6  # two chunks of three new files

    interrupt_after[0] = 100
    resumed = scan_catalog(ScanOptions(roots=(str(root),), output=str(out), workers=1))
    assert (resumed.files_read, resumed.files_reused) == (4, 16)
    assert len(resumed.catalog) == 20 and (resumed.catalog.status == "ok").all()
    assert not journal.exists()


def test_output_that_is_not_a_scan_catalog_is_refused(mixed_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "zoobot.csv"
    pd.DataFrame({"id_str": ["a"], "file_loc": ["a.png"]}).to_csv(out, index=False)
    with pytest.raises(CatalogError, match="exists but is not a galclust scan catalog"):
        galclust.scan(mixed_folder, output=out)
    assert out.read_text().startswith("id_str,file_loc")


def test_full_disk_keeps_catalog_and_journal(
    mixed_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "catalog.parquet"
    galclust.scan(mixed_folder, output=out)
    before = out.read_bytes()
    write_png(mixed_folder / "new.png")

    def no_space(frame: pd.DataFrame, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scan_module, "write_catalog", no_space)
    with pytest.raises(GalclustFileError, match=r"No space left on device.*previous catalog"):
        galclust.scan(mixed_folder, output=out)
    assert out.read_bytes() == before
    kept = Journal(tmp_path / ".catalog.parquet.scan-journal").read()
    assert kept.file_loc.str.endswith("new.png").sum() == 1
    monkeypatch.undo()
    report = scan_catalog(ScanOptions(roots=(str(mixed_folder),), output=str(out)))
    assert (report.files_read, report.files_reused) == (0, 7)


def test_batch_torn_by_a_crash_is_dropped(tmp_path: Path) -> None:
    root = tmp_path / "cutouts"
    root.mkdir()
    for i in range(7):
        write_fits(root / f"g{i}.fits", (8, 8), seed=i)
    journal = Journal(tmp_path / ".catalog.parquet.scan-journal")
    for i in range(3):  # an interrupted run: two whole batches, then one cut short
        journal.append(rows_module._rows_batch([str(root / f"g{i}.fits")], False, False))
    journal.close()
    part = next(journal.folder.iterdir())
    part.write_bytes(part.read_bytes()[:-20])
    assert len(journal.read()) == 2

    report = scan_catalog(ScanOptions(roots=(str(root),), output=str(tmp_path / "catalog.parquet")))
    assert (report.files_read, report.files_reused) == (5, 2)
    assert list(report.catalog.status) == ["ok"] * 7
    assert not journal.folder.exists()


def test_pattern_selects_files_and_flags_unknown_formats(mixed_folder: Path) -> None:
    (mixed_folder / "notes.dat").write_text("x")
    fits_only = galclust.scan(mixed_folder, patterns=["*.fits"])
    assert list(statuses(fits_only)) == ["b.fits"]
    odd = galclust.scan(mixed_folder, patterns=["*.dat"])
    assert list(odd.status) == ["unsupported_format"]


def test_mtime_is_recorded(mixed_folder: Path) -> None:
    catalog = galclust.scan(mixed_folder)
    assert np.allclose(catalog.mtime, [Path(p).stat().st_mtime for p in catalog.file_loc])
    assert catalog.mtime.max() <= time.time()
