"""Hostile-input audit of the metrics of issue 29 (complexity, localisation, flipping and the more
faithfulness metrics): inputs that used to give silently wrong numbers now raise a named error or
give the documented value."""

import keras
import numpy as np
import pytest

import tfattr
from tfattr import metrics
from tfattr.errors import InvalidInputError
from tfattr.metrics.faithfulness_more import mu_fidelity_masks

SIZE = 8


@pytest.fixture(scope="module")
def cnn():
    keras.utils.set_random_seed(0)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=0)
    inputs = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=bias)(inputs)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(3, bias_initializer=bias)(h)
    return keras.Model(inputs, out)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(2, SIZE, SIZE, 1)).astype(np.float32)
    maps = rng.normal(size=(2, SIZE, SIZE)).astype(np.float32)
    return x, maps


# -- seeds ---------------------------------------------------------------------------------------------
def test_mu_fidelity_drops_use_the_masks_of_its_seed(cnn, data):
    """The host's masks (attribution sums) and the device's (score drops) come from the same seed."""
    x, maps = data
    seed = 2**52 + 1
    result = metrics.mu_fidelity(cnn, x, maps, grid_size=4, nb_samples=6, seed=seed, verbose=0)
    masks = mu_fidelity_masks(seed, 6, (4, 4), (SIZE, SIZE), 0.2)
    outputs = np.asarray(cnn(x[:1]), np.float64)[0, result.targets[0]]
    perturbed = np.asarray(cnn(x[:1] * masks), np.float64)[:, result.targets[0]]
    np.testing.assert_allclose(result.score_drops[0], outputs - perturbed, atol=1e-5)


@pytest.mark.parametrize("seed", [2**53 + 1, 2**63])
def test_seeds_beyond_float64_precision_are_refused(cnn, data, seed):
    """A seed above 2**53 used to be rounded on the device (a float64 context) but not on the host:
    µ-fidelity's drops and attribution sums came from different masks (a silently wrong correlation),
    and seeds ≥ 2**63 crashed in TensorFlow."""
    x, maps = data
    with pytest.raises(InvalidInputError, match=rf"`seed`.*Received: seed={seed}$"):
        metrics.mu_fidelity(cnn, x, maps, grid_size=4, nb_samples=4, seed=seed, verbose=0)
    with pytest.raises(InvalidInputError, match=rf"`seed`.*Received: seed={seed}$"):
        metrics.sensitivity_n(cnn, x, maps, n=[2], runs=3, seed=seed, verbose=0)


# -- layouts ---------------------------------------------------------------------------------------------
def test_quantus_channel_first_maps_are_refused_not_misread(data):
    """Quantus's ``a_batch`` ``(N, 1, H, W)`` used to be read as one-row images with W channels: the
    channel sum gave ``(N, 1, H)`` maps and a silently wrong sparseness/complexity."""
    maps = data[1]
    for metric in (metrics.sparseness, metrics.complexity, metrics.effective_complexity):
        with pytest.raises(InvalidInputError, match=r"`attributions`.*Received: attributions.shape=\(2, 1, 8, 8\)$"):
            metric(maps[:, None])
    np.testing.assert_allclose(metrics.sparseness(maps[:, None, :, :2]),  # one-row RGB-like images stay valid
                               metrics.sparseness(maps[:, None, :, :2].sum(axis=-1)))
    # the documented remedy gives the (N, H, W) value
    np.testing.assert_allclose(metrics.sparseness(maps[:, None][:, 0]), metrics.sparseness(maps))


# -- IROF ------------------------------------------------------------------------------------------------
def test_irof_refuses_non_positive_scores(cnn, data):
    """IROF's curve is ``f(x_k) / f(x)``: with a negative ``f(x)`` (a logit) a falling score made the
    ratio rise and the area over the curve came out silently inverted."""
    x, maps = data
    segments = np.broadcast_to((np.arange(SIZE)[:, None] // 4) * 2 + np.arange(SIZE)[None] // 4, (2, SIZE, SIZE))
    outputs = np.asarray(cnn(x), np.float64)
    negative = int(np.argmin(outputs[0]))  # a class whose logit is negative on image 0
    assert outputs[0, negative] < 0
    target = [negative, int(np.argmax(outputs[1]))]
    with pytest.raises(InvalidInputError, match=r"`model`.*Received: f\(images\[0\]\)=-"):
        metrics.irof(cnn, x, maps, target=target, segments=segments, verbose=0)
    soft = keras.Model(cnn.inputs, keras.layers.Softmax()(cnn.outputs[0]))
    positive = metrics.irof(soft, x, maps, target=target, segments=segments,
                            verbose=0)
    assert np.all(np.isfinite(positive.aoc)) and np.all(positive.curve > 0)


def test_irof_refuses_huge_segment_labels_before_allocating(cnn, data):
    """A label of 10**12 used to size a bincount of 10**12 entries (8 TB) before the labels were checked."""
    x, maps = data
    segments = np.zeros((2, SIZE, SIZE), np.int64)
    segments[:, 4:] = 10**12
    with pytest.raises(InvalidInputError, match=r"`segments`.*Received: max\(segments\)=1000000000000$"):
        metrics.irof(cnn, x, maps, segments=segments, verbose=0)


# -- Explanation objects -----------------------------------------------------------------------------------
def test_single_example_explanation_is_one_map(cnn, data):
    """An Explanation of one image without its batch axis (``single``) holds ``(H, W, C)``; it used to be
    read as ``H`` maps of ``W × C`` (eight silently wrong sparseness values for one image)."""
    x = data[0]
    explanation = tfattr.InputXGradient(cnn).attribute(x[0])
    assert explanation.single
    array = np.asarray(explanation.attributions)[None]
    np.testing.assert_array_equal(metrics.sparseness(explanation), metrics.sparseness(array))
    np.testing.assert_array_equal(metrics.complexity(explanation), metrics.complexity(array))
    mask = np.zeros((SIZE, SIZE))
    mask[2:5, 2:6] = 1
    np.testing.assert_array_equal(metrics.auc(explanation, mask), metrics.auc(array, mask[None]))


def test_explanation_of_given_classes_is_scored_on_those_classes(cnn, data):
    """An Explanation of classes [0, 1] used to be scored on each image's top-1 class when ``target`` was
    left at None: the map of one class judged by another class's score."""
    x, maps = data
    top1 = np.asarray(cnn(x)).argmax(axis=1)
    classes = np.array([(top1[0] + 1) % 3, (top1[1] + 2) % 3])
    explanation = tfattr.InputXGradient(cnn).attribute(x, target=classes)
    array = np.asarray(explanation.attributions)
    ours = metrics.pixel_flipping(cnn, x, explanation, pixels_per_step=16, verbose=0)
    np.testing.assert_array_equal(ours.targets, classes)
    np.testing.assert_allclose(ours.curve, metrics.pixel_flipping(cnn, x, array, target=classes,
                                                                  pixels_per_step=16, verbose=0).curve)
    np.testing.assert_array_equal(metrics.selectivity(cnn, x, explanation, patch_size=4, verbose=0).targets, classes)
    np.testing.assert_array_equal(metrics.faithfulness_correlation(cnn, x, explanation, subset_size=8, runs=3,
                                                                   verbose=0).targets, classes)
    # an explicit target still wins
    np.testing.assert_array_equal(metrics.pixel_flipping(cnn, x, explanation, target=top1, pixels_per_step=16,
                                                         verbose=0).targets, top1)


# -- ties -----------------------------------------------------------------------------------------------------
def test_orders_do_not_depend_on_the_last_bits_of_near_ties(cnn, data):
    """Two pixels (patches, segments) whose values differ by 1e-10 relative — a difference another CPU's
    rounding makes — used to be ordered by that difference in monotonicity, selectivity, IROF,
    sensitivity-n "top" and ROAD (pixel flipping and region perturbation already tied them): the
    results changed with the machine. Now they tie and rank by position."""
    x = data[0]
    rng = np.random.default_rng(3)
    patch_values = rng.permutation(16).astype(np.float64) + 1.0  # 4×4 patches of 2×2 pixels
    patch_values[9] = patch_values[2]
    grid = (np.arange(SIZE)[:, None] // 2) * 4 + np.arange(SIZE)[None] // 2
    pixel_noise = rng.permutation(SIZE * SIZE).reshape(SIZE, SIZE) * 1e-3  # distinct pixels, patch sums kept apart
    base = patch_values[grid] + pixel_noise
    base[1, 1], base[6, 6] = 20.0, 20.0  # a pixel tie as well (both in the tied patches' rows)

    def nudged(first):
        m = base.copy()
        m[grid == (2 if first else 9)] *= 1 + 1e-10
        m[(1, 1) if first else (6, 6)] *= 1 + 1e-10
        return np.stack([m, m]).astype(np.float64)

    soft = keras.Model(cnn.inputs, keras.layers.Softmax()(cnn.outputs[0]))
    segments = np.broadcast_to(grid, (2, SIZE, SIZE))
    # a fixed chunk size: under "auto" the two runs may measure different sizes, and a kernel's sum
    # order (so the last bit of a score) can depend on the batch it runs in (TF_ENABLE_ONEDNN_OPTS=0)
    fixed = dict(verbose=0, batch_size=16)
    runs = [
        lambda m: metrics.monotonicity(cnn, x, m, features_in_step=1, **fixed).curve,
        lambda m: metrics.selectivity(cnn, x, m, patch_size=2, **fixed).curve,
        lambda m: metrics.irof(soft, x, m, segments=segments, **fixed).curve,
        lambda m: metrics.sensitivity_n(cnn, x, m, n=list(range(1, 64)), subsets="top", **fixed).score_drops,
        lambda m: metrics.road(cnn, x, m, percentages=[2, 30], noise=0.0, **fixed).classes,
    ]
    for run in runs:
        np.testing.assert_array_equal(run(nudged(True)), run(nudged(False)))


# -- memory -----------------------------------------------------------------------------------------------
def test_sensitivity_n_does_not_hold_every_subset_on_the_host():
    """The attribution sums used to materialise all ``K·R`` subsets as ``(K·R, H·W)`` float64 (and a bool
    and a float64 copy): 1000 subsets of 48² pixels are ~18 MB each, ~4 GB at 224² with R = 1000. Now a
    block of 64 subsets at a time (< 1.2 MB each here); the sums are unchanged."""
    import tracemalloc

    from tfattr.metrics.faithfulness_more import sensitivity_n_subsets

    side = 48
    keras.utils.set_random_seed(1)
    inputs = keras.Input((side, side, 1))
    h = keras.layers.AveragePooling2D(8)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, bias_initializer="ones")(keras.layers.Flatten()(h)))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(1, side, side, 1)).astype(np.float32)
    maps = rng.normal(size=(1, side, side))
    n = [1, 4, 16, 64, 256, 1000, 1500, 2000]
    metrics.sensitivity_n(model, x, maps, n=n, runs=2, verbose=0, batch_size=64)  # traces outside the measure
    tracemalloc.start()
    try:
        result = metrics.sensitivity_n(model, x, maps, n=n, runs=125, seed=5, verbose=0, batch_size=64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8e6, peak  # one full (1000, 2304) float64 copy alone is 18.4 MB
    masks = sensitivity_n_subsets(5, n, 125, side * side)
    expected = np.einsum("np,krp->nkr", maps.reshape(1, -1), masks.astype(np.float64))
    np.testing.assert_allclose(result.attribution_sums, expected, rtol=1e-10, atol=1e-10)


# -- batch composition ------------------------------------------------------------------------------------
def test_random_draws_do_not_depend_on_the_images_place_in_the_batch(cnn, data, monkeypatch):
    """Region perturbation's ``"random"`` order and ROAD's noise used to be drawn per position in the
    batch: an image's result changed with the images evaluated alongside it."""
    x, maps = data
    both = metrics.region_perturbation(cnn, x, maps, patch_size=2, regions=6, order="random", seed=4, verbose=0)
    alone = metrics.region_perturbation(cnn, x[1:], maps[1:], patch_size=2, regions=6, order="random", seed=4,
                                        verbose=0)
    np.testing.assert_array_equal(both.order[1], alone.order[0])
    np.testing.assert_allclose(both.drops[1], alone.drops[0], atol=1e-5)
    assert not np.array_equal(both.order[0], np.sort(both.order[0]))  # a permutation, not the identity
    from tfattr.metrics import faithfulness_more

    imputed = []
    original = faithfulness_more.road_imputation

    def recording(image, removed, noise, generator):
        out = original(image, removed, noise, generator)
        imputed.append((image.copy(), out))
        return out

    monkeypatch.setattr(faithfulness_more, "road_imputation", recording)

    def images_of_x1():
        return [out for image, out in imputed if np.array_equal(image, x[1])]

    metrics.road(cnn, x, maps, percentages=[20, 50], noise=0.5, seed=2, verbose=0)
    in_batch, imputed[:] = images_of_x1(), []
    metrics.road(cnn, x[1:], maps[1:], percentages=[20, 50], noise=0.5, seed=2, verbose=0)
    alone = images_of_x1()
    assert len(in_batch) == len(alone) == 2
    for a, b in zip(in_batch, alone):
        np.testing.assert_array_equal(a, b)
