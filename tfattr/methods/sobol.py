"""Sobol attribution (Fel, Cadène, Chalvidal et al., NeurIPS 2021) on the engine's forward rows.

The image is cut into a ``grid × grid`` array of cells; a design of ``n_designs`` quasi-Monte-Carlo
points of ``[0, 1]^{2D}`` (``D = grid²``, a scrambled Sobol sequence, ``scipy.stats.qmc.Sobol``)
gives the matrices ``A`` and ``B`` (its first and last ``D`` columns) and the ``D`` replicated
matrices ``C_i`` (``A`` with column ``i`` taken from ``B``): ``n_designs · (D + 2)`` masks per
image, each a row of the forward engine. A chunk builds its own rows' masks on the device from the
rows' positions (the design ``A``, ``B`` is the call's context): nothing of size rows × image is
held. The masks are upsampled to the image by nearest neighbour (as ``tf.image.resize(...,
"nearest")``) and applied by a perturbation (inpainting, blur or amplitude, xplique's
``perturbations``); the model's scores of all rows give the Jansen total-order indices per cell,
upsampled bicubically to the image (xplique's ``SobolAttributionMethod``).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import ChunkRows, ForwardRows
from tfattr.core.random import STREAM_SOBOL, rng
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import Explained
from tfattr.methods.perturbation import _baselines, _check_baseline, _PerturbationMethod

__all__ = ["SobolAttribution", "HsicAttribution", "sobol_design", "binary_design", "jansen_total_order",
           "hsic_binary", "nearest_indices", "PERTURBATIONS"]

#: the perturbations of :class:`SobolAttribution` (xplique's ``inpainting``, ``blurring``, ``amplitude``)
PERTURBATIONS = ("inpainting", "blur", "amplitude")

#: xplique's guard on the variance of ``f(A)`` (``sobol_estimators.EPS``)
VARIANCE_FLOOR = 1e-12

#: the engine numbers rows in int32: a call has fewer rows than this
MAX_ROWS = 2**31

#: the most dimensions of ``scipy.stats.qmc.Sobol`` (its table of direction numbers)
SOBOL_MAX_DIMENSIONS = 21201


def _power_of_two(name: str, value) -> None:
    checks.integer_at_least(name, value, 2, " (at least 2: the variance of f(A) needs two points)")
    if value & (value - 1):
        raise InvalidInputError(f"`{name}` must be a power of two (the balance of the Sobol sequence). "
                                + received(name, value))


def _optional_positive(name: str, value) -> None:
    if value is not None:
        checks.positive_number(name, value)


def sobol_design(dimension: int, n_designs: int, seed) -> tuple:
    """``(A, B)``, each ``(n_designs, dimension)`` float64 in ``[0, 1)``: the first and last
    ``dimension`` columns of ``n_designs`` points of a scrambled Sobol sequence in ``2·dimension``
    dimensions (``scipy.stats.qmc.Sobol(scramble=True)``, its scrambling drawn from ``seed``)."""
    from scipy.stats import qmc

    points = qmc.Sobol(2 * dimension, scramble=True, rng=rng(seed, STREAM_SOBOL)).random(n_designs)
    return points[:, :dimension], points[:, dimension:]


def replicated_design(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rows of one image in order, ``[A; B; C_0; …; C_{D−1}]`` (``C_i`` is ``A`` with column
    ``i`` from ``B``): ``(n (D + 2), D)``, xplique's ``build_replicated_design``."""
    n, dimension = a.shape
    c = np.repeat(a[None], dimension, axis=0)
    c[np.arange(dimension), :, np.arange(dimension)] = b.T
    return np.concatenate([a, b, c.reshape(-1, dimension)])


def jansen_total_order(scores: np.ndarray, n_designs: int) -> np.ndarray:
    """Jansen's total-order estimator (Jansen 1999; Fel et al. 2021, eq. 5) from the scores of
    the rows ``[A; B; C_0; …; C_{D−1}]`` (last axis; leading axes are examples):
    ``S_Ti = Σ_k (f(A_k) − f(C_{i,k}))² / (2 n V̂)``, ``V̂`` the unbiased sample variance of
    ``f(A)`` (floored at 1e-12 as xplique's). Returns ``(…, D)``."""
    scores = np.asarray(scores, np.float64)
    a = scores[..., :n_designs]
    c = scores[..., 2 * n_designs:].reshape(scores.shape[:-1] + (-1, n_designs))
    variance = np.maximum(np.var(a, axis=-1, ddof=1 if n_designs > 1 else 0), VARIANCE_FLOOR)
    return np.sum((a[..., None, :] - c) ** 2, axis=-1) / (2.0 * n_designs * variance[..., None])


def nearest_indices(cells: int, size: int) -> np.ndarray:
    """The cell of each of ``size`` pixels when ``cells`` are upsampled by nearest neighbour, as
    ``tf.image.resize(method="nearest")`` (half-pixel centres): ``⌊(t + ½)·cells/size⌋``."""
    return np.minimum(np.floor((np.arange(size) + 0.5) * cells / size).astype(np.int64), cells - 1)


def _box_blur(x: np.ndarray, size: int) -> np.ndarray:
    """``cv2.blur(x, (size, size))`` per image of ``(N, H, W, …)``: the mean over a ``size × size``
    window starting ``size // 2`` before the pixel, borders reflected without repeating the edge
    (OpenCV's default ``BORDER_REFLECT_101``)."""
    before, after = size // 2, size - 1 - size // 2
    height, width = x.shape[1], x.shape[2]
    if max(before, after) >= min(height, width):
        raise InvalidInputError(f"The blur window ({size}) must be smaller than the image's sides "
                                f"({height} × {width}). " + received("sigma", size))
    pad = [(0, 0), (before, after), (before, after)] + [(0, 0)] * (x.ndim - 3)
    padded = np.pad(x, pad, mode="reflect")
    total = np.zeros_like(x, dtype=np.float64)
    for dy in range(size):
        for dx in range(size):
            total += padded[:, dy: dy + height, dx: dx + width]
    return total / (size * size)


def _sobol_rows(x, rows: ChunkRows, amplitude: bool):
    shape = [int(d) for d in x.shape[1:]]
    height, width = shape[0], shape[1]
    static = tf.reshape(rows.context, [-1])[:4]  # n_designs, D, grid, sigma (the context's rank is unknown)
    n_designs = tf.cast(static[0], tf.int32)
    dimension = tf.cast(static[1], tf.int32)
    grid = tf.cast(static[2], tf.int32)
    sigma = tf.cast(static[3], x.dtype)
    masks, rest = _design_masks(tf.reshape(rows.context, [-1])[4:], rows.position, n_designs, dimension, height,
                                width, grid)
    masks = tf.cast(tf.reshape(masks, [-1, height, width] + [1] * (len(shape) - 2)), x.dtype)
    inputs = tf.gather(x, rows.example)
    if amplitude:
        return inputs * (masks - 0.5) * sigma
    baselines = tf.reshape(tf.cast(rest, x.dtype), [-1] + shape)
    base = tf.gather(baselines, rows.example)
    return inputs * masks + (1.0 - masks) * base


def _design_masks(context, position, n_designs, dimension, height, width, grid):
    """Rows' low-resolution masks from their positions among the image's rows ``[A; B; C_0; …]``
    and the design ``A``, ``B`` at the start of ``context`` (sizes as tensors: one trace serves
    every design), upsampled to ``(B, H, W)`` by the nearest-cell tables that follow them;
    returns ``(masks, rest of the context)``."""
    size = n_designs * dimension
    a = tf.reshape(context[:size], tf.stack([n_designs, dimension]))
    b = tf.reshape(context[size: 2 * size], tf.stack([n_designs, dimension]))
    rows_y = tf.cast(context[2 * size: 2 * size + height], tf.int32)
    cols_x = tf.cast(context[2 * size + height: 2 * size + height + width], tf.int32)
    rest = context[2 * size + height + width:]
    replica = position - 2 * n_designs
    design = tf.math.floormod(position, n_designs)
    from_a, from_b = tf.gather(a, design), tf.gather(b, design)
    swapped = tf.one_hot(tf.math.floordiv(tf.maximum(replica, 0), n_designs), dimension, on_value=True,
                         off_value=False, dtype=tf.bool)
    swapped = tf.logical_and(swapped, (replica >= 0)[:, None])
    is_b = tf.logical_and(position >= n_designs, position < 2 * n_designs)[:, None]
    cells = tf.where(tf.logical_or(is_b, swapped), from_b, from_a)
    cells = tf.reshape(cells, tf.stack([-1, grid, grid]))
    masks = tf.gather(tf.gather(cells, rows_y, axis=1), cols_x, axis=2)
    return masks, rest


def _sobol_blend(x, rows: ChunkRows):
    """Row ``p``: ``x ⊙ M_p + (1 − M_p) ⊙ x₀`` (inpainting: ``x₀`` the baseline; blur: the blurred image)."""
    return _sobol_rows(x, rows, amplitude=False)


def _sobol_amplitude(x, rows: ChunkRows):
    """Row ``p``: ``x ⊙ (M_p − ½) · σ`` (xplique's ``amplitude``)."""
    return _sobol_rows(x, rows, amplitude=True)


class SobolAttribution(_PerturbationMethod):
    """Sobol attribution (Fel, Cadène, Chalvidal, Cord, Vigouroux & Serre, NeurIPS 2021, "Look at the
    Variance!"): the total-order Sobol index of each cell of a ``grid × grid`` partition of the image,
    for the score under random real-valued masks of the cells.

    The masks come from a design of ``n_designs`` points of a scrambled Sobol sequence in
    ``[0, 1]^{2D}`` (``D = grid²``): ``A`` (first ``D`` columns), ``B`` (last ``D``) and ``C_i``
    (``A`` with column ``i`` from ``B``), ``n_designs · (D + 2)`` masks per image. Each is
    upsampled to the image by nearest neighbour and applied by the perturbation ``τ(x, M)``:
    ``"inpainting"`` ``x ⊙ M + (1 − M) x₀`` (``x₀ = baseline``, 0 by default), ``"blur"``
    ``x ⊙ M + (1 − M) blur(x)`` (a ``sigma × sigma`` box blur, OpenCV's ``cv2.blur`` as xplique's,
    ``sigma`` 10 by default) or ``"amplitude"`` ``x ⊙ (M − ½) σ`` (xplique's code; ``σ = 1`` by
    default). The Jansen estimator (eq. 5 of the paper) gives
    ``S_Ti = Σ_k (f(τ(x, A_k)) − f(τ(x, C_{i,k})))² / (2 n V̂)``, ``V̂`` the sample variance of
    ``f(τ(x, A))``; the ``grid × grid`` indices are upsampled bicubically to the image (as xplique).

    Every mask of every image is one forward row of the engine (``batch_size`` rows per model call):
    forward passes ``⌈N · n_designs · (grid² + 2) / batch_size⌉``; a chunk builds its own masks on
    the device from its rows' positions, never all at once.

    Differences from xplique's ``SobolAttributionMethod``: its default sampler is TensorFlow's
    unscrambled Sobol sequence (its first point is all zeros); here the sequence is scrambled
    (Owen scrambling, ``scipy.stats.qmc.Sobol``) from ``seed``. Estimator, masks, perturbations and
    upsampling are xplique's.

    Options:
        grid: cells per side (at most the image's side, and at most 102: ``2·grid²`` dimensions of
            scipy's Sobol sequence).
        n_designs: points of the design, a power of two ≥ 2 (forward rows per image:
            ``n_designs · (grid² + 2)``).
        perturbation: ``"inpainting"``, ``"blur"`` or ``"amplitude"``.
        sigma: the blur's box size (an integer, default 10) or the amplitude's scale (default 1);
            refused with inpainting.
        baseline: inpainting's replacement ``x₀``: a number or an array broadcastable to the inputs
            (a non-zero one is refused with blur and amplitude, which do not use it).
        seed: the scrambling's seed (``None``: a fresh one on each call).
        batch_size, verbose, parallel_chunks, output: see :class:`~tfattr.methods.base.AttributionMethod`.

    Returns ``(N, H, W)`` maps; ``info`` holds ``total_indices`` (``(N, grid, grid)``, the Jansen
    indices before upsampling), ``forward_passes``, ``rows``, ``n_designs`` and the ``seed`` used.

    Example:
        >>> SobolAttribution(model, grid=8, n_designs=32).attribute(images, target=3).attributions
    """

    name = "sobol"
    options = (
        Option("grid", 8, checks.positive_int),
        Option("n_designs", 32, _power_of_two),
        Option("perturbation", "inpainting", checks.choices(*PERTURBATIONS)),
        Option("sigma", None, _optional_positive),
        Option("baseline", 0, _check_baseline),
        Option("seed", 0, checks.seed),
    )

    #: the key of the per-cell values in ``info``
    info_key = "total_indices"

    #: Sobol-sequence dimensions per cell (``A`` and ``B``)
    design_columns = 2

    def rows_per_example(self, dimension: int, n_designs: int) -> int:
        """Forward rows per image: ``n_designs · (D + 2)``."""
        return n_designs * (dimension + 2)

    def design(self, dimension: int, n_designs: int, seed):
        """``(A, B, rows per image)``: the scrambled Sobol design (rows ``[A; B; C_0; …]``)."""
        a, b = sobol_design(dimension, n_designs, seed)
        return a, b, n_designs * (dimension + 2)

    def estimate(self, scores: np.ndarray, design, n_designs: int) -> np.ndarray:
        """Per-cell values ``(N, D)`` from the rows' scores ``(N, rows per image)``."""
        return jansen_total_order(scores, n_designs)

    def check_combination(self, config) -> None:
        sigma = config["sigma"]
        if config["perturbation"] == "blur" and sigma is not None and not checks.is_int(sigma):
            raise InvalidInputError("The blur's `sigma` is its box size: an integer. " + received("sigma", sigma))
        perturbation = config["perturbation"]
        if perturbation == "inpainting" and sigma is not None:
            raise InvalidInputError("`sigma` is the blur's box size or the amplitude's scale; inpainting has none "
                                    "(it blends towards `baseline`). " + received("sigma", sigma))
        baseline = config["baseline"]
        if perturbation != "inpainting" and not (checks._is_number(baseline) and baseline == 0):
            raise InvalidInputError(f"`baseline` is inpainting's replacement; the {perturbation} perturbation does not "
                                    "use one (give perturbation='inpainting'). " + received("baseline", baseline))

    def _explain(self, x, targets, fx, config) -> Explained:
        if x.shape.rank < 3:
            raise InvalidInputError("SobolAttribution masks images: inputs of shape (N, H, W, …). "
                                    + received("inputs.shape", tuple(x.shape)))
        if not x.dtype.is_floating:
            raise InvalidTypeError(f"{type(self).__name__} blends real-valued masks into the inputs: the model's input "
                                   "must be floating-point, not integer (the masks would be truncated). "
                                   + received("model input dtype", x.dtype.name))
        num, height, width = int(x.shape[0]), int(x.shape[1]), int(x.shape[2])
        grid, n_designs = int(config["grid"]), int(config["n_designs"])
        if grid > min(height, width):
            raise InvalidInputError(f"`grid` must be at most the image's side ({min(height, width)}). "
                                    + received("grid", grid))
        largest = math.isqrt(SOBOL_MAX_DIMENSIONS // self.design_columns)
        if grid > largest:
            used = "2·grid²" if self.design_columns == 2 else "grid²"
            raise InvalidInputError(f"`grid` must be at most {largest}: the design takes {used} dimensions of the "
                                    f"Sobol sequence, which has {SOBOL_MAX_DIMENSIONS}. " + received("grid", grid))
        perturbation = config["perturbation"]
        seed = config["seed"]
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        dimension = grid * grid
        per_example = self.rows_per_example(dimension, n_designs)
        if num * per_example >= MAX_ROWS:
            raise InvalidInputError(f"{num} image(s) × {per_example} masks each is at least 2^31 forward rows (the "
                                    "engine numbers them in int32): lower `n_designs` or `grid`, or explain fewer "
                                    "images per call. " + received("n_designs", n_designs))
        a, b, per_example = self.design(dimension, n_designs, seed)
        sigma = config["sigma"]
        if sigma is None:
            sigma = 10 if perturbation == "blur" else 1.0
        rest = np.zeros(0)
        if perturbation == "inpainting":
            rest = _baselines("baseline", config["baseline"], x, None).ravel()
        elif perturbation == "blur":
            rest = _box_blur(np.asarray(x, np.float64), int(sigma)).ravel()
        context = np.concatenate([[n_designs, dimension, grid, float(sigma)], a.ravel(), b.ravel(),
                                  nearest_indices(grid, height), nearest_indices(grid, width), rest])
        rows = ForwardRows.repeat(num, per_example)
        build = _sobol_amplitude if perturbation == "amplitude" else _sobol_blend
        result = self.run_rows(x, targets, rows, build, "scores", context, config)
        indices = self.estimate(result.row_scores.reshape(num, per_example), (a, b), n_designs)
        indices = indices.reshape(num, grid, grid)
        maps = tf.image.resize(tf.constant(indices[..., None], tf.float32), (height, width), method="bicubic")
        info = {self.info_key: indices, "forward_passes": result.chunks, "rows": len(rows),
                "n_designs": n_designs, "seed": seed}
        return Explained(attributions=np.asarray(maps, np.float64)[..., 0], scores=fx, info=info)

    def describe(self, config) -> str:
        return (f"sobol(grid={config['grid']}, n_designs={config['n_designs']}, "
                f"perturbation={config['perturbation']!r})")


# -- HSIC ----------------------------------------------------------------------------------------------

def binary_design(dimension: int, n_designs: int, seed) -> np.ndarray:
    """``(n_designs, dimension)`` binary masks: a scrambled Sobol sequence rounded to {0, 1}
    (xplique's ``TFSobolSequence(binary=True)``, scrambled here from ``seed``)."""
    import warnings

    from scipy.stats import qmc

    with warnings.catch_warnings():  # scipy warns when n is not a power of two (xplique's default is 500)
        warnings.simplefilter("ignore", UserWarning)
        points = qmc.Sobol(dimension, scramble=True, rng=rng(seed, STREAM_SOBOL)).random(n_designs)
    return np.round(points)


def hsic_binary(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """xplique's ``BinaryEstimator``: for each cell ``i``, ``HSIC_i = tr(H K_i H · H L H) / n`` with
    the input kernel ``K_i[j, k] = 1 + ½ − (X_ji − X_ki)²`` (binary), the output kernel
    ``L[j, k] = exp(−(y_j − y_k)² / (2 w²))``, ``w`` the median of the scores, ``H = I − 1/n``.
    ``masks (n, D)``, ``scores (…, n)``; returns ``(…, D)``.

    Computed as ``2 X_iᵀ (H L H) X_i / n`` (``H L H`` has zero row and column sums, so the constant
    and the squares of ``K_i`` drop out): ``O(n² D)`` time and ``O(n² + n D)`` memory per example
    instead of xplique's ``(D, n, n)`` products. Where the median is 0 (a score that is 0 under most
    masks, e.g. a ReLU head) xplique's kernel is 0/0; the width is then the scores' standard deviation
    (any width when the scores are constant: ``H L H = 0``, HSIC 0)."""
    masks = np.asarray(masks, np.float64)
    scores = np.asarray(scores, np.float64)
    n = masks.shape[0]
    flat = scores.reshape(-1, n)
    out = np.empty((flat.shape[0], masks.shape[1]))
    for e, y in enumerate(flat):  # one (n, n) Gram matrix at a time
        width = np.median(y)
        if width == 0:
            width = np.std(y) or 1.0
        gram = np.exp(-((y[:, None] - y[None, :]) ** 2) / (2 * width ** 2))
        centred = gram - gram.mean(axis=0, keepdims=True) - gram.mean(axis=1, keepdims=True) + gram.mean()
        out[e] = 2.0 * np.sum(masks * (centred @ masks), axis=0) / n
    return out.reshape(scores.shape[:-1] + (masks.shape[1],))


class HsicAttribution(SobolAttribution):
    """HSIC attribution (Novello, Fel & Vigouroux, NeurIPS 2022, "Making Sense of Dependence:
    Efficient Black-box Explanations Using Dependence Measure"): for each cell of a
    ``grid × grid`` partition, the Hilbert–Schmidt independence criterion between the cell being
    kept or removed and the model's score, as xplique's ``HsicAttributionMethod``.

    ``n_designs`` binary masks (a scrambled Sobol sequence in ``[0, 1]^{grid²}`` rounded to
    {0, 1}) are upsampled by nearest neighbour and applied by the perturbation (as
    :class:`SobolAttribution`: ``"inpainting"``, ``"blur"``, ``"amplitude"``); with the binary input
    kernel and an RBF output kernel of width the median score (xplique's ``BinaryEstimator``),
    ``HSIC_i = tr(H K_i H L H) / n`` (eq. 3 of the paper with xplique's normalisation). Each mask is
    one forward row (``⌈N · n_designs / batch_size⌉`` model calls); the ``grid × grid`` values
    (``info["hsic"]``) are upsampled bicubically to the image.

    Options:
        grid: cells per side (at most the image's side, and at most 145: ``grid²`` dimensions of
            scipy's Sobol sequence).
        n_designs: masks per image (xplique's default 500; any count ≥ 2; the estimator holds one
            ``n × n`` Gram matrix at a time).
        perturbation, sigma, baseline, seed: as :class:`SobolAttribution`.
        batch_size, verbose, parallel_chunks, output: see :class:`~tfattr.methods.base.AttributionMethod`.

    Example:
        >>> HsicAttribution(model, grid=8, n_designs=500).attribute(images, target=3).attributions
    """

    name = "hsic"
    options = (
        Option("grid", 8, checks.positive_int),
        Option("n_designs", 500, checks.at_least(2)),
        Option("perturbation", "inpainting", checks.choices(*PERTURBATIONS)),
        Option("sigma", None, _optional_positive),
        Option("baseline", 0, _check_baseline),
        Option("seed", 0, checks.seed),
    )

    def rows_per_example(self, dimension, n_designs):
        return n_designs

    def design(self, dimension, n_designs, seed):
        masks = binary_design(dimension, n_designs, seed)
        return masks, masks, n_designs

    def estimate(self, scores, design, n_designs):
        return hsic_binary(design[0], scores)

    info_key = "hsic"

    design_columns = 1

    def describe(self, config) -> str:
        return (f"hsic(grid={config['grid']}, n_designs={config['n_designs']}, "
                f"perturbation={config['perturbation']!r})")
