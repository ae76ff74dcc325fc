"""One engine for every method: chunked, compiled rows of gradients or of forward passes.

The work of a method is a flat list of *rows*. A **path row** ``r`` says "take the gradient at
``z_b + α (x_e − z_b)`` for example ``e``, baseline ``b``, and add ``w ·
gradient`` (times ``x_e − z_b`` for integrated methods) to example ``e``'s
attribution". Integrated Gradients is the grid examples × baselines × quadrature
nodes; the gradient is the single row ``α = 1``; input × gradient is one row
``α = 1`` from a zero baseline with the multiplication; SmoothTaylor is IG with
its noisy roots as baselines and one node ``α = 0``; Grad-CAM and RSI-Grad-CAM are
the same rows with a layer's gradient function and another way to combine. A method
only builds rows and picks a gradient function and a combination (:data:`COMBINATIONS`).

A **forward row** (:class:`ForwardRows`, :class:`ForwardEngine`) is a batched forward pass and
no gradient: a perturbed copy of example ``e`` that the method builds on the device from the
row's index (occlusion windows, RISE masks drawn per row from a seed, deletion steps), scored
by the model's target, and combined per example (the scores themselves, or a weighted sum of
score × a per-row vector). Perturbation methods and metrics run on them.

The engine slices the rows into chunks of ``batch_size`` and runs one compiled
``tf.function`` per chunk that builds the points, calls the gradient function (or the model),
combines the rows and sums them per example (a segment sum); the per-example sums are
accumulated on the host in float64 (:class:`_Accumulator`). Consequences:

* memory is bounded by ``parallel_chunks × batch_size`` points, whatever the number of steps
  (``batch_size="auto"`` measures the fastest size up to a cap, :mod:`tfattr.core.autotune`;
  forward rows are measured apart from gradient rows);
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
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from tfattr.core import autotune
from tfattr.core.gradients import compiled_forward
from tfattr.core.progress import LineProgress, ProgressCount, Verbose, progress_bar  # noqa: F401  (re-exported)
from tfattr.core.targets import OutputScore, record_classes, recorded_classes, select_output, select_scores
from tfattr.errors import InvalidInputError, received

__all__ = ["PathRows", "EngineResult", "PathEngine", "COMBINES", "COMBINATIONS", "ChunkOutputs",
           "ForwardRows", "ForwardEngine", "ForwardResult", "ChunkRows", "FORWARD_COMBINES",
           "NestedStieltjesPaths", "forward_outputs", "progress_bar"]


#: the most rows (points: examples × baselines × nodes) one call integrates: 2^24, whose index
#: arrays take ~1 GiB while built (hours of gradients even at thousands of points a second)
MAX_ROWS = 1 << 24


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
        if num_examples * num_baselines * steps > MAX_ROWS:  # refused before the index arrays exist
            from tfattr.errors import InvalidInputError, received

            raise InvalidInputError(
                f"A call would integrate {num_examples} examples x {num_baselines} baselines x {steps} steps "
                f"= {num_examples * num_baselines * steps} gradient evaluations, over the {MAX_ROWS} one call "
                "indexes (~64 bytes each); lower `steps` or `n_baselines`, or split the batch. "
                + received("(examples, n_baselines, steps)", (num_examples, num_baselines, steps)))
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


# -- combinations: how a path row's gradient enters its example's sum ------------------------------

class RowTerms(NamedTuple):
    """What a combination sees of a chunk's rows (all in the accumulation dtype, rows first).

    Attributes:
        gradients: ``(rows, …)`` ``∂score/∂values`` at each row's point.
        values: ``(rows, …)`` the differentiated tensor at each point (the point, or a layer's
            activations).
        weight: ``(rows,)`` float64 weight of each row.
        delta: ``(rows, …)`` ``x_e − z_b``, the path's direction in the input's dtype.
    """

    gradients: tf.Tensor
    values: tf.Tensor
    weight: tf.Tensor
    delta: tf.Tensor


def _per_row(vector, like):
    """``vector`` (one value per row) cast to ``like``'s dtype and shaped to broadcast over it."""
    return tf.reshape(tf.cast(vector, like.dtype), [-1] + [1] * (like.shape.rank - 1))


def _previous(carry, first):
    """The row before a chunk: the carried one, or (first chunk) ``first`` itself (a zero increment)."""
    return tf.cond(tf.shape(carry)[0] > 0, lambda: tf.reshape(carry, tf.shape(first)), lambda: first)


def combine_plain(rows: RowTerms, carry):
    """``w_r · g_r``: gradients and their averages (SmoothGrad, Grad-CAM)."""
    return rows.gradients * _per_row(rows.weight, rows.gradients), rows.values[-1:]


def combine_path(rows: RowTerms, carry):
    """``w_r · g_r ⊙ (x_e − z_b)``: Integrated Gradients (eq. 3 of Sundararajan et al.), input ×
    gradient, SmoothTaylor."""
    weighted = rows.gradients * _per_row(rows.weight, rows.gradients)
    return weighted * tf.cast(rows.delta, rows.gradients.dtype), rows.values[-1:]


def combine_stieltjes(rows: RowTerms, carry):
    """``w_r · g_r ⊙ (v_r − v_{r−1})``: a Riemann–Stieltjes sum along the path (RSI-Grad-CAM eq. 6);
    ``carry`` is the previous chunk's last values."""
    values = rows.values
    previous = tf.concat([_previous(carry, values[:1]), values[:-1]], axis=0)
    weighted = rows.gradients * _per_row(rows.weight, rows.gradients)
    return weighted * (values - previous), values[-1:]


def combine_stieltjes_trapezoid(rows: RowTerms, carry):
    """``w_r · ½(g_r + g_{r−1}) ⊙ (v_r − v_{r−1})``: the Riemann–Stieltjes sum with the trapezoid
    average of the integrand (the RSI-Grad-CAM authors' notebook); ``carry`` is the previous
    chunk's last values and gradient, stacked."""
    values, gradients = rows.values, rows.gradients
    head = _previous(carry, tf.concat([values[:1], gradients[:1]], axis=0))
    previous = tf.concat([head[:1], values[:-1]], axis=0)
    previous_gradients = tf.concat([head[1:], gradients[:-1]], axis=0)
    contribution = 0.5 * (gradients + previous_gradients) * _per_row(rows.weight, gradients) * (values - previous)
    return contribution, tf.concat([values[-1:], gradients[-1:]], axis=0)


def combine_stieltjes_left(rows: RowTerms, carry):
    """``w_r · g_{r−1} ⊙ (v_r − v_{r−1})``: the Riemann–Stieltjes sum with the integrand at each
    interval's left end (captum's conductance sum); carried as the trapezoid's."""
    values, gradients = rows.values, rows.gradients
    head = _previous(carry, tf.concat([values[:1], gradients[:1]], axis=0))
    previous = tf.concat([head[:1], values[:-1]], axis=0)
    previous_gradients = tf.concat([head[1:], gradients[:-1]], axis=0)
    contribution = previous_gradients * _per_row(rows.weight, gradients) * (values - previous)
    return contribution, tf.concat([values[-1:], gradients[-1:]], axis=0)


#: the combinations of path rows: ``name -> f(RowTerms, carry) -> (contributions, carry)``
COMBINATIONS: Dict[str, Callable] = {
    "path": combine_path,
    "plain": combine_plain,
    "stieltjes": combine_stieltjes,
    "stieltjes_trapezoid": combine_stieltjes_trapezoid,
    "stieltjes_left": combine_stieltjes_left,
}
COMBINES = tuple(COMBINATIONS)
#: combinations that carry the previous row across chunks (run one chunk at a time)
SEQUENTIAL = ("stieltjes", "stieltjes_trapezoid", "stieltjes_left")
#: ops that write a variable non-atomically (Keras ``assign``/``assign_add`` is a read then an
#: ``AssignVariableOp``; Keras random layers advance a seed variable the same way): a model
#: whose forward pass holds one runs its chunks one at a time. ``AssignAddVariableOp`` and
#: ``AssignSubVariableOp`` hold the variable's lock and stay concurrent.
STATE_WRITES = frozenset({"AssignVariableOp", "ResourceScatterUpdate", "ResourceScatterNdUpdate",
                          "ResourceStridedSliceAssign", "AssignVariableXlaConcatND"})


def _check_combine(combine):
    if combine not in COMBINATIONS:
        raise InvalidInputError(f"`combine` must be one of {COMBINES}. " + received("combine", combine))


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
    ``call`` without AutoGraph conversion either way). A user's callable target, model function,
    ``tf.Module`` or gradient function may use a Python ``if`` on a tensor, which only AutoGraph
    turns into graph control flow. Without it, tracing skips the conversion: about a fifth of the
    first call's trace on MobileNetV2."""
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


# -- what a chunk returns, and the host-side sums ---------------------------------------------------

class ChunkOutputs(NamedTuple):
    """What one compiled chunk returns; entries not asked for are empty tensors.

    Attributes:
        scores: ``(rows,)`` float64 score of the model at each row's point.
        sums: ``(examples in the chunk, …)`` per-example sums of the rows' contributions.
        carry: the chunk's last row (values, and gradient for the trapezoid) for the next chunk's
            Riemann–Stieltjes increment.
        squares: per-example sums of squared contributions (``collect_squares``).
        input_values: per-example sums of the values of rows at ``α = 1`` (``collect_endpoint``).
        input_rows: ``(examples in the chunk,)`` how many rows were at ``α = 1``.
        baseline_values: per-example sums of the values of rows at ``α = 0`` (``collect_endpoint``).
        baseline_rows: ``(examples in the chunk,)`` how many rows were at ``α = 0``.
        row_gradients: ``(rows, …)`` every row's unweighted gradient (``collect_rows``).
        row_values: ``(rows, …)`` every row's values (``collect_rows``).
        classes: ``(rows,)`` the class each row explained (its top-1 for a negative target).
    """

    scores: tf.Tensor
    sums: tf.Tensor
    carry: tf.Tensor
    squares: tf.Tensor
    input_values: tf.Tensor
    input_rows: tf.Tensor
    baseline_values: tf.Tensor
    baseline_rows: tf.Tensor
    row_gradients: tf.Tensor
    row_values: tf.Tensor
    classes: tf.Tensor


def _chunk_examples(example: np.ndarray, start: int, stop: int) -> Tuple[int, int]:
    """``(first, count)``: the first example of rows ``start:stop`` and how many examples they span."""
    first = int(example[start])
    return first, int(example[stop - 1]) - first + 1


class _Accumulator:
    """The host side of one engine call: every chunk's per-example sums added in chunk order in
    float64, its row scores and classes stored, and (on request) the α = 1 / α = 0 values, the
    squared contributions and every row's gradient and values kept.

    A chunk holding every example (a single-point method's call) is taken as it is (``0 + s = s``)
    without zero-filled arrays to add it to.
    """

    def __init__(self, num_examples: int, total: int, endpoint: bool = False, squares: bool = False,
                 rows: bool = False):
        self.num_examples = num_examples
        self.want_endpoint, self.want_squares, self.want_rows = endpoint, squares, rows
        self.sums = self.squares = None
        self.input_values = self.input_rows = self.baseline_values = self.baseline_rows = None
        self.row_scores = np.zeros(total, dtype=np.float64)
        self.row_classes = np.zeros(total, dtype=np.int32)
        self.kept_gradients: List[np.ndarray] = []
        self.kept_values: List[np.ndarray] = []

    def add(self, start: int, stop: int, first: int, count: int, out) -> None:
        """Add the chunk of rows ``start:stop`` (examples ``first … first + count − 1``)."""
        sums = out.sums.numpy() if out.sums is not None else None
        if sums is not None and sums.shape[:1] == (count,):
            self._add_sums(sums, first, count, out)
        self.row_scores[start:stop] = out.scores.numpy()
        self.row_classes[start:stop] = out.classes.numpy()
        if self.want_rows:
            self.kept_gradients.append(out.row_gradients.numpy())
            self.kept_values.append(out.row_values.numpy())

    def _add_sums(self, sums: np.ndarray, first: int, count: int, out) -> None:
        if self.sums is None and first == 0 and count == self.num_examples:
            self.sums = sums.astype(np.float64)
            if self.want_squares:
                self.squares = out.squares.numpy().astype(np.float64)
            if self.want_endpoint:
                self.input_values = out.input_values.numpy().astype(np.float64)
                self.input_rows = out.input_rows.numpy().astype(np.float64)
                self.baseline_values = out.baseline_values.numpy().astype(np.float64)
                self.baseline_rows = out.baseline_rows.numpy().astype(np.float64)
            return
        if self.sums is None:
            self.sums = np.zeros((self.num_examples,) + sums.shape[1:], dtype=np.float64)
            if self.want_endpoint:
                self.input_values = np.zeros_like(self.sums)
                self.input_rows = np.zeros(self.num_examples)
                self.baseline_values = np.zeros_like(self.sums)
                self.baseline_rows = np.zeros(self.num_examples)
        part = slice(first, first + count)
        self.sums[part] += sums
        if self.want_squares:
            if self.squares is None:
                self.squares = np.zeros_like(self.sums)
            self.squares[part] += out.squares.numpy()
        if self.want_endpoint:
            self.input_values[part] += out.input_values.numpy()
            self.input_rows[part] += out.input_rows.numpy()
            self.baseline_values[part] += out.baseline_values.numpy()
            self.baseline_rows[part] += out.baseline_rows.numpy()

    def result(self, chunks: int) -> "EngineResult":
        endpoint = start = None
        if self.want_endpoint:
            endpoint, start = self.input_values, self.baseline_values
            with np.errstate(invalid="ignore", divide="ignore"):
                if not np.all(self.input_rows == 1.0):  # one row at α = 1 per example: the mean is the row
                    endpoint = endpoint / self.input_rows.reshape((-1,) + (1,) * (endpoint.ndim - 1))
                start = start / self.baseline_rows.reshape((-1,) + (1,) * (start.ndim - 1))
        gradients = values = None
        if self.want_rows:
            gradients = np.concatenate(self.kept_gradients) if self.kept_gradients else None
            values = np.concatenate(self.kept_values) if self.kept_values else None
        return EngineResult(self.sums, self.row_scores, chunks, endpoint, self.squares, gradients, values, start,
                            self.row_classes)


# -- the chunk loop shared by path and forward rows --------------------------------------------------

def _run_chunks(call: Callable, consume: Callable, total: int, schedule, workers: int, verbose: Verbose,
                carry=None) -> int:
    """Run rows ``0 … total − 1`` in chunks as ``schedule`` sizes them and return the chunk count.

    ``call(start, stop, carry) -> outputs`` runs one chunk (on a worker thread when ``workers > 1``);
    ``consume(start, stop, outputs)`` adds it on the calling thread, always in chunk order, so the
    result does not depend on the timing. The schedule's rounds come first: the first chunk alone
    (it traces the chunk function on first use) and, while ``batch_size="auto"`` is measuring,
    timed rounds of chunks in flight together; then the rest at one size, ``workers`` chunks at a
    time. With one worker each chunk gets the previous chunk's ``outputs.carry`` (the
    Riemann–Stieltjes combinations run that way).
    """
    progress = ProgressCount(schedule.estimate_chunks(total), verbose)

    def finish(start, stop, outputs):
        consume(start, stop, outputs)
        progress.advance()

    def run(spans, carry, pool):
        if pool is None or len(spans) <= 1:
            for start, stop in spans:
                outputs = call(start, stop, carry)
                carry = getattr(outputs, "carry", carry)
                finish(start, stop, outputs)
            return carry
        pending = deque()
        for start, stop in spans:
            pending.append((start, stop, pool.submit(call, start, stop, carry)))
            if len(pending) >= workers:
                begin, end, future = pending.popleft()
                finish(begin, end, future.result())
        while pending:
            begin, end, future = pending.popleft()
            finish(begin, end, future.result())
        return carry

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
    return progress.done


def _on_device(device: str):
    return tf.device(device) if device else contextlib.nullcontext()


# -- path rows -------------------------------------------------------------------------------------

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
        combine: how a row's gradient ``g_r`` enters its example's sum (one function each in
            :data:`COMBINATIONS`):

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
            across refinement levels (adaptive RSI-Grad-CAM, :class:`NestedStieltjesPaths`).
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
        _check_combine(combine)
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

    def _gradients_at(self, layout, acc_dtype):
        """``(points, target_rows) -> (scores, gradients, values, classes)`` in ``acc_dtype``; a
        negative class is the row's top-1, picked in the same graph."""
        gradient_fn = self.gradient_fn
        paired = getattr(gradient_fn, "takes_origins", False)

        def gradients_at(points, target_rows, origins):
            classes = record_classes()
            if paired:  # the gradient function also sees each row's path start (DeepLift's reference)
                if layout is not None:
                    raise InvalidInputError("A gradient function that takes the rows' baselines explains models "
                                            "with one input. " + received("layout", layout))
                scores, gradients, values = gradient_fn(points, target_rows, origins)
            elif layout is None:
                scores, gradients, values = gradient_fn(points, target_rows)
            else:  # several inputs packed in `points`: the model gets its list/dict, the gradients are packed
                scores, gradients, values = gradient_fn(layout.unpack(points), target_rows)
                if isinstance(gradients, (list, tuple, dict)):
                    gradients, values = layout.pack(gradients, acc_dtype), points
            classes = recorded_classes(classes, target_rows)
            return scores, tf.cast(gradients, acc_dtype), tf.cast(values, acc_dtype), classes

        return gradients_at

    def _build_chunk(self, shape, dtype, relative, clip, combine, layout=None, direct=False):
        """The compiled chunk: path points → gradient function → combination → segment sums.

        ``direct``: the rows are the inputs themselves, one per example in example order at
        ``α = 1`` with weight 1 from a zero baseline, combined ``"plain"`` (gradients, guided
        backprop, Grad-CAM): the chunk is the gradient pass on the rows of ``x`` and nothing
        else — no interpolation, weighting or segment sums, whose results equal it bit for bit
        (``0 + 1·(x − 0) = x`` and ``1·g = g`` exactly, one row per segment), except the sign of a
        zero input: the general chunk turns ``−0.0`` into ``+0.0``, the direct one keeps it."""
        rank = len(shape) + 1
        acc_dtype = tf.float64 if dtype == tf.float64 else tf.float32
        gradients_at = self._gradients_at(layout, acc_dtype)
        combination = COMBINATIONS[combine]
        endpoint, squares, keep_rows = self.collect_endpoint, self.collect_squares, self.collect_rows
        empty = lambda: tf.zeros([0], acc_dtype)  # noqa: E731  (what was not asked for)
        point_spec = tf.TensorSpec([None, *shape], dtype)
        index_spec = tf.TensorSpec([None], tf.int32)
        real_spec = tf.TensorSpec([None], tf.float64)

        def path_points(x, baselines, example, baseline, alpha, scale):
            """``(points, delta)``: ``z_b + α (x_e − z_b)`` and ``x_e − z_b`` of each row."""
            inputs = tf.gather(x, example)
            origins = tf.gather(baselines, baseline)  # where each row's path starts
            if relative:  # baselines are offsets around each input, scaled per example
                origins = inputs + origins * tf.reshape(tf.cast(tf.gather(scale, example), dtype),
                                                        [-1] + [1] * (rank - 1))
                if clip is not None:
                    origins = tf.clip_by_value(origins, tf.cast(clip[0], dtype), tf.cast(clip[1], dtype))
            if layout is not None and any(layout.fixed):  # fixed inputs: baseline = input, x − z = 0 exactly
                origins = tf.where(tf.constant(layout.fixed_mask()[None]), inputs, origins)
            delta = inputs - origins
            return origins + tf.reshape(tf.cast(alpha, dtype), [-1] + [1] * (rank - 1)) * delta, delta, origins

        def values_where(mask, values, local, count):
            """Per-example sums of the values of rows where ``mask`` holds, and how many rows that was."""
            mask = tf.cast(mask, acc_dtype)
            return (tf.math.unsorted_segment_sum(values * _per_row(mask, values), local, count),
                    tf.math.unsorted_segment_sum(mask, local, count))

        def direct_chunk(x, example, target_rows, count):
            points = tf.gather(x, example)  # a copy, as in the general chunk (a slice of x rounds otherwise)
            scores, gradients, values, classes = gradients_at(points, target_rows, tf.zeros_like(points))
            return ChunkOutputs(
                scores=tf.cast(scores, tf.float64), sums=gradients, carry=values[-1:],
                squares=gradients * gradients if squares else empty(),
                input_values=values if endpoint else empty(),
                input_rows=tf.ones([count], acc_dtype) if endpoint else empty(),
                baseline_values=tf.zeros_like(values) if endpoint else empty(),
                baseline_rows=tf.zeros([count], acc_dtype) if endpoint else empty(),
                row_gradients=gradients if keep_rows else empty(), row_values=values if keep_rows else empty(),
                classes=classes)

        if direct:  # its own signature: the four tensors it reads (each argument costs Python dispatch per call)
            @tf.function(input_signature=[point_spec, index_spec, index_spec, tf.TensorSpec([], tf.int32)],
                         autograph=needs_autograph(self.gradient_fn))
            def direct_only(x, example, target_rows, count):
                self.traces += 1  # runs only while tracing
                return direct_chunk(x, example, target_rows, count)

            direct_only.direct = True
            return direct_only

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
            autograph=needs_autograph(self.gradient_fn),
        )
        def chunk(x, baselines, example, baseline, alpha, weight, target_rows, first, count, carry, scale):
            self.traces += 1  # runs only while tracing
            points, delta, origins = path_points(x, baselines, example, baseline, alpha, scale)
            scores, gradients, values, classes = gradients_at(points, target_rows, origins)
            contribution, last = combination(RowTerms(gradients, values, weight, delta), carry)
            local = example - first
            input_values = input_rows = baseline_values = baseline_rows = empty()
            if endpoint:
                input_values, input_rows = values_where(tf.equal(alpha, 1.0), values, local, count)
                baseline_values, baseline_rows = values_where(tf.equal(alpha, 0.0), values, local, count)
            return ChunkOutputs(
                scores=tf.cast(scores, tf.float64),
                sums=tf.math.unsorted_segment_sum(contribution, local, count),
                carry=last,
                # Σ_r contribution_r², for Monte-Carlo standard errors when rows are i.i.d. samples
                squares=(tf.math.unsorted_segment_sum(contribution * contribution, local, count) if squares
                         else empty()),
                input_values=input_values, input_rows=input_rows,
                baseline_values=baseline_values, baseline_rows=baseline_rows,
                row_gradients=gradients if keep_rows else empty(), row_values=values if keep_rows else empty(),
                classes=classes)

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
        _check_combine(combine)
        direct = rows_at_inputs(rows, num_examples, combine, relative, baselines)
        chunk = self._chunk_function(shape, x.dtype, bool(relative), None if clip is None else tuple(map(float, clip)),
                                     combine, layout, direct)
        acc_dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
        total = len(rows)
        example = rows.example.astype(np.int32)
        baseline = rows.baseline.astype(np.int32)
        targets = np.asarray(target_indices, dtype=np.int32)[example]
        scale = tf.constant(np.ones(num_examples) if scale is None else np.asarray(scale, np.float64), tf.float64)
        # the Stieltjes sums carry across chunks; a model that writes its variables must not run twice at once
        workers = 1 if combine in SEQUENTIAL or getattr(chunk, "writes_state", False) else self.parallel_chunks
        # the caller's device (tf.device scopes are per thread): worker threads run there too
        device = _current_device()
        fresh, chunk.ran = not getattr(chunk, "ran", False), True
        schedule = self._schedule(shape, x.dtype, combine, bool(relative), total, workers, device, fresh)
        sums = _Accumulator(num_examples, total, self.collect_endpoint, self.collect_squares, self.collect_rows)

        def call(start, stop, carry):
            part = slice(start, stop)
            first, count = _chunk_examples(example, start, stop)
            with _on_device(device):
                if direct:
                    return chunk(x, tf.constant(example[part]), tf.constant(targets[part]), tf.constant(count, tf.int32))
                return chunk(x, baselines, tf.constant(example[part]), tf.constant(baseline[part]),
                             tf.constant(rows.alpha[part], tf.float64), tf.constant(rows.weight[part], tf.float64),
                             tf.constant(targets[part]), tf.constant(first, tf.int32), tf.constant(count, tf.int32),
                             carry, scale)

        def consume(start, stop, outputs):
            sums.add(start, stop, *_chunk_examples(example, start, stop), outputs)

        chunks = _run_chunks(call, consume, total, schedule, workers, self.verbose, carry=tf.zeros([0], acc_dtype))
        return sums.result(chunks)

    def _schedule(self, shape, dtype, combine, relative, total, workers, device, fresh):
        """The chunk sizes of one call: every chunk of an explicit ``batch_size``, or for ``"auto"``
        the :mod:`~tfattr.core.autotune` session of this key (sizes measured on the call's own rows)."""
        if self.batch_size != autotune.AUTO:
            return autotune.FixedSchedule(int(self.batch_size))
        tuner = autotune.tuner_for(self.gradient_fn, shape, dtype, combine, workers, device, relative)
        return tuner.session(total, fresh)


# -- refinement of Riemann–Stieltjes sums on nested grids -------------------------------------------

#: the combinations :class:`NestedStieltjesPaths` refines
NESTED = ("stieltjes", "stieltjes_trapezoid")


class NestedStieltjesPaths:
    """The nodes of Riemann–Stieltjes paths refined on nested grids, and the change of their sums.

    Level ``k`` of a path holds the nodes ``α = i / 2^k``; node ``i`` of the finest grid sits at
    ``α = i / span``. Level 0 is the one interval ``[0, 1]``; each later level adds the midpoints
    ``μ`` of the intervals ``[λ, ρ]`` of the level before, and the ordered sum changes by

    * ``"stieltjes"`` (eq. 6's right sum): ``Σ_μ (g(μ) − g(ρ)) ⊙ (v(μ) − v(λ))`` (the right term of
      ``[λ, ρ]`` splits in two);
    * ``"stieltjes_trapezoid"``: ``½ Σ_μ [g(μ) ⊙ (v(ρ) − v(λ)) + g(λ) ⊙ (v(μ) − v(ρ)) + g(ρ) ⊙ (v(λ) −
      v(μ))]`` (two half-intervals replace one),

    so no gradient is computed twice and the running sum is the combination's sum with ``2^k``
    intervals (up to float64 rounding of the order). The rows come from a :class:`PathEngine` call
    with ``collect_rows=True``; their gradients ``g`` and values ``v`` are kept on the host (copies:
    :meth:`forget` frees a converged path's memory).

    Args:
        span: ``2^top``, the finest level's number of intervals.
        baselines: paths per example (one per baseline, ``row.baseline % baselines``).
        combine: ``"stieltjes"`` or ``"stieltjes_trapezoid"``.
    """

    def __init__(self, span: int, baselines: int, combine: str = "stieltjes"):
        if combine not in NESTED:
            raise InvalidInputError(f"`combine` must be one of {NESTED}. " + received("combine", combine))
        self.span, self.baselines, self.trapezoid = int(span), int(baselines), combine == "stieltjes_trapezoid"
        self._nodes: Dict[Tuple[int, int], Dict[int, Tuple[np.ndarray, np.ndarray]]] = {}

    def add(self, rows: "PathRows", result: "EngineResult") -> None:
        """Keep every row's gradient and values (``result`` of ``rows`` with ``collect_rows``)."""
        nodes = np.rint(rows.alpha * self.span).astype(int)
        for r in range(len(rows)):
            path = self._nodes.setdefault((int(rows.example[r]), int(rows.baseline[r]) % self.baselines), {})
            path[int(nodes[r])] = (result.row_gradients[r].copy(), result.row_values[r].copy())

    def node(self, example: int, baseline: int, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(gradient, values)`` of a kept node (``index`` on the finest grid)."""
        return self._nodes[(int(example), int(baseline))][int(index)]

    def change(self, example: int, level: int):
        """The change of example ``example``'s sum (over its baselines) that ``level``'s nodes make
        (level 0: the one-interval sum itself), float64."""
        span, half = self.span, self.span >> level  # half: distance from a new node to its neighbours
        update = 0.0
        for b in range(self.baselines):
            path = self._nodes[(int(example), b)]
            if level == 0:  # one interval: g(1) ⊙ (v(1) − v(0)), or the ends' average for the trapezoid
                gradient = path[span][0].astype(np.float64)
                if self.trapezoid:
                    gradient = 0.5 * (gradient + path[0][0])
                update = update + gradient * (path[span][1] - path[0][1])
                continue
            for i in range(half, span, 2 * half):
                (g_mid, a_mid), (g_left, a_left), (g_right, a_right) = path[i], path[i - half], path[i + half]
                if self.trapezoid:  # ½(g_λ+g_μ)(A_μ−A_λ) + ½(g_μ+g_ρ)(A_ρ−A_μ) − ½(g_λ+g_ρ)(A_ρ−A_λ)
                    update = update + 0.5 * (g_mid.astype(np.float64) * (a_right - a_left)
                                             + g_left * (a_mid - a_right) + g_right * (a_left - a_mid))
                else:  # the right term of [λ, ρ] splits in two
                    update = update + (g_mid.astype(np.float64) - g_right) * (a_mid - a_left)
        return update

    def forget(self, example: int) -> None:
        """Free the nodes of ``example``'s paths."""
        for b in range(self.baselines):
            self._nodes.pop((int(example), b), None)


# -- forward rows ----------------------------------------------------------------------------------

@dataclass
class ForwardRows:
    """Forward-only work: row ``r`` is one perturbed copy of example ``example[r]``, scored by the
    model (no gradient). Rows are sorted by example.

    Attributes:
        example: ``(R,)`` example index of each row (non-decreasing).
        weight: ``(R,)`` weight of each row in a ``"weighted"`` combination (default 1).
    """

    example: np.ndarray
    weight: Optional[np.ndarray] = None

    def __post_init__(self):
        self.example = np.asarray(self.example, dtype=np.int64)
        if self.weight is None:
            self.weight = np.ones(len(self.example))
        self.weight = np.asarray(self.weight, dtype=np.float64)
        if self.example.ndim != 1 or self.weight.shape != self.example.shape:
            raise InvalidInputError("`example` and `weight` must be vectors of one value per row. "
                                    + received("(example.shape, weight.shape)",
                                               (self.example.shape, self.weight.shape)))
        if len(self.example) and np.any(np.diff(self.example) < 0):
            raise InvalidInputError("Forward rows must be sorted by example. "
                                    + received("example[:10]", self.example[:10].tolist()))

    def __len__(self) -> int:
        return int(self.example.shape[0])

    @classmethod
    def repeat(cls, num_examples: int, per_example: int, weight: Optional[np.ndarray] = None) -> "ForwardRows":
        """``per_example`` rows for each of ``num_examples`` examples; ``weight`` per row, or one
        ``(per_example,)`` vector repeated for every example."""
        example = np.repeat(np.arange(num_examples), per_example)
        if weight is not None and np.shape(weight) == (per_example,):
            weight = np.tile(np.asarray(weight, np.float64), num_examples)
        return cls(example, weight)

    @property
    def position(self) -> np.ndarray:
        """``(R,)`` each row's index among its example's rows."""
        if not len(self):
            return np.zeros(0, np.int64)
        first = np.searchsorted(self.example, self.example, side="left")
        return np.arange(len(self)) - first


class ChunkRows(NamedTuple):
    """What a forward builder receives for one chunk (device tensors).

    Attributes:
        row: ``(rows,)`` int32 global index of each row (``0 … R − 1``): the key of per-row random
            draws, so that a row's perturbation does not depend on the chunk it falls in.
        example: ``(rows,)`` int32 example of each row (index into ``x``).
        position: ``(rows,)`` int32 index of each row among its example's rows.
        context: the float64 tensor the call passed (a seed, a table of windows, …).
    """

    row: tf.Tensor
    example: tf.Tensor
    position: tf.Tensor
    context: tf.Tensor


class ForwardOutputs(NamedTuple):
    """What one compiled forward chunk returns: ``scores (rows,)`` float64, the per-example ``sums``
    of the combination (empty for ``"scores"``) and the ``classes`` scored."""

    scores: tf.Tensor
    sums: tf.Tensor
    classes: tf.Tensor


@dataclass
class ForwardResult:
    """What one forward run returns.

    Attributes:
        sums: ``(N, …)`` float64 per-example sums of the combination (``None`` for ``"scores"``,
            and for examples without rows the sums are 0).
        row_scores: ``(R,)`` float64 target score of the model at each row.
        row_classes: ``(R,)`` the class each row scored (for a negative target, the row's top-1).
        chunks: compiled chunk calls (= batched forward passes).
    """

    sums: Optional[np.ndarray]
    row_scores: np.ndarray
    row_classes: np.ndarray
    chunks: int


def forward_weighted(scores, vectors, weight):
    """``w_r · s_r · v_r``: the row's weight times its score times its vector (RISE's mask-weighted
    sum of scores; occlusion's window with ``w_r = −1`` plus ``f(x)`` times the window count)."""
    factor = tf.cast(weight, vectors.dtype) * tf.cast(scores, vectors.dtype)
    return vectors * _per_row(factor, vectors)


#: the named combinations of forward rows (a callable ``(scores, vectors, weight) -> (rows, …)``
#: contributions is accepted too); ``"scores"`` sums nothing: the row scores are the result;
#: ``"values"`` sums what the model returns besides its outputs (a tapped model
#: ``points -> (outputs, values)``, :class:`~tfattr.core.gradients.LayerTap`: a layer's activations)
FORWARD_COMBINES = ("scores", "weighted", "values")


class _ForwardScores:
    """The model and score of forward rows, as :mod:`~tfattr.core.autotune` keys them (the model
    owns the measurements; the type keeps them apart from gradient rows')."""

    layer = None

    def __init__(self, model, score_fn):
        self.model, self.score_fn = model, score_fn


def _name(function) -> str:
    return getattr(function, "__qualname__", None) or type(function).__name__


class ForwardEngine:
    """Chunked, compiled forward passes over :class:`ForwardRows` (no gradient).

    A perturbation method supplies the rows (how many per example, and their weights), a
    ``build`` function that makes a chunk of perturbed inputs on the device from the chunk's row
    indices (:class:`ChunkRows`; masks are drawn per row from a seed,
    :func:`~tfattr.core.random.row_uniform`, never for all rows at once), and a combination.
    The engine runs the chunks as it runs path rows: ``batch_size`` rows a chunk, ``"auto"``
    sizes measured per model, input shape, builder and combination (apart from the gradient
    rows of the same model), ``parallel_chunks`` chunks in flight, per-example sums added on the
    host in float64 in chunk order, so the result does not depend on the chunking.

    Args:
        model: the Keras model (any callable on a batch).
        score_fn: what a row scores: ``None`` (the class of ``target_indices``), the user's
            callable ``outputs -> (batch,)``, or :attr:`~tfattr.core.targets.Targets.scorer`
            (picks the ``output=`` of a model with several).
        batch_size: rows per forward pass, or ``"auto"``.
        parallel_chunks: chunks in flight at once (a model that writes its variables runs one).
        verbose: ``0``, ``1`` or ``"auto"``.

    Example:
        >>> def build(x, rows):  # occlude one pixel per row
        ...     mask = tf.one_hot(rows.position, 64, dtype=x.dtype)
        ...     return tf.gather(x, rows.example) * (1 - tf.reshape(mask, (-1, 8, 8, 1))), mask
        >>> engine = ForwardEngine(model, batch_size=16)
        >>> engine.run(x, ForwardRows.repeat(len(x), 64), build, [3] * len(x), combine="weighted").sums
    """

    def __init__(self, model, score_fn: Optional[Callable] = None, batch_size: Union[int, str] = autotune.AUTO,
                 parallel_chunks: int = 2, verbose: Verbose = "auto"):
        self.model = model
        self.score_fn = score_fn
        self.batch_size = autotune.AUTO if batch_size == autotune.AUTO else int(batch_size)
        self.parallel_chunks = max(1, int(parallel_chunks))
        self.verbose = verbose
        self._scores = _ForwardScores(model, score_fn)
        self._compiled = {}
        self._lock = threading.Lock()
        self.traces = 0

    def _autograph(self) -> bool:
        """AutoGraph for a user's score or model function (as :func:`needs_autograph`); builders are
        the methods' own code: tensor ops, no Python branch on a tensor."""
        from tfattr.core.gradients import InputGradients

        return needs_autograph(InputGradients(self.model, self.score_fn))

    def _chunk_function(self, shape, dtype, build, combine, layout):
        key = (shape, dtype.name, build, combine, layout)
        with self._lock:
            if key not in self._compiled:
                chunk = self._build_chunk(shape, dtype, build, combine, layout)
                chunk.writes_state = writes_state(chunk)
                self._compiled[key] = chunk
            return self._compiled[key]

    def _build_chunk(self, shape, dtype, build, combine, layout):
        model, score_fn = self.model, self.score_fn
        acc_dtype = tf.float64 if dtype == tf.float64 else tf.float32
        combination = forward_weighted if combine == "weighted" else combine
        index_spec = tf.TensorSpec([None], tf.int32)

        @tf.function(input_signature=[
            tf.TensorSpec([None, *shape], dtype),  # x: all examples
            index_spec,  # row: global row index
            index_spec,  # example of each row
            index_spec,  # position of each row among its example's
            tf.TensorSpec([None], tf.float64),  # weight of each row
            index_spec,  # class of each row
            tf.TensorSpec([], tf.int32),  # first example in the chunk
            tf.TensorSpec([], tf.int32),  # number of examples in the chunk
            tf.TensorSpec(None, tf.float64),  # the call's context
        ], autograph=self._autograph())
        def chunk(x, row, example, position, weight, target_rows, first, count, context):
            self.traces += 1  # runs only while tracing
            built = build(x, ChunkRows(row, example, position, context))
            points, vectors = built if isinstance(built, tuple) else (built, None)
            classes = record_classes()
            outputs = model(points if layout is None else layout.unpack(points), training=False)
            if combine == "values":
                outputs, values = outputs
            scores = select_scores(outputs, target_rows, score_fn)
            classes = recorded_classes(classes, target_rows)
            if combine == "scores":
                sums = tf.zeros([0], acc_dtype)
            elif combine == "values":
                sums = tf.math.unsorted_segment_sum(tf.cast(values, acc_dtype), example - first, count)
            else:
                if vectors is None:
                    raise InvalidInputError("A combined forward run needs `build` to return (points, vectors). "
                                            + received("build", f"{_name(build)}, which returned points only"))
                if tf.convert_to_tensor(vectors).shape.rank is None:  # the combinations broadcast per row
                    raise InvalidInputError("`build` must return vectors of a known rank (reshape them, e.g. "
                                            "tf.reshape(v, [-1, height, width])). "
                                            + received("build", f"{_name(build)}, whose vectors have an unknown rank"))
                contribution = combination(scores, tf.cast(vectors, acc_dtype), weight)
                sums = tf.math.unsorted_segment_sum(contribution, example - first, count)
            return ForwardOutputs(tf.cast(scores, tf.float64), sums, classes)

        return chunk

    def run(self, x, rows: ForwardRows, build: Callable, target_indices=None, combine="scores", context=None,
            layout=None) -> ForwardResult:
        """Score every row and combine them per example.

        Args:
            x: ``(N, …)`` inputs (in the model's dtype; several inputs packed, see ``layout``).
            rows: the work, sorted by example.
            build: ``build(x, rows: ChunkRows) -> points`` or ``(points, vectors)``, traced once per
                input shape: ``points`` ``(rows, …)`` are the model's inputs for the chunk (packed
                for several inputs), ``vectors`` ``(rows, …)`` what ``"weighted"`` multiplies.
                Keep one ``build`` function per method (each new function compiles anew); pass
                per-call values (a seed, windows) through ``context``. It is traced without
                AutoGraph (unless the score or model is a user's function): tensor ops only, no
                Python ``if`` on a tensor.
            target_indices: ``(N,)`` class per example (ignored by a callable ``score_fn``; a
                negative class scores each row's top-1).
            combine: ``"scores"`` (the row scores are the result), ``"weighted"``
                (:func:`forward_weighted`, per-example ``Σ_r w_r s_r v_r``), ``"values"`` (the
                engine's model returns ``(outputs, values)``, e.g. a
                :class:`~tfattr.core.gradients.LayerTap`; per-example ``Σ_r values_r``: with one
                row per example, a layer's activations from forward passes only) or a callable
                ``(scores, vectors, weight) -> (rows, …)`` contributions, summed per example.
            context: a float64 array handed to ``build`` (default an empty vector).
            layout: the :class:`~tfattr.core.structure.InputLayout` of a packed ``x``.
        """
        if not (combine in FORWARD_COMBINES or callable(combine)):
            raise InvalidInputError(f"`combine` must be one of {FORWARD_COMBINES} or a callable. "
                                    + received("combine", combine))
        x = tf.convert_to_tensor(x)
        num_examples, total = int(x.shape[0]), len(rows)
        if total and (rows.example.min() < 0 or rows.example.max() >= num_examples):
            raise InvalidInputError(f"Forward rows must name examples 0 … {num_examples - 1} of `x`. "
                                    + received("rows.example range",
                                               (int(rows.example.min()), int(rows.example.max()))))
        score_fn = self.score_fn
        classes_needed = score_fn is None or (isinstance(score_fn, OutputScore) and score_fn.score_fn is None)
        if target_indices is None and classes_needed:
            raise InvalidInputError("Forward rows scored by class need `target_indices` (one class per example, "
                                    "negative for each row's top-1). " + received("target_indices", None))
        shape = tuple(int(d) for d in x.shape[1:])
        chunk = self._chunk_function(shape, x.dtype, build, combine, layout)
        example = rows.example.astype(np.int32)
        position = rows.position.astype(np.int32)
        targets = (np.zeros(num_examples, np.int32) if target_indices is None
                   else np.broadcast_to(np.asarray(target_indices, np.int32), (num_examples,)))[example]
        context = tf.constant(np.zeros(0) if context is None else np.asarray(context, np.float64), tf.float64)
        workers = 1 if getattr(chunk, "writes_state", False) else self.parallel_chunks
        device = _current_device()
        fresh, chunk.ran = not getattr(chunk, "ran", False), True
        if self.batch_size != autotune.AUTO:
            schedule = autotune.FixedSchedule(int(self.batch_size))
        else:
            kind = ("forward", combine if isinstance(combine, str) else _name(combine), _name(build))
            schedule = autotune.tuner_for(self._scores, shape, x.dtype, kind, workers, device,
                                          forward=True).session(total, fresh)
        sums = _Accumulator(num_examples, total)

        def call(start, stop, carry):
            part = slice(start, stop)
            first, count = _chunk_examples(example, start, stop)
            with _on_device(device):
                return chunk(x, tf.range(start, stop, dtype=tf.int32), tf.constant(example[part]),
                             tf.constant(position[part]), tf.constant(rows.weight[part], tf.float64),
                             tf.constant(targets[part]), tf.constant(first, tf.int32), tf.constant(count, tf.int32),
                             context)

        def consume(start, stop, outputs):
            sums.add(start, stop, *_chunk_examples(example, start, stop), outputs)

        chunks = _run_chunks(call, consume, total, schedule, workers, self.verbose) if total else 0
        result = sums.result(chunks)
        if combine != "scores" and result.attributions is None:  # no rows: nothing summed
            result.attributions = np.zeros((num_examples,))
        return ForwardResult(None if combine == "scores" else result.attributions, result.row_scores,
                             result.row_classes, chunks)


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
