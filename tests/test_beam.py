"""tfattr.beam: the ModelHandler for Beam's RunInference, ExplainImages writing the store, the CLI's --runner.

Pipelines run on Beam's DirectRunner, in process or with 2 worker processes
(``direct_running_mode="multi_processing"``), on a small CNN with non-zero biases saved as .keras.

Float bound (maps against ``method.attribute`` on the same images): a batch of another composition
may make oneDNN pick other kernels, which sum a convolution's and a dense layer's terms in another
order. Reordering a float32 sum of n terms moves it by at most (n − 1)·2⁻²⁴·Σ|terms|; here a map value
sums ≤ 36 products per conv output over 16 path steps (n ≤ 600) of terms at most a few times the map's
largest value, so 600·6e-8·4 ≈ 1.5e-4 of max|map| bounds it; we allow 2e-4·max|map| (machine-independent,
and far below any real difference: a wrong target or image moves maps by their own size).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import tfattr
from tfattr.errors import InvalidInputError

# the [beam] extra: every test here needs apache-beam (imported inside the tests, so that `-m "not beam"`
# leaves them out where the extra is not installed)
pytestmark = pytest.mark.beam


def load_model(path):
    from tfattr.beam import load_model as load

    return load(path)

SIDE = 16
BOUND = 2e-4


def _close(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=BOUND * float(np.abs(want).max()) + 1e-12)


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
    return np.random.default_rng(7).integers(0, 256, (24, SIDE, SIDE, 3), dtype=np.uint8)


def _scaled(images):
    return images.astype(np.float32) / np.float32(255.0)


def test_import_tfattr_does_not_import_beam():
    code = ("import sys, tfattr; print('apache_beam' in sys.modules, "
            "any(name in sys.modules for name in ('tfattr.beam', 'tfattr.streaming.beam')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, KERAS_BACKEND="tensorflow"))
    assert out.stdout.split() == ["False", "False"]


def test_handler_batch_equals_attribute(model_path, images):
    """One run_inference call: the maps, targets, scores and deltas of IG.attribute on the same images."""
    from tfattr.beam import ExplanationModelHandler

    handler = ExplanationModelHandler(model_path, "ig", {"steps": 16, "batch_size": 32})
    loaded = handler.load_model()
    results = list(handler.run_inference(list(images[:10]), loaded))
    want = tfattr.IntegratedGradients(load_model(model_path), steps=16, batch_size=32).attribute(_scaled(images[:10]))
    assert all(np.array_equal(r.example, e) for r, e in zip(results, images[:10]))
    _close(np.stack([r.inference["attributions"] for r in results]), want.attributions)
    assert [r.inference["target"] for r in results] == want.targets.tolist()
    np.testing.assert_allclose([r.inference["score"] for r in results], want.scores, rtol=1e-6)
    np.testing.assert_allclose([r.inference["delta"] for r in results], want.delta, atol=1e-6)
    # (image, target) elements explain the given class
    pairs = [(image, 2) for image in images[:3]]
    rows = [r.inference for r in handler.run_inference(pairs, loaded)]
    given = tfattr.IntegratedGradients(load_model(model_path), steps=16, batch_size=32).attribute(
        _scaled(images[:3]), target=2)
    assert [row["target"] for row in rows] == [2, 2, 2]
    _close(np.stack([row["attributions"] for row in rows]), given.attributions)


def test_keyed_handler_in_a_pipeline(model_path, images):
    """KeyedModelHandler on the DirectRunner (Beam batches the elements as it likes): every key once, its own
    map. (Two worker processes: test_explain_images_on_two_worker_processes_equals_attribute.)"""
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    from tfattr.beam import ExplanationModelHandler

    handler = ExplanationModelHandler(model_path, "gradient", {"batch_size": 32}, max_batch_size=5)
    options = PipelineOptions()
    out = str(os.path.join(os.path.dirname(model_path), "keyed"))
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | beam.Create([(f"img-{i:02d}", images[i]) for i in range(len(images))])
             | beam.Reshuffle()
             | RunInference(KeyedModelHandler(handler))
             | beam.Map(lambda kv: (kv[0], kv[1].inference["attributions"], kv[1].inference["target"]))
             | beam.combiners.ToList()
             | beam.Map(lambda rows, out=out: np.save(out + ".npy", np.array(rows, dtype=object), allow_pickle=True)))
    rows = sorted(np.load(out + ".npy", allow_pickle=True).tolist(), key=lambda row: row[0])
    assert [row[0] for row in rows] == [f"img-{i:02d}" for i in range(len(images))]
    want = tfattr.Gradient(load_model(model_path), batch_size=32).attribute(_scaled(images))
    _close(np.stack([row[1] for row in rows]), want.attributions)
    assert [row[2] for row in rows] == want.targets.tolist()


def test_handler_errors_name_the_element(model_path, images):
    from tfattr.beam import ExplanationModelHandler

    handler = ExplanationModelHandler(model_path, "gradient", {}, on_error="skip")
    loaded = handler.load_model()
    batch = [{"image": images[0], "index": 0, "id": "a.png"},
             {"image": images[1][:, :, :2], "index": 1, "id": "b.png"},  # 2 channels: the model takes 3
             {"image": images[2], "index": 2, "id": "c.png"}]
    rows = [r.inference for r in handler.run_inference(batch, loaded)]
    assert rows[1]["attributions"] is None and "error" in rows[1] and np.isnan(rows[1]["score"])
    want = tfattr.Gradient(load_model(model_path)).attribute(_scaled(images[[0, 2]]))
    _close(np.stack([rows[0]["attributions"], rows[2]["attributions"]]), want.attributions)
    raising = ExplanationModelHandler(model_path, "gradient", {})
    with pytest.raises(InvalidInputError, match=r"'b\.png' \(item 1\)"):
        list(raising.run_inference(batch, raising.load_model()))
    with pytest.raises(InvalidInputError, match="does not read stepz"):
        ExplanationModelHandler(model_path, "ig", {"stepz": 3})
    with pytest.raises(InvalidInputError, match="on_error"):
        ExplanationModelHandler(model_path, "ig", on_error="ignore")


def test_seed_blocks_do_not_depend_on_beam_batching(model_path, images):
    """A random method (RISE) with seed_block: items of block b draw batch_seed(seed, b), however the
    elements are batched: one batch of 12 (two blocks) equals two calls of the blocks' own seeds."""
    from tfattr.beam import ExplanationModelHandler, batch_seed

    options = {"n_masks": 40, "grid": 4, "batch_size": 32, "seed": 5}
    handler = ExplanationModelHandler(model_path, "rise", options, seed_block=6)
    loaded = handler.load_model()
    batch = [{"image": images[i], "index": i, "id": str(i)} for i in range(12)]
    together = np.stack([r.inference["attributions"] for r in handler.run_inference(batch, loaded)])
    shuffled = [batch[i] for i in (7, 0, 11, 3)]
    apart = {r.example["index"]: r.inference["attributions"] for r in handler.run_inference(shuffled, loaded)}
    model = load_model(model_path)
    for block in (0, 1):
        method = tfattr.RISE(model, n_masks=40, grid=4, batch_size=32, seed=batch_seed(5, block))
        want = method.attribute(_scaled(images[6 * block:6 * block + 6])).attributions
        _close(together[6 * block:6 * block + 6], want)
    for index, got in apart.items():
        _close(got, together[index])
    assert batch_seed(5, 0) != batch_seed(5, 1) and 0 <= batch_seed(5, 1) < 2 ** 53


# -- ExplainImages: files → the store ------------------------------------------------------------------------

def _write_pngs(folder, images):
    import cv2

    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        assert cv2.imwrite(os.path.join(folder, f"im{i:03d}.png"), image[..., ::-1])  # RGB → OpenCV's BGR
    return str(folder)


@pytest.fixture(scope="module")
def folder200(tmp_path_factory):
    images = np.random.default_rng(11).integers(0, 256, (200, SIDE, SIDE, 3), dtype=np.uint8)
    return _write_pngs(tmp_path_factory.mktemp("pngs200"), images), images


def _run(transform, **options):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    with beam.Pipeline(options=PipelineOptions(**options)) as pipeline:
        _ = pipeline | transform


def test_explain_images_on_two_worker_processes_equals_attribute(model_path, folder200, tmp_path):
    """200 PNG files, 2 worker processes: the store holds IG.attribute's maps of the images in file order."""
    from tfattr.beam import ExplainImages
    from tfattr.streaming.store import open_explanations

    folder, images = folder200
    out = str(tmp_path / "store")
    _run(ExplainImages(folder, out, "ig", model_path, {"steps": 8}, chunk=32, value_range=(0, 1)),
         direct_num_workers=2, direct_running_mode="multi_processing")
    store = open_explanations(out)
    assert store.complete and len(store) == 200 and sorted(store.finished_chunks) == list(range(7))
    assert list(store.ids[:]) == [f"im{i:03d}.png" for i in range(200)]
    engine = store.settings["engine_batch_size"]
    want = tfattr.IntegratedGradients(load_model(model_path), steps=8, batch_size=engine).attribute(_scaled(images))
    _close(np.asarray(store.attributions[:]), want.attributions)
    assert np.asarray(store.targets[:]).tolist() == want.targets.tolist()
    np.testing.assert_allclose(np.asarray(store.delta[:]), want.delta, atol=1e-6)
    assert np.asarray(store.valid[:]).all()


@pytest.fixture()
def folder_with_corrupt(tmp_path, images):
    folder = _write_pngs(tmp_path / "pngs", images[:10])
    with open(os.path.join(folder, "im004.png"), "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n not really a png")
    return folder


def test_corrupt_file_skipped_and_reported_or_named(model_path, folder_with_corrupt, images, tmp_path):
    from tfattr.beam import ExplainImages
    from tfattr.streaming.store import open_explanations

    out = str(tmp_path / "skip")
    _run(ExplainImages(folder_with_corrupt, out, "gradient", model_path, chunk=4, on_error="skip",
                       value_range=(0, 1)))
    store = open_explanations(out)
    rows = store.rows()
    row = rows[rows["id"] == "im004.png"].iloc[0]
    assert row["status"] == "skipped" and "im004.png" in row["error"] and row["index"] == 4
    valid = np.asarray(store.valid[:])
    assert valid.tolist() == [i != 4 for i in range(10)]
    maps = np.asarray(store.attributions[:])
    assert np.isnan(maps[4]).all()
    keep = [i for i in range(10) if i != 4]
    want = tfattr.Gradient(load_model(model_path), batch_size=store.settings["engine_batch_size"]).attribute(
        _scaled(images[keep]))
    _close(maps[keep], want.attributions)
    with pytest.raises(Exception, match=r"im004\.png") as raised:
        _run(ExplainImages(folder_with_corrupt, str(tmp_path / "raise"), "gradient", model_path, chunk=4))
    assert "item 4" in str(raised.value)


def test_resume_skips_finished_chunks_and_refuses_other_settings(model_path, images, tmp_path):
    from tfattr.beam import ExplainImages
    from tfattr.streaming.store import open_explanations

    folder = _write_pngs(tmp_path / "pngs", images[:10])
    out = str(tmp_path / "store")
    _run(ExplainImages(folder, out, "ig", model_path, {"steps": 4}, chunk=4))
    first = np.asarray(open_explanations(out).attributions[:])
    done = os.path.join(out, "done")
    stamps = {name: os.stat(os.path.join(done, name)).st_mtime_ns for name in os.listdir(done)}
    os.remove(os.path.join(done, "chunk-00001.json"))  # as if the job died before chunk 1 committed
    again = ExplainImages(folder, out, "ig", model_path, {"steps": 4}, chunk=4)
    assert [k for k, _ in again.prepare()["chunks"]] == [1]  # only the unfinished chunk is read and explained
    _run(again)
    store = open_explanations(out)
    assert sorted(store.finished_chunks) == [0, 1, 2] and store.complete
    for name in ("chunk-00000.json", "chunk-00002.json"):  # finished chunks never rewritten
        assert os.stat(os.path.join(done, name)).st_mtime_ns == stamps[name]
    np.testing.assert_array_equal(np.asarray(store.attributions[:]), first)
    with pytest.raises(ValueError, match="steps"):
        ExplainImages(folder, out, "ig", model_path, {"steps": 5}, chunk=4).prepare()


def test_cli_runner_resumes_the_local_commands_store(model_path, images, tmp_path, capsys):
    """`explain-dataset` locally, one chunk's marker removed, then `--runner DirectRunner` on the same --out: the
    settings agree (same store), only that chunk is explained again, and the maps equal the local ones."""
    from tfattr.cli import main
    from tfattr.streaming.store import open_explanations

    folder = _write_pngs(tmp_path / "pngs", images[:10])
    out = str(tmp_path / "store")
    flags = ["--model", model_path, "--data", folder, "--out", out, "--method", "ig", "--steps", "4", "--chunk", "4",
             "--batch-size", "16"]
    assert main(["explain-dataset", *flags, "--quiet"]) == 0
    local = np.asarray(open_explanations(out).attributions[:])
    done = os.path.join(out, "done")
    stamp = os.stat(os.path.join(done, "chunk-00000.json")).st_mtime_ns
    os.remove(os.path.join(done, "chunk-00001.json"))
    assert main(["explain-dataset", *flags, "--runner", "DirectRunner", "--direct_num_workers", "1"]) == 0
    store = open_explanations(out)
    assert store.complete and sorted(store.finished_chunks) == [0, 1, 2]
    assert os.stat(os.path.join(done, "chunk-00000.json")).st_mtime_ns == stamp
    assert list(store.ids[:]) == [f"im{i:03d}.png" for i in range(10)]
    _close(np.asarray(store.attributions[:]), local)
    want = tfattr.IntegratedGradients(tfattr.surgery.logits_model(load_model(model_path), missing="ignore"), steps=4,
                                      batch_size=16).attribute(_scaled(images[:10]))
    _close(local, want.attributions)
    capsys.readouterr()
    code = main(["explain-dataset", *flags, "--runner", "DirectRunner", "--direct_num_wrkers", "2"])
    assert code == 2 and "--direct_num_wrkers" in capsys.readouterr().err
    code = main(["explain-dataset", *flags[:-4], "--steps", "5", "--chunk", "4", "--runner", "DirectRunner"])
    assert code == 2 and "steps" in capsys.readouterr().err  # another run's settings on the same --out


def test_evaluate_images_resumes_evaluate_dataset(model_path, images, tmp_path):
    """evaluate_dataset locally, a chunk of one method's store unmarked, then EvaluateImages on the same out: the
    settings agree, that chunk is explained and scored again, and the per-image metric values and the table equal
    the local run's."""
    from tfattr.beam import EvaluateImages
    from tfattr.streaming.evaluate import evaluate_dataset
    from tfattr.streaming.store import open_explanations

    folder = _write_pngs(tmp_path / "pngs", images[:10])
    out = str(tmp_path / "eval")
    methods = ["gradient", ("ig", {"steps": 4, "batch_size": 16})]
    model = load_model(model_path)
    evaluate_dataset(model, folder, methods, ["deletion", "insertion"], out, batch_size=4, value_range=(0, 1),
                     verbose=0)
    local = open_explanations(os.path.join(out, "ig")).rows().sort_values("index")
    with open(os.path.join(out, "table.md"), encoding="utf-8") as handle:
        table = handle.read()
    os.remove(os.path.join(out, "ig", "done", "chunk-00001.json"))
    os.remove(os.path.join(out, "table.md"))
    evaluate = EvaluateImages(folder, out, methods, ["deletion", "insertion"], model_path, chunk=4,
                              value_range=(0, 1))
    assert [k for k, _ in evaluate.prepare()["chunks"]] == [1]
    _run(evaluate)
    again = open_explanations(os.path.join(out, "ig")).rows().sort_values("index")
    for column in ("metric:deletion", "metric:insertion", "score", "delta"):
        np.testing.assert_allclose(again[column].to_numpy(), local[column].to_numpy(), rtol=1e-5, atol=1e-6)
    with open(os.path.join(out, "table.md"), encoding="utf-8") as handle:  # the metric columns (not the seconds)
        assert [line.split("|")[:4] for line in handle.read().splitlines()] == \
            [line.split("|")[:4] for line in table.splitlines()]


def test_tfrecords_across_shards_with_a_bad_record(model_path, images, tmp_path):
    """TFRecords of tf.train.Example (PNG bytes): 2 shards of 13 and 11 records, chunks of 8 straddling them,
    record 5 without an image (skipped, named); ids from the id feature; maps = attribute on the arrays."""
    import cv2
    import tensorflow as tf

    from tfattr.beam import ExplainImages
    from tfattr.streaming.store import open_explanations

    def example(i):
        feature = {"name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"img-{i:02d}".encode()]))}
        if i != 5:
            png = cv2.imencode(".png", images[i][..., ::-1])[1].tobytes()
            feature["image"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[png]))
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    for shard, items in (("a", range(0, 13)), ("b", range(13, 24))):
        with tf.io.TFRecordWriter(str(tmp_path / f"part-{shard}.tfrecord")) as writer:
            for i in items:
                writer.write(example(i))
    out = str(tmp_path / "store")
    _run(ExplainImages(str(tmp_path / "part-*.tfrecord"), out, "gradient", model_path, chunk=8, value_range=(0, 1),
                       id_key="name", on_error="skip"))
    store = open_explanations(out)
    assert store.complete and list(store.ids[:]) == [f"img-{i:02d}" for i in range(24)]
    assert np.asarray(store.valid[:]).tolist() == [i != 5 for i in range(24)]
    rows = store.rows()
    assert "'image'" in rows[rows["index"] == 5].iloc[0]["error"]
    keep = [i for i in range(24) if i != 5]
    want = tfattr.Gradient(load_model(model_path), batch_size=store.settings["engine_batch_size"]).attribute(
        _scaled(images[keep]))
    _close(np.asarray(store.attributions[:])[keep], want.attributions)
    with pytest.raises(Exception, match=r"record 5 of .*part-a\.tfrecord"):
        _run(ExplainImages(str(tmp_path / "part-*.tfrecord"), str(tmp_path / "raise"), "gradient", model_path,
                           chunk=8, value_range=(0, 1)))
