"""AdaptivePathIntegratedGradients (PAIR saliency's GuidedIG, Kapishnikov et al. 2021) and XRAI
(Kapishnikov et al. 2019): equal to PAIR saliency run on the same Keras models, plus properties."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfattr
from tfattr.errors import InvalidInputError, InvalidTypeError
from tfattr.methods.xrai import felzenszwalb_masks, xrai_regions

RNG = np.random.default_rng(11)
SHAPE = (12, 11, 3)


def _cnn(softmax=False):
    """A small CNN with non-zero biases and smooth activations (no ReLU kink for a float-rounding
    difference of a path point to flip); ``softmax``: a softmax head, explained in probabilities."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(5, 3, padding="same", activation="tanh", bias_initializer="random_normal")(inputs)
    h = keras.layers.Conv2D(4, 3, strides=2, activation="swish", bias_initializer="random_normal")(h)
    out = keras.layers.Dense(3, bias_initializer="random_normal",
                             activation="softmax" if softmax else None)(keras.layers.Flatten()(h))
    return keras.Model(inputs, out)


@pytest.fixture(scope="module")
def cnn():
    return _cnn()


@pytest.fixture(scope="module")
def models():
    return {"logits": _cnn(), "softmax": _cnn(softmax=True)}


@pytest.fixture
def numpy2_quantile(monkeypatch):
    """PAIR saliency 0.2.1's GuidedIG calls ``np.quantile(..., interpolation='lower')``; NumPy 2
    removed ``interpolation`` (renamed ``method`` in 1.22). A peer defect: map it here."""
    quantile = np.quantile

    def shimmed(a, q, *args, interpolation=None, **kwargs):
        if interpolation is not None:
            kwargs["method"] = interpolation
        return quantile(a, q, *args, **kwargs)

    monkeypatch.setattr(np, "quantile", shimmed)


def _call_model_function(model, target):
    import saliency.core as saliency

    def call_model_function(batch, call_model_args=None, expected_keys=None):
        batch = tf.convert_to_tensor(np.asarray(batch, np.float32))
        with tf.GradientTape() as tape:
            tape.watch(batch)
            score = model(batch)[:, target]
        return {saliency.INPUT_OUTPUT_GRADIENTS: tape.gradient(score, batch).numpy()}

    return call_model_function


def _images(count, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (count,) + SHAPE).astype(np.float32)


# -- AdaptivePathIntegratedGradients ----------------------------------------------------------------

@pytest.mark.parametrize("kind, options", [("logits", dict(steps=30)),
                                           ("softmax", dict(steps=20, fraction=0.1, max_dist=0.2, baseline=0.5))])
def test_adaptive_path_ig_equals_pair_guided_ig(models, kind, options, numpy2_quantile):
    """Same algorithm, path in float64 as PAIR's; the gradients are float32 passes of the same model
    on the same float32 points (batched over the images here, one image at a time in PAIR: a few ulp
    apart), so the sums agree to float32 rounding; a flipped feature selection would differ at the
    scale of the attributions themselves."""
    import saliency.core as saliency

    model, targets = models[kind], [2, 0]
    x = _images(2, seed=1)
    expl = tfattr.AdaptivePathIntegratedGradients(model, batch_size=8, **options).attribute(x, target=targets)
    baseline = options.get("baseline", 0.0)
    for e, target in enumerate(targets):
        reference = saliency.GuidedIG().GetMask(
            x[e].astype(np.float64), _call_model_function(model, target), x_baseline=np.full(SHAPE, baseline),
            x_steps=options["steps"], fraction=options.get("fraction", 0.25), max_dist=options.get("max_dist", 0.02))
        scale = np.abs(reference).max()
        assert scale > 0
        np.testing.assert_allclose(expl.attributions[e], reference, rtol=1e-4, atol=1e-5 * scale)


def test_adaptive_path_ig_with_max_dist_0_is_left_riemann_ig(cnn):
    """``max_dist=0`` pins every feature to the straight line: step k moves from α = k/M to (k+1)/M
    with the gradient at k/M, i.e. IG with the left Riemann rule (float32 path points either way)."""
    x = _images(2, seed=2)
    apig = tfattr.AdaptivePathIntegratedGradients(cnn, steps=16, max_dist=0.0, batch_size=8).attribute(x, target=1)
    ig = tfattr.IntegratedGradients(cnn, steps=16, rule="riemann_left", batch_size=8).attribute(x, target=1)
    scale = np.abs(ig.attributions).max()
    np.testing.assert_allclose(apig.attributions, ig.attributions, rtol=1e-4, atol=1e-5 * scale)


def test_adaptive_path_ig_is_complete_on_a_linear_model_and_converges_on_the_cnn(cnn):
    """Completeness ``Σ φ = f(x) − f(z)``: exact for an affine model (constant gradient, whatever the
    path: float32 rounding only); on the CNN the path sum's error shrinks with ``steps`` and at 256
    steps is under 2% of the attributions' L1 mass (a left Riemann–Stieltjes sum: O(1/steps))."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input(SHAPE)
    affine = keras.Model(inputs, keras.layers.Dense(3, bias_initializer="random_normal")(
        keras.layers.Flatten()(inputs)))
    x = _images(2, seed=3)
    expl = tfattr.AdaptivePathIntegratedGradients(affine, steps=10, baseline=0.3).attribute(x, target=[0, 2])
    gap = expl.scores - expl.baseline_scores
    np.testing.assert_allclose(expl.baseline_scores, affine(np.full((1,) + SHAPE, 0.3, np.float32)).numpy()[0, [0, 2]],
                               rtol=1e-6)
    np.testing.assert_allclose(expl.attributions.reshape(2, -1).sum(axis=1), gap, rtol=1e-5, atol=1e-5)
    deltas = []
    for steps in (16, 256):
        expl = tfattr.AdaptivePathIntegratedGradients(cnn, steps=steps, batch_size=8).attribute(x, target=1)
        total = expl.attributions.reshape(2, -1).sum(axis=1)
        gap = expl.scores - expl.baseline_scores
        np.testing.assert_allclose(expl.delta, total - gap, rtol=1e-4, atol=1e-6)  # float32 attributions summed
        deltas.append(np.abs(expl.delta))
    mass = np.abs(expl.attributions).reshape(2, -1).sum(axis=1)
    assert np.all(deltas[1] < deltas[0]) and np.all(deltas[1] < 0.02 * mass)


def test_adaptive_path_ig_batch_chunk_and_seed_invariance(cnn):
    """One image at a time equals the batch, any ``batch_size``; a random baseline repeats with its seed."""
    x = _images(3, seed=4)
    method = tfattr.AdaptivePathIntegratedGradients(cnn, steps=20, baseline="uniform", seed=7)
    batch = method.attribute(x, target=[0, 1, 2], batch_size=2)
    scale = np.abs(batch.attributions).max()
    for e in range(3):
        alone = method.attribute(x[e:e + 1], target=e, batch_size=16)
        np.testing.assert_allclose(alone.attributions[0], batch.attributions[e], rtol=1e-4, atol=1e-5 * scale)
    again = method.attribute(x, target=[0, 1, 2], batch_size=2)
    np.testing.assert_array_equal(again.attributions, batch.attributions)
    other = method.attribute(x, target=[0, 1, 2], batch_size=2, seed=8)
    assert np.abs(other.attributions - batch.attributions).max() > 100 * 1e-5 * scale


def test_adaptive_path_ig_input_equal_to_baseline_and_options(cnn):
    x = np.zeros((1,) + SHAPE, np.float32)
    expl = tfattr.AdaptivePathIntegratedGradients(cnn, steps=5).attribute(x, target=0)
    assert np.all(expl.attributions == 0) and expl.gradients == 5
    with pytest.raises(InvalidInputError, match="Received: fraction=1.5"):
        tfattr.AdaptivePathIntegratedGradients(cnn, fraction=1.5)
    with pytest.raises(InvalidInputError, match="Received: max_dist=-0.1"):
        tfattr.AdaptivePathIntegratedGradients(cnn).attribute(x, max_dist=-0.1)


def _within(seconds, function):
    """``function()``'s result, or a failure if it has not returned after ``seconds`` (a loop that
    never ends fails the test instead of hanging the suite; the daemon thread dies with the process)."""
    import threading

    box = []

    def run():
        try:
            box.append(("value", function()))
        except Exception as error:  # noqa: BLE001  (handed back to the test)
            box.append(("error", error))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"still running after {seconds} s"
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def test_adaptive_path_ig_nan_gradient_gives_nan_not_an_endless_loop():
    """A NaN gradient (``sqrt`` of a negative input) orders no features: PAIR's sub-step loop never
    ends. The example's attributions are NaN (as Gradient's), the other example's are unchanged,
    and the step function refuses NaN by name."""
    from tfattr.methods.adaptive_path import adaptive_path_step

    keras.utils.set_random_seed(2)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, bias_initializer="random_normal")(
        keras.layers.Lambda(lambda t: keras.ops.sqrt(t))(inputs)))
    x = np.array([[1.0, 2.0, -1.0, 3.0], [1.0, 2.0, 0.5, 3.0]], np.float32)
    method = tfattr.AdaptivePathIntegratedGradients(model, steps=6, baseline=0.25)
    expl = _within(60, lambda: method.attribute(x, target=0))
    assert np.all(np.isnan(expl.attributions[0])) and np.isnan(expl.delta[0])
    alone = method.attribute(x[1:], target=0)
    np.testing.assert_array_equal(expl.attributions[1], alone.attributions[0])
    grad = np.array([0.5, np.nan, 1.0])
    with pytest.raises(InvalidInputError, match="Received: grad="):
        _within(60, lambda: adaptive_path_step(np.zeros(3), np.ones(3), np.zeros(3), grad, 0, 4, 0.25, 0.02, 3.0))


# -- XRAI ------------------------------------------------------------------------------------------

def _pair_xrai(model, image, target, segments, **parameters):
    import saliency.core as saliency

    extra = saliency.XRAIParameters(**parameters)
    extra.return_xrai_segments = True
    return saliency.XRAI().GetMaskWithDetails(image.astype(np.float64), _call_model_function(model, target),
                                              segments=segments, batch_size=64, extra_parameters=extra)


@pytest.mark.parametrize("kind, options", [("logits", dict(steps=16)), ("softmax", dict(steps=8, algorithm="fast")),
                                           ("logits", dict(steps=8, area_threshold=0.4))])
def test_xrai_equals_pair_xrai(models, kind, options):
    """Same Felzenszwalb segments (mask for mask), same ranking; the maps are gains (means of IG over
    regions) that agree to float32 rounding of the IG gradients (float32 path points here, PAIR's
    float64 points cast to float32)."""
    from saliency.core.xrai import _get_segments_felzenszwalb

    model, targets = models[kind], [1, 2]
    x = _images(2, seed=5)
    expl = tfattr.XRAI(model, batch_size=32, **options).attribute(x, target=targets)
    parameters = {k: v for k, v in options.items() if k in ("steps", "algorithm", "area_threshold")}
    for e, target in enumerate(targets):
        segments = _get_segments_felzenszwalb(x[e].astype(np.float64))
        assert len(segments) == len(expl.info["segments"][e])
        assert all(np.array_equal(a, b) for a, b in zip(segments, expl.info["segments"][e]))
        reference = _pair_xrai(model, x[e], target, segments, **parameters)  # PAIR's segments, computed once
        np.testing.assert_array_equal(expl.info["ranks"][e], reference.segments)
        scale = np.abs(reference.attribution_mask).max()
        np.testing.assert_allclose(expl.attributions[e], reference.attribution_mask, rtol=1e-4, atol=1e-5 * scale)


def test_xrai_takes_any_tfattr_method_as_its_attribution(cnn, numpy2_quantile):
    """``attribution_method``: XRAI ranks that method's attributions; PAIR given the same attribution
    (``base_attribution``) returns the same ranks and map."""
    import saliency.core as saliency

    x = _images(1, seed=6)
    apig = tfattr.AdaptivePathIntegratedGradients(cnn, steps=12)
    expl = tfattr.XRAI(cnn, attribution_method=apig).attribute(x, target=2)
    base = apig.attribute(x, target=2).attributions
    np.testing.assert_allclose(expl.info["base_attributions"], base, rtol=1e-12)
    extra = saliency.XRAIParameters()
    extra.return_xrai_segments = True
    reference = saliency.XRAI().GetMaskWithDetails(x[0].astype(np.float64), None, base_attribution=base[0],
                                                   extra_parameters=extra)
    np.testing.assert_array_equal(expl.info["ranks"][0], reference.segments)
    np.testing.assert_allclose(expl.attributions[0], reference.attribution_mask, rtol=1e-6)  # PAIR: float32 means
    assert expl.gradients == 12 and "adaptive_path" in expl.method
    rebound = tfattr.XRAI(cnn, attribution_method=apig).with_model(_cnn())
    assert rebound.config["attribution_method"].model is rebound.model


def test_xrai_regions_by_hand():
    """Two overlapping masks on a 2 × 4 image: the denser region first; its overlap is not counted
    again; the uncovered pixels get their own mean (the map sums to the attribution's sum)."""
    attr = np.array([[4.0, 4.0, 1.0, 0.0], [2.0, 0.0, 1.0, -3.0]])
    masks = np.zeros((2, 2, 4), bool)
    masks[0, :, :2] = True  # density 2.5
    masks[1, :, 1:3] = True  # density 1.5; new pixels (column 2): 1.0
    region_map, ranks, gains = xrai_regions(attr, masks, min_pixel_diff=1)
    np.testing.assert_allclose(region_map, [[2.5, 2.5, 1.0, -1.5], [2.5, 2.5, 1.0, -1.5]])
    np.testing.assert_array_equal(ranks, [[1, 1, 2, 3], [1, 1, 2, 3]])
    assert gains == [2.5, 1.0, -1.5] and np.isclose(region_map.sum(), attr.sum())
    _, ranks_fast, _ = xrai_regions(attr, masks[::-1], algorithm="fast", min_pixel_diff=1)
    np.testing.assert_array_equal(ranks_fast, ranks)
    with pytest.raises(InvalidInputError, match="Received: algorithm='slow'"):
        xrai_regions(attr, masks, algorithm="slow")


def test_xrai_is_batch_invariant_and_checks_its_inputs(cnn):
    x = _images(2, seed=8)
    batch = tfattr.XRAI(cnn, steps=8).attribute(x, target=[0, 1])
    alone = tfattr.XRAI(cnn, steps=8).attribute(x[1], target=1)
    np.testing.assert_array_equal(alone.info["ranks"][0], batch.info["ranks"][1])
    np.testing.assert_allclose(alone.attributions, batch.attributions[1], rtol=1e-4,
                               atol=1e-5 * np.abs(batch.attributions).max())
    masks = felzenszwalb_masks(x[0], scales=(100,), dilation_radius=0)
    assert masks.shape[1:] == SHAPE[:2] and np.all(masks.sum(axis=0) == 1)  # one scale, undilated: a partition
    with pytest.raises(InvalidTypeError, match="Received: attribution_method='ig'"):
        tfattr.XRAI(cnn, attribution_method="ig")
    with pytest.raises(InvalidInputError, match="Received: scales=()"):
        tfattr.XRAI(cnn, scales=())
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 2))
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(InvalidInputError, match="Received: inputs.shape"):
        tfattr.XRAI(flat).attribute(np.zeros((1, 6, 2), np.float32), target=0)


def test_xrai_attribution_method_must_explain_xrai_model_and_output():
    """An attribution method of another model, or of another output, was run as given: XRAI ranked
    another model's (output's) attributions under its own scores. Both are refused by name; XRAI's
    ``output`` is passed on to a method that names none (equal to one made with that output)."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="tanh", bias_initializer="random_normal")(inputs))
    model = keras.Model(inputs, [keras.layers.Dense(3, bias_initializer="random_normal")(h),
                                 keras.layers.Dense(4, bias_initializer="random_normal")(h)])
    other = _cnn()
    x = np.random.default_rng(5).uniform(0, 1, (1, 8, 8, 3)).astype(np.float32)
    with pytest.raises(InvalidInputError, match="own model.*Received: attribution_method="):
        tfattr.XRAI(other, attribution_method=tfattr.Gradient(model, output=0))
    with pytest.raises(InvalidInputError, match="own model.*Received: attribution_method="):
        tfattr.XRAI(model, output=1).attribute(x, target=0, attribution_method=tfattr.Gradient(other))
    with pytest.raises(InvalidInputError, match="another output.*Received: attribution_method="):
        tfattr.XRAI(model, output=1, attribution_method=tfattr.Gradient(model, output=0))
    fast = dict(scales=(100,), dilation_radius=0)  # one segmentation: the base attributions are what is compared
    passed_on = tfattr.XRAI(model, output=1, attribution_method=tfattr.Gradient(model), **fast).attribute(x, target=3)
    named = tfattr.XRAI(model, output=1, attribution_method=tfattr.Gradient(model, output=1), **fast).attribute(
        x, target=3)
    np.testing.assert_array_equal(passed_on.info["base_attributions"], named.info["base_attributions"])
    gradient = tfattr.Gradient(model, output=1).attribute(x, target=3).attributions
    np.testing.assert_array_equal(passed_on.info["base_attributions"], gradient)


def test_felzenszwalb_masks_of_a_constant_image_are_one_segment_per_scale():
    """PAIR's rescaling divides by max − min = 0: the NaN image was cut into hundreds of noise
    segments (1014 masks on 8 × 8), ranked as if they were regions. A constant image has no edges:
    one whole-image segment per scale, and XRAI gives every pixel the mean attribution."""
    image = np.full((8, 8, 3), 0.5)
    masks = felzenszwalb_masks(image, dilation_radius=0)
    assert masks.shape == (6, 8, 8) and masks.all()
    attr = np.arange(64.0).reshape(8, 8)
    region_map, ranks, gains = xrai_regions(attr, felzenszwalb_masks(image))
    np.testing.assert_allclose(region_map, attr.mean())
    np.testing.assert_array_equal(ranks, 1)
    assert gains == [attr.mean()]


def test_xrai_fast_refuses_an_area_threshold(cnn):
    """PAIR's fast ranking ignores ``area_threshold``: asking for 40 % with ``algorithm="fast"`` gave
    the whole image's ranking without a word. Refused by name (full: taken)."""
    with pytest.raises(InvalidInputError, match="Received: area_threshold=0.4"):
        tfattr.XRAI(cnn, algorithm="fast", area_threshold=0.4)
    with pytest.raises(InvalidInputError, match="Received: area_threshold=0.4"):
        tfattr.XRAI(cnn, area_threshold=0.4).attribute(_images(1), target=0, algorithm="fast")
    assert tfattr.XRAI(cnn, algorithm="full", area_threshold=0.4).config["area_threshold"] == 0.4


def test_xrai_refuses_a_min_pixel_diff_above_the_image_size():
    """On a 6 × 6 image no segment adds 50 pixels: every mask was dropped and XRAI returned one flat
    region (the mean attribution everywhere, ranks all 1) without a word. Refused by name; a
    ``min_pixel_diff`` within the image ranks several regions."""
    keras.utils.set_random_seed(6)
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, keras.layers.Dense(2, bias_initializer="random_normal")(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(7).uniform(0, 255, (1, 6, 6, 1)).astype(np.float32)
    with pytest.raises(InvalidInputError, match="Received: min_pixel_diff=50"):
        tfattr.XRAI(model, steps=4).attribute(x, target=0)
    expl = tfattr.XRAI(model, steps=4, min_pixel_diff=1, dilation_radius=0, scales=(50,)).attribute(x, target=0)
    assert expl.info["ranks"].max() > 1
