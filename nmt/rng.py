"""Random number generator states in checkpoints, so that a resumed run draws the same dropout masks.

Lightning's checkpoints hold weights, optimiser, schedule and loop counters but no RNG state: a run
resumed from one continues with freshly seeded generators and so with different dropout masks than
the run it continues. ``RNGStates`` adds the state of every generator the training step can draw from
(Python's ``random``, NumPy's global generator, torch's CPU generator and every CUDA device's) of
*every* process to each checkpoint, and puts each process's own states back just before training
resumes. Nothing else in the framework draws from these generators between a checkpoint and the next
training step (data loaders have their own generators; validation draws nothing), so the next
training step sees exactly the generator states the uninterrupted run saw.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback


def capture() -> dict:
    """This process's generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStates(Callback):
    """Saves every process's RNG states with each checkpoint; restores this process's at train start."""

    def __init__(self) -> None:
        self._loaded: list[dict] | None = None

    def state_dict(self) -> dict:
        # Called on every process whenever a checkpoint is made (only the first one writes the file).
        state = capture()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            per_rank: list = [None] * dist.get_world_size()
            dist.all_gather_object(per_rank, state)
        else:
            per_rank = [state]
        return {"per_rank": per_rank}

    def load_state_dict(self, state_dict: dict) -> None:
        self._loaded = state_dict["per_rank"]

    def on_train_start(self, trainer, pl_module) -> None:
        if self._loaded is None:
            return
        states, self._loaded = self._loaded, None
        if len(states) != trainer.world_size:
            raise RuntimeError(
                f"the checkpoint holds the RNG states of {len(states)} process(es) "
                f"but this run has {trainer.world_size}; resume with the same number of processes"
            )
        restore(states[trainer.global_rank])
