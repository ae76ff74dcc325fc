"""The cloning machinery shared by every surgery: rewire, copy weights, scan, cache, sync.

A surgery is a *replacement rule* ``layer -> new layer or None``. :func:`clone_with`
clones a Functional or Sequential model layer by layer with
``keras.models.clone_model(..., recursive=True)`` (so layers inside nested Functional
and Sequential models are reached, and a layer shared by several call sites is cloned
once), applies the rule to every leaf layer, keeps every name, and copies the weights
variable by variable. The original model is only read: no layer of it is called again,
so not even its layers' node lists change.

The clone holds a copy of the weights. Each time a surgery hands out its cached clone
(``guided_clone(model)``, ``logits_model(model)``) the copy is refreshed from the original's
current variables (:func:`refresh`, through the same ``(clone variable, source variable)``
pairs that :class:`SyncedClone` maps), so a model trained or assigned after its first clone
gets a clone with its new weights. A clone object *held* across training is a snapshot until
the next such call; :class:`SyncedClone` runs a clone with the *current* values of the
original's variables on every call (through ``keras.StatelessScope``), which is what the
attribution methods use.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = [
    "SurgeryWarning",
    "SurgeryReport",
    "SyncedClone",
    "clone_with",
    "surgery_report",
    "synced",
    "scan_ops",
    "clear_cache",
    "refresh",
]


class SurgeryWarning(UserWarning):
    """A surgery left something alone (an unswappable ReLU, a model without a softmax head)."""


@dataclass
class SurgeryReport:
    """What a surgery did to a model.

    Attributes:
        kind: ``"guided"`` or ``"logits"``.
        changed: paths (``outer/inner/layer``) of the layers whose behaviour was changed.
        left_alone: ops that look like the thing being swapped but sit inside layers the
            surgery cannot rewrite, as ``"layer/path (OpType)"``.
        notes: human-readable remarks (e.g. "no softmax head").
    """

    kind: str
    changed: Tuple[str, ...] = ()
    left_alone: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()


@dataclass
class _Record:
    report: SurgeryReport
    # (clone variable, source variable) for every variable of every leaf layer
    pairs: List[Tuple[object, object]] = field(default_factory=list)


# a clone carries its record in this attribute (set with object.__setattr__, so Keras does not
# track the variables in it); a weak-key table would never let go: the record's variables lead
# back to the clone
_RECORD_ATTRIBUTE = "_tfattr_surgery_record"
# kind -> WeakKeyDictionary(source model -> clone)
_CACHES: Dict[str, weakref.WeakKeyDictionary] = {}


def _cache(kind: str) -> weakref.WeakKeyDictionary:
    return _CACHES.setdefault(kind, weakref.WeakKeyDictionary())


def model_wiring(model) -> tuple:
    """What a cached clone of ``model`` was built from: its leaf layers (path, class, identity) and
    its variables (identity). A Sequential model's ``add``/``pop`` (or a rebuilt nested model) changes
    it, and then the cached clone, built from the former layers, must not be handed out again.
    The source variables stay alive in the clone's record, so their ids are not reused meanwhile."""
    try:
        layers = tuple((path, type(layer).__name__, id(layer)) for path, layer in leaf_layers(model))
        variables = tuple(id(v) for v in getattr(model, "variables", ()))
    except Exception:  # noqa: BLE001 - a model we cannot walk: no reuse
        return (object(),)
    return layers, variables


def cached_clone(kind: str, model) -> Optional[keras.Model]:
    """The clone of ``model`` stored under ``kind``, if ``model``'s layers are still the ones it was
    built from (else ``None``: the caller rebuilds)."""
    try:
        entry = _cache(kind).get(model)
    except TypeError:  # not weak-referenceable
        return None
    if entry is None:
        return None
    clone, wiring = entry
    return clone if wiring == model_wiring(model) else None


def store_clone(kind: str, model, clone) -> None:
    try:
        _cache(kind)[model] = (clone, model_wiring(model))
    except TypeError:
        pass


def clear_cache(model=None) -> None:
    """Forget cached clones (of ``model`` only, or of every model when ``None``).

    Example:
        >>> tfattr.surgery.clear_cache(model)   # the next guided_clone(model) rebuilds
    """
    for cache in _CACHES.values():
        if model is None:
            cache.clear()
        else:
            try:
                cache.pop(model, None)
            except TypeError:
                pass


def surgery_report(clone) -> Optional[SurgeryReport]:
    """The :class:`SurgeryReport` of a clone made by :mod:`tfattr.surgery` (``None`` otherwise).

    Example:
        >>> clone = guided_clone(model)
        >>> surgery_report(clone).changed[:3]
        ('block1_conv1', 'block1_conv2', 'block1_pool')
    """
    record = _record(clone)
    return None if record is None else record.report


def _record(clone) -> Optional[_Record]:
    record = getattr(clone, "__dict__", {}).get(_RECORD_ATTRIBUTE)
    return record if isinstance(record, _Record) else None


def check_cloneable(model, what: str) -> None:
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise InvalidTypeError(
            f"{what} needs a Keras Functional or Sequential model (a subclassed model's layer "
            "graph is not known, so its layers cannot be swapped); rebuild it with the "
            "functional API. " + received("type(model)", type(model).__name__)
        )
    if not model.built or not getattr(model, "inputs", None):
        raise InvalidInputError(
            f"{what} needs a built model with known inputs; call the model once or give it an "
            "`Input`. " + received("model.built", model.built)
        )


def _is_functional(model) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def _is_nested_model(layer) -> bool:
    return isinstance(layer, keras.Sequential) or _is_functional(layer)


def _members(model):
    """The operations of a Functional model (layers and ``keras.ops`` nodes) or a Sequential's layers."""
    return list(model.operations) if _is_functional(model) else list(model.layers)


def leaf_layers(model, prefix: str = "") -> List[Tuple[str, object]]:
    """``(path, operation)`` of every layer or ``keras.ops`` node, descending into nested models."""
    out = []
    for layer in _members(model):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = prefix + layer.name
        if _is_nested_model(layer):
            out.extend(leaf_layers(layer, path + "/"))
        else:
            out.append((path, layer))
    return out


def _copy_layer(layer):
    if type(layer) is keras.layers.Lambda:
        # in memory, so reuse the function object: a Python lambda does not survive
        # get_config/from_config in Keras' safe mode, and closures would be lost
        return keras.layers.Lambda(layer.function, output_shape=layer._output_shape, mask=layer.mask,
                                   arguments=dict(layer.arguments), name=layer.name,
                                   dtype=layer.dtype_policy, trainable=layer.trainable)
    return layer.__class__.from_config(layer.get_config())


def clone_with(model, replace: Callable[[keras.layers.Layer], Optional[keras.layers.Layer]],
               what: str) -> Tuple[keras.Model, List[Tuple[object, object, bool]]]:
    """Clone ``model`` (recursively), replacing each leaf for which ``replace`` returns something.

    ``replace`` sees every layer and every ``keras.ops`` node of a Functional graph (except
    inputs and nested models, which are recursed into) and returns ``None`` (copy it) or what
    to call instead (a layer, or a callable on the symbolic inputs). Names are kept; weights
    are copied afterwards by :func:`copy_weights`.

    Returns:
        ``(clone, records)`` with one ``(source, replacement, replaced)`` per leaf.
    """
    check_cloneable(model, what)
    pairs: List[Tuple[object, object, bool]] = []

    def clone_function(layer):
        try:
            new = replace(layer)
            replaced = new is not None
            if new is None:
                new = _copy_layer(layer)
        except Exception as error:  # noqa: BLE001 - re-raised with the layer's name
            raise InvalidTypeError(
                f"{what} could not clone layer {layer.name!r} ({type(layer).__name__}): "
                f"{' '.join(str(error).split())[:400]} "
                "Custom layers need a `get_config()` that `from_config()` can rebuild. "
                + received("layer", layer.name)
            ) from error
        pairs.append((layer, new, replaced))
        return new

    if _is_functional(model):
        inputs = keras.tree.map_structure(
            lambda t: keras.Input(batch_shape=t.shape, dtype=t.dtype,
                                  name=t._keras_history.operation.name),
            model.input,
        )
        clone = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone_function,
                                         recursive=True)
    else:
        clone = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    return clone, pairs


def copy_weights(pairs) -> List[Tuple[object, object]]:
    """Assign every source variable to its clone; return ``(clone var, source var)`` pairs."""
    variable_pairs = []
    for source, target, _ in pairs:
        if not isinstance(source, keras.layers.Layer) or not isinstance(target, keras.layers.Layer):
            continue  # keras.ops nodes and replacement callables hold no weights
        src, dst = list(source.weights), list(target.weights)
        if len(src) != len(dst) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(src, dst)):
            raise InvalidInputError(
                f"The clone of layer {source.name!r} has other weights than the original "
                f"({[tuple(v.shape) for v in dst]} vs {[tuple(v.shape) for v in src]}). "
                + received("layer", source.name)
            )
        for a, b in zip(src, dst):
            b.assign(a.value)
            variable_pairs.append((b, a))
    return variable_pairs


def register(clone, report: SurgeryReport, variable_pairs) -> None:
    object.__setattr__(clone, _RECORD_ATTRIBUTE, _Record(report, list(variable_pairs)))


def refresh(clone) -> None:
    """Copy the source model's current weights into ``clone`` (a clone made by a surgery).

    Uses the clone's recorded ``(clone variable, source variable)`` pairs, the ones
    :class:`SyncedClone` maps; a clone without a record is left alone.

    Example:
        >>> model.fit(...); refresh(clone)   # clone(x) now uses the trained weights
    """
    record = _record(clone)
    if record is None:
        return
    for target, source in record.pairs:
        target.assign(source.value)


# -- scanning a traced graph for ops the surgery missed --------------------------------------

def scan_ops(model, op_types: Sequence[str], allowed_scope: str) -> Tuple[str, ...]:
    """Ops of ``op_types`` in ``model``'s inference graph outside name scopes ``allowed_scope``.

    Traces ``model(inputs, training=False)`` once (batch axis free) and walks the graph and
    every function it calls (``tf.function`` inside a layer, ``while`` bodies of RNNs). An op
    is reported as ``"outer/inner/layer (Relu)"``: the Keras layer path it was created in.
    """
    specs = input_specs(model)
    fn = tf.function(lambda inputs: model(inputs, training=False), autograph=False)
    graph_def = fn.get_concrete_function(specs).graph.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}
    names = {layer.name for _, layer in leaf_layers(model)} | _model_names(model)
    wanted = set(op_types)
    found: List[str] = []

    def visit(nodes, prefix: str, depth: int) -> None:
        for node in nodes:
            full = prefix + node.name
            if node.op in wanted and not _inside(full, allowed_scope):
                found.append(f"{_layer_path(full, names)} ({node.op})")
            if depth >= 8:
                continue
            for attr in node.attr.values():
                kind = attr.WhichOneof("value")
                called = [attr.func.name] if kind == "func" else (
                    [f.name for f in attr.list.func] if kind == "list" else [])
                for name in called:
                    if name in library:
                        visit(library[name].node_def, full + "/", depth + 1)

    visit(graph_def.node, "", 0)
    return tuple(dict.fromkeys(found))  # unique, in graph order


def input_specs(model):
    """``tf.TensorSpec`` structure of a model's inputs (as its ``call`` expects them)."""
    def spec(t):
        return tf.TensorSpec(t.shape, t.dtype)

    if _is_functional(model):
        return keras.tree.map_structure(spec, model.input)
    specs = [spec(t) for t in model.inputs]
    return specs[0] if len(specs) == 1 else specs


def _model_names(model) -> set:
    out = {model.name}
    for layer in _members(model):
        if _is_nested_model(layer):
            out |= _model_names(layer)
    return out


def _inside(op_name: str, scope: str) -> bool:
    return any(part == scope or re.fullmatch(re.escape(scope) + r"_\d+", part) for part in op_name.split("/"))


def _layer_path(op_name: str, names: set) -> str:
    """``outer_1/seq_1/d1_1/Relu`` -> ``outer/seq/d1`` (undo TF's ``_N`` uniquifying)."""
    parts = op_name.split("/")[:-1]
    clean = []
    for part in parts:
        if part not in names:
            stripped = re.sub(r"_\d+$", "", part)
            part = stripped if stripped in names else part
        clean.append(part)
    return "/".join(clean) or op_name


# -- running a clone with its source's current weights -----------------------------------------

class SyncedClone:
    """Call a surgery clone with the *current* weights of the model it was cloned from.

    ``SyncedClone(clone)(inputs, training=False)`` equals ``clone(inputs)`` right after
    cloning, and keeps following the original model when that one is trained or its weights
    are set afterwards: each call maps every clone variable to its source variable inside a
    ``keras.StatelessScope``. Inside ``tf.function`` the source variables are read at run
    time, so a traced function never goes stale. The clone's own variables are not used.

    Example:
        >>> live = synced(guided_clone(model))
        >>> model.fit(...)                          # live(x) follows the new weights
    """

    def __init__(self, clone):
        record = _record(clone)
        if record is None:
            raise InvalidTypeError(
                "`synced` takes a clone made by tfattr.surgery (guided_clone, logits_model). "
                + received("type(clone)", type(clone).__name__)
            )
        self.clone = clone
        self._pairs = record.pairs

    @property
    def report(self) -> SurgeryReport:
        return _record(self.clone).report

    @property
    def variable_pairs(self):
        """``(clone variable, source variable)`` pairs: the mapping each call runs the clone with."""
        return list(self._pairs)

    def __call__(self, inputs, training: bool = False, **kwargs):
        if not self._pairs:
            return self.clone(inputs, training=training, **kwargs)
        with keras.StatelessScope(state_mapping=self._pairs):
            return self.clone(inputs, training=training, **kwargs)


def synced(clone) -> SyncedClone:
    """A callable running ``clone`` with its source model's current weights (see :class:`SyncedClone`).

    Example:
        >>> live = synced(logits_model(model))
        >>> logits = live(images)
    """
    return SyncedClone(clone)
