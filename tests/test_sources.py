"""tfattr.streaming.sources: every kind of data gives the images, ids and labels of loading it by hand,
a resume start equals the tail of a full pass, and bad items are named or skipped in place."""

import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfattr import cli
from tfattr.errors import InvalidInputError, InvalidTypeError
from tfattr.streaming.sources import check_labels, decode_image_file, stream


def _collect(s):
    """Every batch of a stream, concatenated: (index0s, ids, images, labels or None, errors)."""
    batches = list(s)
    labels = None if batches[0].labels is None else np.concatenate([b.labels for b in batches])
    return ([b.index0 for b in batches], [i for b in batches for i in b.ids],
            np.concatenate([b.images for b in batches]), labels, [e for b in batches for e in b.errors])


def _png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(image[..., ::-1]))  # RGB → OpenCV's BGR


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """11 RGB images of 6×5 in three class folders, written in reverse order (the stream must sort)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    images = {}
    for i in reversed(range(11)):
        name = f"{['cat', 'dog', 'emu'][i % 3]}/img{i:02d}.png"
        images[name] = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        _png(os.path.join(root, name), images[name])
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"not read")
    return str(root), dict(sorted(images.items()))


def test_folder_gives_the_files_sorted_with_folder_labels_as_decoded_by_hand(folder):
    root, images = folder
    s = stream(root, batch=4, labels="folders")
    index0s, ids, x, labels, errors = _collect(s)
    assert ids == list(images) == s.ids  # sorted relative paths; the .txt and the hidden file left out
    assert index0s == [0, 4, 8] and errors == [] and s.num_items == 11 and s.num_batches == 3
    np.testing.assert_array_equal(x, np.stack(list(images.values())).astype(np.float32))  # 0–255 kept
    assert x.dtype == np.float32 and s.item_shape == (6, 5, 3)
    assert s.class_names == ["cat", "dog", "emu"] and s.num_classes == 3
    np.testing.assert_array_equal(labels, [["cat", "dog", "emu"].index(n.split("/")[0]) for n in ids])
    # an explicit class order
    _, _, _, labels2, _ = _collect(stream(root, batch=4, labels=["emu", "cat", "dog"]))
    np.testing.assert_array_equal(labels2, [["emu", "cat", "dog"].index(n.split("/")[0]) for n in ids])


@pytest.mark.parametrize("size", [None, (4, 3), (9, 7)])
def test_folder_pixels_equal_tfattr_explain_s_loading(folder, size):
    """value_range and image_size follow `tfattr explain --value-range --size`: the same float32 bits."""
    root, images = folder
    paths = [os.path.join(root, name) for name in images]
    expected = cli._load_images(paths, size, (-1.0, 2.0))
    _, _, x, _, _ = _collect(stream(root, batch=5, image_size=size, value_range=(-1, 2)))
    np.testing.assert_array_equal(x, expected)
    for path, image in zip(paths[:2], expected):
        np.testing.assert_array_equal(decode_image_file(path, size, value_range=(-1, 2)), image)
        with open(path, "rb") as handle:
            np.testing.assert_array_equal(decode_image_file(handle.read(), size, value_range=(-1, 2)), image)


def test_jpeg_bmp_and_gif_files_decode_as_tfattr_explain_decodes_them(tmp_path):
    """Also a large JPEG resized to a small size: the CLI decodes it at 1/8 of its side (a reduced decode)."""
    from PIL import Image

    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (96, 80, 3), dtype=np.uint8), (5, 5), 0)
    for name, kind in [("a.JPG", "JPEG"), ("b.bmp", "BMP"), ("c.gif", "GIF"), ("d.jpeg", "JPEG")]:
        Image.fromarray(image).save(tmp_path / name, kind)
    paths = [str(tmp_path / n) for n in ["a.JPG", "b.bmp", "c.gif", "d.jpeg"]]
    for size in [None, (10, 10), (24, 20), (50, 40)]:  # JPEG reduced 8×, 2×, 1×
        s = stream(str(tmp_path), batch=3, value_range=(0, 1), image_size=size)
        assert s.ids == ["a.JPG", "b.bmp", "c.gif", "d.jpeg"]
        _, _, x, _, errors = _collect(s)
        assert errors == []
        np.testing.assert_array_equal(x, cli._load_images(paths, size, (0.0, 1.0)))
        np.testing.assert_array_equal(decode_image_file(paths[0], size, value_range=(0, 1)), x[0])
    _, _, x, _, _ = _collect(stream(str(tmp_path), batch=3, value_range=(0, 1)))
    np.testing.assert_array_equal(x[1], image / np.float32(255))  # BMP is lossless


def test_grey_decoding_equals_the_cli_s(folder):
    root, images = folder
    paths = [os.path.join(root, name) for name in images]
    _, _, x, _, _ = _collect(stream(paths, batch=3, channels=1))
    np.testing.assert_array_equal(x, cli._load_images(paths, None, (0.0, 255.0), channels=1))


def test_a_list_of_files_keeps_its_order_its_paths_as_ids_and_its_labels(folder):
    root, images = folder
    names = list(images)[::-1]
    paths = [os.path.join(root, n) for n in names]
    _, ids, x, labels, _ = _collect(stream(paths, batch=4, labels=np.arange(11) * 2))
    assert ids == paths
    np.testing.assert_array_equal(x, np.stack([images[n] for n in names]).astype(np.float32))
    np.testing.assert_array_equal(labels, np.arange(11) * 2)


def test_arrays_tuples_and_dicts_give_their_items_with_index_or_given_ids():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 4, 4, 2)).astype(np.float64)
    y = rng.integers(0, 5, 7)
    _, ids, images, labels, _ = _collect(stream((x, y), batch=3))
    assert ids == [str(i) for i in range(7)]
    np.testing.assert_array_equal(images, x.astype(np.float32))  # float data: cast, values as they are
    np.testing.assert_array_equal(labels, y)
    names = np.array([f"im{i}" for i in range(7)])
    _, ids, images, labels, _ = _collect(stream({"x": x, "y": y, "n": names}, batch=3, image_key="x", label_key="y",
                                                id_key="n"))
    assert ids == list(names)
    np.testing.assert_array_equal(labels, y)
    _, _, images, labels, _ = _collect(stream(x, batch=10))
    assert labels is None and images.shape == (7, 4, 4, 2)
    u8 = rng.integers(0, 256, (5, 3, 3, 3), dtype=np.uint8)
    _, _, images, _, _ = _collect(stream(u8, batch=2, value_range=(0, 1)))
    np.testing.assert_array_equal(images, u8.astype(np.float32) / np.float32(255))
    with pytest.raises(InvalidInputError, match="`value_range` scales 8-bit images.*Received: value_range"):
        stream(x, batch=2, value_range=(0, 1))


def test_datasets_of_images_tuples_dicts_and_encoded_strings():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    y = np.arange(6) % 4
    for data, want_labels in [(tf.data.Dataset.from_tensor_slices(x), None),
                              (tf.data.Dataset.from_tensor_slices((x, y)), y)]:
        s = stream(data, batch=4)
        index0s, ids, images, labels, _ = _collect(s)
        assert index0s == [0, 4] and ids == [str(i) for i in range(6)] and s.num_items == 6
        np.testing.assert_array_equal(images, x.astype(np.float32))
        np.testing.assert_array_equal(labels, want_labels) if want_labels is not None else None
        assert (labels is None) == (want_labels is None)
    encoded = [cv2.imencode(".png", image[..., ::-1])[1].tobytes() for image in x]
    data = tf.data.Dataset.from_tensor_slices({"png": encoded, "cls": y, "name": [f"f{i}.png" for i in range(6)]})
    s = stream(data, batch=4, image_key="png", label_key="cls", id_key="name", value_range=(0, 1))
    _, ids, images, labels, _ = _collect(s)
    assert ids == [f"f{i}.png" for i in range(6)]
    np.testing.assert_array_equal(images, x.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(labels, y)


def test_tfds_mock_mnist_equals_tfds_load_and_resumes_at_the_tail():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=13):
        reference = list(tfds.as_numpy(tfds.load("mnist", split="train", shuffle_files=False)))
        s = stream("mnist", split="train", batch=5)
        assert s.num_items == 13 and s.item_shape == (28, 28, 1) and s.num_classes == 10
        assert s.description["kind"] == "tfds" and s.description["name"] == "mnist"
        index0s, ids, images, labels, errors = _collect(s)
        tail = _collect(stream("mnist", split="train", batch=5, skip_batches=2))
        _, tfds_ids, _, _, _ = _collect(stream("mnist", split="train", batch=5, id_key="tfds_id"))
    assert tfds_ids == [f"mnist-train.tfrecord-00000-of-00001__{i}" for i in range(13)]
    assert index0s == [0, 5, 10] and ids == [str(i) for i in range(13)] and errors == []
    np.testing.assert_array_equal(images, np.stack([e["image"] for e in reference]).astype(np.float32))
    np.testing.assert_array_equal(labels, [e["label"] for e in reference])
    assert tail[0] == [10] and tail[1] == ids[10:]
    np.testing.assert_array_equal(tail[2], images[10:])


def test_tfds_resume_decodes_only_the_images_after_the_start(monkeypatch):
    """skip_batches skips TFDS records before decoding: only the 3 images of the last batch are decoded."""
    import tensorflow_datasets as tfds

    decoded = []
    original = tfds.features.Image.decode_example

    def counting(self, example):
        image = original(self, example)
        counted = tf.numpy_function(lambda x: decoded.append(1) or x, [image], image.dtype, stateful=True)
        return tf.ensure_shape(counted, image.shape)

    monkeypatch.setattr(tfds.features.Image, "decode_example", counting)
    with tfds.testing.mock_data(num_examples=13):
        _, ids, _, _, _ = _collect(stream("mnist", split="train", batch=5, skip_batches=2))
    assert ids == ["10", "11", "12"] and len(decoded) == 3


def test_an_error_inside_a_user_pipeline_is_named_with_its_batch():
    data = tf.data.Dataset.range(6).map(lambda i: tf.fill((2, 2, 1), tf.cast(i, tf.float32)))
    data = data.map(lambda x: tf.cond(x[0, 0, 0] != 3, lambda: x,
                                      lambda: tf.debugging.check_numerics(x + float("nan"), "bad item")))
    with pytest.raises(InvalidInputError, match=r"`data`: the dataset failed while producing items 2 to 3 \(the batch "
                                                r"starting at item 2\): InvalidArgumentError: .*bad item.*"
                                                r"cannot tell which item"):
        list(stream(data, batch=2, on_error="skip"))


def _every_kind(folder):
    root, images = folder
    x = np.stack(list(images.values()))
    return {"folder": (root, {"labels": "folders"}),
            "files": ([os.path.join(root, n) for n in images], {}),
            "arrays": ((x, np.arange(11)), {}),
            "dataset": (tf.data.Dataset.from_tensor_slices((x, np.arange(11))), {}),
            "unknown cardinality": (tf.data.Dataset.from_tensor_slices(x).filter(lambda e: True), {})}


@pytest.mark.parametrize("kind", ["folder", "files", "arrays", "dataset", "unknown cardinality"])
def test_a_resume_start_gives_the_tail_of_a_full_pass_and_passes_repeat(folder, kind):
    data, options = _every_kind(folder)[kind]
    full = _collect(stream(data, batch=3, **options))
    again = _collect(stream(data, batch=3, **options))
    assert full[1] == again[1]
    np.testing.assert_array_equal(full[2], again[2])
    for k in (1, 3):
        s = stream(data, batch=3, skip_batches=k, **options)
        tail = _collect(s)
        assert tail[0] == list(range(3 * k, 11, 3)) and tail[1] == full[1][3 * k:]
        np.testing.assert_array_equal(tail[2], full[2][3 * k:])
        if full[3] is not None:
            np.testing.assert_array_equal(tail[3], full[3][3 * k:])
    assert list(stream(data, batch=3, skip_batches=4, **options)) == []  # the end: nothing left
    if kind == "unknown cardinality":
        assert stream(data, batch=3).num_items is None
    else:
        with pytest.raises(InvalidInputError, match="`skip_batches`: the source has 4 batches"):
            stream(data, batch=3, skip_batches=5, **options)


def test_files_before_the_resume_point_are_not_read(folder, tmp_path):
    """Only the first usable file is read for the item shape (a resumed run must find the same shape), and
    none with image_size."""
    root, images = folder
    paths = [os.path.join(root, n) for n in images]
    paths[1] = str(tmp_path / "gone.png")  # missing: reading it would fail
    _, ids, _, _, errors = _collect(stream(paths, batch=3, skip_batches=1))
    assert ids == paths[3:] and errors == []
    paths[0] = paths[1]
    _, ids, _, _, errors = _collect(stream(paths, batch=3, skip_batches=1, image_size=(6, 5)))
    assert ids == paths[3:] and errors == []


def test_items_are_read_ahead_while_the_consumer_works_and_read_ahead_is_bounded(folder, monkeypatch):
    """While the consumer holds the first items, the pipeline reads the next ones in the background (decoding
    overlaps the consumer), and no further than ``prefetch`` + ``decode_threads`` + one in the map's output."""
    import time

    from tfattr.streaming import sources

    root, images = folder
    reads = []
    original = sources._read_file
    monkeypatch.setattr(sources, "_read_file", lambda path: reads.append(path) or original(path))
    s = stream(root, batch=2, decode_threads=1, prefetch=1, image_size=(6, 5))  # image_size: no shape probe
    iterator = iter(s)
    first = next(iterator)
    assert first.ids == list(images)[:2]
    deadline = time.monotonic() + 30
    while len(reads) <= 2 and time.monotonic() < deadline:  # the consumer "works": the next items get read
        time.sleep(0.01)
    assert len(reads) > 2
    time.sleep(0.5)
    assert len(reads) <= 2 * 4 < 11  # held + prefetched + the map's output + in flight: 4 of the 6 groups
    assert [b.index0 for b in iterator] == [2, 4, 6, 8, 10]


@pytest.fixture()
def damaged(folder, tmp_path):
    """A copy of the folder with a truncated PNG at index 4 and a file that is not an image at index 9."""
    root, images = folder
    names = list(images)
    for name, image in images.items():
        _png(os.path.join(tmp_path, name), image)
    with open(os.path.join(root, names[4]), "rb") as handle:
        data = handle.read()
    (tmp_path / names[4]).write_bytes(data[: len(data) // 2])
    (tmp_path / names[9]).write_bytes(b"GIF89a garbage")
    return str(tmp_path), names, np.stack(list(images.values())).astype(np.float32)


def test_a_corrupt_file_raises_naming_it_or_is_skipped_in_place(damaged):
    root, names, expected = damaged
    with pytest.raises(InvalidInputError, match=rf"cannot use item 4 \(id '{names[4]}'\): cannot decode the image"
                                                rf".*Received: item 4='{names[4]}'"):
        list(stream(root, batch=3))
    index0s, ids, x, _, errors = _collect(stream(root, batch=3, on_error="skip"))
    assert ids == names and index0s == [0, 3, 6, 9]
    assert [(i, n) for i, n, _ in errors] == [(4, names[4]), (9, names[9])]
    assert "cannot decode the image" in errors[0][2], errors
    keep = np.ones(11, bool)
    keep[[4, 9]] = False
    np.testing.assert_array_equal(x[keep], expected[keep])
    assert not x[~keep].any()  # placeholders are zeros
    batches = list(stream(root, batch=3, on_error="skip"))
    np.testing.assert_array_equal(batches[1].valid, [True, False, True])
    with pytest.raises(InvalidInputError, match=rf"`path_or_bytes`: cannot use the image file .*{names[4]}"):
        decode_image_file(os.path.join(root, names[4]))


def test_a_corrupt_first_file_raises_at_once_or_the_next_file_gives_the_size(damaged):
    root, names, expected = damaged
    paths = [os.path.join(root, n) for n in names]
    order = [paths[4]] + paths[:4]
    with pytest.raises(InvalidInputError, match=r"cannot use item 0 \(id '.*'\): cannot decode"):
        stream(order, batch=2)
    s = stream(order, batch=2, on_error="skip")
    assert s.item_shape == (6, 5, 3)
    _, _, x, _, errors = _collect(s)
    assert [e[0] for e in errors] == [0] and not x[0].any()
    np.testing.assert_array_equal(x[1:], expected[:4])


def test_mixed_sizes_without_image_size_are_named_skipped_or_resized(folder, tmp_path):
    root, images = folder
    names = list(images)
    for name, image in images.items():
        _png(os.path.join(tmp_path, name), image)
    _png(os.path.join(tmp_path, names[5]), np.zeros((7, 5, 3), np.uint8))
    with pytest.raises(InvalidInputError, match=rf"item 5 \(id '{names[5]}'\): the image has shape \(7, 5, 3\) .*"
                                                r"have shape \(6, 5, 3\) \(the first item's\); pass image_size"):
        list(stream(str(tmp_path), batch=4))
    _, _, _, _, errors = _collect(stream(str(tmp_path), batch=4, on_error="skip"))
    assert [e[:2] for e in errors] == [(5, names[5])]
    _, _, x, _, errors = _collect(stream(str(tmp_path), batch=4, image_size=(6, 5)))
    assert errors == [] and x.shape == (11, 6, 5, 3)
    # the same in a dataset of variable-size images
    ragged = tf.data.Dataset.from_generator(lambda: (np.zeros((3 + (i == 2), 3, 1), np.float32) for i in range(4)),
                                            output_signature=tf.TensorSpec((None, 3, 1), tf.float32))
    with pytest.raises(InvalidInputError, match=r"item 2 \(id '2'\): the image has shape \(4, 3, 1\)"):
        list(stream(ragged, batch=3))
    grey_and_rgb = tf.data.Dataset.from_generator(lambda: (np.zeros((3, 3, 1 + 2 * (i == 1)), np.uint8)
                                                           for i in range(3)),
                                                  output_signature=tf.TensorSpec((None, None, None), tf.uint8))
    with pytest.raises(InvalidInputError, match=r"item 1 \(id '1'\): the image has 3 channels; the stream's images "
                                                r"have 1"):
        list(stream(grey_and_rgb, batch=3, image_size=(2, 2)))


def test_wrong_rank_dtype_and_nan_images_are_named():
    with pytest.raises(InvalidInputError, match=r"\(N, height, width, channels\) \(grey images .*\[\.\.\., None\]"
                                                r".*Received: data.shape=\(4, 5, 5\)"):
        stream(np.zeros((4, 5, 5)), batch=2)
    with pytest.raises(InvalidTypeError, match="images are a numeric array.*Received: data='<U1'"):
        stream(np.full((2, 3, 3, 1), "a"), batch=2)
    with pytest.raises(InvalidTypeError, match="images are numeric.*are bool"):
        stream(tf.data.Dataset.from_tensor_slices(np.zeros((2, 3, 3, 1), bool)), batch=2)
    with pytest.raises(InvalidInputError, match=r"each image is \(height, width, channels\) \(grey images"):
        stream(tf.data.Dataset.from_tensor_slices(np.zeros((2, 3, 3))), batch=2)
    with pytest.raises(InvalidInputError, match=r"\(a batched dataset: pass dataset.unbatch\(\)\)"):
        stream(tf.data.Dataset.from_tensor_slices(np.zeros((4, 3, 3, 1))).batch(2), batch=2)
    with pytest.raises(InvalidInputError, match=r"`image_key`: the dataset's elements are dicts with keys \['img', "
                                                r"'label'\], without 'image'.*Received: image_key='image'"):
        stream(tf.data.Dataset.from_tensor_slices({"img": np.zeros((2, 3, 3, 1)), "label": [0, 1]}), batch=2)
    x = np.ones((5, 2, 2, 1), np.float32)
    x[3, 1, 1, 0] = np.nan
    x[4, 0, 0, 0] = np.inf
    with pytest.raises(InvalidInputError, match=r"cannot use item 3 \(id '3'\): the image has 1 NaN or infinite"):
        list(stream(x, batch=2))
    for data in (x, tf.data.Dataset.from_tensor_slices(x)):
        _, _, images, _, errors = _collect(stream(data, batch=2, on_error="skip"))
        assert [e[0] for e in errors] == [3, 4] and not images[3:].any() and (images[:3] == 1).all()


def test_a_single_file_a_missing_folder_and_an_unknown_tfds_name_are_named(folder, tmp_path):
    root, images = folder
    path = os.path.join(root, list(images)[0])
    with pytest.raises(InvalidInputError, match=r"is a file; .*pass \[path\] for one file"):
        stream(path, batch=2)
    with pytest.raises(InvalidInputError, match="`data`: no folder"):
        stream(tmp_path / "absent", batch=2)
    with pytest.raises(InvalidInputError, match=r"`data`: 'no_such_dataset_xyz' is no folder, and cannot be loaded "
                                                r"as a TFDS dataset .*Received: data='no_such_dataset_xyz'"):
        stream("no_such_dataset_xyz", split="train", batch=2)
    with pytest.raises(InvalidInputError, match="`split`: a TFDS dataset is read one split at a time"):
        stream("mnist", batch=2)


def test_an_infinite_dataset_is_refused():
    with pytest.raises(InvalidInputError, match=r"infinite.*\.repeat\(\)"):
        stream(tf.data.Dataset.from_tensor_slices(np.zeros((2, 3, 3, 1))).repeat(), batch=2)


def test_the_description_follows_the_data(folder, tmp_path):
    x = np.zeros((3, 4, 4, 3), np.uint8)
    before = stream(x, batch=2).description
    x2 = x.copy()
    x2[1, 2, 3, 0] = 1
    assert stream(x2, batch=2).description != before
    assert stream(x.copy(), batch=2).description == before  # content, not identity
    assert stream(x, batch=2, skip_batches=1).description == before  # a resume compares equal
    assert stream(x, batch=2, value_range=(0, 1)).description != before
    root, images = folder
    for name, image in images.items():
        _png(os.path.join(tmp_path, name), image)
    first = stream(str(tmp_path), batch=2).description
    relative = stream(os.path.relpath(tmp_path), batch=2).description
    assert relative == first  # the folder's absolute path and its files' names, sizes and times
    assert stream(str(tmp_path), batch=2, image_size=(3, 3)).description != first
    path = os.path.join(tmp_path, list(images)[0])
    _png(path, np.zeros((6, 5, 3), np.uint8))
    os.utime(path, ns=(1, 1))
    assert stream(str(tmp_path), batch=2).description != first


def test_check_labels_names_labels_out_of_range():
    ids = ["a", "b", "c", "d"]
    assert check_labels(np.array([0, 9, 3, 1]), 10, ids) == []
    with pytest.raises(InvalidInputError, match=r"cannot use item 12 \(id 'b'\): its label 10 is not a class of the "
                                                r"model \(0 to 9\).*Received: item 12='b'"):
        check_labels(np.array([0, 10, 3, -1]), 10, ids, index0=11)
    errors = check_labels(np.array([0, 10, 3, -1]), 10, ids, on_error="skip", index0=11)
    assert [e[:2] for e in errors] == [(12, "b"), (14, "d")]
    with pytest.raises(InvalidTypeError, match="one-hot labels: pass their argmax"):
        check_labels(np.eye(4), 4, ids)


@pytest.mark.parametrize("options", [{"batch": 0}, {"batch": 2, "on_error": "ignore"},
                                     {"batch": 2, "image_size": (0, 3)}, {"batch": 2, "skip_batches": -1},
                                     {"batch": 2, "channels": 2}, {"batch": 2, "value_range": (1, 0)}])
def test_bad_arguments_are_named(options):
    name = [k for k in options if k != "batch"][-1] if len(options) > 1 else "batch"
    with pytest.raises(InvalidInputError, match=rf"`{name}`.*Received: {name}="):
        stream(np.zeros((3, 2, 2, 1), np.float32), **options)
