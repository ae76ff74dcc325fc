"""Score-CAM and Ablation-CAM: each map equals a NumPy computation from activations taken with a
sub-model and model scores of masked inputs / ablated activations run eagerly here; Ablation-CAM's
analytic weights under global average pooling and a linear head; Faster Score-CAM's channel
selection; batch and chunk-size invariance; target=None; output=; a skip connection around the
layer; the zero-score error."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_float32_close, small_cnn
from test_cams import IMAGES, TARGETS, cnn

from tfattr import AblationCAM, ScoreCAM
from tfattr.errors import InvalidInputError

CHANNELS = 5  # conv2 of test_cams.cnn: 6×6×5


@pytest.fixture(scope="module")
def model():
    return cnn()


def layer_activations(model, images, layer="conv2"):
    sub = keras.Model(model.inputs, model.get_layer(layer).output)
    return sub(tf.convert_to_tensor(images), training=False).numpy().astype(np.float64)


def class_scores(model, images, targets):
    outputs = np.asarray(model(tf.convert_to_tensor(images, tf.float32), training=False), np.float64)
    return outputs[np.arange(len(outputs)), targets]


def score_cam_numpy(model, images, targets, weighting="softmax", channels=None):
    """The raw map ``Σ_k w_k A^k`` (no ReLU), the weights and the masked scores, written out:
    masks ``s(Up(A^k))`` (bilinear, half-pixel centres; min–max), ``x ⊙ M_k`` through the model."""
    a = layer_activations(model, images)
    num = len(images)
    channels = np.tile(np.arange(CHANNELS), (num, 1)) if channels is None else channels
    raws, weights, all_scores = [], [], []
    for n in range(num):
        masked = []
        for k in channels[n]:
            up = tf.image.resize(a[n, :, :, k][None, ..., None].astype(np.float32), images.shape[1:3],
                                 method="bilinear").numpy()[0, ..., 0].astype(np.float64)
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else np.zeros_like(up)
            masked.append(images[n] * mask[..., None])
        scores = class_scores(model, np.stack(masked), np.full(len(masked), targets[n]))
        if weighting == "softmax":
            w = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        elif weighting == "increment":  # minus the score of the black image
            w = scores - class_scores(model, np.zeros_like(images[:1]), targets[n : n + 1])[0]
        else:
            w = scores
        raws.append(np.einsum("k,hwk->hw", w, a[n][..., channels[n]]))
        weights.append(w)
        all_scores.append(scores)
    return np.stack(raws), np.stack(weights), np.stack(all_scores)


def head_after(model, layer="conv2"):
    """The layers after ``layer`` of a chain model, as one function of the layer's activations."""
    layers = model.layers[[lay.name for lay in model.layers].index(layer) + 1:]

    def head(h):
        for lay in layers:
            h = lay(h)
        return np.asarray(h, np.float64)
    return head


def ablation_cam_numpy(model, images, targets, value=0.0):
    a = layer_activations(model, images)
    head = head_after(model)
    y = class_scores(model, images, targets)
    weights, ablated_scores = [], []
    for n in range(len(images)):
        ablated = np.repeat(a[n][None], CHANNELS, axis=0)
        for k in range(CHANNELS):
            ablated[k, :, :, k] = value
        yk = head(tf.convert_to_tensor(ablated, tf.float32))[:, targets[n]]
        weights.append((y[n] - yk) / y[n])
        ablated_scores.append(yk)
    weights = np.stack(weights)
    return np.einsum("nk,nhwk->nhw", weights, a), weights, np.stack(ablated_scores)


@pytest.mark.parametrize("weighting", ["softmax", "score", "increment"])
def test_score_cam_equals_numpy_from_masked_inputs_run_here(model, weighting):
    raw, weights, scores = score_cam_numpy(model, IMAGES, TARGETS, weighting)
    signed = ScoreCAM(model, layer="conv2", relu=False, upsample=False, weighting=weighting,
                      batch_size=4).attribute(IMAGES, TARGETS)
    assert_float32_close(signed.info["channel_scores"], scores)
    assert_float32_close(signed.info["weights"], weights)
    assert_float32_close(np.asarray(signed), raw)
    if weighting == "softmax":  # a distribution over channels
        np.testing.assert_allclose(signed.info["weights"].sum(axis=1), 1.0, rtol=1e-12)
    assert np.ptp(scores, axis=1).min() > 1e-3  # the masks change the scores: the weights are not flat
    if weighting == "increment":
        black = class_scores(model, np.zeros_like(IMAGES), TARGETS)
        assert_float32_close(signed.info["baseline_score"], black)
        assert np.abs(black).min() > 1e-2  # the subtraction matters
    # default options: ReLU, then bilinear upsampling to 8×8 (Grad-CAM's)
    default = ScoreCAM(model, layer="conv2", weighting=weighting, batch_size=4).attribute(IMAGES, TARGETS)
    expected = tf.image.resize(np.maximum(raw, 0)[..., None], (8, 8), method="bilinear").numpy()[..., 0]
    assert_float32_close(np.asarray(default), expected)
    # one pass to the layer (3 examples ≤ 4), then ceil(3·5 / 4) chunks of masked inputs (3·6 rows
    # with the black image of "increment"); no gradient
    rows = 18 if weighting == "increment" else 15
    assert signed.info["forward_rows"] == rows and signed.info["forward_passes"] == 1 + -(-rows // 4)
    assert signed.gradients == 0


def test_score_cam_top_k_keeps_the_channels_of_largest_spread(model):
    a = layer_activations(model, IMAGES)
    spread = a.std(axis=(1, 2))
    chosen = np.sort(np.argsort(-spread, axis=1)[:, :2], axis=1)
    assert (chosen != [0, 1]).any()  # not the first channels
    raw, weights, _ = score_cam_numpy(model, IMAGES, TARGETS, channels=chosen)
    fast = ScoreCAM(model, layer="conv2", top_k=2, relu=False, upsample=False, batch_size=4).attribute(IMAGES, TARGETS)
    np.testing.assert_array_equal(fast.info["channels"], chosen)
    assert_float32_close(fast.info["weights"], weights)
    assert_float32_close(np.asarray(fast), raw)
    assert fast.info["forward_rows"] == 6
    full = ScoreCAM(model, layer="conv2", relu=False, batch_size=4).attribute(IMAGES, TARGETS)
    every = ScoreCAM(model, layer="conv2", relu=False, top_k=CHANNELS, batch_size=4).attribute(IMAGES, TARGETS)
    np.testing.assert_array_equal(np.asarray(every), np.asarray(full))
    with pytest.raises(InvalidInputError, match="top_k"):
        ScoreCAM(model, layer="conv2", top_k=CHANNELS + 1).attribute(IMAGES, TARGETS)


def test_ablation_cam_equals_numpy_with_the_head_run_on_ablated_activations(model):
    raw, weights, ablated = ablation_cam_numpy(model, IMAGES, TARGETS)
    signed = AblationCAM(model, layer="conv2", relu=False, upsample=False, batch_size=4).attribute(IMAGES, TARGETS)
    assert_float32_close(signed.info["channel_scores"], ablated)
    assert_float32_close(signed.info["weights"], weights)
    assert_float32_close(np.asarray(signed), raw)
    assert (raw > 0).any() and (raw < 0).any()
    value = AblationCAM(model, layer="conv2", relu=False, upsample=False, ablation_value=-2.0).attribute(IMAGES,
                                                                                                        TARGETS)
    raw_v, weights_v, _ = ablation_cam_numpy(model, IMAGES, TARGETS, value=-2.0)
    assert_float32_close(value.info["weights"], weights_v)
    assert_float32_close(np.asarray(value), raw_v)


def test_ablation_cam_weights_are_analytic_under_global_average_pooling_and_a_linear_head():
    """``y = Σ_k W_kc mean(A^k) + b_c``; ablating channel k removes its term, so
    ``w_k = (y − y_k)/y = W_kc mean(A^k) / y`` (the bias stays in y)."""
    gap = cnn(seed=3, head="gap")
    kernel, bias = (w.astype(np.float64) for w in gap.get_layer("head").get_weights())
    assert np.abs(bias).min() > 0
    a = layer_activations(gap, IMAGES)
    means = a.mean(axis=(1, 2))  # (N, K)
    y = (means * kernel[:, TARGETS].T).sum(axis=1) + bias[TARGETS]
    np.testing.assert_allclose(class_scores(gap, IMAGES, TARGETS), y, rtol=1e-5)
    expected = kernel[:, TARGETS].T * means / y[:, None]
    expl = AblationCAM(gap, layer="conv2", relu=False, upsample=False).attribute(IMAGES, TARGETS)
    assert_float32_close(expl.info["weights"], expected)
    assert_float32_close(np.asarray(expl), np.einsum("nk,nhwk->nhw", expected, a))


def test_ablation_rows_keep_the_inputs_that_bypass_the_layer():
    """A skip path from the input around the layer: the ablated rows still see the real input."""
    keras.utils.set_random_seed(4)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=4)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", bias_initializer=bias)(inputs)
    h = keras.layers.Conv2D(CHANNELS, 3, activation="relu", bias_initializer=bias, name="conv2")(h)
    main = keras.layers.Dense(4, bias_initializer=bias, name="main")(keras.layers.Flatten()(h))
    skip = keras.layers.Dense(4, bias_initializer=bias, name="skip")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Add()([main, skip]))
    a = layer_activations(model, IMAGES)
    bypass = np.asarray(model.get_layer("skip")(IMAGES.reshape(3, -1)), np.float64)
    y = class_scores(model, IMAGES, TARGETS)
    expected = []
    for n in range(3):
        ablated = np.repeat(a[n][None], CHANNELS, axis=0)
        for k in range(CHANNELS):
            ablated[k, :, :, k] = 0.0
        yk = np.asarray(model.get_layer("main")(ablated.reshape(CHANNELS, -1).astype(np.float32)), np.float64)
        expected.append((y[n] - (yk + bypass[n])[:, TARGETS[n]]) / y[n])
    expl = AblationCAM(model, layer="conv2", relu=False, upsample=False, batch_size=4).attribute(IMAGES, TARGETS)
    assert_float32_close(expl.info["weights"], np.stack(expected))


@pytest.mark.parametrize("cls", [ScoreCAM, AblationCAM], ids=lambda c: c.__name__)
def test_batch_and_chunk_size_invariance(model, cls):
    reference = cls(model, layer="conv2", relu=False, batch_size=4).attribute(IMAGES, TARGETS)
    for batch_size in (1, 7, "auto"):
        other = cls(model, layer="conv2", relu=False, batch_size=batch_size).attribute(IMAGES, TARGETS)
        assert_float32_close(np.asarray(other), np.asarray(reference))
    for i in range(3):
        alone = cls(model, layer="conv2", relu=False, batch_size=3).attribute(IMAGES[i], int(TARGETS[i]))
        assert_float32_close(np.asarray(alone)[None], np.asarray(reference)[i : i + 1])


@pytest.mark.parametrize("cls", [ScoreCAM, AblationCAM], ids=lambda c: c.__name__)
def test_target_none_is_the_top1_class_and_a_callable_target_scores_rows(model, cls):
    top1 = model.predict(IMAGES, verbose=0).argmax(axis=1)
    implicit = cls(model, layer="conv2", batch_size=8).attribute(IMAGES)
    explicit = cls(model, layer="conv2", batch_size=8).attribute(IMAGES, top1)
    np.testing.assert_array_equal(implicit.targets, top1)
    np.testing.assert_allclose(np.asarray(implicit), np.asarray(explicit), rtol=1e-6, atol=1e-9)
    by_index = cls(model, layer="conv2", relu=False, batch_size=8).attribute(IMAGES, 2)
    by_callable = cls(model, layer="conv2", relu=False, batch_size=8).attribute(IMAGES, lambda out: out[:, 2])
    assert_float32_close(np.asarray(by_callable), np.asarray(by_index))


@pytest.mark.parametrize("cls", [ScoreCAM, AblationCAM], ids=lambda c: c.__name__)
def test_output_picks_the_explained_head_of_a_model_with_two(cls):
    base = cnn(seed=6)
    keras.utils.set_random_seed(7)
    other = keras.layers.Dense(2, name="other")(keras.layers.Flatten()(base.get_layer("conv2").output))
    two = keras.Model(base.inputs, [other, base.outputs[0]])
    both = cls(two, layer="conv2", output=1, relu=False).attribute(IMAGES, TARGETS)
    alone = cls(base, layer="conv2", relu=False).attribute(IMAGES, TARGETS)
    assert_float32_close(np.asarray(both), np.asarray(alone))
    assert_float32_close(both.info["weights"], alone.info["weights"])


def test_ablation_cam_zero_score_is_an_error(model):
    with pytest.raises(InvalidInputError, match="Received: scores"):
        AblationCAM(model, layer="conv2").attribute(IMAGES, lambda out: out[:, 0] * 0.0)


@pytest.mark.parametrize("cls", [ScoreCAM, AblationCAM], ids=lambda c: c.__name__)
def test_model_calls_are_one_pass_to_the_layer_then_the_chunks_of_rows(cls):
    """5 examples, batch_size=2: ceil(5/2) = 3 passes for A, y and the top-1 class (no separate
    pass for the targets), then ceil(5·8/2) = 20 chunks of rows (8 channels in the default layer)."""
    model = small_cnn("relu", counter=True)
    counter = model.get_layer("counter").calls
    images = np.random.default_rng(5).uniform(0, 1, size=(5, 16, 16, 3)).astype(np.float32)
    cls(model, batch_size=2).attribute(images[:1])  # the default layer is found and the chunks traced
    before = int(counter.numpy())
    expl = cls(model, batch_size=2).attribute(images)
    assert int(counter.numpy()) - before == 3 + 20
    assert expl.info["forward_passes"] == 23 and expl.gradients == 0
    np.testing.assert_array_equal(expl.targets, model.predict(images, verbose=0).argmax(axis=1))


def test_score_cam_equals_tf_keras_vis_on_a_layer_at_the_input_resolution():
    """tf-keras-vis 0.8.7's ``Scorecam`` (no ReLU, no expansion, no normalisation) weighs by the
    class probability (it applies a softmax over the classes to the logits): tfattr's
    ``weighting="score"`` on the same network ending in a softmax. At the input's resolution both
    upsamplings are the identity, so the masks agree (the peer's ``+ 1e-7`` in the min–max range
    moves them by ≤ 1e-7 relative). ``top_k`` equals the peer's ``max_N`` per example (the peer takes
    the union of a batch's selections, so one example at a time)."""
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    keras.utils.set_random_seed(0)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", bias_initializer=bias)(inputs)
    h = keras.layers.Conv2D(CHANNELS, 3, padding="same", activation="relu", bias_initializer=bias, name="conv2")(h)
    logits = keras.layers.Dense(4, bias_initializer=bias)(keras.layers.Flatten()(h))
    model, probabilities = keras.Model(inputs, logits), keras.Model(inputs, keras.layers.Softmax()(logits))
    targets = [int(t) for t in TARGETS]
    options = dict(activation_modifier=None, expand_cam=False, normalize_cam=False, batch_size=4)
    theirs = np.asarray(Scorecam(model)(CategoricalScore(targets), IMAGES, penultimate_layer="conv2", **options))
    ours = ScoreCAM(probabilities, layer="conv2", weighting="score", relu=False, upsample=False).attribute(IMAGES,
                                                                                                        targets)
    assert_float32_close(np.asarray(ours), theirs)
    assert np.ptp(theirs, axis=(1, 2)).min() > 0  # maps that vary
    for n in range(3):
        theirs_k = np.asarray(Scorecam(model)(CategoricalScore([targets[n]]), IMAGES[n : n + 1],
                                              penultimate_layer="conv2", max_N=2, **options))
        ours_k = ScoreCAM(probabilities, layer="conv2", weighting="score", relu=False, upsample=False,
                          top_k=2).attribute(IMAGES[n : n + 1], targets[n])
        assert_float32_close(np.asarray(ours_k), theirs_k)
