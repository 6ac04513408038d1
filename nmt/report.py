"""The study report of a sweep (``nmt.sweep``): ``DIR/report/``, self-contained.

``python -m nmt.report DIR [evaluation flags]`` rewrites it from the runs in ``DIR/runs`` (the sweep calls
``build`` after training). It holds

- ``results.md``, ``results.csv``, ``results.json``: evaluate.py's table (one row per variant and λ: BLEU
  mean ± std over the seeds that did not diverge, diverged runs counted, Δ BLEU against ``post_ln`` with the
  paired bootstrap p-value) and the smallest difference the seed-to-seed noise of ``post_ln`` lets one
  detect (see ``detectable_difference``), and the paper's qualitative claims decided on these runs
  (``nmt.claims``: supported, contradicted or not resolved, against the test-set and the seed noise); with
  ``--also-average-last N`` a second table of the same runs scored with the average of their last N periodic
  checkpoints (the claims stay decided on the first, of each run's ``best.ckpt``);
- ``curves.png`` (validation loss, on a log scale when it spans orders of magnitude, and BLEU against updates,
  every run, coloured by variant), ``run_curves.png`` (one panel per variant, shared axes: each seed's validation
  BLEU, its best validation and where and why it stopped), ``bleu.png`` (BLEU bars with the std over seeds),
  ``grad_norms.png`` (per-layer gradient norms over the first updates, one panel per variant, geometric mean over
  its seeds; runs trained with ``--log-layer-grads N``); the figures need matplotlib (``pip install nmt[report]``),
  without it the report says so;
- the "Why" section: ``nmt.diagnose`` on each variant's best checkpoint (its first seed), a table of the
  diagnosis's summary numbers and ``why_*.png``, the diagnoses' figures side by side (``--no-why``: none;
  ``--why-only post_ln,pre_ln``: those variants only);
- ``README.md``: setup, hardware, wall time, provenance (git commits, package versions), and how every
  number was obtained; with ``--pilot DIR ...`` also how the setting and budget were chosen (``nmt.pilot``'s
  tables and ``pilot_<DIR name>.png``, checked against the study's runs);
- runs without a results.json (still training, killed or failed) are listed as left out, neither scored nor
  diagnosed.

Evaluations are cached per run in ``DIR/eval/<run>.json`` (keyed by the run's results.json and the
evaluation settings), so a rerun after one more run re-translates only that one; diagnoses likewise in
``DIR/diagnosis/<run>/`` (keyed by the checkpoint file and the diagnosis settings), and copied into
``DIR/report/diagnosis/<run>/``: the report folder links only inside itself and can be moved whole.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from nmt import atomic, claims, evaluate
from nmt.config import TrainConfig, read_saved_config
from nmt.diagnose.figures import grid
from nmt.diagnose.settings import DiagnosisSettings
from nmt.eval_settings import EvalSettings, ScoringSettings, add_eval_args, add_scoring_args
from nmt.evaluate import BASELINE, RunNotEvaluable, RunScore
from nmt.metrics_csv import metric_series, read_metrics
from nmt.pilot_summary import in_report
from nmt.plotting import legend_below, pyplot, save_figure
from nmt.residual import UnknownVariant, identities, residual_class, variant_order
from nmt.tables import MISSING, cell, markdown_table

# two-sided 5% and one-sided 20% (power 0.8) quantiles of Student's t, by degrees of freedom
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         12: 2.179, 14: 2.145, 16: 2.120, 18: 2.101, 20: 2.086, 30: 2.042}
T_80 = {1: 1.376, 2: 1.061, 3: 0.978, 4: 0.941, 5: 0.920, 6: 0.906, 7: 0.896, 8: 0.889, 9: 0.883, 10: 0.879,
        12: 0.873, 14: 0.868, 16: 0.865, 18: 0.862, 20: 0.860, 30: 0.854}
Z_975, Z_80 = 1.95996, 0.84162


def _t_quantile(table: dict, df: int, z: float) -> float:
    """The quantile for ``df`` degrees of freedom (the next smaller tabulated df: conservative; z above 30)."""
    if df > 30:
        return z
    return table[max(d for d in table if d <= df)]


def detectable_difference(sigma: float, n: int) -> dict:
    """The smallest BLEU differences between two variants with n seeds each that the seed-to-seed standard
    deviation σ (pooled over the variants, ``nmt.claims.seed_sigma``) lets one tell from noise, two-sided at 5%
    (the difference of two means of n seeds has standard deviation σ·√(2/n)):

    - ``significant_normal``: 1.96·σ·√(2/n) ≈ 2·√2·σ/√n, the smallest observed Δ that is significant (normal);
    - ``significant_t``: t₀.₉₇₅,₂ₙ₋₂·σ·√(2/n), the same with Student's t (σ estimated from the few seeds);
    - ``detectable_80``: (t₀.₉₇₅,₂ₙ₋₂ + t₀.₈,₂ₙ₋₂)·σ·√(2/n), the true Δ found significant with 80% power.
    """
    scale = sigma * math.sqrt(2 / n)
    out = {"sigma": sigma, "n": n, "significant_normal": Z_975 * scale, "significant_t": None, "detectable_80": None}
    if n >= 2:
        t975, t80 = _t_quantile(T_975, 2 * n - 2, Z_975), _t_quantile(T_80, 2 * n - 2, Z_80)
        out["significant_t"], out["detectable_80"] = t975 * scale, (t975 + t80) * scale
    return out


# ------------------------------------------------------------------------------------------- evaluation
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
        if _still_open(run):
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


# ------------------------------------------------------------------------------------------- figures
def _configured_runs(out: Path) -> dict[Path, TrainConfig]:
    """{run directory: its config.yaml} for every run of the study that has one, in name order."""
    runs_dir = out / "runs"
    runs = sorted(p for p in runs_dir.iterdir() if (p / "config.yaml").is_file()) if runs_dir.is_dir() else []
    return {run: read_saved_config(run / "config.yaml") for run in runs}


def _still_open(run: Path) -> bool:
    """Whether ``run`` has begun training and has not ended: a config.yaml and no results.json (train.py writes it
    when a run ends, however it ends, except on SIGKILL). Its checkpoints are a snapshot of a run in progress, kept
    out of the report's tables and diagnosis: a report written while another invocation trains, or after a kill,
    must not score them as that run's result."""
    return (run / "config.yaml").is_file() and not (run / "results.json").is_file()


def _in_order(configs) -> list[str]:
    """The labels of these runs' (variant, λ) cells, each once, in the tables' order: the baseline first, then the
    registry's order (``nmt.residual.variant_order``), then λ."""
    cells = {(c.skip, c.lam): c for c in configs}
    return [_label(cells[key]) for key in sorted(cells, key=lambda key: variant_order(*key))]


def _label(cfg: TrainConfig) -> str:
    return cfg.skip + (f" λ={cfg.lam:g}" if cfg.lam != 1 else "")


def variant_colors(out: Path) -> dict:
    """One colour per variant of the study (label → colour), in the tables' order: the same in every figure."""
    plt = pyplot()
    labels = _in_order(_configured_runs(out).values())
    if not plt:
        return {}
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")  # beyond 10 variants, tab10 would repeat
    return {label: palette(i % palette.N) for i, label in enumerate(labels)}


def figures(out: Path, folder: Path, rows: list[dict]) -> list[str]:
    """Write the figures; returns their file names (empty without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return []
    cfgs = _configured_runs(out)
    colors = variant_colors(out)
    metric_rows = {run: read_metrics(run) for run in cfgs}
    written = [_curves_figure(plt, folder, cfgs, metric_rows, colors),
               _run_curves_figure(plt, folder, cfgs, metric_rows), _bleu_figure(plt, folder, rows, colors)]
    with_grads = {run: rows for run, rows in metric_rows.items()
                  if rows and any(k.startswith("grad_norm/") for k in rows[0])}
    if with_grads:
        written.append(_grad_norms_figure(plt, folder, cfgs, with_grads))
    return written


def spans_orders_of_magnitude(values: list[float], factor: float = 100.0) -> bool:
    """Whether positive ``values`` range over more than ``factor`` (then a linear axis flattens all but the largest)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or min(finite) <= 0:
        return False
    return max(finite) / min(finite) > factor


def _curves_figure(plt, folder: Path, cfgs: dict[Path, TrainConfig], metric_rows: dict[Path, list[dict]],
                   colors: dict) -> str:
    """curves.png: validation loss and BLEU against updates, one line per run, coloured by variant. The loss is on a
    log scale when it spans orders of magnitude (a diverging run next to converging ones)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    losses = []
    for run, cfg in cfgs.items():
        label = _label(cfg)
        for ax, column in zip(axes, ("val/loss", "val/bleu")):
            xs, ys = metric_series(metric_rows[run], column)
            if xs:
                ax.plot(xs, ys, marker=".", color=colors[label], alpha=0.8, label=label)
            if column == "val/loss":
                losses += ys
    log_loss = spans_orders_of_magnitude(losses)
    if log_loss:
        axes[0].set_yscale("log")
    titles = ("validation loss (label-smoothed" + (", log scale)" if log_loss else ")"), "validation BLEU (greedy)")
    entries = []
    for ax, title in zip(axes, titles):
        ax.set_xlabel("update")
        ax.set_title(title)
        entries += list(zip(*ax.get_legend_handles_labels()))
    fig.suptitle("every run (one line per seed), coloured by variant")
    legend_below(fig, entries, order=_in_order(cfgs.values()), ncol=6)  # the tables' order, under both panels
    return save_figure(plt, fig, folder / "curves.png", dpi=120)


def _run_curves_figure(plt, folder: Path, cfgs: dict[Path, TrainConfig], metric_rows: dict[Path, list[dict]]) -> str:
    """run_curves.png: one panel per variant, the validation BLEU of each of its seeds, with the update of the run's
    best validation (★: its best.ckpt) and where it stopped (a dotted line; why, in the legend), from results.json."""
    variants = _in_order(cfgs.values())
    n_rows, n_cols = grid(len(variants), 4)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.0 * n_rows + 0.6), squeeze=False)
    palette = plt.get_cmap("tab10")
    top = max([1.0, *(b for rows in metric_rows.values() for b in metric_series(rows, "val/bleu")[1]
                      if math.isfinite(b))])
    # one update scale for every panel, as BLEU has one: a run cut or stopped early is seen to end early
    right = max([1, *(x for rows in metric_rows.values() for x in metric_series(rows, "val/bleu")[0]),
                 *(evaluate.read_results(run).get("steps") or 0 for run in cfgs)])
    for index, ax in enumerate(axes.flat):
        if index >= len(variants):
            ax.set_visible(False)
            continue
        label = variants[index]
        runs = sorted((cfg.seed, run) for run, cfg in cfgs.items() if _label(cfg) == label)
        for i, (seed, run) in enumerate(runs):
            color = palette(i % palette.N)
            xs, ys = metric_series(metric_rows[run], "val/bleu")
            record = evaluate.read_results(run)
            stop = record.get("stop_reason") or ("diverged" if record.get("diverged") else None)
            last = record.get("steps")
            name = f"seed {seed}" + (f": {stop} @ {last:,}" if stop and last is not None else ": unfinished")
            ax.plot(xs, ys, marker=".", markersize=3, lw=1, color=color, label=name)
            best = record.get("best_step")
            if best in xs:
                ax.plot([best], [ys[xs.index(best)]], marker="*", markersize=10, color=color, linestyle="none")
            if last is not None:
                ax.axvline(last, color=color, linestyle=":", lw=1)
        ax.set_ylim(0, top * 1.05)
        ax.set_xlim(0, right * 1.03)
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")  # BLEU rises with the updates: that corner stays empty
        if index % n_cols == 0:
            ax.set_ylabel("validation BLEU (greedy)")
        if index + n_cols >= len(variants):
            ax.set_xlabel("update")
    fig.suptitle("every run's validation BLEU: ★ its best validation (best.ckpt), dotted line where it stopped",
                 fontsize=10)
    return _save(plt, fig, folder / "run_curves.png", dpi=110)


def _bleu_figure(plt, folder: Path, rows: list[dict], colors: dict) -> str:
    """bleu.png: the table's BLEU as bars with the std over seeds, and how many seeds trained or diverged."""
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4.5))
    for i, r in enumerate(rows):
        label = r["variant"] + (f" λ={r['lambda']:g}" if r["lambda"] != 1 else "")
        if r["bleu_mean"] is not None:
            ax.bar(i, r["bleu_mean"], yerr=r["bleu_std"], capsize=4, color=colors.get(label, "grey"))
        ax.text(i, (r["bleu_mean"] or 0) + (r["bleu_std"] or 0), f"n={r['seeds'] - r['diverged']}"
                + (f"\n{r['diverged']} div." if r["diverged"] else ""), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["variant"] + (f"\nλ={r['lambda']:g}" if r["lambda"] != 1 else "") for r in rows],
                       fontsize=8)
    ax.set_ylabel("test BLEU (mean ± std over seeds)")
    return _save(plt, fig, folder / "bleu.png", dpi=120)


def _grad_norms_figure(plt, folder: Path, cfgs: dict[Path, TrainConfig], metric_rows: dict[Path, list[dict]]) -> str:
    """grad_norms.png: per-layer gradient norms over the first updates, one panel per variant (the geometric mean
    over its seeds at each update), the panels in a compact grid, one legend under them."""
    variants = _in_order(cfgs[run] for run in metric_rows)
    rows_of = {label: [rows for run, rows in metric_rows.items() if _label(cfgs[run]) == label] for label in variants}
    n_rows, n_cols = grid(len(variants), 4)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.0 * n_rows + 1.0), squeeze=False)
    cmap = plt.get_cmap("viridis")
    steps_max = 1
    entries = []
    for index, ax in enumerate(axes.flat):
        if index >= len(variants):
            ax.set_visible(False)
            continue
        label = variants[index]
        runs = rows_of[label]
        for side, style in (("encoder", "-"), ("decoder", "--")):
            layers = _layer_columns(runs[0][0], side)
            for j, column in enumerate(layers):
                xs, ys = _seed_mean(runs, column)
                (line,) = ax.plot(xs, ys, style, color=cmap(j / max(1, len(layers) - 1)), lw=1)
                entries.append((line, f"{side} {int(column.split('.')[-1]) + 1}"))
                steps_max = max([steps_max, *xs])
        ax.set_yscale("log")
        ax.set_title(label + (f" (geometric mean of {len(runs)} seeds)" if len(runs) > 1 else " (1 seed)"), fontsize=9)
        if index % n_cols == 0:
            ax.set_ylabel("gradient 2-norm of the layer")
        if index + n_cols >= len(variants):  # the lowest panel of its column
            ax.set_xlabel("update")
    for ax in axes.flat:
        ax.set_xlim(0, steps_max + 1)
    fig.suptitle("per-layer gradient norms over the first updates (encoder solid, decoder dashed; lighter = higher "
                 "layer)", fontsize=10)
    legend_below(fig, entries, ncol=6, fontsize=7)
    save_figure(plt, fig, folder / "grad_norms.png", dpi=110)
    return "grad_norms.png"


def _seed_mean(runs: list[list[dict]], column: str) -> tuple[list[int], list[float]]:
    """The geometric mean over the runs (seeds) of ``column`` at each update that all of them logged."""
    series = [dict(zip(*metric_series(rows, column))) for rows in runs]
    steps = sorted(set.intersection(*(set(s) for s in series)))
    means = []
    for step in steps:
        values = [s[step] for s in series]
        means.append(math.exp(statistics.fmean(math.log(v) for v in values))
                     if all(v > 0 and math.isfinite(v) for v in values) else math.nan)
    return steps, means


def _layer_columns(metrics_row: dict, side: str) -> list[str]:
    """The ``grad_norm/<side>.<layer>`` columns of metrics.csv, bottom layer first."""
    return sorted((k for k in metrics_row if k.startswith(f"grad_norm/{side}.")), key=lambda c: int(c.split(".")[-1]))


def _save(plt, fig, path: Path, dpi: int) -> str:
    fig.tight_layout()
    return save_figure(plt, fig, path, dpi)


def gradient_flow(out: Path) -> list[dict]:
    """How evenly the gradient reaches the layers over the first logged updates, per variant.

    For every run trained with ``--log-layer-grads N`` and every logged update, the ratio of the gradient
    2-norm of the bottom layer to that of the top layer, per stack (encoder layer 0 / encoder layer L−1, and
    likewise for the decoder); its geometric mean over the updates, then over the variant's seeds. 1 means
    the bottom layer gets as much gradient as the top one; ≪ 1, a gradient that vanishes on its way down
    (as in Post-LN, Xiong et al. 2020); ≫ 1, one that grows.
    """
    per_variant: dict[str, list[tuple[float, float, int]]] = {}
    configs = {}
    for run, cfg in _configured_runs(out).items():
        logged = [r for r in read_metrics(run) if r.get("grad_norm/encoder.0") not in (None, "")]
        if not logged:
            continue
        columns = {side: _layer_columns(logged[0], side) for side in ("encoder", "decoder")}
        log_ratios = {side: [] for side in columns}
        for row in logged:
            for side, layers in columns.items():
                bottom, top = float(row[layers[0]]), float(row[layers[-1]])
                if bottom > 0 and top > 0 and math.isfinite(bottom) and math.isfinite(top):
                    log_ratios[side].append(math.log(bottom / top))
        if log_ratios["encoder"] and log_ratios["decoder"]:
            per_variant.setdefault(_label(cfg), []).append(
                (statistics.fmean(log_ratios["encoder"]), statistics.fmean(log_ratios["decoder"]), len(logged)))
            configs[run] = cfg
    rows = []
    for label in _in_order(configs.values()):
        seeds = per_variant[label]  # (encoder mean log ratio, decoder mean log ratio, updates logged) per seed
        rows.append({"variant": label, "seeds": len(seeds), "updates": min(u for _, _, u in seeds),
                     "encoder_bottom_over_top": math.exp(statistics.fmean(e for e, _, _ in seeds)),
                     "decoder_bottom_over_top": math.exp(statistics.fmean(d for _, d, _ in seeds))})
    return rows


def gradient_flow_markdown(rows: list[dict]) -> str:
    if not rows:
        return "No per-layer gradient norms were logged (train with `--log-layer-grads N`)."
    head = ["variant", "seeds", "updates logged", "encoder: layer 0 / top layer", "decoder: layer 0 / top layer"]
    table = markdown_table(head, [[r["variant"], str(r["seeds"]), str(r["updates"]),
                                   cell(r["encoder_bottom_over_top"], ".3g"), cell(r["decoder_bottom_over_top"], ".3g")]
                                  for r in rows])
    return table + ("\n\nGradient 2-norm of the bottom layer over that of the top layer, geometric mean over the "
                    "logged updates and the seeds: 1 = the gradient reaches the bottom layer undiminished.")


# ------------------------------------------------------------------------------------------- why
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

    cfgs = _configured_runs(out)
    first: dict[str, tuple[int, Path, Path | None]] = {}  # variant → (seed, run, checkpoint) of its first seed
    kept: dict[Path, dict] = {}  # the cached diagnoses of runs kept without their checkpoints
    for run, cfg in cfgs.items():
        if (only is not None and cfg.skip not in only) or _still_open(run):
            continue
        try:
            checkpoint = find_checkpoint(run, "best")
        except CheckpointError:  # diverged or stopped before its first checkpoint, or kept without its checkpoints
            found = cached_without_checkpoint(out / "diagnosis" / run.name, settings)
            if found is None:
                continue
            checkpoint, kept[run] = None, found
        label = _label(cfg)
        if label not in first or cfg.seed < first[label][0]:
            first[label] = (cfg.seed, run, checkpoint)
    results, failed = [], []
    for label in _in_order(cfgs[run] for _, run, _ in first.values()):
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


# ------------------------------------------------------------------------------------------- the report
def _provenance(out: Path) -> dict:
    commits, packages, hardware = {}, {}, {}
    sessions, dirty, unlisted, paths = 0, 0, 0, set()  # run sessions; dirty ones; dirty without a file list; files
    for run in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []:
        path = run / "provenance.json"
        if not path.is_file():
            continue
        records = [json.loads(path.read_text())]
        records += records[0].get("previous", [])
        for record in records:
            git = record.get("git", {})
            commits.setdefault(git.get("commit") or "unknown", []).append(run.name)
            sessions += 1
            if git.get("dirty"):
                dirty += 1
                if "dirty_paths" in git:
                    paths.update(git["dirty_paths"])
                    unlisted += git.get("dirty_paths_total", 0) > len(git["dirty_paths"])
                else:
                    unlisted += 1  # recorded before provenance.json listed the files
            for name, version in record.get("packages", {}).items():
                packages.setdefault(name, set()).add(str(version))
            machine = json.dumps(record.get("hardware", {}), sort_keys=True)
            hardware.setdefault(machine, []).append(run.name)
    return {"commits": {c: sorted(r) for c, r in commits.items()}, "sessions": sessions,  # a run once a session
            "dirty": {"sessions": dirty, "unlisted": unlisted, "paths": sorted(paths)},
            "packages": {k: sorted(v) for k, v in packages.items()},
            "hardware": [{"hardware": json.loads(h), "sessions": len(r)} for h, r in hardware.items()]}


WHY = DiagnosisSettings()
"""The diagnosis settings of the "Why" section: ``python -m nmt.diagnose``'s defaults."""


def build(out: Path, settings: EvalSettings, scoring: ScoringSettings, diagnosis: DiagnosisSettings | None = WHY,
          diagnosed: frozenset[str] | None = None, also_average_last: int = 0,
          pilots: Sequence[Path] = ()) -> Path:
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
        table, text = _comparison_table(key, group, unscored if i == 0 else [], scoring, weights_label(settings))
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
            table, text = _comparison_table(key, group, averaged_unscored if i == 0 else [], scoring,
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
    atomic.write_text(folder / "results.md", "\n\n".join(markdown) + "\n")
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
    readme = _readme(out, sweep, settings, scoring, markdown, pictures, scores, unscored, left_out,
                     time.time() - started, found, also_average_last, pilot_lines)
    atomic.write_text(folder / "README.md", readme)
    return folder


def pilot_sections(out: Path, folder: Path, pilots: Sequence[Path],
                   max_steps: int | None) -> tuple[list[str], list[dict]]:
    """The README's section on how the study's setting and budget were chosen, one subsection per ``nmt.pilot``
    folder (``--pilot``), checked against the study's own runs and its ``max_steps``; and the pilots' summaries
    for results.json."""
    if not pilots:
        return [], []
    study = next(iter(_configured_runs(out).values()), None)
    texts, data = [], []
    for pilot_dir in pilots:
        commands = [f"- `python -m nmt.pilot {' '.join(argv)}`" + (f" (run {times} times)" if times > 1 else "")
                    for argv, times, _ in distinct_commands(sweep_record(pilot_dir).get("invocations", []))]
        text, summary = in_report(pilot_dir, folder, commands, study, max_steps)
        texts.append(text)
        data.append({"folder": str(pilot_dir), **summary})
    intro = ("Chosen on the validation set before the study's runs (`python -m nmt.pilot`): the baseline's peak "
             "learning rate and warm-up from a grid of short runs, the budget from where a long run at that setting "
             "stops gaining. The tables and curves are read afresh from the pilots' runs.")
    return ["## How the setting and budget were chosen: the pilot", "", intro, "", "\n\n".join(texts), ""], data


def weights_label(settings: EvalSettings) -> str:
    """Which weights of each run ``settings`` score, as the tables name them."""
    if settings.average_last:
        return f"average of the last {settings.average_last} checkpoints"
    return "best.ckpt"


def _comparison_table(key: str, group: list[RunScore], unscored: list[dict], scoring: ScoringSettings,
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
    text += "\n\n" + _mdd_text(mdd)
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


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless n is 1: "1 run", "3 runs"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _mdd_text(mdd: dict | None) -> str:
    if mdd is None:
        return ("Smallest detectable Δ: needs a variant with at least 2 seeds that did not diverge (the seed-to-seed "
                "standard deviation σ is estimated from them).")
    cells = mdd.get("pooled_over", 1)
    return (f"Smallest Δ BLEU the seed noise lets one detect (two-sided, 5%; n = {mdd['n']} seeds per variant, "
            f"σ = {mdd['sigma']:.2f} = the seed-to-seed std of BLEU pooled over the {count(cells, 'variant')} with "
            f"≥ 2 seeds; a difference of two n-seed means has "
            f"std σ·√(2/n)): significant if |Δ| > 1.96·σ·√(2/n) ≈ 2·√2·σ/√n = **{cell(mdd['significant_normal'])}** "
            f"(normal), or > t₀.₉₇₅,₂ₙ₋₂·σ·√(2/n) = **{cell(mdd['significant_t'])}** (Student's t, 2n−2 degrees of "
            f"freedom); a true Δ of (t₀.₉₇₅ + t₀.₈)·σ·√(2/n) = **{cell(mdd['detectable_80'])}** is found with 80% "
            "power. A smaller Δ is within the seed noise.")


def _readme(out: Path, sweep: dict, settings: EvalSettings, scoring: ScoringSettings, markdown: list[str],
            pictures: list[str], scores: list[RunScore], unscored: list[dict], left_out: list[dict], eval_s: float,
            found: dict | None = None, also_average_last: int = 0, pilot_lines: Sequence[str] = ()) -> str:
    """The report's README.md (``sweep``: the study's sweep.json): setup, hardware and wall time, provenance,
    results, figures, and the protocol."""
    provenance = _provenance(out)
    lines = [
        f"# Study report: {out.name}",
        "",
        (f"Written {time.strftime('%Y-%m-%d %H:%M %Z')} by `python -m nmt.sweep` / `python -m nmt.report`. "
         f"{count(len(scores), 'run')} evaluated, {len(unscored)} diverged before any checkpoint (counted, no BLEU), "
         f"{len(left_out)} left out (listed under Results)."),
        "",
        *_setup_section(sweep),
        *pilot_lines,
        *_hardware_section(sweep, provenance, scores, eval_s),
        *_provenance_section(provenance),
        "## Results",
        "",
        *markdown,
        "",
        *_figures_section(out, pictures),
        *_why_section(found),
        *_protocol_section(settings, scoring, also_average_last),
    ]
    return "\n".join(lines)


def _setup_section(sweep: dict) -> list[str]:
    settings = sweep.get("settings", {})
    config_text = ""
    if settings.get("config") and Path(settings["config"]).is_file():
        config_text = "\n```yaml\n" + Path(settings["config"]).read_text() + "```\n"
    preset = (f"- Preset: `{settings['config']}` (sha256 `{settings['config_sha256'][:12]}`)" if settings.get("config")
              else "- Preset: none (train.py defaults)")
    commands = distinct_commands(sweep.get("invocations", []))
    own = [str(i + 1) for i, (_, times, own_budget) in enumerate(commands) if own_budget]
    same = ("Every run has the same data, preset, flags and number of updates; only `--skip`, `--lambda` and "
            "`--seed` differ." if not own else
            f"Every run has the same data, preset and flags; the runs of command{'s' if len(own) > 1 else ''} "
            f"{', '.join(own)} had a budget of their own (`--own-budget`: its `--max-steps`, `--patience`, "
            "`--min-delta`, `--patience-from` in its command below), all others the study's; only `--skip`, "
            "`--lambda` and `--seed` differ otherwise.")
    return [
        "## Setup",
        "",
        preset + ", extra train.py flags:"
        f" `{' '.join(settings.get('train_args') or []) or 'none'}`, updates per run: "
        f"{settings.get('max_steps') or 'the preset’s'}. " + same,
        *[f"- Command {i + 1}: `python -m nmt.sweep {' '.join(argv)}`"
          + (f" (run {times} times: each rerun went on where the one before had stopped)" if times > 1 else "")
          for i, (argv, times, _) in enumerate(commands)],
        ("- Identical models ran once under the canonical name ("
         + "; ".join(f"{name} λ={lam:g} = {other}" for name, lam, other in identities()) + ")."),
        config_text,
    ]


def sweep_record(folder: Path) -> dict:
    """The sweep.json of a study or pilot folder (``nmt.sweep.record_invocation`` writes it), {} without one."""
    path = folder / "sweep.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def distinct_commands(invocations: list[dict]) -> list[tuple[tuple[str, ...], int, bool]]:
    """[(argv, how many invocations ran it, whether with --own-budget)] in the order each was first run: rerunning
    the same command until the sweep has finished is how a study is resumed, one line for it is enough."""
    commands: dict[tuple[str, ...], list] = {}
    for inv in invocations:
        entry = commands.setdefault(tuple(inv.get("argv", [])), [0, False])
        entry[0] += 1
        entry[1] = entry[1] or bool(inv.get("own_budget"))
    return [(argv, times, own_budget) for argv, (times, own_budget) in commands.items()]


def _hardware_section(sweep: dict, provenance: dict, scores: list[RunScore], eval_s: float) -> list[str]:
    train_s = sum(i.get("wall_time_s") or 0 for i in sweep.get("invocations", []))
    run_walls = [s.wall_time_s for s in scores if s.wall_time_s]
    return [
        "## Hardware and wall time",
        "",
        *[f"- {h['sessions']} run session(s) on: " + ", ".join(f"{k} {v}" for k, v in h["hardware"].items())
          for h in provenance["hardware"]],
        (f"- Sweep wall time (training, all invocations): {train_s / 3600:.2f} h; the evaluation for this report: "
         f"{eval_s / 60:.1f} min (cached evaluations are reused)."),
        (f"- Wall time of one run (over all its training sessions, results.json): median "
         f"{statistics.median(run_walls) / 60:.1f} min" if run_walls else "- No run wall time recorded."),
        "",
    ]


CODE_SUFFIXES = (".py", ".yaml", ".yml", ".toml", ".model")
"""Files whose change can alter what a run computes (code, presets, the package's metadata, a tokenizer model)."""


def _dirty_line(dirty: dict, sessions: int) -> str:
    """Whether the runs' working trees differed from their commit, and in which files: a study that writes its
    own state into the tree (``--state docs/...``) is told apart from a change of the code."""
    if not dirty["sessions"]:
        return "- Uncommitted changes in a run's working tree: none"
    line = f"- Uncommitted changes in a run's working tree: in {dirty['sessions']} of {sessions} run session(s)"
    paths = dirty["paths"]
    if paths:
        shown = ", ".join(f"`{p}`" for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        code = [p for p in paths if p.endswith(CODE_SUFFIXES)]
        line += (f"; the files: {shown}; code or configuration among them: "
                 + (", ".join(f"`{p}`" for p in code) if code else "none"))
    if dirty["unlisted"]:
        line += (f"; {dirty['unlisted']} session(s) recorded no (or no complete) list of the files: which changed "
                 "is not known")
    return line


def _provenance_section(provenance: dict) -> list[str]:
    return [
        "## Provenance",
        "",
        *[f"- git commit `{c}`: {len(r)} run session(s) of {len(set(r))} run(s)"
          for c, r in provenance["commits"].items()],
        _dirty_line(provenance["dirty"], provenance["sessions"]),
        "- Packages: " + ", ".join(f"{k} {'/'.join(v)}" for k, v in sorted(provenance["packages"].items())),
        "- Each run's own `provenance.json` (command, data and tokenizer SHA-256) is in `runs/<run>/`.",
        "",
    ]


def _figures_section(out: Path, pictures: list[str]) -> list[str]:
    lines = ["## Figures", ""]
    if pictures:
        lines += [f"![{p}]({p})" for p in pictures]
        if "grad_norms.png" not in pictures:
            lines.append("No per-layer gradient norms were logged: train with `--log-layer-grads N` for that figure.")
    else:
        lines.append("The figures need matplotlib: `pip install nmt[report]` (or `pip install matplotlib`), then "
                     f"`python -m nmt.report {out}`.")
    return lines


def _why_section(found: dict | None) -> list[str]:
    """The figures of the diagnoses side by side, and a link to each one's own folder (the table is in Results)."""
    if found is None:
        return []
    lines = ["", "## Why: the diagnosis of each variant", "",
             ("What the residual literature measures to explain its results, on each variant's best checkpoint (first "
              "seed; the numbers are in the table \"Why: the diagnosis of each variant\" above): the gradient "
              "reaching each layer, the growth of the hidden states, whether the gradients are smooth or shattered "
              "(Balduzzi et al. 2017), how BLEU degrades when sublayers are deleted (Veit et al. 2016), and how "
              "similar the layers' representations are."), ""]
    if found["pictures"]:
        lines += [f"![{p}]({p})" for p in found["pictures"]]
    elif found["results"]:
        lines.append("The figures need matplotlib (`pip install nmt[report]`).")
    lines += ["", "Each diagnosis on its own: " + ", ".join(
        f"[{r['subject']['label']}](diagnosis/{run.name}/summary.md)" for run, r in found["results"]) + "."]
    return lines


def _protocol_section(settings: EvalSettings, scoring: ScoringSettings, also_average_last: int = 0) -> list[str]:
    return [
        "",
        "## How every number was obtained",
        "",
        f"- **BLEU** (table): test split `{scoring.split}`, "
        + (f"the average of each run's last {settings.average_last} periodic checkpoints" if settings.average_last
           else "each run's `best.ckpt` (best validation BLEU)")
        + f", beam {settings.beam}, length penalty {settings.lenpen_style} α {settings.lenpen:g}"
        + (f", first {scoring.limit} sentences only" if scoring.limit else "")
        + "; sacreBLEU on detokenized output against the raw references, signature above; chrF++ likewise; the "
        "dataset's extra protocol scores, if any, as named in the table."
        + (f" The tables headed \"average of the last {also_average_last} checkpoints\" score the same runs with "
           f"the elementwise average of the parameters of their newest {also_average_last} `step-<N>.ckpt` "
           "(`python -m nmt.average`; the run trained with `--save-every`), decoded alike; the claims are decided "
           "on the first table only." if also_average_last else ""),
        ("- **updates**, **tgt tokens**, **skipped updates**: those of the checkpoint evaluated (with `best.ckpt`, the "
         "update with the best validation BLEU, which may come before the last), mean over the seeds for the first "
         "two, summed for the updates skipped as non-finite up to it (a run's own total is in its results.json, "
         "`nonfinite_skipped`); **stopped (at update)**: how and where each run ended."),
        ("- **mean ± std**: over the seeds of a variant that did not diverge (sample standard deviation; 0 with one "
         "seed). **diverged**: runs stopped by `--max-nonfinite` consecutive non-finite updates, counted and never "
         "averaged in; a run that diverged before its first checkpoint has no BLEU."),
        (f"- **Δ BLEU vs post_ln**: mean over the seeds both variants share of (variant − post_ln) on the same test "
         f"set; **p**: paired bootstrap ({scoring.bootstrap} resamples, Koehn 2004) between the two outputs of the "
         "same seed, the largest p over the paired seeds."),
        ("- **Smallest detectable Δ**: see the formula under the table; σ is the seed standard deviation pooled over "
         "the variants with at least 2 seeds (`nmt.claims.seed_sigma`), n post_ln's number of seeds."),
        ("- **The paper's claims**: each claim of Liu et al. (COLING 2020) is a comparison \"A beats B\" between two "
         "cells; Δ is the mean over their shared seeds, p the largest one-sided paired-bootstrap p over those seeds, "
         "and the seed noise 1.96·σ·√(2/n) for n shared seeds. **supported** / **contradicted** needs p < 0.05 *and* "
         "|Δ| above the seed noise; anything less is **not resolved** (`nmt/claims.py`)."),
        ("- **Curves** (`curves.png`): validation loss (label-smoothed, per target token) and greedy validation BLEU "
         "from each run's `metrics.csv`, at every validation; `run_curves.png` the BLEU again, one panel per variant "
         "on shared axes, with each run's best validation (★, the update of its `best.ckpt`) and its last update "
         "(dotted), the stop reason from its results.json. **Bars** (`bleu.png`): the table's mean ± std. "
         "**Gradient norms** (`grad_norms.png`): the 2-norm of the gradient of all parameters of each encoder and "
         "decoder layer at each of the first `--log-layer-grads` updates, before clipping, per seed."),
        "- **Wall time**: a run's seconds of training summed over its train.py sessions, each counted up to its last "
        "checkpoint and the last one in full (results.json, `nmt/wallclock.py`); mean over the seeds in the tables.",
        ("- **Why** (`why_*.png`, the diagnosis table): `python -m nmt.diagnose` on each variant's first seed's "
         "`best.ckpt`, with its default settings; the measurements are defined in the README's section on "
         "diagnosis and in `nmt/diagnose/__init__.py`."),
        "",
    ]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nmt.report", description="Rewrite DIR/report/ of a sweep.")
    p.add_argument("out", type=Path, help="the sweep's --out folder")
    add_scoring_args(p)
    add_eval_args(p, with_average_last=True)
    add_also_average_arg(p)
    add_pilot_arg(p)
    add_why_arg(p)
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch threads of the evaluation and the diagnoses (default: torch's, one per core). On a "
                   "machine that trains something else meanwhile, give the cores left free: two threads sharing one "
                   "free core translated 4× slower than one")
    return p


def use_threads(threads: int) -> None:
    """Evaluate and diagnose with ``threads`` torch threads (0: torch's default, one per core)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


class FlagError(ValueError):
    """Report flags that contradict each other; the message names them."""


def add_also_average_arg(parser) -> None:
    """``--also-average-last N``, shared by ``python -m nmt.report`` and ``python -m nmt.sweep``."""
    parser.add_argument("--also-average-last", type=int, default=0, metavar="N",
                        help="also score each run with the average of its last N periodic checkpoints "
                        "(step-<N>.ckpt: train with --save-every), in tables of their own after best.ckpt's; the "
                        "claims stay decided on best.ckpt (default: best.ckpt only)")


def add_pilot_arg(parser) -> None:
    """``--pilot DIR ...``, shared by ``python -m nmt.report`` and ``python -m nmt.sweep``."""
    parser.add_argument("--pilot", type=Path, nargs="+", default=[], metavar="DIR",
                        help="nmt.pilot folders (its --out) that chose this study's learning rate, warm-up and "
                        "budget: the report shows their tables and curves and checks the study against them")


def pilots(args) -> list[Path]:
    """``--pilot``'s folders, each checked for the pilot.json that nmt.pilot writes; raises FlagError naming it."""
    for folder in args.pilot:
        if not (folder / "pilot.json").is_file():
            raise FlagError(f"--pilot {folder}: no pilot.json there (python -m nmt.pilot --out {folder} writes it)")
    return list(args.pilot)


def also_average_last(args) -> int:
    """``--also-average-last``, checked against ``--average-last`` (which replaces best.ckpt: the two together
    would score one average twice over) and for a sign; raises FlagError with the flag's name."""
    if args.also_average_last < 0:
        raise FlagError(f"--also-average-last {args.also_average_last}: must be ≥ 0")
    if args.also_average_last and args.average_last:
        raise FlagError("--also-average-last and --average-last together: --average-last scores the average "
                         "instead of best.ckpt, --also-average-last beside it; use one")
    return args.also_average_last


def add_why_arg(parser) -> None:
    """``--no-why`` and ``--why-only``, shared by ``python -m nmt.report`` and ``python -m nmt.sweep``."""
    parser.add_argument("--no-why", action="store_true",
                        help="leave out the \"Why\" section (the diagnosis of each variant's best checkpoint, one "
                        "model at a time; cached in DIR/diagnosis/, so only new or changed checkpoints are diagnosed "
                        "again)")
    parser.add_argument("--why-only", type=_skip_names, default=None, metavar="SKIPS",
                        help="diagnose only these residual variants (comma-separated --skip names, every λ of each) "
                        "in the \"Why\" section, e.g. post_ln,pre_ln,rskip_ln: on deep models a diagnosis takes up "
                        "to an hour (default: every variant)")


def _skip_names(text: str) -> frozenset[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        try:
            residual_class(name)
        except UnknownVariant as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if not names:
        raise argparse.ArgumentTypeError("no variant named")
    return frozenset(names)


def why_settings(args) -> DiagnosisSettings | None:
    """The diagnosis settings of the "Why" section, None with ``--no-why``."""
    return None if args.no_why else WHY


def why_only(args) -> frozenset[str] | None:
    """The variants (``--skip`` names) the "Why" section diagnoses; None: all of them."""
    return args.why_only


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.out / "runs").is_dir():
        print(f"report: error: {args.out} holds no runs/ folder", file=sys.stderr)
        return 2
    try:
        average, chosen_by = also_average_last(args), pilots(args)
        if args.threads < 0:
            raise FlagError(f"--threads {args.threads}: must be ≥ 0 (0: one per core)")
    except FlagError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    use_threads(args.threads)
    folder = build(args.out, EvalSettings.from_args(args), ScoringSettings.from_args(args), why_settings(args),
                   why_only(args), average, chosen_by)
    print(f"report written to {folder}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
