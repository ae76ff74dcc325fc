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
from tfattr.core.engine import PathRows
from tfattr.core.gradients import LayerGradients
from tfattr.core.layers import find_layer, last_layer_with_rank
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import AttributionMethod, Explained
from tfattr.methods.integrated_gradients import IntegratedGradients

__all__ = ["GradCAM", "RSIGradCAM"]

_MAP_OPTIONS = {"relu": True, "upsample": True, "normalize": False}


class _LayerMethod:
    """Layer resolution, the layer gradient function and the map from channel weights."""

    def _init_layer(self, layer):
        self.layer = last_layer_with_rank(self.model, 4) if layer is None else find_layer(self.model, layer)
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

    def gradient_function(self, score_fn=None):
        return LayerGradients(self.model, self.layer, score_fn)

    def _cam(self, weights: np.ndarray, activations: np.ndarray, image_shape, config) -> np.ndarray:
        """``L = ReLU(Σ_k w_k A^k)`` (eq. 7), bilinearly upsampled to the image, optionally normalised."""
        if activations.ndim != 4:
            raise InvalidInputError(
                f"Layer {self.layer.name!r} must output (batch, height, width, channels) maps. "
                + received("activations.shape", activations.shape)
            )
        cam = np.einsum("nk,nhwk->nhw", weights, activations)
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
        weighting: ``"gradient"`` (eq. 4, default) or ``"gradient_x_activation"``
            (``w_k = (1/Z) Σ_ij ∂y/∂A^k_ij · A^k_ij``, the special case RSI-Grad-CAM reduces to
            with one step from a baseline whose activations are zero).

    ``attribute`` returns maps of shape ``(N, H, W)`` (``(N, h, w)`` without upsampling);
    ``info["weights"]`` holds ``w_k`` ``(N, K)`` and ``info["activations"]`` ``A`` ``(N, h, w, K)``.

    Example:
        >>> GradCAM(model, layer="block5_conv4").attribute(images).attributions  # (N, H, W)
    """

    name = "gradcam"
    options = dict(_MAP_OPTIONS, weighting="gradient")
    combine = "plain"
    collect_endpoint = True

    def __init__(self, model, layer=None, **options):
        super().__init__(model, **options)
        self._init_layer(layer)

    def _check_options(self, config):
        if config["weighting"] not in ("gradient", "gradient_x_activation"):
            raise InvalidInputError(
                "`weighting` must be 'gradient' or 'gradient_x_activation'. " + received("weighting", config["weighting"])
            )

    def describe(self, config) -> str:
        return f"gradcam(layer={self.layer.name})"

    def _explain(self, x, targets, fx, config) -> Explained:
        num_examples = int(x.shape[0])
        zero = BaselineSet(np.zeros((1, 1) + tuple(x.shape[1:])), "zero")
        rows = PathRows.grid(num_examples, 1, np.ones(1), np.ones(1), per_example_baselines=False)
        result = self.integrate(x, zero, targets, rows, config)
        gradients, activations = result.attributions, result.endpoint
        if config["weighting"] == "gradient_x_activation":
            gradients = gradients * activations
        weights = gradients.mean(axis=(1, 2))
        cam = self._cam(weights, activations, tuple(x.shape[1:]), config)
        return Explained(attributions=cam, gradients=len(rows), scores=result.row_scores,
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

    Options: ``layer`` (as :class:`GradCAM`), ``steps`` (``m``, default 50), the IG baseline
    options (``baseline="zero"``, ``n_baselines``, ``value_range``, ``seed``, ``sigma``,
    ``blur_sigma``, ``value``; a trained baseline goes in as an array), ``relu``,
    ``upsample``, ``normalize``, ``batch_size``, ``verbose``.
    """

    name = "rsi_gradcam"
    options = dict({k: v for k, v in IntegratedGradients.options.items() if k != "rule"}, **_MAP_OPTIONS)
    combine = "stieltjes"
    collect_endpoint = True

    def __init__(self, model, layer=None, **options):
        AttributionMethod.__init__(self, model, **options)
        self._init_layer(layer)

    def _check_options(self, config):
        config["rule"] = "riemann_right"
        IntegratedGradients._check_options(self, config)
        del config["rule"]

    def describe(self, config) -> str:
        return f"rsi_gradcam(layer={self.layer.name}, steps={config['steps']})"

    def _explain(self, x, targets, fx, config) -> Explained:
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
        channel_weights = terms.mean(axis=(1, 2))  # (1/Z) Σ_ij
        cam = self._cam(channel_weights, activations, tuple(x.shape[1:]), config)
        total = terms.reshape(num_examples, -1).sum(axis=1)
        return Explained(attributions=cam, gradients=len(rows), scores=fx, baseline_scores=fz,
                         delta=total - (fx - fz),
                         info={"layer": self.layer.name, "weights": channel_weights, "activations": activations,
                               "baseline": baselines.name, "steps": steps})
