"""Reproduce the papers' comparisons on the demo classifier and on a real ImageNet classifier.

    python benchmarks/evaluate_papers.py [--part digits|photos|both] [--images 16] [--photos chelsea,coffee]
                                         [--no-adaptive] [--out outputs/papers]

Prints, in the papers' layout: the SmoothTaylor paper's grid (Goh et al. 2020, Tables I–III:
AUPC and AUTVC for IG zero, IG noise N ∈ {1, 5, 10, 20}, SmoothTaylor σ ∈ {0.3, 0.5, 0.7} ×
R ∈ {100, 150, 200}, adaptive noising for AUPC and AUTVC) and the guided-IG paper's
(Kwon et al.: deletion/insertion for gradients, guided backprop, Grad-CAM, IG, guided IG).
Results are cached in ``<out>/cache`` so a rerun is cheap; tables and curve plots are written
to ``--out``.

Two parts:

* ``digits``: the demo classifier on digits pasted onto photos, with the protocol scaled to
  64×64 images: AUPC windows of 6 px (15 at 224), 30 regions, 50 copies; deletion/insertion
  64 pixels a step (224 at 224×224); plus the pointing game on the digits' masks (4 px).
* ``photos``: EfficientNet-Lite0 (ImageNet weights from the package registry,
  :func:`tfattr.data.EfficientNetLite0`) on scikit-image photos at 224×224, explaining the
  top-1 class, at the papers' exact protocol: AUPC 30 windows of 15×15 px with 50 noise copies
  U[0, 255] a step, deletion/insertion 224 pixels a step. Each photo is evaluated (and cached)
  on its own, so a run with more photos reuses the earlier ones; the table is the mean over
  photos. Adaptive noising runs with the AUTVC objective only (``--photo-adaptive all`` adds
  the AUPC objective: an AUPC of 1,500 forward passes at each of the search's ~30 steps, about
  half an hour per photo on 2 cores).
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
from tfattr.evaluation import evaluate, format_table, guided_ig_comparison, merge_rows, smoothtaylor_grid  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(os.path.dirname(HERE), "examples", "assets", "digits_on_photos_cnn.keras")


#: scikit-image photos whose top-1 ImageNet class is their subject (chelsea: Egyptian cat, coffee:
#: espresso, rocket: missile, camera: tripod); the default run takes the first two
PHOTOS = ("chelsea", "coffee", "rocket", "camera")
ST_COLUMNS = ["AUPC", "AUTVC", "completeness"]
GIG_COLUMNS = ["deletion", "insertion"]


def _batch_size(text: str):
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1 or 'auto'. Received: --batch-size={text!r}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("digits", "photos", "both"), default="both")
    parser.add_argument("--images", type=int, default=16, help="digits part: test images (default 16)")
    parser.add_argument("--photos", default="chelsea,coffee",
                        help=f"photos part: comma-separated scikit-image photos (default chelsea,coffee; "
                             f"all four: {','.join(PHOTOS)})")
    parser.add_argument("--photo-adaptive", choices=("autvc", "all", "none"), default="autvc",
                        help="photos part: adaptive noising objectives (default autvc; 'all' adds AUPC)")
    parser.add_argument("--batch-size", type=_batch_size, default="auto",
                        help="photos part: points per forward+backward pass of EfficientNet-Lite0, an integer or "
                             "'auto' (default: measured)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-adaptive", action="store_true", help="skip adaptive noising (the slow rows)")
    parser.add_argument("--out", default=os.path.join("outputs", "papers"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    texts, plots = [], []
    if args.part in ("digits", "both"):
        text, plot = digits_part(args)
        texts.append(text)
        plots.append(plot)
    if args.part in ("photos", "both"):
        text, plot = photos_part(args)
        texts.append(text)
        plots.append(plot)
    text = "\n".join(texts)
    print("\n" + text)
    path = os.path.join(args.out, "tables.md")
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)
    png = viz.save_png(os.path.join(args.out, "curves.png"), np.concatenate(plots, axis=0))
    print(f"wrote {path}\n      {png}")
    return 0


def curve_panels(st_rows, gig_rows, step: int, what: str):
    return [
        viz.plot_curves({r.method: r.curves["AUPC"] for r in st_rows if "R=150" in r.method or "IG" in r.method
                         or "adaptive" in r.method}, title=f"AUPC curves (SmoothTaylor paper grid, {what})",
                        xlabel="windows perturbed", ylabel="score / |f(x)|"),
        viz.plot_curves({r.method: r.curves["deletion"] for r in gig_rows}, title=f"Deletion curves ({what})",
                        xlabel=f"steps of {step} pixels", ylabel="p"),
        viz.plot_curves({r.method: r.curves["insertion"] for r in gig_rows}, title=f"Insertion curves ({what})",
                        xlabel=f"steps of {step} pixels", ylabel="p"),
    ]


def digits_part(args):
    """The demo classifier on digits pasted onto photos, the protocol scaled to 64×64."""
    model = tfattr.surgery.logits_model(keras.models.load_model(MODEL))
    data = digits_on_photos(args.images, split="test", seed=args.seed)
    x, labels, masks = data["image"], data["label"], data["mask"]
    scaled = dict(aupc_kernel=6, aupc_regions=30, aupc_perturbations=50, pixels_per_step=64, pointing_tolerance=4,
                  cache_dir=os.path.join(args.out, "cache"))

    print(f"SmoothTaylor paper grid on {len(x)} test images of the demo classifier")
    st_rows = evaluate(model, x, smoothtaylor_grid(model, adaptive=not args.no_adaptive, aupc_kernel=6), labels=labels,
                       masks=masks, **scaled)
    print("\nGuided-IG paper comparison on the same images")
    gig_rows = evaluate(model, x, guided_ig_comparison(model, layer="block3_conv2"), labels=labels, masks=masks,
                        **scaled)
    text = (format_table(st_rows, ["AUPC", "AUTVC", "pointing", "mask energy", "completeness"],
                         title="SmoothTaylor paper, Tables I–III layout, digits classifier "
                               "(lower AUPC/AUTVC is better)")
            + "\n" + format_table(gig_rows, ["deletion", "insertion", "pointing", "mask energy"],
                                  title="Guided-IG paper layout, digits classifier (lower deletion, higher insertion "
                                        "is better)"))
    return text, np.concatenate(curve_panels(st_rows, gig_rows, 64, "digits"), axis=0)


def photos_part(args):
    """EfficientNet-Lite0 on scikit-image photos at the papers' exact 224-px protocol, one photo at a time."""
    from tfattr.data import EfficientNetLite0, decode_predictions, imagenet_photos

    photos = [p.strip() for p in args.photos.split(",") if p.strip()]
    model = EfficientNetLite0()  # logits; declares the value range (0, 255)
    exact = dict(aupc_kernel=15, aupc_regions=30, aupc_perturbations=50, pixels_per_step=224,
                 cache_dir=os.path.join(args.out, "cache"))
    grid = smoothtaylor_grid(model, batch_size=args.batch_size, adaptive=not args.no_adaptive
                             and args.photo_adaptive != "none", aupc_kernel=15)
    if args.photo_adaptive == "autvc":
        grid = [(name, method) for name, method in grid if name != "SmoothTaylor adaptive-AUPC"]
    comparison = guided_ig_comparison(model, batch_size=args.batch_size)  # Grad-CAM at the last conv layer
    st_per_photo, gig_per_photo, described = [], [], []
    for photo in photos:
        x = imagenet_photos([photo])
        (index, name, probability), = [row[0] for row in decode_predictions(model.predict(x, verbose=0), top=1)]
        described.append(f"{photo} → {name} ({probability:.2f})")
        labels = np.array([index])
        print(f"\nSmoothTaylor paper grid on {photo} ({name}, p = {probability:.2f}), EfficientNet-Lite0")
        st_per_photo.append(evaluate(model, x, grid, labels=labels, **exact))
        print(f"\nGuided-IG paper comparison on {photo}")
        gig_per_photo.append(evaluate(model, x, comparison, labels=labels, **exact))
    st_rows, gig_rows = merge_rows(st_per_photo), merge_rows(gig_per_photo)
    where = (f"EfficientNet-Lite0 (ImageNet), {len(photos)} photo{'s' if len(photos) > 1 else ''}: "
             + ", ".join(described))
    text = (format_table(st_rows, ST_COLUMNS, title=f"SmoothTaylor paper, Tables I–III layout, {where}; exact "
                                                    "protocol (lower AUPC/AUTVC is better)")
            + "\n" + format_table(gig_rows, GIG_COLUMNS, title=f"Guided-IG paper layout, {where}; 224 pixels a step "
                                                               "(lower deletion, higher insertion is better)"))
    return text, np.concatenate(curve_panels(st_rows, gig_rows, 224, "EfficientNet-Lite0"), axis=0)


if __name__ == "__main__":
    sys.exit(main())
