"""Perturbation methods on forward rows: Occlusion, FeatureAblation, RISE.

References: captum's Occlusion / FeatureAblation algorithms re-implemented in NumPy (window
enumeration, shift counts ⌈(n − k)/s⌉ + 1, division by the covering count), exact values on
linear models, and for RISE the analytic expectation of its Monte-Carlo estimator and the
authors' mask construction (skimage's bilinear resize, random crop).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfattr
from tfattr.errors import TfattrError
from tfattr.methods.perturbation import occlusion_windows, rise_mask_tables, rise_masks


def _cnn(shape=(9, 11, 2), classes=4, dtype="float64", seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape, dtype=dtype)
    h = keras.layers.Conv2D(3, 3, activation="relu", bias_initializer="random_normal", dtype=dtype)(inputs)
    h = keras.layers.Flatten(dtype=dtype)(h)
    out = keras.layers.Dense(classes, bias_initializer="random_normal", dtype=dtype)(h)
    return keras.Model(inputs, out)


def _linear(shape, classes=3, seed=0):
    """``f(x) = x·M + b`` in float64 (NumPy reproduces it to float64 rounding)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    m, b = rng.normal(size=(size, classes)), rng.normal(size=classes)
    inputs = keras.Input(shape, dtype="float64")
    dense = keras.layers.Dense(classes, dtype="float64")
    model = keras.Model(inputs, dense(keras.layers.Reshape((-1,), dtype="float64")(inputs)))
    dense.set_weights([m, b])
    return model, m, b


def _captum_occlusion(model, x, window, strides, baseline, target):
    """captum's Occlusion in NumPy: feature ``k`` is the window at ``(k mod c_0)·s_0, …`` (first axis
    fastest, captum's ``_occlusion_mask``), padded/cut to the input; ``Σ (f(x) − f(x_k))·mask_k``
    divided by ``Σ mask_k``."""
    shape = x.shape[1:]
    counts = [int(np.ceil((n - k) / s)) + 1 for n, k, s in zip(shape, window, strides)]
    fx = np.asarray(model(x))[np.arange(len(x)), target]
    total, weights = np.zeros(x.shape), np.zeros(shape)
    for feature in range(int(np.prod(counts))):
        remaining, index = feature, []
        for c, s in zip(counts, strides):
            index.append((remaining % c) * s)
            remaining //= c
        mask = np.zeros(shape)
        mask[tuple(slice(i, i + k) for i, k in zip(index, window))] = 1
        occluded = x * (1 - mask) + baseline * mask
        drop = fx - np.asarray(model(occluded))[np.arange(len(x)), target]
        total += drop.reshape(-1, *([1] * len(shape))) * mask
        weights += mask
    return total / weights


# -- Occlusion ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("window, strides, baseline", [
    ((4, 3), (3, 2), 0.0),  # windows over every channel, overlapping, not dividing 9 × 11
    ((2, 3, 1), (1, 2, 1), np.array([0.5, -1.0])),  # one channel at a time, a per-channel baseline
])
def test_occlusion_equals_captums_algorithm_on_a_cnn(window, strides, baseline):
    model = _cnn()
    x = np.random.default_rng(0).normal(size=(2, 9, 11, 2))
    targets = np.array([1, 3])
    found = tfattr.Occlusion(model, window=window, strides=strides, baseline=baseline, batch_size=16).attribute(
        x, target=targets)
    full = tuple(window) + (2,) * (3 - len(window))
    steps = tuple(strides) + (1,) * (3 - len(strides))
    expected = _captum_occlusion(model, x, full, steps, baseline, targets)
    np.testing.assert_allclose(found.attributions, expected, rtol=1e-9, atol=1e-12)
    counts = occlusion_windows((9, 11, 2), window, strides)[2]
    assert found.info["windows"] == int(np.prod(counts))


def test_occlusion_with_one_value_windows_is_the_linear_models_terms_exactly():
    """``f = w·x + b``: occluding value ``i`` to the baseline drops the score by ``w_i (x_i − b_i)``."""
    model, m, b = _linear((5, 4, 3))
    x = np.random.default_rng(1).normal(size=(3, 5, 4, 3))
    baseline = np.random.default_rng(2).normal(size=(5, 4, 3))
    targets = np.array([0, 2, 1])
    found = tfattr.Occlusion(model, window=(1, 1, 1), strides=1, baseline=baseline, batch_size=32).attribute(
        x, target=targets)
    w = m[:, targets].T.reshape(3, 5, 4, 3)
    np.testing.assert_allclose(found.attributions, w * (x - baseline), rtol=0, atol=1e-12)
    # a tabular model, window 1 along the one axis
    table, mt, _ = _linear((6,), classes=2, seed=3)
    rows = np.random.default_rng(4).normal(size=(4, 6))
    found = tfattr.Occlusion(table, window=1, strides=1, batch_size=5).attribute(rows, target=1)
    np.testing.assert_allclose(found.attributions, mt[:, 1] * rows, rtol=0, atol=1e-12)


def test_occlusion_does_not_depend_on_the_chunk_size_and_counts_its_model_calls():
    model = _cnn(dtype="float32")
    x = np.random.default_rng(5).uniform(size=(3, 9, 11, 2)).astype("float32")
    maps = {}
    for batch_size in (1, 3, 64):
        found = tfattr.Occlusion(model, window=(3, 3), strides=(2, 2), batch_size=batch_size).attribute(x)
        windows = found.info["windows"]
        assert windows == 4 * 5
        assert found.info["forward_passes"] == math.ceil(3 * windows / batch_size) + math.ceil(3 / batch_size)
        maps[batch_size] = found.attributions
    # float32 scores: the chunk's composition changes the last bits of a batched pass; each
    # attribution is a difference of two scores |f| ≲ 10, so 1e-5 bounds a few float32 ulps of f
    scale = np.abs(np.asarray(model(x))).max()
    for batch_size in (3, 64):
        np.testing.assert_allclose(maps[batch_size], maps[1], rtol=0, atol=1e-6 * scale)


class _Counter(keras.layers.Layer):
    """Identity that counts the model's calls and the rows it scored."""

    def build(self, shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32", name="calls")
        self.rows = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32", name="rows")

    def call(self, x):
        self.calls.assign_add(1.0)
        self.rows.assign_add(tf.cast(tf.shape(x)[0], "float32"))
        return x


def test_occlusion_calls_the_model_once_per_chunk_and_scores_each_window_once():
    counter = _Counter()
    inputs = keras.Input((8, 8, 1))
    h = counter(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    x = np.random.default_rng(6).uniform(size=(2, 8, 8, 1)).astype("float32")
    counter.calls.assign(0.0)
    counter.rows.assign(0.0)
    found = tfattr.Occlusion(model, window=(4, 4), strides=(2, 2), batch_size=10).attribute(x, target=0)
    windows = 3 * 3
    assert found.info["forward_passes"] == math.ceil(2 * windows / 10) + 1
    assert float(counter.calls.numpy()) == found.info["forward_passes"]
    assert float(counter.rows.numpy()) == 2 * windows + 2  # every window once, f(x) once


def test_occlusion_refuses_windows_that_do_not_fit():
    model = _cnn()
    x = np.zeros((1, 9, 11, 2))
    with pytest.raises(TfattrError, match="window"):
        tfattr.Occlusion(model, window=(10, 3)).attribute(x, target=0)
    with pytest.raises(TfattrError, match="window"):
        tfattr.Occlusion(model, window=(1, 1, 1, 1)).attribute(x, target=0)
    with pytest.raises(TfattrError, match="strides"):
        tfattr.Occlusion(model, window=(2, 2), strides=(3, 1)).attribute(x, target=0)
    with pytest.raises(TfattrError, match="baseline"):
        tfattr.Occlusion(model, window=(2, 2), strides=1, baseline=np.zeros(3)).attribute(x, target=0)
