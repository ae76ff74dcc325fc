"""One path integrator for every gradient-based method.

The work of a method is a flat list of *rows*; row ``r`` says "take the gradient at
``z_b + α (x_e − z_b)`` for example ``e``, baseline ``b``, and add ``w ·
gradient`` (times ``x_e − z_b`` for integrated methods) to example ``e``'s
attribution". Integrated Gradients is the grid examples × baselines × quadrature
nodes; the gradient is the single row ``α = 1``; input × gradient is one row
``α = 1`` from a zero baseline with the multiplication; SmoothTaylor is IG with
its noisy roots as baselines and one node ``α = 0``; Grad-CAM and RSI-Grad-CAM are
the same rows with a layer's gradient function and another way to combine. A method
only builds rows and picks a gradient function and a combination.

The engine slices the rows into chunks of ``batch_size`` and runs one compiled
``tf.function`` per chunk that interpolates the points, calls the gradient
function, weights the gradients and sums them per example (a segment sum); the
per-example sums are accumulated on the host in float64. Consequences:

* memory is bounded by ``parallel_chunks × batch_size`` points, whatever the number of steps
  (``batch_size="auto"`` measures the fastest size up to a cap, :mod:`tfattr.core.autotune`);
* the result does not depend on ``batch_size`` (up to float32 summation order);
* the chunk function is traced once per input shape/dtype (its signature has a free
  batch axis), so calls with other batch sizes, step counts or rows do not retrace.

A model with several inputs runs on the same rows: its inputs are packed per example into
one ``(N, D)`` tensor (:class:`~tfattr.core.structure.InputLayout`), the chunk interpolates
that tensor, hands the model its list or dict of inputs and packs their gradients, so sums and
completeness run over every input together; inputs marked fixed keep ``z = x``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from tfattr.core import autotune
from tfattr.core.gradients import compiled_forward
from tfattr.core.targets import record_classes, recorded_classes, select_output

__all__ = ["PathRows", "EngineResult", "PathEngine", "COMBINES", "forward_outputs", "progress_bar"]

Verbose = Union[int, bool, str]

_AUTO_PROGRESS_CHUNKS = 64


def _interactive() -> bool:
    """stdout is a terminal, or a notebook renders it: a bar redrawn in place is read by someone."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return False


class LineProgress:
    """Progress as plain lines for stdout that is not a terminal (log files, pipes).

    Prints ``current/total units - elapsed - metric: value`` about every 10 % and at the end,
    with no ANSI codes, carriage returns or backspaces (``keras.utils.Progbar`` redraws its
    bar with them whenever it runs on a POSIX system). Same ``update`` call as ``Progbar``;
    metrics named in ``stateful_metrics`` show their last value, the others their mean.
    """

    def __init__(self, total: int, unit: str = "chunk"):
        self.total = int(total)
        self.unit = unit
        self.stateful_metrics = set()
        self._sums = {}
        self._every = max(1, math.ceil(self.total / 10))
        self._next = self._every
        self._start = time.perf_counter()

    def update(self, current: int, values=None, finalize=None) -> None:
        for name, value in values or ():
            if name in self.stateful_metrics:
                self._sums[name] = (float(value), 1)
            else:
                total, count = self._sums.get(name, (0.0, 0))
                self._sums[name] = (total + float(value), count + 1)
        if current < self._next and current < self.total:
            return
        self._next = (current // self._every + 1) * self._every
        parts = [f"{current}/{self.total} {self.unit}s", f"{time.perf_counter() - self._start:.0f}s"]
        parts += [f"{name}: {total / count:.4g}" for name, (total, count) in self._sums.items()]
        print(" - ".join(parts), flush=True)


def progress_bar(total: int, verbose: Verbose, unit: str = "chunk"):
    """A progress display when ``verbose`` asks for one, else ``None``.

    On a terminal (or in a notebook) a ``keras.utils.Progbar``; otherwise plain
    :class:`LineProgress` lines. ``verbose="auto"`` shows a bar for long runs only (≥ 64
    chunks) and only on a terminal or in a notebook: it writes nothing into logs.
    """
    interactive = _interactive()
    show = (total >= _AUTO_PROGRESS_CHUNKS and interactive) if verbose == "auto" else bool(verbose)
    if not show or total <= 1:
        return None
    if not interactive:
        return LineProgress(total, unit)
    import keras

    return keras.utils.Progbar(total, unit_name=unit)


@dataclass
class PathRows:
    """The points a method needs, one row each, sorted by example.

    Attributes:
        example: ``(R,)`` example index of each row (non-decreasing).
        baseline: ``(R,)`` index into the flat baseline tensor.
        alpha: ``(R,)`` position on the straight path from the baseline (0) to the input (1).
        weight: ``(R,)`` weight of the row's gradient in the example's sum.
    """

    example: np.ndarray
    baseline: np.ndarray
    alpha: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return int(self.example.shape[0])

    @classmethod
    def grid(
        cls,
        num_examples: int,
        num_baselines: int,
        alphas: np.ndarray,
        weights: np.ndarray,
        per_example_baselines: bool = True,
    ) -> "PathRows":
        """Rows for examples × baselines × nodes, averaged over baselines.

        Baselines are laid out flat as ``(num_examples or 1) × num_baselines``; with
        ``per_example_baselines=False`` every example uses the same ``num_baselines``.
        The weight of a row is ``w_m / num_baselines`` (IG_noise, SmoothTaylor eq. 3).
        """
        steps = len(alphas)
        example = np.repeat(np.arange(num_examples), num_baselines * steps)
        k = np.tile(np.repeat(np.arange(num_baselines), steps), num_examples)
        baseline = k + (example * num_baselines if per_example_baselines else 0)
        alpha = np.tile(np.asarray(alphas, np.float64), num_examples * num_baselines)
        weight = np.tile(np.asarray(weights, np.float64) / num_baselines, num_examples * num_baselines)
        return cls(example, baseline, alpha, weight)


@dataclass
class EngineResult:
    """What one integration returns.

    Attributes:
        attributions: ``(N, …)`` float64 per-example weighted sums.
        row_scores: ``(R,)`` float64 score of the model at each row's point.
        chunks: number of compiled chunk calls (= model forward+backward passes).
        endpoint: ``(N, …)`` mean differentiated values at ``α = 1`` (``collect_endpoint``), else ``None``.
        start: ``(N, …)`` mean differentiated values over each example's rows at ``α = 0`` (the
            baselines; ``collect_endpoint``), else ``None``; ``NaN`` for an example without such rows.
        squares: ``(N, …)`` per-example sums of squared row contributions (``collect_squares``), else ``None``.
        row_gradients: ``(R, …)`` each row's unweighted gradient (``collect_rows``), else ``None``.
        row_values: ``(R, …)`` each row's differentiated values (``collect_rows``), else ``None``.
        row_classes: ``(R,)`` the class each row explained: its target, or for a negative target
            the row's top-1 class, picked in the same forward pass (``None`` for callable scores'
            rows: their entries are the unused targets).
    """

    attributions: np.ndarray
    row_scores: np.ndarray
    chunks: int
    endpoint: Optional[np.ndarray] = None
    squares: Optional[np.ndarray] = None
    row_gradients: Optional[np.ndarray] = None
    row_values: Optional[np.ndarray] = None
    start: Optional[np.ndarray] = None
    row_classes: Optional[np.ndarray] = None


COMBINES = ("path", "plain", "stieltjes", "stieltjes_trapezoid", "stieltjes_left")
#: combinations that carry the previous row across chunks (run one chunk at a time)
SEQUENTIAL = ("stieltjes", "stieltjes_trapezoid", "stieltjes_left")
#: ops that write a variable non-atomically (Keras ``assign``/``assign_add`` is a read then an
#: ``AssignVariableOp``; Keras random layers advance a seed variable the same way): a model
#: whose forward pass holds one runs its chunks one at a time. ``AssignAddVariableOp`` and
#: ``AssignSubVariableOp`` hold the variable's lock and stay concurrent.
STATE_WRITES = frozenset({"AssignVariableOp", "ResourceScatterUpdate", "ResourceScatterNdUpdate",
                          "ResourceStridedSliceAssign", "AssignVariableXlaConcatND"})


def writes_state(function) -> bool:
    """Whether the traced ``tf.function`` (with an input signature) writes a variable
    non-atomically, in its graph or in a function it calls (cond/while bodies)."""
    graph = function.get_concrete_function().graph
    kinds = {op.type for op in graph.get_operations()}
    kinds.update(node.op for f in graph.as_graph_def().library.function for node in f.node_def)
    return bool(kinds & STATE_WRITES)


def needs_autograph(gradient_fn) -> bool:
    """Whether the chunk function must trace with AutoGraph: unless every piece of Python it runs
    is tfattr's or a Keras layer's (tfattr branches on Python values only; Keras runs a layer's
    ``call`` without AutoGraph conversion either way). A user's callable target, model function, ``tf.Module`` or gradient function
    may use a Python ``if`` on a tensor, which only AutoGraph turns into graph control flow.
    Without it, tracing skips the conversion: about a fifth of the first call's trace on
    MobileNetV2."""
    import keras

    from tfattr.core.gradients import InputGradients, LayerGradients, LayerInjection

    if type(gradient_fn) not in (InputGradients, LayerGradients) or gradient_fn.score_fn is not None:
        return True
    model = gradient_fn.model
    while True:
        if isinstance(model, LayerInjection):
            model = model.model
        elif type(model).__name__ == "SyncedClone" and hasattr(model, "clone"):
            model = model.clone
        else:
            break
    # a Keras layer or model: Keras runs its `call` without AutoGraph conversion, traced or not
    return not isinstance(model, keras.layers.Layer)


def rows_at_inputs(rows: "PathRows", num_examples: int, combine: str, relative: bool, baselines) -> bool:
    """Whether ``rows`` are the inputs themselves: one row per example in example order, at
    ``α = 1`` with weight 1 from zero baselines, combined ``"plain"`` (gradients, Grad-CAM). Their
    chunks then run the gradient pass alone (see :meth:`PathEngine._build_chunk`)."""
    return (combine == "plain" and not relative and len(rows) == num_examples
            and np.array_equal(rows.example, np.arange(num_examples)) and bool(np.all(rows.alpha == 1.0))
            and bool(np.all(rows.weight == 1.0)) and not np.any(baselines.numpy()))


def _current_device() -> str:
    """The device of the calling thread's ``tf.device`` scope ("" when none is set)."""
    from tensorflow.python.eager import context  # no public accessor for the scope's device

    return context.context().device_name or ""


class PathEngine:
    """Chunked, compiled evaluation of a list of :class:`PathRows`.

    Args:
        gradient_fn: ``(points, target_rows) -> (scores, gradients, values)`` where
            ``gradients = ∂scores/∂values`` and ``values`` is the differentiated tensor:
            the points themselves (:class:`~tfattr.core.gradients.InputGradients`) or a
            layer's activations (:class:`~tfattr.core.gradients.LayerGradients`).
        batch_size: points per chunk (one forward+backward pass each), or ``"auto"``: sizes
            measured on the call's own rows and the fastest kept for the process (per model,
            gradient function, input shape, combination and device; capped, see
            :mod:`tfattr.core.autotune`). Chunks may then differ in size within a call; rows
            still run in order and are summed in chunk order.
        combine: how a row's gradient ``g_r`` enters its example's sum:

            * ``"path"``: ``w_r · g_r ⊙ (x_e − z_b)`` — Integrated Gradients (eq. 3 of
              Sundararajan et al.), input × gradient, SmoothTaylor;
            * ``"plain"``: ``w_r · g_r`` — gradients and their averages (SmoothGrad, Grad-CAM);
            * ``"stieltjes"``: ``w_r · g_r ⊙ (v_r − v_{r−1})`` with ``v`` the values of the
              previous row — a Riemann–Stieltjes sum along the path (RSI-Grad-CAM eq. 6).
              Rows must list each path's nodes in increasing ``α`` starting at ``α₀`` with
              weight 0; the previous value is carried across chunk boundaries.
            * ``"stieltjes_trapezoid"``: ``w_r · ½(g_r + g_{r−1}) ⊙ (v_r − v_{r−1})`` — the
              same sum with the trapezoid average of the integrand over each interval (the
              RSI-Grad-CAM authors' notebook); the previous gradient is carried too.
            * ``"stieltjes_left"``: ``w_r · g_{r−1} ⊙ (v_r − v_{r−1})`` — the integrand at each
              interval's left end (captum's conductance sum); carried as the trapezoid's.
        collect_endpoint: also return the mean of ``values`` over each example's rows at
            ``α = 1`` (a layer's activations at the input itself) and at ``α = 0`` (at the
            baselines, ``EngineResult.start``).
        collect_squares: also return ``Σ_r contribution_r²`` per example (``EngineResult.squares``),
            from which a Monte-Carlo standard error follows when rows are i.i.d. samples.
        collect_rows: also return every row's gradient and values (``EngineResult.row_gradients``,
            ``row_values``; host memory grows with the rows), for methods that combine points
            across refinement levels (adaptive RSI-Grad-CAM).
        parallel_chunks: chunks in flight at once (default 2), each from its own host thread:
            while one chunk's kernels run, the next is dispatched, and on a CPU two chunks share
            the cores better than one (measured 3–8% faster than one chunk after the other on 2
            cores). Results are summed in chunk order, so they do not depend on it; memory holds
            ``parallel_chunks`` chunks. The Riemann–Stieltjes combinations run one chunk at a time
            (each chunk needs the previous one's activations), and so does a model whose forward
            pass writes its variables non-atomically (see :data:`STATE_WRITES`; found in the
            traced graph), so that no write is lost.
        verbose: ``0``/``False``, ``1``/``True`` or ``"auto"`` (progress for long runs).
    """

    def __init__(
        self,
        gradient_fn: Callable,
        batch_size: Union[int, str] = 16,
        combine: str = "path",
        collect_endpoint: bool = False,
        verbose: Verbose = "auto",
        collect_squares: bool = False,
        collect_rows: bool = False,
        parallel_chunks: int = 2,
    ):
        if combine not in COMBINES:
            raise ValueError(f"`combine` must be one of {COMBINES}. Received: combine={combine!r}")
        self.gradient_fn = gradient_fn
        self.batch_size = autotune.AUTO if batch_size == autotune.AUTO else int(batch_size)
        self.combine = combine
        self.collect_endpoint = bool(collect_endpoint)
        self.collect_squares = bool(collect_squares)
        self.collect_rows = bool(collect_rows)
        self.parallel_chunks = max(1, int(parallel_chunks))
        self.verbose = verbose
        self._compiled = {}
        self._lock = threading.Lock()  # replicas of tfattr.distribute share one engine
        self.traces = 0

    def _chunk_function(self, shape: Tuple[int, ...], dtype: tf.DType, relative: bool = False, clip=None,
                        combine: Optional[str] = None, layout=None, direct: bool = False):
        combine = self.combine if combine is None else combine
        key = (shape, dtype.name, relative, clip, combine, self.collect_squares, self.collect_rows, direct)
        if layout is not None:
            key += (layout,)
        with self._lock:
            if key not in self._compiled:
                chunk = self._build_chunk(shape, dtype, relative, clip, combine, layout, direct)
                chunk.writes_state = writes_state(chunk)  # traces it, once, under the lock
                self._compiled[key] = chunk
            return self._compiled[key]

    def _build_chunk(self, shape, dtype, relative, clip, combine, layout=None, direct=False):
        """The compiled chunk. ``direct``: the rows are the inputs themselves, one per example in
        example order at ``α = 1`` with weight 1 from a zero baseline, combined ``"plain"`` (gradients,
        guided backprop, Grad-CAM): the chunk is the gradient pass on the rows of ``x`` and nothing
        else — no interpolation, weighting or segment sums, whose results equal it bit for bit
        (``0 + 1·(x − 0) = x`` and ``1·g = g`` exactly, one row per segment), except the sign of a
        zero input: the general chunk turns ``−0.0`` into ``+0.0``, the direct one keeps it."""
        rank = len(shape) + 1
        acc_dtype = tf.float64 if dtype == tf.float64 else tf.float32
        gradient_fn = self.gradient_fn
        collect = self.collect_endpoint
        squares = self.collect_squares
        keep_rows = self.collect_rows
        point_spec = tf.TensorSpec([None, *shape], dtype)
        index_spec = tf.TensorSpec([None], tf.int32)
        real_spec = tf.TensorSpec([None], tf.float64)

        def per_row(vector, like):
            return tf.reshape(tf.cast(vector, like.dtype), [-1] + [1] * (like.shape.rank - 1))

        def gradients_at(points, target_rows):
            """``(scores, gradients, values, classes)`` of the rows at ``points``, in ``acc_dtype``."""
            classes = record_classes()  # a negative class is the row's top-1, picked in this graph
            if layout is None:
                scores, gradients, values = gradient_fn(points, target_rows)
            else:  # several inputs packed in `points`: the model gets its list/dict, the gradients are packed
                scores, gradients, values = gradient_fn(layout.unpack(points), target_rows)
                if isinstance(gradients, (list, tuple, dict)):
                    gradients, values = layout.pack(gradients, acc_dtype), points
            classes = recorded_classes(classes, target_rows)
            return scores, tf.cast(gradients, acc_dtype), tf.cast(values, acc_dtype), classes

        def direct_chunk(x, example, target_rows, count):
            points = tf.gather(x, example)  # a copy, as in the general chunk (a slice of x rounds otherwise)
            scores, sums, values, classes = gradients_at(points, target_rows)
            empty = tf.zeros([0], acc_dtype)
            if collect:
                endpoint, ends = values, tf.ones([count], acc_dtype)
                start, starts = tf.zeros_like(values), tf.zeros([count], acc_dtype)
            else:
                endpoint = ends = start = starts = empty
            squared = sums * sums if squares else empty
            row_out = (sums, values) if keep_rows else (empty, empty)
            return (tf.cast(scores, tf.float64), sums, endpoint, ends, values[-1:], squared) + row_out + (start, starts,
                                                                                                          classes)

        @tf.function(
            input_signature=[
                point_spec,  # x: all examples
                point_spec,  # baselines: flat
                index_spec,  # example of each row
                index_spec,  # baseline of each row
                real_spec,  # alpha
                real_spec,  # weight
                index_spec,  # class of each row
                tf.TensorSpec([], tf.int32),  # first example in the chunk
                tf.TensorSpec([], tf.int32),  # number of examples in the chunk
                tf.TensorSpec(None, acc_dtype),  # stieltjes: the row before the chunk (values[, gradient]) or empty
                real_spec,  # relative baselines: per-example factor of the offsets
            ],
            autograph=needs_autograph(gradient_fn),
        )
        def chunk(x, baselines, example, baseline, alpha, weight, target_rows, first, count, carry, scale):
            self.traces += 1  # runs only while tracing
            if direct:
                return direct_chunk(x, example, target_rows, count)
            inputs = tf.gather(x, example)
            starts = tf.gather(baselines, baseline)
            if relative:  # baselines are offsets around each input, scaled per example
                starts = inputs + starts * tf.reshape(tf.cast(tf.gather(scale, example), dtype), [-1] + [1] * (rank - 1))
                if clip is not None:
                    starts = tf.clip_by_value(starts, tf.cast(clip[0], dtype), tf.cast(clip[1], dtype))
            if layout is not None and any(layout.fixed):  # fixed inputs: baseline = input, x − z = 0 exactly
                starts = tf.where(tf.constant(layout.fixed_mask()[None]), inputs, starts)
            delta = inputs - starts
            points = starts + tf.reshape(tf.cast(alpha, dtype), [-1] + [1] * (rank - 1)) * delta
            scores, gradients, values, classes = gradients_at(points, target_rows)
            contribution = gradients * per_row(weight, gradients)
            if combine == "path":
                contribution = contribution * tf.cast(delta, acc_dtype)
            elif combine == "stieltjes":
                head = tf.cond(tf.shape(carry)[0] > 0,
                               lambda: tf.reshape(carry, tf.shape(values[:1])), lambda: values[:1])
                previous = tf.concat([head, values[:-1]], axis=0)
                contribution = contribution * (values - previous)
            elif combine in ("stieltjes_trapezoid", "stieltjes_left"):
                both = tf.concat([values[:1], gradients[:1]], axis=0)
                head = tf.cond(tf.shape(carry)[0] > 0, lambda: tf.reshape(carry, tf.shape(both)), lambda: both)
                previous = tf.concat([head[:1], values[:-1]], axis=0)
                previous_gradients = tf.concat([head[1:], gradients[:-1]], axis=0)
                slope = previous_gradients if combine == "stieltjes_left" else 0.5 * (gradients + previous_gradients)
                contribution = slope * per_row(weight, gradients) * (values - previous)
            local = example - first
            sums = tf.math.unsorted_segment_sum(contribution, local, count)
            if collect:
                at_end = tf.cast(tf.equal(alpha, 1.0), acc_dtype)
                endpoint = tf.math.unsorted_segment_sum(values * per_row(at_end, values), local, count)
                ends = tf.math.unsorted_segment_sum(at_end, local, count)
                at_start = tf.cast(tf.equal(alpha, 0.0), acc_dtype)
                start = tf.math.unsorted_segment_sum(values * per_row(at_start, values), local, count)
                starts = tf.math.unsorted_segment_sum(at_start, local, count)
            else:
                endpoint, ends = tf.zeros([0], acc_dtype), tf.zeros([0], acc_dtype)
                start, starts = tf.zeros([0], acc_dtype), tf.zeros([0], acc_dtype)
            if squares:  # Σ_r contribution_r², for Monte-Carlo standard errors when rows are i.i.d. samples
                squared = tf.math.unsorted_segment_sum(contribution * contribution, local, count)
            else:
                squared = tf.zeros([0], acc_dtype)
            if keep_rows:
                row_out = (gradients, values)
            else:
                row_out = (tf.zeros([0], acc_dtype), tf.zeros([0], acc_dtype))
            last = (tf.concat([values[-1:], gradients[-1:]], axis=0)
                    if combine in ("stieltjes_trapezoid", "stieltjes_left") else values[-1:])
            return (tf.cast(scores, tf.float64), sums, endpoint, ends, last, squared) + row_out + (start, starts,
                                                                                                   classes)

        return chunk

    def integrate(self, x: tf.Tensor, baselines: tf.Tensor, target_indices: np.ndarray, rows: PathRows,
                  relative: bool = False, clip=None, scale: Optional[np.ndarray] = None,
                  combine: Optional[str] = None, layout=None) -> EngineResult:
        """Evaluate all rows and return the per-example weighted gradient sums.

        Args:
            x: ``(N, …)`` inputs, already in the model's input dtype.
            baselines: ``(B, …)`` flat baselines, same dtype.
            target_indices: ``(N,)`` class per example (ignored by callable scores).
            rows: the work, sorted by example.
            relative: the baselines are offsets: a row's start is ``x_e + baselines[b]``.
            clip: ``(low, high)`` to clip relative starts to, or ``None``.
            scale: ``(N,)`` factors of the relative offsets per example (default 1).
            combine: this call's combination (see the class docstring); default the engine's.
                Each combination compiles its own function once.
            layout: for a model with several inputs, the :class:`~tfattr.core.structure.InputLayout`
                of ``x`` (``(N, D)``, every input packed): the chunk hands the model its inputs
                unpacked and packs their gradients; the positions of fixed inputs start at ``x``.
        """
        num_examples = int(x.shape[0])
        shape = tuple(int(d) for d in x.shape[1:])
        combine = self.combine if combine is None else combine
        if combine not in COMBINES:
            raise ValueError(f"`combine` must be one of {COMBINES}. Received: combine={combine!r}")
        direct = rows_at_inputs(rows, num_examples, combine, relative, baselines)
        chunk = self._chunk_function(shape, x.dtype, bool(relative), None if clip is None else tuple(map(float, clip)),
                                     combine, layout, direct)
        acc_dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
        total = len(rows)
        attributions = endpoint = ends = squares = origin = origins = None
        row_scores = np.zeros(total, dtype=np.float64)
        row_classes = np.zeros(total, dtype=np.int32)
        example = rows.example.astype(np.int32)
        baseline = rows.baseline.astype(np.int32)
        targets = np.asarray(target_indices, dtype=np.int32)[example]
        carry = tf.zeros([0], acc_dtype)
        scale = tf.constant(np.ones(num_examples) if scale is None else np.asarray(scale, np.float64), tf.float64)
        # the Stieltjes sums carry across chunks; a model that writes its variables must not run twice at once
        workers = 1 if combine in SEQUENTIAL or getattr(chunk, "writes_state", False) else self.parallel_chunks
        # the caller's device (tf.device scopes are per thread): worker threads run there too
        device = _current_device()
        fresh, chunk.ran = not getattr(chunk, "ran", False), True
        schedule = self._schedule(shape, x.dtype, combine, bool(relative), total, workers, device, fresh)
        num_chunks = schedule.estimate_chunks(total)
        bar = progress_bar(num_chunks, self.verbose)
        kept_gradients, kept_values = [], []
        done = 0

        def call(start, stop, carry):
            part = slice(start, stop)
            first = int(example[start])
            count = int(example[stop - 1]) - first + 1
            with tf.device(device) if device else contextlib.nullcontext():
                outputs = chunk(
                    x,
                    baselines,
                    tf.constant(example[part]),
                    tf.constant(baseline[part]),
                    tf.constant(rows.alpha[part], tf.float64),
                    tf.constant(rows.weight[part], tf.float64),
                    tf.constant(targets[part]),
                    tf.constant(first, tf.int32),
                    tf.constant(count, tf.int32),
                    carry,
                    scale,
                )
            return first, count, outputs

        def consume(start, stop, first, count, outputs):
            nonlocal attributions, endpoint, ends, squares, origin, origins, done
            (scores, sums, chunk_endpoint, chunk_ends, _, chunk_squares, row_gradients, row_values, chunk_start,
             chunk_starts, chunk_classes) = outputs
            sums = sums.numpy()
            if attributions is None and first == 0 and count == num_examples:
                # one chunk holds every example (a single-point method's call): its sums are the
                # result, taken as they are (0 + s = s) without zero-filled arrays to add them to
                attributions = sums.astype(np.float64)
                if self.collect_squares:
                    squares = chunk_squares.numpy().astype(np.float64)
                if self.collect_endpoint:
                    endpoint = chunk_endpoint.numpy().astype(np.float64)
                    ends = chunk_ends.numpy().astype(np.float64)
                    origin = chunk_start.numpy().astype(np.float64)
                    origins = chunk_starts.numpy().astype(np.float64)
            else:
                if attributions is None:
                    attributions = np.zeros((num_examples,) + sums.shape[1:], dtype=np.float64)
                    if self.collect_endpoint:
                        endpoint = np.zeros_like(attributions)
                        ends = np.zeros(num_examples)
                        origin = np.zeros_like(attributions)
                        origins = np.zeros(num_examples)
                attributions[first : first + count] += sums
                if self.collect_squares:
                    if squares is None:
                        squares = np.zeros_like(attributions)
                    squares[first : first + count] += chunk_squares.numpy()
                if self.collect_endpoint:
                    endpoint[first : first + count] += chunk_endpoint.numpy()
                    ends[first : first + count] += chunk_ends.numpy()
                    origin[first : first + count] += chunk_start.numpy()
                    origins[first : first + count] += chunk_starts.numpy()
            row_scores[start:stop] = scores.numpy()
            row_classes[start:stop] = chunk_classes.numpy()
            if self.collect_rows:
                kept_gradients.append(row_gradients.numpy())
                kept_values.append(row_values.numpy())
            done += 1
            if bar is not None:
                bar.update(min(done, num_chunks))

        def run(spans, carry, pool):
            """Run ``spans`` (row ranges, in order) and sum them in order; ``workers`` in flight."""
            if pool is None or len(spans) <= 1:
                for start, stop in spans:
                    first, count, outputs = call(start, stop, carry)
                    carry = outputs[4]
                    consume(start, stop, first, count, outputs)
                return carry
            pending = deque()
            for start, stop in spans:
                pending.append((start, stop, pool.submit(call, start, stop, carry)))
                if len(pending) >= workers:
                    begin, end, future = pending.popleft()
                    consume(begin, end, *future.result())
            while pending:
                begin, end, future = pending.popleft()
                consume(begin, end, *future.result())
            return carry

        # The schedule's rounds first: the first chunk alone (it traces the chunk function on first
        # use) and, while batch_size="auto" is measuring, timed rounds of chunks in flight together;
        # then the rest at one size, `workers` chunks at a time. Chunks are summed in chunk order, so
        # the result does not depend on the timing.
        with ThreadPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext() as pool:
            start = 0
            while start < total:
                planned = schedule.next_round(total - start)
                if planned is None:
                    break
                spans = []
                for size in planned[0]:
                    spans.append((start, min(start + size, total)))
                    start = spans[-1][1]
                began = autotune.clock()
                carry = run(spans, carry, pool)
                if planned[1]:
                    schedule.record([stop - begin for begin, stop in spans], autotune.clock() - began)
            size = schedule.size
            run([(s, min(s + size, total)) for s in range(start, total, size)], carry, pool)
        if self.collect_endpoint:
            with np.errstate(invalid="ignore", divide="ignore"):
                if not np.all(ends == 1.0):  # one row at α = 1 per example: the mean is the row
                    endpoint = endpoint / ends.reshape((-1,) + (1,) * (endpoint.ndim - 1))
                origin = origin / origins.reshape((-1,) + (1,) * (origin.ndim - 1))
        if self.collect_rows:
            kept_gradients = np.concatenate(kept_gradients) if kept_gradients else None
            kept_values = np.concatenate(kept_values) if kept_values else None
        else:
            kept_gradients = kept_values = None
        return EngineResult(attributions, row_scores, done, endpoint, squares, kept_gradients, kept_values, origin,
                            row_classes)

    def _schedule(self, shape, dtype, combine, relative, total, workers, device, fresh):
        """The chunk sizes of one call: every chunk of an explicit ``batch_size``, or for ``"auto"``
        the :mod:`~tfattr.core.autotune` session of this key (sizes measured on the call's own rows)."""
        if self.batch_size != autotune.AUTO:
            return autotune.FixedSchedule(int(self.batch_size))
        tuner = autotune.tuner_for(self.gradient_fn, shape, dtype, combine, workers, device, relative)
        return tuner.session(total, fresh)


def forward_outputs(model, points, batch_size: int, output=None, layout=None) -> np.ndarray:
    """Model outputs on ``points`` in chunks of ``batch_size`` (compiled, no gradient); of a model
    with several outputs, the one ``output`` names (:func:`~tfattr.core.targets.select_output`);
    ``layout``: ``points`` pack several inputs (:class:`~tfattr.core.structure.InputLayout`)."""
    forward = compiled_forward(model)
    eager_first = batch_size == autotune.AUTO  # a one-off pass runs eagerly, not traced (see compiled_forward)
    batch_size = autotune.forward_size(batch_size)
    outputs = []
    for start in range(0, int(points.shape[0]), batch_size):
        batch = points[start : start + batch_size]
        chosen = select_output(forward(batch if layout is None else layout.unpack(batch), eager_first=eager_first),
                               output)
        outputs.append(np.asarray(chosen, dtype=np.float64))
    return np.concatenate(outputs, axis=0)
