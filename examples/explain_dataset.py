"""Explain a dataset: attribute every image of a tf.data pipeline batch by batch and save the maps.

    python examples/explain_dataset.py [--images 64] [--batch 16] [--out outputs/dataset]

The dataset is digits_on_photos (offline) as a ``tf.data.Dataset`` of ``(image, label)``; any dataset of
``(N, H, W, C)`` float batches works the same. Each batch is explained with IG at its true labels
(``batch_size="auto"`` measures the fastest chunk size on the first batches and keeps it), the maps are
collected with their completeness errors, and everything is written to one ``.npz`` file atomically
(temporary file, then rename). Also reports how much of each map falls on the digit (mask energy).
"""

import argparse
import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfattr  # noqa: E402
from tfattr.data import digits_on_photos  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", default="outputs/dataset")
    args = parser.parse_args(argv)

    model = tfattr.surgery.logits_model(keras.models.load_model(os.path.join(HERE, "assets",
                                                                             "digits_on_photos_cnn.keras")))
    data = digits_on_photos(args.images, size=int(model.input_shape[1]), split="test", seed=4)
    dataset = tf.data.Dataset.from_tensor_slices((data["image"], data["label"])).batch(args.batch)
    ig = tfattr.IntegratedGradients(model, steps=32, rule="riemann_trapezoid", verbose=0)

    maps, errors = [], []
    for images, labels in dataset:
        expl = ig.attribute(images.numpy(), target=labels.numpy())
        maps.append(expl.numpy())
        errors.append(expl.relative_delta)
    maps, errors = np.concatenate(maps), np.concatenate(errors)
    energy = tfattr.metrics.mask_energy(maps, data["mask"])
    print(f"{len(maps)} images: median completeness error {100 * np.median(errors):.2f}%, "
          f"median share on the digit {np.median(energy):.3f}")

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "attributions.npz")
    fd, tmp = tempfile.mkstemp(dir=args.out, suffix=".npz")
    with os.fdopen(fd, "wb") as handle:
        np.savez_compressed(handle, attributions=maps, labels=data["label"], completeness_error=errors)
    os.replace(tmp, path)
    print("wrote", path)


if __name__ == "__main__":
    main()
