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


def test_deconvolution_routes_max_pools_through_their_switches_as_captum():
    """Max-pools keep their plain gradient under deconvolution (captum overrides only ReLU): the
    upstream of each 2×2 window goes to its arg-max (first in row-major order on ties), then the
    ReLU passes relu(·) whatever its input."""
    model, x = _small_cnn(seed=17, pool=True), _images(seed=18)
    kernel, bias = (np.asarray(v, np.float64) for v in model.get_layer("conv").get_weights())
    dense_w, _ = (np.asarray(v, np.float64) for v in model.get_layer("head").get_weights())
    pre = _conv_valid(x.astype(np.float64), kernel, bias)       # (N, 4, 4, 3)
    act = np.maximum(pre, 0)
    g_pool = dense_w[:, 0].reshape(2, 2, 3)
    g_act = np.zeros_like(act)
    for n in range(len(x)):
        for i in range(2):
            for j in range(2):
                for k in range(3):
                    window = act[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2, k]
                    a, b = np.unravel_index(np.argmax(window), (2, 2))
                    g_act[n, 2 * i + a, 2 * j + b, k] += g_pool[i, j, k]
    expected = _conv_transpose(np.maximum(g_act, 0), kernel, x.shape)
    result = tfattr.Deconvolution(model).attribute(x, target=0)
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-5, atol=1e-6)


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


# -- DeepLift (Rescale) --------------------------------------------------------------------------

def test_deeplift_equals_the_rescale_rule_by_hand():
    model, x = _small_cnn(seed=7), _images(seed=8)
    x0 = np.random.default_rng(9).normal(size=(1, 6, 6, 2)).astype(np.float32)
    result = tfattr.DeepLift(model, baseline=x0, batch_size=8).attribute(x, target=2)
    kernel, bias = (np.asarray(v, np.float64) for v in model.get_layer("conv").get_weights())
    dense_w, dense_b = (np.asarray(v, np.float64) for v in model.get_layer("head").get_weights())
    pre = _conv_valid(x.astype(np.float64), kernel, bias)
    pre0 = _conv_valid(x0.astype(np.float64), kernel, bias)
    slope = (np.maximum(pre, 0) - np.maximum(pre0, 0)) / (pre - pre0)  # Δy/Δx of each ReLU
    upstream = np.broadcast_to(dense_w[:, 2], (len(x), dense_w.shape[0])).reshape(pre.shape)
    expected = (x.astype(np.float64) - x0) * _conv_transpose(upstream * slope, kernel, x.shape)
    assert np.any((pre > 0) != (pre0 > 0))  # some ReLUs change state: the rule is not the gradient there
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-4, atol=1e-5)
    fx = np.maximum(pre, 0).reshape(len(x), -1) @ dense_w[:, 2] + dense_b[2]
    fx0 = np.maximum(pre0, 0).reshape(1, -1) @ dense_w[:, 2] + dense_b[2]
    np.testing.assert_allclose(expected.reshape(len(x), -1).sum(axis=1), fx - fx0, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(result.delta, 0.0, atol=1e-4)


def _resnet_like(seed=0):
    """conv → BN → ReLU → max-pool → [conv → BN → ReLU → conv] + skip → ReLU → flatten → dense + sigmoid → dense."""
    keras.utils.set_random_seed(seed)
    biases = keras.initializers.RandomUniform(-0.3, 0.3)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", bias_initializer=biases)(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    r = keras.layers.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=biases)(h)
    r = keras.layers.BatchNormalization(name="bn2")(r)
    r = keras.layers.Conv2D(4, 3, padding="same", bias_initializer=biases)(r)
    h = keras.layers.Activation("relu")(keras.layers.Add()([h, r]))
    h = keras.layers.Conv2D(4, 1, activation="tanh", bias_initializer=biases)(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(3, bias_initializer=biases)(keras.layers.Dense(5, activation="sigmoid", kernel_initializer=
                                                                            keras.initializers.RandomNormal(0, 1))(h))
    model = keras.Model(inputs, out)
    rng = np.random.default_rng(seed)
    for name in ("bn1", "bn2"):  # non-trivial inference statistics: BN is an affine map, not the identity
        layer = model.get_layer(name)
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(size=beta.shape),
                           rng.normal(size=mean.shape), rng.uniform(0.5, 2, var.shape)])
    return model


def test_deeplift_sums_to_delta_through_batchnorm_maxpool_add_sigmoid_and_tanh():
    model = _resnet_like()
    x = np.random.default_rng(10).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    method = tfattr.DeepLift(model, baseline="uniform", n_baselines=2, seed=3, batch_size=3)
    result = method.attribute(x)  # top-1
    fx = np.asarray(model(x))[np.arange(4), result.targets]
    np.testing.assert_allclose(result.scores, fx, rtol=1e-5, atol=1e-6)
    change = np.abs(result.scores - result.baseline_scores)
    assert change.min() > 1e-3  # the deltas are not trivially zero
    # float32 rounding of a few hundred terms of size ≲ |f| (measured: |delta| ≤ 1.2e-7 here)
    bound = 1e-5 * (1 + np.abs(result.scores).max())
    assert np.abs(result.delta).max() < bound, (result.delta, bound)
    # the plain gradient × (x − x₀) does not sum to the change on this network: the rule matters
    ixg = tfattr.IntegratedGradients(model, baseline="uniform", n_baselines=2, seed=3, steps=1).attribute(
        x, target=result.targets)
    assert np.abs(ixg.delta).max() > 100 * bound
    # chunking does not change the result
    again = method.attribute(x, target=result.targets, batch_size=8)
    np.testing.assert_allclose(again.attributions, result.attributions, rtol=1e-5, atol=1e-6)


def test_deeplift_clone_forward_is_the_models_and_the_model_is_untouched():
    model = _resnet_like(seed=1)
    x = np.random.default_rng(11).uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    types = [type(layer) for layer in model.layers]
    clone = tfattr.surgery.deeplift_clone(model)
    np.testing.assert_array_equal(np.asarray(clone(x, training=False)), np.asarray(model(x, training=False)))
    assert [type(layer) for layer in model.layers] == types
    assert "pool" in surgery_report(clone).changed


def test_deeplift_maxpool_rule_is_captums():
    """Captum's maxpool rule on one 2-wide window (by hand): x = (1, 3), x₀ = (4, 0); y = 3, y₀ = 4,
    ŷ = max(y, y₀) = 4; g·(ŷ − y₀) = 0 goes to x's arg-max (index 1), g·(y − ŷ) = −g to x₀'s
    (index 0); multipliers = routed / Δx = (−g / −3, 0 / 3)."""
    from tfattr.surgery.deeplift import maxpool_pair

    def pool(t):
        return tf.nn.max_pool1d(t, 2, 2, "VALID")

    pair = tf.constant([[[1.0], [3.0]], [[4.0], [0.0]]])
    with tf.GradientTape() as tape:
        tape.watch(pair)
        y = maxpool_pair(pool, pair, pool(pair))
        score = 5.0 * y[0, 0, 0]
    grad = tape.gradient(score, pair).numpy()
    np.testing.assert_allclose(grad[0, :, 0], [-5.0 / -3.0, 0.0])
    np.testing.assert_array_equal(grad[1], 0.0)
    np.testing.assert_allclose(np.sum(grad[0, :, 0] * (pair[0, :, 0] - pair[1, :, 0])), 5.0 * (3.0 - 4.0))


def test_deeplift_equals_integrated_gradients_on_a_linear_model():
    keras.utils.set_random_seed(12)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3, bias_initializer="ones")(keras.layers.Dense(4)(inputs)))
    x = np.random.default_rng(13).normal(size=(3, 5)).astype(np.float32)
    dl = tfattr.DeepLift(model, baseline=0.5).attribute(x, target=1)
    ig = tfattr.IntegratedGradients(model, baseline=0.5, steps=4).attribute(x, target=1)
    np.testing.assert_allclose(dl.attributions, ig.attributions, rtol=1e-5, atol=1e-6)


def test_deeplift_follows_the_models_current_weights():
    model, x = _small_cnn(seed=14), _images(seed=15)
    method = tfattr.DeepLift(model)
    method.attribute(x, target=0)
    model.get_layer("conv").set_weights([w * 1.5 for w in model.get_layer("conv").get_weights()])
    result = method.attribute(x, target=0)
    np.testing.assert_allclose(result.scores, np.asarray(model(x))[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.delta, 0.0, atol=1e-4)


@pytest.mark.parametrize("head", ["softmax_activation", "softmax_layer", "layer_norm"])
def test_deeplift_refuses_layers_without_a_rule_by_name(head):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, activation="relu", name="hidden")(inputs)
    if head == "softmax_activation":
        out = keras.layers.Dense(2, activation="softmax", name="probs")(h)
    elif head == "softmax_layer":
        out = keras.layers.Softmax(name="probs")(keras.layers.Dense(2)(h))
    else:
        out = keras.layers.Dense(2)(keras.layers.LayerNormalization(name="probs")(h))
    model = keras.Model(inputs, out)
    with pytest.raises(InvalidInputError, match=r"probs \(.*Received: model.name"):
        tfattr.DeepLift(model).attribute(np.ones((1, 4), np.float32), target=0)


def test_deeplift_shap_is_the_mean_of_deeplift_over_the_baselines_and_sums_to_the_mean_change():
    model = _resnet_like(seed=2)
    rng = np.random.default_rng(16)
    x = rng.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    background = rng.uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    shap = tfattr.DeepLiftShap(model, baselines=background, batch_size=4).attribute(x, target=1)
    each = [tfattr.DeepLift(model, baseline=b[None]).attribute(x, target=1) for b in background]
    np.testing.assert_allclose(shap.attributions, np.mean([e.attributions for e in each], axis=0),
                               rtol=1e-5, atol=1e-7)
    fb = np.asarray(model(background))[:, 1]
    np.testing.assert_allclose(shap.baseline_scores, fb.mean(), rtol=1e-5, atol=1e-6)
    assert np.abs(shap.scores - shap.baseline_scores).min() > 1e-3
    assert np.abs(shap.delta).max() < 1e-5 * (1 + np.abs(shap.scores).max())


def test_deeplift_shap_needs_a_distribution():
    with pytest.raises(InvalidInputError, match="Received: baselines"):
        tfattr.DeepLiftShap(_small_cnn()).attribute(_images(), target=0)
