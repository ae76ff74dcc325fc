"""NoiseTunnel: SmoothGrad / SmoothGrad² / VarGrad, seeded, batched through the engine."""

import math

import numpy as np
import pytest
from conftest import small_cnn

from tfattr import Gradient, IntegratedGradients, NoiseTunnel
from tfattr.core.gradients import input_gradients


def test_zero_noise_smoothgrad_equals_the_wrapped_method(relu_cnn, images):
    for method in (Gradient(relu_cnn), IntegratedGradients(relu_cnn, steps=6)):
        base = np.asarray(method.attribute(images, target=2))
        tunnel = NoiseTunnel(method, nt_samples=4, stdevs=0.0).attribute(images, target=2)
        np.testing.assert_allclose(np.asarray(tunnel), base, atol=1e-6)
    var = NoiseTunnel(Gradient(relu_cnn), nt_type="vargrad", nt_samples=3, stdevs=0.0).attribute(images)
    np.testing.assert_allclose(np.asarray(var), 0.0, atol=1e-10)


def test_smoothgrad_is_the_mean_of_gradients_at_the_drawn_noisy_inputs(relu_cnn, images):
    tunnel = NoiseTunnel(Gradient(relu_cnn), nt_samples=5, noise_level=0.2, seed=11)
    expl = tunnel.attribute(images, target=1)
    noise = tunnel.noise(images.shape[1:], tunnel.config)
    assert noise.std() == pytest.approx(0.2, rel=0.05)  # noise_level · (high − low)
    noisy = (images[:, None] + noise[None]).reshape((-1,) + images.shape[1:]).astype(np.float32)
    _, grads = input_gradients(relu_cnn, noisy, np.full(len(noisy), 1))
    grads = grads.reshape((len(images), 5) + images.shape[1:])
    np.testing.assert_allclose(np.asarray(expl), grads.mean(axis=1), atol=1e-6)
    sq = NoiseTunnel(Gradient(relu_cnn), "smoothgrad_sq", nt_samples=5, noise_level=0.2, seed=11).attribute(images, target=1)
    var = NoiseTunnel(Gradient(relu_cnn), "vargrad", nt_samples=5, noise_level=0.2, seed=11).attribute(images, target=1)
    np.testing.assert_allclose(np.asarray(sq), (grads**2).mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(np.asarray(var), grads.var(axis=1), atol=1e-6)


def test_seeded_determinism_and_batch_invariance(relu_cnn, images):
    tunnel = NoiseTunnel(Gradient(relu_cnn), nt_samples=6, seed=5)
    a, b = np.asarray(tunnel.attribute(images)), np.asarray(tunnel.attribute(images))
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(tunnel.attribute(images, seed=6)) - a).max() > 1e-4
    alone = np.asarray(tunnel.attribute(images[1:2]))
    np.testing.assert_allclose(alone, a[1:2], atol=1e-6)


def test_targets_are_resolved_on_the_clean_input(relu_cnn, images):
    clean_top1 = np.argmax(relu_cnn(images).numpy(), axis=1)
    expl = NoiseTunnel(Gradient(relu_cnn), nt_samples=3, noise_level=0.5).attribute(images)
    np.testing.assert_array_equal(expl.targets, clean_top1)


def test_smoothgrad_of_ig_keeps_completeness_and_samples_are_batched(images):
    model = small_cnn("relu", counter=True)
    counter = model.get_layer("counter").calls
    before = int(counter.numpy())
    tunnel = NoiseTunnel(IntegratedGradients(model, steps=64, rule="riemann_trapezoid", batch_size=32), nt_samples=4)
    expl = tunnel.attribute(images, target=0)
    points = len(images) * 4 * 64
    calls = int(counter.numpy()) - before
    # f(x) on the clean batch (targets), then full chunks of 32 points; the trapezoid's end rows
    # give f(x+ε) and f(z) without extra passes
    assert calls == 1 + math.ceil(points / 32)
    recomputed = np.asarray(expl).reshape(len(images), -1).sum(axis=1) - (expl.scores - expl.baseline_scores)
    np.testing.assert_allclose(expl.delta, recomputed, atol=1e-5)
    assert np.abs(expl.delta).max() < 0.05 * np.abs(expl.scores - expl.baseline_scores).max()


def test_bad_options():
    with pytest.raises(ValueError, match="nt_type"):
        NoiseTunnel(Gradient(small_cnn()), nt_type="smoothgrad2")
    with pytest.raises(ValueError, match="nt_samples"):
        NoiseTunnel(Gradient(small_cnn()), nt_samples=0)
    with pytest.raises(TypeError, match="attribution method instance"):
        NoiseTunnel(small_cnn())


def test_nt_tolerance_draws_blocks_until_the_relative_standard_error_holds():
    """f = v0²: the noisy gradient 2(v0 + ε) has relative standard error σ / (|v0| √n)."""
    from conftest import scalar_model

    model = scalar_model(lambda v: v[:, 0] ** 2, 1)
    x = np.array([10.0, 0.5], np.float32).reshape(2, 1, 1, 1)
    tunnel = NoiseTunnel(Gradient(model), nt_samples=10, stdevs=0.5, nt_tolerance=0.05, nt_max_samples=2000, seed=2)
    expl = tunnel.attribute(x, target=0)
    used = expl.info["nt_samples"]
    assert used[0] == 10  # 0.5 / (10 √10) ≈ 0.016 after the first block
    assert 300 <= used[1] <= 600  # needs n ≳ (0.5 / (0.5 · 0.05))² = 400
    assert np.all(expl.info["relative_standard_error"] <= 0.05)
    np.testing.assert_allclose(np.asarray(expl).ravel(), [20.0, 1.0], rtol=0.1)
    fixed = NoiseTunnel(Gradient(model), nt_samples=10, stdevs=0.5, seed=2).attribute(x[:1], target=0)
    np.testing.assert_allclose(np.asarray(expl)[0], np.asarray(fixed)[0], atol=1e-6)  # block 0 = the fixed draw
    again = tunnel.attribute(x, target=0)
    np.testing.assert_array_equal(np.asarray(expl), np.asarray(again))
    with pytest.warns(RuntimeWarning, match="did not reach nt_tolerance"):
        tunnel.attribute(x, target=0, nt_max_samples=50)
    with pytest.raises(ValueError, match="nt_tolerance"):
        NoiseTunnel(Gradient(model), nt_type="vargrad", nt_tolerance=0.1)


def test_many_samples_without_nt_tolerance_are_not_capped_by_the_tolerance_budget():
    """nt_max_samples bounds the draws of nt_tolerance only; a plain nt_samples=1500 runs 1500 draws."""
    from conftest import scalar_model

    model = scalar_model(lambda v: v[:, 0] ** 2, 1)
    x = np.array([10.0], np.float32).reshape(1, 1, 1, 1)
    tunnel = NoiseTunnel(Gradient(model, batch_size=512), nt_samples=1500, stdevs=0.5, seed=3)
    expl = tunnel.attribute(x, target=0)
    assert expl.gradients == 1500
    noise = tunnel.noise((1, 1, 1), tunnel.config)  # the 1500 draws: mean of 2 (v0 + ε)
    np.testing.assert_allclose(float(np.asarray(expl).ravel()[0]), 2 * (10.0 + noise.mean()), rtol=1e-5)
    with pytest.raises(ValueError, match=r"nt_max_samples.*nt_tolerance.*Received: nt_max_samples=1000"):
        NoiseTunnel(Gradient(model), nt_samples=1500, nt_tolerance=0.05)
    with pytest.raises(ValueError, match="Received: nt_max_samples=2.5"):
        NoiseTunnel(Gradient(model), nt_samples=10, nt_max_samples=2.5)
