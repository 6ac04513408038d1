"""Two studies of the same variants side by side: ``python -m nmt.report.side_by_side A B`` prints Markdown.

A and B are study report folders (each with the ``results.json`` that ``nmt.report`` writes; a report copied into
docs/ works alike), e.g. the study after 220 updates and the one trained to convergence: how fast a variant starts and
where it ends in one table, then the paper's claims as each study decided them. Every number is read from the two
files, none recomputed; rows are joined on (variant, λ), claims on (claim, A, B). Each study's "stopped" column says
where its runs ended: a Δ between runs of different budgets is not the variant's alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nmt.residual import variant_order
from nmt.tables import MISSING, cell, count, markdown_table, per_seed


class StudyError(ValueError):
    """A study folder that cannot be read; the message names the file."""


def load(folder: Path, weights: str | None = None) -> dict:
    """The report's results.json in ``folder`` (a report folder, or a study folder holding report/), with ``table``:
    its table of ``weights`` (as the report names them: "best.ckpt", "average of the last 5 checkpoints"; None: the
    first, which decides the claims)."""
    path = next((f for f in (folder / "results.json", folder / "report" / "results.json") if f.is_file()), None)
    if path is None:
        raise StudyError(f"{folder}: no results.json in it or in its report/ (python -m nmt.report STUDY writes "
                         "STUDY/report/results.json)")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
        tables = results["tables"]
    except (ValueError, KeyError, TypeError) as e:
        raise StudyError(f"{path}: not a study report's results.json ({e})") from None
    chosen = [t for t in tables if weights is None or t.get("weights") == weights]
    if not chosen:
        raise StudyError(f"{path}: no table of the weights {weights!r} (it has: "
                         + ", ".join(repr(t.get("weights")) for t in tables) + ")")
    return {**results, "table": chosen[0]}


def _bleu(row: dict | None) -> str:
    if row is None:
        return MISSING
    scored = row["seeds"] - row["diverged"]
    text = MISSING if row["bleu_mean"] is None else (
        cell(row["bleu_mean"]) + (f" ± {row['bleu_std']:.2f}" if scored > 1 else ""))
    return text + (f" ({row['diverged']} diverged)" if row["diverged"] else "")


def _delta(row: dict | None) -> str:
    if row is None or row.get("delta_bleu") is None:
        return MISSING
    return f"{row['delta_bleu']:+.2f} (p {row['p_value_max']:.3f})" if row.get("p_value_max") is not None else \
        f"{row['delta_bleu']:+.2f}"


def _stopped(row: dict | None) -> str:
    """The row's "stopped" (each seed's, "; "-joined as older reports wrote it even when all are alike) per_seed."""
    return MISSING if row is None or not row.get("stopped") else per_seed(row["stopped"].split("; "))


def _noise(study: dict, label: str) -> str:
    mdd = study["table"].get("detectable_difference")
    if not mdd:
        return f"{label}: no variant has two seeds, the seed noise is not known"
    t = f", {mdd['significant_t']:.2f} with Student's t" if mdd.get("significant_t") is not None else ""
    return (f"{label}: σ = {mdd['sigma']:.2f} BLEU between seeds, n = {mdd['n']}: a Δ of two n-seed means is "
            f"significant beyond {mdd['significant_normal']:.2f}{t}")


def side_by_side(a: dict, b: dict, labels: tuple[str, str]) -> str:
    """The Markdown of two loaded studies (``load``): the BLEU table, the seed noise of each, the claims."""
    rows = [{(r["variant"], r["lambda"]): r for r in s["table"]["rows"]} for s in (a, b)]
    cells = sorted(set(rows[0]) | set(rows[1]), key=lambda key: variant_order(*key))
    head = ["variant", "λ"] + [f"{label}: {what}" for label in labels
                              for what in ("seeds", "test BLEU", "Δ vs post_ln (p)", "stopped (at update)")]
    table = markdown_table(head, [
        [variant, f"{lam:g}", *[part for r in (rows[0].get(key), rows[1].get(key))
                                for part in (MISSING if r is None else str(r["seeds"]), _bleu(r), _delta(r),
                                             _stopped(r))]]
        for key in cells for variant, lam in [key]])
    weights = [s["table"].get("weights", "best.ckpt") for s in (a, b)]
    text = [table, "", f"Test BLEU: mean ± std over the seeds that did not diverge ({labels[0]}: {weights[0]}; "
            f"{labels[1]}: {weights[1]}); Δ: paired on the seeds both variants have, p: the paired bootstrap's, the "
            "largest over those seeds; stopped: why and at which update each seed's run ended (runs with different "
            "budgets differ by more than their variant).", "",
            "Seed noise. " + _noise(a, labels[0]) + ". " + _noise(b, labels[1]) + "."]
    claims = [{(c["claim"], c["better"], c["worse"]): c for c in s.get("claims", [])} for s in (a, b)]
    keys = list(dict.fromkeys([*claims[0], *claims[1]]))
    if keys:
        def verdict(c: dict | None) -> str:
            if c is None:
                return MISSING
            if c.get("delta_bleu") is None:  # decided without a Δ, e.g. every run of the worse cell diverged
                return f"**{c['verdict']}** ({c.get('why') or 'no Δ'})"
            return f"**{c['verdict']}** (Δ {c['delta_bleu']:+.2f}, {count(c['seeds'], 'seed')})"

        text += ["", markdown_table(["the paper's claim", "A", "B", *labels],
                                    [[claim, better, worse, verdict(claims[0].get(k)), verdict(claims[1].get(k))]
                                     for k in keys for claim, better, worse in [k]])]
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmt.report.side_by_side", description=__doc__.split("\n\n")[0])
    p.add_argument("first", type=Path, help="a study's report folder (holding results.json)")
    p.add_argument("second", type=Path, help="another one, of the same variants")
    p.add_argument("--labels", nargs=2, default=None, metavar=("FIRST", "SECOND"),
                   help="the two studies' names in the table (default: their folders' names)")
    p.add_argument("--weights", nargs=2, default=[None, None], metavar=("FIRST", "SECOND"),
                   help="which table of each: \"best.ckpt\" or \"average of the last N checkpoints\" (default: the "
                   "first table of each, the one that decides the claims)")
    args = p.parse_args(argv)
    try:
        a, b = load(args.first, args.weights[0]), load(args.second, args.weights[1])
    except StudyError as e:
        print(f"side_by_side: error: {e}", file=sys.stderr)
        return 2
    labels = tuple(args.labels) if args.labels else (args.first.name, args.second.name)
    sys.stdout.write(side_by_side(a, b, labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
