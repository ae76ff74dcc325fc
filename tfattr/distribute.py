"""Spread attribution over the devices of a ``tf.distribute`` strategy.

:func:`distributed_attribute` splits a batch into one contiguous shard per replica device
(``strategy.extended.worker_devices``: the GPUs of a ``MirroredStrategy``, or logical
CPU devices), runs the same method — the same engine, its compiled functions shared —
on each shard under ``tf.device`` from one thread per device, and gathers the results
in the original order. Because tfattr's noise draws depend on the seed and the sample
index only, and targets are resolved per example, the result equals the single-device
run (up to float summation order).

Multi-GPU on one host::

    strategy = tf.distribute.MirroredStrategy()           # every visible GPU
    expl = tfattr.distribute.distributed_attribute(ig, images, strategy=strategy)

Several hosts: run one process per host on its own part of the data (for example
``dataset.shard(num_workers, worker_index)``), each with its local strategy, and
concatenate the saved ``.npz`` files; tfattr has no cross-host collective to gather.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

import numpy as np
import tensorflow as tf

from tfattr.core.result import Explanation
from tfattr.errors import InvalidInputError, received

__all__ = ["distributed_attribute", "distributed_map", "replica_devices"]


def replica_devices(strategy: Optional[tf.distribute.Strategy] = None) -> List[str]:
    """The devices a strategy replicates over (the default strategy: the current device)."""
    strategy = strategy or tf.distribute.get_strategy()
    devices = list(getattr(strategy.extended, "worker_devices", []) or [])
    return devices or ["/cpu:0"]


def _concat(values):
    if any(v is None for v in values):
        return None
    return np.concatenate([np.atleast_1d(np.asarray(v)) for v in values])


def distributed_attribute(method, images, target=None, strategy: Optional[tf.distribute.Strategy] = None,
                          **options) -> Explanation:
    """``method.attribute(images, target, **options)`` with the batch sharded over a strategy's devices.

    Args:
        method: any tfattr method (or ``NoiseTunnel``).
        images: ``(N, H, W, C)`` images (NumPy).
        target: as for ``attribute``; per-example arrays are sharded with the images.
        strategy: a ``tf.distribute`` strategy (default: the current one).

    Returns:
        One :class:`~tfattr.Explanation` for the whole batch, in the input order.
    """
    images = np.asarray(images)
    if images.ndim < 2 or len(images) == 0:
        raise InvalidInputError("`images` must be a non-empty batch. " + received("images.shape", images.shape))
    devices = replica_devices(strategy)
    shards = [s for s in np.array_split(np.arange(len(images)), len(devices)) if len(s)]
    per_example = target is not None and not callable(target) and np.ndim(target) == 1

    def run(device, index):
        with tf.device(device):
            shard_target = np.asarray(target)[index] if per_example else target
            return method.attribute(images[index], target=shard_target, **options)

    if len(shards) == 1:
        parts = [run(devices[0], shards[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(shards)) as pool:
            parts = list(pool.map(run, devices[: len(shards)], shards))
    first = parts[0]
    attributions = np.concatenate([np.asarray(p) for p in parts])
    info = dict(first.info)
    info["devices"] = devices[: len(shards)]
    info["shards"] = [len(s) for s in shards]
    return Explanation(
        attributions=attributions,
        method=first.method,
        targets=_concat([p.targets for p in parts]),
        scores=_concat([p.scores for p in parts]),
        baseline_scores=_concat([p.baseline_scores for p in parts]),
        delta=_concat([p.delta for p in parts]),
        gradients=int(sum(p.gradients for p in parts)),
        info=info,
    )


def distributed_map(fn, arrays, strategy: Optional[tf.distribute.Strategy] = None):
    """Run ``fn(*shards)`` on contiguous shards of ``arrays`` (same first axis), one per replica device,
    and return the list of per-shard results in order. ``fn`` must be batch-invariant (every tfattr
    metric is), so concatenating the results equals one call on the whole batch."""
    arrays = [None if a is None else np.asarray(a) for a in arrays]
    length = next(len(a) for a in arrays if a is not None)
    devices = replica_devices(strategy)
    shards = [s for s in np.array_split(np.arange(length), len(devices)) if len(s)]

    def run(device, index):
        with tf.device(device):
            return fn(*[None if a is None else a[index] for a in arrays])

    if len(shards) == 1:
        return [run(devices[0], shards[0])]
    with ThreadPoolExecutor(max_workers=len(shards)) as pool:
        return list(pool.map(run, devices[: len(shards)], shards))
