"""Does the explorer stay responsive with 100,000 galaxies? Build one and time it in Chromium.

100,000 latents of 16 dimensions are drawn from 8 Gaussians, each galaxy gets a small synthetic
image (a stack in one .npy file, as galclust simulate writes), ``galclust cluster`` runs on them
(k-means, k = 8, PCA map) and ``galclust explore`` builds the page. Then headless Chromium
(Debian's chromium + chromium-driver) opens it and the script prints, side by side:

* page load: navigation until the map is drawn (data.js parsed, colours grouped);
* one redraw of all points (after a pan or zoom), mean of 20;
* one hover: finding the galaxy under the cursor and showing its thumbnail, mean of 50;
* one click: the panel with the thumbnail and 8 neighbours, mean of 20;
* recolouring by a numeric column.

Responsive means a redraw and a hover well under 100 ms (a frame a user notices). The same is
measured at 10,000 galaxies for the ratio.

Run from the repository root::

    .venv/bin/python benchmarks/explorer.py            # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/explorer.py --n 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from galclust.cluster import ClusterOptions, cluster_latents
from galclust.report.explorer import ExploreOptions, build_explorer


def make_run(folder: Path, n: int, seed: int = 0) -> Path:
    """Latents, images and a clustering of ``n`` synthetic galaxies in ``folder``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (8, 16))
    component = rng.integers(0, 8, n)
    z = centres[component] + rng.normal(0, 1, (n, 16))
    images = np.clip(rng.normal(60, 20, (n, 3, 16, 16)), 0, 255).astype(np.uint8)
    images[:, :, 6:10, 6:10] = (component[:, None, None, None] * 30 + 25).astype(np.uint8)
    np.save(folder / "images.npy", images)
    table = pd.DataFrame({"id_str": [f"gal_{i:06d}" for i in range(n)],
                          "file_loc": str(folder / "images.npy"), "image_index": np.arange(n),
                          "component": component, "brightness": rng.normal(20, 1, n)})  # fmt: skip
    for d in range(16):
        table[f"z_{d}"] = z[:, d].astype(np.float32)
    table.to_parquet(folder / "latents.parquet")
    cluster_latents(ClusterOptions(str(folder / "latents.parquet"), str(folder / "clusters"),
                                   method="kmeans", k=8, map="pca", gallery_size=4))  # fmt: skip
    return folder / "clusters"


def measure(page: Path) -> dict[str, float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        t = time.perf_counter()
        driver.get(page.as_uri())
        driver.execute_script("return galclustExplorer.count")
        load = time.perf_counter() - t
        timings = driver.execute_script("""
            const E = galclustExplorer, canvas = document.getElementById('map');
            const r = canvas.getBoundingClientRect();
            let t = performance.now();
            for (let k = 0; k < 20; k++) E.redraw();
            const redraw = (performance.now() - t) / 20;
            t = performance.now();
            for (let k = 0; k < 50; k++) {
              const [x, y] = E.screenPosition((k * 7919) % E.count);
              canvas.dispatchEvent(new MouseEvent('mousemove',
                {clientX: x, clientY: y, bubbles: true}));
            }
            const hover = (performance.now() - t) / 50;
            t = performance.now();
            for (let k = 0; k < 20; k++) E.select((k * 104729) % E.count);
            const click = (performance.now() - t) / 20;
            t = performance.now();
            E.colourBy('brightness');
            const recolour = performance.now() - t;
            return [redraw, hover, click, recolour];
        """)
    finally:
        driver.quit()
    return dict(zip(("load", "redraw", "hover", "click", "recolour"),
                    [load * 1e3, *timings], strict=True))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10_000, args.n):
            folder = Path(tmp) / str(n)
            folder.mkdir()
            t = time.perf_counter()
            clusters = make_run(folder, n)
            made = time.perf_counter() - t
            result = build_explorer(ExploreOptions(str(clusters), str(folder / "explorer.html")))
            files = folder / "explorer_files"
            size = sum(f.stat().st_size for f in files.iterdir()) / 1e6
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in result.times.items())
            print(f"{n:,} galaxies: clustered in {made:.0f} s, explorer built in "
                  f"{result.seconds:.0f} s ({parts}), {size:.0f} MB beside the page")  # fmt: skip
            rows[n] = measure(folder / "explorer.html")
    frame = pd.DataFrame(rows).T
    frame.index.name = "galaxies"
    print("\nmilliseconds in headless Chromium (load: until the map is drawn)")
    print(frame.round(1).to_string())
    big, small = max(rows), min(rows)
    ratio = {k: rows[big][k] / rows[small][k] for k in ("redraw", "hover")}
    print(f"\n{big:,} / {small:,} galaxies: redraw x{ratio['redraw']:.1f}, "
          f"hover x{ratio['hover']:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
