"""Matplotlib figures of attributions and metric curves (inline in a notebook, real axes and ticks).

* :func:`show` draws one attribution map like captum's ``visualize_image_attr``: a heat map, a heat
  map blended over the image, the image masked by the map, or the map as the image's alpha, for the
  map's positive, negative, absolute or all (signed) values, with a colorbar. Returns ``(fig, ax)``.
* :func:`show_grid` draws images × methods (the image, then one map per method) in one figure.
* :func:`show_curves` draws metric curves — AUPC, deletion, insertion, AUTVC — from the result
  objects of :mod:`tfattr.metrics`, with the metric's own x axis (windows perturbed, fraction of
  pixels moved, pyramid level).

OpenCV (:func:`tfattr.viz.overlay`, :func:`tfattr.viz.save_png`) stays the fast path for writing
many overlays to PNG files; these functions are for looking at results.

Normalisation: the channels of an ``(H, W, C)`` map are summed (signed), the ``sign`` selects values,
and the result is divided by the ``percentile`` of its absolute values and clipped, to ``[0, 1]``
(``"positive"``, ``"negative"`` (magnitudes of the negative values), ``"absolute_value"``) or
``[−1, 1]`` (``"all"``). :func:`normalise_sign` is that step alone.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfattr.core import result as _result
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["METHODS", "SIGNS", "normalise_sign", "show", "show_grid", "curve_xy", "show_curves"]

#: What :func:`show` draws (captum's names).
METHODS = ("heat_map", "blended_heat_map", "masked_image", "alpha_scaling", "original_image")
#: Which values of the map are drawn (captum's names).
SIGNS = ("all", "positive", "negative", "absolute_value")
_ALIASES = {"heatmap": "heat_map", "overlay": "blended_heat_map", "blended": "blended_heat_map",
            "masked": "masked_image", "alpha": "alpha_scaling", "image": "original_image",
            "abs": "absolute_value", "absolute": "absolute_value", "signed": "all"}
_CMAPS = {"all": "RdBu_r", "positive": "Reds", "negative": "Blues", "absolute_value": "inferno"}


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - matplotlib is in install_requires
        raise ImportError("tfattr.viz.show and Explanation.plot need matplotlib: pip install matplotlib") from error
    return plt


def _choice(value, name: str, choices: Sequence[str]) -> str:
    value = _ALIASES.get(value, value) if isinstance(value, str) else value
    if value not in choices:
        raise InvalidInputError(f"`{name}` must be one of {', '.join(repr(c) for c in choices)}. "
                                + received(name, value))
    return value


def _as_map(attribution, name: str = "attribution") -> np.ndarray:
    if hasattr(attribution, "numpy") and callable(attribution.numpy):
        attribution = attribution.numpy()
    if isinstance(attribution, (list, tuple, dict)):
        raise InvalidInputError(f"`{name}` must be one map (H, W) or (H, W, C); for a model with several inputs "
                                "pick one input's map. " + received(f"type({name})", type(attribution).__name__))
    raw = np.asarray(attribution)
    try:  # complex (its imaginary part would be dropped), strings, objects, dates: not a map
        if raw.dtype.kind in "cOUSMm":
            raise TypeError
        a = raw.astype(np.float64)  # bfloat16 (an ml_dtypes 'V' kind) converts
    except (TypeError, ValueError):
        raise InvalidTypeError(f"`{name}` must be a real-valued map. "
                               + received(f"{name}.dtype", str(raw.dtype))) from None
    if a.ndim not in (2, 3):
        raise InvalidInputError(f"`{name}` must be one map of shape (H, W) or (H, W, C). "
                                + received(f"{name}.shape", np.shape(attribution)))
    if not np.all(np.isfinite(a)):
        raise InvalidInputError(f"`{name}` must be finite. " + received(name, "an array with NaN or Inf"))
    if a.ndim == 3:
        total = a.sum(axis=-1)
        if not np.all(np.isfinite(total)):  # finite values whose channel sum overflows: the drawing is
            total = (a / np.abs(a).max()).sum(axis=-1)  # scale-free (normalise_sign divides by a percentile)
        a = total
    return a


def normalise_sign(attribution, sign: str = "absolute_value", percentile: float = 99.0) -> np.ndarray:
    """The ``(H, W)`` map :func:`show` draws: channels summed, ``sign`` selected, scaled and clipped.

    ``"all"`` gives ``clip(a / s, −1, 1)``, the others ``clip(v / s, 0, 1)`` with ``v = max(a, 0)``
    (``"positive"``), ``max(−a, 0)`` (``"negative"``) or ``|a|`` (``"absolute_value"``), where ``s`` is
    the ``percentile`` of ``|v|`` (of ``|a|`` for ``"all"``), or its maximum if that percentile is 0.
    A map with nothing of the chosen sign is all zeros.
    """
    sign = _choice(sign, "sign", SIGNS)
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)) \
            or not 0 < percentile <= 100:
        raise InvalidInputError("`percentile` must be a number in (0, 100]. " + received("percentile", percentile))
    a = _as_map(attribution)
    values = {"all": a, "positive": np.maximum(a, 0.0), "negative": np.maximum(-a, 0.0),
              "absolute_value": np.abs(a)}[sign]
    scale = float(np.percentile(np.abs(values), percentile)) if values.size else 0.0
    if scale <= 0:
        scale = float(np.abs(values).max()) if values.size else 0.0
    if scale <= 0:
        return np.zeros_like(values)
    return np.clip(values / scale, -1.0 if sign == "all" else 0.0, 1.0)


def _image01(image, value_range, shape) -> np.ndarray:
    if hasattr(image, "numpy") and callable(image.numpy):
        image = image.numpy()
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (3, 4)) or img.shape[:2] != shape:
        raise InvalidInputError(f"`image` must be (H, W), (H, W, 1) or (H, W, 3) with the map's size {shape}. "
                                + received("image.shape", np.shape(image)))
    low, high = value_range
    if not high > low:
        raise InvalidInputError("`value_range` must be (low, high) with high > low. "
                                + received("value_range", value_range))
    img = np.clip((img - low) / (high - low), 0.0, 1.0)
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img[..., :3]


def show(attribution, image=None, method: str = "heat_map", sign: str = "absolute_value", *,
         value_range=(0.0, 1.0), percentile: float = 99.0, cmap: Optional[str] = None, alpha: float = 0.5,
         colorbar: bool = True, title: Optional[str] = None, ax=None, figsize=(4.0, 4.0)):
    """Draw one attribution map with matplotlib, like captum's ``visualize_image_attr``.

    Args:
        attribution: an ``(H, W, C)`` or ``(H, W)`` map (channels are summed), a tensor or an array.
        image: the explained ``(H, W, C)`` image in ``value_range``; needed by every ``method`` but
            ``"heat_map"``.
        method: ``"heat_map"`` (the normalised map), ``"blended_heat_map"`` (the map over the image in
            grey, weight ``alpha``), ``"masked_image"`` (the image times the map in ``[0, 1]``),
            ``"alpha_scaling"`` (the map as the image's opacity) or ``"original_image"``.
        sign: ``"absolute_value"``, ``"positive"``, ``"negative"`` or ``"all"`` (signed, on a diverging
            colormap from −1 to 1); see :func:`normalise_sign`. ``"masked_image"`` and
            ``"alpha_scaling"`` need a map in ``[0, 1]``, so not ``"all"``.
        value_range: ``(low, high)`` of the image's values (``(0, 255)`` for 8-bit photos).
        percentile: values above this percentile of ``|map|`` are clipped (one hot pixel does not
            wash out the rest).
        cmap: a matplotlib colormap name; by default ``RdBu_r`` (all), ``Reds`` (positive), ``Blues``
            (negative), ``inferno`` (absolute value).
        alpha: the heat map's weight in ``"blended_heat_map"``.
        colorbar: add a colorbar for the heat-map methods (the normalised scale).
        title: the axes' title.
        ax: draw into these axes (else a new figure of ``figsize``).

    Returns:
        ``(fig, ax)``. In a notebook the figure shows inline.

    Example:
        >>> fig, ax = tfattr.viz.show(expl.attributions[0], images[0], "blended_heat_map", "positive")
    """
    method = _choice(method, "method", METHODS)
    sign = _choice(sign, "sign", SIGNS)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)) \
            or not 0 <= alpha <= 1:
        raise InvalidInputError("`alpha` must be a number in [0, 1]. " + received("alpha", alpha))
    if method in ("masked_image", "alpha_scaling") and sign == "all":
        raise InvalidInputError(f"method={method!r} needs a map in [0, 1]: use sign='positive', 'negative' or "
                                "'absolute_value'. " + received("sign", sign))
    heat = normalise_sign(attribution, sign, percentile)
    if image is None and method != "heat_map":
        raise InvalidInputError(f"method={method!r} draws the image: pass `image`. " + received("image", None))
    picture = None if image is None else _image01(image, value_range, heat.shape)
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    cmap = cmap or _CMAPS[sign]
    vmin = -1.0 if sign == "all" else 0.0
    mappable = None
    if method == "heat_map":
        mappable = ax.imshow(heat, cmap=cmap, vmin=vmin, vmax=1.0)
    elif method == "blended_heat_map":
        ax.imshow(picture.mean(axis=-1), cmap="gray", vmin=0.0, vmax=1.0)
        mappable = ax.imshow(heat, cmap=cmap, vmin=vmin, vmax=1.0, alpha=float(alpha))
    elif method == "masked_image":
        ax.imshow(picture * heat[..., None], vmin=0.0, vmax=1.0)
    elif method == "alpha_scaling":
        ax.imshow(np.concatenate([picture, heat[..., None]], axis=-1), vmin=0.0, vmax=1.0)
    else:
        ax.imshow(picture, vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title)
    if colorbar and mappable is not None:
        fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04)
    return fig, ax


def _maps_of(value, name: str) -> np.ndarray:
    """A batch of maps from an Explanation, a tensor or an array."""
    if hasattr(value, "attributions"):
        value = value.attributions
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    if isinstance(value, (list, tuple, dict)):
        raise InvalidInputError(f"`methods[{name!r}]` must be one batch of maps (N, H, W[, C]), not one per input. "
                                + received(f"type(methods[{name!r}])", type(value).__name__))
    return np.asarray(value)


def show_grid(images, methods: Mapping[str, Any], method: str = "blended_heat_map", sign: str = "absolute_value",
              *, value_range=(0.0, 1.0), percentile: float = 99.0, cmap: Optional[str] = None, alpha: float = 0.5,
              row_titles: Optional[Sequence[str]] = None, tile: float = 2.2, colorbar: bool = False):
    """A grid of images × methods: each row one image, then that image's map of each method.

    Args:
        images: ``(N, H, W, C)`` images in ``value_range``.
        methods: ``{column title: explanation or (N, H, W[, C]) maps}``, e.g. ``{"IG": ig_expl}``.
        method, sign, value_range, percentile, cmap, alpha: as in :func:`show`.
        row_titles: one label per image (e.g. its class).
        tile: inches per tile.
        colorbar: a colorbar beside every map.

    Returns:
        ``(fig, axes)`` with ``axes`` of shape ``(N, 1 + len(methods))``.
    """
    if hasattr(images, "numpy") and callable(images.numpy):
        images = images.numpy()
    images = np.asarray(images)
    if images.ndim == 3:  # one (H, W, C) image, or a batch of grey (N, H, W) ones
        images = images[None] if images.shape[-1] in (1, 3, 4) else images[..., None]
    if not isinstance(methods, Mapping) or not methods:
        raise InvalidInputError("`methods` must be a non-empty dict {title: explanation or maps}. "
                                + received("methods", methods))
    maps = {title: _maps_of(value, title) for title, value in methods.items()}
    for title, m in maps.items():
        if len(m) != len(images):
            raise InvalidInputError(f"`methods[{title!r}]` must hold one map per image ({len(images)}). "
                                    + received(f"len(methods[{title!r}])", len(m)))
    if row_titles is not None and len(row_titles) != len(images):
        raise InvalidInputError(f"`row_titles` must have one title per image ({len(images)}). "
                                + received("len(row_titles)", len(row_titles)))
    plt = _pyplot()
    rows, cols = len(images), 1 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(tile * cols, tile * rows), squeeze=False)
    for i in range(rows):
        show(np.zeros(images.shape[1:3]), images[i], "original_image", value_range=value_range, ax=axes[i, 0],
             colorbar=False, title="image" if i == 0 else None)
        if row_titles is not None:
            axes[i, 0].set_ylabel(str(row_titles[i]))
        for j, (title, m) in enumerate(maps.items(), start=1):
            show(m[i], images[i], method, sign, value_range=value_range, percentile=percentile, cmap=cmap,
                 alpha=alpha, colorbar=colorbar, title=title if i == 0 else None, ax=axes[i, j])
    fig.tight_layout()
    return fig, axes


def curve_xy(result, index: int = 0) -> Tuple[np.ndarray, np.ndarray, str, str]:
    """``(x, y, xlabel, ylabel)`` of one image's curve in a metric result.

    * :class:`~tfattr.metrics.AUPCResult`: x = windows perturbed ``0 … L``, y = the normalised curve
      (its Simpson area at unit spacing is ``result.area``).
    * :class:`~tfattr.metrics.CausalResult` (deletion, insertion): x = fraction of steps done
      ``0, 1/n, …, 1``, y = the score (its trapezoid area is ``result.auc``).
    * :class:`~tfattr.metrics.AUTVCResult`: x = pyramid level ``0 … levels−1``, y = the ATV at it.
    """
    curve = getattr(result, "curve", None)
    if curve is None:
        raise InvalidInputError("`result` must be a metric result with a curve (AUPCResult, CausalResult, "
                                "AUTVCResult). " + received("type(result)", type(result).__name__))
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim == 1:
        curve = curve[None]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -len(curve) <= index < len(curve):
        raise InvalidInputError(f"`index` must be an image index below {len(curve)}. " + received("index", index))
    y = curve[index]
    kind = type(result).__name__
    if kind == "CausalResult":
        return np.linspace(0.0, 1.0, len(y)), y, "fraction of pixels moved", "score"
    if kind == "AUTVCResult":
        return np.arange(len(y), dtype=np.float64), y, "pyramid level", "ATV"
    if kind == "AUPCResult":
        return np.arange(len(y), dtype=np.float64), y, "windows perturbed", "score / |f(x)|"
    return np.arange(len(y), dtype=np.float64), y, "step", "score"


def show_curves(results: Mapping[str, Any], index: int = 0, *, title: Optional[str] = None, ax=None,
                figsize=(5.0, 3.5)):
    """Metric curves of several methods (or metrics) on one axes with real ticks and a legend.

    Args:
        results: ``{label: metric result}``, e.g. ``{"IG": metrics.deletion(...), "Grad-CAM": ...}``;
            a single result is drawn under its class name. The x axis is the metric's own
            (:func:`curve_xy`), so give curves of one metric per call.
        index: which image's curve to draw.
        title: the axes' title; the legend shows each label with its area.
        ax: draw into these axes (else a new figure of ``figsize``).

    Returns:
        ``(fig, ax)``; ``ax.lines[i].get_xydata()`` is the i-th curve.
    """
    if not isinstance(results, Mapping):
        results = {type(results).__name__: results}
    if not results:
        raise InvalidInputError("`results` must name at least one metric result. " + received("results", results))
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    labels: Dict[str, str] = {}
    for label, result in results.items():
        x, y, xlabel, ylabel = curve_xy(result, index)
        area = getattr(result, "area", getattr(result, "auc", None))
        text = str(label) if area is None else f"{label} ({float(np.asarray(area)[index]):.3g})"
        ax.plot(x, y, label=text)
        labels["x"], labels["y"] = xlabel, ylabel
    ax.set_xlabel(labels["x"])
    ax.set_ylabel(labels["y"])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if title is not None:
        ax.set_title(title)
    return fig, ax


_result.register_plotter(show)
