r"""Propagation methods built on surgery clones: Deconvolution, Guided Grad-CAM, DeepLift.

* :class:`Deconvolution` (Zeiler & Fergus 2014): the input gradient of the deconvnet clone
  (:func:`tfattr.surgery.propagation.deconv_clone`), whose ReLUs pass ``relu(∂F/∂y)`` back
  whatever their input was; the same rows as :class:`~tfattr.methods.guided.GuidedBackprop`.
* :class:`GuidedGradCAM` (Selvaraju et al. 2017, §3.2 "Guided Grad-CAM"): guided backpropagation
  ⊙ the Grad-CAM map upsampled to the input, as captum's ``GuidedGradCam``.
* :class:`DeepLift` (Shrikumar et al. 2017, Rescale rule): ``(x − x₀) ⊙`` the multipliers of the
  DeepLIFT clone (:func:`tfattr.surgery.deeplift.deeplift_clone`), whose nonlinearities see the
  input and the reference in one batched pass; :class:`DeepLiftShap` averages it over a
  distribution of references (captum's ``DeepLiftShap``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfattr.baselines.registry import BaselineSet
from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import PathRows
from tfattr.core.gradients import InputGradients
from tfattr.core.ranges import resolve_value_range
from tfattr.core.targets import Targets
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import AttributionMethod, Explained
from tfattr.methods.gradcam import GradCAM
from tfattr.methods.gradient import Gradient
from tfattr.methods.gradient_shap import _distribution_check, baseline_distribution
from tfattr.methods.guided import MAXPOOL_RULE, GuidedBackprop
from tfattr.methods.integrated_gradients import BASELINE_OPTIONS, IntegratedGradients
from tfattr.surgery.cloning import surgery_report, synced
from tfattr.surgery.deeplift import DeepLiftGradients, deeplift_clone
from tfattr.surgery.propagation import deconv_clone

__all__ = ["Deconvolution", "GuidedGradCAM", "DeepLift", "DeepLiftShap", "deconv_gradient_function", "upsample_map"]


def deconv_gradient_function(model, score_fn=None) -> InputGradients:
    """``(points, target_rows) -> (scores, deconvnet gradients, points)`` for the engine.

    Raises:
        InvalidInputError: the model has no ReLU tfattr can swap (its deconvolution would be the
            plain gradient, silently).
    """
    clone = deconv_clone(model)
    report = surgery_report(clone)
    if not report.changed:
        hidden = (" It does contain ReLU ops that cannot be swapped: " + ", ".join(report.left_alone[:10]) + ".") \
            if report.left_alone else ""
        raise InvalidInputError(
            f"Deconvolution changes the backward pass of ReLU layers, but model {model.name!r} has none that "
            "tfattr can swap (keras.layers.ReLU/LeakyReLU/PReLU, Activation('relu'), activation='relu' in "
            f"Conv/Dense layers); its deconvolution would just be the plain gradient.{hidden} "
            + received("model.name", model.name))
    return InputGradients(synced(clone), score_fn)


class Deconvolution(Gradient):
    r"""Deconvolution (Zeiler & Fergus 2014): the gradient with every ReLU's backward ``relu(∂F/∂y)``.

    ``R = ∂^D f(x)/∂x`` where each ReLU ``y = relu(x)`` sends ``relu(∂F/∂y)`` back (the forward
    mask ``1[x > 0]`` is ignored) and max-pools keep their plain gradient (the arg-max
    "switches" of the paper's unpooling), as captum's ``Deconvolution``, which overrides only
    ``torch.nn.ReLU``. Runs on the model's deconvnet clone
    (:func:`tfattr.surgery.propagation.deconv_clone`; the model itself is never changed), with
    the model's current weights.

    Options:
        absolute: as in :class:`~tfattr.methods.gradient.Gradient`.
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod`.

    Raises :class:`~tfattr.errors.InvalidInputError` on a model with no ReLU to swap.

    Example:
        >>> Deconvolution(model).attribute(images, target=3).attributions
    """

    name = "deconvolution"
    options = Gradient.options

    def gradient_function(self, score_fn=None):
        return deconv_gradient_function(self.model, score_fn)


INTERPOLATE_MODES = ("nearest", "bilinear")


def upsample_map(cam: np.ndarray, size, mode: str) -> np.ndarray:
    """``(N, h, w)`` maps resized to ``size = (H, W)`` as ``torch.nn.functional.interpolate``.

    ``"nearest"``: output position ``j`` takes ``⌊j · h / H⌋`` (PyTorch's ``nearest``);
    ``"bilinear"``: half-pixel centres without corner alignment (PyTorch's ``align_corners=False``,
    ``tf.image.resize(..., "bilinear")``).
    """
    cam = np.asarray(cam)
    if tuple(cam.shape[1:3]) == tuple(size):
        return cam
    if mode == "nearest":
        rows = (np.arange(size[0]) * cam.shape[1]) // size[0]
        cols = (np.arange(size[1]) * cam.shape[2]) // size[1]
        return cam[:, rows][:, :, cols]
    return tf.image.resize(cam[..., None], tuple(size), method="bilinear").numpy()[..., 0]


class GuidedGradCAM(AttributionMethod):
    r"""Guided Grad-CAM (Selvaraju et al. 2017, §3.2): guided backpropagation ⊙ upsampled Grad-CAM.

    ``R_c(x) = ∂^G y^c/∂x ⊙ up(ReLU(Σ_k α_k^c A^k))`` with ``α_k^c = (1/Z) Σ_ij ∂y^c/∂A^k_ij``
    (Grad-CAM, eqs. 1–2) at ``layer`` and ``∂^G`` the guided-backpropagation gradient
    (:class:`~tfattr.methods.guided.GuidedBackprop`). The map has the layer's resolution and is
    upsampled to the input's height and width; every input channel is multiplied by the same
    map (captum's ``GuidedGradCam``, which broadcasts its ``(N, 1, H, W)`` map over channels).
    Both parts explain the same class: ``target=None`` is the top-1 class found in the Grad-CAM
    pass, then handed to guided backpropagation.

    Args:
        model: the Keras model.
        layer: as :class:`~tfattr.methods.gradcam.GradCAM` (default: the last layer with a 4-D output).
        interpolate_mode: how the map is upsampled: ``"nearest"`` (default, captum's default) or
            ``"bilinear"`` (half-pixel centres, PyTorch's ``align_corners=False``; the paper's).
        maxpool_rule: the guided max-pool rule (see :class:`~tfattr.methods.guided.GuidedBackprop`).
        batch_size, verbose, parallel_chunks, output: see :class:`~tfattr.methods.base.AttributionMethod`.

    ``info`` holds ``"gradcam"`` (the ``(N, h, w)`` map before upsampling), ``"guided"`` (the
    guided-backpropagation gradients) and ``"layer"``.

    Example:
        >>> GuidedGradCAM(model, layer="conv").attribute(images).attributions   # (N, H, W, C)
    """

    name = "guided_gradcam"
    options = (Option("interpolate_mode", "nearest", checks.choices(*INTERPOLATE_MODES)), MAXPOOL_RULE)
    combine = "plain"
    top1_in_rows = True
    several_inputs = False

    def __init__(self, model, layer=None, **options):
        super().__init__(model, **options)
        self.gradcam = GradCAM(model, layer, relu=True, upsample=False)
        self.guided = GuidedBackprop(model)

    @property
    def layer(self):
        return self.gradcam.layer

    def describe(self, config) -> str:
        return f"guided_gradcam(layer={self.layer.name})"

    def _cache_state(self, config):
        return dict(super()._cache_state(config), layer=None if self.layer is None else self.layer.name)

    def _part_options(self, config):
        return dict(batch_size=config["batch_size"], verbose=config["verbose"],
                    parallel_chunks=config["parallel_chunks"], output=config["output"])

    def _explain(self, x, targets, fx, config) -> Explained:
        cam_config = self.gradcam.call_options(**self._part_options(config))
        cam = self.gradcam.explain(x, targets, fx, cam_config)
        classes = cam.get("targets")
        if classes is not None and targets.indices is not None:  # the top-1 classes of the Grad-CAM pass
            targets = Targets(np.asarray(classes, np.int32), targets.score_fn, targets.output)
        guided_config = self.guided.call_options(maxpool_rule=config["maxpool_rule"], **self._part_options(config))
        guided = self.guided.explain(x, targets, None, guided_config)
        up = upsample_map(cam["attributions"], tuple(x.shape[1:3]), config["interpolate_mode"])
        attributions = guided["attributions"] * up[..., None]
        return Explained(attributions=attributions, gradients=cam["gradients"] + guided["gradients"],
                         scores=cam.get("scores"), targets=classes,
                         info={"layer": self.layer.name, "gradcam": cam["attributions"],
                               "guided": guided["attributions"]})


class DeepLift(IntegratedGradients):
    r"""DeepLIFT with the Rescale rule (Shrikumar, Greenside & Kundaje 2017), as captum's ``DeepLift``
    (``multiply_by_inputs=True``).

    ``R_i = (x_i − x₀_i) · m_i`` where ``m`` are the DeepLIFT multipliers of the target score
    w.r.t. the input: the chain rule with every elementwise nonlinearity's derivative replaced by
    ``Δy/Δx = (φ(x) − φ(x₀))/(x − x₀)`` (paper §3.5.1; the derivative where ``|Δx| < 10⁻¹⁰``, captum's
    ``eps``) and max-pools by captum's rule (:mod:`tfattr.surgery.deeplift`). On networks of linear
    layers, elementwise nonlinearities and max-pools the result sums to ``f(x) − f(x₀)``
    (summation-to-delta, eq. 1): ``Explanation.delta`` is ``Σ R − (f(x) − f(x₀))``, zero up to float
    rounding. Per example and baseline, a forward of the model's DeepLIFT clone on ``x₀`` and a
    forward and backward on ``x`` (:class:`~tfattr.surgery.deeplift.DeepLiftGradients`); layers without
    a rule (softmax, ``Multiply``, LayerNormalization, custom
    layers…) are refused by name (explain a softmax model's logits with
    :func:`tfattr.surgery.logits_model`).

    Options:
        baseline: the reference ``x₀`` (default ``"zero"``, i.e. 0); any baseline of
            :class:`~tfattr.methods.integrated_gradients.IntegratedGradients` (a number, an array, ``"blur"``,
            ``"uniform"``…). With ``n_baselines > 1`` draws (or an array of several) the attributions are
            averaged over them.
        n_baselines, value_range, seed, per_image_baselines, sigma, blur_sigma, value: the baseline
            options of :class:`~tfattr.methods.integrated_gradients.IntegratedGradients`.
        batch_size, verbose, parallel_chunks, output: see :class:`~tfattr.methods.base.AttributionMethod`.

    Example:
        >>> expl = DeepLift(model, baseline=0).attribute(images, target=3)
        >>> expl.attributions.sum(axis=(1, 2, 3)) - (expl.scores - expl.baseline_scores)   # ≈ 0
    """

    name = "deeplift"
    several_inputs = False
    options = checks.pick(BASELINE_OPTIONS, "baseline", "n_baselines", "value_range", "seed", "per_image_baselines",
                          "sigma", "blur_sigma", "value")

    def check_combination(self, config):
        config["value_range"] = resolve_value_range(config["value_range"], self.model)

    def describe(self, config) -> str:
        baseline = config["baseline"] if isinstance(config["baseline"], str) else "custom"
        return f"{self.name}(baseline={baseline})"

    def gradient_function(self, score_fn=None):
        return DeepLiftGradients(synced(deeplift_clone(self.model, refresh_weights=False)), score_fn)

    def _explain(self, x, targets, fx, config, baselines: BaselineSet = None) -> Explained:
        deeplift_clone(self.model, refresh_weights=False)  # refuses unsupported layers before any work
        if baselines is None:
            baselines = self.make_baselines(x.numpy(), config)
        num_examples = int(x.shape[0])
        rows = PathRows.grid(num_examples, baselines.count, np.ones(1), np.ones(1), baselines.per_example)
        result = self.integrate(x, baselines, targets, rows, config)
        fz = self.baseline_scores(x, baselines, targets, rows, result, config)
        fx = self.scores_at_input(rows, result, num_examples) if fx is None else fx
        total = result.attributions.reshape(num_examples, -1).sum(axis=1)
        return Explained(attributions=result.attributions, delta=total - (fx - fz), baseline_scores=fz, scores=fx,
                         gradients=len(rows), info={"baseline": baselines.name, "n_baselines": baselines.count})


class DeepLiftShap(DeepLift):
    r"""DeepLiftShap (captum's ``DeepLiftShap``): DeepLift averaged over a distribution of references.

    ``R_i = (1/K) Σ_k (x_i − b_k,i) · m_i(x, b_k)``: the :class:`DeepLift` (Rescale) attributions of
    ``x`` for every baseline ``b_k`` of the distribution, averaged (every baseline is used, none
    drawn). It sums to ``f(x) − (1/K) Σ_k f(b_k)`` (``Explanation.delta`` ≈ 0 on the networks
    :class:`DeepLift` supports), which approximates SHAP values under the independence of the
    inputs and the linearisation of Lundberg & Lee 2017. One pass of the DeepLIFT clone per
    example and baseline.

    Options:
        baselines: the distribution: a ``(K, …)`` array or tensor of baselines of the inputs' shape,
            or a ``tf.data.Dataset`` whose first ``reference_size`` examples are taken (as
            :class:`~tfattr.methods.gradient_shap.GradientShap`). Required.
        reference_size: examples taken from a dataset (default 100).
        batch_size, verbose, parallel_chunks, output: see :class:`~tfattr.methods.base.AttributionMethod`.

    Example:
        >>> expl = DeepLiftShap(model, baselines=background[:16]).attribute(images, target=3)
    """

    name = "deeplift_shap"
    options = (Option("baselines", None, _distribution_check), Option("reference_size", 100, checks.positive_int))

    def check_combination(self, config):
        pass

    def uses_value_range(self, config) -> bool:
        return False

    def _cache_state(self, config):
        return {}

    def describe(self, config) -> str:
        return self.name

    def make_baselines(self, x_array: np.ndarray, config) -> BaselineSet:
        if config["baselines"] is None:
            raise InvalidInputError("DeepLiftShap needs a baseline distribution: pass `baselines=` (a (K, …) array "
                                    "or a tf.data.Dataset). " + received("baselines", None))
        references = baseline_distribution(config["baselines"], x_array.shape[1:], config["reference_size"],
                                           np.float64)
        return BaselineSet(references[None], "distribution")
