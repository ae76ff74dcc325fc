"""Baselines for path methods (IG and friends), by name, array or callable.

The names follow Sturmfels, Lundberg & Lee, "Visualizing the Impact of Feature
Attribution Baselines" (Distill 2020) and the SmoothTaylor paper (eq. 3):

==================  ===========================================================  ==========
name                baseline ``z`` for an input ``x`` in ``[low, high]``           draws
==================  ===========================================================  ==========
``"zero"``          all zeros in the model's input space                         1
``"black"``         ``low`` everywhere (black for images in ``[low, high]``)     1
``"constant"``      ``value`` everywhere (``value=`` option)                     1
``"uniform"``       i.i.d. ``U[low, high)`` noise (``"uniform_noise"`` alias)    N
``"gaussian"``      ``clip(x + ε, low, high)``, ``ε ~ N(0, σ²)``                 N
``"blur"``          ``x`` blurred by a Gaussian filter of ``σ`` (default 5)      1
``"max_distance"``  per value the end of ``[low, high]`` farthest from ``x``     1
==================  ===========================================================  ==========

"draws" says whether ``n_baselines > 1`` averages IG over several draws
(IG_noise, SmoothTaylor paper eq. 3); deterministic baselines always use one.
An array (one baseline ``(…)``, one per example ``(N, …)``, or ``K`` per example
``(N, K, …)``; a leading 1 broadcasts) or a callable ``x -> array`` of those shapes
covers everything else, trained baselines included; the folder of a saved baseline
(``"saved_baselines/NAME"``, :func:`tfattr.baselines.save_baseline`) is loaded and used as one.

Random draws depend on ``seed`` and on the draw's index only, never on the batch:
every example of a batch gets the same noise draws, so an image's attribution is
the same whether it is explained alone or in a batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import cv2
import numpy as np
import tensorflow as tf

from tfattr.core.engine import MAX_ROWS
from tfattr.core.random import STREAM_GAUSSIAN, STREAM_UNIFORM, rng
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["BASELINES", "BaselineSet", "is_random", "make_baselines", "make_baselines_per_input", "rng",
           "uses_value_range"]

BaselineLike = Union[str, float, int, np.ndarray, tf.Tensor, Callable]

@dataclass
class BaselineSet:
    """Baselines of a batch.

    Attributes:
        array: ``(M, K, …)`` with ``M = N`` (per-example) or ``M = 1`` (shared by all examples).
        name: a short description for results and logs.
        relative: ``array`` holds offsets: the baseline of example ``e`` is ``x_e + array``
            (noise around the image), built on the fly in the engine so memory stays at
            ``K`` images instead of ``N × K``.
        clip: ``(low, high)`` the baselines are clipped to (relative baselines), or ``None``.
        scale: ``(N,)`` factor of example ``e``'s offsets (relative baselines), or ``None`` for 1:
            SmoothTaylor's roots ``x_e + σ_e ε`` share the draws ``ε`` across a batch.
    """

    array: np.ndarray
    name: str
    relative: bool = False
    clip: Optional[Tuple[float, float]] = None
    scale: Optional[np.ndarray] = None

    def materialize(self, x: np.ndarray, scale: Optional[np.ndarray] = None) -> np.ndarray:
        """The baselines as absolute values, ``(N or 1, K, …)`` (``scale``: per-example offset factors)."""
        if not self.relative:
            return self.array
        scale = self.scale if scale is None else scale
        offsets = self.array if scale is None else self.array * np.reshape(scale, (-1,) + (1,) * (self.array.ndim - 1))
        out = np.asarray(x, np.float64)[:, None] + offsets
        return out if self.clip is None else np.clip(out, *self.clip)

    @property
    def per_example(self) -> bool:
        return self.array.shape[0] != 1

    @property
    def count(self) -> int:
        return int(self.array.shape[1])

    def flat(self) -> np.ndarray:
        return self.array.reshape((-1,) + self.array.shape[2:])


def _zero(x, low, high, n, seed, **_):
    return np.zeros((1, 1) + x.shape[1:])


def _black(x, low, high, n, seed, **_):
    return np.full((1, 1) + x.shape[1:], low)


def _constant(x, low, high, n, seed, value=None, **_):
    if value is None:
        raise InvalidInputError(
            'baseline="constant" needs a `value=` option (a float in the input space). '
            + received("value", value)
        )
    return np.full((1, 1) + x.shape[1:], float(value))


def _uniform(x, low, high, n, seed, **_):
    return rng(seed, STREAM_UNIFORM).uniform(low, high, size=(1, n) + x.shape[1:])


def _gaussian(x, low, high, n, seed, sigma=None, **_):
    sigma = 0.1 * (high - low) if sigma is None else float(sigma)
    return rng(seed, STREAM_GAUSSIAN).normal(0.0, sigma, size=(1, n) + x.shape[1:])  # offsets, clipped in use


def _blur(x, low, high, n, seed, blur_sigma=5.0, **_):
    if x.ndim != 4:
        raise InvalidInputError(
            'baseline="blur" needs images (batch, height, width, channels). ' + received("inputs.shape", x.shape)
        )
    sigma = float(blur_sigma)
    if sigma <= 0:
        return x[:, None].astype(np.float64)
    radius = int(4.0 * sigma + 0.5)  # scipy.ndimage.gaussian_filter's truncate=4
    size = (2 * radius + 1, 2 * radius + 1)
    out = np.empty(x.shape, dtype=np.float64)
    for i, image in enumerate(x.astype(np.float64)):
        blurred = cv2.GaussianBlur(image, size, sigma, borderType=cv2.BORDER_REFLECT)
        out[i] = blurred.reshape(image.shape)
    return out[:, None]


def _max_distance(x, low, high, n, seed, **_):
    middle = (low + high) / 2.0
    return np.where(x < middle, high, low)[:, None].astype(np.float64)


BASELINES = {
    "zero": _zero,
    "black": _black,
    "constant": _constant,
    "uniform": _uniform,
    "gaussian": _gaussian,
    "blur": _blur,
    "max_distance": _max_distance,
}
_ALIASES = {
    "zeros": "zero",
    "uniform_noise": "uniform",
    "noise": "uniform",
    "gaussian_noise": "gaussian",
    "blurred": "blur",
    "maximum_distance": "max_distance",
    "max-distance": "max_distance",
}
_RANDOM = {"uniform", "gaussian"}


def is_random(baseline) -> bool:
    """Whether ``baseline`` names a random baseline (one that ``n_baselines`` draws average over)."""
    return isinstance(baseline, str) and _ALIASES.get(baseline.lower(), baseline.lower()) in _RANDOM


def uses_value_range(baseline) -> bool:
    """Whether the baseline depends on ``value_range``: ``black``, ``uniform``, ``gaussian`` (its
    clipping and default σ) and ``max_distance``; not zero, constant, blur, arrays or callables."""
    if not isinstance(baseline, str) or os.path.isdir(baseline):
        return False
    return _ALIASES.get(baseline.lower(), baseline.lower()) in {"black", "uniform", "gaussian", "max_distance"}


def _from_array(array: np.ndarray, x: np.ndarray, where: str) -> np.ndarray:
    example_rank = x.ndim - 1
    array = np.asarray(array)
    if not tf.as_dtype(array.dtype).is_floating and not np.issubdtype(array.dtype, np.integer):
        raise InvalidTypeError(f"{where} must hold numbers. " + received(f"{where}.dtype", str(array.dtype)))
    if array.ndim == example_rank:
        array = array[None, None]
    elif array.ndim == example_rank + 1:
        array = array[:, None]
    elif array.ndim != example_rank + 2:
        raise InvalidInputError(
            f"{where} must have shape {x.shape[1:]} (one baseline), (batch, *{x.shape[1:]}) "
            f"or (batch, draws, *{x.shape[1:]}). " + received(f"{where}.shape", array.shape)
        )
    if array.shape[2:] != x.shape[1:] or array.shape[0] not in (1, x.shape[0]):
        raise InvalidInputError(
            f"{where} does not match the inputs {x.shape}. " + received(f"{where}.shape", array.shape)
        )
    if not np.isfinite(array.astype(np.float64)).all():
        raise InvalidInputError(f"{where} contains NaN or Inf. " + received(f"{where}.shape", array.shape))
    return array.astype(np.float64)


def make_baselines(
    baseline: BaselineLike,
    x: np.ndarray,
    value_range: Tuple[float, float] = (0.0, 1.0),
    n_baselines: int = 1,
    seed: Optional[int] = 0,
    **options,
) -> BaselineSet:
    """Build the baselines of a batch ``x`` (``(N, …)``).

    Args:
        baseline: a name from :data:`BASELINES` (or alias), a number (constant baseline),
            an array/tensor, a callable ``x -> array`` (e.g. a trained or loaded baseline), or
            the folder of a saved baseline (``"saved_baselines/NAME"``, see
            :mod:`tfattr.baselines.saved`), or ``"shipped:NAME"`` for a baseline shipped with
            tfattr (:data:`tfattr.baselines.shipped.SHIPPED_BASELINES`).
        x: the validated inputs.
        value_range: ``(low, high)`` of the model's input space, used by ``black``,
            ``uniform``, ``gaussian`` (clipping) and ``max_distance``.
        n_baselines: draws of a random baseline (IG_noise's ``N``).
        seed: seed of the random draws (``None``: fresh entropy, not reproducible).
        options: ``value`` (constant), ``sigma`` (gaussian; default ``0.1·(high − low)``),
            ``blur_sigma`` (blur; default 5).

    Returns:
        A :class:`BaselineSet` of shape ``(N or 1, K, …)``.

    Example:
        >>> make_baselines("uniform", np.zeros((2, 8, 8, 3)), n_baselines=5, seed=1).array.shape
        (1, 5, 8, 8, 3)
    """
    low, high = value_range
    if isinstance(n_baselines, bool) or not isinstance(n_baselines, (int, np.integer)) or n_baselines < 1:
        raise InvalidInputError("`n_baselines` must be a positive integer. " + received("n_baselines", n_baselines))
    if isinstance(baseline, str) and baseline.startswith("shipped:"):  # a baseline shipped with tfattr, by name
        from tfattr.baselines.shipped import resolve

        baseline = resolve(baseline)
    if isinstance(baseline, str) and _ALIASES.get(baseline.lower(), baseline.lower()) not in BASELINES:
        from tfattr.baselines.saved import recover_interrupted_save

        recover_interrupted_save(baseline)  # a save killed between its two renames left the folder aside
    if isinstance(baseline, str) and os.path.isdir(baseline):  # a saved baseline folder
        from tfattr.baselines.saved import cached_load

        baseline = cached_load(baseline)  # raises if the folder has no metadata.json
    if isinstance(baseline, str):
        key = _ALIASES.get(baseline.lower(), baseline.lower())
        if key not in BASELINES:
            raise InvalidInputError(
                f"Unknown baseline; expected one of {sorted(BASELINES)}, a number, an array, a "
                "callable, the folder of a saved baseline or 'shipped:NAME'. " + received("baseline", baseline)
            )
        draws = int(n_baselines) if key in _RANDOM else 1
        _check_draw_count(draws, x)
        array = BASELINES[key](x, low, high, draws, seed, **options)
        name = key if draws == 1 else f"{key} x{draws}"
        if key == "gaussian":
            return BaselineSet(array, name, relative=True, clip=(low, high))
        return BaselineSet(array, name)
    if isinstance(baseline, (bool, np.bool_)):
        raise InvalidTypeError("`baseline` must be a name, a number, an array or a callable. "
                               + received("baseline", baseline))
    if isinstance(baseline, (int, float, np.integer, np.floating)):
        return BaselineSet(np.full((1, 1) + x.shape[1:], float(baseline)), f"constant {float(baseline):g}")
    if isinstance(baseline, (tf.Tensor, tf.Variable)):
        baseline = baseline.numpy()
    if isinstance(baseline, np.ndarray):
        return BaselineSet(_from_array(baseline, x, "`baseline`"), "array")
    if callable(baseline):
        produced = baseline(x)
        if isinstance(produced, (tf.Tensor, tf.Variable)):
            produced = produced.numpy()
        name = getattr(baseline, "__name__", type(baseline).__name__)
        return BaselineSet(_from_array(np.asarray(produced), x, "the output of the `baseline` callable"), name)
    raise InvalidTypeError(
        "`baseline` must be a name, a number, an array, a tensor or a callable. "
        + received("type(baseline)", type(baseline).__name__)
    )


#: the most bytes the draws of a random baseline may take (float64 while drawn): 8 GiB
MAX_DRAW_BYTES = 8 << 30


def _check_draw_count(draws: int, x: np.ndarray) -> None:
    """Refuse a draw count whose rows (one per example and draw, :data:`MAX_ROWS`) or arrays
    (``draws × |x| × 8`` bytes) could never be held, before anything is drawn."""
    size = int(np.prod(x.shape[1:], dtype=np.int64)) * max(int(x.shape[0]), 1)
    if draws * max(int(x.shape[0]), 1) > MAX_ROWS or draws * size * 8 > MAX_DRAW_BYTES:
        raise InvalidInputError(
            f"`n_baselines` draws of {tuple(x.shape)} inputs would take more than {MAX_ROWS} rows or "
            f"{MAX_DRAW_BYTES >> 30} GiB; draw fewer or split the batch. " + received("n_baselines", draws))


def make_baselines_per_input(baseline, layout, x: np.ndarray, value_range: Tuple[float, float] = (0.0, 1.0),
                             n_baselines: int = 1, seed: Optional[int] = 0, **options) -> BaselineSet:
    """Baselines of a model with several inputs, packed as the inputs are (``x`` is ``(N, D)``,
    :class:`~tfattr.core.structure.InputLayout` ``layout``).

    ``baseline`` is one value for every input (a name, a number or a callable, applied to each
    input alone) or one per input: a list/tuple in the model's input order or a dict keyed by
    the input names (``None`` for a fixed input). Random draws of input ``i`` use their own
    seed (``seed`` and ``i``). Inputs with one baseline and inputs with ``K`` draws pair every
    draw with the single baseline; baselines relative to the input (``"gaussian"``) mixed with
    absolute ones are made absolute.
    """
    names = layout.names
    if isinstance(baseline, dict):
        unknown = sorted(set(map(str, baseline)) - set(names))
        if unknown:
            raise InvalidInputError(f"`baseline` keys must be model input names {list(names)}. "
                                    + received("baseline.keys()", sorted(map(str, baseline))))
        values = [baseline.get(name) for name in names]
    elif isinstance(baseline, (list, tuple)):
        if len(baseline) != len(names):
            raise InvalidInputError(
                f"`baseline` for a model with {len(names)} inputs must be one value for all or one per input "
                f"{list(names)}. " + received("len(baseline)", len(baseline)))
        values = list(baseline)
    elif isinstance(baseline, (np.ndarray, tf.Tensor, tf.Variable)):
        raise InvalidInputError(
            f"An array `baseline` for a model with {len(names)} inputs must be given per input: a list or a dict "
            f"keyed {list(names)}. " + received("baseline.shape", tuple(np.shape(baseline))))
    else:
        values = [baseline] * len(names)
    parts = layout.unpack_host(np.asarray(x, np.float64))
    sets = []
    for i, (value, part, fixed) in enumerate(zip(values, parts, layout.fixed)):
        if fixed:
            sets.append(None)
            continue
        if value is None:
            raise InvalidInputError(f"`baseline` of input {names[i]!r} is None; only fixed inputs may go without "
                                    "one. " + received("baseline", baseline))
        sets.append(make_baselines(value, part, value_range=value_range, n_baselines=n_baselines,
                                   seed=None if seed is None else int(seed) * 1000003 + i, **options))
    given = [s for s in sets if s is not None]
    count = max(s.count for s in given)
    relative = {(s.relative, s.clip) for s in given}
    absolute = len(relative) > 1 or any(s.scale is not None for s in given)
    rows = len(x) if (absolute or any(s.per_example for s in given)) else 1
    packed = []
    for s, part, columns in zip(sets, parts, layout.columns):
        if s is None:  # a fixed input (the engine starts it at x): its packed columns
            packed.append(np.zeros((rows, count, columns)))
            continue
        array = s.materialize(part) if absolute else s.array
        if array.shape[1] not in (1, count):
            raise InvalidInputError(
                "Per-input baselines must have one baseline or the same number of draws each. "
                + received("baseline draws", [t.count for t in given]))
        packed.append(np.broadcast_to(array, (rows, count) + array.shape[2:]))
    flat = np.concatenate([p.reshape(rows * count, -1) for p in packed], axis=1).reshape(rows, count, -1)
    name = "/".join(s.name if s is not None else "fixed" for s in sets)
    first = given[0]
    return BaselineSet(flat, name, relative=not absolute and first.relative, clip=None if absolute else first.clip)
