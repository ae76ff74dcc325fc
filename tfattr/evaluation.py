"""Evaluate attribution methods with the papers' metrics, with a result cache.

:func:`evaluate` runs each method on a batch and scores it with AUPC, AUTVC, deletion,
insertion and (with masks) the pointing game and mask energy; :func:`smoothtaylor_grid`
and :func:`guided_ig_comparison` build the method grids of the SmoothTaylor paper
(Goh et al. 2020, Tables I–III) and of the guided-IG paper (Kwon et al.). Results are
cached per (model weights, images, method, settings) in ``cache_dir`` so a rerun that
changes one method recomputes only that method.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfattr.errors import InvalidInputError, received

__all__ = ["EvaluationRow", "evaluate", "format_table", "smoothtaylor_grid", "guided_ig_comparison",
           "IMAGENET_STD"]

#: the papers' σ are in ImageNet-normalised units (pixels / std, std ≈ 0.226 of the [0, 1] range)
IMAGENET_STD = 0.226


@dataclass
class EvaluationRow:
    """One method's scores: means over the images, plus per-image values and mean curves."""

    method: str
    seconds: float
    gradients: int
    scores: Dict[str, float]
    per_image: Dict[str, np.ndarray] = field(default_factory=dict)
    curves: Dict[str, np.ndarray] = field(default_factory=dict)
    cached: bool = False


def _fingerprint(model, images: np.ndarray, extra: str) -> str:
    digest = hashlib.sha256()
    digest.update(model.to_json().encode() if hasattr(model, "to_json") else repr(model).encode())
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(extra.encode())
    return digest.hexdigest()[:24]


def _save_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    from tfattr.core.files import atomic_write

    with atomic_write(path) as handle:
        np.savez_compressed(handle, **arrays)


def evaluate(
    model,
    images: np.ndarray,
    methods: Sequence[Tuple[str, object]],
    labels: Optional[np.ndarray] = None,
    masks: Optional[np.ndarray] = None,
    value_range: Tuple[float, float] = (0.0, 1.0),
    aupc_kernel: int = 15,
    aupc_regions: int = 30,
    aupc_perturbations: int = 50,
    pixels_per_step: Optional[int] = None,
    pointing_tolerance: float = 15,
    seed: int = 0,
    cache_dir: Optional[str] = None,
    verbose: bool = True,
    strategy=None,
) -> List[EvaluationRow]:
    """Run and score each ``(name, method)`` on ``images``.

    Args:
        model: the model the metrics query (pass the logits model: AUPC uses logits,
            deletion/insertion apply the softmax themselves).
        images: ``(N, H, W, C)`` float images in ``value_range``.
        methods: ``(name, method)`` pairs; each method's ``attribute`` is called with ``target=labels``.
        labels: explained classes (default: top-1 of ``model``).
        masks: ``(N, H, W)`` ground-truth masks for the pointing game and mask energy (optional).
        aupc_kernel, aupc_regions, aupc_perturbations: AUPC's ``k``, ``L``, ``P`` (paper: 15, 30, 50
            at 224 px; scale ``k`` with the image side).
        pixels_per_step: deletion/insertion step (default ``round(√(H·W))``, 224 at 224×224).
        pointing_tolerance: pointing-game tolerance in pixels (paper: 15 at 224 px).
        seed: seed of AUPC's noise.
        cache_dir: folder for cached results (``None``: no cache).
        strategy: a ``tf.distribute`` strategy: the images are sharded over its replicas (and
            workers) with ``experimental_distribute_dataset``, attribution and metrics run per
            replica and are gathered (:mod:`tfattr.distribute`); results equal the single-device run.

    Returns:
        One :class:`EvaluationRow` per method, in order.
    """
    from tfattr import metrics

    images = np.asarray(images)
    if labels is None:
        labels = np.argmax(model.predict(images, verbose=0), axis=1)
    labels = np.asarray(labels)
    if masks is not None and np.asarray(masks).shape[:3] != images.shape[:3]:
        raise InvalidInputError("`masks` must be (N, H, W) like the images. " + received("masks.shape", np.shape(masks)))
    rows = []
    settings = json.dumps([value_range, aupc_kernel, aupc_regions, aupc_perturbations, pixels_per_step,
                           pointing_tolerance, seed, np.asarray(labels).tolist()], default=str)
    for name, method in methods:
        describe = getattr(method, "describe", None)
        label = describe(method.config) if callable(describe) else repr(getattr(method, "config", name))
        path = None
        if cache_dir is not None:
            key = _fingerprint(model, images, name + label + settings + (repr(masks.sum()) if masks is not None else ""))
            path = os.path.join(cache_dir, f"{key}.npz")
            if os.path.exists(path):
                stored = np.load(path, allow_pickle=False)
                per_image = {k[6:]: stored[k] for k in stored.files if k.startswith("image:")}
                curves = {k[6:]: stored[k] for k in stored.files if k.startswith("curve:")}
                rows.append(EvaluationRow(name, float(stored["seconds"]), int(stored["gradients"]),
                                          {k: float(np.mean(v)) for k, v in per_image.items()}, per_image, curves,
                                          cached=True))
                if verbose:
                    print(f"  {name:<28} (cached)")
                continue
        start = time.perf_counter()
        if strategy is None:
            explanation = method.attribute(images, target=labels)
        else:
            from tfattr.distribute import distributed_attribute

            explanation = distributed_attribute(method, images, target=labels, strategy=strategy)
        seconds = time.perf_counter() - start
        attributions = np.asarray(explanation)

        def perturbation_metrics(x, a, t):
            return (metrics.aupc(model, x, a, target=t, kernel_size=aupc_kernel, regions=aupc_regions,
                                 perturbations=aupc_perturbations, value_range=value_range, seed=seed, verbose=0),
                    metrics.deletion(model, x, a, target=t, pixels_per_step=pixels_per_step, verbose=0),
                    metrics.insertion(model, x, a, target=t, pixels_per_step=pixels_per_step, verbose=0))

        if strategy is None:
            aupc, deletion, insertion = perturbation_metrics(images, attributions, labels)
        else:
            from tfattr.distribute import distributed_map

            def as_fields(x, a, t):
                aupc, deletion, insertion = perturbation_metrics(x, a, t)
                return {"aupc.area": aupc.area, "aupc.curve": aupc.curve, "deletion.auc": deletion.auc,
                        "deletion.curve": deletion.curve, "insertion.auc": insertion.auc,
                        "insertion.curve": insertion.curve}

            fields = distributed_map(as_fields, [images, attributions, labels], strategy)
            aupc, deletion, insertion = (_Joined({k.split(".")[1]: v for k, v in fields.items() if k.startswith(p)})
                                         for p in ("aupc.", "deletion.", "insertion."))
        per_image = {"AUPC": aupc.area, "AUTVC": metrics.autvc(attributions).area, "deletion": deletion.auc,
                     "insertion": insertion.auc}
        if explanation.delta is not None:
            per_image["completeness"] = np.asarray(explanation.relative_delta, np.float64)
        if masks is not None:
            per_image["pointing"] = metrics.pointing_game(attributions, masks, tolerance=pointing_tolerance).hits.astype(float)
            per_image["mask energy"] = metrics.mask_energy(attributions, masks, absolute=True)
        curves = {"AUPC": aupc.curve.mean(axis=0), "deletion": deletion.curve.mean(axis=0),
                  "insertion": insertion.curve.mean(axis=0)}
        row = EvaluationRow(name, seconds, int(explanation.gradients),
                            {k: float(np.mean(v)) for k, v in per_image.items()}, per_image, curves)
        rows.append(row)
        if path is not None:
            arrays = {f"image:{k}": np.asarray(v) for k, v in per_image.items()}
            arrays.update({f"curve:{k}": np.asarray(v) for k, v in curves.items()})
            _save_npz(path, dict(arrays, seconds=np.array(seconds), gradients=np.array(row.gradients)))
        if verbose:
            print(f"  {name:<28} {seconds:7.2f}s  " + "  ".join(f"{k} {v:.3f}" for k, v in row.scores.items()))
    return rows


class _Joined:
    """Metric results gathered over replicas along the image axis (``area``, ``auc``, ``curve``)."""

    def __init__(self, fields):
        for name, value in fields.items():
            setattr(self, name, value)


def format_table(rows: Sequence[EvaluationRow], columns: Optional[Sequence[str]] = None, title: str = "") -> str:
    """A Markdown table of ``rows`` (means over images); ↓/↑ mark lower/higher-is-better."""
    direction = {"AUPC": "↓", "AUTVC": "↓", "deletion": "↓", "insertion": "↑", "pointing": "↑",
                 "mask energy": "↑", "completeness": "↓"}
    if columns is None:
        columns = [c for c in ("AUPC", "AUTVC", "deletion", "insertion", "pointing", "mask energy", "completeness")
                   if any(c in r.scores for r in rows)]
    header = ["method"] + [f"{c} {direction.get(c, '')}".strip() for c in columns] + ["seconds", "gradients"]
    lines = ([f"**{title}**", ""] if title else []) + ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r.method] + [f"{r.scores[c]:.3f}" if c in r.scores else "" for c in columns]
        cells += [f"{r.seconds:.1f}", str(r.gradients)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def smoothtaylor_grid(model, value_range=(0.0, 1.0), batch_size: int = 32, adaptive: bool = True,
                      noise_sizes=(1, 5, 10, 20), sigmas=(0.3, 0.5, 0.7), roots=(100, 150, 200), seed: int = 0,
                      aupc_kernel: int = 15):
    """The SmoothTaylor paper's comparison (Goh et al. 2020, Tables I–III) as ``(name, method)`` pairs.

    IG with a zero baseline; IG_noise with ``N`` uniform-noise baselines (eq. 3); SmoothTaylor for
    every ``σ × R`` (eq. 6), with the paper's σ (ImageNet-normalised units) converted to the
    model's input units as ``σ · 0.226 · (high − low)``; adaptive noising for AUPC and AUTVC
    (Algorithm 1; its AUPC objective uses ``aupc_kernel``, scale it with the image side as for
    :func:`evaluate`). IG uses the right Riemann rule with 50 steps (the IG paper's rule and
    tfattr's default; the SmoothTaylor paper does not restate ``M`` for its tables).
    """
    from tfattr import IntegratedGradients, SmoothTaylor

    low, high = value_range
    common = dict(batch_size=batch_size, verbose=0)
    grid = [("IG zero", IntegratedGradients(model, baseline="zero", steps=50, value_range=value_range, **common))]
    for n in noise_sizes:
        grid.append((f"IG noise N={n}", IntegratedGradients(model, baseline="uniform", n_baselines=n, steps=50,
                                                            value_range=value_range, seed=seed, **common)))
    for sigma in sigmas:
        for r in roots:
            grid.append((f"SmoothTaylor σ={sigma} R={r}", SmoothTaylor(
                model, roots=r, sigma=sigma * IMAGENET_STD * (high - low), value_range=value_range, seed=seed,
                **common)))
    if adaptive:
        from tfattr import metrics

        def aupc_objective(images, attributions, sigmas, objective_seed, target):
            return metrics.aupc(model, images, attributions, target=target, kernel_size=aupc_kernel,
                                value_range=value_range, seed=objective_seed, verbose=0).area

        for name, objective in (("AUPC", aupc_objective), ("AUTVC", "autvc")):
            grid.append((f"SmoothTaylor adaptive-{name}", SmoothTaylor(
                model, roots=150, sigma="adaptive", objective=objective, value_range=value_range, seed=seed,
                **common)))
    return grid


def guided_ig_comparison(model, layer=None, value_range=(0.0, 1.0), batch_size: int = 32, steps: int = 50):
    """The guided-IG paper's comparison (Kwon et al.): gradients, guided backprop, Grad-CAM, IG, guided IG."""
    from tfattr import GradCAM, Gradient, GuidedBackprop, GuidedIntegratedGradients, IntegratedGradients

    common = dict(batch_size=batch_size, verbose=0)
    return [
        ("Gradients", Gradient(model, **common)),
        ("Guided backprop", GuidedBackprop(model, **common)),
        ("Grad-CAM", GradCAM(model, layer=layer, **common)),
        ("IG", IntegratedGradients(model, steps=steps, value_range=value_range, **common)),
        ("Guided IG", GuidedIntegratedGradients(model, steps=steps, value_range=value_range, **common)),
    ]
