r"""Layer-wise relevance propagation (Bach et al. 2015) with zennit's rules, composites and canonizers."""

from __future__ import annotations

import numpy as np

from tfattr.core import checks
from tfattr.core.checks import Option
from tfattr.core.engine import PathEngine
from tfattr.core.ranges import resolve_value_range, warn_outside_value_range
from tfattr.errors import InvalidInputError, InvalidTypeError, received
from tfattr.methods.base import AttributionMethod, Explained
from tfattr.methods.gradient import _single_point
from tfattr.surgery.cloning import model_wiring, synced
from tfattr.surgery.lrp import COMPOSITES, RULE_NAMES, LRPGradients, Rule, ZBox, layer_relevances, lrp_clone

__all__ = ["LRP"]


def _composite(name, value):
    if value is None or (isinstance(value, str) and value in COMPOSITES):
        return
    raise InvalidInputError(f"`{name}` must be one of {sorted(COMPOSITES)} (zennit's composites) or None (only the "
                            "`rules` mapping). " + received(name, value))


def _bound(name, value):
    if value is None:
        return
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.size == 0 or not np.all(np.isfinite(array)) or isinstance(value, (bool, str)):
        raise InvalidInputError(f"`{name}` must be a finite number or an array of them (per channel or of the input's "
                                "shape), or None (the model's value range). " + received(name, value))


def _rules(name, value):
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidTypeError(f"`{name}` must be a dict {{layer class or layer name: rule}}. " + received(name, value))
    for key, rule in value.items():
        if not (isinstance(key, str) or isinstance(key, type)):
            raise InvalidTypeError(f"The keys of `{name}` are layer names or keras layer classes. "
                                   + received(name, value))
        if not (isinstance(rule, Rule) or rule in RULE_NAMES):
            raise InvalidInputError(f"The rules of `{name}` are names {list(RULE_NAMES)} or rule objects of "
                                    "tfattr.surgery.lrp. " + received(name, value))


LRP_OPTIONS = (
    Option("composite", "epsilon_plus", _composite),
    Option("epsilon", 1e-6, checks.non_negative_number),
    Option("gamma", 0.25, checks.non_negative_number),
    Option("stabilizer", 1e-6, checks.positive_number),
    Option("low", None, _bound),
    Option("high", None, _bound),
    Option("rules", None, _rules),
    Option("unsupported", "raise", checks.choices("raise", "gradient")),
    Option("layer_sums", False, checks.boolean),
)


class LRP(AttributionMethod):
    r"""Layer-wise relevance propagation (Bach et al. 2015) with zennit's rules and composites.

    The target score ``R = f_c(x)`` is redistributed from the output to the input, layer by layer.
    For a linear layer ``z = Wa + b`` a rule is a modified forward ``z'`` and
    ``R_a = a' ⊙ W'ᵀ(R_z / stab(z'))`` (the rules ε, z⁺, αβ, γ, zᴮ, w², flat, documented in
    :mod:`tfattr.surgery.lrp`, as zennit's :mod:`zennit.rules`); activations pass the relevance on
    unchanged, Add and average pools split it in proportion to their inputs, max-pools give it to
    the winner. BatchNormalization after a Conv/Dense layer is merged into it for the rule (zennit's
    canonizer). One forward and one backward pass of a cached clone of the model
    (:func:`tfattr.surgery.lrp.lrp_clone`; the model itself is untouched).

    Options:
        composite: the rules per layer type, as zennit's composites: ``"epsilon_plus"`` (default: z⁺
            on convolutions, ε on Dense), ``"epsilon"`` (ε everywhere; with a tiny ``epsilon`` LRP-0,
            which equals gradient × input on ReLU networks), ``"epsilon_plus_flat"`` (flat on the first
            Conv/Dense), ``"epsilon_gamma_box"`` (γ on convolutions, zᴮ on the first one),
            ``"epsilon_alpha2_beta1"``, ``"epsilon_alpha2_beta1_flat"``, or ``None`` (``rules`` only).
        epsilon: the ε of the ε rule (default 1e-6).
        gamma: the γ of the γ rule (default 0.25).
        stabilizer: the ε added (with the sign of the denominator) by every other rule (default 1e-6).
        low, high: the input box of the zᴮ rule: numbers, per-channel arrays or arrays of the input's
            shape; ``None`` (default) takes the model's value range (``model.tfattr_value_range``, else
            ``(0, 1)``).
        rules: ``{layer name or keras layer class: rule}`` overriding the composite (names first);
            a rule is one of ``"epsilon"``, ``"zero"``, ``"zplus"``, ``"alpha1_beta0"``,
            ``"alpha2_beta1"``, ``"gamma"``, ``"zbox"``, ``"wsquare"``, ``"flat"``, ``"norm"``,
            ``"pass"``, ``"gradient"`` or a rule object of :mod:`tfattr.surgery.lrp`.
        unsupported: a layer without a rule (Multiply, attention, LayerNormalization, softmax, custom
            layers) raises :class:`~tfattr.errors.InvalidInputError` naming every such layer
            (``"raise"``, default); ``"gradient"`` lets its plain gradient carry the relevance
            (conservation then no longer holds there).
        layer_sums: also return ``info["layer_sums"]``, ``{layer: (N,) relevance reaching its input}``
            (one more pass of the clone; conservation can be read layer by layer; a layer called
            several times has ``name``, ``name#2``… per call).
        batch_size, verbose, parallel_chunks, output, fixed_inputs: see
            :class:`~tfattr.methods.base.AttributionMethod`.

    ``Explanation.delta`` is ``Σ R − f_c(x)``: zero when every rule conserves relevance (LRP-0/ε
    and z⁺ with zero biases, up to the stabilisers). Explain a softmax model's logits
    (:func:`tfattr.surgery.logits_model`).

    Example:
        >>> expl = LRP(model, composite="epsilon_plus").attribute(images, target=3)
        >>> expl.attributions.sum(axis=(1, 2, 3)), expl.scores     # ≈ equal without biases
    """

    name = "lrp"
    options = LRP_OPTIONS
    combine = "plain"
    top1_in_rows = True
    several_inputs = False

    def describe(self, config) -> str:
        return f"lrp({config['composite']})"

    def _box(self, config):
        low, high = resolve_value_range(None, self.model)
        low = low if config["low"] is None else config["low"]
        high = high if config["high"] is None else config["high"]
        return low, high

    def clone(self, config=None):
        """The LRP clone of the model for ``config``'s rule set (cached per model and rule set; it runs
        through :func:`~tfattr.surgery.synced`, with the model's current weights)."""
        config = self.config if config is None else config
        low, high = self._box(config)
        key = repr((config["composite"], config["rules"], config["epsilon"], config["gamma"], config["stabilizer"],
                    np.asarray(low).tolist(), np.asarray(high).tolist(), config["unsupported"]))
        memo = self.__dict__.setdefault("_lrp_clones", {})
        wiring = model_wiring(self.model)
        found = memo.get(key)
        if found is not None and found[0] == wiring:
            return found[1]
        clone = lrp_clone(self.model, config["composite"], config["rules"], epsilon=config["epsilon"],
                          gamma=config["gamma"], stabilizer=config["stabilizer"], box=(low, high),
                          unsupported=config["unsupported"], refresh_weights=False)
        memo[key] = (wiring, clone)
        return clone

    def engine(self, targets, config, collect_rows: bool = False) -> PathEngine:
        clone = self.clone(config)
        key = ("index", collect_rows) if targets.score_fn is None else ("callable", targets.score_fn, collect_rows)
        if targets.output is not None:
            key += ("output", targets.output)
        key += ("lrp", id(clone))
        with self._engine_lock:
            engine = self._engines.get(key)
            if engine is None:
                if targets.score_fn is not None:
                    for old in [k for k in self._engines if k[0] == "callable"]:
                        del self._engines[old]
                engine = PathEngine(LRPGradients(synced(clone), targets.scorer), combine=self.combine,
                                    collect_rows=collect_rows)
                self._engines[key] = engine
            engine.batch_size = config["batch_size"]
            engine.parallel_chunks = int(config["parallel_chunks"])
            engine.verbose = config["verbose"]
            return engine

    def gradient_function(self, score_fn=None):
        return LRPGradients(synced(self.clone()), score_fn)

    def _explain(self, x, targets, fx, config) -> Explained:
        clone = self.clone(config)  # refuses unsupported layers before any work
        low, high = self._box(config)
        if np.ndim(low) == 0 and np.ndim(high) == 0 and any(
                isinstance(rule, ZBox) for _, rule in getattr(clone, "_tfattr_lrp_rules", ())):
            # the zᴮ box enters the relevance: images in [0, 255] against the default (0, 1) box
            warn_outside_value_range(np.asarray(x), (float(low), float(high)), option="(low, high)", stacklevel=4)
        result, count = _single_point(self, x, targets, config)
        scores = result.row_scores
        total = result.attributions.reshape(len(scores), -1).sum(axis=1)
        info = {"composite": config["composite"]}
        if config["layer_sums"]:
            rows = result.row_classes if result.row_classes is not None else np.zeros(len(scores), np.int32)
            sums = {}
            step = 16
            for start in range(0, len(scores), step):
                _, part = layer_relevances(synced(clone), x[start:start + step], rows[start:start + step],
                                           targets.scorer)
                for name, value in part.items():
                    sums.setdefault(name, []).append(value)
            info["layer_sums"] = {name: np.concatenate(parts) for name, parts in sums.items()}
        return Explained(attributions=result.attributions, gradients=count, scores=scores,
                         targets=result.row_classes, delta=total - scores, info=info)
