"""Early stopping on validation BLEU (``--patience N``, ``--min-delta D``), and the record of the best validation.

fairseq's meaning of patience: the run stops after N validations in a row that bring no new best validation BLEU.
With ``--min-delta D`` a validation counts as a new best only if it beats the best that counted by more than D
(BLEU points); the best checkpoint (``best.ckpt``) still follows every strict improvement. N = 0 never stops.
With ``--patience-from U`` only the validations at update U or later count against patience (the best is still
followed before): a model that has not yet begun to use its source scores near 0 BLEU, up and down, and that noise
is not a plateau; with a small patience such a slow start would otherwise be stopped as "does not learn".

The callback also remembers the update of the best validation BLEU, which ``results.json`` reports with the reason
the run stopped. Its state (best BLEU and update, the best that counts for patience, validations without one, the
update it stopped at) is part of every checkpoint, so ``--resume``, even after ``kill -9``, continues the count
exactly where the checkpoint left it: a checkpoint written at a validation holds the state after that validation
(Lightning runs checkpoint callbacks after the others).
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn


class EarlyStopping(L.Callback):
    """Track the best validation BLEU and its update; stop after ``patience`` validations without a new best."""

    def __init__(self, patience: int = 0, min_delta: float = 0.0, start: int = 0, monitor: str = "val/bleu",
                 echo=None):
        if patience < 0:
            raise ValueError(f"patience must be ≥ 0 (0: never stop early), got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be ≥ 0, got {min_delta}")
        if start < 0:
            raise ValueError(f"start must be ≥ 0, got {start}")
        self.patience, self.min_delta, self.start, self.monitor, self.echo = patience, min_delta, start, monitor, echo
        self.best: float | None = None  # best validation BLEU so far (strict improvements: best.ckpt's)
        self.best_step: int | None = None  # the update of that validation
        self.reference: float | None = None  # the best that counted for patience (beaten by more than min_delta)
        self.bad_validations = 0  # validations in a row without a new best that counts
        self.stopped_at: int | None = None  # the update at which patience ran out

    def exhausted(self) -> bool:
        return bool(self.patience) and self.bad_validations >= self.patience

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """On resume: a run whose patience ran out before its checkpoint stops again at once (as the uninterrupted
        run did), unless ``--patience`` was raised; otherwise the stop it may have had is history."""
        if self.exhausted():
            self.stopped_at = self.stopped_at if self.stopped_at is not None else trainer.global_step
            trainer.should_stop = True
            if self.echo is not None:
                self.echo(f"--patience {self.patience} was already exhausted at update {self.stopped_at} (best "
                          f"validation BLEU {self.best:.2f} at update {self.best_step}): not training further; raise "
                          "--patience to continue")
        else:
            self.stopped_at = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        self.observe(float(value), trainer.global_step)
        stop = trainer.strategy.reduce_boolean_decision(self.exhausted(), all=False)  # the same on every process
        if stop:
            self.stopped_at = trainer.global_step
            trainer.should_stop = True
            if self.echo is not None:
                delta = f" by more than {self.min_delta:g}" if self.min_delta else ""
                counted = f", counted from update {self.start}" if self.start else ""
                self.echo(f"early stop at update {trainer.global_step}: validation BLEU has not improved{delta} for "
                          f"{self.bad_validations} validations in a row (--patience {self.patience}{counted}); best "
                          f"{self.best:.2f} at update {self.best_step}")

    def observe(self, bleu: float, step: int) -> None:
        """Count one validation's BLEU at update ``step``."""
        if self.best is None or bleu > self.best:
            self.best, self.best_step = bleu, step
        if self.reference is None or bleu > self.reference + self.min_delta:
            self.reference, self.bad_validations = bleu, 0
        elif step >= self.start:
            self.bad_validations += 1

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "reference": self.reference,
                "bad_validations": self.bad_validations, "stopped_at": self.stopped_at}

    def load_state_dict(self, state_dict: dict) -> None:
        for key, value in state_dict.items():
            setattr(self, key, value)
