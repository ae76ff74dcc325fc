"""matplotlib figures: the arrays drawn equal the expected normalisation, signs, curves equal the metric's."""

import matplotlib

matplotlib.use("Agg")

import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import tfattr  # noqa: E402
from tfattr import metrics, viz  # noqa: E402
from tfattr.errors import InvalidInputError  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _known_map():
    """A signed (4, 5, 2) map whose channel sum is −4 … 15, with one outlier of 100."""
    total = np.arange(20, dtype=np.float64).reshape(4, 5) - 4.0
    total[3, 4] = 100.0
    a = np.stack([total * 0.25, total * 0.75], axis=-1)
    return a, total


def test_heat_map_draws_the_absolute_map_divided_by_its_percentile_and_clipped():
    a, total = _known_map()
    fig, ax = viz.show(a, method="heat_map", sign="absolute_value", percentile=90)
    drawn = np.asarray(ax.images[0].get_array())
    scale = np.percentile(np.abs(total), 90)
    np.testing.assert_allclose(drawn, np.clip(np.abs(total) / scale, 0, 1))
    assert drawn[3, 4] == 1.0 and drawn[0, 4] == 0.0  # the outlier is clipped, the zero stays 0
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert len(fig.axes) == 2  # the axes and its colorbar


def test_signs_select_positive_negative_and_all_values():
    a, total = _known_map()
    pos = viz.normalise_sign(a, "positive", 100)
    np.testing.assert_allclose(pos, np.maximum(total, 0) / 100.0)
    neg = viz.normalise_sign(a, "negative", 100)
    np.testing.assert_allclose(neg, np.maximum(-total, 0) / 4.0)  # magnitudes of the negative values
    assert neg[0, 0] == 1.0 and neg[2, 0] == 0.0
    signed = viz.normalise_sign(a, "all", 100)
    np.testing.assert_allclose(signed, total / 100.0)
    assert signed.min() < 0
    _, ax = viz.show(a, sign="all", percentile=100)
    assert ax.images[0].get_clim() == (-1.0, 1.0)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), total / 100.0)
    assert np.all(viz.normalise_sign(np.ones((3, 3)), "negative") == 0)  # nothing of that sign: zeros


def test_blended_masked_and_alpha_draw_the_image_with_the_map():
    a, total = _known_map()
    image = np.linspace(0, 255, 4 * 5 * 3).reshape(4, 5, 3)
    heat = viz.normalise_sign(a, "positive", 99)
    _, ax = viz.show(a, image, "masked_image", "positive", value_range=(0, 255))
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), image / 255.0 * heat[..., None])
    _, ax = viz.show(a, image, "alpha_scaling", "positive", value_range=(0, 255))
    rgba = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(rgba[..., 3], heat)
    np.testing.assert_allclose(rgba[..., :3], image / 255.0)
    _, ax = viz.show(a, image, "blended_heat_map", "positive", value_range=(0, 255), alpha=0.3)
    assert len(ax.images) == 2 and ax.images[1].get_alpha() == 0.3
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), (image / 255.0).mean(-1))
    np.testing.assert_allclose(np.asarray(ax.images[1].get_array()), heat)


def test_bad_arguments_raise_named_errors():
    a, _ = _known_map()
    with pytest.raises(InvalidInputError, match="`method`.*Received: method='contour'"):
        viz.show(a, method="contour")
    with pytest.raises(InvalidInputError, match="Received: sign='both'"):
        viz.show(a, sign="both")
    with pytest.raises(InvalidInputError, match="Received: image=None"):
        viz.show(a, method="blended_heat_map")
    with pytest.raises(InvalidInputError, match="Received: sign='all'"):
        viz.show(a, np.zeros((4, 5, 3)), method="masked_image", sign="all")
    with pytest.raises(InvalidInputError, match="image.shape"):
        viz.show(a, np.zeros((5, 4, 3)), method="masked_image")


def test_explanation_plot_draws_the_chosen_example():
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    x = np.random.default_rng(0).uniform(size=(2, 6, 6, 1)).astype("float32")
    expl = tfattr.Gradient(model).attribute(x, target=1)
    fig, ax = expl.plot(index=1, sign="all", percentile=100)
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()),
                               viz.normalise_sign(np.asarray(expl)[1], "all", 100))
    assert ax.get_title() == expl.method
    with pytest.raises(InvalidInputError, match="Received: index=2"):
        expl.plot(index=2)


def test_grid_has_one_row_per_image_and_one_column_per_method():
    images = np.random.default_rng(1).uniform(size=(3, 6, 6, 3))
    maps = np.random.default_rng(2).normal(size=(3, 6, 6, 3))
    fig, axes = viz.show_grid(images, {"a": maps, "b": -maps}, method="heat_map", sign="positive")
    assert axes.shape == (3, 3)
    np.testing.assert_allclose(np.asarray(axes[2, 2].images[0].get_array()),
                               viz.normalise_sign(-maps[2], "positive"))
    np.testing.assert_allclose(np.asarray(axes[1, 0].images[0].get_array()), images[1])
    assert axes[0, 1].get_title() == "a"


def test_curves_are_the_metrics_curves_with_their_areas():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    x = np.random.default_rng(3).uniform(size=(2, 8, 8, 1)).astype("float32")
    maps = np.random.default_rng(4).normal(size=(2, 8, 8, 1)).astype("float32")
    deletion = metrics.deletion(model, x, maps, pixels_per_step=8)
    insertion = metrics.insertion(model, x, maps, pixels_per_step=8)
    fig, ax = viz.show_curves({"deletion": deletion, "insertion": insertion}, index=1)
    xy = ax.lines[0].get_xydata()
    np.testing.assert_allclose(xy[:, 1], deletion.curve[1])
    np.testing.assert_allclose(xy[:, 0], np.linspace(0, 1, deletion.curve.shape[1]))
    np.testing.assert_allclose(np.trapezoid(xy[:, 1], xy[:, 0]), deletion.auc[1], rtol=1e-12)
    np.testing.assert_allclose(ax.lines[1].get_xydata()[:, 1], insertion.curve[1])
    assert ax.get_xlabel() == "fraction of pixels moved" and len(ax.get_xticks()) > 2
    assert ax.get_legend().get_texts()[0].get_text() == f"deletion ({deletion.auc[1]:.3g})"
    aupc = metrics.aupc(model, x, maps, kernel_size=2, regions=4, perturbations=2, seed=0)
    _, ax = viz.show_curves(aupc)
    np.testing.assert_allclose(ax.lines[0].get_xydata()[:, 0], np.arange(5))
    np.testing.assert_allclose(ax.lines[0].get_xydata()[:, 1], aupc.curve[0])
    np.testing.assert_allclose(metrics.simpson(ax.lines[0].get_xydata()[None, :, 1]), aupc.area[:1])
    with pytest.raises(InvalidInputError, match="Received: index=5"):
        viz.show_curves(aupc, index=5)


def test_show_takes_odd_maps_exactly_or_refuses_them_by_name():
    """Complex maps lost their imaginary part silently, strings were a raw ValueError, finite maps whose
    channel sum overflows were called non-finite, and a batch of grey images (N, H, W) given to show_grid
    was read as one image (an error about the maps' count)."""
    import ml_dtypes

    from tfattr.errors import InvalidTypeError

    with pytest.raises(InvalidTypeError, match=r"real-valued map\. Received: attribution\.dtype='complex128'$"):
        viz.normalise_sign(np.ones((4, 4)) * 1j)
    with pytest.raises(InvalidTypeError, match=r"real-valued map\. Received: attribution\.dtype='<U3'$"):
        viz.normalise_sign(np.array([["abc"] * 2] * 2))
    huge = np.full((4, 4, 3), 1e308)
    huge[0, 0] = 0.0
    expected = np.ones((4, 4))
    expected[0, 0] = 0.0
    np.testing.assert_array_equal(viz.normalise_sign(huge, percentile=100), expected)
    half = np.arange(16, dtype=np.float32).reshape(4, 4).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(viz.normalise_sign(half, percentile=100), np.arange(16).reshape(4, 4) / 15)
    grey = np.random.default_rng(0).random((2, 8, 8))
    fig, axes = viz.show_grid(grey, {"m": np.ones((2, 8, 8))})
    assert axes.shape == (2, 2)
    np.testing.assert_allclose(axes[1, 0].images[0].get_array(), np.repeat(grey[1][..., None], 3, axis=-1))
    plt.close(fig)
