"""Plain gradient (saliency) and input × gradient: one engine row per example."""

from __future__ import annotations

import numpy as np

from tfattr.baselines.registry import BaselineSet
from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import PathRows
from tfattr.methods.base import AttributionMethod, Explained, call_layout

__all__ = ["Gradient", "InputXGradient"]


def _single_point(method: AttributionMethod, x, targets, config):
    """Rows ``α = 1`` from a zero baseline: the gradient at ``x`` itself, weight 1."""
    num_examples = int(x.shape[0])
    zero = BaselineSet(np.zeros((1, 1) + tuple(x.shape[1:])), "zero")
    rows = PathRows.grid(num_examples, 1, np.ones(1), np.ones(1), per_example_baselines=False)
    return method.integrate(x, zero, targets, rows, config), len(rows)


def _zero_fixed(config, attributions: np.ndarray) -> np.ndarray:
    """``attributions`` with the positions of the call's fixed inputs set to exactly 0.

    ``fixed_inputs`` means "baseline = input, attribution 0" for every method; a gradient is not
    multiplied by ``x − z`` (which is 0 there), so it is zeroed here."""
    layout = call_layout(config)
    if layout is None or not any(layout.fixed):
        return attributions
    attributions = np.array(attributions, copy=True)
    attributions[:, layout.fixed_mask()] = 0
    return attributions


class Gradient(AttributionMethod):
    """The gradient of the target score w.r.t. the input, ``∂f(x)/∂x`` (Simonyan et al. 2014).

    For a model with several inputs, the inputs named in ``fixed_inputs`` get exactly 0 (as in
    every method: baseline = input, attribution 0), not their gradient.

    Options:
        absolute: return ``|∂f/∂x|`` as in the saliency-map paper (default ``False``: signed).
        batch_size, verbose, parallel_chunks: see :class:`~tfattr.methods.base.AttributionMethod`.
        output: the explained output of a model with several (index or name; see
            :class:`~tfattr.methods.base.AttributionMethod`).

    Example:
        >>> Gradient(model).attribute(images, target=3).attributions
    """

    name = "gradient"
    options = (Option("absolute", False, checks.boolean),)
    combine = "plain"
    top1_in_rows = True  # one row at x per example: target=None picks the top-1 class in that pass

    def _explain(self, x, targets, fx, config) -> Explained:
        result, count = _single_point(self, x, targets, config)
        attributions = np.abs(result.attributions) if config["absolute"] else result.attributions
        attributions = _zero_fixed(config, attributions)
        return Explained(attributions=attributions, gradients=count, scores=result.row_scores,
                         targets=result.row_classes)


class InputXGradient(AttributionMethod):
    """Input × gradient, ``x ⊙ ∂f(x)/∂x`` (Shrikumar et al. 2016).

    For a ReLU network without biases this equals IG from a zero baseline.
    """

    name = "input_x_gradient"
    combine = "path"
    top1_in_rows = True

    def _explain(self, x, targets, fx, config) -> Explained:
        result, count = _single_point(self, x, targets, config)
        return Explained(attributions=result.attributions, gradients=count, scores=result.row_scores,
                         targets=result.row_classes)
