"""Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017) with every common baseline."""

from __future__ import annotations

import warnings

import numpy as np

from tfattr.baselines.registry import make_baselines
from tfattr.core.adaptive import level_nodes, max_level_for
from tfattr.core.engine import PathRows
from tfattr.core.inputs import validate_value_range
from tfattr.core.quadrature import quadrature
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import AttributionMethod, Explained

__all__ = ["IntegratedGradients"]


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
        value_range: ``(low, high)`` of the model's input space (default ``(0, 1)``), used
            by the black/uniform/gaussian/max-distance baselines.
        seed: seed of the baseline draws (default 0).
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
        batch_size, verbose: see :class:`~tfattr.methods.base.AttributionMethod`.

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
    options = {
        "baseline": "zero",
        "steps": 50,
        "rule": "riemann_right",
        "n_baselines": 1,
        "value_range": (0.0, 1.0),
        "seed": 0,
        "sigma": None,
        "blur_sigma": 5.0,
        "value": None,
        "tolerance": None,
        "max_steps": 1025,
        "min_steps": 3,
    }

    def _check_options(self, config):
        quadrature(config["rule"], config["steps"])  # raises on a bad rule/steps
        config["value_range"] = validate_value_range(config["value_range"])
        n = config["n_baselines"]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidInputError("`n_baselines` must be a positive integer. " + received("n_baselines", n))
        tol = config.get("tolerance")
        if tol is not None and not (isinstance(tol, (int, float, np.floating)) and np.isfinite(tol) and tol > 0):
            raise InvalidInputError("`tolerance` must be a positive number (a relative completeness error) or "
                                    "None. " + received("tolerance", tol))
        for key in ("max_steps", "min_steps"):
            if key in config:
                value = config[key]
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
                    raise InvalidInputError(f"`{key}` must be an integer ≥ 2. " + received(key, value))

    def describe(self, config) -> str:
        return f"{self.name}(baseline={config['baseline'] if isinstance(config['baseline'], str) else 'custom'}, steps={config['steps']}, rule={config['rule']})"

    def make_baselines(self, x_array: np.ndarray, config):
        return make_baselines(
            config["baseline"],
            x_array,
            value_range=config["value_range"],
            n_baselines=config["n_baselines"],
            seed=config["seed"],
            sigma=config["sigma"],
            blur_sigma=config["blur_sigma"],
            value=config["value"],
        )

    def _explain(self, x, targets, fx, config) -> Explained:
        if config.get("tolerance") is not None:
            return self._explain_adaptive(x, targets, fx, config)
        baselines = self.make_baselines(x.numpy(), config)
        alphas, weights = quadrature(config["rule"], config["steps"])
        num_examples = int(x.shape[0])
        rows = PathRows.grid(num_examples, baselines.count, alphas, weights, baselines.per_example)
        result = self.integrate(x, baselines, targets, rows, config)
        fz = self.baseline_scores(x, baselines, targets, rows, result, config)
        if fx is None:
            fx = self.scores_at_input(rows, result, num_examples)
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"])
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

    def _explain_adaptive(self, x, targets, fx, config) -> Explained:
        """Nested trapezoid levels until ``relative completeness error ≤ tolerance`` per example
        (:mod:`tfattr.core.adaptive`); only unconverged examples get more rows."""
        baselines = self.make_baselines(x.numpy(), config)
        num_examples, count = int(x.shape[0]), baselines.count
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"])
        tolerance = float(config["tolerance"])
        top = max_level_for(config["max_steps"])
        bottom = 0  # the first level with at least min_steps nodes
        while 2**bottom + 1 < config["min_steps"]:
            bottom += 1
        bottom = min(bottom, top)
        shape = tuple(x.shape[1:])
        ends = np.zeros((num_examples,) + shape)  # ½ G(0) + ½ G(1), averaged over baselines
        inner = np.zeros((num_examples,) + shape)  # Σ_l S_l, averaged over baselines
        level = np.zeros(num_examples, int)
        active = np.ones(num_examples, bool)
        fz = np.zeros(num_examples)
        error = np.full(num_examples, np.inf)
        previous = np.zeros((num_examples,) + shape)
        nodes = [[] for _ in range(num_examples)]
        evaluated = 0
        for k in range(top + 1):
            todo = np.flatnonzero(active)
            if len(todo) == 0:
                break
            alphas = level_nodes(k)
            weights = np.full(len(alphas), 1.0)
            rows = PathRows.grid(num_examples, count, alphas, weights, baselines.per_example)
            keep = np.isin(rows.example, todo)
            rows = PathRows(rows.example[keep], rows.baseline[keep], rows.alpha[keep], rows.weight[keep])
            result = self.integrate(x, baselines, targets, rows, config)
            evaluated += len(rows)
            if k == 0:
                ends += 0.5 * result.attributions
                fz = self.baseline_scores(x, baselines, targets, rows, result, config)
            else:
                inner[todo] += result.attributions[todo]
            for e in todo:
                nodes[e].extend(alphas.tolist())
            level[todo] = k
            estimate = (ends[todo] + inner[todo]) / 2.0**k
            if self.convergence == "completeness":
                gap = fx[todo] - fz[todo]
                total = estimate.reshape(len(todo), -1).sum(axis=1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    error[todo] = np.where(gap != 0, np.abs(total - gap) / np.abs(np.where(gap != 0, gap, 1)),
                                           np.abs(total - gap))
            elif k > 0:
                change = np.abs(estimate - previous[todo]).reshape(len(todo), -1).sum(axis=1)
                size = np.abs(estimate).reshape(len(todo), -1).sum(axis=1)
                error[todo] = np.where(size > 0, change / np.where(size > 0, size, 1), change)
            previous[todo] = estimate
            done = todo[(error[todo] <= tolerance) & (k >= bottom)]
            active[done] = False
        attributions = (ends + inner) / (2.0**level).reshape((-1,) + (1,) * len(shape))
        steps = 2**level + 1
        if active.any():
            warnings.warn(
                f"IntegratedGradients: {int(active.sum())} of {num_examples} example(s) did not reach "
                f"tolerance={tolerance:g} within max_steps={config['max_steps']} (relative {self.convergence} "
                f"errors {np.round(error[active], 6).tolist()}); returning the finest level.",
                RuntimeWarning, stacklevel=4)
        total = attributions.reshape(num_examples, -1).sum(axis=1)
        return Explained(
            attributions=attributions, delta=total - (fx - fz), baseline_scores=fz, scores=fx, gradients=evaluated,
            info={"baseline": baselines.name, "rule": "adaptive_trapezoid", "steps": steps, "converged": ~active,
                  "relative_error": error, "nodes": nodes, "n_baselines": count, "tolerance": tolerance},
        )
