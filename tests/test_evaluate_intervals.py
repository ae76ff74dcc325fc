"""evaluate with named metrics, bootstrap intervals over images and paired tests between methods."""

import numpy as np
import pytest
from conftest import small_cnn

import tfattr
from tfattr import metrics
from tfattr.errors import InvalidInputError, InvalidTypeError
from tfattr.evaluation import EvaluationRow, evaluate, format_table

SIZE = 16
FAST = dict(aupc_kernel=4, aupc_regions=2, aupc_perturbations=2, pixels_per_step=64, verbose=False)


@pytest.fixture(scope="module")
def model():
    return small_cnn("tanh", size=SIZE, classes=4, seed=2)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(3).uniform(0, 1, (3, SIZE, SIZE, 3)).astype(np.float32)


# -- bootstrap intervals -----------------------------------------------------------------------------
def test_bootstrap_interval_covers_the_known_mean_at_about_its_rate():
    """600 samples of 40 values from N(μ, 1) and from a skewed exponential: the 95% percentile
    interval covers μ in 0.92–0.975 of them (the binomial SD of a 0.95 rate over 600 is 0.009; the
    percentile bootstrap undercovers slightly at n = 40, by ~0.01 for the normal, ~0.02 for the
    exponential)."""
    rng = np.random.default_rng(0)
    for draw, mean in ((lambda: rng.normal(2.0, 1.0, 40), 2.0), (lambda: rng.exponential(1.0, 40), 1.0)):
        covered = 0
        for trial in range(600):
            low, high = metrics.bootstrap_ci(draw(), n_resamples=1000, seed=trial)
            covered += low <= mean <= high
        assert 0.92 <= covered / 600 <= 0.975, covered / 600


def test_bootstrap_interval_is_seeded_and_leaves_nan_out():
    values = np.random.default_rng(1).normal(size=25)
    first = metrics.bootstrap_ci(values, seed=4)
    assert metrics.bootstrap_ci(values, seed=4) == first
    assert metrics.bootstrap_ci(values, seed=5) != first
    assert first[0] < values.mean() < first[1]
    with_nan = np.concatenate([values, [np.nan, np.nan]])
    assert metrics.bootstrap_ci(with_nan, seed=4) == first
    assert np.isnan(metrics.bootstrap_ci([1.0]) + metrics.bootstrap_ci([np.nan, 2.0])).all()
    wide = metrics.bootstrap_ci(values, confidence=0.99, seed=4)
    assert wide[0] < first[0] and wide[1] > first[1]
    with pytest.raises(InvalidInputError, match=r"`confidence`.*Received: confidence=95"):
        metrics.bootstrap_ci(values, confidence=95)


# -- paired tests ------------------------------------------------------------------------------------
def _rows(columns, metric="AUPC"):
    return [EvaluationRow(name, 0.0, 0, {metric: float(np.mean(v))}, {metric: np.asarray(v, np.float64)})
            for name, v in columns.items()]


@pytest.mark.parametrize("test", ["bootstrap", "wilcoxon"])
def test_paired_test_finds_a_real_difference_and_not_noise(test):
    """``b = a − 0.2 + small noise``: a real improvement (AUPC: lower is better) hidden from unpaired
    intervals by the large spread of ``a`` between images; ``c = a`` ± the same tiny amount in turn:
    no difference."""
    rng = np.random.default_rng(2)
    a = rng.normal(5.0, 2.0, 30)
    b = a - 0.2 + rng.normal(0, 0.05, 30)
    c = a + np.tile([0.01, -0.01], 15)
    result = metrics.paired_test(_rows({"a": a, "b": b, "c": c}), "AUPC", test=test, seed=0)
    by_pair = {(r.first, r.second): r for r in result}
    assert by_pair["a", "b"].significant and by_pair["a", "b"].better == "b"
    assert by_pair["a", "b"].difference == pytest.approx(np.mean(a - b))
    low, high = by_pair["a", "b"].ci
    assert 0 < low < 0.2 < high
    assert not by_pair["a", "c"].significant and by_pair["a", "c"].better is None
    assert by_pair["a", "c"].ci[0] < 0 < by_pair["a", "c"].ci[1]
    assert by_pair["b", "c"].significant and by_pair["b", "c"].better == "b"
    assert all(r.p_adjusted >= r.p_value for r in result)
    # the unpaired intervals of a and b overlap: only the pairing shows the difference
    low_a, _ = metrics.bootstrap_ci(a)
    _, high_b = metrics.bootstrap_ci(b)
    assert low_a < high_b


def test_paired_test_rejects_at_most_about_its_level_under_no_difference():
    """200 datasets of 20 images whose two methods differ by zero-mean noise: the paired bootstrap
    calls at most 9% of them significant at 0.95 (nominal 5%; SD of the rate over 200 is 1.5%, and
    the bootstrap's p is slightly liberal at n = 20)."""
    rng = np.random.default_rng(6)
    rejected = 0
    for trial in range(200):
        a = rng.normal(0, 1, 20)
        rows = _rows({"a": a, "b": a + rng.normal(0, 0.3, 20)})
        rejected += metrics.paired_test(rows, "AUPC", seed=trial, n_resamples=500)[0].significant
    assert rejected / 200 <= 0.09


def test_paired_test_errors_name_the_argument():
    rows = _rows({"a": [1.0, 2.0], "b": [1.5, 2.5]})
    with pytest.raises(InvalidInputError, match=r"`metric`.*Received: metric='AUTVC'"):
        metrics.paired_test(rows, "AUTVC")
    with pytest.raises(InvalidInputError, match=r"`test`.*Received: test='t'"):
        metrics.paired_test(rows, "AUPC", test="t")
    with pytest.raises(InvalidTypeError, match=r"`rows`.*Received: len\(rows\)=1"):
        metrics.paired_test(rows[:1], "AUPC")
    with pytest.raises(InvalidInputError, match=r"same images"):
        metrics.paired_test(rows + _rows({"c": [1.0, 2.0, 3.0]}), "AUPC")


# -- evaluate -------------------------------------------------------------------------------------------
def test_named_metrics_equal_the_metric_functions_with_intervals(model, x):
    method = tfattr.Gradient(model)
    names = ["max_sensitivity", "local_lipschitz_estimate", "autvc", "deletion"]
    options = {"max_sensitivity": {"n_perturb_samples": 3}, "local_lipschitz_estimate": {"n_perturb_samples": 3}}
    (row,) = evaluate(model, x, [("gradient", method)], metrics=names, metric_options=options, seed=5, **FAST)
    assert list(row.per_image) == ["max_sensitivity", "local_lipschitz_estimate", "AUTVC", "deletion"]
    labels = np.argmax(model.predict(x, verbose=0), axis=1)
    expected = {
        "max_sensitivity": metrics.max_sensitivity(method, x, labels, n_perturb_samples=3, seed=5).sensitivity,
        "local_lipschitz_estimate": metrics.local_lipschitz_estimate(method, x, labels, n_perturb_samples=3,
                                                                     seed=5).score,
        "deletion": metrics.deletion(model, x, method.attribute(x, target=labels).attributions, target=labels,
                                     pixels_per_step=64, verbose=0).auc,
    }
    for name, values in expected.items():
        np.testing.assert_allclose(row.per_image[name], values, rtol=1e-6)
        assert row.scores[name] == pytest.approx(np.mean(values))
        assert row.ci[name] == metrics.bootstrap_ci(values, seed=5)
        low, high = row.ci[name]
        assert low <= row.scores[name] <= high
    assert np.isnan(row.scores["AUTVC"]) and "AUTVC left empty" in row.notes[0]  # 16 px < 44 px
    table = format_table([row]).splitlines()
    assert table[0].startswith("| method | max_sensitivity ↓ | local_lipschitz_estimate ↓ | AUTVC ↓ | deletion ↓ |")
    cells = [c.strip() for c in table[2].split("|")]
    assert cells[2] == f"{row.scores['max_sensitivity']:.3f} ± {row.half_width('max_sensitivity'):.3f}"
    assert cells[4] == ""  # AUTVC undefined


def test_the_default_table_gets_intervals_too(model, x):
    (row,) = evaluate(model, x, [("gradient", tfattr.Gradient(model))], seed=1, **FAST)
    assert set(row.ci) == set(row.scores) == {"AUPC", "AUTVC", "deletion", "insertion"}
    assert row.ci["AUPC"] == metrics.bootstrap_ci(row.per_image["AUPC"], seed=1)
    assert " ± " in format_table([row]) and " ± " not in format_table([row], intervals=False)


def test_changing_the_metrics_or_their_options_does_not_serve_a_stale_row(model, x, tmp_path):
    method = tfattr.InputXGradient(model)

    def run(names, options=None):
        return evaluate(model, x, [("m", method)], metrics=names, metric_options=options, cache_dir=tmp_path,
                        **FAST)[0]

    first = run(["max_sensitivity"], {"max_sensitivity": {"n_perturb_samples": 2}})
    assert run(["max_sensitivity"], {"max_sensitivity": {"n_perturb_samples": 2}}).cached
    more = run(["max_sensitivity"], {"max_sensitivity": {"n_perturb_samples": 4}})
    assert not more.cached
    assert not np.allclose(more.per_image["max_sensitivity"], first.per_image["max_sensitivity"])
    other = run(["avg_sensitivity"], {"avg_sensitivity": {"n_perturb_samples": 2}})
    assert not other.cached and list(other.per_image) == ["avg_sensitivity"]
    both = run(["max_sensitivity", "avg_sensitivity"], {"max_sensitivity": {"n_perturb_samples": 2},
                                                        "avg_sensitivity": {"n_perturb_samples": 2}})
    assert not both.cached
    np.testing.assert_array_equal(both.per_image["max_sensitivity"], first.per_image["max_sensitivity"])
    default = evaluate(model, x, [("m", method)], cache_dir=tmp_path, **FAST)[0]
    assert not default.cached and "AUPC" in default.per_image and "max_sensitivity" not in default.per_image


def test_named_metric_errors(model, x):
    method = [("m", tfattr.Gradient(model))]
    with pytest.raises(InvalidInputError, match=r"`metrics` must name registered metrics: aupc, .*"
                                                r"Received: metrics='sharpness'"):
        evaluate(model, x, method, metrics=["aupc", "sharpness"], **FAST)
    with pytest.raises(InvalidInputError, match=r"'pointing_game' compares maps with ground-truth masks"):
        evaluate(model, x, method, metrics=["pointing game"], **FAST)
    with pytest.raises(InvalidInputError, match=r"names 'aupc' twice"):
        evaluate(model, x, method, metrics=["aupc", "AUPC"], **FAST)
    with pytest.raises(InvalidInputError, match=r"takes the options .*Received: metric_options\['max_sensitivity'\]="
                                                r"'radius'"):
        evaluate(model, x, method, metrics=["max_sensitivity"], metric_options={"max_sensitivity": {"radius": 1}},
                 **FAST)
    with pytest.raises(InvalidInputError, match=r"`metric_options` sets options of 'infidelity', which `metrics` "
                                                r"does not name"):
        evaluate(model, x, method, metrics=["aupc"], metric_options={"infidelity": {"sigma": 1.0}}, **FAST)
    with pytest.raises(InvalidInputError, match=r"name them in `metrics`"):
        evaluate(model, x, method, metric_options={"aupc": {}}, **FAST)
    with pytest.raises(InvalidInputError, match=r"`metrics` must be a non-empty list"):
        evaluate(model, x, method, metrics=[], **FAST)
    with pytest.raises(InvalidInputError, match=r"'completeness' reads the completeness error"):
        evaluate(model, x, method, metrics=["completeness"], **FAST)
    with pytest.raises(InvalidInputError, match=r"already registered"):
        metrics.register_metric("aupc", lambda c: np.zeros(len(c.images)), "lower")


def test_a_registered_metric_is_one_line_and_evaluate_computes_it(model, x):
    try:
        metrics.register_metric("map_peak", lambda c, power=1: np.abs(c.attributions).reshape(len(c.images), -1)
                                .max(axis=1) ** power, "higher", needs="maps")
        method = tfattr.Gradient(model)
        (row,) = evaluate(model, x, [("m", method)], metrics=["map_peak"], metric_options={"map_peak": {"power": 2}},
                          **FAST)
        phi = np.abs(np.asarray(method.attribute(x).attributions)).reshape(3, -1).max(axis=1)
        np.testing.assert_allclose(row.per_image["map_peak"], phi ** 2, rtol=1e-6)
        assert "map_peak ↑" in format_table([row])
    finally:
        metrics.METRICS.pop("map_peak", None)


def test_the_other_metric_families_are_registered_and_equal_their_functions(model, x):
    masks = np.zeros((3, SIZE, SIZE), bool)
    masks[:, 4:10, 4:10] = True
    method = tfattr.InputXGradient(model)
    names = ["sparseness", "selectivity", "relevance_mass_accuracy", "pixel_flipping"]
    options = {"selectivity": {"patch_size": 4}, "pixel_flipping": {"pixels_per_step": 32}}
    (row,) = evaluate(model, x, [("m", method)], masks=masks, metrics=names, metric_options=options, **FAST)
    labels = np.argmax(model.predict(x, verbose=0), axis=1)
    phi = np.asarray(method.attribute(x, target=labels).attributions)
    expected = {"sparseness": metrics.sparseness(phi),
                "selectivity": metrics.selectivity(model, x, phi, target=labels, patch_size=4).auc,
                "relevance_mass_accuracy": metrics.relevance_mass_accuracy(phi, masks),
                "pixel_flipping": metrics.pixel_flipping(model, x, phi, target=labels, pixels_per_step=32).auc}
    for name, values in expected.items():
        np.testing.assert_allclose(row.per_image[name], values, rtol=1e-6)
    assert "sparseness ↑" in format_table([row]) and "selectivity ↓" in format_table([row])
