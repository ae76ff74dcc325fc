"""Strip the softmax head of a classifier: pre-softmax scores (logits) for methods and metrics.

Explaining ``softmax(z)_c`` mixes in every other class (``∂p_c/∂x = p_c (∂z_c/∂x −
Σ_k p_k ∂z_k/∂x)``) and saturates when ``p_c → 1``; many methods and metrics are defined
on the logit ``z_c``. :func:`logits_model` clones the model with its *final* softmax
removed, whether it is an ``activation="softmax"`` argument of the last layer, a
separate ``Softmax``/``Activation("softmax")`` layer, a ``keras.ops.softmax`` node or a
``Lambda`` that computes nothing but a softmax of its input (``Lambda(keras.ops.softmax)``,
``Lambda(lambda t: keras.ops.softmax(t))``: the Lambda's function is traced once and must be
a single ``Softmax`` op on its input), in a Functional or Sequential model, also when that
last layer sits in a nested model at the end of the graph. A softmax elsewhere (attention, a
gating branch) is not final and is left alone, and so is a Lambda computing more than a
softmax (``softmax(t / T)``).

The result is made of standard Keras layers only (a separate softmax layer becomes a
``keras.layers.Identity`` of the same name and dtype policy; a fused activation becomes
``"linear"``), so it clones (``keras.models.clone_model``, :func:`~tfattr.surgery.guided_clone`),
serialises (``to_json``) and saves/loads as a ``.keras`` file like any model.
"""

from __future__ import annotations

import warnings
from typing import Optional, Tuple

import keras
import tensorflow as tf

from tfattr.errors import InvalidInputError, received
from tfattr.surgery.cloning import (
    SurgeryReport,
    SurgeryWarning,
    _is_nested_model,
    cached_clone,
    check_cloneable,
    clone_with,
    copy_weights,
    refresh,
    register,
    store_clone,
)

__all__ = ["logits_model", "find_softmax_head"]

_UNCHANGED = object()  # cache marker: "this model has no softmax head"


def _softmax_functions():
    functions = [keras.activations.softmax, keras.ops.softmax, tf.nn.softmax]
    return {id(f): f for f in functions}


_SOFTMAX = _softmax_functions()


def _is_softmax_function(fn) -> bool:
    return fn is not None and _SOFTMAX.get(id(fn)) is fn


def _is_softmax_op(layer) -> bool:
    from keras.src.ops import nn as nn_ops

    return type(layer) is nn_ops.Softmax  # keras.ops.softmax(z) in a Functional graph


def _is_softmax_layer(layer) -> bool:
    if _is_softmax_op(layer):
        return True
    if not isinstance(layer, keras.layers.Layer):
        return False
    if type(layer) is keras.layers.Lambda:
        return _lambda_is_softmax(layer)
    return type(layer) is keras.layers.Softmax or _is_softmax_function(vars(layer).get("activation"))


def _skip_identities(op):
    while op.type == "Identity" and op.inputs:
        op = op.inputs[0].op
    return op


def _lambda_is_softmax(layer) -> bool:
    """``True`` when the Lambda's function is a softmax of its input and nothing more.

    A softmax function itself (``Lambda(keras.ops.softmax)``) is recognised by identity; any
    other function is traced once on the layer's input spec and must reduce to a single
    ``Softmax`` op whose input is the Lambda's input (identities aside).
    """
    if _is_softmax_function(layer.function) and set(layer.arguments) <= {"axis"}:
        return True
    try:
        inputs = layer.input
        if not hasattr(inputs, "shape") or isinstance(inputs, (list, tuple, dict)):
            return False
        spec = tf.TensorSpec(inputs.shape, inputs.dtype)
        arguments = dict(layer.arguments)
        traced = tf.function(lambda t: layer.function(t, **arguments), autograph=False)
        graph = traced.get_concrete_function(spec).graph
    except Exception:  # noqa: BLE001 - a Lambda that cannot be traced alone is not a plain softmax
        return False
    if len(graph.outputs) != 1 or len(graph.inputs) != 1:
        return False
    op = _skip_identities(graph.outputs[0].op)
    if op.type != "Softmax":
        return False
    return _skip_identities(op.inputs[0].op) is graph.inputs[0].op


def find_softmax_head(model) -> Optional[Tuple[str, keras.layers.Layer]]:
    """``(path, layer)`` of the layer applying ``model``'s final softmax, or ``None``.

    Follows the single output back to the layer that produced it, descending into a nested
    model that produces the output.

    Example:
        >>> find_softmax_head(keras.applications.VGG16(weights=None))[0]
        'predictions'
    """
    found = _find_head(model)
    return None if found is None else found[:2]


def _find_head(model):
    """``(path, head layer, the model whose graph holds it)`` or ``None``."""
    path = ""
    while True:
        outputs = getattr(model, "outputs", None) or []
        if len(outputs) != 1:
            return None
        layer = outputs[0]._keras_history.operation
        path += layer.name
        if _is_nested_model(layer):
            model, path = layer, path + "/"
            continue
        return (path, layer, model) if _is_softmax_layer(layer) else None


def _without_softmax(head, owner):
    """The replacement rule: the head loses its softmax, every other layer is copied.

    A separate softmax layer becomes ``keras.layers.Identity`` (standard, serialisable: its
    dtype policy is passed as a config, not as an object); in a Sequential it is the layer
    itself, in a Functional graph a call that drops the softmax's ``mask`` argument.
    """
    in_sequential = isinstance(owner, keras.Sequential)

    def replace(layer):
        if layer is not head:
            return None
        if _is_softmax_op(layer):
            return lambda logits, *args, **kwargs: logits
        if type(layer) in (keras.layers.Softmax, keras.layers.Activation, keras.layers.Lambda):
            def identity_layer():
                return keras.layers.Identity(name=layer.name,
                                             dtype=keras.dtype_policies.serialize(layer.dtype_policy))

            if in_sequential:
                return identity_layer()

            def identity(inputs, *args, **kwargs):
                return identity_layer()(inputs)

            return identity
        config = layer.get_config()
        config["activation"] = "linear"
        return layer.__class__.from_config(config)

    return replace


def logits_model(model: keras.Model, missing: str = "note") -> keras.Model:
    """A clone of ``model`` without its final softmax, computing the logits ``z``.

    ``softmax(logits_model(model)(x)) == model(x)``. Everything else is as in
    :func:`~tfattr.surgery.guided_clone`: names kept (the head keeps its name; a separate
    softmax layer becomes an ``Identity`` of the same name), weights copied, nested models
    followed, the original untouched, the clone cached per model (weakly). Each call returns
    the cached clone with the model's *current* weights copied in, so after training or
    ``set_weights`` call ``logits_model(model)`` again (a clone held across training is a
    snapshot; :func:`~tfattr.surgery.synced` runs it with the live weights on every call).

    Args:
        model: a built Keras Functional or Sequential model.
        missing: when the model has no softmax head: ``"note"`` (default) returns ``model``
            itself with a :class:`~tfattr.surgery.SurgeryWarning`; ``"ignore"`` returns it
            silently; ``"raise"`` raises :class:`~tfattr.errors.InvalidInputError`.

    Example:
        >>> logits = logits_model(keras.applications.ResNet50(weights=None))
        >>> np.allclose(keras.ops.softmax(logits(x)), model(x))
        True
    """
    if missing not in ("note", "ignore", "raise"):
        raise InvalidInputError("`missing` must be 'note', 'ignore' or 'raise'. " + received("missing", missing))
    check_cloneable(model, "logits_model")
    clone = cached_clone("logits", model)
    if clone is None:
        head = _find_head(model)
        if head is None:
            clone = _UNCHANGED
        else:
            clone, pairs = clone_with(model, _without_softmax(head[1], head[2]), "logits_model")
            register(clone, SurgeryReport("logits", (head[0],), (), ("softmax removed",)), copy_weights(pairs))
        store_clone("logits", model, clone)
    elif clone is not _UNCHANGED:
        refresh(clone)  # the cached clone follows the model's current weights
    if clone is not _UNCHANGED:
        return clone
    message = (f"logits_model({model.name!r}): the model has no final softmax (its output layer has no "
               "softmax activation and is not a Softmax layer), so it is returned unchanged")
    if missing == "raise":
        raise InvalidInputError(message + ". " + received("missing", missing))
    if missing == "note":
        warnings.warn(message + ".", SurgeryWarning, stacklevel=2)
    return model
