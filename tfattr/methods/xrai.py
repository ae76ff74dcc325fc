"""XRAI (Kapishnikov, Bolukbasi, Viégas & Terry, ICCV 2019), as PAIR saliency's ``saliency.core.XRAI``:
region attributions from over-segmentations and a pixel attribution (IG by default)."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from tfattr.baselines.registry import BaselineSet
from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import PathRows
from tfattr.core.targets import resolve_output
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import AttributionMethod, Explained

__all__ = ["XRAI", "felzenszwalb_masks", "xrai_regions", "FELZENSZWALB_SCALES"]

#: PAIR's Felzenszwalb scales, sigma, minimum segment size, working size and value range
FELZENSZWALB_SCALES = (50, 100, 150, 250, 500, 1200)
FELZENSZWALB_SIGMA = 0.8
FELZENSZWALB_MIN_SIZE = 150
FELZENSZWALB_RESIZE = (224, 224)
FELZENSZWALB_RANGE = (-1.0, 1.0)
ALGORITHMS = ("full", "fast")


def felzenszwalb_masks(image: np.ndarray, scales=FELZENSZWALB_SCALES, dilation_radius: int = 5,
                       resize: bool = True) -> np.ndarray:
    """PAIR's XRAI segments of one ``(H, W, C)`` image: ``(K, H, W)`` bool masks.

    The image is rescaled to ``[−1, 1]`` and (``resize``) resized to 224 × 224 (cubic,
    anti-aliased), segmented by scikit-image's ``felzenszwalb`` at each scale (σ = 0.8, minimum
    size 150), the labels resized back (nearest), every label of every scale made a mask and
    each mask dilated by a disk of ``dilation_radius`` (0: none; OpenCV's dilation, equal to
    scikit-image's) — PAIR's
    ``_get_segments_felzenszwalb``, mask for mask and in its order. A constant image (where PAIR
    divides by zero and segments NaN) is one segment per scale."""
    from skimage import segmentation
    from skimage.morphology import disk
    from skimage.transform import resize as resize_image

    im = np.asarray(image)
    original = im.shape[:2]
    im_max, im_min = np.max(im), np.min(im)
    # a constant image has no edges: one segment per scale (PAIR divides by 0 and segments NaN into noise)
    im = (im - im_min) / (im_max - im_min) if im_max > im_min else np.zeros(im.shape)
    im = im * (FELZENSZWALB_RANGE[1] - FELZENSZWALB_RANGE[0]) + FELZENSZWALB_RANGE[0]
    if resize:
        im = resize_image(im, FELZENSZWALB_RESIZE, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    masks = []
    for scale in scales:
        labels = segmentation.felzenszwalb(im, scale=scale, sigma=FELZENSZWALB_SIGMA, min_size=FELZENSZWALB_MIN_SIZE)
        if resize:
            labels = resize_image(labels, original, order=0, preserve_range=True, mode="constant",
                                  anti_aliasing=False).astype(int)
        masks.extend(labels == label for label in range(labels.min(), labels.max() + 1))
    masks = np.stack(masks).astype(bool)
    if dilation_radius:
        # a binary dilation by the disk: OpenCV's, equal to scikit-image's grey `dilation` of a bool
        # mask (PAIR's: its reflected border adds nothing to a max over a symmetric disk) at a
        # fraction of its time
        import cv2

        footprint = disk(dilation_radius).astype(np.uint8)
        masks = np.stack([cv2.dilate(mask.astype(np.uint8), footprint, borderType=cv2.BORDER_CONSTANT, borderValue=0)
                          for mask in masks]).astype(bool)
    return masks


def xrai_regions(attr: np.ndarray, masks: np.ndarray, algorithm: str = "full", area_threshold: float = 1.0,
                 min_pixel_diff: int = 50) -> Tuple[np.ndarray, np.ndarray, List[float]]:
    """XRAI's greedy region ranking (Kapishnikov et al. 2019, Algorithm 1; PAIR's ``_xrai`` and
    ``_xrai_fast``) on an ``(H, W)`` attribution and ``(K, H, W)`` masks.

    ``"full"``: repeatedly add the mask whose new pixels have the highest mean attribution (gain
    per area), dropping masks that add fewer than ``min_pixel_diff`` pixels, until the covered
    area exceeds ``area_threshold``; ``"fast"``: rank the masks once by their own density.
    Each region's pixels get its gain; pixels no mask covered share the mean attribution over
    them. Returns ``(map, ranks, gains)``: the ``(H, W)`` float64 map, the ``(H, W)`` int ranks
    (1 = most important region; PAIR's flattened segments) and the gains in rank order."""
    attr = np.asarray(attr, np.float64)
    shape = attr.shape
    flat_attr = attr.ravel()
    stack = masks.reshape(len(masks), -1)
    output = np.full(flat_attr.shape, -np.inf)
    current = np.zeros(flat_attr.shape, bool)
    trace = []  # (new pixels, gain) in the order added
    if algorithm == "full":
        remaining = list(range(len(stack)))
        area = 0.0
        while area <= area_threshold:
            if not remaining:
                break
            candidates = stack[remaining]
            added = candidates & ~current
            counts = added.sum(axis=1)
            keep = counts >= min_pixel_diff
            if not keep.any():
                break
            gains = np.full(len(remaining), -np.inf)
            for i in np.flatnonzero(keep):  # the mean over the new pixels, as PAIR's _gain_density
                gains[i] = flat_attr[added[i]].mean()
            best = int(np.argmax(gains))  # the first of equal gains, as PAIR's strict ">"
            new = added[best]
            trace.append((new, float(gains[best])))
            current |= candidates[best]
            area = float(np.mean(current))
            output[new] = gains[best]
            kept = [remaining[i] for i in np.flatnonzero(keep) if i != best]
            remaining = kept
    elif algorithm == "fast":
        own = [flat_attr[mask].mean() if mask.any() else -np.inf for mask in stack]
        order = sorted(range(len(stack)), key=lambda i: -own[i])  # stable, as PAIR's sorted()
        for i in order:
            new = stack[i] & ~current
            if new.sum() < min_pixel_diff:
                continue
            gain = float(flat_attr[new].mean())
            trace.append((new, gain))
            output[new] = gain
            current |= stack[i]
    else:
        raise InvalidInputError(f"`algorithm` must be one of {list(ALGORITHMS)}. " + received("algorithm", algorithm))
    uncomputed = output == -np.inf
    if uncomputed.any():
        output[uncomputed] = flat_attr[uncomputed].mean()
    ordered = sorted(trace, key=lambda item: -item[1])  # stable, as PAIR's
    regions = [new for new, _ in ordered]
    gains = [gain for _, gain in ordered]
    if uncomputed.any():
        regions.append(uncomputed)
        gains.append(float(flat_attr[uncomputed].mean()))
    ranks = np.zeros(flat_attr.shape, int)
    for i, region in enumerate(regions):
        ranks[region] = i + 1
    return output.reshape(shape), ranks.reshape(shape), gains


def _attribution_method(name, value):
    if value is not None and not isinstance(value, AttributionMethod):
        raise InvalidTypeError(f"`{name}` must be a tfattr attribution method instance (e.g. "
                               "tfattr.IntegratedGradients(model)) or None. " + received(name, value))


def _same_output(first, second, spec) -> bool:
    """Whether two ``output`` options (an index or a name) choose the same output of the model."""
    return resolve_output(first, spec, callable_target=True)[0] == resolve_output(second, spec, callable_target=True)[0]


def _radius(name, value):
    checks.integer_at_least(name, value, 0)


def _scales(name, value):
    if not (isinstance(value, (tuple, list)) and len(value) > 0
            and all(checks._is_number(v) and np.isfinite(v) and v > 0 for v in value)):
        raise InvalidInputError(f"`{name}` must be a non-empty tuple of positive Felzenszwalb scales. "
                                + received(name, value))


class XRAI(AttributionMethod):
    r"""XRAI (Kapishnikov et al., ICCV 2019) as PAIR saliency's ``XRAI``: regions ranked by attribution density.

    A pixel attribution ``a`` (PAIR's default: Integrated Gradients with ``steps`` nodes
    ``α = linspace(0, 1, steps)``, weights ``1/steps``, averaged over a black and a white
    baseline, the image's minimum and maximum) is reduced over channels by the maximum; the
    image is over-segmented by Felzenszwalb's graph segmentation at PAIR's six scales
    (:func:`felzenszwalb_masks`, each segment dilated), and regions are added greedily by their
    *gain per area*, the mean of ``a`` over the pixels a segment adds to the regions so far
    (:func:`xrai_regions`). Each pixel's value in the returned map is the gain of the region that
    added it, so thresholding the map at its top ``k`` % gives XRAI's most important regions.

    The IG rows of every image of a call run in one engine pass; the segmentation and the greedy
    ranking run per image on the host. Equal to PAIR's ``XRAI().GetMaskWithDetails(x, …)`` (same
    segments, same ranking, maps to float32 rounding of the gradients).

    Inputs are ``(N, H, W, C)`` images (channels last); the attributions are ``(N, H, W)`` maps.
    ``info["segments"]`` lists each image's ``(K, H, W)`` bool masks, ``info["ranks"]`` the
    ``(N, H, W)`` int region ranks (1 = most important), ``info["gains"]`` each image's region
    gains in rank order and ``info["base_attributions"]`` the pixel attributions used.

    Options (constructor defaults, each overridable in :meth:`attribute`):
        steps: IG nodes per baseline of the default attribution (default 100, PAIR's).
        attribution_method: ``None`` (default: PAIR's IG above) or any tfattr method instance
            (e.g. ``tfattr.AdaptivePathIntegratedGradients(model)``) whose attributions of the
            same images and targets XRAI ranks; ``(N, H, W, C)`` or ``(N, H, W)``. It must be
            made on XRAI's model; XRAI's ``output`` is passed on to it (one that names another
            output is refused).
        algorithm: ``"full"`` (default; gains recomputed after each region, PAIR's) or ``"fast"``
            (masks ranked once by their own density).
        area_threshold: stop adding regions once they cover this share of the image (default
            1.0: all); the rest is one region with its mean attribution. ``"full"`` only.
        min_pixel_diff: a segment adding fewer new pixels than this is dropped (default 50, PAIR's);
            at most an image's pixel count (lower it for tiny images: on 8 × 8 images the default
            keeps at most one region).
        dilation_radius: radius of the disk each segment is dilated by (default 5, PAIR's; 0: none).
        scales: Felzenszwalb scales (default PAIR's ``(50, 100, 150, 250, 500, 1200)``).
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod` (one input only: ``fixed_inputs``
            stays ``None``).

    Example:
        >>> xrai = XRAI(model, steps=100)
        >>> expl = xrai.attribute(images, target=None)
        >>> top = expl.info["ranks"] <= 3   # the three most important regions
    """

    name = "xrai"
    options = (
        Option("steps", 100, checks.path_steps),
        Option("attribution_method", None, _attribution_method),
        Option("algorithm", "full", checks.choices(*ALGORITHMS)),
        Option("area_threshold", 1.0, checks.probability),
        Option("min_pixel_diff", 50, checks.positive_int),
        Option("dilation_radius", 5, _radius),
        Option("scales", FELZENSZWALB_SCALES, _scales),
    )
    combine = "path"
    several_inputs = False

    def with_model(self, model) -> XRAI:
        """The same XRAI on ``model``; a given ``attribution_method`` is rebound to it too."""
        options = dict(self._given_options)
        if options.get("attribution_method") is not None:
            options["attribution_method"] = options["attribution_method"].with_model(model)
        return type(self)(model, **options)

    def check_combination(self, config):
        if config["algorithm"] == "fast" and config["area_threshold"] != 1.0:
            raise InvalidInputError("`area_threshold` applies to algorithm='full' only (the fast ranking covers the "
                                    "whole image, as PAIR's, which ignores it). "
                                    + received("area_threshold", config["area_threshold"]))
        base = config["attribution_method"]
        if base is None:
            return
        if base.model is not self.model:
            raise InvalidInputError(
                "`attribution_method` must explain XRAI's own model (make it on the same model, or use "
                "XRAI(...).with_model(model), which rebinds it). "
                + received("attribution_method", f"{type(base).__name__} of model "
                           f"{getattr(base.model, 'name', type(base.model).__name__)!r}, XRAI's model "
                           f"{getattr(self.model, 'name', type(self.model).__name__)!r}"))
        own = base.config["output"]
        if own is not None and not _same_output(own, config["output"], self.spec):
            raise InvalidInputError(
                "`attribution_method` explains another output than XRAI's `output`; give the output to XRAI "
                "(it is passed on to the attribution method). "
                + received("attribution_method", f"{type(base).__name__}(output={own!r}), XRAI output="
                           f"{config['output']!r}"))

    def describe(self, config) -> str:
        base = config["attribution_method"]
        inner = f"steps={config['steps']}" if base is None else base.describe(base.config)
        return f"{self.name}({inner}, algorithm={config['algorithm']})"

    def _pair_ig(self, x, targets, config) -> np.ndarray:
        """PAIR's IG: black (image minimum) and white (image maximum) baselines, nodes
        ``linspace(0, 1, steps)`` of weight ``1/steps``, averaged over the two baselines."""
        num_examples, shape = int(x.shape[0]), tuple(int(d) for d in x.shape[1:])
        host = x.numpy().astype(np.float64).reshape(num_examples, -1)
        ones = np.ones((num_examples, 1) + shape)
        lows = host.min(axis=1).reshape((-1, 1) + (1,) * len(shape)) * ones
        highs = host.max(axis=1).reshape((-1, 1) + (1,) * len(shape)) * ones
        baselines = BaselineSet(np.concatenate([lows, highs], axis=1), "black+white (image min, max)")
        steps = int(config["steps"])
        rows = PathRows.grid(num_examples, 2, np.linspace(0.0, 1.0, steps), np.full(steps, 1.0 / steps))
        return self.integrate(x, baselines, targets, rows, config).attributions

    def _explain(self, x, targets, fx, config) -> Explained:
        if len(x.shape) != 4:
            raise InvalidInputError("XRAI segments (N, H, W, C) images (channels last). "
                                    + received("inputs.shape", tuple(x.shape)))
        num_examples, height, width = int(x.shape[0]), int(x.shape[1]), int(x.shape[2])
        if height * width < int(config["min_pixel_diff"]):  # no segment could be added: one flat region
            raise InvalidInputError(
                f"`min_pixel_diff` must not exceed an image's {height} x {width} = {height * width} pixels: no "
                "segment could add that many, and the map would be one flat region. "
                + received("min_pixel_diff", config["min_pixel_diff"]))
        base = config["attribution_method"]
        if base is None:
            attributions = self._pair_ig(x, targets, config)
            gradients = num_examples * 2 * int(config["steps"])
        else:
            target = targets.score_fn if targets.indices is None else targets.indices
            # XRAI's output: its targets are that output's classes (a base naming another is refused)
            explained = base.attribute(x, target=target, output=config["output"])
            attributions = np.asarray(explained.attributions, np.float64)
            gradients = int(explained.gradients)
            if attributions.shape[:3] != (num_examples, height, width) or attributions.ndim not in (3, 4):
                raise InvalidInputError("`attribution_method` must give (N, H, W, C) or (N, H, W) attributions of "
                                        "the images. " + received("attribution_method",
                                                                  f"{type(base).__name__}, whose attributions have "
                                                                  f"shape {attributions.shape}"))
        pixel = attributions.max(axis=-1) if attributions.ndim == 4 else attributions
        images = x.numpy().astype(np.float64)
        maps, ranks, segments, gains = [], [], [], []
        for e in range(num_examples):
            masks = felzenszwalb_masks(images[e], tuple(config["scales"]), int(config["dilation_radius"]))
            region_map, rank, gain = xrai_regions(pixel[e], masks, config["algorithm"], float(config["area_threshold"]),
                                                  int(config["min_pixel_diff"]))
            maps.append(region_map)
            ranks.append(rank)
            segments.append(masks)
            gains.append(gain)
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"])
        return Explained(attributions=np.stack(maps), scores=np.asarray(fx, np.float64), gradients=gradients,
                         info={"segments": segments, "ranks": np.stack(ranks), "gains": gains,
                               "base_attributions": attributions, "algorithm": config["algorithm"]})
