"""The method contract: every attribution method exported by ``tfattr`` shows its options in
``inspect.signature`` (with their defaults), documents each in its docstring (or the docstring
of the class it takes the option from), and rejects a wrong type or value of each option with a
tfattr error naming it (at construction and as a per-call override)."""

import inspect
import re

import keras
import numpy as np
import pytest

import tfattr
from tfattr.errors import TfattrError
from tfattr.methods.base import AttributionMethod

#: per option: wrong values (a wrong type and/or a wrong value); an option without an entry fails
#: test_every_option_has_wrong_values_to_try, so a new option must bring its own
WRONG = {
    "batch_size": [0, 2.5, "fast"],
    "verbose": ["loud", -1],
    "parallel_chunks": [0, 1.5],
    "output": [5, "nope"],
    "fixed_inputs": [1.5, {"a": 1}],
    "baseline": [True, None],
    "steps": [0, 2.5, "50"],
    "rule": ["simpson", 3],
    "n_baselines": [0, 1.0],
    "value_range": [(1, 0), "wide"],
    "seed": [-1, 0.5, 2**53],
    "per_image_baselines": ["yes", 1],
    "sigma": [-1.0, "wide"],
    "blur_sigma": [-1.0, "soft"],
    "value": [float("nan"), "grey"],
    "tolerance": [0, -0.1, "tight"],
    "max_steps": [1, 2.5],
    "min_steps": [1, "3"],
    "baseline_tolerance": [0, "tight"],
    "max_baselines": [1, 2.5],
    "absolute": ["yes", 1],
    "maxpool_rule": ["torch", 1],
    "relu": ["yes", 0],
    "upsample": ["yes", 0],
    "normalize": ["yes", 1],
    "weighting": ["sum", 1],
    "positive_units": ["yes", 1],
    "interpolate_mode": ["area", 1],
    "convention": ["torch", 1],
    "center": ["yes", 1],
    "top_k": [0, 2.5],
    "mask_upsampling": ["nearest", True],
    "ablation_value": [float("nan"), "zero"],
    "input_baseline": ["zero", True],
    "reduce": ["mean", 1],
    "roots": [0, 1.5],
    "noise_scale": ["percent", 1],
    "objective": ["best", 1],
    "stop_rule": ["never", 1],
    "normalisation": [(0.0, -1.0), "imagenet"],
    "max_roots": [0, 2.5],
    # GradientShap
    "baselines": [True, "zero"],
    "n_samples": [0, 2.5],
    "reference_size": [0, "all"],
    # KernelShap, ShapleyValueSampling, Lime (feature_mask: with FeatureAblation's)
    "segmentation": ["watershed", 1.5],
    "segmentation_options": ["fast", 1],
    "kernel_width": [0, "wide"],
    "hide_color": ["grey", float("nan")],
    # BlurIntegratedGradients
    "max_sigma": [0, "wide"],
    "grad_step": [0.0, "fine"],
    "sqrt": ["yes", 1],
    # AdaptivePathIntegratedGradients
    "fraction": [-0.1, "quarter"],
    "max_dist": [1.5, "far"],
    # XRAI
    "attribution_method": ["ig", 1],
    "algorithm": ["slow", 1],
    "area_threshold": [1.5, "all"],
    "min_pixel_diff": [0, 2.5],
    "dilation_radius": [-1, 2.5],
    "scales": [(), "fine"],
    # Occlusion, FeatureAblation, RISE
    "window": [0, "big"],
    "strides": [0, (1.5,)],
    "feature_mask": [1.5, "columns"],
    "n_masks": [0, 2.5],
    "grid": [0, "fine"],
    "p": [0.0, 1.5],
    # SobolAttribution, FeaturePermutation
    "n_designs": [0, 1, 2.5],
    "perturbation": ["blurring", 1],
    "n_permutations": [0, 2.5],
    # LRP
    "composite": ["zennit", 1],
    "epsilon": [-1.0, "small"],
    "gamma": [-0.5, "big"],
    "stabilizer": [0.0, "tiny"],
    "low": ["black", float("nan")],
    "high": ["white", float("inf")],
    "rules": [["zplus"], {"dense": "zminus"}],
    "unsupported": ["ignore", 1],
    "layer_sums": ["yes", 1],
    # NoiseTunnel
    "nt_type": ["mean", 1],
    "nt_samples": [0, 2.5],
    "stdevs": [-1.0, "x"],
    "noise_level": [-0.1, "x"],
    "nt_tolerance": [0, "x"],
    "nt_max_samples": [0, 2.5],
}

#: constructor arguments that are not options (the layer of a layer method)
LAYER = {"GradCAM": {"layer": "conv"}, "RSIGradCAM": {"layer": "conv"}, "LayerIntegratedGradients": {"layer": "conv"},
         "LayerConductance": {"layer": "conv"}, "GradCAMPlusPlus": {"layer": "conv"}, "LayerCAM": {"layer": "conv"},
         "XGradCAM": {"layer": "conv"}, "HiResCAM": {"layer": "conv"}, "EigenCAM": {"layer": "conv"},
         "ScoreCAM": {"layer": "conv"}, "AblationCAM": {"layer": "conv"}}


def _exported_methods():
    found = []
    for name in tfattr.__all__:
        obj = getattr(tfattr, name)
        if isinstance(obj, type) and (issubclass(obj, AttributionMethod) or obj is tfattr.NoiseTunnel):
            found.append(obj)
    return found


METHODS = _exported_methods()


def _options(cls):
    """The option names in the signature (every parameter after the model / wrapped method and the layer)."""
    skip = {"model", "method", "layer", "attribute_to"}
    return [p.name for p in inspect.signature(cls).parameters.values() if p.name not in skip]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    h = keras.layers.MaxPooling2D()(h)
    out = keras.layers.Dense(3)(keras.layers.Flatten()(h))
    return keras.Model(inputs, out)


def _build(cls, model, **options):
    if cls is tfattr.NoiseTunnel:
        return cls(tfattr.Gradient(model), **options)
    return cls(model, **LAYER.get(cls.__name__, {}), **options)


def test_the_exported_methods_are_found():
    names = {cls.__name__ for cls in METHODS}
    assert {"IntegratedGradients", "SmoothTaylor", "GradCAM", "RSIGradCAM", "Gradient", "InputXGradient",
            "GuidedBackprop", "GuidedIntegratedGradients", "LayerIntegratedGradients", "LayerConductance",
            "NoiseTunnel", "GradientShap", "BlurIntegratedGradients", "AdaptivePathIntegratedGradients",
            "XRAI"} <= names


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_signature_shows_every_option_with_its_default(cls):
    signature = inspect.signature(cls)
    assert not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()), str(signature)
    if cls is tfattr.NoiseTunnel:
        return  # plain keywords in its own __init__
    names = _options(cls)
    assert names == [n for n in cls.option_table if n in names] and set(names) == set(cls.option_table)
    for name, option in cls.option_table.items():
        assert signature.parameters[name].default is option.default, name
        assert signature.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        option.validate(option.default)  # every default passes its own check


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_the_constructor_keeps_every_default(cls, model):
    method = _build(cls, model)
    for p in inspect.signature(cls).parameters.values():
        if p.name in _options(cls) and p.name not in ("value_range", "rule"):  # resolved / normalised defaults
            assert method.config[p.name] == p.default or method.config[p.name] is p.default, p.name


_ENTRY = re.compile(r"^\s*(?:[*-]\s+)?((?:``)?\w+(?:``)?(?:\s*,\s*(?:``)?\w+(?:``)?)*)\s*:(?:\s|$)")


def _documented(cls):
    """Option names that open an entry (``name: …`` or ``a, b, c: …``) in the docstrings of the
    class and of the classes it inherits from."""
    names = set()
    for klass in cls.__mro__:
        for line in (klass.__doc__ or "").splitlines():
            match = _ENTRY.match(line)
            if match:
                names |= {part.strip().strip("`") for part in match.group(1).split(",")}
    return names


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_every_option_has_a_docstring_entry(cls):
    missing = [name for name in _options(cls) if name not in _documented(cls)]
    assert not missing, f"{cls.__name__}'s docstring has no entry for {missing}"


def test_every_option_has_wrong_values_to_try():
    missing = sorted({name for cls in METHODS for name in _options(cls)} - set(WRONG))
    assert not missing


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_a_wrong_value_of_each_option_raises_an_error_naming_it(cls, model):
    method = _build(cls, model)
    images = np.random.default_rng(0).uniform(0, 1, (1, 8, 8, 3)).astype(np.float32)
    for name in _options(cls):
        for wrong in WRONG[name]:
            with pytest.raises(TfattrError, match=rf"`?{name}`?.*Received: {name}\b"):
                _build(cls, model, **{name: wrong})
            if cls is tfattr.NoiseTunnel:
                continue
            with pytest.raises(TfattrError, match=rf"Received: {name}\b"):  # as a per-call override
                method.attribute(images, **{name: wrong})


def test_old_keyword_calls_keep_working(model):
    images = np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    options = dict(baseline="uniform", steps=4, rule="gauss_legendre", n_baselines=2, seed=3, batch_size=8)
    by_keywords = tfattr.IntegratedGradients(model, **options).attribute(images, target=1)
    by_override = tfattr.IntegratedGradients(model).attribute(images, target=1, **options)
    np.testing.assert_array_equal(by_keywords.attributions, by_override.attributions)


def test_the_public_protocol_reproduces_attribute_with_the_call_state_passed_down():
    """call_options → validate → resolve → explain → package is attribute(); the input layout of a
    model with several inputs travels in the Call (no thread-local set by validate)."""
    keras.utils.set_random_seed(2)
    a, b = keras.Input((5,), name="table"), keras.Input((4, 3), name="series")
    h = keras.layers.Concatenate()([a, keras.layers.Flatten()(b)])
    model = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Dense(8, activation="tanh")(h)))
    x = [np.random.default_rng(3).uniform(0, 1, size=(2, 5)).astype(np.float32),
         np.random.default_rng(4).uniform(0, 1, size=(2, 4, 3)).astype(np.float32)]
    ig = tfattr.IntegratedGradients(model, steps=4, batch_size=8)
    config = ig.call_options(fixed_inputs=["series"], baseline="uniform")
    assert config.layout is None
    images = ig.validate(x, config)
    assert config.layout is images.layout and config.replace(steps=8).layout is images.layout
    packed = ig.to_model_dtype(images.array, config.layout)
    targets, fx = ig.resolve(packed, 1, config["batch_size"], config["output"], config.layout)
    by_protocol = ig.package(ig.explain(packed, targets, fx, config), images, targets, fx, config)
    reference = ig.attribute(x, target=1, fixed_inputs=["series"], baseline="uniform")
    for mine, theirs in zip(by_protocol.attributions, reference.attributions):
        np.testing.assert_array_equal(mine, theirs)
    assert np.all(by_protocol.attributions[1] == 0)  # the fixed input
    # the constructor's options are untouched by a call's overrides
    assert ig.config["baseline"] == "zero" and ig.config["fixed_inputs"] is None


def test_noise_tunnel_uses_only_the_public_protocol():
    import tfattr.core.noise as noise

    source = inspect.getsource(noise)
    assert not re.search(r"method\._\w", source)


def test_a_subclass_declaring_options_the_former_way_still_works(model):
    class Scaled(tfattr.Gradient):
        options = {"absolute": False, "factor": 2.0}  # {name: default}, as before Option tables

        def _explain(self, x, targets, fx, config):
            out = super()._explain(x, targets, fx, config)
            return type(out)(out, attributions=out["attributions"] * config["factor"])

    assert inspect.signature(Scaled).parameters["factor"].default == 2.0
    images = np.random.default_rng(5).uniform(0, 1, (1, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(Scaled(model, factor=3.0).attribute(images, target=0).attributions,
                               3.0 * tfattr.Gradient(model).attribute(images, target=0).attributions, rtol=1e-6)


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_with_model_makes_the_same_method_on_another_model(cls, model):
    """``method.with_model(copy)`` (used by the randomisation metrics): same class, same options, and
    on a copy with the same weights the same attributions."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    extra = {"seed": 3} if "seed" in _options(cls) else {}
    if "window" in _options(cls):  # the default window (15×15) is larger than these 8×8 images
        extra.update(window=(3, 3), strides=(2, 2))
    if "n_masks" in _options(cls):  # fast
        extra["n_masks"] = 64
    if cls.__name__ in ("KernelShap", "Lime"):  # fast (default: 2 M + 2048 coalitions, 1000 samples)
        extra["n_samples"] = 100
    if cls.__name__ in ("GradientShap", "DeepLiftShap"):  # both need a baseline distribution
        extra["baselines"] = np.random.default_rng(1).uniform(size=(4, 8, 8, 3))
    method = _build(cls, model, **extra)
    rebound = method.with_model(copy)
    assert type(rebound) is cls and rebound.model is copy
    assert {k: v for k, v in rebound.config.items()} == {k: v for k, v in method.config.items()}
    if getattr(method, "layer", None) is not None:
        assert rebound.layer is copy.get_layer(method.layer.name)
    images = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(rebound.attribute(images, target=1).attributions),
                               np.asarray(method.attribute(images, target=1).attributions), rtol=1e-5, atol=1e-6)
