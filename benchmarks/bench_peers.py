"""Side by side with peer libraries: speed, peak memory, agreement and time-to-accuracy.

With the optional peers installed (``pip install .[peers]``: xplique, tf-explain, PAIR
saliency) this runs, in one process, on the same model and inputs:

* Integrated Gradients (50 steps, zero baseline), SmoothGrad (same N and σ) and Grad-CAM
  (same layer) with tfattr and with each peer, on the small VGG-style CNN of
  ``bench_engine.py`` (64×64, batch 16, non-zero biases). Per library: seconds (best of 2
  after a warm-up, Grad-CAM best of 5; the timed runs of all libraries are interleaved so that
  load from other processes hits them alike; for libraries with a batch-size knob, the best
  over the chunk sizes 16, 32, 64), the ratio peer / tfattr, the peak resident-memory increase
  during the warm-up run and the agreement with tfattr: ``max |peer − tfattr| / max |tfattr|``
  where tfattr is run with the peer's own integration rule (and, for SmoothGrad, the peer is
  fed tfattr's noise draws).
  Also tfattr IG against the hand-written batched floor of ``bench_engine.py``.
* Time-to-accuracy on the shipped demo classifier (its logits): for tfattr with each rule,
  for tfattr's adaptive mode (``tolerance=0.01``) and for each peer's IG, the smallest step
  count in 8, 16, …, 512 whose relative completeness error
  ``|Σ attr − (f(x) − f(0))| / |f(x) − f(0)|`` (max over the batch) is ≤ 1%, and its seconds.

    pip install .[peers]
    python benchmarks/bench_peers.py            # everything (a few minutes on 2 CPU cores)
    python benchmarks/bench_peers.py --no-tta   # skip time-to-accuracy

A peer that is not installed (or cannot run here) is reported as ``skipped: <reason>``.

How each peer is called (read from their code):

* xplique: ``attributions.IntegratedGradients / SmoothGrad / GradCAM`` with one-hot targets and
  ``reducer=None`` (full channels). IG uses ``linspace(0, 1, M)`` nodes and the trapezoid rule.
* PAIR saliency (``saliency.core``): driven by a ``call_model_function`` written here as a
  compiled ``tf.function`` (the best case for it); it works one image at a time, IG with
  ``linspace(0, 1, M)`` nodes and equal weights ``1/M`` (a rule tfattr has no name for: the
  agreement reference registers it as ``linspace_mean`` in this process only); SmoothGrad with
  ``magnitude=False`` (plain mean) and ``stdev_spread = σ / (max x − min x)`` per image.
* tf-explain: its ``explain`` methods return a picture grid, so the computational functions
  they call are timed (``generate_interpolations`` + ``get_integrated_gradients``,
  ``generate_noisy_images`` + ``get_averaged_gradients``, ``get_gradients_and_filters`` +
  ``generate_ponderated_output``). Its API takes one ``class_index`` per call: one call per
  target class (split so a call holds at most 1024 points). Its IG returns the path-averaged
  gradient without the ``(x − baseline)`` factor (multiplied in here); its SmoothGrad
  differentiates the categorical cross-entropy of the model output, not the class score (the
  agreement reference uses that score); its Grad-CAM has no final ReLU.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import itertools
import os
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfattr  # noqa: E402
from bench_engine import PeakMemory, floor_seconds, small_vgg  # noqa: E402
from tfattr.core import quadrature as quadrature_module  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO_MODEL = os.path.join(HERE, os.pardir, "examples", "assets", "digits_on_photos_cnn.keras")

STEPS = 50  # IG steps (gradient evaluations per image)
NT_SAMPLES = 50  # SmoothGrad N
SIGMA = 0.15  # SmoothGrad σ (absolute; inputs are in [0, 1])
CHUNKS = (16, 32, 64)  # batch sizes tried for every library that has the knob
TTA_STEPS = (8, 16, 32, 64, 128, 256, 512)
TTA_TOLERANCE = 0.01
TFX_MAX_POINTS = 1024  # tf-explain: at most this many points per call (it has no batching)
NOT_INSTALLED = "not installed (pip install .[peers])"
KINKS = ("   (ReLU/max-pool network: its gradient jumps across activation switches, so path or noisy points that "
         "differ in the last bit\n    between libraries can get different gradients; float32 rounding alone is "
         "~1e-7, as the Grad-CAM rows show)")
# tf-explain's Grad-CAM builds Model([model.inputs], ...), which Keras 3 accepts with this warning
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")


# --------------------------------------------------------------------------- peers

def import_peers():
    """``{name: namespace}`` of the peers that import, and ``{name: reason}`` of the others."""
    peers, skipped = {}, {}
    try:
        from xplique.attributions import GradCAM as XGradCAM
        from xplique.attributions import IntegratedGradients as XIG
        from xplique.attributions import SmoothGrad as XSmoothGrad
        from xplique.attributions.gradient_statistics.gradient_statistic import GradientStatistic
        import xplique

        peers["xplique"] = dict(version=xplique.__version__, IG=XIG, SmoothGrad=XSmoothGrad, GradCAM=XGradCAM,
                                GradientStatistic=GradientStatistic)
    except ImportError as exc:
        skipped["xplique"] = NOT_INSTALLED if "xplique" in str(exc) else f"import failed: {exc}"
    except Exception as exc:  # noqa: BLE001 - any import-time incompatibility is a result
        skipped["xplique"] = f"import failed: {type(exc).__name__}: {exc}"
    try:
        import saliency.core as saliency_core
        from saliency.core import base as saliency_base

        from importlib.metadata import version

        peers["saliency"] = dict(version=version("saliency"), core=saliency_core, base=saliency_base)
    except ImportError as exc:
        skipped["saliency"] = NOT_INSTALLED if "saliency" in str(exc) else f"import failed: {exc}"
    except Exception as exc:  # noqa: BLE001
        skipped["saliency"] = f"import failed: {type(exc).__name__}: {exc}"
    try:
        import tf_explain
        from tf_explain.core import smoothgrad as tfx_smoothgrad_module
        from tf_explain.core.grad_cam import GradCAM as TfxGradCAM
        from tf_explain.core.integrated_gradients import IntegratedGradients as TfxIG
        from tf_explain.core.smoothgrad import SmoothGrad as TfxSmoothGrad

        peers["tf-explain"] = dict(version=tf_explain.__version__, IG=TfxIG, SmoothGrad=TfxSmoothGrad,
                                   GradCAM=TfxGradCAM, smoothgrad_module=tfx_smoothgrad_module)
    except ImportError as exc:
        skipped["tf-explain"] = NOT_INSTALLED if "tf_explain" in str(exc) else f"import failed: {exc}"
    except Exception as exc:  # noqa: BLE001
        skipped["tf-explain"] = f"import failed: {type(exc).__name__}: {exc}"
    return peers, skipped


def _linspace_mean(steps):
    """saliency's and tf-explain's IG rule: α = linspace(0, 1, M) (both ends), w = 1/M."""
    return quadrature_module._normalise(np.linspace(0.0, 1.0, steps), np.full(steps, 1.0 / steps))


# Benchmark-only: lets tfattr's engine integrate with exactly the peers' rule for the agreement check.
quadrature_module.RULES.setdefault("linspace_mean", _linspace_mean)

RULE_TEXT = {
    "riemann_right": "right Riemann, α=m/M, w=1/M",
    "riemann_trapezoid": "trapezoid, α=linspace(0,1,M)",
    "gauss_legendre": "Gauss-Legendre",
    "linspace_mean": "α=linspace(0,1,M), w=1/M",
}


# --------------------------------------------------------------------------- measuring

def _trim():
    """Give freed heap back to the OS so each run's RSS increase starts from a clean base."""
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Run:
    def __init__(self, seconds, mib, result, chunk=None):
        self.seconds, self.mib, self.result, self.chunk = seconds, mib, result, chunk


def _timed(fn):
    start = time.perf_counter()
    np.asarray(fn())
    return time.perf_counter() - start


def race(candidates, repeats, warm_up=True):
    """Time ``{key: fn}`` fairly on a shared machine: each fn runs once alone as its warm-up
    (its peak RSS increase is measured there, from a trimmed heap), then ``repeats`` rounds
    run every fn once, libraries alternating (keys ``(library, chunk)``) and the order
    reversed every other round; a fn's time is its best round. Interleaving gives every
    candidate the same chance of a quiet moment when other processes share the CPUs.
    Returns ``{key: Run}``; a fn that raises gets its exception instead of a Run.
    ``warm_up=False``: the fns have already run (no warm-up, no memory figure)."""
    runs = {}
    for key, fn in candidates.items():
        if not warm_up:
            runs[key] = Run(np.inf, float("nan"), None)
            continue
        try:
            _trim()
            with PeakMemory() as mem:
                result = np.asarray(fn())
            runs[key] = Run(np.inf, mem.mib, result, key[1] if isinstance(key, tuple) else None)
        except Exception as exc:  # noqa: BLE001 - reported as "skipped: failed here"
            runs[key] = exc
    groups = {}
    for key in candidates:
        groups.setdefault(key[0] if isinstance(key, tuple) else key, []).append(key)
    order = [key for column in itertools.zip_longest(*groups.values()) for key in column if key is not None]
    for round_index in range(repeats):
        for key in (order if round_index % 2 == 0 else order[::-1]):
            if isinstance(runs[key], Run):
                runs[key].seconds = min(runs[key].seconds, _timed(candidates[key]))
    return runs


def best_of_chunks(runs, name):
    """The fastest chunk of library ``name`` (keys ``(name, chunk)``), or its exception."""
    mine = [r for (n, _), r in runs.items() if n == name]
    ok = [r for r in mine if isinstance(r, Run)]
    return min(ok, key=lambda r: r.seconds) if ok else mine[0]


def agreement(values, reference):
    values, reference = np.asarray(values, np.float64), np.asarray(reference, np.float64)
    if values.shape != reference.shape:
        raise ValueError(f"shape {values.shape} vs tfattr {reference.shape}")
    scale = np.abs(reference).max()
    return np.abs(values - reference).max() / scale if scale > 0 else float("nan")


@contextlib.contextmanager
def patched(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


class NumpyWithDraws:
    """Stands in for a peer module's ``np`` so that its ``np.random.normal`` returns tfattr's
    noise draws (``draws[k]`` for sample k); everything else is NumPy."""

    def __init__(self, draws, whole_batch):
        self.draws, self.whole_batch, self.k = draws, whole_batch, 0
        self.random = self

    def normal(self, loc, scale, size):
        assert loc == 0 and abs(scale - SIGMA) < 1e-5, (loc, scale)
        if self.whole_batch:  # tf-explain: one call for (n · N, ...) rows, image-major
            return np.tile(self.draws, (size[0] // len(self.draws),) + (1,) * (len(size) - 1))
        draw = self.draws[self.k % len(self.draws)]  # saliency: one call per sample
        self.k += 1
        return draw

    def __getattr__(self, name):
        return getattr(np, name)


def by_class(x, targets, points_per_image, fn):
    """tf-explain takes one class_index per call: one call per class (≤ TFX_MAX_POINTS points)."""
    parts = []
    per_call = max(1, TFX_MAX_POINTS // points_per_image)
    for c in np.unique(targets):
        index = np.flatnonzero(targets == c)
        for start in range(0, len(index), per_call):
            part = index[start : start + per_call]
            parts.append((part, np.asarray(fn(x[part], int(c)))))
    out = np.empty((len(x),) + parts[0][1].shape[1:], parts[0][1].dtype)
    for part, value in parts:
        out[part] = value
    return out


# --------------------------------------------------------------------------- call functions

def saliency_gradient_fn(model, saliency):
    """PAIR saliency's ``call_model_function`` for input gradients (compiled once)."""
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)

    @tf.function(input_signature=[spec, tf.TensorSpec([], tf.int32)])
    def gradients(points, c):
        with tf.GradientTape() as tape:
            tape.watch(points)
            score = model(points, training=False)[:, c]
        return tape.gradient(score, points)

    key = saliency["core"].INPUT_OUTPUT_GRADIENTS

    def call(x_batch, call_model_args=None, expected_keys=None):
        g = gradients(tf.convert_to_tensor(x_batch, tf.float32), tf.constant(call_model_args["class"], tf.int32))
        return {key: g.numpy()}

    return call


def saliency_gradcam_fn(model, layer, saliency):
    """PAIR saliency's ``call_model_function`` for Grad-CAM: layer values and layer gradients."""
    core = saliency["core"]
    both = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)

    @tf.function(input_signature=[spec, tf.TensorSpec([], tf.int32)])
    def layer_gradients(points, c):
        with tf.GradientTape() as tape:
            activations, outputs = both(points, training=False)
            score = outputs[:, c]
        return activations, tape.gradient(score, activations)

    def call(x_batch, call_model_args=None, expected_keys=None):
        a, g = layer_gradients(tf.convert_to_tensor(x_batch, tf.float32),
                               tf.constant(call_model_args["class"], tf.int32))
        return {core.CONVOLUTION_LAYER_VALUES: a.numpy(), core.CONVOLUTION_OUTPUT_GRADIENTS: g.numpy()}

    return call


# --------------------------------------------------------------------------- IG per library

def tfattr_ig(model, steps, rule, chunk):
    ig = tfattr.IntegratedGradients(model, steps=steps, rule=rule, batch_size=chunk, verbose=0)
    return lambda x, t: ig.attribute(x, target=t).attributions


def xplique_ig(model, steps, chunk, peer):
    explainer = peer["IG"](model, steps=steps, batch_size=chunk, reducer=None)
    classes = model.output_shape[-1]
    return lambda x, t: explainer.explain(x, tf.one_hot(t, classes)).numpy()


def saliency_ig(model, steps, chunk, peer):
    method, call = peer["core"].IntegratedGradients(), saliency_gradient_fn(model, peer)

    def run(x, t):
        return np.stack([method.GetMask(x[i], call, {"class": int(t[i])}, x_steps=steps, batch_size=chunk)
                         for i in range(len(x))])

    return run


def tfexplain_ig(model, steps, peer):
    core = peer["IG"]

    def one_class(x, c):
        points = core.generate_interpolations(x, steps)
        return core.get_integrated_gradients(points, model, c, steps).numpy() * x  # (x − 0) ⊙ mean gradient

    return lambda x, t: by_class(x, t, steps, one_class)


IG_RULES = {"xplique": "riemann_trapezoid", "saliency": "linspace_mean", "tf-explain": "linspace_mean"}


# --------------------------------------------------------------------------- the three tables

def failure(exc):
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"failed here: {type(exc).__name__}: {message[:120]}"


def lazy(make, *args):
    """A zero-argument fn that builds the explainer on first use (so build errors and build
    time land in the warm-up) and then calls it on ``args``."""
    box = {}

    def fn():
        if "f" not in box:
            box["f"] = make()
        return box["f"](*args)

    return fn


def print_table(title, rows, note_width=46):
    print(f"\n{title}")
    print(f"{'library':<18} {'chunk':>5} {'seconds':>8} {'/tfattr':>8} {'peak MiB':>9} {'agreement':>10}  "
          f"{'rule / how compared':<{note_width}}")
    reference = next((r for r in rows if r["library"] == "tfattr" and "run" in r), None)
    for r in rows:
        if "skip" in r:
            print(f"{r['library']:<18} skipped: {r['skip']}")
            continue
        run = r["run"]
        ratio = run.seconds / reference["run"].seconds if reference else float("nan")
        agree = r.get("agree")
        agree_text = "—" if agree is None else (agree if isinstance(agree, str) else f"{agree:.1e}")
        chunk = "-" if run.chunk is None else str(run.chunk)
        print(f"{r['library']:<18} {chunk:>5} {run.seconds:>8.3f} {ratio:>8.2f} {run.mib:>9.0f} {agree_text:>10}  "
              f"{r.get('note', '')}")
    timed = [r for r in rows if "run" in r]
    fastest = min(timed, key=lambda r: r["run"].seconds)
    others = [r for r in timed if r["library"] != "tfattr"]
    if fastest["library"] == "tfattr":
        verdict = "yes" + (f" (next: {min(others, key=lambda r: r['run'].seconds)['library']})" if others
                           else " (no peer ran)")
    else:
        verdict = f"no, {fastest['library']} is"
    print(f"tfattr fastest: {verdict}")


def peer_row(name, peer, runs, check):
    """A table row for peer ``name`` from its race result; ``check(run) -> (agreement, note)``."""
    label = f"{name} {peer['version']}"
    run = best_of_chunks(runs, name)
    if not isinstance(run, Run):
        return {"library": label, "skip": failure(run)}
    try:
        out = check(run)
    except Exception as exc:  # noqa: BLE001
        out = {"agree": "error", "note": failure(exc)}
    return dict({"library": label, "run": run}, **out)


def bench_ig(model, x, t, peers, skipped, repeats):
    candidates = {("tfattr", c): lazy(lambda c=c: tfattr_ig(model, STEPS, "riemann_right", c), x, t) for c in CHUNKS}
    if "xplique" in peers:
        candidates.update({("xplique", c): lazy(lambda c=c: xplique_ig(model, STEPS, c, peers["xplique"]), x, t)
                           for c in CHUNKS})
    if "saliency" in peers:
        candidates.update({("saliency", c): lazy(lambda c=c: saliency_ig(model, STEPS, c, peers["saliency"]), x, t)
                           for c in CHUNKS})
    if "tf-explain" in peers:
        candidates[("tf-explain", None)] = lazy(lambda: tfexplain_ig(model, STEPS, peers["tf-explain"]), x, t)

    floors = {c: floor_seconds(model, x, t, STEPS, c) for c in CHUNKS}
    runs = race(candidates, repeats)
    floors = {c: min(floors[c], floor_seconds(model, x, t, STEPS, c)) for c in CHUNKS}  # before and after
    mine = best_of_chunks(runs, "tfattr")
    print(f"\n== tfattr IG vs the hand-written batched floor (bench_engine.floor_seconds: precomputed points, one "
          f"compiled fwd+bwd per chunk; right rule, {STEPS} steps, {len(x) * STEPS} gradients)")
    print(f"{'chunk':>6} {'floor s':>9} {'tfattr s':>9} {'ratio':>7} {'tfattr peak MiB':>16}")
    for c in CHUNKS:
        r = runs[("tfattr", c)]
        print(f"{c:>6} {floors[c]:>9.3f} {r.seconds:>9.3f} {r.seconds / floors[c]:>7.3f} {r.mib:>16.0f}")
    floor = min(floors.values())
    ratio = mine.seconds / floor
    print(f"best floor {floor:.3f}s; tfattr at its best chunk ({mine.chunk}) {mine.seconds:.3f}s -> ratio "
          f"{ratio:.3f} (goal <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")

    references = {}

    def reference(rule):
        if rule not in references:
            references[rule] = np.asarray(tfattr_ig(model, STEPS, rule, mine.chunk)(x, t))
        return references[rule]

    rows = [{"library": "tfattr", "run": mine, "note": RULE_TEXT["riemann_right"] + " (the papers' rule)"}]
    for name in ("xplique", "saliency", "tf-explain"):
        if name in skipped:
            rows.append({"library": name, "skip": skipped[name]})
            continue
        rule = IG_RULES[name]
        rows.append(peer_row(name, peers[name], runs, lambda run, rule=rule: {
            "agree": agreement(run.result, reference(rule)),
            "note": f"{RULE_TEXT[rule]} -> tfattr rule={rule}"}))
    print_table(f"== Integrated Gradients, {STEPS} steps, zero baseline: small VGG-style CNN 64×64, batch {len(x)} "
                f"({len(x) * STEPS} gradients), best of {repeats} interleaved after a warm-up\n"
                "   agreement = max|peer − tfattr| / max|tfattr|, tfattr run with the peer's rule", rows)
    if any("agree" in r for r in rows):
        print(KINKS)
    return mine.chunk


def bench_smoothgrad(model, x, t, peers, skipped, repeats):
    classes = model.output_shape[-1]
    onehot = tf.one_hot(t, classes)
    probabilities = keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0]))  # for tf-explain

    def tunnel(chunk, on=model):
        return tfattr.NoiseTunnel(tfattr.Gradient(on, batch_size=chunk, verbose=0), nt_samples=NT_SAMPLES,
                                  stdevs=SIGMA, seed=0)

    def xplique_sg(chunk):
        explainer = peers["xplique"]["SmoothGrad"](model, nb_samples=NT_SAMPLES, noise=SIGMA, batch_size=chunk,
                                                   reducer=None)
        return lambda: explainer.explain(x, onehot).numpy()

    def saliency_sg():
        peer = peers["saliency"]
        method, call = peer["core"].GradientSaliency(), saliency_gradient_fn(model, peer)
        return lambda: np.stack([
            method.GetSmoothedMask(x[i], call, {"class": int(t[i])}, stdev_spread=SIGMA / float(x[i].max() - x[i].min()),
                                   nsamples=NT_SAMPLES, magnitude=False) for i in range(len(x))])

    def tfexplain_sg(on):
        core = peers["tf-explain"]["SmoothGrad"]

        def one_class(xs, c):
            noisy = core.generate_noisy_images(xs, NT_SAMPLES, SIGMA)
            return core.get_averaged_gradients(noisy, on, c, NT_SAMPLES).numpy()

        return lambda: by_class(x, t, NT_SAMPLES, one_class)

    candidates = {("tfattr", c): lazy(lambda c=c: (lambda sg=tunnel(c): sg.attribute(x, target=t).attributions))
                  for c in CHUNKS}
    if "xplique" in peers:
        candidates.update({("xplique", c): lazy(lambda c=c: xplique_sg(c)) for c in CHUNKS})
    if "saliency" in peers:
        candidates[("saliency", None)] = lazy(saliency_sg)
    if "tf-explain" in peers:
        candidates[("tf-explain", None)] = lazy(lambda: tfexplain_sg(probabilities))
    runs = race(candidates, repeats)

    mine = best_of_chunks(runs, "tfattr")
    reference_sg = tunnel(mine.chunk)
    draws = reference_sg.noise(x.shape[1:], reference_sg.config).astype(np.float32)  # (N, H, W, C), same per image
    reference = mine.result

    def check_xplique(run):
        explainer = peers["xplique"]["SmoothGrad"](model, nb_samples=NT_SAMPLES, noise=SIGMA, batch_size=run.chunk,
                                                   reducer=None)
        state = {"offset": 0}

        def tfattr_noise(inputs, nb_perturbations, noise):
            block = draws[state["offset"] : state["offset"] + nb_perturbations]
            state["offset"] = (state["offset"] + nb_perturbations) % NT_SAMPLES
            repeated = tf.repeat(inputs, repeats=nb_perturbations, axis=0)
            return repeated + tf.constant(np.tile(block, (int(inputs.shape[0]), 1, 1, 1)))

        with patched(peers["xplique"]["GradientStatistic"], "_perturb_samples", staticmethod(tfattr_noise)):
            matched = explainer.explain(x, onehot).numpy()
        return {"agree": agreement(matched, reference), "own": agreement(run.result, reference),
                "note": "mean of ∂f_c/∂x"}

    def check_saliency(run):
        with patched(peers["saliency"]["base"], "np", NumpyWithDraws(draws, whole_batch=False)):
            matched = saliency_sg()()
        return {"agree": agreement(matched, reference), "own": agreement(run.result, reference),
                "note": "magnitude=False; 1 image × 1 sample per call"}

    def check_tfexplain(run):
        def cross_entropy(xs, c):  # tf-explain's score: categorical cross-entropy of the output
            def score(outputs):
                return keras.losses.categorical_crossentropy(tf.one_hot(tf.fill(tf.shape(outputs)[:1], c), classes),
                                                             outputs)

            return tunnel(mine.chunk, on=probabilities).attribute(xs, target=score).attributions

        ref = by_class(x, t, NT_SAMPLES, cross_entropy)
        with patched(peers["tf-explain"]["smoothgrad_module"], "np", NumpyWithDraws(draws, whole_batch=True)):
            matched = tfexplain_sg(probabilities)()
        on_logits = np.abs(tfexplain_sg(model)()).max()
        return {"agree": agreement(matched, ref), "own": agreement(run.result, ref),
                "note": f"∂ cross-entropy(softmax)/∂x on model+Softmax (on the logits: max|attr| = {on_logits:.0e})"}

    checks = {"xplique": check_xplique, "saliency": check_saliency, "tf-explain": check_tfexplain}
    rows = [{"library": "tfattr", "run": mine, "note": "mean of ∂f_c/∂x (NoiseTunnel(Gradient))"}]
    for name in ("xplique", "saliency", "tf-explain"):
        if name in skipped:
            rows.append({"library": name, "skip": skipped[name]})
        else:
            rows.append(peer_row(name, peers[name], runs, checks[name]))
    print_table(f"== SmoothGrad, N = {NT_SAMPLES}, σ = {SIGMA}: small VGG-style CNN 64×64, batch {len(x)} "
                f"({len(x) * NT_SAMPLES} gradients), best of {repeats} interleaved after a warm-up\n"
                "   agreement = max|peer − tfattr| / max|tfattr| with the peer fed tfattr's noise draws", rows,
                note_width=20)
    if any("agree" in r for r in rows):
        print(KINKS)
    own = [f"{r['library']} {r['own']:.2f}" for r in rows if "own" in r]
    if own:
        print("   same, each with its own noise (Monte-Carlo spread, not an error): " + ", ".join(own))


def bench_gradcam(model, x, t, layer, peers, skipped, repeats):
    classes = model.output_shape[-1]
    onehot = tf.one_hot(t, classes)

    def cam(**options):
        method = tfattr.GradCAM(model, layer=layer, batch_size=len(x), verbose=0, **options)
        return lambda: np.asarray(method.attribute(x, target=t).attributions)

    def saliency_cam(resize):
        peer = peers["saliency"]
        method, call = peer["core"].GradCam(), saliency_gradcam_fn(model, layer, peer)
        return lambda: np.stack([method.GetMask(x[i], call, {"class": int(t[i])}, should_resize=resize,
                                                three_dims=False) for i in range(len(x))])

    def tfexplain_cam():
        core = peers["tf-explain"]["GradCAM"]

        def one_class(xs, c):
            outputs, grads = core.get_gradients_and_filters(model, xs, layer, c, False)
            return np.stack([m.numpy() for m in core.generate_ponderated_output(outputs, grads)])

        return lambda: by_class(x, t, 1, one_class)

    candidates = {("tfattr", None): lazy(cam)}
    if "xplique" in peers:
        candidates[("xplique", None)] = lazy(lambda: (lambda e=peers["xplique"]["GradCAM"](
            model, conv_layer=layer, batch_size=len(x)): e.explain(x, onehot).numpy()[..., 0]))
    if "saliency" in peers:
        candidates[("saliency", None)] = lazy(lambda: saliency_cam(True))
    if "tf-explain" in peers:
        candidates[("tf-explain", None)] = lazy(tfexplain_cam)
    runs = race(candidates, repeats)

    layer_map = cam(upsample=False)()  # (N, h, w), ReLU'd
    checks = {
        "xplique": lambda run: {
            "agree": agreement(run.result, tf.image.resize(layer_map[..., None], x.shape[1:3],
                                                           method="bicubic").numpy()[..., 0]),
            "note": "ReLU, bicubic upsample; tfattr map upsampled bicubic"},
        "saliency": lambda run: {
            "agree": agreement(saliency_cam(False)(), layer_map),
            "note": "1 image per call, ReLU, max-normalised, skimage resize; compared at layer size unnormalised"},
        "tf-explain": lambda run: {
            "agree": agreement(run.result, cam(upsample=False, relu=False)()),
            "note": "no ReLU, no upsampling (use_guided_grads=False); tfattr relu=False"},
    }
    rows = [{"library": "tfattr", "run": best_of_chunks(runs, "tfattr"),
             "note": "ReLU, bilinear upsample to 64×64 (+1 forward pass: it also returns f(x))"}]
    for name in ("xplique", "saliency", "tf-explain"):
        if name in skipped:
            rows.append({"library": name, "skip": skipped[name]})
        else:
            rows.append(peer_row(name, peers[name], runs, checks[name]))
    print_table(f"== Grad-CAM at {layer!r} (last conv): small VGG-style CNN 64×64, batch {len(x)}, best of {repeats} "
                "interleaved after a warm-up\n"
                "   agreement = max|peer − tfattr| / max|tfattr| after matching ReLU / upsampling", rows)


# --------------------------------------------------------------------------- time to accuracy

def time_to_accuracy(peers, skipped, chunk, repeats):
    from tfattr.data import digits_on_photos

    model = tfattr.surgery.logits_model(keras.models.load_model(DEMO_MODEL))
    x = digits_on_photos(8, split="test", seed=7)["image"]
    scores = model(x, training=False).numpy()
    t = np.argmax(scores, axis=1).astype(np.int32)
    rows_index = np.arange(len(x))
    gap = scores[rows_index, t] - model(np.zeros_like(x), training=False).numpy()[rows_index, t]

    def error(attributions):
        total = np.asarray(attributions, np.float64).reshape(len(x), -1).sum(axis=1)
        return float(np.max(np.abs(total - gap) / np.abs(gap)))

    contenders = {f"tfattr {r}": (lambda s, r=r: tfattr_ig(model, s, r, chunk)) for r in
                  ("riemann_right", "riemann_trapezoid", "gauss_legendre")}
    makers = {"xplique": lambda s: xplique_ig(model, s, chunk, peers["xplique"]),
              "saliency": lambda s: saliency_ig(model, s, chunk, peers["saliency"]),
              "tf-explain": lambda s: tfexplain_ig(model, s, peers["tf-explain"])}
    for name in ("xplique", "saliency", "tf-explain"):
        rule = IG_RULES[name]
        contenders[f"{name} ({RULE_TEXT[rule]})"] = skipped[name] if name in skipped else makers[name]

    found, timed = {}, {}
    for label, make in contenders.items():  # search; each run is also the warm-up of its step count
        if isinstance(make, str):
            found[label] = f"skipped: {make}"
            continue
        try:
            for steps in TTA_STEPS:
                fn = make(steps)
                err = error(fn(x, t))
                if err <= TTA_TOLERANCE:
                    break
            found[label] = (steps if err <= TTA_TOLERANCE else f"> {TTA_STEPS[-1]}", err)
            if err <= TTA_TOLERANCE:
                timed[label] = lambda fn=fn: fn(x, t)
        except Exception as exc:  # noqa: BLE001
            found[label] = failure(exc)
    adaptive_label = f"tfattr tolerance={TTA_TOLERANCE:g} (adaptive)"
    adaptive = tfattr.IntegratedGradients(model, tolerance=TTA_TOLERANCE, batch_size=chunk, verbose=0)
    expl = adaptive.attribute(x, target=t)
    steps = np.asarray(expl.info["steps"])
    found[adaptive_label] = (f"{steps.min()}–{steps.max()}", error(expl.attributions), int(expl.gradients))
    timed[adaptive_label] = lambda: adaptive.attribute(x, target=t).attributions
    seconds = {label: run.seconds for label, run in race(timed, repeats, warm_up=False).items() if isinstance(run, Run)}

    print(f"\n== Time to accuracy: demo classifier (logits of examples/assets/digits_on_photos_cnn.keras), "
          f"{len(x)} test images 64×64, zero baseline, chunk {chunk}")
    print(f"   smallest steps in {TTA_STEPS} with max relative completeness error "
          f"|Σ attr − (f(x) − f(0))| / |f(x) − f(0)| ≤ {TTA_TOLERANCE:.0%}; seconds at that step count, best of "
          f"{repeats} interleaved")
    print(f"   |f(x) − f(0)| over the batch: {np.abs(gap).min():.2f} … {np.abs(gap).max():.2f}")
    print(f"{'library (rule)':<46} {'steps':>7} {'gradients':>10} {'max rel err':>12} {'seconds':>8} "
          f"{'/fastest':>8} {'/GL':>6}")
    fastest = min(seconds.values()) if seconds else None
    gl = seconds.get("tfattr gauss_legendre")
    for label, r in found.items():
        if isinstance(r, str):
            print(f"{label:<46} {r}")
            continue
        gradients = r[2] if len(r) > 2 else (r[0] * len(x) if isinstance(r[0], int) else "—")
        sec = seconds.get(label)
        sec_text = f"{sec:8.3f}" if sec is not None else f"{'—':>8}"
        vs_fastest = f"{sec / fastest:8.2f}" if sec is not None else f"{'—':>8}"
        vs_gl = f"{sec / gl:6.2f}" if (sec is not None and gl) else f"{'—':>6}"
        print(f"{label:<46} {str(r[0]):>7} {str(gradients):>10} {r[1]:>12.2e} {sec_text} {vs_fastest} {vs_gl}")
    if seconds:
        print(f"   fastest to {TTA_TOLERANCE:.0%}: {min(seconds, key=seconds.get)}"
              + ("" if gl else f"; Gauss-Legendre did not reach {TTA_TOLERANCE:.0%} within {TTA_STEPS[-1]} steps"))
    print("   adaptive: steps per image (nested trapezoid levels 2^k + 1, no gradient computed twice); "
          "gradients = total over the batch")


# --------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-tta", action="store_true", help="skip time-to-accuracy on the demo classifier")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per candidate after the warm-up")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")  # retracing notices of the peers' tf.functions
    start = time.perf_counter()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, tfattr {tfattr.__version__}, "
          f"CPU threads: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    peers, skipped = import_peers()
    for name in ("xplique", "saliency", "tf-explain"):
        print(f"  {name:<11} " + (peers[name]["version"] if name in peers else f"skipped: {skipped[name]}"))

    model = small_vgg()
    x = np.random.default_rng(0).uniform(0, 1, (16, 64, 64, 3)).astype(np.float32)
    t = np.argmax(model(x, training=False).numpy(), axis=1).astype(np.int32)
    layer = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    print(f"small VGG targets (top-1 per image): classes {sorted(set(t.tolist()))}")

    chunk = bench_ig(model, x, t, peers, skipped, args.repeats)
    bench_smoothgrad(model, x, t, peers, skipped, args.repeats)
    bench_gradcam(model, x, t, layer, peers, skipped, max(args.repeats, 5))
    if not args.no_tta:
        time_to_accuracy(peers, skipped, chunk, args.repeats)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f}s, load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
