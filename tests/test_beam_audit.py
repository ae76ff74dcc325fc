"""Audit of tfattr.beam (issue #30): the handler's elements, the store ExplainImages writes, the CLI's --runner.

Each test is a defect found by the audit (it failed before its fix) unless its docstring says it pins a
property that held. Pipelines run on Beam's in-process DirectRunner (multi-processing is not the point
here; tests/test_beam.py runs two worker processes), on a small CNN with non-zero biases saved as .keras.

Float bound (maps against ``method.attribute`` on the same images, as in tests/test_beam.py): another
batch composition may make oneDNN sum a convolution's terms in another order; a map value sums few
products (≤ 600 terms of at most a few times the map's largest value), so 600·6e-8·4 ≈ 1.5e-4 of
max|map| bounds the reordering; we allow 2e-4·max|map| (a wrong scaling or image moves maps by their
own size).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import tfattr
from tfattr.errors import InvalidInputError

pytestmark = pytest.mark.beam

SIDE = 16
BOUND = 2e-4


def _close(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=BOUND * float(np.abs(want).max()) + 1e-12)


def _load(path):
    from tfattr.beam import load_model

    return load_model(path)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((SIDE, SIDE, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", bias_initializer=keras.initializers.RandomNormal(0.1, 0.05)),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(6, 3, activation="relu", bias_initializer=keras.initializers.RandomNormal(0.1, 0.05)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5, bias_initializer=keras.initializers.RandomNormal(0.0, 0.5)),
    ])
    path = str(tmp_path_factory.mktemp("model") / "cnn.keras")
    model.save(path)
    return path


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).integers(0, 256, (12, SIDE, SIDE, 3), dtype=np.uint8)


def _scaled(images):
    return images.astype(np.float32) / np.float32(255.0)


def _write_pngs(folder, images, prefix="im"):
    import cv2

    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        assert cv2.imwrite(os.path.join(folder, f"{prefix}{i:03d}.png"), image[..., ::-1])  # RGB → OpenCV's BGR
    return str(folder)


def _run(transform):
    import apache_beam as beam

    with beam.Pipeline() as pipeline:
        _ = pipeline | transform


# -- the handler's elements ----------------------------------------------------------------------------------

def test_handler_batch_mixing_uint8_and_float_scales_each_element(model_path, images):
    """A batch of a uint8 image and a float image: the uint8 one is scaled to [0, 1] as when it comes alone
    (it was stacked with the float one first, became floats of 0-255 and was explained unscaled)."""
    from tfattr.beam import ExplanationModelHandler

    handler = ExplanationModelHandler(model_path, "gradient", {})
    loaded = handler.load_model()
    rows = [r.inference for r in handler.run_inference([images[0], _scaled(images[1:2])[0]], loaded)]
    want = tfattr.Gradient(_load(model_path)).attribute(_scaled(images[:2]))
    _close(np.stack([row["attributions"] for row in rows]), want.attributions)
    assert [row["target"] for row in rows] == want.targets.tolist()


def test_handler_names_ambiguous_elements(model_path, images):
    """Elements the handler cannot read unambiguously are named errors (were: a string target read as its
    number, "cat" a bare ValueError, int64 pixels explained as floats of 0-255, a keyed pair given to the
    unkeyed handler a NumPy error, a non-integer index a bare ValueError); with on_error='skip' the element's
    row carries the message and the others are explained."""
    from tfattr.beam import ExplanationModelHandler

    handler = ExplanationModelHandler(model_path, "gradient", {})
    loaded = handler.load_model()
    cases = [((images[0], "2"), "target"), ((images[0], "cat"), "target"), ((images[0], 2.5), "target"),
             (images[0].astype(np.int64), "image.dtype"), (images[0] > 100, "image.dtype"),
             (("key-1", images[0]), "KeyedModelHandler"), ({"image": images[0], "index": "a"}, "index"),
             ({"image": images[0], "index": 2.0}, "index"), ([images[0], 3], "image")]
    for element, word in cases:
        with pytest.raises(InvalidInputError, match=word):
            handler.run_inference([images[1], element], loaded)
    skipping = ExplanationModelHandler(model_path, "gradient", {}, on_error="skip")
    rows = [r.inference for r in skipping.run_inference([images[1], (images[0], "2")], skipping.load_model())]
    assert "target" in rows[1]["error"] and rows[1]["attributions"] is None
    _close(rows[0]["attributions"], tfattr.Gradient(_load(model_path)).attribute(_scaled(images[1:2])).attributions[0])
    # what held: integral float targets and NumPy integers are class indices
    rows = [r.inference for r in handler.run_inference([(images[0], 2.0), (images[1], np.int64(3))], loaded)]
    assert [row["target"] for row in rows] == [2, 3]


def test_without_apache_beam_the_import_names_the_extra():
    """Held (pinned): with apache_beam not importable, ``import tfattr`` works and ``import tfattr.beam`` is an
    ImportError (tfattr's MissingDependencyError) naming the ``[beam]`` extra."""
    code = ("import sys; sys.modules['apache_beam'] = None\n"
            "import tfattr\n"
            "try:\n    import tfattr.beam\nexcept ImportError as error:\n"
            "    print(type(error).__name__, '|', error)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, KERAS_BACKEND="tensorflow"))
    assert out.stdout.startswith("MissingDependencyError | ") and "tfattr[beam]" in out.stdout


# -- ExplainImages: the store --------------------------------------------------------------------------------

def test_explain_images_maps_without_channels_equal_the_local_store(model_path, images, tmp_path):
    """RISE's maps are (H, W): ExplainImages wrote them into (H, W, C) rows (a NumPy broadcast error in the
    writer: every RISE, CAM, Sobol, HSIC run failed). Now its store (a corrupt file skipped: a NaN (H, W) map)
    equals explain_dataset's, and either resumes the other's run."""
    from tfattr.beam import ExplainImages
    from tfattr.streaming.store import open_explanations

    folder = _write_pngs(tmp_path / "pngs", images[:10])
    with open(os.path.join(folder, "im005.png"), "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n not really a png")
    options = {"n_masks": 24, "grid": 4, "batch_size": 16}
    beam_out, local_out = str(tmp_path / "beam"), str(tmp_path / "local")
    _run(ExplainImages(folder, beam_out, "rise", model_path, options, chunk=4, seed=3, value_range=(0, 1),
                       on_error="skip"))
    local = tfattr.explain_dataset("rise", folder, local_out, model=_load(model_path), method_options=options,
                                   batch_size=4, seed=3, value_range=(0, 1), on_error="skip", verbose=0)
    store = open_explanations(beam_out)
    assert store.complete and list(store.ids[:]) == list(local.ids[:])
    assert np.asarray(store.valid[:]).tolist() == [i != 5 for i in range(10)]
    maps, want = np.asarray(store.attributions[:]), np.asarray(local.attributions[:])
    assert maps.shape == (10, SIDE, SIDE) and np.isnan(maps[5]).all()
    keep = [i for i in range(10) if i != 5]
    _close(maps[keep], want[keep])
    assert np.asarray(store.targets[:]).tolist() == np.asarray(local.targets[:]).tolist()
    # either resumes the other's run: the settings agree
    os.remove(os.path.join(beam_out, "done", "chunk-00001.json"))
    resumed = tfattr.explain_dataset("rise", folder, beam_out, model=_load(model_path), method_options=options,
                                     batch_size=4, seed=3, value_range=(0, 1), on_error="skip", verbose=0)
    assert resumed.complete
    _close(np.asarray(resumed.attributions[:])[keep], want[keep])
    os.remove(os.path.join(local_out, "done", "chunk-00002.json"))
    again = ExplainImages(folder, local_out, "rise", model_path, options, chunk=4, seed=3, value_range=(0, 1),
                          on_error="skip")
    assert again.prepare()["todo"] == [2]
    _run(again)
    _close(np.asarray(open_explanations(local_out).attributions[:])[keep], want[keep])


def test_kernelshap_and_lime_take_a_dataset_runs_batch_seeds(model_path, images, tmp_path):
    """KernelShap and Lime draw from NumPy's RandomState(seed), which refuses seeds ≥ 2**32, while a dataset
    run seeds batch b with batch_seed(seed, b) < 2**53 (nearly always ≥ 2**32): every ExplainImages (and
    explain_dataset) run of them failed with NumPy's ValueError. Now the Beam store equals the local one."""
    from tfattr.beam import ExplainImages, batch_seed
    from tfattr.streaming.store import open_explanations

    assert batch_seed(0, 0) >= 2 ** 32  # the seeds a run passes
    folder = _write_pngs(tmp_path / "pngs", images[:6])
    for name, options in (("kernelshap", {"n_samples": 24, "cells": 4, "batch_size": 16}),
                          ("lime", {"n_samples": 24, "cells": 4, "segmentation": "grid", "batch_size": 16})):
        beam_out, local_out = str(tmp_path / f"beam-{name}"), str(tmp_path / f"local-{name}")
        _run(ExplainImages(folder, beam_out, name, model_path, options, chunk=3, value_range=(0, 1)))
        local = tfattr.explain_dataset(name, folder, local_out, model=_load(model_path), method_options=options,
                                       batch_size=3, value_range=(0, 1), verbose=0, seed=0)
        maps = np.asarray(open_explanations(beam_out).attributions[:])
        _close(maps, np.asarray(local.attributions[:]))
        assert np.abs(maps).max() > 0


def test_feature_permutation_only_on_whole_chunks(model_path, images, tmp_path):
    """FeaturePermutation swaps features between the images of one call, so through RunInference its maps
    depended on how Beam batched the elements (silently: image 0's map in a batch of 4 ≠ in a batch of 2).
    The handler now refuses it by name; ExplainImages (one call per store chunk) equals explain_dataset."""
    from tfattr.beam import ExplainImages, ExplanationModelHandler
    from tfattr.streaming.store import open_explanations

    with pytest.raises(InvalidInputError, match="ExplainImages"):
        ExplanationModelHandler(model_path, "feature-permutation", {"cells": 4})
    folder = _write_pngs(tmp_path / "pngs", images[:8])
    options = {"cells": 4, "n_permutations": 2, "batch_size": 16}
    out = str(tmp_path / "beam")
    _run(ExplainImages(folder, out, "feature-permutation", model_path, options, chunk=4, value_range=(0, 1)))
    local = tfattr.explain_dataset("feature-permutation", folder, str(tmp_path / "local"), model=_load(model_path),
                                   method_options=options, batch_size=4, value_range=(0, 1), verbose=0, seed=0)
    _close(np.asarray(open_explanations(out).attributions[:]), np.asarray(local.attributions[:]))


def test_a_list_of_files_is_taken_as_the_local_runner_takes_it(model_path, images, tmp_path):
    """A list of files: ExplainImages sorted it, dropped a repeated file and silently dropped a missing one
    (3 listed files → 2 items, no word). Now the list's order, repeats and missing files (skipped and named
    by on_error, or a named error) are the local runner's: the same ids and maps as explain_dataset."""
    from tfattr.beam import ExplainImages
    from tfattr.streaming.store import open_explanations

    folder = _write_pngs(tmp_path / "pngs", images[:3])
    listed = [os.path.join(folder, name) for name in ("im002.png", "im000.png", "im002.png", "missing.png",
                                                     "im001.png")]
    out = str(tmp_path / "beam")
    _run(ExplainImages(listed, out, "gradient", model_path, {"batch_size": 8}, chunk=2, value_range=(0, 1),
                       on_error="skip"))
    local = tfattr.explain_dataset("gradient", listed, str(tmp_path / "local"), model=_load(model_path),
                                   method_options={"batch_size": 8}, batch_size=2, value_range=(0, 1),
                                   on_error="skip", verbose=0)
    store = open_explanations(out)
    assert list(store.ids[:]) == listed == list(local.ids[:])
    assert np.asarray(store.valid[:]).tolist() == [True, True, True, False, True]
    assert "missing.png" in store.rows().sort_values("index")["error"].iloc[3]
    keep = [0, 1, 2, 4]
    _close(np.asarray(store.attributions[:])[keep], np.asarray(local.attributions[:])[keep])
    _close(np.asarray(store.attributions[:])[keep], tfattr.Gradient(_load(model_path)).attribute(
        _scaled(images[[2, 0, 2, 1]])).attributions)
    with pytest.raises(Exception, match=r"missing\.png"):
        _run(ExplainImages(listed, str(tmp_path / "raise"), "gradient", model_path, chunk=2, value_range=(0, 1)))
    with pytest.raises(InvalidInputError, match=r"no file matches"):
        ExplainImages([listed[0], os.path.join(folder, "*.jpg")], str(tmp_path / "none"), "gradient",
                      model_path).prepare()


def test_evaluate_images_skips_a_corrupt_file_and_equals_evaluate_dataset(model_path, images, tmp_path):
    """EvaluateImages with on_error='skip' and a corrupt file among the first 16: the launcher decoded them to
    measure the engine's chunk size and failed on it (skip was not honoured). Now the run skips the item and
    its per-image rows (a seeded random method too) and table equal evaluate_dataset's."""
    from tfattr.beam import EvaluateImages
    from tfattr.streaming.evaluate import evaluate_dataset
    from tfattr.streaming.store import open_explanations

    folder = _write_pngs(tmp_path / "pngs", images[:8])
    with open(os.path.join(folder, "im001.png"), "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n not really a png")
    methods = ["gradient", ("smoothgrad", {"samples": 4})]
    beam_out, local_out = str(tmp_path / "beam"), str(tmp_path / "local")
    _run(EvaluateImages(folder, beam_out, methods, ["deletion"], model_path, chunk=4, seed=2, value_range=(0, 1),
                        on_error="skip"))
    evaluate_dataset(_load(model_path), folder, methods, ["deletion"], local_out, batch_size=4, seed=2,
                     value_range=(0, 1), on_error="skip", verbose=0)
    for name in ("gradient", "smoothgrad"):
        got = open_explanations(os.path.join(beam_out, name)).rows().sort_values("index")
        want = open_explanations(os.path.join(local_out, name)).rows().sort_values("index")
        assert got["status"].tolist() == want["status"].tolist() == ["ok"] + ["skipped"] + ["ok"] * 6
        assert "im001.png" in got["error"].iloc[1]
        for column in ("metric:deletion", "score"):
            np.testing.assert_allclose(got[column].to_numpy(), want[column].to_numpy(), rtol=1e-5, atol=1e-6)
    tables = []
    for out in (beam_out, local_out):
        with open(os.path.join(out, "table.md"), encoding="utf-8") as handle:
            tables.append([line.split("|")[:3] for line in handle.read().splitlines()])  # method, deletion
    assert tables[0] == tables[1]


# -- the command line ------------------------------------------------------------------------------------------

def test_cli_runner_names_what_it_cannot_run(model_path, images, tmp_path, capsys):
    """explain-dataset --runner: a runner class that cannot be imported crashed with ModuleNotFoundError (a
    traceback), a misspelt runner gave Beam's message without the flag, an empty --runner ran locally, a bad
    value of a Beam option printed Beam's usage and exited, a stray word (`--method ig rise`) was dropped
    without a word, and a TFDS name read as "no file matches". Each is now a named error (exit 2), before
    the model loads and before anything is written; --target label stays a named error (held)."""
    from tfattr.cli import main

    folder = _write_pngs(tmp_path / "pngs", images[:4])
    out = str(tmp_path / "store")
    flags = ["explain-dataset", "--model", model_path, "--data", folder, "--out", out, "--method", "gradient",
             "--chunk", "2"]
    cases = [(["--runner", "no_such_module.Runner"], "--runner"), (["--runner", "DirectRuner"], "DirectRuner"),
             (["--runner", ""], "--runner"), (["--runner", "DirectRunner", "--direct_num_workers", "x"],
                                              "direct_num_workers"),
             (["--runner", "DirectRunner", "rise"], "rise"), (["--runner", "DirectRunner", "--target", "label"],
                                                              "--target label")]
    for extra, word in cases:
        capsys.readouterr()
        assert main(flags + extra) == 2, extra
        err = capsys.readouterr().err
        assert word in err and "Received:" in err and "Traceback" not in err, (extra, err)
        assert not os.path.exists(out)
    tfds = list(flags)
    tfds[tfds.index("--data") + 1] = "mnist"
    assert main(tfds + ["--runner", "DirectRunner"]) == 2
    assert "TFDS" in capsys.readouterr().err


def test_explain_images_checks_the_target_and_a_local_runs_lock_at_launch(model_path, images, tmp_path):
    """A class target beyond the model's classes with on_error='skip' and a given engine size: the pipeline
    'succeeded' with every item skipped (locally it is an argument error before any work); now a named error at
    launch (EvaluateImages alike). And a store a local run is writing (its lock held) was listed and written by
    Beam's workers too; now StoreLockedError at launch."""
    from tfattr.beam import EvaluateImages, ExplainImages
    from tfattr.streaming.store import StoreLockedError, StoreWriter, recorded_settings

    folder = _write_pngs(tmp_path / "pngs", images[:4])
    with pytest.raises(InvalidInputError, match="class 7"):
        ExplainImages(folder, str(tmp_path / "t7"), "gradient", model_path, {"batch_size": 8}, target=7, chunk=2,
                      value_range=(0, 1), on_error="skip").prepare()
    with pytest.raises(InvalidInputError, match="class 7"):  # EvaluateImages alike
        EvaluateImages(folder, str(tmp_path / "e7"), [("gradient", {"batch_size": 8})], ["deletion"], model_path,
                       target=7, chunk=2, value_range=(0, 1), on_error="skip").prepare()
    out = str(tmp_path / "store")
    tfattr.explain_dataset("gradient", folder, out, model=_load(model_path), method_options={"batch_size": 8},
                           batch_size=2, value_range=(0, 1), verbose=0)
    os.remove(os.path.join(out, "done", "chunk-00001.json"))
    with StoreWriter.open(out, recorded_settings(out), 2, 4, lock=True):  # a local run resuming it
        with pytest.raises(StoreLockedError):
            ExplainImages(folder, out, "gradient", model_path, {"batch_size": 8}, chunk=2, value_range=(0, 1)).prepare()
    assert ExplainImages(folder, out, "gradient", model_path, {"batch_size": 8}, chunk=2,
                         value_range=(0, 1)).prepare()["todo"] == [1]


def test_a_retried_write_of_a_committed_chunk_leaves_it(model_path, images, tmp_path, monkeypatch):
    """A bundle retried after its chunk committed: the retry leaves the chunk as it is (held: finished chunks
    are skipped), also when the other attempt commits between the retry's look and its write (was: the
    store's ChunkFinishedError failed the retried bundle, and the pipeline)."""
    from tfattr.streaming import beam as tbeam
    from tfattr.streaming.store import StoreWriter, open_explanations

    out = str(tmp_path / "store")
    settings = {"run": 1}
    rows = [{"index": i, "id": f"im{i}", "attributions": np.full((2, 2, 3), i, np.float32), "target": 1,
             "score": 0.5, "delta": float("nan"), "baseline_score": float("nan"), "status": "ok", "error": ""}
            for i in range(2)]
    write = tbeam._WriteChunk(out, settings, 2, 4, (2, 2, 3))
    assert list(write.process((0, rows))) == [0]
    marker = os.path.join(out, "done", "chunk-00000.json")
    stamp = os.stat(marker).st_mtime_ns
    other = [dict(row, attributions=np.zeros((2, 2, 3), np.float32)) for row in rows]
    assert list(write.process((0, other))) == [0]  # a retry: skipped
    monkeypatch.setattr(StoreWriter, "finished", lambda self: set())  # the retry looked before the commit
    assert list(write.process((0, other))) == [0]
    monkeypatch.undo()
    assert os.stat(marker).st_mtime_ns == stamp
    np.testing.assert_array_equal(np.asarray(open_explanations(out).attributions[:2]),
                                  np.stack([row["attributions"] for row in rows]))


def test_handler_settings_error_is_not_an_elements_error(model_path, images):
    """method_options the method refuses (steps=-1, a layer the model lacks) or a handler target beyond the
    model's classes: with on_error='skip' every element was 'skipped' with the same message (the pipeline
    succeeded with nothing explained), with 'raise' element 0 was blamed. Now a named settings error whatever
    on_error says."""
    from tfattr.beam import ExplanationModelHandler

    for options, word in (({"steps": -1}, "steps"), ({"layer": "nope"}, "nope")):
        method = "ig" if "steps" in options else "gradcam"
        for on_error in ("raise", "skip"):
            handler = ExplanationModelHandler(model_path, method, options, on_error=on_error)
            with pytest.raises(InvalidInputError, match=rf"cannot be made from method_options.*{word}") as raised:
                handler.run_inference(list(images[:3]), handler.load_model())
            assert "element" not in str(raised.value)
    for on_error in ("raise", "skip"):  # the handler's own class target beyond the model's 5 classes: at load
        handler = ExplanationModelHandler(model_path, "gradient", {}, target=7, on_error=on_error)
        with pytest.raises(InvalidInputError, match="class 7"):
            handler.run_inference(list(images[:3]), handler.load_model())


def test_unsupported_inputs_are_named_as_such(tmp_path, images, capsys):
    """EvaluateImages on TFRecord files failed with "cannot decode the image" for item 0 (the shard read as an
    image file); explain-dataset --runner with a model of free input size and no --size named `image_size`
    (not a flag of the command). Both now say what is not supported and what to give."""
    import cv2
    import keras
    import tensorflow as tf

    from tfattr.beam import EvaluateImages
    from tfattr.cli import main

    keras.utils.set_random_seed(0)
    free = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3, bias_initializer="ones"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    model = str(tmp_path / "free.keras")
    free.save(model)
    with tf.io.TFRecordWriter(str(tmp_path / "a.tfrecord")) as writer:
        png = cv2.imencode(".png", images[0])[1].tobytes()
        feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(InvalidInputError, match="TFRecords are read by ExplainImages"):
        EvaluateImages(str(tmp_path / "*.tfrecord"), str(tmp_path / "ev"), ["gradient"], ["deletion"], model,
                       image_size=(SIDE, SIDE)).prepare()
    folder = _write_pngs(tmp_path / "pngs", images[:2])
    code = main(["explain-dataset", "--model", model, "--data", folder, "--out", str(tmp_path / "o"), "--method",
                 "gradient", "--runner", "DirectRunner"])
    assert code == 2 and "--size SIDE or H W" in capsys.readouterr().err


def _hammer(handler, shared, batch, results, errors, barrier, repeats: int = 3):
    """run_inference on ``batch`` ``repeats`` times from this thread, once every thread is ready."""
    barrier.wait()
    try:
        for _ in range(repeats):
            rows = handler.run_inference(batch, shared)
            results.append(np.stack([r.inference["attributions"] for r in rows]))
    except Exception as error:  # noqa: BLE001 - reported by the test
        errors.append(error)


def test_one_loaded_model_shared_by_threads_gives_the_serial_maps(model_path, images):
    """Held (pinned): Beam shares the loaded model (and its methods) between a worker's threads; concurrent
    run_inference calls from three threads (other images, other targets, a random method's seed blocks)
    give the maps of serial calls, within the float bound (oneDNN may sum in another order under load)."""
    import threading

    from tfattr.beam import ExplanationModelHandler

    for method, options in (("ig", {"steps": 8}), ("rise", {"n_masks": 20, "grid": 4})):
        handler = ExplanationModelHandler(model_path, method, dict(options, batch_size=16), seed_block=4)
        batches = [[{"image": images[i], "index": i, "id": str(i)} for i in range(4)],
                   [(images[i], 1) for i in range(4, 8)],
                   [{"image": images[i], "index": i, "id": str(i), "target": 3} for i in range(8, 12)]]
        serial_model = handler.load_model()
        serial = [np.stack([r.inference["attributions"] for r in handler.run_inference(b, serial_model)])
                  for b in batches]
        shared = handler.load_model()
        results, errors = {j: [] for j in range(3)}, []
        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=_hammer, args=(handler, shared, batches[j], results[j], errors, barrier))
                   for j in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        for j in range(3):
            assert len(results[j]) == 3
            for got in results[j]:
                _close(got, serial[j])


def test_skipped_malformed_elements_do_not_fail_the_pipeline(model_path, images, tmp_path):
    """With on_error='skip', an element that is not an image (a ragged [image, 3]) got its skipped row from
    run_inference, then Beam's byte count (get_num_bytes) failed on it with NumPy's ValueError and the pipeline
    died. Now the pipeline ends with its row naming the problem and the other element explained."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference

    from tfattr.beam import ExplanationModelHandler

    handler = ExplanationModelHandler(model_path, "gradient", {}, on_error="skip", max_batch_size=4)
    out = str(tmp_path / "rows")
    with beam.Pipeline() as pipeline:
        _ = (pipeline
             | beam.Create([[images[0], 3], images[1]], reshuffle=False)
             | RunInference(handler)
             | beam.Map(lambda result: (result.inference.get("error"), result.inference["attributions"]))
             | beam.combiners.ToList()
             | beam.Map(lambda rows, out=out: np.save(out + ".npy", np.array(rows, dtype=object), allow_pickle=True)))
    rows = np.load(out + ".npy", allow_pickle=True).tolist()
    errors = sorted(row[0] or "" for row in rows)
    assert errors[0] == "" and "an image is an (H, W, C) array" in errors[1]
    explained = [row[1] for row in rows if row[0] is None]
    _close(explained[0], tfattr.Gradient(_load(model_path)).attribute(_scaled(images[1:2])).attributions[0])


def test_explain_images_seed_and_the_methods_seed_agree_as_locally(model_path, images, tmp_path):
    """ExplainImages(seed=7, method_options={'seed': 5}) recorded seed 7 and drew from 5 (batch_seed(5, k));
    explain_dataset refuses that pair. Now the same named error; method_options' seed alone is the run's seed
    (it was recorded as 0 and drew from 5), and such a Beam run resumes a local one with the same draws."""
    from tfattr.beam import ExplainImages
    from tfattr.streaming.store import open_explanations

    folder = _write_pngs(tmp_path / "pngs", images[:4])
    options = {"n_masks": 20, "grid": 4, "batch_size": 8, "seed": 5}
    with pytest.raises(InvalidInputError, match="disagree"):
        ExplainImages(folder, str(tmp_path / "x"), "rise", model_path, options, chunk=2, seed=7)
    full = tfattr.explain_dataset("rise", folder, str(tmp_path / "full"), model=_load(model_path),
                                  method_options=options, batch_size=2, value_range=(0, 1), verbose=0)
    out = str(tmp_path / "store")
    tfattr.explain_dataset("rise", folder, out, model=_load(model_path), method_options=options, batch_size=2,
                           value_range=(0, 1), verbose=0)
    os.remove(os.path.join(out, "done", "chunk-00001.json"))
    _run(ExplainImages(folder, out, "rise", model_path, options, chunk=2, value_range=(0, 1)))
    store = open_explanations(out)
    assert store.settings["seed"] == 5 and store.complete
    _close(np.asarray(store.attributions[:]), np.asarray(full.attributions[:]))
