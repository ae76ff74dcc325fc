"""The chunk-size disk cache (``batch_size="auto"`` with ``disk_cache``) attacked as a hostile
user would: a corrupt, truncated, deeply nested, wrongly typed or unreadable file is treated as
empty with one warning and replaced at the next write; two processes writing at once keep both
entries; ``TFATTR_CHUNK_CACHE`` reads boolean words as booleans and only path-like text as a path."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import small_cnn

from tfattr import IntegratedGradients
from tfattr.core import autotune
from tfattr.core.gradients import InputGradients
from tfattr.errors import InvalidInputError

SHAPE = (16, 16, 3)


@pytest.fixture(autouse=True)
def fresh_tuning(monkeypatch):
    monkeypatch.delenv("TFATTR_CHUNK_CACHE", raising=False)
    monkeypatch.delenv("TFATTR_MAX_POINTS", raising=False)
    autotune.reset()
    yield
    autotune.configure()
    autotune.reset()


@pytest.fixture(scope="module")
def model():
    return small_cnn("relu")


def tuner(model):
    return autotune.tuner_for(InputGradients(model), SHAPE, np.dtype("float32"), "path", 2, "CPU")


def disk_key(model):
    owner_key = (("InputGradients", None), SHAPE, "float32", "path", 2, "CPU", False)
    return autotune._disk_key(model, owner_key)


MALFORMED = {
    "deeply nested": "[" * 100_000 + "]" * 100_000,
    "deeply nested object": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "truncated": '{"a": 1, "b": [1, 2',
    "not utf-8": b"\xff\xfe\x00{}",
    "a list": "[1, 2, 3]",
    "a number": "7",
    "empty": "",
}


@pytest.mark.parametrize("content", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_cache_is_empty_and_every_auto_call_keeps_working(model, tmp_path, content):
    path = tmp_path / "sizes.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    autotune.configure(disk_cache=str(path))
    images = np.random.default_rng(0).uniform(size=(2,) + SHAPE).astype("float32")
    reference = IntegratedGradients(model, steps=8, batch_size=4).attribute(images, target=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            autotune.reset()
            result = IntegratedGradients(model, steps=8).attribute(images, target=0)
            np.testing.assert_allclose(np.asarray(result), np.asarray(reference), rtol=1e-5, atol=1e-6)
    cache_warnings = [w for w in caught if "chunk-size cache" in str(w.message)]
    assert len(cache_warnings) == (0 if content == "" else 1)  # once per file and problem, not per call
    # the next write replaces the malformed file with a valid one holding the new entry
    fresh = tuner(model)
    fresh.on_decide(8)
    assert json.loads(path.read_text()) == {disk_key(model): 8}


@pytest.mark.parametrize("stored", [True, "64", 64.5, -3, 0, [64], None, 10**6])
def test_a_cache_entry_that_is_not_a_size_within_the_cap_is_not_used(model, tmp_path, stored):
    path = tmp_path / "sizes.json"
    path.write_text(json.dumps({disk_key(model): stored, "other": 4}))
    autotune.configure(disk_cache=str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert tuner(model).chosen is None  # measured again, not the stored junk (True is not a size 1)
    autotune.reset()
    path.write_text(json.dumps({disk_key(model): 8}))
    assert tuner(model).chosen == 8


def test_an_oversized_cache_file_is_not_read(model, tmp_path):
    path = tmp_path / "sizes.json"
    entries = {disk_key(model): 8}
    entries.update({f"padding {i}": 1 for i in range(autotune.MAX_CACHE_BYTES // 16)})
    path.write_text(json.dumps(entries))
    assert path.stat().st_size > autotune.MAX_CACHE_BYTES
    autotune.configure(disk_cache=str(path))
    with pytest.warns(UserWarning, match="larger than"):
        assert tuner(model).chosen is None


@pytest.mark.parametrize("where", ["folder at the path", "file as the folder"])
def test_an_unwritable_cache_warns_once_and_the_call_works(model, tmp_path, where):
    if where == "folder at the path":
        path = tmp_path / "sizes.json"
        path.mkdir()
    else:
        (tmp_path / "blocker").write_text("a file")
        path = tmp_path / "blocker" / "sizes.json"
    autotune.configure(disk_cache=str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for size in (4, 8):
            autotune.reset()
            tuner(model).on_decide(size)
    assert len([w for w in caught if "chunk-size cache" in str(w.message)]) >= 1
    assert len({str(w.message) for w in caught}) == len(caught)  # each problem once


WRITER = """
import sys
from tfattr.core import autotune
path, name = sys.argv[1], sys.argv[2]
for i in range(40):
    autotune._write_disk(path, f"{name} {i}", i + 1)
"""


def test_two_processes_writing_the_cache_at_once_keep_every_entry(tmp_path):
    path = tmp_path / "sizes.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], env=env) for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    table = json.loads(path.read_text())
    assert table == {f"{name} {i}": i + 1 for name in ("a", "b") for i in range(40)}  # no lost update
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []  # no temporary file left


@pytest.mark.parametrize("word", ["yes", "TRUE", "on", "1", "Yes", " true "])
def test_boolean_words_turn_the_cache_on_in_keras_home_not_a_file_named_so(model, tmp_path, monkeypatch, word):
    home, cwd = tmp_path / "keras_home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("TFATTR_CHUNK_CACHE", word)
    assert autotune._disk_path() == str(home / "tfattr_chunk_sizes.json")
    tuner(model).on_decide(8)
    assert list(cwd.iterdir()) == []
    assert json.loads((home / "tfattr_chunk_sizes.json").read_text()) == {disk_key(model): 8}


@pytest.mark.parametrize("word", ["no", "FALSE", "off", "0", ""])
def test_false_words_leave_the_cache_off(tmp_path, monkeypatch, word):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFATTR_CHUNK_CACHE", word)
    assert autotune._disk_path() is None


def test_only_path_like_text_is_a_cache_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("./sizes", "cache/sizes", "sizes.json", "~/x/sizes.json"):
        monkeypatch.setenv("TFATTR_CHUNK_CACHE", text)
        assert autotune._disk_path() == os.path.expanduser(text)
    for text in ("enable", "y", "sizes"):
        monkeypatch.setenv("TFATTR_CHUNK_CACHE", text)
        with pytest.raises(InvalidInputError, match=rf"TFATTR_CHUNK_CACHE.*Received: TFATTR_CHUNK_CACHE='{text}'"):
            autotune._disk_path()
    monkeypatch.delenv("TFATTR_CHUNK_CACHE")
    autotune.configure(disk_cache="yes")
    assert autotune._settings["disk_cache"] is True
    with pytest.raises(InvalidInputError, match="Received: disk_cache='maybe'"):
        autotune.configure(disk_cache="maybe")
    assert list(tmp_path.iterdir()) == []
