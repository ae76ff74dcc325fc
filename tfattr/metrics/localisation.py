"""Localisation metrics for datasets with ground-truth masks: the pointing game and mask energy.

* Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
  ECCV 2016): a hit when the maximum of the saliency map lies within ``tolerance`` pixels
  (15 in the paper) of the object's mask; accuracy = hits / (hits + misses).
* Mask energy (the energy-based pointing game of Wang et al., Score-CAM, CVPRW 2020):
  the share of the map's positive energy inside the mask, ``Σ_mask s⁺ / Σ s⁺``.

The saliency map is the signed channel sum of the attribution (``absolute=True``: its
absolute value). Masks are ``(N, H, W)`` or ``(N, H, W, 1)``, non-zero inside the object;
build them from bounding boxes with ``mask[y0:y1, x0:x1] = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from tfattr.errors import InvalidInputError, received
from tfattr.metrics._common import as_array, descending_order, maps_from_attributions

__all__ = ["PointingGameResult", "pointing_game", "mask_energy"]


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
    maps = maps_from_attributions(attributions)
    if absolute:
        maps = np.abs(maps)
    mask = np.asarray(masks.numpy() if hasattr(masks, "numpy") else masks)
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim == 2:
        mask = mask[None]
    if mask.shape != maps.shape:
        raise InvalidInputError(
            f"`masks` must be (N, H, W) (or (N, H, W, 1)) matching the maps {maps.shape}. "
            + received("masks.shape", tuple(np.shape(masks)))
        )
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
