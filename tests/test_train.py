"""train.py end to end: one tiny run on the toy corpus (shared by the tests), resume, and bad input.

The trained run is made once per session in a subprocess, exactly as a user runs it; everything
else reads its run directory or calls ``nmt.train.main`` in-process (no extra process start-ups).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import metrics, run_train, synthetic_corpus

from nmt.train import main

def test_run_directory_holds_everything(toy_run):
    run_dir, proc, _ = toy_run
    for name in ("config.yaml", "provenance.json", "spm.model", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "checkpoints/step-400.ckpt", "checkpoints/step-500.ckpt", "metrics.csv", "test.hyp", "results.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert {"git", "packages", "hardware", "command", "data_sha256", "spm_model_sha256"} <= set(prov)
    assert len(prov["data_sha256"]) == 6 and prov["packages"]["torch"] and "--lambda" in prov["command"]
    # the CPU's model: results reproduce bit for bit on one kind of CPU, not across kinds
    assert "cpu_model" in prov["hardware"] and (prov["hardware"]["cpu_model"] or not Path("/proc/cpuinfo").is_file())
    config = (run_dir / "config.yaml").read_text()
    assert "skip: rskip_ln" in config and "lam: 2.0" in config


def test_toy_corpus_is_announced_as_a_toy(toy_run):
    _, proc, base = toy_run
    assert "not a benchmark" in proc.stdout
    assert (base / "data" / "toy-en-de" / "train.en").is_file()


def test_logged_training_metrics(toy_run):
    rows = metrics(toy_run[0])
    train = [r for r in rows if r["train/loss"]]
    assert [int(r["step"]) for r in train] == [50, 100, 150, 200, 250, 300, 350, 400, 450, 500]
    for key in ("train/ppl", "train/lr", "train/grad_norm", "train/tgt_tokens"):
        assert all(float(r[key]) > 0 for r in train), key
    assert all(float(r["train/tok_per_s"]) > 0 for r in train[1:])
    # perplexity is exp of the unsmoothed NLL, not of the smoothed loss
    for r in train:
        assert float(r["train/ppl"]) == pytest.approx(torch.tensor(float(r["train/nll"])).exp().item(), rel=1e-4)
        assert float(r["train/nll"]) < float(r["train/loss"])
    # the learning rate follows the warm-up (200 steps, peak 2e-3), then decays as 1/√step
    assert float(train[0]["train/lr"]) == pytest.approx(2e-3 * 50 / 200, rel=1e-4)
    assert float(train[-1]["train/lr"]) == pytest.approx(2e-3 * (200 / 500) ** 0.5, rel=1e-4)
    seen = [float(r["train/tokens_seen"]) for r in train]
    assert seen == sorted(seen) and seen[0] > 50 * 1000
    assert float(train[1]["train/loss"]) > float(train[-1]["train/loss"])


def test_validation_and_test_bleu(toy_run):
    run_dir, proc, _ = toy_run
    val = [r for r in metrics(run_dir) if r["val/bleu"]]
    assert [int(r["step"]) for r in val] == [250, 500]
    assert float(val[-1]["val/bleu"]) > 1.0  # clearly learning
    result = json.loads((run_dir / "results.json").read_text())
    assert result["steps"] == 500
    assert result["test"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert result["test"]["sentences"] == 1000 and result["test"]["copy_source_bleu"] < 5
    assert len((run_dir / "test.hyp").read_text(encoding="utf-8").split("\n")) == 1001
    assert "test BLEU" in proc.stdout and "copy-source baseline BLEU" in proc.stdout


def test_checkpoint_contents(toy_run):
    ckpt = torch.load(toy_run[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 500
    assert ckpt["hyper_parameters"]["model"]["skip"] == "rskip_ln" and ckpt["hyper_parameters"]["model"]["lam"] == 2
    assert "optimizer_states" in ckpt and "lr_schedulers" in ckpt
    assert ckpt["spm_model"] == (toy_run[0] / "spm.model").read_bytes()  # self-contained for translation
    assert ckpt["run_config"]["skip"] == "rskip_ln" and ckpt["tokens_seen"] > 0
    kept = sorted(p.name for p in (toy_run[0] / "checkpoints").glob("step-*.ckpt"))
    assert kept == ["step-400.ckpt", "step-500.ckpt"]  # --keep-last 2


def test_resume_continues_from_the_saved_step(toy_run, tmp_path):
    run_dir, _, base = toy_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = metrics(copy)
    proc = run_train(["--resume", "--run-dir", str(copy), "--max-steps", "520", "--log-every", "10"],
                     base / "data", base)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resuming from" in proc.stdout
    ckpt = torch.load(copy / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 520
    after = metrics(copy)
    assert after[: len(before)] == before  # earlier metrics kept
    new_train = [int(r["step"]) for r in after[len(before):] if r["train/loss"]]
    assert new_train == [510, 520]  # continued at step 500, not from 0
    lr510 = next(float(r["train/lr"]) for r in after[len(before):] if r["step"] == "510")
    assert lr510 == pytest.approx(2e-3 * (200 / 510) ** 0.5, rel=1e-4)  # the schedule continued too
    old_seen = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["tokens_seen"]
    assert ckpt["tokens_seen"] > old_seen  # the token count continued
    assert len(json.loads((copy / "provenance.json").read_text())["previous"]) == 1


def test_resume_refuses_to_change_the_model(toy_run, tmp_path, capsys):
    run_dir = toy_run[0]
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    code = main(["--resume", "--run-dir", str(run_dir), "--skip", "post_ln", "--lambda", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--skip: run has 'rskip_ln', asked 'post_ln'" in err and "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before


def test_existing_run_dir_is_not_overwritten(toy_run, capsys):
    run_dir = toy_run[0]
    code = main(["--run-dir", str(run_dir), "--arch", "tiny"])
    assert code == 2 and "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--skip", "rskip_ln", "--lambda", "0.5"], "--lambda: skip variant 'rskip_ln' needs an integer λ ≥ 1"),
        (["--skip", "post_ln", "--lambda", "2"], "--lambda: skip variant 'post_ln' has no λ"),
        (["--skip", "nope"], "--skip: unknown skip variant 'nope'"),
        (["--data", "/no/such/folder"], "--data /no/such/folder: no such folder"),
        (["--max-tokens", "100"], "--max-tokens 100 is smaller than --max-len 256"),
        (["--layers", "0"], "--layers must be ≥ 1"),
    ],
)
def test_bad_flags_give_one_line_errors(args, message, capsys, tmp_path):
    code = main([*args, "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_bad_data_names_the_file(tmp_path, capsys):
    data = tmp_path / "d"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.en").write_text("a b c\nd e f\n")
        (data / f"{split}.de").write_text("a b c\nd e f\n")
    (data / "valid.de").write_text("only one line\n")
    code = main(["--data", str(data), "--run-dir", str(tmp_path / "r"), "--vocab-size", "300"])
    err = capsys.readouterr().err
    assert code == 2 and "valid.en has 2 lines but" in err and "valid.de has 1" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing created for a run that could not start


def test_same_seed_same_run_other_seed_other_run(tmp_path, monkeypatch):
    """Seeded and reproducible: two runs with one seed log identical losses and end with identical weights."""

    monkeypatch.setenv("NMT_DATA_ROOT", str(tmp_path / "data"))
    corpus = synthetic_corpus(tmp_path / "small", 120, 20, 20, seed=7)

    def train(seed, name):
        args = ["--data", str(corpus), "--arch", "tiny", "--vocab-size", "400", "--max-tokens", "256",
                "--max-steps", "8", "--log-every", "2", "--val-every", "0", "--seed", str(seed),
                "--run-dir", str(tmp_path / name)]
        assert main(args) == 0
        losses = [r["train/loss"] for r in metrics(tmp_path / name) if r["train/loss"]]
        state = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        return losses, state["state_dict"]

    losses_a, weights_a = train(1, "a")
    losses_b, weights_b = train(1, "b")
    losses_c, _ = train(2, "c")
    assert len(losses_a) == 4 and losses_a == losses_b
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    assert losses_c != losses_a


def test_layers_overrides_the_preset(tmp_path, monkeypatch, capsys):
    """--layers N builds N encoder and N decoder layers, and the checkpoint records it for decoding."""
    monkeypatch.setenv("NMT_DATA_ROOT", str(tmp_path / "data"))
    corpus = synthetic_corpus(tmp_path / "small", 60, 10, 10, seed=3)
    run = tmp_path / "one-layer"
    assert main(["--data", str(corpus), "--arch", "tiny", "--layers", "1", "--vocab-size", "400", "--max-tokens",
                 "256", "--max-steps", "1", "--val-every", "0", "--run-dir", str(run)]) == 0
    assert "1+1 layers" in capsys.readouterr().out
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    model = state["hyper_parameters"]["model"]
    assert (model["encoder_layers"], model["decoder_layers"]) == (1, 1)
    assert not any(k.startswith("model.encoder.layers.1.") for k in state["state_dict"])


def test_a_run_directory_that_holds_other_files_is_refused(tmp_path, monkeypatch, capsys):
    """A --run-dir that exists with files in it but no run is not written into: one line, status 2, untouched."""
    monkeypatch.setenv("NMT_DATA_ROOT", str(tmp_path / "data"))
    corpus = synthetic_corpus(tmp_path / "small", 60, 10, 10, seed=3)
    folder = tmp_path / "my-notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    args = ["--data", str(corpus), "--arch", "tiny", "--vocab-size", "400", "--max-tokens", "256", "--max-steps", "1",
            "--val-every", "0", "--run-dir", str(folder)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"train.py: error: --run-dir {folder} is a folder that holds other files but no run: choose an " \
                  "empty or new --run-dir"
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    (folder / "notes.txt").unlink()  # an empty folder is a fine place for a new run
    assert main(args) == 0 and (folder / "results.json").is_file()
