"""Shared fixtures: analytic models with known integrals and small CNNs with non-zero biases.

A ReLU network with zero biases is positively homogeneous (IG from 0 equals
gradient × input), so every CNN here gets random non-zero biases.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402


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
def images():
    return np.random.default_rng(0).uniform(0, 1, size=(3, 16, 16, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def _seed():
    tf.random.set_seed(0)
    np.random.seed(0)
