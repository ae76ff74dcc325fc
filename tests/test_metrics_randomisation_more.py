"""HOG similarity (Adebayo et al. 2018), bottom-up MPRT, sMPRT and eMPRT (Hedström et al. 2023):
hand computations and equality with Quantus 0.6 when the same randomised models (and noise) are
injected."""

import itertools

import keras
import numpy as np
import pytest
import quantus
from conftest import small_cnn
from quantus.helpers.model.tf_model import TensorFlowModel
from scipy.stats import entropy, pearsonr
from skimage.feature import hog

import tfattr
from tfattr import metrics
from tfattr.errors import InvalidInputError


@pytest.fixture(scope="module")
def cnn():
    return small_cnn("relu", size=16, seed=3)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).uniform(0, 1, size=(2, 16, 16, 3)).astype(np.float32)


def _one_channel_cnn(channel_first):
    """A one-channel tanh CNN; with ``channel_first`` it takes (N, 1, H, W) (a Permute first): Quantus 0.6
    hands TensorFlow models its channel-first copy of the batch in eMPRT's ``model.predict``; eMPRT's
    entropy does not depend on the layout, so tfattr explains the same array as it is."""
    keras.utils.set_random_seed(6)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=6)
    inputs = keras.Input((1, 8, 8) if channel_first else (8, 8, 1))
    h = keras.layers.Permute((2, 3, 1))(inputs) if channel_first else inputs
    h = keras.layers.Conv2D(4, 3, activation="tanh", bias_initializer=bias, name="conv")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(6, activation="tanh", bias_initializer=bias, name="hidden")(h)
    return keras.Model(inputs, keras.layers.Dense(3, bias_initializer=bias, name="top")(h))


@pytest.fixture(scope="module")
def cf_model():
    return _one_channel_cnn(True)


@pytest.fixture(scope="module")
def cl_model():
    return _one_channel_cnn(False)


@pytest.fixture(scope="module")
def cf_x():
    return np.random.default_rng(2).uniform(0, 1, size=(2, 1, 8, 8)).astype(np.float32)


def _maps(method, images, targets):
    return np.abs(np.asarray(method.attribute(images, target=targets).attributions, np.float64)).sum(-1)


def test_hog_similarity_equals_pearson_of_skimage_hog(cnn, x):
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(16, 24)), rng.uniform(size=(16, 24))
    options = dict(orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2))
    expected = pearsonr(hog(a, **options), hog(b, **options)).statistic
    assert metrics.hog_similarity(a, b) == pytest.approx(expected, abs=1e-12)
    assert metrics.hog_similarity(a, a) == pytest.approx(1.0)
    result = metrics.model_parameter_randomisation(cnn, x, tfattr.Gradient(cnn), similarity="hog",
                                                   layers=metrics.randomisable_layers(cnn)[:1])
    trained = _maps(tfattr.Gradient(cnn), x, result.targets)
    copy = metrics.randomise_layers(cnn, metrics.randomisable_layers(cnn)[:1])
    again = _maps(tfattr.Gradient(copy), x, result.targets)
    for n in range(2):
        assert result.similarities[1, n] == pytest.approx(
            pearsonr(hog(trained[n], **options), hog(again[n], **options)).statistic, abs=1e-6)
    with pytest.raises(InvalidInputError, match=r"at least 16×16.*Received: map shape=\(8, 8\)"):
        metrics.hog_similarity(np.ones((8, 8)), np.ones((8, 8)))


def test_bottom_up_is_cascading_from_the_input_layer(cnn, x):
    method = tfattr.Gradient(cnn)
    up = metrics.model_parameter_randomisation(cnn, x, method, order="bottom_up", seed=2)
    names = metrics.randomisable_layers(cnn)[::-1]
    assert up.layers == [None] + names
    same = metrics.model_parameter_randomisation(cnn, x, method, order="cascading", layers=names, seed=2)
    np.testing.assert_allclose(up.similarities, same.similarities, atol=1e-12)


# -- Quantus with the same randomised models (and noise) injected --------------------------------------
def _inject_models(monkeypatch, model, names, seed):
    """Quantus's generator yields our cascading randomised copies (its own TF generator clones the model
    without its trained weights and permutes them: another randomisation)."""
    def generator(self, order="top_down", seed_=42, **kwargs):
        for k in range(1, len(names) + 1):
            yield names[k - 1], metrics.randomise_layers(model, names[:k], seed=seed)

    monkeypatch.setattr(TensorFlowModel, "get_random_layer_generator", generator)


def _explain_func(methods={}):  # noqa: B006 - one Gradient per model object: one trace each
    def explain(model, inputs, targets, **kwargs):
        if id(model) not in methods:
            methods[id(model)] = (model, tfattr.Gradient(model))
        inputs = np.asarray(inputs, np.float32)
        layout = inputs.shape[1:] != tuple(model.input_shape[1:])  # Quantus's channel-first copy, one channel
        given = np.moveaxis(inputs, 1, -1) if layout else inputs
        phi = np.asarray(methods[id(model)][1].attribute(given, target=np.asarray(targets)).attributions)
        return np.moveaxis(phi, -1, 1) if layout else phi
    return explain


def test_smooth_mprt_equals_quantus_on_the_same_models_and_noise(cl_model, cf_x, monkeypatch):
    samples, seed = 4, 3
    images = np.moveaxis(cf_x, 1, -1)
    ours = metrics.smooth_model_parameter_randomisation(cl_model, images, tfattr.Gradient(cl_model),
                                                        n_samples=samples, noise_magnitude=0.2, seed=seed)
    names = ours.layers[1:]
    assert names == ["conv", "hidden", "top"]  # bottom-up
    noise = metrics.smooth_noise(seed, samples, images.shape[1:])
    assert np.all(noise[-1] == 0) and noise[0].std() == pytest.approx(1.0, rel=0.4)
    _inject_models(monkeypatch, cl_model, names, seed)
    calls = itertools.cycle(range(samples - 1))  # each smoothed map draws samples − 1 noises, in order
    monkeypatch.setattr(np.random, "randn", lambda *shape: noise[next(calls)].reshape(shape))
    # Quantus 0.6's SmoothMPRT explains its noisy copies with quantus.explain, not the explain_func it is
    # given (which would need captum or tf-explain here): route that call to the same explanation
    monkeypatch.setattr(quantus, "explain", lambda model, inputs, targets, **kwargs: _explain_func()(
        model, inputs, targets))
    reference = quantus.SmoothMPRT(nr_samples=samples, noise_magnitude=0.2, layer_order="bottom_up",
                                   disable_warnings=True)
    # batch_size=1: Quantus normalises a whole batch by one second moment, tfattr each image
    scores = reference(model=cl_model, x_batch=images, y_batch=ours.targets, a_batch=None,
                       explain_func=_explain_func(), channel_first=False, batch_size=1)
    expected = np.array([scores[name] for name in names])
    # row 0: the noisy copies explain the clean image's top-1 class (a noisy copy's own top-1 would
    # mix classes into the mean, and row 0 would not be 1)
    np.testing.assert_allclose(ours.similarities[0], 1.0, atol=1e-9)
    assert not np.allclose(ours.similarities[1:], 1.0, atol=0.05)  # the randomisation changes the maps
    np.testing.assert_allclose(ours.similarities[1:], expected, atol=1e-6)


def test_efficient_mprt_equals_quantus_on_the_same_randomised_model(cf_model, cf_x, monkeypatch):
    method = tfattr.Gradient(cf_model)
    ours = metrics.efficient_model_parameter_randomisation(cf_model, cf_x, method, n_bins=20, seed=4)
    names = metrics.randomisable_layers(cf_model)
    _inject_models(monkeypatch, cf_model, names, 4)  # the last yield randomises every layer
    reference = quantus.EfficientMPRT(complexity_func_kwargs={"n_bins": 20}, disable_warnings=True)
    expected = reference(model=cf_model, x_batch=cf_x, y_batch=ours.targets, a_batch=None,
                         explain_func=_explain_func(), channel_first=True, batch_size=8)
    np.testing.assert_allclose(ours.score, expected, rtol=1e-6)
    # by hand: the entropy of the 20-bin histogram of each attribution, before and after
    phi = np.asarray(method.attribute(cf_x, target=ours.targets).attributions, np.float64)
    full = metrics.randomise_layers(cf_model, names, seed=4)
    again = np.asarray(tfattr.Gradient(full).attribute(cf_x, target=ours.targets).attributions, np.float64)
    for n in range(2):
        before = entropy(np.histogram(phi[n], bins=20)[0])
        after = entropy(np.histogram(again[n], bins=20)[0])
        assert ours.complexity[n] == pytest.approx(before, rel=1e-6)
        assert ours.score[n] == pytest.approx((after - before) / before, rel=1e-5)


def test_smooth_mprt_with_one_sample_is_mprt_on_second_moment_normalised_maps(cnn, x):
    """One noise-free sample: the maps are the method's own, rescaled per image (which Spearman ignores)."""
    method = tfattr.Gradient(cnn)
    smooth = metrics.smooth_model_parameter_randomisation(cnn, x, method, n_samples=1, order="cascading", seed=1)
    plain = metrics.model_parameter_randomisation(cnn, x, method, order="cascading", seed=1)
    np.testing.assert_allclose(smooth.similarities, plain.similarities, atol=1e-9)


def test_errors_name_the_argument(cnn, x):
    method = tfattr.Gradient(cnn)
    with pytest.raises(InvalidInputError, match=r"`order`.*Received: order='top_down'"):
        metrics.smooth_model_parameter_randomisation(cnn, x, method, order="top_down")
    with pytest.raises(InvalidInputError, match=r"`noise_magnitude`.*Received: noise_magnitude=-1"):
        metrics.smooth_model_parameter_randomisation(cnn, x, method, noise_magnitude=-1)
    with pytest.raises(InvalidInputError, match=r"`n_bins`.*Received: n_bins=0"):
        metrics.efficient_model_parameter_randomisation(cnn, x, method, n_bins=0)
    with pytest.raises(InvalidInputError, match=r"`similarity`.*Received: similarity='pearson'"):
        metrics.model_parameter_randomisation(cnn, x, method, similarity="pearson")


def test_guided_backprop_survives_randomisation_that_destroys_the_gradient():
    """Adebayo et al. 2018, Fig. 2, on the shipped demo CNN (fixed trained weights, no training run):
    cascading from the top, the gradient's |map| decorrelates (Spearman 0.13 at the last layer, 8
    images, docs/make_mprt_figure.py) while guided backprop's stays similar (0.42; 0.97 with the logits
    layer randomised, where the gradient is at 0.78). Bounds with margins of ≥ 0.1 on 4 images."""
    from tfattr.data import digits_on_photos
    from tfattr.demo import load_classifier, logits_of

    model = logits_of(load_classifier())
    x = digits_on_photos(4, size=model.input_shape[1], split="test", seed=0)["image"]
    gradient = metrics.model_parameter_randomisation(model, x, tfattr.Gradient(model), seed=0).mean
    guided = metrics.model_parameter_randomisation(model, x, tfattr.GuidedBackprop(model), seed=0).mean
    assert gradient[0] == pytest.approx(1.0) and guided[0] == pytest.approx(1.0)
    assert guided[1] > 0.9 and gradient[1] < guided[1] - 0.1  # the logits layer alone
    assert gradient[-1] < 0.3 and guided[-1] > gradient[-1] + 0.15  # every layer randomised
    assert guided[1:].mean() > gradient[1:].mean() + 0.15  # over the whole cascade
