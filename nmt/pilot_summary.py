"""What a pilot's runs show (``nmt.pilot``): the plateau rule, the chosen setting, the budget.

Read from the runs' own files (config.yaml, metrics.csv, results.json), never from the test set:

- ``plateau``: for a run long enough to flatten out, the first validation from which on the best validation BLEU
  so far gains less than a threshold over the last quarter of the run so far (``gains``);
- ``summarise``: every run's setting, validation curve, best validation BLEU and plateau, the choice (the
  baseline's run with the highest validation BLEU, or the lowest validation loss when none learned; a diverged run
  is never chosen) and the budget (that run's
  plateau);
- ``study_budget``: a study's ``--max-steps``, ``--patience-from`` and the one-seed runs' cut from the baseline's
  long run, by the rules of the study's plan;
- ``write``: ``OUT/pilot.md``, ``pilot.json``, ``pilot.png``; ``in_report``: the same as a section of a study's
  report (``--pilot`` of ``nmt.report``/``nmt.sweep``), checked against the study's runs.

Kept apart from ``nmt.pilot`` (which trains the grid through ``nmt.sweep``) so that the report can show a pilot
without depending on the sweep that calls it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from nmt import atomic
from nmt.config import TrainConfig, read_saved_config
from nmt.evaluate import read_results
from nmt.metrics_csv import metric_series, read_metrics
from nmt.plotting import legend_below, pyplot, save_figure
from nmt.tables import MISSING, cell, markdown_table

QUARTER = 0.25
"""The share of a run over which ``plateau`` measures the gain."""

LEARNED = 1.0
"""The validation BLEU a run must reach to count as having learned: one that never does (a Post-LN stuck at its
unigram loss) has no plateau, though its flat curve would pass the rule."""


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


def merit(run: dict) -> tuple:
    """How ``summarise`` ranks the baseline's runs: those that learned by their best validation BLEU (ties: the lower
    last validation loss); below them, those that never learned by their last validation loss alone, since a BLEU
    under ``LEARNED`` is noise (0.02 against 0.01) while the loss still says which setting got furthest."""
    loss = run["final_loss"] if run["final_loss"] is not None else math.inf
    learned = run["best_bleu"] >= LEARNED
    return (learned, run["best_bleu"] if learned else 0.0, -loss)


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
            "wall_time_s": record.get("wall_time_s"),
            "plateau": plateau(steps, bleus, gain) if bleus and max(bleus) >= LEARNED else None,
            "final_loss": losses[-1] if losses else None})
    candidates = [r for r in rows if r["skip"] == baseline and not r["diverged"] and r["best_bleu"] is not None]
    chosen = max(candidates, key=merit, default=None)
    return {"runs": rows, "baseline": baseline, "chosen": chosen and {k: chosen[k] for k in ("run", "lr", "warmup")},
            "budget": chosen and chosen["plateau"], "plateau_gain": gain, "quarter": QUARTER,
            "edge": grid_edge(chosen, [r for r in rows if r["skip"] == baseline])}


def study_budget(run: dict, val_every: int, patience: int, capacity: int, full_runs: int, cut_runs: int) -> dict:
    """A study's stopping flags from the baseline's long pilot ``run`` (a row of ``summarise``), by rules fixed
    before that run was seen (docs/study-multi30k-converged/plan.md):

    - ``max_steps`` T: the run's plateau, rounded up to a multiple of ``val_every``;
    - ``patience`` P: as given; ``patience_from`` U: the first validation with at least half the run's best
      validation BLEU, rounded up to a multiple of ``val_every`` (a slow start is never stopped as a plateau);
    - the cut, when ``full_runs`` + ``cut_runs`` runs of T updates exceed ``capacity`` (the updates the study's
      hours allow): the ``cut_runs`` get ``cut_max_steps`` T1 = the larger of U + P·``val_every`` and what is left
      after the ``full_runs``, at most T (a multiple of ``val_every``); ``over_capacity`` is what the study still
      needs beyond ``capacity`` (the full runs are never cut below the baseline's plateau).

    Raises ValueError for a run without a plateau (still gaining at its end: train it longer)."""
    if run.get("plateau") is None or not run.get("bleu"):
        raise ValueError(f"{run.get('run')}: no plateau yet (its validation BLEU still gains over the last quarter)")

    def up(n: int) -> int:
        return -(-n // val_every) * val_every

    t = up(run["plateau"])
    u = up(next(s for s, b in zip(run["steps"], run["bleu"]) if b >= run["best_bleu"] / 2))
    cut = None
    if (full_runs + cut_runs) * t > capacity:
        left = (capacity - full_runs * t) // cut_runs // val_every * val_every
        cut = min(t, max(u + patience * val_every, left))
    needed = full_runs * t + cut_runs * (t if cut is None else cut)
    return {"max_steps": t, "patience": patience, "patience_from": u, "cut_max_steps": cut,
            "needed": needed, "capacity": capacity, "over_capacity": max(0, needed - capacity)}


def grid_edge(chosen: dict | None, runs: list[dict]) -> list[str]:
    """Where the chosen run sits on the edge of the grid the baseline's ``runs`` span: "lowest lr", "highest
    warmup", … for each setting the grid varies (two values or more). A choice on the edge says the best may lie
    beyond the grid: extend it that way before trusting the choice."""
    if chosen is None:
        return []
    edge = []
    for key, name in (("lr", "peak learning rate"), ("warmup", "warm-up")):
        values = sorted({r[key] for r in runs})
        if len(values) > 1 and chosen[key] in (values[0], values[-1]):
            edge.append(f"{'lowest' if chosen[key] == values[0] else 'highest'} {name} ({chosen[key]:g})")
    return edge


def markdown(summary: dict) -> str:
    """OUT/pilot.md: the grid's table, the choice and the plateau of every run."""
    cells = []
    for r in summary["runs"]:
        state = (f"diverged at update {r['diverged_at']}" if r["diverged"] else "finished" if r["finished"]
                 else "unfinished")
        if r["best_bleu"] is not None and r["best_bleu"] < LEARNED:  # an unfinished run may learn yet
            ended = r["finished"] or r["diverged"]
            state += f", {'never learned' if ended else 'not learned yet'} (BLEU < {LEARNED:g})"
        best = MISSING if r["best_bleu"] is None else f"{r['best_bleu']:.2f} @ {r['best_step']:,}"
        flat = MISSING if r["plateau"] is None else f"{r['plateau']:,}"
        wall = MISSING if r["wall_time_s"] is None else f"{r['wall_time_s'] / 60:.0f} min"
        cells.append([r["skip"] + (f" λ={r['lambda']:g}" if r["lambda"] != 1 else ""), f"{r['lr']:g}",
                      str(r["warmup"]), best, cell(r["final_loss"], ".3f"), cell(r["last_step"], ","), flat, state,
                      wall])
    table = markdown_table(["variant", "peak lr", "warm-up", "best valid BLEU @ update", "last valid loss",
                            "updates", f"plateau (gain < {summary['plateau_gain']:g})", "state", "wall time"], cells)
    chosen = summary["chosen"]
    learned = chosen and next(r for r in summary["runs"] if r["run"] == chosen["run"])["best_bleu"] >= LEARNED
    why = (f"the highest validation BLEU of {summary['baseline']}" if learned else
           f"the lowest last validation loss of {summary['baseline']}, none of whose runs learned")
    settings = {(r["lr"], r["warmup"]) for r in summary["runs"] if r["skip"] == summary["baseline"]}
    if chosen and len(settings) == 1:  # a long run at a setting chosen before it: nothing to choose from here
        choice = (f"Setting: peak learning rate **{chosen['lr']:g}**, warm-up **{chosen['warmup']}**, the only one of "
                  f"{summary['baseline']} this pilot trains: chosen before it (by a grid, or given), not here (run "
                  f"{chosen['run']}).")
    else:
        choice = (f"Chosen: peak learning rate **{chosen['lr']:g}**, warm-up **{chosen['warmup']}** ({why}, run "
                  f"{chosen['run']})." if chosen else
                  "No setting chosen yet: no run of the baseline has a validation BLEU.")
    if chosen and summary.get("budget"):
        choice += (f" Budget: that run's plateau is at update **{summary['budget']:,}**: a study at this setting "
                   f"trains `--max-steps {summary['budget']}`.")
    elif chosen:
        choice += (f" No budget yet: that run still gains {summary['plateau_gain']:g} BLEU or more over its last "
                   "quarter (train it longer, e.g. as a grid of this one point).")
    if summary.get("edge"):
        choice += (f" **On the edge of the grid**: the {' and the '.join(summary['edge'])} of those tried; a better "
                   "setting may lie beyond it: extend the grid that way (rerun with the next value added; the runs "
                   "already trained are kept).")
    rule = (f"Plateau: the first validation from which on the best validation BLEU so far gains less than "
            f"{summary['plateau_gain']:g} over the last {summary['quarter']:.0%} of the run so far (— : still "
            "gaining at the run's end, or never learned).")
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


def in_report(pilot_dir: Path, folder: Path, commands: list[str], study: TrainConfig | None,
              study_max_steps: int | None) -> tuple[str, dict]:
    """The pilot in ``pilot_dir`` as a section of a study's report written into ``folder`` (``--pilot`` of
    ``nmt.report`` and ``nmt.sweep``): its ``commands`` (Markdown lines), its table, choice and budget read afresh
    from its runs, its curves as ``folder/pilot_<name>.png``, and whether the study trains at the chosen setting
    and budget (``study``: the config of one of the study's runs; ``study_max_steps``: the study's ``--max-steps``).
    Returns (Markdown, the summary); raises ValueError for a folder without ``pilot.json``."""
    try:
        written = json.loads((pilot_dir / "pilot.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--pilot {pilot_dir}: no readable pilot.json ({e}); python -m nmt.pilot --out "
                         f"{pilot_dir} writes it") from None
    summary = summarise(pilot_dir, written.get("plateau_gain", 0.3), written["baseline"])
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
