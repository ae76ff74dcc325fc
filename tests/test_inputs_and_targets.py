"""Validation at the public boundary and the target selector."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfattr import Gradient, IntegratedGradients
from tfattr.errors import InvalidInputError, InvalidTypeError


@pytest.fixture(scope="module")
def ig(relu_cnn):
    return IntegratedGradients(relu_cnn, steps=4)


def test_integer_images_are_rejected_with_a_cast_suggestion(ig, images):
    with pytest.raises(TypeError, match=r"floating-point dtype.*astype\('float32'\) / 255.*Received: inputs.dtype='uint8'"):
        ig.attribute((images * 255).astype(np.uint8))


def test_nan_and_inf_are_rejected_naming_the_first_bad_index(ig, images):
    bad = images.copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"`inputs` contains 1 NaN or Inf.*\(1, 2, 3, 0\)"):
        ig.attribute(bad)
    bad[1, 2, 3, 0] = np.inf
    with pytest.raises(InvalidInputError):
        ig.attribute(bad)


def test_wrong_rank_channels_and_empty_batch(ig, images):
    with pytest.raises(ValueError, match=r"\(batch, height, width, channels\).*Received: inputs.shape=\(16, 16\)"):
        ig.attribute(images[0, :, :, 0])
    with pytest.raises(ValueError, match=r"channels must be 3.*Received: inputs.shape=\(3, 16, 16, 1\)"):
        ig.attribute(images[..., :1])
    with pytest.raises(ValueError, match="axis 1 must be 16"):
        ig.attribute(images[:, :8])
    with pytest.raises(ValueError, match="empty batch"):
        ig.attribute(images[:0])
    with pytest.raises(TypeError, match="NumPy array or a tf.Tensor"):
        ig.attribute("cat.png")


def test_targets_out_of_range_or_of_the_wrong_kind(ig, images):
    with pytest.raises(ValueError, match=r"\[0, 5\).*Received: target=7"):
        ig.attribute(images, target=7)
    with pytest.raises(ValueError, match=r"Received: target=\[0, 1, -1\]"):
        ig.attribute(images, target=[0, 1, -1])
    with pytest.raises(ValueError, match="one class per example"):
        ig.attribute(images, target=[0, 1])
    with pytest.raises(TypeError, match="int class index"):
        ig.attribute(images, target=1.0)
    with pytest.raises(TypeError, match="int class index"):
        ig.attribute(images, target=True)


def test_every_target_form_selects_the_same_score(relu_cnn, images):
    grad = Gradient(relu_cnn)
    outputs = relu_cnn(images).numpy()
    top1 = np.argmax(outputs, axis=1)
    by_none = grad.attribute(images)
    by_array = grad.attribute(images, target=top1)
    by_tensor = grad.attribute(images, target=tf.constant(top1))
    by_callable = grad.attribute(images, target=lambda out: tf.reduce_max(out, axis=1))
    np.testing.assert_array_equal(by_none.targets, top1)
    np.testing.assert_allclose(by_none.scores, outputs.max(axis=1), rtol=1e-6)
    for other in (by_array, by_tensor, by_callable):
        np.testing.assert_allclose(np.asarray(other), np.asarray(by_none), atol=1e-7)
    assert by_callable.targets is None
    # a callable can explain any scalar, e.g. a difference of two logits
    diff = grad.attribute(images, target=lambda out: out[:, 0] - out[:, 1])
    parts = np.asarray(grad.attribute(images, target=0)) - np.asarray(grad.attribute(images, target=1))
    np.testing.assert_allclose(np.asarray(diff), parts, atol=1e-6)


def test_callable_targets_get_a_completeness_delta_too(relu_cnn, images):
    expl = IntegratedGradients(relu_cnn, steps=200, rule="riemann_trapezoid").attribute(
        images, target=lambda out: out[:, 3] * 2.0)
    by_index = IntegratedGradients(relu_cnn, steps=200, rule="riemann_trapezoid").attribute(images, target=3)
    np.testing.assert_allclose(np.asarray(expl), 2 * np.asarray(by_index), atol=1e-5)
    np.testing.assert_allclose(expl.delta, 2 * by_index.delta, atol=1e-5)


def test_bad_options_name_the_option(relu_cnn, images):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['n_steps'\]"):
        IntegratedGradients(relu_cnn, n_steps=10)
    with pytest.raises(ValueError, match="Unknown quadrature rule"):
        IntegratedGradients(relu_cnn).attribute(images, rule="simpson")
    with pytest.raises(ValueError, match="batch_size"):
        IntegratedGradients(relu_cnn, batch_size=0)
    with pytest.raises(ValueError, match="low < high"):
        IntegratedGradients(relu_cnn, value_range=(1, 0))
    with pytest.raises(TypeError, match="Keras model"):
        IntegratedGradients("vgg19")


def test_multi_input_models_are_refused_clearly_by_image_only_code():
    # the methods take several inputs (tests/test_several_inputs.py); image-only code (metrics, CLI) refuses them
    from tfattr.core.inputs import model_spec

    a, b = keras.Input((4, 4, 3)), keras.Input((4, 4, 3))
    model = keras.Model([a, b], keras.layers.Flatten()(keras.layers.Add()([a, b])))
    with pytest.raises(TypeError, match="single image input"):
        model_spec(model)
    assert IntegratedGradients(model).spec.inputs.names == (a.name, b.name)


def test_errors_are_builtin_subclasses():
    assert issubclass(InvalidInputError, ValueError) and issubclass(InvalidTypeError, TypeError)


class _ConvNet(keras.Model):
    """A subclassed model: no symbolic input, its shape is known only once it has been called."""

    def __init__(self):
        super().__init__(name="convnet")
        self.conv = keras.layers.Conv2D(4, 3, name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


def test_a_subclassed_model_reports_misfit_inputs_as_inputs_with_the_shape_it_was_built_on():
    from tfattr import NoiseTunnel

    keras.utils.set_random_seed(0)
    model = _ConvNet()
    good = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    model(good)
    one_channel = good[..., :1]
    for method in (IntegratedGradients(model, steps=2), Gradient(model), NoiseTunnel(Gradient(model), nt_samples=2)):
        for target in (None, 0):
            with pytest.raises(InvalidInputError, match=r"^`inputs` does not fit the model 'convnet' \(it was built on "
                               r"inputs of shape \(None, 8, 8, 3\)\).*expected axis -1 of input shape to have value 3.*"
                               r"Received: inputs.shape=\(2, 8, 8, 1\)$"):
                method.attribute(one_channel, target=target)
    expl = Gradient(model).attribute(good, target=1)  # inputs that fit still run
    _, expected = tf.function(lambda v: (0, tf.gradients(model(v)[:, 1], v)[0]))(tf.constant(good))
    np.testing.assert_allclose(np.asarray(expl), expected.numpy(), rtol=1e-5, atol=1e-7)
