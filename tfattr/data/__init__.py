"""Offline data (digits on scikit-image photographs, with masks; also as a TFDS builder) and
loaders for ImageNet-family datasets and keras.applications models where users have them."""

from tfattr.data.imagenet import (
    APPLICATIONS,
    IMAGENETTE_TO_IMAGENET,
    keras_application,
    load_imagenet,
    load_imagenette,
)
from tfattr.data.synthetic import PHOTOS, digits_on_photos
from tfattr.data.tfds_builder import DigitsOnPhotos, DigitsOnPhotosConfig

__all__ = [
    "APPLICATIONS",
    "IMAGENETTE_TO_IMAGENET",
    "PHOTOS",
    "DigitsOnPhotos",
    "DigitsOnPhotosConfig",
    "digits_on_photos",
    "keras_application",
    "load_imagenet",
    "load_imagenette",
]
