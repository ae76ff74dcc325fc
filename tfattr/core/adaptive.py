"""Nested trapezoid refinement for path integrals to a requested completeness error.

Level ``k`` of the trapezoid rule on ``[0, 1]`` uses the ``2^k + 1`` nodes ``j/2^k``;
its new nodes are the odd multiples of ``1/2^k``, so every earlier gradient is reused
and none is computed twice. With ``G(α) = ∇f(z + α(x − z)) ⊙ (x − z)`` and
``S_l`` the sum of ``G`` over level ``l``'s new nodes,

    ``T_k = 2^{−k} · (½ G(0) + ½ G(1) + Σ_{l=1..k} S_l)``.

After each level the completeness error ``|Σ_i T_k,i − (f(x) − f(z))| / |f(x) − f(z)|``
of every example is checked; converged examples get no more rows, the others get
the next level's nodes, all flattened into full chunks for the engine.

Completeness is necessary, not sufficient: a path whose integrand has a kink exactly on
a grid node, or errors that cancel across features, can pass the check early. The
``min_level`` keeps at least ``2^min_level + 1`` nodes. For a ReLU network the
integrand is piecewise constant along the path: the trapezoid error then falls like
``1/n`` (one kink per interval costs at most its jump times the interval), not ``1/n²``.
"""

from __future__ import annotations

import numpy as np

from tfattr.core.engine import PathRows

__all__ = ["level_nodes", "max_level_for", "level_bounds", "level_rows", "relative_error"]


def level_nodes(level: int) -> np.ndarray:
    """The nodes a level adds: ``{0, 1}`` at level 0, odd multiples of ``2^−level`` after."""
    if level == 0:
        return np.array([0.0, 1.0])
    return (2.0 * np.arange(1, 2 ** (level - 1) + 1) - 1.0) / 2.0**level


def max_level_for(max_steps: int) -> int:
    """The deepest level whose ``2^k + 1`` nodes fit in ``max_steps`` gradients per path."""
    level = 0
    while 2 ** (level + 1) + 1 <= max_steps:
        level += 1
    return level


def level_bounds(min_steps: int, max_steps: int):
    """``(bottom, top)``: the first level with at least ``min_steps`` nodes and the last within ``max_steps``."""
    top = max_level_for(max_steps)
    bottom = 0
    while 2**bottom + 1 < min_steps:
        bottom += 1
    return min(bottom, top), top


def level_rows(level: int, num_examples: int, num_baselines: int, todo: np.ndarray, per_example: bool) -> PathRows:
    """The rows of ``level``'s new nodes (unit weights) for the examples ``todo`` × every baseline."""
    alphas = level_nodes(level)
    rows = PathRows.grid(num_examples, num_baselines, alphas, np.ones(len(alphas)), per_example)
    keep = np.isin(rows.example, todo)
    return PathRows(rows.example[keep], rows.baseline[keep], rows.alpha[keep], rows.weight[keep])


def relative_error(total: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """``|total − gap| / |gap|`` (the absolute error where ``gap == 0``)."""
    safe = np.where(gap != 0, np.abs(gap), 1.0)
    return np.where(gap != 0, np.abs(total - gap) / safe, np.abs(total - gap))
