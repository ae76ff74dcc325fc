"""Uniform-output baselines shipped with tfattr, loaded by name.

    >>> from tfattr.baselines import load_shipped
    >>> loaded = load_shipped("digits_on_photos_uniform")          # a SavedBaseline
    >>> ig = tfattr.IntegratedGradients(model, baseline="shipped:digits_on_photos_uniform")

They are package data (``tfattr/assets/baselines/NAME``), so they load from an installed wheel as
from a checkout, where ``saved_baselines/NAME`` still names the same folders.
"""

from __future__ import annotations

import os
from typing import Optional

from tfattr.core.assets import asset_path
from tfattr.errors import InvalidInputError, received

__all__ = ["SHIPPED_BASELINES", "SHIPPED_PREFIX", "shipped_baseline_path", "load_shipped", "is_shipped_name", "resolve"]

#: the shipped baselines by name, with the classifier each was trained for
SHIPPED_BASELINES = {
    "digits_on_photos_uniform": "the demo classifier (digits on photos, 64×64 in [0, 1])",
    "efficientnet_lite0_uniform": "the ImageNet EfficientNet-Lite0 of tfattr.data.EfficientNetLite0 "
                                  "(224×224 in [0, 255])",
}
#: ``baseline="shipped:NAME"`` names a shipped baseline wherever a baseline is taken
SHIPPED_PREFIX = "shipped:"


def shipped_baseline_path(name: str) -> str:
    """The folder of the shipped baseline ``name`` (a key of :data:`SHIPPED_BASELINES`; a
    ``"shipped:"`` prefix is allowed).

    Raises:
        InvalidInputError: no baseline of that name is shipped.
    """
    key = name[len(SHIPPED_PREFIX):] if isinstance(name, str) and name.startswith(SHIPPED_PREFIX) else name
    if not isinstance(key, str) or key not in SHIPPED_BASELINES:  # a list would be a raw "unhashable" TypeError
        raise InvalidInputError(f"tfattr ships no baseline of that name; expected one of "
                                f"{sorted(SHIPPED_BASELINES)}. " + received("name", name))
    return asset_path("baselines", key)


def load_shipped(name: str, model=None, strict: bool = True):
    """Load the shipped baseline ``name`` (:func:`tfattr.baselines.load_baseline` on its folder).

    Args:
        name: a key of :data:`SHIPPED_BASELINES` (``"shipped:"`` prefix allowed).
        model: the classifier to check the baseline against (fingerprint and input shape), or None.
        strict: raise (True) or warn (False) when ``model`` is not the one it was trained for.

    Returns:
        A :class:`tfattr.baselines.SavedBaseline`.

    Example:
        >>> load_shipped("digits_on_photos_uniform").array.shape
        (64, 64, 3)
    """
    from tfattr.baselines.saved import load_baseline

    return load_baseline(shipped_baseline_path(name), model=model, strict=strict)


def is_shipped_name(baseline) -> bool:
    """Whether ``baseline`` is a ``"shipped:NAME"`` string (not a folder of that name)."""
    return isinstance(baseline, str) and baseline.startswith(SHIPPED_PREFIX) and not os.path.isdir(baseline)


def resolve(baseline: Optional[object]):
    """``"shipped:NAME"`` → that baseline's folder; anything else as it is."""
    return shipped_baseline_path(baseline) if is_shipped_name(baseline) else baseline
