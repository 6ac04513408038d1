"""Folders that appear whole or not at all: built beside their place, synced to disk, then renamed into it.

Everything the data layer writes for later runs is such a folder: a cached SentencePiece model and encoded
corpus (``data/cache/``), a named dataset downloaded, fetched from the hub or generated (``data/<name>/``).
A reader — another run, another process of the node, the same command after a crash or ``kill -9`` — sees
the complete folder or none, never half of it. Two processes that build the same folder at once both
succeed: the first rename wins and the other's copy is dropped, which is fine because both built the same.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def publishing(folder: Path, complete: Callable[[Path], bool] = Path.is_dir) -> Iterator[Path]:
    """A new empty folder beside ``folder`` to build it in, published as ``folder`` when the block ends.

    An exception inside the block removes what was built and publishes nothing. If another process
    published ``folder`` first, what this one built is dropped, provided ``complete(folder)`` accepts the
    other's copy (by default: it is a folder); otherwise the rename's ``OSError`` is raised.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    while True:
        # the same form of name as tempfile.mkdtemp's, but made with the usual permissions, not 0o700
        built = folder.parent / f".{folder.name}-{secrets.token_hex(4)}"
        try:
            built.mkdir()
            break
        except FileExistsError:
            continue
    try:
        yield built
        publish(built, folder, complete)
    finally:
        shutil.rmtree(built, ignore_errors=True)


def publish(built: Path, folder: Path, complete: Callable[[Path], bool] = Path.is_dir) -> bool:
    """Rename the finished folder ``built`` to ``folder``, after syncing its files and itself to disk.

    Returns True when published. Returns False when another process published ``folder`` first and
    ``complete(folder)`` accepts its copy; ``built`` is then left where it is, for the caller to remove.
    Otherwise a failed rename raises its ``OSError``.
    """
    for path in [*built.rglob("*"), built]:  # every file and folder inside, and the folder itself
        if not path.is_symlink():
            _sync(path)
    try:
        os.rename(built, folder)
    except OSError:
        if not complete(folder):
            raise
        return False
    _sync(folder.parent)  # the rename itself
    return True


def _sync(path: Path) -> None:
    """``fsync`` a file or folder; quietly nothing where the file system or the platform cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system syncs folders
    finally:
        os.close(fd)
