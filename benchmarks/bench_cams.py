"""The CAM family, Gradient SHAP and Blur IG against hand-written passes, and PAIR saliency's Blur IG.

Each tfattr method is timed interleaved with its hand-written *floor* (floor, method, floor,
method, …; best of ``--repeats`` after a warm-up of each), wall time and CPU time of this process
(the machine is shared: the CPU-time ratio is the steadier measure of overhead). The machine's
load average is printed beside each model.

* ``GradCAM`` (reference), ``GradCAMPlusPlus``, ``LayerCAM``, ``XGradCAM``, ``HiResCAM``,
  ``EigenCAM`` / a hand-written pass: one ``tf.function`` forward to the layer (the model with
  the layer's output tapped) and backward of the score to the layer's activations (forward only
  for Eigen-CAM), then the method's formula in TensorFlow, ReLU and bilinear upsampling to the
  image — goal ≤ 1.2;
* ``ScoreCAM`` / a hand-written batched loop over the same masked inputs ``x ⊙ M_k``
  (precomputed, one compiled forward per chunk, best chunk); ``AblationCAM`` / one compiled
  forward to the layer, then per chunk the activations with one channel zeroed fed to the layers
  after it (``keras.Model(layer.output, model.output)``) — goal ≤ 1.2;
* ``GradientShap`` and ``BlurIntegratedGradients`` / a hand-written batched loop of the same
  gradients (the same points, precomputed: the seeded draws of :meth:`GradientShap.draws`, PAIR's
  blur levels with scipy's ``gaussian_filter``), one compiled gradient pass per chunk and the
  weighted sum — goal ≤ 1.05; PAIR saliency's ``BlurIG.GetMask`` (image by image, its
  ``batch_size`` = the chunk) on the same model and images.

Models: the small VGG-style CNN of ``bench_engine.py`` at 64×64 (16 images for the gradient CAMs;
2 for Score/Ablation-CAM, whose rows are images × channels; 4 for the path methods) and
EfficientNet-Lite0 at 224×224 with its ImageNet weights (4 images; 1 image and ``top_k=64``
channels for Score-CAM). The layer is the default (the last layer with a 4-D output).

    nice python benchmarks/bench_cams.py             # everything (about 1.5 minutes on a loaded 2-core machine)
    nice python benchmarks/bench_cams.py --quick     # fewer repeats and steps
    nice python benchmarks/bench_cams.py --only small paths
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_engine import small_vgg  # noqa: E402

import tfattr  # noqa: E402
from tfattr.core.layers import last_layer_with_rank  # noqa: E402

EPS = 1e-7


def _timed_both(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(floor, method, repeats):
    """Best (wall, CPU) seconds of ``floor`` and ``method`` run alternately after a warm-up of each."""
    floor(), method()  # trace + warm-up
    times = ([], [])
    for _ in range(repeats):
        for fn, kept in zip((floor, method), times):
            kept.append(_timed_both(fn))
    return [(min(t[0] for t in kept), min(t[1] for t in kept)) for kept in times]


def load():
    return "load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


RESULTS = []


def line(name, floor, method, goal):
    wall, cpu = method[0] / floor[0], method[1] / floor[1]
    RESULTS.append((name, floor, method, wall, cpu, goal))
    flag = "" if cpu <= goal else ("  (misses the goal: CPU > 1.3)" if cpu > 1.3 else "  (above the goal)")
    print(f"{name:<44} floor {floor[0]:7.3f}s  method {method[0]:7.3f}s  wall {wall:5.2f}  cpu {cpu:5.2f}"
          f"   (goal <= {goal}){flag}", flush=True)


# -- hand-written gradient CAMs ------------------------------------------------------------------------

def _resize_relu(cam, size):
    return tf.image.resize(tf.nn.relu(cam)[..., None], size, method="bilinear")[..., 0]


def _gradcam(g, a):
    return tf.einsum("nk,nhwk->nhw", tf.reduce_mean(g, axis=[1, 2]), a)


def _gradcam_pp(g, a):  # pytorch-grad-cam's convention (tfattr's default)
    g2, g3 = g * g, g * g * g
    alpha = g2 / (2 * g2 + tf.reduce_sum(a, axis=[1, 2], keepdims=True) * g3 + 1e-6)
    alpha = tf.where(g != 0, alpha, tf.zeros_like(alpha))
    weights = tf.reduce_sum(tf.nn.relu(g) * alpha, axis=[1, 2])
    return tf.einsum("nk,nhwk->nhw", weights, a)


def _layercam(g, a):
    return tf.reduce_sum(tf.nn.relu(g) * a, axis=-1)


def _xgradcam(g, a):
    weights = tf.reduce_sum(g * a, axis=[1, 2]) / (tf.reduce_sum(a, axis=[1, 2]) + EPS)
    return tf.einsum("nk,nhwk->nhw", weights, a)


def _hirescam(g, a):
    return tf.reduce_sum(g * a, axis=-1)


def _eigencam(a):
    n, h, w, k = a.shape
    flat = tf.reshape(a, [-1, h * w, k])
    flat = flat - tf.reduce_mean(flat, axis=1, keepdims=True)
    _, _, v = tf.linalg.svd(flat)
    return tf.reshape(tf.linalg.matvec(flat, v[:, :, 0]), [-1, h, w])


FORMULAS = {"GradCAM": _gradcam, "GradCAMPlusPlus": _gradcam_pp, "LayerCAM": _layercam, "XGradCAM": _xgradcam,
            "HiResCAM": _hirescam}


def hand_cam(model, layer, formula, size):
    tapped = keras.Model(model.inputs, [layer.output, model.output])

    @tf.function(reduce_retracing=True)
    def run(x, targets):
        with tf.GradientTape() as tape:
            a, out = tapped(x, training=False)
            score = tf.gather(out, targets, axis=1, batch_dims=1)
        g = tape.gradient(score, a)
        return _resize_relu(formula(g, a), size)

    @tf.function(reduce_retracing=True)
    def run_eigen(x, targets):
        a, _ = tapped(x, training=False)
        return _resize_relu(_eigencam(a), size)

    return run_eigen if formula is None else run


def bench_gradient_cams(label, model, x, repeats):
    targets = np.argmax(model.predict(x, verbose=0), axis=1).astype(np.int32)
    layer = last_layer_with_rank(model, 4)
    size = tuple(x.shape[1:3])
    print(f"\n{label}: {len(x)} images {x.shape[1:]}, layer {layer.name} {tuple(layer.output.shape[1:])}; "
          f"best of {repeats} interleaved; {load()}", flush=True)
    xt, tt = tf.constant(x), tf.constant(targets)
    for name in ("GradCAM", "GradCAMPlusPlus", "LayerCAM", "XGradCAM", "HiResCAM", "EigenCAM"):
        method = getattr(tfattr, name)(model, layer=layer.name, batch_size=len(x), verbose=0)
        hand = hand_cam(model, layer, FORMULAS.get(name), size)
        floor, ours = interleaved(lambda h=hand: h(xt, tt).numpy(),
                                  lambda m=method: m.attribute(x, target=targets), repeats)
        line(f"{name} / hand-written pass", floor, ours, 1.2)


# -- Score-CAM and Ablation-CAM ------------------------------------------------------------------------

def forward_floor(fn, inputs, targets, chunk):
    """One compiled ``fn`` per chunk over precomputed ``inputs``; the target scores gathered."""
    compiled = tf.function(lambda p: fn(p, training=False), reduce_retracing=True)
    chunks = [(tf.constant(inputs[s: s + chunk]), targets[s: s + chunk]) for s in range(0, len(inputs), chunk)]

    def run():
        return np.concatenate([compiled(p).numpy()[np.arange(len(t)), t] for p, t in chunks])

    return run


def score_cam_inputs(model, layer, x, top_k):
    """Score-CAM's masked inputs, as tfattr builds them (half-pixel bilinear resize, min–max)."""
    a = keras.Model(model.inputs, layer.output).predict(x, verbose=0)  # (N, h, w, K)
    if top_k is not None:
        chosen = np.sort(np.argsort(-a.std(axis=(1, 2)), axis=1, kind="stable")[:, :top_k], axis=1)
        a = np.take_along_axis(a, chosen[:, None, None, :], axis=-1)
    maps = np.transpose(a, (0, 3, 1, 2)).reshape(-1, *a.shape[1:3], 1)
    masks = tf.image.resize(maps, x.shape[1:3], method="bilinear").numpy()
    low = masks.min(axis=(1, 2, 3), keepdims=True)
    span = masks.max(axis=(1, 2, 3), keepdims=True) - low
    masks = np.where(span > 0, (masks - low) / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
    return np.repeat(x, a.shape[-1], axis=0) * masks


def ablation_floor(model, layer, x, targets, chunk):
    """Ablation-CAM by hand: one compiled forward to the layer for ``A``, then per chunk of
    (example, channel) rows ``A`` with the channel set to 0, fed to ``keras.Model(layer.output,
    model.output)``, the target scores gathered."""
    tap = tf.function(keras.Model(model.inputs, layer.output), reduce_retracing=True)
    head = keras.Model(layer.output, model.output)
    k = int(layer.output.shape[-1])
    examples, channels = np.repeat(np.arange(len(x)), k), np.tile(np.arange(k), len(x))

    @tf.function(reduce_retracing=True)
    def rows(a, e, c, t):
        ablated = tf.gather(a, e) * (1.0 - tf.one_hot(c, k, dtype=a.dtype))[:, None, None, :]
        return tf.gather(head(ablated, training=False), t, axis=1, batch_dims=1)

    xt = tf.constant(x)
    chunks = [(tf.constant(examples[s: s + chunk]), tf.constant(channels[s: s + chunk]),
               tf.constant(targets[examples[s: s + chunk]])) for s in range(0, len(examples), chunk)]

    def run():
        a = tap(xt)
        return np.concatenate([rows(a, e, c, t).numpy() for e, c, t in chunks])

    return run, len(examples)


def bench_forward_cams(label, model, x, repeats, chunks, top_k=None):
    targets = np.argmax(model.predict(x, verbose=0), axis=1).astype(np.int32)
    layer = last_layer_with_rank(model, 4)
    print(f"\n{label}: {len(x)} images {x.shape[1:]}, layer {layer.name} {tuple(layer.output.shape[1:])}, "
          f"chunks tried {chunks}; best of {repeats} interleaved; {load()}", flush=True)
    score_inputs = score_cam_inputs(model, layer, x, top_k)
    cases = [("ScoreCAM", lambda c: (forward_floor(model, score_inputs, np.repeat(targets, len(score_inputs) // len(x)),
                                                   c), len(score_inputs)),
              lambda b: tfattr.ScoreCAM(model, layer=layer.name, top_k=top_k, batch_size=b, verbose=0)),
             ("AblationCAM", lambda c: ablation_floor(model, layer, x, targets, c),
              lambda b: tfattr.AblationCAM(model, layer=layer.name, batch_size=b, verbose=0))]
    for name, make_floor, make in cases:
        runners = {c: make_floor(c) for c in chunks}
        count = runners[chunks[0]][1]
        runners = {c: r[0] for c, r in runners.items()}
        for run in runners.values():
            run()  # trace
        first = {c: _timed_both(run)[0] for c, run in runners.items()}
        chunk = min(first, key=first.get)
        method = make(chunk)
        rows = method.attribute(x, target=targets).info["forward_rows"]
        if rows != count:
            print(f"  note: {name} scores {rows} rows, the floor {count}")
        floor, ours = interleaved(runners[chunk], lambda m=method: m.attribute(x, target=targets), repeats)
        line(f"{name} / hand-written loop ({count} rows, chunk {chunk})", floor, ours, 1.2)


# -- Gradient SHAP and Blur IG --------------------------------------------------------------------------

def compiled_gradients(model):
    @tf.function(reduce_retracing=True)
    def grad(points, targets):
        with tf.GradientTape() as tape:
            tape.watch(points)
            scores = tf.gather(model(points, training=False), targets, axis=1, batch_dims=1)
        return tape.gradient(scores, points)

    return grad


def gradient_loop(grad, points, weights, examples, targets, num, chunk):
    """``Σ_rows weights ⊙ ∇f(points)`` per example, one compiled gradient pass per chunk."""
    chunks = [(tf.constant(points[s: s + chunk]), tf.constant(targets[examples[s: s + chunk]]),
               weights[s: s + chunk], examples[s: s + chunk]) for s in range(0, len(points), chunk)]

    def run():
        out = np.zeros((num,) + points.shape[1:], np.float32)
        for p, t, w, e in chunks:
            terms = w * grad(p, t).numpy()
            for example in np.unique(e):
                out[example] += terms[e == example].sum(axis=0)
        return out

    return run


def blur_rows(x, steps, max_sigma=50.0, grad_step=0.01):
    """PAIR's BlurIG levels: points ``G_σi ∗ x`` and weights ``−(σ_{i+1} − σ_i)(G_{σi+h} ∗ x − G_σi ∗ x)/h``."""
    from scipy.ndimage import gaussian_filter

    sigmas = [float(i) * max_sigma / steps for i in range(steps + 1)]
    points, weights, examples = [], [], []
    for e in range(len(x)):
        for i in range(steps):
            blurred = gaussian_filter(x[e], [sigmas[i], sigmas[i], 0], mode="constant")
            ahead = gaussian_filter(x[e], [sigmas[i] + grad_step, sigmas[i] + grad_step, 0], mode="constant")
            points.append(blurred)
            weights.append(-(sigmas[i + 1] - sigmas[i]) * (ahead - blurred) / grad_step)
            examples.append(e)
    return np.stack(points).astype(np.float32), np.stack(weights).astype(np.float32), np.array(examples)


def bench_paths(model, x, background, repeats, n_samples, steps, chunk, pair):
    targets = np.argmax(model.predict(x, verbose=0), axis=1).astype(np.int32)
    grad = compiled_gradients(model)
    print(f"\nsmall VGG-style CNN: {len(x)} images {x.shape[1:]}, GradientShap n_samples {n_samples}, "
          f"Blur IG steps {steps}, chunk {chunk}; best of {repeats} interleaved; {load()}", flush=True)
    shap = tfattr.GradientShap(model, baselines=background, n_samples=n_samples, seed=0, batch_size=chunk, verbose=0)
    drawn = tfattr.GradientShap.draws(x.shape[1:], len(background), n_samples, 0.0, 0)
    picks, alphas = drawn["index"], drawn["alpha"].astype(np.float32)
    base = background[picks]  # (S, …)
    points = (base[None] + alphas.reshape(1, -1, 1, 1, 1) * (x[:, None] - base[None])).reshape(-1, *x.shape[1:])
    weights = ((x[:, None] - base[None]) / n_samples).reshape(-1, *x.shape[1:])
    examples = np.repeat(np.arange(len(x)), n_samples)
    floor, ours = interleaved(gradient_loop(grad, points, weights, examples, targets, len(x), chunk),
                              lambda: shap.attribute(x, target=targets), repeats)
    line(f"GradientShap / hand-written loop ({len(points)} gradients)", floor, ours, 1.05)

    blur = tfattr.BlurIntegratedGradients(model, steps=steps, batch_size=chunk, verbose=0)
    points, weights, examples = blur_rows(x, steps)
    floor, ours = interleaved(gradient_loop(grad, points, weights, examples, targets, len(x), chunk),
                              lambda: blur.attribute(x, target=targets), repeats)
    line(f"BlurIntegratedGradients / hand-written loop ({len(points)} gradients)", floor, ours, 1.05)
    if not pair:
        return
    import saliency.core as saliency

    def call_model_function(batch, call_model_args=None, expected_keys=None):
        batch = np.asarray(batch, np.float32)
        g = grad(tf.constant(batch), tf.constant(np.full(len(batch), call_model_args), tf.int32))
        return {saliency.INPUT_OUTPUT_GRADIENTS: g.numpy()}

    def pair_blur():
        for e in range(len(x)):
            saliency.BlurIG().GetMask(x[e], call_model_function, call_model_args=int(targets[e]), steps=steps,
                                      batch_size=chunk)

    pair_blur()  # warm-up
    pair_time = min(_timed_both(pair_blur) for _ in range(max(1, repeats // 2)))
    print(f"{'PAIR BlurIG (image by image, batch_size ' + str(chunk) + ')':<44} {pair_time[0]:7.3f}s wall "
          f"{pair_time[1]:7.3f}s cpu; tfattr / PAIR: wall {ours[0] / pair_time[0]:5.2f}  cpu "
          f"{ours[1] / pair_time[1]:5.2f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--only", nargs="*", choices=["small", "lite0", "paths"], default=["small", "lite0", "paths"])
    parser.add_argument("--no-pair", action="store_true", help="skip PAIR saliency's Blur IG")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    rng = np.random.default_rng(0)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, cpus {os.cpu_count()}, {load()}")
    if "small" in args.only:
        model = small_vgg(64)
        x = rng.uniform(0, 1, (16, 64, 64, 3)).astype(np.float32)
        bench_gradient_cams("small VGG-style CNN 64×64", model, x, repeats)
        bench_forward_cams("small VGG-style CNN 64×64", model, x[:2], repeats, (64, 128))
    if "lite0" in args.only:
        from tfattr.data import EfficientNetLite0

        model = EfficientNetLite0()
        x = rng.uniform(0, 255, (4, 224, 224, 3)).astype(np.float32)
        bench_gradient_cams("EfficientNet-Lite0 224×224", model, x, max(2, repeats - 1))
        bench_forward_cams("EfficientNet-Lite0 224×224 (Score-CAM top_k=64)", model, x[:1], max(2, repeats - 1),
                           (32, 64), top_k=64)
    if "paths" in args.only:
        model = small_vgg(64)
        x = rng.uniform(0, 1, (4, 64, 64, 3)).astype(np.float32)
        background = rng.uniform(0, 1, (8, 64, 64, 3)).astype(np.float32)
        bench_paths(model, x, background, repeats, 8 if args.quick else 16, 25 if args.quick else 50, 32,
                    not args.no_pair)
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
