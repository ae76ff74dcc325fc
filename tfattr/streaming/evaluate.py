"""Evaluate attribution methods over a whole dataset, streaming, resumable: :func:`evaluate_dataset`.

The same pipeline as :func:`tfattr.streaming.explain.explain_dataset` (decode, explain, write
overlapped; one store chunk per batch; finished chunks skipped on resume; the settings recorded and
compared), with one store per method under ``out/`` (``out/<method>/``) whose per-image rows carry
the metric values (``metric:<column>``), plus at the end the table :func:`tfattr.evaluate` reports:
means over the images with percentile bootstrap intervals (:func:`tfattr.evaluation.format_table`),
written to ``out/table.md`` and ``out/table.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from tfattr.core import checks
from tfattr.core.keys import Uncacheable, canonical
from tfattr.errors import InvalidInputError, received
from tfattr.streaming.explain import (
    ON_ERROR,
    _check_choice,
    _check_positive,
    _open_stream,
    _Plan,
    _prepare_out,
    _resolve_method,
    _settings,
    _target_spec,
    batch_items,
    check_method_range,
    check_out_outside_data,
    check_target_classes,
    explain_batch,
    given_batch_size,
    run_stream,
    show_summary,
)

__all__ = ["evaluate_dataset", "DEFAULT_METRICS", "METRIC_PREFIX"]

#: the metrics of ``metrics=None``: :func:`tfattr.evaluate`'s default table (plus ``completeness`` for a
#: method that reports a completeness delta)
DEFAULT_METRICS = ("aupc", "autvc", "deletion", "insertion")
#: the prefix of the metric columns in a method store's rows
METRIC_PREFIX = "metric:"



def add_metric_columns(rows, columns, seconds: float, explanation, notes) -> None:
    """Fill a chunk's ``rows`` (one dict per item) with each metric's per-image values (``metric:<label>``),
    the chunk's seconds and gradients and the metrics' notes: the rows :func:`evaluate_dataset` and
    :class:`tfattr.beam.EvaluateImages` write."""
    gradients = 0 if explanation is None else int(explanation.gradients)
    for i, row in enumerate(rows):
        for label, values in columns.items():
            row[METRIC_PREFIX + label] = float(values[i])
        row["chunk_seconds"] = float(seconds)
        row["chunk_gradients"] = gradients
        row["notes"] = json.dumps(notes)

def _folder_name(name: str, used: set) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "method"
    folder, k = base, 2
    while folder.lower() in used or folder.lower() in ("table.md", "table.csv"):
        folder, k = f"{base}-{k}", k + 1
    used.add(folder.lower())
    return folder


def _methods(methods, model, item_shape, seed, value_range, given_range=None):
    """``[(name, method, per-call options, the seed its settings name or None)]`` from
    :func:`tfattr.evaluate`'s forms: ``(name, method)`` pairs, registry names, ``(name, settings)`` pairs.
    ``given_range``: the caller's explicit images' range, checked against a method object's own."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise InvalidInputError("`methods` must name at least one method. " + received("methods", methods))
    resolved = []
    for i, item in enumerate(methods):
        if isinstance(item, str):
            name, given, settings = item, item, None
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
            name, given = item
            settings = given if isinstance(given, Mapping) else None
            given = name if isinstance(given, Mapping) else given
        else:
            raise InvalidInputError("`methods` must be (name, method) pairs, registry names ('ig') or (name, settings) "
                                    "pairs (('rise', {'n_masks': 500})). " + received(f"methods[{i}]", item))
        method, options = _resolve_method(given, model if isinstance(given, str) else None, settings, item_shape, seed,
                                          value_range)
        check_method_range(given, options, given_range, f"method {name!r}")
        resolved.append((name, method, options, (settings or {}).get("seed")))
    names = [name for name, _, _, _ in resolved]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInputError(f"every method needs its own name (its store is out/<name>); repeated: {repeated}. "
                                + received("methods", names))
    return resolved


def method_seed(own_seed, config: Mapping[str, Any], seed: int) -> int:
    """The base of a method's batch seeds: a ``(name, settings)`` pair's own ``seed`` (as its recorded
    method options say), else the run's ``seed``."""
    return int(own_seed) if own_seed is not None and "seed" in config else int(seed)


def evaluate_dataset(model, data, methods, metrics, out, *, target=None,
                     metric_options: Optional[Dict[str, Dict[str, Any]]] = None, value_range=None,
                     split: Optional[str] = None, data_dir: Optional[str] = None, batch_size: int = 64, seed: int = 0,
                     on_error: str = "raise", verbose="auto", image_size=None, image_key: str = "image",
                     label_key: Optional[str] = "label", id_key: Optional[str] = None, labels=None,
                     channels: Optional[int] = None, aupc_kernel: int = 15,
                     aupc_regions: int = 30, aupc_perturbations: int = 50, pixels_per_step: Optional[int] = None,
                     confidence: float = 0.95, overwrite: bool = False, durable: bool = True):
    """Explain and score every image of ``data`` with each method, streaming and resumable; return the table.

    Per batch: the explained classes (``target``; ``None``: ``model``'s top-1, as :func:`tfattr.evaluate`),
    each method's attributions (its store ``out/<name>/``, as :func:`tfattr.explain_dataset` writes) and
    each metric's per-image values, written in that store's rows (``metric:AUPC``, …). A run killed at
    any point continues after the chunks every store finished. At the end the rows are read back and
    aggregated as :func:`tfattr.evaluate` aggregates them (:func:`tfattr.evaluation.summarize`: the mean
    over images, NaN left out, and its percentile bootstrap interval at ``confidence`` from ``seed``);
    skipped items are left out of the table (a note says how many). The table is written atomically to
    ``out/table.md`` (:func:`tfattr.evaluation.format_table`) and ``out/table.csv``.

    Each metric is computed per image on the batch, so with deterministic methods and metrics whose
    value of an image does not depend on the other images of the call (AUPC draws the same noise for
    every image; deletion, insertion, AUTVC, completeness) the per-image values and the table equal
    :func:`tfattr.evaluate` on all images in memory, up to float32 rounding of batched passes. A method
    with a ``seed`` explains batch ``b`` with :func:`~tfattr.streaming.explain.batch_seed` ``(seed, b)``
    (as :func:`tfattr.explain_dataset`), and a metric whose draws depend on an image's position in the
    call differs from one in-memory call (reproducibly: the batches are fixed).

    Args:
        model: the model the metrics query (its logits, as :func:`tfattr.evaluate`).
        data: as :func:`tfattr.explain_dataset` (a ``tf.data.Dataset``, a TFDS name, a folder, arrays).
        methods: as :func:`tfattr.evaluate`: ``(name, method)`` pairs, registry names (``"ig"``) or
            ``(name, settings)`` pairs, built on ``model``.
        metrics: names of registered metrics (:data:`tfattr.metrics.METRICS`), one column each; ``None``:
            :data:`DEFAULT_METRICS` (AUPC, AUTVC, deletion, insertion) plus completeness for methods
            that report a delta, :func:`tfattr.evaluate`'s default columns.
        out: the folder of the stores and tables.
        target: ``None`` (``model``'s top-1), an int, ``"label"`` or one int per item.
        metric_options: ``{metric: {option: value}}`` (as :func:`tfattr.evaluate`).
        aupc_kernel, aupc_regions, aupc_perturbations, pixels_per_step: as :func:`tfattr.evaluate`.
        confidence: the intervals' level (only the aggregation: a finished run re-aggregates at another
            level without recomputing).
        value_range: the images' range (default: the model's declared range, else (0, 1)): AUPC's noise
            range, the range a method given by name is built with and, given, the range 8-bit images
            are scaled into (as :func:`tfattr.explain_dataset`).
        seed, batch_size, on_error, verbose, split, data_dir: as :func:`tfattr.explain_dataset`.
        image_size, image_key, label_key, id_key, labels, channels, overwrite, durable: as
            :func:`tfattr.explain_dataset`.

    Returns:
        One :class:`tfattr.evaluation.EvaluationRow` per method, in order (``per_image`` over the
        items explained, in dataset order).

    Example:
        >>> rows = tfattr.evaluate_dataset(model, (images, labels), ["gradient", "ig"], ["aupc", "deletion"],
        ...                                "eval/", target="label")
        >>> print(tfattr.evaluation.format_table(rows))
    """
    from tfattr.core.ranges import resolve_value_range
    from tfattr.evaluation import model_key as _model_key
    from tfattr.metrics.registry import resolve_metrics
    from tfattr.metrics.statistics import check_confidence

    out = _prepare_out(out)
    check_out_outside_data(out, data, labels)
    batch_size = _check_positive("batch_size", batch_size)
    _check_choice("on_error", on_error, ON_ERROR)
    checks.verbose("verbose", verbose)
    checks.seed("seed", seed)
    if seed is None:
        raise InvalidInputError("`seed` of evaluate_dataset must be an integer (the run is recorded to resume it). "
                                + received("seed", seed))
    confidence = check_confidence(confidence)
    if metrics is None and metric_options is not None:
        raise InvalidInputError("`metric_options` sets options of named metrics: name them in `metrics`. "
                                + received("metrics", None))
    outputs = getattr(model, "outputs", None)
    if isinstance(outputs, (list, tuple)) and len(outputs) > 1:  # the metrics query one logits output
        raise InvalidInputError(f"evaluate_dataset scores a model with one output (its logits); this model has "
                                f"{len(outputs)}: pass the output to score as a model of its own, "
                                "keras.Model(model.inputs, model.outputs[k]). "
                                + received("len(model.outputs)", len(outputs)))
    chosen = resolve_metrics(list(DEFAULT_METRICS) if metrics is None else metrics, metric_options, masks_given=False)
    target, target_json = _target_spec(target)
    stream_range = value_range  # 8-bit images scaled into it (None: kept 0–255)
    value_range = resolve_value_range(value_range, model)
    data_args = dict(data=data, split=split, data_dir=data_dir, image_key=image_key, label_key=label_key,
                     id_key=id_key, labels=labels, image_size=image_size, channels=channels, value_range=stream_range,
                     on_error=on_error)
    probe = _open_stream(**data_args, batch_size=batch_size, skip_batches=0)
    item_shape = tuple(int(d) for d in getattr(probe, "item_shape", ()) or ())
    resolved = _methods(methods, model, item_shape, seed, value_range, stream_range)
    num_classes = _output_classes(model)
    check_target_classes(target, num_classes)
    if isinstance(target, np.ndarray) and probe.num_items is not None and len(target) != probe.num_items:
        raise InvalidInputError(f"`target` must hold one class per item ({probe.num_items}). "
                                + received("len(target)", len(target)))
    metric_settings = dict(value_range=value_range, aupc_kernel=aupc_kernel, aupc_regions=aupc_regions,
                           aupc_perturbations=aupc_perturbations, pixels_per_step=pixels_per_step, seed=seed)
    try:
        scoring = _model_key(model)
        evaluation_key = {"model": scoring, "metrics": [[spec.name, canonical(options, spec.name)]
                                                        for spec, options in chosen],
                          "default_metrics": metrics is None, "metric_settings": canonical(metric_settings)}
    except Uncacheable as why:
        raise InvalidInputError("evaluate_dataset records the run's settings to resume it; this run cannot be "
                                f"recorded: {why.reason}. "
                                + received("model", getattr(model, "name", type(model).__name__))) from None
    used: set = set()
    plans: Dict[str, _Plan] = {}
    stores = []
    named = {}
    for name, method, options, own_seed in resolved:
        config = dict(getattr(method, "config", None) or {})
        plan = _Plan(method=method, target=target, on_error=on_error, seed=method_seed(own_seed, config, seed),
                     seeded="seed" in config,
                     options=options, num_classes=num_classes, item_shape=item_shape)
        if given_batch_size(method) != "auto":
            plan.engine_batch_size = int(given_batch_size(method))
        folder = os.path.join(out, _folder_name(name, used))
        plans[folder] = plan
        named[folder] = name
        stores.append((folder, folder))
    description = probe.description

    def settings_of(key):
        plan = plans[key]
        settings = _settings(plan.method, plan.options, description, target_json, batch_size,
                             plan.engine_batch_size, seed, on_error)
        settings["evaluation"] = dict(evaluation_key, name=named[key])
        return settings

    first_plan = plans[stores[0][1]]

    def process(batch, k, todo):
        keep, errors, targets = batch_items(first_plan, batch)
        images = np.asarray(batch.images)
        if targets is None and keep.any():  # the scoring model's top-1, as evaluate's labels
            targets = np.zeros(len(batch.ids), np.int64)
            targets[keep] = np.argmax(model.predict(images[keep], verbose=0), axis=1)
        results = {}
        for key in todo:
            plan = plans[key]
            begin = time.perf_counter()
            arrays, rows, explanation, keep = explain_batch(plan, batch, k, (keep.copy(), dict(errors), targets))
            seconds = time.perf_counter() - begin
            columns, notes = _batch_metrics(chosen, metrics is None, model, images, keep, targets, plan, explanation,
                                            value_range, seed, metric_settings)
            add_metric_columns(rows, columns, seconds, explanation, notes)
            results[key] = (arrays, rows)
        return results

    explained, resumed, seconds = run_stream(plans, probe, data_args, batch_size, settings_of, verbose, stores,
                                             process, overwrite=overwrite, durable=durable)
    rows = [_aggregate(folder, named[folder], batch_size, seed, confidence) for folder, _ in stores]
    from tfattr.core.files import write_text
    from tfattr.evaluation import format_table

    text = format_table(rows)
    write_text(os.path.join(out, "table.md"), text)
    write_text(os.path.join(out, "table.csv"), table_csv(rows, confidence))
    skipped = sum(note.startswith("skipped:") for row in rows for note in row.notes)
    if show_summary(verbose, skipped):
        notes = list(dict.fromkeys(f"  note ({row.method}): {note}" for row in rows for note in row.notes))
        print(f"evaluate_dataset: {explained} images explained and scored in {seconds:.1f}s"
              + (f", {resumed} found finished" if resumed else "") + "\n" + "".join(n + "\n" for n in notes)
              + "\n" + text, flush=True)
    return rows


def _output_classes(model) -> Optional[int]:
    try:
        shape = model.output_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, tuple) and len(shape) == 2 and isinstance(shape[-1], int):
        return int(shape[-1])
    return None


def _batch_metrics(chosen, default, model, images, keep, targets, plan, explanation, value_range, seed, settings):
    """``({column: (n,) values}, notes)`` of one method on one batch (NaN for skipped items)."""
    from tfattr.evaluation import named_metric_values as _named_metrics
    from tfattr.metrics.registry import MetricInputs, resolve_metrics

    n = len(keep)
    notes: List[str] = []
    labels = list(spec.label for spec, _ in chosen)
    if default:
        labels.append("completeness")
    columns = {label: np.full(n, np.nan) for label in labels}
    if explanation is None:
        return columns, notes
    specs = list(chosen)
    if default and explanation.delta is not None:
        specs += resolve_metrics(["completeness"])
    inputs = MetricInputs(model=model, images=images[keep], attributions=np.asarray(explanation), method=plan.method,
                          explanation=explanation, targets=np.asarray(targets)[keep], masks=None,
                          value_range=value_range, seed=seed, settings=settings)
    values = _named_metrics(specs, inputs, notes.append)
    for label, per_image in values.items():
        columns[label][keep] = per_image
    if default and explanation.delta is None:
        del columns["completeness"]
    return columns, notes


def _frame(rows):
    """The rows of a store as a pandas DataFrame (a pyarrow Table converted)."""
    return rows.to_pandas() if hasattr(rows, "to_pandas") else rows


def _aggregate(folder: str, name: str, chunk: int, seed: int, confidence: float):
    """The :class:`~tfattr.evaluation.EvaluationRow` of one method's store."""
    from tfattr.evaluation import EvaluationRow
    from tfattr.evaluation import summarize as _summary
    from tfattr.streaming.store import open_explanations

    frame = _frame(open_explanations(folder).rows()).sort_values("index")
    ok = frame[frame["status"] == "ok"]
    columns = [c for c in frame.columns if c.startswith(METRIC_PREFIX)]
    per_image = {c[len(METRIC_PREFIX):]: ok[c].to_numpy(np.float64) for c in columns}
    if "completeness" in per_image and not np.isfinite(per_image["completeness"]).any() and len(ok):
        del per_image["completeness"]
    scores, intervals = _summary(per_image, seed, confidence)
    per_chunk = frame.assign(chunk=frame["index"] // chunk).groupby("chunk").first()
    seconds = float(per_chunk["chunk_seconds"].sum())
    gradients = int(per_chunk["chunk_gradients"].sum())
    notes = list(dict.fromkeys(note for text in frame["notes"] for note in json.loads(text)))
    skipped = frame[frame["status"] != "ok"]
    if len(skipped):
        reasons = sorted(set(skipped["error"]))
        notes.append(f"skipped: {len(skipped)} of {len(frame)} items left out ({'; '.join(reasons[:3])}"
                     + ("; …" if len(reasons) > 3 else "") + ")")
    return EvaluationRow(name, seconds, gradients, scores, per_image, {}, notes=notes, ci=intervals)


def table_csv(rows, confidence: float = 0.95) -> str:
    """The rows as CSV: per metric its mean and the ends of its bootstrap interval, then seconds,
    gradients and the number of images."""
    columns = list(dict.fromkeys(c for r in rows for c in r.scores))
    level = f"{round(confidence * 100, 6):g}"
    header = ["method"] + [f"{c}{suffix}" for c in columns for suffix in ("", f" low{level}", f" high{level}")]
    header += ["seconds", "gradients", "images"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        cells = [r.method]
        for c in columns:
            low, high = r.ci.get(c, (np.nan, np.nan))
            cells += [repr(float(r.scores.get(c, np.nan))), repr(float(low)), repr(float(high))]
        count = len(next(iter(r.per_image.values()))) if r.per_image else 0
        cells += [f"{r.seconds:.3f}", str(r.gradients), str(count)]
        writer.writerow(cells)
    return buffer.getvalue()

