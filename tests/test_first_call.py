"""What the first call of a method costs, and that the shortcuts taken there change no number.

* rows that are the inputs themselves (gradients, Grad-CAM) run a chunk that is the gradient pass
  alone; it must equal the general chunk bit for bit;
* under ``batch_size="auto"`` the one-off forward passes of a call (top-1 classes, ``f(z)``) run
  eagerly until :data:`~tfattr.core.gradients.EAGER_PASSES` passes of that shape have run, then
  compiled; an integer ``batch_size`` always runs them compiled (bit-identical repeats);
* the chunk function traces without AutoGraph unless the target is the user's callable, which
  may branch on tensors in Python.
"""

import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_float32_close, small_cnn

from tfattr import GradCAM, Gradient, IntegratedGradients
from tfattr.core import engine as engine_module
from tfattr.core import gradients
from tfattr.core.engine import PathEngine, PathRows
from tfattr.core.gradients import InputGradients, LayerGradients, compiled_forward


def _convs(model):
    return [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]


def _rows(example, alpha, weight):
    n = len(example)
    return PathRows(example=np.asarray(example, np.int32), baseline=np.zeros(n, np.int32),
                    alpha=np.asarray(alpha, np.float64), weight=np.asarray(weight, np.float64))


@pytest.mark.parametrize("layer", [False, True])
@pytest.mark.parametrize("target", ["given", "top1"])
def test_rows_at_the_inputs_run_the_gradient_pass_alone_and_equal_the_general_chunk(layer, target, images,
                                                                                   monkeypatch):
    model = small_cnn("relu", seed=3)
    fn = LayerGradients(model, _convs(model)[-1]) if layer else InputGradients(model)
    x = tf.constant(images)
    zero = tf.zeros((1,) + tuple(images.shape[1:]))
    n = len(images)
    classes = np.full(n, -1, np.int32) if target == "top1" else np.arange(n, dtype=np.int32) % 5
    rows = _rows(np.arange(n), np.ones(n), np.ones(n))
    direct = PathEngine(fn, batch_size=3, combine="plain", collect_endpoint=True, verbose=0)
    found = direct.integrate(x, zero, classes, rows)
    assert [key[7] for key in direct._compiled] == [True]  # the gradient pass alone
    # the same rows, chunks and batch compositions through the general chunk (interpolation,
    # weights, segment sums): equal bit for bit
    monkeypatch.setattr(engine_module, "rows_at_inputs", lambda *args: False)
    general = PathEngine(fn, batch_size=3, combine="plain", collect_endpoint=True, verbose=0)
    reference = general.integrate(x, zero, classes, rows)
    assert [key[7] for key in general._compiled] == [False]
    np.testing.assert_array_equal(found.attributions, reference.attributions)
    np.testing.assert_array_equal(found.endpoint, reference.endpoint)
    np.testing.assert_array_equal(found.row_scores, reference.row_scores)
    np.testing.assert_array_equal(found.row_classes, reference.row_classes)
    if target == "top1":
        np.testing.assert_array_equal(found.row_classes, model(images, training=False).numpy().argmax(axis=1))
    else:
        expected = model(images, training=False).numpy()[np.arange(n), classes]
        np.testing.assert_allclose(found.row_scores, expected, rtol=1e-5, atol=1e-6)


def test_a_nonzero_baseline_or_weight_is_not_taken_for_rows_at_the_inputs(images):
    model = small_cnn("relu", seed=3)
    engine = PathEngine(InputGradients(model), batch_size=4, combine="plain", verbose=0)
    n = len(images)
    x = tf.constant(images)
    half = engine.integrate(x, tf.zeros((1,) + images.shape[1:]), np.zeros(n, np.int32),
                            _rows(np.arange(n), np.ones(n), np.full(n, 0.5)))
    full = engine.integrate(x, tf.zeros((1,) + images.shape[1:]), np.zeros(n, np.int32),
                            _rows(np.arange(n), np.ones(n), np.ones(n)))
    np.testing.assert_array_equal(half.attributions, 0.5 * full.attributions)
    shifted = engine.integrate(x, tf.fill((1,) + images.shape[1:], 0.25), np.zeros(n, np.int32),
                               _rows(np.arange(n), np.ones(n), np.ones(n)))
    assert_float32_close(shifted.attributions, full.attributions)  # α = 1: the point is x again
    assert sorted(key[7] for key in engine._compiled) == [False, True]


def test_one_off_forward_passes_run_eagerly_then_compiled_and_agree(images):
    import keras

    modes = []

    class Probe(keras.layers.Layer):
        def call(self, inputs):
            modes.append(tf.executing_eagerly())
            return inputs

    inputs = keras.Input(images.shape[1:])
    base = small_cnn("relu", seed=4)
    model = keras.Model(inputs, base(Probe()(inputs)))
    forward = compiled_forward(model)
    x = tf.constant(images)
    modes.clear()  # building the functional model called the layer symbolically
    outputs = [forward(x, eager_first=True).numpy() for _ in range(gradients.EAGER_PASSES + 2)]
    # the first EAGER_PASSES passes ran eagerly; then one trace (not eager) and no further Python call
    assert modes == [True] * gradients.EAGER_PASSES + [False]
    for out in outputs[1:]:
        assert_float32_close(out, outputs[0])
    other = compiled_forward(keras.Model(inputs, base(Probe()(inputs))))
    modes.clear()
    other(x)  # without eager_first: traced at once
    assert modes == [False]


def test_integer_batch_size_traces_forward_passes_and_auto_repeats_agree(images):
    model = small_cnn("relu", seed=5)
    fixed = IntegratedGradients(model, steps=8, batch_size=8)
    first, second = fixed.attribute(images), fixed.attribute(images)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    np.testing.assert_array_equal(first.delta, second.delta)
    auto = IntegratedGradients(model, steps=8)  # eager f(x), f(z) on the first calls, compiled later
    runs = [auto.attribute(images) for _ in range(gradients.EAGER_PASSES)]
    for run in runs:
        np.testing.assert_array_equal(run.targets, first.targets)
        assert_float32_close(np.asarray(run), np.asarray(first))
        np.testing.assert_allclose(run.delta, first.delta, atol=1e-4 * float(np.abs(first.scores).max()))


def test_callable_targets_keep_python_branches_on_tensors(images):
    model = small_cnn("relu", seed=6)

    def score(outputs):
        if tf.reduce_sum(outputs) > 0:  # a Python `if` on a tensor: AutoGraph turns it into tf.cond
            return outputs[:, 1]
        return outputs[:, 2]

    total = float(tf.reduce_sum(model(images, training=False)))
    expected = 1 if total > 0 else 2
    found = Gradient(model, batch_size=len(images)).attribute(images, target=score)
    given = Gradient(model, batch_size=len(images)).attribute(images, target=expected)
    assert_float32_close(np.asarray(found), np.asarray(given))
    # Grad-CAM with explicit classes traces without AutoGraph and still equals the callable form
    cam = GradCAM(model, layer=_convs(model)[-1].name, batch_size=len(images))
    assert_float32_close(np.asarray(cam.attribute(images, target=lambda out: out[:, expected])),
                         np.asarray(cam.attribute(images, target=expected)))


def test_user_python_reached_by_the_chunk_keeps_autograph(images):
    """A model given as a function or ``tf.Module`` (or a user's gradient function) may branch on a
    tensor in Python; the chunk traces with AutoGraph for it, and without for Keras models."""
    from tfattr.core.engine import needs_autograph
    from tfattr.methods.guided import guided_gradient_function

    keras_model = small_cnn("relu", seed=7)

    def model_fn(x, training=False):
        if tf.reduce_max(x) > 1.0:  # a Python `if` on a tensor
            x = x / 255.0
        return keras_model(x, training=False)

    class Wrapped(tf.Module):
        def __call__(self, x, training=False):
            return model_fn(x)

    scaled = images * 255.0
    expected = np.asarray(Gradient(keras_model, batch_size=3).attribute(images, target=1)) / 255.0
    for model in (model_fn, Wrapped()):
        assert needs_autograph(InputGradients(model))
        assert_float32_close(np.asarray(Gradient(model, batch_size=3).attribute(scaled, target=1)), expected)
        ig = IntegratedGradients(model, steps=4, batch_size=5).attribute(scaled, target=1)
        reference = IntegratedGradients(keras_model, steps=4, batch_size=5).attribute(images, target=1)
        assert_float32_close(np.asarray(ig), np.asarray(reference))
    assert not needs_autograph(InputGradients(keras_model))
    assert not needs_autograph(LayerGradients(keras_model, _convs(keras_model)[-1]))
    assert not needs_autograph(guided_gradient_function(keras_model))
    assert needs_autograph(InputGradients(keras_model, score_fn=lambda out: out[:, 0]))
