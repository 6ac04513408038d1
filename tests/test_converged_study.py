"""scripts/converged_study.py (issue #14's study as one resumable command): the grid's extension, the study's
commands for a budget, the dry run and its errors. The whole chain is checked end to end by hand with a tiny budget
(docs/study-multi30k-converged/plan.md): it trains some 30 runs, too long for the suite."""

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest

from nmt.sweep import make_plan

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "converged_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("converged_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_choice_on_the_learning_rate_edge_extends_the_grid_one_step_that_way(study):
    lrs = [5e-4, 1e-3, 2e-3]
    assert study.extended(lrs, ["highest peak learning rate (0.002)"]) == [5e-4, 1e-3, 2e-3, 4e-3]
    assert study.extended(lrs, ["lowest peak learning rate (0.0005)", "highest warm-up (500)"]) == [
        2.5e-4, 5e-4, 1e-3, 2e-3]
    assert study.extended(lrs, ["highest warm-up (500)"]) == lrs  # the warm-up edge is not extended
    assert study.extended(lrs, []) == lrs


def flag(argv, name):
    return argv[argv.index(name) + 1]


def test_the_study_commands_carry_the_budget_and_cut_only_the_one_seed_runs(study):
    args = study.build_parser().parse_args(["--data", "corpus", "--out", "s"])
    budget = {"max_steps": 1560, "patience": 4, "patience_from": 480, "cut_max_steps": 960}
    commands = study.study_commands(args, "0.001", "500", budget, ["--arch", "tiny"])
    assert [flag(c, "--skip") for c in commands] == ["post_ln,pre_ln,rskip_ln,xskip_ln", "skip,xskip", "xskip_ln",
                                                     "rskip_ln"]
    assert [flag(c, "--seeds") for c in commands] == ["1,2,3", "1", "1", "1"]
    assert [flag(c, "--max-steps") for c in commands] == ["1560", "960", "960", "960"]
    assert ["--own-budget" in c for c in commands] == [False, True, True, True]
    # 12 three-seed runs and 5 one-seed runs, none in two invocations: one that trains while an earlier one has runs
    # left for later (--until) must not train them at its own budget
    plans = [[run.name for run in make_plan(flag(c, "--skip").split(","), [float(x) for x in flag(c, "--lambda")
                                            .split(",")], [int(x) for x in flag(c, "--seeds").split(",")]).runs]
             for c in commands]
    assert [len(p) for p in plans] == [12, 3, 1, 1] and len(set().union(*plans)) == 17
    for c in commands:
        own, train = c[: c.index("--")], c[c.index("--") + 1:]
        assert (flag(own, "--patience"), flag(own, "--patience-from"), flag(own, "--also-average-last")) == (
            "4", "480", "5")
        assert flag(own, "--out") == str(Path("s") / "multi30k-converged")
        assert own[own.index("--pilot") + 1: own.index("--pilot") + 3] == [str(Path("s") / "pilot-grid"),
                                                                          str(Path("s") / "pilot-long")]
        assert (flag(train, "--lr"), flag(train, "--warmup"), flag(train, "--save-every"),
                flag(train, "--keep-last")) == ("0.001", "500", "60", "5")
        assert train[-2:] == ["--arch", "tiny"]  # the script's own flags first, so that those after -- win
    uncut = study.study_commands(args, "0.001", "500", {**budget, "cut_max_steps": None}, [])
    assert [flag(c, "--max-steps") for c in uncut] == ["1560"] * 4 and not any("--own-budget" in c for c in uncut)


def test_the_dry_run_prints_every_stage_and_writes_nothing(study, tmp_path, capsys):
    source = tmp_path / "set.en"
    source.write_text("a b\n")
    out = tmp_path / "study"
    assert study.main(["--data", "corpus", "--out", str(out), "--heldout", str(source), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    stages = [line.split("]")[0] + "]" for line in printed.splitlines() if line.startswith("[")]
    assert stages == ["[grid]", "[long run]", "[budget]", "[study]", "[study]", "[study]", "[study]", "[held-out]",
                      "[second long run]", "[report]"]
    assert "--lr LR --warmup WU" in printed and "--max-steps T --patience 4 --patience-from U" in printed
    long_runs = [line for line in printed.splitlines() if "long run]" in line]  # alone, with both slots' threads
    assert [line.split("--threads 2 ")[1].split(" --lr")[0] for line in long_runs] == [
        "--skip post_ln --lambda 1", "--skip rskip_ln --lambda 2"] and all("--parallel 1 " in x for x in long_runs)
    assert not out.exists()


def test_the_dry_run_of_a_study_under_way_prints_its_budget_exact(study, tmp_path, capsys):
    """Once budget.json is written (in OUT, or in the --state copy a fresh clone restores from), the dry run prints
    the commands the study runs, with T, P, U and the one-seed runs' cut: what the README's commands are read from."""
    source = tmp_path / "set.en"
    source.write_text("a b\n")
    state = tmp_path / "state"
    state.mkdir()
    budget = {"max_steps": 3360, "patience": 4, "patience_from": 600, "cut_max_steps": 840, "over_capacity": 25738}
    (state / "budget.json").write_text(json.dumps(budget))
    flags = ["--data", "corpus", "--out", str(tmp_path / "s"), "--heldout", str(source), "--setting", "1e-3,500",
             "--dry-run"]
    assert study.main([*flags, "--state", str(state)]) == 0
    printed = capsys.readouterr().out
    assert f"[budget] {state / 'budget.json'}: --max-steps 3360 --patience 4 --patience-from 600; one-seed runs cut " \
           "to 840; 25,738 updates over --capacity" in printed
    lines = [line for line in printed.splitlines() if line.startswith("[study]")]
    assert ["--own-budget --max-steps 840 --patience 4 --patience-from 600 " in line for line in lines] == [
        False, True, True, True] and "--max-steps 3360 --patience 4 --patience-from 600 " in lines[0]
    assert not (tmp_path / "s").exists() and sorted(p.name for p in state.iterdir()) == ["budget.json"]
    (tmp_path / "s").mkdir()  # OUT's own budget comes first
    (tmp_path / "s" / "budget.json").write_text(json.dumps({**budget, "max_steps": 1200, "cut_max_steps": None}))
    assert study.main([*flags, "--state", str(state)]) == 0
    printed = capsys.readouterr().out
    assert "--max-steps 1200 --patience 4" in printed and "--own-budget" not in printed and "cut to" not in printed


def test_a_setting_given_skips_the_grid_and_its_section_of_the_report(study, tmp_path, capsys):
    source = tmp_path / "set.en"
    source.write_text("a b\n")
    flags = ["--data", "corpus", "--out", str(tmp_path / "s"), "--heldout", str(source), "--dry-run"]
    assert study.main([*flags, "--setting", "1e-3,500"]) == 0
    printed = capsys.readouterr().out
    assert "[grid]" not in printed and "--lr 0.001 --warmup 500" in printed
    assert "pilot-grid" not in printed and f"--pilot {tmp_path / 's' / 'pilot-long'} --skip" in printed
    assert study.main([*flags, "--setting", "fast"]) == 2
    assert "--setting fast: expected a peak learning rate and a warm-up" in capsys.readouterr().err


def test_until_reaches_every_stage_and_a_stage_stopped_by_it_ends_the_script_to_go_on_later(study, tmp_path,
                                                                                             capsys):
    source = tmp_path / "set.en"
    source.write_text("a b\n")
    config = str(SCRIPT.parent.parent / "configs" / "multi30k.yaml")
    flags = ["--data", "corpus", "--config", config, "--out", str(tmp_path / "s"), "--heldout", str(source),
             "--state", str(tmp_path / "state"), "--until", "2000-01-01T08:00"]
    assert study.main([*flags, "--dry-run"]) == 0
    stages = [line for line in capsys.readouterr().out.splitlines()
              if line.startswith(("[grid]", "[long", "[study]", "[second"))]
    assert len(stages) == 7 and all("--until 2000-01-01T08:00:00 " in line for line in stages)
    # its time has passed: the long runs' stage starts nothing, and the script says how to go on
    assert study.main([*flags, "--setting", "1e-3,500"]) == study.UNTIL_STATUS == 142
    printed = capsys.readouterr().out
    assert "post_ln-lambda1-seed1-lr0.001-warmup500: not started: the --until time has come" in printed
    assert "converged study: long run: stopped at --until 2000-01-01T08:00:00; rerun this command" in printed
    assert "[budget]" not in printed and (tmp_path / "state" / "pilot-long" / "sweep.json").is_file()
    with pytest.raises(SystemExit):
        study.build_parser().parse_args(["--until", "8h"])


def test_a_sweep_that_leaves_runs_for_later_before_the_time_has_come_lets_the_shorter_ones_go_on(study, capsys):
    """The study's first invocation refuses a run that would end after --until; the one-seed invocations (a shorter,
    cut budget) still train before it, without the Why section; then the script stops to go on later."""
    def commands(until):
        return [["--skip", name, "--until", until, "--", "--data", "c"] for name in ("post_ln", "skip", "rskip_ln")]

    calls, after = [], []

    def sweep_main(argv):  # what nmt.sweep returns: the first invocation leaves a run for later
        calls.append(argv)
        return study.UNTIL_STATUS if argv[1] == "post_ln" and "--report-only" not in argv else 0

    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600))
    with pytest.raises(study.StoppedAtUntil, match=f"study: stopped at --until {future}"):
        study.run_study(commands(future), future, False, lambda: after.append(1), sweep_main)
    assert calls == [commands(future)[0],
                     ["--skip", "post_ln", "--until", future, "--report-only", "--no-why", "--", "--data", "c"],
                     ["--skip", "skip", "--until", future, "--no-why", "--", "--data", "c"],
                     ["--skip", "rskip_ln", "--until", future, "--no-why", "--", "--data", "c"]]
    assert len(after) == 3  # translated and kept after every invocation
    calls.clear()
    study.run_study(commands(future), future, False, lambda: None, lambda argv: calls.append(argv) or 0)
    assert calls == commands(future)  # nothing left: every invocation as given, with its Why section
    calls.clear()
    # the time has come: the runs were stopped by it, and nothing more starts
    past = "2000-01-01T08:00:00"
    with pytest.raises(study.StoppedAtUntil):
        study.run_study(commands(past), past, False, lambda: None, sweep_main)
    assert [c[1] for c in calls] == ["post_ln", "post_ln"] and "--report-only" in calls[1]
    capsys.readouterr()


def test_a_missing_heldout_source_is_named_before_anything_trains(study, tmp_path, capsys):
    missing = tmp_path / "nope.en"
    assert study.main(["--data", "corpus", "--out", str(tmp_path / "s"), "--heldout", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_the_light_copy_keeps_what_a_later_session_needs_and_no_checkpoint(study, tmp_path):
    out, state = tmp_path / "out", tmp_path / "state"
    files = {
        "pilot-long/pilot.md": "x", "pilot-long/.sweep.lock": "",
        "pilot-long/runs/a/results.json": "{}", "pilot-long/runs/a/metrics.csv": "m",
        "pilot-long/runs/a/checkpoints/best.ckpt": "w", "pilot-long/runs/a/tb/events": "t",
        "pilot-long/runs/a/spm.model": "s",
        "pilot-long/runs/b/config.yaml": "c",  # still training: left out
        "multi30k-converged/runs/c/results.json": "{}", "multi30k-converged/runs/c/best.ckpt": "w",
        "multi30k-converged/eval/c.json": "e", "multi30k-converged/eval/c.avg5.json": "e",
        "multi30k-converged/heldout/c/set.de": "h\n",
        "multi30k-converged/runs/d/results.json": "{}",  # ended but never scored: left out
        "multi30k-converged/eval/half.json": "e", "multi30k-converged/runs/half/results.json": "{}",  # no average,
        **{f"multi30k-converged/runs/half/checkpoints/step-{i}.ckpt": "w" for i in range(5)},  # though it could have
        # two periodic checkpoints: too few to average (a run cut short), scored on best.ckpt alone: kept
        "multi30k-converged/runs/f/results.json": "{}", "multi30k-converged/runs/f/checkpoints/step-1.ckpt": "w",
        "multi30k-converged/runs/f/checkpoints/step-2.ckpt": "w", "multi30k-converged/eval/f.json": "e",
        "multi30k-converged/heldout/f/set.de": "h\n",
        "multi30k-converged/runs/e/results.json": '{"diverged": true}',  # nothing to score: kept
        "multi30k-converged/report/README.md": "r", "budget.json": "{}",
    }
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    sources = [tmp_path / "set.en"]
    assert study.save_state(out, state, out / "multi30k-converged", sources) == 13
    kept = sorted(str(p.relative_to(state)) for p in state.rglob("*") if p.is_file())
    assert kept == sorted([
        "pilot-long/pilot.md", "pilot-long/runs/a/results.json", "pilot-long/runs/a/metrics.csv",
        "multi30k-converged/runs/c/results.json", "multi30k-converged/eval/c.json",
        "multi30k-converged/eval/c.avg5.json", "multi30k-converged/heldout/c/set.de",
        "multi30k-converged/eval/half.json", "multi30k-converged/runs/e/results.json", "budget.json",
        "multi30k-converged/runs/f/results.json", "multi30k-converged/eval/f.json", "multi30k-converged/heldout/f/set.de"])
    assert study.save_state(out, state, out / "multi30k-converged", sources) == 0  # nothing changed since
    # a fresh clone: the light copy restores what is missing and leaves what is there
    fresh = tmp_path / "fresh"
    (fresh / "pilot-long").mkdir(parents=True)
    (fresh / "pilot-long" / "pilot.md").write_text("newer")
    assert study.restore_state(state, fresh) == len(kept) - 1
    assert (fresh / "pilot-long" / "pilot.md").read_text() == "newer"
    assert (fresh / "multi30k-converged" / "heldout" / "c" / "set.de").read_text() == "h\n"


def test_every_ended_run_translates_the_heldout_sources_once(study, toy_runs, tmp_path, capsys):
    runs, _ = toy_runs
    out = tmp_path / "s"
    (out / "multi30k-converged" / "runs").mkdir(parents=True)
    (out / "multi30k-converged" / "runs" / "post_ln-lambda1-seed1").symlink_to(runs["post_ln"][0])
    (out / "multi30k-converged" / "runs" / "still-training").mkdir()  # no results.json: left alone
    stopped = out / "multi30k-converged" / "runs" / "stopped"  # stopped to be resumed: its best.ckpt may change
    (stopped / "checkpoints").mkdir(parents=True)
    (stopped / "checkpoints" / "best.ckpt").symlink_to(runs["post_ln"][0] / "checkpoints" / "best.ckpt")
    (stopped / "results.json").write_text('{"finished": false, "stopped": "SIGTERM"}')
    sources = [tmp_path / "one.en", tmp_path / "two.en"]
    sources[0].write_text("the cat sees a dog .\n\nthe dog runs .\n")  # an empty line stays an empty line
    sources[1].write_text("a bird sings .\n")
    args = study.build_parser().parse_args(["--out", str(out), "--threads", "1", "--parallel", "1"])
    assert study.translate_heldout(args, sources) == 1
    heldout = out / "multi30k-converged" / "heldout"
    assert sorted(p.name for p in heldout.iterdir()) == ["post_ln-lambda1-seed1"]
    one, two = (heldout / "post_ln-lambda1-seed1" / name for name in ("one.de", "two.de"))
    assert len(one.read_text().splitlines()) == 3 and one.read_text().splitlines()[1] == ""
    assert len(two.read_text().splitlines()) == 1 and two.read_text().strip()
    assert study.translate_heldout(args, sources) == 0  # complete: not translated again
    best = runs["post_ln"][0] / "checkpoints" / "best.ckpt"
    os.utime(one, (best.stat().st_mtime - 10,) * 2)  # older than best.ckpt: made by an earlier best, translated again
    assert study.translate_heldout(args, sources) == 1 and one.stat().st_mtime >= best.stat().st_mtime


def test_git_keeps_the_light_copy_of_the_study_with_its_runs_and_without_checkpoints():
    """The repository's own .gitignore ignores every runs/ folder: the light copy's runs must be kept all the same
    (they are the study's record across sessions), and a checkpoint never."""
    import shutil
    import subprocess

    root = SCRIPT.parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    state = "docs/study-multi30k-converged/state/multi30k-converged/runs/post_ln-lambda1-seed1"

    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=root).returncode == 0

    assert not ignored(f"{state}/results.json") and not ignored(f"{state}/metrics.csv")
    assert ignored(f"{state}/checkpoints/best.ckpt") and ignored("study/multi30k-converged/runs/x/results.json")


def test_publishing_puts_the_report_and_heldout_where_the_issue_asks_and_leaves_the_rest(study, tmp_path):
    out, docs = tmp_path / "s" / "multi30k-converged", tmp_path / "docs"
    sources = [tmp_path / "test_2017_flickr.en", tmp_path / "test_2018_flickr.en"]
    sources[0].write_text("a\nb\n")
    sources[1].write_text("c\n")
    with pytest.raises(study.StageError, match="holds no report"):
        study.publish(out, docs, sources)
    files = {"report/README.md": "r", "report/why_lesion.png": "p", "report/diagnosis/a/summary.md": "d",
             "heldout/a/test_2017_flickr.de": "x\ny\n", "heldout/a/test_2018_flickr.de": "z\n",
             "runs/a/results.json": "{}", "eval/a.json": "e",
             "heldout/b/test_2017_flickr.de": "x\n", "runs/b/results.json": "{}",  # one line short, one set missing
             "runs/c/config.yaml": "still training: not a row"}
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    (docs / "state").mkdir(parents=True)
    (docs / "plan.md").write_text("the plan")
    (docs / "state" / "budget.json").write_text("{}")
    assert study.publish(out, docs, sources) == 7
    published = sorted(str(p.relative_to(docs)) for p in docs.rglob("*") if p.is_file())
    assert published == [".published.json", "README.md", "diagnosis/a/summary.md", "heldout/README.md",
                         "heldout/a/test_2017_flickr.de", "heldout/a/test_2018_flickr.de",
                         "heldout/b/test_2017_flickr.de", "plan.md", "state/budget.json", "why_lesion.png"]
    assert (docs / "heldout" / "a" / "test_2017_flickr.de").read_text() == "x\ny\n"
    table = (docs / "heldout" / "README.md").read_text()
    assert "| run | test_2017_flickr.de (2 source lines) | test_2018_flickr.de (1 source lines) |" in table
    assert "| a | 2 | 1 |" in table and "| b | 1 (**not 2**) | missing |" in table and "| c |" not in table
    assert "**Not complete**" in table
    assert study.publish(out, docs, sources) == 0  # nothing changed
    # the report is written again without a figure and with a new README, b's translations complete: the figure
    # goes, the README is replaced, the table says complete, what publish never wrote stays
    (out / "report" / "why_lesion.png").unlink()
    (out / "report" / "README.md").write_text("r2")
    (out / "heldout" / "b" / "test_2017_flickr.de").write_text("x\ny\n")
    (out / "heldout" / "b" / "test_2018_flickr.de").write_text("z\n")
    (docs / "why_mine.png").write_text("kept")
    assert study.publish(out, docs, sources) == 5
    assert not (docs / "why_lesion.png").exists() and (docs / "README.md").read_text() == "r2"
    assert (docs / "why_mine.png").read_text() == "kept" and (docs / "plan.md").read_text() == "the plan"
    assert "Every run translated every source, each output as many lines as its source." in (
        docs / "heldout" / "README.md").read_text()
