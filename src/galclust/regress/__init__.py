"""``galclust train regressor`` and ``galclust predict``: a CNN that measures galaxy parameters.

Trained on a ``galclust simulate`` folder (its train split; early stopping on val; final scores
on the test split, never seen in training). Targets are catalog columns:

- magnitudes and other plain numbers are regressed as they are;
- sizes (``hlr*``), Sersic indices (``sersic_n``, ``n_bulge``, ``n_disk``) and fluxes
  (``flux_*``) in log10;
- the position angle ``pa`` as (cos 2PA, sin 2PA), reported in degrees modulo 180.

All are standardised with the training set's mean and spread. The network gives a mean and a
variance for each (Gaussian negative log-likelihood). A prediction averages the network's
outputs over symmetries of the image (``views``: by default the image and its mirror image).
After training, the network's mean error on the validation split is measured and subtracted
from every prediction, and the standard deviations are rescaled so that 68% of validation
galaxies fall within 1 sigma (:class:`Calibration`, stored in the checkpoint).

Images keep their absolute brightness (a magnitude must stay measurable): each band is divided
by the simulation's sky noise and compressed by ``asinh``, the same for every galaxy
(:class:`FluxScaling`); stamps of another size are centre-cropped or padded with noise.

The run folder gets ``checkpoints/best.ckpt`` (with the scaling, targets, survey and the
calibration), ``metrics.csv``/``loss.png`` per epoch, and after training ``metrics.json``,
``test_predictions.parquet`` and ``plots/<target>.png`` (see :func:`evaluate`).
"""

from galclust.regress.evaluate import Calibration, calibrate, evaluate, load_regressor
from galclust.regress.predict import PredictReport, predict
from galclust.regress.targets import FluxScaling, Targets
from galclust.regress.training import RegressorOptions, RegressorReport, train_regressor

__all__ = [
    "Calibration",
    "FluxScaling",
    "PredictReport",
    "RegressorOptions",
    "RegressorReport",
    "Targets",
    "calibrate",
    "evaluate",
    "load_regressor",
    "predict",
    "train_regressor",
]
