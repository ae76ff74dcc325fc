"""The ``tfattr`` command.

    tfattr explain --model model.keras --images a.png b.jpg --method ig --baseline blur --out out/
    tfattr demo [--out outputs/demo]

``explain`` writes one overlay PNG per image and method plus ``attributions.npz``.
Errors in the arguments print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import List, Optional

import numpy as np

METHODS = ("ig", "gradient", "input-x-gradient", "smoothgrad")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfattr", description="Explain Keras image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)

    explain = sub.add_parser("explain", help="explain image files with one method, write overlays and an .npz")
    explain.add_argument("--model", required=True, help="path to a .keras / SavedModel file loadable by keras")
    explain.add_argument("--images", nargs="+", required=True, help="image files (PNG, JPEG, ...)")
    explain.add_argument("--method", choices=METHODS, default="ig", help="attribution method (default: ig)")
    explain.add_argument("--baseline", default="zero",
                         help="IG baseline: zero, black, uniform, gaussian, blur, max_distance (default: zero)")
    explain.add_argument("--steps", type=int, default=50, help="IG quadrature steps (default: 50)")
    explain.add_argument("--rule", default="riemann_right", help="IG rule (default: riemann_right)")
    explain.add_argument("--n-baselines", type=int, default=1, help="draws of a random baseline (default: 1)")
    explain.add_argument("--samples", type=int, default=25, help="SmoothGrad samples (default: 25)")
    explain.add_argument("--target", type=int, default=None, help="class index (default: top-1 prediction)")
    explain.add_argument("--value-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("LOW", "HIGH"),
                         help="the model's input range; images are scaled to it (default: 0 1)")
    explain.add_argument("--batch-size", type=int, default=16, help="points per forward+backward pass")
    explain.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    explain.add_argument("--out", required=True, help="output folder")

    demo = sub.add_parser("demo", help="run the demo (every method on real photos, pictures + table)")
    demo.add_argument("--out", default=os.path.join("outputs", "demo"))
    demo.add_argument("--images", type=int, default=6)
    return parser


def _load_images(paths: List[str], size, value_range) -> np.ndarray:
    import cv2

    low, high = value_range
    images = []
    for path in paths:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"cannot read image {path!r}")
        image = image[..., ::-1].astype(np.float32) / 255.0
        if size is not None and image.shape[:2] != tuple(size):
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        images.append(low + image * (high - low))
    return np.stack(images)


def _explain(args) -> int:
    import keras

    import tfattr
    from tfattr import viz

    model = keras.models.load_model(args.model)
    spec = tfattr.core.inputs.model_spec(model)
    size = spec.input_shape[:2] if spec.input_shape and None not in spec.input_shape[:2] else None
    x = _load_images(args.images, size, args.value_range)
    common = dict(batch_size=args.batch_size, verbose=1)
    if args.method == "ig":
        method = tfattr.IntegratedGradients(model, baseline=args.baseline, steps=args.steps, rule=args.rule,
                                            n_baselines=args.n_baselines, value_range=tuple(args.value_range),
                                            seed=args.seed, **common)
    elif args.method == "gradient":
        method = tfattr.Gradient(model, **common)
    elif args.method == "input-x-gradient":
        method = tfattr.InputXGradient(model, **common)
    else:
        method = tfattr.NoiseTunnel(tfattr.Gradient(model, **common), nt_samples=args.samples,
                                    value_range=tuple(args.value_range), seed=args.seed)
    expl = method.attribute(x, target=args.target)
    os.makedirs(args.out, exist_ok=True)
    attributions = np.asarray(expl)
    for path, image, attribution in zip(args.images, x, attributions):
        stem = os.path.splitext(os.path.basename(path))[0]
        picture = viz.overlay(image, attribution, value_range=tuple(args.value_range))
        out = viz.save_png(os.path.join(args.out, f"{stem}_{args.method}.png"), picture)
        print(out)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=args.out)
    os.close(fd)
    extra = {} if expl.delta is None else {"delta": expl.delta}
    np.savez_compressed(tmp, attributions=attributions, targets=expl.targets if expl.targets is not None else -1,
                        scores=expl.scores, **extra)
    npz = os.path.join(args.out, "attributions.npz")
    os.replace(tmp, npz)
    print(npz)
    if expl.delta is not None:
        print(f"completeness error (relative, per image): {np.round(expl.relative_delta, 4).tolist()}")
    return 0


def _demo(args) -> int:
    import runpy

    here = os.path.dirname(os.path.abspath(__file__))
    script = os.path.join(os.path.dirname(here), "examples", "demo.py")
    if not os.path.exists(script):
        raise ValueError("the demo script examples/demo.py ships with the source tree; run it from a checkout")
    sys.argv = [script, "--out", args.out, "--images", str(args.images)]
    sys.path.insert(0, os.path.dirname(script))
    runpy.run_path(script, run_name="__main__")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    try:
        return _explain(args) if args.command == "explain" else _demo(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"tfattr {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
