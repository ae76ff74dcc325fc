"""Public functions outside the methods refuse bad arguments with tfattr.errors classes whose message
names the argument and ends ``Received: name=value``."""

import numpy as np
import pytest

from tfattr import Gradient, NoiseTunnel
from tfattr.data import digits_on_photos
from tfattr.errors import TfattrError
from tfattr.evaluation import evaluate
from tfattr.viz import grid, normalize


def raises(match):
    return pytest.raises(TfattrError, match=match)


def test_viz_arguments():
    maps = np.ones((8, 8))
    with raises(r"`mode` must be 'abs' or 'signed'. Received: mode='x'$"):
        normalize(maps, mode="x")
    with raises(r"`percentile` must be a number in \[0, 100\]. Received: percentile=200$"):
        normalize(maps, percentile=200)
    tile = np.zeros((4, 4, 3), np.uint8)
    with raises(r"`tiles` must hold at least one row of tiles. Received: tiles=\[\]$"):
        grid([])
    with raises(r"`tiles` must all have one shape.*Received: tiles\[1\]\[0\].shape=\(5, 4, 3\)$"):
        grid([[tile, tile], [np.zeros((5, 4, 3), np.uint8), tile]])
    with raises(r"every row of `tiles` must have 2 tiles.*Received: len\(tiles\[1\]\)=1$"):
        grid([[tile, tile], [tile]])


def test_digits_on_photos_arguments():
    with raises(r"`split` must be 'train' or 'test'. Received: split='val'$"):
        digits_on_photos(2, split="val")
    with raises(r"`size` must be an integer ≥ 8. Received: size='a'$"):
        digits_on_photos(2, size="a")
    with raises(r"`n` must be an integer ≥ 0. Received: n=-1$"):
        digits_on_photos(-1)
    with raises(r"`classes` must be an integer in \[1, 10\]. Received: classes=11$"):
        digits_on_photos(2, classes=11)


def test_noise_tunnel_noise_arguments(relu_cnn):
    with raises(r"`noise_level` must be a finite number ≥ 0. Received: noise_level='x'$"):
        NoiseTunnel(Gradient(relu_cnn), noise_level="x")
    with raises(r"`stdevs` must be a finite number ≥ 0 or None. Received: stdevs='x'$"):
        NoiseTunnel(Gradient(relu_cnn), stdevs="x")


def test_evaluate_methods_are_name_method_pairs(relu_cnn, images):
    """(A registry name alone, "ig", is a method since evaluate takes names: tests/test_cli_methods.py.)"""
    with raises(r"`methods` must be \(name, method\) pairs.*Received: methods\[0\]=\('ig', 'IntegratedGradients'\)$"):
        evaluate(relu_cnn, images, [("ig", "IntegratedGradients")], labels=[0] * len(images), verbose=False)


def test_metrics_report_images_that_do_not_fit_a_subclassed_model_as_images():
    import keras

    from tfattr.metrics import aupc, deletion

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.conv = keras.layers.Conv2D(2, 3)
            self.pool = keras.layers.GlobalAveragePooling2D()

        def call(self, x):
            return self.pool(self.conv(x))

    model = Net()
    model(np.zeros((1, 8, 8, 3), np.float32))
    wrong = np.zeros((2, 8, 8, 1), np.float32)
    maps = np.ones((2, 8, 8))
    for metric in (lambda: aupc(model, wrong, maps, target=0, kernel_size=2, regions=2, perturbations=2),
                   lambda: deletion(model, wrong, maps, target=0)):
        with raises(r"^`images` does not fit the model 'net' \(it was built on inputs of shape \(None, 8, 8, 3\)\).*"
                    r"Received: images.shape=\(2, 8, 8, 1\)$"):
            metric()
