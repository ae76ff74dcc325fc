"""IG to a requested accuracy: nested trapezoid levels, per-example convergence, no repeated gradients."""

import math

import keras
import numpy as np
import pytest
from conftest import scalar_model, small_cnn

from tfattr import GuidedIntegratedGradients, IntegratedGradients
from tfattr.baselines import make_baselines


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


# -- RSI-Grad-CAM to a requested layer-completeness error ------------------------------------

def rsi_analytic():
    """A 1×1 conv with identity kernel ("features", A(α) = α x on the path from 0), then
    y = sin(A0) + A1³: the Riemann–Stieltjes sum tends to y(x) − y(0) = sin x0 + x1³."""
    inputs = keras.Input((1, 1, 2))
    a = keras.layers.Conv2D(2, 1, name="features",
                            kernel_initializer=lambda shape, dtype=None: np.eye(2, dtype="float32").reshape(shape),
                            bias_initializer="zeros")(inputs)
    flat = keras.layers.Reshape((2,))(a)
    out = keras.layers.Lambda(lambda v: keras.ops.expand_dims(keras.ops.sin(v[:, 0]) + v[:, 1] ** 3, -1))(flat)
    return keras.Model(inputs, out)


def test_rsi_tolerance_converges_per_example_and_never_repeats_a_node():
    from tfattr import RSIGradCAM

    model = rsi_analytic()
    x = batch([0.05, 0.02], [3.0, 2.0])  # a nearly linear path and a curved one
    # eq. 6 takes the gradient at the right end of each interval: first order, error ~ 1/m
    expl = RSIGradCAM(model, layer="features", tolerance=1e-2, batch_size=5, upsample=False,
                      relu=False).attribute(x, target=0)
    steps = expl.info["steps"]
    assert steps[0] < steps[1] and expl.info["converged"].all()
    assert np.all(expl.info["relative_error"] <= 1e-2)
    np.testing.assert_allclose(np.abs(expl.delta) / np.abs(expl.scores - expl.baseline_scores),
                               expl.info["relative_error"], rtol=1e-6)
    assert expl.gradients == int((steps + 1).sum())  # 2^k + 1 nodes per example, each once
    # the fixed rule needs the hard example's step count for both: the adaptive run is cheaper
    assert expl.gradients < 2 * (steps.max() + 1)
    fixed = RSIGradCAM(model, layer="features", steps=int(steps[1]) // 2, upsample=False, relu=False).attribute(
        x[1:], target=0)
    assert abs(fixed.delta[0]) / abs(fixed.scores[0] - fixed.baseline_scores[0]) > 1e-2  # one level less fails


@pytest.mark.parametrize("notebook", [False, True], ids=["eq6", "notebook"])
def test_rsi_tolerance_equals_the_fixed_sum_with_the_final_step_count(smooth_cnn, images, notebook):
    """Eq. 6 (right sum), or the notebook's trapezoid sum with positive-unit selection."""
    from tfattr import RSIGradCAM

    variant = dict(rule="trapezoid", positive_units=True) if notebook else {}
    rsi = RSIGradCAM(smooth_cnn, layer=3, tolerance=2e-3, baseline="uniform", n_baselines=2, seed=1,
                     batch_size=6, upsample=False, relu=False, **variant)
    expl = rsi.attribute(images, target=2)
    again = rsi.attribute(images, target=2)
    np.testing.assert_array_equal(np.asarray(expl), np.asarray(again))
    assert np.all(expl.info["relative_error"] <= 2e-3)
    for e in range(len(images)):
        fixed = RSIGradCAM(smooth_cnn, layer=3, steps=int(expl.info["steps"][e]), baseline="uniform", n_baselines=2,
                           seed=1, upsample=False, relu=False, **variant).attribute(images[e : e + 1], target=2)
        np.testing.assert_allclose(expl.info["weights"][e], fixed.info["weights"][0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(expl)[e], np.asarray(fixed)[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(expl.delta[e], fixed.delta[0], atol=1e-5)
        if notebook:
            np.testing.assert_allclose(expl.info["selected"][e], fixed.info["selected"][0])
    if notebook:  # on a smooth (tanh) model the trapezoid sum is second order: fewer steps than eq. 6
        right = RSIGradCAM(smooth_cnn, layer=3, tolerance=2e-3, baseline="uniform", n_baselines=2, seed=1,
                           upsample=False, relu=False).attribute(images, target=2)
        assert expl.gradients < right.gradients
        return
    with pytest.warns(RuntimeWarning, match="did not reach tolerance"):
        capped = RSIGradCAM(smooth_cnn, layer=3, tolerance=1e-9, max_steps=5).attribute(images[:1], target=2)
    assert capped.info["steps"][0] == 4 and not capped.info["converged"][0]


# -- IG_noise to a requested Monte-Carlo accuracy ---------------------------------------------

def test_baseline_tolerance_draws_until_the_standard_error_holds(smooth_cnn, images):
    # a fixed chunk size: the repeat below is bit-identical (under "auto" it agrees to float32 rounding)
    ig = IntegratedGradients(smooth_cnn, baseline="uniform", n_baselines=2, baseline_tolerance=0.3, max_baselines=40,
                             steps=8, seed=5, batch_size=16)
    expl = ig.attribute(images, target=1)
    count = expl.info["n_baselines"]
    assert expl.info["baseline_converged"].all() and np.all(expl.info["relative_standard_error"] <= 0.3)
    assert np.all(count % 2 == 0) and np.all(count >= 2)
    assert expl.gradients == 8 * int(count.sum())  # converged examples stop drawing
    np.testing.assert_array_equal(np.asarray(expl), np.asarray(ig.attribute(images, target=1)))
    # the draws form one sequence: the result is IG_noise with the same number of draws
    for e in range(len(images)):
        fixed = IntegratedGradients(smooth_cnn, baseline="uniform", n_baselines=int(count[e]), steps=8, seed=5)
        ref = fixed.attribute(images[e : e + 1], target=1)
        np.testing.assert_allclose(np.asarray(expl)[e], np.asarray(ref)[0], atol=1e-6)
        np.testing.assert_allclose(expl.delta[e], ref.delta[0], atol=1e-5)
        np.testing.assert_allclose(expl.baseline_scores[e], ref.baseline_scores[0], atol=1e-6)
    # the standard error is that of the per-draw IGs
    e = 0
    draws = np.stack([
        np.asarray(IntegratedGradients(smooth_cnn, baseline=b, steps=8).attribute(images[:1], target=1))[0]
        for b in make_baselines("uniform", images, n_baselines=int(count[e]), seed=5).array[0]])
    se = np.sqrt((draws.var(axis=0, ddof=1) / len(draws)).sum()) / np.linalg.norm(draws.mean(axis=0))
    np.testing.assert_allclose(expl.info["relative_standard_error"][e], se, rtol=1e-4)


def test_baseline_tolerance_with_adaptive_steps_refines_each_draw_on_its_own(smooth_cnn, images):
    expl = IntegratedGradients(smooth_cnn, baseline="uniform", n_baselines=3, baseline_tolerance=0.5,
                               tolerance=1e-3, seed=2).attribute(images[:1], target=0)
    assert expl.info["baseline_converged"][0]
    count = int(expl.info["n_baselines"][0])
    steps = expl.info["steps"][0]
    assert len(steps) == count and expl.gradients == sum(steps)
    draws = make_baselines("uniform", images[:1], n_baselines=count, seed=2).array[0]
    per_draw = [IntegratedGradients(smooth_cnn, baseline=z, tolerance=1e-3).attribute(images[:1], target=0)
                for z in draws]
    assert [p.info["steps"][0] for p in per_draw] == steps
    np.testing.assert_allclose(np.asarray(expl)[0], np.mean([np.asarray(p)[0] for p in per_draw], axis=0), atol=1e-6)


def test_baseline_tolerance_budget_and_bad_options(smooth_cnn, images):
    with pytest.warns(RuntimeWarning, match="did not reach baseline_tolerance"):
        expl = IntegratedGradients(smooth_cnn, baseline="uniform", n_baselines=3, baseline_tolerance=1e-6,
                                   max_baselines=5, steps=4).attribute(images[:2], target=0)
    np.testing.assert_array_equal(expl.info["n_baselines"], [5, 5])  # blocks of 3, then the 2 left
    with pytest.raises(ValueError, match="random baseline"):
        IntegratedGradients(smooth_cnn, baseline="blur", baseline_tolerance=0.1)
    with pytest.raises(ValueError, match="max_baselines"):
        IntegratedGradients(smooth_cnn, baseline="uniform", baseline_tolerance=0.1, max_baselines=1)
    with pytest.raises(ValueError, match="baseline_tolerance"):
        IntegratedGradients(smooth_cnn, baseline="uniform", baseline_tolerance=float("nan"))
