"""Baselines: each one's defining value, seeded draws, and IG_noise as one batched pass."""

import numpy as np
import pytest
import scipy.ndimage

from tfattr import IntegratedGradients, make_baselines


@pytest.fixture
def x():
    return np.random.default_rng(1).uniform(0, 1, size=(2, 12, 10, 3))


def test_deterministic_baselines_have_their_defining_values(x):
    assert np.all(make_baselines("zero", x).array == 0)
    assert np.all(make_baselines("black", x, value_range=(-1, 1)).array == -1)
    assert np.all(make_baselines("constant", x, value=0.25).array == 0.25)
    assert np.all(make_baselines(0.5, x).array == 0.5)
    far = make_baselines("max_distance", x, value_range=(0, 1)).array[:, 0]
    np.testing.assert_array_equal(far, np.where(x < 0.5, 1.0, 0.0))
    # the max-distance baseline is at the largest L1 distance any image in range can be
    assert np.abs(far - x).sum() == pytest.approx(np.maximum(x, 1 - x).sum())


def test_blur_equals_scipy_gaussian_filter_with_sigma_5(x):
    blurred = make_baselines("blur", x).array[:, 0]
    for i in range(len(x)):
        expected = scipy.ndimage.gaussian_filter(x[i], sigma=(5, 5, 0), mode="reflect", truncate=4.0)
        np.testing.assert_allclose(blurred[i], expected, atol=1e-12)
    assert make_baselines("blur", x, blur_sigma=1.0).array.std() > blurred.std()


def test_random_baselines_are_seeded_shared_across_the_batch_and_in_range(x):
    a = make_baselines("uniform", x, n_baselines=4, seed=3).array
    b = make_baselines("uniform", x, n_baselines=4, seed=3).array
    c = make_baselines("uniform", x, n_baselines=4, seed=4).array
    assert a.shape == (1, 4) + x.shape[1:]
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    assert a.min() >= 0 and a.max() < 1
    assert abs(a.mean() - 0.5) < 0.02  # U[0, 1)
    g = make_baselines("gaussian", x, n_baselines=3, seed=0, sigma=0.2, value_range=(0, 1)).materialize(x)
    assert g.min() >= 0 and g.max() <= 1  # clipped to the valid range
    # the noise does not depend on the example: same draw around both images where unclipped
    inside = (g[0] > 0) & (g[0] < 1) & (g[1] > 0) & (g[1] < 1)
    np.testing.assert_allclose((g[0] - x[0])[inside], (g[1] - x[1])[inside], atol=1e-12)
    assert 0.15 < np.std((g[0] - x[0])[inside]) < 0.25


def test_deterministic_baselines_ignore_n_baselines(x):
    assert make_baselines("blur", x, n_baselines=5).count == 1


def test_ig_noise_equals_the_average_of_ig_over_each_drawn_baseline(relu_cnn, images):
    # a fixed chunk size: the repeat below is bit-identical (under "auto" it agrees to float32 rounding)
    noisy = IntegratedGradients(relu_cnn, baseline="uniform", n_baselines=4, seed=7, steps=12, batch_size=16)
    expl = noisy.attribute(images, target=1)
    draws = make_baselines("uniform", images, n_baselines=4, seed=7).array[0]
    separate = [np.asarray(IntegratedGradients(relu_cnn, baseline=d.astype(np.float32), steps=12)
                           .attribute(images, target=1)) for d in draws]
    np.testing.assert_allclose(np.asarray(expl), np.mean(separate, axis=0), atol=1e-6)
    assert expl.gradients == len(images) * 4 * 12
    again = noisy.attribute(images, target=1)
    np.testing.assert_array_equal(np.asarray(expl), np.asarray(again))
    other = noisy.attribute(images, target=1, seed=8)
    assert np.abs(np.asarray(other) - np.asarray(expl)).max() > 1e-4


def test_an_image_gets_the_same_noisy_ig_alone_or_in_a_batch(relu_cnn, images):
    ig = IntegratedGradients(relu_cnn, baseline="gaussian", n_baselines=3, steps=6, seed=1)
    batch = np.asarray(ig.attribute(images, target=0))
    alone = np.asarray(ig.attribute(images[2:3], target=0))
    np.testing.assert_allclose(batch[2:3], alone, atol=1e-6)


def test_per_example_and_callable_baselines(relu_cnn, images):
    per_example = np.stack([np.full(images.shape[1:], v, np.float32) for v in (0.1, 0.2, 0.3)])
    by_array = IntegratedGradients(relu_cnn, baseline=per_example, steps=5).attribute(images, target=0)
    by_callable = IntegratedGradients(relu_cnn, baseline=lambda x: per_example, steps=5).attribute(images, target=0)
    one = IntegratedGradients(relu_cnn, baseline=0.2, steps=5).attribute(images[1:2], target=0)
    np.testing.assert_allclose(np.asarray(by_array), np.asarray(by_callable), atol=1e-7)
    np.testing.assert_allclose(np.asarray(by_array)[1:2], np.asarray(one), atol=1e-6)


def test_bad_baselines_raise_clear_errors(x):
    with pytest.raises(ValueError, match="Unknown baseline.*Received: baseline='grey'"):
        make_baselines("grey", x)
    with pytest.raises(ValueError, match="needs a `value=` option"):
        make_baselines("constant", x)
    with pytest.raises(ValueError, match="does not match the inputs"):
        make_baselines(np.zeros((5, 12, 10, 3)), x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        make_baselines(np.full((12, 10, 3), np.nan), x)
    with pytest.raises(ValueError, match="positive integer"):
        make_baselines("uniform", x, n_baselines=0)
