"""DeepLift's two-pass mode (the references' forward records each nonlinearity's (x₀, y₀), the inputs'
forward and backward read them) gives the multipliers of the paired pass on [x; x₀]."""

import numpy as np
import tensorflow as tf
from conftest import small_cnn

import tfattr
from tfattr.surgery.deeplift import DeepLiftGradients, deeplift_clone


def _paired(clone, x, z, target):
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        score = tf.reduce_sum(clone(tf.concat([xs, tf.constant(z)], 0))[: len(x), target])
    return tape.gradient(score, xs).numpy()


def test_two_passes_equal_the_paired_pass_with_relu_maxpool_and_tanh():
    x = np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    z = np.random.default_rng(1).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    for model in (small_cnn("relu"), small_cnn("tanh", seed=1)):  # Rescale + max-pool rule; Rescale on tanh
        clone = deeplift_clone(model)
        scores, multipliers, _ = DeepLiftGradients(clone)(tf.constant(x), tf.constant([1, 1, 1]), tf.constant(z))
        paired = _paired(clone, x, z, 1)
        np.testing.assert_allclose(multipliers.numpy(), paired, rtol=1e-5, atol=1e-6 * np.abs(paired).max())
        np.testing.assert_allclose(scores.numpy(), model(x).numpy()[:, 1], rtol=1e-6, atol=1e-6)
        # and the clone is back in its paired mode afterwards (no recorded reference left behind)
        np.testing.assert_allclose(_paired(clone, x, z, 1), paired, rtol=1e-6, atol=1e-7)
        expl = tfattr.DeepLift(model, baseline=z[:1]).attribute(x, target=1)
        assert np.abs(expl.delta).max() < 1e-4 * max(1.0, np.abs(expl.scores).max())  # summation-to-delta
