"""Faithfulness correlation (Bhatt et al. 2020) and infidelity (Yeh et al. 2019, captum's definition)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import small_cnn
from scipy.stats import pearsonr

import tfattr
from tfattr import metrics
from tfattr.core.random import STREAM_INFIDELITY, row_normal
from tfattr.errors import InvalidInputError
from tfattr.metrics.faithfulness import subset_masks

SHAPE = (6, 6, 2)


def _linear(classes=3, seed=0):
    """``f(x) = x·M + b`` in float64: NumPy reproduces its scores exactly."""
    rng = np.random.default_rng(seed)
    m, b = rng.normal(size=(int(np.prod(SHAPE)), classes)), rng.normal(size=classes)
    inputs = keras.Input(SHAPE, dtype="float64")
    dense = keras.layers.Dense(classes, dtype="float64")
    model = keras.Model(inputs, dense(keras.layers.Reshape((-1,), dtype="float64")(inputs)))
    dense.set_weights([m, b])
    return model, m, b


@pytest.fixture(scope="module")
def linear():
    return _linear()


@pytest.fixture(scope="module")
def xs():
    return np.random.default_rng(1).uniform(0.1, 1.0, size=(3,) + SHAPE)


@pytest.fixture(scope="module")
def cnn():
    return small_cnn("relu", size=8, seed=2)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).uniform(0, 1, size=(2, 8, 8, 3)).astype(np.float32)


# -- analytic cases --------------------------------------------------------------------------------
def test_gradient_times_input_of_a_linear_model_has_correlation_one(linear, xs):
    """Zeroing a subset S of a linear model's input drops its score by Σ_{i∈S} w_i x_i, which is the
    sum of gradient × input over S: the two sequences are equal, their correlation is 1."""
    model, _, _ = linear
    phi = tfattr.InputXGradient(model).attribute(xs).attributions
    result = metrics.faithfulness_correlation(model, xs, phi, subset_size=10, runs=15, baseline=0.0, batch_size=8)
    np.testing.assert_allclose(result.attribution_sums, result.score_drops, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.correlation, 1.0, atol=1e-12)
    assert result.subsets.sum(axis=1).tolist() == [10] * 15


@pytest.mark.parametrize("sigma", [0.003, 0.5])
@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_is_zero_for_the_matching_perturbation_of_a_linear_model(linear, xs, sigma, normalize):
    """``f(x) − f(x − I) = Mᵀ I`` for any I: the gradient has Iᵀ∇f equal to it (plain perturbation),
    gradient × input has (I / x)ᵀ(∇f ⊙ x) equal to it (captum's multiply_by_inputs)."""
    model, _, _ = linear
    gradient = tfattr.Gradient(model).attribute(xs).attributions
    plain = metrics.infidelity(model, xs, gradient, sigma=sigma, normalize=normalize, n_perturb_samples=6)
    assert np.all(plain.infidelity < 1e-24)
    phi = tfattr.InputXGradient(model).attribute(xs).attributions
    scaled = metrics.infidelity(model, xs, phi, sigma=sigma, multiply_by_inputs=True, normalize=normalize,
                                n_perturb_samples=6)
    assert np.all(scaled.infidelity < 1e-24)
    np.testing.assert_allclose(scaled.beta, 1.0, atol=1e-9)


def test_infidelity_of_a_wrong_attribution_is_the_mean_squared_miss(linear, xs):
    """For φ = 0 every product is 0: infidelity is the mean of (f(x) − f(x − I))² = (Mᵀ I)²."""
    model, m, _ = linear
    result = metrics.infidelity(model, xs, np.zeros_like(xs), sigma=0.1, n_perturb_samples=5, seed=3)
    noise = 0.1 * row_normal(3, tf.range(5), SHAPE, dtype=tf.float64, stream=STREAM_INFIDELITY).numpy()
    expected = ((noise.reshape(5, -1) @ m)[:, result.targets] ** 2).mean(axis=0)
    np.testing.assert_allclose(result.infidelity, expected, rtol=1e-10)


# -- equality with independent NumPy implementations of Quantus's and captum's loops ---------------
def test_faithfulness_correlation_equals_quantus_loop_on_the_same_draws(cnn, images):
    phi = tfattr.Gradient(cnn).attribute(images).attributions
    result = metrics.faithfulness_correlation(cnn, images, phi, subset_size=12, runs=9, seed=4, batch_size=5)
    outputs = np.asarray(cnn(images), np.float64)
    targets = outputs.argmax(axis=1)
    subsets = subset_masks(4, np.arange(9), 64, 12)
    np.testing.assert_array_equal(subsets, result.subsets)
    maps = np.asarray(phi, np.float64).sum(-1)
    for n in range(2):
        sums, drops = [], []
        for r in range(9):
            mask = subsets[r].reshape(8, 8)
            perturbed = images[n].copy()
            perturbed[mask] = images[n].min()  # Quantus's "black": the image's minimum
            sums.append(maps[n][mask].sum())
            drops.append(outputs[n, targets[n]] - float(np.asarray(cnn(perturbed[None]))[0, targets[n]]))
        np.testing.assert_allclose(result.attribution_sums[n], sums, rtol=1e-12)
        np.testing.assert_allclose(result.score_drops[n], drops, atol=1e-5)
        assert result.correlation[n] == pytest.approx(pearsonr(sums, drops).statistic, abs=1e-4)


@pytest.mark.parametrize("normalize", [False, True])
def test_infidelity_equals_captum_formula_on_the_same_draws(cnn, images, normalize):
    phi = np.asarray(tfattr.InputXGradient(cnn).attribute(images).attributions, np.float64)
    result = metrics.infidelity(cnn, images, phi, sigma=0.05, n_perturb_samples=7, multiply_by_inputs=True,
                                normalize=normalize, seed=2, batch_size=4)
    outputs = np.asarray(cnn(images), np.float64)
    targets = outputs.argmax(axis=1)
    noise = row_normal(2, tf.range(7), images.shape[1:], stream=STREAM_INFIDELITY).numpy()
    for n in range(2):
        perturbed = images[n][None] - np.float32(0.05) * noise  # float32 as the model sees it
        perturbation = (images[n][None].astype(np.float64) - perturbed) / np.where(images[n] != 0, images[n], 1.0)
        a = (perturbation * phi[n]).reshape(7, -1).sum(axis=1)
        b = outputs[n, targets[n]] - np.asarray(cnn(perturbed), np.float64)[:, targets[n]]
        if normalize:  # captum: the polynomial expansion with β = Σab / Σa²
            beta = (a * b).sum() / (a * a).sum()
            expected = (beta * beta * (a * a).sum() - 2 * beta * (a * b).sum() + (b * b).sum()) / 7
        else:
            expected = ((a - b) ** 2).mean()
        np.testing.assert_allclose(result.attribution_products[n], a, rtol=1e-9)
        np.testing.assert_allclose(result.score_drops[n], b, atol=1e-6)
        assert result.infidelity[n] == pytest.approx(expected, rel=1e-4)


# -- randomness and batching -------------------------------------------------------------------------
def test_seeded_repeatable_and_independent_of_chunks_and_batch(cnn, images):
    phi = tfattr.Gradient(cnn).attribute(images).attributions
    first = metrics.faithfulness_correlation(cnn, images, phi, subset_size=12, runs=10, seed=1, batch_size=3)
    again = metrics.faithfulness_correlation(cnn, images, phi, subset_size=12, runs=10, seed=1, batch_size=3)
    np.testing.assert_array_equal(first.score_drops, again.score_drops)
    chunked = metrics.faithfulness_correlation(cnn, images, phi, subset_size=12, runs=10, seed=1, batch_size=16)
    np.testing.assert_allclose(chunked.score_drops, first.score_drops, atol=1e-6)
    alone = metrics.faithfulness_correlation(cnn, images[1], np.asarray(phi)[1], subset_size=12, runs=10, seed=1)
    np.testing.assert_allclose(alone.score_drops[0], first.score_drops[1], atol=1e-6)
    other = metrics.faithfulness_correlation(cnn, images, phi, subset_size=12, runs=10, seed=2, batch_size=3)
    assert not np.array_equal(other.subsets, first.subsets)

    noisy = metrics.infidelity(cnn, images, phi, seed=5, batch_size=3, sigma=0.1)
    np.testing.assert_array_equal(noisy.infidelity, metrics.infidelity(cnn, images, phi, seed=5, batch_size=3,
                                                                        sigma=0.1).infidelity)
    chunked = metrics.infidelity(cnn, images, phi, seed=5, batch_size=16, sigma=0.1)
    np.testing.assert_allclose(chunked.score_drops, noisy.score_drops, atol=1e-6)
    assert not np.allclose(metrics.infidelity(cnn, images, phi, seed=6, sigma=0.1).score_drops, noisy.score_drops)


def test_errors_name_the_argument(cnn, images):
    phi = np.ones_like(images)
    with pytest.raises(InvalidInputError, match=r"`subset_size`.*Received: subset_size=65"):
        metrics.faithfulness_correlation(cnn, images, phi, subset_size=65)
    with pytest.raises(InvalidInputError, match=r"`runs`.*Received: runs=1"):
        metrics.faithfulness_correlation(cnn, images, phi, subset_size=4, runs=1)
    with pytest.raises(InvalidInputError, match=r"`baseline`.*Received: baseline='blur'"):
        metrics.faithfulness_correlation(cnn, images, phi, subset_size=4, baseline="blur")
    with pytest.raises(InvalidInputError, match=r"`sigma`.*Received: sigma=0"):
        metrics.infidelity(cnn, images, phi, sigma=0)
    with pytest.raises(InvalidInputError, match=r"`attributions`.*Received: attributions.shape=\(2, 8, 8\)"):
        metrics.infidelity(cnn, images, phi.sum(-1))
    with pytest.raises(InvalidInputError, match=r"`normalize`.*Received: normalize='yes'"):
        metrics.infidelity(cnn, images, phi, normalize="yes")


def test_a_second_call_reuses_the_compiled_rows_and_host_draws_equal_device_draws(cnn, images):
    from tfattr.core.random import compiled_row_draws, row_uniform
    from tfattr.metrics.faithfulness import _ENGINES

    phi = np.ones_like(images)
    for seed in (0, 1):
        metrics.faithfulness_correlation(cnn, images, phi, subset_size=5, runs=3, seed=seed, batch_size=4, verbose=0)
    assert _ENGINES[cnn][(4, 0)].traces == 1
    eager = row_uniform(9, tf.constant([0, 3]), (5,), dtype=tf.float64, stream=8).numpy()
    np.testing.assert_array_equal(compiled_row_draws("uniform", 9, [0, 3], (5,), tf.float64, stream=8), eager)


def test_output_chooses_the_scored_output_of_a_two_output_model():
    # the error for a several-output model asks for `output=`: the metrics take it, and score
    # exactly as the one-output model made of that head
    inputs = keras.Input((4, 4, 1))
    flat = keras.layers.Flatten()(inputs)
    head = keras.layers.Dense(3, bias_initializer="ones", name="head")
    two = keras.Model(inputs, [keras.layers.Dense(5, name="other")(flat), head(flat)])
    one = keras.Model(inputs, head(flat))
    x = np.random.default_rng(0).uniform(size=(2, 4, 4, 1)).astype(np.float32)
    phi = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    with pytest.raises(InvalidInputError, match="output="):
        metrics.infidelity(two, x, phi, target=1)
    for chosen in (1, "head"):
        got = metrics.infidelity(two, x, phi, target=[1, 2], output=chosen)
        want = metrics.infidelity(one, x, phi, target=[1, 2])
        np.testing.assert_allclose(got.score_drops, want.score_drops, rtol=1e-6, atol=1e-7)
        got = metrics.faithfulness_correlation(two, x, phi, target=[1, 2], subset_size=4, runs=5, output=chosen)
        want = metrics.faithfulness_correlation(one, x, phi, target=[1, 2], subset_size=4, runs=5)
        np.testing.assert_allclose(got.score_drops, want.score_drops, rtol=1e-6, atol=1e-7)
