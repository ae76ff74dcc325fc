"""Pixel flipping and region perturbation: tfattr vs Quantus 0.6 vs the bare forward passes.

Same model (a small VGG-style CNN, logits), images, channel-free maps, targets and settings in one
process: tfattr's ``metrics.pixel_flipping`` / ``metrics.region_perturbation`` (forward rows on the
engine), Quantus's ``PixelFlipping`` / ``RegionPerturbation`` (``softmax=False``, fixed baseline
``0.0``, ``a_batch`` of shape ``(N, 1, H, W)``, ``channel_first=False``), and the *floor*: exactly
the forward passes tfattr runs — the same chunk sizes, through the same compiled forward function,
on a pre-built batch — with nothing else. Each is timed several times, alternately (the machine is
shared; ``--repeats`` for the floor and tfattr, ``--quantus-repeats`` for Quantus), and the best kept.
The two libraries' curves are compared too (max difference).

    python benchmarks/bench_metrics_quantus.py                     # 48×48, 8 images (≈ 4 min on 2 cores)
    python benchmarks/bench_metrics_quantus.py --size 96 --images 16
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import quantus  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfattr import metrics  # noqa: E402
from tfattr.core.gradients import compiled_forward  # noqa: E402


def build_model(size: int):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    h = inputs
    for filters in (16, 32, 64):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def floor_seconds(model, x, rows_per_image, batch_size):
    """f(x), then ``N · rows_per_image`` rows in chunks of ``batch_size``: the forward passes alone."""
    forward = compiled_forward(model)
    rows = len(x) * rows_per_image
    batch = np.repeat(x[:1], min(batch_size, rows), axis=0)
    start = time.perf_counter()
    for s in range(0, len(x), batch_size):
        np.asarray(forward(tf.convert_to_tensor(x[s : s + batch_size])))
    for s in range(0, rows, batch_size):
        np.asarray(forward(tf.convert_to_tensor(batch[: min(batch_size, rows - s)])))
    return time.perf_counter() - start


def timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--pixels-per-step", type=int, default=48)
    parser.add_argument("--patch-size", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9, help="floor and tfattr timings (cheap)")
    parser.add_argument("--quantus-repeats", type=int, default=2, help="Quantus timings (slow)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, Quantus {quantus.__version__}, "
          f"CPUs: {os.cpu_count()}")
    model = build_model(args.size)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (args.images, args.size, args.size, 3)).astype(np.float32)
    # distinct, well-separated values (a permutation): tfattr ranks values within 2**-14 of the map's
    # scale as ties (by position), Quantus by exact value, so near-ties of a normal map would order apart
    maps = np.stack([rng.permutation(args.size * args.size) for _ in range(args.images)])
    maps = (maps.reshape(x.shape[:3]) / (args.size * args.size) - 0.3).astype(np.float32)
    # region perturbation: the patch sums of those maps can tie exactly (sums of integers), and ties order
    # apart; these maps give each patch its own level (gaps of ≥ ½ of a level between patch sums)
    grid = metrics.region_grid(args.size, args.size, args.patch_size)
    levels = int(grid.max()) + 1
    region_maps = np.stack([rng.permutation(levels)[grid] + 0.5 * rng.permutation(grid.size).reshape(grid.shape)
                            / grid.size for _ in range(args.images)])
    region_maps = (region_maps / levels).astype(np.float32)
    targets = np.asarray(model(x)).argmax(axis=1)
    pixels = args.size * args.size
    steps = math.ceil(pixels / args.pixels_per_step)
    patches = int(metrics.region_grid(args.size, args.size, args.patch_size).max()) + 1
    batch = args.batch_size

    def ours_pf():
        return metrics.pixel_flipping(model, x, maps, target=targets, pixels_per_step=args.pixels_per_step,
                                      baseline=0.0, batch_size=batch, verbose=0).curve

    def quantus_pf():
        metric = quantus.PixelFlipping(features_in_step=3 * args.pixels_per_step, perturb_baseline=0.0,
                                       abs=False, normalise=False, disable_warnings=True)
        return np.asarray(metric(model=model, x_batch=x, y_batch=targets, a_batch=maps[:, None],
                                 channel_first=False, softmax=False, batch_size=len(x)))

    def ours_rp():
        return metrics.region_perturbation(model, x, region_maps, target=targets, patch_size=args.patch_size,
                                           regions=patches, baseline=0.0, batch_size=batch, verbose=0).drops

    def quantus_rp():
        metric = quantus.RegionPerturbation(patch_size=args.patch_size, regions_evaluation=patches,
                                            perturb_baseline=0.0, abs=False, normalise=False, disable_warnings=True)
        return np.asarray(metric(model=model, x_batch=x, y_batch=targets, a_batch=region_maps[:, None],
                                 channel_first=False, softmax=False, batch_size=len(x)))

    for name, ours, theirs, rows in (("pixel_flipping", ours_pf, quantus_pf, steps),
                                     ("region_perturbation", ours_rp, quantus_rp, patches)):
        print(f"\n{name}: {args.images} images {args.size}×{args.size}, {rows} steps each "
              f"-> {args.images * (rows + 1)} forward passes; tfattr batch {batch}")
        a, b = ours(), theirs()  # warm-up (traces) and agreement
        floor_seconds(model, x, rows, batch)
        print(f"  max |tfattr − Quantus| = {np.abs(a - b).max():.2e} (scores up to {np.abs(b).max():.2f})")
        best = {"floor": [], "tfattr": [], "quantus": []}
        for repeat in range(args.repeats):
            best["floor"].append(floor_seconds(model, x, rows, batch))
            best["tfattr"].append(timed(ours)[0])
            if repeat < args.quantus_repeats:
                best["quantus"].append(timed(theirs)[0])
            print("  " + "   ".join(f"{k} {v[-1]:6.2f} s" for k, v in best.items() if v), flush=True)
        floor, t_ours = min(best["floor"]), min(best["tfattr"])
        line = f"  best: floor {floor:.2f} s, tfattr {t_ours:.2f} s ({t_ours / floor:.2f}× the floor)"
        if best["quantus"]:
            line += f", Quantus {min(best['quantus']):.2f} s ({min(best['quantus']) / t_ours:.1f}× tfattr)"
        print(line)

if __name__ == "__main__":
    main()
