"""SmoothTaylor and adaptive noising (Goh, Lapuschkin, Weber, Samek & Binder, ICPR 2020).

SmoothTaylor (eq. 6): ``ST_i(x) = (1/R) Σ_r (x_i − z_i⁽ʳ⁾) · ∂f(z⁽ʳ⁾)/∂x_i`` with roots
``z⁽ʳ⁾ = x + ε⁽ʳ⁾``, ``ε ~ N(0, σ²)``. In the engine's terms the roots are baselines and
each contributes one node ``α = 0`` with weight ``1/R``: the rows of IG_noise with one
step. The scores at ``α = 0`` are ``f(z⁽ʳ⁾)``, so the Taylor reconstruction error (eq. 8)
``|f(x) − mean_r f(z⁽ʳ⁾) − Σ_i ST_i|`` costs nothing extra.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Union

import numpy as np

from tfattr.baselines.registry import BaselineSet
from tfattr.core.engine import PathRows, progress_bar
from tfattr.core.inputs import validate_images, validate_value_range
from tfattr.core.random import STREAM_SMOOTH_TAYLOR, rng
from tfattr.core.result import Explanation
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import AttributionMethod, Explained

__all__ = ["SmoothTaylor", "adaptive_noising", "AdaptiveNoisingResult"]


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"`{name}` must be a positive integer. " + received(name, value))
    return int(value)


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
        value_range: ``(low, high)`` of the input space (default ``(0, 1)``).
        seed: seed of the roots (default 0). The draws ``ε`` are shared by every image of a
            batch and scaled by each image's σ, so a result does not depend on its batch.
        objective: for ``sigma="adaptive"``: ``"aupc"``, ``"autvc"`` or a callable (see
            :func:`adaptive_noising`).
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
    options = {"roots": 150, "sigma": 0.5, "noise_scale": "absolute", "value_range": (0.0, 1.0), "seed": 0,
               "objective": "aupc", "tolerance": None, "max_roots": 3000}

    def _check_options(self, config):
        _positive_int("roots", config["roots"])
        _positive_int("max_roots", config["max_roots"])
        tol = config["tolerance"]
        if tol is not None and not (isinstance(tol, (int, float, np.floating)) and np.isfinite(tol) and tol > 0):
            raise InvalidInputError("`tolerance` must be a positive number or None. " + received("tolerance", tol))
        config["value_range"] = validate_value_range(config["value_range"])
        if config["noise_scale"] not in ("absolute", "relative"):
            raise InvalidInputError("`noise_scale` must be 'absolute' or 'relative'. "
                                    + received("noise_scale", config["noise_scale"]))
        sigma = config["sigma"]
        if isinstance(sigma, str):
            if sigma != "adaptive":
                raise InvalidInputError("`sigma` must be a number, one number per image, or 'adaptive'. "
                                        + received("sigma", sigma))
            if config.get("output") is not None:
                raise InvalidInputError(
                    "Adaptive noising (sigma='adaptive') scores its maps with tfattr.metrics, which take a "
                    "model with one output; explain the single-output model of the chosen output instead, "
                    "e.g. keras.Model(model.input, model.outputs[i]). " + received("output", config["output"]))
        else:
            values = np.asarray(sigma, dtype=np.float64)
            if values.ndim > 1 or not np.all(np.isfinite(values)) or np.any(values < 0):
                raise InvalidInputError("`sigma` must be finite and ≥ 0 (a float or one per image). "
                                        + received("sigma", sigma))

    def describe(self, config) -> str:
        sigma = config["sigma"]
        shown = sigma if isinstance(sigma, str) or np.ndim(sigma) == 0 else "per-image"
        return f"smooth_taylor(roots={config['roots']}, sigma={shown}, noise_scale={config['noise_scale']})"

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
            fx = self.scores(x, targets, config["batch_size"])
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
        error = np.full(num_examples, np.inf)
        active = np.ones(num_examples, bool)
        gradients, block = 0, 0
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"])
        while active.any():
            todo = np.flatnonzero(active)
            roots = BaselineSet(self.roots(shape, config, block), "roots", relative=True, scale=sigma)
            rows = PathRows.grid(num_examples, block_size, np.zeros(1), np.full(1, float(block_size)),
                                 per_example_baselines=False)  # weight 1: raw per-root terms
            keep = np.isin(rows.example, todo)
            rows = PathRows(rows.example[keep], rows.baseline[keep], rows.alpha[keep], rows.weight[keep])
            result = self.integrate(x, roots, targets, rows, config)
            gradients += len(rows)
            total[todo] += result.attributions[todo]
            total_sq[todo] += result.squares[todo]
            fz_sum += np.bincount(rows.example, weights=result.row_scores, minlength=num_examples)
            count[todo] += block_size
            k = count[todo].reshape((-1,) + (1,) * len(shape)).astype(np.float64)
            mean = total[todo] / k
            variance = np.maximum(total_sq[todo] / k - mean**2, 0.0) * k / np.maximum(k - 1, 1)
            standard_error = np.sqrt((variance / k).reshape(len(todo), -1).sum(axis=1))
            size = np.sqrt((mean**2).reshape(len(todo), -1).sum(axis=1))
            error[todo] = np.where(size > 0, standard_error / np.where(size > 0, size, 1.0), standard_error)
            active[todo[(error[todo] <= tolerance) | (count[todo] + block_size > cap)]] = False
            block += 1
        if np.any(error > tolerance):
            warnings.warn(f"SmoothTaylor: {int(np.sum(error > tolerance))} of {num_examples} image(s) did not "
                          f"reach tolerance={tolerance:g} within max_roots={cap} (relative standard errors "
                          f"{np.round(error[error > tolerance], 5).tolist()}).", RuntimeWarning, stacklevel=4)
        attributions = total / count.reshape((-1,) + (1,) * len(shape))
        fz = fz_sum / count
        delta = attributions.reshape(num_examples, -1).sum(axis=1) - (fx - fz)
        return Explained(attributions=attributions, delta=delta, baseline_scores=fz, scores=fx, gradients=gradients,
                         info={"sigma": sigma, "taylor_error": np.abs(delta), "roots": count,
                               "relative_standard_error": error})

    def _adaptive(self, x, targets, fx, config) -> Explained:
        result = adaptive_noising(self, x.numpy(), objective=config["objective"], target=targets.indices,
                                  roots=config["roots"], seed=config["seed"], verbose=config["verbose"])
        out = self._explain(x, targets, fx, dict(config, sigma=result.sigma / self.absolute_sigma(1.0, config)))
        out["info"].update(trace=result.trace, objective=config["objective"], adaptive=True)
        return out


@dataclass
class AdaptiveNoisingResult:
    """What :func:`adaptive_noising` returns.

    Attributes:
        sigma: ``σ*`` per image (absolute, in input units).
        objective: the objective's value at ``σ*`` per image.
        attributions: SmoothTaylor at ``σ*`` (the evaluation that found it), ``(N, …)``.
        trace: per image, every evaluation as ``{"iteration", "sigma", "objective"}`` in order.
        evaluations: objective evaluations spent per image.
    """

    sigma: np.ndarray
    objective: np.ndarray
    attributions: np.ndarray
    trace: List[List[Dict[str, float]]] = field(default_factory=list)
    evaluations: Optional[np.ndarray] = None


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
                if s ≤ s_max:  α ← α·γ;  s ← s + 1
                else: break
            else:
                s ← 0
                if AUC_s < AUC*:  AUC* ← AUC_s;  σ* ← σ
            AUC ← AUC_s;  i ← i + 1
        return σ*

    Args:
        method: a :class:`SmoothTaylor` (its model, batch size and noise scale are used), or a
            Keras model (a default ``SmoothTaylor`` is built around it).
        images: ``(N, H, W, C)`` float images.
        objective: ``"aupc"`` (:func:`tfattr.metrics.aupc` area, the paper's first choice),
            ``"autvc"`` (:func:`tfattr.metrics.autvc`), or a callable
            ``(images, attributions, sigma, seed, target) -> (n,)`` to minimise, called on the
            images still searching.
        target: explained classes (default: top-1).
        roots: ``R`` per evaluation (paper: 150).
        sigma0: starting σ per image, in the method's noise units. Default: the authors' code,
            ``mean|x|`` of the input; the paper's slide writes ``(1/√N)·Σ|x|`` (pass it explicitly
            to follow the slide).
        i_max, s_max, alpha, gamma: Algorithm 1's parameters (paper: 20, 3, 0.1, 0.9).
        max_evaluations: optional budget of objective evaluations per image.
        seed: base seed; evaluation round ``k`` uses roots (and objective noise) seeded by
            ``(seed, k)``, so the trace is reproducible.
        fresh_noise: ``True`` (default, the authors' code): new roots every evaluation round;
            ``False``: the same standard-normal roots scaled by each σ (a smoother objective).

    Returns:
        :class:`AdaptiveNoisingResult` with ``σ*`` per image and the full trace.
    """
    if not isinstance(method, SmoothTaylor):
        method = SmoothTaylor(method)
    images_checked = validate_images(images, method.spec, name="images")
    x = images_checked.array.astype(np.float64)
    config = method._merge(method.config, {"roots": roots, "verbose": 0})
    score = _resolve_objective(objective, method.model, config["value_range"])
    n = len(x)
    if target is None:
        target = np.argmax(method.model.predict(x.astype(np.float32), verbose=0), axis=1)
    target = np.broadcast_to(np.asarray(target), (n,)).astype(np.int64)
    if sigma0 is None:
        sigma0 = np.abs(x).reshape(n, -1).mean(axis=1)  # authors' code: mean |x|
    sigma = np.broadcast_to(np.asarray(sigma0, np.float64), (n,)).copy()
    step = np.full(n, float(alpha))
    stops = np.zeros(n, int)
    iteration = np.ones(n, int)
    evaluations = np.zeros(n, int)
    active = np.ones(n, bool)
    trace: List[List[Dict[str, float]]] = [[] for _ in range(n)]
    best_attr = np.zeros(x.shape)
    rounds = [0]
    bar = progress_bar(i_max, verbose, unit="iteration")

    def compute(indices, sigmas):
        """ComputeAUC for images ``indices`` at ``sigmas`` (one engine call, one objective call)."""
        k = rounds[0]
        rounds[0] += 1
        cfg = dict(config, sigma=sigmas, seed=(seed * 1_000_003 + k) if fresh_noise else seed)
        expl = method.attribute(x[indices].astype(images_checked.array.dtype), target=target[indices], **{
            key: cfg[key] for key in ("sigma", "seed", "roots", "verbose")})
        attributions = np.asarray(expl, dtype=np.float64)
        values = np.asarray(score(x[indices], attributions, sigmas, seed * 7919 + k, target[indices]), np.float64)
        for j, e in enumerate(indices):
            evaluations[e] += 1
            trace[e].append({"iteration": int(iteration[e]), "sigma": float(sigmas[j]), "objective": float(values[j])})
        return values, attributions

    everyone = np.arange(n)
    auc, attr = compute(everyone, sigma)
    best_sigma, best_auc, best_attr = sigma.copy(), auc.copy(), attr.copy()
    budget = max_evaluations if max_evaluations is not None else np.inf
    while True:
        active &= (iteration <= i_max) & (evaluations < budget)
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        tried = np.abs(sigma[idx] + step[idx])
        auc_s, attr_s = compute(idx, tried)
        worse = auc_s > auc[idx]
        new_sigma = np.where(worse, np.abs(sigma[idx] - step[idx]), tried)
        back = idx[worse]
        if len(back):
            within = evaluations[back] < budget
            back_values, back_attr = compute(back[within], new_sigma[worse][within]) if within.any() else (None, None)
            positions = np.flatnonzero(worse)[within]
            if back_values is not None:
                auc_s[positions] = back_values
                attr_s[positions] = back_attr
        sigma[idx] = new_sigma
        for j, e in enumerate(idx):
            if auc_s[j] > auc[e]:
                if stops[e] <= s_max:
                    step[e] *= gamma
                    stops[e] += 1
                else:
                    active[e] = False
                    continue
            else:
                stops[e] = 0
                if auc_s[j] < best_auc[e]:
                    best_auc[e], best_sigma[e] = auc_s[j], sigma[e]
                    best_attr[e] = attr_s[j]
            auc[e] = auc_s[j]
            iteration[e] += 1
        if bar is not None:
            bar.update(int(min(iteration.min(), i_max)))
    scale = method.absolute_sigma(1.0, config)
    return AdaptiveNoisingResult(sigma=best_sigma * scale, objective=best_auc, attributions=best_attr,
                                 trace=trace, evaluations=evaluations)
