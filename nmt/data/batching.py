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

import copy
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def batch_bounds(src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, order: np.ndarray) -> np.ndarray:
    """Cut ``order`` (indices sorted by length) into consecutive batches within ``max_tokens``.

    Returns the start position in ``order`` of every batch, followed by ``len(order)``: batch ``b`` is
    ``order[bounds[b]:bounds[b + 1]]``. Arrays, not lists of lists, so that millions of sentences cost
    a few dozen MB.
    """
    sizes = np.maximum(np.asarray(src_lens, dtype=np.int64)[order], np.asarray(tgt_lens, dtype=np.int64)[order])
    if len(sizes) and sizes.max() > max_tokens:
        raise ValueError(f"--max-tokens {max_tokens} is smaller than one sentence pair ({int(sizes.max())} tokens)")
    if len(sizes) > 1 and bool(np.all(sizes[1:] >= sizes[:-1])):
        return _sorted_batch_bounds(sizes, max_tokens)
    bounds = [0]
    longest = count = 0
    for pos, n in enumerate(sizes.tolist()):
        if count and max(longest, n) * (count + 1) > max_tokens:
            bounds.append(pos)
            longest = count = 0
        longest = max(longest, n)
        count += 1
    if count:
        bounds.append(len(sizes))
    return np.asarray(bounds, dtype=np.int64)


def _sorted_batch_bounds(sizes: np.ndarray, max_tokens: int) -> np.ndarray:
    """``batch_bounds`` when ``sizes`` never decreases: the same greedy cut, one binary search per batch.

    A batch starting at ``a`` with ``c`` sentences has padded size ``sizes[a + c - 1] · c``, which grows
    with ``c``; the greedy cut takes the largest ``c`` within ``max_tokens``. (4.5M sentences: ~0.2 s
    instead of ~3 s for the sentence-by-sentence loop.)
    """
    n = len(sizes)
    bounds = [0]
    a = 0
    while a < n:
        lo, hi = 1, min(n - a, max_tokens // int(sizes[a]))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if int(sizes[a + mid - 1]) * mid <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        a += lo
        bounds.append(a)
    return np.asarray(bounds, dtype=np.int64)


def length_batches(src_lens: np.ndarray, tgt_lens: np.ndarray, max_tokens: int, order: np.ndarray) -> list[list[int]]:
    """``batch_bounds`` as a list of index lists (for a few thousand sentences, e.g. translation)."""
    order = np.asarray(order, dtype=np.int64)
    bounds = batch_bounds(src_lens, tgt_lens, max_tokens, order)
    return [order[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]


class TokenBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices; see the module docstring.

    ``shuffle=False`` (validation, test) keeps the length order, which is the fastest for decoding.
    Call ``set_epoch`` before each epoch (the data module does) to get that epoch's order.

    Its position is ``(epoch, consumed)``: the batches of this epoch already trained on. The trainer
    advances ``consumed`` as it *trains* on a batch (not as batches are fetched: Lightning fetches ahead),
    ``state_dict``/``load_state_dict`` save and restore it, and iteration resumes after the consumed
    batches, so a run resumed mid-epoch sees exactly the batches it had not seen yet.
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
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.consumed = 0, 0
        self.num_replicas, self.rank = num_replicas, rank
        tiebreak = np.random.default_rng(seed).permutation(len(src)) if shuffle else np.arange(len(src))
        # by the padded size per sentence, max(source, target), then target and source length, then tiebreak:
        # on WMT news (4,096 tokens) 10% fewer batches and 94% real tokens, against 90% sorting by target first
        self.order = np.lexsort((tiebreak, src, tgt, np.maximum(src, tgt)))
        self.bounds = batch_bounds(src, tgt, max_tokens, self.order)
        n = len(self.bounds) - 1
        # every rank must run the same number of steps: repeat batches from the start up to a multiple
        self.batch_ids = np.resize(np.arange(n), -(-n // num_replicas) * num_replicas if n else 0)
        self._stats = _padding(src[self.order], tgt[self.order], self.bounds)

    def shard(self, num_replicas: int, rank: int) -> TokenBatchSampler:
        """The same batches for process ``rank`` of ``num_replicas``, at the start of epoch 0, without re-sorting."""
        other = copy.copy(self)
        n = self.num_batches
        other.num_replicas, other.rank, other.epoch, other.consumed = num_replicas, rank, 0, 0
        other.batch_ids = np.resize(np.arange(n), -(-n // num_replicas) * num_replicas if n else 0)
        return other

    @property
    def num_batches(self) -> int:
        """Distinct batches (over all ranks), before padding the count to a multiple of the ranks."""
        return len(self.bounds) - 1

    def batch(self, b: int) -> list[int]:
        return self.order[self.bounds[b] : self.bounds[b + 1]].tolist()

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def __iter__(self) -> Iterator[list[int]]:
        ids = self.batch_ids
        if self.shuffle:
            ids = ids[np.random.default_rng((self.seed, self.epoch)).permutation(len(ids))]
        mine = ids[self.rank :: self.num_replicas]
        yield from (self.batch(b) for b in mine[self.consumed :].tolist())

    def __len__(self) -> int:
        return len(self.batch_ids) // self.num_replicas

    def state_dict(self) -> dict:
        """The position: the next batch to train is number ``consumed`` of epoch ``epoch``."""
        epoch, consumed = self.epoch, self.consumed
        if consumed >= len(self):
            epoch, consumed = epoch + 1, 0
        return {"epoch": epoch, "consumed": consumed, "batches_per_epoch": len(self), "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict) -> None:
        if (state["batches_per_epoch"], state["num_replicas"]) != (len(self), self.num_replicas):
            raise ValueError(
                f"the saved batch position is for {state['batches_per_epoch']} batches per epoch on "
                f"{state['num_replicas']} process(es), but the data now gives {len(self)} on {self.num_replicas}: "
                "the data, --max-tokens or the number of processes changed"
            )
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

    def padding(self) -> dict[str, float]:
        """The share of real (non-padding) tokens in the batches, per side: ``{"src": …, "tgt": …}``."""
        return dict(self._stats)


def _padding(src: np.ndarray, tgt: np.ndarray, bounds: np.ndarray) -> dict[str, float]:
    if len(bounds) < 2:
        return {"src": 1.0, "tgt": 1.0}
    sizes = np.diff(bounds)
    share = {}
    for side, lens in (("src", src), ("tgt", tgt)):
        padded = (np.maximum.reduceat(lens, bounds[:-1]) * sizes).sum()
        share[side] = float(lens.sum() / padded) if padded else 1.0
    return share
