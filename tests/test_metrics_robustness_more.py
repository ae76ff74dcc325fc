"""Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018) and relative input/output stability
(Agarwal et al. 2022): analytic values on a linear model, equality with Quantus 0.6 on the same
(injected) perturbations, the class-keeping neighbourhood, seeds and named errors."""

import keras
import numpy as np
import pytest
import quantus

import tfattr
from tfattr import metrics
from tfattr.core.random import STREAM_LIPSCHITZ
from tfattr.errors import InvalidInputError, InvalidTypeError

SHAPE = (4, 4, 1)


@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(0)
    m, b = rng.normal(size=(int(np.prod(SHAPE)), 3)), rng.normal(size=3)
    inputs = keras.Input(SHAPE, dtype="float64")
    dense = keras.layers.Dense(3, dtype="float64")
    model = keras.Model(inputs, dense(keras.layers.Reshape((-1,), dtype="float64")(inputs)))
    dense.set_weights([m, b])
    return model, m


@pytest.fixture(scope="module")
def xs():
    return np.random.default_rng(1).uniform(0.1, 1.0, size=(3,) + SHAPE)


def _tanh_cnns():
    """A float64 one-channel tanh CNN with non-zero biases (its gradient moves with the input), and the
    same layers behind a Permute taking (N, C, H, W): Quantus 0.6's class-change check
    (``return_nan_when_prediction_changes``) calls ``model.predict`` on its channel-first copy of the
    batch, which a channels-last Keras model refuses."""
    keras.utils.set_random_seed(4)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=4)
    conv = keras.layers.Conv2D(3, 3, activation="tanh", bias_initializer=bias, dtype="float64")
    dense = keras.layers.Dense(3, bias_initializer=bias, dtype="float64")

    def body(h):
        return dense(keras.layers.Flatten(dtype="float64")(conv(h)))

    last = keras.Input((6, 6, 1), dtype="float64")
    first = keras.Input((1, 6, 6), dtype="float64")
    return (keras.Model(last, body(last)),
            keras.Model(first, body(keras.layers.Permute((2, 3, 1), dtype="float64")(first))))


@pytest.fixture(scope="module")
def cnns():
    return _tanh_cnns()


@pytest.fixture(scope="module")
def tanh_cnn(cnns):
    return cnns[0]


@pytest.fixture(scope="module")
def cnn_x():
    return np.random.default_rng(2).uniform(0.2, 1.0, size=(2, 6, 6, 1))


def test_lipschitz_of_the_gradient_of_a_linear_model_is_zero(linear, xs):
    model, _ = linear
    result = metrics.local_lipschitz_estimate(tfattr.Gradient(model), xs, n_perturb_samples=4, normalise=False)
    np.testing.assert_array_equal(result.score, 0.0)
    assert result.kept.all() and result.ratios.shape == (3, 4)


def test_lipschitz_of_gradient_times_input_of_a_linear_model_is_max_of_w_delta_over_delta(linear, xs):
    """``φ(x + δ) − φ(x) = w ⊙ δ``: ``L̂ = maxⱼ ‖w ⊙ δⱼ‖ / ‖δⱼ‖`` (and ≤ max |w|)."""
    model, m = linear
    result = metrics.local_lipschitz_estimate(tfattr.InputXGradient(model), xs, n_perturb_samples=6,
                                              perturb_std=0.2, normalise=False, seed=3)
    deltas = metrics.stability_perturbations(3, 6, SHAPE, "normal", 0.0, 0.2, stream=STREAM_LIPSCHITZ)
    assert deltas.std() == pytest.approx(0.2, rel=0.3)
    for n in range(3):
        w = m[:, result.targets[n]].reshape(SHAPE)
        expected = np.linalg.norm((w * deltas).reshape(6, -1), axis=1) / (np.linalg.norm(deltas.reshape(6, -1),
                                                                                          axis=1) + 1e-10)
        np.testing.assert_allclose(result.ratios[n], expected, rtol=1e-9)
        assert result.score[n] <= np.abs(w).max()
    again = metrics.local_lipschitz_estimate(tfattr.InputXGradient(model), xs, n_perturb_samples=6,
                                             perturb_std=0.2, normalise=False, seed=3)
    np.testing.assert_array_equal(again.ratios, result.ratios)
    other = metrics.local_lipschitz_estimate(tfattr.InputXGradient(model), xs, n_perturb_samples=6,
                                             perturb_std=0.2, normalise=False, seed=4)
    assert not np.allclose(other.ratios, result.ratios)


def test_relative_input_stability_of_gradient_times_input_of_a_linear_model_is_one(linear, xs):
    """``(φ(x) − φ(x'))/φ(x) = −δ/x`` where ``w ≠ 0``: numerator and denominator are both ``‖δ/x‖``."""
    model, m = linear
    result = metrics.relative_input_stability(tfattr.InputXGradient(model), xs, n_perturb_samples=5,
                                              perturb_bounds=(-0.05, 0.05), keep_prediction=False, seed=1)
    np.testing.assert_allclose(result.ratios, 1.0, rtol=1e-9)
    ros = metrics.relative_output_stability(tfattr.InputXGradient(model), xs, n_perturb_samples=5,
                                            perturb_bounds=(-0.05, 0.05), keep_prediction=False, seed=1)
    deltas = metrics.stability_perturbations(1, 5, SHAPE, "uniform", -0.05, 0.05)
    for n in range(3):
        numerator = np.linalg.norm((deltas / xs[n]).reshape(5, -1), axis=1)
        expected = numerator / np.linalg.norm(deltas.reshape(5, -1) @ m, axis=1)  # h(x) − h(x') = Wᵀδ
        np.testing.assert_allclose(ros.ratios[n], expected, rtol=1e-9)
        assert ros.score[n] == pytest.approx(expected.max(), rel=1e-9)


def test_perturbations_that_change_the_class_are_left_out(linear, xs):
    """With perturbations as large as the inputs some change the top-1 class: those ratios are NaN
    and the score is the max over the others (the paper's neighbourhood ŷ(x) = ŷ(x'))."""
    model, _ = linear
    method = tfattr.InputXGradient(model)
    kept = metrics.relative_input_stability(method, xs, n_perturb_samples=12, perturb_bounds=(-2.0, 2.0), seed=0)
    every = metrics.relative_input_stability(method, xs, n_perturb_samples=12, perturb_bounds=(-2.0, 2.0), seed=0,
                                             keep_prediction=False)
    outputs = np.asarray(model(xs))
    deltas = metrics.stability_perturbations(0, 12, SHAPE, "uniform", -2.0, 2.0)
    changed = np.stack([np.asarray(model(xs + deltas[j])).argmax(1) != outputs.argmax(1) for j in range(12)], axis=1)
    assert changed.any() and not changed.all()
    np.testing.assert_array_equal(kept.kept, ~changed)
    assert np.isnan(kept.ratios[changed]).all()
    np.testing.assert_array_equal(kept.ratios[~changed], every.ratios[~changed])
    for n in range(3):
        if (~changed[n]).any():
            assert kept.score[n] == every.ratios[n][~changed[n]].max()
        else:
            assert np.isnan(kept.score[n])


# -- Quantus 0.6 on the same perturbations ---------------------------------------------------------
def _injected(deltas):
    """A Quantus ``perturb_func`` that adds ``deltas[j]`` (the same for every image) on its j-th call of
    each batch (Quantus draws ``nr_samples`` times per batch, batch after batch)."""
    import itertools

    calls = itertools.cycle(range(len(deltas)))

    def perturb(arr, indices, **kwargs):
        delta = deltas[next(calls)].reshape(1, -1)
        return arr + delta

    return perturb


def _explain_func(method, channel_first=False):
    def explain(model, inputs, targets, **kwargs):
        inputs = np.asarray(inputs, np.float64)
        if channel_first:
            inputs = np.moveaxis(inputs, 1, -1)
        phi = np.asarray(method.attribute(inputs, target=np.asarray(targets)).attributions)
        return np.moveaxis(phi, -1, 1) if channel_first else phi
    return explain


@pytest.mark.parametrize("normalise", [False, True])
def test_lipschitz_equals_quantus_on_the_same_perturbations(tanh_cnn, cnn_x, normalise):
    method = tfattr.Gradient(tanh_cnn)
    ours = metrics.local_lipschitz_estimate(method, cnn_x, n_perturb_samples=5, perturb_std=0.1, seed=7,
                                            normalise=normalise)
    deltas = metrics.stability_perturbations(7, 5, (6, 6, 1), "normal", 0.0, 0.1, stream=STREAM_LIPSCHITZ)
    y = ours.targets
    reference = quantus.LocalLipschitzEstimate(nr_samples=5, perturb_func=_injected(deltas), normalise=normalise,
                                               disable_warnings=True)
    # Quantus normalises a whole batch by one maximum: batch_size=1 makes that per image, as tfattr
    expected = reference(model=tanh_cnn, x_batch=cnn_x, y_batch=y, a_batch=None, explain_func=_explain_func(method),
                         channel_first=False, batch_size=1)
    assert np.all(ours.score > 0)
    np.testing.assert_allclose(ours.score, expected, rtol=1e-9)


@pytest.mark.parametrize("kind", ["input", "output"])
def test_relative_stability_equals_quantus_on_the_same_perturbations(cnns, cnn_x, kind):
    """Every perturbation counted: equal to Quantus with ``return_nan_when_prediction_changes=False``.
    With its default (``True``) Quantus's score is NaN for an image as soon as one perturbation changes
    its class, where tfattr takes the max over the perturbations that keep it."""
    tanh_cnn, channel_first = cnns
    method = tfattr.Gradient(tanh_cnn)
    function = metrics.relative_input_stability if kind == "input" else metrics.relative_output_stability
    every = function(method, cnn_x, n_perturb_samples=6, perturb_bounds=(-0.3, 0.3), seed=2, keep_prediction=False)
    kept = function(method, cnn_x, n_perturb_samples=6, perturb_bounds=(-0.3, 0.3), seed=2)
    deltas = metrics.stability_perturbations(2, 6, (6, 6, 1), "uniform", -0.3, 0.3)
    cls = quantus.RelativeInputStability if kind == "input" else quantus.RelativeOutputStability
    scores = {}
    for nan_when_changed in (False, True):
        reference = cls(nr_samples=6, perturb_func=_injected(deltas), disable_warnings=True,
                        return_nan_when_prediction_changes=nan_when_changed)
        scores[nan_when_changed] = np.asarray(reference(
            model=channel_first, x_batch=np.moveaxis(cnn_x, -1, 1), y_batch=every.targets, a_batch=None,
            explain_func=_explain_func(method, channel_first=True), channel_first=True, batch_size=8), np.float64)
    assert np.all(every.score > 0)
    # ROS: Quantus's logits come from keras' Model.predict, whose compiled graph differs from the model's
    # call by ~1e-8 on this float64 model (measured: 1.4e-8, float32-level); the logit difference
    # ‖h(x) − h(x')‖ of the perturbation turns that into ~1e-6 relative
    rtol = 1e-9 if kind == "input" else 1e-5
    np.testing.assert_allclose(every.score, scores[False], rtol=rtol)
    changed = ~kept.kept.all(axis=1)
    assert changed.any()  # perturbations of ±0.3 move some copy of an image across a class boundary
    for n in range(len(cnn_x)):
        if changed[n]:  # Quantus: NaN; tfattr: the max over the copies that keep the class
            assert np.isnan(scores[True][n])
            assert kept.score[n] == np.max(every.ratios[n][kept.kept[n]]) or not kept.kept[n].any()
        else:
            np.testing.assert_allclose(kept.score[n], scores[True][n], rtol=rtol)


def test_errors_name_the_argument(linear, xs):
    model, _ = linear
    method = tfattr.Gradient(model)
    with pytest.raises(InvalidInputError, match=r"`perturb_std`.*Received: perturb_std=0"):
        metrics.local_lipschitz_estimate(method, xs, perturb_std=0)
    with pytest.raises(InvalidInputError, match=r"`perturb_bounds`.*Received: perturb_bounds=\(0.2, 0.1\)"):
        metrics.relative_input_stability(method, xs, perturb_bounds=(0.2, 0.1))
    with pytest.raises(InvalidInputError, match=r"`eps_min`.*Received: eps_min=-1"):
        metrics.relative_output_stability(method, xs, eps_min=-1)
    with pytest.raises(InvalidInputError, match=r"`n_perturb_samples`.*Received: n_perturb_samples=0"):
        metrics.local_lipschitz_estimate(method, xs, n_perturb_samples=0)
    with pytest.raises(InvalidTypeError, match=r"`method`.*Received: type\(method\)='Functional'"):
        metrics.relative_input_stability(model, xs)
