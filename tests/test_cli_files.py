"""What the `tfattr` command leaves on disk and on stdout: every output kept under its own name, ordinary file
permissions, a destination refused before any work, plain progress lines when stdout is not a terminal."""

import json
import os
import stat
import time

import cv2
import numpy as np
import pytest

from conftest import small_cnn
from tfattr import cli, viz
from tfattr.baselines import saved as saved_module
from tfattr.cli import _load_images, main

CONTROL_SEQUENCES = ("\x1b[", "\r", "\b")


@pytest.fixture
def model_path(tmp_path, relu_cnn):
    path = tmp_path / "model.keras"
    relu_cnn.save(path)
    return str(path)


def write_image(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), (image[..., ::-1] * 255).round().astype(np.uint8))
    return str(path)


# -- explain: one output per image, sources recorded ------------------------------------------------
def test_explain_keeps_every_overlay_of_images_with_the_same_file_name(tmp_path, model_path, images):
    paths = [write_image(tmp_path / "a" / "cat.png", images[0]), write_image(tmp_path / "b" / "cat.png", images[1]),
             write_image(tmp_path / "c" / "cat-2.png", images[2])]
    out = tmp_path / "out"
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", "gradient", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["attributions.npz", "cat-2_gradient.png", "cat-3_gradient.png",
                                       "cat_gradient.png"]
    saved = np.load(out / "attributions.npz")
    assert saved["sources"].tolist() == paths  # which image is which
    assert saved["names"].tolist() == ["cat", "cat-3", "cat-2"]  # first comes first; a literal cat-2 keeps its name
    x = _load_images(paths, (16, 16), (0.0, 1.0))
    for name, image, attribution in zip(saved["names"], x, saved["attributions"]):
        written = cv2.imread(str(out / f"{name}_gradient.png"))[..., ::-1]
        np.testing.assert_array_equal(written, viz.overlay(image, attribution, value_range=(0.0, 1.0)))
    # the same names on a second run (deterministic), files replaced, nothing added
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", "gradient", "--out", str(out)]) == 0
    assert len(os.listdir(out)) == 4


# -- permissions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_explain_and_evaluate_outputs_follow_the_umask(tmp_path, model_path, images, umask, mode):
    paths = [write_image(tmp_path / f"img{i}.png", image) for i, image in enumerate(images[:2])]
    model32 = tmp_path / "m.keras"
    small_cnn("relu", size=32, classes=10, seed=2).save(model32)
    previous = os.umask(umask)
    try:
        assert main(["explain", "--model", model_path, "--images", *paths, "--method", "gradient",
                     "--out", str(tmp_path / "explain")]) == 0
        assert main(["evaluate", "--model", str(model32), "--images", "2", "--methods", "gradient",
                     "--out", str(tmp_path / "evaluate")]) == 0
    finally:
        os.umask(previous)
    written = {os.path.relpath(os.path.join(folder, name), tmp_path): stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode)
               for top in ("explain", "evaluate") for folder, _, files in os.walk(tmp_path / top) for name in files}
    assert {"explain/img0_gradient.png", "explain/attributions.npz", "evaluate/table.md"} <= set(written)
    assert any(name.startswith("evaluate/cache/") for name in written)
    assert set(written.values()) == {mode}, written


# -- baseline train: the destination is checked first -------------------------------------------------
def test_baseline_train_refuses_an_unusable_out_before_loading_the_model(tmp_path, model_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded (and would be trained) before --out was checked")

    monkeypatch.setattr(cli, "_baseline_model", never)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.png").write_bytes(b"")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    existing = tmp_path / "saved_baselines" / "old"
    existing.mkdir(parents=True)
    (existing / "metadata.json").write_text(json.dumps({"format": "tfattr.saved_baseline"}))
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(saved_module.os, "access",
                        lambda path, mode, **kw: False if os.fspath(path) == str(read_only) else real_access(path, mode, **kw))
    cases = [
        ([str(photos), "--overwrite"], "exists and is not a saved baseline"),
        ([str(a_file), "--overwrite"], "exists and is not a saved baseline"),
        ([str(a_file / "NAME")], "is not a folder"),
        ([str(existing)], "overwrite"),
        ([str(read_only / "NAME")], "cannot write"),
    ]
    for out, expected in cases:
        begin = time.perf_counter()
        code = main(["baseline", "train", "--model", model_path, "--out", *out, "--quiet"])
        elapsed = time.perf_counter() - begin
        err = capsys.readouterr().err
        assert code == 2 and expected in err and err.count("\n") == 1, (out, err)
        assert "Received: " in err
        assert elapsed < 2.0
    assert sorted(os.listdir(photos)) == ["cat.png"] and os.listdir(read_only) == []


# -- progress output --------------------------------------------------------------------------------
def test_progress_written_to_a_file_is_plain_lines(tmp_path, model_path, images, capsys):
    """stdout is captured (not a terminal): verbose=1 prints plain lines, verbose="auto" prints nothing."""
    from tfattr.core.engine import progress_bar

    paths = [write_image(tmp_path / "img0.png", images[0])]
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", "ig", "--steps", "64",
                 "--batch-size", "8", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert not any(sequence in out for sequence in CONTROL_SEQUENCES), repr(out[:300])
    assert "8/8 chunks" in out  # the final count, on a line of its own
    bar = progress_bar(200, "auto")
    assert bar is None  # long, but nobody watches a terminal
    bar = progress_bar(5, 1, unit="step")
    for i in range(1, 6):
        bar.update(i, values=[("loss", 0.5 / i)])
    out = capsys.readouterr().out
    assert not any(sequence in out for sequence in CONTROL_SEQUENCES), repr(out)
    assert out.splitlines()[-1].startswith("5/5 steps") and "loss" in out.splitlines()[-1]
