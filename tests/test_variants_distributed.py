"""The variants with state beyond one tensor, through the real train.py: ``resi_dual`` (two streams) and ``admin``
(a one-time initialisation from data). A run killed with SIGKILL mid-epoch and resumed equals the uninterrupted
one bit for bit (so Admin's profiling did not run again on resume: it would have reset ω), and a 2-process gloo
run's weights are the same on both processes (the validation loss gathered from both equals one process's
evaluation of the checkpoint). Both variants run side by side, one thread each, to keep the time down."""

import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, metrics
from test_ddp import finish, lines, start, train_losses, write_lexicon_corpus
from test_resume import kill_test_corpus, losses

from nmt.data.batching import TokenBatchSampler
from nmt.data.datamodule import collate
from nmt.data.tokenizer import PAD_ID, Tokenizer
from nmt.lit import sentence_losses
from nmt.translate import Translator

VARIANTS = ("admin", "resi_dual")
STEPS = 24
COMMON = ["--vocab-size", "400", "--max-tokens", "256", "--max-len", "64", "--max-steps", str(STEPS),
          "--save-every", "5", "--keep-last", "1", "--log-every", "1", "--val-every", "0", "--warmup", "10"]
INIT_LINE = "data-dependent initialisation of the residual blocks"


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """For each variant: an uninterrupted run and one killed (SIGKILL) after its checkpoint at update 10, resumed."""
    base = tmp_path_factory.mktemp("variants-resume")
    data, env = kill_test_corpus(base)

    def command(name, run, *extra):
        return [sys.executable, str(ROOT / "train.py"), "--data", str(data), *COMMON, "--skip", name,
                "--run-dir", str(base / run), *extra]

    # build the tokenizer and the encoded data once, before four processes look for them
    prepared = subprocess.run(command("post_ln", "prepare", "--max-steps", "1"), check=False, cwd=base, env=env,
                              capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stdout[-3000:] + prepared.stderr[-3000:]
    procs = {}
    for name in VARIANTS:
        full = subprocess.Popen(command(name, f"{name}-full"), cwd=base, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        log = open(base / f"{name}-killed.log", "w")
        victim = subprocess.Popen(command(name, f"{name}-killed"), cwd=base, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        procs[name] = (full, victim, log)
    killed_at = {}
    deadline = time.time() + 300
    while len(killed_at) < len(VARIANTS) and time.time() < deadline:
        for name, (_, victim, _) in procs.items():
            run = base / f"{name}-killed"
            if name not in killed_at and (run / "metrics.csv").exists():
                rows = losses(run)
                if rows and rows[-1][0] >= 12:  # after the checkpoint of update 10, before the one of update 15
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    killed_at[name] = losses(run)[-1][0]
        time.sleep(0.01)
    result = {}
    for name, (full, victim, log) in procs.items():
        victim.kill()
        victim.wait()
        log.close()
        out = full.communicate(timeout=300)[0]
        assert full.returncode == 0, out[-3000:]
        resumed = subprocess.run(command(name, f"{name}-killed", "--resume"), check=False, cwd=base, env=env,
                                 capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        first = (base / f"{name}-killed.log").read_text()
        result[name] = (killed_at.get(name), out, first, resumed.stdout)
    return base, result


@pytest.mark.parametrize("name", VARIANTS)
def test_killed_and_resumed_run_is_bitwise_the_uninterrupted_one(killed_and_resumed, name):
    base, result = killed_and_resumed
    killed_at, full_out, first_out, resumed_out = result[name]
    ckpt = torch.load(base / f"{name}-killed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert killed_at is not None and 12 <= killed_at < STEPS
    assert ckpt["global_step"] == STEPS and "resuming from" in resumed_out
    full, resumed = base / f"{name}-full", base / f"{name}-killed"
    assert [s for s, _ in losses(resumed)] == list(range(1, STEPS + 1))
    assert losses(resumed) == losses(full)  # every loss to the last digit
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.equal(a["state_dict"][k], ckpt["state_dict"][k]) for k in a["state_dict"])
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), ckpt["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    if name == "admin":  # profiled once, in the first session; the flag travels in every checkpoint
        assert INIT_LINE in full_out and INIT_LINE in first_out and INIT_LINE not in resumed_out
        assert ckpt["state_dict"]["model.data_init_done"].item() is True
        omegas = [v for k, v in ckpt["state_dict"].items() if k.endswith("omega")]
        assert len(omegas) == 2 * 2 + 2 * 3 and all(not torch.equal(o, torch.ones_like(o)) for o in omegas)
    else:
        assert INIT_LINE not in full_out and "model.encoder.ends.norm.weight" in ckpt["state_dict"]


# ------------------------------------------------------------------------------------------- two processes
DDP_STEPS = 12
DDP = ["--vocab-size", "320", "--max-tokens", "256", "--max-steps", str(DDP_STEPS), "--val-every", str(DDP_STEPS),
       "--log-every", "1", "--save-every", "0", "--lr", "6e-3", "--warmup", "6", "--accelerator", "cpu",
       "--devices", "2"]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("variants-ddp")
    data = write_lexicon_corpus(folder / "corpus")
    prepared = finish(start(["--data", str(data), "--vocab-size", "320", "--max-steps", "1", "--val-every", "0",
                             "--run-dir", str(folder / "prepare")], folder))
    assert prepared[0] == 0, prepared[1][-3000:] + prepared[2][-3000:]
    procs = {name: start(["--data", str(data), *DDP, "--skip", name, "--run-dir", str(folder / name)], folder)
             for name in VARIANTS}
    done = {name: finish(proc) for name, proc in procs.items()}
    for code, out, err in done.values():
        assert code == 0, out[-3000:] + err[-3000:]
    return folder, data, done


@pytest.mark.parametrize("name", VARIANTS)
def test_two_processes_hold_the_same_weights(two_processes, name):
    """Each process validated its share of the sentences with its own weights; the gathered loss equals one
    process's evaluation of the checkpoint, sentence by sentence: the processes' weights (Admin's ω included,
    set by the profiling before the first update) are the same."""
    folder, data, done = two_processes
    _, out, err = done[name]
    run = folder / name
    assert "Starting with 2 processes" in out + err and "Traceback" not in err
    assert [s for s, _ in train_losses(run)] == list(range(1, DDP_STEPS + 1))
    assert out.count(INIT_LINE) == (name == "admin")  # once, by the first process, before the first update
    val = [r for r in metrics(run) if r["val/loss"]]
    assert [int(r["step"]) for r in val] == [DDP_STEPS]
    translator = Translator.load(run, which="last")
    tokenizer = Tokenizer(run / "spm.model")
    sums = []
    with torch.no_grad():
        for i, (s, t) in enumerate(zip(tokenizer.encode(lines(data / "valid.en")),
                                       tokenizer.encode(lines(data / "valid.de")))):
            batch = collate([(i, np.array(s, dtype=np.int64), np.array(t, dtype=np.int64))])
            logits = translator.model(batch["src"], batch["tgt_in"])
            sums.append(sentence_losses(logits, batch["tgt_out"], 0.1, PAD_ID)[0].tolist())
    loss = math.fsum(x[0] for x in sums) / math.fsum(x[2] for x in sums)
    assert float(val[-1]["val/loss"]) == pytest.approx(loss, rel=1e-5)


def test_admin_profiles_the_first_batch_of_one_process_whatever_the_number_of_processes(two_processes):
    """The profiled batch is the first of epoch 0 in one process's order, not a process's own first batch."""
    from nmt.data.catalog import resolve_corpus
    from nmt.data.datamodule import TranslationData

    folder, data, _ = two_processes
    corpus = resolve_corpus(str(data), None, None)
    module = TranslationData(corpus, Tokenizer(folder / "admin" / "spm.model"), 256, 256, seed=1, log=lambda *_: None,
                             cache_root=folder / "cache")
    module.setup()
    batch = module.first_training_batch()
    src, tgt = module.datasets["train"].lengths()
    one = TokenBatchSampler(src, tgt, 256, seed=1)
    assert batch["id"].tolist() == [int(module.datasets["train"].index[i]) for i in next(iter(one))]
    shards = [TokenBatchSampler(src, tgt, 256, seed=1, num_replicas=2, rank=r) for r in range(2)]
    assert any(next(iter(s)) != next(iter(one)) for s in shards)  # a process's own first batch would differ
