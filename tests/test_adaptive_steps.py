"""IG to a requested accuracy: nested trapezoid levels, per-example convergence, no repeated gradients."""

import math

import keras
import numpy as np
import pytest
from conftest import scalar_model, small_cnn

from tfattr import GuidedIntegratedGradients, IntegratedGradients


def analytic():
    """f = sin(v0) + v1³: from 0, IG = (sin x0, x1³) exactly."""
    return scalar_model(lambda v: keras.ops.sin(v[:, 0]) + v[:, 1] ** 3, 2)


def batch(*points):
    return np.asarray(points, np.float32).reshape(len(points), 1, 1, 2)


def test_meets_the_tolerance_with_far_fewer_gradients_than_right_riemann():
    model = analytic()
    x = batch([2.0, 1.5])
    expl = IntegratedGradients(model, tolerance=1e-4).attribute(x, target=0)
    exact = np.array([math.sin(2.0), 1.5**3])
    assert expl.relative_delta[0] <= 1e-4
    np.testing.assert_allclose(np.asarray(expl).ravel(), exact, rtol=2e-3)
    used = expl.gradients
    # right Riemann with 3× the gradients is still less accurate
    right = IntegratedGradients(model, steps=3 * used).attribute(x, target=0)
    assert right.relative_delta[0] > expl.relative_delta[0]
    assert right.relative_delta[0] > 1e-4


def test_examples_converge_independently_and_nothing_is_evaluated_twice():
    model = analytic()
    x = batch([0.05, 0.02], [3.0, 2.0])  # nearly linear path vs a curved one
    expl = IntegratedGradients(model, tolerance=1e-4, batch_size=7).attribute(x, target=0)
    steps = expl.info["steps"]
    assert steps[0] < steps[1]
    assert np.all(expl.relative_delta <= 1e-4) and expl.info["converged"].all()
    for e in range(2):
        nodes = expl.info["nodes"][e]
        assert len(nodes) == len(set(nodes)) == steps[e]  # each α once
        assert set(nodes) == set(np.linspace(0, 1, steps[e]).tolist())  # exactly the nested grid
    assert expl.gradients == steps.sum()


def test_equals_the_fixed_trapezoid_on_the_final_grid_and_is_deterministic(smooth_cnn, images):
    ig = IntegratedGradients(smooth_cnn, tolerance=1e-3, baseline="uniform", n_baselines=2, seed=3)
    expl = ig.attribute(images, target=1)
    again = ig.attribute(images, target=1)
    np.testing.assert_array_equal(np.asarray(expl), np.asarray(again))
    for e in range(len(images)):
        fixed = IntegratedGradients(smooth_cnn, rule="riemann_trapezoid", steps=int(expl.info["steps"][e]),
                                    baseline="uniform", n_baselines=2, seed=3).attribute(images[e : e + 1], target=1)
        np.testing.assert_allclose(np.asarray(expl)[e], np.asarray(fixed)[0], atol=1e-6)
    assert expl.gradients == 2 * expl.info["steps"].sum()


def test_model_calls_follow_from_the_points_of_each_level(images):
    model = small_cnn("tanh", seed=1, counter=True)
    counter = model.get_layer("counter").calls
    before = int(counter.numpy())
    expl = IntegratedGradients(model, tolerance=1e-3, batch_size=4).attribute(images, target=0)
    calls = int(counter.numpy()) - before
    steps = expl.info["steps"]
    levels = int(np.log2(steps.max() - 1))
    chunks = 0
    for k in range(levels + 1):  # rows of level k for the examples still refining
        new = 2 if k == 0 else 2 ** (k - 1)
        chunks += math.ceil(new * int(np.sum(steps >= 2**k + 1)) / 4)
    assert calls == 1 + chunks  # one forward on x (targets, f(x)), then the levels' chunks


def test_budget_ends_with_a_warning_not_an_error():
    model = analytic()
    with pytest.warns(RuntimeWarning, match="did not reach tolerance"):
        expl = IntegratedGradients(model, tolerance=1e-12, max_steps=9).attribute(batch([3.0, 2.0]), target=0)
    assert expl.info["steps"][0] == 9 and not expl.info["converged"][0]


def test_guided_ig_converges_on_the_change_between_levels(relu_cnn, images):
    """Guided gradients do not integrate to f(x) − f(z): the check is the relative L1 change
    between nested levels, and the result equals the fixed trapezoid on the final grid."""
    expl = GuidedIntegratedGradients(relu_cnn, tolerance=0.02, max_steps=257).attribute(images, target=0)
    assert expl.info["converged"].all() and np.all(expl.info["relative_error"] <= 0.02)
    e = 0
    fixed = GuidedIntegratedGradients(relu_cnn, rule="riemann_trapezoid", steps=int(expl.info["steps"][e])).attribute(
        images[e : e + 1], target=0)
    np.testing.assert_allclose(np.asarray(expl)[e], np.asarray(fixed)[0], atol=1e-6)
    with pytest.raises(ValueError, match="tolerance"):
        IntegratedGradients(relu_cnn, tolerance=-1)
