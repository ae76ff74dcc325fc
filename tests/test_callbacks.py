"""SaliencyLogger: the event files a fit writes (tags, steps, pictures), that the logged
attributions follow the training and equal a direct call, the three method forms on
Sequential/Functional/subclassed models and under tf.distribute, no retracing, failures,
and argument errors at construction."""

import glob
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import small_cnn
from keras.src.utils.python_utils import is_default

import tfattr
from tfattr.callbacks import SaliencyLogger, SaliencyLoggerWarning
from tfattr.errors import InvalidInputError, InvalidTypeError
from tfattr.surgery import logits_model, synced
from tfattr.viz import overlay

SIZE = 16
CLASSES = 5


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, SIZE, SIZE, 3)).astype(np.float32), rng.integers(0, CLASSES, n)


def compiled(model, lr=0.05):
    model.compile(keras.optimizers.SGD(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def read_events(run_dir):
    """``{(tag, step): value}`` of every summary in the run; images decoded from PNG."""
    out = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "images":  # [width, height, png, ...]
                    decoded = tf.io.decode_png(tensor[2]).numpy()
                    assert (int(tensor[0]), int(tensor[1])) == (decoded.shape[1], decoded.shape[0])
                    out[(value.tag, event.step)] = decoded
                else:
                    out[(value.tag, event.step)] = float(tensor)
    return out


def tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


class Recorder:
    """A callable metric that keeps a copy of every explanation the logger computed."""

    __name__ = "recorded"

    def __init__(self):
        self.attributions = []

    def __call__(self, model, images, explanation):
        self.attributions.append(explanation.numpy().copy())
        return 0.0


# -- what a fit writes ---------------------------------------------------------------------------
def test_two_epoch_fit_writes_exactly_these_tags_steps_pictures_and_no_other_folders(tmp_path):
    x, y = data()
    model = compiled(small_cnn(size=SIZE, classes=CLASSES))
    probe, labels = x[:3], y[:3]
    logger = SaliencyLogger(tfattr.IntegratedGradients, probe, targets=labels, method_options={"steps": 8},
                            log_dir=tmp_path / "logs", image_dir=tmp_path / "png", max_images=2,
                            metrics=("atv", "completeness", ("aupc", {"kernel_size": 4, "regions": 3, "perturbations": 4})))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, validation_data=(x[:8], y[:8]), callbacks=[logger])

    name = "integrated_gradients"
    events = read_events(tmp_path / "logs" / "saliency")
    images = {f"{name}/image_0", f"{name}/image_1"}
    scalars = {f"{name}/atv", f"{name}/completeness", f"{name}/aupc"}
    assert set(events) == {(tag, step) for tag in images | scalars for step in (0, 1)}
    for (tag, step), value in events.items():
        if tag in images:
            assert value.shape == (SIZE, SIZE, 3) and value.dtype == np.uint8
            assert value.max() > value.min()  # a heatmap, not a blank tile
        else:
            assert value == pytest.approx(logger.history[step].metrics[tag.split("/")[1]], rel=1e-6)
    # the picture of the last step is the overlay of the last explanation on the probe image
    last = logger.last_explanation.numpy()
    for i in range(2):
        np.testing.assert_array_equal(events[(f"{name}/image_{i}", 1)], overlay(probe[i], last[i]))
    # one run folder with one event file (no "validation" or per-fit folders), and the PNGs
    pngs = [f"png/{name}/image_{i}_step_{s:06d}.png" for i in range(2) for s in (0, 1)]
    files = tree(tmp_path)
    assert [f for f in files if f.startswith("png/")] == sorted(pngs)
    assert [os.path.dirname(f) for f in files if not f.startswith("png/")] == ["logs/saliency"]
    assert not [f for f in files if f.endswith(".tmp")]
    assert [r.step for r in logger.history] == [0, 1] and [r.epoch for r in logger.history] == [0, 1]


def test_logged_attributions_follow_the_weights_and_equal_a_direct_call_on_the_trained_model():
    x, y = data()
    model = compiled(small_cnn(size=SIZE, classes=CLASSES))
    probe, labels = x[:4], y[:4]
    recorder = Recorder()
    logger = SaliencyLogger(tfattr.IntegratedGradients, probe, targets=labels, method_options={"steps": 8},
                            metrics=[recorder])
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[logger])
    epoch0, epoch1 = recorder.attributions
    assert np.abs(epoch1 - epoch0).max() > 1e-3 * np.abs(epoch0).max()
    direct = tfattr.IntegratedGradients(model, steps=8).attribute(probe, target=labels).attributions
    np.testing.assert_allclose(epoch1, direct, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(logger.last_explanation.numpy(), epoch1)


# -- binding, reuse, retracing, a second fit ----------------------------------------------------
def test_second_fit_reuses_the_bound_method_without_retracing_and_continues_the_step_axis(tmp_path):
    x, y = data()
    model = compiled(small_cnn(size=SIZE, classes=CLASSES))
    logger = SaliencyLogger(tfattr.IntegratedGradients, x[:2], targets=y[:2], method_options={"steps": 4},
                            log_dir=tmp_path, max_images=1)
    board = keras.callbacks.TensorBoard(tmp_path, update_freq=3, write_graph=False)  # record_if(step % 3 == 0)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[logger, board])
    method = logger.method
    assert method.model is model
    model.fit(x, y, batch_size=32, epochs=3, initial_epoch=2, verbose=0, callbacks=[logger, board])
    assert logger.method is method
    (engine,) = method._engines.values()
    assert engine.traces == 1  # one trace for three logging times and two fits
    assert [r.step for r in logger.history] == [0, 1, 2]
    # the writer of the first fit was closed; the second fit opened a new event file in the same run,
    # and Keras' batch-level record_if did not swallow any summary
    assert len(glob.glob(str(tmp_path / "saliency" / "events.*"))) == 2
    events = read_events(tmp_path / "saliency")
    assert set(events) == {(t, s) for t in ("integrated_gradients/image_0", "integrated_gradients/atv") for s in (0, 1, 2)}
    assert sorted(os.listdir(tmp_path)) == ["saliency", "train"]


def test_every_n_batches_logs_at_the_global_batch_count_across_fits_and_only_then_hooks_batches():
    x, y = data()
    model = compiled(keras.Sequential(small_cnn(size=SIZE, classes=CLASSES).layers))
    guided = tfattr.GuidedBackprop(model)
    logger = SaliencyLogger(guided, x[:2], every_n_batches=3)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[logger])  # batches 1..8
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[logger])  # batches 9..12
    assert [r.step for r in logger.history] == [3, 6, 9, 12]
    assert [r.epoch for r in logger.history] == [0, 1, 0, 0]
    # the guided clone follows the live weights: the last log equals a fresh guided backprop now
    np.testing.assert_allclose(logger.last_explanation.numpy(),
                               tfattr.GuidedBackprop(model).attribute(x[:2]).attributions, rtol=1e-5, atol=1e-7)
    assert not is_default(logger.on_train_batch_end)
    assert is_default(SaliencyLogger(guided, x[:2]).on_train_batch_end)  # epoch mode keeps async batches


def test_every_n_epochs_logs_epochs_0_n_2n_with_a_layer_method_class():
    x, y = data()
    model = compiled(small_cnn(size=SIZE, classes=CLASSES))
    logger = SaliencyLogger(tfattr.GradCAM, x[:2], every_n_epochs=2, method_options={"layer": 2})
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[logger])
    assert [r.step for r in logger.history] == [0, 2]
    assert logger.name == "gradcam" and logger.last_explanation.shape == (2, SIZE, SIZE)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.flat = keras.layers.Flatten()
        self.head = keras.layers.Dense(CLASSES)

    def call(self, inputs):
        return self.head(self.flat(self.conv(inputs)))


def test_subclassed_model_without_inputs_is_explained_with_a_factory_bound_after_it_is_built():
    x, y = data()
    model = compiled(Subclassed())
    assert not model.built
    logger = SaliencyLogger(lambda m: tfattr.NoiseTunnel(tfattr.Gradient(m), nt_samples=3), x[:2], targets=1)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[logger])
    assert logger.method.model is model and logger.name == "smoothgrad_gradient"
    assert [r.step for r in logger.history] == [0, 1]
    direct = tfattr.NoiseTunnel(tfattr.Gradient(model), nt_samples=3).attribute(x[:2], target=1).attributions
    np.testing.assert_allclose(logger.last_explanation.numpy(), direct, rtol=1e-5, atol=1e-7)


def test_inside_a_mirrored_strategy_the_attribution_runs_and_equals_a_direct_call():
    x, y = data()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = compiled(small_cnn(size=SIZE, classes=CLASSES))
        method = tfattr.IntegratedGradients(model, steps=4)
    logger = SaliencyLogger(method, x[:2], metrics=("atv", "completeness"), strict=True)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[logger])
    assert [r.step for r in logger.history] == [0, 1]
    direct = tfattr.IntegratedGradients(model, steps=4).attribute(x[:2]).attributions
    np.testing.assert_allclose(logger.last_explanation.numpy(), direct, rtol=1e-5, atol=1e-7)


# -- failures ----------------------------------------------------------------------------------
class Broken(tfattr.Gradient):
    def attribute(self, inputs, target=None, **options):
        raise RuntimeError("boom in the method")


def test_an_error_in_the_method_warns_and_training_goes_on_without_writing_anything(tmp_path):
    x, y = data()
    model = compiled(small_cnn(size=SIZE, classes=CLASSES))
    logger = SaliencyLogger(Broken, x[:2], log_dir=tmp_path / "logs")
    with pytest.warns(SaliencyLoggerWarning) as caught:
        history = model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[logger])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    for epoch, message in enumerate(messages):
        assert message.startswith(f"SaliencyLogger(gradient) failed at epoch {epoch} (step {epoch}): "
                                  "RuntimeError: boom in the method. Nothing was logged for this step; training continues")
    assert len(history.history["loss"]) == 2 and logger.history == []
    assert not os.path.exists(tmp_path / "logs")  # lazy writer: nothing written, no folder


def test_strict_reraises_the_error_and_stops_training():
    x, y = data()
    model = compiled(small_cnn(size=SIZE, classes=CLASSES))
    epochs = []
    marker = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))
    with pytest.raises(RuntimeError, match="boom in the method"):
        model.fit(x, y, batch_size=32, epochs=3, verbose=0,
                  callbacks=[marker, SaliencyLogger(Broken, x[:2], strict=True)])
    assert epochs == [0]


def test_a_method_of_another_model_warns_once_but_a_synced_logits_clone_follows_the_training():
    x, y = data()
    model = small_cnn(size=SIZE, classes=CLASSES, softmax=True)
    model.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    other = small_cnn(size=SIZE, classes=CLASSES, seed=1)
    logger = SaliencyLogger(tfattr.Gradient(other), x[:2])
    with pytest.warns(SaliencyLoggerWarning, match="not the model being trained") as caught:
        model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[logger])
    assert len([w for w in caught if issubclass(w.category, SaliencyLoggerWarning)]) == 1
    assert len(logger.history) == 2

    snapshot = SaliencyLogger(lambda m: tfattr.Gradient(logits_model(m)), x[:2])  # a bare clone: stale weights
    with pytest.warns(SaliencyLoggerWarning, match="synced"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[snapshot])
    live = SaliencyLogger(lambda m: tfattr.Gradient(synced(logits_model(m))), x[:2], strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SaliencyLoggerWarning)
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[live])
    assert len(live.history) == 1
    np.testing.assert_allclose(live.last_explanation.numpy(),
                               tfattr.Gradient(synced(logits_model(model))).attribute(x[:2]).attributions,
                               rtol=1e-5, atol=1e-7)


# -- arguments ---------------------------------------------------------------------------------
MODEL = small_cnn(size=SIZE, classes=CLASSES)
PROBE = data(4)[0]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(probe_images=None), InvalidInputError, r"`probe_images` is required.*Received: probe_images=None"),
        (dict(probe_images=PROBE[0]), InvalidInputError, r"batch.*Received: probe_images.shape=\(16, 16, 3\)"),
        (dict(probe_images=PROBE[:0]), InvalidInputError, r"empty.*Received: probe_images.shape=\(0, 16, 16, 3\)"),
        (dict(probe_images=(PROBE * 255).astype(np.uint8)), InvalidTypeError, r"floating-point.*probe_images.dtype='uint8'"),
        (dict(probe_images=PROBE[..., :2]), InvalidInputError, r"channels must be 3.*Received: probe_images.shape=\(4, 16, 16, 2\)"),
        (dict(probe_images=np.zeros((4, 20, 20, 3), np.float32)), InvalidInputError, r"axis 1 must be 16"),
        (dict(probe_images="cat.png"), InvalidTypeError, r"Received: type\(probe_images\)='str'"),
        (dict(every_n_epochs=0), InvalidInputError, r"`every_n_epochs` must be an integer ≥ 1\. Received: every_n_epochs=0$"),
        (dict(every_n_epochs=1.5), InvalidInputError, r"Received: every_n_epochs=1.5$"),
        (dict(every_n_batches=0), InvalidInputError, r"Received: every_n_batches=0$"),
        (dict(every_n_batches=5, every_n_epochs=2), InvalidInputError, r"not both.*Received: every_n_epochs=2$"),
        (dict(max_images=-1), InvalidInputError, r"Received: max_images=-1$"),
        (dict(targets=[1, 2]), InvalidInputError, r"4 class indices.*Received: targets=\[1, 2\]"),
        (dict(targets=np.eye(5)[:4]), InvalidInputError, r"argmax.*Received: targets.shape=\(4, 5\)"),
        (dict(metrics=("tv",)), InvalidInputError, r"Unknown metric 'tv'.*Received: metrics='tv'"),
        (dict(metrics=("autvc",)), InvalidInputError, r"min_size=30.*Received: probe_images.shape=\(4, 16, 16, 3\)"),
        (dict(metrics=(("aupc", {"regons": 3}),)), InvalidInputError, r"unknown option\(s\) \['regons'\]"),
        (dict(metrics=(lambda m, x, e: 0.0,)), InvalidInputError, r"needs a name"),
        (dict(mode="log"), InvalidInputError, r"Received: mode='log'$"),
        (dict(value_range=(1, 0)), InvalidInputError, r"Received: value_range=\(1, 0\)$"),
        (dict(method_options={"steps": 4}), InvalidInputError, r"only goes with a method class"),
        (dict(method=tfattr.IntegratedGradients, method_options={"stepz": 4}), InvalidTypeError, r"unknown option\(s\) \['stepz'\]"),
        (dict(method=tfattr.NoiseTunnel), InvalidTypeError, r"factory.*Received: method='NoiseTunnel'"),
        (dict(method="no-such-method"), InvalidInputError, r"unknown method 'no-such-method'.*Received: method='no-such-method'$"),
        (dict(method=42), InvalidTypeError, r"Received: type\(method\)='int'$"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, error, match):
    arguments = dict(method=tfattr.Gradient(MODEL), probe_images=PROBE)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        SaliencyLogger(**arguments)


def test_autvc_on_probes_with_one_pyramid_level_is_refused_at_construction_naming_44_px():
    model = small_cnn(size=32, classes=CLASSES)  # ≥ min_size, but a single pyramid level
    probe = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    with pytest.raises(InvalidInputError, match=r"at least 44×44 pixels.*min_size=30.*Received: probe_images.shape=\(2, 32"):
        SaliencyLogger(method=tfattr.Gradient(model), probe_images=probe, metrics=("autvc",))


def test_named_metrics_of_the_registry_are_logged_as_scalars_equal_to_the_metric_functions(tmp_path):
    """``metrics=("max_sensitivity", ("local_lipschitz_estimate", {...}))``: the registry's metrics, the
    re-explaining ones with the logger's method, for the explained classes; masks' metrics refused."""
    from tfattr import metrics

    x, y = data()
    model = compiled(small_cnn("tanh", size=SIZE, classes=CLASSES))
    method = tfattr.Gradient(model)
    logger = SaliencyLogger(method, x[:2], log_dir=tmp_path / "logs", strict=True, metrics=(
        ("max_sensitivity", {"n_perturb_samples": 3}), ("local_lipschitz_estimate", {"n_perturb_samples": 2})))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[logger])
    record = logger.history[-1]
    targets = logger.last_explanation.targets
    expected = {"max_sensitivity": metrics.max_sensitivity(method, x[:2], targets, n_perturb_samples=3).sensitivity,
                "local_lipschitz_estimate": metrics.local_lipschitz_estimate(method, x[:2], targets,
                                                                             n_perturb_samples=2).score}
    for name, values in expected.items():
        assert record.metrics[name] == pytest.approx(float(np.mean(values)), rel=1e-5)
    events = read_events(os.path.join(tmp_path / "logs", "saliency"))
    assert events[("gradient/max_sensitivity", 0)] == pytest.approx(record.metrics["max_sensitivity"], rel=1e-6)
    with pytest.raises(InvalidInputError, match=r"'pointing_game' compares maps with ground-truth masks"):
        SaliencyLogger(method, x[:2], metrics=("pointing_game",))
    with pytest.raises(InvalidInputError, match=r"unknown option\(s\) \['radius'\]"):
        SaliencyLogger(method, x[:2], metrics=(("max_sensitivity", {"radius": 0.1}),))
