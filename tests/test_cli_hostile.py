"""Issue 24's CLI items, through the CLI: huge images decoded small or refused from their header, grey and
free-size models, --out checked before any work, flags that would be ignored, demo names, imagenette offline,
and odd image files (16-bit, alpha, CMYK-like 4 channels, grey, unicode paths, directories, non-images)."""

import os
import re
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest

import tfattr
from tfattr import cli
from tfattr.cli import _load_images, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def model_path(tmp_path, relu_cnn):
    path = tmp_path / "model.keras"
    relu_cnn.save(path)
    return str(path)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _explain_runs(model, runs):
    """`tfattr explain` on each ``(image, out)`` in one fresh process: [(exit code, peak RSS in MB so far,
    seconds)] and the stderr. The first run, on a small image, brings TensorFlow up to its working size."""
    code = ("import resource, sys, time\nfrom tfattr.cli import main\n"
            f"for image, out in {runs!r}:\n"
            "    begin = time.perf_counter()\n"
             f"    rc = main(['explain', '--model', {model!r}, '--images', image, '--method', 'gradient',"
             f" '--out', out])\n"
            "    sys.stderr.write('\\n--- %d %d %.2f\\n' % (rc, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
            "time.perf_counter() - begin))\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    marks = [line.split()[1:] for line in run.stderr.splitlines() if line.startswith("--- ")]
    return [(int(rc), int(kb) / 1024, float(seconds)) for rc, kb, seconds in marks], run.stderr


def _write_constant_png(path, side):
    """A mostly constant side×side PNG (small file) without ever holding it as float."""
    image = np.full((side, side, 3), 90, np.uint8)
    image[: side // 2, : side // 3] = (200, 30, 60)
    assert cv2.imwrite(str(path), image)
    return str(path)


# -- item 11: images decoded at the size the model takes, and capped ------------------------------------------
def _write_huge_png(path, side):
    """A side² PNG of one grey level, written row by row (never held in memory): 2 MB at 11000²."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes([7]) * (3 * side)
    stream = zlib.compressobj(1)
    body = b"".join(stream.compress(row) for _ in range(side)) + stream.flush()
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return str(path)


def test_a_large_image_is_resized_in_8_bits_and_a_huge_one_is_refused_from_its_header(tmp_path, model_path):
    """8000² PNG (200 KB): it was converted whole to float32 before resizing: 8000²·3·4 B = 768 MB for that
    copy alone, 1.65 GB above the small-image run measured on main (2.36 GB peak). Decoded in 8 bits and
    resized in 8 bits, the image is 192 MB; the bound, 600 MB above the small-image run, leaves room for
    the decoder's buffers and the file, and is below the float copy alone.
    11000² PNG (2 MB; 1.21·10⁸ pixels, over the 10⁸ cap): refused from its header before any pixel is
    decoded (its 8-bit decode alone is 363 MB; a 20000² one reached 6.6 GB and a MemoryError on main):
    under 100 MB more, within seconds."""
    relu_cnn = keras.models.load_model(model_path)
    small = str(tmp_path / "small.png")
    cv2.imwrite(small, np.full((16, 16, 3), 90, np.uint8))
    picture = np.full((8000, 8000, 3), 90, np.uint8)  # RGB
    picture[:4000, :2666] = (200, 30, 60)
    picture[5000:, 6000:] = (10, 250, 120)
    large = str(tmp_path / "large.png")
    assert cv2.imwrite(large, picture[..., ::-1])
    expected = cv2.resize(picture, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32) / np.float32(255)
    del picture
    huge = _write_huge_png(tmp_path / "huge.png", 11000)
    assert os.path.getsize(large) < 1_000_000 and os.path.getsize(huge) < 3_000_000
    runs, err = _explain_runs(model_path, [(small, str(tmp_path / "o1")), (large, str(tmp_path / "o2")),
                                           (huge, str(tmp_path / "o3"))])
    (rc_small, base, _), (rc_large, peak_large, _), (rc_huge, peak_huge, seconds) = runs
    assert (rc_small, rc_large, rc_huge) == (0, 0, 2), err[-3000:]
    assert peak_large - base < 600, (base, peak_large)
    assert peak_huge - peak_large < 100 and seconds < 5, (peak_large, peak_huge, seconds)
    assert (f"tfattr explain: error: --images: image {huge!r} is 11000×11000 pixels, more than the "
            f"{cli.MAX_PIXELS} pixels an image may have (its pixels would not fit in memory at once); "
            f"downscale it first. Received: --images={huge!r}\n") in err
    # what was explained is the 8-bit area resize of the picture: the gradients there (a ReLU network's
    # gradient changes with its input)
    direct = tfattr.Gradient(relu_cnn).attribute(expected[None])
    np.testing.assert_allclose(np.load(tmp_path / "o2" / "attributions.npz")["attributions"], np.asarray(direct),
                               rtol=1e-5, atol=1e-6)


def test_a_large_jpeg_is_decoded_at_a_reduced_size(tmp_path, monkeypatch):
    """A 2000² JPEG for a 100² model is decoded by libjpeg at 1/8 (250², still ≥ 100): no full-size array."""
    path = str(tmp_path / "big.jpg")
    rng = np.random.default_rng(0)
    cv2.imwrite(path, cv2.resize(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8), (2000, 2000)))
    seen = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda data, flag: seen.append(real(data, flag).shape) or real(data, flag))
    x = _load_images([path], (100, 100), (0.0, 1.0))
    assert seen[-1] == (250, 250, 3) and max(s[0] for s in seen) == 250, seen
    full = cv2.resize(cv2.imread(path)[..., ::-1], (100, 100), interpolation=cv2.INTER_AREA) / 255.0
    assert np.abs(x[0] - full).mean() < 0.02  # the same picture (DCT-domain scaling differs by a few levels)


# -- item 21: grey models ------------------------------------------------------------------------------------
def test_a_grey_model_is_explained_on_grey_images(tmp_path, images):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    path = tmp_path / "grey.keras"
    model.save(path)
    colour = str(tmp_path / "colour.png")
    cv2.imwrite(colour, (images[0][..., ::-1] * 255).round().astype(np.uint8))
    out = tmp_path / "out"
    assert main(["explain", "--model", str(path), "--images", colour, "--method", "gradient", "--out", str(out)]) == 0
    grey = cv2.imread(colour, cv2.IMREAD_GRAYSCALE)[..., None].astype(np.float32) / 255
    direct = tfattr.Gradient(model).attribute(grey[None])
    np.testing.assert_allclose(np.load(out / "attributions.npz")["attributions"], np.asarray(direct), atol=1e-6)
    assert cv2.imread(str(out / "colour_gradient.png")) is not None


def test_a_model_of_other_channels_is_an_error_naming_model(tmp_path, images, capsys):
    inputs = keras.Input((16, 16, 2))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    model.save(tmp_path / "two.keras")
    image = str(tmp_path / "a.png")
    cv2.imwrite(image, np.zeros((16, 16, 3), np.uint8))
    assert main(["explain", "--model", str(tmp_path / "two.keras"), "--images", image,
                 "--out", str(tmp_path / "o")]) == 2
    assert ("--model: the command reads images as grey (1 channel) or RGB (3 channels); the model takes 2"
            in one_line(capsys))


# -- item 22: models of a free size --------------------------------------------------------------------------
def test_a_free_size_model_takes_the_images_size_or_size(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(h)))  # 10 digits
    path = str(tmp_path / "free.keras")
    model.save(path)
    rng = np.random.default_rng(1)
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    cv2.imwrite(a, rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    cv2.imwrite(b, rng.integers(0, 255, (30, 30, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert main(["explain", "--model", path, "--images", a, b, "--method", "gradient", "--out", str(out)]) == 2
    assert one_line(capsys).endswith("the model takes any image size and the images have different sizes "
                                     "(24×20, 30×30); pass --size H W to resize them to one. Received: --size=None")
    assert main(["explain", "--model", path, "--images", a, b, "--method", "gradient", "--size", "16", "18",
                 "--out", str(out)]) == 0
    x = _load_images([a, b], (16, 18), (0.0, 1.0))
    assert x.shape == (2, 16, 18, 3)
    np.testing.assert_allclose(np.load(out / "attributions.npz")["attributions"],
                               np.asarray(tfattr.Gradient(model).attribute(x)), atol=1e-6)
    assert main(["explain", "--model", path, "--images", a, "--method", "gradient", "--out", str(out)]) == 0  # one size
    assert np.load(out / "attributions.npz")["attributions"].shape == (1, 20, 24, 3)
    assert main(["evaluate", "--model", path, "--images", "1", "--methods", "gradient", "--out", str(out)]) == 2
    assert "--size: the model takes any image size; pass --size SIDE" in one_line(capsys)
    assert main(["evaluate", "--model", path, "--images", "2", "--methods", "gradient", "--size", "32",
                 "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "table.md").read_text().count("| gradient |") == 1
    # more images than memory holds: named before any is drawn (was a MemoryError)
    assert main(["evaluate", "--model", path, "--images", "10000", "--size", "3000", "--methods", "gradient",
                 "--out", str(tmp_path / "eval")]) == 2
    assert ("error: --images: 10000 images of 3000×3000 need about 3017.5 GiB, more than half of this machine"
            in one_line(capsys))


def test_size_must_agree_with_a_fixed_model(tmp_path, model_path, capsys):
    image = str(tmp_path / "a.png")
    cv2.imwrite(image, np.zeros((16, 16, 3), np.uint8))
    assert main(["explain", "--model", model_path, "--images", image, "--size", "32",
                 "--out", str(tmp_path / "o")]) == 2
    assert one_line(capsys) == "tfattr explain: error: --size: the model takes 16×16 images only. Received: --size=[32]"


# -- item 20: --out checked before any work ------------------------------------------------------------------
def test_an_unusable_out_is_refused_before_any_attribution(tmp_path, model_path, monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("a method was built before --out was checked")

    monkeypatch.setattr(cli, "_build_method", never)
    image = str(tmp_path / "a.png")
    cv2.imwrite(image, np.zeros((16, 16, 3), np.uint8))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    for out, reason in ((str(a_file), "it exists and is not a folder"),
                        (str(a_file / "sub"), f"{str(a_file)!r} is a file, not a folder")):
        for argv in (["explain", "--model", model_path, "--images", image], ["evaluate", "--model", model_path]):
            assert main(argv + ["--out", out]) == 2
            assert one_line(capsys) == (f"tfattr {argv[0]}: error: --out: cannot write in the folder {out!r}: "
                                        f"{reason}. Received: --out={out!r}")
    assert a_file.read_text() == "notes"



def test_an_out_that_is_a_dangling_link_is_refused_before_any_attribution(tmp_path, model_path, monkeypatch, capsys):
    """``--out`` a link to a missing folder: the check walked up to the link's (writable) parent and passed,
    and ``os.makedirs`` failed there only after the attributions were computed."""
    def never(*args, **kwargs):
        raise AssertionError("a method was built before --out was checked")

    monkeypatch.setattr(cli, "_build_method", never)
    image = str(tmp_path / "a.png")
    cv2.imwrite(image, np.zeros((16, 16, 3), np.uint8))
    out = str(tmp_path / "results")
    os.symlink(str(tmp_path / "gone"), out)
    for argv in (["explain", "--model", model_path, "--images", image], ["evaluate", "--model", model_path]):
        assert main(argv + ["--out", out]) == 2
        assert one_line(capsys) == (f"tfattr {argv[0]}: error: --out: cannot write in the folder {out!r}: {out!r} is "
                                    f"a link to a missing {str(tmp_path / 'gone')!r}. Received: --out={out!r}")

# -- item 23: flags that would be ignored, empty or unknown names ---------------------------------------------
def test_flags_a_method_ignores_are_named_in_a_warning(tmp_path, model_path, capsys):
    image = str(tmp_path / "a.png")
    cv2.imwrite(image, np.zeros((16, 16, 3), np.uint8))
    out = str(tmp_path / "out")
    assert main(["explain", "--model", model_path, "--images", image, "--method", "ig", "--steps", "4",
                 "--layer", "conv2d", "--out", out]) == 0
    err = capsys.readouterr().err
    assert "warning: --layer is ignored: it applies to gradcam, rsi-gradcam, " in err  # then the other layer methods
    assert "; the method(s) are ig. Received: --method='ig'" in err
    assert main(["explain", "--model", model_path, "--images", image, "--method", "ig", "--steps", "4",
                 "--n-baselines", "4", "--out", out]) == 0
    err = capsys.readouterr().err
    assert ("warning: --n-baselines is ignored: it applies to a random baseline (uniform, gaussian), and draws of a "
            "fixed baseline are all the same. Received: --baseline='zero'") in err
    assert main(["explain", "--model", model_path, "--images", image, "--method", "ig", "--steps", "4",
                 "--baseline", "uniform", "--n-baselines", "2", "--out", out]) == 0
    assert "warning" not in capsys.readouterr().err


def test_empty_or_unknown_method_and_photo_names_exit_2_naming_the_flag(tmp_path, model_path, capsys, monkeypatch):
    out = str(tmp_path / "out")
    assert main(["evaluate", "--model", model_path, "--methods", "", "--out", out]) == 2
    assert one_line(capsys).startswith("tfattr evaluate: error: --methods: no method named; choose from ig, ")
    assert main(["evaluate", "--model", model_path, "--methods", " , ", "--out", out]) == 2
    assert "--methods: no method named" in one_line(capsys)
    import tfattr.demo

    monkeypatch.setattr(tfattr.demo, "main", lambda *a, **k: (_ for _ in ()).throw(AssertionError("the demo ran")))
    assert main(["demo", "--methods", "bogus", "--out", out]) == 2
    line = one_line(capsys)
    assert line.startswith("tfattr demo: error: --methods: unknown method title(s) 'bogus'; choose from Gradient, ")
    assert "IG zero" in line and line.endswith("Received: --methods='bogus'")
    assert main(["demo", "--photos", "bogus", "--out", out]) == 2
    line = one_line(capsys)
    assert line.startswith("tfattr demo: error: --photos: not scikit-image photos: bogus; choose from ")
    assert "chelsea" in line and line.endswith("or none. Received: --photos='bogus'")
    assert not os.path.exists(out)


# -- item 25: imagenette without a network fails in seconds ---------------------------------------------------
def test_imagenette_offline_fails_fast_naming_the_dataset(tmp_path):
    """No prepared copy in TFDS_DATA_DIR and no network (none here; the check also fails when the host does
    not answer within 3 s): a named error in seconds, where TFDS retried for minutes."""
    import socket

    try:
        socket.create_connection(("s3.amazonaws.com", 443), timeout=3).close()
        pytest.fail("this test needs the network blocked (the download host answered)")
    except OSError:
        pass
    code = ("import sys, time; from tfattr.cli import main; begin = time.perf_counter(); "
            f"rc = main(['evaluate', '--dataset', 'imagenette', '--images', '1', '--out', {str(tmp_path / 'out')!r}]); "
            "sys.stderr.write('--- %.2f\\n' % (time.perf_counter() - begin)); sys.exit(rc)")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT,
               TFDS_DATA_DIR=str(tmp_path / "tfds"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    seconds = float(run.stderr.rsplit("--- ", 1)[1])
    assert seconds < 20, seconds
    assert re.search(r"error: --dataset imagenette: it is not in the TFDS folder .* and its download host "
                     r"s3\.amazonaws\.com cannot be reached .* Received: --dataset='imagenette'",
                     run.stderr), run.stderr[-2000:]


# -- odd image files ------------------------------------------------------------------------------------------
def test_odd_image_files_are_read_or_refused_in_one_line(tmp_path, model_path, capsys):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    cases = {}
    cases["16bit.png"] = (rgb.astype(np.uint16) * 257)[..., ::-1], rgb  # 16 bits: the same 8-bit picture
    alpha = np.concatenate([rgb[..., ::-1], np.full((16, 16, 1), 255, np.uint8)], axis=-1)
    cases["alpha.png"] = alpha, rgb  # an opaque alpha channel is dropped
    cases["grey.png"] = rgb[..., 0], np.repeat(rgb[..., :1], 3, axis=-1)  # grey → three equal channels
    cases["ünïcödé 猫.png"] = rgb[..., ::-1], rgb
    paths, expected = [], []
    for name, (stored, picture) in cases.items():
        path = str(tmp_path / name)
        ok, data = cv2.imencode(".png", stored)
        assert ok
        with open(path, "wb") as handle:
            handle.write(data.tobytes())
        paths.append(path)
        expected.append(picture)
    out = tmp_path / "out"
    assert main(["explain", "--model", model_path, "--images", *paths, "--method", "gradient", "--out", str(out)]) == 0
    x = _load_images(paths, (16, 16), (0.0, 1.0))
    np.testing.assert_array_equal((x * 255).round().astype(np.uint8), np.stack(expected))
    assert os.path.exists(out / "ünïcödé 猫_gradient.png")
    tiny = str(tmp_path / "tiny.png")
    cv2.imwrite(tiny, rgb[:1, :1])
    assert main(["explain", "--model", model_path, "--images", tiny, "--method", "gradient", "--out", str(out)]) == 0
    refused = {str(tmp_path / "empty.png"): b"", str(tmp_path / "text.png"): b"hello, not a picture\n" * 10,
               str(tmp_path / "header_only.png"): cv2.imencode(".png", rgb)[1].tobytes()[:40]}
    for path, data in refused.items():
        with open(path, "wb") as handle:
            handle.write(data)
        assert main(["explain", "--model", model_path, "--images", path, "--out", str(out)]) == 2
        assert one_line(capsys).endswith(f"or a truncated file. Received: --images={path!r}")
    assert main(["explain", "--model", model_path, "--images", str(tmp_path), "--out", str(out)]) == 2
    assert one_line(capsys).endswith(f"Is a directory. Received: --images={str(tmp_path)!r}")


@pytest.mark.parametrize("ext, params", [(".png", []), (".jpg", []), (".bmp", []),
                                         (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
                                         (".tiff", []), (".ppm", []), (".gif", [])])
def test_the_pixel_cap_reads_each_format_s_header(tmp_path, ext, params):
    """The size each header declares (what the cap checks before decoding) is the decoded size; a lossless
    format decodes to the same picture through `_load_images`."""
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    try:
        ok, data = cv2.imencode(ext, rgb[..., ::-1], params)
    except cv2.error:  # an OpenCV build without this encoder (GIF is recent)
        ok = False
    if not ok:
        assert ext == ".gif"
        data = np.frombuffer(b"GIF89a" + (53).to_bytes(2, "little") + (37).to_bytes(2, "little"), np.uint8)
        assert cli._header_size(data.tobytes()) == (37, 53)
        return
    assert cli._header_size(data.tobytes()) == (37, 53)
    path = str(tmp_path / f"image{ext}")
    data.tofile(path)
    x = _load_images([path], None, (0.0, 1.0))
    assert x.shape == (1, 37, 53, 3)
    if ext not in (".jpg", ".gif"):
        np.testing.assert_array_equal((x[0] * 255).round().astype(np.uint8), rgb)


def test_a_device_a_fifo_and_a_reversed_value_range_are_refused(tmp_path, model_path, capsys):
    """`--images /dev/zero` read forever (and a FIFO blocked); `--value-range 1 0` explained inverted images."""
    fifo = str(tmp_path / "pipe.png")
    os.mkfifo(fifo)
    out = str(tmp_path / "out")
    for path in ("/dev/zero", fifo):
        assert main(["explain", "--model", model_path, "--images", path, "--out", out]) == 2
        assert one_line(capsys) == (f"tfattr explain: error: --images: cannot read image {path!r}: not a regular "
                                    f"file. Received: --images={path!r}")
    image = str(tmp_path / "a.png")
    cv2.imwrite(image, np.full((16, 16, 3), 100, np.uint8))
    for command in (["explain", "--model", model_path, "--images", image], ["evaluate", "--model", model_path]):
        for low, high in (("1", "0"), ("0", "0")):
            assert main(command + ["--value-range", low, high, "--out", out]) == 2
            assert one_line(capsys) == (f"tfattr {command[0]}: error: --value-range: LOW must be below HIGH. "
                                        f"Received: --value-range='{low} {high}'")
    assert not os.path.exists(out)


def test_the_pixel_cap_reads_a_jpeg_or_tiff_size_placed_after_64_kib(tmp_path, monkeypatch):
    """A JPEG whose start-of-frame follows 128 KiB of APP segments, a TIFF whose IFD sits after 64 KiB (as
    writers put it after the pixels): the header check read only the first 64 KiB, found no size, and the
    20000² image was decoded (400 MB grey) before the cap refused it. Now refused from the header, no pixel
    decoded."""
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("decoded before the header check"))
    jpeg = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = (20000).to_bytes(2, "big") * 2
    padding = (b"\xff\xef" + (65535).to_bytes(2, "big") + bytes(65533)) * 2
    ifd = 8 + 70000
    entries = [(256, 4, 20000), (257, 4, 20000)]  # ImageWidth, ImageLength as LONG
    tiff = (b"II*\x00" + ifd.to_bytes(4, "little") + bytes(70000) + len(entries).to_bytes(2, "little")
            + b"".join(t.to_bytes(2, "little") + k.to_bytes(2, "little") + (1).to_bytes(4, "little")
                       + v.to_bytes(4, "little") for t, k, v in entries) + bytes(4))
    for name, data in (("hidden.jpg", bytes(jpeg[:2]) + padding + bytes(jpeg[2:])), ("hidden.tiff", tiff)):
        path = str(tmp_path / name)
        with open(path, "wb") as handle:
            handle.write(data)
        with pytest.raises(tfattr.errors.InvalidInputError, match=r"is 20000×20000 pixels, more than the 100000000"):
            cli._read_image_files([path])
