"""Settings of automatic chunk sizes: ``configure`` and ``TFATTR_MAX_POINTS`` are checked when
given, with tfattr errors naming the setting; the default byte budget comes from the machine's
memory and bounds the measured peak of ``batch_size="auto"``."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import small_cnn

from tfattr import IntegratedGradients
from tfattr.core import autotune
from tfattr.core.gradients import InputGradients
from tfattr.errors import InvalidInputError, InvalidTypeError


@pytest.fixture(autouse=True)
def fresh_tuning(monkeypatch):
    monkeypatch.delenv("TFATTR_MAX_POINTS", raising=False)
    monkeypatch.delenv("TFATTR_CHUNK_CACHE", raising=False)
    autotune.reset()
    yield
    autotune.configure()
    autotune.reset()


@pytest.mark.parametrize("name, value, error", [
    ("max_points", "abc", InvalidTypeError), ("max_points", "64", InvalidTypeError),
    ("max_points", 2.5, InvalidTypeError),
    ("max_points", True, InvalidTypeError), ("max_points", 0, InvalidInputError), ("max_points", -4, InvalidInputError),
    ("max_bytes", "1GB", InvalidTypeError), ("max_bytes", -1, InvalidInputError), ("max_bytes", 0, InvalidInputError),
    ("disk_cache", 123, InvalidTypeError), ("disk_cache", 1.0, InvalidTypeError), ("timer", 5, InvalidTypeError),
])
def test_configure_checks_each_setting_when_given(name, value, error):
    with pytest.raises(error, match=rf"`{name}`.*Received: {name}="):
        autotune.configure(**{name: value})
    assert autotune._settings[name] is None  # nothing half-applied
    assert autotune.limits("CPU")[0] == 64


def test_configure_accepts_numpy_integers_and_none_restores_defaults():
    autotune.configure(max_points=np.int64(8), max_bytes=np.int32(1 << 20))
    assert autotune.limits("CPU") == (8, 1 << 20)
    autotune.configure()
    assert autotune.limits("CPU")[0] == 64


@pytest.mark.parametrize("text", ["abc", "1.5", "-3", "0", "1e3"])
def test_a_bad_max_points_variable_is_a_named_error(monkeypatch, text):
    monkeypatch.setenv("TFATTR_MAX_POINTS", text)
    with pytest.raises(InvalidInputError, match=rf"TFATTR_MAX_POINTS.*Received: TFATTR_MAX_POINTS='{text}'"):
        autotune.limits("CPU")
    model = small_cnn("relu")
    with pytest.raises(InvalidInputError, match="TFATTR_MAX_POINTS"):
        IntegratedGradients(model, steps=4).attribute(np.zeros((1, 16, 16, 3), np.float32), target=0)


def test_a_good_max_points_variable_is_used(monkeypatch):
    monkeypatch.setenv("TFATTR_MAX_POINTS", " 12 ")
    assert autotune.limits("CPU")[0] == 12
    monkeypatch.setenv("TFATTR_MAX_POINTS", "")
    assert autotune.limits("CPU")[0] == 64


def test_the_default_byte_budget_is_a_fraction_of_the_machines_memory(monkeypatch):
    monkeypatch.setattr(autotune, "machine_memory", lambda device="": 400 << 20)
    budget = int((400 << 20) * autotune.MEMORY_FRACTION)
    assert autotune.limits("CPU") == (64, budget)
    model = small_cnn("relu")
    per_point = autotune.point_bytes(model, (16, 16, 3), 4)
    tuner = autotune.tuner_for(InputGradients(model), (16, 16, 3), np.dtype("float32"), "path", 2, "CPU")
    assert tuner.cap == min(64, budget // (2 * per_point))
    autotune.configure(max_bytes=3 * 2 * per_point)  # an explicit budget wins
    assert autotune.limits("CPU")[1] == 3 * 2 * per_point
    # the real reading: positive and at most the machine's total memory
    memory = autotune.__dict__["_meminfo_available"]()
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert memory is None or 0 < memory <= total


PEAK = """
import resource, sys
import numpy as np, keras
from tfattr import IntegratedGradients
from tfattr.core import autotune
forced = int(sys.argv[1])
autotune.machine_memory = lambda device="": forced  # the machine's memory reading, forced small
autotune.configure(timer=lambda sizes: 1.0 / sum(sizes) ** 2)  # larger chunks measure faster: the search climbs
keras.utils.set_random_seed(0)
inputs = keras.Input((96, 96, 3))
h = inputs
for _ in range(3):
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(h)))
x = np.random.default_rng(0).uniform(size=(2, 96, 96, 3)).astype("float32")
IntegratedGradients(model, steps=4, batch_size=1, parallel_chunks=1).attribute(x, target=0)  # TF set up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
ig = IntegratedGradients(model, steps=64, parallel_chunks=1)
for _ in range(4):
    ig.attribute(x, target=0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
(tuner,) = [t for table in autotune._tuners.values() for t in table.values()]
print(after - before, tuner.cap, autotune.point_bytes(model, (96, 96, 3), 4))
"""


def test_auto_chunks_stay_within_the_default_budget_measured_peak():
    """With the memory reading forced to 256 MiB the default budget is 64 MiB: 9 points of this
    CNN (7.3 MB of activations and gradients a point). Unbounded, the search climbs to 64 points
    (470 MB estimated; 450 MB measured above the set-up peak). The bound allows 2× the budget: the
    estimate counts layer outputs and their gradients, not TensorFlow's convolution workspace
    and the retraced chunk functions (measured: 70 MB above the set-up peak for the 64 MiB budget)."""
    forced = 256 << 20
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", PEAK, str(forced)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    extra, cap, per_point = (int(v) for v in out.stdout.split()[-3:])
    budget = int(forced * autotune.MEMORY_FRACTION)
    assert cap == budget // per_point == 9
    assert extra <= 2 * budget, f"auto chunks peaked {extra / 2**20:.0f} MiB over a {budget / 2**20:.0f} MiB budget"
