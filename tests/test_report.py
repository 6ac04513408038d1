"""The study report (``python -m nmt.report``) on the shared toy runs, laid out as a study folder.

The sweep's own test (tests/test_sweep.py) checks the report a real sweep writes; this file checks what the
report adds on request: the same runs scored a second time with the average of their last checkpoints.
"""

import json
from pathlib import Path

from nmt.report.cli import main

RUNS = {"post_ln": "post_ln-lambda1-seed1", "rskip_ln": "rskip_ln-lambda2-seed1"}


def study_of(toy_runs, folder: Path) -> Path:
    """A study folder whose runs/ are the two toy runs (trained with --save-every 100 --keep-last 2)."""
    runs, _ = toy_runs
    (folder / "runs").mkdir(parents=True)
    for variant, name in RUNS.items():
        (folder / "runs" / name).symlink_to(runs[variant][0], target_is_directory=True)
    return folder


def test_best_and_the_average_of_the_last_checkpoints_side_by_side(toy_runs, tmp_path, capsys):
    study = study_of(toy_runs, tmp_path / "study")
    flags = [str(study), "--limit", "40", "--beam", "1", "--bootstrap", "50", "--no-why"]
    assert main([*flags, "--also-average-last", "2"]) == 0
    printed = capsys.readouterr().out
    assert "post_ln-lambda1-seed1: BLEU" in printed and "(average of step-400.ckpt, step-500.ckpt)" in printed
    report = study / "report"
    data = json.loads((report / "results.json").read_text())
    assert [t["weights"] for t in data["tables"]] == ["best.ckpt", "average of the last 2 checkpoints"]
    best, averaged = ({Path(r["run"]).name: r for r in t["runs"]} for t in data["tables"])
    assert sorted(best) == sorted(averaged) == sorted(RUNS.values())
    for name in RUNS.values():
        assert best[name]["checkpoint"] == "best.ckpt"
        assert averaged[name]["checkpoint"] == "average of step-400.ckpt, step-500.ckpt"
        assert averaged[name]["updates"] == 500  # the newest of the averaged checkpoints
    # the averaged table has its own Δ against post_ln, on the averaged outputs
    (rskip,) = [r for r in data["tables"][1]["rows"] if r["variant"] == "rskip_ln"]
    assert rskip["weights"] == "average of the last 2 checkpoints" and rskip["paired_seeds"] == 1
    assert rskip["delta_bleu"] == averaged[RUNS["rskip_ln"]]["bleu"] - averaged[RUNS["post_ln"]]["bleu"]
    text = (report / "results.md").read_text()
    first, second = text.index(", best.ckpt\n"), text.index(", average of the last 2 checkpoints\n")
    assert first < text.index("### The paper's claims") < second  # the claims: decided on best.ckpt only
    assert text.count("### The paper's claims") == 1
    every_run = text.split("### Every run")[1]
    assert "| BLEU | BLEU, average of the last 2 |" in every_run
    line = next(x for x in every_run.splitlines() if x.startswith(f"| {RUNS['post_ln']} |"))
    assert line.rstrip(" |").endswith(f"{best[RUNS['post_ln']]['bleu']:.2f} | {averaged[RUNS['post_ln']]['bleu']:.2f}")
    readme = (report / "README.md").read_text()
    assert "newest 2 `step-<N>.ckpt`" in readme
    assert text.strip() in readme  # results.md's tables, a blank line between each, as they are there
    csv_lines = (report / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 2 * 2 and "weights" in csv_lines[0].split(",")

    # each choice of weights is cached on its own: a report of best.ckpt alone, then both again, translate nothing
    assert sorted(p.name for p in (study / "eval").iterdir()) == sorted(
        f"{n}{suffix}.json" for n in RUNS.values() for suffix in ("", ".avg2"))
    assert main(flags) == 0 and main([*flags, "--also-average-last", "2"]) == 0
    assert "BLEU" not in capsys.readouterr().out
    assert json.loads((report / "results.json").read_text()) == data


def test_contradictory_weight_flags_are_refused(toy_runs, tmp_path, capsys):
    study = study_of(toy_runs, tmp_path / "study")
    assert main([str(study), "--average-last", "2", "--also-average-last", "2"]) == 2
    assert "--also-average-last and --average-last together" in capsys.readouterr().err
    assert main([str(study), "--also-average-last", "-1"]) == 2
    assert "--also-average-last -1: must be ≥ 0" in capsys.readouterr().err
    assert not (study / "report").exists()


def test_the_evaluation_runs_with_the_threads_asked_for(toy_runs, tmp_path, capsys):
    """--threads of the report, and the sweep's own --threads for its evaluation: a report written while something
    else trains must not put two threads on one free core."""
    import torch

    from nmt import sweep

    study = study_of(toy_runs, tmp_path / "study")
    flags = ["--limit", "10", "--beam", "1", "--bootstrap", "20", "--no-why", "--threads", "1"]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main([str(study), *flags]) == 0 and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert sweep.main(["--skip", "post_ln", "--out", str(study), "--report-only", *flags]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert main([str(study), "--threads", "-1"]) == 2
    assert "--threads -1: must be ≥ 0" in capsys.readouterr().err


def test_a_run_still_training_or_killed_is_left_out(toy_runs, tmp_path, capsys):
    """A run with a config.yaml and checkpoints but no results.json (another invocation is training it, or a kill -9
    stopped it) is not scored: its best.ckpt is a snapshot, not the run's result."""
    study = study_of(toy_runs, tmp_path / "study")
    runs, _ = toy_runs
    open_run = study / "runs" / "rskip_ln-lambda3-seed1"
    open_run.mkdir()
    for name in ("config.yaml", "checkpoints", "spm.model"):
        (open_run / name).symlink_to(runs["rskip_ln"][0] / name)
    assert main([str(study), "--limit", "10", "--beam", "1", "--bootstrap", "20", "--no-why"]) == 0
    assert "rskip_ln-lambda3-seed1: BLEU" not in capsys.readouterr().out
    assert not (study / "eval" / "rskip_ln-lambda3-seed1.json").exists()
    data = json.loads((study / "report" / "results.json").read_text())
    assert sorted(Path(r["run"]).name for r in data["tables"][0]["runs"]) == sorted(RUNS.values())
    text = (study / "report" / "results.md").read_text()
    assert f"- {open_run}: no results.json: still training, killed or failed before it finished" in text
