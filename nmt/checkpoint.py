"""Checkpoint files written atomically, so that a kill never leaves half a checkpoint.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then renamed over
the target (an atomic operation on POSIX file systems) and the folder is fsync'ed so that the rename
itself survives a crash. Until the rename, the previous checkpoint of that name is untouched; if the
write fails (a full disk, say) the temporary file is removed and the error names the checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that replaces ``path`` only once the new file is complete on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"could not write checkpoint {path}: {e.strerror}; the previous one is intact") from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes every checkpoint with ``atomic_torch_save``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        atomic_torch_save(checkpoint, path)


class PeriodicCheckpoints(Callback):
    """Every ``every`` updates write ``step-<N>.ckpt`` into ``folder``; keep the newest ``keep`` of them.

    These are the checkpoints that ``python -m nmt.average`` and ``evaluate.py --average-last`` average.
    """

    def __init__(self, folder: str | os.PathLike, every: int, keep: int):
        self.folder, self.every, self.keep = Path(folder), every, keep

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every or (self.folder / f"step-{step}.ckpt").exists():
            return  # (exists: gradient accumulation calls this several times per update)
        trainer.save_checkpoint(self.folder / f"step-{step}.ckpt", weights_only=False)
        if trainer.is_global_zero:
            for old in periodic_checkpoints(self.folder)[: -self.keep]:
                old.unlink(missing_ok=True)


def periodic_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The ``step-<N>.ckpt`` files of ``folder``, oldest first (by N, not by name or time)."""
    files = [p for p in Path(folder).glob("step-*.ckpt") if p.stem[5:].isdigit()]
    return sorted(files, key=lambda p: int(p.stem[5:]))
