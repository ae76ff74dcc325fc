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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default="/tmp/demo_out", help="the demo's --out folder")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "img", "methods"))
    parser.add_argument("--no-layer", action="store_true", help="skip the two layer methods (they load the model)")
    parser.add_argument("--no-path", action="store_true", help="skip adaptive-path IG and XRAI (they load the model)")
    parser.add_argument("--only-path", action="store_true", help="render adaptive-path IG and XRAI only")
    args = parser.parse_args(argv)
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
