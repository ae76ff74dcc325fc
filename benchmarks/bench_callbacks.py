"""Training-time overhead of SaliencyLogger: ``model.fit`` with the callback / without it.

The callback explains 8 probe images with Integrated Gradients (32 steps) after every
epoch and writes 8 overlays + the ATV scalar to TensorBoard (a temporary ``log_dir``).
The model is the small VGG-style CNN of ``bench_engine.py`` (64×64), trained on random
images with SGD. Both configurations are warmed up first (the train step and the IG chunk
function are traced once), then one-epoch fits are timed alternately (medians of ``--repeats``).

Printed: seconds per epoch without and with the callback and their ratio (goal ≤ 1.10 at
the default training-set size; the callback's cost per epoch is fixed, so the ratio
shrinks as the epoch grows); the callback's own seconds per logging time, the ratio it
implies (``1 + callback / epoch``, steadier on a busy machine) and its first (tracing) call.

    python benchmarks/bench_callbacks.py [--train 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfattr  # noqa: E402
from bench_engine import small_vgg  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=1024, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed one-epoch fits per configuration")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (args.train, 64, 64, 3)).astype(np.float32)
    y = rng.integers(0, 10, args.train)
    probe, labels = x[:8], y[:8]
    model = small_vgg()
    model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fit = dict(batch_size=args.batch_size, verbose=0)

    with tempfile.TemporaryDirectory() as log_dir:
        logger = tfattr.SaliencyLogger(tfattr.IntegratedGradients, probe, targets=labels,
                                       method_options={"steps": 32}, log_dir=log_dir, metrics=("atv",),
                                       max_images=8, strict=True)
        model.fit(x[:256], y[:256], epochs=1, **fit)  # trace the train step
        model.fit(x[:256], y[:256], epochs=1, callbacks=[logger], **fit)  # trace IG, open the writer once
        first_call = logger.history[0].seconds

        plain, with_logger = [], []
        for _ in range(args.repeats):  # alternate one-epoch fits so drift hits both alike
            start = time.perf_counter()
            model.fit(x, y, epochs=1, **fit)
            plain.append(time.perf_counter() - start)
            start = time.perf_counter()
            model.fit(x, y, epochs=1, callbacks=[logger], **fit)
            with_logger.append(time.perf_counter() - start)
        steady = [r.seconds for r in logger.history[1:]]

    base, logged, own = np.median(plain), np.median(with_logger), np.median(steady)
    print(f"small VGG-style CNN, {args.train} random 64×64 images per epoch, batch {args.batch_size}; callback: "
          "IG 32 steps on 8 probe images + 8 overlays + ATV after every epoch; medians of "
          f"{args.repeats} one-epoch fits each")
    print(f"epoch without callback      {base:8.3f}s")
    print(f"epoch with SaliencyLogger   {logged:8.3f}s   wall ratio {logged / base:6.3f}   (goal <= 1.10)")
    print(f"callback per logging time   {own:8.3f}s   ratio from it (1 + callback / epoch) {1 + own / base:6.3f}; "
          f"first call, with tracing: {first_call:.3f}s")


if __name__ == "__main__":
    main()
