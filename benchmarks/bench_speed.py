"""Default settings against the best hand-written loop, on real networks, in one run.

For each network, the *floor* is the hand-written IG loop a user would write: all path points
precomputed, one compiled forward+backward per chunk (one trace, batch-free signature), one
chunk after the other, at every chunk size 1, 2, 4, …, 64 (sizes up to the number of points);
its best size is the floor. tfattr's ``IntegratedGradients`` runs with its defaults
(``batch_size="auto"``, explicit targets as for the floor): it is called until its chunk size
is chosen (the tuning calls are counted and reported), then timed. Every configuration is timed
once per repeat, the repeats interleaved, and the best of the repeats kept, so a burst of load
from other processes hits every configuration alike. Printed: the ratio default IG / best floor
(goal ≤ 1.05), the floor's best size, the chosen size, and the 1-minute load average.

Also: Grad-CAM (defaults, top-1 target) on the small CNN (64×64, batch 16) against a
hand-written forward+backward to the layer with the top-1 class picked in the same graph
(goal ≤ 1.2); the first call on a fresh MobileNetV2 (224, a new model object: traces and
tuning included) against a later call (goal ≤ 2), beside the hand-written IG loop's own first
call on a new model (its trace and first run at chunk 4): the least a first call can cost.

    python benchmarks/bench_speed.py              # every network (about 10 min on 2 cores)
    python benchmarks/bench_speed.py --quick      # the small CNN, Grad-CAM and the first call only
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

import tfattr  # noqa: E402
from tfattr.core import autotune  # noqa: E402
from tfattr.data import EfficientNetLite0  # noqa: E402

from bench_engine import small_vgg  # noqa: E402  (the benchmarks folder is the script's path)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load() -> float:
    return os.getloadavg()[0]


def hand_written_ig(model, x, targets, steps):
    """``run(chunk)``: the floor loop at one chunk size."""
    alphas = np.arange(1, steps + 1, dtype=np.float32) / steps
    points = tf.constant((alphas[None, :, None, None, None] * x[:, None]).reshape((-1,) + x.shape[1:]))
    rows = tf.constant(np.repeat(targets, steps).astype(np.int32))

    @tf.function(input_signature=[tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int32)])
    def grad(p, t):
        with tf.GradientTape() as tape:
            tape.watch(p)
            s = tf.gather(model(p, training=False), t, axis=1, batch_dims=1)
        return tape.gradient(s, p)

    def run(chunk):
        for start in range(0, int(points.shape[0]), chunk):
            g = grad(points[start : start + chunk], rows[start : start + chunk])
        return g.numpy()

    return run


def chosen_sizes(model):
    return sorted({t.chosen for t in autotune._tuners.get(model, {}).values() if t.chosen is not None})


def tune(method, model, call, limit=40) -> int:
    """Call until every tuner of ``model`` has chosen, or a call measured nothing new (calls of at
    most 16 rows run whole until a larger call measures); returns the number of calls."""
    def state():
        return [(dict(t.rounds), set(t.warm), t.chosen) for t in autotune._tuners.get(model, {}).values()]

    for calls in range(1, limit + 1):
        before = state()
        call()
        tuners = autotune._tuners.get(model, {}).values()
        if tuners and all(t.chosen is not None for t in tuners):
            return calls
        if calls > 1 and state() == before:
            return calls
    return limit


def bench_ig(name, model, x, steps, repeats):
    targets = np.argmax(model(x, training=False).numpy(), axis=1)
    points = len(x) * steps
    floor = hand_written_ig(model, x, targets, steps)
    sizes = [s for s in (1, 2, 4, 8, 16, 32, 64) if s <= points]
    ig = tfattr.IntegratedGradients(model, steps=steps, verbose=0)
    call = lambda: ig.attribute(x, target=targets)  # noqa: E731
    before = load()
    for size in sizes:
        floor(size)  # trace once, and each size's first run
    tuning_calls = tune(ig, model, call)
    times = {("floor", s): [] for s in sizes}
    times["ig"] = []
    for _ in range(repeats):
        for size in sizes:
            times[("floor", size)].append(timed(lambda: floor(size)))
        times["ig"].append(timed(call))
    best = {k: min(v) for k, v in times.items()}
    floor_size = min(sizes, key=lambda s: best[("floor", s)])
    ratio = best["ig"] / best[("floor", floor_size)]
    row = dict(name=name, points=points, floor=best[("floor", floor_size)], floor_size=floor_size, ig=best["ig"],
               ratio=ratio, chosen=chosen_sizes(model) or [f"whole call, {points}"], tuning_calls=tuning_calls, load=(before + load()) / 2,
               floors={s: best[("floor", s)] for s in sizes})
    print(f"{name}: {points} points; floor by size " + ", ".join(f"{s}: {t:.3f}s" for s, t in row["floors"].items())
          + f"; default IG {best['ig']:.3f}s (chunk {row['chosen']}, chosen after {tuning_calls} calls) "
          f"-> ratio {ratio:.3f}; load {row['load']:.1f}", flush=True)
    return row


def bench_gradcam(repeats):
    model = small_vgg()
    x = np.random.default_rng(1).uniform(0, 1, (16, 64, 64, 3)).astype(np.float32)
    layer = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    cam = tfattr.GradCAM(model, layer=layer.name, verbose=0)
    both = keras.Model(model.inputs, [layer.output, model.output])

    @tf.function(input_signature=[tf.TensorSpec([None, 64, 64, 3], tf.float32)], autograph=False)
    def hand(images):
        with tf.GradientTape() as tape:
            activations, outputs = both(images, training=False)
            top = tf.argmax(outputs, axis=1, output_type=tf.int32)
            scores = tf.gather(outputs, top, axis=1, batch_dims=1)
        return activations, tape.gradient(scores, activations), top

    def floor():
        activations, gradients, top = hand(tf.constant(x))
        return activations.numpy(), gradients.numpy(), top.numpy()

    targets = floor()[2]
    floor()
    tuning = tune(cam, model, lambda: cam.attribute(x))
    times = {"floor": [], "top1": [], "given": []}
    for _ in range(repeats):
        times["floor"].append(timed(floor))
        times["top1"].append(timed(lambda: cam.attribute(x)))
        times["given"].append(timed(lambda: cam.attribute(x, target=targets)))
    best = {k: min(v) for k, v in times.items()}
    print(f"Grad-CAM small CNN 64x64 batch 16: hand-written {best['floor'] * 1e3:.1f} ms, GradCAM top-1 "
          f"{best['top1'] * 1e3:.1f} ms ({best['top1'] / best['floor']:.3f}x), given targets "
          f"{best['given'] * 1e3:.1f} ms ({best['given'] / best['floor']:.3f}x); chunk {chosen_sizes(model)} "
          f"after {tuning} calls; load {load():.1f}", flush=True)
    return best


def bench_first_call(repeats):
    x = np.random.default_rng(2).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    results = {}
    cases = (("IG 24 steps, top-1", lambda m: tfattr.IntegratedGradients(m, steps=24, verbose=0), None),
             ("IG 24 steps, given classes", lambda m: tfattr.IntegratedGradients(m, steps=24, verbose=0),
              np.array([3, 7])),
             ("Gradient, top-1", lambda m: tfattr.Gradient(m, verbose=0), None),
             ("Grad-CAM, top-1", lambda m: tfattr.GradCAM(m, verbose=0), None))
    # the hand-written IG's first call on a new model (its trace and first run, at its best chunk size
    # of the speed table, 4): the least any first call costs
    model = keras.applications.MobileNetV2(weights=None)
    targets = np.array([3, 7])
    hand = timed(lambda: hand_written_ig(model, x, targets, 24)(4))
    run = hand_written_ig(model, x, targets, 24)
    run(4)
    hand_later = min(timed(lambda: run(4)) for _ in range(repeats))
    results["hand-written IG 24 steps (chunk 4)"] = (hand, hand_later)
    print(f"first call, MobileNetV2 224 batch 2, hand-written IG 24 steps at chunk 4: {hand:.2f}s, later "
          f"{hand_later:.2f}s -> {hand / hand_later:.2f}x; load {load():.1f}", flush=True)
    for label, make, target in cases:
        model = keras.applications.MobileNetV2(weights=None)  # a new model: nothing traced or tuned
        method = make(model)
        first = timed(lambda: method.attribute(x, target=target))
        tuning = tune(method, model, lambda: method.attribute(x, target=target)) + 1
        later = min(timed(lambda: method.attribute(x, target=target)) for _ in range(repeats))
        results[label] = (first, later)
        print(f"first call, MobileNetV2 224 batch 2, {label}: {first:.2f}s, later {later:.2f}s -> {first / later:.2f}x "
              f"(chunk {chosen_sizes(model)} after {tuning} calls); load {load():.1f}", flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small CNN, Grad-CAM and the first call only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, metavar="WORD",
                        help="run the networks whose name holds one of these words, plus 'gradcam' and 'first'")
    args = parser.parse_args()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices: "
          f"{[d.device_type for d in tf.config.list_physical_devices()]}, cores: {os.cpu_count()}, load {load():.1f}")
    rng = np.random.default_rng(0)
    def wanted(name):
        return args.only is None or any(word.lower() in name.lower() for word in args.only)

    rows = []
    if wanted("small VGG-style CNN"):
        rows.append(bench_ig("small VGG-style CNN 64x64, batch 16, 16 steps", small_vgg(),
                             rng.uniform(0, 1, (16, 64, 64, 3)).astype(np.float32), 16, args.repeats))
    if not args.quick:
        networks = [
            ("MobileNetV2 224, batch 2, 24 steps", lambda: keras.applications.MobileNetV2(weights=None), 2, 24, 1.0),
            ("EfficientNet-Lite0 224 (ImageNet), batch 2, 16 steps", lambda: EfficientNetLite0(), 2, 16, 255.0),
            ("ResNet50 224, batch 1, 20 steps", lambda: keras.applications.ResNet50(weights=None), 1, 20, 255.0),
            ("VGG19 224, batch 1, 20 steps", lambda: keras.applications.VGG19(weights=None), 1, 20, 255.0),
        ]
        for name, build, batch, steps, top in networks:
            x = rng.uniform(0, top, (batch, 224, 224, 3)).astype(np.float32)
            if not wanted(name):
                continue
            rows.append(bench_ig(name, build(), x, steps, args.repeats))
    gradcam = bench_gradcam(args.repeats + 2) if wanted("gradcam") else None
    first = bench_first_call(args.repeats) if wanted("first") else {}
    print("\n| network | points | best floor (chunk) | default IG (chosen chunk) | IG / floor | load |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['points']} | {r['floor']:.3f} s ({r['floor_size']}) | {r['ig']:.3f} s "
              f"({', '.join(map(str, r['chosen']))}) | **{r['ratio']:.2f}** | {r['load']:.1f} |")
    if gradcam is not None:
        print(f"| Grad-CAM, small CNN batch 16, top-1 / given class vs hand-written fwd+bwd to the layer | 16 | "
              f"{gradcam['floor'] * 1e3:.1f} ms | {gradcam['top1'] * 1e3:.1f} / {gradcam['given'] * 1e3:.1f} ms | "
              f"**{gradcam['top1'] / gradcam['floor']:.2f} / {gradcam['given'] / gradcam['floor']:.2f}** | |")
    for label, (f, later) in first.items():
        print(f"| first call / later call, MobileNetV2 224 batch 2, {label} | | {later:.2f} s | {f:.2f} s | "
              f"**{f / later:.2f}** | |")


if __name__ == "__main__":
    main()
