"""explain_dataset / evaluate_dataset (issue #30): streaming into the store, resume after SIGKILL, settings,
bad items, progress, the evaluation table, the CLI commands.

A small CNN at 32 px with non-zero biases (built here, no training) and 2,000 synthetic images; IG with 8
steps. Bounds: the store and an in-memory ``attribute`` call run the same engine chunk size (64 points)
and, with 8 steps per image and 64 images per batch, every engine chunk holds the same 8 images' paths in
both: the same float32 operations, so the maps agree to a few ulps of float32 at most (the bound below
allows 64 ulps of the largest map value, ``64 · 2⁻²³ · max|a|``; observed: equal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

import tfattr
from tfattr.errors import InvalidInputError
from tfattr.evaluation import evaluate, format_table
from tfattr.streaming.explain import ImageProgress, batch_seed, explain_dataset

EPS32 = float(np.finfo(np.float32).eps)
N = 2000


def _cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 1)),
        keras.layers.MaxPooling2D(4),
        keras.layers.Flatten(),
        keras.layers.Dense(10, bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 2)),
    ])


@pytest.fixture(scope="module")
def model():
    return _cnn()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(N, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, N)


def _ig(model, **options):
    return tfattr.IntegratedGradients(model, steps=8, batch_size=64, **options)


def _arrays(store):
    return {"attributions": np.asarray(store.attributions[:]), "ids": [str(i) for i in store.ids[:]],
            "targets": np.asarray(store.targets[:]), "scores": np.asarray(store.scores[:]),
            "delta": np.asarray(store.delta[:]), "valid": np.asarray(store.valid[:])}


def _rows(store):
    rows = store.rows()
    rows = rows.to_pandas() if hasattr(rows, "to_pandas") else rows
    return rows.sort_values("index").reset_index(drop=True)


def test_store_equals_attribute_on_the_whole_batch(model, data, tmp_path):
    images, labels = data
    method = _ig(model)
    store = explain_dataset(method, (images, labels), tmp_path / "out", target="label", verbose=0, durable=False)
    reference = method.attribute(images, target=labels)
    got = _arrays(store)
    expected = np.asarray(reference.attributions)
    assert got["attributions"].shape == expected.shape
    assert np.max(np.abs(got["attributions"] - expected)) <= 64 * EPS32 * np.max(np.abs(expected))
    assert got["ids"] == [str(i) for i in range(N)]  # in order
    np.testing.assert_array_equal(got["targets"], labels)
    scale = 64 * EPS32 * np.max(np.abs(reference.scores))
    np.testing.assert_allclose(got["scores"], reference.scores, rtol=0, atol=scale)
    np.testing.assert_allclose(got["delta"], reference.delta, rtol=0, atol=scale)
    assert got["valid"].all()
    rows = _rows(store)
    assert rows["status"].eq("ok").all() and rows["index"].tolist() == list(range(N))
    np.testing.assert_array_equal(rows["label"].to_numpy(), labels)
    # f(z) per image in the rows: IG's relative completeness error is the in-memory one
    np.testing.assert_allclose(rows["baseline_score"], reference.baseline_scores, rtol=0, atol=scale)
    gap = np.abs(rows["score"] - rows["baseline_score"]).to_numpy()
    relative = np.abs(rows["delta"]).to_numpy() / gap
    # each of delta, f(x), f(z) within `scale`: |d(|δ|/g)| ≤ (scale + 2·scale·|δ|/g) / g, to first order (×2 margin)
    bound = 2 * (scale + 2 * scale * relative) / gap
    assert np.all(np.abs(relative - reference.relative_delta) <= bound)
    assert store.settings["engine_batch_size"] == 64 and store.settings["chunk"] == 64


_CHILD = textwrap.dedent("""
    import sys, numpy as np, keras, tfattr
    from tfattr.streaming.explain import explain_dataset
    folder = sys.argv[1]
    model = keras.models.load_model(folder + "/model.keras")
    images, labels = np.load(folder + "/images.npy"), np.load(folder + "/labels.npy")
    method = tfattr.IntegratedGradients(model, steps=8, batch_size=32, baseline="uniform", seed=3)
    explain_dataset(method, (images, labels), folder + "/out", target="label", batch_size=25, verbose=0)
""")


def _markers(out):
    folder = os.path.join(out, "done")
    return len(os.listdir(folder)) if os.path.isdir(folder) else 0


def test_killed_runs_resume_to_the_same_store_bit_for_bit(model, data, tmp_path):
    """Two processes SIGKILLed at random points (run side by side: a process costs ~8 s to start), one of
    their stores then interrupted again in-process (KeyboardInterrupt inside attribution), both resumed:
    each equals an uninterrupted run bit for bit (arrays and rows). A random method (uniform baseline)
    checks the per-batch seeds too."""
    images, labels = data[0][:300], data[1][:300]  # 12 chunks of 25
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    rng = np.random.default_rng(30)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="3")
    outs = [str(tmp_path / "a" / "out"), str(tmp_path / "b" / "out")]
    wanted = [int(rng.integers(1, 4)), int(rng.integers(4, 8))]  # at least 4 chunks left to do
    children = []
    for out in outs:
        os.makedirs(os.path.dirname(out))
        os.symlink(tmp_path / "model.keras", os.path.join(os.path.dirname(out), "model.keras"))
        os.symlink(tmp_path / "images.npy", os.path.join(os.path.dirname(out), "images.npy"))
        os.symlink(tmp_path / "labels.npy", os.path.join(os.path.dirname(out), "labels.npy"))
        children.append(subprocess.Popen([sys.executable, "-c", _CHILD, os.path.dirname(out)], env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 180
    running = [0, 1]
    while running and time.monotonic() < deadline:
        for i in list(running):
            if _markers(outs[i]) >= wanted[i] or children[i].poll() is not None:
                time.sleep(float(rng.uniform(0, 0.01)))  # anywhere in the next chunk (computing, writing)
                children[i].send_signal(signal.SIGKILL)
                children[i].wait()
                running.remove(i)
        time.sleep(0.002)
    killed_at = [_markers(out) for out in outs]
    assert all(0 < k < 12 for k in killed_at), killed_at  # killed before the end, after a chunk
    loaded = keras.models.load_model(tmp_path / "model.keras")
    method = tfattr.IntegratedGradients(loaded, steps=8, batch_size=32, baseline="uniform", seed=3)
    calls = {"n": 0, "stop": int(rng.integers(1, 12 - killed_at[0]))}
    attribute = method.attribute

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["stop"]:
            raise KeyboardInterrupt
        return attribute(*args, **kwargs)

    method.attribute = interrupted
    with pytest.raises(KeyboardInterrupt):
        explain_dataset(method, (images, labels), outs[0], target="label", batch_size=25, verbose=0)
    del method.attribute
    assert killed_at[0] <= _markers(outs[0]) < 12
    resumed = [explain_dataset(method, (images, labels), out, target="label", batch_size=25, verbose=0)
               for out in outs]  # the lock of the interrupted run was released
    fresh = explain_dataset(method, (images, labels), tmp_path / "fresh", target="label", batch_size=25, verbose=0)
    b = _arrays(fresh)
    for store in resumed:
        a = _arrays(store)
        assert a["ids"] == b["ids"]
        for name in a:
            if name != "ids":
                assert a[name].dtype == b[name].dtype and a[name].tobytes() == b[name].tobytes(), name
        assert _rows(store).equals(_rows(fresh))
        assert store.settings == fresh.settings and store.complete


def test_batches_of_a_random_method_draw_from_their_own_seeds():
    seeds = [batch_seed(3, b) for b in range(100)]
    assert len(set(seeds)) == 100 and all(0 <= s < 2**53 for s in seeds)
    assert batch_seed(3, 7) == seeds[7] and batch_seed(4, 7) != seeds[7]


def test_a_changed_method_option_on_the_same_out_is_an_error_naming_it(model, data, tmp_path):
    images, labels = data
    explain_dataset(_ig(model), images[:100], tmp_path / "out", verbose=0)
    with pytest.raises(InvalidInputError, match=r"method option 'steps'.*8.*16"):
        explain_dataset(tfattr.IntegratedGradients(model, steps=16, batch_size=64), images[:100], tmp_path / "out",
                        verbose=0)
    with pytest.raises(InvalidInputError, match=r"method option 'baseline'"):
        explain_dataset(_ig(model), images[:100], tmp_path / "out", verbose=0, method_options={"baseline": "black"})
    with pytest.raises(InvalidInputError, match=r"engine_batch_size"):
        explain_dataset(tfattr.IntegratedGradients(model, steps=8, batch_size=32), images[:100], tmp_path / "out",
                        verbose=0)
    store = explain_dataset(_ig(model), images[:100], tmp_path / "out", verbose=0)  # the same run: nothing to do
    assert len(store) == 100


def test_auto_engine_chunk_size_is_measured_once_recorded_and_reused(model, data, tmp_path):
    """Also a tf.data pipeline of unknown cardinality (the store grows as chunks commit)."""
    import tensorflow as tf

    images = tf.data.Dataset.from_tensor_slices(data[0][:200]).filter(lambda image: True)
    assert images.cardinality() == tf.data.UNKNOWN_CARDINALITY
    method = tfattr.IntegratedGradients(model, steps=8)  # batch_size="auto"
    store = explain_dataset(method, images, tmp_path / "out", batch_size=50, verbose=0, durable=False)
    assert store.complete and len(store) == 200
    size = store.settings["engine_batch_size"]
    assert isinstance(size, int) and size in (8, 16, 32, 64)  # a power of two up to the CPU cap
    first = np.asarray(store.attributions[:])
    os.remove(tmp_path / "out" / "done" / "chunk-00002.json")  # chunk 2 unfinished: computed again
    again = explain_dataset(method, images, tmp_path / "out", batch_size=50, verbose=0, durable=False)
    assert again.settings["engine_batch_size"] == size
    assert np.asarray(again.attributions[:]).tobytes() == first.tobytes()
    expected = method.attribute(data[0][:200], batch_size=size).attributions
    assert np.max(np.abs(first - expected)) <= 64 * EPS32 * np.max(np.abs(expected))


def test_a_failing_write_is_raised_in_the_caller_and_the_run_resumes(model, data, tmp_path, monkeypatch):
    from tfattr.streaming.store import StoreWriter

    images = data[0][:256]
    write = StoreWriter.write_chunk

    def failing(self, k, *args, **kwargs):
        if k == 2:
            raise OSError(28, "No space left on device")
        return write(self, k, *args, **kwargs)

    monkeypatch.setattr(StoreWriter, "write_chunk", failing)
    with pytest.raises(OSError, match="No space left"):
        explain_dataset(_ig(model), images, tmp_path / "out", verbose=0)
    monkeypatch.setattr(StoreWriter, "write_chunk", write)
    store = explain_dataset(_ig(model), images, tmp_path / "out", verbose=0)  # the lock was released
    fresh = explain_dataset(_ig(model), images, tmp_path / "fresh", verbose=0)
    assert store.complete and np.asarray(store.attributions[:]).tobytes() == np.asarray(fresh.attributions[:]).tobytes()


def test_unknown_method_option_is_an_error(model, data, tmp_path):
    with pytest.raises(ValueError, match="stepz"):
        explain_dataset(_ig(model), data[0][:10], tmp_path / "out", method_options={"stepz": 3}, verbose=0)
    with pytest.raises(InvalidInputError, match="reads the settings"):
        explain_dataset("ig", data[0][:10], tmp_path / "out2", model=model, method_options={"stepz": 3}, verbose=0)


def test_a_target_outside_the_classes_is_an_argument_error(model, data, tmp_path):
    for target in (10, np.r_[np.zeros(9, int), 11]):
        for on_error in ("raise", "skip"):
            with pytest.raises(InvalidInputError, match="the model has 10 classes"):
                explain_dataset(_ig(model), data[0][:10], tmp_path / "out", target=target, on_error=on_error,
                                verbose=0)
    assert not os.path.exists(tmp_path / "out")  # nothing written


def _bad_data(data):
    images, labels = data
    images, labels = images[:150].copy(), labels[:150].copy()
    images[7, 3, 3, 0] = np.nan  # an unusable item
    labels[131] = 12  # the model has 10 classes
    return images, labels


def test_bad_items_raise_naming_the_item(model, data, tmp_path):
    images, labels = _bad_data(data)
    with pytest.raises(InvalidInputError, match=r"7"):
        explain_dataset(_ig(model), (images, labels), tmp_path / "a", target="label", verbose=0)
    images[7] = 0.5
    with pytest.raises(InvalidInputError, match=r"item 131 \(id '131'\).*label 12 is out of range"):
        explain_dataset(_ig(model), (images, labels), tmp_path / "b", target="label", verbose=0)


def test_bad_items_are_skipped_and_reported(model, data, tmp_path, capsys):
    images, labels = _bad_data(data)
    method = _ig(model)
    store = explain_dataset(method, (images, labels), tmp_path / "out", target="label", on_error="skip", verbose=1)
    got = _arrays(store)
    skipped = [7, 131]
    assert np.flatnonzero(~got["valid"]).tolist() == skipped
    assert np.isnan(got["attributions"][skipped]).all() and (got["targets"][skipped] == -1).all()
    rows = _rows(store)
    assert rows.loc[skipped, "status"].eq("skipped").all() and rows.loc[skipped, "error"].str.len().gt(0).all()
    assert "out of range" in rows.loc[131, "error"]
    assert rows.drop(index=skipped)["status"].eq("ok").all()
    # the others as in memory: batch 0 without item 7, batch 2 without item 131
    keep = np.ones(150, bool)
    keep[skipped] = False
    for start, stop in ((0, 64), (64, 128), (128, 150)):
        part = np.arange(start, stop)[keep[start:stop]]
        expected = np.asarray(method.attribute(images[part], target=labels[part]).attributions)
        assert np.max(np.abs(got["attributions"][part] - expected)) <= 64 * EPS32 * np.max(np.abs(expected))
    assert "2 skipped" in capsys.readouterr().out


def test_progress_counts_images_in_lines_outside_a_terminal(model, data, tmp_path, capsys):
    images = data[0][:320]
    explain_dataset(_ig(model), images, tmp_path / "out", batch_size=32, verbose=1, durable=False)
    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if " images - " in line and "images/s" in line]
    assert [line.split()[0] for line in progress] == [f"{32 * k}/320" for k in range(1, 11)]
    assert "\r" not in "".join(lines) and "ETA" in progress[0]
    explain_dataset(_ig(model), images[:64], tmp_path / "quiet", verbose=0)
    explain_dataset(_ig(model), images[:64], tmp_path / "auto", verbose="auto")  # auto: nothing in logs
    assert capsys.readouterr().out == ""


def test_progress_starts_at_the_resumed_count(capsys):
    progress = ImageProgress(1000, verbose=1, done=400)
    progress.advance(100)
    progress.advance(64)
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("500/1000 images") and len(text) == 1  # every 100 images, from 400
    assert ImageProgress(1000, verbose=0).mode is None


def _metric_values(rows):
    return {(r.method, k): v for r in rows for k, v in r.per_image.items()}


def test_evaluate_dataset_equals_evaluate_and_resumes(model, data, tmp_path):
    images, labels = data[0][:96], data[1][:96]
    methods = [("gradient", tfattr.Gradient(model, batch_size=64)), ("ig", _ig(model))]
    options = dict(aupc_kernel=4, aupc_regions=4, aupc_perturbations=4, seed=5)
    rows = tfattr.evaluate_dataset(model, (images, labels), methods, None, tmp_path / "eval", target="label",
                                   batch_size=48, verbose=0, durable=False, **options)
    reference = evaluate(model, images, methods, labels=labels, verbose=False, **options)
    assert [r.method for r in rows] == ["gradient", "ig"]
    for got, expected in zip(rows, reference):
        assert list(got.per_image) == list(expected.per_image)  # AUPC AUTVC deletion insertion (+ completeness)
        for name in expected.per_image:
            np.testing.assert_allclose(got.per_image[name], expected.per_image[name], rtol=1e-5, atol=1e-6,
                                       equal_nan=True)
        for name in expected.scores:
            np.testing.assert_allclose(got.scores[name], expected.scores[name], rtol=1e-5, atol=1e-6, equal_nan=True)
            np.testing.assert_allclose(got.ci[name], expected.ci[name], rtol=1e-5, atol=1e-6, equal_nan=True)
        assert got.gradients == expected.gradients
    with open(tmp_path / "eval" / "table.md", encoding="utf-8") as handle:
        assert handle.read() == format_table(rows)
    with open(tmp_path / "eval" / "table.csv", encoding="utf-8") as handle:
        header = handle.readline()
    assert header.startswith("method,AUPC,AUPC low95,AUPC high95,")
    # an unfinished chunk of one method (its marker removed) is computed again; the table is the same
    os.remove(tmp_path / "eval" / "ig" / "done" / "chunk-00001.json")
    again = tfattr.evaluate_dataset(model, (images, labels), methods, None, tmp_path / "eval", target="label",
                                    batch_size=48, verbose=0, durable=False, **options)
    first, second = _metric_values(rows), _metric_values(again)
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def test_cli_explain_dataset_on_a_folder(model, tmp_path, capsys):
    import cv2

    from tfattr import cli

    folder = tmp_path / "photos"
    for label in ("a", "b"):
        os.makedirs(folder / label)
        for i in range(6):
            pixels = np.random.default_rng(i + 10 * (label == "b")).integers(0, 256, (32, 32, 3), dtype=np.uint8)
            cv2.imwrite(str(folder / label / f"{i}.png"), pixels)
    model.save(tmp_path / "model.keras")
    argv = ["explain-dataset", "--model", str(tmp_path / "model.keras"), "--data", str(folder), "--labels", "folders",
            "--method", "ig", "--steps", "8", "--batch-size", "64", "--target", "label", "--chunk", "5", "--quiet",
            "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    store = tfattr.open_explanations(tmp_path / "out")
    ids = [str(i) for i in store.ids[:]]
    assert ids == sorted(ids) and len(ids) == 12 and ids[0] == "a/0.png"
    np.testing.assert_array_equal(np.asarray(store.targets[:]), [0] * 6 + [1] * 6)
    capsys.readouterr()
    assert cli.main(argv[:-2] + ["--steps", "9", "--out", str(tmp_path / "out")]) == 2  # another run on the same out
    assert "method option 'steps'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["explain-dataset", "--model", "m.keras", "--data", ".", "--target", "first", "--out", "x"])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "Received: --target='first'" in message
