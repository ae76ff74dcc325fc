"""Baselines for path methods: the registry (zero, black, constant, uniform, gaussian, blur,
max-distance, arrays, callables, saved baseline folders), the uniform-output baseline trainer
(Lerma & Lucas 2022) and its SavedModel export/load."""

from tfattr.baselines.registry import BASELINES, BaselineSet, make_baselines
from tfattr.baselines.saved import (
    BaselineMismatchError,
    BaselineMismatchWarning,
    SavedBaseline,
    load_baseline,
    save_baseline,
)
from tfattr.baselines.uniform_output import (
    MaxAbsStallWarning,
    TrainedBaseline,
    model_fingerprint,
    train_uniform_baseline,
)

__all__ = [
    "BASELINES",
    "BaselineSet",
    "make_baselines",
    "train_uniform_baseline",
    "TrainedBaseline",
    "model_fingerprint",
    "MaxAbsStallWarning",
    "save_baseline",
    "load_baseline",
    "SavedBaseline",
    "BaselineMismatchError",
    "BaselineMismatchWarning",
]
