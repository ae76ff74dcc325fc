"""Second audit of the dataset surface (issue #30): what falls between explain_dataset, evaluate_dataset,
the store and its third-party readers.

A small CNN at 16 px with non-zero biases (built here, no training) and a few synthetic images keep each
test to seconds.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

import tfattr

N = 8


def _cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv",
                            bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(10, bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 2)),
    ])


@pytest.fixture(scope="module")
def model():
    return _cnn()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(size=(N, 16, 16, 3)).astype(np.float32)


def _folder_with_corrupt_first_batch(path):
    """Two corrupt files sorted first (the whole first batch of 2), then four good 8-bit PNGs."""
    import cv2

    os.makedirs(path)
    for i in range(2):
        with open(os.path.join(path, f"a{i}.png"), "wb") as f:
            f.write(b"not a png")
    rng = np.random.default_rng(1)
    for i in range(4):
        cv2.imwrite(os.path.join(path, f"b{i}.png"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return path


# -- an all-skipped first batch ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gradcam", "permutation"])
def test_all_skipped_first_batch_with_each_kind_of_method(tmp_path, model, kind):
    """With every item of the first batch corrupt, the runner probed the maps' shape with ONE blank
    image: FeaturePermutation (which needs >= 2 images) crashed the run with on_error='skip'. A CAM's
    (H, W) maps keep their shape; the skipped items are NaN and the good ones equal ``attribute``."""
    folder = _folder_with_corrupt_first_batch(str(tmp_path / "imgs"))
    method = tfattr.GradCAM(model, layer="conv") if kind == "gradcam" else tfattr.FeaturePermutation(model)
    tfattr.explain_dataset(method, folder, str(tmp_path / "out"), batch_size=2, on_error="skip",
                           value_range=(0, 1), verbose=0)
    store = tfattr.open_explanations(str(tmp_path / "out"))
    maps = np.asarray(store.attributions[:])
    assert maps.shape == ((6, 16, 16) if kind == "gradcam" else (6, 16, 16, 3))
    assert np.isnan(maps[:2]).all() and not np.isnan(maps[2:]).any()
    assert list(np.asarray(store.valid[:])) == [False, False, True, True, True, True]
    table = tfattr.evaluate_dataset(model, folder, [("m", method)], ["deletion"], str(tmp_path / "eval"),
                                    batch_size=2, on_error="skip", value_range=(0, 1), verbose=0)
    assert table is not None
    rows = tfattr.open_explanations(str(tmp_path / "eval" / "m")).rows()
    rows = rows.to_pandas() if hasattr(rows, "to_pandas") else rows
    rows = rows.sort_values("index")
    assert list(rows["status"]) == ["skipped"] * 2 + ["ok"] * 4
    assert np.isfinite(rows["metric:deletion"].to_numpy()[2:]).all()


# -- third-party readers ---------------------------------------------------------------------------------
def test_store_is_read_by_xarray_dask_and_zarr_as_open_explanations_reads_it(tmp_path, model, images):
    """The docs say the store is readable by xarray, dask and zarr directly: every array, the string ids
    and the dimension names read by each equal what ``open_explanations`` gives."""
    import dask.array as da
    import xarray as xr
    import zarr

    out = str(tmp_path / "out")
    tfattr.explain_dataset(tfattr.IntegratedGradients(model, steps=4), images, out, batch_size=3, verbose=0)
    store = tfattr.open_explanations(out)
    path = os.path.join(out, "data.zarr")
    group = zarr.open_group(path, mode="r")
    ds = xr.open_zarr(path, consolidated=False)
    names = ["attributions", "ids", "targets", "scores", "delta", "valid"]
    assert sorted(group.array_keys()) == sorted(names)
    for name in names:
        ours = np.asarray(getattr(store, name)[:])
        assert ds[name].dims[0] == "item" and group[name].metadata.dimension_names[0] == "item"
        for theirs in (group[name][:], ds[name].values, da.from_zarr(path, component=name).compute()):
            if name == "ids":
                assert [str(v) for v in theirs] == [str(v) for v in ours] == [str(i) for i in range(N)]
            else:
                assert theirs.dtype == ours.dtype
                np.testing.assert_array_equal(theirs, ours)
