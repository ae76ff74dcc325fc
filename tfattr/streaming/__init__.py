"""Whole datasets: streaming, resumable explanation into an on-disk store (issue #30).

``store``: the store's writer (:class:`~tfattr.streaming.store.StoreWriter`) and reader
(:func:`~tfattr.streaming.store.open_explanations`).
"""

from tfattr.streaming.store import Explanations, StoreWriter, open_explanations, recorded_settings

__all__ = ["Explanations", "StoreWriter", "open_explanations", "recorded_settings"]
