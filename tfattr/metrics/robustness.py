"""Robustness of explanations to small input changes (the method re-explains perturbed inputs).

* :func:`max_sensitivity`, :func:`avg_sensitivity` — Yeh et al., NeurIPS 2019, §3
  (``captum.metrics.sensitivity_max``; Quantus ``MaxSensitivity`` / ``AvgSensitivity``). Lower is
  better.

The perturbed copies are explained by the method itself (its own batched rows), one call per
perturbation for all images at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import tensorflow as tf

from tfattr.core.random import STREAM_SENSITIVITY, compiled_row_draws
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.metrics._common import check_positive_int, check_seed

__all__ = ["SensitivityResult", "max_sensitivity", "avg_sensitivity", "sensitivity_perturbations"]


@dataclass
class SensitivityResult:
    """What :func:`max_sensitivity` and :func:`avg_sensitivity` return (``N`` images, ``M`` perturbations).

    Attributes:
        sensitivity: ``(N,)`` the max (or mean) of ``ratios`` (lower is better).
        ratios: ``(N, M)`` ``‖φ(x + δⱼ) − φ(x)‖ / ‖φ(x)‖`` (the norm of ``φ(x)`` taken as 1 where it is 0).
        targets: ``(N,)`` the explained classes, fixed for the perturbed inputs.
    """

    sensitivity: np.ndarray
    ratios: np.ndarray
    targets: Optional[np.ndarray]


def sensitivity_perturbations(seed: int, count: int, shape, radius: float) -> np.ndarray:
    """``(count, *shape)`` float64 perturbations ``δⱼ ~ U[−r, r]`` per feature (captum's
    ``default_perturb_func``: the L∞ ball of radius ``r``); ``δⱼ`` from ``seed`` and ``j`` alone."""
    draws = compiled_row_draws("uniform", seed, np.arange(count), tuple(shape), dtype=tf.float64,
                               stream=STREAM_SENSITIVITY)
    return (2.0 * draws - 1.0) * float(radius)


def _flat_norm(values: np.ndarray, norm) -> np.ndarray:
    flat = values.reshape(values.shape[0], -1)
    return np.linalg.norm(flat, ord=2 if norm == "fro" else norm, axis=1)


def _sensitivity(method, images, targets, n_perturb_samples, perturb_radius, norm, seed, options, reduce):
    if not (hasattr(method, "attribute") and hasattr(method, "model")):
        raise InvalidTypeError("`method` must be a tfattr attribution method (e.g. tfattr.Gradient(model)). "
                               + received("type(method)", type(method).__name__))
    count = check_positive_int(n_perturb_samples, "n_perturb_samples")
    radius = perturb_radius
    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating)) or not (
            np.isfinite(radius) and radius > 0):
        raise InvalidInputError("`perturb_radius` must be a positive number. " + received("perturb_radius", radius))
    if not (norm == "fro" or (isinstance(norm, (int, float)) and not isinstance(norm, bool) and norm >= 1)
            or norm == np.inf):
        raise InvalidInputError("`norm` must be 'fro' (the L2 norm of the flattened map) or a p ≥ 1 (np.inf for "
                                "the largest |value|). " + received("norm", norm))
    seed = check_seed(seed)
    if seed is None or isinstance(seed, np.random.SeedSequence):
        seed = int((seed or np.random.SeedSequence()).generate_state(1)[0] >> 1)
    explanation = method.attribute(images, target=targets, **options)
    single = explanation.single
    phi = np.asarray(explanation.attributions, np.float64)
    x = np.asarray(images)
    if single:
        phi, x = phi[None], x[None]
    chosen = explanation.targets if targets is None or not callable(targets) else targets
    denominators = _flat_norm(phi, norm)
    denominators = np.where(denominators == 0, 1.0, denominators)
    deltas = sensitivity_perturbations(seed, count, x.shape[1:], radius)
    ratios = np.empty((x.shape[0], count))
    for j in range(count):
        perturbed = (x.astype(np.float64) + deltas[j]).astype(x.dtype)
        again = np.asarray(method.attribute(perturbed, target=chosen, **options).attributions, np.float64)
        ratios[:, j] = _flat_norm(again - phi, norm) / denominators
    indices = None if explanation.targets is None else np.atleast_1d(np.asarray(explanation.targets))
    return SensitivityResult(sensitivity=reduce(ratios, axis=1), ratios=ratios, targets=indices)


def max_sensitivity(method, images, targets=None, n_perturb_samples: int = 10, perturb_radius: float = 0.02,
                    norm="fro", seed: Optional[int] = 0, **options) -> SensitivityResult:
    """Max-sensitivity (Yeh et al., NeurIPS 2019, eq. 3; ``captum.metrics.sensitivity_max``'s
    defaults). Lower is better.

    ``SENS_MAX = maxⱼ ‖φ(x + δⱼ) − φ(x)‖ / ‖φ(x)‖`` over ``M`` perturbations ``δⱼ`` drawn uniformly
    from the L∞ ball of radius ``r`` (:func:`sensitivity_perturbations`; seeded, the same for every
    image), each perturbed input explained by ``method`` for the class explained at ``x`` (captum's
    normalisation by ``‖φ(x)‖``, taken as 1 where it is 0; Quantus's ``normalise`` option rescales
    the maps instead). The perturbed inputs are cast to the images' dtype before they are explained.

    Args:
        method: an attribution method (bound to its model).
        images: ``(N, H, W, C)`` images (or one image).
        targets: ``None`` (top-1 at ``x``, kept for the perturbed inputs), an int, ints or a callable.
        n_perturb_samples: ``M`` (captum's default 10).
        perturb_radius: ``r`` (captum's default 0.02, in the model's input units).
        norm: ``"fro"`` (L2 of the flattened attribution, default) or ``p ≥ 1``.
        seed: seed of the perturbations.
        **options: passed to ``method.attribute``.

    Example:
        >>> max_sensitivity(tfattr.Gradient(model), images, n_perturb_samples=5).sensitivity
    """
    return _sensitivity(method, images, targets, n_perturb_samples, perturb_radius, norm, seed, options, np.max)


def avg_sensitivity(method, images, targets=None, n_perturb_samples: int = 10, perturb_radius: float = 0.02,
                    norm="fro", seed: Optional[int] = 0, **options) -> SensitivityResult:
    """Average sensitivity (Yeh et al., NeurIPS 2019, §3; Quantus ``AvgSensitivity``): the mean over
    the perturbations of :func:`max_sensitivity`'s ratios, on the same draws. Lower is better.

    Example:
        >>> avg_sensitivity(tfattr.Gradient(model), images, n_perturb_samples=5).sensitivity
    """
    return _sensitivity(method, images, targets, n_perturb_samples, perturb_radius, norm, seed, options, np.mean)
