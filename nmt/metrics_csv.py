"""Reading a run's ``metrics.csv`` (written by ``nmt.csvlog`` during training): its rows, and one column of them as
a series against updates. Shared by the study report and the pilot."""

from __future__ import annotations

import csv
from pathlib import Path


def read_metrics(run: Path) -> list[dict]:
    """The rows of the run's metrics.csv (empty without one)."""
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def metric_series(rows: list[dict], column: str) -> tuple[list[int], list[float]]:
    """(updates, values) of the rows that logged ``column``."""
    xs, ys = [], []
    for r in rows:
        if r.get(column) not in (None, "") and r.get("step"):
            xs.append(int(float(r["step"])))
            ys.append(float(r[column]))
    return xs, ys
