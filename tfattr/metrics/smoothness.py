"""Smoothness of attribution maps: ATV, multi-scale ATV and AUTVC (Goh et al., ICPR 2020, eq. 12),
as the SmoothTaylor authors' code computes them.

* The map is the *signed* sum of the attribution over channels.
* Gaussian pyramid (Burt & Adelson 1983) as ``skimage.transform.pyramid_gaussian``:
  level 0 is the map itself; each next level smooths the previous one with a Gaussian
  (σ = 2·downscale/6 = 0.5 for downscale 1.5, radius 2, ``scipy.ndimage`` ``"reflect"``
  boundary) and resizes it
  bilinearly (pixel-centre aligned) to ``ceil(shape / downscale)``. Levels with a side
  below ``min_size`` (30) end the pyramid: 224 → 224, 150, 100, 67, 45, 30.
* At each level: ``|·|``, then ``(a − min) / (P99 − min)`` clipped to [0, 1]. A level
  with ``P99 = min`` maps to ``1[a > min]`` (the limit of the clipped ratio), so a
  constant map gives 0 rather than NaN. Differences within float64 rounding of the level's
  magnitude (``P99 − min ≤ 2¹⁰·ε·P99``) count as equal: the pyramid of a constant map
  carries rounding noise of a few ε, which the ratio would otherwise stretch to [0, 1], so a
  constant or near-constant map is perfectly smooth, ATV 0 at every level.
* ``ATV = (Σ |horizontal differences| + Σ |vertical differences|) / (H·W)`` (ℓ1, eq. 12).
* ``AUTVC = simpson(ATV per level)`` with unit spacing and SciPy ≤ 1.10's even-count
  averaging (:func:`tfattr.metrics.simpson`). Lower is better. It needs two levels, so
  maps of at least 44 × 44 pixels with the defaults (:func:`autvc_min_size`); smaller maps
  raise :class:`AUTVCUndefinedError` (the area under one point would be 0 for any map).

Everything is computed in float64 on the whole batch at once; no model is involved.
Input maps: ``(N, H, W, C)`` attributions (summed over channels), ``(N, H, W)`` maps, or
one ``(H, W)`` map. One ``(H, W, C)`` attribution must be given with its batch axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np

from tfattr.errors import InvalidInputError, received
from tfattr.metrics._common import maps_from_attributions, simpson

__all__ = ["AUTVCResult", "AUTVCUndefinedError", "normalise_maps", "atv", "gaussian_pyramid", "multiscale_atv",
           "autvc", "autvc_min_size"]

Size = Union[int, Tuple[int, int]]

#: Differences below ``_ROUNDING · P99`` are float64 rounding, not variation. A constant map ``c``
#: leaves each pyramid level as ``c(1 + δ)``: every value is a 5-tap Gaussian sum per axis and a
#: 2-tap interpolation per axis of the level before, with weights that sum to 1 up to rounding,
#: so ``|δ|`` is bounded by about 20 ε per level whatever the number of levels (averaging does
#: not widen the spread it inherits); measured: at most 3.2 ε on constant maps from 45 to
#: 1000 px, values 1e-30 to 1e30. 2¹⁰ ε ≈ 2.3e-13 leaves a margin of 50 over that bound, and is
#: 5·10⁵ times below the smallest step between float32 values (2⁻²³ relative), so a genuine
#: float32 variation is never taken for rounding.
_ROUNDING = 2.0**10 * np.finfo(np.float64).eps


class AUTVCUndefinedError(InvalidInputError):
    """AUTVC asked of maps too small for two pyramid levels (see :func:`autvc_min_size`)."""


@dataclass
class AUTVCResult:
    """What :func:`autvc` returns.

    Attributes:
        area: ``(N,)`` AUTVC per map.
        curve: ``(N, levels)`` ATV at each pyramid level (the multi-scale ATV), for plotting.
        sizes: ``(height, width)`` of each level.
    """

    area: np.ndarray
    curve: np.ndarray
    sizes: List[Tuple[int, int]]


def normalise_maps(maps: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """``clip((|a| − min) / (P_percentile − min), 0, 1)`` per map of an ``(N, H, W)`` batch.

    Maps whose percentile equals their minimum become ``1[|a| > min]`` (0 for constant maps);
    "equals" is up to float64 rounding, ``P − min ≤ 2¹⁰·ε·P`` (and then ``|a| − min`` must exceed
    that to count), so a constant map that picked up rounding noise in the pyramid is still 0.
    """
    magnitude = np.abs(np.asarray(maps, dtype=np.float64))
    flat = magnitude.reshape(magnitude.shape[0], -1)
    low = flat.min(axis=1)[:, None, None]
    high = np.percentile(flat, percentile, axis=1)[:, None, None]
    span = high - low
    rounding = _ROUNDING * high  # high ≥ low ≥ 0: the magnitude of the bulk of the map
    degenerate = span <= rounding
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.clip((magnitude - low) / np.where(degenerate, 1.0, span), 0.0, 1.0)
    return np.where(degenerate, (magnitude - low > rounding).astype(np.float64), scaled)


def _total_variation(maps: np.ndarray) -> np.ndarray:
    height, width = maps.shape[-2:]
    horizontal = np.abs(np.diff(maps, axis=2)).sum(axis=(1, 2))
    vertical = np.abs(np.diff(maps, axis=1)).sum(axis=(1, 2))
    return (horizontal + vertical) / (height * width)


def atv(attributions, normalize: bool = True) -> np.ndarray:
    """Average total variation of each map (eq. 12 with ℓ1), at full resolution.

    Args:
        attributions: ``(N, H, W, C)``, ``(N, H, W)`` or ``(H, W)`` (module docstring).
        normalize: apply the P99 normalisation of :func:`normalise_maps` first (the
            protocol); ``False`` measures the raw signed channel sum.

    Returns:
        ``(N,)`` float64. A 0/1 checkerboard gives ``2 − 1/H − 1/W``; a vertical step edge
        gives ``1/W``; a constant map gives 0.

    Example:
        >>> atv(np.indices((8, 8)).sum(0) % 2)   # checkerboard
        array([1.75])
    """
    maps = maps_from_attributions(attributions)
    if normalize:
        maps = normalise_maps(maps)
    return _total_variation(maps)


def _gaussian_line(sigma: float) -> np.ndarray:
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * offsets**2 / sigma**2)
    return weights / weights.sum()


def _smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian on axes 1 and 2, truncated at 4σ, half-sample symmetric boundary
    (``d c b a | a b c d``: ``scipy.ndimage`` ``"reflect"``, NumPy ``"symmetric"``) —
    ``skimage.filters.gaussian(mode="reflect")``, which hands the mode to SciPy unchanged."""
    weights = _gaussian_line(sigma)
    radius = (len(weights) - 1) // 2
    out = maps
    for axis in (1, 2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        size = out.shape[axis]
        total = np.zeros_like(out)
        for i, weight in enumerate(weights):
            total += weight * np.take(padded, np.arange(i, i + size), axis=axis)
        out = total
    return out


def _resize_axis(maps: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` to ``size`` samples, pixel-centre aligned
    (``scipy.ndimage.zoom(order=1, grid_mode=True)``, as ``skimage.transform.resize``)."""
    old = maps.shape[axis]
    coords = (np.arange(size) + 0.5) * (old / size) - 0.5
    coords = np.clip(coords, 0.0, old - 1)  # never needed when shrinking; guards rounding
    lower = np.floor(coords).astype(np.int64)
    upper = np.minimum(lower + 1, old - 1)
    frac = coords - lower
    shape = [1] * maps.ndim
    shape[axis] = size
    frac = frac.reshape(shape)
    return np.take(maps, lower, axis=axis) * (1.0 - frac) + np.take(maps, upper, axis=axis) * frac


def _check_pyramid_options(downscale: float, sigma: Optional[float],
                           min_size: Size) -> Tuple[float, float, Tuple[int, int]]:
    try:
        downscale = float(downscale)
    except (TypeError, ValueError):
        downscale = float("nan")
    if not (np.isfinite(downscale) and downscale > 1):
        raise InvalidInputError("`downscale` must be a number greater than 1. " + received("downscale", downscale))
    sigma = 2.0 * downscale / 6.0 if sigma is None else float(sigma)
    if not (np.isfinite(sigma) and sigma > 0):
        raise InvalidInputError("`sigma` must be a positive number (None: 2·downscale/6). " + received("sigma", sigma))
    sizes = (min_size, min_size) if np.ndim(min_size) == 0 else tuple(min_size)
    if len(sizes) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
        raise InvalidInputError(
            "`min_size` must be a positive int or a (height, width) pair of them. " + received("min_size", min_size)
        )
    return downscale, sigma, (int(sizes[0]), int(sizes[1]))


def _pyramid(maps: np.ndarray, downscale: float, sigma: float, min_size: Tuple[int, int]) -> List[np.ndarray]:
    levels = []
    level = maps
    while level.shape[1] >= min_size[0] and level.shape[2] >= min_size[1]:
        levels.append(level)
        height, width = level.shape[1:]
        shape = (math.ceil(height / downscale), math.ceil(width / downscale))
        if shape == (height, width):  # skimage stops when the shape stops changing
            break
        smoothed = _smooth(level, sigma)
        level = _resize_axis(_resize_axis(smoothed, shape[0], 1), shape[1], 2)
    if not levels:
        raise InvalidInputError(
            f"The maps are smaller than `min_size` {min_size}; no pyramid level is left. "
            + received("map shape", tuple(maps.shape[1:]))
        )
    return levels


def _level_sizes(shape: Tuple[int, int], downscale: float, min_size: Tuple[int, int]) -> List[Tuple[int, int]]:
    """The ``(height, width)`` of each level :func:`_pyramid` builds from maps of ``shape``."""
    sizes = []
    height, width = int(shape[0]), int(shape[1])
    while height >= min_size[0] and width >= min_size[1]:
        sizes.append((height, width))
        smaller = (math.ceil(height / downscale), math.ceil(width / downscale))
        if smaller == (height, width):
            break
        height, width = smaller
    return sizes


def autvc_min_size(downscale: float = 1.5, sigma: Optional[float] = None, min_size: Size = 30) -> Tuple[int, int]:
    """The smallest ``(height, width)`` whose pyramid has the two levels AUTVC needs.

    A level is kept while both sides are at least ``min_size``, and the next level's side is
    ``ceil(side / downscale)``; so each side needs ``ceil(side / downscale) ≥ min_size``, i.e.
    ``side > (min_size − 1) · downscale``: 44 × 44 with the defaults (44 → 30; 43 → 29 stops).

    Example:
        >>> autvc_min_size()
        (44, 44)
    """
    downscale, _, sides = _check_pyramid_options(downscale, sigma, min_size)
    need = []
    for side in sides:
        size = side
        while math.ceil(size / downscale) < side:
            size += 1
        need.append(size)
    height, width = need
    while len(_level_sizes((height, width), downscale, sides)) < 2:  # only for downscale ≈ 1 and tiny sides
        height, width = height + 1, width + 1
    return height, width


def gaussian_pyramid(attributions, downscale: float = 1.5, sigma: Optional[float] = None,
                     min_size: Size = 30) -> List[np.ndarray]:
    """The Gaussian pyramid of the signed channel-sum maps, as the protocol builds it.

    Args:
        attributions: ``(N, H, W, C)``, ``(N, H, W)`` or ``(H, W)``.
        downscale: factor between levels (1.5).
        sigma: Gaussian σ before each resize; ``None`` → ``2·downscale/6`` (0.5), skimage's default.
        min_size: smallest side kept, an int or ``(height, width)`` (30).

    Returns:
        list of ``(N, h, w)`` float64 levels, the first being the maps themselves.
    """
    options = _check_pyramid_options(downscale, sigma, min_size)
    return _pyramid(maps_from_attributions(attributions), *options)


def multiscale_atv(attributions, downscale: float = 1.5, sigma: Optional[float] = None,
                   min_size: Size = 30) -> np.ndarray:
    """ATV (normalised per level) at each level of :func:`gaussian_pyramid`: ``(N, levels)``.

    Example:
        >>> multiscale_atv(np.random.rand(2, 224, 224, 3)).shape   # levels 224,150,100,67,45,30
        (2, 6)
    """
    levels = gaussian_pyramid(attributions, downscale, sigma, min_size)
    return np.stack([_total_variation(normalise_maps(level)) for level in levels], axis=1)


def autvc(attributions, downscale: float = 1.5, sigma: Optional[float] = None,
          min_size: Size = 30) -> AUTVCResult:
    """Area under the multi-scale ATV curve (SmoothTaylor paper, §IV; lower is smoother).

    ``AUTVC = simpson(multiscale_atv)`` with unit spacing; an even number of levels uses
    SciPy ≤ 1.10's average of the two Simpson-plus-trapezoid variants (two levels: the
    trapezoid). It needs at least two levels (:func:`autvc_min_size`, 44 × 44 with the
    defaults): with one level the area (``simps`` of one point) would be 0 for every map,
    noise included, so smaller maps raise instead of scoring a perfect 0.

    Args:
        attributions: ``(N, H, W, C)`` attributions (signed channel sum), ``(N, H, W)`` maps
            or one ``(H, W)`` map.
        downscale, sigma, min_size: pyramid options (:func:`gaussian_pyramid`).

    Returns:
        :class:`AUTVCResult` with ``area (N,)``, ``curve (N, levels)``, ``sizes``.

    Raises:
        AUTVCUndefinedError: the maps give fewer than two pyramid levels; the message names
            the minimum size. Use :func:`atv` for smaller maps, or a smaller ``min_size``.

    Example:
        >>> autvc(explanation.attributions).area
    """
    options = _check_pyramid_options(downscale, sigma, min_size)
    maps = maps_from_attributions(attributions)
    if len(_level_sizes(maps.shape[1:], options[0], options[2])) < 2:
        height, width = autvc_min_size(downscale, sigma, min_size)
        raise AUTVCUndefinedError(
            f"AUTVC needs at least two Gaussian-pyramid levels, i.e. maps of at least {height}×{width} pixels "
            f"(a level ends the pyramid when a side is smaller than `min_size`={min_size}; each level is "
            f"ceil(side / downscale), downscale={options[0]:g}); with one level the area would be 0 for any "
            "map. Use atv() for smaller maps, or lower `min_size`. " + received("maps.shape", tuple(maps.shape)))
    levels = _pyramid(maps, *options)
    curve = np.stack([_total_variation(normalise_maps(level)) for level in levels], axis=1)
    return AUTVCResult(area=simpson(curve, axis=1), curve=curve,
                       sizes=[tuple(int(s) for s in level.shape[1:]) for level in levels])
