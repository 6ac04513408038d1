"""``python -m nmt.pilot``: fix a study's training setting on the validation set before the study runs.

    python -m nmt.pilot --config configs/multi30k.yaml --skip post_ln --lr 5e-4,1e-3,2e-3 --warmup 1000,4000 \\
        --max-steps 600 --out study/pilot-grid [--parallel 2] [-- other train.py flags]

Why: "variant A beats Post-LN" means little if Post-LN got a bad learning rate. A careful comparison tunes the
baseline's peak learning rate and warm-up on a small grid of short runs, then trains every variant with that one
setting, for a budget at which the baseline has stopped improving. This tool does both halves, judged on the
*validation* set (the greedy BLEU and loss that train.py logs at every validation), never on the test set:

- **The grid.** Every ``--skip`` × ``--lambda`` (as the sweep plans them) × ``--lr`` × ``--warmup`` is one train.py
  run of seed ``--seed``, in ``OUT/runs/<skip>-lambda<λ>-seed<s>-lr<lr>-warmup<w>``, run like the sweep's runs
  (``--parallel K``, one shared preset and flags, resumable: rerun the same command until it has finished).
- **The choice.** The grid point whose run of the first ``--skip`` (the baseline) reaches the highest validation
  BLEU; a diverged run is never chosen.
- **The budget** (``plateau``): for a run long enough to flatten out, the first validation from which on the best
  validation BLEU so far gains less than ``--plateau-gain`` over the last quarter of the run so far; a study's
  ``--max-steps`` is chosen there. Train one long run per variant with the chosen setting (a grid of one point):
  pilot.md states the budget, the plateau of the baseline's run (none while it still gains).

Writes ``OUT/pilot.md`` (the table, the choice, the budget), ``OUT/pilot.json`` and ``OUT/pilot.png`` (validation
BLEU and loss against updates, one line per run); ``--report-only`` rewrites them from the runs there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from nmt import atomic, sweep
from nmt.config import TrainConfig, read_saved_config
from nmt.evaluate import read_results
from nmt.plotting import legend_below, pyplot, save_figure
from nmt.report import metric_series, read_metrics
from nmt.tables import MISSING, cell, markdown_table

QUARTER = 0.25
"""The share of a run over which ``plateau`` measures the gain."""


def gains(steps: list[int], bleus: list[float], quarter: float = QUARTER) -> list[tuple[int, float]]:
    """[(T, best BLEU of the validations up to T − best of those up to (1 − quarter)·T)] for every validation T
    with at least one validation at or before (1 − quarter)·T."""
    out = []
    for i, t in enumerate(steps):
        early = [b for s, b in zip(steps[: i + 1], bleus) if s <= (1 - quarter) * t]
        if early:
            out.append((t, max(bleus[: i + 1]) - max(early)))
    return out


def plateau(steps: list[int], bleus: list[float], gain: float = 0.3, quarter: float = QUARTER) -> int | None:
    """The first validation update T from which on (to the end of the run) the best validation BLEU gains less than
    ``gain`` over the last ``quarter`` of the run: the budget at which more updates stopped paying. None while the
    run's last quarter still gains ``gain`` or more (not flat yet: train longer)."""
    found = None
    for t, g in reversed(gains(steps, bleus, quarter)):
        if g >= gain:
            break
        found = t
    return found


def grid_runs(plan: sweep.Plan, lrs: list[float], warmups: list[int]) -> list[sweep.Run]:
    """Every run of the sweep's ``plan`` once per grid point (peak learning rate, warm-up)."""
    return [sweep.Run(run.skip, run.lam, run.seed, (("--lr", f"{lr:g}"), ("--warmup", str(warmup))))
            for run in plan.runs for lr in lrs for warmup in warmups]


def summarise(out: Path, gain: float, baseline: str) -> dict:
    """Every run in OUT/runs: its setting, validation curve, best validation BLEU and plateau; the choice among the
    runs of ``baseline`` (a --skip name)."""
    rows = []
    runs_dir = out / "runs"
    for run in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if not (run / "config.yaml").is_file():
            continue
        cfg, record = read_saved_config(run / "config.yaml"), read_results(run)
        metrics = read_metrics(run)
        steps, bleus = metric_series(metrics, "val/bleu")
        loss_steps, losses = metric_series(metrics, "val/loss")
        best = max(range(len(bleus)), key=lambda i: (bleus[i], -steps[i])) if bleus else None
        rows.append({
            "run": run.name, "skip": cfg.skip, "lambda": cfg.lam, "lr": cfg.lr, "warmup": cfg.warmup,
            "steps": steps, "bleu": bleus, "loss_steps": loss_steps, "loss": losses,
            "best_bleu": None if best is None else bleus[best], "best_step": None if best is None else steps[best],
            "last_step": record.get("steps", steps[-1] if steps else None), "finished": bool(record.get("finished")),
            "diverged": bool(record.get("diverged")), "diverged_at": record.get("diverged_at_step"),
            "wall_time_s": record.get("wall_time_s"), "plateau": plateau(steps, bleus, gain),
            "final_loss": losses[-1] if losses else None})
    candidates = [r for r in rows if r["skip"] == baseline and not r["diverged"] and r["best_bleu"] is not None]
    chosen = max(candidates, key=lambda r: (r["best_bleu"], -(r["final_loss"] or 0.0)), default=None)
    return {"runs": rows, "baseline": baseline, "chosen": chosen and {k: chosen[k] for k in ("run", "lr", "warmup")},
            "budget": chosen and chosen["plateau"], "plateau_gain": gain, "quarter": QUARTER}


def markdown(summary: dict) -> str:
    """OUT/pilot.md: the grid's table, the choice and the plateau of every run."""
    cells = []
    for r in summary["runs"]:
        state = (f"diverged at update {r['diverged_at']}" if r["diverged"] else "finished" if r["finished"]
                 else "unfinished")
        best = MISSING if r["best_bleu"] is None else f"{r['best_bleu']:.2f} @ {r['best_step']:,}"
        flat = MISSING if r["plateau"] is None else f"{r['plateau']:,}"
        wall = MISSING if r["wall_time_s"] is None else f"{r['wall_time_s'] / 60:.0f} min"
        cells.append([r["skip"] + (f" λ={r['lambda']:g}" if r["lambda"] != 1 else ""), f"{r['lr']:g}",
                      str(r["warmup"]), best, cell(r["final_loss"], ".3f"), cell(r["last_step"], ","), flat, state,
                      wall])
    table = markdown_table(["variant", "peak lr", "warm-up", "best valid BLEU @ update", "last valid loss",
                            "updates", f"plateau (gain < {summary['plateau_gain']:g})", "state", "wall time"], cells)
    chosen = summary["chosen"]
    choice = (f"Chosen: peak learning rate **{chosen['lr']:g}**, warm-up **{chosen['warmup']}** (the highest "
              f"validation BLEU of {summary['baseline']}, run {chosen['run']})." if chosen else
              "No setting chosen yet: no run of the baseline has a validation BLEU.")
    if chosen and summary.get("budget"):
        choice += (f" Budget: that run's plateau is at update **{summary['budget']:,}**: a study at this setting "
                   f"trains `--max-steps {summary['budget']}`.")
    elif chosen:
        choice += (f" No budget yet: that run still gains {summary['plateau_gain']:g} BLEU or more over its last "
                   "quarter (train it longer, e.g. as a grid of this one point).")
    rule = (f"Plateau: the first validation from which on the best validation BLEU so far gains less than "
            f"{summary['plateau_gain']:g} over the last {summary['quarter']:.0%} of the run so far (— : still "
            "gaining at the run's end).")
    return f"# Pilot: the training setting, chosen on the validation set\n\n{table}\n\n{choice}\n\n{rule}\n"


def figure(out: Path, summary: dict, name: str = "pilot.png") -> str | None:
    """OUT/pilot.png (or ``name``): validation BLEU and loss against updates, one line per run (None without
    matplotlib)."""
    plt = pyplot()
    if plt is None or not summary["runs"]:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    palette = plt.get_cmap("tab10" if len(summary["runs"]) <= 10 else "tab20")
    for i, r in enumerate(summary["runs"]):
        label = (r["skip"] + (f" λ={r['lambda']:g}" if r["lambda"] != 1 else "") +
                 f", lr {r['lr']:g}, warm-up {r['warmup']}")
        style = {"color": palette(i % palette.N), "marker": ".", "label": label}
        axes[0].plot(r["steps"], r["bleu"], **style)
        axes[1].plot(r["loss_steps"], r["loss"], **style)
        if r["plateau"] is not None:
            axes[0].axvline(r["plateau"], color=style["color"], linestyle=":", linewidth=1)
    for ax, title in zip(axes, ("validation BLEU (greedy; dotted: plateau)", "validation loss (label-smoothed)")):
        ax.set_xlabel("update")
        ax.set_title(title)
    entries = list(zip(*axes[0].get_legend_handles_labels()))
    legend_below(fig, entries, ncol=3)
    return save_figure(plt, fig, out / name, dpi=120)


def write(out: Path, gain: float, baseline: str) -> dict:
    """OUT/pilot.md, pilot.json and pilot.png from the runs in OUT/runs; returns the summary."""
    summary = summarise(out, gain, baseline)
    picture = figure(out, summary)
    text = markdown(summary) + (f"\n![validation curves]({picture})\n" if picture else
                                "\n(figure left out: matplotlib is not installed)\n")
    atomic.write_text(out / "pilot.md", text)
    atomic.write_text(out / "pilot.json", json.dumps(summary, indent=2) + "\n")
    return summary


def in_report(pilot_dir: Path, folder: Path, study: TrainConfig | None,
              study_max_steps: int | None) -> tuple[str, dict]:
    """The pilot in ``pilot_dir`` as a section of a study's report written into ``folder`` (``--pilot`` of
    ``nmt.report`` and ``nmt.sweep``): its commands, its table, choice and budget read afresh from its runs, its
    curves as ``folder/pilot_<name>.png``, and whether the study trains at the chosen setting and budget
    (``study``: the config of one of the study's runs; ``study_max_steps``: the study's ``--max-steps``).
    Returns (Markdown, the summary); raises ValueError for a folder without ``pilot.json``."""
    from nmt.report import distinct_commands

    try:
        written = json.loads((pilot_dir / "pilot.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--pilot {pilot_dir}: no readable pilot.json ({e}); python -m nmt.pilot --out "
                         f"{pilot_dir} writes it") from None
    summary = summarise(pilot_dir, written.get("plateau_gain", 0.3), written["baseline"])
    record = json.loads((pilot_dir / "sweep.json").read_text()) if (pilot_dir / "sweep.json").is_file() else {}
    commands = [f"- `python -m nmt.pilot {' '.join(argv)}`" + (f" (run {times} times)" if times > 1 else "")
                for argv, times, _ in distinct_commands(record.get("invocations", []))]
    checks, chosen, budget = [], summary["chosen"], summary["budget"]
    if chosen and study is not None:
        same = math.isclose(study.lr, chosen["lr"], rel_tol=1e-9) and study.warmup == chosen["warmup"]
        checks.append(f"The study trains at this setting (`--lr {study.lr:g} --warmup {study.warmup}`)." if same else
                      f"**The study does not train at this setting**: its runs have `--lr {study.lr:g} --warmup "
                      f"{study.warmup}`.")
    if budget and study_max_steps:
        checks.append(f"The study's budget is `--max-steps {study_max_steps}`"
                      + (", this plateau." if study_max_steps == budget else f"; this pilot's plateau: {budget:,}."))
    picture = figure(folder, summary, f"pilot_{pilot_dir.name}.png")
    body = markdown(summary).split("\n", 2)[2]  # without its title: the report gives it one
    text = "\n".join([f"### {pilot_dir.name}", "", *commands, "", body.rstrip("\n"), *([""] + checks if checks else []),
                      *(["", f"![{picture}]({picture})"] if picture else [])])
    return text, summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nmt.pilot", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a grid of peak learning rate × warm-up for each variant and judge it on validation BLEU; "
        "read off the update at which a run stops improving. Flags after -- go to every train.py run.",
        epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--skip", type=sweep.comma_list(str), required=True,
                   help="comma-separated variants; the first is the baseline the setting is chosen for")
    p.add_argument("--lambda", dest="lambdas", type=sweep.comma_list(float), default=[1.0],
                   help="comma-separated λ values, as the sweep's (default: 1)")
    p.add_argument("--seed", type=int, default=1, help="the seed of every run (default: 1)")
    p.add_argument("--lr", type=sweep.comma_list(float), required=True, help="comma-separated peak learning rates")
    p.add_argument("--warmup", type=sweep.comma_list(int), required=True,
                   help="comma-separated warm-up lengths (updates)")
    p.add_argument("--out", type=Path, required=True, help="the pilot's folder: runs/, logs/, pilot.md")
    p.add_argument("--plateau-gain", type=float, default=0.3,
                   help="BLEU that the last quarter of a run must gain to count as still improving (default: 0.3)")
    sweep.add_run_args(p)
    p.add_argument("--report-only", action="store_true", help="train nothing: rewrite pilot.md from the runs there")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = sweep.parse_args(argv, build_parser(), (*sweep.RESERVED, "--lr", "--warmup"), who="pilot", hint="")
        args.seeds = [args.seed]  # what sweep.record_invocation records
        plan = sweep.make_plan(args.skip, args.lambdas, [args.seed])
    except sweep.SweepError as e:
        print(f"pilot: error: {e}", file=sys.stderr)
        return 2
    print(plan.describe(), flush=True)
    plan = sweep.Plan(runs=grid_runs(plan, args.lr, args.warmup))
    print(f"each at peak lr {', '.join(f'{x:g}' for x in args.lr)} × warm-up {', '.join(map(str, args.warmup))}: "
          f"{len(plan.runs)} runs", flush=True)
    if args.dry_run:
        return 0
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    lock_fd = sweep.lock_study(out)
    if not args.report_only:
        started = time.time()
        try:
            sweep.record_invocation(out, args, argv)
        except sweep.SweepError as e:
            print(f"pilot: error: {e}", file=sys.stderr)
            return 2
        _, signum = sweep.train_all(plan, args, out, lock_fd)
        sweep.finish_invocation(out, started)
        if signum is not None:
            print("pilot stopped; rerun the same command to continue", flush=True)
            return 128 + signum
    summary = write(out, args.plateau_gain, args.skip[0])
    chosen = summary["chosen"]
    print(f"{out / 'pilot.md'} written" + (f"; chosen: --lr {chosen['lr']:g} --warmup {chosen['warmup']}"
                                            if chosen else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
