"""target=None on methods whose rows are all at x: the top-1 class is picked in the gradient pass.

Grad-CAM, the gradient and input × gradient then cost one forward+backward per chunk and no
forward pass of their own; the classes and scores reported are those of a separate forward pass.
"""

import numpy as np
import pytest
from conftest import assert_float32_close, small_cnn

from tfattr import GradCAM, Gradient, GuidedBackprop, InputXGradient, IntegratedGradients


@pytest.mark.parametrize("method", [GradCAM, Gradient, InputXGradient])
def test_top1_costs_one_forward_backward_and_matches_the_explicit_class(method, images):
    model = small_cnn("relu", counter=True)
    counter = model.get_layer("counter").calls
    outputs = model(images, training=False).numpy()
    top1 = outputs.argmax(axis=1)
    explainer = method(model, batch_size=16)
    before = int(counter.numpy())
    found = explainer.attribute(images)
    assert int(counter.numpy()) - before == 1  # the chunk itself: no forward pass for the targets
    np.testing.assert_array_equal(found.targets, top1)
    np.testing.assert_allclose(found.scores, outputs[np.arange(len(images)), top1], rtol=1e-5)
    given = explainer.attribute(images, target=top1)
    assert_float32_close(np.asarray(found), np.asarray(given))


def test_top1_in_the_pass_differs_per_example_and_keeps_guided_and_path_methods_right():
    model = small_cnn("relu", seed=2, classes=7)
    candidates = np.random.default_rng(5).normal(0, 3, size=(64, 16, 16, 3)).astype(np.float32)
    classes = model(candidates, training=False).numpy().argmax(axis=1)
    picks = [int(np.flatnonzero(classes == c)[0]) for c in np.unique(classes)][:4]
    images = candidates[picks]
    top1 = classes[picks]
    assert len(set(top1.tolist())) > 1  # the examples' classes differ: a shared class would hide a mix-up
    np.testing.assert_array_equal(GuidedBackprop(model).attribute(images).targets, top1)
    # IG's rows lie along the path: its top-1 is still the class at x (a forward pass of its own)
    ig = IntegratedGradients(model, steps=4)
    np.testing.assert_array_equal(ig.attribute(images).targets, top1)
