"""Pictures of attributions: normalisation, OpenCV colormap overlays, labelled grids, atomic PNGs."""

from tfattr.viz.images import grid, normalize, overlay, save_png, to_uint8

__all__ = ["grid", "normalize", "overlay", "save_png", "to_uint8"]
