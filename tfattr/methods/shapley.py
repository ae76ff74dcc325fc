"""Shapley values of feature groups on forward rows: KernelSHAP (Lundberg & Lee, NeurIPS 2017) and
Shapley value sampling (Castro, Gómez & Tejada 2009; captum's ``ShapleyValueSampling``)."""

from __future__ import annotations

import itertools
import math
from typing import Dict, List, Tuple

import numpy as np

from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.random import STREAM_SHAPLEY_SAMPLING, legacy_state, rng
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import Explained
from tfattr.methods.coalitions import (
    BITS_PER_WORD,
    COALITION_OPTIONS,
    CoalitionMethod,
    check_coalitions,
    pack_coalitions,
    prefix_words,
)

__all__ = ["KernelShap", "ShapleyValueSampling", "kernel_shap_coalitions", "shapley_kernel_solve",
           "permutation_plan"]

#: the most groups KernelSHAP solves for (its least squares holds an (S, M) matrix per example)
MAX_KERNEL_GROUPS = 4096
#: the most groups whose M! permutations Shapley value sampling enumerates when asked for as many
MAX_ENUMERATED_GROUPS = 8


def _samples_check(name: str, value) -> None:
    """``"auto"`` or a positive integer."""
    if isinstance(value, str) and value == "auto":
        return
    checks.positive_int(name, value)


def kernel_shap_coalitions(groups: int, n_samples, seed=0) -> Tuple[np.ndarray, np.ndarray, bool]:
    """The coalitions and kernel weights of KernelSHAP, drawn as the ``shap`` package's
    ``KernelExplainer`` draws them (``shap/explainers/_kernel.py``, ``explain``).

    Subset sizes ``1 … M − 1`` are visited from the outside in (size ``s`` with its complement
    size ``M − s``): while the samples left cover every subset of a size and its complement
    (their share of the Shapley kernel's mass ``(M − 1) / (s (M − s))`` times the samples left is
    at least one per subset), all of them are enumerated with weight ``kernel(s) / C(M, s)``; the
    rest of the budget draws a size from the kernel's remaining mass and a uniform subset of
    it, each with its complement (paired sampling), a repeated subset adding to its weight; the
    drawn weights are scaled to the mass not enumerated. With ``n_samples ≥ 2^M − 2`` every
    coalition but the empty and the full one is enumerated: the solution is then the exact
    Shapley values.

    Args:
        groups: ``M``.
        n_samples: coalitions (``"auto"``: ``2 M + 2048``, shap's default).
        seed: seed of the draws (they depend on it and on ``M`` only): a
            ``numpy.random.RandomState(seed)`` called as shap calls ``np.random``, so shap's
            ``KernelExplainer`` after ``np.random.seed(seed)`` draws the same coalitions.

    Returns:
        ``(coalitions (S, M) bool, weights (S,), exact)``; the empty and full coalitions are not
        included (the constraints of :func:`shapley_kernel_solve` hold them).
    """
    m = int(groups)
    samples = 2 * m + 2048 if n_samples == "auto" else int(n_samples)
    if m <= 30:
        samples = min(samples, 2 ** m - 2)
    # shap's draws: numpy's legacy generator, called as KernelExplainer calls np.random (one
    # choice of sizes, then a permutation per draw), so np.random.seed(seed) there draws the same
    generator = legacy_state(seed)  # RandomState(seed) below 2**32, as shap / lime
    num_sizes = int(np.ceil((m - 1) / 2.0))
    num_paired = int(np.floor((m - 1) / 2.0))
    kernel = np.array([(m - 1.0) / (s * (m - s)) for s in range(1, num_sizes + 1)])
    kernel[:num_paired] *= 2
    kernel /= kernel.sum()
    masks: List[np.ndarray] = []
    weights: List[float] = []
    full_sizes, left = 0, samples
    remaining = kernel.copy()
    for size in range(1, num_sizes + 1):
        subsets = math.comb(m, size) * (2 if size <= num_paired else 1)
        if left * remaining[size - 1] / subsets < 1.0 - 1e-8:
            break
        full_sizes += 1
        left -= subsets
        if remaining[size - 1] < 1.0:
            remaining /= 1 - remaining[size - 1]
        weight = kernel[size - 1] / math.comb(m, size) / (2.0 if size <= num_paired else 1.0)
        for chosen in itertools.combinations(range(m), size):
            mask = np.zeros(m, bool)
            mask[list(chosen)] = True
            masks.append(mask)
            weights.append(weight)
            if size <= num_paired:
                masks.append(~mask)
                weights.append(weight)
    fixed = len(masks)
    left = samples - fixed
    if full_sizes != num_sizes and left > 0:
        remaining = kernel.copy()
        remaining[:num_paired] /= 2
        remaining = remaining[full_sizes:]
        remaining /= remaining.sum()
        sizes = generator.choice(len(remaining), 4 * left, p=remaining)
        seen: Dict[bytes, int] = {}
        position = 0
        while left > 0 and position < len(sizes):
            size = int(sizes[position]) + full_sizes + 1
            position += 1
            mask = np.zeros(m, bool)
            mask[generator.permutation(m)[:size]] = True
            key = mask.tobytes()
            new = key not in seen
            if new:
                seen[key] = len(masks)
                left -= 1
                masks.append(mask)
                weights.append(1.0)
            else:
                weights[seen[key]] += 1.0
            if left > 0 and size <= num_paired:
                if new:
                    left -= 1
                    masks.append(~mask)
                    weights.append(1.0)
                else:
                    weights[seen[key] + 1] += 1.0
        drawn = np.asarray(weights[fixed:])
        weights[fixed:] = list(drawn * kernel[full_sizes:].sum() / drawn.sum())
    coalitions = np.asarray(masks, bool).reshape(-1, m)
    return coalitions, np.asarray(weights, np.float64), full_sizes == num_sizes


def shapley_kernel_solve(coalitions: np.ndarray, weights: np.ndarray, scores: np.ndarray, fx: float,
                         fb: float) -> np.ndarray:
    """KernelSHAP's weighted least squares with the efficiency constraint ``Σ φ = f(x) − f(b)``
    enforced exactly by eliminating the last group (as ``shap``'s ``KernelExplainer.solve``):
    ``min_φ Σ_z π(z) (f(z) − f(b) − z·φ)²``.

    Args:
        coalitions: ``(S, M)`` 0/1.
        weights: ``(S,)`` kernel weights.
        scores: ``(S,)`` ``f`` at each coalition.
        fx, fb: ``f(x)`` and ``f(b)``.

    Returns:
        ``(M,)`` float64 ``φ``.
    """
    z = np.asarray(coalitions, np.float64)
    m = z.shape[1]
    total = float(fx) - float(fb)
    if m == 1:
        return np.array([total])
    y = np.asarray(scores, np.float64) - float(fb) - z[:, -1] * total
    design = z[:, :-1] - z[:, -1:]
    root = np.sqrt(np.asarray(weights, np.float64))
    beta = np.linalg.lstsq(design * root[:, None], y * root, rcond=None)[0]
    return np.append(beta, total - beta.sum())


def permutation_plan(groups: int, n_samples: int, seed=0) -> Tuple[np.ndarray, bool]:
    """The permutations of Shapley value sampling: ``n_samples ≥ M!`` (for ``M ≤ 8``) enumerates
    every permutation once (exact Shapley values); otherwise ``n_samples`` uniform permutations
    are drawn (from ``seed`` and ``M`` only). Returns ``(permutations (P, M), exact)``; the rows
    are each permutation's prefixes of ``1 … M − 1`` groups (:func:`~tfattr.methods.coalitions.prefix_words`)."""
    m = int(groups)
    if m <= MAX_ENUMERATED_GROUPS and n_samples >= math.factorial(m):
        return np.array(list(itertools.permutations(range(m))), np.int64).reshape(-1, m), True
    generator = rng(seed, STREAM_SHAPLEY_SAMPLING, block=m)
    return np.stack([generator.permutation(m) for _ in range(int(n_samples))]), False


class _ShapleyBase(CoalitionMethod):
    """Shared: the end rows (empty coalition; full coalition when ``f(x)`` is not known) before each
    example's own coalitions, one forward run, then a host-side solve per example."""

    several_inputs = True

    def _plan(self, groups: int, width: int, config):
        """``{"packed": (S, W) words of the coalitions, "exact": bool, …}`` for ``M = groups``."""
        raise NotImplementedError

    def _solve(self, plan, scores: np.ndarray, fx: float, fb: float) -> np.ndarray:
        raise NotImplementedError

    def _explain(self, x, targets, fx, config) -> Explained:
        x_array = x.numpy()
        num_examples = int(x.shape[0])
        masks = self.masks(x_array, config)
        baseline = self.baseline_rows(x_array, config)
        need_fx = fx is None
        width = int(masks.counts.max())
        plans, tables = {}, []
        for e in range(num_examples):
            m = int(masks.counts[e])
            if m not in plans:
                plan = self._plan(m, width, config)
                ends = np.zeros((2 if need_fx else 1, m), bool)
                if need_fx:
                    ends[1] = True
                plans[m] = (plan, np.concatenate([pack_coalitions(ends, width), plan["packed"]]))
            tables.append(plans[m][1])
        scores, batches = self.run_coalitions(x, targets, masks, baseline, tables, config)
        fb = np.array([s[0] for s in scores])
        fx = np.array([s[1] for s in scores]) if need_fx else np.asarray(fx, np.float64)
        skip = 2 if need_fx else 1
        values, exact = [], []
        for e in range(num_examples):
            m = int(masks.counts[e])
            plan = plans[m][0]
            values.append(self._solve(plan, scores[e][skip:], fx[e], fb[e]) if m else np.zeros(0))
            exact.append(bool(plan["exact"]))
        totals = np.array([v.sum() for v in values])
        passes = sum(len(t) for t in tables)
        return Explained(
            attributions=self.paint(masks, values, x.shape[1:]),
            delta=totals - (fx - fb),
            baseline_scores=fb,
            scores=fx,
            gradients=0,
            info={"group_attributions": values, "groups": masks.counts.copy(), "group_ids": masks.labels,
                  "exact": np.array(exact), "rows": passes, "forward_passes": batches,
                  **self._info(plans)},
        )

    def _info(self, plans) -> dict:
        return {}


class KernelShap(_ShapleyBase):
    r"""KernelSHAP (Lundberg & Lee, NeurIPS 2017, Theorem 2): Shapley values of feature groups as a
    weighted linear regression on coalitions, computed as the ``shap`` package's
    ``KernelExplainer`` with one background sample (the baseline).

    The ``M`` groups of ``feature_mask`` are the players. A coalition ``z' ∈ {0,1}^M`` is scored
    by one forward row, the input where ``z'_g = 1`` and the baseline where ``z'_g = 0``; the
    Shapley kernel ``π(z') = (M − 1) / (C(M, |z'|) · |z'| · (M − |z'|))`` weights it, and
    ``φ = argmin Σ_{z'} π(z') (f(h(z')) − f(b) − z'·φ)²`` subject to ``Σ_g φ_g = f(x) − f(b)``
    (the empty and full coalitions' infinite weights), enforced exactly by eliminating one
    group (:func:`shapley_kernel_solve`). Coalitions are enumerated and drawn as shap does
    (:func:`kernel_shap_coalitions`: whole subset sizes from the outside in while the budget
    covers them, then paired draws); with ``n_samples ≥ 2^M − 2`` every coalition is enumerated
    and ``φ`` is the exact Shapley value (``info["exact"]``). With the same ``seed`` as
    ``np.random.seed`` before shap's ``shap_values``, the drawn coalitions are shap's too. No L1
    feature selection (shap's ``l1_reg``, by default keeping 10 groups when sampling): all
    groups are kept, as shap with ``l1_reg=False``; groups where the input equals the baseline
    are kept too (shap drops them, their exact Shapley value is 0).

    Each value gets its group's ``φ_g`` (captum's convention: a superpixel's pixels all show the
    superpixel's value); ``info["group_attributions"]`` holds ``φ`` per example, whose sum is
    ``f(x) − f(b)`` (``delta`` is that sum's float rounding).

    Cost: ``S + 1`` forward passes per example (``S = min(n_samples, 2^M − 2)`` coalitions and
    the baseline), ``+ 1`` for ``f(x)`` with an explicit ``target`` (``target=None`` reads it from
    the top-1 pass); batched by the engine's forward rows; a least-squares solve of
    ``S × (M − 1)`` per example on the host. ``info["rows"]`` counts the rows,
    ``info["forward_passes"]`` the batched model calls.

    Options (constructor defaults, each overridable in :meth:`attribute`):
        feature_mask: integer group ids: ``None`` (default; every value its own group), one
            example's shape or what broadcasts to it (``(H, W)`` for ``(H, W, C)`` images: one
            group per id across the channels), or with a batch axis ``(N, …)`` a mask per
            example. Several inputs: a list or dict with a mask per input (equal ids in two
            inputs are one group; ``None`` entries: every value its own group). At most 4096
            groups.
        n_samples: coalitions per example: ``"auto"`` (default, shap's ``2 M + 2048``) or an
            integer; ``≥ 2^M − 2`` enumerates every coalition (exact Shapley values).
        baseline: the value of a group that is off: a number (default 0), an array of one
            example's shape or one per example, a baseline name (``"blur"``, …, see
            :mod:`tfattr.baselines`) or a callable; one per input for several inputs.
        seed: seed of the coalition draws (default 0); the draws depend on it and on ``M`` only,
            so an example's result is the same alone or in a batch.
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod` (``batch_size``: forward rows per
            pass; fixed inputs are never perturbed).

    Example:
        >>> shap = KernelShap(model, feature_mask=superpixels, n_samples=500)
        >>> expl = shap.attribute(images)   # top-1 class
        >>> phi = expl.info["group_attributions"]   # per example: its groups' Shapley values
        >>> [p.sum() for p in phi], expl.scores - expl.baseline_scores   # equal (efficiency)
    """

    name = "kernel_shap"
    options = (COALITION_OPTIONS[0], Option("n_samples", "auto", _samples_check)) + COALITION_OPTIONS[1:]

    def describe(self, config) -> str:
        return f"{self.name}(n_samples={config['n_samples']})"

    def _plan(self, groups: int, width: int, config):
        if groups > MAX_KERNEL_GROUPS:
            raise InvalidInputError(
                f"KernelShap solves for at most {MAX_KERNEL_GROUPS} feature groups; this example has {groups}. Pass a "
                "`feature_mask` of superpixels, patches or columns. " + received("groups", groups))
        if groups <= 1:
            return {"coalitions": np.zeros((0, groups), bool), "packed": pack_coalitions(np.zeros((0, groups)), width),
                    "weights": np.zeros(0), "exact": True}
        samples = 2 * groups + 2048 if config["n_samples"] == "auto" else int(config["n_samples"])
        check_coalitions(min(samples, 2 ** min(groups, 62) - 2), groups, config)
        coalitions, weights, exact = kernel_shap_coalitions(groups, config["n_samples"], config["seed"])
        return {"coalitions": coalitions, "packed": pack_coalitions(coalitions, width), "weights": weights,
                "exact": exact}

    def _solve(self, plan, scores, fx, fb):
        return shapley_kernel_solve(plan["coalitions"], plan["weights"], scores, fx, fb)

    def _info(self, plans) -> dict:
        return {"n_coalitions": {m: len(plan["coalitions"]) for m, (plan, _) in plans.items()}}


class ShapleyValueSampling(_ShapleyBase):
    r"""Shapley value sampling (Castro, Gómez & Tejada, Computers & OR 2009; captum's
    ``ShapleyValueSampling``): the Shapley value as the mean marginal contribution over random
    orders of the feature groups.

    For each of ``n_samples`` permutations ``π`` of the ``M`` groups, the groups are switched from
    the baseline to the input one by one in ``π``'s order; each group's attribution adds the
    change of the score when it is switched on:
    ``φ_g = (1/P) Σ_π [f(x_{π_{≤ g}}) − f(x_{π_{< g}})]``. Each permutation telescopes, so
    ``Σ_g φ_g = f(x) − f(b)`` holds for any number of samples (``delta`` is float rounding).
    ``n_samples ≥ M!`` (``M ≤ 8``) enumerates every permutation once: the exact Shapley values
    (``info["exact"]``). Each value gets its group's ``φ_g`` (captum's convention);
    ``info["group_attributions"]`` and ``info["permutations"]`` hold them per example / per
    group count.

    Cost: ``P · (M − 1) + 1`` forward passes per example (every proper prefix of each
    permutation, the baseline once; the full input is ``f(x)``, shared by all permutations),
    ``+ 1`` with an explicit ``target``; batched by the engine's forward rows.

    Options (constructor defaults, each overridable in :meth:`attribute`):
        feature_mask: integer group ids (as :class:`KernelShap`'s; default ``None``: every value
            its own group, ``M`` = the input's size: costly for images).
        n_samples: permutations per example (default 25, captum's).
        baseline: the value of a group that is off (as :class:`KernelShap`'s; default 0).
        seed: seed of the permutations (default 0; they depend on it and on ``M`` only).
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod`.

    Example:
        >>> svs = ShapleyValueSampling(model, feature_mask=columns, n_samples=50)
        >>> expl = svs.attribute(table, target=1)
    """

    name = "shapley_value_sampling"
    options = (COALITION_OPTIONS[0], Option("n_samples", 25, checks.positive_int)) + COALITION_OPTIONS[1:]

    def describe(self, config) -> str:
        return f"{self.name}(n_samples={config['n_samples']})"

    def _plan(self, groups: int, width: int, config):
        if groups == 0:
            return {"packed": pack_coalitions(np.zeros((0, 0)), width), "permutations": np.zeros((0, 0), np.int64),
                    "exact": True}
        exact = groups <= MAX_ENUMERATED_GROUPS and config["n_samples"] >= math.factorial(groups)
        count = math.factorial(groups) if exact else int(config["n_samples"])
        check_coalitions(count * (groups - 1), -(-width // BITS_PER_WORD) * 64, config)  # the words' bits
        permutations, exact = permutation_plan(groups, config["n_samples"], config["seed"])
        return {"packed": prefix_words(permutations, width), "permutations": permutations, "exact": exact}

    def _solve(self, plan, scores, fx, fb):
        permutations = plan["permutations"]
        count, m = permutations.shape
        chain = np.concatenate([np.full((count, 1), fb), np.reshape(scores, (count, m - 1)),
                                np.full((count, 1), fx)], axis=1)
        gains = np.diff(chain, axis=1)  # gains[p, k]: the change when permutation p adds its k-th group
        phi = np.zeros(m)
        np.add.at(phi, permutations.ravel(), gains.ravel())
        return phi / count

    def _info(self, plans) -> dict:
        return {"permutations": {m: plan["permutations"] for m, (plan, _) in plans.items()}}
