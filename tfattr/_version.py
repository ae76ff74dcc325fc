"""The library version (here, not in the package top, so that modules below the top can record it)."""

__version__ = "0.1.0"
