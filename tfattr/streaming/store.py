"""The on-disk store of a dataset explanation run: chunked arrays (zarr v3), per-image rows (Parquet), commit markers.

Layout of a store folder ``out/`` (issue #30)::

    out/tfattr-store.json          format version, the run's settings, chunk, num_items, arrays, complete
    out/data.zarr/                 a zarr v3 group, one chunk file per array and store chunk:
        attributions/              (N, *item_shape) float32, chunks (chunk, *item_shape); several-input
                                   models: attributions/<input name>
        ids  targets  scores  delta  valid     (N,) str, int32, float64, float64, bool
    out/rows/part-00007.parquet    per-image rows of chunk 7 (id, index, target, score, ...)
    out/done/chunk-00007.json      commit marker of chunk 7: item range, sha256 and size of each of its files
    out/lock                       fcntl.flock of the (local) writing process
    out/.meta.lock                 short flock around metadata changes (array creation, growth, finish)
    out/done/.chunk-00007.json.lock  flock held while chunk 7 is written (two writers of one chunk never
                                   interleave their files; deleted after)

Store chunk ``k`` holds the items ``[k * chunk, (k + 1) * chunk)``: exactly one zarr chunk file per array
(the item dimensions are not split), so writers of different chunks never touch the same file. A chunk
is *finished* iff its marker exists. The marker is written last: the zarr chunk files are written
(zarr's ``LocalStore`` writes every key to a temporary file and renames it over the key, so a kill leaves
the old file or the new one), read back to hash them and ``fsync``-ed with their folders, the rows part
is written atomically and fsync-ed, and only then the marker (temporary file, fsync, ``link`` into
place, which also makes two commits of one chunk exclusive). A run killed anywhere leaves finished
chunks intact and unfinished ones without a marker; those are overwritten on resume. Finished chunks
are never rewritten.

Metadata: zarr's ``zarr.json`` rewrites (array creation; growth while the size is unknown, by doubling;
the cut to ``num_items`` at :meth:`StoreWriter.finish`) go through the same atomic ``LocalStore`` write,
are fsync-ed, and happen only under the ``.meta.lock`` flock, so several processes (Beam workers,
``lock=False``) never rewrite them concurrently. With a known size the arrays are created once, at full
size, by the first chunk written (the item shape is known only then), and never resized.
``tfattr-store.json`` is written with :func:`tfattr.core.files.write_bytes` (temporary file, fsync, rename).

Chunk files are compressed with zstd with its content checksum on. Reading checks each file of a finished
chunk against the sha256 and size in its marker as it reads it (a missing file, another chunk's file, a
symlink, a truncated or changed file is a :class:`CorruptChunkError` naming the chunk and file, never fill
values or other numbers), and the markers' item ranges and the arrays' ``zarr.json`` (dtype, byte order,
codecs, chunks) are checked when the store is opened; :meth:`Explanations.verify` checks every file of
every finished chunk at once. Items of unfinished chunks are never returned:
reading them raises :class:`UnfinishedChunkError`; :attr:`Explanations.valid` is False for them.
Unwritten items read through the raw zarr arrays are the fill value (NaN for floats, -1 for targets).

The store is for a local (or POSIX network) file system: it relies on ``rename``, ``link`` and ``flock``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set

import numpy as np

from tfattr.core import files

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the store's locks need POSIX flock
    fcntl = None
from tfattr.errors import InvalidInputError, InvalidTypeError, MissingDependencyError, received

__all__ = [
    "StoreWriter",
    "Explanations",
    "StoreArray",
    "open_explanations",
    "recorded_settings",
    "StoreError",
    "NotAStoreError",
    "CorruptStoreError",
    "SettingsMismatchError",
    "StoreLockedError",
    "StoreNotWritableError",
    "ChunkFinishedError",
    "UnfinishedChunkError",
    "CorruptChunkError",
]

FORMAT = "tfattr-store"
VERSION = 1
STORE_FILE = "tfattr-store.json"
DATA = "data.zarr"
ROWS = "rows"
DONE = "done"
LOCK = "lock"
META_LOCK = ".meta.lock"
_OWN_ENTRIES = {STORE_FILE, DATA, ROWS, DONE, LOCK, META_LOCK}
_MARKER = re.compile(r"^chunk-(\d+)\.json$")
_ARRAY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z0-9_.-]+)?$")
# the arrays every store has (defaults fill what a writer leaves out), their dtypes and fill values
_STANDARD = {
    "ids": ("str", ""),
    "targets": ("int32", -1),
    "scores": ("float64", math.nan),
    "delta": ("float64", math.nan),
    "valid": ("bool", False),
}
_ZSTD_LEVEL = 1
_MAX_ITEMS = 2**53  # item indices stay exact in float64 (JSON readers) and zarr's int64 shapes


# ----------------------------------------------------------------------------------------------- errors
class StoreError(InvalidInputError):
    """An ``out=`` folder that cannot be used as asked (base class of the store's errors; a ``ValueError``)."""


class NotAStoreError(StoreError):
    """``out=`` is missing (for reading) or a folder with files that are not a tfattr store."""


class CorruptStoreError(StoreError):
    """The store's metadata (``tfattr-store.json``, the zarr group, a marker) is unreadable."""


class SettingsMismatchError(StoreError):
    """``out=`` holds a run with other settings than this run."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


class StoreNotWritableError(StoreError):
    """The store folder (or a file in it) cannot be written by this process."""


class ChunkFinishedError(StoreError):
    """A write to a chunk that has its commit marker (finished chunks are never rewritten)."""


class UnfinishedChunkError(StoreError):
    """A read of items whose chunk has no commit marker (not written, or its writer was killed)."""


class CorruptChunkError(StoreError):
    """A file of a finished chunk differs from the checksum in its marker (truncated, overwritten, garbage)."""


# ---------------------------------------------------------------------------------------------- helpers
def _zarr():
    try:
        import zarr
    except ImportError as error:  # pragma: no cover - a core dependency
        raise MissingDependencyError("The dataset store needs zarr>=3: pip install 'zarr>=3'.") from error
    return zarr


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:  # pragma: no cover - a core dependency
        raise MissingDependencyError("The dataset store's rows need pyarrow: pip install pyarrow.") from error
    return pyarrow


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _canonical(settings, name: str = "settings"):
    """``settings`` as JSON gives it back (tuples become lists, keys strings): the form that is recorded."""
    try:
        return json.loads(json.dumps(settings, sort_keys=True, default=_json_scalar))
    except (TypeError, ValueError) as error:
        raise InvalidTypeError(
            f"`{name}` must be JSON-serialisable (dicts, lists, strings, numbers, booleans, None): {error}. "
            f"{received(name, settings)}"
        ) from None


def _json_scalar(value):
    """NumPy scalars as the Python numbers they hold (``np.int64(3)`` is recorded as ``3``)."""
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _same_float(old, new) -> bool:
    """NaN equals NaN here: JSON records a NaN as ``NaN`` and reads it back as a NaN that equals nothing."""
    return isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new)


def _differences(old, new, path: str = "") -> List[str]:
    """``path: recorded X, this run Y`` for each leaf where two JSON values differ (nested keys as ``a.b.c``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{where}: not recorded, this run {_short(new[key])}")
            elif key not in new:
                out.append(f"{where}: recorded {_short(old[key])}, not in this run")
            else:
                out.extend(_differences(old[key], new[key], where))
        return out
    if _same_float(old, new):
        return []
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (a, b) in enumerate(zip(old, new)) for line in _differences(a, b, f"{path}[{i}]")]
    if old != new or type(old) is not type(new) and not (_is_number(old) and _is_number(new)):
        return [f"{path or 'settings'}: recorded {_short(old)}, this run {_short(new)}"]
    return []


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hash_file(path: str, sync: bool = False) -> Dict[str, Any]:
    """sha256 and size of a file (read whole; fsync-ed first when ``sync``)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        if sync:
            os.fsync(handle.fileno())
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
            size += len(block)
    return {"sha256": digest.hexdigest(), "size": size}


def _json_bytes(value) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=1) + "\n").encode("utf-8")


def _marker_name(k: int) -> str:
    return f"chunk-{k:05d}.json"


def _part_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def _need_flock(out: str) -> None:
    if fcntl is None:  # pragma: no cover - Windows
        raise StoreError(f"Writing a store needs POSIX file locks (fcntl.flock), which this platform lacks; "
                         f"reading works. {received('out', out)}")


@contextlib.contextmanager
def _writable(out: str) -> Iterator[None]:
    """Turn permission, read-only-filesystem and full-disk errors into :class:`StoreNotWritableError`."""
    try:
        yield
    except OSError as error:
        if isinstance(error, PermissionError) or error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise StoreNotWritableError(
                f"out={out!r} cannot be written by this process ({error.strerror}: {error.filename}); a store "
                f"can be read from a read-only folder, but not written. Use a writable out=. {received('out', out)}"
            ) from error
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise StoreNotWritableError(
                f"out={out!r} is full ({error.strerror}{': ' + str(error.filename) if error.filename else ''}): the "
                f"chunk being written was not committed (its marker is written last); the finished chunks are "
                f"intact. Free space (or raise the quota or file size limit) and run again to resume. "
                f"{received('out', out)}"
            ) from error
        raise


def _read_store_file(out: str) -> Dict[str, Any]:
    path = os.path.join(out, STORE_FILE)
    try:
        with open(path, "rb") as handle:
            meta = json.loads(handle.read().decode("utf-8"))
    except FileNotFoundError:
        raise NotAStoreError(
            f"out={out!r} is not a tfattr store: it has no {STORE_FILE}. {received('out', out)}"
        ) from None
    except (ValueError, UnicodeDecodeError, OSError) as error:
        raise CorruptStoreError(
            f"out={out!r} has an unreadable {STORE_FILE} ({error}); the store's metadata is damaged. Delete the "
            f"folder (or pass overwrite=True to a writer) and run again. {received('out', out)}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NotAStoreError(
            f"out={out!r} has a {STORE_FILE} that is not a tfattr store's (format "
            f"{_short(meta.get('format') if isinstance(meta, dict) else meta)}). {received('out', out)}"
        )
    if meta.get("version") != VERSION:
        raise CorruptStoreError(
            f"out={out!r} is a tfattr store of format version {meta.get('version')!r}; this tfattr reads version "
            f"{VERSION}. {received('out', out)}"
        )
    for key in ("settings", "chunk", "num_items", "arrays", "complete"):
        if key not in meta:
            raise CorruptStoreError(f"out={out!r}: {STORE_FILE} lacks the key {key!r}. {received('out', out)}")
    problem = _meta_problem(meta)
    if problem:
        raise CorruptStoreError(
            f"out={out!r}: {STORE_FILE} is damaged: {problem}. Delete the folder (or pass overwrite=True to a "
            f"writer) and run again. {received('out', out)}"
        )
    return meta


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _meta_problem(meta: Dict[str, Any]) -> Optional[str]:
    """What is wrong with the types of a store file's values (None if nothing)."""
    if not isinstance(meta["settings"], dict):
        return f"settings is {_short(meta['settings'])}, not a dict"
    if not _is_int(meta["chunk"]) or meta["chunk"] < 1:
        return f"chunk is {_short(meta['chunk'])}, not an int >= 1"
    if meta["num_items"] is not None and (not _is_int(meta["num_items"]) or meta["num_items"] < 0):
        return f"num_items is {_short(meta['num_items'])}, not None or an int >= 0"
    if not isinstance(meta["complete"], bool):
        return f"complete is {_short(meta['complete'])}, not true or false"
    if meta["complete"] and meta["num_items"] is None:
        return "complete is true but num_items is null"
    arrays = meta["arrays"]
    if not isinstance(arrays, dict):
        return f"arrays is {_short(arrays)}, not a dict"
    for name, spec in arrays.items():
        if not _ARRAY_NAME.match(name) or not isinstance(spec, dict):
            return f"arrays has the entry {_short(name)}: {_short(spec)}"
        shape, dtype = spec.get("shape_per_item"), spec.get("dtype")
        if not isinstance(shape, list) or not all(_is_int(size) and size >= 0 for size in shape):
            return f"arrays[{name!r}].shape_per_item is {_short(shape)}, not a list of sizes"
        try:
            ok = dtype == "str" if name == "ids" else np.dtype(dtype).kind in "biuf"
        except TypeError:
            ok = False
        if not ok:
            return f"arrays[{name!r}].dtype is {_short(dtype)}"
    return None


def _list_markers(out: str) -> Set[int]:
    """The chunk indices of the markers in ``out/done`` (names exactly as the writer makes them)."""
    try:
        names = os.listdir(os.path.join(out, DONE))
    except FileNotFoundError:
        return set()
    chunks = set()
    for match in map(_MARKER.match, names):
        if match and _marker_name(int(match.group(1))) == match.group(0):
            chunks.add(int(match.group(1)))
    return chunks


def _chunk_key(name: str, k: int, shape_per_item) -> str:
    """The zarr chunk file of store chunk ``k`` of array ``name``, relative to the store folder."""
    return f"{DATA}/{name}/c.{k}" + ".0" * len(shape_per_item)


def _marker_problem(marker, k: int, meta: Optional[Dict[str, Any]]) -> Optional[str]:
    """What is wrong with the marker of chunk ``k`` (its range, its files) for the store ``meta``."""
    if not isinstance(marker, dict):
        return "not a JSON object"
    if not _is_int(marker.get("chunk")) or marker["chunk"] != k:
        return f"it is the marker of chunk {_short(marker.get('chunk'))}"
    start, stop, entries = marker.get("start"), marker.get("stop"), marker.get("files")
    if not _is_int(start) or not _is_int(stop):
        return f"its item range {_short(start)} to {_short(stop)} is not two ints"
    if not isinstance(entries, dict):
        return f"its files are {_short(entries)}"
    for relative, expected in entries.items():
        if (not isinstance(expected, dict) or not isinstance(expected.get("sha256"), str)
                or not re.fullmatch(r"[0-9a-f]{64}", expected["sha256"]) or not _is_int(expected.get("size"))):
            return f"its record of {_short(relative)} is {_short(expected)}"
    if meta is None:
        return None
    chunk, num_items = meta["chunk"], meta["num_items"]
    end = (k + 1) * chunk if num_items is None else min((k + 1) * chunk, num_items)
    if num_items is not None and k * chunk >= num_items:
        return f"chunk {k} (items from {k * chunk}) lies past the store's {num_items} items"
    if start != k * chunk or not start < stop <= end:
        return (f"its item range [{start}, {stop}) is not inside chunk {k}'s items [{k * chunk}, {end}) "
                f"(chunk={chunk}, num_items={num_items})")
    needed = [f"{ROWS}/{_part_name(k)}"] + [_chunk_key(name, k, spec["shape_per_item"])
                                            for name, spec in sorted(meta["arrays"].items())]
    missing = [relative for relative in needed if relative not in entries]
    if missing:
        return f"it records no {', '.join(missing[:3])}"
    return None


def _load_marker(out: str, k: int, meta: Optional[Dict[str, Any]]):
    """``(marker, None)``, or ``(None, what is wrong)`` for the marker of chunk ``k`` (checked against ``meta``)."""
    path = os.path.join(out, DONE, _marker_name(k))
    try:
        with open(path, "rb") as handle:
            marker = json.loads(handle.read().decode("utf-8"))
        problem = _marker_problem(marker, k, meta)
    except (ValueError, UnicodeDecodeError, OSError) as error:
        problem = str(error)
    return (None, problem) if problem else (marker, None)


def _read_marker(out: str, k: int, meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The marker of chunk ``k``, checked (its range and files against ``meta``, the store file, if given)."""
    marker, problem = _load_marker(out, k, meta)
    if problem:
        raise CorruptChunkError(
            f"chunk {k} of out={out!r} is damaged: its commit marker {DONE}/{_marker_name(k)} is unreadable "
            f"({problem}). {received('out', out)}"
        )
    return marker


_CHUNK_KEY = re.compile(r"^(?:.+/)?c\.(\d+)(?:\.\d+)*$")
_VERIFIED = None


def _verified_store_class():
    """``_VerifiedStore``: zarr's ``LocalStore`` reading a finished chunk's files only as its marker records them.

    zarr reads a missing chunk file as fill values and decodes any valid file put in a chunk's place (another
    chunk's, a symlink, an older run's); this store compares each file of a finished chunk it returns with the
    sha256 and size of the chunk's marker, and raises :class:`CorruptChunkError` naming it otherwise. Files of
    unfinished chunks are returned as they are (raw reads through ``StoreArray.zarr``). Made on first use (the
    module does not import zarr before), importable by name for pickling (``__getattr__`` of the module).
    """
    global _VERIFIED
    if _VERIFIED is None:
        import asyncio

        zarr = _zarr()

        class _VerifiedStore(zarr.storage.LocalStore):
            def __init__(self, root, *, read_only: bool = True, out: str = "",
                         expected: Optional[Dict[str, Dict[str, Any]]] = None, finished=()):
                super().__init__(root, read_only=read_only)
                self.out = out
                self.expected = dict(expected or {})  # file relative to out -> {"sha256", "size"}
                self.finished = frozenset(finished)

            def with_read_only(self, read_only: bool = False):
                return type(self)(self.root, read_only=read_only, out=self.out, expected=self.expected,
                                  finished=self.finished)

            def _check(self, key: str, value, byte_range) -> None:
                match = _CHUNK_KEY.match(key)
                if not match or int(match.group(1)) not in self.finished:
                    return
                k, relative = int(match.group(1)), f"{DATA}/{key}"
                expected = self.expected.get(relative)
                if expected is None:
                    what = "is not recorded in its marker"
                elif value is None:
                    if not os.path.isfile(os.path.join(self.out, STORE_FILE)):
                        raise NotAStoreError(
                            f"out={self.out!r} no longer holds the store opened there (moved, renamed or deleted "
                            f"since open_explanations): open it again where it is now. {received('out', self.out)}")
                    what = "missing"
                else:
                    if byte_range is None:
                        data = value.as_buffer_like()
                    else:  # a part: check the whole file
                        with open(os.path.join(self.out, *relative.split("/")), "rb") as handle:
                            data = handle.read()
                    size = memoryview(data).nbytes
                    if size != expected["size"]:
                        what = f"{size} bytes, {expected['size']} recorded"
                    elif hashlib.sha256(data).hexdigest() != expected["sha256"]:
                        what = "content differs from its sha256"
                    else:
                        return
                raise CorruptChunkError(
                    f"out={self.out!r}: chunk {k} is damaged (chunk {k}: {relative} {what}). Delete its marker "
                    f"({DONE}/{_marker_name(k)}) and resume the run to rewrite it. {received('out', self.out)}"
                )

            async def get(self, key, prototype=None, byte_range=None):
                value = await super().get(key, prototype, byte_range)
                await asyncio.to_thread(self._check, key, value, byte_range)
                return value

            def get_sync(self, key, *, prototype=None, byte_range=None):
                value = super().get_sync(key, prototype=prototype, byte_range=byte_range)
                self._check(key, value, byte_range)
                return value

            async def get_partial_values(self, prototype, key_ranges):
                key_ranges = list(key_ranges)
                values = await super().get_partial_values(prototype, key_ranges)
                for (key, byte_range), value in zip(key_ranges, values):
                    self._check(key, value, byte_range)
                return values

        _VerifiedStore.__module__ = __name__
        _VerifiedStore.__qualname__ = "_VerifiedStore"
        _VERIFIED = _VerifiedStore
    return _VERIFIED


def __getattr__(name: str):
    if name == "_VerifiedStore":
        return _verified_store_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _array_problem(name: str, array, spec: Dict[str, Any], chunk: int, length: int) -> Optional[str]:
    """What in a zarr array's metadata differs from the store's record (anything that would decode other numbers)."""
    item = tuple(spec["shape_per_item"])
    if tuple(array.shape[1:]) != item:
        return f"item shape {tuple(array.shape[1:])}, recorded {item}"
    if tuple(array.chunks) != (chunk,) + item:
        return f"chunks {tuple(array.chunks)}, the store's are {(chunk,) + item}"
    if array.shape[0] < length:
        return f"{array.shape[0]} items, its finished chunks reach item {length}"
    if name == "ids":
        if array.dtype.kind not in "OTU":
            return f"dtype {array.dtype}, recorded str"
    elif np.dtype(array.dtype) != np.dtype(spec["dtype"]):
        return f"dtype {array.dtype}, recorded {spec['dtype']}"
    metadata = array.metadata.to_dict()
    if metadata.get("chunk_key_encoding") != {"name": "default", "configuration": {"separator": "."}}:
        return f"chunk key encoding {_short(metadata.get('chunk_key_encoding'))}"
    codecs = list(metadata.get("codecs") or ())
    names = [codec.get("name") if isinstance(codec, dict) else codec for codec in codecs]
    if names != ["vlen-utf8" if name == "ids" else "bytes", "zstd"]:
        return f"codecs {_short(names)}, the store's are {['vlen-utf8' if name == 'ids' else 'bytes', 'zstd']}"
    endian = (codecs[0].get("configuration") or {}).get("endian")
    if name != "ids" and endian not in ("little",) + ((None,) if np.dtype(array.dtype).itemsize == 1 else ()):
        return f"byte order {endian!r}, the store's is 'little'"
    return None


def _check_ids(ids) -> List[str]:
    """The ids as strings: ``str`` as they are, ints in decimal, bytes decoded as UTF-8; anything else is an error."""
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
        raise InvalidTypeError(f"`ids` must be a list of strings, one per item. {received('ids', ids)}")
    out = []
    for i, item in enumerate(ids):
        if isinstance(item, (bytes, np.bytes_)):
            try:
                item = bytes(item).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInputError(f"ids[{i}] is bytes that are not UTF-8 text. {received(f'ids[{i}]', item)}"
                                        ) from None
        elif isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            item = str(int(item))
        elif not isinstance(item, str):
            raise InvalidTypeError(
                f"ids[{i}] must be a string (or an int, bytes in UTF-8). {received(f'ids[{i}]', item)}")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InvalidInputError(
                f"ids[{i}] cannot be stored as UTF-8 ({error.reason}). {received(f'ids[{i}]', item)}") from None
        out.append(str(item))
    return out


def _array_spec(name: str, values: np.ndarray) -> Dict[str, Any]:
    return {"shape_per_item": [int(size) for size in values.shape[1:]],
            "dtype": "str" if name == "ids" else str(values.dtype)}


def _fill_value(name: str, dtype: str):
    if name in _STANDARD:
        return _STANDARD[name][1]
    kind = np.dtype(dtype).kind
    return {"f": math.nan, "c": math.nan, "b": False, "u": 0}.get(kind, -1)


def _pad(values: np.ndarray, length: int, fill) -> np.ndarray:
    if values.shape[0] == length:
        return values
    pad = np.full((length - values.shape[0],) + values.shape[1:], fill, dtype=values.dtype)
    return np.concatenate([values, pad], axis=0)


def _schema_mismatch(recorded, spec, values) -> None:
    changed = [f"{name}: recorded {recorded.get(name)}, this chunk {spec.get(name)}"
               for name in sorted(set(spec) | set(recorded)) if spec.get(name) != recorded.get(name)]
    raise InvalidInputError(
        f"The arrays of a chunk must match the store's, fixed by its first chunk ({'; '.join(changed)}). "
        f"{received('arrays', {name: value.shape for name, value in values.items()})}"
    )


def _remove_entries(out: str) -> None:
    """Delete a store's data, rows and markers (not its store file, not the lock)."""
    for name in (DONE, ROWS, DATA):
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)


def _open_zarr_array(group, name: str):
    """The array ``name`` of ``group`` (writes chunks also when they hold only fill values)."""
    try:
        return group[name].with_config({"write_empty_chunks": True})
    except Exception as error:
        out = os.path.dirname(str(group.store.root))
        raise CorruptStoreError(f"out={out!r}: the array {DATA}/{name} cannot be opened ({type(error).__name__}: "
                                f"{error}); its zarr.json is damaged. {received('out', out)}") from None


def _open_writer_group(out: str):
    """The zarr group of the store ``out`` for writing (a damaged ``zarr.json`` is a :class:`CorruptStoreError`)."""
    zarr = _zarr()
    try:
        return zarr.open_group(zarr.storage.LocalStore(os.path.join(out, DATA)), mode="r+")
    except Exception as error:
        raise CorruptStoreError(f"out={out!r}: the zarr group {DATA} cannot be opened ({type(error).__name__}: "
                                f"{error}); its zarr.json is damaged. {received('out', out)}") from None


# --------------------------------------------------------------------------------------------- the writer
class StoreWriter:
    """Writes the chunks of one run into the store ``out/`` (see the module docstring for the layout).

    Open with :meth:`open`; write each chunk once with :meth:`write_chunk` (any order, any process);
    record completeness with :meth:`finish`; :meth:`close` (or ``with``) releases the lock.

    Attributes:
        out: The store folder.
        settings: The run's settings as recorded (JSON form).
        chunk: Items per store chunk.
        num_items: The number of items, or None while unknown.
    """

    def __init__(self, out: str, settings: Dict[str, Any], chunk: int, num_items: Optional[int],
                 lock_fd: Optional[int], durable: bool = True):
        self.out = out
        self.durable = durable
        self.settings = settings
        self.chunk = chunk
        self.num_items = num_items
        self._lock_fd = lock_fd
        self._arrays: Dict[str, Any] = {}
        self._spec: Optional[Dict[str, Any]] = None
        self._closed = False

    # ------------------------------------------------------------------------------------------ open
    @classmethod
    def open(cls, out, settings: Dict[str, Any], chunk: int, num_items: Optional[int], lock: bool = True,
             overwrite: bool = False, durable: bool = True) -> StoreWriter:
        """Create the store ``out`` or reopen it to continue the same run.

        Args:
            out: Folder of the store. It must not exist, be empty, or be a tfattr store.
            settings: The run's settings (JSON-serialisable). On reopen they are compared with the
                recorded ones; any difference is a :class:`SettingsMismatchError` naming the keys.
            chunk: Items per store chunk (one file per array and chunk); compared on reopen.
            num_items: Number of items if known (arrays are then created at full size once, and never
                resized), else None (arrays grow as chunks are written; :meth:`finish` records the size).
            lock: Hold an exclusive ``fcntl.flock`` on ``out/lock`` until :meth:`close` (a second
                locked writer is a :class:`StoreLockedError`). Beam workers that write distinct chunks
                of one store from several processes pass ``lock=False``.
            overwrite: Delete an existing tfattr store at ``out`` first (never a folder with other
                files). Needs ``lock=True``.
            durable: ``fsync`` each chunk's files and folders before its marker, so that a finished
                chunk survives a power loss or an OS crash (about 16 fsyncs a chunk). ``False`` keeps
                every guarantee against a killed process (all writes are atomic renames, the marker
                last) but not against power loss: for small chunks where the fsyncs would dominate.

        Returns:
            The writer.
        """
        if not isinstance(out, (str, os.PathLike)):
            raise InvalidTypeError(f"`out` must be a folder path (str or os.PathLike). {received('out', out)}")
        out = os.path.abspath(os.fspath(out))
        settings = _canonical(settings)
        if not isinstance(settings, dict):
            raise InvalidTypeError(f"`settings` must be a dict. {received('settings', settings)}")
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise InvalidInputError(
                f"`chunk` must be a positive int (items per store chunk). {received('chunk', chunk)}")
        chunk = int(chunk)
        if num_items is not None and (isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer))
                                      or num_items < 0):
            raise InvalidInputError(f"`num_items` must be None or an int >= 0. {received('num_items', num_items)}")
        num_items = None if num_items is None else int(num_items)
        if overwrite and not lock:
            raise InvalidInputError(
                "overwrite=True deletes the store: it needs lock=True (another writer may be using it). "
                f"{received('lock', lock)}"
            )
        if os.path.exists(out) and not os.path.isdir(out):
            raise NotAStoreError(f"out={out!r} is a file, not a folder. {received('out', out)}")
        if os.path.islink(out) and not os.path.exists(out):
            raise NotAStoreError(f"out={out!r} is a symlink to {os.readlink(out)!r}, which does not exist. "
                                 f"{received('out', out)}")
        is_store = os.path.isfile(os.path.join(out, STORE_FILE))
        if os.path.isdir(out) and not is_store:
            names = os.listdir(out)
            # a store whose creation (or deletion) was interrupted has our hidden META_LOCK; without it, a
            # `rows` or `done` folder is the user's
            foreign = sorted(name for name in names if not cls._ours_at_top(name)
                             or META_LOCK not in names and name in (DATA, ROWS, DONE))
            if foreign:
                raise NotAStoreError(
                    f"out={out!r} is a folder with other files ({', '.join(foreign[:5])}"
                    f"{', ...' if len(foreign) > 5 else ''}) and no {STORE_FILE}: not a tfattr store. tfattr never "
                    f"deletes them; use a new or empty folder. {received('out', out)}"
                )
        lock_fd = None
        with _writable(out):
            os.makedirs(out, exist_ok=True)
            if lock:
                lock_fd = cls._take_lock(out)
            try:
                if overwrite and is_store:
                    cls._delete_store(out)
                writer = cls(out, settings, chunk, num_items, lock_fd, durable=bool(durable))
                with writer._meta_lock():
                    writer._create_or_check()
                if lock:
                    writer._remove_temporaries()
            except BaseException:
                if lock_fd is not None:
                    os.close(lock_fd)
                raise
        return writer

    @staticmethod
    def _ours_at_top(name: str) -> bool:
        return name in _OWN_ENTRIES or name.startswith("." + STORE_FILE + ".tmp-")

    @staticmethod
    def _take_lock(out: str) -> int:
        _need_flock(out)
        try:
            fd = os.open(os.path.join(out, LOCK), os.O_RDWR | os.O_CREAT, files.file_mode())
        except IsADirectoryError:
            raise CorruptStoreError(f"out={out!r} has a folder named {LOCK!r} where its lock file belongs. "
                                    f"{received('out', out)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise StoreLockedError(
                f"out={out!r} is being written by another process (pid {holder} holds {LOCK}); two runs on one "
                f"store would corrupt it. Wait for it to end or use another out=. {received('out', out)}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return fd

    @classmethod
    def _delete_store(cls, out: str) -> None:
        """Delete a tfattr store's own entries (the lock file, which we hold, stays)."""
        try:
            _read_store_file(out)
        except CorruptStoreError:
            pass  # a damaged store of ours may be overwritten
        foreign = sorted(name for name in os.listdir(out) if not cls._ours_at_top(name))
        if foreign:
            raise NotAStoreError(
                f"overwrite=True deletes only a tfattr store, and out={out!r} also holds other files "
                f"({', '.join(foreign[:5])}); nothing was deleted. {received('out', out)}"
            )
        # the store file first: an interrupted deletion leaves a folder of our own entries only
        os.remove(os.path.join(out, STORE_FILE))
        _remove_entries(out)

    @contextlib.contextmanager
    def _meta_lock(self) -> Iterator[None]:
        """A short exclusive flock of ``out/.meta.lock`` around metadata changes (across processes)."""
        _need_flock(self.out)
        fd = os.open(os.path.join(self.out, META_LOCK), os.O_RDWR | os.O_CREAT, files.file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _write_meta(self, meta: Dict[str, Any]) -> None:
        files.write_bytes(os.path.join(self.out, STORE_FILE), _json_bytes(meta))
        _fsync_path(self.out, directory=True)

    def _create_or_check(self) -> None:
        out = self.out
        if not os.path.isfile(os.path.join(out, STORE_FILE)):
            # no store file: a new folder, or one whose creation or deletion was interrupted (only our own
            # entries, checked by open): nothing in it belongs to a run
            _remove_entries(out)
            meta = {"format": FORMAT, "version": VERSION, "settings": self.settings, "chunk": self.chunk,
                    "num_items": self.num_items, "arrays": {}, "complete": False}
            for name in (DONE, ROWS):
                os.makedirs(os.path.join(out, name), exist_ok=True)
            zarr = _zarr()
            zarr.open_group(zarr.storage.LocalStore(os.path.join(out, DATA)), mode="a", zarr_format=3)
            _fsync_path(os.path.join(out, DATA, "zarr.json"))
            self._write_meta(meta)  # last: a store folder without it is ours and empty-ish
            return
        meta = _read_store_file(out)
        for name in (DONE, ROWS):  # a store whose folder of markers was deleted: its chunks are unfinished
            os.makedirs(os.path.join(out, name), exist_ok=True)
        differences = _differences(meta["settings"], self.settings)
        if meta["chunk"] != self.chunk:
            differences.insert(0, f"chunk: recorded {meta['chunk']}, this run {self.chunk}")
        if differences:
            raise SettingsMismatchError(
                f"out={out!r} holds a run with other settings: {'; '.join(differences[:8])}"
                f"{f'; and {len(differences) - 8} more' if len(differences) > 8 else ''}. Finished chunks of one "
                f"store must come from one configuration: use a new out=, delete it, or pass overwrite=True. "
                f"{received('settings', self.settings)}"
            )
        if self.num_items is not None and meta["num_items"] is not None and meta["num_items"] != self.num_items:
            raise SettingsMismatchError(
                f"out={out!r} holds a run over {meta['num_items']} items; this run has {self.num_items}. Use a new "
                f"out=, delete it, or pass overwrite=True. {received('num_items', self.num_items)}"
            )
        if self.num_items is None:
            self.num_items = meta["num_items"]
        elif meta["num_items"] is None:
            self._set_num_items(meta, self.num_items)
        self._spec = meta["arrays"] or None

    def _set_num_items(self, meta: Dict[str, Any], num_items: int) -> None:
        """Record a size learnt after creation (under the meta lock): arrays get exactly ``num_items``."""
        stops = [_read_marker(self.out, k, meta)["stop"] for k in sorted(_list_markers(self.out))]
        if stops and max(stops) > num_items:
            raise InvalidInputError(
                f"out={self.out!r} has finished chunks up to item {max(stops)}, more than num_items={num_items}. "
                f"{received('num_items', num_items)}"
            )
        for name in meta["arrays"]:
            array = self._fresh_array(name)
            if array.shape[0] != num_items:
                array.resize((num_items,) + array.shape[1:])
                _fsync_path(os.path.join(self.out, DATA, name, "zarr.json"))
        meta = dict(meta, num_items=num_items)
        self._write_meta(meta)
        self._arrays.clear()

    @contextlib.contextmanager
    def _chunk_lock(self, k: int) -> Iterator[None]:
        """An exclusive flock of ``done/.chunk-0000k.json.lock`` while chunk ``k`` is written (deleted after)."""
        _need_flock(self.out)
        path = os.path.join(self.out, DONE, f".{_marker_name(k)}.lock")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, files.file_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:  # the file may have been deleted by the holder we waited for: then lock the new one
                    held, now = os.fstat(fd), os.stat(path)
                    same = (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                break
            os.close(fd)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.remove(path)
            os.close(fd)

    def _remove_temporaries(self) -> None:
        """Delete temporary files of killed writers (only under the lock: nobody else writes)."""
        for folder, _, names in os.walk(self.out):
            for name in names:
                chunk_lock = (folder == os.path.join(self.out, DONE) and name.startswith(".chunk-")
                              and name.endswith(".lock"))
                if name.endswith(".partial") or ".tmp-" in name and name.startswith(".") or chunk_lock:
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(folder, name))

    # ------------------------------------------------------------------------------------------ state
    def finished(self) -> Set[int]:
        """The indices of the finished chunks (those with a commit marker)."""
        return _list_markers(self.out)

    @property
    def num_chunks(self) -> Optional[int]:
        """``ceil(num_items / chunk)`` if the size is known, else None."""
        return None if self.num_items is None else -(-self.num_items // self.chunk)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"This StoreWriter of out={self.out!r} is closed. {received('out', self.out)}")

    # ------------------------------------------------------------------------------------------ write
    def write_chunk(self, k: int, start: int, ids: Sequence[str], arrays: Dict[str, np.ndarray],
                    rows: Optional[List[Dict[str, Any]]] = None) -> None:
        """Write chunk ``k`` (items ``start = k * chunk`` to ``start + len(ids)``) and commit it.

        Args:
            k: The chunk index.
            start: Index of its first item; must be ``k * chunk``.
            ids: The items' ids (strings), ``chunk`` of them except in the last chunk.
            arrays: ``"attributions"`` (or ``"attributions/<input name>"`` for several inputs) of shape
                ``(n, *item_shape)`` (stored as float32), and ``"targets"`` (int32), ``"scores"``,
                ``"delta"`` (float64), ``"valid"`` (bool) of shape ``(n,)``; missing ones are filled
                with -1 / NaN / NaN / (rows' ``status == "ok"`` if rows have a status, else True). Other
                names are stored with their own dtype. The set of names and the item shapes are fixed by
                the first chunk written.
            rows: Per-item dicts (``len(ids)`` of them) written as the chunk's Parquet part; None writes
                ``id, index, target, score, delta, valid``.

        Raises:
            ChunkFinishedError: The chunk has its marker already (finished chunks are never rewritten).
        """
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise InvalidInputError(f"`k` must be a chunk index (an int >= 0). {received('k', k)}")
        k = int(k)
        if (k + 1) * self.chunk > _MAX_ITEMS:
            raise InvalidInputError(f"Chunk {k} (items from {k * self.chunk}) lies past the {_MAX_ITEMS} items a store "
                                    f"can index. {received('k', k)}")
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start != k * self.chunk:
            raise InvalidInputError(
                f"Chunk {k} starts at item {k * self.chunk} (chunk={self.chunk}). {received('start', start)}"
            )
        start = int(start)
        ids = _check_ids(ids)
        n = len(ids)
        if self.num_items is not None:
            expected = min(self.chunk, self.num_items - start)
            if expected <= 0:
                raise InvalidInputError(
                    f"Chunk {k} lies past the store's {self.num_items} items. {received('k', k)}")
            if n != expected:
                raise InvalidInputError(
                    f"Chunk {k} of a store of {self.num_items} items with chunk={self.chunk} has {expected} items. "
                    f"{received('len(ids)', n)}"
                )
        elif not 1 <= n <= self.chunk:
            raise InvalidInputError(f"A chunk has 1 to chunk={self.chunk} items. {received('len(ids)', n)}")
        elif n < self.chunk and max(self.finished(), default=-1) > k:
            raise InvalidInputError(
                f"Only the last chunk may have fewer than chunk={self.chunk} items, and chunk "
                f"{max(self.finished())} is finished after chunk {k}. {received('len(ids)', n)}"
            )
        if os.path.exists(os.path.join(self.out, DONE, _marker_name(k))):
            raise ChunkFinishedError(
                f"Chunk {k} of out={self.out!r} is finished (it has its commit marker): finished chunks are "
                f"never rewritten. {received('k', k)}"
            )
        values = self._prepare(ids, arrays, rows, n)
        table = self._rows_table(ids, start, values, rows)
        with _writable(self.out), self._chunk_lock(k):
            # under the chunk's lock: two writers of one chunk (a retried Beam bundle) never interleave
            # their files, and the second finds the first one's marker before it writes anything
            if os.path.exists(os.path.join(self.out, DONE, _marker_name(k))):
                raise ChunkFinishedError(
                    f"Chunk {k} of out={self.out!r} is finished (it has its commit marker): finished chunks are "
                    f"never rewritten. {received('k', k)}"
                )
            self._ensure_arrays(values, start + self.chunk)
            entries = {}
            for name, value in values.items():
                array = self._arrays[name]
                stop = min(array.shape[0], start + self.chunk)  # the whole zarr chunk: never read-modify-write
                array[start:stop] = _pad(value, stop - start, _fill_value(name, self._spec[name]["dtype"]))
                key = array.metadata.encode_chunk_key((k,) + (0,) * (value.ndim - 1))
                relative = f"{DATA}/{name}/{key}"
                entries[relative] = _hash_file(os.path.join(self.out, *relative.split("/")), sync=self.durable)
            part = _parquet_bytes(table)
            relative = f"{ROWS}/{_part_name(k)}"
            if self.durable:
                for name in values:
                    _fsync_path(os.path.join(self.out, DATA, *name.split("/")), directory=True)
                files.write_bytes(os.path.join(self.out, ROWS, _part_name(k)), part)
                _fsync_path(os.path.join(self.out, ROWS), directory=True)
            else:
                with files.atomic_path(os.path.join(self.out, ROWS, _part_name(k))) as tmp:
                    with open(tmp, "wb") as handle:
                        handle.write(part)
            entries[relative] = {"sha256": hashlib.sha256(part).hexdigest(), "size": len(part)}
            marker = {"format": FORMAT + "-chunk", "version": VERSION, "chunk": k, "start": start, "stop": start + n,
                      "files": entries}
            self._commit(k, marker)

    def _prepare(self, ids: List[str], arrays, rows, n: int) -> Dict[str, np.ndarray]:
        """The chunk's arrays in their stored dtypes, defaults filled, checked against the store's schema."""
        if not isinstance(arrays, dict):
            raise InvalidTypeError(f"`arrays` must be a dict of name -> array. {received('arrays', arrays)}")
        if rows is not None and (isinstance(rows, (str, bytes, dict)) or not hasattr(rows, "__len__")
                                 or not all(isinstance(row, dict) for row in rows)):
            raise InvalidTypeError(f"`rows` must be a list of dicts, one per id. {received('rows', rows)}")
        if rows is not None and len(rows) != n:
            raise InvalidInputError(f"`rows` must have one dict per id ({n}). {received('len(rows)', len(rows))}")
        values: Dict[str, np.ndarray] = {"ids": np.asarray(ids, dtype=object)}
        for name, value in arrays.items():
            if not isinstance(name, str) or not _ARRAY_NAME.match(name) or name == "ids":
                raise InvalidInputError(
                    "`arrays` names are identifiers, 'attributions/<input name>' for several inputs ('ids' come "
                    f"from `ids`). {received('name', name)}"
                )
            value = np.asarray(value)
            if value.ndim == 0 or value.shape[0] != n:
                raise InvalidInputError(
                    f"arrays[{name!r}] must have one row per id ({n}). "
                    f"{received(f'arrays[{name!r}].shape', value.shape)}"
                )
            if value.dtype.kind not in "biuf":  # strings, objects (None), complex: never parsed or cut silently
                raise InvalidTypeError(
                    f"arrays[{name!r}] must be numeric or bool. "
                    f"{received(f'arrays[{name!r}].dtype', str(value.dtype))}")
            if 0 in value.shape[1:]:
                raise InvalidInputError(
                    f"arrays[{name!r}] has items of no values. {received(f'arrays[{name!r}].shape', value.shape)}")
            if name == "attributions" or name.startswith("attributions/"):
                if value.dtype.kind == "f" and value.dtype.itemsize > 4:
                    with np.errstate(invalid="ignore"):
                        big = np.isfinite(value) & (np.abs(value) > np.finfo(np.float32).max)
                    if big.any():
                        largest = float(np.abs(value[big]).max())
                        raise InvalidInputError(
                            f"arrays[{name!r}] holds finite values beyond float32's range (attributions are stored "
                            f"as float32; they would become inf). {received('max |value|', largest)}")
                value = value.astype(np.float32, copy=False)
            elif name in _STANDARD:
                dtype = np.dtype(_STANDARD[name][0])
                if value.ndim != 1:
                    raise InvalidInputError(
                        f"arrays[{name!r}] must be 1-D. {received(f'arrays[{name!r}].shape', value.shape)}")
                if dtype.kind == "b" and value.dtype.kind != "b" and not np.isin(value, (0, 1)).all():
                    raise InvalidInputError(
                        f"arrays['valid'] must be bool (or 0/1). {received(name, value)}")
                if dtype.kind == "i" and value.dtype.kind not in "iub":
                    if value.dtype.kind != "f" or not np.all(value == np.round(value)):
                        raise InvalidInputError(f"arrays[{name!r}] must hold integers. {received(name, value)}")
                info = np.iinfo(dtype) if dtype.kind == "i" else None
                if info is not None and value.size and (value.min() < info.min or value.max() > info.max):
                    raise InvalidInputError(f"arrays[{name!r}] does not fit {dtype}. {received(name, value)}")
                value = value.astype(dtype, copy=False)
            values[name] = np.ascontiguousarray(value)
        if "valid" not in values:
            statuses = [row.get("status") for row in rows] if rows is not None else []
            if statuses and all(isinstance(status, str) for status in statuses):
                values["valid"] = np.asarray([status == "ok" for status in statuses], dtype=bool)
            else:
                values["valid"] = np.ones(n, dtype=bool)
        for name, (dtype, fill) in _STANDARD.items():
            if name not in values:
                values[name] = np.full(n, fill, dtype=dtype)
        spec = {name: _array_spec(name, value) for name, value in values.items()}
        if self._spec is not None and spec != self._spec:
            _schema_mismatch(self._spec, spec, values)
        return values

    def _rows_table(self, ids, start, values, rows):
        pa = _pyarrow()
        if rows is None:
            rows = [{"id": ids[i], "index": start + i, "target": int(values["targets"][i]),
                     "score": float(values["scores"][i]), "delta": float(values["delta"][i]),
                     "valid": bool(values["valid"][i])} for i in range(len(ids))]
        try:
            return pa.Table.from_pylist(list(rows))
        except (pa.ArrowException, TypeError, ValueError) as error:
            raise InvalidTypeError(
                f"`rows` must be dicts of scalars Parquet can hold: {error}. {received('rows', rows[:2])}"
            ) from None

    def _fresh_array(self, name: str):
        return _open_zarr_array(_open_writer_group(self.out), name)

    def _ensure_arrays(self, values: Dict[str, np.ndarray], needed: int) -> None:
        """Create the arrays at the first chunk, or grow them (unknown size), under the meta lock."""
        length = self.num_items if self.num_items is not None else needed
        if set(self._arrays) == set(values) and all(array.shape[0] >= length for array in self._arrays.values()):
            return
        zarr = _zarr()
        from zarr.codecs import ZstdCodec

        with self._meta_lock():
            meta = _read_store_file(self.out)
            spec = {name: _array_spec(name, value) for name, value in values.items()}
            if meta["arrays"] and meta["arrays"] != spec:
                _schema_mismatch(meta["arrays"], spec, values)
            group = _open_writer_group(self.out)
            for name, value in values.items():
                folder = os.path.join(self.out, DATA, *name.split("/"))
                if os.path.isfile(os.path.join(folder, "zarr.json")):
                    array = _open_zarr_array(group, name)
                    if list(array.shape[1:]) != spec[name]["shape_per_item"]:
                        raise CorruptStoreError(
                            f"out={self.out!r}: the array {name} has item shape {array.shape[1:]}, its record says "
                            f"{spec[name]['shape_per_item']}. {received('out', self.out)}"
                        )
                    if array.shape[0] < length:  # size unknown: grown by doubling (few metadata rewrites)
                        grown = max(length, -(-2 * array.shape[0] // self.chunk) * self.chunk)
                        array.resize((grown,) + array.shape[1:])
                        _fsync_path(os.path.join(folder, "zarr.json"))
                else:
                    dtype = str if name == "ids" else value.dtype
                    leaf = name.rsplit("/", 1)[-1]
                    array = zarr.create_array(
                        group.store, name=name, shape=(length,) + value.shape[1:],
                        chunks=(self.chunk,) + value.shape[1:],
                        dtype=dtype, fill_value=_fill_value(name, spec[name]["dtype"]),
                        chunk_key_encoding={"name": "default", "separator": "."},
                        compressors=[ZstdCodec(level=_ZSTD_LEVEL, checksum=True)],
                        dimension_names=["item"] + [f"{leaf}_dim_{i + 1}" for i in range(value.ndim - 1)],
                        config={"write_empty_chunks": True},
                    )
                    array = array.with_config({"write_empty_chunks": True})
                    _fsync_path(os.path.join(folder, "zarr.json"))
                    parent = folder
                    while parent != os.path.join(self.out, DATA):  # the new folders' entries, up to the group
                        parent = os.path.dirname(parent)
                        _fsync_path(parent, directory=True)
                self._arrays[name] = array
            if not meta["arrays"]:
                self._write_meta(dict(meta, arrays=spec))
            self._spec = spec

    def _commit(self, k: int, marker: Dict[str, Any]) -> None:
        """Write the marker last: temporary file, fsync, ``link`` (exclusive) into place, fsync the folder."""
        data = _json_bytes(marker)
        folder = os.path.join(self.out, DONE)
        path = os.path.join(folder, _marker_name(k))
        fd, tmp = tempfile.mkstemp(prefix=f".{_marker_name(k)}.tmp-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                if self.durable:
                    os.fsync(handle.fileno())
            os.chmod(tmp, files.file_mode())
            try:
                os.link(tmp, path)
            except FileExistsError:
                with open(path, "rb") as handle:
                    if handle.read() != data:
                        raise ChunkFinishedError(
                            f"Chunk {k} of out={self.out!r} was committed by another writer with other content while "
                            f"this one wrote it: two writers wrote one chunk. Run verify() on the store. "
                            f"{received('k', k)}"
                        ) from None
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        if self.durable:
            _fsync_path(folder, directory=True)

    def finish(self, num_items: int) -> None:
        """Record that the run is complete: ``num_items`` items, every chunk finished.

        For a store opened with an unknown size, the arrays are cut to ``num_items`` here.

        Raises:
            InvalidInputError: A chunk is not finished, or ``num_items`` disagrees with the store.
        """
        self._check_open()
        if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)) or num_items < 0:
            raise InvalidInputError(f"`num_items` must be an int >= 0. {received('num_items', num_items)}")
        num_items = int(num_items)
        with _writable(self.out), self._meta_lock():
            meta = _read_store_file(self.out)
            if meta["num_items"] is not None and meta["num_items"] != num_items:
                raise InvalidInputError(
                    f"out={self.out!r} was created for {meta['num_items']} items. {received('num_items', num_items)}")
            chunks = -(-num_items // self.chunk)
            missing = sorted(set(range(chunks)) - _list_markers(self.out))
            if missing:
                raise InvalidInputError(
                    f"out={self.out!r} is not complete: chunks {missing[:10]}{' ...' if len(missing) > 10 else ''} of "
                    f"{chunks} are not finished. {received('num_items', num_items)}"
                )
            extra = sorted(k for k in _list_markers(self.out) if k >= chunks)
            if extra:
                raise InvalidInputError(
                    f"out={self.out!r} has finished chunks {extra[:10]} past item {num_items}. "
                    f"{received('num_items', num_items)}"
                )
            for k in range(chunks):  # each chunk full but the last, which ends at num_items
                stop = _read_marker(self.out, k, meta)["stop"]
                if stop != min((k + 1) * self.chunk, num_items):
                    raise InvalidInputError(
                        f"out={self.out!r}: chunk {k} ends at item {stop}, not {min((k + 1) * self.chunk, num_items)}"
                        f" (chunk={self.chunk}, num_items={num_items}). {received('num_items', num_items)}"
                    )
            if meta["num_items"] is None:
                self._set_num_items(meta, num_items)
                meta = _read_store_file(self.out)
            self._write_meta(dict(meta, num_items=num_items, complete=True))
            self.num_items = num_items

    def close(self) -> None:
        """Release the lock (the store stays as it is; reopen to continue)."""
        if not self._closed:
            self._closed = True
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - a forgotten close
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return (f"StoreWriter(out={self.out!r}, chunk={self.chunk}, num_items={self.num_items}, "
                f"finished={len(self.finished())}{'' if self.num_chunks is None else f'/{self.num_chunks}'})")


def _parquet_bytes(table) -> bytes:
    pa = _pyarrow()
    sink = pa.BufferOutputStream()
    pa.parquet.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


# --------------------------------------------------------------------------------------------- the reader
class StoreArray:
    """A lazy, sliceable view of one stored array, guarded by the commit markers.

    Indexing is NumPy's (basic and advanced, ``a[[0, 1], [0, 1]]`` as NumPy pairs them); the first (item)
    axis takes an int, a slice, an int array or a bool mask and reads only the chunks it touches (with
    advanced indices, negative steps or ``None`` after it, the selected items are read whole, then indexed
    by NumPy). ``None`` or a bool scalar as the first index is an ``IndexError``. Items of unfinished
    chunks are never returned: a selection that touches one raises :class:`UnfinishedChunkError` naming
    the chunk (use :attr:`Explanations.valid` or :attr:`Explanations.finished_chunks` to select finished
    items). A chunk file that differs from its marker's sha256 (missing, replaced, truncated) raises
    :class:`CorruptChunkError` naming the chunk and the file.

    Attributes:
        zarr: The underlying zarr array (raw: no marker guard, may be longer than the store while its
            size is unknown; unwritten items read as the fill value, NaN for floats; files of finished
            chunks are still checked against their markers).
    """

    def __init__(self, explanations: Explanations, name: str, array):
        self._store = explanations
        self.name = name
        self.zarr = array

    def __getstate__(self):
        return {"_store": self._store, "name": self.name}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.zarr = self._store._arrays[self.name]

    @property
    def shape(self):
        return (len(self._store),) + tuple(self.zarr.shape[1:])

    @property
    def dtype(self):
        return self.zarr.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _items(self, first):
        """(zarr selection for axis 0, item indices it covers, the index NumPy applies to the items read)."""
        n = len(self)
        if isinstance(first, np.ndarray) and first.ndim == 0 and first.dtype.kind in "iu":
            first = int(first)  # a 0-d int array indexes as an int
        if isinstance(first, (int, np.integer)) and not isinstance(first, (bool, np.bool_)):
            index = int(first) + n if first < 0 else int(first)
            if not 0 <= index < n:
                raise IndexError(f"index {first} is out of bounds for {self.name} of {n} items")
            return slice(index, index + 1), np.array([index]), 0
        if isinstance(first, slice):
            begin, end, step = first.indices(n)
            items = np.arange(begin, end, step)
            if step == 1:
                return slice(begin, max(begin, end)), items, slice(None)
            return items, items, slice(None)
        if first is None or first is Ellipsis or isinstance(first, (str, bytes, float, bool, np.bool_)):
            raise IndexError(f"{self.name} takes an int, a slice, an int array or a boolean mask on its item "
                             f"axis (first index), not {first!r}")
        items = np.asarray(first)
        if items.dtype == bool:
            if items.shape != (n,):
                raise IndexError(f"a boolean mask over {self.name} must have shape ({n},), got {items.shape}")
            items = np.flatnonzero(items)
        elif items.size == 0 and items.ndim == 1:
            items = items.astype(np.int64)  # [] is an empty selection, as in NumPy
        elif items.dtype.kind in "iu" and items.ndim >= 1:
            shape = items.shape  # an int array of any shape: the items read once each, in its order, then reshaped
            items = np.where(items < 0, items + n, items).astype(np.int64).ravel()
            if items.size and (items.min() < 0 or items.max() >= n):
                raise IndexError(f"an index is out of bounds for {self.name} of {n} items")
            return items, items, np.arange(items.size).reshape(shape)
        else:
            raise IndexError(f"{self.name} takes an int, a slice, an int array or a boolean mask on its item "
                             f"axis (first index). Received: {_short(first)}")
        return items, items, np.arange(items.size)

    @staticmethod
    def _basic(index) -> bool:
        """An index zarr applies as NumPy does to one axis: an int, a slice with a positive step."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            return True
        return isinstance(index, slice) and (index.step is None or isinstance(index.step, (int, np.integer))
                                             and index.step > 0)

    def _expand(self, key: tuple) -> tuple:
        """``key`` with its Ellipsis replaced by the full slices it stands for (as NumPy places them)."""
        where = [i for i, part in enumerate(key) if part is Ellipsis]
        if len(where) > 1:
            raise IndexError(f"an index can only have a single ellipsis ('...'). Received: key={_short(key)}")
        if not where:
            return key
        used = 0
        for part in key:
            if part is None or part is Ellipsis:
                continue
            array = part if isinstance(part, np.ndarray) else None
            if array is None and isinstance(part, (list, tuple)):
                array = np.asarray(part)
            used += array.ndim if array is not None and array.dtype == bool else 1
        i = where[0]
        return key[:i] + (slice(None),) * max(0, self.ndim - used) + key[i + 1:]

    def __getitem__(self, key):
        """NumPy indexing (basic and advanced); the item axis (the first) reads only the chunks it touches."""
        key = key if isinstance(key, tuple) else (key,)
        scalar = not any(part is Ellipsis for part in key)  # NumPy: a[0, ...] is a 0-d array, a[0] a scalar
        key = self._expand(key)
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        selection, items, local = self._items(first)
        self._store._check_finished(items, self.name)
        try:
            if not isinstance(selection, np.ndarray) and all(map(self._basic, rest)):
                # ints and positive-step slices: zarr reads only the selected part of each item, as NumPy would
                values = self.zarr[(selection.start if isinstance(local, int) else selection,) + rest]
            else:
                if isinstance(selection, np.ndarray):
                    block = self.zarr.oindex[(selection,) + (slice(None),) * (self.zarr.ndim - 1)]
                else:
                    block = self.zarr[selection]
                # the items read, then NumPy's own indexing with the rest of the key: advanced indices, negative
                # steps, None and their combinations (zarr's orthogonal indexing would give other shapes)
                values = np.asarray(block)[(local,) + rest]
        except (IndexError, TypeError):
            raise
        except Exception as error:
            self._store._raise_if_damaged(items, error)
            raise
        if isinstance(values, np.ndarray) and values.ndim == 0 and scalar:
            return values[()]
        if not isinstance(values, np.ndarray) and not scalar:
            return np.asarray(values)
        return values

    def __array__(self, dtype=None, copy=None):
        values = self[:]
        return values if dtype is None else values.astype(dtype)

    def __repr__(self) -> str:
        return f"StoreArray({self.name}, shape={self.shape}, dtype={self.dtype})"


class Explanations:
    """The read-only view of a store written by :class:`StoreWriter` (``tfattr.open_explanations(out)``).

    A snapshot of the finished chunks at opening (reopen to see chunks finished since). The arrays are
    :class:`StoreArray` views: sliceable without loading the store, raising :class:`UnfinishedChunkError`
    on items of unfinished chunks; :attr:`valid` is False for those items.

    Example:
        >>> ex = tfattr.open_explanations("out")
        >>> ex.attributions[:8].shape, ex.ids[:8]
        >>> ex.rows().head()
    """

    def __init__(self, out):
        if not isinstance(out, (str, os.PathLike)):
            raise InvalidTypeError(f"`out` must be a folder path (str or os.PathLike). {received('out', out)}")
        out = os.path.abspath(os.fspath(out))
        if not os.path.isdir(out):
            raise NotAStoreError(f"out={out!r} does not exist or is not a folder. {received('out', out)}")
        self.out = out
        self._meta = _read_store_file(out)
        self.chunk = int(self._meta["chunk"])
        markers = sorted(_list_markers(out))  # markers first, then arrays: their shapes cover the markers
        self._markers: Dict[int, Dict[str, Any]] = {}
        self._bad_markers: Dict[int, str] = {}  # damaged markers: neither finished nor readable; verify() names them
        if markers and not self._meta["arrays"]:  # the arrays are recorded before the first marker
            self._meta = _read_store_file(out)
        for k in markers:
            marker, problem = _load_marker(out, k, self._meta)
            if problem:
                self._bad_markers[k] = f"{DONE}/{_marker_name(k)} unreadable ({problem})"
            else:
                self._markers[k] = marker
        self._arrays: Dict[str, Any] = {}
        self._valid = None
        self._mask = None
        if self._meta["num_items"] is not None:
            self._length = int(self._meta["num_items"])
        else:
            self._length = max((int(m["stop"]) for m in self._markers.values()), default=0)
        if self._meta["arrays"]:
            self._open_arrays()

    def _open_arrays(self) -> None:
        """Open the zarr arrays through a :class:`_VerifiedStore` of the finished chunks; check their metadata."""
        out, zarr = self.out, _zarr()
        expected = {relative: entry for marker in self._markers.values() for relative, entry in marker["files"].items()}
        store = _verified_store_class()(os.path.join(out, DATA), read_only=True, out=out, expected=expected,
                                        finished=self._markers)
        try:
            group = zarr.open_group(store, mode="r")
            for name in self._meta["arrays"]:
                self._arrays[name] = group[name]
        except Exception as error:
            raise CorruptStoreError(
                f"out={out!r}: the zarr group {DATA} cannot be opened ({type(error).__name__}: {error}). "
                f"{received('out', out)}"
            ) from None
        reach = max((int(m["stop"]) for m in self._markers.values()), default=0)
        for name, array in self._arrays.items():
            problem = _array_problem(name, array, self._meta["arrays"][name], self.chunk, reach)
            if problem:
                raise CorruptStoreError(
                    f"out={out!r}: the array {DATA}/{name} does not match the store's record ({problem}); its "
                    f"zarr.json is damaged. {received('out', out)}"
                )

    def __getstate__(self):
        """Pickled without the zarr arrays (reopened from the same snapshot of markers on unpickling)."""
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self._meta["arrays"]:
            self._open_arrays()

    # ----------------------------------------------------------------------------------------- state
    @property
    def settings(self) -> Dict[str, Any]:
        """The run's settings as recorded."""
        return json.loads(json.dumps(self._meta["settings"]))

    @property
    def num_items(self) -> Optional[int]:
        """The number of items if recorded (known at creation or at the end), else None."""
        return self._meta["num_items"]

    @property
    def finished_chunks(self) -> List[int]:
        """The indices of the finished chunks, sorted."""
        return sorted(self._markers)

    @property
    def complete(self) -> bool:
        """True when the writer recorded the end of the run (every chunk finished)."""
        return bool(self._meta["complete"])

    @property
    def array_names(self) -> List[str]:
        """Names of the stored arrays (``attributions`` or ``attributions/<input>``, ``ids``, ...)."""
        return sorted(self._arrays)

    def __len__(self) -> int:
        """The number of items (``num_items``; while unknown, the end of the last finished chunk)."""
        return self._length

    def _finished_mask(self) -> np.ndarray:
        """Per item: inside the item range of a finished chunk's marker."""
        if self._mask is None:
            mask = np.zeros(len(self), dtype=bool)
            for marker in self._markers.values():
                mask[int(marker["start"]): int(marker["stop"])] = True
            self._mask = mask
        return self._mask.copy()

    def _check_finished(self, items: np.ndarray, name: str) -> None:
        items = np.asarray(items, dtype=np.int64)
        chunks, where = np.unique(items // self.chunk, return_inverse=True)
        bad = [int(k) for k in chunks if int(k) in self._bad_markers]
        if bad:
            self.verify(bad)
        # item by item (a marker's range, not its chunk index, says what is written), without a mask of every item
        stops = np.array([int(self._markers[int(k)]["stop"]) if int(k) in self._markers else -1 for k in chunks],
                         dtype=np.int64)
        finished = items < stops[where.reshape(-1)] if items.size else np.zeros(0, bool)
        missing = [int(k) for k in np.unique(items[~finished] // self.chunk)]
        if missing:
            first = missing[0]
            raise UnfinishedChunkError(
                f"{name}: the selection holds items of unfinished chunk{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''} (chunk {first} = items "
                f"{first * self.chunk} to {min((first + 1) * self.chunk, len(self)) - 1}) of out={self.out!r}: they "
                f"are not written yet or their writer was interrupted. Select finished items (`.valid`, "
                f"`.finished_chunks`) or resume the run. {received('finished_chunks', self.finished_chunks)}"
            )

    def _raise_if_damaged(self, items, error: BaseException) -> None:
        if isinstance(error, StoreError):  # from the checking zarr store: it names the chunk and file already
            raise error
        chunks = sorted({int(k) for k in np.unique(np.asarray(items, dtype=np.int64) // self.chunk)})
        try:
            self.verify(chunks)
        except CorruptChunkError as damaged:
            raise damaged from error

    # ----------------------------------------------------------------------------------------- arrays
    def _array(self, name: str) -> StoreArray:
        if not self._arrays:
            raise UnfinishedChunkError(
                f"No chunk of out={self.out!r} is written yet (its arrays are made by the first chunk): there is no "
                f"{name} to read. {received('finished_chunks', self.finished_chunks)}"
            )
        if name not in self._arrays:
            raise StoreError(
                f"out={self.out!r} holds no array {name!r} (arrays: {self.array_names or 'none yet'}). "
                f"{received('name', name)}"
            )
        return StoreArray(self, name, self._arrays[name])

    @property
    def attributions(self):
        """The attribution maps ``(N, *item_shape)`` float32, or a dict ``{input name: StoreArray}``."""
        if "attributions" in self._arrays:
            return self._array("attributions")
        several = {name.split("/", 1)[1]: self._array(name) for name in self.array_names
                   if name.startswith("attributions/")}
        return several if several else self._array("attributions")

    @property
    def ids(self) -> StoreArray:
        """The item ids ``(N,)`` (strings)."""
        return self._array("ids")

    @property
    def targets(self) -> StoreArray:
        """The explained class of each item ``(N,)`` int32 (-1 where none)."""
        return self._array("targets")

    @property
    def scores(self) -> StoreArray:
        """The model's score for the target ``(N,)`` float64."""
        return self._array("scores")

    @property
    def delta(self) -> StoreArray:
        """The completeness delta ``(N,)`` float64 (NaN where the method has none)."""
        return self._array("delta")

    def array(self, name: str) -> StoreArray:
        """Any stored array by name."""
        return self._array(name)

    @property
    def valid(self) -> np.ndarray:
        """``(N,)`` bool: the item was explained (False for skipped items and for unfinished chunks)."""
        if self._valid is None:
            mask = self._finished_mask()
            if "valid" in self._arrays:
                for _, marker in sorted(self._markers.items()):
                    start, stop = int(marker["start"]), int(marker["stop"])
                    try:
                        mask[start:stop] &= np.asarray(self._arrays["valid"][start:stop], dtype=bool)
                    except Exception as error:
                        self._raise_if_damaged([start], error)
                        raise
            self._valid = mask
        return self._valid.copy()

    # ----------------------------------------------------------------------------------------- rows
    def rows(self, columns: Optional[List[str]] = None, as_arrow: bool = False):
        """The per-item rows of the finished chunks, in item order.

        Args:
            columns: Read only these columns.
            as_arrow: Return a ``pyarrow.Table`` instead of a pandas DataFrame.
        """
        pa = _pyarrow()
        if columns is not None and (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)):
            raise InvalidTypeError(f"`columns` must be a list of column names. {received('columns', columns)}")
        tables, names = [], set()
        for k in self.finished_chunks:
            relative = f"{ROWS}/{_part_name(k)}"
            path = os.path.join(self.out, ROWS, _part_name(k))
            expected = self._markers[k]["files"][relative]
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
            except OSError:
                data = None
            if data is None or hashlib.sha256(data).hexdigest() != expected["sha256"]:
                self.verify([k])
            part = pa.parquet.read_table(pa.BufferReader(data))
            names.update(part.column_names)
            tables.append((k, part.select([c for c in columns if c in part.column_names]) if columns else part))
        unknown = [c for c in columns or () if c not in names]
        if unknown and tables:
            raise StoreError(f"The rows of out={self.out!r} have no column {', '.join(map(repr, unknown))} "
                             f"(columns: {sorted(names)}). {received('columns', columns)}")
        try:
            table = (pa.concat_tables([part for _, part in tables], promote_options="permissive")
                     if tables else pa.table({}))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
            kinds: Dict[str, Dict[str, List[int]]] = {}
            for k, part in tables:
                for field in part.schema:
                    kinds.setdefault(field.name, {}).setdefault(str(field.type), []).append(k)
            clash = "; ".join(f"{name}: " + ", ".join(f"{kind} in chunks {where[:3]}" for kind, where in found.items())
                              for name, found in kinds.items() if len({t for t in found if t != "null"}) > 1)
            raise StoreError(
                f"The rows of out={self.out!r} cannot be joined into one table: a column has other types in other "
                f"chunks ({clash or error}). Read them with columns=[...] leaving it out, or chunk by chunk from "
                f"{ROWS}/. {received('out', self.out)}"
            ) from None
        if columns:
            table = table.select([c for c in columns if c in table.column_names])
        if as_arrow:
            return table
        try:
            import pandas  # noqa: F401
        except ImportError as error:  # pragma: no cover - a core dependency
            raise MissingDependencyError("Explanations.rows() returns a pandas DataFrame: pip install pandas "
                                         "(or pass as_arrow=True).") from error
        return table.to_pandas()

    # ----------------------------------------------------------------------------------------- checks
    def verify(self, chunks: Optional[Sequence[int]] = None) -> List[int]:
        """Re-check every file of the finished chunks (or of ``chunks``) against the sha256 of its marker.

        Returns:
            The verified chunk indices.

        Raises:
            CorruptChunkError: naming each damaged chunk and file (missing, truncated, changed).
        """
        if chunks is None:
            chunks, bad = self.finished_chunks, sorted(self._bad_markers)
        elif (isinstance(chunks, (str, bytes)) or not hasattr(chunks, "__iter__")
              or not all(isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)) for k in chunks)):
            raise InvalidTypeError(f"`chunks` must be a list of chunk indices (ints). {received('chunks', chunks)}")
        else:
            bad = sorted(int(k) for k in chunks if int(k) in self._bad_markers)
            chunks = sorted(int(k) for k in chunks if int(k) in self._markers)
        problems = [(k, self._bad_markers[k], "") for k in bad]
        for k in chunks:
            marker = self._markers[k]
            names = set(marker["files"])
            for name in self._arrays:
                if not any(entry.startswith(f"{DATA}/{name}/") for entry in names):
                    problems.append((k, f"{DATA}/{name}", "has no file recorded in its marker"))
            if f"{ROWS}/{_part_name(k)}" not in names:
                problems.append((k, f"{ROWS}/{_part_name(k)}", "is not recorded in its marker"))
            for relative, expected in sorted(marker["files"].items()):
                path = os.path.join(self.out, *relative.split("/"))
                try:
                    got = _hash_file(path)
                except FileNotFoundError:
                    problems.append((k, relative, "missing"))
                    continue
                except OSError as error:
                    problems.append((k, relative, f"unreadable ({error.strerror})"))
                    continue
                if got["size"] != expected["size"]:
                    problems.append((k, relative, f"{got['size']} bytes, {expected['size']} recorded"))
                elif got["sha256"] != expected["sha256"]:
                    problems.append((k, relative, "content differs from its sha256"))
        if problems:
            damaged = sorted({k for k, _, _ in problems})
            details = "; ".join(f"chunk {k}: {relative} {what}".rstrip() for k, relative, what in problems[:6])
            raise CorruptChunkError(
                f"out={self.out!r}: chunk{'s' if len(damaged) > 1 else ''} {', '.join(map(str, damaged[:10]))} "
                f"{'are' if len(damaged) > 1 else 'is'} damaged ({details}{' ...' if len(problems) > 6 else ''}). "
                f"Delete their markers ({DONE}/{_marker_name(damaged[0])}, ...) and resume the run to rewrite them. "
                f"{received('out', self.out)}"
            )
        return list(chunks)

    def __repr__(self) -> str:
        total = "?" if self.num_items is None else -(-self.num_items // self.chunk)
        shapes = ", ".join(f"{name} {tuple(self._arrays[name].shape[1:])} {self._arrays[name].dtype}"
                           for name in self.array_names if name.startswith("attributions"))
        return (f"Explanations(out={self.out!r}, items={len(self)}, chunks finished {len(self._markers)}/{total}, "
                f"complete={self.complete}{', ' + shapes if shapes else ''})")


def recorded_settings(out) -> Optional[Dict[str, Any]]:
    """The settings recorded in the store ``out``, or None if ``out`` holds no store yet.

    For a runner that must reuse a recorded choice on resume (the engine chunk size measured under
    ``batch_size="auto"`` by the first run) before it builds the settings it passes to
    :meth:`StoreWriter.open`.

    Raises:
        CorruptStoreError: ``tfattr-store.json`` is unreadable.
        NotAStoreError: it is not a tfattr store's.
    """
    out = os.path.abspath(os.fspath(out))
    if not os.path.isfile(os.path.join(out, STORE_FILE)):
        return None
    return _read_store_file(out)["settings"]


def open_explanations(out) -> Explanations:
    """Open the store of a dataset run (``explain_dataset``, Beam) for reading: see :class:`Explanations`.

    Raises:
        NotAStoreError: ``out`` does not exist or is not a tfattr store.
        CorruptStoreError: Its metadata cannot be read.
    """
    return Explanations(out)
