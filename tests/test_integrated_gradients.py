"""Integrated Gradients: analytic values, axioms, convergence, batching."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CHUNK_SIZES, as_image, assert_float32_close, scalar_model, small_cnn

from tfattr import Gradient, InputXGradient, IntegratedGradients
from tfattr.core.quadrature import RULES
from tfattr.errors import InvalidInputError

relu = keras.ops.relu


def one_minus_relu_one_minus_x():
    return scalar_model(lambda v: 1.0 - relu(1.0 - v[:, 0]), 1)


def test_gradient_saturates_at_2_but_ig_from_0_gives_1():
    model = one_minus_relu_one_minus_x()
    x = as_image([2.0])
    assert float(np.asarray(Gradient(model).attribute(x, target=0)).ravel()[0]) == 0.0
    for rule in ("riemann_middle", "riemann_trapezoid", "gauss_legendre", "riemann_left"):
        ig = IntegratedGradients(model, steps=64, rule=rule).attribute(x, target=0)
        assert float(np.asarray(ig).ravel()[0]) == pytest.approx(1.0, abs=1e-6), rule
    # the paper's right rule misses the kink by at most one step width: 2 · 1/M
    ig = IntegratedGradients(model, steps=500).attribute(x, target=0)
    assert float(np.asarray(ig).ravel()[0]) == pytest.approx(1.0, abs=2 / 500 + 1e-6)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_implementation_invariance_of_two_functionally_equal_relu_networks(rule):
    f1 = scalar_model(lambda v: relu(relu(v[:, 0]) - 1.0 - relu(v[:, 1])), 2)
    f2 = scalar_model(lambda v: relu(relu(v[:, 0] - 1.0) - relu(v[:, 1])), 2)
    x = as_image([3.0, 1.0])
    a1 = np.asarray(IntegratedGradients(f1, steps=500, rule=rule).attribute(x, target=0)).ravel()
    a2 = np.asarray(IntegratedGradients(f2, steps=500, rule=rule).attribute(x, target=0)).ravel()
    np.testing.assert_allclose(a1, [1.5, -0.5], atol=0.05)
    np.testing.assert_allclose(a2, [1.5, -0.5], atol=0.05)
    np.testing.assert_allclose(a1, a2, atol=0.01)


def test_smooth_function_from_a_nonzero_baseline():
    f = scalar_model(lambda v: 5 * v[:, 0] + v[:, 1] ** 2 + keras.ops.sin(v[:, 2]), 3)
    x, z = as_image([1.0, 2.0, 3.0]), as_image([0.5, 1.0, 1.0])
    expected = [2.5, 3.0, math.sin(3.0) - math.sin(1.0)]  # (2.5, 3.0, −0.7004)
    ig = IntegratedGradients(f, baseline=z, steps=500).attribute(x, target=0)
    np.testing.assert_allclose(np.asarray(ig).ravel(), expected, atol=5e-3)
    exact = IntegratedGradients(f, baseline=z, steps=8, rule="gauss_legendre").attribute(x, target=0)
    np.testing.assert_allclose(np.asarray(exact).ravel(), expected, atol=1e-5)
    assert abs(float(exact.delta[0])) < 1e-5


def test_dummy_input_gets_exactly_zero_and_linearity_holds():
    f1 = scalar_model(lambda v: keras.ops.tanh(v[:, 0]) * 2.0, 2)
    f2 = scalar_model(lambda v: v[:, 0] ** 3, 2)
    both = scalar_model(lambda v: 3.0 * keras.ops.tanh(v[:, 0]) * 2.0 - 2.0 * v[:, 0] ** 3, 2)
    x = as_image([0.7, 5.0])
    a1, a2, a12 = (np.asarray(IntegratedGradients(m, steps=20, rule="gauss_legendre").attribute(x, target=0)).ravel()
                   for m in (f1, f2, both))
    assert a1[1] == 0.0 and a12[1] == 0.0  # sensitivity (b): x2 never matters
    np.testing.assert_allclose(a12, 3 * a1 - 2 * a2, atol=1e-6)


def test_completeness_delta_shrinks_as_steps_grow(smooth_cnn, images):
    errors = []
    for steps in (8, 32, 128):
        expl = IntegratedGradients(smooth_cnn, steps=steps).attribute(images)
        recomputed = expl.attributions.reshape(len(images), -1).sum(axis=1) - (expl.scores - expl.baseline_scores)
        np.testing.assert_allclose(expl.delta, recomputed, atol=1e-6)
        errors.append(np.abs(expl.relative_delta).max())
    assert errors[0] > errors[1] > errors[2]


def test_gauss_legendre_reaches_1e4_relative_with_far_fewer_steps_than_the_right_rule(smooth_cnn, images):
    gl = IntegratedGradients(smooth_cnn, steps=16, rule="gauss_legendre").attribute(images)
    right = IntegratedGradients(smooth_cnn, steps=256, rule="riemann_right").attribute(images)
    assert gl.relative_delta.max() < 1e-4
    assert right.relative_delta.max() > 1e-4  # 16× the gradients and still not there


def test_completeness_on_a_relu_cnn_with_biases(relu_cnn, images):
    expl = IntegratedGradients(relu_cnn, steps=300, rule="riemann_trapezoid").attribute(images)
    assert expl.relative_delta.max() < 0.02
    # the biases make IG differ from gradient × input (the network is not homogeneous)
    ixg = np.asarray(InputXGradient(relu_cnn).attribute(images, target=expl.targets))
    assert np.abs(np.asarray(expl) - ixg).max() > 1e-3


def test_input_x_gradient_equals_ig_from_zero_on_a_bias_free_relu_network(images):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    ig = IntegratedGradients(model, steps=7).attribute(images, target=1)
    ixg = InputXGradient(model).attribute(images, target=1)
    np.testing.assert_allclose(np.asarray(ig), np.asarray(ixg), atol=1e-5)


def test_batch_size_invariance_and_model_call_count(images):
    model = small_cnn("relu", counter=True)
    counter = model.get_layer("counter").calls
    results = {}
    for batch_size in CHUNK_SIZES + (len(images) * 10,):
        before = int(counter.numpy())
        expl = IntegratedGradients(model, steps=10, batch_size=batch_size).attribute(images, target=2)
        calls = int(counter.numpy()) - before
        points = len(images) * 10
        # explicit classes: no forward pass on x (f(x) comes from the rows at α = 1); one chunk per
        # batch of points, plus one forward pass on the shared zero baseline
        assert calls == math.ceil(points / batch_size) + 1
        assert expl.gradients == points
        results[batch_size] = np.asarray(expl)
    for batch_size in CHUNK_SIZES[1:] + (len(images) * 10,):
        assert_float32_close(results[batch_size], results[CHUNK_SIZES[0]], err_msg=f"batch_size={batch_size}")


def test_left_rule_reuses_the_baseline_scores_instead_of_extra_forward_passes(images):
    model = small_cnn("relu", counter=True)
    counter = model.get_layer("counter").calls
    before = int(counter.numpy())
    expl = IntegratedGradients(model, steps=5, rule="riemann_left", batch_size=15).attribute(images, target=0)
    # one chunk of 15 points (f(z) read off its α = 0 rows) and one forward pass for f(x): no α = 1 node
    assert int(counter.numpy()) - before == 2
    direct = model(np.zeros_like(images[:1]), training=False).numpy()[0, 0]
    np.testing.assert_allclose(expl.baseline_scores, direct, rtol=1e-6)


def test_no_retracing_across_calls_with_other_batch_sizes_steps_and_rules(relu_cnn, images):
    ig = IntegratedGradients(relu_cnn, steps=10, batch_size=4)
    ig.attribute(images)
    ig.attribute(images[:1], steps=3, rule="gauss_legendre")
    ig.attribute(images[:2], steps=17, baseline="uniform", n_baselines=3)
    engine = ig._engines[("index", False)]
    assert engine.traces == 1


def test_single_image_and_tensor_inputs_come_back_in_kind(relu_cnn, images):
    batch = IntegratedGradients(relu_cnn, steps=8).attribute(images, target=1)
    single = IntegratedGradients(relu_cnn, steps=8).attribute(images[1], target=1)
    assert single.single and not batch.single
    np.testing.assert_allclose(np.asarray(single), np.asarray(batch)[1], atol=1e-6)
    as_tensor = IntegratedGradients(relu_cnn, steps=8).attribute(tf.constant(images), target=1)
    assert isinstance(as_tensor.attributions, tf.Tensor)
    np.testing.assert_allclose(as_tensor.attributions.numpy(), np.asarray(batch), atol=1e-6)


def test_float64_model_integrates_in_float64(images):
    model = small_cnn("tanh", seed=2, dtype="float64")
    x = images.astype(np.float64)
    expl = IntegratedGradients(model, steps=24, rule="gauss_legendre").attribute(x)
    assert expl.attributions.dtype == np.float64
    assert expl.relative_delta.max() < 1e-9


def test_chunks_in_flight_do_not_change_a_bit_of_the_result(relu_cnn, images):
    """Chunks run concurrently but are summed in chunk order: bit-identical to one at a time,
    traced once, and the model runs exactly once per chunk."""
    model = small_cnn("relu", seed=3, counter=True)
    counter = model.get_layer("counter").calls
    x = np.concatenate([images, images[::-1]])
    one = IntegratedGradients(model, steps=20, batch_size=7, parallel_chunks=1, verbose=0)
    four = IntegratedGradients(model, steps=20, batch_size=7, parallel_chunks=4, verbose=0)
    a = one.attribute(x, target=[0, 1, 2, 3, 4, 0])
    before = int(counter.numpy())
    b = four.attribute(x, target=[0, 1, 2, 3, 4, 0], baseline="uniform", seed=1)
    assert int(counter.numpy()) - before == -(-6 * 20 // 7) + 1  # ceil(120 / 7) chunks + f(z), no more
    c = one.attribute(x, target=[0, 1, 2, 3, 4, 0], baseline="uniform", seed=1)
    np.testing.assert_array_equal(np.asarray(b), np.asarray(c))
    np.testing.assert_array_equal(b.delta, c.delta)
    np.testing.assert_array_equal(np.asarray(four.attribute(x, target=[0, 1, 2, 3, 4, 0])), np.asarray(a))
    assert four._engines[("index", False)].traces == 1
    with pytest.raises(ValueError, match="parallel_chunks"):
        IntegratedGradients(model, parallel_chunks=0)


class KerasCounter(keras.layers.Layer):
    """Counts forward passes with a Keras variable: ``assign_add`` is a read then an
    ``AssignVariableOp``, which loses increments when two chunks run the model at once."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int64", name="calls")

    def call(self, inputs):
        self.calls.assign_add(1)
        return inputs


def test_a_model_that_writes_its_variables_runs_its_chunks_one_at_a_time(images):
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, small_cnn("relu", seed=4)(KerasCounter(name="counter")(inputs)))
    counter = model.get_layer("counter").calls
    ig = IntegratedGradients(model, steps=10, batch_size=1, parallel_chunks=2, verbose=0)
    for _ in range(20):  # 31 chunks each; with two in flight increments were lost (10 of 40 runs)
        before = int(counter.numpy())
        ig.attribute(images, target=2)
        assert int(counter.numpy()) - before == 3 * 10 + 1
    engine = ig._engines[("index", False)]
    assert [fn.writes_state for fn in engine._compiled.values()] == [True]
    # atomic adds (tf.Variable.assign_add) and plain models keep their chunks in flight
    for plain in (small_cnn("relu", counter=True), small_cnn("relu")):
        method = IntegratedGradients(plain, steps=4, verbose=0)
        method.attribute(images, target=0)
        assert [fn.writes_state for fn in method._engines[("index", False)]._compiled.values()] == [False]


def test_per_image_baselines_give_each_image_its_own_draws_and_the_same_result_alone_or_in_a_batch(relu_cnn, images):
    # the SmoothTaylor authors' code draws IG_noise's baselines per image; tfattr's default shares draw n
    options = dict(baseline="uniform", n_baselines=3, steps=8, seed=5)
    per_image = IntegratedGradients(relu_cnn, per_image_baselines=True, **options)
    shared = IntegratedGradients(relu_cnn, **options)
    twin = np.concatenate([images, images[:1]])  # image 0 twice: the same pixels, the same draws
    drawn = per_image.make_baselines(twin, per_image.config).array
    assert drawn.shape == (4, 3, 16, 16, 3) and shared.make_baselines(twin, shared.config).array.shape[0] == 1
    np.testing.assert_array_equal(drawn[3], drawn[0])
    assert np.abs(drawn[0] - drawn[1]).mean() > 0.2 and np.abs(drawn[1] - drawn[2]).mean() > 0.2
    batch = per_image.attribute(twin, target=[0, 1, 2, 0])
    reversed_batch = per_image.attribute(twin[::-1], target=[0, 2, 1, 0])
    for e in range(3):
        alone = per_image.attribute(images[e:e + 1], target=[0, 1, 2][e])
        assert_float32_close(batch.attributions[e:e + 1], alone.attributions)
        assert_float32_close(reversed_batch.attributions[3 - e:4 - e], alone.attributions)
    assert_float32_close(batch.attributions[3:], batch.attributions[:1])
    # completeness holds against each image's own baselines, and they are not the shared ones
    common = shared.attribute(images, target=[0, 1, 2])
    assert np.abs(batch.baseline_scores[:3] - common.baseline_scores).max() > 1e-4
    np.testing.assert_allclose(batch.attributions.reshape(4, -1).sum(1) - (batch.scores - batch.baseline_scores),
                               batch.delta, rtol=1e-6, atol=1e-6)
    # blocks of draws until a standard error (here never reached: all max_baselines = 4 drawn) = 4 draws at once
    with pytest.warns(RuntimeWarning):
        blocks = per_image.attribute(images, target=0, n_baselines=2, baseline_tolerance=1e-9, max_baselines=4)
    assert_float32_close(blocks.attributions, per_image.attribute(images, target=0, n_baselines=4).attributions)
    with pytest.raises(InvalidInputError, match="Received: per_image_baselines='yes'"):
        IntegratedGradients(relu_cnn, per_image_baselines="yes")
