"""Whole datasets: streaming, resumable explanation and evaluation into an on-disk store (issue #30).

``sources``: :func:`~tfattr.streaming.sources.stream` over datasets, TFDS, folders and arrays;
``store``: the store's writer (:class:`~tfattr.streaming.store.StoreWriter`) and reader
(:func:`~tfattr.streaming.store.open_explanations`); ``explain``/``evaluate``: the runners
:func:`~tfattr.streaming.explain.explain_dataset` and :func:`~tfattr.streaming.evaluate.evaluate_dataset`.
"""

from tfattr.streaming.store import Explanations, StoreWriter, open_explanations, recorded_settings

__all__ = ["Explanations", "StoreWriter", "open_explanations", "recorded_settings"]
