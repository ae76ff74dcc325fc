"""The `tfattr` command: files written, values equal to the library call, exit code 2 on bad input."""

import cv2
import numpy as np
import pytest

import tfattr
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


def test_bad_arguments_exit_with_code_2(saved, tmp_path, capsys):
    model_path, paths = saved
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--model", model_path, "--images", *paths, "--method", "lime", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    code = main(["explain", "--model", model_path, "--images", *paths, "--baseline", "grey", "--out", str(tmp_path)])
    assert code == 2
    assert "Unknown baseline" in capsys.readouterr().err
    code = main(["explain", "--model", model_path, "--images", str(tmp_path / "missing.png"), "--out", str(tmp_path)])
    assert code == 2
