"""Evaluate attribution methods with the papers' metrics, with a result cache.

:func:`evaluate` runs each method on a batch and scores it with AUPC, AUTVC, deletion,
insertion and (with masks) the pointing game and mask energy; :func:`smoothtaylor_grid`
and :func:`guided_ig_comparison` build the method grids of the SmoothTaylor paper
(Goh et al. 2020, Tables I–III) and of the guided-IG paper (Kwon et al.). Results are
cached in ``cache_dir`` under a key of everything that can change a number
(:func:`result_key`), so a rerun that changes one method recomputes only that method.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfattr.core.keys import Uncacheable, canonical, digest
from tfattr.errors import InvalidInputError, received

__all__ = ["EvaluationRow", "evaluate", "format_table", "merge_rows", "result_key", "smoothtaylor_grid", "guided_ig_comparison",
           "IMAGENET_STD", "Uncacheable", "model_key", "summarize", "named_metric_values"]

# the papers' σ are in ImageNet-normalised units (pixels / std, std ≈ 0.226 of the [0, 1] range);
# the constant lives in the core (methods use it too) and is re-exported here
from tfattr.core.ranges import IMAGENET_STD, resolve_value_range  # noqa: E402


@dataclass
class EvaluationRow:
    """One method's scores: means over the images, plus per-image values and mean curves.

    ``scores[m]`` is the mean of ``per_image[m]`` over the images where it is defined (NaN left
    out); ``ci[m]`` its 95% (``evaluate``'s ``confidence``) percentile bootstrap interval
    ``(low, high)`` over the images (:func:`tfattr.metrics.bootstrap_ci`, seeded by ``evaluate``'s
    ``seed``; ``(nan, nan)`` below two images); ``half_width(m)`` is the ``h`` of the table's
    ``m ± h``.
    """

    method: str
    seconds: float
    gradients: int
    scores: Dict[str, float]
    per_image: Dict[str, np.ndarray] = field(default_factory=dict)
    curves: Dict[str, np.ndarray] = field(default_factory=dict)
    cached: bool = False
    #: why a metric is missing (NaN), e.g. AUTVC on maps too small for two pyramid levels
    notes: List[str] = field(default_factory=list)
    #: ``(low, high)`` bootstrap interval of each score over the images
    ci: Dict[str, Tuple[float, float]] = field(default_factory=dict)

    def half_width(self, metric: str) -> float:
        """``h`` of ``score ± h``: the larger distance from the mean to an end of ``ci[metric]``
        (``[m − h, m + h]`` contains the percentile interval, which need not be symmetric)."""
        low, high = self.ci.get(metric, (np.nan, np.nan))
        mean = self.scores.get(metric, np.nan)
        return float(max(mean - low, high - mean))


def _summary(per_image: Dict[str, np.ndarray], seed: int = 0, confidence: float = 0.95
             ) -> Tuple[Dict[str, float], Dict[str, Tuple[float, float]]]:
    """Means over the images (NaN left out) and their bootstrap intervals."""
    from tfattr.metrics.statistics import bootstrap_ci

    scores, intervals = {}, {}
    for name, values in per_image.items():
        array = np.asarray(values, np.float64).ravel()
        finite = array[np.isfinite(array)]
        scores[name] = float(finite.mean()) if finite.size else float("nan")
        intervals[name] = bootstrap_ci(array, confidence=confidence, seed=seed)
    return scores, intervals


#: the layout of a cached row; part of the key
_CACHE_FORMAT = 2
#: what reading a damaged cache file raises (truncated, empty, not a zip, a member missing)
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile, zlib.error)
_CODE: Optional[Dict[str, str]] = None


def _code_key() -> Dict[str, str]:
    """tfattr's version and a hash of its source files: rows cached by other code are not served."""
    global _CODE
    if _CODE is None:
        from tfattr._version import __version__

        root = os.path.dirname(os.path.abspath(__file__))
        hasher = hashlib.sha256()
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    hasher.update(os.path.relpath(path, root).replace(os.sep, "/").encode() + b"\0")
                    with open(path, "rb") as handle:
                        hasher.update(handle.read())
        _CODE = {"version": __version__, "sources": hasher.hexdigest()}
    return _CODE


def _json_default(value) -> str:
    """A config value JSON cannot write, by its type only (never its ``repr``: an address would
    make every process's key differ)."""
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _wiring_key(model) -> Optional[str]:
    """SHA-256 of a Functional or Sequential model's ``get_config()``: which layer feeds which
    (the fingerprint's architecture hash lists the layers' configs but not how they are wired, so
    two graphs of the same layers with the same weights would share it). ``None`` when the model
    has no config (a subclassed model is keyed by its source instead)."""
    try:
        config = model.get_config()
    except Exception:  # a subclassed model without get_config
        return None
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=_json_default).encode()).hexdigest()


def _model_key(model) -> Dict[str, Any]:
    """A Keras model by its fingerprint (architecture and weights hashes,
    :func:`~tfattr.baselines.uniform_output.model_fingerprint`), its wiring (:func:`_wiring_key`),
    its layer paths (a layer method's layer is named) and, for a subclassed model, the source of
    its class (its ``call``)."""
    import keras

    from tfattr.baselines.uniform_output import model_fingerprint

    if not isinstance(model, keras.Model):
        raise Uncacheable(f"the model is a {type(model).__name__}, not a Keras model with a fingerprint")
    from tfattr.core.layers import layer_paths

    kind = type(model)
    key = {"class": f"{kind.__module__}.{kind.__qualname__}", "fingerprint": model_fingerprint(model)["fingerprint"],
           "layers": [path for path, _ in layer_paths(model)], "wiring": _wiring_key(model)}
    if not kind.__module__.startswith("keras."):
        try:
            key["source"] = hashlib.sha256(inspect.getsource(kind).encode()).hexdigest()
        except (OSError, TypeError):
            raise Uncacheable(f"the model's class {kind.__qualname__} has no source to key its call()") from None
    return key


def _method_layers(method, seen=None) -> List[Any]:
    """The full paths of the layers a method (and every method it wraps, e.g. under a
    :class:`~tfattr.NoiseTunnel`) works at: a method's own key names its layer by its bare name,
    which two nested models can share (``"a/conv"``, ``"b/conv"``)."""
    from tfattr.core.layers import layer_paths

    seen = set() if seen is None else seen
    if id(method) in seen:
        return []
    seen.add(id(method))
    found: List[Any] = []
    layer, model = getattr(method, "layer", None), getattr(method, "model", None)
    if layer is not None and model is not None and not isinstance(layer, (str, int)):
        found.append(sorted(path for path, candidate in layer_paths(model) if candidate is layer))
    inner = [getattr(method, "method", None)] + list((getattr(method, "config", None) or {}).values())
    for item in inner:
        if hasattr(item, "attribute") and hasattr(item, "cache_key"):
            found.append(_method_layers(item, seen))
    return found


def result_key(model, images, method, labels, masks=None, settings: Optional[Dict[str, Any]] = None,
               strategy=None, models: Optional[Dict[int, Any]] = None, method_key=None) -> str:
    """The cache key of one :func:`evaluate` row: a SHA-256 over everything that can change a number.

    It covers the library (``tfattr.__version__`` and a hash of its source files), the scoring
    model and the method's model (:func:`_model_key`: architecture and weights), the images,
    labels and masks (by content), the metric ``settings``, the distribution strategy's kind and
    replica count, and the method's :meth:`~tfattr.methods.base.AttributionMethod.cache_key`: its
    class and every option (recursively for a wrapped method, e.g. under
    :class:`~tfattr.NoiseTunnel`), arrays by content, saved baselines by the content of their
    folder or tensor, with the full paths of the layers it works at. ``models`` memoises model keys
    by ``id`` within one call; ``method_key`` is the method's ``cache_key()`` when the caller
    already has it (the key then matches exactly the content it checks again after computing).

    Raises:
        Uncacheable: something cannot be keyed by content (a callable baseline or objective, a
            ``seed=None``, a model that is not a Keras model); such a row is not cached.

    Example:
        >>> result_key(model, images, tfattr.GradCAM(model, relu=False), labels, settings={"seed": 0})[:8]
    """
    models = {} if models is None else models
    key_of = getattr(method, "cache_key", None)
    if not callable(key_of):
        raise Uncacheable(f"{type(method).__name__} has no cache_key()")
    settings = dict(settings or {})
    if "seed" in settings and settings["seed"] is None:
        raise Uncacheable("seed=None draws fresh AUPC noise on every run")

    def model_key(m):
        if id(m) not in models:
            models[id(m)] = _model_key(m)
        return models[id(m)]

    structure = {
        "format": _CACHE_FORMAT,
        "code": _code_key(),
        "model": model_key(model),
        "method_model": model_key(method.model),
        "method": key_of() if method_key is None else method_key,
        "method_layers": _method_layers(method),
        "images": canonical(np.asarray(images), "images"),
        "labels": canonical(np.asarray(labels), "labels"),
        "masks": None if masks is None else canonical(np.asarray(masks), "masks"),
        "settings": canonical(settings, "settings"),
        "strategy": None if strategy is None else [type(strategy).__qualname__,
                                                   int(getattr(strategy, "num_replicas_in_sync", 1))],
    }
    return digest(structure)


class DamagedCacheFile(ValueError):
    """A cache file whose content is not a row this code wrote (bounds, shapes, dtypes)."""


def _row_limit(images, columns: int = 16) -> int:
    """A bound on the bytes a row of ``images`` can hold: per image at most ``max(16, columns)``
    float64 scores, at most four float64 curves of at most ``H·W + 2`` points (deletion with one
    pixel per step), plus 1 MiB for the key, the notes and the headers. A file claiming more is
    damaged."""
    shape = np.shape(images)
    count = int(shape[0]) if len(shape) else 1
    pixels = int(np.prod(shape[1:3])) if len(shape) >= 3 else 1
    return (1 << 20) + 8 * (max(16, columns) * count + 4 * (pixels + 2))


def _regular(descriptor: int, path: str) -> None:
    """Raise :class:`DamagedCacheFile` unless the open ``descriptor`` is a regular file."""
    import stat

    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        raise DamagedCacheFile(f"{path!r} is not a regular file")


def _read_npz_bounded(path: str, limit: int) -> Dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at ``path``, reading at most ``limit`` bytes of array data.

    ``np.load`` allocates what a member's header claims before reading it (a header claiming
    10^12 elements is a MemoryError); here each header is checked first: a plain (not object)
    dtype, a size that fits the zip member's declared size and, over all members, ``limit``.
    Raises :class:`DamagedCacheFile` (or the zip and ``.npy`` readers' errors) otherwise.
    """
    import zipfile

    arrays: Dict[str, np.ndarray] = {}
    total = 0
    # opened without blocking and checked to be a regular file: a FIFO or a device put at a row's
    # path would otherwise hang or stream without end
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        _regular(descriptor, path)
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle, zipfile.ZipFile(handle) as archive:
        members = archive.infolist()
        if len(members) > 64:
            raise DamagedCacheFile(f"{len(members)} members")
        for info in members:
            if not info.filename.endswith(".npy"):
                raise DamagedCacheFile(f"member {info.filename!r} is not an array")
            if info.filename[:-4] in arrays:  # which of two would be the row's?
                raise DamagedCacheFile(f"member {info.filename!r} appears twice")
            # an encrypted member or another compression (zipfile raises RuntimeError, NotImplementedError)
            if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise DamagedCacheFile(f"member {info.filename!r} is encrypted or compressed otherwise than "
                                       "savez writes")
            total += info.file_size
            if total > limit:
                raise DamagedCacheFile(f"members of more than {limit} bytes")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise DamagedCacheFile(f"member {info.filename!r} has .npy version {version}")
                if dtype.hasobject or dtype.itemsize == 0:
                    raise DamagedCacheFile(f"member {info.filename!r} has dtype {dtype}")
                if any(int(side) < 0 for side in shape):
                    raise DamagedCacheFile(f"member {info.filename!r} claims the shape {shape}")
                count = 1
                for side in shape:
                    count *= int(side)
                size = count * dtype.itemsize
                if size > info.file_size:
                    raise DamagedCacheFile(f"member {info.filename!r} claims {shape} {dtype}, more than its "
                                   f"{info.file_size} bytes")
                data = member.read(size)
                if len(data) != size:
                    raise DamagedCacheFile(f"member {info.filename!r} is truncated")
            array = np.frombuffer(data, dtype=dtype)
            array = array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
            arrays[info.filename[:-4]] = array.copy()
    return arrays


def _load_row(path: str, name: str, key: str, count: Optional[int] = None,
              limit: int = 1 << 26, columns: Sequence[str] = ("AUPC",), seed: int = 0,
              confidence: float = 0.95) -> Optional["EvaluationRow"]:
    """The row cached at ``path``, or ``None`` (with a warning) when the file cannot be read, holds
    another key, more than ``limit`` bytes, per-image values for other than ``count`` images, or
    lacks one of ``columns``."""
    try:
        stored = _read_npz_bounded(path, limit)
        if stored["key"].shape != () or str(stored["key"]) != key:
            raise KeyError("the file holds another key")
        per_image = {k[6:]: stored[k] for k in stored if k.startswith("image:")}
        curves = {k[6:]: stored[k] for k in stored if k.startswith("curve:")}
        for column in columns:
            if column not in per_image:
                raise KeyError(f"image:{column}")
        for k, v in [(f"image:{k}", v) for k, v in per_image.items()] + [(f"curve:{k}", v) for k, v in curves.items()]:
            if v.dtype.kind not in "fiub" or v.ndim != 1 or (k.startswith("image:") and count is not None
                                                              and len(v) != count):
                raise DamagedCacheFile(f"{k!r} holds a {v.shape} {v.dtype} array")
        seconds, gradients = float(stored["seconds"]), int(stored["gradients"])
        notes = [str(note) for note in np.atleast_1d(stored["notes"])]
    except _UNREADABLE as error:
        warnings.warn(f"The cached result {path!r} cannot be read ({type(error).__name__}: {error}); "
                      "recomputing it.", RuntimeWarning, stacklevel=3)
        return None
    scores, intervals = _summary(per_image, seed, confidence)
    return EvaluationRow(name, seconds, gradients, scores, per_image, curves, cached=True, notes=notes, ci=intervals)


def _save_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    from tfattr.core.files import atomic_write

    with atomic_write(path) as handle:
        np.savez_compressed(handle, **arrays)


def _by_name(item, model, images, value_range, argument: str):
    """``(name, method)`` for a registry name or a ``(name, settings)`` pair (settings the entry reads)."""
    from tfattr.methods.registry import entry

    name, settings = (item, {}) if isinstance(item, str) else item
    found = entry(name, argument)
    accepted = set(found.settings)
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise InvalidInputError(f"method {name!r} reads the settings {sorted(accepted)}; unknown: {unknown} (for its "
                                "other options pass an instance, (name, method)). " + received(argument, item))
    settings = dict(settings)
    settings.setdefault("value_range", resolve_value_range(value_range, model))
    settings["images"] = images
    return name, found.make(model, settings)


def evaluate(
    model,
    images: np.ndarray,
    methods: Sequence[Any],
    labels: Optional[np.ndarray] = None,
    masks: Optional[np.ndarray] = None,
    value_range: Optional[Tuple[float, float]] = None,
    aupc_kernel: int = 15,
    aupc_regions: int = 30,
    aupc_perturbations: int = 50,
    pixels_per_step: Optional[int] = None,
    pointing_tolerance: float = 15,
    seed: int = 0,
    cache_dir: Optional[str] = None,
    verbose: bool = True,
    strategy=None,
    metrics: Optional[Sequence[str]] = None,
    metric_options: Optional[Dict[str, Dict[str, Any]]] = None,
    confidence: float = 0.95,
) -> List[EvaluationRow]:
    """Run and score each ``(name, method)`` on ``images``.

    Args:
        model: the model the metrics query (pass the logits model: AUPC uses logits,
            deletion/insertion apply the softmax themselves).
        images: ``(N, H, W, C)`` float images in ``value_range`` (``None``: the range the model
            declares, ``model.tfattr_value_range``, else ``(0, 1)``), AUPC's noise range.
        methods: ``(name, method)`` pairs; each method's ``attribute`` is called with ``target=labels``.
            A method may also be given by its registry name (:data:`tfattr.methods.registry.REGISTRY`,
            the CLI's names): ``"rise"``, or ``("rise", {"n_masks": 500, "grid": 5})`` with the
            settings the registry reads for it (the CLI's flags without ``--``, e.g. ``cells`` and
            ``segmentation`` for the coalition methods); it is built as ``tfattr explain --method``
            builds it, on ``model`` with these images and ``value_range``, its other options at the
            class's defaults. An unknown name or setting is an error listing the choices.
        labels: explained classes (default: top-1 of ``model``).
        masks: ``(N, H, W)`` ground-truth masks for the pointing game and mask energy (optional).
        aupc_kernel, aupc_regions, aupc_perturbations: AUPC's ``k``, ``L``, ``P`` (paper: 15, 30, 50
            at 224 px; scale ``k`` with the image side).
        pixels_per_step: deletion/insertion step (default ``round(√(H·W))``, 224 at 224×224).
        pointing_tolerance: pointing-game tolerance in pixels (paper: 15 at 224 px).
        seed: seed of AUPC's noise.
        cache_dir: folder for cached results (``None``: no cache). A row is served from it only
            when nothing that can change a number changed (:func:`result_key`: library, models,
            images, labels, masks, metric settings, the method's class and every option); a row
            that cannot be keyed (a callable baseline or objective, ``seed=None``) is computed
            and not cached (``verbose`` says why). A damaged cache file (truncated, not a
            zip, a member whose header claims more than a row of these images can hold, not a
            regular file) is warned about, recomputed and overwritten. A row that cannot be
            written (a read-only or full disk, a file where the folder should be, a folder at
            the row's path) is warned about and returned all the same; a row whose method key
            changed while it ran (a saved baseline folder replaced meanwhile) is not cached.
        strategy: a ``tf.distribute`` strategy: the images are sharded over its replicas (and
            workers) with ``experimental_distribute_dataset``, attribution and metrics run per
            replica and are gathered (:mod:`tfattr.distribute`); results equal the single-device run.
            (With ``metrics`` named, the attribution is distributed and the metrics run on the host.)
        metrics: ``None`` (the papers' table: AUPC, AUTVC, deletion, insertion, and the pointing
            game and mask energy with masks, completeness for path methods) or names of registered
            metrics (:data:`tfattr.metrics.METRICS`: ``"max_sensitivity"``,
            ``"local_lipschitz_estimate"``, ``"model_parameter_randomisation"``, ``"aupc"``, …), one
            column each, in order. Metrics that re-explain get the method itself; random ones draw
            from ``seed``. The names and their options enter the cache key.
        metric_options: ``{name: {option: value}}`` overriding a named metric's defaults (e.g.
            ``{"max_sensitivity": {"n_perturb_samples": 20}}``).
        confidence: level of every cell's bootstrap interval (``EvaluationRow.ci``, ``m ± h`` in
            :func:`format_table`; default 0.95), resampled over the images from ``seed``.

    AUTVC needs maps of at least 44 × 44 pixels (two pyramid levels,
    :func:`tfattr.metrics.autvc_min_size`); on smaller maps its score is NaN (an empty cell in
    :func:`format_table`) and the row's ``notes`` say why (printed once with ``verbose``).

    Returns:
        One :class:`EvaluationRow` per method, in order.
    """
    from tfattr import metrics as measures
    from tfattr.metrics.registry import MetricInputs, resolve_metrics
    from tfattr.metrics.statistics import check_confidence

    methods = list(methods)
    for i, item in enumerate(methods):
        named = isinstance(item, str) or (isinstance(item, (tuple, list)) and len(item) == 2
                                          and isinstance(item[0], str) and isinstance(item[1], dict))
        if not named and not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)
                              and hasattr(item[1], "attribute")):
            raise InvalidInputError("`methods` must be (name, method) pairs, e.g. [('ig', IntegratedGradients(model))], "
                                    "registry names ('rise') or (name, settings) pairs (('rise', {'n_masks': 500})). "
                                    + received(f"methods[{i}]", item))
    confidence = check_confidence(confidence)
    if metrics is None and metric_options is not None:
        raise InvalidInputError("`metric_options` sets options of named metrics: name them in `metrics`. "
                                + received("metrics", None))
    chosen = None if metrics is None else resolve_metrics(metrics, metric_options, masks_given=masks is not None)
    images = np.asarray(images)
    methods = [_by_name(item, model, images, value_range, f"methods[{i}]")
               if isinstance(item, str) or isinstance(item[1], dict) else tuple(item)
               for i, item in enumerate(methods)]
    if labels is None:
        labels = np.argmax(model.predict(images, verbose=0), axis=1)
    labels = np.asarray(labels)
    if masks is not None and np.asarray(masks).shape[:3] != images.shape[:3]:
        raise InvalidInputError("`masks` must be (N, H, W) like the images. " + received("masks.shape", np.shape(masks)))
    rows = []
    value_range = resolve_value_range(value_range, model)
    settings = dict(value_range=value_range, aupc_kernel=aupc_kernel, aupc_regions=aupc_regions,
                    aupc_perturbations=aupc_perturbations, pixels_per_step=pixels_per_step,
                    pointing_tolerance=pointing_tolerance, seed=seed)
    columns = ("AUPC",) if chosen is None else tuple(spec.label for spec, _ in chosen)
    if chosen is not None:  # the named metrics and every option they run with are part of the key
        settings["metrics"] = [[spec.name, dict(options)] for spec, options in chosen]
    models: Dict[int, Any] = {}  # model keys of this call, by id
    printed = set()

    def note(row_notes, text):
        row_notes.append(text)
        if verbose and text not in printed:
            printed.add(text)
            print(f"  note: {text}")

    for name, method in methods:
        path = key = method_key = None
        if cache_dir is not None:
            try:
                method_key = method.cache_key() if callable(getattr(method, "cache_key", None)) else None
                key = result_key(model, images, method, labels, masks, settings, strategy, models,
                                 method_key=method_key)
            except Uncacheable as why:
                if verbose:
                    print(f"  {name:<28} not cached: {why.reason}")
            else:
                path = os.path.join(cache_dir, f"{key[:32]}.npz")
                if os.path.lexists(path):
                    row = _load_row(path, name, key, len(images), _row_limit(images, len(columns) + 8), columns,
                                    seed, confidence)
                    if row is not None:
                        rows.append(row)
                        if verbose:
                            print(f"  {name:<28} (cached)")
                        continue
        start = time.perf_counter()
        if strategy is None:
            explanation = method.attribute(images, target=labels)
        else:
            from tfattr.distribute import distributed_attribute

            explanation = distributed_attribute(method, images, target=labels, strategy=strategy)
        seconds = time.perf_counter() - start
        attributions = np.asarray(explanation)
        row_notes: List[str] = []
        if chosen is not None:
            per_image = _named_metrics(chosen, MetricInputs(
                model=model, images=images, attributions=attributions, method=method, explanation=explanation,
                targets=labels, masks=masks, value_range=value_range, seed=seed, settings=settings),
                functools.partial(note, row_notes))
            scores, intervals = _summary(per_image, seed, confidence)
            row = EvaluationRow(name, seconds, int(explanation.gradients), scores, per_image, {}, notes=row_notes,
                                ci=intervals)
            rows.append(row)
            if path is not None:
                _store_row(path, key, row, method, method_key)
            if verbose:
                print(f"  {name:<28} {seconds:7.2f}s  " + "  ".join(
                    f"{k} {v:.3f} ± {row.half_width(k):.3f}" if np.isfinite(v) else f"{k} –"
                    for k, v in row.scores.items()))
            continue

        def perturbation_metrics(x, a, t):
            return (measures.aupc(model, x, a, target=t, kernel_size=aupc_kernel, regions=aupc_regions,
                                 perturbations=aupc_perturbations, value_range=value_range, seed=seed, verbose=0),
                    measures.deletion(model, x, a, target=t, pixels_per_step=pixels_per_step, verbose=0),
                    measures.insertion(model, x, a, target=t, pixels_per_step=pixels_per_step, verbose=0))

        if strategy is None:
            aupc, deletion, insertion = perturbation_metrics(images, attributions, labels)
        else:
            from tfattr.distribute import distributed_map

            def as_fields(x, a, t):
                aupc, deletion, insertion = perturbation_metrics(x, a, t)
                return {"aupc.area": aupc.area, "aupc.curve": aupc.curve, "deletion.auc": deletion.auc,
                        "deletion.curve": deletion.curve, "insertion.auc": insertion.auc,
                        "insertion.curve": insertion.curve}

            fields = distributed_map(as_fields, [images, attributions, labels], strategy)
            aupc, deletion, insertion = (_Joined({k.split(".")[1]: v for k, v in fields.items() if k.startswith(p)})
                                         for p in ("aupc.", "deletion.", "insertion."))
        try:
            smoothness = measures.autvc(attributions).area
        except measures.AUTVCUndefinedError:
            height, width = measures.autvc_min_size()
            smoothness = np.full(len(attributions), np.nan)
            note(row_notes, f"AUTVC left empty: the maps are {attributions.shape[1]}×{attributions.shape[2]} and "
                            f"AUTVC needs at least {height}×{width} (two Gaussian-pyramid levels).")
        per_image = {"AUPC": aupc.area, "AUTVC": smoothness, "deletion": deletion.auc, "insertion": insertion.auc}
        if explanation.delta is not None:
            per_image["completeness"] = np.asarray(explanation.relative_delta, np.float64)
        if masks is not None:
            per_image["pointing"] = measures.pointing_game(attributions, masks, tolerance=pointing_tolerance).hits.astype(float)
            per_image["mask energy"] = measures.mask_energy(attributions, masks, absolute=True)
        curves = {"AUPC": aupc.curve.mean(axis=0), "deletion": deletion.curve.mean(axis=0),
                  "insertion": insertion.curve.mean(axis=0)}
        scores, intervals = _summary(per_image, seed, confidence)
        row = EvaluationRow(name, seconds, int(explanation.gradients), scores, per_image, curves, notes=row_notes,
                            ci=intervals)
        rows.append(row)
        if path is not None:
            _store_row(path, key, row, method, method_key)
        if verbose:
            print(f"  {name:<28} {seconds:7.2f}s  " + "  ".join(
                f"{k} {v:.3f}" if np.isfinite(v) else f"{k} –" for k, v in row.scores.items()))
    return rows


def _named_metrics(chosen, inputs, note) -> Dict[str, np.ndarray]:
    """Per-image values of each ``(spec, options)`` on ``inputs``; AUTVC on maps too small for it
    is NaN with a note, as in the default table; a metric undefined on some images gets a note."""
    from tfattr import metrics as measures

    count = len(inputs.images)
    per_image: Dict[str, np.ndarray] = {}
    for spec, options in chosen:
        try:
            values = np.asarray(spec.compute(inputs, **options), np.float64).ravel()
        except measures.AUTVCUndefinedError:
            height, width = measures.autvc_min_size()
            values = np.full(count, np.nan)
            note(f"AUTVC left empty: the maps are {inputs.attributions.shape[1]}×{inputs.attributions.shape[2]} "
                 f"and AUTVC needs at least {height}×{width} (two Gaussian-pyramid levels).")
        if values.shape != (count,):
            raise InvalidInputError(f"The metric {spec.name!r} must return one value per image. "
                                    + received(f"{spec.name} shape", values.shape))
        undefined = int(np.count_nonzero(~np.isfinite(values)))
        if 0 < undefined and spec.name != "autvc":
            note(f"{spec.label}: undefined (NaN) on {undefined} of {count} images; the mean and interval are over "
                 "the others.")
        per_image[spec.label] = values
    return per_image


# public names of the helpers the dataset runners (:mod:`tfattr.streaming`) share with :func:`evaluate`:
# the same model key in their recorded settings, the same per-image metric values and the same
# aggregation, so a dataset table is this module's table
#: :func:`_model_key`: a Keras model by fingerprint, wiring, layer paths (and a subclass's source)
model_key = _model_key
#: :func:`_summary`: means over the images (NaN left out) and their bootstrap intervals
summarize = _summary
#: :func:`_named_metrics`: per-image values of named metrics on one batch, with notes
named_metric_values = _named_metrics


def _file_content(structure) -> List[Any]:
    """The digests of content a method key read from files (``baseline_folder`` entries), in order."""
    found: List[Any] = []
    if isinstance(structure, dict):
        for k in sorted(structure):
            found.extend([structure[k]] if k == "baseline_folder" else _file_content(structure[k]))
    elif isinstance(structure, list):
        for item in structure:
            found.extend(_file_content(item))
    return found


def _store_row(path: str, key: str, row: EvaluationRow, method, method_key) -> None:
    """Cache ``row`` at ``path`` under ``key``; a write that fails (a read-only or full disk, a
    file where the folder should be, a folder at the row's path) is warned about and the row is
    still returned: a cache never loses a computed result. Nothing is stored when the method's own
    content read from files changed while it ran (a saved baseline folder replaced meanwhile, seen
    in the method key's ``baseline_folder`` digests): the numbers may be the new content's or the
    old's, and neither key can be trusted for them. (Other parts of a method key may legitimately
    be settled by the run, e.g. Grad-CAM's default layer on a model without symbolic outputs.)"""
    try:
        changed = _file_content(method.cache_key()) != _file_content(method_key)
    except Uncacheable:
        changed = True
    if changed:
        warnings.warn(f"{row.method!r} was computed but not cached: a saved baseline folder it reads changed "
                      "while it ran; its results are returned.", RuntimeWarning, stacklevel=3)
        return
    arrays = {f"image:{k}": np.asarray(v) for k, v in row.per_image.items()}
    arrays.update({f"curve:{k}": np.asarray(v) for k, v in row.curves.items()})
    try:
        _save_npz(path, dict(arrays, seconds=np.array(row.seconds), gradients=np.array(row.gradients),
                             key=np.array(key), notes=np.array(row.notes, dtype=str)))
    except OSError as error:
        warnings.warn(f"{row.method!r} cannot be cached at {path!r} ({type(error).__name__}: {error}); its "
                      "results are returned.", RuntimeWarning, stacklevel=3)


def merge_rows(parts: Sequence[Sequence[EvaluationRow]], seed: int = 0, confidence: float = 0.95
               ) -> List[EvaluationRow]:
    """One row per method from :func:`evaluate` runs on disjoint parts of a dataset.

    Each part is the list :func:`evaluate` returned for some of the images, all with the same
    methods in the same order. Per-image values are concatenated in part order (so ``scores``
    are means over all images, NaN ignored), mean curves are averaged weighted by each part's
    image count, seconds and gradients are summed, notes are kept once, intervals are
    bootstrapped over all images (``seed``, ``confidence`` as :func:`evaluate`). Every metric of
    :func:`evaluate` is computed per image (AUPC draws the same noise for every image of a
    batch), so evaluating images one at a time (each cached on its own) and merging gives the
    same table as one call on all of them, up to float32 rounding of batched forward passes.

    Raises:
        InvalidInputError: the parts list other methods, or in another order.
    """
    parts = [list(part) for part in parts]
    if not parts:
        raise InvalidInputError("`parts` must hold at least one list of rows. " + received("len(parts)", 0))
    names = [row.method for row in parts[0]]
    for i, part in enumerate(parts[1:], 1):
        if [row.method for row in part] != names:
            raise InvalidInputError(f"every part must list the same methods in the same order ({names}). "
                                    + received(f"parts[{i}] methods", [row.method for row in part]))
    merged = []
    for rows in zip(*parts):
        keys = [k for k in rows[0].per_image if all(k in r.per_image for r in rows)]
        per_image = {k: np.concatenate([np.atleast_1d(np.asarray(r.per_image[k], np.float64)) for r in rows])
                     for k in keys}
        sizes = np.array([len(np.atleast_1d(next(iter(r.per_image.values())))) if r.per_image else 1 for r in rows],
                         np.float64)
        curves = {k: np.average([np.asarray(r.curves[k], np.float64) for r in rows], axis=0, weights=sizes)
                  for k in rows[0].curves if all(k in r.curves for r in rows)}
        scores, intervals = _summary(per_image, seed, confidence)  # an all-NaN column (AUTVC) stays NaN
        notes = list(dict.fromkeys(note for r in rows for note in r.notes))
        merged.append(EvaluationRow(rows[0].method, float(sum(r.seconds for r in rows)),
                                    int(sum(r.gradients for r in rows)), scores, per_image, curves,
                                    cached=all(r.cached for r in rows), notes=notes, ci=intervals))
    return merged


class _Joined:
    """Metric results gathered over replicas along the image axis (``area``, ``auc``, ``curve``)."""

    def __init__(self, fields):
        for name, value in fields.items():
            setattr(self, name, value)


def format_table(rows: Sequence[EvaluationRow], columns: Optional[Sequence[str]] = None, title: str = "",
                 intervals: bool = True) -> str:
    """A Markdown table of ``rows``: each cell the mean over images ``± h``, ``h`` the half-width of
    its bootstrap interval (:meth:`EvaluationRow.half_width`; no ``±`` below two images or with
    ``intervals=False``); ↓/↑ mark lower/higher-is-better (each registered metric's direction); a
    missing or NaN score (AUTVC on maps too small for it) is an empty cell. ``columns``: default
    every column of the rows, in the order :func:`evaluate` computed them."""
    from tfattr.metrics.registry import METRICS

    direction = {spec.label: spec.arrow for spec in METRICS.values()}
    if columns is None:
        columns = list(dict.fromkeys(c for r in rows for c in r.scores))
    header = ["method"] + [f"{c} {direction.get(c, '')}".strip() for c in columns] + ["seconds", "gradients"]
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(row, column):
        value = row.scores.get(column, np.nan)
        if not np.isfinite(value):
            return ""
        half = row.half_width(column) if intervals else np.nan
        return f"{value:.3f} ± {half:.3f}" if np.isfinite(half) else f"{value:.3f}"

    for r in rows:
        cells = [r.method] + [cell(r, c) for c in columns]
        cells += [f"{r.seconds:.1f}", str(r.gradients)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class _AUPCObjective:
    """Adaptive noising's AUPC objective with ``aupc_kernel`` windows; its :meth:`cache_key` (the
    kernel and range; the model is the method's own) lets :func:`evaluate` cache the rows using it."""

    def __init__(self, model, kernel_size: int, value_range):
        self.model, self.kernel_size, self.value_range = model, kernel_size, value_range

    def __call__(self, images, attributions, sigmas, objective_seed, target):
        from tfattr import metrics

        return metrics.aupc(self.model, images, attributions, target=target, kernel_size=self.kernel_size,
                            value_range=self.value_range, seed=objective_seed, verbose=0).area

    def cache_key(self):
        return {"kernel_size": canonical(self.kernel_size), "value_range": canonical(self.value_range)}


def smoothtaylor_grid(model, value_range=None, batch_size: int = 32, adaptive: bool = True,
                      noise_sizes=(1, 5, 10, 20), sigmas=(0.3, 0.5, 0.7), roots=(100, 150, 200), seed: int = 0,
                      aupc_kernel: int = 15):
    """The SmoothTaylor paper's comparison (Goh et al. 2020, Tables I–III) as ``(name, method)`` pairs.

    IG with a zero baseline; IG_noise with ``N`` uniform-noise baselines (eq. 3); SmoothTaylor for
    every ``σ × R`` (eq. 6), with the paper's σ (ImageNet-normalised units) converted to the
    model's input units as ``σ · 0.226 · (high − low)``; adaptive noising for AUPC and AUTVC
    (Algorithm 1; its AUPC objective uses ``aupc_kernel``, scale it with the image side as for
    :func:`evaluate`). IG uses the right Riemann rule with 50 steps (the IG paper's rule and
    tfattr's default; the SmoothTaylor paper does not restate ``M`` for its tables).
    """
    from tfattr.methods import IntegratedGradients, SmoothTaylor

    value_range = resolve_value_range(value_range, model)  # None: the model's declared range, else (0, 1)
    low, high = value_range
    common = dict(batch_size=batch_size, verbose=0)
    grid = [("IG zero", IntegratedGradients(model, baseline="zero", steps=50, value_range=value_range, **common))]
    for n in noise_sizes:
        grid.append((f"IG noise N={n}", IntegratedGradients(model, baseline="uniform", n_baselines=n, steps=50,
                                                            value_range=value_range, seed=seed, **common)))
    for sigma in sigmas:
        for r in roots:
            grid.append((f"SmoothTaylor σ={sigma} R={r}", SmoothTaylor(
                model, roots=r, sigma=sigma * IMAGENET_STD * (high - low), value_range=value_range, seed=seed,
                **common)))
    if adaptive:
        aupc_objective = _AUPCObjective(model, aupc_kernel, value_range)
        for name, objective in (("AUPC", aupc_objective), ("AUTVC", "autvc")):
            grid.append((f"SmoothTaylor adaptive-{name}", SmoothTaylor(
                model, roots=150, sigma="adaptive", objective=objective, value_range=value_range, seed=seed,
                **common)))
    return grid


def guided_ig_comparison(model, layer=None, value_range=None, batch_size: int = 32, steps: int = 50):
    """The guided-IG paper's comparison (Kwon et al.): gradients, guided backprop, Grad-CAM, IG, guided IG."""
    from tfattr.methods import GradCAM, Gradient, GuidedBackprop, GuidedIntegratedGradients, IntegratedGradients

    common = dict(batch_size=batch_size, verbose=0)
    return [
        ("Gradients", Gradient(model, **common)),
        ("Guided backprop", GuidedBackprop(model, **common)),
        ("Grad-CAM", GradCAM(model, layer=layer, **common)),
        ("IG", IntegratedGradients(model, steps=steps, value_range=value_range, **common)),
        ("Guided IG", GuidedIntegratedGradients(model, steps=steps, value_range=value_range, **common)),
    ]
