"""Quadrature rules on [0, 1] for path integrals: ``(alphas, weights)`` with ``Σ weights = 1``.

Integrated Gradients approximates ``∫₀¹ g(α) dα`` by ``Σ_m w_m g(α_m)``
(Sundararajan et al. 2017, eq. 3 is the right Riemann sum ``α_m = m/M, w_m = 1/M``).
Every rule here integrates a constant exactly, i.e. its weights sum to 1 (to the
last bit where float64 allows): a rule whose weights sum to ``(n−1)/n`` breaks
completeness by a factor before any approximation error.

``steps`` is always the number of gradient evaluations (nodes). For the trapezoid
rule ``steps`` nodes span ``steps − 1`` intervals.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Tuple

import numpy as np

from tfattr.errors import InvalidInputError, InvalidTypeError, received

#: the most nodes a rule gives (2^20): a million gradient evaluations per example and baseline
#: (minutes per example even at GPU speeds); its nodes and weights take 16 MiB, its engine rows
#: ~50 bytes each. Larger counts (``steps=10**9`` would allocate 8 GB per array) are refused.
MAX_STEPS = 1 << 20
#: the most Gauss–Legendre nodes: they are eigenvalues of an n × n matrix, O(n³) (1000 nodes
#: take ~3 s on a 2-core CPU, 2000 ~20 s); exact to degree 4095 already.
MAX_GAUSS_LEGENDRE_STEPS = 2048

__all__ = [
    "MAX_STEPS",
    "MAX_GAUSS_LEGENDRE_STEPS",
    "RULES",
    "quadrature",
    "rule_key",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "gauss_legendre",
]


def _normalise(alphas: np.ndarray, weights: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights / weights.sum()
    return np.asarray(alphas, dtype=np.float64), weights


def riemann_left(steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """Left Riemann sum: ``α_m = (m−1)/M``, ``w_m = 1/M``, m = 1..M (includes the baseline)."""
    return _normalise(np.arange(steps) / steps, np.full(steps, 1.0 / steps))


def riemann_right(steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """Right Riemann sum: ``α_m = m/M``, ``w_m = 1/M`` — the rule of the IG paper (eq. 3)."""
    return _normalise(np.arange(1, steps + 1) / steps, np.full(steps, 1.0 / steps))


def riemann_middle(steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """Midpoint rule: ``α_m = (m − ½)/M``, ``w_m = 1/M``; second-order accurate."""
    return _normalise((np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps))


def riemann_trapezoid(steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """Trapezoid rule on ``steps`` equally spaced nodes including 0 and 1.

    ``h = 1/(steps − 1)``, weights ``h·[½, 1, …, 1, ½]`` (sum exactly 1). Needs ``steps ≥ 2``.
    """
    if steps < 2:
        raise InvalidInputError(
            "The trapezoid rule needs at least 2 steps (both end points). " + received("steps", steps)
        )
    weights = np.ones(steps)
    weights[0] = weights[-1] = 0.5
    return _normalise(np.linspace(0.0, 1.0, steps), weights / (steps - 1))


def gauss_legendre(steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes mapped from [−1, 1] to [0, 1]; exact for polynomials of degree ``2·steps − 1``.

    The nodes are the eigenvalues of an ``n × n`` Jacobi matrix (``O(n³)``: about a second at 500
    steps), so they are computed once per ``steps`` and cached; the cached arrays are read-only
    (``np.copy`` them to modify).
    """
    return _gauss_legendre_cached(int(steps))


@functools.lru_cache(maxsize=32)
def _gauss_legendre_cached(steps: int) -> Tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas, weights = _normalise((nodes + 1.0) / 2.0, weights / 2.0)
    alphas.flags.writeable = False  # shared by every caller: nobody may change them in place
    weights.flags.writeable = False
    return alphas, weights


RULES: Dict[str, Callable[[int], Tuple[np.ndarray, np.ndarray]]] = {
    "riemann_left": riemann_left,
    "riemann_right": riemann_right,
    "riemann_middle": riemann_middle,
    "riemann_trapezoid": riemann_trapezoid,
    "gauss_legendre": gauss_legendre,
}
_ALIASES = {
    "left": "riemann_left",
    "right": "riemann_right",
    "middle": "riemann_middle",
    "midpoint": "riemann_middle",
    "trapezoid": "riemann_trapezoid",
    "gausslegendre": "gauss_legendre",
    "gauss-legendre": "gauss_legendre",
    "gl": "gauss_legendre",
}


def rule_key(rule: str) -> str:
    """The canonical name of a quadrature rule (short forms accepted), without computing nodes;
    a tfattr error naming ``rule`` for anything else."""
    if not isinstance(rule, str):
        raise InvalidTypeError(f"`rule` must be a string, one of {sorted(RULES)}. " + received("rule", rule))
    key = _ALIASES.get(rule.lower(), rule.lower())
    if key not in RULES:
        raise InvalidInputError(f"Unknown quadrature rule; expected one of {sorted(RULES)}. " + received("rule", rule))
    return key


def quadrature(rule: str, steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """Return ``(alphas, weights)`` (float64, shape ``(steps,)``) of a named rule.

    Args:
        rule: one of ``riemann_left``, ``riemann_right``, ``riemann_middle``,
            ``riemann_trapezoid``, ``gauss_legendre`` (short forms ``left``, ``right``,
            ``middle``, ``trapezoid`` and captum's ``gausslegendre`` are accepted).
        steps: number of nodes (gradient evaluations), ``≥ 1``.

    Example:
        >>> alphas, weights = quadrature("riemann_right", 4)
        >>> alphas.tolist(), weights.tolist()
        ([0.25, 0.5, 0.75, 1.0], [0.25, 0.25, 0.25, 0.25])
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise InvalidTypeError("`steps` must be a positive integer. " + received("steps", steps))
    if steps < 1:
        raise InvalidInputError("`steps` must be at least 1. " + received("steps", steps))
    if steps > MAX_STEPS:
        raise InvalidInputError(f"`steps` must be at most {MAX_STEPS} (2^20 gradient evaluations per example "
                                "and baseline). " + received("steps", steps))
    key = rule_key(rule)
    if key == "gauss_legendre" and steps > MAX_GAUSS_LEGENDRE_STEPS:
        raise InvalidInputError(f"`steps` must be at most {MAX_GAUSS_LEGENDRE_STEPS} for the Gauss-Legendre rule "
                                "(its nodes cost O(steps^3) to compute); use a Riemann rule for more nodes. "
                                + received("steps", steps))
    return RULES[key](int(steps))
