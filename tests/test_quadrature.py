import math

import numpy as np
import pytest

from tfattr.core.quadrature import RULES, quadrature


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("steps", [2, 3, 7, 49, 50, 300])
def test_weights_sum_to_one_and_nodes_lie_in_unit_interval(rule, steps):
    alphas, weights = quadrature(rule, steps)
    assert len(alphas) == len(weights) == steps
    assert math.fsum(weights) == pytest.approx(1.0, abs=1e-15)  # a few ulp, not (n-1)/n
    assert np.all((alphas >= 0) & (alphas <= 1))
    assert np.all(weights > 0)


def test_riemann_rules_match_the_paper_formulas():
    alphas, weights = quadrature("riemann_right", 4)
    np.testing.assert_allclose(alphas, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(weights, [0.25] * 4)
    np.testing.assert_allclose(quadrature("riemann_left", 4)[0], [0.0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(quadrature("riemann_middle", 4)[0], [0.125, 0.375, 0.625, 0.875])
    alphas, weights = quadrature("riemann_trapezoid", 5)
    np.testing.assert_allclose(alphas, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(weights, [0.125, 0.25, 0.25, 0.25, 0.125])


@pytest.mark.parametrize("steps", [1, 2, 5, 10])
def test_gauss_legendre_is_exact_for_polynomials_of_degree_2n_minus_1(steps):
    alphas, weights = quadrature("gauss_legendre", steps)
    for degree in range(2 * steps):
        assert np.dot(weights, alphas**degree) == pytest.approx(1.0 / (degree + 1), rel=1e-12)


def test_midpoint_and_trapezoid_integrate_linear_functions_exactly_and_right_does_not():
    for rule in ("riemann_middle", "riemann_trapezoid"):
        alphas, weights = quadrature(rule, 7)
        assert np.dot(weights, 3 * alphas + 1) == pytest.approx(2.5, rel=1e-14)
    alphas, weights = quadrature("riemann_right", 7)
    assert np.dot(weights, alphas) == pytest.approx(0.5 + 1 / 14, rel=1e-14)


def test_aliases_and_errors():
    np.testing.assert_array_equal(quadrature("gausslegendre", 3)[0], quadrature("gauss_legendre", 3)[0])
    with pytest.raises(ValueError, match="Unknown quadrature rule.*Received: rule='simpson'"):
        quadrature("simpson", 4)
    with pytest.raises(ValueError, match="at least 1"):
        quadrature("riemann_right", 0)
    with pytest.raises(TypeError, match="positive integer"):
        quadrature("riemann_right", 2.5)
    with pytest.raises(ValueError, match="at least 2 steps"):
        quadrature("riemann_trapezoid", 1)


def test_gauss_legendre_nodes_are_computed_once_per_step_count_and_read_only(monkeypatch, relu_cnn, images):
    """An ``attribute`` call validates the rule and then integrates with it: the O(n³) eigenproblem
    behind the nodes runs at most once per ``steps``, and not again on the next call."""
    import tfattr
    from tfattr.core import quadrature as quadrature_module

    calls = []
    original = np.polynomial.legendre.leggauss

    def counting(n):
        calls.append(n)
        return original(n)

    monkeypatch.setattr(np.polynomial.legendre, "leggauss", counting)
    cached = getattr(quadrature_module, "_gauss_legendre_cached", None)
    if cached is not None:
        cached.cache_clear()
    ig = tfattr.IntegratedGradients(relu_cnn, rule="gauss_legendre", steps=37)
    ig.attribute(images[:1], target=0)
    ig.attribute(images[:1], target=0, steps=23)
    ig.attribute(images[:1], target=0)
    assert sorted(calls) == [23, 37]
    alphas, weights = quadrature("gauss_legendre", 37)
    for array in (alphas, weights):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0.5
    again = quadrature("gauss_legendre", 37)
    assert math.fsum(again[1]) == pytest.approx(1.0, abs=1e-15) and np.all(np.diff(again[0]) > 0)
