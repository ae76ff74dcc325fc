"""Errors raised at tfattr's public boundary.

Every message names the argument, says what was expected and ends with
``Received: name=value`` (the Keras convention), so a user can fix the call from
the message alone. The classes subclass the built-in ``ValueError`` /
``TypeError`` so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["TfattrError", "InvalidInputError", "InvalidTypeError", "InvalidOptionError", "MissingDependencyError",
           "ValueRangeWarning", "received"]


class TfattrError(Exception):
    """Base class of every error tfattr raises on purpose."""


class InvalidInputError(TfattrError, ValueError):
    """An argument has the right type but a wrong value (shape, range, NaN, ...)."""


class InvalidTypeError(TfattrError, TypeError):
    """An argument has the wrong type or dtype."""


class InvalidOptionError(InvalidTypeError, InvalidInputError):
    """An option a method does not take, or an on/off option given something other than
    ``True``/``False``: a ``TypeError`` (as Python's unexpected keyword argument) and, like every
    other option error, a ``ValueError``, so either ``except`` catches it."""


class MissingDependencyError(TfattrError, ImportError):
    """An optional package is not installed; the message names the extra that brings it."""


class ValueRangeWarning(UserWarning):
    """Inputs lie outside the ``value_range`` their noise and baselines are drawn in
    (:func:`tfattr.core.ranges.warn_outside_value_range`)."""


def received(name: str, value) -> str:
    """Format the ``Received: name=value`` tail of an error message."""
    text = repr(value)
    if len(text) > 200:
        text = text[:197] + "..."
    return f"Received: {name}={text}"
