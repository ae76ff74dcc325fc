r"""The DeepLIFT clone: the Rescale rule (Shrikumar, Greenside & Kundaje 2017) by model surgery.

DeepLIFT explains ``f(x) − f(x₀)`` for a reference ``x₀`` by *multipliers* that obey the chain
rule. Linear layers keep their gradient; each nonlinearity ``y = φ(x)`` gets the Rescale rule
(paper §3.5.1) ``m = Δy / Δx = (φ(x) − φ(x₀)) / (x − x₀)`` in place of ``φ'(x)``, and the
attribution is ``(x − x₀) ⊙ m_input``. With these multipliers the attributions of a network made
of linear layers and such nonlinearities sum to ``f(x) − f(x₀)`` exactly (summation-to-delta,
eq. 1), up to float rounding.

How the clone computes it: it is called on ``[x; x₀]``, the examples and their references
concatenated along the batch (``2B`` rows), so every nonlinearity sees an input and its
reference in one pass. Each rewritten layer computes its output as before (the forward pass is
the model's bit for bit, row by row) and passes it through an identity whose
``tf.custom_gradient`` backward takes the upstream multipliers ``g`` of the first half and
returns, for the example half, ``g ⊙ Δy/Δx`` — or ``g ⊙ φ'(x)`` where ``|Δx| < 10⁻¹⁰`` (captum's
``eps``) — and zeros for the reference half (only the example half's input gradient is read).
The clone is valid only on such paired batches, or in the two-pass mode of
:class:`DeepLiftGradients`, which tfattr's ``DeepLift`` uses: a forward of the references alone, in
which each nonlinearity records its ``(x₀, y₀)``, then the forward of the inputs under the tape,
in which each nonlinearity takes its recorded reference (the same layers in the same call order),
so the backward runs on the input rows only (two forwards and one backward: the least DeepLIFT
needs; the paired pass also ran the backward through ``B`` reference rows of zeros). Both modes give
the same multipliers.

Layers (captum's ``DeepLift`` with ``multiply_by_inputs=True``,
``captum/attr/_core/deep_lift.py``):

* **elementwise nonlinearities** — ``ReLU``/``LeakyReLU``/``PReLU``/``ELU`` layers,
  ``Activation(φ)`` and ``activation=φ`` inside Conv/Dense layers, ReLU ``keras.ops`` nodes, for
  ``φ`` in :data:`ELEMENTWISE` (captum's list: ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus;
  tfattr adds the other elementwise Keras activations, for which the same rule holds): Rescale.
* **max-pooling** (``MaxPooling1D/2D/3D``, ``GlobalMaxPooling1D/2D/3D``): captum's ``maxpool``
  rule. With ``y = pool(x)``, ``y₀ = pool(x₀)`` and the cross maximum ``ŷ = max(y, y₀)``, the
  upstream ``g`` times ``ŷ − y₀`` is routed to the arg-max positions of ``x`` and ``g`` times
  ``y − ŷ`` to the arg-max positions of ``x₀`` (the plain max-pool gradient at each), summed, and
  divided by ``Δx`` (the plain gradient where ``|Δx| < 10⁻¹⁰``). Per window the routed values sum
  to ``g · (y − y₀)``, so summation-to-delta still holds.
* **linear layers** (:data:`LINEAR_LAYERS`: Conv/Dense/Depthwise/Separable/Transpose,
  BatchNormalization — inference mode is affine —, Add/Subtract/Average/Concatenate, pooling by
  averages, reshaping, padding, cropping, up-sampling, Rescaling/Normalization, inference-time
  identities such as Dropout): nothing to change.
* anything else — ``Softmax`` and ``activation="softmax"`` (explain the logits:
  :func:`tfattr.surgery.logits_model`), ``Multiply``, attention, normalisations by statistics of
  the row (LayerNormalization…), recurrent layers, ``Lambda`` and custom layers — is refused by
  :class:`~tfattr.errors.InvalidInputError` naming every such layer: no silent plain gradient.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional, Type

import keras
import tensorflow as tf

from tfattr.core.targets import select_scores
from tfattr.errors import InvalidInputError, received
from tfattr.surgery.cloning import (
    SurgeryReport,
    cached_clone,
    check_cloneable,
    clone_with,
    copy_weights,
    leaf_layers,
    refresh,
    register,
    store_clone,
)
from tfattr.surgery.guided import _paths

__all__ = ["deeplift_clone", "DeepLiftGradients", "rescale_pair", "maxpool_pair", "RescaleActivation",
           "ELEMENTWISE", "LINEAR_LAYERS", "EPS"]

#: below this ``|x − x₀|`` the multiplier is the gradient (captum's ``eps``)
EPS = 1e-10
DEEPLIFT_SCOPE = "tfattr_deeplift"

_ACTIVATION_NAMES = ("relu", "relu6", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "softplus", "softsign",
                     "silu", "swish", "gelu", "hard_sigmoid", "hard_silu", "hard_swish", "exponential", "mish")


def _elementwise_functions():
    found = {}
    for module in (keras.activations, keras.ops, tf.nn, tf.math):
        for name in _ACTIVATION_NAMES:
            fn = getattr(module, name, None)
            if callable(fn):
                found[id(fn)] = fn
    return found


_ELEMENTWISE = _elementwise_functions()
#: names of the elementwise activations that get the Rescale rule
ELEMENTWISE = _ACTIVATION_NAMES


def _is_elementwise(fn) -> bool:
    return id(fn) in _ELEMENTWISE and _ELEMENTWISE[id(fn)] is fn


def _is_linear_activation(fn) -> bool:
    return fn is keras.activations.linear or fn is None


_L = keras.layers
#: layers that are affine in their input at inference (their gradient is their DeepLIFT multiplier)
LINEAR_LAYERS = tuple(c for c in (
    getattr(_L, name, None) for name in (
        "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
        "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
        "BatchNormalization", "Add", "Subtract", "Average", "Concatenate", "Flatten", "Reshape", "Permute",
        "RepeatVector", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
        "Cropping3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalAveragePooling3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
        "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
        "AlphaDropout", "Rescaling", "Normalization", "Identity", "Activation")) if c is not None)
_MAX_POOLS = (_L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D, _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D,
              _L.GlobalMaxPooling3D)
_ELEMENTWISE_LAYERS = (_L.ReLU, _L.LeakyReLU, _L.PReLU, _L.ELU)
_LINEAR_OPS = ("Add", "Subtract", "Negative", "Concatenate", "Reshape", "Transpose", "Squeeze", "ExpandDims")


def _half(t):
    return tf.shape(t)[0] // 2


class _References(threading.local):
    """The two-pass mode of :class:`DeepLiftGradients`: ``"record"`` while the clone runs on the
    references (each nonlinearity appends its ``(x₀, y₀)`` in call order), ``"replay"`` while it
    runs on the inputs under the tape (each takes the next recorded pair, the same call order);
    ``None``: the paired-batch mode ``[x; x₀]``."""

    def __init__(self):
        self.mode = None
        self.pairs = []


_REFERENCES = _References()


def _two_pass(kind: str, rule, fn: Callable, x: tf.Tensor, y: tf.Tensor):
    """The nonlinearity in the two-pass mode: record ``(x₀, y₀)``, or ``y`` whose backward is ``rule``'s
    multiplier for the inputs against the recorded reference (no reference rows in the backward)."""
    if _REFERENCES.mode == "record":
        _REFERENCES.pairs.append((kind, tf.stop_gradient(x), tf.stop_gradient(y)))
        return tf.stop_gradient(y)
    recorded, x0, y0 = _REFERENCES.pairs.pop(0)
    if recorded != kind:  # pragma: no cover - the two passes call the same layers in the same order
        raise RuntimeError(f"DeepLift two-pass: a {kind} met the reference of a {recorded}")

    @tf.custom_gradient
    def single(xx, yy):
        def backward(upstream):
            return rule(fn, xx, x0, yy, y0, tf.cast(upstream, xx.dtype)), tf.zeros_like(yy)

        return tf.identity(yy), backward

    with tf.name_scope(DEEPLIFT_SCOPE):
        return single(x, tf.stop_gradient(y))


def _wide(dtype):
    """The dtype the multipliers are divided in: float32 for float16/bfloat16 layers (mixed precision),
    where ``EPS`` rounds to 0 and ``0/0`` would give NaN where the input equals its reference."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _rescale_multiplier(fn, x1, x0, y1, y0, g):
    """``g ⊙ (y − y₀)/(x − x₀)``, ``g ⊙ fn'(x)`` where ``|x − x₀| < EPS``."""
    with tf.GradientTape() as tape:
        tape.watch(x1)
        again = fn(x1)
    plain = tape.gradient(again, x1, output_gradients=tf.cast(g, again.dtype))
    wide = _wide(x1.dtype)
    dx = tf.cast(x1, wide) - tf.cast(x0, wide)
    small = tf.abs(dx) < tf.cast(EPS, wide)
    rescaled = tf.cast(g, wide) * (tf.cast(y1, wide) - tf.cast(y0, wide)) / tf.where(small, tf.ones_like(dx), dx)
    return tf.cast(tf.where(small, tf.cast(plain, wide), rescaled), x1.dtype)


def _maxpool_multiplier(pool, x1, x0, y1, y0, g):
    """captum's max-pool rule (module docstring) for inputs ``x1`` against references ``x0``."""
    g = tf.cast(g, y1.dtype)
    cross = tf.maximum(y1, y0)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x1, x0])
        p1, p0 = pool(x1), pool(x0)
    routed = (tape.gradient(p1, x1, output_gradients=g * (cross - y0))
              + tape.gradient(p0, x0, output_gradients=g * (y1 - cross)))
    plain = tape.gradient(p1, x1, output_gradients=g)
    del tape
    wide = _wide(x1.dtype)
    dx = tf.cast(x1, wide) - tf.cast(x0, wide)
    small = tf.abs(dx) < tf.cast(EPS, wide)
    return tf.cast(tf.where(small, tf.cast(plain, wide), tf.cast(routed, wide) / tf.where(small, tf.ones_like(dx), dx)),
                   x1.dtype)


def rescale_pair(fn: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """``y = fn(x)`` on a paired batch ``[x; x₀]`` whose backward is the Rescale multiplier.

    Backward: for the first half ``g ⊙ (fn(x) − fn(x₀)) / (x − x₀)`` (``g ⊙ fn'(x)`` where
    ``|x − x₀| < EPS``), zeros for the reference half.
    """
    if not x.dtype.is_floating:
        return y
    if _REFERENCES.mode is not None:
        return _two_pass("rescale", _rescale_multiplier, fn, x, y)

    @tf.custom_gradient
    def paired(xx, yy):
        def backward(upstream):
            b = _half(xx)
            x1, x0, y1, y0 = xx[:b], xx[b:], yy[:b], yy[b:]
            grad = _rescale_multiplier(fn, x1, x0, y1, y0, tf.cast(upstream[:b], xx.dtype))
            return tf.concat([grad, tf.zeros_like(grad)], 0), tf.zeros_like(yy)

        return tf.identity(yy), backward

    with tf.name_scope(DEEPLIFT_SCOPE):
        return paired(x, tf.stop_gradient(y))


def maxpool_pair(pool: Callable, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """``y = pool(x)`` on a paired batch with captum's DeepLIFT max-pool backward (module docstring)."""
    if not x.dtype.is_floating:
        return y
    if _REFERENCES.mode is not None:
        return _two_pass("maxpool", _maxpool_multiplier, pool, x, y)

    @tf.custom_gradient
    def paired(xx, yy):
        def backward(upstream):
            b = _half(xx)
            x1, x0, y1, y0 = xx[:b], xx[b:], yy[:b], yy[b:]
            grad = _maxpool_multiplier(pool, x1, x0, y1, y0, upstream[:b])
            return tf.concat([grad, tf.zeros_like(grad)], 0), tf.zeros_like(yy)

        return tf.identity(yy), backward

    with tf.name_scope(DEEPLIFT_SCOPE):
        return paired(x, tf.stop_gradient(y))


@keras.saving.register_keras_serializable(package="tfattr")
class RescaleActivation:
    """An elementwise activation with the DeepLIFT Rescale backward (:func:`rescale_pair`)."""

    def __init__(self, activation):
        self.activation = keras.activations.get(activation)

    def __call__(self, x):
        return rescale_pair(self.activation, x, self.activation(x))

    def get_config(self):
        return {"activation": keras.activations.serialize(self.activation)}

    @classmethod
    def from_config(cls, config):
        return cls(config["activation"])


def _rescale_layer(base: Type[keras.layers.Layer], rule) -> Type[keras.layers.Layer]:
    def call(self, inputs):
        return rule(lambda t: base.call(self, t), inputs, base.call(self, inputs))

    name = "DeepLift" + base.__name__
    doc = f"``keras.layers.{base.__name__}`` with the DeepLIFT backward of :mod:`tfattr.surgery.deeplift`."
    cls = type(name, (base,), {"call": call, "__doc__": doc, "__module__": __name__})
    return keras.saving.register_keras_serializable(package="tfattr", name=name)(cls)


_REPLACEMENTS: Dict[type, type] = {base: _rescale_layer(base, rescale_pair) for base in _ELEMENTWISE_LAYERS}
_REPLACEMENTS.update({base: _rescale_layer(base, maxpool_pair) for base in _MAX_POOLS})


def _activation(layer):
    return vars(layer).get("activation")


def _classify(layer) -> Optional[str]:
    """``None`` when DeepLIFT handles ``layer``, else why not."""
    if not isinstance(layer, keras.layers.Layer):  # a keras.ops node of a Functional graph

        if type(layer) in _op_classes():
            return None
        if type(layer).__name__ in _LINEAR_OPS and type(layer).__module__.startswith("keras"):
            return None
        return f"keras.ops node {type(layer).__name__}"
    if type(layer) in _REPLACEMENTS:
        return None
    if type(layer) in LINEAR_LAYERS:
        activation = _activation(layer)
        if _is_linear_activation(activation) or _is_elementwise(activation):
            return None
        name = getattr(activation, "__name__", repr(activation))
        hint = " (explain the logits: tfattr.surgery.logits_model)" if "softmax" in name else ""
        return f"activation {name!r}{hint}"
    if isinstance(layer, keras.layers.Softmax):
        return "Softmax (explain the logits: tfattr.surgery.logits_model)"
    return type(layer).__name__


def _op_classes():
    from keras.src.ops import nn as nn_ops

    return (nn_ops.Relu, nn_ops.Relu6, nn_ops.LeakyRelu, nn_ops.Sigmoid)


def _op_replacement(op):
    from keras.src.ops import nn as nn_ops

    functions = {nn_ops.Relu: keras.ops.relu, nn_ops.Relu6: keras.ops.relu6, nn_ops.Sigmoid: keras.ops.sigmoid}
    if type(op) is nn_ops.LeakyRelu:
        slope = op.negative_slope

        def fn(t):
            return keras.ops.leaky_relu(t, negative_slope=slope)
    elif type(op) in functions:
        fn = functions[type(op)]
    else:
        return None  # a linear op: copied
    return lambda x: keras.layers.Activation(RescaleActivation(fn), name=op.name, dtype=x.dtype)(x)


def deeplift_replacement(layer):
    """The DeepLIFT clone of one leaf (``None``: copied as is); unsupported layers are refused earlier."""
    if not isinstance(layer, keras.layers.Layer):
        return _op_replacement(layer)
    replacement = _REPLACEMENTS.get(type(layer))
    if replacement is not None:
        return replacement.from_config(layer.get_config())
    activation = _activation(layer)
    if activation is not None and _is_elementwise(activation):
        clone = layer.__class__.from_config(layer.get_config())
        clone.activation = RescaleActivation(activation)
        return clone
    return None


def unsupported_layers(model) -> List[str]:
    """``"path (why)"`` of every layer of ``model`` that DeepLIFT cannot propagate through."""
    out = []
    for path, layer in leaf_layers(model):
        why = _classify(layer)
        if why is not None:
            out.append(f"{path} ({why})")
    return list(dict.fromkeys(out))


def deeplift_clone(model: keras.Model, refresh_weights: bool = True) -> keras.Model:
    """The DeepLIFT (Rescale) clone of ``model``; call it on ``[x; x₀]`` batches (module docstring).

    Cached per model (weakly); every call copies the model's current weights into the clone (``refresh_weights=False``:
    no copy, for a caller that runs the clone through :func:`~tfattr.surgery.synced`, which reads the live weights).

    Raises:
        InvalidInputError: ``model`` has layers DeepLIFT does not support (all named).
        InvalidTypeError: a subclassed model.

    Example:
        >>> clone = deeplift_clone(model)
        >>> np.array_equal(clone(x), model(x))     # the forward pass is the model's
        True
    """
    clone = cached_clone("deeplift", model)
    if clone is not None:
        if refresh_weights:  # False: the caller runs it through ``synced`` (the live weights), no copy
            refresh(clone)
        return clone
    check_cloneable(model, "DeepLift")
    unsupported = unsupported_layers(model)
    if unsupported:
        shown = ", ".join(unsupported[:10]) + (f" and {len(unsupported) - 10} more" if len(unsupported) > 10 else "")
        raise InvalidInputError(
            f"DeepLift has no rule for these layers of model {model.name!r}: {shown}. It propagates through "
            "linear layers (Conv, Dense, BatchNormalization, Add, pooling by averages, reshaping), elementwise "
            "activations (Rescale rule) and max-pooling (captum's rule); it does not fall back to the gradient. "
            + received("model.name", model.name))
    clone, pairs = clone_with(model, deeplift_replacement, "DeepLift")
    variable_pairs = copy_weights(pairs)
    changed = [path for path, (_, _, replaced) in _paths(model, pairs) if replaced]
    register(clone, SurgeryReport("deeplift", tuple(changed)), variable_pairs)
    store_clone("deeplift", model, clone)
    return clone


class DeepLiftGradients:
    """``(points, target_rows, origins) -> (scores, multipliers, points)``: the DeepLIFT multipliers
    of the target score at ``points`` w.r.t. references ``origins``, from a forward of the clone on
    ``origins`` (recording) and a forward+backward on ``points`` (module docstring: two-pass mode).
    The engine hands it each row's baseline (``takes_origins``); with the
    engine's ``"path"`` combination the attribution is ``(x − x₀) ⊙ multipliers``.
    """

    takes_origins = True

    def __init__(self, clone, score_fn=None):
        self.model = clone
        self.score_fn = score_fn

    def __call__(self, points, target_rows, origins):
        # two passes: the references forward (each nonlinearity records (x₀, y₀)), then the inputs
        # under the tape (each reads its reference): the backward runs on the input rows only, not
        # on [x; x₀] (half of whose rows carry zeros)
        _REFERENCES.mode, _REFERENCES.pairs = "record", []
        try:
            self.model(tf.cast(origins, points.dtype), training=False)
            _REFERENCES.mode = "replay"
            with tf.GradientTape() as tape:
                tape.watch(points)
                outputs = self.model(points, training=False)
                scores = select_scores(outputs, target_rows, self.score_fn)
        finally:
            _REFERENCES.mode, _REFERENCES.pairs = None, []
        gradients = tape.gradient(scores, points, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return scores, gradients, points
