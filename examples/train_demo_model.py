"""Train the demo classifier: a small VGG-style CNN on digits pasted onto real photographs.

Reproducible (seeded, deterministic ops): running it again rebuilds the shipped file
``tfattr/assets/digits_on_photos_cnn.keras`` (package data; ``examples/assets/`` links to it) bit for
bit on the same software stack.

    python examples/train_demo_model.py [--epochs 20] [--train 8000] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfattr.core.assets import ASSETS_DIR, DEMO_MODEL  # noqa: E402
from tfattr.core.files import atomic_path  # noqa: E402
from tfattr.data import digits_on_photos  # noqa: E402

DEFAULT_OUT = os.path.join(ASSETS_DIR, DEMO_MODEL)  # the package data file the demo loads


def build_model(size: int = 64, classes: int = 10) -> keras.Model:
    """Conv2D+ReLU blocks with max pooling, a dense head, softmax output (VGG-style)."""
    inputs = keras.Input((size, size, 3), name="image")
    h = keras.layers.Rescaling(1.0, offset=-0.5, name="center")(inputs)  # takes images in [0, 1]
    for block, filters in enumerate((32, 64, 96), start=1):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv1")(h)
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv2")(h)
        h = keras.layers.MaxPooling2D(name=f"block{block}_pool")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(128, activation="relu", name="fc1")(h)
    h = keras.layers.Dropout(0.4, name="dropout")(h)
    outputs = keras.layers.Dense(classes, activation="softmax", name="predictions")(h)
    return keras.Model(inputs, outputs, name="digits_on_photos_cnn")


def train(epochs: int = 20, n_train: int = 8000, n_test: int = 1000, seed: int = 0, out: str = DEFAULT_OUT):
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    test_set = digits_on_photos(n_test, split="test", seed=seed)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    for epoch in range(epochs):  # fresh composites every epoch: the backgrounds and placements never repeat
        train_set = digits_on_photos(n_train, split="train", seed=seed * 1000 + epoch)
        model.fit(train_set["image"], train_set["label"], batch_size=32, epochs=epoch + 1, initial_epoch=epoch,
                  validation_data=(test_set["image"], test_set["label"]), verbose=2)
    _, accuracy = model.evaluate(test_set["image"], test_set["label"], verbose=0)
    print(f"test accuracy {accuracy:.4f} on {n_test} held-out images ({time.perf_counter() - start:.0f}s)")
    with atomic_path(out, suffix=".keras") as tmp:  # atomic, mode 0o666 & ~umask
        # ship the weights and architecture only (no optimizer state): a third of the size
        shipped = build_model()
        shipped.set_weights(model.get_weights())
        shipped.save(tmp)
    print(f"saved {out}")
    return model, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train", type=int, default=8000, help="training images drawn afresh each epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    train(args.epochs, args.train, seed=args.seed, out=args.out)


if __name__ == "__main__":
    main()
