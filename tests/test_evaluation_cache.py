"""The evaluation cache: a row is served only when nothing that can change a number changed.

Each stale case is two cached calls that differ in one option: the second must be computed
afresh and equal an uncached run (and differ from the first, or the case would prove nothing).
Damaged cache files are warned about, recomputed and overwritten.
"""

import os
import warnings

import numpy as np
import pytest

import tfattr
from conftest import small_cnn
from tfattr.core.keys import Uncacheable, canonical
from tfattr.evaluation import evaluate, format_table, result_key

SIZE = 44  # the smallest side with two pyramid levels: AUTVC is defined
METRICS = dict(aupc_kernel=4, aupc_regions=2, aupc_perturbations=2, pixels_per_step=300, verbose=False)


@pytest.fixture(scope="module")
def model():
    return small_cnn("relu", size=SIZE, classes=5, seed=3)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(7).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)


def values(row):
    return np.concatenate([np.ravel(row.per_image[k]) for k in sorted(row.per_image)])


def run(model, x, method, cache_dir=None, **options):
    return evaluate(model, x, [("m", method)], labels=np.array([0, 1]), cache_dir=cache_dir,
                    **dict(METRICS, **options))[0]


STALE_CASES = {
    "gradcam_relu": lambda m: (tfattr.GradCAM(m, relu=True), tfattr.GradCAM(m, relu=False)),
    "gradient_absolute": lambda m: (tfattr.Gradient(m), tfattr.Gradient(m, absolute=True)),
    "array_baselines": lambda m: (
        tfattr.IntegratedGradients(m, baseline=np.zeros((SIZE, SIZE, 3), np.float32), steps=4),
        tfattr.IntegratedGradients(m, baseline=np.full((SIZE, SIZE, 3), 0.5, np.float32), steps=4)),
    "constant_value": lambda m: (tfattr.IntegratedGradients(m, baseline="constant", value=0.2, steps=4),
                                 tfattr.IntegratedGradients(m, baseline="constant", value=0.8, steps=4)),
    "blur_sigma": lambda m: (tfattr.IntegratedGradients(m, baseline="blur", blur_sigma=1.0, steps=4),
                             tfattr.IntegratedGradients(m, baseline="blur", blur_sigma=8.0, steps=4)),
    "noise_tunnel_wrapped_options": lambda m: (tfattr.NoiseTunnel(tfattr.IntegratedGradients(m, steps=2), nt_samples=2),
                                               tfattr.NoiseTunnel(tfattr.IntegratedGradients(m, steps=6), nt_samples=2)),
    "noise_tunnel_wrapped_class": lambda m: (tfattr.NoiseTunnel(tfattr.Gradient(m), nt_samples=2),
                                             tfattr.NoiseTunnel(tfattr.InputXGradient(m), nt_samples=2)),
}


@pytest.mark.parametrize("case", sorted(STALE_CASES))
def test_a_call_that_differs_in_one_option_is_computed_afresh(case, model, x, tmp_path):
    first, second = STALE_CASES[case](model)
    a = run(model, x, first, tmp_path)
    b = run(model, x, second, tmp_path)
    fresh = run(model, x, second)
    assert not b.cached
    np.testing.assert_allclose(values(b), values(fresh), rtol=1e-6, atol=1e-7)
    assert not np.allclose(values(a), values(b), rtol=1e-3, atol=1e-4)  # the option matters here


def test_an_unchanged_call_is_served_from_the_cache_with_identical_numbers(model, x, tmp_path):
    first = run(model, x, tfattr.IntegratedGradients(model, baseline="blur", blur_sigma=2.0, steps=4), tmp_path)
    again = run(model, x, tfattr.IntegratedGradients(model, baseline="blur", blur_sigma=2.0, steps=4), tmp_path)
    assert not first.cached and again.cached
    np.testing.assert_array_equal(values(again), values(first))
    assert again.scores == first.scores and again.gradients == first.gradients
    # options that only schedule the work keep the row; a metric setting does not
    assert run(model, x, tfattr.IntegratedGradients(model, baseline="blur", blur_sigma=2.0, steps=4, verbose=0,
                                                    parallel_chunks=1), tmp_path).cached
    assert not run(model, x, tfattr.IntegratedGradients(model, baseline="blur", blur_sigma=2.0, steps=4), tmp_path,
                   aupc_regions=3).cached


def test_the_key_covers_model_weights_images_labels_masks_and_settings(model, x):
    method = tfattr.Gradient(model)
    labels = np.array([0, 1])
    masks = np.zeros((2, SIZE, SIZE), bool)
    masks[:, :4, :4] = True
    base = result_key(model, x, method, labels, masks, {"seed": 0})
    assert result_key(model, x.copy(), tfattr.Gradient(model), labels.copy(), masks.copy(), {"seed": 0}) == base
    other_weights = small_cnn("relu", size=SIZE, classes=5, seed=4)
    moved = masks.copy()
    moved[:, :4, :4], moved[:, -4:, -4:] = False, True  # same sum, another mask
    changed = [
        result_key(other_weights, x, tfattr.Gradient(other_weights), labels, masks, {"seed": 0}),
        result_key(model, x[::-1], method, labels, masks, {"seed": 0}),
        result_key(model, x, method, labels[::-1], masks, {"seed": 0}),
        result_key(model, x, method, labels, moved, {"seed": 0}),
        result_key(model, x, method, labels, masks, {"seed": 1}),
        result_key(model, x, method, labels, None, {"seed": 0}),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_what_cannot_be_keyed_is_not_cached(model, x, tmp_path, capsys):
    custom = tfattr.IntegratedGradients(model, baseline=lambda images: np.zeros_like(images), steps=4)
    with pytest.raises(Uncacheable, match="baseline is a callable"):
        custom.cache_key()
    with pytest.raises(Uncacheable, match="seed=None"):
        tfattr.NoiseTunnel(tfattr.Gradient(model), nt_samples=2, seed=None).cache_key()
    assert not run(model, x, custom, tmp_path).cached
    second = evaluate(model, x, [("custom", custom)], labels=np.array([0, 1]), cache_dir=tmp_path,
                      **dict(METRICS, verbose=True))[0]
    assert not second.cached and "custom" in capsys.readouterr().out.split("not cached: baseline is a callable")[0]
    assert os.listdir(tmp_path) == []


def test_canonical_keys_arrays_by_content_and_refuses_plain_callables():
    assert canonical(np.zeros(3)) == canonical(np.zeros(3))
    assert canonical(np.zeros(3)) != canonical(np.zeros(3, np.float32))
    assert canonical(np.array([1.0, 2.0])) != canonical(np.array([2.0, 1.0]))  # same sum
    assert canonical({"b": 1, "a": (0.1, None)}) == {"a": [0.1, None], "b": 1}
    with pytest.raises(Uncacheable, match=r"objective is a callable"):
        canonical(lambda v: v, "objective")


def test_a_saved_baseline_retrained_at_the_same_path_is_recomputed(model, x, tmp_path):
    from tfattr.baselines import load_baseline, save_baseline, train_uniform_baseline

    folder = str(tmp_path / "baseline")
    save_baseline(train_uniform_baseline(model, start="black", steps=3, patience=None, verbose=0), folder)
    cache = tmp_path / "cache"
    first = run(model, x, tfattr.IntegratedGradients(model, baseline=folder, steps=4), cache)
    assert run(model, x, tfattr.IntegratedGradients(model, baseline=folder, steps=4), cache).cached
    loaded = load_baseline(folder)  # a loaded object is keyed by its tensor: served again
    assert run(model, x, tfattr.IntegratedGradients(model, baseline=loaded, steps=4), cache).cached is False
    assert run(model, x, tfattr.IntegratedGradients(model, baseline=loaded, steps=4), cache).cached
    save_baseline(train_uniform_baseline(model, start=0.7, steps=3, patience=None, verbose=0), folder, overwrite=True)
    second = run(model, x, tfattr.IntegratedGradients(model, baseline=folder, steps=4), cache)
    fresh = run(model, x, tfattr.IntegratedGradients(model, baseline=folder, steps=4))
    assert not second.cached
    np.testing.assert_allclose(values(second), values(fresh), rtol=1e-6, atol=1e-7)
    assert not np.allclose(values(first), values(second), rtol=1e-3, atol=1e-4)


def _rewrite_without_seconds(path):
    with np.load(path) as stored:
        kept = {k: stored[k] for k in stored.files if k != "seconds"}
    np.savez(path, **kept)


@pytest.mark.parametrize("damage, error", [
    (lambda path: open(path, "r+b").truncate(os.path.getsize(path) // 2), r"BadZipFile|EOFError|error"),
    (lambda path: open(path, "wb").close(), r"EOFError|ValueError|BadZipFile"),
    (lambda path: open(path, "wb").write(b"\x00garbage, not a zip" * 40), r"ValueError|OSError|BadZipFile"),
    (_rewrite_without_seconds, r"KeyError"),
], ids=["truncated", "empty", "garbage", "missing_key"])
def test_a_damaged_cache_file_warns_naming_it_and_is_recomputed_and_overwritten(damage, error, model, x, tmp_path):
    first = run(model, x, tfattr.Gradient(model), tmp_path)
    (name,) = os.listdir(tmp_path)
    path = os.path.join(tmp_path, name)
    damage(path)
    with pytest.warns(RuntimeWarning, match=rf"{name}.*({error}).*recomputing"):
        again = run(model, x, tfattr.Gradient(model), tmp_path)
    assert not again.cached
    np.testing.assert_allclose(values(again), values(first), rtol=1e-6, atol=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overwritten: read back without a warning
        served = run(model, x, tfattr.Gradient(model), tmp_path)
    assert served.cached
    np.testing.assert_array_equal(values(served), values(again))


def test_autvc_on_maps_below_44_px_is_an_empty_cell_with_one_note(tmp_path, capsys):
    small = small_cnn("relu", size=32, classes=5, seed=3)
    images = np.random.default_rng(8).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    rows = evaluate(small, images, [("gradient", tfattr.Gradient(small)), ("gradcam", tfattr.GradCAM(small))],
                    labels=np.array([0, 1]), cache_dir=tmp_path, **dict(METRICS, verbose=True))
    printed = capsys.readouterr().out
    assert printed.count("AUTVC left empty: the maps are 32×32 and AUTVC needs at least 44×44") == 1
    assert "AUTVC 0.000" not in printed
    for row in rows:
        assert np.isnan(row.scores["AUTVC"]) and len(row.notes) == 1
        assert np.isfinite(row.scores["AUPC"])
    table = format_table(rows).splitlines()
    column = [c.strip() for c in table[0].split("|")].index("AUTVC ↓")
    assert [[c.strip() for c in line.split("|")][column] for line in table[2:]] == ["", ""]
    cached = evaluate(small, images, [("gradient", tfattr.Gradient(small))], labels=np.array([0, 1]),
                      cache_dir=tmp_path, **METRICS)[0]
    assert cached.cached and np.isnan(cached.scores["AUTVC"]) and cached.notes == rows[0].notes


def test_every_row_of_the_papers_grids_can_be_cached(model):
    """The SmoothTaylor grid's adaptive-AUPC objective carries its own key; a plain function would not."""
    from tfattr.evaluation import guided_ig_comparison, smoothtaylor_grid

    grid = smoothtaylor_grid(model, noise_sizes=(1,), sigmas=(0.3,), roots=(100,)) + guided_ig_comparison(model)
    keys = [result_key(model, np.zeros((1, SIZE, SIZE, 3)), method, np.zeros(1, int), settings={"seed": 0})
            for _, method in grid]
    shared = {}
    for (name, _), key in zip(grid, keys):
        shared.setdefault(key, []).append(name)
    # the only rows sharing a key are the same computation: IG from zero, 50 steps, in both grids
    assert sorted(names for names in shared.values() if len(names) > 1) == [["IG zero", "IG"]]
    other = smoothtaylor_grid(model, noise_sizes=(), sigmas=(), aupc_kernel=7)[-2][1]  # adaptive-AUPC
    assert result_key(model, np.zeros((1, SIZE, SIZE, 3)), other, np.zeros(1, int), settings={"seed": 0}) not in keys


def test_rows_of_images_evaluated_one_at_a_time_merge_into_the_rows_of_one_call(model, x):
    from tfattr.evaluation import merge_rows

    methods = [("gradient", tfattr.Gradient(model)), ("ig", tfattr.IntegratedGradients(model, steps=4, seed=0))]
    labels = np.array([0, 1])
    settings = dict(METRICS, aupc_regions=3, aupc_perturbations=3)
    together = evaluate(model, x, methods, labels=labels, **settings)
    parts = [evaluate(model, x[i : i + 1], methods, labels=labels[i : i + 1], **settings) for i in range(2)]
    merged = merge_rows(parts)
    assert [r.method for r in merged] == ["gradient", "ig"]
    for joint, row in zip(together, merged):
        assert sorted(row.per_image) == sorted(joint.per_image)
        for key in joint.per_image:  # per-image metrics: the batch it ran in changes only float32 rounding
            np.testing.assert_allclose(row.per_image[key], joint.per_image[key], rtol=1e-4, atol=1e-6)
            assert row.scores[key] == pytest.approx(np.mean(row.per_image[key]))
        for key in joint.curves:
            np.testing.assert_allclose(row.curves[key], joint.curves[key], rtol=1e-4, atol=1e-6)
        assert row.gradients == joint.gradients
    with pytest.raises(tfattr.errors.InvalidInputError, match="same methods in the same order"):
        merge_rows([parts[0], parts[1][::-1]])


def _two_nested_convs():
    """Two nested models ``a`` and ``b``, each with a layer called ``conv``."""
    import keras

    keras.utils.set_random_seed(5)
    bias = keras.initializers.RandomUniform(-0.3, 0.3, seed=5)

    def block(name, channels):
        return keras.Sequential([keras.Input((SIZE, SIZE, channels)),
                                 keras.layers.Conv2D(4, 3, padding="same", activation="relu", bias_initializer=bias,
                                                     name="conv")], name=name)

    inputs = keras.Input((SIZE, SIZE, 3))
    h = block("b", 4)(block("a", 3)(inputs))
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(5, bias_initializer=bias)(h))


def test_two_nested_layers_with_one_name_are_keyed_by_their_paths(x, tmp_path):
    nested = _two_nested_convs()
    first = run(nested, x, tfattr.GradCAM(nested, layer="a/conv"), tmp_path)
    second = run(nested, x, tfattr.GradCAM(nested, layer="b/conv"), tmp_path)
    fresh = run(nested, x, tfattr.GradCAM(nested, layer="b/conv"))
    assert not second.cached
    np.testing.assert_allclose(values(second), values(fresh), rtol=1e-6, atol=1e-7)
    assert not np.allclose(values(first), values(second), rtol=1e-3, atol=1e-4)  # the layer matters here
    # wrapped in a NoiseTunnel too, and for the layer-space methods
    keys = {result_key(nested, x, method, np.array([0, 1]), settings={"seed": 0}) for method in (
        tfattr.NoiseTunnel(tfattr.GradCAM(nested, layer="a/conv"), nt_samples=2),
        tfattr.NoiseTunnel(tfattr.GradCAM(nested, layer="b/conv"), nt_samples=2),
        tfattr.LayerIntegratedGradients(nested, layer="a/conv", steps=2),
        tfattr.LayerIntegratedGradients(nested, layer="b/conv", steps=2))}
    assert len(keys) == 4


def _fail_with(error):
    def fail(*args, **kwargs):
        raise error
    return fail


@pytest.mark.parametrize("where", ["file", "folder_at_row", "read_only", "disk_full"])
def test_a_cache_that_cannot_be_written_warns_and_keeps_every_computed_row(where, model, x, tmp_path, monkeypatch):
    methods = [("gradient", tfattr.Gradient(model)), ("gradcam", tfattr.GradCAM(model))]
    labels = np.array([0, 1])
    expected = evaluate(model, x, methods, labels=labels, **METRICS)
    cache = tmp_path / "cache"
    if where == "file":
        cache.write_bytes(b"a file, not a folder")
    elif where == "folder_at_row":
        for _, method in methods:
            key = result_key(model, x, method, labels, None, dict(
                value_range=(0.0, 1.0), aupc_kernel=4, aupc_regions=2, aupc_perturbations=2, pixels_per_step=300,
                pointing_tolerance=15, seed=0))
            os.makedirs(cache / f"{key[:32]}.npz")
    else:  # root ignores a folder's mode: make the OS refuse the write as it would for a user
        import tempfile

        code = 13 if where == "read_only" else 28  # EACCES, ENOSPC
        monkeypatch.setattr(tempfile, "mkstemp", _fail_with(OSError(code, os.strerror(code))))
    with pytest.warns(RuntimeWarning, match=r"cannot be (cached|read).*results are returned"):
        rows = evaluate(model, x, methods, labels=labels, cache_dir=str(cache), **METRICS)
    assert [r.method for r in rows] == ["gradient", "gradcam"] and not any(r.cached for r in rows)
    for row, reference in zip(rows, expected):
        np.testing.assert_allclose(values(row), values(reference), rtol=1e-6, atol=1e-7)


def _with_key_of(path, elements):
    """Rewrite the cached row at ``path`` with a ``key`` member whose header claims ``elements``
    32-character strings (the data is not there: only the header is)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = {"descr": "<U32", "fortran_order": False, "shape": (elements,)}
    stream = __import__("io").BytesIO()
    np.lib.format.write_array_header_1_0(stream, header)
    members["key.npy"] = stream.getvalue() + b"\0" * 128
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("elements", [10**12, 10**6])
def test_a_cache_file_claiming_a_huge_member_is_treated_as_damaged(elements, model, x, tmp_path):
    first = run(model, x, tfattr.Gradient(model), tmp_path)
    (name,) = os.listdir(tmp_path)
    _with_key_of(os.path.join(tmp_path, name), elements)
    with pytest.warns(RuntimeWarning, match=rf"{name}.*cannot be read.*recomputing"):
        again = run(model, x, tfattr.Gradient(model), tmp_path)
    assert not again.cached
    np.testing.assert_allclose(values(again), values(first), rtol=1e-6, atol=1e-7)
    assert run(model, x, tfattr.Gradient(model), tmp_path).cached


def _baseline_folders(model, tmp_path):
    """Two saved baselines of ``model``: from black and from 0.7 grey."""
    from tfattr.baselines import save_baseline, train_uniform_baseline

    folders = []
    for start in ("black", 0.7):
        folder = str(tmp_path / f"baseline_{start}")
        save_baseline(train_uniform_baseline(model, start=start, steps=3, patience=None, verbose=0), folder)
        folders.append(folder)
    return folders


def test_a_saved_baseline_whose_tensor_files_are_replaced_is_reloaded_and_recomputed(model, x, tmp_path):
    """``variables/`` and ``saved_model.pb`` replaced, ``metadata.json`` untouched (same inode and
    mtime): the same process explains with the new tensor, and the row is keyed by it."""
    import shutil

    folder, other = _baseline_folders(model, tmp_path)
    cache = tmp_path / "cache"
    first = run(model, x, tfattr.IntegratedGradients(model, baseline=folder, steps=4), cache)
    shutil.rmtree(os.path.join(folder, "variables"))
    shutil.copytree(os.path.join(other, "variables"), os.path.join(folder, "variables"))
    shutil.copy(os.path.join(other, "saved_model.pb"), os.path.join(folder, "saved_model.pb"))
    second = run(model, x, tfattr.IntegratedGradients(model, baseline=folder, steps=4), cache)
    expected = run(model, x, tfattr.IntegratedGradients(model, baseline=other, steps=4))
    assert not second.cached
    np.testing.assert_allclose(values(second), values(expected), rtol=1e-6, atol=1e-7)
    assert not np.allclose(values(first), values(second), rtol=1e-3, atol=1e-4)  # the tensor matters here
    served = run(model, x, tfattr.IntegratedGradients(model, baseline=folder, steps=4), cache)
    assert served.cached
    np.testing.assert_array_equal(values(served), values(second))


def test_a_baseline_folder_replaced_while_its_row_is_computed_is_not_cached(model, x, tmp_path):
    import shutil

    folder, other = _baseline_folders(model, tmp_path)
    method = tfattr.IntegratedGradients(model, baseline=folder, steps=4)
    original = method.attribute

    def attribute_then_replace(*args, **kwargs):
        out = original(*args, **kwargs)
        shutil.rmtree(folder)
        shutil.copytree(other, folder)  # another process saves over it meanwhile
        return out

    method.attribute = attribute_then_replace
    cache = tmp_path / "cache"
    with pytest.warns(RuntimeWarning, match=r"'m' was computed but not cached: a saved baseline folder it reads "
                                            r"changed while it ran"):
        row = run(model, x, method, cache)
    assert not row.cached and not (os.path.isdir(cache) and os.listdir(cache))
    expected = run(model, x, tfattr.IntegratedGradients(model, baseline=other, steps=4))
    after = run(model, x, tfattr.IntegratedGradients(model, baseline=folder, steps=4), cache)
    assert not after.cached
    np.testing.assert_allclose(values(after), values(expected), rtol=1e-6, atol=1e-7)


def _wired(chain):
    """The same layers, with the same weights, wired as ``c2(c1(x))`` or as ``c2(x)`` beside ``c1(x)``."""
    import keras

    keras.utils.set_random_seed(11)
    inputs = keras.Input((SIZE, SIZE, 3), name="x")
    c1 = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c1")
    c2 = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c2")
    h1 = c1(inputs)
    h2 = c2(h1 if chain else inputs)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Add(name="add")([h1, h2]))
    return keras.Model(inputs, keras.layers.Dense(5, name="dense")(h), name="wired")


def test_two_models_of_the_same_layers_and_weights_wired_otherwise_have_other_keys(x):
    chained, parallel = _wired(True), _wired(False)
    assert not np.allclose(chained(x).numpy(), parallel(x).numpy(), atol=1e-4)  # another function
    keys = [result_key(m, x, tfattr.Gradient(m), np.array([0, 1]), settings={"seed": 0}) for m in (chained, parallel)]
    assert keys[0] != keys[1]
    assert keys[0] == result_key(_wired(True), x, tfattr.Gradient(chained), np.array([0, 1]), settings={"seed": 0})


def test_a_fifo_at_a_rows_path_is_damaged_not_a_hang(model, x, tmp_path):
    key = result_key(model, x, tfattr.Gradient(model), np.array([0, 1]), None, dict(
        value_range=(0.0, 1.0), aupc_kernel=4, aupc_regions=2, aupc_perturbations=2, pixels_per_step=300,
        pointing_tolerance=15, seed=0))
    os.mkfifo(tmp_path / f"{key[:32]}.npz")  # reading it would wait for a writer forever
    with pytest.warns(RuntimeWarning, match=r"cannot be read.*not a regular file.*recomputing"):
        row = run(model, x, tfattr.Gradient(model), tmp_path)
    assert not row.cached and run(model, x, tfattr.Gradient(model), tmp_path).cached  # replaced by the row


def test_concurrent_writers_of_one_row_leave_a_whole_file_for_every_reader(tmp_path):
    """Two writers storing the same row while a reader reads it: every read sees a whole row
    (atomic rename), never a half-written file (a damaged read would be ``None``)."""
    import threading

    from tfattr.evaluation import EvaluationRow, _load_row, _store_row

    class Keyed:
        def cache_key(self):
            return {"k": 1}

    path, key = str(tmp_path / "row.npz"), "k" * 64
    row = EvaluationRow("m", 1.0, 2, {"AUPC": 0.5}, {"AUPC": np.arange(200.0)}, {"AUPC": np.linspace(0, 1, 5000)})
    _store_row(path, key, row, Keyed(), {"k": 1})
    reads, stop = [], threading.Event()

    def write():
        for _ in range(40):
            _store_row(path, key, row, Keyed(), {"k": 1})

    def read():
        while not stop.is_set():
            reads.append(_load_row(path, "m", key, 200))

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write) for _ in range(2)]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert reads and all(r is not None and np.array_equal(r.per_image["AUPC"], np.arange(200.0)) for r in reads)
    assert os.listdir(tmp_path) == ["row.npz"]  # no temporary file left


def test_a_baseline_folder_is_keyed_through_links_and_a_link_cycle_ends(model, tmp_path):
    """``variables`` as a link to another folder: replacing what it points to changes the key and
    what ``cached_load`` returns; a link back to the folder itself is read once."""
    import shutil

    from tfattr.baselines.saved import cached_load, folder_digest, load_baseline

    first, second = _baseline_folders(model, tmp_path)
    linked = tmp_path / "linked"
    linked.mkdir()
    shutil.copy(os.path.join(first, "saved_model.pb"), linked / "saved_model.pb")
    shutil.copy(os.path.join(first, "metadata.json"), linked / "metadata.json")
    target = tmp_path / "target"
    shutil.copytree(os.path.join(first, "variables"), target)
    (linked / "variables").symlink_to(target)
    (linked / "loop").symlink_to(linked)
    before = folder_digest(linked)
    np.testing.assert_array_equal(cached_load(str(linked)).array, load_baseline(first).array)
    shutil.rmtree(target)
    shutil.copytree(os.path.join(second, "variables"), target)  # only what the link points to changes
    assert folder_digest(linked) != before
    np.testing.assert_array_equal(cached_load(str(linked)).array, load_baseline(second).array)


def test_canonical_keeps_dict_key_types_apart_and_refuses_object_arrays():
    assert canonical({1: 0.5}) != canonical({"1": 0.5})
    assert canonical({"b": 1, 2: 3}) == canonical({2: 3, "b": 1})
    first, second = np.empty(1, object), np.empty(1, object)
    first[0], second[0] = [1.0], [2.0]
    with pytest.raises(Uncacheable, match="baseline is an object array"):
        canonical(first, "baseline")
    with pytest.raises(Uncacheable, match="object array"):
        canonical({"x": second})


def test_gradcams_default_layer_settled_by_the_run_is_cached_without_a_warning(x, tmp_path):
    """A model without symbolic outputs: Grad-CAM finds its layer on the first inputs, which changes
    the method's key but reads no file: the row is cached, and served under the settled key."""
    import keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
            self.pool = keras.layers.GlobalAveragePooling2D()
            self.dense = keras.layers.Dense(5)

        def call(self, inputs):
            return self.dense(self.pool(self.conv(inputs)))

    keras.utils.set_random_seed(2)
    net = Net()
    net(x[:1])
    method = tfattr.GradCAM(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        first = run(net, x, method, tmp_path)
        again = run(net, x, method, tmp_path)
        served = run(net, x, method, tmp_path)
    assert not first.cached and served.cached and len(os.listdir(tmp_path)) in (1, 2)
    np.testing.assert_array_equal(values(served), values(again))


def test_folder_digest_of_a_folder_holding_a_fifo_or_a_device_link_returns(tmp_path):
    """A FIFO (or a link to ``/dev/zero``) in a saved baseline folder: the digest blocked forever
    (no writer) or read without end, hanging the result key and ``cached_load``."""
    import threading

    from tfattr.baselines.saved import folder_digest

    (tmp_path / "metadata.json").write_text("{}")
    before = folder_digest(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    os.symlink("/dev/zero", tmp_path / "zeros")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    found = []
    worker = threading.Thread(target=lambda: found.append(folder_digest(tmp_path)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert found, "folder_digest did not return"
    assert found[0] != before and found[0] == folder_digest(tmp_path)  # the extra entries count, stably


def test_canonical_refuses_dict_keys_whose_names_collide():
    """``{1: a, "int:1": b}``: the int key is named ``"int:1"``, so one entry replaced the other and the
    key did not change with it (``{1: 0.5, "int:1": 9}`` and ``{1: 0.7, "int:1": 9}`` shared a key)."""
    with pytest.raises(Uncacheable, match="collide"):
        canonical({1: 0.5, "int:1": 9})
    assert canonical({1: 0.5, "int:2": 9}) != canonical({1: 0.7, "int:2": 9})


def test_a_cached_row_with_an_encrypted_or_repeated_member_is_recomputed_not_raised(tmp_path):
    """A zip member flagged encrypted made zipfile raise RuntimeError, which escaped ``evaluate``; a member
    named twice was read as whichever came last. Both are damaged rows: a warning, then a recompute."""
    import io
    import zipfile

    from tfattr.evaluation import _load_row

    def npy(array):
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    path = str(tmp_path / "row.npz")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("key.npy", npy(np.array("k")))
    data = bytearray(open(path, "rb").read())
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 1  # the "encrypted" flag bit
    open(path, "wb").write(bytes(data))
    with pytest.warns(RuntimeWarning, match="encrypted"):
        assert _load_row(path, "m", "k") is None
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("key.npy", npy(np.array("other")))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
            archive.writestr("key.npy", npy(np.array("k")))
    with pytest.warns(RuntimeWarning, match="appears twice"):
        assert _load_row(path, "m", "k") is None
