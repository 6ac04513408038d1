"""The encoded splits of one corpus, and their batches, as a LightningDataModule.

Training pairs that are blank on either side, or longer than ``max_len`` tokens, are dropped and
counted; valid and test are never filtered or altered (an empty source line is translated to an
empty line), and their references are kept as the raw text lines for BLEU.

A batch is a dict: ``id`` (B,) sentence numbers within the split, ``src`` (B, S) source ids ending
with EOS, ``tgt_in`` (B, T) target ids starting with BOS, ``tgt_out`` (B, T) the same shifted left,
ending with EOS, and ``ntokens`` the number of non-padding target tokens (an int).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nmt.data.batching import TokenBatchSampler
from nmt.data.corpus import SPLITS, Corpus
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer


class EncodedPairs(Dataset):
    """Token ids of a split's sentence pairs (without BOS/EOS), with their sentence numbers."""

    def __init__(self, ids: list[int], src: list[list[int]], tgt: list[list[int]]):
        self.ids = ids
        self.src = [np.asarray(s, dtype=np.int32) for s in src]
        self.tgt = [np.asarray(t, dtype=np.int32) for t in tgt]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, np.ndarray]:
        return self.ids[i], self.src[i], self.tgt[i]

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Source and target lengths as the model sees them: each with its EOS (or BOS) added."""
        return np.array([len(s) + 1 for s in self.src]), np.array([len(t) + 1 for t in self.tgt])


def collate(examples: list[tuple[int, np.ndarray, np.ndarray]]) -> dict:
    """Pad a list of examples into the batch dict described in the module docstring."""
    B = len(examples)
    S = max(len(s) for _, s, _ in examples) + 1
    T = max(len(t) for _, _, t in examples) + 1
    src = torch.full((B, S), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((B, T), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((B, T), PAD_ID, dtype=torch.long)
    ntokens = 0
    for row, (_, s, t) in enumerate(examples):
        src[row, : len(s)] = torch.from_numpy(s)
        src[row, len(s)] = EOS_ID
        tgt_in[row, 0] = BOS_ID
        tgt_in[row, 1 : len(t) + 1] = torch.from_numpy(t)
        tgt_out[row, : len(t)] = torch.from_numpy(t)
        tgt_out[row, len(t)] = EOS_ID
        ntokens += len(t) + 1
    ids = torch.tensor([i for i, _, _ in examples], dtype=torch.long)
    return {"id": ids, "src": src, "tgt_in": tgt_in, "tgt_out": tgt_out, "ntokens": ntokens}


class TranslationData(L.LightningDataModule):
    """Reads, encodes and batches the train/valid/test splits of ``corpus`` with ``tokenizer``."""

    def __init__(
        self,
        corpus: Corpus,
        tokenizer: Tokenizer,
        max_tokens: int,
        max_len: int,
        seed: int,
        num_workers: int = 0,
        log=print,
    ):
        super().__init__()
        self.corpus, self.tokenizer = corpus, tokenizer
        self.max_tokens, self.max_len, self.seed = max_tokens, max_len, seed
        self.num_workers = num_workers
        self.log = log
        self.datasets: dict[str, EncodedPairs] = {}
        self.raw: dict[str, tuple[list[str], list[str]]] = {}
        self.train_sampler: TokenBatchSampler | None = None
        self.filtered: dict[str, int] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for split in SPLITS:
            src, tgt = self.corpus.read_split(split)
            self.raw[split] = (src, tgt)
            src_ids, tgt_ids = self.tokenizer.encode(src), self.tokenizer.encode(tgt)
            keep = list(range(len(src)))
            if split == "train":
                keep = self._filter_train(src, tgt, src_ids, tgt_ids)
            self.datasets[split] = EncodedPairs(keep, [src_ids[i] for i in keep], [tgt_ids[i] for i in keep])

    def _filter_train(self, src, tgt, src_ids, tgt_ids) -> list[int]:
        blank = too_long = 0
        keep = []
        for i in range(len(src)):
            if not src[i].strip() or not tgt[i].strip():
                blank += 1
            elif max(len(src_ids[i]), len(tgt_ids[i])) + 1 > self.max_len:
                too_long += 1
            else:
                keep.append(i)
        self.filtered = {"blank": blank, "too_long": too_long, "kept": len(keep)}
        self.log(
            f"train: kept {len(keep):,} of {len(src):,} pairs "
            f"(dropped {blank:,} blank, {too_long:,} longer than {self.max_len} tokens)"
        )
        if not keep:
            raise ValueError(f"no training pair left after filtering {self.corpus.file('train', self.corpus.src)}")
        return keep

    def references(self, split: str) -> list[str]:
        return self.raw[split][1]

    def sources(self, split: str) -> list[str]:
        return self.raw[split][0]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.datasets[split]
        src_lens, tgt_lens = data.lengths()
        max_tokens = self.max_tokens
        if not shuffle:  # never refuse to translate a long evaluation sentence
            max_tokens = max(max_tokens, int(src_lens.max()), int(tgt_lens.max()))
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = TokenBatchSampler(src_lens, tgt_lens, max_tokens, shuffle, self.seed, world, rank)
        if shuffle:
            self.train_sampler = sampler
        return DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
