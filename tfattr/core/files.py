"""Files written atomically, with the permissions of ordinary files.

Every file tfattr writes (PNGs, ``.npz`` results and caches, tables) goes through
:func:`atomic_path`: the content is written to a temporary file beside the destination,
flushed to disk, given the mode ``open()`` would have created (``0o666`` minus the process
umask; ``tempfile.mkstemp`` makes it ``0o600``) and renamed over the destination. A reader sees
the old file or the new one, never a half-written one; an interrupted write removes its
temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import IO, Iterator, Union

__all__ = ["current_umask", "file_mode", "folder_mode", "atomic_path", "atomic_write", "write_bytes", "write_text"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read from ``/proc/self/status`` where it is there (Linux ≥ 4.7), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # os.umask only reads by writing: restore at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a file created by ``open(path, "w")``: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode of a folder created by ``os.mkdir``: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike], suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; when the block ends, rename it to ``path``.

    The writer inside the block creates or fills the temporary file (it exists, empty, with a
    name ending in ``suffix``, for writers that choose the format by extension). On success
    it gets :func:`file_mode` and replaces ``path``; on any exception it is removed.

    Example:
        >>> with atomic_path("model.keras", suffix=".keras") as tmp:
        ...     model.save(tmp)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # a hidden name beside the destination (shortened so that it fits the 255-byte limit of a name)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)[:120]}.tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: Union[str, os.PathLike], binary: bool = True) -> Iterator[IO]:
    """Yield an open file whose content replaces ``path`` when the block ends (flushed to disk first).

    Example:
        >>> with atomic_write("arrays.npz") as handle:
        ...     np.savez_compressed(handle, x=x)
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_bytes(path: Union[str, os.PathLike], data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_write(path) as handle:
        handle.write(data)
    return os.fspath(path)


def write_text(path: Union[str, os.PathLike], text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_write(path, binary=False) as handle:
        handle.write(text)
    return os.fspath(path)
