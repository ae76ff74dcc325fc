"""SmoothTaylor and adaptive noising (Goh, Lapuschkin, Weber, Samek & Binder, ICPR 2020).

SmoothTaylor (eq. 6): ``ST_i(x) = (1/R) Σ_r (x_i − z_i⁽ʳ⁾) · ∂f(z⁽ʳ⁾)/∂x_i`` with roots
``z⁽ʳ⁾ = x + ε⁽ʳ⁾``, ``ε ~ N(0, σ²)``. In the engine's terms the roots are baselines and
each contributes one node ``α = 0`` with weight ``1/R``: the rows of IG_noise with one
step. The scores at ``α = 0`` are ``f(z⁽ʳ⁾)``, so the Taylor reconstruction error (eq. 8)
``|f(x) − mean_r f(z⁽ʳ⁾) − Σ_i ST_i|`` costs nothing extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

import numpy as np

from tfattr.baselines.registry import BaselineSet
from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.convergence import refine, relative_standard_error, warn_unconverged
from tfattr.core.engine import PathRows, progress_bar
from tfattr.core.inputs import validate_images
from tfattr.core.ranges import (IMAGENET_MEAN, IMAGENET_STD_RGB, resolve_value_range, value_range_checked,
                                warn_outside_value_range)
from tfattr.core.random import STREAM_SMOOTH_TAYLOR, rng
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import AttributionMethod, Explained, call_layout

__all__ = ["SmoothTaylor", "adaptive_noising", "AdaptiveNoisingResult"]


def _sigma(name, value):
    """``"adaptive"``, or a finite number ≥ 0 or one per image."""
    if isinstance(value, str):
        if value != "adaptive":
            raise InvalidInputError(f"`{name}` must be a number, one number per image, or 'adaptive'. "
                                    + received(name, value))
        return
    checks.sigma_values(name, value)


def _objective(name, value):
    """``"aupc"``, ``"autvc"`` or a callable."""
    if not callable(value):
        checks.choice(name, value, ("aupc", "autvc"), " or a callable")


def _normalisation_pair(name, value):
    if value is not None:
        _normalisation(value, (0.0, 1.0), None)  # the pair's own form; checked with value_range in use


class SmoothTaylor(AttributionMethod):
    """SmoothTaylor attributions (Goh et al. 2020, eq. 6) with the Taylor reconstruction error (eq. 8).

    Options (constructor defaults, each overridable in :meth:`attribute`):
        roots: ``R``, number of noisy roots (default 150; the paper uses 100–200).
        sigma: noise standard deviation ``σ`` (default 0.5), a float, one float per image,
            or ``"adaptive"`` (runs :func:`adaptive_noising` per image with ``objective``).
        noise_scale: ``"absolute"`` (default): ``σ`` is in the model's input units, as in the
            paper, whose ImageNet inputs were mean/std-normalised (so their σ = 0.3–0.7 is
            about 7–16% of the [0, 1] pixel range); ``"relative"``: ``σ · (high − low)`` of
            ``value_range``, convenient for models on [0, 1] or [0, 255] pixels.
        value_range: ``(low, high)`` of the input space. ``None`` (default): the range the
            model declares (``model.tfattr_value_range``, set by
            :func:`tfattr.data.keras_application`), else ``(0, 1)``. Where it is used (relative
            σ, adaptive σ), inputs outside it raise a :class:`~tfattr.errors.ValueRangeWarning`.
        seed: seed of the roots (default 0). The draws ``ε`` are shared by every image of a
            batch and scaled by each image's σ, so a result does not depend on its batch.
        objective, stop_rule, normalisation: for ``sigma="adaptive"`` (see
            :func:`adaptive_noising`): the objective ``"aupc"`` (default), ``"autvc"`` or a
            callable; the stop test ``"paper"`` (default) or ``"code"``; the input normalisation
            the search's units refer to (default: ImageNet's, from ``value_range``). The search
            ignores ``sigma``'s number and ``noise_scale``: it works in the authors' normalised
            units and converts them to the model's input units.
        tolerance: ask for a Monte-Carlo accuracy instead of a root count: draw blocks of
            ``roots`` until, per image, the standard error of the average relative to its norm,
            ``‖SE‖₂ / ‖ST‖₂``, is at most ``tolerance``; converged images get no more roots.
            ``info["roots"]`` and ``info["relative_standard_error"]`` report what each used.
        max_roots: root budget per image with ``tolerance`` (default 3000).
        batch_size, verbose, parallel_chunks: see :class:`~tfattr.methods.base.AttributionMethod`.
        output: the explained output of a model with several (index or name; see
            :class:`~tfattr.methods.base.AttributionMethod`).

    ``Explanation.delta`` is ``Σ ST − (f(x) − mean_r f(z⁽ʳ⁾))``; ``|delta|`` is the Taylor
    reconstruction error (``info["taylor_error"]``).

    Example:
        >>> st = SmoothTaylor(model, roots=150, sigma=0.1, noise_scale="relative", seed=0)
        >>> expl = st.attribute(images)
        >>> expl.info["taylor_error"]
    """

    name = "smooth_taylor"
    collect_squares = True  # each root is an i.i.d. sample: standard errors for `tolerance`
    options = (
        Option("roots", 150, checks.positive_int),
        Option("sigma", 0.5, _sigma),
        Option("noise_scale", "absolute", checks.choices("absolute", "relative")),
        Option("value_range", None, checks.value_range_pair),
        Option("seed", 0, checks.seed),
        Option("objective", "aupc", _objective),
        Option("stop_rule", "paper", lambda name, value: _check_stop_rule(value)),
        Option("normalisation", None, _normalisation_pair),
        Option("tolerance", None, checks.optional(checks.positive_number)),
        Option("max_roots", 3000, checks.positive_int),
    )

    def check_combination(self, config):
        config["value_range"] = resolve_value_range(config["value_range"], self.model)
        if config["normalisation"] is not None:
            _normalisation(config["normalisation"], config["value_range"], None)  # raises on a bad pair
        if isinstance(config["sigma"], str) and config.get("output") is not None:
            raise InvalidInputError(
                "Adaptive noising (sigma='adaptive') scores its maps with tfattr.metrics, which take a "
                "model with one output; explain the single-output model of the chosen output instead, "
                "e.g. keras.Model(model.input, model.outputs[i]). " + received("output", config["output"]))

    def describe(self, config) -> str:
        sigma = config["sigma"]
        shown = sigma if isinstance(sigma, str) or np.ndim(sigma) == 0 else "per-image"
        return f"smooth_taylor(roots={config['roots']}, sigma={shown}, noise_scale={config['noise_scale']})"

    def uses_value_range(self, config) -> bool:
        """``value_range`` scales σ with ``noise_scale="relative"`` and sets the units of the adaptive search."""
        return config["noise_scale"] == "relative" or isinstance(config["sigma"], str)

    def absolute_sigma(self, sigma, config) -> np.ndarray:
        low, high = config["value_range"]
        factor = (high - low) if config["noise_scale"] == "relative" else 1.0
        return np.asarray(sigma, dtype=np.float64) * factor

    def roots(self, shape, config, block: int = 0) -> np.ndarray:
        """The standard-normal draws ``ε/σ``, ``(1, R, …)``, seeded (``block`` > 0: further blocks
        drawn for ``tolerance``)."""
        generator = rng(config["seed"], STREAM_SMOOTH_TAYLOR, block)
        return generator.normal(0.0, 1.0, size=(1, config["roots"]) + tuple(shape))

    def _explain(self, x, targets, fx, config) -> Explained:
        if isinstance(config["sigma"], str):
            return self._adaptive(x, targets, fx, config)
        if config["tolerance"] is not None:
            return self._explain_to_tolerance(x, targets, fx, config)
        num_examples = int(x.shape[0])
        sigma = np.broadcast_to(self.absolute_sigma(config["sigma"], config), (num_examples,)).copy()
        roots = BaselineSet(self.roots(x.shape[1:], config), f"roots x{config['roots']}", relative=True,
                            scale=sigma)
        rows = PathRows.grid(num_examples, roots.count, np.zeros(1), np.ones(1), per_example_baselines=False)
        result = self.integrate(x, roots, targets, rows, config)
        fz = self.baseline_scores(x, roots, targets, rows, result, config)
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"], layout=call_layout(config))
        total = result.attributions.reshape(num_examples, -1).sum(axis=1)
        delta = total - (fx - fz)
        return Explained(attributions=result.attributions, delta=delta, baseline_scores=fz, scores=fx,
                         gradients=len(rows), info={"sigma": sigma, "taylor_error": np.abs(delta),
                                                    "roots": config["roots"]})

    def _explain_to_tolerance(self, x, targets, fx, config) -> Explained:
        """Blocks of ``roots`` per image until the relative standard error is ≤ ``tolerance``."""
        num_examples, shape = int(x.shape[0]), tuple(x.shape[1:])
        sigma = np.broadcast_to(self.absolute_sigma(config["sigma"], config), (num_examples,)).copy()
        block_size, tolerance, cap = config["roots"], float(config["tolerance"]), config["max_roots"]
        total, total_sq = np.zeros((num_examples,) + shape), np.zeros((num_examples,) + shape)
        fz_sum, count = np.zeros(num_examples), np.zeros(num_examples, int)
        gradients = 0
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"], layout=call_layout(config))

        def root_block(block, todo):
            """Block ``block`` of roots for ``todo``; their relative standard errors after it."""
            nonlocal gradients
            roots = BaselineSet(self.roots(shape, config, block), "roots", relative=True, scale=sigma)
            rows = PathRows.grid(num_examples, block_size, np.zeros(1), np.full(1, float(block_size)),
                                 per_example_baselines=False)  # weight 1: raw per-root terms
            keep = np.isin(rows.example, todo)
            rows = PathRows(rows.example[keep], rows.baseline[keep], rows.alpha[keep], rows.weight[keep])
            result = self.integrate(x, roots, targets, rows, config)
            gradients += len(rows)
            total[todo] += result.attributions[todo]
            total_sq[todo] += result.squares[todo]
            fz_sum[:] += np.bincount(rows.example, weights=result.row_scores, minlength=num_examples)
            count[todo] += block_size
            return relative_standard_error(total[todo], total_sq[todo], count[todo])

        refined = refine(root_block, num_examples, tolerance,
                         budget=lambda rounds, todo: count[todo] + block_size <= cap)
        warn_unconverged("SmoothTaylor", refined, "tolerance", tolerance, "max_roots", cap, stacklevel=5)
        error = refined.error
        attributions = total / count.reshape((-1,) + (1,) * len(shape))
        fz = fz_sum / count
        delta = attributions.reshape(num_examples, -1).sum(axis=1) - (fx - fz)
        return Explained(attributions=attributions, delta=delta, baseline_scores=fz, scores=fx, gradients=gradients,
                         info={"sigma": sigma, "taylor_error": np.abs(delta), "roots": count,
                               "relative_standard_error": error})

    def _adaptive(self, x, targets, fx, config) -> Explained:
        """Adaptive noising per image. The map returned is the best one the search evaluated (the
        authors' code keeps it), with its objective value: no further SmoothTaylor run."""
        layout = call_layout(config)
        if layout is not None:
            raise InvalidTypeError("SmoothTaylor(sigma='adaptive') explains models with one image input; this model "
                                   f"has inputs {list(layout.names)}. " + received("sigma", config["sigma"]))
        with value_range_checked():  # attribute() has checked the inputs once
            result = _search(self, x.numpy(), config, objective=config["objective"], target=targets.indices,
                             stop_rule=config["stop_rule"], normalisation=config["normalisation"],
                             seed=config["seed"], verbose=config["verbose"])
        return Explained(attributions=result.attributions, delta=result.delta, baseline_scores=result.baseline_scores,
                         scores=result.scores, gradients=result.gradients,
                         info={"sigma": result.sigma, "sigma_normalised": result.sigma_normalised,
                               "taylor_error": np.abs(result.delta), "roots": config["roots"], "trace": result.trace,
                               "objective": config["objective"], "objective_value": result.objective,
                               "evaluations": result.evaluations, "stop_rule": config["stop_rule"], "adaptive": True})


@dataclass
class AdaptiveNoisingResult:
    """What :func:`adaptive_noising` returns.

    Attributes:
        sigma: ``σ*`` per image, in the model's input units (absolute).
        objective: the objective's value at ``σ*`` per image: the best value of the search.
        attributions: the SmoothTaylor map of the evaluation that found ``σ*`` (the search's best
            map; trace entries carry the seed to reproduce it), ``(N, …)``.
        trace: per image, every evaluation in order as ``{"iteration", "sigma"`` (input units),
            ``"sigma_normalised"`` (the authors' units), ``"alpha"`` (the step, normalised units),
            ``"objective", "seed"}`` (the roots' seed of that evaluation).
        evaluations: objective evaluations spent per image.
        sigma_normalised: ``σ*`` per image in the authors' normalised units.
        delta: ``Σ ST − (f(x) − mean_r f(z⁽ʳ⁾))`` of the best map (its Taylor reconstruction error
            is ``|delta|``, eq. 8).
        baseline_scores: ``mean_r f(z⁽ʳ⁾)`` of the best map's roots.
        scores: ``f(x)`` per image.
        gradients: gradients computed by the whole search.
    """

    sigma: np.ndarray
    objective: np.ndarray
    attributions: np.ndarray
    trace: List[List[Dict[str, float]]] = field(default_factory=list)
    evaluations: Optional[np.ndarray] = None
    sigma_normalised: Optional[np.ndarray] = None
    delta: Optional[np.ndarray] = None
    baseline_scores: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None
    gradients: int = 0


STOP_RULES = ("paper", "code")


def _check_stop_rule(stop_rule) -> None:
    if not isinstance(stop_rule, str) or stop_rule not in STOP_RULES:
        raise InvalidInputError("`stop_rule` must be 'paper' (decay while s ≤ s_max, Algorithm 1 as printed) or "
                                "'code' (decay while s < s_max, the authors' code). " + received("stop_rule", stop_rule))


def _normalisation(normalisation, value_range, channels: Optional[int]):
    """``(mean, std)`` of the authors' input normalisation in the model's input units, each a scalar or
    one value per channel (last axis).

    Default (``None``): ImageNet's RGB mean and std (:data:`~tfattr.core.ranges.IMAGENET_MEAN`,
    :data:`~tfattr.core.ranges.IMAGENET_STD_RGB`) of pixels in ``value_range``; for inputs without 3
    channels, their averages."""
    low, high = value_range
    if normalisation is None:
        mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD_RGB)
        if channels is not None and channels != 3:
            mean, std = np.asarray(mean.mean()), np.asarray(std.mean())
        return low + mean * (high - low), std * (high - low)
    try:
        mean, std = (np.asarray(v, dtype=np.float64) for v in normalisation)
    except (TypeError, ValueError):
        raise InvalidTypeError("`normalisation` must be a pair (mean, std) of numbers or per-channel sequences in "
                               "the model's input units. " + received("normalisation", normalisation)) from None
    sizes_ok = all(v.ndim == 0 or (v.ndim == 1 and (channels is None or len(v) in (1, channels))) for v in (mean, std))
    if not sizes_ok or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise InvalidInputError("`normalisation` must be (mean, std) with finite values, std > 0, each a number or "
                                f"one value per channel{'' if channels is None else f' ({channels})'}. "
                                + received("normalisation", normalisation))
    return mean, std


def _resolve_objective(objective, model, value_range):
    if callable(objective):
        return objective
    if objective not in ("aupc", "autvc"):
        raise InvalidInputError("`objective` must be 'aupc', 'autvc' or a callable. " + received("objective", objective))
    from tfattr import metrics

    if objective == "aupc":
        def aupc_objective(images, attributions, sigma, seed, target):
            return np.asarray(metrics.aupc(model, images, attributions, target=target, value_range=value_range,
                                           seed=seed).area)
        return aupc_objective

    def autvc_objective(images, attributions, sigma, seed, target):
        return np.asarray(metrics.autvc(attributions).area)
    return autvc_objective


def adaptive_noising(
    method: Union[SmoothTaylor, object],
    images,
    objective: Union[str, Callable] = "aupc",
    target=None,
    roots: int = 150,
    sigma0=None,
    i_max: int = 20,
    s_max: int = 3,
    alpha: float = 0.1,
    gamma: float = 0.9,
    max_evaluations: Optional[int] = None,
    seed: int = 0,
    fresh_noise: bool = True,
    stop_rule: str = "paper",
    normalisation=None,
    verbose="auto",
) -> AdaptiveNoisingResult:
    """Algorithm 1 of Goh et al. 2020 ("Adaptive Noising"), per image, batched across images.

    ::

        σ ← σ₀;  AUC ← ComputeAUC(σ);  i ← 1;  s ← 0;  σ* ← σ;  AUC* ← AUC
        while i ≤ i_max:
            AUC_s ← ComputeAUC(|σ + α|)
            if AUC_s > AUC:  σ ← |σ − α|;  AUC_s ← ComputeAUC(σ)
            else:            σ ← |σ + α|
            if AUC_s > AUC:
                if s ≤ s_max:  α ← α·γ;  s ← s + 1          (stop_rule="code": s < s_max)
                else: break
            else:
                s ← 0
                if AUC_s < AUC*:  AUC* ← AUC_s;  σ* ← σ
            AUC ← AUC_s;  i ← i + 1
        return σ*  (and, as the authors' code, the map evaluated at σ* with AUC*)

    Units: the authors ran the search on ImageNet-normalised inputs, ``(x₀₁ − mean) / std`` per
    channel, so their ``α = 0.1`` and ``σ₀ = mean|x|`` are in normalised units. The search here runs
    in those units too and each evaluation uses ``σ · unit`` in the model's input units, with
    ``unit = mean(std)`` in input units (``0.226 · (high − low)`` for RGB pixels in
    ``value_range``) — the conversion :func:`tfattr.evaluation.smoothtaylor_grid` applies to the
    paper's fixed σ. So a model on [0, 1], the same model behind ``Rescaling(1/255)`` on [0, 255],
    and behind a Caffe-style input (BGR, mean-subtracted, given its ``normalisation``) search the
    same σ relative to the pixel range.

    Stop test: Algorithm 1 as printed decays α while ``s ≤ s_max`` (``stop_rule="paper"``, the
    default: up to ``s_max + 1`` decays in a row); the authors' code uses ``s < s_max``
    (``stop_rule="code"``: one decay fewer before it stops).

    Args:
        method: a :class:`SmoothTaylor` (its model, ``value_range``, batch size and
            ``normalisation`` are used; its ``sigma`` and ``noise_scale`` are not), or a Keras model
            (a default ``SmoothTaylor`` is built around it).
        images: ``(N, H, W, C)`` float images in the method's ``value_range``.
        objective: ``"aupc"`` (:func:`tfattr.metrics.aupc` area, the paper's first choice, with the
            method's ``value_range``), ``"autvc"`` (:func:`tfattr.metrics.autvc`), or a callable
            ``(images, attributions, sigma, seed, target) -> (n,)`` to minimise, called on the
            images still searching (``sigma`` in input units).
        target: explained classes (default: top-1).
        roots: ``R`` per evaluation (paper: 150).
        sigma0: starting σ per image in normalised units. ``None`` or ``"code"`` (default, the
            authors' code): ``mean|x_n|`` of the normalised input ``x_n``; ``"slide"``: the paper's
            slide, ``(1/√N)·Σ|x_n|`` over the ``N`` values of an image; or numbers (one, or one
            per image).
        i_max, s_max, alpha, gamma: Algorithm 1's parameters (paper: 20, 3, 0.1, 0.9); ``alpha``
            in normalised units.
        max_evaluations: optional budget of objective evaluations per image.
        seed: base seed; evaluation round ``k`` draws its roots with seed ``seed·1000003 + k``
            (recorded in the trace) and the objective's noise with ``seed·7919 + k``, so the trace
            is reproducible and each map can be recomputed alone.
        fresh_noise: ``True`` (default, the authors' code): new roots every evaluation round;
            ``False``: the same standard-normal roots (seed ``seed``) scaled by each σ.
        stop_rule: ``"paper"`` (``s ≤ s_max``, default) or ``"code"`` (``s < s_max``).
        normalisation: ``(mean, std)`` of the authors' input normalisation in the model's input
            units, each a number or one per channel, such that ``(x − mean) / std`` is the input
            their units refer to. Default: the method's ``normalisation`` option, else ImageNet's
            RGB ``mean = low + (0.485, 0.456, 0.406)·(high − low)``, ``std = (0.229, 0.224,
            0.225)·(high − low)``. A Caffe-style model (BGR, ImageNet mean subtracted, 0–255
            scale) takes ``mean = (0.406, 0.456, 0.485)·255 − (103.939, 116.779, 123.68)``,
            ``std = (0.225, 0.224, 0.229)·255``.
        verbose: progress bar over the iterations.

    Returns:
        :class:`AdaptiveNoisingResult`: ``σ*`` per image, the best map and its objective value,
        the full trace.

    Example:
        >>> result = adaptive_noising(SmoothTaylor(model, value_range=(0, 255)), images, objective="autvc")
        >>> result.sigma, result.objective, result.attributions.shape
    """
    if not isinstance(method, SmoothTaylor):
        method = SmoothTaylor(method)
    if method.spec.inputs is not None:
        raise InvalidTypeError("Adaptive noising explains models with one image input; this model has inputs "
                               f"{list(method.spec.inputs.names)}. " + received("model.inputs", list(method.spec.inputs.names)))
    images_checked = validate_images(images, method.spec, name="images")
    config = method.call_options(roots=roots)
    warn_outside_value_range(images_checked.array, config["value_range"], name="images", stacklevel=2)
    with value_range_checked():  # checked once: the search calls attribute and AUPC many times
        return _search(method, images_checked.array, config, objective=objective, target=target, sigma0=sigma0,
                       i_max=i_max, s_max=s_max, alpha=alpha, gamma=gamma, max_evaluations=max_evaluations,
                       seed=seed, fresh_noise=fresh_noise, stop_rule=stop_rule,
                       normalisation=normalisation if normalisation is not None else config["normalisation"],
                       verbose=verbose)


def _search(method: SmoothTaylor, images: np.ndarray, config, objective="aupc", target=None, sigma0=None,
            i_max: int = 20, s_max: int = 3, alpha: float = 0.1, gamma: float = 0.9,
            max_evaluations: Optional[int] = None, seed: int = 0, fresh_noise: bool = True, stop_rule: str = "paper",
            normalisation=None, verbose="auto") -> AdaptiveNoisingResult:
    """Algorithm 1 on validated ``images`` with the method's merged ``config`` (see :func:`adaptive_noising`)."""
    _check_stop_rule(stop_rule)
    dtype = images.dtype
    x = images.astype(np.float64)
    value_range = config["value_range"]
    score = _resolve_objective(objective, method.model, value_range)
    n = len(x)
    mean, std = _normalisation(normalisation, value_range, int(x.shape[-1]) if x.ndim > 1 else None)
    unit = float(np.mean(std))  # input units per normalised unit
    if target is None:
        target = np.argmax(method.model.predict(x.astype(dtype), verbose=0), axis=1)
    target = np.broadcast_to(np.asarray(target), (n,)).astype(np.int64)
    normalised = np.abs((x - mean) / std).reshape(n, -1)
    if sigma0 is None or (isinstance(sigma0, str) and sigma0 == "code"):
        sigma0 = normalised.mean(axis=1)  # authors' code: mean |x| of the normalised input
    elif isinstance(sigma0, str) and sigma0 == "slide":
        sigma0 = normalised.sum(axis=1) / np.sqrt(normalised.shape[1])  # the slide: (1/√N) Σ |x|
    elif isinstance(sigma0, str):
        raise InvalidInputError("`sigma0` must be 'code', 'slide', a number or one number per image (normalised "
                                "units). " + received("sigma0", sigma0))
    sigma = np.broadcast_to(np.asarray(sigma0, np.float64), (n,)).copy()  # normalised units
    step = np.full(n, float(alpha))
    stops = np.zeros(n, int)
    iteration = np.ones(n, int)
    evaluations = np.zeros(n, int)
    active = np.ones(n, bool)
    trace: List[List[Dict[str, float]]] = [[] for _ in range(n)]
    rounds = [0]
    spent = [0]
    fx = np.full(n, np.nan)
    bar = progress_bar(i_max, verbose, unit="iteration")
    inner = {key: config[key] for key in ("roots", "value_range", "batch_size", "parallel_chunks")}

    def compute(indices, sigmas):
        """ComputeAUC for images ``indices`` at normalised ``sigmas`` (one engine call, one objective call)."""
        k = rounds[0]
        rounds[0] += 1
        roots_seed = (seed * 1_000_003 + k) if fresh_noise else seed
        absolute = sigmas * unit
        expl = method.attribute(x[indices].astype(dtype), target=target[indices], sigma=absolute,
                                noise_scale="absolute", seed=roots_seed, tolerance=None, verbose=0, **inner)
        spent[0] += int(expl.gradients)
        attributions = np.asarray(expl, dtype=np.float64)
        fx[indices] = np.asarray(expl.scores, np.float64)
        values = np.asarray(score(x[indices], attributions, absolute, seed * 7919 + k, target[indices]), np.float64)
        for j, e in enumerate(indices):
            evaluations[e] += 1
            trace[e].append({"iteration": int(iteration[e]), "sigma": float(absolute[j]),
                             "sigma_normalised": float(sigmas[j]), "alpha": float(step[e]),
                             "objective": float(values[j]), "seed": int(roots_seed)})
        return values, attributions, np.asarray(expl.delta, np.float64), np.asarray(expl.baseline_scores, np.float64)

    everyone = np.arange(n)
    auc, attr, delta, fz = compute(everyone, sigma)
    best_sigma, best_auc, best_attr, best_delta, best_fz = sigma.copy(), auc.copy(), attr.copy(), delta.copy(), fz.copy()
    budget = max_evaluations if max_evaluations is not None else np.inf
    while True:
        active &= (iteration <= i_max) & (evaluations < budget)
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        tried = np.abs(sigma[idx] + step[idx])
        auc_s, attr_s, delta_s, fz_s = compute(idx, tried)
        worse = auc_s > auc[idx]
        new_sigma = np.where(worse, np.abs(sigma[idx] - step[idx]), tried)
        back = idx[worse]
        if len(back):
            within = evaluations[back] < budget
            positions = np.flatnonzero(worse)[within]
            if within.any():
                auc_s[positions], attr_s[positions], delta_s[positions], fz_s[positions] = compute(
                    back[within], new_sigma[worse][within])
        sigma[idx] = new_sigma
        for j, e in enumerate(idx):
            if auc_s[j] > auc[e]:
                if (stops[e] <= s_max) if stop_rule == "paper" else (stops[e] < s_max):
                    step[e] *= gamma
                    stops[e] += 1
                else:
                    active[e] = False
                    continue
            else:
                stops[e] = 0
                if auc_s[j] < best_auc[e]:
                    best_auc[e], best_sigma[e] = auc_s[j], sigma[e]
                    best_attr[e], best_delta[e], best_fz[e] = attr_s[j], delta_s[j], fz_s[j]
            auc[e] = auc_s[j]
            iteration[e] += 1
        if bar is not None:
            bar.update(int(min(iteration.min(), i_max)))
    return AdaptiveNoisingResult(sigma=best_sigma * unit, objective=best_auc, attributions=best_attr, trace=trace,
                                 evaluations=evaluations, sigma_normalised=best_sigma, delta=best_delta,
                                 baseline_scores=best_fz, scores=fx, gradients=spent[0])
