"""ATV, multi-scale ATV, AUTVC and Simpson's rule: hand-checkable values, the shared reference
vectors, and agreement with the libraries the authors used (skimage, SciPy ≤ 1.10)."""

from pathlib import Path

import numpy as np
import pytest

from tfattr import metrics
from tfattr.errors import InvalidInputError

REFERENCE = Path("/work/shared/reference/metric_vectors.npz")


def checkerboard(height, width):
    return (np.indices((height, width)).sum(axis=0) % 2).astype(np.float64)


# -- Simpson's rule ----------------------------------------------------------------------------
def test_simpson_on_squares_over_six_points_is_251_over_6_with_even_count_averaging():
    assert metrics.simpson(np.arange(6.0) ** 2) == pytest.approx(251 / 6, abs=1e-12)


def test_simpson_odd_count_is_exact_for_cubics_and_small_counts_follow_scipy_simps():
    x = np.arange(7.0)
    assert metrics.simpson(x**3) == pytest.approx(6.0**4 / 4, abs=1e-12)  # Simpson is exact for cubics
    assert metrics.simpson([3.0]) == 0.0  # simps on one point
    assert metrics.simpson([1.0, 3.0]) == pytest.approx(2.0)  # two points: the trapezoid
    assert metrics.simpson(np.ones(31)) == pytest.approx(30.0, abs=1e-12)  # AUPC of an unchanged score


def test_simpson_integrates_each_row_of_a_batch_along_the_chosen_axis():
    rows = np.stack([np.arange(6.0) ** 2, np.ones(6)])
    np.testing.assert_allclose(metrics.simpson(rows), [251 / 6, 5.0])
    np.testing.assert_allclose(metrics.simpson(rows.T, axis=0), [251 / 6, 5.0])


# -- ATV ---------------------------------------------------------------------------------------
def test_constant_map_has_zero_atv_and_autvc_not_nan():
    maps = np.full((2, 64, 64), 3.5)
    np.testing.assert_array_equal(metrics.atv(maps), [0.0, 0.0])
    result = metrics.autvc(maps)
    np.testing.assert_array_equal(result.area, [0.0, 0.0])
    assert np.isfinite(result.curve).all()


@pytest.mark.parametrize("height, width", [(8, 8), (10, 17), (31, 4)])
def test_checkerboard_atv_is_two_minus_inverse_sides(height, width):
    assert metrics.atv(checkerboard(height, width))[0] == pytest.approx(2 - 1 / height - 1 / width, abs=1e-12)


def test_vertical_step_edge_atv_is_one_over_width():
    edge = np.zeros((12, 20))
    edge[:, 7:] = 1.0
    assert metrics.atv(edge)[0] == pytest.approx(1 / 20, abs=1e-12)
    # the map is normalised first: scale and sign do not matter
    assert metrics.atv(-40.0 * edge)[0] == pytest.approx(1 / 20, abs=1e-12)


def test_channels_are_summed_with_their_sign_before_the_absolute_value():
    plus = np.zeros((1, 16, 16, 2))
    plus[0, :, 8:, 0] = 1.0
    cancelled = plus.copy()
    cancelled[0, :, 8:, 1] = -1.0  # signed sum cancels the edge
    assert metrics.atv(plus)[0] == pytest.approx(1 / 16)
    assert metrics.atv(cancelled)[0] == 0.0


def test_normalisation_clips_at_the_99th_percentile_and_handles_sparse_maps():
    values = np.arange(1000.0).reshape(1, 10, 100)
    normalised = metrics.normalise_maps(values)
    p99 = np.percentile(values, 99)
    np.testing.assert_allclose(normalised, np.clip(values / p99, 0, 1))
    sparse = np.zeros((1, 20, 20))
    sparse[0, 3, 4] = 5.0  # P99 = min = 0: the limit of the clipped ratio, 1 where |a| > min
    np.testing.assert_array_equal(metrics.normalise_maps(sparse), (sparse > 0).astype(float))


# -- pyramid and AUTVC ---------------------------------------------------------------------------
def test_pyramid_levels_on_224_are_224_150_100_67_45_30():
    result = metrics.autvc(np.random.default_rng(0).normal(size=(1, 224, 224)))
    assert result.sizes == [(224, 224), (150, 150), (100, 100), (67, 67), (45, 45), (30, 30)]
    assert result.area[0] == pytest.approx(metrics.simpson(result.curve[0]), abs=1e-15)


def test_pyramid_matches_skimage_pyramid_gaussian():
    transform = pytest.importorskip("skimage.transform")
    image = np.random.default_rng(1).normal(size=(50, 37))
    ours = metrics.gaussian_pyramid(image, min_size=1)
    theirs = list(transform.pyramid_gaussian(image, downscale=1.5))
    assert len(ours) == len(theirs)
    for level, expected in zip(ours, theirs):
        np.testing.assert_allclose(level[0], expected, atol=1e-12)


def test_autvc_reproduces_the_reference_vectors():
    reference = np.load(REFERENCE)
    result = metrics.autvc(reference["maps"])
    assert result.sizes == [(64, 64), (43, 43)]
    np.testing.assert_allclose(result.area, reference["autvc"], atol=1e-6, rtol=0)
    # two levels: Simpson with even-count averaging is the trapezoid
    np.testing.assert_allclose(result.area, result.curve.mean(axis=1), atol=1e-15)


def test_smoother_maps_have_lower_autvc():
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(1, 64, 64))
    yy, xx = np.mgrid[:64, :64]
    blob = np.exp(-((yy - 30) ** 2 + (xx - 34) ** 2) / 200.0)[None]
    assert metrics.autvc(blob).area[0] < metrics.autvc(noise).area[0]


def test_smoothness_metrics_are_batch_invariant():
    maps = np.random.default_rng(3).normal(size=(3, 48, 46, 3))  # two pyramid levels
    batch = metrics.autvc(maps)
    for i in range(3):
        single = metrics.autvc(maps[i : i + 1])
        np.testing.assert_array_equal(single.curve[0], batch.curve[i])
        assert metrics.atv(maps[i : i + 1])[0] == metrics.atv(maps)[i]
    np.testing.assert_array_equal(metrics.multiscale_atv(maps), batch.curve)


def test_smoothness_rejects_bad_shapes_and_options():
    with pytest.raises(InvalidInputError, match=r"Received: attributions.shape=\(4,\)"):
        metrics.atv(np.ones(4))
    with pytest.raises(InvalidInputError, match="smaller than `min_size`"):
        metrics.autvc(np.ones((1, 20, 20)))
    with pytest.raises(InvalidInputError, match=r"greater than 1.*Received: downscale=1.0"):
        metrics.autvc(np.ones((1, 40, 40)), downscale=1)
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        metrics.atv(np.full((1, 4, 4), np.nan))


# -- where AUTVC is undefined, and constant maps ------------------------------------------------
def test_autvc_min_size_follows_the_pyramid_rule():
    assert metrics.autvc_min_size() == (44, 44)  # ceil(44 / 1.5) = 30 ≥ 30; ceil(43 / 1.5) = 29 stops
    assert metrics.autvc_min_size(downscale=2, min_size=(10, 20)) == (19, 39)
    for side in (44, 45, 64):
        assert len(metrics.multiscale_atv(np.ones((1, side, side)))[0]) >= 2
    assert len(metrics.multiscale_atv(np.ones((1, 43, 43)))[0]) == 1


@pytest.mark.parametrize("shape", [(1, 32, 32), (1, 43, 43), (1, 43, 200), (2, 32, 32, 3)])
def test_autvc_of_maps_with_one_pyramid_level_raises_naming_the_minimum_size(shape):
    noise = np.random.default_rng(0).normal(size=shape)  # noise once scored a "perfect" 0 here
    with pytest.raises(metrics.AUTVCUndefinedError, match=r"at least 44×44 pixels.*Received: maps.shape="):
        metrics.autvc(noise)
    assert issubclass(metrics.AUTVCUndefinedError, InvalidInputError)
    assert metrics.autvc(np.random.default_rng(0).normal(size=(1, 44, 44))).area[0] > 0.3  # noise: rough


@pytest.mark.parametrize("shape", [(1, 224, 224, 3), (1, 299, 299, 3), (1, 64, 64, 3), (1, 513, 257, 3),
                                   (1, 1000, 1000)])
@pytest.mark.parametrize("value", [1.0, 3.5, 1e30, -255.0])
def test_constant_maps_are_perfectly_smooth_at_every_pyramid_level(shape, value):
    maps = np.full(shape, value, np.float32)  # the pyramid adds rounding noise of a few ε
    result = metrics.autvc(maps)
    np.testing.assert_array_equal(result.curve, np.zeros_like(result.curve))
    np.testing.assert_array_equal(result.area, [0.0])
    for level in metrics.gaussian_pyramid(maps):
        np.testing.assert_array_equal(metrics.normalise_maps(level), np.zeros_like(level))


def test_a_map_constant_up_to_float64_rounding_has_zero_atv_but_a_float32_step_counts():
    rng = np.random.default_rng(4)
    jitter = 1.0 + rng.integers(-8, 9, size=(1, 64, 64)) * np.finfo(np.float64).eps  # ±8 ulps
    np.testing.assert_array_equal(metrics.atv(jitter), [0.0])
    step = np.ones((1, 64, 64), np.float32)
    step[0, :, 32:] = np.nextafter(np.float32(1), np.float32(2))  # one float32 ulp: a real edge
    assert metrics.atv(step)[0] == pytest.approx(1 / 64, abs=1e-12)


def test_varying_maps_score_as_the_plain_clipped_ratio():
    """Away from constant maps nothing changed: the normalisation is the plain formula."""
    maps = np.random.default_rng(5).normal(size=(2, 224, 224, 3))
    levels = metrics.gaussian_pyramid(maps)

    def plain(level):
        magnitude = np.abs(level)
        low = magnitude.reshape(len(level), -1).min(axis=1)[:, None, None]
        high = np.percentile(magnitude.reshape(len(level), -1), 99, axis=1)[:, None, None]
        scaled = np.clip((magnitude - low) / (high - low), 0, 1)
        return (np.abs(np.diff(scaled, axis=2)).sum(axis=(1, 2)) + np.abs(np.diff(scaled, axis=1)).sum(axis=(1, 2))) \
            / (level.shape[1] * level.shape[2])

    curve = np.stack([plain(level) for level in levels], axis=1)
    result = metrics.autvc(maps)
    np.testing.assert_array_equal(result.curve, curve)
    np.testing.assert_array_equal(result.area, metrics.simpson(curve, axis=1))
    assert 1.0 < result.area[0] < 10.0  # noise is rough
