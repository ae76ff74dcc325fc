"""The uniform-output baseline (Lerma & Lucas 2022, eq. 8): training, SavedModel export/load, CLI.

The classifier is built, not trained, so every CPU sees the same one: a small VGG-style CNN with
seeded weights (its head's kernel ×4, so that its output moves with the pixels as a trained
classifier's does) whose last bias is set so that a black image gets ``P_BLACK``, one class 0.58
where uniform is 0.25, as a classifier trained on digits pasted on photographs gives black
(``max |p − 1/4|`` = 0.33 by construction). The only training here is the baseline's, which is
what this file tests; its bounds hold with margin.

Documented bound: with the defaults (λ = 0.9, max-abs, RMSprop, learning rate
1e-3·(high − low), ≤ 500 steps, patience 100) the trained baseline stays within a mean squared
pixel change ``MSE(b, b₀) ≤ 0.01`` of black on the [0, 1] scale (RMS change ≤ 0.1; measured
0.0016), while ``max|o_b − 1/K|`` falls at least 10× (measured ~1,000×).
"""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfattr
from tfattr.baselines import (
    BaselineMismatchError,
    BaselineMismatchWarning,
    MaxAbsStallWarning,
    load_baseline,
    model_fingerprint,
    save_baseline,
    train_uniform_baseline,
)
from tfattr.baselines import saved as saved_module
from tfattr.baselines.uniform_output import OUTPUT_LOSSES, RMSpropKeras2
from tfattr.cli import main
from tfattr.errors import InvalidInputError, InvalidTypeError

SIZE, CLASSES = 16, 4
PIXEL_MSE_BOUND = 0.01


def tiny_classifier(softmax=True, size=SIZE, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    h = keras.layers.Rescaling(1.0, offset=-0.5)(inputs)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    outputs = keras.layers.Dense(CLASSES, activation="softmax" if softmax else None)(h)
    return keras.Model(inputs, outputs)


#: the classifier's probabilities on black, set by construction (see :func:`constructed_classifier`)
P_BLACK = (0.58, 0.14, 0.14, 0.14)
#: the head's kernel gain: outputs that move with the pixels (a max-abs error 1,000× lower within a
#: pixel MSE of 0.0016 with the defaults), where the seeded initialisation alone needs an MSE of 0.023
HEAD_GAIN = 4.0


def constructed_classifier(softmax=True, seed=0):
    """:func:`tiny_classifier`'s seeded weights with the head's kernel ×``HEAD_GAIN`` and the head's bias
    set to ``log P_BLACK − z(black)``: on black its softmax is ``P_BLACK`` (to float32 rounding) on any CPU."""
    model = tiny_classifier(softmax=softmax, seed=seed)
    head = model.layers[-1]
    kernel, bias = head.get_weights()
    head.set_weights([kernel * HEAD_GAIN, np.zeros_like(bias)])
    logits = tiny_classifier(softmax=False, seed=seed)
    logits.set_weights(model.get_weights())
    z = keras.ops.convert_to_numpy(logits(np.zeros((1, SIZE, SIZE, 3), np.float32)))[0].astype(np.float64)
    head.set_weights([kernel * HEAD_GAIN, (np.log(P_BLACK) - z).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def classifier():
    return constructed_classifier()


@pytest.fixture(scope="module")
def trained(classifier):
    return train_uniform_baseline(classifier, start="black", verbose=0)


def probabilities(model, image):
    return keras.ops.convert_to_numpy(model(image[None].astype("float32"), training=False))[0].astype(np.float64)


# -- training ---------------------------------------------------------------------------------
def test_training_reduces_max_abs_error_tenfold_with_a_small_pixel_change(classifier, trained):
    weights_before = [w.copy() for w in classifier.get_weights()]
    uniform = 1.0 / CLASSES
    black = np.zeros((SIZE, SIZE, 3), np.float32)
    before = np.abs(probabilities(classifier, black) - uniform).max()
    after = np.abs(probabilities(classifier, trained.baseline) - uniform).max()
    assert before == pytest.approx(0.33, abs=1e-6)  # by construction: black gets 0.58 where "I don't know" is 0.25
    assert after <= before / 10
    change = np.mean((trained.baseline.astype(np.float64) - black) ** 2)
    assert change <= PIXEL_MSE_BOUND
    # the report says what independent forward passes say
    assert trained.before["max_abs_error"] == pytest.approx(before, abs=1e-6)
    assert trained.after["max_abs_error"] == pytest.approx(after, abs=1e-6)
    assert trained.pixels["mean_squared_change"] == pytest.approx(change, rel=1e-6)
    assert trained.after["entropy"] > trained.before["entropy"]
    assert "reduced" in trained.report()
    # the classifier is frozen: untouched by training the baseline
    for old, new in zip(weights_before, classifier.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_lambda_zero_leaves_the_baseline_equal_to_the_start(classifier):
    result = train_uniform_baseline(classifier, start="uniform", lam=0.0, steps=25, patience=None, seed=3, verbose=0)
    assert result.start.std() > 0.2  # a non-trivial start
    np.testing.assert_array_equal(result.baseline, result.start)
    assert result.pixels["mean_squared_change"] == 0.0


@pytest.mark.parametrize("output_loss", OUTPUT_LOSSES)
def test_each_output_loss_is_selectable_and_differentiable(classifier, output_loss):
    result = train_uniform_baseline(classifier, output_loss=output_loss, steps=40, patience=None, verbose=0)
    assert result.config["output_loss"] == output_loss
    p = probabilities(classifier, result.start)
    t = np.full(CLASSES, 1.0 / CLASSES)
    expected = {"maxabs": np.abs(p - t).max(), "mse": np.mean((p - t) ** 2),
                "crossentropy": -(t * np.log(p)).sum()}[output_loss]
    assert result.history["output_loss"][0] == pytest.approx(expected, rel=1e-4)  # the selected loss is used
    # differentiable: gradients reach the pixels and lower the output loss
    assert np.isfinite(result.baseline).all() and np.abs(result.baseline - result.start).max() > 0
    floor = -(t * np.log(t)).sum() if output_loss == "crossentropy" else 0.0  # min of L_out at o_b = o_t
    assert min(result.history["output_loss"]) - floor < 0.8 * (result.history["output_loss"][0] - floor)


def test_logits_are_turned_into_probabilities_and_a_custom_target_is_reached(classifier):
    logits = tiny_classifier(softmax=False)
    logits.set_weights(classifier.get_weights())
    target = np.array([0.1, 0.2, 0.3, 0.4])
    result = train_uniform_baseline(logits, target_distribution=target, output_loss="crossentropy", verbose=0)
    assert result.config["outputs"] == "logits"
    z = keras.ops.convert_to_numpy(logits(np.zeros((1, SIZE, SIZE, 3), np.float32)))[0].astype(np.float64)
    softmax = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert result.before["max"] == pytest.approx(softmax.max(), rel=1e-5)
    assert result.after["max_abs_error"] < result.before["max_abs_error"] / 10


def colour_classifier():
    """Mean colour → softmax over (red, green, blue, all lit), weights set by hand: logits
    ``8·m_k`` for the colours and ``12·(m_r + m_g + m_b) − 16`` for "all lit". Black gets
    (1/3, 1/3, 1/3, e⁻¹⁶/3 ≈ 4e-8): max-abs sees |0 − 1/4| on a class with no gradient."""
    inputs = keras.Input((SIZE, SIZE, 3))
    head = keras.layers.Dense(CLASSES, activation="softmax")
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(inputs)))
    kernel = np.zeros((3, CLASSES), np.float32)
    kernel[[0, 1, 2], [0, 1, 2]] = 8.0
    kernel[:, 3] = 12.0
    head.set_weights([kernel, np.array([0.0, 0.0, 0.0, -16.0], np.float32)])
    return model


def test_maxabs_stalled_on_a_vanishing_class_warns_and_crossentropy_escapes():
    model = colour_classifier()
    black = probabilities(model, np.zeros((SIZE, SIZE, 3), np.float32))
    assert black[3] < 1e-7 and np.allclose(black[:3], 1 / 3)
    with pytest.warns(MaxAbsStallWarning, match="crossentropy"):
        stalled = train_uniform_baseline(model, verbose=0)
    assert stalled.after["max_abs_error"] == pytest.approx(0.25, abs=1e-6)  # stuck at |0 − 1/4|
    escaped = train_uniform_baseline(model, output_loss="crossentropy", learning_rate=1e-2, verbose=0)
    assert escaped.after["max_abs_error"] < stalled.after["max_abs_error"] / 10  # measured 0.0023


def test_rmsprop_keras2_divides_by_sqrt_ms_plus_eps_where_keras3_divides_by_sqrt_of_ms_plus_eps():
    # two steps by hand: ms₁ = 0.1 g₁², w₁ = w₀ − lr g₁/(√ms₁ + ε); ms₂ = 0.9 ms₁ + 0.1 g₂², w₂ = w₁ − lr g₂/(√ms₂ + ε)
    lr, eps = 0.5, 1e-7
    g1, g2 = np.array([6e-5, -2e-4, 0.0, 1.0]), np.array([-3e-5, 1e-4, 5e-5, 1.0])
    w = keras.Variable(np.zeros(4), dtype="float64")
    optimizer = RMSpropKeras2(learning_rate=lr)
    ms1 = 0.1 * g1**2
    w1 = -lr * g1 / (np.sqrt(ms1) + eps)
    ms2 = 0.9 * ms1 + 0.1 * g2**2
    w2 = w1 - lr * g2 / (np.sqrt(ms2) + eps)
    optimizer.apply([tf.constant(g1)], [w])
    np.testing.assert_allclose(w.numpy(), w1, rtol=1e-12, atol=0)
    optimizer.apply([tf.constant(g2)], [w])
    np.testing.assert_allclose(w.numpy(), w2, rtol=1e-12, atol=0)
    # a pixel gradient of 6e-5: Keras 2 steps ≈ lr/√0.1 = 1.58, Keras 3's RMSprop lr·g/√(0.1 g² + ε) = 0.094
    assert w1[0] == pytest.approx(-lr / np.sqrt(0.1), rel=1e-2)
    keras3 = keras.Variable(np.zeros(4), dtype="float64")
    keras.optimizers.RMSprop(learning_rate=lr).apply([tf.constant(g1)], [keras3])
    assert keras3.numpy()[0] == pytest.approx(-lr * g1[0] / np.sqrt(0.1 * g1[0] ** 2 + eps), rel=1e-9)
    assert abs(keras3.numpy()[0]) < abs(w1[0]) / 10


def test_one_trainer_step_with_rmsprop_keras2_is_the_hand_computed_update(classifier):
    # the baseline lives on a 0–1000 scale (preprocess b/1000), so its gradients are ~1e-4 and below, as
    # on a 224-px classifier's 0–255 pixels: there Keras 2's and Keras 3's RMSprop steps part
    lam, lr = 0.99, 1.0

    def to_unit(b):
        return b / 1000.0

    result = train_uniform_baseline(classifier, lam=lam, learning_rate=lr, optimizer="rmsprop_keras2", steps=1,
                                    keep="final", patience=None, preprocess=to_unit, value_range=(0, 1000), verbose=0)
    b0 = tf.constant(np.zeros((1, SIZE, SIZE, 3), np.float32))
    with tf.GradientTape() as tape:
        tape.watch(b0)
        loss = lam * tf.reduce_max(tf.abs(classifier(to_unit(b0), training=False) - 1.0 / CLASSES))  # MSE' = 0 at b0
    g = tape.gradient(loss, b0).numpy()[0].astype(np.float64)
    keras2 = -lr * g / (np.sqrt(0.1 * g**2) + 1e-7)
    keras3 = -lr * g / np.sqrt(0.1 * g**2 + 1e-7)
    assert np.abs(g).max() < 1e-3 and np.abs(keras3).max() < np.abs(keras2).max() / 5
    np.testing.assert_allclose(result.baseline, keras2, rtol=1e-3, atol=1e-3 * np.abs(keras2).max())
    assert result.config["optimizer"] == "rmsprop_keras2" and result.config["keep"] == "final"


def test_keep_final_returns_the_last_steps_baseline_and_keep_best_the_lowest_output_loss(classifier, tmp_path):
    # steps of ±lr/√0.1 ≈ ±9.5 per pixel on the [0, 1] scale throw the baseline far outside: the softmax
    # saturates (max-abs 0.75 = 1 − 1/4) and the start (black, max-abs 0.33) stays the best
    settings = dict(optimizer="rmsprop_keras2", learning_rate=3.0, lam=0.99, steps=2, patience=None, verbose=0)
    final = train_uniform_baseline(classifier, keep="final", **settings)
    best = train_uniform_baseline(classifier, keep="best", **settings)
    losses = np.array(final.history["output_loss"])
    assert len(losses) == 3 and final.steps_run == 2 and losses[-1] > 1.5 * losses[0]
    t = np.full(CLASSES, 1.0 / CLASSES)
    assert np.abs(probabilities(classifier, final.baseline) - t).max() == pytest.approx(losses[-1], rel=1e-4)
    assert final.after["max_abs_error"] == pytest.approx(losses[-1], rel=1e-4)
    assert np.abs(final.baseline).max() > 5.0
    assert best.best_step == 0
    np.testing.assert_array_equal(best.baseline, np.zeros((SIZE, SIZE, 3), np.float32))
    assert "final kept" in final.report() and "final kept" not in best.report()
    save_baseline(final, str(tmp_path / "final"))
    loaded = load_baseline(str(tmp_path / "final"), model=classifier)
    assert loaded.metadata["training"]["keep"] == "final" and "final kept" in loaded.report()
    np.testing.assert_array_equal(loaded.array, final.baseline)
    with pytest.raises(InvalidInputError, match="Received: keep='last'"):
        train_uniform_baseline(classifier, keep="last", verbose=0)
    with pytest.raises(InvalidInputError, match="Received: optimizer='rmsprop2'"):
        train_uniform_baseline(classifier, optimizer="rmsprop2", verbose=0)


def test_invalid_arguments_raise_errors_that_name_the_argument(classifier):
    bad = [
        (dict(lam=1.5), InvalidInputError, "lam"),
        (dict(output_loss="l1"), InvalidInputError, "output_loss"),
        (dict(steps=0), InvalidInputError, "steps"),
        (dict(learning_rate=-1.0), InvalidInputError, "learning_rate"),
        (dict(target_distribution=[0.5, 0.5]), InvalidInputError, "target_distribution"),
        (dict(target_distribution=[0.5, 0.5, 0.5, -0.5]), InvalidInputError, "target_distribution"),
        (dict(start="blur"), InvalidInputError, "start"),
        (dict(start=np.zeros((8, 8, 3))), InvalidInputError, "start"),
        (dict(preprocess="imagenet"), InvalidInputError, "preprocess"),
        (dict(outputs="scores"), InvalidInputError, "outputs"),
        (dict(value_range=(1, 0)), InvalidInputError, "value_range"),
    ]
    for kwargs, error, name in bad:
        with pytest.raises(error, match=f"Received: {name}"):
            train_uniform_baseline(classifier, verbose=0, **kwargs)
    with pytest.raises(InvalidTypeError, match="Received: type\\(model\\)"):
        train_uniform_baseline(lambda x: x)
    free = keras.Sequential([keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(3)])
    with pytest.raises(InvalidInputError, match="fully defined input shape"):
        train_uniform_baseline(free)


def dead_relu_classifier():
    """Black (all 0) reaches hidden ReLU units only with pre-activation −1: the input gradient there is exactly 0."""
    inputs = keras.Input((4, 4, 3))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(8, activation="relu", kernel_initializer=keras.initializers.Constant(0.1),
                           bias_initializer=keras.initializers.Constant(-1.0))(h)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed=0),
                                 bias_initializer=keras.initializers.Constant([1.0, 0.0, -1.0]))(h)
    return keras.Model(inputs, outputs)


def test_a_start_with_a_zero_input_gradient_is_refused_before_any_step():
    model = dead_relu_classifier()
    with pytest.raises(InvalidInputError, match=r"gradient .* is exactly 0 at the start.*start=\"uniform\".*"
                                                r"Received: start='black'"):
        train_uniform_baseline(model, start="black", verbose=0)
    # λ = 0 asks for no change: the start comes back, no error
    kept = train_uniform_baseline(model, start="black", lam=0.0, steps=3, verbose=0)
    np.testing.assert_array_equal(kept.baseline, kept.start)
    # a start where the units are active trains as usual
    result = train_uniform_baseline(model, start="uniform", learning_rate=0.01, steps=200, verbose=0)
    assert result.after["max_abs_error"] < 0.8 * result.before["max_abs_error"]  # measured 0.52×


def test_training_and_loading_emit_no_numpy_deprecation_warning(classifier, tmp_path):
    """NumPy 2 deprecates ``__array__`` without ``copy=``: the fingerprint must not go through it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        trained = train_uniform_baseline(classifier, steps=3, verbose=0)
        path = save_baseline(trained, tmp_path / "b")
        loaded = load_baseline(path, model=classifier)
        model_fingerprint(classifier)
    np.testing.assert_array_equal(loaded.array, trained.baseline)


# -- fingerprint, save, load ----------------------------------------------------------------------
def test_fingerprint_ignores_layer_names_but_not_weights(classifier):
    twin = tiny_classifier()  # same architecture, other auto-generated layer names
    twin.set_weights(classifier.get_weights())
    assert [layer.name for layer in twin.layers] != [layer.name for layer in classifier.layers]
    assert model_fingerprint(twin) == model_fingerprint(classifier)
    twin.layers[-1].kernel.assign(twin.layers[-1].kernel + 1e-3)
    changed = model_fingerprint(twin)
    assert changed["weights"] != model_fingerprint(classifier)["weights"]
    assert changed["architecture"] == model_fingerprint(classifier)["architecture"]


def test_save_then_load_gives_the_identical_tensor_and_metadata(classifier, trained, tmp_path):
    path = save_baseline(trained, tmp_path / "baselines" / "tiny_uniform")
    loaded = load_baseline(path, model=classifier)
    np.testing.assert_array_equal(loaded.array, trained.baseline)
    assert loaded.array.dtype == trained.baseline.dtype == np.float32
    raw = tf.saved_model.load(str(path)).signatures["serving_default"]()["baseline"].numpy()
    np.testing.assert_array_equal(raw, trained.baseline)  # readable by any TF program
    with open(os.path.join(path, "metadata.json"), encoding="utf-8") as handle:
        meta = json.load(handle)
    assert meta == loaded.metadata
    assert meta["model"]["fingerprint"] == model_fingerprint(classifier)["fingerprint"]
    assert meta["baseline"] == {"shape": [SIZE, SIZE, 3], "dtype": "float32", "value_range": [0.0, 1.0],
                                "preprocessing": None, "start": "black"}
    assert (meta["training"]["lam"], meta["training"]["output_loss"]) == (0.9, "maxabs")
    assert meta["training"]["steps"] == 500 and meta["training"]["steps_run"] == trained.steps_run
    assert meta["target_distribution"] == {"kind": "uniform", "values": [0.25] * CLASSES}
    assert meta["statistics"] == json.loads(json.dumps({"before": trained.before, "after": trained.after,
                                                        "pixels": trained.pixels}))
    assert meta["library_version"] == tfattr.__version__
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    assert size < 200_000  # one tensor and a tiny module, no classifier inside
    # a copy of a loaded baseline is the same baseline
    copy = save_baseline(loaded, tmp_path / "copy")
    np.testing.assert_array_equal(load_baseline(copy).array, trained.baseline)


def test_loading_for_a_wrong_model_raises_or_warns(classifier, trained, tmp_path):
    path = save_baseline(trained, tmp_path / "tiny_uniform")
    other = tiny_classifier(seed=1)  # same architecture, other weights
    with pytest.raises(BaselineMismatchError, match="weights"):
        load_baseline(path, model=other)
    with pytest.raises(BaselineMismatchError, match="input shape"):
        load_baseline(path, model=tiny_classifier(size=8))
    with pytest.warns(BaselineMismatchWarning, match="trained for another model"):
        loaded = load_baseline(path, model=other, strict=False)
    np.testing.assert_array_equal(loaded.array, trained.baseline)
    with pytest.raises(InvalidInputError, match="no metadata.json"):
        load_baseline(tmp_path)
    with pytest.raises(InvalidInputError, match="No saved baseline folder"):
        load_baseline(tmp_path / "missing")


def test_an_interrupted_save_leaves_no_half_written_folder(trained, tmp_path, monkeypatch):
    parent = tmp_path / "baselines"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while writing metadata.json")

    monkeypatch.setattr(saved_module, "_write_metadata", crash)
    with pytest.raises(KeyboardInterrupt):
        save_baseline(trained, parent / "tiny_uniform")
    assert os.listdir(parent) == []  # neither the destination nor a temporary folder
    monkeypatch.undo()

    # overwriting: a crash at the final rename keeps the previous complete baseline
    path = save_baseline(trained, parent / "tiny_uniform")
    old_meta = load_baseline(path).metadata
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in os.path.basename(src):
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(saved_module.os, "rename", rename)
    monkeypatch.setattr(saved_module, "_exchange", lambda a, b: False)  # a filesystem without atomic exchange
    with pytest.raises(OSError, match="disk full"):
        save_baseline(trained, path, overwrite=True)
    monkeypatch.undo()
    assert os.listdir(parent) == ["tiny_uniform"]
    assert load_baseline(path).metadata == old_meta


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (renames and deletions are blocked too)."""


@pytest.mark.parametrize("next_access", ["show", "load", "ig", "save"])
def test_a_save_killed_between_its_two_renames_is_recovered_by_the_next_load_show_or_save(
        classifier, trained, tmp_path, monkeypatch, capsys, next_access):
    parent = tmp_path / "baselines"
    path = save_baseline(trained, parent / "tiny_uniform")
    old_meta = load_baseline(path).metadata
    real_rename, renames = os.rename, []

    def rename_then_die(src, dst):
        renames.append((os.path.basename(src), os.path.basename(dst)))
        if len(renames) > 1:
            raise Killed()
        return real_rename(src, dst)

    monkeypatch.setattr(saved_module, "_exchange", lambda a, b: False, raising=False)  # the two-rename fallback
    monkeypatch.setattr(saved_module.os, "rename", rename_then_die)
    monkeypatch.setattr(saved_module.os, "replace", rename_then_die)
    monkeypatch.setattr(saved_module.shutil, "rmtree", lambda *args, **kwargs: None)
    with pytest.raises(Killed):
        save_baseline(trained, path, overwrite=True)
    monkeypatch.undo()
    assert renames[0][0] == "tiny_uniform" and ".tiny_uniform.old-" in renames[0][1]
    assert not os.path.exists(path)  # the state a kill leaves: the old baseline only aside
    assert any(".tiny_uniform.old-" in name for name in os.listdir(parent))

    # whatever comes next puts it back
    if next_access == "show":
        assert main(["baseline", "show", str(path)]) == 0 and "before:" in capsys.readouterr().out
    elif next_access == "load":
        assert load_baseline(path).metadata == old_meta
    elif next_access == "ig":
        x = np.zeros((1, SIZE, SIZE, 3), np.float32)
        expl = tfattr.IntegratedGradients(classifier, steps=4).attribute(x, baseline=str(path))
        assert expl.info["baseline"] == "saved:tiny_uniform"
    else:
        save_baseline(trained, path, overwrite=True)
        assert os.listdir(parent) == ["tiny_uniform"]  # and cleans every leftover of the dead save
        return
    assert load_baseline(path).metadata == old_meta
    save_baseline(trained, path, overwrite=True)  # the next save cleans every leftover of the dead save
    assert os.listdir(parent) == ["tiny_uniform"]


def test_a_save_removes_leftovers_of_dead_saves_and_keeps_those_of_live_ones(trained, tmp_path):
    import socket
    import subprocess
    import sys
    import time

    parent = tmp_path / "baselines"
    path = save_baseline(trained, parent / "tiny_uniform")
    host = getattr(saved_module, "_HOST", socket.gethostname())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leftovers = {
            f".tiny_uniform.tmp-{host}-{dead.pid}-abc": False,  # killed mid-save: removed
            f".tiny_uniform.old-{host}-{dead.pid}-def": False,
            f".tiny_uniform.tmp-{host}-{alive.pid}-ghi": True,  # a concurrent save in progress: kept
            ".tiny_uniform.tmp-legacy1": False,  # no owner recorded, a day old: removed
            ".tiny_uniform.tmp-legacy2": True,  # no owner recorded, fresh: kept
            f".tiny_uniform.tmp-{host}x-{dead.pid}-jkl": True,  # another host's: kept while fresh
            ".other.tmp-legacy3": True,  # another baseline's: not this save's business
        }
        for name in leftovers:
            (parent / name).mkdir()
            (parent / name / "variables.data").write_bytes(b"partial")
        day_ago = time.time() - 2 * 24 * 3600
        os.utime(parent / ".tiny_uniform.tmp-legacy1", (day_ago, day_ago))
        save_baseline(trained, path, overwrite=True)
        kept = {name for name in os.listdir(parent) if name != "tiny_uniform"}
        assert kept == {name for name, keep in leftovers.items() if keep}
    finally:
        alive.kill()
        alive.wait()


def test_an_overwrite_never_leaves_the_destination_missing(trained, tmp_path, monkeypatch):
    """Where the system swaps two folders atomically (Linux renameat2), the destination is never renamed away."""
    path = save_baseline(trained, tmp_path / "tiny_uniform")
    if not getattr(saved_module, "_exchange_supported", lambda folder: True)(str(tmp_path)):
        pytest.skip("no atomic exchange of folders on this filesystem")
    real_rename = os.rename

    def rename(src, dst):
        assert os.path.abspath(src) != os.path.abspath(path), "the destination was renamed away"
        return real_rename(src, dst)

    monkeypatch.setattr(saved_module.os, "rename", rename)
    old_created = load_baseline(path).metadata["created_utc"]
    save_baseline(trained, path, overwrite=True)
    assert os.listdir(tmp_path) == ["tiny_uniform"]
    assert load_baseline(path).metadata["created_utc"] >= old_created


def test_save_refuses_to_replace_without_overwrite_or_a_folder_that_is_not_a_baseline(trained, tmp_path):
    path = save_baseline(trained, tmp_path / "tiny_uniform")
    with pytest.raises(InvalidInputError, match="overwrite=True"):
        save_baseline(trained, path)
    assert save_baseline(trained, path, overwrite=True) == path
    (tmp_path / "photos").mkdir()
    with pytest.raises(InvalidInputError, match="not a saved baseline"):
        save_baseline(trained, tmp_path / "photos", overwrite=True)
    with pytest.raises(InvalidTypeError, match="TrainedBaseline"):
        save_baseline(np.zeros((SIZE, SIZE, 3)), tmp_path / "array")


# -- use in IG-family methods ---------------------------------------------------------------------
def test_ig_takes_a_saved_baseline_folder_or_the_loaded_object(classifier, trained, tmp_path):
    path = save_baseline(trained, tmp_path / "tiny_uniform")
    x = np.random.default_rng(1).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
    ig = tfattr.IntegratedGradients(classifier, steps=8)
    reference = np.asarray(ig.attribute(x, baseline=trained.baseline))
    from_path = ig.attribute(x, baseline=str(path))
    from_object = ig.attribute(x, baseline=load_baseline(path, model=classifier))
    from_training = ig.attribute(x, baseline=trained)
    (tmp_path / "empty").mkdir()
    for expl in (from_path, from_object, from_training):
        np.testing.assert_array_equal(np.asarray(expl), reference)
    assert from_path.info["baseline"] == "saved:tiny_uniform"
    with pytest.raises(InvalidInputError, match="has shape"):
        tfattr.IntegratedGradients(tiny_classifier(size=8), steps=4).attribute(
            np.zeros((1, 8, 8, 3), np.float32), baseline=str(path))
    with pytest.raises(InvalidInputError, match="no metadata.json"):
        ig.attribute(x, baseline=str(tmp_path / "empty"))


# -- command line ---------------------------------------------------------------------------------
def test_cli_trains_saves_and_shows_a_baseline(classifier, tmp_path, capsys):
    model_path = str(tmp_path / "tiny.keras")
    classifier.save(model_path)
    out = str(tmp_path / "saved_baselines" / "tiny_uniform")
    code = main(["baseline", "train", "--model", model_path, "--out", out, "--steps", "30", "--quiet"])
    assert code == 0
    loaded = load_baseline(out, model=classifier)
    assert loaded.metadata["training"]["steps"] == 30
    assert main(["baseline", "show", out, "--model", model_path]) == 0
    shown = capsys.readouterr().out
    assert "before:" in shown and "after:" in shown and "matches" in shown
    assert main(["baseline", "train", "--model", model_path, "--out", out, "--steps", "5", "--quiet"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["baseline", "train", "--model", model_path, "--out", out, "--lam", "2", "--overwrite",
                 "--quiet"]) == 2
    assert "Received: lam=2.0" in capsys.readouterr().err
    assert main(["baseline", "show", str(tmp_path / "missing")]) == 2
    other = str(tmp_path / "other.keras")
    tiny_classifier(seed=1).save(other)
    assert main(["baseline", "show", out, "--model", other]) == 2
    assert "trained for another model" in capsys.readouterr().err


def test_cli_passes_optimizer_and_keep_to_the_trainer(classifier, tmp_path, capsys):
    model_path = str(tmp_path / "tiny.keras")
    classifier.save(model_path)
    out = str(tmp_path / "notebook")
    assert main(["baseline", "train", "--model", model_path, "--out", out, "--steps", "3", "--optimizer",
                 "rmsprop_keras2", "--keep", "final", "--lam", "0.99", "--learning-rate", "0.1", "--quiet"]) == 0
    training = load_baseline(out).metadata["training"]
    assert (training["optimizer"], training["keep"], training["steps_run"]) == ("rmsprop_keras2", "final", 3)
    assert "final kept" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["baseline", "train", "--model", model_path, "--out", out, "--keep", "last"])
    assert "invalid choice: 'last'" in capsys.readouterr().err


def test_cli_model_efficientnet_lite0_builds_the_imagenet_loader_on_0_to_255(classifier, tmp_path, monkeypatch, capsys):
    import tfattr.data

    built = []

    def loader(weights="imagenet"):  # stands in for the 224-px network: the CLI's wiring is under test
        built.append(weights)
        return classifier

    monkeypatch.setattr(tfattr.data, "EfficientNetLite0", loader)
    out = str(tmp_path / "lite0")
    assert main(["baseline", "train", "--model", "efficientnet_lite0", "--out", out, "--steps", "2", "--quiet"]) == 0
    meta = load_baseline(out).metadata
    assert meta["baseline"]["value_range"] == [0.0, 255.0] and meta["baseline"]["preprocessing"] is None
    assert main(["baseline", "show", out, "--model", "efficientnet_lite0"]) == 0
    assert "matches efficientnet_lite0" in capsys.readouterr().out
    assert built == ["imagenet", "imagenet"]


def test_the_fingerprint_tells_apart_configs_holding_large_arrays_that_differ_in_the_middle():
    """A Lambda closing over a 2000-element mask: the config's repr elides the middle of the array, so a
    mask differing there gave the same fingerprint (a baseline trained for one model passed the other's
    check) although the models compute other outputs. Small arrays keep their repr (saved fingerprints
    of models with small config arrays do not change)."""
    import keras

    from tfattr.baselines.records import _canonical, model_fingerprint

    def build(mask):
        x = keras.Input((2000,), name="x")
        masked = keras.layers.Lambda(lambda t: t * mask, name="mask")(x)
        return keras.Model(x, keras.layers.Dense(2, kernel_initializer="ones", name="dense")(masked), name="m")

    ones = np.ones(2000, "float32")
    hole = ones.copy()
    hole[1000] = 0.0
    first, second = build(ones), build(hole)
    probe = np.ones((1, 2000), "float32")
    assert not np.array_equal(first(probe), second(probe))
    assert model_fingerprint(first)["architecture"] != model_fingerprint(second)["architecture"]
    small = np.arange(3.0)
    assert _canonical(small) == repr(small)
