"""One target selector for every method.

A target says which scalar of the model's output is explained, per example:

* ``None`` — the top-1 class of the model's prediction on the (unperturbed) input;
* an ``int`` — the same class for every example;
* a sequence/array of ints of length ``batch`` — one class per example;
* a callable ``outputs -> (batch,)`` — any scalar score built from the model's output
  tensor (TensorFlow ops; it is traced inside ``tf.function`` and called on chunks of
  interpolated inputs, so it must work row by row).

Targets are resolved once, on the original inputs: when noise or a path changes the
prediction, the explained class stays the one of the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["Targets", "resolve_targets", "select_scores"]


@dataclass
class Targets:
    """Resolved targets.

    Attributes:
        indices: ``(batch,)`` int32 class indices, or ``None`` for a callable score.
        score_fn: the user's callable, or ``None`` for class indices.
    """

    indices: Optional[np.ndarray]
    score_fn: Optional[Callable] = None

    def repeat(self, times: int) -> "Targets":
        """Targets for a batch where every example is repeated ``times`` times in a row."""
        if self.indices is None:
            return self
        return Targets(np.repeat(self.indices, times), self.score_fn)

    def subset(self, examples: np.ndarray) -> "Targets":
        """Targets of the examples ``examples`` (indices into the batch)."""
        if self.indices is None:
            return self
        return Targets(self.indices[np.asarray(examples)], self.score_fn)

    def rows(self, example_index: np.ndarray) -> np.ndarray:
        """Class index of each row of a flattened (example, point) list; zeros for callables."""
        if self.indices is None:
            return np.zeros(len(example_index), dtype=np.int32)
        return self.indices[example_index]


def select_scores(outputs: tf.Tensor, target_rows: tf.Tensor, score_fn: Optional[Callable]) -> tf.Tensor:
    """The explained scalar per row: ``outputs[b, target_rows[b]]`` or ``score_fn(outputs)``."""
    if score_fn is not None:
        scores = score_fn(outputs)
        scores = tf.convert_to_tensor(scores)
        if scores.shape.rank != 1:
            raise InvalidInputError(
                "A callable `target` must return one score per row, shape (batch,). "
                + received("target(outputs).shape", tuple(scores.shape))
            )
        return scores
    if isinstance(outputs, (list, tuple, dict)):
        raise InvalidTypeError(
            "The model returns several outputs; pass a callable `target` that maps them to "
            "one score per row. " + received("type(outputs)", type(outputs).__name__)
        )
    if outputs.shape.rank != 2:
        raise InvalidInputError(
            "An integer `target` needs model outputs of shape (batch, classes); use a callable "
            "target for other outputs. " + received("outputs.shape", tuple(outputs.shape))
        )
    return tf.gather(outputs, target_rows, axis=1, batch_dims=1)


def resolve_targets(target, outputs: Optional[np.ndarray], batch_size: int,
                    num_classes: Optional[int] = None) -> Targets:
    """Turn the user's ``target`` into :class:`Targets` for a batch of ``batch_size`` examples.

    Args:
        target: ``None``, int, sequence of ints, or callable (see the module docstring).
        outputs: the model's outputs on the inputs, ``(batch, classes)``; used for
            ``None`` (top-1) and for range checks. May be ``None`` for callables, and for
            explicit classes when ``num_classes`` is given.
        batch_size: number of examples.
        num_classes: the model's number of classes (range check without outputs).
    """
    if callable(target) and not isinstance(target, (np.ndarray, tf.Tensor)):
        return Targets(None, target)
    if outputs is None and num_classes is not None and target is not None:
        outputs = np.zeros((0, num_classes))  # explicit classes: only the range check needs the width
    if outputs is None or np.ndim(outputs) != 2:
        shape = None if outputs is None else tuple(np.shape(outputs))
        raise InvalidInputError(
            "Class targets need model outputs of shape (batch, classes); pass a callable "
            "`target` for other outputs. " + received("outputs.shape", shape)
        )
    num_classes = outputs.shape[1]
    if target is None:
        return Targets(np.argmax(outputs, axis=1).astype(np.int32))
    if isinstance(target, tf.Tensor):
        target = target.numpy()
    if isinstance(target, bool) or isinstance(target, (float, np.floating)):
        raise InvalidTypeError(
            "`target` must be an int class index, a sequence of ints, None or a callable. "
            + received("target", target)
        )
    original = target
    array = np.asarray(target)
    if not (np.issubdtype(array.dtype, np.integer)):
        raise InvalidTypeError(
            "`target` must be an int class index, a sequence of ints, None or a callable. "
            + received("target", target)
        )
    if array.ndim == 0:
        array = np.full(batch_size, int(array))
    elif array.ndim != 1 or array.shape[0] != batch_size:
        raise InvalidInputError(
            f"`target` needs one class per example ({batch_size}). "
            + received("target.shape", tuple(array.shape))
        )
    bad = (array < 0) | (array >= num_classes)
    if bad.any():
        raise InvalidInputError(
            f"`target` class indices must lie in [0, {num_classes}) for this model. "
            + received("target", original if np.ndim(original) == 0 else
                       (array.tolist() if array.size <= 16 else int(array[bad][0])))
        )
    return Targets(array.astype(np.int32))
