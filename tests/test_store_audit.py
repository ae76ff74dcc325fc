"""Hostile-user audit of the dataset store (issue #30): damaged and forged files, odd inputs, odd indexing.

Each test failed on the store as first merged (a silently wrong number, or a crash that was not a tfattr
error) and names the defect it guards.
"""

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_store import SETTINGS, _reference, _write, chunk_data

import tfattr.streaming.store as store_module
from tfattr.streaming.store import (
    CorruptChunkError,
    CorruptStoreError,
    SettingsMismatchError,
    StoreWriter,
    UnfinishedChunkError,
    open_explanations,
)

# the tfattr under test (a subprocess imports the same one)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(store_module.__file__))))


def _json(path):
    with open(path) as handle:
        return json.load(handle)


def _put_json(path, value):
    with open(path, "w") as handle:
        json.dump(value, handle)


# ------------------------------------------------------------------------------------- chunk files, markers
def test_a_missing_or_replaced_chunk_file_is_named_never_read_as_other_numbers(tmp_path):
    """zarr reads a missing chunk file as fill values (NaN) and decodes any valid file put in a chunk's place
    (another chunk's copy, a symlink to it): the reader returned NaN or chunk 0's numbers for chunk 1."""
    expected, _ = _reference()
    out = _write(str(tmp_path / "missing"))
    os.remove(os.path.join(out, "data.zarr", "scores", "c.1"))
    ex = open_explanations(out)
    with pytest.raises(CorruptChunkError, match=r"chunk 1 is damaged \(chunk 1: data\.zarr/scores/c\.1 missing\)"):
        ex.scores[4:8]
    _assert_equal = np.testing.assert_array_equal
    _assert_equal(ex.scores[:4], expected["scores"][:4])  # the other chunks read
    out = _write(str(tmp_path / "copied"))
    shutil.copy(os.path.join(out, "data.zarr", "scores", "c.0"), os.path.join(out, "data.zarr", "scores", "c.1"))
    with pytest.raises(CorruptChunkError, match=r"chunk 1: data\.zarr/scores/c\.1 \d+ bytes, \d+ recorded"):
        open_explanations(out).scores[5]
    out = _write(str(tmp_path / "linked"))
    folder = os.path.join(out, "data.zarr", "attributions")
    os.remove(os.path.join(folder, "c.2.0.0.0"))
    os.symlink(os.path.join(folder, "c.0.0.0.0"), os.path.join(folder, "c.2.0.0.0"))
    ex = open_explanations(out)
    with pytest.raises(CorruptChunkError, match=r"chunk 2: data\.zarr/attributions/c\.2\.0\.0\.0"):
        ex.attributions[8:]
    with pytest.raises(CorruptChunkError, match=r"chunk 2"):
        np.asarray(ex.attributions.zarr[8:])  # the raw zarr array reads finished chunks only as recorded
    os.remove(os.path.join(out, "data.zarr", "valid", "c.0"))
    with pytest.raises(CorruptChunkError, match=r"chunk 0: data\.zarr/valid/c\.0 missing"):
        assert open_explanations(out).valid is None
    # a file of the same size and another content (an older run's), as zstd decodes it without complaint
    out = _write(str(tmp_path / "older"))
    with StoreWriter.open(str(tmp_path / "other"), SETTINGS, 4, 10) as writer:
        start, ids, arrays, rows = chunk_data(1, 4, 10)
        writer.write_chunk(1, start, ids, dict(arrays, targets=arrays["targets"][::-1]), rows)
    shutil.copy(str(tmp_path / "other" / "data.zarr" / "targets" / "c.1"), os.path.join(out, "data.zarr", "targets",
                                                                                          "c.1"))
    with pytest.raises(CorruptChunkError, match=r"chunk 1: data\.zarr/targets/c\.1 content differs"):
        open_explanations(out).targets[:]


def test_a_marker_with_a_wrong_range_or_files_is_damaged_not_trusted(tmp_path):
    """The reader took a marker's item range as written: chunk 0's marker (its checksums right) stretched over
    chunk 1 returned chunk 1's uncommitted files as finished; markers naming no file of their own chunk, or a
    chunk past num_items, were trusted; a marker named ``chunk-1.json`` or a folder crashed (FileNotFoundError)."""
    expected, _ = _reference()
    out = _write(str(tmp_path / "out"), finish=False, order=[0])
    with StoreWriter.open(out, SETTINGS, 4, 10) as writer:  # chunk 1 written, its writer killed before the marker
        writer.write_chunk(1, *chunk_data(1, 4, 10))
    done = os.path.join(out, "done")
    os.remove(os.path.join(done, "chunk-00001.json"))
    marker = _json(os.path.join(done, "chunk-00000.json"))
    _put_json(os.path.join(done, "chunk-00000.json"), dict(marker, stop=8))
    ex = open_explanations(out)
    assert ex.finished_chunks == [] and not ex.valid.any()
    with pytest.raises(CorruptChunkError, match=r"chunk 0 is damaged \(chunk 0: done/chunk-00000\.json unreadable "
                                                r"\(its item range \[0, 8\) is not inside chunk 0's items \[0, 4\)"):
        ex.scores[0:8]
    # a marker of chunk 1 that records chunk 0's files (all their checksums right)
    _put_json(os.path.join(done, "chunk-00000.json"), marker)
    _put_json(os.path.join(done, "chunk-00001.json"), dict(marker, chunk=1, start=4, stop=8))
    ex = open_explanations(out)
    assert ex.finished_chunks == [0]
    with pytest.raises(CorruptChunkError, match=r"chunk 1: done/chunk-00001\.json unreadable \(it records no "
                                                r"rows/part-00001\.parquet"):
        ex.scores[4]
    np.testing.assert_array_equal(ex.scores[:4], expected["scores"][:4])
    # past num_items; a start that is not the chunk's
    os.remove(os.path.join(done, "chunk-00001.json"))
    _put_json(os.path.join(done, "chunk-00003.json"), dict(marker, chunk=3, start=12, stop=16))
    _put_json(os.path.join(done, "chunk-00002.json"), dict(marker, chunk=2, start=7, stop=10))
    with pytest.raises(CorruptChunkError, match=r"chunks 2, 3 are damaged.*chunk 2: done/chunk-00002\.json "
                                                r"unreadable \(its item range \[7, 10\).*chunk 3: .*chunk 3 \(items "
                                                r"from 12\) lies past the store's 10 items"):
        open_explanations(out).verify()
    for name in ("chunk-00002.json", "chunk-00003.json"):
        os.remove(os.path.join(done, name))
    # names the writer never makes are not markers; a folder in a marker's place is a damaged marker
    shutil.copy(os.path.join(done, "chunk-00000.json"), os.path.join(done, "chunk-1.json"))
    os.mkdir(os.path.join(done, "chunk-00002.json"))
    ex = open_explanations(out)
    assert ex.finished_chunks == [0]
    with pytest.raises(CorruptChunkError, match=r"chunk 2: done/chunk-00002\.json unreadable"):
        ex.verify()
    with StoreWriter.open(out, SETTINGS, 4, 10) as writer:
        assert writer.finished() == {0, 2}  # the writer never rewrites a chunk with a marker, damaged or not


@pytest.mark.parametrize("change, problem", [
    ({"complete": "no"}, r"complete is 'no', not true or false"),
    ({"chunk": 0}, r"chunk is 0, not an int >= 1"),
    ({"chunk": 4.5}, r"chunk is 4\.5"),
    ({"chunk": None}, r"chunk is None"),
    ({"num_items": -3}, r"num_items is -3"),
    ({"num_items": "10"}, r"num_items is '10'"),
    ({"arrays": ["scores"]}, r"arrays is \['scores'\], not a dict"),
    ({"arrays": {"scores": {"shape_per_item": [], "dtype": "float99"}}}, r"arrays\['scores'\]\.dtype is 'float99'"),
    ({"settings": [1]}, r"settings is \[1\], not a dict"),
])
def test_a_store_file_with_wrong_types_is_named(tmp_path, change, problem):
    """``complete: "no"`` read as True; ``chunk: 0`` divided by zero (a NumPy warning, then numbers); a negative or
    null size crashed with ValueError/TypeError; ``arrays`` as a list crashed the writer with AttributeError."""
    out = _write(str(tmp_path / "out"), finish=False, order=[0])
    path = os.path.join(out, "tfattr-store.json")
    _put_json(path, dict(_json(path), **change))
    with pytest.raises(CorruptStoreError, match=r"tfattr-store\.json is damaged: " + problem + r".*Received: out="):
        open_explanations(out)
    with pytest.raises(CorruptStoreError, match=problem):
        StoreWriter.open(out, SETTINGS, 4, 10)
    os.remove(path)
    os.mkdir(path)  # a folder in its place: not a crash with IsADirectoryError
    with pytest.raises(CorruptStoreError, match=r"unreadable tfattr-store\.json"):
        open_explanations(out)


@pytest.mark.parametrize("num_items", [10, None])
def test_an_array_zarr_json_that_would_decode_other_numbers_is_named(tmp_path, num_items):
    """A valid zarr.json with another dtype (same item size) or byte order decoded every finished chunk into other
    numbers, silently (the chunk files and their checksums unchanged); one shorter than the finished chunks
    returned fewer items than len()."""
    out = _write(str(tmp_path / "out"), num_items=num_items, finish=False)
    changes = [("scores", lambda meta: dict(meta, data_type="int64", fill_value=-1), r"dtype int64, recorded float64"),
               ("attributions", lambda meta: dict(meta, codecs=[dict(meta["codecs"][0], configuration={"endian":
                                                                                                       "big"}),
                                                                meta["codecs"][1]]), r"byte order 'big'"),
               ("targets", lambda meta: dict(meta, codecs=[{"name": "transpose", "configuration": {"order": [0]}}]
                                             + meta["codecs"]), r"codecs \['transpose', 'bytes', 'zstd'\]"),
               ("delta", lambda meta: dict(meta, shape=[8]), r"8 items, its finished chunks reach item 10")]
    for name, change, problem in changes:
        path = os.path.join(out, "data.zarr", name, "zarr.json")
        original = _json(path)
        _put_json(path, change(original))
        with pytest.raises(CorruptStoreError, match=rf"the array data\.zarr/{name} does not match the store's record "
                                                    rf"\({problem}"):
            open_explanations(out)
        _put_json(path, original)
    expected, _ = _reference()
    np.testing.assert_array_equal(open_explanations(out).scores[:], expected["scores"])


PICKLED = '''
import os, pickle, sys, types
root = sys.argv[1]
for name in ("tfattr", "tfattr.streaming"):  # the store without the package tops (no TensorFlow)
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(root, *name.split("."))]
    sys.modules[name] = module
ex, scores, raw = pickle.loads(sys.stdin.buffer.read())
print(float(ex.attributions[:].sum()), float(scores[:].sum()), float(raw[:].sum()), ex.finished_chunks)
'''


def test_explanations_pickle_into_another_process_and_keep_checking(tmp_path):
    """For dask and multiprocessing: an Explanations, a StoreArray and its raw zarr array unpickle in a fresh
    process (the checking zarr store is importable by name) and still refuse a damaged chunk."""
    expected, _ = _reference()
    out = _write(str(tmp_path / "out"))
    ex = open_explanations(out)
    data = pickle.dumps((ex, ex.scores, ex.attributions.zarr))
    done = subprocess.run([sys.executable, "-c", PICKLED, ROOT], input=data, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    total, scores, raw, finished = done.stdout.decode().split(" ", 3)
    assert float(total) == float(raw) == pytest.approx(float(expected["attributions"].sum()), rel=1e-6)
    assert float(scores) == pytest.approx(float(expected["scores"].sum()), rel=1e-12)
    assert finished.strip() == "[0, 1, 2]"
    os.remove(os.path.join(out, "data.zarr", "scores", "c.2"))
    with pytest.raises(CorruptChunkError, match=r"data\.zarr/scores/c\.2 missing"):
        pickle.loads(data)[1][:]


# ------------------------------------------------------------------------------------------------ indexing
FIRSTS = [0, -1, np.int64(4), np.array(3), slice(None), slice(2, 9), slice(None, None, -1), slice(8, 1, -3),
          slice(1, 9, 3), slice(5, 2), [], [3, 1, 1], np.array([-1, 0]), np.arange(10) % 3 == 0, [[1, 2], [0, 9]]]
RESTS = [(), (0,), (slice(None), [0, 1]), ([0, 1], [0, 1]), (slice(None, None, -1),), (None,), (Ellipsis, 1),
         (Ellipsis,), (0, 0, 0), (np.arange(16) % 2 == 0,), (slice(None), slice(None), [2, 0]), (-1, slice(3, None, 2)),
         ([[0, 1], [2, 3]],)]


def test_indexing_is_numpy_indexing(tmp_path):
    """Each key NumPy takes gives NumPy's values and shape: zarr's orthogonal indexing gave ``a[[0, 1], [0, 1]]`` the
    shape (2, 2, 16, 3) and ``a[0, :, [0, 1]]`` its axes transposed (NumPy: (2, 16, 3)), silently; negative steps,
    ``None`` and several index arrays after the item axis crashed inside zarr, ``a[[]]`` and 2-D int arrays were
    refused."""
    out = _write(str(tmp_path / "out"))
    ex, (expected, _) = open_explanations(out), _reference()
    checked = 0
    for name in ("attributions", "scores", "ids"):
        array, reference = getattr(ex, name), expected[name]
        for first in FIRSTS:
            for rest in RESTS:
                key = (first,) + rest
                try:
                    want = reference[key]
                except IndexError:
                    with pytest.raises(IndexError):
                        array[key]
                    continue
                got = array[key]
                assert np.shape(got) == np.shape(want), (name, key)
                np.testing.assert_array_equal(np.asarray(got, dtype=reference.dtype), want)
                assert isinstance(got, np.ndarray) == isinstance(want, np.ndarray), (name, key)  # scalars stay scalars
                checked += 1
    assert checked > 250
    with pytest.raises(IndexError, match=r"attributions takes an int, a slice, an int array or a boolean mask"):
        ex.attributions[None]
    with pytest.raises(IndexError, match=r"out of bounds"):
        ex.scores[[0, 10]]
    with pytest.raises(IndexError, match=r"a boolean mask over scores must have shape \(10,\)"):
        ex.scores[np.ones(9, bool)]


# ------------------------------------------------------------------------------------------------ settings
def test_settings_resume_with_nan_and_numpy_scalars_and_compare_inside_lists(tmp_path):
    """A NaN in the settings (JSON records ``NaN``) made every resume by the same code a SettingsMismatchError
    ("recorded nan, this run nan"); NumPy scalars (a seed as ``np.int64``) were refused; inside lists ``True``
    and ``1`` compared equal (Python's ``==``) though the store tells them apart everywhere else."""
    out = str(tmp_path / "out")
    settings = {"baseline": float("nan"), "seed": np.int64(3), "sigma": np.float32(0.1), "flag": np.bool_(True),
                "steps": (8, 16), "range": [0.0, float("nan")], "items": [{"on": True}]}
    StoreWriter.open(out, settings, 4, 10).close()
    recorded = open_explanations(out).settings
    assert recorded["seed"] == 3 and type(recorded["seed"]) is int and recorded["sigma"] == float(np.float32(0.1))
    assert recorded["flag"] is True and recorded["steps"] == [8, 16] and np.isnan(recorded["baseline"])
    StoreWriter.open(out, dict(settings), 4, 10).close()  # the same run resumes
    StoreWriter.open(out, dict(settings, steps=[8, 16], seed=3), 4, 10).close()  # tuples are recorded as lists
    with pytest.raises(SettingsMismatchError, match=r"items\[0\]\.on: recorded True, this run 1"):
        StoreWriter.open(out, dict(settings, items=[{"on": 1}]), 4, 10)
    with pytest.raises(SettingsMismatchError, match=r"range\[1\]: recorded nan, this run 1\.0"):
        StoreWriter.open(out, dict(settings, range=[0.0, 1.0]), 4, 10)
    with pytest.raises(SettingsMismatchError, match=r"baseline: recorded nan, this run 0\.0"):
        StoreWriter.open(out, dict(settings, baseline=0.0), 4, 10)
    with pytest.raises(TypeError, match=r"`settings` must be JSON-serialisable.*ndarray"):
        StoreWriter.open(str(tmp_path / "other"), {"mask": np.zeros(3)}, 4, 10)


# ------------------------------------------------------------------------------------------- write_chunk inputs
def test_write_chunk_stores_exactly_what_it_is_given_or_names_the_input(tmp_path):
    """Inputs that were stored as other values, silently: ids given as one string (its characters became the ids),
    bytes ids (stored as "b'x'"), float64 attributions beyond float32's range (inf), complex ones (their real part),
    ``valid`` of NaN or 0.5 (True), scores given as text (parsed); and inputs that crashed with a non-tfattr error:
    a float ``start`` (zarr TypeError), rows that are not dicts (AttributeError), an id with a lone surrogate and
    rows given (UnicodeEncodeError inside zarr), a chunk index past 2**62 items (OverflowError)."""
    writer = StoreWriter.open(str(tmp_path / "out"), {}, 4, None, durable=False)
    scores = {"scores": np.arange(4.0)}
    with pytest.raises(TypeError, match=r"`ids` must be a list of strings, one per item\. Received: ids='abcd'"):
        writer.write_chunk(0, 0, "abcd", scores)
    with pytest.raises(TypeError, match=r"ids\[2\] must be a string .* Received: ids\[2\]=None"):
        writer.write_chunk(0, 0, ["a", "b", None, "d"], scores)
    with pytest.raises(ValueError, match=r"ids\[1\] cannot be stored as UTF-8 \(surrogates not allowed\)"):
        writer.write_chunk(0, 0, ["a", "\ud800", "c", "d"], scores, rows=[{"n": i} for i in range(4)])
    with pytest.raises(ValueError, match=r"beyond float32's range .* Received: max \|value\|=1e\+39"):
        writer.write_chunk(0, 0, list("abcd"), {"attributions": np.array([0.0, 1e39, 2.0, 3.0])})
    with pytest.raises(TypeError, match=r"arrays\['attributions'\] must be numeric or bool.*complex128"):
        writer.write_chunk(0, 0, list("abcd"), {"attributions": np.arange(4) + 1j})
    with pytest.raises(ValueError, match=r"arrays\['valid'\] must be bool \(or 0/1\)"):
        writer.write_chunk(0, 0, list("abcd"), {"valid": np.array([1.0, np.nan, 0.5, 0.0])})
    for bad in (np.array(["1.5", "2", "3", "4"]), np.array([None, 1.0, 2.0, 3.0], dtype=object)):
        with pytest.raises(TypeError, match=r"arrays\['scores'\] must be numeric or bool"):
            writer.write_chunk(0, 0, list("abcd"), {"scores": bad})
    with pytest.raises(ValueError, match=r"Chunk 0 starts at item 0 \(chunk=4\)\. Received: start=0\.0"):
        writer.write_chunk(0, 0.0, list("abcd"), scores)
    with pytest.raises(TypeError, match=r"`rows` must be a list of dicts"):
        writer.write_chunk(0, 0, list("abcd"), scores, rows=[1, 2, 3, 4])
    with pytest.raises(ValueError, match=r"lies past the 9007199254740992 items a store can index"):
        writer.write_chunk(2**62, 2**64, ["a"], {"scores": np.arange(1.0)})
    assert writer.finished() == set()  # nothing was committed by the refused calls
    # what is stored exactly: NaN, infinities, -0.0, odd ids (NUL, empty, long, astral, ints, UTF-8 bytes)
    ids = ["a\x00b", "", "é" * 2000, "\U0001f600"]
    values = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float32)
    writer.write_chunk(0, 0, ids, {"attributions": values, "valid": np.array([1, 0, 1, 1])})
    writer.write_chunk(1, 4, [7, np.int64(8), b"caf\xc3\xa9", np.str_("x")], {"attributions": values.astype("float64")})
    # an unknown-size store with a far chunk: read by chunk, not through a mask of every item (MemoryError)
    writer.write_chunk(10**14, 4 * 10**14, ["far"], {"attributions": np.array([5.0])})
    writer.close()
    ex = open_explanations(str(tmp_path / "out"))
    assert list(ex.ids[:8]) == ids + ["7", "8", "café", "x"]
    got = ex.attributions[:8]
    np.testing.assert_array_equal(got, np.concatenate([values, values]))
    assert np.signbit(got[3]) and np.signbit(got[7])  # -0.0 kept
    np.testing.assert_array_equal(ex.array("valid")[:8], [True, False, True, True] + [True] * 4)
    assert len(ex) == 4 * 10**14 + 1 and ex.ids[-1] == "far" and ex.attributions[-1] == 5.0
    with pytest.raises(UnfinishedChunkError, match=r"unfinished chunk 2 "):
        ex.attributions[8]


def test_rows_of_chunks_with_other_column_types_are_a_named_error(tmp_path):
    """``rows()`` raised pyarrow's ArrowTypeError (a label int in one chunk, text in another) and ArrowInvalid (a
    column that no chunk has)."""
    with StoreWriter.open(str(tmp_path / "out"), {}, 2, 6) as writer:
        writer.write_chunk(0, 0, ["a", "b"], {}, rows=[{"label": 1}, {"label": None}])
        writer.write_chunk(1, 2, ["c", "d"], {}, rows=[{"label": "cat"}, {"label": "dog"}])
        writer.write_chunk(2, 4, ["e", "f"], {}, rows=[{"label": None, "note": "x"}, {"label": None, "note": None}])
    ex = open_explanations(str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"cannot be joined into one table: a column has other types in other chunks "
                                         r"\(label: int64 in chunks \[0\], string in chunks \[1\]"):
        ex.rows()
    assert ex.rows(columns=["note"], as_arrow=True)["note"].to_pylist() == [None, None, None, None, "x", None]
    with pytest.raises(ValueError, match=r"have no column 'nope' \(columns: \['label', 'note'\]\)"):
        ex.rows(columns=["nope"])


# ------------------------------------------------------------------------------------------------ concurrency
def test_two_writers_of_one_chunk_never_leave_a_finished_chunk_with_the_others_files(tmp_path):
    """Two lock=False writers of one chunk (a retried or speculative Beam bundle, its numbers a few bits off): the
    second, past its marker check before the first committed, overwrote the finished chunk's files after the
    first one's marker: a finished chunk holding the other writer's numbers under the first one's checksums."""
    import threading

    out = str(tmp_path / "out")
    StoreWriter.open(out, SETTINGS, 4, 10).close()
    first, second = (StoreWriter.open(out, SETTINGS, 4, 10, lock=False, durable=False) for _ in range(2))
    ready, started, outcome = threading.Event(), threading.Event(), {}
    commit, prepare = first._commit, second._prepare

    def slow_commit(*args):  # the first writer's files are written; it commits once the second one is under way
        ready.set()
        started.wait(timeout=5)
        commit(*args)

    def announced_prepare(*args):
        started.set()
        return prepare(*args)

    first._commit, second._prepare = slow_commit, announced_prepare
    start, ids, arrays, rows = chunk_data(1, 4, 10)
    other = dict(arrays, attributions=arrays["attributions"] * (1 + 2**-20), scores=arrays["scores"] + 1e-12)

    def run(name, writer, values):
        try:
            writer.write_chunk(1, start, ids, values, rows)
            outcome[name] = "committed"
        except Exception as error:  # noqa: BLE001 - the outcome is asserted below
            outcome[name] = type(error).__name__

    thread = threading.Thread(target=run, args=("first", first, arrays))
    thread.start()
    assert ready.wait(timeout=30)
    run("second", second, other)
    thread.join(timeout=30)
    assert outcome == {"first": "committed", "second": "ChunkFinishedError"}
    ex = open_explanations(out)
    assert ex.verify() == [1]
    np.testing.assert_array_equal(ex.attributions[4:8], arrays["attributions"])
    np.testing.assert_array_equal(ex.scores[4:8], arrays["scores"])
    assert sorted(os.listdir(os.path.join(out, "done"))) == ["chunk-00001.json"]  # the chunk lock file is gone


FULL_DISK = '''
import json, os, resource, signal, sys, types
root, out = sys.argv[1], sys.argv[2]
for name in ("tfattr", "tfattr.streaming"):  # the store without the package tops (no TensorFlow)
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(root, *name.split("."))]
    sys.modules[name] = module
import numpy as np
from tfattr.streaming import store
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
writer = store.StoreWriter.open(out, {}, 4, 32)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    for k in range(8):  # chunks 0-3 compress to a few hundred bytes; chunk 4's maps (64 KB of noise) cannot be written
        maps = np.zeros((4, 64, 64), "float32") if k < 4 else np.random.default_rng(k).normal(size=(4, 64, 64))
        writer.write_chunk(k, 4 * k, [f"i{4 * k + j}" for j in range(4)], {"attributions": maps})
except store.StoreNotWritableError as error:
    print(json.dumps({"error": str(error), "finished": sorted(writer.finished())}))
'''


def test_a_full_disk_is_a_named_error_and_never_a_finished_half_chunk(tmp_path):
    """A write that fails for lack of space (simulated with RLIMIT_FSIZE: EFBIG, SIGXFSZ ignored) was a bare
    OSError; the chunk it wrote must not be finished, and the run resumes to the full store once there is room."""
    out = str(tmp_path / "out")
    done = subprocess.run([sys.executable, "-c", FULL_DISK, ROOT, out], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout, done.stderr
    result = json.loads(done.stdout)
    assert result["finished"] == [0, 1, 2, 3]
    assert "is full (File too large" in result["error"] and "was not committed" in result["error"]
    ex = open_explanations(out)
    assert ex.verify() == [0, 1, 2, 3] and not ex.valid[16:].any()
    with pytest.raises(UnfinishedChunkError, match=r"unfinished chunk 4 "):
        ex.attributions[16]
    with StoreWriter.open(out, {}, 4, 32) as writer:  # room again: resume
        for k in range(4, 8):
            writer.write_chunk(k, 4 * k, [f"i{4 * k + j}" for j in range(4)],
                               {"attributions": np.random.default_rng(k).normal(size=(4, 64, 64))})
        writer.finish(32)
    ex = open_explanations(out)
    assert ex.verify() == list(range(8)) and ex.complete
    np.testing.assert_array_equal(ex.attributions[16:20], np.random.default_rng(4).normal(size=(4, 64, 64))
                                  .astype("float32"))
    leftovers = [name for _, _, names in os.walk(out) for name in names
                 if name.startswith(".") and name != ".meta.lock"]
    assert leftovers == []  # no temporary file of the failed writes is left


def test_a_store_moved_after_opening_is_named_and_reads_where_it_is_now(tmp_path):
    """An Explanations whose folder was renamed after opening read every chunk as missing files: NaN, silently."""
    expected, _ = _reference()
    out = _write(str(tmp_path / "out"))
    ex = open_explanations(out)
    os.rename(out, str(tmp_path / "moved"))
    with pytest.raises(ValueError, match=r"no longer holds the store opened there \(moved, renamed or deleted"):
        ex.scores[:]
    os.symlink(str(tmp_path / "moved"), str(tmp_path / "link"))  # a copy, a symlinked out=: read where they are
    shutil.copytree(str(tmp_path / "moved"), str(tmp_path / "copy"))
    for where in ("link", "copy"):
        np.testing.assert_array_equal(open_explanations(str(tmp_path / where)).scores[:], expected["scores"])


def test_writer_names_a_damaged_zarr_json_a_dangling_symlink_and_items_of_no_values(tmp_path):
    """Crashes of the writer with a non-tfattr error: JSONDecodeError from zarr (an array's or the group's
    zarr.json damaged, then a chunk written), FileExistsError (out= a symlink to a missing folder),
    FileNotFoundError (items of shape (0,): zarr writes no chunk file for them, which was then hashed)."""
    for target, label in (("data.zarr/scores/zarr.json", r"the array data\.zarr/scores"),
                          ("data.zarr/zarr.json", r"the zarr group data\.zarr")):
        out = _write(str(tmp_path / label[-6:]), finish=False, order=[0])
        with open(os.path.join(out, *target.split("/")), "w") as handle:
            handle.write("{")
        with StoreWriter.open(out, SETTINGS, 4, 10) as writer:
            with pytest.raises(CorruptStoreError, match=label + r" cannot be opened \(JSONDecodeError"):
                writer.write_chunk(1, *chunk_data(1, 4, 10))
            assert writer.finished() == {0}
    os.symlink(str(tmp_path / "nowhere"), str(tmp_path / "dangling"))
    with pytest.raises(ValueError, match=r"is a symlink to .*nowhere', which does not exist"):
        StoreWriter.open(str(tmp_path / "dangling"), {}, 2, 2)
    with StoreWriter.open(str(tmp_path / "empty"), {}, 2, 2) as writer:
        with pytest.raises(ValueError, match=r"arrays\['attributions'\] has items of no values.*\(2, 0\)"):
            writer.write_chunk(0, 0, ["a", "b"], {"attributions": np.zeros((2, 0))})


def test_a_store_whose_markers_folder_was_deleted_is_resumed_not_a_crash(tmp_path):
    """Deleting ``done/`` (all markers: every chunk unfinished) made the next chunk's commit crash with a bare
    FileNotFoundError; the chunks are rewritten instead, and read back only once committed again."""
    out = _write(str(tmp_path / "out"), finish=False, order=[0, 1])
    shutil.rmtree(os.path.join(out, "done"))
    with pytest.raises(UnfinishedChunkError):
        open_explanations(out).scores[0]
    with StoreWriter.open(out, SETTINGS, 4, 10) as writer:
        assert writer.finished() == set()
        for k in range(3):
            writer.write_chunk(k, *chunk_data(k, 4, 10))
        writer.finish(10)
    expected, _ = _reference()
    ex = open_explanations(out)
    assert ex.verify() == [0, 1, 2]
    np.testing.assert_array_equal(ex.attributions[:], expected["attributions"])


@pytest.mark.parametrize("change", [{"files": {"rows/part-00001.parquet": "abc"}}, {"start": "4"}, {"chunk": True},
                                    {"stop": 7.9}, {"files": []}, None])
def test_a_marker_of_wrong_json_types_is_a_named_damaged_chunk(tmp_path, change):
    """verify() crashed with TypeError on a file record that is not a dict; ``"chunk": true`` passed for chunk 1,
    a float ``stop`` was truncated, a list of files was taken as a dict."""
    out = _write(str(tmp_path / "out"))
    path = os.path.join(out, "done", "chunk-00001.json")
    _put_json(path, None if change is None else dict(_json(path), **change))
    ex = open_explanations(out)
    assert ex.finished_chunks == [0, 2]
    with pytest.raises(CorruptChunkError, match=r"chunk 1 is damaged \(chunk 1: done/chunk-00001\.json unreadable"):
        ex.verify()
    with pytest.raises(CorruptChunkError, match=r"chunk 1: done/chunk-00001\.json unreadable"):
        ex.attributions[4]


def test_verify_arguments_and_a_folder_in_the_lock_files_place_are_named(tmp_path):
    """``verify(["a"])`` raised int()'s bare ValueError; a folder named ``lock`` made the writer crash with
    IsADirectoryError."""
    out = _write(str(tmp_path / "out"))
    ex = open_explanations(out)
    for bad in (["a"], "0", 1, [True]):
        with pytest.raises(TypeError, match=r"`chunks` must be a list of chunk indices"):
            ex.verify(bad)
    assert ex.verify([np.int64(2), 0]) == [0, 2]
    os.remove(os.path.join(out, "lock"))
    os.mkdir(os.path.join(out, "lock"))
    with pytest.raises(CorruptStoreError, match=r"has a folder named 'lock' where its lock file belongs"):
        StoreWriter.open(out, SETTINGS, 4, 10)
