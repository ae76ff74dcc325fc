"""Baselines for path methods: the registry (zero, black, constant, uniform, gaussian, blur,
max-distance, arrays, callables, saved baseline folders), the uniform-output baseline trainer
(Lerma & Lucas 2022), its SavedModel export/load, and the baselines shipped with tfattr
(:func:`load_shipped`, ``baseline="shipped:NAME"``)."""

from tfattr.baselines.registry import BASELINES, BaselineSet, make_baselines
from tfattr.baselines.saved import (
    BaselineMismatchError,
    BaselineMismatchWarning,
    SavedBaseline,
    load_baseline,
    save_baseline,
)
from tfattr.baselines.shipped import SHIPPED_BASELINES, load_shipped, shipped_baseline_path
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
    "SHIPPED_BASELINES",
    "load_shipped",
    "shipped_baseline_path",
]
