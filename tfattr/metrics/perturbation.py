"""Perturbation metrics: AUPC (Samek et al. 2017, SmoothTaylor variant) and deletion/insertion
(Petsiuk et al. 2018), computed exactly as the authors' code does, batched.

Every model call goes through the compiled forward pass in chunks of ``batch_size``
rows; a row is one perturbed copy of one image, and the copies of all images of a step
share the chunks. Results are plain NumPy arrays with a batch axis (also for one image).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np

from tfattr.core.ranges import resolve_value_range, warn_outside_value_range
from tfattr.errors import InvalidInputError, received
from tfattr.metrics._common import (
    ModelScorer,
    Score,
    as_array,
    check_images,
    check_positive_int,
    check_seed,
    chunk_count,
    closest_to_median,
    descending_order,
    explained_target,
    make_bar,
    maps_for_images,
    run_rows,
    simpson,
)

__all__ = [
    "AUPCResult",
    "CausalResult",
    "aupc",
    "select_windows",
    "deletion",
    "insertion",
    "causal_auc",
    "blur_kernel",
    "blur",
]


# -- AUPC ----------------------------------------------------------------------------------
@dataclass
class AUPCResult:
    """What :func:`aupc` returns (``N`` images, ``L`` regions).

    Attributes:
        area: ``(N,)`` AUPC, Simpson's rule over the normalised curve (lower is better;
            an unchanged score gives ``L``).
        curve: ``(N, L+1)`` ``[f₀, s̄₁ … s̄_L] / |f₀|`` (starts at ±1), for plotting.
        scores: ``(N, L+1)`` the same before normalisation: ``f₀`` then the mean score of
            the ``P`` copies at each step.
        windows: ``(N, L, 2)`` int top-left corners ``(row, column)`` of the perturbed
            ``k×k`` windows, in the order they were perturbed.
        targets: ``(N,)`` explained class per image (``None`` for a callable score).
    """

    area: np.ndarray
    curve: np.ndarray
    scores: np.ndarray
    windows: np.ndarray
    targets: Optional[np.ndarray]


def _box_means(relevance: np.ndarray, kernel_size: int) -> np.ndarray:
    """Mean of every ``k×k`` window whose corner ``(h, w)`` has ``h < H−k`` and ``w < W−k``.

    Separable sliding sums (each window's values summed in the same order), so windows
    with equal contents get bit-equal means and ties stay ties.
    """
    k = kernel_size
    height, width = relevance.shape[-2:]
    rows = np.lib.stride_tricks.sliding_window_view(relevance[..., : height - 1, :], k, axis=-2).sum(axis=-1)
    sums = np.lib.stride_tricks.sliding_window_view(rows[..., : width - 1], k, axis=-1).sum(axis=-1)
    return sums / float(k * k)


def select_windows(relevance, kernel_size: int = 15, regions: int = 30) -> np.ndarray:
    """The ``L`` most relevant non-overlapping ``k×k`` windows of each map, greedily.

    As in the SmoothTaylor authors' code: every window with top-left corner
    ``0 ≤ h < H−k``, ``0 ≤ w < W−k`` (stride 1; the last corner row/column ``H−k``/``W−k``
    is excluded, as there) is ranked by its mean relevance; windows are taken most
    relevant first, skipping any that overlaps one already taken (``|Δh| < k`` and
    ``|Δw| < k``). Ties are taken in row-major corner order (the authors' unstable sort
    leaves them unspecified); means equal up to rounding (within ``2**-14`` of the largest
    mean, :func:`~tfattr.metrics._common.rank_keys`) are ties, so a last-bit difference
    between machines or batch compositions does not reorder the windows.

    Args:
        relevance: ``(N, H, W)`` (or ``(H, W)``) non-negative relevance, e.g. the absolute
            signed channel sum of an attribution.
        kernel_size: ``k``.
        regions: ``L``.

    Returns:
        ``(N, L, 2)`` int64 corners ``(row, column)``, in the order they were chosen.

    Raises:
        InvalidInputError: when the map is too small for one window, or the greedy pass
            runs out of non-overlapping windows before ``L``.
    """
    maps = as_array(relevance, "relevance")
    if maps.ndim == 2:
        maps = maps[None]
    k = check_positive_int(kernel_size, "kernel_size")
    count = check_positive_int(regions, "regions")
    height, width = maps.shape[-2:]
    if height - k < 1 or width - k < 1:
        raise InvalidInputError(
            f"A {k}×{k} window needs images larger than {k} pixels on each side (corners h < H−k). "
            + received("image size", (height, width))
        )
    means = _box_means(maps, k)
    corner_rows, corner_cols = means.shape[-2:]
    out = np.zeros((maps.shape[0], count, 2), dtype=np.int64)
    scan = 4096
    for n in range(maps.shape[0]):
        order = descending_order(means[n].ravel())
        blocked = np.zeros((corner_rows, corner_cols), dtype=bool)
        flat = blocked.ravel()
        pointer = 0
        for picked in range(count):
            while pointer < order.size:
                candidates = order[pointer : pointer + scan]
                free = ~flat[candidates]
                if free.any():
                    first = int(np.argmax(free))
                    index = int(candidates[first])
                    pointer += first + 1
                    break
                pointer += candidates.size
            else:
                raise InvalidInputError(
                    f"Image {n}: only {picked} non-overlapping {k}×{k} windows fit the greedy selection "
                    f"on a {height}×{width} map; lower `regions` or `kernel_size`. " + received("regions", count)
                )
            h, w = divmod(index, corner_cols)
            out[n, picked] = (h, w)
            blocked[max(h - k + 1, 0) : h + k, max(w - k + 1, 0) : w + k] = True
    return out


def aupc(
    model,
    images,
    attributions,
    target=None,
    kernel_size: int = 15,
    regions: int = 30,
    perturbations: int = 50,
    value_range: Optional[Tuple[float, float]] = None,
    seed: Optional[int] = 0,
    score: Score = "logit",
    batch_size: int = 64,
    verbose: Union[int, bool, str] = "auto",
) -> AUPCResult:
    r"""Area under the perturbation curve, Samek et al. 2017 as the SmoothTaylor paper computes it
    (Goh et al. 2020, eqs. 10–11).

    1. The attribution is reduced to ``H×W`` by a *signed* sum over channels, then ``|·|``.
    2. :func:`select_windows` picks the ``L`` most relevant non-overlapping ``k×k`` windows.
    3. ``x⁽⁰⁾ = x``, ``f₀ = f(x)``. At step ``l`` the window's ``k×k×C`` block of ``P``
       copies of ``x⁽ˡ⁻¹⁾`` is replaced by i.i.d. noise ``U[low, high)``; the curve point is
       the mean of the ``P`` scores (eq. 11); the copy whose score is closest to the median
       of the ``P`` scores (first on ties) becomes ``x⁽ˡ⁾`` (eq. 10). With an even ``P``
       (the paper's 50) the median is the mean of the two middle scores, which are then
       equally close: the one with the lower copy index is kept, as in the authors' loop.
       Distances within rounding of the smallest (``2**-14`` of the largest |score|) count
       as ties, so the kept copy does not depend on a machine's last bits.
    4. ``curve = [f₀, s̄₁ … s̄_L] / |f₀|``, ``AUPC = simpson(curve)`` (unit spacing; an
       unchanged score gives ``L``). Lower is better.

    All ``P`` copies of all images of a step run through the model together, in chunks of
    ``batch_size`` rows: ``L·P·N`` forward passes in ``L·⌈P·N / batch_size⌉`` calls, plus
    one chunked pass over the unperturbed images.

    Randomness: the noise of step ``l`` is the ``l``-th draw of ``(P, k, k, C)`` uniforms
    from ``np.random.default_rng(seed)``, the same for every image of the batch, so an
    image's result does not depend on the batch it is in (one image at a time equals the
    batch) and a seed reproduces the run. ``seed=None`` draws fresh noise.

    Args:
        model: Keras model on ``(N, H, W, C)`` images.
        images: ``(N, H, W, C)`` float images in the model's input space (or one image).
        attributions: same shape as ``images``, or ``(N, H, W)`` channel-free maps.
        target: ``None`` (top-1 class of each unperturbed image, the protocol's default), an
            int, one int per image, or a callable ``outputs -> (batch,)`` (as ``score``).
        kernel_size: window side ``k`` (paper: 15).
        regions: number of windows ``L`` (paper: 30).
        perturbations: noise copies per step ``P`` (paper: 50).
        value_range: ``(low, high)`` of the noise, the full pixel range of the model's
            input space: ``(0, 1)`` for images in [0, 1] (the authors drew ``U[0, 255]/255``
            before their normalisation; keep the normalisation inside the model). ``None``
            (default): the range the model declares (``model.tfattr_value_range``, set by
            :func:`tfattr.data.keras_application`), else ``(0, 1)``. Images outside it raise a
            :class:`~tfattr.errors.ValueRangeWarning`.
        seed: seed of the noise (module docstring); ``None`` for fresh noise.
        score: ``"logit"`` (default: the raw model output, the paper's pre-softmax logit —
            give a softmax model as its logits clone, e.g. ``tfattr.surgery.logits_model``),
            ``"probability"`` or a callable ``outputs -> (batch,)``; see "Scores" in
            :mod:`tfattr.metrics`.
        batch_size: rows (perturbed copies) per model call.
        verbose: progress bar: ``"auto"`` (runs of ≥ 64 model calls), ``1`` or ``0``.

    Returns:
        :class:`AUPCResult` with ``area (N,)``, ``curve (N, L+1)``, ``scores``, ``windows``
        ``(N, L, 2)`` and ``targets``. If ``f₀ = 0`` the curve of that image is not
        normalisable: it holds ``inf``/``nan`` and a warning is issued.

    Example:
        >>> result = aupc(logits_model, images, explanation.attributions, seed=0)
        >>> result.area.mean(), result.curve[0]
    """
    batch, x, dtype = check_images(model, images)
    relevance = np.abs(maps_for_images(attributions, batch))
    k = check_positive_int(kernel_size, "kernel_size")
    count = check_positive_int(regions, "regions")
    copies = check_positive_int(perturbations, "perturbations")
    low, high = resolve_value_range(value_range, model)
    warn_outside_value_range(x, (low, high), name="images", stacklevel=2)
    seed = check_seed(seed)
    windows = select_windows(relevance, k, count)
    scorer = ModelScorer(model, explained_target(attributions, target, score), score, batch_size, verbose,
                         warn_softmax=True)
    f0 = scorer.start(x)

    num, channels = x.shape[0], x.shape[-1]
    current = np.array(x, copy=True)
    rng = np.random.default_rng(seed)
    total = num * copies
    rows_image = np.arange(total) // copies
    rows_copy = np.arange(total) % copies
    means = np.empty((num, count), dtype=np.float64)
    bar = make_bar(count * chunk_count(total, scorer.batch_size), verbose)
    done = 0
    for step in range(count):
        noise = (low + (high - low) * rng.random((copies, k, k, channels))).astype(dtype)
        corners = windows[:, step]

        def build(start, stop, noise=noise, corners=corners):
            image = rows_image[start:stop]
            points = current[image]
            first = start
            while first < stop:  # rows of one image are contiguous
                n = rows_image[first]
                last = min(stop, (n + 1) * copies)
                h, w = corners[n]
                points[first - start : last - start, h : h + k, w : w + k, :] = noise[rows_copy[first:last]]
                first = last
            return points, image

        scores, done = run_rows(scorer, total, build, bar, done)
        scores = scores.reshape(num, copies)
        means[:, step] = scores.mean(axis=1)
        keep = closest_to_median(scores, axis=1)  # first index on ties, up to rounding
        for n in range(num):
            h, w = corners[n]
            current[n, h : h + k, w : w + k, :] = noise[keep[n]]

    raw = np.concatenate([f0[:, None], means], axis=1)
    if np.any(f0 == 0):
        warnings.warn(
            f"f(x) = 0 for image(s) {np.flatnonzero(f0 == 0).tolist()}: the AUPC curve is normalised by "
            "|f(x)| and is not defined there (inf/nan).",
            RuntimeWarning,
            stacklevel=2,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        curve = raw / np.abs(f0)[:, None]
    return AUPCResult(area=simpson(curve), curve=curve, scores=raw, windows=windows, targets=scorer.targets)


# -- deletion / insertion ----------------------------------------------------------------------
@dataclass
class CausalResult:
    """What :func:`deletion` and :func:`insertion` return (``N`` images, ``n`` steps).

    Attributes:
        auc: ``(N,)`` ``(Σ c − c₀/2 − c_n/2) / n``, in [0, 1] for probabilities.
        curve: ``(N, n+1)`` the score after each step (``c₀`` before any pixel moved).
        pixels_per_step: pixels moved per step.
        targets: ``(N,)`` explained class per image (``None`` for a callable score).
    """

    auc: np.ndarray
    curve: np.ndarray
    pixels_per_step: int
    targets: Optional[np.ndarray]


def _reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """SciPy ``mode="reflect"`` (``d c b a | a b c d | d c b a``), any distance."""
    period = 2 * size
    index = np.mod(index, period)
    return np.where(index >= size, period - 1 - index, index)


def _blur_line(size: int, sigma: float) -> np.ndarray:
    size = check_positive_int(size, "blur_kernel_size")
    sigma = float(sigma)
    if not (np.isfinite(sigma) and sigma > 0):
        raise InvalidInputError("`blur_sigma` must be a positive number. " + received("blur_sigma", sigma))
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * offsets.astype(np.float64) ** 2 / sigma**2)
    weights /= weights.sum()
    centre = size // 2
    return np.array([weights[_reflect_index(i + offsets, size) == centre].sum() for i in range(size)])


def blur_kernel(size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """The RISE insertion kernel: ``scipy.ndimage.gaussian_filter`` of a centred ``size×size``
    delta with ``sigma`` (reflect boundary, truncate 4).

    With σ = 5 the Gaussian's radius (20) exceeds the 11×11 support, so the boundary
    reflection folds its tails back: the kernel is flatter than a truncated Gaussian. It is
    the outer product of a 1-D folded kernel and sums to 1.
    """
    line = _blur_line(size, sigma)
    return np.outer(line, line)


def blur(images, size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """``images`` convolved per channel with :func:`blur_kernel`, zero padding, same size
    (``torch.nn.functional.conv2d(x, kernel, padding=size // 2)`` in the RISE code).

    Args:
        images: ``(N, H, W, C)`` array.

    Returns:
        float64 array of the same shape.
    """
    array = np.asarray(images, dtype=np.float64)
    line = _blur_line(size, sigma)  # the kernel is outer(line, line): two 1-D passes
    half = size // 2
    height, width = array.shape[1:3]
    padded = np.pad(array, ((0, 0), (half, size - 1 - half), (0, 0), (0, 0)))
    rows = sum(line[i] * padded[:, i : i + height] for i in range(size))
    padded = np.pad(rows, ((0, 0), (0, 0), (half, size - 1 - half), (0, 0)))
    return sum(line[j] * padded[:, :, j : j + width] for j in range(size))


def _substrate(spec, x: np.ndarray, size: int, sigma: float, name: str) -> np.ndarray:
    if isinstance(spec, str):
        if spec in ("zero", "black"):
            return np.zeros_like(x)
        if spec == "blur":
            return blur(x, size, sigma).astype(x.dtype)
        raise InvalidInputError(f"`{name}` must be 'zero', 'blur', a number or an array. " + received(name, spec))
    if isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        return np.full_like(x, float(spec))
    array = as_array(spec, name)
    try:
        return np.broadcast_to(array, x.shape).astype(x.dtype)
    except ValueError:
        raise InvalidInputError(
            f"`{name}` must broadcast to the images' shape {x.shape}. " + received(f"{name}.shape", array.shape)
        ) from None


def causal_auc(curve) -> np.ndarray:
    """Petsiuk et al.'s normalised area ``(Σ c − c₀/2 − c_n/2) / n`` of curves ``(…, n+1)``
    (the trapezoid rule over ``[0, 1]``)."""
    c = np.asarray(curve, dtype=np.float64)
    steps = c.shape[-1] - 1
    return (c.sum(axis=-1) - c[..., 0] / 2 - c[..., -1] / 2) / steps


def _causal(mode, model, images, attributions, target, pixels_per_step, substrate, blur_kernel_size,
            blur_sigma, score, batch_size, verbose) -> CausalResult:
    batch, x, dtype = check_images(model, images)
    saliency = maps_for_images(attributions, batch)
    num, height, width = saliency.shape
    pixels = height * width
    if pixels_per_step is None:
        step = max(1, int(round(math.sqrt(pixels))))
    else:
        step = check_positive_int(pixels_per_step, "pixels_per_step")
    steps = math.ceil(pixels / step)
    scorer = ModelScorer(model, explained_target(attributions, target, score), score, batch_size, verbose)
    scorer.start(x)
    moved = _substrate(substrate, x, blur_kernel_size, blur_sigma, "substrate")
    start, finish = (x, moved) if mode == "deletion" else (moved, x)
    # rank[n, i, j] = position of pixel (i, j) in decreasing-saliency order (stable on ties)
    order = descending_order(saliency.reshape(num, -1), axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(pixels)[None].repeat(num, 0), axis=1)
    rank = rank.reshape(num, height, width)
    per_image = steps + 1
    total = num * per_image
    rows_image = np.arange(total) // per_image
    rows_count = np.minimum((np.arange(total) % per_image) * step, pixels)

    def build(lo, hi):
        image = rows_image[lo:hi]
        swapped = rank[image] < rows_count[lo:hi, None, None]
        return np.where(swapped[..., None], finish[image], start[image]), image

    bar = make_bar(chunk_count(total, scorer.batch_size), verbose)
    curve, _ = run_rows(scorer, total, build, bar)
    curve = curve.reshape(num, per_image)
    return CausalResult(auc=causal_auc(curve), curve=curve, pixels_per_step=step, targets=scorer.targets)


def deletion(
    model,
    images,
    attributions,
    target=None,
    pixels_per_step: Optional[int] = None,
    substrate="zero",
    blur_kernel_size: int = 11,
    blur_sigma: float = 5.0,
    score: Score = "probability",
    batch_size: int = 64,
    verbose: Union[int, bool, str] = "auto",
) -> CausalResult:
    """Deletion metric of RISE (Petsiuk, Das & Saenko, BMVC 2018, §4.1). Lower is better.

    Pixels are ordered by decreasing saliency (the *signed* channel sum of the attribution;
    ties in row-major order, and values within ``2**-14`` of the map's largest magnitude of
    each other are ties — :func:`~tfattr.metrics._common.rank_keys` — so a last-bit
    difference between machines does not reorder them); step ``i`` sets the first ``i·s`` of them (all channels) to
    the substrate — 0 in the model's input space by default — and records the softmax
    probability of the top-1 class of the unperturbed image. ``n = ⌈H·W / s⌉`` steps give
    ``n + 1`` curve points (the first on the intact image, the last on the substrate) and
    ``AUC = (Σ c − c₀/2 − c_n/2) / n`` ∈ [0, 1].

    All ``N·(n+1)`` states are built on the fly and scored in chunks of ``batch_size``.

    Args:
        model: Keras model; its outputs are turned into probabilities as described under
            "Scores" in :mod:`tfattr.metrics` (``score="probability"``).
        images: ``(N, H, W, C)`` float images (or one image).
        attributions: the images' shape or ``(N, H, W)`` maps.
        target: ``None`` (top-1 class, the protocol), an int, ints, or a callable score.
        pixels_per_step: ``s``; default ``round(√(H·W))`` — 224 on 224×224, as in the paper,
            and the same number of steps (≈ the side) on other sizes.
        substrate: ``"zero"`` (default), ``"blur"``, a number or an array of the images' shape.
        blur_kernel_size, blur_sigma: the ``"blur"`` substrate (see :func:`blur`).
        score: ``"probability"`` (the protocol), ``"logit"`` or a callable.
        batch_size: rows per model call.
        verbose: progress bar (``"auto"``: ≥ 64 model calls).

    Returns:
        :class:`CausalResult` (``auc (N,)``, ``curve (N, n+1)``).

    Example:
        >>> deletion(model, images, expl.attributions).auc
    """
    return _causal("deletion", model, images, attributions, target, pixels_per_step, substrate,
                   blur_kernel_size, blur_sigma, score, batch_size, verbose)


def insertion(
    model,
    images,
    attributions,
    target=None,
    pixels_per_step: Optional[int] = None,
    substrate="blur",
    blur_kernel_size: int = 11,
    blur_sigma: float = 5.0,
    score: Score = "probability",
    batch_size: int = 64,
    verbose: Union[int, bool, str] = "auto",
) -> CausalResult:
    """Insertion metric of RISE (Petsiuk et al. 2018, §4.1). Higher is better.

    Starts from a blurred copy of the image (11×11 kernel, σ = 5, zero padding: see
    :func:`blur`) and inserts the original pixels in decreasing saliency order, ``s`` a
    step; the curve is the softmax probability of the top-1 class of the original image,
    ``AUC = (Σ c − c₀/2 − c_n/2) / n`` ∈ [0, 1]. Arguments as in :func:`deletion`
    (``substrate`` is the starting image here).

    Example:
        >>> insertion(model, images, expl.attributions).auc
    """
    return _causal("insertion", model, images, attributions, target, pixels_per_step, substrate,
                   blur_kernel_size, blur_sigma, score, batch_size, verbose)
