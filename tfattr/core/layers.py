"""Find a layer by name, index, nested path or object, with helpful errors."""

from __future__ import annotations

import contextlib
import difflib
import threading
from typing import Iterator, List, Tuple, Union

from tfattr.errors import InvalidInputError, InvalidTypeError, received

#: held while any tfattr code replaces a layer's ``call`` (taps, Grad-CAM's layer gradients, layer
#: attributions' injected values) and runs the model: two threads patching the same layer would
#: wrap and remove each other's replacement. Re-entrant; patched calls run under it only while a
#: function is traced or a model runs eagerly, not in compiled runs.
LAYER_CALL_LOCK = threading.RLock()

__all__ = ["patched_call", "find_layer", "layer_paths", "last_layer_with_rank", "layer_output_rank",
           "called_layer_ranks"]


@contextlib.contextmanager
def patched_call(layer, replacement):
    """Replace ``layer.call`` by ``replacement(original, *args, **kwargs)`` for the block, **for
    this thread only**, under :data:`LAYER_CALL_LOCK`.

    A call of the layer from another thread while the block runs — a plain ``model(x)``, or
    IG tracing its gradient function on the same model — runs the original ``call``: it is not
    counted, captured or fed an injected value, so a layer method is not told its layer "ran 2
    times" by a model call it did not make, and the other thread gets the model's true output.
    Patches nest (the innermost runs first) and the previous ``call`` is restored at the end.
    """
    owner = threading.get_ident()
    with LAYER_CALL_LOCK:
        had_own = "call" in vars(layer)
        previous = vars(layer).get("call")
        original = layer.call

        def call(*args, **kwargs):
            if threading.get_ident() != owner:
                return original(*args, **kwargs)
            return replacement(original, *args, **kwargs)

        layer.call = call
        try:
            yield
        finally:
            if had_own:
                layer.call = previous
            else:
                del layer.call


def _children(layer):
    return list(getattr(layer, "layers", None) or [])


def layer_paths(model, prefix: str = "") -> Iterator[Tuple[str, object]]:
    """Every layer of ``model`` in order, nested models included, as ``("outer/inner", layer)``."""
    for layer in _children(model):
        path = f"{prefix}{layer.name}"
        yield path, layer
        if _children(layer):
            yield from layer_paths(layer, prefix=path + "/")


def _rank(layer) -> int:
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return -1
    if isinstance(output, (list, tuple)):
        return -1
    return len(output.shape)


def _output_rank(output) -> int:
    if isinstance(output, (list, tuple)):  # a layer gradient differentiates the first output
        output = output[0] if output else None
    shape = getattr(output, "shape", None)
    return -1 if shape is None else len(shape)


def called_layer_ranks(model, sample) -> List[Tuple[object, int]]:
    """Run ``model`` once on ``sample`` and list the leaf layers that ran, in call order, with
    the rank of each output (of its first output for a list).

    For models whose layers have no symbolic outputs (subclassed models, a Sequential built by
    its first call): the layers' ``call`` is tapped for that one call, as
    :class:`~tfattr.core.gradients.LayerGradients` does, and left untouched afterwards.
    """
    leaves, seen = [], set()
    for _, layer in layer_paths(model):
        if not _children(layer) and id(layer) not in seen:
            seen.add(id(layer))
            leaves.append(layer)
    ran: List[Tuple[object, int]] = []

    def tap(layer):
        def tapped(original, *args, **kwargs):
            out = original(*args, **kwargs)
            ran.append((layer, _output_rank(out)))
            return out

        return tapped

    with LAYER_CALL_LOCK, contextlib.ExitStack() as stack:
        for layer in leaves:
            stack.enter_context(patched_call(layer, tap(layer)))
        model(sample, training=False)
    return ran


def layer_output_rank(model, layer, sample=None) -> int:
    """The rank of ``layer``'s output (batch axis included): from its symbolic output, else, with
    ``sample``, from one call of the model (:func:`called_layer_ranks`); ``-1`` when unknown
    (no symbolic output and no sample, or the layer did not run)."""
    rank = _rank(layer)
    if rank == -1 and sample is not None:
        for candidate, called in called_layer_ranks(model, sample):
            if candidate is layer:
                rank = called
    return rank


def last_layer_with_rank(model, rank: int = 4, sample=None):
    """The last layer (in graph order, nested models included) whose output has ``rank`` axes.

    Nested models themselves are skipped in favour of their inner layers. When no layer has a
    symbolic output of that rank (a subclassed model, an unbuilt Sequential) and ``sample``
    (one input batch) is given, the model runs once on it and the last leaf layer *called* with
    an output of that rank is taken (:func:`called_layer_ranks`).
    """
    found = None
    for _, layer in layer_paths(model):
        if _children(layer):
            continue
        if _rank(layer) == rank:
            found = layer
    if found is None and sample is not None:
        for layer, called in called_layer_ranks(model, sample):
            if called == rank:
                found = layer
    if found is None:
        raise InvalidInputError(
            f"The model has no layer with a {rank}-D output (batch, height, width, channels); pass "
            "`layer=` explicitly. " + received("model.name", getattr(model, "name", None))
        )
    return found


def find_layer(model, layer: Union[str, int, object]):
    """Resolve ``layer`` on ``model``.

    Args:
        layer: a layer name (searched at the top level, then uniquely inside nested models),
            a path ``"backbone/block5_conv4"`` into nested models, an index into
            ``model.layers``, or a ``keras.layers.Layer`` of the model.

    Raises:
        ValueError listing the closest layer names when nothing matches.
    """
    paths: List[Tuple[str, object]] = list(layer_paths(model))
    if isinstance(layer, bool):
        raise InvalidTypeError("`layer` must be a name, a path, an index or a layer. " + received("layer", layer))
    if isinstance(layer, int):
        layers = _children(model)
        if not -len(layers) <= layer < len(layers):
            raise InvalidInputError(f"`layer` index out of range for {len(layers)} layers. " + received("layer", layer))
        return layers[layer]
    if isinstance(layer, str):
        for path, candidate in paths:
            if path == layer:
                return candidate
        by_name = [candidate for path, candidate in paths if path.rsplit("/", 1)[-1] == layer]
        if len(by_name) == 1:
            return by_name[0]
        names = [path for path, _ in paths]
        if len(by_name) > 1:
            raise InvalidInputError(
                f"Several nested layers are called {layer!r}; give the full path, one of "
                f"{[p for p in names if p.rsplit('/', 1)[-1] == layer]}. " + received("layer", layer)
            )
        close = difflib.get_close_matches(layer, names + [n.rsplit("/", 1)[-1] for n in names], n=5, cutoff=0.5)
        raise InvalidInputError(
            f"No layer {layer!r} in model {getattr(model, 'name', '')!r}; closest names: {close or names[-5:]}. "
            + received("layer", layer)
        )
    for _, candidate in paths:
        if candidate is layer:
            return candidate
    raise InvalidTypeError(
        "`layer` must be a name, a path, an index or a layer of this model. "
        + received("layer", getattr(layer, "name", layer))
    )
