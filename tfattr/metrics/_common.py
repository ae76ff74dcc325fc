"""What every metric shares: Simpson's rule, map validation, seeds and the model scorer.

The scorer runs a model in chunks of a user-set size through the compiled forward
pass of :func:`tfattr.core.gradients.compiled_forward` (traced once per model) and
reads one score per row:

* ``score="logit"`` (alias ``"output"``): the model output as is, at the target class.
  The papers' AUPC explains the pre-softmax logit; a model with a softmax head must be
  given as its logits clone (``tfattr.surgery.logits_model(model)`` where available,
  or rebuild the head without the activation). A warning is issued when the last
  layer of the model is a softmax.
* ``score="probability"``: the softmax probability of the target class. Per image, the
  outputs on the *unperturbed* image decide whether the model already returns
  probabilities: when its last layer is a softmax, or when that image's output row is
  non-negative and sums to 1 within 1e-4, the outputs are used as they are; otherwise a
  (float64) softmax is applied. The decision is made once per image and applied to all
  its perturbed copies, so it does not depend on the batch the image is in.
* a callable ``outputs -> (batch,)``: any scalar score computed from the model's
  output tensor (then ``target`` must be ``None``).

The class explained for ``target=None`` is the top-1 class of the unperturbed image, or, when the
attributions are an ``Explanation`` that records its classes, those classes (:func:`explained_target`).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from tfattr.core.gradients import compiled_forward
from tfattr.core.inputs import Images, check_model_accepts, model_spec, validate_images
from tfattr.core.progress import progress_bar
from tfattr.core.targets import resolve_targets
from tfattr.errors import InvalidInputError, InvalidTypeError, received

__all__ = ["simpson", "Score", "ModelScorer", "rank_keys", "descending_order", "closest_to_median",
           "explained_target"]

Score = Union[str, Callable]
_SCORES = ("logit", "output", "probability")
_PROBABILITY_TOLERANCE = 1e-4


# -- numerics ------------------------------------------------------------------------------
#: Ranking resolution: values closer than ``2**-RANK_BITS`` of their map's magnitude rank as ties.
RANK_BITS = 14


def rank_keys(values, axis: int = -1) -> np.ndarray:
    """Integer sort keys that make values equal up to rounding rank as ties.

    Each value is rounded to a multiple of ``q = 2**(e − RANK_BITS)``, where ``2**e`` is the
    power of two just above the largest magnitude along ``axis`` (a power of two, so last-bit
    changes of that maximum do not move the grid). ``q`` is 2⁻¹⁴ ≈ 6e-5 of the map's scale:
    ~500 float32 ulps of its largest value, far above the last-bit differences that another
    CPU, thread count or batch composition gives a forward or backward pass (≈ 1e-7 … 1e-6
    relative), and far below any difference a perturbation metric can resolve. Sorting these
    keys with a stable sort orders by value, then by position: a ranking no longer depends on
    which of two (nearly) tied pixels or windows a machine's rounding made larger.
    A tie straddling a grid line can still split; its chance is the rounding difference over
    ``q`` (≈ 1e-3 for a typical last-bit difference).
    """
    array = np.asarray(values, dtype=np.float64)
    scale = np.max(np.abs(array), axis=axis, keepdims=True) if array.size else np.ones_like(array)
    exponent = np.frexp(np.where(np.isfinite(scale) & (scale > 0), scale, 1.0))[1]
    step = np.ldexp(1.0, exponent - RANK_BITS)
    with np.errstate(invalid="ignore"):
        return np.round(array / step)


def descending_order(values, axis: int = -1) -> np.ndarray:
    """Indices that sort ``values`` from largest to smallest along ``axis``, ties (up to
    rounding, see :func:`rank_keys`) in increasing index order."""
    return np.argsort(-rank_keys(values, axis=axis), axis=axis, kind="stable")


def closest_to_median(scores, axis: int = -1) -> np.ndarray:
    """Index of the score closest to the median along ``axis``; the first index among scores
    whose distance is within rounding (``2**-RANK_BITS`` of the largest |score|) of the
    smallest distance. With an even count the two middle scores are equally close; this keeps
    the lower index whatever the last bits of the two scores are."""
    array = np.asarray(scores, dtype=np.float64)
    median = np.median(array, axis=axis, keepdims=True)
    distance = np.abs(array - median)
    scale = np.max(np.abs(array), axis=axis, keepdims=True)
    slack = scale * 2.0 ** -RANK_BITS
    near = distance <= np.min(distance, axis=axis, keepdims=True) + slack
    return np.argmax(near, axis=axis)


def simpson(y, axis: int = -1) -> np.ndarray:
    """Composite Simpson's rule with unit spacing, SciPy ≤ 1.10's ``simps(y, dx=1, even="avg")``.

    For an odd number of points ``n`` it is the classic rule
    ``Σ_{i=0,2,…,n−3} (y_i + 4 y_{i+1} + y_{i+2}) / 3``. For an even number it averages
    two variants: Simpson on the first ``n−1`` points plus the trapezoid on the last
    interval, and the trapezoid on the first interval plus Simpson on the last ``n−1``
    points (so two points give the trapezoid, one point gives 0). This is what the
    SmoothTaylor authors' code computed (``scipy.integrate.simps``); SciPy 1.11 changed
    the even-count rule, so it is implemented here.

    Args:
        y: samples, any shape; integrated along ``axis``.
        axis: axis of the samples.

    Returns:
        float64 array with ``axis`` removed (a 0-d array for 1-D input).

    Example:
        >>> simpson(np.arange(6) ** 2)   # 251/6: the even-count average, not 125/3
        array(41.83333333)
    """
    values = np.moveaxis(np.asarray(y, dtype=np.float64), axis, -1)
    return _simpson_last(values)


def _simpson_odd(y: np.ndarray) -> np.ndarray:
    if y.shape[-1] < 3:
        return np.zeros(y.shape[:-1])
    return (y[..., 0:-2:2] + 4.0 * y[..., 1:-1:2] + y[..., 2::2]).sum(axis=-1) / 3.0


def _simpson_last(y: np.ndarray) -> np.ndarray:
    n = y.shape[-1]
    if n % 2 == 1:
        return _simpson_odd(y)
    first = _simpson_odd(y[..., : n - 1]) + 0.5 * (y[..., n - 2] + y[..., n - 1])
    last = 0.5 * (y[..., 0] + y[..., 1]) + _simpson_odd(y[..., 1:])
    return 0.5 * (first + last)


# -- argument checks -----------------------------------------------------------------------
def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"`{name}` must be an integer ≥ {minimum}. " + received(name, value))
    return int(value)


def check_seed(seed):
    """``None`` (fresh entropy), a non-negative int or a ``np.random.SeedSequence``."""
    if seed is None or isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidTypeError(
            "`seed` must be a non-negative int, a numpy SeedSequence or None. " + received("seed", seed)
        )
    return int(seed)


def _is_explanation(value) -> bool:
    """A :class:`~tfattr.core.result.Explanation` (duck-typed: the metrics do not import the methods)."""
    return hasattr(value, "attributions") and hasattr(value, "numpy")


def explained_target(attributions, target, score=None):
    """The target a metric scores: ``target`` as given, except that ``target=None`` with an
    :class:`~tfattr.core.result.Explanation` (that records its classes) scores the classes it
    explains, not the top-1 (an explanation of class 3 is judged on class 3). A callable ``score``
    computes its own score: ``target`` is left as given."""
    if target is None and not callable(score) and _is_explanation(attributions):
        classes = getattr(attributions, "targets", None)
        if classes is not None:
            return np.asarray(classes).reshape(-1)
    return target


def as_array(value, name: str) -> np.ndarray:
    """A NumPy float64 array from NumPy/tensor/list input, or an error naming ``name``."""
    if isinstance(value, (tf.Tensor, tf.Variable)):
        value = value.numpy()
    elif _is_explanation(value):
        value = value.numpy()
    if not isinstance(value, (np.ndarray, list, tuple)):
        raise InvalidTypeError(
            f"`{name}` must be a NumPy array or a tf.Tensor. " + received(f"type({name})", type(value).__name__)
        )
    array = np.asarray(value)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InvalidTypeError(f"`{name}` must hold real numbers. " + received(f"{name}.dtype", str(array.dtype)))
    array = array.astype(np.float64)
    if array.size and not np.isfinite(array).all():
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise InvalidInputError(
            f"`{name}` contains NaN or Inf, first at index {first}. "
            + received(f"{name}[{first}]", float(array[first]))
        )
    return array


def maps_from_attributions(attributions, name: str = "attributions") -> np.ndarray:
    """``(N, H, W)`` float64 maps: rank 4 ``(N, H, W, C)`` is summed over channels (signed);
    rank 3 is taken as a batch of ``(N, H, W)`` maps; rank 2 as one ``(H, W)`` map. A rank-4
    ``(N, 1, H, W)`` array with ``W > 4`` (Quantus's channel-first ``a_batch``, which a channel sum
    would misread as one-row images) is an error."""
    array = as_array(attributions, name)
    if _is_explanation(attributions) and getattr(attributions, "single", False):
        array = array[None]  # one example without its batch axis: (H, W, C) is one map, not H maps
    if array.ndim == 4 and array.shape[1] == 1 and array.shape[2] > 1 and array.shape[3] > 4:
        # more than 4 "channels" on a one-row image: almost surely Quantus's channel-first (N, 1, H, W)
        # a_batch, which a channel sum would turn into (N, 1, H) maps
        raise InvalidInputError(
            f"`{name}` of shape (N, 1, H, W) is ambiguous: channel-first maps (Quantus's a_batch) or "
            f"one-row images with {array.shape[3]} channels. Pass (N, H, W) maps (`a_batch[:, 0]`) or, for "
            "one-row images, the channel sum (N, 1, W). " + received(f"{name}.shape", tuple(array.shape))
        )
    if array.ndim == 4:
        array = array.sum(axis=-1)
    elif array.ndim == 2:
        array = array[None]
    elif array.ndim != 3:
        raise InvalidInputError(
            f"`{name}` must be (batch, height, width, channels) attributions, (batch, height, width) "
            "maps or one (height, width) map. " + received(f"{name}.shape", tuple(array.shape))
        )
    if array.shape[0] == 0:
        raise InvalidInputError(f"`{name}` is an empty batch. " + received(f"{name}.shape", tuple(array.shape)))
    return array


def maps_for_images(attributions, images: Images, name: str = "attributions") -> np.ndarray:
    """Signed channel-sum maps ``(N, H, W)`` for attributions that must match ``images``.

    Accepted: the images' shape ``(N, H, W, C)`` or channel-free maps ``(N, H, W)``; for a
    single image (with or without its batch axis) also ``(H, W, C)`` or ``(H, W)``.
    """
    array = as_array(attributions, name)
    full = images.array.shape
    if full[0] == 1 and array.shape in (full[1:], full[1:-1]):
        array = array[None]
    if array.shape == full:
        return array.sum(axis=-1)
    if array.shape == full[:-1]:
        return array
    expected = full[1:] if images.single else full
    raise InvalidInputError(
        f"`{name}` must have the images' shape {tuple(expected)} or be channel-free maps "
        f"{tuple(expected[:-1])}. " + received(f"{name}.shape", tuple(np.shape(attributions)))
    )


def check_images(model, images, name: str = "images") -> Tuple[Images, np.ndarray, str]:
    """Validate a batch for ``model``; return it and its array in the model's input dtype."""
    if not callable(model):
        raise InvalidTypeError("`model` must be a Keras model (callable on a batch). "
                               + received("type(model)", type(model).__name__))
    spec = model_spec(model)
    batch = validate_images(images, spec, name=name)
    x = batch.array.astype(spec.input_dtype, copy=False)
    if spec.input_shape is None:  # a model that tells its input shape only when called: one example first
        check_model_accepts(model, x, name=name)
    return batch, x, spec.input_dtype


# -- scores --------------------------------------------------------------------------------
def _last_layer_is_softmax(model) -> bool:
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    last = layers[-1]
    if type(last).__name__ == "Softmax":
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", None) == "softmax"


def _softmax(outputs: np.ndarray) -> np.ndarray:
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class ModelScorer:
    """One score per row of a chunk, for a model, a target and a score kind (module docstring).

    Call :meth:`start` on the unperturbed images first (it resolves the targets and
    returns ``f(x)``), then :meth:`scores` on chunks of perturbed copies with the image
    each row belongs to.
    """

    def __init__(self, model, target, score: Score, batch_size: int, verbose, warn_softmax: bool = False):
        self.model = model
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.verbose = verbose
        score_fn = None
        if callable(score):
            score_fn = score
        elif not (isinstance(score, str) and score in _SCORES):
            raise InvalidInputError(
                f"`score` must be one of {list(_SCORES)} or a callable outputs -> (batch,). " + received("score", score)
            )
        if callable(target) and not isinstance(target, (np.ndarray, tf.Tensor)):
            if score_fn is not None:
                raise InvalidInputError(
                    "Pass a callable score either as `score` or as `target`, not both. " + received("target", target)
                )
            score_fn = target
            target = None
        if score_fn is not None and target is not None:
            raise InvalidInputError(
                "A callable `score` computes the score itself; leave `target` as None. " + received("target", target)
            )
        self.score_fn = score_fn
        self.kind = "callable" if score_fn is not None else ("probability" if score == "probability" else "logit")
        self.target = target
        self.forward = compiled_forward(model)
        self.targets: Optional[np.ndarray] = None
        self.softmax_rows: Optional[np.ndarray] = None
        if warn_softmax and self.kind == "logit" and _last_layer_is_softmax(model):
            warnings.warn(
                "The model ends in a softmax, so score='logit' scores probabilities; the protocol "
                "explains the pre-softmax logit. Pass the logits model (e.g. "
                "tfattr.surgery.logits_model(model)) or score='probability' to silence this.",
                UserWarning,
                stacklevel=3,
            )

    def _raw(self, points) -> tf.Tensor:
        return self.forward(tf.convert_to_tensor(points))

    def _from_outputs(self, outputs, example: np.ndarray) -> np.ndarray:
        if self.score_fn is not None:
            values = np.asarray(tf.convert_to_tensor(self.score_fn(outputs)), dtype=np.float64)
            if values.shape != (int(example.shape[0]),):
                raise InvalidInputError(
                    "A callable score must return one value per row, shape (batch,). "
                    + received("score(outputs).shape", tuple(values.shape))
                )
            return values
        outputs = np.asarray(outputs, dtype=np.float64)
        if self.kind == "probability":
            apply = self.softmax_rows[example]
            if apply.any():
                outputs = outputs.copy()
                outputs[apply] = _softmax(outputs[apply])
        return outputs[np.arange(outputs.shape[0]), self.targets[example]]

    def start(self, x: np.ndarray) -> np.ndarray:
        """Resolve targets on the unperturbed ``x`` and return ``f(x)`` (float64, ``(N,)``)."""
        num = int(x.shape[0])
        example = np.arange(num)
        if self.score_fn is not None:
            return np.concatenate([
                self._from_outputs(self._raw(x[s : s + self.batch_size]), example[s : s + self.batch_size])
                for s in range(0, num, self.batch_size)
            ])
        chunks = [self._raw(x[s : s + self.batch_size]) for s in range(0, num, self.batch_size)]
        if isinstance(chunks[0], (list, tuple, dict)):
            raise InvalidTypeError(
                "The model returns several outputs; pass a callable `score` that maps them to one "
                "value per row. " + received("type(outputs)", type(chunks[0]).__name__)
            )
        outputs = np.concatenate([np.asarray(c, dtype=np.float64) for c in chunks])
        self.targets = resolve_targets(self.target, outputs, num).indices
        if self.kind == "probability":
            already = _last_layer_is_softmax(self.model)
            sums_to_one = (outputs >= 0).all(axis=1) & (np.abs(outputs.sum(axis=1) - 1.0) <= _PROBABILITY_TOLERANCE)
            self.softmax_rows = ~(already | sums_to_one)
        return self._from_outputs(outputs, example)

    def scores(self, points: np.ndarray, example: np.ndarray) -> np.ndarray:
        """Scores of a chunk of points; ``example[r]`` is the image row ``r`` belongs to."""
        return self._from_outputs(self._raw(points), example)


def run_rows(scorer: ModelScorer, total: int, build: Callable[[int, int], Tuple[np.ndarray, np.ndarray]],
             bar=None, done: int = 0) -> Tuple[np.ndarray, int]:
    """Score rows ``0 … total−1`` in chunks; ``build(start, stop)`` returns ``(points, example)``."""
    out = np.empty(total, dtype=np.float64)
    for start in range(0, total, scorer.batch_size):
        stop = min(start + scorer.batch_size, total)
        points, example = build(start, stop)
        out[start:stop] = scorer.scores(points, example)
        done += 1
        if bar is not None:
            bar.update(done)
    return out, done


def make_bar(chunks: int, verbose, unit: str = "batch"):
    return progress_bar(chunks, verbose, unit=unit)


def chunk_count(rows: int, batch_size: int) -> int:
    return math.ceil(rows / batch_size)
