"""The engine alone, driven by gradient functions whose gradients NumPy computes exactly.

Every function here runs in float64 (the engine then accumulates in float64), so a sum the
engine forms and the same sum formed by NumPy agree to a few float64 ulps: the bound 1e-12
relative is ~5000 ulps of float64 and ~1e-5 of float32's, so a float32 detour, a missing or
doubled row, a wrong carry or a wrong weight all fail it.
"""

import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfattr.core import autotune
from tfattr.core import engine as engine_module
from tfattr.core.engine import ChunkRows, ForwardEngine, ForwardRows, NestedStieltjesPaths, PathEngine, PathRows
from tfattr.core.random import row_uniform
from tfattr.core.targets import OutputScore
from tfattr.errors import InvalidInputError

RTOL = 1e-12
CHUNKS = (1, 2, 5, 64)  # every row its own chunk, chunks across example boundaries, one chunk


def assert_close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * np.abs(expected).max())


class Quadratic:
    """``score_t(x) = Σ_i W[t, i] x_i²``; gradient ``2 W[t] ⊙ x``; the values are the points."""

    def __init__(self, weights):
        self.weights = np.asarray(weights, np.float64)
        self.table = tf.constant(self.weights)

    def __call__(self, points, target_rows):
        w = tf.reshape(tf.gather(self.table, target_rows), tf.shape(points))
        scores = tf.reduce_sum(tf.reshape(w * points * points, [tf.shape(points)[0], -1]), axis=1)
        return scores, 2.0 * w * points, points

    def numpy(self, points, targets):
        w = self.weights[targets].reshape(points.shape)
        return (w * points**2).reshape(len(points), -1).sum(axis=1), 2.0 * w * points


class Squares:
    """A "layer" ``v = tanh(x A)`` and a head ``score_t = Σ_k C[t, k] v_k²``: the gradient with
    respect to the values is ``2 C[t] ⊙ v`` (as :class:`~tfattr.core.gradients.LayerGradients`)."""

    def __init__(self, a, c):
        self.a, self.c = np.asarray(a, np.float64), np.asarray(c, np.float64)
        self.ta, self.tc = tf.constant(self.a), tf.constant(self.c)

    def __call__(self, points, target_rows):
        values = tf.tanh(tf.reshape(points, [tf.shape(points)[0], -1]) @ self.ta)
        c = tf.gather(self.tc, target_rows)
        return tf.reduce_sum(c * values * values, axis=1), 2.0 * c * values, values

    def numpy(self, points, targets):
        values = np.tanh(points.reshape(len(points), -1) @ self.a)
        return values, 2.0 * self.c[targets] * values


def _data(n=3, shape=(2, 3), baselines=2, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape)
    z = rng.normal(size=(n * baselines,) + shape)
    w = rng.normal(size=(classes,) + shape)
    targets = rng.integers(0, classes, n).astype(np.int32)
    return x, z, w, targets


def _points(rows, x, z):
    delta = x[rows.example] - z[rows.baseline]
    return z[rows.baseline] + rows.alpha.reshape((-1,) + (1,) * (x.ndim - 1)) * delta, delta


def _segment(values, example, n):
    out = np.zeros((n,) + values.shape[1:])
    np.add.at(out, example, values)
    return out


def _random_rows(n, baselines, steps, seed=1):
    rng = np.random.default_rng(seed)
    return PathRows.grid(n, baselines, rng.uniform(0, 1, steps), rng.normal(size=steps))


# -- path rows: every combination against NumPy ---------------------------------------------------

@pytest.mark.parametrize("batch_size", CHUNKS)
@pytest.mark.parametrize("combine", ["path", "plain"])
def test_path_and_plain_combinations_are_the_weighted_sums_numpy_forms_for_any_chunk_size(combine, batch_size):
    x, z, w, targets = _data()
    rows = _random_rows(len(x), 2, 5)
    fn = Quadratic(w)
    engine = PathEngine(fn, batch_size=batch_size, combine=combine, collect_squares=True, verbose=0)
    result = engine.integrate(tf.constant(x), tf.constant(z), targets, rows)
    points, delta = _points(rows, x, z)
    scores, gradients = fn.numpy(points, targets[rows.example])
    contribution = rows.weight.reshape(-1, 1, 1) * gradients * (delta if combine == "path" else 1.0)
    assert_close(result.attributions, _segment(contribution, rows.example, len(x)))
    assert_close(result.squares, _segment(contribution**2, rows.example, len(x)))
    assert_close(result.row_scores, scores)
    np.testing.assert_array_equal(result.row_classes, targets[rows.example])
    assert result.chunks == -(-len(rows) // batch_size)


def test_the_midpoint_of_a_quadratic_path_is_complete():
    """Analytic: along a straight path the gradient of a quadratic is linear in α, so one node at
    α = ½ integrates it exactly: Σ_i attributions = f(x) − f(z) (IG's completeness, eq. 3)."""
    x, z, w, targets = _data(baselines=1)
    rows = PathRows.grid(len(x), 1, np.array([0.5]), np.array([1.0]))
    result = PathEngine(Quadratic(w), batch_size=2, verbose=0).integrate(tf.constant(x), tf.constant(z), targets, rows)
    f = lambda v: (w[targets] * v**2).reshape(len(x), -1).sum(axis=1)  # noqa: E731
    assert_close(result.attributions.reshape(len(x), -1).sum(axis=1), f(x) - f(z))


def _stieltjes_rows(n, baselines, steps):
    alphas = np.arange(steps + 1) / steps
    return PathRows.grid(n, baselines, alphas, np.concatenate([[0.0], np.ones(steps)]))


def _stieltjes_reference(fn, rows, x, z, targets, combine):
    points, _ = _points(rows, x, z)
    values, gradients = fn.numpy(points, targets[rows.example])
    out = np.zeros((len(x),) + values.shape[1:])
    for r in range(1, len(rows)):  # each path starts with a weight-0 row at α₀
        g = {"stieltjes": gradients[r], "stieltjes_trapezoid": 0.5 * (gradients[r] + gradients[r - 1]),
             "stieltjes_left": gradients[r - 1]}[combine]
        out[rows.example[r]] += rows.weight[r] * g * (values[r] - values[r - 1])
    return out, values


@pytest.mark.parametrize("batch_size", CHUNKS + (3, 4))
@pytest.mark.parametrize("combine", ["stieltjes", "stieltjes_trapezoid", "stieltjes_left"])
def test_stieltjes_sums_carry_the_previous_row_across_chunk_boundaries(combine, batch_size):
    """Batch size 1 makes every increment cross a chunk boundary: without the carried row (and,
    for the trapezoid, the carried gradient) the increments at the boundaries would be lost."""
    x, z, _, targets = _data(baselines=2)
    rng = np.random.default_rng(2)
    fn = Squares(rng.normal(size=(6, 5)), rng.normal(size=(4, 5)))
    rows = _stieltjes_rows(len(x), 2, 7)
    engine = PathEngine(fn, batch_size=batch_size, combine=combine, collect_endpoint=True, verbose=0)
    result = engine.integrate(tf.constant(x), tf.constant(z), targets, rows)
    expected, values = _stieltjes_reference(fn, rows, x, z, targets, combine)
    assert_close(result.attributions, expected)
    # the layer's values at the input and (mean over the baselines) at the start of the paths
    assert_close(result.endpoint, _segment(values[rows.alpha == 1.0], rows.example[rows.alpha == 1.0], len(x)) / 2)
    assert_close(result.start, _segment(values[rows.alpha == 0.0], rows.example[rows.alpha == 0.0], len(x)) / 2)
    if combine == "stieltjes_trapezoid":  # analytic: ∫ 2Cv dv = C (v(1)² − v(0)²), exact for the trapezoid
        # (the grid's weights are 1/baselines)
        ends, starts = values[rows.alpha == 1.0], values[rows.alpha == 0.0]
        c = fn.c[targets[rows.example[rows.alpha == 1.0]]]
        expected = _segment(c * (ends**2 - starts**2), rows.example[rows.alpha == 1.0], len(x)) / 2  # baselines' mean
        assert_close(result.attributions, expected)


@pytest.mark.parametrize("combine", ["stieltjes", "stieltjes_trapezoid"])
def test_nested_refinement_of_stieltjes_sums_equals_the_combination_on_the_finest_grid(combine):
    x, z, _, targets = _data(baselines=2)
    rng = np.random.default_rng(3)
    fn = Squares(rng.normal(size=(6, 5)), rng.normal(size=(4, 5)))
    top = 3
    engine = PathEngine(fn, batch_size=4, combine="plain", collect_rows=True, verbose=0)
    paths = NestedStieltjesPaths(2**top, 2, combine)
    total = np.zeros((len(x), 5))
    from tfattr.core.adaptive import level_rows

    for k in range(top + 1):
        rows = level_rows(k, len(x), 2, np.arange(len(x)), True)
        paths.add(rows, engine.integrate(tf.constant(x), tf.constant(z), targets, rows))
        for e in range(len(x)):
            total[e] += paths.change(e, k)
    finest = PathEngine(fn, batch_size=4, combine=combine, verbose=0).integrate(
        tf.constant(x), tf.constant(z), targets, _stieltjes_rows(len(x), 2, 2**top))
    assert_close(total / 2, finest.attributions)  # changes are summed over the baselines, the grid averages
    paths.forget(0)
    with pytest.raises(KeyError):
        paths.node(0, 0, 0)


def test_relative_baselines_are_scaled_clipped_offsets_around_each_input():
    x, z, w, targets = _data(baselines=2)
    rows = _random_rows(len(x), 2, 4)
    scale = np.array([0.5, 1.0, 2.0])
    fn = Quadratic(w)
    result = PathEngine(fn, batch_size=3, verbose=0).integrate(
        tf.constant(x), tf.constant(z), targets, rows, relative=True, clip=(-1.0, 1.0), scale=scale)
    origins = np.clip(x[rows.example] + z[rows.baseline] * scale[rows.example].reshape(-1, 1, 1), -1.0, 1.0)
    delta = x[rows.example] - origins
    _, gradients = fn.numpy(origins + rows.alpha.reshape(-1, 1, 1) * delta, targets[rows.example])
    assert_close(result.attributions, _segment(rows.weight.reshape(-1, 1, 1) * gradients * delta, rows.example, 3))


def test_every_rows_gradient_and_values_are_kept_on_request():
    x, z, w, targets = _data()
    rows = _random_rows(len(x), 2, 3)
    fn = Quadratic(w)
    result = PathEngine(fn, batch_size=4, combine="plain", collect_rows=True, verbose=0).integrate(
        tf.constant(x), tf.constant(z), targets, rows)
    points, _ = _points(rows, x, z)
    assert_close(result.row_values, points)
    assert_close(result.row_gradients, fn.numpy(points, targets[rows.example])[1])


def test_the_direct_chunk_is_the_gradient_at_the_inputs_and_equals_the_general_chunk(monkeypatch):
    """Rows at the inputs (one per example, α = 1, weight 1, zero baseline, "plain") run the
    gradient pass alone, in a compiled function of its own: 2 W ⊙ x, bit for bit what the general
    chunk gives."""
    x, _, w, targets = _data()
    zero = tf.zeros((1,) + x.shape[1:], tf.float64)
    rows = PathRows.grid(len(x), 1, np.ones(1), np.ones(1), per_example_baselines=False)
    fn = Quadratic(w)
    direct = PathEngine(fn, batch_size=2, combine="plain", collect_endpoint=True, collect_squares=True, verbose=0)
    found = direct.integrate(tf.constant(x), zero, targets, rows)
    assert [key[7] for key in direct._compiled] == [True]
    # its own compiled function takes the four tensors it reads (x, example, class, count), not the
    # general chunk's eleven: each argument costs Python dispatch per call (a step of an adaptive path)
    assert len(next(iter(direct._compiled.values())).input_signature) == 4
    _, gradients = fn.numpy(x, targets)
    assert_close(found.attributions, gradients)
    assert_close(found.squares, gradients**2)
    np.testing.assert_array_equal(found.endpoint, x)
    assert np.isnan(found.start).all()  # no row at α = 0 (documented: NaN)
    monkeypatch.setattr(engine_module, "rows_at_inputs", lambda *args: False)
    general = PathEngine(fn, batch_size=2, combine="plain", collect_endpoint=True, collect_squares=True, verbose=0)
    reference = general.integrate(tf.constant(x), zero, targets, rows)
    assert [key[7] for key in general._compiled] == [False]
    for name in ("attributions", "squares", "endpoint", "start", "row_scores"):
        np.testing.assert_array_equal(getattr(found, name), getattr(reference, name), err_msg=name)


def test_the_direct_chunk_equals_the_general_one_for_dict_inputs_fixed_inputs_outputs_and_callables(monkeypatch):
    """Gradient (a model with a dict of inputs, one fixed, and a dict of outputs) and Grad-CAM (two
    outputs) through the direct chunk, for class targets of an ``output`` and a callable: bit
    for bit what the general chunk gives (the direct one is taken: one compiled key, flagged)."""
    import tfattr

    keras.utils.set_random_seed(9)
    image, side = keras.Input((5, 4, 2), name="image"), keras.Input((3,), name="side")
    conv = keras.layers.Conv2D(3, 3, activation="tanh", bias_initializer="random_normal", name="conv")(image)
    h = keras.layers.Concatenate()([keras.layers.Flatten()(conv), side])
    model = keras.Model({"image": image, "side": side},
                        {"a": keras.layers.Dense(3, bias_initializer="random_normal")(h),
                         "b": keras.layers.Dense(2, bias_initializer="random_normal")(h)})
    rng = np.random.default_rng(2)
    inputs = {"image": rng.normal(size=(3, 5, 4, 2)).astype(np.float32),
              "side": rng.normal(size=(3, 3)).astype(np.float32)}
    flat = keras.layers.Flatten()(conv)
    one_input = keras.Model(image, [keras.layers.Dense(3, bias_initializer="random_normal")(flat),
                                    keras.layers.Dense(2, bias_initializer="random_normal")(flat)])
    calls = [(tfattr.Gradient, model, inputs, dict(output="b"), [1, 0, 1]),
             (tfattr.Gradient, model, inputs, dict(fixed_inputs=["side"], output="a"), None),
             (tfattr.Gradient, model, inputs, {}, lambda outputs: outputs["a"][:, 0] * outputs["b"][:, 1]),
             (tfattr.GradCAM, one_input, inputs["image"], dict(layer="conv", output=1), [1, 0, 1]),
             (tfattr.GradCAM, one_input, inputs["image"], dict(layer="conv"), lambda outputs: outputs[0][:, 2])]
    original = engine_module.rows_at_inputs
    for method, net, x, options, target in calls:
        found = method(net, **options)
        direct = found.attribute(x, target=target)
        assert [key[7] for engine in found._engines.values() for key in engine._compiled] == [True]
        monkeypatch.setattr(engine_module, "rows_at_inputs", lambda *args: False)
        general = method(net, **options).attribute(x, target=target)
        monkeypatch.setattr(engine_module, "rows_at_inputs", original)
        for name in ("attributions", "scores"):
            one, other = getattr(direct, name), getattr(general, name)
            for key in (one if isinstance(one, dict) else [None]):
                np.testing.assert_array_equal(one if key is None else one[key], other if key is None else other[key],
                                              err_msg=f"{method.__name__} {options} {name} {key}")


def _slow(inner):
    """``inner`` with a 50 ms host sleep in every chunk (so that chunks in flight overlap)."""

    def pause():
        time.sleep(0.05)
        return np.float64(0.0)

    def gradient_fn(points, target_rows):
        scores, gradients, values = inner(points, target_rows)
        return scores + tf.numpy_function(pause, [], tf.float64, stateful=True), gradients, values

    return gradient_fn


class InFlight:
    """Wraps a compiled chunk and records how many calls of it were running at once."""

    def __init__(self, chunk):
        self.chunk, self.writes_state = chunk, chunk.writes_state
        self.lock, self.running, self.most = threading.Lock(), 0, 0

    def __call__(self, *args):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return self.chunk(*args)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("combine", ["path", "stieltjes"])
def test_chunks_in_flight_run_together_and_sum_in_chunk_order(combine, monkeypatch):
    x, z, w, targets = _data()
    rows = _stieltjes_rows(len(x), 2, 5) if combine == "stieltjes" else _random_rows(len(x), 2, 5)
    fn = Squares(np.random.default_rng(4).normal(size=(6, 5)), np.random.default_rng(5).normal(size=(4, 5))) \
        if combine == "stieltjes" else Quadratic(w)
    results = {}
    for chunks in (1, 3):
        engine = PathEngine(_slow(fn), batch_size=2, combine=combine, parallel_chunks=chunks, verbose=0)
        compiled = engine._chunk_function
        probes = []

        def counted(*args, compiled=compiled, probes=probes):
            probes.append(InFlight(compiled(*args)))
            return probes[-1]

        monkeypatch.setattr(engine, "_chunk_function", counted)
        results[chunks] = engine.integrate(tf.constant(x), tf.constant(z), targets, rows)
        # `chunks` in flight, except for the Stieltjes sums, which need the previous chunk's row
        assert probes[0].most == (1 if chunks == 1 or combine == "stieltjes" else 3)
    np.testing.assert_array_equal(results[1].attributions, results[3].attributions)
    np.testing.assert_array_equal(results[1].row_scores, results[3].row_scores)
    expected, _ = (_stieltjes_reference(fn, rows, x, z, targets, combine) if combine == "stieltjes" else (None, None))
    if expected is not None:
        assert_close(results[3].attributions, expected)


def test_an_unknown_combination_is_refused():
    with pytest.raises(ValueError, match="combine"):
        PathEngine(Quadratic(np.ones((1, 2))), combine="trapezoid")
    with pytest.raises(ValueError, match="combine"):
        NestedStieltjesPaths(4, 1, "path")


# -- forward rows ---------------------------------------------------------------------------------

SHAPE = (4, 4, 2)
SEED = 7


def _linear_model(classes=3, seed=0):
    """``f(x) = x·M + b`` on (4, 4, 2) inputs: scores NumPy reproduces exactly in float64."""
    rng = np.random.default_rng(seed)
    m, b = rng.normal(size=(int(np.prod(SHAPE)), classes)), rng.normal(size=classes)
    inputs = keras.Input(SHAPE, dtype="float64")
    flat = keras.layers.Reshape((-1,), dtype="float64")(inputs)
    dense = keras.layers.Dense(classes, dtype="float64")
    model = keras.Model(inputs, dense(flat))
    dense.set_weights([m, b])
    return model, m, b


def masked(x, rows: ChunkRows):
    """A RISE-like perturbation: keep each pixel where the row's seeded uniform draw is below ½;
    the vector is the mask (one channel)."""
    draws = row_uniform(tf.cast(rows.context[0], tf.int64), rows.row, SHAPE[:2], dtype=x.dtype)
    mask = tf.cast(draws < 0.5, x.dtype)
    return tf.gather(x, rows.example) * mask[..., None], mask


def _masks(total, shape=SHAPE[:2]):
    """The same masks drawn eagerly, row by row."""
    return np.stack([(row_uniform(SEED, tf.constant([r]), shape, dtype=tf.float64).numpy()[0] < 0.5)
                     for r in range(total)]).astype(np.float64)


@pytest.mark.parametrize("batch_size", (1, 3, 7, 64))
def test_forward_rows_with_seeded_masks_are_the_same_for_any_chunk_size(batch_size):
    model, m, b = _linear_model()
    x = np.random.default_rng(1).normal(size=(3,) + SHAPE)
    rows = ForwardRows.repeat(3, 6, weight=np.linspace(0.5, 1.0, 6))
    targets = np.array([0, 2, 1])
    engine = ForwardEngine(model, batch_size=batch_size, verbose=0)
    result = engine.run(x, rows, masked, targets, combine="weighted", context=[SEED])
    masks = _masks(len(rows))
    points = x[rows.example] * masks[..., None]
    scores = (points.reshape(len(rows), -1) @ m + b)[np.arange(len(rows)), targets[rows.example]]
    assert_close(result.row_scores, scores)
    assert_close(result.sums, _segment((rows.weight * scores)[:, None, None] * masks, rows.example, 3))
    np.testing.assert_array_equal(result.row_classes, targets[rows.example])
    assert result.chunks == -(-len(rows) // batch_size)
    # the row scores alone, and a combination of the method's own
    alone = engine.run(x, rows, masked, targets, context=[SEED])
    assert alone.sums is None
    np.testing.assert_array_equal(alone.row_scores, result.row_scores)
    drops = engine.run(x, rows, masked, targets, context=[SEED],
                       combine=lambda s, v, w: (1.0 - v) * tf.reshape(tf.cast(w * s, v.dtype), (-1, 1, 1)))
    assert_close(drops.sums, _segment((rows.weight * scores)[:, None, None] * (1 - masks), rows.example, 3))


def test_another_seed_draws_other_masks_and_rows_are_keyed_by_index_not_by_chunk():
    first = row_uniform(SEED, tf.constant([0, 1, 2]), (5,)).numpy()
    again = row_uniform(SEED, tf.constant([2, 1]), (5,)).numpy()
    np.testing.assert_array_equal(first[[2, 1]], again)
    other = row_uniform(SEED + 1, tf.constant([0, 1, 2]), (5,)).numpy()
    assert not np.any(first == other)
    assert first.min() >= 0.0 and first.max() < 1.0


def test_forward_chunks_in_flight_give_the_same_sums():
    model, _, _ = _linear_model()
    x = np.random.default_rng(2).normal(size=(4,) + SHAPE)
    rows = ForwardRows.repeat(4, 5)
    one = ForwardEngine(model, batch_size=3, parallel_chunks=1, verbose=0).run(x, rows, masked, [0, 1, 2, 0],
                                                                               combine="weighted", context=[SEED])
    three = ForwardEngine(model, batch_size=3, parallel_chunks=3, verbose=0).run(x, rows, masked, [0, 1, 2, 0],
                                                                                 combine="weighted", context=[SEED])
    np.testing.assert_array_equal(one.sums, three.sums)
    np.testing.assert_array_equal(one.row_scores, three.row_scores)


def test_forward_rows_score_the_top1_class_or_the_chosen_output():
    model, m, b = _linear_model()
    x = np.random.default_rng(3).normal(size=(2,) + SHAPE)
    rows = ForwardRows.repeat(2, 4)
    top1 = ForwardEngine(model, batch_size=3, verbose=0).run(x, rows, masked, [-1, -1], context=[SEED])
    outputs = (x[rows.example] * _masks(len(rows))[..., None]).reshape(len(rows), -1) @ m + b
    np.testing.assert_array_equal(top1.row_classes, outputs.argmax(axis=1))
    assert_close(top1.row_scores, outputs.max(axis=1))
    # a model with two outputs: `output=` picks one (Targets.scorer), then the class
    inputs = keras.Input(SHAPE, dtype="float64")
    both = keras.Model(inputs, {"logits": model(inputs), "half": 0.5 * model(inputs)})
    half = ForwardEngine(both, score_fn=OutputScore("half"), batch_size=3, verbose=0).run(
        x, rows, masked, [2, 1], context=[SEED])
    assert_close(half.row_scores, 0.5 * outputs[np.arange(len(rows)), np.array([2, 1])[rows.example]])


def _at_layer(x, rows: ChunkRows):
    """Rows that start at a layer: the example and the layer's value (``context``, one row each; the
    context has no static shape, the layers after the injection need the value's)."""
    return [tf.gather(x, rows.example), tf.ensure_shape(tf.gather(rows.context, rows.row), [None, 32])]


@pytest.mark.parametrize("batch_size", (1, 4))
def test_forward_rows_return_a_layers_values_and_can_start_at_a_layer(batch_size):
    """``combine="values"`` with a LayerTap sums the layer's activations per example (the masked
    points flattened, by the Reshape layer); a LayerInjection model runs rows from the layer."""
    from tfattr.core.gradients import LayerInjection, LayerTap

    model, m, b = _linear_model()
    flat = model.layers[1]
    x = np.random.default_rng(4).normal(size=(3,) + SHAPE)
    rows = ForwardRows.repeat(3, 2)
    tapped = ForwardEngine(LayerTap(model, flat), batch_size=batch_size, verbose=0).run(
        x, rows, masked, [-1, -1, -1], combine="values", context=[SEED])
    points = (x[rows.example] * _masks(len(rows))[..., None]).reshape(len(rows), -1)
    assert_close(tapped.sums, _segment(points, rows.example, 3))
    outputs = points @ m + b
    np.testing.assert_array_equal(tapped.row_classes, outputs.argmax(axis=1))
    assert_close(tapped.row_scores, outputs.max(axis=1))
    values = np.random.default_rng(5).normal(size=(len(rows), points.shape[1]))
    injected = ForwardEngine(LayerInjection(model, flat), batch_size=batch_size, verbose=0).run(
        x, rows, _at_layer, [0, 2, 1], context=values)
    assert_close(injected.row_scores, (values @ m + b)[np.arange(len(rows)), np.array([0, 2, 1])[rows.example]])


def test_forward_rows_of_a_model_with_several_inputs_build_packed_points():
    from tfattr.core.inputs import model_spec, validate_inputs

    a, c = keras.Input((3,), name="a", dtype="float64"), keras.Input((2,), name="c", dtype="float64")
    dense = keras.layers.Dense(1, dtype="float64")
    model = keras.Model([a, c], dense(keras.layers.Concatenate(dtype="float64")([a, c])))
    dense.set_weights([np.arange(1.0, 6.0).reshape(5, 1), np.zeros(1)])
    rng = np.random.default_rng(4)
    pair = [rng.normal(size=(2, 3)), rng.normal(size=(2, 2))]
    packed = validate_inputs(pair, model_spec(model, several=True))

    def drop_one(x, rows):  # row p zeroes packed feature p
        return tf.gather(x, rows.example) * (1.0 - tf.one_hot(rows.position, 5, dtype=x.dtype))

    result = ForwardEngine(model, batch_size=4, verbose=0).run(packed.array, ForwardRows.repeat(2, 5), drop_one,
                                                               [0, 0], layout=packed.layout)
    full = np.concatenate(pair, axis=1)
    expected = [(full[e] * (1 - np.eye(5)[p])) @ np.arange(1.0, 6.0) for e in range(2) for p in range(5)]
    assert_close(result.row_scores, np.array(expected))


def test_auto_sizes_of_forward_rows_are_measured_apart_from_gradient_rows():
    autotune.reset()
    model, _, _ = _linear_model()
    x = np.random.default_rng(5).normal(size=(2,) + SHAPE)
    rows = ForwardRows.repeat(2, 40)
    fixed = ForwardEngine(model, batch_size=7, verbose=0).run(x, rows, masked, [0, 1], combine="weighted",
                                                              context=[SEED])
    found = ForwardEngine(model, batch_size="auto", verbose=0).run(x, rows, masked, [0, 1], combine="weighted",
                                                                   context=[SEED])
    assert_close(found.sums, fixed.sums)
    from tfattr.core.gradients import InputGradients

    PathEngine(InputGradients(model), batch_size="auto", verbose=0).integrate(
        tf.constant(x), tf.zeros((1,) + SHAPE, tf.float64), np.array([0, 1], np.int32),
        PathRows.grid(2, 1, np.linspace(0, 1, 20), np.ones(20), per_example_baselines=False))
    keys = list(autotune._tuners[model])
    forward = [key for key in keys if key[-1] == "forward"]
    assert len(forward) == 1 and len(keys) == 2
    assert forward[0][3] == ("forward", "weighted", "masked")
    autotune.reset()


def test_forward_rows_refuse_unsorted_rows_a_missing_vector_and_an_unknown_combination():
    model, _, _ = _linear_model()
    x = np.zeros((2,) + SHAPE)
    with pytest.raises(ValueError, match="sorted"):
        ForwardRows(np.array([1, 0]))
    engine = ForwardEngine(model, batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="combine"):
        engine.run(x, ForwardRows.repeat(2, 1), masked, [0, 0], combine="mean", context=[SEED])
    with pytest.raises(ValueError, match="vectors"):
        engine.run(x, ForwardRows.repeat(2, 1), lambda x, rows: tf.gather(x, rows.example), [0, 0],
                   combine="weighted")
    with pytest.raises(ValueError, match="examples 0"):
        engine.run(x, ForwardRows(np.array([0, 2])), masked, [0, 0], context=[SEED])


def unranked(x, rows):
    """Vectors reshaped by a tensor shape (their rank unknown while tracing)."""
    return tf.gather(x, rows.example), tf.reshape(tf.gather(x, rows.example), tf.cast(rows.context, tf.int32))


def test_forward_vectors_of_unknown_rank_are_refused_with_a_tfattr_error():
    model, _, _ = _linear_model()
    with pytest.raises(InvalidInputError, match="known rank"):
        ForwardEngine(model, batch_size=2, verbose=0).run(np.zeros((2,) + SHAPE), ForwardRows.repeat(2, 1), unranked,
                                                          [0, 0], combine="weighted", context=[-1, 4, 4, 2])


def test_forward_rows_scored_by_class_need_the_classes():
    model, _, _ = _linear_model()
    with pytest.raises(InvalidInputError, match="target_indices"):
        ForwardEngine(model, batch_size=2, verbose=0).run(np.zeros((1,) + SHAPE), ForwardRows.repeat(1, 2), masked,
                                                          context=[SEED])


def occluded(x, rows: ChunkRows):
    """Occlusion: row ``p`` zeroes the 2×2 window whose corner is row ``p`` of the context table."""
    corners = tf.cast(tf.reshape(rows.context, (-1, 2)), tf.int32)
    corner = tf.gather(corners, rows.position)
    i = tf.range(SHAPE[0])[None, :, None]
    j = tf.range(SHAPE[1])[None, None, :]
    h, w = corner[:, 0, None, None], corner[:, 1, None, None]
    window = tf.cast((i >= h) & (i < h + 2) & (j >= w) & (j < w + 2), x.dtype)
    return tf.gather(x, rows.example) * (1.0 - window[..., None]), window


def test_an_occlusion_method_on_forward_rows_matches_the_analytic_occlusion_of_a_linear_model():
    """For ``f(x) = x·M + b``, occluding a window changes the score by the window's share
    ``Σ_{i ∈ window} M[i, t] x_i``; occlusion attributes to each pixel the mean change over the
    windows that cover it. On forward rows: ``Σ_r (f(x) − s_r) · window_r`` is ``f(x) Σ_r window_r``
    minus the ``"weighted"`` combination's ``Σ_r s_r · window_r``."""
    model, m, b = _linear_model()
    x = np.random.default_rng(6).normal(size=(2,) + SHAPE)
    targets = np.array([1, 2])
    corners = np.array([(h, w) for h in range(3) for w in range(3)], np.float64)  # stride 1, 9 windows
    rows = ForwardRows.repeat(2, len(corners))
    found = {}
    for batch_size in (4, 18):
        result = ForwardEngine(model, batch_size=batch_size, verbose=0).run(
            x, rows, occluded, targets, combine="weighted", context=corners.ravel())
        fx = (x.reshape(2, -1) @ m + b)[np.arange(2), targets]
        windows = np.zeros((len(corners),) + SHAPE[:2])
        for p, (h, w) in enumerate(corners.astype(int)):
            windows[p, h : h + 2, w : w + 2] = 1
        found[batch_size] = (fx[:, None, None] * windows.sum(axis=0) - result.sums) / windows.sum(axis=0)
    share = (x * m[:, targets].T.reshape((2,) + SHAPE)).sum(axis=-1)  # each pixel's term of the score
    expected = np.zeros((2,) + SHAPE[:2])
    for h, w in corners.astype(int):
        expected[:, h : h + 2, w : w + 2] += share[:, h : h + 2, w : w + 2].sum(axis=(1, 2))[:, None, None]
    expected /= windows.sum(axis=0)
    assert_close(found[4], expected)
    assert_close(found[18], expected)
