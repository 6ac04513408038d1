"""The report's "Why" section: ``nmt.diagnose`` on each variant's best checkpoint (its first seed).

The diagnoses are cached in ``DIR/diagnosis/<run>/`` (redone only when the checkpoint file or the settings change)
and copied into ``DIR/report/diagnosis/<run>/``, so that the report links only inside its own folder.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from nmt.diagnose.settings import DiagnosisSettings
from nmt.report.figures import variant_colors
from nmt.report.runs import configured_runs, in_order, still_open, variant_label

WHY = DiagnosisSettings()
"""The diagnosis settings of the "Why" section: ``python -m nmt.diagnose``'s defaults."""


def why(out: Path, folder: Path, settings: DiagnosisSettings, only: frozenset[str] | None = None) -> dict:
    """The diagnosis (``nmt.diagnose``) of each variant's best checkpoint, of its first seed (of the variants whose
    ``--skip`` name is in ``only``, when given): cached in ``out/diagnosis/<run>/`` (redone only when the checkpoint
    file or the settings change; a run kept without its checkpoints keeps its cached diagnosis), the figures of all
    of them side by side in ``folder`` (``why_*.png``). Returns {"results": [(run, diagnosis)], "failed": [...],
    "pictures": [...], "only": sorted names or None}."""
    from nmt.checkpoint import CheckpointError, find_checkpoint
    from nmt.diagnose import figures as diagnosis_figures
    from nmt.diagnose.diagnosis import (
        cache_key,
        cached_diagnosis,
        cached_without_checkpoint,
        diagnose,
        write_diagnosis,
    )
    from nmt.diagnose.subject import NotDiagnosable, load_subject

    cfgs = configured_runs(out)
    first: dict[str, tuple[int, Path, Path | None]] = {}  # variant → (seed, run, checkpoint) of its first seed
    kept: dict[Path, dict] = {}  # the cached diagnoses of runs kept without their checkpoints
    for run, cfg in cfgs.items():
        if (only is not None and cfg.skip not in only) or still_open(run):
            continue
        try:
            checkpoint = find_checkpoint(run, "best")
        except CheckpointError:  # diverged or stopped before its first checkpoint, or kept without its checkpoints
            found = cached_without_checkpoint(out / "diagnosis" / run.name, settings)
            if found is None:
                continue
            checkpoint, kept[run] = None, found
        label = variant_label(cfg)
        if label not in first or cfg.seed < first[label][0]:
            first[label] = (cfg.seed, run, checkpoint)
    results, failed = [], []
    for label in in_order(cfgs[run] for _, run, _ in first.values()):
        _, run, checkpoint = first[label]
        target = out / "diagnosis" / run.name
        if checkpoint is None:
            results.append((run, kept[run]))
            continue
        key = cache_key(checkpoint, settings)
        result = cached_diagnosis(target, key)
        if result is None:
            print(f"diagnosing {run.name} ({checkpoint.name}) ...", flush=True)
            try:
                subject = load_subject(checkpoint, split=settings.split, limit=settings.limit)
                write_diagnosis(diagnose(subject, settings), target, key)
            except (NotDiagnosable, CheckpointError, ValueError, RuntimeError) as e:
                failed.append({"run": run.name, "reason": str(e)})
                continue
            result = cached_diagnosis(target, key)
        results.append((run, result))
    pictures = diagnosis_figures.compare([r for _, r in results], folder, variant_colors(out),
                                         what="each variant's best checkpoint (first seed)") if results else []
    # the report carries the diagnoses it links to, so that its folder can be moved whole (into docs/, say)
    shutil.rmtree(folder / "diagnosis", ignore_errors=True)
    for run, _ in results:
        shutil.copytree(out / "diagnosis" / run.name, folder / "diagnosis" / run.name)
    return {"results": results, "failed": failed, "pictures": pictures, "settings": settings,
            "only": None if only is None else sorted(only)}


def why_markdown(found: dict) -> str:
    """The "Why" table: the diagnosis's summary numbers, one row per variant (its first seed's best checkpoint)."""
    from nmt.diagnose.diagnosis import summary_table

    results = [r for _, r in found["results"]]
    if not results:
        text = "No checkpoint could be diagnosed."
    else:
        settings = found["settings"]
        chosen = ("" if found.get("only") is None else
                  f"Only {', '.join(found['only'])} (`--why-only`): the other variants were not diagnosed. ")
        text = (summary_table(results) + "\n\n" + chosen + (
            f"Each variant's first seed, its `best.ckpt`, diagnosed by `python -m nmt.diagnose` on the first "
            f"{max(r['subject']['sentences'] for r in results):,} sentences of the {settings.split} split "
            f"(`diagnosis/<run>/`: every number, "
            f"its own figures and summary). Gradient ratio: the gradient norm of layer 1's parameters over the top "
            f"layer's (< 1: it shrinks on its way down); RMS growth: the residual stream's RMS after the last sublayer "
            f"over that after the first (largest stream); gradient correlation at ε = "
            f"{_closest(settings.scales, 0.1):g}: near 1 smooth, near 0 shattered; CKA of neighbour layers: near 1, "
            f"they compute nearly the same representation; BLEU with one sublayer deleted (mean over the "
            f"sublayers) and with k = {settings.max_k} random ones deleted (mean of {settings.draws} draws), greedy."))
    if found["failed"]:
        text += "\n\nNot diagnosed:\n" + "\n".join(f"- {f['run']}: {f['reason']}" for f in found["failed"])
    return text


def _closest(values, target: float) -> float:
    return min(values, key=lambda v: abs(math.log(v / target)))
