"""Checkpoint files written atomically, so that a kill never leaves half a checkpoint.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then renamed over
the target (an atomic operation on POSIX file systems) and the folder is fsync'ed so that the rename
itself survives a crash. Until the rename, the previous checkpoint of that name is untouched; if the
write fails (a full disk, say) the temporary file is removed and the error names the checkpoint.

Every checkpoint file is read through ``load_checkpoint``: a missing, truncated, corrupt or foreign file
raises ``CheckpointError``, one line naming the file ("checkpoint PATH is WHY"). ``read_checkpoint`` and
``newest_valid_checkpoint`` tell a resumable checkpoint from a truncated, corrupt or weights-only file, so
that ``--resume`` can fall back to the newest valid one; ``find_checkpoint`` is the file a run directory
means (``python -m nmt.translate RUN``, ``evaluate.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from nmt.atomic import replacing


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that replaces ``path`` only once the new file is complete on disk
    (``nmt.atomic.replacing``, durable); a failed write raises an OSError naming the checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(path, durable=True) as tmp, open(tmp, "wb") as f:
            out = _WriteErrors(f)
            try:
                torch.save(obj, out)
            except RuntimeError:
                if out.error is not None:  # torch reports a failed write as "unexpected pos ..."; give the real cause
                    raise out.error from None
                raise
    except OSError as e:
        reason = e.strerror or str(e)
        raise OSError(e.errno, f"could not write checkpoint {path}: {reason}; the previous one is intact") from e


class _WriteErrors:
    """A binary file for ``torch.save`` that remembers the OSError of a failed write (ENOSPC, EFBIG, EIO).

    torch.save swallows it and raises a RuntimeError about the stream position instead.
    """

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


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
        self._saved_step = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._saved_step = trainer.global_step  # resumed: that step's checkpoint exists

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # (the same step again: gradient accumulation calls this several times per update. Every process decides
        # alike from the step alone, never from the file, which only the first writes: saving is collective)
        if step == self._saved_step or step % self.every:
            return
        self._saved_step = step
        trainer.save_checkpoint(self.folder / f"step-{step}.ckpt", weights_only=False)
        if trainer.is_global_zero:
            for old in periodic_checkpoints(self.folder)[: -self.keep]:
                old.unlink(missing_ok=True)


def periodic_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """The ``step-<N>.ckpt`` files of ``folder``, oldest first (by N, not by name or time)."""
    files = [p for p in Path(folder).glob("step-*.ckpt") if p.stem[5:].isdigit()]
    return sorted(files, key=lambda p: int(p.stem[5:]))


RESUMABLE_KEYS = ("state_dict", "global_step", "epoch", "loops", "optimizer_states", "lr_schedulers")
"""What Lightning needs to resume training from a checkpoint (a weights-only file lacks the last four)."""


class CheckpointError(Exception):
    """A checkpoint file that is missing, unreadable or not what it must be.

    ``reason`` completes "checkpoint PATH is ..." (``missing``, ``unreadable, truncated or corrupt (...)``,
    ``not a Lightning checkpoint (...)``, ...), which is the message.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"checkpoint {path} is {reason}")


def load_checkpoint(path: str | os.PathLike, resumable: bool = False) -> dict:
    """The checkpoint dict saved at ``path``, loaded on the CPU; raises ``CheckpointError`` (one line) otherwise.

    It must be a Lightning checkpoint with a ``state_dict``; with ``resumable``, also what training needs to
    continue from it (``RESUMABLE_KEYS``, an integer ``global_step``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "missing")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own files: they hold bytes and dicts
    except Exception as e:  # noqa: BLE001 (a truncated zip, garbage bytes, a bad pickle: each library its own kind)
        detail = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(path, f"unreadable, truncated or corrupt ({type(e).__name__}: {detail})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(path, f"not a Lightning checkpoint (holds a {type(ckpt).__name__})")
    if resumable:
        missing = [k for k in RESUMABLE_KEYS if k not in ckpt]
        if missing:
            raise CheckpointError(path, f"not a resumable checkpoint (no {', '.join(missing)})")
        if not isinstance(ckpt["global_step"], int):
            raise CheckpointError(path, f"not a resumable checkpoint (global_step is {ckpt['global_step']!r})")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(path, "not a Lightning checkpoint (no state_dict)")
    return ckpt


def read_checkpoint(path: str | os.PathLike) -> tuple[dict | None, str | None]:
    """A resumable checkpoint: ``(checkpoint, None)``, or ``(None, why it cannot be resumed from)``."""
    try:
        return load_checkpoint(path, resumable=True), None
    except CheckpointError as e:
        return None, e.reason


def find_checkpoint(path: str | os.PathLike, which: str = "best") -> Path:
    """The checkpoint file meant by a run directory (its ``best`` or ``last``) or a file path."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints"
        for name in ([which] if which != "best" else ["best", "last"]):  # a run without validation has no best
            candidate = folder / f"{name}.ckpt"
            if candidate.is_file():
                return candidate
        raise CheckpointError(folder / f"{which}.ckpt", "missing")
    if not path.is_file():
        raise CheckpointError(path, "missing (neither a checkpoint file nor a run directory)")
    return path


def newest_valid_checkpoint(
    folder: str | os.PathLike, preferred: str | os.PathLike | None = None
) -> tuple[Path | None, dict | None, list[tuple[Path, str]]]:
    """The checkpoint to resume from: ``preferred`` (``last.ckpt``) if it is valid, else the valid one of
    ``folder``'s ``step-<N>.ckpt`` and ``best.ckpt`` with the highest global step.

    Returns ``(path, checkpoint, skipped)``: the chosen file (None if no file is valid), its loaded
    contents, and every file tried and rejected with the reason. Files are loaded newest first and the
    search stops at the first valid one, so a healthy ``last.ckpt`` costs a single load.
    """
    folder = Path(folder)
    skipped: list[tuple[Path, str]] = []
    if preferred is not None:
        ckpt, problem = read_checkpoint(preferred)
        if problem is None:
            return Path(preferred), ckpt, skipped
        skipped.append((Path(preferred), problem))
    best_path, best, best_step = folder / "best.ckpt", None, -1
    if best_path.is_file() and best_path != Path(preferred or ""):
        best, problem = read_checkpoint(best_path)
        if problem is None:
            best_step = best["global_step"]
        else:
            skipped.append((best_path, problem))
    for path in reversed(periodic_checkpoints(folder)):
        if path == Path(preferred or ""):
            continue
        if int(path.stem[5:]) <= best_step:
            break  # best.ckpt is at least as new as the rest
        ckpt, problem = read_checkpoint(path)
        if problem is None:
            return path, ckpt, skipped
        skipped.append((path, problem))
    if best is not None:
        return best_path, best, skipped
    return None, None, skipped
