"""Perturbation curves that flip pixels or regions in the order of the attribution, cumulatively.

* :func:`pixel_flipping` — Bach et al., PLoS ONE 2015 (Quantus ``PixelFlipping``): the model's
  score after each step of ``pixels_per_step`` pixels (most relevant first) set to a baseline.
  MoRF: lower is better (a faithful map destroys the score quickly).
* :func:`region_perturbation` — Samek et al., IEEE TNNLS 2017 (Quantus ``RegionPerturbation``):
  the drop ``f(x) − f(x_k)`` after the ``k`` first ``patch_size × patch_size`` patches of a grid
  (ordered by their summed attribution) are set to a baseline, and its AOPC. MoRF: higher is better.

Both run as forward rows (:class:`~tfattr.core.engine.ForwardEngine`): row ``k`` of image ``n`` is
built on the device from a rank table (each pixel's or patch's place in the image's order), so
only a chunk of perturbed copies exists at once, and the result does not depend on the batch size.
``f`` is the target's score (``target=None``: the top-1 class, or the classes an ``Explanation``
given as the attributions explains), the model's output as is (Quantus scores a softmax by default,
``softmax=True``: give a model that ends in a softmax, or run Quantus with ``softmax=False``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from tfattr.core.engine import ChunkRows
from tfattr.errors import InvalidInputError, received
from tfattr.metrics._common import check_images, check_positive_int, descending_order, explained_target, maps_for_images
from tfattr.metrics.faithfulness import _baseline_values, _batch_size, _Scores, _seed

__all__ = ["PixelFlippingResult", "RegionPerturbationResult", "pixel_flipping", "region_perturbation",
           "region_grid"]

_ORDERS = ("morf", "lerf")


def _check_order(order, allowed) -> str:
    if not (isinstance(order, str) and order in allowed):
        raise InvalidInputError(f"`order` must be one of {list(allowed)}. " + received("order", order))
    return order


def _check_absolute(absolute) -> bool:
    if not isinstance(absolute, (bool, np.bool_)):
        raise InvalidInputError("`absolute` must be True or False. " + received("absolute", absolute))
    return bool(absolute)


def _ranks(order: np.ndarray) -> np.ndarray:
    """The inverse permutations: ``ranks[n, order[n, r]] = r``."""
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(order.shape[1])[None, :].repeat(order.shape[0], 0), axis=1)
    return ranks


# -- pixel flipping --------------------------------------------------------------------------------
@dataclass
class PixelFlippingResult:
    """What :func:`pixel_flipping` returns (``N`` images, ``S`` steps).

    Attributes:
        curve: ``(N, S)`` the target's score after step ``s`` (``(s + 1)·pixels_per_step`` pixels
            flipped; the last step flips every pixel), Quantus's ``PixelFlipping`` output.
        auc: ``(N,)`` trapezoidal area under ``curve`` with unit spacing (Quantus's
            ``return_auc_per_sample``); MoRF: lower is better.
        initial: ``(N,)`` the score of the unperturbed image ``f(x)`` (not part of ``curve``).
        order: ``(N, H·W)`` the pixels (row-major flat indices) in flipping order.
        targets: ``(N,)`` the classes scored (``None`` for a callable target).
    """

    curve: np.ndarray
    auc: np.ndarray
    initial: np.ndarray
    order: np.ndarray
    targets: Optional[np.ndarray]


def _flip_points(x, rows: ChunkRows):
    """Row ``k`` of image ``n``: ``x_n`` with the pixels of rank ``< (k + 1)·step`` (all channels) at
    image ``n``'s baseline. Context: ``[step, baseline_0 … baseline_{N−1}, ranks (N × H·W)]``."""
    height, width = int(x.shape[1]), int(x.shape[2])
    context = tf.reshape(rows.context, [-1])
    num = tf.shape(x)[0]
    step = context[0]
    baselines = context[1 : 1 + num]
    ranks = tf.reshape(context[1 + num :], (num, height * width))
    flipped = tf.gather(ranks, rows.example) < ((tf.cast(rows.position, tf.float64) + 1.0) * step)[:, None]
    mask = tf.reshape(flipped, (-1, height, width, 1))
    points = tf.gather(x, rows.example)
    baseline = tf.reshape(tf.cast(tf.gather(baselines, rows.example), x.dtype), (-1, 1, 1, 1))
    return tf.where(mask, baseline * tf.ones_like(points), points)


def pixel_flipping(model, images, attributions, target=None, pixels_per_step: int = 1,
                   baseline: Union[str, float] = "black", order: str = "morf", absolute: bool = False,
                   batch_size: Union[int, str] = "auto", verbose: Union[int, bool, str] = "auto",
                   output=None) -> PixelFlippingResult:
    r"""Pixel flipping (Bach, Binder, Montavon, Klauschen, Müller & Samek, "On Pixel-Wise
    Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation", PLoS ONE
    2015, Sec. "Pixel-flipping"; Quantus ``PixelFlipping``). MoRF: lower is better.

    The pixels are sorted by the map (the attribution summed over channels; ``|·|`` with
    ``absolute``), most relevant first (``order="lerf"``: least relevant first). Step
    ``s = 1 … S``, ``S = ⌈H·W / pixels_per_step⌉``, sets the first ``s·pixels_per_step`` pixels
    (all channels) to the baseline, cumulatively, and records ``f(x_s)``; the area is
    ``AUC = Σ_{s=1}^{S−1} (f(x_s) + f(x_{s+1})) / 2``.

    Quantus's equivalent: ``PixelFlipping(features_in_step=C·pixels_per_step,
    perturb_baseline=…, abs=…)`` with a channel-free ``a_batch`` ``(N, 1, H, W)`` (Quantus flips
    single features of the ``C·H·W`` input; a channel-free map broadcast over channels flips whole
    pixels when the step is a multiple of ``C``). Its ``normalise`` does not change the order. Ties
    rank by position (values equal up to ``2**-14`` of the map's largest magnitude), where
    Quantus's unstable ``argsort`` leaves them in an unspecified order.

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps (or an ``Explanation``).
        target: ``None`` (top-1 class), an int, ints, or a callable ``outputs -> (batch,)``.
        pixels_per_step: pixels flipped per step (the last step may flip fewer).
        baseline: the value flipped pixels take: a number (fixed), ``"black"`` (each image's
            minimum), ``"white"`` (its maximum) or ``"mean"`` (its mean; Quantus recomputes its
            ``"mean"`` on the partly flipped image at every step, ``"black"``/``"white"`` agree).
        order: ``"morf"`` (most relevant first, the paper's) or ``"lerf"``.
        absolute: order by ``|map|`` (Quantus's ``abs``; default ``False`` in both).
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name).

    Returns:
        :class:`PixelFlippingResult`.

    Example:
        >>> pixel_flipping(model, images, expl.attributions, pixels_per_step=64, baseline=0.0).auc
    """
    batch, x, _ = check_images(model, images)
    maps = maps_for_images(attributions, batch)
    if _check_absolute(absolute):
        maps = np.abs(maps)
    order = _check_order(order, _ORDERS)
    num, height, width = maps.shape
    pixels = height * width
    step = check_positive_int(pixels_per_step, "pixels_per_step")
    if step > pixels:
        raise InvalidInputError(f"`pixels_per_step` must be at most the number of pixels H·W = {pixels}. "
                                + received("pixels_per_step", pixels_per_step))
    values = _baseline_values(baseline, x)
    flat = maps.reshape(num, pixels)
    ordering = descending_order(flat if order == "morf" else -flat, axis=1)
    steps = math.ceil(pixels / step)
    scores = _Scores(model, x, explained_target(attributions, target), _batch_size(batch_size), verbose, output)
    context = np.concatenate([[step], values, _ranks(ordering).reshape(-1).astype(np.float64)])
    curve = scores.rows(x, steps, _flip_points, context)
    area = np.trapezoid(curve, dx=1.0, axis=1) if hasattr(np, "trapezoid") else np.trapz(curve, dx=1.0, axis=1)
    return PixelFlippingResult(curve=curve, auc=area, initial=scores.fx, order=ordering,
                               targets=scores.targets.indices)


# -- region perturbation ---------------------------------------------------------------------------
@dataclass
class RegionPerturbationResult:
    """What :func:`region_perturbation` returns (``N`` images, ``L`` regions).

    Attributes:
        drops: ``(N, L)`` ``f(x) − f(x_k)`` after the first ``k = 1 … L`` patches are perturbed
            (Quantus's ``RegionPerturbation`` output).
        aopc: ``(N,)`` ``Σ_{k=0}^{L} (f(x) − f(x_k)) / (L + 1)`` (Samek et al. 2017, the AOPC of one
            image; the ``k = 0`` term is 0). MoRF: higher is better; LeRF: lower is better.
        initial: ``(N,)`` ``f(x)``.
        order: ``(N, L)`` the patches perturbed, in order (row-major index on the grid).
        targets: ``(N,)`` the classes scored (``None`` for a callable target).
    """

    drops: np.ndarray
    aopc: np.ndarray
    initial: np.ndarray
    order: np.ndarray
    targets: Optional[np.ndarray]


def region_grid(height: int, width: int, patch_size: int) -> np.ndarray:
    """``(height, width)`` int64 patch index of each pixel on Quantus's grid of ``patch_size`` squares:
    where a side is not a multiple of the patch size the grid overhangs it by ``⌊pad/2⌋`` before and
    ``⌈pad/2⌉`` after (``pad = patch_size − side mod patch_size``), so border patches are cut."""
    def offsets(side):
        pad = (-side) % patch_size
        return (np.arange(side) + pad // 2) // patch_size, (side + pad) // patch_size

    rows, _ = offsets(height)
    cols, across = offsets(width)
    return rows[:, None] * across + cols[None, :]


def _region_points(x, rows: ChunkRows):
    """Row ``k`` of image ``n``: ``x_n`` with the pixels of its patches of rank ``≤ k`` at the image's
    baseline. Context: ``[P, patch of each pixel (H·W), baseline_0 … baseline_{N−1}, ranks (N × P)]``."""
    height, width = int(x.shape[1]), int(x.shape[2])
    pixels = height * width
    context = tf.reshape(rows.context, [-1])
    num = tf.shape(x)[0]
    patches = tf.cast(context[0], tf.int32)
    grid = tf.cast(context[1 : 1 + pixels], tf.int32)
    baselines = context[1 + pixels : 1 + pixels + num]
    ranks = tf.reshape(context[1 + pixels + num :], (num, patches))
    pixel_ranks = tf.gather(tf.gather(ranks, rows.example), grid, axis=1)  # (rows, H·W)
    mask = tf.reshape(pixel_ranks < tf.cast(rows.position, tf.float64)[:, None] + 1.0, (-1, height, width, 1))
    points = tf.gather(x, rows.example)
    baseline = tf.reshape(tf.cast(tf.gather(baselines, rows.example), x.dtype), (-1, 1, 1, 1))
    return tf.where(mask, baseline * tf.ones_like(points), points)


def region_perturbation(model, images, attributions, target=None, patch_size: int = 8, regions: int = 100,
                        order: str = "morf", baseline: Union[str, float] = "black", absolute: bool = False,
                        seed: Optional[int] = 0, batch_size: Union[int, str] = "auto",
                        verbose: Union[int, bool, str] = "auto", output=None) -> RegionPerturbationResult:
    r"""Region perturbation (Samek, Binder, Montavon, Lapuschkin & Müller, "Evaluating the
    Visualization of What a Deep Neural Network Has Learned", IEEE TNNLS 2017; as Quantus
    ``RegionPerturbation`` computes it). MoRF: higher AOPC is better; LeRF: lower is better.

    The image is cut into a grid of ``patch_size × patch_size`` patches (:func:`region_grid`), each
    patch scored by the sum of the map (the channel sum; ``|·|`` with ``absolute``) over it, and the
    patches ordered: ``"morf"`` (highest sum first), ``"lerf"`` (lowest first) or ``"random"``
    (seeded). For ``k = 1 … L`` the first ``k`` patches are set to the baseline (cumulatively) and

    ``drop_k = f(x) − f(x_k)``,  ``AOPC = Σ_{k=0}^{L} drop_k / (L + 1)``  (the AOPC, ``drop_0 = 0``).

    The paper perturbs ``9 × 9`` regions centred on the most relevant pixels, not yet perturbed,
    with uniform noise (that protocol is :func:`~tfattr.metrics.aupc`); this is Quantus's grid
    variant. Quantus's equivalent: ``RegionPerturbation(patch_size=…, regions_evaluation=L,
    order=…, perturb_baseline=…, abs=…)`` with a channel-free ``a_batch`` ``(N, 1, H, W)``. Quantus
    silently evaluates fewer regions when ``L`` exceeds the number of patches; here that is an error.
    Its ``"random"`` order is unseeded. Ties rank by position (see :func:`pixel_flipping`).

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: the images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps (or an ``Explanation``).
        target: ``None`` (top-1 class), an int, ints, or a callable ``outputs -> (batch,)``.
        patch_size: side of the square patches (Quantus's default 8).
        regions: ``L``, patches perturbed (Quantus's ``regions_evaluation``, default 100), at most
            the number of patches.
        order: ``"morf"``, ``"lerf"`` or ``"random"``.
        baseline: a number (fixed), ``"black"`` (each image's minimum), ``"white"`` (maximum) or
            ``"mean"`` (of the unperturbed image; Quantus recomputes it at every step).
        absolute: order by ``|map|`` sums.
        seed: seed of the ``"random"`` order, the same permutation for every image (``None``: fresh).
        batch_size: rows per forward pass or ``"auto"``.
        verbose: progress bar.
        output: the scored output of a model with several (an index or a name).

    Returns:
        :class:`RegionPerturbationResult`.

    Example:
        >>> region_perturbation(model, images, expl.attributions, patch_size=8, regions=50, baseline=0.0).aopc
    """
    batch, x, _ = check_images(model, images)
    maps = maps_for_images(attributions, batch)
    if _check_absolute(absolute):
        maps = np.abs(maps)
    order = _check_order(order, _ORDERS + ("random",))
    num, height, width = maps.shape
    size = check_positive_int(patch_size, "patch_size")
    if size > min(height, width):
        raise InvalidInputError(f"`patch_size` must be at most the image's smaller side {min(height, width)}. "
                                + received("patch_size", patch_size))
    grid = region_grid(height, width, size)
    patches = int(grid.max()) + 1
    count = check_positive_int(regions, "regions")
    if count > patches:
        raise InvalidInputError(f"`regions` must be at most the number of patches ({patches} of {size}×{size} on "
                                f"{height}×{width}). " + received("regions", regions))
    values = _baseline_values(baseline, x)
    sums = np.stack([np.bincount(grid.reshape(-1), weights=m.reshape(-1), minlength=patches) for m in maps])
    if order == "random":
        # one permutation for every image (from the seed alone): an image's result does not depend on its
        # place in the batch
        ordering = np.tile(np.random.default_rng(_seed(seed)).permutation(patches), (num, 1))
    else:
        ordering = descending_order(sums if order == "morf" else -sums, axis=1)
    scores = _Scores(model, x, explained_target(attributions, target), _batch_size(batch_size), verbose, output)
    context = np.concatenate([[patches], grid.reshape(-1), values, _ranks(ordering).reshape(-1)]).astype(np.float64)
    row_scores = scores.rows(x, count, _region_points, context)
    drops = scores.fx[:, None] - row_scores
    return RegionPerturbationResult(drops=drops, aopc=drops.sum(axis=1) / (count + 1), initial=scores.fx,
                                    order=ordering[:, :count], targets=scores.targets.indices)
