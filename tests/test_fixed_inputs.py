"""Inputs marked fixed (``fixed_inputs``): baseline = input, attribution exactly 0, their values exact.

Every method that takes several inputs follows the contract of ``fixed_inputs``: the fixed
input's attribution is exactly 0 (also for the plain gradient methods, whose "attribution" is a
gradient), integer inputs reach the model with their exact values, and a float array given for an
integer input is refused instead of rounded.
"""

import keras
import numpy as np
import pytest

import tfattr
from tfattr.errors import InvalidTypeError


@pytest.fixture(scope="module")
def relu_pair():
    """``f = Σ relu(a) · w + 20 · Σ b``: the fixed input ``b`` has gradient 20 everywhere."""
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Dense(2, activation="relu", kernel_initializer=keras.initializers.Constant(0.5),
                           bias_initializer="zeros")(a)
    out = keras.layers.Lambda(lambda t: keras.ops.concatenate(
        [keras.ops.sum(t[0], axis=1, keepdims=True) + 20.0 * keras.ops.sum(t[1], axis=1, keepdims=True),
         -keras.ops.sum(t[0], axis=1, keepdims=True)], axis=1))([h, b])
    return keras.Model([a, b], out)


def _x():
    return [np.array([[1.0, 2.0, -0.5], [0.3, -1.0, 2.0]], "float32"), np.array([[1.0, -2.0], [0.5, 0.25]], "float32")]


@pytest.mark.parametrize("make", [
    lambda m: tfattr.Gradient(m),
    lambda m: tfattr.Gradient(m, absolute=True),
    lambda m: tfattr.GuidedBackprop(m),
    lambda m: tfattr.NoiseTunnel(tfattr.Gradient(m), nt_samples=3, stdevs=0.2, seed=0),
    lambda m: tfattr.NoiseTunnel(tfattr.GuidedBackprop(m), nt_samples=3, stdevs=0.2, seed=0, nt_type="smoothgrad_sq"),
    lambda m: tfattr.SmoothTaylor(m, roots=4, sigma=0.3, seed=0),
    lambda m: tfattr.InputXGradient(m),
    lambda m: tfattr.IntegratedGradients(m, steps=4),
], ids=["gradient", "abs_gradient", "guided_backprop", "nt_gradient", "nt_guided_sq", "smooth_taylor",
        "input_x_gradient", "ig"])
def test_fixed_input_gets_exactly_zero(relu_pair, make):
    x = _x()
    out = make(relu_pair).attribute(x, target=0, fixed_inputs="b").attributions
    assert np.all(out[1] == 0)  # the gradient there is 20: the contract says 0
    assert np.any(out[0] != 0)  # the free input is still explained
    free = make(relu_pair).attribute(x, target=0).attributions
    assert np.any(np.abs(free[1]) > 1)  # not fixed: the real gradient (20) shows
