"""The real thing where users have it: ImageNet-family datasets and ``keras.applications`` models.

Nothing here downloads on import; the calls fetch what TensorFlow Datasets and Keras fetch
(Imagenette downloads by itself; ``imagenet2012`` needs the manual download TFDS
describes; ``weights="imagenet"`` downloads the Keras weights).

The models come wrapped so they take RGB images in ``[0, 255]``: the architecture's own
``preprocess_input`` runs inside the model. Attribution methods then work in pixel space
with ``value_range=(0, 255)`` and "black" means a black image, whatever the network's
internal normalisation (Caffe-style BGR mean subtraction for VGG/ResNet, ``[−1, 1]`` for
MobileNet/Inception, ...). The models declare that range (``model.tfattr_value_range =
(0.0, 255.0)``, :mod:`tfattr.core.ranges`): methods and metrics given no ``value_range`` use it.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import keras
import tensorflow as tf

from tfattr.core.ranges import VALUE_RANGE_ATTRIBUTE
from tfattr.errors import InvalidInputError, received

__all__ = ["APPLICATIONS", "IMAGENETTE_TO_IMAGENET", "keras_application", "load_imagenette", "load_imagenet"]

#: name → (constructor, preprocess_input, default input side)
APPLICATIONS = {
    "vgg16": (keras.applications.VGG16, keras.applications.vgg16.preprocess_input, 224),
    "vgg19": (keras.applications.VGG19, keras.applications.vgg19.preprocess_input, 224),
    "resnet50": (keras.applications.ResNet50, keras.applications.resnet50.preprocess_input, 224),
    "densenet121": (keras.applications.DenseNet121, keras.applications.densenet.preprocess_input, 224),
    "mobilenet_v2": (keras.applications.MobileNetV2, keras.applications.mobilenet_v2.preprocess_input, 224),
    "inception_v3": (keras.applications.InceptionV3, keras.applications.inception_v3.preprocess_input, 299),
}

#: Imagenette's 10 labels (tfds order) → ImageNet-1k class indices
IMAGENETTE_TO_IMAGENET = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)


def _application(name: str):
    key = name.lower().replace("-", "_")
    if key not in APPLICATIONS:
        raise InvalidInputError(f"Unknown keras.applications model; expected one of {sorted(APPLICATIONS)}. "
                                + received("model", name))
    return APPLICATIONS[key]


def keras_application(name: str, weights: Optional[str] = "imagenet", input_size: Optional[int] = None,
                      logits: bool = True) -> keras.Model:
    """A ``keras.applications`` classifier that takes RGB images in ``[0, 255]``.

    The model declares its range, ``model.tfattr_value_range == (0.0, 255.0)``: methods and metrics
    left at ``value_range=None`` take it (a copy saved and loaded again does not keep it; pass
    ``value_range=(0, 255)`` then).

    Args:
        name: ``vgg16``, ``vgg19``, ``resnet50``, ``densenet121``, ``mobilenet_v2``, ``inception_v3``.
        weights: ``"imagenet"`` (downloads; needs internet) or ``None`` (random, for tests).
        input_size: image side (default: the architecture's own, 224 or 299).
        logits: drop the final softmax (the papers explain pre-softmax logits).

    Example:
        >>> vgg = keras_application("vgg19", weights=None)       # offline
        >>> tfattr.IntegratedGradients(vgg, baseline="uniform").attribute(images)  # value_range (0, 255)
    """
    constructor, preprocess, side = _application(name)
    side = input_size or side
    base = constructor(weights=weights, input_shape=(side, side, 3),
                       classifier_activation=None if logits else "softmax")
    inputs = keras.Input((side, side, 3), name="rgb_0_255")
    outputs = base(keras.layers.Lambda(preprocess, name="preprocess_input")(inputs))
    model = keras.Model(inputs, outputs, name=f"{name}_rgb")
    setattr(model, VALUE_RANGE_ATTRIBUTE, (0.0, 255.0))
    return model


def _prepare(size: int, label_map: Optional[Tuple[int, ...]]) -> Callable:
    table = None if label_map is None else tf.constant(label_map, tf.int64)

    def prepare(example):
        image = tf.image.resize(tf.cast(example["image"], tf.float32), (size, size), antialias=True)
        image = tf.clip_by_value(image, 0.0, 255.0)
        label = example["label"] if table is None else tf.gather(table, example["label"])
        return image, label

    return prepare


def load_imagenette(split: str = "validation", size: int = 224, variant: str = "320px-v2",
                    data_dir: Optional[str] = None, imagenet_labels: bool = True) -> tf.data.Dataset:
    """Imagenette as ``(image in [0, 255] RGB float32, label)`` pairs, resized to ``size``.

    ``imagenet_labels=True`` maps the 10 labels to their ImageNet-1k indices so an ImageNet
    classifier's outputs can be indexed directly (:data:`IMAGENETTE_TO_IMAGENET`).
    Use with :func:`keras_application` models, which take the same pixel range.
    """
    import tensorflow_datasets as tfds

    ds = tfds.load(f"imagenette/{variant}", split=split, data_dir=data_dir)
    return ds.map(_prepare(size, IMAGENETTE_TO_IMAGENET if imagenet_labels else None))


def load_imagenet(split: str = "validation", size: int = 224, data_dir: Optional[str] = None) -> tf.data.Dataset:
    """ImageNet-1k (``imagenet2012``; TFDS needs its manual download) as ``(image, label)`` pairs."""
    import tensorflow_datasets as tfds

    ds = tfds.load("imagenet2012", split=split, data_dir=data_dir)
    return ds.map(_prepare(size, None))
