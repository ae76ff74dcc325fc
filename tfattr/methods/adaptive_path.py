"""Adaptive-path Integrated Gradients: Guided IG of Kapishnikov et al. (CVPR 2021), as PAIR
saliency's ``saliency.core.GuidedIG``. Not tfattr's :class:`~tfattr.GuidedIntegratedGradients`
(Kwon et al.'s guided back-propagation along IG's straight path)."""

from __future__ import annotations

import math

import numpy as np

from tfattr.baselines.registry import make_baselines, uses_value_range
from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import PathRows
from tfattr.core.ranges import resolve_value_range
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import AttributionMethod, Explained
from tfattr.methods.integrated_gradients import BASELINE_OPTIONS

__all__ = ["AdaptivePathIntegratedGradients", "adaptive_path_step"]

#: PAIR's tolerance for "the L1 distance has reached this step's target"
EPSILON = 1e-9


def adaptive_path_step(x, x_input, x_baseline, grad, step, steps, fraction, max_dist, l1_total):
    """One step of Guided IG (Kapishnikov et al. 2021, Algorithm 1 with PAIR's ``max_dist`` bound) for
    one example, in float64, as PAIR's ``guided_ig_impl``: move the features of lowest ``|grad|``
    (the ``fraction`` quantile, ``method="lower"``) towards the input until the L1 distance to the
    input is ``l1_total · (1 − (step + 1)/steps)``, no feature leaving
    ``[α − max_dist, α + max_dist]`` of the straight path (``α = (step + 1)/steps``).

    Returns ``(x_next, contribution)`` with ``contribution = Σ_sub (x_sub − x_sub−1) ⊙ grad``
    (``grad`` taken at ``x``, the step's start: a left Riemann–Stieltjes sum along the path).

    Raises :class:`~tfattr.errors.InvalidInputError` for a NaN in ``grad`` (no feature order
    exists: PAIR's loop never ends)."""
    if np.isnan(grad).any():
        raise InvalidInputError("`grad` must not hold NaN: the features cannot be ordered by |gradient|. "
                                + received("grad", f"{int(np.isnan(grad).sum())} NaN of {grad.size}"))
    x = x.copy()
    diff = x_input - x_baseline
    contribution = np.zeros_like(x)
    alpha = (step + 1.0) / steps
    alpha_min, alpha_max = max(alpha - max_dist, 0.0), min(alpha + max_dist, 1.0)
    x_min, x_max = x_baseline + diff * alpha_min, x_baseline + diff * alpha_max
    l1_target = l1_total * (1 - (step + 1) / steps)
    moving = diff != 0
    abs_grad = np.abs(grad)
    gamma = np.inf
    while gamma > 1.0:
        x_old = x.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            x_alpha = np.where(moving, (x - x_baseline) / diff, alpha_max)
        behind = x_alpha < alpha_min
        x[behind] = x_min[behind]
        l1_current = np.abs(x - x_input).sum()
        if math.isclose(l1_target, l1_current, rel_tol=EPSILON, abs_tol=EPSILON):
            contribution += (x - x_old) * grad
            break
        at_max = x == x_max  # excluded from the selection (PAIR: their gradient set to +inf)
        candidates = np.where(at_max, np.inf, abs_grad)
        threshold = np.quantile(candidates, fraction, method="lower")
        selected = (candidates <= threshold) & ~at_max
        l1_s = (np.abs(x - x_max) * selected).sum()
        gamma = (l1_current - l1_target) / l1_s if l1_s > 0 else np.inf
        if gamma > 1.0:
            x[selected] = x_max[selected]
        else:
            x[selected] = (x + (x_max - x) * gamma)[selected]
        contribution += (x - x_old) * grad
    return x, contribution


def _fraction(name, value):
    checks.probability(name, value)


class AdaptivePathIntegratedGradients(AttributionMethod):
    r"""PAIR's GuidedIG: Guided Integrated Gradients (Kapishnikov et al., CVPR 2021), an adaptive path.

    IG integrates along the straight line from a baseline ``z`` to the input ``x``; Guided IG
    builds the path as it goes (Algorithm 1): at each of ``steps`` steps it takes the gradient
    ``g`` at the current point ``γ`` and moves only the features of smallest ``|g_i|`` (a
    ``fraction`` of them, repeated until the step's L1 budget is spent) towards ``x``, so that the
    L1 distance to ``x`` falls to ``‖x − z‖₁ · (1 − k/steps)`` after step ``k``; no feature strays
    more than ``max_dist`` (in α) from the straight path. The attribution is the path integral's
    sum ``φ = Σ_k (γ_{k+1} − γ_k) ⊙ ∇f(γ_k)``, which tends to ``f(x) − f(z)`` summed over features
    as ``steps`` grows (completeness: ``Explanation.delta``).

    Equal to PAIR saliency's ``GuidedIG.GetMask(x, …, x_baseline=z, x_steps=steps,
    fraction=fraction, max_dist=max_dist)`` up to float32 rounding of the gradients (the path
    itself is computed in float64 as PAIR's). ``max_dist=0`` is IG on the straight line with the
    left Riemann rule.

    The path is sequential in its steps, not in the examples: each step takes one gradient row
    per example of the call, all examples in one engine pass (chunks of ``batch_size``), and the
    path update runs per example on the host.

    Options (constructor defaults, each overridable in :meth:`attribute`):
        steps: gradient evaluations per example (default 200, PAIR's ``x_steps``).
        fraction: the share of features (by smallest ``|gradient|``, PAIR's ``np.quantile(…,
            'lower')``) moved in each sub-step (default 0.25, PAIR's), in ``[0, 1]``.
        max_dist: how far (in α, the relative L1 position) any feature may run ahead of or fall
            behind the straight path, in ``[0, 1]`` (default 0.02, PAIR's); 0 is straight-line IG,
            1 an unbounded path inside the box between ``z`` and ``x``.
        baseline: ``"zero"`` (default, PAIR's), ``"black"``, ``"constant"``, ``"uniform"``,
            ``"gaussian"``, ``"blur"``, ``"max_distance"``, a number, an array or a callable (see
            :mod:`tfattr.baselines`); one baseline per example.
        value_range, seed, sigma, blur_sigma, value: options of the baselines (see
            :class:`~tfattr.IntegratedGradients`).
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod` (one input only: ``fixed_inputs``
            stays ``None``).

    Returns from :meth:`attribute` an :class:`~tfattr.Explanation` with ``baseline_scores``
    ``f(z)`` (the first step's score) and ``delta = Σ φ − (f(x) − f(z))``; ``info["path_l1"]``
    holds each example's ``‖x − z‖₁``. An example whose gradient is NaN at some point of its path
    (e.g. ``sqrt`` of a negative value) gets NaN attributions, as :class:`~tfattr.Gradient` would.

    Example:
        >>> apig = AdaptivePathIntegratedGradients(model, steps=200, fraction=0.25, max_dist=0.02)
        >>> expl = apig.attribute(images, target=None)
    """

    name = "adaptive_path_integrated_gradients"
    options = (
        Option("steps", 200, checks.path_steps),
        Option("fraction", 0.25, _fraction),
        Option("max_dist", 0.02, checks.probability),
    ) + checks.pick(BASELINE_OPTIONS, "baseline", "value_range", "seed", "sigma", "blur_sigma", "value")
    combine = "plain"
    several_inputs = False

    def check_combination(self, config):
        config["value_range"] = resolve_value_range(config["value_range"], self.model)

    def uses_value_range(self, config) -> bool:
        return uses_value_range(config["baseline"])

    def describe(self, config) -> str:
        baseline = config["baseline"] if isinstance(config["baseline"], str) else "custom"
        return (f"{self.name}(baseline={baseline}, steps={config['steps']}, fraction={config['fraction']:g}, "
                f"max_dist={config['max_dist']:g})")

    def _baselines(self, x_host: np.ndarray, config) -> np.ndarray:
        made = make_baselines(config["baseline"], x_host, value_range=config["value_range"], n_baselines=1,
                              seed=config["seed"], sigma=config["sigma"], blur_sigma=config["blur_sigma"],
                              value=config["value"])
        starts = np.asarray(made.materialize(x_host), np.float64)[:, 0]
        return np.broadcast_to(starts, x_host.shape).copy()

    def _explain(self, x, targets, fx, config) -> Explained:
        num_examples = int(x.shape[0])
        x_input = x.numpy().astype(np.float64)
        x_baseline = self._baselines(x_input, config)
        steps, fraction, max_dist = int(config["steps"]), float(config["fraction"]), float(config["max_dist"])
        flat_input, flat_baseline = x_input.reshape(num_examples, -1), x_baseline.reshape(num_examples, -1)
        l1_total = np.abs(flat_input - flat_baseline).sum(axis=1)
        point = flat_baseline.copy()
        attributions = np.zeros_like(flat_input)
        zero = self.to_model_dtype(np.zeros((1,) + tuple(x.shape[1:])))
        rows = PathRows.grid(num_examples, 1, np.ones(1), np.ones(1), per_example_baselines=False)
        engine = self.engine(targets, config)  # "plain" rows at the points: the engine's gradient-only chunks
        indices = targets.indices if targets.indices is not None else np.zeros(num_examples, np.int32)
        moving = np.flatnonzero(l1_total > 0)  # an input equal to its baseline gets 0 (PAIR)
        fz = None
        for step in range(steps):
            at = self.to_model_dtype(point.reshape(x_input.shape))
            result = engine.integrate(at, zero, indices, rows, combine="plain")  # one gradient row per example
            if step == 0:
                fz = result.row_scores.copy()
            grads = result.attributions.reshape(num_examples, -1)
            broken = np.isnan(grads[moving]).any(axis=1)
            if broken.any():  # a NaN gradient orders no features: the example's path stops, its sums are NaN
                attributions[moving[broken]] = np.nan
                moving = moving[~broken]
            for e in moving:
                point[e], contribution = adaptive_path_step(point[e], flat_input[e], flat_baseline[e], grads[e], step,
                                                            steps, fraction, max_dist, l1_total[e])
                attributions[e] += contribution
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"])
        total = attributions.sum(axis=1)
        return Explained(attributions=attributions.reshape(x_input.shape), delta=total - (fx - fz),
                         baseline_scores=fz, scores=np.asarray(fx, np.float64), gradients=num_examples * steps,
                         info={"steps": steps, "fraction": fraction, "max_dist": max_dist, "path_l1": l1_total})
