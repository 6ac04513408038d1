"""What a run prints while it trains.

On a terminal Lightning's progress bar shows the current loss and the last validation BLEU. When the
output is not a terminal (a SLURM log, CI, ``nohup``), a bar's carriage returns turn into megabytes of
noise, so the training module prints one plain line per logged row instead (``format_row``).
"""

from __future__ import annotations

FIELDS = (
    ("train/loss", "loss", ".3f"),
    ("train/ppl", "ppl", ".2f"),
    ("train/lr", "lr", ".2e"),
    ("train/grad_norm", "gnorm", ".2f"),
    ("train/tok_per_s", "tok/s", ".0f"),
    ("val/loss", "val loss", ".3f"),
    ("val/ppl", "val ppl", ".2f"),
    ("val/bleu", "val BLEU", ".2f"),
    ("test/bleu", "test BLEU", ".2f"),
)


def format_row(step: int, max_steps: int, epoch: int, row: dict) -> str:
    """One line for a row of logged metrics, e.g. ``step 50/1000  epoch 0  loss 6.123  …``."""
    parts = [f"step {step}" + (f"/{max_steps}" if max_steps > 0 else ""), f"epoch {epoch}"]
    parts += [f"{label} {row[key]:{fmt}}" for key, label, fmt in FIELDS if key in row]
    return "  ".join(parts)


def quiet_lightning() -> None:
    """Drop Lightning's advertisement for its cloud logger from a run's output."""
    import logging

    class DropTip(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in record.getMessage()

    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(DropTip())
