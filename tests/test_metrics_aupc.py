"""AUPC (Samek et al. 2017, SmoothTaylor protocol): window selection, the perturbation loop
against a plain re-implementation of the authors' code, hand values, batching and seeds."""

import math
import warnings

import keras
import numpy as np
import pytest
from conftest import CallCounter, small_cnn

from tfattr import metrics
from tfattr.errors import InvalidInputError, InvalidTypeError, ValueRangeWarning


def pixel_sum_model(size, dtype="float64", counter=False):
    """score = sum of all pixel values (one output unit), in float64 so sums are exact enough."""
    inputs = keras.Input((size, size, 3), dtype=dtype)
    h = CallCounter(name="counter", dtype=dtype)(inputs) if counter else inputs
    out = keras.layers.Lambda(lambda v: keras.ops.sum(v, axis=(1, 2, 3))[:, None], dtype=dtype)(h)
    return keras.Model(inputs, out)


def constant_model(size):
    """Ignores its input: outputs the logits (2, −1)."""
    inputs = keras.Input((size, size, 3))
    out = keras.layers.Lambda(lambda v: 0.0 * v[:, 0, 0, :2] + keras.ops.convert_to_tensor([[2.0, -1.0]]))(inputs)
    return keras.Model(inputs, out)


def authors_windows(heatmap, k, regions):
    """The SmoothTaylor authors' selection loop, transcribed (column-major flat index, bad set)."""
    img_h, img_w = heatmap.shape
    avg = -np.inf * np.ones(img_h * img_w)
    for h in range(img_h - k):
        for w in range(img_w - k):
            avg[h + w * img_h] = np.mean(np.abs(heatmap[h : h + k, w : w + k]))
    order = np.argsort(-avg)
    bad, chosen = set(), []
    for _ in range(regions):
        for idx in order:
            if idx in bad:
                continue
            width, height = idx // img_h, idx % img_h
            if img_h - height <= k or img_w - width <= k:
                continue
            for dh in range(-k + 1, k):
                for dw in range(-k + 1, k):
                    bad.add((height + dh) + (width + dw) * img_h)
            chosen.append((height, width))
            break
    return np.array(chosen)


def authors_aupc(score_fn, image, heatmap, k, regions, copies, seed):
    """The authors' perturbation loop, one image, with our noise stream (P copies of k×k×C a step)."""
    rng = np.random.default_rng(seed)
    current = image.copy()
    f0 = score_fn(image[None])[0]
    means = []
    for h, w in authors_windows(np.abs(heatmap), k, regions):
        noise = rng.random((copies, k, k, image.shape[-1]))
        batch = np.repeat(current[None], copies, axis=0)
        batch[:, h : h + k, w : w + k] = noise
        scores = score_fn(batch)
        median = np.median(scores)
        best, best_value = 0, np.inf
        for i, s in enumerate(scores):
            if math.fabs(s - median) < best_value:
                best, best_value = i, math.fabs(s - median)
        current[h : h + k, w : w + k] = noise[best]
        means.append(np.mean(scores))
    curve = np.array([f0] + means) / math.fabs(f0)
    return curve


@pytest.fixture(scope="module")
def sum_model():
    return pixel_sum_model(24)


@pytest.fixture(scope="module")
def images24():
    return np.random.default_rng(0).uniform(0, 1, size=(3, 24, 24, 3))


def test_attribution_equal_to_the_image_picks_the_brightest_non_overlapping_windows(sum_model, images24):
    result = metrics.aupc(sum_model, images24, images24, kernel_size=4, regions=6, perturbations=5, verbose=0)
    for n in range(3):
        heatmap = images24[n].sum(axis=-1)
        np.testing.assert_array_equal(result.windows[n], authors_windows(heatmap, 4, 6))
        means = np.lib.stride_tricks.sliding_window_view(heatmap, (4, 4)).mean(axis=(-1, -2))[:20, :20]
        assert tuple(result.windows[n, 0]) == np.unravel_index(np.argmax(means), means.shape)
        picked = result.windows[n]
        for a in range(6):  # pairwise non-overlapping
            for b in range(a):
                assert np.abs(picked[a] - picked[b]).max() >= 4


def test_windows_exclude_the_last_corner_row_and_column_as_the_authors_code():
    relevance = np.zeros((1, 10, 10))
    relevance[0, 7:, 7:] = 1.0  # brightest window has corner (7, 7) = (H−k, W−k): excluded
    windows = metrics.select_windows(relevance, kernel_size=3, regions=1)
    np.testing.assert_array_equal(windows[0, 0], (6, 6))


def test_perturbation_curve_matches_the_authors_loop_on_a_pixel_sum_model(sum_model, images24):
    attributions = np.random.default_rng(5).normal(size=images24.shape)
    result = metrics.aupc(sum_model, images24, attributions, kernel_size=4, regions=6, perturbations=7,
                          seed=11, batch_size=8, verbose=0)

    def score(batch):
        return batch.reshape(len(batch), -1).sum(axis=1)

    for n in range(3):
        expected = authors_aupc(score, images24[n], attributions[n].sum(-1), 4, 6, 7, seed=11)
        np.testing.assert_allclose(result.curve[n], expected, rtol=1e-10)
        assert result.area[n] == pytest.approx(metrics.simpson(expected), rel=1e-10)
    np.testing.assert_allclose(result.scores[:, 0], score(images24), rtol=1e-12)
    assert result.curve[:, 0] == pytest.approx(np.ones(3))


def test_a_model_that_ignores_its_input_gives_aupc_of_exactly_30():
    x = np.random.default_rng(1).uniform(0, 1, size=(2, 32, 32, 3)).astype(np.float32)
    result = metrics.aupc(constant_model(32), x, x, kernel_size=3, regions=30, perturbations=4, verbose=0)
    np.testing.assert_array_equal(result.area, [30.0, 30.0])
    np.testing.assert_array_equal(result.curve, np.ones((2, 31)))
    np.testing.assert_array_equal(result.targets, [0, 0])


def test_relevant_windows_first_lowers_aupc_versus_irrelevant_first(sum_model, images24):
    x = images24.copy()
    x[:, 4:12, 4:12] = 1.0  # a bright square dominates the pixel sum
    # near-black noise (value_range far below the images) so that a perturbed window lowers the sum;
    # the range check says the images lie outside it
    with pytest.warns(ValueRangeWarning, match="value_range"):
        good = metrics.aupc(sum_model, x, x, kernel_size=4, regions=4, perturbations=8, value_range=(0, 0.01),
                            verbose=0)
    with pytest.warns(ValueRangeWarning, match="value_range"):
        bad = metrics.aupc(sum_model, x, 1.0 - x, kernel_size=4, regions=4, perturbations=8, value_range=(0, 0.01),
                           verbose=0)
    assert (good.area < bad.area).all()


def test_aupc_is_batch_invariant_and_seeded(images):
    model = small_cnn(seed=3)
    attributions = np.random.default_rng(2).normal(size=images.shape)
    options = dict(kernel_size=3, regions=5, perturbations=6, seed=4, verbose=0)
    batch = metrics.aupc(model, images, attributions, batch_size=7, **options)
    for i in range(len(images)):
        single = metrics.aupc(model, images[i : i + 1], attributions[i : i + 1], batch_size=64, **options)
        np.testing.assert_allclose(single.curve[0], batch.curve[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(single.windows[0], batch.windows[i])
    again = metrics.aupc(model, images, attributions, batch_size=7, **options)
    np.testing.assert_array_equal(again.curve, batch.curve)
    other = metrics.aupc(model, images, attributions, batch_size=7, **dict(options, seed=5))
    assert not np.allclose(other.curve[:, 1:], batch.curve[:, 1:])


def test_all_copies_go_through_the_model_in_chunks_of_batch_size():
    model = pixel_sum_model(16, counter=True)
    x = np.random.default_rng(0).uniform(0, 1, size=(3, 16, 16, 3))
    counter = model.get_layer("counter")
    counter.calls.assign(0)
    metrics.aupc(model, x, x, kernel_size=3, regions=4, perturbations=10, batch_size=16, verbose=0)
    # 1 chunk for f(x) + 4 steps × ceil(3·10 / 16) chunks
    assert int(counter.calls.numpy()) == 1 + 4 * 2


def test_score_options_logit_probability_and_callable(images):
    logits = small_cnn(seed=3)
    softmax = small_cnn(seed=3, softmax=True)
    attributions = np.random.default_rng(2).normal(size=images.shape)
    # odd P: with an even P the two middle copies are equally close to the median and float
    # rounding (float32 softmax head vs float64 softmax) decides which one is carried over
    options = dict(kernel_size=3, regions=3, perturbations=5, verbose=0)
    from_logits = metrics.aupc(logits, images, attributions, score="probability", **options)
    from_probabilities = metrics.aupc(softmax, images, attributions, score="probability", **options)
    np.testing.assert_allclose(from_logits.curve, from_probabilities.curve, rtol=1e-5)
    with pytest.warns(UserWarning, match="ends in a softmax"):
        metrics.aupc(softmax, images, attributions, **options)
    by_index = metrics.aupc(logits, images, attributions, target=1, **options)
    by_callable = metrics.aupc(logits, images, attributions, score=lambda outputs: outputs[:, 1], **options)
    np.testing.assert_array_equal(by_index.targets, [1, 1, 1])
    assert by_callable.targets is None
    np.testing.assert_allclose(by_index.curve, by_callable.curve, rtol=1e-6)
    per_image = metrics.aupc(logits, images, attributions, target=[1, 2, 0], **options)
    np.testing.assert_allclose(per_image.scores[:, 0], logits(images).numpy()[[0, 1, 2], [1, 2, 0]], rtol=1e-5)


def test_zero_score_warns_instead_of_dividing_silently():
    inputs = keras.Input((16, 16, 3))
    zero = keras.Model(inputs, keras.layers.Lambda(lambda v: 0.0 * v[:, 0, 0, :2])(inputs))
    x = np.ones((1, 16, 16, 3), np.float32)
    with pytest.warns(RuntimeWarning, match="f\\(x\\) = 0"):
        result = metrics.aupc(zero, x, x, kernel_size=3, regions=2, perturbations=2, verbose=0)
    assert not np.isfinite(result.curve).all()


def test_aupc_rejects_bad_arguments(relu_cnn, images):
    with pytest.raises(InvalidInputError,
                       match=r"images' shape \(3, 16, 16, 3\).*Received: attributions.shape=\(3, 8, 8, 3\)"):
        metrics.aupc(relu_cnn, images, images[:, :8, :8], kernel_size=3, regions=2, verbose=0)
    with pytest.raises(InvalidInputError, match=r"only \d+ non-overlapping 8×8 windows.*Received: regions=30"):
        metrics.aupc(relu_cnn, images, images, kernel_size=8, verbose=0)
    with pytest.raises(InvalidInputError, match=r"larger than 16 pixels.*Received: image size=\(16, 16\)"):
        metrics.aupc(relu_cnn, images, images, kernel_size=16, verbose=0)
    with pytest.raises(InvalidInputError, match=r"`score` must be one of.*Received: score='softmax'"):
        metrics.aupc(relu_cnn, images, images, kernel_size=3, regions=2, score="softmax", verbose=0)
    with pytest.raises(InvalidTypeError, match="Received: seed=-1"):
        metrics.aupc(relu_cnn, images, images, kernel_size=3, regions=2, seed=-1, verbose=0)
    with pytest.raises(InvalidInputError, match=r"Received: perturbations=0"):
        metrics.aupc(relu_cnn, images, images, kernel_size=3, regions=2, perturbations=0, verbose=0)
    with pytest.raises(TypeError, match="floating-point"):
        metrics.aupc(relu_cnn, (images * 255).astype(np.uint8), images, kernel_size=3, regions=2, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maps = metrics.aupc(relu_cnn, images, images.sum(-1), kernel_size=3, regions=2, perturbations=2, verbose=0)
    full = metrics.aupc(relu_cnn, images, images, kernel_size=3, regions=2, perturbations=2, verbose=0)
    np.testing.assert_array_equal(maps.windows, full.windows)  # channel-free maps are accepted
