"""The main job: explain real images with every tfattr method; write pictures and a metrics table.

The classifier is a small VGG-style CNN (package data in ``tfattr/assets``, so an installed wheel
has it; retrain with ``examples/train_demo_model.py`` in a checkout) that reads handwritten digits
pasted onto crops of the photographs bundled with scikit-image. Each test image has the digit's ground-truth mask,
so the table can say how much attribution lands on the digit.

Then it explains scikit-image's photographs that have an ImageNet class (chelsea, coffee,
rocket, camera) with a real ImageNet classifier, EfficientNet-Lite0
(:func:`tfattr.data.EfficientNetLite0`, offline, RGB in [0, 255], logits), with the same
methods at fewer steps and samples, scored by deletion, insertion, AUPC and AUTVC on the
224-px images (``--protocol``: ``demo`` by default, ``paper`` for the papers' exact protocol,
``quick`` for tests).

    tfattr demo [--out outputs/demo] [--images 6] [--photos chelsea,coffee,rocket,camera]
                [--protocol demo|paper|quick] [--methods 'IG zero,Grad-CAM'] [--no-digits]

(the same as ``python -m tfattr.demo …`` and, in a checkout, ``python examples/demo.py …``).

Writes ``attributions.png`` (images × methods), ``curves.png``, ``metrics.md`` (the table, also
printed) and ``attributions.npz`` (raw attributions) into ``--out``, and for the photos
``imagenet_attributions.png``, ``imagenet_curves.png``, ``imagenet_metrics.md`` and
``imagenet_attributions.npz``. ``--photos none`` leaves the photos out, ``--no-digits`` the digits.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfattr import metrics, viz  # noqa: E402
from tfattr.core.assets import DEMO_MODEL, asset_path  # noqa: E402
from tfattr.core.files import atomic_write, write_text  # noqa: E402
from tfattr.core.noise import NoiseTunnel  # noqa: E402
from tfattr.data import PHOTOS, digits_on_photos  # noqa: E402
from tfattr.methods import (  # noqa: E402
    LRP,
    RISE,
    XRAI,
    AdaptivePathIntegratedGradients,
    DeepLift,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    Gradient,
    GuidedBackprop,
    GuidedIntegratedGradients,
    HiResCAM,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LayerCAM,
    Lime,
    Occlusion,
    RSIGradCAM,
    ScoreCAM,
    SmoothTaylor,
    SobolAttribution,
    XGradCAM,
)
from tfattr.methods.lime import segment  # noqa: E402
from tfattr.surgery import logits_model  # noqa: E402

#: scikit-image photos whose content is an ImageNet class (EfficientNet-Lite0's top-1: Egyptian cat
#: 0.40, espresso 0.94, missile 0.23, tripod 0.95); astronaut, brick, grass, gravel have none
IMAGENET_PHOTOS = ("chelsea", "coffee", "rocket", "camera")
#: the photos explained by default (the three the real-classifier issue names; ``--photos`` takes any,
#: e.g. ``--photos chelsea,coffee,rocket,camera``): each photo adds about 50 s on 2 cores
DEMO_PHOTOS = ("chelsea", "coffee", "rocket")
#: Grad-CAM's layer on EfficientNet-Lite0: the last convolution's activation, 7×7×1280
PHOTO_LAYER = "top_activation"
PHOTO_RANGE = (0.0, 255.0)
#: metric settings on 224×224 photos. "paper": AUPC with 15×15 windows, L = 30, P = 50 (Samek et
#: al. 2017 as Goh et al. 2020 run it), deletion/insertion 224 pixels a step (Petsiuk et al. 2018);
#: 1,951 forward passes per image and method (about 110 s of CPU on EfficientNet-Lite0, so an hour
#: for 14 methods and 4 photos on 2 cores). "demo" keeps the windows, L and the substrates with one
#: noise copy a step and 16 deletion/insertion steps (65 passes); "quick" is for tests.
PROTOCOLS = {
    "paper": dict(kernel_size=15, regions=30, perturbations=50, pixels_per_step=224),
    "demo": dict(kernel_size=15, regions=30, perturbations=1, pixels_per_step=224 * 14),
    "quick": dict(kernel_size=15, regions=4, perturbations=2, pixels_per_step=224 * 56),
}
PHOTO_SETTINGS = ("IG 32 steps (trapezoid; IG_noise 4 draws × 8 steps), SmoothGrad 16 samples (paper: 50), "
                  "SmoothTaylor 16 roots (paper: 100–200), RSI-Grad-CAM 16 steps (notebook: 50), "
                  "Score-CAM the 64 channels of largest mean activation (Faster Score-CAM; all 1,280: the paper), "
                  "Occlusion 32×32 windows at stride 16 (captum's tutorial: 15×15 at 8), "
                  "RISE {rise} masks of 7×7 cells on the softmax probability (paper: 4,000–8,000), "
                  "LIME {lime} samples on quickshift superpixels (lime: 1,000), "
                  "KernelSHAP {kernelshap} samples on 50 SLIC superpixels (shap: 2·M + 2,048), "
                  "Sobol {sobol_grid}×{sobol_grid} cells from {sobol_designs} designs (paper: 8×8 from 32), "
                  "adaptive-path IG 32 steps (PAIR: 200), XRAI on IG of 32 steps a baseline (PAIR: 100)")
#: the perturbation methods' sample counts on the photos (reduced; the full settings: docs/methods/*.md)
PHOTO_SAMPLES = {"rise": 1000, "lime": 300, "kernelshap": 300}
#: Sobol's reduced design on the photos: ``n_designs · (grid² + 2)`` forward passes per photo
PHOTO_SOBOL = {"grid": 6, "n_designs": 16}
PHOTO_SETTINGS = PHOTO_SETTINGS.format(**{k: f"{v:,}" for k, v in PHOTO_SAMPLES.items()},
                                       sobol_grid=PHOTO_SOBOL["grid"], sobol_designs=PHOTO_SOBOL["n_designs"])


def load_classifier():
    """The shipped demo classifier (softmax head), from the package data."""
    return keras.models.load_model(asset_path(DEMO_MODEL))


def logits_of(model: keras.Model) -> keras.Model:
    """The classifier without its softmax (the papers explain pre-softmax logits)."""
    return logits_model(model)


def methods(model):
    """(title, method) pairs: every method and baseline tfattr has, with the demo's settings."""
    common = dict(verbose=0)  # batch_size="auto": chunk sizes measured on the first calls
    ig = dict(steps=64, rule="riemann_trapezoid", **common)
    yield "Gradient", Gradient(model, **common)
    yield "Input x Gradient", InputXGradient(model, **common)
    yield "SmoothGrad", NoiseTunnel(Gradient(model, **common), nt_samples=50, noise_level=0.15)
    yield "Guided backprop", GuidedBackprop(model, **common)
    yield "IG zero", IntegratedGradients(model, baseline="zero", **ig)
    yield "IG uniform x3", IntegratedGradients(model, baseline="uniform", n_baselines=3, **ig)
    yield "IG gaussian x3", IntegratedGradients(model, baseline="gaussian", n_baselines=3, **ig)
    yield "IG blur", IntegratedGradients(model, baseline="blur", **ig)
    yield "IG max-distance", IntegratedGradients(model, baseline="max_distance", **ig)
    yield "Guided IG", GuidedIntegratedGradients(model, baseline="zero", **ig)
    yield "SmoothTaylor", SmoothTaylor(model, roots=150, sigma=0.15, noise_scale="relative", **common)
    yield "SmoothTaylor adapt.", SmoothTaylor(model, roots=10, sigma="adaptive", objective="autvc",
                                                     noise_scale="relative", **common)
    layer_cam = dict(layer="block3_conv2", **common)  # the CAMs (titles read by the CLI: literal yields)
    yield "Grad-CAM", GradCAM(model, **layer_cam)
    yield "RSI-Grad-CAM", RSIGradCAM(model, layer="block3_conv2", steps=50, **common)
    yield "RSI-Grad-CAM notebook", RSIGradCAM(model, layer="block3_conv2", steps=50, rule="trapezoid",
                                                     positive_units=True, **common)
    yield "Grad-CAM++", GradCAMPlusPlus(model, **layer_cam)
    yield "LayerCAM", LayerCAM(model, **layer_cam)
    yield "XGrad-CAM", XGradCAM(model, **layer_cam)
    yield "HiResCAM", HiResCAM(model, **layer_cam)
    yield "Eigen-CAM", EigenCAM(model, **layer_cam)
    # LRP on the VGG-style digits CNN (issue 27): z+ on the convolutions, ε on the Dense layers
    yield "LRP", LRP(model, composite="epsilon_plus", **common)


#: AUPC noise copies a step in the digits part (the paper: 50; ``make papers`` runs 50). With 4,
#: AUPC costs 720 forward passes per image and method instead of 9,000, which were most of the
#: demo's time (the demo classifier runs about 250 images a second at 64×64 on 2 cores).
DIGITS_AUPC_COPIES = 4


def evaluate(model, x, attributions, labels, masks, seed):
    """The papers' metrics, scaled to 64×64 images (AUPC windows of 6 px instead of 15 at 224,
    :data:`DIGITS_AUPC_COPIES` noise copies a step instead of 50).

    Returns the per-image values and the mean curves (AUPC, deletion, insertion) for plotting.
    """
    m = metrics
    aupc = m.aupc(model, x, attributions, target=labels, kernel_size=6, regions=30,
                  perturbations=DIGITS_AUPC_COPIES, seed=seed, verbose=0)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join("outputs", "demo"))
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--methods", default=None,
                        help="comma-separated method titles to run in both parts (default: all), "
                             "e.g. 'IG zero,Grad-CAM'")
    parser.add_argument("--photos", default=",".join(DEMO_PHOTOS),
                        help="comma-separated scikit-image photos for the ImageNet classifier, or 'none' "
                             f"(default: {','.join(DEMO_PHOTOS)}; {','.join(IMAGENET_PHOTOS)} have an ImageNet class)")
    parser.add_argument("--no-digits", action="store_true", help="leave out the digits-on-photos part")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="demo",
                        help="metric settings of the photos part: 'demo' (default, a few minutes), 'paper' "
                             "(the papers' exact protocol, about an hour on 2 cores) or 'quick' (tests)")
    args = parser.parse_args(argv)
    wanted = None if args.methods is None else {m.strip() for m in args.methods.split(",")}
    photos = [] if args.photos.strip().lower() == "none" else [p.strip() for p in args.photos.split(",") if p.strip()]
    if photos:
        import skimage.data

        unknown = [p for p in photos if p.startswith("_") or not callable(getattr(skimage.data, p, None))]
        if unknown:
            parser.error(f"argument --photos: not scikit-image photos: {', '.join(unknown)} (e.g. "
                         f"{','.join(IMAGENET_PHOTOS)}, or none). Received: --photos={args.photos!r}")

    start = _clock()
    if not args.no_digits:
        explain_digits(args, wanted)
    middle = _clock()
    if photos:
        explain_photos(args, photos, wanted)
    end = _clock()
    print(f"\ndemo finished: {_elapsed(start, end)} (digits {_elapsed(start, middle)}, photos {_elapsed(middle, end)})")


def _clock():
    return time.perf_counter(), time.process_time()


def _elapsed(start, end):
    return f"{end[0] - start[0]:.0f} s wall clock, {end[1] - start[1]:.0f} s CPU"


def explain_digits(args, wanted):
    """The digits-on-photos part: every method, the papers' metrics scaled to 64×64, ground-truth masks."""
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
    for title, method in methods(model):
        if wanted is not None and title not in wanted:
            continue
        start = time.perf_counter()
        expl = method.attribute(x, target=labels)
        seconds = time.perf_counter() - start
        attributions = np.asarray(expl)
        raw[title] = attributions
        began = time.perf_counter()
        scores, method_curves = evaluate(model, x, attributions, labels, masks, args.seed)
        metric_seconds = time.perf_counter() - began
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
        print(f"  {title:<20} {seconds:6.2f}s (metrics {metric_seconds:5.1f}s)  "
              + "  ".join(f"{k} {float(np.mean(v)):.3f}" for k, v in scores.items()))

    if not table:
        print("  (none of --methods is a method of this part)")
        return
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
                 "(SmoothTaylor: the Taylor reconstruction error; LRP: the conservation error |Σ R − f(x)| / |f(x)|). "
                 "AUPC: 30 windows of 6×6 px "
                 f"(the paper's 15×15 at 224 px, scaled), {DIGITS_AUPC_COPIES} noise copies a step (paper: 50; "
                 "`make papers`: 50), logit score. Deletion/insertion: softmax probability, "
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


# --------------------------------------------------------------------------- real photos, ImageNet

def superpixels(x, n_segments: int = 50):
    """``(N, H, W, 1)`` SLIC superpixels of photos in [0, 255] (KernelSHAP's features on the photos)."""
    return np.stack([segment(image / 255.0, "slic", {"n_segments": n_segments}) for image in x])[..., None]


def probabilities(model: keras.Model) -> keras.Model:
    """``model`` (logits) followed by a softmax: what RISE scores on the photos."""
    return keras.Model(model.input, keras.layers.Softmax()(model.output), name=f"{model.name}_softmax")


def quickshift_255(image):
    """lime's quickshift superpixels of a photo in [0, 255] (scikit-image reads float colours in [0, 1])."""
    return segment(image / 255.0, "quickshift")


def photo_methods(model, x=None):
    """(title, method) pairs for EfficientNet-Lite0 on RGB in [0, 255]: the digits part's methods
    at fewer steps and samples (:data:`PHOTO_SETTINGS`) and the perturbation methods (``x``: the
    photos, for KernelSHAP's superpixels); "IG zero" is the black image here.
    Adaptive noising is left out: each of its ~30 objective evaluations per image is a SmoothTaylor
    run, minutes per photo at 224 px on 2 cores."""
    common = dict(verbose=0)  # batch_size="auto"
    ig = dict(steps=32, rule="riemann_trapezoid", value_range=PHOTO_RANGE, **common)
    noisy = dict(ig, steps=8, n_baselines=4)
    cam = dict(layer=PHOTO_LAYER, **common)
    yield "Gradient", Gradient(model, **common)
    yield "Input x Gradient", InputXGradient(model, **common)
    yield "SmoothGrad", NoiseTunnel(Gradient(model, **common), nt_samples=16, noise_level=0.15,
                                           value_range=PHOTO_RANGE)
    yield "Guided backprop", GuidedBackprop(model, **common)
    yield "IG zero", IntegratedGradients(model, baseline="zero", **ig)
    yield "IG uniform x4", IntegratedGradients(model, baseline="uniform", **noisy)
    yield "IG gaussian x4", IntegratedGradients(model, baseline="gaussian", **noisy)
    yield "IG blur", IntegratedGradients(model, baseline="blur", **ig)
    yield "IG max-distance", IntegratedGradients(model, baseline="max_distance", **ig)
    yield "Guided IG", GuidedIntegratedGradients(model, baseline="zero", **ig)
    yield "SmoothTaylor", SmoothTaylor(model, roots=16, sigma=0.15, noise_scale="relative",
                                              value_range=PHOTO_RANGE, **common)
    yield "Grad-CAM", GradCAM(model, **cam)
    yield "RSI-Grad-CAM", RSIGradCAM(model, steps=16, value_range=PHOTO_RANGE, **cam)
    yield "RSI-Grad-CAM notebook", RSIGradCAM(model, steps=16, rule="trapezoid", positive_units=True,
                                                     value_range=PHOTO_RANGE, **cam)
    yield "Grad-CAM++", GradCAMPlusPlus(model, **cam)
    yield "LayerCAM", LayerCAM(model, **cam)
    yield "XGrad-CAM", XGradCAM(model, **cam)
    yield "HiResCAM", HiResCAM(model, **cam)
    yield "Eigen-CAM", EigenCAM(model, **cam)
    yield "Score-CAM", ScoreCAM(model, top_k=64, **cam)
    yield "DeepLift", DeepLift(model, baseline="zero", value_range=PHOTO_RANGE, **common)
    # perturbation methods: forward passes only, fewer samples than their papers (PHOTO_SETTINGS)
    yield "Occlusion", Occlusion(model, window=(32, 32), strides=(16, 16), baseline=0.0, **common)
    # RISE scores the class probability, as its paper (on the logits, 1,000 masks gave noise here)
    yield "RISE", RISE(probabilities(model), n_masks=PHOTO_SAMPLES["rise"], grid=7, p=0.5, **common)
    yield "LIME", Lime(model, segmentation=quickshift_255, n_samples=PHOTO_SAMPLES["lime"], **common)
    yield "KernelSHAP", KernelShap(model, feature_mask=superpixels(x) if x is not None else None,
                                          n_samples=PHOTO_SAMPLES["kernelshap"], baseline=0.0, **common)
    # Sobol indices of 6×6 cells from 16 designs (608 forward passes a photo; paper: 8×8, 32, PHOTO_SETTINGS)
    yield "Sobol", SobolAttribution(model, grid=PHOTO_SOBOL["grid"], n_designs=PHOTO_SOBOL["n_designs"], **common)
    # LRP (issue 27): every EfficientNet-Lite0 layer has a rule (BatchNorm merged, ReLU6, Add, depthwise)
    yield "LRP", LRP(model, composite="epsilon_plus", **common)
    yield "Adaptive-path IG", AdaptivePathIntegratedGradients(model, steps=32, value_range=PHOTO_RANGE, **common)
    # XRAI: PAIR's IG (black and white baselines) at 32 steps instead of 100, then its regions
    yield "XRAI", XRAI(model, steps=32, **common)


#: how the picture shows a method's map (the metrics and the .npz use the map as it is): RISE's map
#: sits on a constant floor E[f(x ⊙ m)] (its minimum is subtracted, as the paper's min–max display);
#: the other perturbation maps are signed score drops / weights, of which the picture shows the
#: positive part (evidence for the class: |map| would light up what argues against it as well)
DISPLAY = {"RISE": "minus its minimum", "Occlusion": "positive part", "LIME": "positive part",
           "KernelSHAP": "positive part"}


def displayed(title: str, attribution: np.ndarray) -> np.ndarray:
    """``attribution`` as the demo's picture shows it (:data:`DISPLAY`)."""
    how = DISPLAY.get(title)
    if how == "minus its minimum":
        return attribution - attribution.min()
    if how == "positive part":
        return np.maximum(attribution, 0)
    return attribution


def evaluate_photos(model, x, attributions, targets, protocol, seed):
    """Deletion, insertion (softmax probability of the top-1 class), AUPC (logit) and AUTVC at
    ``PROTOCOLS[protocol]``; per-image values and mean curves."""
    m, settings = metrics, PROTOCOLS[protocol]
    aupc = m.aupc(model, x, attributions, target=targets, kernel_size=settings["kernel_size"],
                  regions=settings["regions"], perturbations=settings["perturbations"], value_range=PHOTO_RANGE,
                  seed=seed, verbose=0)
    step = settings["pixels_per_step"]
    deletion = m.deletion(model, x, attributions, target=targets, pixels_per_step=step, verbose=0)
    insertion = m.insertion(model, x, attributions, target=targets, pixels_per_step=step, verbose=0)
    scores = {"AUPC": aupc.area, "AUTVC": m.autvc(attributions).area, "deletion": deletion.auc,
              "insertion": insertion.auc}
    curves = {"AUPC": aupc.curve.mean(axis=0), "deletion": deletion.curve.mean(axis=0),
              "insertion": insertion.curve.mean(axis=0)}
    return scores, curves


def explain_photos(args, photos, wanted):
    """The real-photo part: EfficientNet-Lite0 on scikit-image photos, every method, the papers' metrics."""
    from tfattr.data import EfficientNetLite0, decode_predictions, imagenet_photos
    from tfattr.errors import MissingDependencyError

    try:
        model = EfficientNetLite0()
    except MissingDependencyError as error:
        print(f"\nskipping the ImageNet photos: {error}")
        return
    x = imagenet_photos(photos)
    top = [row[0] for row in decode_predictions(model.predict(x, verbose=0), top=1)]
    targets = np.array([k for k, _, _ in top])
    settings = PROTOCOLS[args.protocol]
    print(f"\nexplaining {len(x)} scikit-image photos with EfficientNet-Lite0 (ImageNet): "
          + ", ".join(f"{p} → {name} {prob:.2f}" for p, (_, name, prob) in zip(photos, top))
          + f"; metrics: protocol '{args.protocol}' {settings}")

    tile = 160
    rows = [[viz.overlay(img, np.zeros(img.shape[:2]), alpha=0.0, value_range=PHOTO_RANGE, size=tile)] for img in x]
    titles = [[f"{p}: {name} {prob:.2f}"] for p, (_, name, prob) in zip(photos, top)]
    column_titles = ["photo: top-1 class, p"]
    table, raw, curves = [], {}, {}
    for title, method in photo_methods(model, x):
        if wanted is not None and title not in wanted:
            continue
        start = time.perf_counter()
        expl = method.attribute(x, target=targets)
        seconds = time.perf_counter() - start
        attributions = np.asarray(expl)
        raw[title] = attributions
        began = time.perf_counter()
        scores, method_curves = evaluate_photos(model, x, attributions, targets, args.protocol, args.seed)
        metric_seconds = time.perf_counter() - began
        for name, curve in method_curves.items():
            curves.setdefault(name, {})[title] = curve
        completeness = "" if expl.delta is None else f"{100 * float(np.median(expl.relative_delta)):.2f}"
        table.append([title, f"{seconds:.1f}", str(expl.gradients), completeness]
                     + [f"{float(np.mean(v)):.3f}" for v in scores.values()])
        column_titles.append(title)
        for i in range(len(x)):
            rows[i].append(viz.overlay(x[i], displayed(title, attributions[i]), value_range=PHOTO_RANGE, size=tile))
            titles[i].append(f"del {scores['deletion'][i]:.2f} ins {scores['insertion'][i]:.2f}")
        print(f"  {title:<22} {seconds:6.1f}s (metrics {metric_seconds:5.1f}s)  "
              + "  ".join(f"{k} {float(np.mean(v)):.3f}" for k, v in scores.items()), flush=True)
    if not table:
        print("  (none of --methods is a method of this part)")
        return

    os.makedirs(args.out, exist_ok=True)
    png = viz.save_png(os.path.join(args.out, "imagenet_attributions.png"),
                       viz.grid(rows, titles, column_titles=column_titles))
    shown = ["Gradient", "SmoothGrad", "IG zero", "IG blur", "Guided IG", "SmoothTaylor", "Grad-CAM", "RSI-Grad-CAM"]
    shown = [k for k in shown if k in curves["AUPC"]] or list(curves["AUPC"])
    step = settings["pixels_per_step"]
    panels = [viz.plot_curves({k: v for k, v in curves["AUPC"].items() if k in shown},
                              title=f"AUPC: logit / |f(x)| as 15x15 windows turn to noise, P = "
                                    f"{settings['perturbations']} (lower is better)",
                              xlabel="windows perturbed", ylabel="score"),
              viz.plot_curves({k: v for k, v in curves["deletion"].items() if k in shown},
                              title="Deletion: probability as top pixels are zeroed (lower is better)",
                              xlabel=f"steps of {step} pixels", ylabel="p"),
              viz.plot_curves({k: v for k, v in curves["insertion"].items() if k in shown},
                              title="Insertion: probability as top pixels return to the blur (higher is better)",
                              xlabel=f"steps of {step} pixels", ylabel="p")]
    curves_png = viz.save_png(os.path.join(args.out, "imagenet_curves.png"), np.concatenate(panels, axis=0))

    header = ("method", "seconds", "gradients", "completeness err %", "AUPC ↓", "AUTVC ↓", "deletion ↓",
              "insertion ↑")
    if args.protocol == "paper":
        protocol = ("the papers' protocol: AUPC 30 windows of 15×15 px, 50 noise copies a step; deletion/insertion "
                    "224 pixels a step")
    else:
        protocol = (f"protocol '{args.protocol}': AUPC {settings['regions']} windows of 15×15 px with "
                    f"{settings['perturbations']} noise cop{'y' if settings['perturbations'] == 1 else 'ies'} a step "
                    "(paper: 30 windows, 50 copies); "
                    f"deletion/insertion {step} pixels a step (paper: 224)")
    lines = [f"EfficientNet-Lite0 (ImageNet, offline) on {len(x)} scikit-image photos at 224×224: "
             + ", ".join(f"{p} → {name} ({prob:.2f})" for p, (_, name, prob) in zip(photos, top))
             + f". Explained class: the top-1. Fewer steps and samples than the papers: {PHOTO_SETTINGS}; "
             f"Grad-CAM and RSI-Grad-CAM at `{PHOTO_LAYER}` (7×7×1280); adaptive noising not run on these photos "
             f"(about 30 SmoothTaylor runs per image). Metrics: {protocol}.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    lines.append("")
    lines.append("Means over the photos. Completeness error: median |Σ attr − (f(x) − f(z))| / |f(x) − f(z)| on the "
                 "logit (SmoothTaylor: the Taylor reconstruction error; Grad-CAMs: at the layer; LRP: the "
                 "conservation error |Σ R − f(x)| / |f(x)|, near 100 % on EfficientNet-Lite0, as zennit's). "
                 "AUPC: the logit as a share of |f(x)|, noise U[0, 255]. Deletion: softmax probability as pixels "
                 "turn black; insertion: as they return onto a blurred copy. AUTVC: total variation over a Gaussian "
                 "pyramid of the map. Seconds: wall clock of the attribution alone on a shared 2-core machine. "
                 "Pictures: " + "; ".join(f"{k} {v}" for k, v in DISPLAY.items()) + " (the metrics: the map as it is).")
    text = "\n".join(lines) + "\n"
    md = _write_text(os.path.join(args.out, "imagenet_metrics.md"), text)
    npz = os.path.join(args.out, "imagenet_attributions.npz")
    _write_npz(npz, images=x, targets=targets, photos=np.array(photos),
               **{k.replace(" ", "_"): v for k, v in raw.items()})
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
