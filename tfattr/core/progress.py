"""Progress displays for long runs: a redrawn bar on a terminal or in a notebook, plain lines in logs.

:func:`progress_bar` is what the engine, the metrics and the training of uniform baselines call;
it returns ``None`` when nothing should be shown, else an object with
``update(current, values=None)`` (``keras.utils.Progbar``'s call).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Union

__all__ = ["Verbose", "LineProgress", "ProgressCount", "progress_bar", "interactive", "AUTO_PROGRESS_CHUNKS"]

Verbose = Union[int, bool, str]

#: ``verbose="auto"`` shows a bar for runs of at least this many chunks (on a terminal or in a notebook)
AUTO_PROGRESS_CHUNKS = 64


def _interactive() -> bool:
    """stdout is a terminal, or a notebook renders it: a bar redrawn in place is read by someone."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return False


#: public name of :func:`_interactive` (the dataset runners' image progress decides as the bar does)
interactive = _interactive


class LineProgress:
    """Progress as plain lines for stdout that is not a terminal (log files, pipes).

    Prints ``current/total units - elapsed - metric: value`` about every 10 % and at the end,
    with no ANSI codes, carriage returns or backspaces (``keras.utils.Progbar`` redraws its
    bar with them whenever it runs on a POSIX system). Same ``update`` call as ``Progbar``;
    metrics named in ``stateful_metrics`` show their last value, the others their mean.
    """

    def __init__(self, total: int, unit: str = "chunk"):
        self.total = int(total)
        self.unit = unit
        self.stateful_metrics = set()
        self._sums = {}
        self._every = max(1, math.ceil(self.total / 10))
        self._next = self._every
        self._start = time.perf_counter()

    def update(self, current: int, values=None, finalize=None) -> None:
        for name, value in values or ():
            if name in self.stateful_metrics:
                self._sums[name] = (float(value), 1)
            else:
                total, count = self._sums.get(name, (0.0, 0))
                self._sums[name] = (total + float(value), count + 1)
        if current < self._next and current < self.total:
            return
        self._next = (current // self._every + 1) * self._every
        parts = [f"{current}/{self.total} {self.unit}s", f"{time.perf_counter() - self._start:.0f}s"]
        parts += [f"{name}: {total / count:.4g}" for name, (total, count) in self._sums.items()]
        print(" - ".join(parts), flush=True)


def progress_bar(total: int, verbose: Verbose, unit: str = "chunk"):
    """A progress display when ``verbose`` asks for one, else ``None``.

    On a terminal (or in a notebook) a ``keras.utils.Progbar``; otherwise plain
    :class:`LineProgress` lines. ``verbose="auto"`` shows a bar for long runs only (at least
    :data:`AUTO_PROGRESS_CHUNKS` chunks) and only on a terminal or in a notebook: it writes
    nothing into logs.
    """
    interactive = _interactive()
    show = (total >= AUTO_PROGRESS_CHUNKS and interactive) if verbose == "auto" else bool(verbose)
    if not show or total <= 1:
        return None
    if not interactive:
        return LineProgress(total, unit)
    import keras

    return keras.utils.Progbar(total, unit_name=unit)


class ProgressCount:
    """Counts finished units (chunks) and shows them on :func:`progress_bar`'s display, if any.

    ``total`` is an estimate (``batch_size="auto"`` may change the sizes during a call): the display
    never passes it.
    """

    def __init__(self, total: int, verbose: Verbose, unit: str = "chunk"):
        self.total = int(total)
        self.done = 0
        self.bar = progress_bar(self.total, verbose, unit=unit)

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(min(self.done, self.total))
