"""Robustness of explanations to small input changes (the method re-explains perturbed inputs).

* :func:`max_sensitivity`, :func:`avg_sensitivity` — Yeh et al., NeurIPS 2019, §3
  (``captum.metrics.sensitivity_max``; Quantus ``MaxSensitivity`` / ``AvgSensitivity``). Lower is
  better.
* :func:`local_lipschitz_estimate` — Alvarez-Melis & Jaakkola 2018, eq. 5, as Quantus
  ``LocalLipschitzEstimate`` computes it (Gaussian perturbations). Lower is better.
* :func:`relative_input_stability`, :func:`relative_output_stability` — Agarwal et al. 2022,
  eqs. 2 and 5 (Quantus ``RelativeInputStability`` / ``RelativeOutputStability``). Lower is better.

The perturbed copies are explained by the method itself (its own batched rows), one call per
perturbation for all images at once: image ``n``'s copies sit at row ``n`` of every call, so a
method that draws per-row noise (a noise tunnel, SmoothTaylor) re-explains each copy with the
draws it explained the image with, and the ratio measures the input's change, not new noise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import tensorflow as tf

from tfattr.core.random import STREAM_LIPSCHITZ, STREAM_RELATIVE_STABILITY, STREAM_SENSITIVITY, compiled_row_draws
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.metrics._common import check_positive_int, check_seed

__all__ = ["SensitivityResult", "max_sensitivity", "avg_sensitivity", "sensitivity_perturbations", "StabilityResult",
           "local_lipschitz_estimate", "relative_input_stability", "relative_output_stability",
           "stability_perturbations"]


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


# -- Lipschitz estimate and relative stabilities --------------------------------------------------
@dataclass
class StabilityResult:
    """What :func:`local_lipschitz_estimate`, :func:`relative_input_stability` and
    :func:`relative_output_stability` return (``N`` images, ``M`` perturbations).

    Attributes:
        score: ``(N,)`` the largest ratio over the perturbations kept (lower is better); ``nan``
            where no perturbation was kept.
        ratios: ``(N, M)`` the ratio of each perturbation (``nan`` where it was not kept).
        kept: ``(N, M)`` whether perturbation ``j`` of image ``n`` counted (``keep_prediction``:
            the model's top-1 class did not change).
        targets: ``(N,)`` the explained classes, fixed for the perturbed inputs (``None`` for a
            callable target).
    """

    score: np.ndarray
    ratios: np.ndarray
    kept: np.ndarray
    targets: Optional[np.ndarray]


def stability_perturbations(seed: int, count: int, shape, kind: str, low: float, high: float,
                            stream: int = STREAM_RELATIVE_STABILITY) -> np.ndarray:
    """``(count, *shape)`` float64 perturbations, ``δⱼ`` from ``seed`` and ``j`` alone (the same for
    every image): ``kind="normal"``: ``δ ~ N(low, high²)`` per feature (mean, standard deviation);
    ``kind="uniform"``: ``δ ~ U[low, high]`` per feature."""
    draws = compiled_row_draws(kind, seed, np.arange(count), tuple(shape), dtype=tf.float64, stream=stream)
    if kind == "normal":
        return float(low) + float(high) * draws
    return float(low) + (float(high) - float(low)) * draws


def _check_method(method):
    if not (hasattr(method, "attribute") and hasattr(method, "model")):
        raise InvalidTypeError("`method` must be a tfattr attribution method (e.g. tfattr.Gradient(model)). "
                               + received("type(method)", type(method).__name__))


def _check_number(value, name, positive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            np.isfinite(value) and (value > 0 or not positive)):
        raise InvalidInputError(f"`{name}` must be a {'positive' if positive else 'finite'} number. "
                                + received(name, value))
    return float(value)


def _resolve_seed(seed) -> int:
    seed = check_seed(seed)
    if seed is None or isinstance(seed, np.random.SeedSequence):
        seed = int((seed or np.random.SeedSequence()).generate_state(1)[0] >> 1)
    return seed


def _outputs(model, x) -> np.ndarray:
    from tfattr.core.gradients import compiled_forward

    outputs = compiled_forward(model)(tf.convert_to_tensor(x))
    if isinstance(outputs, (list, tuple, dict)):
        raise InvalidTypeError("Stability metrics compare the model's output vector: the model must have one "
                               "output. " + received("type(outputs)", type(outputs).__name__))
    return np.asarray(outputs, np.float64).reshape(len(x), -1)


def _stability(method, images, targets, deltas, options, ratio, keep_prediction: bool,
               prepare=None) -> StabilityResult:
    """Explain ``images`` and ``images + δⱼ`` (one attribute call per ``j`` for all images, the
    targets fixed) and reduce ``ratio(x, x', φ, φ', h, h')`` (all ``(N, …)`` float64) by the max
    over the kept perturbations."""
    explanation = method.attribute(images, target=targets, **options)
    single = explanation.single
    phi = np.asarray(explanation.attributions, np.float64)
    x = np.asarray(images)
    if single:
        phi, x = phi[None], x[None]
    if prepare is not None:
        phi = prepare(phi)
    chosen = explanation.targets if targets is None or not callable(targets) else targets
    if single and chosen is not None and not callable(chosen):
        chosen = np.atleast_1d(np.asarray(chosen))
    need_outputs = keep_prediction or ratio.__code__.co_argcount > 4
    h = _outputs(method.model, x) if need_outputs else None
    count = deltas.shape[0]
    ratios = np.full((x.shape[0], count), np.nan)
    kept = np.ones((x.shape[0], count), bool)
    x64 = x.astype(np.float64)
    for j in range(count):
        perturbed = (x64 + deltas[j]).astype(x.dtype)
        again = np.asarray(method.attribute(perturbed, target=chosen, **options).attributions, np.float64)
        if prepare is not None:
            again = prepare(again)
        h_again = _outputs(method.model, perturbed) if need_outputs else None
        if keep_prediction:
            kept[:, j] = np.argmax(h_again, axis=1) == np.argmax(h, axis=1)
        arguments = (x64, perturbed.astype(np.float64), phi, again) + ((h, h_again) if need_outputs else ())
        values = ratio(*arguments[: ratio.__code__.co_argcount])
        ratios[:, j] = np.where(kept[:, j], values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
        score = np.nanmax(ratios, axis=1)
    indices = None if explanation.targets is None else np.atleast_1d(np.asarray(explanation.targets))
    return StabilityResult(score=score, ratios=ratios, kept=kept, targets=indices)


def _l2(values: np.ndarray) -> np.ndarray:
    return np.sqrt((values.reshape(values.shape[0], -1) ** 2).sum(axis=1))


def _max_normalised(phi: np.ndarray) -> np.ndarray:
    """Each map divided by its largest |value| (a map of zeros is kept)."""
    scale = np.abs(phi.reshape(phi.shape[0], -1)).max(axis=1)
    scale = np.where(scale == 0, 1.0, scale)
    return phi / scale.reshape((-1,) + (1,) * (phi.ndim - 1))


def local_lipschitz_estimate(method, images, targets=None, n_perturb_samples: int = 200, perturb_std: float = 0.1,
                             normalise: bool = True, absolute: bool = False, keep_prediction: bool = False,
                             seed: Optional[int] = 0, **options) -> StabilityResult:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola, "On the Robustness of Interpretability
    Methods", 2018, eq. 5), as Quantus ``LocalLipschitzEstimate`` computes it. Lower is better.

    ``L̂(x) = maxⱼ ‖φ(x) − φ(x + δⱼ)‖₂ / (‖δⱼ‖₂ + 10⁻¹⁰)`` over ``M`` Gaussian perturbations
    ``δⱼ ~ N(0, σ²)`` per feature (:func:`stability_perturbations`, seeded, the same for every
    image; the paper maximises over a ball, Quantus and tfattr sample it), each perturbed input
    explained by ``method`` for the class explained at ``x``. ``‖δⱼ‖`` is measured between the
    inputs the model sees (the perturbed images cast to the images' dtype).

    Quantus's conventions, and where tfattr differs:

    * ``normalise=True`` (Quantus's default) divides each map by its largest |value| before the
      distances. Quantus's ``normalise_by_max`` divides a whole *batch* by one maximum, so its
      numbers depend on which images share a batch; tfattr normalises per image (equal to
      Quantus with ``batch_size=1``, or for one image).
    * ``keep_prediction=False`` (Quantus's ``return_nan_when_prediction_changes=False``): every
      perturbation counts; ``True`` drops those that change the top-1 class (``nan`` ratios,
      the max over the rest).

    Args:
        method: an attribution method (bound to its model).
        images: ``(N, H, W, C)`` images (or one image).
        targets: ``None`` (top-1 at ``x``, kept for the perturbed inputs), an int, ints or a callable.
        n_perturb_samples: ``M`` (Quantus's default 200).
        perturb_std: ``σ`` (Quantus's default 0.1, in the model's input units).
        normalise: divide each map by its largest |value| (Quantus's default ``True``).
        absolute: take ``|φ|`` after the normalisation (Quantus's ``abs``; default ``False``).
        keep_prediction: drop perturbations that change the top-1 class.
        seed: seed of the perturbations.
        **options: passed to ``method.attribute``.

    Returns:
        :class:`StabilityResult` (``score`` is ``L̂``).

    Example:
        >>> local_lipschitz_estimate(tfattr.Gradient(model), images, n_perturb_samples=10).score
    """
    _check_method(method)
    count = check_positive_int(n_perturb_samples, "n_perturb_samples")
    std = _check_number(perturb_std, "perturb_std")
    seed = _resolve_seed(seed)
    x = np.asarray(images)
    shape = x.shape[1:] if x.ndim == 4 else x.shape
    deltas = stability_perturbations(seed, count, shape, "normal", 0.0, std, stream=STREAM_LIPSCHITZ)

    def prepare(phi):
        phi = _max_normalised(phi) if normalise else phi
        return np.abs(phi) if absolute else phi

    def ratio(x, perturbed, phi, again):
        return _l2(phi - again) / (_l2(x - perturbed) + 1e-10)

    return _stability(method, images, targets, deltas, options, ratio, bool(keep_prediction), prepare)


def _relative(values: np.ndarray, reference: np.ndarray, eps: float) -> np.ndarray:
    """``(reference − values) / reference`` elementwise, a zero in ``reference`` replaced by ``eps``."""
    return (reference - values) / (reference + (reference == 0) * eps)


def _check_bounds(bounds):
    ok = isinstance(bounds, (tuple, list)) and len(bounds) == 2 and all(
        not isinstance(b, bool) and isinstance(b, (int, float, np.integer, np.floating)) and np.isfinite(b)
        for b in bounds) and bounds[0] < bounds[1]
    if not ok:
        raise InvalidInputError("`perturb_bounds` must be two finite numbers (low, high) with low < high. "
                                + received("perturb_bounds", bounds))
    return float(bounds[0]), float(bounds[1])


def _relative_stability(method, images, targets, n_perturb_samples, perturb_bounds, eps_min, keep_prediction,
                        seed, options, ratio):
    _check_method(method)
    count = check_positive_int(n_perturb_samples, "n_perturb_samples")
    low, high = _check_bounds(perturb_bounds)
    eps = _check_number(eps_min, "eps_min")
    seed = _resolve_seed(seed)
    x = np.asarray(images)
    shape = x.shape[1:] if x.ndim == 4 else x.shape
    deltas = stability_perturbations(seed, count, shape, "uniform", low, high)
    return _stability(method, images, targets, deltas, options, ratio(eps), bool(keep_prediction))


def relative_input_stability(method, images, targets=None, n_perturb_samples: int = 200,
                             perturb_bounds=(0.02, 0.2), eps_min: float = 1e-6, keep_prediction: bool = True,
                             seed: Optional[int] = 0, **options) -> StabilityResult:
    """Relative input stability (Agarwal et al., "Rethinking Stability for Attribution-based
    Explanations", 2022, eq. 2; Quantus ``RelativeInputStability``). Lower is better.

    ``RIS(x) = max_{x'} ‖(φ(x) − φ(x'))/φ(x)‖₂ / max(‖(x − x')/x‖₂, ε_min)``, the divisions
    elementwise (a zero of ``φ(x)`` or ``x`` replaced by ``ε_min``), over ``M`` perturbed inputs
    ``x' = x + δⱼ`` that keep the model's top-1 class (the paper's neighbourhood
    ``ŷ(x) = ŷ(x')``). ``δⱼ ~ U[low, high]`` per feature (:func:`stability_perturbations`,
    seeded, the same for every image); Quantus's default ``perturb_bounds=(0.02, 0.2)`` shifts every
    feature up; pass ``(−r, r)`` for the L∞ ball of radius ``r``.

    Where Quantus differs: its ``return_nan_when_prediction_changes=True`` makes the whole score
    ``nan`` as soon as one perturbation changes the class (``np.max`` over a ``nan``); tfattr takes
    the max over the perturbations kept (``nan`` only when none is), as the paper's maximum over
    the neighbourhood. The denominator is ``max(·, ε_min)`` as in the paper (Quantus adds
    ``ε_min`` only to an exact 0). Equal to Quantus when no perturbation changes the class.

    Args:
        method: an attribution method (bound to its model).
        images: ``(N, H, W, C)`` images (or one image).
        targets: ``None`` (top-1 at ``x``, kept for the perturbed inputs), an int, ints or a callable.
        n_perturb_samples: ``M`` (Quantus's default 200).
        perturb_bounds: ``(low, high)`` of the uniform perturbation (Quantus's default (0.02, 0.2)).
        eps_min: ``ε_min`` (Quantus's default 1e-6).
        keep_prediction: count only perturbations that keep the top-1 class (default, the paper).
        seed: seed of the perturbations.
        **options: passed to ``method.attribute``.

    Example:
        >>> relative_input_stability(tfattr.Gradient(model), images, n_perturb_samples=10).score
    """
    def make(eps):
        def ratio(x, perturbed, phi, again):
            return _l2(_relative(again, phi, eps)) / np.maximum(_l2(_relative(perturbed, x, eps)), eps)
        return ratio

    return _relative_stability(method, images, targets, n_perturb_samples, perturb_bounds, eps_min, keep_prediction,
                               seed, options, make)


def relative_output_stability(method, images, targets=None, n_perturb_samples: int = 200,
                              perturb_bounds=(0.02, 0.2), eps_min: float = 1e-6, keep_prediction: bool = True,
                              seed: Optional[int] = 0, **options) -> StabilityResult:
    """Relative output stability (Agarwal et al. 2022, eq. 5; Quantus ``RelativeOutputStability``).
    Lower is better.

    ``ROS(x) = max_{x'} ‖(φ(x) − φ(x'))/φ(x)‖₂ / max(‖h(x) − h(x')‖₂, ε_min)``, ``h`` the model's
    output vector (its logits: give a logits model), on the perturbations of
    :func:`relative_input_stability` (same options, draws and conventions).

    Example:
        >>> relative_output_stability(tfattr.Gradient(model), images, n_perturb_samples=10).score
    """
    def make(eps):
        def ratio(x, perturbed, phi, again, h, h_again):
            return _l2(_relative(again, phi, eps)) / np.maximum(_l2(h - h_again), eps)
        return ratio

    return _relative_stability(method, images, targets, n_perturb_samples, perturb_bounds, eps_min, keep_prediction,
                               seed, options, make)
