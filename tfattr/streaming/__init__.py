"""Whole datasets: streaming, resumable explanation and evaluation into an on-disk store."""
