"""LRP / plain gradient pass on VGG19 (weights=None) and EfficientNet-Lite0 at 224 (issue 27).

    python benchmarks/bench_lrp.py [--repeats 5]

One image per call, interleaved runs after one warm-up call of each (the warm-up of LRP includes
building its clone, timed separately); the median of the repeats is reported.
"""

import argparse
import time

import keras
import numpy as np

import tfattr
import tfattr.data
from tfattr.surgery import clear_cache
from tfattr.surgery.lrp import lrp_clone


def measure(name, model, x, repeats, composites):
    target = 1
    start = time.perf_counter()
    for composite in composites:
        lrp_clone(model, composite)
    built = (time.perf_counter() - start) / len(composites)
    methods = {"gradient": tfattr.Gradient(model)}
    methods.update({c: tfattr.LRP(model, composite=c) for c in composites})
    times = {k: [] for k in methods}
    for method in methods.values():
        method.attribute(x, target=target)
    for _ in range(repeats):
        for key, method in methods.items():
            start = time.perf_counter()
            method.attribute(x, target=target)
            times[key].append(time.perf_counter() - start)
    base = np.median(times["gradient"])
    row = ", ".join(f"{c} {np.median(times[c]):.3f} s = {np.median(times[c]) / base:.2f}×" for c in composites)
    print(f"{name}: gradient {base:.3f} s; {row}; clone built in {built:.2f} s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    composites = ["epsilon", "epsilon_plus", "epsilon_gamma_box"]
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    vgg = keras.applications.VGG19(weights=None, classifier_activation=None)
    measure("VGG19 224", vgg, rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32"), args.repeats, composites)
    clear_cache()
    lite = tfattr.data.EfficientNetLite0()
    measure("EfficientNet-Lite0 224", lite, rng.uniform(0, 255, (1, 224, 224, 3)).astype("float32"), args.repeats,
            composites)


if __name__ == "__main__":
    main()
