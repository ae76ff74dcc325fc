"""Canonical, content-based keys of option values, for result caches.

:func:`canonical` turns an option value into a JSON-ready structure that changes whenever
the value could change a computed number: numbers keep their exact ``repr``, arrays and
tensors are keyed by dtype, shape and a SHA-256 of their bytes (never by identity or by a
summary such as their sum), mappings by sorted keys, and objects that know their own
content (a trained or saved baseline) by their ``cache_key()``. A value with no such key
(a plain function, a lambda, an arbitrary object) raises :class:`Uncacheable`: its output
cannot be known without running it, so a result that depends on it must not be cached.

Example:
    >>> canonical({"steps": 8, "sigma": 0.5, "baseline": np.zeros((2, 2))})
    {'baseline': {'array': '<f8', 'shape': [2, 2], 'sha256': '…'}, 'sigma': 0.5, 'steps': 8}
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

__all__ = ["Uncacheable", "canonical", "array_digest", "digest"]


class Uncacheable(Exception):
    """A value that cannot be keyed by content; ``reason`` says which and why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def array_digest(array) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order)."""
    array = np.ascontiguousarray(array)
    hasher = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(array.tobytes())
    return hasher.hexdigest()


def digest(structure) -> str:
    """SHA-256 of a :func:`canonical` structure (sorted-key JSON)."""
    return hashlib.sha256(json.dumps(structure, sort_keys=True, allow_nan=True).encode()).hexdigest()


def canonical(value: Any, where: str = "value") -> Any:
    """A JSON-ready structure of ``value`` keyed by content (see the module docstring).

    Args:
        value: ``None``, bool, int, float, str, NumPy scalars/arrays, TensorFlow tensors and
            variables, lists/tuples, dicts, or an object with a ``cache_key()`` method.
        where: the option's name, for the :class:`Uncacheable` reason.

    Raises:
        Uncacheable: ``value`` is (or contains) a callable or object without ``cache_key()``.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value)  # JSON writes repr(float): exact
    if isinstance(value, (list, tuple)):
        return [canonical(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        # a key by its type too: {1: a} and {"1": a} are other options
        keyed = {(k if isinstance(k, str) else f"{type(k).__name__}:{k!r}"): (k, v) for k, v in value.items()}
        if len(keyed) != len(value):  # {1: a, "int:1": b}: two keys, one name; one entry would go unkeyed
            raise Uncacheable(f"{where} has keys whose names collide ({sorted(map(repr, value))})")
        return {name: canonical(v, f"{where}[{k!r}]") for name, (k, v) in sorted(keyed.items())}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:  # its bytes are pointers: equal bytes need not mean equal content
            raise Uncacheable(f"{where} is an object array, whose content has no byte key")
        return {"array": value.dtype.str, "shape": list(value.shape), "sha256": array_digest(value)}
    key = getattr(value, "cache_key", None)
    if callable(key):
        return {"object": f"{type(value).__module__}.{type(value).__qualname__}", "key": key()}
    if hasattr(value, "numpy") and hasattr(value, "dtype") and hasattr(value, "shape"):  # tf.Tensor, tf.Variable
        return canonical(np.asarray(value.numpy()), where)
    if callable(value):
        name = getattr(value, "__qualname__", None) or type(value).__name__
        raise Uncacheable(f"{where} is a callable ({name}) whose output cannot be keyed without running it")
    raise Uncacheable(f"{where} is a {type(value).__name__} with no content key")
