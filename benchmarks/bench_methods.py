"""Methods that share the engine cost what IG costs for the same number of gradients.

Prints, on the same model and inputs in one process:

* SmoothTaylor (R = 150 roots) / IG (150 steps)                       goal ≤ 1.05
* RSI-Grad-CAM (50 steps, last conv) / IG (50 steps)                  goal ≤ 1.10
* Grad-CAM / plain gradient (one pass each)
* adaptive noising (Algorithm 1, AUTVC objective) on 8 images: wall time and evaluations

    python benchmarks/bench_methods.py [--vgg19]   # default: the small VGG-style CNN at 64×64
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfattr  # noqa: E402
from bench_engine import small_vgg  # noqa: E402


def best_of(fn, repeats=2):
    fn()  # trace + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def ratio_line(name, seconds, reference, goal):
    print(f"{name:<44} {seconds:8.3f}s / {reference:8.3f}s = {seconds / reference:6.3f}   (goal <= {goal})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vgg19", action="store_true", help="VGG19 (weights=None, 224×224, 1 image) instead")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-adaptive", action="store_true", help="skip the adaptive-noising run (about 4 minutes)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.vgg19:
        model = keras.applications.VGG19(weights=None, classifier_activation=None)
        x = rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)
        layer = "block5_conv4"
    else:
        model = small_vgg()
        x = rng.uniform(0, 1, (8, 64, 64, 3)).astype(np.float32)
        layer = None
    target = np.argmax(model.predict(x, verbose=0), axis=1)
    bs = dict(batch_size=args.batch_size, verbose=0)
    print(f"model {model.name}, input {x.shape}, batch_size {args.batch_size}")

    ig150 = tfattr.IntegratedGradients(model, steps=150, **bs)
    st150 = tfattr.SmoothTaylor(model, roots=150, sigma=0.1, **bs)
    ratio_line("SmoothTaylor R=150 / IG 150 steps", best_of(lambda: st150.attribute(x, target=target)),
               best_of(lambda: ig150.attribute(x, target=target)), 1.05)

    ig50 = tfattr.IntegratedGradients(model, steps=50, **bs)
    rsi50 = tfattr.RSIGradCAM(model, layer=layer, steps=50, **bs)
    ratio_line("RSI-Grad-CAM 50 steps / IG 50 steps", best_of(lambda: rsi50.attribute(x, target=target)),
               best_of(lambda: ig50.attribute(x, target=target)), 1.10)

    gradcam = tfattr.GradCAM(model, layer=layer, **bs)
    gradient = tfattr.Gradient(model, **bs)
    ratio_line("Grad-CAM / gradient", best_of(lambda: gradcam.attribute(x, target=target), 5),
               best_of(lambda: gradient.attribute(x, target=target), 5), "~1")

    if not args.vgg19 and not args.no_adaptive:
        start = time.perf_counter()
        result = tfattr.adaptive_noising(tfattr.SmoothTaylor(model, **bs), x, objective="autvc", roots=150,
                                         target=target, verbose=0)
        seconds = time.perf_counter() - start
        print(f"adaptive noising (AUTVC, R=150) on {len(x)} images: {seconds:.1f}s, "
              f"{int(result.evaluations.sum())} objective evaluations "
              f"({result.evaluations.min()}-{result.evaluations.max()} per image), "
              f"sigma* = {np.round(result.sigma, 3).tolist()}")


if __name__ == "__main__":
    main()
