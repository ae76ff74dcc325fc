r"""Guided backpropagation and guided-non-linearity Integrated Gradients (Kwon, Koo & Cho).

Both are their plain method with one change: the gradient function is the input gradient
of the model's guided clone (:func:`tfattr.surgery.guided_clone`), whose ReLUs and
max-pools pass only positive gradients back:

* ReLU: ``∂F/∂x ← relu(∂F/∂y ⊙ 1[x > 0])``; MaxPool: ``∂F/∂x_ij ← relu(∂F/∂y_i ⊙ 1[x_ij = y_i])``.

``maxpool_rule="code"`` takes the max-pool rule of the authors' code instead (the plain
gradient times the nearest-upsampled sign of ``∂F/∂y``; the same for 2×2/2 pools, different
for overlapping ones: :mod:`tfattr.surgery.guided`).

The clone is built once per model and cached (weakly), and it is run with the original
model's current weights (:func:`tfattr.surgery.synced`), so training the model between two
calls is safe. The explained scores ``f(x)`` and ``f(z)`` are the original model's (the
clone's forward pass is identical).
"""

from __future__ import annotations

from tfattr.core.checks import Option
from tfattr.core.gradients import InputGradients
from tfattr.errors import InvalidInputError, received
from tfattr.methods.gradient import Gradient
from tfattr.methods.integrated_gradients import IntegratedGradients
from tfattr.surgery.cloning import surgery_report, synced
from tfattr.surgery.guided import check_maxpool_rule, guided_clone

__all__ = ["GuidedIntegratedGradients", "GuidedBackprop", "guided_gradient_function"]


def guided_gradient_function(model, score_fn=None, maxpool_rule: str = "paper") -> InputGradients:
    """``(points, target_rows) -> (scores, guided gradients)`` for the engine.

    Raises:
        InvalidInputError: the model has no ReLU or max-pool to guide (its guided gradient
            would be the plain gradient, silently); the message names any ReLU-like op
            hidden in a layer that could not be swapped.

    Example:
        >>> scores, grads = guided_gradient_function(model)(points, tf.constant([3, 3]))
    """
    clone = guided_clone(model, maxpool_rule=maxpool_rule)
    report = surgery_report(clone)
    if not report.changed:
        hidden = (" It does contain ReLU/max-pool ops that cannot be swapped: "
                  + ", ".join(report.left_alone[:10]) + ".") if report.left_alone else ""
        raise InvalidInputError(
            f"Guided methods change the backward pass of ReLU and max-pool layers, but model "
            f"{model.name!r} has none that tfattr can swap (keras.layers.ReLU/LeakyReLU/PReLU, "
            "Activation('relu'), activation='relu' in Conv/Dense layers, MaxPooling/GlobalMaxPooling); "
            "its guided gradient would just be the plain gradient. Use IntegratedGradients or "
            f"Gradient instead.{hidden} " + received("model.name", model.name)
        )
    return InputGradients(synced(clone), score_fn)


#: the guided methods' own option (see :func:`tfattr.surgery.guided_clone`)
MAXPOOL_RULE = Option("maxpool_rule", "paper", lambda name, value: check_maxpool_rule(value))


class _MaxPoolRule:
    """The ``maxpool_rule`` option (:data:`MAXPOOL_RULE`): each rule gets its own engines."""

    def _engine(self, key, targets, config, collect_rows):
        self._maxpool_rule = config["maxpool_rule"]  # read by gradient_function (under the engine lock)
        return super()._engine(key + ("maxpool_rule", config["maxpool_rule"]), targets, config, collect_rows)

    def gradient_function(self, score_fn=None):
        rule = self.__dict__.get("_maxpool_rule", self.config["maxpool_rule"])
        return guided_gradient_function(self.model, score_fn, maxpool_rule=rule)


class GuidedIntegratedGradients(_MaxPoolRule, IntegratedGradients):
    r"""Integrated Gradients with guided non-linearities — Kwon, Koo & Cho, "Improving
    Explainability of Integrated Gradients with Guided Non-Linearity".

    ``GIG_i(x, z) = (x_i − z_i) · ∫₀¹ ∂^G f(z + α(x − z))/∂x_i dα``, where ``∂^G`` is the
    gradient with every ReLU's backward replaced by ``relu(∂F/∂y ⊙ 1[x > 0])`` and every
    max-pool's by ``relu(∂F/∂y_i ⊙ 1[x_ij = y_i])``; the integral uses the same quadrature
    as :class:`~tfattr.methods.integrated_gradients.IntegratedGradients`.

    Not to be confused with the *adaptive-path* "Guided Integrated Gradients" of Kapishnikov
    et al. (CVPR 2021), which keeps the normal gradient and changes the path; here the path
    is IG's straight line and the gradient changes.

    Options: every option of :class:`~tfattr.methods.integrated_gradients.IntegratedGradients`, and

        maxpool_rule: ``"paper"`` (default) or ``"code"``: the max-pool backward of the authors'
            code (plain gradient ⊙ nearest-upsampled ``1[∂F/∂y > 0]``; see
            :func:`tfattr.surgery.guided_clone`).

    Every IG option works unchanged (``baseline``, ``steps``, ``rule``, ``n_baselines``,
    ``value_range``, ``seed``, ``batch_size``, …) and so does wrapping in
    :class:`~tfattr.NoiseTunnel`. The guided gradient is not the gradient of ``f``, so the
    completeness ``delta`` of the result is *not* expected to be small; on a network whose
    gradients never turn negative it equals plain IG.

    Raises :class:`~tfattr.errors.InvalidInputError` on a model with no ReLU/max-pool (there is
    no fallback: its "guided" IG would silently be IG).

    Example:
        >>> gig = GuidedIntegratedGradients(model, baseline="zero", steps=50)
        >>> gig.attribute(images, target=None).attributions
    """

    name = "guided_integrated_gradients"
    options = IntegratedGradients.options + (MAXPOOL_RULE,)
    convergence = "successive"  # guided gradients do not integrate to f(x) − f(z)


class GuidedBackprop(_MaxPoolRule, Gradient):
    """Guided backpropagation (Springenberg et al. 2015): the gradient of the guided clone.

    ``∂^G f(x)/∂x`` with ReLU backward ``relu(∂F/∂y ⊙ 1[x > 0])`` and max-pool backward
    ``relu(∂F/∂y_i ⊙ 1[x_ij = y_i])`` (the guided non-linearities of Kwon, Koo & Cho).

    Options:
        maxpool_rule: ``"paper"`` (default), or ``"code"``: the authors' code's max-pool backward
            (see :func:`tfattr.surgery.guided_clone`).
        absolute: as in :class:`~tfattr.methods.gradient.Gradient`.
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod`.

    Raises :class:`~tfattr.errors.InvalidInputError` on a model with no ReLU/max-pool.

    Example:
        >>> GuidedBackprop(model).attribute(images, target=3).attributions
    """

    name = "guided_backprop"
    options = Gradient.options + (MAXPOOL_RULE,)
