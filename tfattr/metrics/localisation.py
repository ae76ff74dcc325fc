"""Localisation metrics for datasets with ground-truth masks.

* Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
  ECCV 2016): a hit when the maximum of the saliency map lies within ``tolerance`` pixels
  (15 in the paper) of the object's mask; accuracy = hits / (hits + misses).
* Mask energy (the energy-based pointing game of Wang et al., Score-CAM, CVPRW 2020):
  the share of the map's positive energy inside the mask, ``Σ_mask s⁺ / Σ s⁺``.
* Relevance mass and rank accuracy (Arras, Osman & Samek, "CLEVR-XAI", Information Fusion 2022):
  :func:`relevance_mass_accuracy`, :func:`relevance_rank_accuracy`.
* Top-k intersection (Theiner, Müller-Budack & Ewerth, WACV 2022): :func:`top_k_intersection`.
* Attribution localisation (Kohlbrenner et al., IJCNN 2020): :func:`attribution_localisation`.
* ROC AUC of the map as a detector of the mask's pixels (Fawcett 2006): :func:`auc`.

Every one of these is higher-is-better, and each equals its Quantus 0.6 metric given a
channel-free ``a_batch`` and segmentation masks of shape ``(N, 1, H, W)`` (Quantus wants masks
channel-first even for channel-last images) with the same ``abs`` option; Quantus's
``normalise=True`` (a division by a positive maximum) does not change these metrics. Where a
convention differs it is said at the function. An image whose mask is empty gets ``nan``
(as Quantus).

The saliency map is the signed channel sum of the attribution (``absolute=True``: its
absolute value). Masks are ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, 1, H, W)`` (Quantus's layout),
non-zero inside the object;
build them from bounding boxes with ``mask[y0:y1, x0:x1] = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from tfattr.errors import InvalidInputError, received
from tfattr.metrics._common import as_array, descending_order, maps_from_attributions

__all__ = ["PointingGameResult", "pointing_game", "mask_energy", "relevance_mass_accuracy",
           "relevance_rank_accuracy", "top_k_intersection", "attribution_localisation", "auc"]


@dataclass
class PointingGameResult:
    """What :func:`pointing_game` returns.

    Attributes:
        hits: ``(N,)`` bool, the maximum is within ``tolerance`` of the mask.
        points: ``(N, 2)`` ``(row, column)`` of each map's maximum (first in row-major order on ties).
        valid: ``(N,)`` bool, the mask is non-empty (images with empty masks are not counted).
        accuracy: hits / valid images (``nan`` when no mask is valid).
    """

    hits: np.ndarray
    points: np.ndarray
    valid: np.ndarray
    accuracy: float


def _maps_and_masks(attributions, masks, absolute: bool) -> Tuple[np.ndarray, np.ndarray]:
    if not isinstance(absolute, (bool, np.bool_)):
        raise InvalidInputError("`absolute` must be True or False. " + received("absolute", absolute))
    maps = maps_from_attributions(attributions)
    mask = np.asarray(masks.numpy() if hasattr(masks, "numpy") else masks)
    if mask.ndim == 4 and mask.shape[-1] == 1 and mask.shape[1:3] == maps.shape[1:]:
        mask = mask[..., 0]
    elif mask.ndim == 4 and mask.shape[1] == 1 and mask.shape[2:] == maps.shape[1:]:  # Quantus's (N, 1, H, W)
        mask = mask[:, 0]
    if mask.ndim == 2:
        mask = mask[None]
    if mask.shape != maps.shape:
        raise InvalidInputError(
            f"`masks` must be (N, H, W) (or (N, H, W, 1) or (N, 1, H, W)) matching the maps {maps.shape}. "
            + received("masks.shape", tuple(np.shape(masks)))
        )
    if absolute:
        maps = np.abs(maps)
    if mask.dtype == bool:
        return maps, mask
    return maps, as_array(mask, "masks") != 0


def pointing_game(attributions, masks, tolerance: float = 15, absolute: bool = False) -> PointingGameResult:
    """Zhang et al. 2016's pointing game.

    Args:
        attributions: ``(N, H, W, C)`` attributions, ``(N, H, W)`` maps or one ``(H, W)`` map.
        masks: ground truth, ``(N, H, W)`` (or ``(N, H, W, 1)``), non-zero on the object.
        tolerance: a hit when the Euclidean distance from the maximum to the nearest mask
            pixel is ≤ ``tolerance`` pixels (paper: 15; 0 = the maximum must be on the mask).
            Values within rounding of the maximum (``2**-14`` of the map's magnitude) tie,
            and the first in row-major order is the point, whatever a machine's last bits.
        absolute: point with ``|map|`` instead of the signed map.

    Returns:
        :class:`PointingGameResult`.

    Example:
        >>> pointing_game(expl.attributions, masks).accuracy
    """
    maps, mask = _maps_and_masks(attributions, masks, absolute)
    tolerance = float(tolerance)
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise InvalidInputError("`tolerance` must be a non-negative number of pixels. "
                                + received("tolerance", tolerance))
    num, height, width = maps.shape
    flat = descending_order(maps.reshape(num, -1), axis=1)[:, 0]  # the first maximum up to rounding
    points = np.stack(np.unravel_index(flat, (height, width)), axis=1)
    rows = np.arange(height)[None, :, None]
    cols = np.arange(width)[None, None, :]
    distance2 = (rows - points[:, 0, None, None]) ** 2 + (cols - points[:, 1, None, None]) ** 2
    hits = (mask & (distance2 <= tolerance**2)).any(axis=(1, 2))
    valid = mask.any(axis=(1, 2))
    hits &= valid
    accuracy = float(hits.sum() / valid.sum()) if valid.any() else float("nan")
    return PointingGameResult(hits=hits, points=points.astype(np.int64), valid=valid, accuracy=accuracy)


def mask_energy(attributions, masks, absolute: bool = False) -> np.ndarray:
    """Share of the saliency energy inside the mask, ``Σ_mask s / Σ s`` with ``s = max(map, 0)``
    (``absolute=True``: ``s = |map|``). Wang et al. 2020's energy-based pointing game.

    Args:
        attributions: ``(N, H, W, C)``, ``(N, H, W)`` or ``(H, W)``.
        masks: ``(N, H, W)`` (or ``(N, H, W, 1)``), non-zero on the object.
        absolute: measure ``|map|`` instead of its positive part.

    Returns:
        ``(N,)`` float64 in [0, 1]; 0 for a map without positive energy.

    Example:
        >>> mask_energy(expl.attributions, masks).mean()
    """
    maps, mask = _maps_and_masks(attributions, masks, absolute)
    energy = np.abs(maps) if absolute else np.maximum(maps, 0.0)
    total = energy.sum(axis=(1, 2))
    inside = (energy * mask).sum(axis=(1, 2))
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)


def _flat(maps: np.ndarray, mask: np.ndarray):
    num = maps.shape[0]
    return maps.reshape(num, -1), mask.reshape(num, -1), mask.reshape(num, -1).sum(axis=1)


def relevance_mass_accuracy(attributions, masks, absolute: bool = False) -> np.ndarray:
    r"""Relevance mass accuracy (Arras, Osman & Samek, "CLEVR-XAI: A benchmark dataset for the ground
    truth evaluation of neural network explanations", Information Fusion 2022; Quantus
    ``RelevanceMassAccuracy``). Higher is better.

    ``MA = R_within / R_total = Σ_{p ∈ GT} R_p / Σ_p R_p``

    over the pixels of the map ``R`` (the channel sum; ``|·|`` with ``absolute``). In [0, 1] for a
    non-negative map (1: all relevance on the object); with signed maps it can leave [0, 1].

    Args:
        attributions: ``(N, H, W, C)``, ``(N, H, W)``, ``(H, W)`` or an ``Explanation``.
        masks: ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, 1, H, W)``, non-zero on the object.
        absolute: use ``|map|`` (Quantus's ``abs``; default ``False`` in both).

    Returns:
        ``(N,)`` float64; ``nan`` for an empty mask or a map summing to 0.

    Example:
        >>> relevance_mass_accuracy(expl.attributions, masks, absolute=True).mean()
    """
    maps, mask = _maps_and_masks(attributions, masks, absolute)
    values, inside, sizes = _flat(maps, mask)
    total = values.sum(axis=1)
    within = (values * inside).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(total != 0, within / np.where(total != 0, total, 1.0), np.nan)
    return np.where(sizes > 0, result, np.nan)


def relevance_rank_accuracy(attributions, masks, absolute: bool = False) -> np.ndarray:
    r"""Relevance rank accuracy (Arras, Osman & Samek 2022; Quantus ``RelevanceRankAccuracy``).
    Higher is better.

    With ``K = |GT|`` the mask's size and ``P_top K`` the ``K`` pixels of highest relevance,

    ``RA = |P_top K ∩ GT| / |GT|``  in [0, 1].

    Ties are broken as everywhere in :mod:`tfattr.metrics`: values equal up to ``2**-14`` of the
    map's largest magnitude rank by position (row-major), whatever a machine's last bits (Quantus
    uses NumPy's unstable ``argsort``, so its ties fall in an unspecified order).

    Args:
        attributions: ``(N, H, W, C)``, ``(N, H, W)``, ``(H, W)`` or an ``Explanation``.
        masks: ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, 1, H, W)``, non-zero on the object.
        absolute: rank ``|map|`` (Quantus's ``abs``; default ``False`` in both).

    Returns:
        ``(N,)`` float64; ``nan`` for an empty mask.

    Example:
        >>> relevance_rank_accuracy(expl.attributions, masks).mean()
    """
    maps, mask = _maps_and_masks(attributions, masks, absolute)
    values, inside, sizes = _flat(maps, mask)
    order = descending_order(values, axis=1)
    ranked = np.take_along_axis(inside, order, axis=1)
    top = np.arange(values.shape[1])[None, :] < sizes[:, None]
    hits = (ranked & top).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, hits / np.where(sizes > 0, sizes, 1), np.nan)


def top_k_intersection(attributions, masks, k: int = 1000, concept_influence: bool = False,
                       absolute: bool = False) -> np.ndarray:
    r"""Top-k intersection (Theiner, Müller-Budack & Ewerth, "Interpretable Semantic Photo
    Geolocation", WACV 2022; Quantus ``TopKIntersection``). Higher is better.

    ``TKI = |P_top k ∩ GT| / k``: the share of the ``k`` most relevant pixels that lie on the
    object, in [0, 1]. ``concept_influence=True`` divides by the share of the image the mask covers,
    ``TKI · H·W / |GT|`` (1 = no better than a random ranking). Ties rank as in
    :func:`relevance_rank_accuracy`.

    Args:
        attributions: ``(N, H, W, C)``, ``(N, H, W)``, ``(H, W)`` or an ``Explanation``.
        masks: ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, 1, H, W)``, non-zero on the object.
        k: pixels taken, ``1 ≤ k ≤ H·W`` (Quantus's default 1000).
        concept_influence: divide by ``|GT| / (H·W)``.
        absolute: rank ``|map|`` (Quantus's ``abs``; default ``False`` in both).

    Returns:
        ``(N,)`` float64; ``nan`` for an empty mask.

    Example:
        >>> top_k_intersection(expl.attributions, masks, k=100).mean()
    """
    maps, mask = _maps_and_masks(attributions, masks, absolute)
    values, inside, sizes = _flat(maps, mask)
    pixels = values.shape[1]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= pixels:
        raise InvalidInputError(f"`k` must be an integer in [1, H·W = {pixels}]. " + received("k", k))
    if not isinstance(concept_influence, (bool, np.bool_)):
        raise InvalidInputError("`concept_influence` must be True or False. "
                                + received("concept_influence", concept_influence))
    order = descending_order(values, axis=1)[:, : int(k)]
    share = np.take_along_axis(inside, order, axis=1).mean(axis=1)
    if concept_influence:
        share = share * pixels / np.where(sizes > 0, sizes, 1)
    return np.where(sizes > 0, share, np.nan)


def attribution_localisation(attributions, masks, weighted: bool = False, positive: bool = True,
                             absolute: bool = False) -> np.ndarray:
    r"""Attribution localisation, the inside-total relevance ratio (Kohlbrenner, Bauer, Nakajima,
    Binder, Samek & Lapuschkin, "Towards Best Practice in Explaining Neural Network Decisions with
    LRP", IJCNN 2020; Quantus ``AttributionLocalisation``). Higher is better.

    ``μ = R_in / R_tot`` with ``R`` the positive part of the map (the paper's: ``positive=True``),
    ``R_in`` its sum on the object and ``R_tot`` its sum over the image; in [0, 1].
    ``weighted=True`` is the paper's size-weighted ratio ``μ_w = μ · S_tot / S_in`` (``S`` the
    pixel counts of the image and of the object: 1 is a map spread evenly).

    Quantus's conventions: ``abs=True`` and ``positive_attributions=False`` by default (here
    ``absolute=True, positive=False``); it divides by ``R_tot + 1e-9`` (a relative difference of
    ``1e-9 / R_tot``); ratios above 1 (possible for signed maps) become ``nan`` in Quantus and here;
    and its ``weighted=True`` multiplies ``μ`` by ``S_in`` over the size of ``x_batch[2:]`` (the
    batch without its first two images, not the image size), not the paper's weight: use
    ``weighted=False`` to compare.

    Args:
        attributions: ``(N, H, W, C)``, ``(N, H, W)``, ``(H, W)`` or an ``Explanation``.
        masks: ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, 1, H, W)``, non-zero on the object.
        weighted: the paper's ``μ_w``.
        positive: keep the positive part (after ``absolute``).
        absolute: take ``|map|`` first.

    Returns:
        ``(N,)`` float64; ``nan`` for an empty mask, for ``R_tot = 0`` and for a ratio above 1.

    Example:
        >>> attribution_localisation(expl.attributions, masks).mean()
    """
    for name, flag in (("weighted", weighted), ("positive", positive)):
        if not isinstance(flag, (bool, np.bool_)):
            raise InvalidInputError(f"`{name}` must be True or False. " + received(name, flag))
    maps, mask = _maps_and_masks(attributions, masks, absolute)
    if positive:
        maps = np.maximum(maps, 0.0)
    values, inside, sizes = _flat(maps, mask)
    total = values.sum(axis=1)
    within = (values * inside).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total != 0, within / np.where(total != 0, total, 1.0), np.nan)
    ratio = np.where((sizes > 0) & ~(ratio > 1), ratio, np.nan)
    if weighted:
        ratio = ratio * values.shape[1] / np.where(sizes > 0, sizes, 1)
    return ratio


def auc(attributions, masks, absolute: bool = False) -> np.ndarray:
    r"""Area under the ROC curve of the map as a detector of the mask's pixels (Fawcett, "An
    introduction to ROC analysis", Pattern Recognition Letters 2006; Quantus ``AUC``, which calls
    ``sklearn.metrics.roc_curve`` and ``auc``). Higher is better (1: every object pixel above every
    background pixel; 0.5: chance).

    Computed exactly as the Mann–Whitney statistic ``AUC = P(R_obj > R_bg) + ½ P(R_obj = R_bg)``
    over all (object, background) pixel pairs (exact value ties count ½, the trapezoids of
    scikit-learn's curve).

    Args:
        attributions: ``(N, H, W, C)``, ``(N, H, W)``, ``(H, W)`` or an ``Explanation``.
        masks: ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, 1, H, W)``, non-zero on the object.
        absolute: score with ``|map|`` (Quantus's ``abs``; default ``False`` in both).

    Returns:
        ``(N,)`` float64; ``nan`` for an empty mask or a mask covering every pixel.

    Example:
        >>> auc(expl.attributions, masks).mean()
    """
    maps, mask = _maps_and_masks(attributions, masks, absolute)
    values, inside, sizes = _flat(maps, mask)
    pixels = values.shape[1]
    result = np.full(values.shape[0], np.nan)
    for n in range(values.shape[0]):
        positives = int(sizes[n])
        negatives = pixels - positives
        if positives == 0 or negatives == 0:
            continue
        order = np.argsort(values[n], kind="stable")
        ranked = values[n][order]
        ranks = np.empty(pixels)
        # average ranks (1-based) of tied values
        starts = np.flatnonzero(np.concatenate([[True], ranked[1:] != ranked[:-1]]))
        ends = np.concatenate([starts[1:], [pixels]])
        mean_rank = (starts + ends + 1) / 2.0
        ranks[order] = np.repeat(mean_rank, ends - starts)
        u = ranks[inside[n]].sum() - positives * (positives + 1) / 2.0
        result[n] = u / (positives * negatives)
    return result
