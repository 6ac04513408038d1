"""Which process of a run this is, known before the Trainer exists, and how the processes agree on a run.

A run on several devices or nodes is one ``train.py`` process per device. They are started in one of
two ways, and ``train.py`` must work with both:

- **Lightning's launcher** (``python train.py --devices N`` on one node): the first process runs
  ``train.py`` up to ``trainer.fit``, which starts N − 1 copies of the same command with
  ``LOCAL_RANK=1..N−1`` (and ``NODE_RANK``, ``WORLD_SIZE``) in their environment. By then the first process
  has chosen and created the run directory; it puts its choice into its own environment
  (``NMT_LAUNCH_RUN_DIR``, ``NMT_LAUNCH_RESUME``), which the copies inherit and follow.
- **An external launcher** (torchrun, SLURM's ``srun``), or several nodes whatever the launcher (one
  ``train.py --num-nodes M`` per node started by hand: each node's first process then hands its choice to
  its own copies): processes start independently, and there is no process group yet through which one
  could tell the others what it chose. Every process therefore derives the same choice from the command line
  and from files that no process of the run writes before all of them have joined the process group:
  the run directory is ``--run-dir`` or, without it, ``runs/<name>`` exactly (no ``-2`` suffix: the
  others could not know it), and whether ``--resume auto`` resumes depends on whether the run directory
  holds a checkpoint (checkpoints are written only once training runs, which needs every process).

In both cases only the process of global rank 0 writes into the run directory (``config.yaml``,
``provenance.json``, ``spm.model``, metrics, checkpoints, results). The SentencePiece model and the
encoded-data cache are built by local rank 0 of every node while the node's other processes wait for
them to appear (they are renamed into place complete, so a process never reads half of one); with a
data root shared between nodes, two nodes may build the same entry at once, and the second rename
loses harmlessly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

RUN_DIR_VAR, RESUME_VAR = "NMT_LAUNCH_RUN_DIR", "NMT_LAUNCH_RESUME"


@dataclass(frozen=True)
class Launch:
    """This process's place in the run: ``global_rank`` of ``world_size`` processes, ``local_rank`` on its node.

    ``launcher`` is ``torchelastic``, ``slurm`` or ``lightning`` (Lightning's own launcher, or a single
    process). ``inherited`` is the run directory and checkpoint chosen by the first process of the node,
    for a copy started by Lightning's launcher (None otherwise).
    """

    global_rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    num_nodes: int = 1
    launcher: str = "lightning"
    inherited: tuple[str, str | None] | None = None
    copy: bool = False  # started by Lightning's launcher from the first process of its node

    @property
    def is_first(self) -> bool:
        return self.global_rank == 0

    @property
    def starts_copies(self) -> bool:
        """Lightning's launcher will start the other processes of this node from this one."""
        return self.launcher == "lightning" and self.world_size > self.num_nodes and not self.copy

    @property
    def decides_alone(self) -> bool:
        """Every process chooses the run directory by rule; none can wait for the first process's choice.

        True under torchrun or SLURM, and on several nodes whatever the launcher: then some processes of
        the run are not copies started by the first process.
        """
        if self.world_size == 1 or self.inherited is not None:
            return False
        return self.launcher != "lightning" or self.num_nodes > 1


def slurm_detected() -> bool:
    """Lightning will use its SLURM cluster environment (srun is used and torchrun is not)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return not TorchElasticEnvironment.detect() and SLURMEnvironment.detect()


def detect(devices: int, num_nodes: int) -> Launch:
    """This process's ranks, from the environment, as Lightning's cluster environments will see them."""
    from lightning.fabric.plugins.environments import TorchElasticEnvironment

    env = os.environ
    if TorchElasticEnvironment.detect():  # torchrun: Lightning gives it priority, even inside SLURM
        return Launch(int(env["RANK"]), int(env.get("LOCAL_RANK", 0)),
                      int(env["WORLD_SIZE"]), num_nodes, "torchelastic")
    if slurm_detected():
        return Launch(int(env.get("SLURM_PROCID", 0)), int(env.get("SLURM_LOCALID", 0)),
                      int(env.get("SLURM_NTASKS", 1)), num_nodes, "slurm")
    local = int(env.get("LOCAL_RANK", 0))
    node = int(env.get("NODE_RANK", env.get("GROUP_RANK", 0)))
    # (on --resume without --devices the flags still say 1 device here: the handed-down choice tells a copy)
    inherited = (env[RUN_DIR_VAR], env.get(RESUME_VAR) or None) if "LOCAL_RANK" in env and RUN_DIR_VAR in env else None
    copy = "LOCAL_RANK" in env and (devices * num_nodes > 1 or inherited is not None)
    return Launch(node * devices + local, local, devices * num_nodes, num_nodes, "lightning", inherited, copy)


def hand_down(run_dir: Path, checkpoint: Path | None) -> None:
    """Put the first process's choice where the copies Lightning's launcher starts will find it."""
    os.environ[RUN_DIR_VAR] = str(run_dir)
    os.environ[RESUME_VAR] = str(checkpoint) if checkpoint is not None else ""


def wait_for(path: Path, poll_s: float = 0.5) -> None:
    """Block until ``path`` exists: a cache entry that local rank 0 of this node is building.

    No time limit: building may take long on a large corpus, and if local rank 0 fails the launcher
    ends the run (torchrun does; under SLURM use ``srun --kill-on-bad-exit=1``).
    """
    while not path.exists():
        time.sleep(poll_s)
