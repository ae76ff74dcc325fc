"""More faithfulness metrics: the model re-scores inputs perturbed in the order, or on the random
subsets, an attribution map gives.

* :func:`monotonicity` — Arya et al. 2019 (Quantus ``Monotonicity``). Higher (True) is better.
* :func:`monotonicity_correlation` — Nguyen & Martínez 2020 (Quantus ``MonotonicityCorrelation``).
  Higher is better.
* :func:`selectivity` — Montavon, Samek & Müller 2018 (Quantus ``Selectivity``). Lower is better.
* :func:`sensitivity_n` — Ancona et al., ICLR 2018 (random subsets of ``n`` pixels; Quantus
  ``SensitivityN``'s cumulative top-``n`` variant as ``subsets="top"``). Higher is better.
* :func:`irof` — Rieger & Hansen 2020 (Quantus ``IROF``, SLIC superpixels). Higher is better.
* :func:`road` — Rong et al., ICML 2022 (noisy linear imputation; MoRF and LeRF; Quantus ``ROAD``).
  MoRF: lower is better; LeRF: higher is better.
* :func:`mu_fidelity` — Bhatt et al. 2020 as xplique's ``MuFidelity`` computes it (grid cells,
  Spearman). Higher is better.

Every perturbed copy is a forward row of :class:`~tfattr.core.engine.ForwardEngine`: a chunk's
copies are made on the device from the images and a small context (each pixel's rank in the
map's order and the step thresholds, or a seed), never all copies at once. ROAD's imputation is a
sparse linear solve per image and step, made on the host one block of steps at a time.

Conventions shared with :mod:`tfattr.metrics.faithfulness`: maps are the attributions summed over
channels (signed) and a pixel means all its channels; ``f`` is the target's score, the model's
output as is (Quantus applies a softmax by default, ``softmax=True``: give these metrics a model that
ends in a softmax for that); ``target=None`` scores each image's top-1 class (for an ``Explanation``
passed as the attributions: the classes it explains); orders are stable sorts in which values equal up
to rounding (``2**-14`` of the map's largest magnitude, :func:`~tfattr.metrics._common.rank_keys`) tie
and go to the lower pixel (patch, segment) index, whatever a machine's last bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfattr.core.engine import ChunkRows, ForwardRows
from tfattr.core.random import (
    STREAM_MONOTONICITY_CORRELATION,
    STREAM_MU_FIDELITY,
    STREAM_ROAD,
    STREAM_SENSITIVITY_N,
    compiled_row_draws,
    row_uniform,
)
from tfattr.errors import InvalidInputError, received
from tfattr.metrics._common import (
    as_array,
    check_images,
    check_positive_int,
    descending_order,
    explained_target,
    maps_for_images,
)
from tfattr.metrics.faithfulness import _baseline_values, _batch_size, _engine, _pearson, _Scores, _seed

__all__ = [
    "MonotonicityResult", "MonotonicityCorrelationResult", "SelectivityResult", "SensitivityNResult",
    "IROFResult", "ROADResult", "MuFidelityResult", "monotonicity", "monotonicity_correlation",
    "monotonicity_correlation_values", "selectivity", "sensitivity_n", "irof", "road", "mu_fidelity",
    "road_imputation", "mu_fidelity_masks", "sensitivity_n_subsets",
]


# -- shared ----------------------------------------------------------------------------------------
def _check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"`{name}` must be True or False. " + received(name, value))
    return bool(value)


def _check_choice(value, name: str, choices) -> str:
    if not (isinstance(value, str) and value in choices):
        raise InvalidInputError(f"`{name}` must be one of {list(choices)}. " + received(name, value))
    return value


def _check_fraction(value, name: str, low_open: bool = True, high_open: bool = True) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and np.isfinite(value)
    if ok:
        ok = (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise InvalidInputError(f"`{name}` must be a number in {interval}. " + received(name, value))
    return float(value)


def _order_ranks(maps: np.ndarray, descending: bool) -> np.ndarray:
    """``(N, H, W)`` each pixel's rank (0 = first) in the order of its map's values; values equal up
    to rounding (:func:`~tfattr.metrics._common.rank_keys`) rank by position."""
    num = maps.shape[0]
    flat = maps.reshape(num, -1)
    order = descending_order(flat if descending else -flat, axis=1)
    ranks = np.empty_like(order)
    ranks[np.arange(num)[:, None], order] = np.arange(flat.shape[1])[None]
    return ranks.reshape(maps.shape)


def _rank_points(x, rows: ChunkRows):
    """Row ``k`` of image ``n``: ``x_n`` with the pixels whose rank is below ``t_k`` (all channels) at
    image ``n``'s baseline value, or with the others at it (``keep`` ≠ 0: insertion into the baseline).
    Context: ``[K, keep, t_0 … t_{K−1}, baseline_0 … baseline_{N−1}, ranks (N·H·W)]``."""
    context = tf.reshape(rows.context, [-1])
    steps = tf.cast(context[0], tf.int32)
    num = tf.shape(x)[0]
    thresholds = context[2 : 2 + steps]
    baselines = context[2 + steps : 2 + steps + num]
    ranks = tf.reshape(context[2 + steps + num :], tf.stack([num, tf.shape(x)[1], tf.shape(x)[2], 1]))
    below = tf.gather(ranks, rows.example) < tf.reshape(tf.gather(thresholds, rows.position), (-1, 1, 1, 1))
    replace = tf.math.logical_xor(below, context[1] > 0)
    points = tf.gather(x, rows.example)
    baseline = tf.reshape(tf.cast(tf.gather(baselines, rows.example), x.dtype), (-1, 1, 1, 1))
    return tf.where(replace, baseline * tf.ones_like(points), points)


def _rank_context(ranks: np.ndarray, thresholds: np.ndarray, baselines: np.ndarray, keep: bool) -> np.ndarray:
    thresholds = np.asarray(thresholds, np.float64)
    return np.concatenate([[len(thresholds), 1.0 if keep else 0.0], thresholds, np.asarray(baselines, np.float64),
                           ranks.reshape(-1).astype(np.float64)])


def _rank_rows(scores: _Scores, x: np.ndarray, ranks: np.ndarray, thresholds, baselines, keep: bool,
               counts: Optional[np.ndarray] = None) -> np.ndarray:
    """Scores of the rank-threshold rows: ``(N, K)`` (``counts``: rows per image, the rest ``nan``)."""
    num, steps = int(x.shape[0]), len(thresholds)
    counts = np.full(num, steps) if counts is None else np.asarray(counts)
    rows = ForwardRows(np.repeat(np.arange(num), counts))
    engine = _engine(scores.model, scores.targets.scorer, scores.batch_size, scores.verbose)
    result = engine.run(tf.convert_to_tensor(x), rows, _rank_points, scores.targets.indices,
                        context=_rank_context(ranks, thresholds, baselines, keep))
    out = np.full((num, steps), np.nan)
    out[np.arange(steps)[None] < counts[:, None]] = result.row_scores
    return out


def _prepare(model, images, attributions, target, batch_size, verbose, output):
    batch, x, _ = check_images(model, images)
    maps = maps_for_images(attributions, batch)
    scores = _Scores(model, x, explained_target(attributions, target), _batch_size(batch_size), verbose, output)
    return x, maps, scores


# -- monotonicity ----------------------------------------------------------------------------------
@dataclass
class MonotonicityResult:
    """What :func:`monotonicity` returns (``N`` images, ``K`` steps).

    Attributes:
        monotonic: ``(N,)`` bool: the curve never decreases (higher, True, is better).
        curve: ``(N, K)`` ``f`` after step ``k`` inserted its pixels into the baseline image.
        targets: ``(N,)`` the classes scored (``None`` for a callable target).
    """

    monotonic: np.ndarray
    curve: np.ndarray
    targets: Optional[np.ndarray]


def monotonicity(model, images, attributions, target=None, features_in_step: int = 1,
                 baseline: Union[str, float] = "black", absolute: bool = True, batch_size: Union[int, str] = "auto",
                 verbose: Union[int, bool, str] = "auto", output=None) -> MonotonicityResult:
    """Monotonicity (Arya et al. 2019, "One explanation does not fit all", AIX360's
    ``monotonicity_metric``; Quantus ``Monotonicity``). Higher is better: True for a map whose
    order of importance makes the score rise step by step.

    Start from the baseline image ``x⁰`` (every pixel at the baseline value) and insert the
    pixels of ``x`` in order of increasing attribution, ``features_in_step`` pixels a step:
    ``x^k`` holds ``x``'s values at the ``k·s`` least important pixels. The map is monotonic when
    ``f(x^1) ≤ f(x^2) ≤ … ≤ f(x^K)``, ``K = ⌈H·W / s⌉`` (the last step is ``x`` itself).

    Quantus 0.6 differs: its default perturbation writes the *baseline* into the baseline image at
    each step (``batch_baseline_replacement_by_indices``), so its curve is flat and every map is
    monotonic; its loop with a perturbation that inserts ``x``'s values (what AIX360 and the paper
    do) equals this function (tests/test_metrics_quantus_faith.py). Quantus ranks the
    ``(channel, pixel)`` entries of a map broadcast over the channels; here pixels are ranked
    (the same for one-channel images).

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps.
        target: ``None`` (top-1 class), an int, ints, or a callable ``outputs -> (batch,)``.
        features_in_step: pixels inserted per step ``s`` (Quantus's default 1).
        baseline: ``"black"`` (each image's minimum, Quantus's default), ``"white"``, ``"mean"`` or a number.
        absolute: order by ``|φ|`` (Quantus's default ``abs=True``) or by the signed ``φ``.
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name).

    Returns:
        :class:`MonotonicityResult`.

    Example:
        >>> monotonicity(model, images, expl.attributions, features_in_step=16).monotonic
    """
    x, maps, scores = _prepare(model, images, attributions, target, batch_size, verbose, output)
    pixels = maps.shape[1] * maps.shape[2]
    step = check_positive_int(features_in_step, "features_in_step")
    if step > pixels:
        raise InvalidInputError(f"`features_in_step` must be at most the number of pixels H·W = {pixels}. "
                                + received("features_in_step", features_in_step))
    absolute = _check_bool(absolute, "absolute")
    values = _baseline_values(baseline, x)
    ranks = _order_ranks(np.abs(maps) if absolute else maps, descending=False)
    thresholds = np.minimum(step * np.arange(1, math.ceil(pixels / step) + 1), pixels)
    curve = _rank_rows(scores, x, ranks, thresholds, values, keep=True)
    return MonotonicityResult(monotonic=np.all(np.diff(curve, axis=1) >= 0, axis=1), curve=curve,
                              targets=scores.targets.indices)


# -- monotonicity correlation ----------------------------------------------------------------------
@dataclass
class MonotonicityCorrelationResult:
    """What :func:`monotonicity_correlation` returns (``N`` images, ``K`` groups, ``M`` samples).

    Attributes:
        correlation: ``(N,)`` Spearman correlation of ``attribution_sums`` and ``variances`` (higher is better).
        attribution_sums: ``(N, K)`` ``Σ_{i∈group k} φ_i`` (of ``|φ|`` with ``absolute``).
        variances: ``(N, K)`` ``mean_j (f(x̃_kj) − f(x))² / f(x)²`` (``f(x)²`` taken as 1 where
            ``|f(x)| < eps``, as Quantus).
        targets: ``(N,)`` the classes scored (``None`` for a callable target).
    """

    correlation: np.ndarray
    attribution_sums: np.ndarray
    variances: np.ndarray
    targets: Optional[np.ndarray]


def monotonicity_correlation_values(seed: int, rows, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """The replacement value of each row of :func:`monotonicity_correlation` (row ``k·M + j``: group
    ``k``, sample ``j``; the same for every image): uniform in ``[low, high)`` from the seed."""
    draws = compiled_row_draws("uniform", seed, np.asarray(rows), (1,), dtype=tf.float64,
                               stream=STREAM_MONOTONICITY_CORRELATION)[:, 0]
    return low + (high - low) * draws


def _band_points(x, rows: ChunkRows):
    """Row ``k·M + j`` of image ``n``: ``x_n`` with the pixels ranked ``k·s … (k+1)·s − 1`` (all
    channels) at a seeded uniform value. Context: ``[seed, s, M, low, high, ranks (N·H·W)]``."""
    context = tf.reshape(rows.context, [-1])
    seed = tf.cast(context[0], tf.int64)
    step, samples = context[1], tf.cast(context[2], tf.int32)
    num = tf.shape(x)[0]
    ranks = tf.reshape(context[5:], tf.stack([num, tf.shape(x)[1], tf.shape(x)[2], 1]))
    group = tf.cast(rows.position // samples, tf.float64)
    inside = tf.equal(tf.floor(tf.gather(ranks, rows.example) / step), tf.reshape(group, (-1, 1, 1, 1)))
    draws = row_uniform(seed, rows.position, (1,), dtype=tf.float64, stream=STREAM_MONOTONICITY_CORRELATION)
    values = tf.cast(context[3] + (context[4] - context[3]) * draws, x.dtype)
    points = tf.gather(x, rows.example)
    return tf.where(inside, tf.reshape(values, (-1, 1, 1, 1)) * tf.ones_like(points), points)


def monotonicity_correlation(model, images, attributions, target=None, features_in_step: int = 1,
                             nr_samples: int = 100, absolute: bool = True, low: float = 0.0, high: float = 1.0,
                             eps: float = 1e-5, seed: Optional[int] = 0, batch_size: Union[int, str] = "auto",
                             verbose: Union[int, bool, str] = "auto", output=None) -> MonotonicityCorrelationResult:
    """Monotonicity correlation (Nguyen & Martínez, "On quantitative aspects of model
    interpretability", 2020, §3.2; Quantus ``MonotonicityCorrelation``). Higher is better (in [−1, 1]).

    The pixels are grouped in order of increasing attribution, ``features_in_step`` pixels a group;
    each group ``k`` alone is set to a uniform random value (``M = nr_samples`` times), and the
    score's normalised variance ``v_k = mean_j (f(x̃_kj) − f(x))² / f(x)²`` is compared with the
    group's attribution ``a_k = Σ_{i∈k} φ_i``: ``Spearman(a, v)`` per image (a faithful map gives
    larger effects to larger attributions).

    Quantus's defaults: ``features_in_step=1``, ``nr_samples=100``, ``abs=True``, ``eps=1e-5``,
    baseline ``"uniform"`` in ``[0, 1)``. Quantus draws a value per image from ``np.random``;
    here row ``k·M + j``'s value comes from ``seed`` and the row alone, the same for every image
    (:func:`monotonicity_correlation_values`); with the same values injected the two are equal.
    The work is ``⌈H·W/s⌉ · M`` forward passes per image: choose ``features_in_step`` accordingly.

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps.
        target: ``None`` (top-1 class), an int, ints, or a callable ``outputs -> (batch,)``.
        features_in_step: pixels per group ``s``.
        nr_samples: ``M`` random values per group.
        absolute: order and sum ``|φ|`` (Quantus's default) or the signed ``φ``.
        low: lower bound of the uniform values.
        high: upper bound (> ``low``).
        eps: ``|f(x)|`` below which the variance is not normalised.
        seed: seed of the values (``None``: fresh).
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name).

    Returns:
        :class:`MonotonicityCorrelationResult`.

    Example:
        >>> monotonicity_correlation(model, images, expl.attributions, features_in_step=64, nr_samples=10).correlation
    """
    from scipy.stats import spearmanr

    x, maps, scores = _prepare(model, images, attributions, target, batch_size, verbose, output)
    num, height, width = maps.shape
    pixels = height * width
    step = check_positive_int(features_in_step, "features_in_step")
    if step > pixels:
        raise InvalidInputError(f"`features_in_step` must be at most the number of pixels H·W = {pixels}. "
                                + received("features_in_step", features_in_step))
    samples = check_positive_int(nr_samples, "nr_samples")
    absolute = _check_bool(absolute, "absolute")
    for name, value in (("low", low), ("high", high), ("eps", eps)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(
                value):
            raise InvalidInputError(f"`{name}` must be a finite number. " + received(name, value))
    if not high > low:
        raise InvalidInputError("`high` must be above `low`. " + received("(low, high)", (low, high)))
    seed = _seed(seed)
    phi = np.abs(maps) if absolute else maps
    ranks = _order_ranks(phi, descending=False)
    groups = math.ceil(pixels / step)
    context = np.concatenate([[seed, step, samples, float(low), float(high)], ranks.reshape(-1).astype(np.float64)])
    row_scores = scores.rows(x, groups * samples, _band_points, context).reshape(num, groups, samples)
    scale = np.where(np.abs(scores.fx) >= eps, 1.0 / np.where(scores.fx != 0, np.abs(scores.fx), 1.0), 1.0) ** 2
    variances = ((row_scores - scores.fx[:, None, None]) ** 2).mean(axis=2) * scale[:, None]
    group_of = ranks.reshape(num, pixels) // step
    sums = np.stack([np.bincount(group_of[i], weights=phi[i].reshape(-1), minlength=groups) for i in range(num)])
    correlation = np.array([spearmanr(sums[i], variances[i])[0] for i in range(num)])
    return MonotonicityCorrelationResult(correlation=correlation, attribution_sums=sums, variances=variances,
                                         targets=scores.targets.indices)


# -- selectivity -----------------------------------------------------------------------------------
@dataclass
class SelectivityResult:
    """What :func:`selectivity` returns (``N`` images, ``P`` patches).

    Attributes:
        auc: ``(N,)`` trapezoid area under ``curve`` with unit spacing (lower is better).
        curve: ``(N, P)`` ``f`` after the ``k + 1`` most relevant patches are removed.
        order: ``(N, P)`` the patches (row-major index on the padded grid) in removal order.
        targets: ``(N,)`` the classes scored (``None`` for a callable target).
    """

    auc: np.ndarray
    curve: np.ndarray
    order: np.ndarray
    targets: Optional[np.ndarray]


def _patch_index(height: int, width: int, size: int) -> np.ndarray:
    """``(H, W)`` each pixel's patch on Quantus's grid: the image padded to multiples of ``size``
    (⌊pad/2⌋ before, ⌈pad/2⌉ after), patches numbered row-major."""
    def axis(length):
        pad = (-length) % size
        return (np.arange(length) + pad // 2) // size, (length + pad) // size

    rows, _ = axis(height)
    cols, across = axis(width)
    return rows[:, None] * across + cols[None, :]


def selectivity(model, images, attributions, target=None, patch_size: int = 8,
                baseline: Union[str, float] = "black", batch_size: Union[int, str] = "auto",
                verbose: Union[int, bool, str] = "auto", output=None) -> SelectivityResult:
    """Selectivity (Montavon, Samek & Müller, Digital Signal Processing 2018, §4.1; Quantus
    ``Selectivity``). Lower is better: a faithful map's first patches make the score fall fast.

    The image is cut into ``patch_size × patch_size`` patches (padded as Quantus pads: the grid
    covers the image padded to a multiple of the patch size, half the padding before); patches
    are removed (set to the baseline, all channels) cumulatively in decreasing order of their
    attribution sum ``Σ_{i∈patch} φ_i``, and the curve ``f(x^{(k)})``, ``k = 1 … P``, is scored;
    ``auc`` is its trapezoid area with unit spacing (Quantus's ``get_auc_score`` averages it).

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps.
        target: ``None`` (top-1 class), an int, ints, or a callable ``outputs -> (batch,)``.
        patch_size: the patch side (Quantus's default 8).
        baseline: ``"black"`` (each image's minimum, Quantus's default), ``"white"``, ``"mean"`` or a number.
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name).

    Returns:
        :class:`SelectivityResult`.

    Example:
        >>> selectivity(model, images, expl.attributions, patch_size=4).auc
    """
    x, maps, scores = _prepare(model, images, attributions, target, batch_size, verbose, output)
    num, height, width = maps.shape
    size = check_positive_int(patch_size, "patch_size")
    if size > min(height, width):
        raise InvalidInputError(f"`patch_size` must be at most the image's smaller side {min(height, width)}. "
                                + received("patch_size", patch_size))
    values = _baseline_values(baseline, x)
    patch = _patch_index(height, width, size)
    patches = int(patch.max()) + 1
    sums = np.zeros((num, patches))
    for n in range(num):
        sums[n] = np.bincount(patch.reshape(-1), weights=maps[n].reshape(-1), minlength=patches)
    order = descending_order(sums, axis=1)
    patch_rank = np.empty_like(order)
    patch_rank[np.arange(num)[:, None], order] = np.arange(patches)[None]
    ranks = patch_rank[:, patch]  # (N, H, W): each pixel's patch's rank
    curve = _rank_rows(scores, x, ranks, np.arange(1, patches + 1), values, keep=False)
    return SelectivityResult(auc=np.trapezoid(curve, axis=1), curve=curve, order=order,
                             targets=scores.targets.indices)


# -- sensitivity-n ---------------------------------------------------------------------------------
@dataclass
class SensitivityNResult:
    """What :func:`sensitivity_n` returns (``N`` images, ``K`` values of ``n``, ``R`` runs).

    Attributes:
        correlation: ``subsets="random"``: ``(N, K)`` Pearson correlation per image and ``n`` over
            the ``R`` subsets; ``subsets="top"``: ``(K,)`` the correlation over the images for each
            ``n`` (Quantus's). Higher is better.
        n: ``(K,)`` the subset sizes.
        attribution_sums: ``(N, K, R)`` ``Σ_{i∈S} φ_i`` (``R = 1`` for ``"top"``).
        score_drops: ``(N, K, R)`` ``f(x) − f(x_{S → baseline})``.
        targets: ``(N,)`` the classes scored (``None`` for a callable target).
    """

    correlation: np.ndarray
    n: np.ndarray
    attribution_sums: np.ndarray
    score_drops: np.ndarray
    targets: Optional[np.ndarray]


def _sized_subset_mask(draws, sizes):
    """1 at the ``sizes[r]`` smallest draws of row ``r``."""
    ordered = tf.sort(draws, axis=-1)
    threshold = tf.gather(ordered, tf.reshape(sizes - 1, (-1, 1)), batch_dims=1)
    return tf.cast(draws <= threshold, draws.dtype)


def sensitivity_n_subsets(seed: int, n_values, runs: int, pixels: int) -> np.ndarray:
    """``(K, R, pixels)`` bool: :func:`sensitivity_n`'s random subsets (row ``k·R + r`` of every image
    takes the ``n_k`` pixels with the smallest of its seeded uniform draws)."""
    n_values = np.asarray(n_values, np.int32)
    positions = np.arange(len(n_values) * runs)
    draws = compiled_row_draws("uniform", seed, positions, (pixels,), dtype=tf.float64, stream=STREAM_SENSITIVITY_N)
    sizes = tf.constant(np.repeat(n_values, runs))
    return (_sized_subset_mask(tf.constant(draws), sizes).numpy() > 0).reshape(len(n_values), runs, pixels)


#: rows of :func:`sensitivity_n`'s subsets drawn on the host at once (64 · H·W float64: 25 MB at 224²)
_SUBSET_BLOCK = 64


def _subset_sums(flat: np.ndarray, seed: int, n_values: np.ndarray, runs: int) -> np.ndarray:
    """``(N, K, R)`` attribution sums over :func:`sensitivity_n_subsets`'s subsets, drawn a block of
    rows at a time (all ``K·R`` subsets at once would hold ``K·R·H·W`` float64: 4 GB at 224² for
    ``K = 10``, ``R = 1000``)."""
    num, pixels = flat.shape
    total = len(n_values) * runs
    sizes = np.repeat(np.asarray(n_values, np.int32), runs)
    sums = np.empty((num, total))
    for start in range(0, total, _SUBSET_BLOCK):
        stop = min(start + _SUBSET_BLOCK, total)
        draws = compiled_row_draws("uniform", seed, np.arange(start, stop), (pixels,), dtype=tf.float64,
                                   stream=STREAM_SENSITIVITY_N)
        masks = _sized_subset_mask(tf.constant(draws), tf.constant(sizes[start:stop])).numpy()
        sums[:, start:stop] = flat @ masks.T
    return sums.reshape(num, len(n_values), runs)


def _sized_subset_points(x, rows: ChunkRows):
    """Row ``k·R + r`` of image ``n``: ``x_n`` with a seeded subset of ``n_k`` pixels at the image's
    baseline. Context: ``[seed, R, K, n_0 … n_{K−1}, baseline_0 … baseline_{N−1}]``."""
    height, width = int(x.shape[1]), int(x.shape[2])
    context = tf.reshape(rows.context, [-1])
    seed = tf.cast(context[0], tf.int64)
    runs = tf.cast(context[1], tf.int32)
    count = tf.cast(context[2], tf.int32)
    sizes = tf.cast(tf.gather(context[3 : 3 + count], rows.position // runs), tf.int32)
    draws = row_uniform(seed, rows.position, (height * width,), dtype=tf.float64, stream=STREAM_SENSITIVITY_N)
    mask = tf.reshape(_sized_subset_mask(draws, sizes), (-1, height, width, 1)) > 0
    baseline = tf.cast(tf.gather(context[3 + count :], rows.example), x.dtype)
    points = tf.gather(x, rows.example)
    return tf.where(mask, tf.reshape(baseline, (-1, 1, 1, 1)) * tf.ones_like(points), points)


def sensitivity_n(model, images, attributions, target=None, n: Union[int, Sequence[int], None] = None,
                  runs: int = 100, subsets: str = "random", baseline: Union[str, float] = "black",
                  seed: Optional[int] = 0, batch_size: Union[int, str] = "auto",
                  verbose: Union[int, bool, str] = "auto", output=None) -> SensitivityNResult:
    """Sensitivity-n (Ancona, Ceolini, Öztireli & Gross, ICLR 2018, Def. 4). Higher is better (in [−1, 1]).

    A map is sensitive-n when, over subsets ``S`` of ``n`` pixels,
    ``Σ_{i∈S} φ_i = f(x) − f(x_{S → baseline})``. The paper measures, for each ``n``, Pearson's
    correlation of the two sides over ``R`` subsets drawn uniformly without replacement
    (``subsets="random"``, per image; their Fig. 3 plots it against ``n``). For a linear model,
    gradient × input with baseline 0 is sensitive-n for every ``n``: correlation 1.

    ``subsets="top"`` is Quantus 0.6's ``SensitivityN``: for each ``n``, the single subset of
    the ``n`` highest-attributed pixels, and the correlation taken *over the images* of the batch
    (its ``n`` values are ``features_in_step · k``, ``k = 1 …``, up to ``n_max_percentage`` of the
    pixels: pass ``n=[s, 2s, …]``); it is deterministic but depends on the batch.

    Randomness: subset ``r`` of ``n_k`` comes from ``seed`` and the row ``k·R + r`` alone, the same
    for every image (:func:`sensitivity_n_subsets`), drawn on the device in each chunk.

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps.
        target: ``None`` (top-1 class), an int, ints, or a callable ``outputs -> (batch,)``.
        n: the subset sizes (an int or ints in ``1 … H·W``); ``None``: ten sizes log-spaced from 1
            to 80% of the pixels (Quantus's ``n_max_percentage=0.8``).
        runs: ``R`` subsets per ``n`` (≥ 2; ``"random"`` only).
        subsets: ``"random"`` (the paper's) or ``"top"`` (Quantus 0.6's).
        baseline: ``"black"`` (each image's minimum, Quantus's default), ``"white"``, ``"mean"`` or a number.
        seed: seed of the subsets (``None``: fresh).
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name).

    Returns:
        :class:`SensitivityNResult`.

    Example:
        >>> sensitivity_n(model, images, expl.attributions, n=[1, 4, 16], runs=50).correlation
    """
    x, maps, scores = _prepare(model, images, attributions, target, batch_size, verbose, output)
    num, height, width = maps.shape
    pixels = height * width
    if n is None:
        n_values = np.unique(np.round(np.geomspace(1, max(1, int(0.8 * pixels)), 10)).astype(np.int64))
    else:
        raw = np.atleast_1d(np.asarray(n, dtype=object))
        if raw.ndim != 1 or not len(raw) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 1 <= v <= pixels for v in raw):
            raise InvalidInputError(f"`n` must be an int or ints in 1 … H·W = {pixels}. " + received("n", n))
        n_values = np.asarray(raw, np.int64)
    mode = _check_choice(subsets, "subsets", ("random", "top"))
    values = _baseline_values(baseline, x)
    flat = maps.reshape(num, pixels)
    if mode == "top":
        row_scores = _rank_rows(scores, x, _order_ranks(maps, descending=True), n_values, values, keep=False)
        ranks = _order_ranks(maps, descending=True).reshape(num, pixels)
        sums = np.stack([(flat * (ranks < k)).sum(axis=1) for k in n_values], axis=1)[..., None]
        drops = (scores.fx[:, None] - row_scores)[..., None]
        correlation = _pearson(sums[..., 0].T, drops[..., 0].T)
    else:
        count = check_positive_int(runs, "runs", minimum=2)
        seed = _seed(seed)
        context = np.concatenate([[seed, count, len(n_values)], n_values, values])
        row_scores = scores.rows(x, len(n_values) * count, _sized_subset_points, context)
        sums = _subset_sums(flat, seed, n_values, count)
        drops = (scores.fx[:, None] - row_scores).reshape(num, len(n_values), count)
        correlation = _pearson(sums, drops)
    return SensitivityNResult(correlation=correlation, n=n_values, attribution_sums=sums, score_drops=drops,
                              targets=scores.targets.indices)


# -- IROF ------------------------------------------------------------------------------------------
@dataclass
class IROFResult:
    """What :func:`irof` returns (``N`` images, up to ``S`` segments each).

    Attributes:
        aoc: ``(N,)`` area over the curve ``S_n − trapz(curve)`` (higher is better).
        curve: ``(N, S)`` ``f(x^{(k)}) / f(x)`` after the ``k`` most relevant segments are removed
            (``nan`` beyond an image's ``S_n`` segments).
        segments: ``(N, H, W)`` int segment labels ``0 … S_n − 1``.
        targets: ``(N,)`` the classes scored (``None`` for a callable target).
    """

    aoc: np.ndarray
    curve: np.ndarray
    segments: np.ndarray
    targets: Optional[np.ndarray]


def _slic_segments(x: np.ndarray) -> np.ndarray:
    from skimage.segmentation import slic

    return np.stack([slic(image.astype(np.float64), start_label=0) for image in x])


def irof(model, images, attributions, target=None, segments=None, baseline: Union[str, float] = "mean",
         batch_size: Union[int, str] = "auto", verbose: Union[int, bool, str] = "auto", output=None) -> IROFResult:
    """Iterative removal of features (Rieger & Hansen, "IROF: a low resource evaluation metric for
    explanation methods", ICLR 2020 workshop; Quantus ``IROF``). Higher is better.

    The image is split into superpixels (``skimage.segmentation.slic(image, start_label=0)``
    with its defaults, as Quantus; or the ``segments`` given); segments are removed (set to the
    baseline, all channels) cumulatively in decreasing order of their mean attribution, and the
    score ratios ``q_k = f(x^{(k)}) / f(x)``, ``k = 1 … S``, form a curve whose area over it is
    ``IROF = S − Σ_trapezoid q`` (Quantus's unit spacing). The scores must be positive
    (probabilities: Quantus applies a softmax by default): an image with ``f(x) ≤ 0`` is an error
    (Quantus returns a number whose ratios have the wrong sign).

    Quantus 0.6's ``"mean"`` baseline is the mean of the whole *batch* of already perturbed images at
    each step (so an image's value depends on its batch and steps); here ``"mean"`` is each image's
    own mean (over pixels and channels), fixed. With a number as baseline, Quantus's per-image
    result equals this function's (a batch of images with different segment counts pads the
    shorter curves with zeros there, which adds ``q_S / 2`` to their trapezoid; per image here).

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps.
        target: ``None`` (top-1 class), an int, ints, or a callable ``outputs -> (batch,)``.
        segments: ``None`` (SLIC as Quantus) or ``(N, H, W)`` integer labels ``0 … S_n − 1``.
        baseline: ``"mean"`` (each image's mean), ``"black"``, ``"white"`` or a number.
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name).

    Returns:
        :class:`IROFResult`.

    Example:
        >>> irof(softmax_model, images, expl.attributions).aoc
    """
    x, maps, scores = _prepare(model, images, attributions, target, batch_size, verbose, output)
    num, height, width = maps.shape
    if segments is None:
        labels = _slic_segments(x)
    else:
        array = as_array(segments, "segments")
        if array.shape == (height, width) and num == 1:
            array = array[None]
        if array.shape != (num, height, width) or np.any(array != np.round(array)) or array.min() < 0:
            raise InvalidInputError(f"`segments` must be non-negative integer labels of shape {(num, height, width)}. "
                                    + received("segments.shape", tuple(np.shape(segments))))
        if array.max() >= height * width:  # every label needs a pixel; checked before any bincount over labels
            raise InvalidInputError(f"`segments` labels must be 0 … S−1 with S ≤ H·W = {height * width}. "
                                    + received("max(segments)", int(array.max())))
        labels = array.astype(np.int64)
    values = _baseline_values(baseline, x)
    if not np.all(scores.fx > 0):  # the curve is a ratio to f(x): its sign and scale need f(x) > 0
        first = int(np.flatnonzero(~(scores.fx > 0))[0])
        raise InvalidInputError(
            "IROF divides the scores by f(x): `model` must give the target a positive score (probabilities: "
            "a model ending in a softmax, as Quantus's softmax=True; not logits). "
            + received(f"f(images[{first}])", float(scores.fx[first])))
    counts = np.array([int(labels[i].max()) + 1 for i in range(num)])
    ranks = np.empty((num, height, width), np.int64)
    for i in range(num):
        flat = labels[i].reshape(-1)
        present = np.bincount(flat, minlength=counts[i])
        if np.any(present == 0):
            raise InvalidInputError("`segments` must use every label 0 … S−1 of each image. "
                                    + received(f"segments[{i}] labels without pixels",
                                               np.flatnonzero(present == 0)[:10].tolist()))
        means = np.bincount(flat, weights=maps[i].reshape(-1), minlength=counts[i]) / present
        order = descending_order(means)
        segment_rank = np.empty_like(order)
        segment_rank[order] = np.arange(counts[i])
        ranks[i] = segment_rank[labels[i]]
    steps = int(counts.max())
    row_scores = _rank_rows(scores, x, ranks, np.arange(1, steps + 1), values, keep=False, counts=counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        curve = row_scores / scores.fx[:, None]
    aoc = np.array([counts[i] - np.trapezoid(curve[i, : counts[i]]) for i in range(num)])
    return IROFResult(aoc=aoc, curve=curve, segments=labels, targets=scores.targets.indices)


# -- ROAD ------------------------------------------------------------------------------------------
@dataclass
class ROADResult:
    """What :func:`road` returns (``N`` images, ``P`` percentages).

    Attributes:
        accuracy: ``(P,)`` fraction of images still classified as their target after each
            percentage is imputed (Quantus's value; MoRF: lower is better, LeRF: higher is better).
        correct: ``(N, P)`` bool: the imputed image's top-1 class is the target.
        classes: ``(N, P)`` the imputed images' top-1 classes.
        percentages: ``(P,)`` the percentages of pixels imputed.
        targets: ``(N,)`` the classes.
    """

    accuracy: np.ndarray
    correct: np.ndarray
    classes: np.ndarray
    percentages: np.ndarray
    targets: np.ndarray


# neighbour offsets (row, column) and weights of the noisy linear imputation (Rong et al. 2022)
_ROAD_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
                    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def road_imputation(image: np.ndarray, removed: np.ndarray, noise: float = 0.0,
                    generator: Optional[np.random.Generator] = None) -> np.ndarray:
    """Noisy linear imputation of ROAD (Rong et al., ICML 2022, §4; their ``road_evaluation`` code,
    Quantus ``noisy_linear_imputation``).

    Each removed pixel ``i`` takes the weighted mean of its 8 neighbours inside the image
    (weight 1/6 for the 4 direct ones, 1/12 for the diagonals, normalised by the weights present),
    removed neighbours being unknowns too: the sparse system
    ``Σ_j w_ij (v_j − v_i) = 0`` over the removed pixels, known neighbours on the right-hand side, is
    solved for all channels at once (``scipy.sparse.linalg.spsolve``); then ``noise · ε``
    (standard normal from ``generator``) is added to the imputed values.

    Args:
        image: ``(H, W, C)`` float array.
        removed: ``(H, W)`` bool, the pixels to impute (not all of them).
        noise: standard deviation of the added noise.
        generator: the NumPy generator of the noise (needed when ``noise > 0``).

    Returns:
        ``(H, W, C)`` float64 image with the removed pixels imputed.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    height, width, channels = image.shape
    flat = image.reshape(height * width, channels).astype(np.float64)
    unknown = np.flatnonzero(removed.reshape(-1))
    variable = np.full(height * width, -1)
    variable[unknown] = np.arange(len(unknown))
    rows_of, cols_of = unknown // width, unknown % width
    right = np.zeros((len(unknown), channels))
    present = np.zeros(len(unknown))
    entries_i, entries_j, entries_w = [], [], []
    for (d_row, d_col), weight in _ROAD_NEIGHBOURS:
        r, c = rows_of + d_row, cols_of + d_col
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        present[inside] += weight
        neighbour = r[inside] * width + c[inside]
        which = np.flatnonzero(inside)
        is_unknown = variable[neighbour] >= 0
        right[which[~is_unknown]] -= weight * flat[neighbour[~is_unknown]]
        entries_i.append(which[is_unknown])
        entries_j.append(variable[neighbour[is_unknown]])
        entries_w.append(np.full(int(is_unknown.sum()), weight))
    entries_i.append(np.arange(len(unknown)))
    entries_j.append(np.arange(len(unknown)))
    entries_w.append(-present)
    size = len(unknown)
    matrix = coo_matrix((np.concatenate(entries_w), (np.concatenate(entries_i), np.concatenate(entries_j))),
                        shape=(size, size)).tocsc()
    solution = spsolve(matrix, right)
    solution = np.asarray(solution, np.float64).reshape(size, channels)
    if noise:
        solution = solution + noise * generator.standard_normal(solution.shape)
    out = flat.copy()
    out[unknown] = solution
    return out.reshape(height, width, channels)


def _gather_points(x, rows: ChunkRows):
    """Row ``r`` is example ``r`` of ``x`` as it is (the images imputed on the host)."""
    return tf.gather(x, rows.example)


def road(model, images, attributions, target=None, percentages: Sequence[float] = tuple(range(1, 100, 2)),
         order: str = "morf", noise: float = 0.01, seed: Optional[int] = 0, batch_size: Union[int, str] = "auto",
         verbose: Union[int, bool, str] = "auto", output=None) -> ROADResult:
    """RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, "A consistent and efficient
    evaluation strategy for attribution methods", ICML 2022; Quantus ``ROAD``).

    For each percentage ``p``, the ``⌊H·W·p/100⌋`` most (``order="morf"``) or least (``"lerf"``)
    relevant pixels are removed and imputed by noisy linear imputation (:func:`road_imputation`:
    each removed pixel the weighted mean of its neighbours, plus ``noise`` Gaussian noise, which
    hides the removal's shape from the model); the result is whether the imputed image is still
    classified as its target. MoRF: a faithful map makes the accuracy drop fast (lower is
    better); LeRF: it stays high (higher is better). Quantus's defaults: ``percentages = 1, 3, …,
    99``, ``noise=0.01``, MoRF; Quantus returns the accuracy per percentage (``accuracy`` here).

    Randomness: the noise at percentage index ``j`` comes from ``seed`` and ``j`` (NumPy, on the
    host, where the imputation is solved), the same draws for every image, so an image's result does
    not depend on the other images of its batch. ``noise=0`` is deterministic and
    equals Quantus with ``noise=0`` (whose noise is ``np.random`` otherwise).

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps.
        target: ``None`` (top-1 class), an int or ints (a class per image: ROAD checks the top-1).
        percentages: percentages of pixels to remove, each in (0, 100).
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
        noise: standard deviation of the imputation noise (≥ 0).
        seed: seed of the noise (``None``: fresh).
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name).

    Returns:
        :class:`ROADResult`.

    Example:
        >>> road(model, images, expl.attributions, percentages=[10, 50, 90]).accuracy
    """
    if callable(target) and not isinstance(target, (np.ndarray, tf.Tensor)):
        raise InvalidInputError("ROAD checks the top-1 class: `target` must be None, an int or ints. "
                                + received("target", target))
    x, maps, scores = _prepare(model, images, attributions, target, batch_size, verbose, output)
    num, height, width = maps.shape
    pixels = height * width
    raw = np.atleast_1d(np.asarray(percentages, dtype=object))
    if raw.ndim != 1 or not len(raw) or not all(
            isinstance(p, (int, float, np.integer, np.floating)) and not isinstance(p, bool) and 0 < p < 100
            for p in raw):
        raise InvalidInputError("`percentages` must be numbers in (0, 100). " + received("percentages", percentages))
    percent = np.asarray(raw, np.float64)
    mode = _check_choice(order, "order", ("morf", "lerf"))
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)) or not (
            np.isfinite(noise) and noise >= 0):
        raise InvalidInputError("`noise` must be a number ≥ 0. " + received("noise", noise))
    seed = _seed(seed)
    ranks = _order_ranks(maps, descending=mode == "morf").reshape(num, pixels)
    counts = [int(pixels * p / 100) for p in percent]  # Quantus's int(a_size * p / 100)
    engine = _engine(scores.model, scores.targets.scorer, scores.batch_size, scores.verbose)
    block = max(1, 64 // num)  # percentages imputed and scored together (≤ ~64 imputed images held at once)
    classes = np.empty((num, len(percent)), np.int64)
    for start in range(0, len(percent), block):
        stop = min(start + block, len(percent))
        imputed = np.empty((num * (stop - start),) + x.shape[1:], x.dtype)
        for j in range(start, stop):
            for i in range(num):
                removed = (ranks[i] < counts[j]).reshape(height, width)
                image = x[i]
                if removed.any():
                    generator = np.random.default_rng([seed, STREAM_ROAD, j])  # not i: batch-independent
                    image = road_imputation(x[i], removed, float(noise), generator)
                imputed[(j - start) * num + i] = image
        # a negative class scores each row's top-1 and reports it
        result = engine.run(tf.convert_to_tensor(imputed), ForwardRows.repeat(len(imputed), 1), _gather_points,
                            np.full(len(imputed), -1))
        classes[:, start:stop] = np.asarray(result.row_classes).reshape(stop - start, num).T
    targets = np.asarray(scores.targets.indices)
    correct = classes == targets[:, None]
    return ROADResult(accuracy=correct.mean(axis=0), correct=correct, classes=classes, percentages=percent,
                      targets=targets)


# -- MuFidelity ------------------------------------------------------------------------------------
@dataclass
class MuFidelityResult:
    """What :func:`mu_fidelity` returns (``N`` images, ``R`` samples).

    Attributes:
        correlation: ``(N,)`` Spearman correlation of ``score_drops`` and ``attribution_sums``
            (0 where it is undefined, as xplique); xplique's score is its mean. Higher is better.
        attribution_sums: ``(N, R)`` ``Σ_i φ_i (1 − m_i)``: the attribution of the removed pixels.
        score_drops: ``(N, R)`` ``f(x) − f(x ⊙ m + (1 − m) · baseline)``.
        targets: ``(N,)`` the classes scored (``None`` for a callable target).
    """

    correlation: np.ndarray
    attribution_sums: np.ndarray
    score_drops: np.ndarray
    targets: Optional[np.ndarray]


def _grid_masks(draws, fraction, grid, height, width, dtype):
    """xplique's masks: a grid cell is kept (1) where its uniform draw exceeds ``fraction``,
    resized to the image with nearest-neighbour interpolation (``tf.image.resize``)."""
    keep = tf.cast(draws > tf.cast(fraction, draws.dtype), tf.float32)
    cells = tf.reshape(keep, tf.stack([-1, grid[0], grid[1], 1]))
    return tf.cast(tf.image.resize(cells, (height, width), method="nearest"), dtype)


def mu_fidelity_masks(seed: int, samples: int, grid, shape, subset_percent: float) -> np.ndarray:
    """``(R, H, W, 1)`` float32 keep-masks of :func:`mu_fidelity` (1 kept, 0 set to the baseline)."""
    draws = compiled_row_draws("uniform", seed, np.arange(samples), (grid[0] * grid[1],), dtype=tf.float32,
                               stream=STREAM_MU_FIDELITY)
    return _grid_masks(tf.constant(draws), subset_percent, grid, shape[0], shape[1], tf.float32).numpy()


def _mu_fidelity_points(x, rows: ChunkRows):
    """Row ``r`` of image ``n``: ``x_n ⊙ m_r + (1 − m_r) · baseline`` (xplique's arithmetic).
    Context: ``[seed, subset_percent, grid_h, grid_w, baseline]``."""
    context = tf.reshape(rows.context, [-1])
    seed = tf.cast(context[0], tf.int64)
    grid = (tf.cast(context[2], tf.int32), tf.cast(context[3], tf.int32))
    cells = tf.cast(context[2] * context[3], tf.int32)
    draws = row_uniform(seed, rows.position, tf.reshape(cells, [1]), dtype=tf.float32, stream=STREAM_MU_FIDELITY)
    masks = _grid_masks(draws, context[1], grid, int(x.shape[1]), int(x.shape[2]), x.dtype)
    baseline = tf.cast(context[4], x.dtype)
    return tf.gather(x, rows.example) * masks + (1.0 - masks) * baseline


def mu_fidelity(model, images, attributions, target=None, grid_size: Optional[int] = 9,
                subset_percent: float = 0.2, baseline: float = 0.0, nb_samples: int = 200,
                seed: Optional[int] = 0, batch_size: Union[int, str] = "auto",
                verbose: Union[int, bool, str] = "auto", output=None) -> MuFidelityResult:
    """µ-Fidelity (Bhatt, Weller & Moura, IJCAI 2020, Def. 3) as xplique's ``MuFidelity``
    computes it (its defaults). Higher is better (in [−1, 1]).

    For ``R = nb_samples`` random masks ``m``: the image is cut into a ``grid_size × grid_size``
    grid, each cell is removed independently with probability ``subset_percent`` (kept where its
    uniform draw exceeds it), the grid is resized to the image (nearest neighbour), and

    ``µF = Spearman( f(x) − f(x ⊙ m + (1 − m)·b) ,  Σ_i φ_i (1 − m_i) )``

    per image (``nan`` → 0, as xplique); xplique's ``evaluate`` returns the mean over images.
    ``grid_size=None`` is the paper's pixel-wise subsets. ``φ`` is summed over channels (xplique
    sums over every axis of a full-shape map: the same number).

    Randomness: mask ``r`` comes from ``seed`` and ``r`` alone (:func:`mu_fidelity_masks`), the same
    for every image (xplique shares a batch's masks across its images too, drawn from TensorFlow's
    global generator).

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps.
        target: ``None`` (top-1 class), an int, ints, or a callable ``outputs -> (batch,)``.
        grid_size: cells per side (xplique's default 9), ``None`` for one cell per pixel.
        subset_percent: probability that a cell is removed (xplique's default 0.2), in (0, 1).
        baseline: the value of removed pixels (xplique's ``baseline_mode`` default 0).
        nb_samples: ``R`` masks (≥ 2, xplique's default 200).
        seed: seed of the masks (``None``: fresh).
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name).

    Returns:
        :class:`MuFidelityResult`.

    Example:
        >>> mu_fidelity(model, images, expl.attributions, nb_samples=50).correlation.mean()
    """
    from scipy.stats import spearmanr

    x, maps, scores = _prepare(model, images, attributions, target, batch_size, verbose, output)
    num, height, width = maps.shape
    if grid_size is None:
        grid = (height, width)
    else:
        cells = check_positive_int(grid_size, "grid_size")
        if cells > min(height, width):
            raise InvalidInputError(f"`grid_size` must be at most the image's smaller side {min(height, width)} "
                                    "(or None). " + received("grid_size", grid_size))
        grid = (cells, cells)
    fraction = _check_fraction(subset_percent, "subset_percent")
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float, np.integer, np.floating)) or not np.isfinite(
            baseline):
        raise InvalidInputError("`baseline` must be a finite number. " + received("baseline", baseline))
    count = check_positive_int(nb_samples, "nb_samples", minimum=2)
    seed = _seed(seed)
    row_scores = scores.rows(x, count, _mu_fidelity_points, [seed, fraction, grid[0], grid[1], float(baseline)])
    drops = scores.fx[:, None] - row_scores
    removed = 1.0 - mu_fidelity_masks(seed, count, grid, (height, width), fraction).reshape(count, -1)
    sums = maps.reshape(num, -1) @ removed.T.astype(np.float64)
    correlation = np.empty(num)
    for i in range(num):
        value = spearmanr(drops[i], sums[i])[0]
        correlation[i] = 0.0 if np.isnan(value) else value
    return MuFidelityResult(correlation=correlation, attribution_sums=sums, score_drops=drops,
                            targets=scores.targets.indices)
