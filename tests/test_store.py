"""The dataset store (issue #30): zarr v3 arrays, Parquet row parts, commit markers written last.

Writers in subprocesses load ``tfattr.streaming.store`` without running the package tops (no
TensorFlow import: each process starts in ~0.3 s), so kill -9 at many points stays fast.
"""

import inspect
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import zarr

from tfattr.streaming.store import (
    ChunkFinishedError,
    CorruptChunkError,
    CorruptStoreError,
    NotAStoreError,
    SettingsMismatchError,
    StoreLockedError,
    StoreWriter,
    UnfinishedChunkError,
    open_explanations,
    recorded_settings,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {"tfattr": "0.1.0", "method": {"name": "ig", "options": {"steps": 32, "baseline": "zero"}},
            "data": {"kind": "arrays", "n": 10}, "chunk": 4, "seed": 0}


def chunk_data(k, chunk, num_items):
    """Deterministic arrays and rows of chunk ``k`` (item ``i`` depends on ``i`` only)."""
    import numpy as np

    start, stop = k * chunk, min((k + 1) * chunk, num_items)
    items = range(start, stop)
    ids = [f"img-{i:05d}" for i in items]
    arrays = {
        "attributions": np.stack([np.random.default_rng(i).normal(size=(16, 16, 3)) for i in items]).astype("float32"),
        "targets": np.array([i % 10 for i in items]),
        "scores": np.array([i / 7 for i in items]),
        "delta": np.array([np.nan if i % 2 == 0 else i * 1e-3 for i in items]),
        "valid": np.array([i % 11 != 5 for i in items]),
    }
    rows = [{"id": ids[j], "index": i, "target": i % 10, "score": i / 7, "label": None if i % 3 else i % 10,
             "status": "skipped" if i % 11 == 5 else "ok", "error": "corrupt file" if i % 11 == 5 else None}
            for j, i in enumerate(items)]
    return start, ids, arrays, rows


WORKER = '''
import json, os, signal, sys, time, types
root = sys.argv[1]
for name in ("tfattr", "tfattr.streaming"):  # the store without the package tops (no TensorFlow)
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(root, *name.split("."))]
    sys.modules[name] = module
class NoPandas:  # pyarrow imports pandas if it can (~1 s a process); writing rows does not need it
    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is left out of this test worker")
sys.meta_path.insert(0, NoPandas())
import numpy as np
import zarr
import zarr.storage._local as local
from tfattr.streaming import store

args = json.loads(sys.argv[2])
counts = {}

def die_at(label, nth):
    counts[label] = counts.get(label, 0) + 1
    if counts[label] == nth:
        os.kill(os.getpid(), signal.SIGKILL)

kill = args.get("kill")  # [where, nth]
if kill:
    where, nth = kill
    if where == "zarr_put":  # killed half-way through writing a zarr file (its temporary file)
        original_put = local._put
        def _put(path, value, exclusive=False):
            counts[where] = counts.get(where, 0) + 1
            if counts[where] == nth:
                with local._atomic_write(path, "wb") as handle:
                    data = bytes(value.as_buffer_like())
                    handle.write(data[: len(data) // 2])
                    handle.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            return original_put(path, value, exclusive)
        local._put = _put
    else:
        target = {"hash": (store, "_hash_file"), "rows": (store, "_parquet_bytes"), "marker": (store.os, "link"),
                  "create": (zarr, "create_array")}[where]
        original = getattr(*target)
        def wrapped(*a, _original=original, **kw):
            die_at(where, nth)
            return _original(*a, **kw)
        setattr(*target, wrapped)

SOURCE
settings = args["settings"]
if args.get("go"):
    while not os.path.exists(args["go"]):
        time.sleep(0.005)
writer = store.StoreWriter.open(args["out"], settings, args["chunk"], args["num_items"], lock=args["lock"],
                                durable=args.get("durable", True))
for k in args["chunks"]:
    if k in writer.finished():
        continue
    start, ids, arrays, rows = chunk_data(k, args["chunk"], args["total"])
    writer.write_chunk(k, start, ids, arrays, rows)
if args.get("finish"):
    writer.finish(args["total"])
writer.close()
print("done", flush=True)
'''


def _worker_script(tmp_path):
    path = tmp_path / "worker.py"
    path.write_text(WORKER.replace("SOURCE", inspect.getsource(chunk_data)))
    return str(path)


def _spawn(script, **args):
    return subprocess.Popen([sys.executable, script, ROOT, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _write(out, chunk=4, num_items=10, order=None, settings=SETTINGS, finish=True, lock=True):
    total = num_items if num_items is not None else 10
    chunks = -(-total // chunk)
    with StoreWriter.open(out, settings, chunk, num_items, lock=lock) as writer:
        for k in order if order is not None else range(chunks):
            writer.write_chunk(k, *chunk_data(k, chunk, total))
        if finish:
            writer.finish(total)
    return out


def _reference(chunk=4, num_items=10):
    parts = [chunk_data(k, chunk, num_items) for k in range(-(-num_items // chunk))]
    arrays = {name: np.concatenate([part[2][name] for part in parts]) for name in parts[0][2]}
    arrays["ids"] = np.array(sum((part[1] for part in parts), []), dtype=object)
    rows = sum((part[3] for part in parts), [])
    return arrays, rows


def _tree(out):
    """Relative path -> bytes of every file of a store but its lock files."""
    files = {}
    for folder, _, names in os.walk(out):
        for name in names:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, out)
            if relative not in ("lock", ".meta.lock"):
                with open(path, "rb") as handle:
                    files[relative] = handle.read()
    return files


def _assert_equal(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("num_items", [10, None])
def test_round_trip_in_any_chunk_order_returns_what_was_written(tmp_path, num_items):
    out = _write(str(tmp_path / "out"), num_items=num_items, order=[2, 0, 1])
    expected, rows = _reference()
    ex = open_explanations(out)
    assert len(ex) == 10 and ex.complete and ex.finished_chunks == [0, 1, 2] and ex.num_items == 10
    assert ex.settings == SETTINGS
    for name in ("attributions", "targets", "scores", "delta", "ids"):
        _assert_equal(getattr(ex, name)[:], expected[name])
    _assert_equal(ex.valid, expected["valid"])
    assert ex.targets.dtype == np.int32 and ex.attributions.dtype == np.float32
    assert ex.attributions.shape == (10, 16, 16, 3)
    # lazy slicing: ints, negative ints, steps, int arrays, masks, item dimensions
    _assert_equal(ex.attributions[-1], expected["attributions"][-1])
    assert ex.ids[0] == "img-00000" and ex.targets[3] == 3 and ex.scores[7] == 1.0 and np.isnan(ex.delta[4])
    _assert_equal(ex.attributions[1:9:3, 2, :, 1], expected["attributions"][1:9:3, 2, :, 1])
    _assert_equal(ex.attributions[[9, 0, 4]], expected["attributions"][[9, 0, 4]])
    _assert_equal(ex.scores[ex.valid], expected["scores"][expected["valid"]])
    table = ex.rows()
    assert list(table["id"]) == list(expected["ids"]) and list(table["index"]) == list(range(10))
    assert list(table["status"]) == [row["status"] for row in rows]
    assert table["label"].isna().tolist() == [row["label"] is None for row in rows]
    assert ex.verify() == [0, 1, 2]
    assert recorded_settings(out) == SETTINGS and recorded_settings(str(tmp_path / "none")) is None
    assert "items=10" in repr(ex) and "chunks finished 3/3" in repr(ex) and "(16, 16, 3) float32" in repr(ex)
    # a plain zarr v3 group: readable without tfattr (xarray, dask)
    group = zarr.open_group(os.path.join(out, "data.zarr"), mode="r")
    _assert_equal(group["attributions"][:], expected["attributions"])
    assert group["attributions"].chunks == (4, 16, 16, 3)


def test_slicing_reads_only_the_chunks_it_touches(tmp_path, monkeypatch):
    out = _write(str(tmp_path / "out"))
    ex = open_explanations(out)
    read = []
    original = zarr.storage.LocalStore.get

    async def get(self, key, *args, **kwargs):
        read.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", get)
    expected, _ = _reference()
    _assert_equal(ex.attributions[5, 3], expected["attributions"][5, 3])
    _assert_equal(ex.scores[[9, 8]], expected["scores"][[9, 8]])
    assert read == ["attributions/c.1.0.0.0", "scores/c.2"]


def test_several_inputs_and_defaults(tmp_path):
    out = str(tmp_path / "out")
    a = np.arange(30, dtype="float32").reshape(10, 3)
    b = -np.arange(40, dtype="float64").reshape(10, 2, 2)
    with StoreWriter.open(out, {}, 8, None) as writer:
        writer.write_chunk(1, 8, ["i8", "i9"], {"attributions/a": a[8:], "attributions/b": b[8:]},
                           rows=[{"id": "i8", "status": "ok"}, {"id": "i9", "status": "skipped"}])
        writer.write_chunk(0, 0, [f"i{i}" for i in range(8)], {"attributions/a": a[:8], "attributions/b": b[:8]})
        with pytest.raises(ValueError, match=r"attributions/b: recorded \{'shape_per_item': \[2, 2\]"):
            writer.write_chunk(1 + 1, 16, ["x"], {"attributions/a": a[:1], "attributions/b": b[:1, 0]})
        writer.finish(10)
    ex = open_explanations(out)
    assert sorted(ex.attributions) == ["a", "b"] and ex.attributions["b"].dtype == np.float32
    _assert_equal(ex.attributions["a"][:], a)
    _assert_equal(ex.attributions["b"][:], b.astype("float32"))
    # defaults: targets -1, scores/delta NaN, valid from the rows' status (else True)
    _assert_equal(ex.targets[:], -np.ones(10))
    assert np.isnan(ex.scores[:]).all() and np.isnan(ex.delta[:]).all()
    _assert_equal(ex.valid, [True] * 9 + [False])
    assert ex.array("attributions/a").zarr.shape == (10, 3)  # cut to num_items at finish


def test_only_the_last_chunk_may_be_short(tmp_path):
    """Size unknown: a short chunk followed by another would leave a hole inside a 'finished' chunk."""
    out = str(tmp_path / "out")
    with StoreWriter.open(out, {}, 4, None) as writer:
        writer.write_chunk(0, 0, ["c"] * 2, {"scores": np.arange(2.0)})  # short, and not the last
        writer.write_chunk(2, 8, ["a"] * 4, {"scores": np.arange(4.0)})
        with pytest.raises(ValueError, match=r"Only the last chunk may have fewer than chunk=4 items, and chunk 2"):
            writer.write_chunk(1, 4, ["b"] * 3, {"scores": np.arange(3.0)})
        writer.write_chunk(1, 4, ["b"] * 4, {"scores": np.arange(4.0)})
        with pytest.raises(ValueError, match=r"chunk 0 ends at item 2, not 4"):
            writer.finish(12)
    ex = open_explanations(out)
    with pytest.raises(UnfinishedChunkError, match=r"unfinished chunk 0 \(chunk 0 = items 0 to 3\)"):
        ex.scores[:4]  # items 2 and 3 were never written: not returned as NaN
    _assert_equal(ex.scores[:2], [0.0, 1.0])
    _assert_equal(ex.valid, [True, True, False, False] + [True] * 8)


# ------------------------------------------------------------------------------------------------- settings
def test_other_settings_on_the_same_out_are_a_named_error(tmp_path):
    out = _write(str(tmp_path / "out"), finish=False, order=[0])
    changed = json.loads(json.dumps(SETTINGS))
    changed["method"]["options"]["steps"] = 64
    changed["method"]["options"]["noise"] = 0.1
    with pytest.raises(SettingsMismatchError, match=r"method\.options\.noise: not recorded, this run 0\.1; "
                                                    r"method\.options\.steps: recorded 32, this run 64\..*Received: "):
        StoreWriter.open(out, changed, 4, 10)
    with pytest.raises(SettingsMismatchError, match=r"chunk: recorded 4, this run 5"):
        StoreWriter.open(out, SETTINGS, 5, 10)
    with pytest.raises(SettingsMismatchError, match=r"holds a run over 10 items; this run has 12"):
        StoreWriter.open(out, SETTINGS, 4, 12)
    # the recorded form is JSON's: a tuple equals the list it was recorded as, 1 equals 1.0
    same = dict(SETTINGS, data={"kind": "arrays", "n": 10.0}, extra=None)
    with pytest.raises(SettingsMismatchError, match=r"extra: not recorded"):
        StoreWriter.open(out, same, 4, 10)
    StoreWriter.open(out, dict(SETTINGS, data={"kind": "arrays", "n": 10.0}), 4, None).close()
    with pytest.raises(TypeError, match=r"`settings` must be JSON-serialisable"):
        StoreWriter.open(str(tmp_path / "other"), {"model": object()}, 4, 10)


# --------------------------------------------------------------------------------------------- resume rules
def test_reopen_skips_finished_chunks_and_refuses_to_rewrite_them(tmp_path):
    out = _write(str(tmp_path / "out"), finish=False, order=[0, 2])
    with StoreWriter.open(out, SETTINGS, 4, 10) as writer:
        assert writer.finished() == {0, 2}
        with pytest.raises(ChunkFinishedError, match=r"Chunk 2 of out=.* is finished"):
            writer.write_chunk(2, 8, ["a", "b"], {"attributions": np.zeros((2, 16, 16, 3))})
        with pytest.raises(ValueError, match=r"not complete: chunks \[1\] of 3"):
            writer.finish(10)
        with pytest.raises(ValueError, match=r"Chunk 1 starts at item 4"):
            writer.write_chunk(1, 5, *chunk_data(1, 4, 10)[1:])
        with pytest.raises(ValueError, match=r"has 4 items. Received: len\(ids\)=3"):
            start, ids, arrays, rows = chunk_data(1, 4, 10)
            writer.write_chunk(1, start, ids[:3], {k: v[:3] for k, v in arrays.items()}, rows[:3])
        # an unfinished chunk may be written (and overwritten) until its marker exists
        writer.write_chunk(1, *chunk_data(1, 4, 10))
        writer.finish(10)
    assert _tree(out) == _tree(_write(str(tmp_path / "ref")))


def test_without_fsync_the_store_is_the_same(tmp_path):
    fast = str(tmp_path / "fast")
    with StoreWriter.open(fast, SETTINGS, 4, 10, durable=False) as writer:
        for k in (1, 2, 0):
            writer.write_chunk(k, *chunk_data(k, 4, 10))
        writer.finish(10)
    assert _tree(fast) == _tree(_write(str(tmp_path / "durable")))


def test_items_of_unfinished_chunks_are_never_returned(tmp_path):
    out = _write(str(tmp_path / "out"), finish=False, order=[0, 2])
    # chunk 1's files written, its marker not (a writer killed just before the commit)
    with StoreWriter.open(out, SETTINGS, 4, 10) as writer:
        writer.write_chunk(1, *chunk_data(1, 4, 10))
    os.remove(os.path.join(out, "done", "chunk-00001.json"))
    ex = open_explanations(out)
    assert ex.finished_chunks == [0, 2] and not ex.complete
    expected, _ = _reference()
    for selection in (slice(None), slice(3, 5), [0, 4], 7, np.arange(10) == 6):
        with pytest.raises(UnfinishedChunkError, match=r"unfinished chunk 1 \(chunk 1 = items 4 to 7\)"):
            ex.attributions[selection]
    with pytest.raises(UnfinishedChunkError):
        ex.ids[4]
    _assert_equal(ex.valid, expected["valid"] & ~np.isin(np.arange(10), [4, 5, 6, 7]))
    _assert_equal(ex.attributions[ex.valid], expected["attributions"][ex.valid])
    assert list(ex.rows()["index"]) == [0, 1, 2, 3, 8, 9]


# ----------------------------------------------------------------------------------------------- kill -9
@pytest.mark.parametrize("num_items, durable", [(32, True), (None, False)])
def test_kill_9_at_any_point_then_resume_gives_the_uninterrupted_store(tmp_path, num_items, durable):
    """Size known (arrays made once) or unknown (arrays grown chunk by chunk, cut at finish), with or without the
    fsyncs (a killed process needs only the atomic renames): kills during array creation, zarr file writes (chunks
    and metadata), hashing, the rows part, the marker, and at random times."""
    script = _worker_script(tmp_path)
    chunk, total = 4, 32
    args = dict(out=str(tmp_path / "out"), settings=SETTINGS, chunk=chunk, num_items=num_items, total=total,
                chunks=list(range(total // chunk)), lock=True, finish=True, durable=durable)
    began = time.perf_counter()
    reference = subprocess.run([sys.executable, script, ROOT, json.dumps(dict(args, out=str(tmp_path / "ref")))],
                               capture_output=True, text=True, timeout=120)
    duration = time.perf_counter() - began
    assert reference.stdout.strip() == "done", reference.stderr
    expected, _ = _reference(chunk, total)
    # fixed points: half-way through the array creation, through a zarr file, between two arrays' files,
    # before the rows part, before the marker; then kills after random delays
    kills = [("create", 3), ("zarr_put", 4), ("hash", 9), ("rows", 2), ("marker", 2), ("zarr_put", 15)]
    delays = np.random.default_rng(30).uniform(0.0, duration, size=3)
    seen = set()
    for step in range(len(kills) + len(delays)):
        if step < len(kills):
            process = _spawn(script, **args, kill=kills[step])
            process.wait(timeout=60)
        else:
            process = _spawn(script, **args)
            time.sleep(delays[step - len(kills)])
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        assert process.returncode in (-signal.SIGKILL, 0), process.stderr.read()
        ex = open_explanations(args["out"])
        assert ex.verify() == ex.finished_chunks  # every finished chunk is intact
        finished = set(ex.finished_chunks)
        assert finished >= seen
        seen = finished
        if step == len(kills) - 1:
            assert 0 < len(seen) < total // chunk, seen  # the fixed kills hit during the run
        for k in range(total // chunk):
            items = slice(k * chunk, (k + 1) * chunk)
            if k in finished:
                _assert_equal(ex.attributions[items], expected["attributions"][items])
                _assert_equal(ex.ids[items], expected["ids"][items])
            elif k * chunk < len(ex):
                with pytest.raises(UnfinishedChunkError):
                    ex.attributions[items]
                assert not ex.valid[items].any()
            else:  # size unknown: the store ends with its last finished chunk
                assert num_items is None and len(ex) == max(finished, default=-1) * chunk + chunk
    finished = subprocess.run([sys.executable, script, ROOT, json.dumps(args)], capture_output=True, text=True,
                              timeout=120)
    assert finished.stdout.strip() == "done", finished.stderr
    resumed, uninterrupted = _tree(args["out"]), _tree(str(tmp_path / "ref"))
    assert sorted(resumed) == sorted(uninterrupted)  # no temporary file left, no chunk missing
    assert resumed == uninterrupted  # byte-identical: zarr chunk files, row parts, markers, metadata
    ex = open_explanations(args["out"])
    assert ex.complete and len(ex) == total and ex.attributions.zarr.shape == (total, 16, 16, 3)
    _assert_equal(ex.attributions[:], expected["attributions"])


# ------------------------------------------------------------------------------------------------- damage
def test_a_damaged_chunk_file_is_named_never_read_as_numbers(tmp_path):
    out = _write(str(tmp_path / "out"))
    expected, _ = _reference()
    attributions = os.path.join(out, "data.zarr", "attributions", "c.1.0.0.0")
    with open(attributions, "rb") as handle:
        data = handle.read()
    with open(attributions, "wb") as handle:
        handle.write(data[: len(data) // 2])  # truncated
    ex = open_explanations(out)
    with pytest.raises(CorruptChunkError, match=r"chunk 1 is damaged \(chunk 1: data\.zarr/attributions/c\.1\.0\.0\.0 "
                                                r"\d+ bytes, \d+ recorded\)"):
        ex.verify()
    with pytest.raises(CorruptChunkError, match=r"chunk 1 is damaged"):
        ex.attributions[4:6]
    _assert_equal(ex.attributions[:4], expected["attributions"][:4])  # other chunks read
    # same size, one byte changed: zstd's checksum refuses it on reading, the sha256 in verify()
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x40
    with open(attributions, "wb") as handle:
        handle.write(bytes(changed))
    with pytest.raises(CorruptChunkError, match=r"chunk 1: data\.zarr/attributions/c\.1\.0\.0\.0 content differs"):
        ex.verify()
    with pytest.raises(CorruptChunkError, match=r"chunk 1 is damaged"):
        ex.attributions[5]
    with open(attributions, "wb") as handle:
        handle.write(data)
    assert ex.verify() == [0, 1, 2]
    # garbage in a row part, a marker that is not JSON
    with open(os.path.join(out, "rows", "part-00002.parquet"), "r+b") as handle:
        handle.seek(10)
        handle.write(b"garbage")
    with pytest.raises(CorruptChunkError, match=r"chunk 2: rows/part-00002\.parquet content differs"):
        ex.rows()
    with open(os.path.join(out, "done", "chunk-00000.json"), "wb") as handle:
        handle.write(b'{"chunk": 0, "sta')
    ex = open_explanations(out)
    assert ex.finished_chunks == [1, 2]
    with pytest.raises(CorruptChunkError, match=r"chunks 0, 2 are damaged \(chunk 0: done/chunk-00000\.json unread"):
        ex.verify()
    with pytest.raises(CorruptChunkError, match=r"chunk 0: done/chunk-00000\.json unreadable"):
        ex.scores[0]
    with open(os.path.join(out, "data.zarr", "ids", "zarr.json"), "wb") as handle:
        handle.write(b"{")
    with pytest.raises(CorruptStoreError, match=r"the zarr group data\.zarr cannot be opened"):
        open_explanations(out)


def test_what_is_not_a_store_is_a_named_error_and_never_deleted(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(NotAStoreError, match=r"folder with other files \(notes\.txt\).*Received: out="):
            StoreWriter.open(str(user), SETTINGS, 4, 10, overwrite=overwrite)
    assert os.listdir(user) == ["notes.txt"] and (user / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    (other / "rows").mkdir(parents=True)  # a name the store uses, but the user's
    (other / "rows" / "table.csv").write_text("mine")
    with pytest.raises(NotAStoreError, match=r"folder with other files \(rows\)"):
        StoreWriter.open(str(other), SETTINGS, 4, 10)
    assert (other / "rows" / "table.csv").read_text() == "mine"
    # an interrupted creation (our hidden metadata lock, no store file) is ours: started afresh
    (other / ".meta.lock").write_text("")
    StoreWriter.open(str(other), SETTINGS, 4, 10).close()
    assert open_explanations(str(other)).finished_chunks == [] and not (other / "rows" / "table.csv").exists()
    with pytest.raises(NotAStoreError, match=r"no tfattr-store\.json"):
        open_explanations(str(user))
    with pytest.raises(NotAStoreError, match=r"does not exist"):
        open_explanations(str(tmp_path / "missing"))
    with pytest.raises(NotAStoreError, match=r"is a file"):
        StoreWriter.open(str(user / "notes.txt"), SETTINGS, 4, 10)
    # overwrite=True deletes a store, not a store with a user's file in it
    out = _write(str(tmp_path / "out"))
    with StoreWriter.open(out, dict(SETTINGS, seed=1), 4, 10, overwrite=True) as writer:
        assert writer.finished() == set()
    assert open_explanations(out).settings["seed"] == 1 and open_explanations(out).finished_chunks == []
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(NotAStoreError, match=r"deletes only a tfattr store.*\(notes\.txt\); nothing was deleted"):
        StoreWriter.open(out, SETTINGS, 4, 10, overwrite=True)
    assert (tmp_path / "out" / "tfattr-store.json").exists()
    # damaged metadata
    with open(os.path.join(out, "tfattr-store.json"), "w") as handle:
        handle.write('{"format": "tfattr-st')
    with pytest.raises(CorruptStoreError, match=r"unreadable tfattr-store\.json"):
        open_explanations(out)
    with pytest.raises(CorruptStoreError, match=r"unreadable tfattr-store\.json"):
        StoreWriter.open(out, SETTINGS, 4, 10)


# ------------------------------------------------------------------------------------- permissions, locks
READ_ONLY_CHECK = '''
import json, os, sys, types
root, out = sys.argv[1], sys.argv[2]
for name in ("tfattr", "tfattr.streaming"):
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(root, *name.split("."))]
    sys.modules[name] = module
from tfattr.streaming import store
if os.geteuid() == 0:  # root writes anywhere: check as nobody (after a first read has loaded every module, as
    store.open_explanations(out).rows()  # the interpreter may live in a folder nobody cannot read)
    store.open_explanations(out).attributions[:]
    store.files.file_mode()
    os.setgid(65534)
    os.setuid(65534)
ex = store.open_explanations(out)
result = {"sum": float(ex.attributions[:].sum()), "rows": len(ex.rows()), "verified": ex.verify()}
for lock in (True, False):
    try:
        store.StoreWriter.open(out, json.loads(sys.argv[3]), 4, 10, lock=lock)
        result[str(lock)] = "opened"
    except store.StoreNotWritableError as error:
        result[str(lock)] = str(error)
print(json.dumps(result))
'''


def test_a_read_only_store_reads_and_refuses_writers_by_name(tmp_path):
    base = tempfile.mkdtemp(prefix="tfattr-ro-")  # outside pytest's private folder: `nobody` must reach it
    try:
        os.chmod(base, 0o755)
        out = _write(os.path.join(base, "out"))
        for folder, names, files in os.walk(out):
            for name in files:
                os.chmod(os.path.join(folder, name), 0o444)
            for name in names:
                os.chmod(os.path.join(folder, name), 0o555)
        os.chmod(out, 0o555)
        checked = subprocess.run([sys.executable, "-c", READ_ONLY_CHECK, ROOT, out, json.dumps(SETTINGS)],
                                 capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, checked.stderr
        result = json.loads(checked.stdout)
        expected, _ = _reference()
        assert result["sum"] == pytest.approx(float(expected["attributions"].sum()), rel=1e-6)
        assert result["rows"] == 10 and result["verified"] == [0, 1, 2]
        for lock in ("True", "False"):
            assert "cannot be written by this process (Permission denied" in result[lock], result[lock]
            assert result[lock].endswith(f"Received: out={out!r}")
    finally:
        for folder, _, _ in os.walk(base):
            os.chmod(folder, stat.S_IRWXU)
        shutil.rmtree(base)


def test_a_second_locked_writer_is_a_named_error(tmp_path):
    out = str(tmp_path / "out")
    first = StoreWriter.open(out, SETTINGS, 4, 10)
    with pytest.raises(StoreLockedError, match=rf"being written by another process \(pid {os.getpid()} holds lock\)"):
        StoreWriter.open(out, SETTINGS, 4, 10)
    script = _worker_script(tmp_path)
    process = _spawn(script, out=out, settings=SETTINGS, chunk=4, num_items=10, total=10, chunks=[0], lock=True)
    process.wait(timeout=60)
    assert process.returncode == 1 and "StoreLockedError" in process.stderr.read()
    first.close()
    with StoreWriter.open(out, SETTINGS, 4, 10) as second:
        assert second.finished() == set()


@pytest.mark.parametrize("num_items", [40, None])
def test_two_processes_write_distinct_chunks_concurrently(tmp_path, num_items):
    """Beam workers: lock=False, a store created by whichever process comes first, arrays created (and grown,
    size unknown) under the short metadata lock; each chunk's files are its own."""
    script = _worker_script(tmp_path)
    out, go = str(tmp_path / "out"), str(tmp_path / "go")
    processes = [_spawn(script, out=out, settings=SETTINGS, chunk=4, num_items=num_items, total=40,
                        chunks=list(range(parity, 10, 2))[::-1 if parity else 1], lock=False, go=go)
                 for parity in (0, 1)]
    time.sleep(0.5)
    open(go, "w").close()
    for process in processes:
        process.wait(timeout=120)
        assert process.returncode == 0, process.stderr.read()
    with StoreWriter.open(out, SETTINGS, 4, None) as writer:
        assert writer.finished() == set(range(10))
        writer.finish(40)
    expected, _ = _reference(4, 40)
    ex = open_explanations(out)
    assert ex.complete and ex.verify() == list(range(10))
    for name in ("attributions", "targets", "scores", "delta", "ids"):
        _assert_equal(getattr(ex, name)[:], expected[name])
    assert list(ex.rows()["id"]) == list(expected["ids"])
    if num_items is not None:
        assert _tree(out) == _tree(_write(str(tmp_path / "ref"), num_items=40))


def test_store_module_does_not_import_zarr_before_use():
    """``import tfattr`` stays as fast as before: zarr and pyarrow load on the first store call."""
    code = ("import os, sys, types\n"
            "for name in ('tfattr', 'tfattr.streaming'):\n"
            "    module = types.ModuleType(name)\n"
            "    module.__path__ = [os.path.join(sys.argv[1], *name.split('.'))]\n"
            "    sys.modules[name] = module\n"
            "import tfattr.streaming.store\n"
            "print(sorted(name for name in ('zarr', 'pyarrow', 'pandas') if name in sys.modules))\n")
    checked = subprocess.run([sys.executable, "-c", code, ROOT], capture_output=True, text=True, timeout=60)
    assert checked.stdout.strip() == "[]", checked.stderr
