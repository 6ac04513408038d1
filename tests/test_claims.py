"""nmt.claims: the paper's claims become comparisons, decided from the runs against test-set and seed noise."""

import statistics

import pytest
import sacrebleu

from nmt import claims
from nmt.evaluate import RunScore

WORDS = "the a cat dog sat ran on under mat rug house tree big small red blue".split()
REFS = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(8)) + f" n{i}" for i in range(80)]


def degraded(drop_every: int, offset: int = 0) -> list[str]:
    """The references with every ``drop_every``-th word (from ``offset``) dropped: lower BLEU, deterministic."""
    if drop_every == 0:
        return list(REFS)
    return [" ".join(w for k, w in enumerate(r.split()) if (k + offset) % drop_every) for r in REFS]


def run(skip, lam, seed, hyps, diverged=False):
    bleu = sacrebleu.corpus_bleu(hyps, [REFS]).score if hyps else float("nan")
    return RunScore(run=f"{skip}-{lam}-{seed}", skip=skip, lam=float(lam), seed=seed, arch="tiny", parameters=1,
                    updates=10, tokens_seen=100, wall_time_s=1.0, diverged=diverged, checkpoint="", bleu=bleu,
                    bleu_signature="", chrf=0.0, chrf_signature="", hypotheses=hyps, references=REFS)


def test_comparisons_follow_the_cells_the_study_has():
    cells = {("post_ln", 1.0), ("skip", 1.0), ("xskip", 0.5), ("xskip", 2.0), ("xskip_ln", 2.0), ("rskip_ln", 2.0),
             ("rskip_ln", 3.0), ("pre_ln", 1.0)}
    got = [(c.better, c.worse) for c in claims.comparisons(cells)]
    assert got == [(("skip", 1.0), ("xskip", 0.5)), (("skip", 1.0), ("xskip", 2.0)),
                   (("xskip_ln", 2.0), ("xskip", 2.0)),
                   (("rskip_ln", 2.0), ("post_ln", 1.0)), (("rskip_ln", 3.0), ("post_ln", 1.0)),
                   (("rskip_ln", 2.0), ("xskip_ln", 2.0))]
    assert claims.comparisons({("post_ln", 1.0), ("pre_ln", 1.0)}) == []
    assert "lacks the cells" in claims.markdown([])


def _post_ln(spread: bool):
    # three post_ln seeds; with spread their BLEU differs a lot (large seed noise), without it barely
    return [run("post_ln", 1, s, degraded(d if spread else 4)) for s, d in zip((1, 2, 3), (3, 4, 6))]


def test_a_clear_win_is_supported_and_a_clear_loss_contradicted():
    scores = [*_post_ln(spread=False), run("post_ln", 1, 4, degraded(4, 1))]  # σ from 4 seeds, small
    scores += [run("rskip_ln", 2, s, degraded(0)) for s in (1, 2, 3)]  # perfect output: far better
    scores += [run("skip", 1, 1, degraded(3)), run("xskip", 2, 1, degraded(0))]  # xskip beats skip: the opposite
    rows = {(r["better"], r["worse"]): r for r in claims.check(scores, bootstrap=200)}
    win = rows[("rskip_ln λ=2", "post_ln")]
    assert win["verdict"] == "supported" and win["seeds"] == 3 and win["delta_bleu"] > 10
    assert win["p_value_max"] < 0.05 and 0 < win["noise_threshold"] < win["delta_bleu"]
    loss = rows[("skip", "xskip λ=2")]
    assert loss["verdict"] == "contradicted" and loss["delta_bleu"] < 0 and loss["seeds"] == 1
    text = claims.markdown(list(rows.values()))
    assert "**supported**" in text and "**contradicted**" in text


def test_within_the_seed_noise_is_not_resolved():
    scores = _post_ln(spread=True)  # post_ln's seeds differ by several BLEU
    sigma = claims.seed_sigma(scores)
    assert sigma > 1
    scores += [run("rskip_ln", 2, s, degraded(d, offset=1)) for s, d in zip((1, 2, 3), (6, 3, 4))]  # seed-like
    (row,) = claims.check(scores, bootstrap=200)
    assert row["verdict"] == "not resolved" and "seed noise" in row["why"]
    assert abs(row["delta_bleu"]) <= row["noise_threshold"]


def test_one_post_ln_seed_leaves_the_seed_noise_unknown():
    scores = [run("post_ln", 1, 1, degraded(4)), run("rskip_ln", 2, 1, degraded(0))]
    (row,) = claims.check(scores, bootstrap=100)
    assert row["verdict"] == "not resolved" and "seed noise is unknown" in row["why"] and row["p_value_max"] < 0.05


def test_a_cell_that_diverged_in_every_run_is_worse():
    scores = [*_post_ln(spread=False), run("skip", 1, 1, degraded(4)), run("xskip", 2, 1, [], diverged=True)]
    scores += [run("xskip_ln", 2, 1, degraded(3))]
    rows = {(r["better"], r["worse"]): r for r in claims.check(scores, bootstrap=100)}
    assert rows[("skip", "xskip λ=2")]["verdict"] == "supported"
    assert "xskip λ=2 diverged" in rows[("skip", "xskip λ=2")]["why"]
    assert rows[("xskip_ln λ=2", "xskip λ=2")]["verdict"] == "supported"


def test_the_seed_noise_is_pooled_over_every_variant_with_seeds():
    # post_ln has not started to learn: its seeds agree (σ 0), which says nothing about the setting's seed noise
    flat = [run("post_ln", 1, s, ["x"] * len(REFS)) for s in (1, 2, 3)]
    spread = [run("rskip_ln", 2, s, degraded(d)) for s, d in zip((1, 2, 3), (3, 4, 6))]
    bleu = [r.bleu for r in spread]
    assert claims.seed_sigma(flat) == 0.0
    # √(Σ (nᵢ − 1)·sᵢ² / Σ (nᵢ − 1)): two cells of three seeds, one with no spread
    expected = ((2 * statistics.variance(bleu)) / 4) ** 0.5
    assert claims.seed_sigma(flat + spread) == pytest.approx(expected) and expected > 1
    (row,) = claims.check(flat + spread, bootstrap=100)
    assert row["noise_threshold"] == pytest.approx(1.95996 * expected * (2 / 3) ** 0.5)
    assert claims.seed_sigma([run("post_ln", 1, 1, degraded(4)), run("pre_ln", 1, 1, degraded(3))]) is None
    # the cells pooled (the report says how many): a diverged seed does not count, so pre_ln's one seed left is none
    diverged = run("pre_ln", 1, 2, degraded(3), diverged=True)
    assert len(claims.seeded_cells(flat + spread + [run("pre_ln", 1, 1, degraded(3)), diverged])) == 2
