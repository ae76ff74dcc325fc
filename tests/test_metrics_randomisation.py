"""Randomisation sanity checks: MPRT (Adebayo et al. 2018) and the random logit test (Sixt et al. 2020)."""

import keras
import numpy as np
import pytest
from conftest import small_cnn
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

import tfattr
from tfattr import metrics
from tfattr.errors import InvalidInputError, InvalidTypeError


@pytest.fixture(scope="module")
def cnn():
    return small_cnn("relu", size=12, seed=3)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).uniform(0, 1, size=(2, 12, 12, 3)).astype(np.float32)


def _maps(method, images, targets):
    return np.abs(np.asarray(method.attribute(images, target=targets).attributions, np.float64)).sum(-1)


def test_first_row_is_one_and_trained_model_untouched(cnn, x):
    before = [w.copy() for w in cnn.get_weights()]
    outputs = np.asarray(cnn(x))
    result = metrics.model_parameter_randomisation(cnn, x, tfattr.Gradient(cnn, batch_size=8), order="cascading")
    with_weights = [layer.name for layer in reversed(cnn.layers) if layer.weights]  # dense, dense, conv, conv
    assert len(with_weights) == 4 and result.layers == [None] + with_weights
    assert result.similarities.shape == (5, 2)
    np.testing.assert_allclose(result.similarities[0], 1.0, atol=1e-9)
    assert all(np.array_equal(a, b) for a, b in zip(before, cnn.get_weights()))
    np.testing.assert_array_equal(np.asarray(cnn(x)), outputs)
    np.testing.assert_array_equal(result.targets, np.argmax(outputs, axis=1))


@pytest.mark.parametrize("order", ["cascading", "independent"])
def test_rows_equal_scipy_spearman_on_hand_randomised_copies(cnn, x, order):
    result = metrics.model_parameter_randomisation(cnn, x, tfattr.Gradient(cnn, batch_size=8), order=order, seed=5)
    names = result.layers[1:]
    trained = _maps(tfattr.Gradient(cnn), x, result.targets)
    for k in range(1, len(names) + 1):
        chosen = names[:k] if order == "cascading" else [names[k - 1]]
        copy = metrics.randomise_layers(cnn, chosen, seed=5)
        maps = _maps(tfattr.Gradient(copy), x, result.targets)
        expected = [spearmanr(trained[n].ravel(), maps[n].ravel()).statistic for n in range(len(x))]
        np.testing.assert_allclose(result.similarities[k], expected, atol=1e-6)


def test_ssim_equals_skimage(cnn, x):
    names = metrics.randomisable_layers(cnn)
    chosen = [names[0], names[-1]]  # the top dense layer and the first convolution
    result = metrics.model_parameter_randomisation(cnn, x, tfattr.Gradient(cnn), similarity="ssim",
                                                   layers=chosen, order="cascading")
    trained = _maps(tfattr.Gradient(cnn), x, result.targets)
    maps = _maps(tfattr.Gradient(metrics.randomise_layers(cnn, chosen)), x, result.targets)
    for n in range(len(x)):
        a, b = trained[n], maps[n]
        data_range = max(a.max(), b.max()) - min(a.min(), b.min())
        assert result.similarities[2, n] == pytest.approx(structural_similarity(a, b, data_range=data_range), abs=1e-6)
    np.testing.assert_allclose(result.similarities[0], 1.0)


def _two_heads():
    """Class 0 comes from head ``a``; head ``b``'s weights do not enter class 0's gradient."""
    keras.utils.set_random_seed(2)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=2)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="tanh", bias_initializer=bias, name="conv")(inputs))
    a = keras.layers.Dense(1, bias_initializer=bias, name="head_a")(h)
    b = keras.layers.Dense(2, bias_initializer=bias, name="head_b")(h)
    return keras.Model(inputs, keras.layers.Concatenate(name="join")([a, b]))


def test_layer_outside_the_explained_path_keeps_the_map():
    model = _two_heads()
    images = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
    result = metrics.model_parameter_randomisation(model, images, tfattr.Gradient(model), targets=[0, 0],
                                                   order="independent")
    assert result.layers == [None, "head_b", "head_a", "conv"]
    np.testing.assert_array_equal(result.similarities[1], 1.0)  # head_b: class 0's gradient is bit-identical
    assert np.all(result.similarities[2] < 0.99) and np.all(result.similarities[3] < 0.99)
    np.testing.assert_array_equal(result.targets, [0, 0])


def test_gradient_decorrelates_under_cascading_randomisation(cnn, x):
    """Adebayo et al.'s headline for the gradient: once every layer is re-drawn, the map no longer
    resembles the trained model's. The re-drawn weights are seeded draws independent of the
    trained ones, so the rank correlation of the two |gradient| maps has no reason to stay near 1
    (measured ≈ 0.1 here); 0.5 leaves a wide margin for any CPU's rounding."""
    result = metrics.model_parameter_randomisation(cnn, x, tfattr.Gradient(cnn), order="cascading")
    assert result.mean[0] == pytest.approx(1.0)
    assert result.mean[-1] < 0.5
    again = metrics.model_parameter_randomisation(cnn, x, tfattr.Gradient(cnn), order="cascading")
    np.testing.assert_array_equal(result.similarities, again.similarities)  # seeded


def test_with_model_keeps_options_and_layer(cnn, x):
    copy = keras.models.clone_model(cnn)
    copy.set_weights(cnn.get_weights())
    ig = tfattr.IntegratedGradients(cnn, steps=7, batch_size=4)
    rebound = ig.with_model(copy)
    assert rebound.model is copy and rebound.config["steps"] == 7
    np.testing.assert_allclose(rebound.attribute(x).attributions, ig.attribute(x).attributions, rtol=1e-5, atol=1e-7)
    first_conv = metrics.randomisable_layers(cnn)[-1]
    cam = tfattr.GradCAM(cnn, layer=first_conv).with_model(copy)
    assert cam.layer is copy.get_layer(first_conv)


def _linear(classes=4, features=12, seed=0):
    rng = np.random.default_rng(seed)
    inputs = keras.Input((2, 2, 3))
    dense = keras.layers.Dense(classes, name="linear")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    model.get_layer("linear").set_weights([rng.normal(size=(features, classes)), rng.normal(size=classes)])
    return model


def test_random_logit_on_a_linear_model_compares_weight_rows():
    """``∂f_c/∂x = W[:, c]``: the map of class c is ``|W[:, c]|`` summed over channels."""
    model = _linear()
    images = np.random.default_rng(1).normal(size=(3, 2, 2, 3)).astype(np.float32)
    result = metrics.random_logit(model, images, tfattr.Gradient(model), similarity="spearman", seed=4)
    assert np.all(result.random_targets != result.targets) and np.all(result.random_targets < 4)
    weights = np.abs(model.get_layer("linear").get_weights()[0]).reshape(2, 2, 3, 4).sum(axis=2)
    for n in range(3):
        expected = spearmanr(weights[..., result.targets[n]].ravel(), weights[..., result.random_targets[n]].ravel())
        assert result.similarities[n] == pytest.approx(expected.statistic, abs=1e-9)
    again = metrics.random_logit(model, images, tfattr.Gradient(model), similarity="spearman", seed=4)
    np.testing.assert_array_equal(again.random_targets, result.random_targets)


def test_errors_name_the_argument(cnn, x):
    method = tfattr.Gradient(cnn)
    with pytest.raises(InvalidInputError, match=r"`order`.*Received: order='top'"):
        metrics.model_parameter_randomisation(cnn, x, method, order="top")
    with pytest.raises(InvalidInputError, match=r"`similarity`.*Received: similarity='pearson'"):
        metrics.model_parameter_randomisation(cnn, x, method, similarity="pearson")
    flatten = next(layer.name for layer in cnn.layers if not layer.weights and "flatten" in layer.name)
    with pytest.raises(InvalidInputError, match=rf"`layers`.*Received: layers='{flatten}'"):
        metrics.model_parameter_randomisation(cnn, x, method, layers=[flatten])
    with pytest.raises(InvalidInputError, match=r"`method` must be bound to `model`"):
        metrics.model_parameter_randomisation(_linear(), x, method)
    with pytest.raises(InvalidTypeError, match=r"`method`.*Received: type\(method\)='str'"):
        metrics.model_parameter_randomisation(cnn, x, "gradient")
    with pytest.raises(InvalidInputError, match=r"`num_classes`.*Received: num_classes=1"):
        metrics.random_logit(cnn, x, method, num_classes=1)


def test_copies_keep_the_declared_value_range(cnn, x):
    """A method's defaults read the model's declared range (NoiseTunnel's σ = 0.15 × range): the
    randomised copies must declare it too, or row 0 compares maps made with different noise."""
    model = small_cnn("relu", size=12, seed=3)
    model.tfattr_value_range = (0.0, 255.0)
    images = x * 255.0
    tunnel = tfattr.NoiseTunnel(tfattr.Gradient(model), nt_samples=4, seed=1)
    result = metrics.model_parameter_randomisation(model, images, tunnel, layers=metrics.randomisable_layers(model)[:1])
    np.testing.assert_allclose(result.similarities[0], 1.0, atol=1e-9)
    assert metrics.randomise_layers(model, []).tfattr_value_range == (0.0, 255.0)


def test_separable_conv_kernels_use_their_own_initializers():
    # SeparableConv2D's weights are depthwise_kernel / pointwise_kernel, initialised by
    # depthwise_initializer / pointwise_initializer: not the σ = 0.01 fallback
    inputs = keras.Input((6, 6, 2))
    hidden = keras.layers.SeparableConv2D(3, 3, depthwise_initializer="ones", pointwise_initializer="ones",
                                          bias_initializer="zeros", name="sep")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(hidden)))
    model.get_layer("sep").set_weights([w * 0 + 0.5 for w in model.get_layer("sep").get_weights()])
    copy = metrics.randomise_layers(model, ["sep"], seed=0)
    depthwise, pointwise, bias = copy.get_layer("sep").get_weights()
    np.testing.assert_array_equal(depthwise, 1.0)
    np.testing.assert_array_equal(pointwise, 1.0)
    np.testing.assert_array_equal(bias, 0.0)


def test_random_logit_draws_from_the_methods_output_on_a_two_output_model():
    inputs = keras.Input((4, 4, 1))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(7, name="wide")(flat), keras.layers.Dense(2, name="two")(flat)])
    x = np.random.default_rng(0).uniform(size=(5, 4, 4, 1)).astype(np.float32)
    result = metrics.random_logit(model, x, tfattr.Gradient(model, output="two"), targets=[0, 1, 0, 1, 0], seed=0,
                                  similarity="spearman")
    np.testing.assert_array_equal(result.random_targets, [1, 0, 1, 0, 1])  # two classes: the other one
    wide = metrics.random_logit(model, x, tfattr.Gradient(model, output=0), targets=[0] * 5, seed=3,
                                similarity="spearman")
    assert set(wide.random_targets) <= set(range(1, 7))
