"""Perturbation methods on the engine's forward rows: Occlusion, FeatureAblation and RISE.

Each method is a list of :class:`~tfattr.core.engine.ForwardRows` (one perturbed copy of an
example per row), a builder that makes a chunk of perturbed copies on the device from the
rows' indices (:class:`~tfattr.core.engine.ChunkRows`) and a combination of the rows' scores:

* Occlusion and FeatureAblation: row ``r`` replaces a window / a group of features by the
  baseline; its contribution ``(f(x) − f(x_r)) · v_r`` (``v_r`` the replaced positions) is
  summed per example (:func:`score_drop`, the row's weight carries ``f(x)``), and occlusion
  divides each position's sum by the number of windows covering it (captum's ``Occlusion``).
* RISE: row ``r`` is the input times a random smooth mask ``m_r`` drawn from the seed and the
  row's position among its example's rows; ``Σ_r f(x ⊙ m_r) m_r / (N p)`` is the engine's
  ``"weighted"`` combination with weight ``1 / (N p)``.

Nothing of size rows × input is ever held: a chunk builds its own rows' perturbations.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import tensorflow as tf

from tfattr.core import autotune, checks
from tfattr.core.checks import Option
from tfattr.core.engine import ChunkRows, ForwardEngine, ForwardRows
from tfattr.core.inputs import exact_integers
from tfattr.core.random import row_uniform
from tfattr.core.targets import Targets
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import AttributionMethod, Explained, SelectsValues, call_layout

__all__ = ["Occlusion", "FeatureAblation", "RISE", "score_drop", "occlusion_windows", "rise_mask_tables",
           "rise_masks"]


# -- shared pieces ---------------------------------------------------------------------------------

def score_drop(scores, vectors, weight):
    """``(f(x) − s_r) · v_r``: a row's weight holds its example's ``f(x)`` (float64), so the
    difference is taken before it is multiplied (no cancellation between two large sums)."""
    drop = tf.cast(weight - tf.cast(scores, tf.float64), vectors.dtype)
    return vectors * tf.reshape(drop, [-1] + [1] * (vectors.shape.rank - 1))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _check_baseline(name: str, value) -> None:
    """A finite number, an array of finite numbers, or (several inputs) a list/tuple/dict of them."""
    if isinstance(value, dict):
        for item in value.values():
            _check_baseline(name, item)
        return
    if isinstance(value, (list, tuple)) and any(isinstance(v, (np.ndarray, tf.Tensor, list, tuple, dict))
                                                for v in value):
        for item in value:
            _check_baseline(name, item)
        return
    if value is None or isinstance(value, (bool, np.bool_, str)) or callable(value):
        raise InvalidTypeError(f"`{name}` must be a number or an array of numbers (one per input for several "
                               "inputs). " + received(name, value))
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidTypeError(f"`{name}` must be a number or an array of numbers. " + received(name, value)) from None
    if array.dtype == object or not np.all(np.isfinite(array)):
        raise InvalidInputError(f"`{name}` must be finite. " + received(name, value))


def _broadcast(name: str, value, shape: Tuple[int, ...]) -> np.ndarray:
    """``value`` (a number or an array broadcastable to ``shape``) broadcast to ``shape`` in float64."""
    array = np.asarray(value.numpy() if isinstance(value, tf.Tensor) else value)
    try:
        return np.broadcast_to(array, shape)
    except ValueError:
        one = "(N" + ", 1" * (len(shape) - 1) + ")"
        raise InvalidInputError(f"`{name}` must be broadcastable to the inputs' shape {shape} (a number, one value "
                                f"per example as {one}, a shared array or one array per example; a 1-D array is "
                                "per last axis, numpy's broadcasting). "
                                + received(f"{name}.shape", array.shape)) from None


def _per_input(name: str, value, layout) -> list:
    """One entry per input of ``layout`` from a value given once (applies to all), or as a
    list/tuple (in order) or a dict (by name)."""
    if isinstance(value, dict):
        missing = [n for n in layout.names if n not in value]
        if missing or len(value) != len(layout.names):
            raise InvalidInputError(f"`{name}` as a dict needs one entry per input {list(layout.names)}. "
                                    + received(f"{name} keys", sorted(value)))
        return [value[n] for n in layout.names]
    if isinstance(value, (list, tuple)):
        if len(value) != len(layout.names):
            raise InvalidInputError(f"`{name}` as a list needs one entry per input {list(layout.names)}. "
                                    + received(f"len({name})", len(value)))
        return list(value)
    return [value] * len(layout.names)


def _baselines(name: str, value, x: tf.Tensor, layout) -> np.ndarray:
    """The call's baseline per example, ``(N, …)`` like the (packed) inputs, float64."""
    num = int(x.shape[0])
    if layout is None:
        return _broadcast(name, value, (num,) + tuple(int(d) for d in x.shape[1:])).astype(np.float64)
    parts = []
    for item, shape, input_name in zip(_per_input(name, value, layout), layout.shapes, layout.names):
        if isinstance(item, (list, tuple)) and not isinstance(item, np.ndarray):
            item = np.asarray(item, np.float64)
        parts.append(_broadcast(f"{name}[{input_name!r}]", item, (num,) + tuple(shape)))
    return layout.pack_host(parts).astype(np.float64)


class _PerturbationMethod(AttributionMethod):
    """What the perturbation methods share: a :class:`ForwardEngine` per target kind, ``f(x)``
    and the count of forward passes."""

    several_inputs = False

    def validate(self, inputs, config, name: str = "inputs"):
        if self.spec.inputs is not None and not self.several_inputs:
            raise InvalidTypeError(
                f"{type(self).__name__} explains models with one input; this model has inputs "
                f"{list(self.spec.inputs.names)}. Use FeatureAblation (one feature mask per input). "
                + received("model.inputs", list(self.spec.inputs.names)))
        images = super().validate(inputs, config, name)
        dtype = self.spec.input_dtype
        if self.spec.inputs is None and dtype is not None and not tf.as_dtype(dtype).is_floating:
            # a model taking integers (ids): the values are perturbed as ids, never truncated (1.7 → 1)
            exact_integers(np.asarray(images.array), tf.as_dtype(dtype).name, name, "input")
        return images

    def forward_engine(self, targets: Targets, config) -> ForwardEngine:
        """A cached :class:`ForwardEngine` scoring ``targets`` (callables get their own)."""
        key = ("forward", targets.score_fn, targets.output)
        with self._engine_lock:
            engine = self._engines.get(key)
            if engine is None:
                if targets.score_fn is not None:  # keep one callable engine at a time
                    for old in [k for k in self._engines if k[0] == "forward" and k[1] is not None]:
                        del self._engines[old]
                engine = ForwardEngine(self.forward_model, score_fn=targets.scorer)
                self._engines[key] = engine
        engine.batch_size = config["batch_size"]
        engine.parallel_chunks = int(config["parallel_chunks"])
        engine.verbose = config["verbose"]
        return engine

    def input_scores(self, x, targets: Targets, fx, config) -> Tuple[np.ndarray, int]:
        """``(f(x), forward passes spent on it)``: the scores the target resolution computed
        (``target=None`` or a callable), else one forward pass per ``batch_size`` examples."""
        passes = math.ceil(int(x.shape[0]) / autotune.forward_size(config["batch_size"]))
        if fx is None:
            fx = self.scores(x, targets, config["batch_size"], layout=call_layout(config))
        return np.asarray(fx, np.float64), passes

    def run_rows(self, x, targets: Targets, rows: ForwardRows, build, combine, context, config):
        indices = targets.indices if targets.indices is not None else np.zeros(int(x.shape[0]), np.int32)
        return self.forward_engine(targets, config).run(x, rows, build, indices, combine=combine, context=context,
                                                        layout=call_layout(config))


# -- Occlusion --------------------------------------------------------------------------------------

def _window_check(name: str, value) -> None:
    """A positive integer, or a non-empty tuple/list of positive integers."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    if not items or not all(checks.is_int(v) and v >= 1 for v in items):
        raise InvalidInputError(f"`{name}` must be a positive integer or a tuple of positive integers. "
                                + received(name, value))


def occlusion_windows(shape: Tuple[int, ...], window, strides) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(window, strides, counts)`` per axis of one example of ``shape``, as captum's Occlusion.

    ``window`` lists the first axes' sizes (an int: the first axis); missing trailing axes are
    covered whole. ``strides``: an int for every listed axis, or one per listed axis (missing
    ones: 1, captum's default). Along an axis of size ``n`` the window starts at ``0, s, 2s, …``,
    ``⌈(n − k)/s⌉ + 1`` positions, the last one cut at the edge (captum's shift counts), so every
    position is covered.
    """
    window = tuple(window) if isinstance(window, (tuple, list)) else (window,)
    rank = len(shape)
    if len(window) > rank:
        raise InvalidInputError(f"`window` has {len(window)} axes; the inputs have {rank} per example {shape}. "
                                + received("window", window))
    sizes = np.array(list(window) + list(shape[len(window):]), np.int64)
    if np.any(sizes > np.array(shape)):
        raise InvalidInputError(f"`window` must fit in one example of shape {shape}. " + received("window", window))
    if isinstance(strides, (tuple, list)):
        if len(strides) > len(window):
            raise InvalidInputError(f"`strides` has more axes than `window` ({len(window)}). "
                                    + received("strides", strides))
        steps = list(strides) + [1] * (rank - len(strides))
    else:
        steps = [strides] * len(window) + [1] * (rank - len(window))
    steps = np.array(steps, np.int64)
    shape_array = np.array(shape, np.int64)
    room = shape_array - sizes
    if np.any((room > 0) & (steps > sizes)):
        raise InvalidInputError("A stride cannot exceed the window along an axis the window does not cover "
                                "whole (positions would be skipped). " + received("strides", strides))
    counts = np.where(room > 0, -(-room // steps) + 1, 1)
    return sizes, steps, counts


def _covering_counts(shape, sizes, steps, counts) -> np.ndarray:
    """How many windows cover each position of one example."""
    total = np.ones(shape)
    for axis, (n, k, s, c) in enumerate(zip(shape, sizes, steps, counts)):
        along = np.zeros(n)
        for j in range(int(c)):
            along[j * s: j * s + k] += 1
        total = total * along.reshape([1] * axis + [n] + [1] * (len(shape) - axis - 1))
    return total


def _occluded(x, rows: ChunkRows):
    """Row ``p`` of an example: its ``p``-th window (last axis fastest) set to the baseline."""
    shape = [int(d) for d in x.shape[1:]]
    rank = len(shape)
    header = rows.context[: 3 * rank]
    sizes = tf.cast(header[:rank], tf.int32)
    steps = tf.cast(header[rank: 2 * rank], tf.int32)
    counts = tf.cast(header[2 * rank:], tf.int32)
    remaining = rows.position
    inside = None
    for axis in reversed(range(rank)):
        index = remaining % counts[axis]
        remaining = remaining // counts[axis]
        start = (index * steps[axis])[:, None]
        positions = tf.range(shape[axis])[None, :]
        along = (positions >= start) & (positions < start + sizes[axis])
        along = tf.reshape(along, [-1] + [1] * axis + [shape[axis]] + [1] * (rank - axis - 1))
        inside = along if inside is None else inside & along
    inside = inside & tf.ones([1] + shape, tf.bool)  # every axis present
    baselines = tf.reshape(tf.cast(rows.context[3 * rank:], x.dtype), [-1] + shape)
    points = tf.where(inside, tf.gather(baselines, rows.example), tf.gather(x, rows.example))
    return points, tf.cast(inside, x.dtype)


class Occlusion(_PerturbationMethod):
    """Occlusion (Zeiler & Fergus 2014) with captum's semantics: slide a window over the input,
    replace it by ``baseline``, and give each position the mean drop of the score over the
    windows that cover it.

    For window positions ``w`` (along each axis ``0, s, 2s, …``, ``⌈(n − k)/s⌉ + 1`` of them,
    the last cut at the edge, as captum's shift counts), ``A_i = Σ_{w ∋ i} (f(x) − f(x_w)) /
    #{w ∋ i}``, where ``x_w`` is ``x`` with window ``w`` set to the baseline. Every window of every
    example is one forward row of the engine: ``batch_size`` rows per model call (captum's
    ``perturbations_per_eval``), built on the device from the row's index.

    Options:
        window: the window's size along the first axes of one example: ``(15, 15)`` covers every
            channel of an ``(H, W, C)`` image (as ``(15, 15, C)``); ``(15, 15, 1)`` occludes one
            channel at a time; an int is the first axis (a tabular row's columns). Axes not listed
            are covered whole.
        strides: the step between window positions: an int for every listed axis or one per
            listed axis (not listed: 1, captum's default); at most the window along an axis it
            does not cover whole.
        baseline: the replacement value: a number, or an array broadcastable to the inputs
            ``(N, …)`` (one per example as ``(N, 1, 1, 1)``, shared, per channel ``(C,)``; a 1-D
            array is always per channel, numpy's broadcasting, even when its length is ``N``).
        batch_size, verbose, parallel_chunks, output: see :class:`~tfattr.methods.base.AttributionMethod`.

    The result's ``info`` holds ``forward_passes`` (model calls: ``⌈N · windows / batch_size⌉`` for
    the windows plus the passes for ``f(x)``), ``windows`` (per example) and ``rows``.

    Example:
        >>> Occlusion(model, window=(8, 8), strides=4).attribute(images, target=3).attributions
    """

    name = "occlusion"
    options = (
        Option("window", (15, 15), _window_check),
        Option("strides", (8, 8), _window_check),
        Option("baseline", 0, _check_baseline),
    )

    def check_combination(self, config) -> None:
        window, strides = config["window"], config["strides"]
        if isinstance(strides, (tuple, list)) and len(strides) > (len(window) if isinstance(window, (tuple, list))
                                                                   else 1):
            raise InvalidInputError("`strides` has more axes than `window`. " + received("strides", strides))

    def _explain(self, x, targets, fx, config) -> Explained:
        shape = tuple(int(d) for d in x.shape[1:])
        sizes, steps, counts = occlusion_windows(shape, config["window"], config["strides"])
        windows = int(np.prod(counts))
        num = int(x.shape[0])
        fx, fx_passes = self.input_scores(x, targets, fx, config)
        baselines = _baselines("baseline", config["baseline"], x, None)
        context = np.concatenate([sizes, steps, counts, baselines.ravel()]).astype(np.float64)
        rows = ForwardRows.repeat(num, windows, weight=None)
        rows.weight = fx[rows.example]
        result = self.run_rows(x, targets, rows, _occluded, score_drop, context, config)
        attributions = result.sums / _covering_counts(shape, sizes, steps, counts)[None]
        info = {"forward_passes": result.chunks + fx_passes, "windows": windows, "rows": len(rows),
                "window": tuple(int(v) for v in sizes), "strides": tuple(int(v) for v in steps)}
        return Explained(attributions=attributions, scores=fx, info=info)

    def describe(self, config) -> str:
        return f"occlusion(window={config['window']}, strides={config['strides']})"


# -- FeatureAblation --------------------------------------------------------------------------------

def _check_mask(name: str, value) -> None:
    """``None``, an integer array, or (several inputs) a list/tuple/dict of integer arrays or ``None``."""
    if value is None:
        return
    if isinstance(value, dict):
        for item in value.values():
            _check_mask(name, item)
        return
    if isinstance(value, (list, tuple)) and any(v is None or isinstance(v, (np.ndarray, tf.Tensor, list, tuple))
                                                for v in value):
        for item in value:
            _check_mask(name, item)
        return
    if isinstance(value, (str, bool, np.bool_)) or callable(value):
        raise InvalidTypeError(f"`{name}` must be an integer array (a group id per feature). " + received(name, value))
    array = np.asarray(value.numpy() if isinstance(value, tf.Tensor) else value)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise InvalidTypeError(f"`{name}` must hold integers (a group id per feature). "
                               + received(f"{name}.dtype", str(array.dtype)))


def _feature_groups(mask, x, layout) -> np.ndarray:
    """``(N, D)`` float64: each example's group of each (packed) position, numbered ``0 … G_e − 1``
    in increasing order of the given ids; ``−1`` for positions never ablated (fixed inputs)."""
    num = int(x.shape[0])
    if layout is None:
        shape = (num,) + tuple(int(d) for d in x.shape[1:])
        if mask is None:
            ids = np.broadcast_to(np.arange(int(np.prod(shape[1:])), dtype=np.int64), (num, int(np.prod(shape[1:]))))
        else:
            ids = _broadcast("feature_mask", mask, shape).reshape(num, -1).astype(np.int64)
        fixed = np.zeros(ids.shape[1], bool)
    else:
        if any(layout.split):
            raise InvalidInputError("FeatureAblation cannot ablate integer inputs beyond float64's exact range "
                                    "(2^53). " + received("inputs dtypes", list(layout.dtypes)))
        if layout.kind == "single" and mask is not None and not isinstance(mask, (list, tuple, dict)):
            mask = [mask]  # one (integer) input: its mask as given
        if mask is not None and not isinstance(mask, (list, tuple, dict)):
            raise InvalidInputError("For a model with several inputs, `feature_mask` is one mask per input (a list "
                                    "or a dict; None for one group per value). "
                                    + received("feature_mask", type(mask).__name__))
        items = [None] * len(layout.names) if mask is None else _per_input("feature_mask", mask, layout)
        parts, offset = [], 0
        for item, shape, input_name in zip(items, layout.shapes, layout.names):
            size = int(np.prod(shape, dtype=np.int64))
            if item is None:  # one group per value, numbered after every given id
                part = np.broadcast_to(np.arange(size, dtype=np.int64), (num, size)) + offset
                offset += size
            else:
                part = _broadcast(f"feature_mask[{input_name!r}]", item, (num,) + tuple(shape)).reshape(num, -1)
                part = part.astype(np.int64)
            parts.append(part)
        given = [p for p, item in zip(parts, items) if item is not None]
        if given and any(item is None for item in items):  # keep the generated ids apart from the given ones
            top = max(int(p.max()) for p in given) + 1
            parts = [p + top if item is None else p for p, item in zip(parts, items)]
        ids = np.concatenate(parts, axis=1)
        fixed = layout.fixed_mask()
    groups = np.full(ids.shape, -1.0)
    for e in range(num):
        _, dense = np.unique(ids[e, ~fixed], return_inverse=True)
        groups[e, ~fixed] = dense
    return groups


def _ablated(x, rows: ChunkRows):
    """Row ``p`` of an example: its ``p``-th feature group set to the baseline."""
    shape = [int(d) for d in x.shape[1:]]
    size = int(np.prod(shape))
    num = tf.shape(x)[0]
    parts = tf.reshape(rows.context, [2, num, size])
    groups = tf.gather(parts[0], rows.example)
    inside = tf.reshape(tf.equal(groups, tf.cast(rows.position, tf.float64)[:, None]), [-1] + shape)
    baselines = tf.reshape(tf.cast(tf.gather(parts[1], rows.example), x.dtype), [-1] + shape)
    points = tf.where(inside, baselines, tf.gather(x, rows.example))
    return points, tf.cast(inside, x.dtype)


class FeatureAblation(SelectsValues, _PerturbationMethod):
    """Feature ablation (captum's ``FeatureAblation``): replace a group of features by the baseline
    and give every feature of the group the drop of the score, ``A_i = f(x) − f(x_{g(i)})`` where
    ``x_g`` is ``x`` with group ``g`` set to the baseline.

    Each group of each example is one forward row of the engine. Cost: one row per group per
    example; the default mask (every scalar its own group) is one forward pass per value of the
    input: ``H·W·C`` rows per image (150,528 for 224×224×3) — give superpixels or columns instead.

    Integer inputs (token ids), alone or beside others, are accepted: a group of them is replaced
    by the baseline's integers (e.g. the padding id), never interpolated.

    Options:
        feature_mask: integer group ids, broadcastable to the inputs ``(N, …)`` (shared by every
            example, e.g. ``(H, W, 1)`` groups pixels across channels, or one mask per example);
            features with the same id are ablated together, and each example's distinct ids are its
            rows. ``None``: every scalar its own group. For a model with several inputs: one mask
            per input (a list or a dict; ``None`` entries: every value its own group); an id used in
            several inputs' masks is one group across them (captum's cross-tensor groups).
        baseline: the replacement value: a number, or an array broadcastable to the inputs; for
            several inputs one per input (list or dict), e.g. the padding token id of a token input.
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod`; fixed inputs are never ablated
            (attribution 0).

    The result's ``info`` holds ``forward_passes``, ``groups`` (per example) and ``rows``.

    Example:
        >>> columns = np.array([0, 0, 1, 1, 2])  # 5 tabular features in 3 groups
        >>> FeatureAblation(model, feature_mask=columns).attribute(table, target=0).attributions
    """

    name = "feature_ablation"
    several_inputs = True
    options = (
        Option("feature_mask", None, _check_mask),
        Option("baseline", 0, _check_baseline),
    )

    def _explain(self, x, targets, fx, config) -> Explained:
        layout = call_layout(config)
        num = int(x.shape[0])
        groups = _feature_groups(config["feature_mask"], x, layout)
        per_example = (groups.max(axis=1) + 1).astype(np.int64)
        fx, fx_passes = self.input_scores(x, targets, fx, config)
        baselines = _baselines("baseline", config["baseline"], x, layout).reshape(num, -1)
        context = np.concatenate([groups.ravel(), baselines.ravel()])
        rows = ForwardRows(np.repeat(np.arange(num), per_example))
        rows.weight = fx[rows.example]
        result = self.run_rows(x, targets, rows, _ablated, score_drop, context, config)
        attributions = result.sums if result.sums.ndim > 1 else np.zeros(tuple(x.shape))
        info = {"forward_passes": result.chunks + fx_passes, "groups": per_example, "rows": len(rows)}
        return Explained(attributions=attributions.reshape(tuple(x.shape)), scores=fx, info=info)


# -- RISE -------------------------------------------------------------------------------------------

def _grid_check(name: str, value) -> None:
    checks.positive_int(name, value)


def _keep_probability(name: str, value) -> None:
    if not (_is_number(value) and 0 < value <= 1):
        raise InvalidInputError(f"`{name}` must be a probability in (0, 1]. " + received(name, value))


def _interpolation(cells: int, upsampled: int, size: int, cell: int) -> np.ndarray:
    """``(cell, size, cells)``: for each shift ``s``, the linear map from a row of ``cells`` grid
    values to pixels ``s … s + size − 1`` of their bilinear upsampling to ``upsampled`` pixels, as
    ``skimage.transform.resize(order=1, mode="reflect", anti_aliasing=False)`` (the RISE
    authors' code): pixel centres ``u = (t + ½)·cells/upsampled − ½``, mirrored about the end
    cells' centres."""
    t = np.arange(upsampled)
    u = (t + 0.5) * cells / upsampled - 0.5
    u = np.where(u < 0, -u, u)
    u = np.where(u > cells - 1, 2 * (cells - 1) - u, u)
    low = np.floor(u).astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    fraction = u - low
    full = np.zeros((upsampled, cells))
    np.add.at(full, (t, low), 1 - fraction)
    np.add.at(full, (t, high), fraction)
    return np.stack([full[s: s + size] for s in range(cell)])


def rise_mask_tables(height: int, width: int, grid: int) -> Tuple[np.ndarray, np.ndarray]:
    """The vertical and horizontal interpolation tables of RISE's masks for ``height × width``
    inputs: cells of ``⌈H/grid⌉ × ⌈W/grid⌉`` pixels, the grid upsampled to ``(grid + 1)`` cells
    and cropped at a shift in ``[0, cell)`` (Petsiuk et al. 2018, §3.2; the authors' code)."""
    cell_h, cell_w = -(-height // grid), -(-width // grid)
    return (_interpolation(grid, (grid + 1) * cell_h, height, cell_h),
            _interpolation(grid, (grid + 1) * cell_w, width, cell_w))


def _rise_context_masks(context, position, height, width, dtype):
    """The masks of rows at ``position`` from a RISE context ``[seed, p, grid, cell_h, cell_w,
    vertical table, horizontal table, …]``; returns ``(masks (B, H, W), rest of the context)``."""
    seed = tf.cast(context[0], tf.int64)
    keep, grid = context[1], tf.cast(context[2], tf.int32)
    cell_h, cell_w = tf.cast(context[3], tf.int32), tf.cast(context[4], tf.int32)
    vertical_size = cell_h * height * grid
    horizontal_size = cell_w * width * grid
    vertical = tf.reshape(tf.cast(context[5: 5 + vertical_size], dtype), tf.stack([cell_h, height, grid]))
    horizontal = tf.reshape(tf.cast(context[5 + vertical_size: 5 + vertical_size + horizontal_size], dtype),
                            tf.stack([cell_w, width, grid]))
    draws = row_uniform(seed, position, tf.reshape(grid * grid + 2, [1]), dtype=tf.float64)
    cells = tf.reshape(tf.cast(draws[:, : grid * grid] < keep, dtype), tf.stack([-1, grid, grid]))
    shift_y = tf.minimum(tf.cast(tf.floor(draws[:, grid * grid] * tf.cast(cell_h, tf.float64)), tf.int32), cell_h - 1)
    shift_x = tf.minimum(tf.cast(tf.floor(draws[:, grid * grid + 1] * tf.cast(cell_w, tf.float64)), tf.int32),
                         cell_w - 1)
    masks = tf.matmul(tf.matmul(tf.gather(vertical, shift_y), cells), tf.gather(horizontal, shift_x), transpose_b=True)
    return tf.reshape(masks, [-1, height, width]), context[5 + vertical_size + horizontal_size:]


def rise_masks(seed: int, positions, height: int, width: int, grid: int = 7, p: float = 0.5) -> np.ndarray:
    """RISE's masks ``(len(positions), H, W)`` (float64) of the rows at ``positions`` for ``seed``:
    the masks :class:`RISE` draws (to inspect them, or reproduce a map)."""
    vertical, horizontal = rise_mask_tables(height, width, grid)
    context = tf.constant(np.concatenate([[seed, p, grid, vertical.shape[0], horizontal.shape[0]],
                                          vertical.ravel(), horizontal.ravel()]), tf.float64)
    masks, _ = _rise_context_masks(context, tf.constant(np.asarray(positions, np.int32)), height, width, tf.float64)
    return masks.numpy()


def _masked(x, rows: ChunkRows):
    """Row ``p`` of an example: ``x ⊙ m_p + b ⊙ (1 − m_p)`` with RISE's mask ``p`` (drawn from the
    seed and ``p``, so an example gets the same masks alone or in a batch)."""
    height, width = int(x.shape[1]), int(x.shape[2])
    masks, rest = _rise_context_masks(rows.context, rows.position, height, width, x.dtype)
    baselines = tf.reshape(tf.cast(rest, x.dtype), [-1] + [int(d) for d in x.shape[1:]])
    inputs, base = tf.gather(x, rows.example), tf.gather(baselines, rows.example)
    expanded = tf.reshape(masks, [-1, height, width] + [1] * (x.shape.rank - 3))
    return base + expanded * (inputs - base), masks


class RISE(_PerturbationMethod):
    """RISE (Petsiuk, Das & Saenko 2018): the score of the input under random smooth masks,
    averaged with the masks as weights, ``S = Σ_m f(x ⊙ m + b (1 − m)) · m / (N p)`` (eq. 6 with
    the Monte-Carlo sum, ``N = n_masks``; ``b`` the baseline, 0 in the paper).

    Each mask is a ``grid × grid`` array of cells kept with probability ``p``, upsampled
    bilinearly to ``(grid + 1)`` cells of ``⌈H/grid⌉ × ⌈W/grid⌉`` pixels and cropped to ``H × W``
    at a random shift in ``[0, cell)`` along each axis (the authors' code, with skimage's
    ``resize(order=1, mode="reflect")``). A mask is drawn on the device from ``seed`` and its index
    (:func:`~tfattr.core.random.row_uniform`) inside the chunk that uses it: memory holds one
    chunk's masks, never ``n_masks × H × W``; every example gets the same masks, alone or in a
    batch, and the map does not depend on ``batch_size`` (beyond float32 summation order).

    Differences from xplique's ``Rise``: xplique divides by ``Σ_m m`` per pixel (+1e-4) instead
    of ``N p``, upsamples with TensorFlow's edge-clamped bilinear resize to ``⌊H(1 + 1/grid)⌋``
    pixels and draws one crop offset per batch of masks (here one per mask, as the paper).

    Options:
        n_masks: masks per example (forward passes: ``n_masks`` per example).
        grid: cells per side of the low-resolution mask.
        p: the probability of keeping a cell (in ``(0, 1]``).
        seed: the masks' seed (an integer; ``None`` draws a fresh one on each call).
        baseline: what a masked pixel becomes: a number or an array broadcastable to the inputs.
        batch_size, verbose, parallel_chunks, output: see :class:`~tfattr.methods.base.AttributionMethod`.

    Returns ``(N, H, W)`` maps; ``info`` holds ``forward_passes``, ``n_masks`` and the ``seed`` used.

    Example:
        >>> RISE(model, n_masks=2000, grid=7).attribute(images, target=3).attributions
    """

    name = "rise"
    options = (
        Option("n_masks", 4000, checks.positive_int),
        Option("grid", 7, _grid_check),
        Option("p", 0.5, _keep_probability),
        Option("seed", 0, checks.seed),
        Option("baseline", 0, _check_baseline),
    )

    def _explain(self, x, targets, fx, config) -> Explained:
        if x.shape.rank < 3:
            raise InvalidInputError("RISE masks images: inputs of shape (N, H, W, …). "
                                    + received("inputs.shape", tuple(x.shape)))
        num, height, width = int(x.shape[0]), int(x.shape[1]), int(x.shape[2])
        grid, n_masks, keep = int(config["grid"]), int(config["n_masks"]), float(config["p"])
        if grid > min(height, width):
            raise InvalidInputError(f"`grid` must be at most the image's side ({min(height, width)}). "
                                    + received("grid", grid))
        seed = config["seed"]
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        vertical, horizontal = rise_mask_tables(height, width, grid)
        baselines = _baselines("baseline", config["baseline"], x, None)
        context = np.concatenate([[seed, keep, grid, vertical.shape[0], horizontal.shape[0]], vertical.ravel(),
                                  horizontal.ravel(), baselines.ravel()]).astype(np.float64)
        rows = ForwardRows.repeat(num, n_masks, weight=np.full(n_masks, 1.0 / (n_masks * keep)))
        result = self.run_rows(x, targets, rows, _masked, "weighted", context, config)
        info = {"forward_passes": result.chunks, "n_masks": n_masks, "seed": seed, "rows": len(rows)}
        return Explained(attributions=result.sums, scores=fx, info=info)

    def describe(self, config) -> str:
        return f"rise(n_masks={config['n_masks']}, grid={config['grid']}, p={config['p']})"
