"""Training the VAE with Lightning on tiny GalSim galaxies: the loss goes down, checkpoints load."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from galclust.data import Preprocess
from galclust.datasets import make_toy_galaxies
from galclust.models.lightning import VAEModule, vae_loss


def toy_loader(n: int, seed: int, shuffle: bool) -> DataLoader[tuple[torch.Tensor, ...]]:
    images, _ = make_toy_galaxies(n, 32, seed=seed)
    prep = Preprocess(image_size=32)
    tensor = torch.from_numpy(np.stack([prep(image) for image in images]))
    return DataLoader(TensorDataset(tensor), batch_size=16, shuffle=shuffle)


def test_loss_formula() -> None:
    x = torch.zeros(2, 1, 4, 4)
    mu, logvar = torch.zeros(2, 3), torch.zeros(2, 3)
    losses = vae_loss(x + 0.5, x, mu, logvar, kld_weight=0.1)
    assert losses["mse"] == 0.25 and losses["kld"] == 0
    losses = vae_loss(x, x, mu + 1, logvar, kld_weight=0.1)
    assert losses["kld"] == 0.5 and torch.isclose(losses["loss"], torch.tensor(0.05))


def test_short_training_lowers_validation_loss(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    train, val = toy_loader(96, 1, True), toy_loader(32, 2, False)
    module = VAEModule(in_channels=3, image_size=32, latent_dim=4, lr=3e-3)
    trainer = L.Trainer(
        max_epochs=4,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    before = trainer.validate(module, val, verbose=False)[0]["val_loss"]
    trainer.fit(module, train, val)
    after = trainer.callback_metrics["val_loss"].item()
    assert after < 0.8 * before
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    restored = VAEModule.load_from_checkpoint(checkpoint)
    assert restored.hparams["latent_dim"] == 4
    batch = next(iter(val))[0]
    restored.eval()
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(restored.model.encode(batch)[0], module.model.encode(batch)[0])
