"""Watch what a small CNN learns to look at while it trains: SaliencyLogger + TensorBoard.

Trains a small VGG-style CNN on digits pasted onto real photographs (offline data, see
``tfattr.data``) for a few epochs. After every epoch :class:`tfattr.SaliencyLogger` explains
8 held-out probe images with Integrated Gradients (32 steps, their true labels) and writes

* the heatmap overlays as TensorBoard images (``integrated_gradients/image_<i>``),
* the metrics as scalars: ATV (smoothness), the relative completeness error, and the share
  of the attribution that falls on the digit (a custom metric from the ground-truth masks),
* the same overlays as PNG files under ``<logdir>/png/``,

next to the loss and accuracy curves of Keras' own TensorBoard callback (same ``log_dir``).

    python examples/train_with_saliency_logger.py [--epochs 8] [--logdir outputs/saliency_logs] [--tensorboard]
    tensorboard --logdir outputs/saliency_logs          # then open http://localhost:6006

Each call writes a new run ``<logdir>/<date-time>/`` (``train``, ``validation``, ``saliency``
and ``png/``); ``--tensorboard`` starts TensorBoard on ``<logdir>`` when training is done.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfattr  # noqa: E402
from tfattr.data import digits_on_photos  # noqa: E402
from tfattr.metrics import mask_energy  # noqa: E402


def build_model(size: int, classes: int = 10) -> keras.Model:
    """Two Conv2D+ReLU blocks with max pooling and a dense head; outputs logits (no softmax),
    which is what Integrated Gradients explains."""
    inputs = keras.Input((size, size, 3), name="image")
    h = keras.layers.Rescaling(1.0, offset=-0.5, name="center")(inputs)
    for block, filters in enumerate((16, 32), start=1):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv")(h)
        h = keras.layers.MaxPooling2D(name=f"block{block}_pool")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(64, activation="relu", name="fc")(h)
    outputs = keras.layers.Dense(classes, name="logits")(h)
    return keras.Model(inputs, outputs, name="small_cnn")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train", type=int, default=4000, help="training images")
    parser.add_argument("--size", type=int, default=32, help="image side")
    parser.add_argument("--logdir", default=os.path.join("outputs", "saliency_logs"))
    parser.add_argument("--tensorboard", action="store_true", help="run `tensorboard --logdir` when done")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    train = digits_on_photos(args.train, size=args.size, split="train", seed=0)
    test = digits_on_photos(500, size=args.size, split="test", seed=0)
    probe, probe_labels, probe_masks = test["image"][:8], test["label"][:8], test["mask"][:8]

    model = build_model(args.size)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    def on_digit(model, images, explanation):
        """Share of |attribution| on the digit's pixels (1 = all of it)."""
        return mask_energy(explanation.numpy(), probe_masks, absolute=True)

    run_dir = os.path.join(args.logdir, time.strftime("%Y%m%d-%H%M%S"))  # one TensorBoard run per call
    saliency = tfattr.SaliencyLogger(
        tfattr.IntegratedGradients, probe, targets=probe_labels,
        method_options={"steps": 32, "baseline": "zero", "rule": "riemann_trapezoid"},
        log_dir=run_dir, image_dir=os.path.join(run_dir, "png"),
        metrics=("atv", "completeness", on_digit), every_n_epochs=1, max_images=8,
    )
    board = keras.callbacks.TensorBoard(run_dir)
    start = time.perf_counter()
    model.fit(train["image"], train["label"], batch_size=32, epochs=args.epochs,
              validation_data=(test["image"], test["label"]), callbacks=[saliency, board], verbose=2)
    print(f"trained in {time.perf_counter() - start:.0f}s; saliency logged {len(saliency.history)} times, "
          f"{sum(r.seconds for r in saliency.history):.1f}s in total")
    for record in saliency.history:
        values = ", ".join(f"{k} {v:.3f}" for k, v in record.metrics.items())
        print(f"  epoch {record.epoch}: {values}")
    print(f"\nevents: {run_dir}/{{train,validation,saliency}}   PNGs: {run_dir}/png/")
    print(f"open them with:  tensorboard --logdir {args.logdir}")
    if args.tensorboard:
        try:  # the tensorboard package's own entry point, also when the venv's bin/ is not on PATH
            subprocess.run([sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir], check=False)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
