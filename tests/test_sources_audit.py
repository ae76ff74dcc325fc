"""Audit of tfattr.streaming.sources: defects a hostile user found, each with the test that failed before its fix."""

import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfattr.errors import InvalidInputError
from tfattr.streaming import sources
from tfattr.streaming.sources import decode_image_file, stream


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


def test_bfloat16_images_are_used_not_refused_item_by_item():
    """A dataset of bfloat16 images (a mixed-precision pipeline) passed the dtype check, then every item was
    refused ("the image has dtype bfloat16; images are numeric"): the whole source unusable."""
    x = np.random.default_rng(0).normal(size=(5, 3, 3, 2)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices(tf.cast(x, tf.bfloat16))
    _, images, _ = _collect(stream(data, batch=2))
    np.testing.assert_array_equal(images, tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy())  # bf16 → f32 is exact
    grown = tf.data.Dataset.from_generator(lambda: iter(tf.cast(x, tf.bfloat16).numpy()),
                                           output_signature=tf.TensorSpec((None, None, 2), tf.bfloat16))
    _, images2, _ = _collect(stream(grown, batch=2, image_size=(3, 3)))
    np.testing.assert_array_equal(images2, images)


def test_an_image_size_beyond_the_pixel_cap_is_named_at_once():
    """image_size=(20000, 20000) was accepted; the first batch then asked for ~10 GB (a MemoryError reported as
    "the arrays failed while producing items 0 to 1", or the machine swapping)."""
    with pytest.raises(InvalidInputError, match=r"`image_size`: .*100000000 pixels.*Received: image_size="):
        stream(np.zeros((2, 4, 4, 3), np.uint8), batch=2, image_size=(20000, 20000))
    assert stream(np.zeros((2, 4, 4, 3), np.uint8), batch=2, image_size=(10000, 10000)).item_shape == (10000, 10000, 3)


def _tiff(width, height):
    """An 8×8 grey TIFF whose header then declares ``width``×``height`` (a decompression bomb's header)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"II*\x00"
    ifd = int.from_bytes(data[4:8], "little")
    for k in range(int.from_bytes(data[ifd:ifd + 2], "little")):
        entry = ifd + 2 + 12 * k
        tag, kind = int.from_bytes(data[entry:entry + 2], "little"), int.from_bytes(data[entry + 2:entry + 4], "little")
        if tag in (256, 257):
            value = width if tag == 256 else height
            data[entry + 8:entry + (10 if kind == 3 else 12)] = value.to_bytes(2 if kind == 3 else 4, "little")
    return bytes(data)


def test_a_tiff_or_webp_behind_an_image_suffix_is_capped_from_its_header(tmp_path):
    """OpenCV decodes by content: a TIFF (or WebP) named .png decodes. Its declared size was not read from
    the header (only PNG, GIF, BMP and JPEG headers were), so a 50000×40000 TIFF was handed to the decoder
    (OpenCV's own cap is 2^30 pixels: 3 GB per decoding thread) where `tfattr explain` refuses it at once."""
    from tfattr import cli

    bomb = _tiff(50000, 40000)
    assert cli._header_size(bomb) == (40000, 50000)
    with pytest.raises(InvalidInputError, match=r"the image is 50000×40000 pixels, more than the 100000000"):
        decode_image_file(bomb)
    (tmp_path / "a.png").write_bytes(_tiff(8, 8))
    (tmp_path / "b.png").write_bytes(bomb)
    _, x, _ = _collect(s := stream(str(tmp_path), batch=2, on_error="skip"))
    errors = [e for b in s for e in b.errors]
    assert [e[:2] for e in errors] == [(1, "b.png")] and "50000×40000 pixels" in errors[0][2]
    np.testing.assert_array_equal(x[0], np.full((8, 8, 3), 7, np.float32))


@pytest.mark.parametrize("kind", ["TIFF", "WEBP", "PPM", "PNG", "GIF", "BMP", "JPEG"])
def test_the_header_sizes_equal_the_cli_s(kind):
    """The stream's header reader and `tfattr explain`'s agree on every format both decode (a drift guard)."""
    import io

    from PIL import Image

    from tfattr import cli

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((13, 21, 3), np.uint8)).save(buffer, kind)
    data = buffer.getvalue()
    assert sources._header_size(data) == cli._header_size(data) == (13, 21)


def test_an_image_label_dataset_prints_no_autograph_warning():
    """The (image, label) accessors were two lambdas on one line, which AutoGraph cannot parse: every stream of
    such a dataset printed two 20-line "AutoGraph could not transform" warnings."""
    import logging

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = tf.get_logger()
    logger.addHandler(handler)
    try:
        x = np.zeros((3, 2, 2, 1), np.float32)
        _collect(stream(tf.data.Dataset.from_tensor_slices((x, np.arange(3))), batch=2))
        _collect(stream(tf.data.Dataset.from_tensor_slices({"image": x, "label": np.arange(3)}), batch=2))
    finally:
        logger.removeHandler(handler)
    assert not [m for m in messages if "AutoGraph" in m], messages


def test_a_nested_label_or_an_id_that_is_not_a_scalar_is_named():
    """A label that is a tuple or dict (a multi-output model's targets) became Batch.labels as a tuple of arrays
    (the Batch's (n,) contract broken); an id_key field of shape (2,) gave every item the id '[0. 0.]'."""
    x = np.zeros((4, 2, 2, 1), np.float32)
    nested = tf.data.Dataset.from_tensor_slices((x, (np.arange(4), np.arange(4))))
    with pytest.raises(InvalidInputError, match=r"`label_key`: .*labels must be one tensor per element.*"
                                                r"Received: label spec="):
        stream(nested, batch=2)
    as_dict = tf.data.Dataset.from_tensor_slices({"image": x, "label": {"a": np.arange(4)}})
    with pytest.raises(InvalidInputError, match=r"`label_key`: .*one tensor per element"):
        stream(as_dict, batch=2)
    ids = tf.data.Dataset.from_tensor_slices({"image": x, "name": np.zeros((4, 2))})
    with pytest.raises(InvalidInputError, match=r"`id_key`: .*one scalar per element.*Received: id spec="):
        stream(ids, batch=2, id_key="name")


@pytest.mark.parametrize("make, what", [
    (lambda d: d.shuffle(8), r"shuffle that reshuffles at every pass"),
    (lambda d: d.map(lambda e: e, num_parallel_calls=2, deterministic=False), r"deterministic=False"),
    (lambda d: d.batch(2, num_parallel_calls=2, deterministic=False).unbatch(), r"deterministic=False"),
])
def test_a_dataset_whose_order_changes_between_passes_is_named(make, what):
    """A dataset whose order is not the same at every pass (a shuffle that reshuffles, deterministic=False)
    was streamed: ids are item indices, and a resumed run (skip_batches) then skipped *other* items than the
    first run explained: some images explained twice, others never, without a word."""
    x = np.arange(8, dtype=np.float32).reshape(8, 1, 1, 1)
    with pytest.raises(InvalidInputError, match=rf"`data`: the dataset's order changes from pass to pass \(.*{what}"
                                                r".*Received: data="):
        stream(make(tf.data.Dataset.from_tensor_slices(x)), batch=3)


def test_a_seeded_shuffle_without_reshuffling_streams_and_resumes_at_its_tail():
    x = np.arange(8, dtype=np.float32).reshape(8, 1, 1, 1)
    data = tf.data.Dataset.from_tensor_slices(x).shuffle(8, seed=7, reshuffle_each_iteration=False)
    _, full, _ = _collect(stream(data, batch=3))
    _, tail, _ = _collect(stream(data, batch=3, skip_batches=1))
    assert sorted(full.ravel()) == list(range(8))
    np.testing.assert_array_equal(tail, full[3:])


def test_images_without_pixels_are_named():
    """Images of height, width or channels 0 streamed as empty images (and crashed inside OpenCV with an
    image_size, reported as a pipeline failure)."""
    for shape in [(2, 0, 3, 3), (2, 3, 3, 0)]:
        with pytest.raises(InvalidInputError, match=r"`data`: .*no pixels.*Received: data.shape="):
            stream(np.zeros(shape, np.uint8), batch=2)
        with pytest.raises(InvalidInputError, match=r"`data`: .*no pixels.*Received: image spec="):
            stream(tf.data.Dataset.from_tensor_slices(np.zeros(shape, np.uint8)), batch=2, image_size=(2, 2))
    empty_second = tf.data.Dataset.from_generator(lambda: iter([np.ones((3, 3, 1)), np.ones((0, 3, 1))]),
                                                  output_signature=tf.TensorSpec((None, 3, 1), tf.float64))
    with pytest.raises(InvalidInputError, match=r"cannot use item 1 \(id '1'\): the image has shape \(0, 3, 1\): "
                                                r"no pixels"):
        list(stream(empty_second, batch=2, image_size=(3, 3)))


def test_a_memory_mapped_array_is_digested_without_loading_it(tmp_path):
    """The arrays' description digest called array_digest, i.e. ``array.tobytes()``: a copy of the whole array
    in memory, so a memory-mapped dataset larger than RAM could not even be opened. The digest is now taken
    block by block (the same SHA-256: the C-order bytes in sequence)."""
    import tracemalloc

    from tfattr.core.keys import array_digest

    x = np.lib.format.open_memmap(str(tmp_path / "x.npy"), mode="w+", dtype=np.uint8, shape=(400, 256, 256, 3))
    x[::7, 3, 5] = 9  # 78 MB, mostly a sparse file's zeros
    x.flush()
    tracemalloc.start()
    try:
        s = stream(np.load(str(tmp_path / "x.npy"), mmap_mode="r"), batch=8, image_size=(4, 4))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40e6, peak  # the array is 78.6 MB; the blocks hashed at once at most 16 MB
    small = np.arange(2 * 3 * 2 * 5, dtype=np.float32).reshape(2, 3, 2, 5)[:, ::-1, :, ::2]  # not contiguous
    assert stream(small, batch=1).description["images"]["sha256"] == array_digest(small)
    assert s.description["images"]["sha256"] == array_digest(np.asarray(x))


def test_a_list_of_tfds_splits_is_named():
    """split=["train", "test"] made tfds.load return a list of datasets: AttributeError: 'list' object has no
    attribute 'map'."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3):
        with pytest.raises(InvalidInputError, match=r"`split`: one split.*'train\+test'.*Received: split="):
            stream("mnist", split=["train", "test"], batch=2)
        assert stream("mnist", split="train+test", batch=2).num_items == 3  # the mock has 3 in any split


def test_float64_values_beyond_float32_are_named_as_such_without_a_numpy_warning():
    """A float64 image with a finite value beyond float32's range (1e39) was reported as "NaN or infinite
    values" (it has none) and NumPy printed "RuntimeWarning: overflow encountered in cast"."""
    import warnings

    x = np.ones((2, 2, 2, 1))
    x[1, 0, 0, 0] = 1e39
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidInputError, match=r"cannot use item 1 \(id '1'\): the image has 1 value beyond "
                                                    r"float32's range"):
            list(stream(x, batch=2))
    bf16 = tf.data.Dataset.from_tensor_slices(tf.cast(np.where(x > 1, np.nan, x), tf.bfloat16))
    with pytest.raises(InvalidInputError, match=r"cannot use item 1 \(id '1'\): the image has 1 NaN or infinite"):
        list(stream(bf16, batch=2))


def test_a_file_system_s_lost_and_found_is_passed_over(tmp_path, monkeypatch):
    """A folder at a disk's mount point holds lost+found, unreadable but for root: it is not an image folder,
    not a class, and not an unreadable folder to complain about."""
    _png(tmp_path / "a" / "1.png", 10)
    (tmp_path / "lost+found").mkdir()
    real = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "lost+found":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    s = stream(str(tmp_path), batch=2, labels="folders")
    assert s.ids == ["a/1.png"] and s.class_names == ["a"]


def test_a_folder_reached_through_a_symbolic_link_has_the_same_description(tmp_path):
    """The description (compared on resume) held the folder's absolute path as spelled: the same folder through
    a link (~/data → /mnt/ssd/data) refused to resume. It now holds the resolved path."""
    _png(tmp_path / "real" / "a" / "1.png", 10)
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert stream(str(tmp_path / "link"), batch=2).description == stream(str(tmp_path / "real"), batch=2).description


def test_list_files_default_shuffle_is_named_with_its_fix(tmp_path):
    """tf.data.Dataset.list_files shuffles at every pass unless shuffle=False: the typical way to hit the order
    defect above."""
    for i in range(3):
        _png(tmp_path / f"{i}.png", i)
    files = tf.data.Dataset.list_files(str(tmp_path / "*.png"))
    with pytest.raises(InvalidInputError, match=r"reshuffles at every pass.*shuffle=False to list_files"):
        stream(files, batch=2)
    _, x, _ = _collect(stream(tf.data.Dataset.list_files(str(tmp_path / "*.png"), shuffle=False).map(tf.io.read_file),
                              batch=2))
    np.testing.assert_array_equal(x[:, 0, 0, 0], [0, 1, 2])


def test_a_one_shot_generator_is_named_not_shifted_by_one():
    """A dataset over a one-shot Python iterator (``from_generator(lambda: it)``) of images of unknown shape:
    reading the first image for the shape consumed it, and the pass then began at the second image: every id
    (an index) paired with the next item's image, the last id missing, without a word. The pass now checks
    that the item read for the shape comes back the same."""
    x = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1) * np.ones((1, 2, 2, 1), np.float32)
    signature = tf.TensorSpec((None, None, 1), tf.float32)
    once = iter(list(x))
    with pytest.raises(InvalidInputError, match=r"`data`: the dataset gave another item 0 \(id '0'\) .*than when "
                                                r"its image shape was read.*one-shot"):
        list(stream(tf.data.Dataset.from_generator(lambda: once, output_signature=signature), batch=2))
    _, images, _ = _collect(stream(tf.data.Dataset.from_generator(lambda: iter(list(x)), output_signature=signature),
                                   batch=2))
    np.testing.assert_array_equal(images, x)
