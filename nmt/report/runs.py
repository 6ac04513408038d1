"""The runs of a study folder (``DIR/runs/<run>/``): which there are, which are still open, and their order.

Every part of the report names a run's (variant, λ) cell the same way (``variant_label``) and lists the cells in
the same order (``in_order``): the baseline first, then the residual registry's order, then λ.
"""

from __future__ import annotations

from pathlib import Path

from nmt.config import TrainConfig, read_saved_config
from nmt.residual import variant_order


def configured_runs(out: Path) -> dict[Path, TrainConfig]:
    """{run directory: its config.yaml} for every run of the study that has one, in name order."""
    runs_dir = out / "runs"
    runs = sorted(p for p in runs_dir.iterdir() if (p / "config.yaml").is_file()) if runs_dir.is_dir() else []
    return {run: read_saved_config(run / "config.yaml") for run in runs}


def still_open(run: Path) -> bool:
    """Whether ``run`` has begun training and has not ended: a config.yaml and no results.json (train.py writes it
    when a run ends, however it ends, except on SIGKILL). Its checkpoints are a snapshot of a run in progress, kept
    out of the report's tables and diagnosis: a report written while another invocation trains, or after a kill,
    must not score them as that run's result."""
    return (run / "config.yaml").is_file() and not (run / "results.json").is_file()


def in_order(configs) -> list[str]:
    """The labels of these runs' (variant, λ) cells, each once, in the tables' order: the baseline first, then the
    registry's order (``nmt.residual.variant_order``), then λ."""
    cells = {(c.skip, c.lam): c for c in configs}
    return [variant_label(cells[key]) for key in sorted(cells, key=lambda key: variant_order(*key))]


def variant_label(cfg: TrainConfig) -> str:
    return cfg.skip + (f" λ={cfg.lam:g}" if cfg.lam != 1 else "")
