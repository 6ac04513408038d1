"""Token-bucketed batches: sentences of similar length together, bounded by padded size.

``--max-tokens N`` bounds a batch's padded size, ``max(source length, target length) × sentences``
(fairseq's meaning), so a batch of short sentences holds many and a batch of long ones few, and
little of any batch is padding. As in fairseq, the batches are formed once (sorted by length, ties
broken by a seeded shuffle) and their order is shuffled every epoch from ``(seed, epoch)``.

Under data parallelism every rank builds the same list of batches and takes every ``num_replicas``-th
one; the list is first padded (with batches from its start) to a multiple of ``num_replicas`` so that
every rank runs the same number of steps (unequal counts hang collectives).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def length_batches(src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, order: np.ndarray) -> list[list[int]]:
    """Cut ``order`` (indices sorted by length) into consecutive batches within ``max_tokens``."""
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for i in order.tolist():
        n = max(int(src_lens[i]), int(tgt_lens[i]))
        if n > max_tokens:
            raise ValueError(f"--max-tokens {max_tokens} is smaller than one sentence pair ({n} tokens)")
        if batch and max(longest, n) * (len(batch) + 1) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, n)
    if batch:
        batches.append(batch)
    return batches


class TokenBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices; see the module docstring.

    ``shuffle=False`` (validation, test) keeps the length order, which is the fastest for decoding.
    Call ``set_epoch`` before each epoch (the training module does) to get that epoch's order.
    """

    def __init__(
        self,
        src_lens: Sequence[int],
        tgt_lens: Sequence[int],
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        src = np.asarray(src_lens, dtype=np.int64)
        tgt = np.asarray(tgt_lens, dtype=np.int64)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.num_replicas, self.rank = num_replicas, rank
        tiebreak = np.random.default_rng(seed).permutation(len(src)) if shuffle else np.arange(len(src))
        order = np.lexsort((tiebreak, src, tgt))  # by target length, then source length, then tiebreak
        self.batches = length_batches(src, tgt, max_tokens, order)
        if len(self.batches) % num_replicas:
            short = num_replicas - len(self.batches) % num_replicas
            self.batches += self.batches[:short]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        order = np.arange(len(self.batches))
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.batches))
        yield from (self.batches[i] for i in order[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return len(self.batches) // self.num_replicas
