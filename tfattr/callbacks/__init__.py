"""Keras callbacks: watch attributions while a model trains.

:class:`SaliencyLogger` explains a fixed probe batch at chosen epochs or batches with any
tfattr method bound to the model being trained, and writes heatmap overlays
(``tf.summary.image``), metric scalars (ATV, AUTVC, completeness, AUPC) and optional PNGs.

Example::

    logger = tfattr.callbacks.SaliencyLogger(
        tfattr.IntegratedGradients, x_val[:8], targets=y_val[:8],
        method_options={"steps": 32}, log_dir="logs", metrics=("atv", "completeness"))
    model.fit(x, y, epochs=5, callbacks=[logger])     # then: tensorboard --logdir logs
"""

from tfattr.callbacks.saliency import METRICS, RUN_NAME, SaliencyLogger, SaliencyLoggerWarning, SaliencyRecord

__all__ = ["SaliencyLogger", "SaliencyLoggerWarning", "SaliencyRecord", "METRICS", "RUN_NAME"]
