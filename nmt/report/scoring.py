"""Every run of a study scored on the test set (``nmt.evaluate``), each evaluation cached in ``DIR/eval/``.

A cached evaluation is reused while the run's results.json and the evaluation settings are unchanged, so that a
report rewritten after one more run translates only that one, and a study folder kept without its checkpoints (a
light copy) still reports. Runs still training are left out; runs that diverged before any checkpoint are counted
in their variant's row without a BLEU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from nmt import atomic, evaluate
from nmt.config import read_saved_config
from nmt.eval_settings import EvalSettings, ScoringSettings
from nmt.evaluate import RunNotEvaluable, RunScore
from nmt.report.runs import still_open
from nmt.tables import MISSING


def _cache_file(cache_dir: Path, run: Path, settings: EvalSettings) -> Path:
    """Where the evaluation of ``run`` is cached: one file per run and per choice of weights, so that the scores
    of its best.ckpt and of an average of its last checkpoints do not evict each other."""
    return cache_dir / (f"{run.name}.avg{settings.average_last}.json" if settings.average_last else f"{run.name}.json")


def _cache_key(run: Path, settings: EvalSettings, scoring: ScoringSettings) -> dict:
    """What a cached evaluation of ``run`` must match: its results.json (by content, so that a study folder kept
    without its checkpoints and copied or cloned elsewhere still reports from its cache) and the evaluation
    settings."""
    results = run / "results.json"
    return {"results_sha256": hashlib.sha256(results.read_bytes()).hexdigest() if results.is_file() else None,
            "split": scoring.split,
            "beam": settings.beam, "lenpen": settings.lenpen, "lenpen_style": settings.lenpen_style,
            "average_last": settings.average_last, "limit": scoring.limit}


def evaluate_runs(out: Path, settings: EvalSettings,
                  scoring: ScoringSettings) -> tuple[list[RunScore], list[dict], list[dict]]:
    """(scores, diverged runs without a checkpoint to score, runs left out with the reason)."""
    cache_dir = out / "eval"
    cache_dir.mkdir(exist_ok=True)
    scores, unscored, left_out = [], [], []
    runs = sorted(p for p in (out / "runs").iterdir() if p.is_dir()) if (out / "runs").is_dir() else []
    for run in runs:
        if still_open(run):
            left_out.append({"run": str(run), "reason": "no results.json: still training, killed or failed before it "
                                                        "finished (its log says which; rerunning the sweep's command "
                                                        "resumes it)"})
            continue
        key = _cache_key(run, settings, scoring)
        cache = _cache_file(cache_dir, run, settings)
        if cache.is_file():
            cached = json.loads(cache.read_text())
            if cached.get("key") == key:  # the run where it is now (the study folder may have been moved)
                scores.append(RunScore(**{**cached["score"], "run": str(run)}))
                continue
        try:
            score = evaluate.evaluate_run(run, settings, scoring)
        except RunNotEvaluable as e:
            record = evaluate.read_results(run)
            if record.get("diverged"):
                unscored.append({"run": str(run), **_run_identity(run),
                                 "diverged_at_step": record.get("diverged_at_step"),
                                 "steps": record.get("steps", 0), "stop_reason": "diverged",
                                 "last_step": record.get("steps"), "best_step": record.get("best_step")})
            else:
                left_out.append({"run": str(run), "reason": str(e)})
            continue
        atomic.write_text(cache, json.dumps({"key": key, "score": asdict(score)}) + "\n")  # a kill leaves no half cache
        scores.append(score)
        print(f"{run.name}: BLEU {score.bleu:.2f}" + (" (diverged)" if score.diverged else "")
              + (f" ({score.checkpoint})" if settings.average_last else ""), flush=True)
    return scores, unscored, left_out


def _run_identity(run: Path) -> dict:
    if not (run / "config.yaml").is_file():
        return {"skip": "?", "lam": 1.0, "seed": 0, "arch": "?"}
    cfg = read_saved_config(run / "config.yaml")
    return {"skip": cfg.skip, "lam": cfg.lam, "seed": cfg.seed, "arch": cfg.arch}


def _parameters(run: Path) -> int:
    """Parameters of a run's model, built from its config (for a run that diverged before any checkpoint)."""
    try:
        import sentencepiece as spm

        from nmt.model import Transformer, model_config

        cfg = read_saved_config(run / "config.yaml")
        vocab = spm.SentencePieceProcessor(model_file=str(run / "spm.model")).get_piece_size()
        mcfg = model_config(cfg.arch, vocab, **cfg.model_overrides())
        return Transformer(mcfg).num_parameters()
    except Exception:  # noqa: BLE001 (a count for the table only)
        return 0


def add_unscored(rows: list[dict], unscored: list[dict]) -> None:
    """Count diverged runs that left no checkpoint in their variant's row (a new row if it has none)."""
    for run in unscored:
        row = next((r for r in rows if (r["variant"], r["lambda"]) == (run["skip"], run["lam"])), None)
        if row is None:
            row = {"variant": run["skip"], "lambda": run["lam"], "parameters": _parameters(Path(run["run"])),
                   "updates": run["steps"] or 0, "tokens_seen": 0, "wall_time_s": None, "seeds": 0, "diverged": 0,
                   "skipped_updates": 0, "stopped": MISSING, "bleu_mean": None, "bleu_std": None, "chrf_mean": None,
                   "delta_bleu": None, "p_value_max": None, "paired_seeds": 0}
            for key in rows[0] if rows else {}:  # the protocol's extra scores, as in the other rows
                row.setdefault(key, None)
            rows.append(row)
        row["seeds"] += 1
        row["diverged"] += 1
        stops = (row.get("stopped"), evaluate.stop_summary([run]))
        row["stopped"] = "; ".join(stop for stop in stops if stop and stop != MISSING) or MISSING
