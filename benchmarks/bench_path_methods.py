"""Adaptive-path IG (PAIR's GuidedIG) and XRAI: tfattr against a hand-written batched loop of the
same gradients, and PAIR saliency's own implementation, on the same model and images.

Prints, in one process (best of ``--repeats`` after a warm-up, tfattr and its hand-written loop
interleaved):

* AdaptivePathIntegratedGradients / a hand-written loop: one compiled gradient pass per step for
  all images, the same host path update (:func:`tfattr.methods.adaptive_path.adaptive_path_step`)
  — goal ≤ 1.05;
* PAIR's ``GuidedIG.GetMask`` image by image (one gradient per call, as PAIR's API runs);
* XRAI / a hand-written loop: PAIR's IG points (black and white baselines) in compiled chunks of
  ``--batch-size``, the same segmentation and ranking — goal ≤ 1.05;
* PAIR's ``XRAI.GetMaskWithDetails`` image by image (its ``batch_size`` = ``--batch-size``).

    python benchmarks/bench_path_methods.py [--images 4] [--size 64] [--steps 100] [--xrai-steps 50]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_engine import small_vgg  # noqa: E402

import tfattr  # noqa: E402
from tfattr.methods.adaptive_path import adaptive_path_step  # noqa: E402
from tfattr.methods.xrai import felzenszwalb_masks, xrai_regions  # noqa: E402


def best_of(fn, repeats):
    fn()  # trace + warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def interleaved(first, second, repeats):
    """Best times of two functions run alternately (a loaded machine drifts less between them)."""
    first(), second()  # trace + warm-up
    times = ([], [])
    for _ in range(repeats):
        for fn, kept in zip((first, second), times):
            start = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def compiled_gradients(model):
    @tf.function(reduce_retracing=True)
    def grad(points, targets):
        with tf.GradientTape() as tape:
            tape.watch(points)
            scores = tf.gather(model(points, training=False), targets, axis=1, batch_dims=1)
        return tape.gradient(scores, points)

    return grad


def hand_apig(grad, x, targets, steps, fraction=0.25, max_dist=0.02):
    """GuidedIG with one compiled gradient pass per step for all images (zero baseline)."""
    n = len(x)
    flat = x.reshape(n, -1).astype(np.float64)
    base = np.zeros_like(flat)
    l1 = np.abs(flat - base).sum(axis=1)
    point, attr = base.copy(), np.zeros_like(flat)
    t = tf.constant(targets, tf.int32)
    for step in range(steps):
        g = grad(tf.constant(point.reshape(x.shape), tf.float32), t).numpy().reshape(n, -1).astype(np.float64)
        for e in range(n):
            point[e], c = adaptive_path_step(point[e], flat[e], base[e], g[e], step, steps, fraction, max_dist, l1[e])
            attr[e] += c
    return attr.reshape(x.shape)


def hand_xrai(grad, x, targets, steps, chunk):
    """PAIR's IG (black and white baselines, linspace nodes) in compiled chunks, then the same
    segmentation and ranking."""
    n = len(x)
    alphas = np.linspace(0, 1, steps)
    lows = x.reshape(n, -1).min(axis=1).reshape(-1, 1, 1, 1)
    highs = x.reshape(n, -1).max(axis=1).reshape(-1, 1, 1, 1)
    rows = []  # (example, baseline value, alpha)
    for e in range(n):
        for b in (lows[e], highs[e]):
            rows.extend((e, float(b.ravel()[0]), a) for a in alphas)
    sums = np.zeros(x.shape, np.float64)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        ex = np.array([r[0] for r in part])
        z = np.array([r[1] for r in part], np.float32).reshape(-1, 1, 1, 1)
        a = np.array([r[2] for r in part], np.float32).reshape(-1, 1, 1, 1)
        points = z + a * (x[ex] - z)
        g = grad(tf.constant(points), tf.constant(np.asarray(targets)[ex], tf.int32)).numpy()
        np.add.at(sums, ex, g * (x[ex] - z) / steps / 2)
    out = []
    for e in range(n):
        masks = felzenszwalb_masks(x[e].astype(np.float64))
        out.append(xrai_regions(sums[e].max(axis=-1), masks)[0])
    return np.stack(out)


def pair_call_model_function(model, target):
    import saliency.core as saliency

    grad = compiled_gradients(model)

    def call_model_function(batch, call_model_args=None, expected_keys=None):
        batch = np.asarray(batch, np.float32)
        g = grad(tf.constant(batch), tf.constant(np.full(len(batch), target), tf.int32))
        return {saliency.INPUT_OUTPUT_GRADIENTS: g.numpy()}

    return call_model_function


def numpy2_quantile():
    """PAIR saliency 0.2.1 calls np.quantile(..., interpolation=), which NumPy 2 removed."""
    quantile = np.quantile

    def shimmed(a, q, *args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return quantile(a, q, *args, **kwargs)

    np.quantile = shimmed


def line(name, seconds, reference=None, goal=None):
    if reference is None:
        print(f"{name:<52} {seconds:8.2f}s")
    else:
        print(f"{name:<52} {seconds:8.2f}s / {reference:8.2f}s = {seconds / reference:6.3f}   (goal <= {goal})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="GuidedIG steps")
    parser.add_argument("--xrai-steps", type=int, default=50, help="XRAI's IG steps per baseline")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-pair", action="store_true", help="skip PAIR saliency's runs")
    args = parser.parse_args()
    model = small_vgg(args.size)
    x = np.random.default_rng(0).uniform(0, 1, (args.images, args.size, args.size, 3)).astype(np.float32)
    targets = np.argmax(model.predict(x, verbose=0), axis=1)
    grad = compiled_gradients(model)
    print(f"model {model.name}, input {x.shape}, GuidedIG steps {args.steps}, XRAI IG steps {args.xrai_steps} x 2 "
          f"baselines, batch_size {args.batch_size}")

    apig = tfattr.AdaptivePathIntegratedGradients(model, steps=args.steps, batch_size=args.batch_size, verbose=0)
    ours, hand = interleaved(lambda: apig.attribute(x, target=targets),
                             lambda: hand_apig(grad, x, targets, args.steps), args.repeats)
    line("AdaptivePathIntegratedGradients / hand-written loop", ours, hand, 1.05)
    xrai = tfattr.XRAI(model, steps=args.xrai_steps, batch_size=args.batch_size, verbose=0)
    ours_x, hand_x = interleaved(lambda: xrai.attribute(x, target=targets),
                                 lambda: hand_xrai(grad, x, targets, args.xrai_steps, args.batch_size), args.repeats)
    line("XRAI / hand-written loop", ours_x, hand_x, 1.05)
    if args.no_pair:
        return
    import saliency.core as saliency

    numpy2_quantile()
    functions = [pair_call_model_function(model, int(t)) for t in targets]

    def pair_guided():
        for e in range(len(x)):
            saliency.GuidedIG().GetMask(x[e].astype(np.float64), functions[e], x_steps=args.steps)

    def pair_xrai():
        for e in range(len(x)):
            saliency.XRAI().GetMask(x[e].astype(np.float64), functions[e], batch_size=args.batch_size,
                                    extra_parameters=saliency.XRAIParameters(steps=args.xrai_steps))

    pair_g = best_of(pair_guided, 1)
    line("PAIR GuidedIG (image by image)", pair_g)
    line("  tfattr AdaptivePathIntegratedGradients / PAIR", ours, pair_g, "-")
    pair_x = best_of(pair_xrai, 1)
    line("PAIR XRAI (image by image)", pair_x)
    line("  tfattr XRAI / PAIR", ours_x, pair_x, "-")


if __name__ == "__main__":
    main()
