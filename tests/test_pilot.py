"""The pilot (``python -m nmt.pilot``): the plateau rule by hand, the command line, and one real grid of two runs."""

import json
import subprocess
import sys

import pytest
from conftest import metrics, synthetic_corpus, train_command

from nmt.config import make_config, read_saved_config, save_config
from nmt.pilot import main
from nmt.pilot_summary import gains, markdown, plateau, study_budget, summarise

TRAIN = ["--data", "corpus", "--arch", "tiny", "--vocab-size", "400", "--max-tokens", "512", "--val-every", "10",
         "--log-every", "5"]


# ------------------------------------------------------------------------------------------- the plateau rule
def test_gains_compare_the_best_so_far_with_the_best_three_quarters_in():
    steps, bleus = [100, 200, 300, 400], [1.0, 5.0, 4.0, 6.0]
    # T=100: nothing at or before 75 → no gain; T=200: best(≤200)=5 − best(≤150)=1;
    # T=300: 5 − best(≤225)=5 → 0; T=400: 6 − best(≤300) = 6 − 5
    assert gains(steps, bleus) == [(200, 4.0), (300, 0.0), (400, 1.0)]


def test_plateau_is_where_the_gain_stays_below_the_threshold_to_the_end():
    steps = list(range(100, 1700, 100))
    bleus = [0.0, 0.0, 0.0, 2.0, 6.0, 10.0, 14.0, 17.0, 19.0, 20.0, 20.5, 20.8, 21.0, 21.1, 21.15, 21.2]
    found = dict(gains(steps, bleus))
    # by hand: T=1300: 21.0 − best(≤975)=19; T=1400: 21.1 − 20; T=1500: 21.15 − 20.5; T=1600: 21.2 − 20.8
    assert [round(found[t], 2) for t in (200, 300, 1300, 1400, 1500, 1600)] == [0, 0, 2.0, 1.1, 0.65, 0.4]
    # the flat start (BLEU 0 up to update 300: gain 0) does not count, the rise after it does
    assert plateau(steps, bleus, gain=1.0) == 1500 and plateau(steps, bleus, gain=0.5) == 1600
    assert plateau(steps, bleus, gain=0.3) is None  # the last quarter still gains 0.4: not flat yet
    assert plateau([], []) is None and plateau([100], [3.0]) is None


def fake_run(out, name, skip, lr, bleus, diverged=False, losses=None, finished=True):
    """A run folder as train.py leaves it: config.yaml, metrics.csv with validations every 100 updates (validation
    loss 9 − BLEU/10 unless ``losses`` are given), results.json."""
    run = out / "runs" / name
    run.mkdir(parents=True)
    save_config(make_config({"skip": skip, "lam": 2.0 if skip == "rskip_ln" else 1.0, "lr": lr, "warmup": 100}),
                run / "config.yaml")
    losses = losses or [9 - b / 10 for b in bleus]
    rows = ["step,train/loss,val/loss,val/bleu"] + [f"{100 * (i + 1)},,{loss},{b}"
                                                    for i, (b, loss) in enumerate(zip(bleus, losses))]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")
    record = {"finished": finished and not diverged, "diverged": diverged, "steps": 100 * len(bleus),
              "diverged_at_step": 250 if diverged else None}
    (run / "results.json").write_text(json.dumps(record))


def test_a_pilot_of_one_setting_does_not_claim_to_have_chosen_it(tmp_path):
    """A long run at a setting chosen before (a grid elsewhere, or --setting): its pilot.md says so, and still
    gives the budget; a rival variant at another learning rate does not make it a choice."""
    fake_run(tmp_path, "a", "post_ln", 1e-3, [5.0, 20.0, 20.1, 20.1, 20.2])
    fake_run(tmp_path, "b", "rskip_ln", 2e-3, [6.0, 21.0])
    text = markdown(summarise(tmp_path, gain=0.3, baseline="post_ln"))
    assert ("Setting: peak learning rate **0.001**, warm-up **100**, the only one of post_ln this pilot trains: "
            "chosen before it (by a grid, or given), not here (run a). Budget: that run's plateau is at update "
            "**300**") in text
    assert "Chosen:" not in text and "highest validation BLEU" not in text


def test_the_choice_is_the_baselines_best_run_that_did_not_diverge(tmp_path):
    fake_run(tmp_path, "a", "post_ln", 1e-3, [5.0, 20.0, 19.0])
    fake_run(tmp_path, "b", "post_ln", 2e-3, [8.0, 24.0, 25.5])
    fake_run(tmp_path, "c", "post_ln", 4e-3, [9.0, 30.0], diverged=True)
    fake_run(tmp_path, "d", "rskip_ln", 4e-3, [10.0, 31.0, 32.0])  # not the baseline
    fake_run(tmp_path, "e", "post_ln", 8e-3, [0.02, 0.0, 0.01, 0.0])  # stuck: flat, but not a plateau
    fake_run(tmp_path, "f", "rskip_ln", 8e-3, [0.3], finished=False)  # just started
    summary = summarise(tmp_path, gain=0.3, baseline="post_ln")
    assert summary["baseline"] == "post_ln" and summary["chosen"] == {"run": "b", "lr": 2e-3, "warmup": 100}
    # the baseline is the one named, not the first run: rskip_ln's best is d
    assert summarise(tmp_path, gain=0.3, baseline="rskip_ln")["chosen"]["run"] == "d"
    rows = {r["run"]: r for r in summary["runs"]}
    assert (rows["b"]["best_bleu"], rows["b"]["best_step"], rows["a"]["best_step"]) == (25.5, 300, 200)
    assert rows["a"]["plateau"] == 300 and rows["b"]["plateau"] is None  # a lost 1 BLEU at its end, b gained 1.5
    text = markdown(summary)
    assert "| post_ln | 0.004 | 100 | 30.00 @ 200 | 6.000 | 200 | — | diverged at update 250 |" in text
    assert rows["e"]["plateau"] is None and "| 400 | — | finished, never learned (BLEU < 1) |" in text
    assert "| 100 | — | unfinished, not learned yet (BLEU < 1) |" in text
    assert "Chosen: peak learning rate **0.002**, warm-up **100**" in text
    # the budget is the chosen run's plateau: b still gains over its last quarter, so there is none yet
    assert summary["budget"] is None and "No budget yet: that run still gains 0.3 BLEU or more" in text


def test_when_no_run_learned_the_choice_is_the_lowest_validation_loss_not_the_noise_in_bleu(tmp_path):
    fake_run(tmp_path, "a", "post_ln", 5e-4, [0.01, 0.02], losses=[6.9, 6.8])  # the "best" BLEU: noise
    fake_run(tmp_path, "b", "post_ln", 2e-3, [0.0, 0.01], losses=[6.0, 5.5])
    fake_run(tmp_path, "c", "post_ln", 4e-3, [0.0, 0.0], losses=[5.0, 4.0], diverged=True)
    summary = summarise(tmp_path, gain=0.3, baseline="post_ln")
    assert summary["chosen"]["run"] == "b"
    assert "(the lowest last validation loss of post_ln, none of whose runs learned, run b)" in markdown(summary)
    fake_run(tmp_path, "d", "post_ln", 1e-3, [0.5, 1.5], losses=[7.0, 6.9])  # learned: ahead of every run that did not
    assert summarise(tmp_path, gain=0.3, baseline="post_ln")["chosen"]["run"] == "d"


def test_a_choice_on_the_edge_of_the_grid_is_flagged(tmp_path):
    fake_run(tmp_path, "a", "post_ln", 5e-4, [8.0, 24.0, 25.5])
    fake_run(tmp_path, "b", "post_ln", 1e-3, [5.0, 20.0, 21.0])
    fake_run(tmp_path, "c", "rskip_ln", 2.5e-4, [9.0, 30.0, 31.0])  # not the baseline: not part of its grid
    summary = summarise(tmp_path, gain=0.3, baseline="post_ln")
    assert summary["chosen"]["lr"] == 5e-4 and summary["edge"] == ["lowest peak learning rate (0.0005)"]
    assert "**On the edge of the grid**: the lowest peak learning rate (0.0005) of those tried" in markdown(summary)
    fake_run(tmp_path, "d", "post_ln", 2.5e-4, [4.0, 15.0, 18.0])  # the grid extended below: now inside it
    summary = summarise(tmp_path, gain=0.3, baseline="post_ln")
    assert summary["chosen"]["run"] == "a" and summary["edge"] == []
    assert "edge of the grid" not in markdown(summary)


def test_the_budget_is_the_plateau_of_the_baselines_long_run(tmp_path):
    fake_run(tmp_path, "long", "post_ln", 1e-3, [0.0, 0.0, 0.0, 2.0, 6.0, 10.0, 14.0, 17.0, 19.0, 20.0, 20.5, 20.8,
                                                21.0, 21.1, 21.15, 21.2])
    fake_run(tmp_path, "other", "rskip_ln", 1e-3, [5.0, 15.0, 21.0, 23.0, 23.1, 23.1, 23.1, 23.1])
    summary = summarise(tmp_path, gain=0.5, baseline="post_ln")
    rows = {r["run"]: r for r in summary["runs"]}
    assert rows["other"]["plateau"] == 600 and summary["budget"] == 1600  # post_ln's plateau, as in the rule's test
    assert "Budget: that run's plateau is at update **1,600**: a study at this setting trains `--max-steps 1600`" \
        in markdown(summary)


def test_the_study_budget_follows_the_plans_rules(tmp_path):
    fake_run(tmp_path, "long", "post_ln", 1e-3, [0.0, 0.0, 0.0, 2.0, 6.0, 10.0, 14.0, 17.0, 19.0, 20.0, 20.5, 20.8,
                                                21.0, 21.1, 21.15, 21.2])
    fake_run(tmp_path, "short", "post_ln", 2e-3, [1.0, 5.0, 9.0])  # still gaining: no plateau
    rows = {r["run"]: r for r in summarise(tmp_path, gain=0.5, baseline="post_ln")["runs"]}
    rules = {"val_every": 60, "patience": 4, "full_runs": 12, "cut_runs": 5}
    # plateau 1,600 → 1,620; half the best (10.6) first reached at 700 → 720; 17 × 1,620 = 27,540 updates fit
    assert study_budget(rows["long"], capacity=30_000, **rules) == {
        "max_steps": 1620, "patience": 4, "patience_from": 720, "cut_max_steps": None, "needed": 27_540,
        "capacity": 30_000, "over_capacity": 0}
    # they do not fit: the five one-seed runs get what the twelve leave ((22,000 − 19,440) / 5 → 480), but never
    # less than U + P·60 = 960, so the study needs 19,440 + 5 × 960 = 24,240
    cut = study_budget(rows["long"], capacity=22_000, **rules)
    assert (cut["cut_max_steps"], cut["needed"], cut["over_capacity"]) == (960, 24_240, 2_240)
    roomy = study_budget(rows["long"], capacity=26_000, **rules)  # leaves 1,312 → 1,260 a one-seed run
    assert (roomy["cut_max_steps"], roomy["over_capacity"]) == (1260, 0)
    with pytest.raises(ValueError, match="short: no plateau yet"):
        study_budget(rows["short"], capacity=30_000, **rules)


# ------------------------------------------------------------------------------------------- the command line
def test_flags_the_pilot_sets_are_refused_after_the_separator(capsys, tmp_path):
    code = main(["--skip", "post_ln", "--lr", "1e-3", "--warmup", "100", "--out", str(tmp_path), "--", "--lr", "2e-3"])
    assert code == 2 and "--lr after --: the pilot sets it" in capsys.readouterr().err


def test_dry_run_plans_every_variant_at_every_grid_point(capsys, tmp_path):
    code = main(["--skip", "post_ln,rskip_ln", "--lambda", "1,2", "--lr", "5e-4,1e-3", "--warmup", "100,400",
                 "--out", str(tmp_path / "p"), "--dry-run"])
    printed = capsys.readouterr().out
    assert code == 0 and "each at peak lr 0.0005, 0.001 × warm-up 100, 400: 8 runs" in printed
    assert "same   rskip_ln λ=1 is the same model as post_ln" in printed
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------------------------------- a real grid
@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pilot")
    synthetic_corpus(folder / "corpus", 400, 20, 20)
    _, env = train_command([], folder / "data", threads=1)
    command = [sys.executable, "-m", "nmt.pilot", "--skip", "post_ln", "--lr", "3e-3,1e-5", "--warmup", "10",
               "--max-steps", "40", "--out", "pilot", "--parallel", "2", "--threads", "1", "--", *TRAIN]
    first = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600,
                           check=False)
    again = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600,
                           check=False)
    return {"out": folder / "pilot", "first": first, "again": again}


def test_grid_trains_each_point_and_chooses_the_best_validation_bleu(grid):
    first = grid["first"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summary = json.loads((grid["out"] / "pilot.json").read_text())
    names = [r["run"] for r in summary["runs"]]
    assert names == ["post_ln-lambda1-seed1-lr0.003-warmup10", "post_ln-lambda1-seed1-lr1e-05-warmup10"]
    for row in summary["runs"]:
        logged = [r for r in metrics(grid["out"] / "runs" / row["run"]) if r.get("val/bleu")]
        assert row["steps"] == [int(r["step"]) for r in logged] == [10, 20, 30, 40]
        assert row["best_bleu"] == max(float(r["val/bleu"]) for r in logged)
        config = (grid["out"] / "runs" / row["run"] / "config.yaml").read_text()
        assert read_saved_config(grid["out"] / "runs" / row["run"] / "config.yaml").lr == row["lr"]
        assert "warmup: 10\n" in config
    fast, slow = summary["runs"]
    # 40 updates of the tiny model: no BLEU yet (0 for both), so the lower validation loss decides
    assert fast["best_bleu"] == slow["best_bleu"] == 0 and fast["final_loss"] < slow["final_loss"]
    assert summary["chosen"]["run"] == fast["run"]
    text = (grid["out"] / "pilot.md").read_text()
    assert "Chosen: peak learning rate **0.003**, warm-up **10**" in text
    assert "chosen: --lr 0.003 --warmup 10" in first.stdout


def test_rerun_trains_nothing_again(grid):
    again = grid["again"]
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "2 of 2 runs already done (finished or diverged); 0 to train" in again.stdout


def test_figure_is_drawn_when_matplotlib_is_there(grid):
    pytest.importorskip("matplotlib")
    assert (grid["out"] / "pilot.png").stat().st_size > 10_000
    assert "![validation curves](pilot.png)" in (grid["out"] / "pilot.md").read_text()


# ------------------------------------------------------------------------------------------- in the study's report
def test_the_study_report_shows_its_pilots_and_checks_the_study_against_them(tmp_path, capsys):
    from nmt.pilot_summary import write
    from nmt.report.cli import main as report_main
    from nmt.report.readme import pilot_sections, sweep_record

    grid, long = tmp_path / "pilot-grid", tmp_path / "pilot-long"
    fake_run(grid, "g1", "post_ln", 1e-3, [5.0, 20.0, 19.0])
    fake_run(grid, "g2", "post_ln", 2e-3, [8.0, 24.0, 25.5])
    write(grid, 0.3, "post_ln")
    argv = ["--skip", "post_ln", "--lr", "1e-3,2e-3", "--warmup", "100", "--out", "pilot-grid"]
    (grid / "sweep.json").write_text(json.dumps({"invocations": [{"argv": argv}, {"argv": argv}]}))
    fake_run(long, "long", "post_ln", 2e-3, [0.0, 0.0, 0.0, 2.0, 6.0, 10.0, 14.0, 17.0, 19.0, 20.0, 20.5, 20.8,
                                             21.0, 21.1, 21.15, 21.2])
    write(long, 0.5, "post_ln")  # the pilot's own --plateau-gain is the one the report uses: plateau at 1600

    def study(lr, max_steps):
        out = tmp_path / f"study-{lr:g}-{max_steps}"
        fake_run(out, "post_ln-lambda1-seed1", "post_ln", lr, [1.0])
        (out / "sweep.json").write_text(json.dumps({"settings": {"max_steps": max_steps}, "invocations": []}))
        (out / "report").mkdir()
        return out

    out = study(2e-3, 1600)
    max_steps = sweep_record(out)["settings"]["max_steps"]  # as the report's build reads it
    lines, data = pilot_sections(out, out / "report", [grid, long], max_steps)
    text = "\n".join(lines)
    assert text.startswith("## How the setting and budget were chosen: the pilot")
    assert text.index("### pilot-grid") < text.index("### pilot-long")
    assert f"- `python -m nmt.pilot {' '.join(argv)}` (run 2 times: each rerun went on" in text
    assert "Chosen: peak learning rate **0.002**, warm-up **100**" in text  # pilot.md's own text, its title left out
    assert "# Pilot:" not in text
    assert text.count("The study trains at this setting (`--lr 0.002 --warmup 100`).") == 2
    assert "The study's budget is `--max-steps 1600`, this plateau." in text
    assert [d["folder"] for d in data] == [str(grid), str(long)] and data[1]["budget"] == 1600
    if (out / "report" / "pilot_pilot-grid.png").is_file():  # with matplotlib: each pilot's curves, in the report
        assert "![pilot_pilot-grid.png](pilot_pilot-grid.png)" in text

    other = study(1e-3, 1200)
    lines, _ = pilot_sections(other, other / "report", [grid, long], sweep_record(other)["settings"]["max_steps"])
    text = "\n".join(lines)
    assert "**The study does not train at this setting**: its runs have `--lr 0.001 --warmup 100`." in text
    assert "The study's budget is `--max-steps 1200`; this pilot's plateau: 1,600." in text

    assert report_main([str(out), "--pilot", str(tmp_path / "nowhere")]) == 2
    assert f"--pilot {tmp_path / 'nowhere'}: no pilot.json there" in capsys.readouterr().err
