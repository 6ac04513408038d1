"""A run's wall time across the sessions that trained it (a killed and resumed run is one run).

``WallClock`` is a Lightning callback whose state goes into every checkpoint: the seconds the run had
trained up to that checkpoint. A resumed session starts from that number, so the run's wall time is the
sum over its sessions, each counted up to its last checkpoint (what a session did after its last
checkpoint was lost, and is redone and counted by the next one), plus the last session in full.
"""

from __future__ import annotations

import time

from lightning.pytorch import Callback


class WallClock(Callback):
    """Seconds of wall time of the run so far, over all its sessions."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.time() if started is None else started  # this session's start
        self.before = 0.0  # seconds of the earlier sessions, from the checkpoint resumed from
        self.sessions = 1
        self._loaded: dict | None = None

    def session_s(self) -> float:
        return time.time() - self.started

    def total_s(self) -> float:
        return self.before + self.session_s()

    def state_dict(self) -> dict:
        return {"seconds": self.total_s(), "sessions": self.sessions}

    def load_state_dict(self, state_dict: dict) -> None:
        # Lightning also loads callback states when testing with a checkpoint (best.ckpt): applied only when
        # training resumes from it
        self._loaded = state_dict

    def on_train_start(self, trainer, pl_module) -> None:
        if self._loaded is not None:
            self.before = float(self._loaded["seconds"])
            self.sessions = int(self._loaded.get("sessions", 1)) + 1
            self._loaded = None
