"""The CAM family (Grad-CAM++, LayerCAM, XGrad-CAM, HiResCAM, Eigen-CAM): each map equals a NumPy
computation from the layer's activations and gradients taken independently with a GradientTape;
the documented identities (HiResCAM = Grad-CAM under global average pooling and a linear head,
LayerCAM = HiResCAM where the gradient is positive, XGrad-CAM's conservation); batch invariance."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_float32_close, small_cnn

from tfattr import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from tfattr.errors import InvalidInputError


def cnn(seed=0, head="dense"):
    """8×8×3 → conv (relu) → conv "conv2" (relu) → head; every layer with random non-zero biases.
    ``head="dense"``: max pooling, flatten, dense tanh, dense (gradients vary over positions);
    ``"gap"``: global average pooling and one dense layer (gradients constant over positions)."""
    keras.utils.set_random_seed(seed)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=seed)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", bias_initializer=bias, name="conv1")(inputs)
    h = keras.layers.Conv2D(5, 3, activation="relu", bias_initializer=bias, name="conv2")(h)  # 6×6×5
    if head == "gap":
        out = keras.layers.Dense(4, bias_initializer=bias, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    else:
        h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(h))  # zero gradients off the maxima
        h = keras.layers.Dense(7, activation="tanh", bias_initializer=bias)(h)
        out = keras.layers.Dense(4, bias_initializer=bias, name="head")(h)
    return keras.Model(inputs, out)


IMAGES = np.random.default_rng(0).uniform(0, 1, size=(3, 8, 8, 3)).astype(np.float32)
TARGETS = np.array([1, 3, 0])


def tape_values(model, images, targets, layer="conv2"):
    """``(g, A, y)`` float64 from a sub-model returning the layer's output and the model's."""
    sub = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])
    x = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        activations, outputs = sub(x, training=False)
        scores = tf.gather(outputs, targets, axis=1, batch_dims=1)
    gradients = tape.gradient(scores, activations)
    return (gradients.numpy().astype(np.float64), activations.numpy().astype(np.float64),
            scores.numpy().astype(np.float64))


def numpy_map(method, g, a, y, convention="pytorch-grad-cam"):
    """Each method's raw map ``(N, h, w)`` written out from the papers / peers' code."""
    if method == "gradcam++" and convention == "pytorch-grad-cam":  # grad_cam_plusplus.py, channels last
        sum_a = a.sum(axis=(1, 2))[:, None, None, :]
        aij = g**2 / (2 * g**2 + sum_a * g**3 + 1e-6)
        aij = np.where(g != 0, aij, 0)
        w = (np.maximum(g, 0) * aij).sum(axis=(1, 2))
        return np.einsum("nk,nhwk->nhw", w, a)
    if method == "gradcam++":  # tf-keras-vis gradcam_plus_plus.py with exp(score)
        s = np.exp(y)[:, None, None, None]
        first, second, third = s * g, s * g**2, s * g**3
        global_sum = a.sum(axis=(1, 2), keepdims=True)
        denom = second * 2.0 + third * global_sum
        denom = denom + (second == 0.0)
        alphas = second / denom
        norm = alphas.sum(axis=(1, 2), keepdims=True)
        alphas = alphas / (norm + (norm == 0.0))
        w = (np.maximum(first, 0) * alphas).sum(axis=(1, 2), keepdims=True)
        return (w * a).sum(axis=-1)
    if method == "layercam":
        return (np.maximum(g, 0) * a).sum(axis=-1)
    if method == "xgradcam":
        sums = a.sum(axis=(1, 2))
        assert (sums == 0).any()  # a dead channel: weight 0 (pytorch-grad-cam: 0 / (0 + 1e-7))
        w = np.divide((g * a).sum(axis=(1, 2)), sums, out=np.zeros_like(sums), where=sums != 0)
        return np.einsum("nk,nhwk->nhw", w, a)
    if method == "hirescam":
        return (g * a).sum(axis=-1)
    if method == "eigencam":  # pytorch-grad-cam's get_2d_projection, one example at a time, then the sign rule
        maps = []
        for example in a:
            m = example.reshape(-1, example.shape[-1])
            m = m - m.mean(axis=0)
            _, _, vt = np.linalg.svd(m, full_matrices=True)
            p = m @ vt[0]
            maps.append((-p if abs(p.min()) > abs(p.max()) else p).reshape(example.shape[:2]))
        return np.stack(maps)
    raise AssertionError(method)


CLASSES = {"gradcam++": GradCAMPlusPlus, "layercam": LayerCAM, "xgradcam": XGradCAM, "hirescam": HiResCAM,
           "eigencam": EigenCAM}
CASES = [("gradcam++", {}), ("gradcam++", {"convention": "tf-keras-vis"}), ("layercam", {}), ("xgradcam", {}),
         ("hirescam", {}), ("eigencam", {})]


@pytest.fixture(scope="module")
def model():
    return cnn()


@pytest.mark.parametrize("method,options", CASES, ids=lambda v: v if isinstance(v, str) else "-".join(v.values()))
def test_each_cam_equals_numpy_from_the_tape_activations_and_gradients(model, method, options):
    g, a, y = tape_values(model, IMAGES, TARGETS)
    assert (g > 0).any() and (g < 0).any() and (g == 0).any() and (a == 0).any()  # signed, zero; dead units
    expected = numpy_map(method, g, a, y, **options)
    cls = CLASSES[method]
    signed = cls(model, layer="conv2", relu=False, upsample=False, batch_size=8, **options).attribute(IMAGES, TARGETS)
    assert_float32_close(np.asarray(signed), expected)
    assert (expected > 0).any()
    if method in ("xgradcam", "hirescam", "eigencam"):  # signed maps: the ReLU below does something
        assert (expected < 0).any()
    np.testing.assert_array_equal(signed.info["activations"].shape, a.shape)
    # default options: ReLU, then bilinear upsampling (half-pixel centres) to 8×8
    default = cls(model, layer="conv2", batch_size=8, **options).attribute(IMAGES, TARGETS)
    upsampled = tf.image.resize(np.maximum(expected, 0)[..., None], (8, 8), method="bilinear").numpy()[..., 0]
    assert default.attributions.shape == (3, 8, 8)
    assert_float32_close(np.asarray(default), upsampled)
    normed = np.asarray(cls(model, layer="conv2", normalize=True, **options).attribute(IMAGES, TARGETS))
    peak = upsampled.max(axis=(1, 2), keepdims=True)  # 0 for a map the ReLU zeroes: it stays 0
    np.testing.assert_allclose(normed.max(axis=(1, 2)), (peak[:, 0, 0] > 0).astype(float), rtol=1e-6)
    assert_float32_close(normed, np.divide(upsampled, peak, out=np.zeros_like(upsampled), where=peak > 0))


def test_gradcam_plus_plus_conventions_differ_and_tf_keras_vis_scales_by_exp_score(model):
    g, a, y = tape_values(model, IMAGES, TARGETS)
    torch_style = GradCAMPlusPlus(model, layer="conv2", upsample=False).attribute(IMAGES, TARGETS)
    keras_style = GradCAMPlusPlus(model, layer="conv2", upsample=False, convention="tf-keras-vis").attribute(
        IMAGES, TARGETS)
    # the tf-keras-vis weights are the α-normalised ones times exp(y): divide it out and compare with NumPy
    alpha = keras_style.info["alpha"]
    np.testing.assert_allclose(alpha.sum(axis=(1, 2))[(g != 0).any(axis=(1, 2))], 1.0, rtol=1e-9)
    unscaled = keras_style.info["weights"] / np.exp(y)[:, None]
    np.testing.assert_allclose(unscaled, (np.maximum(g, 0) * alpha).sum(axis=(1, 2)), rtol=1e-5)  # float32 y
    assert not np.allclose(np.asarray(torch_style), np.asarray(keras_style), rtol=0.1)


def test_gradcam_plus_plus_tf_keras_vis_overflow_is_an_error_unless_normalised():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(h)))
    dense.set_weights([np.ones((3, 2)), np.array([800.0, 0.0])])  # class 0's score is above 709
    x = IMAGES[:2, :6, :6]
    with pytest.raises(InvalidInputError, match="exp\\(score\\).*Received: score="):
        GradCAMPlusPlus(model, layer="conv", convention="tf-keras-vis").attribute(x, target=0)
    normed = GradCAMPlusPlus(model, layer="conv", convention="tf-keras-vis", normalize=True).attribute(x, target=0)
    reference = GradCAMPlusPlus(model, layer="conv", normalize=True).attribute(x, target=0)
    assert np.isfinite(np.asarray(normed)).all() and np.asarray(normed).max() == pytest.approx(1.0)
    assert np.asarray(reference).max() == pytest.approx(1.0)


@pytest.mark.parametrize("relu", [False, True])
def test_hirescam_and_xgradcam_equal_gradcam_under_global_average_pooling_and_a_linear_head(relu):
    """g^k_ij = W_kc / (h·w) at every position: HiResCAM's Σ_k g ⊙ A is Grad-CAM's Σ_k mean(g) A^k
    (no area factor: Grad-CAM's weights are the mean, not the sum, of the gradient), and XGrad-CAM's
    weights Σ_ij (A_ij / Σ A) g reduce to the constant g (a dead ReLU channel adds 0 to both maps)."""
    model = cnn(seed=1, head="gap")
    g, _, _ = tape_values(model, IMAGES, TARGETS)
    kernel = model.get_layer("head").get_weights()[0]
    np.testing.assert_allclose(g, np.broadcast_to(kernel[:, TARGETS].T[:, None, None, :] / 36, g.shape), rtol=1e-6)
    for upsample in (False, True):
        hires = HiResCAM(model, layer="conv2", relu=relu, upsample=upsample).attribute(IMAGES, TARGETS)
        grad = GradCAM(model, layer="conv2", relu=relu, upsample=upsample).attribute(IMAGES, TARGETS)
        assert_float32_close(np.asarray(hires), np.asarray(grad), relative=1e-5)
        xgrad = XGradCAM(model, layer="conv2", relu=relu, upsample=upsample).attribute(IMAGES, TARGETS)
        assert_float32_close(np.asarray(xgrad), np.asarray(grad), relative=1e-5)


def test_layercam_equals_hirescam_where_the_gradient_is_positive():
    model = cnn(seed=2, head="gap")
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([np.abs(kernel) + 0.01, bias])  # ∂y/∂A = W_kc / 36 > 0 everywhere
    g, _, _ = tape_values(model, IMAGES, TARGETS)
    assert (g > 0).all()
    layer = np.asarray(LayerCAM(model, layer="conv2", relu=False).attribute(IMAGES, TARGETS))
    hires = np.asarray(HiResCAM(model, layer="conv2", relu=False).attribute(IMAGES, TARGETS))
    np.testing.assert_array_equal(layer, hires)
    # and LayerCAM differs from HiResCAM on the model with signed gradients
    signed = cnn()
    assert not np.allclose(np.asarray(LayerCAM(signed, layer="conv2", relu=False).attribute(IMAGES, TARGETS)),
                           np.asarray(HiResCAM(signed, layer="conv2", relu=False).attribute(IMAGES, TARGETS)))


def test_xgradcam_conservation_on_a_bias_free_relu_head():
    """A head positively homogeneous in A (ReLU and linear layers without bias): y = Σ g ⊙ A
    (Euler), and XGrad-CAM's map sums to it: Σ_ij Σ_k w_k A^k_ij = Σ_k w_k Σ_ij A^k_ij = Σ g ⊙ A."""
    keras.utils.set_random_seed(4)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=4)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(5, 3, activation="relu", bias_initializer=bias, name="conv2")(inputs)
    h = keras.layers.Dense(6, activation="relu", use_bias=False)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, keras.layers.Dense(4, use_bias=False)(h))
    _, _, y = tape_values(model, IMAGES, TARGETS)
    expl = XGradCAM(model, layer="conv2", relu=False, upsample=False).attribute(IMAGES, TARGETS)
    np.testing.assert_allclose(np.asarray(expl).sum(axis=(1, 2)), y, rtol=1e-4, atol=1e-5 * np.abs(y).max())


def test_eigencam_is_target_independent_and_reports_its_component(model):
    first = EigenCAM(model, layer="conv2", upsample=False, relu=False).attribute(IMAGES, target=0)
    second = EigenCAM(model, layer="conv2", upsample=False, relu=False).attribute(IMAGES, target=2)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    a = first.info["activations"]
    centred = a.reshape(3, -1, 5) - a.reshape(3, -1, 5).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(np.einsum("npk,nk->np", centred, first.info["component"]).reshape(3, 6, 6),
                               np.asarray(first), rtol=1e-6, atol=1e-7)  # attributions are float32
    np.testing.assert_allclose(np.linalg.norm(first.info["component"], axis=1), 1.0, rtol=1e-10)
    for m in np.asarray(first):  # the sign rule: the largest-magnitude value is positive
        assert m.max() >= -m.min()
    singular = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(first.info["explained_variance"], singular[:, 0] ** 2 / (singular**2).sum(axis=1))
    # center=False: the SVD of the raw positions × channels matrix, up to the same sign rule
    raw = np.asarray(EigenCAM(model, layer="conv2", upsample=False, relu=False, center=False).attribute(IMAGES))
    for m, example in zip(raw, a.reshape(3, -1, 5)):
        p = example @ np.linalg.svd(example)[2][0]
        np.testing.assert_allclose(m.ravel(), -p if abs(p.min()) > abs(p.max()) else p, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("method,options", CASES, ids=lambda v: v if isinstance(v, str) else "-".join(v.values()))
def test_one_example_alone_equals_it_in_a_batch(model, method, options):
    cls = CLASSES[method]
    batch = cls(model, layer="conv2", relu=False, batch_size=2, **options).attribute(IMAGES, TARGETS)
    for i in range(3):
        alone = cls(model, layer="conv2", relu=False, batch_size=2, **options).attribute(IMAGES[i], int(TARGETS[i]))
        assert_float32_close(np.asarray(alone)[None], np.asarray(batch)[i : i + 1])


def test_target_none_is_the_top1_class_in_the_same_pass(model):
    top1 = model.predict(IMAGES, verbose=0).argmax(axis=1)
    for cls in (GradCAMPlusPlus, LayerCAM, XGradCAM, HiResCAM):
        implicit = cls(model, layer="conv2", batch_size=8).attribute(IMAGES)
        explicit = cls(model, layer="conv2", batch_size=8).attribute(IMAGES, top1)
        np.testing.assert_array_equal(implicit.targets, top1)
        np.testing.assert_allclose(np.asarray(implicit), np.asarray(explicit), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cls", list(CLASSES.values()), ids=lambda c: c.__name__)
def test_one_model_call_per_chunk_with_the_top1_class_in_the_pass(cls):
    model = small_cnn("relu", counter=True)
    counter = model.get_layer("counter").calls
    images = np.random.default_rng(5).uniform(0, 1, size=(5, 16, 16, 3)).astype(np.float32)
    cls(model, batch_size=2).attribute(images[:1])  # the default layer is found and the chunk traced
    before = int(counter.numpy())
    expl = cls(model, batch_size=2).attribute(images)
    assert int(counter.numpy()) - before == 3  # ceil(5 / 2) chunks, no forward pass for the targets
    assert expl.gradients == (0 if cls is EigenCAM else 5)  # Eigen-CAM: forward passes only
    np.testing.assert_array_equal(expl.targets, model.predict(images, verbose=0).argmax(axis=1))


def test_gradcam_plus_plus_keeps_pytorch_grad_cams_eps_where_gradients_are_small():
    """With g ~ 1e-4 (g² ≪ 1e-6), pytorch-grad-cam's + 1e-6 in α's denominator changes the map:
    the default convention reproduces it, not the eps-free formula."""
    model = cnn(seed=5)
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 1e-3, bias])
    g, a, y = tape_values(model, IMAGES, TARGETS)
    assert np.abs(g).max() < 1e-3
    mine = np.asarray(GradCAMPlusPlus(model, layer="conv2", upsample=False).attribute(IMAGES, TARGETS))
    assert_float32_close(mine, numpy_map("gradcam++", g, a, y))
    g2 = g * g
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(g != 0, g2 / (2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g2 * g), 0.0)
    without_eps = np.maximum(np.einsum("nk,nhwk->nhw", (np.maximum(g, 0) * alpha).sum(axis=(1, 2)), a), 0)
    assert np.abs(mine - without_eps).max() > 0.5 * np.abs(without_eps).max()


@pytest.mark.parametrize("cls", [GradCAMPlusPlus, LayerCAM, XGradCAM, HiResCAM], ids=lambda c: c.__name__)
def test_output_picks_the_explained_head_of_a_model_with_two(cls):
    base = cnn(seed=6)
    keras.utils.set_random_seed(7)
    other = keras.layers.Dense(2, name="other")(keras.layers.Flatten()(base.get_layer("conv2").output))
    two = keras.Model(base.inputs, [other, base.outputs[0]])
    both = cls(two, layer="conv2", output=1, relu=False).attribute(IMAGES, TARGETS)
    alone = cls(base, layer="conv2", relu=False).attribute(IMAGES, TARGETS)
    assert_float32_close(np.asarray(both), np.asarray(alone))
    g, a, y = tape_values(base, IMAGES, TARGETS)
    np.testing.assert_allclose(both.scores, y, rtol=1e-5)
