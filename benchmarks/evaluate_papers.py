"""Reproduce the papers' comparisons on the demo classifier (or any Keras classifier + images).

    python benchmarks/evaluate_papers.py [--images 16] [--no-adaptive] [--out outputs/papers]

Prints, in the papers' layout: the SmoothTaylor paper's grid (Goh et al. 2020, Tables I–III:
AUPC and AUTVC for IG zero, IG noise N ∈ {1, 5, 10, 20}, SmoothTaylor σ ∈ {0.3, 0.5, 0.7} ×
R ∈ {100, 150, 200}, adaptive noising for AUPC and AUTVC) and the guided-IG paper's
(Kwon et al.: deletion/insertion for gradients, guided backprop, Grad-CAM, IG, guided IG),
plus the pointing game on the dataset's masks. Results are cached in ``<out>/cache`` so a
rerun is cheap; tables and curve plots are written to ``--out``.

Protocol scaled to 64×64 images: AUPC windows of 6 px (15 at 224), 30 regions, 50 copies;
deletion/insertion 64 pixels a step (224 at 224×224); pointing-game tolerance 4 px (15 at 224).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfattr  # noqa: E402
from tfattr import viz  # noqa: E402
from tfattr.data import digits_on_photos  # noqa: E402
from tfattr.evaluation import evaluate, format_table, guided_ig_comparison, smoothtaylor_grid  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(os.path.dirname(HERE), "examples", "assets", "digits_on_photos_cnn.keras")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-adaptive", action="store_true", help="skip adaptive noising (the slow rows)")
    parser.add_argument("--out", default=os.path.join("outputs", "papers"))
    args = parser.parse_args(argv)
    model = tfattr.surgery.logits_model(keras.models.load_model(MODEL))
    data = digits_on_photos(args.images, split="test", seed=args.seed)
    x, labels, masks = data["image"], data["label"], data["mask"]
    scaled = dict(aupc_kernel=6, aupc_regions=30, aupc_perturbations=50, pixels_per_step=64, pointing_tolerance=4,
                  cache_dir=os.path.join(args.out, "cache"))
    os.makedirs(args.out, exist_ok=True)

    print(f"SmoothTaylor paper grid on {len(x)} test images of the demo classifier")
    st_rows = evaluate(model, x, smoothtaylor_grid(model, adaptive=not args.no_adaptive, aupc_kernel=6), labels=labels,
                       masks=masks, **scaled)
    print(f"\nGuided-IG paper comparison on the same images")
    gig_rows = evaluate(model, x, guided_ig_comparison(model, layer="block3_conv2"), labels=labels, masks=masks,
                        **scaled)
    text = (format_table(st_rows, ["AUPC", "AUTVC", "pointing", "mask energy", "completeness"],
                         title="SmoothTaylor paper, Tables I–III layout (lower AUPC/AUTVC is better)")
            + "\n" + format_table(gig_rows, ["deletion", "insertion", "pointing", "mask energy"],
                                  title="Guided-IG paper layout (lower deletion, higher insertion is better)"))
    print("\n" + text)
    path = os.path.join(args.out, "tables.md")
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)
    plot = np.concatenate([
        viz.plot_curves({r.method: r.curves["AUPC"] for r in st_rows if "R=150" in r.method or "IG" in r.method
                         or "adaptive" in r.method}, title="AUPC curves (SmoothTaylor paper grid)",
                        xlabel="windows perturbed", ylabel="score / |f(x)|"),
        viz.plot_curves({r.method: r.curves["deletion"] for r in gig_rows}, title="Deletion curves",
                        xlabel="steps of 64 pixels", ylabel="p"),
        viz.plot_curves({r.method: r.curves["insertion"] for r in gig_rows}, title="Insertion curves",
                        xlabel="steps of 64 pixels", ylabel="p"),
    ], axis=0)
    png = viz.save_png(os.path.join(args.out, "curves.png"), plot)
    print(f"wrote {path}\n      {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
