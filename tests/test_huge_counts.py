"""Huge counts (``steps=10**9``, a Gauss–Legendre rule of 10^5 nodes, steps × examples beyond one
call's rows) are refused with a named tfattr error before anything is allocated, not a raw
MemoryError after allocating gigabytes (issue 24 item 16)."""

import resource

import numpy as np
import pytest
from conftest import small_cnn

from tfattr import IntegratedGradients, RSIGradCAM
from tfattr.core.engine import MAX_ROWS, PathRows
from tfattr.core.quadrature import MAX_GAUSS_LEGENDRE_STEPS, MAX_STEPS, quadrature
from tfattr.errors import InvalidInputError


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@pytest.mark.parametrize("steps", [10**9, MAX_STEPS + 1, 2**62])
def test_huge_steps_are_refused_before_allocating(steps):
    model = small_cnn("relu")
    before = peak_rss()
    for make in (lambda: IntegratedGradients(model, steps=steps), lambda: RSIGradCAM(model, steps=steps),
                 lambda: quadrature("riemann_middle", steps)):
        with pytest.raises(InvalidInputError, match=rf"`steps` must be at most {MAX_STEPS}.*Received: steps={steps}"):
            make()
    assert peak_rss() - before < 64 << 20  # nothing near steps × 8 bytes was allocated
    assert len(quadrature("riemann_middle", MAX_STEPS)[0]) == MAX_STEPS  # the cap itself works


def test_gauss_legendre_nodes_are_capped_where_their_cubic_cost_is_seconds():
    with pytest.raises(InvalidInputError, match=r"Gauss-Legendre.*Received: steps=100000"):
        IntegratedGradients(small_cnn("relu"), steps=100_000, rule="gauss_legendre")
    assert MAX_GAUSS_LEGENDRE_STEPS == 2048
    alphas, weights = quadrature("gauss_legendre", 64)
    assert abs(weights.sum() - 1) < 1e-12


def test_more_rows_than_one_call_indexes_are_refused_before_allocating():
    steps = MAX_STEPS  # allowed on its own, too many for 32 examples in one call
    alphas, weights = quadrature("riemann_right", steps)
    before = peak_rss()
    with pytest.raises(InvalidInputError, match=r"32 examples x 1 baselines x 1048576 steps.*Received: "):
        PathRows.grid(32, 1, alphas, weights)
    assert peak_rss() - before < 64 << 20
    assert 32 * steps > MAX_ROWS
    images = np.zeros((32, 16, 16, 3), np.float32)
    with pytest.raises(InvalidInputError, match="gradient evaluations"):
        IntegratedGradients(small_cnn("relu"), steps=steps, batch_size=8).attribute(images, target=0)


@pytest.mark.parametrize("n_baselines", [10**9, MAX_ROWS + 1])
def test_huge_baseline_draws_are_refused_before_drawing(n_baselines):
    images = np.zeros((2, 16, 16, 3), np.float32)
    before = peak_rss()
    message = rf"`n_baselines` draws of \(2, 16, 16, 3\).*Received: n_baselines={n_baselines}"
    with pytest.raises(InvalidInputError, match=message):
        IntegratedGradients(small_cnn("relu"), baseline="uniform", n_baselines=n_baselines, steps=2).attribute(
            images, target=0)
    assert peak_rss() - before < 64 << 20  # nothing near n_baselines × 768 floats was drawn
