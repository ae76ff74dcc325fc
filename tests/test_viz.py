"""Pictures: normalisation values, overlays, atomic PNG writing."""

import os

import cv2
import numpy as np

from tfattr import viz


def test_normalize_clips_at_the_percentile_and_keeps_signs():
    a = np.zeros((10, 10, 3))
    a[..., 0] = np.arange(100).reshape(10, 10)
    a[0, 0, 1] = -1000.0  # one outlier, signed channel sum −1000
    heat = viz.normalize(a, "abs", percentile=99)
    assert heat.max() == 1.0 and heat.min() == heat[0, 1] > 0
    assert heat[0, 0] == 1.0  # clipped outlier
    scale = np.percentile(np.abs(a.sum(-1)), 99)
    assert heat[5, 5] == np.abs(a.sum(-1))[5, 5] / scale
    signed = viz.normalize(a, "signed", percentile=99)
    assert signed[0, 0] == -1.0 and signed[9, 9] == heat[9, 9] > 0
    assert np.all(viz.normalize(np.zeros((4, 4, 3))) == 0)


def test_overlay_with_zero_alpha_is_the_image_and_heat_follows_the_map():
    image = np.full((8, 8, 3), 0.5)
    same = viz.overlay(image, np.random.default_rng(0).normal(size=(8, 8, 3)), alpha=0.0)
    assert np.all(same == 128)
    attribution = np.zeros((8, 8, 3))
    attribution[2, 3] = 1.0
    hot = viz.overlay(image, attribution, alpha=1.0).astype(int)
    assert hot[2, 3].sum() > hot[0, 0].sum() + 200  # inferno: bright where relevant, black elsewhere
    signed = viz.overlay(image, -attribution, mode="signed", alpha=1.0)
    assert signed[2, 3, 2] > signed[2, 3, 0]  # negative evidence is blue


def test_save_png_is_atomic_and_round_trips(tmp_path):
    picture = (np.random.default_rng(1).uniform(0, 255, (6, 7, 3))).astype(np.uint8)
    path = viz.save_png(tmp_path / "sub" / "p.png", picture)
    assert os.listdir(tmp_path / "sub") == ["p.png"]
    np.testing.assert_array_equal(cv2.imread(path)[..., ::-1], picture)


def test_grid_places_tiles_with_titles():
    tiles = [[np.full((10, 10, 3), v, np.uint8) for v in (0, 100)],
             [np.full((10, 10, 3), v, np.uint8) for v in (200, 50)]]
    out = viz.grid(tiles, [["a", "b"], ["c", "d"]], pad=1)
    assert out.shape == (2 * (16 + 10 + 2), 2 * 12, 3)
    assert out[1 + 16 + 5, 12 + 1 + 5, 0] == 100 and out[28 + 1 + 16 + 5, 1 + 5, 0] == 200


def test_plot_curves_draws_each_series_in_its_colour_where_its_values_are():
    rising = np.linspace(0, 1, 11)
    picture = viz.plot_curves({"rising": rising, "flat": np.full(11, 0.5)}, title="t", size=(400, 300))
    assert picture.shape == (300, 400, 3)
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])
    plot = picture[30:260, 60:250].astype(int)
    blue_rows, blue_cols = np.nonzero(np.abs(plot - blue).sum(-1) < 60)
    orange_rows, _ = np.nonzero(np.abs(plot - orange).sum(-1) < 60)
    assert blue_rows.size and orange_rows.size
    # the rising series goes from bottom-left to top-right; the flat one stays on one row band
    assert np.corrcoef(blue_cols, -blue_rows)[0, 1] > 0.95
    assert orange_rows.max() - orange_rows.min() <= 4
