"""The smallest difference in BLEU between two variants that the seed-to-seed noise lets a study detect.

A study trains each variant with n seeds; σ, the standard deviation of BLEU from seed to seed (pooled over the
variants with at least two seeds, ``nmt.claims.seed_sigma``), says how far apart two means of n seeds fall by chance.
``detectable_difference`` turns σ and n into the thresholds the report prints under each table.
"""

from __future__ import annotations

import math

from nmt.tables import cell, count

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


def detectable_difference_text(mdd: dict | None) -> str:
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
