"""The report's results tables: one per set of comparable runs and choice of weights, and one line per run.

A comparison table (``comparison_table``) is evaluate.py's BLEU table of one set of runs scored alike, with the
sacreBLEU signatures and the smallest difference the seed noise lets one detect (``nmt.report.power``) under it.
"""

from __future__ import annotations

from pathlib import Path

from nmt import claims, evaluate
from nmt.eval_settings import EvalSettings, ScoringSettings
from nmt.evaluate import BASELINE, RunScore
from nmt.report.power import detectable_difference, detectable_difference_text
from nmt.report.scoring import add_unscored
from nmt.tables import MISSING, cell, markdown_table


def weights_label(settings: EvalSettings) -> str:
    """Which weights of each run ``settings`` score, as the tables name them."""
    if settings.average_last:
        return f"average of the last {settings.average_last} checkpoints"
    return "best.ckpt"


def comparison_table(key: str, group: list[RunScore], unscored: list[dict], scoring: ScoringSettings,
                     weights: str) -> tuple[dict, str]:
    """One set of comparable runs (and ``unscored`` diverged runs) scored with ``weights`` (``weights_label``): its
    table for results.json, and as Markdown with the signatures and the smallest difference the seed noise lets
    one detect."""
    rows = evaluate.build_table(group, scoring.bootstrap) if group else []
    add_unscored(rows, unscored)
    for row in rows:
        row["weights"] = weights
    base = next((r for r in rows if (r["variant"], r["lambda"]) == (BASELINE, 1.0)), None)
    sigma = claims.seed_sigma(group)
    mdd = None
    if sigma is not None:  # n: the baseline's seeds, else the most any variant has
        n = max([base["seeds"] - base["diverged"]] if base else [r["seeds"] - r["diverged"] for r in rows])
        mdd = detectable_difference(sigma, max(n, 1))
        mdd["pooled_over"] = len(claims.seeded_cells(group))
    title = f"{evaluate.table_title(scoring.split, len(group) + len(unscored), key)}, {weights}"
    text = evaluate.bleu_table_markdown(rows, title) if rows else f"### {title}\n\nno run could be evaluated"
    if group:
        text += "\n\n" + evaluate.signatures_markdown(group[0], with_extra=False)
    text += "\n\n" + detectable_difference_text(mdd)
    table = {"comparable": key, "weights": weights, "rows": rows, "detectable_difference": mdd,
             "runs": [s.record() for s in group] + unscored}
    return table, text


def runs_markdown(scores: list[RunScore], unscored: list[dict], averaged: list[RunScore] | None = None,
                  average_last: int = 0) -> str:
    """One line per run: where its best validation was, why and where it stopped, its wall time and BLEU; with
    ``average_last`` N > 0 also the BLEU of the average of its last N checkpoints (``averaged``)."""
    runs = [(Path(s.run).name, s.best_step, s.stop_reason, s.last_step, s.wall_time_s, f"{s.bleu:.2f}")
            for s in scores]
    runs += [(Path(u["run"]).name, u.get("best_step"), "diverged", u.get("last_step"), None, MISSING)
             for u in unscored]
    average = {Path(s.run).name: f"{s.bleu:.2f}" for s in averaged or []}
    cells = []
    for name, best, reason, last, wall, bleu in sorted(runs):
        stopped = f"{reason} at update {last:,}" if reason and last is not None else MISSING
        cells.append([name, cell(best, ","), stopped, MISSING if wall is None else f"{wall / 60:.1f} min", bleu,
                      *([average.get(name, MISSING)] if average_last else [])])
    head = ["run", "best validation at update", "stopped", "wall time", "BLEU",
            *([f"BLEU, average of the last {average_last}"] if average_last else [])]
    return markdown_table(head, cells)
