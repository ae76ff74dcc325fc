"""The main job: explain real images with every tfattr method; write pictures and a metrics table.

The classifier is a small VGG-style CNN (shipped in ``examples/assets``; retrain with
``examples/train_demo_model.py``) that reads handwritten digits pasted onto crops of the
photographs bundled with scikit-image. Each test image has the digit's ground-truth mask,
so the table can say how much attribution lands on the digit.

    python examples/demo.py [--out outputs/demo] [--images 6]

Writes ``attributions.png`` (images × methods), ``metrics.md`` (the table, also
printed) and ``attributions.npz`` (raw attributions) into ``--out``.
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
from tfattr import viz  # noqa: E402
from tfattr.core.files import atomic_write, write_text  # noqa: E402
from tfattr.data import PHOTOS, digits_on_photos  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL_PATH = os.path.join(HERE, "assets", "digits_on_photos_cnn.keras")


def load_classifier():
    if not os.path.exists(MODEL_PATH):
        print(f"{MODEL_PATH} is missing: training it (a few minutes) ...")
        from train_demo_model import train

        train()
    return keras.models.load_model(MODEL_PATH)


def logits_of(model: keras.Model) -> keras.Model:
    """The classifier without its softmax (the papers explain pre-softmax logits)."""
    if hasattr(tfattr, "surgery"):
        return tfattr.surgery.logits_model(model)
    head = model.get_layer("predictions")
    logits = keras.layers.Dense(head.units, name="logits")
    out = logits(head.input)
    logits.set_weights(head.get_weights())
    return keras.Model(model.inputs, out)


def methods(model):
    """(title, method) pairs: every method and baseline tfattr has, with the demo's settings."""
    common = dict(batch_size=32, verbose=0)
    ig = dict(steps=64, rule="riemann_trapezoid", **common)
    yield "Gradient", tfattr.Gradient(model, **common)
    yield "Input x Gradient", tfattr.InputXGradient(model, **common)
    yield "SmoothGrad", tfattr.NoiseTunnel(tfattr.Gradient(model, **common), nt_samples=50, noise_level=0.15)
    yield "Guided backprop", tfattr.GuidedBackprop(model, **common)
    yield "IG zero", tfattr.IntegratedGradients(model, baseline="zero", **ig)
    yield "IG uniform x10", tfattr.IntegratedGradients(model, baseline="uniform", n_baselines=10, **ig)
    yield "IG gaussian x10", tfattr.IntegratedGradients(model, baseline="gaussian", n_baselines=10, **ig)
    yield "IG blur", tfattr.IntegratedGradients(model, baseline="blur", **ig)
    yield "IG max-distance", tfattr.IntegratedGradients(model, baseline="max_distance", **ig)
    yield "Guided IG", tfattr.GuidedIntegratedGradients(model, baseline="zero", **ig)
    yield "SmoothTaylor", tfattr.SmoothTaylor(model, roots=150, sigma=0.15, noise_scale="relative", **common)
    yield "SmoothTaylor adapt.", tfattr.SmoothTaylor(model, roots=50, sigma="adaptive", objective="autvc",
                                                     noise_scale="relative", **common)
    yield "Grad-CAM", tfattr.GradCAM(model, layer="block3_conv2", **common)
    yield "RSI-Grad-CAM", tfattr.RSIGradCAM(model, layer="block3_conv2", steps=50, **common)
    yield "RSI-Grad-CAM notebook", tfattr.RSIGradCAM(model, layer="block3_conv2", steps=50, rule="trapezoid",
                                                     positive_units=True, **common)


def evaluate(model, x, attributions, labels, masks, seed):
    """The papers' metrics, scaled to 64×64 images (AUPC windows of 6 px instead of 15 at 224).

    Returns the per-image values and the mean curves (AUPC, deletion, insertion) for plotting.
    """
    m = tfattr.metrics
    aupc = m.aupc(model, x, attributions, target=labels, kernel_size=6, regions=30, perturbations=50,
                  seed=seed, verbose=0)
    deletion = m.deletion(model, x, attributions, target=labels, verbose=0)
    insertion = m.insertion(model, x, attributions, target=labels, verbose=0)
    scores = {
        "AUPC": aupc.area,
        "AUTVC": m.autvc(attributions).area,
        "deletion": deletion.auc,
        "insertion": insertion.auc,
        "pointing": m.pointing_game(attributions, masks, tolerance=3).hits.astype(float),
        "on digit": m.mask_energy(attributions, masks, absolute=True),
    }
    curves = {"AUPC": aupc.curve.mean(axis=0), "deletion": deletion.curve.mean(axis=0),
              "insertion": insertion.curve.mean(axis=0)}
    return scores, curves


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("outputs", "demo"))
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--methods", default=None,
                        help="comma-separated method titles to run (default: all), e.g. 'IG zero,Grad-CAM'")
    args = parser.parse_args()

    classifier = load_classifier()
    model = logits_of(classifier)
    data = digits_on_photos(args.images, split="test", seed=args.seed)
    x, labels, masks = data["image"], data["label"], data["mask"]
    predicted = np.argmax(model.predict(x, verbose=0), axis=1)
    print(f"explaining {len(x)} test images (labels {labels.tolist()}, predicted {predicted.tolist()}) "
          f"on photos {[PHOTOS[b] for b in data['background']]}")

    tile = 128
    rows = [[viz.overlay(img, np.zeros(img.shape[:2]), alpha=0.0, size=tile)] for img in x]
    titles = [[f"digit {labels[i]}, predicted {predicted[i]}"] for i in range(len(x))]
    column_titles = ["image"]
    table, raw, curves, traces = [], {}, {}, None
    wanted = None if args.methods is None else {m.strip() for m in args.methods.split(",")}
    for title, method in methods(model):
        if wanted is not None and title not in wanted:
            continue
        start = time.perf_counter()
        expl = method.attribute(x, target=labels)
        seconds = time.perf_counter() - start
        attributions = np.asarray(expl)
        raw[title] = attributions
        scores, method_curves = evaluate(model, x, attributions, labels, masks, args.seed)
        for name, curve in method_curves.items():
            curves.setdefault(name, {})[title] = curve
        if expl.info.get("trace"):
            traces = expl.info["trace"]
        completeness = "" if expl.delta is None else f"{100 * float(np.median(expl.relative_delta)):.2f}"
        table.append([title, f"{seconds:.2f}", str(expl.gradients), completeness]
                     + [f"{float(np.mean(v)):.3f}" for v in scores.values()])
        column_titles.append(title)
        for i in range(len(x)):
            rows[i].append(viz.overlay(x[i], attributions[i], size=tile))
            titles[i].append(f"on digit {100 * scores['on digit'][i]:.0f}%")
        print(f"  {title:<20} {seconds:6.2f}s  " + "  ".join(f"{k} {float(np.mean(v)):.3f}" for k, v in scores.items()))

    os.makedirs(args.out, exist_ok=True)
    picture = viz.grid(rows, titles, column_titles=column_titles)
    png = viz.save_png(os.path.join(args.out, "attributions.png"), picture)
    shown = ["Gradient", "SmoothGrad", "IG zero", "IG blur", "Guided IG", "SmoothTaylor", "RSI-Grad-CAM"]
    shown = [k for k in shown if k in curves["AUPC"]] or list(curves["AUPC"])
    panels = [viz.plot_curves({k: v for k, v in curves["AUPC"].items() if k in shown},
                              title="AUPC: logit / |f(x)| as 6x6 windows turn to noise (lower is better)",
                              xlabel="windows perturbed", ylabel="score"),
              viz.plot_curves({k: v for k, v in curves["deletion"].items() if k in shown},
                              title="Deletion: probability as top pixels are zeroed (lower is better)",
                              xlabel="steps of 64 pixels", ylabel="p"),
              viz.plot_curves({k: v for k, v in curves["insertion"].items() if k in shown},
                              title="Insertion: probability as top pixels return (higher is better)",
                              xlabel="steps of 64 pixels", ylabel="p")]
    if traces:
        panels.append(viz.plot_curves({f"image {i}": [t["sigma"] for t in trace] for i, trace in enumerate(traces)},
                                      title="Adaptive noising (Algorithm 1): sigma tried at each evaluation",
                                      xlabel="evaluation", ylabel="sigma"))
        panels.append(viz.plot_curves({f"image {i}": [t["objective"] for t in trace] for i, trace in enumerate(traces)},
                                      title="Adaptive noising: AUTVC of SmoothTaylor at that sigma (minimised)",
                                      xlabel="evaluation", ylabel="AUTVC"))
    curves_png = viz.save_png(os.path.join(args.out, "curves.png"), np.concatenate(panels, axis=0))

    mask_share = masks.reshape(len(masks), -1).mean()
    header = ("method", "seconds", "gradients", "completeness err %", "AUPC ↓", "AUTVC ↓", "deletion ↓",
              "insertion ↑", "pointing ↑", "on digit ↑")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    lines.append("")
    lines.append("Means over the images. Completeness error: median |Σ attr − (f(x) − f(z))| / |f(x) − f(z)| "
                 "(SmoothTaylor: the Taylor reconstruction error). AUPC: 30 windows of 6×6 px, 50 noise copies "
                 "(the paper's 15×15 at 224 px, scaled), logit score. Deletion/insertion: softmax probability, "
                 "64 pixels a step. Pointing game: the maximum within 3 px of the digit. On digit: share of "
                 f"|attribution| on the digit's pixels (the digit covers {100 * mask_share:.1f}% of the image, "
                 f"so a map that ignores it scores about {mask_share:.3f}).")
    text = "\n".join(lines) + "\n"
    md = _write_text(os.path.join(args.out, "metrics.md"), text)
    npz = os.path.join(args.out, "attributions.npz")
    _write_npz(npz, images=x, labels=labels, masks=masks, **{k.replace(" ", "_"): v for k, v in raw.items()})
    print()
    print(text)
    print(f"wrote {png}\n      {curves_png}\n      {md}\n      {npz}")


def _write_text(path, text):
    return write_text(path, text)  # atomic, mode 0o666 & ~umask


def _write_npz(path, **arrays):
    with atomic_write(path) as handle:
        np.savez_compressed(handle, **arrays)
    return path


if __name__ == "__main__":
    main()
