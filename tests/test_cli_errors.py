"""One error contract at the CLI and for the files it reads: a bad flag value, an unreadable image, model
file or saved baseline prints one line that names the flag or the path and ends ``Received: …``, exit 2."""

import json
import os
import re
import shutil
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest

import tfattr
from tfattr.baselines import load_baseline
from tfattr.cli import _parser, main
from tfattr.errors import InvalidInputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "saved_baselines", "digits_on_photos_uniform")  # a (64, 64, 3) baseline
DEMO_MODEL = os.path.join(ROOT, "examples", "assets", "digits_on_photos_cnn.keras")


@pytest.fixture
def files(tmp_path, relu_cnn, images):
    model = tmp_path / "model.keras"
    relu_cnn.save(model)
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), (images[0][..., ::-1] * 255).round().astype(np.uint8))
    return str(model), str(image)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- numeric flags ---------------------------------------------------------------------------
EXPLAIN = ["explain", "--model", "m.keras", "--images", "a.png", "--out", "out"]
EVALUATE = ["evaluate", "--out", "out"]
TRAIN = ["baseline", "train", "--model", "m.keras", "--out", "out"]
BAD_NUMBERS = [
    (EXPLAIN, "--sigma", ["abc"], "expected a number ≥ 0 or 'adaptive'", "abc"),
    (EXPLAIN, "--sigma", ["-1"], "expected a number ≥ 0 or 'adaptive'", "-1"),
    (EXPLAIN, "--steps", ["ten"], "expected an integer in [1, 1000000]", "ten"),
    (EXPLAIN, "--steps", ["0"], "expected an integer in [1, 1000000]", "0"),
    (EXPLAIN, "--steps", ["1000000000"], "expected an integer in [1, 1000000]", "1000000000"),  # was a MemoryError
    (EVALUATE, "--steps", ["1000000000"], "expected an integer in [1, 1000000]", "1000000000"),
    (EXPLAIN, "--samples", ["1000000000"], "expected an integer in [1, 1000000]", "1000000000"),
    (EXPLAIN, "--size", ["0"], "expected an integer in [1, 10000]", "0"),
    (EXPLAIN, "--tolerance", ["1e-2x"], "expected a number > 0", "1e-2x"),
    (EXPLAIN, "--baseline-tolerance", ["nan"], "expected a number > 0", "nan"),
    (EXPLAIN, "--n-baselines", ["1.5"], "expected an integer in [1, 1000000]", "1.5"),
    (EXPLAIN, "--samples", ["many"], "expected an integer in [1, 1000000]", "many"),
    (EXPLAIN, "--roots", ["-3"], "expected an integer in [1, 1000000]", "-3"),
    (EXPLAIN, "--value-range", ["0", "abc"], "expected a finite number", "abc"),
    (EXPLAIN, "--batch-size", ["0"], "expected an integer ≥ 1 or 'auto'", "0"),
    (EXPLAIN, "--seed", ["s"], "expected an integer ≥ 0", "s"),
    (EXPLAIN, "--target", ["cat"], "expected an integer ≥ 0", "cat"),
    (EVALUATE, "--images", ["x"], "expected an integer in [1, 10000]", "x"),
    (EVALUATE, "--images", ["1000000000"], "expected an integer in [1, 10000]", "1000000000"),  # was a MemoryError
    (EVALUATE, "--aupc-kernel", ["2.5"], "expected an integer ≥ 1", "2.5"),
    (["demo"], "--images", ["-1"], "expected an integer in [1, 10000]", "-1"),
    (TRAIN, "--lam", ["high"], "expected a finite number", "high"),
    (TRAIN, "--steps", ["inf"], "expected an integer ≥ 1", "inf"),
    (TRAIN, "--learning-rate", ["0"], "expected a number > 0", "0"),
    (TRAIN, "--patience", ["-1"], "expected an integer ≥ 0", "-1"),
    (TRAIN, "--value-range", ["inf", "1"], "expected a finite number", "inf"),
    (TRAIN, "--seed", ["1e3"], "expected an integer ≥ 0", "1e3"),
]


@pytest.mark.parametrize("command, flag, values, expected, bad", BAD_NUMBERS,
                         ids=[f"{c[0]}-{c[1] if len(c) > 1 and c[0] == 'baseline' else ''}{f}={v[-1]}"
                              for c, f, v, _, _ in BAD_NUMBERS])
def test_numeric_flags_name_the_flag_in_one_line(capsys, command, flag, values, expected, bad):
    with pytest.raises(SystemExit) as info:
        main(command + [flag, *values])
    assert info.value.code == 2
    prog = "tfattr " + " ".join(command[:2] if command[0] == "baseline" else command[:1])
    assert one_line(capsys) == f"{prog}: error: argument {flag}: {expected}. Received: {flag}={bad!r}"


def test_numeric_flags_keep_their_values():
    args = _parser().parse_args(EXPLAIN + ["--sigma", "adaptive", "--steps", "8", "--value-range", "0", "255",
                                           "--tolerance", "0.01", "--target", "3"])
    assert (args.sigma, args.steps, args.value_range, args.tolerance, args.target) == ("adaptive", 8, [0.0, 255.0], 0.01, 3)
    assert _parser().parse_args(EXPLAIN + ["--sigma", "0.2"]).sigma == 0.2
    assert [_parser().parse_args(EXPLAIN + extra).batch_size for extra in ([], ["--batch-size", "8"])] == ["auto", 8]
    assert _parser().parse_args(TRAIN + ["--lam", "0.5", "--patience", "0"]).lam == 0.5


def test_other_argument_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as info:
        main(["explain", "--model", "m.keras"])
    assert info.value.code == 2
    assert one_line(capsys).startswith("tfattr explain: error: the following arguments are required: --images, --out")


# -- model files -----------------------------------------------------------------------------
def test_a_corrupt_model_file_cannot_be_loaded_and_a_missing_one_is_not_found(files, tmp_path, capsys):
    _, image = files
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"\x00not a zip archive\xff" * 20)
    out = str(tmp_path / "out")
    for argv in (["explain", "--model", str(bad), "--images", image, "--out", out],
                 ["evaluate", "--model", str(bad), "--out", out],
                 ["baseline", "train", "--model", str(bad), "--out", out],
                 ["baseline", "show", SHIPPED, "--model", str(bad)]):
        assert main(argv) == 2
        line = one_line(capsys)
        assert re.search(r"error: --model: cannot load .*bad\.keras.* as a Keras model: the file is corrupt or not a "
                         r"Keras model file", line), line
        assert "not found" not in line.lower() and line.endswith(f"Received: --model={str(bad)!r}")
    missing = str(tmp_path / "missing.keras")
    for argv in (["explain", "--model", missing, "--images", image, "--out", out],
                 ["baseline", "train", "--model", missing, "--out", out],
                 ["baseline", "show", SHIPPED, "--model", missing]):
        assert main(argv) == 2
        line = one_line(capsys)
        assert "--model: no model file" in line and line.endswith(f"Received: --model={missing!r}")


# -- saved baselines ---------------------------------------------------------------------------
def _copy_of_the_shipped_baseline(tmp_path):
    folder = tmp_path / "baseline"
    shutil.copytree(SHIPPED, folder)
    return folder


def test_a_truncated_saved_baseline_is_an_error_naming_its_folder(tmp_path, capsys):
    folder = _copy_of_the_shipped_baseline(tmp_path)
    (data,) = (folder / "variables").glob("variables.data-*")
    with open(data, "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(InvalidInputError, match=rf"^Cannot read the SavedModel in {re.escape(repr(str(folder)))}: the folder is damaged or incomplete .*"
                                                rf"Received: path={re.escape(repr(str(folder)))}$"):
        load_baseline(folder)
    model = keras.models.load_model(DEMO_MODEL)
    with pytest.raises(InvalidInputError, match=re.escape(repr(str(folder)))):
        tfattr.IntegratedGradients(model, baseline=str(folder), steps=2).attribute(np.full((1, 64, 64, 3), 0.5, "float32"))
    assert main(["baseline", "show", str(folder)]) == 2
    assert str(folder) in one_line(capsys)
    image = tmp_path / "digit.png"
    cv2.imwrite(str(image), np.full((64, 64, 3), 128, np.uint8))
    assert main(["explain", "--model", DEMO_MODEL, "--images", str(image), "--baseline", str(folder), "--steps", "2",
                 "--out", str(tmp_path / "out")]) == 2
    assert str(folder) in one_line(capsys)


def _damage_metadata(folder, damage):
    path = folder / "metadata.json"
    if damage == "missing":
        path.unlink()
        return
    if damage == "garbage bytes":
        path.write_bytes(b"\xff\xfe\x00garbage")
        return
    meta = json.loads(path.read_text())
    if damage == "a list":
        meta = [meta]
    elif damage == "no baseline section":
        del meta["baseline"]
    elif damage == "format version not a number":
        meta["format_version"] = "one"
    elif damage == "no fingerprint":
        del meta["model"]["fingerprint"]
    elif damage == "no statistics":
        del meta["statistics"]
    elif damage == "shape not a list":
        meta["baseline"]["shape"] = "64x64x3"
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", ["missing", "garbage bytes", "a list", "no baseline section",
                                    "format version not a number", "no fingerprint", "no statistics",
                                    "shape not a list"])
def test_a_missing_or_damaged_metadata_file_is_an_error_naming_the_folder(tmp_path, capsys, damage):
    folder = _copy_of_the_shipped_baseline(tmp_path)
    _damage_metadata(folder, damage)
    with pytest.raises(InvalidInputError, match=re.escape(str(folder))):
        load_baseline(folder)
    assert main(["baseline", "show", str(folder)]) == 2
    line = one_line(capsys)
    assert line.startswith("tfattr baseline: error: ") and str(folder) in line and "Received: " in line


# -- images ------------------------------------------------------------------------------------
def _stderr_of_explain(model, image, out):
    """stderr of `tfattr explain` after the imports (TensorFlow logs its own start-up lines)."""
    code = ("import sys; from tfattr.cli import main; sys.stderr.write('--- start\\n'); sys.stderr.flush(); "
            f"sys.exit(main(['explain', '--model', {model!r}, '--images', {image!r}, '--out', {out!r}]))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    return run.returncode, run.stderr.split("--- start\n", 1)[1]


def test_an_unreadable_image_is_reported_in_exactly_one_line(files, tmp_path):
    model, _ = files
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    png = cv2.imencode(".png", np.full((16, 16, 3), 200, np.uint8))[1].tobytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png[: len(png) // 2])
    cases = {str(tmp_path / "missing.png"): "No such file or directory",
             str(garbage): "not an image OpenCV can decode",
             str(truncated): "not an image OpenCV can decode",
             str(tmp_path): "Is a directory"}
    for image, reason in cases.items():
        code, stderr = _stderr_of_explain(model, image, str(tmp_path / "out"))
        assert code == 2
        assert stderr.splitlines() == [f"tfattr explain: error: --images: cannot read image {image!r}: {reason}"
                                       f"{stderr.split(reason, 1)[1].rstrip()}"]
        assert stderr.rstrip().endswith(f"Received: --images={image!r}")


def test_method_and_dataset_names_are_errors_naming_the_flag(files, tmp_path, capsys):
    model, image = files
    out = str(tmp_path / "out")
    assert main(["explain", "--model", model, "--images", image, "--method", "ig", "--rsi-notebook", "--out", out]) == 2
    assert one_line(capsys).endswith("--rsi-notebook applies to rsi-gradcam only; the method(s) are ig. "
                                     "Received: --method='ig'")
    assert main(["evaluate", "--model", model, "--images", "1", "--methods", "gradient,no-such-method",
                 "--out", out]) == 2
    assert one_line(capsys).endswith("Received: --methods='no-such-method'")
    assert main(["evaluate", "--model", model, "--dataset", "mnist", "--out", out]) == 2
    assert one_line(capsys).endswith("choose digits_on_photos or imagenette. Received: --dataset='mnist'")
