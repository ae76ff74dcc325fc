"""Monotonicity, selectivity, sensitivity-n, IROF and µ-fidelity vs the bare forward passes they need,
and vs Quantus 0.6 on the same work.

Each metric scores ``R`` perturbed copies of each of ``N`` images (plus ``f(x)``). The *floor* is the
time of exactly those forward passes — chunks of ``--batch-size`` rows through the same compiled
forward function, on a pre-built batch — with nothing else (no ranking, no masks, no copies). Printed
per metric: rows, our time, the floor, the ratio (goal ≤ 1.1) and Quantus's time for the same
rows (``--quantus``; Quantus runs its own per-step loop with ``model.predict``; its SensitivityN and
IROF are given settings that make the same rows). Ours and the floor are timed alternately
``--repeats`` times and the best of each is kept, since the machine is shared.

    python benchmarks/bench_metrics_faith.py                    # small CNN 32×32×1, 8 images
    python benchmarks/bench_metrics_faith.py --quantus          # + Quantus's time (slow: ~minutes)

ROAD is left out of the ratio: its cost is the host's sparse solves of the imputation, not the
forward passes (printed apart: seconds per imputed image).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfattr import metrics  # noqa: E402
from tfattr.core.gradients import compiled_forward  # noqa: E402


def build_model(size: int, channels: int):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, channels))
    h = inputs
    for filters in (16, 32):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def floor_seconds(model, x, rows_per_image, batch_size):
    """f(x), then N·R rows in chunks of batch_size, through the compiled forward function."""
    forward = compiled_forward(model)
    rows = len(x) * rows_per_image
    batch = tf.convert_to_tensor(np.repeat(x[:1], min(batch_size, rows), axis=0))
    start = time.perf_counter()
    for s in range(0, len(x), batch_size):
        np.asarray(forward(tf.convert_to_tensor(x[s : s + batch_size])))
    for s in range(0, rows, batch_size):
        np.asarray(forward(batch[: min(batch_size, rows - s)]))
    return time.perf_counter() - start


def channels_first(model):
    inputs = keras.Input((model.input_shape[-1],) + tuple(model.input_shape[1:-1]))
    h = keras.layers.Permute((2, 3, 1))(inputs)
    for layer in model.layers[1:]:
        h = layer(h)
    return keras.Model(inputs, h)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quantus", action="store_true")
    args = parser.parse_args()
    size, num, bs = args.size, args.images, args.batch_size
    model = build_model(size, 1)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(num, size, size, 1)).astype(np.float32)
    maps = rng.normal(size=(num, size, size)).astype(np.float32)
    pixels = size * size
    step = pixels // 64
    quad = (np.arange(size)[:, None] // (size // 8)) * 8 + np.arange(size)[None] // (size // 8)
    segments = np.broadcast_to(quad, (num, size, size))  # 64 square superpixels
    cases = {
        "monotonicity": (64, lambda: metrics.monotonicity(model, x, maps, features_in_step=step, batch_size=bs,
                                                          verbose=0)),
        "selectivity": (64, lambda: metrics.selectivity(model, x, maps, patch_size=size // 8, batch_size=bs,
                                                        verbose=0)),
        "sensitivity_n (random)": (64, lambda: metrics.sensitivity_n(model, x, maps, n=[8, 64, 256, 512], runs=16,
                                                                     batch_size=bs, verbose=0)),
        "sensitivity_n (top)": (64, lambda: metrics.sensitivity_n(model, x, maps, n=list(step * np.arange(1, 65)),
                                                                  subsets="top", batch_size=bs, verbose=0)),
        "irof": (64, lambda: metrics.irof(model, x, maps, segments=segments, baseline=0.0, batch_size=bs,
                                          verbose=0)),
        "mu_fidelity": (64, lambda: metrics.mu_fidelity(model, x, maps, grid_size=8, nb_samples=64, batch_size=bs,
                                                        verbose=0)),
    }
    print(f"small CNN {size}×{size}×1, {num} images, batch {bs}")
    print(f"{'metric':24s} {'rows':>6s} {'ours s':>8s} {'floor s':>8s} {'ratio':>6s} {'Quantus s':>10s}")
    for name, (per_image, run) in cases.items():
        run()  # compile
        floor_seconds(model, x, per_image, bs)
        ours, floor = math.inf, math.inf
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            ours = min(ours, time.perf_counter() - start)
            floor = min(floor, floor_seconds(model, x, per_image, bs))
        theirs = quantus_seconds(name, model, x, maps, step, segments) if args.quantus else float("nan")
        print(f"{name:24s} {num * per_image:6d} {ours:8.3f} {floor:8.3f} {ours / floor:6.2f} {theirs:10.2f}")
    start = time.perf_counter()
    metrics.road(model, x, maps, percentages=[10, 50, 90], noise=0.0, batch_size=bs, verbose=0)
    print(f"road: {(time.perf_counter() - start) / (3 * num):.4f} s per imputed image (host sparse solve + pass)")


def quantus_seconds(name, model, x, maps, step, segments):
    import quantus
    from quantus.helpers import utils as quantus_utils

    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # Quantus 0.6 calls np.trapz (removed in NumPy 2.4)
    flat_x = np.moveaxis(x, -1, 1).reshape(len(x), -1)

    def insert(arr, indices, **kwargs):
        out = arr.copy()
        out[np.arange(len(arr))[:, None], indices] = flat_x[np.arange(len(arr))[:, None], indices]
        return out

    size = x.shape[1]
    metric = {
        "monotonicity": lambda: quantus.Monotonicity(features_in_step=step, perturb_func=insert),
        "selectivity": lambda: quantus.Selectivity(patch_size=size // 8),
        "sensitivity_n (top)": lambda: quantus.SensitivityN(features_in_step=step, n_max_percentage=1.0,
                                                            return_aggregate=False),
        "irof": lambda: quantus.IROF(perturb_baseline=0.0, return_aggregate=False),
    }.get(name)
    if metric is None:
        return float("nan")
    original = quantus_utils.get_superpixel_segments
    quantus_utils.get_superpixel_segments = lambda img, segmentation_method: segments[0]
    try:
        wrapped = channels_first(model)
        targets = np.asarray(model(x)).argmax(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            instance = metric()
            start = time.perf_counter()
            instance(model=wrapped, x_batch=np.moveaxis(x, -1, 1), y_batch=targets, a_batch=maps[:, None],
                     softmax=False, channel_first=True, batch_size=len(x))
            return time.perf_counter() - start
    finally:
        quantus_utils.get_superpixel_segments = original


if __name__ == "__main__":
    main()
