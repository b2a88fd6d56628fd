"""`galclust train vae` and `galclust sweep`: run folders, exact resume, refusals, bad input."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

import galclust
from conftest import write_png
from galclust.cli import main
from galclust.data.dataset import MemoryDataset, open_source
from galclust.exceptions import GalclustFileError, GalclustValueError, NoImagesFoundWarning
from galclust.simulate import SimulateOptions, simulate
from galclust.train import (
    TrainOptions,
    fit,
    make_loader,
    resolve_precision,
    split_rows,
    sweep,
    train_vae,
)


@pytest.fixture(scope="module")
def sims(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 simulated 32x32 galaxies (train/val/test 48/6/6)."""
    out = tmp_path_factory.mktemp("sims") / "sims"
    simulate(SimulateOptions(n=60, output=str(out), size=32, stamp_range=(32, 48)))
    return out


def options(source: Path, run: Path, **changes: object) -> TrainOptions:
    base = TrainOptions(
        source=str(source),
        output=str(run),
        latent_dim=4,
        epochs=2,
        batch_size=16,
        lr=3e-3,
        workers=0,
        accelerator="cpu",
        precision="32-true",
        plot_every=1,
        progress=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_run_folder_has_checkpoints_metrics_and_figures(sims: Path, tmp_path: Path) -> None:
    report = train_vae(options(sims, tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "loss.png",
                 "reconstructions.png", "reconstructions/epoch_0002.png"):  # fmt: skip
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    assert np.isfinite(metrics[["train_loss", "val_loss", "val_mse", "val_kld"]].to_numpy()).all()
    assert report.best_val_loss == pytest.approx(metrics["val_loss"].min())
    assert (report.train_count, report.val_count) == (48, 6)  # the simulation's own split
    state = json.loads((run / "run.json").read_text())
    assert state["finished"] and state["options"]["image_size"] == 32
    hparams = torch.load(run / "checkpoints/best.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["preprocess"]["image_size"] == 32 and hparams["latent_dim"] == 4


def test_resume_continues_exactly(sims: Path, tmp_path: Path) -> None:
    straight = options(sims, tmp_path / "a", epochs=3)
    train_vae(straight)
    train_vae(replace(straight, output=str(tmp_path / "b"), epochs=1))
    report = train_vae(replace(straight, output=str(tmp_path / "b"), resume=True))
    assert report.resumed_from == 1
    a = torch.load(tmp_path / "a/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a/metrics.csv").drop(columns=["seconds", "images_per_s"]),
        pd.read_csv(tmp_path / "b/metrics.csv").drop(columns=["seconds", "images_per_s"]),
    )


def test_finished_run_is_refused_without_resume_or_overwrite(sims: Path, tmp_path: Path) -> None:
    first = options(sims, tmp_path / "run", epochs=1)
    train_vae(first)
    with pytest.raises(GalclustFileError, match="already holds a finished run; pass --resume"):
        train_vae(first)
    with pytest.raises(GalclustValueError, match="trained with latent_dim=4, not 8"):
        train_vae(replace(first, latent_dim=8, resume=True))
    again = train_vae(replace(first, latent_dim=8, overwrite=True))
    assert again.epochs == 1
    assert (
        torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["hyper_parameters"][
            "latent_dim"
        ]
        == 8
    )


def test_full_disk_keeps_the_previous_checkpoint(
    sims: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    train_vae(options(sims, run, epochs=1))
    before = (run / "checkpoints/last.ckpt").read_bytes()
    real_save = torch.save

    def full_disk(obj: object, f: object, *args: object, **kwargs: object) -> None:
        real_save(obj, f)  # half of it reaches the disk, then the disk is full
        f.truncate(1000)  # type: ignore[attr-defined]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("galclust.train.torch.save", full_disk)
    with pytest.raises(GalclustFileError, match=r"No space left on device.*previous checkpoint"):
        train_vae(options(sims, run, epochs=2, resume=True))
    assert (run / "checkpoints/last.ckpt").read_bytes() == before
    assert not list((run / "checkpoints").glob(".*tmp"))
    monkeypatch.undo()
    assert train_vae(options(sims, run, epochs=2, resume=True)).resumed_from == 1


def test_all_nan_images_are_skipped_and_counted(tmp_path: Path) -> None:
    sims = tmp_path / "sims"
    simulate(SimulateOptions(n=30, output=str(sims), size=32, stamp_range=(32, 32)))
    images = np.load(sims / "images.npy", mmap_mode="r+")
    catalog = pd.read_parquet(sims / "catalog.parquet")
    train_index = catalog.loc[catalog["split"] == "train", "image_index"].to_numpy()
    images[train_index[:3]] = np.nan
    images[train_index[3], 0, :5] = np.nan  # partly masked: kept, NaNs filled
    images.flush()
    with pytest.warns(UserWarning, match="3 all-NaN images were skipped in each epoch"):
        report = train_vae(options(sims, tmp_path / "run", epochs=1))
    assert report.skipped == 3
    assert np.isfinite(report.metrics["train_loss"]).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latent_dim": 0}, "--latent-dim 0: the latent vector needs at least one"),
        ({"image_size": 100}, "image size 100 is not a multiple of 32.*--image-size 96"),
        ({"epochs": 0}, "--epochs 0 must be at least 1"),
    ],
)
def test_bad_options(sims: Path, tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(GalclustValueError, match=message):
        train_vae(options(sims, tmp_path / "run", **change))


def test_empty_catalog_and_mixed_channels(tmp_path: Path) -> None:
    cutouts = tmp_path / "cutouts"
    cutouts.mkdir()
    with pytest.warns(NoImagesFoundWarning):
        galclust.scan(cutouts, output=tmp_path / "empty.parquet")
    with pytest.raises(GalclustValueError, match=r"no usable images .*it has no rows"):
        train_vae(options(tmp_path / "empty.parquet", tmp_path / "run"))
    for i in range(3):
        write_png(cutouts / f"rgb{i}.png", (3, 32, 32), seed=i)
        write_png(cutouts / f"grey{i}.png", (1, 32, 32), seed=i)
    galclust.scan(cutouts, output=tmp_path / "mixed.parquet")
    with pytest.raises(
        GalclustValueError, match=r"mixes channel counts \(3 images with 1, 3 images with 3\)"
    ):
        train_vae(options(tmp_path / "mixed.parquet", tmp_path / "run"))


def test_cli_errors_are_one_line(
    sims: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "vae", str(sims), "-o", str(tmp_path / "r"), "--latent-dim", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--latent-dim 0" in err


def test_split_is_reproducible_and_stable_when_the_catalog_grows(tmp_path: Path) -> None:
    cutouts = tmp_path / "cutouts"
    cutouts.mkdir()
    for i in range(40):
        write_png(cutouts / f"g{i:03d}.png", seed=i)
    galclust.scan(cutouts, output=tmp_path / "cat.parquet")
    source = open_source(tmp_path / "cat.parquet")
    train, val = split_rows(source, 0.25, seed=1)
    assert len(train) + len(val) == 40 and 3 <= len(val) <= 20
    np.testing.assert_array_equal(split_rows(source, 0.25, seed=1)[1], val)
    assert not np.array_equal(split_rows(source, 0.25, seed=2)[1], val)
    ids = source.catalog["id_str"]
    grown = replace(source, catalog=pd.concat([source.catalog, source.catalog.assign(
        id_str=ids + "_new")], ignore_index=True))  # fmt: skip
    _, val_grown = split_rows(grown, 0.25, seed=1)
    assert set(ids.iloc[val]) == set(grown.catalog["id_str"].iloc[val_grown]) & set(ids)


def test_precision_auto_never_asks_for_a_gpu_here() -> None:
    chosen = resolve_precision("auto", "cpu")
    assert chosen in ("bf16-mixed", "32-true")
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"


def test_sweep_writes_the_study_figures_and_skips_finished_sizes(
    sims: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    report = sweep(options(sims, out), [2, 8])
    for name in ("loss_curves.png", "val_loss_vs_latent.png", "reconstructions.png", "sweep.csv",
                 "latent_02/metrics.csv", "latent_08/checkpoints/best.ckpt"):  # fmt: skip
        assert (out / name).is_file(), name
    assert set(report.final_val_loss) == {2, 8}
    stamp = (out / "latent_02/checkpoints/last.ckpt").stat().st_mtime_ns
    again = sweep(options(sims, out), [2, 8])
    assert (out / "latent_02/checkpoints/last.ckpt").stat().st_mtime_ns == stamp
    assert again.final_val_loss == report.final_val_loss


def test_dataset_stretch_keeps_brightness_differences(sims: Path, tmp_path: Path) -> None:
    source = open_source(sims)
    fixed = source.preprocess(32, "crop", "auto", "dataset")
    assert fixed.asinh_scale is not None and fixed.asinh_scale[0] > 0
    per_image = source.preprocess(32, "crop", "auto", "image")
    assert per_image.asinh_scale is None
    pixels = source.dataset(per_image).pixels(0)  # type: ignore[union-attr]
    bright, faint = fixed(pixels * 4), fixed(pixels)
    assert bright.mean() > faint.mean()  # with a per-image stretch both would look alike
    np.testing.assert_allclose(per_image(pixels * 4), per_image(pixels), atol=1e-5)
    report = train_vae(options(sims, tmp_path / "run", epochs=1, stretch="dataset"))
    hparams = torch.load(report.output / "checkpoints/last.ckpt", weights_only=True)
    assert hparams["hyper_parameters"]["preprocess"]["asinh_scale"] == list(fixed.asinh_scale)


def test_too_few_galaxies_and_a_foreign_pack_folder(sims: Path, tmp_path: Path) -> None:
    from galclust.data.pack import PackOptions, pack

    cutouts = tmp_path / "two"
    cutouts.mkdir()
    for i in range(2):
        write_png(cutouts / f"g{i}.png", seed=i)
    galclust.scan(cutouts, output=tmp_path / "two.parquet")
    with pytest.raises(GalclustValueError, match="2 usable images: too few"):
        train_vae(options(tmp_path / "two.parquet", tmp_path / "run"))
    with pytest.raises(GalclustFileError, match="that galclust pack did not write"):
        pack(PackOptions(str(sims), str(sims)))


def test_dataset_stretch_survives_masked_pixels(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.normal(size=(1, 32, 32)).astype(np.float32)
        image[0, :3] = np.nan  # a masked edge
        np.save(folder / f"g{i}.npy", image)
    galclust.scan(folder, output=tmp_path / "c.parquet")
    fixed = open_source(tmp_path / "c.parquet").preprocess(32, "crop", "auto", "dataset")
    assert fixed.asinh_scale is not None and np.isfinite(fixed.asinh_scale).all()


def test_loss_curves_of_a_negative_likelihood_loss(tmp_path: Path) -> None:
    """A Gaussian NLL goes below zero: a linear axis, no log-scale warning (errors in tests)."""
    from matplotlib.image import imread

    from galclust.plots import loss_curves

    frame = pd.DataFrame(
        {"epoch": [1, 2, 3, 4], "train_loss": [0.4, -0.6, -1.1, -1.3],
         "val_loss": [0.2, -0.7, -1.0, -1.2]}
    )  # fmt: skip
    loss_curves({"run": frame}, tmp_path / "loss.png", ylabel="loss (NLL)")
    assert imread(tmp_path / "loss.png").shape[0] > 100


def test_two_process_ddp_on_cpu_trains_resumes_and_writes_once(sims: Path, tmp_path: Path) -> None:
    """Lightning's DDP over gloo with 2 CPU processes, launched by the galclust command itself:
    one summary and one provenance from rank 0, checkpoints that resume under DDP."""
    run = tmp_path / "ddp"
    args = [sys.executable, "-m", "galclust", "train", "vae", str(sims), "-o", str(run),
            "--latent-dim", "4", "--batch-size", "16", "--workers", "0", "--frame", "field",
            "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]  # fmt: skip
    first = subprocess.run([*args, "--epochs", "1"], capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("trained 1 epochs") == 1 and first.stdout.count("wrote ") == 1
    assert first.stderr.count("training a 4-d VAE") == 1  # progress lines from rank 0 only
    assert (run / "checkpoints" / "last.ckpt").is_file()
    again = subprocess.run(
        [*args, "--epochs", "2", "--resume"], capture_output=True, text=True, check=False
    )
    assert again.returncode == 0, again.stderr
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [1, 2]
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert (
        state["epoch"] == 1
        and json.loads((run / "provenance.json").read_text())["options"]["strategy"] == "ddp"
    )


def test_loader_workers_serve_the_batches_of_the_main_process() -> None:
    """Worker processes (which set glibc to give freed batch buffers back) serve the same
    batches, in the same order, as loading in the main process."""
    images = torch.arange(40 * 3 * 4 * 4, dtype=torch.float32).reshape(40, 3, 4, 4)
    data = MemoryDataset(images)
    inline = [b for b in make_loader(data, 8, 0, shuffle_seed=3)]
    forked = [b for b in make_loader(data, 8, 2, shuffle_seed=3)]
    assert len(inline) == len(forked) == 5
    for a, b in zip(inline, forked, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(torch.cat(inline).sort(dim=0).values, images.sort(dim=0).values)


class _Worsening(L.LightningModule):
    """A module whose validation loss rises every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return ((self.weight - batch) ** 2).mean()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val_loss", float(self.current_epoch), on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_last_checkpoint_is_every_epochs_even_without_a_better_best(tmp_path: Path) -> None:
    options = TrainOptions(source="unused", output=str(tmp_path), epochs=3, accelerator="cpu",
                           precision="32-true", progress=False)  # fmt: skip
    data = torch.utils.data.DataLoader(torch.ones(8, 1), batch_size=4)
    fit(_Worsening(), options, tmp_path, [], (data, data), None, "a test")
    epoch = {
        n: torch.load(tmp_path / "checkpoints" / f"{n}.ckpt")["epoch"] for n in ("best", "last")
    }
    assert epoch == {"best": 0, "last": 2}  # --resume continues after the third epoch
