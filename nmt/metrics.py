"""Scoring translations the way the literature reports them.

Every function takes the hypotheses and the references of one test set as two lists of strings, line by
line (one reference per sentence), and returns a dict with ``score`` (0-100) and ``signature``: the
signature says how the number was computed, and two numbers are comparable only when their signatures
match. Which function to use depends on the number you want to compare with:

- ``sacrebleu_score``: sacreBLEU (13a tokenization, cased) on *detokenized* text, the standard since
  Post (2018). Compare only with other sacreBLEU numbers of the same signature.
- ``chrf_pp_score``: chrF++ (character n-grams up to 6 plus word n-grams up to 2, β = 2) on detokenized
  text, as sacreBLEU computes it.
- ``tokenized_bleu``: BLEU on text that is *already tokenized*, split on whitespace only (the
  ``multi-bleu.perl`` way, no smoothing). This is the protocol of IWSLT'15 English-Vietnamese papers
  (Luong & Manning 2015 and those who follow them): compare with those only on the same tokenization.
- ``compound_split_bleu``: the "tokenized BLEU with compound splitting" of Vaswani et al. (2017),
  27.3 / 28.4 on WMT'14 English-German: Moses tokenization, hyphens split into ``##AT##-##AT##``, then
  BLEU on the result. It is usually higher than sacreBLEU on the same output (see Post, 2018), so never
  compare it with a sacreBLEU number.
- ``paired_bootstrap``: whether one system's sacreBLEU is significantly higher than another's on the
  same test set (paired bootstrap resampling, Koehn 2004).

Inputs are checked: both lists must have the same number of sentences (``ValueError`` otherwise, giving
both counts) and hold strings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

__all__ = [
    "chrf_pp_score",
    "compound_split_bleu",
    "moses_tokenize",
    "paired_bootstrap",
    "sacrebleu_score",
    "split_compounds",
    "tokenized_bleu",
]


def _check_pair(hyps: Sequence[str], refs: Sequence[str]) -> tuple[list[str], list[str]]:
    """The two lists, after checking that they are lists of strings of the same, non-zero length."""
    for name, seq in (("hypotheses", hyps), ("references", refs)):
        if isinstance(seq, str):
            raise TypeError(f"{name}: expected a list of sentences, got a single string")
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise ValueError(
            f"{len(hyps)} hypotheses but {len(refs)} references: they must be the same test set, line by line"
        )
    if not hyps:
        raise ValueError("no sentences to score (0 hypotheses and 0 references)")
    for name, seq in (("hypotheses", hyps), ("references", refs)):
        for i, s in enumerate(seq):
            if not isinstance(s, str):
                raise TypeError(f"{name}[{i}] is a {type(s).__name__}, not a string (one reference per sentence)")
    return hyps, refs


def _result(score, metric) -> dict:
    return {"score": float(score.score), "signature": str(metric.get_signature())}


def sacrebleu_score(hyps: list[str], refs: list[str]) -> dict:
    """sacreBLEU of detokenized ``hyps`` against detokenized ``refs``: 13a tokenization, cased, exp smoothing.

    Comparable with published sacreBLEU scores whose signature is the same
    (``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:…``), not with tokenized BLEU.
    """
    hyps, refs = _check_pair(hyps, refs)
    bleu = BLEU()
    return _result(bleu.corpus_score(hyps, [refs]), bleu)


def chrf_pp_score(hyps: list[str], refs: list[str]) -> dict:
    """chrF++ of detokenized text: sacreBLEU's ``CHRF(word_order=2)`` (character 6-grams, word 2-grams, β = 2).

    The signature shows ``nw:2`` (word n-gram order 2: chrF++; ``nw:0`` would be plain chrF). Comparable
    with sacreBLEU chrF++ scores of the same signature.
    """
    hyps, refs = _check_pair(hyps, refs)
    chrf = CHRF(word_order=2)
    return _result(chrf.corpus_score(hyps, [refs]), chrf)


def _bleu_no_tokenization() -> BLEU:
    # multi-bleu.perl: whitespace split only, cased, no smoothing (a zero n-gram precision gives BLEU 0);
    # force: tokenized text is what we expect here, so no "forgot to detokenize" warning.
    return BLEU(tokenize="none", smooth_method="none", force=True)


def tokenized_bleu(hyps: list[str], refs: list[str]) -> dict:
    """BLEU of already-tokenized text, split on whitespace and nothing else: ``multi-bleu.perl`` style.

    Cased, no smoothing, one reference. This is the IWSLT'15 English-Vietnamese protocol (tokenized
    hypotheses scored against the tokenized ``tst2013.vi``); the score depends on the tokenization, so it
    is comparable only with numbers computed on the same tokenized references, and never with sacreBLEU.
    The signature shows ``tok:none|smooth:none``.
    """
    hyps, refs = _check_pair(hyps, refs)
    bleu = _bleu_no_tokenization()
    return _result(bleu.corpus_score(hyps, [refs]), bleu)


_COMPOUND = re.compile(r"(\S)-(\S)")


def split_compounds(line: str) -> str:
    """Split hyphenated compounds as WMT'14 EN-DE "compound splitting" does:
    ``Auto-Bahn`` → ``Auto ##AT##-##AT## Bahn``.

    This is the substitution ``s{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g`` of tensor2tensor's and fairseq's
    scripts, reproduced exactly, including its one quirk: matches do not overlap, so in a chain with a
    one-character middle part (``A-B-C``) only the first hyphen is split (``A ##AT##-##AT## B-C``), while
    ``Nord-Ost-See`` gives ``Nord ##AT##-##AT## Ost ##AT##-##AT## See``.
    """
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


@functools.lru_cache(maxsize=8)
def _moses_tokenizer(lang: str):
    try:
        from sacremoses import MosesTokenizer
    except ImportError as e:
        raise ImportError(
            "compound_split_bleu needs the Moses tokenizer from the sacremoses package: pip install sacremoses"
        ) from e
    return MosesTokenizer(lang=lang)


def moses_tokenize(line: str, lang: str = "de") -> str:
    """``tokenizer.perl -l LANG`` on one line (sacremoses), with its default escaping (``&`` → ``&amp;`` …)."""
    return _moses_tokenizer(lang).tokenize(line, return_str=True, escape=True)


def compound_split_bleu(hyps: list[str], refs: list[str], lang: str = "de") -> dict:
    """The "tokenized BLEU with compound splitting" of Vaswani et al. (2017) for WMT'14 EN-DE (27.3 / 28.4).

    Both the detokenized hypotheses and the detokenized references go through the same steps: the Moses
    tokenizer for ``lang`` (sacremoses, default escaping, as ``tokenizer.perl -l de``), then
    ``split_compounds`` (``a-b`` → ``a ##AT##-##AT## b``), then cased BLEU without further tokenization and
    without smoothing (``multi-bleu.perl``). The hyphen splitting makes a compound's parts separate tokens,
    so a hypothesis that gets one part of a compound right earns n-gram matches.

    Comparable only with numbers computed this way (the Transformer papers' WMT'14 EN-DE table); it is
    usually higher than sacreBLEU on the same output. Needs ``sacremoses``.
    """
    hyps, refs = _check_pair(hyps, refs)
    tok = _moses_tokenizer(lang)  # fails early, with a clear message, if sacremoses is missing

    def prepare(lines: list[str]) -> list[str]:
        return [split_compounds(tok.tokenize(line, return_str=True, escape=True)) for line in lines]

    bleu = _bleu_no_tokenization()
    score = bleu.corpus_score(prepare(hyps), [prepare(refs)])
    return {
        "score": float(score.score),
        "signature": f"moses-tok:{lang}+compound-split|{bleu.get_signature()}",
    }


def _resample_weights(rng: np.random.Generator, n: int, size: int):
    """Yield, in chunks of resamples, how often each sentence is drawn in each resample: (chunk, size) arrays."""
    chunk = max(1, min(n, 4_000_000 // size))  # bound the memory: about 32 MB of indices per chunk
    done = 0
    while done < n:
        m = min(chunk, n - done)
        idx = rng.integers(0, size, size=(m, size))
        flat = (idx + (np.arange(m) * size)[:, None]).ravel()
        yield np.bincount(flat, minlength=m * size).reshape(m, size).astype(np.float64)
        done += m


def paired_bootstrap(
    hyps_baseline: list[str], hyps_system: list[str], refs: list[str], n: int = 1000, seed: int = 12345
) -> dict:
    """Paired bootstrap resampling (Koehn 2004) of sacreBLEU (13a, cased) between two systems on one test set.

    Each of the ``n`` resamples draws ``len(refs)`` sentence indices with replacement (numpy
    ``default_rng(seed)``: deterministic given ``seed``); both systems are scored on the same resample,
    from per-sentence BLEU sufficient statistics (n-gram matches, n-gram counts, lengths), so a resample
    costs a matrix product, not a re-tokenization.

    Returns a dict:

    - ``delta``: system BLEU − baseline BLEU on the full test set;
    - ``p_value``: one-sided, for "the system is better than the baseline":
      ``(c + 1) / (n + 1)`` where ``c`` is the number of resamples in which the system does *not* beat
      the baseline (Δ ≤ 0); the +1 keeps it from being 0 with finitely many resamples (it is at least
      ``1/(n+1)``). Identical outputs give 1. To test the other direction, swap the two systems;
    - ``ci95``: (lo, hi), the 2.5th and 97.5th percentiles of the resampled Δ;
    - ``n``, and for reference ``baseline`` and ``system`` (full-set BLEU) and ``signature``.

    Why not ``sacrebleu.significance`` (``--paired-bs``): its p-value is two-sided on |Δ| with the
    resampled differences centred on their mean, so two identical systems get p = 1/(n+1) (it reads as
    "significant"), its seed comes from the ``SACREBLEU_SEED`` environment variable, and it gives no
    interval for Δ. The resampling here follows Koehn's definition instead.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of resamples, got {n!r}")
    if not (len(hyps_baseline) == len(hyps_system) == len(refs)):
        raise ValueError(
            f"{len(hyps_baseline)} baseline hypotheses, {len(hyps_system)} system hypotheses and "
            f"{len(refs)} references: all three must be the same test set, line by line"
        )
    hyps_baseline, refs = _check_pair(hyps_baseline, refs)
    hyps_system, _ = _check_pair(hyps_system, refs)

    bleu = BLEU(references=[refs])  # reference n-grams are extracted once, for both systems
    # Per-sentence statistics: [hyp_len, ref_len, matches_1..4, totals_1..4] (the same private helper
    # sacrebleu.significance uses); the corpus score is computed from their column sums.
    stats_b = np.asarray(bleu._extract_corpus_statistics(hyps_baseline, None), dtype=np.float64)
    stats_s = np.asarray(bleu._extract_corpus_statistics(hyps_system, None), dtype=np.float64)

    def score(summed: np.ndarray) -> float:
        return bleu._compute_score_from_stats(np.rint(summed).astype(np.int64).tolist()).score

    base, system = score(stats_b.sum(0)), score(stats_s.sum(0))
    rng = np.random.default_rng(seed)
    deltas = []
    for weights in _resample_weights(rng, n, len(refs)):
        # counts are integers far below 2**53, so the float64 products are exact
        for sb, ss in zip(weights @ stats_b, weights @ stats_s):
            deltas.append(score(ss) - score(sb))
    deltas = np.asarray(deltas)
    not_better = int(np.sum(deltas <= 0))
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return {
        "delta": system - base,
        "p_value": (not_better + 1) / (n + 1),
        "n": n,
        "ci95": (float(lo), float(hi)),
        "baseline": base,
        "system": system,
        "signature": f"{bleu.get_signature()}|paired-bs:{n}|seed:{seed}",
    }
