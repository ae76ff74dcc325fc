"""What a uniform-output baseline training step costs next to one forward+backward of the classifier.

Both are medians: on a shared machine a single slow run says more about the neighbours
than about the code. Prints, for VGG19 (``weights=None``, 224×224, 1000 classes; the paper's network) by default:

* one compiled forward+backward of the frozen network (gradient of a class score with
  respect to one input image; median of ``--steps`` runs after a warm-up)
* one step of :func:`tfattr.baselines.train_uniform_baseline`: Dense(H·W·C) from the
  constant 1.0, the frozen network, the loss ``λ·max|o_b − o_t| + (1 − λ)·MSE(b, b₀)``,
  its gradient and the RMSprop update, plus the early-stopping bookkeeping on the host
  (median over steps 2…n+1 of the trainer's own ``history["seconds"]``; step 1 traces).

    python benchmarks/bench_baseline.py [--model vgg19|PATH.keras] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfattr.baselines import train_uniform_baseline  # noqa: E402


def forward_backward_seconds(model, repeats: int) -> float:
    """Median time of one compiled forward+backward (input gradient) on one image."""
    x = tf.zeros((1,) + tuple(model.inputs[0].shape[1:]), model.inputs[0].dtype)

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = model(x, training=False)[:, 0]
        return tape.gradient(score, x)

    gradient(x).numpy()  # trace + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        gradient(x).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def training_step_seconds(model, steps: int, **options):
    """Median wall time of one training step (steps 2…n; step 1 traces) and the whole call."""
    start = time.perf_counter()
    result = train_uniform_baseline(model, steps=steps + 1, patience=None, verbose=0, **options)
    total = time.perf_counter() - start
    per_step = np.diff(result.history["seconds"][: steps + 1])
    return float(np.median(per_step)), total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vgg19", help="vgg19 (weights=None, 224×224) or a .keras file")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps / forward+backward repeats")
    args = parser.parse_args()
    if args.model == "vgg19":
        model = keras.applications.VGG19(weights=None)
        options = dict(preprocess="vgg19", value_range=(0.0, 255.0))
    else:
        model = keras.models.load_model(args.model)
        options = {}
    shape = tuple(model.inputs[0].shape[1:])
    print(f"model {model.name} {shape} -> {model.outputs[0].shape[-1]} classes, "
          f"{model.count_params() / 1e6:.1f}M parameters, {os.cpu_count()} CPU(s)")
    reference = forward_backward_seconds(model, args.steps)
    per_step, total = training_step_seconds(model, args.steps, **options)
    print(f"forward+backward of the frozen network (median of {args.steps}): {reference:8.4f}s")
    print(f"train_uniform_baseline, one step (median of {args.steps}):       {per_step:8.4f}s"
          f"   ratio {per_step / reference:5.2f}")
    print(f"whole call, {args.steps + 1} steps (tracing, fingerprint, report):     {total:8.3f}s")

if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
