"""The convergence driver (tfattr.core.convergence) on its own, and the one standard-error rule
in the methods that refine to a Monte-Carlo accuracy."""

import keras
import numpy as np
import pytest

import tfattr
from tfattr.core.convergence import Refinement, refine, relative_standard_error, warn_unconverged


def _geometric(rates, calls):
    """A step whose example ``e`` has error ``rates[e] ** (round + 1)``; records each call's todo."""
    def step(round_, todo):
        calls.append((round_, todo.tolist()))
        return np.asarray(rates)[todo] ** (round_ + 1)
    return step


def test_each_example_stops_once_its_error_meets_the_tolerance():
    calls = []
    refined = refine(_geometric([0.5, 0.1, 0.9], calls), 3, 0.05)
    # 0.5^5 = 0.031 (5 rounds), 0.1^2 = 0.01 (2 rounds), 0.9^29 = 0.047 (29 rounds)
    assert refined.rounds.tolist() == [5, 2, 29]
    assert refined.converged.all()
    np.testing.assert_allclose(refined.error, [0.5**5, 0.1**2, 0.9**29])
    assert calls[0] == (0, [0, 1, 2]) and calls[2] == (2, [0, 2]) and calls[5] == (5, [2])  # only those still refining


def test_min_rounds_and_unmeasurable_rounds():
    calls = []
    refined = refine(_geometric([0.01, 0.5], calls), 2, 0.1, min_rounds=3)
    assert refined.rounds.tolist() == [3, 4]  # 0.01 meets it at once, but refines 3 rounds
    # a step that cannot measure yet (None) leaves the error at inf: no stop on the first round
    first = refine(lambda r, todo: None if r == 0 else np.zeros(len(todo)), 2, 0.1)
    assert first.rounds.tolist() == [2, 2] and first.converged.all()


def test_the_cap_stops_refining_and_the_warning_names_what_was_missed():
    calls = []
    refined = refine(_geometric([0.5, 0.99], calls), 2, 0.05, max_rounds=4)
    assert refined.rounds.tolist() == [4, 4] and refined.converged.tolist() == [False, False]
    budgeted = refine(_geometric([0.1, 0.99], []), 2, 0.05, budget=lambda done, todo: np.full(len(todo), done < 3))
    assert budgeted.rounds.tolist() == [2, 3] and budgeted.converged.tolist() == [True, False]
    with pytest.warns(RuntimeWarning) as caught:
        warn_unconverged("Method", budgeted, "tolerance", 0.05, "max_steps", 9, errors="relative errors", digits=3,
                         tail="returning the finest level", stacklevel=1)
    assert str(caught[0].message) == ("Method: 1 of 2 example(s) did not reach tolerance=0.05 within max_steps=9 "
                                      f"(relative errors [{round(0.99**3, 3)}]); returning the finest level.")
    assert caught[0].filename == __file__  # stacklevel counts from the caller, as warnings.warn's
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unconverged("Method", Refinement(np.zeros(2), np.ones(2, bool), np.ones(2, int)), "tolerance", 0.1,
                         "max_steps", 9)  # every example converged: silent


def test_relative_standard_error_is_numpys_sample_standard_error():
    rng = np.random.default_rng(0)
    samples = rng.normal(1.0, 2.0, size=(3, 7, 4, 5))  # 3 examples, 7 samples of a (4, 5) map
    counts = np.array([7, 5, 2])
    total = np.stack([samples[e, :k].sum(0) for e, k in enumerate(counts)])
    total_sq = np.stack([(samples[e, :k] ** 2).sum(0) for e, k in enumerate(counts)])
    expected = []
    for e, k in enumerate(counts):
        part = samples[e, :k]
        standard_error = np.sqrt(part.var(axis=0, ddof=1) / k)  # Bessel: n − 1
        expected.append(np.linalg.norm(standard_error) / np.linalg.norm(part.mean(axis=0)))
    np.testing.assert_allclose(relative_standard_error(total, total_sq, counts), expected, rtol=1e-12)
    # one sample has no sample variance: never converged; a zero mean gives the absolute error
    one = relative_standard_error(samples[:1, 0], samples[:1, 0] ** 2, np.array([1]))
    assert one.tolist() == [np.inf]
    pair = np.array([[1.0, -1.0], [-1.0, 1.0]])
    zero_mean = relative_standard_error(pair.sum(0)[None], (pair**2).sum(0)[None], np.array([2]))
    np.testing.assert_allclose(zero_mean, [np.sqrt(2 * (2.0 / 2))])  # s² = 2 per value, SE² = 1, ‖SE‖ = √2


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Dense(3, activation="tanh")(inputs)))
    return keras.Model(inputs, out)


def test_one_sample_blocks_do_not_count_as_converged(tiny):
    """Bug fixed: NoiseTunnel and SmoothTaylor took one sample's variance as 0 (their Bessel guard
    divided by max(k − 1, 1)), so a block of one sample met any tolerance at once."""
    images = np.random.default_rng(1).uniform(0, 1, (2, 4, 4, 1)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="did not reach nt_tolerance"):
        tunnel = tfattr.NoiseTunnel(tfattr.Gradient(tiny, batch_size=8), nt_samples=1, nt_tolerance=1e-9,
                                    nt_max_samples=3).attribute(images)
    assert tunnel.info["nt_samples"].tolist() == [3, 3]
    with pytest.warns(RuntimeWarning, match="did not reach tolerance"):
        taylor = tfattr.SmoothTaylor(tiny, roots=1, sigma=0.1, tolerance=1e-9, max_roots=3,
                                     batch_size=8).attribute(images)
    assert taylor.info["roots"].tolist() == [3, 3]
    assert np.isfinite(taylor.info["relative_standard_error"]).all()
