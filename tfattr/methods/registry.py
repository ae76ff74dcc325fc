"""Methods by name: the one table the faces (``tfattr explain --method``, ``tfattr evaluate --methods``,
:class:`~tfattr.callbacks.SaliencyLogger` given a name) build methods from.

Each :class:`MethodEntry` says which class a name builds, which *settings* it reads (the CLI's
flags by their argparse names: ``steps``, ``window``, ``n_masks``, …), whether it needs a layer
(the CAM family) or a baseline distribution, and how it is built from the settings. A method
whose options are named like the settings joins with one line::

    register(MethodEntry("rise", RISE, reads=("n_masks", "grid", "p", "seed")))

(``reads`` maps an option to the setting of the same name; ``rename={"option": "setting"}`` when
they differ; a ``build(model, settings)`` callable for anything else.) The settings a method
does not read are left out of its constructor, so the class's own defaults hold; a setting that
is ``None`` ("the method's default") is left out too.
"""

from __future__ import annotations

import errno
import inspect
import os
import stat
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from tfattr.core.noise import NoiseTunnel
from tfattr.errors import InvalidInputError, received
from tfattr.methods.adaptive_path import AdaptivePathIntegratedGradients
from tfattr.methods.blur_ig import BlurIntegratedGradients
from tfattr.methods.cams import EigenCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from tfattr.methods.gradcam import GradCAM, RSIGradCAM
from tfattr.methods.gradient import Gradient, InputXGradient
from tfattr.methods.gradient_shap import GradientShap
from tfattr.methods.guided import GuidedBackprop, GuidedIntegratedGradients
from tfattr.methods.integrated_gradients import IntegratedGradients
from tfattr.methods.lime import Lime, segment
from tfattr.methods.lrp import LRP
from tfattr.methods.permutation import FeaturePermutation
from tfattr.methods.perturbation import RISE, FeatureAblation, Occlusion
from tfattr.methods.propagation import Deconvolution, DeepLift, DeepLiftShap, GuidedGradCAM
from tfattr.methods.score_cams import AblationCAM, ScoreCAM
from tfattr.methods.shapley import KernelShap, ShapleyValueSampling
from tfattr.methods.smooth_taylor import SmoothTaylor
from tfattr.methods.sobol import HsicAttribution, SobolAttribution
from tfattr.methods.xrai import XRAI

__all__ = ["MethodEntry", "REGISTRY", "register", "method_names", "entry", "build_method", "method_class",
           "grid_mask", "SEGMENTATIONS", "COMMON_SETTINGS"]

#: what ``segmentation`` may name for the coalition methods (KernelSHAP, Shapley sampling, feature
#: ablation, LIME): a regular grid of ``cells × cells`` squares shared by every image, or the
#: superpixels of each image (scikit-image, :func:`tfattr.methods.lime.segment`)
SEGMENTATIONS = ("grid", "quickshift", "slic", "felzenszwalb")

#: the settings every method is built with when it takes them (not flags of one method)
_COMMON = ("batch_size", "verbose", "value_range", "seed")
#: the same, public (the callback checks a name's settings against them)
COMMON_SETTINGS = _COMMON


@dataclass(frozen=True)
class MethodEntry:
    """One method by name.

    Attributes:
        name: the name (``tfattr explain --method NAME``).
        cls: the class it builds (``NoiseTunnel`` for SmoothGrad).
        reads: the settings it reads (besides ``batch_size``, ``verbose``, ``value_range``,
            ``seed``, which every method that has them takes): the CLI's ignored-flag warning
            is derived from them.
        rename: ``{option: setting}`` for options named otherwise than their setting.
        build: ``(model, settings) -> method`` when the generic build (options from ``reads``)
            does not fit; ``None``: generic.
        needs_layer: the method explains a layer's activations (``layer``: name, path, index;
            ``None`` = the last 4-D layer).
        needs_distribution: the method draws baselines from a distribution (``baselines``).
        title: a human name (the demo's column titles, help texts).
    """

    name: str
    cls: type
    reads: Tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    build: Optional[Callable[[Any, Mapping[str, Any]], Any]] = None
    needs_layer: bool = False
    needs_distribution: bool = False
    title: str = ""

    @property
    def settings(self) -> Tuple[str, ...]:
        """Every setting the entry may read: ``reads`` and the common ones."""
        return tuple(dict.fromkeys(self.reads + _COMMON))

    def options(self, settings: Mapping[str, Any]) -> Dict[str, Any]:
        """The constructor options the generic build passes: each read (or common) setting the class
        takes, under its option name, when the setting is given and not ``None``."""
        accepted = _accepted(self.cls)
        options = {}
        settings_of = {option: option for option in self.reads}
        settings_of.update(self.rename)
        for setting in _COMMON:
            settings_of.setdefault(setting, setting)
        for option, setting in settings_of.items():
            if option in accepted and settings.get(setting) is not None:
                options[option] = settings[setting]
        return options

    def make(self, model, settings: Mapping[str, Any]):
        """The method for ``model`` with ``settings``."""
        if self.build is not None:
            return self.build(model, settings)
        return self.cls(model, **self.options(settings))


def _accepted(cls) -> set:
    return {p.name for p in inspect.signature(cls).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"model"}


#: every method by name, in the CLI's order
REGISTRY: Dict[str, MethodEntry] = {}


def register(item: MethodEntry) -> MethodEntry:
    """Add ``item`` to :data:`REGISTRY` (a name registered twice is an error: two meanings)."""
    if item.name in REGISTRY:
        raise InvalidInputError(f"method name {item.name!r} is registered already (as "
                                f"{REGISTRY[item.name].cls.__name__}). " + received("name", item.name))
    REGISTRY[item.name] = item
    return item


def method_names() -> Tuple[str, ...]:
    """The registered names, in order."""
    return tuple(REGISTRY)


def entry(name: str, argument: str = "method") -> MethodEntry:
    """The entry of ``name``; an unknown name is an error naming ``argument`` and listing the names."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise InvalidInputError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}. "
                                + received(argument, name))
    return REGISTRY[name]


def method_class(name: str, argument: str = "method") -> type:
    """The class ``name`` builds."""
    return entry(name, argument).cls


def build_method(name: str, model, settings: Optional[Mapping[str, Any]] = None, argument: str = "method"):
    """The method ``name`` for ``model``, from ``settings`` (setting name → value; missing or ``None``:
    the method's default)."""
    return entry(name, argument).make(model, dict(settings or {}))


# -- builders that are more than options by name ----------------------------------------------------

def grid_mask(height: int, width: int, cells: int) -> np.ndarray:
    """``(height, width)`` int64 group ids of ``cells × cells`` (at most one per pixel) near-equal
    rectangles, row-major: the image-independent feature mask of ``segmentation="grid"``."""
    rows = np.minimum(np.arange(height) * min(cells, height) // height, cells - 1)
    columns = np.minimum(np.arange(width) * min(cells, width) // width, cells - 1)
    return (rows[:, None] * min(cells, width) + columns[None, :]).astype(np.int64)


def _feature_mask(settings: Mapping[str, Any], default: str = "grid"):
    """The coalition methods' ``feature_mask`` from ``segmentation`` (and ``cells``, ``images``): ``(H, W, 1)``
    shared by the images (grid) or ``(N, H, W, 1)`` (superpixels), a group covering every channel."""
    name = settings.get("segmentation") or default
    if name not in SEGMENTATIONS:
        raise InvalidInputError(f"`segmentation` must be one of {list(SEGMENTATIONS)}. "
                                + received("segmentation", name))
    images = settings.get("images")
    if images is None:
        raise InvalidInputError("`segmentation` needs the images (settings['images']) to size its feature mask. "
                                + received("images", None))
    images = np.asarray(images)
    if name == "grid":
        return grid_mask(images.shape[1], images.shape[2], int(settings.get("cells") or 8))[..., None]
    return np.stack([segment(_segmentable(image, settings), name, seed=settings.get("seed") or 0)
                     for image in images])[..., None]


def _segmentable(image: np.ndarray, settings) -> np.ndarray:
    """An image as scikit-image's segmentations read it: RGB in [0, 1] (grey repeated)."""
    low, high = settings.get("value_range") or (0.0, 1.0)
    image = (np.asarray(image, np.float64) - low) / (high - low)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _fill(settings: Mapping[str, Any]) -> float:
    """The replacement value of the perturbation methods from ``baseline``: ``zero`` → 0, ``black`` →
    the low end of ``value_range``, or a number."""
    value = settings.get("baseline", "zero")
    low = (settings.get("value_range") or (0.0, 1.0))[0]
    if value in (None, "zero", "zeros"):
        return 0.0
    if value == "black":
        return float(low)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise InvalidInputError("the perturbation methods replace values by a constant: `baseline` must be zero, black "
                                "or a number. " + received("baseline", value))
    return number


#: the most values ``references`` draws of a named ``baselines`` distribution may hold (2²⁷: 1 GiB of
#: float64 draws; 10,000 draws of a 224 × 224 RGB image would be 12 GB)
MAX_REFERENCE_VALUES = 2 ** 27


def _distribution(settings: Mapping[str, Any]) -> np.ndarray:
    """The ``(K, H, W, C)`` baselines of GradientSHAP / DeepLiftSHAP from ``baselines``: a ``.npy``
    file, or ``references`` draws of a named baseline (:func:`tfattr.baselines.make_baselines`) for
    the images' shape."""
    from tfattr.baselines.registry import make_baselines

    spec = settings.get("baselines") or "uniform"
    images = settings.get("images")
    if isinstance(spec, str) and spec.endswith(".npy"):
        try:
            # a FIFO would block np.load, a device never end
            if os.path.exists(spec) and not stat.S_ISREG(os.stat(spec).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            array = np.load(spec, allow_pickle=False)
        except (OSError, ValueError) as error:
            reason = getattr(error, "strerror", None) or error
            raise InvalidInputError(f"`baselines`: cannot read {spec!r} as a .npy array ({reason}). "
                                    + received("baselines", spec)) from None
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
                or array.dtype == np.bool_):  # complex: casting would keep the real part silently
            raise InvalidInputError(f"`baselines`: {spec!r} holds {array.dtype} values; the baselines must be real "
                                    "numbers. " + received("baselines", spec))
        return array.astype(np.float32)
    if images is None:
        raise InvalidInputError("`baselines` by name needs the images (settings['images']) for its shape. "
                                + received("images", None))
    images = np.asarray(images, np.float32)
    references = int(settings.get("references") or 16)
    if references * int(np.prod(images.shape[1:])) > MAX_REFERENCE_VALUES:  # before gigabytes are drawn
        raise InvalidInputError(
            f"`references`: {references} draws of {tuple(images.shape[1:])} are "
            f"{references * int(np.prod(images.shape[1:])):,} values, more than the {MAX_REFERENCE_VALUES:,} "
            "(1 GiB in float64) a baseline distribution may hold; draw fewer. " + received("references", references))
    try:
        drawn = make_baselines(spec, images, value_range=tuple(settings.get("value_range") or (0.0, 1.0)),
                               n_baselines=references, seed=settings.get("seed") or 0)
    except (ValueError, TypeError) as error:  # its message names `baseline`: the setting here is `baselines`
        reason = str(error).split(" Received:")[0]
        raise type(error)(f"`baselines`: {reason} " + received("baselines", spec)) from None
    if drawn.relative or np.shape(drawn.array)[0] > 1:
        # noise around each image (gaussian: offsets) or one per image (blur, max_distance): the first
        # image's would stand for every image's, and offsets for baselines
        raise InvalidInputError(f"`baselines`: {spec!r} depends on each image, and the distribution is shared by "
                                "all images; name one that does not (uniform, zero, black, a saved baseline) or "
                                "pass a .npy file. " + received("baselines", spec))
    array = np.asarray(drawn.array, np.float32)
    return array.reshape((-1,) + images.shape[1:])


def _perturbation(cls, reads=()):
    def build(model, settings):
        options = MethodEntry("", cls, reads=reads).options(settings)
        return cls(model, baseline=_fill(settings), **options)

    return build


def _coalition(cls, reads=(), fill=True):
    """Build ``cls`` with ``feature_mask`` from ``segmentation`` (and ``baseline`` from ``_fill`` when
    ``fill``: a method without a replacement value, such as a permutation, passes ``fill=False``)."""

    def build(model, settings):
        options = MethodEntry("", cls, reads=reads).options(settings)
        if fill:
            options["baseline"] = _fill(settings)
        return cls(model, feature_mask=_feature_mask(settings), **options)

    return build


def _permutation(model, settings):
    """FeaturePermutation with one feature mask shared by the images (``segmentation="grid"``):
    superpixels are one mask per image, and a permutation swaps the *same* group between images."""
    name = settings.get("segmentation") or "grid"
    if name != "grid":
        raise InvalidInputError("feature-permutation swaps the same feature group between the images, so it needs one "
                                "mask shared by all: `segmentation` must be grid (superpixels differ per image). "
                                + received("segmentation", name))
    options = MethodEntry("", FeaturePermutation, reads=("n_permutations",)).options(settings)
    return FeaturePermutation(model, feature_mask=_feature_mask(settings), **options)


def _lime(model, settings):
    options = MethodEntry("", Lime, reads=("n_samples", "kernel_width")).options(settings)
    name = settings.get("segmentation") or "quickshift"
    segmentation = _feature_mask(settings)[..., 0] if name == "grid" else name
    images = settings.get("images")
    grey = images is not None and np.ndim(images) == 4 and np.shape(images)[-1] == 1
    if name != "grid" and (grey or tuple(settings.get("value_range") or (0.0, 1.0)) != (0.0, 1.0)):
        def segmentation(image, name=name):  # scikit-image reads RGB float colours in [0, 1] (grey repeated)
            return segment(_segmentable(image, settings), name, seed=settings.get("seed") or 0)
    return Lime(model, segmentation=segmentation, **options)


def _distribution_method(cls, reads=()):
    def build(model, settings):
        return cls(model, baselines=_distribution(settings), **MethodEntry("", cls, reads=reads).options(settings))

    return build


def _smoothgrad(model, settings):
    common = {k: settings[k] for k in ("batch_size", "verbose") if settings.get(k) is not None}
    return NoiseTunnel(Gradient(model, **common), nt_samples=settings.get("samples") or 25,
                       value_range=settings.get("value_range"), seed=settings.get("seed") or 0)


def _smoothtaylor(model, settings):
    sigma = settings.get("sigma", 0.15)
    sigma = sigma if sigma == "adaptive" else float(sigma)
    options = MethodEntry("", SmoothTaylor, reads=("roots",)).options(settings)
    return SmoothTaylor(model, sigma=sigma, noise_scale="relative", **options)


def _rsi(model, settings):
    reads = ("layer", "steps", "baseline", "n_baselines", "tolerance")
    options = MethodEntry("", RSIGradCAM, reads=reads).options(settings)
    if settings.get("rsi_notebook"):
        options.update(rule="trapezoid", positive_units=True)
    return RSIGradCAM(model, **options)


_IG = ("baseline", "steps", "rule", "n_baselines", "tolerance", "baseline_tolerance")
_CAM = ("layer",)

for _item in (
    MethodEntry("ig", IntegratedGradients, _IG, title="IG"),
    MethodEntry("guided-ig", GuidedIntegratedGradients, _IG, title="Guided IG"),
    MethodEntry("gradient", Gradient, title="Gradient"),
    MethodEntry("input-x-gradient", InputXGradient, title="Input x Gradient"),
    MethodEntry("guided-backprop", GuidedBackprop, title="Guided backprop"),
    MethodEntry("smoothgrad", NoiseTunnel, ("samples",), build=_smoothgrad, title="SmoothGrad"),
    MethodEntry("smoothtaylor", SmoothTaylor, ("roots", "sigma"), build=_smoothtaylor, title="SmoothTaylor"),
    MethodEntry("gradcam", GradCAM, _CAM, needs_layer=True, title="Grad-CAM"),
    MethodEntry("rsi-gradcam", RSIGradCAM, ("layer", "steps", "baseline", "n_baselines", "tolerance", "rsi_notebook"),
                build=_rsi, needs_layer=True, title="RSI-Grad-CAM"),
    # the CAM family (issue 28)
    MethodEntry("gradcam++", GradCAMPlusPlus, _CAM, needs_layer=True, title="Grad-CAM++"),
    MethodEntry("layercam", LayerCAM, _CAM, needs_layer=True, title="LayerCAM"),
    MethodEntry("xgradcam", XGradCAM, _CAM, needs_layer=True, title="XGrad-CAM"),
    MethodEntry("hirescam", HiResCAM, _CAM, needs_layer=True, title="HiResCAM"),
    MethodEntry("eigencam", EigenCAM, _CAM, needs_layer=True, title="Eigen-CAM"),
    MethodEntry("scorecam", ScoreCAM, ("layer", "top_k"), needs_layer=True, title="Score-CAM"),
    MethodEntry("ablationcam", AblationCAM, _CAM, needs_layer=True, title="Ablation-CAM"),
    # path methods with a distribution or another path (issue 28)
    MethodEntry("gradient-shap", GradientShap, ("baselines", "references", "n_samples", "stdevs"),
                build=_distribution_method(GradientShap, ("n_samples", "stdevs")), needs_distribution=True,
                title="GradientSHAP"),
    MethodEntry("blur-ig", BlurIntegratedGradients, ("steps", "max_sigma"), title="Blur IG"),
    # perturbation methods (issue 26)
    MethodEntry("occlusion", Occlusion, ("window", "strides", "baseline"),
                build=_perturbation(Occlusion, ("window", "strides")), title="Occlusion"),
    MethodEntry("feature-ablation", FeatureAblation, ("segmentation", "cells", "baseline"),
                build=_coalition(FeatureAblation), title="Feature ablation"),
    MethodEntry("rise", RISE, ("n_masks", "grid", "p", "baseline"), build=_perturbation(RISE, ("n_masks", "grid", "p")),
                title="RISE"),
    MethodEntry("kernelshap", KernelShap, ("segmentation", "cells", "baseline", "n_samples"),
                build=_coalition(KernelShap, ("n_samples",)), title="KernelSHAP"),
    MethodEntry("shapley-sampling", ShapleyValueSampling, ("segmentation", "cells", "baseline", "n_samples"),
                build=_coalition(ShapleyValueSampling, ("n_samples",)), title="Shapley sampling"),
    MethodEntry("lime", Lime, ("segmentation", "cells", "n_samples", "kernel_width"), build=_lime, title="LIME"),
    # propagation rules by model surgery (issue 27)
    MethodEntry("deconvolution", Deconvolution, title="Deconvolution"),
    MethodEntry("guided-gradcam", GuidedGradCAM, _CAM, needs_layer=True, title="Guided Grad-CAM"),
    MethodEntry("deeplift", DeepLift, ("baseline", "n_baselines"), title="DeepLift"),
    MethodEntry("deeplift-shap", DeepLiftShap, ("baselines", "references"),
                build=_distribution_method(DeepLiftShap), needs_distribution=True, title="DeepLiftSHAP"),
    # variance / dependence of random masks (Sobol, HSIC), permutation across the batch
    MethodEntry("sobol", SobolAttribution, ("grid", "baseline", "n_designs", "perturbation"),
                build=_perturbation(SobolAttribution, ("grid", "n_designs", "perturbation")), title="Sobol"),
    MethodEntry("hsic", HsicAttribution, ("grid", "baseline", "n_designs", "perturbation"),
                build=_perturbation(HsicAttribution, ("grid", "n_designs", "perturbation")), title="HSIC"),
    MethodEntry("feature-permutation", FeaturePermutation, ("segmentation", "cells", "n_permutations"),
                build=_permutation, title="Feature permutation"),
    # LRP (issue 27)
    MethodEntry("lrp", LRP, ("composite", "epsilon", "gamma", "unsupported"), title="LRP"),
    # adaptive path and regions (PAIR's Guided IG, XRAI)
    MethodEntry("apig", AdaptivePathIntegratedGradients, ("steps", "baseline", "fraction", "max_dist"),
                title="Adaptive-path IG"),
    MethodEntry("xrai", XRAI, ("steps",), title="XRAI"),
):
    register(_item)
