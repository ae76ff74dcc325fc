r"""The LRP clone: layer-wise relevance propagation (Bach et al. 2015) by model surgery.

LRP redistributes a score ``R = f_c(x)`` from the output to the input, layer by layer, with a
*rule* per layer. For a linear layer ``z = W a + b`` every rule of :mod:`zennit.rules` (the
reference implementation, Anders et al.) is a modified forward ``z'`` and the "gradient trick"

.. math:: R_a = a' \odot W'^\top \big(R_z / \mathrm{stab}(z')\big),

which is one vector–Jacobian product of the modified layer. The clone made here computes the
model's forward pass and, on the way back, *relevance instead of gradients*: each layer with a
rule passes ``R_in`` (not ``∂F/∂a``) to its input through a ``tf.custom_gradient`` identity, so
one forward and one backward pass of the clone with the output gradient ``f_c(x)·e_c`` give the
input relevance (zennit does the same with backward hooks).

Rules (``stab(z) = z + ε·sign(z)``, ``sign(0) = +1``, zennit's :func:`zennit.core.stabilize`;
``a⁺ = max(a, 0)``, ``a⁻ = min(a, 0)``, ``W⁺``/``W⁻`` likewise, biases with the weights unless
said otherwise):

* :class:`Epsilon` (LRP-ε, LRP-0 for ε = 0): ``z' = Wa + b``; with ε = 0 a unit with ``z = 0`` exactly
  passes no relevance on (``R/0`` is taken as 0, where zennit gives NaN).
* :class:`ZPlus` (z⁺ = α1β0 allowing negative inputs): ``z' = W⁺a⁺ + b⁺ + W⁻a⁻``,
  ``R = a⁺ ⊙ W⁺ᵀg + a⁻ ⊙ W⁻ᵀg``, ``g = R_z / stab(z')``.
* :class:`AlphaBeta` (α − β = 1): ``α`` times the z⁺ relevance minus ``β`` times the same with
  ``W⁺ ↔ W⁻`` (``z'_n = W⁻a⁺ + b⁻ + W⁺a⁻``).
* :class:`Gamma` (generalised γ of Andéol et al. as zennit): weights ``W + γW⁺`` and ``W + γW⁻``;
  where ``z > 0``: ``z'_p = (W+γW⁺)a⁺ + (b+γb⁺) + (W+γW⁻)a⁻``, where ``z < 0`` the mirror image.
* :class:`ZBox` (zᴮ, Montavon et al. 2017) for a bounded input ``l ≤ a ≤ h``:
  ``z' = Wa + b − (W⁺l + b⁺) − (W⁻h + b⁻)``, ``R = a ⊙ Wᵀg − l ⊙ W⁺ᵀg − h ⊙ W⁻ᵀg``.
* :class:`WSquare` (w²): ``z' = W²·1 + b²``, ``R = (W²)ᵀ g``.  :class:`Flat`: ``W = 1``, no bias.
* :class:`Norm` (zennit's rule for sums and average pools): ``R_i = x_i ⊙ Jᵀ(R / stab(y))``.
* :class:`Pass`: ``R_in = R_out`` (activations, unmerged BatchNormalization, Rescaling/Normalization).
* :class:`GradientRule`: the layer's plain gradient routes the relevance (max-pools: winner takes all;
  reshapes, concatenation, padding, dropout).

Canonizer: a BatchNormalization whose input is the output of a Conv/Dense/DepthwiseConv/SeparableConv
with a linear activation and used by nothing else is merged into it for the rule
(``W' = W·s``, ``b' = (b − μ)s + β``, ``s = γ/√(σ² + ε)``, zennit's ``SequentialMergeBatchNorm``).
The clone's *forward* pass still runs the original layers (bit for bit the model's output); only the
rule uses the merged weights, so the rule's ``z'`` for ε/γ is the layer pair's actual output.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from tfattr.core.targets import select_scores
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.surgery.cloning import (
    SurgeryReport,
    _is_functional,
    _is_nested_model,
    cached_clone,
    check_cloneable,
    clone_with,
    copy_weights,
    leaf_layers,
    refresh,
    register,
    store_clone,
)
from tfattr.surgery.deeplift import _is_elementwise, _is_linear_activation

__all__ = [
    "Rule", "Epsilon", "ZPlus", "AlphaBeta", "Gamma", "ZBox", "WSquare", "Flat", "Norm", "Pass", "GradientRule",
    "COMPOSITES", "RULE_NAMES", "lrp_clone", "resolve_rules", "LRPGradients", "layer_relevances", "stabilize",
    "LRP_SCOPE", "check_box",
]

LRP_SCOPE = "tfattr_lrp"
_L = keras.layers


# -- rules ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """Base of the LRP rules (frozen: a rule set is a cache key)."""

    #: the stabiliser ``ε`` of ``stab(z) = z + ε·sign(z)``
    stabilizer: float = 1e-6

    #: rules for layers with a kernel (Conv/Dense); the others are for parameter-free layers
    linear = True

    def __post_init__(self):
        _check_number("stabilizer", self.stabilizer, positive=True)

    def key(self) -> str:
        return repr(self)


def _check_number(name, value, positive=False):
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) \
        and np.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise InvalidInputError(f"The `{name}` of an LRP rule must be a finite number "
                                f"{'> 0' if positive else '≥ 0'}. " + received(name, value))


def check_box(low, high, shape=None):
    """Refuse a zᴮ box whose ``low`` and ``high`` do not broadcast (to each other and to the input
    ``shape`` without the batch axis, when given) or where ``low > high``."""
    try:
        lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
        both = np.broadcast_arrays(lo, hi) if shape is None else (np.broadcast_to(lo, tuple(shape)),
                                                                   np.broadcast_to(hi, tuple(shape)))
    except (TypeError, ValueError):
        raise InvalidInputError("The zᴮ box bounds `low` and `high` must be numbers, per-channel arrays or arrays of "
                                f"the input's shape {tuple(shape) if shape is not None else ''}. "
                                + received("(low, high)", (low, high))) from None
    if not (np.all(np.isfinite(both[0])) and np.all(np.isfinite(both[1]))) or np.any(both[0] > both[1]):
        raise InvalidInputError("The zᴮ box needs finite bounds with `low` ≤ `high` everywhere. "
                                + received("(low, high)", (low, high)))


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-ε: ``R_a = a ⊙ Wᵀ(R_z / (z + ε·sign(z)))`` (Bach et al. 2015; ε = 0 is LRP-0)."""

    epsilon: float = 1e-6

    def __post_init__(self):
        super().__post_init__()
        _check_number("epsilon", self.epsilon)


@dataclass(frozen=True)
class ZPlus(Rule):
    """LRP-z⁺ (α1β0 allowing negative inputs, zennit's ``ZPlus``)."""


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-αβ with ``α − β = 1``, ``α, β ≥ 0`` (zennit's ``AlphaBeta``)."""

    alpha: float = 2.0
    beta: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise InvalidInputError("The alpha-beta rule needs alpha >= 0, beta >= 0 and alpha - beta = 1. "
                                    + received("(alpha, beta)", (self.alpha, self.beta)))


@dataclass(frozen=True)
class Gamma(Rule):
    """Generalised LRP-γ (zennit's ``Gamma``): weights ``W + γW⁺`` for positive, ``W + γW⁻`` for negative outputs."""

    gamma: float = 0.25

    def __post_init__(self):
        super().__post_init__()
        _check_number("gamma", self.gamma)


@dataclass(frozen=True)
class ZBox(Rule):
    """LRP-zᴮ for inputs bounded by ``low ≤ a ≤ high`` (scalars, per-channel or full-shape, as tuples)."""

    low: Any = 0.0
    high: Any = 1.0

    def __post_init__(self):
        super().__post_init__()
        check_box(self.low, self.high)


@dataclass(frozen=True)
class WSquare(Rule):
    """LRP-w²: ``R = (W²)ᵀ (R_z / stab(W²·1 + b²))`` (zennit squares the bias too)."""


@dataclass(frozen=True)
class Flat(Rule):
    """LRP-flat: w² with every weight 1 and no bias."""


@dataclass(frozen=True)
class Norm(Rule):
    """``R_i = x_i ⊙ Jᵀ(R / stab(y))`` for sums (Add) and average pools (zennit's ``Norm``)."""

    linear = False


@dataclass(frozen=True)
class Pass(Rule):
    """``R_in = R_out`` (elementwise layers: activations, unmerged BatchNormalization, Rescaling)."""

    linear = False


@dataclass(frozen=True)
class GradientRule(Rule):
    """The layer's own gradient moves the relevance (max-pool winner takes all, reshapes, concatenation)."""

    linear = False


def _named_rule(name: str, epsilon: float, gamma: float, stabilizer: float, box) -> Rule:
    table = {
        "epsilon": lambda: Epsilon(stabilizer, epsilon),
        "zero": lambda: Epsilon(stabilizer, 0.0),
        "zplus": lambda: ZPlus(stabilizer),
        "alpha1_beta0": lambda: AlphaBeta(stabilizer, 1.0, 0.0),
        "alpha2_beta1": lambda: AlphaBeta(stabilizer, 2.0, 1.0),
        "gamma": lambda: Gamma(stabilizer, gamma),
        "zbox": lambda: ZBox(stabilizer, *box),
        "wsquare": lambda: WSquare(stabilizer),
        "flat": lambda: Flat(stabilizer),
        "norm": lambda: Norm(stabilizer),
        "pass": lambda: Pass(stabilizer),
        "gradient": lambda: GradientRule(stabilizer),
    }
    if name not in table:
        raise InvalidInputError(f"Unknown LRP rule {name!r}; the rules are {sorted(table)} or a rule object of "
                                "tfattr.surgery.lrp. " + received("rule", name))
    return table[name]()


#: names accepted in a ``rules`` mapping
RULE_NAMES = ("epsilon", "zero", "zplus", "alpha1_beta0", "alpha2_beta1", "gamma", "zbox", "wsquare", "flat",
              "norm", "pass", "gradient")

_CONV_NAMES = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
               "SeparableConv2D")
CONVOLUTIONS = tuple(getattr(_L, n) for n in _CONV_NAMES if hasattr(_L, n))
DENSE = (_L.Dense,)
LINEAR = CONVOLUTIONS + DENSE

#: composite -> (conv rule, dense rule, first-layer rule, first-layer types), as zennit's composites
COMPOSITES = {
    "epsilon": ("epsilon", "epsilon", None, None),
    "epsilon_plus": ("zplus", "epsilon", None, None),
    "epsilon_plus_flat": ("zplus", "epsilon", "flat", "linear"),
    "epsilon_gamma_box": ("gamma", "epsilon", "zbox", "conv"),
    "epsilon_alpha2_beta1": ("alpha2_beta1", "epsilon", None, None),
    "epsilon_alpha2_beta1_flat": ("alpha2_beta1", "epsilon", "flat", "linear"),
}

_NORM_LAYERS = tuple(getattr(_L, n) for n in (
    "Add", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D") if hasattr(_L, n))
_PASS_LAYERS = tuple(getattr(_L, n) for n in (
    "ReLU", "LeakyReLU", "PReLU", "ELU", "BatchNormalization", "Rescaling", "Normalization") if hasattr(_L, n))
_ROUTING_LAYERS = tuple(getattr(_L, n) for n in (
    "Flatten", "Reshape", "Permute", "Concatenate", "RepeatVector", "ZeroPadding1D", "ZeroPadding2D",
    "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "UpSampling1D", "UpSampling2D",
    "UpSampling3D", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "Identity", "ActivityRegularization") if hasattr(_L, n))
_ROUTING_OPS = ("Reshape", "Transpose", "Squeeze", "ExpandDims", "Concatenate")


# -- the relevance computations -----------------------------------------------------------------

def stabilize(z: tf.Tensor, epsilon: float) -> tf.Tensor:
    """``z + ε·sign(z)`` with ``sign(0) = +1`` (zennit's ``stabilize``)."""
    return z + tf.where(z >= 0, tf.ones_like(z), -tf.ones_like(z)) * tf.cast(epsilon, z.dtype)


def _vjp(lin, like, kernel, g):
    """``J_kernelᵀ g``: the input gradient of the linear map ``a ↦ lin(a, kernel, None)`` against ``g``."""
    probe = tf.zeros_like(like)
    with tf.GradientTape() as tape:
        tape.watch(probe)
        out = lin(probe, kernel, None)
    return tape.gradient(out, probe, output_gradients=g)


def _pos(t):
    return None if t is None else tf.maximum(t, 0)


def _neg(t):
    return None if t is None else tf.minimum(t, 0)


def _add(*ts):
    ts = [t for t in ts if t is not None]
    return None if not ts else (ts[0] if len(ts) == 1 else tf.add_n(ts))


def _box(value, like):
    return tf.ones_like(like) * tf.cast(tf.constant(np.asarray(value, dtype=np.float64)), like.dtype)


def linear_relevance(rule: Rule, lin, a, kernel, bias, z, R):
    """``R_a`` of the linear map ``z = lin(a, kernel, bias)`` under ``rule`` (module docstring).

    The rules that split the input by sign (z⁺, αβ, γ) check once whether ``a`` has a negative entry
    (``tf.cond``); after a ReLU it has none, and the ``a⁻`` terms, which are then zero, are skipped.
    """
    if isinstance(rule, (ZPlus, AlphaBeta, Gamma)):
        has_negative = tf.reduce_any(a < 0)
        return tf.cond(has_negative, lambda: _signed_relevance(rule, lin, a, kernel, bias, z, R, True),
                       lambda: _signed_relevance(rule, lin, a, kernel, bias, z, R, False))
    st = rule.stabilizer
    if isinstance(rule, Epsilon):
        # ε = 0 (LRP-0): a unit with z = 0 exactly (a black image, a dead unit) passes nothing on, not 0/0 = NaN
        return a * _vjp(lin, a, kernel, tf.math.divide_no_nan(R, stabilize(z, rule.epsilon)))
    if isinstance(rule, ZBox):
        low, high = _box(rule.low, a), _box(rule.high, a)
        wp, wn = tf.maximum(kernel, 0), tf.minimum(kernel, 0)
        zb = lin(a, kernel, bias) - lin(low, wp, _pos(bias)) - lin(high, wn, _neg(bias))
        gb = R / stabilize(zb, st)
        return a * _vjp(lin, a, kernel, gb) - low * _vjp(lin, a, wp, gb) - high * _vjp(lin, a, wn, gb)
    if isinstance(rule, (WSquare, Flat)):
        if isinstance(rule, WSquare):
            w2, b2 = tf.square(kernel), None if bias is None else tf.square(bias)
        else:
            w2, b2 = tf.ones_like(kernel), None
        zw = lin(tf.ones_like(a), w2, b2)
        return _vjp(lin, a, w2, R / stabilize(zw, st))
    raise InvalidTypeError(f"{type(rule).__name__} is not a rule for a layer with weights. "
                           + received("rule", rule))


def _signed_relevance(rule, lin, a, kernel, bias, z, R, negative: bool):
    """z⁺, αβ and γ; ``negative=False`` drops the terms of ``a⁻`` (valid when ``a ≥ 0``)."""
    st = rule.stabilizer
    ap = tf.maximum(a, 0)
    an = tf.minimum(a, 0) if negative else None

    def lin_neg(w):  # the a⁻ term of a modified forward (no bias), or nothing
        return lin(an, w, None) if negative else None

    def back_neg(w, g):
        return an * _vjp(lin, a, w, g) if negative else None

    if isinstance(rule, (ZPlus, AlphaBeta)):
        wp, wn = tf.maximum(kernel, 0), tf.minimum(kernel, 0)
        gp = R / stabilize(_add(lin(ap, wp, _pos(bias)), lin_neg(wn)), st)
        positive = _add(ap * _vjp(lin, a, wp, gp), back_neg(wn, gp))
        if isinstance(rule, ZPlus):
            return positive
        if rule.beta == 0:
            return rule.alpha * positive
        gn = R / stabilize(_add(lin(ap, wn, _neg(bias)), lin_neg(wp)), st)
        negative_part = _add(ap * _vjp(lin, a, wn, gn), back_neg(wp, gn))
        return rule.alpha * positive - rule.beta * negative_part
    g = tf.cast(rule.gamma, kernel.dtype)
    wgp, wgn = kernel + g * tf.maximum(kernel, 0), kernel + g * tf.minimum(kernel, 0)
    bgp = None if bias is None else bias + g * tf.maximum(bias, 0)
    bgn = None if bias is None else bias + g * tf.minimum(bias, 0)
    zero = tf.zeros_like(z)
    up = tf.where(z > 0, R / stabilize(_add(lin(ap, wgp, bgp), lin_neg(wgn)), st), zero)
    down = tf.where(z < 0, R / stabilize(_add(lin(ap, wgn, bgn), lin_neg(wgp)), st), zero)
    return _add(ap * (_vjp(lin, a, wgp, up) + _vjp(lin, a, wgn, down)), back_neg(wgn, up), back_neg(wgp, down))


def _pass(x, y):
    @tf.custom_gradient
    def op(xx, yy):
        def backward(upstream):
            return tf.cast(upstream, xx.dtype), tf.zeros_like(yy)

        return tf.identity(yy), backward

    return op(x, tf.stop_gradient(y))


def _norm(fn, xs, y, stabilizer):
    xs = list(xs)

    @tf.custom_gradient
    def op(*args):
        ins, yy = list(args[:-1]), args[-1]

        def backward(upstream):
            g = upstream / stabilize(yy, stabilizer)
            with tf.GradientTape() as tape:
                tape.watch(ins)
                out = fn(ins if len(ins) > 1 else ins[0])
            grads = tape.gradient(out, ins, output_gradients=g)
            return [x * gr for x, gr in zip(ins, grads)] + [tf.zeros_like(yy)]

        return tf.identity(yy), backward

    return op(*xs, tf.stop_gradient(y))


# -- the per-layer probes (relevance at every rule layer's input, for info) -----------------------

_PROBES = threading.local()


def _probe(name, tensors):
    store = getattr(_PROBES, "store", None)
    if store is not None:
        store.append((name, tensors))


# -- linear maps of the layers with a kernel ------------------------------------------------------

def _bias_add(out, bias, data_format, rank):
    if bias is None:
        return out
    if data_format == "channels_first" and rank:
        return out + tf.reshape(bias, (1, -1) + (1,) * rank)
    return out + bias


def _stages(layer):
    """``[(lin, kernel_name, bias_name)]``: the layer as a chain of linear maps (a separable conv is two)."""
    if isinstance(layer, _L.Dense):
        return [lambda a, k, b: _bias_add(keras.ops.matmul(a, k), b, None, 0)]
    fmt = layer.data_format
    rank = layer.rank
    if type(layer).__name__.startswith("DepthwiseConv"):
        def depthwise(a, k, b):
            return _bias_add(keras.ops.depthwise_conv(a, k, strides=layer.strides, padding=layer.padding,
                                                      dilation_rate=layer.dilation_rate, data_format=fmt), b, fmt, rank)
        return [depthwise]
    if type(layer).__name__.startswith("SeparableConv"):
        def depthwise_stage(a, k, b):
            return keras.ops.depthwise_conv(a, k, strides=layer.strides, padding=layer.padding,
                                            dilation_rate=layer.dilation_rate, data_format=fmt)

        def pointwise_stage(a, k, b):
            return _bias_add(keras.ops.conv(a, k, strides=1, padding="valid", data_format=fmt), b, fmt, rank)
        return [depthwise_stage, pointwise_stage]

    def conv(a, k, b):
        return _bias_add(layer.convolution_op(a, k), b, fmt, rank)
    return [conv]


def _merged_params(inner, bn):
    """The rule's kernels and bias of ``inner`` (followed by ``bn``, merged), as tensors."""
    if type(inner).__name__.startswith("SeparableConv"):
        kernels = [tf.convert_to_tensor(inner.depthwise_kernel), tf.convert_to_tensor(inner.pointwise_kernel)]
    else:
        kernels = [tf.convert_to_tensor(inner.kernel)]
    bias = tf.convert_to_tensor(inner.bias) if inner.use_bias else None
    if bn is None:
        return kernels, bias
    dtype = kernels[-1].dtype
    var = tf.cast(tf.convert_to_tensor(bn.moving_variance), dtype)
    mean = tf.cast(tf.convert_to_tensor(bn.moving_mean), dtype)
    scale = tf.math.rsqrt(var + tf.cast(bn.epsilon, dtype))
    if bn.scale:
        scale = scale * tf.cast(tf.convert_to_tensor(bn.gamma), dtype)
    last = kernels[-1]
    if type(inner).__name__.startswith("DepthwiseConv"):  # kernel (..., in, multiplier): output in·m + j
        shape = tf.shape(last)
        last = tf.reshape(tf.reshape(last, tf.concat([shape[:-2], [-1]], 0)) * scale, shape)
    else:
        last = last * scale
    kernels[-1] = last
    merged = (-mean if bias is None else bias - mean) * scale
    if bn.center:
        merged = merged + tf.cast(tf.convert_to_tensor(bn.beta), dtype)
    return kernels, merged


class LRPLinear(keras.layers.Layer):
    """A Conv/Dense layer (and its merged BatchNormalization) whose backward is an LRP rule.

    Forward: the original layer (activation applied after), then the original BatchNormalization in
    inference mode: the model's output bit for bit. Backward: ``R`` through the activation unchanged
    (Pass), then the rule on the linear map with the merged weights.
    """

    def __init__(self, source, rule: Rule, bn=None, stage_rules=None, **kwargs):
        super().__init__(name=source.name, dtype=source.dtype_policy, **kwargs)
        config = dict(source.get_config())
        self.activation = source.activation
        config["activation"] = "linear"
        config["name"] = source.name + "_linear"
        self.inner = type(source).from_config(config)
        self.bn = None if bn is None else type(bn).from_config(dict(bn.get_config(), name=bn.name + "_merged"))
        self.rule = rule
        self.stage_rules = stage_rules or [rule] * len(_stages(self.inner))
        self.supports_masking = False

    def build(self, input_shape):
        self.inner.build(input_shape)
        if self.bn is not None:
            self.bn.build(self.inner.compute_output_shape(input_shape))
        self.built = True

    def compute_output_shape(self, input_shape):
        return self.inner.compute_output_shape(input_shape)

    def call(self, inputs):
        z = self.inner(inputs)
        if self.bn is not None:
            z = self.bn(z, training=False)
        if not inputs.dtype.is_floating:
            return self.activation(z)
        kernels, bias = _merged_params(self.inner, self.bn)
        stages = _stages(self.inner)
        rules = self.stage_rules
        _probe(self.name, inputs)

        @tf.custom_gradient
        def op(a, zz, *params):
            def backward(upstream):
                R = tf.cast(upstream, zz.dtype)
                if len(stages) == 1:
                    rel = linear_relevance(rules[0], stages[0], a, params[0], params[1] if bias is not None else None,
                                           zz, R)
                else:  # depthwise then pointwise
                    h = stages[0](a, params[0], None)
                    rel = linear_relevance(rules[1], stages[1], h, params[1],
                                           params[2] if bias is not None else None, zz, R)
                    rel = linear_relevance(rules[0], stages[0], a, params[0], None, h, rel)
                return [tf.cast(rel, a.dtype), tf.zeros_like(zz)] + [tf.zeros_like(p) for p in params]

            return tf.identity(zz), backward

        with tf.name_scope(LRP_SCOPE):
            params = [tf.cast(tf.stop_gradient(k), inputs.dtype)
                      for k in kernels + ([] if bias is None else [bias])]  # mixed precision: compute dtype
            z = op(inputs, tf.stop_gradient(z), *params)
            if _is_linear_activation(self.activation):
                return z
            return _pass(z, self.activation(z))


def _rule_layer(base, kind):
    accepted = set(inspect.signature(base.call).parameters)

    def call(self, inputs, *args, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        if kind == "norm":
            y = base.call(self, inputs, *args, **kwargs)
            xs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
            if not all(x.dtype.is_floating for x in xs):
                return y
            _probe(self.name, inputs)
            def fn(t):
                return base.call(self, t, *args, **kwargs)

            with tf.name_scope(LRP_SCOPE):
                return _norm(fn, xs, y, self._tfattr_stabilizer)
        if base is _L.BatchNormalization:
            kwargs["training"] = False
        y = base.call(self, inputs, *args, **kwargs)
        if not inputs.dtype.is_floating:
            return y
        _probe(self.name, inputs)
        with tf.name_scope(LRP_SCOPE):
            return _pass(inputs, y)

    name = ("LRPNorm" if kind == "norm" else "LRPPass") + base.__name__
    return type(name, (base,), {"call": call, "__module__": __name__, "_tfattr_stabilizer": 1e-6,
                                "__doc__": f"``keras.layers.{base.__name__}`` with the LRP {kind} rule."})


_WRAPPED: Dict[Tuple[type, str], type] = {}


def _wrapped(base, kind):
    key = (base, kind)
    if key not in _WRAPPED:
        _WRAPPED[key] = _rule_layer(base, kind)
    return _WRAPPED[key]


class MergedAway(keras.layers.Layer):
    """Stands for a BatchNormalization merged into the layer before it (the identity)."""

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


class _PassActivation:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        return _pass(x, self.fn(x))


# -- assigning rules --------------------------------------------------------------------------------

def _batchnorm_merges(model) -> Dict[int, object]:
    """``{id(linear layer): batch-norm layer}`` for every BatchNormalization that can be merged."""
    merges: Dict[int, object] = {}
    uses: Dict[int, int] = {}  # id(layer) -> its calls in the whole model, nested models included

    def visit(m):
        if not _is_functional(m) and not isinstance(m, keras.Sequential):
            return
        members = list(m.operations) if _is_functional(m) else list(m.layers)
        for layer in members:
            if _is_nested_model(layer):
                visit(layer)
        producers: Dict[int, List[object]] = {}  # id(layer) -> consumers in this graph
        edges = []
        if _is_functional(m):
            nodes = getattr(m, "_nodes", set())
            for op in members:
                for i, node in enumerate(getattr(op, "_inbound_nodes", [])):
                    if f"{id(op)}_ib-{i}" not in nodes:
                        continue
                    uses[id(op)] = uses.get(id(op), 0) + 1
                    for t in node.input_tensors:
                        src = t._keras_history.operation
                        producers.setdefault(id(src), []).append(op)
                        edges.append((src, op))
        else:
            for member in members:
                uses[id(member)] = uses.get(id(member), 0) + 1
            for a, b in zip(members, members[1:]):
                producers.setdefault(id(a), []).append(b)
                edges.append((a, b))
        calls = {}
        for _, dst in edges:
            calls[id(dst)] = calls.get(id(dst), 0) + 1
        for src, dst in edges:
            if not (isinstance(dst, _L.BatchNormalization) and type(src) in LINEAR):
                continue
            if len(producers.get(id(src), [])) != 1 or calls.get(id(dst), 0) != 1:
                continue
            if not _is_linear_activation(src.activation):
                continue
            fmt = getattr(src, "data_format", "channels_last")
            rank = len(dst.input.shape) if hasattr(dst, "input") else None
            axis = dst.axis if isinstance(dst.axis, int) else (dst.axis[0] if len(dst.axis) == 1 else None)
            if axis is None or rank is None:
                continue
            channel = rank - 1 if fmt == "channels_last" else 1
            if axis % rank != channel:
                continue
            merges[id(src)] = dst

    visit(model)
    # a layer called elsewhere too (shared between a nested model and the outer graph) keeps its BN apart:
    # the merged layer would apply the BatchNormalization at every call
    return {k: bn for k, bn in merges.items() if uses.get(k, 0) == 1 and uses.get(id(bn), 0) == 1}


def _as_rule(value, epsilon, gamma, stabilizer, box) -> Rule:
    if isinstance(value, Rule):
        return value
    if isinstance(value, str):
        return _named_rule(value, epsilon, gamma, stabilizer, box)
    raise InvalidTypeError("An LRP rule is a name (" + ", ".join(RULE_NAMES) + ") or a rule object of "
                           "tfattr.surgery.lrp. " + received("rule", value))


def _user_rule(rules, path, layer, epsilon, gamma, stabilizer, box) -> Optional[Rule]:
    if not rules:
        return None
    for key in (path, layer.name):
        if key in rules:
            return _as_rule(rules[key], epsilon, gamma, stabilizer, box)
    for key, value in rules.items():
        if isinstance(key, type) and isinstance(layer, key):
            return _as_rule(value, epsilon, gamma, stabilizer, box)
    return None


def _frozen(value):
    """A bound as a float or nested tuples (hashable, with a stable repr for the cache key)."""
    array = np.asarray(value, np.float64)
    if array.ndim == 0:
        return float(array)

    def nest(a):
        return tuple(nest(b) for b in a) if a.ndim > 1 else tuple(float(v) for v in a)
    return nest(array)


_AFFINE_INPUT_LAYERS = tuple(getattr(_L, n) for n in ("Rescaling", "Normalization") if hasattr(_L, n))


def _affine_chain(model, layer) -> Optional[List[object]]:
    """The Rescaling/Normalization layers between ``model``'s single input and ``layer``'s input, in call
    order, through Sequential and nested models (``[]``: ``layer`` reads the input); ``None`` when
    anything else lies between them, ``layer`` is called more than once, or it is not in ``model``."""
    if isinstance(model, keras.Sequential):
        chain: List[object] = []
        for member in model.layers:
            if member is layer:
                return chain
            if _is_nested_model(member):
                if any(inner is layer for _, inner in leaf_layers(member)):
                    inner_chain = _affine_chain(member, layer)
                    return None if inner_chain is None else chain + inner_chain
                return None
            if type(member) not in _AFFINE_INPUT_LAYERS:
                return None
            chain.append(member)
        return None
    if not _is_functional(model) or len(model.inputs or []) != 1:
        return None
    target, inner_chain = layer, []
    if not any(op is layer for op in model.operations):
        holders = [op for op in model.operations
                   if _is_nested_model(op) and any(inner is layer for _, inner in leaf_layers(op))]
        if len(holders) != 1:
            return None
        inner_chain = _affine_chain(holders[0], layer)
        if inner_chain is None:
            return None
        target = holders[0]
    nodes = getattr(model, "_nodes", set())
    chain = []
    current = target
    while True:
        inbound = [node for i, node in enumerate(getattr(current, "_inbound_nodes", []))
                   if f"{id(current)}_ib-{i}" in nodes]
        if len(inbound) != 1 or len(inbound[0].input_tensors) != 1:
            return None
        producer = inbound[0].input_tensors[0]._keras_history.operation
        if isinstance(producer, keras.layers.InputLayer):
            break
        if type(producer) not in _AFFINE_INPUT_LAYERS:
            return None
        chain.append(producer)
        current = producer
    return list(reversed(chain)) + inner_chain


def box_at(model, layer, box):
    """The zᴮ box ``(low, high)`` given in ``model``'s input units, carried to ``layer``'s input through
    the Rescaling/Normalization layers between them (elementwise affine maps; their images of the bounds,
    ordered, per channel when constant over positions), in Functional and Sequential models and through
    nested ones. Unchanged when ``layer`` reads the input directly or through anything else."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # a Sequential model never built on an input
        return box
    if not inputs or len(inputs) != 1:
        return box
    chain = _affine_chain(model, layer)
    if not chain:
        return box
    shape = (1,) + tuple(model.inputs[0].shape[1:])
    ends = []
    for bound in box:
        t = tf.constant(np.broadcast_to(np.asarray(bound, np.float32), shape))
        for step in chain:
            t = step(t)
        ends.append(np.asarray(t)[0].astype(np.float64))
    low, high = np.minimum(*ends), np.maximum(*ends)

    def compact(a):
        channels = a.reshape(-1, a.shape[-1])
        return _frozen(channels[0] if np.all(channels == channels[0]) else a)
    return compact(low), compact(high)


def resolve_rules(model, composite: Optional[str] = "epsilon_plus", rules=None, epsilon: float = 1e-6,
                  gamma: float = 0.25, stabilizer: float = 1e-6, box=(0.0, 1.0), unsupported: str = "raise"):
    """``[(path, layer, rule or None, why unsupported or None)]`` for every leaf layer of ``model``.

    The user's ``rules`` mapping (a layer path or name, then a layer class) comes first, then the
    composite's first-layer rule (the first Conv for ``epsilon_gamma_box``, the first Conv/Dense for
    the ``*_flat`` composites, in the model's topological order as zennit's module order), then its
    Conv/Dense rules, then: Pass for activations, unmerged BatchNormalization, Rescaling and
    Normalization; Norm for Add and average pools; the gradient for routing layers.
    """
    if composite is not None and composite not in COMPOSITES:
        raise InvalidInputError(f"Unknown LRP composite; the composites are {sorted(COMPOSITES)} (zennit's names). "
                                + received("composite", composite))
    if rules is not None and not isinstance(rules, dict):
        raise InvalidTypeError("`rules` is a dict {layer class or layer name: rule}. "
                               + received("type(rules)", type(rules).__name__))
    for key in (rules or {}):
        if not (isinstance(key, str) or (isinstance(key, type) and issubclass(key, keras.layers.Layer))):
            raise InvalidTypeError("The keys of `rules` are layer names or keras layer classes. "
                                   + received("key", key))
    leaves = leaf_layers(model)
    known = {path for path, _ in leaves} | {getattr(layer, "name", None) for _, layer in leaves}
    unknown = [key for key in (rules or {}) if isinstance(key, str) and key not in known]
    if unknown:
        raise InvalidInputError(f"`rules` names layers that model {model.name!r} does not have: {unknown} (a key is a "
                                "layer's name or its path such as 'block/conv' in nested models, or a layer class). "
                                + received("rules", rules))
    conv_rule, dense_rule, first_rule, first_types = COMPOSITES[composite] if composite else (None,) * 4
    first_classes = {"conv": CONVOLUTIONS, "linear": LINEAR}.get(first_types, ())
    first_done = False
    out = []
    for path, layer in leaves:
        why = None
        rule = _user_rule(rules, path, layer, epsilon, gamma, stabilizer,
                          box_at(model, layer, box) if isinstance(layer, LINEAR) else box) if isinstance(
            layer, keras.layers.Layer) else None
        if not isinstance(layer, keras.layers.Layer):  # keras.ops node
            kind = type(layer).__name__
            if kind in _ROUTING_OPS and type(layer).__module__.startswith("keras"):
                rule = GradientRule(stabilizer)
            elif kind in ("Relu", "Relu6", "LeakyRelu"):
                rule = Pass(stabilizer)
            elif kind == "Add" and any(len(node.input_tensors) < 2 for node in getattr(layer, "_inbound_nodes", [])):
                why = "keras.ops node Add of a constant (a bias outside a layer: no LRP rule)"
            elif kind == "Add":
                rule = Norm(stabilizer)
            else:
                why = f"keras.ops node {kind}"
        elif type(layer) in LINEAR:
            is_first = not first_done and isinstance(layer, first_classes)
            if is_first:
                first_done = True
            if rule is None:
                if is_first:
                    rule = _as_rule(first_rule, epsilon, gamma, stabilizer,
                                    box_at(model, layer, box) if first_rule == "zbox" else box)
                elif isinstance(layer, CONVOLUTIONS) and conv_rule:
                    rule = _as_rule(conv_rule, epsilon, gamma, stabilizer, box)
                elif dense_rule:
                    rule = _as_rule(dense_rule, epsilon, gamma, stabilizer, box)
            activation = layer.activation
            if not (_is_linear_activation(activation) or _is_elementwise(activation)):
                name = getattr(activation, "__name__", repr(activation))
                hint = " (explain the logits: tfattr.surgery.logits_model)" if "softmax" in name else ""
                why = f"activation {name!r}{hint}"
            elif rule is None:
                why = "no rule given (pass a composite or a rule for it)"
            elif not rule.linear and not isinstance(rule, GradientRule):
                why = f"rule {type(rule).__name__} is not for a layer with weights"
        elif isinstance(layer, _NORM_LAYERS) and type(layer) in _NORM_LAYERS:
            rule = rule or Norm(stabilizer)
        elif type(layer) in _PASS_LAYERS or (type(layer) is _L.Activation and _is_elementwise(layer.activation)):
            rule = rule or Pass(stabilizer)
        elif type(layer) is _L.Activation and _is_linear_activation(layer.activation):
            rule = rule or GradientRule(stabilizer)
        elif type(layer) in _ROUTING_LAYERS:
            rule = rule or GradientRule(stabilizer)
        elif rule is None or rule.linear:
            if isinstance(layer, _L.Softmax) or (type(layer) is _L.Activation
                                                 and "softmax" in getattr(layer.activation, "__name__", "")):
                why = "Softmax (explain the logits: tfattr.surgery.logits_model)"
            else:
                why = type(layer).__name__
        if rule is not None and not rule.linear and type(layer) in LINEAR and not isinstance(rule, GradientRule):
            why = why or f"rule {type(rule).__name__} is not for a layer with weights"
        if rule is not None and rule.linear and type(layer) not in LINEAR and isinstance(layer, keras.layers.Layer):
            why = f"rule {type(rule).__name__} needs a layer with weights (Conv/Dense)"
        if why is not None and unsupported == "gradient":
            rule, why = GradientRule(stabilizer), None
        out.append((path, layer, rule, why))
    return out


def _stage_rules(layer, rule, stabilizer):
    if type(layer).__name__.startswith("SeparableConv"):
        second = Epsilon(stabilizer, stabilizer) if isinstance(rule, (ZBox, WSquare)) else rule
        return [rule, second]
    return None


def lrp_clone(model: keras.Model, composite: Optional[str] = "epsilon_plus", rules=None, epsilon: float = 1e-6,
              gamma: float = 0.25, stabilizer: float = 1e-6, box=(0.0, 1.0), unsupported: str = "raise",
              canonize: bool = True, refresh_weights: bool = True) -> keras.Model:
    """The LRP clone of ``model`` for a rule set (module docstring); cached per model and rule set.

    Its forward pass is the model's; its input "gradient" against the output gradient ``R_out`` is the
    input relevance. Every call copies the model's current weights into the cached clone (unless
    ``refresh_weights=False``: callers that run it through :func:`~tfattr.surgery.synced` need not).

    Raises:
        InvalidInputError: layers without a rule (all named), unless ``unsupported="gradient"``.

    Example:
        >>> clone = lrp_clone(model, "epsilon_plus")
        >>> np.array_equal(clone(x), model(x))
        True
    """
    if unsupported not in ("raise", "gradient"):
        raise InvalidInputError("`unsupported` must be 'raise' or 'gradient'. " + received("unsupported", unsupported))
    check_cloneable(model, "LRP")
    try:
        shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    except (AttributeError, ValueError):
        shape = None
    check_box(box[0], box[1], shape if shape is not None and None not in shape else None)
    box = (_frozen(box[0]), _frozen(box[1]))
    assigned = resolve_rules(model, composite, rules, epsilon, gamma, stabilizer, box, unsupported)
    missing = [f"{path} ({why})" for path, _, _, why in assigned if why is not None]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise InvalidInputError(
            f"LRP has no rule for these layers of model {model.name!r}: {shown}. It propagates through Conv/Dense "
            "layers (the composite's rules), activations and BatchNormalization (pass), Add and average pools "
            "(norm), max-pools, reshaping, concatenation, padding and dropout (gradient); pass "
            "unsupported='gradient' to let the others' plain gradient carry the relevance. "
            + received("model.name", model.name))
    merges = _batchnorm_merges(model) if canonize else {}
    merged_bns = {id(bn) for bn in merges.values()}
    rule_of = {id(layer): rule for _, layer, rule, _ in assigned}
    key = hashlib.sha1(repr((composite, canonize, [(p, r.key() if r else None) for p, _, r, _ in assigned]))
                       .encode()).hexdigest()
    kind = "lrp:" + key
    clone = cached_clone(kind, model)
    if clone is not None:
        if refresh_weights:
            refresh(clone)
        return clone
    extra_pairs: List[Tuple[object, object]] = []
    made = {}

    def replace(layer):
        rule = rule_of.get(id(layer))
        if not isinstance(layer, keras.layers.Layer):
            if isinstance(rule, Pass):
                fn = {"Relu": keras.ops.relu, "Relu6": keras.ops.relu6}.get(type(layer).__name__)
                if type(layer).__name__ == "LeakyRelu":
                    slope = layer.negative_slope

                    def fn(t):
                        return keras.ops.leaky_relu(t, negative_slope=slope)
                return lambda x: _L.Activation(_PassActivation(fn), name=layer.name, dtype=x.dtype)(x)
            if isinstance(rule, Norm):
                return lambda *xs: _wrapped(_L.Add, "norm")(name=layer.name)(list(xs))
            return None
        if id(layer) in merged_bns:
            return MergedAway(name=layer.name, dtype=layer.dtype_policy)
        if isinstance(rule, GradientRule) or rule is None:
            return None
        if type(layer) in LINEAR and rule.linear:
            new = LRPLinear(layer, rule, merges.get(id(layer)), _stage_rules(layer, rule, stabilizer))
            made[id(layer)] = new
            return new
        if isinstance(rule, Norm):
            new = _wrapped(type(layer), "norm").from_config(layer.get_config())
            new._tfattr_stabilizer = rule.stabilizer
            return new
        if isinstance(rule, Pass):
            if type(layer) is _L.Activation:
                new = _L.Activation.from_config(layer.get_config())
                new.activation = _PassActivation(layer.activation)
                return new
            return _wrapped(type(layer), "pass").from_config(layer.get_config())
        return None

    clone, pairs = clone_with(model, replace, "LRP")
    plain = []
    for source, target, replaced in pairs:
        if isinstance(target, LRPLinear):
            for a, b in zip(source.weights, target.inner.weights):
                b.assign(a.value)
                extra_pairs.append((b, a))
            bn = merges.get(id(source))
            if bn is not None:
                for a, b in zip(bn.weights, target.bn.weights):
                    b.assign(a.value)
                    extra_pairs.append((b, a))
        elif isinstance(source, keras.layers.Layer) and id(source) in merged_bns:
            continue
        else:
            plain.append((source, target, replaced))
    variable_pairs = copy_weights(plain) + extra_pairs
    changed = tuple(path for path, _, rule, _ in assigned
                    if rule is not None and not isinstance(rule, GradientRule))
    notes = tuple(f"{layer.name} merged into {source_name}" for source_name, layer in
                  ((next(s.name for _, s, _, _ in assigned if id(s) == k), bn) for k, bn in merges.items()))
    register(clone, SurgeryReport("lrp", changed, (), notes), variable_pairs)
    object.__setattr__(clone, "_tfattr_lrp_rules", tuple((p, r) for p, _, r, _ in assigned))
    store_clone(kind, model, clone)
    return clone


# -- running it ------------------------------------------------------------------------------------

class LRPGradients:
    """``(points, target_rows) -> (scores, relevance, points)``: one pass of the LRP clone with the output
    relevance ``f_c(x)·e_c`` (the target score placed on its output)."""

    def __init__(self, clone, score_fn=None):
        self.model = clone
        self.score_fn = score_fn

    def __call__(self, points, target_rows):
        with tf.GradientTape() as tape:
            tape.watch(points)
            outputs = self.model(points, training=False)
            scores = select_scores(outputs, target_rows, self.score_fn)
        relevance = tape.gradient(scores, points, output_gradients=tf.stop_gradient(scores),
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return scores, relevance, points


def layer_relevances(clone, points, target_rows, score_fn=None) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """``(scores, {layer name: per-example relevance sum at its input})`` from one eager pass of ``clone``
    (a layer called several times: ``name`` for its first call, ``name#2``, ``name#3``… for the next).

    The relevance at a tensor is everything the layers reading it send back, so in a chain of layers
    each sum is the relevance reaching that layer (conservation: all equal ``f_c(x)`` when the rules
    conserve and the biases are zero).
    """
    points = tf.convert_to_tensor(points)
    _PROBES.store = []
    try:
        with tf.GradientTape() as tape:
            tape.watch(points)
            outputs = clone(points, training=False)
            scores = select_scores(outputs, tf.convert_to_tensor(target_rows, tf.int32), score_fn)
        probes = list(_PROBES.store)
    finally:
        _PROBES.store = None
    tensors = [t if not isinstance(t, (list, tuple)) else list(t) for _, t in probes]
    flat = tf.nest.flatten(tensors)
    grads = tape.gradient(scores, flat, output_gradients=tf.stop_gradient(scores),
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grads = tf.nest.pack_sequence_as(tensors, grads)
    sums = {}
    calls: Dict[str, int] = {}
    for (name, _), g in zip(probes, grads):
        parts = g if isinstance(g, list) else [g]
        total = sum(tf.reduce_sum(tf.reshape(p, (tf.shape(p)[0], -1)), axis=1) for p in parts)
        calls[name] = calls.get(name, 0) + 1  # a shared layer: "name", then "name#2", "name#3"… per call
        sums[name if calls[name] == 1 else f"{name}#{calls[name]}"] = total.numpy()
    return scores.numpy(), sums
