"""tfattr equals captum and pytorch-grad-cam on the same weights (issues 27 and 28).

The reference files in ``tests/data/references/`` are written by
``references/make_torch_references.py`` (run by hand where torch is installed; see
``docs/guides/references.md``). This file never imports torch: it rebuilds the networks in Keras
from the stored weights, checks that its logits are the stored torch logits, runs tfattr with the
options matching the reference's conventions and compares.

Bounds. Small networks (a VGG-style CNN and a ResNet block network, ≤ 6 layers, ≤ 200-term sums):
both sides compute in float32, summing the same terms in other orders, which stays within
depth · √n · eps32 ≈ 6 · 15 · 1.2e-7 ≈ 1e-5 of a map's scale; the bound is 1e-4 of each
example's largest reference value (``assert_float32_close``; measured ≤ 3e-6). EfficientNet-Lite0:
see ``LITE0_PIXELS`` and ``LITE0_CAMS`` (float16 storage of its pixel maps), and GradientShap's test
(gradients at points inside the path, where float32 rounding flips a few ReLU6 gates).
"""

import os

import keras
import numpy as np
import pytest
from conftest import assert_float32_close

import tfattr
from tfattr.methods.gradient_shap import GradientShap

DATA = os.path.join(os.path.dirname(__file__), "data", "references")
SMALL = ("vgg", "resnet")


def _load(name):
    with np.load(os.path.join(DATA, name + ".npz")) as data:
        return {k: data[k] for k in data.files}


def _weights(ref):
    found = {}
    for key, value in ref.items():
        if key.startswith("w/"):
            _, layer, index = key.split("/")
            found.setdefault(layer, {})[int(index)] = value
    return {layer: [arrays[i] for i in sorted(arrays)] for layer, arrays in found.items()}


def _vgg():
    L = keras.layers
    x = inputs = keras.Input((16, 16, 3))
    x = L.ReLU(name="relu1")(L.Conv2D(8, 3, padding="same", name="conv1")(x))
    x = L.ReLU(name="relu2")(L.Conv2D(8, 3, padding="same", name="conv2")(x))
    x = L.MaxPooling2D(2, name="pool1")(x)
    x = L.ReLU(name="relu3")(L.Conv2D(12, 3, padding="same", name="conv3")(x))
    x = L.MaxPooling2D(2, name="pool2")(x)
    x = L.ReLU(name="relu4")(L.Dense(16, name="dense1")(L.Flatten(name="flatten")(x)))
    return keras.Model(inputs, L.Dense(5, name="dense2")(x), name="vgg")


def _resnet():
    L = keras.layers

    def conv_bn(x, filters, name, stride=1):
        if stride == 2:  # torch's padding=1 on both sides (Keras' 'same' pads 0 before, 1 after)
            x = L.ZeroPadding2D(1, name=f"pad{name}")(x)
        x = L.Conv2D(filters, 3, strides=stride, padding="valid" if stride == 2 else "same", name=f"conv{name}")(x)
        return L.BatchNormalization(epsilon=1e-3, name=f"bn{name}")(x)

    x = inputs = keras.Input((16, 16, 3))
    x = L.ReLU(name="relu0")(conv_bn(x, 8, 0))
    y = L.ReLU(name="relu1")(conv_bn(x, 8, 1))
    x = L.ReLU(name="relu2")(L.Add(name="add1")([conv_bn(y, 8, 2), x]))
    y = L.ReLU(name="relu_mid")(conv_bn(x, 16, 3, stride=2))
    short = L.Conv2D(16, 1, strides=2, use_bias=False, name="short")(x)
    x = L.ReLU(name="relu3")(L.Add(name="add2")([conv_bn(y, 16, 4), short]))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(5, name="dense")(x), name="resnet")


def _model(name, ref):
    model = {"vgg": _vgg, "resnet": _resnet}[name]()
    for layer, arrays in _weights(ref).items():
        model.get_layer(layer).set_weights(arrays)
    return model


@pytest.fixture(scope="module", params=SMALL)
def small(request):
    ref = _load(request.param)
    model = _model(request.param, ref)
    return request.param, model, ref


def test_the_keras_networks_are_the_torch_networks(small):
    _, model, ref = small
    assert_float32_close(model(ref["x"]).numpy(), ref["logits"], relative=1e-5)


# ----------------------------------------------------------------------------- captum


def test_deeplift_equals_captum(small):
    _, model, ref = small
    expl = tfattr.DeepLift(model, baseline=ref["baseline"][None]).attribute(ref["x"], target=ref["targets"])
    assert_float32_close(expl.attributions, ref["deeplift"])


def test_deeplift_shap_equals_captum(small):
    _, model, ref = small
    expl = tfattr.DeepLiftShap(model, baselines=ref["baselines"]).attribute(ref["x"], target=ref["targets"])
    assert_float32_close(expl.attributions, ref["deeplift_shap"])


def test_deconvolution_equals_captum(small):
    _, model, ref = small
    expl = tfattr.Deconvolution(model).attribute(ref["x"], target=ref["targets"])
    assert_float32_close(expl.attributions, ref["deconvolution"])


def test_guided_gradcam_equals_captum(small):
    _, model, ref = small
    expl = tfattr.GuidedGradCAM(model, layer=str(ref["layer"])).attribute(ref["x"], target=ref["targets"])
    assert_float32_close(expl.attributions, ref["guided_gradcam"])


def test_gradient_shap_equals_captum_given_tfattrs_draws(small):
    _, model, ref = small
    samples, stdevs, seed = len(ref["shap_alpha"]), 0.1, 7
    drawn = GradientShap.draws(ref["x"].shape[1:], len(ref["baselines"]), samples, stdevs, seed)
    # the script handed captum these draws (its np.random/torch.normal replaced while it ran)
    np.testing.assert_array_equal(drawn["index"], ref["shap_index"])
    np.testing.assert_array_equal(drawn["alpha"], ref["shap_alpha"])
    np.testing.assert_array_equal(drawn["noise"], ref["shap_noise"])
    expl = tfattr.GradientShap(model, baselines=ref["baselines"], n_samples=samples, stdevs=stdevs,
                               seed=seed).attribute(ref["x"], target=ref["targets"])
    assert_float32_close(expl.attributions, ref["gradient_shap"])


# ----------------------------------------------------------------------------- pytorch-grad-cam

#: reference key → (tfattr class, options matching pytorch-grad-cam's conventions)
CAMS = {
    "gradcam": (tfattr.GradCAM, {}),
    "gradcamplusplus": (tfattr.GradCAMPlusPlus, {"convention": "pytorch-grad-cam"}),
    "xgradcam": (tfattr.XGradCAM, {}),
    "hirescam": (tfattr.HiResCAM, {}),
    "eigencam": (tfattr.EigenCAM, {}),
    "layercam": (tfattr.LayerCAM, {}),
    "scorecam": (tfattr.ScoreCAM, {}),
    "ablationcam": (tfattr.AblationCAM, {"ablation_value": 0.0}),
}


def _sign_corrected(maps):
    """pytorch-grad-cam's EigenCAM keeps LAPACK's sign of the component; tfattr flips each map so that its
    largest-magnitude value is positive (``get_2d_projection_with_sign_correction``'s rule)."""
    flat = maps.reshape(len(maps), -1)
    flip = np.abs(flat.min(axis=1)) > np.abs(flat.max(axis=1))
    return maps * np.where(flip, -1.0, 1.0)[:, None, None]


def _cam(name, ref, model, **options):
    cls, convention = CAMS[name]
    layer = str(ref["score_layer"] if name == "scorecam" and "score_layer" in ref else ref["layer"])
    return cls(model, layer=layer, **convention, **options).attribute(ref["x"], target=ref["targets"]).attributions


def _raw_reference(name, ref):
    raw = ref[f"{name}_raw"].astype(np.float64)
    return _sign_corrected(raw) if name == "eigencam" else raw


def _scaled_like_pytorch_grad_cam(ours, name, ref):
    """tfattr's ``relu=True, upsample=True`` map ``U`` put through pytorch-grad-cam's scalings: its ``cam(...)``
    min–max scales ``ReLU(raw)`` at the layer's resolution (``scale_cam_image``: ``(r − m)/(M − m + 1e-7)``),
    resizes, and min–max scales the mean over target layers again (``aggregate_multi_layers``). Resizing is
    affine-equivariant, so that output is ``(U − min U) / (max U − min U + 1e-7 · (M − m + 1e-7))``."""
    relu = np.maximum(ref[f"{name}_raw"].astype(np.float64), 0.0)
    first = relu.max(axis=(1, 2)) - relu.min(axis=(1, 2)) + 1e-7
    low, high = ours.min(axis=(1, 2)), ours.max(axis=(1, 2))
    return (ours - low[:, None, None]) / (high - low + 1e-7 * first)[:, None, None]


@pytest.mark.parametrize("name", list(CAMS))
def test_cam_raw_map_equals_pytorch_grad_cam(small, name):
    """The map before ReLU at the layer's resolution (what pytorch-grad-cam's ``get_cam_image`` returns)."""
    _, model, ref = small
    ours = _cam(name, ref, model, relu=False, upsample=False)
    assert_float32_close(ours, _raw_reference(name, ref), err_msg=name)


@pytest.mark.parametrize("name", [n for n in CAMS if n != "eigencam"])
def test_cam_upsampled_map_scaled_as_pytorch_grad_cam_equals_its_output(small, name):
    """tfattr's default map (ReLU, bilinear upsampling with half-pixel centres) against ``cam(...)``'s
    (ReLU, min–max scaling, ``cv2.resize`` INTER_LINEAR, also half-pixel centres, min–max scaling again),
    ours scaled as theirs.
    (Eigen-CAM's raw map differs by the sign convention only; its ReLU'd map is then another map.)"""
    _, model, ref = small
    ours = _cam(name, ref, model)
    assert ours.shape == ref[f"{name}_default"].shape
    assert_float32_close(_scaled_like_pytorch_grad_cam(ours, name, ref), ref[f"{name}_default"], err_msg=name)


def test_score_cam_align_corners_masks_equal_pytorch_grad_cam_at_a_coarser_layer(small):
    """At a layer coarser than the input pytorch-grad-cam upsamples Score-CAM's masks with aligned corners:
    ``mask_upsampling="align_corners"`` equals it; tfattr's default (half-pixel centres) is another map."""
    _, model, ref = small
    layer = str(ref["layer"])
    reference = ref["scorecam_coarse_raw"].astype(np.float64)
    aligned = tfattr.ScoreCAM(model, layer=layer, mask_upsampling="align_corners", relu=False, upsample=False)
    assert_float32_close(aligned.attribute(ref["x"], target=ref["targets"]).attributions, reference)
    default = tfattr.ScoreCAM(model, layer=layer, relu=False, upsample=False)
    ours = default.attribute(ref["x"], target=ref["targets"]).attributions
    gap = np.abs(ours - reference).reshape(len(ours), -1).max(axis=1)
    assert np.all(gap > 1e-3 * np.abs(reference).reshape(len(ours), -1).max(axis=1))


# ----------------------------------------------------------------------------- EfficientNet-Lite0

#: EfficientNet-Lite0 (≈ 50 layers, sums over up to 1280 channels, inputs in [0, 255]). Pixel maps (and
#: pytorch-grad-cam's 224×224 output) are stored in float16, which rounds by up to 2⁻¹¹ ≈ 4.9e-4 of a
#: value (so of the scale); the float32 computations add far less (the logits agree to 5e-7 of their
#: scale). Bound for those: 2e-3 of each example's largest reference value (measured ≤ 3.4e-4, see
#: docs/guides/references.md). The CAMs' raw maps (7×7, float32): 2e-4 (measured ≤ 1.8e-5).
LITE0_PIXELS = 2e-3
LITE0_CAMS = 2e-4

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def lite0_ref(lite0):
    ref = _load("efficientnet_lite0")
    ref["x"] = ref["x"].astype(np.float32)
    return lite0, ref


@slow
def test_lite0_keras_logits_are_the_torch_packages(lite0_ref):
    model, ref = lite0_ref
    assert_float32_close(model(ref["x"]).numpy(), ref["logits"], relative=1e-4)
    assert list(ref["logits"].argmax(axis=1)) == [285, 967]  # Egyptian cat, espresso: the explained classes


@slow
def test_lite0_deeplift_and_deeplift_shap_equal_captum(lite0_ref):
    model, ref = lite0_ref
    target = ref["targets"]
    expl = tfattr.DeepLift(model, baseline=ref["baseline"][None].astype(np.float32)).attribute(ref["x"], target=target)
    assert_float32_close(expl.attributions, ref["deeplift"], relative=LITE0_PIXELS, err_msg="deeplift")
    expl = tfattr.DeepLiftShap(model, baselines=ref["baselines"].astype(np.float32)).attribute(ref["x"], target=target)
    assert_float32_close(expl.attributions, ref["deeplift_shap"], relative=LITE0_PIXELS, err_msg="deeplift_shap")


@slow
def test_lite0_gradient_shap_equals_captum_but_at_the_pixels_of_flipped_relu6_gates(lite0_ref):
    """GradientShap is made of plain gradients at points ``b + α (x − b)`` inside the path, where a 50-layer
    ReLU6 network has units within float32 rounding of 0 or 6: the two frameworks' rounding (captum also
    rounds α to float32) flips some of those gates and changes the gradient of a few pixels by a sizeable
    part of the scale. Measured: relative L2 error ≤ 0.7 %, 99.9th percentile of the error ≤ 0.4 % of the
    scale, largest error 3.3 % (110 of 150 528 values above 0.5 %). Bounds: relative L2 ≤ 2 %, 99.9th
    percentile ≤ 1.5 % of the scale — a wrong draw, sign or factor is off by tens of percent."""
    model, ref = lite0_ref
    baselines = ref["baselines"].astype(np.float32)
    drawn = GradientShap.draws(ref["x"].shape[1:], len(baselines), len(ref["shap_alpha"]), 0.0, 7)
    np.testing.assert_array_equal(drawn["index"], ref["shap_index"])
    np.testing.assert_array_equal(drawn["alpha"], ref["shap_alpha"])
    expl = tfattr.GradientShap(model, baselines=baselines, n_samples=len(ref["shap_alpha"]), seed=7).attribute(
        ref["x"], target=ref["targets"])
    ours, theirs = expl.attributions.reshape(2, -1), ref["gradient_shap"].astype(np.float64).reshape(2, -1)
    error = np.abs(ours - theirs)
    assert np.all(np.linalg.norm(ours - theirs, axis=1) <= 2e-2 * np.linalg.norm(theirs, axis=1))
    assert np.all(np.quantile(error, 0.999, axis=1) <= 1.5e-2 * np.abs(theirs).max(axis=1))


@slow
def test_lite0_deconvolution_and_guided_gradcam_equal_captum(lite0_ref):
    model, ref = lite0_ref
    expl = tfattr.Deconvolution(model).attribute(ref["x"], target=ref["targets"])
    assert_float32_close(expl.attributions, ref["deconvolution"], relative=LITE0_PIXELS, err_msg="deconvolution")
    expl = tfattr.GuidedGradCAM(model, layer=str(ref["layer"])).attribute(ref["x"], target=ref["targets"])
    assert_float32_close(expl.attributions, ref["guided_gradcam"], relative=LITE0_PIXELS, err_msg="guided_gradcam")


@slow
@pytest.mark.parametrize("name", [n for n in CAMS if n != "scorecam"])
def test_lite0_cam_equals_pytorch_grad_cam(lite0_ref, name):
    """The raw maps (7×7 at ``top_activation``) of every CAM; the upsampled, scaled output for Grad-CAM
    (the ReLU/upsampling is the same code for every CAM, compared one by one on the small networks).
    Score-CAM (1280 masked 224×224 passes per image) is compared on the small networks only."""
    model, ref = lite0_ref
    raw = _cam(name, ref, model, relu=False, upsample=False)
    assert_float32_close(raw, _raw_reference(name, ref), relative=LITE0_CAMS, err_msg=name)
    if name == "gradcam":
        up = _scaled_like_pytorch_grad_cam(_cam(name, ref, model), name, ref)
        assert_float32_close(up, ref[f"{name}_default"], relative=LITE0_PIXELS, err_msg=name)
