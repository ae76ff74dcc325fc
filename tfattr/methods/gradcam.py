"""Grad-CAM (Selvaraju et al. 2017) and RSI-Grad-CAM (Lerma & Lucas 2022) at any layer.

Both are engine rows with a layer's gradient function
(:class:`~tfattr.core.gradients.LayerGradients`): Grad-CAM is one row at the input
(``α = 1``) combined ``"plain"``; RSI-Grad-CAM is the IG path from a baseline with the
gradients integrated against the layer's activations as a Riemann–Stieltjes sum
(``combine="stieltjes"``).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfattr.baselines.registry import BaselineSet
from tfattr.core import checks
from tfattr.core.adaptive import level_bounds, level_rows, relative_error
from tfattr.core.checks import Option
from tfattr.core.convergence import Refiner, warn_unconverged
from tfattr.core.engine import NestedStieltjesPaths, PathRows
from tfattr.core.gradients import LayerGradients
from tfattr.core.layers import find_layer, last_layer_with_rank, layer_output_rank
from tfattr.core.ranges import resolve_value_range
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import AttributionMethod, Explained
from tfattr.methods.integrated_gradients import BASELINE_OPTIONS, IG_OPTIONS, IntegratedGradients

__all__ = ["GradCAM", "RSIGradCAM"]

#: the map options of Grad-CAM and RSI-Grad-CAM
MAP_OPTIONS = (
    Option("relu", True, checks.boolean),
    Option("upsample", True, checks.boolean),
    Option("normalize", False, checks.boolean),
)
_RSI_RULES = ("riemann_right", "trapezoid")
_RSI_RULE_ALIASES = {"riemann_trapezoid": "trapezoid"}


class _LayerMethod:
    """Layer resolution, the layer gradient function and the map from channel weights."""

    several_inputs = False  # maps of 4-D feature maps upsampled to one image input

    def _init_layer(self, layer):
        """Resolve and check ``layer``; for a model without symbolic layer outputs (subclassed, an
        unbuilt Sequential) the default layer and the rank check wait for the first inputs
        (:meth:`_ready_layer`)."""
        self._layer_checked = False
        if layer is None and self.spec.input_shape is None:
            self.layer = None  # found by one call on the first inputs
            return
        self.layer = last_layer_with_rank(self.model, 4) if layer is None else find_layer(self.model, layer)
        self._check_layer()

    def _constructor_arguments(self):
        return {"layer": None if self.layer is None else self.layer.name}

    def _ready_layer(self, x) -> None:
        """Find the default layer / check the layer's rank on one example of ``x``, before any gradient."""
        if self._layer_checked:
            return
        with self._engine_lock:  # replicas of tfattr.distribute share the method: one probe, one tap at a time
            if not self._layer_checked:
                if self.layer is None:
                    self.layer = last_layer_with_rank(self.model, 4, sample=x[:1])
                self._check_layer(sample=x[:1])

    def _check_layer(self, sample=None) -> None:
        if isinstance(self.layer, keras.layers.InputLayer):
            raise InvalidInputError(
                "The input layer has no activations of its own; pick a layer after it, or use "
                "IntegratedGradients for attributions at the input. " + received("layer", self.layer.name)
            )
        calls = len(getattr(self.layer, "_inbound_nodes", []) or [])
        if calls > 1:
            raise InvalidInputError(
                f"Layer {self.layer.name!r} is shared ({calls} calls in the model); layer methods need a "
                "layer that runs exactly once. " + received("layer", self.layer.name)
            )
        rank = layer_output_rank(self.model, self.layer, sample)
        if rank == -1 and sample is None:
            return  # known once the model runs: checked on the first inputs
        if rank != 4:
            what = f"a {rank}-D output" if rank != -1 else "no output when the model runs"
            raise InvalidInputError(
                f"Layer {self.layer.name!r} has {what}; {type(self).__name__} needs a layer with a 4-D "
                "(batch, height, width, channels) output, e.g. the last convolution or pooling layer "
                "before Flatten/Dense. " + received("layer", self.layer.name)
            )
        self._layer_checked = True

    def gradient_function(self, score_fn=None):
        return LayerGradients(self.model, self.layer, score_fn)

    def _cache_state(self, config):
        # None: the default layer, found on the first inputs of a model without symbolic outputs
        return dict(super()._cache_state(config), layer=None if self.layer is None else self.layer.name)

    def _cam(self, weights: np.ndarray, activations: np.ndarray, image_shape, config) -> np.ndarray:
        """``L = ReLU(Σ_k w_k A^k)`` (eq. 7), bilinearly upsampled to the image, optionally normalised."""
        if activations.ndim != 4:
            raise InvalidInputError(
                f"Layer {self.layer.name!r} must output (batch, height, width, channels) maps. "
                + received("activations.shape", activations.shape)
            )
        return self._finish(np.einsum("nk,nhwk->nhw", weights, activations), image_shape, config)

    def _finish(self, cam: np.ndarray, image_shape, config) -> np.ndarray:
        """The map options on a raw ``(N, h, w)`` map: ReLU, bilinear upsampling to the image's
        height and width (``tf.image.resize``, half-pixel centres), division by each map's maximum."""
        if config["relu"]:
            cam = np.maximum(cam, 0.0)
        if config["upsample"] and cam.shape[1:3] != tuple(image_shape[:2]):
            cam = tf.image.resize(cam[..., None], image_shape[:2], method="bilinear").numpy()[..., 0]
        if config["normalize"]:
            peak = np.abs(cam).reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
            cam = np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0)
        return cam


class GradCAM(_LayerMethod, AttributionMethod):
    """Grad-CAM: ``w_k = (1/Z) Σ_ij ∂y/∂A^k_ij`` (eq. 4 of Lerma & Lucas, after Selvaraju et al.),
    map ``ReLU(Σ_k w_k A^k)`` (eq. 7), bilinearly upsampled to the input size.

    Args:
        model: the Keras model.
        layer: name, nested path (``"backbone/block5_conv4"``), index or layer object;
            default: the last layer with a 4-D output.
        relu: apply the final ReLU (default ``True``).
        upsample: resize the map to the input's height and width (default ``True``); with
            ``False`` the raw layer-resolution map is returned.
        normalize: divide each map by its maximum (default ``False``).
        output: the explained output of a model with several (index or name; see
            :class:`~tfattr.methods.base.AttributionMethod`); ``layer`` should feed it.
        weighting: ``"gradient"`` (eq. 4, default) or ``"gradient_x_activation"``
            (``w_k = (1/Z) Σ_ij ∂y/∂A^k_ij · A^k_ij``, the special case RSI-Grad-CAM reduces to
            with one step from a baseline whose activations are zero).

    ``attribute`` returns maps of shape ``(N, H, W)`` (``(N, h, w)`` without upsampling);
    ``info["weights"]`` holds ``w_k`` ``(N, K)`` and ``info["activations"]`` ``A`` ``(N, h, w, K)``.

    Example:
        >>> GradCAM(model, layer="block5_conv4").attribute(images).attributions  # (N, H, W)
    """

    name = "gradcam"
    options = MAP_OPTIONS + (Option("weighting", "gradient", checks.choices("gradient", "gradient_x_activation")),)
    combine = "plain"
    collect_endpoint = True
    top1_in_rows = True  # one row at x per example: target=None is one forward+backward to the layer

    def __init__(self, model, layer=None, **options):
        super().__init__(model, **options)
        self._init_layer(layer)

    def describe(self, config) -> str:
        return f"gradcam(layer={self.layer.name})"

    def _explain(self, x, targets, fx, config) -> Explained:
        self._ready_layer(x)
        num_examples = int(x.shape[0])
        zero = BaselineSet(np.zeros((1, 1) + tuple(x.shape[1:])), "zero")
        rows = PathRows.grid(num_examples, 1, np.ones(1), np.ones(1), per_example_baselines=False)
        result = self.integrate(x, zero, targets, rows, config)
        gradients, activations = result.attributions, result.endpoint
        if config["weighting"] == "gradient_x_activation":
            gradients = gradients * activations
        weights = gradients.mean(axis=(1, 2))
        cam = self._cam(weights, activations, tuple(x.shape[1:]), config)
        return Explained(attributions=cam, gradients=len(rows), scores=result.row_scores, targets=result.row_classes,
                         info={"layer": self.layer.name, "weights": weights, "activations": activations})


class RSIGradCAM(_LayerMethod, IntegratedGradients):
    """RSI-Grad-CAM (Lerma & Lucas 2022): Grad-CAM whose weights integrate the layer gradients
    along the IG path as a Riemann–Stieltjes sum (eq. 6):

    ``w_k = (1/Z) Σ_ij Σ_{ℓ=1..m} ∂y(α_ℓ)/∂A^k_ij · (A^k_ij(α_ℓ) − A^k_ij(α_{ℓ−1}))``, ``α_ℓ = ℓ/m``,

    on the path ``I(α) = I₀ + α(I − I₀)``, then ``L = ReLU(Σ_k w_k A^k(I))`` (eq. 7).
    It costs ``m + 1`` gradient evaluations per baseline (``α₀ = 0`` gives ``A(α₀)``).

    Completeness at the layer: the sum telescopes, ``Σ_k Σ_ij`` of the terms tends to
    ``y(I) − y(I₀)`` (exactly, for a head linear in ``A``); ``Explanation.delta`` reports
    ``Σ terms − (y(I) − y(I₀))``.

    Special case: with ``steps=1`` and a baseline whose activations at the layer are zero,
    ``w_k = (1/Z) Σ_ij ∂y(I)/∂A^k_ij · A^k_ij(I)``, i.e. ``GradCAM(weighting="gradient_x_activation")``.

    Options (``inspect.signature(RSIGradCAM)`` lists them with their defaults):
        layer: as :class:`GradCAM`.
        steps: ``m``, the intervals of the path (default 50).
        baseline, n_baselines, value_range, seed, per_image_baselines, sigma, blur_sigma, value:
            the baseline options of :class:`~tfattr.methods.integrated_gradients.IntegratedGradients`
            (default ``baseline="zero"``; a trained baseline goes in as an array).
        relu, upsample, normalize: the map options of :class:`GradCAM` (defaults ``True``,
            ``True``, ``False``).
        tolerance, max_steps, min_steps: a requested accuracy instead of ``steps`` (below;
            ``max_steps`` defaults to 257 here).
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod`.

    and two options for the authors' notebook (the paper's eq. 6 is the default):

    * ``rule``: ``"riemann_right"`` (eq. 6, default) or ``"trapezoid"`` (alias
      ``"riemann_trapezoid"``; ``steps`` still counts intervals, ``m ≥ 1``): the integrand of each
      interval is the average of its two ends,
      ``Σ_ℓ ½(∂y(α_{ℓ−1})/∂A + ∂y(α_ℓ)/∂A) ⊙ (A(α_ℓ) − A(α_{ℓ−1}))`` (exact for a head quadratic
      in ``A`` along a path on which ``A`` is linear; same ``m + 1`` gradients);
    * ``positive_units``: ``False`` (default) or ``True``: before averaging over ``ij``, keep only
      the units with ``A^k_ij(I) > 0``, a positive integral and a positive total increment
      ``A^k_ij(I) − A^k_ij(I₀)``; the others count as 0 in ``(1/Z) Σ_ij``. With several
      baselines the integral and ``A(I₀)`` are their means. ``info["selected"]`` is the
      fraction of units kept per example.

    The notebook's setting is ``RSIGradCAM(model, rule="trapezoid", positive_units=True, steps=50)``
    (51 nodes, its ``m_steps=50``); ``Explanation.delta`` always reports the completeness of the
    unmasked sum.

    Requested accuracy: ``tolerance=`` (e.g. 0.01) replaces ``steps`` by nested grids
    ``m = 1, 2, 4, 8, …`` (``2^k + 1`` nodes) refined per example until the relative layer
    completeness error ``|Σ terms − (y(I) − y(I₀))| / |y(I) − y(I₀)|`` is at most ``tolerance``
    or ``max_steps`` nodes (default 257) are used. No gradient is computed twice: halving the
    intervals adds the midpoints ``μ`` of the intervals ``[λ, ρ]``, and the ordered sum changes by

    ``Σ_μ (∂y(μ)/∂A − ∂y(ρ)/∂A) ⊙ (A(μ) − A(λ))``

    (the old term ``∂y(ρ)/∂A ⊙ (A(ρ) − A(λ))`` splits into two), so the result is eq. 6 with
    ``m = 2^k`` steps (up to float32 rounding: the terms are summed in another order). With
    ``rule="trapezoid"`` the change is ``½ Σ_μ [g(μ) ⊙ (A(ρ) − A(λ)) + g(λ) ⊙ (A(μ) − A(ρ)) +
    g(ρ) ⊙ (A(λ) − A(μ))]`` (two half-intervals replace one), and the result is the trapezoid
    sum with ``m = 2^k``. The price is memory: the layer gradient and activations of
    every node of an unconverged path are kept on the host (``2 · |A| · nodes`` floats per
    path). ``info["steps"]`` and ``info["relative_error"]`` report per example.
    """

    name = "rsi_gradcam"
    options = (checks.pick(BASELINE_OPTIONS + IG_OPTIONS, "baseline", "steps")
               + (Option("rule", "riemann_right", checks.choices(*_RSI_RULES, *_RSI_RULE_ALIASES)),)
               + checks.pick(BASELINE_OPTIONS + IG_OPTIONS, "n_baselines", "value_range", "seed", "per_image_baselines",
                             "sigma", "blur_sigma", "value", "tolerance")
               + (checks.with_default(checks.pick(IG_OPTIONS, "max_steps")[0], 257),)
               + checks.pick(IG_OPTIONS, "min_steps") + MAP_OPTIONS
               + (Option("positive_units", False, checks.boolean),))
    rules = _RSI_RULES
    combine = "stieltjes"
    collect_endpoint = True

    def __init__(self, model, layer=None, **options):
        AttributionMethod.__init__(self, model, **options)
        self._init_layer(layer)

    def check_combination(self, config):
        config["rule"] = _RSI_RULE_ALIASES.get(config["rule"], config["rule"])
        config["value_range"] = resolve_value_range(config["value_range"], self.model)

    def combine_for(self, config) -> str:
        return "stieltjes_trapezoid" if config["rule"] == "trapezoid" else "stieltjes"

    def describe(self, config) -> str:
        extra = "" if config["rule"] == "riemann_right" else f", rule={config['rule']}"
        extra += ", positive_units" if config["positive_units"] else ""
        if config.get("tolerance") is not None:
            return f"rsi_gradcam(layer={self.layer.name}, tolerance={config['tolerance']:g}{extra})"
        return f"rsi_gradcam(layer={self.layer.name}, steps={config['steps']}{extra})"

    def _channel_weights(self, terms, activations, start, config):
        """``w_k = (1/Z) Σ_ij terms`` (eq. 6), over the notebook's selected units with ``positive_units``."""
        if not config["positive_units"]:
            return terms.mean(axis=(1, 2)), None
        selected = (activations > 0) & (terms > 0) & (activations - start > 0)
        weights = np.where(selected, terms, 0.0).mean(axis=(1, 2))
        return weights, selected.reshape(len(selected), -1).mean(axis=1)

    def _explain(self, x, targets, fx, config) -> Explained:
        self._ready_layer(x)
        if config.get("tolerance") is not None:
            return self._explain_adaptive(x, targets, fx, config)
        baselines = self.make_baselines(x.numpy(), config)
        steps = int(config["steps"])
        alphas = np.arange(steps + 1, dtype=np.float64) / steps
        weights = np.concatenate([[0.0], np.ones(steps)])  # α₀ only supplies A(α₀)
        num_examples = int(x.shape[0])
        rows = PathRows.grid(num_examples, baselines.count, alphas, weights, baselines.per_example)
        result = self.integrate(x, baselines, targets, rows, config)
        terms, activations = result.attributions, result.endpoint
        fz = self.baseline_scores(x, baselines, targets, rows, result, config)
        if fx is None:
            fx = self.scores_at_input(rows, result, num_examples)
        channel_weights, selected = self._channel_weights(terms, activations, result.start, config)  # (1/Z) Σ_ij
        cam = self._cam(channel_weights, activations, tuple(x.shape[1:]), config)
        total = terms.reshape(num_examples, -1).sum(axis=1)
        info = {"layer": self.layer.name, "weights": channel_weights, "activations": activations,
                "baseline": baselines.name, "steps": steps, "rule": config["rule"]}
        if selected is not None:
            info["selected"] = selected
        return Explained(attributions=cam, gradients=len(rows), scores=fx, baseline_scores=fz,
                         delta=total - (fx - fz), info=info)

    def _explain_adaptive(self, x, targets, fx, config) -> Explained:
        """Eq. 6 on nested grids of ``2^k`` intervals until the layer completeness error meets
        ``tolerance`` per example (see the class docstring); only unconverged examples get rows."""
        baselines = self.make_baselines(x.numpy(), config)
        num_examples, count = int(x.shape[0]), baselines.count
        tolerance = float(config["tolerance"])
        bottom, top = level_bounds(config["min_steps"], config["max_steps"])
        span = 2**top  # node i of the finest grid sits at α = i / span
        paths = NestedStieltjesPaths(span, count, self.combine_for(config))  # every node of an unconverged path
        terms = [None] * num_examples  # per example: Σ over baselines of the ordered sums
        fz, level = np.zeros(num_examples), np.zeros(num_examples, int)
        refiner = Refiner(num_examples, tolerance, min_rounds=bottom + 1, max_rounds=top + 1)
        activations = start = None
        evaluated = 0
        for k, todo in refiner:
            rows = level_rows(k, num_examples, count, todo, baselines.per_example)
            result = self.integrate(x, baselines, targets, rows, config, collect_rows=True)
            evaluated += len(rows)
            paths.add(rows, result)
            if k == 0:
                fz = self.baseline_scores(x, baselines, targets, rows, result, config)
                if fx is None:
                    fx = self.scores_at_input(rows, result, num_examples)
                activations = np.zeros((num_examples,) + result.row_values.shape[1:])
                start = np.zeros_like(activations)
            for e in todo:
                update = paths.change(e, k)  # the level's change of the ordered sums (eq. 6 with 2^k intervals)
                if k == 0:
                    for b in range(count):
                        start[e] += paths.node(e, b, 0)[1] / count
                    activations[e] = paths.node(e, 0, span)[1]
                terms[e] = update if terms[e] is None else terms[e] + update
            level[todo] = k
            done = refiner.record(todo, relative_error(np.array([terms[e].sum() / count for e in todo]),
                                                       fx[todo] - fz[todo]))
            for e in done:  # free the converged paths' nodes
                paths.forget(e)
        refined = refiner.result()
        warn_unconverged("RSIGradCAM", refined, "tolerance", tolerance, "max_steps", config["max_steps"],
                         errors="relative completeness errors", digits=6, tail="returning the finest level",
                         stacklevel=5)
        terms = np.stack(terms) / count
        channel_weights, selected = self._channel_weights(terms, activations, start, config)
        cam = self._cam(channel_weights, activations, tuple(x.shape[1:]), config)
        total = terms.reshape(num_examples, -1).sum(axis=1)
        info = {"layer": self.layer.name, "weights": channel_weights, "activations": activations,
                "baseline": baselines.name, "steps": 2**level, "nodes": 2**level + 1, "rule": config["rule"],
                "converged": refined.converged, "relative_error": refined.error, "tolerance": tolerance}
        if selected is not None:
            info["selected"] = selected
        return Explained(attributions=cam, gradients=evaluated, scores=fx, baseline_scores=fz, delta=total - (fx - fz),
                         info=info)
