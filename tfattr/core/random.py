"""The seeded random streams every random draw of tfattr comes from.

One user seed feeds several independent streams, one per purpose (uniform and Gaussian
baselines, NoiseTunnel's noise, SmoothTaylor's roots, GradientShap's draws), so that changing how
many draws one purpose takes never shifts the draws of another. A stream's draws depend on the seed, the
stream and the block index only, never on the batch: every example of a batch gets the same
draws, and an example's result is the same alone or in a batch.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["STREAM_UNIFORM", "STREAM_GAUSSIAN", "STREAM_NOISE_TUNNEL", "STREAM_SMOOTH_TAYLOR", "STREAM_FORWARD_ROWS",
           "STREAM_GRADIENT_SHAP", "STREAM_INFIDELITY", "STREAM_FAITHFULNESS_CORRELATION", "STREAM_SENSITIVITY",
           "STREAM_SHAPLEY_SAMPLING", "STREAM_SENSITIVITY_N", "STREAM_MU_FIDELITY", "STREAM_ROAD",
           "STREAM_MONOTONICITY_CORRELATION", "STREAM_SOBOL", "STREAM_FEATURE_PERMUTATION", "STREAM_LIPSCHITZ",
           "STREAM_RELATIVE_STABILITY", "STREAM_SMOOTH_MPRT", "rng", "legacy_state", "row_uniform",
           "row_normal", "compiled_row_draws"]

# Independent random streams per purpose, all derived from the user's seed.
STREAM_UNIFORM = 1
STREAM_GAUSSIAN = 2
STREAM_NOISE_TUNNEL = 3
STREAM_SMOOTH_TAYLOR = 4
STREAM_FORWARD_ROWS = 5
STREAM_GRADIENT_SHAP = 6
STREAM_INFIDELITY = 7
STREAM_FAITHFULNESS_CORRELATION = 8
STREAM_SENSITIVITY = 9
# Shapley value sampling's permutations (numbered apart from other perturbation methods' streams;
# KernelShap and Lime draw as shap and lime do, from numpy.random.RandomState(seed))
STREAM_SHAPLEY_SAMPLING = 22
# the faithfulness metrics of tfattr.metrics.faithfulness_more (numbered apart from the others)
STREAM_SENSITIVITY_N = 40
STREAM_MU_FIDELITY = 41
STREAM_ROAD = 42
STREAM_MONOTONICITY_CORRELATION = 43
# SobolAttribution's scrambling and FeaturePermutation's permutations
STREAM_SOBOL = 23
STREAM_FEATURE_PERMUTATION = 24
# the robustness and randomisation metrics of issue 29 (numbered apart from the others)
STREAM_LIPSCHITZ = 50
STREAM_RELATIVE_STABILITY = 51
STREAM_SMOOTH_MPRT = 52


def rng(seed: Optional[int], stream: int, block: int = 0) -> np.random.Generator:
    """The NumPy generator of one random stream for a user seed (``None`` = fresh entropy).

    ``block`` > 0 gives further independent blocks of the same stream (the extra draws of a
    Monte-Carlo tolerance); block 0 is ``default_rng([seed, stream])``.

    Example:
        >>> rng(0, STREAM_UNIFORM).uniform(size=2).shape
        (2,)
    """
    if seed is None:
        return np.random.default_rng()
    if block == 0:
        return np.random.default_rng([int(seed), int(stream)])
    return np.random.default_rng([int(seed), int(stream), int(block)])


def legacy_state(seed: Optional[int]) -> np.random.RandomState:
    """NumPy's legacy generator for a seed in ``[0, 2**53)`` (the range of every tfattr ``seed``), as
    shap and lime draw: ``RandomState(seed)`` below ``2**32`` (the same draws as theirs with that seed),
    else seeded by the seed's two 32-bit words (``RandomState`` itself refuses seeds ≥ 2³²; a dataset
    run's per-batch seeds, :func:`tfattr.streaming.explain.batch_seed`, are mostly that large).
    ``None``: fresh entropy.

    Example:
        >>> legacy_state(2 ** 40).randint(0, 2, 3).shape
        (3,)
    """
    if seed is None:
        return np.random.RandomState()
    seed = int(seed)
    if seed < 2 ** 32:
        return np.random.RandomState(seed)
    return np.random.RandomState([seed & 0xFFFFFFFF, seed >> 32])


def _row_draws(sampler, seed, rows, shape, dtype, stream):
    import tensorflow as tf

    dtype = tf.float32 if dtype is None else dtype
    rows = tf.cast(tf.convert_to_tensor(rows), tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    keys = tf.stack([tf.fill(tf.shape(rows), seed), rows + tf.constant(int(stream) << 32, tf.int64)], axis=1)
    return tf.map_fn(lambda key: sampler(shape, seed=key, dtype=dtype), keys, fn_output_signature=dtype)


def row_normal(seed, rows, shape, dtype=None, stream: int = STREAM_FORWARD_ROWS):
    """Standard normal draws of ``shape`` for each row index in ``rows``: as :func:`row_uniform`,
    with ``tf.random.stateless_normal`` (the noise of a metric's perturbed rows)."""
    import tensorflow as tf

    return _row_draws(tf.random.stateless_normal, seed, rows, shape, dtype, stream)


def row_uniform(seed, rows, shape, dtype=None, stream: int = STREAM_FORWARD_ROWS):
    """Uniform ``[0, 1)`` draws of ``shape`` for each row index in ``rows``, inside or outside a
    ``tf.function`` (the masks of forward rows, :class:`~tfattr.core.engine.ForwardEngine`).

    Row ``r``'s draws are ``tf.random.stateless_uniform(shape, seed=(seed, stream · 2³² + r))``:
    they depend on the seed, the stream and the row only, so a chunk draws its own rows' masks
    and the result is the same for any chunk size or chunk order, without ever holding every
    row's masks at once.

    Args:
        seed: an integer (or a scalar tensor, e.g. read from a forward run's ``context``).
        rows: ``(B,)`` integer row indices (below 2³²).
        shape: the shape of one row's draws.
        dtype: a float dtype (default float32).
        stream: the purpose's stream (default :data:`STREAM_FORWARD_ROWS`).

    Returns:
        ``(B, *shape)`` draws.
    """
    import tensorflow as tf

    return _row_draws(tf.random.stateless_uniform, seed, rows, shape, dtype, stream)


_COMPILED_DRAWS = {}


def compiled_row_draws(kind: str, seed: int, rows, shape, dtype=None, stream: int = STREAM_FORWARD_ROWS):
    """:func:`row_uniform` (``kind="uniform"``) or :func:`row_normal` (``"normal"``) as NumPy, run as a
    compiled graph: the same draws (stateless ops), without the eager per-row loop (a map over rows
    run op by op costs ~2 ms a row). For the host's copy of the draws a forward run made on the
    device (the metrics of :mod:`tfattr.metrics.faithfulness`)."""
    import tensorflow as tf

    dtype = tf.float32 if dtype is None else tf.as_dtype(dtype)
    key = (kind, tuple(int(d) for d in shape), dtype.name, int(stream))
    function = _COMPILED_DRAWS.get(key)
    if function is None:
        sampler = row_uniform if kind == "uniform" else row_normal

        @tf.function(input_signature=[tf.TensorSpec([], tf.int64), tf.TensorSpec([None], tf.int32)])
        def function(seed_tensor, row_tensor):
            return sampler(seed_tensor, row_tensor, key[1], dtype=dtype, stream=stream)

        _COMPILED_DRAWS[key] = function
    return function(tf.constant(int(seed), tf.int64), tf.constant(np.asarray(rows, np.int32))).numpy()
