"""Completeness error (IG), Taylor reconstruction error (SmoothTaylor), pointing game, mask energy."""

import keras
import numpy as np
import pytest

from tfattr import IntegratedGradients, metrics
from tfattr.errors import InvalidInputError


@pytest.fixture(scope="module")
def affine():
    """f(x) = x·W + b in float64 on 6×6×3 images, 2 classes (non-zero biases)."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(108, 2))
    bias = np.array([0.7, -0.4])
    inputs = keras.Input((6, 6, 3), dtype="float64")
    dense = keras.layers.Dense(2, dtype="float64")
    model = keras.Model(inputs, dense(keras.layers.Reshape((108,), dtype="float64")(inputs)))
    dense.set_weights([weights, bias])
    images = rng.uniform(size=(3, 6, 6, 3))
    return model, weights, bias, images


def test_exact_ig_of_an_affine_model_has_zero_completeness_error(affine):
    model, weights, bias, images = affine
    baseline = np.full((6, 6, 3), 0.25)
    exact = (images - baseline) * weights[:, 1].reshape(6, 6, 3)  # IG of an affine f is (x − z)·w
    result = metrics.completeness_error(model, images, exact, baselines=baseline, target=1)
    np.testing.assert_allclose(result.error, 0.0, atol=1e-12)
    np.testing.assert_allclose(result.scores, images.reshape(3, -1) @ weights[:, 1] + bias[1], rtol=1e-12)
    wrong = metrics.completeness_error(model, images, np.zeros_like(images), baselines=baseline, target=1)
    np.testing.assert_allclose(wrong.error, np.abs(result.scores - result.reference_scores), rtol=1e-12)
    np.testing.assert_allclose(wrong.relative_error, 1.0)


def test_taylor_error_is_zero_for_smoothtaylor_of_an_affine_model_and_averages_the_roots(affine):
    model, weights, bias, images = affine
    roots = images[:, None] + np.random.default_rng(1).normal(scale=0.3, size=(3, 5, 6, 6, 3))
    w = weights[:, 0].reshape(6, 6, 3)
    smooth_taylor = ((images[:, None] - roots) * w).mean(axis=1)  # eq. (SmoothTaylor), exact gradients
    result = metrics.taylor_error(model, images, smooth_taylor, roots, target=0)
    np.testing.assert_allclose(result.error, 0.0, atol=1e-12)
    expected_roots = (roots.reshape(3, 5, -1) @ weights[:, 0] + bias[0]).mean(axis=1)
    np.testing.assert_allclose(result.reference_scores, expected_roots, rtol=1e-12)


def test_completeness_error_agrees_with_ig_delta_and_shrinks_with_more_steps(smooth_cnn, images):
    errors = []
    for steps in (4, 64):
        explanation = IntegratedGradients(smooth_cnn, steps=steps, verbose=0).attribute(images)
        result = metrics.completeness_error(smooth_cnn, images, explanation.attributions, baselines=0.0)
        np.testing.assert_allclose(result.error, np.abs(explanation.delta), rtol=1e-3, atol=1e-5)
        np.testing.assert_array_equal(result.targets, explanation.targets)
        errors.append(result.error.mean())
    assert errors[1] < errors[0]


def test_completeness_is_batch_invariant_and_validates_reference_shapes(affine):
    model, weights, _, images = affine
    attributions = np.random.default_rng(2).normal(size=images.shape)
    batch = metrics.completeness_error(model, images, attributions)
    for i in range(3):
        single = metrics.completeness_error(model, images[i], attributions[i])
        assert single.error[0] == pytest.approx(batch.error[i], rel=1e-12)
    with pytest.raises(InvalidInputError, match=r"Received: baselines.shape=\(2, 6, 6, 3\)"):
        metrics.completeness_error(model, images, attributions, baselines=np.zeros((2, 6, 6, 3)))
    with pytest.raises(InvalidInputError, match=r"Received: attributions.shape=\(3, 6, 6\)"):
        metrics.completeness_error(model, images, attributions.sum(-1))


# -- localisation ----------------------------------------------------------------------------
def test_pointing_game_hits_inside_and_within_tolerance_and_skips_empty_masks():
    maps = np.zeros((4, 40, 40))
    maps[0, 10, 10] = 1.0  # inside the mask
    maps[1, 10, 30] = 1.0  # 8 px right of the mask edge (column 22): hit at 15, miss at 5
    maps[2, 35, 35] = 1.0  # far away
    maps[3, 0, 0] = 1.0  # empty mask: not counted
    masks = np.zeros((4, 40, 40), dtype=bool)
    masks[:3, 5:15, 5:23] = True
    result = metrics.pointing_game(maps, masks)
    np.testing.assert_array_equal(result.hits, [True, True, False, False])
    np.testing.assert_array_equal(result.valid, [True, True, True, False])
    np.testing.assert_array_equal(result.points[:3], [[10, 10], [10, 30], [35, 35]])
    assert result.accuracy == pytest.approx(2 / 3)
    strict = metrics.pointing_game(maps, masks[..., None], tolerance=5)
    np.testing.assert_array_equal(strict.hits, [True, False, False, False])
    assert metrics.pointing_game(maps, masks, tolerance=8).hits[1]


def test_pointing_game_uses_the_signed_channel_sum_unless_absolute():
    attributions = np.zeros((1, 20, 20, 2))
    attributions[0, 2, 2, :] = [1.0, 0.5]  # sum 1.5
    attributions[0, 15, 15, :] = [-3.0, -3.0]  # sum −6: largest magnitude
    mask = np.zeros((1, 20, 20))
    mask[0, 14:17, 14:17] = 1
    assert not metrics.pointing_game(attributions, mask, tolerance=0).hits[0]
    assert metrics.pointing_game(attributions, mask, tolerance=0, absolute=True).hits[0]


def test_mask_energy_is_the_share_of_positive_energy_inside_the_mask():
    maps = np.zeros((3, 4, 4))
    maps[0, 0, 0], maps[0, 3, 3], maps[0, 1, 1] = 3.0, 1.0, -5.0
    maps[1, 0, 0] = -2.0  # no positive energy
    maps[2] = 1.0
    masks = np.zeros((3, 4, 4))
    masks[:, :2, :2] = 1
    np.testing.assert_allclose(metrics.mask_energy(maps, masks), [0.75, 0.0, 0.25])
    np.testing.assert_allclose(metrics.mask_energy(maps, masks, absolute=True), [8 / 9, 1.0, 0.25])
    with pytest.raises(InvalidInputError, match=r"Received: masks.shape=\(3, 4, 5\)"):
        metrics.mask_energy(maps, np.zeros((3, 4, 5)))
