"""Intervals and tests over images: how sure is a table's mean, and which differences between
methods are more than the choice of images.

* :func:`bootstrap_ci` — the percentile bootstrap interval of a mean over images (Efron &
  Tibshirani 1993, §13.3), seeded.
* :func:`paired_test` — for every pair of methods scored on the same images, the mean of the
  per-image differences, its paired bootstrap interval and a p-value (paired bootstrap, or
  scipy's Wilcoxon signed-rank test), Holm-adjusted over the pairs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import List, Optional, Sequence, Tuple

import numpy as np

from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.metrics._common import check_positive_int, check_seed

__all__ = ["bootstrap_ci", "bootstrap_means", "paired_test", "PairedComparison"]

_TESTS = ("bootstrap", "wilcoxon")


def check_confidence(confidence) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)) or not (
            0 < confidence < 1):
        raise InvalidInputError("`confidence` must be a number in (0, 1), e.g. 0.95. "
                                + received("confidence", confidence))
    return float(confidence)


def _finite(values, name="values") -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise InvalidInputError(f"`{name}` must be one value per image, a 1-D array. "
                                + received(f"{name}.shape", array.shape))
    return array[np.isfinite(array)]


def bootstrap_means(values, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """``(n_resamples,)`` means of ``values`` resampled with replacement (its finite entries):
    resample ``b`` draws ``N`` indices from ``np.random.default_rng(seed)``, all at once."""
    values = _finite(values)
    count = check_positive_int(n_resamples, "n_resamples")
    seed = check_seed(seed)
    if values.size == 0:
        return np.full(count, np.nan)
    rng = np.random.default_rng(seed)
    return values[rng.integers(0, values.size, size=(count, values.size))].mean(axis=1)


def bootstrap_ci(values, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> Tuple[float, float]:
    """The percentile bootstrap interval ``(low, high)`` of the mean of ``values`` over images.

    The ``(1 − c)/2`` and ``(1 + c)/2`` quantiles of :func:`bootstrap_means` (seeded: the same
    values and seed give the same interval on any machine). NaN entries (a metric undefined for
    an image) are left out; fewer than two finite values give ``(nan, nan)`` (one image says
    nothing about the spread). The percentile interval covers a mean at close to its nominal rate
    once the images number a few tens (slightly below it for fewer, as every bootstrap interval).

    Example:
        >>> bootstrap_ci(row.per_image["AUPC"])   # (low, high) around row.scores["AUPC"]
    """
    confidence = check_confidence(confidence)
    finite = _finite(values)
    if finite.size < 2:
        return float("nan"), float("nan")
    means = bootstrap_means(finite, n_resamples, seed)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


@dataclass
class PairedComparison:
    """One pair of methods in :func:`paired_test` (differences are ``first − second``).

    Attributes:
        first, second: the methods' names.
        metric: the metric compared.
        difference: mean over the images of ``first − second``.
        ci: ``(low, high)`` paired bootstrap interval of ``difference``.
        p_value: the test's two-sided p-value; ``p_adjusted`` Holm-adjusted over all pairs.
        significant: ``p_adjusted < 1 − confidence``: not a difference the choice of images explains.
        images: number of images with both values finite.
        better: the name of the better method by the metric's direction when significant, else ``None``.
    """

    first: str
    second: str
    metric: str
    difference: float
    ci: Tuple[float, float]
    p_value: float
    p_adjusted: float
    significant: bool
    images: int
    better: Optional[str] = None


def _holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error rate), NaN kept."""
    p = np.asarray(p_values, np.float64)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    running, m = 0.0, order.size
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def _bootstrap_p(differences: np.ndarray, n_resamples: int, seed: int) -> Tuple[float, np.ndarray]:
    means = bootstrap_means(differences, n_resamples, seed)
    # two-sided: twice the share of resampled means on the far side of 0 (Efron & Tibshirani §16.4,
    # the percentile-interval duality: 0 is outside the (1 − α) interval iff p < α)
    below, above = np.mean(means <= 0), np.mean(means >= 0)
    return float(min(1.0, 2 * min(below, above))), means


def paired_test(rows, metric: str, test: str = "bootstrap", confidence: float = 0.95, n_resamples: int = 2000,
                seed: int = 0, direction: Optional[str] = None) -> List[PairedComparison]:
    """Which methods differ on ``metric`` beyond what the choice of images explains.

    For every pair of rows (:class:`~tfattr.evaluation.EvaluationRow` from :func:`tfattr.evaluate`,
    all on the same images), the per-image differences ``first − second`` (images where either
    value is NaN left out) are tested for a zero mean: ``test="bootstrap"`` (paired bootstrap:
    the images are resampled with their pair of values, :func:`bootstrap_means`, seeded; p =
    twice the share of resampled mean differences on the far side of 0) or ``"wilcoxon"``
    (``scipy.stats.wilcoxon``, the signed-rank test of a zero median difference, exact for small
    samples). The p-values are Holm-adjusted over the pairs; a pair is ``significant`` when the
    adjusted p is below ``1 − confidence``.

    Args:
        rows: evaluation rows (``.method`` and ``.per_image[metric]``), at least two.
        metric: a column of the rows (``"AUPC"``, ``"max_sensitivity"``, …; a registered metric's
            name finds its column).
        test: ``"bootstrap"`` (default) or ``"wilcoxon"``.
        confidence: the level of the intervals and of ``significant`` (default 0.95).
        n_resamples: bootstrap resamples (default 2000).
        seed: seed of the resamples.
        direction: ``"lower"`` or ``"higher"`` is better, for ``better`` (default: the registered
            metric's, else ``None`` and ``better`` stays ``None``).

    Returns:
        One :class:`PairedComparison` per pair, in the rows' order.

    Example:
        >>> rows = tfattr.evaluate(model, images, methods)
        >>> [c for c in paired_test(rows, "AUPC") if c.significant]
    """
    from tfattr.metrics.registry import METRICS, metric_spec

    if test not in _TESTS:
        raise InvalidInputError(f"`test` must be one of {list(_TESTS)}. " + received("test", test))
    confidence = check_confidence(confidence)
    rows = list(rows)
    if len(rows) < 2 or not all(hasattr(r, "per_image") and hasattr(r, "method") for r in rows):
        raise InvalidTypeError("`rows` must be at least two evaluation rows (tfattr.evaluate's result). "
                               + received("len(rows)", len(rows)))
    column = metric
    if not all(metric in r.per_image for r in rows) and isinstance(metric, str):
        try:
            spec = metric_spec(metric)
            column = spec.label
            direction = direction or spec.direction
        except InvalidInputError:
            pass
    missing = [r.method for r in rows if column not in r.per_image]
    if missing:
        raise InvalidInputError(f"`metric` must be a column of every row; {missing[0]!r} has "
                                f"{sorted(rows[0].per_image)}. " + received("metric", metric))
    if direction is None:
        for spec in METRICS.values():
            if spec.label == column:
                direction = spec.direction
    values = [np.asarray(r.per_image[column], np.float64).ravel() for r in rows]
    if len({v.size for v in values}) != 1:
        raise InvalidInputError("Paired tests compare the same images: every row needs one value per image. "
                                + received("images per row", [v.size for v in values]))
    pairs, p_values = [], []
    for (i, a), (j, b) in combinations(enumerate(values), 2):
        both = np.isfinite(a) & np.isfinite(b)
        differences = a[both] - b[both]
        if differences.size < 2:
            p, ci, mean = float("nan"), (float("nan"), float("nan")), float("nan")
        else:
            mean = float(differences.mean())
            if test == "bootstrap":
                p, means = _bootstrap_p(differences, n_resamples, seed)
                low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
            else:
                from scipy.stats import wilcoxon

                if np.all(differences == 0):
                    p = 1.0
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)  # scipy: ties / small samples
                        p = float(wilcoxon(differences).pvalue)
                low, high = bootstrap_ci(differences, confidence, n_resamples, seed)
            ci = (float(low), float(high))
        pairs.append((rows[i].method, rows[j].method, mean, ci, int(differences.size)))
        p_values.append(p)
    adjusted = _holm(p_values)
    alpha = 1 - confidence
    result = []
    for (first, second, mean, ci, count), p, q in zip(pairs, p_values, adjusted):
        significant = bool(np.isfinite(q) and q < alpha)
        better = None
        if significant and direction in ("lower", "higher"):
            better = first if (mean < 0) == (direction == "lower") else second
        result.append(PairedComparison(first, second, column, mean, ci, float(p), float(q), significant, count,
                                       better))
    return result
