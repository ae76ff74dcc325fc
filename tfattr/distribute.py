"""Spread attribution and metrics over the replicas of a ``tf.distribute`` strategy.

How a batch is spread (:func:`distributed_attribute`, :func:`distributed_map`):

1. The images (with their row index and per-example targets) become a ``tf.data``
   dataset, batched at ``images_per_replica × num_replicas_in_sync`` images, and
   ``strategy.experimental_distribute_dataset`` shards it: over the local devices of a
   ``MirroredStrategy`` (GPUs, or logical CPU devices), and over the workers of a
   ``MultiWorkerMirroredStrategy`` (auto-shard policy ``DATA``: every worker keeps its
   share of the batches).
2. Each local replica runs the same method — the same engine and compiled functions —
   on its shard, on its own device (``tf.device``), from one host thread per replica, so
   the replicas run at the same time. (``strategy.run`` would do the same in a
   ``tf.function``, but the engine drives its chunks from the host, and an eager
   ``strategy.run`` runs the replicas one after the other.)
3. The per-replica results are gathered with ``strategy.gather`` (an all-gather across
   workers), and put back in the input order by the row index. Every worker returns the
   whole result.

tfattr's noise draws depend on the seed and the draw index only, and targets are
resolved per example, so the result equals the single-device run (up to float
summation order).

Multi-GPU on one host::

    strategy = tf.distribute.MirroredStrategy()           # every visible GPU
    expl = tfattr.distribute.distributed_attribute(ig, images, strategy=strategy)

Several hosts: start the same program on every host with ``TF_CONFIG`` describing the
cluster (``{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type":
"worker", "index": 0}}``, index ``1`` on the second host), create the strategy first thing
in the program, and pass the same images on every worker::

    strategy = tf.distribute.MultiWorkerMirroredStrategy()   # before any other TensorFlow work
    expl = tfattr.distribute.distributed_attribute(ig, images, strategy=strategy)

or ``tfattr evaluate --strategy multiworker`` on every host. Each worker attributes its
share and receives everyone's results.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfattr.core.result import Explanation
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["distributed_attribute", "distributed_map", "replica_devices", "strategy_from_name"]

#: ``Explanation.info`` entries that hold one value per example and are gathered with the rows
PER_EXAMPLE_INFO = ("steps", "relative_error", "converged", "n_baselines", "relative_standard_error",
                    "baseline_converged", "weights", "activations", "nt_samples", "taylor_error", "roots",
                    "selected")


def replica_devices(strategy: Optional[tf.distribute.Strategy] = None) -> List[str]:
    """The local devices a strategy replicates over (the default strategy: the current device)."""
    strategy = strategy or tf.distribute.get_strategy()
    try:
        devices = list(strategy.extended.worker_devices or [])
    except (AttributeError, RuntimeError):  # the default strategy has no worker devices
        devices = []
    return devices or ["/cpu:0"]


def strategy_from_name(name: str) -> Optional[tf.distribute.Strategy]:
    """``"default"`` → ``None``, ``"mirrored"`` → ``MirroredStrategy()`` (every visible GPU, else the
    CPU), ``"multiworker"`` → ``MultiWorkerMirroredStrategy()`` (the cluster in ``TF_CONFIG``).

    Create it before other TensorFlow work: a multi-worker strategy must start with the program.
    """
    if name in (None, "default"):
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name in ("multiworker", "multi_worker"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise InvalidInputError("`strategy` must be 'default', 'mirrored' or 'multiworker'. " + received("strategy", name))


def _check_strategy(strategy):
    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise InvalidTypeError("`strategy` must be a tf.distribute.Strategy or None. "
                               + received("type(strategy)", type(strategy).__name__))
    return strategy


def _sharded(fn: Callable, arrays: Sequence[Optional[np.ndarray]], strategy, images_per_replica: Optional[int]):
    """Run ``fn(*shard_arrays) -> {name: (n_shard, …) array}`` on every replica's shards and return
    ``{name: (N, …) array}`` in the input order, gathered from all replicas and workers."""
    strategy = _check_strategy(strategy)
    present = [i for i, a in enumerate(arrays) if a is not None]
    length = len(arrays[present[0]])
    replicas = int(strategy.num_replicas_in_sync)
    if length < 1:
        raise InvalidInputError("`images` must be a non-empty batch. " + received("len(images)", length))
    if images_per_replica is None:
        images_per_replica = math.ceil(length / replicas)
    if isinstance(images_per_replica, bool) or not isinstance(images_per_replica, (int, np.integer)) or images_per_replica < 1:
        raise InvalidInputError("`images_per_replica` must be a positive integer. "
                                + received("images_per_replica", images_per_replica))
    columns = (np.arange(length, dtype=np.int64),) + tuple(arrays[i] for i in present)
    dataset = tf.data.Dataset.from_tensor_slices(columns).batch(int(images_per_replica) * replicas)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    distributed = strategy.experimental_distribute_dataset(dataset.with_options(options))
    devices = replica_devices(strategy)
    local = len(devices)

    def call(shard):
        full = [None] * len(arrays)
        for slot, value in zip(present, shard[1:]):
            full[slot] = value
        return fn(*full)

    def run(replica, batch):
        with tf.device(devices[replica]):
            index = batch[0].numpy()
            if len(index) == 0:
                return None
            return index, call([b.numpy() for b in batch])

    pieces: List[List[Any]] = [[] for _ in range(local)]
    failure = None
    try:
        with ThreadPoolExecutor(max_workers=local) as pool:
            for batch in distributed:
                per_replica = [strategy.experimental_local_results(column) for column in batch]
                shards = [tuple(column[r] for column in per_replica) for r in range(local)]
                for r, out in enumerate(pool.map(run, range(local), shards)):
                    if out is not None:
                        pieces[r].append(out)
        # A replica that got no rows still needs the fields' dtypes and trailing shapes to join the
        # all-gather: it evaluates the first example and keeps none of it.
        template = next((p[0][1] for p in pieces if p), None)
        if template is None:
            template = call([c[:1] for c in columns])
    except Exception as exc:  # noqa: BLE001 — re-raised below, after every worker knows
        failure = exc
    # Every worker joins this all-reduce, failed or not, so no worker waits forever in the gather.
    flags = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(0.0 if failure is None else 1.0, tf.float32))
    failed = float(strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None).numpy())
    if failure is not None:
        raise failure
    if failed > 0:
        raise RuntimeError(f"tfattr.distribute: {failed:g} replica(s) on other workers failed; see their logs.")
    names = sorted(template)
    joined = []
    for r in range(local):
        if pieces[r]:
            index = np.concatenate([p[0] for p in pieces[r]])
            fields = {k: np.concatenate([np.asarray(p[1][k]) for p in pieces[r]]) for k in names}
        else:
            index = np.zeros(0, np.int64)
            fields = {k: np.asarray(template[k])[:0] for k in names}
        joined.append(dict(fields, __index__=index))

    # One all-gather: every field flattened into float64 columns of one (rows, D) matrix
    # (float32 values and integers below 2^53 round-trip exactly).
    keys = ["__index__"] + names
    layout = [(key, joined[0][key].dtype, joined[0][key].shape[1:]) for key in keys]
    packed = [np.concatenate([part[key].reshape(len(part["__index__"]), int(np.prod(part[key].shape[1:], dtype=np.int64)))
                              .astype(np.float64) for key in keys], axis=1)
              for part in joined]
    value = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(packed[context.replica_id_in_sync_group % local]))
    matrix = strategy.gather(value, axis=0).numpy()
    gathered, column = {}, 0
    for key, dtype, shape in layout:
        width = int(np.prod(shape, dtype=np.int64))
        gathered[key] = matrix[:, column:column + width].reshape((len(matrix),) + shape).astype(dtype)
        column += width
    order = np.argsort(gathered.pop("__index__"), kind="stable")
    return {k: v[order] for k, v in gathered.items()}


def _model_of(method):
    """The Keras model a method (or a ``NoiseTunnel`` around one) explains, if it says."""
    for _ in range(4):
        model = getattr(method, "model", None)
        if model is not None:
            return model
        method = getattr(method, "method", None)
    return None


def _split_inputs(method, images):
    """``(rebuild, arrays)``: the input arrays of a several-input batch (a dict, or a list/tuple for a
    model of several inputs) and a function that puts shards of them back in that structure; one array
    and ``rebuild=None`` for a single input."""
    from tfattr.core.structure import inputs_spec

    several = isinstance(images, dict) or (isinstance(images, (list, tuple)) and inputs_spec(_model_of(method)) is not None)
    if not several:
        return None, [np.asarray(images)]
    if isinstance(images, dict):
        keys = list(images)
        return (lambda parts: dict(zip(keys, parts))), [np.asarray(images[k]) for k in keys]
    kind = type(images) if type(images) in (list, tuple) else list
    return (lambda parts: kind(parts)), [np.asarray(a) for a in images]


def distributed_attribute(method, images, target=None, strategy: Optional[tf.distribute.Strategy] = None,
                          images_per_replica: Optional[int] = None, **options) -> Explanation:
    """``method.attribute(images, target, **options)`` with the batch sharded over a strategy's replicas.

    Args:
        method: any tfattr method (or ``NoiseTunnel``).
        images: ``(N, H, W, C)`` images (NumPy), or for a model of several inputs a list or dict of
            arrays with the same ``N`` (as ``method.attribute`` takes them; sharded per example, the
            attributions come back in the same structure); every worker of a multi-worker strategy
            passes the same.
        target: as for ``attribute``; per-example arrays travel with the images.
        strategy: a ``tf.distribute`` strategy (default: the current one).
        images_per_replica: images each replica attributes per step (default: all of its share
            in one step); the method still runs ``batch_size`` points per pass.
        **options: per-call options of the method.

    Returns:
        One :class:`~tfattr.Explanation` for the whole batch, in the input order;
        ``info["replicas"]`` is the number of replicas, per-example ``info`` entries
        (:data:`PER_EXAMPLE_INFO`) are gathered with the rows.
    """
    if getattr(method, "depends_on_batch", False):
        raise InvalidTypeError(f"distributed_attribute shards the batch; {type(method).__name__}'s attributions depend "
                               "on the other examples of the batch (each shard would be explained alone). Call "
                               "method.attribute on the whole batch. " + received("method", type(method).__name__))
    rebuild, flat = _split_inputs(method, images)
    lengths = {len(a) if a.ndim >= 1 else 0 for a in flat}
    if any(a.ndim < 2 for a in flat) or len(lengths) != 1 or 0 in lengths:
        shapes = [a.shape for a in flat]
        raise InvalidInputError("`images` must be a non-empty batch (for a model of several inputs: one array per "
                                "input, all with the same number of examples). "
                                + received("images.shape", shapes[0] if rebuild is None else shapes))
    count = lengths.pop()
    per_example = target is not None and not callable(target) and np.ndim(target) == 1
    labels = np.asarray(target) if per_example else None
    if per_example and len(labels) != count:
        raise InvalidInputError("`target` must have one class per image. "
                                + received("len(target)", len(labels)) + f" for {count} images")
    first: Dict[str, Any] = {}

    def attribute(*shard):
        *xs, t = shard
        x = xs[0] if rebuild is None else rebuild(xs)
        expl = method.attribute(x, target=t if per_example else target, **options)
        first.setdefault("explanation", expl)
        n = len(xs[0])
        fields = {"gradients": np.full(n, expl.gradients / n)}
        if rebuild is None:
            fields["attributions"] = np.asarray(expl)
        else:
            maps = expl.attributions
            # by key: the explanation's dict follows the model's input order, the caller's may differ
            parts = [maps[k] for k in images] if isinstance(maps, dict) and isinstance(images, dict) else \
                list(maps.values()) if isinstance(maps, dict) else maps
            fields.update({f"attributions:{i}": np.asarray(a) for i, a in enumerate(parts)})
        for name in ("targets", "scores", "baseline_scores", "delta"):
            value = getattr(expl, name)
            if value is not None:
                fields[name] = np.asarray(value)
        for name in PER_EXAMPLE_INFO:
            value = expl.info.get(name)
            if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == n:
                fields["info:" + name] = value
        return fields

    out = _sharded(attribute, [*flat, labels], strategy, images_per_replica)
    if rebuild is not None:
        out["attributions"] = rebuild([out.pop(f"attributions:{i}") for i in range(len(flat))])
    reference = first["explanation"]
    info = {k: v for k, v in reference.info.items() if k not in PER_EXAMPLE_INFO and k != "nodes"}
    info.update({k[5:]: v for k, v in out.items() if k.startswith("info:")})
    info["replicas"] = int(_check_strategy(strategy).num_replicas_in_sync)
    return Explanation(
        attributions=out["attributions"],
        method=reference.method,
        targets=out.get("targets"),
        scores=out.get("scores"),
        baseline_scores=out.get("baseline_scores"),
        delta=out.get("delta"),
        gradients=int(round(out["gradients"].sum())),
        info=info,
    )


def distributed_map(fn: Callable, arrays: Sequence[Optional[np.ndarray]], strategy: Optional[tf.distribute.Strategy] = None,
                    images_per_replica: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Run ``fn(*shards) -> {name: (n, …) array}`` on shards of ``arrays`` (same first axis; ``None``
    entries pass through) over a strategy's replicas and return ``{name: (N, …) array}`` in the
    input order. ``fn`` must be batch-invariant (every tfattr metric is), so the result equals
    one call on the whole batch."""
    if not any(a is not None for a in arrays):
        raise InvalidInputError("`arrays` needs at least one array. " + received("arrays", arrays))
    arrays = [None if a is None else np.asarray(a) for a in arrays]
    return _sharded(fn, arrays, strategy, images_per_replica)
