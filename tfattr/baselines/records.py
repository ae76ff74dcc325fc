"""What a trained uniform-output baseline records: the classifier's fingerprint, the output
statistics, the result object (:class:`TrainedBaseline`) and its report.

Below both the trainer (:mod:`tfattr.baselines.uniform_output`) and the SavedModel export/load
(:mod:`tfattr.baselines.saved`), which share these without importing each other.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict

import keras
import numpy as np

from tfattr.core.keys import array_digest

__all__ = ["TrainedBaseline", "format_report", "model_fingerprint", "output_statistics"]


# -- fingerprint ---------------------------------------------------------------------------------
_DROP_KEYS = re.compile(r"^(name|trainable|seed)$|_(initializer|regularizer|constraint)$")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _canonical(value):
    """A config without names, initializers, regularizers, constraints and seeds."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in sorted(value.items()) if not _DROP_KEYS.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.ndarray) and not value.dtype.hasobject and value.size > np.get_printoptions()["threshold"]:
        # its repr elides the middle ("[1. 1. 1. ... 1. 1. 1.]"): two arrays would share it
        return f"array {value.dtype.str} {list(value.shape)} sha256:{array_digest(value)}"
    return _ADDRESS.sub("", repr(value))


def _flat_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if isinstance(layer, keras.Model):
            yield from _flat_layers(layer)


def model_fingerprint(model) -> Dict[str, str]:
    """SHA-256 hashes of a model's architecture and weights.

    The architecture hash covers, layer by layer, the class and the configuration
    without names (Keras numbers auto-named layers per session, so the same network
    built twice gets different names), initializers, regularizers, constraints and
    seeds (which do not change what a trained network computes), plus the input and
    output shapes. The weights hash covers every weight's shape, dtype and bytes in
    ``model.weights`` order.

    Returns:
        ``{"fingerprint": "sha256:…", "architecture": "…", "weights": "…"}``.

    Example:
        >>> model_fingerprint(model)["fingerprint"][:7]
        'sha256:'
    """
    arch = hashlib.sha256()
    for layer in _flat_layers(model):
        if isinstance(layer, keras.Model):  # its layers follow; its own config wires them by name
            config = {"io": [[list(t.shape) for t in getattr(layer, part, None) or []]
                             for part in ("inputs", "outputs")]}
        else:
            try:
                config = layer.get_config()
            except Exception:  # a layer without get_config: its class is all we know
                config = {}
        kind = f"{type(layer).__module__}.{type(layer).__qualname__}"
        arch.update(json.dumps([kind, _canonical(config)], sort_keys=True, default=str).encode())
    for tensors in (getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []):
        arch.update(json.dumps([[list(t.shape), str(t.dtype)] for t in tensors], default=str).encode())
    weights = hashlib.sha256()
    for variable in model.weights:
        # Variable.numpy(), not np.array(variable): NumPy 2 deprecates the variable's __array__ (no copy=)
        value = np.ascontiguousarray(variable.numpy() if hasattr(variable, "numpy") else np.asarray(variable))
        weights.update(f"{value.shape}{value.dtype}".encode())
        weights.update(value.tobytes())
    total = hashlib.sha256((arch.hexdigest() + weights.hexdigest()).encode()).hexdigest()
    return {"fingerprint": "sha256:" + total, "architecture": arch.hexdigest(), "weights": weights.hexdigest()}


# -- statistics ----------------------------------------------------------------------------------
def output_statistics(probabilities: np.ndarray, target: np.ndarray) -> Dict[str, Any]:
    """Summary of an output probability vector against the target distribution.

    Returns ``min``, ``max``, ``argmax``, ``entropy`` (nats; the uniform distribution over
    ``K`` classes has ``log K``), ``max_entropy`` (``log K``) and ``max_abs_error``
    (``max_k |o_b − o_t|``, the paper's max-abs loss).

    Example:
        >>> output_statistics(np.full(4, 0.25), np.full(4, 0.25))["max_abs_error"]
        0.0
    """
    p = np.asarray(probabilities, np.float64).reshape(-1)
    t = np.asarray(target, np.float64).reshape(-1)
    positive = p[p > 0]
    return {
        "min": float(p.min()),
        "max": float(p.max()),
        "argmax": int(p.argmax()),
        "entropy": float(-(positive * np.log(positive)).sum()),
        "max_entropy": float(math.log(p.size)),
        "max_abs_error": float(np.abs(p - t).max()),
    }


# -- the result ----------------------------------------------------------------------------------
@dataclass
class TrainedBaseline:
    """What :func:`train_uniform_baseline` returns.

    Calling it returns the baseline, so it can be handed to any IG-family method as
    ``baseline=`` (``IntegratedGradients(model, baseline=trained)``).

    Attributes:
        baseline: ``(H, W, C)`` trained baseline ``b`` in the classifier's input space
            (before ``preprocess`` when one was given), in the model's input dtype.
        start: ``(H, W, C)`` starting baseline ``b₀``.
        target_distribution: ``(K,)`` target output ``o_t``.
        before, after: :func:`output_statistics` of ``o_{b₀}`` and ``o_b``.
        pixels: ``min``/``max`` of ``b₀`` and ``b``, ``mean_squared_change`` (``MSE(b, b₀)``)
            and ``max_abs_change``.
        history: ``loss``, ``output_loss`` and ``pixel_loss`` of every evaluated baseline
            (entry ``i`` = the baseline after ``i`` updates) and ``seconds`` (wall time since
            the start, the first step includes tracing); with ``keep="best"`` the returned
            baseline is entry :attr:`best_step`, the lowest output loss; with ``keep="final"``
            the one after the last update (entry :attr:`steps_run` when all steps ran).
        config: the training settings (``lam``, ``output_loss``, ``steps``, ``learning_rate``,
            ``value_range``, ``preprocessing``, ``start``, ``outputs``, ``seed``, …).
        model_info: the classifier's fingerprint (:func:`model_fingerprint`), name, input
            shape/dtype and number of classes.
    """

    baseline: np.ndarray
    start: np.ndarray
    target_distribution: np.ndarray
    before: Dict[str, Any]
    after: Dict[str, Any]
    pixels: Dict[str, float]
    history: Dict[str, list]
    config: Dict[str, Any]
    model_info: Dict[str, Any]
    seconds: float = 0.0
    stopped_early: bool = False
    best_step: int = 0
    steps_run: int = 0
    name: str = field(default="uniform_output", repr=False)

    @property
    def __name__(self) -> str:  # the registry names callables by __name__
        return self.name

    @property
    def array(self) -> np.ndarray:
        """The baseline ``(H, W, C)`` (same as :attr:`baseline`)."""
        return self.baseline

    def __call__(self, x=None) -> np.ndarray:
        """The baseline, whatever ``x`` (the registry's callable-baseline protocol)."""
        return self.baseline

    def cache_key(self) -> Dict[str, Any]:
        """The content this object returns (its tensor's hash), for result caches."""
        from tfattr.core.keys import array_digest

        return {"array": array_digest(self.baseline)}

    def report(self) -> str:
        """A few lines: the output statistics before/after and the pixel range."""
        return format_report(self.before, self.after, self.pixels, self.config, self.target_distribution,
                             extra=f"steps run {self.steps_run} (best at {self.best_step}"
                                   f"{', stopped early' if self.stopped_early else ''}"
                                   f"{', final kept' if self.config.get('keep') == 'final' else ''}), "
                                   f"{self.seconds:.1f}s")


def format_report(before, after, pixels, config, target, extra: str = "") -> str:
    """The text of :meth:`TrainedBaseline.report` (also used for saved baselines)."""
    target = np.asarray(target, np.float64)
    kind = "uniform" if np.allclose(target, target.mean()) else "custom"
    lines = [
        f"target: {kind} over {target.size} classes (1/K = {1.0 / target.size:.4g}); "
        f"loss: {config.get('lam')}·{config.get('output_loss')} + (1 − {config.get('lam')})·MSE(b, b0)",
    ]
    for label, stats in (("before", before), ("after", after)):
        lines.append(
            f"{label:>6}: p in [{stats['min']:.4g}, {stats['max']:.4g}] (argmax {stats['argmax']}), "
            f"entropy {stats['entropy']:.4f} / {stats['max_entropy']:.4f} nats, "
            f"max|o_b − o_t| = {stats['max_abs_error']:.4g}"
        )
    if before.get("max_abs_error") and after.get("max_abs_error") is not None:
        ratio = before["max_abs_error"] / max(after["max_abs_error"], 1e-300)
        lines.append(f"max|o_b − o_t| reduced {ratio:.1f}×")
    lines.append(
        f"pixels: start in [{pixels['start_min']:.4g}, {pixels['start_max']:.4g}], baseline in "
        f"[{pixels['min']:.4g}, {pixels['max']:.4g}] (value range {tuple(config.get('value_range', ()))}), "
        f"MSE(b, b0) = {pixels['mean_squared_change']:.3g}, max|b − b0| = {pixels['max_abs_change']:.3g}"
    )
    if extra:
        lines.append(extra)
    return "\n".join(lines)
