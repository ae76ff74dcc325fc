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
import os
import pickle
import struct
from typing import BinaryIO, Dict, Optional, Union

import numpy as np

from tfattr.errors import InvalidInputError, received

__all__ = ["LEGACY_MAGIC_NUMBER", "LEGACY_PROTOCOL_VERSION", "RestrictedUnpickler", "read_torch_legacy"]

#: the first pickle of a legacy torch file
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: the second pickle of a legacy torch file
LEGACY_PROTOCOL_VERSION = 1001


class _StorageType:
    """Stands for a ``torch.<Type>Storage`` class inside a persistent id; not callable."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        self.name, self.dtype = name, np.dtype(dtype)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGE_TYPES = {name: _StorageType(name, dtype) for name, dtype in (
    ("FloatStorage", "<f4"), ("DoubleStorage", "<f8"), ("HalfStorage", "<f2"), ("LongStorage", "<i8"),
    ("IntStorage", "<i4"), ("ShortStorage", "<i2"), ("CharStorage", "i1"), ("ByteStorage", "u1"),
    ("BoolStorage", "?"),
)}


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

    def to_numpy(self, name: str) -> np.ndarray:
        data = self.storage.data
        if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride):
            raise InvalidInputError(f"Tensor {name!r} has a negative size or stride. " + received("size", self.size))
        if int(np.prod(self.size)) == 0:
            return np.zeros(self.size, data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if self.offset < 0 or last >= data.size:
            raise InvalidInputError(
                f"Tensor {name!r} reaches past the end of its storage ({data.size} elements). "
                + received("(offset, size, stride)", (self.offset, self.size, self.stride)))
        strides = tuple(s * data.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(data[self.offset:], shape=self.size, strides=strides, writeable=False)
        return np.array(view, dtype=data.dtype.newbyteorder("="))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *metadata):
    if not isinstance(storage, _Storage):
        raise InvalidInputError("torch._utils._rebuild_tensor_v2 needs a storage as its first argument. "
                                + received("type(storage)", type(storage).__name__))
    try:
        size, stride = tuple(int(v) for v in size), tuple(int(v) for v in stride)
        storage_offset = int(storage_offset)
    except (TypeError, ValueError):
        raise InvalidInputError("A tensor's offset, size and stride must be integers. "
                                + received("(offset, size, stride)", (storage_offset, size, stride))) from None
    if len(size) != len(stride):
        raise InvalidInputError("A tensor's size and stride must have the same length. "
                                + received("(size, stride)", (size, stride)))
    return _Tensor(storage, storage_offset, size, stride)


#: (module, name) → object: everything a legacy state dict's pickles may name
_ALLOWED_GLOBALS = {("collections", "OrderedDict"): collections.OrderedDict,
                    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2}
_ALLOWED_GLOBALS.update({("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()})


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of a torch state dict.

    ``find_class`` returns NumPy stand-ins for ``collections.OrderedDict``,
    ``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage`` types, and raises
    :class:`~tfattr.errors.InvalidInputError` for any other global, so a crafted pickle cannot
    reach ``os.system``, ``builtins.eval``, ``subprocess`` or anything else. Persistent ids
    must be storage references (``("storage", type, key, location, numel, view)``).

    Example:
        >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(os.system))).load()
        Traceback (most recent call last):
        tfattr.errors.InvalidInputError: ... Received: global='posix.system'
    """

    def __init__(self, file: BinaryIO, storages: Optional[Dict[str, _Storage]] = None):
        super().__init__(file)
        self.storages = {} if storages is None else storages

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise InvalidInputError(
                "Refusing to unpickle a global a torch state dict does not need (unpickling runs "
                "it); only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and "
                "torch.*Storage are allowed. " + received("global", f"{module}.{name}")) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise InvalidInputError("A persistent id must be a storage reference "
                                    "('storage', torch.<Type>Storage, key, location, numel, view). "
                                    + received("persistent_id", pid))
        _, storage_type, key, _, numel, view = pid
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


def _load(file: BinaryIO, storages: Dict[str, _Storage]):
    try:
        return RestrictedUnpickler(file, storages).load()
    except InvalidInputError:
        raise
    except Exception as error:  # a malformed pickle: the unpickler's own error, reworded
        raise InvalidInputError(f"Not a legacy torch checkpoint: a pickle could not be read "
                                f"({type(error).__name__}: {error}). " + received("position", file.tell())) from None


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
    storages: Dict[str, _Storage] = {}
    magic = _load(file, storages)
    if magic != LEGACY_MAGIC_NUMBER:
        raise InvalidInputError("Not a legacy torch checkpoint: wrong magic number. " + received("magic", magic))
    version = _load(file, storages)
    if version != LEGACY_PROTOCOL_VERSION:
        raise InvalidInputError(f"Unsupported legacy torch protocol version; expected {LEGACY_PROTOCOL_VERSION}. "
                                + received("version", version))
    system = _load(file, storages)
    little_endian = system.get("little_endian", True) if isinstance(system, dict) else True
    state = _load(file, storages)
    keys = _load(file, storages)
    if not isinstance(state, dict):
        raise InvalidInputError("The checkpoint holds no state dict (name → tensor). "
                                + received("type(object)", type(state).__name__))
    if not (isinstance(keys, list) and sorted(keys) == sorted(storages)):
        raise InvalidInputError("The checkpoint's list of storage keys does not match the storages its "
                                "tensors reference. " + received("keys", keys))
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
        raw = file.read(count * dtype.itemsize)
        if len(raw) != count * dtype.itemsize:
            raise InvalidInputError(f"The checkpoint ends inside storage {key!r}. " + received("key", key))
        storage.data = np.frombuffer(raw, dtype=dtype)
    result = collections.OrderedDict()
    for name, tensor in state.items():
        if not isinstance(tensor, _Tensor):
            raise InvalidInputError(f"State dict entry {name!r} is not a tensor. "
                                    + received("type", type(tensor).__name__))
        result[str(name)] = tensor.to_numpy(str(name))
    return result
