"""Explanations on Apache Beam (the optional ``[beam]`` extra: ``pip install "tfattr[beam]"``).

``import tfattr`` never loads Apache Beam; ``import tfattr.beam`` does.

* :class:`ExplanationModelHandler`: a ``ModelHandler`` for Beam's own ``RunInference`` whose inference is
  a tfattr explanation row ``{"attributions", "target", "score", "delta"}`` (keyed elements through
  Beam's ``KeyedModelHandler``).
* :class:`ExplainImages`: image files or TFRecords → the store of :func:`tfattr.explain_dataset`.
* :class:`EvaluateImages`: the stores and the table of :func:`tfattr.evaluate_dataset`.

The implementation is :mod:`tfattr.streaming.beam`.
"""

from tfattr.streaming.beam import (
    ON_ERROR,
    EvaluateImages,
    ExplainImages,
    ExplanationModelHandler,
    batch_seed,
    load_model,
    match_files,
)

__all__ = ["ExplanationModelHandler", "ExplainImages", "EvaluateImages", "load_model", "match_files", "batch_seed",
           "ON_ERROR"]
