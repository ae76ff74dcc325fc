r"""Guided non-linearities (Kwon, Koo & Cho, "Improving Explainability of Integrated
Gradients with Guided Non-Linearity"): a clone whose ReLUs and max-pools only pass
positive gradients back.

The paper changes only the backward pass (its eqs. for the guided ReLU and max-pool):

* ReLU ``y = relu(x)``: ``∂F/∂x ← relu(∂F/∂y ⊙ 1[x > 0])`` (the ReLU's own mask, and
  only the positive part of the upstream gradient);
* MaxPool ``y_i = max_j x_ij``: ``∂F/∂x_ij ← relu(∂F/∂y_i ⊙ 1[x_ij = y_i])``.

Max-pool rule of the authors' code (``maxpool_rule="code"``): the PyTorch backward hook of
Kwon et al.'s ``GuidedIntgratedGradientsHook._backward_hook_maxpool`` (github.com/hjkwonispl/gnl,
``src/gnl.py``) returns ``interpolate((∂F/∂y > 0), size=H_in) * ∂F/∂x``: the *plain*
max-pool input gradient ``Σ_{i ∋ j} ∂F/∂y_i ⊙ 1[x_ij = y_i]`` times the sign mask of the
output gradient upsampled by nearest neighbour to the input's size (input position ``j``
takes output position ``⌊j · H_out / H_in⌋`` on each spatial axis). Where windows do not
overlap and tile the input (2×2/2 pools on even sizes) position ``j`` lies in exactly one window,
the nearest output is that window, and the two rules are identical. Where they overlap
(3×3/2, ResNet's stem) a position that wins several windows sums their gradients, negative
ones included, and is kept or dropped by the sign of one of them: the code's map can be
negative, and a positive gradient can be dropped because its nearest neighbour's is negative.
The code hooks ``torch.nn.MaxPool2d`` only; global max-pools have one window per channel,
where the two rules coincide, and are guided by the paper's rule under both.

Both are "the normal backward of the layer applied to ``relu(∂F/∂y)``": the masks are
non-negative, so ``relu(g ⊙ m) = relu(g) ⊙ m``. That is how they are built here: the
original forward function, untouched, followed by :func:`positive_gradient_gate`, an
identity whose ``tf.custom_gradient`` backward is ``relu(g)`` in ``g``'s dtype. Hence

* the forward pass is bit-for-bit the original one (the gate is ``tf.identity``), ReLU6
  stays ReLU6, ``max_value``/``threshold``/``negative_slope`` are kept;
* the backward uses TensorFlow's own derivative of each op, so its conventions at the
  kinks (``relu'(0) = 0``; ``relu6'(6) = 0``; the first maximum of a pooling window
  receives the gradient) are the original model's;
* for the leaky family (``negative_slope > 0``, ``LeakyReLU``, ``PReLU``) the guided
  backward is ``relu(g) · f'(x)``: positive upstream gradients only, times the slope
  (``1`` above the threshold, ``negative_slope`` below, ``0`` above ``max_value``). Kwon
  et al.'s code hooks ReLU, ReLU6 and MaxPool; extending the rule to leaky ReLUs this
  way is our choice.

What is swapped: ``keras.layers.ReLU``/``LeakyReLU``/``PReLU``; ``Activation`` and every
layer with an ``activation`` attribute (Conv1D/2D/3D, Dense, SeparableConv,
DepthwiseConv, ConvTranspose, EinsumDense, …) whose activation is ``relu``, ``relu6``
or ``leaky_relu`` (``keras.activations``, ``keras.ops`` or ``tf.nn``);
``keras.ops.relu``/``relu6``/``leaky_relu`` and ``keras.activations.relu`` applied to
symbolic tensors in a Functional graph (each becomes a guided ``ReLU`` layer of the op's
name); ``MaxPooling1D/2D/3D`` and ``GlobalMaxPooling1D/2D/3D``. After cloning, the clone's
inference graph is traced once and every ``Relu``/``Relu6``/``LeakyRelu``/``MaxPool``/
``Max`` op outside a guided layer — a custom layer calling ``tf.nn.relu`` in ``call``,
an RNN with a ReLU activation, a ``Lambda`` — is reported by layer name
(:class:`~tfattr.surgery.SurgeryWarning`, or an error with ``on_unswappable="raise"``).
ReLUs written as ``tf.maximum(x, 0)`` or ``tf.where`` are not detected.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Dict, Optional, Tuple, Type

import keras
import tensorflow as tf

from tfattr.errors import InvalidInputError, received
from tfattr.surgery.cloning import (
    SurgeryReport,
    SurgeryWarning,
    cached_clone,
    clone_with,
    copy_weights,
    leaf_layers,
    refresh,
    register,
    scan_ops,
    store_clone,
    surgery_report,
)

__all__ = [
    "GUIDED_SCOPE",
    "positive_gradient_gate",
    "GuidedActivation",
    "GuidedReLU",
    "GuidedLeakyReLU",
    "GuidedPReLU",
    "GuidedMaxPooling1D",
    "GuidedMaxPooling2D",
    "GuidedMaxPooling3D",
    "GuidedGlobalMaxPooling1D",
    "GuidedGlobalMaxPooling2D",
    "GuidedGlobalMaxPooling3D",
    "guided_clone",
    "MAXPOOL_RULES",
    "nearest_sign_maxpool",
    "UNSWAPPED_OP_TYPES",
]

#: max-pool backward rules: the paper's ``relu(∂F/∂y_i ⊙ 1[x_ij = y_i])`` or the authors' code's
#: ``plain gradient ⊙ nearest-upsampled 1[∂F/∂y > 0]``
MAXPOOL_RULES = ("paper", "code")

#: name scope of every guided computation; ops outside it are reported by the scan
GUIDED_SCOPE = "tfattr_guided"
#: op types the scan looks for outside guided layers
UNSWAPPED_OP_TYPES = ("Relu", "Relu6", "LeakyRelu", "MaxPool", "MaxPoolV2", "MaxPool3D",
                      "MaxPoolWithArgmax", "Max")


@tf.custom_gradient
def _gate(x):
    def backward(upstream):
        return tf.nn.relu(upstream)  # keeps the upstream dtype

    return tf.identity(x), backward


def positive_gradient_gate(x: tf.Tensor) -> tf.Tensor:
    """Identity forward; backward passes ``relu(∂F/∂y)`` (only positive gradients), same dtype.

    Placed after a ReLU or max-pool it turns the layer's backward into Kwon et al.'s guided
    one: ``f'(x) ⊙ relu(∂F/∂y)``. Non-floating tensors are returned unchanged.

    Example:
        >>> x = tf.constant([1.0, -2.0])
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(x)
        ...     y = tf.reduce_sum(positive_gradient_gate(x) * [-3.0, 4.0])
        >>> tape.gradient(y, x).numpy()      # [relu(-3), relu(4)]
        array([0., 4.], dtype=float32)
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        return x
    return _gate(x)


def _relu_family():
    functions = [keras.activations.relu, keras.activations.relu6, keras.activations.leaky_relu,
                 keras.ops.relu, keras.ops.relu6, keras.ops.leaky_relu,
                 tf.nn.relu, tf.nn.relu6, tf.nn.leaky_relu]
    return {id(f): f for f in functions}


_RELU_FUNCTIONS = _relu_family()


def is_relu_function(fn) -> bool:
    """``True`` for ``relu``/``relu6``/``leaky_relu`` of ``keras.activations``, ``keras.ops`` or ``tf.nn``."""
    return id(fn) in _RELU_FUNCTIONS and _RELU_FUNCTIONS[id(fn)] is fn


@keras.saving.register_keras_serializable(package="tfattr")
class GuidedActivation:
    """An activation function followed by :func:`positive_gradient_gate`.

    Forward: exactly ``activation(x)``; backward: ``activation'(x) ⊙ relu(∂F/∂y)``.

    Example:
        >>> conv.activation = GuidedActivation(keras.activations.relu)   # on a clone
    """

    def __init__(self, activation):
        self.activation = keras.activations.get(activation)

    def __call__(self, x):
        with tf.name_scope(GUIDED_SCOPE):
            return positive_gradient_gate(self.activation(x))

    def get_config(self):
        return {"activation": keras.activations.serialize(self.activation)}

    @classmethod
    def from_config(cls, config):
        return cls(config["activation"])

    def __repr__(self) -> str:
        return f"GuidedActivation({getattr(self.activation, '__name__', self.activation)!r})"


def check_maxpool_rule(maxpool_rule) -> str:
    """``maxpool_rule`` if it is one of :data:`MAXPOOL_RULES`, else an error naming it."""
    if not isinstance(maxpool_rule, str) or maxpool_rule not in MAXPOOL_RULES:
        raise InvalidInputError(f"`maxpool_rule` must be one of {list(MAXPOOL_RULES)}. "
                                + received("maxpool_rule", maxpool_rule))
    return maxpool_rule


def _nearest_upsample(mask: tf.Tensor, like: tf.Tensor, axes: Tuple[int, ...]) -> tf.Tensor:
    """``mask`` brought to ``like``'s size on ``axes``: position ``j`` takes ``⌊j · n_out / n_in⌋``."""
    for axis in axes:
        size_in, size_out = tf.shape(like)[axis], tf.shape(mask)[axis]
        mask = tf.gather(mask, (tf.range(size_in) * size_out) // size_in, axis=axis)
    return mask


def nearest_sign_maxpool(pool, x: tf.Tensor, spatial_axes: Tuple[int, ...]) -> tf.Tensor:
    r"""``pool(x)`` whose backward is the guided max-pool rule of Kwon et al.'s code.

    Backward: ``∂F/∂x = (∂pool/∂x)ᵀ g ⊙ nearest(1[g > 0])`` with ``g = ∂F/∂y``: TensorFlow's plain
    max-pool gradient times the sign mask of ``g`` upsampled by nearest neighbour to ``x``'s size
    on ``spatial_axes`` (input position ``j`` takes ``⌊j · n_out / n_in⌋``), as
    ``F.interpolate((g_out > 0).float(), size=H_in) * g_in`` in ``src/gnl.py`` of
    github.com/hjkwonispl/gnl. The forward is ``pool(x)`` unchanged.

    Example:
        >>> y = nearest_sign_maxpool(lambda t: tf.nn.max_pool2d(t, 3, 2, "VALID"), x, (1, 2))
    """

    @tf.custom_gradient
    def pooled(inputs):
        def backward(upstream):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                again = pool(inputs)
            plain = tape.gradient(again, inputs, output_gradients=upstream)
            mask = _nearest_upsample(tf.cast(upstream > 0, plain.dtype), inputs, spatial_axes)
            return plain * mask

        return tf.identity(pool(inputs)), backward

    return pooled(x)


def _guided_pool_layer(base: Type[keras.layers.Layer], dims: int) -> Type[keras.layers.Layer]:
    """A subclass of the local max-pool ``base`` with the guided backward of ``maxpool_rule``."""

    def __init__(self, *args, maxpool_rule: str = "paper", **kwargs):
        base.__init__(self, *args, **kwargs)
        self.maxpool_rule = check_maxpool_rule(maxpool_rule)

    def call(self, inputs):
        with tf.name_scope(GUIDED_SCOPE):
            if self.maxpool_rule == "code":
                first = 2 if getattr(self, "data_format", "channels_last") == "channels_first" else 1
                return nearest_sign_maxpool(lambda t: base.call(self, t), inputs, tuple(range(first, first + dims)))
            return positive_gradient_gate(base.call(self, inputs))

    def get_config(self):
        return dict(base.get_config(self), maxpool_rule=self.maxpool_rule)

    name = "Guided" + base.__name__
    doc = (f"``keras.layers.{base.__name__}`` with the guided backward of Kwon et al.: the same forward; "
           "backward ``relu(∂F/∂y_i ⊙ 1[x_ij = y_i])`` (``maxpool_rule=\"paper\"``, default) or the "
           "authors' code's plain gradient ⊙ nearest-upsampled ``1[∂F/∂y > 0]`` (``\"code\"``, "
           ":func:`nearest_sign_maxpool`).")
    cls = type(name, (base,), {"__init__": __init__, "call": call, "get_config": get_config,
                               "__doc__": doc, "__module__": __name__})
    return keras.saving.register_keras_serializable(package="tfattr", name=name)(cls)


def _guided_layer(base: Type[keras.layers.Layer]) -> Type[keras.layers.Layer]:
    """A subclass of ``base`` whose output passes through :func:`positive_gradient_gate`."""

    def call(self, inputs):
        with tf.name_scope(GUIDED_SCOPE):
            return positive_gradient_gate(base.call(self, inputs))

    name = "Guided" + base.__name__
    doc = (f"``keras.layers.{base.__name__}`` with the guided backward of Kwon et al.: the same "
           f"forward, backward applied to ``relu(∂F/∂y)``.")
    cls = type(name, (base,), {"call": call, "__doc__": doc, "__module__": __name__})
    return keras.saving.register_keras_serializable(package="tfattr", name=name)(cls)


GuidedReLU = _guided_layer(keras.layers.ReLU)
GuidedLeakyReLU = _guided_layer(keras.layers.LeakyReLU)
GuidedPReLU = _guided_layer(keras.layers.PReLU)
GuidedMaxPooling1D = _guided_pool_layer(keras.layers.MaxPooling1D, 1)
GuidedMaxPooling2D = _guided_pool_layer(keras.layers.MaxPooling2D, 2)
GuidedMaxPooling3D = _guided_pool_layer(keras.layers.MaxPooling3D, 3)
GuidedGlobalMaxPooling1D = _guided_layer(keras.layers.GlobalMaxPooling1D)
GuidedGlobalMaxPooling2D = _guided_layer(keras.layers.GlobalMaxPooling2D)
GuidedGlobalMaxPooling3D = _guided_layer(keras.layers.GlobalMaxPooling3D)

_GUIDED_CLASSES: Dict[type, type] = {
    keras.layers.ReLU: GuidedReLU,
    keras.layers.LeakyReLU: GuidedLeakyReLU,
    keras.layers.PReLU: GuidedPReLU,
    keras.layers.MaxPooling1D: GuidedMaxPooling1D,
    keras.layers.MaxPooling2D: GuidedMaxPooling2D,
    keras.layers.MaxPooling3D: GuidedMaxPooling3D,
    keras.layers.GlobalMaxPooling1D: GuidedGlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D: GuidedGlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D: GuidedGlobalMaxPooling3D,
}
_ALREADY_GUIDED = tuple(_GUIDED_CLASSES.values())
_LOCAL_POOLS = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)


def _is_guided(layer) -> bool:
    return isinstance(layer, _ALREADY_GUIDED) or isinstance(vars(layer).get("activation"), GuidedActivation)


def _op_replacement(op):
    """A guided layer standing for a ReLU-like ``keras.ops`` node of a Functional graph
    (``keras.ops.relu(x)``, ``keras.activations.relu(x, max_value=…)`` on symbolic tensors)."""
    from keras.src.activations.activations import ReLU as ReLUOp
    from keras.src.ops import nn as nn_ops

    kind = type(op)
    if kind is nn_ops.Relu:
        make, config = GuidedReLU, {}
    elif kind is nn_ops.Relu6:
        make, config = GuidedReLU, {"max_value": 6.0}
    elif kind is nn_ops.LeakyRelu:
        make, config = GuidedLeakyReLU, {"negative_slope": op.negative_slope}
    elif kind is ReLUOp:
        make, config = GuidedReLU, {"negative_slope": op.negative_slope, "max_value": op.max_value,
                                    "threshold": op.threshold}
    else:
        return None

    def call(x):  # built on the symbolic input, so the layer computes in the input's dtype
        return make(name=op.name, dtype=x.dtype, **config)(x)

    return call


def guided_replacement(layer, maxpool_rule: str = "paper") -> Optional[keras.layers.Layer]:
    """The guided clone of one leaf layer, or ``None`` when the layer has nothing to guide.

    Exact classes only: a subclass of ``ReLU`` may override ``call`` and is left to the scan.
    Local max-pools get ``maxpool_rule`` (see :data:`MAXPOOL_RULES`).
    """
    if not isinstance(layer, keras.layers.Layer):
        return _op_replacement(layer)
    guided_class = _GUIDED_CLASSES.get(type(layer))
    if guided_class is not None:
        config = layer.get_config()
        if type(layer) in _LOCAL_POOLS:
            config["maxpool_rule"] = maxpool_rule
        return guided_class.from_config(config)
    activation = vars(layer).get("activation")  # a plain attribute, not an RNN's property
    if activation is not None and is_relu_function(activation):
        clone = layer.__class__.from_config(layer.get_config())
        clone.activation = GuidedActivation(activation)
        return clone
    return None


def _describe_left_alone(left_alone) -> str:
    shown = ", ".join(left_alone[:10]) + (f" and {len(left_alone) - 10} more" if len(left_alone) > 10 else "")
    return (f"these ReLU/max-pool ops are inside layers tfattr cannot rewrite, so their backward "
            f"pass stays the normal one: {shown}. Use keras.layers.ReLU/Activation('relu')/"
            "MaxPooling layers (or an activation='relu' argument) instead of calling tf.nn.relu "
            "inside a custom layer's call()")


def guided_clone(model: keras.Model, on_unswappable: str = "warn", maxpool_rule: str = "paper") -> keras.Model:
    r"""A copy of ``model`` with every ReLU and max-pool guided (Kwon, Koo & Cho).

    The clone computes exactly the original outputs; its gradients are the guided ones
    (``∂F/∂x ← relu(∂F/∂y ⊙ 1[x > 0])`` for ReLUs, ``relu(∂F/∂y_i ⊙ 1[x_ij = y_i])`` for
    max-pools), so ``InputGradients(guided_clone(model))`` is guided backpropagation and
    integrating it along the IG path is guided-non-linearity IG. Nested Functional and
    Sequential models are rewritten too, shared layers stay shared, layer names are kept
    (``clone.get_layer("block1_conv1")`` works) and the weights are copied; ``model`` is
    only read. The clone is cached per model (weakly): calling again returns the same
    object, with the original's current weights copied in. A clone held across training is
    a snapshot of the weights; :func:`tfattr.surgery.synced` runs it with the original's
    current weights on every call.

    Args:
        model: a built Keras Functional or Sequential model.
        on_unswappable: what to do when the clone still contains ReLU/max-pool ops outside
            guided layers (custom layers calling ``tf.nn.relu``…): ``"warn"`` (default, a
            :class:`~tfattr.surgery.SurgeryWarning` naming the layers) or ``"raise"``
            (:class:`~tfattr.errors.InvalidInputError`).
        maxpool_rule: the backward of local max-pools: ``"paper"`` (default,
            ``relu(∂F/∂y_i ⊙ 1[x_ij = y_i])``) or ``"code"`` (the authors' PyTorch hook: plain
            gradient ⊙ nearest-upsampled ``1[∂F/∂y > 0]``, :func:`nearest_sign_maxpool`; the same
            as the paper's for 2×2/2 pools on even sizes, different where windows overlap).
            Each rule has its own cached clone.

    Returns:
        The guided clone; :func:`tfattr.surgery.surgery_report` lists the layers changed
        and the ops left alone.

    Raises:
        InvalidTypeError: a subclassed model or a layer that cannot be cloned.
        InvalidInputError: ``on_unswappable="raise"`` and something could not be swapped.

    Example:
        >>> model = keras.applications.VGG16(weights=None)
        >>> clone = guided_clone(model)
        >>> np.array_equal(clone(x), model(x))
        True
        >>> surgery_report(clone).changed[:2]
        ('block1_conv1', 'block1_conv2')
    """
    if on_unswappable not in ("warn", "raise"):
        raise InvalidInputError("`on_unswappable` must be 'warn' or 'raise'. "
                                + received("on_unswappable", on_unswappable))
    maxpool_rule = check_maxpool_rule(maxpool_rule)
    kind = "guided" if maxpool_rule == "paper" else "guided_" + maxpool_rule
    clone = cached_clone(kind, model)
    if clone is None:
        clone, pairs = clone_with(model, partial(guided_replacement, maxpool_rule=maxpool_rule), "guided_clone")
        variable_pairs = copy_weights(pairs)
        changed = [path for path, (source, _, replaced) in _paths(model, pairs)
                   if replaced or (isinstance(source, keras.layers.Layer) and _is_guided(source))]
        left_alone = scan_ops(clone, UNSWAPPED_OP_TYPES, GUIDED_SCOPE)
        report = SurgeryReport("guided", tuple(changed), left_alone)
        register(clone, report, variable_pairs)
        store_clone(kind, model, clone)
    else:
        refresh(clone)  # the cached clone follows the model's current weights
    report = surgery_report(clone)
    if report.left_alone:
        message = f"guided_clone({model.name!r}): " + _describe_left_alone(report.left_alone)
        if on_unswappable == "raise":
            raise InvalidInputError(message + ". " + received("on_unswappable", on_unswappable))
        warnings.warn(message + ".", SurgeryWarning, stacklevel=2)
    return clone


def _paths(model, pairs):
    """``(path, (source, replacement, replaced))`` for every leaf, path through nested models."""
    clone_of = {id(record[0]): record for record in pairs}
    out, seen = [], set()
    for path, layer in leaf_layers(model):
        if id(layer) in clone_of and id(layer) not in seen:  # a shared layer once
            seen.add(id(layer))
            out.append((path, clone_of[id(layer)]))
    return out
