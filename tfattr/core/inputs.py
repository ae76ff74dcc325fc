"""Validate and normalise the images handed to a method, once, at the public boundary.

The checks follow what a user gets wrong most often: integer images straight
from a decoder, a single image without its batch axis, the wrong number of
channels, NaN/Inf from a broken preprocessing step, an empty batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["ModelSpec", "model_spec", "Images", "validate_images", "validate_value_range", "check_model_accepts"]


@dataclass(frozen=True)
class ModelSpec:
    """What tfattr needs to know about a model's input and output.

    Attributes:
        input_shape: input shape without the batch axis; ``None`` entries are free.
            ``None`` as a whole when the model has not been built (a subclassed model).
        input_dtype: dtype the model's input expects (``"float32"``, ...).
        num_classes: size of the last output axis for rank-2 outputs, else ``None``
            (also for a model with several outputs: see ``output_classes``).
        output_kind: ``"single"``; ``"list"`` or ``"dict"`` for a model with several outputs
            (a list/tuple or a dict of tensors); ``"unknown"`` for a model that tells its
            outputs only when called (subclassed).
        output_names: the names of several outputs, in order: a dict's keys, or the output
            layers' names of a list; ``None`` for one output.
        output_classes: per output in ``output_names`` order, the size of its last axis when
            it is rank 2, else ``None``.
    """

    input_shape: Optional[Tuple[Optional[int], ...]]
    input_dtype: str
    num_classes: Optional[int]
    output_kind: str = "single"
    output_names: Optional[Tuple[str, ...]] = None
    output_classes: Optional[Tuple[Optional[int], ...]] = None


def _dtype_name(dtype) -> str:
    return tf.as_dtype(dtype).name


def model_spec(model) -> ModelSpec:
    """Read the input shape/dtype and the number of classes of a Keras model."""
    inputs = getattr(model, "inputs", None)
    try:
        inputs = list(inputs) if inputs is not None else []
    except TypeError:
        inputs = []
    if len(inputs) > 1:
        raise InvalidTypeError(
            "tfattr explains models with a single image input; this model has "
            f"{len(inputs)} inputs. Wrap it in a model that takes one tensor. "
            + received("model.inputs", [tuple(t.shape) for t in inputs])
        )
    if inputs:
        shape = tuple(inputs[0].shape)[1:]
        dtype = _dtype_name(inputs[0].dtype)
    else:
        shape = None
        policy = getattr(model, "dtype_policy", None)
        dtype = getattr(policy, "variable_dtype", None) or "float32"
    num_classes = None
    outputs = getattr(model, "outputs", None)
    try:
        outputs = list(outputs) if outputs is not None else []
    except TypeError:
        outputs = []
    if len(outputs) == 1 and len(outputs[0].shape) == 2:
        num_classes = outputs[0].shape[-1]
    kind, names, classes = _output_structure(model, outputs)
    return ModelSpec(shape, dtype, num_classes, kind, names, classes)


def _classes(tensor) -> Optional[int]:
    shape = getattr(tensor, "shape", None)
    return None if shape is None or len(shape) != 2 else shape[-1]


def _output_structure(model, outputs):
    """``(kind, names, classes)`` of a model's outputs, read from its symbolic outputs."""
    if not outputs:
        return "unknown", None, None
    try:
        structure = model.output
    except (AttributeError, ValueError, RuntimeError):
        return ("single", None, None) if len(outputs) == 1 else ("unknown", None, None)
    if isinstance(structure, dict):
        names = tuple(structure)
        if not all(isinstance(name, str) and hasattr(structure[name], "shape") for name in names):
            return "unknown", None, None
        return "dict", names, tuple(_classes(structure[name]) for name in names)
    if isinstance(structure, (list, tuple)) and len(structure) > 1:
        if not all(hasattr(t, "shape") for t in structure):
            return "unknown", None, None
        names = tuple(getattr(model, "output_names", None) or ())
        if len(names) != len(structure):
            names = tuple(f"output_{i}" for i in range(len(structure)))
        return "list", names, tuple(_classes(t) for t in structure)
    return "single", None, None


@dataclass
class Images:
    """A validated batch.

    Attributes:
        array: the batch as a NumPy array in its original floating dtype, rank = model rank.
        single: ``True`` when the caller passed one example without a batch axis; results
            are then returned without the batch axis too.
        as_tensor: ``True`` when the caller passed a ``tf.Tensor``; results come back as tensors.
    """

    array: np.ndarray
    single: bool
    as_tensor: bool

    @property
    def batch_size(self) -> int:
        return int(self.array.shape[0])


def validate_images(inputs, spec: ModelSpec, name: str = "inputs") -> Images:
    """Check a batch against a model and return it as an :class:`Images`.

    Rules (each violation raises a message naming ``name``):

    * rank: the model's input rank plus a batch axis (``(N, H, W, C)`` for image models);
      one example without the batch axis (``(H, W, C)``) is accepted and flagged ``single``;
    * dtype: floating point (float16/bfloat16/float32/float64). Integer images raise a
      ``TypeError`` suggesting a cast such as ``images.astype("float32") / 255``;
    * values: all finite (NaN/Inf raise ``ValueError``);
    * shape: every fixed axis of the model's input shape (channels above all) must match;
    * batch: at least one example.
    """
    as_tensor = isinstance(inputs, (tf.Tensor, tf.Variable))
    if as_tensor:
        array = inputs.numpy()
    elif isinstance(inputs, np.ndarray):
        array = inputs
    elif isinstance(inputs, (list, tuple)):
        array = np.asarray(inputs)
    else:
        raise InvalidTypeError(
            f"`{name}` must be a NumPy array or a tf.Tensor of images. "
            + received(f"type({name})", type(inputs).__name__)
        )
    try:
        is_float = tf.as_dtype(array.dtype).is_floating
    except TypeError:
        is_float = False
    if not is_float:
        raise InvalidTypeError(
            f"`{name}` must have a floating-point dtype (float16, bfloat16, float32 or float64); "
            f"cast integer images first, e.g. `{name}.astype('float32') / 255.0` for a model "
            f"trained on [0, 1]. " + received(f"{name}.dtype", str(array.dtype))
        )
    model_rank = len(spec.input_shape) if spec.input_shape is not None else 3
    single = False
    if array.ndim == model_rank:
        array = array[None]
        single = True
    elif array.ndim != model_rank + 1:
        expected = (
            "(batch, height, width, channels) or one (height, width, channels) image"
            if model_rank == 3
            else f"rank {model_rank + 1} (batch first) or rank {model_rank} (one example)"
        )
        raise InvalidInputError(
            f"`{name}` must be {expected}. " + received(f"{name}.shape", tuple(array.shape))
        )
    if array.shape[0] == 0:
        raise InvalidInputError(
            f"`{name}` is an empty batch; pass at least one example. "
            + received(f"{name}.shape", tuple(array.shape))
        )
    if spec.input_shape is not None:
        for axis, (want, got) in enumerate(zip(spec.input_shape, array.shape[1:]), start=1):
            if want is not None and want != got:
                what = "channels" if axis == model_rank else f"axis {axis}"
                raise InvalidInputError(
                    f"`{name}` does not fit the model: {what} must be {want} "
                    f"(model input shape {(None,) + tuple(spec.input_shape)}). "
                    + received(f"{name}.shape", tuple(array.shape))
                )
    finite = np.isfinite(array.astype(np.float64, copy=False))
    if not finite.all():
        bad = int(array.size - finite.sum())
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise InvalidInputError(
            f"`{name}` contains {bad} NaN or Inf value(s), first at index {first}; "
            "attributions of non-finite inputs are meaningless. "
            + received(f"{name}[{first}]", float(array[first]))
        )
    return Images(array=array, single=single, as_tensor=as_tensor)


def _built_input_shape(model) -> Optional[Tuple]:
    """The input shape a model without symbolic inputs was built on (Keras records it), batch free."""
    shapes = getattr(model, "_build_shapes_dict", None)
    if not isinstance(shapes, dict) or len(shapes) != 1:
        return None
    shape = next(iter(shapes.values()))
    if not isinstance(shape, (list, tuple)) or not shape:
        return None
    return (None,) + tuple(shape[1:])


def _first_message(error: BaseException) -> str:
    """The substance of a Keras error: the emphasised part of "Exception encountered when calling
    ...", else the first non-empty line."""
    text = str(error)
    if "\x1b[1m" in text:
        text = text.split("\x1b[1m", 1)[1].split("\x1b[0m", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def check_model_accepts(model, inputs, name: str = "inputs") -> ModelSpec:
    """Run ``model`` once on the first example of ``inputs`` (a validated batch in the model's
    dtype) and return its :func:`model_spec` afterwards.

    For models that cannot tell their input shape before a call (subclassed models, a
    Sequential without an ``Input``): a misfit (wrong channels, rank or size) is reported as an
    :class:`~tfattr.errors.InvalidInputError` naming ``name`` and the shape the model was built
    on, not as a traceback from inside the model. An unbuilt Sequential is built on
    ``(None,) + inputs.shape[1:]`` first, so it keeps a free batch axis.
    """
    sample = inputs[:1]
    try:
        if not getattr(model, "built", True) and hasattr(model, "build") and type(model).__name__ == "Sequential":
            model.build((None,) + tuple(sample.shape[1:]))
        model(sample, training=False)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
        if isinstance(error, (InvalidInputError, InvalidTypeError)):
            raise
        built = _built_input_shape(model)
        expected = f" (it was built on inputs of shape {built})" if built is not None else ""
        raise InvalidInputError(
            f"`{name}` does not fit the model {getattr(model, 'name', '')!r}{expected}: the model fails on "
            f"them with {type(error).__name__}: {_first_message(error)}. "
            + received(f"{name}.shape", tuple(inputs.shape))
        ) from error
    return model_spec(model)


def validate_value_range(value_range, name: str = "value_range") -> Tuple[float, float]:
    """Check a ``(low, high)`` pair of finite floats with ``low < high``."""
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InvalidTypeError(
            f"`{name}` must be a pair (low, high) of numbers, e.g. (0.0, 1.0) or (0.0, 255.0). "
            + received(name, value_range)
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise InvalidInputError(
            f"`{name}` must satisfy low < high with finite values. " + received(name, value_range)
        )
    return low, high
