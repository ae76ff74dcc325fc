"""Evaluate methods: score a few methods with the papers' metrics on the demo's classifier.

    python examples/evaluate_methods.py [--images 8] [--out outputs/evaluate]

Runs Gradient, IG, SmoothGrad, Grad-CAM and RSI-Grad-CAM on held-out digits-on-photos images and scores them
with tfattr.evaluation.evaluate (AUPC, AUTVC, deletion, insertion, pointing game, mask energy, completeness),
with small metric settings so it takes well under a minute (the papers' settings: ``make papers``). The
results are cached in ``--out/cache``: a second run reads them. Prints the table and draws the deletion
curves (``deletion.png``, matplotlib).
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import numpy as np  # noqa: E402

import tfattr  # noqa: E402
import tfattr.evaluation  # noqa: E402  (a face `import tfattr` does not load)
from tfattr import metrics, viz  # noqa: E402
from tfattr.data import digits_on_photos  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--out", default="outputs/evaluate")
    args = parser.parse_args(argv)

    classifier = keras.models.load_model(os.path.join(HERE, "assets", "digits_on_photos_cnn.keras"))
    model = tfattr.surgery.logits_model(classifier)
    data = digits_on_photos(args.images, size=int(model.input_shape[1]), split="test", seed=2)
    images, labels, masks = data["image"], data["label"], data["mask"]
    methods = [
        ("Gradient", tfattr.Gradient(model, verbose=0)),
        ("IG", tfattr.IntegratedGradients(model, steps=32, rule="riemann_trapezoid", verbose=0)),
        ("SmoothGrad", tfattr.NoiseTunnel(tfattr.Gradient(model, verbose=0), nt_samples=8)),
        ("Grad-CAM", tfattr.GradCAM(model, verbose=0)),
        ("RSI-Grad-CAM", tfattr.RSIGradCAM(model, steps=16, verbose=0)),
    ]
    rows = tfattr.evaluation.evaluate(model, images, methods, labels=labels, masks=masks, aupc_kernel=6,
                                      aupc_regions=10, aupc_perturbations=4, pixels_per_step=256,
                                      cache_dir=os.path.join(args.out, "cache"), verbose=False)
    names = list(rows[0].scores)
    print("| method | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for row in rows:
        print(f"| {row.method} | " + " | ".join(f"{row.scores[k]:.3f}" for k in names) + " |")

    deletion = {name: metrics.deletion(model, images, np.asarray(method.attribute(images, target=labels)),
                                       target=labels, pixels_per_step=256)
                for name, method in methods[:2] + methods[3:4]}
    fig, _ = viz.show_curves(deletion, index=0, title="deletion, image 0 (area in the legend)")
    os.makedirs(args.out, exist_ok=True)
    fig.savefig(os.path.join(args.out, "deletion.png"), dpi=80)
    print("wrote", os.path.join(args.out, "deletion.png"))


if __name__ == "__main__":
    main()
