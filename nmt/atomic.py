"""Files that appear whole or not at all: written beside their place, then renamed over it.

Every file the project writes for a later reader — a checkpoint, ``config.yaml``, ``metrics.csv`` rewritten on
resume, a translation, a figure, a diagnosis — goes through ``replacing``: the content is written to a temporary
file in the same folder, which is renamed over the target only once it is complete (a rename within one file
system is atomic on POSIX). A reader, another process of the run or the same command after a crash or ``kill -9``
sees the old file or the whole new one, never a part; a write that fails (a full disk, an exception while
writing) removes the temporary file and leaves the old one untouched. ``durable=True`` also syncs the file and
the rename to disk, for what must survive a power cut (checkpoints). Folders: ``nmt.data.publish``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | os.PathLike, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the new file to; renamed over ``path`` when the block ends.

    The temporary file exists (empty, with the usual permissions rather than ``mkstemp``'s 0600) and is named
    ``.<name>.<random>.tmp``: write it by name. An exception inside the block removes it and replaces nothing.
    ``durable``: ``fsync`` the file before the rename and its folder after it (where the file system can)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~umask())
        yield tmp
        if durable:
            _sync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        try:
            _sync(path.parent)
        except OSError:
            pass  # the file is in place; not every file system syncs folders


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through ``replacing``."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def umask() -> int:
    """The process's file mode creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
