"""Explanations on Apache Beam: a ``ModelHandler`` for Beam's ``RunInference`` and dataset transforms.

The implementation of :mod:`tfattr.beam` (beside the local runner it shares its settings, seeds and
store with). Imported only by ``import tfattr.beam`` (Apache Beam is the optional ``[beam]`` extra:
``pip install "tfattr[beam]"``); ``import tfattr`` never loads it.

* :class:`ExplanationModelHandler`: Beam's own ``RunInference`` with a tfattr method in place of a
  prediction. Elements are ``image`` (an ``(H, W, C)`` array) or ``(image, target)``; each gives a
  ``PredictionResult(example, inference)`` whose inference is the explanation row
  ``{"attributions", "target", "score", "delta", "baseline_score"}``. Keyed elements go through Beam's
  ``KeyedModelHandler(ExplanationModelHandler(...))``::

      import apache_beam as beam
      from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
      from tfattr.beam import ExplanationModelHandler

      handler = ExplanationModelHandler("model.keras", method="ig", method_options={"steps": 32})
      with beam.Pipeline() as p:
          rows = (p | beam.Create([("a", image_a), ("b", image_b)])
                    | RunInference(KeyedModelHandler(handler)))

* :class:`ExplainImages`: image files (a folder, or a glob pattern such as ``gs://bucket/val/*.png``)
  → the same store as :func:`tfattr.explain_dataset` (``out/``, read back by
  :func:`tfattr.open_explanations`), written chunk by chunk by the workers; finished chunks are
  skipped on a re-run (resume), and a local run's store can be finished on Beam and vice versa::

      from apache_beam.options.pipeline_options import PipelineOptions
      from tfattr.beam import ExplainImages

      options = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_processing")
      with beam.Pipeline(options=options) as p:
          p | ExplainImages("photos/", "maps/", "ig", "model.keras", {"steps": 32}, value_range=(0, 1))

* :class:`EvaluateImages`: the stores and the table of :func:`tfattr.evaluate_dataset` on Beam.

Command line: ``tfattr explain-dataset ... --runner DirectRunner|DataflowRunner|FlinkRunner|SparkRunner``
followed by Beam's pipeline options.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfattr.errors import InvalidInputError, InvalidTypeError, MissingDependencyError, received

try:
    import apache_beam as beam
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult
except ImportError as _error:  # pragma: no cover - the extra is not installed
    raise MissingDependencyError(
        "tfattr.beam needs Apache Beam: pip install 'tfattr[beam]' (apache-beam>=2.60). "
        + received("import", "apache_beam")) from _error

__all__ = ["ExplanationModelHandler", "ExplainImages", "EvaluateImages", "load_model", "match_files", "batch_seed",
           "ON_ERROR"]

#: what a failing element does: ``"raise"`` (the pipeline fails with an error naming the element) or
#: ``"skip"`` (its row says skipped, with the error; the other elements go on)
ON_ERROR = ("raise", "skip")

#: the entries whose feature mask is built from each image (superpixels): rebuilt for every batch
_PER_IMAGE_MASKS = ("feature-ablation", "kernelshap", "shapley-sampling")
#: the entries whose maps depend on which images share an ``attribute`` call (a permutation swaps features
#: between them): only whole store chunks (:class:`ExplainImages`), never Beam's own batches
_BATCH_DEPENDENT = ("feature-permutation",)


# -- the model ------------------------------------------------------------------------------------

def load_model(model_uri: str, custom_objects: Optional[Mapping[str, Any]] = None, logits: bool = False):
    """The Keras model at ``model_uri``: a ``.keras`` file, or a TensorFlow SavedModel folder
    (``model.export(path)``; wrapped in a Keras model calling its ``serving_default`` signature,
    which must take one image tensor and return one tensor).

    Args:
        model_uri: a local path or any path ``keras.models.load_model`` reads (``gs://`` with
            TensorFlow's file systems).
        custom_objects: passed to ``keras.models.load_model`` (custom layers).
        logits: strip a final softmax (:func:`tfattr.surgery.logits_model`), as ``tfattr explain``
            does, so that logits are explained.
    """
    import keras
    import tensorflow as tf

    if not isinstance(model_uri, (str, os.PathLike)):
        raise InvalidTypeError("`model_uri` must be a path to a .keras file or a SavedModel folder. "
                               + received("model_uri", model_uri))
    path = os.fspath(model_uri)
    if tf.io.gfile.isdir(path) and tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        model = _saved_model(path)
    elif not tf.io.gfile.exists(path):
        raise InvalidInputError(f"`model_uri`: no model at {path!r}. " + received("model_uri", path))
    else:
        try:
            model = keras.models.load_model(path, custom_objects=dict(custom_objects or {}), compile=False)
        except Exception as error:  # any failure to read the user's file: say which file and why
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            raise InvalidInputError(f"`model_uri`: cannot load {path!r} as a Keras model ({type(error).__name__}: "
                                    f"{lines[0] if lines else ''}). " + received("model_uri", path)) from None
    if logits:
        from tfattr.surgery import logits_model

        model = logits_model(model, missing="ignore")
    return model


def _saved_model(path: str):
    """A SavedModel folder as a Keras model (its ``serving_default`` signature in a ``TFSMLayer``)."""
    import keras
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures.get("serving_default")
    if signature is None:
        raise InvalidInputError(f"`model_uri`: the SavedModel {path!r} has no serving_default signature. "
                                + received("model_uri", path))
    specs = list(signature.structured_input_signature[1].values())
    outputs = list(signature.structured_outputs)
    if len(specs) != 1 or len(outputs) != 1:
        raise InvalidInputError(f"`model_uri`: the SavedModel {path!r} takes {len(specs)} input(s) and gives "
                                f"{len(outputs)} output(s); tfattr explains one image input and one output. "
                                + received("model_uri", path))
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    inputs = keras.Input(shape=tuple(specs[0].shape)[1:], dtype=specs[0].dtype.name)
    return keras.Model(inputs, layer(inputs)[outputs[0]])


# -- seeds ----------------------------------------------------------------------------------------

def batch_seed(seed: int, block: int) -> int:
    """The seed a random method uses for the block of items ``[block · n, (block + 1) · n)`` of a
    dataset: ``SeedSequence([seed, block])``'s first 64-bit word shifted below 2⁵³ (the range of a
    method's ``seed``), the local runner's seed of its batch ``block`` (:mod:`tfattr.streaming.explain`),
    whatever order or worker explains the block."""
    try:
        from tfattr.streaming.explain import batch_seed as local
    except ImportError:
        state = np.random.SeedSequence([int(seed), int(block)]).generate_state(1, np.uint64)[0]
        return int(state >> np.uint64(11))
    return local(seed, block)


# -- elements -------------------------------------------------------------------------------------

def _parse(element, position: int) -> Tuple[np.ndarray, Optional[int], Optional[int], Optional[str]]:
    """``(image, target, index, id)`` of an element: ``image``, ``(image, target)`` or a mapping with
    ``image`` and optional ``target``, ``index`` (the item's place in the dataset) and ``id``. The image
    is ``uint8`` (scaled to the value range later) or a float array; the target an integer class ≥ 0."""
    index = item_id = None
    if isinstance(element, Mapping):
        if "image" not in element:
            raise InvalidInputError(f"element {position}: a mapping element needs an 'image' entry. "
                                    + received("element keys", sorted(map(str, element))))
        image, target = element["image"], element.get("target")
        index, item_id = element.get("index"), element.get("id")
        if index is not None and (isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer))
                                  or index < 0):
            raise InvalidInputError(f"element {position}: 'index' is the item's place in the dataset, an integer ≥ 0. "
                                    + received("index", index))
    elif isinstance(element, tuple) and len(element) == 2 and np.ndim(element[1]) == 0:
        image, target = element
        if isinstance(image, (str, bytes)):  # ("key", image) given to the handler itself
            raise InvalidInputError(f"element {position}: a (key, image) pair; keyed elements go through "
                                    "KeyedModelHandler(ExplanationModelHandler(...)), and (image, target) pairs "
                                    "hold an image first. " + received("element[0]", image))
    elif isinstance(element, tuple) and len(element) == 2 and isinstance(element[0], (str, bytes)):
        raise InvalidInputError(f"element {position}: a (key, image) pair; keyed elements go through "
                                "KeyedModelHandler(ExplanationModelHandler(...)). " + received("key", element[0]))
    else:
        image, target = element, None
    name = f"element {str(item_id)!r}" if item_id is not None else f"element {position}"
    try:
        image = np.asarray(image)
    except (ValueError, TypeError) as error:  # a ragged nesting of lists
        raise InvalidInputError(f"{name}: an image is an (H, W, C) array ({error}). "
                                + received("type(image)", type(image).__name__)) from None
    if image.ndim != 3:
        raise InvalidInputError(f"{name}: an image is an (H, W, C) array (or (image, target)). "
                                + received("image.shape", image.shape))
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating) and image.dtype.name != "bfloat16":
        raise InvalidInputError(f"{name}: an image is uint8 (scaled to the method's value_range) or float (taken as "
                                "it is); other integer or boolean pixels are ambiguous (convert them first). "
                                + received("image.dtype", image.dtype))
    if target is not None:
        if (isinstance(target, (bool, np.bool_, str, bytes)) or not isinstance(target, (int, float, np.number))
                or not np.isfinite(float(target)) or not float(target).is_integer() or int(target) < 0):
            raise InvalidInputError(f"{name}: a target is a class index ≥ 0. " + received("target", target))
        target = int(target)
    return image, target, None if index is None else int(index), None if item_id is None else str(item_id)


def _name(position: int, item_id: Optional[str], index: Optional[int]) -> str:
    if item_id is not None:
        return f"{item_id!r}" + (f" (item {index})" if index is not None else "")
    return f"item {index}" if index is not None else f"element {position} of the batch"


class _SettingsError(InvalidInputError):
    """The method cannot be made from the handler's settings on this model: not an element's failure
    (raised whatever ``on_error`` says, never retried element by element)."""


class _Loaded:
    """What :meth:`ExplanationModelHandler.load_model` returns: the model and its methods (one per
    image shape; a per-image segmentation is built for each batch), shared by a worker's threads."""

    def __init__(self, model, handler: ExplanationModelHandler):
        self.model = model
        self.handler = handler
        self._methods: Dict[Tuple[int, ...], Any] = {}
        self._lock = threading.Lock()

    def method(self, images: np.ndarray):
        """The method for ``images`` (``(N, H, W, C)``)."""
        handler = self.handler
        if handler.per_batch:  # a segmentation of these images: their own failure
            return handler.build(self.model, images)
        shape = tuple(images.shape[1:])
        with self._lock:
            if shape not in self._methods:
                try:
                    self._methods[shape] = handler.build(self.model, images[:1])
                except (ValueError, TypeError) as error:
                    raise _SettingsError(f"method {handler.method_name!r} cannot be made from method_options="
                                         f"{handler.method_options!r} on {handler._model_uri!r} for images of shape "
                                         f"{shape}: {error}") from None
            return self._methods[shape]


# -- the handler ----------------------------------------------------------------------------------

class ExplanationModelHandler(ModelHandler):
    """A Beam ``ModelHandler`` whose "inference" is a tfattr explanation.

    ``load_model`` loads the Keras model at ``model_uri`` (:func:`load_model`) and builds the method
    ``method`` from :data:`tfattr.methods.registry.REGISTRY` with ``method_options`` (the registry's
    settings: ``steps``, ``baseline``, ``n_masks``, ``layer``, ``value_range``, ``batch_size``, ``seed``,
    …, as ``tfattr explain``'s flags by their argparse names). ``run_inference`` explains a batch of
    elements with ONE ``method.attribute`` call and yields one
    ``PredictionResult(example, inference={"attributions", "target", "score", "delta", "baseline_score"})`` per
    element (``attributions`` ``(H, W, C)`` float32, ``target`` the explained class, ``score`` f(x)
    of that class, ``delta`` the completeness delta or NaN for methods without one, ``baseline_score``
    f(z) averaged over the baselines, or NaN).

    Elements: an ``(H, W, C)`` image, ``(image, target)``, or a mapping ``{"image", "target",
    "index", "id"}`` (what :class:`ExplainImages` feeds). ``uint8`` images are scaled to the
    method's ``value_range`` (default ``(0, 1)``) as ``tfattr explain`` scales image files; float
    images are taken as they are. Keyed elements: ``KeyedModelHandler(ExplanationModelHandler(...))``.

    Seeds. tfattr's random draws depend on the seed and the draw's index, never on the batch (an
    image's map is the same alone or in a batch, :mod:`tfattr.core.random`), so Beam's batching
    does not change a random method's draws: every call uses ``seed``. With ``seed_block=n`` and
    elements carrying their dataset ``index``, items ``[b·n, (b+1)·n)`` are explained with the seed
    :func:`batch_seed` ``(seed, b)``, as :func:`tfattr.explain_dataset` explains its batch ``b``
    (a Beam batch that spans two blocks is then explained by one call per block).

    Numbers. A deterministic method gives the maps of a local ``method.attribute`` call on the
    same images up to float32 rounding: the batch's composition changes how the kernels sum (a
    convolution's or matmul's reduction order under oneDNN depends on the batch), so maps agree
    to a few float32 ulps of the largest terms summed, not bit for bit.

    Args:
        model_uri: a ``.keras`` file or SavedModel folder (see :func:`load_model`).
        method: a registry name (``"ig"``, ``"gradcam"``, ``"rise"``, …).
        method_options: the method's settings by name (an unknown name is an error, not ignored).
        target: the class explained when an element gives none: ``None`` (top-1) or an int.
        image_size: ``(H, W)`` (or one side) every image is resized to (area averaging) before the
            batch is stacked; ``None``: images as they come (a batch of several sizes is an error).
        custom_objects: for ``keras.models.load_model``.
        logits: strip a final softmax before explaining (as ``tfattr explain``).
        seed_block: see Seeds above (``None``: one seed for every call).
        on_error: ``"raise"``: an element whose explanation fails raises an error naming it (the
            batch is retried element by element to find it); ``"skip"``: its result is
            ``{"error": message, ...}`` with NaN score and no attributions, the others are explained.
        min_batch_size, max_batch_size, max_batch_duration_secs, large_model, model_copies, **kwargs:
            Beam's ``ModelHandler`` batching and sharing arguments (``env_vars={...}`` sets
            environment variables before the model loads, e.g. ``TF_NUM_INTRAOP_THREADS``).
    """

    def __init__(self, model_uri: str, method: str = "ig", method_options: Optional[Mapping[str, Any]] = None,
                 target: Optional[int] = None, image_size=None, custom_objects: Optional[Mapping[str, Any]] = None,
                 *, logits: bool = False, seed_block: Optional[int] = None, on_error: str = "raise",
                 min_batch_size: Optional[int] = None, max_batch_size: Optional[int] = None,
                 max_batch_duration_secs: Optional[int] = None, large_model: bool = False,
                 model_copies: Optional[int] = None, _whole_blocks: bool = False, **kwargs):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         max_batch_duration_secs=max_batch_duration_secs, large_model=large_model,
                         model_copies=model_copies, **kwargs)
        from tfattr.methods.registry import entry

        if not isinstance(model_uri, (str, os.PathLike)):
            raise InvalidTypeError("`model_uri` must be a path to a .keras file or a SavedModel folder. "
                                   + received("model_uri", model_uri))
        item = entry(method)
        if method in _BATCH_DEPENDENT and not _whole_blocks:
            raise InvalidInputError(f"{method!r} permutes features between the images of one attribute call, so its "
                                    "maps would depend on how Beam batches the elements (and a batch of one image "
                                    "fails); explain a dataset with tfattr.beam.ExplainImages (one call per store "
                                    "chunk) or locally. " + received("method", method))
        options = dict(method_options or {})
        unknown = sorted(set(options) - set(item.settings))
        if unknown:
            raise InvalidInputError(f"`method_options`: {method!r} reads {', '.join(item.settings)}; it does not read "
                                    f"{', '.join(unknown)}. " + received("method_options", options))
        if target is not None and (isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0):
            raise InvalidInputError("`target` must be None (top-1) or a class index ≥ 0. " + received("target", target))
        if on_error not in ON_ERROR:
            raise InvalidInputError(f"`on_error` must be one of {list(ON_ERROR)}. " + received("on_error", on_error))
        if seed_block is not None and (isinstance(seed_block, bool) or not isinstance(seed_block, (int, np.integer))
                                       or seed_block < 1):
            raise InvalidInputError("`seed_block` must be None or an integer ≥ 1. "
                                    + received("seed_block", seed_block))
        self._model_uri = os.fspath(model_uri)
        self._method = method
        self._options = options
        self._target = None if target is None else int(target)
        self._image_size = _size(image_size)
        self._custom_objects = dict(custom_objects or {})
        self._logits = bool(logits)
        self._seed_block = None if seed_block is None else int(seed_block)
        self._on_error = on_error
        segmentation = options.get("segmentation") or "grid"
        self.per_batch = method in _PER_IMAGE_MASKS and segmentation != "grid"

    # -- Beam's ModelHandler API
    def load_model(self) -> _Loaded:
        """Load the Keras model (Beam calls this once per worker process and shares the result
        between its threads, or across processes with ``large_model=True``)."""
        from tfattr.streaming.evaluate import _output_classes
        from tfattr.streaming.explain import check_target_classes

        model = load_model(self._model_uri, self._custom_objects, self._logits)
        try:  # the handler's own target: a setting, named here (not every element skipped with it)
            check_target_classes(self._target, _output_classes(model))
        except InvalidInputError as error:
            raise _SettingsError(f"ExplanationModelHandler(target=...) on {self._model_uri!r}: {error}") from None
        return _Loaded(model, self)

    def run_inference(self, batch: Sequence[Any], model: _Loaded,
                      inference_args: Optional[Dict[str, Any]] = None) -> Iterable[PredictionResult]:
        """Explain ``batch`` (one ``method.attribute`` call, or one per seed block) and yield one
        ``PredictionResult`` per element, in order."""
        if inference_args:
            raise InvalidInputError("ExplanationModelHandler takes no inference_args (give the method's options as "
                                    "method_options). " + received("inference_args", sorted(inference_args)))
        batch = list(batch)
        parsed = []
        results: List[Optional[Dict[str, Any]]] = [None] * len(batch)
        for position, element in enumerate(batch):
            try:
                parsed.append(_parse(element, position))
            except (ValueError, TypeError) as error:
                if self._on_error == "raise":
                    raise
                parsed.append(None)
                results[position] = _failed(str(error))
        groups: Dict[Optional[int], List[int]] = {}
        for position, item in enumerate(parsed):
            if item is None:
                continue
            block = item[2] // self._seed_block if self._seed_block is not None and item[2] is not None else None
            groups.setdefault(block, []).append(position)
        for block, positions in groups.items():
            for position, row in zip(positions, self._explain_isolating(model, [parsed[p] for p in positions],
                                                                         positions, block)):
                results[position] = row
        return [PredictionResult(element, row, self._model_uri) for element, row in zip(batch, results)]

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        """The bytes of the batch's images (Beam's metrics; an element that is not an image, which
        ``run_inference`` named or skipped, counts 0)."""
        total = 0
        for element in batch:
            image = element.get("image") if isinstance(element, Mapping) else (
                element[0] if isinstance(element, tuple) and len(element) == 2 else element)
            nbytes = getattr(image, "nbytes", None)
            if nbytes is None:
                try:
                    nbytes = np.asarray(image).nbytes
                except (ValueError, TypeError):  # a ragged nesting: not an image
                    nbytes = 0
            total += int(nbytes)
        return total

    def get_metrics_namespace(self) -> str:
        """Beam's metrics of this handler go under ``tfattr_Explain``."""
        return "tfattr_Explain"

    def validate_inference_args(self, inference_args: Optional[Dict[str, Any]]):
        """No inference_args: the method's options are ``method_options``."""
        if inference_args:
            raise InvalidInputError("ExplanationModelHandler takes no inference_args (give the method's options as "
                                    "method_options). " + received("inference_args", sorted(inference_args)))

    def __repr__(self) -> str:
        return (f"ExplanationModelHandler({self._model_uri!r}, method={self._method!r}, "
                f"method_options={self._options!r})")

    # -- tfattr
    @property
    def method_name(self) -> str:
        """The registry name of the method."""
        return self._method

    @property
    def method_options(self) -> Dict[str, Any]:
        """The method's settings (a copy)."""
        return dict(self._options)

    def build(self, model, images: np.ndarray):
        """The method for ``model`` (``images``: for a feature mask or a baseline distribution's shape)."""
        from tfattr.methods.registry import build_method

        settings = dict(self._options, images=images)
        settings.setdefault("verbose", 0)
        return build_method(self._method, model, settings, argument="method")

    def _stack(self, items) -> np.ndarray:
        """The items' images as one float batch, resized to ``image_size`` and scaled from uint8."""
        images = [item[0] for item in items]
        if self._image_size is not None:
            images = [_resize(image, self._image_size) for image in images]
        shapes = sorted({image.shape for image in images})
        if len(shapes) > 1:
            raise InvalidInputError(f"a batch holds images of shapes {shapes}; give image_size=(H, W) to resize them "
                                    "to one. " + received("image_size", self._image_size))
        value_range = self._options.get("value_range") or (0.0, 1.0)
        # each image by its own dtype (a batch may mix uint8 and float elements: stacked first, the uint8
        # ones would become floats of 0-255 and escape the scaling)
        return np.stack([_scale(image, value_range) if image.dtype == np.uint8 else image.astype(np.float32, copy=False)
                         for image in images])

    def _attribute(self, loaded: _Loaded, items, block: Optional[int]) -> List[Dict[str, Any]]:
        x = self._stack(items)
        method = loaded.method(x)
        targets = [item[1] for item in items]
        if all(t is None for t in targets):
            target = self._target
        else:
            if any(t is None for t in targets) and self._target is None:
                top = np.argmax(np.asarray(loaded.model(x, training=False)), axis=-1)
                targets = [int(top[k]) if t is None else t for k, t in enumerate(targets)]
            target = np.array([self._target if t is None else t for t in targets], np.int64)
        call = {}
        if block is not None and "seed" in getattr(method, "config", {}):
            base = method.config.get("seed")
            call["seed"] = None if base is None else batch_seed(base, block)
        explanation = method.attribute(x, target=target, **call)
        attributions = np.asarray(explanation.attributions, np.float32)
        rows = []
        for k in range(len(items)):
            rows.append({
                "attributions": attributions[k],
                "target": int(explanation.targets[k]) if explanation.targets is not None else -1,
                "score": float(explanation.scores[k]) if explanation.scores is not None else math.nan,
                "delta": float(explanation.delta[k]) if explanation.delta is not None else math.nan,
                "baseline_score": (float(explanation.baseline_scores[k]) if explanation.baseline_scores is not None
                                   else math.nan),
            })
        return rows

    def _explain_isolating(self, loaded, items, positions, block) -> List[Dict[str, Any]]:
        """The rows of ``items``; if the batch fails, each item alone, so the failing one is named."""
        try:
            return self._attribute(loaded, items, block)
        except _SettingsError:  # the settings, not an element: every element would fail alike
            raise
        except Exception as error:  # noqa: BLE001 - which element: retried alone below
            if len(items) == 1:
                item = items[0]
                message = f"{type(error).__name__}: {error}"
                if self._on_error == "raise":
                    kind = (InvalidTypeError if isinstance(error, TypeError) else
                            InvalidInputError if isinstance(error, ValueError) else RuntimeError)
                    raise kind(f"explaining {_name(positions[0], item[3], item[2])} failed: {message}") from error
                return [_failed(message)]
        return [row for item, position in zip(items, positions)
                for row in self._explain_isolating(loaded, [item], [position], block)]


def _failed(message: str) -> Dict[str, Any]:
    return {"attributions": None, "target": -1, "score": math.nan, "delta": math.nan, "baseline_score": math.nan,
            "error": message}


def _size(image_size) -> Optional[Tuple[int, int]]:
    if image_size is None:
        return None
    sides = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size,)
    sides = (sides * 2)[:2] if len(sides) == 1 else sides
    if len(sides) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sides):
        raise InvalidInputError("`image_size` must be None, a side or (H, W) of positive integers. "
                                + received("image_size", image_size))
    return int(sides[0]), int(sides[1])


def _resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(size):
        return image
    import cv2

    resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return resized[..., None] if resized.ndim == 2 else resized


# -- dataset transforms ---------------------------------------------------------------------------

def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _is_remote(path: str) -> bool:
    return "://" in path


def match_files(data) -> List[str]:
    """The files of ``data``: a glob pattern's matches, sorted (Beam's file systems: local, ``gs://``,
    ``s3://``, …), or a list of paths and patterns in the list's order, as the local runner takes a list:
    a pattern expanded in place to its sorted matches, a path kept as given (listed twice: two items; a
    missing file stays an item, which the reader names or skips by ``on_error``, never a silent hole)."""
    from apache_beam.io.filesystems import FileSystems

    single = isinstance(data, (str, os.PathLike))
    patterns = [data] if single else list(data) if isinstance(data, (list, tuple)) else []
    if not patterns or not all(isinstance(p, (str, os.PathLike)) for p in patterns):
        raise InvalidInputError("`data` must be a folder, a glob pattern or a list of them. " + received("data", data))
    found: List[str] = []
    for pattern in map(os.fspath, patterns):
        if not _is_glob(pattern) and not _is_remote(pattern) and os.path.isfile(pattern):
            found.append(pattern)
            continue
        if not single and not _is_glob(pattern):
            if not _is_remote(pattern) and os.path.isdir(pattern):
                raise InvalidInputError(f"`data`: a list holds image files and glob patterns; {pattern!r} is a folder "
                                        "(pass a folder alone, or a pattern such as 'folder/*.png'). "
                                        + received("data", pattern))
            found.append(pattern)  # a listed file: read (or named missing) as the local runner reads it
            continue
        try:
            result = FileSystems.match([pattern])[0]
        except Exception as error:  # noqa: BLE001 - Beam's BeamIOError and the file systems' errors
            raise InvalidInputError(f"`data`: cannot list {pattern!r}: {error}. " + received("data", pattern)) from None
        matches = sorted(metadata.path for metadata in result.metadata_list)
        if not matches:
            raise InvalidInputError(f"`data`: no file matches {pattern!r}. " + received("data", pattern))
        found.extend(matches)
    return found


def _source(data, size, channels, value_range, chunk) -> Tuple[List[str], List[str], Dict[str, Any]]:
    """``(paths, ids, description)`` of ``data``, as the local runner's source
    (:func:`tfattr.streaming.sources.stream`) lists and describes it: a local folder's files in the
    order of their relative paths (the ids), a glob's matches sorted, a list in its order (ids: the
    paths, :func:`match_files`); files on a remote file system (``gs://``) described by their paths."""
    from tfattr.streaming.sources import stream

    options = dict(batch=chunk, image_size=size, channels=channels,
                   value_range=None if value_range is None else list(value_range))
    if isinstance(data, (str, os.PathLike)) and not _is_remote(os.fspath(data)) and os.path.isdir(data):
        folder = os.fspath(data)
        source = stream(folder, **options)
        return [os.path.join(folder, *item.split("/")) for item in source.ids], list(source.ids), source.description
    paths = match_files(data)
    if not any(_is_remote(path) for path in paths):
        source = stream(paths, **options)
        return paths, list(source.ids), source.description
    description = {"kind": "files", "files": len(paths), "paths_sha256": _digest(paths), "num_items": len(paths),
                   "image_size": None if size is None else list(size), "channels": channels,
                   "value_range": None if value_range is None else list(value_range)}
    return paths, list(paths), description


def _read_bytes(path: str) -> bytes:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path, mime_type="application/octet-stream",
                          compression_type="uncompressed") as handle:
        return handle.read()


def _decode(path: str, size, channels: int, value_range, data: Optional[bytes] = None) -> np.ndarray:
    """One image file (or its bytes ``data``) as the local runner's source decodes it
    (:func:`tfattr.streaming.sources.decode_image_file`: 8-bit RGB or grey, area-resized to ``size``,
    scaled to ``value_range``), as float32."""
    from tfattr.streaming.sources import decode_image_file

    if data is None:
        data = _read_bytes(path) if _is_remote(path) else path
    return decode_image_file(data, size, channels=channels, value_range=value_range)


#: the endings of TFRecord files (``data`` matching only such files is read as TFRecords)
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfr")


def _tfrecord_files(data) -> Optional[List[str]]:
    """The sorted TFRecord files of ``data`` when it names only such files (a pattern or list), else ``None``."""
    if isinstance(data, (str, os.PathLike)) and not _is_remote(os.fspath(data)) and os.path.isdir(data):
        return None
    paths = match_files(data)
    if all(".tfrecord" in os.path.basename(p).lower() or p.lower().endswith(TFRECORD_SUFFIXES) for p in paths):
        return paths
    return None


def _records(path: str):
    """The serialized records of one TFRecord file, in order."""
    import tensorflow as tf

    for record in tf.data.TFRecordDataset(path):
        yield record.numpy()


def _feature_bytes(record: bytes, key: str) -> Optional[bytes]:
    import tensorflow as tf

    feature = tf.train.Example.FromString(record).features.feature.get(key)
    if feature is None or not feature.bytes_list.value:
        return None
    return feature.bytes_list.value[0]


def _first_records(paths: Sequence[str], image_key: str, n: int):
    """``(name, image bytes)`` of the first ``n`` records (for measuring the engine's chunk size)."""
    count = 0
    for path in paths:
        for r, record in enumerate(_records(path)):
            data = _feature_bytes(record, image_key)
            if data is not None:
                yield f"{path}:{r}", data
                count += 1
            if count >= n:
                return


def _tfrecord_source(paths, size, channels, value_range, image_key, id_key):
    """``(paths, record counts, description)`` of TFRecord files (counted by reading them once)."""
    import tensorflow as tf

    counts = [int(tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda n, _: n + 1)) for path in paths]
    description = {"kind": "tfrecord", "files": len(paths), "paths_sha256": _digest(paths), "records": counts,
                   "num_items": int(sum(counts)), "image_key": image_key, "id_key": id_key,
                   "image_size": None if size is None else list(size), "channels": channels,
                   "value_range": None if value_range is None else list(value_range)}
    return paths, counts, description


class _ReadShard(beam.DoFn):
    """``(path, offset, count)`` → ``(chunk k, (index, id, image or None, error or None))`` for every record of
    the shard in an unfinished chunk (``todo``); with ``on_error="raise"`` a bad record raises an error naming it."""

    def __init__(self, image_key, id_key, size, channels, value_range, on_error, chunk, todo):
        self._image_key, self._id_key, self._size, self._channels = image_key, id_key, size, channels
        self._value_range = None if value_range is None else tuple(value_range)
        self._on_error, self._chunk, self._todo = on_error, chunk, set(todo)

    def process(self, shard):
        path, offset, count = shard
        name = os.path.basename(path)
        seen = 0
        for r, record in enumerate(_records(path)):
            index = offset + r
            seen += 1
            if index // self._chunk not in self._todo:
                continue
            item_id = f"{name}:{r}"
            try:
                if self._id_key is not None:
                    value = _feature_bytes(record, self._id_key)
                    if value is None:
                        raise InvalidInputError(f"the record has no bytes feature {self._id_key!r}. "
                                                + received("id_key", self._id_key))
                    item_id = value.decode("utf-8", "replace")
                data = _feature_bytes(record, self._image_key)
                if data is None:
                    raise InvalidInputError(f"the record has no bytes feature {self._image_key!r} (an encoded image). "
                                            + received("image_key", self._image_key))
                image, error = _decode(f"{path}:{r}", self._size, self._channels, self._value_range, data), None
            except Exception as failure:  # noqa: BLE001 - every reason a record cannot be used: named below
                message = f"{type(failure).__name__}: {failure}"
                if self._on_error == "raise":
                    raise InvalidInputError(f"cannot read item {index} ({item_id!r}, record {r} of {path!r}): "
                                            f"{message}") from None
                image, error = None, message
            yield index // self._chunk, (index, item_id, image, error)
        if seen != count:
            raise RuntimeError(f"{path!r} holds {seen} records; {count} were counted when the pipeline was built (the "
                               "file changed?). " + received("path", path))


class _AssembleChunk(beam.DoFn):
    """``(k, items)`` → the chunk's elements for the handler, sorted by index (main output), and the rows of the
    unreadable items (output ``"failed"``)."""

    def __init__(self, chunk):
        self._chunk = chunk

    def process(self, element):
        k, items = element
        examples = []
        for index, item_id, image, error in sorted(items, key=lambda item: item[0]):
            if error is not None:
                yield beam.pvalue.TaggedOutput("failed", (k, _row(index, item_id, None, error)))
            else:
                examples.append({"image": image, "index": index, "id": item_id})
        if examples:
            yield examples


class _DecodeBatch(beam.DoFn):
    """``(block, [(index, path, id), ...])`` → the block's elements for the handler (main output) and
    the rows of the files that cannot be read or decoded (output ``"failed"``; with
    ``on_error="raise"`` the first such file raises an error naming it)."""

    def __init__(self, size, channels, value_range, on_error, chunk):
        self._size, self._channels = size, channels
        self._value_range = None if value_range is None else tuple(value_range)
        self._on_error, self._chunk = on_error, chunk

    def process(self, element):
        _, items = element
        examples = []
        for index, path, item_id in items:
            try:
                image = _decode(path, self._size, self._channels, self._value_range)
            except Exception as error:  # noqa: BLE001 - every reason a file cannot be read: named below
                message = f"{type(error).__name__}: {error}"
                if self._on_error == "raise":
                    raise InvalidInputError(f"cannot read item {index} ({item_id!r}, file {path!r}): {message}") \
                        from None
                yield beam.pvalue.TaggedOutput("failed", (index // self._chunk, _row(index, item_id, None, message)))
                continue
            examples.append({"image": image, "index": index, "id": item_id})
        if examples:
            yield examples


def _row(index: int, item_id: str, inference: Optional[Mapping[str, Any]], error: Optional[str] = None):
    """The chunk writer's record of one item."""
    if inference is not None and inference.get("error") is None:
        return {"index": index, "id": item_id, "attributions": inference["attributions"],
                "target": int(inference["target"]), "score": float(inference["score"]),
                "delta": float(inference["delta"]), "baseline_score": float(inference.get("baseline_score", math.nan)),
                "status": "ok", "error": ""}
    message = error if error is not None else inference.get("error")
    return {"index": index, "id": item_id, "attributions": None, "target": -1, "score": math.nan,
            "delta": math.nan, "baseline_score": math.nan, "status": "skipped", "error": message}


def _keyed_row(result, chunk: int):
    example = result.example
    return example["index"] // chunk, _row(example["index"], example["id"], result.inference)


class _WriteChunk(beam.DoFn):
    """``(chunk k, rows)`` → chunk ``k`` of the store, committed atomically (its marker last); yields
    ``k``. A chunk missing an item is an error (never a hole). ``map_shape``: one item's attributions
    (the image's shape, or ``(H, W)`` for RISE, the CAMs, …), the NaN map of a skipped item."""

    def __init__(self, out, settings, chunk, num_items, map_shape):
        self._out, self._settings, self._chunk = out, settings, chunk
        self._num_items, self._map_shape = num_items, tuple(map_shape)

    def process(self, element):
        from tfattr.streaming.store import ChunkFinishedError, StoreWriter

        k, rows = element
        rows = sorted(rows, key=lambda row: row["index"])
        start, stop = k * self._chunk, min((k + 1) * self._chunk, self._num_items)
        indices = [row["index"] for row in rows]
        if indices != list(range(start, stop)):
            missing = sorted(set(range(start, stop)) - set(indices))
            raise RuntimeError(f"chunk {k} of {self._out!r} lacks items {missing[:10]} (or holds one twice); it is not "
                               "written. " + received("indices", indices[:20]))
        valid = np.array([row["status"] == "ok" for row in rows])
        attributions = np.full((len(rows),) + self._map_shape, np.nan, np.float32)  # skipped: NaN, as locally
        for j, row in enumerate(rows):
            if row["attributions"] is not None:
                if np.shape(row["attributions"]) != self._map_shape:
                    raise RuntimeError(f"item {row['index']} ({row['id']!r}) has attributions of shape "
                                       f"{np.shape(row['attributions'])}; the method's maps were {self._map_shape} "
                                       "when the pipeline was built. " + received("chunk", k))
                attributions[j] = row["attributions"]
        arrays = {"attributions": attributions,
                  "targets": np.array([row["target"] for row in rows], np.int32),
                  "scores": np.array([row["score"] for row in rows], np.float64),
                  "delta": np.array([row["delta"] for row in rows], np.float64),
                  "valid": valid}
        table = [{"id": row["id"], "index": row["index"], "target": row["target"], "score": row["score"],
                  "delta": row["delta"], "baseline_score": row["baseline_score"], "label": None,
                  "status": row["status"], "error": row["error"]}
                 for row in rows]
        writer = StoreWriter.open(self._out, self._settings, self._chunk, self._num_items, lock=False)
        try:
            if k not in writer.finished():  # a retried bundle: the chunk is there already
                try:
                    writer.write_chunk(k, start, [row["id"] for row in rows], arrays, table)
                except ChunkFinishedError:  # another attempt of this bundle committed it meanwhile: done
                    pass
        finally:
            writer.close()
        yield k


class _Finish(beam.DoFn):
    """After every chunk is written: record the store as complete (``num_items``) if every chunk has
    its marker (a failed chunk leaves the store incomplete, and a re-run resumes it)."""

    def __init__(self, out, settings, chunk, num_items):
        self._out, self._settings, self._chunk, self._num_items = out, settings, chunk, num_items

    def process(self, _):
        from tfattr.streaming.store import StoreWriter

        writer = StoreWriter.open(self._out, self._settings, self._chunk, self._num_items, lock=False)
        try:
            expected = set(range(-(-self._num_items // self._chunk)))
            missing = sorted(expected - set(writer.finished()))
            if missing:
                raise RuntimeError(f"the store {self._out!r} lacks chunks {missing[:10]} after the run; run it again "
                                   "to resume. " + received("out", self._out))
            writer.finish(self._num_items)
        finally:
            writer.close()
        yield self._num_items


def _map_shape(method, item_shape, target, engine: int, count: int = 1) -> Tuple[int, ...]:
    """One item's attribution shape: the image's for most methods, ``(H, W)`` for RISE, the CAMs, …
    (learnt from one call on ``count`` blank images, as the local runner learns it)."""
    blank = np.zeros((count,) + tuple(item_shape), np.float32)
    maps = method.attribute(blank, target=target, batch_size=engine, verbose=0).attributions
    return tuple(int(d) for d in np.shape(maps)[1:])


def _item_shape(model, image_size) -> Tuple[Tuple[int, int], int]:
    """``((H, W), channels)`` of the store's items: the model's fixed size (``image_size`` must agree) or
    ``image_size`` for a model of free size."""
    from tfattr.core.inputs import model_spec

    shape = model_spec(model).input_shape
    if shape is None or len(shape) != 3 or shape[2] not in (1, 3):
        raise InvalidInputError("`model_uri`: ExplainImages explains models of one (H, W, 1) or (H, W, 3) image input. "
                                + received("input shape", shape))
    fixed = tuple(shape[:2])
    if None not in fixed:
        if image_size is not None and tuple(image_size) != fixed:
            raise InvalidInputError(f"`image_size`: the model takes {fixed[0]}×{fixed[1]} images only. "
                                    + received("image_size", image_size))
        return fixed, int(shape[2])
    if image_size is None:
        raise InvalidInputError("`image_size`: the model takes any image size and a store holds one; give "
                                "image_size=(H, W). " + received("image_size", None))
    return tuple(image_size), int(shape[2])


class ExplainImages(beam.PTransform):
    """Explain a dataset of image files on Beam and write the store of :func:`tfattr.explain_dataset`.

    ``pipeline | ExplainImages(data, out, method="ig", model_uri="model.keras", ...)``: the files
    of ``data`` are listed as the local runner lists them (a folder's by their paths relative to it, the
    ids, sorted; a glob pattern's matches sorted; a list in its own order, :func:`match_files`) — an
    item's index is its place in that order — and cut into store chunks of
    ``chunk`` items. Each unfinished chunk is read and decoded on a worker (as the local runner
    decodes files: 8-bit RGB, or grey for a one-channel model, area-resized to the model's size or
    ``image_size``, scaled to ``value_range``), explained by Beam's ``RunInference`` with
    :class:`ExplanationModelHandler` (one ``attribute`` call per chunk, a random method seeded
    :func:`batch_seed` ``(seed, k)`` as the local runner seeds its batch ``k``), its rows grouped
    back by chunk and committed by the worker that holds them (zarr chunk files, Parquet rows, the
    marker last: chunks commit in any order, from any process, without a lock). The result is the
    store of a local :func:`tfattr.explain_dataset` run with ``batch_size=chunk``, read back by
    :func:`tfattr.open_explanations`.

    The store's settings (method and options, model fingerprint, data, chunk, engine chunk size,
    seed, on_error) are written or compared when the pipeline is built: another configuration on
    the same ``out`` is an error naming what differs. Chunks whose marker exists are left out before
    anything is read (resume after a failed or cancelled job). The last step records the store
    complete (or fails naming the chunks missing).

    Files that cannot be read or decoded, and items whose explanation fails: ``on_error="raise"``
    fails the pipeline with an error naming the item (index, id, file); ``"skip"`` writes the item's
    row with status ``skipped`` and the error, ``valid`` False and a NaN map.

    ``out`` must be a folder every worker can write: the machine's disk for the DirectRunner, a file
    system shared by the workers (NFS, a mounted bucket) on Dataflow, Flink or Spark.

    Args:
        data: a folder, a glob pattern (``/data/val/*/*.JPEG``, ``gs://bucket/val/*.png``) or a list.
        out: the store folder.
        method: a registry name; ``method_options``: its settings (see :class:`ExplanationModelHandler`;
            ``batch_size``, the engine's points per pass, ``"auto"`` by default, is measured once at
            launch as the local runner measures it and recorded).
        model_uri: a ``.keras`` file or SavedModel folder, readable from the launcher and the workers.
        target: ``None`` (top-1) or a class index.
        chunk: items per store chunk and per ``attribute`` call (default 64).
        seed: the run's seed (chunk ``k`` of a random method is explained with :func:`batch_seed` ``(seed, k)``);
            ``None``: ``method_options['seed']``, else 0. Both given and different: an error (as
            :func:`tfattr.explain_dataset`).
        image_size: ``(H, W)`` for a model of free input size.
        value_range: ``(low, high)``: 8-bit pixels are scaled to ``low + p / 255 · (high − low)`` and the method
            is built with it; ``None``: pixels keep their 0–255 values and the method gets the model's
            declared range, else (0, 1) (as :func:`tfattr.explain_dataset`).
        logits: strip a final softmax (as ``tfattr explain``).
        on_error: ``"raise"`` or ``"skip"``.
        custom_objects: for loading the model.
        overwrite: delete an existing store at ``out`` when the pipeline is built.
        image_key, id_key: TFRecords (``data`` matching ``*.tfrecord``/``*.tfrecords`` files of
            ``tf.train.Example``): the feature holding the encoded image (PNG, JPEG, …) and the one holding
            each item's id (``None``: ``"<file name>:<record number>"``). Items are the records in the order
            of the files (:func:`match_files`), then of the records; each shard is read once, by one worker.
    """

    def __init__(self, data, out, method: str = "ig", model_uri: Optional[str] = None,
                 method_options: Optional[Mapping[str, Any]] = None, *, target: Optional[int] = None,
                 chunk: int = 64, seed: Optional[int] = None, image_size=None, value_range=None, logits: bool = False,
                 on_error: str = "raise", custom_objects: Optional[Mapping[str, Any]] = None,
                 overwrite: bool = False, image_key: str = "image", id_key: Optional[str] = None):
        super().__init__()
        from tfattr.core import checks

        if model_uri is None:
            raise InvalidInputError("`model_uri` is needed: the workers load the model from it. "
                                    + received("model_uri", None))
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise InvalidInputError("`chunk` must be an integer ≥ 1. " + received("chunk", chunk))
        if target is not None and (isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0):
            raise InvalidInputError("`target` must be None (top-1) or a class index ≥ 0. " + received("target", target))
        if on_error not in ON_ERROR:
            raise InvalidInputError(f"`on_error` must be one of {list(ON_ERROR)}. " + received("on_error", on_error))
        checks.seed("seed", seed)
        if method_options is not None and not isinstance(method_options, Mapping):
            raise InvalidTypeError("`method_options` must be a dict of settings. "
                                   + received("type(method_options)", type(method_options).__name__))
        explicit = dict(method_options or {}).get("seed")
        if explicit is not None and seed is not None and explicit != seed:  # as explain_dataset: one base seed
            raise InvalidInputError(f"`seed` ({seed}) and method_options['seed'] ({explicit}) disagree; a random "
                                    "method explains chunk k with batch_seed(seed, k): give one of them. "
                                    + received("method_options['seed']", explicit))
        if seed is None:  # the run's seed: the method's own, else 0 (as explain_dataset)
            checks.seed("method_options['seed']", explicit)
            seed = 0 if explicit is None else explicit
        self.data, self.out, self.method, self.model_uri = data, os.fspath(out), method, os.fspath(model_uri)
        self.method_options, self.target, self.chunk = dict(method_options or {}), target, int(chunk)
        self.seed, self.image_size = int(seed), _size(image_size)
        self.value_range = None if value_range is None else tuple(float(v) for v in value_range)
        self.logits, self.on_error, self.custom_objects = bool(logits), on_error, dict(custom_objects or {})
        self.overwrite = bool(overwrite)
        self.image_key, self.id_key = image_key, id_key
        self.num_items: Optional[int] = None  # known once the pipeline is built (prepare)

    def prepare(self) -> Dict[str, Any]:
        """Match the files, load the model, build the method, open (or check) the store and list the
        chunks left to do. Called by :meth:`expand` when the pipeline is built."""
        from tfattr.core.ranges import resolve_value_range
        from tfattr.streaming.explain import (
            _num_classes,
            _resolve_method,
            _settings,
            _target_spec,
            check_settings,
            check_target_classes,
            engine_batch_size,
            read_settings,
        )
        from tfattr.streaming.store import StoreWriter

        model = load_model(self.model_uri, self.custom_objects, self.logits)
        size, channels = _item_shape(model, self.image_size)
        item_shape = tuple(size) + (channels,)
        value_range = tuple(float(v) for v in resolve_value_range(self.value_range, model))
        # 8-bit pixels scaled into the user's value_range, or kept 0–255 without one (as explain_dataset)
        records = _tfrecord_files(self.data)
        if records is not None:
            paths, counts, description = _tfrecord_source(records, self.image_size, channels, self.value_range,
                                                          self.image_key, self.id_key)
            ids = [None] * sum(counts)  # read with the records, on the workers
        else:
            paths, ids, description = _source(self.data, self.image_size, channels, self.value_range, self.chunk)
        options = dict(self.method_options)
        options.setdefault("value_range", value_range)
        options.setdefault("seed", self.seed)
        method, _ = _resolve_method(self.method, model, options, item_shape, self.seed, value_range)
        check_target_classes(self.target, _num_classes(method))  # at launch whatever on_error says, as locally
        if getattr(method, "depends_on_batch", False) and self.on_error != "skip" and len(ids) % self.chunk == 1:
            raise InvalidInputError(  # one call per chunk: the last one would hold one image (as locally)
                f"{type(method).__name__} compares each image with the others of its batch, and with {len(ids)} "
                f"items in chunks of {self.chunk} the last chunk holds one image: choose another chunk (or "
                "on_error='skip' to skip that image). " + received("chunk", self.chunk))
        recorded = None if self.overwrite else read_settings(self.out)
        given = options.get("batch_size", "auto")
        if given != "auto":
            engine = int(given)  # a size other than the recorded one: the settings compare names it
        elif recorded is not None and isinstance(recorded.get("engine_batch_size"), int):
            engine = int(recorded["engine_batch_size"])
        else:
            first = []
            samples = (_first_records(paths, self.image_key, 16) if records is not None else
                       ((path, None) for path in paths))
            for path, data in samples:
                try:
                    first.append(_decode(path, size, channels, self.value_range, data))
                except (ValueError, TypeError):  # a bad file: named (or skipped) by the pipeline
                    continue
                if len(first) == 16:
                    break
            engine = engine_batch_size(method, np.stack(first) if first else np.zeros((0,) + item_shape, np.float32),
                                       self.target)
        settings = _settings(method, {}, description, _target_spec(self.target)[1], self.chunk, engine, self.seed,
                             self.on_error)
        map_shape = _map_shape(method, item_shape, self.target, engine, 2 if self.method in _BATCH_DEPENDENT else 1)
        if recorded is not None:
            check_settings(self.out, recorded, settings)  # the local runner's message naming what differs
        options["batch_size"] = engine
        handler = ExplanationModelHandler(self.model_uri, self.method, options, target=self.target,
                                          custom_objects=self.custom_objects, logits=self.logits,
                                          seed_block=self.chunk, on_error=self.on_error, _whole_blocks=True)
        if self.overwrite:  # once, here, under the lock: the workers then write the new store
            StoreWriter.open(self.out, settings, self.chunk, len(ids), lock=True, overwrite=True).close()
        # locked while the launcher reads it: a local run writing this store is a named error (StoreLockedError),
        # not a second writer of its chunks; the workers then write without the lock
        with StoreWriter.open(self.out, settings, self.chunk, len(ids), lock=True) as writer:
            finished = set(writer.finished())
        self.num_items = len(ids)
        todo = [k for k in range(-(-len(ids) // self.chunk)) if k not in finished]
        shards = None
        if records is not None:  # a shard is read by one worker when it holds an item of an unfinished chunk
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
            wanted = set(todo)
            shards = [(path, int(offsets[j]), int(counts[j])) for j, path in enumerate(paths)
                      if any(k in wanted for k in range(offsets[j] // self.chunk,
                                                        -(-offsets[j + 1] // self.chunk)))]
            chunks = None
        else:
            chunks = [(k, [(i, paths[i], ids[i]) for i in range(k * self.chunk, min((k + 1) * self.chunk, len(ids)))])
                      for k in todo]
        return {"settings": settings, "chunks": chunks, "shards": shards, "todo": todo, "num_items": len(ids),
                "item_shape": item_shape, "map_shape": map_shape, "handler": handler, "finished": finished,
                "value_range": value_range}

    def expand(self, pbegin):
        from apache_beam.ml.inference.base import RunInference

        plan = self.prepare()
        pipeline = pbegin.pipeline if hasattr(pbegin, "pipeline") else pbegin
        chunk, shape = self.chunk, plan["item_shape"]
        if plan["shards"] is not None:  # TFRecords: each shard read once, its items grouped by chunk
            decoded = (pipeline
                       | "Shards" >> beam.Create(plan["shards"])
                       | "Spread" >> beam.Reshuffle()
                       | "Read" >> beam.ParDo(_ReadShard(self.image_key, self.id_key, self.image_size, shape[2],
                                                         self.value_range, self.on_error, chunk, plan["todo"]))
                       | "GroupItems" >> beam.GroupByKey()
                       | "Assemble" >> beam.ParDo(_AssembleChunk(chunk)).with_outputs("failed", main="examples"))
        else:
            decoded = (pipeline
                       | "Chunks" >> beam.Create(plan["chunks"])
                       | "Spread" >> beam.Reshuffle()
                       | "Decode" >> beam.ParDo(_DecodeBatch(self.image_size, shape[2], self.value_range,
                                                             self.on_error, chunk)).with_outputs("failed",
                                                                                                 main="examples"))
        explained = (decoded.examples
                     | "Explain" >> RunInference(plan["handler"].with_no_batching())
                     | "ByChunk" >> beam.Map(_keyed_row, chunk))
        written = ((explained, decoded.failed)
                   | "Rows" >> beam.Flatten()
                   | "GroupChunks" >> beam.GroupByKey()
                   | "WriteChunks" >> beam.ParDo(_WriteChunk(self.out, plan["settings"], chunk, plan["num_items"],
                                                             plan["map_shape"])))
        return (written
                | "CountChunks" >> beam.combiners.Count.Globally()
                | "Finish" >> beam.ParDo(_Finish(self.out, plan["settings"], chunk, plan["num_items"])))


def _first_images(paths, size, channels, value_range, item_shape, count: int = 16) -> np.ndarray:
    """The first ``count`` readable images of ``paths`` (for measuring the engine's chunk size; an unreadable
    file is left to the pipeline, which names or skips it by ``on_error``)."""
    first = []
    for path in paths:
        try:
            first.append(_decode(path, size, channels, value_range))
        except (ValueError, TypeError, OSError):
            continue
        if len(first) == count:
            break
    return np.stack(first) if first else np.zeros((0,) + tuple(item_shape), np.float32)


def _scale(images: np.ndarray, value_range) -> np.ndarray:
    low, high = value_range
    return (np.float32(low) + images.astype(np.float32) / np.float32(255.0) * np.float32(high - low)).astype(np.float32)


def _digest(ids: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


# -- evaluation ------------------------------------------------------------------------------------

class _EvaluateChunk(beam.DoFn):
    """``(k, [(index, path, id), ...])`` → chunk ``k`` of every method's store that lacks it: the chunk's
    images decoded, explained by each method (seed :func:`batch_seed` ``(seed, k)``), scored by the
    metrics, rows with the metric columns, committed (as :func:`tfattr.evaluate_dataset` does per batch).
    Yields ``k``. The model and methods load once per worker (:meth:`setup`)."""

    def __init__(self, spec: Dict[str, Any]):
        self._spec = spec

    def setup(self):
        from tfattr.metrics.registry import resolve_metrics
        from tfattr.streaming.evaluate import _methods, _output_classes, method_seed
        from tfattr.streaming.explain import _Plan

        spec = self._spec
        self._model = load_model(spec["model_uri"], spec["custom_objects"], spec["logits"])
        resolved = _methods(spec["methods"], self._model, tuple(spec["item_shape"]), spec["seed"],
                            tuple(spec["method_range"]))
        num_classes = _output_classes(self._model)
        self._plans = {}
        for (folder, engine), (_, method, options, own_seed) in zip(spec["folders"], resolved):
            config = dict(getattr(method, "config", None) or {})
            self._plans[folder] = _Plan(method=method, target=spec["target"], on_error=spec["on_error"],
                                        seed=method_seed(own_seed, config, spec["seed"]), seeded="seed" in config,
                                        options=options, num_classes=num_classes, item_shape=tuple(spec["item_shape"]),
                                        engine_batch_size=engine)
        self._chosen = resolve_metrics(list(spec["metrics"]), spec["metric_options"], masks_given=False)

    def process(self, element):

        from tfattr.streaming.evaluate import _batch_metrics, add_metric_columns
        from tfattr.streaming.explain import batch_items, explain_batch
        from tfattr.streaming.sources import Batch
        from tfattr.streaming.store import StoreWriter

        spec = self._spec
        k, items = element
        shape = tuple(spec["item_shape"])
        images = np.zeros((len(items),) + shape, np.float32)
        errors = []
        for j, (index, path, item_id) in enumerate(items):
            try:
                images[j] = _decode(path, spec["image_size"], shape[2], spec["stream_range"])
            except Exception as error:  # noqa: BLE001 - every reason a file cannot be used: named below
                message = f"{type(error).__name__}: {error}"
                if spec["on_error"] == "raise":
                    raise InvalidInputError(f"cannot read item {index} ({item_id!r}, file {path!r}): {message}") \
                        from None
                errors.append((index, item_id, message))
        batch = Batch(items[0][0], [item[2] for item in items], images, None, errors)
        first = next(iter(self._plans.values()))
        keep, failed, targets = batch_items(first, batch)
        if targets is None and keep.any():  # the scoring model's top-1, as evaluate's labels
            targets = np.zeros(len(batch.ids), np.int64)
            targets[keep] = np.argmax(self._model.predict(images[keep], verbose=0), axis=1)
        for folder, settings in spec["settings"].items():
            writer = StoreWriter.open(folder, settings, spec["chunk"], spec["num_items"], lock=False)
            try:
                if k in writer.finished():
                    continue
                plan = self._plans[folder]
                import time

                begin = time.perf_counter()
                arrays, rows, explanation, kept = explain_batch(plan, batch, k, (keep.copy(), dict(failed), targets))
                seconds = time.perf_counter() - begin
                columns, notes = _batch_metrics(self._chosen, spec["default_metrics"], self._model, images, kept,
                                                targets, plan, explanation, tuple(spec["method_range"]), spec["seed"],
                                                spec["metric_settings"])
                add_metric_columns(rows, columns, seconds, explanation, notes)
                writer.write_chunk(k, k * spec["chunk"], batch.ids, arrays, rows)
            finally:
                writer.close()
        yield k


class _Table(beam.DoFn):
    """After every chunk: each store recorded complete, the rows aggregated into the table
    (``out/table.md``, ``out/table.csv``) as :func:`tfattr.evaluate_dataset` aggregates them."""

    def __init__(self, spec: Dict[str, Any]):
        self._spec = spec

    def process(self, _):
        from tfattr.core.files import write_text
        from tfattr.evaluation import format_table
        from tfattr.streaming.evaluate import _aggregate, table_csv

        spec = self._spec
        for folder, settings in spec["settings"].items():
            yield from _Finish(folder, settings, spec["chunk"], spec["num_items"]).process(None)
        rows = [_aggregate(folder, name, spec["chunk"], spec["seed"], spec["confidence"])
                for folder, name in spec["names"].items()]
        write_text(os.path.join(spec["out"], "table.md"), format_table(rows))
        write_text(os.path.join(spec["out"], "table.csv"), table_csv(rows, spec["confidence"]))


class EvaluateImages(beam.PTransform):
    """Score attribution methods over a dataset of image files on Beam: the stores and table of
    :func:`tfattr.evaluate_dataset`.

    ``pipeline | EvaluateImages(data, out, ["gradient", ("ig", {"steps": 32})], ["aupc", "deletion"],
    model_uri="model.keras")``: files listed as :class:`ExplainImages` lists them; each unfinished store
    chunk is decoded on a worker, explained by every method that lacks it (one ``attribute`` call per
    method and chunk, seeded :func:`batch_seed` ``(seed, k)``) and scored by the metrics there (they need
    the model and the whole chunk, so this is a plain ``ParDo``, not ``RunInference``); each method's
    chunk, its rows carrying the ``metric:<column>`` values, is committed into ``out/<method>/``. The
    last step records the stores complete and writes ``out/table.md`` and ``out/table.csv``: the means
    over the images with bootstrap intervals, as the local run. Settings are recorded and compared per
    store; finished chunks are skipped (resume).

    Args:
        data, out, model_uri, target, chunk, seed, image_size, value_range, logits, on_error, custom_objects:
            as :class:`ExplainImages` (``target``: ``None``, the scoring model's top-1, or a class index).
        methods: registry names or ``(name, settings)`` pairs (the workers rebuild them; no method objects).
        metrics: metric names (:data:`tfattr.metrics.METRICS`); ``None``: :func:`tfattr.evaluate`'s default
            table (plus completeness for methods with a delta).
        metric_options, aupc_kernel, aupc_regions, aupc_perturbations, pixels_per_step, confidence: as
            :func:`tfattr.evaluate_dataset`.
    """

    def __init__(self, data, out, methods, metrics=None, model_uri: Optional[str] = None, *,
                 target: Optional[int] = None, metric_options: Optional[Dict[str, Dict[str, Any]]] = None,
                 chunk: int = 64, seed: int = 0, image_size=None, value_range=None, logits: bool = False,
                 on_error: str = "raise", custom_objects: Optional[Mapping[str, Any]] = None,
                 aupc_kernel: int = 15, aupc_regions: int = 30, aupc_perturbations: int = 50,
                 pixels_per_step: Optional[int] = None, confidence: float = 0.95):
        super().__init__()
        self._explain = ExplainImages(data, out, "gradient", model_uri, None, target=target, chunk=chunk, seed=seed,
                                      image_size=image_size, value_range=value_range, logits=logits,
                                      on_error=on_error, custom_objects=custom_objects)  # its checks
        self.methods, self.metrics, self.metric_options = methods, metrics, metric_options
        self.metric_settings = dict(aupc_kernel=aupc_kernel, aupc_regions=aupc_regions,
                                    aupc_perturbations=aupc_perturbations, pixels_per_step=pixels_per_step)
        self.confidence = confidence

    def prepare(self) -> Dict[str, Any]:
        """The launcher's work (as :func:`tfattr.evaluate_dataset` before its first batch): the files, the
        model, the methods and metrics, each store opened or checked, the chunks left to do."""
        from tfattr.core.keys import Uncacheable, canonical
        from tfattr.core.ranges import resolve_value_range
        from tfattr.evaluation import model_key as _model_key
        from tfattr.metrics.registry import resolve_metrics
        from tfattr.metrics.statistics import check_confidence
        from tfattr.streaming.evaluate import DEFAULT_METRICS, _folder_name, _methods, _output_classes
        from tfattr.streaming.explain import (
            _prepare_out,
            _settings,
            _target_spec,
            check_settings,
            check_target_classes,
            engine_batch_size,
            given_batch_size,
            read_settings,
        )
        from tfattr.streaming.store import StoreWriter

        e = self._explain
        out = _prepare_out(e.out)
        confidence = check_confidence(self.confidence)
        if self.metrics is None and self.metric_options is not None:
            raise InvalidInputError("`metric_options` sets options of named metrics: name them in `metrics`. "
                                    + received("metrics", None))
        metrics = list(DEFAULT_METRICS) if self.metrics is None else list(self.metrics)
        chosen = resolve_metrics(metrics, self.metric_options, masks_given=False)
        model = load_model(e.model_uri, e.custom_objects, e.logits)
        size, channels = _item_shape(model, e.image_size)
        item_shape = tuple(size) + (channels,)
        method_range = tuple(float(v) for v in resolve_value_range(e.value_range, model))
        if _tfrecord_files(e.data) is not None:
            raise InvalidInputError("`data`: EvaluateImages reads image files (a folder, a glob pattern or a list); "
                                    "TFRecords are read by ExplainImages. " + received("data", e.data))
        paths, ids, description = _source(e.data, e.image_size, channels, e.value_range, e.chunk)
        resolved = _methods(self.methods, model, item_shape, e.seed, method_range)
        check_target_classes(e.target, _output_classes(model))  # at launch whatever on_error says, as locally
        for name, method, _, _ in resolved:  # one call per chunk: a last chunk of one image (as ExplainImages)
            if getattr(method, "depends_on_batch", False) and e.on_error != "skip" and len(ids) % e.chunk == 1:
                raise InvalidInputError(
                    f"method {name!r} ({type(method).__name__}) compares each image with the others of its batch, "
                    f"and with {len(ids)} items in chunks of {e.chunk} the last chunk holds one image: choose "
                    "another chunk (or on_error='skip' to skip that image). " + received("chunk", e.chunk))
        metric_settings = dict(self.metric_settings, value_range=method_range, seed=e.seed)
        try:
            evaluation_key = {"model": _model_key(model), "metrics": [[spec.name, canonical(options, spec.name)]
                                                                      for spec, options in chosen],
                              "default_metrics": self.metrics is None, "metric_settings": canonical(metric_settings)}
        except Uncacheable as why:
            raise InvalidInputError(f"EvaluateImages records the run's settings to resume it; this run cannot be "
                                    f"recorded: {why.reason}. " + received("model_uri", e.model_uri)) from None
        used: set = set()
        settings_by, names, folders, todo = {}, {}, [], set()
        first = None
        for name, method, options, _ in resolved:
            folder = os.path.join(out, _folder_name(name, used))
            recorded = read_settings(folder)
            given = given_batch_size(method)
            if given != "auto":
                engine = int(given)
            elif recorded is not None and isinstance(recorded.get("engine_batch_size"), int):
                engine = int(recorded["engine_batch_size"])
            else:
                if first is None:
                    first = _first_images(paths, e.image_size or size, channels, e.value_range, item_shape)
                engine = engine_batch_size(method, first, e.target, options)
            settings = _settings(method, options, description, _target_spec(e.target)[1], e.chunk, engine, e.seed,
                                 e.on_error)
            settings["evaluation"] = dict(evaluation_key, name=name)
            if recorded is not None:
                check_settings(folder, recorded, settings)
            with StoreWriter.open(folder, settings, e.chunk, len(ids), lock=True) as writer:  # not a local run's
                finished = set(writer.finished())
            todo |= set(range(-(-len(ids) // e.chunk))) - finished
            settings_by[folder], names[folder] = json_ready(settings), name
            folders.append((folder, engine))
        chunks = [(k, [(i, paths[i], ids[i]) for i in range(k * e.chunk, min((k + 1) * e.chunk, len(ids)))])
                  for k in sorted(todo)]
        spec = {"model_uri": e.model_uri, "custom_objects": e.custom_objects, "logits": e.logits,
                "methods": _json_methods(self.methods), "item_shape": list(item_shape),
                "method_range": list(method_range), "stream_range": e.value_range, "image_size": e.image_size,
                "seed": e.seed, "target": e.target, "on_error": e.on_error, "folders": folders,
                "metrics": metrics, "metric_options": self.metric_options, "default_metrics": self.metrics is None,
                "metric_settings": metric_settings, "settings": settings_by, "names": names, "chunk": e.chunk,
                "num_items": len(ids), "confidence": confidence, "out": out}
        return {"spec": spec, "chunks": chunks}

    def expand(self, pbegin):
        plan = self.prepare()
        pipeline = pbegin.pipeline if hasattr(pbegin, "pipeline") else pbegin
        return (pipeline
                | "Chunks" >> beam.Create(plan["chunks"])
                | "Spread" >> beam.Reshuffle()
                | "ExplainAndScore" >> beam.ParDo(_EvaluateChunk(plan["spec"]))
                | "CountChunks" >> beam.combiners.Count.Globally()
                | "Table" >> beam.ParDo(_Table(plan["spec"])))


def json_ready(value):
    """``value`` as JSON would read it back (tuples as lists): what the store records and compares."""
    import json

    return json.loads(json.dumps(value))


def _json_methods(methods):
    """``methods`` for the workers: registry names and ``(name, settings)`` pairs only (no objects)."""
    items = [methods] if isinstance(methods, str) else list(methods)
    for item in items:
        settings = item[1] if isinstance(item, (tuple, list)) and len(item) == 2 else None
        if not isinstance(item, str) and not isinstance(settings, Mapping):
            raise InvalidTypeError("EvaluateImages' `methods` are registry names or (name, settings) pairs: the "
                                   "workers rebuild them (a method object cannot travel). " + received("methods", item))
    return [item if isinstance(item, str) else (item[0], dict(item[1])) for item in items]
