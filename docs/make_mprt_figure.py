"""Adebayo et al. (NeurIPS 2018) Fig. 2 with tfattr: cascading model parameter randomisation.

    PYTHONPATH=. python docs/make_mprt_figure.py [--out docs/img/mprt_cascading.png] [--photos chelsea,coffee,rocket]

For EfficientNet-Lite0 (ImageNet weights, offline; scikit-image photos at 224 px) and the demo's
digits-on-photos CNN (the shipped classifier's logits; 8 test images at 64 px), the layers are
re-initialised from the top down, cumulatively, and each method's map ``Σ_c |φ_c|`` on the
randomised model is compared with its map on the trained model (Spearman rank correlation, averaged
over the images; the explained class is the trained model's top-1, fixed). The paper's finding:
gradient and integrated-gradients maps decorrelate as layers are randomised; guided backprop's barely
change (it recovers the image's edges whatever the weights).

Lite0 has 99 layers with weights; its curve has one point per stage (logits, top, blocks 7 … 1, stem),
each point with every layer from the top down to that stage randomised (``randomise_layers``, the
same weights :func:`tfattr.metrics.model_parameter_randomisation` draws). The demo CNN's curve is
``model_parameter_randomisation`` itself, one point per layer. Prints the numbers as a Markdown table
(docs/guides/metrics.md quotes them) and writes the figure. About 12 minutes on 2 cores (each
randomised copy is traced anew).
"""

import argparse
import os
import re
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import numpy as np  # noqa: E402

import tfattr  # noqa: E402
from tfattr import metrics  # noqa: E402

METHODS = {
    "Gradient": lambda model: tfattr.Gradient(model),
    "Integrated gradients": lambda model: tfattr.IntegratedGradients(model, steps=16),
    "Guided backprop": lambda model: tfattr.GuidedBackprop(model),
}


def absolute_maps(method, images, targets):
    phi = np.abs(np.asarray(method.attribute(images, target=targets).attributions, np.float64))
    return phi.sum(axis=-1)


def stage_of(name: str) -> str:
    """Lite0 layer name → its stage: logits, top, block7 … block1, stem."""
    if name == "predictions":
        return "logits"
    match = re.match(r"(block\d)", name)
    return match.group(1) if match else name.split("_")[0]


def lite0_curves(photos, seed=0):
    from tfattr.data import EfficientNetLite0, imagenet_photos

    model = EfficientNetLite0()
    images = imagenet_photos(photos)
    targets = np.argmax(np.asarray(model(images)), axis=1)
    known = metrics.randomisable_layers(model)  # top first
    ends, stages = [], []
    for index, name in enumerate(known):
        stage = stage_of(name)
        if index + 1 == len(known) or stage_of(known[index + 1]) != stage:
            ends.append(index + 1)
            stages.append(stage)
    curves = {}
    for title, build in METHODS.items():
        start = time.perf_counter()
        method = build(model)
        trained = absolute_maps(method, images, targets)
        rows = [metrics.map_similarity(trained, absolute_maps(method.with_model(metrics.randomise_layers(
            model, [], seed=seed)), images, targets))]
        for end in ends:
            randomised = metrics.randomise_layers(model, known[:end], seed=seed)
            rows.append(metrics.map_similarity(trained, absolute_maps(method.with_model(randomised), images, targets)))
        curves[title] = np.stack(rows)
        print(f"  Lite0 {title}: {time.perf_counter() - start:.0f} s")
    return ["none"] + stages, curves


def demo_curves(images=8, seed=0):
    from tfattr.data import digits_on_photos
    from tfattr.demo import load_classifier, logits_of

    model = logits_of(load_classifier())
    x = digits_on_photos(images, size=model.input_shape[1], split="test", seed=seed)["image"]
    curves, layers = {}, None
    for title, build in METHODS.items():
        result = metrics.model_parameter_randomisation(model, x, build(model), seed=seed)
        curves[title] = result.similarities
        layers = ["none"] + result.layers[1:]
    return layers, curves


def table(name, layers, curves) -> str:
    lines = [f"**{name}** (Spearman rank correlation of |maps| with the trained model's, mean over images)", "",
             "| layers randomised down to | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
    for k, layer in enumerate(layers):
        lines.append(f"| {layer} | " + " | ".join(f"{curves[m][k].mean():.2f}" for m in curves) + " |")
    return "\n".join(lines) + "\n"


def figure(panels, path):
    import matplotlib.pyplot as plt

    from tfattr.core.files import atomic_write

    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.2), squeeze=False)
    for ax, (title, layers, curves) in zip(axes[0], panels):
        for method, values in curves.items():
            mean = values.mean(axis=1)
            ax.plot(np.arange(len(layers)), mean, marker="o", label=method)
            ax.fill_between(np.arange(len(layers)), values.min(axis=1), values.max(axis=1), alpha=0.12)
        ax.set_xticks(np.arange(len(layers)))
        ax.set_xticklabels(layers, rotation=60, ha="right", fontsize=8)
        ax.set_ylim(-0.2, 1.05)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xlabel("cascading randomisation from the top, down to")
        ax.set_ylabel("Spearman ρ of |map| with the trained model's")
        ax.set_title(title)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "img", "mprt_cascading.png"))
    parser.add_argument("--photos", default="chelsea,coffee,rocket")
    args = parser.parse_args(argv)
    photos = [p.strip() for p in args.photos.split(",") if p.strip()]
    demo_layers, demo = demo_curves()
    print(table("Demo digits-on-photos CNN, 8 test images at 64 px", demo_layers, demo), flush=True)
    lite_layers, lite = lite0_curves(photos)
    print(table(f"EfficientNet-Lite0, {len(photos)} photos at 224 px", lite_layers, lite))
    figure([(f"EfficientNet-Lite0 (ImageNet), {len(photos)} photos", lite_layers, lite),
            ("Demo digits CNN, 8 images", demo_layers, demo)], args.out)
    print(args.out)


if __name__ == "__main__":
    main()
