"""Deletion and insertion (Petsiuk et al. 2018): reference vectors, the blur substrate, ordering
properties on a linear model, batching and the score options."""

from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import small_cnn

from tfattr import metrics
from tfattr.errors import InvalidInputError

REFERENCE = Path("/work/shared/reference/metric_vectors.npz")


@pytest.fixture(scope="module")
def reference():
    return np.load(REFERENCE)


def analytic_model(weights, bias, softmax=True, size=32):
    """``softmax(images.reshape(N, −1) @ W + b)`` in float64 (or its logits)."""
    inputs = keras.Input((size, size, 3), dtype="float64")
    flat = keras.layers.Reshape((size * size * 3,), dtype="float64")(inputs)
    dense = keras.layers.Dense(weights.shape[1], activation="softmax" if softmax else None, dtype="float64")
    model = keras.Model(inputs, dense(flat))
    dense.set_weights([weights, bias])
    return model


@pytest.mark.parametrize("softmax_head", [True, False], ids=["softmax-head", "logits-then-softmax"])
def test_deletion_and_insertion_reproduce_the_reference_vectors(reference, softmax_head):
    model = analytic_model(reference["W"], reference["b"], softmax=softmax_head)
    images, attributions = reference["images"], reference["attributions"]
    deleted = metrics.deletion(model, images, attributions, verbose=0)
    inserted = metrics.insertion(model, images, attributions, verbose=0)
    assert deleted.pixels_per_step == inserted.pixels_per_step == 32  # round(√(32·32))
    np.testing.assert_allclose(deleted.auc, reference["deletion_auc"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(deleted.curve, reference["deletion_curves"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(inserted.auc, reference["insertion_auc"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(inserted.curve, reference["insertion_curves"], atol=1e-6, rtol=0)


def test_blur_kernel_is_scipys_gaussian_filter_of_a_delta_and_blur_uses_zero_padding():
    ndimage = pytest.importorskip("scipy.ndimage")
    delta = np.zeros((11, 11))
    delta[5, 5] = 1.0
    np.testing.assert_allclose(metrics.blur_kernel(11, 5.0), ndimage.gaussian_filter(delta, 5.0), atol=1e-15)
    signal = pytest.importorskip("scipy.signal")
    image = np.random.default_rng(0).uniform(size=(1, 20, 17, 2))
    expected = np.stack([signal.correlate2d(image[0, ..., c], metrics.blur_kernel(), mode="same", boundary="fill")
                         for c in range(2)], axis=-1)
    np.testing.assert_allclose(metrics.blur(image)[0], expected, atol=1e-12)


@pytest.fixture(scope="module")
def linear():
    """A linear 3-class model on 12×12 images; class 0 has large positive weights on a patch."""
    rng = np.random.default_rng(7)
    weights = rng.normal(scale=0.02, size=(12 * 12 * 3, 3))
    patch = np.zeros((12, 12, 3))
    patch[2:8, 3:9] = 1.0
    weights[:, 0] += 0.3 * patch.ravel()
    model = analytic_model(weights, np.zeros(3), softmax=False, size=12)
    images = rng.uniform(0.5, 1.0, size=(4, 12, 12, 3))
    return model, weights, images


def test_perfect_attribution_deletes_faster_and_inserts_faster_than_its_reverse(linear):
    model, weights, images = linear
    assert (np.argmax(model(images).numpy(), axis=1) == 0).all()
    perfect = images * weights[:, 0].reshape(12, 12, 3)  # input × gradient = exact contributions
    reverse = -perfect
    good_del = metrics.deletion(model, images, perfect, pixels_per_step=8, verbose=0)
    bad_del = metrics.deletion(model, images, reverse, pixels_per_step=8, verbose=0)
    good_ins = metrics.insertion(model, images, perfect, pixels_per_step=8, verbose=0)
    bad_ins = metrics.insertion(model, images, reverse, pixels_per_step=8, verbose=0)
    assert (good_del.auc < bad_del.auc).all()
    assert (good_ins.auc > bad_ins.auc).all()
    for result in (good_del, bad_del, good_ins, bad_ins):
        assert ((result.auc >= 0) & (result.auc <= 1)).all()
        assert ((result.curve >= 0) & (result.curve <= 1)).all()
        assert result.curve.shape == (4, 18 + 1)  # ceil(144 / 8) steps
    # the curves start/end at p(x): deletion before any step, insertion after the last one
    probabilities = keras.ops.softmax(model(images)).numpy()[:, 0]
    np.testing.assert_allclose(good_del.curve[:, 0], probabilities, rtol=1e-12)
    np.testing.assert_allclose(good_ins.curve[:, -1], probabilities, rtol=1e-12)
    zero = keras.ops.softmax(model(np.zeros_like(images))).numpy()[:, 0]
    np.testing.assert_allclose(good_del.curve[:, -1], zero, rtol=1e-12)
    np.testing.assert_allclose(good_del.auc, metrics.causal_auc(good_del.curve))


def test_deletion_step_moves_exactly_the_most_salient_pixels(linear):
    model, weights, images = linear
    saliency = np.random.default_rng(1).normal(size=(1, 12, 12))
    result = metrics.deletion(model, images[:1], saliency, pixels_per_step=10, verbose=0)
    order = np.argsort(-saliency[0].ravel())
    for step in (1, 7, 14):
        expected = images[:1].copy().reshape(1, 144, 3)
        expected[0, order[: min(step * 10, 144)]] = 0.0
        p = keras.ops.softmax(model(expected.reshape(1, 12, 12, 3))).numpy()[0, 0]
        assert result.curve[0, step] == pytest.approx(p, rel=1e-12)
    assert result.curve.shape == (1, 16)  # ceil(144 / 10) = 15 steps


def test_deletion_and_insertion_are_batch_invariant_and_deterministic(images):
    model = small_cnn(seed=5)
    attributions = np.random.default_rng(3).normal(size=images.shape)
    for metric in (metrics.deletion, metrics.insertion):
        batch = metric(model, images, attributions, batch_size=5, verbose=0)
        again = metric(model, images, attributions, batch_size=5, verbose=0)
        np.testing.assert_array_equal(batch.curve, again.curve)
        for i in range(len(images)):
            single = metric(model, images[i : i + 1], attributions[i], batch_size=64, verbose=0)
            np.testing.assert_allclose(single.curve[0], batch.curve[i], rtol=1e-5, atol=1e-7)


def test_default_step_scales_with_image_size_and_options_are_validated(linear):
    model, _, images = linear
    assert metrics.deletion(model, images[:1], images[:1], verbose=0).pixels_per_step == 12
    with pytest.raises(InvalidInputError, match=r"Received: pixels_per_step=0"):
        metrics.deletion(model, images, images, pixels_per_step=0, verbose=0)
    with pytest.raises(InvalidInputError, match=r"Received: substrate='noise'"):
        metrics.insertion(model, images, images, substrate="noise", verbose=0)
    with pytest.raises(InvalidInputError, match=r"images' shape"):
        metrics.insertion(model, images, images[:2], verbose=0)
    constant = metrics.deletion(model, images, images, substrate=0.5, pixels_per_step=72, verbose=0)
    half = keras.ops.softmax(model(np.full_like(images, 0.5))).numpy()[:, 0]
    np.testing.assert_allclose(constant.curve[:, -1], half, rtol=1e-12)


def test_progress_bar_is_shown_when_asked(linear, capsys):
    model, _, images = linear
    metrics.deletion(model, images, images, pixels_per_step=8, batch_size=8, verbose=1)
    assert "10/10" in capsys.readouterr().out  # 4 × 19 rows in chunks of 8


def test_a_sequential_model_changed_after_scoring_is_scored_as_it_is_now():
    """``pop``/``add`` on a Sequential model after a metric ran: the compiled forward cached per model
    still ran the former head, so deletion's curve was the old model's (1/3 for every class) while
    ``model(x)`` gave 0.96."""
    x = np.random.default_rng(0).random((2, 8, 8, 1)).astype("float32")
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3, kernel_initializer="ones", name="equal")])
    maps = np.random.default_rng(1).random((2, 8, 8))
    for _ in range(6):  # past the eager first passes: traced
        metrics.deletion(model, x, maps, target=0, pixels_per_step=16)
    model.pop()
    model.add(keras.layers.Dense(3, name="tilted",
                                 kernel_initializer=keras.initializers.Constant(np.tile([[0.1, 0.0, -0.1]], (64, 1)))))
    start = metrics.deletion(model, x, maps, target=0, pixels_per_step=16).curve[:, 0]
    np.testing.assert_allclose(start, keras.ops.softmax(model(x)).numpy()[:, 0], rtol=1e-5)
