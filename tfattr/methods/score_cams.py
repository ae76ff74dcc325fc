"""The gradient-free CAMs whose channel weights come from masked forward passes: Score-CAM
(Wang et al. 2020, with Faster Score-CAM's channel selection) and Ablation-CAM (Desai &
Ramaswamy 2020).

Both first run forward passes to the layer (one per chunk of examples,
:class:`~tfattr.core.gradients.LayerTap`, no backward) for the layer's activations ``A``
``(N, h, w, K)``, the explained score ``y`` and the explained class (``target=None``: the top-1,
picked there). The
channel weights then come from **forward rows** (:class:`~tfattr.core.engine.ForwardEngine`),
one row per example and channel, built on the device per chunk from the row's example and
channel, never all ``K`` masks of a batch at once:

* Score-CAM: the row is the input masked by the channel's upsampled, min–max normalised map,
  ``x ⊙ M_k``, scored by the model;
* Ablation-CAM: the row starts *at the layer*: the model runs with the layer's output replaced
  by ``A`` with channel ``k`` set to the ablation value
  (:class:`~tfattr.core.gradients.LayerInjection`; the layers before it do not feed the score
  and are pruned from the compiled pass, inputs that bypass the layer still reach the head).

Every row scores the class explained at ``x``. The map is ``ReLU(Σ_k w_k A^k)`` with Grad-CAM's
options (``relu``, ``upsample``, ``normalize``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import ChunkRows, ForwardRows
from tfattr.core.gradients import LayerInjection
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import Explained
from tfattr.methods.cams import _ActivationGradientCAM, _LayerForward
from tfattr.methods.gradcam import MAP_OPTIONS

__all__ = ["ScoreCAM", "AblationCAM"]


def _score_cam_rows(x, rows: ChunkRows):
    """Score-CAM's masked inputs of one chunk: the map of row ``r`` is ``context[example, position]``
    ``(h, w)``, bilinearly resized to the input (half-pixel centres, as Grad-CAM's upsampling),
    min–max normalised to ``[0, 1]`` (a constant map gives the mask 0), times the example."""
    maps = tf.gather_nd(rows.context, tf.stack([rows.example, rows.position], axis=1))
    maps = tf.ensure_shape(maps, [None, None, None])  # (rows, h, w)
    masks = tf.image.resize(tf.cast(maps, x.dtype)[..., None], x.shape[1:3], method="bilinear")  # (rows, H, W, 1)
    masks = tf.cast(masks, x.dtype)
    low = tf.reduce_min(masks, axis=[1, 2, 3], keepdims=True)
    span = tf.reduce_max(masks, axis=[1, 2, 3], keepdims=True) - low
    masks = tf.where(span > 0, (masks - low) / tf.where(span > 0, span, 1.0), tf.zeros_like(masks))
    return tf.gather(x, rows.example) * tf.cast(masks, x.dtype)


def _align_corners_matrix(size: int, source: int) -> np.ndarray:
    """``(size, source)`` weights of bilinear resizing with aligned corners (PyTorch's
    ``align_corners=True``, ``UpsamplingBilinear2d``): output ``i`` samples ``i · (source − 1)/(size − 1)``."""
    position = np.arange(size) * ((source - 1) / (size - 1) if size > 1 else 0.0)
    low = np.clip(np.floor(position).astype(int), 0, source - 1)
    high = np.minimum(low + 1, source - 1)
    frac = position - low
    weights = np.zeros((size, source))
    np.add.at(weights, (np.arange(size), low), 1.0 - frac)
    np.add.at(weights, (np.arange(size), high), frac)
    return weights


class _AlignedScoreRows:
    """Score-CAM's masked inputs with the maps resized by aligned corners (``mask_upsampling="align_corners"``,
    pytorch-grad-cam's ``UpsamplingBilinear2d``), then min–max normalised as :func:`_score_cam_rows`.
    One builder per map shape ``(h, w)``."""

    def __init__(self, shape):
        self.shape = tuple(int(d) for d in shape)

    def __call__(self, x, rows: ChunkRows):
        maps = tf.gather_nd(rows.context, tf.stack([rows.example, rows.position], axis=1))
        maps = tf.cast(tf.ensure_shape(maps, [None, *self.shape]), x.dtype)  # (rows, h, w)
        size = tuple(int(d) for d in x.shape[1:3])
        rows_matrix = tf.constant(_align_corners_matrix(size[0], self.shape[0]), x.dtype)
        cols_matrix = tf.constant(_align_corners_matrix(size[1], self.shape[1]), x.dtype)
        masks = tf.einsum("Hh,rhw,Ww->rHW", rows_matrix, maps, cols_matrix)[..., None]
        low = tf.reduce_min(masks, axis=[1, 2, 3], keepdims=True)
        span = tf.reduce_max(masks, axis=[1, 2, 3], keepdims=True) - low
        masks = tf.where(span > 0, (masks - low) / tf.where(span > 0, span, 1.0), tf.zeros_like(masks))
        return tf.gather(x, rows.example) * masks


class _AblationRows:
    """Ablation-CAM's rows of one chunk: the example's inputs and the layer's activations with channel
    ``position`` set to the ablation value (``context`` = ``[A, value everywhere]``, ``(2, N, h, w, K)``).
    One builder per activation shape ``(h, w, K)`` (the layers after it need the static shape)."""

    def __init__(self, shape):
        self.shape = tuple(int(d) for d in shape)

    def __call__(self, x, rows: ChunkRows):
        # in x's dtype before gathering (the context is float64): selecting then casting is the same
        # as casting then selecting, and float64 copies of every row cost more than the layers after
        # the layer on EfficientNet-Lite0 (benchmarks/bench_cams.py)
        context = tf.cast(tf.ensure_shape(rows.context, [2, None, *self.shape]), x.dtype)
        activations = tf.gather(context[0], rows.example)  # (rows, h, w, K)
        value = tf.gather(context[1, :, :1, :1, :1], rows.example)  # the value fills its plane: (rows, 1, 1, 1)
        ablated = tf.equal(tf.range(self.shape[-1]), rows.position[:, None])[:, None, None, :]  # (rows, 1, 1, K)
        injected = tf.where(ablated, value, activations)
        return [tf.gather(x, rows.example), injected]


class _ForwardCAM(_LayerForward, _ActivationGradientCAM):
    """A forward pass to the layer for ``A``, ``y`` and the classes, then one forward row per example
    and channel."""

    def builder(self, activations, config=None):
        """The chunk builder (the same object for every call: one compiled chunk per input shape)."""
        raise NotImplementedError

    def forward_rows_model(self):
        """What the forward rows run: the model (Score-CAM) or the model fed at the layer."""
        return self.model

    def _rows(self, activations, scores, config):
        """``(ForwardRows, context, channels)``: ``channels`` ``(N, k)`` the channel of each row."""
        raise NotImplementedError

    def _weights(self, row_scores, scores, config):
        """Channel weights ``(N, k)`` from the rows' scores ``(N, k)`` and ``y`` ``(N,)``."""
        raise NotImplementedError

    def _explain(self, x, targets, fx, config) -> Explained:
        activations, scores, classes, passes = self.layer_forward(x, targets, config)
        num_examples = len(activations)
        rows, context, channels = self._rows(activations, scores, config)
        engine = self.forward_engine(self.forward_rows_model(), targets, config, kind="rows")
        result = engine.run(x, rows, self.builder(activations, config), np.asarray(classes, np.int32), combine="scores",
                            context=context)
        row_scores = result.row_scores.reshape(num_examples, -1)
        weights = self._weights(row_scores, scores, config)
        extra = row_scores[:, channels.shape[1]:]  # Score-CAM's increments add a row at the zero image
        row_scores = row_scores[:, : channels.shape[1]]
        selected = np.take_along_axis(activations, channels[:, None, None, :], axis=-1)
        cam = self._finish(np.einsum("nk,nhwk->nhw", weights, selected), tuple(x.shape[1:]), config)
        info = {"layer": self.layer.name, "weights": weights, "channel_scores": row_scores, "channels": channels,
                "activations": activations, "forward_rows": len(rows), "forward_passes": passes + result.chunks}
        if extra.size:
            info["baseline_score"] = extra[:, 0]
        return Explained(attributions=cam, gradients=0, scores=scores, targets=classes, info=info)


class ScoreCAM(_ForwardCAM):
    """Score-CAM (Wang et al. 2020): each channel's map, upsampled to the input and min–max
    normalised, masks the input; the channel weight is the model's score on the masked input.

    ``M_k = s(Up(A^k))`` with ``s(m) = (m − min m) / (max m − min m)`` (eq. 3 of the paper; a
    constant map gives ``M_k = 0``), ``C(A^k) = f_c(x ⊙ M_k)`` (eq. 4; the paper subtracts
    ``f_c(x_b)`` of a baseline, a constant that the softmax below cancels),
    ``w_k = softmax_k(C(A^k))`` over the channels (Algorithm 1), and the map
    ``L = ReLU(Σ_k w_k A^k)`` (eq. 6), bilinearly upsampled to the input size.

    Args:
        model: the Keras model.
        layer: as :class:`~tfattr.methods.gradcam.GradCAM` (name, nested path, index or layer
            object; default: the last layer with a 4-D output).
        weighting: ``"softmax"`` (default; the paper's Algorithm 1 and pytorch-grad-cam's
            ``score_cam.py``: ``w = softmax over channels of the target scores``) or ``"score"``
            (the raw target scores ``w_k = f_c(x ⊙ M_k)``, no softmax over channels:
            tf-keras-vis's ``scorecam.py``, which scores the class *probability* — it applies a
            softmax over the classes to the model's output — so its weights are this option's with
            a model ending in a softmax, or with a callable ``target`` returning the probability;
            the authors' code, ``haofanwang/Score-CAM`` at d312f14, weighs by that probability too
            and skips constant channels, which here get the weight ``f_c(x ⊙ 0)``), or
            ``"increment"`` (eq. 4's
            increase of confidence without the softmax, ``w_k = f_c(x ⊙ M_k) − f_c(x_b)`` with the
            black baseline ``x_b = x ⊙ 0``, one more forward row per example;
            ``info["baseline_score"]`` holds ``f_c(x_b)``).
        top_k: ``None`` (default, every channel) or ``k``: Faster Score-CAM (tf-keras-vis's
            ``max_N``): only the ``k`` channels whose activations have the largest standard
            deviation over positions are masked, weighted and summed (per example; ties go to the
            lower channel index). tf-keras-vis takes the union of the examples' selections over the
            batch, which makes one example's map depend on the others in its batch; tfattr does not.
        mask_upsampling: how each map is resized to the input before ``s``: ``"half_pixel"``
            (default; bilinear with half-pixel centres, ``tf.image.resize``, as the maps' upsampling,
            as the authors' ``F.interpolate(..., align_corners=False)``) or ``"align_corners"``
            (bilinear with aligned corners: output ``i`` samples the map at ``i (h − 1)/(H − 1)``,
            pytorch-grad-cam's ``UpsamplingBilinear2d``; with it the weights equal pytorch-grad-cam's
            ``ScoreCAM``). The two agree at a layer with the input's resolution.
        relu, upsample, normalize: the map options of :class:`~tfattr.methods.gradcam.GradCAM`.
        batch_size, parallel_chunks, verbose: the masked inputs are forward rows (``"auto"``
            sizes them; results do not depend on it beyond float32 rounding).
        output: the explained output of a model with several (see
            :class:`~tfattr.methods.base.AttributionMethod`).

    tf-keras-vis resizes with ``scipy.ndimage.zoom`` (``order=1``), which places the samples
    slightly differently again; pytorch-grad-cam and tf-keras-vis add ``10⁻⁸``/``10⁻⁷`` to the
    range in ``s`` (tfattr does not: a constant map gives the mask 0).

    Cost: a forward pass per chunk of examples for ``A``, then ``K`` (or ``top_k``) forward passes
    of the whole model per example.
    ``info["weights"]`` holds ``w_k`` ``(N, k)``, ``info["channel_scores"]`` the masked scores
    ``(N, k)``, ``info["channels"]`` the channel of each weight ``(N, k)`` and
    ``info["activations"]`` ``A`` ``(N, h, w, K)``.

    Example:
        >>> ScoreCAM(model, layer="block5_conv3", top_k=32).attribute(images).attributions  # (N, H, W)
    """

    name = "scorecam"
    options = MAP_OPTIONS + (Option("weighting", "softmax", checks.choices("softmax", "score", "increment")),
                             Option("top_k", None, checks.optional(checks.positive_int)),
                             Option("mask_upsampling", "half_pixel", checks.choices("half_pixel", "align_corners")))

    def __init__(self, model, layer=None, **options):
        super().__init__(model, layer, **options)
        self._aligned = {}

    def builder(self, activations, config=None):
        if config is None or config["mask_upsampling"] == "half_pixel":
            return _score_cam_rows
        shape = tuple(activations.shape[1:3])
        with self._engine_lock:
            return self._aligned.setdefault(shape, _AlignedScoreRows(shape))

    def describe(self, config) -> str:
        extra = "" if config["weighting"] == "softmax" else f", weighting={config['weighting']}"
        extra += "" if config["top_k"] is None else f", top_k={config['top_k']}"
        extra += "" if config["mask_upsampling"] == "half_pixel" else ", mask_upsampling=align_corners"
        return f"scorecam(layer={self.layer.name}{extra})"

    def _rows(self, activations, scores, config):
        num, _, _, channels = activations.shape
        k = channels if config["top_k"] is None else int(config["top_k"])
        if k > channels:
            raise InvalidInputError(f"`top_k` must be at most the {channels} channels of layer {self.layer.name!r}. "
                                    + received("top_k", k))
        if k == channels:
            chosen = np.tile(np.arange(channels), (num, 1))
        else:
            spread = activations.std(axis=(1, 2))  # (N, K), tf-keras-vis's reduce_std over positions
            chosen = np.sort(np.argsort(-spread, axis=1, kind="stable")[:, :k], axis=1)
        maps = np.transpose(np.take_along_axis(activations, chosen[:, None, None, :], axis=-1), (0, 3, 1, 2))
        if config["weighting"] == "increment":  # one more row: a constant map masks to the zero image x ⊙ 0
            maps = np.concatenate([maps, np.zeros_like(maps[:, :1])], axis=1)
        return ForwardRows.repeat(num, maps.shape[1]), maps, chosen

    def _weights(self, row_scores, scores, config):
        if config["weighting"] == "score":
            return row_scores
        if config["weighting"] == "increment":
            return row_scores[:, :-1] - row_scores[:, -1:]
        shifted = row_scores - row_scores.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)


class AblationCAM(_ForwardCAM):
    """Ablation-CAM (Desai & Ramaswamy 2020): the channel weight is the relative drop of the score
    when the channel is ablated, ``w_k = (y − y_k) / y`` (eq. 4 of the paper; ``y_k`` is the score
    with the layer's channel ``k`` set to 0 everywhere), and the map ``L = ReLU(Σ_k w_k A^k)``
    (eq. 5), bilinearly upsampled to the input size.

    Each ablated channel is a forward row that starts at the layer: the model runs with the
    layer's output replaced by the ablated activations (the layers before it are not rerun per
    row; inputs that bypass the layer, such as skip connections around it, keep their values).

    Args:
        model: the Keras model.
        layer: as :class:`~tfattr.methods.gradcam.GradCAM`.
        ablation_value: the value the ablated channel is set to (default ``0.0``, the paper's).
            pytorch-grad-cam's ``AblationLayer`` uses 0 when the batch's smallest activation is 0
            and otherwise that minimum minus ``10⁷``; pass such a value here to reproduce it.
        relu, upsample, normalize: the map options of :class:`~tfattr.methods.gradcam.GradCAM`.
        batch_size, parallel_chunks, verbose: the ablated channels are forward rows.
        output: the explained output of a model with several (see
            :class:`~tfattr.methods.base.AttributionMethod`).

    ``y`` is the explained score itself (a logit, or a probability for a model ending in a
    softmax): the weights assume ``y > 0`` (for ``y < 0`` the division flips their signs, as
    in pytorch-grad-cam); ``y = 0`` raises an error (the weight is undefined).

    When the layer is followed by global average pooling and a linear head
    ``y = Σ_k W_k mean(A^k) + b``, ablating channel ``k`` removes its term:
    ``w_k = W_k mean(A^k) / y``.

    ``info["weights"]`` holds ``w_k`` ``(N, K)``, ``info["channel_scores"]`` ``y_k`` ``(N, K)`` and
    ``info["activations"]`` ``A``.

    Example:
        >>> AblationCAM(model, layer="block5_conv3").attribute(images).attributions  # (N, H, W)
    """

    name = "ablationcam"
    options = MAP_OPTIONS + (Option("ablation_value", 0.0, checks.finite_number),)

    def __init__(self, model, layer=None, **options):
        super().__init__(model, layer, **options)
        self._injection = None
        self._builders = {}

    def builder(self, activations, config=None):
        shape = tuple(activations.shape[1:])
        with self._engine_lock:
            return self._builders.setdefault(shape, _AblationRows(shape))

    def describe(self, config) -> str:
        extra = "" if config["ablation_value"] == 0 else f", ablation_value={config['ablation_value']:g}"
        return f"ablationcam(layer={self.layer.name}{extra})"

    def forward_rows_model(self):
        if self._injection is None or self._injection.layer is not self.layer:
            self._injection = LayerInjection(self.model, self.layer, "output")
        return self._injection

    def _rows(self, activations, scores, config):
        num, _, _, channels = activations.shape
        context = np.stack([activations, np.full(activations.shape, float(config["ablation_value"]))])
        return ForwardRows.repeat(num, channels), context, np.tile(np.arange(channels), (num, 1))

    def _weights(self, row_scores, scores, config):
        if np.any(scores == 0):
            raise InvalidInputError(
                "Ablation-CAM divides by the explained score y, which is 0 for some example; explain another "
                "class or output. " + received("scores", scores.tolist()))
        return (scores[:, None] - row_scores) / scores[:, None]
