"""Grad-CAM and RSI-Grad-CAM: analytic maps, layer completeness, the documented special case."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CHUNK_SIZES, assert_float32_close, small_cnn

from tfattr import GradCAM, RSIGradCAM


def analytic_conv_model(separate_relu=True):
    """4×4×1 input → 3×3 all-ones conv (2 channels, biases −50, −75) → ReLU → flatten → dense.

    The dense weights are "five +1 then three −1" in channels-first order
    (channel 0's four outputs, then channel 1's): ch0 → [1, 1, 1, 1], ch1 → [1, −1, −1, −1].
    Keras flattens channels-last, position (i, j, k) at index 4·... → 2·(2i + j) + k, so the
    kernel is reordered accordingly.
    """
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(2, 3, name="conv")
    relu = keras.layers.ReLU(name="relu")
    dense = keras.layers.Dense(1, name="dense")
    out = dense(keras.layers.Flatten()(relu(conv(inputs))))
    model = keras.Model(inputs, out)
    conv.set_weights([np.ones((3, 3, 1, 2)), np.array([-50.0, -75.0])])
    channels_first = np.array([1, 1, 1, 1, 1, -1, -1, -1], dtype=np.float64).reshape(2, 2, 2)  # (k, i, j)
    channels_last = channels_first.transpose(1, 2, 0).reshape(8, 1)  # (i, j, k) flattened
    dense.set_weights([channels_last, np.zeros(1)])
    return model


X16 = np.arange(16, dtype=np.float32).reshape(4, 4, 1)  # one image, no batch axis


def test_gradcam_analytic_channel_maps_at_the_conv_and_the_relu():
    model = analytic_conv_model()
    # conv window sums 45, 54, 81, 90 → ch0 = sums − 50 = [[−5, 4], [31, 40]], ch1 = sums − 75 = [[−30, −21], [6, 15]]
    # at the conv: ∂y/∂A = dense weight · 1[A > 0]: ch0 [[0,1],[1,1]] → w0 = 0.75, ch1 [[0,0],[−1,−1]] → w1 = −0.5
    expl = GradCAM(model, layer="conv", upsample=False).attribute(X16, target=0)
    weights, activations = expl.info["weights"][0], expl.info["activations"][0]
    np.testing.assert_allclose(weights, [0.75, -0.5])
    np.testing.assert_allclose(weights[0] * activations[..., 0], [[-3.75, 3], [23.25, 30]])
    np.testing.assert_allclose(weights[1] * activations[..., 1], [[15, 10.5], [-3, -7.5]])
    np.testing.assert_allclose(np.asarray(expl), [[11.25, 13.5], [20.25, 22.5]])
    # at the ReLU: ∂y/∂A = the dense weights: w0 = 1, w1 = −0.5; A = ch0 [[0,4],[31,40]], ch1 [[0,0],[6,15]]
    at_relu = GradCAM(model, layer="relu", upsample=False).attribute(X16, target=0)
    np.testing.assert_allclose(at_relu.info["weights"][0], [1.0, -0.5])
    np.testing.assert_allclose(np.asarray(at_relu), [[0, 4], [28, 32.5]])


def test_gradcam_upsampling_relu_and_normalisation():
    model = analytic_conv_model()
    raw = np.asarray(GradCAM(model, layer="conv", upsample=False, relu=False).attribute(X16, target=0))
    up = GradCAM(model, layer="conv").attribute(X16, target=0)
    assert up.shape == (4, 4)  # one image in, one map out
    assert np.asarray(up).min() == pytest.approx(raw.min()) and np.asarray(up).max() == pytest.approx(raw.max())
    normed = np.asarray(GradCAM(model, layer="conv", normalize=True).attribute(X16, target=0))
    assert normed.max() == pytest.approx(1.0)
    negative = np.asarray(GradCAM(model, layer="relu", upsample=False, relu=False).attribute(X16, target=0,
                                                                                          weighting="gradient"))
    np.testing.assert_allclose(negative, [[0, 4], [28, 32.5]])


def linear_head_model():
    """Conv → ReLU ("features") → linear head: y is a linear function of the layer's activations."""
    keras.utils.set_random_seed(4)
    bias = keras.initializers.RandomUniform(-0.2, 0.2, seed=4)
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(6, 3, activation="tanh", bias_initializer=bias)(inputs)
    h = keras.layers.Conv2D(5, 3, activation="relu", bias_initializer=bias, name="features")(h)
    out = keras.layers.Dense(4, bias_initializer=bias)(keras.layers.Flatten()(h))
    return keras.Model(inputs, out)


def test_rsi_terms_telescope_to_the_output_difference_for_a_linear_head():
    model = linear_head_model()
    x = np.random.default_rng(2).uniform(0, 1, (3, 12, 12, 3)).astype(np.float32)
    for baseline in ("zero", "blur"):
        expl = RSIGradCAM(model, layer="features", steps=7, baseline=baseline, upsample=False).attribute(x, target=2)
        gap = expl.scores - expl.baseline_scores
        assert np.abs(gap).min() > 1e-3
        np.testing.assert_allclose(expl.delta, 0.0, atol=1e-4)
        # Σ_k Σ_ij terms = Z · Σ_k w_k
        z = 8 * 8
        np.testing.assert_allclose(expl.info["weights"].sum(axis=1) * z, gap, atol=1e-4)


def test_rsi_with_one_step_and_zero_activation_baseline_is_gradient_x_activation_gradcam():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((12, 12, 3))
    # non-negative kernel and negative biases: at the black image the ReLU layer is exactly 0
    h = keras.layers.Conv2D(5, 3, activation="relu", name="features",
                            kernel_initializer=keras.initializers.RandomUniform(0.0, 0.3, seed=5),
                            bias_initializer=keras.initializers.RandomUniform(-0.3, -0.05, seed=5))(inputs)
    h = keras.layers.Conv2D(4, 3, activation="tanh")(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    x = np.random.default_rng(3).uniform(0, 1, (2, 12, 12, 3)).astype(np.float32)
    baseline = np.zeros((12, 12, 3), np.float32)
    rsi = RSIGradCAM(model, layer="features", steps=1, baseline=baseline, upsample=False, relu=False).attribute(x, target=1)
    _, _, at_baseline = GradCAM(model, layer="features").gradient_function()(
        tf.constant(baseline[None]), tf.constant([1], tf.int32))
    assert np.all(at_baseline.numpy() == 0)
    cam = GradCAM(model, layer="features", upsample=False, relu=False, weighting="gradient_x_activation").attribute(x, target=1)
    np.testing.assert_allclose(rsi.info["weights"], cam.info["weights"], atol=1e-6)
    np.testing.assert_allclose(np.asarray(rsi), np.asarray(cam), atol=1e-5)


def test_layer_methods_are_batch_size_invariant_and_share_the_engine(relu_cnn, images):
    a, *others = (RSIGradCAM(relu_cnn, steps=9, batch_size=size).attribute(images, target=1) for size in CHUNK_SIZES)
    for other in others:
        assert_float32_close(other, a)
    assert a.gradients == len(images) * 10
    g1, *others = (GradCAM(relu_cnn, batch_size=size).attribute(images) for size in CHUNK_SIZES)
    for other in others:
        assert_float32_close(other, g1)
    assert np.asarray(g1).min() >= 0 and np.asarray(g1).max() > 0


def test_nested_layer_paths_and_default_layer(images):
    inner = small_cnn("relu", seed=5)
    backbone = keras.Model(inner.inputs, inner.layers[3].output, name="backbone")  # the second conv
    inputs = keras.Input((16, 16, 3))
    outer = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.Flatten()(backbone(inputs))))
    conv_name = backbone.layers[-1].name
    by_path = GradCAM(outer, layer=f"backbone/{conv_name}").attribute(images, target=0)
    by_name = GradCAM(outer, layer=conv_name).attribute(images, target=0)
    by_default = GradCAM(outer).attribute(images, target=0)
    np.testing.assert_allclose(np.asarray(by_path), np.asarray(by_name))
    np.testing.assert_allclose(np.asarray(by_path), np.asarray(by_default))
    assert np.asarray(by_path).max() > 0
    # the tap leaves the model as it was
    np.testing.assert_allclose(outer(images).numpy(), outer(images).numpy())
    assert "call" not in vars(backbone.get_layer(conv_name))


def test_unknown_layers_list_close_names(relu_cnn):
    with pytest.raises(ValueError, match=r"No layer 'conv2d_9x'.*closest names"):
        GradCAM(relu_cnn, layer="conv2d_9x")
    with pytest.raises(ValueError, match="index out of range"):
        GradCAM(relu_cnn, layer=99)
    with pytest.raises(ValueError, match="input layer has no activations"):
        GradCAM(relu_cnn, layer=0)
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no layer with a 4-D output"):
        GradCAM(flat)


# -- the authors' notebook: trapezoid average and positive-unit selection ---------------------

C = np.array([1.0, -1.0, -1.0, -1.0, 0.5])  # head y = Σ_i c_i A_i² / 2


def quadratic_head_model():
    """1×1 identity conv ("features": A = the input's 5 channels), then ``y = Σ c_i A_i² / 2``:
    ∂y/∂A = c ⊙ A, so on the straight path the integrand is linear in α."""
    inputs = keras.Input((1, 1, 5))
    a = keras.layers.Conv2D(5, 1, name="features", bias_initializer="zeros",
                            kernel_initializer=lambda shape, dtype=None: np.eye(5, dtype="float32").reshape(shape))(inputs)
    flat = keras.layers.Reshape((5,))(a)
    out = keras.layers.Lambda(lambda v: keras.ops.sum(v * v * C.astype("float32") / 2, axis=-1, keepdims=True))(flat)
    return keras.Model(inputs, out)


# unit 0 kept; unit 1 negative integral; unit 2 A(I) < 0; unit 3 negative increment A(I) − A(I₀); unit 4 kept
X_UNITS = np.array([2.0, 1.0, -1.0, 1.0, 1.5], np.float32)
Z_UNITS = np.array([0.5, 0.0, -2.0, 2.0, 0.0], np.float32)


def test_rsi_trapezoid_is_exact_for_a_quadratic_head_and_eq6_overshoots_by_the_known_term():
    model, m = quadratic_head_model(), 3
    x, z = X_UNITS.reshape(1, 1, 5), Z_UNITS.reshape(1, 1, 5)
    d = X_UNITS.astype(np.float64) - Z_UNITS
    exact = C * (X_UNITS.astype(np.float64) ** 2 - Z_UNITS.astype(np.float64) ** 2) / 2
    # eq. 6 on α_ℓ = ℓ/m: Σ_ℓ c (z + α_ℓ d) d / m = c d (z + d (m + 1) / (2m))
    right = C * d * (Z_UNITS + d * (m + 1) / (2 * m))
    common = dict(layer="features", steps=m, baseline=z, upsample=False, relu=False)
    trap = RSIGradCAM(model, rule="trapezoid", **common).attribute(x, target=0)
    eq6 = RSIGradCAM(model, **common).attribute(x, target=0)
    np.testing.assert_allclose(trap.info["weights"][0], exact, rtol=1e-5, atol=1e-6)  # 1×1 map: w_k = the term
    np.testing.assert_allclose(eq6.info["weights"][0], right, rtol=1e-5, atol=1e-6)
    assert np.abs(trap.delta).max() < 1e-5
    np.testing.assert_allclose(eq6.delta, [(C * d * d).sum() / (2 * m)], rtol=1e-5)  # Σ_i c_i d_i² / (2m) = 1/16
    assert trap.gradients == eq6.gradients == m + 1


def test_rsi_positive_units_keep_exactly_the_notebook_selection():
    model = quadratic_head_model()
    x, z = X_UNITS.reshape(1, 1, 5), Z_UNITS.reshape(1, 1, 5)
    exact = C * (X_UNITS.astype(np.float64) ** 2 - Z_UNITS.astype(np.float64) ** 2) / 2
    assert np.all(exact[[0, 2, 3, 4]] > 0) and exact[1] < 0  # each dropped unit fails one condition only
    keep = np.array([True, False, False, False, True])
    notebook = RSIGradCAM(model, layer="features", steps=4, baseline=z, rule="trapezoid", positive_units=True,
                          upsample=False)
    expl = notebook.attribute(x, target=0)
    np.testing.assert_allclose(expl.info["weights"][0], np.where(keep, exact, 0.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(expl.info["selected"], [0.4])
    expected_map = max(float((np.where(keep, exact, 0.0) * X_UNITS).sum()), 0.0)  # ReLU(Σ_k w_k A_k(I))
    np.testing.assert_allclose(np.asarray(expl).reshape(-1), [expected_map], rtol=1e-5)
    # completeness is still reported for the unmasked sum
    np.testing.assert_allclose(expl.delta, 0.0, atol=1e-5)
    # the same selection under eq. 6's right sum (its integrals have the same signs here)
    eq6 = RSIGradCAM(model, layer="features", steps=4, baseline=z, positive_units=True, upsample=False).attribute(
        x, target=0)
    assert np.all((eq6.info["weights"][0] != 0) == keep)


def test_rsi_trapezoid_matches_a_direct_tape_computation_on_a_cnn(smooth_cnn, images):
    """Independent check on a real CNN: the layer's activations from the model's first layers
    and ∂y/∂A from a GradientTape through the remaining layers, at every node, combined with
    numpy; against the engine's chunked sum (batch_size=4 cuts the 7-node paths, so the carried
    gradient and activations are exercised)."""
    m = 6
    expl = RSIGradCAM(smooth_cnn, layer=3, steps=m, rule="trapezoid", positive_units=True, upsample=False,
                      batch_size=4).attribute(images, target=1)
    assert smooth_cnn.layers[4].name.startswith("flatten")
    alphas = (np.arange(m + 1) / m).astype(np.float32)
    for e in range(len(images)):
        points = tf.constant(alphas[:, None, None, None] * images[e : e + 1])  # zero baseline
        acts = smooth_cnn.layers[3](smooth_cnn.layers[2](smooth_cnn.layers[1](points)))
        with tf.GradientTape() as tape:
            tape.watch(acts)
            out = acts
            for layer in smooth_cnn.layers[4:]:
                out = layer(out)
            score = out[:, 1]
        grads = tape.gradient(score, acts).numpy().astype(np.float64)
        acts = acts.numpy().astype(np.float64)
        terms = (0.5 * (grads[1:] + grads[:-1]) * (acts[1:] - acts[:-1])).sum(axis=0)
        selected = (acts[-1] > 0) & (terms > 0) & (acts[-1] - acts[0] > 0)
        assert 0 < selected.mean() < 1
        np.testing.assert_allclose(expl.info["weights"][e], np.where(selected, terms, 0).mean(axis=(0, 1)),
                                   rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(expl.info["selected"][e], selected.mean())


def test_rsi_notebook_options_are_checked():
    model = quadratic_head_model()
    with pytest.raises(ValueError, match="rule.*gauss_legendre"):
        RSIGradCAM(model, layer="features", rule="gauss_legendre")
    with pytest.raises(TypeError, match="positive_units"):
        RSIGradCAM(model, layer="features", positive_units="yes")
    with pytest.raises(ValueError, match="rule"):
        RSIGradCAM(model, layer="features", rule=["trapezoid"])


# -- layers the model tells only when called; layers without 4-D output ------------------------

class _ConvNet(keras.Model):
    """A subclassed model: its layers have no symbolic outputs."""

    def __init__(self):
        super().__init__(name="convnet")
        self.conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")
        self.pool = keras.layers.GlobalAveragePooling2D(name="pool")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(self.pool(self.conv(x)))


def test_layer_methods_refuse_a_layer_without_a_4d_output_before_any_gradient(relu_cnn, images):
    from tfattr.errors import InvalidInputError

    flatten = next(layer for layer in relu_cnn.layers if isinstance(layer, keras.layers.Flatten))
    for cls in (GradCAM, RSIGradCAM):
        for layer in (flatten.name, relu_cnn.layers[-1].name):  # refused at construction
            with pytest.raises(InvalidInputError, match=rf"^Layer '{layer}' has a 2-D output; {cls.__name__} needs a "
                               rf"layer with a 4-D \(batch, height, width, channels\) output.*Received: layer='{layer}'$"):
                cls(relu_cnn, layer=layer)
    keras.utils.set_random_seed(0)
    model = _ConvNet()  # ranks known only from a call: refused at the first attribute, before the engine
    for cls in (GradCAM, RSIGradCAM):
        method = cls(model, layer="pool")
        with pytest.raises(InvalidInputError, match=r"^Layer 'pool' has a 2-D output.*Received: layer='pool'$"):
            method.attribute(images, target=0)
        assert method._engines == {}


def test_the_default_layer_of_models_without_symbolic_outputs_is_found_at_the_first_call(images):
    keras.utils.set_random_seed(0)
    sequential = keras.Sequential([keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
                                   keras.layers.Conv2D(4, 3, activation="relu", name="c2"),
                                   keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])  # unbuilt
    subclassed = _ConvNet()
    for model, name in ((sequential, "c2"), (subclassed, "conv")):
        for cls in (GradCAM, RSIGradCAM):
            default = cls(model, steps=4) if cls is RSIGradCAM else cls(model)
            found = default.attribute(images, target=0)
            explicit = (cls(model, layer=name, steps=4) if cls is RSIGradCAM else cls(model, layer=name)).attribute(
                images, target=0)
            assert found.info["layer"] == name and found.method.endswith(f"(layer={name}" + (", steps=4)" if cls is RSIGradCAM else ")"))
            np.testing.assert_allclose(np.asarray(found), np.asarray(explicit), rtol=1e-5, atol=1e-7)
    assert sequential.inputs[0].shape[0] is None  # built with a free batch axis
