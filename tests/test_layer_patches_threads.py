"""A layer method's patched ``call`` is its own thread's: plain calls of the same model, and IG or
Gradient on it, from another thread neither count as the layer's runs nor get patched values
(issue 24 item 8: a false "layer ran 2 times" in 3–6 of 12 calls)."""

import threading

import numpy as np
import pytest
from conftest import assert_float32_close, small_cnn

from tfattr import (
    AblationCAM,
    GradCAM,
    Gradient,
    IntegratedGradients,
    LayerConductance,
    LayerIntegratedGradients,
    RSIGradCAM,
    ScoreCAM,
)


@pytest.fixture(scope="module")
def setup():
    model = small_cnn("relu", size=16)
    images = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")
    return model, images


METHODS = {
    "gradcam": lambda m: GradCAM(m, batch_size=2),
    "rsi": lambda m: RSIGradCAM(m, layer=-4, steps=6, batch_size=4),
    "layer_ig": lambda m: LayerIntegratedGradients(m, layer=1, steps=6, batch_size=4),
    "conductance": lambda m: LayerConductance(m, layer=1, steps=6, batch_size=4),
    "scorecam": lambda m: ScoreCAM(m, batch_size=4),  # the layer tapped, then masked inputs
    "ablationcam": lambda m: AblationCAM(m, batch_size=4),  # the layer tapped, then rows injected at it
}


@pytest.mark.parametrize("name", list(METHODS))
def test_layer_methods_are_unaffected_by_the_model_running_in_another_thread(setup, name):
    model, images = setup
    reference = np.asarray(METHODS[name](model).attribute(images, target=1))
    expected_logits = np.asarray(model(images, training=False))
    stop, problems = threading.Event(), []

    def other_thread():
        ig = IntegratedGradients(model, steps=4, batch_size=4)
        while not stop.is_set():
            try:
                # plain eager calls: each runs every layer's (possibly patched) `call` in Python
                np.testing.assert_allclose(np.asarray(model(images, training=False)), expected_logits,
                                           rtol=1e-5, atol=1e-5)
                Gradient(model, batch_size=2).attribute(images, target=0)
                ig.attribute(images, target=0)
            except Exception as error:  # noqa: BLE001 - reported by the main thread
                problems.append(error)
                return

    worker = threading.Thread(target=other_thread)
    worker.start()
    try:
        for _ in range(12):  # a new object each time: its chunk function is traced (the layer patched) again
            assert_float32_close(np.asarray(METHODS[name](model).attribute(images, target=1)), reference)
    finally:
        stop.set()
        worker.join(timeout=120)
    assert problems == []
