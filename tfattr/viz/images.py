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
from typing import Optional, Sequence

import cv2
import numpy as np

from tfattr.core.files import write_bytes
from tfattr.errors import InvalidInputError, received

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
        raise InvalidInputError("`mode` must be 'abs' or 'signed'. " + received("mode", mode))
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)) \
            or not 0 <= percentile <= 100:
        raise InvalidInputError("`percentile` must be a number in [0, 100]. " + received("percentile", percentile))
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
    tiles = [list(row) for row in tiles]
    if not tiles or not tiles[0]:
        raise InvalidInputError("`tiles` must hold at least one row of tiles. " + received("tiles", tiles))
    shape = np.shape(tiles[0][0])
    for r, row in enumerate(tiles):
        if len(row) != len(tiles[0]):
            raise InvalidInputError(f"every row of `tiles` must have {len(tiles[0])} tiles, like the first. "
                                    + received(f"len(tiles[{r}])", len(row)))
        for c, tile in enumerate(row):
            if np.shape(tile) != shape:
                raise InvalidInputError(f"`tiles` must all have one shape, the first's {shape}. "
                                        + received(f"tiles[{r}][{c}].shape", np.shape(tile)))
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
    """Write an RGB uint8 image to ``path`` atomically (temporary file, then rename; mode ``0o666 & ~umask``)."""
    path = os.fspath(path)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise OSError(f"OpenCV could not encode the PNG for {path!r}")
    return write_bytes(path, data.tobytes())


_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def plot_curves(curves, title: str = "", xlabel: str = "step", ylabel: str = "score", size=(640, 400),
                x_values=None) -> np.ndarray:
    """Line plot of named curves (e.g. AUPC, deletion/insertion, an adaptive-noising trace) as RGB uint8.

    Drawn with OpenCV so no plotting library is needed. ``curves`` maps a legend label to a 1-D
    array (or ``(x, y)`` pair); ``x_values`` gives shared x positions (default ``0, 1, …``).
    """
    width, height = size
    left, right, top, bottom = 60, 150, 30, 40
    canvas = np.full((height, width, 3), 255, np.uint8)
    series = []
    for label, values in curves.items():
        if isinstance(values, tuple) and len(values) == 2:
            xs, ys = (np.asarray(v, np.float64) for v in values)
        else:
            ys = np.asarray(values, np.float64).ravel()
            xs = np.arange(len(ys), dtype=np.float64) if x_values is None else np.asarray(x_values, np.float64)
        series.append((label, xs, ys))
    all_x = np.concatenate([s[1] for s in series]) if series else np.zeros(1)
    all_y = np.concatenate([s[2] for s in series]) if series else np.zeros(1)
    finite = np.isfinite(all_y)
    x0, x1 = float(all_x.min()), float(all_x.max()) if all_x.max() > all_x.min() else float(all_x.min()) + 1
    y0, y1 = (float(all_y[finite].min()), float(all_y[finite].max())) if finite.any() else (0.0, 1.0)
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def to_pixel(x, y):
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return np.stack([px, py], axis=-1).round().astype(np.int32)

    black = (0, 0, 0)
    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), black, 1)
    for frac in np.linspace(0, 1, 5):
        yv = y0 + frac * (y1 - y0)
        py = int(to_pixel(np.array([x0]), np.array([yv]))[0, 1])
        cv2.line(canvas, (left - 4, py), (left, py), black, 1)
        cv2.putText(canvas, f"{yv:.3g}", (2, py + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, black, 1, cv2.LINE_AA)
        xv = x0 + frac * (x1 - x0)
        px = int(to_pixel(np.array([xv]), np.array([y0]))[0, 0])
        cv2.line(canvas, (px, height - bottom), (px, height - bottom + 4), black, 1)
        cv2.putText(canvas, f"{xv:.3g}", (px - 10, height - bottom + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.35, black, 1,
                    cv2.LINE_AA)
    cv2.putText(canvas, title, (left, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, black, 1, cv2.LINE_AA)
    cv2.putText(canvas, xlabel, ((width - right + left) // 2 - 20, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black,
                1, cv2.LINE_AA)
    cv2.putText(canvas, ylabel, (2, top - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, black, 1, cv2.LINE_AA)
    for i, (label, xs, ys) in enumerate(series):
        colour = _PALETTE[i % len(_PALETTE)]
        ok = np.isfinite(ys)
        points = to_pixel(xs[ok], ys[ok])
        if len(points) > 1:
            cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        elif len(points) == 1:
            cv2.circle(canvas, tuple(int(v) for v in points[0]), 3, colour, -1)
        ly = top + 14 + 16 * i
        cv2.line(canvas, (width - right + 8, ly - 4), (width - right + 28, ly - 4), colour, 2)
        cv2.putText(canvas, str(label)[:18], (width - right + 32, ly), cv2.FONT_HERSHEY_SIMPLEX, 0.38, black, 1,
                    cv2.LINE_AA)
    return canvas
