"""SobolAttribution (Fel et al. 2021, as xplique) and FeaturePermutation (captum) on forward rows.

References: xplique's replicated design, nearest upsampling, perturbations and Jansen estimator
re-implemented here from its code (``global_sensitivity_analysis``: ``build_replicated_design``,
``tf.image.resize(..., "nearest")``, ``inpainting``/``blurring`` (``cv2.blur``)/``amplitude``,
``JansenEstimator`` in float32 with the 1e-12 variance floor), analytic total-order indices of an
additive model, and ``w_j (x_j − x_π(j))`` for permutation importance of a linear model.
"""

import math

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfattr
from tfattr.errors import TfattrError
from tfattr.methods.sobol import jansen_total_order, nearest_indices, sobol_design


class _Counter(keras.layers.Layer):
    """Identity that counts the model's calls and the rows it scored."""

    def build(self, shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32", name="calls")
        self.rows = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32", name="rows")

    def call(self, x):
        self.calls.assign_add(1.0)
        self.rows.assign_add(tf.cast(tf.shape(x)[0], "float32"))
        return x


def _quadrant_model(size=12, seed=0):
    """A float64 non-linear model of the top-left quadrant only (the rest multiplied by 0 first)."""
    keras.utils.set_random_seed(seed)
    seen = np.zeros((size, size, 1))
    seen[: size // 2, : size // 2] = 1.0
    inputs = keras.Input((size, size, 1), dtype="float64")
    h = keras.layers.Lambda(lambda t: t * seen, dtype="float64")(inputs)
    h = keras.layers.Conv2D(3, 3, activation="tanh", bias_initializer="random_normal", dtype="float64")(h)
    h = keras.layers.Flatten(dtype="float64")(h)
    out = keras.layers.Dense(2, bias_initializer="random_normal", dtype="float64")(h)
    return keras.Model(inputs, out)


def _cnn(shape=(8, 8, 2), classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape, dtype="float64")
    h = keras.layers.Conv2D(3, 3, activation="relu", bias_initializer="random_normal", dtype="float64")(inputs)
    h = keras.layers.Flatten(dtype="float64")(h)
    out = keras.layers.Dense(classes, bias_initializer="random_normal", dtype="float64")(h)
    return keras.Model(inputs, out)


# -- Sobol -----------------------------------------------------------------------------------------------

def test_sobol_total_indices_are_zero_on_the_cells_the_model_does_not_see():
    """``C_i`` differs from ``A`` in cell ``i`` only: for a cell outside the quadrant the model's
    input is the same, so every term ``(f(A_k) − f(C_{i,k}))²`` is 0 (float64 model: ≤ 1e-20
    from the batched passes' rounding); inside, the indices are positive."""
    model = _quadrant_model()
    x = np.random.default_rng(0).uniform(0.5, 1.5, size=(2, 12, 12, 1))
    found = tfattr.SobolAttribution(model, grid=4, n_designs=16, seed=1, batch_size=50).attribute(x, target=[0, 1])
    indices = found.info["total_indices"]
    inside = np.zeros((4, 4), bool)
    inside[:2, :2] = True
    assert np.all(np.abs(indices[:, ~inside]) <= 1e-12)
    assert np.all(indices[:, inside] > 1e-3)


def _additive_model():
    """``f(z) = Σ_p w_p z_p + (Σ_{p ∈ cell 0} v z_p)² + 0.7`` on 4×4 images, float64."""
    rng = np.random.default_rng(0)
    cell = np.zeros((4, 4), int)
    cell[:2, 2:], cell[2:, :2], cell[2:, 2:] = 1, 2, 3
    cell = cell.ravel()
    inputs = keras.Input((4, 4, 1), dtype="float64")
    flat = keras.layers.Flatten(dtype="float64")(inputs)
    linear = keras.layers.Dense(1, dtype="float64")
    quadratic = keras.layers.Dense(1, use_bias=False, dtype="float64")
    square = keras.layers.Lambda(lambda t: t * t, dtype="float64")
    model = keras.Model(inputs, keras.layers.Add(dtype="float64")([linear(flat), square(quadratic(flat))]))
    w = rng.uniform(0.5, 1.5, size=16) * np.array([1.0, 0.5, 0.9, 0.7])[cell]
    v = np.where(cell == 0, 0.5, 0.0)
    linear.set_weights([w[:, None], np.array([0.7])])
    quadratic.set_weights([v[:, None]])
    return model, w, v, cell


def test_sobol_total_indices_of_an_additive_model_match_the_analytic_values():
    """Inpainting with baseline 0 makes pixel ``p`` ``x_p M_{cell(p)}``, ``M_i ~ U[0, 1]`` i.i.d.:
    ``f = Σ_i c_i M_i + q M_0² + 0.7`` with ``c_i = Σ_{p∈i} w_p x_p``, ``q = (Σ_{p∈0} v x_p)²``.
    Additive, so ``S_Ti = V_i / Σ V``: ``V_i = c_i²/12``, ``V_0 = c_0²/12 + q²·4/45 + 2 c_0 q/12``
    (``Var M² = 1/5 − 1/9``, ``Cov(M, M²) = 1/4 − 1/6``). With 256 scrambled-Sobol designs the
    estimate is within 0.02 (the largest error over seeds 0–9 is 0.0045; 64 designs: 0.033)."""
    model, w, v, cell = _additive_model()
    x = np.random.default_rng(1).uniform(0.5, 1.5, size=(1, 4, 4, 1))
    flat = x.ravel()
    c = np.array([np.sum(w[cell == i] * flat[cell == i]) for i in range(4)])
    q = np.sum(v * flat) ** 2
    variances = c ** 2 / 12
    variances[0] += q * q * 4 / 45 + 2 * c[0] * q / 12
    expected = variances / variances.sum()
    found = tfattr.SobolAttribution(model, grid=2, n_designs=256, seed=0, batch_size=512).attribute(x, target=0)
    np.testing.assert_allclose(found.info["total_indices"][0].ravel(), expected, rtol=0, atol=0.02)


def _xplique_replicated_design(a, b):
    """xplique's ``ReplicatedSampler.build_replicated_design`` (einops repeat + diagonal swap) in NumPy."""
    d = a.shape[-1]
    rep_a = np.repeat(a[None], d, axis=0)  # "b d -> i b d"
    rep_b = np.repeat(b[None], d, axis=0)
    diag = np.broadcast_to(np.eye(d, dtype=a.dtype)[:, None, :], rep_a.shape)
    return (rep_a * (1 - diag) + rep_b * diag).reshape(-1, d)  # "i b d -> (i b) d"


def _xplique_jansen(outputs, n):
    """xplique's ``JansenEstimator.__call__`` (float32, unbiased variance of f(A) floored at 1e-12)."""
    outputs = np.asarray(outputs, np.float32)
    a, c = outputs[:n], outputs[2 * n:].reshape(-1, n)
    mean = a.mean()
    var_a = max(np.sum((a - mean) ** 2) / max(n - 1.0, 1.0), np.float32(1e-12))
    return np.sum((a[None, :] - c) ** 2, axis=-1) / (2.0 * n * var_a)


@pytest.mark.parametrize("perturbation, sigma", [("inpainting", None), ("blur", 3), ("amplitude", 0.8)])
def test_sobol_equals_xpliques_pipeline_on_the_same_design(perturbation, sigma):
    """Same A, B (the scrambled design of the seed): xplique's masks (replicated design, nearest
    upsampling), perturbation (inpainting ``x·M``, blurring ``x·M + (1 − M)·cv2.blur(x, (σ, σ))``,
    amplitude ``x·(M − ½)·σ``), model scores and Jansen estimator (float32), and its bicubic
    upsampling: the indices agree to float32 rounding (rtol 1e-4), the maps to 1e-4·max."""
    grid, n, seed = 3, 8, 4
    model = _cnn((9, 10, 2))
    x = np.random.default_rng(2).uniform(0.2, 1.0, size=(2, 9, 10, 2))
    found = tfattr.SobolAttribution(model, grid=grid, n_designs=n, perturbation=perturbation, sigma=sigma, seed=seed,
                                    batch_size=40).attribute(x, target=[1, 2])
    a, b = sobol_design(grid * grid, n, seed)
    design = np.concatenate([a, b, _xplique_replicated_design(a, b)]).reshape(-1, grid, grid, 1)
    masks = tf.image.resize(design, (9, 10), method="nearest").numpy()
    assert found.info["rows"] == 2 * n * (grid * grid + 2)
    for e, target in enumerate([1, 2]):
        image = x[e]
        if perturbation == "inpainting":
            points = image[None] * masks
        elif perturbation == "blur":
            blurred = cv2.blur(np.array(image, copy=True), (sigma, sigma))
            points = image[None] * masks + (1 - masks) * blurred[None]
        else:
            points = image[None] * (masks - 0.5) * sigma
        outputs = np.asarray(model(points))[:, target]
        indices = _xplique_jansen(outputs, n)
        np.testing.assert_allclose(found.info["total_indices"][e].ravel(), indices, rtol=1e-4, atol=1e-7)
        heatmap = tf.image.resize(indices.reshape(1, grid, grid, 1), (9, 10), method="bicubic").numpy()[0, ..., 0]
        np.testing.assert_allclose(found.attributions[e], heatmap, rtol=0, atol=1e-4 * np.abs(heatmap).max())


def test_sobol_nearest_upsampling_is_tensorflows_and_the_estimator_is_jansens():
    for cells, size in [(3, 8), (3, 7), (8, 224), (7, 10)]:
        grid = np.arange(cells, dtype=np.float32).reshape(1, cells, 1, 1)
        resized = tf.image.resize(grid, (size, 1), method="nearest").numpy().ravel()
        np.testing.assert_array_equal(nearest_indices(cells, size), resized.astype(int))
    # hand computation: A scores (1, 3), C_0 (1, 3) → 0; C_1 (3, 3) → (4 + 0)/(2·2·2) = 0.5
    scores = np.array([1.0, 3.0, 0.0, 0.0, 1.0, 3.0, 3.0, 3.0])
    np.testing.assert_allclose(jansen_total_order(scores, 2), [0.0, 0.5])


def test_sobol_is_repeatable_batch_size_invariant_and_counts_its_model_calls():
    """Same seed, any chunking: the same indices (float64 model, rows keyed by position: ≤ 1e-12);
    another seed another design; model calls = ⌈N·n·(grid² + 2) / batch_size⌉ (no f(x) needed)."""
    counter = _Counter()
    inputs = keras.Input((6, 6, 1), dtype="float64")
    h = keras.layers.Flatten(dtype="float64")(counter(inputs))
    h = keras.layers.Dense(4, activation="tanh", bias_initializer="random_normal", dtype="float64")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, dtype="float64")(h))
    x = np.random.default_rng(3).uniform(size=(3, 6, 6, 1))
    results = {}
    for batch_size in (7, 64, 1000):
        counter.calls.assign(0.0)
        counter.rows.assign(0.0)
        found = tfattr.SobolAttribution(model, grid=2, n_designs=8, seed=2, batch_size=batch_size).attribute(
            x, target=[0, 1, 0])
        rows = 3 * 8 * (4 + 2)
        assert found.info["forward_passes"] == math.ceil(rows / batch_size)
        assert float(counter.calls.numpy()) == found.info["forward_passes"]
        assert float(counter.rows.numpy()) == rows
        results[batch_size] = found.info["total_indices"]
    for batch_size in (64, 1000):
        np.testing.assert_allclose(results[batch_size], results[7], rtol=1e-12, atol=1e-14)
    again = tfattr.SobolAttribution(model, grid=2, n_designs=8, seed=2).attribute(x, target=[0, 1, 0])
    np.testing.assert_allclose(again.info["total_indices"], results[7], rtol=1e-12, atol=1e-14)
    other = tfattr.SobolAttribution(model, grid=2, n_designs=8, seed=3).attribute(x, target=[0, 1, 0])
    assert np.abs(other.info["total_indices"] - results[7]).max() > 1e-6
    # an example alone gets the same design and indices as in the batch
    alone = tfattr.SobolAttribution(model, grid=2, n_designs=8, seed=2).attribute(x[1:2], target=1)
    np.testing.assert_allclose(alone.info["total_indices"][0], results[7][1], rtol=1e-12, atol=1e-14)


def test_sobol_refuses_bad_settings():
    model = _cnn((8, 8, 2))
    x = np.zeros((1, 8, 8, 2))
    with pytest.raises(TfattrError, match=r"power of two.*Received: n_designs=12"):
        tfattr.SobolAttribution(model, n_designs=12)
    with pytest.raises(TfattrError, match=r"`grid`.*Received: grid=9"):
        tfattr.SobolAttribution(model, grid=9).attribute(x, target=0)
    with pytest.raises(TfattrError, match=r"box size.*Received: sigma=2.5"):
        tfattr.SobolAttribution(model, perturbation="blur", sigma=2.5)
    with pytest.raises(TfattrError, match=r"Received: perturbation='blurring'"):
        tfattr.SobolAttribution(model, perturbation="blurring")


# -- FeaturePermutation ----------------------------------------------------------------------------------

def _linear(features=5, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(features, classes)), rng.normal(size=classes)
    inputs = keras.Input((features,), dtype="float64")
    dense = keras.layers.Dense(classes, dtype="float64")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([w, b])
    return model, w, b


def test_feature_permutation_of_a_linear_model_is_w_times_the_permuted_difference():
    """One feature per group: ``A_{e,j} = w_j (x_{e,j} − x_{π_j(e),j})`` (float64: ≤ 1e-12); groups
    ``[0, 0, 1, 2, 2]``: every feature of a group gets ``Σ_{j∈g} w_j (x_{e,j} − x_{π_g(e),j})``."""
    model, w, _ = _linear()
    x = np.random.default_rng(1).normal(size=(7, 5))
    found = tfattr.FeaturePermutation(model, seed=3).attribute(x, target=0)
    perms = found.info["permutations"]
    assert perms.shape == (5, 7) and not any(np.array_equal(p, np.arange(7)) for p in perms)
    expected = np.stack([w[j, 0] * (x[:, j] - x[perms[j], j]) for j in range(5)], axis=1)
    np.testing.assert_allclose(found.attributions, expected, rtol=0, atol=1e-12)
    groups = np.array([0, 0, 1, 2, 2])
    grouped = tfattr.FeaturePermutation(model, feature_mask=groups, seed=3).attribute(x, target=1)
    perms = grouped.info["permutations"]
    for g in range(3):
        members = groups == g
        drop = np.sum(w[members, 1] * (x[:, members] - x[perms[g]][:, members]), axis=1)
        np.testing.assert_allclose(grouped.attributions[:, members], np.repeat(drop[:, None], members.sum(), 1),
                                   rtol=0, atol=1e-12)


def test_feature_permutation_averages_its_permutations_and_is_repeatable_and_chunk_invariant():
    """``n_permutations = 3``: the mean of three single-permutation drops (table rows ``k·G + g``);
    the same seed gives the same table and map at any chunk size; model calls ⌈rows/chunk⌉ + f(x)."""
    model, w, _ = _linear(features=4)
    x = np.random.default_rng(2).normal(size=(6, 4))
    maps = {}
    for batch_size in (5, 100):
        found = tfattr.FeaturePermutation(model, n_permutations=3, seed=9, batch_size=batch_size).attribute(x, target=1)
        rows = 6 * 4 * 3
        assert found.info["forward_passes"] == math.ceil(rows / batch_size) + math.ceil(6 / batch_size)
        maps[batch_size] = found.attributions
        perms = found.info["permutations"]
    expected = np.mean([np.stack([w[j, 1] * (x[:, j] - x[perms[k * 4 + j], j]) for j in range(4)], axis=1)
                        for k in range(3)], axis=0)
    np.testing.assert_allclose(maps[5], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(maps[100], maps[5], rtol=0, atol=1e-12)
    other = tfattr.FeaturePermutation(model, n_permutations=3, seed=10).attribute(x, target=1)
    assert np.abs(other.attributions - maps[5]).max() > 1e-6


def test_feature_permutation_calls_the_model_once_per_chunk_and_refuses_a_single_example():
    counter = _Counter()
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(counter(inputs)))
    x = np.random.default_rng(4).normal(size=(4, 3)).astype("float32")
    counter.calls.assign(0.0)
    counter.rows.assign(0.0)
    found = tfattr.FeaturePermutation(model, batch_size=5).attribute(x, target=0)
    assert found.info["forward_passes"] == math.ceil(4 * 3 / 5) + 1
    assert float(counter.calls.numpy()) == found.info["forward_passes"]
    assert float(counter.rows.numpy()) == 4 * 3 + 4  # every (example, feature) once, f(x) once
    with pytest.raises(TfattrError, match=r"at least 2 examples.*Received: inputs.shape"):
        tfattr.FeaturePermutation(model).attribute(x[:1], target=0)


# -- HSIC ------------------------------------------------------------------------------------------------

def _xplique_hsic_binary(masks, outputs):
    """xplique's ``BinaryEstimator`` (float32): binary input kernel ``1 + 0.5 − (X − X')²``, RBF output
    kernel of width the median output (``tfp.stats.percentile(Y, 50, "linear")``), ``sum(Kc ⊙ Lcᵀ)/n``."""
    x = np.asarray(masks, np.float32).T[:, None, :, None]  # "n h w c -> (h w c) n" then "d n -> d 1 n 1"
    y = np.asarray(outputs, np.float32).reshape(-1, 1)
    n = len(y)
    width = np.float32(np.percentile(y, 50.0))
    gram_l = np.exp(-((y - y.T) ** 2) / (2 * width ** 2))
    gram_k = np.prod(1 + (0.5 - (x - np.swapaxes(x, 2, 3)) ** 2), axis=1)  # (d, n, n)
    h = np.eye(n, dtype=np.float32) - np.ones((n, n), np.float32) / n
    kc = np.einsum("ijk,kl->ijl", np.einsum("jk,ikl->ijl", h, gram_k), h)
    lc = h @ gram_l @ h
    return np.sum(kc * lc.T[None], axis=(1, 2)) / n


def test_hsic_equals_xpliques_binary_estimator_and_finds_the_quadrant():
    """Same binary design (the scrambled Sobol points rounded, from the seed): xplique's masks,
    inpainting, scores and BinaryEstimator agree with HsicAttribution's to float32 rounding; on the
    quadrant model the four seen cells hold the four largest values."""
    from tfattr.methods.sobol import binary_design

    model = _quadrant_model()
    x = np.random.default_rng(5).uniform(0.5, 1.5, size=(1, 12, 12, 1))
    found = tfattr.HsicAttribution(model, grid=4, n_designs=64, seed=2, batch_size=30).attribute(x, target=0)
    assert found.info["forward_passes"] == math.ceil(64 / 30) and found.info["rows"] == 64
    design = binary_design(16, 64, 2)
    assert set(np.unique(design)) <= {0.0, 1.0}
    masks = tf.image.resize(design.reshape(-1, 4, 4, 1), (12, 12), method="nearest").numpy()
    outputs = np.asarray(model(x[0][None] * masks))[:, 0]
    expected = _xplique_hsic_binary(design, outputs)
    np.testing.assert_allclose(found.info["hsic"][0].ravel(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    inside = np.zeros((4, 4), bool)
    inside[:2, :2] = True
    top = np.argsort(found.info["hsic"][0].ravel())[-4:]
    assert set(top) == set(np.flatnonzero(inside.ravel()))


# -- audit of issue 26 (hostile inputs) -------------------------------------------------------------------

def test_sobol_refuses_a_single_design_point():
    """``n_designs=1`` is a power of two but leaves no variance of ``f(A)``: the Jansen quotient would
    divide by the 1e-12 floor and return values ~1e9 (silently)."""
    model = _cnn((8, 8, 2))
    with pytest.raises(TfattrError, match=r"`n_designs`.*Received: n_designs=1"):
        tfattr.SobolAttribution(model, n_designs=1)
    with pytest.raises(TfattrError, match=r"`n_designs`.*Received: n_designs=1"):
        tfattr.SobolAttribution(model).attribute(np.zeros((1, 8, 8, 2)), target=0, n_designs=1)


def test_sobol_and_hsic_refuse_a_grid_beyond_the_sobol_sequences_dimensions():
    """scipy's Sobol sequence has at most 21,201 dimensions: Sobol uses ``2·grid²`` (grid ≤ 102),
    HSIC ``grid²`` (grid ≤ 145); beyond, a tfattr error naming ``grid`` before any forward pass."""
    model = keras.Sequential([keras.Input((150, 150, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    x = np.zeros((1, 150, 150, 1), np.float32)
    with pytest.raises(TfattrError, match=r"`grid`.*102.*Received: grid=103"):
        tfattr.SobolAttribution(model, grid=103, n_designs=2).attribute(x, target=0)
    with pytest.raises(TfattrError, match=r"`grid`.*145.*Received: grid=146"):
        tfattr.HsicAttribution(model, grid=146, n_designs=2).attribute(x, target=0)


def test_sobol_refuses_a_model_with_integer_inputs():
    """Real-valued masks cannot be applied to integer inputs (they would be truncated): a tfattr
    error naming the inputs, not TensorFlow's TypeError from inside the chunk."""
    inputs = keras.Input((6, 6, 1), dtype="int32")
    hidden = keras.layers.Lambda(lambda t: tf.cast(t, "float32"))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(hidden)))
    x = np.ones((1, 6, 6, 1), np.float32)
    for cls in (tfattr.SobolAttribution, tfattr.HsicAttribution):
        method = cls(model, grid=2, n_designs=4)
        with pytest.raises(TfattrError, match=r"integer.*Received: model input dtype='int32'"):
            method.attribute(x, target=0)


def test_hsic_of_a_score_that_is_zero_at_most_masks_is_finite():
    """xplique's output kernel width is the median score: 0 when the score is 0 under most masks
    (a ReLU head, a constant 0) made the Gram matrix 0/0 = NaN. A constant score is independent of
    every cell (HSIC 0 exactly); a score that varies with the width falling back to the scores' standard
    deviation keeps the seen cell first."""
    inputs = keras.Input((4, 4, 1), dtype="float64")
    dense = keras.layers.Dense(2, activation="relu", dtype="float64")
    model = keras.Model(inputs, dense(keras.layers.Flatten(dtype="float64")(inputs)))
    w = np.zeros((16, 2))
    w[[0, 3], 0] = 1.0  # pixels (0, 0) and (0, 3): cells 0 and 1 of the 2 × 2 grid
    dense.set_weights([w, np.array([-1.5, 0.0])])
    x = np.full((1, 4, 4, 1), 0.25)
    x[0, 0, 0, 0] = x[0, 0, 3, 0] = 0.9
    method = tfattr.HsicAttribution(model, grid=2, n_designs=64, seed=1)
    constant = method.attribute(x, target=1).info["hsic"]  # output 1 is always 0
    np.testing.assert_array_equal(constant, np.zeros((1, 2, 2)))
    # output 0 is 0.3 when both cells are kept (about a quarter of the masks), else 0: median 0
    varying = method.attribute(x, target=0).info["hsic"][0].ravel()
    assert np.all(np.isfinite(varying))
    assert set(np.argsort(varying)[-2:]) == {0, 1} and varying[[0, 1]].min() > 10 * np.abs(varying[[2, 3]]).max()


def test_feature_permutation_mask_error_says_the_mask_is_shared():
    """FeaturePermutation's mask is one example's (shared by the batch): the error must not offer
    "one array per example" (FeatureAblation's message)."""
    model, _, _ = _linear()
    x = np.random.default_rng(0).normal(size=(3, 5))
    message = r"one example's shape \(5,\).*Received: feature_mask.shape=\(3, 5\)"
    with pytest.raises(TfattrError, match=message) as error:
        tfattr.FeaturePermutation(model, feature_mask=np.zeros((3, 5), int)).attribute(x, target=0)
    assert "per example" not in str(error.value)


def test_sobol_refuses_options_its_perturbation_would_ignore():
    """``sigma`` means nothing to inpainting, a baseline nothing to blur or amplitude: given, they
    were silently ignored (the user believes the call used them)."""
    model = _cnn((8, 8, 2))
    with pytest.raises(TfattrError, match=r"`sigma`.*inpainting.*Received: sigma=3"):
        tfattr.SobolAttribution(model, sigma=3)
    for perturbation in ("blur", "amplitude"):
        with pytest.raises(TfattrError, match=r"`baseline`.*" + perturbation + r".*Received: baseline=0.5"):
            tfattr.HsicAttribution(model, perturbation=perturbation, baseline=0.5)
    with pytest.raises(TfattrError, match=r"`sigma`.*Received: sigma=2"):
        tfattr.SobolAttribution(model).attribute(np.zeros((1, 8, 8, 2)), target=0, sigma=2)


def test_hsic_estimator_is_the_trace_formula():
    """``2 X_iᵀ (H L H) X_i / n`` equals ``tr(H K_i H · H L H) / n`` with ``K_i = 1.5 − (X_ji − X_ki)²``
    computed directly (random binary masks and scores; float64: ≤ 1e-12 relative)."""
    from tfattr.methods.sobol import hsic_binary

    generator = np.random.default_rng(0)
    masks = np.round(generator.uniform(size=(40, 6)))
    scores = generator.normal(size=(2, 40)) + 1.0
    n = 40
    centre = np.eye(n) - 1.0 / n
    for e in range(2):
        y = scores[e]
        gram = np.exp(-((y[:, None] - y[None, :]) ** 2) / (2 * np.median(y) ** 2))
        expected = [np.trace(centre @ (1.5 - (masks[:, i, None] - masks[None, :, i]) ** 2) @ centre
                             @ centre @ gram @ centre) / n for i in range(6)]
        np.testing.assert_allclose(hsic_binary(masks, scores)[e], expected, rtol=1e-12, atol=1e-14)


def test_row_counts_beyond_int32_are_refused_before_any_design_is_drawn(monkeypatch):
    """The engine numbers rows in int32: ``N · n_designs · (grid² + 2)`` (Sobol), ``N · n_designs``
    (HSIC) or ``N · n_permutations · groups`` at or above 2^31 would wrap. The call must refuse them
    naming the option, before drawing a design of that size (tens of GB here): the design functions
    are replaced by ones that fail the test."""
    import tfattr.methods.permutation as permutation
    import tfattr.methods.sobol as sobol

    def drawn(*args):
        raise AssertionError("a design was drawn before the row count was checked")

    monkeypatch.setattr(sobol, "sobol_design", drawn)
    monkeypatch.setattr(sobol, "binary_design", drawn)
    monkeypatch.setattr(permutation, "batch_permutations", drawn)
    model = _cnn((8, 8, 2))
    x = np.zeros((2, 8, 8, 2))
    with pytest.raises(TfattrError, match=r"2\^31.*Received: n_designs=16777216"):
        tfattr.SobolAttribution(model, grid=8, n_designs=2**24).attribute(x, target=0)
    with pytest.raises(TfattrError, match=r"2\^31.*Received: n_designs=1073741824"):
        tfattr.HsicAttribution(model, grid=2, n_designs=2**30).attribute(x, target=0)
    with pytest.raises(TfattrError, match=r"2\^31.*Received: n_permutations=8388608"):
        tfattr.FeaturePermutation(model, n_permutations=2**23).attribute(x, target=0)


def test_feature_permutation_of_an_integer_input_model_refuses_fractional_values():
    """A tabular model taking int32 ids: integral floats are permuted as ids (exact
    ``w_j (x_ej − x_π(e)j)``), but 1.7 was silently truncated to 1 before being permuted."""
    inputs = keras.Input((3,), dtype="int32")
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(keras.layers.Lambda(lambda t: tf.cast(t, "float32"))(inputs)))
    w = np.array([0.5, 2.0, -1.0], np.float32)
    dense.set_weights([w[:, None], np.array([0.25], np.float32)])
    ids = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]], np.float32)
    found = tfattr.FeaturePermutation(model).attribute(ids, target=0)
    np.testing.assert_allclose(found.attributions, (ids - ids[::-1]) * w, rtol=1e-6)  # two examples: the swap
    with pytest.raises(TfattrError, match=r"non-integral.*Received: inputs\[\(0, 0\)\]=1.7"):
        tfattr.FeaturePermutation(model).attribute(ids + np.array([[0.7, 0, 0], [0, 0, 0]], np.float32), target=0)


def test_noise_tunnel_averages_sobol_maps_and_refuses_feature_permutation():
    """Sobol's maps are ``(N, H, W)``: NoiseTunnel reshaped them to the inputs' ``(N, H, W, C)``
    (a raw ValueError for C = 3). With zero noise the tunnel's map is Sobol's (same design per
    image, ≤ 1e-12). FeaturePermutation permutes across the batch, and the tunnel's batch is the
    noisy copies: a copy would be permuted with copies of itself (a different, silent result),
    so it is refused."""
    model = _cnn((6, 6, 3))
    x = np.random.default_rng(0).uniform(size=(2, 6, 6, 3))
    sobol = tfattr.SobolAttribution(model, grid=2, n_designs=4, seed=1)
    plain = sobol.attribute(x, target=[0, 2]).attributions
    tunnel = tfattr.NoiseTunnel(sobol, nt_samples=3, stdevs=0.0).attribute(x, target=[0, 2]).attributions
    assert tunnel.shape == plain.shape == (2, 6, 6)
    np.testing.assert_allclose(tunnel, plain, rtol=1e-12, atol=1e-14)
    linear, _, _ = _linear()
    with pytest.raises(TfattrError, match=r"batch.*Received: method='FeaturePermutation'"):
        tfattr.NoiseTunnel(tfattr.FeaturePermutation(linear), nt_samples=2, stdevs=0.1)


def test_distributed_attribute_refuses_feature_permutation():
    """tfattr.distribute shards the batch: FeaturePermutation would permute within each shard
    (with ``images_per_replica=2``, swaps of pairs), silently another result than the call on the
    whole batch."""
    from tfattr.distribute import distributed_attribute

    model, _, _ = _linear()
    x = np.random.default_rng(0).normal(size=(4, 5))
    with pytest.raises(TfattrError, match=r"batch.*Received: method='FeaturePermutation'"):
        distributed_attribute(tfattr.FeaturePermutation(model), x, target=0, images_per_replica=2)
