"""Fault tolerance, with real faults: signals sent to a training process, truncated and garbage checkpoints,
updates made non-finite through the real forward and backward pass, and a file size limit (RLIMIT_FSIZE)
that makes a checkpoint write fail as a full disk does.

Every run trains the tiny model on a 560-pair generated corpus in a subprocess (``python train.py``), as
a user runs it; the runs that several tests read are made once per module.
"""

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, metrics, synthetic_corpus, train_command

from nmt.checkpoint import atomic_torch_save, newest_valid_checkpoint
from nmt.train import main

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(folder, corpus): a small corpus generated once; its SentencePiece model is cached under folder/data."""

    folder = tmp_path_factory.mktemp("fault")
    return folder, synthetic_corpus(folder / "corpus", 560, 20, 20)


def small(corpus) -> list[str]:
    return ["--data", str(corpus), "--arch", "tiny", "--vocab-size", "400", "--max-tokens", "512",
            "--val-every", "0", "--log-every", "5"]


def _command(args, folder, extra_env=None):
    command, env = train_command(args, folder / "data", threads=1)
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}  # no SLURM requeue plugin, wherever we run
    env["PYTHONPATH"] += os.pathsep + str(TESTS)  # for --skip nonfinite_block:NaNOnBatches
    env.update(extra_env or {})
    return command, env


def _default_signals() -> None:
    """In the child: SIGINT as an interactive shell leaves it (a background job of a script inherits it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def train(args, folder, extra_env=None, preexec_fn=None):
    command, env = _command(args, folder, extra_env)
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=preexec_fn)


def start(args, folder):
    command, env = _command(args, folder)
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)


def wait_for_update(proc, run_dir, step, timeout=180):
    """Poll metrics.csv until it has a training row at ``step`` or later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"train.py exited ({proc.returncode}) before update {step}:\n{out[-3000:]}{err[-3000:]}")
        if (run_dir / "metrics.csv").is_file():
            if any(r.get("train/loss") and int(r["step"]) >= step for r in metrics(run_dir)):
                return
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no training row at update {step} after {timeout} s")


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def output(proc) -> str:
    return proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.fixture(scope="module")
def trained(base):
    """A finished 30-update run with last.ckpt and step-10/20/30.ckpt."""
    folder, corpus = base
    run = folder / "trained"
    proc = train([*small(corpus), "--max-steps", "30", "--save-every", "10", "--keep-last", "3", "--run-dir", str(run)],
                 folder)
    assert proc.returncode == 0, output(proc)
    return run


def copy_run(run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


# ---------------------------------------------------------------------------------------------- signals
def test_sigterm_saves_last_checkpoint_and_resume_finishes(base):
    folder, corpus = base
    run = folder / "sigterm"
    proc = start([*small(corpus), "--log-every", "1", "--max-steps", "100000", "--run-dir", str(run)], folder)
    wait_for_update(proc, run, 10)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM == 143, out[-3000:] + err[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    found = re.search(r"stopped by SIGTERM at update (\d+); (\S+) saved; resume with: (.*)", out)
    assert found, out[-3000:]
    step = int(found[1])
    assert step >= 10 and found[2] == str(last) and found[3] == f"python train.py --resume --run-dir {run}"
    assert "SIGTERM received" in err and "Traceback" not in err
    assert load(last)["global_step"] == step
    result = json.loads((run / "results.json").read_text())
    assert result["finished"] is False and result["stopped"] == "SIGTERM" and result["steps"] == step
    assert "test" not in result and not (run / "test.hyp").exists()  # no test translation after a stop

    # evaluate.py does not put an unfinished run in a table
    from nmt import evaluate

    assert evaluate.main([str(run), "--out", str(folder / "eval")]) == 2

    end = step + 3
    proc = train(["--resume", "--run-dir", str(run), "--max-steps", str(end)], folder)
    assert proc.returncode == 0, output(proc)
    assert f"resuming from {last} (update {step})" in proc.stdout
    result = json.loads((run / "results.json").read_text())
    assert result["finished"] is True and result["steps"] == end and "bleu" in result["test"]
    assert load(last)["global_step"] == end
    steps = [int(r["step"]) for r in metrics(run) if r["train/loss"]]
    assert steps == list(range(1, end + 1))  # every update logged once, the one at the stop included


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGUSR1])
def test_sigint_and_sigusr1_stop_like_sigterm(base, signum):
    folder, corpus = base
    name = signal.Signals(signum).name
    run = folder / name
    proc = start([*small(corpus), "--max-steps", "100000", "--run-dir", str(run)], folder)
    wait_for_update(proc, run, 5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, out[-3000:] + err[-3000:]
    found = re.search(rf"stopped by {name} at update (\d+); \S+ saved; resume with: ", out)
    assert found and "Traceback" not in err, out[-3000:] + err[-3000:]
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == int(found[1])
    assert json.loads((run / "results.json").read_text())["stopped"] == name


# ---------------------------------------------------------------------------------------------- non-finite updates
NAN_ARGS = ["--skip", "nonfinite_block:NaNOnBatches", "--max-nonfinite", "3", "--save-every", "1", "--keep-last", "100",
            "--max-steps", "40"]


@pytest.fixture(scope="module")
def diverged(base):
    """NaN on updates 3, 4, 8 and from 12 on, at most 3 in a row: skips 3, 4, 8, then 12-14 stop the run."""
    folder, corpus = base
    run = folder / "diverged"
    proc = train([*small(corpus), *NAN_ARGS, "--run-dir", str(run)], folder, {"NMT_TEST_NAN_BATCHES": "3,4,8,12-"})
    return run, proc


def test_nonfinite_updates_are_skipped_and_change_nothing(diverged):
    run, proc = diverged
    assert ("update 3: non-finite loss or gradient, update skipped (1 in a row, the run stops at 3; 1 in all)"
            in proc.stdout)
    assert "update 8: non-finite loss or gradient, update skipped (1 in a row" in proc.stdout  # the streak was reset
    ckpt = {n: load(run / "checkpoints" / f"step-{n}.ckpt") for n in (2, 4, 5, 13)}
    # skipped updates 3 and 4: weights, Adam's moments and step count, and the schedule are exactly as after update 2
    for key, value in ckpt[2]["state_dict"].items():
        assert torch.equal(value, ckpt[4]["state_dict"][key]), key
    adam2, adam4 = ckpt[2]["optimizer_states"][0]["state"], ckpt[4]["optimizer_states"][0]["state"]
    for i in adam2:
        for key in adam2[i]:
            assert torch.equal(adam2[i][key], adam4[i][key]), (i, key)
    assert ckpt[4]["lr_schedulers"][0]["last_epoch"] == ckpt[2]["lr_schedulers"][0]["last_epoch"] == 2
    assert ckpt[4]["tokens_seen"] == ckpt[2]["tokens_seen"]  # tokens trained on
    assert ckpt[4]["global_step"] == 4  # ... but a skipped update is still a step
    # update 5 is applied again, and the schedule continues from where it stopped
    assert any(not torch.equal(value, ckpt[4]["state_dict"][key]) for key, value in ckpt[5]["state_dict"].items())
    assert ckpt[5]["lr_schedulers"][0]["last_epoch"] == 3
    assert ckpt[13]["lr_schedulers"][0]["last_epoch"] == 13 - 5
    # the count and the streak are in every checkpoint
    assert ckpt[4]["nonfinite"] == {"skipped": 2, "streak": 2}
    assert ckpt[5]["nonfinite"] == {"skipped": 2, "streak": 0}
    assert ckpt[13]["nonfinite"] == {"skipped": 5, "streak": 2}
    rows = {int(r["step"]): r for r in metrics(run) if r.get("train/skipped_steps")}
    assert float(rows[5]["train/skipped_steps"]) == 2 and float(rows[10]["train/skipped_steps"]) == 3
    # the learning rate logged at update 5 is the schedule's 3rd value (2 updates applied before it), not its 5th
    assert float(rows[5]["train/lr"]) == pytest.approx(2e-3 * 3 / 200, rel=1e-6)


def test_consecutive_nonfinite_updates_stop_the_run_as_diverged(diverged):
    run, proc = diverged
    assert proc.returncode == 3, output(proc)
    assert "training diverged: updates 12–14 (3 in a row, --max-nonfinite 3)" in proc.stdout
    assert "Traceback" not in proc.stderr
    result = json.loads((run / "results.json").read_text())
    assert result["diverged"] is True and result["diverged_at_step"] == 12 and result["nonfinite_skipped"] == 6
    assert result["finished"] is False and result["steps"] == 14 and "test" not in result
    # nothing was saved at the stop: last.ckpt is the state after update 13, the last one before the stop
    assert not (run / "checkpoints" / "step-14.ckpt").exists()
    assert load(run / "checkpoints" / "last.ckpt")["global_step"] == 13
    assert float(next(r for r in metrics(run) if r["step"] == "14")["train/skipped_steps"]) == 6

    from nmt.evaluate import _diverged

    assert _diverged(run) == (True, 12)


def test_nonfinite_count_and_streak_survive_resume(diverged, base, tmp_path):
    """Resumed from update 13 (2 in a row), with a limit of 4 now: updates 14 and 15 fail, and 12-15 stop it."""
    folder, _ = base
    run = copy_run(diverged[0], tmp_path)
    proc = train(["--resume", "--run-dir", str(run), "--max-nonfinite", "4"], folder, {"NMT_TEST_NAN_BATCHES": "1,2"})
    assert proc.returncode == 3, output(proc)
    assert "training diverged: updates 12–15 (4 in a row, --max-nonfinite 4)" in proc.stdout
    result = json.loads((run / "results.json").read_text())
    assert result["diverged_at_step"] == 12 and result["nonfinite_skipped"] == 7 and result["steps"] == 15


def test_a_huge_learning_rate_diverges_for_real(base):
    """No injected fault: lr 1e30 makes the first update blow the weights up; every later loss is NaN."""
    folder, corpus = base
    run = folder / "huge-lr"
    proc = train([*small(corpus), "--lr", "1e30", "--warmup", "0", "--max-nonfinite", "4", "--max-steps", "40",
                  "--run-dir", str(run)], folder)
    assert proc.returncode == 3, output(proc)
    result = json.loads((run / "results.json").read_text())
    assert result["diverged"] is True and result["nonfinite_skipped"] == 4
    assert result["steps"] == result["diverged_at_step"] + 3
    assert not (run / "checkpoints" / "last.ckpt").exists()  # nothing worth keeping was ever saved


@pytest.mark.parametrize("fp16", [False, True])
def test_fp16_loss_scaling_skips_are_its_own(fp16, monkeypatch):
    """With a GradScaler (16-mixed) a non-finite step is the scaler's to skip (it lowers its scale) and is not
    counted; without one the same NaN batches are skipped and counted, and the schedule waits."""
    import lightning as L
    from lightning.pytorch.plugins.precision import MixedPrecision
    from torch.utils.data import DataLoader

    from nmt.config import MonitorSettings, OptimSettings
    from nmt.lit import TranslationModule
    from nmt.model import model_config

    monkeypatch.setenv("NMT_TEST_NAN_BATCHES", "2,3")
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(6):
        src, tgt = torch.randint(4, 50, (4, 7), generator=g), torch.randint(4, 50, (4, 8), generator=g)
        batches.append({"id": torch.arange(4), "src": src, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:], "ntokens": 28})
    module = TranslationModule(model_config("tiny", 50, skip="nonfinite_block:NaNOnBatches"),
                               OptimSettings(lr=1e-3, warmup=10), monitor=MonitorSettings(log_every=100))
    scaler = torch.amp.GradScaler("cpu")  # Lightning makes 16-mixed bf16 on a CPU: give it fp16 with a scaler
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        plugins=[MixedPrecision("16-mixed", "cpu", scaler)] if fp16 else None)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    schedule = trainer.lr_scheduler_configs[0].scheduler
    assert trainer.global_step == 6
    if fp16:
        assert module.nonfinite_skipped == 0 and scaler.get_scale() == 2.0**16 / 4 and schedule.last_epoch == 6
    else:
        assert module.nonfinite_skipped == 2 and module.nonfinite_streak == 0 and schedule.last_epoch == 4


def test_diverged_reads_results_before_metrics(tmp_path):
    from nmt.evaluate import _diverged

    (tmp_path / "metrics.csv").write_text("step,train/loss\n5,3.2\n10,nan\n")
    assert _diverged(tmp_path) == (True, 10)  # no results.json (an older or unfinished run): the logged loss
    (tmp_path / "results.json").write_text(json.dumps({"finished": True, "diverged": False, "nonfinite_skipped": 1}))
    assert _diverged(tmp_path) == (False, None)  # one skipped update is not a divergence


# ---------------------------------------------------------------------------------------------- corrupt checkpoints
def test_resume_falls_back_from_a_truncated_last_checkpoint(trained, base, tmp_path):
    folder, _ = base
    run = copy_run(trained, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a write cut short (not by our atomic saves)
    proc = train(["--resume", "--run-dir", str(run), "--max-steps", "35"], folder)
    assert proc.returncode == 0, output(proc)
    warning = next(line for line in proc.stderr.splitlines() if line.startswith("warning: --resume"))
    assert str(last) in warning and "truncated or corrupt" in warning
    assert f"resuming from {run / 'checkpoints' / 'step-30.ckpt'} (update 30) instead" in warning
    assert load(last)["global_step"] == 35


def test_fallback_takes_the_valid_checkpoint_with_the_highest_step(trained, tmp_path):
    folder = tmp_path / "checkpoints"
    shutil.copytree(trained / "checkpoints", folder)
    (folder / "last.ckpt").write_bytes((folder / "last.ckpt").read_bytes()[:1000])
    (folder / "step-30.ckpt").write_bytes(os.urandom(5000))
    shutil.copyfile(folder / "step-10.ckpt", folder / "best.ckpt")
    path, ckpt, skipped = newest_valid_checkpoint(folder, folder / "last.ckpt")
    assert path == folder / "step-20.ckpt" and ckpt["global_step"] == 20
    assert [p.name for p, _ in skipped] == ["last.ckpt", "step-30.ckpt"]
    # a best.ckpt newer than every valid step-<N>.ckpt wins; a weights-only file is not resumable
    shutil.copyfile(trained / "checkpoints" / "step-30.ckpt", folder / "best.ckpt")
    torch.save({"state_dict": load(folder / "step-20.ckpt")["state_dict"]}, folder / "step-25.ckpt")
    path, ckpt, skipped = newest_valid_checkpoint(folder, folder / "last.ckpt")
    assert path == folder / "best.ckpt" and ckpt["global_step"] == 30
    assert [p.name for p, _ in skipped] == ["last.ckpt"]
    (folder / "best.ckpt").unlink()
    path, _, skipped = newest_valid_checkpoint(folder, folder / "last.ckpt")
    assert path == folder / "step-20.ckpt"
    reasons = dict((p.name, why) for p, why in skipped)
    assert reasons["step-25.ckpt"].startswith("not a resumable checkpoint (no global_step")


def test_resume_without_a_valid_checkpoint_is_a_one_line_error(trained, base, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NMT_DATA_ROOT", str(base[0] / "data"))
    run = copy_run(trained, tmp_path)
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(b"not a checkpoint at all\n" * 100)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    code = main(["--resume", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"--resume: no valid checkpoint to resume from in {run / 'checkpoints'}" in err
    assert "last.ckpt: unreadable, truncated or corrupt" in err and "step-10.ckpt: unreadable" in err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before  # nothing touched
    # an explicit --resume PATH is that file or nothing
    code = main(["--resume", str(run / "checkpoints" / "step-20.ckpt"), "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and f"--resume: checkpoint {run / 'checkpoints' / 'step-20.ckpt'} is unreadable" in err


def test_resume_refuses_another_number_of_processes(trained, base, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NMT_DATA_ROOT", str(base[0] / "data"))
    run = copy_run(trained, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    ckpt = load(last)
    assert ckpt["world_size"] == 1
    ckpt["world_size"] = 2  # as if written by --devices 2 (or two nodes)
    torch.save(ckpt, last)
    code = main(["--resume", "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "--devices × nodes: run has 2, asked 1" in err and len(err.strip().splitlines()) == 1
    assert load(last)["global_step"] == 30


# ---------------------------------------------------------------------------------------------- a full disk
def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so that write() fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_atomic_save_past_a_file_size_limit_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpts" / "last.ckpt"
    atomic_torch_save({"w": torch.arange(10.0)}, path)
    script = ("import sys, torch\nfrom nmt.checkpoint import atomic_torch_save\n"
              "atomic_torch_save({'w': torch.ones(1_000_000)}, sys.argv[1])\n")
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_file_size_limit(1_000_000))
    assert proc.returncode == 1
    assert (f"OSError: [Errno 27] could not write checkpoint {path}: File too large; the previous one is intact"
            in proc.stderr)
    assert torch.equal(load(path)["w"], torch.arange(10.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # the temporary file is gone


def test_train_stops_with_one_line_when_a_checkpoint_cannot_be_written(trained, base, tmp_path):
    folder, _ = base
    run = copy_run(trained, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    digest = sha(last)
    proc = train(["--resume", "--run-dir", str(run), "--max-steps", "40", "--save-every", "5"], folder,
                 preexec_fn=_file_size_limit(last.stat().st_size // 2))
    assert proc.returncode == 1, output(proc)
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"train\.py: error: could not write checkpoint {re.escape(str(run / 'checkpoints'))}/"
                        r"(step-35|last)\.ckpt: File too large; the previous one is intact", line), line
    assert sha(last) == digest and load(last)["global_step"] == 30
    assert not list((run / "checkpoints").glob(".*.tmp"))
