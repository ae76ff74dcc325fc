"""NoiseTunnel: SmoothGrad, SmoothGrad² and VarGrad around any method.

SmoothGrad (Smilkov et al. 2017): ``SG(x) = (1/N') Σ_n M(x + ε_n)``, ``ε_n ~ N(0, σ²)``
(SmoothTaylor paper, eq. 4), for any attribution method ``M``. SmoothGrad² averages
``M(x + ε)²``; VarGrad (Adebayo et al. 2018) is the variance ``mean(M²) − mean(M)²``.

The tunnel does not loop over samples: it expands the batch to ``N × N'`` noisy
inputs and hands them to the wrapped method in one call, so the engine chunks all
of them (times the method's own points) into full batches.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from tfattr.core import checks
from tfattr.core.convergence import refine, relative_standard_error, warn_unconverged
from tfattr.core.ranges import declared_value_range, resolve_value_range, warn_outside_value_range
from tfattr.core.random import STREAM_NOISE_TUNNEL, rng
from tfattr.core.result import Explanation
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["NoiseTunnel", "NT_TYPES"]

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
#: what the tunnel calls on the wrapped method (:class:`~tfattr.methods.base.AttributionMethod`)
_PROTOCOL = ("call_options", "validate", "to_model_dtype", "resolve", "explain", "package")


class NoiseTunnel:
    """Average a method over Gaussian-noised copies of the input.

    Args:
        method: any tfattr method instance (``Gradient``, ``IntegratedGradients``, …).
        nt_type: ``"smoothgrad"`` (mean, default), ``"smoothgrad_sq"`` (mean of squares) or
            ``"vargrad"`` (variance).
        nt_samples: noisy copies per input ``N'`` (default 25).
        stdevs: absolute noise ``σ`` in the model's input units. ``None`` (default) uses
            ``noise_level · (high − low)``.
        noise_level: ``σ / (high − low)`` when ``stdevs`` is ``None``; Smilkov et al. found
            10–20% best, default 0.15.
        value_range: ``(low, high)`` of the input space. ``None`` (default): the wrapped
            method's ``value_range`` if it has one, else the range the model declares
            (``model.tfattr_value_range``), else ``(0, 1)``. Inputs outside the range used (the
            tunnel's without ``stdevs``, the wrapped method's where its baselines use one) raise a
            :class:`~tfattr.errors.ValueRangeWarning`.
        seed: seed of the noise (default 0). The draws depend on the seed and the sample
            index only, so every image of a batch sees the same noise and an image's result
            does not depend on its batch.
        nt_tolerance: ask for a Monte-Carlo accuracy instead of a sample count: draw blocks of
            ``nt_samples`` until, per image, the standard error of the averaged map relative to
            its norm, ``‖SE‖₂ / ‖mean‖₂``, is at most ``nt_tolerance`` (e.g. 0.05); converged
            images get no more samples. ``info["nt_samples"]`` reports what each image used.
        nt_max_samples: sample budget per image with ``nt_tolerance`` (default 1000); a
            ``RuntimeWarning`` names the images that did not converge. Without ``nt_tolerance``
            it plays no part: ``nt_samples`` draws are made, however many.

    Targets are resolved once on the clean inputs. Options given to :meth:`attribute` that
    are not the tunnel's own go to the wrapped method (``output`` among them, for a model with
    several outputs).

    The tunnel drives the wrapped method through its public protocol
    (:meth:`~tfattr.methods.base.AttributionMethod.call_options`, ``validate``, ``resolve``,
    ``explain``, ``package``); a method that attributes to a layer (``noise_tunnel = False``) is
    refused.

    Example:
        >>> sg = NoiseTunnel(Gradient(model), nt_samples=50, noise_level=0.15, seed=0)
        >>> sg.attribute(images).attributions
    """

    _OWN = ("nt_type", "nt_samples", "stdevs", "noise_level", "value_range", "seed", "nt_tolerance",
            "nt_max_samples")

    def __init__(self, method, nt_type: str = "smoothgrad", nt_samples: int = 25, stdevs=None,
                 noise_level: float = 0.15, value_range=None, seed=0, nt_tolerance=None,
                 nt_max_samples: int = 1000):
        if not all(callable(getattr(method, verb, None)) for verb in _PROTOCOL):
            raise InvalidTypeError(
                "`method` must be a tfattr attribution method instance, e.g. Gradient(model). "
                + received("type(method)", type(method).__name__)
            )
        if getattr(method, "depends_on_batch", False):  # FeaturePermutation: its batch would be the noisy copies
            raise InvalidTypeError(
                f"NoiseTunnel explains a batch of noisy copies at once; {type(method).__name__}'s attributions depend "
                "on the other examples of the batch (a copy would be compared with copies of itself). "
                + received("method", type(method).__name__))
        if getattr(method, "noise_tunnel", True) is False:  # attributions not in the inputs' shape (layer methods)
            raise InvalidTypeError(
                f"NoiseTunnel averages maps of the inputs' shape; {type(method).__name__} attributes to a layer. "
                + received("method", type(method).__name__))
        self.method = method
        self._given = dict(nt_type=nt_type, nt_samples=nt_samples, stdevs=stdevs, noise_level=noise_level,
                           value_range=value_range, seed=seed, nt_tolerance=nt_tolerance,
                           nt_max_samples=nt_max_samples)
        self.config = self._check(dict(self._given))

    def with_model(self, model) -> NoiseTunnel:
        """The same tunnel (same options) around the wrapped method re-bound to ``model``
        (:meth:`~tfattr.methods.base.AttributionMethod.with_model`)."""
        return NoiseTunnel(self.method.with_model(model), **self._given)

    def _check(self, config: Dict[str, Any]) -> Dict[str, Any]:
        checks.choice("nt_type", config["nt_type"], NT_TYPES)
        checks.positive_int("nt_samples", config["nt_samples"])
        checks.optional(checks.non_negative_number)("stdevs", config["stdevs"])
        checks.non_negative_number("noise_level", config["noise_level"])
        checks.value_range_pair("value_range", config["value_range"])
        checks.seed("seed", config["seed"])
        checks.optional(checks.positive_number)("nt_tolerance", config["nt_tolerance"])
        checks.positive_int("nt_max_samples", config["nt_max_samples"])
        if config["value_range"] is None:
            inner = getattr(self.method, "config", {}).get("value_range")
            config["value_range"] = inner if inner is not None else declared_value_range(self.method.model)
        config["value_range"] = resolve_value_range(config["value_range"])
        sigma = config["stdevs"]
        if sigma is None:
            low, high = config["value_range"]
            sigma = float(config["noise_level"]) * (high - low)
        if not np.isfinite(sigma) or sigma < 0:
            raise InvalidInputError("The noise standard deviation must be finite and ≥ 0. " + received("stdevs", sigma))
        config["sigma"] = float(sigma)
        tol, n, cap = config["nt_tolerance"], config["nt_samples"], config["nt_max_samples"]
        if tol is not None and config["nt_type"] == "vargrad":
            raise InvalidInputError("`nt_tolerance` works with nt_type 'smoothgrad' and 'smoothgrad_sq'. "
                                    + received("nt_type", config["nt_type"]))
        if tol is not None and cap < n:  # the budget bounds the draws of nt_tolerance only
            raise InvalidInputError(
                f"`nt_max_samples` (the sample budget of nt_tolerance) must be ≥ nt_samples={n}, the first "
                "block. " + received("nt_max_samples", cap))
        return config

    @property
    def model(self):
        return self.method.model

    def cache_key(self) -> Dict[str, Any]:
        """The tunnel's class and options plus the wrapped method's own
        :meth:`~tfattr.methods.base.AttributionMethod.cache_key` (its class and every option);
        raises :class:`~tfattr.core.keys.Uncacheable` for ``seed=None`` or an unkeyable wrapped method."""
        from tfattr.core.keys import Uncacheable, canonical

        if self.config["seed"] is None:
            raise Uncacheable("NoiseTunnel seed=None draws fresh noise on every run")
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}",
                "options": {k: canonical(v, k) for k, v in sorted(self.config.items())},
                "method": self.method.cache_key()}

    def noise(self, shape, config, block: int = 0) -> np.ndarray:
        """The ``(nt_samples, …)`` noise draws of sample block ``block`` (seeded; block 0 is the
        only one without ``nt_tolerance``)."""
        generator = rng(config["seed"], STREAM_NOISE_TUNNEL, block)
        return generator.normal(0.0, config["sigma"], size=(config["nt_samples"],) + tuple(shape))

    def attribute(self, inputs, target=None, **options) -> Explanation:
        """Explain ``inputs``; see :meth:`tfattr.methods.base.AttributionMethod.attribute`."""
        own = {k: options.pop(k) for k in list(options) if k in self._OWN}
        config = self._check(dict(self.config, **own))
        method = self.method
        method_config = method.call_options(**options)
        # one batch, or a model's several inputs packed (noise then stays off its fixed inputs)
        images = method.validate(inputs, method_config)
        layout = method_config.layout
        free = images.array if images.layout is None else images.array[:, ~images.layout.fixed_mask()]
        # once per call, where a range is used: the tunnel's noise_level, the wrapped method's baselines
        tunnel_uses = config["stdevs"] is None
        inner_uses = hasattr(method, "uses_value_range") and method.uses_value_range(method_config)
        warned = tunnel_uses and warn_outside_value_range(free, config["value_range"], stacklevel=2)
        if not warned and inner_uses and not (tunnel_uses and tuple(method_config["value_range"]) == config["value_range"]):
            warn_outside_value_range(free, method_config["value_range"],
                                     option=f"{type(method).__name__}'s value_range", stacklevel=2)
        x = method.to_model_dtype(images.array, layout)
        batch = method_config["batch_size"]
        targets, fx = method.resolve(x, target, batch, method_config["output"], layout)
        samples = config["nt_samples"]
        n, shape = images.batch_size, images.array.shape[1:]
        square = config["nt_type"] != "smoothgrad"
        # Σ a, Σ a², Σ q² (q = a or a², the averaged quantity), in the shape of the method's maps
        # (the inputs', or (H, W) per image for SobolAttribution, RISE): allocated at the first block
        total = total_sq = total_q_sq = None
        count = np.zeros(n, int)
        delta_sum, base_sum, score_sum = np.zeros(n), np.zeros(n), np.zeros(n)
        has_delta = True
        gradients = 0
        tolerance, cap = config["nt_tolerance"], config["nt_max_samples"]
        last = {}

        def noisy_block(block, todo):
            """Block ``block`` of noisy copies of ``todo``; the relative standard errors of the
            averaged quantity after it (with ``nt_tolerance``)."""
            nonlocal gradients, has_delta, total, total_sq, total_q_sq
            noise = self.noise(shape, config, block)
            if images.layout is not None and any(images.layout.fixed):
                noise = noise * ~images.layout.fixed_mask()
            noisy = images.array[todo, None] + noise[None].astype(images.array.dtype)
            noisy = method.to_model_dtype(noisy.reshape((-1,) + shape), layout)
            out = method.explain(noisy, targets.subset(todo).repeat(samples), None, method_config)
            last["out"] = out
            gradients += out.get("gradients", 0)
            maps = tuple(out["attributions"].shape[1:])
            if total is None:
                total, total_sq, total_q_sq = (np.zeros((n,) + maps) for _ in range(3))
            per_sample = out["attributions"].reshape((len(todo), samples) + maps)
            total[todo] += per_sample.sum(axis=1)
            if square or tolerance is not None:
                total_sq[todo] += np.einsum("ns...,ns...->n...", per_sample, per_sample)
            if tolerance is not None:
                total_q_sq[todo] += (per_sample**4 if square else per_sample**2).sum(axis=1)
            count[todo] += samples
            if out.get("delta") is not None:
                delta_sum[todo] += out["delta"].reshape(len(todo), samples).sum(axis=1)
                base_sum[todo] += out["baseline_scores"].reshape(len(todo), samples).sum(axis=1)
                score_sum[todo] += out["scores"].reshape(len(todo), samples).sum(axis=1)
            else:
                has_delta = False
            if tolerance is None:
                return None
            return relative_standard_error(total_sq[todo] if square else total[todo], total_q_sq[todo], count[todo])

        if tolerance is None:
            noisy_block(0, np.arange(n))
        else:
            refined = refine(noisy_block, n, tolerance, budget=lambda rounds, todo: count[todo] + samples <= cap)
            warn_unconverged("NoiseTunnel", refined, "nt_tolerance", tolerance, "nt_max_samples", cap)
            error = refined.error
        out = last["out"]
        k = count.reshape((-1,) + (1,) * (total.ndim - 1)).astype(np.float64)
        mean, mean_sq = total / k, total_sq / k
        if config["nt_type"] == "smoothgrad":
            attributions = mean
        elif config["nt_type"] == "smoothgrad_sq":
            attributions = mean_sq
        else:
            attributions = mean_sq - mean**2
        delta = baseline_scores = None
        if config["nt_type"] == "smoothgrad" and has_delta:
            # Σ SG − mean_n (f(x+ε_n) − f(z_n)) = mean_n delta_n: completeness of the average.
            # scores and baseline scores become the averages over the noisy copies, so that
            # delta = Σ attributions − (scores − baseline_scores) still holds.
            delta, baseline_scores, fx = delta_sum / count, base_sum / count, score_sum / count
        info = dict(out.get("info", {}), nt_type=config["nt_type"], nt_samples=count, stdevs=config["sigma"])
        if tolerance is not None:
            info["relative_standard_error"] = error
        packed = method.package(
            {"attributions": attributions, "delta": delta, "baseline_scores": baseline_scores,
             "gradients": gradients, "info": info},
            images, targets, fx, method_config,
        )
        packed.method = f"noise_tunnel[{config['nt_type']}, n={samples}, σ={config['sigma']:g}]({packed.method})"
        return packed
