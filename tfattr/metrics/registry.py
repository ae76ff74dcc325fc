"""Metrics by name: what :func:`tfattr.evaluate`, the CLI's ``evaluate --metrics`` and the
``SaliencyLogger``'s scalars compute when they are given metric names.

Each entry maps a name to a function that returns one value per image, its direction (is lower or
higher better), what it needs (the maps alone, the model, the method that re-explains, masks), its
default options and its paper. Adding a metric is one line at the end of this module::

    register_function("selectivity", faithfulness_more.selectivity, "lower", "auc", paper="Montavon et al. 2018")
    register_metric("peak", lambda c: np.abs(c.attributions).max(axis=(1, 2, 3)), "higher", needs="maps")

The callable gets a :class:`MetricInputs` (model, images, attributions, the method, targets, masks,
the evaluation's value range and seed) and the entry's options (its ``defaults`` updated by the
caller's ``metric_options``); it returns an ``(N,)`` array.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["MetricSpec", "MetricInputs", "METRICS", "register_metric", "register_function", "metric_spec",
           "resolve_metrics", "DEFAULT_METRICS"]

_DIRECTIONS = ("lower", "higher")
_NEEDS = ("maps", "model", "method", "masks", "explanation")


@dataclass
class MetricInputs:
    """What a registered metric is computed from (one batch of ``N`` images).

    Attributes:
        model: the model the metrics query (:func:`tfattr.evaluate`'s ``model``: its logits model).
        images: ``(N, H, W, C)`` images.
        attributions: ``(N, H, W, C)`` (or ``(N, H, W)``) attributions of ``method``.
        method: the attribution method (bound to its model), for metrics that re-explain.
        explanation: the :class:`~tfattr.core.result.Explanation` the attributions come from.
        targets: ``(N,)`` explained classes.
        masks: ``(N, H, W)`` ground-truth masks or ``None``.
        value_range: ``(low, high)`` of the images.
        seed: the evaluation's seed (each random metric draws from it).
        settings: :func:`tfattr.evaluate`'s metric settings (``aupc_kernel``, ``pixels_per_step``, …).
    """

    model: Any
    images: np.ndarray
    attributions: np.ndarray
    method: Any = None
    explanation: Any = None
    targets: Optional[np.ndarray] = None
    masks: Optional[np.ndarray] = None
    value_range: Tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    settings: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Attributes:
        name: the name callers use (``"max_sensitivity"``).
        compute: ``compute(inputs: MetricInputs, **options) -> (N,)`` per-image values.
        direction: ``"lower"`` or ``"higher"`` (is better).
        label: the column of tables and cached rows (default: ``name``).
        needs: ``"maps"``, ``"model"``, ``"method"`` (re-explains), ``"masks"`` or ``"explanation"``.
        defaults: options passed to ``compute`` unless the caller overrides them.
        options: option names a caller may set (default: ``compute``'s keyword parameters, or
            ``defaults``' keys when it takes ``**options``).
        paper: the reference.
    """

    name: str
    compute: Callable[..., np.ndarray]
    direction: str
    label: str
    needs: str = "model"
    defaults: Dict[str, Any] = field(default_factory=dict)
    options: Tuple[str, ...] = ()
    paper: str = ""

    @property
    def arrow(self) -> str:
        return "↓" if self.direction == "lower" else "↑"


#: name → :class:`MetricSpec`, in registration order
METRICS: Dict[str, MetricSpec] = {}


def register_metric(name: str, compute: Callable[..., np.ndarray], direction: str, *, label: Optional[str] = None,
                    needs: str = "model", defaults: Optional[Dict[str, Any]] = None,
                    options: Optional[Sequence[str]] = None, paper: str = "") -> MetricSpec:
    """Register ``compute`` under ``name`` (see the module docstring); returns its :class:`MetricSpec`.

    Raises:
        InvalidInputError: a name already registered, a direction other than ``"lower"``/``"higher"``.
    """
    if not (isinstance(name, str) and name and name == name.strip()):
        raise InvalidInputError("A metric's `name` must be a non-empty string. " + received("name", name))
    if name in METRICS:
        raise InvalidInputError(f"A metric named {name!r} is already registered. " + received("name", name))
    if direction not in _DIRECTIONS:
        raise InvalidInputError(f"`direction` must be one of {list(_DIRECTIONS)}. " + received("direction", direction))
    if needs not in _NEEDS:
        raise InvalidInputError(f"`needs` must be one of {list(_NEEDS)}. " + received("needs", needs))
    if not callable(compute):
        raise InvalidTypeError("`compute` must be callable. " + received("type(compute)", type(compute).__name__))
    defaults = dict(defaults or {})
    if options is None:
        parameters = list(inspect.signature(compute).parameters.values())[1:]
        named = [p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        options = tuple(dict.fromkeys(named + list(defaults)))
    spec = MetricSpec(name=name, compute=compute, direction=direction, label=label or name, needs=needs,
                      defaults=defaults, options=tuple(options), paper=paper)
    METRICS[name] = spec
    return spec


def _normal(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def metric_spec(name) -> MetricSpec:
    """The :class:`MetricSpec` of ``name`` (its name or its label, any case, spaces or ``_``).

    Raises:
        InvalidInputError: no metric of that name (the message lists them).
    """
    if isinstance(name, str):
        wanted = _normal(name)
        for spec in METRICS.values():
            if wanted in (_normal(spec.name), _normal(spec.label)):
                return spec
    raise InvalidInputError(f"`metrics` must name registered metrics: {', '.join(METRICS)}. "
                            + received("metrics", name))


def resolve_metrics(names, metric_options=None, masks_given: bool = True) -> List[Tuple[MetricSpec, Dict[str, Any]]]:
    """``[(spec, options)]`` for ``names`` (a list of names or one comma-separated string), each
    spec's ``defaults`` updated by ``metric_options[name]``.

    Raises:
        InvalidInputError: an unknown or repeated name, an empty list, a metric that needs masks
            when none are given, options for a metric not asked for, an option the metric does not take.
    """
    if isinstance(names, str):
        names = [part for part in names.split(",")]
    if not isinstance(names, (list, tuple)) or not names:
        raise InvalidInputError("`metrics` must be a non-empty list of metric names (or None for the default "
                                f"table). Choose from {', '.join(METRICS)}. " + received("metrics", names))
    specs: List[MetricSpec] = []
    for name in names:
        spec = metric_spec(name)
        if spec in specs:
            raise InvalidInputError(f"`metrics` names {spec.name!r} twice. " + received("metrics", list(names)))
        if spec.needs == "masks" and not masks_given:
            raise InvalidInputError(f"The metric {spec.name!r} compares maps with ground-truth masks: pass `masks`. "
                                    + received("masks", None))
        specs.append(spec)
    metric_options = {} if metric_options is None else metric_options
    if not isinstance(metric_options, dict):
        raise InvalidTypeError("`metric_options` must be a dict {metric name: {option: value}}. "
                               + received("type(metric_options)", type(metric_options).__name__))
    chosen: Dict[str, Dict[str, Any]] = {}
    for key, values in metric_options.items():
        spec = metric_spec(key)
        if spec not in specs:
            raise InvalidInputError(f"`metric_options` sets options of {spec.name!r}, which `metrics` does not "
                                    "name. " + received("metric_options", sorted(metric_options)))
        if not isinstance(values, dict):
            raise InvalidTypeError(f"`metric_options[{key!r}]` must be a dict of options. "
                                   + received(f"type(metric_options[{key!r}])", type(values).__name__))
        unknown = [option for option in values if option not in spec.options]
        if unknown:
            raise InvalidInputError(f"The metric {spec.name!r} takes the options {list(spec.options)}. "
                                    + received(f"metric_options[{key!r}]", unknown[0]))
        chosen[spec.name] = dict(values)
    return [(spec, dict(spec.defaults, **chosen.get(spec.name, {}))) for spec in specs]


# -- the registered metrics --------------------------------------------------------------------
def _aupc(c: MetricInputs):
    from tfattr.metrics.perturbation import aupc

    s = c.settings
    return aupc(c.model, c.images, c.attributions, target=c.targets, kernel_size=s.get("aupc_kernel", 15),
                regions=s.get("aupc_regions", 30), perturbations=s.get("aupc_perturbations", 50),
                value_range=c.value_range, seed=c.seed, verbose=0).area


def _causal(name):
    def compute(c: MetricInputs):
        from tfattr.metrics import perturbation

        return getattr(perturbation, name)(c.model, c.images, c.attributions, target=c.targets,
                                           pixels_per_step=c.settings.get("pixels_per_step"), verbose=0).auc
    return compute


def _autvc(c: MetricInputs):
    from tfattr.metrics.smoothness import autvc

    return autvc(c.attributions).area


def _pointing(c: MetricInputs):
    from tfattr.metrics.localisation import pointing_game

    return pointing_game(c.attributions, c.masks, tolerance=c.settings.get("pointing_tolerance", 15)).hits.astype(float)


def _mask_energy(c: MetricInputs):
    from tfattr.metrics.localisation import mask_energy

    return mask_energy(c.attributions, c.masks, absolute=True)


def _completeness(c: MetricInputs):
    delta = getattr(c.explanation, "relative_delta", None)
    if delta is None:
        raise InvalidInputError("The metric 'completeness' reads the completeness error a path method reports "
                                "(IG and its kind); this method reports none. "
                                + received("method", type(c.method).__name__))
    return np.asarray(delta, np.float64)


def _robustness(function_name, field_name):
    def compute(c: MetricInputs, **options):
        from tfattr.metrics import robustness

        options.setdefault("seed", c.seed)
        return getattr(getattr(robustness, function_name)(c.method, c.images, c.targets, **options), field_name)
    return compute


def _faithfulness(function_name, field_name):
    def compute(c: MetricInputs, **options):
        from tfattr.metrics import faithfulness

        options.setdefault("seed", c.seed)
        return getattr(getattr(faithfulness, function_name)(c.model, c.images, c.attributions, target=c.targets,
                                                            verbose=0, **options), field_name)
    return compute


def _randomisation(function_name):
    def compute(c: MetricInputs, **options):
        from tfattr.metrics import randomisation

        result = getattr(randomisation, function_name)(c.method.model, c.images, c.method, targets=c.targets,
                                                       **options)
        if hasattr(result, "score"):  # eMPRT: one score per image
            return np.asarray(result.score, np.float64)
        similarities = np.asarray(result.similarities, np.float64)
        return similarities[-1] if similarities.ndim == 2 else similarities
    return compute


def _options_of(function, skip=("model", "images", "attributions", "target", "masks", "verbose")) -> Tuple[str, ...]:
    return tuple(name for name, p in inspect.signature(function).parameters.items()
                 if name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def _scored(function, field_name):
    """A metric ``function(model, images, attributions, target=…, **options)`` by its ``(N,)`` field
    (the evaluation's seed by default where it draws)."""
    takes_seed = "seed" in inspect.signature(function).parameters

    def compute(c: MetricInputs, **options):
        if takes_seed:
            options.setdefault("seed", c.seed)
        values = getattr(function(c.model, c.images, c.attributions, target=c.targets, **options), field_name)
        return np.asarray(values, np.float64)
    return compute


def _on_maps(function, masks: bool):
    """A metric of the maps alone (``function(attributions[, masks], **options) -> (N,)``)."""
    def compute(c: MetricInputs, **options):
        arguments = (c.attributions, c.masks) if masks else (c.attributions,)
        return np.asarray(function(*arguments, **options), np.float64)
    return compute


def register_function(name, function, direction, field_name=None, masks=False, paper=""):
    """Register a tfattr metric function in one line: ``field_name`` for one that runs the model
    (``function(model, images, attributions, target=…)``, its result's ``(N,)`` field), none for
    one of the maps (and ``masks``) alone. Its options are the function's keyword parameters."""
    if field_name is not None:
        return register_metric(name, _scored(function, field_name), direction, options=_options_of(function),
                               paper=paper)
    return register_metric(name, _on_maps(function, masks), direction, needs="masks" if masks else "maps",
                           options=_options_of(function), paper=paper)


_SENSITIVITY = ("n_perturb_samples", "perturb_radius", "norm", "seed")
_STABILITY = ("n_perturb_samples", "perturb_bounds", "eps_min", "keep_prediction", "seed")

# the papers' table (evaluate's default, in this order)
register_metric("aupc", _aupc, "lower", label="AUPC", options=(), paper="Samek et al. 2017; Goh et al. 2020")
register_metric("autvc", _autvc, "lower", label="AUTVC", needs="maps", options=(), paper="Goh et al. 2020")
register_metric("deletion", _causal("deletion"), "lower", options=(), paper="Petsiuk et al. 2018")
register_metric("insertion", _causal("insertion"), "higher", options=(), paper="Petsiuk et al. 2018")
register_metric("pointing_game", _pointing, "higher", label="pointing", needs="masks", options=(),
                paper="Zhang et al. 2018")
register_metric("mask_energy", _mask_energy, "higher", label="mask energy", needs="masks", options=(),
                paper="Wang et al. 2020")
register_metric("completeness", _completeness, "lower", needs="explanation", options=(),
                paper="Sundararajan et al. 2017 (relative completeness error)")
# faithfulness to random perturbations
register_metric("faithfulness_correlation", _faithfulness("faithfulness_correlation", "correlation"), "higher",
                defaults={"runs": 20}, options=("subset_size", "runs", "baseline", "seed", "batch_size", "output"),
                paper="Bhatt et al. 2020")
register_metric("infidelity", _faithfulness("infidelity", "infidelity"), "lower",
                options=("n_perturb_samples", "sigma", "multiply_by_inputs", "baselines", "normalize", "seed",
                         "batch_size", "output"), paper="Yeh et al. 2019")
# robustness (the method re-explains perturbed inputs)
register_metric("max_sensitivity", _robustness("max_sensitivity", "sensitivity"), "lower", needs="method",
                options=_SENSITIVITY, paper="Yeh et al. 2019")
register_metric("avg_sensitivity", _robustness("avg_sensitivity", "sensitivity"), "lower", needs="method",
                options=_SENSITIVITY, paper="Yeh et al. 2019")
register_metric("local_lipschitz_estimate", _robustness("local_lipschitz_estimate", "score"), "lower",
                needs="method", defaults={"n_perturb_samples": 10},
                options=("n_perturb_samples", "perturb_std", "normalise", "absolute", "keep_prediction", "seed"),
                paper="Alvarez-Melis & Jaakkola 2018")
register_metric("relative_input_stability", _robustness("relative_input_stability", "score"), "lower",
                needs="method", defaults={"n_perturb_samples": 10}, options=_STABILITY, paper="Agarwal et al. 2022")
register_metric("relative_output_stability", _robustness("relative_output_stability", "score"), "lower",
                needs="method", defaults={"n_perturb_samples": 10}, options=_STABILITY, paper="Agarwal et al. 2022")
# randomisation sanity checks (the similarity after the last layer is randomised; lower is better)
register_metric("model_parameter_randomisation", _randomisation("model_parameter_randomisation"), "lower",
                needs="method", options=("order", "similarity", "seed", "initializer", "layers"),
                paper="Adebayo et al. 2018")
register_metric("smooth_model_parameter_randomisation", _randomisation("smooth_model_parameter_randomisation"),
                "lower", needs="method", defaults={"n_samples": 10},
                options=("order", "similarity", "n_samples", "noise_magnitude", "normalise", "seed", "initializer",
                         "layers"), paper="Hedström et al. 2023")
register_metric("efficient_model_parameter_randomisation", _randomisation("efficient_model_parameter_randomisation"),
                "higher", needs="method", options=("n_bins", "seed", "initializer", "layers"),
                paper="Hedström et al. 2023")
register_metric("random_logit", _randomisation("random_logit"), "lower", needs="method",
                options=("similarity", "seed", "num_classes"), paper="Sixt et al. 2020")

# faithfulness by perturbation curves, complexity and localisation (tfattr.metrics' other modules)
# (by import_module: the package's names `complexity` and `auc` are functions, not these modules)
_complexity = importlib.import_module("tfattr.metrics.complexity")
_faithfulness_more = importlib.import_module("tfattr.metrics.faithfulness_more")
_flipping = importlib.import_module("tfattr.metrics.flipping")
_localisation = importlib.import_module("tfattr.metrics.localisation")

register_function("pixel_flipping", _flipping.pixel_flipping, "lower", "auc", paper="Bach et al. 2015")
register_function("region_perturbation", _flipping.region_perturbation, "higher", "aopc", paper="Samek et al. 2017")
register_function("monotonicity", _faithfulness_more.monotonicity, "higher", "monotonic", paper="Arya et al. 2019")
register_function("monotonicity_correlation", _faithfulness_more.monotonicity_correlation, "higher", "correlation",
                  paper="Nguyen & Martínez 2020")
register_function("selectivity", _faithfulness_more.selectivity, "lower", "auc", paper="Montavon et al. 2018")
register_function("irof", _faithfulness_more.irof, "higher", "aoc", paper="Rieger & Hansen 2020")
register_function("mu_fidelity", _faithfulness_more.mu_fidelity, "higher", "correlation", paper="Bhatt et al. 2020")
register_function("sparseness", _complexity.sparseness, "higher", paper="Chalasani et al. 2020")
register_function("complexity", _complexity.complexity, "lower", paper="Bhatt et al. 2020")
register_function("effective_complexity", _complexity.effective_complexity, "lower", paper="Nguyen & Martínez 2020")
register_function("relevance_mass_accuracy", _localisation.relevance_mass_accuracy, "higher", masks=True,
                  paper="Arras et al. 2022")
register_function("relevance_rank_accuracy", _localisation.relevance_rank_accuracy, "higher", masks=True,
                  paper="Arras et al. 2022")
register_function("top_k_intersection", _localisation.top_k_intersection, "higher", masks=True,
                  paper="Theiner et al. 2021")
register_function("attribution_localisation", _localisation.attribution_localisation, "higher", masks=True,
                  paper="Kohlbrenner et al. 2020")
register_function("auc", _localisation.auc, "higher", masks=True, paper="Fawcett 2006")

#: what :func:`tfattr.evaluate` computes with ``metrics=None`` (the masks' two when masks are given)
DEFAULT_METRICS = ("aupc", "autvc", "deletion", "insertion", "pointing_game", "mask_energy", "completeness")
