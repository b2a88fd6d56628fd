"""galclust demo and galclust report: every stage end to end, the page from any subset of
stages, escaping, placeholders, and the page as a browser shows it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from galclust.cli import main
from galclust.exceptions import GalclustFileError, GalclustValueError
from galclust.report import build_report, find_stages
from galclust.train import choose_latent_dim

STAGE_FILES = (
    "sims/images.npy", "sims/catalog.parquet", "catalog.parquet", "catalog.provenance.json",
    "store/provenance.json", "sweep/sweep.csv", "sweep/loss_curves.png",
    "vae/checkpoints/best.ckpt", "vae/loss.png", "vae/reconstructions.png", "latents.parquet",
    "clusters/clusters.parquet", "clusters/confusion.png", "clusters/overview.png",
    "regressor/metrics.json", "regressor/plots/mag_r.png", "report.html", "explorer.html",
    "explorer_files/data.js", "explorer_files/sheet_0000.jpg", "explorer.provenance.json",
)  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``galclust demo --quick`` run once, as a user runs it: its folder and what it printed."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "galclust", "demo", "--quick", "-o", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_demo_quick_runs_every_stage_into_a_users_layout(demo: tuple[Path, str]) -> None:
    out, printed = demo
    for name in STAGE_FILES:
        assert (out / name).is_file(), name
    catalog = pd.read_parquet(out / "catalog.parquet")
    assert (catalog.status == "ok").sum() == 270  # 300 simulated, every 10th at 80x80
    assert set(catalog.status) == {"ok", "wrong_shape", "truncated", "empty_file", "corrupt"}
    assert len(pd.read_parquet(out / "latents.parquet")) == 270
    clusters = pd.read_parquet(out / "clusters" / "clusters.parquet")
    assert len(clusters) == 270
    stage_lines = re.findall(r"^\[(\d+)/11\] (.+?): ([\d.]+) s -> ", printed, re.MULTILINE)
    assert [int(n) for n, _, _ in stage_lines] == list(range(1, 12))
    assert "chosen latent size" in printed and "against family (galclust)" in printed
    assert f"open {out / 'report.html'}" in printed


def test_report_of_the_demo_has_every_stage_and_image(demo: tuple[Path, str]) -> None:
    out, _ = demo
    kinds = [s.kind for s in find_stages([out])]
    assert kinds == [
        "simulate", "scan", "sweep", "train", "embed", "cluster", "regress", "explore"
    ]  # fmt: skip
    page = (out / "report.html").read_text()
    for title in ("Simulated galaxies", "Catalogue of cutouts", "Latent-size comparison",
                  "Encoder training", "Clusters", "Measuring galaxies", "Provenance"):  # fmt: skip
        assert f">{title}" in page, title
    assert "Not in these runs" not in page and "image missing" not in page
    assert page.count("data:image/png;base64,") >= 14
    assert "http://" not in page and "https://" not in page  # nothing fetched when viewed
    assert "labels against raw-pixel k-means" in page
    # the regressor's run options, with what it was given beside the pixels
    assert re.search(r"<td[^>]*>seeing</td><td[^>]*>psf_fwhm</td>", page)
    assert re.search(r"<td[^>]*>nll_beta</td><td[^>]*>0\.25</td>", page)


def test_partial_and_empty_runs(demo: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = demo
    result = build_report([out / "clusters"], tmp_path / "one.html")
    assert [s.kind for s in result.stages] == ["cluster"]
    assert "regress" in result.absent and "simulate" in result.absent
    page = (tmp_path / "one.html").read_text()
    assert "Not in these runs: Simulated galaxies, Catalogue of cutouts" in page
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GalclustValueError, match=r"empty holds no galclust output.*galclust demo"):
        build_report([empty], tmp_path / "none.html")
    with pytest.raises(GalclustValueError, match=r"nowhere does not exist; give run folders"):
        build_report([tmp_path / "nowhere"], tmp_path / "none.html")
    assert not (tmp_path / "none.html").exists()
    result = subprocess.run(
        [sys.executable, "-m", "galclust", "report", str(empty), "-o", str(tmp_path / "x.html")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("galclust report: error: ") and "Traceback" not in result.stderr


def test_html_special_characters_are_escaped_and_missing_images_counted(
    demo: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = demo
    hostile = '<script>alert("x")</script>&<b>'
    clusters = tmp_path / "run" / "clusters"
    shutil.copytree(out / "clusters", clusters)
    table = pd.read_parquet(clusters / "clusters.parquet")
    table.loc[table["confidence"].idxmin(), "id_str"] = hostile
    table.to_parquet(clusters / "clusters.parquet")
    (clusters / "gallery" / "cluster_00.png").unlink()
    (clusters / "map.png").write_bytes(b"not a png")
    shutil.copy(out / "catalog.parquet", tmp_path / "run" / "catalog.parquet")
    shutil.copy(out / "catalog.provenance.json", tmp_path / "run" / "catalog.provenance.json")
    rejected = (out / "catalog.rejected.txt").read_text().splitlines()
    rejected.insert(1, f"/data/{hostile}.fits\tcorrupt\tnot a FITS file")
    (tmp_path / "run" / "catalog.rejected.txt").write_text("\n".join(rejected) + "\n")

    result = build_report([tmp_path / "run"], tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "<b>" not in page
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;b&gt;") == 2
    assert sorted(Path(p).name for p in result.missing_images) == ["cluster_00.png", "map.png"]
    assert page.count('class="missing"') == 2 and "2 image(s) missing" in page


def test_choose_latent_dim_takes_the_smallest_size_near_the_best() -> None:
    assert choose_latent_dim({4: 1.30, 8: 1.04, 16: 1.01, 32: 1.00}) == 8
    assert choose_latent_dim({2: 0.50, 8: 0.60}) == 2
    assert choose_latent_dim({2: float("nan"), 8: 0.6}) == 8
    with pytest.raises(GalclustValueError, match="no latent size finished"):
        choose_latent_dim({2: float("nan")})


# --- in a real browser --------------------------------------------------------------------------


def test_report_loads_in_chromium_with_every_image(
    demo: tuple[Path, str], browser: object, artifacts: Path
) -> None:
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    out, _ = demo
    browser.get((out / "report.html").as_uri())
    assert browser.title == "galclust demo"
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
    )
    assert broken == 0 and browser.execute_script("return document.images.length") >= 14
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    browser.save_screenshot(str(artifacts / "report.png"))


def test_explorer_in_chromium_shows_a_clicked_galaxy_and_its_neighbours(
    demo: tuple[Path, str], browser: object, artifacts: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    out, _ = demo
    assert 'id="explorer-link" href="./explorer.html"' in (out / "report.html").read_text()
    browser.get((out / "explorer.html").as_uri())
    assert browser.execute_script("return galclustExplorer.count") == 270
    canvas = browser.find_element(By.ID, "map")
    x, y = browser.execute_script(
        "const [x, y] = galclustExplorer.screenPosition(17);"
        "const r = document.getElementById('map').getBoundingClientRect();"
        "return [Math.round(x - r.left - r.width / 2), Math.round(y - r.top - r.height / 2)]"
    )
    ActionChains(browser).move_to_element_with_offset(canvas, x, y).click().perform()
    chosen = browser.execute_script("return galclustExplorer.selected()")
    # the galaxy under the cursor: 17, or another drawn within a few pixels of it
    here = browser.execute_script(f"return galclustExplorer.screenPosition({chosen})")
    there = browser.execute_script("return galclustExplorer.screenPosition(17)")
    assert chosen >= 0 and abs(here[0] - there[0]) + abs(here[1] - there[1]) < 12
    ids = pd.read_parquet(out / "latents.parquet")["id_str"].tolist()
    assert browser.find_element(By.ID, "selected-id").text == ids[chosen]
    big = browser.find_element(By.ID, "selected-thumb")
    sheet = chosen // 256
    assert f"explorer_files/sheet_{sheet:04d}.jpg" in big.value_of_css_property("background-image")
    neighbours = browser.find_elements(By.CSS_SELECTOR, "#neighbours .thumb")
    assert len(neighbours) == 8
    first = int(neighbours[0].get_attribute("data-index") or -1)
    neighbours[0].click()
    assert browser.execute_script("return galclustExplorer.selected()") == first != chosen
    browser.execute_script("galclustExplorer.colourBy('family')")
    assert browser.find_element(By.ID, "legend").text.split("\n")[1:] == sorted(
        ["compact", "edge_on", "elliptical", "irregular", "lenticular", "spiral"]
    )
    loaded = browser.execute_script(
        "const url = getComputedStyle(document.getElementById('selected-thumb'))"
        ".backgroundImage.slice(5, -2); const image = new Image(); image.src = url;"
        "return image.decode().then(() => image.naturalWidth)"
    )
    assert loaded == 16 * 48  # the sheet itself loads: 16 thumbnails of 48 px a row
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    browser.save_screenshot(str(artifacts / "explorer.png"))


def test_explorer_escapes_ids_and_shows_placeholders(
    demo: tuple[Path, str], browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    from galclust.report.explorer import ExploreOptions, build_explorer

    assert isinstance(browser, WebDriver)
    out, _ = demo
    hostile = '<img src=x onerror="window.pwned=1">&"'
    latents = pd.read_parquet(out / "latents.parquet")
    clusters = tmp_path / "clusters"
    shutil.copytree(out / "clusters", clusters)
    table = pd.read_parquet(clusters / "clusters.parquet")
    old = latents.loc[3, "id_str"]
    latents.loc[3, "id_str"] = hostile
    table.loc[table["id_str"] == old, "id_str"] = hostile
    latents.loc[4, "file_loc"] = str(tmp_path / "gone.fits")
    latents.to_parquet(tmp_path / "latents.parquet")
    table.to_parquet(clusters / "clusters.parquet")
    result = build_explorer(
        ExploreOptions(str(clusters), str(tmp_path / "explorer.html"),
                       latents=str(tmp_path / "latents.parquet"), map="pca")
    )  # fmt: skip
    assert result.missing_thumbnails == 1 and result.points == 270
    assert "1 image(s) unreadable" in result.summary()
    browser.get((tmp_path / "explorer.html").as_uri())
    browser.execute_script("galclustExplorer.select(3)")
    assert browser.find_element(By.ID, "selected-id").text == hostile
    assert browser.execute_script("return window.pwned === undefined")
    assert browser.execute_script("return document.querySelectorAll('#panel img').length") == 0
    with pytest.raises(GalclustFileError, match=r"has no summary.json; give the folder"):
        build_explorer(ExploreOptions(str(tmp_path), str(tmp_path / "x.html")))
    assert main(["explore", str(tmp_path), "-o", str(tmp_path / "x.html")]) == 2


def test_explorer_with_many_clusters_odd_file_names_and_number_ids(
    demo: tuple[Path, str], browser: object, tmp_path: Path
) -> None:
    """15 clusters stay categories in numeric order (unclassified grey); a page named with '#',
    '%' and a space still finds its files; ids that look like numbers stay ids."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    from galclust.report.explorer import ExploreOptions, _colour_columns, build_explorer

    assert isinstance(browser, WebDriver)
    labels = pd.DataFrame({"cluster": [-1, 0, 2, 10, 14, *range(15)], "is_outlier": [False] * 20})
    columns = _colour_columns(labels)
    assert columns["cluster"]["kind"] == "category"
    assert columns["cluster"]["categories"] == [str(k) for k in range(15)]
    assert columns["cluster"]["values"][:5] == [-1, 0, 2, 10, 14]
    out, _ = demo
    latents = pd.read_parquet(out / "latents.parquet")
    clusters = tmp_path / "clusters"
    shutil.copytree(out / "clusters", clusters)
    table = pd.read_parquet(clusters / "clusters.parquet")
    numbers = {old: str(1000 + i) for i, old in enumerate(latents["id_str"])}
    latents["id_str"] = latents["id_str"].map(numbers)
    table["id_str"] = table["id_str"].map(numbers)
    latents.to_parquet(tmp_path / "latents.parquet")
    table.to_parquet(clusters / "clusters.parquet")
    page = tmp_path / "run #2 100%.html"
    options = ExploreOptions(str(clusters), str(page), latents=str(tmp_path / "latents.parquet"),
                             map="pca")  # fmt: skip
    build_explorer(options)
    browser.get(page.as_uri())
    assert browser.execute_script("return galclustExplorer.count") == 270
    browser.execute_script("galclustExplorer.select(0)")
    assert browser.find_element(By.ID, "selected-id").text == "1000"
    url = browser.find_element(By.ID, "selected-thumb").value_of_css_property("background-image")
    loaded = browser.execute_script(
        "const image = new Image(); image.src = arguments[0];"
        "return image.decode().then(() => image.naturalWidth)",
        url[5:-2],
    )
    assert loaded == 16 * 48
    build_explorer(
        ExploreOptions(
            str(clusters), str(page), latents=str(tmp_path / "latents.parquet"), map="pca"
        )
    )  # again: the old files are replaced whole
    assert sorted(p.name for p in tmp_path.iterdir() if "run" in p.name) == [
        "run #2 100%.html", "run #2 100%_files"
    ]  # fmt: skip
