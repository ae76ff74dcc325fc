"""value_range: inputs outside it warn once per call; keras_application models and the CLI pass the right one."""

import warnings

import cv2
import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

import tfattr
import tfattr.data
from tfattr import Gradient, IntegratedGradients, NoiseTunnel, RSIGradCAM, SmoothTaylor, adaptive_noising, metrics
from tfattr.core.ranges import range_tolerance, resolve_value_range
from tfattr.errors import ValueRangeWarning


def value_range_warnings(caught):
    return [w for w in caught if issubclass(w.category, ValueRangeWarning)]


def sigma_objective(images, attributions, sigmas, seed, target):
    return (np.asarray(sigmas) - 0.2) ** 2


@pytest.fixture(scope="module")
def range_users(relu_cnn):
    """Every public call that draws noise or baselines in ``value_range`` (default range), as
    ``name -> call(x)``; the methods are built once so their compiled engines are reused."""
    ig_uniform = IntegratedGradients(relu_cnn, baseline="uniform", steps=2)
    ig_black = IntegratedGradients(relu_cnn, baseline="black", steps=2)
    rsi = RSIGradCAM(relu_cnn, baseline="max_distance", steps=2)
    relative = SmoothTaylor(relu_cnn, roots=2, sigma=0.1, noise_scale="relative")
    adaptive = SmoothTaylor(relu_cnn, roots=2, sigma="adaptive", objective=sigma_objective)
    tunnel = NoiseTunnel(Gradient(relu_cnn), nt_samples=2)
    inner = NoiseTunnel(IntegratedGradients(relu_cnn, baseline="black", steps=2), nt_samples=2, stdevs=0.1)
    return {
        "IG uniform": lambda x: ig_uniform.attribute(x, target=0),
        "IG black": lambda x: ig_black.attribute(x, target=0),
        "RSI-Grad-CAM max_distance": lambda x: rsi.attribute(x, target=0),
        "SmoothTaylor relative": lambda x: relative.attribute(x, target=0),
        "SmoothTaylor adaptive": lambda x: adaptive.attribute(x, target=0),
        "adaptive_noising": lambda x: adaptive_noising(relative, x, objective=sigma_objective, roots=2, i_max=3),
        "NoiseTunnel": lambda x: tunnel.attribute(x, target=0),
        "NoiseTunnel(IG black), stdevs given": lambda x: inner.attribute(x, target=0),
        "AUPC": lambda x: metrics.aupc(relu_cnn, x, np.ones_like(x), target=0, kernel_size=3, regions=2,
                                       perturbations=2, verbose=0),
    }


def test_images_in_0_255_with_the_default_range_warn_once_per_call_naming_value_range(range_users, images):
    x = (images * 255).astype(np.float32)
    for name, call in range_users.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call(x)
        found = value_range_warnings(caught)
        assert len(found) == 1, (name, [str(w.message) for w in found])  # once, also where the call loops
        message = str(found[0].message)
        assert issubclass(found[0].category, UserWarning)
        assert "value_range" in message and "=(0, 1)" in message, (name, message)
        assert f"min {x.min():.6g}, max {x.max():.6g}" in message, (name, message)
        assert "pass value_range=(0, 255)" in message and message.endswith("value_range=(0.0, 1.0)")
        assert found[0].filename == __file__, name  # points at the caller's line


def test_in_range_images_and_rounding_do_not_warn(range_users, relu_cnn, images):
    x255 = (images * 255).astype(np.float32)
    ig_uniform = IntegratedGradients(relu_cnn, baseline="uniform", steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for call in range_users.values():
            call(images)
        # rounding at the ends: one float32 ulp, 5e-4 of the range (a resampling overshoot)
        nudged = images.copy()
        nudged[0, 0, 0, 0], nudged[0, 0, 0, 1] = np.nextafter(np.float32(1), np.float32(2)), -5e-4
        ig_uniform.attribute(nudged, target=0)
        ig_uniform.attribute(x255, target=0, value_range=(0, 255))
        metrics.aupc(relu_cnn, x255, x255, target=0, kernel_size=3, regions=2, perturbations=2, value_range=(0, 255),
                     verbose=0)
        # calls whose result does not depend on the range do not warn about it
        ig_uniform.attribute(x255, target=0, baseline="zero")
        SmoothTaylor(relu_cnn, roots=2, sigma=3.0).attribute(x255, target=0)
        Gradient(relu_cnn).attribute(x255, target=0)
    # one grey level outside [0, 1] is more than rounding
    beyond = images.copy()
    beyond[0, 0, 0, 0] = 1 + 1 / 255
    with pytest.warns(ValueRangeWarning, match=r"observed min [0-9.e-]+, max 1\.00392"):
        ig_uniform.attribute(beyond, target=0)
    assert range_tolerance((0.0, 1.0), "float32") == 1e-3
    assert range_tolerance((0.0, 255.0), "bfloat16") == 255 * 2.0**-7  # bfloat16 rounds 255 to steps of 1


def test_noise_tunnel_warns_for_the_wrapped_methods_range():
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    x = np.full((1, 4, 4, 3), 100.0, np.float32)
    tunnel = NoiseTunnel(IntegratedGradients(model, baseline="uniform", steps=2), nt_samples=2, value_range=(0, 255))
    with pytest.warns(ValueRangeWarning, match=r"`IntegratedGradients's value_range`=\(0, 1\)"):
        tunnel.attribute(x, target=0)
    # without a range of its own the tunnel takes the wrapped method's
    assert NoiseTunnel(IntegratedGradients(model, value_range=(0, 255))).config["sigma"] == pytest.approx(0.15 * 255)


def pixel_model(relu_cnn):
    """A model on RGB in [0, 255] that declares it, as keras_application's do (small, for speed)."""
    inputs = keras.Input(relu_cnn.input_shape[1:])
    model = keras.Model(inputs, relu_cnn(keras.layers.Rescaling(1 / 255)(inputs)))
    model.tfattr_value_range = (0.0, 255.0)
    return model


def test_keras_application_models_declare_their_range_and_methods_take_it(relu_cnn, images):
    model = tfattr.data.keras_application("vgg16", weights=None, input_size=32)
    assert model.tfattr_value_range == (0.0, 255.0)
    assert resolve_value_range(None, model) == (0.0, 255.0)
    assert IntegratedGradients(model).config["value_range"] == (0.0, 255.0)
    assert SmoothTaylor(model).config["value_range"] == (0.0, 255.0)
    assert NoiseTunnel(Gradient(model)).config["sigma"] == pytest.approx(0.15 * 255)  # 15% of [0, 255]
    assert IntegratedGradients(model, value_range=(0, 1)).config["value_range"] == (0.0, 1.0)  # explicit wins
    declared = pixel_model(relu_cnn)
    x = (images * 255).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ValueRangeWarning)
        expl = NoiseTunnel(Gradient(declared), nt_samples=2).attribute(x, target=0)
        metrics.aupc(declared, x, np.asarray(expl), target=0, kernel_size=3, regions=2, perturbations=2, verbose=0)
        IntegratedGradients(declared, baseline="uniform", steps=2).attribute(x, target=0)
    assert expl.info["stdevs"] == pytest.approx(0.15 * 255)


@pytest.fixture
def small_application(monkeypatch, relu_cnn):
    """``--model vgg19`` gets a small model on RGB in [0, 255] (no download, fast)."""
    monkeypatch.setattr(tfattr.data, "keras_application", lambda name, weights=None, **kw: pixel_model(relu_cnn))


@pytest.mark.parametrize("method, key", [("smoothtaylor", "sigma"), ("smoothgrad", "stdevs")])
def test_cli_explain_on_a_keras_application_draws_noise_on_the_0_255_scale(small_application, monkeypatch, tmp_path,
                                                                          method, key):
    from tfattr.cli import main
    from tfattr.methods.base import AttributionMethod

    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    seen = []
    package = AttributionMethod._package

    def recording(self, out, *args, **kwargs):
        seen.append(dict(out.get("info", {})))
        return package(self, out, *args, **kwargs)

    monkeypatch.setattr(AttributionMethod, "_package", recording)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ValueRangeWarning)
        assert main(["explain", "--model", "vgg19", "--weights", "none", "--images", str(path), "--method",
                     method, "--sigma", "0.15", "--samples", "2", "--roots", "2", "--out", str(tmp_path / "out")]) == 0
    assert np.allclose(seen[-1][key], 0.15 * 255)  # 15% of the [0, 255] pixel range, not of [0, 1]


def test_cli_evaluate_scales_imagenette_pixels_into_the_models_range(monkeypatch, tmp_path, relu_cnn):
    """Imagenette comes as RGB in [0, 255]; a .keras model on [0, 1] gets them in [0, 1]."""
    import tfattr.evaluation
    from tfattr.cli import main

    path = tmp_path / "model.keras"
    relu_cnn.save(path)
    handed = {}

    def capture(model, images, methods, value_range=(0.0, 1.0), **kwargs):
        handed.update(images=images, value_range=value_range)
        return []

    monkeypatch.setattr(tfattr.evaluation, "evaluate", capture)
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        assert main(["evaluate", "--model", str(path), "--dataset", "imagenette", "--images", "3", "--methods",
                     "gradient", "--out", str(tmp_path / "out")]) == 0
    low, high = handed["value_range"]
    assert (low, high) == (0.0, 1.0)
    assert handed["images"].min() >= low and handed["images"].max() <= high
    assert handed["images"].max() > 0.5  # mock images span the pixel range: scaled, not clipped


def test_evaluate_takes_the_models_declared_range(relu_cnn, images):
    """evaluate(value_range=None) scores a model on [0, 255] with AUPC noise in [0, 255], silently."""
    from tfattr.evaluation import evaluate

    declared = pixel_model(relu_cnn)
    x = (images * 255).astype(np.float32)
    ig = IntegratedGradients(declared, baseline="uniform", steps=2)
    settings = dict(aupc_kernel=3, aupc_regions=2, aupc_perturbations=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ValueRangeWarning)
        row = evaluate(declared, x, [("ig", ig)], labels=np.array([0, 1, 2]), verbose=False, **settings)[0]
    maps = np.asarray(ig.attribute(x, target=np.array([0, 1, 2])))
    expected = metrics.aupc(declared, x, maps, target=np.array([0, 1, 2]), kernel_size=3, regions=2, perturbations=2,
                            value_range=(0, 255), verbose=0).area
    np.testing.assert_allclose(row.per_image["AUPC"], expected, rtol=1e-6)
