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

A model with several outputs (a list/tuple or a dict of tensors) needs ``output``: an index
into the list, or a name (a dict key; for a list, the output layer's name). ``target`` then
refers to that output (its classes, its top-1; a callable receives that output alone).
Without ``output`` only a callable target works; it receives every output, as the model
returns them. :func:`resolve_output` checks ``output`` against the model before any work.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Callable, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["Targets", "OutputScore", "resolve_targets", "resolve_output", "select_output", "select_scores"]

OutputKey = Union[int, str]


@dataclass(frozen=True)
class OutputScore:
    """The score of one output of a model with several: :func:`select_scores` picks
    ``output`` first, then the class of each row (``score_fn=None``) or ``score_fn(output)``.

    This is what gradient functions receive as their ``score_fn`` when ``output`` is set.
    """

    output: OutputKey
    score_fn: Optional[Callable] = None


@dataclass
class Targets:
    """Resolved targets.

    Attributes:
        indices: ``(batch,)`` int32 class indices, or ``None`` for a callable score.
        score_fn: the user's callable, or ``None`` for class indices.
        output: the explained output of a model with several (index or name, see
            :func:`resolve_output`), or ``None``.
    """

    indices: Optional[np.ndarray]
    score_fn: Optional[Callable] = None
    output: Optional[OutputKey] = None

    @property
    def scorer(self):
        """What a gradient function takes as ``score_fn``: the user's callable (or ``None``), or
        an :class:`OutputScore` when an output is chosen."""
        return self.score_fn if self.output is None else OutputScore(self.output, self.score_fn)

    def repeat(self, times: int) -> Targets:
        """Targets for a batch where every example is repeated ``times`` times in a row."""
        if self.indices is None:
            return self
        return replace(self, indices=np.repeat(self.indices, times))

    def subset(self, examples: np.ndarray) -> Targets:
        """Targets of the examples ``examples`` (indices into the batch)."""
        if self.indices is None:
            return self
        return replace(self, indices=self.indices[np.asarray(examples)])

    def rows(self, example_index: np.ndarray) -> np.ndarray:
        """Class index of each row of a flattened (example, point) list; zeros for callables."""
        if self.indices is None:
            return np.zeros(len(example_index), dtype=np.int32)
        return self.indices[example_index]


def _several_outputs_error(count, names) -> InvalidInputError:
    listed = f" ({', '.join(repr(n) for n in names)})" if names else ""
    return InvalidInputError(
        f"The model has {count} outputs{listed}; pass `output=` (an index or a name) to choose the "
        "explained one, or a callable `target` that maps the outputs to one score per row. "
        + received("output", None)
    )


def resolve_output(output, spec, callable_target: bool = False) -> Tuple[Optional[OutputKey], Optional[int]]:
    """Check ``output`` against a model's :class:`~tfattr.core.inputs.ModelSpec`, before any work.

    Args:
        output: ``None``, an index into a list of outputs, or a name (a dict key, or an output
            layer's name for a list).
        spec: the model's spec (``output_kind``, ``output_names``, ``output_classes``).
        callable_target: the target is a callable, which may combine all outputs itself.

    Returns:
        ``(key, num_classes)``: the key :func:`select_output` picks at run time (a list's
        output as its index, a dict's by name; ``None`` for a single output) and the number of
        classes of the chosen output (``None`` when unknown).

    Raises:
        InvalidInputError: several outputs and neither ``output`` nor a callable target; an
            index out of range or a name the model does not have.
        InvalidTypeError: ``output`` is neither ``None``, an int nor a str.

    Example:
        >>> resolve_output("colour", model_spec(model))   # outputs [animal, colour]
        (1, 4)
    """
    if output is not None and (isinstance(output, bool) or not isinstance(output, (int, np.integer, str))):
        raise InvalidTypeError("`output` must be a name or an index of the model's outputs, or None. "
                               + received("output", output))
    if isinstance(output, np.integer):
        output = int(output)
    kind, names = spec.output_kind, spec.output_names or ()
    classes = spec.output_classes or ()
    listed = ", ".join(repr(n) for n in names)
    if kind == "unknown":
        return output, None  # checked by select_output when the model runs
    if kind == "single":
        if output is None or output == 0:
            return None, spec.num_classes
        raise InvalidInputError(
            "The model has a single output; `output` chooses among several and must be None (or 0). "
            + received("output", output)
        )
    if output is None:
        if len(names) == 1:
            return names[0], classes[0]
        if callable_target:
            return None, None
        raise _several_outputs_error(len(names), names)
    if kind == "dict":
        if isinstance(output, int):
            raise InvalidInputError(
                f"This model's outputs are a dict; choose one by name: {listed}. " + received("output", output)
            )
        if output not in names:
            raise InvalidInputError(f"`output` must be one of the model's output names: {listed}. "
                                    + received("output", output))
        return output, classes[names.index(output)]
    if isinstance(output, str):
        if names.count(output) != 1:
            raise InvalidInputError(
                f"`output` must be one of the model's output names ({listed}) or an index in "
                f"[0, {len(names)}). " + received("output", output)
            )
        output = names.index(output)
    if not 0 <= output < len(names):
        raise InvalidInputError(
            f"`output` must be an index in [0, {len(names)}) or one of the model's output names "
            f"({listed}). " + received("output", output)
        )
    return output, classes[output]


def select_output(outputs, output: Optional[OutputKey]):
    """The chosen output of what the model returned (``outputs[output]``); ``outputs`` itself when
    it is one tensor and ``output`` is ``None`` or ``0``.

    Raises :class:`~tfattr.errors.InvalidInputError` for several outputs without ``output``, or
    an ``output`` they do not have (a model that tells its outputs only when called).
    """
    if isinstance(outputs, dict):
        if output is None and len(outputs) == 1:
            return next(iter(outputs.values()))
        if isinstance(output, str) and output in outputs:
            return outputs[output]
        names = tuple(outputs)
    elif isinstance(outputs, (list, tuple)):
        if output is None and len(outputs) == 1:
            return outputs[0]
        if isinstance(output, int) and not isinstance(output, bool) and 0 <= output < len(outputs):
            return outputs[output]
        names = ()
        if output is None:
            raise _several_outputs_error(len(outputs), names)
        raise InvalidInputError(
            f"The model returns a list of {len(outputs)} outputs; `output` must be an index in "
            f"[0, {len(outputs)}). " + received("output", output)
        )
    else:
        if output is None or (isinstance(output, int) and output == 0):
            return outputs
        raise InvalidInputError(
            "The model returns a single output; `output` must be None (or 0). " + received("output", output)
        )
    if output is None:
        raise _several_outputs_error(len(names), names)
    raise InvalidInputError(f"`output` must be one of the model's output names: "
                            f"{', '.join(repr(n) for n in names)}. " + received("output", output))


def select_scores(outputs: tf.Tensor, target_rows: tf.Tensor, score_fn: Optional[Callable]) -> tf.Tensor:
    """The explained scalar per row: ``outputs[b, target_rows[b]]`` or ``score_fn(outputs)``.

    ``score_fn`` may be an :class:`OutputScore`: its output is picked from ``outputs`` first.
    """
    if isinstance(score_fn, OutputScore):
        outputs = select_output(outputs, score_fn.output)
        score_fn = score_fn.score_fn
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
        outputs = select_output(outputs, None)  # one entry; several raise, naming `output`
    if outputs.shape.rank != 2:
        raise InvalidInputError(
            "An integer `target` needs model outputs of shape (batch, classes); use a callable "
            "target for other outputs. " + received("outputs.shape", tuple(outputs.shape))
        )
    # a negative class asks for the row's top-1 class, picked in the same graph (no forward pass of its own)
    target_rows = tf.convert_to_tensor(target_rows)
    target_rows = tf.where(target_rows < 0, tf.argmax(outputs, axis=1, output_type=target_rows.dtype), target_rows)
    found = getattr(_recording, "classes", None)
    if found is not None:
        found.append(target_rows)
    return tf.gather(outputs, target_rows, axis=1, batch_dims=1)


_recording = threading.local()


def record_classes() -> list:
    """Start collecting, in this thread, the classes :func:`select_scores` explains (while a chunk
    function is traced); :func:`recorded_classes` ends it."""
    _recording.classes = []
    return _recording.classes


def recorded_classes(found: list, target_rows: tf.Tensor) -> tf.Tensor:
    """The classes of the rows (top-1 ones resolved) when one integer selection was recorded in
    ``found``, else ``target_rows`` as given."""
    _recording.classes = None
    return found[0] if len(found) == 1 else target_rows


def resolve_targets(target, outputs: Optional[np.ndarray], batch_size: int,
                    num_classes: Optional[int] = None, output: Optional[OutputKey] = None) -> Targets:
    """Turn the user's ``target`` into :class:`Targets` for a batch of ``batch_size`` examples.

    Args:
        target: ``None``, int, sequence of ints, or callable (see the module docstring).
        outputs: the (chosen) output of the model on the inputs, ``(batch, classes)``; used
            for ``None`` (top-1) and for range checks. May be ``None`` for callables, and for
            explicit classes when ``num_classes`` is given.
        batch_size: number of examples.
        num_classes: the model's number of classes (range check without outputs).
        output: the chosen output's key from :func:`resolve_output`, kept in the targets.
    """
    if output is not None:
        return replace(resolve_targets(target, outputs, batch_size, num_classes), output=output)
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
