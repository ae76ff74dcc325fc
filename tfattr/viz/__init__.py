"""Pictures of attributions: normalisation, OpenCV colormap overlays, labelled grids, curve plots,
atomic PNGs."""

from tfattr.viz.images import grid, normalize, overlay, plot_curves, save_png, to_uint8

__all__ = ["grid", "normalize", "overlay", "plot_curves", "save_png", "to_uint8"]
