"""LRP by model surgery (issue 27): LRP-0 = gradient × input, conservation, z⁺ signs, zᴮ by hand,
BatchNorm merge, named errors, keras.applications coverage, equality with zennit's outputs."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfattr
from tfattr.errors import InvalidInputError
from tfattr.surgery import lrp
from tfattr.surgery.lrp import LRPGradients, _merged_params, _stages, lrp_clone

L = keras.layers
REFERENCES = os.path.join(os.path.dirname(__file__), "data", "references")


def _images(n=2, shape=(8, 8, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n,) + shape).astype("float32")


def _bn():
    positive = keras.initializers.RandomUniform(0.5, 1.5)
    return L.BatchNormalization(beta_initializer="random_normal", gamma_initializer=positive,
                                moving_mean_initializer="random_normal", moving_variance_initializer=positive)


def _graph_net(bias="random_normal"):
    """Conv(+relu), Conv+BN, ReLU, max-pool, depthwise, Add, separable conv, average pool, Dense."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=bias)(inputs)
    h = L.Conv2D(6, 3, padding="same", bias_initializer=bias)(h)
    h = _bn()(h) if bias != "zeros" else h
    h = L.ReLU()(h)
    h = L.MaxPooling2D()(h)
    branch = L.ReLU()(L.DepthwiseConv2D(3, padding="same", bias_initializer=bias)(h))
    h = L.Add()([h, branch])
    h = L.SeparableConv2D(5, 3, padding="same", activation="relu", bias_initializer=bias)(h)
    h = L.AveragePooling2D(2)(h)
    out = L.Dense(3, bias_initializer=bias)(L.Flatten()(h))
    return keras.Model(inputs, out)


def _gradient_x_input(model, x, target):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        scores = tf.gather(model(xt), target, batch_dims=1)
    return (tape.gradient(scores, xt) * xt).numpy()


def test_lrp_zero_equals_gradient_times_input_on_a_relu_network_with_biases():
    model = _graph_net()
    x = _images()
    expl = tfattr.LRP(model, composite="epsilon", epsilon=1e-12, stabilizer=1e-12).attribute(x, target=[0, 2])
    expected = _gradient_x_input(model, x, [0, 2])
    assert np.isfinite(expected).all() and np.abs(expected).max() > 0
    # LRP-0 is the chain rule rewritten (R_a = a ⊙ ∂f/∂a layer by layer); the stabiliser 1e-12 and float32
    # rounding of the two evaluation orders leave ~1e-6 of the largest value
    np.testing.assert_allclose(expl.attributions, expected, atol=1e-5 * np.abs(expected).max())


def test_lrp_zero_is_finite_on_a_black_image():
    # ε = 0 and the "zero" rule: every z is exactly 0 on a black image of a bias-free network; R/z was 0/0 = NaN
    keras.utils.set_random_seed(14)
    model = keras.Sequential([keras.Input((4,)), L.Dense(5, activation="relu"), L.Dense(3)])
    x = np.random.default_rng(15).uniform(0, 1, (2, 4)).astype("float32")
    x[0] = 0.0
    expected = _gradient_x_input(model, x, [1, 1])
    for options in (dict(composite="epsilon", epsilon=0.0), dict(composite=None, rules={L.Dense: "zero"})):
        got = tfattr.LRP(model, **options).attribute(x, target=1).attributions
        np.testing.assert_array_equal(got[0], 0.0)
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-7)


def test_a_dense_shared_by_a_nested_model_and_the_outer_graph_keeps_its_batchnorm_apart():
    # the Dense is followed by a BatchNormalization inside the Sequential only; merged, the clone applied
    # that BatchNormalization at the outer call of the Dense too: another forward, other relevances
    keras.utils.set_random_seed(18)
    dense = L.Dense(4, bias_initializer="random_normal")
    inner = keras.Sequential([dense, _bn(), L.ReLU()])
    inputs = keras.Input((4,))
    h = inner(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.Concatenate()([h, L.ReLU()(dense(h))])))
    x = np.random.default_rng(19).uniform(size=(3, 4)).astype("float32")
    np.testing.assert_array_equal(lrp_clone(model, "epsilon")(x), model(x))
    expl = tfattr.LRP(model, composite="epsilon").attribute(x, target=1)
    np.testing.assert_allclose(expl.scores, model(x).numpy()[:, 1], rtol=1e-6, atol=1e-7)


def test_layer_sums_of_a_shared_layer_are_kept_per_call():
    # the second call of a shared Dense overwrote the first one's sum in info["layer_sums"]
    keras.utils.set_random_seed(20)
    shared = L.Dense(4, activation="relu", kernel_initializer="ones", name="shared")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="head")(shared(L.Dense(4, name="first")(shared(inputs)))))
    x = np.random.default_rng(21).uniform(size=(3, 4)).astype("float32")
    expl = tfattr.LRP(model, composite="epsilon").attribute(x, target=1, layer_sums=True)
    sums = expl.info["layer_sums"]
    assert sorted(sums) == ["first", "head", "shared", "shared#2"]
    for name in sums:  # zero biases: LRP-ε conserves at every call site (all inputs of the second call are ≥ 0)
        np.testing.assert_allclose(sums[name], expl.scores, rtol=1e-4, atol=1e-6)


def test_the_clone_forward_is_the_models_and_the_model_is_untouched():
    model = _graph_net()
    before = [w.copy() for w in model.get_weights()]
    x = _images()
    clone = lrp_clone(model, "epsilon_gamma_box")
    assert np.array_equal(clone(x), model(x))  # the original layers run, BatchNorm included
    assert lrp_clone(model, "epsilon_gamma_box") is clone  # cached per rule set
    assert lrp_clone(model, "epsilon_plus") is not clone
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert all(type(layer).__module__.startswith("keras") for layer in model.layers)


def test_batchnorm_merge_is_exact_up_to_float_rounding():
    model = _graph_net()
    conv = model.layers[2]
    bn = model.layers[3]
    assert isinstance(bn, L.BatchNormalization)
    a = tf.constant(np.random.default_rng(3).normal(size=(2, 8, 8, 4)).astype("float32"))
    kernels, bias = _merged_params(conv, bn)
    merged = _stages(conv)[0](a, kernels[0], bias)
    reference = bn(conv(a), training=False)
    # W·s and (b − μ)s + β in float32: each product carries ≤ 2⁻²⁴ relative error, the 3·3·4-term sums
    # ≤ 36·2⁻²⁴ of Σ|terms|: bounded by 1e-5 of the largest output here
    np.testing.assert_allclose(merged, reference, atol=1e-5 * float(tf.reduce_max(tf.abs(reference))))


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box"])
def test_relevance_is_conserved_layer_by_layer_without_biases(composite):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, activation="relu", use_bias=False),
                              L.Conv2D(5, 3, activation="relu", use_bias=False), L.MaxPooling2D(), L.Flatten(),
                              L.Dense(6, activation="relu", use_bias=False), L.Dense(3, use_bias=False)])
    x = _images(3)
    scores = model(x).numpy()
    target = np.argmax(scores, axis=1)
    expl = tfattr.LRP(model, composite=composite, layer_sums=True).attribute(x, target=target)
    f = scores[np.arange(3), target]
    sums = expl.info["layer_sums"]
    assert set(sums) == {layer.name for layer in model.layers if not isinstance(layer, (L.Flatten, L.MaxPooling2D))}
    # every rule here conserves up to its stabiliser 1e-6 against |z| ~ 1e-2..1, and float32 sums
    for name, value in sums.items():
        np.testing.assert_allclose(value, f, rtol=1e-3, err_msg=name)
    np.testing.assert_allclose(expl.attributions.reshape(3, -1).sum(axis=1), f, rtol=1e-3)
    np.testing.assert_allclose(expl.delta, 0, atol=1e-3 * np.abs(f).max())


def test_zplus_relevances_are_non_negative():
    model = _graph_net()
    x = _images(2) - 0.3  # negative inputs too: z⁺ takes W⁻ a⁻ as positive contributions
    scores = model(x).numpy()
    target = np.argmax(scores, axis=1)
    assert (scores[np.arange(2), target] > 0).all()
    expl = tfattr.LRP(model, rules={L.Dense: "zplus"}).attribute(x, target=target)
    assert (expl.attributions >= 0).all() and expl.attributions.max() > 0


def test_zbox_is_the_hand_computed_rule_and_takes_the_box():
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((5,)), L.Dense(3, bias_initializer="random_normal")])
    model.tfattr_value_range = (-1.0, 2.0)
    x = np.random.default_rng(5).uniform(-1, 2, (2, 5)).astype("float32")
    W, b = (w.astype(np.float64) for w in model.get_weights())
    expl = tfattr.LRP(model, rules={L.Dense: "zbox"}).attribute(x, target=[1, 2])
    for n, j in enumerate([1, 2]):
        low, high = np.full(5, -1.0), np.full(5, 2.0)
        w = W[:, j]
        terms = x[n] * w - low * np.maximum(w, 0) - high * np.minimum(w, 0)
        f = x[n] @ w + b[j]
        # the biases cancel in z' = (Wx + b) − (W⁺l + b⁺) − (W⁻h + b⁻): Σ R = f exactly
        np.testing.assert_allclose(expl.attributions[n], terms / terms.sum() * f, rtol=1e-4, atol=1e-6)
        assert (terms >= 0).all()  # inside the box every term is non-negative: l ≤ x ≤ h
    explicit = tfattr.LRP(model, rules={L.Dense: "zbox"}, low=-1.0, high=2.0).attribute(x, target=[1, 2])
    np.testing.assert_array_equal(explicit.attributions, expl.attributions)
    other = tfattr.LRP(model, rules={L.Dense: "zbox"}, low=0.0, high=1.0).attribute(x, target=[1, 2])
    assert not np.allclose(other.attributions, expl.attributions)


def test_the_box_is_carried_through_the_preprocessing_layers():
    keras.utils.set_random_seed(8)
    inputs = keras.Input((5,))
    dense = L.Dense(3, bias_initializer="random_normal")
    model = keras.Model(inputs, dense(L.Rescaling(0.5, offset=-1.0)(inputs)))
    model.tfattr_value_range = (0.0, 4.0)  # the Dense sees [-1, 1]
    x = np.random.default_rng(9).uniform(0, 4, (2, 5)).astype("float32")
    expl = tfattr.LRP(model, rules={L.Dense: "zbox"}).attribute(x, target=0)
    W, b = (w.astype(np.float64) for w in dense.get_weights())
    a, w = 0.5 * x.astype(np.float64) - 1.0, W[:, 0]
    for n in range(2):  # zᴮ with l = -1, h = 1 at the Dense input; Rescaling passes the relevance on
        terms = a[n] * w + np.maximum(w, 0) - np.minimum(w, 0)
        np.testing.assert_allclose(expl.attributions[n], terms / terms.sum() * (a[n] @ w + b[0]), rtol=1e-4,
                                   atol=1e-6)


def test_the_box_is_carried_through_rescaling_in_sequential_and_nested_models():
    # a 0–255 model as usually written: Rescaling first in a Sequential, or a Sequential nested in a
    # Functional model on either side of the Rescaling; the zᴮ box must reach the Dense in [0, 1] units
    def dense():
        keras.utils.set_random_seed(10)
        return L.Dense(3, bias_initializer="random_normal")

    d1, d2, d3 = dense(), dense(), dense()
    inputs = keras.Input((5,))
    models = [
        keras.Sequential([keras.Input((5,)), L.Rescaling(1 / 255.0), d1]),
        keras.Model(inputs, keras.Sequential([d2])(L.Rescaling(1 / 255.0)(inputs))),
        keras.Model(inputs, keras.Sequential([L.Rescaling(1 / 255.0), d3])(inputs)),
    ]
    x = np.random.default_rng(11).uniform(0, 255, (2, 5)).astype("float32")
    for model, layer in zip(models, (d1, d2, d3)):
        expl = tfattr.LRP(model, rules={L.Dense: "zbox"}, low=0.0, high=255.0).attribute(x, target=1)
        W, b = (w.astype(np.float64) for w in layer.get_weights())
        a, w = x.astype(np.float64) / 255.0, W[:, 1]
        for n in range(2):  # zᴮ with l = 0, h = 1 at the Dense input
            terms = a[n] * w - np.minimum(w, 0)
            np.testing.assert_allclose(expl.attributions[n], terms / terms.sum() * (a[n] @ w + b[1]), rtol=1e-4,
                                       atol=1e-6)


def test_inputs_outside_the_zbox_box_warn():
    # a 0–255 model explained with the default (0, 1) box: zᴮ's terms lose their sign, silently
    from tfattr.errors import ValueRangeWarning

    keras.utils.set_random_seed(22)
    model = keras.Sequential([keras.Input((4, 4, 3)), L.Rescaling(1 / 255.0), L.Conv2D(2, 3), L.Flatten(),
                              L.Dense(2)])
    x = np.random.default_rng(23).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    with pytest.warns(ValueRangeWarning, match=r"\(low, high\)"):
        tfattr.LRP(model, composite="epsilon_gamma_box").attribute(x, target=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ValueRangeWarning)
        tfattr.LRP(model, composite="epsilon_gamma_box", low=0, high=255).attribute(x, target=0)
        tfattr.LRP(model, composite="epsilon_plus").attribute(x, target=0)  # no zᴮ: the box is not used


def test_wsquare_and_flat_are_the_hand_computed_rules():
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, bias_initializer="random_normal")])
    x = np.random.default_rng(7).normal(size=(2, 4)).astype("float32")
    W, b = (w.astype(np.float64) for w in model.get_weights())
    f = (x @ W + b)[:, 1]
    square = tfattr.LRP(model, rules={L.Dense: "wsquare"}).attribute(x, target=1).attributions
    flat = tfattr.LRP(model, rules={L.Dense: "flat"}).attribute(x, target=1).attributions
    w = W[:, 1]
    for n in range(2):  # w²: R_i = w_i² / (Σ w² + b²) · f (zennit squares the bias); flat: f / 4
        np.testing.assert_allclose(square[n], w**2 / (np.sum(w**2) + b[1] ** 2) * f[n], rtol=1e-5)
        np.testing.assert_allclose(flat[n], np.full(4, f[n] / 4), rtol=1e-5)


def test_per_call_rules_and_trained_weights_are_followed():
    model = _graph_net()
    x = _images()
    method = tfattr.LRP(model)
    plus = method.attribute(x, target=1).attributions
    eps = method.attribute(x, target=1, composite="epsilon").attributions
    np.testing.assert_allclose(eps, tfattr.LRP(model, composite="epsilon").attribute(x, target=1).attributions,
                               rtol=1e-5, atol=1e-7)
    assert not np.allclose(plus, eps)
    model.set_weights([w * 1.5 if w.ndim > 1 else w for w in model.get_weights()])
    after = method.attribute(x, target=1).attributions
    fresh = lrp_clone(model, "epsilon_plus")  # refreshed from the model's new weights
    _, expected, _ = LRPGradients(fresh)(tf.constant(x), tf.constant([1, 1]))
    np.testing.assert_allclose(after, expected.numpy(), rtol=1e-4, atol=1e-7)
    assert not np.allclose(after, plus)


def test_a_layer_without_a_rule_is_a_named_error():
    inputs = keras.Input((6,))
    h = L.Dense(4, activation="relu", name="hidden")(inputs)
    gate = L.Dense(4, activation="sigmoid", name="gate")(inputs)
    out = L.Dense(2, name="head")(L.Multiply(name="the_gate")([h, gate]))
    model = keras.Model(inputs, out)
    x = np.random.default_rng(0).uniform(size=(2, 6)).astype("float32")
    with pytest.raises(InvalidInputError, match=r"the_gate \(Multiply\).*Received: model.name"):
        tfattr.LRP(model).attribute(x, target=0)
    expl = tfattr.LRP(model, composite="epsilon", unsupported="gradient").attribute(x, target=0)
    assert np.isfinite(expl.attributions).all()
    softmax = keras.Sequential([keras.Input((6,)), L.Dense(3, activation="softmax", name="probs")])
    with pytest.raises(InvalidInputError, match=r"probs.*logits_model"):
        tfattr.LRP(softmax).attribute(x, target=0)


def test_wrong_boxes_rules_and_rule_parameters_are_named_errors():
    keras.utils.set_random_seed(12)
    model = keras.Sequential([keras.Input((4, 4, 3)), L.Conv2D(2, 3, name="conv"), L.Flatten(),
                              L.Dense(2, name="head")])
    x = np.random.default_rng(13).uniform(size=(2, 4, 4, 3)).astype("float32")
    box = dict(composite="epsilon_gamma_box")
    with pytest.raises(InvalidInputError, match=r"low.*≤.*high.*Received: \(low, high\)=\(1, 0\)"):
        tfattr.LRP(model, low=1, high=0, **box).attribute(x, target=0)  # was accepted: a box turned inside out
    with pytest.raises(InvalidInputError, match=r"shape \(4, 4, 3\).*Received: \(low, high\)"):
        tfattr.LRP(model, low=[0.0, 0.0], high=1.0, **box).attribute(x, target=0)  # was numpy's ValueError
    with pytest.raises(InvalidInputError, match=r"\['hed'\].*Received: rules="):
        tfattr.LRP(model, rules={"hed": "zplus"}).attribute(x, target=0)  # a typo was ignored silently
    assert np.isfinite(tfattr.LRP(model, rules={"head": "zplus", L.Conv3D: "flat"}).attribute(x, target=0)
                       .attributions).all()  # a class the model lacks is a general mapping: fine
    with pytest.raises(InvalidInputError, match=r"epsilon.*Received: epsilon=-1.0"):
        lrp.Epsilon(epsilon=-1.0)
    with pytest.raises(InvalidInputError, match=r"gamma.*Received: gamma=-0.5"):
        lrp.Gamma(gamma=-0.5)
    with pytest.raises(InvalidInputError, match=r"stabilizer.*Received: stabilizer=0.0"):
        lrp.ZPlus(stabilizer=0.0)
    with pytest.raises(InvalidInputError, match=r"Received: \(low, high\)=\(1.0, 0.0\)"):
        lrp.ZBox(low=1.0, high=0.0)


def test_adding_a_constant_with_keras_ops_is_a_named_error():
    # `h + 1.0` is a keras.ops Add node with one tensor; the Norm rule's Add layer crashed on it (Keras' ValueError)
    keras.utils.set_random_seed(16)
    inputs = keras.Input((4,))
    hidden = L.Dense(5, bias_initializer="random_normal")(inputs)
    model = keras.Model(inputs, L.Dense(3)(keras.ops.relu(hidden + 1.0)))
    x = np.random.default_rng(17).uniform(size=(2, 4)).astype("float32")
    with pytest.raises(InvalidInputError, match=r"Add of a constant.*Received: model.name"):
        tfattr.LRP(model).attribute(x, target=0)
    clone = lrp_clone(model, "epsilon", unsupported="gradient")
    np.testing.assert_array_equal(clone(x), model(x))


@pytest.mark.parametrize("name", ["VGG16", pytest.param("ResNet50", marks=pytest.mark.slow), "MobileNetV2",
                                  pytest.param("DenseNet121", marks=pytest.mark.slow), "EfficientNetB0"])
def test_keras_applications_conserve_or_name_the_layer(name):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classifier_activation=None)
    x = _images(1, (32, 32, 3)) * 255.0 - 128.0 if name == "VGG16" else _images(1, (32, 32, 3))
    if name == "EfficientNetB0":  # squeeze-and-excitation gates: Multiply has no LRP rule
        with pytest.raises(InvalidInputError, match=r"block1a_se_excite \(Multiply\)"):
            tfattr.LRP(model).attribute(x, target=0)
        return
    # one eager pass of the clone (the method's engine would trace the whole network: 10-50 s here)
    clone = lrp_clone(model, "epsilon", epsilon=1e-30, stabilizer=1e-30)
    scores = model(x).numpy()
    target = int(np.argmax(scores[0]))
    _, relevance, _ = LRPGradients(clone)(tf.constant(x), tf.constant([target]))
    # weights=None: every bias and BatchNorm shift/mean is 0, so LRP-0 (ε = 1e-30, far below the |z| of
    # these untrained nets, whose MobileNetV2 output is ~1e-12) conserves up to float32 sums of ~10⁵ terms
    assert scores[0, target] != 0
    np.testing.assert_allclose(float(tf.reduce_sum(relevance)), scores[0, target], rtol=2e-3)


def _reference_model(kind, data):
    """The Keras twins of references/make_zennit_references.py's networks, with the stored weights."""
    def w(name, count):
        return [data[f"w_{name}_{i}"].astype("float32") for i in range(count)]

    inputs = keras.Input((8, 8, 3))
    if kind == "vgg":
        h = L.Conv2D(4, 3, padding="same", activation="relu")
        c2, bn2, c3 = L.Conv2D(6, 3, padding="same"), L.BatchNormalization(), L.Conv2D(6, 3, padding="same",
                                                                                        activation="relu")
        d1, d2 = L.Dense(5, activation="relu"), L.Dense(3)
        out = d2(d1(L.Flatten()(c3(L.MaxPooling2D()(L.ReLU()(bn2(c2(h(inputs)))))))))
        model = keras.Model(inputs, out)
        for layer, name, count in ((h, "c1", 2), (c2, "c2", 2), (bn2, "bn2", 4), (c3, "c3", 2), (d1, "d1", 2),
                                   (d2, "d2", 2)):
            layer.set_weights(w(name, count))
        return model
    layers = {}
    for name in ("1", "2", "3"):
        layers["c" + name] = L.Conv2D(4, 3, padding="same")
        layers["bn" + name] = L.BatchNormalization()
    h = L.ReLU()(layers["bn1"](layers["c1"](inputs)))
    r = layers["bn3"](layers["c3"](L.ReLU()(layers["bn2"](layers["c2"](h)))))
    h = L.ReLU()(L.Add()([h, r]))
    dense = L.Dense(3)
    out = dense(L.GlobalAveragePooling2D()(L.AveragePooling2D(2)(h)))
    model = keras.Model(inputs, out)
    for name, layer in layers.items():
        layer.set_weights(w(name, 2 if name.startswith("c") else 4))
    dense.set_weights(w("d", 2))
    return model


@pytest.mark.parametrize("kind", ["vgg", "resnet"])
@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1"])
def test_equals_zennit_on_the_same_weights(kind, composite):
    data = np.load(os.path.join(REFERENCES, f"zennit_lrp_{kind}.npz"))
    model = _reference_model(kind, data)
    x = data["x"].astype("float32")
    np.testing.assert_allclose(model(x), data["out"], rtol=1e-4, atol=1e-5)  # the layouts match
    expl = tfattr.LRP(model, composite=composite).attribute(x, target=data["target"])
    expected = data[composite]
    # zennit ran in float64; float32 here: the rules' divisions by stab(z) amplify rounding where |z| is
    # small, so the bound is 1e-4 of the largest relevance (a wrong rule or layout is off by O(1))
    np.testing.assert_allclose(expl.attributions, expected, atol=1e-4 * np.abs(expected).max())
    if composite != "epsilon_gamma_box":  # inputs of both signs (zᴮ's box is [0, 1])
        signed = data["x_signed"].astype("float32")
        expl = tfattr.LRP(model, composite=composite).attribute(signed, target=data["target"])
        expected = data[composite + "_signed"]
        np.testing.assert_allclose(expl.attributions, expected, atol=1e-4 * np.abs(expected).max())


@pytest.fixture(scope="module")
def lite0():
    from tfattr.data import EfficientNetLite0

    return EfficientNetLite0(input_shape=(64, 64, 3))


@pytest.mark.slow
@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1"])
def test_equals_zennit_on_efficientnet_lite0(composite, lite0):
    data = np.load(os.path.join(REFERENCES, "zennit_lrp_lite0.npz"))
    model = lite0
    x = data["x"].astype("float32")
    # the same network (measured: 2e-5 of 12.9, float32 against float64)
    np.testing.assert_allclose(model(x), data["out"], atol=1e-4 * np.abs(data["out"]).max())
    expl = tfattr.LRP(model, composite=composite).attribute(x, target=data["target"])
    expected = data[composite]
    # 50 layers of float32 against zennit's float64, each rule dividing by stab(z); measured ≤ 2e-5 of the
    # largest relevance, bound 1e-4 (a wrong rule, merge or residual split is off by O(1))
    np.testing.assert_allclose(expl.attributions, expected, atol=1e-4 * np.abs(expected).max())
