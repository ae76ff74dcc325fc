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

from tfattr.baselines.registry import STREAM_NOISE_TUNNEL, rng
from tfattr.core.inputs import validate_images, validate_value_range
from tfattr.core.result import Explanation
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["NoiseTunnel", "NT_TYPES"]

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


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
        value_range: ``(low, high)`` of the input space (default ``(0, 1)``).
        seed: seed of the noise (default 0). The draws depend on the seed and the sample
            index only, so every image of a batch sees the same noise and an image's result
            does not depend on its batch.

    Targets are resolved once on the clean inputs. Options given to :meth:`attribute` that
    are not the tunnel's own go to the wrapped method.

    Example:
        >>> sg = NoiseTunnel(Gradient(model), nt_samples=50, noise_level=0.15, seed=0)
        >>> sg.attribute(images).attributions
    """

    _OWN = ("nt_type", "nt_samples", "stdevs", "noise_level", "value_range", "seed")

    def __init__(self, method, nt_type: str = "smoothgrad", nt_samples: int = 25, stdevs=None,
                 noise_level: float = 0.15, value_range=(0.0, 1.0), seed=0):
        if not hasattr(method, "_explain") or not hasattr(method, "resolve"):
            raise InvalidTypeError(
                "`method` must be a tfattr attribution method instance, e.g. Gradient(model). "
                + received("type(method)", type(method).__name__)
            )
        self.method = method
        self.config = self._check(dict(nt_type=nt_type, nt_samples=nt_samples, stdevs=stdevs,
                                       noise_level=noise_level, value_range=value_range, seed=seed))

    @staticmethod
    def _check(config: Dict[str, Any]) -> Dict[str, Any]:
        if config["nt_type"] not in NT_TYPES:
            raise InvalidInputError(f"`nt_type` must be one of {NT_TYPES}. " + received("nt_type", config["nt_type"]))
        n = config["nt_samples"]
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidInputError("`nt_samples` must be a positive integer. " + received("nt_samples", n))
        config["value_range"] = validate_value_range(config["value_range"])
        sigma = config["stdevs"]
        if sigma is None:
            low, high = config["value_range"]
            sigma = float(config["noise_level"]) * (high - low)
        if not np.isfinite(sigma) or sigma < 0:
            raise InvalidInputError("The noise standard deviation must be finite and ≥ 0. " + received("stdevs", sigma))
        config["sigma"] = float(sigma)
        return config

    @property
    def model(self):
        return self.method.model

    def noise(self, shape, config) -> np.ndarray:
        """The ``(nt_samples, …)`` noise draws for examples of ``shape`` (seeded)."""
        return rng(config["seed"], STREAM_NOISE_TUNNEL).normal(0.0, config["sigma"], size=(config["nt_samples"],) + tuple(shape))

    def attribute(self, inputs, target=None, **options) -> Explanation:
        """Explain ``inputs``; see :meth:`tfattr.methods.base.AttributionMethod.attribute`."""
        own = {k: options.pop(k) for k in list(options) if k in self._OWN}
        config = self._check(dict(self.config, **own))
        method = self.method
        method_config = method._merge(method.config, options)
        images = validate_images(inputs, method.spec)
        x = method.to_model_dtype(images.array)
        batch = method_config["batch_size"]
        targets, fx = method.resolve(x, target, batch)
        samples = config["nt_samples"]
        noisy = images.array[:, None].astype(np.float64) + self.noise(images.array.shape[1:], config)[None]
        noisy = method.to_model_dtype(noisy.reshape((-1,) + images.array.shape[1:]))
        out = method._explain(noisy, targets.repeat(samples), None, method_config)
        per_sample = out["attributions"].reshape((images.batch_size, samples) + images.array.shape[1:])
        if config["nt_type"] == "smoothgrad":
            attributions = per_sample.mean(axis=1)
        elif config["nt_type"] == "smoothgrad_sq":
            attributions = (per_sample**2).mean(axis=1)
        else:
            attributions = (per_sample**2).mean(axis=1) - per_sample.mean(axis=1) ** 2
        delta = None
        baseline_scores = None
        if config["nt_type"] == "smoothgrad" and out.get("delta") is not None:
            # Σ SG − mean_n (f(x+ε_n) − f(z_n)) = mean_n delta_n: completeness of the average.
            delta = out["delta"].reshape(images.batch_size, samples).mean(axis=1)
            baseline_scores = out["baseline_scores"].reshape(images.batch_size, samples).mean(axis=1)
            # scores and baseline scores become the averages over the noisy copies, so that
            # delta = Σ attributions − (scores − baseline_scores) still holds.
            fx = out["scores"].reshape(images.batch_size, samples).mean(axis=1)
        packed = method._package(
            {"attributions": attributions, "delta": delta, "baseline_scores": baseline_scores,
             "gradients": out.get("gradients", 0), "info": dict(out.get("info", {}), nt_type=config["nt_type"],
                                                                nt_samples=samples, stdevs=config["sigma"])},
            images, targets, fx, method_config,
        )
        packed.method = f"noise_tunnel[{config['nt_type']}, n={samples}, σ={config['sigma']:g}]({packed.method})"
        return packed
