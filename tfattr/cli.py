"""The ``tfattr`` command.

    tfattr explain --model model.keras --images a.png b.jpg --method ig --baseline blur --out out/
    tfattr demo [--out outputs/demo]
    tfattr explain-dataset --model model.keras --data photos/ --method ig --steps 32 --target label --out maps/
    tfattr evaluate-dataset --model model.keras --data imagenette/320px-v2 --split validation --methods gradient,ig \
        --metrics aupc,deletion --out eval/
    tfattr baseline train --model model.keras|vgg19|efficientnet_lite0 --out saved_baselines/NAME [--lam 0.9 ...]
    tfattr baseline show saved_baselines/NAME [--model model.keras]

``explain`` writes one overlay PNG per image and method, named by the image file's stem (``stem-2``,
``stem-3``, ... for later files with the same stem), plus ``attributions.npz`` (with the image paths
in ``sources``, the output names in ``names`` and the options the method ran with in ``options``, JSON).
``explain-dataset`` streams a whole dataset (a folder of image files or a TFDS name) through one method into
a chunked store (:func:`tfattr.explain_dataset`; rerun the same command to resume after a crash);
``evaluate-dataset`` does the same for several methods and metrics and writes ``table.md``/``table.csv``
(:func:`tfattr.evaluate_dataset`). ``--chunk`` is images per batch and store chunk, ``--batch-size`` the
engine's points per pass as for ``explain``.
``baseline train`` trains the uniform-output baseline of Lerma & Lucas (2022) and saves it
(SavedModel + metadata.json); ``baseline show`` prints its metadata and statistics.
Images are decoded in 8 bits at the model's input size (a large JPEG at 1/2, 1/4 or 1/8 of its side by the
decoder), as grey for a model of one channel, else RGB (an alpha channel is dropped); an image whose header
declares more than ``MAX_PIXELS`` pixels is refused before decoding. A model of a free input size takes
``--size`` (or the images' common size). ``--out`` is checked before any work.
Errors in the arguments print one line and exit with code 2; a flag none of the chosen methods reads
prints a warning line naming it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import re
import stat
import sys
import tempfile
import zipfile
from typing import List, Optional, Tuple

import numpy as np

from tfattr.core.image_headers import header_size
from tfattr.errors import InvalidInputError, received


def _methods() -> Tuple[str, ...]:
    """Every method name of :data:`tfattr.methods.registry.REGISTRY` (imported on demand: it loads TensorFlow)."""
    from tfattr.methods.registry import method_names

    return method_names()


def __getattr__(name):  # ``tfattr.cli.METHODS``: the registry's names
    if name == "METHODS":
        return _methods()
    raise AttributeError(name)


#: the largest --steps, --samples, --roots, --n-baselines: a million points per image is hours of work
#: on any device, and a count beyond it is a typo (10**9 steps would allocate gigabytes at once)
MAX_COUNT = 1_000_000
#: the most images `evaluate` and `demo` draw (imagenette's validation split has 3,925)
MAX_IMAGES = 10_000


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line (``tfattr explain: error: argument --steps: ... Received: ...``), exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _integer(flag: str, minimum: int, word: Optional[str] = None, maximum: Optional[int] = None):
    """An argparse type: an integer in [``minimum``, ``maximum``] (or ``word`` as it is), or a message
    naming ``flag``."""

    def parse(text: str):
        if word is not None and text == word:
            return text
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            what = f"an integer ≥ {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
            what += f" or {word!r}" if word else ""
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


def _probability(flag: str, closed: bool = False):
    """An argparse type: a number in (0, 1] (``closed``: in [0, 1])."""

    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not ((0 <= value <= 1) if closed else (0 < value <= 1)):
            what = "a number in [0, 1]" if closed else "a probability in (0, 1]"
            raise argparse.ArgumentTypeError(f"expected {what}. " + received(flag, text))
        return value

    return parse


def _target(flag: str):
    """An argparse type: ``top1`` (``None``), ``label`` or a class index ≥ 0."""

    def parse(text: str):
        if text in ("top1", "label"):
            return None if text == "top1" else text
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError("expected top1, label or a class index ≥ 0. " + received(flag, text))
        return value

    return parse


#: the most cells, window or stride along one side (10,000 px: the largest --size)
MAX_SIDE = 10_000
#: --segmentation's values (tfattr.methods.registry.SEGMENTATIONS, kept here so the parser loads no TensorFlow)
SEGMENTATIONS = ("grid", "quickshift", "slic", "felzenszwalb")
#: --perturbation's values (tfattr.methods.sobol.PERTURBATIONS)
PERTURBATIONS = ("inpainting", "blur", "amplitude")
#: --composite's values (zennit's composites, tfattr.surgery.lrp.COMPOSITES)
COMPOSITES = ("epsilon_plus", "epsilon", "epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1",
              "epsilon_alpha2_beta1_flat")


def _method_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", default="zero",
                        help="IG, DeepLift, RSI-Grad-CAM baseline: zero, black, uniform, gaussian, blur, max_distance, a "
                             "saved baseline folder or a number; the perturbation methods' fill value: zero, black "
                             "or a number (default: zero)")
    parser.add_argument("--steps", type=_integer("--steps", 1, maximum=MAX_COUNT), default=None,
                        help="path steps of IG, guided IG, RSI-Grad-CAM, Blur IG, adaptive-path IG, XRAI (default: each "
                             "method's own: 50, Blur IG 100, adaptive-path IG 200, XRAI 100)")
    parser.add_argument("--rule", default="riemann_right", help="IG rule (default: riemann_right)")
    parser.add_argument("--tolerance", type=_number("--tolerance", "> 0"), default=None,
                        help="IG, guided IG, RSI-Grad-CAM: refine each image until this relative completeness "
                             "error instead of --steps")
    parser.add_argument("--baseline-tolerance", type=_number("--baseline-tolerance", "> 0"), default=None,
                        help="IG with a random baseline: draw blocks of --n-baselines until this relative "
                             "Monte-Carlo standard error")
    parser.add_argument("--n-baselines", type=_integer("--n-baselines", 1, maximum=MAX_COUNT), default=1, help="draws of a random baseline (default: 1)")
    parser.add_argument("--samples", type=_integer("--samples", 1, maximum=MAX_COUNT), default=25, help="SmoothGrad samples (default: 25)")
    parser.add_argument("--roots", type=_integer("--roots", 1, maximum=MAX_COUNT), default=150, help="SmoothTaylor roots R (default: 150)")
    parser.add_argument("--sigma", type=_number("--sigma", "≥ 0", word="adaptive"), default="0.15",
                        help="SmoothTaylor sigma relative to the value range, or 'adaptive' (default: 0.15)")
    parser.add_argument("--layer", default=None, help="the CAMs' and Guided Grad-CAM's layer name or path (default: "
                                                      "the last 4-D layer)")
    parser.add_argument("--rsi-notebook", action="store_true",
                        help="RSI-Grad-CAM as in the authors' notebook: trapezoid average of the path gradients and "
                             "only units with A > 0, a positive integral and a positive increment (default: eq. 6)")
    parser.add_argument("--window", type=_integer("--window", 1, maximum=MAX_SIDE), nargs="+", default=None,
                        metavar="SIDE", help="occlusion: window SIDE×SIDE or H W (default: 15 15)")
    parser.add_argument("--strides", type=_integer("--strides", 1, maximum=MAX_SIDE), nargs="+", default=None,
                        metavar="STEP", help="occlusion: step between windows, one or H W (default: 8 8)")
    parser.add_argument("--n-masks", type=_integer("--n-masks", 1, maximum=MAX_COUNT), default=None,
                        help="RISE: random masks (default: 4000)")
    parser.add_argument("--grid", type=_integer("--grid", 1, maximum=MAX_SIDE), default=None,
                        help="RISE (default: 7), Sobol, HSIC (default: 8): cells per side of a mask's grid")
    parser.add_argument("--p", type=_probability("--p"), default=None, help="RISE: keep probability of a cell (default: 0.5)")
    parser.add_argument("--n-samples", type=_integer("--n-samples", 1, "auto", maximum=MAX_COUNT), default=None,
                        help="LIME (default 1000), KernelSHAP ('auto'), Shapley sampling (25), GradientSHAP (5): "
                             "samples per image")
    parser.add_argument("--segmentation", choices=SEGMENTATIONS, default=None,
                        help="LIME, KernelSHAP, Shapley sampling, feature ablation: the features, a grid of "
                             "--cells × --cells squares or each image's superpixels (default: quickshift for LIME, "
                             "grid otherwise; feature permutation: grid only)")
    parser.add_argument("--cells", type=_integer("--cells", 1, maximum=MAX_SIDE), default=None,
                        help="--segmentation grid: squares per side (default: 8)")
    parser.add_argument("--kernel-width", type=_number("--kernel-width", "> 0"), default=None,
                        help="LIME: width of the exponential kernel on cosine distance (default: 0.25)")
    parser.add_argument("--stdevs", type=_number("--stdevs", "≥ 0"), default=None,
                        help="GradientSHAP: standard deviation of the input noise (default: 0)")
    parser.add_argument("--baselines", default=None,
                        help="GradientSHAP, DeepLiftSHAP: the baseline distribution, a .npy file (K, H, W, C) in the "
                             "model's range or --references draws of a baseline name, e.g. uniform (default: uniform)")
    parser.add_argument("--references", type=_integer("--references", 1, maximum=10_000), default=None,
                        help="draws of a named --baselines distribution (default: 16)")
    parser.add_argument("--max-sigma", type=_number("--max-sigma", "> 0"), default=None,
                        help="Blur IG: the largest blur sigma in pixels (default: 50)")
    parser.add_argument("--top-k", type=_integer("--top-k", 1, maximum=MAX_COUNT), default=None,
                        help="Score-CAM: only the k channels of the largest mean activation (Faster Score-CAM; "
                             "default: all)")
    parser.add_argument("--n-designs", type=_integer("--n-designs", 2, maximum=MAX_COUNT), default=None,
                        help="Sobol (a power of two; default 32), HSIC (default 500): points of the mask design")
    parser.add_argument("--perturbation", choices=PERTURBATIONS, default=None,
                        help="Sobol, HSIC: how a mask perturbs the image (default: inpainting, towards --baseline)")
    parser.add_argument("--n-permutations", type=_integer("--n-permutations", 1, maximum=MAX_COUNT), default=None,
                        help="feature permutation: permutations of the images per feature group, averaged (default: 1)")
    parser.add_argument("--composite", choices=COMPOSITES, default=None,
                        help="LRP: zennit's composite of rules (default: epsilon_plus)")
    parser.add_argument("--epsilon", type=_number("--epsilon", "≥ 0"), default=None,
                        help="LRP: the epsilon of the ε rule (default: 1e-6)")
    parser.add_argument("--gamma", type=_number("--gamma", "≥ 0"), default=None,
                        help="LRP: the gamma of the γ rule (default: 0.25)")
    parser.add_argument("--unsupported", choices=("raise", "gradient"), default=None,
                        help="LRP: a layer without a rule (e.g. Multiply) is an error (raise, default) or passes its "
                             "plain gradient (gradient; conservation no longer holds there)")
    parser.add_argument("--fraction", type=_probability("--fraction", closed=True), default=None,
                        help="adaptive-path IG: share of features moved per sub-step (default: 0.25)")
    parser.add_argument("--max-dist", type=_probability("--max-dist", closed=True), default=None,
                        help="adaptive-path IG: how far a feature may leave the straight path, in [0, 1] "
                             "(default: 0.02)")
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


#: flags that only some methods read: (argparse dest, flag, default); the methods that read each are the
#: registry entries whose ``reads`` name the dest (:func:`_flag_users`)
METHOD_FLAGS = (
    ("baseline", "--baseline", "zero"),
    ("steps", "--steps", None),
    ("rule", "--rule", "riemann_right"),
    ("tolerance", "--tolerance", None),
    ("baseline_tolerance", "--baseline-tolerance", None),
    ("n_baselines", "--n-baselines", 1),
    ("samples", "--samples", 25),
    ("roots", "--roots", 150),
    ("sigma", "--sigma", "0.15"),
    ("layer", "--layer", None),
    ("window", "--window", None),
    ("strides", "--strides", None),
    ("n_masks", "--n-masks", None),
    ("grid", "--grid", None),
    ("p", "--p", None),
    ("n_samples", "--n-samples", None),
    ("segmentation", "--segmentation", None),
    ("cells", "--cells", None),
    ("kernel_width", "--kernel-width", None),
    ("stdevs", "--stdevs", None),
    ("baselines", "--baselines", None),
    ("references", "--references", None),
    ("max_sigma", "--max-sigma", None),
    ("top_k", "--top-k", None),
    ("n_designs", "--n-designs", None),
    ("perturbation", "--perturbation", None),
    ("n_permutations", "--n-permutations", None),
    ("composite", "--composite", None),
    ("epsilon", "--epsilon", None),
    ("gamma", "--gamma", None),
    ("unsupported", "--unsupported", None),
    ("fraction", "--fraction", None),
    ("max_dist", "--max-dist", None),
)


def _flag_users(dest: str) -> Tuple[str, ...]:
    """The method names whose registry entry reads the setting ``dest``."""
    from tfattr.methods.registry import REGISTRY

    return tuple(name for name, item in REGISTRY.items() if dest in item.reads)


def _method_names(args) -> List[str]:
    """The method(s) of ``explain --method`` / ``evaluate --methods``: known names, at least one."""
    if not hasattr(args, "methods"):
        return [args.method]
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not names:
        raise InvalidInputError(f"--methods: no method named; choose from {', '.join(_methods())}. "
                                + received("--methods", args.methods))
    for name in names:
        if name not in _methods():
            raise InvalidInputError(f"unknown method {name!r}; choose from {', '.join(_methods())}. "
                                    + received("--methods", name))
    return names


def _check_method_flags(names: List[str], args) -> None:
    """A warning (one stderr line naming the flag) for a flag set to another value than its default that
    none of the methods reads, and for --n-baselines/--baseline-tolerance with a fixed baseline: they
    would be ignored silently. (A warning, not an error: one command line may serve several methods.)"""
    from tfattr.baselines.registry import is_random

    flag_of = "--methods" if hasattr(args, "methods") else "--method"
    command = getattr(args, "command", None) or ("evaluate" if hasattr(args, "methods") else "explain")
    for dest, flag, default in METHOD_FLAGS:
        value = getattr(args, dest, default)
        if value == default or (dest == "sigma" and value == float(default)):
            continue
        users = _flag_users(dest)
        if not any(name in users for name in names):
            print(f"tfattr {command}: warning: {flag} is ignored: it applies to {', '.join(users)}; the method(s) "
                  f"are {', '.join(names)}. " + received(flag_of, ",".join(names)), file=sys.stderr)
    cells_users = [name for name in names if name in _flag_users("cells")]
    if getattr(args, "cells", None) is not None and cells_users:
        segmentations = {name: args.segmentation or ("quickshift" if name == "lime" else "grid") for name in cells_users}
        if "grid" not in segmentations.values():  # superpixels have no cells
            print(f"tfattr {command}: warning: --cells is ignored: it sizes --segmentation grid, and the segmentation "
                  f"of {', '.join(f'{n} is {s}' for n, s in segmentations.items())}. "
                  + received("--segmentation", args.segmentation), file=sys.stderr)
    baselines = getattr(args, "baselines", None)
    if (getattr(args, "references", None) is not None and isinstance(baselines, str) and baselines.endswith(".npy")
            and any(name in _flag_users("references") for name in names)):
        print(f"tfattr {command}: warning: --references is ignored: it counts the draws of a named --baselines "
              f"distribution, and a .npy file holds its baselines. " + received("--baselines", baselines),
              file=sys.stderr)
    for dest, flag in (("n_baselines", "--n-baselines"), ("baseline_tolerance", "--baseline-tolerance")):
        value = getattr(args, dest)
        users = ("ig", "guided-ig", "rsi-gradcam") if dest == "n_baselines" else ("ig", "guided-ig")
        if value not in (None, 1) and not is_random(args.baseline) and any(name in users for name in names):
            print(f"tfattr {command}: warning: {flag} is ignored: it applies to a random baseline (uniform, "
                  f"gaussian), and draws of a fixed baseline are all the same. " + received("--baseline", args.baseline),
                  file=sys.stderr)


def _check_out(out: str) -> str:
    """Check, before any work, that the ``--out`` folder can be created (its nearest existing ancestor
    is a folder) and written in (a temporary file opens there); nothing is left behind."""
    try:
        existing = os.path.abspath(out)
        while not os.path.exists(existing):
            if os.path.islink(existing):  # a dangling link: makedirs would fail there after all the work
                raise FileExistsError(errno.EEXIST, f"{existing!r} is a link to a missing {os.readlink(existing)!r}")
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise NotADirectoryError(errno.ENOTDIR, "it exists and is not a folder" if existing == os.path.abspath(out)
                                     else f"{existing!r} is a file, not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise InvalidInputError(f"--out: cannot write in the folder {out!r}: {error.strerror or error}. "
                                + received("--out", out)) from None
    return out


def _check_rsi_notebook(names, args) -> None:
    if getattr(args, "rsi_notebook", False) and "rsi-gradcam" not in names:
        raise InvalidInputError(f"--rsi-notebook applies to rsi-gradcam only; the method(s) are {', '.join(names)}. "
                                + received("--methods" if hasattr(args, "methods") else "--method", ",".join(names)))


#: how the registry's errors name a setting on the command line
_FLAG_OF = {dest: flag for dest, flag, _ in METHOD_FLAGS}


def _method_settings(args, value_range, images=None) -> dict:
    """The registry settings of the flags (``--window 5``: a square; a number as ``--baseline``: the constant)."""
    settings = dict(vars(args), value_range=value_range, images=images)
    for dest in ("window", "strides"):  # one value: a square
        if settings.get(dest) is not None:
            if len(settings[dest]) > 2:
                raise InvalidInputError(f"{_FLAG_OF[dest]} takes SIDE or H W. " + received(_FLAG_OF[dest], settings[dest]))
            settings[dest] = tuple(settings[dest]) * 2 if len(settings[dest]) == 1 else tuple(settings[dest])
    baseline = settings.get("baseline")
    if isinstance(baseline, str) and not os.path.exists(baseline):  # a number: the constant, for every method
        try:
            number = float(baseline)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            settings["baseline"] = number
    return settings


def _build_method(name: str, model, args, value_range, images=None):
    """The method ``name`` from :data:`tfattr.methods.registry.REGISTRY`, built from the flags (``images``:
    the images it explains, for a segmentation's feature masks and a named baseline distribution)."""
    from tfattr.methods.registry import build_method, entry

    argument = "--methods" if hasattr(args, "methods") else "--method"
    entry(name, argument)
    settings = _method_settings(args, value_range, images)
    with _flag_errors():
        return build_method(name, model, settings, argument)


def _dataset_settings(name: str, args, value_range) -> dict:
    """The settings the registry entry ``name`` reads, from the flags (those left at ``None``: the method's
    defaults), for :func:`tfattr.explain_dataset`'s ``method_options`` (the images are the dataset's)."""
    from tfattr.methods.registry import entry

    found = entry(name, "--methods" if hasattr(args, "methods") else "--method")
    with _flag_errors():
        settings = _method_settings(args, value_range)
    return {key: settings[key] for key in found.settings
            if key not in ("verbose", "images") and settings.get(key) is not None}


@contextlib.contextmanager
def _flag_errors():
    """A setting's error (raised by the method, when built or when it runs) names the flag instead."""
    try:
        yield
    except (ValueError, TypeError) as error:
        text = str(error)
        for dest, flag in _FLAG_OF.items():
            text = text.replace(f"Received: {dest}=", f"Received: {flag}=").replace(f"`{dest}`", flag)
        if text == str(error):
            raise
        raise type(error)(text) from None


#: the Beam runners ``explain-dataset --runner`` names (any other runner class name Beam knows is passed on too)
RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PrismRunner", "PortableRunner")


def _add_beam_flags(parser: argparse.ArgumentParser) -> None:
    """``--runner`` of ``explain-dataset``: run on Apache Beam (``tfattr[beam]``) instead of locally; the
    arguments the command does not know are Beam's pipeline options."""
    parser.add_argument("--runner", default=None, metavar="RUNNER",
                        help=f"run the explanation as an Apache Beam pipeline on RUNNER ({', '.join(RUNNERS)}; needs "
                             "tfattr[beam]); the arguments this command does not know are passed to Beam's "
                             "PipelineOptions, e.g. --direct_num_workers 2 --direct_running_mode multi_processing, or "
                             "--project P --region R --temp_location gs://... for Dataflow (default: run locally)")


def _beam_pipeline_options(runner: str, extra: List[str]):
    """Beam's ``PipelineOptions`` from ``--runner`` and the arguments the command did not know; an
    argument Beam does not know either is an error naming it (Beam itself would only log it)."""
    try:
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise InvalidInputError("--runner needs Apache Beam: pip install 'tfattr[beam]'. "
                                + received("--runner", runner)) from None
    _check_runner(runner)
    flags = ["--runner", runner] + list(extra)
    try:  # Beam's own parser class (value-provider arguments), as PipelineOptions.get_all_options parses
        from apache_beam.options.pipeline_options import _BeamArgumentParser as BeamParser
    except ImportError:  # pragma: no cover - another Beam version
        BeamParser = argparse.ArgumentParser

    class Parser(BeamParser):
        def error(self, message):  # a bad value of a Beam option: named here (argparse would print Beam's usage)
            raise InvalidInputError(f"Beam's pipeline options: {message}. " + received("arguments", list(extra)))

    parser = Parser(allow_abbrev=False, add_help=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - what PipelineOptions.get_all_options parses with
    _, unknown = parser.parse_known_args(flags)
    if unknown:  # flags, and words no flag took (`--method ig rise`: "rise" would be dropped without a word)
        raise InvalidInputError(f"unknown argument(s) {' '.join(unknown)}: neither explain-dataset nor Beam's "
                                "pipeline options take them. " + received("arguments", unknown))
    return PipelineOptions(flags)


def _check_runner(runner: str) -> None:
    """``--runner``: a runner Beam can make (a name such as DirectRunner, or a runner class's qualified
    name), checked before the model loads; a misspelt name or a runner whose extra is not installed
    (``apache-beam[gcp]`` for Dataflow) is named."""
    from apache_beam.runners.runner import PipelineRunner, create_runner

    try:
        made = create_runner(runner) if runner.strip() else None
    except Exception as error:  # noqa: BLE001 - Beam raises ValueError, ImportError, AttributeError, ...
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = f" ({type(error).__name__}: {lines[0] if lines else ''})"
        made = None
    else:
        reason = ""
    if not isinstance(made, PipelineRunner):
        raise InvalidInputError(f"--runner: {runner!r} is not a Beam runner Beam can make here{reason}; name one "
                                f"of {', '.join(RUNNERS)} (a runner's own extra installed, e.g. apache-beam[gcp] for "
                                "Dataflow), or a runner class's qualified name. " + received("--runner", runner))


def _explain_dataset_beam(args, extra: List[str]) -> int:
    """``explain-dataset --runner R``: :class:`tfattr.beam.ExplainImages` on Beam, writing the store at
    ``--out`` that the local command writes (same settings, so either may resume the other's run)."""
    options = _beam_pipeline_options(args.runner, extra)
    _check_rsi_notebook([args.method], args)
    _check_method_flags([args.method], args)
    for flag, dest in (("--split", "split"), ("--data-dir", "data_dir"), ("--labels", "labels")):
        if getattr(args, dest, None) is not None:
            raise InvalidInputError(f"{flag}: --runner reads image files (a folder or a glob pattern of image or "
                                    "TFRecord files), not TFDS datasets or labels. " + received(flag, getattr(args, dest)))
    if args.target == "label":
        raise InvalidInputError("--target label: --runner explains the top-1 class or one class index. "
                                + received("--target", "label"))
    if "://" not in args.data and not any(ch in args.data for ch in "*?[") and not os.path.exists(args.data):
        raise InvalidInputError(f"--data: --runner reads image or TFRecord files (a folder, a file or a glob pattern); "
                                f"{args.data!r} is none of them (a TFDS dataset is explained without --runner). "
                                + received("--data", args.data))
    if "://" not in args.model and not os.path.exists(args.model):
        raise InvalidInputError(f"--model: --runner's workers load the model from a file; no file {args.model!r} (a "
                                "keras.applications name: save it as .keras first, and give --value-range 0 255: "
                                "it takes RGB pixels in [0, 255]). " + received("--model", args.model))
    _check_out(args.out)
    if args.size is not None and len(args.size) > 2:
        raise InvalidInputError("--size takes SIDE or H W. " + received("--size", args.size))
    import apache_beam as beam

    from tfattr.beam import ExplainImages, load_model

    model = load_model(args.model, logits=True)
    value_range = tuple(args.value_range) if args.value_range else (0.0, 1.0)
    args.value_range = value_range
    size, _ = _image_shape(model, args.size)  # the size the local command decodes to, as it records it
    if size is None:
        raise InvalidInputError("--size: the model takes images of any size, and the store --runner writes holds "
                                "one size (the workers decode the files apart): give --size SIDE or H W. "
                                + received("--size", None))
    settings = _dataset_settings(args.method, args, value_range)
    with _flag_errors():
        transform = ExplainImages(args.data, args.out, method=args.method, model_uri=args.model,
                                  method_options=settings, target=args.target, chunk=args.chunk, seed=args.seed,
                                  image_size=size, value_range=value_range, logits=True, on_error=args.on_error,
                                  overwrite=args.overwrite, image_key=args.image_key, id_key=args.id_key)
        pipeline = beam.Pipeline(options=options)
        _ = pipeline | "ExplainImages" >> transform
    try:
        pipeline.run().wait_until_finish()
    except Exception as error:  # a worker's error (Beam wraps it in its own types): its message, one line
        print(f"tfattr explain-dataset: error: the Beam pipeline failed: {_beam_error(error)}", file=sys.stderr)
        return 1
    print(f"{transform.num_items} items in {os.path.abspath(args.out)} (read with tfattr.open_explanations)")
    return 0


def _beam_error(error: BaseException) -> str:
    """The innermost tfattr message in a Beam pipeline error (the worker's, wrapped in Beam's own
    exception texts and tracebacks), else the error's last line."""
    text = str(error)
    found = re.findall(r"((?:InvalidInputError|InvalidTypeError|RuntimeError): [^\n]*Received: [^\n]*)", text)
    if found:
        return found[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tfattr", description="Explain Keras image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)

    explain = sub.add_parser("explain", help="explain image files with one method, write overlays and an .npz")
    explain.add_argument("--model", required=True,
                         help="a .keras file (its softmax head is stripped: logits are explained) or a "
                              "keras.applications name: vgg16, vgg19, resnet50, densenet121, mobilenet_v2, inception_v3")
    explain.add_argument("--weights", default="imagenet", help="keras.applications weights: imagenet or none")
    explain.add_argument("--images", nargs="+", required=True, help="image files (PNG, JPEG, ...)")
    explain.add_argument("--method", choices=_methods(), default="ig", help="attribution method (default: ig)")
    explain.add_argument("--size", type=_integer("--size", 1, maximum=10_000), nargs="+", default=None,
                         metavar="SIDE", help="resize the images to SIDE×SIDE or H×W (--size H W); needed for a model "
                                              "that takes any size and images of several sizes (default: the model's size)")
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
    evaluate.add_argument("--images", type=_integer("--images", 1, maximum=MAX_IMAGES), default=16, help="number of images (default: 16)")
    evaluate.add_argument("--methods", default="gradient,smoothgrad,ig,guided-ig,smoothtaylor,gradcam,rsi-gradcam",
                          help="comma-separated methods (default: a representative set)")
    evaluate.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                          help="mirrored: shard attribution and metrics over every visible GPU (or logical "
                               "device); multiworker: over the workers in TF_CONFIG (run the same command "
                               "on every worker; each writes the whole table)")
    evaluate.add_argument("--size", type=_integer("--size", 1, maximum=10_000), default=None, metavar="SIDE",
                          help="image side for a model that takes any size (default: the model's size)")
    evaluate.add_argument("--aupc-kernel", type=_integer("--aupc-kernel", 1), default=None,
                          help="AUPC window side (default: 15 scaled to the image side)")
    evaluate.add_argument("--metrics", default=None,
                          help="comma-separated metric names, one column each (default: the papers' table: AUPC, "
                               "AUTVC, deletion, insertion, pointing game, mask energy); see tfattr.metrics.METRICS, "
                               "e.g. max_sensitivity,local_lipschitz_estimate,model_parameter_randomisation")
    _method_options(evaluate)
    evaluate.add_argument("--out", default=os.path.join("outputs", "evaluate"), help="output folder (tables, cache)")

    for command in ("explain-dataset", "evaluate-dataset"):
        several = command == "evaluate-dataset"
        dataset = sub.add_parser(command, allow_abbrev=several,  # explain-dataset: Beam's flags never abbreviate ours
                                 help="score methods over a whole dataset, streaming and resumable (a store "
                                               "per method, per-image metric rows, the table)" if several else
                                 "explain a whole dataset into a chunked on-disk store, streaming and resumable")
        dataset.add_argument("--model", required=True,
                             help="a .keras file (its softmax head is stripped: logits are explained) or a "
                                  "keras.applications name")
        dataset.add_argument("--weights", default="imagenet", help="keras.applications weights: imagenet or none")
        dataset.add_argument("--data", required=True,
                             help="a folder of image files (PNG, JPEG, BMP, GIF; sorted relative paths are the ids) "
                                  "or a TFDS dataset name (with --split)")
        dataset.add_argument("--split", default=None, help="TFDS split (e.g. validation, test[:1000])")
        dataset.add_argument("--data-dir", default=None, help="TFDS data folder (default: TFDS's)")
        dataset.add_argument("--labels", choices=("folders",), default=None,
                             help="a folder's labels: its first-level sub-folder names, sorted, are the classes")
        dataset.add_argument("--image-key", default="image", help="TFDS image feature (default: image)")
        dataset.add_argument("--label-key", default="label", help="TFDS label feature (default: label)")
        dataset.add_argument("--id-key", default=None, help="TFDS feature holding each item's id (default: the index)")
        if several:
            dataset.add_argument("--methods", required=True, help="comma-separated methods (one store each)")
            dataset.add_argument("--metrics", default=None,
                                 help="comma-separated metric names (default: AUPC, AUTVC, deletion, insertion and "
                                      "completeness for path methods)")
            dataset.add_argument("--aupc-kernel", type=_integer("--aupc-kernel", 1), default=None,
                                 help="AUPC window side (default: 15 scaled to the image side)")
            dataset.add_argument("--confidence", type=_number("--confidence", "> 0"), default=0.95,
                                 help="level of the bootstrap intervals (default: 0.95)")
        else:
            dataset.add_argument("--method", choices=_methods(), default="ig", help="attribution method (default: ig)")
        dataset.add_argument("--target", type=_target("--target"), default=None,
                             help="top1 (default: each image's top-1 class), label (the dataset's labels) or a class "
                                  "index")
        dataset.add_argument("--size", type=_integer("--size", 1, maximum=10_000), nargs="+", default=None,
                             metavar="SIDE", help="resize the images to SIDE×SIDE or H×W (default: the model's size)")
        dataset.add_argument("--chunk", type=_integer("--chunk", 1, maximum=MAX_COUNT), default=64,
                             help="images per batch and per store chunk (default: 64)")
        dataset.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                             help="a corrupt image or a label out of range: stop with an error naming it (raise, "
                                  "default) or skip it, its row saying why (skip)")
        dataset.add_argument("--overwrite", action="store_true", help="delete an existing store at --out first")
        dataset.add_argument("--quiet", action="store_true", help="no progress display")
        _method_options(dataset)
        dataset.add_argument("--out", required=True, help="output folder (the store; rerun the command to resume)")
        if not several:
            _add_beam_flags(dataset)

    demo = sub.add_parser("demo", help="run the demo (every method on real photos, pictures + table)")
    demo.add_argument("--out", default=os.path.join("outputs", "demo"))
    demo.add_argument("--images", type=_integer("--images", 1, maximum=MAX_IMAGES), default=6)
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


#: the most pixels one image file may decode to (10⁸: 10000 × 10000, 300 MB as 8-bit RGB); larger images
#: are refused from their header, before any pixel is decoded
MAX_PIXELS = 100_000_000


_header_size = header_size  # tfattr.core.image_headers (shared with tfattr.streaming.sources)


def _file_header_size(data: np.ndarray) -> Optional[Tuple[int, int]]:
    """:func:`_header_size` of a file's bytes: its first 64 KiB, or all of it for a JPEG or TIFF whose
    size is not in them (a JPEG's start-of-frame may follow 64 KiB of APP segments, a TIFF's first IFD
    may sit at the end of the file: read only the start, a crafted file would skip the cap)."""
    head = data[:65536].tobytes()
    shape = _header_size(head)
    if shape is None and data.size > len(head) and (head[:2] == b"\xff\xd8" or head[:4] in (b"II*\x00", b"MM\x00*")):
        shape = _header_size(data.tobytes())
    return shape


def _read_image_files(paths: List[str]) -> List[np.ndarray]:
    """Every image file's bytes; a missing or unreadable file, or one whose header declares more than
    :data:`MAX_PIXELS` pixels, raises one error naming it (before any model is loaded or pixel decoded)."""
    files = []
    for path in paths:
        try:
            if os.path.isdir(path):
                raise IsADirectoryError(errno.EISDIR, "Is a directory")
            if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):  # /dev/zero, a FIFO: never ends
                raise OSError(errno.EINVAL, "not a regular file")
            size = os.path.getsize(path)
            if size > 4 * MAX_PIXELS:  # more than any image under the cap takes, even uncompressed
                raise InvalidInputError(f"--images: cannot read image {path!r}: the file has {size} bytes, more than "
                                        f"an image of at most {MAX_PIXELS} pixels takes. " + received("--images", path))
            with open(path, "rb") as handle:
                data = np.frombuffer(handle.read(), dtype=np.uint8)
        except OSError as error:
            raise InvalidInputError(f"--images: cannot read image {path!r}: {error.strerror or error}. "
                                    + received("--images", path)) from None
        shape = _file_header_size(data)
        if shape is not None and shape[0] * shape[1] > MAX_PIXELS:
            raise InvalidInputError(f"--images: image {path!r} is {shape[1]}×{shape[0]} pixels, more than the "
                                    f"{MAX_PIXELS} pixels an image may have (its pixels would not fit in memory at "
                                    "once); downscale it first. " + received("--images", path))
        reduced = 8 if shape is not None and min(shape) >= 64 else 1
        _decode_image(path, data, None, 1, reduced=reduced)  # a damaged file fails here, at 1/8 scale if it is large
        files.append(data)
    return files



def _decode_image(path: str, data: np.ndarray, size: Optional[Tuple[int, int]], channels: int,
                  reduced: int = 1) -> np.ndarray:
    """One file's bytes as ``(H, W, channels)`` uint8 (RGB, or grey for one channel), resized to ``size``
    (``None``: as it is) with area averaging in 8 bits. A JPEG far larger than ``size`` is decoded at
    1/2, 1/4 or 1/8 of its side (OpenCV's reduced modes), never above ``size``; any decoded image
    holds at most :data:`MAX_PIXELS` pixels (the header was checked). ``reduced=8``: decode at 1/8 of the
    side in every format (OpenCV reduces a JPEG in its decoder; other formats after decoding), a check."""
    import cv2

    factor = reduced
    shape = _file_header_size(data)
    if size is not None and shape is not None and data[:2].tobytes() == b"\xff\xd8":
        # a decoder-level reduction keeps the image at least as large as ``size`` in both orientations
        # (the EXIF orientation may swap its sides); the area resize does the rest
        factor = next((f for f in (8, 4, 2) if min(shape) // f >= max(size)), 1)
    grey = channels == 1
    flag = {(False, 1): cv2.IMREAD_COLOR, (False, 2): cv2.IMREAD_REDUCED_COLOR_2,
            (False, 4): cv2.IMREAD_REDUCED_COLOR_4, (False, 8): cv2.IMREAD_REDUCED_COLOR_8,
            (True, 1): cv2.IMREAD_GRAYSCALE, (True, 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
            (True, 4): cv2.IMREAD_REDUCED_GRAYSCALE_4, (True, 8): cv2.IMREAD_REDUCED_GRAYSCALE_8}[grey, factor]
    image = None
    if data.size:
        with _quiet_opencv(cv2):
            try:
                image = cv2.imdecode(data, flag)
            except cv2.error:  # OpenCV's own size limit, a decoder failure
                image = None
    if image is None or image.size == 0:
        raise InvalidInputError(f"--images: cannot read image {path!r}: not an image OpenCV can decode (PNG, "
                                "JPEG, BMP, TIFF, WebP, ...) or a truncated file. " + received("--images", path))
    if image.shape[0] * image.shape[1] * factor * factor > MAX_PIXELS:  # a format without a header check
        raise InvalidInputError(f"--images: image {path!r} is about {image.shape[1] * factor}×{image.shape[0] * factor} "
                                f"pixels, more than the {MAX_PIXELS} pixels an image may have; downscale it first. "
                                + received("--images", path))
    if size is not None and image.shape[:2] != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return image[..., None] if image.ndim == 2 else image[..., ::-1]  # BGR → RGB


def _load_images(paths: List[str], size, value_range, files: Optional[List[np.ndarray]] = None,
                 channels: int = 3) -> np.ndarray:
    """The image files (``files``: their bytes, read already) decoded as RGB (grey for ``channels=1``),
    resized to ``size`` and scaled to ``value_range``, as ``(N, H, W, channels)`` float32.

    ``size=None`` keeps each image's size; they must then all have the same (else an error naming
    ``--size``)."""
    low, high = value_range
    files = _read_image_files(paths) if files is None else files
    images = [_decode_image(path, data, size, channels) for path, data in zip(paths, files)]
    shapes = sorted({image.shape[:2] for image in images})
    if len(shapes) > 1:
        sizes = ", ".join(f"{w}×{h}" for h, w in shapes)
        raise InvalidInputError(f"--size: the model takes any image size and the images have different sizes "
                                f"({sizes}); pass --size H W to resize them to one. " + received("--size", None))
    return low + np.stack(images).astype(np.float32) / np.float32(255.0) * np.float32(high - low)


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


def _image_shape(model, requested) -> Tuple[Optional[Tuple[int, int]], int]:
    """``(size, channels)`` the model's images take: its fixed ``(H, W)`` (``--size`` must agree) or
    ``--size`` for a free one (``None`` if not given), and 1 (grey) or 3 (RGB) channels."""
    import tfattr.core.inputs

    spec = tfattr.core.inputs.model_spec(model)
    shape = spec.input_shape
    if shape is None or len(shape) != 3:
        raise InvalidInputError("--model: the command explains models of one image input (H, W, C); this model "
                                f"takes {shape if shape is not None else 'several inputs'}. "
                                + received("--model", getattr(model, "name", model)))
    channels = shape[2]
    if channels not in (1, 3):
        raise InvalidInputError(f"--model: the command reads images as grey (1 channel) or RGB (3 channels); the "
                                f"model takes {channels} channels. " + received("input shape", tuple(shape)))
    wanted = None if requested is None else (tuple(requested) * 2)[:2]
    fixed = tuple(shape[:2])
    if None not in fixed:
        if wanted is not None and wanted != fixed:
            raise InvalidInputError(f"--size: the model takes {fixed[0]}×{fixed[1]} images only. "
                                    + received("--size", list(requested)))
        return fixed, channels
    if None in fixed and wanted is None:
        return None, channels
    if any(f is not None and f != w for f, w in zip(fixed, wanted)):
        raise InvalidInputError(f"--size: the model takes images of shape {tuple(shape)}. " + received("--size", list(requested)))
    return wanted, channels


def _explain(args) -> int:
    from tfattr import viz
    from tfattr.core.files import atomic_write

    _check_rsi_notebook([args.method], args)
    _check_method_flags([args.method], args)
    files = _read_image_files(args.images)  # a missing, unreadable or huge image fails before the model loads
    _check_out(args.out)  # and an unwritable --out before any attribution
    if args.size is not None and len(args.size) > 2:
        raise InvalidInputError("--size takes SIDE or H W. " + received("--size", args.size))
    model, default_range = _load_model(args.model, args.weights)
    value_range = tuple(args.value_range) if args.value_range else default_range
    args.value_range = value_range
    args.verbose = 1
    size, channels = _image_shape(model, args.size)
    x = _load_images(args.images, size, value_range, files, channels=channels)
    method = _build_method(args.method, model, args, value_range, images=x)
    with _flag_errors():
        expl = method.attribute(x, target=args.target)
    os.makedirs(args.out, exist_ok=True)
    attributions = np.asarray(expl)
    names = output_names(args.images)
    for name, image, attribution in zip(names, x, attributions):
        picture = viz.overlay(image, attribution, value_range=tuple(args.value_range))
        out = viz.save_png(os.path.join(args.out, f"{name}_{args.method}.png"), picture)
        print(out)
    extra = {} if expl.delta is None else {"delta": expl.delta}
    extra["options"] = np.array(_effective_options(method))  # what ran: a class default included
    npz = os.path.join(args.out, "attributions.npz")
    with atomic_write(npz) as handle:
        np.savez_compressed(handle, attributions=attributions,
                            targets=expl.targets if expl.targets is not None else -1, scores=expl.scores,
                            sources=np.array(args.images, dtype=str), names=np.array(names, dtype=str), **extra)
    print(npz)
    if expl.delta is not None:
        print(f"completeness error (relative, per image): {np.round(expl.relative_delta, 4).tolist()}")
    return 0


def _effective_options(method) -> str:
    """The options ``method`` ran with, as JSON (an array by its shape, anything else JSON cannot
    write by its type): the flags given and the class defaults of those left out."""
    import json

    def plain(value):
        if isinstance(value, np.ndarray) or hasattr(value, "shape") and hasattr(value, "dtype"):
            return f"<array {tuple(value.shape)} {value.dtype}>"
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return f"<{type(value).__name__}>"

    config = dict(getattr(method, "config", None) or {})
    inner = getattr(method, "method", None)
    if inner is not None and getattr(inner, "config", None) is not None:  # NoiseTunnel: the wrapped method's too
        config["method"] = {"class": type(inner).__name__, **dict(inner.config)}
        config["method"] = {k: plain(v) for k, v in config["method"].items()}
    options = {k: (v if k == "method" else plain(v)) for k, v in config.items()}
    return json.dumps({"class": type(method).__name__, "options": options}, sort_keys=True)


def _physical_memory() -> Optional[int]:
    """This machine's memory in bytes, if the system says."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


#: where TFDS downloads imagenette from
IMAGENETTE_HOST = ("s3.amazonaws.com", 443)


def _reachable(address, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``address`` opens within ``timeout`` seconds (the name lookup included)."""
    import socket
    import threading

    result = []

    def connect():
        try:
            socket.create_connection(address, timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _check_imagenette(split: str) -> None:
    """imagenette is prepared in the TFDS folder, or its download host answers; else a named error in
    seconds (TFDS itself retries the download for minutes)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise InvalidInputError("--dataset imagenette needs tensorflow-datasets (pip install tensorflow-datasets). "
                                + received("--dataset", "imagenette")) from None
    builder = tfds.builder("imagenette/320px-v2")
    prepare = getattr(type(builder), "download_and_prepare", None)
    if getattr(prepare, "__module__", "").startswith("tensorflow_datasets.testing"):  # tfds.testing.mock_data
        return
    if builder.is_prepared() or _reachable(IMAGENETTE_HOST):
        return
    raise InvalidInputError(f"--dataset imagenette: it is not in the TFDS folder {builder.data_dir!r} and its download "
                            f"host {IMAGENETTE_HOST[0]} cannot be reached (no network?); download it once with "
                            "network (tfds.load('imagenette/320px-v2')) or set TFDS_DATA_DIR to a folder that holds "
                            "it. " + received("--dataset", "imagenette"))


def _metric_names(text) -> Optional[List[str]]:
    """``evaluate --metrics``: ``None`` (the papers' table) or registered metric names, checked
    before any model is loaded (the masks' metrics need the digits-on-photos dataset's masks)."""
    if text is None:
        return None
    from tfattr.metrics.registry import METRICS, resolve_metrics

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise InvalidInputError(f"--metrics: no metric named; choose from {', '.join(METRICS)}. "
                                + received("--metrics", text))
    try:
        resolve_metrics(names)
    except InvalidInputError as error:
        raise InvalidInputError(f"--metrics: {error}") from None
    return names


def _evaluate(args) -> int:
    from tfattr.distribute import strategy_from_name

    strategy = strategy_from_name(args.strategy)  # before any other TensorFlow work (multi-worker)
    import tfattr.core.inputs
    import tfattr.data
    from tfattr.evaluation import evaluate, format_table

    names = _method_names(args)
    _check_rsi_notebook(names, args)
    _check_method_flags(names, args)
    per_image = [n for n in names if n in _flag_users("segmentation") and n != "lime"]
    if args.strategy != "default" and per_image and args.segmentation not in (None, "grid"):
        raise InvalidInputError(f"--segmentation {args.segmentation}: superpixels are one feature mask per image, and "
                                f"--strategy {args.strategy} shards the images; use --segmentation grid (one mask for "
                                f"all) with {', '.join(per_image)}. " + received("--segmentation", args.segmentation))
    metric_names = _metric_names(args.metrics)
    if args.dataset not in ("digits_on_photos", "imagenette"):
        raise InvalidInputError(f"unknown dataset {args.dataset!r}; choose digits_on_photos or imagenette. "
                                + received("--dataset", args.dataset))
    _check_out(args.out)
    if args.dataset == "imagenette":
        _check_imagenette(args.split)  # seconds, not minutes of download retries, when offline
    if args.model == "demo":
        from tfattr.core.assets import DEMO_MODEL, asset_path

        args.model = asset_path(DEMO_MODEL)  # package data: there in a wheel as in a checkout
    model, default_range = _load_model(args.model, args.weights)
    value_range = tuple(args.value_range) if args.value_range else default_range
    args.verbose = 0
    masks = None
    size, channels = _image_shape(model, None if args.size is None else [args.size])
    if size is None:
        raise InvalidInputError("--size: the model takes any image size; pass --size SIDE for the dataset's "
                                "images. " + received("--size", None))
    if size[0] != size[1]:
        raise InvalidInputError(f"--model: evaluate draws square images; the model takes {size[0]}×{size[1]}. "
                                + received("--model", args.model))
    side = size[0]
    need = 4.0 * args.images * side * side * 3 * 3  # the images, their noisy and perturbed copies
    memory = _physical_memory()
    if memory and need > memory / 2:
        raise InvalidInputError(f"--images: {args.images} images of {side}×{side} need about {need / 2**30:.1f} GiB, "
                                f"more than half of this machine's {memory / 2**30:.1f} GiB; evaluate fewer at a time. "
                                + received("--images", args.images))
    if args.dataset == "digits_on_photos":
        data = tfattr.data.digits_on_photos(args.images, size=side, split=args.split, seed=args.seed)
        x, labels, masks = data["image"] * (value_range[1] - value_range[0]) + value_range[0], data["label"], data["mask"]
    else:
        pairs = list(tfattr.data.load_imagenette(split="validation" if args.split == "test" else args.split,
                                                 size=side).take(args.images).as_numpy_iterator())
        x = np.stack([p[0] for p in pairs]).astype(np.float32)  # RGB in [0, 255]
        x = value_range[0] + x / 255.0 * (value_range[1] - value_range[0])  # into the model's range
        labels = np.array([p[1] for p in pairs])
    x = x.astype(np.float32)
    if channels == 1:  # a grey model: the luma of the RGB images (ITU-R BT.601, as OpenCV's RGB2GRAY)
        x = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    methods = [(name, _build_method(name, model, args, value_range, images=x)) for name in names]
    side = x.shape[1]
    kernel = args.aupc_kernel or max(2, round(15 * side / 224))
    print(f"evaluating {len(names)} method(s) on {len(x)} {args.dataset} image(s), {side}x{side}, AUPC windows {kernel}px")
    with _flag_errors():  # a method's setting found wrong when it runs (a window larger than the images)
        rows = evaluate(model, x, methods, labels=labels, masks=masks, value_range=value_range, aupc_kernel=kernel,
                        pointing_tolerance=max(1, round(15 * side / 224)), seed=args.seed,
                        cache_dir=os.path.join(args.out, "cache"), strategy=strategy, metrics=metric_names)
    text = format_table(rows)
    print("\n" + text)
    from tfattr.core.files import write_text

    print(write_text(os.path.join(args.out, "table.md"), text))
    return 0


def _demo_titles() -> List[str]:
    """The method titles the demo runs: the first item of each ``yield "Title", method`` in
    :func:`tfattr.demo.methods` and :func:`tfattr.demo.photo_methods` (read from the module's source,
    nothing imported or run), each once."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("tfattr.demo")
    if spec is None or not spec.origin or not os.path.exists(spec.origin):
        return []
    with open(spec.origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    titles = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in ("methods", "photo_methods"):
            for inner in ast.walk(node):
                if (isinstance(inner, ast.Yield) and isinstance(inner.value, ast.Tuple) and inner.value.elts
                        and isinstance(inner.value.elts[0], ast.Constant) and isinstance(inner.value.elts[0].value, str)):
                    titles.append(inner.value.elts[0].value)
    return list(dict.fromkeys(titles))


#: skimage.data names that are not a photo (helpers, volumes, downloads of other kinds)
_NOT_PHOTOS = {"binary_blobs", "cells3d", "data_dir", "download_all", "file_hash", "kidney", "lbp_frontal_face_cascade_filename",
               "lfw_subset", "nickel_solidification", "protein_transport", "stereo_motorcycle", "vortex"}


def _check_demo_flags(args) -> None:
    """``--methods`` names the demo's method titles, ``--photos`` scikit-image photos (or none): else an
    error naming the flag and the valid names, before the demo starts."""
    if args.methods is not None:
        titles = _demo_titles()
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in titles]
        if titles and (unknown or not wanted):
            what = f"unknown method title(s) {', '.join(map(repr, unknown))}" if unknown else "no method title"
            raise InvalidInputError(f"--methods: {what}; choose from {', '.join(titles)}. "
                                    + received("--methods", args.methods))
    if args.photos is not None and args.photos.strip().lower() != "none":
        try:
            import skimage.data
        except ImportError:
            raise InvalidInputError("--photos needs scikit-image (pip install scikit-image), or pass --photos none. "
                                    + received("--photos", args.photos)) from None
        valid = sorted(name for name in getattr(skimage.data, "__all__", dir(skimage.data))
                       if not name.startswith("_") and name not in _NOT_PHOTOS and callable(getattr(skimage.data, name, None)))
        photos = [p.strip() for p in args.photos.split(",") if p.strip()]
        unknown = [p for p in photos if p not in valid]
        if unknown or not photos:
            what = f"not scikit-image photos: {', '.join(unknown)}" if unknown else "no photo named"
            raise InvalidInputError(f"--photos: {what}; choose from {', '.join(valid)}, or none. "
                                    + received("--photos", args.photos))


def _demo(args) -> int:
    from tfattr.demo import main as run_demo  # the demo ships with the package

    _check_demo_flags(args)
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


def _dataset_common(args):
    """The model, value range, image size and channels of ``explain-dataset``/``evaluate-dataset``."""
    _check_out(args.out)
    if args.size is not None and len(args.size) > 2:
        raise InvalidInputError("--size takes SIDE or H W. " + received("--size", args.size))
    model, default_range = _load_model(args.model, args.weights)
    value_range = tuple(args.value_range) if args.value_range else default_range
    args.value_range = value_range
    size, channels = _image_shape(model, args.size)
    return model, value_range, size, channels


def _dataset_source(args):
    """``--data``: a folder as it is, else a TFDS name (which needs --split)."""
    if os.path.isdir(args.data):
        return args.data
    if os.path.exists(args.data):
        raise InvalidInputError("--data: a folder of image files or a TFDS dataset name; this is a file. "
                                + received("--data", args.data))
    if args.split is None:
        raise InvalidInputError(f"--data {args.data!r} is not a folder; as a TFDS dataset name it needs --split. "
                                + received("--split", None))
    return args.data


def _explain_dataset(args) -> int:
    from tfattr.streaming.explain import explain_dataset

    _check_rsi_notebook([args.method], args)
    _check_method_flags([args.method], args)
    data = _dataset_source(args)
    model, value_range, size, channels = _dataset_common(args)
    settings = _dataset_settings(args.method, args, value_range)
    with _flag_errors():
        store = explain_dataset(args.method, data, args.out, args.target, model=model, method_options=settings,
                                split=args.split, data_dir=args.data_dir, batch_size=args.chunk, seed=args.seed,
                                on_error=args.on_error, verbose=0 if args.quiet else 1, image_size=size,
                                image_key=args.image_key, label_key=args.label_key, id_key=args.id_key,
                                labels=args.labels, channels=channels, value_range=value_range,
                                overwrite=args.overwrite)
    skipped = int(np.count_nonzero(~np.asarray(store.valid[:], bool)))
    print(f"{len(store)} items ({skipped} skipped) in {os.path.abspath(args.out)} (read with tfattr.open_explanations)")
    return 0


def _evaluate_dataset(args) -> int:
    from tfattr.streaming.evaluate import evaluate_dataset

    names = _method_names(args)
    _check_rsi_notebook(names, args)
    _check_method_flags(names, args)
    metric_names = _metric_names(args.metrics)
    if not 0 < args.confidence < 1:
        raise InvalidInputError("--confidence must be in (0, 1), e.g. 0.95. " + received("--confidence", args.confidence))
    data = _dataset_source(args)
    model, value_range, size, channels = _dataset_common(args)
    side = size[1] if size is not None else None
    kernel = args.aupc_kernel or (max(2, round(15 * side / 224)) if side else 15)
    methods = [(name, _dataset_settings(name, args, value_range)) for name in names]
    with _flag_errors():
        rows = evaluate_dataset(model, data, methods, metric_names, args.out, target=args.target,
                                value_range=value_range, split=args.split, data_dir=args.data_dir,
                                batch_size=args.chunk, seed=args.seed, on_error=args.on_error,
                                verbose=0 if args.quiet else 1, image_size=size, image_key=args.image_key,
                                label_key=args.label_key, id_key=args.id_key, labels=args.labels,
                                channels=channels, aupc_kernel=kernel,
                                confidence=args.confidence, overwrite=args.overwrite)
    if args.quiet:  # no progress; the table and its notes all the same
        from tfattr.evaluation import format_table

        notes = dict.fromkeys(f"note ({row.method}): {note}" for row in rows for note in row.notes)
        print("".join(f"{note}\n" for note in notes) + format_table(rows))
    print(os.path.join(args.out, "table.md"))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not (args.command == "explain-dataset" and getattr(args, "runner", None) is not None):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        value_range = getattr(args, "value_range", None)
        if value_range is not None and not value_range[0] < value_range[1]:  # reversed: every image inverted
            raise InvalidInputError("--value-range: LOW must be below HIGH. "
                                    + received("--value-range", " ".join(f"{v:g}" for v in value_range)))
        if args.command == "explain-dataset" and getattr(args, "runner", None) is not None:
            return _explain_dataset_beam(args, extra)
        return {"explain": _explain, "evaluate": _evaluate, "demo": _demo, "baseline": _baseline,
                "explain-dataset": _explain_dataset, "evaluate-dataset": _evaluate_dataset}[args.command](args)
    except (ValueError, TypeError, OSError) as error:
        print(f"tfattr {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
