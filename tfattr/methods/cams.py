"""The CAM family on a layer's activations and gradients: Grad-CAM++, LayerCAM, XGrad-CAM,
HiResCAM and Eigen-CAM.

Each is Grad-CAM's pass (:class:`~tfattr.methods.gradcam.GradCAM`): one engine row per example
at the input with the layer's gradient function, so a chunk of examples is one forward pass and
one backward pass to the layer, giving the gradients ``g = ∂y/∂A`` and the activations ``A``
``(N, h, w, K)``; the map is then computed on the host in float64 from ``g`` and ``A`` and goes
through Grad-CAM's map options (``relu``, ``upsample``, ``normalize``). The layer is resolved as
Grad-CAM's (a name, a nested path, an index or a layer; default the last layer with a 4-D output).
Eigen-CAM needs no gradient: its pass is forward only (:class:`_LayerForward`: the model with the
layer tapped, one forward row per example, ``combine="values"``).

The equations follow the papers; where the most used implementations (pytorch-grad-cam,
``jacobgil/pytorch-grad-cam`` at 084273b; tf-keras-vis, ``keisen/tf-keras-vis`` at 8bb8392)
differ, each class's docstring says how, and Grad-CAM++ offers both conventions.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfattr.baselines.registry import BaselineSet
from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import ChunkRows, ForwardEngine, ForwardRows, PathRows
from tfattr.core.gradients import LayerTap
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import AttributionMethod, Explained
from tfattr.methods.gradcam import MAP_OPTIONS, _LayerMethod

__all__ = ["GradCAMPlusPlus", "LayerCAM", "XGradCAM", "HiResCAM", "EigenCAM"]

#: pytorch-grad-cam's ``eps`` in the denominator of Grad-CAM++'s α (``grad_cam_plusplus.py``)
PYTORCH_GRAD_CAM_EPS = 1e-6


class _ActivationGradientCAM(_LayerMethod, AttributionMethod):
    """One row per example at the input; :meth:`_map` turns ``(g, A)`` into the raw map."""

    combine = "plain"
    collect_endpoint = True
    top1_in_rows = True  # one row at x per example: target=None is one forward+backward to the layer

    def __init__(self, model, layer=None, **options):
        super().__init__(model, **options)
        self._init_layer(layer)

    def describe(self, config) -> str:
        return f"{self.name}(layer={self.layer.name})"

    def _map(self, gradients: np.ndarray, activations: np.ndarray, scores: np.ndarray, config):
        """``(raw map (N, h, w), info)`` from the gradients and activations ``(N, h, w, K)``."""
        raise NotImplementedError

    def _explain(self, x, targets, fx, config) -> Explained:
        self._ready_layer(x)
        num_examples = int(x.shape[0])
        zero = BaselineSet(np.zeros((1, 1) + tuple(x.shape[1:])), "zero")
        rows = PathRows.grid(num_examples, 1, np.ones(1), np.ones(1), per_example_baselines=False)
        result = self.integrate(x, zero, targets, rows, config)
        gradients = np.asarray(result.attributions, np.float64)
        activations = np.asarray(result.endpoint, np.float64)
        if activations.ndim != 4:
            raise InvalidInputError(
                f"Layer {self.layer.name!r} must output (batch, height, width, channels) maps. "
                + received("activations.shape", activations.shape)
            )
        raw, info = self._map(gradients, activations, np.asarray(result.row_scores, np.float64), config)
        cam = self._finish(raw, tuple(x.shape[1:]), config)
        info = dict({"layer": self.layer.name}, **info, activations=activations)
        return Explained(attributions=cam, gradients=len(rows), scores=result.row_scores, targets=result.row_classes,
                         info=info)


def _same_inputs(x, rows: ChunkRows):
    """The forward rows of a pass to a layer: each row is its example unchanged."""
    return tf.gather(x, rows.example)


class _LayerForward:
    """A layer's activations, the explained score and class from forward passes only (no backward):
    one forward row per example through a :class:`~tfattr.core.gradients.LayerTap`,
    ``combine="values"``."""

    def forward_engine(self, model, targets, config, kind="tap") -> ForwardEngine:
        """A cached :class:`ForwardEngine` of ``model`` for the target kind (``kind`` names the model)."""
        key = (kind,) + (("index",) if targets.score_fn is None else ("callable", targets.score_fn))
        key += ("output", targets.output)
        with self._engine_lock:
            engines = self.__dict__.setdefault("_forward_engines", {})
            engine = engines.get(key)
            if engine is None:
                if targets.score_fn is not None:  # keep one callable engine at a time
                    for old in [k for k in engines if k[1] == "callable"]:
                        del engines[old]
                engine = ForwardEngine(model, targets.scorer)
                engines[key] = engine
        engine.batch_size = config["batch_size"]
        engine.parallel_chunks = int(config["parallel_chunks"])
        engine.verbose = config["verbose"]
        return engine

    def layer_forward(self, x, targets, config):
        """``(A (N, h, w, K) float64, scores (N,), classes (N,), forward passes)``."""
        self._ready_layer(x)
        with self._engine_lock:
            tap = self.__dict__.get("_tap")
            if tap is None or tap.layer is not self.layer:
                tap = self._tap = LayerTap(self.model, self.layer)
        num_examples = int(x.shape[0])
        result = self.forward_engine(tap, targets, config).run(
            x, ForwardRows.repeat(num_examples, 1), _same_inputs, targets.indices, combine="values")
        activations = np.asarray(result.sums, np.float64)
        if activations.ndim != 4:
            raise InvalidInputError(
                f"Layer {self.layer.name!r} must output (batch, height, width, channels) maps. "
                + received("activations.shape", activations.shape)
            )
        return activations, result.row_scores, result.row_classes, result.chunks


def _channel_sums(activations: np.ndarray) -> np.ndarray:
    """``Σ_ab A^k_ab`` per example and channel, shaped ``(N, 1, 1, K)`` to broadcast over positions."""
    return activations.sum(axis=(1, 2), keepdims=True)


class GradCAMPlusPlus(_ActivationGradientCAM):
    """Grad-CAM++ (Chattopadhay et al. 2018): channel weights
    ``w_k = Σ_ij α^k_ij · ReLU(∂Y/∂A^k_ij)`` (eq. 7) with, for ``Y = exp(y)`` (eq. 19, the
    closed form: the exponential's derivatives are ``Y g``, ``Y g²``, ``Y g³`` with
    ``g = ∂y/∂A``, and ``Y`` cancels in α),

    ``α^k_ij = g_ij² / (2 g_ij² + Σ_ab A^k_ab · g_ij³)``,

    map ``ReLU(Σ_k w_k A^k)``, bilinearly upsampled to the input size.

    Args:
        model: the Keras model.
        layer: as :class:`~tfattr.methods.gradcam.GradCAM` (name, nested path, index or layer
            object; default: the last layer with a 4-D output).
        relu, upsample, normalize: the map options of :class:`~tfattr.methods.gradcam.GradCAM`
            (defaults ``True``, ``True``, ``False``).
        convention: which implementation's arithmetic (they differ; the paper's equations
            leave both choices open):

            * ``"pytorch-grad-cam"`` (default; ``grad_cam_plusplus.py``):
              ``α = g² / (2g² + Σ_ab A_ab g³ + 10⁻⁶)``, ``α = 0`` where ``g = 0``,
              ``w_k = Σ_ij α · ReLU(g)`` (the positive factor ``exp(y)`` of ``∂Y/∂A`` dropped).
              The ``10⁻⁶`` is theirs: it changes α noticeably where ``g² ≲ 10⁻⁵``.
            * ``"tf-keras-vis"`` (``gradcam_plus_plus.py``, as the authors' code): the same α without
              ``10⁻⁶`` (``α = 0`` where ``g = 0``), then divided by its sum over positions per
              channel (``α / Σ_ij α``, unless that sum is 0), and ``w_k = Σ_ij α · ReLU(exp(y) g)``.
              ``exp(y)`` is computed in float64 and scales each example's map (it cancels with
              ``normalize=True``, where it is left out); a score above ~709 overflows it and
              raises an error.
        output: the explained output of a model with several (index or name; see
            :class:`~tfattr.methods.base.AttributionMethod`); ``layer`` should feed it.

    ``attribute`` returns maps ``(N, H, W)`` (``(N, h, w)`` without upsampling);
    ``info["weights"]`` holds ``w_k`` ``(N, K)``, ``info["alpha"]`` α ``(N, h, w, K)`` and
    ``info["activations"]`` ``A``. The pass is Grad-CAM's: one forward and one backward to the
    layer per chunk of examples.

    Example:
        >>> GradCAMPlusPlus(model, layer="block5_conv4").attribute(images).attributions  # (N, H, W)
    """

    name = "gradcam_plus_plus"
    options = MAP_OPTIONS + (Option("convention", "pytorch-grad-cam", checks.choices("pytorch-grad-cam",
                                                                                      "tf-keras-vis")),)

    def describe(self, config) -> str:
        return f"gradcam_plus_plus(layer={self.layer.name}, convention={config['convention']})"

    def _map(self, g, activations, scores, config):
        g2 = g * g
        denominator = 2.0 * g2 + _channel_sums(activations) * g2 * g
        if config["convention"] == "pytorch-grad-cam":
            denominator = denominator + PYTORCH_GRAD_CAM_EPS
            with np.errstate(divide="ignore", invalid="ignore"):
                alpha = np.where(g != 0, g2 / denominator, 0.0)
            weights = (np.maximum(g, 0.0) * alpha).sum(axis=(1, 2))
        else:
            denominator = denominator + (g2 == 0)  # tf-keras-vis: + 1 where the second derivative is 0
            alpha = g2 / denominator
            total = alpha.sum(axis=(1, 2), keepdims=True)
            alpha = alpha / np.where(total == 0, 1.0, total)
            weights = (np.maximum(g, 0.0) * alpha).sum(axis=(1, 2))
            if not config["normalize"]:
                with np.errstate(over="ignore"):
                    scale = np.exp(scores)
                if not np.all(np.isfinite(scale)):
                    raise InvalidInputError(
                        "GradCAMPlusPlus(convention='tf-keras-vis') multiplies each map by exp(score), which "
                        "overflows float64 for a score above ~709; use normalize=True (the factor cancels) or "
                        "convention='pytorch-grad-cam' (the map without it). "
                        + received("score", float(np.max(scores))))
                weights = weights * scale[:, None]
        return np.einsum("nk,nhwk->nhw", weights, activations), {"weights": weights, "alpha": alpha}


class LayerCAM(_ActivationGradientCAM):
    """LayerCAM (Jiang et al. 2021): each position's activation weighted by its own positive
    gradient, ``M = ReLU(Σ_k ReLU(∂y/∂A^k) ⊙ A^k)``, bilinearly upsampled to the input size
    (as pytorch-grad-cam's ``layer_cam.py`` and tf-keras-vis's ``layercam.py``). Meant for any
    depth, shallow layers included. The paper's scaling of shallow layers' maps for fusing
    several layers (``tanh(γ M / max M)``) is not applied.

    Args:
        model: the Keras model.
        layer: as :class:`~tfattr.methods.gradcam.GradCAM`.
        relu, upsample, normalize: the map options of :class:`~tfattr.methods.gradcam.GradCAM`.
        output: the explained output of a model with several (see
            :class:`~tfattr.methods.base.AttributionMethod`).

    ``info["activations"]`` holds ``A`` ``(N, h, w, K)``.
    """

    name = "layercam"
    options = MAP_OPTIONS

    def _map(self, g, activations, scores, config):
        return (np.maximum(g, 0.0) * activations).sum(axis=-1), {}


class XGradCAM(_ActivationGradientCAM):
    """XGrad-CAM (Fu et al. 2020, Axiom-based Grad-CAM): channel weights
    ``w_k = Σ_ij (A^k_ij / Σ_ab A^k_ab) · ∂y/∂A^k_ij`` (the activation-weighted average of the
    gradient, derived from the sensitivity and conservation axioms), map ``ReLU(Σ_k w_k A^k)``,
    bilinearly upsampled to the input size.

    A channel whose activations sum to 0 (a dead ReLU channel) gets ``w_k = 0``; pytorch-grad-cam
    (``xgrad_cam.py``) adds ``10⁻⁷`` to ``Σ_ab A`` instead, a relative difference of
    ``10⁻⁷ / Σ_ab A`` in that channel's weight. The weights are meant for non-negative activations
    (after a ReLU): for a layer with signed outputs, ``Σ_ab A`` near 0 makes a weight large.
    When the layer is followed by global average pooling and a linear head, the gradient is the
    same at every position and the weights reduce to it: XGrad-CAM equals Grad-CAM there (with
    non-negative activations, a channel summing to 0 is 0 everywhere and adds nothing to either).

    Args:
        model: the Keras model.
        layer: as :class:`~tfattr.methods.gradcam.GradCAM`.
        relu, upsample, normalize: the map options of :class:`~tfattr.methods.gradcam.GradCAM`.
        output: the explained output of a model with several (see
            :class:`~tfattr.methods.base.AttributionMethod`).

    ``info["weights"]`` holds ``w_k`` ``(N, K)`` and ``info["activations"]`` ``A``.
    """

    name = "xgradcam"
    options = MAP_OPTIONS

    def _map(self, g, activations, scores, config):
        sums = _channel_sums(activations)[:, 0, 0, :]
        numerator = (g * activations).sum(axis=(1, 2))
        weights = np.where(sums != 0, numerator / np.where(sums != 0, sums, 1.0), 0.0)
        return np.einsum("nk,nhwk->nhw", weights, activations), {"weights": weights}


class HiResCAM(_ActivationGradientCAM):
    """HiResCAM (Draelos & Carin 2020): the element-wise product of gradient and activation summed
    over channels, no pooling of the gradients, ``M = Σ_k ∂y/∂A^k ⊙ A^k`` (then ``ReLU`` with
    ``relu=True``, as pytorch-grad-cam's ``hirescam.py`` and ``base_cam.py``), bilinearly
    upsampled to the input size.

    When the layer is followed by global average pooling and a linear head, the gradients are
    constant over positions (``∂y/∂A^k_ij = W_kc / Z``), so HiResCAM equals Grad-CAM exactly
    (Grad-CAM's weights are the mean gradient, ``W_kc / Z``). ``Σ_ij M_ij`` is the first-order
    term ``Σ g ⊙ A`` of the score at the layer (the score itself for a head linear in ``A``
    without bias).

    Args:
        model: the Keras model.
        layer: as :class:`~tfattr.methods.gradcam.GradCAM`.
        relu, upsample, normalize: the map options of :class:`~tfattr.methods.gradcam.GradCAM`
            (``relu=False`` keeps the signed map).
        output: the explained output of a model with several (see
            :class:`~tfattr.methods.base.AttributionMethod`).

    ``info["activations"]`` holds ``A`` ``(N, h, w, K)``.
    """

    name = "hirescam"
    options = MAP_OPTIONS

    def _map(self, g, activations, scores, config):
        return (g * activations).sum(axis=-1), {}


class EigenCAM(_LayerForward, _ActivationGradientCAM):
    """Eigen-CAM (Muhammad & Yeasin 2020): the layer's activations projected on their first
    principal component. Per example, the ``(h·w, K)`` matrix ``A`` of positions × channels is
    centred over positions (``A − mean_ij A``, as pytorch-grad-cam's ``get_2d_projection``;
    ``center=False`` uses ``A`` itself), decomposed ``A = U S Vᵀ``, and the map is
    ``M = A v₁`` (``v₁`` the first right singular vector), reshaped to ``(h, w)``, then
    ``ReLU`` (with ``relu=True``) and bilinear upsampling.

    No gradient enters and the map does not depend on ``target`` (the explained class is still
    reported in the :class:`~tfattr.core.result.Explanation`). It runs forward passes only (one
    per chunk of examples, :class:`~tfattr.core.gradients.LayerTap`), which give the layer's
    activations, the explained score and the top-1 class (``target=None``); no backward.

    Sign rule: a singular vector's sign is arbitrary (LAPACK's choice; pytorch-grad-cam's
    ``EigenCAM`` keeps whatever NumPy returns, so its map may be the negative of this one before
    its ReLU). tfattr flips ``M`` when ``|min M| > |max M|`` so the largest-magnitude value is
    positive (pytorch-grad-cam's ``get_2d_projection_with_sign_correction``, eq. 13 of Chung &
    Ying 2025) — a portable, deterministic rule.

    Args:
        model: the Keras model.
        layer: as :class:`~tfattr.methods.gradcam.GradCAM`.
        relu, upsample, normalize: the map options of :class:`~tfattr.methods.gradcam.GradCAM`.
        center: subtract each channel's mean over positions before the SVD (default ``True``,
            pytorch-grad-cam's choice: principal components proper).
        output: the explained output of a model with several (see
            :class:`~tfattr.methods.base.AttributionMethod`).

    ``info["component"]`` holds ``v₁`` ``(N, K)`` (after the sign rule),
    ``info["explained_variance"]`` ``S₁² / Σ S²`` ``(N,)`` and ``info["activations"]`` ``A``.
    """

    name = "eigencam"
    options = MAP_OPTIONS + (Option("center", True, checks.boolean),)

    def describe(self, config) -> str:
        return f"eigencam(layer={self.layer.name}{'' if config['center'] else ', center=False'})"

    def _map(self, g, activations, scores, config):
        num, height, width, channels = activations.shape
        matrix = activations.reshape(num, height * width, channels)
        if config["center"]:
            matrix = matrix - matrix.mean(axis=1, keepdims=True)
        # TensorFlow's SVD (float64, batched over examples): NumPy's multi-threaded OpenBLAS SVD of
        # these small matrices is up to 100x slower on a loaded machine (benchmarks/bench_cams.py)
        singular, _, v = tf.linalg.svd(tf.constant(matrix, tf.float64), full_matrices=False)
        singular, component = singular.numpy(), v.numpy()[:, :, 0]
        projection = np.einsum("npk,nk->np", matrix, component)
        flip = np.abs(projection.min(axis=1)) > np.abs(projection.max(axis=1))
        sign = np.where(flip, -1.0, 1.0)
        projection, component = projection * sign[:, None], component * sign[:, None]
        power = (singular**2).sum(axis=1)
        explained = np.where(power > 0, singular[:, 0] ** 2 / np.where(power > 0, power, 1.0), 0.0)
        return projection.reshape(num, height, width), {"component": component, "explained_variance": explained}

    def _explain(self, x, targets, fx, config) -> Explained:
        activations, scores, classes, passes = self.layer_forward(x, targets, config)
        raw, info = self._map(None, activations, scores, config)
        cam = self._finish(raw, tuple(x.shape[1:]), config)
        info = dict({"layer": self.layer.name}, **info, activations=activations, forward_passes=passes)
        return Explained(attributions=cam, gradients=0, scores=scores, targets=classes, info=info)
