"""Exact resume: the sampler's position and the RNG states, and a real SIGKILL mid-epoch (fairseq-style check)."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from nmt.data.batching import TokenBatchSampler
from test_data import write_corpus


def lengths(n=200, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(1, 40, n)
    return src, np.maximum(1, (src * rng.normal(1.1, 0.2, n)).astype(int))  # correlated, as in a translation corpus


@pytest.mark.parametrize("consumed", [0, 1, 5, 11])
def test_restored_sampler_yields_exactly_the_batches_not_yet_trained(consumed):
    src, tgt = lengths()
    full = TokenBatchSampler(src, tgt, 128, seed=4)
    full.set_epoch(3)
    epoch = list(full)
    trained = TokenBatchSampler(src, tgt, 128, seed=4)
    trained.set_epoch(3)
    it = iter(trained)
    for _ in range(consumed + 2):  # the loader fetches ahead of what was trained ...
        next(it)
    trained.consumed = consumed  # ... but the position counts trained batches only
    resumed = TokenBatchSampler(src, tgt, 128, seed=4)
    resumed.load_state_dict(trained.state_dict())
    resumed.set_epoch(3)  # the loop calls this again at the start of the resumed epoch: no effect
    assert list(resumed) == epoch[consumed:]


def test_a_finished_epoch_resumes_at_the_start_of_the_next():
    src, tgt = lengths()
    a = TokenBatchSampler(src, tgt, 128, seed=1)
    a.consumed = len(a)
    state = a.state_dict()
    assert (state["epoch"], state["consumed"]) == (1, 0)
    b = TokenBatchSampler(src, tgt, 128, seed=1)
    b.load_state_dict(state)
    a.set_epoch(1)
    assert list(b) == list(a) and len(list(b)) == len(a)


def test_position_is_per_rank_and_refuses_a_changed_layout():
    src, tgt = lengths(301)
    ranks = [TokenBatchSampler(src, tgt, 96, seed=2, num_replicas=2, rank=r) for r in range(2)]
    for r in ranks:
        r.consumed = 3
    resumed = [TokenBatchSampler(src, tgt, 96, seed=2, num_replicas=2, rank=r) for r in range(2)]
    for r, old in zip(resumed, ranks):
        r.load_state_dict(old.state_dict())
        fresh = TokenBatchSampler(src, tgt, 96, seed=2, num_replicas=2, rank=old.rank)
        assert list(r) == list(fresh)[3:]
    single = TokenBatchSampler(src, tgt, 96, seed=2)
    with pytest.raises(ValueError, match="number of processes changed"):
        single.load_state_dict(ranks[0].state_dict())


def test_padding_share_is_reported_per_side():
    src, tgt = lengths(500)
    share = TokenBatchSampler(src, tgt, 256, seed=0).padding()
    assert 0.9 < share["tgt"] <= 1.0 and 0 < share["src"] <= 1.0


# ----------------------------------------------------------------------------- end to end, with SIGKILL
COMMON = ["--vocab-size", "400", "--max-tokens", "256", "--max-len", "64", "--max-steps", "45", "--save-every", "7",
          "--keep-last", "1", "--log-every", "1", "--val-every", "0", "--warmup", "10", "--patience", "50"]


def losses(run: Path) -> list[tuple[int, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [(int(r["step"]), r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def kill_test_corpus(base: Path) -> tuple[Path, dict]:
    """A 300-pair corpus of varied lengths in ``base/corpus``, and the environment of one-thread train.py runs on it
    (a data root of their own in ``base/data``): what the kill-and-resume tests train on."""
    pairs = [(" ".join(f"w{(i * 7 + j) % 50}" for j in range(3 + i % 9)),
              " ".join(f"v{(i * 5 + j) % 40}" for j in range(2 + i % 11))) for i in range(300)]
    data = write_corpus(base / "corpus", pairs=pairs)
    return data, {**os.environ, "NMT_DATA_ROOT": str(base / "data"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    base = tmp_path_factory.mktemp("resume")
    data, env = kill_test_corpus(base)

    def command(run, *extra):
        return [sys.executable, str(ROOT / "train.py"), "--data", str(data), *COMMON,
                "--run-dir", str(base / run), *extra]

    # the uninterrupted run and the one to kill, at the same time (one thread each)
    full = subprocess.Popen(command("full"), cwd=base, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    victim = subprocess.Popen(command("killed"), cwd=base, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        rows = losses(base / "killed") if (base / "killed" / "metrics.csv").exists() else []
        if rows and rows[-1][0] >= 17:
            break
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = losses(base / "killed")[-1][0]
    ckpt_step = torch.load(base / "killed" / "checkpoints" / "last.ckpt", map_location="cpu",
                           weights_only=False)["global_step"]
    out = full.communicate(timeout=300)[0]
    assert full.returncode == 0, out[-3000:]
    resumed = subprocess.run(command("killed", "--resume"), cwd=base, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    per_epoch = int(re.search(r"([\d,]+) training batches per epoch", out).group(1))
    return base, killed_at, ckpt_step, per_epoch


def test_killed_mid_epoch_and_resumed_reproduces_the_uninterrupted_run(killed_and_resumed):
    base, killed_at, ckpt_step, per_epoch = killed_and_resumed
    # the kill came after the last checkpoint and the checkpoint is mid-epoch: a real mid-epoch resume
    assert killed_at > ckpt_step and ckpt_step % 7 == 0 and ckpt_step % per_epoch != 0 and 45 > per_epoch
    full, resumed = losses(base / "full"), losses(base / "killed")
    assert [s for s, _ in resumed] == list(range(1, 46))  # every step once: the killed process's extra rows are gone
    assert resumed == full  # the same loss, to the last digit, at every step
    a = torch.load(base / "full" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(base / "killed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 45
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # --patience's count (validations without a new best, the best and its update) continued exactly
    early_a, early_b = a["callbacks"]["EarlyStopping"], b["callbacks"]["EarlyStopping"]
    assert early_a == early_b and early_a["best_step"] is not None
    ra, rb = (json.loads((base / run / "results.json").read_text()) for run in ("full", "killed"))
    assert ((ra["stop_reason"], ra["best_step"]) == (rb["stop_reason"], rb["best_step"])
            == ("max_steps", early_a["best_step"]))


def test_a_resumed_run_counts_the_wall_time_of_both_sessions(killed_and_resumed):
    base = killed_and_resumed[0]
    full = json.loads((base / "full" / "results.json").read_text())
    resumed = json.loads((base / "killed" / "results.json").read_text())
    assert full["sessions"] == 1 and full["wall_time_s"] == pytest.approx(full["session_wall_time_s"], abs=0.2)
    # the killed session's time up to its checkpoint is carried by last.ckpt and added to the resumed session's
    assert resumed["sessions"] == 2
    assert resumed["wall_time_s"] > resumed["session_wall_time_s"] + 0.1


def test_a_shard_equals_a_sampler_built_for_that_rank():
    src, tgt = lengths(257)
    whole = TokenBatchSampler(src, tgt, 96, seed=6)
    for world in (1, 2, 3):
        for rank in range(world):
            direct = TokenBatchSampler(src, tgt, 96, seed=6, num_replicas=world, rank=rank)
            shard = whole.shard(world, rank)
            for epoch in (0, 1):
                direct.set_epoch(epoch)
                shard.set_epoch(epoch)
                assert list(shard) == list(direct) and len(shard) == len(direct)
