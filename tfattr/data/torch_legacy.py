"""Read a PyTorch checkpoint in torch's legacy (pre-1.6, non-zip) format without torch.

The legacy format (``torch.save(..., _use_new_zipfile_serialization=False)`` and every file
written before torch 1.6) is a sequence of pickles followed by raw bytes:

1. the magic number ``0x1950a86a20f9469cfc6c``;
2. the protocol version ``1001``;
3. system information (``{"little_endian": ..., "type_sizes": ...}``);
4. the object itself (a state dict: ``OrderedDict`` of name → tensor). Each tensor is pickled
   as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``
   whose ``storage`` is a *persistent id* ``("storage", torch.FloatStorage, key, location,
   numel, view)``: a reference to a storage written after the pickles;
5. the list of storage keys, in the order their bytes follow;
6. per storage: its element count as a little-endian int64, then its raw bytes.

Unpickling runs whatever globals a pickle names, so a checkpoint from elsewhere could run any
code. :func:`read_torch_legacy` unpickles with a :class:`RestrictedUnpickler` whose
``find_class`` accepts only the globals a state dict needs — ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` (mapped to a NumPy stand-in) and the ``torch.*Storage``
types (mapped to NumPy dtypes) — and refuses every other one (``os.system``,
``builtins.eval``, …) with an :class:`~tfattr.errors.InvalidInputError` before anything runs.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import reprlib
import struct
from typing import BinaryIO, Dict, Optional, Union

import numpy as np

from tfattr.errors import InvalidInputError

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 3, 6, 6, 4
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 80, 80, 80


def received(name: str, value) -> str:
    """``Received: name=value`` with a bounded repr: a crafted object (a "billion laughs" of
    shared nested lists, a 10^5-deep nesting) is shown by its first levels and items only, in
    time and memory independent of its expanded size."""
    try:
        text = _SHORT.repr(value)
    except Exception:  # noqa: BLE001 - a message must not fail
        text = f"<{type(value).__name__}>"
    return f"Received: {name}={text[:200]}"


#: a tensor of a legacy file may hold more elements than its storage only through overlapping
#: (stride-0) views; all tensors together may exceed their storages' elements by at most this many
#: (64 MiB of float32), so a few-byte storage cannot be declared as a 40000² stride-0 tensor
MAX_EXTRA_ELEMENTS = 1 << 24
#: the most axes a tensor may declare
MAX_DIMS = 32

__all__ = ["LEGACY_MAGIC_NUMBER", "LEGACY_PROTOCOL_VERSION", "RestrictedUnpickler", "read_torch_legacy"]

#: the first pickle of a legacy torch file
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: the second pickle of a legacy torch file
LEGACY_PROTOCOL_VERSION = 1001


class _StorageType:
    """Stands for a ``torch.<Type>Storage`` class inside a persistent id; not callable."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", np.dtype(dtype))

    def __setattr__(self, key, value):  # a pickle's BUILD cannot change what a storage type means
        raise InvalidInputError("A torch storage type cannot be modified by the checkpoint. " + received(key, value))

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGE_DTYPES = (("FloatStorage", "<f4"), ("DoubleStorage", "<f8"), ("HalfStorage", "<f2"), ("LongStorage", "<i8"),
                   ("IntStorage", "<i4"), ("ShortStorage", "<i2"), ("CharStorage", "i1"), ("ByteStorage", "u1"),
                   ("BoolStorage", "?"))


def _fresh_globals() -> dict:
    """(module, name) → stand-in, new for each read: nothing one file does to them reaches another."""
    table = {("collections", "OrderedDict"): collections.OrderedDict,
             ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2}
    table.update({("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES})
    return table





class _Storage:
    """A storage referenced by the object pickle; its bytes are read after the pickles."""

    __slots__ = ("key", "type", "numel", "data")

    def __init__(self, key: str, storage_type: _StorageType, numel: int):
        self.key, self.type, self.numel, self.data = key, storage_type, numel, None


class _Tensor:
    """A tensor to build once its storage's bytes are read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def elements(self) -> int:
        return math.prod(self.size)

    def to_numpy(self, name: str) -> np.ndarray:
        data = self.storage.data
        if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride):
            raise InvalidInputError(f"Tensor {name!r} has a negative size or stride. " + received("size", self.size))
        if self.elements() == 0:
            if any(n > MAX_EXTRA_ELEMENTS for n in self.size):
                raise InvalidInputError(f"Tensor {name!r} declares an axis too long. " + received("size", self.size))
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or last >= data.size:
            raise InvalidInputError(
                f"Tensor {name!r} reaches past the end of its storage ({data.size} elements). "
                + received("(offset, size, stride)", (self.offset, self.size, self.stride)))
        # an axis of length 1 never steps: its stride (maybe huge) is not used
        strides = tuple((s if n > 1 else 0) * data.itemsize for n, s in zip(self.size, self.stride))
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size, strides=strides, writeable=False)
        return np.array(view, dtype=data.dtype.newbyteorder("="))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *metadata):
    if not isinstance(storage, _Storage):
        raise InvalidInputError("torch._utils._rebuild_tensor_v2 needs a storage as its first argument. "
                                + received("type(storage)", type(storage).__name__))
    try:
        if not all(type(v) is int for v in (storage_offset, *size, *stride)):
            raise TypeError
        size, stride = tuple(size), tuple(stride)
        storage_offset = int(storage_offset)
    except (TypeError, ValueError):
        raise InvalidInputError("A tensor's offset, size and stride must be integers. "
                                + received("(offset, size, stride)", (storage_offset, size, stride))) from None
    if len(size) != len(stride) or len(size) > MAX_DIMS:
        raise InvalidInputError(f"A tensor's size and stride must have the same length, at most {MAX_DIMS}. "
                                + received("(size, stride)", (size, stride)))
    return _Tensor(storage, storage_offset, size, stride)




_FLAT = (str, int, float, bytes, bool, type(None))


def _flat_key(key):
    """Dict keys must hash in time linear in the file (no nested tuples: a tuple of shared tuples
    of depth 60 hashes in 2^60 steps)."""
    if not isinstance(key, _FLAT):
        raise InvalidInputError("A dictionary key in the checkpoint must be a string or a number. "
                                + received("type(key)", type(key).__name__))
    return key


class _BoundedFile:
    """A file whose ``read(n)`` never asks for more than the bytes left (a pickle declaring a
    2^40-byte string does not make the reader allocate it)."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.left = None
        if file.seekable():
            here = file.tell()
            end = file.seek(0, io.SEEK_END)
            file.seek(here)
            self.left = end - here

    def read(self, n: int = -1) -> bytes:
        if self.left is not None and (n is None or n < 0 or n > self.left):
            n = self.left
        data = self.file.read(n)
        if self.left is not None:
            self.left -= len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        limit = 1 << 16 if limit is None or limit < 0 else limit
        data = self.file.readline(limit)
        if self.left is not None:
            self.left -= len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self.file.tell()


class RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 - the Python unpickler: its opcodes can be guarded
    """An unpickler that resolves only the globals of a torch state dict.

    ``find_class`` returns NumPy stand-ins for ``collections.OrderedDict``,
    ``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage`` types (new ones for each
    read, immutable), and raises :class:`~tfattr.errors.InvalidInputError` for any other global,
    so a crafted pickle cannot reach ``os.system``, ``builtins.eval``, ``subprocess`` or anything
    else. Persistent ids must be storage references (``("storage", type, key, location, numel,
    view)``). Dictionary keys must be strings or numbers, sets are refused, and ``BUILD`` sets
    attributes only on ``OrderedDict`` instances (torch's ``_metadata``), so no object of the
    file hashes, compares or changes anything in time beyond linear in its size.

    Example:
        >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(os.system))).load()
        Traceback (most recent call last):
        tfattr.errors.InvalidInputError: ... Received: global='posix.system'
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

    def __init__(self, file: BinaryIO, storages: Optional[Dict[str, _Storage]] = None, stand_ins=None):
        super().__init__(file)
        self.storages = {} if storages is None else storages
        self.stand_ins = _fresh_globals() if stand_ins is None else stand_ins

    def find_class(self, module: str, name: str):
        try:
            return self.stand_ins[(module, name)]
        except (KeyError, TypeError):
            raise InvalidInputError(
                "Refusing to unpickle a global a torch state dict does not need (unpickling runs "
                "it); only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and "
                "torch.*Storage are allowed. " + received("global", f"{module}.{name}")) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and type(pid[4]) is int and pid[4] >= 0):
            raise InvalidInputError("A persistent id must be a storage reference "
                                    "('storage', torch.<Type>Storage, key, location, numel, view). "
                                    + received("persistent_id", pid))
        _, storage_type, key, _, numel, view = pid
        if storage_type not in self.stand_ins.values():
            raise InvalidInputError("A storage type must be one of this file's torch.*Storage globals. "
                                    + received("persistent_id", pid))
        if view is not None:
            raise InvalidInputError("Views of storages (torch < 0.4 checkpoints) are not supported. "
                                    + received("view", view))
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type, numel)
        elif storage.type is not storage_type or storage.numel != numel:
            raise InvalidInputError(f"Storage {key!r} is referenced with two types or sizes. "
                                    + received("persistent_id", pid))
        return storage

    # -- guarded opcodes ------------------------------------------------------------------------

    def _load_setitem(self):
        _flat_key(self.stack[-2])
        pickle._Unpickler.load_setitem(self)  # noqa: SLF001

    def _load_setitems(self):
        for key in self.stack[0::2]:  # the items since the mark
            _flat_key(key)
        pickle._Unpickler.load_setitems(self)  # noqa: SLF001

    def _load_dict(self):
        for key in self.stack[0::2]:
            _flat_key(key)
        pickle._Unpickler.load_dict(self)  # noqa: SLF001

    def _refuse_sets(self):
        raise InvalidInputError("A torch state dict holds no sets. " + received("opcode", "set"))

    def _load_build(self):
        instance = self.stack[-2]
        state = self.stack[-1]
        if not (type(instance) is collections.OrderedDict and isinstance(state, dict)):
            raise InvalidInputError("The checkpoint sets attributes of an object other than a state dict. "
                                    + received("type(object)", type(instance).__name__))
        for key in state:
            if not isinstance(key, str):
                raise InvalidInputError("Attribute names must be strings. " + received("type(key)", type(key).__name__))
        self.stack.pop()
        instance.__dict__.update(state)

    def _load_reduce(self):
        args = self.stack[-1]
        function = self.stack[-2]
        if function is collections.OrderedDict and args:
            raise InvalidInputError("collections.OrderedDict is only rebuilt empty in a state dict. "
                                    + received("args", args))
        pickle._Unpickler.load_reduce(self)  # noqa: SLF001

    dispatch[pickle.SETITEM[0]] = _load_setitem
    dispatch[pickle.SETITEMS[0]] = _load_setitems
    dispatch[pickle.DICT[0]] = _load_dict
    dispatch[pickle.ADDITEMS[0]] = _refuse_sets
    dispatch[pickle.FROZENSET[0]] = _refuse_sets
    dispatch[pickle.EMPTY_SET[0]] = _refuse_sets
    dispatch[pickle.BUILD[0]] = _load_build
    dispatch[pickle.REDUCE[0]] = _load_reduce


_MALFORMED = (pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError, AttributeError, EOFError,
              OverflowError, MemoryError, RecursionError, struct.error, UnicodeDecodeError)


def _load(file, storages: Dict[str, _Storage], stand_ins=None):
    try:
        return RestrictedUnpickler(file, storages, stand_ins).load()
    except InvalidInputError:
        raise
    except Exception as error:  # a malformed pickle: the unpickler's own error, reworded
        detail = str(error)[:160]
        raise InvalidInputError(f"Not a legacy torch checkpoint: a pickle could not be read "
                                f"({type(error).__name__}: {detail}). " + received("position", file.tell())) from None


def read_torch_legacy(file: Union[str, os.PathLike, BinaryIO]) -> collections.OrderedDict[str, np.ndarray]:
    """A torch state dict saved in the legacy (pre-1.6, non-zip) format, as NumPy arrays.

    Needs no torch: the pickles are read by :class:`RestrictedUnpickler`, which refuses every
    global but the few a state dict names, then the storages' raw bytes are read and each
    tensor is cut from its storage (offset, size, stride) and copied.

    Args:
        file: a path or a binary file object at the start of the checkpoint.

    Returns:
        ``OrderedDict`` name → array (``float32`` for ``FloatStorage``, ``int64`` for
        ``LongStorage``, …), in the checkpoint's order; the arrays own their data.

    Raises:
        InvalidInputError: a zip-format (torch ≥ 1.6) file, a wrong magic number or
            protocol, a global other than the state dict's, truncated bytes, or a tensor
            reaching past its storage.

    Example:
        >>> state = read_torch_legacy("efficientnet-lite0-57934424.pth")
        >>> state["_conv_stem.weight"].shape          # torch's (out, in, height, width)
        (32, 3, 3, 3)
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as handle:
            return read_torch_legacy(handle)
    start = b""
    if file.seekable():
        position = file.tell()
        start = file.read(2)
        file.seek(position)
    if start == b"PK":
        raise InvalidInputError("This is a zip-format torch checkpoint (torch >= 1.6); only the legacy "
                                "format is read here. " + received("first bytes", start))
    try:
        return _read(_BoundedFile(file))
    except InvalidInputError:
        raise
    except _MALFORMED as error:  # one error type for every malformed file
        raise InvalidInputError(f"Not a readable legacy torch checkpoint ({type(error).__name__}: "
                                f"{str(error)[:160]}). " + received("position", file.tell())) from None


def _read(file: _BoundedFile) -> collections.OrderedDict[str, np.ndarray]:
    storages: Dict[str, _Storage] = {}
    stand_ins = _fresh_globals()
    magic = _load(file, storages, stand_ins)
    if type(magic) is not int or magic != LEGACY_MAGIC_NUMBER:
        raise InvalidInputError("Not a legacy torch checkpoint: wrong magic number. " + received("magic", magic))
    version = _load(file, storages, stand_ins)
    if type(version) is not int or version != LEGACY_PROTOCOL_VERSION:
        raise InvalidInputError(f"Unsupported legacy torch protocol version; expected {LEGACY_PROTOCOL_VERSION}. "
                                + received("version", version))
    system = _load(file, storages, stand_ins)
    little_endian = system.get("little_endian", True) if isinstance(system, dict) else True
    if not isinstance(little_endian, bool):
        raise InvalidInputError("The checkpoint's `little_endian` must be True or False. "
                                + received("little_endian", little_endian))
    state = _load(file, storages, stand_ins)
    keys = _load(file, storages, stand_ins)
    if not isinstance(state, dict):
        raise InvalidInputError("The checkpoint holds no state dict (name → tensor). "
                                + received("type(object)", type(state).__name__))
    if not (isinstance(keys, list) and all(type(k) is str for k in keys) and sorted(keys) == sorted(storages)):
        raise InvalidInputError("The checkpoint's list of storage keys does not match the storages its "
                                "tensors reference. " + received("keys", keys))
    for name, tensor in state.items():
        if type(name) is not str:
            raise InvalidInputError("State dict names must be strings. " + received("type(name)", type(name).__name__))
        if not isinstance(tensor, _Tensor):
            raise InvalidInputError(f"State dict entry {name!r} is not a tensor. "
                                    + received("type", type(tensor).__name__))
    budget = sum(storage.numel for storage in storages.values()) + MAX_EXTRA_ELEMENTS
    if sum(tensor.elements() for tensor in state.values()) > budget:
        raise InvalidInputError(
            "The checkpoint's tensors declare more elements than their storages hold (overlapping stride-0 "
            f"views beyond {MAX_EXTRA_ELEMENTS} extra elements); not a state dict. "
            + received("sizes", [tensor.size for tensor in list(state.values())[:4]]))
    for key in keys:
        storage = storages[key]
        count_bytes = file.read(8)
        if len(count_bytes) != 8:
            raise InvalidInputError(f"The checkpoint ends before storage {key!r}. " + received("key", key))
        count = struct.unpack("<q" if little_endian else ">q", count_bytes)[0]
        if count != storage.numel:
            raise InvalidInputError(f"Storage {key!r} holds {count} elements where its reference says "
                                    f"{storage.numel}. " + received("key", key))
        dtype = storage.type.dtype if little_endian else storage.type.dtype.newbyteorder(">")
        if file.left is not None and count * dtype.itemsize > file.left:  # before allocating
            raise InvalidInputError(f"The checkpoint ends inside storage {key!r}. " + received("key", key))
        raw = file.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise InvalidInputError(f"The checkpoint ends inside storage {key!r}. " + received("key", key))
        storage.data = np.frombuffer(raw, dtype=dtype)
    result = collections.OrderedDict()
    for name, tensor in state.items():
        result[name] = tensor.to_numpy(name)
    return result
