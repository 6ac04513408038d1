"""Stop training cleanly on a signal: finish the current update, save ``last.ckpt``, stop.

``GracefulStop`` handles SIGTERM (what schedulers and ``kill`` send), SIGINT (Ctrl-C) and, outside
SLURM's automatic requeueing, SIGUSR1. Its handlers only note the signal; at the end of the next update
every process agrees to stop (``reduce_boolean_decision``: one process is enough, and every process
takes part in the same collective at the same update) and ``last.ckpt`` is written atomically, at the
same point of the loop as Lightning's own mid-epoch checkpoints. ``TrainingStopped`` then ends
``trainer.fit`` at the next hook after the module has logged that update's metrics: the start of the
next batch, of a validation (which is skipped), or the end of the epoch or of training. ``train.py``
then skips the test translation, writes a ``results.json`` that says the run did not finish, prints
how to resume, and exits with 128 + the signal number (143 for SIGTERM, 130 for SIGINT), as a process
killed by the signal would.

Why not ``trainer.should_stop``: Lightning answers it by running a full validation and an epoch-end
checkpoint that marks the epoch as finished, which takes time a scheduler's grace period may not
leave and would make a resumed run skip the rest of the epoch. Raising after our own save writes
nothing more (a validation due at the stopping update is skipped, and Lightning does not redo it on
resume, as for any checkpoint written at the end of a batch).

The handlers are installed when training starts (``on_train_start``: after Lightning has installed its
own SIGTERM handler, which would otherwise wrap ours and end ``fit`` with a bare ``SystemExit``) and
the previous ones are put back when training ends or fails. A second Ctrl-C while a stop is pending
interrupts at once, without a checkpoint. A signal that was ignored when training started (SIGINT in a
background job of a script, say) stays ignored. A signal that arrives during a validation takes effect after
it, at the end of the next update.

Under SLURM, ``#SBATCH --signal=SIGUSR1@90`` asks for SIGUSR1 90 s before the time limit. ``train.py`` turns
Lightning's SLURM auto-requeue off (its SIGUSR1 handler saves a checkpoint from inside the handler, at a
different point of the loop on every process, which can hang DDP), so SIGUSR1 is treated like SIGTERM and
``scripts/slurm.sbatch`` requeues the job when train.py exits with 138. Should something else have
installed a SIGUSR1 handler (Lightning's auto-requeue, when enabled), ``GracefulStop`` leaves SIGUSR1 alone
and handles the SIGTERM that follows.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class TrainingStopped(Exception):
    """Training ended before its --max-steps/--max-epochs: by a signal, or because it diverged.

    ``reason`` is the signal's name (``SIGTERM``) or ``diverged``; ``step`` the updates attempted;
    ``exit_status`` what ``train.py`` exits with; ``saved`` the checkpoint written at the stop (None:
    nothing was written); ``diverged_at_step`` the first update of the non-finite streak that stopped
    a diverged run.
    """

    def __init__(self, message: str, reason: str, step: int, exit_status: int,
                 saved: Path | None = None, diverged_at_step: int | None = None):
        super().__init__(message)
        self.reason, self.step, self.exit_status = reason, step, exit_status
        self.saved, self.diverged_at_step = saved, diverged_at_step


def _handled_elsewhere(signum: int) -> bool:
    """True when something (Lightning's SLURM requeue, the user) has installed a handler for ``signum``."""
    return signal.getsignal(signum) not in (signal.SIG_DFL, signal.SIG_IGN, None, signal.default_int_handler)


class GracefulStop(Callback):
    """Save ``last_path`` and stop at the end of the update during which a stop signal arrived."""

    def __init__(self, last_path: str | os.PathLike):
        self.last_path = Path(last_path)
        self.received: int | None = None  # the first stop signal received by this process
        self._previous: dict[int, object] = {}
        self._last_step = -1
        self._announce = False
        self._stop: TrainingStopped | None = None  # saved, to be raised at the next hook

    # ------------------------------------------------------------------ handlers
    def _handler(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
            if self._announce:  # os.write: print() may be in progress in the interrupted frame
                os.write(2, f"{signal.Signals(signum).name} received: saving a checkpoint and stopping at the end "
                            "of the current update\n".encode())
            return
        if signum == signal.SIGINT:  # a second Ctrl-C: stop now, without a checkpoint
            self.restore()
            raise KeyboardInterrupt

    def install(self, trainer) -> None:
        if threading.current_thread() is not threading.main_thread() or self._previous:
            return
        self._announce = trainer.is_global_zero
        signums = [signal.SIGTERM, signal.SIGINT]
        if hasattr(signal, "SIGUSR1") and not _handled_elsewhere(signal.SIGUSR1):
            signums.append(signal.SIGUSR1)
        for signum in signums:
            if signal.getsignal(signum) == signal.SIG_IGN:
                continue  # ignored when we started (a background job's SIGINT, nohup): it stays ignored
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handler)

    def restore(self) -> None:
        """Put back the handlers that were there before ``install``."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # ------------------------------------------------------------------ Lightning hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step
        if getattr(trainer, "received_sigterm", False):  # arrived during set-up, when Lightning's handler was active
            self.received = signal.SIGTERM
        self.install(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return  # accumulating gradients: stop only between updates (every process sees the same boundaries)
        self._last_step = step
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        # every process stops here; which signal (the highest number seen by any process) is for the message
        signum = int(trainer.strategy.reduce(torch.tensor(self.received or 0, device=pl_module.device),
                                             reduce_op="max"))
        trainer.save_checkpoint(self.last_path, weights_only=False)
        name = signal.Signals(signum).name
        self._stop = TrainingStopped(f"stopped by {name} at update {step}", reason=name, step=step,
                                     exit_status=128 + signum, saved=self.last_path)

    def _raise_pending(self) -> None:
        if self._stop is not None:
            stop, self._stop = self._stop, None
            self.restore()
            raise stop

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._raise_pending()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._raise_pending()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._raise_pending()  # before ModelCheckpoint's epoch-end save, which would mark the epoch finished

    def on_train_end(self, trainer, pl_module) -> None:
        self._raise_pending()
        self.restore()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.restore()
