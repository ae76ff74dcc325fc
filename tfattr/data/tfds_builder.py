"""``digits_on_photos`` as a TensorFlow Datasets builder: ``tfds.load`` works with no download.

    import tfattr.data  # registers the builder
    ds = tfds.load("digits_on_photos", split="test", data_dir="~/tensorflow_datasets")

Every example is made on this machine by :func:`tfattr.data.synthetic.digits_on_photos`
(scikit-learn's bundled digits pasted onto crops of scikit-image's bundled photographs),
so preparing the dataset needs no network. Features: ``image`` (uint8 RGB; divide by 255
for the [0, 1] images the demo classifier takes), ``label`` (the digit), ``mask`` (uint8
0/1, the digit's pixels) and ``background`` (which photograph).

Configs: ``64px`` (default: 8,000 train / 1,000 test images of 64×64) and ``tiny``
(32×32, 64 / 32 images, for tests). Build your own with
``DigitsOnPhotos(config=DigitsOnPhotosConfig(name=..., size=..., train_size=..., test_size=...))``.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from tfattr.data.synthetic import PHOTOS, digits_on_photos

__all__ = ["DigitsOnPhotos", "DigitsOnPhotosConfig"]


class DigitsOnPhotosConfig(tfds.core.BuilderConfig):
    """Image size, split sizes, number of classes and seed of a ``digits_on_photos`` variant."""

    def __init__(self, *, size: int = 64, train_size: int = 8000, test_size: int = 1000, classes: int = 10,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.train_size = train_size
        self.test_size = test_size
        self.classes = classes
        self.seed = seed


class DigitsOnPhotos(tfds.core.GeneratorBasedBuilder):
    """Digits on real photographs with ground-truth masks, generated offline and deterministically."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        DigitsOnPhotosConfig(name="64px", description="64×64, 8,000 train / 1,000 test"),
        DigitsOnPhotosConfig(name="tiny", size=32, train_size=64, test_size=32, description="32×32, for tests"),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(size, size, 3)),
                "label": tfds.features.ClassLabel(num_classes=self.builder_config.classes),
                "mask": tfds.features.Tensor(shape=(size, size), dtype=np.uint8),
                "background": tfds.features.ClassLabel(names=list(PHOTOS)),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
        )

    def _split_generators(self, dl_manager):
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.train_size),
            "test": self._generate_examples("test", config.test_size),
        }

    def _generate_examples(self, split: str, count: int):
        config = self.builder_config
        data = digits_on_photos(count, size=config.size, classes=config.classes, split=split, seed=config.seed)
        images = np.round(data["image"] * 255.0).astype(np.uint8)
        for i in range(count):
            yield i, {
                "image": images[i],
                "label": int(data["label"][i]),
                "mask": data["mask"][i].astype(np.uint8),
                "background": int(data["background"][i]),
            }
