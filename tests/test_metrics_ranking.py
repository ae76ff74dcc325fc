"""Rankings that do not depend on a machine's last bits: values equal up to rounding are ties,
broken by position; the AUPC carry-over keeps the first copy among those equally close to the
median up to rounding. A map computed on another CPU, thread count or batch composition differs
from this one in the last bits; these tests perturb maps and scores by such amounts and require
the same windows, pixel order, kept copies and curves."""

import numpy as np
from conftest import small_cnn

from tfattr import metrics
from tfattr.metrics._common import RANK_BITS, closest_to_median, descending_order, rank_keys

EPS32 = float(np.finfo(np.float32).eps)


def last_bits(values, seed, ulps=4):
    """``values`` with a few float32 ulps of relative noise, as another machine might give."""
    noise = np.random.default_rng(seed).integers(-ulps, ulps + 1, size=np.shape(values))
    return (np.asarray(values, np.float32) * (1 + noise * EPS32)).astype(np.float32)


def test_values_equal_up_to_rounding_rank_by_position():
    values = np.array([0.5, 1.0, 1.0 + 2 * EPS32, 1.0 - 3 * EPS32, 0.25, 1.0 + EPS32])
    np.testing.assert_array_equal(descending_order(values), [1, 2, 3, 5, 0, 4])
    # genuinely different values keep their order, whatever their position
    np.testing.assert_array_equal(descending_order([0.1, 0.3, 0.2, -0.4]), [1, 2, 0, 3])


def test_the_grid_is_a_power_of_two_of_the_scale_and_ignores_last_bits_of_the_maximum():
    keys = rank_keys(np.array([[3.0, 1.5, 0.0]]))
    np.testing.assert_array_equal(keys, [[3.0 * 2.0 ** (RANK_BITS - 2), 1.5 * 2.0 ** (RANK_BITS - 2), 0.0]])
    np.testing.assert_array_equal(rank_keys(np.array([[3.0 * (1 + EPS32), 1.5, 0.0]])), keys)
    np.testing.assert_array_equal(rank_keys(np.zeros((2, 3))), np.zeros((2, 3)))  # no scale: all tied


def test_deletion_curve_is_the_same_for_maps_that_differ_in_the_last_bits():
    model = small_cnn("tanh", size=16)
    images = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    # plateaus of equal saliency that span many deletion steps (16 pixels a step)
    saliency = np.repeat(np.repeat(np.arange(4, dtype=np.float32)[::-1].reshape(2, 2), 8, 0), 8, 1)
    maps = np.stack([saliency, saliency.T])
    reference = metrics.deletion(model, images, maps, pixels_per_step=16, verbose=0)
    for seed in range(3):
        other = metrics.deletion(model, images, last_bits(maps, seed), pixels_per_step=16, verbose=0)
        np.testing.assert_array_equal(other.curve, reference.curve)
        inserted = metrics.insertion(model, images, last_bits(maps, seed + 10), pixels_per_step=16, verbose=0)
        np.testing.assert_array_equal(
            inserted.curve, metrics.insertion(model, images, maps, pixels_per_step=16, verbose=0).curve)


def test_aupc_windows_are_the_same_for_maps_that_differ_in_the_last_bits():
    relevance = np.zeros((24, 24), np.float32)
    relevance[2:20, 2:20] = 1.0  # a plateau: many windows with equal means
    reference = metrics.select_windows(relevance, kernel_size=3, regions=8)
    np.testing.assert_array_equal(reference[0, :3], [[2, 2], [2, 5], [2, 8]])  # plateau windows, row-major
    for seed in range(3):
        np.testing.assert_array_equal(metrics.select_windows(last_bits(relevance, seed), 3, 8), reference)


def test_the_first_copy_equally_close_to_the_median_is_kept_whatever_the_rounding():
    # median (0.1 + 0.2)/2 rounds so that |0.1 − m| > |0.2 − m| in float64, but the two middle
    # scores are equally close: the first copy is kept, as in the authors' loop
    scores = np.array([[0.0, 0.1, 0.2, 1.0]])
    assert np.argmin(np.abs(scores - np.median(scores, axis=1, keepdims=True)), axis=1)[0] == 2
    assert closest_to_median(scores, axis=1)[0] == 1
    assert closest_to_median(np.array([[0.0, 0.2, 0.1, 1.0]]), axis=1)[0] == 1
    # a score genuinely closer than the rest is still chosen
    assert closest_to_median(np.array([[0.0, 0.1, 0.45, 0.9, 1.0]]), axis=1)[0] == 2


def test_pointing_game_points_at_the_first_maximum_up_to_rounding():
    saliency = np.zeros((1, 8, 8), np.float32)
    saliency[0, 1, 6] = 1.0  # first in row-major order
    saliency[0, 6, 1] = 1.0 + 2 * EPS32  # another machine's last bits make this one "larger"
    mask = np.zeros((1, 8, 8), bool)
    mask[0, 0:3, 5:8] = True
    result = metrics.pointing_game(saliency, mask, tolerance=0)
    np.testing.assert_array_equal(result.points, [[1, 6]])
    assert result.accuracy == 1.0
