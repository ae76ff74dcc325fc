"""Audit of the registry-built methods on the command line and in the callback (issues 26–28): every
flag reaches the method or is reported, the method's own defaults hold when a flag is not given, the
baselines file is read safely, and errors name the flag the user typed."""

import io
import os
import threading

import numpy as np
import pytest

import tfattr
from tfattr.cli import _build_method, _check_method_flags, _parser, main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import cv2
    from conftest import small_cnn

    folder = tmp_path_factory.mktemp("cli_audit")
    model = small_cnn("relu")
    model.save(folder / "model.keras")
    image = np.random.default_rng(0).uniform(0, 1, size=(16, 16, 3))
    cv2.imwrite(str(folder / "img.png"), (image * 255).round().astype(np.uint8))
    return model, str(folder / "model.keras"), str(folder / "img.png")


def _args(*flags, command="explain"):
    base = (["explain", "--model", "m", "--images", "i", "--out", "o"] if command == "explain"
            else ["evaluate", "--out", "o"])
    return _parser().parse_args(base + list(flags))


def _explain(saved, tmp_path, *flags):
    _, model_path, path = saved
    return main(["explain", "--model", model_path, "--images", path, *flags, "--out", str(tmp_path / "o")])


def test_unset_steps_leave_each_method_its_own_default(relu_cnn):
    """Without --steps, Blur IG keeps its class's 100 steps (the flag's IG default 50 was passed to it)."""
    images = np.zeros((1, 16, 16, 3), np.float32)
    args = _args("--method", "blur-ig")
    assert _build_method("blur-ig", relu_cnn, args, (0.0, 1.0), images=images).config["steps"] == \
        tfattr.BlurIntegratedGradients(relu_cnn).config["steps"] == 100
    assert _build_method("ig", relu_cnn, args, (0.0, 1.0), images=images).config["steps"] == 50
    args = _args("--method", "blur-ig", "--steps", "7")
    assert _build_method("blur-ig", relu_cnn, args, (0.0, 1.0), images=images).config["steps"] == 7


@pytest.mark.parametrize("flags, method", [
    (["--cells", "4"], "lime"),  # LIME's default segmentation is quickshift: --cells does nothing
    (["--segmentation", "slic", "--cells", "4"], "kernelshap"),
    (["--baselines", "b.npy", "--references", "4"], "gradient-shap"),  # a file: nothing is drawn
])
def test_a_flag_the_method_reads_but_its_other_flags_disable_is_a_warning(flags, method, capsys):
    _check_method_flags([method], _args("--method", method, *flags))
    err = capsys.readouterr().err
    flag = flags[-2]
    assert f"warning: {flag} is ignored" in err and "Received:" in err


def test_cells_with_a_grid_is_no_warning(capsys):
    _check_method_flags(["lime", "kernelshap"], _args("--methods", "lime,kernelshap", "--segmentation", "grid",
                                                      "--cells", "4", command="evaluate"))
    assert "warning" not in capsys.readouterr().err


def test_a_number_baseline_means_a_constant_for_every_method(saved, tmp_path):
    """--baseline 0.5 is the constant 0.5 for IG and DeepLift as for occlusion (it was an unknown name)."""
    model, _, path = saved
    assert _explain(saved, tmp_path, "--method", "ig", "--baseline", "0.5", "--steps", "4") == 0
    got = np.load(tmp_path / "o" / "attributions.npz")["attributions"]
    from tfattr.cli import _load_images

    x = _load_images([path], (16, 16), (0.0, 1.0))
    expected = tfattr.IntegratedGradients(model, baseline=0.5, steps=4).attribute(x)
    np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-7)


def test_errors_of_a_named_baselines_distribution_name_the_flag(saved, tmp_path, capsys):
    assert _explain(saved, tmp_path, "--method", "gradient-shap", "--baselines", "nosuch") == 2
    err = capsys.readouterr().err
    assert "Received: --baselines='nosuch'" in err and "--baseline=" not in err
    assert _explain(saved, tmp_path, "--method", "gradient-shap", "--baselines", str(tmp_path)) == 2
    assert f"Received: --baselines='{tmp_path}'" in capsys.readouterr().err


def test_a_complex_baselines_file_is_an_error_not_its_real_part(saved, tmp_path, capsys):
    path = tmp_path / "complex.npy"
    np.save(path, np.full((2, 16, 16, 3), 0.5 + 1j, np.complex64))
    assert _explain(saved, tmp_path, "--method", "gradient-shap", "--baselines", str(path)) == 2
    assert f"Received: --baselines='{path}'" in capsys.readouterr().err


def test_a_baselines_fifo_is_refused_without_reading(saved, tmp_path, capsys):
    """A FIFO named .npy would block np.load until a writer comes (a writer is started after 20 s so
    that the test ends on a build that does read it)."""
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock():
        if not done.wait(20):
            buffer = io.BytesIO()
            np.save(buffer, np.zeros((1, 16, 16, 3), np.float32))
            with open(fifo, "wb") as handle:
                handle.write(buffer.getvalue())

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    code = _explain(saved, tmp_path, "--method", "deeplift-shap", "--baselines", str(fifo))
    done.set()
    assert code == 2
    err = capsys.readouterr().err
    assert "not a regular file" in err and f"Received: --baselines='{fifo}'" in err


def test_the_callback_refuses_unknown_settings_of_a_name_built_by_a_factory(relu_cnn):
    """SaliencyLogger("smoothgrad", method_options=...) read only `samples` (and the common settings):
    a misspelt or foreign option was dropped silently."""
    images = np.zeros((2, 16, 16, 3), np.float32)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['nt_samples'\].*Received: method_options="):
        tfattr.SaliencyLogger("smoothgrad", images, method_options={"nt_samples": 3})
    logger = tfattr.SaliencyLogger("smoothgrad", images, method_options={"samples": 3, "seed": 1})
    method = logger._method_spec(relu_cnn)
    assert method.config["nt_samples"] == 3


def test_lime_superpixels_of_a_grey_model_as_the_other_coalition_methods(tmp_path):
    """`explain --method lime` on a one-channel model segments the grey image repeated to RGB (as
    kernelshap/shapley-sampling/feature-ablation do); it failed naming a Python option the CLI lacks."""
    import cv2
    import keras

    from tfattr.cli import _load_images
    from tfattr.methods.lime import segment

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    hidden = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu", bias_initializer="ones")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, bias_initializer="ones")(hidden))
    model.save(tmp_path / "grey.keras")
    picture = np.zeros((16, 16, 3), np.uint8)
    picture[:, 8:] = 200  # two flat halves: quickshift's segments do not hang on float digits
    cv2.imwrite(str(tmp_path / "g.png"), picture)
    assert main(["explain", "--model", str(tmp_path / "grey.keras"), "--images", str(tmp_path / "g.png"),
                 "--method", "lime", "--n-samples", "20", "--out", str(tmp_path / "o")]) == 0
    got = np.load(tmp_path / "o" / "attributions.npz")["attributions"]
    x = _load_images([str(tmp_path / "g.png")], (16, 16), (0.0, 1.0), channels=1)
    labels = segment(np.repeat(x[0], 3, axis=-1).astype(np.float64), "quickshift", seed=0)
    expected = tfattr.Lime(model, segmentation=labels, n_samples=20).attribute(x)
    np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["gradient-shap", "deeplift-shap"])
def test_the_callback_by_a_distribution_name_needs_baselines_at_construction(name, relu_cnn):
    """Without baselines every epoch's logging failed (a warning each, training went on logging nothing)."""
    images = np.zeros((2, 16, 16, 3), np.float32)
    with pytest.raises(ValueError, match=r"baselines.*Received: method_options="):
        tfattr.SaliencyLogger(name, images)
    tfattr.SaliencyLogger(name, images, method_options={"baselines": np.zeros((2, 16, 16, 3), np.float32)})


@pytest.mark.parametrize("name", ["gaussian", "blur", "max_distance"])
def test_a_baselines_name_that_depends_on_each_image_is_refused(name, relu_cnn):
    """--baselines blur/max_distance drew the first image's baselines for every image, and gaussian gave
    its offsets (noise around zero) as the baselines themselves."""
    from tfattr.methods.registry import build_method

    images = np.random.default_rng(1).uniform(0, 1, size=(2, 16, 16, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=rf"depends on each image.*Received: baselines='{name}'"):
        build_method("gradient-shap", relu_cnn, {"baselines": name, "images": images, "references": 2})
    shared = build_method("deeplift-shap", relu_cnn, {"baselines": "uniform", "images": images, "references": 3})
    drawn = tfattr.make_baselines("uniform", images[:1], n_baselines=3, seed=0).array
    np.testing.assert_array_equal(shared.config["baselines"], np.asarray(drawn, np.float32).reshape(3, 16, 16, 3))


def test_evaluate_names_the_flag_of_a_setting_found_wrong_while_attributing(tmp_path, capsys):
    from conftest import small_cnn

    small_cnn("relu", size=16, classes=10, seed=2).save(tmp_path / "m.keras")
    assert main(["evaluate", "--model", str(tmp_path / "m.keras"), "--images", "2", "--methods", "occlusion",
                 "--window", "20", "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "--window must fit in one example of shape (16, 16, 3). Received: --window=(20, 20)" in err


def test_explain_records_the_options_that_ran_class_defaults_included(saved, tmp_path):
    """attributions.npz says with which options the method ran (Blur IG's steps left out: its 100)."""
    import json

    assert _explain(saved, tmp_path, "--method", "blur-ig", "--max-sigma", "2") == 0
    recorded = json.loads(str(np.load(tmp_path / "o" / "attributions.npz")["options"]))
    assert recorded["class"] == "BlurIntegratedGradients"
    assert recorded["options"]["steps"] == 100 and recorded["options"]["max_sigma"] == 2.0


def test_too_many_references_are_refused_before_any_draw(relu_cnn, monkeypatch):
    """--references 10000 of a 224 px image drew 12 GB of float64 before any check."""
    import tfattr.baselines.registry
    from tfattr.methods.registry import MAX_REFERENCE_VALUES, build_method

    def not_drawn(*args, **kwargs):
        raise AssertionError("the baselines were drawn")

    monkeypatch.setattr(tfattr.baselines.registry, "make_baselines", not_drawn)
    images = np.zeros((1, 224, 224, 3), np.float32)
    count = MAX_REFERENCE_VALUES // (224 * 224 * 3) + 1
    with pytest.raises(ValueError, match=rf"more than the .*Received: references={count}"):
        build_method("gradient-shap", relu_cnn, {"baselines": "uniform", "references": count, "images": images})
