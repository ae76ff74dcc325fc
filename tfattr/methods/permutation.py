"""Permutation feature importance (captum's ``FeaturePermutation``) on the engine's forward rows.

Row ``(g, k)`` of example ``e`` is ``x_e`` with the features of group ``g`` taken from example
``π_{g,k}(e)`` of the batch (a seeded permutation of the batch per group and repeat); its
contribution ``(f(x_e) − f(row)) · v_g`` is summed per example (:func:`score_drop`) and divided by
the number of permutations. A chunk builds its rows on the device from their positions and the
call's table of permutations.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import ChunkRows, ForwardRows
from tfattr.core.random import STREAM_FEATURE_PERMUTATION, rng
from tfattr.errors import InvalidInputError, received
from tfattr.methods.base import Explained
from tfattr.methods.perturbation import _check_mask, _PerturbationMethod, score_drop

__all__ = ["FeaturePermutation", "batch_permutations"]


def batch_permutations(seed, count: int, batch: int) -> np.ndarray:
    """``(count, batch)``: ``count`` permutations of ``0 … batch − 1`` drawn from ``seed``, none the
    identity (captum's ``_permute_feature`` draws again while it is)."""
    generator = rng(seed, STREAM_FEATURE_PERMUTATION)
    table = np.empty((count, batch), np.int64)
    identity = np.arange(batch)
    for k in range(count):
        order = generator.permutation(batch)
        while np.array_equal(order, identity):
            order = generator.permutation(batch)
        table[k] = order
    return table


def _permuted(x, rows: ChunkRows):
    """Row ``p = k·G + g`` of example ``e``: group ``g``'s features from example ``π_p(e)``."""
    shape = [int(d) for d in x.shape[1:]]
    size = int(np.prod(shape))
    num = tf.shape(x)[0]
    groups = rows.context[:size]
    table = tf.reshape(tf.cast(rows.context[size:], tf.int32), tf.stack([-1, num]))
    count = tf.cast(tf.reduce_max(groups), tf.int32) + 1
    group = tf.math.floormod(rows.position, count)
    inside = tf.reshape(tf.equal(groups[None, :], tf.cast(group, tf.float64)[:, None]), [-1] + shape)
    source = tf.gather_nd(table, tf.stack([rows.position, rows.example], axis=1))
    points = tf.where(inside, tf.gather(x, source), tf.gather(x, rows.example))
    return points, tf.cast(inside, x.dtype)


class FeaturePermutation(_PerturbationMethod):
    """Permutation feature importance (Breiman 2001; Fisher, Rudin & Dominici 2019) with captum's
    ``FeaturePermutation`` semantics: for each group of features, permute its values across the
    batch and give each of its features ``A_{e,i} = f(x_e) − f(x_e with group g(i) from x_{π(e)})``.

    Every feature group is permuted with its own permutation of the batch (never the identity,
    as captum), drawn from ``seed``; with ``n_permutations > 1`` the drop is averaged over that
    many independent permutations per group (captum draws one). The attribution is of the batch
    as a whole: an example's value depends on the other examples it was given with. On a linear
    model ``f(x) = w·x + c`` with one feature per group, ``A_{e,j} = w_j (x_{e,j} − x_{π(e),j})``.
    ``NoiseTunnel`` and ``tfattr.distribute``, which split or expand the batch, refuse it.

    Each (group, permutation) of each example is one forward row of the engine
    (``batch_size`` rows per model call, captum's ``perturbations_per_eval``).

    Options:
        feature_mask: integer group ids of one example's features, broadcastable to one example's
            shape (shared by every example, as captum's first dimension 1); features with the same
            id are permuted together. ``None``: every scalar its own group.
        n_permutations: permutations per group, averaged.
        seed: the permutations' seed (``None``: fresh ones on each call).
        batch_size, verbose, parallel_chunks, output: see :class:`~tfattr.methods.base.AttributionMethod`.

    The result's ``info`` holds ``forward_passes``, ``groups``, ``rows`` and ``permutations``
    (``(n_permutations · groups, N)``: row ``k·G + g`` is the permutation of group ``g``'s ``k``-th
    draw, entry ``e`` the example ``e``'s values come from).

    Example:
        >>> columns = np.array([0, 0, 1, 2])  # 4 tabular features in 3 groups
        >>> FeaturePermutation(model, feature_mask=columns).attribute(table, target=0).attributions
    """

    name = "feature_permutation"

    #: an example's attributions depend on the other examples of the call (NoiseTunnel refuses it)
    depends_on_batch = True
    options = (
        Option("feature_mask", None, _check_mask),
        Option("n_permutations", 1, checks.positive_int),
        Option("seed", 0, checks.seed),
    )

    def _explain(self, x, targets, fx, config) -> Explained:
        num = int(x.shape[0])
        if num < 2:
            raise InvalidInputError("FeaturePermutation permutes features across the batch: give at least 2 "
                                    "examples. " + received("inputs.shape", tuple(x.shape)))
        shape = tuple(int(d) for d in x.shape[1:])
        mask = config["feature_mask"]
        if mask is None:
            ids = np.arange(int(np.prod(shape)), dtype=np.int64)
        else:
            array = np.asarray(mask.numpy() if isinstance(mask, tf.Tensor) else mask)
            if array.ndim == len(shape) + 1 and array.shape[0] == 1:
                array = array[0]  # captum's (1, …) mask
            try:
                ids = np.broadcast_to(array, shape).reshape(-1).astype(np.int64)
            except ValueError:
                raise InvalidInputError(f"`feature_mask` is shared by every example: it must be broadcastable to one "
                                        f"example's shape {shape} (or captum's (1, …)); numpy's broadcasting, a 1-D "
                                        "array is per last axis. "
                                        + received("feature_mask.shape", array.shape)) from None
        _, groups = np.unique(ids, return_inverse=True)
        count = int(groups.max()) + 1
        repeats = int(config["n_permutations"])
        seed = config["seed"]
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        if num * repeats * count >= 2**31:
            raise InvalidInputError(f"{num} examples × {repeats} permutation(s) × {count} groups is at least 2^31 "
                                    "forward rows (the engine numbers them in int32): lower `n_permutations`, group "
                                    "features with `feature_mask`, or explain fewer examples. "
                                    + received("n_permutations", repeats))
        table = batch_permutations(seed, repeats * count, num)
        fx, fx_passes = self.input_scores(x, targets, fx, config)
        rows = ForwardRows.repeat(num, repeats * count)
        rows.weight = fx[rows.example]
        context = np.concatenate([groups.astype(np.float64), table.ravel().astype(np.float64)])
        result = self.run_rows(x, targets, rows, _permuted, score_drop, context, config)
        attributions = result.sums / repeats
        info = {"forward_passes": result.chunks + fx_passes, "groups": count, "rows": len(rows),
                "permutations": table, "seed": seed}
        return Explained(attributions=attributions.reshape(tuple(x.shape)), scores=fx, info=info)

    def describe(self, config) -> str:
        return f"feature_permutation(n_permutations={config['n_permutations']})"
