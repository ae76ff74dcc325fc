"""Models beyond one image tensor: tabular, sequences, several inputs (list, tuple, dict), fixed inputs."""

import keras
import numpy as np
import pytest
from conftest import assert_float32_close

import tfattr
from tfattr.errors import InvalidInputError, InvalidTypeError


def _rng(seed=0):
    return np.random.default_rng(seed)


def relative_delta(expl):
    return np.abs(expl.delta) / np.abs(expl.scores - expl.baseline_scores)


@pytest.fixture(scope="module")
def tanh_mlp():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation="tanh")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(16, activation="tanh")(h)))


@pytest.fixture(scope="module")
def gru():
    keras.utils.set_random_seed(2)
    inputs = keras.Input((7, 3))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GRU(8)(inputs)))


@pytest.fixture(scope="module")
def two_inputs():
    """Tabular (5,) and sequence (4, 3) inputs through tanh layers: neither input is linear."""
    keras.utils.set_random_seed(3)
    a, b = keras.Input((5,), name="table"), keras.Input((4, 3), name="series")
    h = keras.layers.Concatenate()([keras.layers.Dense(8, activation="tanh")(a),
                                    keras.layers.GRU(6)(b)])
    return keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Dense(8, activation="tanh")(h)))


@pytest.fixture(scope="module")
def linear_dict():
    """``f = w_a · a + w_b · b + 0.5`` on a dict of inputs, plus an int ``mask`` input added as 0·mask."""
    a, b = keras.Input((3,), name="a"), keras.Input((2, 2), name="b")
    mask = keras.Input((2,), name="mask", dtype="int32")
    wa, wb = np.array([1.0, -2.0, 3.0]), np.arange(1.0, 5.0)
    out = keras.layers.Lambda(
        lambda t: (keras.ops.sum(t[0] * wa.astype("float32"), axis=1, keepdims=True)
                   + keras.ops.sum(keras.ops.reshape(t[1], (-1, 4)) * wb.astype("float32"), axis=1, keepdims=True)
                   + 0.0 * keras.ops.sum(keras.ops.cast(t[2], "float32"), axis=1, keepdims=True) + 0.5)
    )([a, b, mask])
    return keras.Model({"a": a, "b": b, "mask": mask}, out), wa, wb.reshape(2, 2)


def _pair(n=3, seed=0):
    rng = _rng(seed)
    return [rng.normal(size=(n, 5)).astype("float32"), rng.normal(size=(n, 4, 3)).astype("float32")]


def test_completeness_on_tabular_tanh_mlp(tanh_mlp):
    x = _rng().normal(size=(4, 6)).astype("float32")
    expl = tfattr.IntegratedGradients(tanh_mlp, steps=64, rule="gauss_legendre").attribute(x, target=2)
    assert expl.attributions.shape == (4, 6)
    assert np.all(relative_delta(expl) < 1e-4)


def test_completeness_on_sequence_gru(gru):
    x = _rng().normal(size=(3, 7, 3)).astype("float32")
    expl = tfattr.IntegratedGradients(gru, steps=64, rule="gauss_legendre").attribute(x, target=1)
    assert expl.attributions.shape == (3, 7, 3)
    assert np.all(relative_delta(expl) < 1e-4)


def test_two_input_completeness_counts_both_inputs(two_inputs):
    x = _pair()
    expl = tfattr.IntegratedGradients(two_inputs, steps=64, rule="gauss_legendre").attribute(x, target=0)
    table, series = expl.attributions
    assert isinstance(expl.attributions, list) and table.shape == (3, 5) and series.shape == (3, 4, 3)
    total = table.sum(axis=1) + series.sum(axis=(1, 2))
    gap = expl.scores - expl.baseline_scores
    assert np.all(np.abs(total - gap) < 1e-4 * np.abs(gap))  # completeness over both inputs together
    assert np.allclose(expl.delta, total - gap, atol=1e-6)  # attributions come back in float32
    # both inputs carry part of it: either one alone misses by far more than the delta
    assert np.all(np.abs(series.sum(axis=(1, 2))) > 1e3 * np.abs(expl.delta))
    assert np.all(np.abs(table.sum(axis=1)) > 1e3 * np.abs(expl.delta))


def test_batch_invariance_with_several_inputs(two_inputs):
    x = _pair(n=5, seed=4)
    ig = tfattr.IntegratedGradients(two_inputs, steps=16)
    batch = ig.attribute(x, target=1, batch_size=7)
    for i in (0, 3):
        alone = ig.attribute([x[0][i : i + 1], x[1][i : i + 1]], target=1, batch_size=5)
        for got, want in zip(alone.attributions, batch.attributions):
            assert_float32_close(got, want[i : i + 1])


def test_attributions_come_back_in_the_callers_structure(two_inputs, linear_dict):
    x = _pair()
    ig = tfattr.IntegratedGradients(two_inputs, steps=8)
    assert isinstance(ig.attribute(tuple(x), target=0).attributions, tuple)
    by_name = ig.attribute({"table": x[0], "series": x[1]}, target=0).attributions
    assert set(by_name) == {"table", "series"} and by_name["series"].shape == (3, 4, 3)
    one = ig.attribute([x[0][0], x[1][0]], target=0)  # one example without the batch axis
    assert one.single and one.attributions[1].shape == (4, 3)
    model, wa, wb = linear_dict
    out = tfattr.IntegratedGradients(model, steps=4, fixed_inputs="mask").attribute(
        {"a": np.ones((2, 3), "float32"), "b": np.ones((2, 2, 2), "float32"), "mask": np.ones((2, 2), "int32")})
    assert set(out.attributions) == {"a", "b", "mask"}


def test_linear_model_ig_per_input_baselines_is_exact(linear_dict):
    model, wa, wb = linear_dict
    rng = _rng(5)
    x = {"a": rng.normal(size=(2, 3)).astype("float32"), "b": rng.normal(size=(2, 2, 2)).astype("float32"),
         "mask": rng.integers(0, 2, size=(2, 2)).astype("int32")}
    zb = rng.normal(size=(2, 2)).astype("float32")
    expl = tfattr.IntegratedGradients(model, steps=3, fixed_inputs=["mask"]).attribute(
        x, baseline={"a": 0.25, "b": zb, "mask": None})
    np.testing.assert_allclose(expl.attributions["a"], wa * (x["a"] - 0.25), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(expl.attributions["b"], wb * (x["b"] - zb), rtol=1e-5, atol=1e-6)
    assert np.all(expl.attributions["mask"] == 0)
    fz = 0.25 * wa.sum() + (wb * zb).sum() + 0.5
    np.testing.assert_allclose(expl.baseline_scores, fz, rtol=1e-5)
    assert np.all(np.abs(expl.delta) < 1e-5)


def test_every_gradient_method_takes_several_inputs(linear_dict):
    model, wa, wb = linear_dict
    rng = _rng(6)
    x = [rng.normal(size=(2, 3)).astype("float32"), rng.normal(size=(2, 2, 2)).astype("float32"),
         np.ones((2, 2), "int32")]
    fixed = {"fixed_inputs": [2]}
    grad = tfattr.Gradient(model, **fixed).attribute(x).attributions
    np.testing.assert_allclose(grad[0], np.broadcast_to(wa, (2, 3)), rtol=1e-6)
    np.testing.assert_allclose(grad[1], np.broadcast_to(wb, (2, 2, 2)), rtol=1e-6)
    ixg = tfattr.InputXGradient(model, **fixed).attribute(x).attributions
    np.testing.assert_allclose(ixg[1], wb * x[1], rtol=1e-5, atol=1e-6)
    a, b = keras.Input((3,)), keras.Input((2,))
    relu = keras.Model([a, b], keras.layers.Lambda(lambda t: keras.ops.sum(t[0], axis=1, keepdims=True)
                                                   - 2.0 * keras.ops.sum(t[1], axis=1, keepdims=True))(
        [keras.layers.ReLU()(a), b]))
    xa = np.array([[1.0, -1.0, 2.0]], "float32")
    guided = tfattr.GuidedBackprop(relu).attribute([xa, np.ones((1, 2), "float32")]).attributions
    np.testing.assert_allclose(guided[0], [[1.0, 0.0, 1.0]])  # through the guided ReLU
    np.testing.assert_allclose(guided[1], [[-2.0, -2.0]])  # the other input's plain gradient
    taylor = tfattr.SmoothTaylor(model, roots=5, sigma=0.3, **fixed).attribute(x)
    assert np.all(np.abs(taylor.delta) < 1e-5)  # a linear model's Taylor expansion is exact
    tunnel = tfattr.NoiseTunnel(tfattr.IntegratedGradients(model, steps=4, **fixed), nt_samples=4, stdevs=0.5)
    smooth = tunnel.attribute(x)
    noise = tunnel.noise((3 + 4 + 2,), tunnel.config).mean(axis=0)  # the packed inputs' mean noise
    np.testing.assert_allclose(smooth.attributions[0], wa * (x[0] + noise[:3]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(smooth.attributions[1], wb * (x[1] + noise[3:7].reshape(2, 2)), rtol=1e-4, atol=1e-5)
    assert np.all(smooth.attributions[2] == 0)  # no noise on the fixed ids: they stay valid
    draws = tfattr.IntegratedGradients(model, steps=4, baseline="uniform", n_baselines=3, value_range=(-3, 3),
                                       **fixed).attribute(x)
    assert np.all(np.abs(draws.delta) < 1e-5)


def test_fixed_input_keeps_its_value_and_gets_nothing(two_inputs):
    x = _pair(seed=7)
    ig = tfattr.IntegratedGradients(two_inputs, steps=64, rule="gauss_legendre")
    expl = ig.attribute(x, target=2, fixed_inputs="series")
    assert np.all(expl.attributions[1] == 0)
    # f(z) is the model at (zero table, the input's own series)
    fz = np.asarray(two_inputs([np.zeros_like(x[0]), x[1]]))[:, 2]
    np.testing.assert_allclose(expl.baseline_scores, fz, rtol=1e-5, atol=1e-6)
    assert np.all(relative_delta(expl) < 1e-4)


def test_structure_errors_name_the_argument(two_inputs, linear_dict):
    ig = tfattr.IntegratedGradients(two_inputs, steps=4)
    x = _pair()
    with pytest.raises(InvalidTypeError, match=r"must be a list, tuple or dict.*Received: inputs="):
        ig.attribute(x[0])
    with pytest.raises(InvalidInputError, match=r"one per model input.*Received: inputs="):
        ig.attribute(x[:1])
    with pytest.raises(InvalidInputError, match=r"keyed \['table', 'series'\].*Received: inputs.keys\(\)="):
        ig.attribute({"table": x[0], "other": x[1]})
    with pytest.raises(InvalidInputError, match=r"inputs\[1\]` does not fit model input 'series'.*Received"):
        ig.attribute([x[0], x[1][:, :3]])
    with pytest.raises(InvalidInputError, match=r"share one batch size"):
        ig.attribute([x[0], x[1][:2]])
    with pytest.raises(InvalidInputError, match=r"one value for all or one per input.*Received: len\(baseline\)=3"):
        ig.attribute(x, baseline=["zero", "zero", "zero"])
    with pytest.raises(InvalidInputError, match=r"given per input.*Received: baseline.shape="):
        ig.attribute(x, baseline=np.zeros((5,)))
    with pytest.raises(InvalidInputError, match=r"keys must be model input names.*Received: baseline.keys\(\)="):
        ig.attribute(x, baseline={"tabel": 0.0})
    with pytest.raises(InvalidInputError, match=r"`fixed_inputs` must name inputs.*Received: fixed_inputs='nope'"):
        ig.attribute(x, fixed_inputs="nope")
    with pytest.raises(InvalidInputError, match=r"nothing is left to attribute.*Received: fixed_inputs="):
        ig.attribute(x, fixed_inputs=[0, 1])
    model = linear_dict[0]
    ids = {"a": np.ones((1, 3), "float32"), "b": np.ones((1, 2, 2), "float32"), "mask": np.ones((1, 2), "int32")}
    with pytest.raises(InvalidTypeError, match=r"integer input.*LayerIntegratedGradients.*Received: inputs\['mask'\]"):
        tfattr.IntegratedGradients(model).attribute(ids)


def test_integer_inputs_of_a_one_input_model_point_to_layer_ig():
    inputs = keras.Input((4,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(5, 3)(inputs))))
    with pytest.raises(InvalidTypeError, match=r"LayerIntegratedGradients.*Received: inputs.dtype='int32'"):
        tfattr.IntegratedGradients(model).attribute(np.ones((2, 4), "int32"))


def test_image_only_methods_refuse_several_inputs_by_name():
    a, b = keras.Input((8, 8, 3), name="img"), keras.Input((3,), name="meta")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(a)
    h = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(h), b])
    model = keras.Model([a, b], keras.layers.Dense(2)(h))
    x = [np.ones((1, 8, 8, 3), "float32"), np.ones((1, 3), "float32")]
    for method in (tfattr.GradCAM(model, layer="conv"), tfattr.RSIGradCAM(model, layer="conv")):
        with pytest.raises(InvalidTypeError, match=r"one image input.*Received: model.inputs=\['img', 'meta'\]"):
            method.attribute(x)
    with pytest.raises(InvalidTypeError, match=r"one image input.*Received: sigma='adaptive'"):
        tfattr.SmoothTaylor(model, sigma="adaptive").attribute(x)
    with pytest.raises(InvalidTypeError, match=r"one image input.*Received: model.inputs="):
        tfattr.adaptive_noising(tfattr.SmoothTaylor(model), x)
    assert tfattr.IntegratedGradients(model, steps=4).attribute(x).attributions[0].shape == (1, 8, 8, 3)
