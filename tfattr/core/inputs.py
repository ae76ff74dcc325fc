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

from tfattr.core.structure import InputLayout, InputsSpec, inputs_spec, packed_dtype, split_inputs
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["ModelSpec", "model_spec", "Images", "validate_images", "validate_inputs", "validate_value_range",
           "check_model_accepts"]


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
        inputs: for a model with several inputs (``model_spec(..., several=True)``), their
            :class:`~tfattr.core.structure.InputsSpec`; ``input_shape`` is then ``None`` and
            ``input_dtype`` the first float input's dtype. ``None`` for one input.
    """

    input_shape: Optional[Tuple[Optional[int], ...]]
    input_dtype: str
    num_classes: Optional[int]
    output_kind: str = "single"
    output_names: Optional[Tuple[str, ...]] = None
    output_classes: Optional[Tuple[Optional[int], ...]] = None
    inputs: Optional[InputsSpec] = None


def _dtype_name(dtype) -> str:
    return tf.as_dtype(dtype).name


def model_spec(model, several: bool = False) -> ModelSpec:
    """Read the input shape/dtype and the number of classes of a Keras model.

    A model with several inputs raises unless ``several=True`` (the gradient methods take
    them; image-only code such as the metrics does not).
    """
    inputs = getattr(model, "inputs", None)
    try:
        inputs = list(inputs) if inputs is not None else []
    except TypeError:
        inputs = []
    several_inputs = inputs_spec(model) if several and len(inputs) > 1 else None
    if several_inputs is not None:
        floats = [d for d in several_inputs.dtypes if tf.as_dtype(d).is_floating]
        base = model_spec_outputs(model)
        return ModelSpec(None, floats[0] if floats else "float32", *base, inputs=several_inputs)
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


def model_spec_outputs(model):
    """``(num_classes, output_kind, output_names, output_classes)`` of a model (see :class:`ModelSpec`)."""
    outputs = getattr(model, "outputs", None)
    try:
        outputs = list(outputs) if outputs is not None else []
    except TypeError:
        outputs = []
    num_classes = outputs[0].shape[-1] if len(outputs) == 1 and len(outputs[0].shape) == 2 else None
    return (num_classes,) + tuple(_output_structure(model, outputs))


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
        layout: for a model with several inputs, how ``array`` packs them
            (:class:`~tfattr.core.structure.InputLayout`; ``array`` is then ``(N, D)``), else ``None``.
        container: the caller's structure of several inputs, ``"list"``, ``"tuple"`` or ``"dict"``.
    """

    array: np.ndarray
    single: bool
    as_tensor: bool
    layout: Optional[InputLayout] = None
    container: Optional[str] = None

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
    if not is_float and spec.input_dtype is not None and not tf.as_dtype(spec.input_dtype).is_floating:
        raise InvalidTypeError(
            f"`{name}` are integers ({spec.input_dtype} model input, e.g. token ids): a path method cannot "
            "interpolate them. Explain them in the space of the layer that consumes them (e.g. the Embedding) "
            "with tfattr.LayerIntegratedGradients(model, layer=...). " + received(f"{name}.dtype", str(array.dtype)))
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


def _describe(inputs) -> object:
    """A short picture of a structure of inputs for error messages: its kind and shapes."""
    if isinstance(inputs, dict):
        return {k: tuple(np.shape(v)) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return [tuple(np.shape(v)) for v in inputs]
    return f"{type(inputs).__name__} of shape {tuple(np.shape(inputs))}"


def resolve_fixed(fixed_inputs, spec: InputsSpec) -> Tuple[bool, ...]:
    """The ``fixed_inputs`` option (``None``, an input's name or index, or a list of them) as one
    flag per input."""
    if fixed_inputs is None:
        return (False,) * len(spec.names)
    chosen = [fixed_inputs] if isinstance(fixed_inputs, (str, int, np.integer)) else fixed_inputs
    flags = [False] * len(spec.names)
    try:
        chosen = list(chosen)
    except TypeError:
        chosen = [chosen]
    for item in chosen:
        if isinstance(item, str) and item in spec.names:
            flags[spec.names.index(item)] = True
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool) and -len(flags) <= item < len(flags):
            flags[item] = True
        else:
            raise InvalidInputError(
                f"`fixed_inputs` must name inputs of the model (names {list(spec.names)} or indices "
                f"0..{len(spec.names) - 1}). " + received("fixed_inputs", fixed_inputs))
    return tuple(flags)


def exact_integers(array: np.ndarray, dtype: str, where: str, input_name: str) -> np.ndarray:
    """``array`` in the integer (or bool) dtype ``dtype`` of a model input, with every value exact.

    Integer arrays and float arrays whose values are all integers (ids read as floats) are
    converted; a float value with a fractional part (``ids + 0.6``, ``ids * 0.01``) is refused
    (:class:`~tfattr.errors.InvalidTypeError`), and so is a value outside ``dtype``'s range
    (:class:`~tfattr.errors.InvalidInputError`): rounding or wrapping them would explain other
    ids than the caller's.
    """
    target = np.dtype(tf.as_dtype(dtype).as_numpy_dtype)
    if array.dtype == target:
        return array
    source = tf.as_dtype(array.dtype)
    if source.is_floating:
        # significand bits: every integer below 2**bits is exact in the source dtype, and only those
        bits = {"float16": 11, "bfloat16": 8, "float32": 24}.get(source.name, 53)
        array = array.astype(np.float64)  # exact for every float dtype (bfloat16 has no 'f' kind in NumPy)
        fractional = array != np.floor(array)
        if fractional.any():
            first = tuple(int(j) for j in np.argwhere(fractional)[0])
            raise InvalidTypeError(
                f"`{where}` holds non-integral values for model input {input_name!r}, which takes {dtype} "
                f"(ids, masks): they would be rounded to other values. Pass integers (or floats with integral "
                "values). " + received(f"{where}[{first}]", float(array[first])))
        # from 2**p on (p = the float's significand bits: 53, 24, 11, 8) a float holds only some integers,
        # each also the rounding of its neighbours: 2**60 + 1 read as float64 is 2**60, an integral value
        # that is another id than the caller's
        beyond = np.abs(array) >= 2.0 ** bits
        if target.kind != "b" and beyond.any():
            first = tuple(int(j) for j in np.argwhere(beyond)[0])
            raise InvalidTypeError(
                f"`{where}` holds {source.name} values of magnitude 2**{bits} or more for model input "
                f"{input_name!r}, which takes {dtype}: {source.name} cannot tell such ids apart from their "
                "neighbours (they may be rounded already). Pass an integer array. "
                + received(f"{where}[{first}]", float(array[first])))
    if array.size:
        low, high = (0, 1) if target.kind == "b" else (int(np.iinfo(target).min), int(np.iinfo(target).max))
        smallest, largest = array.min(), array.max()
        if array.dtype.kind in "iub":
            outside = int(smallest) < low or int(largest) > high
        else:  # in floats: low and high + 1 are powers of two, exact (float(2**63 - 1) is 2**63)
            outside = smallest < float(low) or largest >= float(high + 1)
        if outside:
            bad = smallest if smallest < low else largest
            first = tuple(int(j) for j in np.argwhere(array == bad)[0])
            raise InvalidInputError(
                f"`{where}` holds values outside the range of model input {input_name!r} ({dtype}: {low}..{high}). "
                + received(f"{where}[{first}]", array[first].item()))
    return array.astype(target)


def validate_inputs(inputs, spec: ModelSpec, fixed_inputs=None, name: str = "inputs",
                    allow_all_fixed: bool = False, integers: bool = False) -> Images:
    """Check the inputs of a model with several (``spec.inputs``) and pack them.

    ``inputs`` is a list or tuple in the model's input order, or a dict keyed by the input
    names (also for a model that takes a list). Each input follows the rules of
    :func:`validate_images` (batch axis, fitting fixed axes, finite values, one batch size), with
    more: an integer input (token ids, masks) is accepted only when marked fixed
    (``fixed_inputs``); interpolating it would leave the integers, so a path through it runs
    in the space of the layer that consumes it (``LayerIntegratedGradients``). Its values must
    be exact in the model's dtype (:func:`exact_integers`): a float array with integral values
    is converted, a fractional or out-of-range value is refused.
    ``integers=True`` (perturbation methods, which replace values and never interpolate) accepts
    integer inputs that are not fixed.

    Returns an :class:`Images` whose ``array`` is the packed ``(N, D)`` batch and whose
    ``layout`` unpacks it.
    """
    several = spec.inputs
    names = several.names
    if several.kind == "single":  # one input, checked by these rules (layer methods: integer ids allowed)
        container, items = "single", [inputs]
    elif isinstance(inputs, dict):
        container = "dict"
        if set(inputs) != set(names):
            raise InvalidInputError(
                f"`{name}` must have one entry per model input, keyed {list(names)}. "
                + received(f"{name}.keys()", sorted(map(str, inputs))))
        items = [inputs[k] for k in names]
    elif isinstance(inputs, (list, tuple)):
        container = "tuple" if isinstance(inputs, tuple) else "list"
        if len(inputs) != len(names):
            raise InvalidInputError(
                f"`{name}` must be a list, tuple or dict of {len(names)} arrays, one per model input "
                f"{list(names)}. " + received(name, _describe(inputs)))
        items = list(inputs)
    else:
        raise InvalidTypeError(
            f"The model has {len(names)} inputs {list(names)}: `{name}` must be a list, tuple or dict of "
            "arrays, one per input. " + received(name, _describe(inputs)))
    fixed = resolve_fixed(fixed_inputs, several)
    as_tensor = any(isinstance(item, (tf.Tensor, tf.Variable)) for item in items)
    arrays, singles = [], []
    for i, (item, input_name, shape, dtype, is_fixed) in enumerate(
            zip(items, names, several.shapes, several.dtypes, fixed)):
        where = name if container == "single" else (f"{name}[{input_name!r}]" if container == "dict" else f"{name}[{i}]")
        if isinstance(item, (tf.Tensor, tf.Variable)):
            item = item.numpy()
        try:
            array = np.asarray(item)
        except ValueError:  # a ragged nested list
            raise InvalidInputError(f"`{where}` must be a rectangular array (a nested list of rows of one length). "
                                    + received(where, _describe(item))) from None
        try:
            kind = tf.as_dtype(array.dtype)
            is_float, is_number = kind.is_floating, kind.is_floating or kind.is_integer or kind.is_bool
        except TypeError:
            is_float = is_number = False
        if not is_number:
            raise InvalidTypeError(f"`{where}` must hold numbers. " + received(f"{where}.dtype", str(array.dtype)))
        if not is_float and not is_fixed and not integers:
            raise InvalidTypeError(
                f"`{where}` (model input {input_name!r}) is an integer input: a path method cannot interpolate "
                "integers. Mark it fixed with fixed_inputs=[...] (its baseline is then the input itself), or "
                "explain it in the space of the layer that consumes it (e.g. its Embedding) with "
                "tfattr.LayerIntegratedGradients(model, layer=...). " + received(f"{where}.dtype", str(array.dtype)))
        if is_float and tf.as_dtype(dtype).is_floating is False and not is_fixed and not integers:
            raise InvalidTypeError(
                f"Model input {input_name!r} takes {dtype}: a path method cannot interpolate it; mark it fixed "
                "(fixed_inputs) or use tfattr.LayerIntegratedGradients. " + received(f"{where}.dtype", str(array.dtype)))
        rank = len(shape)
        if array.ndim == rank:
            array, single = array[None], True
        elif array.ndim == rank + 1:
            single = False
        else:
            raise InvalidInputError(
                f"`{where}` must have rank {rank + 1} (batch first; model input {input_name!r} has shape "
                f"{(None,) + tuple(shape)}). " + received(f"{where}.shape", tuple(array.shape)))
        for axis, (want, got) in enumerate(zip(shape, array.shape[1:]), start=1):
            if want is not None and want != got:
                raise InvalidInputError(
                    f"`{where}` does not fit model input {input_name!r}: axis {axis} must be {want} "
                    f"(input shape {(None,) + tuple(shape)}). " + received(f"{where}.shape", tuple(array.shape)))
        if is_float:
            finite = np.isfinite(array.astype(np.float64, copy=False))
            if not finite.all():
                first = tuple(int(j) for j in np.argwhere(~finite)[0])
                raise InvalidInputError(
                    f"`{where}` contains {int(array.size - finite.sum())} NaN or Inf value(s), first at index "
                    f"{first}. " + received(f"{where}[{first}]", float(array[first])))
        if tf.as_dtype(dtype).is_integer or tf.as_dtype(dtype).is_bool:
            array = exact_integers(array, dtype, where, input_name)
        arrays.append(array)
        singles.append(single)
    if len(set(singles)) > 1 or len({a.shape[0] for a in arrays}) > 1:
        raise InvalidInputError(
            f"The inputs in `{name}` must share one batch size (all with a batch axis). " + received(name, _describe(inputs)))
    if arrays[0].shape[0] == 0:
        raise InvalidInputError(f"`{name}` is an empty batch; pass at least one example. " + received(name, _describe(inputs)))
    if all(fixed) and not allow_all_fixed:
        raise InvalidInputError(
            "`fixed_inputs` marks every input fixed: nothing is left to attribute. " + received("fixed_inputs", fixed_inputs))
    layout = InputLayout(several.kind, names, tuple(tuple(int(d) for d in a.shape[1:]) for a in arrays),
                         several.dtypes, fixed, packed_dtype(several.dtypes, fixed, arrays),
                         split_inputs(several.dtypes, arrays))
    return Images(array=layout.pack_host(arrays), single=singles[0], as_tensor=as_tensor, layout=layout,
                  container=container)


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
