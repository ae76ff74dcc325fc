"""Data sources for whole-dataset runs: one stream of batches over datasets, TFDS, folders and arrays.

:func:`stream` turns what a user has — a ``tf.data.Dataset``, a TFDS name, a folder of image files,
a list of image files, NumPy arrays — into a :class:`Stream`: an iterable of :class:`Batch` objects of
``batch`` items each, in the source's order (batch ``k`` holds items ``[k*batch, (k+1)*batch)``), with
string ids, optional integer labels and the items that could not be used reported, never dropped.

Decoding and preprocessing run in a ``tf.data`` pipeline (``map`` with ``num_parallel_calls`` and
``prefetch``), so they overlap the consumer (attribution in the same process); each batch reaches the
consumer as NumPy arrays. At most ``prefetch`` batches wait ready and ``decode_threads`` batches (under
``AUTOTUNE``: the cores, at most :data:`MAX_BATCHES_IN_FLIGHT`) are being prepared: memory stays a few
batches whatever the source's size.
Measured on two shared cores: 32×32 PNGs cost ~50 µs of CPU each (20,000 images per CPU-second),
500×375 JPEGs resized to 224×224 ~2.2 ms each.

Pixel values (the same convention as ``tfattr explain``):

* image files (and encoded image strings in a ``tf.data.Dataset``) are decoded by OpenCV as 8-bit RGB
  (``channels=3``, an alpha channel dropped, 16-bit PNGs reduced to 8 bits, the EXIF orientation
  applied) or grey (``channels=1``), exactly as ``tfattr explain`` decodes ``--images`` (a JPEG far
  larger than ``image_size`` too: decoded at 1/2, 1/4 or 1/8 of its side, never below ``image_size``);
* TFDS images are decoded by TFDS's own decoder (TensorFlow's), the pixels of ``tfds.load`` (the same
  JPEG decoded by OpenCV and by TensorFlow may differ by a few levels);
* 8-bit images (files, ``uint8`` arrays, ``uint8`` datasets such as TFDS images) become float32 with
  their values unchanged (0–255), or ``low + pixel / 255 * (high - low)`` with ``value_range=(low,
  high)`` — the formula of ``tfattr explain --value-range`` (same float32 operations, same bits);
* other numeric images are cast to float32 and used as they are (``value_range`` is refused for them:
  it could not say what their values mean);
* ``image_size=(h, w)`` resizes by area averaging (OpenCV ``INTER_AREA``, as ``tfattr explain
  --size``), before the scaling, in 8 bits for 8-bit images; an image of that size already is left as
  it is. Without ``image_size`` every image must have the size of the source's first usable item.

Bad items — a corrupt or unreadable file, an image of another size (without ``image_size``), of
another rank or with NaN or infinite values — are an :class:`~tfattr.errors.InvalidInputError` naming
the item (index and id) with ``on_error="raise"``; with ``on_error="skip"`` the item keeps its index,
its row of the batch is zeros and ``Batch.errors`` holds ``(index, id, message)``: item indices never
shift, so ids and a resumed run stay aligned. Labels are checked against the model's number of classes
by :func:`check_labels` (the stream does not know it).

Example:
    >>> s = stream("photos/", batch=32, image_size=(224, 224), value_range=(0, 1), labels="folders")
    >>> for b in s:
    ...     maps = method.attribute(b.images, target=b.labels)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import stat
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfattr.core.image_headers import header_size
from tfattr.core.keys import array_digest
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["Batch", "Stream", "stream", "check_labels", "decode_image_file", "IMAGE_SUFFIXES", "MAX_PIXELS",
           "MAX_BATCHES_IN_FLIGHT"]

#: the file name endings a folder source reads (compared case-insensitively); other files are ignored
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

#: the most pixels one image file may decode to (as ``tfattr explain``: 10⁸, 300 MB as 8-bit RGB)
MAX_PIXELS = 100_000_000

ON_ERROR = ("raise", "skip")

#: batches prepared at once under ``decode_threads=tf.data.AUTOTUNE`` where a batch is prepared by one call
#: (files, arrays): the memory of a many-core machine stays a few batches, and 4 cores decode ~1,800
#: ImageNet-size JPEGs a second, more than attribution consumes
MAX_BATCHES_IN_FLIGHT = 4


# ----------------------------------------------------------------------------------------------- batches


@dataclasses.dataclass(frozen=True, eq=False)
class Batch:
    """Items ``[index0, index0 + len(ids))`` of a source.

    Attributes:
        index0: the index of the first item in the source (batch ``k`` of a stream: ``k * batch``).
        ids: one string per item: a file's path relative to the folder (or as given in a list of
            files; bytes of a file name that are not UTF-8 shown as ``\\xNN``), the ``id_key`` field, else
            the item's index as a string.
        images: ``(n, *item_shape)`` float32; the rows of items in ``errors`` are zeros.
        labels: ``(n,)`` labels as the source gives them (NumPy), or ``None`` for a source without labels.
        errors: ``(index, id, message)`` of each item that could not be used (``on_error="skip"``).
    """

    index0: int
    ids: List[str]
    images: np.ndarray
    labels: Optional[np.ndarray]
    errors: List[Tuple[int, str, str]]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def valid(self) -> np.ndarray:
        """``(n,)`` bool: False for the items in :attr:`errors` (their images are placeholders)."""
        mask = np.ones(len(self.ids), dtype=bool)
        for index, _, _ in self.errors:
            mask[index - self.index0] = False
        return mask


class _ItemError(Exception):
    """One item cannot be used; the message says why (without naming the item)."""


def _item_error(index: int, item_id: str, message: str) -> InvalidInputError:
    return InvalidInputError(
        f"`data`: cannot use item {index} (id {item_id!r}): {message}. Pass on_error=\"skip\" to go on without it "
        f"(it is then reported in the batch's errors, its image a zero placeholder). "
        + received(f"item {index}", item_id))


# ----------------------------------------------------------------------------------------------- decoding


_header_size = header_size  # the reader `tfattr explain` uses (tfattr.core.image_headers)


def _read_file(path: str) -> bytes:
    """A file's bytes; a missing, unreadable, irregular or oversized file is an :class:`_ItemError`."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise _ItemError("cannot read the file: it is a directory")
        if not stat.S_ISREG(info.st_mode):  # /dev/zero, a FIFO: never ends
            raise _ItemError("cannot read the file: not a regular file")
        if info.st_size > 4 * MAX_PIXELS:
            raise _ItemError(f"the file has {info.st_size} bytes, more than an image of at most {MAX_PIXELS} "
                             "pixels takes")
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise _ItemError(f"cannot read the file: {error.strerror or error}") from None


def _decode_uint8(data: bytes, channels: int, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Encoded image bytes as ``(H, W, channels)`` uint8 RGB or grey, resized to ``size`` (``None``: as it is),
    exactly as ``tfattr explain`` decodes ``--images`` (``tfattr.cli._decode_image``): OpenCV, a JPEG far
    larger than ``size`` decoded at 1/2, 1/4 or 1/8 of its side by the decoder (never below ``size``),
    area averaging (``INTER_AREA``) in 8 bits, then BGR → RGB."""
    import cv2

    if not data:
        raise _ItemError("cannot decode the image: the file is empty")
    # the first 64 KiB, or all of it for a JPEG or TIFF whose size is not in them (as ``tfattr explain``)
    shape = _header_size(data[:65536])
    if shape is None and len(data) > 65536 and (data[:2] == b"\xff\xd8" or data[:4] in (b"II*\x00", b"MM\x00*")):
        shape = _header_size(data)
    if shape is not None and shape[0] * shape[1] > MAX_PIXELS:
        raise _ItemError(f"the image is {shape[1]}×{shape[0]} pixels, more than the {MAX_PIXELS} an image may have")
    factor = 1
    if size is not None and shape is not None and data[:2] == b"\xff\xd8":
        # as the CLI: the reduced image stays at least as large as ``size`` in both orientations
        factor = next((f for f in (8, 4, 2) if min(shape) // f >= max(size)), 1)
    flag = {(False, 1): cv2.IMREAD_COLOR, (False, 2): cv2.IMREAD_REDUCED_COLOR_2,
            (False, 4): cv2.IMREAD_REDUCED_COLOR_4, (False, 8): cv2.IMREAD_REDUCED_COLOR_8,
            (True, 1): cv2.IMREAD_GRAYSCALE, (True, 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
            (True, 4): cv2.IMREAD_REDUCED_GRAYSCALE_4, (True, 8): cv2.IMREAD_REDUCED_GRAYSCALE_8}[channels == 1, factor]
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    except cv2.error:  # OpenCV's own size limit, a decoder failure
        image = None
    if image is None or image.size == 0:
        raise _ItemError("cannot decode the image: not a PNG, JPEG, BMP or GIF image OpenCV can decode, or a "
                         "truncated file")
    if image.shape[0] * image.shape[1] * factor * factor > MAX_PIXELS:
        raise _ItemError(f"the image is about {image.shape[1] * factor}×{image.shape[0] * factor} pixels, more than "
                         f"the {MAX_PIXELS} an image may have")
    if size is not None and image.shape[:2] != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        return image[..., None]
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # an exact channel swap, faster than a strided copy


def _resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``image`` (H, W, C) resized to ``size`` by area averaging (OpenCV ``INTER_AREA``), its dtype kept."""
    import cv2

    if image.shape[:2] == tuple(size):
        return image
    channels = image.shape[2]
    if channels <= 4:
        out = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    else:  # OpenCV resizes at most 4 channels at once
        out = np.concatenate([cv2.resize(image[..., c:c + 4], (size[1], size[0]), interpolation=cv2.INTER_AREA)
                              .reshape(size[0], size[1], -1) for c in range(0, channels, 4)], axis=-1)
    return out.reshape(size[0], size[1], channels)


def _scale_uint8(image: np.ndarray, value_range) -> np.ndarray:
    """8-bit pixels as float32: unchanged, or ``low + p / 255 * (high - low)`` (``tfattr explain``'s formula)."""
    if value_range is None:
        return image.astype(np.float32)
    low, high = value_range
    return low + image.astype(np.float32) / np.float32(255.0) * np.float32(high - low)


def decode_image_file(path_or_bytes, image_size=None, *, channels: int = 3, value_range=None) -> np.ndarray:
    """One image file (a path, or its bytes) as a float32 ``(H, W, channels)`` image, as :func:`stream` gives it.

    Args:
        path_or_bytes: a path (str or ``os.PathLike``) or the encoded bytes of a PNG, JPEG, BMP or GIF.
        image_size: ``(h, w)`` to resize to by area averaging (OpenCV ``INTER_AREA``), or ``None``.
        channels: 3 (RGB, alpha dropped) or 1 (grey).
        value_range: ``None`` (pixel values 0–255 as float32) or ``(low, high)``: ``low + p/255*(high-low)``.

    Raises:
        InvalidInputError: the file cannot be read or decoded, or is larger than :data:`MAX_PIXELS`;
            the message names the path (or says "bytes") and ends ``Received: …``.
    """
    image_size = _check_image_size(image_size)
    _check_channels(channels, allow_none=False)
    value_range = _check_value_range(value_range)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        name, data = "bytes", bytes(path_or_bytes)
    elif isinstance(path_or_bytes, (str, os.PathLike)):
        name, data = os.fspath(path_or_bytes), None
    else:
        raise InvalidTypeError("`path_or_bytes` must be a path or the bytes of an image file. "
                               + received("path_or_bytes", type(path_or_bytes).__name__))
    try:
        if data is None:
            data = _read_file(name)
        image = _decode_uint8(data, channels, image_size)
    except _ItemError as error:
        what = f"image file {name!r}" if name != "bytes" else f"image bytes ({len(data)} bytes)"
        raise InvalidInputError(f"`path_or_bytes`: cannot use the {what}: {error}. "
                                + received("path_or_bytes", name if name != "bytes" else data[:16])) from None
    return _scale_uint8(image, value_range)


# ----------------------------------------------------------------------------------------------- arguments


def _check_image_size(image_size):
    if image_size is None:
        return None
    try:
        size = tuple(int(v) for v in image_size)
        ok = len(size) == 2 and all(s >= 1 and s == v for s, v in zip(size, image_size))
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(image_size, (str, bytes)) or any(isinstance(v, bool) for v in image_size):
        raise InvalidInputError("`image_size` must be None or (height, width), two positive integers. "
                                + received("image_size", image_size))
    if size[0] * size[1] > MAX_PIXELS:  # a batch of them would not fit in memory
        raise InvalidInputError(f"`image_size`: {size[0]}×{size[1]} is more than the {MAX_PIXELS} pixels an image may "
                                "have. " + received("image_size", image_size))
    return size


def _check_channels(channels, allow_none=True):
    if (channels is None and allow_none) or (not isinstance(channels, bool) and channels in (1, 3)):
        return channels
    raise InvalidInputError("`channels` must be 1 (grey) or 3 (RGB)" + (" or None (the source's own)" if allow_none
                                                                       else "") + ". " + received("channels", channels))


def _check_value_range(value_range):
    if value_range is None:
        return None
    try:
        low, high = (float(v) for v in value_range)
        ok = math.isfinite(low) and math.isfinite(high) and low < high and not isinstance(value_range, (str, bytes))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidInputError("`value_range` must be None or (low, high), finite numbers with low < high. "
                                + received("value_range", value_range))
    return (low, high)


def _is_numeric(dtype: np.dtype) -> bool:
    """Integers and floats, the floats of ``ml_dtypes`` (``bfloat16``, ``float8_*``: NumPy kind ``V``) included."""
    return dtype.kind in "uif" or (dtype.kind == "V" and dtype.name.startswith(("bfloat16", "float")))


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"`{name}` must be an integer ≥ {minimum}. " + received(name, value))
    return int(value)


# ----------------------------------------------------------------------------------------------- items


class _Items:
    """Turns one item (encoded bytes or an array) into a float32 image of the stream's item shape."""

    def __init__(self, image_size, channels, value_range):
        self.image_size = image_size
        self.channels = channels
        self.value_range = value_range
        self.item_shape: Optional[Tuple[int, ...]] = None  # set once known

    def encoded(self, data: bytes) -> np.ndarray:
        return self._finish(_decode_uint8(data, self.channels or 3, self.image_size))

    def raw(self, image) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype.kind in "SOU" and image.ndim == 0:  # an encoded image in a string tensor
            return self.encoded(image.item())
        if not _is_numeric(image.dtype):
            raise _ItemError(f"the image has dtype {image.dtype}; images are numeric (uint8 or float)")
        if image.ndim != 3:
            raise _ItemError(f"the image has shape {image.shape}; an image is (height, width, channels)")
        if 0 in image.shape:
            raise _ItemError(f"the image has shape {image.shape}: no pixels")
        if self.channels is not None and image.shape[2] != self.channels:
            raise _ItemError(f"the image has {image.shape[2]} channels, not channels={self.channels}")
        if image.dtype == np.uint8:
            return self._finish(image)
        with np.errstate(over="ignore"):  # a finite float64 beyond float32's range: named below
            cast = image.astype(np.float32)
        if not np.all(np.isfinite(cast)):
            finite = np.isfinite(image if image.dtype.kind == "f" else cast)  # ints, bfloat16: exact casts
            bad = int(np.size(image) - np.count_nonzero(finite))
            if bad:
                raise _ItemError(f"the image has {bad} NaN or infinite values")
            large = int(np.size(image) - np.count_nonzero(np.isfinite(cast)))
            raise _ItemError(f"the image has {large} value{'s' * (large > 1)} beyond float32's range (±3.4e38)")
        return self._finish(cast)

    def _finish(self, image: np.ndarray) -> np.ndarray:
        if self.image_size is not None:
            image = _resize(image, self.image_size)
        if self.item_shape is not None and image.shape[:2] == self.item_shape[:2] and image.shape != self.item_shape:
            raise _ItemError(f"the image has {image.shape[2]} channels; the stream's images have {self.item_shape[2]}")
        if self.item_shape is not None and image.shape != self.item_shape:
            raise _ItemError(f"the image has shape {image.shape} (height, width, channels); the stream's images have "
                             f"shape {self.item_shape} (the first item's); pass image_size=(height, width) to resize "
                             "every image")
        return _scale_uint8(image, self.value_range) if image.dtype == np.uint8 else image.astype(np.float32)

    def guarded(self, function: Callable, argument) -> Tuple[np.ndarray, bool, str]:
        """``(image, True, "")`` or ``(zeros, False, message)``."""
        try:
            return function(argument), True, ""
        except _ItemError as error:
            return np.zeros(self.item_shape, np.float32), False, str(error)


def _pipeline_error(kind: str, where: str, error) -> InvalidInputError:
    """A ``tf.errors.OpError`` raised inside a dataset's own pipeline, as a named error."""
    first_line = (re.sub(r"^\{\{[^}]*\}\}\s*", "", str(error.message).strip()).splitlines() or [""])[0]
    return InvalidInputError(
        f"`data`: the {kind} failed while producing {where}: {type(error).__name__}: {first_line}. The error arose "
        "inside the tf.data pipeline, so tfattr cannot tell which item it was and on_error=\"skip\" cannot skip "
        "it; fix or filter the data. " + received("data", kind))


def _as_id(value) -> str:
    value = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return _storable(str(value))


# ----------------------------------------------------------------------------------------------- sources


class _Random:
    """A source with random access (files, arrays): ``load(i)`` prepares item ``i``; ids and labels known."""

    random_access = True

    def __init__(self, kind, n, ids, labels, load: Callable[[int], Any], description, class_names=None):
        self.kind, self.n, self.ids, self.labels, self.load = kind, n, ids, labels, load
        self.description, self.class_names = description, class_names


class _Sequential:
    """A source read in order (a ``tf.data.Dataset``, TFDS): elements ``(image, label, id)`` from tf.data."""

    random_access = False

    def __init__(self, kind, dataset, image_of, label_of, id_of, n, description, class_names=None,
                 num_classes=None, after_skip=None):
        self.kind, self.dataset, self.n, self.description = kind, dataset, n, description
        self.image_of, self.label_of, self.id_of = image_of, label_of, id_of
        self.class_names, self.num_classes, self.after_skip = class_names, num_classes, after_skip

    def read(self, start: int = 0):
        """The elements from ``start`` on: skipped before ``after_skip`` (TFDS: before decoding)."""
        dataset = self.dataset.skip(start) if start else self.dataset
        return self.after_skip(dataset) if self.after_skip is not None else dataset


def _walk_folder(folder: str) -> Tuple[List[str], List[str]]:
    """``(files, classes)``: the relative POSIX paths of the image files under ``folder``, sorted, and the
    names of its first-level sub-folders, sorted (hidden files and folders, and ``lost+found``, left out of both).

    Symbolic links to folders are followed (a class folder linked from elsewhere is read), except a link
    back to one of its own ancestors (a loop: its files are read once, under their first path). A folder
    that cannot be listed is an error naming it: its images are never silently left out."""
    found, classes = [], []
    top = os.stat(folder)
    stack = [(folder, "", frozenset({(top.st_dev, top.st_ino)}))]
    while stack:
        path, relative, ancestors = stack.pop()
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
            for entry in entries:
                name = entry.name
                if name.startswith(".") or name == "lost+found":  # hidden, a file system's recovery folder
                    continue
                try:
                    info = entry.stat() if entry.is_dir() else None  # both follow symbolic links
                except OSError:  # a broken link, a file gone since the listing: read (and named) as a file
                    info = None
                if info is not None:
                    if (info.st_dev, info.st_ino) not in ancestors:
                        if not relative:
                            classes.append(name)
                        stack.append((entry.path, f"{relative}{name}/", ancestors | {(info.st_dev, info.st_ino)}))
                elif name.lower().endswith(IMAGE_SUFFIXES):
                    found.append(relative + name)
        except OSError as error:
            raise InvalidInputError(f"`data`: cannot list the folder {path!r}: {error.strerror or error}; its images "
                                    "would be left out. " + received("data", folder)) from None
    return sorted(found), sorted(classes)


def _storable(text: str) -> str:
    """``text`` as a string any store can write (UTF-8): the bytes of a file name that are not UTF-8 (which
    Python holds as lone surrogates) shown as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _files_digest(paths: Sequence[str], names: Optional[Sequence[str]] = None) -> str:
    """SHA-256 of each file's name (``names``, else its path), size and modification time (``None`` for a
    file that cannot be read)."""
    entries = []
    for path, name in zip(paths, names if names is not None else paths):
        try:
            info = os.stat(path)
            entries.append([name, info.st_size, info.st_mtime_ns])
        except OSError:
            entries.append([name, None, None])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _folder_source(folder: str, labels, items: _Items) -> _Random:
    names, folders = _walk_folder(folder)
    if not names:
        raise InvalidInputError(f"`data`: the folder {folder!r} holds no image file (ending "
                                f"{', '.join(IMAGE_SUFFIXES)}, "
                                "searched in its sub-folders too). " + received("data", folder))
    class_names, label_array = None, None
    if labels is not None:
        top = [name.split("/")[0] if "/" in name else None for name in names]
        loose = [name for name, t in zip(names, top) if t is None]
        if loose:
            raise InvalidInputError(f"`labels`: labels come from sub-folder names, and {len(loose)} image(s) sit "
                                    f"directly in {folder!r} (e.g. {loose[0]!r}); move them into a class folder. "
                                    + received("labels", labels))
        if isinstance(labels, str) and labels == "folders":
            class_names = folders  # every first-level sub-folder, an empty one too (as Keras numbers them)
        elif isinstance(labels, (list, tuple)) and labels and all(isinstance(c, str) for c in labels) \
                and len(set(labels)) == len(labels):
            class_names = list(labels)
            unknown = sorted(set(top) - set(class_names))
            if unknown:
                raise InvalidInputError(f"`labels`: the folder has class folders not in the list: {unknown}. "
                                        + received("labels", labels))
        else:
            raise InvalidInputError('`labels` must be None, "folders" (classes: the sub-folder names, sorted) or a '
                                    "list of distinct sub-folder names (the class order). "
                                    + received("labels", labels))
        index = {name: k for k, name in enumerate(class_names)}
        label_array = np.array([index[t] for t in top], dtype=np.int64)
    paths = [os.path.join(folder, *name.split("/")) for name in names]
    description = {"kind": "folder", "folder": os.path.realpath(folder), "files": len(names),
                   "files_sha256": _files_digest(paths, names), "labels": class_names}
    return _Random("folder", len(names), [_storable(name) for name in names], label_array,
                   lambda i: items.encoded(_read_file(paths[i])), description, class_names)


def _files_source(paths, labels, items: _Items) -> _Random:
    paths = [os.fspath(p) for p in paths]
    label_array = None
    if labels is not None:
        label_array = _array_labels(labels, len(paths))
    description = {"kind": "files", "files": len(paths), "files_sha256": _files_digest(paths)}
    return _Random("files", len(paths), [_storable(path) for path in paths], label_array,
                   lambda i: items.encoded(_read_file(paths[i])), description)


def _array_labels(labels, n, name="labels"):
    labels = np.asarray(labels)
    if labels.ndim == 0 or labels.shape[0] != n:
        raise InvalidInputError(f"`{name}`: one label per image is needed ({n}); got shape {labels.shape}. "
                                + received(name, labels.shape))
    if labels.dtype.kind not in "uif" or labels.dtype.kind == "b":
        raise InvalidTypeError(f"`{name}`: labels are integers (class indices); got dtype {labels.dtype}. "
                               + received(name, str(labels.dtype)))
    return labels


def _blockwise_digest(array: np.ndarray, block_bytes: int = 16 << 20) -> str:
    """:func:`tfattr.core.keys.array_digest` (the same SHA-256: dtype, shape, C-order bytes) taken a block of
    items at a time, so a memory-mapped array larger than memory is never copied whole."""
    if array.ndim == 0 or array.shape[0] == 0:
        return array_digest(array)
    hasher = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    step = max(1, block_bytes // max(1, array[:1].nbytes))
    for start in range(0, array.shape[0], step):
        hasher.update(np.ascontiguousarray(array[start:start + step]).tobytes())
    return hasher.hexdigest()


def _arrays_source(images, labels, ids, items: _Items) -> _Random:
    images = np.asarray(images)
    if not _is_numeric(images.dtype):
        raise InvalidTypeError(f"`data`: images are a numeric array (uint8 or float); got dtype {images.dtype}. "
                               + received("data", str(images.dtype)))
    if images.ndim != 4:
        hint = " (grey images of shape (N, H, W): pass images[..., None])" if images.ndim == 3 else ""
        raise InvalidInputError(f"`data`: images are an array of shape (N, height, width, channels){hint}. "
                                + received("data.shape", images.shape))
    if 0 in images.shape[1:]:
        raise InvalidInputError("`data`: the images have no pixels (a height, width or channel count of 0). "
                                + received("data.shape", images.shape))
    if items.value_range is not None and images.dtype != np.uint8:
        raise InvalidInputError(f"`value_range` scales 8-bit images; these images are {images.dtype} and are used as "
                                "they are: scale them to the model's range yourself, or drop value_range. "
                                + received("value_range", items.value_range))
    if items.channels is not None and images.shape[3] != items.channels:
        raise InvalidInputError(f"`channels`={items.channels}, and the images have {images.shape[3]} channels. "
                                + received("data.shape", images.shape))
    n = images.shape[0]
    label_array = None if labels is None else _array_labels(labels, n)
    if ids is None:
        id_list = [str(i) for i in range(n)]
    else:
        id_array = np.asarray(ids)
        if id_array.ndim != 1 or id_array.shape[0] != n:
            raise InvalidInputError(f"`ids`: one id per image is needed ({n}). " + received("ids", id_array.shape))
        id_list = [_as_id(v) for v in id_array]
    description = {"kind": "arrays", "images": {"dtype": images.dtype.str, "shape": list(images.shape),
                                                "sha256": _blockwise_digest(images)},
                   "labels": None if label_array is None else array_digest(label_array),
                   "ids": None if ids is None else hashlib.sha256(json.dumps(id_list).encode()).hexdigest()}
    source = _Random("arrays", n, id_list, label_array, lambda i: items.raw(images[i]), description)
    source.item_shape_hint = tuple(images.shape[1:])
    return source


def _element_parts(spec, image_key, label_key, id_key, what):
    """Functions picking ``(image, label, id)`` out of a dataset element of structure ``spec``."""
    if isinstance(spec, dict):
        if image_key not in spec:
            raise InvalidInputError(f"`image_key`: the {what}'s elements are dicts with keys {sorted(spec)}, without "
                                    f"{image_key!r}. " + received("image_key", image_key))
        if id_key is not None and id_key not in spec:
            raise InvalidInputError(f"`id_key`: the {what}'s elements are dicts with keys {sorted(spec)}, without "
                                    f"{id_key!r}. " + received("id_key", id_key))
        return (spec[image_key], lambda e: e[image_key],
                (lambda e: e[label_key]) if label_key is not None and label_key in spec else None,
                (lambda e: e[id_key]) if id_key is not None else None)
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], tf.TensorSpec):
            raise InvalidInputError(f"`data`: the {what}'s tuple elements must be (image, label). "
                                    + received("element_spec", spec))
        if id_key is not None:
            raise InvalidInputError(f"`id_key`: the {what}'s elements are (image, label) tuples, without fields. "
                                    + received("id_key", id_key))
        return spec[0], lambda e: e[0], lambda e: e[1], None
    if isinstance(spec, tf.TensorSpec):
        if id_key is not None:
            raise InvalidInputError(f"`id_key`: the {what}'s elements are images, without fields. "
                                    + received("id_key", id_key))
        return spec, lambda e: e, None, None
    raise InvalidInputError(f"`data`: the {what}'s elements must be images, (image, label) tuples or dicts. "
                            + received("element_spec", spec))


def _unreproducible_stage(dataset) -> Optional[str]:
    """What makes ``dataset``'s order change from pass to pass, or ``None``: a ``shuffle`` that reshuffles at
    every pass (its default) or has no seed, ``Dataset.random`` without a seed, a parallel ``map`` or
    ``batch`` with ``deterministic=False`` (explicit, it overrides the stream's deterministic option).
    Read from the dataset objects' stages (TensorFlow internals: a stage it cannot read is passed over;
    functions inside ``interleave`` and ``flat_map`` are not looked into)."""
    seen, stack = set(), [dataset]
    while stack:
        stage = stack.pop()
        if id(stage) in seen:
            continue
        seen.add(id(stage))
        attributes = getattr(stage, "__dict__", {})
        name = type(stage).__name__
        try:
            seeds = [int(attributes[k]) for k in ("_seed", "_seed2") if k in attributes]
            if "Shuffle" in name and attributes.get("_reshuffle_each_iteration") is True:
                return ("a shuffle that reshuffles at every pass: pass seed= and reshuffle_each_iteration=False, or "
                        "shuffle=False to list_files / image_dataset_from_directory")
            if ("Shuffle" in name or "Random" in name) and seeds and not any(seeds):
                return f"{name.strip('_')} without a seed: pass seed= (and reshuffle_each_iteration=False)"
            if attributes.get("_deterministic") == "false":
                return f"{name.strip('_')} with deterministic=False: drop that argument"
            stack.extend(stage._inputs())
        except Exception:  # TensorFlow internals changed: this stage cannot be read
            continue
    return None


def _element_parts_specs(spec, image_key, label_key, id_key):
    """The specs ``(label, id)`` of an element of structure ``spec`` (``None`` where there is none)."""
    if isinstance(spec, dict):
        return (spec.get(label_key) if label_key is not None else None), (spec.get(id_key) if id_key else None)
    if isinstance(spec, tuple):
        return spec[1], None
    return None, None


def _dataset_source(dataset, kind, image_key, label_key, id_key, items: _Items, description, class_names=None,
                    num_classes=None, what="dataset", after_skip=None) -> _Sequential:
    spec = (after_skip(dataset) if after_skip is not None else dataset).element_spec
    image_spec, image_of, label_of, id_of = _element_parts(spec, image_key, label_key, id_key, what)
    if not isinstance(image_spec, tf.TensorSpec):
        raise InvalidInputError(f"`data`: the {what}'s images must be dense tensors. "
                                + received("image spec", image_spec))
    parts = _element_parts_specs(spec, image_key, label_key, id_key)
    if parts[0] is not None and not isinstance(parts[0], tf.TensorSpec):
        raise InvalidInputError(f"`label_key`: the {what}'s labels must be one tensor per element (one class index); "
                                "these are nested (several targets?): map the dataset to (image, label) (dict "
                                "elements: or pass label_key=None). " + received("label spec", parts[0]))
    if parts[1] is not None and not (isinstance(parts[1], tf.TensorSpec) and parts[1].shape.rank == 0):
        raise InvalidInputError(f"`id_key`: an id is one scalar per element (a string or a number); the {what}'s "
                                f"{id_key!r} field is not. " + received("id spec", parts[1]))
    dtype = image_spec.dtype
    if dtype == tf.string:
        if image_spec.shape.rank not in (None, 0):
            raise InvalidInputError("`data`: encoded images must be one string per element. "
                                    + received("image spec", image_spec))
    elif not (dtype.is_integer or dtype.is_floating) or dtype == tf.bool:
        raise InvalidTypeError(f"`data`: images are numeric (uint8 or float) or encoded image strings; the {what}'s "
                               f"are {dtype.name}. " + received("image spec", image_spec))
    elif image_spec.shape.rank is not None and image_spec.shape.rank != 3:
        hint = {2: " (grey images of shape (H, W): map tf.expand_dims(image, -1))",
                4: " (a batched dataset: pass dataset.unbatch())"}.get(image_spec.shape.rank, "")
        raise InvalidInputError(f"`data`: each image is (height, width, channels){hint}. "
                                + received("image spec", image_spec))
    if dtype != tf.string and image_spec.shape.rank == 3 and 0 in image_spec.shape.as_list():
        raise InvalidInputError(f"`data`: the {what}'s images have no pixels (a height, width or channel count of 0). "
                                + received("image spec", image_spec))
    if items.value_range is not None and dtype not in (tf.string, tf.uint8):
        raise InvalidInputError(f"`value_range` scales 8-bit images; the {what}'s images are {dtype.name} and are used "
                                "as they are: scale them to the model's range yourself, or drop value_range. "
                                + received("value_range", items.value_range))
    if items.channels is not None and dtype != tf.string and image_spec.shape.rank == 3 \
            and image_spec.shape[2] is not None and image_spec.shape[2] != items.channels:
        raise InvalidInputError(f"`channels`={items.channels}, and the {what}'s images have {image_spec.shape[2]} "
                                "channels. " + received("image spec", image_spec))
    if kind == "dataset":  # (TFDS reads its records in order: shuffle_files=False)
        unreproducible = _unreproducible_stage(dataset)
        if unreproducible is not None:
            raise InvalidInputError(f"`data`: the {what}'s order changes from pass to pass ({unreproducible}). Item "
                                    "ids are positions in that order, and a resumed run (skip_batches) would skip "
                                    "other items than the first run explained. " + received("data", dataset))
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise InvalidInputError(f"`data`: the {what} is infinite (a .repeat() without a count?); a stream must end. "
                                + received("data", dataset))
    n = cardinality if cardinality >= 0 else None
    description = dict(description, element_spec=repr(spec), cardinality=n, image_key=image_key,
                       label_key=label_key if label_of is not None else None, id_key=id_key)
    source = _Sequential(kind, dataset, image_of, label_of, id_of, n, description, class_names, num_classes,
                         after_skip)
    source.image_spec = image_spec
    return source


def _tfds_source(name, split, data_dir, image_key, label_key, id_key, items: _Items) -> _Sequential:
    import tensorflow_datasets as tfds

    if split is None:
        raise InvalidInputError("`split`: a TFDS dataset is read one split at a time (e.g. \"test\", "
                                "\"validation[:1000]\"). " + received("split", split))
    if isinstance(split, (list, tuple, dict, set)):  # tfds.load would return several datasets
        raise InvalidInputError("`split`: one split is streamed at a time; several splits in one stream are one "
                                "split expression, e.g. 'train+test'. " + received("split", split))
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        image_feature = builder.info.features[image_key] if image_key in builder.info.features else None
        # images read as their encoded bytes, decoded after the skip of a resume (by TFDS's own decoder: the
        # pixels of tfds.load); skipping decoded images would decode every skipped one
        encoded = isinstance(image_feature, tfds.features.Image)
        # id_key="tfds_id": TFDS's own record ids ("mnist-train.tfrecord-00000-of-00001__7")
        read_config = tfds.ReadConfig(add_tfds_id=True) if id_key == "tfds_id" else None
        dataset, info = tfds.load(name, split=split, data_dir=data_dir, with_info=True, shuffle_files=False,
                                  decoders={image_key: tfds.decode.SkipDecoding()} if encoded else None,
                                  read_config=read_config)
    except Exception as error:  # an unknown name, an unprepared dataset without internet, a bad split
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise InvalidInputError(f"`data`: {name!r} is no folder, and cannot be loaded as a TFDS dataset (split "
                                f"{split!r}, data_dir {data_dir!r}): {type(error).__name__}: {first_line}. "
                                + received("data", name)) from None
    feature = info.features[label_key] if label_key in info.features else None
    class_names = list(feature.names) if getattr(feature, "names", None) else None
    num_classes = getattr(feature, "num_classes", None)
    description = {"kind": "tfds", "name": name, "split": str(split),
                   "data_dir": None if data_dir is None else os.path.abspath(os.fspath(data_dir)),
                   "version": str(info.version)}
    after_skip = None
    if encoded:
        def decode(element):
            return dict(element, **{image_key: image_feature.decode_example(element[image_key])})

        def after_skip(dataset):
            return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _dataset_source(dataset, "tfds", image_key, label_key, id_key, items, description, class_names,
                           num_classes, what=f"TFDS dataset {name!r}", after_skip=after_skip)


# ----------------------------------------------------------------------------------------------- stream


class Stream:
    """Batches of a source (see :func:`stream`); iterate it (again and again: each pass reads afresh).

    Attributes:
        description: JSON-able description of the data (kind, folder and file digest, TFDS name/split,
            array digests, dataset element spec, and the preprocessing options): it changes when the data
            or the preprocessing changes, so a resumed run can compare it with the first run's. A
            ``tf.data.Dataset`` cannot be digested without reading it: its description holds its element
            spec and cardinality only, and the user must keep it identical for a resume.
        num_items: the number of items, or ``None`` when unknown (a ``tf.data`` pipeline of unknown cardinality).
        num_batches: ``ceil(num_items / batch)`` or ``None``.
        item_shape: ``(height, width, channels)`` of every image.
        dtype: ``numpy.float32`` (the images' dtype).
        ids: every item's id (files, arrays), or ``None`` for a sequential source (they come with the batches).
        class_names: the classes of a folder's ``labels`` or of a TFDS label feature, else ``None``.
        num_classes: ``len(class_names)`` (or a TFDS label feature's), else ``None``.
        batch, skip_batches, on_error: the arguments of :func:`stream`.
    """

    def __init__(self, source, items: _Items, batch: int, skip_batches: int, on_error: str, decode_threads: int,
                 prefetch: int):
        self._source, self._items = source, items
        self.batch, self.skip_batches, self.on_error = batch, skip_batches, on_error
        self._threads, self._prefetch = decode_threads, prefetch
        self.kind = source.kind
        self.num_items = source.n
        self.num_batches = None if source.n is None else -(-source.n // batch)
        self.dtype = np.dtype(np.float32)
        self.class_names = source.class_names
        self.num_classes = getattr(source, "num_classes", None) or (None if source.class_names is None
                                                                   else len(source.class_names))
        self.ids = list(source.ids) if source.random_access else None
        if self.num_batches is not None and skip_batches > self.num_batches:
            raise InvalidInputError(f"`skip_batches`: the source has {self.num_batches} batches of {batch}. "
                                    + received("skip_batches", skip_batches))
        self._probe = None  # (index, id, digest) of a dataset's item read for the shape
        items.item_shape = self._first_shape()
        self.item_shape = items.item_shape
        self.description = dict(source.description, num_items=source.n, item_shape=list(self.item_shape),
                                image_size=None if items.image_size is None else list(items.image_size),
                                channels=int(self.item_shape[2]), value_range=None if items.value_range is None
                                else list(items.value_range))
        json.dumps(self.description)  # JSON-able, or a bug here

    def __repr__(self) -> str:
        return (f"Stream(kind={self.kind!r}, num_items={self.num_items}, batch={self.batch}, "
                f"item_shape={self.item_shape}, skip_batches={self.skip_batches})")

    def __len__(self) -> int:
        """The number of batches this stream yields (after ``skip_batches``); a TypeError when unknown."""
        if self.num_batches is None:
            raise TypeError("the stream's length is unknown (a tf.data pipeline of unknown cardinality)")
        return self.num_batches - self.skip_batches

    # -- the item shape: from the arguments, the static spec, or the first usable item
    def _first_shape(self) -> Tuple[int, int, int]:
        items, source = self._items, self._source
        size = items.image_size
        static = None
        if source.kind == "arrays":
            static = source.item_shape_hint
        elif not source.random_access:
            spec = source.image_spec
            if spec.dtype != tf.string and spec.shape.rank == 3:
                static = tuple(spec.shape.as_list())
        if static is not None and static[2] is not None:
            if size is not None:
                return (size[0], size[1], static[2])
            if None not in static:
                return tuple(int(s) for s in static)
        if size is not None and source.kind in ("folder", "files"):
            return (size[0], size[1], items.channels or 3)
        return self._shape_of_first_item()

    def _shape_of_first_item(self) -> Tuple[int, int, int]:
        """The shape of the first item that can be used (read in order; a bad one raises in "raise" mode)."""
        items = self._items
        if self._source.random_access:
            candidates = ((i, self._source.ids[i], lambda i=i: self._source.load(i)) for i in range(self._source.n))
        else:
            source = self._source

            def generate():
                for i, element in enumerate(source.read()):
                    item_id = _as_id(source.id_of(element).numpy()) if source.id_of else str(i)
                    yield i, item_id, lambda e=element: items.raw(source.image_of(e).numpy())
            candidates = generate()
        first_error = None
        try:
            for index, item_id, load in candidates:
                try:
                    image = load()
                    if not self._source.random_access:  # checked when the pass reaches it (see __iter__)
                        self._probe = (index, item_id, hashlib.sha256(image.tobytes()).digest())
                    return image.shape
                except _ItemError as error:
                    if self.on_error == "raise":
                        raise _item_error(index, item_id, str(error)) from None
                    first_error = first_error or (index, item_id, str(error))
        except tf.errors.OpError as error:
            raise _pipeline_error(self.kind, "its first items (read for the image shape)", error) from None
        if first_error is None:
            raise InvalidInputError("`data`: the source holds no item. " + received("data", self.kind))
        raise InvalidInputError(f"`data`: no item of the source can be used (the first, item {first_error[0]} "
                                f"(id {first_error[1]!r}): {first_error[2]}). " + received("data", self.kind))

    # -- iteration
    def _pipeline(self):
        """The tf.data pipeline of the batches from ``skip_batches`` on: dicts of ``image`` (float32), ``ok``,
        ``message`` (and ``label``, ``id`` for a sequential source), NumPy at the end.

        Items are prepared by Python functions (OpenCV decoding, checks, resizing) called through
        ``tf.numpy_function`` in a parallel ``map``, one call per batch where the items allow it (files,
        arrays, datasets of one fixed image shape: one call per item costs ~0.1 ms of tf.data overhead, more
        than decoding a small PNG), else one per item; OpenCV releases the GIL while it decodes."""
        items, source, shape, batch = self._items, self._source, self._items.item_shape, self.batch
        threads = self._threads
        per_batch = min(MAX_BATCHES_IN_FLIGHT, os.cpu_count() or 1) if threads == tf.data.AUTOTUNE else threads

        def prepared(function, arguments):
            image, ok, message = tf.numpy_function(function, arguments, (tf.float32, tf.bool, tf.string),
                                                   stateful=False)
            return {"image": tf.ensure_shape(image, (None, *shape)), "ok": tf.ensure_shape(ok, (None,)),
                    "message": tf.ensure_shape(message, (None,))}

        def group(function, values):
            """``function`` on each value, guarded: the arrays of one batch."""
            images = np.empty((len(values), *shape), np.float32)
            ok = np.ones(len(values), bool)
            messages = np.full(len(values), b"", dtype=object)
            for j, value in enumerate(values):
                images[j], ok[j], message = items.guarded(function, value)
                messages[j] = message.encode()
            return images, ok, messages

        if source.random_access:
            def load(k):
                return group(source.load, range(int(k) * batch, min((int(k) + 1) * batch, source.n)))

            dataset = tf.data.Dataset.range(self.skip_batches, self.num_batches)
            dataset = dataset.map(lambda k: prepared(load, [k]), num_parallel_calls=per_batch, deterministic=True)
        else:
            def fields(*parts):  # tf.data passes a tuple element's parts as arguments
                e = parts[0] if len(parts) == 1 else parts
                out = {"image": source.image_of(e)}
                if source.label_of is not None:
                    out["label"] = source.label_of(e)
                if source.id_of is not None:
                    out["id"] = source.id_of(e)
                return out

            def finish(e, function):
                return dict(e, **prepared(function, [e["image"]]))

            # plain Python, traced as it is (AutoGraph would try to parse the accessors' lambdas, and warn)
            plain = tf.autograph.experimental.do_not_convert
            dataset = source.read(self.skip_batches * batch).map(plain(fields))
            spec = dataset.element_spec["image"]
            if spec.dtype != tf.string and spec.shape.is_fully_defined():  # batch first, one call per batch
                dataset = dataset.batch(batch).map(plain(lambda e: finish(e, lambda x: group(items.raw, x))),
                                                   num_parallel_calls=per_batch, deterministic=True)
            else:  # images of several shapes or encoded: one call per item, then batch
                def one(image):
                    images, ok, messages = group(items.raw, [image])
                    return images[0], ok[0], messages[0]

                def single(e):
                    image, ok, message = tf.numpy_function(one, [e["image"]], (tf.float32, tf.bool, tf.string),
                                                           stateful=False)
                    return dict(e, image=tf.ensure_shape(image, shape), ok=tf.ensure_shape(ok, ()),
                                message=tf.ensure_shape(message, ()))

                dataset = dataset.map(plain(single), num_parallel_calls=threads, deterministic=True).batch(batch)
        options = tf.data.Options()
        options.deterministic = True
        # no autotuning thread (the parallelism and prefetch are set above; AUTOTUNE left in a user's own
        # maps becomes the core count): destroying the iterator at the end of a stream joins that thread
        # with the GIL held, and on a loaded 2-core machine it froze the whole process 4–15 s about one
        # run in five (bench_dataset.py; none in 15 runs without it)
        options.autotune.enabled = False
        return dataset.prefetch(self._prefetch).with_options(options)

    def __iter__(self):
        source = self._source
        index0 = self.skip_batches * self.batch
        iterator = self._pipeline().as_numpy_iterator()
        while True:
            try:
                element = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError as error:  # inside the user's pipeline (or TFDS's decoder): no item to name
                raise _pipeline_error(self.kind, f"items {index0} to {index0 + self.batch - 1} (the batch starting "
                                                 f"at item {index0})", error) from None
            images, ok, messages = element["image"], element["ok"], element["message"]
            n = len(images)
            if source.random_access:
                ids = source.ids[index0:index0 + n]
                labels = None if source.labels is None else source.labels[index0:index0 + n]
            else:
                ids = ([_as_id(v) for v in element["id"]] if "id" in element
                       else [str(i) for i in range(index0, index0 + n)])
                labels = element.get("label")
            if self._probe is not None and index0 <= self._probe[0] < index0 + n:
                k = self._probe[0] - index0
                if not ok[k] or hashlib.sha256(images[k].tobytes()).digest() != self._probe[2]:
                    raise InvalidInputError(
                        f"`data`: the {self.kind} gave another item {self._probe[0]} (id {self._probe[1]!r}) at this "
                        "pass than when its image shape was read: its elements change from pass to pass (a one-shot "
                        "Python iterator in from_generator? random augmentation?). A stream reads a dataset more than "
                        "once (and a resume reads it again): pass a generator function that starts afresh, and seed "
                        "any randomness. " + received("data", self.kind))
            errors = [(index0 + int(k), ids[k], messages[k].decode()) for k in np.flatnonzero(~ok)]
            if errors and self.on_error == "raise":
                raise _item_error(*errors[0])
            yield Batch(index0, list(ids), images, labels, errors)
            index0 += n


def stream(data, *, split=None, data_dir=None, batch: int, image_key: str = "image", label_key: str = "label",
           id_key: Optional[str] = None, labels=None, image_size=None, channels: Optional[int] = None,
           value_range=None, on_error: str = "raise", skip_batches: int = 0,
           decode_threads: int = tf.data.AUTOTUNE, prefetch: int = 2) -> Stream:
    """A :class:`Stream` of batches over ``data``, decoded and preprocessed in parallel with the consumer.

    Args:
        data: one of
            * a ``tf.data.Dataset`` whose elements are images, ``(image, label)`` tuples or dicts
              (``image_key``, ``label_key`` if present, ``id_key`` if given); images are ``(H, W, C)``
              numeric tensors or encoded image strings (decoded as image files are);
            * a TFDS name (``"mnist"``), loaded with ``tfds.load(data, split=split, data_dir=data_dir)``
              (dict elements; ``id_key`` e.g. ``"id"`` or ``"file_name"`` where the dataset has one, or
              ``"tfds_id"``: TFDS's record ids, ``"mnist-test.tfrecord-00000-of-00001__7"``);
            * a folder: its PNG, JPEG, BMP and GIF files (:data:`IMAGE_SUFFIXES`, any case; also in
              sub-folders, symbolic links to folders followed; hidden files and folders left out), in the
              order of their relative POSIX paths (code-point order), which are their ids;
            * a list of image file paths (ids: the paths as given);
            * an array ``(N, H, W, C)``, an ``(images, labels)`` tuple, or a dict of arrays (``image_key``,
              ``label_key`` and ``id_key`` entries); ids: the index, or the ``id_key`` entry.
        split, data_dir: the TFDS split (required for a TFDS name) and data folder.
        batch: items per batch; batch ``k`` holds items ``[k*batch, (k+1)*batch)`` (the last may be shorter).
        image_key, label_key, id_key: the fields of dict elements (a missing ``label_key``: no labels).
        labels: a folder's labels: ``None``, ``"folders"`` (the first-level sub-folder names, sorted, are
            the classes 0, 1, ..., an empty sub-folder included, as Keras' ``image_dataset_from_directory``)
            or a list of those names in class order; a list of files: one integer label per file.
        image_size: ``(h, w)`` to resize every image to by area averaging (OpenCV ``INTER_AREA``, as
            ``tfattr explain --size``); ``None``: every image must have the first usable item's size.
        channels: 1 (grey) or 3 (RGB) for decoded files (default 3, alpha dropped); for arrays and datasets
            a check of the channels they have (``None``: any).
        value_range: ``(low, high)``: 8-bit images become ``low + p/255*(high-low)`` (as ``tfattr explain
            --value-range``); ``None``: their 0–255 values as float32. Refused for float images.
        on_error: ``"raise"``: a bad item is an :class:`~tfattr.errors.InvalidInputError` naming it
            (index and id); ``"skip"``: it is reported in ``Batch.errors`` and its image is zeros.
        skip_batches: start at batch ``k`` (a resume): files and arrays are not read before it; a dataset
            skips ``k*batch`` elements (TFDS: before decoding where its reader allows).
        decode_threads: parallel preparing calls: of a batch each (files, arrays, datasets of one image
            shape) or of an item each (other datasets); ``tf.data.AUTOTUNE``: the cores, at most
            :data:`MAX_BATCHES_IN_FLIGHT` batches at once.
        prefetch: batches prepared ahead of the consumer.

    Raises:
        InvalidInputError, InvalidTypeError: a bad argument, an infinite dataset, images of a wrong rank or
            dtype (for the whole source); with ``on_error="raise"`` also the first unusable item.
    """
    batch = _positive_int("batch", batch)
    skip_batches = _positive_int("skip_batches", skip_batches, minimum=0)
    prefetch = _positive_int("prefetch", prefetch, minimum=0)
    if decode_threads != tf.data.AUTOTUNE:
        decode_threads = _positive_int("decode_threads", decode_threads)
    if not isinstance(on_error, str) or on_error not in ON_ERROR:
        raise InvalidInputError(f"`on_error` must be one of {ON_ERROR}. " + received("on_error", on_error))
    items = _Items(_check_image_size(image_size), _check_channels(channels), _check_value_range(value_range))
    if isinstance(data, tf.data.Dataset):
        if labels is not None:
            raise InvalidInputError("`labels`: a dataset's labels come with its elements (label_key or (image, "
                                    "label)). "
                                    + received("labels", labels))
        source = _dataset_source(data, "dataset", image_key, label_key, id_key, items,
                                 {"kind": "dataset", "repr": repr(data)})
    elif isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
        source = _folder_source(os.fspath(data), labels, items)
    elif isinstance(data, (str, os.PathLike)) and os.path.exists(data):
        raise InvalidInputError(f"`data`: {os.fspath(data)!r} is a file; a stream reads a folder of images or a list "
                                "of "
                                "image files (pass [path] for one file). " + received("data", os.fspath(data)))
    elif isinstance(data, os.PathLike):
        raise InvalidInputError(f"`data`: no folder {os.fspath(data)!r}. " + received("data", os.fspath(data)))
    elif isinstance(data, str) and not os.path.exists(data):
        if labels is not None:
            raise InvalidInputError("`labels`: a TFDS dataset's labels come with its elements (label_key). "
                                    + received("labels", labels))
        source = _tfds_source(data, split, data_dir, image_key, label_key, id_key, items)
    elif isinstance(data, (list, tuple)) and data and all(isinstance(p, (str, os.PathLike)) for p in data):
        source = _files_source(data, labels, items)
    else:
        source = _arrays_from(data, image_key, label_key, id_key, labels, items)
    return Stream(source, items, batch, skip_batches, on_error, decode_threads, prefetch)


def _arrays_from(data, image_key, label_key, id_key, labels, items):
    if isinstance(data, dict):
        if image_key not in data:
            raise InvalidInputError(f"`image_key`: the dict has keys {sorted(map(str, data))}, without {image_key!r}. "
                                    + received("image_key", image_key))
        if id_key is not None and id_key not in data:
            raise InvalidInputError(f"`id_key`: the dict has keys {sorted(map(str, data))}, without {id_key!r}. "
                                    + received("id_key", id_key))
        images, dict_labels = data[image_key], data.get(label_key)
        ids = data[id_key] if id_key is not None else None
    elif isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], (str, os.PathLike)):
        images, dict_labels, ids = data[0], data[1], None
    elif isinstance(data, (np.ndarray, tf.Tensor)):
        images, dict_labels, ids = data, None, None
    else:
        raise InvalidTypeError("`data` must be a tf.data.Dataset, a TFDS name, a folder, a list of image files, an "
                               "array (N, H, W, C), an (images, labels) tuple or a dict of arrays. "
                               + received("data", data if isinstance(data, str) else type(data).__name__))
    if labels is not None:
        if dict_labels is not None:
            raise InvalidInputError("`labels`: the data holds labels already. " + received("labels", labels))
        dict_labels = labels
    images = images.numpy() if isinstance(images, tf.Tensor) else np.asarray(images)
    return _arrays_source(images, dict_labels, ids, items)


def check_labels(labels, num_classes: int, ids: Sequence[str], on_error: str = "raise",
                 index0: int = 0) -> List[Tuple[int, str, str]]:
    """Check a batch's labels against the model's classes; the errors of ``on_error="skip"``.

    Args:
        labels: ``(n,)`` integer class indices (a batch's ``labels``).
        num_classes: the model's number of classes; a label must lie in ``[0, num_classes)``.
        ids: the items' ids (``Batch.ids``), for the messages.
        on_error: ``"raise"``: the first label out of range is an :class:`~tfattr.errors.InvalidInputError`
            naming the item; ``"skip"``: the list of ``(index, id, message)`` of those items.
        index0: the index of the first item (``Batch.index0``).

    Returns:
        ``[(index, id, message), ...]`` of the labels out of range (empty with ``"raise"``).

    Raises:
        InvalidTypeError: labels that are not integers (one-hot labels: pass ``argmax``), of another rank.
        InvalidInputError: ``on_error="raise"`` and a label out of range.
    """
    if not isinstance(on_error, str) or on_error not in ON_ERROR:
        raise InvalidInputError(f"`on_error` must be one of {ON_ERROR}. " + received("on_error", on_error))
    num_classes = _positive_int("num_classes", num_classes)
    array = np.asarray(labels)
    if array.ndim != 1 or array.dtype.kind not in "ui" or len(array) != len(ids):
        hint = " (one-hot labels: pass their argmax)" if array.ndim == 2 else ""
        raise InvalidTypeError(f"`labels`: one integer class index per item is needed ({len(ids)}){hint}. "
                               + received("labels", f"array of shape {array.shape} and dtype {array.dtype}"))
    errors = []
    for k in np.flatnonzero((array < 0) | (array >= num_classes)):
        index, item_id = index0 + int(k), ids[k]
        message = f"its label {int(array[k])} is not a class of the model (0 to {num_classes - 1})"
        if on_error == "raise":
            raise _item_error(index, item_id, message)
        errors.append((index, item_id, message))
    return errors
