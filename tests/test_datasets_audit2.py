"""Second audit of the dataset surface (issue #30): what falls between explain_dataset, evaluate_dataset,
the store and its third-party readers.

A small CNN at 16 px with non-zero biases (built here, no training) and a few synthetic images keep each
test to seconds.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

import tfattr

N = 8


def _cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv",
                            bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(10, bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 2)),
    ])


@pytest.fixture(scope="module")
def model():
    return _cnn()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(size=(N, 16, 16, 3)).astype(np.float32)


def _folder_with_corrupt_first_batch(path):
    """Two corrupt files sorted first (the whole first batch of 2), then four good 8-bit PNGs."""
    import cv2

    os.makedirs(path)
    for i in range(2):
        with open(os.path.join(path, f"a{i}.png"), "wb") as f:
            f.write(b"not a png")
    rng = np.random.default_rng(1)
    for i in range(4):
        cv2.imwrite(os.path.join(path, f"b{i}.png"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return path


# -- an all-skipped first batch ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gradcam", "permutation"])
def test_all_skipped_first_batch_with_each_kind_of_method(tmp_path, model, kind):
    """With every item of the first batch corrupt, the runner probed the maps' shape with ONE blank
    image: FeaturePermutation (which needs >= 2 images) crashed the run with on_error='skip'. A CAM's
    (H, W) maps keep their shape; the skipped items are NaN and the good ones equal ``attribute``."""
    folder = _folder_with_corrupt_first_batch(str(tmp_path / "imgs"))
    method = tfattr.GradCAM(model, layer="conv") if kind == "gradcam" else tfattr.FeaturePermutation(model)
    tfattr.explain_dataset(method, folder, str(tmp_path / "out"), batch_size=2, on_error="skip",
                           value_range=(0, 1), verbose=0)
    store = tfattr.open_explanations(str(tmp_path / "out"))
    maps = np.asarray(store.attributions[:])
    assert maps.shape == ((6, 16, 16) if kind == "gradcam" else (6, 16, 16, 3))
    assert np.isnan(maps[:2]).all() and not np.isnan(maps[2:]).any()
    assert list(np.asarray(store.valid[:])) == [False, False, True, True, True, True]
    table = tfattr.evaluate_dataset(model, folder, [("m", method)], ["deletion"], str(tmp_path / "eval"),
                                    batch_size=2, on_error="skip", value_range=(0, 1), verbose=0)
    assert table is not None
    rows = tfattr.open_explanations(str(tmp_path / "eval" / "m")).rows()
    rows = rows.to_pandas() if hasattr(rows, "to_pandas") else rows
    rows = rows.sort_values("index")
    assert list(rows["status"]) == ["skipped"] * 2 + ["ok"] * 4
    assert np.isfinite(rows["metric:deletion"].to_numpy()[2:]).all()


# -- third-party readers ---------------------------------------------------------------------------------
def test_store_is_read_by_xarray_dask_and_zarr_as_open_explanations_reads_it(tmp_path, model, images):
    """The docs say the store is readable by xarray, dask and zarr directly: every array, the string ids
    and the dimension names read by each equal what ``open_explanations`` gives."""
    import dask.array as da
    import xarray as xr
    import zarr

    out = str(tmp_path / "out")
    tfattr.explain_dataset(tfattr.IntegratedGradients(model, steps=4), images, out, batch_size=3, verbose=0)
    store = tfattr.open_explanations(out)
    path = os.path.join(out, "data.zarr")
    group = zarr.open_group(path, mode="r")
    ds = xr.open_zarr(path, consolidated=False)
    names = ["attributions", "ids", "targets", "scores", "delta", "valid"]
    assert sorted(group.array_keys()) == sorted(names)
    for name in names:
        ours = np.asarray(getattr(store, name)[:])
        assert ds[name].dims[0] == "item" and group[name].metadata.dimension_names[0] == "item"
        for theirs in (group[name][:], ds[name].values, da.from_zarr(path, component=name).compute()):
            if name == "ids":
                assert [str(v) for v in theirs] == [str(v) for v in ours] == [str(i) for i in range(N)]
            else:
                assert theirs.dtype == ours.dtype
                np.testing.assert_array_equal(theirs, ours)


# -- models of unusual forms ------------------------------------------------------------------------------
def _pngs(path, n=4, channels=3, seed=2):
    import cv2

    os.makedirs(path)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, 16, 16, channels), dtype=np.uint8)
    for i in range(n):
        cv2.imwrite(os.path.join(path, f"{i}.png"), pixels[i][..., ::-1] if channels == 3 else pixels[i])
    return pixels


def _softmax_cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(10, bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 2)),
        keras.layers.Softmax(),
    ])


def test_softmax_head_api_explains_probabilities_and_cli_explains_logits(tmp_path):
    """The docs: the Python function does not strip a softmax head, the command line does. The API's
    scores are the softmax outputs (they sum below 1 per image, each in (0, 1)); the CLI's equal the
    logits of ``logits_model``; the maps are each one's ``attribute``."""
    from tfattr import cli

    model = _softmax_cnn()
    pixels = _pngs(str(tmp_path / "img"))
    x = pixels.astype(np.float32) / 255.0
    logits = tfattr.surgery.logits_model(model)
    tfattr.explain_dataset(tfattr.Gradient(model), str(tmp_path / "img"), str(tmp_path / "api"),
                           value_range=(0, 1), batch_size=2, verbose=0)
    api = tfattr.open_explanations(str(tmp_path / "api"))
    probabilities = np.asarray(model(x))
    targets = probabilities.argmax(1)
    np.testing.assert_allclose(np.asarray(api.scores[:]), probabilities[np.arange(4), targets], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(api.attributions[:]), tfattr.Gradient(model).attribute(x).attributions,
                               rtol=1e-4, atol=1e-7)
    model.save(tmp_path / "m.keras")
    assert cli.main(["explain-dataset", "--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "img"),
                     "--method", "gradient", "--chunk", "2", "--quiet", "--out", str(tmp_path / "cli")]) == 0
    store = tfattr.open_explanations(str(tmp_path / "cli"))
    z = np.asarray(logits(x))
    np.testing.assert_array_equal(np.asarray(store.targets[:]), z.argmax(1))
    np.testing.assert_allclose(np.asarray(store.scores[:]), z[np.arange(4), z.argmax(1)], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(store.attributions[:]), tfattr.Gradient(logits).attribute(x).attributions,
                               rtol=1e-4, atol=1e-6)


def _unusual(kind):
    keras.utils.set_random_seed(0)
    bias = keras.initializers.RandomNormal(0.1, 0.05, 3)
    channels = 1 if kind == "grey" else 3
    layers = [keras.Input((16, 16, channels))]
    if kind == "uint8":
        layers.append(keras.layers.Rescaling(1 / 255.0))
    if kind == "depthwise":
        layers.append(keras.layers.DepthwiseConv2D(3, bias_initializer=bias, activation="relu"))
    else:
        layers.append(keras.layers.Conv2D(4, 3, bias_initializer=bias, activation="relu"))
    if kind == "batchnorm":
        layers.append(keras.layers.BatchNormalization(beta_initializer=bias, moving_mean_initializer=bias))
    layers += [keras.layers.Flatten(), keras.layers.Dense(5, bias_initializer=bias)]
    return keras.Sequential(layers)


@pytest.mark.parametrize("kind", ["uint8", "grey", "batchnorm", "depthwise"])
def test_unusual_models_from_files_equal_attribute_on_the_decoded_images(tmp_path, kind):
    """A 0–255 model (a Rescaling layer) fed 8-bit files with ``value_range=(0, 255)``, a grey model fed
    RGB files with ``channels=1`` (OpenCV's grey decoding), BatchNorm in inference and depthwise conv:
    the store equals ``attribute`` on the images decoded by hand."""
    import cv2

    model = _unusual(kind)
    pixels = _pngs(str(tmp_path / "img"))
    if kind == "uint8":
        x, options = pixels.astype(np.float32), {"value_range": (0, 255)}
    elif kind == "grey":
        # OpenCV's grey decoding, as ``tfattr explain`` (libpng's conversion: not cvtColor's rounding)
        grey = np.stack([cv2.imread(str(tmp_path / "img" / f"{i}.png"), cv2.IMREAD_GRAYSCALE) for i in range(4)])
        grey = grey[..., None]
        x, options = grey.astype(np.float32) / 255.0, {"value_range": (0, 1), "channels": 1}
    else:
        x, options = pixels.astype(np.float32) / 255.0, {"value_range": (0, 1)}
    method = tfattr.IntegratedGradients(model, steps=4, value_range=options["value_range"])
    tfattr.explain_dataset(method, str(tmp_path / "img"), str(tmp_path / "out"), batch_size=3, verbose=0, **options)
    store = tfattr.open_explanations(str(tmp_path / "out"))
    reference = method.attribute(x)
    scale = np.abs(reference.attributions).max()
    np.testing.assert_allclose(np.asarray(store.attributions[:]), reference.attributions, atol=1e-5 * scale)
    np.testing.assert_allclose(np.asarray(store.delta[:]), reference.delta, atol=1e-5 * scale * x[0].size)


# -- baseline_score ------------------------------------------------------------------------------------------
def _rows(store):
    rows = store.rows()
    rows = rows.to_pandas() if hasattr(rows, "to_pandas") else rows
    return rows.sort_values("index").reset_index(drop=True)


def test_baseline_score_local_equals_beam_nan_without_baselines_mean_over_several(tmp_path, model):
    """``baseline_score``: NaN for Gradient (no baseline); for IG with three uniform baselines the mean of
    f(z) over them, as ``attribute`` with the batch's seed reports it; Beam's rows equal the local rows."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from tfattr.beam import ExplainImages
    from tfattr.streaming.explain import batch_seed

    pixels = _pngs(str(tmp_path / "img"), n=6)
    x = pixels.astype(np.float32) / 255.0
    model.save(tmp_path / "m.keras")
    for name, options in (("gradient", {}), ("ig", {"steps": 4, "baseline": "uniform", "n_baselines": 3})):
        local, remote = str(tmp_path / f"{name}-local"), str(tmp_path / f"{name}-beam")
        tfattr.explain_dataset(name, str(tmp_path / "img"), local, model=model, method_options=options, batch_size=4,
                               value_range=(0, 1), seed=5, verbose=0)
        with beam.Pipeline(options=PipelineOptions()) as pipeline:
            _ = pipeline | ExplainImages(str(tmp_path / "img"), remote, name, str(tmp_path / "m.keras"), options,
                                         chunk=4, value_range=(0, 1), seed=5)
        a, b = _rows(tfattr.open_explanations(local)), _rows(tfattr.open_explanations(remote))
        assert a.columns.tolist() == b.columns.tolist() and "baseline_score" in a.columns
        for column in ("id", "index", "target", "status"):
            assert a[column].tolist() == b[column].tolist()
        for column in ("score", "delta", "baseline_score"):
            np.testing.assert_allclose(a[column].to_numpy(), b[column].to_numpy(), rtol=1e-6)
        if name == "gradient":
            assert np.isnan(a["baseline_score"]).all()
            continue
        method = tfattr.IntegratedGradients(model, steps=4, baseline="uniform", n_baselines=3, value_range=(0, 1))
        for k, part in enumerate((slice(0, 4), slice(4, 6))):
            want = method.attribute(x[part], seed=batch_seed(5, k)).baseline_scores
            np.testing.assert_allclose(a["baseline_score"].to_numpy()[part], want, rtol=1e-5)
        assert a["baseline_score"][0] != a["baseline_score"][4]  # each batch draws its own baselines


# -- evaluate_dataset killed and resumed, read while it runs ---------------------------------------------------
_EVAL_CHILD = """
import sys, numpy as np, keras, tfattr
folder = sys.argv[1]
model = keras.models.load_model(folder + "/model.keras")
images, labels = np.load(folder + "/images.npy"), np.load(folder + "/labels.npy")
ig = tfattr.IntegratedGradients(model, steps=4, baseline="uniform", seed=3)
tfattr.evaluate_dataset(model, (images, labels), [("gradient", "gradient"), ("ig", ig)], ["deletion", "insertion"],
                        folder + "/out", target="label", batch_size=6, verbose=0, pixels_per_step=32)
"""


def _evaluate(model, images, labels, out):
    ig = tfattr.IntegratedGradients(model, steps=4, baseline="uniform", seed=3)
    return tfattr.evaluate_dataset(model, (images, labels), [("gradient", "gradient"), ("ig", ig)],
                                   ["deletion", "insertion"], out, target="label", batch_size=6, verbose=0,
                                   pixels_per_step=32)


def test_evaluate_dataset_killed_resumes_to_the_same_table_and_live_reads_are_snapshots(tmp_path, model):
    """evaluate_dataset SIGKILLed in a subprocess after some chunks, then resumed: the per-image rows and
    the table equal an uninterrupted run's. While the child writes, ``open_explanations`` of its stores
    shows only whole finished chunks (their arrays and rows equal the final ones), ``complete`` is False,
    ``len()`` is the number of items and ``rows()`` holds exactly the finished chunks' items."""
    import signal
    import subprocess
    import sys
    import time

    from tfattr.streaming.store import UnfinishedChunkError

    n = 96  # 16 chunks of 6
    rng = np.random.default_rng(4)
    images, labels = rng.uniform(size=(n, 16, 16, 3)).astype(np.float32), rng.integers(0, 10, n)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="3")
    child = subprocess.Popen([sys.executable, "-c", _EVAL_CHILD, str(tmp_path)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    snapshots = []
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and child.poll() is None:
            try:
                store = tfattr.open_explanations(str(out / "ig"))
            except Exception:  # not created yet
                time.sleep(0.05)
                continue
            done = store.finished_chunks
            if done:
                items = np.flatnonzero(np.asarray(store.valid[:]))
                snapshots.append((done, len(store), store.complete, items, np.asarray(store.attributions[items]),
                                  _rows(store)))
                with pytest.raises(UnfinishedChunkError):
                    store.attributions[:]
            if len(done) >= 5:
                break
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert snapshots, "the child wrote no chunk in time"
    killed = tfattr.open_explanations(str(out / "ig"))
    assert not killed.complete and 0 < len(killed.finished_chunks) < 16
    kept_model = keras.models.load_model(tmp_path / "model.keras")
    table = _evaluate(kept_model, images, labels, str(out))
    fresh = _evaluate(kept_model, images, labels, str(tmp_path / "fresh"))
    for name in ("gradient", "ig"):
        a = _rows(tfattr.open_explanations(str(out / name)))
        b = _rows(tfattr.open_explanations(str(tmp_path / "fresh" / name)))
        assert a.columns.tolist() == b.columns.tolist() and len(a) == n
        for column in a.columns:
            if column == "chunk_seconds":  # a timing
                continue
            if a[column].dtype.kind == "f":
                np.testing.assert_array_equal(a[column].to_numpy(), b[column].to_numpy())
            else:
                assert a[column].tolist() == b[column].tolist(), column
    import pandas as pd

    paths = (out / "table.csv", tmp_path / "fresh" / "table.csv")
    tables = [pd.read_csv(path).drop(columns="seconds") for path in paths]
    assert tables[0].equals(tables[1]) and len(tables[0]) == 2  # the bootstrap intervals too (seeded)
    assert table is not None and fresh is not None
    final = tfattr.open_explanations(str(out / "ig"))
    maps, rows = np.asarray(final.attributions[:]), _rows(final)
    for done, length, complete, items, attributions, live_rows in snapshots:
        assert length == n and not complete
        want = np.concatenate([np.arange(k * 6, k * 6 + 6) for k in done])
        np.testing.assert_array_equal(items, want)
        np.testing.assert_array_equal(attributions, maps[items])
        assert live_rows["index"].tolist() == want.tolist()
        np.testing.assert_array_equal(live_rows["metric:deletion"].to_numpy(),
                                      rows["metric:deletion"].to_numpy()[items])


def test_evaluate_dataset_methods_as_objects_or_names_and_the_cli_run_twice_resumes(tmp_path, model, capsys):
    """A method given as ``("ig", {"steps": 4})`` or as an ``IntegratedGradients(model, steps=4)`` object gives
    the same rows and table, and either resumes the other's finished store. ``tfattr evaluate-dataset``
    run twice: the second run rewrites no chunk and writes the same table."""
    import pandas as pd

    from tfattr import cli

    rng = np.random.default_rng(4)
    images, labels = rng.uniform(size=(12, 16, 16, 3)).astype(np.float32), rng.integers(0, 10, 12)
    by_name, by_object = str(tmp_path / "name"), str(tmp_path / "object")
    tfattr.evaluate_dataset(model, (images, labels), [("ig", {"steps": 4})], ["deletion"], by_name, batch_size=6,
                            verbose=0)
    tfattr.evaluate_dataset(model, (images, labels), [("ig", tfattr.IntegratedGradients(model, steps=4))],
                            ["deletion"], by_object, batch_size=6, verbose=0)
    a, b = _rows(tfattr.open_explanations(by_name + "/ig")), _rows(tfattr.open_explanations(by_object + "/ig"))
    for column in ("target", "score", "delta", "baseline_score", "metric:deletion"):
        np.testing.assert_array_equal(a[column].to_numpy(), b[column].to_numpy())
    tfattr.evaluate_dataset(model, (images, labels), [("ig", tfattr.IntegratedGradients(model, steps=4))],
                            ["deletion"], by_name, batch_size=6, verbose=0)  # resumes: nothing to do
    tables = [pd.read_csv(os.path.join(o, "table.csv")).drop(columns="seconds") for o in (by_name, by_object)]
    assert tables[0].equals(tables[1])

    pixels = _pngs(str(tmp_path / "img"), n=6)
    assert pixels.shape[0] == 6
    model.save(tmp_path / "m.keras")
    argv = ["evaluate-dataset", "--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "img"),
            "--methods", "gradient,ig", "--steps", "4", "--metrics", "deletion", "--chunk", "4",
            "--out", str(tmp_path / "cli")]
    assert cli.main(argv) == 0
    done = tmp_path / "cli" / "ig" / "done"
    stamps = {name: os.stat(done / name).st_mtime_ns for name in os.listdir(done)}
    first = pd.read_csv(tmp_path / "cli" / "table.csv").drop(columns="seconds")
    assert cli.main(argv) == 0
    assert {name: os.stat(done / name).st_mtime_ns for name in os.listdir(done)} == stamps and len(stamps) == 2
    assert pd.read_csv(tmp_path / "cli" / "table.csv").drop(columns="seconds").equals(first)
    capsys.readouterr()


def test_feature_permutation_with_a_batch_of_one_image(tmp_path, model, images):
    """FeaturePermutation needs >= 2 images per call: 5 images in batches of 2 left a last batch of one
    and the run died on the method's error after writing two chunks, whatever on_error said. Now
    on_error='raise' is a named error at launch (nothing written) and on_error='skip' skips that image
    with its reason in the row; the other batches equal ``attribute`` on them."""
    from tfattr.errors import InvalidInputError
    from tfattr.streaming.explain import batch_seed

    x = images[:5]
    method = tfattr.FeaturePermutation(model, seed=1)
    with pytest.raises(InvalidInputError, match=r"last batch holds one image.*Received: batch_size=2"):
        tfattr.explain_dataset(method, x, str(tmp_path / "raise"), batch_size=2, verbose=0)
    assert not os.path.isdir(tmp_path / "raise" / "done") or not os.listdir(tmp_path / "raise" / "done")
    with pytest.raises(InvalidInputError, match="last batch holds one image"):
        tfattr.evaluate_dataset(model, x, [("fp", method)], ["deletion"], str(tmp_path / "eval"), batch_size=2,
                                verbose=0)
    store = tfattr.explain_dataset(method, x, str(tmp_path / "skip"), batch_size=2, verbose=0, on_error="skip")
    rows = _rows(store)
    assert rows["status"].tolist() == ["ok"] * 4 + ["skipped"] and "only readable image" in rows["error"][4]
    maps = np.asarray(store.attributions[:])
    assert np.isnan(maps[4]).all()
    for k in range(2):
        want = method.attribute(x[2 * k: 2 * k + 2], seed=batch_seed(1, k)).attributions
        np.testing.assert_allclose(maps[2 * k: 2 * k + 2], want, rtol=1e-5, atol=1e-6)


def test_a_method_made_with_another_value_range_than_the_images_is_named(tmp_path):
    """8-bit files scaled into value_range=(0, 1) explained by an IG made with value_range=(0, 255): its
    uniform baselines were drawn in 0–255 against images in 0–1, silently (no range warning: the images
    lie inside the method's wider range). Now a named error, in explain_dataset and evaluate_dataset; the
    same range, or a method left on its default range, runs."""
    from tfattr.errors import InvalidInputError

    model = _unusual("batchnorm")
    _pngs(str(tmp_path / "img"))
    wide = tfattr.IntegratedGradients(model, steps=4, baseline="uniform", value_range=(0, 255))
    with pytest.raises(InvalidInputError, match=r"value_range=\(0\.0, 255\.0\).*Received: value_range=\(0\.0, 1\.0\)"):
        tfattr.explain_dataset(wide, str(tmp_path / "img"), str(tmp_path / "a"), value_range=(0, 1), verbose=0)
    with pytest.raises(InvalidInputError, match="method 'ig'"):
        tfattr.evaluate_dataset(model, str(tmp_path / "img"), [("ig", wide)], ["deletion"], str(tmp_path / "b"),
                                value_range=(0, 1), verbose=0)
    assert not os.path.exists(tmp_path / "b" / "ig" / "done")
    same = tfattr.IntegratedGradients(model, steps=4, baseline="uniform", value_range=(0, 1), seed=2)
    default = tfattr.IntegratedGradients(model, steps=4, baseline="uniform", seed=2)
    a = tfattr.explain_dataset(same, str(tmp_path / "img"), str(tmp_path / "c"), value_range=(0, 1), verbose=0)
    b = tfattr.explain_dataset(default, str(tmp_path / "img"), str(tmp_path / "d"), value_range=(0, 1), verbose=0)
    np.testing.assert_array_equal(np.asarray(a.attributions[:]), np.asarray(b.attributions[:]))


def test_beam_feature_permutation_with_a_last_chunk_of_one_image_is_named_at_launch(tmp_path, model):
    """ExplainImages and EvaluateImages explain a batch-dependent method one call per chunk: 5 files in
    chunks of 2 left the last chunk with one image, which failed on a worker after the others were
    written; now a named error when the pipeline is built (on_error='raise')."""
    from tfattr.beam import ExplainImages
    from tfattr.errors import InvalidInputError

    _pngs(str(tmp_path / "img"), n=5)
    model.save(tmp_path / "m.keras")
    transform = ExplainImages(str(tmp_path / "img"), str(tmp_path / "out"), "feature-permutation",
                              str(tmp_path / "m.keras"), chunk=2, value_range=(0, 1))
    with pytest.raises(InvalidInputError, match=r"last chunk holds one image.*Received: chunk=2"):
        transform.prepare()
    prepared = ExplainImages(str(tmp_path / "img"), str(tmp_path / "out"), "feature-permutation",
                             str(tmp_path / "m.keras"), chunk=2, value_range=(0, 1), on_error="skip").prepare()
    assert [k for k, _ in prepared["chunks"]] == [0, 1, 2]
    from tfattr.beam import EvaluateImages

    scored = EvaluateImages(str(tmp_path / "img"), str(tmp_path / "eval"), ["gradient", "feature-permutation"],
                            ["deletion"], str(tmp_path / "m.keras"), chunk=2, value_range=(0, 1))
    with pytest.raises(InvalidInputError, match=r"method 'feature-permutation'.*last chunk holds one image"):
        scored.prepare()
