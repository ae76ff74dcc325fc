"""LIME for images and feature groups (Ribeiro, Singh & Guestrin, KDD 2016), as the ``lime``
package's ``LimeImageExplainer``, on the engine's forward rows."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.random import legacy_state
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import Explained, call_layout
from tfattr.methods.coalitions import (
    CoalitionMethod,
    GroupMasks,
    check_coalitions,
    feature_mask_check,
    group_masks,
    pack_coalitions,
)

__all__ = ["Lime", "lime_samples", "lime_weights", "weighted_ridge", "segment"]

#: skimage segmentations by name, with the lime package's defaults (quickshift: its
#: LimeImageExplainer's; slic and felzenszwalb: scikit-image's, labels from 0)
SEGMENTATIONS = {
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"n_segments": 100, "compactness": 10.0, "start_label": 0},
    "felzenszwalb": {},
}


def _segmentation_check(name: str, value) -> None:
    """A segmentation name, an integer feature mask, or a callable ``image -> (H, W) labels``."""
    if isinstance(value, str):
        checks.choice(name, value, tuple(SEGMENTATIONS))
        return
    if callable(value) and not hasattr(value, "shape"):
        return
    if value is None:
        raise InvalidTypeError(f"`{name}` must be one of {list(SEGMENTATIONS)}, an integer feature mask or a "
                               "callable image -> labels. " + received(name, value))
    feature_mask_check(name, value)


def _options_check(name: str, value) -> None:
    if value is not None and not isinstance(value, dict):
        raise InvalidTypeError(f"`{name}` must be a dict of keyword arguments or None. " + received(name, value))


def segment(image: np.ndarray, segmentation="quickshift", options=None, seed=0) -> np.ndarray:
    """Superpixels of one ``(H, W, C)`` image: ``(H, W)`` int labels from scikit-image's
    ``quickshift`` (lime's defaults: ``kernel_size=4, max_dist=200, ratio=0.2``; ``random_seed=seed``
    where scikit-image still takes it, else its own default ``rng``, as lime's wrapper does),
    ``slic`` or ``felzenszwalb`` (``options`` override the defaults), or a callable's."""
    if callable(segmentation) and not isinstance(segmentation, str):
        labels = np.asarray(segmentation(image))
    else:
        import inspect

        import skimage.segmentation as segmentation_module

        function = getattr(segmentation_module, segmentation)
        kwargs = dict(SEGMENTATIONS[segmentation], **(options or {}))
        if segmentation == "quickshift":
            if "random_seed" in inspect.signature(function).parameters:  # older scikit-image (lime passes it)
                kwargs.setdefault("random_seed", 0 if seed is None else int(seed))
            if image.ndim != 3 or image.shape[-1] != 3:
                raise InvalidInputError("'quickshift' segments RGB images (H, W, 3); pass a `segmentation` mask or "
                                        "'slic' with segmentation_options={'channel_axis': -1, 'convert2lab': False}. "
                                        + received("inputs.shape[1:]", tuple(image.shape)))
        labels = function(image, **kwargs)
    if labels.shape != image.shape[:2] or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidInputError(f"The segmentation must give (H, W) integer labels {image.shape[:2]}. "
                                + received("labels", f"{labels.dtype} {labels.shape}"))
    return labels.astype(np.int64)


def lime_samples(groups: int, n_samples: int, seed=0) -> np.ndarray:
    """``(n_samples, M)`` 0/1 samples drawn as lime's ``LimeImageExplainer.data_labels``: each group
    on with probability ½ from ``numpy.random.RandomState(seed).randint(0, 2, n_samples · M)``,
    the first sample all ones (the image itself). The same ``seed`` as lime's ``random_state``
    gives lime's own samples."""
    state = legacy_state(seed)  # RandomState(seed) below 2**32, as shap / lime
    data = state.randint(0, 2, int(n_samples) * int(groups)).reshape((int(n_samples), int(groups)))
    data[0, :] = 1
    return data.astype(bool)


def lime_weights(samples: np.ndarray, kernel_width: float) -> np.ndarray:
    """lime's sample weights: the cosine distance ``d`` of each sample to the all-ones sample
    (``sklearn.metrics.pairwise_distances(..., metric="cosine")``; ``1 − √(|z| / M)``, 1 for the
    empty sample) in the kernel ``√exp(−d² / width²)``."""
    z = np.asarray(samples, np.float64)
    m = max(z.shape[1], 1)
    distances = 1.0 - np.sqrt(z.sum(axis=1) / m)
    return np.sqrt(np.exp(-(distances ** 2) / float(kernel_width) ** 2))


def weighted_ridge(data: np.ndarray, targets: np.ndarray, weights: np.ndarray, alpha: float = 1.0
                   ) -> Tuple[np.ndarray, float, float]:
    """``sklearn.linear_model.Ridge(alpha, fit_intercept=True)`` fitted with ``sample_weight``:
    the weighted means are removed, ``(Xᵀ W X + α I) β = Xᵀ W y`` is solved, the intercept is
    ``ȳ − x̄ · β``. Returns ``(β, intercept, R²)`` with the weighted R² of ``Ridge.score``."""
    x = np.asarray(data, np.float64)
    y = np.asarray(targets, np.float64)
    w = np.asarray(weights, np.float64)
    total = w.sum()
    x_mean, y_mean = w @ x / total, w @ y / total
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ (xc * w[:, None]) + alpha * np.eye(x.shape[1])
    beta = np.linalg.solve(gram, xc.T @ (w * yc))
    intercept = float(y_mean - x_mean @ beta)
    predicted = x @ beta + intercept
    residual = float(w @ (y - predicted) ** 2)
    spread = float(w @ (y - y_mean) ** 2)
    score = 1.0 - residual / spread if spread > 0 else (1.0 if residual == 0 else 0.0)
    return beta, intercept, score


class Lime(CoalitionMethod):
    r"""LIME (Ribeiro, Singh & Guestrin, KDD 2016, eq. 1–2) as the ``lime`` package's
    ``LimeImageExplainer`` (lime 0.2): a weighted ridge regression of the model's score on which
    superpixels are kept.

    The image is split into ``M`` superpixels (``segmentation``). Sample ``z ∈ {0,1}^M`` keeps
    the superpixels with ``z_g = 1`` and replaces the others by ``hide_color`` (``None``: each
    superpixel's mean colour, lime's default); sample 0 is the image itself, the others keep
    each superpixel with probability ½. Each sample is one forward row. The proximity of a
    sample is ``π(z) = √exp(−d(z, 1)² / kernel_width²)`` with ``d`` the cosine distance between
    ``z`` and the all-ones vector (lime's image explainer; its text and tabular explainers
    scale the distance by 100, the image explainer does not), and the explanation is the
    ``Ridge(alpha=1)`` fit ``g(z) = β₀ + β·z`` minimising ``Σ_z π(z) (f(z) − g(z))² + ‖β‖²``
    (:func:`weighted_ridge`). The attribution of a superpixel is its coefficient ``β_g``
    (painted on its pixels); ``info`` holds the ``intercept``, the fit's weighted R²
    (``score``), its prediction at the image (``local_pred``), the ``segments`` and
    ``group_attributions``. All superpixels are kept (lime's ``num_features`` cut is for
    display; its default keeps them all).

    The samples are lime's: ``numpy.random.RandomState(seed)`` draws ``randint(0, 2, n·M)``
    (:func:`lime_samples`), so ``seed`` equal to a ``LimeImageExplainer``'s ``random_state``
    reproduces its samples. They depend on the seed and ``M`` only.

    Cost: ``n_samples`` forward passes per example (``n_samples − 1`` with ``target=None``,
    whose top-1 pass scores the image), batched by the engine's forward rows; a segmentation
    and a ridge solve ``(M × M)`` per example on the host.

    Options (constructor defaults, each overridable in :meth:`attribute`):
        segmentation: ``"quickshift"`` (default, lime's: ``kernel_size=4, max_dist=200,
            ratio=0.2``, RGB images), ``"slic"`` (scikit-image's defaults, 100 segments) or
            ``"felzenszwalb"``, a callable ``image (H, W, C) -> (H, W)`` integer labels, or an
            integer feature mask (as :class:`~tfattr.KernelShap`'s ``feature_mask``: shared,
            per example, or one per input for several inputs).
        segmentation_options: keyword arguments for the scikit-image function (default
            ``None``).
        n_samples: samples per example, the image included (default 1000, lime's).
        kernel_width: width of the exponential kernel on the cosine distance (default 0.25,
            lime's).
        hide_color: the value of a hidden superpixel: ``None`` (default; its mean per channel)
            or a number (lime's ``hide_color``). Several inputs or feature masks without
            channels: ``None`` is each group's mean value.
        seed: seed of the samples and of quickshift (default 0).
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod`.

    Example:
        >>> lime = Lime(model, segmentation="slic", n_samples=500)
        >>> expl = lime.attribute(images)
        >>> expl.info["score"], expl.info["intercept"]
    """

    name = "lime"
    options = (
        Option("segmentation", "quickshift", _segmentation_check),
        Option("segmentation_options", None, _options_check),
        Option("n_samples", 1000, checks.at_least(2)),
        Option("kernel_width", 0.25, checks.positive_number),
        Option("hide_color", None, checks.optional(checks.finite_number)),
        Option("seed", 0, checks.seed),
    )

    def describe(self, config) -> str:
        segmentation = config["segmentation"] if isinstance(config["segmentation"], str) else "mask"
        return f"{self.name}(segmentation={segmentation}, n_samples={config['n_samples']})"

    def segments(self, x_array: np.ndarray, config) -> Tuple[GroupMasks, Optional[np.ndarray]]:
        """The groups of a batch and, for a segmentation by name or callable, its ``(N, H, W)`` labels."""
        layout = call_layout(config)
        segmentation = config["segmentation"]
        if isinstance(segmentation, str) or callable(segmentation) and not hasattr(segmentation, "shape"):
            if layout is not None or x_array.ndim != 4:
                raise InvalidInputError("A segmentation by name or callable is for image batches (N, H, W, C); pass "
                                        "an integer feature mask as `segmentation`. "
                                        + received("segmentation", segmentation if isinstance(segmentation, str)
                                                   else "callable"))
            labels = np.stack([segment(image, segmentation, config["segmentation_options"], config["seed"])
                               for image in x_array])
            return group_masks(labels[..., None], x_array), labels
        masks = group_masks(segmentation, x_array, layout, name="segmentation")
        return masks, None

    def fill(self, x_array: np.ndarray, masks: GroupMasks, config) -> np.ndarray:
        """The hidden value of every value ``(N, D)``: ``hide_color``, or its group's mean (per
        channel for images)."""
        num_examples = len(x_array)
        flat = x_array.reshape(num_examples, -1).astype(np.float64)
        if config["hide_color"] is not None:
            return np.full((1, flat.shape[1]), float(config["hide_color"]))
        channels = x_array.shape[-1] if call_layout(config) is None and x_array.ndim >= 3 else 1
        out = flat.copy()
        channel = np.arange(flat.shape[1]) % channels
        for e in range(num_examples):
            ids = masks.ids[min(e, masks.ids.shape[0] - 1)]
            free = ids >= 0
            key = ids[free] * channels + channel[free]
            sums = np.bincount(key, weights=flat[e][free], minlength=int(masks.counts[e]) * channels)
            counts = np.bincount(key, minlength=int(masks.counts[e]) * channels)
            out[e][free] = (sums / np.maximum(counts, 1))[key]
        return out.astype(x_array.dtype).astype(np.float64)

    def _explain(self, x, targets, fx, config) -> Explained:
        x_array = x.numpy()
        num_examples = int(x.shape[0])
        masks, labels = self.segments(x_array, config)
        fill = self.fill(x_array, masks, config)
        samples, tables = {}, []
        width = int(masks.counts.max())
        for e in range(num_examples):
            m = int(masks.counts[e])
            if m not in samples:
                check_coalitions(config["n_samples"], m, config)
                drawn = lime_samples(m, config["n_samples"], config["seed"])
                samples[m] = (drawn, pack_coalitions(drawn if fx is None else drawn[1:], width))
            tables.append(samples[m][1])
        scores, batches = self.run_coalitions(x, targets, masks, fill, tables, config)
        values, intercepts, fits, local = [], np.zeros(num_examples), np.zeros(num_examples), np.zeros(num_examples)
        for e in range(num_examples):
            data = samples[int(masks.counts[e])][0]
            y = scores[e] if fx is None else np.concatenate([[fx[e]], scores[e]])
            beta, intercepts[e], fits[e] = weighted_ridge(data, y, lime_weights(data, config["kernel_width"]))
            local[e] = intercepts[e] + beta.sum()
            values.append(beta)
        scores_x = np.array([s[0] for s in scores]) if fx is None else np.asarray(fx, np.float64)
        info = {"intercept": intercepts, "score": fits, "local_pred": local, "group_attributions": values,
                "groups": masks.counts.copy(), "group_ids": masks.labels,
                "rows": sum(len(t) for t in tables), "forward_passes": batches}
        if labels is not None:
            info["segments"] = labels
        return Explained(attributions=self.paint(masks, values, x.shape[1:]), scores=scores_x, gradients=0,
                         info=info)
