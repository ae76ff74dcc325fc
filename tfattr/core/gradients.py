"""The only module that opens a ``tf.GradientTape``.

A *gradient function* maps a chunk of points and the class index of each row to
``(scores, gradients)``. Methods differ in which gradient function they hand to the
engine (:mod:`tfattr.core.engine`): the plain input gradient here, later a guided
clone's input gradient or a layer gradient. The engine traces the gradient function
inside its own ``tf.function`` together with the interpolation and the weighted
accumulation, so one chunk is one graph call.

The forward helpers are compiled once per model with a batch-free input signature,
so calls with different batch sizes do not retrace.
"""

from __future__ import annotations

import weakref
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfattr.core.targets import select_scores

__all__ = ["InputGradients", "compiled_forward", "input_gradients"]


def _call_model(model, inputs):
    return model(inputs, training=False)


class InputGradients:
    """``∂ score / ∂ input`` for each row of a chunk.

    Args:
        model: a Keras model (any model callable on a batch tensor).
        score_fn: ``None`` to explain class indices, or the user's callable target.

    Calling it (inside or outside ``tf.function``) with ``points`` ``(B, …)`` and
    ``target_rows`` ``(B,)`` int32 returns ``(scores (B,), gradients (B, …), points)``
    (the third item is the differentiated tensor, as for every gradient function). The rows
    are independent (the model runs with ``training=False``), so the gradient of the
    sum of scores is the per-row gradient.
    """

    def __init__(self, model, score_fn: Optional[Callable] = None):
        self.model = model
        self.score_fn = score_fn

    def __call__(self, points: tf.Tensor, target_rows: tf.Tensor):
        with tf.GradientTape() as tape:
            tape.watch(points)
            outputs = _call_model(self.model, points)
            scores = select_scores(outputs, target_rows, self.score_fn)
        gradients = tape.gradient(
            scores, points, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return scores, gradients, points


_FORWARD_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compiled_forward(model) -> Callable[[tf.Tensor], tf.Tensor]:
    """``model(inputs, training=False)`` compiled, cached per model.

    The compiled function has a batch-free signature per input shape/dtype, so every
    batch size reuses one trace.
    """
    try:
        return _FORWARD_CACHE[model]
    except (KeyError, TypeError):
        pass
    traced = {}

    def forward(inputs):
        inputs = tf.convert_to_tensor(inputs)
        key = (tuple(inputs.shape[1:]), inputs.dtype.name)
        fn = traced.get(key)
        if fn is None:
            spec = tf.TensorSpec([None, *inputs.shape[1:]], inputs.dtype)
            fn = traced[key] = tf.function(lambda batch: _call_model(model, batch), input_signature=[spec])
        return fn(inputs)

    try:
        _FORWARD_CACHE[model] = forward
    except TypeError:  # not weak-referenceable: do not cache
        pass
    return forward


def input_gradients(model, inputs, target_rows, score_fn: Optional[Callable] = None):
    """Convenience: ``(scores, gradients)`` of one batch as NumPy arrays (no chunking).

    Methods go through the engine instead; this is for users and tests that want the
    raw gradient of a batch.
    """
    fn = tf.function(InputGradients(model, score_fn), reduce_retracing=True)
    inputs = tf.convert_to_tensor(inputs)
    scores, grads, _ = fn(inputs, tf.convert_to_tensor(np.asarray(target_rows, dtype=np.int32)))
    return scores.numpy(), grads.numpy()


class LayerGradients:
    """``∂ score / ∂ A`` for the activations ``A`` of one layer, from one forward pass.

    The layer's ``call`` is tapped for the duration of the model call (while the engine's
    ``tf.function`` traces), so the tap sees the layer inside nested models too, shares
    the model's weights (no clone: it always uses the current weights) and leaves the
    model untouched afterwards.

    Args:
        model: the Keras model.
        layer: the ``keras.layers.Layer`` object (see :func:`tfattr.core.layers.find_layer`).
        score_fn: ``None`` to explain class indices, or the user's callable target.

    Returns from a call ``(scores (B,), gradients (B, …layer shape), activations (B, …))``.
    """

    def __init__(self, model, layer, score_fn: Optional[Callable] = None):
        self.model = model
        self.layer = layer
        self.score_fn = score_fn

    def __call__(self, points: tf.Tensor, target_rows: tf.Tensor):
        captured = []
        layer = self.layer
        original = layer.call

        def tapped(*args, **kwargs):
            out = original(*args, **kwargs)
            captured.append(out)
            return out

        layer.call = tapped
        try:
            with tf.GradientTape() as tape:
                tape.watch(points)
                outputs = _call_model(self.model, points)
                scores = select_scores(outputs, target_rows, self.score_fn)
        finally:
            del layer.call
        if len(captured) != 1:
            from tfattr.errors import InvalidInputError, received

            raise InvalidInputError(
                f"Layer {layer.name!r} ran {len(captured)} times in one forward pass; layer methods "
                "need a layer that runs exactly once (a shared layer is ambiguous). "
                + received("layer", layer.name)
            )
        activations = captured[0]
        if isinstance(activations, (list, tuple)):
            activations = activations[0]
        gradients = tape.gradient(scores, activations, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return scores, gradients, activations


def loss_gradients(loss_fn: Callable, variables):
    """``(loss_fn(), ∂loss/∂variables)`` for training code (e.g. the uniform-output baseline).

    ``loss_fn`` returns the loss or a tuple whose first item is the loss; the whole output is
    returned alongside the gradients. Traceable inside ``tf.function``.
    """
    with tf.GradientTape() as tape:
        outputs = loss_fn()
    loss = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    return outputs, tape.gradient(loss, variables)
