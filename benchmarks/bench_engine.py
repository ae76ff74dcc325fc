"""IG through the engine vs the hand-written batched floor, on the same machine and run.

For each model the *floor* is the fastest plain loop we can write by hand: all
interpolated inputs precomputed, then one compiled forward+backward per chunk (best
chunk size tried). tfattr's IntegratedGradients (50 steps, right rule) is timed at the
same chunk sizes. Printed: seconds, the ratio IG / floor (goal ≤ 1.05), and the peak
resident-memory increase during the run.

    python benchmarks/bench_engine.py            # small CNN (64×64, batch 16) + VGG19 (224×224, batch 1)
    python benchmarks/bench_engine.py --quick    # small CNN only
"""

from __future__ import annotations

import argparse
import os
import threading
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfattr  # noqa: E402


class PeakMemory:
    """Peak RSS increase (MiB) of this process while the block runs, sampled every 5 ms."""

    def __enter__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.mib = (self.peak - self.start) / 2**20


def small_vgg(size=64, classes=10):
    keras.utils.set_random_seed(0)
    bias = keras.initializers.RandomUniform(-0.1, 0.1, seed=0)
    inputs = keras.Input((size, size, 3))
    h = inputs
    for filters in (32, 64, 128):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", bias_initializer=bias)(h)
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", bias_initializer=bias)(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(128, activation="relu", bias_initializer=bias)(h)
    return keras.Model(inputs, keras.layers.Dense(classes, bias_initializer=bias)(h))


def floor_seconds(model, x, targets, steps, chunk):
    """Hand-written IG floor: precomputed path points, one compiled fwd+bwd per chunk."""
    alphas = np.arange(1, steps + 1, dtype=np.float32) / steps
    points = (alphas[None, :, None, None, None] * x[:, None]).reshape((-1,) + x.shape[1:])
    rows = np.repeat(targets, steps).astype(np.int32)
    points, rows = tf.constant(points), tf.constant(rows)

    @tf.function(reduce_retracing=True)
    def grad(p, t):
        with tf.GradientTape() as tape:
            tape.watch(p)
            s = tf.gather(model(p, training=False), t, axis=1, batch_dims=1)
        return tape.gradient(s, p)

    def run():
        for start in range(0, int(points.shape[0]), chunk):
            g = grad(points[start : start + chunk], rows[start : start + chunk])
        return g.numpy()

    run()  # trace + warm-up
    best = min(_timed(run) for _ in range(2))
    return best


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ig_seconds(model, x, targets, steps, chunk):
    ig = tfattr.IntegratedGradients(model, steps=steps, batch_size=chunk, verbose=0)
    ig.attribute(x, target=targets)  # trace + warm-up
    return min(_timed(lambda: ig.attribute(x, target=targets)) for _ in range(2))


def bench(name, model, x, steps, chunks):
    targets = np.argmax(model(x, training=False).numpy(), axis=1)
    print(f"\n{name}: input {x.shape[1:]}, batch {len(x)}, IG {steps} steps ({len(x) * steps} gradients)")
    print(f"{'chunk':>6} {'floor s':>9} {'IG s':>9} {'IG/floor':>9} {'IG peak MiB':>12}")
    floors, igs = {}, {}
    for chunk in chunks:
        floors[chunk] = floor_seconds(model, x, targets, steps, chunk)
        with PeakMemory() as mem:
            igs[chunk] = ig_seconds(model, x, targets, steps, chunk)
        print(f"{chunk:>6} {floors[chunk]:>9.3f} {igs[chunk]:>9.3f} {igs[chunk] / floors[chunk]:>9.3f} {mem.mib:>12.0f}")
    best_floor = min(floors.values())
    best_chunk = min(igs, key=igs.get)
    print(f"best floor {best_floor:.3f}s; IG at its best chunk ({best_chunk}) {igs[best_chunk]:.3f}s "
          f"-> ratio {igs[best_chunk] / best_floor:.3f} (goal <= 1.05)")
    return igs[best_chunk] / best_floor


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small CNN only")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices: "
          f"{[d.device_type for d in tf.config.list_physical_devices()]}, threads: {os.cpu_count()}")
    x = rng.uniform(0, 1, (16, 64, 64, 3)).astype(np.float32)
    bench("small VGG-style CNN", small_vgg(), x, args.steps, (8, 16, 32, 64))
    if not args.quick:
        vgg19 = keras.applications.VGG19(weights=None)
        x = rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
        bench("VGG19 (weights=None)", vgg19, x, args.steps, (16,))


if __name__ == "__main__":
    main()
