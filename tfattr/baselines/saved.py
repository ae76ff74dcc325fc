"""Export and reuse trained baselines: a TF SavedModel plus ``metadata.json``, written atomically.

A saved baseline is a folder::

    saved_baselines/NAME/
        saved_model.pb, variables/    a tf.Module whose "serving_default" signature takes no
                                      input and returns {"baseline": (H, W, C) tensor}
        metadata.json                 the classifier's fingerprint, input shape and dtype, value
                                      range, preprocessing, λ, loss, steps, target distribution,
                                      before/after output statistics, library versions

The classifier is *not* inside it (the folder holds one tensor); its fingerprint
(:func:`~tfattr.baselines.uniform_output.model_fingerprint`) ties the baseline to it.
Any TensorFlow program reads it with
``tf.saved_model.load(path).signatures["serving_default"]()["baseline"]``.

:func:`save_baseline` writes into a temporary folder next to the destination and moves it
into place: over an existing destination by an atomic exchange of the two folders where the
system has one (Linux ``renameat2``), else by renaming the old folder aside first. The
destination always holds the old complete baseline or the new one: a save killed between the
two renames leaves the old one aside (``.NAME.old-HOST-PID-…``), and the next load or save puts
it back. Temporary folders carry their host and process id; a save removes those of this
destination whose process is gone (or, when that cannot be told, that are a day old).
:func:`check_destination` refuses a path a save could not use, before any work;
:func:`load_baseline` checks the fingerprint and input shape against a model when given one.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
import warnings
from typing import Any, Dict, Optional, Union

import numpy as np
import tensorflow as tf

from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = [
    "METADATA_FILE",
    "BaselineMismatchError",
    "BaselineMismatchWarning",
    "SavedBaseline",
    "save_baseline",
    "check_destination",
    "recover_interrupted_save",
    "load_baseline",
    "is_saved_baseline",
]

METADATA_FILE = "metadata.json"
FORMAT = "tfattr.saved_baseline"
FORMAT_VERSION = 1
SIGNATURE = "serving_default"
OUTPUT_KEY = "baseline"


class BaselineMismatchError(InvalidInputError):
    """A saved baseline was trained for another model (fingerprint or input shape differ)."""


class BaselineMismatchWarning(UserWarning):
    """:func:`load_baseline` with ``strict=False``: the baseline was trained for another model."""


def is_saved_baseline(path) -> bool:
    """``True`` when ``path`` is a folder holding a ``metadata.json`` (a saved baseline)."""
    try:
        path = os.fspath(path)
    except TypeError:
        return False
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, METADATA_FILE))


class _BaselineModule(tf.Module):
    """What the SavedModel holds: the baseline tensor and a signature that returns it."""

    def __init__(self, baseline: np.ndarray):
        super().__init__(name="saved_baseline")
        self.baseline = tf.Variable(baseline, trainable=False, name="baseline")

    @tf.function(input_signature=[])
    def serve(self):
        return {OUTPUT_KEY: tf.identity(self.baseline)}


# -- saved baseline objects ------------------------------------------------------------------
class SavedBaseline:
    """A loaded baseline: the tensor as NumPy (:attr:`array`) and its :attr:`metadata`.

    Calling it returns the baseline, so it can be passed to any IG-family method
    (``IntegratedGradients(model, baseline=loaded)``); with the batch ``x`` it first
    checks that the images have the baseline's shape.

    Attributes:
        path: the folder it was loaded from.
        array: ``(H, W, C)`` baseline in the metadata's dtype.
        metadata: the parsed ``metadata.json``.
        module: the object returned by ``tf.saved_model.load``.
    """

    def __init__(self, path: str, array: np.ndarray, metadata: Dict[str, Any], module=None):
        self.path = path
        self.array = array
        self.metadata = metadata
        self.module = module

    @property
    def __name__(self) -> str:  # the registry names callables by __name__
        return "saved:" + os.path.basename(os.path.normpath(self.path))

    @property
    def fingerprint(self) -> str:
        return self.metadata["model"]["fingerprint"]

    @property
    def value_range(self):
        return tuple(self.metadata["baseline"]["value_range"])

    @property
    def preprocessing(self) -> Optional[str]:
        return self.metadata["baseline"].get("preprocessing")

    def __call__(self, x=None) -> np.ndarray:
        if x is not None:
            shape = tuple(np.shape(x))[1:]
            if shape != self.array.shape:
                raise InvalidInputError(
                    f"The saved baseline {self.path!r} has shape {self.array.shape}; the images must "
                    f"be (batch, {', '.join(map(str, self.array.shape))}). " + received("inputs.shape", tuple(np.shape(x)))
                )
        return self.array

    def __repr__(self) -> str:
        return f"SavedBaseline({self.path!r}, shape={self.array.shape}, dtype={self.array.dtype})"

    def cache_key(self) -> Dict[str, Any]:
        """The content this object returns: its tensor's hash and its metadata (result caches key
        a loaded baseline by this, not by its path, which may since hold another baseline)."""
        from tfattr.core.keys import array_digest

        return {"array": array_digest(self.array), "metadata": json.loads(json.dumps(self.metadata, default=str))}

    def check_model(self, model, strict: bool = True) -> bool:
        """Check that ``model`` is the classifier the baseline was trained for.

        Compares the input shape and the fingerprint (architecture and weights hashes).
        Raises :class:`BaselineMismatchError` on a mismatch, or with ``strict=False`` warns
        (:class:`BaselineMismatchWarning`) and returns ``False``. Returns ``True`` on a match.
        """
        from tfattr.baselines.records import model_fingerprint

        problems = []
        inputs = getattr(model, "inputs", None) or []
        if len(inputs) != 1:
            raise InvalidTypeError("`model` must be a Keras model with one input. "
                                   + received("type(model)", type(model).__name__))
        shape = tuple(inputs[0].shape)[1:]
        expected = tuple(self.metadata["baseline"]["shape"])
        if len(shape) != len(expected) or any(d is not None and d != e for d, e in zip(shape, expected)):
            problems.append(f"input shape {shape} != the baseline's {expected}")
        saved = self.metadata["model"]
        actual = model_fingerprint(model)
        if actual["fingerprint"] != saved["fingerprint"]:
            which = [part for part in ("architecture", "weights") if actual[part] != saved.get(part)]
            problems.append(f"fingerprint differs ({' and '.join(which) or 'hash'}): trained for "
                            f"{saved.get('name')!r} {saved['fingerprint'][:19]}…, got {actual['fingerprint'][:19]}…")
        if not problems:
            return True
        message = (f"The saved baseline {self.path!r} was trained for another model: " + "; ".join(problems)
                   + ". Retrain it (tfattr baseline train) or pass strict=False. "
                   + received("model.name", getattr(model, "name", None)))
        if strict:
            raise BaselineMismatchError(message)
        warnings.warn(message, BaselineMismatchWarning, stacklevel=3)
        return False

    def report(self) -> str:
        """The before/after statistics recorded at training time, as text."""
        try:
            return self._report()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise InvalidInputError(
                f"The metadata of {self.path!r} is incomplete: {METADATA_FILE} lacks or garbles the statistics "
                f"recorded at training time ({type(error).__name__}: {error}). " + received("path", self.path)
            ) from None

    def _report(self) -> str:
        from tfattr.baselines.records import format_report

        meta = self.metadata
        stats = meta["statistics"]
        training = meta["training"]
        config = dict(training, value_range=meta["baseline"]["value_range"])
        header = (f"{self.path}: {tuple(meta['baseline']['shape'])} {meta['baseline']['dtype']} baseline for model "
                  f"{meta['model'].get('name')!r} ({meta['model']['fingerprint'][:19]}…), start {meta['baseline'].get('start')!r}, "
                  f"preprocessing {meta['baseline'].get('preprocessing')!r}, tfattr {meta.get('library_version')}")
        extra = (f"steps {training['steps_run']} of {training['steps']} (best at {training['best_step']}"
                 f"{', stopped early' if training.get('stopped_early') else ''}"
                 f"{', final kept' if training.get('keep') == 'final' else ''}), optimizer {training.get('optimizer')}, "
                 f"learning rate {training.get('learning_rate')}")
        body = format_report(stats["before"], stats["after"], stats["pixels"], config,
                             meta["target_distribution"]["values"], extra=extra)
        return header + "\n" + body


# -- save ----------------------------------------------------------------------------------
def _metadata(result, name: str) -> Dict[str, Any]:
    import keras

    from tfattr._version import __version__
    from tfattr.baselines.records import TrainedBaseline

    if isinstance(result, SavedBaseline):
        meta = json.loads(json.dumps(result.metadata))
        meta["name"] = name
        return meta
    if not isinstance(result, TrainedBaseline):
        raise InvalidTypeError(
            "`result` must be what train_uniform_baseline returns (a TrainedBaseline) or a loaded "
            "SavedBaseline. " + received("type(result)", type(result).__name__)
        )
    target = np.asarray(result.target_distribution, np.float64)
    config = result.config
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "library_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "signature": {"name": SIGNATURE, "output": OUTPUT_KEY},
        "model": dict(result.model_info),
        "baseline": {
            "shape": list(result.baseline.shape),
            "dtype": str(result.baseline.dtype),
            "value_range": list(config["value_range"]),
            "preprocessing": config["preprocessing"],
            "start": config["start"],
        },
        "training": {
            "method": "Lerma & Lucas 2022, eq. 8: lam * L_out(o_b, o_t) + (1 - lam) * MSE(b, b0)",
            "lam": config["lam"],
            "output_loss": config["output_loss"],
            "outputs": config["outputs"],
            "steps": config["steps"],
            "steps_run": result.steps_run,
            "best_step": result.best_step,
            "stopped_early": result.stopped_early,
            "patience": config["patience"],
            "min_delta": config["min_delta"],
            "optimizer": config["optimizer"],
            "learning_rate": config["learning_rate"],
            "keep": config.get("keep", "best"),
            "seed": config["seed"],
            "seconds": round(float(result.seconds), 3),
        },
        "target_distribution": {
            "kind": "uniform" if np.allclose(target, 1.0 / target.size, rtol=0, atol=1e-12) else "custom",
            "values": [float(v) for v in target],
        },
        "statistics": {"before": result.before, "after": result.after, "pixels": result.pixels},
    }


def _write_savedmodel(folder: str, array: np.ndarray) -> None:
    module = _BaselineModule(array)
    tf.saved_model.save(module, folder, signatures={SIGNATURE: module.serve.get_concrete_function()})


def _write_metadata(folder: str, metadata: Dict[str, Any]) -> None:
    with open(os.path.join(folder, METADATA_FILE), "w", encoding="utf-8") as handle:
        json.dump(metadata, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


# -- leftovers of interrupted saves -----------------------------------------------------------------
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<rest>.+)$")
_OWNER = re.compile(r"^(?P<host>.+)-(?P<pid>\d+)-[^-]+$")
#: a leftover whose owner cannot be checked (another host, an older naming, a reused pid) is removed at this age
STALE_SECONDS = 24 * 3600
#: how long a load waits for a live save that is between its two renames
RECOVERY_WAIT_SECONDS = 2.0
_ACTIVE = set()  # temporary and aside folders of the saves running in this process
_ACTIVE_LOCK = threading.Lock()


def _owner_alive(folder: str) -> Optional[bool]:
    """Whether the save that made ``folder`` still runs: ``True``/``False``, or ``None`` when it cannot be told."""
    match = _LEFTOVER.match(os.path.basename(folder))
    owner = _OWNER.match(match.group("rest")) if match else None
    if owner is None or owner.group("host") != _HOST:
        return None
    pid = int(owner.group("pid"))
    if pid == os.getpid():
        with _ACTIVE_LOCK:
            return os.path.abspath(folder) in _ACTIVE
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return None
    return True


def _age(folder: str) -> float:
    """Seconds since ``folder``'s entries last changed."""
    try:
        return time.time() - os.stat(folder).st_mtime
    except OSError:
        return 0.0


def _moved(folder: str) -> float:
    """When ``folder`` was last renamed (its ctime), 0 if it is gone."""
    try:
        return os.stat(folder).st_ctime
    except OSError:
        return 0.0


def _stale(folder: str) -> bool:
    return _owner_alive(folder) is False or _age(folder) > STALE_SECONDS


def _leftovers(parent: str, name: str, kind: str):
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    found = []
    for entry in entries:
        match = _LEFTOVER.match(entry)
        if match and match.group("name") == name and match.group("kind") == kind:
            found.append(os.path.join(parent, entry))
    return found


def _remove(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        try:
            os.remove(path)
        except OSError:
            pass
    elif os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


def recover_interrupted_save(path: Union[str, os.PathLike]) -> None:
    """A save killed between its two renames left ``path`` missing and the old baseline aside: put it back.

    A save that is still between them (its process lives) gets ``RECOVERY_WAIT_SECONDS`` to finish.
    """
    absolute = os.path.abspath(os.fspath(path))
    if os.path.lexists(absolute):
        return
    parent, name = os.path.split(absolute)
    asides = [folder for folder in _leftovers(parent, name, "old") if is_saved_baseline(folder)]
    for aside in sorted(asides, key=_moved, reverse=True):  # the most recently moved aside first
        if _owner_alive(aside):
            deadline = time.monotonic() + RECOVERY_WAIT_SECONDS
            while time.monotonic() < deadline and not os.path.lexists(absolute) and os.path.lexists(aside):
                time.sleep(0.01)
            if os.path.lexists(absolute) or (os.path.lexists(aside) and _owner_alive(aside)):
                return
        try:
            os.rename(aside, absolute)
            return
        except OSError:
            if os.path.lexists(absolute):
                return


def _clean_leftovers(parent: str, name: str) -> None:
    """Remove this destination's temporary folders of dead saves (and asides, once the destination exists)."""
    kinds = ("tmp", "old") if os.path.lexists(os.path.join(parent, name)) else ("tmp",)
    for kind in kinds:
        for folder in _leftovers(parent, name, kind):
            if _stale(folder):
                _remove(folder)


def _exchange(a: str, b: str) -> bool:
    """Swap the paths ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns ``False`` where the system or the filesystem has no such call (nothing was moved).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), b)


def _exchange_supported(folder: str) -> bool:
    """Whether :func:`_exchange` works for folders inside ``folder``."""
    a = tempfile.mkdtemp(prefix=".exchange-probe-", dir=folder)
    b = tempfile.mkdtemp(prefix=".exchange-probe-", dir=folder)
    try:
        return _exchange(a, b)
    finally:
        os.rmdir(a)
        os.rmdir(b)


def _register(folder: str, active: bool) -> None:
    with _ACTIVE_LOCK:
        (_ACTIVE.add if active else _ACTIVE.discard)(os.path.abspath(folder))


# -- check and save ------------------------------------------------------------------------------------
def check_destination(path: Union[str, os.PathLike], overwrite: bool = False) -> str:
    """Check that :func:`save_baseline` can write ``path``, before any work (the CLI calls it before training).

    Refuses an existing path that is not a saved baseline, an existing baseline without
    ``overwrite=True``, a path below a file, and a folder that cannot be written into
    (read-only, no permission). Puts back a baseline left aside by a killed save first.

    Returns:
        The absolute path.

    Raises:
        InvalidInputError: naming ``path`` (or ``overwrite``).
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise InvalidTypeError("`path` must be a folder path. " + received("path", path)) from None
    absolute = os.path.abspath(path)
    if not path or not os.path.basename(absolute):
        raise InvalidInputError("`path` must name a folder. " + received("path", path))
    recover_interrupted_save(absolute)
    if os.path.lexists(absolute):
        if not is_saved_baseline(absolute):
            raise InvalidInputError(f"{path!r} exists and is not a saved baseline; refusing to replace it. "
                                    + received("path", path))
        if not overwrite:
            raise InvalidInputError(f"{path!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it. "
                                    + received("overwrite", overwrite))
    ancestor = os.path.dirname(absolute)
    while not os.path.lexists(ancestor) and os.path.dirname(ancestor) != ancestor:
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise InvalidInputError(f"{path!r} cannot be created: {ancestor!r} is not a folder. " + received("path", path))
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{path!r} cannot be saved: cannot write into {ancestor!r} (read-only or no "
                                "permission). " + received("path", path))
    return absolute


def save_baseline(result, path: Union[str, os.PathLike], overwrite: bool = False) -> str:
    """Export a trained baseline as a TF SavedModel plus ``metadata.json``, atomically.

    Everything is written into a temporary folder beside ``path``, read back and checked,
    then moved to ``path``. An existing ``path`` (only a saved baseline, and only with
    ``overwrite=True``) is swapped with it atomically where the system can (Linux), else
    renamed aside first; the old folder is deleted after. Whatever interrupts the save,
    ``path`` holds the old complete baseline or the new one (after a kill between the two
    renames of the fallback, the next load or save puts the old one back), and leftovers of
    dead saves are removed by the next save.

    Args:
        result: a :class:`~tfattr.baselines.uniform_output.TrainedBaseline` (or a loaded
            :class:`SavedBaseline`, to copy it).
        path: destination folder, e.g. ``"saved_baselines/NAME"``.
        overwrite: replace an existing saved baseline at ``path``.

    Returns:
        ``path``.

    Example:
        >>> trained = train_uniform_baseline(model)
        >>> save_baseline(trained, "saved_baselines/my_model_uniform")
        'saved_baselines/my_model_uniform'
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise InvalidTypeError("`path` must be a folder path. " + received("path", path)) from None
    if not path or not os.path.basename(os.path.abspath(path)):
        raise InvalidInputError("`path` must name a folder. " + received("path", path))
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute)
    metadata = _metadata(result, name)
    array = np.ascontiguousarray(result.array)
    check_destination(path, overwrite)
    os.makedirs(parent, exist_ok=True)
    _clean_leftovers(parent, name)
    tmp = os.path.abspath(tempfile.mkdtemp(prefix=f".{name}.tmp-{_HOST}-{os.getpid()}-", dir=parent))
    _register(tmp, True)
    aside = None
    try:
        from tfattr.core.files import folder_mode

        os.chmod(tmp, folder_mode())  # mkdtemp makes it private; the result is an ordinary folder
        _write_savedmodel(tmp, array)
        _write_metadata(tmp, metadata)
        written = load_baseline(tmp)
        if written.array.shape != array.shape or written.array.dtype != array.dtype \
                or not np.array_equal(written.array, array):
            raise OSError(f"the SavedModel written for {path!r} does not read back the same tensor")
        if not os.path.lexists(absolute):
            os.rename(tmp, absolute)
        elif not _exchange(tmp, absolute):  # else `tmp` now holds the old baseline
            aside = os.path.join(parent, f".{name}.old-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}")
            _register(aside, True)
            os.rename(absolute, aside)
            try:
                os.rename(tmp, absolute)
            except BaseException:
                os.rename(aside, absolute)
                raise
    finally:
        _remove(tmp)  # the half-written new baseline, or the old one after an exchange
        if aside is not None and os.path.lexists(absolute):  # else it holds the only copy: kept for recovery
            _remove(aside)
        _register(tmp, False)
        if aside is not None:
            _register(aside, False)
    _CACHE.clear()
    return path


# -- load ----------------------------------------------------------------------------------
def load_baseline(path: Union[str, os.PathLike], model=None, strict: bool = True) -> SavedBaseline:
    """Load a saved baseline with ``tf.saved_model.load``; check it against ``model`` if given.

    Args:
        path: a folder written by :func:`save_baseline`.
        model: the classifier it will be used with: its input shape and fingerprint
            (architecture + weights hash) must match the metadata.
        strict: on a mismatch raise :class:`BaselineMismatchError` (default) or, when
            ``False``, warn with :class:`BaselineMismatchWarning`.

    Returns:
        A :class:`SavedBaseline` (``.array``, ``.metadata``; callable, usable as ``baseline=``).

    Example:
        >>> loaded = load_baseline("saved_baselines/digits_on_photos_uniform", model=model)
        >>> tfattr.IntegratedGradients(model, baseline=loaded).attribute(images)
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise InvalidTypeError("`path` must be a folder path. " + received("path", path)) from None
    recover_interrupted_save(path)  # a save killed between its two renames left the baseline aside
    if not os.path.isdir(path):
        raise InvalidInputError(f"No saved baseline folder at {path!r}. " + received("path", path))
    meta_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise InvalidInputError(f"{path!r} is not a saved baseline: it has no {METADATA_FILE}. " + received("path", path))
    try:
        with open(meta_path, encoding="utf-8") as handle:
            metadata = json.load(handle)
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"Cannot read {meta_path!r}: {error}. " + received("path", path)) from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise InvalidInputError(f"{meta_path!r} is not tfattr baseline metadata. "
                                + received("format", metadata.get("format") if isinstance(metadata, dict) else None))
    version = metadata.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidInputError(f"{meta_path!r} has no integer format_version. " + received("format_version", version))
    if version > FORMAT_VERSION:
        raise InvalidInputError(f"{path!r} was written by a newer tfattr (format {metadata.get('format_version')}). "
                                + received("format_version", metadata.get("format_version")))
    _check_metadata(metadata, meta_path, path)
    signature = metadata.get("signature", {})
    try:
        module = tf.saved_model.load(path)
        outputs = module.signatures[signature.get("name", SIGNATURE)]()
        array = outputs[signature.get("output", OUTPUT_KEY)].numpy()
    except Exception as error:  # a truncated or damaged SavedModel fails in many ways (IndexError, DataLossError, ...)
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise InvalidInputError(f"Cannot read the SavedModel in {path!r}: the folder is damaged or incomplete "
                                f"({type(error).__name__}: {lines[0] if lines else ''}). " + received("path", path)) from None
    expected_shape = tuple(metadata["baseline"]["shape"])
    if array.shape != expected_shape or str(array.dtype) != metadata["baseline"]["dtype"]:
        raise InvalidInputError(
            f"{path!r} holds a {array.shape} {array.dtype} tensor but its metadata says "
            f"{expected_shape} {metadata['baseline']['dtype']}. " + received("path", path)
        )
    loaded = SavedBaseline(path, array, metadata, module)
    if model is not None:
        loaded.check_model(model, strict=strict)
    return loaded


def folder_digest(path: Union[str, os.PathLike]) -> str:
    """SHA-256 of every file in a saved baseline folder (relative paths and bytes, sorted, through
    symbolic links):
    ``saved_model.pb``, ``variables/*``, ``metadata.json``. Saving another baseline at the same
    path changes it, so result caches key a baseline given by its folder with it."""
    import hashlib

    root = os.fspath(path)
    hasher = hashlib.sha256()
    seen = set()
    # symbolic links are followed (a ``variables`` link to another folder is part of the content),
    # each real folder once (a link cycle ends)
    for folder, subfolders, files in os.walk(root, followlinks=True):
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in seen:
            subfolders[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        subfolders.sort()
        for name in sorted(files):
            full = os.path.join(folder, name)
            hasher.update(os.path.relpath(full, root).replace(os.sep, "/").encode() + b"\0")
            _hash_file(hasher, full)
            hasher.update(b"\0")
    return hasher.hexdigest()


def _hash_file(hasher, full: str) -> None:
    """Feed ``full``'s bytes to ``hasher``; a FIFO, socket or device (which no SavedModel reader
    opens, and whose reading would block or never end: ``/dev/zero``) by its type only, a dangling
    link by its target."""
    import stat

    try:
        # without blocking: opening a FIFO no one writes to would wait forever
        descriptor = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        if not os.path.islink(full):
            raise
        hasher.update(b"<dangling link>" + os.fsencode(os.readlink(full)))
        return
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            hasher.update(f"<not a regular file: {stat.S_IFMT(mode):o}>".encode())
            return
        while True:
            block = os.read(descriptor, 1 << 20)
            if not block:
                break
            hasher.update(block)
    finally:
        os.close(descriptor)


#: what every metadata.json holds (save_baseline writes all of it): section -> keys
_REQUIRED_METADATA = {
    "model": ("fingerprint",),
    "baseline": ("shape", "dtype", "value_range"),
    "training": ("steps", "steps_run", "best_step"),
    "statistics": ("before", "after", "pixels"),
    "target_distribution": ("values",),
}


def _check_metadata(metadata: Dict[str, Any], meta_path: str, path: str) -> None:
    """Raise an error naming the folder when ``metadata.json`` lacks a section or key the format has."""
    for section, keys in _REQUIRED_METADATA.items():
        part = metadata.get(section)
        for key in keys:
            if not isinstance(part, dict) or key not in part:
                raise InvalidInputError(f"{meta_path!r} lacks {section}.{key}: it is not complete tfattr baseline "
                                        "metadata. " + received("path", path))
    shape, dtype = metadata["baseline"]["shape"], metadata["baseline"]["dtype"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise InvalidInputError(f"{meta_path!r}: baseline.shape must be a list of positive integers. "
                                + received("baseline.shape", shape))
    if not isinstance(dtype, str) or not isinstance(metadata["model"]["fingerprint"], str):
        raise InvalidInputError(f"{meta_path!r}: baseline.dtype and model.fingerprint must be strings. "
                                + received("baseline.dtype", dtype))
    value_range = metadata["baseline"]["value_range"]
    if not isinstance(value_range, list) or len(value_range) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value_range):
        raise InvalidInputError(f"{meta_path!r}: baseline.value_range must be [low, high]. "
                                + received("baseline.value_range", value_range))


_CACHE: Dict[Any, SavedBaseline] = {}
_CACHE_LOCK = threading.Lock()


def cached_load(path: str) -> SavedBaseline:
    """:func:`load_baseline` without a model, cached while the folder's content is unchanged (the
    registry uses it).

    The cache is keyed by the folder's real path and :func:`folder_digest`, a SHA-256 of every file
    (``saved_model.pb``, ``variables/*``, ``metadata.json``): replacing the tensor files while the
    metadata stays untouched is seen, as is a rewrite that keeps sizes and modification times.
    The digest reads the folder (about the tensor's size: 0.6 MB for 224 × 224 × 3 float32,
    about a millisecond), far less than the SavedModel load it saves; it is also what result
    caches key a baseline folder by, so a result and its key describe the same tensor. A folder
    that changes while it loads is returned but not cached.
    """
    recover_interrupted_save(path)
    if not is_saved_baseline(path):
        return load_baseline(path)  # raises the clear error
    absolute = os.path.realpath(path)
    try:
        before = folder_digest(absolute)
    except OSError:
        return load_baseline(path)  # a file vanished meanwhile: load_baseline names what is wrong
    key = (absolute, before)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    loaded = load_baseline(path)
    try:
        unchanged = folder_digest(absolute) == before
    except OSError:
        unchanged = False
    if unchanged:
        with _CACHE_LOCK:
            if len(_CACHE) >= 8:
                _CACHE.clear()
            _CACHE[key] = loaded
    return loaded
