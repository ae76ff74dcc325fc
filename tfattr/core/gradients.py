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

import threading
import weakref
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfattr.core.layers import LAYER_CALL_LOCK, patched_call
from tfattr.core.targets import select_scores

__all__ = ["InputGradients", "compiled_forward", "input_gradients", "LayerTap"]


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
        if isinstance(points, (list, tuple, dict)):  # several inputs: the float ones are differentiated
            return self._several(points, target_rows)
        with tf.GradientTape() as tape:
            tape.watch(points)
            outputs = _call_model(self.model, points)
            scores = select_scores(outputs, target_rows, self.score_fn)
        gradients = tape.gradient(
            scores, points, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return scores, gradients, points

    def _several(self, points, target_rows):
        flat = tf.nest.flatten(points)
        floats = [t for t in flat if t.dtype.is_floating]
        with tf.GradientTape() as tape:
            tape.watch(floats)
            outputs = _call_model(self.model, points)
            scores = select_scores(outputs, target_rows, self.score_fn)
        found = iter(tape.gradient(scores, floats, unconnected_gradients=tf.UnconnectedGradients.ZERO))
        gradients = [next(found) if t.dtype.is_floating else None for t in flat]
        return scores, tf.nest.pack_sequence_as(points, gradients), points


_FORWARD_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def layers_signature(model) -> tuple:
    """The identities of a model's layers (nested ones included). A Sequential model's ``add``/``pop``
    changes it, and a forward traced before would still run the former layers. The traces keep the
    former layers alive, so their ids are not reused while a cached forward exists."""
    flatten = getattr(model, "_flatten_layers", None)
    if not callable(flatten):
        return (id(model),)
    try:
        return tuple(id(layer) for layer in flatten(include_self=False, recursive=True))
    except Exception:  # noqa: BLE001 - a model we cannot walk: keyed by itself only
        return (id(model),)


#: eager forward passes per model and input shape before ``compiled_forward(..., eager_first=True)``
#: traces (about the cost of one trace; see :func:`compiled_forward`)
EAGER_PASSES = 4


def compiled_forward(model) -> Callable[..., tf.Tensor]:
    """``forward(inputs, eager_first=False)``: ``model(inputs, training=False)`` compiled, cached
    per model.

    The compiled function has a batch-free signature per input shape/dtype, so every batch size
    reuses one trace. With ``eager_first=True`` the first :data:`EAGER_PASSES` passes of a
    shape/dtype that has not been traced run the model eagerly: the few forward passes of one
    call (its top-1 classes, ``f(z)``) then cost eager passes instead of a trace and graph
    optimisation, which take 3–5 eager passes' time on a large network (MobileNetV2 at 224:
    0.4 s eager, 1.5–2.5 s to trace and run once); later passes trace. Eager and compiled
    outputs can differ in the last float32 bits (the compiled graph fuses kernels), which is
    why only ``batch_size="auto"`` calls ask for it: their repeats are documented to agree to
    float32 rounding, not bit for bit (a top-1 class on an exact near-tie may then differ
    between a first and a later call).
    """
    signature = layers_signature(model)
    try:
        cached_signature, cached = _FORWARD_CACHE[model]
        if cached_signature == signature:
            return cached
    except (KeyError, TypeError):
        pass
    traced = {}
    eager = {}
    lock = threading.Lock()  # threads (tfattr.distribute replicas) share the count

    def first_use(key, eager_first):
        if not eager_first:
            return False
        with lock:
            if key in traced or eager.get(key, 0) >= EAGER_PASSES:
                return False
            eager[key] = eager.get(key, 0) + 1
            return True

    def forward(inputs, eager_first: bool = False):
        if isinstance(inputs, (list, tuple, dict)):  # several inputs: one trace per structure of shapes
            inputs = tf.nest.map_structure(tf.convert_to_tensor, inputs)
            key = tuple((tuple(t.shape[1:]), t.dtype.name) for t in tf.nest.flatten(inputs))
            key = (tuple(sorted(inputs)) if isinstance(inputs, dict) else len(inputs),) + key
            if first_use(key, eager_first):
                return _call_model(model, inputs)
            fn = traced.get(key)
            if fn is None:
                spec = tf.nest.map_structure(lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), inputs)
                fn = traced[key] = tf.function(lambda batch: _call_model(model, batch), input_signature=[spec])
            return fn(inputs)
        inputs = tf.convert_to_tensor(inputs)
        key = (tuple(inputs.shape[1:]), inputs.dtype.name)
        if first_use(key, eager_first):
            return _call_model(model, inputs)
        fn = traced.get(key)
        if fn is None:
            spec = tf.TensorSpec([None, *inputs.shape[1:]], inputs.dtype)
            fn = traced[key] = tf.function(lambda batch: _call_model(model, batch), input_signature=[spec])
        return fn(inputs)

    try:
        _FORWARD_CACHE[model] = (signature, forward)
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


def input_layer_key(model, layer):
    """``None`` unless ``layer`` is an ``InputLayer``; then where its tensor sits in ``model``'s
    inputs: ``("single", None)``, ``("list", index)`` or ``("dict", key)``.

    Raises:
        InvalidInputError: an ``InputLayer`` that is not one of ``model``'s own inputs (that of a
            nested model, which never runs): there is nothing to tap.
    """
    import keras

    from tfattr.errors import InvalidInputError, received

    if not isinstance(layer, keras.layers.InputLayer):
        return None
    tensor = getattr(layer, "output", None)
    try:
        structure = model.input
    except (AttributeError, ValueError, RuntimeError):
        structure = None
    if structure is not None and tensor is not None:
        if isinstance(structure, dict):
            for key, item in structure.items():
                if item is tensor:
                    return "dict", key
        elif isinstance(structure, (list, tuple)):
            for index, item in enumerate(structure):
                if item is tensor:
                    return ("single", None) if len(structure) == 1 else ("list", index)
        elif structure is tensor:
            return "single", None
    raise InvalidInputError(
        f"Layer {layer.name!r} is an InputLayer that is not an input of model {getattr(model, 'name', '')!r} "
        "(the input of a nested model never runs on its own); attribute to the model's own input layer, "
        "or to the nested model's first layer. " + received("layer", layer.name))


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

        def tapped(original, *args, **kwargs):  # this thread's calls only (see patched_call)
            out = original(*args, **kwargs)
            captured.append(out)
            return out

        with patched_call(layer, tapped):
            with tf.GradientTape() as tape:
                tape.watch(points)
                outputs = _call_model(self.model, points)
                scores = select_scores(outputs, target_rows, self.score_fn)
        if len(captured) != 1:
            from tfattr.errors import InvalidInputError, received

            if not captured and type(layer).__name__ == "InputLayer":
                raise InvalidInputError(
                    f"Layer {layer.name!r} is an InputLayer, which does not run in a forward pass; at the "
                    "model's input use the input methods (IntegratedGradients, Gradient) or "
                    "LayerIntegratedGradients. " + received("layer", layer.name))
            raise InvalidInputError(
                f"Layer {layer.name!r} ran {len(captured)} times in one forward pass; layer methods "
                "need a layer that runs exactly once (a shared layer is ambiguous). "
                + received("layer", layer.name)
            )
        activations = captured[0]
        if isinstance(activations, (list, tuple)) and len(activations) == 1:
            activations = activations[0]
        if isinstance(activations, (list, tuple, dict)) or not hasattr(activations, "dtype"):
            from tfattr.errors import InvalidInputError, received

            # explaining one of them would miss the flow through the others, silently
            raise InvalidInputError(
                f"Layer {layer.name!r} has several outputs; layer methods need a layer with one output "
                "tensor (choose a layer after the outputs are combined, or one that computes each). "
                + received("layer", layer.name))
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


class LayerInjection:
    """A model whose layer ``layer`` is fed a given tensor: the path space of layer attributions.

    Called like a model with ``[input_1, …, input_n, value]`` (``model_inputs`` turns the first
    ``n`` into what the model takes), it runs the whole model on its inputs, except that the
    layer returns ``value`` instead of its output (``attribute_to="output"``) or runs on ``value``
    instead of its input (``"input"``). The rest of the model — masks computed from token ids,
    skip connections, other inputs — sees the real inputs. The layer's ``call`` is replaced only
    for the duration of each call (traced once inside the engine's ``tf.function``), as
    :class:`LayerGradients` does, so the model keeps its weights and is unchanged afterwards.

    :meth:`capture` returns the layer's output (or input) on given inputs: the path's ends.
    """

    def __init__(self, model, layer, attribute_to: str = "output", model_inputs: Optional[Callable] = None):
        self.model = model
        self.layer = layer
        self.attribute_to = attribute_to
        self.model_inputs = model_inputs or (lambda items: items[0] if len(items) == 1 else list(items))
        self.name = getattr(model, "name", "model")
        # one replaced `call` at a time, across every tfattr object patching layers (replicas and
        # other methods on the same layer trace from their own threads)
        self._lock = LAYER_CALL_LOCK
        # an InputLayer never runs in a forward pass: its "output" (and input) is the model input it
        # stands for, which the injection replaces in the inputs instead
        self._input_key = input_layer_key(model, layer)

    def _run(self, model_inputs, value=None, training=False):
        if self._input_key is not None:
            return self._run_input(model_inputs, value, training)
        with self._lock:
            return self._run_locked(model_inputs, value, training)

    def _run_input(self, model_inputs, value, training):
        """The layer is one of the model's own inputs: read it there, or replace it by ``value``."""
        kind, key = self._input_key
        if kind == "single":
            seen = model_inputs
        else:
            seen = model_inputs[key]
        if value is None:
            return self.model(model_inputs, training=training), seen
        if kind == "single":
            replaced = value
        elif kind == "dict":
            replaced = dict(model_inputs, **{key: value})
        else:
            replaced = list(model_inputs)
            replaced[key] = value
        return self.model(replaced, training=training), value

    def _run_locked(self, model_inputs, value=None, training=False):
        layer, seen = self.layer, []

        def tapped(original, *args, **kwargs):  # this thread's calls only (see patched_call)
            seen.append(args[0] if self.attribute_to == "input" else None)
            if value is None:
                out = original(*args, **kwargs)
                if self.attribute_to == "output":
                    seen[-1] = out
                return out
            if self.attribute_to == "output":
                return value
            return original(value, *args[1:], **kwargs)

        with patched_call(layer, tapped):
            outputs = self.model(model_inputs, training=training)
        if len(seen) != 1:
            from tfattr.errors import InvalidInputError, received

            raise InvalidInputError(
                f"Layer {layer.name!r} ran {len(seen)} times in one forward pass; layer attributions need a "
                "layer that runs exactly once (a shared layer is ambiguous). " + received("layer", layer.name))
        return outputs, seen[0]

    def __call__(self, inputs, training=False):
        items = list(inputs)
        return self._run(self.model_inputs(items[:-1]), items[-1], training)[0]

    def capture(self, model_inputs):
        """The layer's output (``attribute_to="output"``) or input on ``model_inputs`` (eager)."""
        return self._run(model_inputs)[1]


class LayerTap:
    """The model that also returns one layer's output: ``tap(inputs) -> (outputs, activations)``
    (forward only; the layer must run exactly once). The forward rows' ``combine="values"``
    (:class:`~tfattr.core.engine.ForwardEngine`) runs it: a layer's activations, the score and the
    top-1 class of each example from one forward pass, no backward."""

    def __init__(self, model, layer):
        self.model, self.layer = model, layer
        self._injection = LayerInjection(model, layer, "output")
        self.name = self._injection.name

    def __call__(self, inputs, training=False):
        return self._injection._run(inputs, None, training)
