"""The paper's qualitative claims, checked against the runs of one study.

Liu et al. (COLING 2020) state, in words (their tables could not be obtained here; see
``../shared/notes/literature.md``):

1. the expanded skip ``λx + F(x)`` learns sub-optimally: with λ ≠ 1 it is worse than ``x + F(x)``;
2. layer normalisation largely repairs it: ``LN(λx + F(x))`` is better than ``λx + F(x)`` at the same λ;
3. the recursive rSkip+LN improves further: better than Post-LN, the original Transformer block, and
   better than ``LN(λx + F(x))`` at the same λ.

Each claim becomes one or more *comparisons* between two cells of the study's table, "A is better than
B". A comparison is decided from the runs themselves, never from the paper:

- Δ is the mean over the seeds both cells share of BLEU(A) − BLEU(B) on the same test set;
- the test-set noise: the paired bootstrap (Koehn 2004) of each shared seed, one-sided in the direction
  of Δ, the largest p over the seeds must be < 0.05;
- the seed noise: |Δ| must exceed 1.96·σ·√(2/n), where σ is the seed-to-seed standard deviation of BLEU,
  pooled over every cell of the study with at least 2 seeds that trained (``seed_sigma``), and n the number
  of shared seeds (a mean of n differences of two single runs has std σ·√(2/n)). Without such a cell σ is
  unknown and the verdict says so.

Both must hold for **supported** (Δ > 0) or **contradicted** (Δ < 0); otherwise the comparison is **not
resolved**: the study cannot tell the two apart. A cell whose every seed diverged is worse than one that
trained; two such cells are not compared.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from nmt.evaluate import BASELINE, RunScore
from nmt.tables import cell, markdown_table

Z_975 = 1.95996
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """One testable statement of the paper: the cell ``better`` has a higher BLEU than the cell ``worse``."""

    claim: str
    better: tuple[str, float]
    worse: tuple[str, float]


def _cell(key: tuple[str, float]) -> str:
    skip, lam = key
    from nmt.residual import residual_class

    has_lambda = getattr(residual_class(skip), "lambda_rule", "one") != "one"
    return f"{skip} λ={lam:g}" if has_lambda else skip


def comparisons(cells: set[tuple[str, float]]) -> list[Comparison]:
    """The paper's claims as comparisons between the (variant, λ) cells this study has."""
    out = []
    xskip = sorted(lam for skip, lam in cells if skip == "xskip" and lam != 1)
    if ("skip", 1.0) in cells:
        out += [Comparison("1. λx + F(x) learns sub-optimally: worse than x + F(x) for λ ≠ 1", ("skip", 1.0),
                           ("xskip", lam)) for lam in xskip]
    out += [Comparison("2. LN largely repairs it: LN(λx + F(x)) beats λx + F(x)", ("xskip_ln", lam), ("xskip", lam))
            for lam in xskip if ("xskip_ln", lam) in cells]
    rskip = sorted(lam for skip, lam in cells if skip == "rskip_ln" and lam != 1)
    if (BASELINE, 1.0) in cells:
        out += [Comparison("3. rSkip+LN improves further: it beats Post-LN", ("rskip_ln", lam), (BASELINE, 1.0))
                for lam in rskip]
    out += [Comparison("3. rSkip+LN improves further: it beats LN(λx + F(x)) at the same λ", ("rskip_ln", lam),
                       ("xskip_ln", lam)) for lam in rskip if ("xskip_ln", lam) in cells]
    return out


def seeded_cells(scores: list[RunScore]) -> list[list[float]]:
    """The BLEU scores of every cell (variant, λ) with at least 2 seeds that trained (not diverged, finite BLEU)."""
    cells: dict[tuple[str, float], list[float]] = {}
    for s in scores:
        if not s.diverged and math.isfinite(s.bleu):
            cells.setdefault((s.skip, s.lam), []).append(s.bleu)
    return [bleu for bleu in cells.values() if len(bleu) >= 2]


def seed_sigma(scores: list[RunScore]) -> float | None:
    """The seed-to-seed standard deviation of BLEU, pooled over every cell (variant, λ) with at least 2 seeds that
    trained (``seeded_cells``): √(Σᵢ (nᵢ − 1)·sᵢ² / Σᵢ (nᵢ − 1)); None without such a cell.

    Pooled rather than post_ln's alone: seed noise belongs to the setting (data, budget, test set), and a baseline
    that has not started to learn (every seed at BLEU ≈ 0, as Post-LN in a deep stack) shows none, which would make
    every difference from it look significant.
    """
    groups = seeded_cells(scores)
    dof = sum(len(bleu) - 1 for bleu in groups)
    if not dof:
        return None
    return math.sqrt(sum((len(bleu) - 1) * statistics.variance(bleu) for bleu in groups) / dof)


def decide(comparison: Comparison, scores: list[RunScore], bootstrap: int = 1000) -> dict:
    """The verdict of one comparison from the runs of its two cells (see the module docstring)."""
    from nmt.metrics import paired_bootstrap

    def runs(key):
        return {s.seed: s for s in scores if (s.skip, s.lam) == key}

    better, worse = runs(comparison.better), runs(comparison.worse)
    row = {"claim": comparison.claim, "better": _cell(comparison.better), "worse": _cell(comparison.worse),
           "delta_bleu": None, "p_value_max": None, "seeds": 0, "noise_threshold": None, "verdict": "not resolved",
           "why": ""}
    trained_better = {k: s for k, s in better.items() if not s.diverged}
    trained_worse = {k: s for k, s in worse.items() if not s.diverged}
    if not better or not worse:
        row["why"] = "a cell has no runs"
        return row
    if not trained_better or not trained_worse:
        if trained_better or trained_worse:
            row["verdict"] = "supported" if trained_better else "contradicted"
            row["why"] = f"every run of {_cell(comparison.worse if trained_better else comparison.better)} diverged"
        else:
            row["why"] = "both cells diverged in every run"
        return row
    seeds = sorted(set(trained_better) & set(trained_worse))
    if not seeds:
        row["why"] = "no seed trained in both cells"
        return row
    delta = statistics.fmean(trained_better[s].bleu - trained_worse[s].bleu for s in seeds)
    p_values = []
    for s in seeds:  # one-sided, in the direction the runs point to
        base, system = (trained_worse[s], trained_better[s]) if delta >= 0 else (trained_better[s], trained_worse[s])
        p_values.append(paired_bootstrap(base.hypotheses, system.hypotheses, system.references, n=bootstrap,
                                         seed=s)["p_value"])
    sigma = seed_sigma(scores)
    threshold = Z_975 * sigma * math.sqrt(2 / len(seeds)) if sigma is not None else None
    row.update(delta_bleu=delta, p_value_max=max(p_values), seeds=len(seeds), noise_threshold=threshold)
    test_set_ok = max(p_values) < ALPHA
    seed_ok = threshold is not None and abs(delta) > threshold
    if test_set_ok and seed_ok:
        row["verdict"] = "supported" if delta > 0 else "contradicted"
        row["why"] = f"Δ beyond the seed noise ±{threshold:.2f} and p < {ALPHA:g}"  # no "|": a Markdown table cell
    elif threshold is None:
        row["why"] = "no variant has 2 seeds: the seed noise is unknown"
    else:
        reasons = [] if seed_ok else [f"Δ within the seed noise ±{threshold:.2f}"]
        reasons += [] if test_set_ok else [f"p ≥ {ALPHA:g}"]
        row["why"] = ", ".join(reasons)
    return row


def check(scores: list[RunScore], bootstrap: int = 1000) -> list[dict]:
    """Every comparison the study's cells allow, decided."""
    cells = {(s.skip, s.lam) for s in scores}
    return [decide(c, scores, bootstrap) for c in comparisons(cells)]


def markdown(rows: list[dict]) -> str:
    """The claims table of the report."""
    if not rows:
        return ("No claim of the paper can be checked: the study lacks the cells they compare (skip and xskip, "
                "xskip and xskip_ln, or rskip_ln and post_ln).")
    head = ["the paper's claim", "A", "B", "Δ BLEU (A − B)", "seeds", "p (max)", "seed noise", "this study"]
    return markdown_table(head, [[r["claim"], r["better"], r["worse"], cell(r["delta_bleu"], "+.2f"), str(r["seeds"]),
                                  cell(r["p_value_max"], ".3f"), cell(r["noise_threshold"], ".2f"),
                                  f"**{r['verdict']}** ({r['why']})"] for r in rows])
