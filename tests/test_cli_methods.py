"""Every method of the registry from the command line (issues 26–28): `tfattr explain --method NAME` with
its flags gives the Python API's result for the same options; bad flag values are errors naming the
flag; a flag none of the methods reads is a warning; the callback takes a registry name."""

import cv2
import numpy as np
import pytest

import tfattr
from tfattr.cli import _load_images, main
from tfattr.methods.registry import REGISTRY, build_method, grid_mask


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from conftest import small_cnn

    folder = tmp_path_factory.mktemp("cli_methods")
    model = small_cnn("relu")
    model.save(folder / "model.keras")
    images = np.random.default_rng(0).uniform(0, 1, size=(2, 16, 16, 3)).astype(np.float32)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), (image[..., ::-1] * 255).round().astype(np.uint8))
        paths.append(str(path))
    return model, str(folder / "model.keras"), paths


def _grid(cells):
    return grid_mask(16, 16, cells)[..., None]


def _background(seed=0):
    """What --baselines uniform --references 3 --seed SEED draws."""
    return np.asarray(tfattr.make_baselines("uniform", np.zeros((1, 16, 16, 3), np.float32), n_baselines=3,
                                            seed=seed).array, np.float32).reshape(3, 16, 16, 3)


def _first_conv(model):
    return next(layer.name for layer in model.layers if "conv" in layer.name)


#: name → (flags, the Python API's method for the same options; "{conv}": the first convolution's name)
CASES = {
    "gradcam++": ([], lambda m: tfattr.GradCAMPlusPlus(m)),
    "layercam": (["--layer", "{conv}"], lambda m: tfattr.LayerCAM(m, layer=_first_conv(m))),
    "xgradcam": ([], lambda m: tfattr.XGradCAM(m)),
    "hirescam": ([], lambda m: tfattr.HiResCAM(m)),
    "eigencam": ([], lambda m: tfattr.EigenCAM(m)),
    "scorecam": (["--top-k", "4"], lambda m: tfattr.ScoreCAM(m, top_k=4)),
    "ablationcam": ([], lambda m: tfattr.AblationCAM(m)),
    "gradient-shap": (["--n-samples", "4", "--stdevs", "0.1", "--references", "3", "--seed", "2"],
                      lambda m: tfattr.GradientShap(m, baselines=_background(2), n_samples=4, stdevs=0.1, seed=2)),
    "blur-ig": (["--steps", "8", "--max-sigma", "4"],
                lambda m: tfattr.BlurIntegratedGradients(m, steps=8, max_sigma=4.0)),
    "occlusion": (["--window", "4", "--strides", "2", "3", "--baseline", "0.5"],
                  lambda m: tfattr.Occlusion(m, window=(4, 4), strides=(2, 3), baseline=0.5)),
    "feature-ablation": (["--cells", "4"], lambda m: tfattr.FeatureAblation(m, feature_mask=_grid(4), baseline=0.0)),
    "rise": (["--n-masks", "40", "--grid", "3", "--p", "0.4", "--seed", "3"],
             lambda m: tfattr.RISE(m, n_masks=40, grid=3, p=0.4, seed=3)),
    "kernelshap": (["--cells", "3", "--n-samples", "64"],
                   lambda m: tfattr.KernelShap(m, feature_mask=_grid(3), n_samples=64, baseline=0.0)),
    "shapley-sampling": (["--cells", "2", "--n-samples", "3", "--baseline", "black"],
                         lambda m: tfattr.ShapleyValueSampling(m, feature_mask=_grid(2), n_samples=3, baseline=0.0)),
    "lime": (["--segmentation", "grid", "--cells", "4", "--n-samples", "50", "--kernel-width", "0.5"],
             lambda m: tfattr.Lime(m, segmentation=_grid(4)[..., 0], n_samples=50, kernel_width=0.5)),
    "deconvolution": ([], lambda m: tfattr.Deconvolution(m)),
    "guided-gradcam": ([], lambda m: tfattr.GuidedGradCAM(m)),
    "deeplift": (["--baseline", "blur"], lambda m: tfattr.DeepLift(m, baseline="blur")),
    "deeplift-shap": (["--references", "3"], lambda m: tfattr.DeepLiftShap(m, baselines=_background())),
    "sobol": (["--grid", "3", "--n-designs", "8", "--perturbation", "inpainting", "--baseline", "0.5", "--seed", "4"],
              lambda m: tfattr.SobolAttribution(m, grid=3, n_designs=8, baseline=0.5, seed=4)),
    "hsic": (["--grid", "2", "--n-designs", "12", "--perturbation", "amplitude", "--seed", "5"],
             lambda m: tfattr.HsicAttribution(m, grid=2, n_designs=12, perturbation="amplitude", seed=5)),
    "feature-permutation": (["--cells", "4", "--n-permutations", "2", "--seed", "6"],
                            lambda m: tfattr.FeaturePermutation(m, feature_mask=_grid(4), n_permutations=2, seed=6)),
    "lrp": (["--composite", "epsilon_gamma_box", "--epsilon", "0.01", "--gamma", "0.5"],
            lambda m: tfattr.LRP(m, composite="epsilon_gamma_box", epsilon=0.01, gamma=0.5)),
    "apig": (["--steps", "6", "--fraction", "0.5", "--max-dist", "0.1", "--baseline", "black"],
             lambda m: tfattr.AdaptivePathIntegratedGradients(m, steps=6, fraction=0.5, max_dist=0.1,
                                                              baseline="black")),
    "xrai": (["--steps", "4"], lambda m: tfattr.XRAI(m, steps=4)),
}


def test_every_registry_name_has_a_cli_case_here_or_in_test_cli():
    """A method that joins the registry joins this test too (the older names: tests/test_cli.py)."""
    older = {"ig", "guided-ig", "gradient", "input-x-gradient", "guided-backprop", "smoothgrad", "smoothtaylor",
             "gradcam", "rsi-gradcam"}
    assert set(REGISTRY) == older | set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_explain_gives_the_library_result(saved, tmp_path, name):
    model, model_path, paths = saved
    flags, direct = CASES[name]
    flags = [flag.replace("{conv}", _first_conv(model)) for flag in flags]
    out = tmp_path / "out"
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", name, *flags,
                 "--out", str(out)]) == 0
    x = _load_images(paths, (16, 16), (0.0, 1.0))
    expected = np.asarray(direct(model).attribute(x))
    got = np.load(out / "attributions.npz")["attributions"]
    assert got.shape == expected.shape and np.abs(expected).max() > 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_superpixel_segmentation_gives_one_mask_per_image(saved, tmp_path):
    """--segmentation slic: each image's own superpixels (scikit-image), as the library with those masks."""
    from tfattr.methods.lime import segment

    model, model_path, paths = saved
    out = tmp_path / "slic"
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", "feature-ablation",
                 "--segmentation", "slic", "--out", str(out)]) == 0
    x = _load_images(paths, (16, 16), (0.0, 1.0))
    masks = np.stack([segment(image.astype(np.float64), "slic") for image in x])
    assert not np.array_equal(masks[0], masks[1])  # per image, not one shared mask
    expected = tfattr.FeatureAblation(model, feature_mask=masks[..., None]).attribute(x)
    np.testing.assert_allclose(np.load(out / "attributions.npz")["attributions"], np.asarray(expected), atol=1e-6)


@pytest.mark.parametrize("flags, message", [
    (["--method", "rise", "--p", "0"], "argument --p: expected a probability in (0, 1]. Received: --p='0'"),
    (["--method", "rise", "--p", "1.5"], "Received: --p='1.5'"),
    (["--method", "rise", "--n-masks", "0"], "Received: --n-masks='0'"),
    (["--method", "rise", "--grid", "x"], "Received: --grid='x'"),
    (["--method", "occlusion", "--window", "0"], "Received: --window='0'"),
    (["--method", "occlusion", "--strides", "-2"], "Received: --strides='-2'"),
    (["--method", "lime", "--segmentation", "watershed"], "argument --segmentation: invalid choice"),
    (["--method", "lime", "--kernel-width", "0"], "Received: --kernel-width='0'"),
    (["--method", "kernelshap", "--n-samples", "many"], "Received: --n-samples='many'"),
    (["--method", "gradient-shap", "--stdevs", "-1"], "Received: --stdevs='-1'"),
    (["--method", "blur-ig", "--max-sigma", "nan"], "Received: --max-sigma='nan'"),
    (["--method", "scorecam", "--top-k", "0"], "Received: --top-k='0'"),
    (["--method", "no-such-method"], "argument --method: invalid choice: 'no-such-method'"),
    (["--method", "sobol", "--n-designs", "1"], "Received: --n-designs='1'"),
    (["--method", "sobol", "--perturbation", "noise"], "argument --perturbation: invalid choice: 'noise'"),
    (["--method", "feature-permutation", "--n-permutations", "0"], "Received: --n-permutations='0'"),
    (["--method", "lrp", "--composite", "alpha_beta"], "argument --composite: invalid choice: 'alpha_beta'"),
    (["--method", "lrp", "--epsilon", "-1"], "Received: --epsilon='-1'"),
    (["--method", "lrp", "--gamma", "inf"], "Received: --gamma='inf'"),
    (["--method", "lrp", "--unsupported", "skip"], "argument --unsupported: invalid choice: 'skip'"),
    (["--method", "apig", "--fraction", "1.5"], "expected a number in [0, 1]. Received: --fraction='1.5'"),
    (["--method", "apig", "--max-dist", "-0.1"], "Received: --max-dist='-0.1'"),
])
def test_bad_flag_values_exit_2_naming_the_flag(saved, tmp_path, capsys, flags, message):
    _, model_path, paths = saved
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", model_path, "--images", *paths, *flags, "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--method", "occlusion", "--window", "2", "3", "4"], "--window takes SIDE or H W. Received: --window=[2, 3, 4]"),
    (["--method", "occlusion", "--baseline", "blur"],
     "--baseline must be zero, black or a number. Received: --baseline='blur'"),
    (["--method", "occlusion", "--window", "17"],
     "--window must fit in one example of shape (16, 16, 3). Received: --window=(17, 17)"),
    (["--method", "deeplift-shap", "--baselines", "nowhere.npy"], "cannot read 'nowhere.npy'"),
    (["--method", "sobol", "--n-designs", "12"], "Received: --n-designs=12"),
    (["--method", "sobol", "--grid", "17"], "--grid must be at most the image's side (16). Received: --grid=17"),
    (["--method", "sobol", "--baseline", "blur"], "Received: --baseline='blur'"),
    (["--method", "feature-permutation", "--segmentation", "slic"],
     "--segmentation must be grid (superpixels differ per image). Received: --segmentation='slic'"),
])
def test_bad_values_found_when_building_exit_2_naming_the_flag(saved, tmp_path, capsys, flags, message):
    _, model_path, paths = saved
    assert main(["explain", "--model", model_path, "--images", *paths, *flags, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_feature_permutation_of_one_image_is_an_error(saved, tmp_path, capsys):
    """Permutation importance swaps features between the images given together: one image has no other."""
    _, model_path, paths = saved
    assert main(["explain", "--model", model_path, "--images", paths[0], "--method", "feature-permutation",
                 "--out", str(tmp_path / "o")]) == 2
    assert "give at least 2 examples" in capsys.readouterr().err


def test_the_parser_choices_are_the_libraries_names():
    """--composite and --perturbation list the names the classes accept (kept in cli.py to load no TensorFlow)."""
    from tfattr.cli import COMPOSITES, PERTURBATIONS
    from tfattr.methods.sobol import PERTURBATIONS as SOBOL
    from tfattr.surgery.lrp import COMPOSITES as LRP

    assert set(COMPOSITES) == set(LRP) and set(PERTURBATIONS) == set(SOBOL)


def test_new_flags_unread_by_the_method_are_warnings(saved, tmp_path, capsys):
    _, model_path, paths = saved
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", "gradient", "--composite", "epsilon",
                 "--n-designs", "8", "--max-dist", "0.1", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "warning: --composite is ignored: it applies to lrp; the method(s) are gradient" in err
    assert "warning: --n-designs is ignored: it applies to sobol, hsic;" in err
    assert "warning: --max-dist is ignored: it applies to apig;" in err


def test_a_flag_no_chosen_method_reads_is_a_warning(saved, tmp_path, capsys):
    _, model_path, paths = saved
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", "occlusion", "--n-masks", "9",
                 "--window", "8", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "warning: --n-masks is ignored: it applies to rise; the method(s) are occlusion" in err
    assert "--window is ignored" not in err


def test_evaluate_runs_new_methods_by_name(tmp_path):
    """`tfattr evaluate --methods occlusion,gradcam++` scores the methods the registry builds."""
    from conftest import small_cnn

    from tfattr.data import digits_on_photos
    from tfattr.evaluation import evaluate

    model = small_cnn("relu", size=32, classes=10, seed=2)
    model.save(tmp_path / "m32.keras")
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tmp_path / "m32.keras"), "--images", "2", "--methods",
                 "occlusion,gradcam++", "--window", "8", "--strides", "8", "--out", str(out)]) == 0
    rows = {line.split("|")[1].strip(): line for line in (out / "table.md").read_text().splitlines()[2:]}
    assert set(rows) == {"occlusion", "gradcam++"}
    data = digits_on_photos(2, size=32, split="test", seed=0)
    direct = evaluate(model, data["image"], [("occlusion", tfattr.Occlusion(model, window=(8, 8), strides=(8, 8)))],
                      labels=data["label"], masks=data["mask"], aupc_kernel=2, pointing_tolerance=2, verbose=False)
    cell = rows["occlusion"].split("|")[2].split("±")[0].strip()  # mean ± interval
    assert f"{direct[0].scores['AUPC']:.3f}" == cell
    assert main(["evaluate", "--model", str(tmp_path / "m32.keras"), "--images", "2", "--methods", "kernelshap",
                 "--segmentation", "slic", "--strategy", "mirrored", "--out", str(out)]) == 2


def test_the_callback_takes_a_registry_name(saved, images):
    """SaliencyLogger("rise", method_options=...) builds the class the name means on the trained model."""
    model = saved[0]
    logger = tfattr.SaliencyLogger("rise", images[:2], targets=[0, 1], method_options={"n_masks": 20, "grid": 3})
    logger.set_model(model)
    logger.on_train_begin()
    logger.on_epoch_end(0)
    expected = tfattr.RISE(model, n_masks=20, grid=3).attribute(images[:2], target=[0, 1])
    np.testing.assert_allclose(np.asarray(logger.last_explanation), np.asarray(expected), atol=1e-6)
    with pytest.raises(TypeError, match="unknown option"):
        tfattr.SaliencyLogger("rise", images[:2], method_options={"window": 3})
    with pytest.raises(ValueError, match="unknown method 'nope'.*Received: method='nope'"):
        tfattr.SaliencyLogger("nope", images[:2])


def test_build_method_leaves_unset_settings_to_the_class_defaults(relu_cnn):
    rise = build_method("rise", relu_cnn, {"n_masks": None, "grid": 5})
    assert rise.config["n_masks"] == 4000 and rise.config["grid"] == 5


def test_demo_titles_include_the_photo_methods():
    """`tfattr demo --methods RISE` is accepted: the titles come from both parts' method lists, each once."""
    from tfattr.cli import _demo_titles

    titles = _demo_titles()
    assert {"Occlusion", "RISE", "LIME", "KernelSHAP", "Score-CAM", "DeepLift", "Grad-CAM++", "LayerCAM", "Sobol",
            "LRP", "Adaptive-path IG", "XRAI"} <= set(titles)
    assert len(titles) == len(set(titles)) and "Gradient" in titles


def test_relative_delta_without_a_baseline_is_relative_to_the_score():
    """LRP's delta is Σ R − f(x) with no baseline score: relative to |f(x)| (it raised a TypeError)."""
    expl = tfattr.Explanation(np.zeros((2, 3)), "lrp", scores=np.array([2.0, -4.0]), delta=np.array([0.5, 1.0]))
    np.testing.assert_allclose(expl.relative_delta, [0.25, 0.25])


def test_evaluate_takes_registry_names_and_settings():
    """tfattr.evaluate(model, images, ["occlusion", ("feature-ablation", {"cells": 4})]) scores what the
    (name, instance) pairs score; an unknown name or setting is a named error listing the choices."""
    from conftest import small_cnn

    from tfattr.data import digits_on_photos
    from tfattr.evaluation import evaluate

    model = small_cnn("relu", size=32, classes=10, seed=2)
    data = digits_on_photos(2, size=32, split="test", seed=0)
    common = dict(labels=data["label"], masks=data["mask"], aupc_kernel=2, aupc_perturbations=5,
                  pointing_tolerance=2, verbose=False)
    named = evaluate(model, data["image"], ["occlusion", ("feature-ablation", {"cells": 4}),
                                            ("rise", {"n_masks": 30, "grid": 3, "seed": 1})], **common)
    direct = evaluate(model, data["image"], [
        ("occlusion", tfattr.Occlusion(model, baseline=0.0)),
        ("feature-ablation", tfattr.FeatureAblation(model, feature_mask=grid_mask(32, 32, 4)[..., None], baseline=0.0)),
        ("rise", tfattr.RISE(model, n_masks=30, grid=3, seed=1))], **common)
    assert [row.method for row in named] == ["occlusion", "feature-ablation", "rise"]
    for got, expected in zip(named, direct):
        assert got.scores.keys() == expected.scores.keys()
        for metric, value in expected.scores.items():
            np.testing.assert_allclose(got.scores[metric], value, rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match=r"unknown method 'occlusionn'; choose from .*rise.*Received: methods\[0\]="):
        evaluate(model, data["image"], ["occlusionn"], **common)
    with pytest.raises(ValueError, match=r"unknown: \['n_mask'\].*Received: methods\[0\]="):
        evaluate(model, data["image"], [("rise", {"n_mask": 30})], **common)
