"""Propagation methods on surgery clones: Deconvolution, Guided Grad-CAM, DeepLift (Rescale).

Each is checked against a NumPy hand computation on a small network with non-zero biases, the
clone's forward against the model's, and the original model against any change."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfattr
from tfattr.errors import InvalidInputError
from tfattr.surgery import deconv_clone, surgery_report


def _small_cnn(seed=0, pool=False):
    """conv(3×3, 2 ch, valid) → ReLU → [max-pool 2×2] → flatten → dense(3), biases non-zero."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, name="conv", bias_initializer=keras.initializers.RandomUniform(-0.5, 0.5))(inputs)
    h = keras.layers.ReLU(name="relu")(h)
    if pool:
        h = keras.layers.MaxPooling2D(2, name="pool")(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(3, name="head", bias_initializer=keras.initializers.RandomUniform(-0.5, 0.5))(h)
    return keras.Model(inputs, out)


def _images(n=3, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 6, 6, 2)).astype(np.float32)


def _conv_valid(x, kernel, bias):
    """(N, H, W, C) ⋆ (3, 3, C, K) + b, 'valid', in float64."""
    n, h, w, _ = x.shape
    out = np.zeros((n, h - 2, w - 2, kernel.shape[-1]))
    for i in range(h - 2):
        for j in range(w - 2):
            out[:, i, j] = np.einsum("nabc,abck->nk", x[:, i:i + 3, j:j + 3], kernel)
    return out + bias


def _conv_transpose(g, kernel, shape):
    """The input gradient of ``_conv_valid`` for upstream ``g`` (N, h, w, K)."""
    out = np.zeros(shape)
    for i in range(g.shape[1]):
        for j in range(g.shape[2]):
            out[:, i:i + 3, j:j + 3] += np.einsum("nk,abck->nabc", g[:, i, j], kernel)
    return out


def _hand_backward(model, x, target, relu_rule):
    """Backward through conv → ReLU → dense with ReLU backward ``relu_rule(pre, upstream)``."""
    kernel, bias = (np.asarray(v, np.float64) for v in model.get_layer("conv").get_weights())
    dense_w, _ = (np.asarray(v, np.float64) for v in model.get_layer("head").get_weights())
    pre = _conv_valid(x.astype(np.float64), kernel, bias)
    upstream = np.broadcast_to(dense_w[:, target], (len(x), dense_w.shape[0])).reshape(pre.shape)
    return _conv_transpose(relu_rule(pre, upstream), kernel, x.shape)


# -- Deconvolution -------------------------------------------------------------------------------

def test_deconvolution_equals_the_hand_computation_and_ignores_the_forward_mask():
    model, x = _small_cnn(), _images()
    result = tfattr.Deconvolution(model, batch_size=8).attribute(x, target=1)
    deconv = _hand_backward(model, x, 1, lambda pre, g: np.maximum(g, 0.0))
    np.testing.assert_allclose(result.attributions, deconv, rtol=1e-5, atol=1e-5)
    # not guided backprop and not the gradient: the forward mask 1[pre > 0] matters on this net
    guided = _hand_backward(model, x, 1, lambda pre, g: np.maximum(g, 0.0) * (pre > 0))
    assert np.abs(deconv - guided).max() > 1e-2


def test_deconv_clone_forward_is_the_models_bit_for_bit_and_the_model_is_untouched():
    model, x = _small_cnn(pool=True), _images()
    before = [np.array(w) for w in model.get_weights()]
    relu_type = type(model.get_layer("relu"))
    clone = deconv_clone(model)
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(model(x)))
    assert surgery_report(clone).changed == ("relu",)  # max-pool keeps its plain gradient (switches)
    assert type(model.get_layer("relu")) is relu_type
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the max-pool backward is the plain one: the routed gradient equals the hand "switches" unpooling
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        score = tf.reduce_sum(clone(xt)[:, 2])
    grads = tape.gradient(score, xt).numpy()
    np.testing.assert_allclose(tfattr.Deconvolution(model).attribute(x, target=2).attributions, grads,
                               rtol=1e-6, atol=1e-6)


def test_deconvolution_follows_the_models_current_weights():
    model, x = _small_cnn(), _images()
    method = tfattr.Deconvolution(model, batch_size=8)
    method.attribute(x, target=0)
    model.get_layer("head").set_weights([w * -2.0 for w in model.get_layer("head").get_weights()])
    after = method.attribute(x, target=0).attributions
    np.testing.assert_allclose(after, _hand_backward(model, x, 0, lambda pre, g: np.maximum(g, 0.0)),
                               rtol=1e-5, atol=1e-5)
    deconv_clone(model)  # the cached clone's own copy is refreshed too
    np.testing.assert_array_equal(np.asarray(deconv_clone(model)(x)), np.asarray(model(x)))


def test_deconvolution_refuses_a_model_without_relu():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(3, activation="tanh")(inputs)))
    with pytest.raises(InvalidInputError, match="Received: model.name"):
        tfattr.Deconvolution(model).attribute(np.ones((1, 4), np.float32), target=0)


# -- Guided Grad-CAM -----------------------------------------------------------------------------

def _hand_guided_gradcam(model, x, targets, mode):
    kernel, bias = (np.asarray(v, np.float64) for v in model.get_layer("conv").get_weights())
    dense_w, _ = (np.asarray(v, np.float64) for v in model.get_layer("head").get_weights())
    pre = _conv_valid(x.astype(np.float64), kernel, bias)
    out = []
    for e, t in enumerate(targets):
        grad_a = dense_w[:, t].reshape(pre.shape[1:])             # ∂y/∂A at the ReLU's output
        weights = grad_a.mean(axis=(0, 1))                         # α_k (Grad-CAM eq. 1)
        cam = np.maximum(np.einsum("hwk,k->hw", np.maximum(pre[e], 0), weights), 0)
        if mode == "nearest":                                      # torch: j ↦ ⌊j · 4 / 6⌋
            index = (np.arange(6) * 4) // 6
            up = cam[index][:, index]
        else:
            up = tf.image.resize(cam[None, ..., None], (6, 6), method="bilinear").numpy()[0, ..., 0]
        guided = _conv_transpose((np.maximum(grad_a, 0) * (pre[e] > 0))[None], kernel, x[e:e + 1].shape)[0]
        out.append(guided * up[..., None])                         # every channel times the map
    return np.stack(out)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_guided_gradcam_equals_the_numpy_composition(mode):
    model, x = _small_cnn(seed=3), _images(seed=4)
    result = tfattr.GuidedGradCAM(model, layer="relu", interpolate_mode=mode, batch_size=8).attribute(x)
    top1 = np.argmax(np.asarray(model(x)), axis=1)
    np.testing.assert_array_equal(result.targets, top1)
    expected = _hand_guided_gradcam(model, x, top1, mode)
    assert np.abs(expected).max() > 1e-3  # a map that is not all zero
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-5, atol=1e-8)


def test_guided_gradcam_is_guided_backprop_times_the_upsampled_gradcam_of_tfattr():
    model, x = _small_cnn(seed=5, pool=True), _images(n=4, seed=6)
    result = tfattr.GuidedGradCAM(model, layer="relu", interpolate_mode="bilinear").attribute(x)  # top-1
    guided = tfattr.GuidedBackprop(model).attribute(x, target=result.targets).attributions
    cam = tfattr.GradCAM(model, layer="relu").attribute(x, target=result.targets).attributions  # bilinear
    np.testing.assert_allclose(result.attributions, guided * cam[..., None], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(result.targets, np.argmax(np.asarray(model(x)), axis=1))
    np.testing.assert_allclose(result.info["gradcam"],
                               tfattr.GradCAM(model, layer="relu", upsample=False)
                               .attribute(x, target=result.targets).attributions, rtol=1e-6, atol=1e-7)
