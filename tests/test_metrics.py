"""nmt.metrics: scores checked against hand computations and sacreBLEU itself; the paired bootstrap."""

import math
import random
import sys

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF

from nmt.metrics import (
    chrf_pp_score,
    compound_split_bleu,
    paired_bootstrap,
    sacrebleu_score,
    split_compounds,
    tokenized_bleu,
)

REFS = ["The cat sat on the mat.", "A dog barked at the moon, loudly!", "We drive to Berlin on the motorway."]


@pytest.mark.parametrize("fn", [sacrebleu_score, tokenized_bleu, chrf_pp_score])
def test_identical_is_100(fn):
    assert fn(REFS, REFS)["score"] == pytest.approx(100.0)


def test_identical_compound_split_is_100():
    pytest.importorskip("sacremoses")
    assert compound_split_bleu(REFS, REFS)["score"] == pytest.approx(100.0)


@pytest.mark.parametrize("fn", [sacrebleu_score, tokenized_bleu, chrf_pp_score, compound_split_bleu])
def test_length_mismatch_names_both_counts(fn):
    with pytest.raises(ValueError, match=r"2 hypotheses but 3 references"):
        fn(REFS[:2], REFS)


def test_bad_inputs():
    with pytest.raises(ValueError, match="no sentences"):
        sacrebleu_score([], [])
    with pytest.raises(TypeError, match="single string"):
        sacrebleu_score("a b c", "a b c")
    with pytest.raises(TypeError, match=r"references\[0\]"):
        sacrebleu_score(["a b"], [["a b"]])  # sacrebleu's list-of-reference-streams is not our format


def test_sacrebleu_score_is_13a_cased():
    hyps = ["The cat sat on a mat.", "a dog barked at the moon loudly!", "We drive to Berlin."]
    result = sacrebleu_score(hyps, REFS)
    assert result["score"] == pytest.approx(BLEU().corpus_score(hyps, [REFS]).score)
    assert "tok:13a" in result["signature"] and "case:mixed" in result["signature"]


def test_tokenized_bleu_by_hand():
    hyps = ["the cat sat on the mat", "hello world"]
    refs = ["the cat sat on a mat", "hello there world"]
    # sentence 1 (6 hyp tokens, 6 ref tokens), clipped matches / hyp n-grams:
    #   1-grams: the(2, clipped to 1) cat sat on mat -> 5/6
    #   2-grams: the cat, cat sat, sat on | on the, the mat -> 3/5
    #   3-grams: the cat sat, cat sat on | sat on the, on the mat -> 2/4
    #   4-grams: the cat sat on | cat sat on the, sat on the mat -> 1/3
    # sentence 2 (2 hyp tokens, 3 ref tokens): 1-grams 2/2, 2-grams 0/1 ("hello world"), no 3-/4-grams
    p1, p2, p3, p4 = (5 + 2) / (6 + 2), (3 + 0) / (5 + 1), 2 / 4, 1 / 3
    bp = math.exp(1 - 9 / 8)  # hyp length 8 < ref length 9
    expected = 100 * bp * (p1 * p2 * p3 * p4) ** 0.25
    result = tokenized_bleu(hyps, refs)
    assert result["score"] == pytest.approx(expected, rel=1e-9)
    assert "tok:none" in result["signature"]


def test_tokenized_bleu_does_not_tokenize_further():
    # "cat," is one token here; 13a would split it off and find a perfect match
    assert sacrebleu_score(["the cat, sat"], ["the cat , sat"])["score"] == pytest.approx(100.0)
    # 1-grams 2/3, 2-grams 0/2 -> no smoothing (multi-bleu.perl): BLEU 0
    assert tokenized_bleu(["the cat, sat"], ["the cat , sat"])["score"] == 0.0


def test_chrf_pp_is_sacrebleu_chrf_word_order_2():
    hyps = ["The cat sat on a mat.", "a dog barked at the moon loudly!", "We drive to Berlin."]
    result = chrf_pp_score(hyps, REFS)
    reference = CHRF(word_order=2)
    assert result["score"] == pytest.approx(reference.corpus_score(hyps, [REFS]).score)
    assert result["score"] != pytest.approx(CHRF().corpus_score(hyps, [REFS]).score)  # not plain chrF
    assert "nw:2" in result["signature"] and result["signature"] == str(reference.get_signature())


def test_split_compounds():
    assert split_compounds("Auto-Bahn") == "Auto ##AT##-##AT## Bahn"
    assert split_compounds("die Nord-Ost-See ist - wie immer - kalt") == (
        "die Nord ##AT##-##AT## Ost ##AT##-##AT## See ist - wie immer - kalt"
    )
    assert split_compounds("A-B-C") == "A ##AT##-##AT## B-C"  # the reference script's non-overlapping matches


def test_compound_split_rewards_a_correct_compound_part():
    pytest.importorskip("sacremoses")
    refs = ["Wir fahren heute Abend auf der Auto-Bahn nach Berlin und dann weiter nach Hamburg."]
    one_part = ["Wir fahren heute Abend auf der Auto-Straße nach Berlin und dann weiter nach Hamburg."]
    no_part = ["Wir fahren heute Abend auf der Fernstraße nach Berlin und dann weiter nach Hamburg."]
    with_part = compound_split_bleu(one_part, refs)
    without_part = compound_split_bleu(no_part, refs)
    assert with_part["score"] > without_part["score"] > 0
    assert with_part["signature"].startswith("moses-tok:de+compound-split|")
    assert "tok:none" in with_part["signature"]
    # without the splitting, both are one wrong token and score the same
    from nmt.metrics import moses_tokenize

    def tok(lines):
        return [moses_tokenize(x) for x in lines]

    assert tokenized_bleu(tok(one_part), tok(refs))["score"] == pytest.approx(
        tokenized_bleu(tok(no_part), tok(refs))["score"]
    )


def test_compound_split_moses_escaping_is_symmetric():
    pytest.importorskip("sacremoses")
    lines = ['Er sagte: "Tom & Jerry\'s Auto-Haus" (1.000 km).']
    assert compound_split_bleu(lines, lines)["score"] == pytest.approx(100.0)


def test_compound_split_without_sacremoses(monkeypatch):
    import nmt.metrics

    nmt.metrics._moses_tokenizer.cache_clear()
    monkeypatch.setitem(sys.modules, "sacremoses", None)  # makes the import fail
    try:
        with pytest.raises(ImportError, match="pip install sacremoses"):
            compound_split_bleu(["a"], ["a"])
    finally:
        nmt.metrics._moses_tokenizer.cache_clear()


def _corpus(n=300, seed=0):
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]
    refs = [" ".join(rng.choice(words) for _ in range(rng.randint(8, 20))) for _ in range(n)]

    def garble(line, p):
        return " ".join(w if rng.random() > p else rng.choice(words) for w in line.split())

    return refs, garble


def test_paired_bootstrap_identical_systems():
    refs, garble = _corpus()
    hyps = [garble(r, 0.3) for r in refs]
    result = paired_bootstrap(hyps, list(hyps), refs, n=200)
    assert result["delta"] == 0.0
    assert result["p_value"] >= 0.5
    assert result["ci95"] == (0.0, 0.0)
    assert result["n"] == 200


def test_paired_bootstrap_clearly_better_system():
    refs, garble = _corpus()
    baseline = [garble(r, 0.5) for r in refs]
    result = paired_bootstrap(baseline, refs, refs, n=200)
    full = BLEU()
    expected = full.corpus_score(refs, [refs]).score - full.corpus_score(baseline, [refs]).score
    assert result["delta"] == pytest.approx(expected) and result["delta"] > 0
    assert result["p_value"] < 0.05
    assert result["p_value"] == pytest.approx(1 / 201)  # the system wins every resample: (0 + 1) / (n + 1)
    lo, hi = result["ci95"]
    assert 0 < lo <= result["delta"] <= hi
    # the other way round, the "system" never beats the baseline
    assert paired_bootstrap(refs, baseline, refs, n=200)["p_value"] == pytest.approx(1.0)


def test_paired_bootstrap_is_deterministic():
    refs, garble = _corpus()
    a = [garble(r, 0.3) for r in refs]
    b = [garble(r, 0.3) for r in refs]  # about equally good: resampling decides
    first = paired_bootstrap(a, b, refs, n=100, seed=7)
    assert paired_bootstrap(a, b, refs, n=100, seed=7) == first
    assert paired_bootstrap(a, b, refs, n=100, seed=8)["ci95"] != first["ci95"]


def test_paired_bootstrap_p_value_recomputed_with_sacrebleu():
    """p = (resamples in which the system does not beat the baseline + 1) / (n + 1), recomputed here from scratch:
    the same resamples (len(refs) indices with replacement from numpy's default_rng(seed)), each scored by
    sacreBLEU's own corpus_score rather than from summed per-sentence statistics."""
    refs, garble = _corpus(120)
    a = [garble(r, 0.3) for r in refs]
    b = [garble(r, 0.3) for r in refs]  # about equally good: p is neither near 0 nor near 1
    n, seed = 60, 7
    indices = np.random.default_rng(seed).integers(0, len(refs), size=(n, len(refs)))
    bleu = BLEU()
    not_better = 0
    for row in indices:
        resampled = [[refs[i] for i in row]]
        delta = (bleu.corpus_score([b[i] for i in row], resampled).score
                 - bleu.corpus_score([a[i] for i in row], resampled).score)
        not_better += delta <= 0
    result = paired_bootstrap(a, b, refs, n=n, seed=seed)
    assert result["p_value"] == pytest.approx((not_better + 1) / (n + 1))
    assert 0.05 < result["p_value"] < 0.95


def test_paired_bootstrap_validates():
    refs, _ = _corpus(10)
    with pytest.raises(ValueError, match=r"10 baseline hypotheses, 9 system hypotheses and 10 references"):
        paired_bootstrap(refs, refs[:9], refs)
    with pytest.raises(ValueError, match=r"10 baseline hypotheses, 10 system hypotheses and 11 references"):
        paired_bootstrap(refs, refs, refs + ["x"])
    with pytest.raises(ValueError, match="positive"):
        paired_bootstrap(refs, refs, refs, n=0)
