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
  1024 with a GPU visible), and at most ``max_bytes`` of estimated activations over the
  chunks in flight (see :func:`point_bytes`; default :data:`MEMORY_FRACTION` of the machine's
  available memory, or of the GPU's, see :func:`default_max_bytes`).

Tuning spreads over as many calls as it needs: a call with few rows measures what fits and the
next call of the same key continues. :func:`configure` changes the caps and the on-disk cache;
:func:`reset` forgets every measurement (tests).
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import threading
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

__all__ = ["AUTO", "ChunkTuner", "TuningSession", "FixedSchedule", "configure", "tuner_for", "reset",
           "point_bytes", "limits", "forward_size", "clock", "machine_memory", "default_max_bytes"]

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

#: the default byte budget (``max_bytes``) is this fraction of the memory the machine has available
#: (``MemAvailable`` of ``/proc/meminfo``, else free pages) when the tuner of a key is created, or
#: of the device's memory on a GPU (:func:`machine_memory`)
MEMORY_FRACTION = 0.25

#: the words ``TFATTR_CHUNK_CACHE`` (and a string ``disk_cache``) accept as booleans, any case
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("", "0", "false", "no", "off")

_settings = {"max_points": None, "max_bytes": None, "disk_cache": None, "timer": None}


def _positive_int(value, name: str) -> Optional[int]:
    """``value`` as a positive int (``None`` kept), else a tfattr error naming ``name``."""
    from tfattr.errors import InvalidInputError, InvalidTypeError, received

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"`{name}` must be a positive integer or None. " + received(name, value))
    if value < 1:
        raise InvalidInputError(f"`{name}` must be at least 1. " + received(name, value))
    return int(value)


def _cache_setting(value, name: str):
    """``None`` (off), ``True`` (the default file) or a path, from a ``disk_cache`` value or the
    ``TFATTR_CHUNK_CACHE`` text: boolean words (``1 true yes on`` / ``0 false no off``, any case)
    are booleans; any other string must look like a path (hold a folder separator, start with
    ``~`` or end in ``.json``), so that a mistyped word does not become a file in the current
    folder."""
    from tfattr.errors import InvalidInputError, InvalidTypeError, received

    if value is None or value is False:
        return None
    if value is True:
        return True
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not isinstance(value, str):
        raise InvalidTypeError(f"`{name}` must be True, False, None or a file path. " + received(name, value))
    word = value.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return None
    separators = [sep for sep in (os.sep, os.altsep, "/") if sep]
    if any(sep in value for sep in separators) or value.startswith("~") or word.endswith(".json"):
        return value
    raise InvalidInputError(
        f"`{name}` must be a boolean word ({'/'.join(_TRUE_WORDS)} or {'/'.join(w for w in _FALSE_WORDS if w)}) "
        "or a path to a JSON file (with a folder, e.g. ./sizes.json, or ending in .json). " + received(name, value))


def configure(max_points: Optional[int] = None, max_bytes: Optional[int] = None, disk_cache=None,
              timer: Optional[Callable[[List[int]], float]] = None) -> None:
    """Set the caps of automatic chunk sizes and the on-disk cache for this process.

    Every argument is checked here (a tfattr error naming it, not a failure at the next call).

    Args:
        max_points: largest chunk (points per forward+backward pass), a positive integer;
            ``None`` restores the default (64 on a CPU, 1024 with a GPU visible). Also read
            from ``TFATTR_MAX_POINTS`` (a positive integer; empty means unset).
        max_bytes: budget of estimated activation memory over the chunks in flight
            (:func:`point_bytes` × size × ``parallel_chunks``), a positive integer; ``None``:
            :data:`MEMORY_FRACTION` of the machine's available memory, or of the device's on a
            GPU (:func:`default_max_bytes`), read when a key is first tuned.
        disk_cache: ``True`` (a JSON file ``tfattr_chunk_sizes.json`` in ``$KERAS_HOME`` or
            ``~/.keras``), a file path, or ``False``/``None`` (default: off; the
            ``TFATTR_CHUNK_CACHE`` environment variable turns it on). A string is read as the
            variable is: ``1/true/yes/on`` and ``0/false/no/off`` (any case) are booleans, any
            other string must look like a path (a folder separator, a leading ``~`` or a
            ``.json`` ending). The file is keyed by the model's name, class, parameter count and
            layer count, the input shape, the gradient function, the device, TensorFlow's
            version and the CPU count. An unreadable or malformed file is treated as empty (one
            warning) and replaced at the next write.
        timer: ``timer(sizes) -> seconds`` replaces the measured time of a timed round of chunks
            of ``sizes`` (tests inject speeds with it); ``None`` measures with ``time.perf_counter``.
    """
    from tfattr.errors import InvalidTypeError, received

    if timer is not None and not callable(timer):
        raise InvalidTypeError("`timer` must be a callable timer(sizes) -> seconds or None. "
                               + received("timer", timer))
    settings = {"max_points": _positive_int(max_points, "max_points"),
                "max_bytes": _positive_int(max_bytes, "max_bytes"),
                "disk_cache": _cache_setting(disk_cache, "disk_cache"), "timer": timer}
    _settings.update(settings)


def clock() -> float:
    return time.perf_counter()


def _gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def _env_max_points() -> Optional[int]:
    from tfattr.errors import InvalidInputError, received

    text = os.environ.get("TFATTR_MAX_POINTS", "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise InvalidInputError("The environment variable TFATTR_MAX_POINTS must be a positive integer "
                                "(points per chunk) or empty. " + received("TFATTR_MAX_POINTS", text))
    return value


def _meminfo_available() -> Optional[int]:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gpu_memory(device: str) -> Optional[int]:
    """The memory TensorFlow gives the GPU ``device`` (its ``memory_limit``; the smallest GPU's
    when ``device`` names none), else ``None``."""
    try:
        from tensorflow.python.client import device_lib

        gpus = [d for d in device_lib.list_local_devices() if d.device_type == "GPU"]
        named = [d for d in gpus if device.upper().endswith(d.name.upper().split("DEVICE:")[-1])]
        found = [int(d.memory_limit) for d in (named or gpus) if int(d.memory_limit) > 0]
        return min(found) if found else None
    except Exception:  # noqa: BLE001 - a private API: no reading means no device budget
        return None


def machine_memory(device: str = "") -> Optional[int]:
    """Bytes of memory chunks may use on ``device``: on a GPU the device's memory (TensorFlow's
    ``memory_limit``), else the machine's available memory (``MemAvailable`` of
    ``/proc/meminfo``, else ``os.sysconf`` free pages); ``None`` when it cannot be read."""
    if "GPU" in device.upper():
        memory = _gpu_memory(device)
        if memory:
            return memory
    memory = _meminfo_available()
    if memory:
        return memory
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def default_max_bytes(device: str = "") -> Optional[int]:
    """The byte budget when ``max_bytes`` is not set: :data:`MEMORY_FRACTION` of
    :func:`machine_memory` (``None`` when the memory cannot be read)."""
    memory = machine_memory(device)
    return None if not memory else max(1, int(memory * MEMORY_FRACTION))


def limits(device: str) -> Tuple[int, Optional[int]]:
    """``(max_points, max_bytes)`` in force for ``device``."""
    points = _settings["max_points"] or _env_max_points()
    if not points:
        on_gpu = "GPU" in device.upper() or (not device and _gpu_visible())
        points = 1024 if on_gpu else 64
    max_bytes = _settings["max_bytes"]
    if max_bytes is None:
        max_bytes = default_max_bytes(device)
    return max(1, points), max_bytes


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
            if type(stored) is int and 1 <= stored <= cap:
                tuner.chosen = stored
            tuner.on_decide = lambda size, path=disk, k=disk_key: _write_disk(path, k, size)
        table[key] = tuner
        return tuner


# -- the optional on-disk cache -------------------------------------------------------------------

def _disk_path() -> Optional[str]:
    setting = _settings["disk_cache"]
    if setting is None:
        setting = _cache_setting(os.environ.get("TFATTR_CHUNK_CACHE", ""), "TFATTR_CHUNK_CACHE")
    if not setting:
        return None
    if setting is True:
        home = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
        return os.path.join(home, "tfattr_chunk_sizes.json")
    return os.path.expanduser(os.fspath(setting))


def _disk_key(owner, key: tuple) -> str:
    import tensorflow as tf

    try:
        params = int(owner.count_params())
        layers = len(owner.layers)
    except (AttributeError, ValueError, TypeError):
        params = layers = -1
    model = (type(owner).__name__, getattr(owner, "name", ""), params, layers)
    return json.dumps([list(model), repr(key), tf.__version__, os.cpu_count()])


#: a cache file larger than this is not read (it holds one small entry per model and input)
MAX_CACHE_BYTES = 4 << 20
_warned: set = set()
_disk_lock = threading.Lock()  # one read-modify-write at a time in this process (flock: across processes)


def _warn_once(path: str, problem: str) -> None:
    if (path, problem) in _warned:
        return
    _warned.add((path, problem))
    warnings.warn(f"tfattr's chunk-size cache {path!r} {problem}; it is treated as empty (chunk sizes are "
                  "measured again) and replaced at the next write.", UserWarning, stacklevel=3)


def _read_disk(path: str) -> dict:
    """The cache's entries ``{key: size}``; ``{}`` (one warning) for an unreadable or malformed
    file: too large, not UTF-8 JSON, nested beyond Python's recursion limit, not an object.
    Entries that are not a string key with a positive integer size are dropped."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CACHE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as error:
        _warn_once(path, f"cannot be read ({type(error).__name__})")
        return {}
    if len(data) > MAX_CACHE_BYTES:
        _warn_once(path, f"is larger than {MAX_CACHE_BYTES} bytes")
        return {}
    try:
        table = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (ValueError, RecursionError, MemoryError) as error:
        _warn_once(path, f"is not valid JSON ({type(error).__name__})")
        return {}
    if not isinstance(table, dict):
        _warn_once(path, f"holds a JSON {type(table).__name__}, not an object")
        return {}
    clean = {k: v for k, v in table.items() if isinstance(k, str) and type(v) is int and v >= 1}
    if len(clean) != len(table):
        _warn_once(path, "has entries that are not a positive integer size (dropped)")
    return clean


@contextlib.contextmanager
def _file_lock(path: str):
    """An exclusive ``flock`` on ``path + ".lock"`` (two processes writing the cache keep both
    entries); nothing where locks are unavailable (a read-only folder, no ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not Linux/macOS
        yield
        return
    try:
        handle = open(path + ".lock", "a+b")
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        handle.close()  # releases the lock


def _write_disk(path: str, key: str, size: int) -> None:
    from tfattr.core.files import write_text

    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with _disk_lock, _file_lock(path):
            table = _read_disk(path)
            table[key] = int(size)
            write_text(path, json.dumps(table, indent=1, sort_keys=True))
    except OSError as error:  # a read-only home, a folder at the path: the cache is an optimisation
        _warn_once(path, f"cannot be written ({type(error).__name__})")


def forward_size(batch_size) -> int:
    """Rows per forward-only pass (targets, baseline scores): ``batch_size``, or :data:`START`
    for ``"auto"`` (a forward pass keeps no activations for a backward one)."""
    return START if batch_size == AUTO else int(batch_size)
