"""Offline data: the generator, the TFDS builder, and the ImageNet-family loaders on mock data."""

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfattr.data  # noqa: F401 - registers the builder
from tfattr.data import IMAGENETTE_TO_IMAGENET, digits_on_photos, keras_application, load_imagenette


def test_generator_is_deterministic_splits_differ_and_masks_mark_the_pasted_digit():
    a = digits_on_photos(6, size=32, seed=3)
    b = digits_on_photos(6, size=32, seed=3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    test = digits_on_photos(6, size=32, seed=3, split="test")
    assert not np.array_equal(a["image"], test["image"])
    assert np.all(a["mask"].any(axis=(1, 2)))
    # the digit is drawn light on dark or dark on light: inside and outside the mask differ
    for i in range(6):
        inside = a["image"][i][a["mask"][i]]
        outside = a["image"][i][~a["mask"][i]]
        assert abs(inside.mean() - outside.mean()) > 0.1


def test_tfds_builder_loads_offline_and_matches_the_generator(tmp_path):
    ds, info = tfds.load("digits_on_photos/tiny", split="test", data_dir=str(tmp_path), with_info=True)
    assert info.splits["train"].num_examples == 64 and info.splits["test"].num_examples == 32
    examples = list(tfds.as_numpy(ds))
    direct = digits_on_photos(32, size=32, split="test", seed=0)
    by_index = {int(np.argmin([np.abs(e["image"].astype(float) / 255 - img).sum() for e in examples])): i
                for i, img in enumerate(direct["image"])}
    assert len(by_index) == 32  # every generated image is in the split (TFDS may shuffle the order)
    for stored, i in by_index.items():
        e = examples[stored]
        np.testing.assert_allclose(e["image"] / 255.0, direct["image"][i], atol=0.5 / 255 + 1e-6)
        np.testing.assert_array_equal(e["mask"].astype(bool), direct["mask"][i])
        assert e["label"] == direct["label"][i]


def test_imagenette_loader_on_mock_data_maps_labels_and_resizes():
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        raw = list(tfds.as_numpy(tfds.load("imagenette/320px-v2", split="validation")))
        loaded = list(tfds.as_numpy(load_imagenette(split="validation", size=48)))
    assert len(loaded) == 5
    for (image, label), original in zip(loaded, raw):
        assert image.shape == (48, 48, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 255.0
        assert label == IMAGENETTE_TO_IMAGENET[original["label"]]


def test_keras_application_wraps_its_preprocessing():
    model = keras_application("vgg16", weights=None, input_size=32)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    inner = model.layers[-1]
    expected = inner(keras.applications.vgg16.preprocess_input(x.copy()))
    np.testing.assert_allclose(model(x).numpy(), np.asarray(expected), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="Unknown keras.applications model"):
        keras_application("alexnet", weights=None)
