"""Inputs marked fixed (``fixed_inputs``): baseline = input, attribution exactly 0, their values exact.

Every method that takes several inputs follows the contract of ``fixed_inputs``: the fixed
input's attribution is exactly 0 (also for the plain gradient methods, whose "attribution" is a
gradient), integer inputs reach the model with their exact values, and a float array given for an
integer input is refused instead of rounded.
"""

import keras
import numpy as np
import pytest

import tfattr
from tfattr.errors import InvalidTypeError, TfattrError


@pytest.fixture(scope="module")
def relu_pair():
    """``f = Σ relu(a) · w + 20 · Σ b``: the fixed input ``b`` has gradient 20 everywhere."""
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Dense(2, activation="relu", kernel_initializer=keras.initializers.Constant(0.5),
                           bias_initializer="zeros")(a)
    out = keras.layers.Lambda(lambda t: keras.ops.concatenate(
        [keras.ops.sum(t[0], axis=1, keepdims=True) + 20.0 * keras.ops.sum(t[1], axis=1, keepdims=True),
         -keras.ops.sum(t[0], axis=1, keepdims=True)], axis=1))([h, b])
    return keras.Model([a, b], out)


def _x():
    return [np.array([[1.0, 2.0, -0.5], [0.3, -1.0, 2.0]], "float32"), np.array([[1.0, -2.0], [0.5, 0.25]], "float32")]


@pytest.mark.parametrize("make", [
    lambda m: tfattr.Gradient(m),
    lambda m: tfattr.Gradient(m, absolute=True),
    lambda m: tfattr.GuidedBackprop(m),
    lambda m: tfattr.NoiseTunnel(tfattr.Gradient(m), nt_samples=3, stdevs=0.2, seed=0),
    lambda m: tfattr.NoiseTunnel(tfattr.GuidedBackprop(m), nt_samples=3, stdevs=0.2, seed=0, nt_type="smoothgrad_sq"),
    lambda m: tfattr.SmoothTaylor(m, roots=4, sigma=0.3, seed=0),
    lambda m: tfattr.InputXGradient(m),
    lambda m: tfattr.IntegratedGradients(m, steps=4),
], ids=["gradient", "abs_gradient", "guided_backprop", "nt_gradient", "nt_guided_sq", "smooth_taylor",
        "input_x_gradient", "ig"])
def test_fixed_input_gets_exactly_zero(relu_pair, make):
    x = _x()
    out = make(relu_pair).attribute(x, target=0, fixed_inputs="b").attributions
    assert np.all(out[1] == 0)  # the gradient there is 20: the contract says 0
    assert np.any(out[0] != 0)  # the free input is still explained
    free = make(relu_pair).attribute(x, target=0).attributions
    assert np.any(np.abs(free[1]) > 1)  # not fixed: the real gradient (20) shows


@pytest.fixture(scope="module")
def ids_model():
    """A float input and integer ids through an Embedding whose rows differ: other ids, other scores."""
    keras.utils.set_random_seed(11)
    a, ids = keras.Input((3,), name="a"), keras.Input((2,), name="ids", dtype="int32")
    emb = keras.layers.Flatten()(keras.layers.Embedding(10, 2, name="emb")(ids))
    return keras.Model([a, ids], keras.layers.Dense(2)(keras.layers.Concatenate()([a, emb])))


def test_float_ids_with_a_fractional_part_are_refused_not_rounded(ids_model):
    # `ids + 0.6` explained other tokens; `ids * 0.01` became all padding (where fixed, and in layer IG)
    x, ids = np.ones((2, 3), "float32"), np.array([[1, 2], [3, 4]])
    for bad, shown in ((ids + 0.6, "1.6"), (ids * 0.01, "0.01")):
        for method in (tfattr.IntegratedGradients(ids_model, steps=4, fixed_inputs="ids"),
                       tfattr.Gradient(ids_model, fixed_inputs=[1]),
                       tfattr.LayerIntegratedGradients(ids_model, layer="emb", steps=4)):
            with pytest.raises(InvalidTypeError, match=rf"`inputs\[1\]` holds non-integral values for model input "
                                                       rf"'ids'.*Received: inputs\[1\]\[\(0, 0\)\]={shown}$"):
                method.attribute([x, bad], target=0)
    with pytest.raises(InvalidTypeError, match=r"non-integral.*Received: input_baseline\[1\]\[\(0, 0\)\]=0.5"):
        tfattr.LayerIntegratedGradients(ids_model, layer="emb", steps=4).attribute([x, ids], target=0,
                                                                                   input_baseline=0.5)
    with pytest.raises(tfattr.errors.InvalidInputError, match=r"outside the range of model input 'ids' \(int32.*"
                                                            r"Received: inputs\['ids'\]\[\(1, 1\)\]=4294967296"):
        tfattr.IntegratedGradients(ids_model, steps=4, fixed_inputs="ids").attribute(
            {"a": x, "ids": ids + np.array([[0, 0], [0, 2**32 - 4]])}, target=0)


def test_float_ids_with_integral_values_are_the_same_ids(ids_model):
    x, ids = np.random.default_rng(12).normal(size=(2, 3)).astype("float32"), np.array([[1, 2], [3, 4]], "int32")
    for method in (tfattr.IntegratedGradients(ids_model, steps=4, fixed_inputs="ids"),
                   tfattr.LayerIntegratedGradients(ids_model, layer="emb", steps=4)):
        as_int = method.attribute([x, ids], target=0)
        as_float = method.attribute([x, ids.astype("float64")], target=0)
        np.testing.assert_array_equal(as_float.scores, as_int.scores)
        got, want = as_float.attributions, as_int.attributions
        for g, w in (zip(got, want) if isinstance(got, list) else [(got, want)]):
            np.testing.assert_array_equal(g, w)
    np.testing.assert_allclose(as_int.scores, np.asarray(ids_model([x, ids]))[:, 0], rtol=1e-6)


@pytest.fixture(scope="module")
def hashed_model():
    """``f = Σ a·w + (h mod 7)`` per class with an int64 hashed id ``h``: one unit off in ``h`` moves ``f`` by 1."""
    import tensorflow as tf

    a, h = keras.Input((3,), name="a"), keras.Input((2,), name="h", dtype="int64")
    dense = keras.layers.Dense(2, name="dense", kernel_initializer=keras.initializers.Constant(0.5))(a)
    side = keras.layers.Lambda(lambda t: tf.cast(tf.math.floormod(t, 7), tf.float32), name="side")(h)
    return keras.Model([a, h], keras.layers.Add()([dense, side]))


def test_int64_ids_beyond_float64_reach_the_model_exactly(hashed_model):
    # ids ≥ 2**53 were rounded in the packed float64 tensor: f(x) was not model(x) (1.0 vs 2.0) while delta was 0
    x = np.array([[1.0, -2.0, 0.5], [0.3, 0.2, 0.1]], "float32")
    h = np.array([[2**62 + 3, 2**53 + 1], [-(2**63) + 5, 2**63 - 1]], "int64")
    assert [int(float(v)) % 7 for v in h[0]] != [int(v) % 7 for v in h[0]]  # float64 would change the scores
    truth = np.asarray(hashed_model([x, h]))
    for method in (tfattr.IntegratedGradients(hashed_model, steps=8, fixed_inputs="h"),
                   tfattr.Gradient(hashed_model, fixed_inputs="h"),
                   tfattr.LayerIntegratedGradients(hashed_model, layer="dense", steps=8)):
        for target in (0, 1):
            expl = method.attribute([x, h], target=target)
            np.testing.assert_allclose(expl.scores, truth[:, target], rtol=1e-6)
    ig = tfattr.IntegratedGradients(hashed_model, steps=8, fixed_inputs="h").attribute({"a": x, "h": h}, target=0)
    np.testing.assert_allclose(ig.baseline_scores, np.asarray(hashed_model([np.zeros_like(x), h]))[:, 0], rtol=1e-6)
    np.testing.assert_allclose(ig.attributions["a"], 0.5 * x, rtol=1e-6)  # linear in a: IG = w·x
    assert np.all(ig.attributions["h"] == 0) and np.all(np.abs(ig.delta) < 1e-5)
    draws = tfattr.IntegratedGradients(hashed_model, steps=4, fixed_inputs="h", baseline="uniform", n_baselines=2,
                                       value_range=(-3, 3)).attribute([x, h], target=1)
    np.testing.assert_allclose(draws.scores, truth[:, 1], rtol=1e-6)
    assert np.all(np.abs(draws.delta) < 1e-5)


def test_float_ids_beyond_the_floats_exact_integers_and_bfloat16_fractions_are_refused(hashed_model, ids_model):
    """``float64(2**60 + 1)`` is ``2**60``: integral, so it was taken as the id 2**60 (another id, other
    scores, no error); bfloat16 ids have no NumPy 'f' kind, so ``1.5`` skipped the fractional check and was
    truncated to 1; a ragged nested list was a raw NumPy ValueError."""
    import ml_dtypes

    x = np.ones((1, 3), "float32")
    rounded = np.array([[2**60 + 1, 5]]).astype(np.float64)
    assert int(rounded[0, 0]) % 7 != (2**60 + 1) % 7  # the rounded id scores otherwise
    with pytest.raises(InvalidTypeError, match=r"float64 values of magnitude 2\*\*53 or more for model input 'h'"):
        tfattr.Gradient(hashed_model, fixed_inputs="h").attribute([x, rounded], target=0)
    with pytest.raises(InvalidTypeError, match=r"float32 values of magnitude 2\*\*24 or more.*Received: "
                                               r"inputs\[1\]\[\(0, 1\)\]=16777216"):
        tfattr.Gradient(hashed_model, fixed_inputs="h").attribute([x, np.array([[3, 2**24]], np.float32)], target=0)
    exact = tfattr.Gradient(hashed_model, fixed_inputs="h").attribute([x, np.array([[3, 2**24 - 1]], np.float32)],
                                                                        target=0)
    np.testing.assert_allclose(exact.scores, np.asarray(hashed_model([x, np.array([[3, 2**24 - 1]])]))[:, 0])
    ids = np.array([[1.5, 2.0], [3.0, 4.0]], np.float32).astype(ml_dtypes.bfloat16)
    with pytest.raises(InvalidTypeError, match=r"non-integral values.*Received: inputs\[1\]\[\(0, 0\)\]=1.5$"):
        tfattr.IntegratedGradients(ids_model, steps=4, fixed_inputs="ids").attribute([np.ones((2, 3)), ids], target=0)
    with pytest.raises(tfattr.errors.InvalidInputError, match=r"`inputs\[1\]` must be a rectangular array"):
        tfattr.IntegratedGradients(ids_model, steps=4, fixed_inputs="ids").attribute([np.ones((2, 3)), [[1, 2], [3]]],
                                                                                    target=0)


@pytest.mark.parametrize("fixed", ["x", 0, ["x"]])
def test_fixed_inputs_on_a_one_input_model_is_refused_not_ignored(fixed):
    """``fixed_inputs`` on a one-input model was silently ignored: the caller asked for the only
    input to stay fixed (attributions 0) and got the full attribution."""
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, bias_initializer="ones")(inputs))
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(tfattr.Gradient(model).attribute(x, target=0).attributions.shape, (2, 4))
    with pytest.raises(TfattrError, match=r"fixed_inputs.*one input.*Received: fixed_inputs="):
        tfattr.IntegratedGradients(model, steps=4, fixed_inputs=fixed).attribute(x, target=0)
