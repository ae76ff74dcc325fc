"""KernelSHAP and Shapley value sampling on forward rows: exact Shapley values by brute force,
the shap package's KernelExplainer, efficiency, linear models, seeds, chunk sizes, several
inputs and outputs."""

import itertools
import math

import keras
import numpy as np
import pytest

import tfattr
from tfattr.errors import InvalidInputError, InvalidTypeError
from tfattr.methods.coalitions import pack_coalitions, prefix_words
from tfattr.methods.shapley import kernel_shap_coalitions, permutation_plan

SHAPE = (4, 4, 2)


def _model(seed=0, dtype="float32"):
    """A small network with interactions (tanh hidden layer) and non-zero biases."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE, dtype=dtype)
    h = keras.layers.Dense(6, activation="tanh", bias_initializer="random_normal", dtype=dtype)(
        keras.layers.Flatten(dtype=dtype)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, bias_initializer="random_normal", dtype=dtype)(h))


@pytest.fixture(scope="module")
def model():
    return _model()


def _mask(groups):
    """A (4, 4) mask of ``groups`` groups (shared over the channels)."""
    return (np.random.default_rng(groups).permutation(16) % groups).reshape(4, 4).astype(np.int64)


def _inputs(n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n,) + SHAPE).astype(np.float32)


def _brute_force_shapley(model, x, mask, target, baseline=0.0):
    """Exact Shapley values of the groups: every coalition's score from one batched model call,
    then Σ_S |S|!(M−|S|−1)!/M! (v(S ∪ i) − v(S))."""
    groups = int(mask.max()) + 1
    subsets = list(itertools.product([0, 1], repeat=groups))
    keep = np.array([np.isin(mask, np.flatnonzero(s)) for s in subsets])[..., None]
    points = np.where(keep, x[None], baseline).astype(x.dtype)
    value = dict(zip(subsets, np.asarray(model(points), np.float64)[:, target]))
    phi = np.zeros(groups)
    for s in subsets:
        for i in np.flatnonzero(np.array(s) == 0):
            with_i = tuple(1 if j == i else s[j] for j in range(groups))
            size = sum(s)
            phi[i] += math.factorial(size) * math.factorial(groups - size - 1) / math.factorial(groups) * (
                value[with_i] - value[s])
    return phi


def _close(a, b, scale=1.0):
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * max(scale, 1.0))


# -- KernelSHAP ----------------------------------------------------------------------------------

def test_kernel_shap_with_every_coalition_is_the_brute_force_shapley_value(model):
    x, mask = _inputs(), _mask(6)
    found = tfattr.KernelShap(model, feature_mask=mask, n_samples=62, batch_size=16).attribute(x, target=1)
    assert found.info["exact"].all() and found.info["rows"] == 2 * (62 + 2)
    assert found.info["forward_passes"] == 128 // 16  # the rows of both examples in full batches
    for e in range(2):
        expected = _brute_force_shapley(model, x[e], mask, 1)
        _close(found.info["group_attributions"][e], expected)
        # each value shows its group's attribution
        _close(np.asarray(found.attributions)[e], np.broadcast_to(expected[mask][..., None], SHAPE))


def test_kernel_shap_equals_the_shap_packages_kernel_explainer(model):
    """shap's KernelExplainer explains g(z) = f(x where z = 1, baseline where z = 0) with the
    all-zero background and the all-one instance: the same coalitions, weights and
    constrained solve; with every coalition enumerated both are exact."""
    import shap  # the test extra's reference implementation

    x, mask, baseline = _inputs(1, seed=3)[0], _mask(7), 0.25
    target = 2

    def g(z):
        keep = z[:, mask][..., None] > 0.5
        return np.asarray(model(np.where(keep, x[None], baseline).astype(np.float32)), np.float64)[:, target]

    explainer = shap.KernelExplainer(g, np.zeros((1, 7)))
    theirs = explainer.shap_values(np.ones((1, 7)), nsamples=126, l1_reg=False, silent=True)[0]
    ours = tfattr.KernelShap(model, feature_mask=mask, n_samples=126, baseline=baseline).attribute(x, target=target)
    _close(ours.info["group_attributions"][0], theirs)
    _close(ours.baseline_scores[0], explainer.expected_value)


def test_kernel_shap_sampling_draws_shaps_coalitions_and_equals_it_with_the_same_seed(model):
    """Below 2^M − 2 coalitions (M = 10, 150 of 1022) shap enumerates sizes 1 and 9 and draws the
    rest from np.random; seeded alike, both draw the same coalitions and solve alike."""
    import shap

    x, mask, target = _inputs(1, seed=11)[0], _mask(10), 0

    def g(z):
        keep = z[:, mask][..., None] > 0.5
        return np.asarray(model(np.where(keep, x[None], 0.0).astype(np.float32)), np.float64)[:, target]

    explainer = shap.KernelExplainer(g, np.zeros((1, 10)))
    np.random.seed(4)
    theirs = explainer.shap_values(np.ones((1, 10)), nsamples=150, l1_reg=False, silent=True)[0]
    ours = tfattr.KernelShap(model, feature_mask=mask, n_samples=150, seed=4).attribute(x, target=target)
    assert not ours.info["exact"][0]
    np.testing.assert_array_equal(kernel_shap_coalitions(10, 150, seed=4)[0], explainer.maskMatrix > 0.5)
    _close(ours.info["group_attributions"][0], theirs)
    exact = _brute_force_shapley(model, x, mask, target)
    assert np.abs(ours.info["group_attributions"][0] - exact).max() > 1e-4  # a sample, not the exact values


def test_kernel_shap_samples_as_shap_does_sizes_first_then_paired_draws():
    coalitions, weights, exact = kernel_shap_coalitions(10, 100, seed=0)
    sizes = coalitions.sum(axis=1)
    assert not exact and len(coalitions) == 100 and len({c.tobytes() for c in coalitions}) == 100
    # sizes 1 and 9 (20 coalitions) are enumerated first; a drawn size below 5 comes with its complement
    assert sorted(sizes[:20]) == [1] * 10 + [9] * 10
    drawn, i, pairs = coalitions[20:], 0, 0
    assert set(sizes[20:]) <= set(range(2, 9))
    while i < len(drawn):
        if drawn[i].sum() < 5 and i + 1 < len(drawn):
            np.testing.assert_array_equal(drawn[i + 1], ~drawn[i])
            i, pairs = i + 2, pairs + 1
        else:
            assert drawn[i].sum() == 5 or i == len(drawn) - 1
            i += 1
    assert pairs > 10
    # the kernel's mass: enumerated sizes keep theirs, the drawn coalitions share the rest
    kernel = np.array([9.0 / (s * (10 - s)) for s in range(1, 10)])
    np.testing.assert_allclose(weights.sum(), 1.0)
    np.testing.assert_allclose(weights[:20].sum(), (kernel[0] + kernel[8]) / kernel.sum())
    again = kernel_shap_coalitions(10, 100, seed=0)
    np.testing.assert_array_equal(again[0], coalitions)
    assert not np.array_equal(kernel_shap_coalitions(10, 100, seed=1)[0], coalitions)
    assert kernel_shap_coalitions(5, 1000)[2] and len(kernel_shap_coalitions(5, 1000)[0]) == 30


def test_kernel_shap_of_a_linear_model_is_w_times_x_minus_b_per_group_from_few_samples():
    """f is linear in the coalition: the constrained regression recovers φ_g = Σ_{i∈g} w_i (x_i − b_i)
    exactly from any full-rank sample (here 40 of 1022 coalitions)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input(SHAPE, dtype="float64")
    dense = keras.layers.Dense(2, dtype="float64")
    model = keras.Model(inputs, dense(keras.layers.Flatten(dtype="float64")(inputs)))
    w = np.random.default_rng(2).normal(size=(32, 2))
    dense.set_weights([w, np.array([0.3, -0.2])])
    x = np.random.default_rng(3).normal(size=(2,) + SHAPE)
    mask = _mask(10)
    for method in (tfattr.KernelShap(model, feature_mask=mask, n_samples=40, baseline=0.5),
                   tfattr.ShapleyValueSampling(model, feature_mask=mask, n_samples=2, baseline=0.5)):
        found = method.attribute(x, target=[0, 1])
        for e, t in enumerate((0, 1)):
            share = ((x[e] - 0.5) * w[:, t].reshape(SHAPE)).sum(axis=-1)
            expected = np.bincount(mask.ravel(), weights=share.ravel(), minlength=10)
            np.testing.assert_allclose(found.info["group_attributions"][e], expected, atol=1e-10)
        assert not found.info["exact"].any()


def test_kernel_shap_efficiency_holds_exactly_when_sampling(model):
    x = _inputs(3, seed=4)
    found = tfattr.KernelShap(model, feature_mask=_mask(11), n_samples=80).attribute(x)
    assert not found.info["exact"].any()
    totals = np.array([v.sum() for v in found.info["group_attributions"]])
    np.testing.assert_allclose(totals, found.scores - found.baseline_scores, rtol=0, atol=1e-12)
    np.testing.assert_allclose(found.delta, 0.0, atol=1e-12)
    # f(x) is the top-1 pass's: one fewer row per example than with an explicit target
    assert found.info["rows"] == 3 * (80 + 1)
    explicit = tfattr.KernelShap(model, feature_mask=_mask(11), n_samples=80).attribute(x, target=found.targets)
    assert explicit.info["rows"] == 3 * (80 + 2)
    _close(np.asarray(explicit.attributions), np.asarray(found.attributions))


# -- Shapley value sampling ----------------------------------------------------------------------

def test_shapley_value_sampling_over_every_permutation_is_the_brute_force_shapley_value(model):
    x, mask = _inputs(seed=5), _mask(4)
    found = tfattr.ShapleyValueSampling(model, feature_mask=mask, n_samples=24, batch_size=32).attribute(x, target=0)
    assert found.info["exact"].all() and found.info["permutations"][4].shape == (24, 4)
    assert found.info["rows"] == 2 * (24 * 3 + 2)
    for e in range(2):
        _close(found.info["group_attributions"][e], _brute_force_shapley(model, x[e], mask, 0))


def test_shapley_value_sampling_telescopes_for_any_number_of_samples(model):
    x = _inputs(3, seed=6)
    for samples in (1, 3, 17):
        found = tfattr.ShapleyValueSampling(model, feature_mask=_mask(9), n_samples=samples).attribute(x)
        totals = np.array([v.sum() for v in found.info["group_attributions"]])
        np.testing.assert_allclose(totals, found.scores - found.baseline_scores, rtol=0, atol=1e-12)
        assert found.info["rows"] == 3 * (samples * 8 + 1)


def test_shapley_value_sampling_is_seeded_and_chunk_size_invariant(model):
    x, mask = _inputs(2, seed=7), _mask(7)
    runs = {b: np.asarray(tfattr.ShapleyValueSampling(model, feature_mask=mask, n_samples=5, batch_size=b)
                          .attribute(x, target=2).attributions) for b in (1, 7, 64)}
    _close(runs[1], runs[7])
    _close(runs[1], runs[64])
    again = tfattr.ShapleyValueSampling(model, feature_mask=mask, n_samples=5, batch_size=7).attribute(x, target=2)
    np.testing.assert_array_equal(np.asarray(again.attributions), runs[7])
    other = tfattr.ShapleyValueSampling(model, feature_mask=mask, n_samples=5, seed=1).attribute(x, target=2)
    assert not np.allclose(np.asarray(other.attributions), runs[7])
    # an example alone gets the batch's permutations
    alone = tfattr.ShapleyValueSampling(model, feature_mask=mask, n_samples=5, batch_size=7).attribute(x[1:], target=2)
    _close(np.asarray(alone.attributions)[0], runs[7][1])


def test_the_packed_rows_of_a_permutation_are_its_prefixes():
    permutations, exact = permutation_plan(60, 3, seed=0)  # 60 groups: two words per row
    words = prefix_words(permutations, 60)
    assert not exact and words.shape == (3 * 59, 2)
    bits = (np.floor(words[:, :, None] / 2.0 ** np.arange(52)) % 2).reshape(len(words), -1)[:, :60] > 0
    for p, order in enumerate(permutations):
        for k in range(1, 60):
            assert set(np.flatnonzero(bits[p * 59 + k - 1])) == set(order[:k])
    np.testing.assert_array_equal(pack_coalitions(bits, 60), words)


def test_calls_too_large_to_hold_are_refused_before_anything_is_drawn(model):
    with pytest.raises(InvalidInputError, match="coalitions.*Received: n_samples=20000000"):
        tfattr.KernelShap(model, n_samples=20_000_000).attribute(_inputs(1), target=0)  # 32 groups
    with pytest.raises(InvalidInputError, match="coalitions.*Received: n_samples=1000000"):
        tfattr.ShapleyValueSampling(model, n_samples=1_000_000).attribute(_inputs(1), target=0)


# -- masks, inputs, outputs ------------------------------------------------------------------------

def test_a_mask_per_example_and_a_baseline_per_example(model):
    x = _inputs(2, seed=8)
    masks = np.stack([_mask(3), _mask(5)])[..., None]  # (2, 4, 4, 1): 3 and 5 groups
    baseline = np.stack([np.zeros(SHAPE), np.full(SHAPE, 0.5)]).astype(np.float32)
    found = tfattr.KernelShap(model, feature_mask=masks, n_samples=100, baseline=baseline).attribute(x, target=1)
    np.testing.assert_array_equal(found.info["groups"], [3, 5])
    for e in range(2):
        expected = _brute_force_shapley(model, x[e], masks[e, ..., 0], 1, baseline[e])
        _close(found.info["group_attributions"][e], expected)


def test_several_inputs_take_a_mask_per_input_with_ids_shared_across_inputs():
    keras.utils.set_random_seed(3)
    table, series = keras.Input((3,), name="table"), keras.Input((4, 2), name="series")
    h = keras.layers.Concatenate()([table, keras.layers.Flatten()(series)])
    model = keras.Model([table, series], keras.layers.Dense(2)(keras.layers.Dense(5, activation="tanh")(h)))
    rng = np.random.default_rng(9)
    x = {"table": rng.normal(size=(2, 3)).astype(np.float32), "series": rng.normal(size=(2, 4, 2)).astype(np.float32)}
    masks = {"table": np.array([0, 1, 2]), "series": np.array([3, 3, 2, 4])[:, None]}  # group 2 spans both inputs
    found = tfattr.KernelShap(model, feature_mask=masks, n_samples=30).attribute(x, target=1)
    assert found.info["exact"].all() and list(found.info["groups"]) == [5, 5]
    for e in range(2):
        def v(coalition, e=e):
            keep = [np.isin(masks["table"], coalition), np.broadcast_to(np.isin(masks["series"], coalition), (4, 2))]
            return float(model([np.where(keep[0], x["table"][e], 0)[None], np.where(keep[1], x["series"][e], 0)[None]])
                         [0, 1])
        phi = np.zeros(5)
        for i in range(5):
            for r in range(5):
                for s in itertools.combinations([g for g in range(5) if g != i], r):
                    weight = math.factorial(r) * math.factorial(4 - r) / math.factorial(5)
                    phi[i] += weight * (v(list(s) + [i]) - v(list(s)))
        _close(found.info["group_attributions"][e], phi)
        # group 2's value is painted on both inputs
        assert found.attributions["table"][e][2] == found.attributions["series"][e][2, 0]
    # a fixed input is never perturbed and gets 0
    fixed = tfattr.ShapleyValueSampling(model, feature_mask=masks, fixed_inputs=["series"]).attribute(x, target=1)
    assert np.all(fixed.attributions["series"] == 0) and list(fixed.info["groups"]) == [3, 3]


def test_output_picks_the_explained_head(model):
    inputs = keras.Input(SHAPE)
    both = keras.Model(inputs, {"a": model(inputs), "b": 2.0 * model(inputs)})
    x, mask = _inputs(1, seed=10), _mask(4)
    head = tfattr.ShapleyValueSampling(both, feature_mask=mask, n_samples=24, output="b").attribute(x, target=1)
    alone = tfattr.ShapleyValueSampling(model, feature_mask=mask, n_samples=24).attribute(x, target=1)
    _close(np.asarray(head.attributions), 2.0 * np.asarray(alone.attributions))


def test_bad_masks_raise_errors_naming_feature_mask(model):
    x = _inputs(2)
    with pytest.raises(InvalidTypeError, match="feature_mask.*Received"):
        tfattr.KernelShap(model, feature_mask=np.zeros((4, 4), np.float32))
    with pytest.raises(InvalidInputError, match="feature_mask.*Received: feature_mask.shape=\\(3, 3\\)"):
        tfattr.KernelShap(model, feature_mask=np.zeros((3, 3), int)).attribute(x)
    with pytest.raises(InvalidInputError, match="1 or 2 masks"):
        tfattr.KernelShap(model, feature_mask=np.zeros((3, 4, 4, 2), int)).attribute(x)
    with pytest.raises(InvalidInputError, match="at most 4096"):
        tfattr.KernelShap(_model_any_size()).attribute(np.zeros((1, 64, 64, 2), np.float32), target=0)


def _model_any_size():
    inputs = keras.Input((None, None, 2))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(inputs)))


def _additive_with_interaction(c=0.8):
    """``f(x) = w·x + β + c x₀ x₁`` on 6 columns (float64): Shapley values from a zero baseline are
    ``w_i x_i``, plus ``c x₀ x₁ / 2`` for columns 0 and 1."""
    inputs = keras.Input((6,), dtype="float64")
    dense = keras.layers.Dense(1, dtype="float64")
    pair = keras.layers.Lambda(lambda t: c * t[:, :1] * t[:, 1:2], dtype="float64")(inputs)
    model = keras.Model(inputs, keras.layers.Add(dtype="float64")([dense(inputs), pair]))
    w = np.array([0.5, -1.0, 2.0, 0.3, -0.7, 1.1])
    dense.set_weights([w[:, None], np.array([0.25])])
    return model, w


def test_additive_model_with_one_interaction_exact_values_and_the_sampling_estimators_error():
    model, w = _additive_with_interaction()
    x = np.array([[0.9, -1.2, 0.4, 2.0, -0.3, 0.6], [1.5, 0.8, -0.2, 0.1, 0.7, -1.0]])
    exact = w * x
    exact[:, :2] += 0.8 * x[:, :1] * x[:, 1:2] / 2
    ks = tfattr.KernelShap(model, n_samples=62).attribute(x, target=0)
    np.testing.assert_allclose(np.stack(ks.info["group_attributions"]), exact, atol=1e-12)
    for samples in (7, 100):
        svs = tfattr.ShapleyValueSampling(model, n_samples=samples, seed=3).attribute(x, target=0)
        found = np.stack(svs.info["group_attributions"])
        # columns 2…5 add the same amount in every order: exact for any sample
        np.testing.assert_allclose(found[:, 2:], exact[:, 2:], atol=1e-12)
        # column 0 gains the interaction when column 1 came first: the estimator is exactly that share
        ranks = np.argsort(svs.info["permutations"][6], axis=1)
        share = np.mean(ranks[:, 1] < ranks[:, 0])
        np.testing.assert_allclose(found[:, 0], w[0] * x[:, 0] + 0.8 * x[:, 0] * x[:, 1] * share, atol=1e-12)
        # Hoeffding: the marginal gains of column 0 span |c x0 x1|; with probability 1 − 1e-6 the error
        # is below |c x0 x1| √(ln(2/1e-6) / 2P) (the draws are fixed by the seed: this holds on any CPU)
        bound = np.abs(0.8 * x[:, 0] * x[:, 1]) * np.sqrt(np.log(2 / 1e-6) / (2 * samples))
        assert np.all(np.abs(found[:, 0] - exact[:, 0]) <= bound)


def test_token_ids_are_replaced_by_the_baseline_token_never_interpolated():
    """A text model on integer token ids: each token is a group; a coalition puts token 0 where a
    token is off. Exact KernelSHAP equals the brute-force Shapley values on the token arrays."""
    keras.utils.set_random_seed(5)
    tokens = keras.Input((6,), dtype="int32")
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(tokens))
    model = keras.Model(tokens, keras.layers.Dense(2)(keras.layers.Dense(4, activation="tanh")(h)))
    ids = np.array([[3, 7, 1, 12, 5, 9], [4, 4, 18, 2, 11, 6]], np.int32)
    found = tfattr.KernelShap(model, n_samples=62).attribute(ids, target=1)
    assert found.info["exact"].all() and np.asarray(found.attributions).shape == (2, 6)
    subsets = np.array(list(itertools.product([0, 1], repeat=6)), bool)
    for e in range(2):
        value = np.asarray(model(np.where(subsets, ids[e], 0).astype(np.int32)), np.float64)[:, 1]
        table = dict(zip(map(tuple, subsets.astype(int)), value))
        phi = np.zeros(6)
        for s, v in table.items():
            for i in np.flatnonzero(np.array(s) == 0):
                size = sum(s)
                with_i = tuple(1 if j == i else s[j] for j in range(6))
                phi[i] += math.factorial(size) * math.factorial(5 - size) / math.factorial(6) * (table[with_i] - v)
        _close(found.info["group_attributions"][e], phi)
        _close(np.asarray(found.attributions)[e], phi)
