"""Blur Integrated Gradients (Xu, Venugopalan & Sundararajan, CVPR 2020), as PAIR saliency's
``saliency.core.BlurIG``: integrated gradients along the scale-space path of Gaussian blurs."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import tensorflow as tf

from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import PathRows
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import AttributionMethod, Explained

__all__ = ["BlurIntegratedGradients", "blur_sigmas", "gaussian_blur_matrix", "gaussian_blur"]

#: values of one block of path points at most (points, their differences, the engine's host sums)
_BLOCK_VALUES = 1 << 23
#: the path's differences enter the engine as ``x' − z`` with ``x' = z + 2^20 · d`` and weight
#: ``2^-20``: ``|x' − z|`` then dwarfs ``|z|`` and the float subtraction returns ``2^20 · d`` to
#: the dtype's relative precision (powers of two scale exactly). Half-precision inputs use 1.
_LIFT = 2.0**20
BOUNDARY_MODES = ("constant", "reflect")


@lru_cache(maxsize=256)
def _blur_matrix(size: int, sigma: float, truncate: float, mode: str) -> np.ndarray:
    if sigma <= 1e-15:  # scipy skips an axis of sigma ≤ 1e-15; PAIR returns the image at sigma 0
        return np.eye(size)
    radius = int(truncate * float(sigma) + 0.5)
    k = np.arange(-radius, radius + 1)
    c = -0.5 / (sigma * sigma)
    weights = np.exp(k * (k * c))  # scipy's _gaussian_kernel1d (Horner form of its polynomial)
    weights /= weights.sum()
    if mode == "constant":  # zeros outside (cval = 0): M[i, j] = w[j − i + r] for |j − i| ≤ r
        offset = np.arange(size)[None, :] - np.arange(size)[:, None]
        inside = np.abs(offset) <= radius
        return np.where(inside, weights[np.clip(offset + radius, 0, 2 * radius)], 0.0)
    # "reflect": d c b a | a b c d | d c b a, periodic in 2·size
    rows = np.repeat(np.arange(size), len(k))
    cols = np.mod((np.arange(size)[:, None] + k[None, :]).ravel(), 2 * size)
    cols = np.where(cols >= size, 2 * size - 1 - cols, cols)
    matrix = np.zeros((size, size))
    np.add.at(matrix, (rows, cols), np.tile(weights, size))
    return matrix


def gaussian_blur_matrix(size: int, sigma: float, truncate: float = 4.0, mode: str = "constant") -> np.ndarray:
    """The ``(size, size)`` float64 matrix ``M`` of a 1-D Gaussian blur along an axis of ``size``
    values: ``blurred = M @ values``, equal to ``scipy.ndimage.gaussian_filter1d(values, sigma,
    mode=mode, truncate=truncate)`` (kernel radius ``int(truncate·σ + 0.5)``; ``mode``
    ``"constant"`` pads zeros, ``"reflect"`` mirrors half-sample symmetric, scipy's default);
    ``σ = 0`` is the identity."""
    checks.choice("mode", mode, BOUNDARY_MODES)
    checks.non_negative_number("sigma", sigma)
    return _blur_matrix(int(size), float(sigma), float(truncate), mode).copy()


def gaussian_blur(images, sigma: float, truncate: float = 4.0, mode: str = "constant") -> tf.Tensor:
    """``(N, H, W, C)`` images blurred over ``H`` and ``W`` (not channels) with a Gaussian of
    ``sigma``, separably on the device: ``scipy.ndimage.gaussian_filter(image, [σ, σ, 0],
    mode=mode, truncate=truncate)`` per image (PAIR's ``gaussian_blur`` is ``mode="constant"``)."""
    images = tf.convert_to_tensor(images)
    dtype = images.dtype if images.dtype in (tf.float32, tf.float64) else tf.float32
    height, width = int(images.shape[1]), int(images.shape[2])
    rows = tf.constant(gaussian_blur_matrix(height, sigma, truncate, mode), dtype)
    cols = tf.constant(gaussian_blur_matrix(width, sigma, truncate, mode), dtype)
    x = tf.cast(images, dtype)
    return tf.einsum("bw,nawc->nabc", cols, tf.einsum("ah,nhwc->nawc", rows, x))


def blur_sigmas(max_sigma: float = 50.0, steps: int = 100, sqrt: bool = False) -> np.ndarray:
    """PAIR's ``steps + 1`` blur levels: ``σ_i = i·max_sigma/steps`` or, with ``sqrt``,
    ``σ_i = √(i·max_sigma/steps)`` (PAIR's schedule, not the paper's: its σ_max is then √max_sigma)."""
    if sqrt:
        return np.array([math.sqrt(float(i) * max_sigma / float(steps)) for i in range(steps + 1)])
    return np.array([float(i) * max_sigma / float(steps) for i in range(steps + 1)])


@tf.function(reduce_retracing=True)
def _blur_block(x, rows, cols, rows_diff, cols_plus, cols_diff, factor):
    """Path points ``B_i X B_i'ᵀ`` and scaled differences ``factor_i · (A_i X A_i'ᵀ − B_i X B_i'ᵀ)``
    for a block of levels ``i``: ``x`` ``(N, H, W, C)``; ``rows``/``cols`` ``(K, H, H)``/``(K, W, W)``
    the blurs ``B``/``B'`` at ``σ_i``, ``cols_plus`` the blur ``A'`` at ``σ_i + h``, ``*_diff``
    ``A − B`` and ``A' − B'`` (made in float64). The difference is taken as
    ``(A − B) X A'ᵀ + B X (A' − B')ᵀ``: no cancellation between two nearly equal blurs."""
    left = tf.einsum("kah,nhwc->nkawc", rows, x)
    points = tf.einsum("kbw,nkawc->nkabc", cols, left)
    diff = (tf.einsum("kbw,nkawc->nkabc", cols_plus, tf.einsum("kah,nhwc->nkawc", rows_diff, x))
            + tf.einsum("kbw,nkawc->nkabc", cols_diff, left))
    return points, diff * tf.reshape(factor, [1, -1, 1, 1, 1])


class BlurIntegratedGradients(AttributionMethod):
    r"""Blur IG (Xu, Venugopalan & Sundararajan, CVPR 2020), discretised as PAIR saliency's ``BlurIG.GetMask``.

    The path runs through Gaussian blurs of the input, ``γ(σ) = G_σ ∗ x`` from the input
    (``σ = 0``) to ``σ = max_sigma``; with PAIR's levels ``σ_0 = 0 < σ_1 < … < σ_steps`` and
    its finite-difference derivative of step ``h = grad_step``

    ``φ(x) = − Σ_{i=0}^{steps−1} (σ_{i+1} − σ_i) · (G_{σ_i+h} ∗ x − G_{σ_i} ∗ x) / h ⊙ ∇f(G_{σ_i} ∗ x)``

    (a left Riemann sum of ``∫ ∂f(γ(σ))/∂γ · ∂γ/∂σ dσ`` from ``max_sigma`` down to 0). The
    blur is scipy's ``gaussian_filter(x, [σ, σ, 0], mode="constant")`` as PAIR (zeros outside
    the image, kernel radius ``int(4σ + 0.5)``, channels not blurred): with ``σ + h = 0.01`` the
    radius is 0, so the first level's derivative is 0, as PAIR's. The blurs are separable
    matrix products on the device; each level is an engine row.

    Inputs are ``(N, H, W, C)`` images (channels last); one input only.

    Options (constructor defaults, each overridable in :meth:`attribute`):
        max_sigma: the largest blur (default 50, PAIR's).
        steps: blur levels = gradient evaluations per example (default 100, PAIR's).
        grad_step: the step ``h`` of the finite-difference derivative in σ (default 0.01, PAIR's).
        sqrt: PAIR's square-root schedule ``σ_i = √(i·max_sigma/steps)`` (default False). PAIR
            applies one level's ``σ_{i+1} − σ_i`` to a whole ``batch_size`` batch of levels; with
            ``sqrt=True`` and ``batch_size > 1`` its result is therefore not the sum above (its
            default ``batch_size=1`` is). tfattr uses each level's own step.
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod` (one input only: ``fixed_inputs``
            stays ``None``).

    Returns from :meth:`attribute` an :class:`~tfattr.Explanation` whose ``baseline_scores`` are
    ``f(G_{σ_steps} ∗ x)`` (the most blurred image, one forward pass) and ``delta`` is
    ``Σ_i φ_i − (f(x) − f(G_{σ_steps} ∗ x))``: the left Riemann sum's and the finite difference's
    error (``O(1/steps) + O(grad_step)``).

    Example:
        >>> blur_ig = BlurIntegratedGradients(model, max_sigma=50, steps=100)
        >>> expl = blur_ig.attribute(images, target=None)
    """

    name = "blur_integrated_gradients"
    options = (
        Option("max_sigma", 50.0, checks.positive_number),
        Option("steps", 100, checks.path_steps),
        Option("grad_step", 0.01, checks.positive_number),
        Option("sqrt", False, checks.boolean),
    )
    combine = "path"
    several_inputs = False

    def describe(self, config) -> str:
        schedule = ", sqrt" if config["sqrt"] else ""
        return f"{self.name}(max_sigma={config['max_sigma']:g}, steps={config['steps']}{schedule})"

    def _explain(self, x, targets, fx, config) -> Explained:
        if len(x.shape) != 4:
            raise InvalidInputError("BlurIntegratedGradients blurs (N, H, W, C) images (channels last). "
                                    + received("inputs.shape", tuple(x.shape)))
        num_examples, shape = int(x.shape[0]), tuple(int(d) for d in x.shape[1:])
        height, width = shape[0], shape[1]
        steps, h = int(config["steps"]), float(config["grad_step"])
        sigmas = blur_sigmas(float(config["max_sigma"]), steps, bool(config["sqrt"]))
        dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
        lift = _LIFT if x.dtype in (tf.float32, tf.float64) else 1.0
        xf = tf.cast(x, dtype)
        indices = targets.indices if targets.indices is not None else np.zeros(num_examples, np.int32)
        engine = self.engine(targets, config)
        block = int(max(1, min(steps, _BLOCK_VALUES // max(1, num_examples * int(np.prod(shape))))))
        attributions = np.zeros((num_examples,) + shape)
        at_input = None
        for start in range(0, steps, block):
            levels = range(start, min(start + block, steps))
            count = len(levels)
            factor = np.array([-(sigmas[i + 1] - sigmas[i]) / h for i in levels])  # −(σ_{i+1} − σ_i)/h

            def blur(size, at):
                return np.stack([_blur_matrix(size, float(sigma), 4.0, "constant") for sigma in at])

            at, after = sigmas[start:start + count], sigmas[start:start + count] + h
            rows, cols, cols_plus = blur(height, at), blur(width, at), blur(width, after)
            points, diff = _blur_block(xf, *(tf.constant(m, dtype) for m in (
                rows, cols, blur(height, after) - rows, cols_plus, cols_plus - cols, factor)))
            starts = tf.cast(tf.reshape(points, (-1,) + shape), x.dtype)
            ends = tf.cast(tf.reshape(points + lift * diff, (-1,) + shape), x.dtype)
            owner = np.repeat(np.arange(num_examples), count)
            path = PathRows(np.arange(num_examples * count), np.arange(num_examples * count),
                            np.zeros(num_examples * count), np.full(num_examples * count, 1.0 / lift))
            result = engine.integrate(ends, starts, indices[owner], path, combine="path")
            attributions += result.attributions.reshape((num_examples, count) + shape).sum(axis=1)
            if start == 0:  # level 0 is the input itself (σ_0 = 0): its row scores are f(x)
                at_input = result.row_scores.reshape(num_examples, count)[:, 0]
        if fx is None:
            fx = at_input
        blurred = tf.cast(gaussian_blur(xf, float(sigmas[-1])), x.dtype)
        owner = np.arange(num_examples)
        fz = self.scores(blurred, targets, config["batch_size"], owner)
        total = attributions.reshape(num_examples, -1).sum(axis=1)
        return Explained(attributions=attributions, delta=total - (np.asarray(fx, np.float64) - fz),
                         baseline_scores=fz, scores=np.asarray(fx, np.float64), gradients=num_examples * steps,
                         info={"sigmas": sigmas, "steps": steps, "max_sigma": float(config["max_sigma"]),
                               "grad_step": h, "sqrt": bool(config["sqrt"])})
