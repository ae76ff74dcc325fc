"""Coalitions of feature groups on the engine's forward rows: what KernelSHAP, Shapley value
sampling and LIME share.

A *feature mask* splits each example's values into ``M`` groups (superpixels, tabular columns,
tokens, or every value alone). A *coalition* ``z ∈ {0, 1}^M`` is one forward row: the input
``x`` where ``z_g = 1`` and the baseline where ``z_g = 0``. The coalitions of a call are a
table of bits, packed 52 to a float64 (exact integers), handed to the compiled chunk as the
forward run's context with the mask and the baseline; each chunk unpacks its own rows'
coalitions on the device (:func:`coalition_points`), so the host never builds the perturbed
inputs and the device never holds more than a chunk of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import tensorflow as tf

from tfattr.baselines.registry import make_baselines, make_baselines_per_input
from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import MAX_ROWS, ForwardEngine, ForwardRows
from tfattr.core.ranges import resolve_value_range
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import AttributionMethod, SelectsValues, call_layout

__all__ = ["GroupMasks", "group_masks", "pack_coalitions", "coalition_points", "CoalitionMethod",
           "feature_mask_check", "check_coalitions", "prefix_words", "BITS_PER_WORD"]

#: coalition bits packed into one float64 (integers below 2**53 are exact)
BITS_PER_WORD = 52
#: the most coalition bits (rows × groups) a call holds on the host while building them
MAX_TABLE_BITS = 1 << 31
#: header values at the start of a coalition context
_HEADER = 6


def feature_mask_check(name: str, value) -> None:
    """``None``, an integer array/tensor, or (several inputs) a list/tuple/dict of them (``None``
    entries allowed); shapes are checked against the inputs at the call."""
    if value is None:
        return
    if isinstance(value, dict):
        for item in value.values():
            feature_mask_check(name, item)
        return
    if isinstance(value, (list, tuple)) and not all(np.isscalar(v) for v in value):
        for item in value:
            feature_mask_check(name, item)
        return
    if isinstance(value, (tf.Tensor, tf.Variable)):
        value = value.numpy()
    if isinstance(value, (str, bool, np.bool_)) or np.isscalar(value):
        raise InvalidTypeError(f"`{name}` must be an integer array of group ids (or None: every value its own "
                               "group). " + received(name, value))
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.integer):
        raise InvalidTypeError(f"`{name}` must hold integer group ids. " + received(f"{name}.dtype", str(array.dtype)))


@dataclass
class GroupMasks:
    """The groups of a batch, packed like the inputs.

    Attributes:
        ids: ``(1 or N, D)`` int64 group of each value, ``0 … M_e − 1`` per example (consecutive,
            in the order of the user's ids), ``-1`` for values never perturbed (fixed inputs).
        counts: ``(N,)`` groups per example ``M_e``.
        labels: per example, the user's id of each group (``(M_e,)``).
    """

    ids: np.ndarray
    counts: np.ndarray
    labels: List[np.ndarray]

    @property
    def shared(self) -> bool:
        return self.ids.shape[0] == 1


def _one_mask(mask, shape, num_examples: int, where: str) -> np.ndarray:
    """One input's mask as ``(1 or N, size)`` int64: an example-shaped mask (numpy broadcasting,
    or the leading axes of the example shape: ``(H, W)`` for ``(H, W, C)``), or with a batch axis
    ``(1 or N, …)``."""
    shape = tuple(shape)
    size = int(np.prod(shape, dtype=np.int64))
    if mask is None:
        return np.arange(size, dtype=np.int64)[None]
    array = np.asarray(mask.numpy() if hasattr(mask, "numpy") else mask)
    if not np.issubdtype(array.dtype, np.integer):
        raise InvalidTypeError(f"`{where}` must hold integer group ids. "
                               + received(f"{where}.dtype", str(array.dtype)))
    batched = array.ndim == len(shape) + 1
    body = array.shape[1:] if batched else array.shape
    if batched and array.shape[0] not in (1, num_examples):
        raise InvalidInputError(f"`{where}` with a batch axis must have 1 or {num_examples} masks. "
                                + received(f"{where}.shape", array.shape))
    if len(body) < len(shape) and tuple(body) == shape[:len(body)]:  # leading axes: (H, W) for (H, W, C)
        body = tuple(body) + (1,) * (len(shape) - len(body))
        array = array.reshape(((array.shape[0],) if batched else ()) + body)
    try:
        full = np.broadcast_to(array, ((array.shape[0],) if batched else ()) + shape)
    except ValueError:
        raise InvalidInputError(
            f"`{where}` must broadcast to one example's shape {shape}, with an optional batch axis of 1 or "
            f"{num_examples}. " + received(f"{where}.shape", array.shape)) from None
    return np.asarray(full, np.int64).reshape(-1 if batched else 1, size)


def group_masks(feature_mask, x_array: np.ndarray, layout=None, name: str = "feature_mask") -> GroupMasks:
    """The :class:`GroupMasks` of a batch ``x_array`` (``(N, …)``, or ``(N, D)`` packed with
    ``layout``) from the user's ``feature_mask``.

    One input: ``None`` (every value its own group), or an integer array of one example's shape
    (or broadcasting to it; ``(H, W)`` for ``(H, W, C)`` images is the mask of every channel),
    optionally with a batch axis (``(N, …)``: a mask per example). Several inputs: one mask per
    input (a list in the model's order or a dict by name; ``None`` entries: every value its own
    group); equal ids in two inputs are one group (captum's convention). Fixed inputs are
    never perturbed.
    """
    num_examples = int(x_array.shape[0])
    if layout is None:
        ids = _one_mask(feature_mask, x_array.shape[1:], num_examples, name)
    else:
        names = layout.names
        if any(layout.split):
            raise InvalidInputError("Coalitions cannot hold integer inputs beyond float64's exact range (2^53). "
                                    + received("inputs dtypes", list(layout.dtypes)))
        if layout.kind == "single" and feature_mask is not None and not isinstance(feature_mask, (list, tuple, dict)):
            feature_mask = [feature_mask]  # one integer input (token ids): its mask as given
        if isinstance(feature_mask, dict):
            unknown = sorted(set(map(str, feature_mask)) - set(names))
            if unknown:
                raise InvalidInputError(f"`feature_mask` keys must be model input names {list(names)}. "
                                        + received("feature_mask.keys()", sorted(map(str, feature_mask))))
            masks = [feature_mask.get(name) for name in names]
        elif isinstance(feature_mask, (list, tuple)):
            if len(feature_mask) != len(names):
                raise InvalidInputError(f"`feature_mask` for a model with {len(names)} inputs must hold one mask "
                                        f"per input {list(names)}. " + received("len(feature_mask)", len(feature_mask)))
            masks = list(feature_mask)
        elif feature_mask is None:
            masks = [None] * len(names)
        else:
            raise InvalidInputError(f"`feature_mask` for a model with {len(names)} inputs must be a list or dict of "
                                    f"masks, one per input {list(names)}. "
                                    + received("type(feature_mask)", type(feature_mask).__name__))
        parts, top = [], 0
        given = [np.asarray(m.numpy() if hasattr(m, "numpy") else m) for m in masks if m is not None]
        top = max([int(g.max()) + 1 for g in given if g.size] + [0])
        for i, (mask, shape, fixed) in enumerate(zip(masks, layout.shapes, layout.fixed)):
            where = f"{name}[{names[i]!r}]" if isinstance(feature_mask, dict) else f"{name}[{i}]"
            size = int(np.prod(shape, dtype=np.int64))
            if fixed:
                part = np.full((1, size), -1, np.int64)
            elif mask is None:  # every value its own group, after every given id
                part, top = np.arange(top, top + size, dtype=np.int64)[None], top + size
            else:
                part = _one_mask(mask, shape, num_examples, where)
            parts.append(part)
        rows = max(p.shape[0] for p in parts)
        ids = np.concatenate([np.broadcast_to(p, (rows, p.shape[1])) for p in parts], axis=1)
    if ids.shape[0] > 1 and np.all(ids == ids[:1]):
        ids = ids[:1]
    out = np.full(ids.shape, -1, np.int64)
    labels = []
    for r in range(ids.shape[0]):
        free = np.ones(ids.shape[1], bool) if layout is None else ~layout.fixed_mask()
        found, inverse = np.unique(ids[r][free], return_inverse=True)
        out[r, free] = inverse
        labels.append(found)
    if ids.shape[0] == 1:
        labels = labels * num_examples
    return GroupMasks(out, np.array([len(v) for v in labels], np.int64), labels)


def pack_coalitions(bits: np.ndarray, width: int) -> np.ndarray:
    """``(S, M)`` 0/1 coalitions → ``(S, ⌈width / 52⌉)`` float64 words (bit ``b`` of word ``j`` is
    group ``52 j + b``; groups ``≥ M`` are 0)."""
    bits = np.asarray(bits, bool)
    words = max(1, -(-int(width) // BITS_PER_WORD))
    padded = np.zeros((bits.shape[0], words * BITS_PER_WORD), np.int64)
    padded[:, :bits.shape[1]] = bits
    powers = np.left_shift(np.int64(1), np.arange(BITS_PER_WORD, dtype=np.int64))
    return (padded.reshape(len(bits), words, BITS_PER_WORD) * powers).sum(axis=2).astype(np.float64)


def check_coalitions(rows: int, groups: int, config) -> None:
    """Refuse, before anything is drawn or built, a call whose coalition rows exceed the engine's
    :data:`~tfattr.core.engine.MAX_ROWS` or whose host table of ``rows × groups`` bits would pass
    :data:`MAX_TABLE_BITS`."""
    if rows > MAX_ROWS or rows * max(int(groups), 1) > MAX_TABLE_BITS:
        raise InvalidInputError(
            f"A call would score {rows} coalitions of {groups} groups: over the {MAX_ROWS} rows one call runs or "
            f"the {MAX_TABLE_BITS} coalition bits it holds; lower `n_samples`, use fewer groups (a `feature_mask` "
            "of superpixels or patches) or split the batch. " + received("n_samples", config.get("n_samples")))


def prefix_words(permutations: np.ndarray, width: int) -> np.ndarray:
    """The packed prefixes of permutations without their 0/1 matrix: ``(P · (M − 1), W)`` words,
    row ``p (M − 1) + k − 1`` holding the first ``k`` groups of permutation ``p`` (a running sum
    of distinct powers of two per word: exact in float64)."""
    permutations = np.asarray(permutations, np.int64)
    count, m = permutations.shape
    words = max(1, -(-int(width) // BITS_PER_WORD))
    steps = permutations[:, :m - 1]
    increments = np.zeros((count, max(m - 1, 0), words))
    p, k = np.meshgrid(np.arange(count), np.arange(m - 1), indexing="ij")
    increments[p, k, steps // BITS_PER_WORD] = np.ldexp(1.0, steps % BITS_PER_WORD)
    return np.cumsum(increments, axis=1).reshape(-1, words)


def coalition_context(masks: GroupMasks, baseline: np.ndarray, table: np.ndarray, per_row: bool) -> np.ndarray:
    """The float64 context of :func:`coalition_points`: a header, the group ids ``(1 or N, D)``, the
    baseline ``(1 or N, D)`` and the packed coalitions (``per_row``: one per global row; else one
    per position, shared by every example)."""
    width = int(masks.counts.max()) if len(masks.counts) else 0
    header = [masks.ids.shape[0], masks.ids.shape[1], width, table.shape[1], baseline.shape[0], float(per_row)]
    return np.concatenate([np.asarray(header, np.float64), masks.ids.ravel().astype(np.float64),
                           baseline.ravel().astype(np.float64), table.ravel()])


def coalition_points(x, rows):
    """The forward builder of coalition rows (traced once per input shape): row ``r`` of example
    ``e`` is ``x_e`` where its coalition holds the value's group and the baseline elsewhere
    (values of group ``-1`` keep ``x_e``). Selects, never interpolates: a point's values are
    exactly ``x``'s or the baseline's."""
    c = rows.context
    head = tf.cast(c[:_HEADER], tf.int32)
    mask_rows, size, groups, words, base_rows, per_row = (head[i] for i in range(_HEADER))
    start = _HEADER
    ids = tf.reshape(c[start:start + mask_rows * size], tf.stack([mask_rows, size]))
    start += mask_rows * size
    base = tf.reshape(c[start:start + base_rows * size], tf.stack([base_rows, size]))
    start += base_rows * size
    table = tf.reshape(c[start:], tf.stack([-1, words]))
    index = rows.position + per_row * (rows.row - rows.position)
    packed = tf.gather(table, index)  # (B, words)
    group = tf.range(groups)
    word = tf.gather(packed, group // 52, axis=1)  # (B, M)
    power = tf.pow(tf.constant(2.0, tf.float64), tf.cast(group % 52, tf.float64))
    keep = tf.math.floormod(tf.floor(word / power), 2.0) > 0.5
    keep = tf.concat([keep, tf.ones_like(keep[:, :1])], axis=1)  # column M: values that are never perturbed
    value_ids = tf.cast(tf.gather(ids, tf.minimum(rows.example, mask_rows - 1)), tf.int32)
    value_ids = tf.where(value_ids < 0, groups, value_ids)
    keep_values = tf.gather(keep, value_ids, axis=1, batch_dims=1)  # (B, D)
    inputs = tf.gather(x, rows.example)
    flat = tf.reshape(inputs, tf.stack([tf.shape(inputs)[0], size]))
    baseline = tf.cast(tf.gather(base, tf.minimum(rows.example, base_rows - 1)), x.dtype)
    points = tf.where(keep_values, flat, baseline)
    return tf.ensure_shape(tf.reshape(points, tf.shape(inputs)), inputs.shape)


#: the options coalition methods share
COALITION_OPTIONS = (
    Option("feature_mask", None, feature_mask_check),
    Option("baseline", 0, checks.baseline_value),
    Option("seed", 0, checks.seed),
)


class CoalitionMethod(SelectsValues, AttributionMethod):
    """Base of the methods whose rows are coalitions of feature groups (forward rows only).

    Subclasses implement :meth:`_explain` with :meth:`masks`, :meth:`baseline_rows` and
    :meth:`run_coalitions`.
    """

    def masks(self, x_array: np.ndarray, config) -> GroupMasks:
        return group_masks(config["feature_mask"], x_array, call_layout(config))

    def baseline_rows(self, x_array: np.ndarray, config) -> np.ndarray:
        """The baseline ``(1 or N, D)`` float64 (one per example or shared)."""
        layout = call_layout(config)
        value_range = resolve_value_range(None, self.model)
        if layout is None:
            made = make_baselines(config["baseline"], x_array, value_range=value_range, seed=config["seed"])
        else:
            made = make_baselines_per_input(config["baseline"], layout, x_array, value_range=value_range,
                                            seed=config["seed"])
        if made.count != 1:
            raise InvalidInputError(f"{type(self).__name__} takes one baseline per example, not {made.count} draws. "
                                    + received("baseline.shape", tuple(made.array.shape)))
        array = made.materialize(x_array)[:, 0]
        return array.reshape(array.shape[0], -1).astype(np.float64)

    def forward_engine(self, targets, config) -> ForwardEngine:
        key = ("forward", targets.score_fn is None, targets.output)
        with self._engine_lock:
            engine = self._engines.get(key) if targets.score_fn is None else None
            if engine is None:
                engine = ForwardEngine(self.forward_model, score_fn=targets.scorer)
                if targets.score_fn is None:
                    self._engines[key] = engine
        engine.batch_size = config["batch_size"]
        engine.parallel_chunks = int(config["parallel_chunks"])
        engine.verbose = config["verbose"]
        return engine

    def run_coalitions(self, x, targets, masks: GroupMasks, baseline: np.ndarray, tables,
                       config) -> Tuple[List[np.ndarray], int]:
        """Score every coalition: ``tables[e]`` ``(S_e, W)`` the packed coalitions of example ``e``
        (:func:`pack_coalitions` with ``width = max M``; the same array object for examples that
        share them). Returns each example's ``(S_e,)`` scores, from one forward run over all
        rows, and the run's batched forward passes."""
        num_examples = int(x.shape[0])
        counts = [len(t) for t in tables]
        check_coalitions(sum(counts), 1, config)
        shared = all(t is tables[0] for t in tables)
        packed = tables[0] if shared else np.concatenate(tables)
        context = coalition_context(masks, baseline, packed, per_row=not shared)
        rows = ForwardRows(np.repeat(np.arange(num_examples), counts))
        indices = targets.indices if targets.indices is not None else None
        result = self.forward_engine(targets, config).run(x, rows, coalition_points, indices, combine="scores",
                                                          context=context, layout=call_layout(config))
        bounds = np.cumsum([0] + counts)
        return [result.row_scores[bounds[e]:bounds[e + 1]] for e in range(num_examples)], result.chunks

    @staticmethod
    def paint(masks: GroupMasks, values: List[np.ndarray], shape) -> np.ndarray:
        """Per-value attributions ``(N, …)``: each value gets its group's value (captum's
        convention), values outside every group 0."""
        num_examples = len(values)
        out = np.zeros((num_examples, masks.ids.shape[1]))
        for e in range(num_examples):
            ids = masks.ids[min(e, masks.ids.shape[0] - 1)]
            table = np.append(np.asarray(values[e], np.float64), 0.0)
            out[e] = table[np.where(ids < 0, len(values[e]), ids)]
        return out.reshape((num_examples,) + tuple(shape))

    def uses_value_range(self, config) -> bool:
        return False
