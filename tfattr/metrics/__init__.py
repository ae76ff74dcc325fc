"""Evaluation metrics for attributions, computed as the papers' authors' code computes them.

Faithfulness (a model is run on perturbed inputs; batched through a compiled forward):
    :func:`aupc` — area under the perturbation curve (Samek et al. 2017; SmoothTaylor's
    variant, Goh et al. 2020): logit of the top-1 class, k×k windows, uniform noise.
    :func:`deletion`, :func:`insertion` — Petsiuk et al. 2018 (RISE): softmax probability
    of the top-1 class while pixels are deleted (to 0) or inserted (into a blurred copy).
    :func:`completeness_error` (IG), :func:`taylor_error` (SmoothTaylor eq. 8).

Faithfulness to random perturbations (forward rows): :func:`faithfulness_correlation` (Bhatt et
    al. 2020), :func:`infidelity` (Yeh et al. 2019, captum's definition), :func:`sensitivity_n`
    (Ancona et al. 2018), :func:`mu_fidelity` (xplique's MuFidelity).

Faithfulness to an order of removal (forward rows): :func:`monotonicity` (Arya et al. 2019),
    :func:`monotonicity_correlation` (Nguyen & Martínez 2020),
    :func:`selectivity` (Montavon et al. 2018), :func:`irof` (Rieger & Hansen 2020),
    :func:`road` (Rong et al. 2022, noisy linear imputation).

Robustness (the method re-explains perturbed inputs): :func:`max_sensitivity`,
    :func:`avg_sensitivity` (Yeh et al. 2019), :func:`local_lipschitz_estimate` (Alvarez-Melis &
    Jaakkola 2018), :func:`relative_input_stability`, :func:`relative_output_stability` (Agarwal
    et al. 2022).

Smoothness (no model): :func:`atv`, :func:`multiscale_atv`, :func:`autvc`.

Randomisation (sanity checks; a method re-explains randomised copies):
    :func:`model_parameter_randomisation` (Adebayo et al. 2018), its smooth and efficient variants
    :func:`smooth_model_parameter_randomisation`, :func:`efficient_model_parameter_randomisation`
    (Hedström et al. 2023), :func:`random_logit` (Sixt et al. 2020).

Pixel flipping and region perturbation (forward rows): :func:`pixel_flipping` (Bach et al. 2015),
    :func:`region_perturbation` (Samek et al. 2017, Quantus's grid variant).

Complexity (no model): :func:`sparseness` (Gini, Chalasani et al. 2020), :func:`complexity`
    (entropy, Bhatt et al. 2020), :func:`effective_complexity` (Nguyen & Martínez 2020).

Localisation (ground-truth masks): :func:`pointing_game`, :func:`mask_energy`,
    :func:`relevance_mass_accuracy`, :func:`relevance_rank_accuracy` (Arras et al. 2022),
    :func:`top_k_intersection` (Theiner et al. 2022), :func:`attribution_localisation`
    (Kohlbrenner et al. 2020), :func:`auc` (ROC AUC, Fawcett 2006).

By name (:data:`METRICS`, :func:`register_metric`): what :func:`tfattr.evaluate` computes, each
with its direction, defaults and paper. Over images: :func:`bootstrap_ci` (the tables' ± intervals)
and :func:`paired_test` (which differences between methods are not noise).

Every metric works on a batch and returns NumPy arrays (areas and the curves for
plotting); metrics that draw noise take a ``seed``; long runs show a progress bar.

Scores (the ``score`` option of the model-based metrics):

* ``"logit"`` (alias ``"output"``): the model output as is, at the target class — the
  pre-softmax logit the AUPC protocol explains. Give a model with a softmax head as its
  logits clone (``tfattr.surgery.logits_model(model)``, or rebuild the head without the
  activation); :func:`aupc` warns when the last layer is a softmax.
* ``"probability"``: the softmax probability (deletion/insertion's default). Per image,
  the output on the unperturbed image decides: if the model's last layer is a softmax,
  or that output row is non-negative and sums to 1 within 1e-4, outputs are used as
  they are; otherwise a float64 softmax is applied, to that image's copies too.
* a callable ``outputs -> (batch,)``: any score from the output tensor (``target`` must
  then be ``None``).

``target=None`` explains the top-1 class of each unperturbed image.

Example::

    from tfattr import metrics
    result = metrics.aupc(logits_model, images, explanation.attributions, seed=0)
    result.area, result.curve                  # (N,), (N, 31)
    metrics.autvc(explanation.attributions).area
    metrics.deletion(model, images, explanation.attributions).auc
"""

from tfattr.metrics._common import simpson
from tfattr.metrics.completeness import CompletenessResult, completeness_error, taylor_error
from tfattr.metrics.complexity import complexity, effective_complexity, sparseness
from tfattr.metrics.faithfulness import (
    FaithfulnessCorrelationResult,
    InfidelityResult,
    faithfulness_correlation,
    infidelity,
)
from tfattr.metrics.faithfulness_more import (
    IROFResult,
    MonotonicityCorrelationResult,
    MonotonicityResult,
    MuFidelityResult,
    ROADResult,
    SelectivityResult,
    SensitivityNResult,
    irof,
    monotonicity,
    monotonicity_correlation,
    mu_fidelity,
    road,
    road_imputation,
    selectivity,
    sensitivity_n,
)
from tfattr.metrics.flipping import (
    PixelFlippingResult,
    RegionPerturbationResult,
    pixel_flipping,
    region_grid,
    region_perturbation,
)
from tfattr.metrics.localisation import (
    PointingGameResult,
    attribution_localisation,
    auc,
    mask_energy,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)
from tfattr.metrics.perturbation import (
    AUPCResult,
    CausalResult,
    aupc,
    blur,
    blur_kernel,
    causal_auc,
    deletion,
    insertion,
    select_windows,
)
from tfattr.metrics.randomisation import (
    EfficientMPRTResult,
    RandomisationResult,
    RandomLogitResult,
    discrete_entropy,
    efficient_model_parameter_randomisation,
    hog_similarity,
    map_similarity,
    model_parameter_randomisation,
    random_logit,
    randomisable_layers,
    randomise_layers,
    smooth_model_parameter_randomisation,
    smooth_noise,
)
from tfattr.metrics.registry import (
    DEFAULT_METRICS,
    METRICS,
    MetricInputs,
    MetricSpec,
    metric_spec,
    register_function,
    register_metric,
    resolve_metrics,
)
from tfattr.metrics.robustness import (
    SensitivityResult,
    StabilityResult,
    avg_sensitivity,
    local_lipschitz_estimate,
    max_sensitivity,
    relative_input_stability,
    relative_output_stability,
    sensitivity_perturbations,
    stability_perturbations,
)
from tfattr.metrics.smoothness import (
    AUTVCResult,
    AUTVCUndefinedError,
    atv,
    autvc,
    autvc_min_size,
    gaussian_pyramid,
    multiscale_atv,
    normalise_maps,
)
from tfattr.metrics.statistics import PairedComparison, bootstrap_ci, bootstrap_means, paired_test

__all__ = [
    "simpson",
    "aupc",
    "AUPCResult",
    "select_windows",
    "deletion",
    "insertion",
    "CausalResult",
    "causal_auc",
    "blur",
    "blur_kernel",
    "atv",
    "multiscale_atv",
    "autvc",
    "AUTVCResult",
    "AUTVCUndefinedError",
    "autvc_min_size",
    "gaussian_pyramid",
    "normalise_maps",
    "completeness_error",
    "taylor_error",
    "CompletenessResult",
    "pointing_game",
    "mask_energy",
    "PointingGameResult",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "top_k_intersection",
    "attribution_localisation",
    "auc",
    "sparseness",
    "complexity",
    "effective_complexity",
    "pixel_flipping",
    "PixelFlippingResult",
    "region_perturbation",
    "RegionPerturbationResult",
    "region_grid",
    "model_parameter_randomisation",
    "RandomisationResult",
    "random_logit",
    "RandomLogitResult",
    "randomisable_layers",
    "randomise_layers",
    "smooth_model_parameter_randomisation",
    "efficient_model_parameter_randomisation",
    "EfficientMPRTResult",
    "hog_similarity",
    "map_similarity",
    "discrete_entropy",
    "smooth_noise",
    "faithfulness_correlation",
    "FaithfulnessCorrelationResult",
    "infidelity",
    "InfidelityResult",
    "monotonicity",
    "MonotonicityResult",
    "monotonicity_correlation",
    "MonotonicityCorrelationResult",
    "selectivity",
    "SelectivityResult",
    "sensitivity_n",
    "SensitivityNResult",
    "irof",
    "IROFResult",
    "road",
    "road_imputation",
    "ROADResult",
    "mu_fidelity",
    "MuFidelityResult",
    "max_sensitivity",
    "avg_sensitivity",
    "SensitivityResult",
    "sensitivity_perturbations",
    "local_lipschitz_estimate",
    "relative_input_stability",
    "relative_output_stability",
    "StabilityResult",
    "stability_perturbations",
    "METRICS",
    "DEFAULT_METRICS",
    "MetricSpec",
    "MetricInputs",
    "metric_spec",
    "register_metric",
    "register_function",
    "resolve_metrics",
    "bootstrap_ci",
    "bootstrap_means",
    "paired_test",
    "PairedComparison",
]
