"""The uniform-output baseline shipped for the ImageNet EfficientNet-Lite0
(``saved_baselines/efficientnet_lite0_uniform``): it loads for that model (fingerprint and input
shape), and the model's softmax on it is within the bound its metadata reports of uniform,
far closer than on black."""

import os
import warnings

import numpy as np
import pytest

from tfattr.baselines import BaselineMismatchWarning, load_baseline

FOLDER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "saved_baselines",
                      "efficientnet_lite0_uniform")


def softmax(logits):
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def test_shipped_efficientnet_lite0_baseline_gives_a_near_uniform_softmax(lite0):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BaselineMismatchWarning)
        loaded = load_baseline(FOLDER, model=lite0)  # raises on another architecture or other weights
    meta = loaded.metadata
    assert meta["model"]["num_classes"] == 1000 and loaded.array.shape == (224, 224, 3)
    reported = meta["statistics"]["after"]["max_abs_error"]
    black_reported = meta["statistics"]["before"]["max_abs_error"]
    assert reported <= black_reported / 50  # what the README claims: ~70× closer to uniform than black
    p = softmax(lite0(np.stack([loaded.array, np.zeros_like(loaded.array)]).astype(np.float32)).numpy())
    error = np.abs(p - 1e-3).max(axis=1)  # max_k |p_k − 1/K| on the baseline and on black
    # float32 logits differ between CPUs in their last bits: a 1e-3 relative margin covers it
    assert error[0] <= reported * 1.001 + 1e-7
    assert error[1] == pytest.approx(black_reported, rel=1e-3)
    assert error[1] / error[0] >= 50
    # the pixels stayed close to black, as reported
    assert np.mean(loaded.array.astype(np.float64) ** 2) == pytest.approx(
        meta["statistics"]["pixels"]["mean_squared_change"], rel=1e-6)


def test_shipped_baselines_load_by_name_and_the_checkout_paths_are_the_same_files():
    import tfattr
    from tfattr.baselines import SHIPPED_BASELINES, load_shipped, make_baselines
    from tfattr.errors import InvalidInputError

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert sorted(SHIPPED_BASELINES) == ["digits_on_photos_uniform", "efficientnet_lite0_uniform"]
    for name in SHIPPED_BASELINES:
        by_name = load_shipped(name)
        old_path = load_baseline(os.path.join(root, "saved_baselines", name))  # the checkout's path still works
        np.testing.assert_array_equal(by_name.array, old_path.array)
        assert by_name.metadata == old_path.metadata
    digits = load_shipped("shipped:digits_on_photos_uniform").array
    made = make_baselines("shipped:digits_on_photos_uniform", np.zeros((2, 64, 64, 3), np.float32))
    np.testing.assert_array_equal(made.array[0, 0], digits)
    assert made.name.endswith("digits_on_photos_uniform")
    assert tfattr.load_shipped is load_shipped
    with pytest.raises(InvalidInputError, match=r"ships no baseline.*Received: name='shipped:nope'$"):
        make_baselines("shipped:nope", np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(InvalidInputError, match=r"ships no baseline.*Received: name='digits'$"):
        load_shipped("digits")


def test_a_shipped_baseline_by_name_is_keyed_by_its_folders_content(tmp_path, monkeypatch):
    """``baseline="shipped:NAME"``: the cache key held only the name, so rows cached with the
    former files were served after the shipped folder changed (a retrained baseline)."""
    import shutil

    import keras

    import tfattr
    from tfattr.baselines import shipped

    folder = tmp_path / "digits_on_photos_uniform"
    shutil.copytree(shipped.shipped_baseline_path("digits_on_photos_uniform"), folder)
    monkeypatch.setattr(shipped, "asset_path", lambda *parts: str(tmp_path / parts[-1]))
    model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    key = tfattr.IntegratedGradients(model, baseline="shipped:digits_on_photos_uniform", steps=4).cache_key
    before = key()
    with open(folder / "metadata.json", "a") as handle:
        handle.write(" ")  # other bytes, same JSON
    assert key() != before
    by_folder = tfattr.IntegratedGradients(model, baseline=str(folder), steps=4).cache_key()
    assert key()["state"] == by_folder["state"]  # the same folder digest as the folder given by its path


def test_a_shipped_name_that_is_not_a_string_is_a_named_error():
    """``load_shipped(["digits_on_photos_uniform"])`` was a raw ``TypeError: unhashable type: 'list'``."""
    from tfattr.baselines import load_shipped
    from tfattr.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"ships no baseline.*Received: name=\['digits_on_photos_uniform'\]$"):
        load_shipped(["digits_on_photos_uniform"])
    with pytest.raises(InvalidInputError, match=r"ships no baseline.*Received: name=None$"):
        load_shipped(None)
