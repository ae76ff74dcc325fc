"""Audit of the dataset runner (explain_dataset / evaluate_dataset, issue #30): the settings compare, the
labels read for ``target="label"`` and the rows, and further edge cases found by attacking the runner.

A small CNN at 16 px with non-zero biases (built here, no training), 40 synthetic images; Gradient (one
pass per image, exact) keeps each test to seconds.
"""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfattr
from tfattr.errors import InvalidInputError
from tfattr.streaming.explain import check_settings, explain_dataset

N = 40


def _cnn(classes=10):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 1)),
        keras.layers.MaxPooling2D(4),
        keras.layers.Flatten(),
        keras.layers.Dense(classes, bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 2)),
    ])


@pytest.fixture(scope="module")
def model():
    return _cnn()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(N, 16, 16, 3)).astype(np.float32), rng.integers(0, 10, N)


def _gradient(model):
    return tfattr.Gradient(model, batch_size=8)


def _rows(store):
    rows = store.rows()
    rows = rows.to_pandas() if hasattr(rows, "to_pandas") else rows
    return rows.sort_values("index").reset_index(drop=True)


# -- the settings compare -----------------------------------------------------------------------------
def test_a_nan_setting_resumes_and_a_boolean_is_not_a_number(tmp_path):
    """JSON reads a recorded NaN back as a NaN that equals nothing: the same run was refused on every
    resume. ``True == 1`` in Python: a flag recorded as a number was accepted as the same setting."""
    stored = {"method": {"options": {"clip": float("nan"), "pair": [0.0, float("nan")], "flag": 1, "n": 1}}}
    check_settings(tmp_path, stored, {"method": {"options": {"clip": math.nan, "pair": (0.0, math.nan), "flag": 1,
                                                              "n": 1.0}}})
    with pytest.raises(InvalidInputError, match=r"method option 'flag': recorded 1, this run true"):
        check_settings(tmp_path, stored, {"method": {"options": {"clip": math.nan, "pair": [0.0, math.nan],
                                                                  "flag": True, "n": 1}}})
    with pytest.raises(InvalidInputError, match=r"method option 'pair': recorded \[0.0, NaN\], this run \[0.0, 1.0\]"):
        check_settings(tmp_path, stored, {"method": {"options": {"clip": math.nan, "pair": [0.0, 1.0], "flag": 1,
                                                                  "n": 1}}})


# -- labels ------------------------------------------------------------------------------------------------
def _labelled(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels))


@pytest.mark.parametrize("kind", ["string", "boolean"])
def test_non_numeric_labels_are_a_named_error_for_target_label(model, data, tmp_path, kind):
    """String labels crashed in NumPy (TypeError: rint of bytes); b'3' would have been read as class 3 on a
    path that converts; boolean labels were silently read as classes 0 and 1."""
    images, labels = data
    values = tf.constant([str(int(v)) for v in labels]) if kind == "string" else tf.constant(labels % 2 == 0)
    with pytest.raises(InvalidInputError, match=rf"target='label' needs integer class labels.*{kind} labels"):
        explain_dataset(_gradient(model), _labelled(images, values), tmp_path / "out", target="label", batch_size=16,
                        verbose=0)


def test_string_labels_are_kept_as_text_in_the_rows_with_another_target(model, data, tmp_path):
    """With top-1 targets the labels only fill the rows' ``label`` column: string labels crashed there
    (float(b'cat'))."""
    images, _ = data
    names = np.array(["cat", "dog", "3"] * 14)[:N]
    store = explain_dataset(_gradient(model), _labelled(images, tf.constant(names)), tmp_path / "out", batch_size=16,
                            verbose=0)
    assert _rows(store)["label"].tolist() == names.tolist()
    expected = _gradient(model).attribute(images)
    np.testing.assert_array_equal(np.asarray(store.targets[:]), expected.targets)


# -- unknown cardinality -------------------------------------------------------------------------------------
def test_a_finished_run_of_unknown_size_reruns_and_a_run_killed_before_finish_completes(model, data, tmp_path,
                                                                                      monkeypatch):
    """37 items in chunks of 16 from a dataset of unknown size: every chunk finished, the stream skipped them
    all and the run counted 3 full chunks (48 items): the same run again was refused ("created for 37
    items, num_items=48") and a run killed between its last commit and ``finish`` could never complete."""
    from tfattr.streaming.store import StoreWriter

    images = data[0][:37]
    source = tf.data.Dataset.from_tensor_slices(images).filter(lambda image: True)
    assert source.cardinality() == tf.data.UNKNOWN_CARDINALITY
    first = explain_dataset(_gradient(model), source, tmp_path / "a", batch_size=16, verbose=0)
    again = explain_dataset(_gradient(model), source, tmp_path / "a", batch_size=16, verbose=0)
    assert len(first) == len(again) == 37 and again.complete
    finish = StoreWriter.finish

    def killed(self, num_items):
        raise KeyboardInterrupt

    monkeypatch.setattr(StoreWriter, "finish", killed)
    with pytest.raises(KeyboardInterrupt):
        explain_dataset(_gradient(model), source, tmp_path / "b", batch_size=16, verbose=0)
    monkeypatch.setattr(StoreWriter, "finish", finish)
    resumed = explain_dataset(_gradient(model), source, tmp_path / "b", batch_size=16, verbose=0)
    assert resumed.complete and len(resumed) == 37
    assert np.asarray(resumed.attributions[:]).tobytes() == np.asarray(first.attributions[:]).tobytes()


# -- models with several outputs -------------------------------------------------------------------------
def _two_heads():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    hidden = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu", bias_initializer="ones")(inputs))
    small = keras.layers.Dense(3, bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 1), name="small")(hidden)
    large = keras.layers.Dense(10, bias_initializer=keras.initializers.RandomNormal(0.1, 0.05, 2), name="large")(hidden)
    return keras.Model(inputs, [small, large])


def test_labels_are_checked_against_the_chosen_output_of_a_model_with_several(data, tmp_path):
    """The runner read no class count from a model with several outputs: a label outside the chosen
    output's classes stopped the whole run with the method's error instead of following on_error
    (skipped and reported), and a class target outside it was only found at the first batch."""
    images, _ = data
    model = _two_heads()
    labels = np.r_[np.zeros(N - 1, int), 5]  # class 5: in the 10-class head, not in the 3-class one
    method = tfattr.Gradient(model, batch_size=8)
    store = explain_dataset(method, (images, labels), tmp_path / "small", target="label", on_error="skip",
                            method_options={"output": "small"}, batch_size=16, verbose=0)
    assert np.flatnonzero(~np.asarray(store.valid[:])).tolist() == [N - 1]
    assert "out of range: the model has 3 classes" in _rows(store).loc[N - 1, "error"]
    large = explain_dataset(tfattr.Gradient(model, batch_size=8, output=1), (images, labels), tmp_path / "large",
                            target="label", on_error="skip", batch_size=16, verbose=0)
    assert np.asarray(large.valid[:]).all() and np.asarray(large.targets[:])[-1] == 5
    with pytest.raises(InvalidInputError, match="the model has 3 classes"):
        explain_dataset(method, images, tmp_path / "target", target=5, method_options={"output": 0}, verbose=0)
    assert not (tmp_path / "target").exists()  # refused before any work


# -- refused runs leave nothing behind ------------------------------------------------------------------------
def test_a_run_refused_at_its_first_batch_leaves_no_store_to_refuse_the_corrected_run(model, data, tmp_path):
    """target='label' on data without labels, one-hot labels, a label out of range with on_error='raise':
    found at the first batch, after the store was created with the wrong run's settings, so the
    corrected command was refused as "a run with other settings" (data.labels recorded null)."""
    images, labels = data
    out = tmp_path / "out"
    with pytest.raises(InvalidInputError, match=r"yields none.*labels='folders'"):
        explain_dataset(_gradient(model), images, out, target="label", batch_size=16, verbose=0)
    with pytest.raises(InvalidInputError, match="one-hot"):
        explain_dataset(_gradient(model), (images, np.eye(10)[labels]), out, target="label", batch_size=16, verbose=0)
    wrong = labels.copy()
    wrong[3] = 10
    with pytest.raises(InvalidInputError, match=r"item 3 .*label 10 is out of range"):
        explain_dataset(_gradient(model), (images, wrong), out, target="label", batch_size=16, verbose=0)
    assert not out.exists()
    store = explain_dataset(_gradient(model), (images, labels), out, target="label", batch_size=16, verbose=0)
    np.testing.assert_array_equal(np.asarray(store.targets[:]), labels)


def test_a_store_inside_a_folder_of_class_folders_is_refused(model, data, tmp_path):
    """out= inside the data folder with labels='folders': the first run worked, and its resume listed the
    store's folder as one more class ('data.labels: recorded [a, z], this run [a, maps, z]') — a run that
    could never be resumed."""
    import cv2

    images, _ = data
    folder = tmp_path / "photos"
    for c, name in enumerate(("a", "z")):
        os.makedirs(folder / name)
        for i in range(3):
            cv2.imwrite(str(folder / name / f"{i}.png"), (images[3 * c + i] * 255).astype(np.uint8))
    for run in (explain_dataset, None):
        with pytest.raises(InvalidInputError, match="inside the data folder"):
            if run is None:
                tfattr.evaluate_dataset(model, folder, ["gradient"], ["deletion"], folder / "eval", labels="folders",
                                        verbose=0)
            else:
                run(_gradient(model), folder, folder / "maps", target="label", labels="folders", verbose=0)
    assert sorted(os.listdir(folder)) == ["a", "z"]
    store = explain_dataset(_gradient(model), folder, folder / "maps", verbose=0)  # no classes: listed by suffix
    again = explain_dataset(_gradient(model), folder, folder / "maps", verbose=0)
    assert len(store) == len(again) == 6


# -- seeds ---------------------------------------------------------------------------------------------
def test_a_seed_in_method_options_is_the_seed_the_batches_draw_from(model, data, tmp_path):
    """method_options={'seed': 5} on a method made with seed=0: recorded as seed 5 in the method's options,
    while every batch drew from batch_seed(0, b) — the maps of seed 0 under a record of seed 5."""
    images, _ = data

    def uniform(seed):
        return tfattr.IntegratedGradients(model, steps=4, batch_size=16, baseline="uniform", seed=seed)

    given = explain_dataset(uniform(0), images, tmp_path / "given", batch_size=16, method_options={"seed": 5},
                            verbose=0)
    made = explain_dataset(uniform(5), images, tmp_path / "made", batch_size=16, verbose=0)
    assert given.settings["seed"] == 5 and given.settings["method"]["options"]["seed"] == 5
    assert np.asarray(given.attributions[:]).tobytes() == np.asarray(made.attributions[:]).tobytes()
    with pytest.raises(InvalidInputError, match=r"`seed` \(3\) and method_options\['seed'\] \(5\) disagree"):
        explain_dataset(uniform(0), images, tmp_path / "both", seed=3, method_options={"seed": 5}, verbose=0)


def test_evaluate_dataset_draws_a_named_methods_batches_from_its_settings_seed(model, data, tmp_path):
    """('ig', {'baseline': 'uniform', 'seed': 7}): recorded with seed 7, drawn from the run's seed 0."""
    images, _ = data
    settings = {"steps": 4, "baseline": "uniform", "seed": 7}
    tfattr.evaluate_dataset(model, images, [("ig", settings)], ["deletion"], tmp_path / "eval", batch_size=16,
                            verbose=0)
    stored = tfattr.open_explanations(tmp_path / "eval" / "ig")
    engine = stored.settings["engine_batch_size"]
    method = tfattr.IntegratedGradients(model, steps=4, baseline="uniform", seed=7, batch_size=engine)
    expected = explain_dataset(method, images, tmp_path / "explained", batch_size=16, verbose=0)
    assert np.asarray(stored.attributions[:]).tobytes() == np.asarray(expected.attributions[:]).tobytes()


# -- a resume over other data ---------------------------------------------------------------------------------
def test_a_resume_over_another_tf_data_pipeline_is_refused(model, data, tmp_path):
    """A tf.data pipeline's recorded description is its element spec, cardinality and repr, nothing of its
    content: a resume over another split, order or preprocessing with the same spec was accepted and
    its chunks mixed into the store. The first batch is now digested (read again on a resume)."""
    images, labels = data

    def pipeline(values, classes):
        return tf.data.Dataset.from_tensor_slices((values, classes))

    out = tmp_path / "out"
    first = explain_dataset(_gradient(model), pipeline(images, labels), out, batch_size=16, verbose=0)
    reference = np.asarray(first.attributions[:])
    os.remove(out / "done" / "chunk-00002.json")  # the last chunk unfinished, as after a kill
    other = images.copy()
    other[0, 0, 0, 0] += 0.25
    for values, classes in ((other, labels), (images[::-1].copy(), labels[::-1].copy()), (images, (labels + 1) % 10)):
        with pytest.raises(InvalidInputError, match="first batch"):
            explain_dataset(_gradient(model), pipeline(values, classes), out, batch_size=16, verbose=0)
    resumed = explain_dataset(_gradient(model), pipeline(images, labels), out, batch_size=16, verbose=0)
    assert resumed.complete and np.asarray(resumed.attributions[:]).tobytes() == reference.tobytes()


def test_evaluate_dataset_names_a_model_with_several_outputs(data, tmp_path):
    """The scoring model's top-1 of a list of outputs crashed in NumPy (boolean index assignment)."""
    model = _two_heads()
    with pytest.raises(InvalidInputError, match="this model has 2: pass the output to score"):
        tfattr.evaluate_dataset(model, data[0], [("gradient", tfattr.Gradient(model, batch_size=8, output=1))],
                                ["deletion"], tmp_path / "eval", batch_size=16, verbose=0)
    assert not (tmp_path / "eval").exists()


def test_per_item_targets_longer_than_a_dataset_of_unknown_size_are_named(model, data, tmp_path):
    """A dataset filtered after its targets were made: its size is unknown up front and the longer target
    array was silently accepted, pairing later items with other items' classes."""
    images, labels = data
    kept = tf.data.Dataset.from_tensor_slices(images).filter(lambda image: tf.reduce_mean(image) > 0)  # all kept
    with pytest.raises(InvalidInputError, match=rf"`target` holds {N + 1} classes and the data has {N} items"):
        explain_dataset(_gradient(model), kept, tmp_path / "out", target=np.r_[labels, 0], batch_size=16, verbose=0)
    store = explain_dataset(_gradient(model), kept, tmp_path / "ok", target=labels, batch_size=16, verbose=0)
    assert store.complete and np.array_equal(np.asarray(store.targets[:]), labels)


def test_a_wrapped_methods_engine_chunk_size_is_used_not_measured(model, data, tmp_path, monkeypatch):
    """NoiseTunnel(Gradient(model, batch_size=24)): the tunnel has no batch_size option, so the runner
    measured an 'auto' size (extra passes) and explained with it instead of the 24 the user set."""
    from tfattr.streaming import explain as runner

    def measured(*args, **kwargs):
        raise AssertionError("measured")

    monkeypatch.setattr(runner, "engine_batch_size", measured)
    tunnel = tfattr.NoiseTunnel(tfattr.Gradient(model, batch_size=24), nt_samples=3, seed=1)
    store = explain_dataset(tunnel, data[0], tmp_path / "out", batch_size=16, verbose=0)
    assert store.settings["engine_batch_size"] == 24


def test_images_that_do_not_fit_the_model_leave_no_store_and_name_image_size(model, data, tmp_path):
    """20-px images for a 16-px model with an integer engine size: the method's error came at the first
    batch, after the store was created, and the corrected run (image_size=(16, 16)) was refused as
    'data.image_size: recorded null'."""
    images = np.random.default_rng(1).uniform(size=(N, 20, 20, 3)).astype(np.float32)
    out = tmp_path / "out"
    for method in (_gradient(model), tfattr.NoiseTunnel(_gradient(model), nt_samples=2)):
        with pytest.raises(InvalidInputError, match=r"of shape \(20, 20, 3\), do not fit the model \(image_size="):
            explain_dataset(method, images, out, batch_size=16, verbose=0)
        assert not out.exists()
    store = explain_dataset(_gradient(model), images, out, batch_size=16, image_size=(16, 16), verbose=0)
    assert store.complete and store.attributions.shape == (N, 16, 16, 3)
