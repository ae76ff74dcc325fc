"""Perturbation methods through the forward engine vs a hand-written batched forward loop.

For each method the *floor* is the fastest plain loop we can write by hand over the same number of
perturbed inputs: every perturbed input precomputed in NumPy (Occlusion's windows, RISE's masks
from :func:`tfattr.methods.perturbation.rise_masks`, Sobol's design; for KernelShap and LIME
random superpixel coalitions of the same count — a CNN's forward time does not depend on the
pixels), then one compiled forward pass per chunk, the best chunk of a few. The method is timed
with its default ``batch_size="auto"`` (after one warm-up call that measures the chunk) and with a
fixed ``batch_size`` at the floor's best chunk. Printed: forward passes per second of each, and
the ratio method / floor (goal ≥ 0.95).

RISE's peak memory with 8,000 masks at 224×224 is measured in a subprocess per setting (peak
resident memory above the process's state after a warm-up call): bounded by the chunk, not by
``n_masks``.

    python benchmarks/bench_perturbation.py                 # small CNN 64×64 + EfficientNet-Lite0 224 + memory
    python benchmarks/bench_perturbation.py --only small    # one part: small | lite0 | memory
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import PeakMemory, small_vgg  # noqa: E402

import tfattr  # noqa: E402
from tfattr.methods.perturbation import occlusion_windows, rise_masks  # noqa: E402
from tfattr.methods.sobol import nearest_indices, replicated_design, sobol_design  # noqa: E402


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _timed_both(fn):
    """``(wall seconds, CPU seconds of this process)``: on a shared machine the CPU time of the work
    is the steadier measure of overhead; the wall time shows what chunks in flight gain."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def square_groups(size: int, cells: int) -> np.ndarray:
    """``(size, size, 1)`` ids of a ``cells × cells`` grid of superpixels."""
    index = np.minimum(np.arange(size) * cells // size, cells - 1)
    return (index[:, None] * cells + index[None, :])[..., None]


# -- the perturbed inputs of each method, in NumPy (the floor's input) ---------------------------------

def occlusion_points(x, window, strides):
    shape = x.shape[1:]
    sizes, steps, counts = occlusion_windows(shape, window, strides)
    points = []
    for e in range(len(x)):
        for index in np.ndindex(*[int(c) for c in counts]):
            occluded = x[e].copy()
            occluded[tuple(slice(i * s, i * s + k) for i, s, k in zip(index, steps, sizes))] = 0
            points.append(occluded)
    return np.concatenate([x, np.stack(points)])  # f(x) too, as the method scores it


def rise_points(x, n_masks, grid, seed):
    masks = rise_masks(seed, np.arange(n_masks), x.shape[1], x.shape[2], grid, 0.5).astype(np.float32)
    return np.concatenate([x[e][None] * masks[..., None] for e in range(len(x))])


def sobol_points(x, grid, n_designs, seed):
    a, b = sobol_design(grid * grid, n_designs, seed)
    cells = replicated_design(a, b).reshape(-1, grid, grid)
    rows, cols = nearest_indices(grid, x.shape[1]), nearest_indices(grid, x.shape[2])
    masks = cells[:, rows][:, :, cols].astype(np.float32)
    return np.concatenate([x[e][None] * masks[..., None] for e in range(len(x))])


def coalition_points(x, groups, rows_per_example, seed=0):
    rng = np.random.default_rng(seed)
    count = int(groups.max()) + 1
    points = []
    for e in range(len(x)):
        keep = rng.integers(0, 2, size=(rows_per_example, count)).astype(np.float32)
        masks = keep[:, groups[..., 0]]
        points.append(x[e][None] * masks[..., None])
    return np.concatenate(points)


# -- timing ------------------------------------------------------------------------------------------

def floor_runner(model, points, targets, chunk):
    """The floor: one compiled forward pass per chunk over precomputed points; returns ``run()``."""
    forward = tf.function(lambda p: model(p, training=False), reduce_retracing=True)
    total = len(points)
    chunks = [(tf.constant(points[s: s + chunk]), targets[s: s + chunk]) for s in range(0, total, chunk)]

    def run():
        for batch, rows in chunks:
            out = forward(batch).numpy()
            out[np.arange(len(rows)), rows].sum()

    run()  # trace + warm-up
    return run


def bench_model(label, model, x, cases, chunks, rounds=3):
    """Floor and method timed in turn, ``rounds`` times (the machine is shared: interleaving keeps
    a load change from favouring one side); the best time of each."""
    print(f"\n{label}: input {x.shape[1:]}, {len(x)} images; chunks tried {chunks}; "
          f"best of {rounds} interleaved rounds")
    print(f"{'method':<12} {'rows':>6} {'floor/s':>9} {'chunk':>6} {'auto/s':>9} {'auto':>6} {'fixed/s':>9} "
          f"{'fixed':>6}   per CPU-second: auto fixed")
    targets = np.argmax(np.asarray(model(x[:1], training=False)), axis=1).repeat(len(x)).astype(np.int32)
    lines = {}
    for name, make, points in cases:
        rows = len(points)
        row_targets = np.full(rows, targets[0], np.int32)
        runners = {c: floor_runner(model, points, row_targets, c) for c in chunks}
        first = {c: _timed(run) for c, run in runners.items()}
        chunk = min(first, key=first.get)
        auto, fixed = make("auto"), make(chunk)
        auto.attribute(x, target=targets)  # trace and measure the chunk
        fixed.attribute(x, target=targets)
        times = {"floor": [], "auto": [], "fixed": []}
        for _ in range(rounds):
            times["floor"].append(_timed_both(runners[chunk]))
            for key, method in (("auto", auto), ("fixed", fixed)):
                times[key].append(_timed_both(lambda m=method: m.attribute(x, target=targets)))
        wall = {k: rows / min(t[0] for t in v) for k, v in times.items()}
        cpu = {k: rows / min(t[1] for t in v) for k, v in times.items()}
        print(f"{name:<12} {rows:>6} {wall['floor']:>9.1f} {chunk:>6} {wall['auto']:>9.1f} "
              f"{wall['auto'] / wall['floor']:>6.2f} {wall['fixed']:>9.1f} {wall['fixed'] / wall['floor']:>6.2f}   "
              f"cpu: {cpu['auto'] / cpu['floor']:>5.2f} {cpu['fixed'] / cpu['floor']:>5.2f}", flush=True)
        lines[name] = {"rows": rows, "chunk": chunk, "wall": wall, "cpu": cpu}
    return lines


def cases_for(model, x, size, settings):
    """(name, make(batch_size) -> method, the floor's perturbed inputs) for each method."""
    window, stride = settings["window"], settings["stride"]
    groups = square_groups(size, settings["superpixels"])
    samples, masks, grid, designs = settings["samples"], settings["masks"], settings["grid"], settings["designs"]
    occlusion = occlusion_points(x, (window, window), (stride, stride))
    return [
        ("occlusion", lambda b: tfattr.Occlusion(model, window=(window, window), strides=(stride, stride),
                                                 batch_size=b, verbose=0), occlusion),
        ("rise", lambda b: tfattr.RISE(model, n_masks=masks, grid=7, seed=0, batch_size=b, verbose=0),
         rise_points(x, masks, 7, 0)),
        ("kernelshap", lambda b: tfattr.KernelShap(model, feature_mask=groups, n_samples=samples, seed=0,
                                                   batch_size=b, verbose=0),
         coalition_points(x, groups, samples + 2)),  # + f(x), f(baseline)
        ("lime", lambda b: tfattr.Lime(model, segmentation=groups, n_samples=samples, seed=0, batch_size=b,
                                       verbose=0), coalition_points(x, groups, samples)),
        ("sobol", lambda b: tfattr.SobolAttribution(model, grid=grid, n_designs=designs, seed=0, batch_size=b,
                                                    verbose=0), sobol_points(x, grid, designs, 0)),
    ]


def check_rows(model, x, cases):
    """The floor scores as many rows as the method does (its ``info["rows"]``, + f(x) for occlusion)."""
    targets = np.zeros(len(x), np.int32)
    for name, make, points in cases:
        info = make(64).attribute(x, target=targets).info
        rows = info["rows"] + (len(x) if name == "occlusion" else 0)
        if rows != len(points):
            print(f"  note: {name} scores {rows} rows, the floor {len(points)}")


def memory_child(n_masks, batch_size):
    """Run in a subprocess: RISE at 224×224 on a small CNN, peak RSS increase (MiB) of the timed call."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3))
    h = keras.layers.Conv2D(8, 7, strides=4, activation="relu")(inputs)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(h)
    out = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, out)
    x = np.random.default_rng(0).uniform(size=(1, 224, 224, 3)).astype(np.float32)
    rise = tfattr.RISE(model, n_masks=n_masks, grid=7, seed=0, batch_size=batch_size, verbose=0)
    tfattr.RISE(model, n_masks=batch_size, grid=7, seed=0, batch_size=batch_size, verbose=0).attribute(x, target=0)
    with PeakMemory() as mem:
        start = time.perf_counter()
        found = rise.attribute(x, target=0)
        seconds = time.perf_counter() - start
    print(json.dumps({"n_masks": n_masks, "batch_size": batch_size, "peak_mib": mem.mib, "seconds": seconds,
                      "forward_passes": found.info["forward_passes"]}))


def bench_memory():
    print("\nRISE peak memory at 224×224×3 (subprocess per setting; all masks at once would be "
          f"{8000 * 224 * 224 * 4 / 2**20:.0f} MiB of float32 masks, ×3 for the masked images)")
    print(f"{'n_masks':>8} {'chunk':>6} {'peak MiB':>9} {'seconds':>8}")
    results = []
    for n_masks, batch_size in [(1000, 64), (8000, 64), (8000, 16)]:
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n_masks), str(batch_size)],
                             capture_output=True, text=True, check=True)
        line = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(line)
        print(f"{n_masks:>8} {batch_size:>6} {line['peak_mib']:>9.0f} {line['seconds']:>8.1f}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=["small", "lite0", "memory"], default=["small", "lite0", "memory"])
    parser.add_argument("--memory-child", nargs=2, type=int, metavar=("N_MASKS", "BATCH"))
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    if "small" in args.only:
        model = small_vgg(64)
        x = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
        settings = {"window": 8, "stride": 4, "superpixels": 8, "samples": 256, "masks": 256, "grid": 4, "designs": 8}
        cases = cases_for(model, x, 64, settings)
        check_rows(model, x, cases)
        bench_model("small VGG-style CNN 64×64", model, x, cases, [32, 64])
    if "lite0" in args.only:
        from tfattr.data import EfficientNetLite0

        model = EfficientNetLite0()
        x = np.random.default_rng(0).uniform(0, 255, size=(1, 224, 224, 3)).astype(np.float32)
        settings = {"window": 56, "stride": 28, "superpixels": 6, "samples": 96, "masks": 128, "grid": 3, "designs": 8}
        cases = cases_for(model, x, 224, settings)
        check_rows(model, x, cases)
        bench_model("EfficientNet-Lite0 224×224", model, x, cases, [16, 32], rounds=2)
    if "memory" in args.only:
        bench_memory()


if __name__ == "__main__":
    main()
