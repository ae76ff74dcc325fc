"""Perturbation methods on forward rows: Occlusion, FeatureAblation, RISE.

References: captum's Occlusion / FeatureAblation algorithms re-implemented in NumPy (window
enumeration, shift counts ⌈(n − k)/s⌉ + 1, division by the covering count), exact values on
linear models, and for RISE the analytic expectation of its Monte-Carlo estimator and the
authors' mask construction (skimage's bilinear resize, random crop).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfattr
from tfattr.errors import TfattrError
from tfattr.methods.perturbation import occlusion_windows, rise_mask_tables, rise_masks


def _cnn(shape=(9, 11, 2), classes=4, dtype="float64", seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape, dtype=dtype)
    h = keras.layers.Conv2D(3, 3, activation="relu", bias_initializer="random_normal", dtype=dtype)(inputs)
    h = keras.layers.Flatten(dtype=dtype)(h)
    out = keras.layers.Dense(classes, bias_initializer="random_normal", dtype=dtype)(h)
    return keras.Model(inputs, out)


def _linear(shape, classes=3, seed=0):
    """``f(x) = x·M + b`` in float64 (NumPy reproduces it to float64 rounding)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    m, b = rng.normal(size=(size, classes)), rng.normal(size=classes)
    inputs = keras.Input(shape, dtype="float64")
    dense = keras.layers.Dense(classes, dtype="float64")
    model = keras.Model(inputs, dense(keras.layers.Reshape((-1,), dtype="float64")(inputs)))
    dense.set_weights([m, b])
    return model, m, b


def _captum_occlusion(model, x, window, strides, baseline, target):
    """captum's Occlusion in NumPy: feature ``k`` is the window at ``(k mod c_0)·s_0, …`` (first axis
    fastest, captum's ``_occlusion_mask``), padded/cut to the input; ``Σ (f(x) − f(x_k))·mask_k``
    divided by ``Σ mask_k``."""
    shape = x.shape[1:]
    counts = [int(np.ceil((n - k) / s)) + 1 for n, k, s in zip(shape, window, strides)]
    fx = np.asarray(model(x))[np.arange(len(x)), target]
    total, weights = np.zeros(x.shape), np.zeros(shape)
    for feature in range(int(np.prod(counts))):
        remaining, index = feature, []
        for c, s in zip(counts, strides):
            index.append((remaining % c) * s)
            remaining //= c
        mask = np.zeros(shape)
        mask[tuple(slice(i, i + k) for i, k in zip(index, window))] = 1
        occluded = x * (1 - mask) + baseline * mask
        drop = fx - np.asarray(model(occluded))[np.arange(len(x)), target]
        total += drop.reshape(-1, *([1] * len(shape))) * mask
        weights += mask
    return total / weights


# -- Occlusion ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("window, strides, baseline", [
    ((4, 3), (3, 2), 0.0),  # windows over every channel, overlapping, not dividing 9 × 11
    ((2, 3, 1), (1, 2, 1), np.array([0.5, -1.0])),  # one channel at a time, a per-channel baseline
])
def test_occlusion_equals_captums_algorithm_on_a_cnn(window, strides, baseline):
    model = _cnn()
    x = np.random.default_rng(0).normal(size=(2, 9, 11, 2))
    targets = np.array([1, 3])
    found = tfattr.Occlusion(model, window=window, strides=strides, baseline=baseline, batch_size=16).attribute(
        x, target=targets)
    full = tuple(window) + (2,) * (3 - len(window))
    steps = tuple(strides) + (1,) * (3 - len(strides))
    expected = _captum_occlusion(model, x, full, steps, baseline, targets)
    np.testing.assert_allclose(found.attributions, expected, rtol=1e-9, atol=1e-12)
    counts = occlusion_windows((9, 11, 2), window, strides)[2]
    assert found.info["windows"] == int(np.prod(counts))


def test_occlusion_with_one_value_windows_is_the_linear_models_terms_exactly():
    """``f = w·x + b``: occluding value ``i`` to the baseline drops the score by ``w_i (x_i − b_i)``."""
    model, m, b = _linear((5, 4, 3))
    x = np.random.default_rng(1).normal(size=(3, 5, 4, 3))
    baseline = np.random.default_rng(2).normal(size=(5, 4, 3))
    targets = np.array([0, 2, 1])
    found = tfattr.Occlusion(model, window=(1, 1, 1), strides=1, baseline=baseline, batch_size=32).attribute(
        x, target=targets)
    w = m[:, targets].T.reshape(3, 5, 4, 3)
    np.testing.assert_allclose(found.attributions, w * (x - baseline), rtol=0, atol=1e-12)
    # a tabular model, window 1 along the one axis
    table, mt, _ = _linear((6,), classes=2, seed=3)
    rows = np.random.default_rng(4).normal(size=(4, 6))
    found = tfattr.Occlusion(table, window=1, strides=1, batch_size=5).attribute(rows, target=1)
    np.testing.assert_allclose(found.attributions, mt[:, 1] * rows, rtol=0, atol=1e-12)


def test_occlusion_does_not_depend_on_the_chunk_size_and_counts_its_model_calls():
    model = _cnn(dtype="float32")
    x = np.random.default_rng(5).uniform(size=(3, 9, 11, 2)).astype("float32")
    maps = {}
    for batch_size in (1, 3, 64):
        found = tfattr.Occlusion(model, window=(3, 3), strides=(2, 2), batch_size=batch_size).attribute(x)
        windows = found.info["windows"]
        assert windows == 4 * 5
        assert found.info["forward_passes"] == math.ceil(3 * windows / batch_size) + math.ceil(3 / batch_size)
        maps[batch_size] = found.attributions
    # float32 scores: the chunk's composition changes the last bits of a batched pass; each
    # attribution is a difference of two scores |f| ≲ 10, so 1e-5 bounds a few float32 ulps of f
    scale = np.abs(np.asarray(model(x))).max()
    for batch_size in (3, 64):
        np.testing.assert_allclose(maps[batch_size], maps[1], rtol=0, atol=1e-6 * scale)


class _Counter(keras.layers.Layer):
    """Identity that counts the model's calls and the rows it scored."""

    def build(self, shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32", name="calls")
        self.rows = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32", name="rows")

    def call(self, x):
        self.calls.assign_add(1.0)
        self.rows.assign_add(tf.cast(tf.shape(x)[0], "float32"))
        return x


def test_occlusion_calls_the_model_once_per_chunk_and_scores_each_window_once():
    counter = _Counter()
    inputs = keras.Input((8, 8, 1))
    h = counter(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    x = np.random.default_rng(6).uniform(size=(2, 8, 8, 1)).astype("float32")
    counter.calls.assign(0.0)
    counter.rows.assign(0.0)
    found = tfattr.Occlusion(model, window=(4, 4), strides=(2, 2), batch_size=10).attribute(x, target=0)
    windows = 3 * 3
    assert found.info["forward_passes"] == math.ceil(2 * windows / 10) + 1
    assert float(counter.calls.numpy()) == found.info["forward_passes"]
    assert float(counter.rows.numpy()) == 2 * windows + 2  # every window once, f(x) once


def test_occlusion_refuses_windows_that_do_not_fit():
    model = _cnn()
    x = np.zeros((1, 9, 11, 2))
    with pytest.raises(TfattrError, match="window"):
        tfattr.Occlusion(model, window=(10, 3)).attribute(x, target=0)
    with pytest.raises(TfattrError, match="window"):
        tfattr.Occlusion(model, window=(1, 1, 1, 1)).attribute(x, target=0)
    with pytest.raises(TfattrError, match="strides"):
        tfattr.Occlusion(model, window=(2, 2), strides=(3, 1)).attribute(x, target=0)
    with pytest.raises(TfattrError, match="baseline"):
        tfattr.Occlusion(model, window=(2, 2), strides=1, baseline=np.zeros(3)).attribute(x, target=0)


# -- FeatureAblation ---------------------------------------------------------------------------------

def test_feature_ablation_of_a_linear_model_gives_each_group_its_terms():
    """``f = w·x + b``: ablating group ``g`` drops the score by ``Σ_{j ∈ g} w_j (x_j − b_j)``,
    given to every feature of ``g``; 2×2 superpixels shared across channels (mask ``(H, W, 1)``)."""
    model, m, b = _linear((4, 6, 2))
    x = np.random.default_rng(7).normal(size=(2, 4, 6, 2))
    baseline = 0.25
    superpixels = (np.arange(4)[:, None] // 2 * 3 + np.arange(6)[None, :] // 2)[..., None]  # 6 groups
    found = tfattr.FeatureAblation(model, feature_mask=superpixels, baseline=baseline, batch_size=5).attribute(
        x, target=[2, 0])
    terms = m[:, [2, 0]].T.reshape(2, 4, 6, 2) * (x - baseline)
    expected = np.zeros_like(x)
    for g in range(6):
        inside = np.broadcast_to(superpixels == g, x.shape[1:])
        expected[:, inside] = terms[:, inside].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(found.attributions, expected, rtol=0, atol=1e-12)
    assert list(found.info["groups"]) == [6, 6] and found.info["rows"] == 12


def _interaction_model():
    """``f(x) = x0·x1 + x2 − x3`` on tabular rows (one output)."""
    inputs = keras.Input((4,), dtype="float64")
    out = keras.layers.Lambda(lambda t: t[:, 0:1] * t[:, 1:2] + t[:, 2:3] - t[:, 3:4], dtype="float64")(inputs)
    return keras.Model(inputs, out)


def test_feature_ablation_groups_on_a_model_with_a_known_interaction():
    """Grouping the interacting pair gives the pair ``x0 x1`` (once); ablating them apart gives
    each ``x0 x1`` (the interaction counted twice), as captum does; per-example masks too."""
    model = _interaction_model()
    x = np.array([[2.0, 3.0, 5.0, 7.0], [-1.0, 4.0, 0.5, 2.0]])
    pair = tfattr.FeatureAblation(model, feature_mask=np.array([0, 0, 1, 2])).attribute(x, target=0)
    np.testing.assert_allclose(pair.attributions, [[6, 6, 5, -7], [-4, -4, 0.5, -2]], atol=1e-12)
    alone = tfattr.FeatureAblation(model).attribute(x, target=0)  # default: every column its own group
    np.testing.assert_allclose(alone.attributions, [[6, 6, 5, -7], [-4, -4, 0.5, -2]], atol=1e-12)
    assert list(alone.info["groups"]) == [4, 4]
    # one mask per example: example 0 groups (x2, x3), example 1 groups everything
    masks = np.array([[0, 1, 2, 2], [5, 5, 5, 5]])
    mixed = tfattr.FeatureAblation(model, feature_mask=masks, baseline=1.0).attribute(x, target=0)
    f = lambda v: v[0] * v[1] + v[2] - v[3]  # noqa: E731
    e0 = [f(x[0]) - f([1.0, 3.0, 5.0, 7.0]), f(x[0]) - f([2.0, 1.0, 5.0, 7.0])]
    e0 += [f(x[0]) - f([2.0, 3.0, 1.0, 1.0])] * 2
    np.testing.assert_allclose(mixed.attributions, [e0, [f(x[1]) - f([1.0] * 4)] * 4], atol=1e-12)
    assert list(mixed.info["groups"]) == [3, 1] and mixed.info["rows"] == 4


def test_feature_ablation_does_not_depend_on_the_chunk_size():
    model = _cnn(dtype="float32")
    x = np.random.default_rng(8).uniform(size=(3, 9, 11, 2)).astype("float32")
    mask = (np.arange(9)[:, None] // 3 * 4 + np.arange(11)[None, :] // 3)[..., None]  # 12 superpixels
    maps = {}
    for batch_size in (1, 3, 64):
        found = tfattr.FeatureAblation(model, feature_mask=mask, batch_size=batch_size).attribute(x)
        assert found.info["forward_passes"] == math.ceil(3 * 12 / batch_size) + math.ceil(3 / batch_size)
        maps[batch_size] = found.attributions
    scale = np.abs(np.asarray(model(x))).max()  # float32 rounding of a batched pass, as for occlusion
    for batch_size in (3, 64):
        np.testing.assert_allclose(maps[batch_size], maps[1], rtol=0, atol=1e-6 * scale)


def test_feature_ablation_of_several_inputs_takes_a_mask_and_a_baseline_per_input():
    """A table ``(N, 3)`` and a series ``(N, 4, 2)`` into one linear unit; group 0 spans both
    inputs (the table's first column and the series' first step), the other ids stay in one input."""
    a, s = keras.Input((3,), name="table", dtype="float64"), keras.Input((4, 2), name="series", dtype="float64")
    dense = keras.layers.Dense(1, dtype="float64")
    joined = keras.layers.Concatenate(dtype="float64")([a, keras.layers.Flatten(dtype="float64")(s)])
    model = keras.Model([a, s], dense(joined))
    w = np.random.default_rng(9).normal(size=(11, 1))
    dense.set_weights([w, np.array([0.3])])
    rng = np.random.default_rng(10)
    x = [rng.normal(size=(2, 3)), rng.normal(size=(2, 4, 2))]
    masks = {"table": np.array([0, 1, 2]), "series": np.array([0, 3, 3, 4])[:, None]}
    baselines = [1.0, np.full((4, 2), -0.5)]
    found = tfattr.FeatureAblation(model, feature_mask=masks, baseline=baselines).attribute(x, target=0)
    terms = np.concatenate([(x[0] - 1.0), (x[1] + 0.5).reshape(2, 8)], axis=1) * w[:, 0]
    ids = np.concatenate([masks["table"], np.repeat(masks["series"][:, 0], 2)])
    expected = np.stack([[terms[e, ids == ids[i]].sum() for i in range(11)] for e in range(2)])
    np.testing.assert_allclose(found.attributions[0], expected[:, :3], atol=1e-12)
    np.testing.assert_allclose(found.attributions[1], expected[:, 3:].reshape(2, 4, 2), atol=1e-12)
    assert list(found.info["groups"]) == [5, 5]
    # a fixed input is never ablated: attribution 0, its groups run no row
    fixed = tfattr.FeatureAblation(model, fixed_inputs="series").attribute(x, target=0)
    np.testing.assert_allclose(fixed.attributions[0], x[0] * w[:3, 0], atol=1e-12)
    assert np.all(fixed.attributions[1] == 0) and list(fixed.info["groups"]) == [3, 3]


def test_feature_ablation_refuses_masks_that_do_not_fit():
    model = _interaction_model()
    x = np.ones((2, 4))
    with pytest.raises(TfattrError, match="feature_mask"):
        tfattr.FeatureAblation(model, feature_mask=np.array([0, 1, 2])).attribute(x, target=0)
    with pytest.raises(TfattrError, match="feature_mask"):
        tfattr.FeatureAblation(model, feature_mask=np.array([0.0, 1.0, 2.0, 3.0])).attribute(x, target=0)


# -- RISE ---------------------------------------------------------------------------------------------

def test_rise_masks_are_the_authors_upsampled_and_shifted_grids():
    """Each mask is the ``grid × grid`` cells (kept where the row's draw is below ``p``) resized with
    ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)`` to ``(grid + 1)``
    cells of ``⌈H/grid⌉`` pixels and cropped at the row's shift (the RISE authors' code)."""
    from skimage.transform import resize

    from tfattr.core.random import row_uniform

    height, width, grid, p, seed = 20, 17, 4, 0.4, 11
    masks = rise_masks(seed, np.arange(12), height, width, grid, p)
    draws = row_uniform(seed, tf.range(12), (grid * grid + 2,), dtype=tf.float64).numpy()
    cell_h, cell_w = -(-height // grid), -(-width // grid)
    for r in range(12):
        cells = (draws[r, : grid * grid] < p).reshape(grid, grid).astype(np.float64)
        up = resize(cells, ((grid + 1) * cell_h, (grid + 1) * cell_w), order=1, mode="reflect", anti_aliasing=False)
        sy, sx = int(draws[r, -2] * cell_h), int(draws[r, -1] * cell_w)
        np.testing.assert_allclose(masks[r], up[sy: sy + height, sx: sx + width], atol=1e-12)
    vertical, horizontal = rise_mask_tables(height, width, grid)
    assert vertical.shape == (cell_h, height, grid) and horizontal.shape == (cell_w, width, grid)


def _region_model(shape, region, bias=0.5):
    """``f(x) = Σ_{i ∈ S} x_i + bias``: a linear "sum over a region" model (float64)."""
    weights = np.zeros(shape)
    weights[region] = 1.0
    inputs = keras.Input(shape, dtype="float64")
    dense = keras.layers.Dense(1, dtype="float64")
    model = keras.Model(inputs, dense(keras.layers.Reshape((-1,), dtype="float64")(inputs)))
    dense.set_weights([weights.reshape(-1, 1), np.array([bias])])
    return model, weights


def test_rise_is_an_unbiased_estimate_of_its_expectation_on_a_region_sum():
    """For ``f(x) = Σ_{i∈S} x_i + c`` and masks ``m = A G Bᵀ`` (cells ``G`` i.i.d. Bernoulli(p), shifts
    uniform), ``E[f(x ⊙ m) m_j]/p = Σ_{i∈S} x_i (p + (1 − p) E[(A Aᵀ)_{h h'}] E[(B Bᵀ)_{w w'}]) + c``.
    The map (a mean of ``n_masks`` i.i.d. terms) is within 4.5 standard errors of it at every
    pixel (a deterministic check for the fixed seed; a false alarm has probability < 1e-3)."""
    height, width, grid, p, n_masks = 8, 8, 3, 0.5, 2000
    region = (slice(0, 4), slice(0, 4), slice(None))
    model, weights = _region_model((height, width, 1), region)
    x = np.random.default_rng(12).uniform(0.5, 1.5, size=(1, height, width, 1))
    found = tfattr.RISE(model, n_masks=n_masks, grid=grid, p=p, seed=3, batch_size=256).attribute(x, target=0)
    vertical, horizontal = rise_mask_tables(height, width, grid)
    rows = np.einsum("shi,sgi->hg", vertical, vertical) / len(vertical)
    cols = np.einsum("swi,svi->wv", horizontal, horizontal) / len(horizontal)
    terms = (x[0, ..., 0] * weights[..., 0])
    second = p * p + p * (1 - p) * np.einsum("hg,wv->hwgv", rows, cols)  # E[m_(h,w) m_(g,v)]
    expected = np.einsum("hw,hwgv->gv", terms, second) / p + 0.5
    # the same estimate from the same masks in NumPy, and its standard error
    masks = rise_masks(3, np.arange(n_masks), height, width, grid, p)
    scores = np.einsum("nhw,hw->n", masks, terms) + 0.5
    contributions = scores[:, None, None] * masks / p
    np.testing.assert_allclose(found.attributions[0], contributions.mean(axis=0), rtol=1e-10)
    error = contributions.std(axis=0, ddof=1) / np.sqrt(n_masks)
    assert np.all(np.abs(found.attributions[0] - expected) <= 4.5 * error)
    assert found.info["forward_passes"] == math.ceil(n_masks / 256) and found.info["n_masks"] == n_masks


def test_rise_is_repeatable_and_does_not_depend_on_the_chunk_size_or_the_batch():
    """Masks are keyed by (seed, mask index): any chunking gives the same masks; the float64 model's
    maps then differ only by the order of float64 sums (≤ 1e-12 relative)."""
    model, _, _ = _linear((6, 5, 2))
    x = np.random.default_rng(13).normal(size=(2, 6, 5, 2))
    maps = {b: tfattr.RISE(model, n_masks=40, grid=3, seed=5, batch_size=b).attribute(x, target=[0, 2]).attributions
            for b in (1, 7, 64)}
    for b in (7, 64):
        np.testing.assert_allclose(maps[b], maps[1], rtol=1e-12, atol=1e-14)
    again = tfattr.RISE(model, n_masks=40, grid=3, seed=5, batch_size=7).attribute(x, target=[0, 2]).attributions
    np.testing.assert_array_equal(again, maps[7])
    alone = tfattr.RISE(model, n_masks=40, grid=3, seed=5, batch_size=7).attribute(x[1:], target=2).attributions
    np.testing.assert_allclose(alone[0], maps[7][1], rtol=1e-12, atol=1e-14)
    other = tfattr.RISE(model, n_masks=40, grid=3, seed=6, batch_size=7).attribute(x, target=[0, 2]).attributions
    assert np.abs(other - maps[7]).max() > 1e-3


def _vm(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) * 1024


def test_rise_never_holds_every_mask():
    """20,000 masks of 64×64: all at once would be 328 MB in float32; the call's peak resident
    memory grows by far less (chunks of 100 masks, ~5 MB per tensor)."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    x = np.random.default_rng(14).uniform(size=(1, 64, 64, 3)).astype("float32")
    rise = tfattr.RISE(model, grid=8, batch_size=100)
    rise.attribute(x, target=0, n_masks=200)  # traces the chunk
    before = _vm("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:  # reset the peak (VmHWM) to the current size
        refs.write("5")
    found = rise.attribute(x, target=0, n_masks=20000)
    growth = _vm("VmHWM") - before
    assert found.info["forward_passes"] == 200
    assert growth < 100 * 2**20, growth


# -- shared: targets, outputs, one example ------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda m: tfattr.Occlusion(m, window=(2, 2), strides=1, batch_size=8),
    lambda m: tfattr.FeatureAblation(m, feature_mask=np.arange(20).reshape(4, 5, 1) // 3, batch_size=8),
    lambda m: tfattr.RISE(m, n_masks=16, grid=2, seed=1, batch_size=8),
], ids=["occlusion", "feature_ablation", "rise"])
def test_top1_output_and_callable_targets(make):
    """``target=None`` explains each example's top-1 class; ``output=`` picks a head of a model with
    two (here half the logits: half the maps); a callable target scores the outputs it is given."""
    model, m, b = _linear((4, 5, 2), classes=3, seed=15)
    x = np.random.default_rng(16).normal(size=(3, 4, 5, 2))
    top1 = (x.reshape(3, -1) @ m + b).argmax(axis=1)
    found = make(model).attribute(x)
    np.testing.assert_array_equal(found.targets, top1)
    np.testing.assert_allclose(found.attributions, make(model).attribute(x, target=top1).attributions, atol=1e-12)
    inputs = keras.Input((4, 5, 2), dtype="float64")
    both = keras.Model(inputs, {"logits": model(inputs), "half": 0.5 * model(inputs)})
    half = make(both).attribute(x, target=[0, 1, 2], output="half")
    full = make(model).attribute(x, target=[0, 1, 2])
    np.testing.assert_allclose(half.attributions, 0.5 * full.attributions, atol=1e-12)
    summed = make(model).attribute(x, target=lambda out: out[:, 0] + out[:, 1])
    parts = [make(model).attribute(x, target=c).attributions for c in (0, 1)]
    np.testing.assert_allclose(summed.attributions, parts[0] + parts[1], atol=1e-12)
    one = make(model).attribute(x[0], target=1)  # one example without a batch axis
    np.testing.assert_allclose(one.attributions, make(model).attribute(x[:1], target=1).attributions[0], atol=1e-12)


def test_feature_ablation_replaces_token_ids_by_the_baseline_token():
    """Integer inputs are replaced, never interpolated: ablating token ``t`` feeds the model the
    padding id 0 there (alone, and beside a float input)."""
    keras.utils.set_random_seed(17)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    numbers = keras.Input((2,), name="numbers")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(10, 3)(tokens))
    both = keras.Model([tokens, numbers], keras.layers.Dense(2)(keras.layers.Concatenate()([embedded, numbers])))
    alone = keras.Model(tokens, keras.layers.Dense(2)(embedded))
    ids = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 1]], np.int32)
    side = np.random.default_rng(18).normal(size=(2, 2)).astype("float32")

    def drops(model, inputs, column):
        ablated = [a.copy() for a in inputs]
        ablated[0][:, column] = 0
        call = (lambda a: model(a[0])) if len(inputs) == 1 else model
        return np.asarray(call(inputs))[:, 0] - np.asarray(call(ablated))[:, 0]

    found = tfattr.FeatureAblation(alone, baseline=0).attribute(ids, target=0)
    expected = np.stack([drops(alone, [ids], c) for c in range(5)], axis=1)
    np.testing.assert_allclose(found.attributions, expected, atol=1e-5)
    pair = tfattr.FeatureAblation(both, baseline=[0, 0.0], fixed_inputs="numbers").attribute([ids, side], target=0)
    expected = np.stack([drops(both, [ids, side], c) for c in range(5)], axis=1)
    np.testing.assert_allclose(pair.attributions[0], expected, atol=1e-5)
    assert np.all(pair.attributions[1] == 0)


def test_rise_puts_the_top_quarter_of_its_map_in_the_quadrant_the_model_sees():
    """A model that sums the top-left quadrant of a 16×16 image: ≥ 75% of RISE's top quarter of
    pixels lies in that quadrant (92–98% over seeds 0–3 with 500–2000 masks)."""
    model, weights = _region_model((16, 16, 1), (slice(0, 8), slice(0, 8), slice(None)))
    x = np.random.default_rng(0).uniform(0.5, 1.5, size=(1, 16, 16, 1))
    saliency = tfattr.RISE(model, n_masks=1000, grid=4, seed=0, batch_size=256).attribute(x, target=0).attributions
    top = np.argsort(saliency[0].ravel())[-64:]
    assert weights[..., 0].ravel()[top].mean() >= 0.75


def test_occlusion_and_rise_send_models_with_several_inputs_to_feature_ablation():
    a, s = keras.Input((3,), name="a"), keras.Input((4,), name="s")
    model = keras.Model([a, s], keras.layers.Dense(2)(keras.layers.Concatenate()([a, s])))
    x = [np.zeros((1, 3), "float32"), np.zeros((1, 4), "float32")]
    for method in (tfattr.Occlusion(model, window=1, strides=1), tfattr.RISE(model)):
        with pytest.raises(TfattrError, match="FeatureAblation"):
            method.attribute(x, target=0)


def test_baseline_per_example_error_names_the_broadcastable_form():
    # a (N,) baseline is per last axis (numpy's broadcasting): when N ≠ C it is refused with the
    # per-example form to pass instead, (N, 1, 1, 1), which gives each example its own value
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.Dense(2, bias_initializer="ones")(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(0).uniform(size=(3, 4, 4, 2)).astype(np.float32)
    with pytest.raises(TfattrError, match=r"one value per example as \(N, 1, 1, 1\)"):
        tfattr.Occlusion(model, window=(2, 2), strides=2, baseline=np.array([0.0, 0.5, 1.0])).attribute(x, target=1)
    per_example = tfattr.Occlusion(model, window=(4, 4), strides=4,
                                   baseline=np.array([0.0, 0.5, 1.0]).reshape(3, 1, 1, 1)).attribute(x, target=1)
    fx = np.asarray(model(x))[:, 1]
    fb = np.asarray(model(np.broadcast_to(np.array([0.0, 0.5, 1.0]).reshape(3, 1, 1, 1), x.shape)))[:, 1]
    np.testing.assert_allclose(np.asarray(per_example.attributions)[:, 0, 0, 0], fx - fb, rtol=1e-5, atol=1e-6)


def test_occlusion_of_an_integer_input_model_refuses_fractional_values():
    """A tabular model taking int32 ids: integral floats are occluded as ids (one-value windows
    give ``w_j (x_j − 0)`` exactly), but 1.7 was silently truncated to 1 before being occluded."""
    inputs = keras.Input((3,), dtype="int32")
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(keras.layers.Lambda(lambda t: tf.cast(t, "float32"))(inputs)))
    w = np.array([0.5, 2.0, -1.0], np.float32)
    dense.set_weights([w[:, None], np.array([0.25], np.float32)])
    ids = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]], np.float32)
    found = tfattr.Occlusion(model, window=(1,), strides=(1,)).attribute(ids, target=0)
    np.testing.assert_allclose(found.attributions, ids * w, rtol=1e-6)
    with pytest.raises(TfattrError, match=r"non-integral.*Received: inputs\[\(0, 0\)\]=1.7"):
        tfattr.Occlusion(model, window=(1,), strides=(1,)).attribute(
            ids + np.array([[0.7, 0, 0], [0, 0, 0]], np.float32), target=0)
