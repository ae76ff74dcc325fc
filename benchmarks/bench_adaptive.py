"""Gradients and seconds to reach a completeness error on the demo classifier.

For each target error (1% and 0.1%, the worst image of the batch): the smallest fixed step
count (searched over powers of two, then bisected) for the right Riemann rule, the trapezoid
rule and Gauss–Legendre, and IG with ``tolerance=`` (nested trapezoid levels per image).

RSI-Grad-CAM (at ``block3_conv2``), eq. 6 and the notebook's trapezoid rule: the smallest fixed
step count ``m`` (a power of two, the grids ``tolerance=`` uses) whose layer completeness error
is below 5% and 1% on every image, against ``tolerance=`` (each image stops at its own ``m``).

IG_noise (uniform baselines, 16 steps each): draws with ``baseline_tolerance=`` (blocks of 4)
until the relative Monte-Carlo standard error is ≤ 20% per image, against the fixed
``n_baselines`` a user would need to cover the slowest image.

    python benchmarks/bench_adaptive.py [--images 16] [--only ig|rsi|noise]
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
from tfattr.data import digits_on_photos  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worst_error(model, x, labels, rule, steps):
    start = time.perf_counter()
    expl = tfattr.IntegratedGradients(model, steps=steps, rule=rule, batch_size=64, verbose=0).attribute(x, target=labels)
    return float(np.max(expl.relative_delta)), time.perf_counter() - start, expl.gradients


def smallest_steps(model, x, labels, rule, target, cap=4096):
    low, high = 1 if rule != "riemann_trapezoid" else 2, None
    steps = max(low, 2)
    while steps <= cap:
        if worst_error(model, x, labels, rule, steps)[0] <= target:
            high = steps
            break
        low, steps = steps, steps * 2
    if high is None:
        return None
    while high - low > max(1, high // 32):  # bisect to ~3%
        middle = (low + high) // 2
        if worst_error(model, x, labels, rule, middle)[0] <= target:
            high = middle
        else:
            low = middle
    return high


def bench_rsi(model, x, labels, layer="block3_conv2"):
    print(f"RSI-Grad-CAM at {layer}, demo classifier (logits), {len(x)} images, zero baseline; error = "
          "|Σ terms − (y(I) − y(I₀))| / |y(I) − y(I₀)| (worst image); eq. 6 (right sum) and the authors' "
          "notebook (trapezoid)")
    print(f"{'target':>7} {'method':<34} {'m/image':>12} {'gradients':>10} {'seconds':>8} {'vs fixed':>9}")
    for rule in ("riemann_right", "trapezoid"):  # eq. 6; the notebook (its unit selection leaves the error alone)
        notebook = rule == "trapezoid"
        for target in (0.05, 0.01):
            m, fixed = 1, None
            while m <= 1024:
                start = time.perf_counter()
                expl = tfattr.RSIGradCAM(model, layer=layer, steps=m, rule=rule, positive_units=notebook,
                                         batch_size=64, verbose=0).attribute(x, target=labels)
                seconds = time.perf_counter() - start
                if np.max(expl.relative_delta) <= target:
                    fixed = (m, expl.gradients, seconds)
                    break
                m *= 2
            if fixed is None:
                print(f"{target:>7} {rule + ', fixed steps':<34} {'> 1024':>12}")
                continue
            print(f"{target:>7} {rule + ', fixed steps':<34} {fixed[0]:>12} {fixed[1]:>10} {fixed[2]:>8.2f}")
            start = time.perf_counter()
            expl = tfattr.RSIGradCAM(model, layer=layer, tolerance=target, rule=rule, positive_units=notebook,
                                     max_steps=1025, batch_size=64, verbose=0).attribute(x, target=labels)
            seconds = time.perf_counter() - start
            steps = expl.info["steps"]
            print(f"{target:>7} {rule + ', tolerance':<34} {f'{steps.min()}-{steps.max()}':>12} {expl.gradients:>10} "
                  f"{seconds:>8.2f} {fixed[1] / expl.gradients:>8.1f}x   worst error {np.max(expl.relative_delta):.2g}")


def bench_noise(model, x, labels, tolerance=0.2, block=4, steps=16):
    print(f"IG_noise, uniform baselines, {steps} steps each, {len(x)} images; relative Monte-Carlo standard "
          f"error ≤ {tolerance:.0%} per image")
    start = time.perf_counter()
    expl = tfattr.IntegratedGradients(model, baseline="uniform", n_baselines=block, baseline_tolerance=tolerance,
                                      max_baselines=512, steps=steps, batch_size=64, verbose=0).attribute(x, target=labels)
    seconds = time.perf_counter() - start
    draws = expl.info["n_baselines"]
    fixed = int(draws.max()) * steps * len(x)
    print(f"  baseline_tolerance: draws per image {draws.min()}-{draws.max()} (median {int(np.median(draws))}), "
          f"{expl.gradients} gradients, {seconds:.2f}s, worst error {expl.info['relative_standard_error'].max():.3f}")
    print(f"  fixed n_baselines={int(draws.max())} for every image: {fixed} gradients -> "
          f"{fixed / expl.gradients:.1f}x more")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--only", choices=("ig", "rsi", "noise"), default=None, help="run one part")
    args = parser.parse_args()
    classifier = keras.models.load_model(os.path.join(ROOT, "examples", "assets", "digits_on_photos_cnn.keras"))
    model = tfattr.surgery.logits_model(classifier)
    data = digits_on_photos(args.images, split="test", seed=3)
    x, labels = data["image"], data["label"]
    if args.only in (None, "rsi"):
        bench_rsi(model, x, labels)
    if args.only in (None, "noise"):
        bench_noise(model, x, labels)
    if args.only not in (None, "ig"):
        return
    print(f"demo classifier (logits), {len(x)} test images, zero baseline; error = max over images of "
          "|Σ IG − (f(x) − f(0))| / |f(x) − f(0)|")
    print(f"{'target':>7} {'method':<22} {'steps/image':>12} {'gradients':>10} {'seconds':>8} {'vs right':>9}")
    for target in (0.01, 0.001):
        results = {}
        for rule in ("riemann_right", "riemann_trapezoid", "gauss_legendre"):
            steps = smallest_steps(model, x, labels, rule, target)
            if steps is None:
                results[rule] = None
                print(f"{target:>7} {rule:<22} {'> 4096':>12}")
                continue
            error, seconds, gradients = worst_error(model, x, labels, rule, steps)
            results[rule] = gradients
            print(f"{target:>7} {rule:<22} {steps:>12} {gradients:>10} {seconds:>8.2f} "
                  f"{results['riemann_right'] / gradients if results.get('riemann_right') else float('nan'):>8.1f}x")
        start = time.perf_counter()
        expl = tfattr.IntegratedGradients(model, tolerance=target, max_steps=4097, batch_size=64, verbose=0).attribute(
            x, target=labels)
        seconds = time.perf_counter() - start
        steps = expl.info["steps"]
        ratio = results["riemann_right"] / expl.gradients if results.get("riemann_right") else float("nan")
        print(f"{target:>7} {'adaptive (tolerance)':<22} {f'{steps.min()}-{steps.max()}':>12} {expl.gradients:>10} "
              f"{seconds:>8.2f} {ratio:>8.1f}x   worst error {np.max(expl.relative_delta):.2g}")


if __name__ == "__main__":
    main()
