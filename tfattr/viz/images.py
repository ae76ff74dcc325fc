"""Turn attribution maps into pictures a person can read.

* :func:`normalize` reduces ``(H, W, C)`` attributions to an ``(H, W)`` map in
  ``[0, 1]`` (absolute value) or ``[−1, 1]`` (signed), clipping at a percentile as the
  SmoothTaylor paper does for display (99th by default) so one hot pixel does not
  wash out the rest.
* :func:`overlay` blends an OpenCV colormap of the map onto the image; signed maps get
  a diverging blue–white–red map.
* :func:`grid` lays out tiles with titles; :func:`save_png` writes atomically.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Sequence

import cv2
import numpy as np

__all__ = ["normalize", "overlay", "grid", "save_png", "to_uint8"]


def normalize(attribution: np.ndarray, mode: str = "abs", percentile: float = 99.0) -> np.ndarray:
    """Reduce channels and scale to ``[0, 1]`` (``mode="abs"``) or ``[−1, 1]`` (``"signed"``).

    Channels are combined by a signed sum (then ``|·|`` for ``"abs"``), as in the
    SmoothTaylor paper's evaluation. Values beyond the ``percentile`` of ``|map|`` are
    clipped. A constant zero map stays zero.
    """
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 3:
        a = a.sum(axis=-1)
    if mode == "abs":
        a = np.abs(a)
    elif mode != "signed":
        raise ValueError(f"`mode` must be 'abs' or 'signed'. Received: mode={mode!r}")
    scale = np.percentile(np.abs(a), percentile) if a.size else 0.0
    if not np.isfinite(scale) or scale <= 0:
        scale = np.abs(a).max()
    if scale <= 0:
        return np.zeros_like(a)
    return np.clip(a / scale, -1.0 if mode == "signed" else 0.0, 1.0)


def to_uint8(image: np.ndarray, value_range=(0.0, 1.0)) -> np.ndarray:
    """An RGB uint8 picture of a float image in ``value_range`` (grey images become RGB)."""
    low, high = value_range
    img = np.clip((np.asarray(image, np.float64) - low) / (high - low), 0, 1)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.round(img[..., :3] * 255).astype(np.uint8)


def _diverging(signed: np.ndarray) -> np.ndarray:
    """Blue (−1) – white (0) – red (+1), RGB uint8."""
    s = np.clip(signed, -1, 1)[..., None]
    white = np.ones(s.shape[:-1] + (3,))
    red, blue = np.array([0.84, 0.15, 0.16]), np.array([0.13, 0.40, 0.67])
    rgb = np.where(s >= 0, white * (1 - s) + red * s, white * (1 + s) + blue * (-s))
    return np.round(rgb * 255).astype(np.uint8)


def overlay(image: np.ndarray, attribution: np.ndarray, mode: str = "abs", alpha: float = 0.55,
            colormap: int = cv2.COLORMAP_INFERNO, value_range=(0.0, 1.0), percentile: float = 99.0,
            size: Optional[int] = None) -> np.ndarray:
    """Heatmap of ``attribution`` on ``image`` as an RGB uint8 array.

    Args:
        image: ``(H, W, C)`` float image in ``value_range``.
        attribution: ``(H, W, C)`` or ``(H, W)`` map (resized bilinearly if its size differs).
        mode: ``"abs"`` (OpenCV ``colormap``) or ``"signed"`` (diverging blue–white–red).
        alpha: weight of the heatmap.
        size: optional output side (nearest-neighbour upscaling keeps pixels crisp).
    """
    base = to_uint8(image, value_range)
    heat = normalize(attribution, mode, percentile)
    if heat.shape != base.shape[:2]:
        heat = cv2.resize(heat, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    if mode == "abs":
        colored = cv2.applyColorMap(np.round(heat * 255).astype(np.uint8), colormap)[..., ::-1]
    else:
        colored = _diverging(heat)
    out = np.round((1 - alpha) * base + alpha * colored).astype(np.uint8)
    if size is not None:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_NEAREST)
    return out


def _label(tile: np.ndarray, text: str, height: int = 16) -> np.ndarray:
    band = np.full((height, tile.shape[1], 3), 255, np.uint8)
    scale = 0.36
    (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    while w > tile.shape[1] - 4 and len(text) > 4:
        text = text[:-2] + "."
        (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(band, text, (2, height - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, tile], axis=0)


def grid(tiles: Sequence[Sequence[np.ndarray]], titles: Optional[Sequence[Sequence[str]]] = None,
         column_titles: Optional[Sequence[str]] = None, pad: int = 4) -> np.ndarray:
    """Lay out rows of equally sized RGB uint8 tiles with optional per-tile and column titles."""
    rows = []
    for r, row in enumerate(tiles):
        cells = []
        for c, tile in enumerate(row):
            cell = tile if titles is None else _label(tile, titles[r][c])
            cells.append(np.pad(cell, ((pad, pad), (pad, pad), (0, 0)), constant_values=255))
        rows.append(np.concatenate(cells, axis=1))
    out = np.concatenate(rows, axis=0)
    if column_titles is not None:
        width = rows[0].shape[1] // len(column_titles)
        header = [_label(np.full((0, width, 3), 255, np.uint8), t, 22) for t in column_titles]
        out = np.concatenate([np.concatenate(header, axis=1), out], axis=0)
    return out


def save_png(path: str, image: np.ndarray) -> str:
    """Write an RGB uint8 image to ``path`` atomically (temporary file, then rename)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise OSError(f"OpenCV could not encode the PNG for {path!r}")
    fd, tmp = tempfile.mkstemp(suffix=".png.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.tobytes())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
