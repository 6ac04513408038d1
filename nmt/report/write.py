"""The study report written whole: ``write_report`` scores the runs and writes every file of ``DIR/report/``."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from nmt import atomic, claims, evaluate
from nmt.diagnose.settings import DiagnosisSettings
from nmt.eval_settings import EvalSettings, ScoringSettings
from nmt.evaluate import RunScore
from nmt.report.figures import figures
from nmt.report.gradient_flow import gradient_flow, gradient_flow_markdown
from nmt.report.readme import pilot_sections, readme_text, sweep_record
from nmt.report.results import comparison_table, runs_markdown, weights_label
from nmt.report.scoring import evaluate_runs
from nmt.report.why import WHY, why, why_markdown


def write_report(out: Path, settings: EvalSettings, scoring: ScoringSettings,
                 diagnosis: DiagnosisSettings | None = WHY, diagnosed: frozenset[str] | None = None,
                 also_average_last: int = 0, pilots: Sequence[Path] = ()) -> Path:
    """Evaluate every run of the study ``out`` and write ``out/report/``; returns that folder. ``diagnosis``: the
    settings of the "Why" section's diagnoses (None: no such section); ``diagnosed``: the variants (``--skip`` names)
    it diagnoses (None: all); ``also_average_last`` N > 0: also score every run with the average of its last N
    periodic checkpoints, in tables of their own after those of ``settings``' weights (which decide the claims);
    ``pilots``: ``nmt.pilot`` folders that chose the study's setting and budget, a section of their own."""
    started = time.time()
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    scores, unscored, left_out = evaluate_runs(out, settings, scoring)
    tables, markdown, claim_rows = [], [], []
    for i, (key, group) in enumerate(evaluate.comparable_sets(scores, largest_first=True) or [("", [])]):
        # the first table, of the most runs, also counts the runs that diverged before any checkpoint
        table, text = comparison_table(key, group, unscored if i == 0 else [], scoring, weights_label(settings))
        if i == 0:
            claim_rows = claims.check(group, scoring.bootstrap)
            text += "\n\n### The paper's claims, checked on these runs\n\n" + claims.markdown(claim_rows)
        markdown.append(text)
        tables.append(table)
    averaged: list[RunScore] = []
    if also_average_last:
        other = replace(settings, average_last=also_average_last)
        averaged, averaged_unscored, averaged_left_out = evaluate_runs(out, other, scoring)
        for i, (key, group) in enumerate(evaluate.comparable_sets(averaged, largest_first=True)):
            table, text = comparison_table(key, group, averaged_unscored if i == 0 else [], scoring,
                                           weights_label(other))
            markdown.append(text)
            tables.append(table)
        left_out += [{**x, "reason": f"{weights_label(other)}: {x['reason']}"} for x in averaged_left_out]
    if left_out:
        markdown.append("Left out (not finished or not evaluable):\n"
                        + "\n".join(f"- {x['run']}: {x['reason']}" for x in left_out))
    markdown.append("### Every run\n\n" + runs_markdown(scores, unscored, averaged, also_average_last))
    flow = gradient_flow(out)
    markdown.append("### Gradient flow over the first updates\n\n" + gradient_flow_markdown(flow))
    found = why(out, folder, diagnosis, diagnosed) if diagnosis is not None and (out / "runs").is_dir() else None
    if found is not None:
        markdown.append("### Why: the diagnosis of each variant\n\n" + why_markdown(found))
    results_md = "\n\n".join(markdown)  # results.md, and the README's Results section as it is
    atomic.write_text(folder / "results.md", results_md + "\n")
    sweep = sweep_record(out)
    pilot_lines, pilot_data = pilot_sections(out, folder, pilots, sweep.get("settings", {}).get("max_steps"))
    results = {"tables": tables, "claims": claim_rows, "gradient_flow": flow, "left_out": left_out,
               "pilots": pilot_data,
               "diagnosis": None if found is None else {
                   "settings": diagnosis.to_dict(), "failed": found["failed"], "only": found["only"],
                   "variants": [{**r["subject"], "run": run.name, "summary": r["summary"]}
                                for run, r in found["results"]]}}
    atomic.write_text(folder / "results.json", json.dumps(results, indent=2) + "\n")
    evaluate.write_results_csv(folder / "results.csv", tables)
    pictures = figures(out, folder, tables[0]["rows"]) if tables and (out / "runs").is_dir() else []
    readme = readme_text(out, sweep, settings, scoring, results_md, pictures, scores, unscored, left_out,
                         time.time() - started, found, also_average_last, pilot_lines)
    atomic.write_text(folder / "README.md", readme)
    return folder
