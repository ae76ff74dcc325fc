"""tfattr equals captum and pytorch-grad-cam on the same weights (issues 27 and 28).

The reference files in ``tests/data/references/`` are written by
``references/make_torch_references.py`` (run by hand where torch is installed; see
``docs/guides/references.md``). This file never imports torch: it rebuilds the networks in Keras
from the stored weights, checks that its logits are the stored torch logits, runs tfattr with the
options matching the reference's conventions and compares.

Bounds. Small networks (a VGG-style CNN and a ResNet block network, ≤ 6 layers, ≤ 200-term sums):
both sides compute in float32, summing the same terms in other orders, which stays within
depth · √n · eps32 ≈ 6 · 15 · 1.2e-7 ≈ 1e-5 of a map's scale; the bound is 1e-4 of each
example's largest reference value (``assert_float32_close``: margin ≈ 10). EfficientNet-Lite0
(≈ 50 layers, 1280-channel sums, and maps stored in float16, whose rounding is ≤ 2⁻¹¹ of a value
≈ 5e-4 relative): 5e-3 of the scale for pixel maps and 2e-3 for the layer-resolution maps
(stored in float32) — see each test.
"""

import os

import keras
import numpy as np
import pytest

import tfattr
from conftest import assert_float32_close
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
