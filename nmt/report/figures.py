"""The report's figures (matplotlib, ``pip install nmt[report]``): curves.png, run_curves.png, bleu.png and
grad_norms.png. Without matplotlib ``figures`` writes none and returns no names; the README then says how to get them.

Every figure colours a variant alike (``variant_colors``) and lists the variants in the tables' order.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from nmt import evaluate
from nmt.config import TrainConfig
from nmt.diagnose.figures import grid
from nmt.metrics_csv import metric_series, read_metrics
from nmt.plotting import legend_below, pyplot, save_figure
from nmt.report.gradient_flow import layer_columns
from nmt.report.runs import configured_runs, in_order, variant_label


def variant_colors(out: Path) -> dict:
    """One colour per variant of the study (label → colour), in the tables' order: the same in every figure."""
    plt = pyplot()
    labels = in_order(configured_runs(out).values())
    if not plt:
        return {}
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")  # beyond 10 variants, tab10 would repeat
    return {label: palette(i % palette.N) for i, label in enumerate(labels)}


def figures(out: Path, folder: Path, rows: list[dict]) -> list[str]:
    """Write the figures; returns their file names (empty without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return []
    cfgs = configured_runs(out)
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
        label = variant_label(cfg)
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
    legend_below(fig, entries, order=in_order(cfgs.values()), ncol=6)  # the tables' order, under both panels
    return save_figure(plt, fig, folder / "curves.png", dpi=120)


def _run_curves_figure(plt, folder: Path, cfgs: dict[Path, TrainConfig], metric_rows: dict[Path, list[dict]]) -> str:
    """run_curves.png: one panel per variant, the validation BLEU of each of its seeds, with the update of the run's
    best validation (★: its best.ckpt) and where it stopped (a dotted line; why, in the legend), from results.json."""
    variants = in_order(cfgs.values())
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
        runs = sorted((cfg.seed, run) for run, cfg in cfgs.items() if variant_label(cfg) == label)
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
    variants = in_order(cfgs[run] for run in metric_rows)
    rows_of = {label: [rows for run, rows in metric_rows.items() if variant_label(cfgs[run]) == label]
               for label in variants}
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
            layers = layer_columns(runs[0][0], side)
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


def _save(plt, fig, path: Path, dpi: int) -> str:
    fig.tight_layout()
    return save_figure(plt, fig, path, dpi)
