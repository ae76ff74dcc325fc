"""Monotonicity, selectivity, sensitivity-n, IROF, ROAD and µ-fidelity: equal to Quantus 0.6 (run here on
the same Keras 3 model, inputs, maps and settings) or to xplique's definition on the same draws, and
analytic cases on a linear model.

Quantus takes a Keras 3 model (``quantus.TensorFlowModel``); it works on channels-first images, so the
model is given behind a ``Permute`` layer with ``channel_first=True`` (with channels-last images and
``channel_first=False`` its SensitivityN counts the features from the wrong axes), maps as
``(N, 1, H, W)``, ``softmax=False`` (our metrics score the model's output as is).
The images have one channel: Quantus ranks the ``(channel, pixel)`` entries of a map broadcast over
the channels, with ties between the copies in NumPy's unstable order; on one channel its features are
our pixels.
"""

import warnings

import keras
import numpy as np
import pytest
import quantus
from scipy.stats import spearmanr

import tfattr
from tfattr import metrics
from tfattr.errors import InvalidInputError
from tfattr.metrics.faithfulness_more import (
    monotonicity_correlation_values,
    mu_fidelity_masks,
    road_imputation,
    sensitivity_n_subsets,
)

SIZE = 8


def _cnn(softmax=False, seed=0, channels=1):
    keras.utils.set_random_seed(seed)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=seed)
    inputs = keras.Input((SIZE, SIZE, channels))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", bias_initializer=bias)(inputs)
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(4, bias_initializer=bias, activation="softmax" if softmax else None)(h)
    return keras.Model(inputs, out)


@pytest.fixture(scope="module")
def cnn():
    return _cnn()


@pytest.fixture(scope="module")
def soft_cnn():
    return _cnn(softmax=True, seed=1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(3, SIZE, SIZE, 1)).astype(np.float32)
    maps = rng.normal(size=(3, SIZE, SIZE)).astype(np.float32)
    return x, maps


def _linear(shape=(6, 6, 1), seed=0, positive=False):
    """``f(x) = x·M + b`` in float64 (NumPy reproduces its scores exactly)."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(int(np.prod(shape)), 3))
    if positive:
        m = np.abs(m)
    b = rng.normal(size=3)
    inputs = keras.Input(shape, dtype="float64")
    dense = keras.layers.Dense(3, dtype="float64")
    model = keras.Model(inputs, dense(keras.layers.Reshape((-1,), dtype="float64")(inputs)))
    dense.set_weights([m, b])
    return model, m, b


def _channels_first(model):
    """The model's layers (shared) behind a Permute layer: it takes the channels-first images Quantus
    works on (flat, not nested: Quantus reads the last layer's activation)."""
    inputs = keras.Input((model.input_shape[-1],) + tuple(model.input_shape[1:-1]))
    h = keras.layers.Permute((2, 3, 1))(inputs)
    for layer in model.layers[1:]:
        h = layer(h)
    return keras.Model(inputs, h)


def _quantus(metric, model, x, maps, targets, **kwargs):
    # softmax=False rebuilds a softmax head without it; a softmax model is scored as it is
    softmax = model.layers[-1].activation.__name__ == "softmax"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return metric(model=_channels_first(model), x_batch=np.moveaxis(x, -1, 1), y_batch=np.asarray(targets),
                      a_batch=maps[:, None], softmax=softmax, channel_first=True, **kwargs)


def _top1(model, x):
    return np.asarray(model(x)).argmax(axis=1)


# -- monotonicity ------------------------------------------------------------------------------------
def test_monotonicity_equals_quantus_loop_inserting_the_images_values(cnn, data):
    """Quantus 0.6's loop with a perturbation that inserts x's values (what the paper and AIX360 do)."""
    x, maps = data
    targets = _top1(cnn, x)
    flat_x = np.moveaxis(x, -1, 1).reshape(len(x), -1)

    def insert(arr, indices, **kwargs):
        out = arr.copy()
        rows = np.arange(len(arr))[:, None]
        out[rows, indices] = flat_x[rows, indices]
        return out

    curves = []
    reference = quantus.Monotonicity(features_in_step=8, perturb_func=insert, disable_warnings=True)
    original = reference.evaluate_batch

    def keep_curve(model, x_batch, y_batch, a_batch, **kwargs):  # record the curve Quantus computes
        predict = model.predict

        def record(x_input, **kw):
            out = predict(x_input, **kw)
            curves.append(out[np.arange(len(out)), y_batch])
            return out

        model.predict = record
        return original(model=model, x_batch=x_batch, y_batch=y_batch, a_batch=a_batch, **kwargs)

    reference.evaluate_batch = keep_curve
    expected = _quantus(reference, cnn, x, maps, targets)
    ours = metrics.monotonicity(cnn, x, maps, features_in_step=8, batch_size=7)
    np.testing.assert_allclose(ours.curve, np.stack(curves, axis=1), atol=1e-5)
    assert ours.monotonic.tolist() == list(expected)


def test_quantus_default_monotonicity_is_flat_where_ours_is_not(cnn, data):
    """Quantus 0.6's default writes the baseline into the baseline image: every map passes."""
    x, maps = data
    targets = _top1(cnn, x)
    assert all(_quantus(quantus.Monotonicity(features_in_step=16, disable_warnings=True), cnn, x, maps, targets))
    ours = metrics.monotonicity(cnn, x, maps, features_in_step=16)
    assert not ours.monotonic.all()
    assert np.ptp(ours.curve, axis=1).min() > 0


def test_monotonicity_curve_of_a_linear_model_is_the_cumulative_sum_of_sorted_contributions():
    model, m, b = _linear(positive=True)
    x = np.random.default_rng(1).uniform(0.1, 1, size=(2, 6, 6, 1))
    target = [0, 2]
    phi = x[..., 0] * m[:, target].T.reshape(2, 6, 6)  # gradient × input, baseline 0
    for step in (1, 5):
        result = metrics.monotonicity(model, x, phi, target=target, features_in_step=step, baseline=0.0,
                                      absolute=False)
        ordered = np.sort(phi.reshape(2, -1), axis=1)
        stops = np.minimum(step * np.arange(1, -(-36 // step) + 1), 36)
        expected = b[target][:, None] + np.cumsum(ordered, axis=1)[:, stops - 1]
        np.testing.assert_allclose(result.curve, expected, rtol=1e-12, atol=1e-12)
        assert result.monotonic.all()  # positive weights and inputs: every insertion raises the score
    flipped = phi.copy()
    flipped[0, 0, 0] = -5.0  # absolute order puts it last: the last insertion lowers the score
    assert metrics.monotonicity(model, x, flipped, target=target, baseline=0.0).monotonic.tolist() == [True, True]
    model_neg, _, _ = _linear(seed=3)
    result = metrics.monotonicity(model_neg, x, np.ones((2, 6, 6)), target=0, baseline=0.0)
    assert not result.monotonic.any()  # weights of both signs in pixel order: the curve goes down somewhere


def test_monotonicity_correlation_equals_quantus_with_the_same_values_injected(cnn, data):
    """Quantus draws each replacement value from np.random; its perturbation is given ours, in its call
    order (group k, sample j → row k·M + j)."""
    x, maps = data
    targets = _top1(cnn, x)
    values = monotonicity_correlation_values(5, np.arange(8 * 2))
    calls = []

    def uniform(arr, indices, **kwargs):
        out = arr.copy()
        out[np.arange(len(arr))[:, None], indices] = values[len(calls)]
        calls.append(1)
        return out

    reference = quantus.MonotonicityCorrelation(features_in_step=8, nr_samples=2, perturb_func=uniform,
                                                disable_warnings=True)
    expected = _quantus(reference, cnn, x, maps, targets)
    assert len(calls) == 16
    ours = metrics.monotonicity_correlation(cnn, x, maps, features_in_step=8, nr_samples=2, seed=5, batch_size=5)
    np.testing.assert_allclose(ours.correlation, expected, atol=1e-9)
    assert np.all(ours.variances > 0)


# -- selectivity -----------------------------------------------------------------------------------
@pytest.mark.parametrize("patch_size", [3, 4])
def test_selectivity_equals_quantus(cnn, data, patch_size):
    x, maps = data
    targets = _top1(cnn, x)
    expected = _quantus(quantus.Selectivity(patch_size=patch_size, disable_warnings=True), cnn, x, maps, targets)
    ours = metrics.selectivity(cnn, x, maps, patch_size=patch_size, batch_size=5)
    np.testing.assert_allclose(ours.curve, np.asarray(expected, np.float64), atol=1e-5)
    np.testing.assert_allclose(ours.auc, [np.trapezoid(c) for c in expected], atol=1e-4)


def test_selectivity_of_a_linear_model_drops_by_the_patch_sums():
    model, m, b = _linear()
    x = np.random.default_rng(2).uniform(0.1, 1, size=(1, 6, 6, 1))
    phi = x[0, ..., 0] * m[:, 1].reshape(6, 6)
    result = metrics.selectivity(model, x, phi, target=1, patch_size=3, baseline=0.0)
    patch_sums = phi.reshape(2, 3, 2, 3).sum(axis=(1, 3)).reshape(-1)
    expected = (x.reshape(-1) @ m[:, 1] + b[1]) - np.cumsum(np.sort(patch_sums)[::-1])
    np.testing.assert_allclose(result.curve[0], expected, rtol=1e-12, atol=1e-12)


# -- sensitivity-n ---------------------------------------------------------------------------------
def test_sensitivity_n_top_equals_quantus_up_to_its_per_step_sums(cnn, data):
    """Quantus 0.6's SensitivityN removes the top pixels cumulatively (our score drops, equal) but
    correlates each drop with the attribution sum of that *step's* pixels only, not of every pixel
    removed so far (Ancona et al.'s Σ_{i∈S} φ_i, ours): with its per-step sums our drops give its
    numbers."""
    x, maps = data
    targets = _top1(cnn, x)
    reference = quantus.SensitivityN(features_in_step=4, n_max_percentage=0.5, return_aggregate=False,
                                     normalise=False, disable_warnings=True)
    batches = []
    original = reference.evaluate_batch
    reference.evaluate_batch = lambda **kw: batches.append(original(**kw)[0]) or [batches[-1]]
    expected = np.asarray(_quantus(reference, cnn, x, maps, targets), np.float64)
    ours = metrics.sensitivity_n(cnn, x, maps, n=[4 * k for k in range(1, 9)], subsets="top")
    assert expected.shape == ours.correlation.shape == (8,)
    np.testing.assert_allclose(ours.score_drops[..., 0], batches[0]["pred_deltas"][:, :8], atol=1e-5)
    cumulative = ours.attribution_sums[..., 0]
    per_step = np.diff(cumulative, axis=1, prepend=0.0)
    np.testing.assert_allclose(per_step, batches[0]["att_sums"][:, :8], rtol=1e-5, atol=1e-6)
    quantus_way = [np.corrcoef(ours.score_drops[:, k, 0], per_step[:, k])[0, 1] for k in range(8)]
    np.testing.assert_allclose(quantus_way, expected, atol=1e-4)
    assert ours.correlation[0] == pytest.approx(expected[0], abs=1e-4)  # the first step: the same subset


def test_sensitivity_n_of_gradient_times_input_on_a_linear_model_is_one():
    model, _, _ = _linear()
    x = np.random.default_rng(3).uniform(0.1, 1, size=(2, 6, 6, 1))
    phi = tfattr.InputXGradient(model).attribute(x).attributions
    result = metrics.sensitivity_n(model, x, phi, n=[1, 5, 30], runs=12, baseline=0.0, batch_size=9)
    np.testing.assert_allclose(result.attribution_sums, result.score_drops, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.correlation, 1.0, atol=1e-10)
    masks = sensitivity_n_subsets(0, [1, 5, 30], 12, 36)
    assert masks.sum(axis=2).tolist() == [[1] * 12, [5] * 12, [30] * 12]


def test_sensitivity_n_random_equals_a_hand_loop_on_the_same_subsets(cnn, data):
    x, maps = data
    result = metrics.sensitivity_n(cnn, x, maps, n=[3, 20], runs=5, seed=7, batch_size=4)
    masks = sensitivity_n_subsets(7, [3, 20], 5, SIZE * SIZE)
    outputs = np.asarray(cnn(x), np.float64)
    targets = outputs.argmax(axis=1)
    for i in range(len(x)):
        for k in range(2):
            perturbed = np.repeat(x[i][None], 5, axis=0)
            perturbed[masks[k].reshape(5, SIZE, SIZE)] = x[i].min()
            drops = outputs[i, targets[i]] - np.asarray(cnn(perturbed), np.float64)[:, targets[i]]
            sums = (maps[i].reshape(-1).astype(np.float64) * masks[k]).sum(axis=1)
            np.testing.assert_allclose(result.score_drops[i, k], drops, atol=1e-5)
            np.testing.assert_allclose(result.attribution_sums[i, k], sums, rtol=1e-6)
            assert result.correlation[i, k] == pytest.approx(np.corrcoef(sums, drops)[0, 1], abs=1e-4)


# -- IROF --------------------------------------------------------------------------------------------
def test_irof_equals_quantus_per_image_on_the_same_superpixels(cnn, data, monkeypatch):
    """Quantus's IROF with its SLIC call made coarser (8 segments: it scores a step in ~0.3 s) and ours
    given the same segments; our default segments are Quantus's ``slic(image, start_label=0)``."""
    from quantus.helpers import utils as quantus_utils
    from skimage.segmentation import slic

    x, maps = data[0][:2], data[1][:2]
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # Quantus 0.6 calls np.trapz (NumPy 2.4 removed it)
    monkeypatch.setattr(quantus_utils, "get_superpixel_segments",
                        lambda img, segmentation_method: slic(img, n_segments=8, start_label=0))
    segments = np.stack([slic(image.astype(np.float64), n_segments=8, start_label=0) for image in x])
    targets = _top1(cnn, x)
    ours = metrics.irof(cnn, x, maps, segments=segments, baseline=0.3)
    assert 4 <= ours.curve.shape[1] <= 16
    for i in range(len(x)):  # one image a call: Quantus pads the curves of a batch to its longest
        reference = quantus.IROF(perturb_baseline=0.3, return_aggregate=False, disable_warnings=True)
        expected = _quantus(reference, cnn, x[i : i + 1], maps[i : i + 1], targets[i : i + 1])
        assert ours.aoc[i] == pytest.approx(float(expected[0]), abs=1e-4)
    default = metrics.irof(cnn, x[:1], maps[:1])
    np.testing.assert_array_equal(default.segments[0], slic(x[0].astype(np.float64), start_label=0))


def test_irof_curve_with_given_segments_is_the_score_ratio(soft_cnn, data):
    x, maps = data
    segments = np.broadcast_to((np.arange(SIZE)[:, None] // 4) * 2 + np.arange(SIZE)[None] // 4, (3, SIZE, SIZE))
    result = metrics.irof(soft_cnn, x, maps, segments=segments, baseline="black")
    outputs = np.asarray(soft_cnn(x), np.float64)
    targets = outputs.argmax(axis=1)
    i = 1
    means = [maps[i][segments[i] == s].mean() for s in range(4)]
    perturbed, curve = x[i].copy(), []
    for s in np.argsort(-np.asarray(means)):
        perturbed[segments[i] == s] = x[i].min()
        curve.append(float(np.asarray(soft_cnn(perturbed[None]))[0, targets[i]]) / outputs[i, targets[i]])
    np.testing.assert_allclose(result.curve[i], curve, rtol=1e-5)
    assert result.aoc[i] == pytest.approx(4 - np.trapezoid(curve), abs=1e-5)


# -- ROAD --------------------------------------------------------------------------------------------
def test_road_imputation_equals_quantus_and_is_exact_on_a_plane():
    from quantus.functions.perturb_func import noisy_linear_imputation

    rng = np.random.default_rng(4)
    image = rng.uniform(size=(7, 9, 2))
    removed = rng.uniform(size=(7, 9)) < 0.4
    ours = road_imputation(image, removed)
    theirs = noisy_linear_imputation(np.moveaxis(image, -1, 0), np.flatnonzero(removed), noise=0.0)
    np.testing.assert_allclose(ours, np.moveaxis(theirs, 0, -1), rtol=1e-12, atol=1e-12)
    rows, cols = np.mgrid[0:7, 0:9]
    plane = (0.3 * rows - 0.2 * cols + 1.0)[..., None]
    inner = np.zeros((7, 9), bool)
    inner[2:5, 3:7] = True  # interior pixels: the symmetric neighbour mean of a plane is the plane
    np.testing.assert_allclose(road_imputation(plane, inner), plane, atol=1e-12)
    noisy = road_imputation(image, removed, 0.5, np.random.default_rng(0))
    assert np.array_equal(noisy[~removed], image[~removed]) and not np.allclose(noisy[removed], ours[removed])


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_road_without_noise_equals_quantus(cnn, data, order):
    x, maps = data
    targets = _top1(cnn, x)
    percentages = [5, 30, 60, 90]
    signed = maps if order == "morf" else -maps  # Quantus's ROAD is MoRF: LeRF is MoRF of −φ
    reference = quantus.ROAD(noise=0.0, percentages=percentages, disable_warnings=True)
    expected = _quantus(reference, cnn, x, signed, targets)
    ours = metrics.road(cnn, x, maps, percentages=percentages, order=order, noise=0.0, batch_size=5)
    np.testing.assert_allclose(ours.accuracy, [expected[p] for p in percentages], atol=1e-12)
    assert ours.correct.shape == (3, 4)


# -- µ-fidelity ----------------------------------------------------------------------------------------
def test_mu_fidelity_equals_xplique_definition_on_the_same_masks(cnn, data):
    """xplique's MuFidelity.evaluate, with its masks replaced by ours (xplique is not installed here)."""
    x, maps = data
    result = metrics.mu_fidelity(cnn, x, maps, grid_size=4, nb_samples=16, seed=3, batch_size=6)
    masks = mu_fidelity_masks(3, 16, (4, 4), (SIZE, SIZE), 0.2)  # (R, H, W, 1)
    assert set(np.unique(masks)) <= {0.0, 1.0} and 0 < masks.mean() < 1
    outputs = np.asarray(cnn(x))
    targets = outputs.argmax(axis=1)
    for i in range(len(x)):  # xplique: inputs * masks + (1 − masks) * baseline, Spearman, nan → 0
        degraded = x[i][None] * masks + (1.0 - masks) * 0.0
        preds = outputs[i, targets[i]] - np.asarray(cnn(degraded))[:, targets[i]]
        attrs = (maps[i][None, :, :, None] * (1.0 - masks)).sum(axis=(1, 2, 3))
        np.testing.assert_allclose(result.score_drops[i], preds, atol=1e-5)
        assert result.correlation[i] == pytest.approx(spearmanr(preds, attrs)[0], abs=1e-6)


def test_mu_fidelity_of_exact_attributions_of_an_additive_model_is_one():
    model, _, _ = _linear()
    x = np.random.default_rng(5).uniform(0.1, 1, size=(2, 6, 6, 1))
    phi = tfattr.InputXGradient(model).attribute(x).attributions
    for grid in (3, None):
        result = metrics.mu_fidelity(model, x, phi, grid_size=grid, nb_samples=20, subset_percent=0.3)
        np.testing.assert_allclose(result.attribution_sums, result.score_drops, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result.correlation, 1.0, atol=1e-12)


# -- randomness, batching, errors ------------------------------------------------------------------------
def test_seeded_and_independent_of_batch_and_chunks(cnn, data):
    x, maps = data
    first = metrics.sensitivity_n(cnn, x, maps, n=[4, 10], runs=6, seed=1, batch_size=5)
    chunked = metrics.sensitivity_n(cnn, x, maps, n=[4, 10], runs=6, seed=1, batch_size=32)
    np.testing.assert_allclose(chunked.score_drops, first.score_drops, atol=1e-6)
    alone = metrics.sensitivity_n(cnn, x[2], maps[2], n=[4, 10], runs=6, seed=1)
    np.testing.assert_allclose(alone.score_drops[0], first.score_drops[2], atol=1e-6)
    other = metrics.sensitivity_n(cnn, x, maps, n=[4, 10], runs=6, seed=2)
    assert not np.allclose(other.attribution_sums, first.attribution_sums)
    fid = metrics.mu_fidelity(cnn, x, maps, grid_size=4, nb_samples=10, seed=4, batch_size=3)
    np.testing.assert_array_equal(fid.score_drops,
                                  metrics.mu_fidelity(cnn, x, maps, grid_size=4, nb_samples=10, seed=4,
                                                      batch_size=3).score_drops)
    alone = metrics.mu_fidelity(cnn, x[:1], maps[:1], grid_size=4, nb_samples=10, seed=4, batch_size=16)
    np.testing.assert_allclose(alone.score_drops[0], fid.score_drops[0], atol=1e-6)
    noisy = metrics.road(cnn, x, maps, percentages=[20, 50], noise=0.2, seed=3)
    np.testing.assert_array_equal(noisy.classes, metrics.road(cnn, x, maps, percentages=[20, 50], noise=0.2,
                                                              seed=3).classes)
    mono = metrics.monotonicity(cnn, x, maps, features_in_step=8, batch_size=3)
    np.testing.assert_allclose(mono.curve, metrics.monotonicity(cnn, x, maps, features_in_step=8,
                                                                batch_size=64).curve, atol=1e-6)


def test_errors_name_the_argument(cnn, data):
    x, maps = data
    with pytest.raises(InvalidInputError, match=r"`features_in_step`.*Received: features_in_step=65"):
        metrics.monotonicity(cnn, x, maps, features_in_step=65)
    with pytest.raises(InvalidInputError, match=r"`absolute`.*Received: absolute='yes'"):
        metrics.monotonicity(cnn, x, maps, absolute="yes")
    with pytest.raises(InvalidInputError, match=r"`high`.*Received: \(low, high\)=\(1.0, 0.5\)"):
        metrics.monotonicity_correlation(cnn, x, maps, low=1.0, high=0.5)
    with pytest.raises(InvalidInputError, match=r"`patch_size`.*Received: patch_size=9"):
        metrics.selectivity(cnn, x, maps, patch_size=9)
    with pytest.raises(InvalidInputError, match=r"`n`.*Received: n=\[0, 3\]"):
        metrics.sensitivity_n(cnn, x, maps, n=[0, 3])
    with pytest.raises(InvalidInputError, match=r"`subsets`.*Received: subsets='all'"):
        metrics.sensitivity_n(cnn, x, maps, subsets="all")
    with pytest.raises(InvalidInputError, match=r"`segments`.*Received: segments.shape=\(3, 4, 4\)"):
        metrics.irof(cnn, x, maps, segments=np.zeros((3, 4, 4), int))
    with pytest.raises(InvalidInputError, match=r"`percentages`.*Received: percentages=\[50, 100\]"):
        metrics.road(cnn, x, maps, percentages=[50, 100])
    with pytest.raises(InvalidInputError, match=r"`order`.*Received: order='random'"):
        metrics.road(cnn, x, maps, order="random")
    with pytest.raises(InvalidInputError, match=r"`noise`.*Received: noise=-0.1"):
        metrics.road(cnn, x, maps, noise=-0.1)
    with pytest.raises(InvalidInputError, match=r"`subset_percent`.*Received: subset_percent=1.5"):
        metrics.mu_fidelity(cnn, x, maps, grid_size=4, subset_percent=1.5)
    with pytest.raises(InvalidInputError, match=r"`grid_size`.*Received: grid_size=9"):
        metrics.mu_fidelity(cnn, x, maps, grid_size=9)
    with pytest.raises(InvalidInputError, match=r"`attributions`.*Received: attributions.shape=\(3, 4, 4\)"):
        metrics.selectivity(cnn, x, maps[:, :4, :4])
