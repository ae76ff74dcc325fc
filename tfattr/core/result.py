"""The object every ``attribute`` call returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from tfattr.errors import InvalidInputError, received

__all__ = ["Explanation", "register_plotter"]

_PLOTTER = None


def register_plotter(function) -> None:
    """Set the function :meth:`Explanation.plot` draws with (``tfattr.viz.show``, registered by ``tfattr.viz``)."""
    global _PLOTTER
    _PLOTTER = function


@dataclass
class Explanation:
    """Attributions of a batch plus what a user needs to judge them.

    Behaves like the attribution array: ``np.asarray(expl)``, ``expl[0]``,
    ``expl.shape`` and ``len(expl)`` all act on :attr:`attributions`.

    Attributes:
        attributions: same shape, kind (NumPy or ``tf.Tensor``) and float dtype as the
            inputs. Without a batch axis when a single example was passed (``single``). For a
            model with several inputs, one array per input in the caller's structure (list,
            tuple or dict); layer methods: the layer's shape (or reduced, see their ``reduce``).
        method: the method's name and main options.
        targets: explained class per example (``None`` for callable targets).
        scores: ``f(x)``, the explained score of each input.
        baseline_scores: ``f(z)`` averaged over the baselines (path methods), or ``None``.
        delta: completeness delta ``Σ attributions − (f(x) − f(z))`` per example for
            methods that satisfy completeness (IG family), else ``None``.
        gradients: number of gradient evaluations spent (points, all examples).
        single: ``True`` when the input was one example without a batch axis.
        info: method-specific extras (e.g. the baseline name, the quadrature rule).
    """

    attributions: Any
    method: str
    targets: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None
    baseline_scores: Optional[np.ndarray] = None
    delta: Optional[np.ndarray] = None
    gradients: int = 0
    single: bool = False
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def relative_delta(self) -> Optional[np.ndarray]:
        """``|delta| / |f(x) − f(z)|`` per example (``inf`` where the difference is 0); without a baseline
        (``baseline_scores`` ``None``: LRP's conservation ``Σ R − f(x)``), ``|delta| / |f(x)|``."""
        if self.delta is None:
            return None
        reference = 0.0 if self.baseline_scores is None else np.asarray(self.baseline_scores)
        gap = np.abs(np.asarray(self.scores) - reference)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gap > 0, np.abs(self.delta) / np.where(gap > 0, gap, 1.0), np.inf)

    def numpy(self) -> np.ndarray:
        """The attributions as a NumPy array."""
        if isinstance(self.attributions, tf.Tensor):
            return self.attributions.numpy()
        return np.asarray(self.attributions)

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def __getitem__(self, index):
        return self.attributions[index]

    def __len__(self) -> int:
        if isinstance(self.attributions, (list, tuple, dict)):  # several inputs: the batch size
            attributions = self.attributions
            first = next(iter(attributions.values())) if isinstance(attributions, dict) else attributions[0]
            return len(first)
        return len(self.attributions)

    @property
    def shape(self):
        """The attributions' shape; for several inputs the shapes in their structure."""
        if isinstance(self.attributions, dict):
            return {name: tuple(a.shape) for name, a in self.attributions.items()}
        if isinstance(self.attributions, (list, tuple)):
            return tuple(tuple(a.shape) for a in self.attributions)
        return tuple(self.attributions.shape)

    def plot(self, image=None, index: int = 0, method: str = "heat_map", sign: str = "absolute_value", **options):
        """Draw one example's map with matplotlib (:func:`tfattr.viz.show`); returns ``(fig, ax)``.

        Args:
            image: that example's image, needed by every ``method`` but ``"heat_map"``.
            index: which example of the batch (ignored for a single example, ``single=True``).
            method: ``"heat_map"``, ``"blended_heat_map"``, ``"masked_image"``, ``"alpha_scaling"``
                or ``"original_image"``.
            sign: ``"absolute_value"``, ``"positive"``, ``"negative"`` or ``"all"``.
            **options: the other options of :func:`tfattr.viz.show` (``value_range``, ``percentile``,
                ``cmap``, ``alpha``, ``colorbar``, ``title``, ``ax``).
        """
        if _PLOTTER is None:  # tfattr.viz registers it on import (the core imports nothing above it)
            raise ImportError("Explanation.plot draws with tfattr.viz: `import tfattr` (or tfattr.viz) first.")
        maps = self.numpy() if not isinstance(self.attributions, (list, tuple, dict)) else self.attributions
        if not self.single and not isinstance(maps, (list, tuple, dict)):
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -len(maps) <= index < len(maps):
                raise InvalidInputError(f"`index` must pick one of the {len(maps)} examples. "
                                        + received("index", index))
            maps = maps[index]
        options.setdefault("title", self.method)
        return _PLOTTER(maps, image, method, sign, **options)

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}", f"shape={self.shape}"]
        if self.delta is not None:
            parts.append(f"max|delta|={float(np.max(np.abs(self.delta))):.3g}")
        parts.append(f"gradients={self.gradients}")
        if self.single:
            parts.append("single=True")
        return f"Explanation({', '.join(parts)})"
