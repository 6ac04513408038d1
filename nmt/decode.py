"""Decoding: turn source token ids into target token ids with a trained Transformer.

Greedy search with a key/value cache (``nmt.model.DecoderCache``): each step feeds only the newest
token, the decoder's self-attention keys/values of earlier steps are reused and the encoder's
keys/values for cross-attention are computed once. Sentences that have produced end-of-sentence
leave the batch, so the last long sentence does not drag the finished ones along.

The output length is bounded per sentence by ``max_len_a · source_length + max_len_b`` (fairseq's
convention; the source length counts its end-of-sentence token).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nmt.model import Transformer


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
    max_len = (max_len_a * src_mask.sum(dim=(1, 2, 3)) + max_len_b).long()  # (B,)
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
