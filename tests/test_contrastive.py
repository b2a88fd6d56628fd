"""The contrastive encoder: views, loss, `galclust train contrastive`, embedding, packing with
the galaxy frame."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from galclust.cli import main
from galclust.data.augment import galaxy_views
from galclust.data.pack import PackOptions, pack
from galclust.data.transforms import Preprocess
from galclust.embed import embed, load_model
from galclust.exceptions import GalclustValueError
from galclust.models.contrastive import ContrastiveModule, Encoder, nt_xent, pair_accuracy
from galclust.simulate import SimulateOptions, simulate
from galclust.train import TrainOptions, train_vae


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 simulated 48x48 galaxies (train/val/test 48/6/6)."""
    out = tmp_path_factory.mktemp("sims") / "sims"
    simulate(SimulateOptions(n=60, output=str(out), size=48, stamp_range=(48, 64)))
    return out


def options(source: Path, run: Path, **changes: object) -> TrainOptions:
    base = TrainOptions(
        source=str(source),
        output=str(run),
        model="contrastive",
        latent_dim=8,
        image_size=32,
        epochs=2,
        batch_size=16,
        lr=2e-3,
        frame="galaxy",
        workers=0,
        accelerator="cpu",
        precision="32-true",
        progress=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_views_are_reproducible_in_range_and_differ() -> None:
    batch = torch.rand(4, 3, 32, 32) * 2 - 1
    first = galaxy_views(batch, torch.Generator().manual_seed(1))
    again = galaxy_views(batch, torch.Generator().manual_seed(1))
    other = galaxy_views(batch, torch.Generator().manual_seed(2))
    assert first.shape == batch.shape and first.min() >= -1 and first.max() <= 1
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)
    sky = torch.full((2, 1, 16, 16), -1.0)  # an empty sky stays sky (apart from the noise)
    assert galaxy_views(sky, torch.Generator().manual_seed(0)).mean() < -0.9


def test_loss_prefers_matching_views() -> None:
    z = torch.randn(8, 16)
    same = nt_xent(z, z + 0.01 * torch.randn(8, 16), 0.2)
    shuffled = nt_xent(z, torch.randn(8, 16), 0.2)
    assert same < shuffled
    assert pair_accuracy(z, z) == 1.0
    assert Encoder(1, 5)(torch.zeros(2, 1, 16, 16)).shape == (2, 5)


def test_train_embed_and_resume(sims: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    report = train_vae(options(sims, run))
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "loss.png", "views.png"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    assert {"train_loss", "val_loss", "val_pair_accuracy"} <= set(metrics)
    assert np.isfinite(metrics["val_loss"]).all() and report.train_count == 48
    module = load_model(run / "checkpoints/best.ckpt")
    assert isinstance(module, ContrastiveModule)
    assert module.hparams["preprocess"]["frame"] == "galaxy"

    table, embedded = embed(run / "checkpoints/best.ckpt", sims, workers=0, precision="32")
    assert embedded.latent_dim == 8 and len(table) == 60
    assert [f"z_{i}" for i in range(8)] == [c for c in table if c.startswith("z_")]
    assert "logvar_mean" not in table and "recon_mse" not in table
    assert np.isfinite(table[[f"z_{i}" for i in range(8)]].to_numpy()).all()

    straight = train_vae(options(sims, tmp_path / "straight", epochs=3))
    train_vae(options(sims, run, epochs=3, resume=True))
    resumed = pd.read_csv(run / "metrics.csv")
    np.testing.assert_allclose(resumed["val_loss"], straight.metrics["val_loss"], rtol=1e-5)


def test_pack_with_galaxy_frame_counts_statuses(sims: Path, tmp_path: Path) -> None:
    report = pack(PackOptions(str(sims), str(tmp_path / "store"), 32, frame="galaxy", workers=1))
    assert sum(report.framing.values()) == 60 and "framing:" in report.summary()
    catalog = pd.read_parquet(tmp_path / "store" / "catalog.parquet")
    assert catalog["frame_status"].isin(["ok", "off_centre", "edge", "no_source"]).all()
    assert not (tmp_path / "store" / ".status.npy.partial").exists()
    run = tmp_path / "run"
    train_vae(options(tmp_path / "store", run, epochs=1, image_size=None))  # the store's size
    assert (run / "checkpoints/best.ckpt").is_file()
    with pytest.raises(GalclustValueError, match="packed with --frame galaxy"):
        train_vae(options(tmp_path / "store", tmp_path / "r2", frame="field"))
    with pytest.raises(GalclustValueError, match="--no-augment"):
        train_vae(options(sims, tmp_path / "r3", augment=False))


def test_stores_packed_before_framing_existed_still_match() -> None:
    old = {"image_size": 64, "mode": "crop", "scaling": "auto", "asinh_scale": None}
    assert Preprocess.from_dict(old) == Preprocess(64)
    with pytest.raises(GalclustValueError, match="no dataset-wide asinh scale"):
        Preprocess(64, frame="galaxy", asinh_scale=(1.0, 2.0))


def test_cli_train_contrastive_and_bad_options(
    sims: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "contrastive", str(sims), "-o", str(tmp_path / "r"), "--epochs", "1",
            "--image-size", "32", "--batch-size", "16", "--workers", "0", "--latent-dim", "4",
            "--accelerator", "cpu", "--precision", "32-true"]  # fmt: skip
    assert main(args) == 0
    assert "trained 1 epochs" in capsys.readouterr().out
    assert main([*args[:4], str(tmp_path / "r2"), "--temperature", "0"]) == 2
    assert "--temperature 0.0 must be > 0" in capsys.readouterr().err
    assert main([*args[:4], str(tmp_path / "r3"), "--image-size", "8"]) == 2
    assert "at least 16 pixels" in capsys.readouterr().err
    assert (
        main([*args, "--frame", "galaxy", "--stretch", "dataset", "-o", str(tmp_path / "r4")]) == 2
    )
    assert "choose one" in capsys.readouterr().err
