"""The ``tfattr`` command.

    tfattr explain --model model.keras --images a.png b.jpg --method ig --baseline blur --out out/
    tfattr demo [--out outputs/demo]
    tfattr baseline train --model model.keras|vgg19|efficientnet_lite0 --out saved_baselines/NAME [--lam 0.9 ...]
    tfattr baseline show saved_baselines/NAME [--model model.keras]

``explain`` writes one overlay PNG per image and method, named by the image file's stem (``stem-2``,
``stem-3``, ... for later files with the same stem), plus ``attributions.npz`` (with the image paths
in ``sources`` and the output names in ``names``).
``baseline train`` trains the uniform-output baseline of Lerma & Lucas (2022) and saves it
(SavedModel + metadata.json); ``baseline show`` prints its metadata and statistics.
Errors in the arguments print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import zipfile
from typing import List, Optional

import numpy as np

from tfattr.errors import InvalidInputError, received

METHODS = ("ig", "guided-ig", "gradient", "input-x-gradient", "guided-backprop", "smoothgrad", "smoothtaylor",
           "gradcam", "rsi-gradcam")


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line (``tfattr explain: error: argument --steps: ... Received: ...``), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integer(flag: str, minimum: int, word: Optional[str] = None):
    """An argparse type: an integer ≥ ``minimum`` (or ``word`` as it is), or a message naming ``flag``."""

    def parse(text: str):
        if word is not None and text == word:
            return text
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            what = f"an integer ≥ {minimum}" + (f" or {word!r}" if word else "")
            raise argparse.ArgumentTypeError(f"expected {what}. " + received(flag, text))
        return value

    return parse


def _number(flag: str, bound: Optional[str] = None, word: Optional[str] = None):
    """An argparse type: a finite float (``bound`` ``"> 0"`` or ``"≥ 0"``), or ``word`` as it is."""
    what = f"a number {bound}" if bound else "a finite number"
    what += f" or {word!r}" if word else ""

    def parse(text: str):
        if word is not None and text == word:
            return text
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (bound is None or (value > 0 if bound == "> 0" else value >= 0))
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}. " + received(flag, text))
        return value

    return parse


def _method_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", default="zero",
                        help="IG baseline: zero, black, uniform, gaussian, blur, max_distance, or a saved baseline "
                             "folder (default: zero)")
    parser.add_argument("--steps", type=_integer("--steps", 1), default=50, help="IG / RSI-Grad-CAM steps (default: 50)")
    parser.add_argument("--rule", default="riemann_right", help="IG rule (default: riemann_right)")
    parser.add_argument("--tolerance", type=_number("--tolerance", "> 0"), default=None,
                        help="IG, guided IG, RSI-Grad-CAM: refine each image until this relative completeness "
                             "error instead of --steps")
    parser.add_argument("--baseline-tolerance", type=_number("--baseline-tolerance", "> 0"), default=None,
                        help="IG with a random baseline: draw blocks of --n-baselines until this relative "
                             "Monte-Carlo standard error")
    parser.add_argument("--n-baselines", type=_integer("--n-baselines", 1), default=1, help="draws of a random baseline (default: 1)")
    parser.add_argument("--samples", type=_integer("--samples", 1), default=25, help="SmoothGrad samples (default: 25)")
    parser.add_argument("--roots", type=_integer("--roots", 1), default=150, help="SmoothTaylor roots R (default: 150)")
    parser.add_argument("--sigma", type=_number("--sigma", "≥ 0", word="adaptive"), default="0.15",
                        help="SmoothTaylor sigma relative to the value range, or 'adaptive' (default: 0.15)")
    parser.add_argument("--layer", default=None, help="Grad-CAM layer name or path (default: last 4-D layer)")
    parser.add_argument("--rsi-notebook", action="store_true",
                        help="RSI-Grad-CAM as in the authors' notebook: trapezoid average of the path gradients and "
                             "only units with A > 0, a positive integral and a positive increment (default: eq. 6)")
    parser.add_argument("--value-range", type=_number("--value-range"), nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="the model's input range; images are scaled to it (default: 0 1; 0 255 for "
                             "keras.applications names)")
    parser.add_argument("--batch-size", type=_integer("--batch-size", 1, "auto"), default="auto",
                        help="points per forward+backward pass, or 'auto': the fastest size, measured on the "
                             "first chunks (default: auto)")
    parser.add_argument("--seed", type=_integer("--seed", 0), default=0, help="seed of every random draw")


def _load_keras_file(path: str, flag: str = "--model", also: str = ""):
    """``keras.models.load_model(path)``; a missing or unloadable file is an error naming ``flag``."""
    import keras

    if not os.path.exists(path):
        raise InvalidInputError(f"{flag}: no model file {path!r}{also}. " + received(flag, path))
    try:
        return keras.models.load_model(path)
    except Exception as error:  # any failure to read the user's file: say which file and why
        if zipfile.is_zipfile(path) or not path.endswith(".keras"):
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            detail = f"{type(error).__name__}: {lines[0] if lines else ''}"
        else:
            detail = "it is not a zip archive, which a .keras file is"
        raise InvalidInputError(f"{flag}: cannot load {path!r} as a Keras model: the file is corrupt or not a Keras "
                                f"model file ({detail}). " + received(flag, path)) from None


def _load_model(name: str, weights: str):
    """A .keras path, or a keras.applications name (wrapped to take [0, 255] RGB, logits out)."""
    import tfattr.data
    import tfattr.surgery

    key = name.lower().replace("-", "_")
    if key in tfattr.data.APPLICATIONS:
        return tfattr.data.keras_application(key, weights=None if weights == "none" else weights), (0.0, 255.0)
    model = _load_keras_file(name, also=f" (and not one of {sorted(tfattr.data.APPLICATIONS)})")
    return tfattr.surgery.logits_model(model, missing="ignore"), (0.0, 1.0)


def _check_rsi_notebook(names, args) -> None:
    if getattr(args, "rsi_notebook", False) and "rsi-gradcam" not in names:
        raise InvalidInputError(f"--rsi-notebook applies to rsi-gradcam only; the method(s) are {', '.join(names)}. "
                                + received("--methods" if hasattr(args, "methods") else "--method", ",".join(names)))


def _build_method(name: str, model, args, value_range):
    from tfattr.core.noise import NoiseTunnel
    from tfattr.methods import (
        GradCAM,
        Gradient,
        GuidedBackprop,
        GuidedIntegratedGradients,
        InputXGradient,
        IntegratedGradients,
        RSIGradCAM,
        SmoothTaylor,
    )

    common = dict(batch_size=args.batch_size, verbose=args.verbose)
    ig = dict(baseline=args.baseline, steps=args.steps, rule=args.rule, n_baselines=args.n_baselines,
              value_range=value_range, seed=args.seed, tolerance=args.tolerance, **common)
    if args.baseline_tolerance is not None:
        ig["baseline_tolerance"] = args.baseline_tolerance
    sigma = args.sigma if args.sigma == "adaptive" else float(args.sigma)
    rsi = dict(rule="trapezoid", positive_units=True) if args.rsi_notebook else {}
    builders = {
        "ig": lambda: IntegratedGradients(model, **ig),
        "guided-ig": lambda: GuidedIntegratedGradients(model, **ig),
        "gradient": lambda: Gradient(model, **common),
        "input-x-gradient": lambda: InputXGradient(model, **common),
        "guided-backprop": lambda: GuidedBackprop(model, **common),
        "smoothgrad": lambda: NoiseTunnel(Gradient(model, **common), nt_samples=args.samples,
                                                 value_range=value_range, seed=args.seed),
        "smoothtaylor": lambda: SmoothTaylor(model, roots=args.roots, sigma=sigma, noise_scale="relative",
                                                    value_range=value_range, seed=args.seed, **common),
        "gradcam": lambda: GradCAM(model, layer=args.layer, **common),
        "rsi-gradcam": lambda: RSIGradCAM(model, layer=args.layer, steps=args.steps, baseline=args.baseline,
                                                 n_baselines=args.n_baselines, tolerance=args.tolerance,
                                                 value_range=value_range, seed=args.seed, **rsi, **common),
    }
    if name not in builders:
        raise InvalidInputError(f"unknown method {name!r}; choose from {', '.join(METHODS)}. "
                                + received("--methods" if hasattr(args, "methods") else "--method", name))
    return builders[name]()


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tfattr", description="Explain Keras image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)

    explain = sub.add_parser("explain", help="explain image files with one method, write overlays and an .npz")
    explain.add_argument("--model", required=True,
                         help="a .keras file (its softmax head is stripped: logits are explained) or a "
                              "keras.applications name: vgg16, vgg19, resnet50, densenet121, mobilenet_v2, inception_v3")
    explain.add_argument("--weights", default="imagenet", help="keras.applications weights: imagenet or none")
    explain.add_argument("--images", nargs="+", required=True, help="image files (PNG, JPEG, ...)")
    explain.add_argument("--method", choices=METHODS, default="ig", help="attribution method (default: ig)")
    explain.add_argument("--target", type=_integer("--target", 0), default=None, help="class index (default: top-1 prediction)")
    _method_options(explain)
    explain.add_argument("--out", required=True, help="output folder")

    evaluate = sub.add_parser("evaluate", help="score methods with AUPC, AUTVC, deletion/insertion, pointing game")
    evaluate.add_argument("--model", default="demo",
                          help="'demo' (the shipped digits-on-photos classifier), a .keras file, or a "
                               "keras.applications name")
    evaluate.add_argument("--weights", default="imagenet", help="keras.applications weights: imagenet or none")
    evaluate.add_argument("--dataset", default="digits_on_photos",
                          help="digits_on_photos (offline, with masks) or imagenette (TFDS download)")
    evaluate.add_argument("--split", default="test", help="dataset split (default: test)")
    evaluate.add_argument("--images", type=_integer("--images", 1), default=16, help="number of images (default: 16)")
    evaluate.add_argument("--methods", default="gradient,smoothgrad,ig,guided-ig,smoothtaylor,gradcam,rsi-gradcam",
                          help="comma-separated methods (default: a representative set)")
    evaluate.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                          help="mirrored: shard attribution and metrics over every visible GPU (or logical "
                               "device); multiworker: over the workers in TF_CONFIG (run the same command "
                               "on every worker; each writes the whole table)")
    evaluate.add_argument("--aupc-kernel", type=_integer("--aupc-kernel", 1), default=None,
                          help="AUPC window side (default: 15 scaled to the image side)")
    _method_options(evaluate)
    evaluate.add_argument("--out", default=os.path.join("outputs", "evaluate"), help="output folder (tables, cache)")

    demo = sub.add_parser("demo", help="run the demo (every method on real photos, pictures + table)")
    demo.add_argument("--out", default=os.path.join("outputs", "demo"))
    demo.add_argument("--images", type=_integer("--images", 1), default=6)
    demo.add_argument("--methods", default=None, help="comma-separated method titles (default: all)")
    demo.add_argument("--photos", default=None,
                      help="scikit-image photos for the ImageNet classifier, comma-separated, or 'none' "
                           "(default: chelsea,coffee,rocket,camera)")
    demo.add_argument("--protocol", choices=("demo", "paper", "quick"), default="demo",
                      help="metric settings on the photos: demo (default), paper (the papers' exact "
                           "protocol, about an hour on 2 cores) or quick")
    demo.add_argument("--no-digits", action="store_true", help="leave out the digits-on-photos part")

    baseline = sub.add_parser("baseline", help="train / show uniform-output baselines (Lerma & Lucas 2022)")
    baseline_sub = baseline.add_subparsers(dest="baseline_command", required=True)
    train = baseline_sub.add_parser(
        "train", help="train a baseline whose output through the model is uniform, save it as a SavedModel folder")
    train.add_argument("--model", required=True,
                       help="path to a .keras file loadable by keras, 'vgg19' (keras.applications.VGG19) or "
                            "'efficientnet_lite0' (tfattr.data.EfficientNetLite0, offline; RGB in [0, 255])")
    train.add_argument("--weights", default="imagenet",
                       help="weights of vgg19/efficientnet_lite0: 'imagenet' (VGG19 downloads once) or 'none' "
                            "(random; for timing)")
    train.add_argument("--out", required=True, help="destination folder, e.g. saved_baselines/NAME")
    train.add_argument("--start", default="black", help="starting baseline: black, zero, uniform or a number")
    train.add_argument("--lam", type=_number("--lam"), default=0.9, help="λ in λ·L_out + (1 − λ)·MSE(b, b0) (default: 0.9)")
    train.add_argument("--loss", default="maxabs", choices=("maxabs", "mse", "crossentropy"),
                       help="output loss L_out (default: maxabs, the paper's best)")
    train.add_argument("--steps", type=_integer("--steps", 1), default=500, help="maximum optimiser steps (default: 500)")
    train.add_argument("--learning-rate", type=_number("--learning-rate", "> 0"), default=None,
                       help="the optimiser's learning rate (default: 1e-3 × (high − low))")
    train.add_argument("--optimizer", default="rmsprop", choices=("rmsprop", "rmsprop_keras2", "adam", "sgd"),
                       help="rmsprop (Keras 3: lr·g/sqrt(ms + eps); default), rmsprop_keras2 (lr·g/(sqrt(ms) + eps), "
                            "the authors' notebook), adam or sgd")
    train.add_argument("--keep", default="best", choices=("best", "final"),
                       help="return the baseline of the lowest output loss (default) or the last step's "
                            "(the authors' notebook)")
    train.add_argument("--patience", type=_integer("--patience", 0), default=100,
                       help="stop after this many steps without a better output loss; 0 = never (default: 100)")
    train.add_argument("--value-range", type=_number("--value-range"), nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="the baseline's value range; black = LOW (default: 0 1; 0 255 for vgg19 and "
                            "efficientnet_lite0)")
    train.add_argument("--preprocess", default=None,
                       help="preprocessing between baseline and model: none, caffe/vgg19, tf, torch "
                            "(default: none; vgg19 for --model vgg19)")
    train.add_argument("--target-distribution", default=None, metavar="FILE",
                       help="target output o_t as a .npy or .json vector (default: uniform)")
    train.add_argument("--outputs", default="auto", choices=("auto", "probabilities", "logits"),
                       help="what the model outputs (default: auto: softmax head → probabilities)")
    train.add_argument("--seed", type=_integer("--seed", 0), default=0, help="seed of a random start")
    train.add_argument("--overwrite", action="store_true", help="replace an existing saved baseline at --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    show = baseline_sub.add_parser("show", help="print a saved baseline's metadata and before/after statistics")
    show.add_argument("path", help="saved baseline folder")
    show.add_argument("--model", default=None, help="also check that this .keras model (or efficientnet_lite0) is the "
                                                     "one it was trained for")
    show.add_argument("--json", action="store_true", help="print metadata.json as it is")
    return parser


@contextlib.contextmanager
def _quiet_opencv(cv2):
    """OpenCV's own log off (its ``[ WARN ]`` lines on a bad file): the error says it once."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def _read_images(paths: List[str]) -> List[np.ndarray]:
    """Decode every image file into float32 RGB in [0, 1]; an unreadable file raises one error naming it."""
    import cv2

    images = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                data = np.frombuffer(handle.read(), dtype=np.uint8)
        except OSError as error:
            raise InvalidInputError(f"--images: cannot read image {path!r}: {error.strerror or error}. "
                                    + received("--images", path)) from None
        image = None
        if data.size:
            with _quiet_opencv(cv2):
                image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            raise InvalidInputError(f"--images: cannot read image {path!r}: not an image OpenCV can decode (PNG, "
                                    "JPEG, BMP, TIFF, WebP, ...) or a truncated file. " + received("--images", path))
        images.append(image[..., ::-1].astype(np.float32) / 255.0)
    return images


def _load_images(paths: List[str], size, value_range, decoded: Optional[List[np.ndarray]] = None) -> np.ndarray:
    """The image files (or their ``decoded`` arrays) resized to ``size`` and scaled to ``value_range``."""
    import cv2

    low, high = value_range
    images = []
    for image in decoded if decoded is not None else _read_images(paths):
        if size is not None and image.shape[:2] != tuple(size):
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        images.append(low + image * (high - low))
    return np.stack(images)


def output_names(paths: List[str]) -> List[str]:
    """One distinct output name per image file: its stem, then ``stem-2``, ``stem-3``, ... for later files
    with the same stem (skipping the stems of other inputs; compared case-insensitively)."""
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    reserved = {stem.casefold() for stem in stems}
    names: List[str] = []
    used = set()
    for stem in stems:
        name, k = stem, 2
        while name.casefold() in used or (name != stem and name.casefold() in reserved):
            name, k = f"{stem}-{k}", k + 1
        used.add(name.casefold())
        names.append(name)
    return names


def _explain(args) -> int:
    import tfattr.core.inputs
    from tfattr import viz
    from tfattr.core.files import atomic_write

    _check_rsi_notebook([args.method], args)
    decoded = _read_images(args.images)  # an unreadable image fails before the model loads
    model, default_range = _load_model(args.model, args.weights)
    value_range = tuple(args.value_range) if args.value_range else default_range
    args.value_range = value_range
    args.verbose = 1
    spec = tfattr.core.inputs.model_spec(model)
    size = spec.input_shape[:2] if spec.input_shape and None not in spec.input_shape[:2] else None
    x = _load_images(args.images, size, value_range, decoded)
    method = _build_method(args.method, model, args, value_range)
    expl = method.attribute(x, target=args.target)
    os.makedirs(args.out, exist_ok=True)
    attributions = np.asarray(expl)
    names = output_names(args.images)
    for name, image, attribution in zip(names, x, attributions):
        picture = viz.overlay(image, attribution, value_range=tuple(args.value_range))
        out = viz.save_png(os.path.join(args.out, f"{name}_{args.method}.png"), picture)
        print(out)
    extra = {} if expl.delta is None else {"delta": expl.delta}
    npz = os.path.join(args.out, "attributions.npz")
    with atomic_write(npz) as handle:
        np.savez_compressed(handle, attributions=attributions,
                            targets=expl.targets if expl.targets is not None else -1, scores=expl.scores,
                            sources=np.array(args.images, dtype=str), names=np.array(names, dtype=str), **extra)
    print(npz)
    if expl.delta is not None:
        print(f"completeness error (relative, per image): {np.round(expl.relative_delta, 4).tolist()}")
    return 0


def _evaluate(args) -> int:
    from tfattr.distribute import strategy_from_name

    strategy = strategy_from_name(args.strategy)  # before any other TensorFlow work (multi-worker)
    import tfattr.core.inputs
    import tfattr.data
    from tfattr.evaluation import evaluate, format_table

    if args.model == "demo":
        from tfattr.core.assets import DEMO_MODEL, asset_path

        args.model = asset_path(DEMO_MODEL)  # package data: there in a wheel as in a checkout
    model, default_range = _load_model(args.model, args.weights)
    value_range = tuple(args.value_range) if args.value_range else default_range
    args.verbose = 0
    masks = None
    if args.dataset == "digits_on_photos":
        side = tfattr.core.inputs.model_spec(model).input_shape[0]
        data = tfattr.data.digits_on_photos(args.images, size=side, split=args.split, seed=args.seed)
        x, labels, masks = data["image"] * (value_range[1] - value_range[0]) + value_range[0], data["label"], data["mask"]
    elif args.dataset == "imagenette":
        side = tfattr.core.inputs.model_spec(model).input_shape[0]
        pairs = list(tfattr.data.load_imagenette(split="validation" if args.split == "test" else args.split,
                                                 size=side).take(args.images).as_numpy_iterator())
        x = np.stack([p[0] for p in pairs]).astype(np.float32)  # RGB in [0, 255]
        x = value_range[0] + x / 255.0 * (value_range[1] - value_range[0])  # into the model's range
        labels = np.array([p[1] for p in pairs])
    else:
        raise InvalidInputError(f"unknown dataset {args.dataset!r}; choose digits_on_photos or imagenette. "
                                + received("--dataset", args.dataset))
    x = x.astype(np.float32)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    _check_rsi_notebook(names, args)
    methods = [(name, _build_method(name, model, args, value_range)) for name in names]
    side = x.shape[1]
    kernel = args.aupc_kernel or max(2, round(15 * side / 224))
    print(f"evaluating {len(names)} method(s) on {len(x)} {args.dataset} image(s), {side}x{side}, AUPC windows {kernel}px")
    rows = evaluate(model, x, methods, labels=labels, masks=masks, value_range=value_range, aupc_kernel=kernel,
                    pointing_tolerance=max(1, round(15 * side / 224)), seed=args.seed,
                    cache_dir=os.path.join(args.out, "cache"), strategy=strategy)
    text = format_table(rows)
    print("\n" + text)
    from tfattr.core.files import write_text

    print(write_text(os.path.join(args.out, "table.md"), text))
    return 0


def _demo(args) -> int:
    from tfattr.demo import main as run_demo  # the demo ships with the package

    argv = ["--out", args.out, "--images", str(args.images)]
    if args.methods:
        argv += ["--methods", args.methods]
    if args.photos is not None:
        argv += ["--photos", args.photos]
    argv += ["--protocol", args.protocol] + (["--no-digits"] if args.no_digits else [])
    run_demo(argv)
    return 0


def _baseline_model(args):
    import keras

    weights = None if args.weights.lower() == "none" else args.weights
    if args.model.lower() == "efficientnet_lite0":
        from tfattr.data import EfficientNetLite0

        return EfficientNetLite0(weights=weights), None, (0.0, 255.0)
    if args.model.lower() != "vgg19":
        return _load_keras_file(args.model), None, (0.0, 1.0)
    try:
        model = keras.applications.VGG19(weights=weights)
    except Exception as error:  # keras raises a bare Exception when the download fails
        raise OSError(f"cannot build VGG19 with weights={args.weights!r} ({error}); without internet "
                      "use --weights none or a local .keras file") from None
    return model, "vgg19", (0.0, 255.0)


def _baseline(args) -> int:
    from tfattr.baselines import load_baseline, save_baseline, train_uniform_baseline
    from tfattr.baselines.saved import check_destination

    if args.baseline_command == "show":
        model = None
        if args.model is not None and args.model.lower() == "efficientnet_lite0":
            from tfattr.data import EfficientNetLite0

            model = EfficientNetLite0()
        elif args.model is not None:
            model = _load_keras_file(args.model)
        loaded = load_baseline(args.path, model=model)
        if args.json:
            import json

            print(json.dumps(loaded.metadata, indent=2, ensure_ascii=False))
        else:
            print(loaded.report())
        if model is not None:
            print(f"matches {args.model} (fingerprint and input shape)")
        return 0
    check_destination(args.out, overwrite=args.overwrite)  # before minutes of loading and training
    model, default_preprocess, default_range = _baseline_model(args)
    start = args.start
    try:
        start = float(start)
    except ValueError:
        pass
    preprocess = default_preprocess if args.preprocess is None else args.preprocess
    preprocess = None if preprocess is None or preprocess.lower() == "none" else preprocess
    target = None
    if args.target_distribution is not None:
        if args.target_distribution.endswith(".json"):
            import json

            with open(args.target_distribution, encoding="utf-8") as handle:
                target = np.asarray(json.load(handle), dtype=np.float64)
        else:
            target = np.load(args.target_distribution)
    trained = train_uniform_baseline(
        model, start=start, target_distribution=target, lam=args.lam, output_loss=args.loss, steps=args.steps,
        learning_rate=args.learning_rate, preprocess=preprocess,
        value_range=tuple(args.value_range) if args.value_range is not None else default_range,
        outputs=args.outputs, patience=args.patience if args.patience != 0 else None, seed=args.seed,
        verbose=0 if args.quiet else 1, optimizer=args.optimizer, keep=args.keep,
    )
    if args.quiet:
        print(trained.report())
    print(save_baseline(trained, args.out, overwrite=args.overwrite))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    try:
        return {"explain": _explain, "evaluate": _evaluate, "demo": _demo, "baseline": _baseline}[args.command](args)
    except (ValueError, TypeError, OSError) as error:
        print(f"tfattr {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
