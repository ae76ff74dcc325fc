"""The value range of a model's input space, and the ImageNet units the papers' numbers are in.

``value_range = (low, high)`` tells tfattr where the model's inputs live: noise (NoiseTunnel,
SmoothTaylor, AUPC's perturbations) and the black, uniform, Gaussian and max-distance baselines
are drawn or clipped in it. Images in [0, 255] given with the default ``(0, 1)`` would get noise
1/255 of what was meant, so inputs outside the range raise a :class:`~tfattr.errors.ValueRangeWarning`
(:func:`warn_outside_value_range`), once per public call (a method's ``attribute``, NoiseTunnel,
:func:`~tfattr.methods.smooth_taylor.adaptive_noising`, :func:`tfattr.metrics.aupc`), where the range
enters the result: not for IG with a zero, constant, blur or custom baseline, nor for SmoothTaylor
with an absolute σ.

A model can declare its range: ``model.tfattr_value_range = (0.0, 255.0)``
(:data:`VALUE_RANGE_ATTRIBUTE`; :func:`tfattr.data.keras_application` models carry it). Methods and
metrics whose ``value_range`` is ``None`` (the default) take the model's declared range, else
``(0, 1)`` (:func:`resolve_value_range`). The attribute is a Python attribute: a model saved and
loaded again, or cloned, no longer has it.

The SmoothTaylor paper's σ, α and σ₀ are in ImageNet-normalised units, ``(x₀₁ − mean) / std``
per channel of RGB pixels ``x₀₁`` in [0, 1] (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD_RGB`); one
normalised unit is ``IMAGENET_STD · (high − low)`` of a model's input units.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Optional, Tuple

import numpy as np

from tfattr.core.inputs import validate_value_range
from tfattr.errors import ValueRangeWarning, received

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD_RGB", "IMAGENET_STD", "VALUE_RANGE_ATTRIBUTE", "declared_value_range",
           "resolve_value_range", "range_tolerance", "warn_outside_value_range", "value_range_checked"]

#: ImageNet channel means of RGB pixels in [0, 1] (torchvision's normalisation, used by the
#: SmoothTaylor authors)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: ImageNet channel standard deviations of RGB pixels in [0, 1]
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
#: one ImageNet-normalised unit as a fraction of the [0, 1] pixel range: the mean of the channel
#: standard deviations (the papers' σ = 0.3–0.7 are 7–16% of the pixel range)
IMAGENET_STD = 0.226

#: the model attribute that declares its input range
VALUE_RANGE_ATTRIBUTE = "tfattr_value_range"

# machine epsilon of the float dtypes images come in (bfloat16 is not known to np.finfo)
_EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}

_checked = threading.local()


_validate = validate_value_range  # (low, high) finite floats with low < high


def declared_value_range(model) -> Optional[Tuple[float, float]]:
    """The range a model declares with ``model.tfattr_value_range``, or ``None``."""
    declared = getattr(model, VALUE_RANGE_ATTRIBUTE, None)
    if declared is None:
        return None
    return _validate(declared, f"model.{VALUE_RANGE_ATTRIBUTE}")


def resolve_value_range(value_range, model=None, name: str = "value_range") -> Tuple[float, float]:
    """``value_range`` checked as a ``(low, high)`` pair; ``None`` means the range ``model``
    declares (:data:`VALUE_RANGE_ATTRIBUTE`), else ``(0.0, 1.0)``."""
    if value_range is None:
        declared = declared_value_range(model) if model is not None else None
        return declared if declared is not None else (0.0, 1.0)
    return _validate(value_range, name)


def range_tolerance(value_range, dtype="float32") -> float:
    """How far inputs may lie outside ``value_range`` before :func:`warn_outside_value_range` warns.

    ``max(1e-3 · (high − low), eps(dtype) · max(|low|, |high|))``. The second term covers rounding:
    a float near a bound is off by at most half an ulp, ``≤ eps/2 · |bound|`` (bfloat16 images in
    [0, 255] round to steps of 1), with a factor 2 to spare. The first term covers a chain of
    float32 preprocessing steps (each off by ~1e-7 of the range) with a wide margin, yet stays below
    one 8-bit grey level (1/255 ≈ 3.9e-3 of the range) and far below the mistake the check is
    for: images in [0, 255] with ``value_range=(0, 1)`` overshoot by 254 times the range.
    """
    low, high = value_range
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    eps = _EPS.get(name, _EPS["float32"])
    return max(1e-3 * (high - low), eps * max(abs(low), abs(high)))


@contextlib.contextmanager
def value_range_checked():
    """Within this block :func:`warn_outside_value_range` stays silent on this thread: the public
    call that opened it has checked its inputs once (adaptive noising calls ``attribute`` and
    AUPC on the same images many times)."""
    depth = getattr(_checked, "depth", 0)
    _checked.depth = depth + 1
    try:
        yield
    finally:
        _checked.depth = depth


def warn_outside_value_range(array, value_range, name: str = "inputs", option: str = "value_range",
                             stacklevel: int = 2) -> bool:
    """Warn (:class:`~tfattr.errors.ValueRangeWarning`, a ``UserWarning``) when ``array`` lies outside
    ``value_range`` by more than :func:`range_tolerance`; return whether it warned.

    ``option`` names the argument the user should fix; ``stacklevel`` counts from the caller of
    this function (2: the caller's caller, as for :func:`warnings.warn`).
    """
    if getattr(_checked, "depth", 0):
        return False
    array = np.asarray(array)
    if array.size == 0:
        return False
    low, high = value_range
    observed_low, observed_high = float(np.min(array)), float(np.max(array))
    tolerance = range_tolerance((low, high), array.dtype)
    if observed_low >= low - tolerance and observed_high <= high + tolerance:
        return False
    hint = ""
    if high - low <= 1.0 + tolerance and observed_high > 2.0 and observed_low >= -tolerance and observed_high <= 255.5:
        hint = " They look like images in [0, 255]: pass value_range=(0, 255)."
    warnings.warn(
        f"`{name}` lie outside `{option}`=({low:g}, {high:g}): observed min {observed_low:.6g}, max "
        f"{observed_high:.6g} (tolerance {tolerance:.3g}). Noise, the black/uniform/Gaussian/max-distance "
        f"baselines and AUPC's perturbations are drawn in `{option}`, so they are on another scale than "
        f"the inputs; pass the range of the model's input space.{hint} "
        + received(option, (low, high)),
        ValueRangeWarning, stacklevel=stacklevel + 1)
    return True
