"""Cost of guided-non-linearity IG (Kwon, Koo & Cho) against plain IG, and of building clones.

Prints:

* the time of ``GuidedIntegratedGradients`` / ``IntegratedGradients`` on the same model, images
  and options (goal: ≤ 1.05×). Both go through the same engine; the guided one only adds an
  identity forward and a ``relu`` of the upstream gradient after each ReLU/max-pool. Runs are
  interleaved (IG, guided, IG, guided, …) after a warm-up that traces both, and the ratio of
  the medians is reported, since the machine may be shared;
* the time to build ``guided_clone`` and ``logits_model`` for VGG19 (224×224, 143 M weights),
  split into cloning, weight copy and the graph scan, and the time of a cached call.

Usage::

    KERAS_BACKEND=tensorflow python benchmarks/bench_guided.py [--quick]
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tfattr import IntegratedGradients  # noqa: E402
from tfattr.methods.guided import GuidedIntegratedGradients  # noqa: E402
from tfattr.surgery import clear_cache, guided_clone, logits_model  # noqa: E402
from tfattr.surgery import cloning, guided  # noqa: E402


def time_it(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ig_ratio(name: str, model, images, repeats: int, **options) -> float:
    plain = IntegratedGradients(model, **options)
    guided_ig = GuidedIntegratedGradients(model, **options)
    first_plain = time_it(lambda: plain.attribute(images, target=0))  # traces
    first_guided = time_it(lambda: guided_ig.attribute(images, target=0))  # clones + traces
    plain_times, guided_times = [], []
    for _ in range(repeats):
        plain_times.append(time_it(lambda: plain.attribute(images, target=0)))
        guided_times.append(time_it(lambda: guided_ig.attribute(images, target=0)))
    p, g = statistics.median(plain_times), statistics.median(guided_times)
    points = len(images) * options.get("steps", 50)
    print(f"{name:<34} IG {p * 1e3:8.1f} ms  guided IG {g * 1e3:8.1f} ms  ratio {g / p:5.3f}  "
          f"(min ratio {min(guided_times) / min(plain_times):5.3f}; {points} gradients/call; "
          f"first calls {first_plain:.2f} s / {first_guided:.2f} s)")
    return g / p


def clone_costs(model) -> None:
    clear_cache(model)
    t_cold = time_it(lambda: guided_clone(model))  # the first clone in this process
    t_cached = time_it(lambda: guided_clone(model))
    warm = []
    for _ in range(3):
        clear_cache(model)
        start = time.perf_counter()
        clone, pairs = cloning.clone_with(model, guided.guided_replacement, "guided_clone")
        t_clone = time.perf_counter() - start
        t_copy = time_it(lambda: cloning.copy_weights(pairs))
        t_scan = time_it(lambda: cloning.scan_ops(clone, guided.UNSWAPPED_OP_TYPES, guided.GUIDED_SCOPE))
        warm.append((t_clone + t_copy + t_scan, t_clone, t_copy, t_scan))
        del clone, pairs
    total, t_clone, t_copy, t_scan = sorted(warm)[1]  # the median run
    clear_cache(model)
    t_logits = time_it(lambda: logits_model(model))
    params = model.count_params() / 1e6
    print(f"guided_clone({model.name}, {params:.0f} M weights): first call {t_cold:.2f} s; later builds "
          f"{total:.2f} s = clone_model {t_clone:.2f} s + weight copy {t_copy:.2f} s + graph scan "
          f"{t_scan:.2f} s; cached call {t_cached * 1e6:.0f} µs; logits_model {t_logits:.2f} s")
    print("  (clone_model includes initialising the clone's fresh weights; the copy is a "
          "variable-to-variable assign, no NumPy round trip)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    rng = np.random.default_rng(0)
    print(f"keras {keras.__version__}; {os.cpu_count()} CPU(s)\n")

    print("— cost of a clone —")
    start = time.perf_counter()
    vgg19 = keras.applications.VGG19(weights=None)
    print(f"building VGG19 itself (weights=None): {time.perf_counter() - start:.2f} s")
    clone_costs(vgg19)
    del vgg19
    clear_cache()

    print("\n— guided IG / IG, same model, images and options —")
    ratios = {}
    vgg = keras.applications.VGG19(weights=None, input_shape=(64, 64, 3), classes=10)
    images = rng.uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
    ratios["VGG19 64×64"] = ig_ratio("VGG19 64×64, 2 images, 32 steps", vgg, images, repeats, steps=32, batch_size=32)
    resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    ratios["ResNet50 64×64"] = ig_ratio("ResNet50 64×64, 2 images, 32 steps", resnet, images, repeats,
                                        steps=32, batch_size=32)
    small = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    small_images = rng.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    ratios["small CNN"] = ig_ratio("small CNN 32×32, 8 images, 50 steps", small, small_images, repeats,
                                   steps=50, batch_size=100)
    print()
    for name, ratio in ratios.items():
        verdict = "meets" if ratio <= 1.05 else "misses"
        print(f"{name:<16} guided/plain = {ratio:5.3f}  ({verdict} the ≤ 1.05× goal)")


if __name__ == "__main__":
    main()
