"""The `tfattr` command: files written, values equal to the library call, exit code 2 on bad input."""

import cv2
import numpy as np
import pytest

import tfattr
from conftest import small_cnn
from tfattr.cli import _load_images, main


@pytest.fixture
def saved(tmp_path, relu_cnn, images):
    model_path = tmp_path / "model.keras"
    relu_cnn.save(model_path)
    paths = []
    for i, image in enumerate(images[:2]):
        path = tmp_path / f"img{i}.png"
        cv2.imwrite(str(path), (image[..., ::-1] * 255).round().astype(np.uint8))
        paths.append(str(path))
    return str(model_path), paths


def test_explain_writes_overlays_and_the_npz_of_the_library_result(saved, tmp_path, relu_cnn):
    model_path, paths = saved
    out = tmp_path / "out"
    code = main(["explain", "--model", model_path, "--images", *paths, "--method", "ig", "--steps", "8",
                 "--baseline", "blur", "--out", str(out)])
    assert code == 0
    for stem in ("img0", "img1"):
        picture = cv2.imread(str(out / f"{stem}_ig.png"))
        assert picture is not None and picture.shape == (16, 16, 3) and picture.std() > 0
    saved_npz = np.load(out / "attributions.npz")
    x = _load_images(paths, (16, 16), (0.0, 1.0))
    direct = tfattr.IntegratedGradients(relu_cnn, steps=8, baseline="blur").attribute(x)
    np.testing.assert_allclose(saved_npz["attributions"], np.asarray(direct), atol=1e-6)
    np.testing.assert_allclose(saved_npz["delta"], direct.delta, atol=1e-6)


def test_explain_with_requested_accuracies_matches_the_library(saved, tmp_path, relu_cnn):
    model_path, paths = saved
    x = _load_images(paths, (16, 16), (0.0, 1.0))
    out = tmp_path / "rsi"
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", "rsi-gradcam", "--tolerance",
                 "0.05", "--out", str(out)]) == 0
    direct = tfattr.RSIGradCAM(relu_cnn, tolerance=0.05).attribute(x)
    np.testing.assert_allclose(np.load(out / "attributions.npz")["attributions"], np.asarray(direct), atol=1e-5)
    out = tmp_path / "rsi_notebook"
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", "rsi-gradcam", "--rsi-notebook",
                 "--steps", "8", "--out", str(out)]) == 0
    notebook = tfattr.RSIGradCAM(relu_cnn, steps=8, rule="trapezoid", positive_units=True).attribute(x)
    assert not np.allclose(np.asarray(notebook), np.asarray(tfattr.RSIGradCAM(relu_cnn, steps=8).attribute(x)))
    np.testing.assert_allclose(np.load(out / "attributions.npz")["attributions"], np.asarray(notebook), atol=1e-5)
    out = tmp_path / "noise"
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", "ig", "--baseline", "uniform",
                 "--n-baselines", "4", "--baseline-tolerance", "0.5", "--steps", "8", "--out", str(out)]) == 0
    direct = tfattr.IntegratedGradients(relu_cnn, baseline="uniform", n_baselines=4, baseline_tolerance=0.5,
                                        steps=8).attribute(x)
    np.testing.assert_allclose(np.load(out / "attributions.npz")["attributions"], np.asarray(direct), atol=1e-6)


def test_bad_arguments_exit_with_code_2(saved, tmp_path, capsys):
    model_path, paths = saved
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", model_path, "--images", *paths, "--method", "no-such-method",
              "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    code = main(["explain", "--model", model_path, "--images", *paths, "--baseline", "grey", "--out", str(tmp_path)])
    assert code == 2
    assert "Unknown baseline" in capsys.readouterr().err
    code = main(["explain", "--model", model_path, "--images", str(tmp_path / "missing.png"), "--out", str(tmp_path)])
    assert code == 2
    code = main(["explain", "--model", model_path, "--images", *paths, "--method", "ig", "--rsi-notebook",
                 "--out", str(tmp_path)])
    assert code == 2 and "--rsi-notebook applies to rsi-gradcam only" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["guided-ig", "smoothtaylor", "gradcam", "rsi-gradcam", "guided-backprop"])
def test_explain_runs_every_method_like_the_library(saved, tmp_path, relu_cnn, method):
    model_path, paths = saved
    out = tmp_path / method
    code = main(["explain", "--model", model_path, "--images", *paths, "--method", method, "--steps", "6",
                 "--roots", "6", "--out", str(out)])
    assert code == 0
    x = _load_images(paths, (16, 16), (0.0, 1.0))
    direct = {
        "guided-ig": lambda: tfattr.GuidedIntegratedGradients(relu_cnn, steps=6),
        "smoothtaylor": lambda: tfattr.SmoothTaylor(relu_cnn, roots=6, sigma=0.15, noise_scale="relative"),
        "gradcam": lambda: tfattr.GradCAM(relu_cnn),
        "rsi-gradcam": lambda: tfattr.RSIGradCAM(relu_cnn, steps=6),
        "guided-backprop": lambda: tfattr.GuidedBackprop(relu_cnn),
    }[method]().attribute(x)
    np.testing.assert_allclose(np.load(out / "attributions.npz")["attributions"], np.asarray(direct), atol=1e-5)


def test_evaluate_prints_and_writes_the_metrics_table(tmp_path, capsys):
    """On a 32×32 CNN and the offline dataset; the table's numbers equal tfattr.evaluation's."""
    model = small_cnn("relu", size=32, classes=10, seed=2)
    model_path = tmp_path / "m32.keras"
    model.save(model_path)
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(model_path), "--images", "2", "--methods", "gradient,ig", "--steps", "4",
                 "--out", str(out)])
    assert code == 0
    table = (out / "table.md").read_text()
    assert table.splitlines()[0].startswith("| method | AUPC")
    printed = capsys.readouterr().out  # 32×32 maps: one pyramid level, AUTVC undefined, not a perfect 0
    assert "AUTVC 0.000" not in printed and printed.count("AUTVC left empty") == 1
    autvc = [c.strip() for c in table.splitlines()[0].split("|")].index("AUTVC ↓")
    assert [line.split("|")[autvc].strip() for line in table.splitlines()[2:]] == ["", ""]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"gradient", "ig"}
    from tfattr.data import digits_on_photos
    from tfattr.evaluation import evaluate

    data = digits_on_photos(2, size=32, split="test", seed=0)
    direct = evaluate(model, data["image"], [("ig", tfattr.IntegratedGradients(model, steps=4))],
                      labels=data["label"], masks=data["mask"], aupc_kernel=2, pointing_tolerance=2, verbose=False)
    mean, half = rows["ig"].split("|")[2].strip().split(" ± ")  # mean ± the half-width of its 95% interval
    assert f"{direct[0].scores['AUPC']:.3f}" == mean and f"{direct[0].half_width('AUPC'):.3f}" == half
    mirrored = tmp_path / "mirrored"  # a one-device MirroredStrategy: the same numbers (no cache shared)
    assert main(["evaluate", "--model", str(model_path), "--images", "2", "--methods", "gradient,ig", "--steps", "4",
                 "--strategy", "mirrored", "--out", str(mirrored)]) == 0
    metric_cells = lambda text: [line.split("|")[2:-3] for line in text.splitlines()[2:]]  # noqa: E731
    assert metric_cells((mirrored / "table.md").read_text()) == metric_cells(table)
    assert main(["evaluate", "--model", str(model_path), "--dataset", "mnist", "--out", str(out)]) == 2


def test_evaluate_metrics_flag_names_the_columns(tmp_path, capsys):
    """``--metrics a,b``: one column each, in order, equal to tfattr.evaluate's named metrics; an unknown
    name is a one-line error before any model is loaded."""
    model = small_cnn("tanh", size=16, classes=10, seed=2)
    model_path = tmp_path / "m16.keras"
    model.save(model_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model_path), "--images", "2", "--methods", "gradient", "--size", "16",
                 "--metrics", "max_sensitivity, deletion", "--out", str(out)]) == 0
    table = (out / "table.md").read_text().splitlines()
    assert table[0] == "| method | max_sensitivity ↓ | deletion ↓ | seconds | gradients |"
    from tfattr.data import digits_on_photos
    from tfattr.evaluation import evaluate

    data = digits_on_photos(2, size=16, split="test", seed=0)
    direct = evaluate(model, data["image"], [("gradient", tfattr.Gradient(model))], labels=data["label"],
                      metrics=["max_sensitivity", "deletion"], verbose=False)[0]
    assert table[2].split("|")[2].strip() == f"{direct.scores['max_sensitivity']:.3f} ± " \
        f"{direct.half_width('max_sensitivity'):.3f}"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model_path), "--metrics", "aupc,sharpness", "--out", str(out)]) == 2
    assert "--metrics: `metrics` must name registered metrics: aupc, autvc" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(model_path), "--metrics", " , ", "--out", str(out)]) == 2
    assert "--metrics: no metric named" in capsys.readouterr().err


def test_a_saved_model_with_a_softmax_layer_is_explained_and_evaluated_on_its_logits(tmp_path, relu_cnn, images):
    """A `.keras` classifier ending in keras.layers.Softmax(): explain and evaluate run on its logits,
    with the numbers of the same network saved without the softmax."""
    import keras

    headed = keras.Model(relu_cnn.input, keras.layers.Softmax(name="probs")(relu_cnn.output))
    model_path = tmp_path / "softmax.keras"
    headed.save(model_path)
    paths = []
    for i, image in enumerate(images[:2]):
        paths.append(str(tmp_path / f"img{i}.png"))
        cv2.imwrite(paths[-1], (image[..., ::-1] * 255).round().astype(np.uint8))
    out = tmp_path / "explain"
    assert main(["explain", "--model", str(model_path), "--images", *paths, "--method", "guided-backprop",
                 "--out", str(out)]) == 0
    x = _load_images(paths, (16, 16), (0.0, 1.0))
    direct = tfattr.GuidedBackprop(relu_cnn).attribute(x)  # the logits network, built without a softmax
    np.testing.assert_allclose(np.load(out / "attributions.npz")["attributions"], np.asarray(direct), atol=1e-5)

    body = small_cnn("relu", size=48, classes=10, seed=2)
    tables = {}
    for kind, model in (("softmax", keras.Model(body.input, keras.layers.Softmax()(body.output))), ("logits", body)):
        path = tmp_path / f"{kind}48.keras"
        model.save(path)
        assert main(["evaluate", "--model", str(path), "--images", "2", "--methods", "gradient", "--steps", "2",
                     "--out", str(tmp_path / kind)]) == 0
        tables[kind] = [line.split("|")[2:-3] for line in (tmp_path / kind / "table.md").read_text().splitlines()[2:]]
    assert len(tables["logits"]) == 1 and tables["softmax"] == tables["logits"]


def test_evaluate_recomputes_a_saved_baseline_retrained_at_the_same_path(tmp_path, capsys):
    """`--out` caches rows; a baseline folder re-saved with another tensor is keyed by its content."""
    from tfattr.baselines import save_baseline, train_uniform_baseline

    model = small_cnn("relu", size=32, classes=10, seed=2)
    model_path = tmp_path / "m32.keras"
    model.save(model_path)
    folder = str(tmp_path / "baseline")
    save_baseline(train_uniform_baseline(model, start="black", steps=3, patience=None, verbose=0), folder)
    command = ["evaluate", "--model", str(model_path), "--images", "2", "--methods", "ig", "--steps", "4",
               "--baseline", folder]

    def table(out):
        capsys.readouterr()
        assert main(command + ["--out", str(tmp_path / out)]) == 0
        return [line.split("|")[2:-3] for line in (tmp_path / out / "table.md").read_text().splitlines()[2:]], \
            capsys.readouterr().out

    first, _ = table("eval")
    again, printed = table("eval")
    assert "(cached)" in printed and again == first
    save_baseline(train_uniform_baseline(model, start=0.7, steps=3, patience=None, verbose=0), folder, overwrite=True)
    second, printed = table("eval")
    fresh, _ = table("fresh")
    assert "(cached)" not in printed and second == fresh and second != first
