"""Randomisation sanity checks: does the explanation depend on what the model learnt?

* :func:`model_parameter_randomisation` — Adebayo et al., "Sanity Checks for Saliency Maps"
  (NeurIPS 2018), the model parameter randomisation test (MPRT): layers' weights are
  re-initialised from the top, cumulatively (cascading) or one at a time (independent), and the
  map on each randomised model is compared with the map on the trained model.
* :func:`smooth_model_parameter_randomisation` (sMPRT) and
  :func:`efficient_model_parameter_randomisation` (eMPRT) — Hedström et al., "Sanity Checks
  Revisited: An Exploration to Repair the Model Parameter Randomisation Test" (XAI in Action,
  NeurIPS 2023 workshop), as Quantus ``SmoothMPRT`` / ``EfficientMPRT`` define them.
* :func:`random_logit` — Sixt et al. 2020 (Quantus ``RandomLogit``): the map for the explained
  class compared with the map for a random other class.

Lower similarity is better for both: a map that barely changes when the weights or the class
change does not explain the model's decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from tfattr.core.ranges import VALUE_RANGE_ATTRIBUTE
from tfattr.core.targets import resolve_output
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.metrics._common import check_positive_int, check_seed

__all__ = [
    "RandomisationResult",
    "EfficientMPRTResult",
    "smooth_model_parameter_randomisation",
    "efficient_model_parameter_randomisation",
    "hog_similarity",
    "discrete_entropy",
    "smooth_noise",
    "RandomLogitResult",
    "model_parameter_randomisation",
    "random_logit",
    "randomisable_layers",
    "randomise_layers",
    "map_similarity",
    "spearman",
    "ssim",
]

_ORDERS = ("cascading", "independent", "bottom_up")
_SIMILARITIES = ("spearman", "ssim", "hog")
#: skimage.feature.hog's settings for :func:`hog_similarity`
HOG_OPTIONS = dict(orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2))
#: re-initialisation of a weight whose layer names no initializer for it (Adebayo et al. re-draw
#: weights from a truncated normal)
FALLBACK_STDDEV = 0.01


# -- similarities ------------------------------------------------------------------------------
def spearman(a, b) -> float:
    """Spearman's rank correlation of two arrays (flattened): Pearson's correlation of their ranks,
    ties given their average rank (``scipy.stats.spearmanr``). ``nan`` when either is constant."""
    from scipy.stats import rankdata

    ra = rankdata(np.ravel(a)).astype(np.float64)
    rb = rankdata(np.ravel(b)).astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    if denominator == 0:
        return float("nan")
    return float((ra * rb).sum() / denominator)


def ssim(a, b) -> float:
    """Structural similarity of two ``(H, W)`` maps: ``skimage.metrics.structural_similarity``
    (7×7 uniform window) with ``data_range`` the range of both maps together,
    ``max(a ∪ b) − min(a ∪ b)`` (as Quantus); 1 when both maps are equal."""
    from skimage.metrics import structural_similarity

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim != 2 or min(a.shape) < 7:
        raise InvalidInputError("SSIM compares (height, width) maps of at least 7×7 pixels (its window). "
                                + received("map shape", a.shape))
    data_range = float(max(a.max(), b.max()) - min(a.min(), b.min()))
    if data_range == 0:
        return 1.0
    return float(structural_similarity(a, b, data_range=data_range))


def hog_similarity(a, b) -> float:
    """Pearson's correlation of the histograms of oriented gradients of two ``(H, W)`` maps
    (Adebayo et al. 2018, §3: "the Pearson correlation of the histogram of gradients (HOG) features";
    ``skimage.feature.hog`` with 9 orientations, 8×8-pixel cells, 2×2-cell blocks, L2-Hys block
    normalisation, :data:`HOG_OPTIONS`). ``nan`` when either descriptor is constant."""
    from skimage.feature import hog

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    need = HOG_OPTIONS["pixels_per_cell"][0] * HOG_OPTIONS["cells_per_block"][0]
    if a.ndim != 2 or min(a.shape) < need:
        raise InvalidInputError(f"HOG compares (height, width) maps of at least {need}×{need} pixels (one block of "
                                "2×2 cells of 8×8). " + received("map shape", a.shape))
    fa, fb = hog(a, **HOG_OPTIONS), hog(b, **HOG_OPTIONS)
    fa, fb = fa - fa.mean(), fb - fb.mean()
    denominator = np.sqrt((fa * fa).sum() * (fb * fb).sum())
    if denominator == 0:
        return float("nan")
    return float((fa * fb).sum() / denominator)


def map_similarity(a, b, similarity: str = "spearman") -> np.ndarray:
    """Per-image similarity of two batches of ``(N, H, W)`` maps (:func:`spearman`, :func:`ssim` or
    :func:`hog_similarity`)."""
    function = {"spearman": spearman, "ssim": ssim, "hog": hog_similarity}[similarity]
    return np.array([function(a[n], b[n]) for n in range(a.shape[0])], dtype=np.float64)


def _check_similarity(similarity) -> str:
    if not (isinstance(similarity, str) and similarity in _SIMILARITIES):
        raise InvalidInputError(f"`similarity` must be one of {list(_SIMILARITIES)}. "
                                + received("similarity", similarity))
    return similarity


def _absolute_maps(explanation) -> np.ndarray:
    """``(N, H, W)`` ``Σ_c |φ_c|`` (Adebayo et al.'s grayscale visualisation before its
    normalisation, which a rank correlation or a range-scaled SSIM does not need)."""
    array = np.abs(np.asarray(explanation.attributions, dtype=np.float64))
    if explanation.single:
        array = array[None]
    if array.ndim == 4:
        return array.sum(axis=-1)
    if array.ndim == 3:
        return array
    raise InvalidInputError("The method must return (batch, height, width[, channels]) attributions. "
                            + received("attributions.shape", array.shape))


def _check_method(method, model):
    if not (hasattr(method, "attribute") and hasattr(method, "with_model")):
        raise InvalidTypeError("`method` must be a tfattr attribution method (e.g. tfattr.Gradient(model)). "
                               + received("type(method)", type(method).__name__))
    if getattr(method, "model", None) is not model:
        raise InvalidInputError("`method` must be bound to `model` (the trained model the test compares with). "
                                + received("method.model", getattr(getattr(method, "model", None), "name", None)))


# -- randomised copies ------------------------------------------------------------------------
def _randomisable(layer) -> list:
    return [v for v in layer.weights if _initializer_of(layer, v) is not None]


def _initializer_of(layer, variable):
    """The layer's own initializer of ``variable`` (``kernel`` → ``kernel_initializer``, …), the
    fallback truncated normal for other trainable float weights, ``None`` for weights to keep."""
    import keras

    name = variable.name.split("/")[-1].split(":")[0]
    candidates = [f"{name}_initializer"] + (["depthwise_initializer"] if name == "kernel" else [])
    if name.endswith("_kernel"):  # SeparableConv: depthwise_kernel → depthwise_initializer (pointwise too)
        candidates.append(f"{name[:-len('_kernel')]}_initializer")
    for attribute in candidates:
        initializer = getattr(layer, attribute, None)
        if initializer is not None:
            return keras.initializers.get(initializer)
    dtype = str(getattr(variable, "dtype", ""))
    if getattr(variable, "trainable", False) and "float" in dtype:
        return keras.initializers.TruncatedNormal(stddev=FALLBACK_STDDEV)
    return None


def randomisable_layers(model) -> List[str]:
    """Names of ``model``'s layers with weights to re-initialise, from the top (output) down:
    the order of :func:`model_parameter_randomisation`. Top-level layers only (a nested model
    counts as one layer)."""
    layers = getattr(model, "layers", None)
    if layers is None:
        raise InvalidTypeError("`model` must be a Keras model with layers. "
                               + received("type(model)", type(model).__name__))
    return [layer.name for layer in reversed(layers) if _randomisable(layer)]


def _seeded(initializer, seed: int):
    config = initializer.get_config()
    if "seed" in config:
        config = dict(config, seed=int(seed))
        return type(initializer).from_config(config)
    return initializer


def _new_values(model, name: str, seed: int, initializer=None) -> list:
    """Re-initialised values of layer ``name``'s weights (``None`` for weights kept): weight ``j`` of
    the layer at index ``i`` of ``model.layers`` from seed ``SeedSequence([seed, i, j])``, so a layer
    gets the same values in cascading and independent order."""
    import keras

    index = [layer.name for layer in model.layers].index(name)
    layer = model.layers[index]
    values = []
    for j, variable in enumerate(layer.weights):
        own = _initializer_of(layer, variable)
        if own is None:
            values.append(None)
            continue
        chosen = own if initializer is None else keras.initializers.get(initializer)
        key = int(np.random.SeedSequence([int(seed), index, j]).generate_state(1)[0] % (2**31 - 1))
        value = _seeded(chosen, key)(tuple(variable.shape), dtype=variable.dtype)
        values.append(np.asarray(value))
    return values


def _assign(model, name: str, values) -> None:
    layer = model.get_layer(name)
    for variable, value in zip(layer.weights, values):
        if value is not None:
            variable.assign(value)


def _clone(model):
    import keras

    try:
        clone = keras.models.clone_model(model)
    except Exception as error:  # a subclassed model without get_config
        raise InvalidTypeError("Randomisation tests copy the model with keras.models.clone_model, which failed: "
                               f"{error}. " + received("type(model)", type(model).__name__)) from None
    clone.set_weights(model.get_weights())
    declared = getattr(model, VALUE_RANGE_ATTRIBUTE, None)
    if declared is not None:  # the range methods read their defaults from (noise, baselines)
        setattr(clone, VALUE_RANGE_ATTRIBUTE, declared)
    return clone


def randomise_layers(model, layers: Sequence[str], seed: int = 0, initializer=None):
    """A copy of ``model`` (``keras.models.clone_model``, weights and the declared
    ``tfattr_value_range`` copied) whose ``layers`` (names)
    are re-initialised as :func:`model_parameter_randomisation` does; ``model`` is untouched.

    Example:
        >>> randomise_layers(model, randomisable_layers(model)[:2], seed=0)  # the top two layers
    """
    seed = check_seed(seed)
    known = randomisable_layers(model)
    clone = _clone(model)
    for name in layers:
        if name not in known:
            raise InvalidInputError(f"`layers` must name layers with weights: {known}. " + received("layers", name))
        _assign(clone, name, _new_values(model, name, 0 if seed is None else seed, initializer))
    return clone


# -- MPRT -------------------------------------------------------------------------------------
@dataclass
class RandomisationResult:
    """What :func:`model_parameter_randomisation` returns (``L`` randomised layers, ``N`` images).

    Attributes:
        similarities: ``(L+1, N)`` similarity of each image's map on the model of the row with
            its map on the trained model; row 0 is the unrandomised copy (1 up to rounding).
        layers: ``L+1`` names: ``None`` (row 0), then the layer randomised at each row, top
            first (cascading: that layer and all above it).
        targets: ``(N,)`` the explained classes (fixed for every row).
        order, similarity: the options used.
    """

    similarities: np.ndarray
    layers: List[Optional[str]]
    targets: Optional[np.ndarray]
    order: str
    similarity: str

    @property
    def mean(self) -> np.ndarray:
        """``(L+1,)`` the similarity averaged over images (the curve of Adebayo et al.'s Fig. 2)."""
        return self.similarities.mean(axis=1)


def _explain(method, images, targets, options) -> tuple:
    explanation = method.attribute(images, target=targets, **options)
    return _absolute_maps(explanation), explanation.targets


def model_parameter_randomisation(model, images, method, targets=None, order: str = "cascading",
                                  similarity: str = "spearman", seed: int = 0, initializer=None,
                                  layers: Optional[Sequence[str]] = None,
                                  **options) -> RandomisationResult:
    """The model parameter randomisation test (MPRT) of Adebayo et al., NeurIPS 2018, §3.1.

    Lower is better: a method whose maps stay similar while the model's weights are randomised
    explains the input rather than the model (the paper's finding for guided backprop).

    The trained ``model`` is copied once (``keras.models.clone_model``, weights copied; the
    original is never changed) and ``method`` is re-bound to the copy
    (:meth:`~tfattr.methods.base.AttributionMethod.with_model`, same options). Row 0 explains
    the unrandomised copy; then, from the top layer down (:func:`randomisable_layers`), each
    layer's weights are re-initialised with its own initializers (seeded; a weight whose layer
    names none: truncated normal, σ = 0.01) and the images are explained again for the same
    targets. ``order="cascading"``: the randomisation accumulates (row ``k`` has the top ``k``
    layers randomised, the paper's Fig. 2); ``"independent"``: row ``k`` randomises layer ``k``
    alone (the paper's Fig. 4); ``"bottom_up"``: cascading from the input layer up (Hedström et
    al. 2023's order). Each row's maps ``Σ_c |φ_c|`` are compared per image with the
    trained model's by ``similarity``: ``"spearman"`` (rank correlation, :func:`spearman`),
    ``"ssim"`` (:func:`ssim`, skimage's with the maps' joint range) or ``"hog"`` (Pearson's
    correlation of HOG features, :func:`hog_similarity`, the paper's third measure).

    Args:
        model: a Keras model (Functional or Sequential: cloneable).
        images: ``(N, H, W, C)`` images (or one image).
        method: an attribution method bound to ``model`` (e.g. ``tfattr.Gradient(model)``).
        targets: classes explained, fixed for all rows; ``None`` (default): the trained model's
            top-1 class of each image.
        order: ``"cascading"`` (default), ``"independent"`` or ``"bottom_up"``.
        similarity: ``"spearman"`` (default, the paper's main measure), ``"ssim"`` or ``"hog"``.
        seed: seed of the re-initialisation (layer ``i``'s weight ``j`` from ``[seed, i, j]``:
            the same values in both orders).
        initializer: ``None`` (each weight's own layer initializer) or a Keras initializer
            (identifier or instance) used for every weight.
        layers: names of the layers to randomise, in order (default: all of
            :func:`randomisable_layers`, top first; bottom first for ``"bottom_up"``).
        **options: passed to ``method.attribute`` on every row.

    Returns:
        :class:`RandomisationResult`: ``similarities (L+1, N)``, ``layers``, ``targets``.

    Example:
        >>> result = model_parameter_randomisation(model, images, tfattr.Gradient(model))
        >>> result.mean  # 1.0 at row 0, then dropping as layers are randomised
    """
    return _mprt(model, images, method, targets, order, similarity, seed, initializer, layers,
                 lambda bound, chosen: _explain(bound, images, chosen, options))


def _mprt(model, images, method, targets, order, similarity, seed, initializer, layers, explain
          ) -> RandomisationResult:
    """MPRT's loop with ``explain(bound_method, targets) -> ((N, H, W) maps, explained targets)``."""
    if not (isinstance(order, str) and order in _ORDERS):
        raise InvalidInputError(f"`order` must be one of {list(_ORDERS)}. " + received("order", order))
    similarity = _check_similarity(similarity)
    seed = check_seed(seed)
    if seed is None:
        raise InvalidInputError("`seed` must be an integer: the randomised weights must be reproducible. "
                                + received("seed", seed))
    _check_method(method, model)
    known = randomisable_layers(model)
    names = list(layers) if layers is not None else (known[::-1] if order == "bottom_up" else known)
    for name in names:
        if name not in known:
            raise InvalidInputError(f"`layers` must name layers with weights, from {known}. "
                                    + received("layers", name))
    trained, explained = explain(method, targets)
    if targets is None:
        targets = explained
    clone = _clone(model)
    bound = method.with_model(clone)
    rows = []
    maps, _ = explain(bound, targets)
    rows.append(map_similarity(trained, maps, similarity))
    kept = {}
    for name in names:
        if order == "independent" and kept:
            for previous, values in kept.items():
                _assign(clone, previous, values)
            kept = {}
        if order == "independent":
            kept[name] = [np.asarray(v) for v in clone.get_layer(name).weights]
        _assign(clone, name, _new_values(model, name, seed, initializer))
        maps, _ = explain(bound, targets)
        rows.append(map_similarity(trained, maps, similarity))
    return RandomisationResult(similarities=np.stack(rows), layers=[None] + names,
                               targets=None if targets is None or callable(targets) else np.asarray(targets),
                               order=order, similarity=similarity)


# -- sMPRT and eMPRT (Hedström et al. 2023) ----------------------------------------------------------
def _second_moment_normalised(phi: np.ndarray) -> np.ndarray:
    """Each map divided by the square root of its mean square (Quantus's
    ``normalise_by_average_second_moment_estimate``, per image; a map of zeros is kept)."""
    flat = phi.reshape(phi.shape[0], -1)
    scale = np.sqrt((flat * flat).mean(axis=1))
    scale = np.where(scale == 0, 1.0, scale)
    return phi / scale.reshape((-1,) + (1,) * (phi.ndim - 1))


def smooth_noise(seed: int, n_samples: int, shape) -> np.ndarray:
    """``(n_samples, *shape)`` standard normal draws of :func:`smooth_model_parameter_randomisation`
    (sample ``s`` from ``seed`` and ``s`` alone, the same for every image); the last is zero (the
    noise-free input, Quantus's convention)."""
    import tensorflow as tf

    from tfattr.core.random import STREAM_SMOOTH_MPRT, compiled_row_draws

    draws = compiled_row_draws("normal", seed, np.arange(n_samples), tuple(shape), dtype=tf.float64,
                               stream=STREAM_SMOOTH_MPRT)
    draws[-1] = 0.0
    return draws


def smooth_model_parameter_randomisation(model, images, method, targets=None, order: str = "bottom_up",
                                         similarity: str = "spearman", n_samples: int = 50,
                                         noise_magnitude: float = 0.1, normalise: bool = True,
                                         seed: int = 0, initializer=None, layers: Optional[Sequence[str]] = None,
                                         **options) -> RandomisationResult:
    """Smooth MPRT (sMPRT; Hedström et al. 2023, §4.1; Quantus ``SmoothMPRT``). Lower is better.

    :func:`model_parameter_randomisation` on denoised maps: every map (on the trained model and on
    each randomised one) is the mean of the method's attributions of ``S`` noisy copies
    ``x + σ εₛ``, ``εₛ ~ N(0, 1)`` per feature (:func:`smooth_noise`; the last copy noise-free),
    ``σ = noise_magnitude · (max x − min x)`` per image; then divided by the square root of its mean
    square (``normalise``) and compared as ``Σ_c |φ̄_c|``. The paper's default order is bottom-up
    (``order="bottom_up"``: cascading from the input layer), which its Fig. 3 shows less affected by
    the output layer's noise. Each noisy copy is one attribute call for all images.

    Where Quantus differs: it normalises a whole batch by one second moment (tfattr per image, equal
    to Quantus with ``batch_size=1``), and its TensorFlow layer generator clones the model without
    copying the trained weights (``keras.models.clone_model``), so each of its rows randomises a
    freshly initialised model; tfattr's rows start from the trained weights (the test injects the same
    randomised models into both).

    Args:
        model, images, method, targets, order, similarity, seed, initializer, layers: as
            :func:`model_parameter_randomisation` (``order`` default ``"bottom_up"``).
        n_samples: ``S`` (Quantus's default 50).
        noise_magnitude: σ relative to each image's range (Quantus's default 0.1).
        normalise: divide each denoised map by the root of its mean square (default ``True``).
        **options: passed to ``method.attribute``.

    Example:
        >>> smooth_model_parameter_randomisation(model, images, tfattr.Gradient(model), n_samples=10).mean
    """
    count = check_positive_int(n_samples, "n_samples")
    if isinstance(noise_magnitude, bool) or not isinstance(noise_magnitude, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(noise_magnitude) and noise_magnitude >= 0):
        raise InvalidInputError("`noise_magnitude` must be a number ≥ 0. "
                                + received("noise_magnitude", noise_magnitude))
    checked = check_seed(seed)
    x = np.asarray(images)
    single = x.ndim == 3
    batch = x[None] if single else x
    axes = tuple(range(1, batch.ndim))
    sigma = float(noise_magnitude) * (batch.max(axis=axes, keepdims=True) - batch.min(axis=axes, keepdims=True))
    noise = smooth_noise(0 if checked is None else checked, count, batch.shape[1:])

    def explain(bound, chosen):
        # the noise-free copy first: its classes (top-1 of the clean images for targets=None) are
        # explained on every noisy copy too
        total, explained = None, None
        for s in [count - 1] + list(range(count - 1)):
            noisy = (batch.astype(np.float64) + sigma * noise[s]).astype(batch.dtype)
            explanation = bound.attribute(noisy, target=chosen, **options)
            if explained is None:
                explained = explanation.targets
                if chosen is None and explained is not None:
                    chosen = explained
            phi = np.asarray(explanation.attributions, np.float64)
            total = phi / count if total is None else total + phi / count
        if normalise:
            total = _second_moment_normalised(total)
        total = np.abs(total)
        maps = total.sum(axis=-1) if total.ndim == 4 else total
        return maps, explained

    return _mprt(model, images if not single else batch, method, targets, order, similarity, seed, initializer,
                 layers, explain)


@dataclass
class EfficientMPRTResult:
    """What :func:`efficient_model_parameter_randomisation` returns (``N`` images).

    Attributes:
        score: ``(N,)`` the relative rise of the map's complexity, ``(H_rand − H) / H`` (higher is better).
        complexity: ``(N,)`` ``H``: the discrete entropy of each map on the trained model.
        complexity_randomised: ``(N,)`` ``H_rand``: the same on the fully randomised model.
        n_bins: the histogram's bins.
        targets: ``(N,)`` the explained classes.
    """

    score: np.ndarray
    complexity: np.ndarray
    complexity_randomised: np.ndarray
    n_bins: int
    targets: Optional[np.ndarray]


def discrete_entropy(values, n_bins: int = 100) -> float:
    """Shannon entropy (nats) of the ``n_bins``-bin histogram of ``values`` (``np.histogram`` over their
    range, ``scipy.stats.entropy`` of the counts; Quantus's ``discrete_entropy``)."""
    from scipy.stats import entropy

    counts, _ = np.histogram(np.ravel(values), bins=n_bins)
    return float(entropy(counts))


def efficient_model_parameter_randomisation(model, images, method, targets=None, n_bins: int = 100, seed: int = 0,
                                            initializer=None, layers: Optional[Sequence[str]] = None,
                                            **options) -> EfficientMPRTResult:
    """Efficient MPRT (eMPRT; Hedström et al. 2023, §4.2, eq. 6; Quantus ``EfficientMPRT``). Higher is better.

    ``eMPRT = (H(φ(x; θ̃)) − H(φ(x; θ))) / H(φ(x; θ))``: the relative rise in the complexity of the
    explanation when every layer is randomised at once (no layer-by-layer similarity, whose choice
    of measure the paper shows to decide the verdict). ``H`` is the discrete entropy of the
    ``n_bins``-bin histogram of the attribution's values (:func:`discrete_entropy`; Quantus's default
    100 bins, signed values, not normalised). An explanation that depends on the learnt weights
    becomes noisier, so more complex, on the randomised model.

    The randomised copy is :func:`randomise_layers` of every layer (or ``layers``), seeded; the
    trained model is untouched. Quantus's TensorFlow layer generator differs (see
    :func:`smooth_model_parameter_randomisation`): its fully randomised model is the equal of ours
    only when the same randomised model is injected.

    Args:
        model: a Keras model (cloneable).
        images: ``(N, H, W, C)`` images (or one image).
        method: an attribution method bound to ``model``.
        targets: classes explained on both models (default: the trained model's top-1).
        n_bins: bins of the histogram (default 100).
        seed, initializer, layers: as :func:`model_parameter_randomisation`.
        **options: passed to ``method.attribute``.

    Example:
        >>> efficient_model_parameter_randomisation(model, images, tfattr.Gradient(model)).score
    """
    bins = check_positive_int(n_bins, "n_bins")
    seed = check_seed(seed)
    if seed is None:
        raise InvalidInputError("`seed` must be an integer: the randomised weights must be reproducible. "
                                + received("seed", seed))
    _check_method(method, model)
    known = randomisable_layers(model)
    names = known if layers is None else list(layers)
    explanation = method.attribute(images, target=targets, **options)
    chosen = explanation.targets if targets is None else targets
    randomised = randomise_layers(model, names, seed=seed, initializer=initializer)
    again = method.with_model(randomised).attribute(images, target=chosen, **options)

    def entropies(result):
        phi = np.asarray(result.attributions, np.float64)
        phi = phi[None] if result.single else phi
        return np.array([discrete_entropy(a, bins) for a in phi])

    before, after = entropies(explanation), entropies(again)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(before != 0, (after - before) / np.where(before != 0, before, 1.0), np.nan)
    indices = None if explanation.targets is None else np.atleast_1d(np.asarray(explanation.targets))
    return EfficientMPRTResult(score=score, complexity=before, complexity_randomised=after, n_bins=bins,
                               targets=indices)


# -- random logit ---------------------------------------------------------------------------------
@dataclass
class RandomLogitResult:
    """What :func:`random_logit` returns.

    Attributes:
        similarities: ``(N,)`` similarity of the map for the target with the map for the random class.
        targets: ``(N,)`` the explained classes.
        random_targets: ``(N,)`` the random other classes.
    """

    similarities: np.ndarray
    targets: np.ndarray
    random_targets: np.ndarray


def random_logit(model, images, method, targets=None, similarity: str = "ssim", seed: int = 0,
                 num_classes: Optional[int] = None, **options) -> RandomLogitResult:
    """Random logit test (Sixt, Granz & Landgraf, ICML 2020; Quantus ``RandomLogit``). Lower is better.

    Each image is explained for its target class and for a class drawn uniformly from the other
    ``num_classes − 1`` (seeded: ``np.random.default_rng(seed)``, one draw per image in order);
    the maps ``Σ_c |φ_c|`` are compared by ``similarity`` (default ``"ssim"``, Quantus's default;
    or ``"spearman"``). A map that does not change with the class does not explain the class.

    Args:
        model: the Keras model ``method`` is bound to.
        images: ``(N, H, W, C)`` images (or one image).
        method: an attribution method bound to ``model``.
        targets: explained classes; ``None`` (default): top-1.
        similarity: ``"ssim"`` (default) or ``"spearman"``.
        seed: seed of the random classes.
        num_classes: classes to draw from (default: the model's output width).
        **options: passed to ``method.attribute``.

    Example:
        >>> random_logit(model, images, tfattr.Gradient(model), seed=0).similarities
    """
    similarity = _check_similarity(similarity)
    seed = check_seed(seed)
    _check_method(method, model)
    if num_classes is None:
        shape = getattr(model, "output_shape", None)
        num_classes = shape[-1] if isinstance(shape, tuple) else None
        config, spec = getattr(method, "config", None), getattr(method, "spec", None)
        if num_classes is None and config is not None and spec is not None:  # the method's `output=`
            num_classes = resolve_output(config.get("output"), spec)[1]
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise InvalidInputError("`num_classes` must be an integer ≥ 2 (the model's output width by default). "
                                + received("num_classes", num_classes))
    explanation = method.attribute(images, target=targets, **options)
    if explanation.targets is None:
        raise InvalidInputError("random_logit explains classes: `targets` must be None or class indices. "
                                + received("targets", targets))
    chosen = np.atleast_1d(np.asarray(explanation.targets, np.int64))
    rng = np.random.default_rng(seed)
    offsets = rng.integers(1, num_classes, size=chosen.shape[0])  # uniform over the other classes
    others = (chosen + offsets) % num_classes
    maps = _absolute_maps(explanation)
    other_maps = _absolute_maps(method.attribute(images, target=int(others[0]) if explanation.single else others,
                                                 **options))
    return RandomLogitResult(similarities=map_similarity(maps, other_maps, similarity), targets=chosen,
                             random_targets=others)
