"""LIME against the lime package's LimeImageExplainer on the same image: its segmentation, its
samples (the same seed draws the same samples), its kernel and its ridge fit."""

import keras
import numpy as np
import pytest

import tfattr
from tfattr.errors import InvalidInputError
from tfattr.methods.lime import lime_samples, lime_weights, weighted_ridge

SHAPE = (128, 128, 3)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(4, 5, strides=4, activation="tanh", bias_initializer="random_normal")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, bias_initializer="random_normal")(h))


@pytest.fixture(scope="module")
def image():
    """scikit-image's astronaut at 128 × 128 (lime's quickshift finds 16 superpixels)."""
    from skimage.data import astronaut

    return (astronaut()[::4, ::4] / 255.0).astype(np.float32)


def _lime_reference(model, image, target, seed, samples, **kwargs):
    from lime import lime_image  # the test extra's reference implementation

    explainer = lime_image.LimeImageExplainer(kernel_width=0.25, random_state=seed, feature_selection="none")
    return explainer.explain_instance(image, lambda batch: np.asarray(model(batch.astype(np.float32))),
                                      labels=(target,), top_labels=None, num_samples=samples, batch_size=64,
                                      random_seed=seed, **kwargs)


def test_lime_equals_the_lime_packages_image_explainer_with_its_quickshift_and_samples(model, image):
    theirs = _lime_reference(model, image, 1, seed=3, samples=120)
    ours = tfattr.Lime(model, n_samples=120, seed=3, batch_size=32).attribute(image, target=1)
    np.testing.assert_array_equal(ours.info["segments"][0], theirs.segments)
    groups = int(ours.info["groups"][0])
    assert groups >= 10
    coefficients = np.zeros(groups)
    for feature, weight in theirs.local_exp[1]:
        coefficients[feature] = weight
    np.testing.assert_allclose(ours.info["group_attributions"][0], coefficients, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.info["intercept"][0], theirs.intercept[1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.info["score"][0], theirs.score, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.info["local_pred"][0], np.ravel(theirs.local_pred)[0], rtol=0, atol=1e-5)
    # each pixel shows its superpixel's coefficient
    np.testing.assert_allclose(np.asarray(ours.attributions), np.broadcast_to(
        coefficients[theirs.segments][..., None], SHAPE), atol=1e-5)
    assert ours.info["rows"] == 120


def test_lime_with_a_given_mask_and_hide_color_equals_lime(model, image):
    mask = (np.arange(SHAPE[0])[:, None] // 32 * 4 + np.arange(SHAPE[1])[None, :] // 32).astype(np.int64)  # 16 patches
    theirs = _lime_reference(model, image, 2, seed=5, samples=80, hide_color=0.5, segmentation_fn=lambda _: mask)
    batch = np.stack([image, image[::-1]])
    ours = tfattr.Lime(model, segmentation=mask, hide_color=0.5, n_samples=80, seed=5).attribute(batch, target=2)
    coefficients = np.zeros(16)
    for feature, weight in theirs.local_exp[2]:
        coefficients[feature] = weight
    np.testing.assert_allclose(ours.info["group_attributions"][0], coefficients, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.info["intercept"][0], theirs.intercept[2], rtol=0, atol=1e-5)
    # explicit target: the image is scored in the rows too
    assert ours.info["rows"] == 2 * 80


def test_lime_samples_are_lime_s_draws_and_weights_its_cosine_kernel():
    samples = lime_samples(6, 50, seed=7)
    expected = np.random.RandomState(7).randint(0, 2, 300).reshape(50, 6)
    expected[0] = 1
    np.testing.assert_array_equal(samples, expected.astype(bool))
    from sklearn.metrics import pairwise_distances

    distances = pairwise_distances(samples.astype(float), np.ones((1, 6)), metric="cosine").ravel()
    np.testing.assert_allclose(lime_weights(samples, 0.25), np.sqrt(np.exp(-distances ** 2 / 0.25 ** 2)), atol=1e-12)


def test_weighted_ridge_is_sklearns_ridge_with_sample_weights():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x, y, w = rng.integers(0, 2, (40, 5)).astype(float), rng.normal(size=40), rng.uniform(0.1, 1, 40)
    beta, intercept, score = weighted_ridge(x, y, w)
    reference = Ridge(alpha=1.0).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(beta, reference.coef_, atol=1e-10)
    np.testing.assert_allclose(intercept, reference.intercept_, atol=1e-10)
    np.testing.assert_allclose(score, reference.score(x, y, sample_weight=w), atol=1e-10)


def test_lime_is_seeded_and_chunk_size_invariant(model, image):
    mask = (np.arange(SHAPE[0])[:, None] // 43 * 3 + np.arange(SHAPE[1])[None, :] // 43).astype(np.int64)
    runs = [np.asarray(tfattr.Lime(model, segmentation=mask, n_samples=40, batch_size=b).attribute(image).attributions)
            for b in (3, 64)]
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-6)
    other = tfattr.Lime(model, segmentation=mask, n_samples=40, seed=1).attribute(image)
    assert not np.allclose(np.asarray(other.attributions), runs[0])


def test_quickshift_needs_rgb_images():
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(InvalidInputError, match="quickshift.*Received"):
        tfattr.Lime(model).attribute(np.zeros((1, 8, 8, 2), np.float32))


def test_lime_on_several_inputs_with_a_mask_per_input_and_group_means_as_fill():
    """Tabular + sequence inputs: the samples' scores from direct model calls (each hidden group
    at its mean value) give the same ridge fit."""
    keras.utils.set_random_seed(4)
    table, series = keras.Input((3,), name="table"), keras.Input((4, 2), name="series")
    h = keras.layers.Concatenate()([table, keras.layers.Flatten()(series)])
    model = keras.Model([table, series], keras.layers.Dense(2)(keras.layers.Dense(5, activation="tanh")(h)))
    rng = np.random.default_rng(12)
    x = [rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=(2, 4, 2)).astype(np.float32)]
    masks = [np.array([0, 1, 1]), np.array([2, 2, 3, 3])[:, None]]  # 4 groups
    found = tfattr.Lime(model, segmentation=masks, n_samples=60, seed=2, kernel_width=0.5).attribute(x, target=0)
    samples = lime_samples(4, 60, seed=2)
    for e in range(2):
        flat = np.concatenate([x[0][e], x[1][e].ravel()]).astype(np.float64)
        ids = np.concatenate([masks[0], np.broadcast_to(masks[1], (4, 2)).ravel()])
        means = np.array([flat[ids == g].mean() for g in range(4)]).astype(np.float32)
        points = np.where(samples[:, ids], flat.astype(np.float32), means[ids])
        scores = np.asarray(model([points[:, :3], points[:, 3:].reshape(-1, 4, 2)]), np.float64)[:, 0]
        beta, intercept, score = weighted_ridge(samples, scores, lime_weights(samples, 0.5))
        np.testing.assert_allclose(found.info["group_attributions"][e], beta, atol=1e-5)
        np.testing.assert_allclose(found.info["intercept"][e], intercept, atol=1e-5)
        np.testing.assert_allclose(found.info["score"][e], score, atol=1e-5)
        np.testing.assert_allclose(found.attributions[1][e], beta[np.broadcast_to(masks[1], (4, 2))], atol=1e-5)


def test_a_wrong_segmentation_mask_is_named_as_the_option_given():
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(0).uniform(size=(2, 4, 4, 2)).astype(np.float32)
    with pytest.raises(InvalidInputError, match=r"^`segmentation` must broadcast .*segmentation\.shape=\(5, 5\)"):
        tfattr.Lime(model, segmentation=np.zeros((5, 5), np.int64), n_samples=20).attribute(x, target=1)
