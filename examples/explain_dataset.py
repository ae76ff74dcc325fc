"""Explain a dataset: stream every image of a tf.data pipeline through IG into a resumable store on disk.

    python examples/explain_dataset.py [--images 64] [--batch 16] [--out outputs/dataset]

The dataset is digits_on_photos (offline) as a ``tf.data.Dataset`` of ``(image, label)``; a TFDS name
and split, a folder of image files or arrays work the same (see docs/guides/datasets.md).
``tfattr.explain_dataset`` explains it with IG at the true labels, ``--batch`` images per chunk of the
store: decoding, attribution and writing overlap, memory stays bounded, and a run that is stopped
(Ctrl-C, kill -9) and started again with the same arguments continues after the last finished chunk
and writes the same store. The store is then read back with ``tfattr.open_explanations`` and the
script reports the completeness errors and how much of each map falls on the digit (mask energy).
"""

import argparse
import os

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
    dataset = tf.data.Dataset.from_tensor_slices((data["image"], data["label"]))
    ig = tfattr.IntegratedGradients(model, steps=32, rule="riemann_trapezoid", batch_size=128, verbose=0)

    store = tfattr.explain_dataset(ig, dataset, os.path.join(args.out, "store"), target="label",
                                   batch_size=args.batch, verbose=1)
    maps = store.attributions[:]                       # the whole store: small here; slices read only their chunks
    rows = store.rows()
    # IG's completeness error |Σ attributions − (f(x) − f(z))| / |f(x) − f(z)|, as Explanation.relative_delta
    errors = np.abs(rows["delta"]) / np.abs(rows["score"] - rows["baseline_score"])
    energy = tfattr.metrics.mask_energy(maps, data["mask"])
    print(f"{len(store)} images in {len(store.finished_chunks)} chunks: median completeness error "
          f"{100 * np.median(errors):.2f}%, median share on the digit {np.median(energy):.3f}")
    print("wrote", os.path.join(args.out, "store"))


if __name__ == "__main__":
    main()
