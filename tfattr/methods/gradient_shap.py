"""GradientSHAP / Expected Gradients (Lundberg & Lee 2017; Erion et al., Nature Machine Intelligence
2021), with captum's definition (``captum.attr.GradientShap``)."""

from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf

from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import PathRows, forward_outputs
from tfattr.core.random import STREAM_GRADIENT_SHAP, rng
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import AttributionMethod, Explained

__all__ = ["GradientShap", "baseline_distribution"]

#: host values (float64) of one block of noisy pseudo-examples at most (bounds the engine's sums)
_BLOCK_VALUES = 1 << 24


def _distribution_check(name: str, value) -> None:
    """``None``, an array/tensor of baselines or a ``tf.data.Dataset`` (shapes checked at the call)."""
    if value is None or isinstance(value, (np.ndarray, tf.Tensor, tf.Variable, tf.data.Dataset)):
        return
    raise InvalidTypeError(f"`{name}` must be a NumPy array or tf.Tensor of baselines (K, …) or a "
                           "tf.data.Dataset to sample them from. " + received(name, value))


def baseline_distribution(baselines, shape, reference_size: int = 100, dtype=np.float32) -> np.ndarray:
    """The baseline distribution of :class:`GradientShap` as a ``(K,) + shape`` array.

    Args:
        baselines: ``(K,) + shape`` baselines (one ``shape`` baseline is ``K = 1``), or a
            ``tf.data.Dataset`` of examples or batches (a ``(x, y, …)`` element contributes its
            first component): its first ``reference_size`` examples, in the dataset's order
            (shuffle it for a random sample).
        shape: one input's shape.
        reference_size: examples taken from a dataset.
        dtype: the returned dtype.
    """
    shape = tuple(int(d) for d in shape)
    if isinstance(baselines, tf.data.Dataset):
        parts, count = [], 0
        for element in baselines:
            if isinstance(element, (tuple, list)):
                element = element[0]
            if isinstance(element, dict):
                raise InvalidTypeError("`baselines`: a dataset of dicts is for models with several inputs, which "
                                       "GradientShap does not take. " + received("baselines.element_spec",
                                                                                 baselines.element_spec))
            array = np.asarray(element)
            if array.shape == shape:
                array = array[None]
            parts.append(array)
            count += len(array)
            if count >= reference_size:
                break
        if not parts:
            raise InvalidInputError("`baselines` is an empty dataset. " + received("baselines", baselines))
        array = np.concatenate([p.reshape((-1,) + p.shape[1:]) for p in parts])[:reference_size]
    else:
        array = np.asarray(baselines.numpy() if hasattr(baselines, "numpy") else baselines)
        if array.shape == shape:
            array = array[None]
    if array.ndim != len(shape) + 1 or array.shape[1:] != shape or len(array) == 0:
        raise InvalidInputError(f"`baselines` must hold baselines of the inputs' shape: (K,) + {shape}, K ≥ 1. "
                                + received("baselines.shape", array.shape))
    if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
        raise InvalidInputError("`baselines` must be finite numbers. " + received("baselines.dtype", array.dtype))
    return array.astype(dtype)


class GradientShap(AttributionMethod):
    r"""GradientSHAP (captum's ``GradientShap``) = Expected Gradients (Erion et al. 2021) in its
    sampling form ``E_{b∼D, α∼U(0,1)}[(x − b) ⊙ ∇f(b + α(x − b))]``.

    For each example ``x`` and each of ``n_samples`` draws ``s``: a baseline ``b_s`` drawn
    uniformly (with replacement) from the baseline distribution, ``α_s ~ U(0, 1)`` and input
    noise ``ε_s ~ N(0, stdevs²)`` per input value; with ``x̃_s = x + ε_s``

    ``φ(x) = (1/S) Σ_s (x̃_s − b_s) ⊙ ∇f(b_s + α_s (x̃_s − b_s))``

    — a one-sample Monte-Carlo estimate of the IG path integral per draw, averaged, whose
    expectation is the mean over baselines of IG from each (Expected Gradients) when
    ``stdevs = 0``. As captum (``NoiseTunnel`` over ``InputBaselineXGradient``): the gradient is
    taken on the path from ``b`` to the *noisy* input and multiplied by ``x̃ − b`` (the noisy
    input), not ``x − b``; the noise enters both.

    Draws depend on ``seed`` and the draw index only: every example of a batch gets the same
    ``(b_s, α_s, ε_s)`` (:meth:`draws` returns them), so an example's result is the same alone
    or in a batch. captum draws them per example from the global torch/NumPy generators; the
    estimator is the same, the draws are not.

    Options (constructor defaults, each overridable in :meth:`attribute`):
        baselines: the baseline distribution: a ``(K, …)`` array or tensor of baselines (one
            ``(…)`` baseline is ``K = 1``), or a ``tf.data.Dataset`` whose first
            ``reference_size`` examples are taken (shuffle it for a random sample; ``(x, y)``
            elements give ``x``). Required at the call (default ``None``); captum requires it too.
        n_samples: draws per example (default 5, captum's).
        stdevs: standard deviation of the Gaussian input noise (default 0.0, captum's).
        seed: seed of the draws (default 0).
        reference_size: examples taken from a ``tf.data.Dataset`` of baselines (default 100).
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod` (one input only: ``fixed_inputs``
            stays ``None``).

    Returns from :meth:`attribute` an :class:`~tfattr.Explanation` whose ``delta`` is
    ``Σ_i φ_i − (1/S) Σ_s (f(x̃_s) − f(b_s))``: the mean of captum's per-draw deltas. It is zero
    only in expectation (each draw is a one-point estimate of a path integral), so unlike IG's
    it does not measure a quadrature error; it shrinks like ``1/√n_samples``.
    ``baseline_scores`` is ``(1/S) Σ_s f(b_s)``.

    Example:
        >>> shap = GradientShap(model, baselines=background, n_samples=50, stdevs=0.09)
        >>> expl = shap.attribute(images, target=None)   # top-1 class
    """

    name = "gradient_shap"
    options = (
        Option("baselines", None, _distribution_check),
        Option("n_samples", 5, checks.positive_int),
        Option("stdevs", 0.0, checks.non_negative_number),
        Option("seed", 0, checks.seed),
        Option("reference_size", 100, checks.positive_int),
    )
    combine = "path"
    several_inputs = False

    def describe(self, config) -> str:
        return f"{self.name}(n_samples={config['n_samples']}, stdevs={config['stdevs']:g})"

    def references(self, shape, config) -> np.ndarray:
        """The ``(K,) + shape`` baseline distribution of a call (float64)."""
        if config["baselines"] is None:
            raise InvalidInputError("GradientShap needs a baseline distribution: pass `baselines=` (a (K, …) "
                                    "array or a tf.data.Dataset). " + received("baselines", None))
        return baseline_distribution(config["baselines"], shape, config["reference_size"], np.float64)

    @staticmethod
    def draws(shape, num_references: int, n_samples: int = 5, stdevs: float = 0.0, seed=0) -> Dict[str, np.ndarray]:
        """The draws of a call: ``index`` ``(S,)`` into the baselines, ``alpha`` ``(S,)`` and
        ``noise`` ``(S,) + shape`` (zeros when ``stdevs = 0``), from ``seed`` alone (the same for
        every example; ``index`` and ``alpha`` do not depend on ``stdevs``)."""
        generator = rng(seed, STREAM_GRADIENT_SHAP)
        index = generator.integers(0, int(num_references), size=int(n_samples))
        alpha = generator.uniform(0.0, 1.0, size=int(n_samples))
        if stdevs > 0:
            noise = generator.standard_normal((int(n_samples),) + tuple(shape)) * float(stdevs)
        else:
            noise = np.zeros((int(n_samples),) + tuple(shape))
        return {"index": index, "alpha": alpha, "noise": noise}

    def _explain(self, x, targets, fx, config) -> Explained:
        num_examples, shape = int(x.shape[0]), tuple(int(d) for d in x.shape[1:])
        samples, stdevs = int(config["n_samples"]), float(config["stdevs"])
        references = self.references(shape, config)
        drawn = self.draws(shape, len(references), samples, stdevs, config["seed"])
        flat = self.to_model_dtype(references)
        fb = self._reference_scores(flat, targets, num_examples, config)[:, drawn["index"]]  # (N, S)
        engine = self.engine(targets, config)
        indices = targets.indices if targets.indices is not None else np.zeros(num_examples, np.int32)
        if stdevs == 0:  # one pass over the examples: rows (e, s) from the shared baselines
            rows = PathRows(np.repeat(np.arange(num_examples), samples), np.tile(drawn["index"], num_examples),
                            np.tile(drawn["alpha"], num_examples), np.full(num_examples * samples, 1.0 / samples))
            result = engine.integrate(x, flat, indices, rows, combine="path")
            attributions, gradients = result.attributions, len(rows)
            if fx is None:
                fx = self.scores(x, targets, config["batch_size"])
            fx_noisy = np.repeat(np.asarray(fx, np.float64)[:, None], samples, axis=1)
        else:  # noisy inputs x + ε_s are pseudo-examples (e, s), one row each, in blocks of draws
            attributions = np.zeros((num_examples,) + shape)
            fx_noisy = np.zeros((num_examples, samples))
            size = int(np.prod(shape)) * num_examples
            block = int(max(1, min(samples, _BLOCK_VALUES // max(size, 1))))
            x_host = x.numpy()
            gradients = 0
            for start in range(0, samples, block):
                part = slice(start, min(start + block, samples))
                count = part.stop - part.start
                noisy = (x_host[:, None].astype(np.float64) + drawn["noise"][None, part]).reshape((-1,) + shape)
                noisy = self.to_model_dtype(noisy)
                owner = np.repeat(np.arange(num_examples), count)
                rows = PathRows(np.arange(num_examples * count), np.tile(drawn["index"][part], num_examples),
                                np.tile(drawn["alpha"][part], num_examples),
                                np.full(num_examples * count, 1.0 / samples))
                result = engine.integrate(noisy, flat, indices[owner], rows, combine="path")
                attributions += result.attributions.reshape((num_examples, count) + shape).sum(axis=1)
                fx_noisy[:, part] = self.scores(noisy, targets, config["batch_size"], owner).reshape(-1, count)
                gradients += len(rows)
            if fx is None:
                fx = self.scores(x, targets, config["batch_size"])
        total = attributions.reshape(num_examples, -1).sum(axis=1)
        return Explained(
            attributions=attributions,
            delta=total - (fx_noisy - fb).mean(axis=1),
            baseline_scores=fb.mean(axis=1),
            scores=np.asarray(fx, np.float64),
            gradients=gradients,
            info={"n_samples": samples, "stdevs": stdevs, "references": len(references),
                  "baseline_index": drawn["index"], "alpha": drawn["alpha"]},
        )

    def _reference_scores(self, flat, targets, num_examples: int, config) -> np.ndarray:
        """``(N, K)``: the explained score of every baseline for each example's target."""
        if targets.score_fn is None:
            outputs = forward_outputs(self.forward_model, flat, config["batch_size"], targets.output)
            return outputs[:, targets.indices].T
        shared = self.scores(flat, targets, config["batch_size"])
        return np.broadcast_to(shared, (num_examples, len(shared)))
