"""Whole datasets: streaming sources, a chunked result store and resumable runs (issue 30)."""
