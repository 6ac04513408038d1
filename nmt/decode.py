"""Decoding: turn source token ids into target token ids with a trained Transformer.

Greedy search with a key/value cache (``nmt.model.DecoderCache``): each step feeds only the newest
token, the decoder's self-attention keys/values of earlier steps are reused and the encoder's
keys/values for cross-attention are computed once. Sentences that have produced end-of-sentence
leave the batch, so the last long sentence does not drag the finished ones along.

Beam search (``beam_search``) decodes every sentence's ``beam`` hypotheses together in one batch of
B·beam rows with the same cache, reordering it as hypotheses are selected, and ranks finished
hypotheses with a length penalty (``length_penalty``).

The output length is bounded per sentence by ``max_len_a · source_length + max_len_b`` (fairseq's
convention; the source length counts its end-of-sentence token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from nmt.model import Transformer


def max_output_lengths(src_mask: Tensor, max_len_a: float, max_len_b: int) -> Tensor:
    """(B,) most output tokens (EOS not counted) per sentence: ``max_len_a · source_length + max_len_b``,
    truncated to an integer; the source length counts the non-padding tokens of the (B, 1, 1, S) mask."""
    return (max_len_a * src_mask.sum(dim=(1, 2, 3)) + max_len_b).long()


@torch.no_grad()
def greedy_decode(
    model: Transformer,
    src: Tensor,
    bos_id: int,
    eos_id: int,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    use_cache: bool = True,
) -> list[list[int]]:
    """Greedy translations of ``src`` (B, S): one list of token ids per sentence, without BOS/EOS.

    ``use_cache=False`` recomputes the whole prefix at every step; it exists to check the cache and to
    measure what the cache saves.
    """
    B = src.size(0)
    memory, src_mask = model.encode(src)
    max_len = max_output_lengths(src_mask, max_len_a, max_len_b)  # (B,)
    limit = int(max_len.max())
    out = torch.full((B, limit + 1), eos_id, dtype=torch.long, device=src.device)
    out[:, 0] = bos_id
    lengths = max_len.clone()  # tokens before EOS; lowered when EOS is produced
    rows = torch.arange(B, device=src.device)  # original row of every sentence still decoding
    cache = model.new_cache() if use_cache else None
    for t in range(limit):
        prefix = out[rows, t : t + 1] if use_cache else out[rows, : t + 1]
        logits = model.decode(prefix, memory, src_mask, cache)[:, -1]
        token = logits.argmax(dim=-1)
        out[rows, t + 1] = token
        done = (token == eos_id) | (max_len[rows] <= t + 1)
        lengths[rows[token == eos_id]] = t
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            rows, memory, src_mask = rows[keep], memory[keep], src_mask[keep]
            if cache is not None:
                cache.reorder(keep)
    return [out[i, 1 : 1 + int(lengths[i])].tolist() for i in range(B)]


LENPEN_STYLES = ("gnmt", "fairseq")


def length_penalty(length: float | Tensor, alpha: float, style: str) -> float | Tensor:
    """The number a finished hypothesis's summed log-probability is divided by, for ``length`` tokens.

    ``"gnmt"``: ((5 + length) / 6)^α (Wu et al. 2016; Vaswani et al. 2017 use it with α = 0.6);
    ``"fairseq"``: length^α. Beam search passes the output length *including* the final EOS (≥ 1), in
    both styles. α = 0 gives 1 (no normalisation); α > 0 favours longer outputs. A tensor ``length``
    gives a tensor.
    """
    if style == "gnmt":
        return ((5 + length) / 6) ** alpha
    if style == "fairseq":
        return length**alpha
    raise ValueError(f"unknown length penalty style {style!r}; known: {', '.join(LENPEN_STYLES)}")


@torch.no_grad()
def beam_search(
    model: Transformer,
    src: Tensor,
    bos_id: int,
    eos_id: int,
    beam: int = 4,
    lenpen: float = 0.6,
    lenpen_style: str = "gnmt",
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    use_cache: bool = True,
) -> list[list[int]]:
    """Best hypothesis per source sentence of ``src`` (B, S) (token ids without BOS/EOS).

    All B sentences × ``beam`` (k) hypotheses are decoded together: row i·k + j of the batch is
    hypothesis j of sentence i. The encoder runs once; its output is repeated to B·k rows once, so the
    cross-attention keys/values are computed once, at the first step, and then only move when
    sentences leave the batch. Step t (every live hypothesis has t tokens after BOS):

    1. decode the newest token of every live hypothesis (with ``use_cache``, only that token: the
       ``DecoderCache`` holds the earlier keys/values; without it, the whole prefix again) and take
       log-probabilities in float32;
    2. a candidate is a hypothesis extended by one token, scored by the sum of its log-probabilities;
       each sentence keeps its 2k best of k·V candidates;
    3. an EOS among the k best finishes that hypothesis: it is scored sum / ``length_penalty(t + 1)``
       and replaces the sentence's best finished hypothesis if higher;
    4. the k best candidates that are not EOS are the live hypotheses of step t + 1 (the 2k contain
       at least k, since each hypothesis has a single EOS); token history and cache rows are
       reordered to follow them with ``DecoderCache.reorder``;
    5. a sentence that is done leaves the batch (its rows of memory, mask, history and cache are
       dropped in the same reorder), so the batch shrinks; the search ends when all are done.

    Conventions:

    - Score of a finished hypothesis y_1…y_L EOS: Σ log p (over the L tokens *and* the EOS) divided by
      ``length_penalty(L + 1, lenpen, lenpen_style)``: the length counts the EOS, for both styles.
    - Length limit: as ``greedy_decode``, at most ``max_len = int(max_len_a · source_length + max_len_b)``
      tokens before EOS, the source length counting its non-padding tokens. A hypothesis that reaches
      it may only continue with EOS (forced at step ``max_len``; its log-probability still counts),
      so every sentence gets an output and every candidate is scored the same way. This costs one
      decoder step more than greedy for sentences that reach the limit.
    - First step: the k rows of a sentence all start from BOS; scores 0, -inf, …, -inf leave one live,
      so the beam does not fill with copies of one hypothesis.
    - Stopping (fairseq's rule): a sentence is done when k hypotheses have finished (or at its limit).
      Chosen because it makes ``beam=1`` return exactly what ``greedy_decode`` returns, for any
      ``lenpen``: one hypothesis, done at its first EOS. The alternative, stopping only once no live
      hypothesis can beat the best finished one (bounding its final score by score / penalty at the
      length limit), returns what running to the length limit returns, but for α > 0 it keeps a
      beam of 1 going after greedy's EOS (a longer output may win after normalisation) and it runs
      most sentences longer. The price, documented here: hypotheses still live when the k-th one
      finishes are dropped, though one of them might have finished with a better score (for α > 0,
      as the penalty rewards length; even for α = 0, as a live hypothesis can outscore a hypothesis
      finished at the same step). So the result can differ from searching up to the length limit.
    - Ties are broken by rank (``topk``); an earlier finished hypothesis is only replaced by a
      strictly better one.

    Sentences' bests stay on the device; the step loop synchronises with the host once per step (to
    learn how many sentences are done) and once more on steps where some are.
    """
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    length_penalty(1, lenpen, lenpen_style)  # an unknown style fails before any work
    B, k, device = src.size(0), beam, src.device
    if B == 0:
        return []
    memory, src_mask = model.encode(src)
    max_len = max_output_lengths(src_mask, max_len_a, max_len_b)  # (B,)
    forced_steps = {max(m, 0) for m in max_len.tolist()}  # steps at which some sentence reaches its limit
    memory, src_mask = memory.repeat_interleave(k, dim=0), src_mask.repeat_interleave(k, dim=0)
    cache = model.new_cache() if use_cache else None

    # Live hypotheses: n sentences still searching, k rows each.
    sent = torch.arange(B, device=device)  # (n,) original index of each sentence
    sent_max_len = max_len  # (n,)
    n_finished = torch.zeros(B, dtype=torch.long, device=device)  # (n,)
    scores = torch.full((B, k), -math.inf, device=device)  # (n, k) summed log-probabilities
    scores[:, 0] = 0.0
    history = torch.full((B * k, 1), bos_id, dtype=torch.long, device=device)  # (n·k, t + 1) BOS and tokens
    # Best finished hypothesis of every sentence.
    best_score = torch.full((B,), -math.inf, device=device)
    best_tokens = torch.full((B, max(forced_steps)), eos_id, dtype=torch.long, device=device)
    best_len = torch.zeros(B, dtype=torch.long, device=device)

    for t in range(max(forced_steps) + 1):
        n = sent.size(0)
        logits = model.decode(history[:, -1:] if use_cache else history, memory, src_mask, cache)[:, -1]
        lprobs = F.log_softmax(logits.float(), dim=-1)  # (n·k, V)
        V = lprobs.size(-1)
        if t in forced_steps:
            lprobs = _only_eos(lprobs, (sent_max_len <= t).repeat_interleave(k), eos_id)
        cand, flat = (scores.view(-1, 1) + lprobs).view(n, k * V).topk(2 * k, dim=1)  # (n, 2k), best first
        origin = torch.arange(n, device=device).unsqueeze(1) * k + flat // V  # (n, 2k) row it extends
        token = flat % V
        is_eos = token == eos_id

        # 3. Finished hypotheses. All have length t + 1, so the highest sum is the highest score.
        finished = is_eos[:, :k] & (cand[:, :k] > -math.inf)
        n_finished += finished.sum(dim=1)
        top, j = torch.where(finished, cand[:, :k], -math.inf).max(dim=1)
        top = top / length_penalty(t + 1, lenpen, lenpen_style)
        old = best_score[sent]
        better = top > old
        best_score[sent] = torch.where(better, top, old)
        if t > 0:
            ended = history[origin.gather(1, j.unsqueeze(1)).squeeze(1), 1:]  # (n, t)
            best_tokens[sent, :t] = torch.where(better.unsqueeze(1), ended, best_tokens[sent, :t])
        best_len[sent] = torch.where(better, t, best_len[sent])

        # 4. The k best non-EOS candidates live on (a stable sort keeps their rank order).
        pick = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :k]  # (n, k)
        scores = cand.gather(1, pick)
        index = origin.gather(1, pick).view(-1)  # (n·k,) rows they extend
        next_token = token.gather(1, pick).view(-1)

        # 5. Done sentences leave the batch.
        done = (n_finished >= k) | (sent_max_len <= t)
        n_done = int(done.sum())  # the step's host synchronisation
        if n_done == n:
            break
        if n_done:
            keep = (~done).nonzero().squeeze(1)
            rows = (keep.unsqueeze(1) * k + torch.arange(k, device=device)).view(-1)
            sent, sent_max_len, n_finished, scores = sent[keep], sent_max_len[keep], n_finished[keep], scores[keep]
            index, next_token, memory, src_mask = index[rows], next_token[rows], memory[rows], src_mask[rows]
        history = torch.cat([history[index], next_token.unsqueeze(1)], dim=1)
        if cache is not None:
            # cross-attention keys/values are the same for the k rows of a sentence: they only move when
            # sentences leave the batch (then the kept sentences' rows, as memory above)
            cache.reorder(index, cross_index=rows if n_done else None)

    return [hyp[:n] for hyp, n in zip(best_tokens.tolist(), best_len.tolist())]


def _only_eos(lprobs: Tensor, rows: Tensor, eos_id: int) -> Tensor:
    """``lprobs`` (N, V) with every token but EOS made impossible in the ``rows`` (N,) bool."""
    not_eos = torch.ones(lprobs.size(-1), dtype=torch.bool, device=lprobs.device)
    not_eos[eos_id] = False
    return lprobs.masked_fill(rows.unsqueeze(1) & not_eos, -math.inf)
