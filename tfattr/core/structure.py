"""Models with several inputs: their input structure and the packed layout the engine runs on.

A model with several inputs (a list or a dict of tensors) is explained on one *packed* tensor
``(N, D)``: every input flattened per example and concatenated, in the model's input order.
The engine's rows interpolate that tensor as they interpolate one image; inside the traced
chunk :meth:`InputLayout.unpack` turns the points back into the model's list or dict of
tensors (integer inputs cast back exactly), the gradient function differentiates every float
input, and :meth:`InputLayout.pack` packs the gradients again. So ``Σ attributions`` and the
completeness delta run over all inputs together, and every method built on the engine's rows
(IG and its baselines, SmoothTaylor, NoiseTunnel, guided gradients) takes several inputs with
no loop of its own.

Inputs marked *fixed* (masks, token ids, side information) start their path at the input
itself: the engine replaces the baseline of their positions by the input
(:meth:`InputLayout.fixed_mask`), so their ``x − z`` is exactly 0 and they stay unchanged at
every point of the path.

Integer inputs reach the model with their exact values. The packed tensor is float64 when an
integer input holds values that float32 does not represent (``|v| ≥ 2**24``), and an integer
input with values float64 does not represent either (``|v| > 2**53``: hashed feature ids) is
*split*: each value ``v`` takes two packed columns, ``hi = v >> 32`` and ``lo = v & (2**32 − 1)``,
both exact in float64, joined again with integer arithmetic in :meth:`InputLayout.unpack`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

__all__ = ["InputsSpec", "InputLayout", "inputs_spec"]

#: integers above this lose exactness in float32; the packed tensor is float64 then
_FLOAT32_EXACT = 2**24
#: integers above this lose exactness in float64; such an input is split into two columns per value
_FLOAT64_EXACT = 2**53
_LOW_BITS = 32


@dataclass(frozen=True)
class InputsSpec:
    """The inputs of a model with several: ``kind`` ``"list"`` or ``"dict"``, their ``names``
    (dict keys, or the input layers' names), batch-free ``shapes`` (``None`` entries free) and
    ``dtypes``."""

    kind: str
    names: Tuple[str, ...]
    shapes: Tuple[Tuple[Optional[int], ...], ...]
    dtypes: Tuple[str, ...]


def inputs_spec(model) -> Optional[InputsSpec]:
    """The :class:`InputsSpec` of a model with several symbolic inputs, else ``None``."""
    inputs = getattr(model, "inputs", None)
    try:
        inputs = list(inputs) if inputs is not None else []
    except TypeError:
        return None
    if len(inputs) < 2:
        return None
    try:
        structure = model.input
    except (AttributeError, ValueError, RuntimeError):
        structure = inputs
    if isinstance(structure, dict):
        names = tuple(structure)
        tensors = [structure[name] for name in names]
        kind = "dict"
    else:
        tensors = list(structure) if isinstance(structure, (list, tuple)) else inputs
        names = tuple(getattr(t, "name", None) or f"input_{i}" for i, t in enumerate(tensors))
        kind = "list"
    return InputsSpec(kind, names, tuple(tuple(t.shape)[1:] for t in tensors),
                      tuple(tf.as_dtype(t.dtype).name for t in tensors))


@dataclass(frozen=True)
class InputLayout:
    """How a batch of several inputs sits in one packed ``(N, D)`` tensor.

    Attributes:
        kind: ``"list"``, ``"dict"`` or ``"single"``: what :meth:`unpack` hands to the model.
        names: the inputs' names, in packing order.
        shapes: each input's concrete batch-free shape.
        dtypes: each input's dtype (the model's).
        fixed: per input, whether its path stays at the input (baseline = input).
        packed_dtype: the packed tensor's float dtype.
        split: per input, whether its integers take two packed columns each (``hi``, ``lo``: values
            beyond float64's exact range); ``()`` for none.
    """

    kind: str
    names: Tuple[str, ...]
    shapes: Tuple[Tuple[int, ...], ...]
    dtypes: Tuple[str, ...]
    fixed: Tuple[bool, ...]
    packed_dtype: str
    split: Tuple[bool, ...] = ()

    @property
    def sizes(self) -> Tuple[int, ...]:
        """Values per example of each input."""
        return tuple(int(np.prod(shape, dtype=np.int64)) for shape in self.shapes)

    def is_split(self, index: int) -> bool:
        return bool(self.split) and bool(self.split[index])

    @property
    def columns(self) -> Tuple[int, ...]:
        """Packed columns of each input: its size, twice that for a split integer input."""
        return tuple(size * (2 if self.is_split(i) else 1) for i, size in enumerate(self.sizes))

    @property
    def width(self) -> int:
        return int(sum(self.columns))

    def fixed_mask(self) -> np.ndarray:
        """``(D,)`` bool: the packed positions of fixed inputs."""
        return np.concatenate([np.full(size, flag) for size, flag in zip(self.columns, self.fixed)])

    def structure(self, items: Sequence):
        """``items`` (one per input, in order) as the model takes them: a list, a dict, or the one
        tensor of ``kind="single"``."""
        if self.kind == "single":
            return items[0]
        return dict(zip(self.names, items)) if self.kind == "dict" else list(items)

    def items(self, structure) -> list:
        """The inverse of :meth:`structure`."""
        if isinstance(structure, dict):
            return [structure[name] for name in self.names]
        if not isinstance(structure, (list, tuple)):
            return [structure]
        return list(structure)

    # -- host side -------------------------------------------------------------------------
    def pack_host(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Per-input ``(N, …)`` arrays → the packed ``(N, D)`` array."""
        n = int(np.shape(arrays[0])[0])
        parts = []
        for i, array in enumerate(arrays):
            array = np.asarray(array).reshape(n, -1)
            if self.is_split(i):
                values = array.astype(np.dtype(self.dtypes[i]))  # exact: validated integers
                high, low = values >> _LOW_BITS, values & ((1 << _LOW_BITS) - 1)
                array = np.concatenate([high, low], axis=1)
            parts.append(array.astype(self.packed_dtype))
        return np.concatenate(parts, axis=1)

    def unpack_host(self, packed: np.ndarray) -> list:
        """``(N, D)`` → per-input ``(N, …)`` arrays (same dtype as ``packed``; a split integer input
        comes back exact, in its own dtype)."""
        n = packed.shape[0]
        bounds = np.cumsum((0,) + self.columns)
        out = []
        for i, shape in enumerate(self.shapes):
            part = packed[:, bounds[i]:bounds[i + 1]]
            if self.is_split(i):
                dtype = np.dtype(self.dtypes[i])
                high, low = np.split(np.rint(part), 2, axis=1)
                part = (high.astype(dtype) << _LOW_BITS) | low.astype(dtype)
            out.append(part.reshape((n,) + shape))
        return out

    # -- traced side -----------------------------------------------------------------------
    def unpack(self, points: tf.Tensor):
        """Packed points ``(B, D)`` → the model's list or dict of ``(B, …)`` tensors in their dtypes
        (integer inputs rounded and cast back)."""
        parts = tf.split(points, list(self.columns), axis=1)
        out = []
        for i, (part, shape, dtype) in enumerate(zip(parts, self.shapes, self.dtypes)):
            target = tf.as_dtype(dtype)
            if self.is_split(i):  # hi << 32 | lo in the input's own integer dtype: exact
                high, low = tf.split(tf.cast(tf.round(part), target), 2, axis=1)
                part = tf.bitwise.bitwise_or(tf.bitwise.left_shift(high, tf.constant(_LOW_BITS, target)), low)
                out.append(tf.reshape(part, [-1, *shape]))
                continue
            part = tf.reshape(part, [-1, *shape])
            if not target.is_floating:
                part = tf.round(part)
            out.append(tf.cast(part, target))
        return self.structure(out)

    def pack(self, tensors, dtype) -> tf.Tensor:
        """The model's list or dict of ``(B, …)`` tensors (``None`` or integer entries count as 0)
        → ``(B, D)`` in ``dtype``."""
        items = self.items(tensors)
        like = next(t for t in items if t is not None)
        batch = tf.shape(like)[0]
        out = []
        for item, size in zip(items, self.columns):
            if item is None or not item.dtype.is_floating:
                out.append(tf.zeros([batch, size], dtype))
            else:
                out.append(tf.cast(tf.reshape(item, [batch, size]), dtype))
        return tf.concat(out, axis=1)


def packed_dtype(dtypes: Sequence[str], fixed: Sequence[bool], arrays: Sequence[np.ndarray]) -> str:
    """The widest float dtype among the inputs (float32 when none is float), float64 when an
    integer input holds values that float32 does not represent exactly."""
    floats = [tf.as_dtype(d) for d in dtypes if tf.as_dtype(d).is_floating]
    dtype = max(floats, key=lambda d: d.size).name if floats else "float32"
    if dtype in ("float16", "bfloat16"):
        dtype = "float32"
    for d, array in zip(dtypes, arrays):
        if tf.as_dtype(d).is_integer and array.size and _largest_magnitude(np.asarray(array)) >= _FLOAT32_EXACT:
            dtype = "float64"
    return dtype


def _largest_magnitude(array: np.ndarray) -> int:
    """``max |v|`` of an integer (or bool) array, exact (Python ints: no float rounding, no overflow
    of ``abs(int64 min)``)."""
    return max(abs(int(array.min())), abs(int(array.max())))


def split_inputs(dtypes: Sequence[str], arrays: Sequence[np.ndarray]) -> Tuple[bool, ...]:
    """Per input: whether it is an integer input holding values float64 does not represent exactly
    (``|v| > 2**53``), packed as two columns per value (see :class:`InputLayout`)."""
    flags = []
    for d, array in zip(dtypes, arrays):
        kind = tf.as_dtype(d)
        flags.append(bool(kind.is_integer and kind.size == 8 and array.size
                          and _largest_magnitude(np.asarray(array)) > _FLOAT64_EXACT))
    return tuple(flags)
