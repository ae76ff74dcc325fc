"""Files shipped inside the package (``tfattr/assets``): the demo classifier and the uniform-output
baselines. They are package data, so a wheel installed anywhere has them; a checkout keeps the old
paths (``examples/assets/…``, ``saved_baselines/…``) as links to the same files."""

from __future__ import annotations

import os

from tfattr.errors import InvalidInputError, received

__all__ = ["ASSETS_DIR", "DEMO_MODEL", "asset_path"]

#: the folder of the shipped files inside the installed package
ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
#: the demo classifier's file name under :data:`ASSETS_DIR`
DEMO_MODEL = "digits_on_photos_cnn.keras"


def asset_path(*parts: str) -> str:
    """The absolute path of a shipped file or folder, e.g. ``asset_path("digits_on_photos_cnn.keras")``.

    Raises:
        InvalidInputError: nothing of that name is shipped (the message lists what is).
    """
    path = os.path.join(ASSETS_DIR, *parts)
    if not os.path.exists(path):
        folder = os.path.dirname(path)
        shipped = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        raise InvalidInputError(f"tfattr ships no file {'/'.join(parts)!r} (in {folder}: {shipped}). "
                                + received("name", "/".join(parts)))
    return path
