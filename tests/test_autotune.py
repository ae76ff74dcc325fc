"""batch_size="auto": chunk sizes measured on the call's own rows, the fastest kept per key.

The search is tested on the tuner with injected timings (no test depends on this machine's
speed); the engine is tested with a fake clock and against fixed sizes (within float32 bounds).
"""

import json
import math

import numpy as np
import pytest
from conftest import CHUNK_SIZES, assert_float32_close, small_cnn

from tfattr import GradCAM, Gradient, IntegratedGradients, RSIGradCAM
from tfattr.core import autotune
from tfattr.core.engine import PathEngine, PathRows
from tfattr.core.gradients import InputGradients
from tfattr.errors import InvalidInputError


@pytest.fixture(autouse=True)
def fresh_tuning():
    autotune.reset()
    yield
    autotune.configure()
    autotune.reset()


def peaked(fastest):
    """Points per second peaking at ``fastest`` (unimodal in log size, as measured on CPUs and GPUs)."""
    return lambda size: 1000.0 / (1.0 + 0.3 * abs(math.log2(size) - math.log2(fastest)))


def timer(speed):
    """An injected timer: a round of chunks of ``sizes`` takes ``points / speed(size)`` seconds."""
    return lambda sizes: sum(sizes) / speed(sizes[0])


def drive(tuner, speed, total=10**6, calls=50):
    """Run sessions of ``total`` rows, timing each timed round with ``speed(size)`` points/s."""
    sizes_run = []
    for call in range(calls):
        session = tuner.session(total, fresh=call == 0)
        remaining = total
        while remaining > 0:
            planned = session.next_round(remaining)
            if planned is None:
                break
            sizes, timed = planned
            sizes_run.extend(sizes)
            remaining -= sum(sizes)
            session.record(sizes, sum(sizes) / speed(sizes[0]))
        if tuner.done:
            return sizes_run
    return sizes_run


@pytest.mark.parametrize("fastest, cap", [(4, 64), (1, 64), (16, 64), (32, 64), (64, 64), (1024, 1024)])
def test_tuner_picks_the_measured_fastest_size(fastest, cap):
    tuner = autotune.ChunkTuner(cap=cap, workers=2)
    drive(tuner, peaked(fastest))
    assert tuner.chosen == fastest


def test_tuner_grows_on_a_gpu_like_profile_until_the_cap():
    tuner = autotune.ChunkTuner(cap=512, workers=2)
    drive(tuner, lambda size: 100.0 * size)  # more points per pass is always faster
    assert tuner.chosen == 512


def test_tuner_measures_sizes_only_after_a_warm_up_chunk_and_discards_the_trace():
    tuner = autotune.ChunkTuner(cap=64, workers=2)
    seen = []
    session = tuner.session(10**6, fresh=True)
    for _ in range(6):
        seen.append(session.next_round(10**6))
        session.record(seen[-1][0], 1.0)
    # the first chunk (trace) alone and untimed, then two timed rounds at 16, a warm-up chunk at 32 ...
    assert seen[:5] == [([16], False), ([16, 16], True), ([16, 16], True), ([32], False), ([32, 32], True)]
    assert tuner.rounds == {16: 2, 32: 2}


def test_tuner_measures_what_fits_small_calls_and_runs_tiny_calls_whole():
    # calls of 24 rows: 32 never fits; 16 runs as one chunk a round; 8 as three, two in flight
    tuner = autotune.ChunkTuner(cap=64, workers=2)
    drive(tuner, {16: 100.0, 8: 150.0, 4: 120.0, 2: 60.0, 1: 30.0}.get, total=24)
    assert tuner.too_big == 32 and tuner.chosen == 8
    # a call of at most 16 rows (the first size) is one chunk while nothing is measured
    fresh = autotune.ChunkTuner(cap=64, workers=2)
    session = fresh.session(12, fresh=True)
    assert session.next_round(12) is None and session.size == 12 and fresh.rounds == {}


def test_batch_size_auto_is_the_default_and_other_values_are_named():
    model = small_cnn("relu")
    assert IntegratedGradients(model).config["batch_size"] == "auto"
    assert IntegratedGradients(model, batch_size=np.int64(5)).config["batch_size"] == 5
    for bad in ("fast", "AUTO", 0, -2, 2.5, True, None):
        with pytest.raises(InvalidInputError, match=r"positive integer or 'auto'.*Received: batch_size="):
            IntegratedGradients(model, batch_size=bad)
    with pytest.raises(InvalidInputError, match="Received: batch_size='big'"):
        Gradient(model).attribute(np.zeros((1, 16, 16, 3), np.float32), batch_size="big")


def test_auto_chunks_are_batch_size_invariant_while_sizes_change(images):
    """Every call of the tuning (chunks of several sizes mixed in one call) matches fixed chunks."""
    autotune.configure(timer=timer(peaked(32)))
    model = small_cnn("relu")
    fixed = {name: method(model, batch_size=CHUNK_SIZES[0], **options).attribute(images, target=1)
             for name, method, options in (("ig", IntegratedGradients, {"steps": 43}),
                                           ("rsi", RSIGradCAM, {"steps": 39, "layer": -4}),
                                           ("cam", GradCAM, {}))}
    auto = {"ig": IntegratedGradients(model, steps=43), "rsi": RSIGradCAM(model, steps=39, layer=-4),
            "cam": GradCAM(model)}
    for _ in range(6):
        for name, method in auto.items():
            assert_float32_close(method.attribute(images, target=1), fixed[name], err_msg=name)
    tuners = list(autotune._tuners[model].values())
    assert len(tuners) == 3
    ig_tuner = next(t for t in tuners if t.workers == 2 and t.rounds)
    assert sum(1 for t in tuners if not t.rounds) == 1  # Grad-CAM's calls of 3 rows run whole
    assert ig_tuner.chosen == 32  # the fastest by the injected timings
    rsi_tuner = next(t for t in tuners if t.workers == 1)  # Riemann–Stieltjes: one chunk at a time, carried
    assert set(rsi_tuner.rounds) >= {16, 32}


def test_explicit_batch_size_runs_every_chunk_at_that_size_without_tuning(images):
    model = small_cnn("relu")
    engine = PathEngine(InputGradients(model), batch_size=7, verbose=0)
    rows = PathRows.grid(len(images), 1, np.linspace(0.1, 1, 10), np.full(10, 0.1), per_example_baselines=False)
    result = engine.integrate(np.asarray(images), np.zeros((1,) + images.shape[1:], np.float32),
                              np.ones(len(images), np.int32), rows)
    assert result.chunks == math.ceil(len(rows) / 7)
    assert len(autotune._tuners) == 0


def test_the_cap_bounds_every_chunk(images):
    autotune.configure(max_points=8, timer=timer(peaked(64)))
    model = small_cnn("relu")
    ig = IntegratedGradients(model, steps=40)
    for _ in range(8):
        ig.attribute(images, target=0)
    (tuner,) = autotune._tuners[model].values()
    assert tuner.cap == 8 and tuner.chosen == 8 and max(tuner.rounds) == 8
    per_point = autotune.point_bytes(model, images.shape[1:], 4)
    assert per_point > 2 * 4 * math.prod(images.shape[1:])  # activations of every layer, not only the input
    autotune.reset()
    autotune.configure(max_bytes=3 * 2 * per_point)  # 3 points per chunk, 2 chunks in flight
    assert autotune.tuner_for(InputGradients(model), images.shape[1:], "float32", "path", 2, "").cap == 3


def test_the_chosen_size_is_kept_on_disk_when_asked(images, tmp_path):
    path = tmp_path / "sizes.json"
    autotune.configure(disk_cache=str(path), timer=timer(peaked(64)))
    model = small_cnn("relu")
    ig = IntegratedGradients(model, steps=43)
    for _ in range(8):
        ig.attribute(images, target=0)
    (tuner,) = autotune._tuners[model].values()
    assert tuner.chosen == 64 and list(json.loads(path.read_text()).values()) == [64]
    autotune.reset()  # a new process: the size comes from the file, no measuring
    again = autotune.tuner_for(InputGradients(model), tuple(images.shape[1:]), "float32", "path", 2, "")
    assert again.chosen == 64 and again.rounds == {}


def test_the_search_starts_lower_for_points_heavier_than_the_byte_budget():
    import keras

    inputs = keras.Input((224, 224, 3))
    h = inputs
    for _ in range(3):  # 3 × 224·224·64 floats, ×2 (activation and gradient), ×4 bytes: 77 MB a point
        h = keras.layers.Conv2D(64, 3, padding="same")(h)
    heavy = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    per_point = autotune.point_bytes(heavy, (224, 224, 3), 4)
    assert 70e6 < per_point < 80e6
    # 16 × 77 MB > 1 GiB ≥ 8 × 77 MB: the search starts at 8 on a CPU, at 16 on a GPU
    assert autotune.start_size(heavy, (224, 224, 3), np.dtype("float32"), "CPU") == 8
    assert autotune.start_size(heavy, (224, 224, 3), np.dtype("float32"), "/GPU:0") == autotune.START
    light = small_cnn("relu")
    assert autotune.start_size(light, (16, 16, 3), np.dtype("float32"), "CPU") == autotune.START
    # an input shape the model does not declare: no estimate, the fixed start
    assert autotune.start_size(heavy, (64, 64, 3), np.dtype("float32"), "CPU") == autotune.START
    tuner = autotune.tuner_for(InputGradients(heavy), (224, 224, 3), np.dtype("float32"), "path", 2, "CPU")
    assert tuner.start == 8
