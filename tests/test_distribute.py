"""Attribution sharded over two logical CPU devices equals the single-device run, and the
engine's worker threads run chunks on the caller's device.

Logical devices must be configured before TensorFlow starts, so the check runs in a fresh
Python process.
"""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What holds on any CPU (COMMON is pasted into both scripts):
# * attributions: a sharded run pushes other batch compositions through the same float32 kernels,
#   which may pick other blockings and sum in another order. In these 4-layer CNNs a unit sums at
#   most 24·24·8 = 4608 terms, so the rounding difference stays within depth · √n · eps32
#   ≈ 4 · 68 · 1.2e-7 ≈ 3e-5 of the map's largest value; the bound is 1e-4 of it, per image. The models are smooth
#   (tanh, average pooling): at a ReLU or max-pool switch sitting on a last-bit tie a gradient can
#   change by O(1), which is not rounding and not what these tests are about.
# * metrics are compared on identical maps (the single-device maps, looked up by image), so the
#   rankings are identical and only the forward passes differ by rounding, δ ≤ 1e-5 of the largest
#   |logit| (same argument): a deletion/insertion area, a mean of probabilities, moves by ≤ δ; an
#   AUPC area, Simpson over L+1 points of s/|f₀| whose weights sum to L, by ≤ L·δ·(1 + max|c|)/|f₀|.
COMMON = textwrap.dedent("""
    import numpy as np
    from tfattr import metrics
    from tfattr.core.result import Explanation

    def assert_same_attributions(actual, expected, what=""):
        actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
        scale = np.abs(expected).reshape(len(expected), -1).max(axis=1)
        error = np.abs(actual - expected).reshape(len(expected), -1).max(axis=1)
        assert np.all(error <= 1e-4 * scale + 1e-30), (what, error, scale)

    class Frozen:
        # the single-device maps, looked up by image: metrics compared on identical maps
        def __init__(self, images, maps):
            self.images, self.maps = np.asarray(images), np.asarray(maps)

        def attribute(self, images, target=None, **options):
            rows = [int(np.flatnonzero((self.images == x).all(axis=(1, 2, 3)))[0]) for x in np.asarray(images)]
            return Explanation(self.maps[rows], "frozen", gradients=len(rows))

    def assert_same_metrics(model, images, maps, labels, one, two, kernel, regions):
        logits = np.asarray(model.predict(images, verbose=0), np.float64)
        delta = 1e-5 * np.abs(logits).max()
        reference = metrics.aupc(model, images, maps, target=labels, kernel_size=kernel, regions=regions, verbose=0)
        f0 = np.abs(reference.scores[:, 0])
        aupc_bound = regions * delta * (1 + np.abs(reference.curve).max(axis=1)) / f0
        np.testing.assert_allclose(one.per_image["AUPC"], reference.area, rtol=0, atol=0)  # same call, same machine
        assert np.all(np.abs(two.per_image["AUPC"] - one.per_image["AUPC"]) <= aupc_bound), (
            two.per_image["AUPC"], one.per_image["AUPC"], aupc_bound)
        for key in ("deletion", "insertion"):
            np.testing.assert_allclose(two.per_image[key], one.per_image[key], rtol=0, atol=delta, err_msg=key)
            np.testing.assert_allclose(two.curves[key], one.curves[key], rtol=0, atol=delta, err_msg=key)
        for key in set(one.per_image) - {"AUPC", "deletion", "insertion"}:  # functions of the maps alone
            np.testing.assert_array_equal(two.per_image[key], one.per_image[key], err_msg=key)
""")

SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
    from conftest import small_cnn
    import tfattr
    from tfattr.distribute import distributed_attribute, replica_devices
    exec(sys.argv[2])

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert len(replica_devices(strategy)) == 2, replica_devices(strategy)
    model = small_cnn("tanh")
    x = np.random.default_rng(0).uniform(0, 1, (5, 16, 16, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4])
    checks = [
        (tfattr.IntegratedGradients(model, steps=8, baseline="uniform", n_baselines=2, seed=1), labels),
        (tfattr.NoiseTunnel(tfattr.Gradient(model), nt_samples=4, seed=2), None),
        (tfattr.GradCAM(model), labels),
        (tfattr.SmoothTaylor(model, roots=6, sigma=0.1, seed=3), None),
        (tfattr.RSIGradCAM(model, steps=4, rule="trapezoid", positive_units=True), labels),
    ]
    for method, target in checks:
        single = method.attribute(x, target=target)
        spread = distributed_attribute(method, x, target=target, strategy=strategy)
        assert spread.info["replicas"] == 2, spread.info
        assert_same_attributions(spread, single, type(method).__name__)
        np.testing.assert_array_equal(spread.targets, single.targets)
        if single.delta is not None:  # a sum of the attributions against f(x) − f(z): same bound, on the sum
            np.testing.assert_allclose(spread.delta, single.delta, rtol=0,
                                       atol=1e-4 * np.abs(np.asarray(single)).reshape(len(x), -1).sum(axis=1).max())
        assert spread.gradients == single.gradients
        if "selected" in single.info:  # per-example info comes back for every row, in order
            np.testing.assert_allclose(spread.info["selected"], single.info["selected"])
            assert len(spread.info["selected"]) == len(x)
    # several steps per replica, per-example info gathered in order
    ig = tfattr.IntegratedGradients(model, tolerance=1e-2, max_steps=65)
    single = ig.attribute(x, target=labels)
    spread = distributed_attribute(ig, x, target=labels, strategy=strategy, images_per_replica=1)
    assert_same_attributions(spread, single, "tolerance")
    np.testing.assert_array_equal(spread.info["steps"], single.info["steps"])
    np.testing.assert_allclose(spread.info["relative_error"], single.info["relative_error"], rtol=1e-3, atol=1e-6)
    assert spread.gradients == single.gradients
    # one image on two replicas: the empty replica still joins the gather; the default strategy works too
    for strat in (strategy, None):
        alone = distributed_attribute(ig, x[:1], target=labels[:1], strategy=strat)
        assert_same_attributions(alone, np.asarray(single)[:1], "alone")
        np.testing.assert_array_equal(alone.info["steps"], single.info["steps"][:1])
    # chunks in flight run on the caller's device from every worker thread (tf.device is per thread)
    import contextlib, threading
    ig = tfattr.IntegratedGradients(model, steps=8, batch_size=4, parallel_chunks=2, verbose=0)
    ig.attribute(x[:1], target=0)
    engine = ig._engines[("index", False)]
    seen, build = [], engine._chunk_function

    def recording(*args, **kwargs):
        chunk = build(*args, **kwargs)

        def run(*inputs):
            outputs = chunk(*inputs)
            seen.append((threading.current_thread().name, outputs[1].device.split("device:")[-1]))
            return outputs
        return run

    engine._chunk_function = recording
    for device, expected in (("/cpu:1", "CPU:1"), ("/cpu:0", "CPU:0"), (None, "CPU:0")):
        seen.clear()
        with tf.device(device) if device else contextlib.nullcontext():
            ig.attribute(x, target=labels)
        assert len({name for name, _ in seen}) == 3, seen  # the caller and two workers
        assert {where for _, where in seen} == {expected}, (device, seen)
    from tfattr.evaluation import evaluate
    model32 = small_cnn("tanh", size=48)  # AUTVC needs two pyramid levels: maps of at least 44 px
    x32 = np.random.default_rng(1).uniform(0, 1, (5, 48, 48, 3)).astype(np.float32)
    masks = np.zeros((5, 48, 48), bool)
    masks[:, 8:20, 8:20] = True
    for method in (tfattr.IntegratedGradients(model32, steps=4), tfattr.GradCAM(model32)):
        maps = np.asarray(method.attribute(x32, target=labels))
        pairs = [("frozen", Frozen(x32, maps))]
        kwargs = dict(labels=labels, masks=masks, aupc_kernel=3, aupc_regions=4, verbose=False)
        one = evaluate(model32, x32, pairs, **kwargs)[0]
        two = evaluate(model32, x32, pairs, strategy=strategy, **kwargs)[0]
        assert_same_metrics(model32, x32, maps, labels, one, two, kernel=3, regions=4)
        assert np.all(np.isfinite(one.per_image["AUTVC"])), one.per_image["AUTVC"]
    print("OK")
""")


def test_two_logical_devices_give_the_single_device_result():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    done = subprocess.run([sys.executable, "-c", SCRIPT, ROOT, COMMON], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stdout[-2000:] + done.stderr[-4000:]


WORKER = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG; first thing in the program
    import numpy as np
    sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
    from conftest import small_cnn
    import tfattr
    from tfattr.distribute import distributed_attribute
    from tfattr.evaluation import evaluate
    exec(sys.argv[2])

    assert strategy.num_replicas_in_sync == 2
    model = small_cnn("tanh", size=32)
    x = np.random.default_rng(0).uniform(0, 1, (5, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4])
    ig = tfattr.IntegratedGradients(model, steps=8, baseline="uniform", n_baselines=2, seed=1)
    local = []

    class Recording:  # records the rows this worker attributes itself
        def attribute(self, images, target=None, **options):
            local.append(len(images))
            return ig.attribute(images, target=target, **options)

    spread = distributed_attribute(Recording(), x, target=labels, strategy=strategy, images_per_replica=2)
    assert 0 < sum(local) < len(x), local  # a share, not the whole batch
    single = ig.attribute(x, target=labels)
    assert_same_attributions(spread, single, "multi-worker")
    np.testing.assert_allclose(spread.delta, single.delta, rtol=0,
                               atol=1e-4 * np.abs(np.asarray(single)).reshape(len(x), -1).sum(axis=1).max())
    assert spread.gradients == single.gradients and spread.info["replicas"] == 2
    maps = np.asarray(tfattr.GradCAM(model).attribute(x, target=labels))
    pairs = [("frozen", Frozen(x, maps))]
    kwargs = dict(labels=labels, aupc_kernel=3, aupc_regions=4, verbose=False)
    two = evaluate(model, x, pairs, strategy=strategy, **kwargs)[0]
    one = evaluate(model, x, pairs, **kwargs)[0]
    assert_same_metrics(model, x, maps, labels, one, two, kernel=3, regions=4)
    print("OK")
""")


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_of_a_multi_worker_strategy_each_get_the_whole_result():
    """Two processes on this host form a MultiWorkerMirroredStrategy cluster (TF_CONFIG); the
    dataset is sharded across them and each receives every worker's rows, in order."""
    import json

    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", TF_CONFIG=config)
        workers.append(subprocess.Popen([sys.executable, "-c", WORKER, ROOT, COMMON], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=600) + (worker.returncode,))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    for stdout, stderr, code in outputs:
        assert code == 0 and stdout.strip().endswith("OK"), stdout[-2000:] + stderr[-4000:]


SEVERAL_INPUTS = textwrap.dedent("""
    import os, sys
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    import tfattr
    from tfattr.distribute import distributed_attribute
    exec(sys.argv[2])

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    extra = keras.Input((4,), name="extra")
    h = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="tanh")(image))
    h = keras.layers.Concatenate()([h, keras.layers.Dense(4, activation="tanh")(extra)])
    out = keras.layers.Dense(3)(keras.layers.Dense(8, activation="tanh")(h))
    rng = np.random.default_rng(0)
    xs = [rng.uniform(0, 1, (5, 8, 8, 3)).astype(np.float32), rng.uniform(-1, 1, (5, 4)).astype(np.float32)]
    labels = np.array([0, 1, 2, 0, 1])
    for name, model, batch in (("list", keras.Model([image, extra], out), xs),
                               ("dict", keras.Model({"image": image, "extra": extra}, out),
                                {"image": xs[0], "extra": xs[1]})):
        for method in (tfattr.IntegratedGradients(model, steps=8), tfattr.Gradient(model)):
            single = method.attribute(batch, target=labels)
            spread = distributed_attribute(method, batch, target=labels, strategy=strategy)
            assert type(spread.attributions) is type(single.attributions), (name, type(spread.attributions))
            keys = list(single.attributions) if name == "dict" else range(2)
            assert (list(spread.attributions) == keys) if name == "dict" else len(spread.attributions) == 2
            for key in keys:
                assert_same_attributions(spread.attributions[key], single.attributions[key], (name, key))
            np.testing.assert_array_equal(spread.targets, single.targets)
            assert spread.gradients == single.gradients and spread.info["replicas"] == 2
    # a batch whose inputs disagree on the number of examples: a tfattr error naming `images`
    try:
        distributed_attribute(tfattr.Gradient(keras.Model([image, extra], out)), [xs[0], xs[1][:3]], strategy=strategy)
    except tfattr.errors.InvalidInputError as error:
        assert "same number of examples" in str(error) and "Received: images.shape=" in str(error), error
    else:
        raise AssertionError("no error")
    print("OK")
""")


def test_a_model_of_several_inputs_is_distributed_like_the_direct_call():
    """Issue 24 item 17: a list or dict of inputs was a raw NumPy ValueError or a false "empty batch"."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", SEVERAL_INPUTS, ROOT, COMMON], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stdout[-2000:] + done.stderr[-4000:]


def test_a_dict_of_inputs_in_another_order_than_the_model_s_keeps_each_input_s_map():
    """``{"b": …, "a": …}`` for a model whose inputs are ``[a, b]``: the explanation's dict follows the
    model's order and was zipped with the caller's keys by position, so ``a`` got ``b``'s map."""
    import keras
    import numpy as np

    import tfattr
    from tfattr.distribute import distributed_attribute

    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    out = keras.layers.Lambda(lambda t: keras.ops.stack(
        [keras.ops.sum(t[0], 1) + 10 * keras.ops.sum(t[1], 1), -keras.ops.sum(t[0], 1)], 1))([a, b])
    rng = np.random.default_rng(0)
    inputs = {"b": rng.normal(size=(4, 3)).astype("float32"), "a": rng.normal(size=(4, 3)).astype("float32")}
    for model in (keras.Model([a, b], out), keras.Model({"a": a, "b": b}, out)):
        maps = distributed_attribute(tfattr.Gradient(model), inputs, target=0).attributions
        assert list(maps) == ["b", "a"]
        np.testing.assert_array_equal(maps["a"], np.ones((4, 3)))  # ∂f/∂a = 1, ∂f/∂b = 10
        np.testing.assert_array_equal(maps["b"], np.full((4, 3), 10.0))
