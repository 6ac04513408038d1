"""Data parallelism on CPU: two processes with the gloo backend, through the real ``train.py``.

- Lightning's launcher (``--accelerator cpu --devices 2``, the ``ddp`` strategy): training, validation and
  checkpoints; the loss and BLEU logged under DDP equal a single-process evaluation of the same checkpoint;
  the effective batch (``--update-tokens``, summed over processes) is logged; a run stopped by SIGTERM and
  resumed on two processes is bitwise the uninterrupted one.
- torchrun, two "nodes" on one machine (one process each, ``--num-nodes 2 --devices 1``): the same command
  with ``--resume auto`` starts the run, then continues it.
- Two SLURM tasks (srun's environment, simulated on one machine): SIGUSR1 stops both at one update with status
  138, for scripts/slurm.sbatch to requeue; the same command then continues the run.
- In-process: how the processes find their rank and agree on a run directory, the derived accumulation,
  the CPU precision, ``--resume auto``.

Every process runs with one thread (OMP_NUM_THREADS=1); the corpus is a word-for-word lexicon task that a
tiny model learns within a few dozen updates, so that the BLEU compared is far from zero.
"""

import csv
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch
from conftest import metrics, train_command

from nmt import launch
from nmt.config import TrainConfig
from nmt.data.batching import TokenBatchSampler
from nmt.data.datamodule import collate
from nmt.data.tokenizer import PAD_ID, Tokenizer
from nmt.lit import sentence_losses
from nmt.config import resolve_precision
from nmt.train import Start, accumulation_for, choose_run_dir, default_run_name, main
from nmt.translate import Translator

LEXICON = {"apple": "apfel", "river": "fluss", "stone": "stein", "cloud": "wolke", "green": "gruen", "house": "haus",
           "music": "musik", "light": "licht", "table": "tisch", "water": "wasser", "horse": "pferd", "paper": "papier",
           "dream": "traum", "night": "nacht", "glass": "glas", "bread": "brot"}
# valid 80 and test 60 sentences make 3 evaluation batches each: one is repeated to give both processes two
SIZES = {"train": 800, "valid": 80, "test": 60}
STEPS = 90
DDP = ["--vocab-size", "320", "--max-tokens", "256", "--max-steps", str(STEPS), "--val-every", "45", "--log-every", "1",
       "--save-every", "7", "--keep-last", "1", "--update-tokens", "900", "--lr", "6e-3", "--warmup", "20",
       "--accelerator", "cpu", "--devices", "2"]
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
               "TORCHELASTIC_RUN_ID", launch.RUN_DIR_VAR, launch.RESUME_VAR)


def write_lexicon_corpus(folder: Path, seed: int = 5) -> Path:
    rng = random.Random(seed)
    words = list(LEXICON)
    folder.mkdir(parents=True)
    for split, n in SIZES.items():
        pairs = []
        for _ in range(n):
            sentence = [rng.choice(words) for _ in range(rng.randint(3, 9))]
            pairs.append((" ".join(sentence), " ".join(LEXICON[w] for w in sentence)))
        (folder / f"{split}.en").write_text("".join(e + "\n" for e, _ in pairs))
        (folder / f"{split}.de").write_text("".join(d + "\n" for _, d in pairs))
    return folder


def clean_env(env: dict) -> dict:
    """No launcher or scheduler variables from wherever the tests run."""
    return {k: v for k, v in env.items() if k not in LAUNCH_VARS and not k.startswith(("SLURM_", "TORCHELASTIC_"))}


def start(args, folder, **popen):
    command, env = train_command(args, folder / "data", threads=1)
    return subprocess.Popen(command, cwd=folder, env=clean_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def finish(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"train.py still running after {timeout} s:\n{out[-3000:]}{err[-3000:]}")
    return proc.returncode, out, err


def train_losses(run: Path) -> list[tuple[int, str]]:
    return [(int(r["step"]), r["train/loss"]) for r in metrics(run) if r.get("train/loss")]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    return folder, write_lexicon_corpus(folder / "corpus")


def second_process(first: int) -> int:
    """The PID of the train.py process that Lightning's launcher started from process ``first`` (Linux)."""
    for child in Path(f"/proc/{first}/task/{first}/children").read_text().split():
        if "train.py" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
            return int(child)
    raise AssertionError(f"process {first} has not started its copy")


@pytest.fixture(scope="module")
def ddp(corpus):
    """Two 2-process runs at once: one uninterrupted, one stopped mid-run by SIGTERM to its second process; then
    the second run resumed."""
    folder, data = corpus
    full = start(["--data", str(data), *DDP, "--run-dir", str(folder / "full")], folder)
    stopped = start(["--data", str(data), *DDP, "--run-dir", str(folder / "stopped")], folder)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and stopped.poll() is None:
        if (folder / "stopped" / "metrics.csv").is_file() and any(s >= 33 for s, _ in train_losses(folder / "stopped")):
            break
        time.sleep(0.1)
    # to the second process only (the copy Lightning's launcher started): any one process may receive the signal
    os.kill(second_process(stopped.pid), signal.SIGTERM)
    stop = finish(stopped)
    uninterrupted = finish(full)
    assert uninterrupted[0] == 0, uninterrupted[1][-3000:] + uninterrupted[2][-3000:]
    resumed = start(["--resume", "--run-dir", str(folder / "stopped")], folder)  # devices 2 from the run's config
    resumed = finish(resumed)
    assert resumed[0] == 0, resumed[1][-3000:] + resumed[2][-3000:]
    return folder, data, uninterrupted, stop, resumed


def test_two_processes_train_validate_and_checkpoint(ddp):
    folder, _, (_, out, err), _, _ = ddp
    run = folder / "full"
    assert "Starting with 2 processes" in out + err and "distributed_backend=gloo" in out + err
    for name in ("config.yaml", "provenance.json", "spm.model", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "checkpoints/step-84.ckpt", "test.hyp", "results.json"):
        assert (run / name).is_file(), name
    assert "previous" not in json.loads((run / "provenance.json").read_text())  # written once, by one process
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == STEPS and ckpt["world_size"] == 2
    assert len(ckpt["callbacks"]["RNGStates"]["per_rank"]) == 2
    steps = [s for s, _ in train_losses(run)]
    assert steps == list(range(1, STEPS + 1))  # one row per update: one process logs
    assert json.loads((run / "results.json").read_text())["finished"] is True
    assert "Traceback" not in err


def test_bleu_and_loss_under_ddp_equal_one_process(ddp):
    """Each process decoded its share of valid and test; gathered, deduplicated and scored once, they give
    exactly the BLEU (and, to rounding, the loss) of one process translating the whole split with the same
    checkpoint: nmt.translate's cached greedy decoding, sacreBLEU 13a, in this test process."""
    folder, data, _, _, _ = ddp
    run = folder / "full"
    tokenizer = Tokenizer(run / "spm.model")
    for split in ("valid", "test"):  # a repeated batch makes duplicates to drop
        src = [len(x) + 1 for x in tokenizer.encode(lines(data / f"{split}.en"))]
        tgt = [len(x) + 1 for x in tokenizer.encode(lines(data / f"{split}.de"))]
        sampler = TokenBatchSampler(src, tgt, max(256, max(src), max(tgt)), shuffle=False, num_replicas=2)
        assert sampler.num_batches % 2 == 1 and len(sampler.batch_ids) == sampler.num_batches + 1, split

    val = [r for r in metrics(run) if r["val/bleu"]]
    assert [int(r["step"]) for r in val] == [STEPS // 2, STEPS]
    translator = Translator.load(run, which="last")  # the weights validated at the last update
    sources, refs = lines(data / "valid.en"), lines(data / "valid.de")
    single = sacrebleu.corpus_bleu(translator.translate(sources, beam=1), [refs], tokenize="13a").score
    assert float(val[-1]["val/bleu"]) > 10  # far from zero: the comparison means something
    assert float(val[-1]["val/bleu"]) == single

    model = translator.model
    sums = []
    with torch.no_grad():  # sentence by sentence: no batch, no padding, nothing shared out
        for i, (s, t) in enumerate(zip(tokenizer.encode(sources), tokenizer.encode(refs))):
            batch = collate([(i, np.array(s, dtype=np.int64), np.array(t, dtype=np.int64))])
            logits = model(batch["src"], batch["tgt_in"])
            sums.append(sentence_losses(logits, batch["tgt_out"], 0.1, PAD_ID)[0].tolist())
    loss = math.fsum(x[0] for x in sums) / math.fsum(x[2] for x in sums)
    assert float(val[-1]["val/loss"]) == pytest.approx(loss, rel=1e-5)

    best = Translator.load(run, which="best")  # the test split was translated with best.ckpt
    hyps = best.translate(lines(data / "test.en"), beam=1)
    assert lines(run / "test.hyp") == hyps  # every sentence once, in the order of the split
    result = json.loads((run / "results.json").read_text())
    assert result["test"]["bleu"] == round(sacrebleu.corpus_bleu(hyps, [lines(data / "test.de")]).score, 2)
    assert result["test"]["sentences"] == SIZES["test"]


def test_effective_batch_is_summed_over_processes(ddp):
    """--update-tokens 900 on 2 processes: 2 batches per update; the logged target tokens per update are
    both processes' (an epoch's updates add up to the whole training set plus the batch repeated for
    the second process), and tokens_seen counts them all."""
    folder, data, (_, out, _), _, _ = ddp
    run = folder / "full"
    found = re.search(r"update: 2 batches × 2 processes × ([\d,]+) target tokens per batch on average = ([\d,]+) "
                      r"target tokens per update \(--update-tokens 900: --accumulate 2\)", out)
    assert found, out[:3000]
    tokenizer = Tokenizer(run / "spm.model")
    src = np.array([len(x) + 1 for x in tokenizer.encode(lines(data / "train.en"))])
    tgt = np.array([len(x) + 1 for x in tokenizer.encode(lines(data / "train.de"))])
    sampler = TokenBatchSampler(src, tgt, 256, shuffle=True, seed=1, num_replicas=2)
    assert int(found[1].replace(",", "")) == round(tgt.sum() / sampler.num_batches)
    assert accumulation_for(900, tgt.sum() / sampler.num_batches, 2) == 2

    rows = [r for r in metrics(run) if r.get("train/loss")]
    per_update = [int(float(r["train/tgt_tokens"])) for r in rows]
    epoch0 = [n for n, r in zip(per_update, rows) if float(r["epoch"]) == 0]
    assert len(epoch0) == len(sampler) // 2  # updates of 2 batches on each process
    assert sum(epoch0) == sum(int(tgt[sampler.batch(b)].sum()) for b in sampler.batch_ids)
    assert [int(float(r["train/tokens_seen"])) for r in rows] == list(np.cumsum(per_update))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["tokens_seen"] == sum(per_update)


def test_stopped_and_resumed_two_process_run_is_bitwise_the_uninterrupted_one(ddp):
    folder, _, _, (code, out, err), (_, resumed_out, _) = ddp
    assert code == 143, out[-3000:] + err[-3000:]  # the first process's status, not a kill by Lightning's launcher
    found = re.search(r"stopped by SIGTERM at update (\d+); (\S+) saved", out)
    assert found and "Traceback" not in err, out[-3000:] + err[-3000:]
    step = int(found[1])
    assert 33 <= step < STEPS
    assert f"resuming from {folder / 'stopped' / 'checkpoints' / 'last.ckpt'} (update {step})" in resumed_out

    full, resumed = folder / "full", folder / "stopped"
    assert train_losses(resumed) == train_losses(full)  # every update, to the last digit
    assert [(r["step"], r["val/loss"], r["val/bleu"]) for r in metrics(resumed) if r["val/bleu"]] == \
        [(r["step"], r["val/loss"], r["val/bleu"]) for r in metrics(full) if r["val/bleu"]]
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == STEPS and a["tokens_seen"] == b["tokens_seen"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert lines(full / "test.hyp") == lines(resumed / "test.hyp")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_nodes_start_then_continue_with_resume_auto(corpus, tmp_path):
    """Two torchrun "nodes" of one process each; the data cache is built by both at once (a fresh data root).
    The same command, with --resume auto, starts the run and then continues it."""
    _, data = corpus
    run = tmp_path / "run"

    def launch_nodes(max_steps: int) -> list[tuple[int, str, str]]:
        port = free_port()
        procs = []
        for node in (0, 1):
            args = ["--data", str(data), "--vocab-size", "320", "--max-tokens", "256", "--max-steps", str(max_steps),
                    "--val-every", "6", "--log-every", "3", "--accelerator", "cpu", "--devices", "1",
                    "--num-nodes", "2", "--run-dir", str(run), "--resume", "auto"]
            command, env = train_command(args, tmp_path / "data", threads=1)
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                       "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port), *command[1:]]
            procs.append(subprocess.Popen(command, cwd=tmp_path, env=clean_env(env), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        done = [finish(p, timeout=240) for p in procs]
        for code, out, err in done:
            assert code == 0, out[-3000:] + err[-3000:]
        return done

    first = launch_nodes(6)
    assert "run directory: " + str(run) in first[0][1] and "(resuming)" not in first[0][1]
    assert json.loads((run / "results.json").read_text())["steps"] == 6
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["global_step"] == 6
    assert "previous" not in json.loads((run / "provenance.json").read_text())
    assert "run directory" not in first[1][1]  # only global rank 0 prints

    second = launch_nodes(9)
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'} (update 6)" in second[0][1]
    result = json.loads((run / "results.json").read_text())
    assert result["finished"] is True and result["steps"] == 9
    assert len(json.loads((run / "provenance.json").read_text())["previous"]) == 1  # one record per launch
    assert [s for s, _ in train_losses(run)] == [3, 6, 9]


def test_slurm_tasks_stop_on_sigusr1_then_the_same_command_continues(corpus, tmp_path):
    """Two SLURM tasks as srun starts them (the environment srun sets, on one machine). SIGUSR1, which
    `#SBATCH --signal=SIGUSR1@90` sends every task before the time limit, stops both at the same update with
    status 138 (scripts/slurm.sbatch then requeues): Lightning's auto-requeue, which would checkpoint
    inside its signal handler and carry on training, is off. The requeued command continues the run."""
    _, data = corpus
    run = tmp_path / "run"
    port = free_port()

    def srun(max_steps: int) -> list[subprocess.Popen]:
        procs = []
        for task in (0, 1):
            args = ["--data", str(data), "--vocab-size", "320", "--max-tokens", "256", "--max-steps", str(max_steps),
                    "--val-every", "0", "--log-every", "1", "--accelerator", "cpu", "--devices", "2",
                    "--run-dir", str(run), "--resume", "auto"]
            command, env = train_command(args, tmp_path / "data", threads=1)
            env = {**clean_env(env), "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": str(task),
                   "SLURM_LOCALID": str(task), "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_ID": "4242",
                   "SLURM_JOB_NAME": "train", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(port)}
            procs.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        return procs

    procs = srun(100_000)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if (run / "metrics.csv").is_file() and any(s >= 5 for s, _ in train_losses(run)):
            break
        time.sleep(0.1)
    for p in procs:
        p.send_signal(signal.SIGUSR1)
    done = [finish(p, timeout=120) for p in procs]
    assert [code for code, _, _ in done] == [138, 138], done[0][1][-3000:] + done[0][2][-3000:]
    found = re.search(r"stopped by SIGUSR1 at update (\d+); \S+ saved", done[0][1])
    assert found and "stopped by" not in done[1][1], done[0][1][-3000:]  # reported once, by global rank 0
    step = int(found[1])
    assert not list(run.glob("hpc_ckpt*"))  # Lightning's auto-requeue checkpoint: never written
    assert json.loads((run / "results.json").read_text())["stopped"] == "SIGUSR1"
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == step

    done = [finish(p, timeout=240) for p in srun(step + 3)]  # the requeued job: the same command
    for code, out, err in done:
        assert code == 0, out[-3000:] + err[-3000:]
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'} (update {step})" in done[0][1]
    assert json.loads((run / "results.json").read_text())["steps"] == step + 3
    assert [s for s, _ in train_losses(run)] == list(range(1, step + 4))


# ------------------------------------------------------------------------------------------- in-process
def test_accumulation_from_update_tokens():
    # the paper's ~25k target tokens per update from batches of ~3,500 real target tokens
    assert accumulation_for(25_000, 3_500, 8) == 1  # 8 GPUs: 28,000 per update
    assert accumulation_for(25_000, 3_500, 1) == 8  # 1 GPU: 8 batches, 28,000
    assert accumulation_for(25_000, 3_500, 2) == 4  # 2 GPUs: 4 × 2 × 3,500 = 28,000
    assert accumulation_for(25_000, 3_125, 8) == 1  # exactly 25,000: no extra batch
    assert accumulation_for(25_000, 3_124, 8) == 2  # just short: one more
    assert accumulation_for(1, 3_500, 16) == 1


def test_precision_defaults_to_fp32_on_cpu():
    assert resolve_precision(None, on_gpu=False) == "32-true"
    on_gpu = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    assert resolve_precision(None, on_gpu=torch.cuda.is_available()) == on_gpu
    assert resolve_precision("32", on_gpu=False) == "32-true"
    assert resolve_precision("16-mixed", on_gpu=True) == "16-mixed"
    assert resolve_precision("bf16-mixed", on_gpu=True) == "bf16-mixed"


def set_env(monkeypatch, **values):
    for key in list(os.environ):
        if key in LAUNCH_VARS or key.startswith(("SLURM_", "TORCHELASTIC_")):
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, str(value))


def test_each_process_finds_its_rank_before_the_trainer(monkeypatch):
    set_env(monkeypatch)  # `python train.py --devices 2`: the first process, which starts the other
    p = launch.detect(2, 1)
    assert (p.global_rank, p.local_rank, p.world_size, p.launcher) == (0, 0, 2, "lightning")
    assert p.starts_copies and not p.copy and not p.decides_alone and p.inherited is None
    assert not launch.detect(1, 1).starts_copies  # one process: nothing to start

    set_env(monkeypatch, LOCAL_RANK=1, NODE_RANK=0, WORLD_SIZE=2,
            **{launch.RUN_DIR_VAR: "runs/x", launch.RESUME_VAR: ""})
    p = launch.detect(2, 1)  # the copy Lightning's launcher started: follows the first process's choice
    assert (p.global_rank, p.local_rank, p.copy, p.inherited) == (1, 1, True, ("runs/x", None))
    assert not p.starts_copies and not p.decides_alone

    set_env(monkeypatch, NODE_RANK=1)  # second node, started by hand: its first process
    p = launch.detect(4, 2)
    assert (p.global_rank, p.local_rank, p.world_size) == (4, 0, 8) and p.decides_alone and p.starts_copies

    set_env(monkeypatch, TORCHELASTIC_RUN_ID="none", RANK=3, LOCAL_RANK=1, WORLD_SIZE=4, GROUP_RANK=1)
    p = launch.detect(2, 2)
    assert (p.global_rank, p.local_rank, p.world_size, p.launcher) == (3, 1, 4, "torchelastic")
    assert p.decides_alone and not p.starts_copies and not p.copy

    set_env(monkeypatch, SLURM_NTASKS=16, SLURM_NTASKS_PER_NODE=8, SLURM_PROCID=9, SLURM_LOCALID=1,
            SLURM_JOB_NAME="train", SLURM_NODEID=1)
    p = launch.detect(8, 2)
    assert (p.global_rank, p.local_rank, p.world_size, p.launcher) == (9, 1, 16, "slurm") and p.decides_alone


def test_every_process_agrees_on_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig()
    base = Path("runs") / default_run_name(cfg, "toy")
    # by rule (torchrun, SLURM, several nodes): runs/<name> exactly, on every process
    first, other = (launch.Launch(rank, world_size=2, launcher="torchelastic") for rank in (0, 1))
    assert first.decides_alone and first.is_first and other.decides_alone and not other.is_first
    assert choose_run_dir(cfg, "toy", Start.NEW, first) == base
    assert choose_run_dir(cfg, "toy", Start.NEW, other) == base
    (base / "checkpoints").mkdir(parents=True)
    (base / "config.yaml").write_text("seed: 1\n")  # the first process has written it, or it was there before
    with pytest.raises(Exception, match="already holds a run"):
        choose_run_dir(cfg, "toy", Start.NEW, first)
    assert choose_run_dir(cfg, "toy", Start.NEW, other) == base  # may be the first's
    assert choose_run_dir(cfg, "toy", Start.RESTART, first) == base  # --resume auto, no checkpoint
    assert choose_run_dir(cfg, "toy", Start.NEW) == base.with_name(base.name + "-2")  # one process: a new one
    (base / "checkpoints" / "last.ckpt").write_bytes(b"")  # no process of a run writes this before all have started
    for proc in (first, other):
        with pytest.raises(Exception, match="already holds a run"):
            choose_run_dir(cfg, "toy", Start.NEW, proc)


def test_resume_auto_starts_then_continues_a_run(corpus, tmp_path, capsys):
    _, data = corpus
    run = tmp_path / "run"
    args = ["--data", str(data), "--vocab-size", "320", "--max-tokens", "256", "--val-every", "0", "--log-every", "1",
            "--run-dir", str(run), "--resume", "auto"]
    assert main([*args, "--max-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "(resuming)" not in out and json.loads((run / "results.json").read_text())["steps"] == 2
    assert main([*args, "--max-steps", "4"]) == 0
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'} (update 2)" in capsys.readouterr().out
    assert json.loads((run / "results.json").read_text())["steps"] == 4
    for ckpt in (run / "checkpoints").glob("*.ckpt"):  # a first job stopped before its first checkpoint
        ckpt.unlink()
    assert main([*args, "--max-steps", "1"]) == 0
    assert "holds no checkpoint: starting the run again from scratch" in capsys.readouterr().out
    assert [int(r["step"]) for r in csv.DictReader(open(run / "metrics.csv")) if r["train/loss"]] == [1]

    assert main(["--resume", "auto", "--data", str(data)]) == 2
    assert "--resume auto needs --run-dir" in capsys.readouterr().err
    assert main(["--data", str(data), "--update-tokens", "1000", "--accumulate", "2",
                 "--run-dir", str(tmp_path / "x")]) == 2
    assert "--update-tokens 1000 derives --accumulate" in capsys.readouterr().err
