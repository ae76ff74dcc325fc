"""SmoothTaylor (Goh et al. 2020) and Algorithm 1 (adaptive noising)."""

import keras
import numpy as np
import pytest
from conftest import scalar_model, small_cnn

import tfattr
from tfattr import NoiseTunnel, SmoothTaylor, adaptive_noising
from tfattr.core.gradients import input_gradients


def test_smoothtaylor_is_smoothgrad_of_gradient_times_minus_noise(relu_cnn, images):
    """The paper's theorem: ST(x) = mean_r ∇f(x + ε_r) ⊙ (−ε_r) for the same draws."""
    st = SmoothTaylor(relu_cnn, roots=12, sigma=0.3, seed=4)
    expl = st.attribute(images, target=2)
    eps = 0.3 * st.roots(images.shape[1:], st.config)[0]  # (R, H, W, C), shared by the batch
    noisy = (images[:, None] + eps[None]).reshape((-1,) + images.shape[1:]).astype(np.float32)
    _, grads = input_gradients(relu_cnn, noisy, np.full(len(noisy), 2))
    grads = grads.reshape((len(images), 12) + images.shape[1:])
    np.testing.assert_allclose(np.asarray(expl), (grads * -eps[None]).mean(axis=1), atol=1e-6)
    assert expl.gradients == len(images) * 12


def test_linear_model_gives_minus_mean_noise_times_weights_and_zero_taylor_error():
    w = np.array([0.5, -2.0, 3.0], np.float32)
    model = scalar_model(lambda v: keras.ops.sum(v * w, axis=1) + 1.0, 3)
    x = np.array([[[[0.2, 0.4, -0.1]]]], np.float32)
    st = SmoothTaylor(model, roots=40, sigma=0.7, seed=1)
    expl = st.attribute(x, target=0)
    eps = 0.7 * st.roots(x.shape[1:], st.config)[0]
    np.testing.assert_allclose(np.asarray(expl).ravel(), -eps.reshape(40, 3).mean(axis=0) * w, atol=1e-6)
    assert expl.info["taylor_error"][0] < 1e-6


def test_quadratic_model_reconstruction_error_is_the_mean_squared_noise():
    a = np.array([1.5, 0.5, 2.0], np.float32)
    model = scalar_model(lambda v: keras.ops.sum(a * v**2, axis=1), 3)
    x = np.array([[[[0.3, -0.6, 0.9]]]], np.float64).astype(np.float32)
    st = SmoothTaylor(model, roots=25, sigma=0.4, seed=9)
    expl = st.attribute(x, target=0)
    eps = 0.4 * st.roots(x.shape[1:], st.config)[0].reshape(25, 3)
    expected = float(np.sum(a * (eps**2).mean(axis=0)))
    assert expl.info["taylor_error"][0] == pytest.approx(expected, rel=1e-5)
    assert expl.delta[0] == pytest.approx(-expected, rel=1e-5)  # Σ ST falls short of f(x) − mean f(z)


def test_seeded_determinism_batch_invariance_and_relative_noise(relu_cnn, images):
    st = SmoothTaylor(relu_cnn, roots=8, sigma=0.2, seed=3, batch_size=5)
    a, b = np.asarray(st.attribute(images)), np.asarray(st.attribute(images))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.asarray(st.attribute(images[1:2])), a[1:2], atol=1e-6)
    assert np.abs(np.asarray(st.attribute(images, seed=4)) - a).max() > 1e-4
    relative = SmoothTaylor(relu_cnn, roots=8, sigma=0.1, noise_scale="relative", value_range=(0, 2), seed=3)
    np.testing.assert_allclose(np.asarray(relative.attribute(images)), a, atol=1e-6)  # 0.1 · (2 − 0) = 0.2
    per_image = np.asarray(st.attribute(images, sigma=[0.2, 0.5, 0.2]))
    np.testing.assert_allclose(per_image[[0, 2]], a[[0, 2]], atol=1e-6)
    assert np.abs(per_image[1] - a[1]).max() > 1e-4


def test_zero_sigma_smoothtaylor_is_zero_and_costs_r_gradients(relu_cnn, images):
    expl = SmoothTaylor(relu_cnn, roots=5, sigma=0.0).attribute(images)
    assert np.all(np.asarray(expl) == 0) and np.all(expl.info["taylor_error"] < 1e-6)


def reference_algorithm_1(objective, sigma, i_max=20, s_max=3, alpha=0.1, gamma=0.9):
    """Algorithm 1 transcribed line by line (scalar), recording every evaluation."""
    evaluated = []

    def compute(s):
        evaluated.append(s)
        return objective(s)

    auc = compute(sigma)
    i, s, best_sigma, best_auc = 1, 0, sigma, auc
    while i <= i_max:
        auc_s = compute(abs(sigma + alpha))
        if auc_s > auc:
            sigma = abs(sigma - alpha)
            auc_s = compute(sigma)
        else:
            sigma = abs(sigma + alpha)
        if auc_s > auc:
            if s <= s_max:
                alpha, s = alpha * gamma, s + 1
            else:
                break
        else:
            s = 0
            if auc_s < best_auc:
                best_auc, best_sigma = auc_s, sigma
        auc, i = auc_s, i + 1
    return best_sigma, evaluated


def test_adaptive_noising_follows_algorithm_1_step_by_step(relu_cnn, images):
    def mocked(images_, attributions, sigmas, seed, target):
        return (np.asarray(sigmas) - 0.37) ** 2

    result = adaptive_noising(SmoothTaylor(relu_cnn), images[:2], objective=mocked, roots=2, sigma0=[0.1, 0.9])
    first = [e["sigma"] for e in result.trace[0]]
    # by hand: 0.1 → 0.2 → 0.3 → 0.4; 0.5 is worse so back to 0.3 (α ← 0.09); 0.39; 0.48 worse → 0.30 ...
    np.testing.assert_allclose(first[:13], [0.1, 0.2, 0.3, 0.4, 0.5, 0.3, 0.39, 0.48, 0.30, 0.381, 0.462, 0.3, 0.3729],
                               atol=1e-12)
    for e, start in enumerate((0.1, 0.9)):
        sigma_star, evaluated = reference_algorithm_1(lambda s: (s - 0.37) ** 2, start)
        np.testing.assert_allclose([t["sigma"] for t in result.trace[e]], evaluated, atol=1e-12)
        assert result.sigma[e] == pytest.approx(sigma_star, abs=1e-12)
        assert result.evaluations[e] == len(evaluated)
    assert abs(result.sigma[0] - 0.37) < 0.01


def test_adaptive_noising_budget_and_real_objective(relu_cnn, images):
    def mocked(images_, attributions, sigmas, seed, target):
        return (np.asarray(sigmas) - 0.37) ** 2

    capped = adaptive_noising(relu_cnn, images[:1], objective=mocked, roots=2, sigma0=0.1, max_evaluations=4)
    assert capped.evaluations[0] == 4
    model32 = small_cnn("relu", size=44)  # AUTVC needs two pyramid levels: maps of at least 44 px
    x32 = np.random.default_rng(5).uniform(0, 1, (2, 44, 44, 3)).astype(np.float32)
    result = adaptive_noising(SmoothTaylor(model32, batch_size=32), x32, objective="autvc", roots=4, i_max=2)
    # the reported objective is the AUTVC of the reported attributions
    np.testing.assert_allclose(result.objective, tfattr.metrics.autvc(result.attributions).area, rtol=1e-6)
    best = [min(t, key=lambda e: e["objective"]) for t in result.trace]
    np.testing.assert_allclose(result.objective, [b["objective"] for b in best])


def test_sigma_adaptive_convenience():
    model32 = small_cnn("relu", size=44)  # AUTVC needs maps of at least 44 px
    st = SmoothTaylor(model32, roots=4, sigma="adaptive", objective="autvc", batch_size=32)
    expl = st.attribute(np.random.default_rng(6).uniform(0, 1, (1, 44, 44, 3)).astype(np.float32))
    assert expl.info["adaptive"] and len(expl.info["trace"][0]) >= 3
    chosen = expl.info["sigma"][0]
    assert chosen in [t["sigma"] for t in expl.info["trace"][0]]


def test_bad_options():
    model = scalar_model(lambda v: v[:, 0], 1)
    with pytest.raises(ValueError, match="noise_scale"):
        SmoothTaylor(model, noise_scale="percent")
    with pytest.raises(ValueError, match="sigma"):
        SmoothTaylor(model, sigma=-1.0)
    with pytest.raises(ValueError, match="roots"):
        SmoothTaylor(model, roots=0)
    assert isinstance(NoiseTunnel(SmoothTaylor(model)), NoiseTunnel)


def test_tolerance_draws_root_blocks_until_the_relative_standard_error_holds(relu_cnn, images):
    st = SmoothTaylor(relu_cnn, roots=16, sigma=0.2, seed=5, tolerance=0.5, max_roots=1600)
    expl = st.attribute(images, target=1)
    used = expl.info["roots"]
    assert np.all(used % 16 == 0) and np.all(expl.info["relative_standard_error"] <= 0.5)
    assert expl.gradients == used.sum()
    # SmoothTaylor's relative standard error falls like c / √n: a tolerance twice as loose needs
    # about a quarter of the roots
    looser = st.attribute(images, target=1, tolerance=1.0)
    assert np.all(looser.info["roots"] <= used) and looser.info["roots"].sum() < 0.5 * used.sum()
    # the first block is the fixed-R draw: a loose enough tolerance stops there and equals SmoothTaylor(R=16)
    first = st.attribute(images, target=1, tolerance=100.0)
    fixed = SmoothTaylor(relu_cnn, roots=16, sigma=0.2, seed=5).attribute(images, target=1)
    assert np.all(first.info["roots"] == 16)
    np.testing.assert_allclose(np.asarray(first), np.asarray(fixed), atol=1e-6)
    np.testing.assert_allclose(first.delta, fixed.delta, atol=1e-5)
    again = st.attribute(images, target=1)
    np.testing.assert_array_equal(np.asarray(expl), np.asarray(again))
    with pytest.warns(RuntimeWarning, match="did not reach tolerance"):
        st.attribute(images, target=1, tolerance=1e-4, max_roots=32)
