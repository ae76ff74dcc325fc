"""Train a baseline: a uniform-output baseline (Lerma & Lucas 2022, eq. 8) for the demo's classifier.

    python examples/train_baseline.py [--steps 150] [--out outputs/baseline]

Trains an image the classifier gives (nearly) uniform probabilities while it stays close to black,
saves it atomically (``--out/digits_uniform``), loads it back checked against the model, and compares
IG from it with IG from black on a few images. The shipped, fully trained one is
``saved_baselines/digits_on_photos_uniform`` (``tfattr baseline train ...``). Takes seconds.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfattr  # noqa: E402
from tfattr.baselines import load_baseline, save_baseline, train_uniform_baseline  # noqa: E402
from tfattr.data import digits_on_photos  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default="outputs/baseline")
    args = parser.parse_args(argv)

    model = keras.models.load_model(os.path.join(HERE, "assets", "digits_on_photos_cnn.keras"))  # softmax head
    trained = train_uniform_baseline(model, start="black", lam=0.9, output_loss="crossentropy",
                                     steps=args.steps, value_range=(0, 1), seed=0)
    print(trained.report())
    path = save_baseline(trained, os.path.join(args.out, "digits_uniform"), overwrite=True)
    baseline = load_baseline(path, model=model)                    # checks the model's fingerprint

    logits = tfattr.surgery.logits_model(model)
    images = digits_on_photos(4, size=int(model.input_shape[1]), split="test", seed=3)["image"]
    for name, start in [("black", "black"), ("trained uniform", baseline)]:
        expl = tfattr.IntegratedGradients(logits, baseline=start, steps=32, rule="riemann_trapezoid",
                                          verbose=0).attribute(images)
        print(f"IG from {name:>15}: f(z) = {np.round(expl.baseline_scores, 2)}, "
              f"completeness error {np.round(100 * expl.relative_delta, 2)} %")


if __name__ == "__main__":
    main()
