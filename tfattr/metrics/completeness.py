"""Completeness error of Integrated Gradients and the Taylor reconstruction error of SmoothTaylor.

* IG (Sundararajan et al. 2017, Prop. 1): ``Σ_i IG_i(x) = f(x) − f(z)``; with several
  baselines (IG_noise, SmoothTaylor paper eq. 3) ``f(z)`` is their mean.
* SmoothTaylor (Goh et al. 2020, eq. 8): ``f(x) ≈ (1/R) Σ_r [f(z⁽ʳ⁾) + Σ_i (x_i − z_i⁽ʳ⁾) ∂f(z⁽ʳ⁾)/∂x_i]``,
  i.e. ``Σ_i ST_i ≈ f(x) − mean_r f(z⁽ʳ⁾)``.

Both errors are therefore ``|f(x) − mean f(z) − Σ_i a_i|``; they differ in what the
reference points are (baselines or roots). Reference points may be shared by every image
(``(H, W, C)`` or a scalar), one per image (``(N, H, W, C)``) or several per image
(``(N, B, H, W, C)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from tfattr.errors import InvalidInputError, received
from tfattr.metrics._common import (
    ModelScorer,
    Score,
    as_array,
    check_images,
    chunk_count,
    explained_target,
    make_bar,
    run_rows,
)

__all__ = ["CompletenessResult", "completeness_error", "taylor_error"]


@dataclass
class CompletenessResult:
    """What :func:`completeness_error` and :func:`taylor_error` return.

    Attributes:
        error: ``(N,)`` ``|f(x) − mean f(z) − Σ a|``.
        attribution_sum: ``(N,)`` ``Σ_i a_i``.
        scores: ``(N,)`` ``f(x)``.
        reference_scores: ``(N,)`` ``mean f(z)`` over each image's baselines or roots.
        targets: ``(N,)`` explained class per image (``None`` for a callable score).
    """

    error: np.ndarray
    attribution_sum: np.ndarray
    scores: np.ndarray
    reference_scores: np.ndarray
    targets: Optional[np.ndarray]

    @property
    def relative_error(self) -> np.ndarray:
        """``error / |f(x) − mean f(z)|`` (``inf`` where the gap is 0)."""
        gap = np.abs(self.scores - self.reference_scores)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, self.error / np.where(gap > 0, gap, 1.0), np.inf)


def _references(value, x: np.ndarray, name: str) -> np.ndarray:
    """``(N, B, H, W, C)`` reference points in the model dtype."""
    num, image_shape = x.shape[0], x.shape[1:]
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return np.full((num, 1) + image_shape, float(value), dtype=x.dtype)
    array = as_array(value, name)
    if array.shape == image_shape:
        array = np.broadcast_to(array, (num, 1) + image_shape)
    elif array.shape == x.shape:
        array = array[:, None]
    elif not (array.ndim == x.ndim + 1 and array.shape[0] == num and array.shape[2:] == image_shape
              and array.shape[1] > 0):
        raise InvalidInputError(
            f"`{name}` must be a number, one image {image_shape} shared by all, one per image "
            f"{x.shape} or several per image (N, count) + {image_shape}. "
            + received(f"{name}.shape", tuple(array.shape))
        )
    return np.asarray(array, dtype=x.dtype)


def _error(model, images, attributions, references, name, target, score, batch_size, verbose) -> CompletenessResult:
    batch, x, _ = check_images(model, images)
    sums = as_array(attributions, "attributions")
    if batch.single and sums.shape == x.shape[1:]:
        sums = sums[None]
    if sums.shape != x.shape:
        raise InvalidInputError(
            "`attributions` must have the images' shape (completeness sums every input feature). "
            + received("attributions.shape", tuple(np.shape(attributions)))
        )
    points = _references(references, x, name)
    scorer = ModelScorer(model, explained_target(attributions, target, score), score, batch_size, verbose)
    fx = scorer.start(x)
    num, count = points.shape[:2]
    flat = points.reshape((num * count,) + x.shape[1:])
    owner = np.repeat(np.arange(num), count)
    bar = make_bar(chunk_count(num * count, scorer.batch_size), verbose)
    fz, _ = run_rows(scorer, num * count, lambda lo, hi: (flat[lo:hi], owner[lo:hi]), bar)
    fz = fz.reshape(num, count).mean(axis=1)
    total = sums.reshape(num, -1).sum(axis=1)
    return CompletenessResult(error=np.abs(fx - fz - total), attribution_sum=total, scores=fx,
                              reference_scores=fz, targets=scorer.targets)


def completeness_error(
    model,
    images,
    attributions,
    baselines=0.0,
    target=None,
    score: Score = "logit",
    batch_size: int = 64,
    verbose: Union[int, bool, str] = "auto",
) -> CompletenessResult:
    """IG's completeness error ``|Σ_i IG_i − (f(x) − f(z))|`` (Sundararajan et al. 2017, Prop. 1).

    Use it to pick the number of quadrature steps: the error shrinks with more steps.

    Args:
        model: Keras model.
        images: ``(N, H, W, C)`` float images (or one image).
        attributions: IG attributions of the images' shape (an ``Explanation`` works too).
        baselines: a number (default 0, the black baseline), an image shared by all, one
            baseline per image or ``(N, B, H, W, C)`` (IG_noise: ``f(z)`` is their mean).
        target: the class the attributions explain (``None``: top-1).
        score: ``"logit"`` (raw outputs), ``"probability"`` or a callable — the same score
            the attributions were computed for.
        batch_size: rows (baselines) per model call.
        verbose: progress bar over the baseline passes: ``"auto"`` (≥ 64 model calls), ``1`` or ``0``.

    Returns:
        :class:`CompletenessResult`.

    Example:
        >>> completeness_error(model, images, ig.attribute(images).attributions).error
    """
    return _error(model, images, attributions, baselines, "baselines", target, score, batch_size, verbose)


def taylor_error(
    model,
    images,
    attributions,
    roots,
    target=None,
    score: Score = "logit",
    batch_size: int = 64,
    verbose: Union[int, bool, str] = "auto",
) -> CompletenessResult:
    """SmoothTaylor's reconstruction error ``|f(x) − mean_r f(z⁽ʳ⁾) − Σ_i ST_i|`` (Goh et al. 2020, eq. 8).

    Args:
        model, images, target, score, batch_size, verbose: as :func:`completeness_error`.
        attributions: SmoothTaylor attributions of the images' shape.
        roots: the roots ``z⁽ʳ⁾ = x + ε`` the attributions were computed from,
            ``(N, R, H, W, C)`` (or ``(N, H, W, C)`` for ``R = 1``).

    Returns:
        :class:`CompletenessResult` (``reference_scores`` = ``mean_r f(z⁽ʳ⁾)``).
    """
    return _error(model, images, attributions, roots, "roots", target, score, batch_size, verbose)
