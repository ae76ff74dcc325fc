"""The per-task scripts of examples/ run and do what their docstrings say (small settings, seconds each)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import tfattr

pytestmark = pytest.mark.examples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_example_script_is_run_here():
    tested = {"explain_keras_model.py", "evaluate_methods.py", "train_baseline.py", "explain_text.py",
              "explain_dataset.py", "train_with_saliency_logger.py"}
    others = {"demo.py", "train_demo_model.py"}  # run by test_cli (demo) / retrains the shipped model (minutes)
    assert {f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py")} == tested | others


def test_explain_keras_model_writes_both_pictures(tmp_path):
    out = run("explain_keras_model.py", "--out", "out", "--images", "2", cwd=tmp_path)
    errors = [float(v) for v in re.findall(r"completeness error ([\d.]+)%", out)]
    assert len(errors) == 2 and max(errors) < 10  # 32 trapezoid steps on the demo CNN: a few % at most
    assert sorted(os.listdir(tmp_path / "out")) == ["grid.png", "overlays.png"]


def test_evaluate_methods_prints_a_row_per_method_and_reads_its_cache(tmp_path):
    first = run("evaluate_methods.py", "--images", "2", "--out", "out", cwd=tmp_path)
    rows = [line for line in first.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [r.split("|")[1].strip() for r in rows] == ["Gradient", "IG", "SmoothGrad", "Grad-CAM", "RSI-Grad-CAM"]
    deletion = [float(r.split("|")[4]) for r in rows]
    assert all(0 <= d <= 1 for d in deletion)  # an area under a probability curve over [0, 1]
    assert os.path.isfile(tmp_path / "out" / "deletion.png") and os.listdir(tmp_path / "out" / "cache")


def test_train_baseline_makes_the_output_more_uniform(tmp_path):
    out = run("train_baseline.py", "--steps", "60", "--out", "out", cwd=tmp_path)
    factor = float(re.search(r"reduced ([\d.]+)×", out).group(1))
    assert factor > 2  # black is ~0.03 from uniform; 60 cross-entropy steps cut that several-fold
    assert os.path.isfile(tmp_path / "out" / "digits_uniform" / "metadata.json")


def test_explain_text_finds_the_key_token_in_positive_sequences(tmp_path):
    out = run("explain_text.py", cwd=tmp_path)
    accuracy = float(re.search(r"test accuracy ([\d.]+)", out).group(1))
    assert accuracy > 0.85
    positives = [line for line in out.splitlines() if line.startswith("label 1")]
    assert positives and all("(token 7)" in line for line in positives)


def test_explain_dataset_streams_into_a_store_that_resumes(tmp_path):
    out = run("explain_dataset.py", "--images", "12", "--batch", "5", "--out", "out", cwd=tmp_path)
    assert "12 images in 3 chunks" in out
    store = tfattr.open_explanations(tmp_path / "out" / "store")
    assert store.complete and list(store.ids[:]) == [str(i) for i in range(12)]
    maps = store.attributions[:]
    from tfattr.data import digits_on_photos

    labels = digits_on_photos(12, size=maps.shape[1], split="test", seed=4)["label"]
    np.testing.assert_array_equal(store.targets[:], labels)  # target="label": the dataset's labels, in order
    assert np.all(np.isfinite(maps)) and np.all(store.valid[:])
    again = run("explain_dataset.py", "--images", "12", "--batch", "5", "--out", "out", cwd=tmp_path)
    assert "0 images explained" in again and "12 found finished" in again  # nothing recomputed
    np.testing.assert_array_equal(tfattr.open_explanations(tmp_path / "out" / "store").attributions[:], maps)


@pytest.mark.parametrize("epochs", [1])
def test_train_with_saliency_logger_writes_events(tmp_path, epochs):
    run("train_with_saliency_logger.py", "--epochs", str(epochs), "--train", "256", "--logdir", "logs", cwd=tmp_path)
    runs = os.listdir(tmp_path / "logs")
    assert len(runs) == 1 and "saliency" in os.listdir(tmp_path / "logs" / runs[0])
