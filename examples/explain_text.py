"""Explain text: which tokens a small sentiment-like classifier relies on (Layer Integrated Gradients).

    python examples/explain_text.py [--epochs 8]

A toy task with a known answer: sequences of 12 token ids (0 is padding); a sequence is "positive" (class 1)
when it holds token 7, "negative" otherwise. A small embedding model learns it in a few seconds, then
``LayerIntegratedGradients`` at the embedding explains class 1, starting from the padding token's
embedding (``input_baseline=0``) with one signed score per token (``reduce="sum"``). Token ids are integers,
so the path runs through the embedding's output, never through the ids. Prints each sequence with its
label and the token most relevant for class 1: token 7 in the positive ones.
"""

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfattr  # noqa: E402

KEY = 7


def data(n, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 30, size=(n, 12))
    ids[ids == KEY] = 8
    ids[:, 10:] = np.where(rng.random((n, 2)) < 0.5, 0, ids[:, 10:])  # some padding at the end
    positive = rng.random(n) < 0.5
    ids[positive, rng.integers(0, 10, size=positive.sum())] = KEY
    return ids.astype("int32"), positive.astype("int32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    ids_in = keras.Input((12,), dtype="int32")
    h = keras.layers.Embedding(30, 16, mask_zero=True, name="embedding")(ids_in)
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(16, activation="relu")(h))
    model = keras.Model(ids_in, keras.layers.Dense(2)(h))     # logits
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x, y = data(2000, seed=0)
    model.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0)
    x_test, y_test = data(200, seed=1)
    print(f"test accuracy {model.evaluate(x_test, y_test, verbose=0)[1]:.3f}")

    lig = tfattr.LayerIntegratedGradients(model, layer="embedding", input_baseline=0, reduce="sum",
                                          steps=32, rule="gauss_legendre", verbose=0)
    expl = lig.attribute(x_test[:6], target=1)                 # (6, 12): one score per token
    for ids, label, scores, error in zip(x_test[:6], y_test[:6], expl.attributions, expl.relative_delta):
        top = int(np.argmax(scores))
        print(f"label {label}, tokens {ids.tolist()}: most relevant for class 1 at position {top} "
              f"(token {ids[top]}), completeness error {100 * error:.2f}%")


if __name__ == "__main__":
    main()
