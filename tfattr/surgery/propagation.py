r"""Propagation rules by model surgery: the deconvnet clone (Zeiler & Fergus 2014).

Deconvolution ("deconvnet", Zeiler & Fergus, "Visualizing and Understanding Convolutional
Networks", 2014, §2.1) runs the network's backward pass with every ReLU's backward replaced by
a ReLU of the upstream signal, *ignoring the forward mask*:

* ReLU ``y = relu(x)``: ``∂F/∂x ← relu(∂F/∂y)`` (instead of ``∂F/∂y ⊙ 1[x > 0]``);
* max-pool: its plain gradient, which routes ``∂F/∂y`` to the arg-max of each window — the
  paper's "switches" (unpooling). captum's ``Deconvolution`` likewise overrides only
  ``torch.nn.ReLU`` (``captum/attr/_core/guided_backprop_deconvnet.py``, ``_backward_hook`` with
  ``use_relu_grad_output=True`` returns ``relu(grad_output)``); max-pools keep autograd's gradient.

The clone is built like the guided clone (:func:`tfattr.surgery.guided_clone`: recursive clone,
names kept, weights copied and refreshed from the model on every hand-out, nested models and
``activation="relu"`` inside Conv/Dense layers reached) and cached per model. The forward pass is
bit for bit the model's: each swapped layer computes its original output ``y`` and passes it
through an identity whose ``tf.custom_gradient`` backward sends ``relu(∂F/∂y)`` to the layer's
input (and nothing through ``y``'s own graph).

ReLU-like layers other than the plain ReLU (``ReLU(max_value=6)``, LeakyReLU, PReLU, ``relu6`` /
``leaky_relu`` activations) get the same rule ``relu(∂F/∂y)``: the deconvnet backward does not
depend on the forward at all. (captum would leave ``torch.nn.ReLU6``/``LeakyReLU`` with their
plain gradient; tfattr applies the rule to every ReLU-like layer it swaps and lists them in
:func:`~tfattr.surgery.surgery_report`.)
"""

from __future__ import annotations

import warnings
from typing import Dict, Optional, Type

import keras
import tensorflow as tf

from tfattr.errors import InvalidInputError, received
from tfattr.surgery.cloning import (
    SurgeryReport,
    SurgeryWarning,
    cached_clone,
    clone_with,
    copy_weights,
    refresh,
    register,
    scan_ops,
    store_clone,
    surgery_report,
)
from tfattr.surgery.guided import _paths, is_relu_function

__all__ = ["deconv_clone", "DeconvActivation", "DeconvReLU", "DeconvLeakyReLU", "DeconvPReLU",
           "deconv_relu_gradient", "DECONV_SCOPE"]

#: name scope of every deconvnet computation; ReLU ops outside it are reported by the scan
DECONV_SCOPE = "tfattr_deconv"
_RELU_OP_TYPES = ("Relu", "Relu6", "LeakyRelu")


@tf.custom_gradient
def _deconv_pass(x, y):
    def backward(upstream):
        return tf.cast(tf.nn.relu(upstream), x.dtype), tf.zeros_like(y)

    return tf.identity(y), backward


def deconv_relu_gradient(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """``y`` (the ReLU-like output computed from ``x``) whose backward sends ``relu(∂F/∂y)`` to ``x``.

    Forward: ``y`` unchanged (``tf.identity``). Backward: ``∂F/∂x ← relu(∂F/∂y)`` — the
    deconvnet rule, with no forward mask; nothing flows back through ``y``'s own graph.

    Example:
        >>> x = tf.constant([1.0, -2.0])
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(x)
        ...     s = tf.reduce_sum(deconv_relu_gradient(x, tf.nn.relu(x)) * [-3.0, 4.0])
        >>> tape.gradient(s, x).numpy()      # relu([-3, 4]), the mask 1[x > 0] ignored
        array([0., 4.], dtype=float32)
    """
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    if not x.dtype.is_floating:
        return y
    return _deconv_pass(x, tf.stop_gradient(y))


@keras.saving.register_keras_serializable(package="tfattr")
class DeconvActivation:
    """An activation function whose backward is the deconvnet rule ``relu(∂F/∂y)``.

    Forward: exactly ``activation(x)``.

    Example:
        >>> conv.activation = DeconvActivation(keras.activations.relu)   # on a clone
    """

    def __init__(self, activation):
        self.activation = keras.activations.get(activation)

    def __call__(self, x):
        with tf.name_scope(DECONV_SCOPE):
            return deconv_relu_gradient(x, self.activation(x))

    def get_config(self):
        return {"activation": keras.activations.serialize(self.activation)}

    @classmethod
    def from_config(cls, config):
        return cls(config["activation"])

    def __repr__(self) -> str:
        return f"DeconvActivation({getattr(self.activation, '__name__', self.activation)!r})"


def _deconv_layer(base: Type[keras.layers.Layer]) -> Type[keras.layers.Layer]:
    def call(self, inputs):
        with tf.name_scope(DECONV_SCOPE):
            return deconv_relu_gradient(inputs, base.call(self, inputs))

    name = "Deconv" + base.__name__
    doc = (f"``keras.layers.{base.__name__}`` with the deconvnet backward of Zeiler & Fergus: the same "
           "forward, backward ``∂F/∂x ← relu(∂F/∂y)`` (no forward mask).")
    cls = type(name, (base,), {"call": call, "__doc__": doc, "__module__": __name__})
    return keras.saving.register_keras_serializable(package="tfattr", name=name)(cls)


DeconvReLU = _deconv_layer(keras.layers.ReLU)
DeconvLeakyReLU = _deconv_layer(keras.layers.LeakyReLU)
DeconvPReLU = _deconv_layer(keras.layers.PReLU)

_DECONV_CLASSES: Dict[type, type] = {
    keras.layers.ReLU: DeconvReLU,
    keras.layers.LeakyReLU: DeconvLeakyReLU,
    keras.layers.PReLU: DeconvPReLU,
}
_ALREADY = tuple(_DECONV_CLASSES.values())


def _op_replacement(op):
    """A deconvnet layer standing for a ReLU-like ``keras.ops`` node of a Functional graph."""
    from keras.src.activations.activations import ReLU as ReLUOp
    from keras.src.ops import nn as nn_ops

    kind = type(op)
    if kind is nn_ops.Relu:
        make, config = DeconvReLU, {}
    elif kind is nn_ops.Relu6:
        make, config = DeconvReLU, {"max_value": 6.0}
    elif kind is nn_ops.LeakyRelu:
        make, config = DeconvLeakyReLU, {"negative_slope": op.negative_slope}
    elif kind is ReLUOp:
        make, config = DeconvReLU, {"negative_slope": op.negative_slope, "max_value": op.max_value,
                                    "threshold": op.threshold}
    else:
        return None

    def call(x):
        return make(name=op.name, dtype=x.dtype, **config)(x)

    return call


def deconv_replacement(layer) -> Optional[keras.layers.Layer]:
    """The deconvnet clone of one leaf layer, or ``None`` (exact ReLU-like classes only; max-pools
    keep their plain gradient, the paper's switches)."""
    if not isinstance(layer, keras.layers.Layer):
        return _op_replacement(layer)
    deconv_class = _DECONV_CLASSES.get(type(layer))
    if deconv_class is not None:
        return deconv_class.from_config(layer.get_config())
    activation = vars(layer).get("activation")
    if activation is not None and is_relu_function(activation):
        clone = layer.__class__.from_config(layer.get_config())
        clone.activation = DeconvActivation(activation)
        return clone
    return None


def _is_deconv(layer) -> bool:
    return isinstance(layer, _ALREADY) or isinstance(vars(layer).get("activation"), DeconvActivation)


def deconv_clone(model: keras.Model, on_unswappable: str = "warn") -> keras.Model:
    r"""A copy of ``model`` whose ReLUs have the deconvnet backward ``relu(∂F/∂y)`` (Zeiler & Fergus).

    The clone computes exactly the original outputs; ``InputGradients(deconv_clone(model))`` is
    deconvolution (captum's ``Deconvolution``). Max-pools keep their plain gradient (the
    arg-max "switches"). Cached per model (weakly); every call copies the model's current weights
    into the cached clone.

    Args:
        model: a built Keras Functional or Sequential model.
        on_unswappable: ReLU ops hidden in layers tfattr cannot rewrite (custom layers calling
            ``tf.nn.relu``): ``"warn"`` (default, a :class:`~tfattr.surgery.SurgeryWarning`) or
            ``"raise"`` (:class:`~tfattr.errors.InvalidInputError`).

    Example:
        >>> clone = deconv_clone(model)
        >>> np.array_equal(clone(x), model(x))
        True
    """
    if on_unswappable not in ("warn", "raise"):
        raise InvalidInputError("`on_unswappable` must be 'warn' or 'raise'. "
                                + received("on_unswappable", on_unswappable))
    clone = cached_clone("deconv", model)
    if clone is None:
        clone, pairs = clone_with(model, deconv_replacement, "deconv_clone")
        variable_pairs = copy_weights(pairs)
        changed = [path for path, (source, _, replaced) in _paths(model, pairs)
                   if replaced or (isinstance(source, keras.layers.Layer) and _is_deconv(source))]
        left_alone = scan_ops(clone, _RELU_OP_TYPES, DECONV_SCOPE)
        register(clone, SurgeryReport("deconv", tuple(changed), left_alone), variable_pairs)
        store_clone("deconv", model, clone)
    else:
        refresh(clone)
    report = surgery_report(clone)
    if report.left_alone:
        shown = ", ".join(report.left_alone[:10])
        message = (f"deconv_clone({model.name!r}): these ReLU ops are inside layers tfattr cannot rewrite, so "
                   f"their backward pass stays the normal one: {shown}")
        if on_unswappable == "raise":
            raise InvalidInputError(message + ". " + received("on_unswappable", on_unswappable))
        warnings.warn(message + ".", SurgeryWarning, stacklevel=2)
    return clone
