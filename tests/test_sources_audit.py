"""Audit of tfattr.streaming.sources: defects a hostile user found, each with the test that failed before its fix."""

import os

import cv2
import numpy as np
import pytest

from tfattr.errors import InvalidInputError
from tfattr.streaming.sources import stream


def _png(path, value, shape=(4, 4, 3)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.full(shape, value, np.uint8))


def _collect(s):
    batches = list(s)
    labels = None if batches[0].labels is None else np.concatenate([b.labels for b in batches])
    return [i for b in batches for i in b.ids], np.concatenate([b.images for b in batches]), labels


def test_an_empty_class_folder_keeps_its_class_index(tmp_path):
    """labels="folders": the classes are the first-level sub-folders, an empty one included (as Keras'
    image_dataset_from_directory numbers them); before, class 'c' silently got label 1 instead of 2."""
    _png(tmp_path / "a" / "1.png", 10)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("no image")
    _png(tmp_path / "c" / "2.png", 30)
    s = stream(str(tmp_path), batch=4, labels="folders")
    assert s.class_names == ["a", "b", "c"] and s.num_classes == 3
    ids, _, labels = _collect(s)
    assert ids == ["a/1.png", "c/2.png"]
    np.testing.assert_array_equal(labels, [0, 2])


def test_symlinked_sub_folders_are_read_and_a_symlink_loop_ends(tmp_path):
    """A class folder that is a symbolic link (a common way to assemble a dataset) was silently left out,
    with its class; a link back to an ancestor is read once, not forever."""
    root, other = tmp_path / "root", tmp_path / "elsewhere"
    _png(root / "a" / "1.png", 10)
    _png(other / "x.png", 50)
    os.symlink(other, root / "b")
    os.symlink(root, root / "a" / "loop")  # a cycle: root/a/loop/a/loop/...
    s = stream(str(root), batch=4, labels="folders")
    ids, x, labels = _collect(s)
    assert s.class_names == ["a", "b"]
    assert ids == ["a/1.png", "b/x.png"]
    np.testing.assert_array_equal(labels, [0, 1])
    np.testing.assert_array_equal(x[:, 0, 0, 0], [10, 50])


def test_an_unreadable_sub_folder_is_named_not_left_out(tmp_path, monkeypatch):
    """os.walk ignored a sub-folder it could not list: its images were silently missing. (Permissions are
    simulated: the tests may run as root, who reads everything.)"""
    _png(tmp_path / "a" / "1.png", 10)
    _png(tmp_path / "secret" / "2.png", 20)
    real = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "secret":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(InvalidInputError, match=r"`data`: cannot list the folder .*secret.*Permission denied.*"
                                                r"Received: data="):
        stream(str(tmp_path), batch=2)


def test_a_file_name_that_is_not_utf8_gets_a_storable_id(tmp_path):
    """A file name with bytes that are not UTF-8 (a Latin-1 name on Linux) became an id with a lone surrogate,
    which no store (zarr strings, Parquet) can write: the run died at that file's chunk. Its id now shows
    those bytes as \\xNN; the file is still read."""
    folder = os.fsencode(tmp_path)
    for name, value in [(b"caf\xe9.png", 10), (b"plain.png", 20)]:
        assert cv2.imwrite(os.fsdecode(os.path.join(folder, b"x")) + ".png", np.full((4, 4, 3), value, np.uint8))
        os.rename(os.path.join(folder, b"x.png"), os.path.join(folder, name))
    s = stream(str(tmp_path), batch=2)
    assert s.ids == ["caf\\xe9.png", "plain.png"]
    for i in s.ids:
        i.encode("utf-8")  # storable
    ids, x, _ = _collect(s)
    assert ids == s.ids
    np.testing.assert_array_equal(x[:, 0, 0, 0], [10, 20])
    paths = [os.fsdecode(os.path.join(folder, b"caf\xe9.png"))]
    assert stream(paths, batch=1).ids == [str(tmp_path) + "/caf\\xe9.png"]
