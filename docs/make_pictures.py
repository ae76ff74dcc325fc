"""Render the per-method pictures of the docs (docs/img/methods/*.jpg) from the demo's photos.

    PYTHONPATH=. python examples/demo.py --out /tmp/demo_out          # writes imagenet_attributions.npz
    PYTHONPATH=. python docs/make_pictures.py --demo /tmp/demo_out

Each picture is one row of the demo's three photos (chelsea, coffee, rocket) explained by EfficientNet-Lite0
(ImageNet, top-1 class), the map blended over the photo with :func:`tfattr.viz.show_grid`. The maps are the
demo's own (its ``imagenet_attributions.npz``, same settings as its table); the two layer methods, which the
demo does not run, are computed here at the layer ``top_activation`` (7×7×1280, summed over channels and
upsampled), LayerIntegratedGradients and LayerConductance with 16 trapezoid steps from a black image; the
two path methods the demo does not run either, AdaptivePathIntegratedGradients (PAIR's GuidedIG, 64 steps from
a black image) and XRAI (PAIR's IG, 50 steps, black + white baselines), are computed here too.
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tfattr import viz  # noqa: E402

# page slug -> (demo column(s), method of show, sign)
FROM_DEMO = {
    "gradient": (["Gradient"], "absolute_value"),
    "input-x-gradient": (["Input_x_Gradient"], "absolute_value"),
    "integrated-gradients": (["IG_zero", "IG_blur", "IG_uniform_x4"], "absolute_value"),
    "guided-integrated-gradients": (["Guided_IG"], "absolute_value"),
    "guided-backprop": (["Guided_backprop"], "absolute_value"),
    "noise-tunnel": (["SmoothGrad"], "absolute_value"),
    "smooth-taylor": (["SmoothTaylor"], "absolute_value"),
    "gradcam": (["Grad-CAM"], "positive"),
    "rsi-gradcam": (["RSI-Grad-CAM", "RSI-Grad-CAM_notebook"], "positive"),
    "gradcam-plus-plus": (["Grad-CAM++"], "positive"),
    "layercam": (["LayerCAM"], "positive"),
    "xgradcam": (["XGrad-CAM"], "positive"),
    "hirescam": (["HiResCAM"], "positive"),
    "eigencam": (["Eigen-CAM"], "positive"),
}


def _save(fig, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.jpg"
    fig.savefig(tmp, dpi=72, pil_kwargs={"quality": 80})
    os.replace(tmp, path)
    print("wrote", path, os.path.getsize(path) // 1024, "KiB")


def _figure(images, maps, sign, titles):
    fig, _ = viz.show_grid(images, maps, method="blended_heat_map", sign=sign, value_range=(0, 255), alpha=0.6,
                           row_titles=titles, tile=1.9)
    return fig


def layer_maps(images, targets):
    """LayerIntegratedGradients and LayerConductance at top_activation, channel sums upsampled to 224."""
    import tfattr
    from tfattr.data import EfficientNetLite0

    model = EfficientNetLite0()
    out = {}
    for name, method in [("LayerIntegratedGradients", tfattr.LayerIntegratedGradients(
            model, layer="top_activation", steps=16, rule="riemann_trapezoid", verbose=0)),
                         ("LayerConductance", tfattr.LayerConductance(model, layer="top_activation", steps=16,
                                                                      verbose=0))]:
        a = np.asarray(method.attribute(images, target=targets)).sum(axis=-1)
        out[name] = np.stack([cv2.resize(m.astype(np.float32), images.shape[1:3], interpolation=cv2.INTER_LINEAR)
                              for m in a])
    return out


def path_maps(images, targets):
    """AdaptivePathIntegratedGradients (64 steps, black baseline; summed |·| over channels by the grid) and
    XRAI (its region maps) on EfficientNet-Lite0."""
    import tfattr
    from tfattr.data import EfficientNetLite0

    model = EfficientNetLite0()
    apig = tfattr.AdaptivePathIntegratedGradients(model, steps=64, verbose=0).attribute(images, target=targets)
    xrai = tfattr.XRAI(model, steps=50, verbose=0).attribute(images, target=targets)
    return {"AdaptivePathIntegratedGradients": np.asarray(apig.attributions), "XRAI": np.asarray(xrai.attributions)}


# --------------------------------------------------------------------------- the gallery at full settings
#: Each entry: slug -> (function(model, x, targets) -> {title: maps}, show's sign, how the map is shown).
#: Computed here at the method's default (full) settings on the demo's photos, not read from the demo.


def _superpixels(x, n_segments=50):
    from tfattr.methods.lime import segment

    return np.stack([segment(image / 255.0, "slic", {"n_segments": n_segments}) for image in x])[..., None]


def _quickshift_255(image):
    from tfattr.methods.lime import segment

    return segment(image / 255.0, "quickshift")


def _reference_images(x, k=8, seed=0):
    """A black image and ``k − 1`` uniform-noise images in [0, 255] (GradientShap's / DeepLiftShap's references)."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0.0, 255.0, size=(k - 1,) + x.shape[1:]).astype(np.float32)
    return np.concatenate([np.zeros((1,) + x.shape[1:], np.float32), noise])


def _probabilities(model):
    import keras

    return keras.Model(model.input, keras.layers.Softmax()(model.output), name=f"{model.name}_softmax")


def _gallery():
    import tfattr

    common = dict(verbose=0)
    photo = (0.0, 255.0)
    entries = {
        "occlusion": (lambda m, x, t: {"occlusion 15×15 / 8": tfattr.Occlusion(m, **common).attribute(x, target=t)},
                      "positive"),
        "feature-ablation": (lambda m, x, t: {"ablation, 50 SLIC": tfattr.FeatureAblation(
            m, feature_mask=_superpixels(x), **common).attribute(x, target=t)}, "positive"),
        "rise": (lambda m, x, t: {"RISE 4000 masks": _minus_min(tfattr.RISE(_probabilities(m), **common).attribute(
            x, target=t))}, "positive"),
        "kernel-shap": (lambda m, x, t: {"KernelSHAP, 50 SLIC": tfattr.KernelShap(
            m, feature_mask=_superpixels(x), **common).attribute(x, target=t)}, "positive"),
        "shapley-value-sampling": (lambda m, x, t: {"Shapley, 50 SLIC": tfattr.ShapleyValueSampling(
            m, feature_mask=_superpixels(x), **common).attribute(x, target=t)}, "positive"),
        "lime": (lambda m, x, t: {"LIME, quickshift": tfattr.Lime(m, segmentation=_quickshift_255, **common)
                                  .attribute(x, target=t)}, "positive"),
        "sobol": (lambda m, x, t: {"Sobol total": tfattr.SobolAttribution(m, **common).attribute(x, target=t),
                                   "HSIC": tfattr.HsicAttribution(_probabilities(m), **common).attribute(
                                       x, target=t)}, "positive"),
        "score-cam": (lambda m, x, t: {"Score-CAM, all 1280": tfattr.ScoreCAM(
            m, layer="top_activation", **common).attribute(x, target=t)}, "positive"),
        "ablation-cam": (lambda m, x, t: {"Ablation-CAM": tfattr.AblationCAM(
            m, layer="top_activation", **common).attribute(x, target=t)}, "positive"),
        "gradient-shap": (lambda m, x, t: {"GradientSHAP": tfattr.GradientShap(
            m, baselines=_reference_images(x), **common).attribute(x, target=t)}, "absolute_value"),
        "blur-integrated-gradients": (lambda m, x, t: {"blur IG": tfattr.BlurIntegratedGradients(m, **common)
                                                       .attribute(x, target=t)}, "absolute_value"),
        "deconvolution": (lambda m, x, t: {"deconvolution": tfattr.Deconvolution(m, **common).attribute(
            x, target=t)}, "absolute_value"),
        "guided-gradcam": (lambda m, x, t: {"Guided Grad-CAM": tfattr.GuidedGradCAM(
            m, layer="top_activation", **common).attribute(x, target=t)}, "absolute_value"),
        "deeplift": (lambda m, x, t: {"DeepLift (black)": tfattr.DeepLift(m, value_range=photo, **common).attribute(
            x, target=t), "DeepLiftShap": tfattr.DeepLiftShap(m, baselines=_reference_images(x), **common)
            .attribute(x, target=t)}, "absolute_value"),
        "lrp": (lambda m, x, t: {"LRP epsilon_plus": tfattr.LRP(m, composite="epsilon_plus", **common).attribute(
            x, target=t)}, "all"),
    }
    return entries


def _minus_min(expl):
    """RISE's map sits on a constant floor E[f(x ⊙ m)]: its per-image minimum is subtracted (the paper's min–max
    display) before the picture."""
    a = np.asarray(expl)
    return a - a.min(axis=tuple(range(1, a.ndim)), keepdims=True)


def gallery(names, out):
    """Render the pages in ``names`` (slugs of :func:`_gallery`, and "lrp-digits") from scratch."""
    import time

    from tfattr.data import EfficientNetLite0, decode_predictions, imagenet_photos

    entries = _gallery()
    photos = ["chelsea", "coffee", "rocket"]
    model = x = targets = None
    for slug in names:
        if slug == "lrp-digits":
            lrp_digits(out)
            continue
        if slug == "feature-permutation":
            permutation_bars(out)
            continue
        function, sign = entries[slug]
        if model is None:
            model = EfficientNetLite0()
            x = imagenet_photos(photos)
            top = [row[0] for row in decode_predictions(model.predict(x, verbose=0), top=1)]
            targets = np.array([k for k, _, _ in top])
        start = time.perf_counter()
        maps = {title: np.asarray(value) for title, value in function(model, x, targets).items()}
        seconds = time.perf_counter() - start
        print(f"{slug}: {seconds:.0f} s", flush=True)
        _save(_figure(x, maps, sign, photos), os.path.join(out, slug + ".jpg"))


def lrp_digits(out):
    """LRP (epsilon, epsilon_plus, epsilon_gamma_box) on the demo's digits CNN (VGG-style), three test images."""
    import time

    import keras

    import tfattr
    from tfattr.core.assets import DEMO_MODEL, asset_path
    from tfattr.data import digits_on_photos
    from tfattr.demo import logits_of as logits_model

    model = logits_model(keras.models.load_model(asset_path(DEMO_MODEL)))
    data = digits_on_photos(3, split="test", seed=0)
    x, labels = data["image"], data["label"]
    start = time.perf_counter()
    maps = {}
    for composite, extra in [("epsilon", {}), ("epsilon_plus", {}), ("epsilon_gamma_box", dict(low=0.0, high=1.0))]:
        maps[composite] = np.asarray(tfattr.LRP(model, composite=composite, verbose=0, **extra).attribute(
            x, target=labels))
    print(f"lrp-digits: {time.perf_counter() - start:.0f} s", flush=True)
    fig, _ = viz.show_grid(x, maps, method="blended_heat_map", sign="all", value_range=(0, 1), alpha=0.6,
                           row_titles=[f"digit {k}" for k in labels], tile=1.9)
    _save(fig, os.path.join(out, "lrp-digits.jpg"))


def permutation_bars(out):
    """FeaturePermutation on a small tabular model: scikit-learn's diabetes table (442 rows, 10 standardised
    features), a 16-unit ReLU MLP fitted here (seed 0, 300 full-batch Adam epochs), 8 permutations per feature;
    bars: the mean |drop| per feature over the table."""
    import time

    import keras
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_diabetes

    import tfattr

    data = load_diabetes()
    x = ((data.data - data.data.mean(0)) / data.data.std(0)).astype(np.float32)
    y = ((data.target - data.target.mean()) / data.target.std()).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(x, y, epochs=300, batch_size=len(x), verbose=0)
    start = time.perf_counter()
    expl = tfattr.FeaturePermutation(model, n_permutations=8, seed=0, verbose=0).attribute(x, target=0)
    print(f"feature-permutation: {time.perf_counter() - start:.0f} s", flush=True)
    importance = np.abs(np.asarray(expl)).mean(axis=0)
    order = np.argsort(importance)
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    ax.barh(np.array(data.feature_names)[order], importance[order], color="#b2182b")
    ax.set_xlabel("mean |score drop| (standardised target)")
    ax.set_title("FeaturePermutation, diabetes MLP", fontsize=9)
    fig.tight_layout()
    _save(fig, os.path.join(out, "feature-permutation.jpg"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="/tmp/demo_out", help="the demo's --out folder")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "img", "methods"))
    parser.add_argument("--no-layer", action="store_true", help="skip the two layer methods (they load the model)")
    parser.add_argument("--no-path", action="store_true", help="skip adaptive-path IG and XRAI (they load the model)")
    parser.add_argument("--only-path", action="store_true", help="render adaptive-path IG and XRAI only")
    parser.add_argument("--only", default=None,
                        help="comma-separated gallery pages to render at full settings, from scratch (no --demo): "
                             "occlusion, feature-ablation, rise, kernel-shap, shapley-value-sampling, lime, sobol, "
                             "score-cam, ablation-cam, gradient-shap, blur-integrated-gradients, deconvolution, "
                             "guided-gradcam, deeplift, lrp, lrp-digits")
    args = parser.parse_args(argv)
    if args.only:
        gallery([name.strip() for name in args.only.split(",") if name.strip()], args.out)
        return
    data = np.load(os.path.join(args.demo, "imagenet_attributions.npz"))
    images, photos = data["images"], [str(p) for p in data["photos"]]
    if not args.no_path:
        maps = path_maps(images, data["targets"])
        for slug, name, title, sign in [("adaptive-path-integrated-gradients", "AdaptivePathIntegratedGradients",
                                         "GuidedIG (PAIR)", "absolute_value"), ("xrai", "XRAI", "XRAI", "positive")]:
            _save(_figure(images, {title: maps[name]}, sign, photos), os.path.join(args.out, slug + ".jpg"))
    if args.only_path:
        return
    for slug, (columns, sign) in FROM_DEMO.items():
        fig = _figure(images, {c.replace("_", " "): data[c] for c in columns}, sign, photos)
        _save(fig, os.path.join(args.out, slug + ".jpg"))
    if not args.no_layer:
        maps = layer_maps(images, data["targets"])
        for slug, name, title in [("layer-integrated-gradients", "LayerIntegratedGradients", "layer IG"),
                                  ("layer-conductance", "LayerConductance", "conductance")]:
            _save(_figure(images, {title: maps[name]}, "all", photos),
                  os.path.join(args.out, slug + ".jpg"))


if __name__ == "__main__":
    main()
