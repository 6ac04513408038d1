"""The sweep runner (``python -m nmt.sweep``) and its report, with real runs and a real interruption.

One small study is trained once for the module, in a 560-pair generated corpus with the tiny model:
post_ln, rskip_ln λ=2 and a block that makes every update non-finite (it diverges). The first sweep is
killed with SIGKILL while its second run trains; the rerun must skip the finished run, resume the
interrupted one, start again a run left without a checkpoint, record the divergence, and report. A third
invocation adds a second post_ln seed into the same study.
"""

import fcntl
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import metrics, synthetic_corpus, train_command

from nmt.report.power import detectable_difference
from nmt import sweep as sweep_module
from nmt.sweep import DIVERGED, FINISHED, FRESH, RESTART, RESUME, Run, main, make_plan, run_state, study_lock

TESTS = Path(__file__).resolve().parent
NAN = "nonfinite_block:NaNOnBatches"
TRAIN = ["--data", "corpus", "--arch", "tiny", "--vocab-size", "400", "--max-tokens", "512", "--val-every", "40",
         "--log-every", "1", "--log-layer-grads", "10", "--max-nonfinite", "3"]
SWEEP = ["--skip", f"post_ln,rskip_ln,{NAN}", "--lambda", "1,2", "--seeds", "1", "--out", "study", "--max-steps", "80",
         "--bootstrap", "100", "--threads", "1"]


# ---------------------------------------------------------------------------------------------- the plan
def test_plan_keeps_valid_combinations_merges_identical_ones_and_says_why():
    plan = make_plan(["post_ln", "pre_ln", "skip", "xskip", "xskip_ln", "rskip_ln"], [0.5, 1, 2, 3], [1, 2, 3])
    combos = list(dict.fromkeys((r.skip, r.lam) for r in plan.runs))
    assert combos == [("post_ln", 1.0), ("pre_ln", 1.0), ("skip", 1.0), ("xskip", 0.5), ("xskip", 2.0), ("xskip", 3.0),
                      ("xskip_ln", 0.5), ("xskip_ln", 2.0), ("xskip_ln", 3.0), ("rskip_ln", 2.0), ("rskip_ln", 3.0)]
    assert len(plan.runs) == 11 * 3 and len(set(plan.runs)) == len(plan.runs)
    assert [r.seed for r in plan.runs[:12]] == [1] * 11 + [2]  # every variant's seed 1 first
    assert plan.merged == [("xskip", 1.0, "skip"), ("xskip_ln", 1.0, "post_ln"), ("rskip_ln", 1.0, "post_ln")]
    invalid = {(s, lam): why for s, lam, why in plan.invalid}
    no_lambda = {(s, lam) for s in ("post_ln", "pre_ln", "skip") for lam in (0.5, 2, 3)}
    assert set(invalid) == no_lambda | {("rskip_ln", 0.5)}
    assert "has no λ" in invalid[("post_ln", 2)] and "integer λ ≥ 1" in invalid[("rskip_ln", 0.5)]
    text = plan.describe()
    assert text.startswith("plan: 33 runs = 11 variant/λ combinations")
    assert "xskip_ln λ=1 is the same model as post_ln λ=1: runs once, as post_ln" in text
    assert "skip   rskip_ln λ=0.5: skip variant 'rskip_ln' needs an integer λ ≥ 1" in text


def test_identical_variant_alone_runs_under_its_canonical_name():
    plan = make_plan(["rskip_ln"], [1], [4])
    assert plan.runs == [Run("post_ln", 1.0, 4)] and plan.runs[0].name == "post_ln-lambda1-seed4"


def test_bad_commands_are_refused(capsys):
    assert main(["--skip", "no_such_skip", "--out", "x", "--dry-run"]) == 2
    assert "unknown skip variant 'no_such_skip'" in capsys.readouterr().err
    assert main(["--skip", "post_ln", "--out", "x", "--dry-run", "--", "--seed", "3"]) == 2
    assert "--seed after --: the sweep sets it" in capsys.readouterr().err
    assert main(["--skip", "post_ln", "--out", "x", "--dry-run", "--", "--patience", "3"]) == 2
    assert "--patience after --: the sweep sets it" in capsys.readouterr().err
    both = ["--average-last", "5", "--also-average-last", "5"]
    assert main(["--skip", "post_ln", "--out", "x", "--dry-run", *both]) == 2
    assert "sweep: error: --also-average-last and --average-last together" in capsys.readouterr().err
    assert main(["--skip", "post_ln", "--out", "x", "--dry-run", "--pilot", "no/pilot/here"]) == 2
    assert "sweep: error: --pilot no/pilot/here: no pilot.json there" in capsys.readouterr().err


def test_the_budget_flags_reach_every_run_fresh_or_resumed():
    run, budget = Run("post_ln", 1.0, 2), {"max_steps": 900, "patience": 4, "min_delta": 0.25, "patience_from": 300}
    for state in (FRESH, RESUME):
        command = sweep_module.train_command(run, Path("r"), state, None, ["--lr", "1e-3"], budget)
        tail = command[command.index("--run-dir") + 2:]
        assert tail == ["--max-steps", "900", "--patience", "4", "--min-delta", "0.25", "--patience-from", "300"], state
    command = sweep_module.train_command(run, Path("r"), FRESH, None, [], {"max_steps": None, "patience": 3,
                                                                           "min_delta": None})
    assert command[-2:] == ["--patience", "3"] and "--max-steps" not in command  # None: the preset's own


def test_a_study_recorded_before_a_budget_flag_existed_continues_with_its_default(tmp_path):
    import argparse

    args = argparse.Namespace(config=None, train_args=["--lr", "1e-3"], max_steps=900, patience=4, min_delta=None,
                              patience_from=None, skip=["post_ln"], lambdas=[1.0], seeds=[1], parallel=1)
    older = {"config": None, "config_sha256": None, "train_args": ["--lr", "1e-3"], "max_steps": 900, "patience": 4,
             "min_delta": None}  # no patience_from: sweep.json of an older version
    (tmp_path / "sweep.json").write_text(json.dumps({"settings": older, "invocations": []}))
    record = sweep_module.record_invocation(tmp_path, args, ["--skip", "post_ln"])
    assert len(record["invocations"]) == 1
    args.patience_from = 300  # a value the study never had: refused
    with pytest.raises(sweep_module.SweepError, match="patience_from: study has None, asked 300"):
        sweep_module.record_invocation(tmp_path, args, ["--skip", "post_ln"])


def test_a_larger_patience_is_taken_until_a_run_has_stopped_on_the_smaller_one(tmp_path):
    import argparse

    def invocation(patience):
        return argparse.Namespace(config=None, train_args=["--val-every", "60"], max_steps=4000, patience=patience,
                                  min_delta=None, patience_from=None, skip=["post_ln"], lambdas=[1.0], seeds=[1],
                                  parallel=1)

    sweep_module.record_invocation(tmp_path, invocation(10), ["first"])
    run = tmp_path / "runs" / "post_ln-lambda1-seed1"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"finished": False, "stop_reason": "SIGTERM"}))
    record = sweep_module.record_invocation(tmp_path, invocation(17), ["raised"])
    assert record["settings"]["patience"] == 17 and record["invocations"][1]["patience_raised_from"] == 10
    assert "patience_raised_from" not in record["invocations"][0]
    with pytest.raises(sweep_module.SweepError, match="patience: study has 17, asked 10"):
        sweep_module.record_invocation(tmp_path, invocation(10), ["lowered"])  # smaller: refused
    with pytest.raises(sweep_module.SweepError, match="patience: study has 17, asked 0"):
        sweep_module.record_invocation(tmp_path, invocation(0), ["never"])  # 0 (never stop) is not larger
    (run / "results.json").write_text(json.dumps({"finished": True, "stop_reason": "patience", "test": {}}))
    with pytest.raises(sweep_module.SweepError, match="post_ln-lambda1-seed1 already stopped on 17"):
        sweep_module.record_invocation(tmp_path, invocation(20), ["too late"])
    assert json.loads((tmp_path / "sweep.json").read_text())["settings"]["patience"] == 17  # nothing written


def test_an_invocation_with_a_budget_of_its_own_is_recorded_and_said_in_the_report(tmp_path):
    import argparse

    from nmt.report.readme import setup_section

    def invocation(**changes):
        values = dict(config=None, train_args=["--val-every", "60"], max_steps=2000, patience=4, min_delta=None,
                      patience_from=600, skip=["post_ln"], lambdas=[1.0], seeds=[1, 2, 3], parallel=2)
        return argparse.Namespace(**{**values, **changes})

    sweep_module.record_invocation(tmp_path, invocation(), ["study"])
    cut = invocation(max_steps=1000, skip=["xskip"], seeds=[1])
    with pytest.raises(sweep_module.SweepError, match=r"max_steps: study has 2000, asked 1000.*: --own-budget\)"):
        sweep_module.record_invocation(tmp_path, cut, ["cut"])
    cut.own_budget = True
    record = sweep_module.record_invocation(tmp_path, cut, ["cut", "--own-budget"])
    assert record["settings"]["max_steps"] == 2000  # the study's budget stays
    assert record["invocations"][1]["own_budget"] is True and record["invocations"][1]["budget"]["max_steps"] == 1000
    assert record["invocations"][0]["budget"]["patience_from"] == 600 and "own_budget" not in record["invocations"][0]
    # a budget of its own does not excuse anything else
    other = invocation(train_args=["--val-every", "30"], own_budget=True)
    with pytest.raises(sweep_module.SweepError, match="train_args: study has") as refused:
        sweep_module.record_invocation(tmp_path, other, ["other"])
    assert "--own-budget" not in str(refused.value)
    sweep_module.record_invocation(tmp_path, invocation(), ["study"])  # rerun to resume: one line, counted
    text = "\n".join(setup_section(json.loads((tmp_path / "sweep.json").read_text())))
    assert "the runs of command 2 had a budget of their own (`--own-budget`" in text
    assert "- Command 1: `python -m nmt.sweep study` (run 2 times: each rerun went on" in text
    assert "- Command 2: `python -m nmt.sweep cut --own-budget`\n" in text


def test_a_run_planned_by_an_earlier_invocation_with_another_budget_is_refused(tmp_path):
    """Two invocations of one study that plan the same run at different budgets (one of them --own-budget): which
    one trains it first would set its budget. The run belongs to the invocation that planned it first."""
    import argparse

    def invocation(skip, lambdas, seeds, max_steps=2000, own=False):
        return argparse.Namespace(config=None, train_args=["--val-every", "60"], max_steps=max_steps, patience=4,
                                  min_delta=None, patience_from=600, skip=skip, lambdas=lambdas, seeds=seeds,
                                  parallel=1, own_budget=own)

    study = invocation(["post_ln", "xskip_ln"], [1.0, 2.0], [1, 2, 3])
    sweep_module.record_invocation(tmp_path, study, ["study"])
    # xskip_ln λ=1 is post_ln: the cut invocation plans post_ln seed 1 and xskip_ln λ=2 seed 1, the study's runs
    cut = invocation(["skip", "xskip_ln"], [0.5, 1.0, 2.0], [1], max_steps=800, own=True)
    with pytest.raises(sweep_module.SweepError, match=r"post_ln-lambda1-seed1, xskip_ln-lambda2-seed1 are planned by "
                       r"command 1 of sweep.json \(--skip post_ln,xskip_ln\) with --max-steps 2000 --patience 4 "
                       r"--patience-from 600, and this command asks --max-steps 800 .*Leave them out"):
        sweep_module.record_invocation(tmp_path, cut, ["cut"])
    assert len(json.loads((tmp_path / "sweep.json").read_text())["invocations"]) == 1  # nothing written
    sweep_module.record_invocation(tmp_path, invocation(["skip", "xskip"], [0.5, 1.0], [1], 800, True), ["disjoint"])
    sweep_module.record_invocation(tmp_path, study, ["study"])  # the study again (to resume): its own runs
    # the runs the cut command planned first are its own: the study's budget may not take them either way
    with pytest.raises(sweep_module.SweepError, match=r"skip-lambda1-seed1 is planned by command 2 .*"
                       r"--max-steps 800 .* asks --max-steps 2000 .*Leave it out"):
        sweep_module.record_invocation(tmp_path, invocation(["skip"], [1.0], [1, 2]), ["skip"])
    # the same budget is no clash, --own-budget or not
    sweep_module.record_invocation(tmp_path, invocation(["skip", "xskip"], [0.5, 1.0], [1, 2], 800, True), ["seeds"])
    sweep_module.record_invocation(tmp_path, invocation(["post_ln"], [1.0], [1, 4], 2000, True), ["same"])


def test_detectable_difference_formulas():
    d = detectable_difference(0.3, 3)
    assert d["significant_normal"] == pytest.approx(1.95996 * 0.3 * (2 / 3) ** 0.5)
    assert d["significant_normal"] == pytest.approx(2 * 2**0.5 * 0.3 / 3**0.5, rel=0.03)  # the 2·√2·σ/√n rule
    assert d["significant_t"] == pytest.approx(2.776 * 0.3 * (2 / 3) ** 0.5)  # t with 2n − 2 = 4 degrees of freedom
    assert d["detectable_80"] == pytest.approx((2.776 + 0.941) * 0.3 * (2 / 3) ** 0.5)
    assert detectable_difference(0.3, 40)["significant_t"] == pytest.approx(d["significant_normal"] * (3 / 40) ** 0.5)
    assert detectable_difference(0.3, 1)["significant_t"] is None


# ---------------------------------------------------------------------------------------------- a real study
def sweep_command(args, folder):
    command, env = train_command([], folder / "data", threads=1)
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    env["PYTHONPATH"] += os.pathsep + str(TESTS)  # for --skip nonfinite_block:NaNOnBatches
    env["NMT_TEST_NAN_BATCHES"] = "1-"  # that block makes every training batch NaN: its run diverges
    return [sys.executable, "-m", "nmt.sweep", *args, "--", *TRAIN], env


def sweep(args, folder):
    command, env = sweep_command(args, folder)
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def trained_rows(run_dir):
    path = run_dir / "metrics.csv"
    return [r for r in metrics(run_dir) if r.get("train/loss")] if path.is_file() else []


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    synthetic_corpus(folder / "corpus", 560, 20, 20)  # the sweep's train.py runs read it as ./corpus
    runs = folder / "study" / "runs"
    first, second, third = (runs / n for n in ("post_ln-lambda1-seed1", "rskip_ln-lambda2-seed1",
                                                f"{NAN.replace(':', '_')}-lambda1-seed1"))

    # 1. the sweep, killed with SIGKILL once its first run has finished and its second has trained a few updates
    command, env = sweep_command(SWEEP, folder)
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 900  # a safety net, not a timing check: generous for a loaded machine
    while len(trained_rows(second)) < 3:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the second run did not start training"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    killed_output = proc.communicate()[0]
    first_results = (first / "results.json").stat().st_mtime_ns
    # a run stopped before its first checkpoint: a run directory with config.yaml and nothing to resume from
    third.mkdir(parents=True)
    (third / "config.yaml").write_text((first / "config.yaml").read_text())

    # 2. the same command again, two runs at once: it waits for the killed sweep's run to stop, then continues
    rerun = sweep([*SWEEP, "--parallel", "2"], folder)
    # 3. a second seed of post_ln into the same study (per-variant seed counts)
    more = sweep(["--skip", "post_ln", "--seeds", "2", "--out", "study", "--max-steps", "80", "--bootstrap", "100",
                  "--threads", "1"],
                 folder)
    return {"folder": folder, "killed": killed_output, "rerun": rerun, "more": more, "first": first, "second": second,
            "third": third, "first_results": first_results}


def test_killed_sweep_resumes_unfinished_runs_and_skips_finished_ones(study):
    rerun = study["rerun"]
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-3000:]
    assert "post_ln-lambda1-seed1: finished" in study["killed"]
    assert ("1 of 3 runs already done (finished or diverged); 2 to train (1 resumed from their checkpoint)"
            in rerun.stdout)
    assert "resuming rskip_ln-lambda2-seed1 (" in rerun.stdout
    assert (study["first"] / "results.json").stat().st_mtime_ns == study["first_results"]  # not trained again
    log = (study["folder"] / "study" / "logs" / "rskip_ln-lambda2-seed1.log").read_text()
    assert "stopped by SIGTERM" in log  # the killed sweep's run got SIGTERM (PR_SET_PDEATHSIG) and saved
    assert "resuming from" in log and log.count("\n$ ") == 2
    result = json.loads((study["second"] / "results.json").read_text())
    assert result["finished"] is True and result["steps"] == 80
    steps = [int(r["step"]) for r in trained_rows(study["second"])]
    assert steps == list(range(1, 81))  # every update once, across the interruption


def test_run_without_checkpoint_is_started_again_and_divergence_is_recorded(study):
    rerun, third = study["rerun"], study["third"]
    assert f"{third.name}: stopped before its first checkpoint; starting it again from scratch" in rerun.stdout
    assert f"{third.name}: diverged at update 1 (a result: recorded, not retried)" in rerun.stdout
    result = json.loads((third / "results.json").read_text())
    assert result["diverged"] is True and result["diverged_at_step"] == 1
    assert run_state(third) == DIVERGED and run_state(study["first"]) == FINISHED


def test_run_states(study, tmp_path):
    assert run_state(tmp_path / "nothing") == FRESH
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("skip: post_ln\n")
    assert run_state(run) == RESTART
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"truncated")
    assert run_state(run) == RESTART  # a checkpoint that does not load is none
    (run / "checkpoints" / "step-5.ckpt").write_bytes((study["second"] / "checkpoints" / "last.ckpt").read_bytes())
    assert run_state(run) == RESUME
    (run / "results.json").write_text(json.dumps({"finished": False, "stopped": "SIGTERM"}))
    assert run_state(run) == RESUME


def test_layer_gradient_norms_are_logged_for_the_first_updates(study):
    rows = [r for r in metrics(study["first"]) if r.get("grad_norm/encoder.0")]
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    for r in rows:
        for column in ("grad_norm/encoder.0", "grad_norm/encoder.1", "grad_norm/decoder.0", "grad_norm/decoder.1"):
            assert float(r[column]) > 0


def test_report_table_and_files(study):
    more = study["more"]
    assert more.returncode == 0, more.stdout[-4000:] + more.stderr[-3000:]
    assert "plan: 1 run = 1 variant/λ combination × their seeds" in more.stdout and "training post_ln-lambda1-seed2" in more.stdout
    report = study["folder"] / "study" / "report"
    text = (report / "results.md").read_text()
    table = text.split("### The paper's claims")[0]  # the BLEU table; the claims and gradient-flow tables follow
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in table.splitlines() if line.startswith("| ")}
    assert rows["post_ln"][1] == "1" and rows["post_ln"][6:8] == ["2", "0"]  # λ, seeds, diverged
    assert rows["rskip_ln"][1] == "2" and rows["rskip_ln"][6:8] == ["1", "0"]
    assert rows["rskip_ln"][-2].startswith(("+", "-")) and rows["rskip_ln"][-1].strip(" |") != "—"  # Δ and p
    assert rows[NAN][6:8] == ["1", "1"] and rows[NAN][10] == "—"  # seeds, diverged; no BLEU
    # how each run ended, seed by seed: its stop reason and last update
    assert rows["post_ln"][9] == "max_steps @ 80 (all 2 seeds)" and rows[NAN][9].startswith("diverged @ ")
    assert "### Every run" in text and "| post_ln-lambda1-seed2 | " in text
    assert "Smallest Δ BLEU the seed noise lets one detect (two-sided, 5%; n = 2 seeds" in text
    data = json.loads((report / "results.json").read_text())
    assert data["tables"][0]["detectable_difference"]["n"] == 2
    # the paper's claims that this study's cells allow: rskip_ln λ=2 against post_ln, on the one shared seed
    assert "### The paper's claims, checked on these runs" in text
    (claim,) = data["claims"]
    assert (claim["better"], claim["worse"], claim["seeds"]) == ("rskip_ln λ=2", "post_ln", 1)
    # its numbers, recomputed from the runs' BLEU: Δ of the shared seed, the seed noise 1.96·σ·√(2/1) with σ the
    # std of post_ln's two seeds; and the verdict those numbers call for
    bleu = {(r["skip"], r["seed"]): r["bleu"] for r in data["tables"][0]["runs"] if "bleu" in r}
    assert claim["delta_bleu"] == pytest.approx(bleu["rskip_ln", 1] - bleu["post_ln", 1])
    sigma = statistics.stdev([bleu["post_ln", 1], bleu["post_ln", 2]])
    assert claim["noise_threshold"] == pytest.approx(1.95996 * sigma * 2**0.5)
    resolved = claim["p_value_max"] < 0.05 and abs(claim["delta_bleu"]) > claim["noise_threshold"]
    expected = ("supported" if claim["delta_bleu"] > 0 else "contradicted") if resolved else "not resolved"
    assert claim["verdict"] == expected, claim
    # how evenly the gradient reaches the layers, per variant (the runs log per-layer gradient norms)
    assert "### Gradient flow over the first updates" in text
    flow = {r["variant"]: r for r in data["gradient_flow"]}
    assert flow["post_ln"]["seeds"] == 2 and flow["rskip_ln λ=2"]["seeds"] == 1
    assert all(r["encoder_bottom_over_top"] > 0 and r["decoder_bottom_over_top"] > 0 for r in flow.values())
    readme = (report / "README.md").read_text()
    for part in ("## Setup", "## Hardware and wall time", "## Provenance", "git commit", "torch", "## Results",
                 "## How every number was obtained", "paired bootstrap (100 resamples"):
        assert part in readme
    assert (report / "results.csv").read_text().count("\n") == 4  # header and 3 rows
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install nmt[report]" in readme
    else:
        for name in ("curves.png", "run_curves.png", "bleu.png", "grad_norms.png", "why_lesion.png",
                     "why_similarity.png"):
            assert (report / name).stat().st_size > 1000 and f"![{name}]({name})" in readme
    # why: each variant's first seed diagnosed (the diverged run left no checkpoint), cached across reports
    assert "### Why: the diagnosis of each variant" in text and "## Why: the diagnosis of each variant" in readme
    diagnosed = {v["label"]: v for v in data["diagnosis"]["variants"]}
    assert sorted(diagnosed) == ["post_ln", "rskip_ln λ=2"]
    assert diagnosed["post_ln"]["run"] == "post_ln-lambda1-seed1"
    assert diagnosed["post_ln"]["summary"]["encoder_rms_growth"] == pytest.approx(1.0, abs=0.05)  # Post-LN: flat
    assert (study["folder"] / "study" / "diagnosis" / "rskip_ln-lambda2-seed1" / "diagnosis.json").is_file()
    # the report links to its own copy of each diagnosis: every relative link resolves inside the report folder
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert "diagnosis/rskip_ln-lambda2-seed1/summary.md" in links
    assert all(not link.startswith(("..", "/")) and (report / link).is_file() for link in links
               if "://" not in link), links
    assert "diagnosing rskip_ln-lambda2-seed1" in study["rerun"].stdout
    assert "diagnosing" not in more.stdout  # the report rewritten after one more run: nothing diagnosed again


def test_the_loss_curves_go_log_scale_when_they_span_orders_of_magnitude():
    from nmt.report.figures import spans_orders_of_magnitude

    assert spans_orders_of_magnitude([5.1, 4.2, 1.4e9, 3.9])  # a diverging run beside converging ones
    assert not spans_orders_of_magnitude([5.1, 4.2, 3.9, 2.8])
    assert not spans_orders_of_magnitude([5.1, -1.0, 1e9])  # not positive: no log scale


def test_other_training_settings_are_refused_and_a_rerun_trains_nothing(study, capsys):
    folder = study["folder"]
    other = sweep(["--skip", "post_ln", "--seeds", "3", "--out", "study", "--max-steps", "99", "--threads", "1"],
                  folder)
    assert other.returncode == 2
    assert "holds a study trained with other settings (max_steps: study has 80" in other.stderr
    again = sweep([*SWEEP, "--no-why"], folder)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "3 of 3 runs already done" in again.stdout and "training" not in again.stdout.split("to train")[1]
    # --no-why (a report flag, not a training one): the report it writes has no Why section
    text = (folder / "study" / "report" / "results.md").read_text()
    assert "### Gradient flow over the first updates" in text and "### Why" not in text
    # --why-only: the Why section of the named variants only (from the cache: nothing is diagnosed again)
    from nmt.report import cli as report

    with pytest.raises(SystemExit):
        report.build_parser().parse_args(["study", "--why-only", "post_ln,no_such_skip"])
    assert "unknown skip variant 'no_such_skip'" in capsys.readouterr().err
    assert report.main([str(folder / "study"), "--bootstrap", "100", "--why-only", "post_ln"]) == 0
    assert "diagnosing" not in capsys.readouterr().out
    data = json.loads((folder / "study" / "report" / "results.json").read_text())
    assert [v["label"] for v in data["diagnosis"]["variants"]] == ["post_ln"] and data["diagnosis"]["only"] == ["post_ln"]
    assert "Only post_ln (`--why-only`)" in (folder / "study" / "report" / "results.md").read_text()


def test_a_study_kept_without_its_checkpoints_reports_from_its_caches(study, tmp_path, capsys):
    """A study folder saved light (no checkpoints, copied or cloned: new file times) reports as before: the scores
    and diagnoses are read from its caches, since nothing is left to translate or diagnose."""
    from nmt.report import cli as report

    flags = ["--bootstrap", "100", "--why-only", "post_ln"]
    assert report.main([str(study["folder"] / "study"), *flags]) == 0
    before = json.loads((study["folder"] / "study" / "report" / "results.json").read_text())
    light = tmp_path / "light"
    shutil.copytree(study["folder"] / "study", light, copy_function=shutil.copy,  # shutil.copy: new file times
                    ignore=shutil.ignore_patterns("*.ckpt", "checkpoints", "tb", "report", ".sweep.lock"))
    assert not list(light.rglob("*.ckpt"))
    capsys.readouterr()
    assert report.main([str(light), *flags]) == 0
    printed = capsys.readouterr().out
    assert "diagnosing" not in printed and ": BLEU" not in printed  # nothing translated or diagnosed again
    after = json.loads((light / "report" / "results.json").read_text())
    # the same tables, naming the runs where they are now
    assert json.loads(json.dumps(after["tables"]).replace(str(light), str(study["folder"] / "study"))) == \
        before["tables"]
    assert [v["summary"] for v in after["diagnosis"]["variants"]] == [
        v["summary"] for v in before["diagnosis"]["variants"]]


def test_sigterm_to_the_sweep_stops_its_run_cleanly(study):
    folder = study["folder"]
    command, env = sweep_command(["--skip", "pre_ln", "--out", "stopped", "--max-steps", "100000", "--threads", "1"],
                                 folder)
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = folder / "stopped" / "runs" / "pre_ln-lambda1-seed1"
    deadline = time.monotonic() + 600  # a safety net, not a timing check: generous for a loaded machine
    while len(trained_rows(run)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, out[-3000:]
    assert "pre_ln-lambda1-seed1: stopped by SIGTERM; the next sweep resumes it" in out
    assert "sweep stopped by SIGTERM; rerun the same command to continue" in out
    result = json.loads((run / "results.json").read_text())
    assert result["stopped"] == "SIGTERM" and result["finished"] is False
    assert run_state(run) == RESUME and not (folder / "stopped" / "report").exists()


def test_until_stops_the_runs_at_its_time_and_starts_none_after_it(study):
    folder = study["folder"]
    until = time.time() + 12
    args = ["--skip", "pre_ln", "--out", "until", "--max-steps", "100000", "--threads", "1",
            "--until", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(until))]
    stopped = sweep(args, folder)  # no run of the folder has shown its speed yet: the run starts
    assert time.time() >= until
    assert stopped.returncode == 142, stopped.stdout[-3000:] + stopped.stderr[-3000:]
    assert "training pre_ln-lambda1-seed1" in stopped.stdout
    assert "--until: stopping the running runs" in stopped.stdout
    assert "sweep stopped by --until; rerun the same command to continue" in stopped.stdout
    again = sweep(args, folder)  # its time has passed: nothing starts, and nothing is reported
    assert again.returncode == 142 and "pre_ln-lambda1-seed1: not started: the --until time has come" in again.stdout
    assert not (folder / "until" / "report").exists()


def test_until_reads_the_length_and_speed_of_runs_that_finish_during_the_sweep(study):
    folder = study["folder"]
    slow = folder / "until-later" / "runs" / "slow-earlier-run"  # stopped, unfinished: 1,000 s an update
    slow.mkdir(parents=True)
    (slow / "results.json").write_text(json.dumps({"finished": False, "stopped": "SIGTERM", "steps": 10,
                                                   "wall_time_s": 10000.0}))
    until = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600))
    result = sweep(["--skip", "post_ln", "--seeds", "1,2", "--out", "until-later", "--max-steps", "20", "--threads",
                    "1", "--until", until], folder)
    # seed 1 starts (no run has finished: its length is not known) and finishes in 20 updates; then seed 2 is
    # expected to take as long, at the median speed of the two (1,000 s an update): past the hour
    assert result.returncode == 142, result.stdout[-3000:] + result.stderr[-3000:]
    assert "post_ln-lambda1-seed1: finished" in result.stdout
    assert "post_ln-lambda1-seed2: not started: the ≈ 20 updates it is expected to train take ≈ 333 min" in \
        result.stdout


def test_until_starts_only_the_runs_that_end_before_it(tmp_path):
    runs = tmp_path / "runs"
    for name, wall, steps, finished in (("a", 100.0, 50, True), ("b", 300.0, 100, False), ("c", 90.0, 10, True),
                                        ("d", 1000.0, 400, True)):  # 2, 3, 9 and 2.5 s an update
        (runs / name).mkdir(parents=True)
        (runs / name / "results.json").write_text(json.dumps({"wall_time_s": wall, "steps": steps,
                                                               "finished": finished}))
    (runs / "fresh").mkdir()
    rate = sweep_module.seconds_per_update(runs)
    assert rate == 3.0 and sweep_module.seconds_per_update(tmp_path / "none") is None  # the median
    # the median length of the finished runs (50, 10, 400: not b, still training), at most --max-steps
    assert sweep_module.expected_updates(runs, 1000) == 50 and sweep_module.expected_updates(runs, 30) == 30
    assert sweep_module.expected_updates(runs, None) == 50
    assert sweep_module.expected_updates(tmp_path / "none", 1000) is None  # none finished: not known, it starts
    soon = time.time() + 400  # 400 s: 133 updates at 3 s
    assert sweep_module.ends_in_time(runs / "fresh", FRESH, 120, rate, soon) is None
    late = sweep_module.ends_in_time(runs / "fresh", FRESH, 200, rate, soon)
    assert late.startswith("the ≈ 200 updates it is expected to train take ≈ 10 min at 3.00 s an update")
    assert sweep_module.ends_in_time(runs / "b", RESUME, 200, rate, soon) is None  # 100 left of its 200
    assert sweep_module.ends_in_time(runs / "b", RESUME, 50, rate, soon) is None  # past the expected length
    assert sweep_module.ends_in_time(runs / "fresh", FRESH, 200, None, soon) is None  # speed unknown: it starts
    assert sweep_module.ends_in_time(runs / "fresh", FRESH, 1, rate, time.time() - 1) == "the --until time has come"
    with pytest.raises(SystemExit):
        sweep_module.build_parser().parse_args(["--skip", "post_ln", "--out", "x", "--until", "25:00"])


def test_parallel_runs_get_their_share_of_the_gpus():
    from nmt.sweep import gpu_slots

    assert gpu_slots(2, {}, count=0) == [None, None]  # CPU: no CUDA_VISIBLE_DEVICES at all
    assert gpu_slots(2, {}, count=4) == ["0,2", "1,3"]
    assert gpu_slots(4, {}, count=2) == ["0", "1", "0", "1"]  # more runs than GPUs: they share
    assert gpu_slots(2, {"CUDA_VISIBLE_DEVICES": "3,5,6"}, count=8) == ["3,6", "5"]  # within what is visible
    assert gpu_slots(1, {"CUDA_VISIBLE_DEVICES": "-1"}, count=8) == [None]


def test_the_sweep_lock_is_let_go_at_the_end_of_its_block(tmp_path):
    """scripts/converged_study.py runs several sweeps and pilots in one process, one after the other."""
    with study_lock(tmp_path) as fd:
        other = os.open(tmp_path / ".sweep.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now: a second sweep in the same process goes on
    os.close(other)
    with pytest.raises(OSError):
        os.fstat(fd)  # and its descriptor closed


def test_reruns_differing_only_in_when_and_how_many_at_once_are_one_command():
    """A study resumed over several sessions reruns its command with another --until, and now and then with another
    --parallel/--threads: the same runs, so the report lists one command and says how it was run; a command with
    other runs (another --skip), or a train.py flag after --, stays a command of its own."""
    from nmt.report.readme import setup_section

    study = ["--out", "s", "--skip", "post_ln"]
    invocations = [{"argv": [*study, "--parallel", "2", "--threads", "1", "--until", "2026-12-07T14:00:00"]},
                   {"argv": [*study, "--parallel=1", "--threads=2", "--until", "2026-12-07T17:00:00"]},
                   {"argv": [*study, "--parallel", "1", "--threads", "2", "--until", "2026-12-08T02:15:00"]},
                   {"argv": ["--out", "s", "--skip", "skip", "--own-budget", "--until", "2026-12-07T17:00:00"],
                    "own_budget": True},
                   {"argv": [*study, "--", "--threads", "3"]}]
    text = "\n".join(setup_section({"settings": {}, "invocations": invocations}))
    assert ("- Command 1: `python -m nmt.sweep --out s --skip post_ln` (run 3 times: each rerun went on where the one "
            "before had stopped; with `--parallel 2 --threads 1` once, `--parallel 1 --threads 2` 2 times; `--until` "
            "2026-12-07T14:00:00 to 2026-12-08T02:15:00)") in text
    assert ("- Command 2: `python -m nmt.sweep --out s --skip skip --own-budget` (`--until 2026-12-07T17:00:00`)"
            in text)
    assert "- Command 3: `python -m nmt.sweep --out s --skip post_ln -- --threads 3`\n" in text
    assert "the runs of command 2 had a budget of their own" in text and "Command 4" not in text
