"""Integrated Gradients in the space of a hidden layer (text models through their embedding).

``LayerIG_j(x) = (a_j(x) − a'_j) · ∫₀¹ ∂F(a' + α(a(x) − a'))/∂a_j dα``, eq. (1) of
Sundararajan et al. 2017 with the layer's activations ``a`` as the input of ``F``, the part of
the model above the layer (captum's ``LayerIntegratedGradients``). Completeness holds in that
space: ``Σ_j LayerIG_j = F(a(x)) − F(a') = f(x) − f(baseline)``.

The path runs on the engine's rows like every path method: the batch is packed as the model's
inputs (held fixed at ``x``) plus the layer's activations (interpolated), and the model runs on
its real inputs with the layer fed the path's point (:class:`~tfattr.core.gradients.LayerInjection`),
so token ids are never interpolated and masks, skip connections and other inputs stay those of
``x``.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from tfattr.core import checks
from tfattr.core.autotune import forward_size
from tfattr.core.checks import Option
from tfattr.core.gradients import LayerInjection
from tfattr.core.inputs import ModelSpec, validate_inputs
from tfattr.core.layers import find_layer
from tfattr.core.ranges import resolve_value_range
from tfattr.core.structure import InputLayout, InputsSpec, inputs_spec
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import Call
from tfattr.methods.integrated_gradients import BASELINE_OPTIONS, IG_OPTIONS, IntegratedGradients

__all__ = ["LayerIntegratedGradients", "LayerConductance", "reduce_last_axis"]

_ATTRIBUTE_TO = ("output", "input")
_REDUCE = (None, "sum", "norm")


def _conductance_rule(name, value):
    """LayerConductance's ``rule``: ``"right"`` or ``"left"`` (``"riemann_right"``, its former value,
    means ``"right"``)."""
    rule = LayerConductance._RULE_SYNONYMS.get(value, value) if isinstance(value, str) else value
    if not isinstance(rule, str) or rule not in LayerConductance.RULES:
        raise InvalidInputError(f"LayerConductance's `{name}` must be one of {list(LayerConductance.RULES)} (the end "
                                "of each interval where the gradient is taken). " + received(name, value))


def _input_baseline(name, value):
    """``None``, a number, or inputs of the model's structure (an array, a list/tuple or a dict)."""
    if value is None or isinstance(value, (list, tuple, dict, np.ndarray, tf.Tensor)):
        return
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return
    raise InvalidTypeError(f"`{name}` must be a number or inputs of the model's structure. " + received(name, value))


def reduce_last_axis(attributions, reduce: Optional[str] = "sum"):
    """Per-position scores from layer attributions ``(…, E)``: ``"sum"`` the signed sum over the
    last axis (per-token scores of an embedding; they add up to the completeness total),
    ``"norm"`` its L2 norm (magnitude only), ``None`` unchanged.

    Example:
        >>> reduce_last_axis(np.ones((2, 5, 8)), "norm").shape
        (2, 5)
    """
    if reduce not in _REDUCE:
        raise InvalidInputError(f"`reduce` must be one of {_REDUCE}. " + received("reduce", reduce))
    if reduce is None:
        return attributions
    array = np.asarray(attributions, dtype=np.float64)
    out = array.sum(axis=-1) if reduce == "sum" else np.sqrt((array**2).sum(axis=-1))
    return out.astype(np.asarray(attributions).dtype)


class LayerIntegratedGradients(IntegratedGradients):
    """Integrated Gradients at a layer's output (or input): the attributions have the layer's shape.

    Args:
        model: a Keras model with symbolic inputs (Functional or Sequential with ``Input``); one
            input or several, integer inputs (token ids) included: inputs are never interpolated.
        layer: the layer, as for Grad-CAM: a name, a nested path ``"encoder/embedding"``, an index
            into ``model.layers`` or the layer object. It must run once per forward pass and have a
            float output (``attribute_to="input"``: a float input).
        attribute_to: ``"output"`` (default): the path runs in the layer's output space;
            ``"input"``: in its input space (the layer itself is differentiated too).

    Options (besides :class:`IntegratedGradients`'s ``steps``, ``rule``, ``tolerance``, …):
        baseline: the path's start *in the layer's space*: ``"zero"`` (default), a number, an
            array of the layer's shape (``(…)``, ``(N, …)``), ``"uniform"``/``"gaussian"`` draws.
        input_baseline: instead, start at the layer's activations on baseline *inputs*: a number
            (every input filled with it, e.g. ``0`` the padding token of a text model) or inputs
            of the model's structure. ``None`` (default): use ``baseline``.
        reduce: ``None`` (default: the layer's shape), ``"sum"`` (signed sum over the last axis:
            one score per token of an embedding) or ``"norm"`` (its L2 norm).

    ``Explanation.delta`` is ``Σ attributions − (f(x) − f(z))`` with ``f(z)`` the model's score
    with the layer at the baseline activations and every input at ``x`` (the path's start; with
    ``input_baseline`` this is ``f(baseline inputs)`` wherever the layer is the only way the inputs
    reach the output).

    Example:
        >>> lig = LayerIntegratedGradients(text_model, layer="embedding", input_baseline=0, reduce="sum")
        >>> lig.attribute(token_ids, target=1).attributions   # (N, T) per-token scores
    """

    name = "layer_integrated_gradients"
    noise_tunnel = False  # attributions in the layer's shape, path in its space
    options = IntegratedGradients.options + (Option("input_baseline", None, _input_baseline),
                                             Option("reduce", None, checks.choices(*_REDUCE)))

    def __init__(self, model, layer, attribute_to: str = "output", **options):
        if attribute_to not in _ATTRIBUTE_TO:
            raise InvalidInputError(f"`attribute_to` must be one of {_ATTRIBUTE_TO}. "
                                    + received("attribute_to", attribute_to))
        super().__init__(model, **options)
        several = self.spec.inputs or inputs_spec(model)
        if several is None:
            symbolic = list(getattr(model, "inputs", None) or [])
            if len(symbolic) != 1:
                raise InvalidTypeError(
                    "LayerIntegratedGradients needs a model with symbolic inputs (a Functional model or a "
                    "Sequential starting with keras.Input). " + received("type(model)", type(model).__name__))
            tensor = symbolic[0]
            several = InputsSpec("single", (getattr(tensor, "name", None) or "input",), (tuple(tensor.shape)[1:],),
                                 (tf.as_dtype(tensor.dtype).name,))
        self.model_inputs = several
        self.layer = find_layer(model, layer)
        self.attribute_to = attribute_to
        self._layer_arguments = {"layer": self.layer.name, "attribute_to": attribute_to}
        kind, names = several.kind, several.names

        def model_inputs(items):
            return items[0] if kind == "single" else (dict(zip(names, items)) if kind == "dict" else list(items))

        self._injection = LayerInjection(model, self.layer, attribute_to, model_inputs)

    @property
    def forward_model(self):
        return self._injection

    def describe(self, config) -> str:
        return super().describe(config).replace(self.name + "(", f"{self.name}(layer={self.layer.name}, ", 1)

    def _cache_state(self, config):
        return dict(super()._cache_state(config), layer=self.layer.name, attribute_to=self.attribute_to)

    def uses_value_range(self, config) -> bool:
        return False  # the inputs are not perturbed; layer-space baselines are the user's

    # -- the layer's space -----------------------------------------------------------------
    def _real_inputs(self, inputs, name: str):
        spec = ModelSpec(None, "float32", None, inputs=self.model_inputs)
        return validate_inputs(inputs, spec, fixed_inputs=list(range(len(self.model_inputs.names))), name=name,
                               allow_all_fixed=True)

    def activations(self, images, batch_size: int) -> np.ndarray:
        """The layer's output (or input) on validated inputs, ``(N, …)``, in batches."""
        layout = images.layout
        parts = layout.unpack_host(images.array)
        out = []
        for start in range(0, images.batch_size, batch_size):
            items = [tf.convert_to_tensor(p[start : start + batch_size], dtype=d) for p, d in zip(parts, layout.dtypes)]
            value = self._injection.capture(self._injection.model_inputs(items))
            if isinstance(value, (list, tuple, dict)) or not hasattr(value, "dtype"):
                raise InvalidInputError(
                    f"Layer {self.layer.name!r} has several {self.attribute_to}s; layer attributions need one "
                    "tensor. " + received("layer", self.layer.name))
            if not tf.as_dtype(value.dtype).is_floating:
                raise InvalidInputError(
                    f"Layer {self.layer.name!r} has a {tf.as_dtype(value.dtype).name} {self.attribute_to}: a path needs "
                    "float values (for token ids, attribute to the Embedding's output). "
                    + received("layer", self.layer.name))
            out.append(np.asarray(value))
        return np.concatenate(out, axis=0)

    def attribute(self, inputs, target=None, **options):
        """Explain ``inputs`` (the model's own inputs) at the layer; see
        :meth:`tfattr.methods.base.AttributionMethod.attribute`."""
        config = self.call_options(**options)
        real = self._real_inputs(inputs, "inputs")
        size = forward_size(config["batch_size"])  # forward passes only
        active = self.activations(real, size)
        start_baseline = config["baseline"]
        if config["input_baseline"] is not None:
            start_baseline = self.activations(self._baseline_inputs(config["input_baseline"], real), size)
        base = real.layout
        layout = InputLayout("list", base.names + (f"layer:{self.layer.name}",), base.shapes + (active.shape[1:],),
                             base.dtypes + (active.dtype.name,), (True,) * len(base.names) + (False,),
                             "float64" if "float64" in (base.packed_dtype, active.dtype.name) else "float32",
                             base.split + (False,) if base.split else ())
        packed = np.concatenate([real.array.astype(layout.packed_dtype),
                                 active.reshape(len(active), -1).astype(layout.packed_dtype)], axis=1)
        x = self.to_model_dtype(packed, layout)
        config = Call(config, layout=layout, baseline=[None] * len(base.names) + [start_baseline])
        is_callable = callable(target) and not isinstance(target, (np.ndarray, tf.Tensor))
        from tfattr.core.targets import resolve_output, resolve_targets

        output, num_classes = resolve_output(config["output"], self.spec, callable_target=is_callable)
        if self._explicit_classes(target, num_classes):
            targets, fx = resolve_targets(target, None, real.batch_size, num_classes, output=output), None
        else:
            targets, fx = self.resolve(x, target, config["batch_size"], output, layout)
        out = self.explain(x, targets, fx, config)
        attributions = layout.unpack_host(out["attributions"])[-1].astype(active.dtype)
        out["attributions"] = reduce_last_axis(attributions, config["reduce"])
        out.setdefault("info", {}).update(layer=self.layer.name, attribute_to=self.attribute_to,
                                          reduce=config["reduce"])
        shaped = type(real)(array=out["attributions"], single=real.single, as_tensor=real.as_tensor)
        return self.package(out, shaped, targets, fx, config)

    def _baseline_inputs(self, value, real):
        """``input_baseline`` as validated inputs: a number fills every input (in its dtype), else
        inputs of the model's structure."""
        layout = real.layout
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            # a float value for an integer input stays a float here, so validation refuses a fractional one
            parts = [np.full(p.shape, value, dtype=d if tf.as_dtype(d).is_floating or not isinstance(value, float)
                             else np.float64) for p, d in zip(layout.unpack_host(real.array), layout.dtypes)]
            structured = parts[0] if layout.kind == "single" else (
                dict(zip(layout.names, parts)) if layout.kind == "dict" else parts)
        else:
            structured = value
        baseline = self._real_inputs(structured, "input_baseline")
        if baseline.batch_size not in (1, real.batch_size) or baseline.layout.shapes != layout.shapes:
            raise InvalidInputError(
                "`input_baseline` must fit the inputs: the same shapes, one example or one per input example. "
                + received("input_baseline shapes", [(baseline.batch_size,) + s for s in baseline.layout.shapes]))
        if baseline.batch_size == 1 and real.batch_size > 1:
            baseline = type(baseline)(array=np.repeat(baseline.array, real.batch_size, axis=0), single=False,
                                      as_tensor=False, layout=baseline.layout, container=baseline.container)
        return baseline


class LayerConductance(IntegratedGradients):
    r"""Conductance of a layer's units (Dhamdhere, Sundararajan & Yan, ICLR 2019, eq. 3; captum's
    ``LayerConductance``): the input-space IG path, with the flow through unit ``j``

    ``Cond_j(x) = ∫₀¹ ∂F/∂y_j(x(α)) · dy_j(x(α))``, ``x(α) = z + α(x − z)``,

    computed as a Riemann–Stieltjes sum over ``M = steps`` equal intervals, nodes
    ``x_m = z + (m/M)(x − z)``, ``m = 0..M`` (the ``"stieltjes"`` combinations of the engine, as
    RSI-Grad-CAM). ``rule`` picks where each interval's gradient is taken:

    * ``"right"`` (default): ``Σ_{m=1..M} ∂F/∂y_j(x_m) · (y_j(x_m) − y_j(x_{m−1}))``;
    * ``"left"``: ``Σ_{m=1..M} ∂F/∂y_j(x_{m−1}) · (y_j(x_m) − y_j(x_{m−1}))`` — captum's sum. Captum
      always takes the gradient at each interval's left end, on the ``n_steps + 1`` nodes of its
      ``method``; with ``method="riemann_trapezoid"`` those are the nodes above, so ``rule="left",
      steps=M`` is captum's ``LayerConductance(...).attribute(..., method="riemann_trapezoid",
      n_steps=M)``. Its default Gauss–Legendre nodes (and ``"riemann_left"``'s, which stop at
      ``α = M/(M+1)``) have no tfattr counterpart.

    Both use the same ``M + 1`` gradient passes and tend to the same integral as ``steps`` grows, so
    ``Σ_j Cond_j → f(x) − f(z)``; at finite ``steps`` they differ by ``O(1/M)``. The inputs are
    interpolated (float inputs; several inputs with ``fixed_inputs`` as for
    :class:`IntegratedGradients`); ``baseline`` is in the input space.

    Args:
        model, layer: as for :class:`LayerIntegratedGradients` (the layer's output is used). A layer
            that returns several tensors is refused (:class:`~tfattr.errors.InvalidInputError`).
        steps: ``M`` intervals of the path (default 50); ``rule``: ``"right"`` (default) or
            ``"left"`` (see above; ``"riemann_right"``, the former value, still means ``"right"``);
            ``baseline``, ``n_baselines``, ``seed``, ``value_range``: as for :class:`IntegratedGradients`.

    Example:
        >>> LayerConductance(model, layer="dense", steps=100).attribute(x, target=0).attributions  # (N, units)
        >>> LayerConductance(model, layer="dense", rule="left")  # captum's sum, on its riemann_trapezoid nodes
    """

    name = "layer_conductance"
    noise_tunnel = False  # attributions in the layer's shape
    combine = "stieltjes"
    #: ``rule`` → engine combination
    RULES = {"right": "stieltjes", "left": "stieltjes_left"}  # the engine's sums (PathEngine's `combine`)
    _RULE_SYNONYMS = {"riemann_right": "right"}  # the value it had (IG's name) before `rule` was its own
    #: IG's baseline options, ``steps`` and its own ``rule`` (equal intervals: no ``tolerance`` or
    #: ``baseline_tolerance``)
    options = (checks.pick(BASELINE_OPTIONS + IG_OPTIONS, "baseline", "steps")
               + (Option("rule", "right", _conductance_rule),)
               + checks.pick(BASELINE_OPTIONS, "n_baselines", "value_range", "seed", "per_image_baselines", "sigma",
                             "blur_sigma", "value"))

    def __init__(self, model, layer, **options):
        super().__init__(model, **options)
        self.layer = find_layer(model, layer)
        self._layer_arguments = {"layer": self.layer.name}

    def gradient_function(self, score_fn=None):
        from tfattr.core.gradients import LayerGradients

        return LayerGradients(self.model, self.layer, score_fn)

    def check_combination(self, config):
        config["rule"] = self._RULE_SYNONYMS.get(config["rule"], config["rule"])
        config["value_range"] = resolve_value_range(config["value_range"], self.model)

    def combine_for(self, config) -> str:
        return self.RULES[config["rule"]]

    def describe(self, config) -> str:
        rule = "" if config["rule"] == "right" else f", rule={config['rule']}"
        return f"{self.name}(layer={self.layer.name}, steps={config['steps']}{rule})"

    def _cache_state(self, config):
        return dict(super()._cache_state(config), layer=self.layer.name)

    def _explain(self, x, targets, fx, config, baselines=None):
        from tfattr.core.engine import PathRows

        if baselines is None:
            baselines = self.make_baselines(x.numpy(), config)
        steps, num_examples = int(config["steps"]), int(x.shape[0])
        alphas = np.linspace(0.0, 1.0, steps + 1)
        weights = np.ones(steps + 1)
        weights[0] = 0.0  # the path's start only opens the first interval
        rows = PathRows.grid(num_examples, baselines.count, alphas, weights, baselines.per_example)
        result = self.integrate(x, baselines, targets, rows, config)
        fz = self.baseline_scores(x, baselines, targets, rows, result, config)
        scores = self.scores_at_input(rows, result, num_examples)
        fx = scores if fx is None else fx
        total = result.attributions.reshape(num_examples, -1).sum(axis=1)
        return {"attributions": result.attributions, "delta": total - (fx - fz), "baseline_scores": fz,
                "scores": fx, "gradients": len(rows),
                "info": {"baseline": baselines.name, "steps": steps, "rule": config["rule"], "layer": self.layer.name,
                         "n_baselines": baselines.count}}

    def _package(self, out, images, targets, fx, config):
        layer_out = out["attributions"]
        if images.layout is not None:  # the layer's shape, not the inputs' structure
            images = type(images)(array=images.array, single=images.single, as_tensor=images.as_tensor)
        return super()._package(dict(out, attributions=layer_out), images, targets, fx, config)
