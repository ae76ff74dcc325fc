"""Baselines for path methods: the registry (zero, black, constant, uniform, gaussian, blur,
max-distance, arrays, callables)."""

from tfattr.baselines.registry import BASELINES, BaselineSet, make_baselines

__all__ = ["BASELINES", "BaselineSet", "make_baselines"]
