"""LayerIntegratedGradients: the path in a layer's space; text models through their embedding."""

import keras
import numpy as np
import pytest
from conftest import assert_float32_close

import tfattr
from tfattr.errors import InvalidInputError, InvalidTypeError

VOCAB, LENGTH, WIDTH = 12, 8, 4
PAD, GOOD, BAD = 0, 1, 2  # the cue words: one per sentence sets its label (GOOD → 1, BAD → 0)


def sentences(n, seed=0):
    """Templated sentences: 5–8 filler words with one cue word somewhere, padded with PAD."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, LENGTH), "int32")
    labels, cues = rng.integers(0, 2, n), np.zeros(n, int)
    for i in range(n):
        length = rng.integers(5, LENGTH + 1)
        ids[i, :length] = rng.integers(3, VOCAB, length)
        cues[i] = rng.integers(0, length)
        ids[i, cues[i]] = GOOD if labels[i] else BAD
    return ids, labels, cues


@pytest.fixture(scope="module")
def text_model():
    """Embedding (padding masked) → masked mean → tanh → logits, with set weights: the cue words'
    embeddings point along the one direction the classifier reads, the fillers mostly elsewhere."""
    rng = np.random.default_rng(1)
    inputs = keras.Input((LENGTH,), dtype="int32", name="ids")
    embedded = keras.layers.Embedding(VOCAB, WIDTH, mask_zero=True, name="embedding")(inputs)
    pooled = keras.layers.GlobalAveragePooling1D()(embedded)
    hidden = keras.layers.Dense(8, activation="tanh", name="hidden")(pooled)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden))
    table = np.zeros((VOCAB, WIDTH), "float32")
    table[3:] = rng.normal(0, 0.5, (VOCAB - 3, WIDTH))
    table[3:, 0] = rng.normal(0, 0.05, VOCAB - 3)
    table[GOOD, 0], table[BAD, 0] = 3.0, -3.0
    model.get_layer("embedding").set_weights([table])
    kernel = rng.normal(0, 0.3, (WIDTH, 8)).astype("float32")
    kernel[0] = 1.0
    model.get_layer("hidden").set_weights([kernel, np.zeros(8, "float32")])
    out = np.zeros((8, 2), "float32")
    out[:, 1], out[:, 0] = 0.5, -0.5
    model.get_layer("logits").set_weights([out, np.zeros(2, "float32")])
    return model


@pytest.fixture(scope="module")
def mlp():
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(10, activation="tanh", name="first")(inputs)
    h = keras.layers.Dense(10, activation="tanh", name="second")(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def test_text_ig_puts_its_mass_on_the_cue_words(text_model):
    ids, labels, cues = sentences(12)
    assert np.all(np.argmax(np.asarray(text_model(ids)), axis=1) == labels)  # the model reads the cue
    lig = tfattr.LayerIntegratedGradients(text_model, layer="embedding", steps=32, rule="gauss_legendre")
    expl = lig.attribute(ids, target=labels, input_baseline=PAD, reduce="sum")
    tokens = expl.attributions
    assert tokens.shape == (12, LENGTH)
    assert np.all(np.argmax(np.abs(tokens), axis=1) == cues)
    share = np.abs(tokens[np.arange(12), cues]) / np.abs(tokens).sum(axis=1)
    assert np.all(share > 0.6), share
    assert np.all(tokens[ids == PAD] == 0)  # padding positions are masked out: no path, no gradient
    assert np.all(tokens[np.arange(12), cues] > 0)  # the cue speaks for the class it sets
    gap = expl.scores - expl.baseline_scores
    assert np.all(np.abs(expl.delta) < 1e-4 * np.abs(gap))  # completeness in the embedding space


def test_token_scores_signed_sum_and_norm(text_model):
    ids, labels, _ = sentences(4, seed=2)
    lig = tfattr.LayerIntegratedGradients(text_model, layer="embedding", steps=16)
    full = lig.attribute(ids, target=labels).attributions
    assert full.shape == (4, LENGTH, WIDTH)
    summed = lig.attribute(ids, target=labels, reduce="sum").attributions
    norm = lig.attribute(ids, target=labels, reduce="norm").attributions
    np.testing.assert_allclose(summed, full.sum(axis=-1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(norm, np.sqrt((full.astype(np.float64) ** 2).sum(axis=-1)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tfattr.reduce_last_axis(full, "norm"), norm, rtol=1e-6)
    assert np.all(norm >= np.abs(summed) / np.sqrt(WIDTH) - 1e-7)


def test_layer_ig_completeness_against_the_baseline_inputs(mlp):
    rng = np.random.default_rng(0)
    x, z = rng.normal(size=(4, 6)).astype("float32"), rng.normal(size=(4, 6)).astype("float32")
    lig = tfattr.LayerIntegratedGradients(mlp, layer="second", steps=64, rule="gauss_legendre")
    expl = lig.attribute(x, target=0, input_baseline=z)
    assert expl.attributions.shape == (4, 10)
    np.testing.assert_allclose(expl.baseline_scores, np.asarray(mlp(z))[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(expl.scores, np.asarray(mlp(x))[:, 0], rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(expl.delta) < 1e-4 * np.abs(expl.scores - expl.baseline_scores))


def test_layer_ig_at_the_first_layers_input_is_input_ig(mlp):
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    plain = tfattr.IntegratedGradients(mlp, steps=20).attribute(x, target=1)
    at_input = tfattr.LayerIntegratedGradients(mlp, layer="first", attribute_to="input", steps=20)
    assert_float32_close(at_input.attribute(x, target=1).attributions, plain.attributions)


def test_the_layer_is_found_as_for_gradcam(mlp):
    x = np.random.default_rng(2).normal(size=(2, 6)).astype("float32")
    results = [tfattr.LayerIntegratedGradients(mlp, layer=layer, steps=8).attribute(x, target=2).attributions
               for layer in ("second", 2, mlp.get_layer("second"))]
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_other_inputs_stay_at_the_input(tmp_path):
    keras.utils.set_random_seed(5)
    a, b = keras.Input((5,), name="table"), keras.Input((4, 3), name="series")
    branch = keras.layers.Dense(6, activation="tanh", name="branch")(a)
    h = keras.layers.Concatenate()([branch, keras.layers.GRU(5)(b)])
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Dense(6, activation="tanh")(h)))
    rng = np.random.default_rng(3)
    x = [rng.normal(size=(3, 5)).astype("float32"), rng.normal(size=(3, 4, 3)).astype("float32")]
    expl = tfattr.LayerIntegratedGradients(model, layer="branch", steps=64, rule="gauss_legendre").attribute(
        x, target=1, input_baseline=0.0)
    assert expl.attributions.shape == (3, 6)
    # the start: the branch at a zero table, the series that of x
    np.testing.assert_allclose(expl.baseline_scores, np.asarray(model([np.zeros_like(x[0]), x[1]]))[:, 1],
                               rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(expl.delta) < 1e-4 * np.abs(expl.scores - expl.baseline_scores))


def test_layer_errors_name_the_argument(text_model, mlp):
    ids, labels, _ = sentences(2)
    with pytest.raises(InvalidInputError, match=r"int32 input: a path needs float values.*Received: layer='embedding'"):
        tfattr.LayerIntegratedGradients(text_model, layer="embedding", attribute_to="input").attribute(ids, target=0)
    with pytest.raises(InvalidInputError, match=r"Received: attribute_to='middle'"):
        tfattr.LayerIntegratedGradients(mlp, layer="first", attribute_to="middle")
    with pytest.raises(InvalidInputError, match=r"Received: reduce='mean'"):
        tfattr.LayerIntegratedGradients(mlp, layer="first", reduce="mean")
    with pytest.raises(InvalidInputError, match=r"Received: layer='nope'"):
        tfattr.LayerIntegratedGradients(mlp, layer="nope")
    with pytest.raises(InvalidInputError, match=r"does not fit model input.*Received: input_baseline.shape=\(1, 5\)"):
        tfattr.LayerIntegratedGradients(mlp, layer="first").attribute(np.ones((2, 6), "float32"), target=0,
                                                                      input_baseline=np.ones((1, 5), "float32"))
    with pytest.raises(InvalidTypeError, match=r"must hold numbers"):
        tfattr.LayerIntegratedGradients(text_model, layer="embedding").attribute(np.array([["a"] * LENGTH]))
    for method in (tfattr.LayerIntegratedGradients(mlp, layer="first"), tfattr.LayerConductance(mlp, layer="first")):
        with pytest.raises(InvalidTypeError, match=rf"attributes to a layer.*Received: method='{type(method).__name__}'"):
            tfattr.NoiseTunnel(method)


def test_layer_conductance_through_a_linear_layer_sums_to_input_ig():
    # y = W x + b: each interval's y_m − y_{m−1} = W (x − z) / M, so Σ_j Cond_j = Σ_i IG_i (right Riemann, M steps)
    keras.utils.set_random_seed(6)
    inputs = keras.Input((6,))
    projected = keras.layers.Dense(5, name="proj")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Activation("tanh")(projected)))
    x = np.random.default_rng(4).normal(size=(3, 6)).astype("float32")
    conductance = tfattr.LayerConductance(model, layer="proj", steps=24).attribute(x, target=1)
    assert conductance.attributions.shape == (3, 5)
    ig = tfattr.IntegratedGradients(model, steps=24).attribute(x, target=1)
    np.testing.assert_allclose(conductance.attributions.sum(axis=1), ig.attributions.sum(axis=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(conductance.delta, ig.delta, atol=1e-5)


def test_layer_conductance_completeness_improves_with_steps(mlp):
    x = np.random.default_rng(5).normal(size=(3, 6)).astype("float32")
    # at "first" the model above is nonlinear (at "second" only a Dense is left: the sum telescopes exactly)
    coarse = tfattr.LayerConductance(mlp, layer="first", steps=8).attribute(x, target=0)
    fine = tfattr.LayerConductance(mlp, layer="first", steps=256).attribute(x, target=0)
    gap = np.abs(fine.scores - fine.baseline_scores)
    assert np.all(np.abs(fine.delta) < 0.01 * gap)
    assert np.all(np.abs(fine.delta) < np.abs(coarse.delta))


def test_two_layer_ig_objects_on_one_layer_in_two_threads_neither_lose_nor_mix_their_patches():
    import threading

    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="tanh", name="hid", bias_initializer="ones")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(2, 4)).astype("float32") * scale for scale in (1.0, 5.0)]
    # separate objects patch the same layer from two threads (each traces and captures on its own)
    methods = [tfattr.LayerIntegratedGradients(model, layer="hid", steps=16),
               tfattr.LayerIntegratedGradients(model, layer="hid", steps=8)]
    reference = [np.asarray(m.attribute(x, target=0)) for m, x in zip(methods, xs)]
    wrong, errors = [0, 0], []

    def run(i):
        for _ in range(15):
            fresh = tfattr.LayerIntegratedGradients(model, layer="hid", steps=methods[i].config["steps"])
            try:
                if not np.allclose(np.asarray(fresh.attribute(xs[i], target=0)), reference[i], atol=1e-5):
                    wrong[i] += 1
            except Exception as error:  # noqa: BLE001 - every failure counts
                errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and wrong == [0, 0]
    assert "call" not in vars(model.get_layer("hid"))  # the layer's own call is back


@keras.saving.register_keras_serializable(package="tests")
class MultiRelu(keras.layers.Layer):
    """captum's ``MultiRelu``: one layer, two output tensors ``(relu(a), relu(b))``."""

    def call(self, inputs):
        return keras.ops.relu(inputs[0]), keras.ops.relu(inputs[1])


def test_a_layer_with_two_outputs_is_refused_by_the_layer_path_methods():
    # conductance of the first output alone missed half the flow (delta −390 on captum's model) silently
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    first, second = MultiRelu(name="multi")([a, b])
    out = keras.layers.Dense(2, name="head")(keras.layers.Concatenate()([first, second]))
    model = keras.Model([a, b], out)
    x = [np.ones((2, 3), "float32"), 2 * np.ones((2, 3), "float32")]
    for method in (tfattr.LayerConductance(model, layer="multi", steps=4),
                   tfattr.LayerConductance(model, layer="multi", steps=4, rule="left"),
                   tfattr.LayerIntegratedGradients(model, layer="multi", steps=4)):
        with pytest.raises(InvalidInputError, match=r"'multi' has several outputs.*Received: layer='multi'"):
            method.attribute(x, target=0)


def _square_model():
    """``y = W x`` at layer "proj", ``F(y) = Σ_j y_j²``: ``∂F/∂y_j = 2 y_j`` on the path ``y(α) = α W x``."""
    inputs = keras.Input((3,))
    projected = keras.layers.Dense(2, use_bias=False, name="proj")(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(lambda y: keras.ops.stack(
        [keras.ops.sum(y * y, axis=1), keras.ops.sum(y, axis=1)], axis=1))(projected))
    model.get_layer("proj").set_weights([np.array([[1.0, -0.5], [2.0, 0.25], [-1.0, 1.5]], "float32")])
    return model


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_layer_conductance_right_and_left_sums_by_hand_on_a_square(steps):
    # with zero baseline y_m = (m/M) y: right Σ_m 2 y (m/M) · y/M = y² (M+1)/M, left Σ_m 2 y ((m−1)/M) · y/M
    # = y² (M−1)/M; the integral is y². Both rules pass M + 1 gradients.
    model = _square_model()
    x = np.array([[1.0, 2.0, 0.5], [-1.0, 0.5, 2.0]], "float32")
    y = x.astype(np.float64) @ model.get_layer("proj").get_weights()[0].astype(np.float64)
    right = tfattr.LayerConductance(model, layer="proj", steps=steps).attribute(x, target=0)
    left = tfattr.LayerConductance(model, layer="proj", steps=steps, rule="left").attribute(x, target=0)
    np.testing.assert_allclose(right.attributions, y**2 * (steps + 1) / steps, rtol=1e-5)
    np.testing.assert_allclose(left.attributions, y**2 * (steps - 1) / steps, rtol=1e-5, atol=1e-6)
    assert right.gradients == left.gradients == 2 * (steps + 1)
    np.testing.assert_allclose(right.delta, (y**2).sum(axis=1) / steps, rtol=1e-5)  # Σ − (f(x) − f(0))
    np.testing.assert_allclose(left.delta, -(y**2).sum(axis=1) / steps, rtol=1e-5)
    assert "rule=left" in left.method and "rule" not in right.method
    former = tfattr.LayerConductance(model, layer="proj", steps=steps, rule="riemann_right").attribute(x, target=0)
    np.testing.assert_array_equal(former.attributions, right.attributions)  # the former spelling still works


def _numpy_conductance(weights, x, c, steps, rule):
    """A NumPy Riemann–Stieltjes sum at layer "first" of the tanh MLP (zero baseline), float64."""
    (w1, b1), (w2, b2), (w3, b3) = [(w.astype(np.float64), b.astype(np.float64)) for w, b in weights]
    total = np.zeros((len(x), w1.shape[1]))
    for i, xi in enumerate(x.astype(np.float64)):
        alphas = np.linspace(0.0, 1.0, steps + 1)
        h = np.tanh((alphas[:, None] * xi) @ w1 + b1)  # the layer at the nodes x_m
        s = np.tanh(h @ w2 + b2)
        grad = ((1 - s**2) * w3[:, c]) @ w2.T  # ∂F/∂h at each node
        at = grad[1:] if rule == "right" else grad[:-1]
        total[i] = (at * np.diff(h, axis=0)).sum(axis=0)
    return total


def test_layer_conductance_rules_match_a_numpy_stieltjes_sum_and_converge_together(mlp):
    x = np.random.default_rng(7).normal(size=(3, 6)).astype("float32")
    dense = [layer.get_weights() for layer in mlp.layers if layer.get_weights()]
    results = {}
    for steps in (5, 400):
        for rule in ("right", "left"):
            expl = tfattr.LayerConductance(mlp, layer="first", steps=steps, rule=rule).attribute(x, target=0)
            reference = _numpy_conductance(dense, x, 0, steps, rule)
            np.testing.assert_allclose(expl.attributions, reference, rtol=2e-4, atol=2e-6)
            results[steps, rule] = expl
    coarse = np.abs(results[5, "right"].attributions - results[5, "left"].attributions).max()
    fine = np.abs(results[400, "right"].attributions - results[400, "left"].attributions).max()
    assert coarse > 1e-3  # the two sums differ at finite steps …
    assert fine < coarse / 40  # … by O(1/M): 80× fewer intervals apart, at least 40× closer
    gap = np.abs(results[400, "right"].scores - results[400, "right"].baseline_scores)
    for rule in ("right", "left"):  # and both reach f(x) − f(z)
        assert np.all(np.abs(results[400, rule].delta) < 0.01 * gap)


def test_layer_conductance_rule_errors_name_the_argument(mlp):
    with pytest.raises(InvalidInputError, match=r"`rule` must be one of \['right', 'left'\].*Received: rule='gauss_legendre'"):
        tfattr.LayerConductance(mlp, layer="first", rule="gauss_legendre")
    with pytest.raises(InvalidInputError, match=r"Received: tolerance=0.1"):
        tfattr.LayerConductance(mlp, layer="first", tolerance=0.1)


def test_layer_ig_at_the_input_layer_is_input_ig(mlp, text_model):
    # it failed with "ran 0 times … shared layer is ambiguous": an InputLayer never runs
    x = np.random.default_rng(8).normal(size=(3, 6)).astype("float32")
    plain = tfattr.IntegratedGradients(mlp, steps=20).attribute(x, target=1)
    for attribute_to in ("output", "input"):
        lig = tfattr.LayerIntegratedGradients(mlp, layer=mlp.layers[0].name, attribute_to=attribute_to, steps=20)
        at_input = lig.attribute(x, target=1)
        assert_float32_close(at_input.attributions, plain.attributions)
        np.testing.assert_allclose(at_input.delta, plain.delta, atol=1e-5)
    keras.utils.set_random_seed(9)  # several inputs: the input layer of one, the other held at x
    a, b = keras.Input((5,), name="table"), keras.Input((4,), name="side")
    h = keras.layers.Concatenate()([keras.layers.Dense(6, activation="tanh")(a), b])
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Dense(6, activation="tanh")(h)))
    rng = np.random.default_rng(9)
    pair = [rng.normal(size=(2, 5)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")]
    for index, (name, other) in enumerate((("table", "side"), ("side", "table"))):
        lig = tfattr.LayerIntegratedGradients(model, layer=name, steps=16).attribute(pair, target=0)
        ig = tfattr.IntegratedGradients(model, steps=16, fixed_inputs=other).attribute(pair, target=0)
        assert_float32_close(lig.attributions, ig.attributions[index])
    with pytest.raises(InvalidInputError, match=r"int32 output: a path needs float values.*Received: layer='ids'"):
        tfattr.LayerIntegratedGradients(text_model, layer="ids").attribute(sentences(2)[0], target=0)
    with pytest.raises(InvalidInputError, match=r"is an InputLayer, which does not run.*Received: layer="):
        tfattr.LayerConductance(mlp, layer=mlp.layers[0].name, steps=4).attribute(x, target=0)


def test_the_input_layer_of_a_nested_model_is_refused_by_name():
    inner_in = keras.Input((4,), name="inner_in")
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="d")(inner_in), name="inner")
    outer_in = keras.Input((4,), name="outer_in")
    model = keras.Model(outer_in, keras.layers.Dense(2)(inner(outer_in)))
    with pytest.raises(InvalidInputError, match=r"'inner_in' is an InputLayer that is not an input.*Received: layer='inner_in'"):
        tfattr.LayerIntegratedGradients(model, layer="inner/inner_in")
