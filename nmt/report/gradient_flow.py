"""How evenly the gradient reaches the layers over the first updates: the report's gradient-flow table.

Read from the ``grad_norm/<stack>.<layer>`` columns that train.py writes to metrics.csv with
``--log-layer-grads N`` (the gradient 2-norm of each layer's parameters at each of the first N updates).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from nmt.metrics_csv import read_metrics
from nmt.report.runs import configured_runs, in_order, variant_label
from nmt.tables import cell, markdown_table


def layer_columns(metrics_row: dict, side: str) -> list[str]:
    """The ``grad_norm/<side>.<layer>`` columns of metrics.csv, bottom layer first."""
    return sorted((k for k in metrics_row if k.startswith(f"grad_norm/{side}.")), key=lambda c: int(c.split(".")[-1]))


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
    for run, cfg in configured_runs(out).items():
        logged = [r for r in read_metrics(run) if r.get("grad_norm/encoder.0") not in (None, "")]
        if not logged:
            continue
        columns = {side: layer_columns(logged[0], side) for side in ("encoder", "decoder")}
        log_ratios = {side: [] for side in columns}
        for row in logged:
            for side, layers in columns.items():
                bottom, top = float(row[layers[0]]), float(row[layers[-1]])
                if bottom > 0 and top > 0 and math.isfinite(bottom) and math.isfinite(top):
                    log_ratios[side].append(math.log(bottom / top))
        if log_ratios["encoder"] and log_ratios["decoder"]:
            per_variant.setdefault(variant_label(cfg), []).append(
                (statistics.fmean(log_ratios["encoder"]), statistics.fmean(log_ratios["decoder"]), len(logged)))
            configs[run] = cfg
    rows = []
    for label in in_order(configs.values()):
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
