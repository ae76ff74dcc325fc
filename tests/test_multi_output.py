"""Models with several outputs: ``output=`` (index or name) picks the explained one for every
method, equals the method on the single-output sub-model, and a missing ``output=`` is refused
before the model runs."""

import keras
import numpy as np
import pytest
from conftest import CallCounter

import tfattr
from tfattr.errors import InvalidInputError, InvalidTypeError

L = keras.layers
RNG = np.random.default_rng(3)


def two_headed(kind="list", counter=False, activation="relu", seed=4):
    """A conv trunk with non-zero biases and two heads: "animal" (3 classes) and "colour" (4).

    Returns ``(model, {name: single-output model sharing the layers})``.
    """
    keras.utils.set_random_seed(seed)
    bias = keras.initializers.RandomUniform(-0.4, 0.4, seed=seed)
    inp = keras.Input((8, 8, 3))
    h = CallCounter(name="counter")(inp) if counter else inp
    h = L.Conv2D(6, 3, padding="same", activation=activation, bias_initializer=bias, name="conv")(h)
    h = L.MaxPooling2D(name="pool")(h) if activation == "relu" else L.AveragePooling2D(2, name="pool")(h)
    h = L.Flatten(name="flat")(h)
    h = L.Dense(8, activation=activation, bias_initializer=bias, name="trunk")(h)
    animal = L.Dense(3, bias_initializer=bias, name="animal")(h)
    colour = L.Dense(4, bias_initializer=bias, name="colour")(h)
    heads = {"animal": animal, "colour": colour}
    outputs = heads if kind == "dict" else [animal, colour]
    singles = {name: keras.Model(inp, tensor) for name, tensor in heads.items()}
    return keras.Model(inp, outputs), singles


@pytest.fixture(scope="module")
def images():
    return RNG.uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)


def test_ig_on_a_list_output_model_with_output_index_is_complete_and_equals_the_sub_model(images):
    model, singles = two_headed("list", activation="tanh")
    ig = tfattr.IntegratedGradients(model, steps=64, rule="gauss_legendre", baseline="zero")
    result = ig.attribute(images, target=2, output=1)
    colour = singles["colour"](images).numpy().astype(np.float64)
    zero = singles["colour"](np.zeros_like(images)).numpy().astype(np.float64)
    np.testing.assert_allclose(result.scores, colour[:, 2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.baseline_scores, zero[:, 2], rtol=1e-5, atol=1e-6)
    total = np.asarray(result.attributions, np.float64).reshape(3, -1).sum(axis=1)
    assert np.all(np.abs(colour[:, 2] - zero[:, 2]) > 1e-2)  # a real difference to explain
    np.testing.assert_allclose(total, colour[:, 2] - zero[:, 2], atol=1e-4)  # completeness
    assert np.abs(result.delta).max() < 1e-4
    alone = tfattr.IntegratedGradients(singles["colour"], steps=64, rule="gauss_legendre",
                                       baseline="zero").attribute(images, target=2)
    np.testing.assert_allclose(result.attributions, alone.attributions, rtol=1e-5, atol=1e-7)


def test_ig_on_a_dict_output_model_with_output_name_is_complete_and_equals_the_sub_model(images):
    model, singles = two_headed("dict", activation="tanh")
    ig = tfattr.IntegratedGradients(model, steps=64, rule="gauss_legendre", baseline="zero", output="animal")
    result = ig.attribute(images, target=[0, 1, 2])
    animal = singles["animal"](images).numpy().astype(np.float64)
    zero = singles["animal"](np.zeros_like(images)).numpy().astype(np.float64)
    rows = np.arange(3), [0, 1, 2]
    assert np.all(np.abs(animal[rows] - zero[rows]) > 1e-2)
    total = np.asarray(result.attributions, np.float64).reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(total, animal[rows] - zero[rows], atol=1e-4)
    alone = tfattr.IntegratedGradients(singles["animal"], steps=64, rule="gauss_legendre",
                                       baseline="zero").attribute(images, target=[0, 1, 2])
    np.testing.assert_allclose(result.attributions, alone.attributions, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.scores, alone.scores, rtol=1e-6)


METHODS = {
    "gradient": lambda m: tfattr.Gradient(m),
    "input_x_gradient": lambda m: tfattr.InputXGradient(m),
    "ig": lambda m: tfattr.IntegratedGradients(m, steps=8),
    "guided_ig": lambda m: tfattr.GuidedIntegratedGradients(m, steps=8),
    "guided_backprop": lambda m: tfattr.GuidedBackprop(m),
    "noise_tunnel": lambda m: tfattr.NoiseTunnel(tfattr.Gradient(m), nt_samples=4, seed=1),
    "smooth_taylor": lambda m: tfattr.SmoothTaylor(m, roots=6, sigma=0.2, seed=1),
    "gradcam": lambda m: tfattr.GradCAM(m, layer="conv"),
    "rsi_gradcam": lambda m: tfattr.RSIGradCAM(m, layer="conv", steps=6),
    "gradient_shap": lambda m: tfattr.GradientShap(m, baselines=np.random.default_rng(2).uniform(0, 1, (4, 8, 8, 3)),
                                                   n_samples=4, stdevs=0.1),
    "blur_ig": lambda m: tfattr.BlurIntegratedGradients(m, max_sigma=3.0, steps=6),
    "scorecam": lambda m: tfattr.ScoreCAM(m, layer="conv"),
    "ablationcam": lambda m: tfattr.AblationCAM(m, layer="conv"),
    "sobol": lambda m: tfattr.SobolAttribution(m, grid=2, n_designs=4, seed=1),
    "hsic": lambda m: tfattr.HsicAttribution(m, grid=2, n_designs=16, seed=1),
    "feature_permutation": lambda m: tfattr.FeaturePermutation(
        m, feature_mask=np.repeat(np.repeat(np.arange(4).reshape(2, 2, 1), 4, 0), 4, 1), seed=1),
}


@pytest.mark.parametrize("kind,output,head", [("list", 1, "colour"), ("list", "animal", "animal"),
                                              ("dict", "colour", "colour")])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_explains_the_chosen_output_as_the_single_output_model_does(method, kind, output, head, images):
    model, singles = two_headed(kind)
    target = 2
    chosen = METHODS[method](model).attribute(images, target=target, output=output)
    alone = METHODS[method](singles[head]).attribute(images, target=target)
    scale = np.abs(np.asarray(alone.attributions)).max()
    assert scale > 0
    np.testing.assert_allclose(chosen.attributions, alone.attributions, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_array_equal(chosen.targets, alone.targets)


def test_the_default_target_is_the_top_class_of_the_chosen_output(images):
    model, singles = two_headed("list")
    x = np.concatenate([images, RNG.uniform(0, 1, (13, 8, 8, 3)).astype(np.float32)])
    colour, animal = (singles[name](x).numpy().argmax(axis=1) for name in ("colour", "animal"))
    assert np.any(colour != animal)  # the choice of output matters for these images
    gradient = tfattr.Gradient(model, output="colour")
    np.testing.assert_array_equal(gradient.attribute(x).targets, colour)
    np.testing.assert_array_equal(gradient.attribute(x, output=0).targets, animal)
    single = tfattr.Gradient(singles["animal"]).attribute(x)
    np.testing.assert_allclose(gradient.attribute(x, output=0).attributions, single.attributions, rtol=1e-6, atol=1e-7)


def test_a_callable_target_sees_the_chosen_output_or_all_outputs_without_one(images):
    model, _ = two_headed("dict")
    by_index = tfattr.Gradient(model).attribute(images, target=3, output="colour").attributions
    chosen = tfattr.Gradient(model).attribute(images, target=lambda out: out[:, 3], output="colour").attributions
    every = tfattr.Gradient(model).attribute(images, target=lambda outs: outs["colour"][:, 3]).attributions
    np.testing.assert_allclose(chosen, by_index, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(every, by_index, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("target", [None, 1, [0, 1, 2]])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_without_output_a_class_target_is_refused_before_the_model_runs(kind, target, images):
    model, _ = two_headed(kind, counter=True)
    counter = model.get_layer("counter")
    names = "'animal', 'colour'"
    pattern = rf"2 outputs \({names}\).*`output=`.*callable `target`.*Received: output=None"
    for method in (tfattr.IntegratedGradients(model, steps=4), tfattr.GradCAM(model, layer="conv"),
                   tfattr.NoiseTunnel(tfattr.Gradient(model), nt_samples=2)):
        with pytest.raises(InvalidInputError, match=pattern):
            method.attribute(images, target=target)
    assert int(counter.calls.numpy()) == 0


def test_a_bad_output_is_refused_naming_the_outputs_before_the_model_runs(images):
    model, _ = two_headed("list", counter=True)
    dict_model, _ = two_headed("dict")
    with pytest.raises(InvalidInputError, match=r"'animal', 'colour'.*Received: output='species'"):
        tfattr.Gradient(model).attribute(images, target=1, output="species")
    with pytest.raises(InvalidInputError, match=r"index in \[0, 2\).*Received: output=2"):
        tfattr.Gradient(model, output=2)
    with pytest.raises(InvalidTypeError, match=r"name or an index.*Received: output=1.0"):
        tfattr.IntegratedGradients(model, output=1.0)
    with pytest.raises(InvalidInputError, match=r"by name.*'animal', 'colour'.*Received: output=0"):
        tfattr.Gradient(dict_model).attribute(images, target=1, output=0)
    with pytest.raises(InvalidInputError, match=r"class indices must lie in \[0, 3\).*Received: target=3"):
        tfattr.Gradient(model, output="animal").attribute(images, target=3)  # 'animal' has 3 classes
    assert int(model.get_layer("counter").calls.numpy()) == 0


def test_adaptive_noising_refuses_a_chosen_output_at_construction():
    model, _ = two_headed("list")
    with pytest.raises(InvalidInputError, match=r"sigma='adaptive'.*one output.*Received: output=1"):
        tfattr.SmoothTaylor(model, sigma="adaptive", output=1)


class TwoHeads(keras.Model):
    """A subclassed model: its outputs are known only when it runs."""

    def __init__(self):
        super().__init__()
        self.flat = L.Flatten()
        self.trunk = L.Dense(6, activation="tanh", bias_initializer="ones")
        self.a = L.Dense(3, bias_initializer="ones")
        self.b = L.Dense(2, bias_initializer="ones")

    def call(self, x):
        h = self.trunk(self.flat(x))
        return {"a": self.a(h), "b": self.b(h)}


def test_a_subclassed_model_with_dict_outputs_is_checked_when_it_runs(images):
    model = TwoHeads()
    model(images)
    chosen = tfattr.Gradient(model, output="b").attribute(images, target=1).attributions
    combined = tfattr.Gradient(model).attribute(images, target=lambda outs: outs["b"][:, 1]).attributions
    np.testing.assert_allclose(chosen, combined, rtol=1e-6, atol=1e-8)
    assert np.abs(chosen).max() > 0
    with pytest.raises(InvalidInputError, match=r"2 outputs \('a', 'b'\).*Received: output=None"):
        tfattr.Gradient(model).attribute(images, target=1)
    with pytest.raises(InvalidInputError, match=r"output names: 'a', 'b'.*Received: output='c'"):
        tfattr.Gradient(model, output="c").attribute(images, target=1)
