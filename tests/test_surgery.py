"""tfattr.surgery: guided clones and logits models compute the original outputs, swap every
ReLU/max-pool (nested models included), keep the original untouched, report what they
cannot swap, and keep the gradient dtype."""

import gc
import warnings
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import small_cnn

from tfattr.core.gradients import input_gradients
from tfattr.errors import InvalidInputError, InvalidTypeError
from tfattr.surgery import (
    GuidedActivation,
    GuidedReLU,
    SurgeryWarning,
    clear_cache,
    find_softmax_head,
    guided_clone,
    logits_model,
    positive_gradient_gate,
    surgery_report,
    synced,
)

RNG = np.random.default_rng(0)
L = keras.layers


def grads(model, x, targets):
    return input_gradients(model, np.asarray(x, np.float32), targets)[1]


def relu_like_layers(model):
    """Leaf layers a guided clone must change, found independently of tfattr's rules."""
    names = []
    for layer in model.layers:
        if isinstance(layer, (keras.Model,)):
            names += [f"{layer.name}/{n}" for n in relu_like_layers(layer)]
        elif type(layer).__name__ in ("ReLU", "LeakyReLU", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
                                      "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D"):
            names.append(layer.name)
        elif layer.get_config().get("activation") in ("relu", "relu6", "leaky_relu"):
            names.append(layer.name)
    return names


# -- the gate --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_positive_gradient_gate_is_identity_forward_and_relu_backward_in_the_incoming_dtype(dtype):
    x = tf.constant([1.5, -2.0, 0.0, 3.0], dtype=dtype)
    upstream = tf.constant([-3.0, 4.0, 2.0, -0.5], dtype=dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = positive_gradient_gate(x)
        score = tf.reduce_sum(y * upstream)
    g = tape.gradient(score, x)
    assert y.dtype == x.dtype and g.dtype == x.dtype
    np.testing.assert_array_equal(y.numpy().astype(np.float64), x.numpy().astype(np.float64))
    np.testing.assert_array_equal(g.numpy().astype(np.float64), [0.0, 4.0, 2.0, 0.0])


@pytest.mark.parametrize("params", [
    dict(),                                                  # plain ReLU
    dict(max_value=6.0),                                     # ReLU6 (MobileNet)
    dict(max_value=4.0, negative_slope=0.1, threshold=0.5),  # everything at once
    dict(negative_slope=0.2),                                # leaky
])
def test_guided_relu_keeps_the_forward_and_multiplies_relu_of_upstream_by_its_own_derivative(params):
    x = tf.constant(np.linspace(-8, 8, 33), tf.float32)  # includes the kinks 0, 0.5, 4, 6
    upstream = tf.constant(RNG.normal(size=33), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        plain = keras.activations.relu(x, **params)
        guided = GuidedReLU(**params)(x)
    np.testing.assert_array_equal(guided.numpy(), plain.numpy())
    derivative = tape.gradient(plain, x)  # f'(x) with TensorFlow's own kink conventions
    g = tape.gradient(guided, x, output_gradients=upstream)
    np.testing.assert_allclose(g.numpy(), np.maximum(upstream.numpy(), 0) * derivative.numpy(), rtol=1e-6)
    assert g.numpy().min() >= 0.0  # f' ≥ 0 for the ReLU family: only positive gradients pass


# -- what is swapped -------------------------------------------------------------------------

def zoo_2d():
    """One of each 2-D ReLU/max-pool spelling, with non-zero biases."""
    keras.utils.set_random_seed(3)
    b = keras.initializers.RandomUniform(-0.3, 0.3, seed=3)
    inp = keras.Input((12, 12, 3), name="image")
    h = L.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=b, name="conv_relu")(inp)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu6", bias_initializer=b, name="dw_relu6")(h)
    h = L.SeparableConv2D(4, 3, padding="same", activation=keras.activations.relu, bias_initializer=b,
                          name="sep_relu_fn")(h)
    h = L.MaxPooling2D(name="pool")(h)
    h = L.Conv2D(4, 3, padding="same", activation=tf.nn.relu, bias_initializer=b, name="conv_tfnn")(h)
    h = L.Conv2D(4, 1, bias_initializer=b, name="conv_linear")(h)
    h = L.ReLU(max_value=6.0, name="relu6_layer")(h)
    h = L.Conv2D(4, 1, bias_initializer=b, name="conv_tanh", activation="tanh")(h)
    h = L.Activation("relu", name="act_relu")(h)
    h = L.Conv2D(4, 1, bias_initializer=b, name="conv3")(h)
    h = L.LeakyReLU(0.1, name="leaky")(h)
    h = L.Conv2DTranspose(4, 2, strides=2, activation="relu", bias_initializer=b, name="deconv_relu")(h)
    pooled = L.GlobalMaxPooling2D(name="gmp")(h)
    h = L.Dense(8, activation="relu", bias_initializer=b, name="dense_relu")(pooled)
    out = L.Dense(3, bias_initializer=b, name="logits")(h)
    return keras.Model(inp, out, name="zoo")


GUIDED_IN_ZOO = {"conv_relu", "dw_relu6", "sep_relu_fn", "pool", "conv_tfnn", "relu6_layer", "act_relu",
                 "leaky", "deconv_relu", "gmp", "dense_relu"}


def test_guided_clone_swaps_every_relu_and_maxpool_spelling_and_keeps_names_and_outputs():
    model = zoo_2d()
    clone = guided_clone(model)
    report = surgery_report(clone)
    assert set(report.changed) == GUIDED_IN_ZOO and report.left_alone == ()
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    assert isinstance(clone.get_layer("relu6_layer"), GuidedReLU) and clone.get_layer("relu6_layer").max_value == 6.0
    assert isinstance(clone.get_layer("conv_relu").activation, GuidedActivation)
    assert clone.get_layer("conv_tanh").activation is keras.activations.tanh  # not a ReLU: untouched
    x = RNG.uniform(-1, 1, (4, 12, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(clone(x).numpy(), model(x).numpy())  # same ops, same weights
    for source, target in zip(model.weights, clone.weights):
        np.testing.assert_array_equal(source.numpy(), target.numpy())
    plain, guided = grads(model, x, [0, 1, 2, 0]), grads(clone, x, [0, 1, 2, 0])
    assert np.abs(plain - guided).max() > 1e-3  # the backward did change


@pytest.mark.parametrize("rank", [1, 3])
def test_guided_clone_swaps_1d_and_3d_convolutions_and_poolings(rank):
    keras.utils.set_random_seed(4)
    conv, pool, gpool = {1: (L.Conv1D, L.MaxPooling1D, L.GlobalMaxPooling1D),
                         3: (L.Conv3D, L.MaxPooling3D, L.GlobalMaxPooling3D)}[rank]
    shape = (8,) * rank + (2,)
    inp = keras.Input(shape)
    h = conv(3, 3, padding="same", activation="relu", bias_initializer="ones", name="conv")(inp)
    h = pool(2, name="pool")(h)
    h = gpool(name="gpool")(h)
    model = keras.Model(inp, L.Dense(2, name="out")(h))
    clone = guided_clone(model)
    assert set(surgery_report(clone).changed) == {"conv", "pool", "gpool"}
    x = RNG.uniform(-1, 1, (2,) + shape).astype(np.float32)
    np.testing.assert_array_equal(clone(x).numpy(), model(x).numpy())


def test_analytic_relu_then_minus_square_normal_and_guided_gradients():
    # f(x) = −Σ relu(x)²; ∂f/∂y = −2y = (−10, 0, 0, −20) at x = (5, 0, −5, 10).
    # Normal: ∂f/∂y ⊙ 1[x > 0] = (−10, 0, 0, −20). Guided: relu(∂f/∂y) ⊙ 1[x > 0] = 0.
    inp = keras.Input((4,))
    y = L.ReLU(name="relu")(inp)
    out = L.Lambda(lambda v: -keras.ops.sum(v**2, axis=1, keepdims=True), name="minus_square")(y)
    model = keras.Model(inp, out)
    x = np.array([[5.0, 0.0, -5.0, 10.0]], np.float32)
    np.testing.assert_array_equal(grads(model, x, [0]), [[-10.0, 0.0, 0.0, -20.0]])
    np.testing.assert_array_equal(grads(guided_clone(model), x, [0]), [[0.0, 0.0, 0.0, 0.0]])


def test_relus_written_as_keras_ops_in_a_functional_graph_are_swapped():
    inp = keras.Input((4,))
    h = L.Dense(4, bias_initializer="ones", name="d")(inp)
    a = keras.ops.relu(h)
    b = keras.activations.relu(h * -1.0, max_value=3.0, threshold=0.1)
    c = keras.ops.leaky_relu(h, negative_slope=0.3)
    model = keras.Model(inp, L.Dense(2, name="out")(keras.ops.concatenate([a, b, c], axis=-1)))
    op_names = [op.name for op in model.operations if type(op).__name__ in ("Relu", "ReLU", "LeakyRelu")]
    clone = guided_clone(model)
    assert len(op_names) == 3 and set(surgery_report(clone).changed) == set(op_names)
    assert surgery_report(clone).left_alone == ()
    x = RNG.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(clone(x).numpy(), model(x).numpy())
    assert np.abs(grads(clone, x, [0] * 5) - grads(model, x, [0] * 5)).max() > 1e-3


# -- keras.applications: forward equivalence ----------------------------------------------------

APPLICATIONS = [("VGG16", 32), ("VGG19", 32), ("ResNet50", 32), ("DenseNet121", 32),
                ("MobileNetV2", 32), ("InceptionV3", 75)]


@pytest.mark.parametrize("name,size", APPLICATIONS)
def test_guided_and_logits_clones_of_keras_applications_give_the_original_outputs(name, size):
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)
    x = RNG.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    probabilities = model(x).numpy().astype(np.float64)

    guided = guided_clone(model)
    report = surgery_report(guided)
    assert report.left_alone == ()  # nothing missed: every Relu/Relu6/MaxPool op is guided
    assert sorted(report.changed) == sorted(relu_like_layers(model))
    np.testing.assert_allclose(guided(x).numpy(), probabilities, rtol=1e-6, atol=0)
    np.testing.assert_allclose(synced(guided)(x).numpy(), probabilities, rtol=1e-6, atol=0)  # BN stats too

    logits = logits_model(model)
    head_name, head = find_softmax_head(model)
    assert surgery_report(logits).changed == (head_name,)
    z = logits(x).numpy().astype(np.float64)
    features = keras.Model(model.input, head.input)(x)  # a view of the original graph
    z_reference = (keras.ops.matmul(features, head.kernel) + head.bias).numpy().astype(np.float64)
    np.testing.assert_allclose(z, z_reference, rtol=1e-6, atol=1e-6 * np.abs(z_reference).max())
    softmax = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(axis=1, keepdims=True), probabilities, rtol=1e-6, atol=1e-9)
    assert not np.allclose(z.sum(axis=1), 1.0)  # really the logits, not probabilities


# -- nested models and shared layers -------------------------------------------------------------

def nested_and_flat():
    """The same network twice: flat, and split into a nested Functional and a nested Sequential
    (built from the same layer objects, so the two share weights). A Dense is shared by two
    branches."""
    keras.utils.set_random_seed(5)
    b = keras.initializers.RandomUniform(-0.3, 0.3, seed=5)
    conv = L.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=b, name="conv")
    pool = L.MaxPooling2D(name="pool")
    flatten = L.Flatten(name="flatten")
    shared = L.Dense(6, activation="relu", bias_initializer=b, name="shared_dense")
    relu = L.ReLU(name="relu")
    head = L.Dense(3, bias_initializer=b, name="head")

    def network(features):
        a = shared(features)
        c = shared(relu(features * -1.0))  # the shared layer's second call site
        return head(L.Concatenate()([a, c]))

    inp = keras.Input((8, 8, 2))
    flat = keras.Model(inp, network(flatten(pool(conv(inp)))), name="flat")

    inner_in = keras.Input((8, 8, 2))
    backbone = keras.Model(inner_in, pool(conv(inner_in)), name="backbone")  # nested Functional
    top = keras.Sequential([keras.Input((4, 4, 4)), flatten], name="top")    # nested Sequential
    outer_in = keras.Input((8, 8, 2))
    nested = keras.Model(outer_in, network(top(backbone(outer_in))), name="nested")
    return flat, nested


def test_nested_models_are_rewritten_recursively_and_shared_layers_stay_shared():
    flat, nested = nested_and_flat()
    x = RNG.uniform(-1, 1, (3, 8, 8, 2)).astype(np.float32)
    clone = guided_clone(nested)
    assert set(surgery_report(clone).changed) == {"backbone/conv", "backbone/pool", "shared_dense", "relu"}
    np.testing.assert_array_equal(clone(x).numpy(), nested(x).numpy())
    assert len(clone.weights) == len(nested.weights)  # the shared Dense was cloned once
    # recursion reached the inner layers: the nested clone's gradient is the flat clone's
    guided_nested, guided_flat = grads(clone, x, [0, 1, 2]), grads(guided_clone(flat), x, [0, 1, 2])
    np.testing.assert_allclose(guided_nested, guided_flat, rtol=1e-6, atol=1e-7)
    assert np.abs(guided_nested - grads(nested, x, [0, 1, 2])).max() > 1e-3


def test_a_sequential_model_is_cloned():
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu", bias_initializer="ones"),
                              keras.Sequential([L.Dense(4, activation="relu")], name="inner"), L.Dense(2)])
    clone = guided_clone(model)
    assert isinstance(clone, keras.Sequential) and len(surgery_report(clone).changed) == 2
    x = RNG.normal(size=(3, 6)).astype(np.float32)
    np.testing.assert_array_equal(clone(x).numpy(), model(x).numpy())


# -- the original model is never touched ---------------------------------------------------------

def test_cloning_leaves_the_original_model_and_its_gradients_unchanged():
    flat, nested = nested_and_flat()
    softmax_model = small_cnn(softmax=True, size=8)
    x8 = RNG.uniform(-1, 1, (3, 8, 8, 2)).astype(np.float32)
    x3 = RNG.uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    models = [(nested, x8), (softmax_model, x3)]
    before = []
    for model, x in models:
        before.append(dict(
            grads=grads(model, x, [0, 1, 2]), outputs=model(x).numpy(), config=model.get_config(),
            weights=[w.numpy().copy() for w in model.weights],
            nodes=[len(layer._inbound_nodes) for layer in model._flatten_layers()],
            activations=[getattr(layer, "activation", None) for layer in model._flatten_layers()],
        ))
        clear_cache(model)
        guided_clone(model)
        logits_model(model, missing="ignore")
    for (model, x), old in zip(models, before):
        np.testing.assert_array_equal(grads(model, x, [0, 1, 2]), old["grads"])
        np.testing.assert_array_equal(model(x).numpy(), old["outputs"])
        assert model.get_config() == old["config"]
        for w, v in zip(model.weights, old["weights"]):
            np.testing.assert_array_equal(w.numpy(), v)
        assert [len(layer._inbound_nodes) for layer in model._flatten_layers()] == old["nodes"]
        assert [getattr(layer, "activation", None) for layer in model._flatten_layers()] == old["activations"]


# -- logits_model ----------------------------------------------------------------------------------

def head_variants():
    keras.utils.set_random_seed(7)
    inp = keras.Input((5,))
    h = L.Dense(6, activation="relu", bias_initializer="ones", name="hidden")(inp)
    z = L.Dense(4, bias_initializer="ones", name="z")(h)
    yield "fused", keras.Model(inp, L.Dense(4, activation="softmax", name="z_softmax")(h)), "z_softmax"
    yield "softmax_layer", keras.Model(inp, L.Softmax(name="probs")(z)), "probs"
    yield "activation_layer", keras.Model(inp, L.Activation("softmax", name="probs")(z)), "probs"
    head = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="softmax", name="cls")], name="head")
    yield "nested_head", keras.Model(inp, head(h)), "head/cls"
    op_model = keras.Model(inp, keras.ops.softmax(z))
    yield "keras_ops_softmax", op_model, op_model.operations[-1].name


@pytest.mark.parametrize("variant", ["fused", "softmax_layer", "activation_layer", "nested_head", "keras_ops_softmax"])
def test_logits_model_removes_the_final_softmax_whatever_its_spelling(variant):
    kind, model, head = next((k, m, h) for k, m, h in head_variants() if k == variant)
    logits = logits_model(model)
    assert surgery_report(logits).changed == (head,)
    assert [layer.name for layer in logits.layers] == [layer.name for layer in model.layers]
    x = RNG.normal(size=(3, 5)).astype(np.float32)
    z = logits(x).numpy().astype(np.float64)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(p, model(x).numpy(), rtol=1e-6)
    assert np.abs(z.sum(axis=1) - 1).min() > 1e-3


def test_logits_model_leaves_a_middle_softmax_alone_and_returns_a_model_without_head_unchanged():
    inp = keras.Input((5,))
    h = L.Softmax(name="attention_like")(L.Dense(5, name="a")(inp))
    model = keras.Model(inp, L.Dense(3, name="out")(h))
    with pytest.warns(SurgeryWarning, match="no final softmax"):
        assert logits_model(model) is model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert logits_model(model, missing="ignore") is model
    with pytest.raises(InvalidInputError, match=r"no final softmax.*Received: missing='raise'"):
        logits_model(model, missing="raise")


# -- logits models of every softmax form: softmax of the logits, clone, save, load, guided ----------

W1 = np.array([[0.6, -0.4, 0.3, 0.8], [-0.5, 0.7, 0.2, -0.3], [0.4, 0.1, -0.6, 0.5],
               [-0.2, 0.9, 0.5, -0.7], [0.3, -0.8, 0.4, 0.2]], np.float32)
B1 = np.array([0.1, -0.2, 0.3, -0.1], np.float32)
W2 = np.array([[0.7, -0.5, 0.2], [-0.6, 0.4, 0.9], [0.3, 0.8, -0.4], [-0.2, -0.3, 0.6]], np.float32)
B2 = np.array([0.25, -0.15, 0.05], np.float32)


def _lambda_softmax(t):
    return keras.ops.softmax(t)


def softmax_headed(form):
    """``x -> Dense(4, relu) -> Dense(3) -> softmax`` with the softmax spelt as ``form``; the
    weights are W1, B1, W2, B2 whatever the spelling, so one analytic answer fits every form."""
    hidden = L.Dense(4, activation="relu", name="hidden")
    fused = form.endswith("fused")
    z = L.Dense(3, activation="softmax" if fused else None, name="z")
    head = {
        "softmax_layer": lambda: L.Softmax(name="probs"),
        "activation_layer": lambda: L.Activation("softmax", name="probs"),
        "lambda_of_ops_softmax": lambda: L.Lambda(keras.ops.softmax, name="probs"),
        "lambda_calling_softmax": lambda: L.Lambda(lambda t: _lambda_softmax(t), name="probs"),
    }
    kind, _, spelling = form.partition(":")
    if kind == "sequential":
        layers = [keras.Input((5,)), hidden, z] + ([] if fused else [head[spelling]()])
        model = keras.Sequential(layers, name="seq")
    elif kind == "functional":
        inp = keras.Input((5,))
        logits = z(hidden(inp))
        out = logits if fused else (keras.ops.softmax(logits) if spelling == "ops_softmax" else head[spelling]()(logits))
        model = keras.Model(inp, out, name="fun")
    elif kind == "nested_sequential":  # Functional outer, the softmax inside a Sequential at its end
        inner = keras.Sequential([keras.Input((4,)), z] + ([] if fused else [head[spelling]()]), name="inner")
        inp = keras.Input((5,))
        model = keras.Model(inp, inner(hidden(inp)), name="outer")
    elif kind == "nested_functional":  # Sequential outer, the softmax inside a Functional at its end
        inner_in = keras.Input((4,))
        inner_out = z(inner_in)
        inner = keras.Model(inner_in, inner_out if fused else head[spelling]()(inner_out), name="inner")
        model = keras.Sequential([keras.Input((5,)), hidden, inner], name="outer")
    hidden.set_weights([W1, B1])
    z.set_weights([W2, B2])
    return model


SOFTMAX_FORMS = {  # form -> path of the layer whose softmax is removed
    "sequential:fused": "z",
    "sequential:softmax_layer": "probs",
    "sequential:activation_layer": "probs",
    "sequential:lambda_of_ops_softmax": "probs",
    "functional:fused": "z",
    "functional:softmax_layer": "probs",
    "functional:activation_layer": "probs",
    "functional:ops_softmax": None,  # the op node's own name
    "functional:lambda_calling_softmax": "probs",
    "nested_sequential:softmax_layer": "inner/probs",
    "nested_sequential:activation_layer": "inner/probs",
    "nested_functional:softmax_layer": "inner/probs",
    "nested_functional:fused": "inner/z",
}


def analytic_logits(x):
    return np.maximum(x @ W1.astype(np.float64) + B1, 0) @ W2.astype(np.float64) + B2


def analytic_guided_gradient(x, c):
    """Guided backprop of z_c: the ReLU passes relu(W2[:, c]) where its input is positive."""
    pre = x @ W1.astype(np.float64) + B1
    return ((pre > 0) * np.maximum(W2[:, c].astype(np.float64), 0)) @ W1.T.astype(np.float64)


def assert_softmax_of(logits, probabilities):
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(axis=1, keepdims=True), probabilities, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("form", sorted(SOFTMAX_FORMS))
def test_logits_model_of_every_softmax_form_clones_saves_loads_and_explains(form, tmp_path):
    from tfattr.methods.guided import GuidedBackprop

    model = softmax_headed(form)
    x = RNG.normal(size=(6, 5)).astype(np.float32)
    probabilities = model(x).numpy()
    layers_before = list(model._flatten_layers())
    types_before = [type(layer) for layer in layers_before]

    logits = logits_model(model)
    head = SOFTMAX_FORMS[form] or model.operations[-1].name
    assert surgery_report(logits).changed == (head,)
    z = logits(x).numpy()
    np.testing.assert_allclose(z, analytic_logits(x), rtol=1e-5, atol=1e-5)
    assert_softmax_of(z, probabilities)
    # the original model is untouched: the same layer objects of the same types, the same outputs
    assert list(model._flatten_layers()) == layers_before
    assert [type(layer) for layer in model._flatten_layers()] == types_before
    np.testing.assert_array_equal(model(x).numpy(), probabilities)

    copy = keras.models.clone_model(logits)  # through get_config/from_config
    copy.set_weights(logits.get_weights())
    np.testing.assert_array_equal(copy(x).numpy(), z)
    np.testing.assert_array_equal(guided_clone(logits)(x).numpy(), z)
    rebuilt = keras.models.model_from_json(logits.to_json())
    rebuilt.set_weights(logits.get_weights())
    np.testing.assert_array_equal(rebuilt(x).numpy(), z)
    path = str(tmp_path / "logits.keras")
    logits.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path)(x).numpy(), z)

    targets = np.arange(6) % 3
    guided = GuidedBackprop(logits).attribute(x, target=targets).attributions
    expected = np.stack([analytic_guided_gradient(x[i], targets[i]) for i in range(6)])
    np.testing.assert_allclose(guided, expected, rtol=1e-5, atol=1e-6)


def test_a_lambda_doing_more_than_a_softmax_is_not_a_softmax_head():
    inp = keras.Input((5,))
    z = L.Dense(3, name="z")(inp)
    model = keras.Model(inp, L.Lambda(lambda t: keras.ops.softmax(2.0 * t), name="tempered")(z))
    with pytest.warns(SurgeryWarning, match="no final softmax"):
        assert logits_model(model) is model


# -- what cannot be swapped is reported ----------------------------------------------------------

class HiddenReLU(keras.layers.Layer):
    """A custom layer calling tf.nn.relu inside call(): cannot be swapped."""

    def call(self, inputs):
        return tf.nn.relu(inputs)


def test_a_relu_inside_a_custom_layer_is_reported_by_name_and_the_rest_is_still_swapped():
    inp = keras.Input((4,))
    h = L.Dense(4, activation="relu", bias_initializer="ones", name="ok_dense")(inp)
    out = L.Dense(2, name="out")(HiddenReLU(name="my_hidden_relu")(h))
    model = keras.Model(inp, out)
    with pytest.warns(SurgeryWarning, match=r"my_hidden_relu \(Relu\)"):
        clone = guided_clone(model)
    assert surgery_report(clone).changed == ("ok_dense",)
    assert surgery_report(clone).left_alone == (f"{model.name}/my_hidden_relu (Relu)",)
    with pytest.raises(InvalidInputError, match="my_hidden_relu"):
        guided_clone(model, on_unswappable="raise")


class HiddenOp(keras.layers.Layer):
    """Takes a function in ``__init__`` and has no ``get_config``: cannot be cloned."""

    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, inputs):
        return self.fn(inputs)


def hidden_layer(fn):
    return type("Hidden", (keras.layers.Layer,), {"call": lambda self, inputs: fn(inputs)})


@pytest.mark.parametrize("fn,op_type", [
    (tf.nn.relu6, "Relu6"),
    (lambda v: tf.nn.leaky_relu(v, 0.1), "LeakyRelu"),
    (lambda v: tf.nn.max_pool2d(v, 2, 2, "VALID"), "MaxPool"),
    (tf.function(lambda v: tf.nn.relu(v)), "Relu"),  # even inside a tf.function
])
def test_every_kind_of_hidden_relu_or_maxpool_is_reported(fn, op_type):
    inp = keras.Input((4, 4, 2))
    model = keras.Model(inp, L.Flatten()(hidden_layer(fn)(name="custom_op")(inp)), name="m")
    with pytest.warns(SurgeryWarning) as caught:
        left_alone = surgery_report(guided_clone(model)).left_alone
    assert len(left_alone) == 1 and left_alone[0].startswith("m/custom_op") and left_alone[0].endswith(f"({op_type})")
    assert left_alone[0] in str(caught[0].message)


def test_a_layer_that_cannot_be_cloned_is_named_in_the_error():
    inp = keras.Input((4,))
    model = keras.Model(inp, HiddenOp(tf.nn.relu, name="uncloneable")(inp))
    with pytest.raises(InvalidTypeError, match=r"could not clone layer 'uncloneable'.*Received: layer='uncloneable'"):
        guided_clone(model)


def test_a_subclassed_model_is_refused_with_a_clear_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2, activation="relu")

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 3), np.float32))
    with pytest.raises(InvalidTypeError, match=r"Functional or Sequential.*Received: type\(model\)='Net'"):
        guided_clone(net)


# -- caching, weights snapshot and synced clones -------------------------------------------------

def test_clones_are_cached_per_model_and_released_with_it():
    model = small_cnn(size=8)
    clone = guided_clone(model)
    assert guided_clone(model) is clone
    assert logits_model(model, missing="ignore") is model
    assert guided_clone(small_cnn(size=8)) is not clone
    ref, clone_ref = weakref.ref(model), weakref.ref(clone)
    del model, clone
    gc.collect()  # frees the model, whose cache entry then drops the clone
    gc.collect()  # frees the clone (Keras models are reference cycles)
    assert ref() is None and clone_ref() is None  # the weak cache keeps neither alive


def test_a_clone_is_a_weight_snapshot_and_synced_follows_the_original():
    model = small_cnn(size=8)
    x = RNG.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    clone = guided_clone(model)
    live = synced(clone)
    before = model(x).numpy()
    model.set_weights([w * 0.5 for w in model.get_weights()])
    after = model(x).numpy()
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_array_equal(clone(x).numpy(), before)
    np.testing.assert_array_equal(live(x).numpy(), after)
    kernel = model.layers[-1].kernel  # an in-place update, as an optimizer step does
    kernel.assign_add(keras.ops.ones_like(kernel))
    np.testing.assert_array_equal(clone(x).numpy(), before)
    np.testing.assert_allclose(live(x).numpy(), model(x).numpy(), rtol=1e-6)
    fresh = guided_clone(keras.models.clone_model(model))
    fresh.set_weights(model.get_weights())
    np.testing.assert_allclose(grads(live, x, [0, 1]), grads(fresh, x, [0, 1]), rtol=1e-6)


def test_a_guided_clone_survives_serialisation_and_is_not_guided_twice():
    model = zoo_2d()
    clone = guided_clone(model)
    copy = keras.models.clone_model(clone)  # through get_config/from_config
    copy.set_weights(clone.get_weights())
    x = RNG.uniform(-1, 1, (2, 12, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(grads(copy, x, [0, 1]), grads(clone, x, [0, 1]))
    again = guided_clone(clone)
    assert set(surgery_report(again).changed) == GUIDED_IN_ZOO
    assert not isinstance(again.get_layer("conv_relu").activation.activation, GuidedActivation)
    np.testing.assert_array_equal(grads(again, x, [0, 1]), grads(clone, x, [0, 1]))


# -- dtypes ------------------------------------------------------------------------------------------

def integer_conv_model(dtype):
    """The 4×4 conv → ReLU → dense network of test_guided.py, in ``dtype``: every value in it is an
    integer below 256, exact in float16 and bfloat16, so the guided map is exact in every dtype."""
    inp = keras.Input((4, 4, 1), dtype="float32" if dtype.startswith("mixed") else dtype)
    conv = L.Conv2D(2, 3, name="conv", dtype=dtype)
    dense = L.Dense(1, use_bias=False, name="dense", dtype=dtype)
    model = keras.Model(inp, dense(L.Flatten(dtype=dtype)(L.ReLU(dtype=dtype)(conv(inp)))))
    conv.set_weights([np.ones((3, 3, 1, 2)), np.array([-50.0, -75.0])])
    chw = np.array([1, 1, 1, 1, 1, -1, -1, -1], np.float64).reshape(2, 2, 2)
    dense.set_weights([chw.transpose(1, 2, 0).reshape(8, 1)])
    return model


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64", "mixed_float16", "mixed_bfloat16"])
def test_guided_gradients_keep_the_dtype_of_float16_bfloat16_float64_and_mixed_models(dtype):
    model = integer_conv_model(dtype)
    clone = guided_clone(model)
    compute = keras.DTypePolicy(dtype).compute_dtype  # float16 inside a mixed_float16 model
    x = tf.constant(np.arange(16).reshape(1, 4, 4, 1), model.inputs[0].dtype)
    try:
        expected = np.asarray(model(x), np.float64)
    except tf.errors.OpError as error:  # a CPU whose kernels lack this dtype's convolution (oneDNN on
        with pytest.raises(type(error)):  # AVX2, no AVX-512 FP16/BF16): the clone fails alike, adds nothing
            clone(x)
        return
    conv, relu, flatten, dense = clone.layers[1:]
    assert isinstance(relu, GuidedReLU)
    with tf.GradientTape() as tape:
        hidden = conv(x)
        tape.watch(hidden)
        score = tf.reduce_sum(dense(flatten(relu(hidden))))
    g_hidden = tape.gradient(score, hidden)
    assert g_hidden.dtype == compute  # what came out of the guided ReLU's backward
    np.testing.assert_array_equal(np.asarray(g_hidden, np.float64)[0, :, :, 1], 0.0)  # −1s cut, +1 masked
    _, g = input_gradients(clone, x, [0])
    assert g.dtype == tf.as_dtype(model.inputs[0].dtype).as_numpy_dtype
    np.testing.assert_array_equal(np.asarray(g, np.float64)[0, :, :, 0],
                                  [[0, 1, 1, 1], [1, 3, 3, 2], [1, 3, 3, 2], [1, 2, 2, 1]])
    np.testing.assert_array_equal(np.asarray(clone(x), np.float64), expected)


def test_float64_model_guided_gradients_match_the_float32_ones():
    reference = small_cnn(size=8, seed=2)
    model = small_cnn(size=8, seed=2, dtype="float64")
    model.set_weights(reference.get_weights())
    x = np.random.default_rng(10).uniform(0, 1, (2, 8, 8, 3))
    g = input_gradients(guided_clone(model), x, [0, 1])[1]
    assert g.dtype == np.float64
    expected = grads(guided_clone(reference), x, [0, 1])
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("form", ["functional:softmax_layer", "nested_sequential:softmax_layer", "sequential:fused"])
def test_logits_model_follows_the_models_current_weights_after_training_or_assigning(form):
    """``logits_model(m)`` after ``fit`` or ``set_weights`` is the current network, not the cached
    clone's old weights: ``softmax(logits_model(m)(x)) == m(x)``, and IG of it is the new network's."""
    import tfattr

    model = softmax_headed(form)
    x = RNG.normal(size=(4, 5)).astype(np.float32)
    assert_softmax_of(logits_model(model)(x), model(x).numpy())  # the first call caches the clone
    ig_before = tfattr.IntegratedGradients(logits_model(model), steps=8).attribute(x, target=1).attributions
    model.set_weights([w * 1.5 - 0.2 for w in model.get_weights()])  # assigned
    assert_softmax_of(logits_model(model)(x), model(x).numpy())
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    model.fit(x, np.array([0, 1, 2, 0]), epochs=2, verbose=0)  # trained in place (optimizer updates)
    probabilities = model(x).numpy()
    assert_softmax_of(logits_model(model)(x), probabilities)
    ig_after = tfattr.IntegratedGradients(logits_model(model), steps=8).attribute(x, target=1)
    fresh = keras.models.clone_model(logits_model(model))
    fresh.set_weights(model.get_weights())
    reference = tfattr.IntegratedGradients(fresh, steps=8).attribute(x, target=1)
    np.testing.assert_allclose(ig_after.attributions, reference.attributions, rtol=1e-5, atol=1e-6)
    assert np.abs(ig_after.attributions - ig_before).max() > 1e-3  # the network did change
    guided = guided_clone(model)  # the guided clone's cache follows too
    np.testing.assert_allclose(guided(x).numpy(), probabilities, rtol=1e-6, atol=1e-7)


def test_cached_clones_are_rebuilt_when_a_sequential_model_gains_or_loses_layers():
    """``pop``/``add`` on a Sequential model after its clones were cached: the cache handed out the
    clone of the former layers (the old head's scores, silently, or a raw TF error for a new class)."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    x = RNG.normal(size=(4, 5)).astype(np.float32)
    logits_model(model), guided_clone(model)  # cached
    model.pop()
    model.add(keras.layers.Dense(3, activation="softmax", name="new_head", kernel_initializer="ones"))
    probabilities = model(x).numpy()
    assert_softmax_of(logits_model(model)(x), probabilities)
    np.testing.assert_allclose(guided_clone(model)(x).numpy(), probabilities, rtol=1e-6, atol=1e-7)
    model.pop()
    model.add(keras.layers.Dense(6, name="wide_head"))  # no softmax now, six classes
    with pytest.warns(SurgeryWarning, match="no final softmax"):
        assert logits_model(model) is model
    np.testing.assert_allclose(guided_clone(model)(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-7)


def test_a_method_made_before_a_sequential_add_or_pop_is_refused_not_explained_stale():
    """A method object keeps its model's input spec, engines and clones: after ``pop``/``add`` it
    would explain the former layers (the old head's scores), so it refuses by name instead."""
    import tfattr

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(2, 6)).astype("float32")
    methods = [tfattr.Gradient(model), tfattr.IntegratedGradients(model, steps=4), tfattr.GuidedBackprop(model)]
    for method in methods:
        method.attribute(x, target=0)
    model.pop()
    model.add(keras.layers.Dense(4, name="new_head"))
    for method in methods:
        with pytest.raises(InvalidInputError, match=r"layers changed.*make the method again.*Received: model="):
            method.attribute(x, target=0)
    fresh = tfattr.IntegratedGradients(model, steps=4).attribute(x, target=3)
    np.testing.assert_allclose(fresh.scores, keras.ops.convert_to_numpy(model(x))[:, 3], rtol=1e-5, atol=1e-6)
