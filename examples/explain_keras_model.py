"""Explain my Keras model: Integrated Gradients and Grad-CAM on a saved classifier, pictures written.

    python examples/explain_keras_model.py [--model examples/assets/digits_on_photos_cnn.keras] [--out outputs/explain]

The default model is the demo's small CNN (digits pasted on photos, 64×64 RGB in [0, 1], softmax head);
any saved Keras classifier of (N, H, W, 3) images in [0, 1] works the same (its images here come from
tfattr.data.digits_on_photos at the model's input size). Writes ``overlays.png`` (OpenCV, one row per
image: the image, IG, Grad-CAM) and ``grid.png`` (matplotlib, the same with colorbars), and prints each
image's top-1 class and IG's completeness error. Takes a few seconds.
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
from tfattr.data import digits_on_photos  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.path.join(HERE, "assets", "digits_on_photos_cnn.keras"))
    parser.add_argument("--out", default="outputs/explain")
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args(argv)

    classifier = keras.models.load_model(args.model)
    size = int(classifier.input_shape[1])
    images = digits_on_photos(args.images, size=size, split="test", seed=1)["image"]
    model = tfattr.surgery.logits_model(classifier)          # explain the logits, not the softmax

    ig = tfattr.IntegratedGradients(model, baseline="black", steps=32, rule="riemann_trapezoid", verbose=0)
    expl = ig.attribute(images)                                # target=None: each image's top-1 class
    cam = tfattr.GradCAM(model, verbose=0).attribute(images, target=expl.targets)
    for i, (target, error) in enumerate(zip(expl.targets, expl.relative_delta)):
        print(f"image {i}: class {target}, IG completeness error {100 * error:.2f}%")

    os.makedirs(args.out, exist_ok=True)
    rows = [[tfattr.viz.overlay(img, np.zeros(img.shape[:2]), alpha=0.0, size=128),
             tfattr.viz.overlay(img, a, size=128), tfattr.viz.overlay(img, c, size=128)]
            for img, a, c in zip(images, expl.attributions, cam.attributions)]
    print("wrote", tfattr.viz.save_png(os.path.join(args.out, "overlays.png"),
                                       tfattr.viz.grid(rows, column_titles=["image", "IG", "Grad-CAM"])))
    fig, _ = tfattr.viz.show_grid(images, {"IG": expl, "Grad-CAM": cam}, method="blended_heat_map",
                                  sign="positive", row_titles=[f"class {t}" for t in expl.targets], colorbar=True)
    fig.savefig(os.path.join(args.out, "grid.png"), dpi=80)
    print("wrote", os.path.join(args.out, "grid.png"))


if __name__ == "__main__":
    main()
