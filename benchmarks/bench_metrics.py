"""AUPC vs the bare forward passes it needs, on the same machine and run.

AUPC with k×k windows, L regions and P copies per step costs ``L·P·N`` forward passes on
``N`` images. The *floor* is the time of exactly those forward passes — the same chunk
sizes, through the same compiled forward function — in one loop over a pre-built batch,
with nothing else (no window ranking, no copies, no median). Printed: both times and the
ratio AUPC / floor (goal ≤ 1.1). Floor and AUPC are timed alternately ``--repeats`` times
and the best of each is kept, since the machine is shared.

    python benchmarks/bench_metrics.py                      # VGG19 224×224, 1 image, L=4 (≈ 3 min on 2 cores)
    python benchmarks/bench_metrics.py --regions 30         # the paper's L = 30 (1,500 passes; ≈ 10 min on 2 cores)
    python benchmarks/bench_metrics.py --model small --size 64 --kernel-size 5 --images 8   # overhead-heavy case

The per-step overhead does not depend on L, so the ratio at L = 4 is the ratio at L = 30.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfattr import metrics  # noqa: E402
from tfattr.core.gradients import compiled_forward  # noqa: E402


def build_model(name: str, size: int):
    keras.utils.set_random_seed(0)
    if name == "vgg19":
        if size == 224:
            return keras.applications.VGG19(weights=None, classifier_activation=None)
        base = keras.applications.VGG19(weights=None, include_top=False, input_shape=(size, size, 3), pooling="avg")
        return keras.Model(base.input, keras.layers.Dense(1000)(base.output))
    inputs = keras.Input((size, size, 3))
    h = inputs
    for filters in (32, 64, 128):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def floor_seconds(model, x, regions, copies, batch_size):
    """The forward passes of AUPC alone: f(x), then L steps of N·P rows in chunks of batch_size."""
    forward = compiled_forward(model)
    rows = len(x) * copies
    batch = np.repeat(x[:1], min(batch_size, rows), axis=0)
    start = time.perf_counter()
    for s in range(0, len(x), batch_size):
        np.asarray(forward(tf.convert_to_tensor(x[s : s + batch_size])))
    for _ in range(regions):
        for s in range(0, rows, batch_size):
            np.asarray(forward(tf.convert_to_tensor(batch[: min(batch_size, rows - s)])))
    return time.perf_counter() - start


def aupc_seconds(model, x, attributions, args):
    start = time.perf_counter()
    metrics.aupc(model, x, attributions, kernel_size=args.kernel_size, regions=args.regions,
                 perturbations=args.perturbations, batch_size=args.batch_size, seed=0, verbose=0)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("vgg19", "small"), default="vgg19")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--kernel-size", type=int, default=15)
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--perturbations", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, CPUs: {os.cpu_count()}")
    model = build_model(args.model, args.size)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (args.images, args.size, args.size, 3)).astype(np.float32)
    attributions = rng.normal(size=x.shape).astype(np.float32)
    passes = args.images * (1 + args.regions * args.perturbations)
    calls = math.ceil(args.images / args.batch_size) + args.regions * math.ceil(args.images * args.perturbations / args.batch_size)
    print(f"AUPC on {args.model} {args.size}×{args.size}, {args.images} image(s): k={args.kernel_size}, "
          f"L={args.regions}, P={args.perturbations}, batch {args.batch_size} -> {passes} forward passes in {calls} calls")

    # warm-up: trace the forward function at every chunk size used
    warm = argparse.Namespace(**dict(vars(args), regions=1))
    aupc_seconds(model, x, attributions, warm)
    floor_seconds(model, x, 1, args.perturbations, args.batch_size)

    floors, runs = [], []
    for _ in range(args.repeats):
        floors.append(floor_seconds(model, x, args.regions, args.perturbations, args.batch_size))
        runs.append(aupc_seconds(model, x, attributions, args))
        print(f"  floor {floors[-1]:8.2f} s   aupc {runs[-1]:8.2f} s", flush=True)
    ratio = min(runs) / min(floors)
    print(f"best floor {min(floors):.2f} s ({min(floors) / passes * 1000:.1f} ms/pass), best AUPC {min(runs):.2f} s "
          f"-> ratio AUPC / forward passes = {ratio:.3f} (goal <= 1.1)")


if __name__ == "__main__":
    main()
