"""Offline data (digits on scikit-image photographs, with masks; also as a TFDS builder), an
ImageNet-pretrained EfficientNet-Lite0 converted offline from a packaged checkpoint, and loaders
for ImageNet-family datasets and keras.applications models where users have them."""

from tfattr.data.efficientnet import (
    EfficientNetLite0,
    decode_predictions,
    efficientnet_lite0_cache_path,
    imagenet_class_names,
    imagenet_photos,
)
from tfattr.data.imagenet import (
    APPLICATIONS,
    IMAGENETTE_TO_IMAGENET,
    keras_application,
    load_imagenet,
    load_imagenette,
)
from tfattr.data.synthetic import PHOTOS, digits_on_photos
from tfattr.data.tfds_builder import DigitsOnPhotos, DigitsOnPhotosConfig
from tfattr.data.torch_legacy import read_torch_legacy

__all__ = [
    "APPLICATIONS",
    "IMAGENETTE_TO_IMAGENET",
    "PHOTOS",
    "DigitsOnPhotos",
    "DigitsOnPhotosConfig",
    "EfficientNetLite0",
    "decode_predictions",
    "digits_on_photos",
    "efficientnet_lite0_cache_path",
    "imagenet_class_names",
    "imagenet_photos",
    "keras_application",
    "load_imagenet",
    "load_imagenette",
    "read_torch_legacy",
]
