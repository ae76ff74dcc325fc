"""Model surgery: clones of a Keras model with some layers swapped, the original untouched.

* :func:`guided_clone` — every ReLU and max-pool guided (Kwon, Koo & Cho): same forward,
  backward ``relu(∂F/∂y ⊙ mask)``; the gradient function of guided backpropagation and
  of :class:`~tfattr.methods.guided.GuidedIntegratedGradients`.
* :func:`logits_model` — the final softmax removed (pre-softmax scores).
* :func:`synced` — run a clone with the original model's *current* weights.

Example:
    >>> from tfattr.surgery import guided_clone, logits_model, surgery_report
    >>> clone = guided_clone(model)
    >>> surgery_report(clone).changed           # layers made guided
    >>> logits = logits_model(model)(images)    # pre-softmax scores
"""

from tfattr.surgery.cloning import (
    SurgeryReport,
    SurgeryWarning,
    SyncedClone,
    clear_cache,
    surgery_report,
    synced,
)
from tfattr.surgery.deeplift import deeplift_clone
from tfattr.surgery.guided import (
    MAXPOOL_RULES,
    GuidedActivation,
    GuidedGlobalMaxPooling1D,
    GuidedGlobalMaxPooling2D,
    GuidedGlobalMaxPooling3D,
    GuidedLeakyReLU,
    GuidedMaxPooling1D,
    GuidedMaxPooling2D,
    GuidedMaxPooling3D,
    GuidedPReLU,
    GuidedReLU,
    guided_clone,
    nearest_sign_maxpool,
    positive_gradient_gate,
)
from tfattr.surgery.logits import find_softmax_head, logits_model
from tfattr.surgery.lrp import lrp_clone
from tfattr.surgery.propagation import deconv_clone

__all__ = [
    "guided_clone",
    "deconv_clone",
    "deeplift_clone",
    "lrp_clone",
    "MAXPOOL_RULES",
    "nearest_sign_maxpool",
    "logits_model",
    "find_softmax_head",
    "synced",
    "SyncedClone",
    "surgery_report",
    "SurgeryReport",
    "SurgeryWarning",
    "clear_cache",
    "positive_gradient_gate",
    "GuidedActivation",
    "GuidedReLU",
    "GuidedLeakyReLU",
    "GuidedPReLU",
    "GuidedMaxPooling1D",
    "GuidedMaxPooling2D",
    "GuidedMaxPooling3D",
    "GuidedGlobalMaxPooling1D",
    "GuidedGlobalMaxPooling2D",
    "GuidedGlobalMaxPooling3D",
]
