r"""One driver for the refine-until-converged loops, and the one Monte-Carlo standard-error rule.

The methods that take a requested accuracy instead of a count refine per example in rounds:
IG's ``tolerance`` (nested trapezoid levels), IG's ``baseline_tolerance`` (blocks of baseline
draws), RSI-Grad-CAM's ``tolerance`` (nested Stieltjes grids), SmoothTaylor's ``tolerance``
(blocks of roots) and NoiseTunnel's ``nt_tolerance`` (blocks of noisy copies). Each round works on
the examples still refining only; :class:`Refiner` runs the rounds (as a loop, ``for round, todo
in refiner: … refiner.record(todo, errors)``; :func:`refine` is the same with the round as a
function), stops an example once its error is at most the tolerance (after at least
``min_rounds`` rounds) or once its budget is spent, and :func:`warn_unconverged` names those that
ran out of budget.

Monte-Carlo error (:func:`relative_standard_error`): for ``k`` i.i.d. samples ``q₁…q_k`` of a map,
the sample variance of each value with Bessel's correction,

``s² = (Σ q² − k·q̄²) / (k − 1) = max(Σq²/k − q̄², 0) · k / (k − 1)``,

is defined for ``k ≥ 2`` only; the standard error of the mean is ``SE = sqrt(Σ_values s² / k)``
(the L2 norm over the map's values) and the reported error is ``‖SE‖₂ / ‖q̄‖₂`` (``‖SE‖₂`` where
the mean is 0). With fewer than two samples there is no estimate: the error is ``inf``, so one
sample never counts as converged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

__all__ = ["Refinement", "Refiner", "refine", "relative_standard_error", "warn_unconverged"]


@dataclass
class Refinement:
    """What :func:`refine` returns, per example: the last measured ``error`` (``inf`` where none),
    whether it ``converged`` (``error ≤ tolerance``) and the ``rounds`` it took part in."""

    error: np.ndarray
    converged: np.ndarray
    rounds: np.ndarray


class Refiner:
    """The refinement rounds of ``num_examples`` examples, as a loop::

        refiner = Refiner(n, tolerance, max_rounds=top + 1)
        for round_, todo in refiner:           # todo: the examples still refining
            errors = ...                       # work on todo; their errors after this round
            stopped = refiner.record(todo, errors)
        refiner.result()                       # a Refinement

    An example stops once its error is ``≤ tolerance`` after at least ``min_rounds`` rounds of its
    own, or when ``budget(rounds_done, todo)`` says it may not take another round; the loop ends
    when none is left or after ``max_rounds`` rounds.

    Args:
        num_examples: examples in all.
        tolerance: the error an example must reach.
        min_rounds: rounds an example takes at least.
        max_rounds: rounds in all at most (``None``: until ``budget`` stops every example).
        budget: ``budget(rounds_done, todo) -> mask`` over ``todo``: whether each may take one more
            round (``None``: always).
    """

    def __init__(self, num_examples: int, tolerance: float, *, min_rounds: int = 1, max_rounds: Optional[int] = None,
                 budget: Optional[Callable[[int, np.ndarray], np.ndarray]] = None):
        self.tolerance, self.min_rounds, self.max_rounds, self.budget = tolerance, min_rounds, max_rounds, budget
        self.error = np.full(num_examples, np.inf)
        self.rounds = np.zeros(num_examples, int)
        self.active = np.ones(num_examples, bool)
        self.done_rounds = 0
        self._recorded = True

    def __iter__(self):
        while self.active.any() and (self.max_rounds is None or self.done_rounds < self.max_rounds):
            todo = np.flatnonzero(self.active)
            self._recorded = False
            yield self.done_rounds, todo
            if not self._recorded:  # a round that measured nothing still counts
                self.record(todo, None)

    def record(self, todo: np.ndarray, errors: Optional[np.ndarray]) -> np.ndarray:
        """End the round of ``todo`` with their ``errors`` (``None`` or ``inf`` entries: not
        measurable yet); returns the examples that stop refining now."""
        self._recorded = True
        self.done_rounds += 1
        self.rounds[todo] += 1
        if errors is not None:
            self.error[todo] = errors
        stop = (self.error[todo] <= self.tolerance) & (self.rounds[todo] >= self.min_rounds)
        if self.budget is not None:
            stop |= ~np.asarray(self.budget(self.done_rounds, todo), bool)
        self.active[todo[stop]] = False
        return todo[stop]

    def result(self) -> Refinement:
        """Per example: the last error, whether it converged (``error ≤ tolerance``), its rounds."""
        return Refinement(error=self.error.copy(), converged=self.error <= self.tolerance, rounds=self.rounds.copy())


def refine(step: Callable[[int, np.ndarray], Optional[np.ndarray]], num_examples: int, tolerance: float, *,
           min_rounds: int = 1, max_rounds: Optional[int] = None,
           budget: Optional[Callable[[int, np.ndarray], np.ndarray]] = None) -> Refinement:
    """Run refinement rounds until every example converged or ran out of budget (a
    :class:`Refiner` loop whose round is ``step``).

    Args:
        step: ``step(round, todo) -> errors``: do round ``round`` (0, 1, …) for the examples
            ``todo`` (indices of those still refining) and return their errors after it (``None``
            or ``inf`` entries: not measurable yet).
        num_examples, tolerance, min_rounds, max_rounds, budget: as for :class:`Refiner`.

    Returns:
        A :class:`Refinement`.

    Example:
        >>> halves = lambda r, todo: np.full(len(todo), 0.5 ** (r + 1))
        >>> refine(halves, 2, 0.1).rounds.tolist()
        [4, 4]
    """
    refiner = Refiner(num_examples, tolerance, min_rounds=min_rounds, max_rounds=max_rounds, budget=budget)
    for round_, todo in refiner:
        refiner.record(todo, step(round_, todo))
    return refiner.result()


def relative_standard_error(total: np.ndarray, total_sq: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``‖SE‖₂ / ‖mean‖₂`` per example of a Monte-Carlo mean (see the module docstring).

    Args:
        total: ``(n, …)`` sums ``Σ q`` of each example's samples.
        total_sq: ``(n, …)`` sums ``Σ q²``.
        count: ``(n,)`` samples ``k`` per example.

    Returns:
        ``(n,)`` relative standard errors; ``inf`` where ``k < 2`` (no sample variance).

    Example:
        >>> q = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])            # 3 samples of a 2-value map
        >>> se = np.sqrt((q.var(axis=0, ddof=1) / 3).sum())
        >>> bool(np.isclose(relative_standard_error(q.sum(0)[None], (q**2).sum(0)[None], np.array([3]))[0],
        ...                 se / np.linalg.norm(q.mean(0))))
        True
    """
    count = np.asarray(count)
    n = len(count)
    k = count.reshape((-1,) + (1,) * (np.ndim(total) - 1)).astype(np.float64)
    mean = total / k
    with np.errstate(divide="ignore", invalid="ignore"):
        variance = np.maximum(total_sq / k - mean**2, 0.0) * k / (k - 1)
    standard_error = np.sqrt((variance / k).reshape(n, -1).sum(axis=1))
    norm = np.sqrt((mean**2).reshape(n, -1).sum(axis=1))
    error = np.where(norm > 0, standard_error / np.where(norm > 0, norm, 1), standard_error)
    return np.where(count >= 2, error, np.inf)


def warn_unconverged(owner: str, refinement: Refinement, option: str, tolerance: float, budget_name: str,
                     budget, errors: str = "relative standard errors", digits: int = 5, tail: str = "",
                     stacklevel: int = 2) -> None:
    """A ``RuntimeWarning`` naming the examples that did not converge (nothing when all did):

    ``"{owner}: 2 of 5 example(s) did not reach {option}=0.01 within {budget_name}=64 ({errors}
    [...]){; tail}."``; ``stacklevel`` counts from the caller's frame, as :func:`warnings.warn`'s
    does (the default 2 points at the caller's caller)."""
    missed = ~refinement.converged
    if not missed.any():
        return
    warnings.warn(
        f"{owner}: {int(missed.sum())} of {len(missed)} example(s) did not reach {option}={tolerance:g} within "
        f"{budget_name}={budget} ({errors} {np.round(refinement.error[missed], digits).tolist()})"
        + (f"; {tail}" if tail else "") + ".", RuntimeWarning, stacklevel=stacklevel + 1)
