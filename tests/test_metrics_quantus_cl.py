"""Complexity, localisation, pixel flipping and region perturbation: analytic cases and equality with
Quantus 0.6 on the same model, inputs, maps and settings.

Quantus runs on channel-first data internally: ``a_batch`` and the segmentation masks ``s_batch`` go
in as ``(N, 1, H, W)`` even though the images are channel-last (``channel_first=False``). The maps
below have well-separated values (a permutation of ``0 … H·W−1``, spacing ``1/(H·W)`` of the
maximum, far above the ``2**-14`` tie resolution) so that NumPy's unstable ``argsort`` in Quantus
and tfattr's stable ranking give the same order. Model scores are float32 forward passes of the same
points in other batches: they agree to a few float32 ulps, hence ``rtol=1e-5`` on scores.
"""

import warnings

import numpy as np
import pytest
import quantus
from conftest import small_cnn

import tfattr
from tfattr import metrics
from tfattr.errors import InvalidInputError, InvalidTypeError
from tfattr.metrics.flipping import region_grid

N, SIZE, C = 3, 12, 3


@pytest.fixture(scope="module")
def cnn():
    return small_cnn("relu", size=SIZE, seed=4)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).uniform(0, 1, size=(N, SIZE, SIZE, C)).astype(np.float32)


@pytest.fixture(scope="module")
def maps():
    """(N, H, W) signed maps with distinct, well-separated values and absolute values (the offset
    47.8 is not a half-integer, so |k − 47.8| never ties: gaps ≥ 0.4/144 of the largest ≈ 96/144)."""
    rng = np.random.default_rng(6)
    values = np.stack([rng.permutation(SIZE * SIZE) for _ in range(N)]).astype(np.float64)
    return ((values - 47.8) / (SIZE * SIZE)).reshape(N, SIZE, SIZE).astype(np.float32)


@pytest.fixture(scope="module")
def masks():
    out = np.zeros((N, SIZE, SIZE), bool)
    out[0, 2:7, 3:9] = True
    out[1, 0:4, 0:12] = True
    out[2, 5:11, 6:8] = True
    return out


def _quantus(metric, model, x, maps, masks=None, y=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(metric(model=model, x_batch=x, y_batch=np.zeros(len(x), int) if y is None else y,
                                 a_batch=maps[:, None], s_batch=None if masks is None else masks[:, None].astype(float),
                                 channel_first=False), dtype=np.float64)


# -- complexity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("absolute", [True, False])
def test_complexity_family_equals_quantus(images, maps, absolute):
    positive = maps if absolute else maps - maps.min()  # Quantus's abs=False needs non-negative maps too
    q = dict(abs=absolute, normalise=True, disable_warnings=True)
    # Quantus adds 1e-7 to each value of maps normalised to max 1 (Σa ~ 70): relative ~2e-7
    np.testing.assert_allclose(metrics.sparseness(positive, absolute=absolute),
                               _quantus(quantus.Sparseness(**q), None, images, positive), rtol=1e-6)
    np.testing.assert_allclose(metrics.complexity(positive, absolute=absolute),
                               _quantus(quantus.Complexity(**q), None, images, positive), rtol=1e-6)
    for eps in (1e-5, 0.3, 0.7):
        ours = metrics.effective_complexity(positive, eps=eps, absolute=absolute, normalise="batch")
        np.testing.assert_array_equal(ours, _quantus(quantus.EffectiveComplexity(eps=eps, **q), None, images,
                                                     positive))
    # per-image normalisation is Quantus's on one image at a time
    ours = metrics.effective_complexity(positive, eps=0.5, absolute=absolute, normalise="max")
    theirs = [_quantus(quantus.EffectiveComplexity(eps=0.5, **q), None, images[n:n + 1], positive[n:n + 1])[0]
              for n in range(N)]
    np.testing.assert_array_equal(ours, theirs)


def test_complexity_analytic_values():
    uniform = np.full((2, 5, 4), 0.3)
    np.testing.assert_allclose(metrics.sparseness(uniform), 0.0, atol=1e-15)
    np.testing.assert_allclose(metrics.complexity(uniform), np.log(20), rtol=1e-14)
    assert metrics.effective_complexity(uniform).tolist() == [20, 20]
    one = np.zeros((5, 4))
    one[2, 1] = -7.0  # one pixel holds everything (absolute value)
    np.testing.assert_allclose(metrics.sparseness(one), 1 - 1 / 20, rtol=1e-14)
    np.testing.assert_allclose(metrics.complexity(one), 0.0, atol=1e-15)
    assert metrics.effective_complexity(one).tolist() == [1]
    # half the pixels at 1, half at 0: Gini 1/2, entropy log(10)
    half = np.zeros((1, 4, 5))
    half[0, :2] = 1.0
    np.testing.assert_allclose(metrics.sparseness(half), 0.5, rtol=1e-14)
    np.testing.assert_allclose(metrics.complexity(half), np.log(10), rtol=1e-14)
    # channel sum before |·|; all-zero maps: Gini 0, entropy undefined
    assert metrics.sparseness(np.zeros((1, 3, 3, 2)))[0] == 0.0
    assert np.isnan(metrics.complexity(np.zeros((1, 3, 3))))[0]
    attributions = np.stack([np.ones((3, 3)), -np.ones((3, 3))], axis=-1)[None]  # channels cancel
    assert metrics.effective_complexity(attributions, normalise=None).tolist() == [0]


def test_complexity_errors_name_the_argument():
    with pytest.raises(InvalidInputError, match=r"`normalise`.*Received: normalise=True"):
        metrics.sparseness(np.ones((1, 3, 3)), normalise=True)
    with pytest.raises(InvalidInputError, match=r"`attributions`.*non-negative.*Received: map\[0, 0, 1\]=-1.0"):
        metrics.complexity(np.array([[[1.0, -1.0]]]), absolute=False)
    with pytest.raises(InvalidInputError, match=r"`eps`.*Received: eps=-0.1"):
        metrics.effective_complexity(np.ones((1, 3, 3)), eps=-0.1)
    with pytest.raises(InvalidInputError, match=r"`absolute`.*Received: absolute='yes'"):
        metrics.sparseness(np.ones((1, 3, 3)), absolute="yes")
    with pytest.raises(InvalidTypeError, match="Received: type\\(attributions\\)='str'"):
        metrics.complexity("map")


# -- localisation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("absolute", [False, True])
def test_localisation_family_equals_quantus(images, maps, masks, absolute):
    q = dict(abs=absolute, normalise=True, disable_warnings=True)
    cases = [
        (metrics.relevance_mass_accuracy(maps, masks, absolute=absolute), quantus.RelevanceMassAccuracy(**q)),
        (metrics.relevance_rank_accuracy(maps, masks, absolute=absolute), quantus.RelevanceRankAccuracy(**q)),
        (metrics.top_k_intersection(maps, masks, k=20, absolute=absolute), quantus.TopKIntersection(k=20, **q)),
        (metrics.top_k_intersection(maps, masks, k=30, concept_influence=True, absolute=absolute),
         quantus.TopKIntersection(k=30, concept_influence=True, **q)),
        (metrics.auc(maps, masks, absolute=absolute), quantus.AUC(**q)),
        (metrics.attribution_localisation(maps, masks, positive=False, absolute=True),
         quantus.AttributionLocalisation(**q) if absolute else quantus.AttributionLocalisation(
             abs=True, normalise=True, disable_warnings=True)),
        (metrics.attribution_localisation(maps, masks, positive=True, absolute=absolute),
         quantus.AttributionLocalisation(positive_attributions=True, **q)),
    ]
    for ours, metric in cases:
        theirs = _quantus(metric, None, images, maps, masks)
        # Quantus's normalise divides by the batch maximum and AttributionLocalisation adds 1e-9 to R_tot
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, err_msg=type(metric).__name__)


def test_auc_equals_quantus_with_tied_values(images, masks):
    """Maps with many exact ties (5 levels): ties count ½ as in scikit-learn's ROC curve."""
    tied = np.random.default_rng(7).integers(0, 5, size=(N, SIZE, SIZE)).astype(np.float32)
    theirs = _quantus(quantus.AUC(abs=False, normalise=False, disable_warnings=True), None, images, tied, masks)
    np.testing.assert_allclose(metrics.auc(tied, masks), theirs, rtol=1e-12)


def test_localisation_analytic_values(masks):
    exact = masks.astype(float)  # the map is the mask
    for metric in (metrics.relevance_mass_accuracy, metrics.relevance_rank_accuracy, metrics.auc,
                   metrics.attribution_localisation):
        np.testing.assert_allclose(metric(exact, masks), 1.0, err_msg=metric.__name__)
    np.testing.assert_allclose(metrics.top_k_intersection(exact, masks, k=10), 1.0)
    inverse = 1.0 - exact
    np.testing.assert_allclose(metrics.relevance_mass_accuracy(inverse, masks), 0.0)
    np.testing.assert_allclose(metrics.auc(inverse, masks), 0.0)
    # a uniform map: mass = mask share; AUC = ½ (all ties); weighted localisation = 1
    uniform = np.ones((N, SIZE, SIZE))
    share = masks.reshape(N, -1).mean(axis=1)
    np.testing.assert_allclose(metrics.relevance_mass_accuracy(uniform, masks), share, rtol=1e-14)
    np.testing.assert_allclose(metrics.auc(uniform, masks), 0.5)
    np.testing.assert_allclose(metrics.attribution_localisation(uniform, masks, weighted=True), 1.0, rtol=1e-14)
    np.testing.assert_allclose(metrics.top_k_intersection(uniform * 0 + exact, masks, k=5, concept_influence=True),
                               1.0 / share, rtol=1e-14)
    # negative relevance only outside: the positive part is all inside
    signed = exact - 0.5 * inverse
    np.testing.assert_allclose(metrics.attribution_localisation(signed, masks), 1.0)
    # masks as (N, H, W, 1) and Quantus's (N, 1, H, W) give the same; an empty mask gives nan
    np.testing.assert_array_equal(metrics.auc(signed, masks[..., None]), metrics.auc(signed, masks[:, None]))
    empty = masks.copy()
    empty[1] = False
    result = metrics.relevance_rank_accuracy(signed, empty)
    assert np.isnan(result[1]) and result[0] == 1.0


def test_localisation_errors_name_the_argument(maps, masks):
    with pytest.raises(InvalidInputError, match=r"`masks`.*Received: masks.shape=\(3, 12, 11\)"):
        metrics.auc(maps, masks[:, :, :11])
    with pytest.raises(InvalidInputError, match=r"`k`.*Received: k=145"):
        metrics.top_k_intersection(maps, masks, k=145)
    with pytest.raises(InvalidInputError, match=r"`weighted`.*Received: weighted=1"):
        metrics.attribution_localisation(maps, masks, weighted=1)
    with pytest.raises(InvalidInputError, match=r"`absolute`.*Received: absolute=None"):
        metrics.relevance_mass_accuracy(maps, masks, absolute=None)


# -- pixel flipping and region perturbation --------------------------------------------------------
@pytest.fixture(scope="module")
def targets(cnn, images):
    return np.asarray(cnn(images)).argmax(axis=1)


@pytest.mark.parametrize("pixels_per_step", [12, 16])
def test_pixel_flipping_equals_quantus(cnn, images, maps, targets, pixels_per_step):
    ours = metrics.pixel_flipping(cnn, images, maps, target=targets, pixels_per_step=pixels_per_step,
                                  baseline=0.25, batch_size=50)
    metric = quantus.PixelFlipping(features_in_step=C * pixels_per_step, perturb_baseline=0.25, abs=False,
                                   normalise=True, disable_warnings=True)
    theirs = np.asarray(metric(model=cnn, x_batch=images, y_batch=targets, a_batch=maps[:, None],
                               channel_first=False, softmax=False), np.float64)
    assert ours.curve.shape == (N, SIZE * SIZE // pixels_per_step)
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours.curve, theirs, rtol=1e-5, atol=1e-5 * scale)
    # Quantus's return_auc_per_sample calls np.trapz, gone in NumPy 2.4: its trapezoid by hand
    np.testing.assert_allclose(ours.auc, np.trapezoid(theirs, dx=1, axis=1), rtol=1e-5,
                               atol=1e-5 * scale * theirs.shape[1])
    # the last step flips every pixel: the score of the all-baseline image
    flat = np.asarray(cnn(np.full_like(images, 0.25)))[np.arange(N), targets]
    np.testing.assert_allclose(ours.curve[:, -1], flat, rtol=1e-5, atol=1e-6)


def test_pixel_flipping_equals_quantus_softmax_default(images, maps):
    """Quantus scores probabilities by default (``softmax=True``); tfattr scores the output as is: a
    model ending in a softmax gives both the same (Quantus keeps such a model as it is)."""
    model = small_cnn("relu", size=SIZE, seed=4, softmax=True)
    targets = np.asarray(model(images)).argmax(axis=1)
    ours = metrics.pixel_flipping(model, images, maps, target=targets, pixels_per_step=16, baseline="black")
    metric = quantus.PixelFlipping(features_in_step=C * 16, disable_warnings=True)  # perturb_baseline="black"
    theirs = np.asarray(metric(model=model, x_batch=images, y_batch=targets, a_batch=maps[:, None],
                               channel_first=False), np.float64)
    np.testing.assert_allclose(ours.curve, theirs, rtol=1e-5, atol=1e-6)
    assert np.all(ours.curve <= 1.0) and np.all(ours.curve >= 0.0)


def test_metrics_take_an_explanation(cnn, images, masks):
    explanation = tfattr.Gradient(cnn).attribute(images)
    array = np.asarray(explanation.attributions)
    np.testing.assert_array_equal(metrics.sparseness(explanation), metrics.sparseness(array))
    np.testing.assert_array_equal(metrics.auc(explanation, masks), metrics.auc(array, masks))
    a = metrics.region_perturbation(cnn, images, explanation, patch_size=4, regions=3, baseline=0.0)
    b = metrics.region_perturbation(cnn, images, array.sum(axis=-1), patch_size=4, regions=3, baseline=0.0)
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_allclose(a.drops, b.drops, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def region_maps():
    """Real-valued maps whose patch sums (patches of 3, 4, 5) differ by > 1e-3 of the largest: the
    permutation maps' integer sums tie exactly, and Quantus orders exact ties arbitrarily."""
    return np.random.default_rng(11).uniform(-0.5, 1, size=(N, SIZE, SIZE)).astype(np.float32)


@pytest.mark.parametrize("patch_size,order", [(4, "morf"), (5, "lerf"), (3, "morf")])
def test_region_perturbation_equals_quantus(cnn, images, region_maps, targets, patch_size, order):
    maps = region_maps
    grid = region_grid(SIZE, SIZE, patch_size)
    patches = int(grid.max()) + 1
    for m in maps:  # the precondition: no near-ties, 16× the 2**-14 tie resolution
        sums = np.sort(np.bincount(grid.ravel(), weights=m.ravel().astype(np.float64), minlength=patches))
        assert np.diff(sums).min() > 2.0 ** -10 * np.abs(sums).max()
    regions = min(patches, 6)
    ours = metrics.region_perturbation(cnn, images, maps, target=targets, patch_size=patch_size, regions=regions,
                                       order=order, baseline="black", batch_size=7)
    metric = quantus.RegionPerturbation(patch_size=patch_size, order=order, regions_evaluation=regions,
                                        perturb_baseline="black", abs=False, normalise=True, disable_warnings=True)
    theirs = np.asarray(metric(model=cnn, x_batch=images, y_batch=targets, a_batch=maps[:, None],
                               channel_first=False, softmax=False), np.float64)
    scale = np.abs(ours.initial).max()
    np.testing.assert_allclose(ours.drops, theirs, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(ours.aopc, theirs.sum(axis=1) / (regions + 1), rtol=1e-5, atol=1e-5 * scale)


def test_region_grid_is_quantus_padding():
    """12 pixels in patches of 5: pad 3 = 1 before + 2 after, so patches cover 4, 5 and 3 pixels."""
    grid = region_grid(12, 12, 5)
    assert grid[0].tolist() == [0] * 4 + [1] * 5 + [2] * 3
    assert grid[:, 0].tolist() == [0] * 4 + [3] * 5 + [6] * 3


def test_flipping_analytic_and_invariance(cnn, images, maps, targets):
    """A map that ranks every pixel equally flips in row-major order; chunking does not matter;
    with one step of all pixels the curve is the baseline image's score."""
    a = metrics.pixel_flipping(cnn, images, maps, target=targets, pixels_per_step=16, baseline=0.0, batch_size=5)
    b = metrics.pixel_flipping(cnn, images, maps, target=targets, pixels_per_step=16, baseline=0.0, batch_size=64)
    np.testing.assert_allclose(a.curve, b.curve, rtol=1e-5, atol=1e-6)
    flat = metrics.pixel_flipping(cnn, images, np.zeros_like(maps), target=targets, pixels_per_step=100,
                                  baseline=0.0, batch_size=8)
    assert flat.order[0, :5].tolist() == [0, 1, 2, 3, 4]
    x = images.copy().reshape(N, -1, C)
    x[:, :100] = 0.0
    expected = np.asarray(cnn(x.reshape(images.shape)))[np.arange(N), targets]
    np.testing.assert_allclose(flat.curve[:, 0], expected, rtol=1e-5, atol=1e-6)
    assert flat.curve.shape == (N, 2)  # 144 pixels in steps of 100: the last step flips 44
    # region perturbation: lerf of −map is morf of map; random order is seeded
    morf = metrics.region_perturbation(cnn, images, maps, target=targets, patch_size=4, regions=9, baseline=0.0)
    lerf = metrics.region_perturbation(cnn, images, -maps, target=targets, patch_size=4, regions=9, order="lerf",
                                       baseline=0.0)
    np.testing.assert_array_equal(morf.order, lerf.order)
    np.testing.assert_allclose(morf.drops, lerf.drops, rtol=1e-6, atol=1e-6)
    r1, r2 = (metrics.region_perturbation(cnn, images, maps, target=targets, patch_size=4, regions=9,
                                          order="random", seed=3, baseline=0.0) for _ in range(2))
    np.testing.assert_array_equal(r1.order, r2.order)
    # all 9 patches perturbed: the last drop is f(x) − f(baseline image)
    full = np.asarray(cnn(np.zeros_like(images)))[np.arange(N), targets]
    np.testing.assert_allclose(morf.drops[:, -1], morf.initial - full, rtol=1e-5, atol=1e-5)


def test_flipping_errors_name_the_argument(cnn, images, maps):
    with pytest.raises(InvalidInputError, match=r"`regions`.*Received: regions=10"):
        metrics.region_perturbation(cnn, images, maps, patch_size=4, regions=10)
    with pytest.raises(InvalidInputError, match=r"`pixels_per_step`.*Received: pixels_per_step=0"):
        metrics.pixel_flipping(cnn, images, maps, pixels_per_step=0)
    with pytest.raises(InvalidInputError, match=r"`order`.*Received: order='random'"):
        metrics.pixel_flipping(cnn, images, maps, order="random")
    with pytest.raises(InvalidInputError, match=r"`baseline`.*Received: baseline='grey'"):
        metrics.region_perturbation(cnn, images, maps, patch_size=4, regions=3, baseline="grey")
    with pytest.raises(InvalidInputError, match=r"`attributions`.*Received: attributions.shape=\(3, 12, 11\)"):
        metrics.pixel_flipping(cnn, images, maps[:, :, :11])
    with pytest.raises(InvalidInputError, match=r"`patch_size`.*Received: patch_size=13"):
        metrics.region_perturbation(cnn, images, maps, patch_size=13, regions=1)
