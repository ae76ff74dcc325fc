"""SaliencyLogger: watch what a model learns to look at while ``model.fit`` trains it.

At the chosen times the callback explains a fixed *probe batch* with any tfattr method,
bound to the model being trained, and writes

* one TensorBoard image per probe image (``tf.summary.image``): the heatmap blended onto
  the image (:func:`tfattr.viz.overlay`), or the heatmap alone;
* one TensorBoard scalar per metric (``tf.summary.scalar``), the mean over the probe batch;
* optionally the same pictures as PNG files, written atomically (:func:`tfattr.viz.save_png`).

It follows Keras' own :class:`keras.callbacks.TensorBoard`: the summary writer is created
lazily on the first write (no event file, no folder when nothing is logged) and closed at
``on_train_end``; its run folder is ``log_dir/saliency`` beside Keras' ``train`` and
``validation`` runs when both callbacks share a ``log_dir``.
"""

from __future__ import annotations

import inspect
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from tfattr.core.inputs import ModelSpec, model_spec, validate_images, validate_value_range
from tfattr.core.noise import NoiseTunnel
from tfattr.core.result import Explanation
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import AttributionMethod
from tfattr.surgery.cloning import SyncedClone

__all__ = ["SaliencyLogger", "SaliencyLoggerWarning", "SaliencyRecord", "METRICS", "RUN_NAME"]

#: the TensorBoard run (sub-folder of ``log_dir``) the callback writes to
RUN_NAME = "saliency"

#: built-in metric names (see :class:`SaliencyLogger`)
METRICS = ("atv", "autvc", "completeness", "aupc")

MethodSpec = Union[AttributionMethod, NoiseTunnel, type, str, Callable[[keras.Model], Any]]
MetricSpec = Union[str, Tuple[str, Dict[str, Any]], Tuple[str, Callable], Callable]


class SaliencyLoggerWarning(UserWarning):
    """The callback could not log (the error is in the message) and training went on."""


@dataclass
class SaliencyRecord:
    """What one logging time produced (kept in :attr:`SaliencyLogger.history`).

    Attributes:
        step: the TensorBoard step the summaries were written at (see :class:`SaliencyLogger`).
        epoch: the 0-based epoch of ``model.fit`` it happened in.
        metrics: mean of each metric over the probe batch, by name.
        seconds: wall time of the attribution, the metrics and the writes.
    """

    step: int
    epoch: int
    metrics: Dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


# -- metrics --------------------------------------------------------------------------------
def _metric_atv(model, images, explanation, **options):
    from tfattr.metrics import atv

    return atv(explanation.numpy(), **options)


def _metric_autvc(model, images, explanation, **options):
    from tfattr.metrics import autvc

    return autvc(explanation.numpy(), **options).area


def _metric_completeness(model, images, explanation):
    relative = explanation.relative_delta
    if relative is None:
        raise InvalidInputError(
            "The metric 'completeness' is the relative completeness delta |Σ a − (f(x) − f(z))| / "
            "|f(x) − f(z)| of path methods (IntegratedGradients, SmoothTaylor, RSIGradCAM, "
            f"their NoiseTunnel smoothgrad); {explanation.method!r} reports no delta. "
            + received("metrics", "completeness")
        )
    return relative


def _metric_aupc(model, images, explanation, **options):
    from tfattr.metrics import aupc

    options.setdefault("seed", 0)
    options.setdefault("verbose", 0)
    target = options.pop("target", None)  # the logger's callable target, if it has one
    if explanation.targets is not None:  # the classes the attributions explain
        target = explanation.targets
    return aupc(model, images, explanation.numpy(), target=target, **options).area


# name -> (function, the options it accepts)
_BUILTIN = {
    "atv": (_metric_atv, {"normalize"}),
    "autvc": (_metric_autvc, {"downscale", "sigma", "min_size"}),
    "completeness": (_metric_completeness, set()),
    "aupc": (_metric_aupc, {"kernel_size", "regions", "perturbations", "value_range", "seed", "score", "batch_size"}),
}


@dataclass
class _Metric:
    name: str
    fn: Callable
    options: Dict[str, Any]
    #: a metric of :data:`tfattr.metrics.METRICS` (called with the method too)
    registered: bool = False

    def __call__(self, model, images, explanation, method=None) -> float:
        if self.registered:
            values = self.fn(model, images, explanation, method, **self.options)
        else:
            values = self.fn(model, images, explanation, **self.options)
        values = np.asarray(values, dtype=np.float64)
        if self.registered:  # the mean over the images where it is defined, as evaluate's tables
            values = values[np.isfinite(values)]
        return float(np.mean(values)) if values.size else float("nan")


def _registered(key: str, options: Dict[str, Any], entry) -> Optional[_Metric]:
    """A metric of :data:`tfattr.metrics.METRICS` by name (``None`` if there is none): computed on the
    probe batch for the explained classes, with the method itself for the metrics that re-explain."""
    from tfattr.metrics.registry import METRICS, MetricInputs

    spec = METRICS.get(key)
    if spec is None:
        return None
    if spec.needs == "masks":
        raise InvalidInputError(f"The metric {key!r} compares maps with ground-truth masks, which the logger does "
                                "not have. " + received("metrics", entry))
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise InvalidInputError(f"Metric {key!r} got unknown option(s) {unknown}; its options are "
                                f"{sorted(spec.options)}. " + received("metrics", entry))

    def compute(model, images, explanation, method, **chosen):
        inputs = MetricInputs(model=model, images=np.asarray(images), attributions=explanation.numpy(),
                              method=method, explanation=explanation, targets=explanation.targets)
        return spec.compute(inputs, **dict(spec.defaults, **chosen))

    return _Metric(_sanitize(key), compute, dict(options), registered=True)


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(name)).strip("_") or "method"


def _parse_metrics(metrics, probe: np.ndarray) -> List[_Metric]:
    if metrics is None:
        return []
    # one metric given alone; a top-level ("atv", fn) stays two metrics, so a (name, callable)
    # pair must sit in a list
    if isinstance(metrics, str) or (_is_pair(metrics) and isinstance(metrics[1], dict)) or callable(metrics):
        metrics = [metrics]
    try:
        entries = list(metrics)
    except TypeError:
        raise InvalidTypeError(
            "`metrics` must be a sequence of metric names ('atv', 'autvc', 'completeness', 'aupc'), "
            "(name, options) pairs, (name, callable) pairs or callables. " + received("metrics", metrics)
        ) from None
    parsed: List[_Metric] = []
    for entry in entries:
        name, spec = (entry if _is_pair(entry) else (None, entry))
        if isinstance(spec, str) or (name is not None and isinstance(spec, dict)):
            key = spec if isinstance(spec, str) else name
            options = {} if isinstance(spec, str) else dict(spec)
            if key not in _BUILTIN:
                named = _registered(key, options, entry)
                if named is not None:
                    parsed.append(named)
                    continue
                raise InvalidInputError(
                    f"Unknown metric {key!r}; the built-in metrics are {METRICS} and those of "
                    "tfattr.metrics.METRICS. Your own goes in as a callable "
                    "`(model, images, explanation) -> value per image` or a (name, callable) pair inside a list, "
                    "metrics=[('name', fn)]. " + received("metrics", entry)
                )
            fn, allowed = _BUILTIN[key]
            unknown = sorted(set(options) - allowed)
            if unknown:
                raise InvalidInputError(
                    f"Metric {key!r} got unknown option(s) {unknown}; its options are {sorted(allowed)}. "
                    + received("metrics", entry)
                )
            _check_metric_fits(key, options, probe)
            parsed.append(_Metric(key, fn, options))
        elif callable(spec):
            label = name if name is not None else getattr(spec, "__name__", None)
            if not label or label == "<lambda>":
                raise InvalidInputError(
                    "A callable metric needs a name for its TensorBoard tag: give it as (name, callable). "
                    + received("metrics", entry)
                )
            parsed.append(_Metric(_sanitize(label), lambda m, x, e, _fn=spec: _fn(m, x, e), {}))
        else:
            raise InvalidTypeError(
                "Each metric must be a name ('atv', 'autvc', 'completeness', 'aupc'), a (name, options) "
                "pair, a (name, callable) pair or a callable `(model, images, explanation) -> value per image`. "
                + received("metrics", entry)
            )
    names = [m.name for m in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInputError("Metric names must be unique (they are TensorBoard tags). "
                                + received("metrics", duplicates))
    return parsed


def _is_pair(entry) -> bool:
    return isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str) and (
        isinstance(entry[1], dict) or callable(entry[1]))


def _check_metric_fits(name: str, options: Dict[str, Any], probe: np.ndarray) -> None:
    height, width = probe.shape[1:3]
    if name == "autvc":
        from tfattr.metrics.smoothness import autvc_min_size

        min_size = options.get("min_size", 30)
        need = autvc_min_size(options.get("downscale", 1.5), options.get("sigma"), min_size)
        if height < need[0] or width < need[1]:
            raise InvalidInputError(
                f"The metric 'autvc' needs maps of at least {need[0]}×{need[1]} pixels (two levels of its "
                f"Gaussian pyramid, which stops below min_size={min_size} pixels per side); use 'atv' for "
                "small images or lower min_size with ('autvc', {'min_size': ...}). "
                + received("probe_images.shape", tuple(probe.shape))
            )
    if name == "aupc":
        k = options.get("kernel_size", 15)
        if isinstance(k, (int, np.integer)) and (height - k < 1 or width - k < 1):
            raise InvalidInputError(
                f"The metric 'aupc' perturbs {k}×{k} windows, which needs images larger than {k} "
                "pixels per side; pass smaller windows with ('aupc', {'kernel_size': ..., 'regions': ...}). "
                + received("probe_images.shape", tuple(probe.shape))
            )


# -- arguments ------------------------------------------------------------------------------
def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"`{name}` must be an integer ≥ {minimum}. " + received(name, value))
    return int(value)


def _probe_array(probe_images) -> np.ndarray:
    if probe_images is None:
        raise InvalidInputError(
            "`probe_images` is required: the (N, height, width, channels) batch whose attributions "
            "are logged during training. " + received("probe_images", None)
        )
    if isinstance(probe_images, (tf.Tensor, tf.Variable)):
        array = probe_images.numpy()
    elif isinstance(probe_images, (np.ndarray, list, tuple)):
        array = np.asarray(probe_images)
    else:
        raise InvalidTypeError(
            "`probe_images` must be a NumPy array or a tf.Tensor of images. "
            + received("type(probe_images)", type(probe_images).__name__)
        )
    if array.ndim != 4:
        raise InvalidInputError(
            "`probe_images` must be a batch (N, height, width, channels); add the batch axis to one "
            "image with `image[None]`. " + received("probe_images.shape", tuple(array.shape))
        )
    if array.shape[0] == 0:
        raise InvalidInputError(
            "`probe_images` is empty; pass at least one image. " + received("probe_images.shape", tuple(array.shape))
        )
    return array


def _check_targets(targets, count: int):
    if targets is None or (callable(targets) and not isinstance(targets, (np.ndarray, tf.Tensor))):
        return targets
    if isinstance(targets, (bool, np.bool_)):
        raise InvalidTypeError("`targets` must be None, an int, one int per probe image or a callable. "
                               + received("targets", targets))
    if isinstance(targets, (int, np.integer)):
        if targets < 0:
            raise InvalidInputError("`targets` must be a class index ≥ 0. " + received("targets", targets))
        return int(targets)
    array = targets.numpy() if isinstance(targets, tf.Tensor) else np.asarray(targets)
    if array.ndim == 2:
        raise InvalidInputError(
            "`targets` must hold one class index per probe image; for one-hot labels pass "
            "`labels.argmax(axis=1)`. " + received("targets.shape", tuple(array.shape))
        )
    if array.ndim != 1 or array.shape[0] != count or not np.issubdtype(array.dtype, np.integer) or (array < 0).any():
        raise InvalidInputError(
            f"`targets` must be None, an int, {count} class indices ≥ 0 (one per probe image) or a "
            "callable `outputs -> (batch,)`. " + received("targets", targets)
        )
    return array.astype(np.int64)


def _method_kind(method, method_options) -> str:
    if isinstance(method, type):
        if not issubclass(method, AttributionMethod):
            raise InvalidTypeError(
                "A method class must be a tfattr method (IntegratedGradients, Gradient, GradCAM, ...); "
                "wrap anything else, e.g. NoiseTunnel, in a factory `lambda model: NoiseTunnel(Gradient(model))`. "
                + received("method", method.__name__)
            )
        allowed = {p.name for p in inspect.signature(method).parameters.values()  # every option (tfattr.core.checks)
                   if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"model"}
        unknown = sorted(set(method_options) - allowed)
        if unknown:
            raise InvalidTypeError(
                f"{method.__name__} got unknown option(s) {unknown} in `method_options`; its options are "
                f"{sorted(allowed)}. " + received("method_options", method_options)
            )
        return "class"
    if method_options:
        raise InvalidInputError(
            "`method_options` only goes with a method class (e.g. method=IntegratedGradients, "
            "method_options={'steps': 32}); an instance or a factory already carries its options. "
            + received("method_options", method_options)
        )
    if hasattr(method, "attribute") and hasattr(method, "model"):
        return "instance"
    if callable(method):
        return "factory"
    raise InvalidTypeError(
        "`method` must be a tfattr method instance (IntegratedGradients(model)), a method class with "
        "`method_options`, or a factory `model -> method`. " + received("type(method)", type(method).__name__)
    )


def _method_by_name(name: str, method_options):
    """The class a registry name builds (``"occlusion"`` → :class:`~tfattr.Occlusion`), to be
    instantiated with ``method_options``; a name that builds no single class (``"smoothgrad"``,
    a NoiseTunnel) is a factory building it from ``method_options`` as settings (``{"samples": 8}``)."""
    from tfattr.methods.registry import COMMON_SETTINGS, entry

    item = entry(name, "method")
    if item.needs_distribution and (method_options or {}).get("baselines") is None:
        # required at the call: without it every epoch's logging would fail (a warning each, strict=False)
        raise InvalidInputError(
            f"{name!r} draws baselines from a distribution: pass them as method_options={{'baselines': array "
            "(K, H, W, C)}. " + received("method_options", method_options)
        )
    if isinstance(item.cls, type) and issubclass(item.cls, AttributionMethod):
        return item.cls
    settings = dict(method_options or {})
    allowed = set(item.reads) | set(COMMON_SETTINGS)
    unknown = sorted(set(settings) - allowed)
    if unknown:  # the build reads only its settings: another name would be dropped silently
        raise InvalidTypeError(
            f"{name!r} got unknown option(s) {unknown} in `method_options`; its settings are {sorted(allowed)}. "
            + received("method_options", method_options)
        )
    return lambda model: item.make(model, settings)


def _method_tag(method) -> str:
    if isinstance(method, NoiseTunnel):
        return f"{method.config['nt_type']}_{_method_tag(method.method)}"
    return _sanitize(getattr(method, "name", None) or type(method).__name__)


class SaliencyLogger(keras.callbacks.Callback):
    """Log the attributions of a probe batch to TensorBoard (and PNGs) while ``model.fit`` trains.

    Args:
        method: what explains the probe images, in one of four forms:

            * an **instance** bound to the model you train, ``IntegratedGradients(model, steps=32)``
              (also a :class:`~tfattr.NoiseTunnel` around one); used as it is. tfattr methods
              read the model's *current* weights at every call (guided clones through
              :func:`tfattr.surgery.synced`, layer methods through a tap on the live layer),
              so one instance follows the training. An instance bound to another model is
              used too, with a :class:`SaliencyLoggerWarning`;
            * a **class** plus ``method_options``, ``method=tfattr.IntegratedGradients,
              method_options={"steps": 32}``: instantiated on the trained model;
            * a **name** from :data:`tfattr.methods.registry.REGISTRY` (the CLI's names:
              ``"occlusion"``, ``"rise"``, ``"gradcam++"``, ``"deeplift"``, …) plus
              ``method_options``: the class it names, as above (``"smoothgrad"``: a
              NoiseTunnel, its ``method_options`` are the registry's settings, ``{"samples": 8}``);
            * a **factory** ``model -> method``, e.g. ``lambda m: NoiseTunnel(Gradient(m))``, or,
              to explain the logits of a softmax model,
              ``lambda m: IntegratedGradients(tfattr.surgery.synced(tfattr.surgery.logits_model(m)))``
              (``synced`` runs the clone with the trained weights; a bare clone is a snapshot).

            Classes and factories are bound to ``self.model`` at ``on_train_begin`` (or at the
            first logging time if the model is not built yet, as a subclassed model before its
            first batch) and the bound method is reused by every call and every later ``fit()``
            on the same model, so its compiled functions are traced once.
        probe_images: ``(N, H, W, C)`` float images (NumPy or tensor) in the model's input space.
        targets: ``None`` (the top-1 class at each logging time, which can change while the
            model learns), an int, one int per probe image (e.g. the labels: fixed targets
            make the pictures comparable over time) or a callable ``outputs -> (batch,)``.
        log_dir: TensorBoard directory; events go to ``log_dir/saliency`` (a run beside Keras'
            ``train``/``validation`` when the TensorBoard callback uses the same ``log_dir``).
            ``None`` writes no events.
        every_n_epochs: log at the end of epochs ``0, n, 2n, …`` (Keras' ``histogram_freq`` rule).
        every_n_batches: log every ``n`` training batches instead (then ``every_n_epochs``
            must stay 1 and is not used).
        overlay: ``True`` blends the heatmap onto the image; ``False`` logs the heatmap alone.
        image_dir: also write each picture as ``image_dir/<tag>/image_<i>_step_<step>.png``
            (atomically). ``None`` writes no files.
        metrics: scalars logged as ``<tag>/<metric>``, each the mean over the probe batch:

            * ``"atv"`` — average total variation of the map (:func:`tfattr.metrics.atv`),
              any map size; cheap;
            * ``"autvc"`` — area under the multi-scale ATV curve (:func:`tfattr.metrics.autvc`),
              maps of ≥ 30 pixels per side (``min_size``);
            * ``"completeness"`` — the relative completeness delta ``|Σ a − (f(x) − f(z))| /
              |f(x) − f(z)|`` of the explanation (:attr:`Explanation.relative_delta`); path
              methods only; free;
            * ``"aupc"`` — area under the perturbation curve (:func:`tfattr.metrics.aupc`,
              seed 0): ``regions × perturbations`` forward passes per image (30 × 50 by
              default, and 15×15 windows that need large images), often far more than the
              attribution itself; give options as ``("aupc", {"kernel_size": 4,
              "regions": 8, "perturbations": 10})``;
            * any metric of :data:`tfattr.metrics.METRICS` by name (``"max_sensitivity"``,
              ``"local_lipschitz_estimate"``, ``"faithfulness_correlation"``, …; those needing
              masks excepted), with its defaults, for the explained classes; the ones that
              re-explain perturbed inputs call the method again (``n_perturb_samples`` times);
            * ``(name, options)`` for a built-in with options; a callable ``(model, images,
              explanation) -> value per image`` (tag = its ``__name__``) or a ``(name, callable)``
              pair inside the list (``metrics=["atv", ("on_object", fn)]``).
        max_images: how many probe images (the first ones) get a picture; ``0`` logs metrics
            only. Attributions and metrics always use the whole probe batch.
        method_options: constructor options when ``method`` is a class.
        name: the tag prefix; default the method's name (``integrated_gradients``,
            ``gradcam``, ``smoothgrad_gradient`` for a NoiseTunnel, …).
        mode: heatmap of ``|map|`` (``"abs"``, OpenCV inferno) or signed (``"signed"``,
            blue–white–red); see :func:`tfattr.viz.overlay`. Each picture is scaled to its own
            99th percentile.
        value_range: ``(low, high)`` of the probe images, for display (and for ``"aupc"``'s
            noise unless given in its options).
        strict: ``False`` (default): an error while logging (in the method, a metric, a
            write) is reported as a :class:`SaliencyLoggerWarning` with the error, nothing is
            written for that time, and training continues. ``True`` re-raises it, which stops
            ``fit``.

    Steps: with ``every_n_epochs`` the summaries of epoch ``e`` (0-based, as Keras' ``epoch_*``
    scalars, so ``initial_epoch`` continues the axis) are written at step ``e``; with
    ``every_n_batches`` at the number of training batches done so far
    (``model.optimizer.iterations``), which keeps counting over several ``fit()`` calls.

    Tags: ``<name>/image_<i>`` (one picture per probe image ``i < max_images``, RGB uint8,
    ``H × W``) and ``<name>/<metric>``.

    Cost: nothing happens between logging times (the batch hook is only installed with
    ``every_n_batches``, so Keras keeps dispatching batch callbacks asynchronously otherwise);
    at a logging time the method runs on the probe batch only, as a plain eager call outside
    any ``tf.distribute`` replica context, with ``training=False``.

    After each logging time :attr:`history` gets a :class:`SaliencyRecord` and
    :attr:`last_explanation` holds the :class:`~tfattr.Explanation`.

    Raises:
        InvalidInputError / InvalidTypeError: at construction, for missing or malformed probe
            images, probe images that do not fit an instance's model, bad targets, intervals
            below 1, unknown metrics or options.

    Example:
        >>> logger = SaliencyLogger(tfattr.IntegratedGradients, x_val[:8], targets=y_val[:8],
        ...                         method_options={"steps": 32}, log_dir="logs",
        ...                         metrics=("atv", "completeness"))
        >>> model.fit(x, y, epochs=5, callbacks=[logger, keras.callbacks.TensorBoard("logs")])
        >>> # tensorboard --logdir logs
    """

    def __init__(
        self,
        method: MethodSpec,
        probe_images,
        targets=None,
        log_dir: Optional[Union[str, os.PathLike]] = None,
        every_n_epochs: int = 1,
        every_n_batches: Optional[int] = None,
        overlay: bool = True,
        image_dir: Optional[Union[str, os.PathLike]] = None,
        metrics: Optional[Sequence[MetricSpec]] = ("atv",),
        max_images: int = 8,
        method_options: Optional[Dict[str, Any]] = None,
        name: Optional[str] = None,
        mode: str = "abs",
        value_range: Tuple[float, float] = (0.0, 1.0),
        strict: bool = False,
    ):
        super().__init__()
        if method is None:
            raise InvalidTypeError("`method` is required (an instance, a class or a factory). "
                                   + received("method", None))
        if method_options is not None and not isinstance(method_options, dict):
            raise InvalidTypeError("`method_options` must be a dict of options. "
                                   + received("method_options", method_options))
        if isinstance(method, str):  # a name of tfattr.methods.registry: its class (options checked as a class's)
            method = _method_by_name(method, method_options)
            method_options = None if not isinstance(method, type) else method_options
        self._method_spec = method
        self.method_options = dict(method_options or {})
        self._kind = _method_kind(method, self.method_options)
        probe = _probe_array(probe_images)
        if self._kind == "instance":
            images = validate_images(probe, method.spec if hasattr(method, "spec") else model_spec(method.model),
                                     name="probe_images")
        else:
            images = validate_images(probe, ModelSpec(None, "float32", None), name="probe_images")
        self.probe_images = images.array
        self.targets = _check_targets(targets, len(self.probe_images))
        self.every_n_epochs = _positive_int(every_n_epochs, "every_n_epochs")
        if every_n_batches is not None:
            every_n_batches = _positive_int(every_n_batches, "every_n_batches")
            if self.every_n_epochs != 1:
                raise InvalidInputError(
                    "Give either `every_n_epochs` or `every_n_batches`, not both (one step axis per run). "
                    + received("every_n_epochs", every_n_epochs)
                )
            # only now a batch hook: an overridden on_train_batch_end turns off Keras' async dispatch
            self.on_train_batch_end = self._on_train_batch_end
        self.every_n_batches = every_n_batches
        if not isinstance(overlay, (bool, np.bool_)):
            raise InvalidTypeError("`overlay` must be True (heatmap on the image) or False (heatmap alone). "
                                   + received("overlay", overlay))
        self.overlay = bool(overlay)
        self.max_images = _positive_int(max_images, "max_images", minimum=0)
        if mode not in ("abs", "signed"):
            raise InvalidInputError("`mode` must be 'abs' or 'signed'. " + received("mode", mode))
        self.mode = mode
        self.value_range = validate_value_range(value_range)
        channels = self.probe_images.shape[-1]
        if (self.max_images > 0 and (log_dir is not None or image_dir is not None)) and channels not in (1, 3, 4):
            raise InvalidInputError(
                "Pictures need grey (1), RGB (3) or RGBA (4) probe images; pass max_images=0 to log "
                "metrics only. " + received("probe_images.shape", tuple(self.probe_images.shape))
            )
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.image_dir = None if image_dir is None else os.fspath(image_dir)
        for label, value in (("log_dir", log_dir), ("image_dir", image_dir)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise InvalidTypeError(f"`{label}` must be a path or None. " + received(label, value))
        if name is not None and (not isinstance(name, str) or not _sanitize(name)):
            raise InvalidInputError("`name` must be a non-empty string (the tag prefix). " + received("name", name))
        self.name = None if name is None else _sanitize(name)
        if self.name is None and self._kind == "instance":
            self.name = _method_tag(method)
        elif self.name is None and self._kind == "class":
            self.name = _sanitize(method.name)
        self.metrics = _parse_metrics(metrics, self.probe_images)
        for metric in self.metrics:
            if metric.fn is _metric_aupc:
                metric.options.setdefault("value_range", self.value_range)
                if callable(self.targets):
                    metric.options["target"] = self.targets
        self.strict = bool(strict)

        self.method = method if self._kind == "instance" else None
        self._bound_to = None  # the model the method was bound to (classes and factories)
        self._warned_foreign = False
        self._disabled = False
        self._writers: Dict[str, Any] = {}
        self._next_batch_log = 0
        self._epoch = 0
        self.history: List[SaliencyRecord] = []
        self.last_explanation: Optional[Explanation] = None

    # -- binding ------------------------------------------------------------------------------
    def _bind(self):
        """The method bound to ``self.model`` (built once per model, then reused)."""
        model = self.model
        if self._kind == "instance":
            self._check_follows(self.method, model)
            return self.method
        if self.method is not None and self._bound_to is model:
            return self.method
        if self._kind == "class":
            method = self._method_spec(model, **self.method_options)
        else:
            method = self._method_spec(model)
            if not (hasattr(method, "attribute") and hasattr(method, "model")):
                raise InvalidTypeError(
                    "The `method` factory must return a tfattr method (with `.attribute` and `.model`). "
                    + received("type(factory(model))", type(method).__name__)
                )
        spec = method.spec if hasattr(method, "spec") else model_spec(method.model)
        validate_images(self.probe_images, spec, name="probe_images")
        self._check_follows(method, model)
        self.method, self._bound_to = method, model
        if self.name is None:
            self.name = _method_tag(method)
        return method

    def _check_follows(self, method, model) -> None:
        """Warn once when ``method`` explains a model that does not follow the trained one."""
        explained = method.model
        if explained is model or self._warned_foreign:
            return
        if isinstance(explained, SyncedClone):  # a surgery clone run with the model's live weights
            own = {id(v) for v in model.variables}
            if all(id(source) in own for _, source in explained.variable_pairs):
                return
        self._warned_foreign = True
        warnings.warn(
            f"SaliencyLogger: the method explains model {getattr(explained, 'name', type(explained).__name__)!r}, "
            f"not the model being trained ({getattr(model, 'name', '?')!r}), so its attributions will not follow "
            "this training. Bind it with a class or a factory `model -> method`; for a surgery clone use "
            "`tfattr.surgery.synced(clone)`, which runs it with the trained weights.",
            SaliencyLoggerWarning,
            stacklevel=2,
        )

    def _model_ready(self) -> bool:
        return bool(getattr(self.model, "built", True))

    # -- Keras hooks --------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._disabled = False
        self._epoch = 0
        if self.every_n_batches is not None:
            done = self._iterations()
            self._next_batch_log = (done // self.every_n_batches + 1) * self.every_n_batches
        if self._kind != "instance" and self._model_ready():
            try:
                self._bind()
            except Exception as error:  # noqa: BLE001 - reported, see `strict`
                self._fail(error, "binding the method at on_train_begin", disable=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.every_n_batches is None and epoch % self.every_n_epochs == 0:
            self.log(step=int(epoch), epoch=int(epoch))

    def _on_train_batch_end(self, batch, logs=None):
        done = self._iterations()
        if done >= self._next_batch_log:
            self._next_batch_log = (done // self.every_n_batches + 1) * self.every_n_batches
            self.log(step=done, epoch=self._epoch)

    def on_train_end(self, logs=None):
        self._close_writers()

    # -- logging ------------------------------------------------------------------------------
    def _iterations(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is None:
            return 0
        return int(keras.ops.convert_to_numpy(iterations))

    def log(self, step: int, epoch: int = 0) -> Optional[SaliencyRecord]:
        """Explain the probe batch now and write everything at ``step`` (the hooks call this).

        Returns the :class:`SaliencyRecord`, or ``None`` when logging failed (and ``strict``
        is off) or the method could not be bound for this ``fit()``.
        """
        if self._disabled:
            return None
        start = time.perf_counter()
        try:
            method = self._bind()
        except Exception as error:  # noqa: BLE001 - reported, see `strict`
            self._fail(error, f"binding the method at epoch {epoch} (step {step})", disable=True)
            return None
        try:
            explanation = self._attribute(method)
            values = {metric.name: metric(method.model, self.probe_images, explanation, method)
                      for metric in self.metrics}
            pictures = self._pictures(explanation) if (self.log_dir or self.image_dir) else []
            self._write(step, values, pictures)
        except Exception as error:  # noqa: BLE001 - reported, see `strict`
            self._fail(error, f"epoch {epoch} (step {step})")
            return None
        record = SaliencyRecord(step=int(step), epoch=int(epoch), metrics=values,
                                seconds=time.perf_counter() - start)
        self.history.append(record)
        self.last_explanation = explanation
        return record

    def _attribute(self, method) -> Explanation:
        options = {"verbose": 0} if isinstance(method, (AttributionMethod, NoiseTunnel)) else {}
        explanation = method.attribute(self.probe_images, target=self.targets, **options)
        if not isinstance(explanation, Explanation):
            explanation = Explanation(attributions=np.asarray(explanation), method=self.name or "method")
        return explanation

    def _pictures(self, explanation: Explanation) -> List[np.ndarray]:
        from tfattr.viz import overlay

        attributions = explanation.numpy()
        alpha = 0.55 if self.overlay else 1.0
        count = min(self.max_images, len(self.probe_images))
        return [overlay(self.probe_images[i], attributions[i], mode=self.mode, alpha=alpha,
                        value_range=self.value_range) for i in range(count)]

    def _write(self, step: int, values: Dict[str, float], pictures: List[np.ndarray]) -> None:
        if self.log_dir is not None and (values or pictures):
            writer = self._writer()
            # record_if(True): Keras' TensorBoard callback may have pushed a batch-level condition
            with writer.as_default(), tf.summary.record_if(True):
                for i, picture in enumerate(pictures):
                    tf.summary.image(f"{self.name}/image_{i}", picture[None], step=step)
                for metric, value in values.items():
                    tf.summary.scalar(f"{self.name}/{metric}", value, step=step)
            writer.flush()  # TensorBoard shows each logging time while training goes on
        if self.image_dir is not None:
            from tfattr.viz import save_png

            for i, picture in enumerate(pictures):
                save_png(os.path.join(self.image_dir, self.name, f"image_{i}_step_{int(step):06d}.png"), picture)

    def _writer(self):
        """The summary writer, created on first use (no folder until something is written)."""
        if "saliency" not in self._writers:
            self._writers["saliency"] = tf.summary.create_file_writer(os.path.join(self.log_dir, RUN_NAME))
        return self._writers["saliency"]

    def _close_writers(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def _fail(self, error: Exception, when: str, disable: bool = False) -> None:
        """Warn with the error and go on (``strict``: close the writers and re-raise)."""
        if self.strict:
            self._close_writers()
            raise error
        self._disabled = self._disabled or disable
        text = " ".join(str(error).split())
        warnings.warn(
            f"SaliencyLogger({self.name or type(self._method_spec).__name__}) failed at {when}: "
            f"{type(error).__name__}: {text}. Nothing was logged"
            + (" during this fit()" if self._disabled else " for this step")
            + "; training continues (pass strict=True to raise).",
            SaliencyLoggerWarning,
            stacklevel=2,
        )
