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
        # the paired pass runs x and z as one batch of 6, the two passes as batches of 3: a kernel's sum
        # order may differ with the batch (oneDNN off), and Rescale's Δy/Δx amplifies a last-bit change
        # of y where Δx is small; a wrong reference would be off by O(1) of the largest multiplier
        np.testing.assert_allclose(multipliers.numpy(), paired, rtol=1e-4, atol=1e-5 * np.abs(paired).max())
        np.testing.assert_allclose(scores.numpy(), model(x).numpy()[:, 1], rtol=1e-6, atol=1e-6)
        # and the clone is back in its paired mode afterwards (no recorded reference left behind)
        np.testing.assert_allclose(_paired(clone, x, z, 1), paired, rtol=1e-6, atol=1e-7)
        expl = tfattr.DeepLift(model, baseline=z[:1]).attribute(x, target=1)
        assert np.abs(expl.delta).max() < 1e-4 * max(1.0, np.abs(expl.scores).max())  # summation-to-delta


def test_mixed_precision_is_finite_where_the_input_equals_its_reference():
    # float16 layers: EPS = 1e-10 rounds to 0 there, and Δy/Δx was 0/0 = NaN wherever x = x₀
    import keras

    L = keras.layers

    def build(policy):
        keras.mixed_precision.set_global_policy(policy)
        try:
            keras.utils.set_random_seed(0)
            inputs = keras.Input((8, 8, 3))
            h = L.Conv2D(4, 3, padding="same", activation="relu", bias_initializer="random_normal")(inputs)
            h = L.MaxPooling2D()(h)
            h = L.Activation("tanh")(L.Conv2D(4, 3, padding="same", bias_initializer="random_normal")(h))
            return keras.Model(inputs, L.Dense(3, bias_initializer="random_normal", dtype="float32")(L.Flatten()(h)))
        finally:
            keras.mixed_precision.set_global_policy("float32")

    full, half = build("float32"), build("mixed_float16")
    half.set_weights(full.get_weights())
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    x[:, :4] = 0.0  # the top half equals the zero baseline
    expected = tfattr.DeepLift(full, baseline=0.0).attribute(x, target=1)
    got = tfattr.DeepLift(half, baseline=0.0).attribute(x, target=1)
    assert np.isfinite(got.attributions).all()
    # float16 keeps ~3 decimal digits through three layers: 1e-2 of the largest attribution
    np.testing.assert_allclose(got.attributions, expected.attributions, atol=1e-2 * np.abs(expected.attributions).max())
    assert np.abs(got.delta).max() < 1e-2 * np.abs(got.scores).max()
