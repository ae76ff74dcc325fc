"""Max- and average sensitivity (Yeh et al. 2019; captum's sensitivity_max)."""

import keras
import numpy as np
import pytest

import tfattr
from tfattr import metrics
from tfattr.errors import InvalidInputError, InvalidTypeError

SHAPE = (4, 4, 2)


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


def test_the_gradient_of_a_linear_model_does_not_move(linear, xs):
    model, _ = linear
    result = metrics.max_sensitivity(tfattr.Gradient(model), xs, perturb_radius=0.3, n_perturb_samples=4)
    np.testing.assert_array_equal(result.sensitivity, 0.0)


def test_gradient_times_input_of_a_linear_model_moves_by_w_times_delta(linear, xs):
    """``φ(x + δ) − φ(x) = w ⊙ δ`` for φ = ∇f ⊙ x of a linear model: the ratio is ‖w ⊙ δⱼ‖ / ‖w ⊙ x‖."""
    model, m = linear
    method = tfattr.InputXGradient(model)
    high = metrics.max_sensitivity(method, xs, perturb_radius=0.1, n_perturb_samples=5, seed=3)
    mean = metrics.avg_sensitivity(method, xs, perturb_radius=0.1, n_perturb_samples=5, seed=3)
    deltas = metrics.sensitivity_perturbations(3, 5, SHAPE, 0.1)
    assert np.all(np.abs(deltas) <= 0.1) and deltas.shape == (5,) + SHAPE
    for n in range(3):
        w = m[:, high.targets[n]].reshape(SHAPE)
        expected = np.linalg.norm((w * deltas).reshape(5, -1), axis=1) / np.linalg.norm(w * xs[n])
        np.testing.assert_allclose(high.ratios[n], expected, rtol=1e-10)
        assert high.sensitivity[n] == pytest.approx(expected.max(), rel=1e-10)
        assert mean.sensitivity[n] == pytest.approx(expected.mean(), rel=1e-10)
    inf = metrics.max_sensitivity(method, xs, perturb_radius=0.1, n_perturb_samples=5, seed=3, norm=np.inf)
    w = m[:, inf.targets[0]].reshape(SHAPE)
    assert inf.sensitivity[0] == pytest.approx(np.abs(w * deltas).reshape(5, -1).max(1).max() / np.abs(w * xs[0]).max())
    again = metrics.max_sensitivity(method, xs, perturb_radius=0.1, n_perturb_samples=5, seed=3)
    np.testing.assert_array_equal(again.ratios, high.ratios)
    other = metrics.max_sensitivity(method, xs, perturb_radius=0.1, n_perturb_samples=5, seed=4)
    assert not np.allclose(other.ratios, high.ratios)


def test_errors_name_the_argument(linear, xs):
    model, _ = linear
    method = tfattr.Gradient(model)
    with pytest.raises(InvalidInputError, match=r"`perturb_radius`.*Received: perturb_radius=0"):
        metrics.max_sensitivity(method, xs, perturb_radius=0)
    with pytest.raises(InvalidInputError, match=r"`norm`.*Received: norm='l2'"):
        metrics.avg_sensitivity(method, xs, norm="l2")
    with pytest.raises(InvalidInputError, match=r"`n_perturb_samples`.*Received: n_perturb_samples=0"):
        metrics.max_sensitivity(method, xs, n_perturb_samples=0)
    with pytest.raises(InvalidTypeError, match=r"`method`.*Received: type\(method\)='Functional'"):
        metrics.max_sensitivity(model, xs)
