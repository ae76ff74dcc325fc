"""Complexity metrics: how concentrated an attribution map is (no model, no ground truth).

* :func:`sparseness` — the Gini index of ``|map|`` (Chalasani et al., ICML 2020). Higher is
  better (sparser: 1 when one pixel holds everything, 0 for a uniform map).
* :func:`complexity` — the entropy of the fractional contributions ``|map| / Σ|map|`` (Bhatt,
  Weller & Moura, IJCAI 2020). Lower is better (0 for one pixel, ``log(H·W)`` for a uniform map).
* :func:`effective_complexity` — the number of pixels whose ``|map|`` exceeds ``eps`` (Nguyen &
  Martínez 2020). Lower is better.

A map is the attribution summed over channels (signed; ``(N, H, W)`` maps are taken as they are),
then ``|map|`` (``absolute=True``, the default and the papers'), then optionally divided by a
maximum (``normalise``). The features are the ``H·W`` pixels of the map; Quantus 0.6 (``Sparseness``,
``Complexity``, ``EffectiveComplexity``) computes the same on a channel-free ``a_batch`` of shape
``(N, 1, H, W)``. Conventions where Quantus differs:

* Quantus normalises by default (``normalise=True``) with ``normalise_by_max`` over the **whole**
  ``a_batch`` it is given (one maximum for every image, so an image's value depends on the
  other images); here ``normalise=None`` by default, ``"max"`` divides each map by its own
  maximum ``|map|`` and ``"batch"`` is Quantus's convention. Only :func:`effective_complexity`
  (a threshold) sees the normalisation; the Gini index and the entropy are scale-free.
* Quantus's ``Sparseness`` adds ``1e-7`` to every value before the Gini index, which multiplies it
  by ``Σa / (Σa + 1e-7·H·W)`` (invisible on maps normalised to a maximum of 1, not on raw
  gradients of magnitude ~1e-4); here the Gini index is exact. Its ``Complexity`` computes
  ``−Σ p log(p + 1e-12)``; here ``0·log 0 = 0`` exactly.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np

from tfattr.errors import InvalidInputError, received
from tfattr.metrics._common import maps_from_attributions

__all__ = ["sparseness", "complexity", "effective_complexity", "prepared_maps"]

_NORMALISE = (None, False, "max", "batch")


def prepared_maps(attributions, absolute: bool = True, normalise: Union[None, bool, str] = None,
                  name: str = "attributions") -> np.ndarray:
    """``(N, H, W)`` float64 maps: the channel sum of ``attributions`` (an array, a tensor or an
    ``Explanation``), ``|·|`` if ``absolute``, divided by a maximum ``|map|`` if ``normalise``
    (``"max"``: each map's own; ``"batch"``: one over every map, as Quantus's ``normalise_by_max``;
    all-zero maps stay zero)."""
    if not isinstance(absolute, (bool, np.bool_)):
        raise InvalidInputError("`absolute` must be True or False. " + received("absolute", absolute))
    if not (normalise is None or normalise is False or (isinstance(normalise, str) and normalise in _NORMALISE)):
        raise InvalidInputError("`normalise` must be None (no normalisation), 'max' (each map by its maximum "
                                "|value|) or 'batch' (one maximum over all maps, Quantus's normalise_by_max). "
                                + received("normalise", normalise))
    maps = maps_from_attributions(attributions, name)
    if absolute:
        maps = np.abs(maps)
    if normalise == "max":
        peak = np.abs(maps).max(axis=(1, 2), keepdims=True)
        maps = maps / np.where(peak > 0, peak, 1.0)
    elif normalise == "batch":
        peak = np.abs(maps).max()
        if peak > 0:
            maps = maps / peak
    return maps


def _non_negative(maps: np.ndarray, metric: str) -> np.ndarray:
    if (maps < 0).any():
        first = tuple(int(i) for i in np.argwhere(maps < 0)[0])
        raise InvalidInputError(
            f"`attributions` must give non-negative maps with `absolute=False` ({metric} is defined on "
            f"non-negative values; keep `absolute=True` for |map|). "
            + received(f"map{list(first)}", float(maps[first])))
    return maps.reshape(maps.shape[0], -1)


def sparseness(attributions, absolute: bool = True, normalise: Union[None, bool, str] = None) -> np.ndarray:
    r"""Sparseness: the Gini index of the map (Chalasani et al., "Concise Explanations of Neural
    Networks using Adversarial Training", ICML 2020; Quantus ``Sparseness``). Higher is better.

    With the ``n = H·W`` values of ``|map|`` sorted increasingly, ``a_(1) ≤ … ≤ a_(n)``,

    ``G = Σ_i (2i − n − 1) a_(i) / (n Σ_i a_(i))``

    in ``[0, 1 − 1/n]``: 0 for a uniform map, ``1 − 1/n`` when one pixel holds all the
    attribution. An all-zero map gives 0 (as Quantus).

    Args:
        attributions: ``(N, H, W, C)`` attributions (summed over channels), ``(N, H, W)`` maps,
            one ``(H, W)`` map, or an ``Explanation``.
        absolute: take ``|map|`` (the paper's; Quantus's ``abs=True``). With ``False`` the maps
            must be non-negative.
        normalise: ``None`` (default), ``"max"`` or ``"batch"`` (Quantus's default,
            ``normalise=True``); the Gini index does not depend on it.

    Returns:
        ``(N,)`` float64.

    Example:
        >>> sparseness(expl.attributions).mean()
    """
    values = np.sort(_non_negative(prepared_maps(attributions, absolute, normalise), "Sparseness"), axis=1)
    n = values.shape[1]
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    total = values.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (values @ weights) / (n * np.where(total > 0, total, 1.0)), 0.0)


def complexity(attributions, absolute: bool = True, normalise: Union[None, bool, str] = None) -> np.ndarray:
    r"""Complexity: the entropy of the fractional contributions (Bhatt, Weller & Moura, "Evaluating
    and Aggregating Feature-based Model Explanations", IJCAI 2020, "complexity"; Quantus ``Complexity``).
    Lower is better.

    ``P_g(i) = |g_i| / Σ_j |g_j|`` over the ``H·W`` pixels, and

    ``μ_C = −Σ_i P_g(i) ln P_g(i)``  (natural logarithm, ``0 ln 0 = 0``)

    in ``[0, ln(H·W)]``: 0 when one pixel holds everything, ``ln(H·W)`` for a uniform map. An
    all-zero map has no distribution: ``nan``.

    Args:
        attributions: ``(N, H, W, C)``, ``(N, H, W)``, ``(H, W)`` or an ``Explanation``.
        absolute: take ``|map|`` (the paper's; Quantus's ``abs=True``). With ``False`` the maps
            must be non-negative.
        normalise: ``None`` (default), ``"max"`` or ``"batch"`` (Quantus's default); the entropy
            does not depend on it.

    Returns:
        ``(N,)`` float64 (nats).

    Example:
        >>> complexity(expl.attributions).mean()
    """
    values = _non_negative(prepared_maps(attributions, absolute, normalise), "Complexity")
    total = values.sum(axis=1, keepdims=True)
    share = values / np.where(total > 0, total, 1.0)
    logs = np.log(np.where(share > 0, share, 1.0))
    entropy = -(share * logs).sum(axis=1)
    return np.where(total[:, 0] > 0, entropy, np.nan)


def effective_complexity(attributions, eps: float = 1e-5, absolute: bool = True,
                         normalise: Optional[Union[bool, str]] = "max") -> np.ndarray:
    r"""Effective complexity: the number of pixels whose attribution exceeds a threshold (Nguyen &
    Martínez, "On Quantitative Aspects of Model Interpretability", 2020; Quantus
    ``EffectiveComplexity``). Lower is better.

    ``μ_E = |{ i : a_i > ε }|`` with ``a = |map|`` divided by its maximum (``normalise="max"``,
    the default here, so ``ε`` is relative to each map's peak). Quantus divides by one maximum over
    all the maps it is given (``normalise="batch"``) by default.

    Args:
        attributions: ``(N, H, W, C)``, ``(N, H, W)``, ``(H, W)`` or an ``Explanation``.
        eps: the threshold ``ε`` (Quantus's default ``1e-5``), ≥ 0.
        absolute: take ``|map|`` (Quantus's ``abs=True``); with ``False`` the signed map is
            compared with ``ε`` (negative values never count).
        normalise: ``"max"`` (default), ``"batch"`` (Quantus) or ``None`` (raw values).

    Returns:
        ``(N,)`` int64 counts in ``[0, H·W]``.

    Example:
        >>> effective_complexity(expl.attributions, eps=0.05)
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) or not (
            np.isfinite(eps) and eps >= 0):
        raise InvalidInputError("`eps` must be a non-negative number. " + received("eps", eps))
    maps = prepared_maps(attributions, absolute, normalise)
    return (maps.reshape(maps.shape[0], -1) > float(eps)).sum(axis=1).astype(np.int64)
