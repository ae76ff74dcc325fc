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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

__all__ = ["InputsSpec", "InputLayout", "inputs_spec"]

#: integers above this lose exactness in float32; the packed tensor is float64 then
_FLOAT32_EXACT = 2**24


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
    """

    kind: str
    names: Tuple[str, ...]
    shapes: Tuple[Tuple[int, ...], ...]
    dtypes: Tuple[str, ...]
    fixed: Tuple[bool, ...]
    packed_dtype: str

    @property
    def sizes(self) -> Tuple[int, ...]:
        return tuple(int(np.prod(shape, dtype=np.int64)) for shape in self.shapes)

    @property
    def width(self) -> int:
        return int(sum(self.sizes))

    def fixed_mask(self) -> np.ndarray:
        """``(D,)`` bool: the packed positions of fixed inputs."""
        return np.concatenate([np.full(size, flag) for size, flag in zip(self.sizes, self.fixed)])

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
        return np.concatenate([np.asarray(a).reshape(n, -1).astype(self.packed_dtype) for a in arrays], axis=1)

    def unpack_host(self, packed: np.ndarray) -> list:
        """``(N, D)`` → per-input ``(N, …)`` arrays (same dtype as ``packed``)."""
        n = packed.shape[0]
        bounds = np.cumsum((0,) + self.sizes)
        return [packed[:, bounds[i]:bounds[i + 1]].reshape((n,) + shape) for i, shape in enumerate(self.shapes)]

    # -- traced side -----------------------------------------------------------------------
    def unpack(self, points: tf.Tensor):
        """Packed points ``(B, D)`` → the model's list or dict of ``(B, …)`` tensors in their dtypes
        (integer inputs rounded and cast back)."""
        parts = tf.split(points, list(self.sizes), axis=1)
        out = []
        for part, shape, dtype in zip(parts, self.shapes, self.dtypes):
            part = tf.reshape(part, [-1, *shape])
            target = tf.as_dtype(dtype)
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
        for item, size in zip(items, self.sizes):
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
        if not tf.as_dtype(d).is_floating and array.size and np.max(np.abs(array.astype(np.float64))) >= _FLOAT32_EXACT:
            dtype = "float64"
    return dtype
