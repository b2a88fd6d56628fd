"""`galclust embed` and `galclust pack`: latents with the training preprocessing, packed stores."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import galclust
from conftest import write_png
from galclust.catalog.schema import write_catalog
from galclust.cli import main
from galclust.data.dataset import ImageDataset, PackedDataset, open_source
from galclust.data.pack import PackOptions, pack
from galclust.data.transforms import Preprocess
from galclust.embed import embed, fused, load_model
from galclust.exceptions import GalclustFileError, GalclustValueError
from galclust.provenance import provenance_path
from galclust.train import TrainOptions, train_vae


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scan catalog of 40 RGB PNG galaxies of 32x32 (Gaussian blobs, so the VAE learns)."""
    root = tmp_path_factory.mktemp("pngs")
    from PIL import Image

    from galclust.datasets import make_toy_galaxies, to_rgb8

    images, _ = make_toy_galaxies(40, 32, seed=3)
    (root / "cutouts").mkdir()
    for i, image in enumerate(images):
        Image.fromarray(to_rgb8(image)).save(root / "cutouts" / f"gal{i:03d}.png")
    galclust.scan(root / "cutouts", output=root / "catalog.parquet")
    return root / "catalog.parquet"


@pytest.fixture(scope="module")
def checkpoint(pngs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    options = TrainOptions(str(pngs), str(run), latent_dim=6, epochs=2, batch_size=8, workers=0)
    train_vae(replace(options, accelerator="cpu", precision="32-true", progress=False))
    return run / "checkpoints" / "best.ckpt"


def test_embed_writes_latents_in_catalog_order(
    checkpoint: Path, pngs: Path, tmp_path: Path
) -> None:
    table, report = embed(checkpoint, pngs, tmp_path / "z.parquet", workers=0, precision="32")
    written = pd.read_parquet(tmp_path / "z.parquet")
    latent = [f"z_{i}" for i in range(6)]
    where = ["file_loc", "format", "hdu"]  # from the scan catalog, for galleries
    assert list(written.columns) == ["id_str", *latent, "logvar_mean", "recon_mse", *where]
    assert list(written["id_str"]) == list(open_source(pngs).catalog["id_str"])
    assert report.count == 40 and np.isfinite(written[[*latent, "recon_mse"]]).all().all()
    # the latent mean is what the model's encoder gives for the training preprocessing
    module = load_model(checkpoint)
    trained = Preprocess.from_dict(module.hparams["preprocess"])
    assert trained.frame == "galaxy"  # the default
    data = ImageDataset(open_source(pngs).catalog.head(3), trained)
    with torch.no_grad():
        mu = module.model.encode(torch.stack([data[i] for i in range(3)]))[0].numpy()
    np.testing.assert_allclose(table.filter(like="z_").to_numpy()[:3], mu, atol=1e-4)


def test_fused_network_matches_the_trained_one(checkpoint: Path) -> None:
    module = load_model(checkpoint)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        mu, _ = module.model.encode(x)
        fmu, _ = fused(module).encode(x)
        torch.testing.assert_close(fmu, mu, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fused(module).decode(mu), module.model.decode(mu), atol=1e-4,
                                   rtol=1e-4)  # fmt: skip


def test_invariant_latents_ignore_orientation(checkpoint: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
    folder = tmp_path / "turned"
    folder.mkdir()
    np.save(folder / "a.npy", image)
    np.save(folder / "b.npy", np.ascontiguousarray(np.rot90(image, 1, axes=(1, 2))[:, :, ::-1]))
    galclust.scan(folder, output=tmp_path / "cat.parquet")
    plain, _ = embed(checkpoint, tmp_path / "cat.parquet", workers=0, precision="32")
    same, _ = embed(checkpoint, tmp_path / "cat.parquet", workers=0, precision="32",
                    invariant=True)  # fmt: skip
    z = same.filter(like="z_").to_numpy()
    np.testing.assert_allclose(z[0], z[1], atol=1e-4)
    assert not np.allclose(
        plain.filter(like="z_").to_numpy()[0], plain.filter(like="z_").to_numpy()[1]
    )


def test_bad_checkpoints(checkpoint: Path, pngs: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(GalclustFileError, match="not a readable checkpoint"):
        load_model(truncated)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, other)
    with pytest.raises(GalclustValueError, match="not a galclust model checkpoint"):
        load_model(other)
    changed = torch.load(checkpoint, weights_only=True)
    changed["hyper_parameters"]["latent_dim"] = 9
    torch.save(changed, tmp_path / "arch.ckpt")
    with pytest.raises(GalclustValueError, match="weights of another architecture"):
        load_model(tmp_path / "arch.ckpt")
    with pytest.raises(GalclustFileError, match="not found"):
        load_model(tmp_path / "missing.ckpt")


def test_embed_other_channels_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "grey").mkdir()
    write_png(tmp_path / "grey" / "a.png", (1, 32, 32))
    galclust.scan(tmp_path / "grey", output=tmp_path / "grey.parquet")
    with pytest.raises(GalclustValueError, match="1-channel images, the model was trained on 3"):
        embed(checkpoint, tmp_path / "grey.parquet", workers=0)


def test_pack_is_lossless_for_png_and_embeds_the_same(
    checkpoint: Path, pngs: Path, tmp_path: Path
) -> None:
    report = pack(PackOptions(str(pngs), str(tmp_path / "store"), frame="field", workers=2))
    assert (report.count, report.dtype, report.image_size) == (40, "uint8", 32)
    store = open_source(tmp_path / "store")
    assert store.kind == "packed" and store.packed is not None
    packed = store.dataset(Preprocess(32))
    assert isinstance(packed, PackedDataset)
    raw = ImageDataset(open_source(pngs).catalog, Preprocess(32))
    for i in (0, 17, 39):
        torch.testing.assert_close(packed[i], raw[i], atol=0, rtol=0)
    batch = packed.__getitems__([39, 2, 17])
    torch.testing.assert_close(batch, torch.stack([raw[39], raw[2], raw[17]]), atol=0, rtol=0)
    with pytest.raises(GalclustFileError, match="already holds a packed store"):
        pack(PackOptions(str(pngs), str(tmp_path / "store"), frame="field"))
    with pytest.raises(GalclustValueError, match="packed at 32 px, not 64"):
        store.dataset(Preprocess(64))
    # the model was trained on galaxy-framed images (the default): a store packed so, stored
    # as 8-bit levels like its PNGs, embeds to the same latents within that quantisation
    pack(PackOptions(str(pngs), str(tmp_path / "framed"), workers=2))
    direct, _ = embed(checkpoint, pngs, workers=0, precision="32")
    via_store, _ = embed(checkpoint, tmp_path / "framed", workers=0, precision="32")
    latent = [c for c in direct if c.startswith("z_")]
    pd.testing.assert_frame_equal(direct.drop(columns=latent), via_store.drop(columns=latent),
                                  check_exact=False, atol=0.05)  # fmt: skip
    np.testing.assert_allclose(direct[latent], via_store[latent], atol=0.05)


def test_interrupted_pack_resumes_to_the_same_store(
    pngs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import galclust.data.pack as packing

    monkeypatch.setattr(packing, "_CHUNK", 8)
    calls = {"n": 0}
    real = packing._pack_chunk

    def interrupted(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(packing, "_pack_chunk", interrupted)
    options = PackOptions(str(pngs), str(tmp_path / "store"), workers=1)
    with pytest.raises(KeyboardInterrupt):
        pack(options)
    assert not (tmp_path / "store" / "pack.json").exists()
    calls["n"] = -100
    pack(options)
    assert calls["n"] == -100 + 3  # only the 3 chunks not done before
    pack(replace(options, output=str(tmp_path / "whole")))
    np.testing.assert_array_equal(
        np.load(tmp_path / "store" / "images.npy"), np.load(tmp_path / "whole" / "images.npy")
    )


def test_all_nan_images_are_skipped_by_pack_and_embed(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "fits"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        image = rng.normal(size=(3, 32, 32)).astype(np.float32)
        if i == 1:
            image[:] = np.nan
        np.save(folder / f"g{i}.npy", image)
    galclust.scan(folder, output=tmp_path / "cat.parquet")
    with pytest.warns(UserWarning, match="skipped 1 all-NaN images: g1"):
        table, report = embed(checkpoint, tmp_path / "cat.parquet", workers=0)
    assert report.count == 3 and "g1" not in set(table["id_str"])
    with pytest.warns(UserWarning, match=r"skipped 1 images: g1 \(all NaN\)"):
        packed = pack(PackOptions(str(tmp_path / "cat.parquet"), str(tmp_path / "store")))
    assert packed.dtype == "float16" and packed.count == 3
    catalog = open_source(tmp_path / "store").catalog
    assert list(catalog["image_index"]) == [0, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert embed(checkpoint, tmp_path / "store", workers=0)[1].count == 3


def test_cli_pack_and_embed(checkpoint: Path, pngs: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["pack", str(pngs), "-o", str(tmp_path / "s"), "--workers", "1"]) == 0
    out = tmp_path / "z.csv"
    args = ["embed", str(checkpoint), str(tmp_path / "s"), "-o", str(out), "--workers", "0"]
    assert main(args) == 0
    assert "embedded 40 galaxies into 6 dimensions" in capsys.readouterr().out
    assert (tmp_path / "z.provenance.json").is_file() and len(pd.read_csv(out)) == 40
    assert main(["embed", str(tmp_path / "z.csv"), str(pngs)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err


def test_two_process_ddp_embeds_every_galaxy_once_as_one_process(
    checkpoint: Path, pngs: Path, tmp_path: Path
) -> None:
    """Lightning Fabric with 2 CPU processes (gloo), launched by the galclust command itself:
    39 galaxies split 20 + 19, so the gathered shares are padded; the table rank 0 writes has
    every galaxy once, in catalog order, with the latents of a one-process run."""
    odd = tmp_path / "odd.parquet"
    write_catalog(open_source(pngs).catalog.head(39), odd)
    single, _ = embed(checkpoint, odd, None, workers=0, precision="32", accelerator="cpu")
    out = tmp_path / "ddp.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "galclust", "embed", str(checkpoint), str(odd), "-o", str(out),
         "--workers", "0", "--precision", "32", "--accelerator", "cpu", "--devices", "2",
         "--strategy", "ddp", "--batch-size", "8"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("embedded 39 galaxies") == 1 and done.stdout.count("wrote ") == 1
    assert "deprecated" not in done.stderr
    table = pd.read_parquet(out)
    assert list(table["id_str"]) == list(single["id_str"])  # each once, in order
    numbers = [c for c in single.columns if c.startswith("z_")] + ["logvar_mean", "recon_mse"]
    np.testing.assert_allclose(table[numbers], single[numbers], rtol=1e-4, atol=1e-5)
    assert json.loads(provenance_path(out).read_text())["options"]["devices"] == "2"
    with pytest.raises(GalclustValueError, match="--strategy 'ddp_spawn'"):
        embed(checkpoint, odd, None, workers=0, accelerator="cpu", strategy="ddp_spawn")
    with pytest.raises(GalclustValueError, match="--devices 'two'"):
        embed(checkpoint, odd, None, workers=0, accelerator="cpu", devices="two")
