"""``metrics.csv`` that survives ``--resume``.

Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts, so a resumed run would lose
every metric logged before the interruption. This logger appends instead, and starts from the header
already in the file, so that rows keep their columns. Rows logged after the checkpoint a run resumes
from were made by the interrupted process and are logged again by the resumed one; ``drop_after``
removes them first, so every step appears once.
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from nmt.atomic import replacing


class AppendingWriter(ExperimentWriter):
    """An ExperimentWriter that keeps an existing metrics file and its columns."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])

    def _check_log_dir_exists(self) -> None:  # the parent deletes metrics.csv here
        pass


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose metrics file is appended to across resumptions of a run."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def drop_after(self, step: int) -> None:
        """Remove the rows of metrics.csv logged at a step after ``step`` (rewritten atomically)."""
        path = os.path.join(self.log_dir, "metrics.csv")
        if not os.path.isfile(path):
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header, rows = reader.fieldnames or [], list(reader)
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) <= step]
        if len(kept) == len(rows):
            return
        with replacing(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(kept)
