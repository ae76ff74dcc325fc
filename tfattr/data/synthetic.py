"""Digits pasted onto crops of real photographs, with the digit's ground-truth mask.

Everything comes from files that packages ship, so it works offline: backgrounds are
the photographs bundled with scikit-image (``skimage.data``: astronaut, chelsea,
coffee, rocket, camera, brick, grass, gravel) and the objects are scikit-learn's
bundled 8×8 handwritten digits. The label is the digit, the mask marks its pixels,
so an attribution can be checked against where the evidence really is.

Deterministic from ``seed``; ``split="train"`` and ``split="test"`` use disjoint digit
samples (every fifth sklearn digit is held out) and independent draws.
"""

from __future__ import annotations

from functools import cache
from typing import Dict, Tuple

import cv2
import numpy as np

from tfattr.errors import InvalidInputError, received

__all__ = ["PHOTOS", "digits_on_photos", "photo"]

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "grass", "gravel")


@cache
def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photograph as float32 RGB in [0, 1]."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return (image[..., :3].astype(np.float32) / 255.0)


@cache
def _digits() -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def _split_indices(split: str, classes: int) -> np.ndarray:
    _, labels = _digits()
    held_out = np.arange(len(labels)) % 5 == 0
    keep = held_out if split == "test" else ~held_out
    return np.flatnonzero(keep & (labels < classes))


def digits_on_photos(n: int, size: int = 64, classes: int = 10, split: str = "train",
                     seed: int = 0) -> Dict[str, np.ndarray]:
    """Make ``n`` examples.

    Args:
        n: number of images.
        size: side of the square images (default 64).
        classes: use digits ``0 … classes−1``.
        split: ``"train"`` or ``"test"`` (disjoint digit samples).
        seed: seed of every random choice (crop, scale, position, colour).

    Returns:
        ``{"image": (n, size, size, 3) float32 in [0, 1], "label": (n,) int64,
        "mask": (n, size, size) bool, "background": (n,) index into PHOTOS}``.

    Example:
        >>> data = digits_on_photos(8, seed=0)
        >>> data["image"].shape, data["mask"].any(axis=(1, 2)).all()
        ((8, 64, 64, 3), True)
    """
    if split not in ("train", "test"):
        raise InvalidInputError("`split` must be 'train' or 'test'. " + received("split", split))
    for name, value, low in (("n", n, 0), ("size", size, 8)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InvalidInputError(f"`{name}` must be an integer ≥ {low}. " + received(name, value))
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)) or not 1 <= classes <= 10:
        raise InvalidInputError("`classes` must be an integer in [1, 10]. " + received("classes", classes))
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    digit_images, digit_labels = _digits()
    pool = _split_indices(split, classes)
    images = np.empty((n, size, size, 3), np.float32)
    masks = np.empty((n, size, size), bool)
    labels = np.empty(n, np.int64)
    backgrounds = np.empty(n, np.int64)
    for i in range(n):
        b = int(rng.integers(len(PHOTOS)))
        source = photo(PHOTOS[b])
        side = int(rng.integers(size, min(source.shape[:2]) + 1))
        top = int(rng.integers(source.shape[0] - side + 1))
        left = int(rng.integers(source.shape[1] - side + 1))
        background = cv2.resize(source[top : top + side, left : left + side], (size, size),
                                interpolation=cv2.INTER_AREA)
        k = int(pool[rng.integers(len(pool))])
        digit_size = int(rng.integers(size * 7 // 16, size * 11 // 16 + 1))
        alpha = cv2.resize(digit_images[k], (digit_size, digit_size), interpolation=cv2.INTER_LINEAR)
        # a little handwriting variety: rotation ±12°, stroke weight
        turn = cv2.getRotationMatrix2D((digit_size / 2, digit_size / 2), float(rng.uniform(-12, 12)), 1.0)
        alpha = cv2.warpAffine(alpha, turn, (digit_size, digit_size), flags=cv2.INTER_LINEAR)
        alpha = np.clip((alpha - rng.uniform(0.1, 0.3)) * 2.0, 0.0, 1.0)  # crisp strokes
        y = int(rng.integers(size - digit_size + 1))
        x = int(rng.integers(size - digit_size + 1))
        region = background[y : y + digit_size, x : x + digit_size]
        # a colour that stands out from the local background: light on dark, dark on light
        light = region.mean() < 0.5
        colour = rng.uniform(0.8, 1.0, 3) if light else rng.uniform(0.0, 0.2, 3)
        blended = region * (1 - alpha[..., None]) + colour[None, None] * alpha[..., None]
        background[y : y + digit_size, x : x + digit_size] = blended
        mask = np.zeros((size, size), bool)
        mask[y : y + digit_size, x : x + digit_size] = alpha > 0.25
        images[i], masks[i], labels[i], backgrounds[i] = background, mask, digit_labels[k], b
    return {"image": images, "label": labels, "mask": masks, "background": backgrounds}
