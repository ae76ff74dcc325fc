"""Faithfulness metrics that compare attributions with the model's response to random perturbations.

* :func:`faithfulness_correlation` — Bhatt, Weller & Moura, IJCAI 2020 (Quantus
  ``FaithfulnessCorrelation``). Higher is better.
* :func:`infidelity` — Yeh et al., NeurIPS 2019, as ``captum.metrics.infidelity`` defines it.
  Lower is better.

Both run the perturbed copies as forward rows (:class:`~tfattr.core.engine.ForwardEngine`): each
row's perturbation is drawn on the device from the seed and the row's index among its image's
rows (:func:`~tfattr.core.random.row_uniform`, :func:`~tfattr.core.random.row_normal`), so every
image gets the same draws (an image's result does not depend on the batch it is in), the result
does not depend on the chunk size, and the draws are re-made on the host (a few per image) to
weigh the attributions in float64.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from tfattr.core import autotune
from tfattr.core.engine import ChunkRows, ForwardEngine, ForwardRows, forward_outputs
from tfattr.core.inputs import model_spec
from tfattr.core.random import (
    STREAM_FAITHFULNESS_CORRELATION,
    STREAM_INFIDELITY,
    compiled_row_draws,
    row_normal,
    row_uniform,
)
from tfattr.core.targets import resolve_output, resolve_targets
from tfattr.errors import InvalidInputError, received
from tfattr.metrics._common import (
    as_array,
    check_images,
    check_positive_int,
    check_seed,
    explained_target,
    maps_for_images,
)

__all__ = ["FaithfulnessCorrelationResult", "InfidelityResult", "faithfulness_correlation", "infidelity"]


# -- shared: targets, f(x) and the row scores -----------------------------------------------------
def _batch_size(batch_size):
    if batch_size == autotune.AUTO:
        return batch_size
    return check_positive_int(batch_size, "batch_size")


#: Seeds travel to the device in a run's float64 ``context``: integers up to 2**53 are exact there.
_SEED_LIMIT = 2**53


def _seed(seed) -> int:
    seed = check_seed(seed)
    if isinstance(seed, int) and seed >= _SEED_LIMIT:  # larger ones would round on the device, not on the host
        raise InvalidInputError(f"`seed` must be below 2**53 = {_SEED_LIMIT}. " + received("seed", seed))
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0] >> 1)
    if not isinstance(seed, int):
        return int(seed.generate_state(1)[0] >> 1)
    return seed


_ENGINES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def _engine(model, score_fn, batch_size, verbose) -> ForwardEngine:
    """One :class:`ForwardEngine` per model, score function, batch size and verbosity, kept while the
    model lives: its compiled chunks are traced once, not at every metric call."""
    if score_fn is not None:  # a user's function (often a new lambda per call): not kept
        return ForwardEngine(model, score_fn=score_fn, batch_size=batch_size, verbose=verbose)
    key = (batch_size, verbose)
    with _ENGINES_LOCK:
        try:
            per_model = _ENGINES.setdefault(model, {})
        except TypeError:  # a model that cannot be weakly referenced: a fresh engine
            return ForwardEngine(model, score_fn=score_fn, batch_size=batch_size, verbose=verbose)
        if key not in per_model:
            per_model[key] = ForwardEngine(model, score_fn=score_fn, batch_size=batch_size, verbose=verbose)
        return per_model[key]


class _Scores:
    """Targets and ``f(x)`` of the unperturbed images; :meth:`rows` scores forward rows."""

    def __init__(self, model, x: np.ndarray, target, batch_size, verbose, output=None):
        self.model, self.batch_size, self.verbose = model, batch_size, verbose
        key = None
        if output is not None:  # a model with several outputs: the one `output` names
            key, _ = resolve_output(output, model_spec(model), callable_target=callable(target))
        outputs = forward_outputs(model, tf.convert_to_tensor(x), batch_size, output=key)
        self.targets = resolve_targets(target, outputs, int(x.shape[0]), output=key)
        if self.targets.score_fn is not None:
            self.fx = np.asarray(tf.convert_to_tensor(self.targets.score_fn(tf.convert_to_tensor(outputs))),
                                 np.float64).reshape(-1)
        else:
            self.fx = outputs[np.arange(outputs.shape[0]), self.targets.indices]

    def rows(self, x: np.ndarray, per_example: int, build, context) -> np.ndarray:
        """``(N, per_example)`` scores of the rows ``build`` makes."""
        engine = _engine(self.model, self.targets.scorer, self.batch_size, self.verbose)
        rows = ForwardRows.repeat(int(x.shape[0]), per_example)
        result = engine.run(tf.convert_to_tensor(x), rows, build, self.targets.indices, context=context)
        return result.row_scores.reshape(int(x.shape[0]), per_example)


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson's correlation along the last axis (``scipy.stats.pearsonr``); ``nan`` if either is constant."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=-1) / np.where(denominator > 0, denominator, 1.0), np.nan)


# -- faithfulness correlation -----------------------------------------------------------------------
@dataclass
class FaithfulnessCorrelationResult:
    """What :func:`faithfulness_correlation` returns (``N`` images, ``R`` runs).

    Attributes:
        correlation: ``(N,)`` Pearson correlation of ``attribution_sums`` and ``score_drops`` (higher is better).
        attribution_sums: ``(N, R)`` ``Σ_{i∈S_r} φ_i`` over each run's subset of pixels.
        score_drops: ``(N, R)`` ``f(x) − f(x_{S_r → baseline})``.
        subsets: ``(R, H·W)`` bool: the pixels of each run's subset (the same for every image).
        targets: ``(N,)`` the classes scored (``None`` for a callable target).
    """

    correlation: np.ndarray
    attribution_sums: np.ndarray
    score_drops: np.ndarray
    subsets: np.ndarray
    targets: Optional[np.ndarray]


def subset_masks(seed: int, runs, pixels: int, subset_size: int) -> np.ndarray:
    """``(len(runs), pixels)`` bool masks of :func:`faithfulness_correlation`'s subsets: run ``r``
    takes the ``subset_size`` pixels with the smallest of its seeded uniform draws (a subset drawn
    uniformly without replacement)."""
    draws = compiled_row_draws("uniform", seed, runs, (pixels,), dtype=tf.float64,
                               stream=STREAM_FAITHFULNESS_CORRELATION)
    return _subset_mask(tf.constant(draws), subset_size, pixels).numpy() > 0


def _subset_mask(draws, subset_size, pixels):
    """1 at the ``subset_size`` smallest draws of each row (float64 uniforms: ties have probability ~0)."""
    threshold = -tf.math.top_k(-draws, k=subset_size).values[:, -1:]
    return tf.cast(draws <= threshold, draws.dtype)


def _subset_points(x, rows: ChunkRows):
    """Row ``r`` of image ``n``: ``x_n`` with run ``position``'s subset of pixels (all channels) at
    image ``n``'s baseline value. Context: ``[seed, subset_size, baseline_0 … baseline_{N−1}]``."""
    height, width = int(x.shape[1]), int(x.shape[2])
    pixels = height * width
    context = tf.reshape(rows.context, [-1])
    seed = tf.cast(context[0], tf.int64)
    size = tf.cast(context[1], tf.int32)
    draws = row_uniform(seed, rows.position, (pixels,), dtype=tf.float64, stream=STREAM_FAITHFULNESS_CORRELATION)
    mask = tf.reshape(_subset_mask(draws, size, pixels), (-1, height, width, 1)) > 0
    baseline = tf.cast(tf.gather(context[2:], rows.example), x.dtype)
    points = tf.gather(x, rows.example)
    return tf.where(mask, tf.reshape(baseline, (-1, 1, 1, 1)) * tf.ones_like(points), points)


def _baseline_values(baseline, x: np.ndarray) -> np.ndarray:
    if isinstance(baseline, str):
        if baseline == "black":
            return x.reshape(x.shape[0], -1).min(axis=1).astype(np.float64)
        if baseline == "white":
            return x.reshape(x.shape[0], -1).max(axis=1).astype(np.float64)
        if baseline == "mean":
            return x.reshape(x.shape[0], -1).astype(np.float64).mean(axis=1)
    elif isinstance(baseline, (int, float, np.integer, np.floating)) and not isinstance(baseline, bool):
        if np.isfinite(baseline):
            return np.full(x.shape[0], float(baseline))
    raise InvalidInputError("`baseline` must be 'black' (each image's minimum), 'white' (its maximum), 'mean' "
                            "or a finite number. " + received("baseline", baseline))


def faithfulness_correlation(model, images, attributions, target=None, subset_size: int = 224, runs: int = 100,
                             baseline: Union[str, float] = "black", seed: Optional[int] = 0,
                             batch_size: Union[int, str] = "auto",
                             verbose: Union[int, bool, str] = "auto", output=None) -> FaithfulnessCorrelationResult:
    """Faithfulness correlation (Bhatt, Weller & Moura, IJCAI 2020, eq. 4; Quantus
    ``FaithfulnessCorrelation`` defaults). Higher is better (in [−1, 1]).

    For ``R`` runs ``r``, a subset ``S_r`` of ``|S|`` pixels is drawn uniformly without
    replacement; the pixels of ``S_r`` (all channels) are set to the baseline, and

    ``μ_F = Pearson_r( Σ_{i∈S_r} φ_i ,  f(x) − f(x_{S_r → baseline}) )``

    per image, where ``φ`` is the attribution summed over channels (signed) and ``f`` the
    target's score (the model's output as is). Quantus's defaults: ``|S| = 224``, ``R = 100``,
    ``baseline="black"`` (the image's minimum value); Quantus also normalises ``φ`` by its
    maximum, which a correlation does not see.

    Randomness: run ``r``'s subset comes from ``seed`` and ``r`` alone
    (:func:`subset_masks`), the same for every image, drawn on the device in each chunk.

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps.
        target: ``None`` (top-1 class), an int, ints, or a callable ``outputs -> (batch,)``.
        subset_size: pixels per subset ``|S|`` (≤ ``H·W``).
        runs: ``R`` (≥ 2).
        baseline: ``"black"`` (each image's minimum), ``"white"`` (maximum), ``"mean"`` or a number.
        seed: seed of the subsets (``None``: fresh).
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name), as the methods'
            ``output=``; ``None`` for a model with one.

    Returns:
        :class:`FaithfulnessCorrelationResult`.

    Example:
        >>> faithfulness_correlation(model, images, expl.attributions, subset_size=32, runs=50).correlation
    """
    batch, x, _ = check_images(model, images)
    maps = maps_for_images(attributions, batch)
    num, height, width = maps.shape
    pixels = height * width
    size = check_positive_int(subset_size, "subset_size")
    if size > pixels:
        raise InvalidInputError(f"`subset_size` must be at most the number of pixels H·W = {pixels}. "
                                + received("subset_size", subset_size))
    count = check_positive_int(runs, "runs", minimum=2)
    seed = _seed(seed)
    values = _baseline_values(baseline, x)
    scores = _Scores(model, x, explained_target(attributions, target), _batch_size(batch_size), verbose, output)
    row_scores = scores.rows(x, count, _subset_points, np.concatenate([[seed, size], values]))
    subsets = subset_masks(seed, np.arange(count), pixels, size)
    sums = maps.reshape(num, pixels) @ subsets.T.astype(np.float64)
    drops = scores.fx[:, None] - row_scores
    return FaithfulnessCorrelationResult(correlation=_pearson(sums, drops), attribution_sums=sums,
                                         score_drops=drops, subsets=subsets, targets=scores.targets.indices)


# -- infidelity ----------------------------------------------------------------------------------
@dataclass
class InfidelityResult:
    """What :func:`infidelity` returns (``N`` images, ``M`` perturbations).

    Attributes:
        infidelity: ``(N,)`` ``mean_j (β Iⱼᵀφ − (f(x) − f(x − Iⱼ)))²`` (lower is better; β = 1
            unless ``normalize``).
        attribution_products: ``(N, M)`` ``Iⱼᵀφ``.
        score_drops: ``(N, M)`` ``f(x) − f(x − Iⱼ)``.
        beta: ``(N,)`` the normalisation (1 without ``normalize``).
        targets: ``(N,)`` the classes scored (``None`` for a callable target).
    """

    infidelity: np.ndarray
    attribution_products: np.ndarray
    score_drops: np.ndarray
    beta: np.ndarray
    targets: Optional[np.ndarray]


def _noisy_points(x, rows: ChunkRows):
    """Row ``j`` of image ``n``: ``x_n − σ ε_j``, ``ε_j`` standard normal from ``(seed, j)``.
    Context: ``[seed, σ]``."""
    context = tf.reshape(rows.context, [-1])
    seed = tf.cast(context[0], tf.int64)
    sigma = tf.cast(context[1], x.dtype)
    noise = row_normal(seed, rows.position, tuple(int(d) for d in x.shape[1:]), dtype=x.dtype,
                       stream=STREAM_INFIDELITY)
    return tf.gather(x, rows.example) - sigma * noise


def infidelity(model, images, attributions, target=None, n_perturb_samples: int = 10, sigma: float = 0.003,
               multiply_by_inputs: bool = False, baselines=None, normalize: bool = False,
               seed: Optional[int] = 0, batch_size: Union[int, str] = "auto",
               verbose: Union[int, bool, str] = "auto", output=None) -> InfidelityResult:
    r"""Explanation infidelity (Yeh et al., NeurIPS 2019, Def. 2.1), as ``captum.metrics.infidelity``
    computes it with Gaussian perturbations. Lower is better (0: the attribution predicts every
    perturbation's effect).

    ``INFD = E_I[(Iᵀφ − (f(x) − f(x − I)))²]`` over ``M = n_perturb_samples`` perturbations: the
    perturbed inputs are ``x̃ⱼ = x − σ εⱼ`` with ``εⱼ`` i.i.d. standard normal over every feature
    (captum's documented example, σ = 0.003), and ``Iⱼ = x − x̃ⱼ`` (as computed in the model's
    dtype). ``multiply_by_inputs=True`` (captum's ``infidelity_perturb_func_decorator(True)``,
    for attributions that multiply by ``x − baseline`` such as gradient × input or IG) uses
    ``Iⱼ = (x − x̃ⱼ) / (x − baseline)`` (division by 1 where ``x = baseline``). ``normalize=True``
    rescales the attributions by captum's ``β = Σⱼ (Iⱼᵀφ)(f(x) − f(x̃ⱼ)) / Σⱼ (Iⱼᵀφ)²``
    (β = 1 where the denominator is 0), i.e. the best scale, so only the direction of ``φ`` counts.
    Captum sums the expanded square ``β²a² − 2βab + b²``; it is computed here as
    ``(βa − b)²`` (the same number, without the cancellation near 0).

    ``f`` is the target's score, the model's output as is. Randomness: perturbation ``j`` comes from
    ``seed`` and ``j`` alone, the same for every image, drawn on the device in each chunk.

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape.
        target: ``None`` (top-1 class), an int, ints, or a callable ``outputs -> (batch,)``.
        n_perturb_samples: ``M`` (captum's default 10).
        sigma: standard deviation of the Gaussian perturbation (> 0).
        multiply_by_inputs: divide the perturbation by ``x − baseline`` (see above).
        baselines: the baseline of ``multiply_by_inputs``: ``None`` (0, captum's default) or an
            array broadcasting to the images.
        normalize: captum's ``normalize``.
        seed: seed of the perturbations (``None``: fresh).
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name), as the methods'
            ``output=``; ``None`` for a model with one.

    Returns:
        :class:`InfidelityResult`.

    Example:
        >>> infidelity(model, images, expl.attributions, n_perturb_samples=20, sigma=0.01).infidelity
    """
    batch, x, dtype = check_images(model, images)
    phi = as_array(attributions, "attributions")
    if batch.single and phi.shape == x.shape[1:]:
        phi = phi[None]
    if phi.shape != x.shape:
        raise InvalidInputError(f"`attributions` must have the images' shape {tuple(x.shape)}. "
                                + received("attributions.shape", tuple(phi.shape)))
    count = check_positive_int(n_perturb_samples, "n_perturb_samples")
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)) or not (
            np.isfinite(sigma) and sigma > 0):
        raise InvalidInputError("`sigma` must be a positive number. " + received("sigma", sigma))
    for name, flag in (("multiply_by_inputs", multiply_by_inputs), ("normalize", normalize)):
        if not isinstance(flag, (bool, np.bool_)):
            raise InvalidInputError(f"`{name}` must be True or False. " + received(name, flag))
    seed = _seed(seed)
    reference = np.zeros_like(x, dtype=np.float64)
    if baselines is not None:
        array = as_array(baselines, "baselines")
        try:
            reference = np.broadcast_to(array, x.shape).astype(np.float64)
        except ValueError:
            raise InvalidInputError(f"`baselines` must broadcast to the images' shape {tuple(x.shape)}. "
                                    + received("baselines.shape", tuple(array.shape))) from None
    scores = _Scores(model, x, explained_target(attributions, target), _batch_size(batch_size), verbose, output)
    row_scores = scores.rows(x, count, _noisy_points, [seed, float(sigma)])
    drops = scores.fx[:, None] - row_scores
    # the same draws on the host (M of them, shared by every image), and Iⱼ as the model saw it
    noise = compiled_row_draws("normal", seed, np.arange(count), tuple(x.shape[1:]), dtype=tf.as_dtype(dtype),
                               stream=STREAM_INFIDELITY)
    # σ as the device has it: the float64 context cast to the model's dtype (not a float32 constant)
    scaled = (tf.cast(tf.constant(float(sigma), tf.float64), tf.as_dtype(dtype)) * noise).numpy()
    products = np.empty((x.shape[0], count))
    denominator = x.astype(np.float64) - reference
    denominator = np.where(denominator != 0, denominator, 1.0)
    for j in range(count):
        perturbed = x - scaled[j]  # in the model's dtype, as on the device
        change = x.astype(np.float64) - perturbed.astype(np.float64)
        if multiply_by_inputs:
            change = change / denominator
        products[:, j] = (change * phi).reshape(x.shape[0], -1).sum(axis=1)
    beta = np.ones(x.shape[0])
    if normalize:
        numerator = (products * drops).sum(axis=1)
        squares = (products * products).sum(axis=1)
        beta = numerator / np.where(squares != 0, squares, 1.0)
    values = ((beta[:, None] * products - drops) ** 2).mean(axis=1)
    return InfidelityResult(infidelity=values, attribution_products=products, score_drops=drops, beta=beta,
                            targets=scores.targets.indices)
