"""Shared checks of the methods' options, and the option declarations built on them.

Every check is ``check(name, value)``: it returns ``None`` when ``value`` is acceptable and
otherwise raises a tfattr error (:mod:`tfattr.errors`) whose message names the argument, says
what it expects and ends ``Received: name=value``. Methods declare their options as a tuple of
:class:`Option` (name, default, check); :func:`signature_with_options` turns them into the
class's constructor signature, so ``inspect.signature(cls)``, ``help(cls)`` and notebooks show
every option with its default.

Example:
    >>> positive_int("steps", 0)
    Traceback (most recent call last):
    ...
    tfattr.errors.InvalidInputError: `steps` must be a positive integer. Received: steps=0
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Sequence, Tuple

import numpy as np

from tfattr.core.quadrature import MAX_STEPS
from tfattr.errors import InvalidInputError, InvalidOptionError, InvalidTypeError, TfattrError, received

__all__ = [
    "Option", "options_by_name", "signature_with_options", "positive_int", "integer_at_least", "positive_number",
    "non_negative_number", "finite_number", "probability", "boolean", "choice", "choices", "optional", "any_value",
    "seed", "batch_size", "at_least", "defaults", "pick", "with_default", "resolve_options",
    "verbose", "sigma_values", "value_range_pair", "baseline_value", "input_selection",
]

Check = Callable[[str, Any], None]


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


# -- the checks --------------------------------------------------------------------------------
def integer_at_least(name: str, value, minimum: int, what: str = "") -> None:
    """An integer (not a bool) ``≥ minimum``; ``what`` is an optional parenthesis after the name."""
    if not is_int(value) or value < minimum:
        expected = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise InvalidInputError(f"`{name}`{what} must be {expected}. " + received(name, value))


def positive_int(name: str, value) -> None:
    """An integer ``≥ 1`` (not a bool)."""
    integer_at_least(name, value, 1)


def path_steps(name: str, value) -> None:
    """An integer in ``[1, MAX_STEPS]``: quadrature nodes (gradient evaluations) per path. Larger
    counts are refused before anything is allocated (:data:`tfattr.core.quadrature.MAX_STEPS`)."""
    integer_at_least(name, value, 1)
    if value > MAX_STEPS:
        raise InvalidInputError(f"`{name}` must be at most {MAX_STEPS} (2^20 gradient evaluations per example "
                                "and baseline). " + received(name, value))


def at_least(minimum: int) -> Check:
    """The check ``integer_at_least(name, value, minimum)``."""
    def check(name, value):
        integer_at_least(name, value, minimum)
    check.__name__ = f"integer_at_least_{minimum}"
    return check


def positive_number(name: str, value, what: str = "") -> None:
    """A finite number ``> 0`` (not a bool)."""
    if not (_is_number(value) and np.isfinite(value) and value > 0):
        raise InvalidInputError(f"`{name}` must be a positive number{what}. " + received(name, value))


def finite_number(name: str, value) -> None:
    """A finite number (not a bool)."""
    if not (_is_number(value) and np.isfinite(value)):
        raise InvalidInputError(f"`{name}` must be a finite number. " + received(name, value))


def non_negative_number(name: str, value) -> None:
    """A finite number ``≥ 0`` (not a bool)."""
    if not (_is_number(value) and np.isfinite(value) and value >= 0):
        raise InvalidInputError(f"`{name}` must be a finite number ≥ 0. " + received(name, value))


def probability(name: str, value) -> None:
    """A number in ``[0, 1]``."""
    if not (_is_number(value) and 0 <= value <= 1):
        raise InvalidInputError(f"`{name}` must be a number in [0, 1]. " + received(name, value))


def boolean(name: str, value) -> None:
    """``True`` or ``False`` (NumPy bools too). Anything else raises
    :class:`~tfattr.errors.InvalidOptionError` (both a ``TypeError`` and a ``ValueError``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidOptionError(f"`{name}` must be True or False. " + received(name, value))


def choice(name: str, value, allowed: Sequence, what: str = "") -> None:
    """One of ``allowed`` (compared with ``==`` after a type check, so ``1`` is not ``True``)."""
    for option in allowed:
        if type(value) is type(option) and value == option or (value is None and option is None):
            return
    raise InvalidInputError(f"`{name}` must be one of {list(allowed)}{what}. " + received(name, value))


def choices(*allowed) -> Check:
    """The check ``choice(name, value, allowed)``."""
    def check(name, value):
        choice(name, value, allowed)
    check.__name__ = "choice"
    return check


def optional(check: Check) -> Check:
    """``None`` or what ``check`` accepts (its message then says "… or None")."""
    def optional_check(name, value):
        if value is None:
            return
        try:
            check(name, value)
        except TfattrError as error:
            text = str(error)
            tail = text.rfind(". Received: ")
            if tail < 0 or text[:tail].endswith("or None"):
                raise
            raise type(error)(text[:tail] + " or None" + text[tail:]) from None
    optional_check.__name__ = f"optional_{getattr(check, '__name__', 'check')}"
    return optional_check


def any_value(name: str, value) -> None:
    """No check here: the value is checked against the model or the inputs where it is used."""


#: seeds travel to the device in float64 row contexts: larger ones would round there (two seeds, one draw)
SEED_LIMIT = 2 ** 53


def seed(name: str, value) -> None:
    """A random seed: an integer in ``[0, 2**53)``, or ``None`` (fresh entropy on every call)."""
    if value is not None and (not is_int(value) or value < 0 or value >= SEED_LIMIT):
        raise InvalidInputError(f"`{name}` must be an integer in [0, 2**53) or None. " + received(name, value))


def batch_size(name: str, value) -> None:
    """``"auto"`` or a positive integer."""
    if isinstance(value, str) and value == "auto":
        return
    if not is_int(value) or value < 1:
        raise InvalidInputError(
            f"`{name}` (points per forward+backward pass) must be a positive integer or 'auto'. "
            + received(name, value))


def verbose(name: str, value) -> None:
    """``"auto"``, a bool or an integer ``≥ 0`` (Keras' convention)."""
    if isinstance(value, str) and value == "auto":
        return
    if isinstance(value, (bool, np.bool_)) or (is_int(value) and value >= 0):
        return
    raise InvalidInputError(f"`{name}` must be 'auto', 0, 1 or a bool. " + received(name, value))


def sigma_values(name: str, value) -> None:
    """A finite number ``≥ 0`` or one per example (a 1-D sequence)."""
    if isinstance(value, (str, bool, np.bool_)) or value is None:
        raise InvalidInputError(f"`{name}` must be finite and ≥ 0 (a float or one per image). " + received(name, value))
    try:
        values = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"`{name}` must be finite and ≥ 0 (a float or one per image). "
                                + received(name, value)) from None
    if values.ndim > 1 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise InvalidInputError(f"`{name}` must be finite and ≥ 0 (a float or one per image). " + received(name, value))


def value_range_pair(name: str, value) -> None:
    """``None`` or a ``(low, high)`` pair of finite numbers with ``low < high``."""
    if value is None:
        return
    from tfattr.core.ranges import resolve_value_range

    resolve_value_range(value, name=name)


def baseline_value(name: str, value) -> None:
    """A baseline: a name, a folder, a number, an array, a callable, or one per input (list or
    dict); its content is checked when the baselines are made. Rejects bools and ``None``."""
    if value is None or isinstance(value, (bool, np.bool_)):
        raise InvalidTypeError(f"`{name}` must be a name, a number, an array or a callable. " + received(name, value))


def input_selection(name: str, value) -> None:
    """``None``, an input's name or index, or a list/tuple of them (checked against the model's
    inputs when it runs)."""
    if value is None or isinstance(value, str) or is_int(value):
        return
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) or is_int(v) for v in value):
        return
    raise InvalidTypeError(f"`{name}` must name inputs: a name, an index, or a list of them. " + received(name, value))


# -- option declarations -------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One constructor option of a method: its ``name``, ``default`` and ``check(name, value)``."""

    name: str
    default: Any
    check: Check = any_value

    def validate(self, value) -> None:
        self.check(self.name, value)


def options_by_name(options: Iterable[Option]) -> Dict[str, Option]:
    """``{name: Option}`` in declaration order; raises on a name declared twice."""
    table: Dict[str, Option] = {}
    for option in options:
        if option.name in table:
            raise ValueError(f"option {option.name!r} declared twice")
        table[option.name] = option
    return table


def signature_with_options(init, options: Iterable[Option]) -> inspect.Signature:
    """The signature of ``init`` (without ``self`` and ``**options``) followed by every option as a
    keyword-only parameter with its default."""
    head = [p for name, p in inspect.signature(init).parameters.items()
            if name != "self" and p.kind not in (p.VAR_KEYWORD, p.KEYWORD_ONLY)]
    taken = {p.name for p in head}
    keywords = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default)
                for o in options if o.name not in taken]
    return inspect.Signature(head + keywords)


def resolve_options(owner: str, table: Dict[str, Option], base: Dict[str, Any],
                    overrides: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` updated with ``overrides``, each override checked by its option; unknown names raise
    :class:`~tfattr.errors.InvalidOptionError` naming ``owner``'s options."""
    unknown = sorted(set(overrides) - set(table))
    if unknown:
        raise InvalidOptionError(
            f"{owner} got unknown option(s) {unknown}; its options are {sorted(table)}. "
            + received(unknown[0], overrides[unknown[0]]))
    for name, value in overrides.items():
        table[name].validate(value)
    return dict(base, **overrides)


def defaults(table: Dict[str, Option]) -> Dict[str, Any]:
    """``{name: default}`` of a table."""
    return {name: option.default for name, option in table.items()}


def pick(options: Sequence[Option], *names: str) -> Tuple[Option, ...]:
    """The options of ``options`` named ``names`` (in that order)."""
    table = options_by_name(options)
    return tuple(table[name] for name in names)


def with_default(option: Option, default) -> Option:
    """``option`` with another default."""
    return Option(option.name, default, option.check)
