"""tfattr: attribution methods for Keras 3 / TensorFlow models (images, tabular data, sequences, text).

One verb for every method::

    import tfattr
    ig = tfattr.IntegratedGradients(model, baseline="zero", steps=50)
    explanation = ig.attribute(images, target=None)      # top-1 class
    explanation.attributions, explanation.delta          # maps, completeness delta

See README.md for the list of methods, baselines and options.
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":  # pragma: no cover - environment guard
    raise ImportError(
        "tfattr needs Keras 3 with the TensorFlow backend; set KERAS_BACKEND=tensorflow before "
        f"importing keras. Received: keras.backend.backend()={_keras.backend.backend()!r}"
    )

# distribute and evaluation cost 20-35 ms on top of ~12 s for the rest: loaded eagerly, so the README's
# `tfattr.distribute.…` / `tfattr.evaluation.…` work after `import tfattr`
from tfattr import callbacks, distribute, errors, evaluation, metrics, surgery, viz  # noqa: E402
from tfattr._version import __version__  # noqa: E402
from tfattr.baselines import (  # noqa: E402
    BASELINES,
    SavedBaseline,
    TrainedBaseline,
    load_baseline,
    load_shipped,
    make_baselines,
    save_baseline,
    train_uniform_baseline,
)
from tfattr.callbacks import SaliencyLogger  # noqa: E402
from tfattr.core.engine import PathEngine, PathRows  # noqa: E402
from tfattr.core.noise import NoiseTunnel  # noqa: E402
from tfattr.core.quadrature import quadrature  # noqa: E402
from tfattr.core.result import Explanation  # noqa: E402
from tfattr.methods import (  # noqa: E402
    LRP,
    RISE,
    XRAI,
    AblationCAM,
    AdaptivePathIntegratedGradients,
    BlurIntegratedGradients,
    Deconvolution,
    DeepLift,
    DeepLiftShap,
    EigenCAM,
    FeatureAblation,
    FeaturePermutation,
    GradCAM,
    GradCAMPlusPlus,
    Gradient,
    GradientShap,
    GuidedBackprop,
    GuidedGradCAM,
    GuidedIntegratedGradients,
    HiResCAM,
    HsicAttribution,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerCAM,
    LayerConductance,
    LayerIntegratedGradients,
    Lime,
    Occlusion,
    RSIGradCAM,
    ScoreCAM,
    ShapleyValueSampling,
    SmoothTaylor,
    SobolAttribution,
    XGradCAM,
    adaptive_noising,
    reduce_last_axis,
)
from tfattr.streaming.evaluate import evaluate_dataset  # noqa: E402
from tfattr.streaming.explain import explain_dataset  # noqa: E402
from tfattr.streaming.store import open_explanations  # noqa: E402

__all__ = [
    "__version__",
    "callbacks",
    "distribute",
    "errors",
    "evaluation",
    "metrics",
    "surgery",
    "viz",
    "BASELINES",
    "make_baselines",
    "train_uniform_baseline",
    "TrainedBaseline",
    "save_baseline",
    "load_baseline",
    "load_shipped",
    "SavedBaseline",
    "PathEngine",
    "PathRows",
    "NoiseTunnel",
    "quadrature",
    "Explanation",
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
    "GuidedBackprop",
    "GuidedIntegratedGradients",
    "LayerIntegratedGradients",
    "LayerConductance",
    "reduce_last_axis",
    "IntegratedGradients",
    "SmoothTaylor",
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
    "adaptive_noising",
    "SaliencyLogger",
    "explain_dataset",
    "evaluate_dataset",
    "open_explanations",
]
