"""The uniform-output baseline of Lerma & Lucas (2022), trained in front of a frozen classifier.

A black image is not "no information" to a classifier: VGG19 gives it class probabilities
from 1e-5 to 0.76. Lerma & Lucas, "Baseline computation for attribution methods based on
interpolated inputs" (§3), perturb the starting baseline ``b₀`` until the classifier's
output ``o_b`` on it is a chosen distribution ``o_t`` (uniform by default), by training

    a network with one input unit fed ``1.0`` → ``Dense(H·W·C, use_bias=False)`` whose
    kernel starts at the pixels of ``b₀`` → ``Reshape(H, W, C)`` → (optional
    preprocessing) → the frozen classifier

with the loss of their eq. (8)::

    L = λ · L_out(o_b, o_t) + (1 − λ) · L_0(b, b₀),    L_0 = MSE(b, b₀),
    L_out ∈ { max_k |o_b − o_t|_k  ("maxabs", the paper's best, with λ = 0.9),
              MSE(o_b, o_t)       ("mse"),
              −Σ_k o_t,k log o_b,k ("crossentropy") }.

:func:`train_uniform_baseline` does exactly that and returns a :class:`TrainedBaseline`
(the baseline, its before/after statistics, the training history); save it with
:func:`tfattr.baselines.save_baseline` and reuse it in any IG-family method as
``baseline="saved_baselines/NAME"``.

``o_b`` is a probability vector. A classifier ending in softmax (found by
:func:`tfattr.surgery.find_softmax_head`, or whose output on the start is non-negative and
sums to 1) is used as it is; otherwise its output is taken as logits and a softmax is
applied (``outputs="auto"``; force it with ``outputs="probabilities"`` / ``"logits"``).

The authors' notebook used RMSprop with learning rate 0.1 on the 0–255 Caffe scale, 200
epochs over 32 copies of the constant input (= 200 steps: the copies are identical, so
their gradients are too) and loss weights 0.99/0.01 on (max-abs, MSE), i.e. ``λ = 0.99``.
Here the defaults follow the paper's text (``λ = 0.9``, max-abs) with RMSprop and a
learning rate of ``1e-3 · (high − low)`` of the ``value_range``; the notebook's settings are
``lam=0.99, learning_rate=0.1, steps=200`` on a 0–255 model (``value_range=(0, 255)``).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from tfattr.baselines.records import TrainedBaseline, model_fingerprint, output_statistics
from tfattr.core.gradients import loss_gradients
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = [
    "OUTPUT_LOSSES",
    "PREPROCESSING",
    "TrainedBaseline",
    "MaxAbsStallWarning",
    "OPTIMIZERS",
    "KEEP",
    "RMSpropKeras2",
    "train_uniform_baseline",
    "model_fingerprint",
    "output_statistics",
]

#: output losses ``L_out(o_b, o_t)`` by name (Lerma & Lucas §3.1)
OUTPUT_LOSSES = ("maxabs", "mse", "crossentropy")
_LOSS_ALIASES = {
    "max_abs": "maxabs",
    "max-abs": "maxabs",
    "max": "maxabs",
    "mean_squared_error": "mse",
    "categorical_crossentropy": "crossentropy",
    "cce": "crossentropy",
    "cross_entropy": "crossentropy",
}

#: named preprocessing functions (``keras.applications.imagenet_utils.preprocess_input`` modes)
PREPROCESSING = {
    "caffe": "caffe",  # RGB → BGR, minus the ImageNet mean (VGG16/19, ResNet50)
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet50": "caffe",
    "tf": "tf",  # [0, 255] → [−1, 1] (MobileNet, Inception, Xception)
    "torch": "torch",  # [0, 255] → [0, 1], minus mean, over std (DenseNet)
}

# Starting baselines that do not depend on an image (the registry's input-dependent ones,
# gaussian, blur and max_distance, have no meaning without an image).
_STARTS = ("zero", "zeros", "black", "uniform", "uniform_noise", "noise")


# -- validation ----------------------------------------------------------------------------------
def _check_model(model) -> Tuple[Tuple[int, ...], str, int]:
    if not isinstance(model, keras.Model):
        raise InvalidTypeError("`model` must be a Keras model. " + received("type(model)", type(model).__name__))
    inputs = getattr(model, "inputs", None) or []
    outputs = getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise InvalidInputError(
            "`model` must be a built classifier with one image input and one output. "
            + received("model.inputs/outputs", (len(inputs), len(outputs)))
        )
    shape = tuple(inputs[0].shape)[1:]
    if not shape or any(d is None for d in shape):
        raise InvalidInputError(
            "`model` must have a fully defined input shape (the baseline has one size); build it "
            "with keras.Input((H, W, C)). " + received("model.input_shape", tuple(inputs[0].shape))
        )
    if len(outputs[0].shape) != 2 or outputs[0].shape[-1] is None or outputs[0].shape[-1] < 2:
        raise InvalidInputError(
            "`model` must output (batch, classes) with at least 2 classes. "
            + received("model.output_shape", tuple(outputs[0].shape))
        )
    dtype = tf.as_dtype(inputs[0].dtype)
    if not dtype.is_floating:
        raise InvalidTypeError("`model` must take a float input. " + received("model.input.dtype", dtype.name))
    return tuple(int(d) for d in shape), dtype.name, int(outputs[0].shape[-1])


def _check_fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not (0.0 <= float(value) <= 1.0):
        raise InvalidInputError(f"`{name}` must be a number in [0, 1]. " + received(name, value))
    return float(value)


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"`{name}` must be a positive integer. " + received(name, value))
    return int(value)


def _check_loss(output_loss) -> str:
    if not isinstance(output_loss, str):
        raise InvalidTypeError(f"`output_loss` must be one of {list(OUTPUT_LOSSES)}. "
                               + received("output_loss", output_loss))
    key = _LOSS_ALIASES.get(output_loss.lower(), output_loss.lower())
    if key not in OUTPUT_LOSSES:
        raise InvalidInputError(f"`output_loss` must be one of {list(OUTPUT_LOSSES)}. "
                                + received("output_loss", output_loss))
    return key


def _check_target(target_distribution, classes: int) -> np.ndarray:
    if target_distribution is None:
        return np.full(classes, 1.0 / classes)
    target = np.asarray(target_distribution, dtype=np.float64) if not isinstance(target_distribution, str) else None
    if target is None or target.shape != (classes,):
        raise InvalidInputError(
            f"`target_distribution` must be None (uniform) or a ({classes},) probability vector. "
            + received("target_distribution", target_distribution if target is None else target.shape)
        )
    if not np.isfinite(target).all() or (target < 0).any() or abs(target.sum() - 1.0) > 1e-6:
        raise InvalidInputError(
            "`target_distribution` must be non-negative and sum to 1. "
            + received("target_distribution.sum()", float(np.nansum(target)))
        )
    return target


def _check_preprocess(preprocess) -> Tuple[Optional[Callable], Optional[str]]:
    if preprocess is None:
        return None, None
    if isinstance(preprocess, str):
        mode = PREPROCESSING.get(preprocess.lower())
        if mode is None:
            raise InvalidInputError(
                f"Unknown `preprocess`; expected one of {sorted(PREPROCESSING)}, a callable or None. "
                + received("preprocess", preprocess)
            )
        from keras.applications import imagenet_utils

        def named(x, mode=mode):
            return imagenet_utils.preprocess_input(x, mode=mode)

        return named, preprocess.lower()
    if callable(preprocess):
        return preprocess, "callable:" + getattr(preprocess, "__qualname__", type(preprocess).__name__)
    raise InvalidTypeError("`preprocess` must be a name, a callable or None. " + received("preprocess", preprocess))


def _start_array(start, shape, value_range, seed) -> Tuple[np.ndarray, str]:
    from tfattr.baselines.registry import make_baselines

    dummy = np.zeros((1,) + shape)
    if isinstance(start, str):
        if start.lower() not in _STARTS:
            raise InvalidInputError(
                f"`start` must be one of {sorted(set(_STARTS))}, a number or an array {shape}. "
                + received("start", start)
            )
        baseline = make_baselines(start, dummy, value_range=value_range, n_baselines=1, seed=seed)
        return baseline.array[0, 0], start.lower()
    if isinstance(start, (bool, np.bool_)):
        raise InvalidTypeError("`start` must be a name, a number or an array. " + received("start", start))
    if isinstance(start, (int, float, np.integer, np.floating)):
        return np.full(shape, float(start)), f"constant {float(start):g}"
    if isinstance(start, (np.ndarray, tf.Tensor, tf.Variable)):
        array = np.asarray(start, dtype=np.float64)
        if array.shape == (1,) + shape:
            array = array[0]
        if array.shape != shape or not np.isfinite(array).all():
            raise InvalidInputError(
                f"`start` must be a finite array of the model's input shape {shape}. "
                + received("start.shape", array.shape)
            )
        return array, "array"
    raise InvalidTypeError("`start` must be a name, a number or an array. "
                           + received("type(start)", type(start).__name__))


def _output_kind(model, outputs: str, start_output: np.ndarray) -> str:
    if outputs not in ("auto", "probabilities", "logits"):
        raise InvalidInputError('`outputs` must be "auto", "probabilities" or "logits". '
                                + received("outputs", outputs))
    if outputs != "auto":
        return outputs
    from tfattr.surgery import find_softmax_head

    try:
        if find_softmax_head(model) is not None:
            return "probabilities"
    except Exception:  # pragma: no cover - unusual graphs: fall back to the numeric test
        pass
    row = np.asarray(start_output, np.float64).reshape(-1)
    return "probabilities" if (row >= 0).all() and abs(row.sum() - 1.0) < 1e-3 else "logits"


# -- training ------------------------------------------------------------------------------------
#: optimiser names :func:`train_uniform_baseline` takes
OPTIMIZERS = ("rmsprop", "rmsprop_keras2", "adam", "sgd")
#: which evaluated baseline :func:`train_uniform_baseline` returns
KEEP = ("best", "final")


class RMSpropKeras2(keras.optimizers.Optimizer):
    """RMSprop as Keras 2 computed it: ``ms ← ρ·ms + (1 − ρ)·g²``, ``w ← w − lr·g / (√ms + ε)``.

    Keras 3's :class:`keras.optimizers.RMSprop` divides by ``√(ms + ε)`` instead. With
    ``ε = 1e-7`` the two agree for large gradients, but for pixel gradients of ~1e-4 and below
    (a 224×224 classifier's output loss) ``√ε ≈ 3.2e-4`` dominates Keras 3's denominator and its
    steps shrink to ``lr·g/√ε``, while Keras 2's stay ``≈ lr·g/√ms`` (≈ ``lr`` per pixel once ``ms``
    has built up: a sign-like step). The uniform-output notebook of Lerma & Lucas ran Keras 2.
    Without momentum and not centred (Keras 2's defaults, ``ρ = 0.9``, ``ε = 1e-7``), ``ms``
    starting at 0.

    Example:
        >>> train_uniform_baseline(model, optimizer="rmsprop_keras2", learning_rate=0.1, lam=0.99,
        ...                        steps=200, keep="final", value_range=(0, 255))  # the notebook
    """

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-7, name="rmsprop_keras2", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho = rho
        self.epsilon = epsilon

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._mean_squares = self.add_optimizer_variables(var_list, "mean_square")

    def update_step(self, gradient, variable, learning_rate):
        lr = keras.ops.cast(learning_rate, variable.dtype)
        gradient = keras.ops.cast(gradient, variable.dtype)
        mean_square = self._mean_squares[self._get_variable_index(variable)]
        self.assign(mean_square, self.rho * mean_square + (1.0 - self.rho) * keras.ops.square(gradient))
        self.assign_sub(variable, lr * gradient / (keras.ops.sqrt(mean_square) + self.epsilon))

    def get_config(self):
        config = super().get_config()
        config.update({"rho": self.rho, "epsilon": self.epsilon})
        return config


def _build_generator(model, start: np.ndarray, preprocess,
                     variable_dtype: str) -> Tuple[keras.Model, keras.layers.Dense]:
    """constant 1.0 → Dense(H·W·C, no bias, kernel = b₀) → Reshape → preprocess → model."""
    shape = start.shape
    constant = keras.Input((1,), name="constant_one", dtype=variable_dtype)
    dense = keras.layers.Dense(
        int(np.prod(shape)), use_bias=False, name="baseline_pixels", dtype=variable_dtype,
        kernel_initializer=keras.initializers.Constant(start.reshape(1, -1).astype(variable_dtype)),
    )
    image = keras.layers.Reshape(shape, name="baseline", dtype=variable_dtype)(dense(constant))
    h = image
    if preprocess is not None:
        h = keras.layers.Lambda(preprocess, name="preprocess")(h)
    input_dtype = tf.as_dtype(model.inputs[0].dtype).name
    if input_dtype != variable_dtype:
        h = keras.layers.Lambda(lambda t: keras.ops.cast(t, input_dtype), name="to_model_dtype")(h)
    out = model(h, training=False)
    return keras.Model(constant, [image, out], name="uniform_output_baseline_trainer"), dense


def train_uniform_baseline(
    model: keras.Model,
    start: Union[str, float, np.ndarray] = "black",
    target_distribution: Optional[Sequence[float]] = None,
    lam: float = 0.9,
    output_loss: str = "maxabs",
    steps: int = 500,
    learning_rate: Optional[float] = None,
    preprocess: Union[None, str, Callable] = None,
    value_range: Tuple[float, float] = (0.0, 1.0),
    outputs: str = "auto",
    patience: Optional[int] = 100,
    min_delta: float = 0.0,
    optimizer: Union[str, keras.optimizers.Optimizer] = "rmsprop",
    seed: Optional[int] = 0,
    verbose: Union[int, bool, str] = "auto",
    keep: str = "best",
) -> TrainedBaseline:
    r"""Train a baseline whose output through ``model`` is ``target_distribution`` (Lerma & Lucas, eq. 8).

    ``L = λ · L_out(o_b, o_t) + (1 − λ) · MSE(b, b₀)`` minimised over the kernel of a
    ``Dense(H·W·C, use_bias=False)`` layer fed the constant ``1.0`` and initialised with the
    starting baseline ``b₀``, in front of the frozen ``model`` (its weights are never
    updated; the model object is not modified). See :mod:`tfattr.baselines.uniform_output`.

    Args:
        model: a Keras classifier with one ``(H, W, C)`` input of fixed size and a
            ``(batch, K)`` output (probabilities, or logits: see ``outputs``). Any classifier
            works; the paper's is ``keras.applications.VGG19(weights="imagenet")`` with
            ``preprocess="vgg19"`` and ``value_range=(0, 255)``.
        start: ``b₀``: ``"black"`` (default: the low end of ``value_range``), ``"zero"``,
            ``"uniform"`` (noise drawn with ``seed``), a number or an ``(H, W, C)`` array. A start
            where the loss gradient is exactly 0 (``λ > 0``, output not yet ``o_t``; e.g. black into
            ReLU units that are all inactive there) raises :class:`~tfattr.errors.InvalidInputError`
            before any step.
        target_distribution: ``o_t``, a ``(K,)`` probability vector; ``None`` = uniform ``1/K``.
        lam: ``λ`` in ``[0, 1]`` (paper: 0.9; the authors' notebook: 0.99). ``λ = 0`` keeps
            ``b = b₀`` (the gradient of ``MSE(b, b₀)`` at ``b₀`` is 0).
        output_loss: ``"maxabs"`` (``max_k |o_b − o_t|``, the paper's best), ``"mse"`` or
            ``"crossentropy"`` (``−Σ o_t log o_b``, minimal at ``H(o_t)``, not 0). Max-abs
            only follows the worst class; when that is a class with probability ≈ 0 (few
            classes, saturated softmax) its gradient vanishes and training stalls: a
            :class:`MaxAbsStallWarning` then suggests ``"crossentropy"``.
        steps: maximum number of optimiser steps (the notebook's 200 epochs of 32 identical
            copies are 200 steps).
        learning_rate: default ``1e-3 · (high − low)`` (the notebook: 0.1 on 0–255).
        preprocess: ``None``, a name from :data:`PREPROCESSING` (``"vgg19"``, ``"caffe"``,
            ``"tf"``, ``"torch"``, …) or a callable applied between the baseline and the
            model; the baseline then lives in the space *before* preprocessing.
        value_range: ``(low, high)`` of that space: ``"black"`` is ``low``, and it scales the
            default learning rate. It is recorded, not enforced (the paper's baseline
            ends slightly outside it).
        outputs: ``"auto"`` (softmax head or rows summing to 1 → probabilities, else
            logits), ``"probabilities"`` or ``"logits"`` (a softmax is applied).
        patience: stop when the output loss has not improved by more than ``min_delta``
            for this many steps (``None``: run all ``steps``).
        min_delta: smallest decrease of the output loss that counts as an improvement.
        optimizer: ``"rmsprop"`` (default; Keras 3's, ``lr·g/√(ms + ε)``), ``"rmsprop_keras2"``
            (:class:`RMSpropKeras2`, ``lr·g/(√ms + ε)``, the rule of the authors' notebook, which
            ran Keras 2), ``"adam"``, ``"sgd"`` or a Keras optimizer instance (its learning rate
            is then its own).
        seed: seed of a random ``start``.
        verbose: progress bar and final report: ``"auto"`` (bar for ≥ 64 steps, no
            report), ``1`` (both) or ``0`` (silent).
        keep: ``"best"`` (default) returns the evaluated baseline with the lowest output loss
            (:attr:`TrainedBaseline.best_step`); ``"final"`` returns the weights after the last
            step, as the authors' notebook kept them (``after`` then describes that baseline).

    Returns:
        A :class:`TrainedBaseline`; ``.report()`` prints the before/after statistics.

    Example:
        >>> trained = train_uniform_baseline(model, start="black", lam=0.9, output_loss="maxabs")
        >>> print(trained.report())
        >>> ig = tfattr.IntegratedGradients(model, baseline=trained)
    """
    from tfattr.core.inputs import validate_value_range
    from tfattr.core.progress import progress_bar

    shape, input_dtype, classes = _check_model(model)
    value_range = validate_value_range(value_range)
    lam = _check_fraction(lam, "lam")
    loss_name = _check_loss(output_loss)
    steps = _check_positive_int(steps, "steps")
    if patience is not None:
        patience = _check_positive_int(patience, "patience")
    if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float, np.integer, np.floating)) or min_delta < 0:
        raise InvalidInputError("`min_delta` must be a non-negative number. " + received("min_delta", min_delta))
    low, high = value_range
    if learning_rate is None:
        learning_rate = 1e-3 * (high - low)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(learning_rate) and learning_rate > 0):
        raise InvalidInputError("`learning_rate` must be a positive number. "
                                + received("learning_rate", learning_rate))
    if not isinstance(keep, str) or keep not in KEEP:
        raise InvalidInputError(f"`keep` must be one of {list(KEEP)}. " + received("keep", keep))
    target = _check_target(target_distribution, classes)
    preprocess_fn, preprocess_name = _check_preprocess(preprocess)
    start_array, start_name = _start_array(start, shape, value_range, seed)
    if isinstance(optimizer, str):
        makers = {"rmsprop": keras.optimizers.RMSprop, "rmsprop_keras2": RMSpropKeras2,
                  "adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
        if optimizer.lower() not in makers:
            raise InvalidInputError(f"`optimizer` must be one of {list(OPTIMIZERS)} or a Keras optimizer. "
                                    + received("optimizer", optimizer))
        optimizer_name = optimizer.lower()
        optimizer = makers[optimizer_name](learning_rate=float(learning_rate))
    elif isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer_name = type(optimizer).__name__
    else:
        raise InvalidTypeError("`optimizer` must be a name or a Keras optimizer. "
                               + received("type(optimizer)", type(optimizer).__name__))

    variable_dtype = "float64" if input_dtype == "float64" else "float32"
    generator, dense = _build_generator(model, start_array, preprocess_fn, variable_dtype)
    one = tf.ones((1, 1), variable_dtype)
    b0 = tf.constant(start_array.reshape(1, -1), variable_dtype)
    t = tf.constant(target[None], tf.float32)
    _, start_out = generator(one, training=False)
    kind = _output_kind(model, outputs, keras.ops.convert_to_numpy(start_out))
    lam_t = tf.constant(lam, tf.float32)

    def probabilities_and_log(out):
        out = tf.cast(out, tf.float32)
        if kind == "logits":
            return tf.nn.softmax(out, axis=-1), tf.nn.log_softmax(out, axis=-1)
        return out, tf.math.log(tf.maximum(out, 1e-12))

    def losses():
        _, out = generator(one, training=False)
        p, log_p = probabilities_and_log(out)
        if loss_name == "maxabs":
            l_out = tf.reduce_max(tf.abs(p - t))
        elif loss_name == "mse":
            l_out = tf.reduce_mean(tf.square(p - t))
        else:
            l_out = -tf.reduce_sum(t * log_p)
        l_pix = tf.cast(tf.reduce_mean(tf.square(dense.kernel - b0)), tf.float32)
        return lam_t * l_out + (1.0 - lam_t) * l_pix, l_out, l_pix, p

    @tf.function
    def evaluate_step():
        (loss, l_out, l_pix, p), gradient = loss_gradients(losses, dense.kernel)
        return loss, l_out, l_pix, p, gradient

    @tf.function
    def apply_step(gradient):
        optimizer.apply([gradient], [dense.kernel])

    history = {"loss": [], "output_loss": [], "pixel_loss": [], "seconds": []}
    optimizer.build([dense.kernel])
    bar = progress_bar(steps, verbose, unit="step")
    if bar is not None:
        bar.stateful_metrics = {"loss", "L_out", "MSE_b"}  # show the current values, not running means
    begin = time.perf_counter()
    best_loss, best_step, best_kernel = np.inf, 0, None
    first_p, stopped_early, steps_run = None, False, 0

    def record(step, kernel, values):
        nonlocal best_loss, best_step, best_kernel
        loss, l_out, l_pix = (float(v) for v in values)
        history["loss"].append(loss)
        history["output_loss"].append(l_out)
        history["pixel_loss"].append(l_pix)
        history["seconds"].append(time.perf_counter() - begin)
        if best_kernel is None or l_out < best_loss - float(min_delta):
            best_loss, best_step, best_kernel = l_out, step, kernel

    for step in range(steps):
        kernel = dense.kernel.numpy()
        loss, l_out, l_pix, p, gradient = evaluate_step()  # evaluated at `kernel`, then updated
        loss, l_out, l_pix, p = (v.numpy() for v in (loss, l_out, l_pix, p))
        if first_p is None:
            first_p = p[0]
            if lam > 0:
                _check_start_gradient(gradient, first_p, target, start, start_name)
        apply_step(gradient)
        record(step, kernel, (loss, l_out, l_pix))
        steps_run = step + 1
        if bar is not None:
            bar.update(step + 1, values=[("loss", float(loss)), ("L_out", float(l_out)), ("MSE_b", float(l_pix))])
        if patience is not None and step - best_step >= patience:
            stopped_early = True
            break
    else:  # the state after the last update has not been evaluated yet
        record(steps_run, dense.kernel.numpy(), [v.numpy() for v in losses()[:3]])
    if keep == "best":
        dense.kernel.assign(best_kernel)
    image, out = generator(one, training=False)
    final_p = probabilities_and_log(out)[0].numpy()[0]
    seconds = time.perf_counter() - begin

    baseline = keras.ops.convert_to_numpy(image)[0].astype(input_dtype)
    start_cast = start_array.astype(input_dtype)
    change = baseline.astype(np.float64) - start_cast.astype(np.float64)
    pixels = {
        "start_min": float(start_cast.min()),
        "start_max": float(start_cast.max()),
        "min": float(baseline.min()),
        "max": float(baseline.max()),
        "mean_squared_change": float(np.mean(change ** 2)),
        "max_abs_change": float(np.abs(change).max()),
    }
    fingerprint = model_fingerprint(model)
    result = TrainedBaseline(
        baseline=baseline,
        start=start_cast,
        target_distribution=target,
        before=output_statistics(first_p, target),
        after=output_statistics(final_p, target),
        pixels=pixels,
        history=history,
        config={
            "lam": lam,
            "output_loss": loss_name,
            "steps": steps,
            "learning_rate": float(learning_rate) if optimizer_name in OPTIMIZERS else None,
            "optimizer": optimizer_name,
            "keep": keep,
            "patience": patience,
            "min_delta": float(min_delta),
            "value_range": [float(low), float(high)],
            "preprocessing": preprocess_name,
            "start": start_name,
            "outputs": kind,
            "seed": seed,
        },
        model_info={
            "name": getattr(model, "name", None),
            **fingerprint,
            "input_shape": list(shape),
            "input_dtype": input_dtype,
            "num_classes": classes,
        },
        seconds=seconds,
        stopped_early=stopped_early,
        best_step=best_step,
        steps_run=steps_run,
    )
    if loss_name == "maxabs" and lam > 0:
        _warn_if_maxabs_stalled(final_p, target, result.before, result.after)
    if verbose not in ("auto", 0, False):
        print(result.report())
    return result


def _check_start_gradient(gradient, p, target, start, start_name) -> None:
    """Refuse a start where ``∂L/∂b`` is exactly 0 while ``o_b ≠ o_t``: no step of any optimiser moves it.

    At ``b = b₀`` the pixel term's gradient is 0, so ``∂L/∂b = λ ∂L_out/∂b``; it vanishes exactly when
    no input gradient reaches the output (every ReLU unit the start reaches is inactive, e.g. a black
    start into units with negative biases, or a saturated output).
    """
    if np.abs(np.asarray(p, np.float64) - target).max() <= 1e-6 or tf.reduce_any(gradient != 0):
        return
    raise InvalidInputError(
        f"The gradient of the output loss with respect to the baseline is exactly 0 at the start "
        f"({start_name}): no input gradient reaches the classifier's output there (e.g. every ReLU unit "
        f"the start reaches is inactive), so training cannot move it. Start elsewhere: start=\"uniform\", "
        f"a constant inside value_range (e.g. its middle) or an array. "
        + received("start", start)
    )


class MaxAbsStallWarning(UserWarning):
    """The max-abs output loss stopped on a class whose probability is ~0 (vanishing gradient)."""


def _warn_if_maxabs_stalled(p: np.ndarray, target: np.ndarray, before, after) -> None:
    """Max-abs only sees ``k* = argmax_k |p_k − t_k|``; when that is a class with ``p_k ≈ 0`` (a
    saturated softmax, likely with few classes where ``t_k = 1/K`` is large) its gradient
    ``∝ p_k`` vanishes and training stalls. Cross-entropy's gradient does not vanish there."""
    p = np.asarray(p, np.float64)
    worst = int(np.abs(p - target).argmax())
    if p[worst] < 0.01 * target[worst]:  # the max is an undershoot |0 − t_k|: no gradient reaches it
        import warnings

        warnings.warn(
            f"The max-abs output loss stalled at {after['max_abs_error']:.3g} (from "
            f"{before['max_abs_error']:.3g}): it is set by class {worst}, whose probability "
            f"{p[worst]:.2g} is ~0, so its gradient vanishes. Try output_loss=\"crossentropy\".",
            MaxAbsStallWarning,
            stacklevel=3,
        )
