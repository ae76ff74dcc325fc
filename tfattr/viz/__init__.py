"""Pictures of attributions: normalisation, OpenCV colormap overlays, labelled grids, curve plots,
atomic PNGs (:mod:`tfattr.viz.images`), and matplotlib figures — :func:`show` like captum's
``visualize_image_attr``, :func:`show_grid`, :func:`show_curves` of metric results
(:mod:`tfattr.viz.plot`)."""

from tfattr.viz.images import grid, normalize, overlay, plot_curves, save_png, to_uint8
from tfattr.viz.plot import curve_xy, normalise_sign, show, show_curves, show_grid

__all__ = ["grid", "normalize", "overlay", "plot_curves", "save_png", "to_uint8",
           "show", "show_grid", "show_curves", "curve_xy", "normalise_sign"]
