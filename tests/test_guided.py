"""GuidedBackprop and GuidedIntegratedGradients (Kwon, Koo & Cho): analytic maps, equality with
IG when no gradient is negative, the IG options, caching, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import as_image, small_cnn

import tfattr.surgery.guided as guided_module
from tfattr import Gradient, IntegratedGradients, NoiseTunnel
from tfattr.core.gradients import input_gradients
from tfattr.core.quadrature import quadrature
from tfattr.errors import InvalidInputError
from tfattr.methods.guided import GuidedBackprop, GuidedIntegratedGradients
from tfattr.surgery import clear_cache, guided_clone

L = keras.layers


def conv_relu_dense():
    """4×4×1 input → one 3×3 all-ones conv with 2 channels (bias −50, −75, valid) → ReLU →
    flatten → dense (1 unit, no bias) with weights five +1 then three −1 in channel-first order."""
    inp = keras.Input((4, 4, 1))
    conv = L.Conv2D(2, 3, name="conv")
    h = L.ReLU(name="relu")(conv(inp))
    dense = L.Dense(1, use_bias=False, name="dense")
    model = keras.Model(inp, dense(L.Flatten()(h)))
    conv.set_weights([np.ones((3, 3, 1, 2), np.float32), np.array([-50.0, -75.0], np.float32)])
    chw = np.array([1, 1, 1, 1, 1, -1, -1, -1], np.float32).reshape(2, 2, 2)  # [c, h, w]
    dense.set_weights([chw.transpose(1, 2, 0).reshape(8, 1)])  # Keras flattens (h, w, c)
    return model


def test_guided_backprop_analytic_map_of_one_conv_relu_dense():
    # x = arange(16) as 4×4. The 3×3 window sums are 45, 54 / 81, 90 (windows (0,0), (0,1) /
    # (1,0), (1,1)); minus 50 → channel 0 pre-activations −5, 4 / 31, 40, ReLU mask 0, 1 / 1, 1;
    # minus 75 → channel 1: −30, −21 / 6, 15, mask 0, 0 / 1, 1.
    # Dense weights (channel-first): channel 0 all +1; channel 1: +1 at window (0,0), −1 elsewhere.
    # Guided ReLU backward = relu(w) ⊙ mask: channel 0 → 0, 1 / 1, 1; channel 1 → 0 everywhere
    # (+1 is masked at (0,0); −1 is cut by relu). The conv backward adds the 3×3 footprint of
    # windows (0,1), (1,0), (1,1) once each:
    #   row 0: (0,1) covers cols 1–3                      → 0 1 1 1
    #   rows 1–2: col 0 by (1,0); cols 1–2 by all three; col 3 by (0,1), (1,1) → 1 3 3 2
    #   row 3: (1,0) covers cols 0–2, (1,1) cols 1–3     → 1 2 2 1
    # Plain gradient: upstream w ⊙ mask: channel 0 → 0, 1 / 1, 1; channel 1 → 0, 0 / −1, −1; so
    # windows (1,0) and (1,1) cancel (1 − 1) and only window (0,1) remains.
    model = conv_relu_dense()
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    guided = np.asarray(GuidedBackprop(model).attribute(x, target=0))[0, :, :, 0]
    plain = np.asarray(Gradient(model).attribute(x, target=0))[0, :, :, 0]
    np.testing.assert_array_equal(guided, [[0, 1, 1, 1], [1, 3, 3, 2], [1, 3, 3, 2], [1, 2, 2, 1]])
    np.testing.assert_array_equal(plain, [[0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]])


def test_guided_backprop_of_relu_then_minus_square_is_zero_where_the_gradient_is_negative():
    # f(x) = −Σ relu(x)² at x = (5, 0, −5, 10): ∇f = −2 relu(x) ⊙ 1[x > 0] = (−10, 0, 0, −20);
    # guided: relu(−2y) ⊙ 1[x > 0] = 0.
    inp = keras.Input((1, 1, 4))
    out = L.Lambda(lambda v: -keras.ops.sum(v**2, axis=(1, 2, 3))[:, None])(L.ReLU()(inp))
    model = keras.Model(inp, out)
    x = as_image([5.0, 0.0, -5.0, 10.0])
    np.testing.assert_array_equal(np.asarray(Gradient(model).attribute(x, target=0)).ravel(), [-10, 0, 0, -20])
    np.testing.assert_array_equal(np.asarray(GuidedBackprop(model).attribute(x, target=0)).ravel(), [0, 0, 0, 0])
    absolute = GuidedBackprop(model, absolute=True).attribute(x, target=0)
    np.testing.assert_array_equal(np.asarray(absolute).ravel(), [0, 0, 0, 0])


def non_negative_gradient_cnn():
    """small_cnn with |kernels|: every gradient flowing back from a class score is ≥ 0
    (non-negative weights times 0/1 masks), so guided and plain backward passes coincide.
    Biases stay signed, so ReLUs still switch along the path."""
    model = small_cnn(seed=3)
    model.set_weights([np.abs(w) if w.ndim > 1 else w for w in model.get_weights()])
    return model


IG_OPTIONS = [
    dict(),                                                            # zero baseline, right Riemann
    dict(baseline="blur", rule="gauss_legendre", steps=16),
    dict(baseline="uniform", n_baselines=3, rule="riemann_trapezoid", steps=12, seed=4),
    dict(baseline=0.25, rule="riemann_middle", steps=10, batch_size=7),
]


@pytest.mark.parametrize("options", IG_OPTIONS, ids=["default", "blur-gauss", "uniform-noise", "constant-middle"])
def test_guided_ig_equals_ig_on_a_network_without_negative_gradients(options, images):
    model = non_negative_gradient_cnn()
    options = dict({"steps": 20}, **options)
    guided = GuidedIntegratedGradients(model, **options).attribute(images, target=[0, 2, 4])
    plain = IntegratedGradients(model, **options).attribute(images, target=[0, 2, 4])
    assert np.abs(np.asarray(plain)).max() > 1e-3
    np.testing.assert_allclose(np.asarray(guided), np.asarray(plain), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(guided.delta, plain.delta, rtol=1e-6, atol=1e-9)
    assert guided.method.startswith("guided_integrated_gradients(")


def test_guided_ig_is_the_quadrature_of_guided_gradients_along_the_straight_path(relu_cnn, images):
    # GIG_i = (x_i − z_i) Σ_m w_m ∂^G f(z + α_m (x − z))/∂x_i, here from a constant baseline z = 0.1
    steps = 8
    method = GuidedIntegratedGradients(relu_cnn, baseline=0.1, steps=steps, rule="gauss_legendre")
    expl = method.attribute(images, target=1)
    alphas, weights = quadrature("gauss_legendre", steps)
    z = np.full_like(images, 0.1)
    points = np.concatenate([z + a * (images - z) for a in alphas]).astype(np.float32)
    _, g = input_gradients(guided_clone(relu_cnn), points, np.ones(len(points), np.int32))
    g = g.reshape((steps,) + images.shape)
    expected = (images - z) * np.tensordot(weights, g, axes=1)
    np.testing.assert_allclose(np.asarray(expl), expected, rtol=1e-5, atol=1e-7)
    plain = IntegratedGradients(relu_cnn, baseline=0.1, steps=steps, rule="gauss_legendre").attribute(images, target=1)
    assert np.abs(np.asarray(expl) - np.asarray(plain)).max() > 1e-3  # guidance changed something
    np.testing.assert_allclose(expl.scores, plain.scores)  # f(x) is the original model's


def test_guided_ig_does_not_depend_on_batch_size_and_accepts_callable_targets(relu_cnn, images):
    method = GuidedIntegratedGradients(relu_cnn, steps=10)
    a = np.asarray(method.attribute(images, target=3, batch_size=4))
    b = np.asarray(method.attribute(images, target=3, batch_size=64))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    c = np.asarray(method.attribute(images, target=lambda out: out[:, 3], batch_size=8))
    np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-8)


def test_noise_tunnel_around_guided_ig_averages_guided_ig_over_the_noisy_inputs(relu_cnn, images):
    method = GuidedIntegratedGradients(relu_cnn, steps=6)
    tunnel = NoiseTunnel(method, nt_samples=3, noise_level=0.1, seed=2)
    smoothed = np.asarray(tunnel.attribute(images[:2], target=0))
    noise = tunnel.noise(images.shape[1:], tunnel.config)
    each = [np.asarray(method.attribute((images[:2] + n).astype(np.float32), target=0)) for n in noise]
    np.testing.assert_allclose(smoothed, np.mean(each, axis=0), rtol=1e-5, atol=1e-8)


class HiddenReLU(keras.layers.Layer):
    def call(self, inputs):
        return tf.nn.relu(inputs)


@pytest.mark.parametrize("method_class", [GuidedIntegratedGradients, GuidedBackprop])
def test_models_without_a_relu_or_maxpool_to_guide_are_refused(method_class, smooth_cnn, images):
    with pytest.raises(InvalidInputError, match=r"has none that tfattr can swap.*Received: model\.name="):
        method_class(smooth_cnn).attribute(images, target=0)
    inp = keras.Input((4, 4, 3))
    hidden = keras.Model(inp, L.Dense(2)(L.Flatten()(HiddenReLU(name="secret_relu")(inp))), name="hidden")
    with pytest.warns(UserWarning), pytest.raises(InvalidInputError, match=r"hidden/secret_relu \(Relu\)"):
        method_class(hidden).attribute(images[:, :4, :4], target=0)


def test_the_guided_clone_is_built_once_per_model(monkeypatch, images):
    model = small_cnn(seed=5)
    clear_cache(model)
    builds = []
    original = guided_module.clone_with

    def counting(*args, **kwargs):
        builds.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(guided_module, "clone_with", counting)
    GuidedIntegratedGradients(model, steps=4).attribute(images, target=0)
    GuidedIntegratedGradients(model, steps=4).attribute(images, target=1)
    backprop = GuidedBackprop(model)
    backprop.attribute(images, target=0)
    backprop.attribute(images, target=lambda out: out[:, 2])
    assert len(builds) == 1
    assert backprop.gradient_function().model.clone is guided_clone(model)


def test_training_the_model_after_a_first_explanation_is_seen_by_the_next_one(images):
    model = small_cnn(seed=6)
    method = GuidedBackprop(model)
    first = np.asarray(method.attribute(images, target=0))
    model.set_weights([w * 0.7 if w.ndim > 1 else w for w in model.get_weights()])
    second = np.asarray(method.attribute(images, target=0))
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    expected = input_gradients(guided_clone(copy), images, np.zeros(len(images), np.int32))[1]
    np.testing.assert_allclose(second, expected, rtol=1e-5, atol=1e-8)
    assert np.abs(second - first).max() > 1e-4


def pool_dense(pool, size, weights):
    """size×size×1 input → ``pool`` → flatten → dense (1 unit, no bias, ``weights`` row-major):
    the upstream gradient of the pool's output is ``weights``."""
    inp = keras.Input((size, size, 1))
    pooled = pool(inp)
    dense = L.Dense(1, use_bias=False)
    model = keras.Model(inp, dense(L.Flatten()(pooled)))
    dense.set_weights([np.asarray(weights, np.float32).reshape(-1, 1)])
    return model


def test_code_maxpool_rule_on_an_overlapping_3x3_stride_2_pool_is_the_nearest_sign_masked_plain_gradient():
    # 5×5 input, 3×3/2 valid pool → 2×2 output; windows (rows, cols): (0,0) 0–2, 0–2; (0,1) 0–2, 2–4;
    # (1,0) 2–4, 0–2; (1,1) 2–4, 2–4. Background < 1; x[0,4] = 9 wins (0,1), x[2,4] = 8 wins (1,1),
    # x[2,2] = 7 wins (0,0) and (1,0). Upstream g = [[a, b], [c, d]] = [[1, −2], [−3, 4]].
    # Plain gradient: (2,2) a + c = −2, (0,4) b = −2, (2,4) d = 4.
    # Paper: relu per window: (2,2) relu(a) + relu(c) = 1, (0,4) 0, (2,4) 4.
    # Code: plain ⊙ nearest(1[g > 0]); position j takes output ⌊2j/5⌋ (0,0,0,1,1 for j = 0..4):
    #   (2,2) → g[0,0] = 1 > 0 keeps −2 (a negative guided gradient); (0,4) → g[0,1] < 0 → 0;
    #   (2,4) → g[0,1] = −2 < 0 drops the positive 4.
    x = np.random.default_rng(0).uniform(0, 1, (1, 5, 5, 1)).astype(np.float32)
    x[0, 0, 4, 0], x[0, 2, 4, 0], x[0, 2, 2, 0] = 9.0, 8.0, 7.0
    model = pool_dense(L.MaxPooling2D(3, strides=2), 5, [1, -2, -3, 4])
    paper, code = np.zeros((5, 5)), np.zeros((5, 5))
    paper[2, 2], paper[2, 4] = 1.0, 4.0
    code[2, 2] = -2.0
    np.testing.assert_array_equal(np.asarray(GuidedBackprop(model).attribute(x, target=0))[0, :, :, 0], paper)
    np.testing.assert_array_equal(
        np.asarray(GuidedBackprop(model, maxpool_rule="code").attribute(x, target=0))[0, :, :, 0], code)
    # the option also per call, and through guided IG (one node at α = 1 from a zero baseline: (x − 0) ⊙ ∂^G)
    gig = GuidedIntegratedGradients(model, steps=1, baseline="zero")
    np.testing.assert_array_equal(np.asarray(gig.attribute(x, target=0, maxpool_rule="code"))[0, :, :, 0], code * x[0, :, :, 0])
    np.testing.assert_array_equal(np.asarray(gig.attribute(x, target=0))[0, :, :, 0], paper * x[0, :, :, 0])
    # the forward pass is the original one under both rules
    for rule in ("paper", "code"):
        np.testing.assert_array_equal(guided_clone(model, maxpool_rule=rule)(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_code_and_paper_maxpool_rules_agree_on_2x2_stride_2_pools_of_even_size(data_format):
    # windows tile the input: each position is in one window, which is its nearest output
    rng = np.random.default_rng(1)
    inp = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same")(inp)
    if data_format == "channels_first":
        h = L.Permute((3, 1, 2))(h)
    h = L.MaxPooling2D(2, data_format=data_format)(h)
    model = keras.Model(inp, L.Dense(5)(L.Flatten()(h)))
    x = rng.normal(size=(3, 8, 8, 3)).astype(np.float32)
    paper = np.asarray(GuidedBackprop(model).attribute(x, target=[0, 2, 4]))
    code = np.asarray(GuidedBackprop(model, maxpool_rule="code").attribute(x, target=[0, 2, 4]))
    plain = np.asarray(Gradient(model).attribute(x, target=[0, 2, 4]))
    np.testing.assert_allclose(code, paper, rtol=0, atol=1e-6 * np.abs(paper).max())
    assert np.abs(plain - paper).max() > 0.1 * np.abs(paper).max()  # the rule did act: negatives were cut


def test_a_bad_maxpool_rule_is_refused_naming_it(relu_cnn):
    with pytest.raises(InvalidInputError, match="Received: maxpool_rule='torch'"):
        GuidedBackprop(relu_cnn, maxpool_rule="torch")
    with pytest.raises(InvalidInputError, match="Received: maxpool_rule='torch'"):
        guided_clone(relu_cnn, maxpool_rule="torch")
