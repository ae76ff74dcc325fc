"""Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017) with every common baseline."""

from __future__ import annotations

import hashlib
import os

import numpy as np

import tensorflow as tf

from tfattr.baselines.registry import BaselineSet, is_random, make_baselines, make_baselines_per_input, uses_value_range
from tfattr.core import checks
from tfattr.core.adaptive import level_bounds, level_nodes, level_rows, relative_error
from tfattr.core.checks import Option
from tfattr.core.convergence import refine, relative_standard_error, warn_unconverged
from tfattr.core.engine import PathRows
from tfattr.core.quadrature import quadrature, rule_key
from tfattr.core.ranges import resolve_value_range
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import AttributionMethod, Explained, call_layout, with_options

__all__ = ["IntegratedGradients", "BASELINE_OPTIONS", "IG_OPTIONS"]

#: the options that make a method's baselines (IG, its guided and layer variants, RSI-Grad-CAM,
#: LayerConductance): :meth:`IntegratedGradients.make_baselines` reads them
BASELINE_OPTIONS = (
    Option("baseline", "zero", checks.baseline_value),
    Option("n_baselines", 1, checks.positive_int),
    Option("value_range", None, checks.value_range_pair),
    Option("seed", 0, checks.seed),
    Option("per_image_baselines", False, checks.boolean),
    Option("sigma", None, checks.optional(checks.non_negative_number)),
    Option("blur_sigma", 5.0, checks.non_negative_number),
    Option("value", None, checks.optional(checks.finite_number)),
)


def quadrature_rule(name: str, value) -> None:
    """A rule :func:`~tfattr.core.quadrature.quadrature` knows (short forms accepted)."""
    rule_key(value)


def _tolerance(what: str):
    def check(name, value):
        checks.positive_number(name, value, f" ({what}) or None")
    check.__name__ = "positive_number"
    return checks.optional(check)


#: IG's own options besides the baseline options (``steps``/``rule`` quadrature, the requested
#: accuracies and their budgets)
IG_OPTIONS = (
    Option("steps", 50, checks.path_steps),
    Option("rule", "riemann_right", quadrature_rule),
    Option("tolerance", None, _tolerance("a relative completeness error")),
    Option("max_steps", 1025, checks.at_least(2)),
    Option("min_steps", 3, checks.at_least(2)),
    Option("baseline_tolerance", None, _tolerance("a relative Monte-Carlo standard error")),
    Option("max_baselines", 64, checks.at_least(2)),
)


def _image_seed(seed, image: np.ndarray):
    """The seed of one image's own baseline draws: ``seed`` and a SHA-256 of its pixels as float64
    (``None`` stays fresh entropy)."""
    if seed is None:
        return None
    digest = hashlib.sha256(str(int(seed)).encode() + b":" + np.ascontiguousarray(image, np.float64).tobytes())
    return int.from_bytes(digest.digest()[:8], "little")


class IntegratedGradients(AttributionMethod):
    r"""Integrated Gradients, eq. (1) of Sundararajan et al. 2017, by quadrature (eq. 3):

    ``IG_i(x, z) = (x_i − z_i) · ∫₀¹ ∂f(z + α(x − z))/∂x_i dα
    ≈ (x_i − z_i) · Σ_m w_m ∂f(z + α_m(x − z))/∂x_i``

    With a random baseline and ``n_baselines = N`` it computes IG_noise, the average of
    IG over ``N`` baseline draws (SmoothTaylor paper, eq. 3), in the same batched pass.

    Options (constructor defaults, each overridable in :meth:`attribute`):
        baseline: ``"zero"`` (default), ``"black"``, ``"constant"``, ``"uniform"``,
            ``"gaussian"``, ``"blur"``, ``"max_distance"``, a number, an array or a callable
            (see :mod:`tfattr.baselines`).
        steps: quadrature nodes = gradient evaluations per baseline (default 50; the
            papers recommend 20–300; check ``Explanation.delta``).
        rule: ``"riemann_right"`` (default, the paper's), ``"riemann_left"``,
            ``"riemann_middle"``, ``"riemann_trapezoid"``, ``"gauss_legendre"`` (converges
            fastest on smooth paths).
        n_baselines: draws of a random baseline averaged (IG_noise's ``N``; default 1).
        value_range: ``(low, high)`` of the model's input space, used by the
            black/uniform/gaussian/max-distance baselines. ``None`` (default): the range the
            model declares (``model.tfattr_value_range``, set by
            :func:`tfattr.data.keras_application`), else ``(0, 1)``. With a baseline that uses it,
            inputs outside it raise a :class:`~tfattr.errors.ValueRangeWarning`.
        seed: seed of the baseline draws (default 0).
        per_image_baselines: ``False`` (default): draw ``n`` of a random baseline is the same for
            every image of a batch (it depends on ``seed`` and ``n`` only). ``True``: each image
            gets its own draws, as the SmoothTaylor authors' code draws IG_noise's baselines per
            image; image ``e``'s stream is seeded by ``seed`` and a SHA-256 of its pixels (as
            float64), so an image still gets the same result alone, in any batch or position,
            or on any replica, and two different images get independent draws. Holds ``N × K``
            baselines in memory instead of ``K``. No effect on deterministic baselines.
        sigma, blur_sigma, value: options of the gaussian, blur and constant baselines.
        tolerance: ask for an accuracy instead of a step count: refine each example on
            nested trapezoid grids (2, 3, 5, 9, 17, … nodes; no gradient is computed twice)
            until its relative completeness error ``|Σ IG − (f(x) − f(z))| / |f(x) − f(z)|``
            is at most ``tolerance`` (e.g. 0.01). ``steps`` and ``rule`` are then unused;
            ``info["steps"]`` and ``info["relative_error"]`` report what each example used.
            Completeness is a necessary check, not a proof (see :mod:`tfattr.core.adaptive`).
            Methods whose gradients do not integrate to ``f(x) − f(z)`` (guided IG) check the
            relative L1 change between successive levels instead.
        max_steps: gradient budget per path for ``tolerance`` (default 1025 = 2^10 + 1); a
            ``RuntimeWarning`` names the examples that did not converge.
        min_steps: at least this many nodes per path with ``tolerance`` (default 3).
        baseline_tolerance: ask for a Monte-Carlo accuracy instead of a draw count (random
            baselines only): draw baselines in blocks of ``n_baselines`` until the standard error
            of each example's IG_noise mean, relative to its norm (``‖SE‖₂ / ‖mean‖₂``, the
            sample variance of the per-draw IGs over the draws), is at most
            ``baseline_tolerance`` (e.g. 0.05). Converged examples stop drawing; the draws form
            one sequence, so with fixed ``steps`` a run that used ``K`` draws equals
            ``n_baselines=K`` with the same seed. Combines with ``tolerance``: each draw's path is
            then refined on its own grid (``n_baselines=K`` with ``tolerance`` refines an example's
            ``K`` paths together, on one grid).
            ``info["n_baselines"]`` and ``info["relative_standard_error"]`` report per example.
        max_baselines: draw budget per example for ``baseline_tolerance`` (default 64); a
            ``RuntimeWarning`` names the examples that did not converge.
        batch_size, verbose, parallel_chunks: see :class:`~tfattr.methods.base.AttributionMethod`.
        output: the explained output of a model with several (index or name; see
            :class:`~tfattr.methods.base.AttributionMethod`).

    Returns from :meth:`attribute` an :class:`~tfattr.Explanation` whose ``delta`` is the
    completeness delta ``Σ_i IG_i − (f(x) − mean_n f(z⁽ⁿ⁾))``.

    Example:
        >>> ig = IntegratedGradients(model, baseline="blur", steps=64, rule="gauss_legendre")
        >>> expl = ig.attribute(images, target=None)   # top-1 class
        >>> expl.attributions.shape, expl.delta
    """

    name = "integrated_gradients"
    #: how ``tolerance`` is checked: "completeness" (true gradients) or "successive" (the relative
    #: L1 change between nested levels, for gradients that do not integrate to f(x) − f(z))
    convergence = "completeness"
    options = checks.pick(BASELINE_OPTIONS + IG_OPTIONS, "baseline", "steps", "rule", "n_baselines", "value_range",
                          "seed", "per_image_baselines", "sigma", "blur_sigma", "value", "tolerance", "max_steps",
                          "min_steps", "baseline_tolerance", "max_baselines")

    def check_combination(self, config):
        quadrature(config["rule"], config["steps"])  # raises on a bad rule/steps
        config["value_range"] = resolve_value_range(config["value_range"], self.model)
        if config.get("baseline_tolerance") is not None and not is_random(config["baseline"]):
            raise InvalidInputError("`baseline_tolerance` needs a random baseline ('uniform' or 'gaussian'); "
                                    "a deterministic baseline has no Monte-Carlo error. "
                                    + received("baseline", config["baseline"]))

    def describe(self, config) -> str:
        baseline = config["baseline"] if isinstance(config["baseline"], str) else "custom"
        if config.get("baseline_tolerance") is not None:
            baseline += f" to {config['baseline_tolerance']:g} s.e."
        elif config.get("n_baselines", 1) > 1:
            baseline += f" x{config['n_baselines']}"
        if config.get("per_image_baselines") and is_random(config["baseline"]):
            baseline += " per image"
        if config.get("tolerance") is not None:
            return f"{self.name}(baseline={baseline}, tolerance={config['tolerance']:g})"
        return f"{self.name}(baseline={baseline}, steps={config['steps']}, rule={config['rule']})"

    def uses_value_range(self, config) -> bool:
        """``value_range`` shapes the black, uniform, Gaussian and max-distance baselines only."""
        return uses_value_range(config["baseline"])

    def _cache_state(self, config):
        from tfattr.baselines.shipped import resolve

        baseline = resolve(config["baseline"])  # "shipped:NAME" is keyed by its folder's content too
        if isinstance(baseline, str) and os.path.isdir(baseline):  # a saved baseline folder (as the registry)
            from tfattr.baselines.saved import folder_digest

            return {"baseline_folder": folder_digest(baseline)}
        return {}

    def make_baselines(self, x_array: np.ndarray, config):
        options = dict(value_range=config["value_range"], n_baselines=config["n_baselines"], sigma=config["sigma"],
                       blur_sigma=config["blur_sigma"], value=config["value"])
        layout = call_layout(config)
        if layout is not None:  # several inputs: one baseline value for all, or one per input
            if config.get("per_image_baselines") and is_random(config["baseline"]):
                raise InvalidInputError("`per_image_baselines` is for one input; a model with several inputs draws "
                                        "shared baselines. " + received("per_image_baselines", True))
            return make_baselines_per_input(config["baseline"], layout, x_array, seed=config["seed"], **options)
        if not (config.get("per_image_baselines") and is_random(config["baseline"])):
            return make_baselines(config["baseline"], x_array, seed=config["seed"], **options)
        sets = [make_baselines(config["baseline"], x_array[e:e + 1], seed=_image_seed(config["seed"], x_array[e]),
                               **options) for e in range(len(x_array))]
        return BaselineSet(np.concatenate([one.array for one in sets]), sets[0].name + " per image",
                           relative=sets[0].relative, clip=sets[0].clip)

    def _explain(self, x, targets, fx, config, baselines: BaselineSet = None) -> Explained:
        if baselines is None and config.get("baseline_tolerance") is not None:
            return self._explain_draws(x, targets, fx, config)
        if config.get("tolerance") is not None:
            return self._explain_adaptive(x, targets, fx, config, baselines)
        if baselines is None:
            baselines = self.make_baselines(x.numpy(), config)
        alphas, weights = quadrature(config["rule"], config["steps"])
        num_examples = int(x.shape[0])
        rows = PathRows.grid(num_examples, baselines.count, alphas, weights, baselines.per_example)
        result = self.integrate(x, baselines, targets, rows, config)
        fz = self.baseline_scores(x, baselines, targets, rows, result, config)
        if fx is None:
            fx = self.scores_at_input(rows, result, num_examples)
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"], layout=call_layout(config))
        total = result.attributions.reshape(num_examples, -1).sum(axis=1)
        return Explained(
            attributions=result.attributions,
            delta=total - (fx - fz),
            baseline_scores=fz,
            scores=fx,
            gradients=len(rows),
            info={"baseline": baselines.name, "rule": config["rule"], "steps": config["steps"],
                  "n_baselines": baselines.count},
        )

    def _explain_adaptive(self, x, targets, fx, config, baselines: BaselineSet = None) -> Explained:
        """Nested trapezoid levels until ``relative completeness error ≤ tolerance`` per example
        (:mod:`tfattr.core.adaptive`); only unconverged examples get more rows."""
        if baselines is None:
            baselines = self.make_baselines(x.numpy(), config)
        num_examples, count = int(x.shape[0]), baselines.count
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"], layout=call_layout(config))
        tolerance = float(config["tolerance"])
        bottom, top = level_bounds(config["min_steps"], config["max_steps"])
        shape = tuple(x.shape[1:])
        ends = np.zeros((num_examples,) + shape)  # ½ G(0) + ½ G(1), averaged over baselines
        inner = np.zeros((num_examples,) + shape)  # Σ_l S_l, averaged over baselines
        level = np.zeros(num_examples, int)
        fz = np.zeros(num_examples)
        previous = np.zeros((num_examples,) + shape)
        nodes = [[] for _ in range(num_examples)]
        evaluated = 0

        def level_k(k, todo):
            """Add level ``k``'s nodes for ``todo``; their relative errors after it."""
            nonlocal evaluated, fz
            rows = level_rows(k, num_examples, count, todo, baselines.per_example)
            result = self.integrate(x, baselines, targets, rows, config)
            evaluated += len(rows)
            if k == 0:
                ends[:] += 0.5 * result.attributions
                fz = self.baseline_scores(x, baselines, targets, rows, result, config)
            else:
                inner[todo] += result.attributions[todo]
            for e in todo:
                nodes[e].extend(level_nodes(k).tolist())
            level[todo] = k
            estimate = (ends[todo] + inner[todo]) / 2.0**k
            error = None
            if self.convergence == "completeness":
                error = relative_error(estimate.reshape(len(todo), -1).sum(axis=1), fx[todo] - fz[todo])
            elif k > 0:
                change = np.abs(estimate - previous[todo]).reshape(len(todo), -1).sum(axis=1)
                size = np.abs(estimate).reshape(len(todo), -1).sum(axis=1)
                error = np.where(size > 0, change / np.where(size > 0, size, 1), change)
            previous[todo] = estimate
            return error

        refined = refine(level_k, num_examples, tolerance, min_rounds=bottom + 1, max_rounds=top + 1)
        warn_unconverged(type(self).__name__, refined, "tolerance", tolerance, "max_steps", config["max_steps"],
                         errors=f"relative {self.convergence} errors", digits=6, tail="returning the finest level",
                         stacklevel=5)
        attributions = (ends + inner) / (2.0**level).reshape((-1,) + (1,) * len(shape))
        steps = 2**level + 1
        total = attributions.reshape(num_examples, -1).sum(axis=1)
        return Explained(
            attributions=attributions, delta=total - (fx - fz), baseline_scores=fz, scores=fx, gradients=evaluated,
            info={"baseline": baselines.name, "rule": "adaptive_trapezoid", "steps": steps,
                  "converged": refined.converged, "relative_error": refined.error, "nodes": nodes,
                  "n_baselines": count, "tolerance": tolerance},
        )

    def _explain_draws(self, x, targets, fx, config) -> Explained:
        """IG_noise to a requested Monte-Carlo accuracy (``baseline_tolerance``).

        Blocks of ``n_baselines`` draws are taken from one sequence (draw ``k`` is the same
        whatever the block size). Each (example, draw) pair runs as its own path — the example
        repeated, one baseline per copy — so the per-draw IGs give the sample variance; the
        standard error of the mean is ``sqrt(Σ_i var_i / K)``, relative to ``‖mean‖₂``
        (:func:`~tfattr.core.convergence.relative_standard_error`).
        """
        block, cap, tolerance = int(config["n_baselines"]), int(config["max_baselines"]), float(config["baseline_tolerance"])
        num_examples, shape = int(x.shape[0]), tuple(x.shape[1:])
        x_host = x.numpy()
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"], layout=call_layout(config))
        total, total_sq = np.zeros((num_examples,) + shape), np.zeros((num_examples,) + shape)
        delta_sum, base_sum = np.zeros(num_examples), np.zeros(num_examples)
        count = np.zeros(num_examples, int)
        gradients, steps, bank, drawn = 0, {}, None, 0

        def draw_block(round_, todo):
            """The next block of draws for ``todo``; their relative standard errors after it."""
            nonlocal gradients, bank, drawn
            size = min(block, cap - drawn)
            if bank is None or bank.count < drawn + size:  # draws 0..K−1 of one sequence, grown by doubling
                grown = min(cap, max(2 * drawn, drawn + size))
                bank = self.make_baselines(x_host, with_options(config, n_baselines=grown))
            part = bank.array[todo if bank.per_example else slice(None), drawn:drawn + size]  # shared unless per image
            pseudo = BaselineSet(np.broadcast_to(part, (len(todo),) + part.shape[1:]).reshape((len(todo) * size, 1) + part.shape[2:]),
                                 bank.name, relative=bank.relative, clip=bank.clip)
            out = self._explain(tf.repeat(tf.gather(x, todo), size, axis=0),
                                targets.subset(todo).repeat(size), np.repeat(fx[todo], size),
                                with_options(config, n_baselines=1), baselines=pseudo)
            gradients += int(out.get("gradients", 0))
            per_draw = out["attributions"].reshape((len(todo), size) + shape)
            total[todo] += per_draw.sum(axis=1)
            total_sq[todo] += (per_draw**2).sum(axis=1)
            delta_sum[todo] += out["delta"].reshape(len(todo), size).sum(axis=1)
            base_sum[todo] += out["baseline_scores"].reshape(len(todo), size).sum(axis=1)
            if "steps" in out.get("info", {}) and np.ndim(out["info"]["steps"]):
                for i, e in enumerate(todo):
                    steps.setdefault(int(e), []).extend(np.asarray(out["info"]["steps"]).reshape(len(todo), size)[i].tolist())
            count[todo] += size
            drawn += size
            return relative_standard_error(total[todo], total_sq[todo], count[todo])

        refined = refine(draw_block, num_examples, tolerance,
                         budget=lambda rounds, todo: np.full(len(todo), drawn < cap))
        warn_unconverged(type(self).__name__, refined, "baseline_tolerance", tolerance, "max_baselines", cap,
                         tail=f"returning the mean of {cap} draws", stacklevel=5)
        error, active = refined.error, ~refined.converged
        k = count.reshape((-1,) + (1,) * len(shape)).astype(np.float64)
        fz = base_sum / count
        info = {"baseline": bank.name.split(" x")[0], "n_baselines": count, "relative_standard_error": error,
                "baseline_converged": ~active, "baseline_tolerance": tolerance}
        if config.get("tolerance") is not None:
            info.update(rule="adaptive_trapezoid", steps=[steps.get(e, []) for e in range(num_examples)])
        else:
            info.update(rule=config["rule"], steps=config["steps"])
        return Explained(attributions=total / k, delta=delta_sum / count, baseline_scores=fz, scores=fx,
                         gradients=gradients, info=info)
