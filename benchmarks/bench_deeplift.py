"""Cost of DeepLift (Rescale, model surgery) against a plain gradient pass, and against DeepLIFT's floor.

Prints, per model (VGG19 ``weights=None`` and EfficientNet-Lite0, 224×224, ``--batch`` images), the
median over interleaved repeats (after a warm-up that traces everything) of:

* ``gradient``: a hand-written compiled ``∇_x f_t(x)`` on the batch (1 forward + 1 backward);
* ``forward B`` / ``forward 2B``: a hand-written compiled forward (no tape) of the batch and of the
  batch with its references;
* ``floor`` = ``forward 2B + (gradient − forward B)``: the forward of the input and its reference
  plus one backward of the input rows only — the least any DeepLIFT takes (the Rescale rule needs
  the reference's activation at every nonlinearity: one more forward than a gradient, the same
  backward);
* ``clone pass``: a hand-written compiled forward+backward of tfattr's DeepLIFT clone on the
  paired batch ``[x; x₀]`` (what DeepLift runs per chunk: 2 forwards, 2 backwards of half zeros);
* ``tfattr.DeepLift``: the method, ``batch_size`` = the batch (one chunk).

and the ratios DeepLift / gradient (issue 27's goal ≤ 1.2) and DeepLift / floor.

Usage::

    KERAS_BACKEND=tensorflow python benchmarks/bench_deeplift.py [--batch 4] [--repeats 3] [--models vgg19,lite0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tfattr.methods import DeepLift  # noqa: E402
from tfattr.surgery.deeplift import deeplift_clone  # noqa: E402


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(name: str, model, x: np.ndarray, repeats: int) -> None:
    target = 0
    xs = tf.constant(x)
    x0 = tf.zeros_like(xs)
    clone = deeplift_clone(model)

    @tf.function(reduce_retracing=True)
    def gradient(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            score = tf.reduce_sum(model(inputs, training=False)[:, target])
        return tape.gradient(score, inputs)

    @tf.function(reduce_retracing=True)
    def forward(inputs):
        return model(inputs, training=False)[:, target]

    @tf.function(reduce_retracing=True)
    def clone_pass(inputs, references):
        paired = tf.concat([inputs, references], 0)
        with tf.GradientTape() as tape:
            tape.watch(paired)
            score = tf.reduce_sum(clone(paired, training=False)[: tf.shape(inputs)[0], target])
        return (inputs - references) * tape.gradient(score, paired)[: tf.shape(inputs)[0]]

    method = DeepLift(model, baseline="zero", batch_size=len(x), verbose=0)
    runs = {
        "gradient": lambda: gradient(xs).numpy(),
        "forward B": lambda: forward(xs).numpy(),
        "forward 2B": lambda: forward(tf.concat([xs, x0], 0)).numpy(),
        "clone pass": lambda: clone_pass(xs, x0).numpy(),
        "tfattr.DeepLift": lambda: method.attribute(x, target=target),
    }
    for run in runs.values():  # warm-up: traces, clone, chunk sizes
        run()
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            times[key].append(_timed(run))
    median = {k: statistics.median(v) for k, v in times.items()}
    median["floor"] = median["forward 2B"] + median["gradient"] - median["forward B"]
    print(f"{name}: " + "  ".join(f"{k} {v * 1e3:.0f} ms" for k, v in median.items()))
    print(f"    DeepLift / gradient {median['tfattr.DeepLift'] / median['gradient']:.2f}   "
          f"DeepLift / floor {median['tfattr.DeepLift'] / median['floor']:.2f}   "
          f"clone pass / floor {median['clone pass'] / median['floor']:.2f}   "
          f"floor / gradient {median['floor'] / median['gradient']:.2f}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="vgg19,lite0")
    args = parser.parse_args(argv)
    x = np.random.default_rng(0).uniform(0, 255, (args.batch, 224, 224, 3)).astype(np.float32)
    for name in args.models.split(","):
        if name == "vgg19":
            from tfattr.surgery import logits_model

            model = logits_model(keras.applications.VGG19(weights=None))
        else:
            from tfattr.data import EfficientNetLite0

            model = EfficientNetLite0()
        bench(f"{name} 224×224, batch {args.batch}", model, x, args.repeats)


if __name__ == "__main__":
    main()
