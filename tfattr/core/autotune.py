"""Chunk sizes chosen by measurement (``batch_size="auto"``).

The fastest number of points per forward+backward pass depends on the network, the input
size, the device and the load: on a 2-core CPU MobileNetV2 at 224×224 is fastest at 4 points
per chunk and 30% slower at 16, a small CNN at 64×64 is fastest at 32–64, a GPU wants hundreds.
So the engine measures instead of assuming. A :class:`ChunkTuner` holds what was measured for
one *key* — (model, gradient function, input shape and dtype, combination, chunks in flight,
device) — for the life of the process (and, when enabled, in a JSON file beside the Keras
cache), and hands each :meth:`~tfattr.core.engine.PathEngine.integrate` call a
:class:`TuningSession` that says which chunk sizes to run next:

* every timed chunk holds real rows of the call: nothing is computed twice; the rows are
  still run in order and summed in chunk order, so the result does not depend on the sizes
  chosen (up to float32 summation order, as for any fixed ``batch_size``);
* the first chunk of a call runs alone and untimed (it traces the chunk function on first
  use), and so does the first chunk at each new size (a new batch size can cost kernel setup
  once); then a timed *round* of chunks of that size runs, ``parallel_chunks`` in flight, over
  the same number of rows for every size (``parallel_chunks × 16``, or the whole call when it
  is smaller), twice, the faster kept: points per second at that size;
* sizes are powers of two from ``start`` (16, the fixed default; on a CPU lower for networks
  whose 16 points would hold over 1 GiB of activations, see :func:`start_size`) searched uphill: the next
  larger size is tried, and while it is faster the search keeps doubling up to the cap;
  otherwise it halves down to 1. It stops two sizes past the fastest one (or at the cap),
  and from then on every call of that key runs the fastest measured size;
* a call of at most ``start`` rows (one image's gradient or Grad-CAM map for a small batch) runs as
  one chunk until a larger call of the same key has measured sizes; a size larger than a whole
  call is not measured: the search stops there;
* the cap bounds memory: at most :data:`max_points` points per chunk (default 64 on a CPU,
  1024 with a GPU visible), and optionally ``max_bytes`` of estimated activations over the
  chunks in flight (see :func:`point_bytes`).

Tuning spreads over as many calls as it needs: a call with few rows measures what fits and the
next call of the same key continues. :func:`configure` changes the caps and the on-disk cache;
:func:`reset` forgets every measurement (tests).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["AUTO", "ChunkTuner", "TuningSession", "FixedSchedule", "configure", "tuner_for", "reset",
           "point_bytes", "limits", "forward_size", "clock"]

#: the ``batch_size`` value that asks for a measured chunk size
AUTO = "auto"

#: the first size measured (the fixed default of earlier versions); on a CPU lower for heavy points
#: (:func:`start_size`)
START = 16
#: on a CPU, the search starts at the largest size up to START whose chunk holds at most this many
#: bytes of estimated activations (see :func:`start_size`)
START_BYTES = 1 << 30
#: a size replaces the fastest so far only when it is this much faster (noise margin)
MARGIN = 0.02
#: timed rounds per size (the faster one counts: robust to a burst of load from other processes)
ROUNDS = 2
#: sizes tried past the fastest one before the search stops
PATIENCE = 2

_settings = {"max_points": None, "max_bytes": None, "disk_cache": None, "timer": None}


def configure(max_points: Optional[int] = None, max_bytes: Optional[int] = None, disk_cache=None,
              timer: Optional[Callable[[List[int]], float]] = None) -> None:
    """Set the caps of automatic chunk sizes and the on-disk cache for this process.

    Args:
        max_points: largest chunk (points per forward+backward pass); ``None`` restores the
            default (64 on a CPU, 1024 with a GPU visible). Also read from ``TFATTR_MAX_POINTS``.
        max_bytes: budget of estimated activation memory over the chunks in flight
            (:func:`point_bytes` × size × ``parallel_chunks``); ``None``: no byte cap.
        disk_cache: ``True`` (a JSON file ``tfattr_chunk_sizes.json`` in ``$KERAS_HOME`` or
            ``~/.keras``), a file path, or ``False``/``None`` (default: off; the
            ``TFATTR_CHUNK_CACHE`` environment variable, ``1`` or a path, turns it on). The file
            is keyed by the model's name, class, parameter count and layer count, the input
            shape, the gradient function, the device, TensorFlow's version and the CPU count.
        timer: ``timer(sizes) -> seconds`` replaces the measured time of a timed round of chunks
            of ``sizes`` (tests inject speeds with it); ``None`` measures with ``time.perf_counter``.
    """
    _settings["max_points"] = None if max_points is None else int(max_points)
    _settings["max_bytes"] = None if max_bytes is None else int(max_bytes)
    _settings["disk_cache"] = disk_cache
    _settings["timer"] = timer


def clock() -> float:
    return time.perf_counter()


def _gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def limits(device: str) -> Tuple[int, Optional[int]]:
    """``(max_points, max_bytes)`` in force for ``device``."""
    points = _settings["max_points"] or int(os.environ.get("TFATTR_MAX_POINTS", "0") or 0)
    if not points:
        on_gpu = "GPU" in device.upper() or (not device and _gpu_visible())
        points = 1024 if on_gpu else 64
    return max(1, points), _settings["max_bytes"]


def point_bytes(model, shape: Tuple[int, ...], itemsize: int) -> Optional[int]:
    """Estimated bytes one point of a chunk holds: twice (activation and its gradient) the sum
    of the model's layer outputs for an input of ``shape``; ``None`` when the model does not
    state its layers' output shapes (subclassed models, dynamic sizes)."""
    try:
        model_shape = tuple(model.inputs[0].shape[1:])
        if tuple(shape) != model_shape:
            return None
        total = 0
        for layer in model.layers:
            outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
            for out in outputs:
                dims = tuple(out.shape[1:])
                if any(d is None for d in dims):
                    return None
                total += math.prod(dims)
        return 2 * total * int(itemsize)
    except (AttributeError, ValueError, TypeError, IndexError):
        return None


@dataclass
class FixedSchedule:
    """An explicit ``batch_size``: the first chunk alone, then every chunk of ``size`` (as before
    automatic sizes existed)."""

    size: int
    _started: bool = False

    def next_round(self, remaining: int):
        if self._started:
            return None
        self._started = True
        return [min(self.size, remaining)], False

    def record(self, sizes: List[int], seconds: float) -> None:
        pass

    def estimate_chunks(self, total: int) -> int:
        return math.ceil(total / self.size)


@dataclass
class ChunkTuner:
    """What was measured for one key: points per second by size, and the decision.

    Args:
        cap: the largest size allowed (memory).
        workers: chunks in flight in a timed round.
        start: the first size measured (capped).
    """

    cap: int
    workers: int = 1
    start: int = START
    speeds: Dict[int, float] = field(default_factory=dict)  # size -> best points/s
    rounds: Dict[int, int] = field(default_factory=dict)  # size -> timed rounds done
    warm: set = field(default_factory=set)  # sizes that ran once
    too_big: Optional[int] = None  # smallest size whose round is larger than a whole call
    chosen: Optional[int] = None
    on_decide: Optional[Callable[[int], None]] = None

    def __post_init__(self):
        self.lock = threading.Lock()
        self.cap = max(1, int(self.cap))
        self.workers = max(1, int(self.workers))
        self.sizes = [2**k for k in range(int(math.log2(self.cap)) + 1)]
        if self.sizes[-1] != self.cap:
            self.sizes.append(self.cap)
        self.start = max(s for s in self.sizes if s <= max(1, self.start))

    @property
    def done(self) -> bool:
        return self.chosen is not None

    def best(self) -> Optional[int]:
        """The fastest measured size (a larger size must be ``MARGIN`` faster to replace a smaller)."""
        best = None
        for size in sorted(s for s in self.speeds if self.rounds.get(s, 0) >= ROUNDS):
            if best is None or self.speeds[size] > self.speeds[best] * (1 + MARGIN):
                best = size
        return best

    def _fits(self, size: int) -> bool:
        return self.too_big is None or size < self.too_big

    def _measured(self, size: int) -> bool:
        return self.rounds.get(size, 0) >= ROUNDS

    def next_size(self) -> Optional[int]:
        """The size to measure next (uphill from :attr:`start`), or ``None`` when the search is over."""
        if self.chosen is not None:
            return None
        if not self._measured(self.start) and self._fits(self.start):
            return self.start
        best = self.best()
        if best is None:  # even the start does not fit the calls: go down from it
            smaller = [s for s in self.sizes if self._fits(s)]
            return smaller[-1] if smaller and not self._measured(smaller[-1]) else None
        above = [s for s in self.sizes if s > self.start and self._fits(s)]
        if above and not self._measured(above[0]):
            return above[0]
        index = self.sizes.index(best)
        if best > self.start:  # uphill: up to PATIENCE sizes past the fastest
            candidates = [s for s in self.sizes[index + 1 : index + 1 + PATIENCE] if self._fits(s)]
        else:  # downhill
            candidates = list(reversed(self.sizes[max(0, index - PATIENCE) : index]))
        for size in candidates:
            if not self._measured(size):
                return size
        return None

    def decide(self) -> int:
        self.chosen = self.best() or min(self.start, self.too_big or self.start)
        if self.on_decide is not None:
            self.on_decide(self.chosen)
        return self.chosen

    def record(self, size: int, points: int, seconds: float) -> None:
        """One timed round of ``points`` at ``size`` took ``seconds``: keep the faster speed."""
        speed = points / max(seconds, 1e-9)
        self.speeds[size] = max(self.speeds.get(size, 0.0), speed)
        self.rounds[size] = self.rounds.get(size, 0) + 1

    def session(self, total: int, fresh: bool = False) -> "TuningSession":
        """The schedule of one call of ``total`` rows; ``fresh``: its chunk function is new (traced
        by the first chunk, which then runs alone and untimed)."""
        return TuningSession(self, total, fresh)


class TuningSession:
    """The chunk sizes of one engine call: rounds of sizes while the key is being tuned, then one
    size (``next_round`` returns ``None`` and :attr:`size` is the size for the rest)."""

    def __init__(self, tuner: ChunkTuner, total: int, fresh: bool):
        self.tuner = tuner
        self.total = int(total)
        self.first = True
        self.fresh = fresh
        self.timed: Optional[int] = None
        self.size = tuner.chosen or tuner.best() or tuner.start

    def estimate_chunks(self, total: int) -> int:
        return math.ceil(total / self.size)

    def _settled(self) -> int:
        tuner = self.tuner
        self.size = tuner.chosen or tuner.best() or min(tuner.start, tuner.too_big or tuner.start)
        return self.size

    def next_round(self, remaining: int):
        """``(sizes, timed)``: the chunks to run next (their rows in order, in flight together), or
        ``None``: run the rest at :attr:`size`, the first chunk alone."""
        tuner = self.tuner
        with tuner.lock:
            first, self.first = self.first, False
            if tuner.chosen is not None:
                self.size = tuner.chosen
                return None
            if self.total <= tuner.start:  # a call no larger than the first size runs whole until sizes are known
                self.size = tuner.best() or self.total
                return None
            while True:
                size = tuner.next_size()
                if size is None:
                    self.size = tuner.decide()
                    return None
                if size > self.total:  # a chunk larger than a whole call: not measurable
                    tuner.too_big = size if tuner.too_big is None else min(tuner.too_big, size)
                    continue
                break
            if first and self.fresh:  # traces the chunk function: alone, untimed
                tuner.warm.add(size)
                return [min(size, remaining)], False
            if size not in tuner.warm:  # a new batch size may set kernels up once: untimed
                if size > remaining:
                    return self._rest()
                tuner.warm.add(size)
                return [size], False
            # every size is timed on the same number of rows (`workers` chunks of START rows, or the
            # whole call if smaller), `workers` chunks in flight: equal work, comparable times (also
            # when the search starts lower: fewer rows would let load noise pick a slow size)
            wanted = min(self.total, tuner.workers * START)
            count = max(1, min(self.total // size, max(tuner.workers, -(-wanted // size))))
            if size * count > remaining:  # the next call continues
                return self._rest()
            self.timed = size
            return [size] * count, True

    def _rest(self):
        self._settled()
        return None

    def record(self, sizes: List[int], seconds: float) -> None:
        """The round of ``sizes`` took ``seconds`` (ignored unless it was a timed round)."""
        if self.timed is None:
            return
        if _settings["timer"] is not None:
            seconds = _settings["timer"](list(sizes))
        with self.tuner.lock:
            self.tuner.record(self.timed, sum(sizes), seconds)
        self.timed = None


# -- the per-process registry ---------------------------------------------------------------------

_tuners: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_by_id: Dict[tuple, ChunkTuner] = {}  # owners that cannot be weakly referenced
_registry_lock = threading.Lock()


def reset() -> None:
    """Forget every measurement of this process."""
    with _registry_lock:
        _tuners.clear()
        _by_id.clear()


def _owner(gradient_fn):
    """The object the measurements belong to: the gradient function's model, else the function."""
    model = getattr(gradient_fn, "model", None)
    return gradient_fn if model is None else model


def _kind(gradient_fn) -> tuple:
    layer = getattr(gradient_fn, "layer", None)
    return (type(gradient_fn).__name__, getattr(layer, "name", None))


def _device_name(device: str) -> str:
    if device:
        return device
    return "GPU" if _gpu_visible() else "CPU"


def start_size(model, shape: Tuple[int, ...], dtype, device: str) -> int:
    """The first size the search measures: :data:`START`, or on a CPU the largest power of two
    up to it whose chunk holds at most :data:`START_BYTES` of estimated activations
    (:func:`point_bytes`). Heavy points start lower, nearer where a CPU is fastest (224×224
    ImageNet networks: 2–4 points a chunk, against 16–32 for a small CNN at 64×64), so a first
    call spends less time at sizes the search then leaves. Only the start: the search measures
    up and down from it as before."""
    if "GPU" in device.upper():
        return START
    per_point = point_bytes(model, tuple(shape), getattr(dtype, "size", None) or getattr(dtype, "itemsize", 4))
    if not per_point:
        return START
    size = START
    while size > 1 and size * per_point > START_BYTES:
        size //= 2
    return size


def tuner_for(gradient_fn, shape: Tuple[int, ...], dtype, combine, workers: int, device: str,
              relative: bool = False, forward: bool = False) -> ChunkTuner:
    """The process's :class:`ChunkTuner` for this key (created on first use, capped by
    :func:`limits` and the byte budget, preloaded from the on-disk cache when enabled).
    ``forward``: the rows are forward passes without a gradient
    (:class:`~tfattr.core.engine.ForwardEngine`), measured apart from the gradient rows of the
    same model; a point then holds its activations only (half of :func:`point_bytes`)."""
    owner = _owner(gradient_fn)
    device = _device_name(device)
    dtype_name = getattr(dtype, "name", str(dtype))
    key = (_kind(gradient_fn), tuple(shape), dtype_name, combine, int(workers), device, bool(relative))
    if forward:
        key += ("forward",)
    with _registry_lock:
        try:
            table = _tuners.setdefault(owner, {})
        except TypeError:
            table = _by_id.setdefault((id(owner),), {})
        tuner = table.get(key)
        if tuner is not None:
            return tuner
        max_points, max_bytes = limits(device)
        cap = max_points
        if max_bytes is not None:
            itemsize = getattr(dtype, "size", 4)
            per_point = point_bytes(owner, tuple(shape), itemsize) or math.prod(shape) * itemsize * 64
            per_point = per_point // 2 if forward else per_point
            cap = max(1, min(cap, max_bytes // max(1, per_point * int(workers))))
        tuner = ChunkTuner(cap=cap, workers=workers, start=start_size(owner, shape, dtype, device))
        disk = _disk_path()
        if disk is not None:
            disk_key = _disk_key(owner, key)
            stored = _read_disk(disk).get(disk_key)
            if isinstance(stored, int) and 1 <= stored <= cap:
                tuner.chosen = stored
            tuner.on_decide = lambda size, path=disk, k=disk_key: _write_disk(path, k, size)
        table[key] = tuner
        return tuner


# -- the optional on-disk cache -------------------------------------------------------------------

def _disk_path() -> Optional[str]:
    setting = _settings["disk_cache"]
    if setting is None:
        setting = os.environ.get("TFATTR_CHUNK_CACHE") or None
        if setting in ("0", "false", "False"):
            setting = None
        elif setting in ("1", "true", "True"):
            setting = True
    if not setting:
        return None
    if setting is True:
        home = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
        return os.path.join(home, "tfattr_chunk_sizes.json")
    return os.fspath(setting)


def _disk_key(owner, key: tuple) -> str:
    import tensorflow as tf

    try:
        params = int(owner.count_params())
        layers = len(owner.layers)
    except (AttributeError, ValueError, TypeError):
        params = layers = -1
    model = (type(owner).__name__, getattr(owner, "name", ""), params, layers)
    return json.dumps([list(model), repr(key), tf.__version__, os.cpu_count()])


def _read_disk(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            table = json.load(handle)
        return table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_disk(path: str, key: str, size: int) -> None:
    from tfattr.core.files import write_text

    table = _read_disk(path)
    table[key] = int(size)
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_text(path, json.dumps(table, indent=1, sort_keys=True))
    except OSError:  # a read-only home: the cache is an optimisation
        pass


def forward_size(batch_size) -> int:
    """Rows per forward-only pass (targets, baseline scores): ``batch_size``, or :data:`START`
    for ``"auto"`` (a forward pass keeps no activations for a backward one)."""
    return START if batch_size == AUTO else int(batch_size)
