"""Attribution methods; each builds engine rows and picks a gradient function."""

from tfattr.methods.adaptive_path import AdaptivePathIntegratedGradients
from tfattr.methods.blur_ig import BlurIntegratedGradients
from tfattr.methods.cams import EigenCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from tfattr.methods.gradcam import GradCAM, RSIGradCAM
from tfattr.methods.gradient import Gradient, InputXGradient
from tfattr.methods.gradient_shap import GradientShap
from tfattr.methods.guided import GuidedBackprop, GuidedIntegratedGradients
from tfattr.methods.integrated_gradients import IntegratedGradients
from tfattr.methods.layer import LayerConductance, LayerIntegratedGradients, reduce_last_axis
from tfattr.methods.lime import Lime
from tfattr.methods.lrp import LRP
from tfattr.methods.permutation import FeaturePermutation
from tfattr.methods.perturbation import RISE, FeatureAblation, Occlusion
from tfattr.methods.propagation import Deconvolution, DeepLift, DeepLiftShap, GuidedGradCAM
from tfattr.methods.score_cams import AblationCAM, ScoreCAM
from tfattr.methods.shapley import KernelShap, ShapleyValueSampling
from tfattr.methods.smooth_taylor import AdaptiveNoisingResult, SmoothTaylor, adaptive_noising
from tfattr.methods.sobol import HsicAttribution, SobolAttribution
from tfattr.methods.xrai import XRAI

__all__ = [
    "GradCAM",
    "RSIGradCAM",
    "GradCAMPlusPlus",
    "LayerCAM",
    "XGradCAM",
    "HiResCAM",
    "EigenCAM",
    "ScoreCAM",
    "AblationCAM",
    "Gradient",
    "InputXGradient",
    "IntegratedGradients",
    "SmoothTaylor",
    "adaptive_noising",
    "AdaptiveNoisingResult",
    "GuidedBackprop",
    "GuidedIntegratedGradients",
    "LayerIntegratedGradients",
    "LayerConductance",
    "reduce_last_axis",
    "GradientShap",
    "BlurIntegratedGradients",
    "AdaptivePathIntegratedGradients",
    "XRAI",
    "Occlusion",
    "FeatureAblation",
    "RISE",
    "Deconvolution",
    "GuidedGradCAM",
    "DeepLift",
    "LRP",
    "DeepLiftShap",
    "KernelShap",
    "ShapleyValueSampling",
    "Lime",
    "SobolAttribution",
    "HsicAttribution",
    "FeaturePermutation",
]
