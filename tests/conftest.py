"""Shared fixtures: two tiny models trained once per test session on the toy corpus, as a user runs them.

Training happens in subprocesses (``python train.py``), the expensive part of the suite; every test
that needs a trained model reads these run directories instead of training its own.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# 500 updates of the default (tiny) model: enough for BLEU clearly above zero on the toy corpus (the evaluate
# tests compare two such runs), and a periodic checkpoint every 100 updates for averaging.
TINY = ["--max-steps", "500", "--log-every", "50", "--val-every", "250", "--save-every", "100", "--keep-last", "2"]


def train_command(args, data_root, block_datasets=True, threads=None):
    """The command and environment of ``python train.py``; a fake ``datasets`` package makes any import of it fail."""
    env = {**os.environ, "NMT_DATA_ROOT": str(data_root), "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if block_datasets:
        blocker = Path(data_root).parent / "no_datasets"
        (blocker / "datasets").mkdir(parents=True, exist_ok=True)
        (blocker / "datasets" / "__init__.py").write_text("raise ImportError('datasets must not be imported "
                                                          "for local data')\n")
        env["PYTHONPATH"] = f"{blocker}{os.pathsep}{ROOT}"
    return [sys.executable, str(ROOT / "train.py"), *args], env


def run_train(args, data_root, cwd, block_datasets=True):
    """Run ``python train.py`` in a subprocess and wait for it."""
    command, env = train_command(args, data_root, block_datasets)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def synthetic_corpus(folder, train: int, valid: int, test: int, seed: int = 3) -> Path:
    """A small corpus of toy-grammar sentence pairs in the --data layout, with that many pairs per split."""
    from nmt.data import synthetic

    pairs = synthetic.generate_pairs(train + valid + test, seed=seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bounds = {"train": (0, train), "valid": (train, train + valid), "test": (train + valid, train + valid + test)}
    for split, (lo, hi) in bounds.items():
        (folder / f"{split}.en").write_text("".join(e + "\n" for e, _ in pairs[lo:hi]), encoding="utf-8")
        (folder / f"{split}.de").write_text("".join(d + "\n" for _, d in pairs[lo:hi]), encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def _data_root_outside_the_repository(monkeypatch, tmp_path_factory):
    """Tests that run train.py in-process never write generated corpora or caches into the repository's data/."""
    monkeypatch.setenv("NMT_DATA_ROOT", str(tmp_path_factory.getbasetemp() / "data-root"))


@pytest.fixture(scope="session")
def toy_runs(tmp_path_factory):
    """Two shared trained runs on the toy corpus: ``--skip rskip_ln --lambda 2`` and ``--skip post_ln``.

    They train at the same time, one thread each: on two cores that is faster than one after the other.
    """
    base = tmp_path_factory.mktemp("toy")
    from nmt.data import synthetic

    synthetic.write_corpus(base / "data" / "toy-en-de")  # once, before the two runs look for it
    variants = {"rskip_ln": ["--skip", "rskip_ln", "--lambda", "2"], "post_ln": ["--skip", "post_ln"]}
    procs = {}
    for name, flags in variants.items():
        command, env = train_command([*TINY, *flags, "--run-dir", str(base / name)], base / "data", threads=1)
        procs[name] = subprocess.Popen(command, cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
    runs = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
        runs[name] = (base / name, subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return runs, base


@pytest.fixture(scope="session")
def toy_run(toy_runs):
    """The rskip_ln λ=2 run: (run directory, finished process, base folder)."""
    runs, base = toy_runs
    return (*runs["rskip_ln"], base)


def metrics(run_dir):
    return list(csv.DictReader(open(run_dir / "metrics.csv")))
