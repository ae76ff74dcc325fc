"""GradientShap (captum's Expected Gradients) and BlurIntegratedGradients (PAIR saliency's Blur IG)."""

import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

import tfattr
from tfattr.errors import InvalidInputError, InvalidTypeError
from tfattr.methods.blur_ig import blur_sigmas, gaussian_blur, gaussian_blur_matrix

RNG = np.random.default_rng(7)


class Quadratic(keras.layers.Layer):
    """``f_c(x) = Σ_i w_ci x_i² + v_ci x_i`` per class ``c``: ∇f_c = 2 w_c ⊙ x + v_c, in closed form."""

    def __init__(self, w, v, **kwargs):
        super().__init__(**kwargs)
        self.w, self.v = np.asarray(w, np.float32), np.asarray(v, np.float32)  # (C, D)

    def call(self, x):
        flat = keras.ops.reshape(x, (-1, self.w.shape[1]))
        return keras.ops.matmul(flat * flat, self.w.T) + keras.ops.matmul(flat, self.v.T)


SHAPE = (3, 2, 2)
D = int(np.prod(SHAPE))
W = RNG.uniform(-1, 1, (2, D))
V = RNG.uniform(-1, 1, (2, D))


@pytest.fixture(scope="module")
def quadratic():
    inputs = keras.Input(SHAPE)
    return keras.Model(inputs, Quadratic(W, V)(inputs))


def _gradient(points, target):
    return 2 * W[target] * points.reshape(len(points), -1) + V[target]


def _f(points, target):
    flat = points.reshape(len(points), -1)
    return (W[target] * flat * flat + V[target] * flat).sum(axis=1)


def _numpy_gradient_shap(x, references, target, drawn):
    """captum's estimator in NumPy on the same draws: mean_s (x̃_s − b_s) ⊙ ∇f(b_s + α_s (x̃_s − b_s))."""
    out = []
    for e in range(len(x)):
        noisy = x[e][None].astype(np.float64) + drawn["noise"]
        b = references[drawn["index"]].astype(np.float64)
        points = b + drawn["alpha"].reshape(-1, 1, 1, 1) * (noisy - b)
        grads = _gradient(points, target[e]).reshape(noisy.shape)
        out.append(((noisy - b) * grads).mean(axis=0))
    return np.stack(out)


@pytest.mark.parametrize("stdevs", [0.0, 0.2])
def test_gradient_shap_equals_a_numpy_reimplementation_on_the_same_draws(quadratic, stdevs):
    x = RNG.uniform(0, 1, (3,) + SHAPE).astype(np.float32)
    references = RNG.uniform(0, 1, (6,) + SHAPE).astype(np.float32)
    target = np.array([0, 1, 1])
    method = tfattr.GradientShap(quadratic, baselines=references, n_samples=9, stdevs=stdevs, seed=4, batch_size=5)
    expl = method.attribute(x, target=target)
    drawn = method.draws(SHAPE, len(references), 9, stdevs, 4)
    assert len(set(drawn["index"].tolist())) > 1 and (stdevs == 0) == (not drawn["noise"].any())
    np.testing.assert_array_equal(expl.info["baseline_index"], drawn["index"])
    expected = _numpy_gradient_shap(x, references, target, drawn)
    np.testing.assert_allclose(expl.attributions, expected, rtol=1e-5, atol=1e-6)
    # delta: the mean of captum's per-draw deltas Σφ_s − (f(x̃_s) − f(b_s))
    fb = np.stack([_f(references[drawn["index"]].astype(np.float64), t) for t in target])
    fxn = np.stack([_f(x[e][None].astype(np.float64) + drawn["noise"], target[e]) for e in range(3)])
    np.testing.assert_allclose(expl.baseline_scores, fb.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(expl.delta, expected.reshape(3, -1).sum(axis=1) - (fxn - fb).mean(axis=1),
                               rtol=1e-4, atol=1e-5)
    assert expl.gradients == 3 * 9
    # an example gets the same draws alone or in a batch
    alone = method.attribute(x[1:2], target=target[1:2])
    np.testing.assert_allclose(alone.attributions, expl.attributions[1:2], rtol=1e-6, atol=1e-7)


def test_gradient_shap_converges_to_ig_from_the_baseline_within_the_monte_carlo_error(quadratic):
    """One baseline, stdevs = 0: ∇f is linear along the path, so E_α[(x − b) ⊙ ∇f(b + α(x − b))] is
    IG from b exactly, (x − b) ⊙ (w ⊙ (x + b) + v); the estimate is that with α replaced by the draws'
    mean ᾱ, and its standard error per value is |x − b|·|2w(x − b)|·√(1/12 / S)."""
    x = RNG.uniform(-1, 1, (1,) + SHAPE)
    b = RNG.uniform(-1, 1, (1,) + SHAPE)
    exact = ((x - b).reshape(1, -1) * (W[0] * (x + b).reshape(1, -1) + V[0])).reshape(x.shape)
    errors = []
    for samples in (16, 256, 4096):
        method = tfattr.GradientShap(quadratic, baselines=b.astype(np.float32), n_samples=samples, seed=11,
                                     batch_size=512)
        expl = method.attribute(x.astype(np.float32), target=0)
        alpha_bar = method.draws(SHAPE, 1, samples, 0.0, 11)["alpha"].mean()
        with_draws = ((x - b).reshape(1, -1) * (2 * W[0] * (b + alpha_bar * (x - b)).reshape(1, -1) + V[0]))
        np.testing.assert_allclose(expl.attributions, with_draws.reshape(x.shape), rtol=1e-5, atol=1e-6)
        standard_error = np.abs(x - b) * np.abs(2 * W[0].reshape(x.shape) * (x - b)) * np.sqrt(1 / 12 / samples)
        assert np.all(np.abs(expl.attributions - exact) <= 5 * standard_error)  # 5 s.e.: p < 6e-7 per value
        errors.append(np.abs(expl.attributions - exact).max())
        # completeness in expectation: delta = Σ 2w(x − b)²(ᾱ − ½), zero mean, s.e. of the same order
        np.testing.assert_allclose(expl.delta, (2 * W[0] * ((x - b) ** 2).ravel()).sum() * (alpha_bar - 0.5),
                                   rtol=1e-4, atol=1e-6)
    assert errors[-1] < errors[0]


def test_gradient_shap_takes_a_dataset_sample_and_checks_its_baselines(quadratic):
    x = RNG.uniform(0, 1, (2,) + SHAPE).astype(np.float32)
    references = RNG.uniform(0, 1, (7,) + SHAPE).astype(np.float32)
    labels = np.zeros(7)
    dataset = tf.data.Dataset.from_tensor_slices((references, labels)).batch(3)
    by_array = tfattr.GradientShap(quadratic, baselines=references[:5], n_samples=6).attribute(x, target=1)
    by_dataset = tfattr.GradientShap(quadratic, baselines=dataset, reference_size=5, n_samples=6).attribute(x, target=1)
    np.testing.assert_array_equal(by_dataset.attributions, by_array.attributions)
    assert by_dataset.info["references"] == 5
    method = tfattr.GradientShap(quadratic)
    with pytest.raises(InvalidInputError, match=r"`baselines=`.*Received: baselines=None"):
        method.attribute(x, target=0)
    with pytest.raises(InvalidInputError, match=r"Received: baselines.shape=\(4, 3, 2\)"):
        method.attribute(x, target=0, baselines=np.zeros((4, 3, 2)))
    with pytest.raises(InvalidTypeError, match=r"Received: baselines='zero'"):
        tfattr.GradientShap(quadratic, baselines="zero")


def test_gaussian_blur_equals_scipy_gaussian_filter():
    image = RNG.uniform(0, 1, (1, 9, 7, 2))
    for mode in ("constant", "reflect"):
        for sigma in (0.0, 0.01, 0.3, 1.0, 2.51, 6.0, 50.0):  # radius 0 … far beyond the image
            expected = scipy.ndimage.gaussian_filter(image[0], [sigma, sigma, 0], mode=mode)
            np.testing.assert_allclose(gaussian_blur(image, sigma, mode=mode).numpy()[0], expected,
                                       rtol=1e-12, atol=1e-14)
    line = RNG.uniform(0, 1, 5)
    np.testing.assert_allclose(gaussian_blur_matrix(5, 3.3, mode="reflect") @ line,
                               scipy.ndimage.gaussian_filter1d(line, 3.3, mode="reflect"), rtol=1e-12)


@pytest.fixture(scope="module")
def cnn():
    """A small CNN with non-zero biases and smooth activations (no ReLU kink for a float-rounding
    difference of a path point to flip)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((10, 9, 3))
    h = keras.layers.Conv2D(5, 3, padding="same", activation="tanh", bias_initializer="random_normal")(inputs)
    h = keras.layers.Conv2D(4, 3, strides=2, activation="swish", bias_initializer="random_normal")(h)
    out = keras.layers.Dense(3, bias_initializer="random_normal")(keras.layers.Flatten()(h))
    return keras.Model(inputs, out)


def _pair_blur_ig(model, image, target, **options):
    import saliency.core as saliency

    def call_model_function(batch, call_model_args=None, expected_keys=None):
        batch = tf.convert_to_tensor(np.asarray(batch, np.float32))
        with tf.GradientTape() as tape:
            tape.watch(batch)
            score = model(batch)[:, target]
        return {saliency.INPUT_OUTPUT_GRADIENTS: tape.gradient(score, batch).numpy()}

    # float64 image: PAIR's scipy blurs and their difference in float64; the model runs in float32
    return saliency.BlurIG().GetMask(image.astype(np.float64), call_model_function, batch_size=1, **options)


@pytest.mark.parametrize("options", [{}, {"max_sigma": 6.0, "steps": 24, "sqrt": True, "grad_step": 0.05}])
def test_blur_ig_equals_pair_saliency_blur_ig(cnn, options):
    """Same formula, same blurs: the difference is float32 rounding of the path points (≤ a few ulp
    against PAIR's float64 blurs cast to float32) through a smooth model, summed over the levels."""
    x = RNG.uniform(0, 1, (2, 10, 9, 3)).astype(np.float32)
    expl = tfattr.BlurIntegratedGradients(cnn, batch_size=32, **options).attribute(x, target=[2, 0])
    for e, target in enumerate([2, 0]):
        reference = _pair_blur_ig(cnn, x[e], target, **options)
        scale = np.abs(reference).max()
        assert scale > 0
        np.testing.assert_allclose(expl.attributions[e], reference, rtol=1e-4, atol=1e-5 * scale)


def test_blur_ig_scores_and_delta(cnn):
    """``baseline_scores`` = f(most blurred image), ``scores`` = f(x) (read off the level-0 rows),
    ``delta`` = Σφ − (f(x) − f(z)); the Riemann sum converges as ``steps`` grows."""
    x = RNG.uniform(0, 1, (1, 10, 9, 3)).astype(np.float32)
    deltas = []
    for steps in (16, 512):
        expl = tfattr.BlurIntegratedGradients(cnn, max_sigma=8.0, steps=steps, batch_size=64).attribute(x, target=1)
        blurred = scipy.ndimage.gaussian_filter(x[0].astype(np.float64), [8.0, 8.0, 0], mode="constant")
        np.testing.assert_allclose(expl.baseline_scores, cnn(blurred[None].astype(np.float32)).numpy()[:, 1],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(expl.scores, cnn(x).numpy()[:, 1], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(expl.delta, expl.attributions.sum() - (expl.scores - expl.baseline_scores),
                                   rtol=1e-6, atol=1e-7)
        deltas.append(abs(float(expl.delta[0])))
    gap = abs(float(expl.scores[0] - expl.baseline_scores[0]))
    assert deltas[1] < deltas[0] and deltas[1] < 0.05 * gap


def test_blur_ig_schedule_and_inputs(cnn):
    np.testing.assert_allclose(blur_sigmas(50, 4), [0, 12.5, 25, 37.5, 50])
    np.testing.assert_allclose(blur_sigmas(50, 4, sqrt=True), np.sqrt([0, 12.5, 25, 37.5, 50]))
    inputs = keras.Input((6, 2))
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(InvalidInputError, match=r"\(N, H, W, C\).*Received: inputs.shape=\(1, 6, 2\)"):
        tfattr.BlurIntegratedGradients(flat, steps=2).attribute(np.zeros((1, 6, 2), np.float32), target=0)
