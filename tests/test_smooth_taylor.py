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


def reference_algorithm_1(objective, sigma, i_max=20, s_max=3, alpha=0.1, gamma=0.9, stop_rule="paper"):
    """Algorithm 1 transcribed line by line (scalar), recording every evaluation as (σ, α).

    ``stop_rule="paper"``: decay while ``s ≤ s_max`` (the printed algorithm); ``"code"``: while
    ``s < s_max`` (the authors' code, ``stop_count < max_stop_count``)."""
    evaluated, steps = [], []

    def compute(s):
        evaluated.append(s)
        steps.append(alpha)
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
            if (s <= s_max) if stop_rule == "paper" else (s < s_max):
                alpha, s = alpha * gamma, s + 1
            else:
                break
        else:
            s = 0
            if auc_s < best_auc:
                best_auc, best_sigma = auc_s, sigma
        auc, i = auc_s, i + 1
    return best_sigma, evaluated, steps


#: one ImageNet-normalised unit of a [0, 1] model, in its input units (the authors' α and σ₀ are in these)
UNIT_01 = 0.226


def test_adaptive_noising_follows_algorithm_1_step_by_step(relu_cnn, images):
    """The search runs in normalised units (α = 0.1); the objective and the trace's "sigma" see
    σ in input units, σ_normalised · 0.226 on a [0, 1] model."""
    def mocked(images_, attributions, sigmas, seed, target):
        return (np.asarray(sigmas) / UNIT_01 - 0.37) ** 2

    result = adaptive_noising(SmoothTaylor(relu_cnn), images[:2], objective=mocked, roots=2, sigma0=[0.1, 0.9])
    first = [e["sigma_normalised"] for e in result.trace[0]]
    # by hand: 0.1 → 0.2 → 0.3 → 0.4; 0.5 is worse so back to 0.3 (α ← 0.09); 0.39; 0.48 worse → 0.30 ...
    np.testing.assert_allclose(first[:13], [0.1, 0.2, 0.3, 0.4, 0.5, 0.3, 0.39, 0.48, 0.30, 0.381, 0.462, 0.3, 0.3729],
                               atol=1e-12)
    for e, start in enumerate((0.1, 0.9)):
        sigma_star, evaluated, steps = reference_algorithm_1(lambda s: (s - 0.37) ** 2, start)
        np.testing.assert_allclose([t["sigma_normalised"] for t in result.trace[e]], evaluated, atol=1e-12)
        np.testing.assert_allclose([t["sigma"] for t in result.trace[e]], np.multiply(evaluated, UNIT_01), atol=1e-12)
        np.testing.assert_allclose([t["alpha"] for t in result.trace[e]], steps, atol=1e-12)
        assert result.sigma_normalised[e] == pytest.approx(sigma_star, abs=1e-12)
        assert result.sigma[e] == pytest.approx(sigma_star * UNIT_01, abs=1e-12)
        assert result.evaluations[e] == len(evaluated)
    assert abs(result.sigma_normalised[0] - 0.37) < 0.01


@pytest.mark.parametrize("stop_rule, decays", [("paper", 4), ("code", 3)])
def test_the_code_stop_rule_decays_alpha_once_fewer_than_the_paper(relu_cnn, images, stop_rule, decays):
    """An objective that gets worse at every evaluation: the paper's test (s ≤ s_max) decays α at
    s = 0, 1, 2, 3 and stops at s = 4; the code's (s < s_max) stops at s = 3, one decay earlier."""
    calls = []

    def always_worse(images_, attributions, sigmas, seed, target):
        calls.append(1)
        return np.full(len(sigmas), float(len(calls)))

    result = adaptive_noising(SmoothTaylor(relu_cnn), images[:1], objective=always_worse, roots=2, sigma0=0.5,
                              stop_rule=stop_rule)
    counter = iter(range(1, 100))
    _, evaluated, steps = reference_algorithm_1(lambda s: float(next(counter)), 0.5, stop_rule=stop_rule)
    trace = result.trace[0]
    np.testing.assert_allclose([t["sigma_normalised"] for t in trace], evaluated, atol=1e-12)
    np.testing.assert_allclose([t["alpha"] for t in trace], steps, atol=1e-12)
    assert len(set(t["alpha"] for t in trace)) - 1 == decays
    assert result.evaluations[0] == 1 + 2 * (decays + 1)  # each iteration: σ + α, then back to σ − α
    assert result.sigma_normalised[0] == 0.5  # never improved: σ* = σ₀
    with pytest.raises(ValueError, match=r"stop_rule.*Received: stop_rule='slide'"):
        adaptive_noising(SmoothTaylor(relu_cnn), images[:1], objective=always_worse, stop_rule="slide")


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
    # a repeat with a fixed chunk size is bit-identical; with batch_size="auto" the first calls may
    # run other chunk sizes while measuring, so a repeat agrees to float32 rounding
    fixed_size = dict(batch_size=16)
    once, twice = st.attribute(images, target=1, **fixed_size), st.attribute(images, target=1, **fixed_size)
    np.testing.assert_array_equal(np.asarray(once), np.asarray(twice))
    again = st.attribute(images, target=1)
    np.testing.assert_array_equal(again.info["roots"], used)
    scale = np.abs(np.asarray(expl)).max()
    np.testing.assert_allclose(np.asarray(again), np.asarray(expl), rtol=0, atol=1e-4 * scale)
    with pytest.warns(RuntimeWarning, match="did not reach tolerance"):
        st.attribute(images, target=1, tolerance=1e-4, max_roots=32)


# -- adaptive noising: units, the map returned -------------------------------------------------

#: the ImageNet normalisation the authors' α and σ₀ refer to (torchvision's, RGB)
MEAN_RGB, STD_RGB = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
#: keras.applications' Caffe preprocessing: BGR, minus these means, on the 0–255 scale
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def pixel_wrappers(model):
    """The same classifier on [0, 1] RGB, on [0, 255] RGB (Rescaling in front) and on Caffe inputs
    (BGR, ImageNet mean subtracted, 0–255 scale), each with its value range and normalisation
    (mean, std of the authors' normalised units in its input units)."""
    shape = model.input_shape[1:]
    inputs = keras.Input(shape)
    on_255 = keras.Model(inputs, model(keras.layers.Rescaling(1 / 255)(inputs)))
    inputs = keras.Input(shape)
    rgb = keras.layers.Lambda(lambda v: (v[..., ::-1] + CAFFE_MEAN_BGR[::-1].astype("float32")) / 255.0)(inputs)
    caffe = keras.Model(inputs, model(rgb))
    caffe_range = (float(-CAFFE_MEAN_BGR.max()), float(255 - CAFFE_MEAN_BGR.min()))
    return {
        "[0, 1]": (model, (0.0, 1.0), None, lambda x01: x01, 1.0),
        "[0, 255]": (on_255, (0.0, 255.0), None, lambda x01: x01 * 255, 255.0),
        "caffe": (caffe, caffe_range, (MEAN_RGB[::-1] * 255 - CAFFE_MEAN_BGR, STD_RGB[::-1] * 255),
                  lambda x01: x01[..., ::-1] * 255 - CAFFE_MEAN_BGR, 255.0),
    }


def test_relative_noise_scale_on_a_0_255_model_starts_at_the_authors_sigma0_in_pixels(relu_cnn, images):
    """σ₀ = mean|x_n| of the ImageNet-normalised input, in input units σ₀ · 0.226 · 255 (about 64 for
    uniform pixels): not mean|x| of the 0–255 input scaled by 255 again (≈ 32,000)."""
    on_255 = pixel_wrappers(relu_cnn)["[0, 255]"][0]
    x01 = images[:2]
    st = SmoothTaylor(on_255, roots=2, sigma="adaptive", noise_scale="relative", value_range=(0, 255),
                      objective=lambda images_, a, sigma, seed, target: np.asarray(sigma) * 0.0)
    expl = st.attribute((x01 * 255).astype(np.float32), target=[0, 1])
    sigma0 = np.abs((x01 - MEAN_RGB) / STD_RGB).reshape(2, -1).mean(axis=1)  # authors' code, normalised units
    first = [trace[0] for trace in expl.info["trace"]]
    np.testing.assert_allclose([t["sigma_normalised"] for t in first], sigma0, rtol=1e-5)
    np.testing.assert_allclose([t["sigma"] for t in first], sigma0 * 0.226 * 255, rtol=1e-5)
    assert all(40 < t["sigma"] < 90 for t in first)
    # the objective never improves on σ₀ (a constant): σ* = σ₀, the search's steps α·0.226·255
    np.testing.assert_allclose(expl.info["sigma"], sigma0 * 0.226 * 255, rtol=1e-5)
    np.testing.assert_allclose(expl.info["trace"][0][1]["sigma"] - first[0]["sigma"], 0.1 * 0.226 * 255, rtol=1e-5)


def test_one_image_on_0_1_0_255_and_caffe_models_visits_the_same_relative_sigma_trace(relu_cnn, images):
    """α and σ₀ are converted from the authors' normalised units into each model's input units, so
    σ / (pixel range) follows the same path on the three parametrisations of one classifier.

    Tolerance 1e-6 relative: the three inputs are the same pixels in float32 (a ×255 and a mean
    subtraction, ≤ 1 ulp each), so σ₀ = mean|x_n| agrees to a few float32 ulps (~1e-7); the
    steps are exact multiples of the unit. The objective, a function of σ / (pixel range), makes
    the same decisions whenever σ agrees to far better than its step (≥ 1e-3)."""
    x01 = images[:1].astype(np.float64)
    traces = {}
    for name, (model, value_range, normalisation, to_input, pixel_range) in pixel_wrappers(relu_cnn).items():
        def objective(images_, attributions, sigma, seed, target, pixel_range=pixel_range):
            return (np.asarray(sigma) / pixel_range - 0.1337) ** 2

        result = adaptive_noising(SmoothTaylor(model, value_range=value_range), to_input(x01).astype(np.float32),
                                  objective=objective, target=0, roots=2, i_max=8, normalisation=normalisation)
        traces[name] = np.array([t["sigma"] for t in result.trace[0]]) / pixel_range
        assert result.sigma[0] / pixel_range == pytest.approx(traces[name][np.argmin(
            [t["objective"] for t in result.trace[0]])], rel=1e-12)
    reference = traces["[0, 1]"]
    assert len(reference) >= 10 and np.ptp(reference) > 0.02  # a search that moved
    for name in ("[0, 255]", "caffe"):
        assert len(traces[name]) == len(reference), name
        np.testing.assert_allclose(traces[name], reference, rtol=1e-6, err_msg=name)
    # the same with the real AUPC objective between [0, 1] and [0, 255] (AUPC's noise in each range)
    areas = {}
    for name in ("[0, 1]", "[0, 255]"):
        model, value_range, _, to_input, pixel_range = pixel_wrappers(relu_cnn)[name]

        def aupc(images_, attributions, sigma, seed, target, model=model, value_range=value_range):
            return tfattr.metrics.aupc(model, images_, attributions, target=target, kernel_size=3, regions=3,
                                       perturbations=4, value_range=value_range, seed=seed, verbose=0).area

        result = adaptive_noising(SmoothTaylor(model, value_range=value_range), to_input(x01).astype(np.float32),
                                  objective=aupc, target=0, roots=4, i_max=4)
        areas[name] = (np.array([t["sigma"] for t in result.trace[0]]) / pixel_range,
                       np.array([t["objective"] for t in result.trace[0]]))
    np.testing.assert_allclose(areas["[0, 255]"][0], areas["[0, 1]"][0], rtol=1e-6)
    np.testing.assert_allclose(areas["[0, 255]"][1], areas["[0, 1]"][1], rtol=1e-3, atol=1e-3)


def test_sigma_adaptive_returns_the_best_map_of_the_search_and_its_objective(relu_cnn, images):
    """The map returned is the one evaluated at the trace's best entry (the authors keep it); it
    is reproduced by SmoothTaylor at that entry's σ and seed, and no extra run is spent."""
    def aupc(images_, attributions, sigma, seed, target):
        return tfattr.metrics.aupc(relu_cnn, images_, attributions, target=target, kernel_size=3, regions=3,
                                   perturbations=4, seed=seed, verbose=0).area

    st = SmoothTaylor(relu_cnn, roots=4, sigma="adaptive", objective=aupc, seed=3)
    x, targets = images[:2], np.array([1, 3])
    expl = st.attribute(x, target=targets)
    assert expl.info["adaptive"] and expl.info["stop_rule"] == "paper"
    for e in range(2):
        trace = expl.info["trace"][e]
        best = min(trace, key=lambda t: t["objective"])  # the first of the minima: improvements are strict
        assert expl.info["objective_value"][e] == best["objective"]
        assert expl.info["sigma"][e] == best["sigma"]
        alone = SmoothTaylor(relu_cnn, roots=4, sigma=best["sigma"], seed=best["seed"]).attribute(
            x[e : e + 1], target=int(targets[e]))
        np.testing.assert_allclose(np.asarray(expl)[e], np.asarray(alone)[0], atol=1e-6)
        assert expl.delta[e] == pytest.approx(alone.delta[0], abs=1e-5)
        assert expl.info["taylor_error"][e] == pytest.approx(abs(alone.delta[0]), abs=1e-5)
        assert len({t["seed"] for t in trace}) == len(trace)  # fresh roots at every evaluation
    # gradients: R per evaluation, nothing after the search
    assert expl.gradients == 4 * sum(len(t) for t in expl.info["trace"])
    again = st.attribute(x, target=targets)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(expl))


def test_adaptive_noising_bad_units_are_refused(relu_cnn, images):
    with pytest.raises(ValueError, match=r"normalisation.*Received: normalisation="):
        SmoothTaylor(relu_cnn, normalisation=(0.5, -1.0))
    with pytest.raises(ValueError, match=r"normalisation.*Received: normalisation="):
        adaptive_noising(relu_cnn, images[:1], objective=lambda *a: np.zeros(1), normalisation=([0.1, 0.2], 1.0))
    with pytest.raises(ValueError, match=r"sigma0.*Received: sigma0='paper'"):
        adaptive_noising(relu_cnn, images[:1], objective=lambda *a: np.zeros(1), sigma0="paper")
    slide = adaptive_noising(relu_cnn, images[:1], objective=lambda *a: np.zeros(1), roots=2, sigma0="slide", i_max=1)
    code = adaptive_noising(relu_cnn, images[:1], objective=lambda *a: np.zeros(1), roots=2, i_max=1)
    n = images[0].size  # the slide's (1/√N)·Σ|x_n| is √N times the code's mean|x_n|
    assert slide.trace[0][0]["sigma_normalised"] == pytest.approx(code.trace[0][0]["sigma_normalised"] * np.sqrt(n))
