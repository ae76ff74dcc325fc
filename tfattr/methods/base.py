"""The base every method stands on: options, validation, targets, the engine.

A method subclass declares its options (:attr:`AttributionMethod.options`, a tuple of
:class:`~tfattr.core.checks.Option`: name, default and the shared check from
:mod:`tfattr.core.checks`), its gradient function (:meth:`gradient_function`, the plain
input gradient unless overridden) and its rows (:meth:`_explain`). The constructor's
signature lists every option with its default (``inspect.signature(cls)``). Validation and
target resolution happen once, here, at the public boundary; each call's merged options
and state travel down as one :class:`Call`.

The protocol a wrapper such as :class:`~tfattr.NoiseTunnel` uses: :meth:`AttributionMethod.call_options`
(a checked :class:`Call`), :meth:`AttributionMethod.validate` (inputs, recording their layout in
the call), :meth:`AttributionMethod.resolve`, :meth:`AttributionMethod.explain` and
:meth:`AttributionMethod.package`.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfattr.baselines.registry import BaselineSet
from tfattr.core import checks
from tfattr.core.autotune import forward_size
from tfattr.core.checks import Option
from tfattr.core.engine import EngineResult, PathEngine, PathRows, forward_outputs
from tfattr.core.gradients import InputGradients, layers_signature
from tfattr.core.inputs import Images, ModelSpec, check_model_accepts, model_spec, validate_images, validate_inputs
from tfattr.core.keys import Uncacheable, canonical
from tfattr.core.ranges import warn_outside_value_range
from tfattr.core.result import Explanation
from tfattr.core.structure import InputsSpec
from tfattr.core.targets import Targets, resolve_output, resolve_targets, select_scores
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["AttributionMethod", "Explained", "Call", "COMMON_OPTIONS", "SelectsValues", "call_layout", "with_options"]

#: the options every method takes (documented on :class:`AttributionMethod`)
COMMON_OPTIONS: Tuple[Option, ...] = (
    Option("batch_size", "auto", checks.batch_size),
    Option("verbose", "auto", checks.verbose),
    Option("parallel_chunks", 2, checks.positive_int),
    Option("output", None),  # checked against the model's outputs (resolve_output)
    Option("fixed_inputs", None, checks.input_selection),
)


class Call(dict):
    """One call's state, passed down explicitly from :meth:`AttributionMethod.attribute` to the
    rows, the engine and the packaging: the merged, checked options (this dict) and ``layout``,
    the :class:`~tfattr.core.structure.InputLayout` of a model with several inputs (``None`` for
    one input). :meth:`replace` keeps the state while changing options; a plain ``dict`` of
    options is read as a call on one input."""

    def __init__(self, options=(), layout=None, **changes):
        super().__init__(options, **changes)
        self.layout = layout

    def replace(self, **changes) -> Call:
        """A copy with ``changes`` to the options (the state kept)."""
        return Call(self, layout=self.layout, **changes)


def call_layout(config):
    """The input layout of a call (``None`` for a plain dict of options: one input)."""
    return getattr(config, "layout", None)


def with_options(config, **changes) -> Call:
    """``config`` (a :class:`Call` or a plain dict of options) with ``changes``, its state kept."""
    return Call(config, layout=call_layout(config), **changes)


class Explained(dict):
    """What :meth:`AttributionMethod._explain` returns: ``attributions`` (float64) plus optional
    ``delta``, ``baseline_scores``, ``gradients``, ``info`` and ``targets`` (the classes explained,
    when the engine picked top-1 classes in the gradient pass)."""


class AttributionMethod:
    """Base class: ``method.attribute(inputs, target=None, **options) -> Explanation``.

    Args:
        model: a Keras 3 model (TensorFlow backend) taking one image batch.
        batch_size: points per forward+backward pass: ``"auto"`` (default) measures the speed of
            a few sizes on the first calls' own rows (nothing is computed twice) and keeps the
            fastest for the process, per model, gradient function, input shape and device, capped
            at 64 points on a CPU and 1024 with a GPU (:func:`tfattr.core.autotune.configure`
            changes the cap, adds a byte budget or an on-disk cache); an integer fixes it (the
            memory bound: ``parallel_chunks × batch_size`` points). Results do not depend on it
            beyond float32 rounding (chunk composition changes the last bits of a batched pass);
            for bit-identical repeats of a call, fix an integer: under ``"auto"`` the first calls
            of a process run other sizes while measuring.
        parallel_chunks: chunks of ``batch_size`` points in flight at once (default 2; ``1`` runs
            them one after the other and halves the peak memory); results do not depend on it.
            The chunks run the compiled model concurrently; a model whose forward pass writes
            its variables (a Keras variable's ``assign_add`` is a read then a write; Keras random
            layers advance a seed variable) is found in the traced graph and runs its chunks
            one at a time, so no write is lost. Inference-mode layers (BatchNorm, Dropout) write
            nothing.
        verbose: progress bar: ``"auto"`` (long runs only), ``1`` or ``0``.
        output: for a model with several outputs (a list or a dict), the explained one: an
            index, or a name (a dict key, or an output layer's name). ``target`` then refers to
            that output (its classes; ``None`` is its top-1; a callable receives it alone).
            Required unless ``target`` is a callable (which then receives every output); checked
            against the model before it runs (see :mod:`tfattr.core.targets`).
        fixed_inputs: for a model with several inputs, the inputs (names or indices) whose path
            stays at the input (baseline = input, attribution 0): masks, token ids, side
            information. Integer inputs must be fixed (or explained at the layer that consumes
            them with :class:`~tfattr.methods.layer.LayerIntegratedGradients`).
        **options: the method's own options (see its docstring and ``inspect.signature``); each
            can also be given to :meth:`attribute` to override it for one call.
    """

    name = "method"
    #: the method's own options (name, default, check), declared by each class in full: a subclass
    #: lists what it takes rather than inheriting options and rejecting some
    options: Tuple[Option, ...] = ()
    #: every option of the class (:attr:`options` then :data:`COMMON_OPTIONS`), by name; built by
    #: ``__init_subclass__``, which also sets the class's ``__signature__``
    option_table: Dict[str, Option] = checks.options_by_name(COMMON_OPTIONS)
    #: how the engine combines a row's gradient: "path" (× (x − z)), "plain", "stieltjes" or
    #: "stieltjes_trapezoid" (see :class:`~tfattr.core.engine.PathEngine`); :meth:`combine_for`
    #: may pick it per call from the options
    combine = "path"
    #: ask the engine for the differentiated values at α = 1 (layer activations of the input)
    collect_endpoint = False
    #: ask the engine for per-example sums of squared row contributions (Monte-Carlo errors)
    collect_squares = False
    #: every row is at the input itself (α = 1): ``target=None`` picks the top-1 class in the
    #: gradient pass (no forward pass of its own); ``_explain`` returns the classes as ``targets``
    top1_in_rows = False
    #: takes models with several inputs (packed per example, see :mod:`tfattr.core.structure`)
    several_inputs = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.options
        if isinstance(own, dict):  # the former declaration {name: default}: options without a check
            cls.options = own = tuple(Option(name, default) for name, default in own.items())
        cls.option_table = checks.options_by_name(tuple(own) + COMMON_OPTIONS)
        cls.__signature__ = checks.signature_with_options(cls.__init__, cls.option_table.values())

    def __init__(self, model, **options):
        if not callable(model):
            raise InvalidTypeError(
                "`model` must be a Keras model (callable on a batch). " + received("type(model)", type(model).__name__)
            )
        self.model = model
        self.spec = model_spec(model, several=True)
        self._layers = layers_signature(model)  # a Sequential add/pop after this is refused, not explained stale
        self.config = self._merge(checks.defaults(self.option_table), options)
        self._given_options = dict(options)  # as the user gave them, for with_model
        self._engines: Dict[Any, PathEngine] = {}
        self._engine_lock = threading.Lock()  # replicas of tfattr.distribute share the method

    # -- another model -----------------------------------------------------------------------
    def with_model(self, model) -> AttributionMethod:
        """The same method with the same options, bound to another ``model`` (e.g. a copy of this
        one with some weights randomised, :func:`tfattr.metrics.model_parameter_randomisation`).

        Options are passed as they were given to the constructor (not resolved against this
        method's model, so defaults that read the model, such as ``value_range``, are read from
        the new one); a layer given by object or found by default is passed by name, so the new
        model must have a layer of that name (``keras.models.clone_model`` keeps names).

        Example:
            >>> Gradient(model).with_model(other_model).attribute(images)
        """
        return type(self)(model, **self._constructor_arguments(), **self._given_options)

    def _constructor_arguments(self) -> Dict[str, Any]:
        """Constructor arguments besides the model and the options (a method's ``layer``)."""
        return dict(getattr(self, "_layer_arguments", {}))

    # -- options ---------------------------------------------------------------------------
    def call_options(self, **overrides) -> Call:
        """The options of one call: the constructor's with ``overrides``, each checked by its
        option's check (:mod:`tfattr.core.checks`), then together (:meth:`check_combination`).
        A model whose layers changed since the method was made (a Sequential ``add``/``pop``) is
        refused: the method's input spec, engines and clones describe the former layers."""
        if layers_signature(self.model) != self._layers:
            raise InvalidInputError(
                f"The model's layers changed (e.g. a Sequential add/pop) after this {type(self).__name__} was "
                "made; make the method again for the changed model. "
                + received("model", getattr(self.model, "name", type(self.model).__name__)))
        return self._merge(self.config, overrides)

    def _merge(self, base: Dict[str, Any], overrides: Dict[str, Any]) -> Call:
        merged = Call(checks.resolve_options(type(self).__name__, self.option_table, base, overrides))
        merged["batch_size"] = merged["batch_size"] if merged["batch_size"] == "auto" else int(merged["batch_size"])
        if merged["output"] is not None:
            resolve_output(merged["output"], self.spec, callable_target=True)
        self.check_combination(merged)
        return merged

    def check_combination(self, config: Call) -> None:
        """Checks that need several options or the model (each option alone is checked by its
        :class:`~tfattr.core.checks.Option`); may resolve defaults in place (``value_range``)."""

    def combine_for(self, config: Dict[str, Any]) -> str:
        """The engine combination for a call with ``config`` (default: the class's ``combine``)."""
        return self.combine

    # -- gradients -------------------------------------------------------------------------
    @property
    def forward_model(self):
        """What forward passes and input gradients call: the model itself (layer-space methods: the
        model with one layer fed the path's point, :class:`~tfattr.core.gradients.LayerInjection`)."""
        return self.model

    def gradient_function(self, score_fn=None):
        """The gradient function handed to the engine; guided/layer methods override it."""
        return InputGradients(self.forward_model, score_fn)

    def engine(self, targets: Targets, config: Dict[str, Any], collect_rows: bool = False) -> PathEngine:
        """A cached :class:`PathEngine` for the target kind (callables get their own); with
        ``collect_rows`` one that also returns every row's gradient and values."""
        key = ("index", collect_rows) if targets.score_fn is None else ("callable", targets.score_fn, collect_rows)
        if targets.output is not None:
            key += ("output", targets.output)
        with self._engine_lock:
            return self._engine(key, targets, config, collect_rows)

    def _engine(self, key, targets: Targets, config: Dict[str, Any], collect_rows: bool) -> PathEngine:
        engine = self._engines.get(key)
        if engine is None:
            if targets.score_fn is not None:  # keep one callable engine at a time
                for old in [k for k in self._engines if k[0] == "callable"]:
                    del self._engines[old]
            engine = PathEngine(self.gradient_function(targets.scorer), combine=self.combine,
                                collect_endpoint=self.collect_endpoint, collect_squares=self.collect_squares,
                                collect_rows=collect_rows)
            self._engines[key] = engine
        engine.batch_size = config["batch_size"]
        engine.parallel_chunks = int(config["parallel_chunks"])
        engine.verbose = config["verbose"]
        return engine

    # -- several inputs ------------------------------------------------------------------------
    def validate(self, inputs, config: Call, name: str = "inputs") -> Images:
        """``inputs`` checked against the model: one batch (:func:`~tfattr.core.inputs.validate_images`)
        or several inputs packed (:func:`~tfattr.core.inputs.validate_inputs`); the call's
        ``config.layout`` is set to their layout (``None`` for one input)."""
        if self.spec.inputs is None:
            fixed = config.get("fixed_inputs")
            if fixed is not None and not (isinstance(fixed, (list, tuple)) and len(fixed) == 0):  # ignoring it would explain what the caller fixed
                raise InvalidInputError(
                    "`fixed_inputs` names inputs of a model with several inputs; this model has one input "
                    "(fixing it leaves nothing to explain). " + received("fixed_inputs", fixed))
            config.layout = None
            return validate_images(inputs, self.spec, name=name)
        if not self.several_inputs:
            raise InvalidTypeError(
                f"{type(self).__name__} explains models with one image input; this model has inputs "
                f"{list(self.spec.inputs.names)}. Use IntegratedGradients, Gradient, SmoothTaylor or "
                "LayerIntegratedGradients. " + received("model.inputs", list(self.spec.inputs.names)))
        images = validate_inputs(inputs, self.spec, config.get("fixed_inputs"), name=name)
        config.layout = images.layout
        return images

    def free_values(self, images: Images) -> np.ndarray:
        """The values a path moves (every value of one input; the non-fixed inputs of several)."""
        if images.layout is None:
            return images.array
        return images.array[:, ~images.layout.fixed_mask()]

    # -- forward passes ---------------------------------------------------------------------
    def scores(self, x: tf.Tensor, targets: Targets, batch_size: int, example_of_row: Optional[np.ndarray] = None,
               layout=None) -> np.ndarray:
        """Explained score of each row of ``x``; row ``r`` uses the target of ``example_of_row[r]``
        (``layout``: the call's, for packed several inputs)."""
        example_of_row = np.arange(int(x.shape[0])) if example_of_row is None else example_of_row
        if targets.score_fn is None:
            outputs = forward_outputs(self.forward_model, x, batch_size, targets.output, layout)
            return outputs[np.arange(len(outputs)), targets.indices[example_of_row]]
        values = []
        batch_size = forward_size(batch_size)
        for start in range(0, int(x.shape[0]), batch_size):
            batch = x[start : start + batch_size]
            out = self.forward_model(batch if layout is None else layout.unpack(batch), training=False)
            values.append(np.asarray(select_scores(out, None, targets.scorer), dtype=np.float64))
        return np.concatenate(values)

    def check_fits(self, x: tf.Tensor) -> None:
        """A model that tells its input shape only when called (subclassed, or a Sequential without
        ``Input``) runs once on one example of each new input shape before any other work, so a
        misfit raises an error naming ``inputs`` (:func:`~tfattr.core.inputs.check_model_accepts`)."""
        if self.spec.input_shape is not None or self.spec.inputs is not None:
            return
        accepted = self.__dict__.setdefault("_accepted_inputs", set())
        key = (tuple(x.shape[1:]), x.dtype.name)
        if key not in accepted:
            with self._engine_lock:  # replicas of tfattr.distribute share the method (and may build the model)
                if key not in accepted:
                    self.spec = check_model_accepts(self.model, x)
                    self._layers = layers_signature(self.model)  # a model built by this call may add layers
                    accepted.add(key)

    def resolve(self, x: tf.Tensor, target, batch_size: int, output=None, layout=None):
        """Resolve ``target`` (of ``output``) on ``x`` and return ``(Targets, f(x))`` from one forward pass."""
        self.check_fits(x)
        is_callable = callable(target) and not isinstance(target, (np.ndarray, tf.Tensor))
        output, _ = resolve_output(output, self.spec, callable_target=is_callable)
        if is_callable:
            targets = Targets(None, target, output)
            return targets, self.scores(x, targets, batch_size, layout=layout)
        outputs = forward_outputs(self.forward_model, x, batch_size, output, layout)
        targets = resolve_targets(target, outputs, int(x.shape[0]), output=output)
        return targets, outputs[np.arange(len(outputs)), targets.indices]

    def to_model_dtype(self, array: np.ndarray, layout=None) -> tf.Tensor:
        """``array`` as a tensor of the model's input dtype (packed several inputs: ``layout``'s)."""
        return tf.convert_to_tensor(np.asarray(array), dtype=self.spec.input_dtype if layout is None
                                    else layout.packed_dtype)

    # -- the integration shared by path methods ---------------------------------------------
    def integrate(self, x: tf.Tensor, baselines: BaselineSet, targets: Targets, rows: PathRows, config,
                  collect_rows: bool = False) -> EngineResult:
        """Run ``rows`` through the engine with ``baselines`` (flattened)."""
        layout = call_layout(config)
        flat = self.to_model_dtype(baselines.flat(), layout)
        indices = targets.indices if targets.indices is not None else np.zeros(int(x.shape[0]), np.int32)
        return self.engine(targets, config, collect_rows).integrate(
            x, flat, indices, rows, relative=baselines.relative, clip=baselines.clip, scale=baselines.scale,
            combine=self.combine_for(config), layout=layout)

    def baseline_scores(self, x: tf.Tensor, baselines: BaselineSet, targets: Targets, rows: PathRows,
                        result: EngineResult, config) -> np.ndarray:
        """``f(z)`` averaged over each example's baselines.

        Reuses the scores of rows at ``α = 0`` (the baseline itself) when every baseline has
        one; otherwise runs forward passes over the baselines.
        """
        num_examples = int(rows.example.max()) + 1
        count = baselines.count
        at_start = rows.alpha == 0.0
        if at_start.any():
            per_pair = {}
            for e, b, s in zip(rows.example[at_start], rows.baseline[at_start], result.row_scores[at_start]):
                per_pair[(int(e), int(b))] = s
            if len(per_pair) == num_examples * count:
                table = np.zeros((num_examples, count))
                for (e, b), s in per_pair.items():
                    table[e, b % count] = s
                return table.mean(axis=1)
        layout = call_layout(config)
        if layout is not None and any(layout.fixed):  # fixed inputs stay at the input in f(z) too
            x_host, mask = x.numpy(), layout.fixed_mask()
            table = []
            for e in range(num_examples):
                starts = baselines.materialize(x_host[e : e + 1], None if baselines.scale is None
                                               else baselines.scale[e : e + 1])
                starts = starts[e if baselines.per_example and not baselines.relative else 0]
                starts = np.where(mask, x_host[e], starts)
                table.append(self.scores(self.to_model_dtype(starts, layout), targets, config["batch_size"],
                                         np.full(count, e), layout))
            return np.stack(table).mean(axis=1)
        if baselines.relative:  # build each example's baselines only when needed
            x_host = x.numpy()
            table = np.stack([
                self.scores(self.to_model_dtype(baselines.materialize(
                    x_host[e : e + 1], None if baselines.scale is None else baselines.scale[e : e + 1])[0], layout),
                            targets, config["batch_size"], np.full(count, e), layout)
                for e in range(num_examples)
            ])
            return table.mean(axis=1)
        flat = self.to_model_dtype(baselines.flat(), layout)
        if baselines.per_example:
            owner = np.repeat(np.arange(num_examples), count)
            shared = self.scores(flat, targets, config["batch_size"], owner, layout)
            return shared.reshape(num_examples, count).mean(axis=1)
        if targets.score_fn is not None:
            shared = self.scores(flat, targets, config["batch_size"], layout=layout)
            return np.full(num_examples, shared.mean())
        outputs = forward_outputs(self.forward_model, flat, config["batch_size"], targets.output, layout)
        return outputs[:, targets.indices].mean(axis=0)

    # -- the public verb ----------------------------------------------------------------------
    def attribute(self, inputs, target=None, **options) -> Explanation:
        """Explain ``inputs`` for ``target``.

        Args:
            inputs: ``(N, H, W, C)`` float images (or one ``(H, W, C)`` image), NumPy or tensor.
            target: ``None`` (top-1 class), an int, one int per example, or a callable
                ``outputs -> (batch,)`` score (see :mod:`tfattr.core.targets`); of the output
                chosen by the ``output`` option for a model with several outputs.
            **options: override any of the method's options for this call.

        Returns:
            An :class:`~tfattr.core.result.Explanation`.
        """
        config = self.call_options(**options)
        images = self.validate(inputs, config)
        if self.uses_value_range(config):  # once per call, where noise or baselines are drawn in it
            warn_outside_value_range(self.free_values(images), config["value_range"], stacklevel=2)
        x = self.to_model_dtype(images.array, config.layout)
        self.check_fits(x)
        is_callable = callable(target) and not isinstance(target, (np.ndarray, tf.Tensor))
        output, num_classes = resolve_output(config["output"], self.spec, callable_target=is_callable)
        if self._explicit_classes(target, num_classes):
            # no forward pass needed: methods read f(x) off their rows at α = 1 or compute it
            targets, fx = resolve_targets(target, None, images.batch_size, num_classes, output=output), None
        elif target is None and self.top1_in_rows and num_classes is not None:
            # class -1: each row's top-1, picked in the gradient pass at x (one forward+backward in all)
            targets, fx = Targets(np.full(images.batch_size, -1, np.int32), None, output), None
        else:
            targets, fx = self.resolve(x, target, config["batch_size"], output, config.layout)
        out = self.explain(x, targets, fx, config)
        if out.get("targets") is not None and targets.indices is not None:
            targets = replace(targets, indices=np.asarray(out["targets"], np.int32))
        return self.package(out, images, targets, fx, config)

    def explain(self, x: tf.Tensor, targets: Targets, fx: Optional[np.ndarray], config: Call) -> Explained:
        """The method's work on validated, model-dtype inputs ``x`` (packed several inputs: see
        ``config.layout``) for resolved ``targets``; ``fx`` the explained scores if known. Returns
        the raw :class:`Explained` (float64 attributions in ``x``'s flat shape) that
        :meth:`package` turns into an :class:`~tfattr.core.result.Explanation`. Public for wrappers
        (:class:`~tfattr.NoiseTunnel`); subclasses implement ``_explain``."""
        return self._explain(x, targets, fx, config)

    def package(self, out: Explained, images: Images, targets: Targets, fx: Optional[np.ndarray],
                config: Call) -> Explanation:
        """:meth:`explain`'s output as the :class:`~tfattr.core.result.Explanation` of ``images``
        (their structure, dtype and single-example form)."""
        return self._package(out, images, targets, fx, config)

    def uses_value_range(self, config: Dict[str, Any]) -> bool:
        """Whether ``config["value_range"]`` enters this call's attributions (noise or baselines drawn
        in it); only then do inputs outside it raise a :class:`~tfattr.errors.ValueRangeWarning`."""
        return config.get("value_range") is not None

    def _explicit_classes(self, target, num_classes) -> bool:
        if target is None or num_classes is None:
            return False
        if callable(target) and not isinstance(target, (np.ndarray, tf.Tensor)):
            return False
        return True

    @staticmethod
    def scores_at_input(rows: PathRows, result: EngineResult, num_examples: int) -> Optional[np.ndarray]:
        """``f(x)`` per example from the rows at ``α = 1`` (averaged over baselines), or ``None``
        when some example has no such row."""
        at_input = rows.alpha == 1.0
        counts = np.bincount(rows.example[at_input], minlength=num_examples)
        if np.any(counts == 0):
            return None
        return np.bincount(rows.example[at_input], weights=result.row_scores[at_input], minlength=num_examples) / counts

    def _explain(self, x: tf.Tensor, targets: Targets, fx: np.ndarray, config) -> Explained:
        raise NotImplementedError

    def describe(self, config) -> str:
        return self.name

    #: options that only schedule the work; no attribution depends on them (see ``parallel_chunks``)
    scheduling_options = ("verbose", "parallel_chunks")

    def cache_key(self, config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Everything, besides the model and the inputs, that determines this method's attributions.

        A JSON-ready structure (:func:`tfattr.core.keys.canonical`): the method's class and every
        option of ``config`` (default: the constructor's) except :attr:`scheduling_options`,
        arrays by content hash, plus :meth:`_cache_state` (a Grad-CAM layer, a saved baseline
        folder's content). Result caches (:func:`tfattr.evaluation.evaluate`) add the model's
        fingerprint and the inputs.

        Raises:
            tfattr.core.keys.Uncacheable: an option is a callable without a content key (a
                custom baseline function, a custom objective), or ``seed=None`` (fresh random
                draws on every run): such a result is not reproducible from its key.
        """
        config = self.config if config is None else config
        options = {k: v for k, v in dict(config).items() if k not in self.scheduling_options
                   and not (k == "fixed_inputs" and v is None)}
        if "seed" in options and options["seed"] is None:
            raise Uncacheable("seed=None draws fresh random numbers on every run")
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}",
                "options": {k: canonical(v, k) for k, v in sorted(options.items())},
                "state": canonical(self._cache_state(config), "state")}

    def _cache_state(self, config: Dict[str, Any]) -> Dict[str, Any]:
        """What besides the options determines the attributions (subclasses extend it)."""
        return {}

    def _package(self, out: Explained, images: Images, targets: Targets, fx: np.ndarray, config) -> Explanation:
        delta = out.get("delta")
        baseline_scores = out.get("baseline_scores")
        scores = out.get("scores", fx)
        if images.layout is not None:
            attributions = self._unpack_attributions(out["attributions"], images)
        else:
            attributions = out["attributions"].astype(images.array.dtype)
            if images.single:
                attributions = attributions[0]
            if images.as_tensor:
                attributions = tf.convert_to_tensor(attributions)
        return Explanation(
            attributions=attributions,
            method=self.describe(config),
            targets=targets.indices,
            scores=scores,
            baseline_scores=baseline_scores,
            delta=delta,
            gradients=int(out.get("gradients", 0)),
            single=images.single,
            info=dict(out.get("info", {})),
        )

    @staticmethod
    def _unpack_attributions(packed: np.ndarray, images: Images):
        """Packed ``(N, D)`` attributions of several inputs in the caller's structure (list, tuple
        or dict), each in its input's float dtype (integer inputs: the packed dtype)."""
        layout = images.layout
        parts = []
        for part, dtype in zip(layout.unpack_host(packed), layout.dtypes):
            dtype = dtype if tf.as_dtype(dtype).is_floating else layout.packed_dtype
            part = part.astype(dtype)
            part = part[0] if images.single else part
            parts.append(tf.convert_to_tensor(part) if images.as_tensor else part)
        if images.container == "dict":
            return dict(zip(layout.names, parts))
        return tuple(parts) if images.container == "tuple" else parts


class SelectsValues:
    """Mixin of the methods whose rows *select* values (``x``'s or a baseline's) instead of
    interpolating them (feature ablation, coalitions): they take integer inputs too (token ids),
    a group of which is replaced by the baseline's integers, never interpolated. Put it before the
    method's base class: ``class M(SelectsValues, AttributionMethod)``."""

    def validate(self, inputs, config, name: str = "inputs"):
        several = self.spec.inputs
        if several is None:
            if self.spec.input_dtype is None or tf.as_dtype(self.spec.input_dtype).is_floating:
                return super().validate(inputs, config, name)
            symbolic = list(getattr(self.model, "inputs", None) or [])
            if len(symbolic) != 1:
                return super().validate(inputs, config, name)
            tensor = symbolic[0]
            several = InputsSpec("single", (getattr(tensor, "name", None) or "input",), (tuple(tensor.shape)[1:],),
                                 (tf.as_dtype(tensor.dtype).name,))
        spec = ModelSpec(None, self.spec.input_dtype, self.spec.num_classes, self.spec.output_kind,
                         self.spec.output_names, self.spec.output_classes, inputs=several)
        images = validate_inputs(inputs, spec, config.get("fixed_inputs"), name=name, integers=True)
        config.layout = images.layout
        return images

    @staticmethod
    def _unpack_attributions(packed, images):
        parts = AttributionMethod._unpack_attributions(packed, images)
        return parts[0] if images.container == "single" else parts  # one integer input: its array

