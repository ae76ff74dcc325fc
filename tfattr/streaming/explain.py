"""Explain a whole dataset into an on-disk store, streaming, resumable: :func:`explain_dataset`.

The run is a pipeline of three stages that overlap: the source decodes batch ``k + 1``
(:func:`tfattr.streaming.sources.stream`, ``tf.data`` with parallel decoding and prefetch) while
the method explains batch ``k`` on the caller's thread and a background writer thread compresses
and commits batch ``k − 1`` (:class:`tfattr.streaming.store.StoreWriter`, a bounded queue of
:data:`WRITE_QUEUE` batches, so memory stays bounded by a few batches whatever the dataset size).

One batch is one chunk of the store. A chunk is committed atomically (its marker is written last),
so a run killed at any point (SIGKILL, power loss) and started again with the same arguments
skips the finished chunks and produces the same store, bit for bit, as an uninterrupted run: the
run's settings (library version, method and every option, model fingerprint, data, target, chunk,
engine chunk size, seed, ``on_error``) are recorded at the first run and compared on every later
one; the engine chunk size (points per forward+backward pass) is a fixed integer recorded there
(``batch_size="auto"`` is measured once, :func:`engine_batch_size`), and a random method explains
batch ``b`` with the seed :func:`batch_seed` ``(seed, b)``, whatever ran before.
"""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfattr.core import checks
from tfattr.core.keys import Uncacheable, canonical
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["explain_dataset", "batch_seed", "engine_batch_size", "ImageProgress", "WRITE_QUEUE"]

#: chunks computed and waiting for the writer thread at most (the caller blocks beyond: bounded memory)
WRITE_QUEUE = 2
#: ``on_error`` values
ON_ERROR = ("raise", "skip")


# -- seeds and chunk sizes -------------------------------------------------------------------------
def batch_seed(seed: int, batch: int) -> int:
    """The seed a random method explains batch ``batch`` with: ``SeedSequence([seed, batch])``'s first
    64-bit word shifted below ``2**53`` (the range of a method's ``seed``).

    Independent of what ran before, so a resumed run draws what an uninterrupted one draws.

    Example:
        >>> batch_seed(0, 3) == batch_seed(0, 3) != batch_seed(0, 4)
        True
    """
    state = np.random.SeedSequence([int(seed), int(batch)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(11))


#: chunk sizes :func:`engine_batch_size` measures at most (beyond the first size it keeps)
_PATIENCE = 2
#: a larger size must be this much faster to be chosen over a smaller one
_MARGIN = 0.05


def given_batch_size(method):
    """The engine chunk size a method was made with: its ``batch_size`` option, for a wrapper without one
    (:class:`~tfattr.core.noise.NoiseTunnel`) the wrapped method's; ``"auto"`` when none is an int."""
    for owner in (method, getattr(method, "method", None)):
        config = getattr(owner, "config", None) or {}
        if "batch_size" in config:
            return config["batch_size"]
    return "auto"


def engine_batch_size(method, images: np.ndarray, target=None, options: Optional[Mapping[str, Any]] = None,
                      sample: int = 16) -> int:
    """A fixed engine chunk size for ``method`` on images like ``images``: its ``batch_size`` when it is
    an integer; for ``"auto"`` measured once here.

    The measurement (``"auto"``): powers of two from half of the engine's first size
    (:func:`tfattr.core.autotune.start_size`: 16, lower for networks whose chunk would hold over
    1 GiB of activations) up to the engine's cap (:func:`tfattr.core.autotune.limits`: 64 points on a
    CPU, 1024 with a GPU), each run on the first ``sample`` images once untimed (tracing) and twice
    timed (the faster counts); the search goes uphill while a size is more than 5 % faster and stops
    two sizes past the fastest. The result is an ``int`` :func:`explain_dataset` records in the
    store's settings and reuses on resume: under ``"auto"`` two runs may measure different sizes, and
    the chunk composition changes the last bits of a batched pass.

    Example:
        >>> engine_batch_size(tfattr.IntegratedGradients(model, steps=8), images)   # e.g. 32
    """
    from tfattr.core import autotune

    given = given_batch_size(method)
    if given != "auto":
        return int(given)
    options = dict(options or {})
    x = np.asarray(images)[:sample]
    if len(x) == 0:
        return autotune.START
    target = target[: len(x)] if isinstance(target, np.ndarray) else target
    model = getattr(method, "model", None)
    model = getattr(getattr(method, "method", None), "model", None) if model is None else model
    import tensorflow as tf

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    cap = autotune.limits(device)[0]
    start = autotune.start_size(model, tuple(x.shape[1:]), x.dtype, device) if model is not None else autotune.START
    sizes = [2 ** k for k in range(int(math.log2(cap)) + 1)]
    first = max(1, start // 2)
    candidates = [s for s in sizes if s >= first]
    speeds: Dict[int, float] = {}
    best = None
    for size in candidates:
        method.attribute(x, target=target, **dict(options, batch_size=size, verbose=0))  # traces, warms
        seconds = []
        for _ in range(2):
            begin = time.perf_counter()
            method.attribute(x, target=target, **dict(options, batch_size=size, verbose=0))
            seconds.append(time.perf_counter() - begin)
        speeds[size] = 1.0 / max(min(seconds), 1e-9)
        if best is None or speeds[size] > speeds[best] * (1 + _MARGIN):
            best = size
        elif candidates.index(size) - candidates.index(best) >= _PATIENCE:
            break
    return int(best)


# -- progress ---------------------------------------------------------------------------------------
def _interactive() -> bool:
    from tfattr.core.progress import interactive

    return interactive()


class ImageProgress:
    """Progress in images: on a terminal (or in a notebook) one line redrawn in place with a bar,
    images/s and the ETA; elsewhere (logs, pipes) plain lines about every 10 % (every 30 s when the
    total is unknown), no carriage returns; nothing with ``verbose=0``. ``verbose="auto"`` draws the
    bar on a terminal and writes nothing into logs (as :func:`tfattr.core.progress.progress_bar`).

    The count starts at ``done`` (images of chunks a resumed run finds finished); images/s and the
    ETA count this run's images only.
    """

    def __init__(self, total: Optional[int], verbose, done: int = 0, unit: str = "images", stream=None):
        self.total = None if total is None else int(total)
        self.done = int(done)
        self.unit = unit
        self._first = int(done)
        self._stream = stream
        interactive = _interactive()
        show = interactive if verbose == "auto" else bool(verbose)
        self.mode = None if not show else ("bar" if interactive else "lines")
        self._start = time.perf_counter()
        self._last_draw = 0.0
        step = max(1, math.ceil(self.total / 10)) if self.total else None
        self._step = step
        self._next = None if step is None else (self.done // step + 1) * step
        self._next_time = self._start + 30.0

    def _write(self, text: str) -> None:
        out = self._stream or sys.stdout
        out.write(text)
        out.flush()

    def text(self) -> str:
        elapsed = time.perf_counter() - self._start
        rate = (self.done - self._first) / elapsed if elapsed > 0 else 0.0
        count = f"{self.done}/{self.total} {self.unit}" if self.total is not None else f"{self.done} {self.unit}"
        parts = [count, f"{elapsed:.0f}s", f"{rate:.1f} {self.unit}/s"]
        if self.total is not None and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        return " - ".join(parts)

    def advance(self, count: int) -> None:
        self.done += int(count)
        if self.mode is None:
            return
        now = time.perf_counter()
        final = self.total is not None and self.done >= self.total
        if self.mode == "bar":
            if final or now - self._last_draw >= 0.1:
                self._last_draw = now
                bar = ""
                if self.total:
                    filled = int(30 * min(self.done, self.total) / self.total)
                    bar = "[" + "=" * filled + (">" if filled < 30 else "") + "." * max(0, 29 - filled) + "] "
                self._write("\r" + bar + self.text() + " " * 4)
            return
        if (self._next is not None and self.done >= self._next) or final or (self._next is None
                                                                             and now >= self._next_time):
            if self._next is not None:
                self._next = (self.done // self._step + 1) * self._step
            self._next_time = now + 30.0
            self._write(self.text() + "\n")

    def close(self) -> None:
        if self.mode == "bar":
            self._write("\r" + self.text() + " " * 40 + "\n")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# -- the background writer ------------------------------------------------------------------------
class _Writer:
    """Commits chunks on a background thread: :meth:`put` hands a chunk over (blocking while
    :data:`WRITE_QUEUE` chunks wait), an exception of the thread is raised in the caller at the
    next :meth:`put` or at :meth:`close`; :meth:`abort` lets the chunk being written finish (a
    commit is atomic, its marker last) and drops the ones waiting."""

    def __init__(self, write, size: int = WRITE_QUEUE):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tfattr-store-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            try:
                self._write(*item)
            except BaseException as error:  # handed to the caller
                self._error = error
                self._stop.set()
                return

    def _check(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, *item) -> None:
        while True:
            self._check()
            if not self._thread.is_alive():
                raise RuntimeError("the store's writer thread stopped")
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every chunk handed over is committed; raise the thread's exception, if any."""
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                self._check()
        self._thread.join()
        self._check()

    def abort(self) -> None:
        self._stop.set()
        while True:  # free the queue so the thread sees the stop (and a blocked put returns)
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join()


# -- the plan of a run --------------------------------------------------------------------------------
@dataclass
class _Plan:
    """What every batch of a run is explained with (built once, checked at the boundary)."""

    method: Any
    target: Any
    on_error: str
    seed: int
    seeded: bool
    options: Dict[str, Any]
    num_classes: Optional[int]
    item_shape: Tuple[int, ...] = ()
    engine_batch_size: Optional[int] = None
    skipped: Dict[str, int] = field(default_factory=dict)
    #: one item's attribution shape (the images' for most methods; a CAM's map), learnt from the first call
    map_shape: Optional[Tuple[int, ...]] = None


def _check_choice(name: str, value, choices) -> None:
    if not (isinstance(value, str) and value in choices):
        raise InvalidInputError(f"`{name}` must be one of {list(choices)}. " + received(name, value))


def _check_positive(name: str, value) -> int:
    if not checks.is_int(value) or value < 1:
        raise InvalidInputError(f"`{name}` must be a positive integer. " + received(name, value))
    return int(value)


def _target_spec(target):
    """``target`` checked, and its JSON form for the settings."""
    if target is None:
        return None, "top1"
    if isinstance(target, str):
        if target != "label":
            raise InvalidInputError("`target` must be None (top-1), an int, 'label' (the dataset's labels) or one int "
                                    "per item. " + received("target", target))
        return "label", "label"
    if checks.is_int(target):
        if target < 0:
            raise InvalidInputError("`target` must be a class index ≥ 0. " + received("target", target))
        return int(target), {"class": int(target)}
    if callable(target) and not hasattr(target, "__array__"):
        raise InvalidTypeError("`target` of explain_dataset must be None, an int, 'label' or one int per item (a "
                               "callable cannot be recorded for resume). " + received("target", target))
    array = np.asarray(target)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise InvalidInputError("`target` as an array must hold one int per item (1-D). "
                                + received("target", f"{array.shape} {array.dtype}"))
    if array.size and array.min() < 0:
        raise InvalidInputError("`target` must hold class indices ≥ 0. " + received("min(target)", int(array.min())))
    return array.astype(np.int64), {"array": canonical(array.astype(np.int64), "target")}


def check_target_classes(target, num_classes: Optional[int]) -> None:
    """A class ``target`` (an int, or one per item) outside the model's classes is an argument error,
    raised before any work whatever ``on_error`` says (only the data's labels follow ``on_error``)."""
    if num_classes is None or target is None or isinstance(target, str):
        return
    largest = int(np.max(target)) if np.size(target) else -1
    if largest >= num_classes:
        raise InvalidInputError(f"`target` names class {largest}; the model has {num_classes} classes. "
                                + received("target" if np.ndim(target) == 0 else "max(target)", largest))


def _num_classes(method, options: Optional[Mapping[str, Any]] = None) -> Optional[int]:
    """The classes of the output the method explains (a model with several outputs: the one its
    ``output`` option, or this run's, chooses); ``None`` when unknown."""
    from tfattr.core.targets import resolve_output

    for owner in (method, getattr(method, "method", None)):
        spec = getattr(owner, "spec", None)
        if spec is None:
            continue
        output = dict(options or {}).get("output", (getattr(owner, "config", None) or {}).get("output"))
        try:
            _, classes = resolve_output(output, spec)
        except (ValueError, TypeError):  # the method names it when it runs
            classes = spec.num_classes
        return int(classes) if classes else None
    return None


def _resolve_method(method, model, method_options, item_shape, seed, value_range=None):
    """``(method, per-call options)``: a method object (``method_options`` then override its options
    per call, checked as ``attribute`` checks them) or a registry name built on ``model`` with
    ``method_options`` as the registry's settings (the CLI's flags)."""
    if method_options is not None and not isinstance(method_options, Mapping):
        raise InvalidTypeError("`method_options` must be a dict of options. "
                               + received("type(method_options)", type(method_options).__name__))
    options = dict(method_options or {})
    if isinstance(method, str):
        from tfattr.core.ranges import resolve_value_range
        from tfattr.methods.registry import entry

        if model is None:
            raise InvalidInputError(f"A method given by name ({method!r}) needs `model=`. " + received("model", None))
        found = entry(method, "method")
        unknown = sorted(set(options) - set(found.settings))
        if unknown:
            raise InvalidInputError(f"method {method!r} reads the settings {sorted(found.settings)}; unknown: "
                                    f"{unknown} (for its other options pass a method object). "
                                    + received("method_options", sorted(options)))
        segmentation = options.get("segmentation")
        if "segmentation" in found.reads and method != "lime" and segmentation not in (None, "grid"):
            raise InvalidInputError(f"segmentation={segmentation!r} builds one feature mask per image from the "
                                    f"images the method is made with; over a dataset {method!r} needs "
                                    "segmentation='grid' (one mask for every image), or pass a method object. "
                                    + received("method_options['segmentation']", segmentation))
        settings = dict(options)
        settings.setdefault("value_range", resolve_value_range(value_range, model))
        settings.setdefault("seed", seed)
        settings["images"] = np.zeros((1,) + tuple(item_shape), np.float32)  # grid masks, drawn baselines: shape only
        built = found.make(model, settings)
        return built, {}
    if not hasattr(method, "attribute"):
        raise InvalidTypeError("`method` must be a method object (with attribute()) or a method name. "
                               + received("type(method)", type(method).__name__))
    if model is not None and model is not getattr(method, "model", model):
        raise InvalidInputError("`model` is for a method given by name; this method object is bound to another model. "
                                + received("model", getattr(model, "name", type(model).__name__)))
    if options:
        if not hasattr(method, "option_table"):
            raise InvalidInputError(f"`method_options` override the options of a method such as IntegratedGradients; "
                                    f"set the options of a {type(method).__name__} when you make it. "
                                    + received("method_options", sorted(options)))
        method.call_options(**options)  # an unknown option or a wrong value: the method's own named error
    return method, options


def check_method_range(method, options: Mapping[str, Any], value_range, name: str = "method") -> None:
    """A method object whose own ``value_range`` differs from the run's explicit ``value_range`` (the range
    8-bit files are scaled into): a named error. Its baselines and noise would be drawn in one range while
    the images lie in the other (no warning when the method's range is the wider one)."""
    if value_range is None or isinstance(method, str) or not hasattr(method, "option_table"):
        return
    try:
        own = method.call_options(**dict(options)).get("value_range")
    except Exception:  # pragma: no cover - the options were checked already
        return
    if own is None:
        return
    from tfattr.core.ranges import resolve_value_range

    wanted = resolve_value_range(value_range)
    if tuple(float(v) for v in own) != tuple(float(v) for v in wanted):
        raise InvalidInputError(
            f"{name} ({type(method).__name__}) was made with value_range={tuple(float(v) for v in own)} but the "
            f"images are in value_range={wanted} (8-bit files are scaled into it): its baselines and noise would "
            f"be drawn in another range than the images'. Make the method with the images' range. "
            + received("value_range", wanted))


def _method_key(method, options: Dict[str, Any]) -> Dict[str, Any]:
    """The method's cache key for this run's options, its ``batch_size`` left out (the engine chunk size
    is recorded on its own)."""
    if hasattr(method, "option_table"):
        key = method.cache_key(method.call_options(**options))
    else:
        key = method.cache_key()
    key = json.loads(json.dumps(key))
    for owner in (key, key.get("method") if isinstance(key.get("method"), dict) else None):
        if isinstance(owner, dict) and isinstance(owner.get("options"), dict):
            owner["options"].pop("batch_size", None)
    return key


def _settings(method, options, description, target_json, chunk, engine_bs, seed, on_error) -> Dict[str, Any]:
    from tfattr._version import __version__
    from tfattr.evaluation import model_key as _model_key

    try:
        method_key = _method_key(method, options)
        owner = getattr(method, "model", None)
        model_key = _model_key(owner if owner is not None else method.method.model)
    except Uncacheable as why:
        raise InvalidInputError(f"explain_dataset records the run's settings to resume it and to refuse another run on "
                                f"the same out=; this run cannot be recorded: {why.reason}. "
                                + received("method", type(method).__name__)) from None
    return {"tfattr": __version__, "method": method_key, "model": model_key, "data": description,
            "target": target_json, "chunk": int(chunk), "engine_batch_size": engine_bs, "seed": int(seed),
            "on_error": on_error}


def read_settings(out) -> Optional[Dict[str, Any]]:
    """The settings recorded in the store at ``out`` (``None`` when there is none;
    :func:`tfattr.streaming.store.recorded_settings`)."""
    from tfattr.streaming.store import recorded_settings

    return recorded_settings(out)


def _differences(stored, new, where: str = "") -> List[str]:
    """Human lines naming where two settings structures differ (method options by name)."""
    if isinstance(stored, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(set(stored) | set(new), key=str):
            here = f"{where}.{key}" if where else str(key)
            if key not in stored or key not in new:
                lines.append(f"{here}: " + (f"recorded {json.dumps(stored[key])}, not in this run" if key in stored
                                            else f"not recorded, this run {json.dumps(new[key])}"))
            else:
                lines.extend(_differences(stored[key], new[key], here))
        return lines
    if isinstance(stored, list) and isinstance(new, list) and len(stored) == len(new):
        if any(_differences(a, b, f"{where}[{i}]") for i, (a, b) in enumerate(zip(stored, new))):
            return _differences_leaf(stored, new, where)  # the whole list named once, as recorded
        return []
    if _same_leaf(stored, new):
        return []
    return _differences_leaf(stored, new, where)


def _same_leaf(stored, new) -> bool:
    """Two recorded JSON leaves are the same setting: NaN equals NaN (JSON reads a recorded NaN back as a
    NaN that equals nothing, so every resume of a run with a NaN setting would be refused), and a
    boolean is not a number (``True == 1`` in Python; ``1 == 1.0`` are the same number)."""
    if isinstance(stored, float) and isinstance(new, float) and math.isnan(stored) and math.isnan(new):
        return True
    if isinstance(stored, bool) or isinstance(new, bool):
        return type(stored) is type(new) and stored == new
    return stored == new


def _differences_leaf(stored, new, where: str) -> List[str]:
    text_a, text_b = json.dumps(stored, sort_keys=True), json.dumps(new, sort_keys=True)
    if len(text_a) > 120:
        text_a, text_b = text_a[:117] + "...", text_b[:117] + "..."
    return [f"{where}: recorded {text_a}, this run {text_b}"]


def _named(line: str) -> str:
    """``method.options.steps: ...`` → ``method option 'steps': ...``."""
    if line.startswith("data.first_batch_sha256:"):
        return ("data: the dataset's first batch (images, ids, labels) is not the one the store was made from "
                "(another split, order or preprocessing?)")
    for prefix, word in (("method.options.", "method option"), ("method.method.options.", "wrapped method option")):
        if line.startswith(prefix):
            name, rest = line[len(prefix):].split(":", 1)
            return f"{word} {name!r}:{rest}"
    return line


def check_settings(out, stored: Dict[str, Any], settings: Dict[str, Any]) -> None:
    """Raise a named error when ``settings`` differ from those ``stored`` at ``out`` (naming each
    differing key, a method option by its name)."""
    settings = json.loads(json.dumps(settings, sort_keys=True))  # as recorded: tuples are lists
    lines = [_named(line) for line in _differences(stored, settings)]
    if lines:
        raise InvalidInputError(f"out={os.fspath(out)!r} holds a run with other settings; differing: "
                                + "; ".join(lines) + ". Use a new out=, overwrite=True, or delete it. "
                                + received("out", os.fspath(out)))


def _prepare_out(out) -> str:
    if not isinstance(out, (str, os.PathLike)):
        raise InvalidTypeError("`out` must be a folder path. " + received("type(out)", type(out).__name__))
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise InvalidInputError("`out` must be a folder (it exists and is a file). " + received("out", out))
    return out


def check_out_outside_data(out: str, data, labels) -> None:
    """A store inside a folder whose sub-folders are the classes (``labels`` given) would be read as one
    more class folder by the next run (a resume), which then has other classes: refused at once."""
    if labels is None or not isinstance(data, (str, os.PathLike)) or not os.path.isdir(data):
        return
    folder, where = os.path.realpath(data), os.path.realpath(out)
    if os.path.commonpath([folder, where]) == folder:
        raise InvalidInputError(f"`out` is inside the data folder {os.fspath(data)!r}, whose sub-folders are the "
                                "classes (labels=): the next run (a resume) would list the store's folder as one "
                                "more class and be refused. Choose an out= outside the data folder. "
                                + received("out", out))


# -- one batch ------------------------------------------------------------------------------------------
def _batch_targets(plan: _Plan, batch, keep: np.ndarray, errors: Dict[int, str]):
    """The targets of ``batch`` (``None``: top-1) for the items in ``keep`` (updated: an out-of-range label
    with ``on_error="skip"`` is dropped with its reason in ``errors``)."""
    n = len(batch.ids)
    if plan.target is None:
        return None
    if isinstance(plan.target, int):
        values = np.full(n, plan.target, np.int64)
        what = "target"
    elif isinstance(plan.target, np.ndarray):
        stop = batch.index0 + n
        if stop > len(plan.target):
            raise InvalidInputError(f"`target` holds {len(plan.target)} classes and the data has more items (item "
                                    f"{stop - 1}, id {batch.ids[-1]!r}). " + received("len(target)", len(plan.target)))
        values = plan.target[batch.index0: stop]
        what = "target"
    else:
        if batch.labels is None:
            raise InvalidInputError("target='label' reads the dataset's labels, and the data yields none (pass "
                                    "(images, labels); a folder: labels='folders', the CLI's --labels folders; dict "
                                    "elements: label_key=). " + received("target", "label"))
        values = _labels(batch)
        if values.dtype.kind not in "uif":  # strings (b'3' would read as 3), booleans (read as 0/1), objects
            shown = [_label_value(v) for v in values[:5]]
            raise InvalidInputError(f"target='label' needs integer class labels; items {batch.index0}–"
                                    f"{batch.index0 + n - 1} have {_label_kind(values)} labels (map them to class "
                                    "indices first, or use another target). " + received("labels", shown))
        if not np.issubdtype(values.dtype, np.integer):
            if not np.all(np.isfinite(values.astype(np.float64))) or np.any(values != np.round(values)):
                raise InvalidInputError("target='label' needs integer class labels. "
                                        + received("labels", values[:5].tolist()))
        values = values.astype(np.int64)
        what = "label"
    if plan.num_classes is not None:
        for i in np.flatnonzero(keep):
            value = int(values[i])
            if not 0 <= value < plan.num_classes:
                message = f"{what} {value} is out of range: the model has {plan.num_classes} classes"
                if plan.on_error == "raise":
                    raise InvalidInputError(f"item {batch.index0 + i} (id {batch.ids[i]!r}): {message} "
                                            "(on_error='skip' skips such items). " + received(what, value))
                keep[i] = False
                errors[i] = message
                plan.skipped["label out of range"] = plan.skipped.get("label out of range", 0) + 1
    return values


def _label_kind(values: np.ndarray) -> str:
    if values.dtype.kind == "b":
        return "boolean"
    if values.dtype.kind in "SU" or any(isinstance(v, (bytes, str)) for v in values.ravel()[:5]):
        return "string"
    return f"{values.dtype} (non-numeric)"


def _label_value(value):
    """One label as the rows' ``label`` column holds it: an int, a float, or text (a string label,
    bytes decoded as UTF-8); a boolean as 0/1."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    kind = np.asarray(value).dtype.kind
    if kind in "iub":
        return int(value)
    if kind == "f":
        return float(value)
    return str(value)


def _labels(batch) -> np.ndarray:
    """The batch's labels, one per item (``(n,)`` or ``(n, 1)``; one-hot or several labels per item are
    refused rather than read as their first column)."""
    labels = np.asarray(batch.labels)
    n = len(batch.ids)
    if labels.shape not in ((n,), (n, 1)):
        raise InvalidInputError(f"the data's labels must be one class index per item; items {batch.index0}–"
                                f"{batch.index0 + n - 1} have labels of shape {labels.shape} (one-hot labels: take "
                                "their argmax first). " + received("labels.shape", labels.shape))
    return labels.reshape(n)


def batch_items(plan: _Plan, batch):
    """``(keep, errors, targets)`` of a batch: the items explained (unreadable ones and, with
    ``on_error="skip"``, labels out of range left out, their reasons in ``errors``) and the targets
    (``None``: top-1)."""
    n = len(batch.ids)
    keep = np.ones(n, bool)
    errors: Dict[int, str] = {}
    for index, _, message in batch.errors:
        i = int(index) - batch.index0
        keep[i] = False
        errors[i] = str(message)
        plan.skipped["unreadable"] = plan.skipped.get("unreadable", 0) + 1
    targets = _batch_targets(plan, batch, keep, errors)
    if getattr(plan.method, "depends_on_batch", False) and np.count_nonzero(keep) == 1:
        # FeaturePermutation swaps features between the images of one call: one image alone has none to
        # swap with (the method's own error would end the run whatever on_error says)
        i = int(np.flatnonzero(keep)[0])
        message = (f"{type(plan.method).__name__} compares each image with the others of its batch, and item "
                   f"{batch.index0 + i} ({str(batch.ids[i])!r}) is the only readable image of items "
                   f"{batch.index0}–{batch.index0 + n - 1}")
        if plan.on_error != "skip":
            raise InvalidInputError(f"{message}: choose a batch_size that leaves no batch of one image (the last "
                                    "batch holds num_items % batch_size), or on_error='skip' to skip it. "
                                    + received("readable items in the batch", 1))
        keep[i] = False
        errors[i] = message
        plan.skipped["alone in its batch"] = plan.skipped.get("alone in its batch", 0) + 1
    return keep, errors, targets


def explain_batch(plan: _Plan, batch, k: int, items=None):
    """``(arrays, rows, explanation, keep)`` of batch ``k``: the store's arrays (skipped items: NaN
    attributions, target −1, NaN score and delta, ``valid`` False), its rows, the method's
    :class:`~tfattr.core.result.Explanation` of the kept items (``None`` if none) and the kept mask.
    ``items``: :func:`batch_items`' result when the caller has it."""
    n = len(batch.ids)
    keep, errors, targets = batch_items(plan, batch) if items is None else items
    images = np.asarray(batch.images)
    target_out = np.full(n, -1, np.int32)
    scores = np.full(n, np.nan, np.float64)
    delta = np.full(n, np.nan, np.float64)
    baseline_scores = np.full(n, np.nan, np.float64)
    explanation = None
    if keep.any():
        options = dict(plan.options, batch_size=plan.engine_batch_size, verbose=0)
        if plan.seeded:
            options["seed"] = batch_seed(plan.seed, k)
        chosen = None if targets is None else targets[keep]
        explanation = plan.method.attribute(images[keep], target=chosen, **options)
        maps = np.asarray(explanation.attributions, np.float32)
        plan.map_shape = tuple(maps.shape[1:])
        attributions = np.full((n,) + plan.map_shape, np.nan, np.float32)
        attributions[keep] = maps
        if explanation.targets is not None:
            target_out[keep] = np.asarray(explanation.targets, np.int32)
        if explanation.scores is not None:
            scores[keep] = np.asarray(explanation.scores, np.float64)
        if explanation.delta is not None:
            delta[keep] = np.asarray(explanation.delta, np.float64)
        if explanation.baseline_scores is not None:
            baseline_scores[keep] = np.asarray(explanation.baseline_scores, np.float64)
    else:
        if plan.map_shape is None:  # nothing explained yet: one call on blank items tells the maps' shape
            # two items, not one: a method that works across the batch (FeaturePermutation) needs >= 2
            blank = np.zeros((2,) + images.shape[1:], images.dtype)
            blank_maps = plan.method.attribute(blank, **dict(plan.options, verbose=0)).attributions
            plan.map_shape = tuple(np.shape(blank_maps)[1:])
        attributions = np.full((n,) + plan.map_shape, np.nan, np.float32)
    labels = None  # the rows' label column: the data's class labels (not one-hot ones: none then)
    if batch.labels is not None and np.shape(batch.labels) in ((n,), (n, 1)):
        labels = _labels(batch)
    rows = []
    for i in range(n):
        label = None if labels is None else _label_value(labels[i].item() if hasattr(labels[i], "item") else labels[i])
        rows.append({"id": str(batch.ids[i]), "index": int(batch.index0 + i),
                     "target": int(target_out[i]), "score": float(scores[i]), "delta": float(delta[i]),
                     "baseline_score": float(baseline_scores[i]), "label": label,
                     "status": "ok" if keep[i] else "skipped", "error": errors.get(i, "")})
    arrays = {"attributions": attributions, "targets": target_out, "scores": scores, "delta": delta, "valid": keep}
    return arrays, rows, explanation, keep


# -- the runner ----------------------------------------------------------------------------------------
def _open_stream(data, batch_size, skip_batches, **options):
    from tfattr.streaming.sources import stream

    return stream(data, batch=batch_size, skip_batches=skip_batches, **options)


def _leading(finished, total_chunks: Optional[int]) -> int:
    """Chunks ``0 .. m−1`` all finished: the stream skips them without decoding."""
    m = 0
    while m in finished and (total_chunks is None or m < total_chunks):
        m += 1
    return m


def _summary_line(plan: _Plan, explained: int, resumed: int, seconds: float, out: str, skipped: int) -> str:
    """The final line: images explained, the speed, chunks found finished, skipped items and why."""
    reasons = ", ".join(f"{count} {why}" for why, count in plan.skipped.items())
    text = f"explain_dataset: {explained} images explained in {seconds:.1f}s"
    if seconds > 0 and explained:
        text += f" ({explained / seconds:.1f} images/s)"
    if resumed:
        text += f", {resumed} found finished"
    text += f"; {skipped} skipped in the store" + (f" (this run: {reasons}; the rows' status and error say "
                                                     "which and why)" if skipped else "")
    return text + f"; store {out!r}"


def _batch_digest(batch) -> str:
    """SHA-256 of a batch's ids, images (dtype, shape, bytes) and labels."""
    import hashlib

    digest = hashlib.sha256()
    images = np.ascontiguousarray(batch.images)
    digest.update(json.dumps([[str(i) for i in batch.ids], images.dtype.str, list(images.shape)]).encode())
    digest.update(images.tobytes())
    if batch.labels is not None:
        labels = np.asarray(batch.labels)
        digest.update(json.dumps([_label_value(v.item() if hasattr(v, "item") else v)
                                  for v in labels.ravel()]).encode())
    return digest.hexdigest()


def _check_first_batch(plan: _Plan, batch) -> None:
    """Raise what the targets of ``batch`` would raise when it is explained (nothing counted, nothing
    kept: the batch is explained later as any other)."""
    bad = {int(index) - batch.index0 for index, _, _ in batch.errors}
    keep = np.array([i not in bad for i in range(len(batch.ids))], bool)
    _batch_targets(_Plan(**{**plan.__dict__, "skipped": {}}), batch, keep, {})
    # the images against the model (another size, channels or input count), without a pass: a method
    # or the method a wrapper (NoiseTunnel) drives, with this run's options that are its own
    for owner in (plan.method, getattr(plan.method, "method", None)):
        table = getattr(owner, "option_table", None)
        if isinstance(table, Mapping) and callable(getattr(owner, "validate", None)) and keep.any():
            own = {name: value for name, value in plan.options.items() if name in table}
            images = np.asarray(batch.images)[keep][:1]
            try:
                owner.validate(images, owner.call_options(**own))
            except InvalidInputError as error:
                raise InvalidInputError(f"the data's images, of shape {tuple(images.shape[1:])}, do not fit the "
                                        f"model (image_size=(height, width) resizes them): {error}") from None
            break


def _measure(plan: _Plan, batch) -> int:
    """The engine chunk size of ``plan`` measured on ``batch``'s readable items (:func:`engine_batch_size`)."""
    bad = {int(index) - batch.index0 for index, _, _ in batch.errors}
    keep = np.array([i not in bad for i in range(len(batch.ids))], bool)
    probe_plan = _Plan(**{**plan.__dict__, "skipped": {}, "on_error": "skip"})
    targets = _batch_targets(probe_plan, batch, keep, {})
    if not keep.any():
        from tfattr.core.autotune import START

        return START
    return engine_batch_size(plan.method, np.asarray(batch.images)[keep], None if targets is None else targets[keep],
                             plan.options)


def run_stream(plans: Mapping[str, _Plan], probe, data_args: Dict[str, Any], batch_size: int, settings_of, verbose,
               stores: Sequence[Tuple[str, str]], process, overwrite: bool = False, durable: bool = True):
    """The shared loop of :func:`explain_dataset` and :func:`tfattr.streaming.evaluate.evaluate_dataset`.

    ``stores``: ``[(folder, key)]`` of the stores the run writes, ``plans[key]`` the plan of each;
    ``settings_of(key)`` their settings (read after each plan's engine chunk size is settled: the
    method's integer, the one recorded in an existing store, or measured on the first batch);
    ``process(batch, k, keys) -> {key: (arrays, rows)}`` the work of one batch for the stores that
    have not finished chunk ``k``; ``overwrite``: each store is created anew (an existing one deleted);
    ``durable``: the stores fsync each chunk before its marker (:meth:`StoreWriter.open`).
    Returns ``(explained, resumed_images, seconds)``."""
    from tfattr.streaming.store import StoreWriter

    num_items = getattr(probe, "num_items", None)
    total_chunks = None if num_items is None else math.ceil(num_items / batch_size)
    for plan in plans.values():  # known at launch: the last batch would hold one image (batch_items' error)
        if (getattr(plan.method, "depends_on_batch", False) and plan.on_error != "skip" and num_items is not None
                and num_items % batch_size == 1):
            raise InvalidInputError(
                f"{type(plan.method).__name__} compares each image with the others of its batch, and with "
                f"{num_items} items in batches of {batch_size} the last batch holds one image: choose another "
                "batch_size (or on_error='skip' to skip that image). " + received("batch_size", batch_size))
    stored = {key: None if overwrite else read_settings(folder) for folder, key in stores}
    iterator = first = None
    for _, key in stores:
        plan = plans[key]
        if plan.engine_batch_size is None and stored[key] and stored[key].get("engine_batch_size") is not None:
            plan.engine_batch_size = int(stored[key]["engine_batch_size"])
        if plan.engine_batch_size is None:  # measured on the first batch (a new store: the stream starts there)
            if iterator is None:
                iterator = iter(probe)
                first = next(iterator, None)
            plan.engine_batch_size = 16 if first is None else _measure(plan, first)
    description = getattr(probe, "description", None)
    if isinstance(description, dict) and description.get("kind") == "dataset":
        # a tf.data pipeline's description holds no digest of its content (it cannot be read without
        # streaming it): the first batch's images and ids are digested (read again on a resume, one batch)
        # so that a resume over other data (another split, order or preprocessing) is refused, not mixed in
        if iterator is None:
            iterator = iter(probe)
            first = next(iterator, None)
        description["first_batch_sha256"] = None if first is None else _batch_digest(first)
    if any(stored[key] is None for _, key in stores):
        # a new store: the first batch's targets are checked before it is created (labels missing, of
        # the wrong kind or shape, out of range with on_error="raise"), so that a run refused for its
        # arguments leaves no store behind that would refuse the corrected run as "other settings"
        if iterator is None:
            iterator = iter(probe)
            first = next(iterator, None)
        if first is not None:
            for _, key in stores:
                _check_first_batch(plans[key], first)
    writers = {}
    try:
        for folder, key in stores:
            settings = settings_of(key)
            if stored[key] is not None:
                check_settings(folder, stored[key], settings)
            writers[key] = StoreWriter.open(folder, settings, batch_size, num_items, overwrite=overwrite,
                                            durable=durable)
        finished = {key: set(writer.finished()) for key, writer in writers.items()}
        leading = _leading(set.intersection(*finished.values()), total_chunks)
        if leading > 0:  # skipped without decoding where the source allows
            iterator = iter(_open_stream(**data_args, batch_size=batch_size, skip_batches=leading))
            first = None
        elif iterator is None:
            iterator = iter(probe)
        resumed = leading * batch_size if num_items is None else min(leading * batch_size, num_items)
        if num_items is None and leading > 0:
            # unknown size: the last finished chunk may be the data's last, shorter one (a rerun of a finished
            # run, or one killed between its last commit and finish): count its items, not a full chunk's
            from tfattr.streaming.store import _read_marker

            resumed = int(_read_marker(stores[0][0], leading - 1)["stop"])
        progress = ImageProgress(num_items, verbose, done=resumed)
        items = resumed
        explained = 0
        start = time.perf_counter()
        threads = {key: _Writer(writer.write_chunk) for key, writer in writers.items()}
        try:
            for batch in (iterator if first is None else _chain(first, iterator)):
                k = batch.index0 // batch_size
                n = len(batch.ids)
                todo = [key for key in writers if k not in finished[key]]
                if todo:
                    results = process(batch, k, todo)
                    ids = [str(i) for i in batch.ids]
                    for key in todo:
                        arrays, rows = results[key]
                        threads[key].put(k, batch.index0, ids, arrays, rows)
                    explained += n
                items = batch.index0 + n
                progress.advance(n)
            for thread in threads.values():
                thread.close()
        except BaseException:
            for thread in threads.values():
                thread.abort()
            raise
        for _, key in stores:  # the data's size was unknown until now: one class per item, no more
            target = plans[key].target
            if isinstance(target, np.ndarray) and len(target) != items:
                raise InvalidInputError(f"`target` holds {len(target)} classes and the data has {items} items: one "
                                        "class per item is needed (a filtered dataset whose targets were made "
                                        "before filtering pairs later items with other items' classes). The store "
                                        "is left incomplete. " + received("len(target)", len(target)))
        for writer in writers.values():
            writer.finish(items if num_items is None else num_items)
        progress.close()
        return explained, resumed, time.perf_counter() - start
    finally:
        for writer in writers.values():
            writer.close()


def _chain(first, rest):
    yield first
    yield from rest


def explain_dataset(method, data, out, target=None, *, model=None, method_options: Optional[Mapping[str, Any]] = None,
                    split: Optional[str] = None, data_dir: Optional[str] = None, batch_size: int = 64,
                    seed: Optional[int] = None, on_error: str = "raise", verbose="auto", image_size=None,
                    image_key: str = "image", label_key: Optional[str] = "label", id_key: Optional[str] = None,
                    labels=None, channels: Optional[int] = None, value_range=None, overwrite: bool = False,
                    durable: bool = True):
    """Explain every image of ``data`` with ``method`` into the store at ``out``, streaming and resumable.

    Decoding (``tf.data``, parallel and prefetched), attribution (the caller's thread) and writing
    (a background thread, at most :data:`WRITE_QUEUE` batches waiting) overlap; memory stays bounded
    by a few batches. Each batch of ``batch_size`` images is one chunk of the store, committed
    atomically (:mod:`tfattr.streaming.store`); a run started again on the same ``out`` with the same
    arguments skips the finished chunks and produces the same store, bit for bit, as an
    uninterrupted run. Other settings on the same ``out`` are an error naming what differs.

    Args:
        method: a method object (``tfattr.IntegratedGradients(model, steps=32)``) or a registry name
            (``"ig"``, ``"rise"``, … :data:`tfattr.methods.registry.REGISTRY`, the CLI's names) built
            on ``model=`` with ``method_options`` as its settings.
        data: a ``tf.data.Dataset`` (of images, ``(image, label)`` or dicts), a TFDS name (with
            ``split=``, ``data_dir=``), a folder of image files, or arrays / ``(images, labels)``
            (:func:`tfattr.streaming.sources.stream`).
        out: the store's folder (created; :func:`tfattr.open_explanations` reads it back).
        target: ``None`` (each image's top-1 class), an int (one class for all), ``"label"`` (the
            dataset's labels; a label outside the model's classes follows ``on_error``) or one int
            per item (an array as long as the dataset).
        model: the model of a method given by name.
        method_options: a registry name's settings (``{"steps": 32, "baseline": "black"}``), or, for a
            method object, options overriding its own for this run (checked as ``attribute`` checks
            them). Every option enters the recorded settings.
        split, data_dir: a TFDS dataset's split and folder.
        batch_size: images per batch and per store chunk (default 64). The engine's chunk size
            (points per forward+backward pass) is the method's own ``batch_size``; under ``"auto"``
            it is measured once on the first batch (:func:`engine_batch_size`) and recorded.
        seed: the run's seed (default: the method's own ``seed`` option, else 0). A method with a
            ``seed`` option explains batch ``b`` with ``seed=batch_seed(seed, b)``: its draws do not
            depend on where a run started.
        on_error: ``"raise"`` (default): a corrupt or unreadable item, mixed sizes without
            ``image_size`` or a label out of range is an error naming the item (index and id);
            ``"skip"``: the item's row says ``status="skipped"`` and why (``error``), its
            attributions are NaN, target −1 and ``valid`` False; the final summary counts them.
        verbose: progress in images with images/s and the ETA: ``"auto"`` (default) a bar on a
            terminal or in a notebook and nothing in logs, ``1`` also lines in logs, ``0`` nothing.
        image_size: ``(H, W)`` every image is resized to (needed for sources of mixed sizes).
        image_key, label_key, id_key: the keys of dict elements (TFDS features).
        labels: a folder's labels: ``"folders"`` (sub-folder names, sorted, are classes 0, 1, …) or
            the class names in order (:func:`tfattr.streaming.sources.stream`).
        channels: 1 (grey) or 3 (RGB) for decoded image files (default 3).
        value_range: ``(low, high)``: 8-bit images (files, ``uint8`` arrays, TFDS images) are scaled to
            ``low + p / 255 · (high − low)`` (as ``tfattr explain --value-range``; refused for float
            images, used as they are) and a method given by name is built with it; ``None``: 8-bit
            images keep their 0–255 values and a method by name gets the model's declared range,
            else (0, 1).
        overwrite: delete an existing store at ``out`` first (only a tfattr store is deleted).
        durable: ``True`` (default): each chunk's files are fsync-ed before its commit marker, so a
            finished chunk survives a power loss; ``False`` skips the fsyncs (still atomic against a
            killed process; ~6× less time per small chunk where the disk is slow to sync).

    Returns:
        :func:`tfattr.open_explanations` of ``out``: ``.attributions``, ``.ids``, ``.targets``,
        ``.scores``, ``.delta``, ``.valid``, ``.rows()``, ``.settings``, lazy and sliceable.

    Raises:
        InvalidInputError: a wrong argument, another run's settings at ``out`` (the message names the
            differing keys, a method option by name), a bad item with ``on_error="raise"``.

    Example:
        >>> ig = tfattr.IntegratedGradients(model, steps=32, batch_size=64)
        >>> store = tfattr.explain_dataset(ig, (images, labels), "maps/", target="label")
        >>> store.attributions[:8].shape, store.rows()["status"].value_counts()
    """
    out = _prepare_out(out)
    check_out_outside_data(out, data, labels)
    batch_size = _check_positive("batch_size", batch_size)
    _check_choice("on_error", on_error, ON_ERROR)
    checks.verbose("verbose", verbose)
    if seed is not None:
        checks.seed("seed", seed)
    target, target_json = _target_spec(target)
    data_args = dict(data=data, split=split, data_dir=data_dir, image_key=image_key, label_key=label_key,
                     id_key=id_key, labels=labels, image_size=image_size, channels=channels, value_range=value_range,
                     on_error=on_error)
    probe = _open_stream(**data_args, batch_size=batch_size, skip_batches=0)
    item_shape = tuple(int(d) for d in getattr(probe, "item_shape", ()) or ())
    method, options = _resolve_method(method, model, method_options, item_shape, 0 if seed is None else seed,
                                      value_range)
    check_method_range(method, options, value_range)
    config = dict(getattr(method, "config", None) or {})
    seeded = "seed" in config
    explicit = dict(method_options or {}).get("seed") if isinstance(method_options, Mapping) else None
    if seeded and explicit is not None and seed is not None and int(explicit) != int(seed):
        raise InvalidInputError(f"`seed` ({seed}) and method_options['seed'] ({explicit}) disagree; a random method "
                                "explains batch b with batch_seed(seed, b): give one of them. "
                                + received("method_options['seed']", explicit))
    if seed is None:  # this run's method seed (method_options override the method's own): the batches' base
        seed = int((explicit if explicit is not None else config.get("seed")) or 0) if seeded else 0
    plan = _Plan(method=method, target=target, on_error=on_error, seed=int(seed), seeded=seeded, options=options,
                 num_classes=_num_classes(method, options), item_shape=item_shape)
    check_target_classes(target, plan.num_classes)
    if isinstance(target, np.ndarray) and probe.num_items is not None and len(target) != probe.num_items:
        raise InvalidInputError(f"`target` must hold one class per item ({probe.num_items}). "
                                + received("len(target)", len(target)))
    given = given_batch_size(method)
    if given != "auto":
        plan.engine_batch_size = int(given)
    description = probe.description

    def settings_of(key):
        return _settings(method, options, description, target_json, batch_size, plan.engine_batch_size, seed, on_error)

    def process(batch, k, todo):
        arrays, rows, _, _ = explain_batch(plan, batch, k)
        return {"explain": (arrays, rows)}

    explained, resumed, seconds = run_stream({"explain": plan}, probe, data_args, batch_size, settings_of, verbose,
                                             [(out, "explain")], process, overwrite=overwrite, durable=durable)
    from tfattr.streaming.store import open_explanations

    result = open_explanations(out)
    skipped = int(np.count_nonzero(~np.asarray(result.valid[:], bool)))
    if show_summary(verbose, skipped):
        print(_summary_line(plan, explained, resumed, seconds, out, skipped), flush=True)
    return result


def show_summary(verbose, skipped: int) -> bool:
    """The final line is printed with ``verbose=1``, and with ``"auto"`` on a terminal or when items were
    skipped (never silently, not even in logs); ``verbose=0`` prints nothing."""
    if verbose == "auto":
        return _interactive() or skipped > 0
    return bool(verbose)
