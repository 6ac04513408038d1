"""The encoded splits of one corpus, and their batches, as a LightningDataModule.

The splits are encoded once and cached on disk (``nmt.data.encoded``); sentences are read from
memory-mapped arrays, so the training set never has to fit in Python objects. Training pairs that are
blank on either side, longer than ``max_len`` tokens or with a length ratio above ``max_len_ratio``
are dropped and counted; valid and test are never filtered or altered (an empty source line is
translated to an empty line), and their references are kept as the raw text lines for BLEU.

A batch is a dict: ``id`` (B,) sentence numbers within the split, ``src`` (B, S) source ids ending
with EOS, ``tgt_in`` (B, T) target ids starting with BOS, ``tgt_out`` (B, T) the same shifted left,
ending with EOS, and ``ntokens`` the number of non-padding target tokens (an int).

The training sampler's position (epoch, batches trained) is part of the data module's state, which
Lightning stores in every checkpoint, so a run resumed mid-epoch continues with the next batch.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nmt.data.batching import TokenBatchSampler
from nmt.data.corpus import SPLITS, Corpus, DataError
from nmt.data.encoded import EncodedSide, load_or_encode
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer


class EncodedPairs(Dataset):
    """The sentence pairs ``index`` of a split (token ids without BOS/EOS), with their sentence numbers."""

    def __init__(self, src: EncodedSide, tgt: EncodedSide, index: np.ndarray | None = None):
        self.src, self.tgt = src, tgt
        self.index = np.arange(len(src), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray, np.ndarray]:
        j = int(self.index[i])
        return j, self.src.sentence(j), self.tgt.sentence(j)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Source and target lengths as the model sees them: each with its EOS (or BOS) added."""
        return self.src.lengths[self.index].astype(np.int64) + 1, self.tgt.lengths[self.index].astype(np.int64) + 1


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
    """Reads, encodes (or loads the cached encoding of) and batches the splits of ``corpus``."""

    def __init__(
        self,
        corpus: Corpus,
        tokenizer: Tokenizer,
        max_tokens: int,
        max_len: int,
        seed: int,
        num_workers: int = 0,
        log=print,
        max_len_ratio: float = 0.0,
        cache_root: Path | None = None,
        file_hashes: dict[str, str] | None = None,
        build_cache: bool = True,
    ):
        super().__init__()
        self.corpus, self.tokenizer = corpus, tokenizer
        self.max_tokens, self.max_len, self.max_len_ratio, self.seed = max_tokens, max_len, max_len_ratio, seed
        self.num_workers = num_workers
        self.log = log
        self.cache_root, self.file_hashes = cache_root, file_hashes
        self.build_cache = build_cache  # False: wait for this node's first process to encode (nmt.launch)
        self.datasets: dict[str, EncodedPairs] = {}
        self.raw: dict[str, tuple[list[str], list[str]]] = {}
        self.train_sampler: TokenBatchSampler | None = None
        self.filtered: dict[str, int] = {}
        self._sampler_state: dict | None = None
        self._batch_layouts: dict[tuple[str, bool], TokenBatchSampler] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        from nmt.data.corpus import data_root

        hashes = self.file_hashes if self.file_hashes is not None else self.corpus.hashes()
        cache_root = self.cache_root if self.cache_root is not None else data_root() / "cache"
        encoded = load_or_encode(self.corpus, hashes, self.tokenizer.model_bytes, cache_root, log=self.log,
                                 build=self.build_cache)
        for split in SPLITS:
            src, tgt = encoded[split]
            index = self._filter_train(src, tgt) if split == "train" else None
            self.datasets[split] = EncodedPairs(src, tgt, index)
            if split != "train":  # small: the raw text is what BLEU is computed against
                self.raw[split] = self.corpus.read_split(split)

    def _filter_train(self, src: EncodedSide, tgt: EncodedSide) -> np.ndarray:
        blank = src.blank | tgt.blank
        longest = np.maximum(src.lengths, tgt.lengths).astype(np.int64) + 1
        too_long = ~blank & (longest > self.max_len)
        ratio_bad = np.zeros_like(blank)
        if self.max_len_ratio > 0:
            shortest = np.minimum(src.lengths, tgt.lengths).astype(np.int64) + 1
            ratio_bad = ~blank & ~too_long & (longest > self.max_len_ratio * shortest)
        keep = np.flatnonzero(~(blank | too_long | ratio_bad))
        self.filtered = {
            "blank": int(blank.sum()), "too_long": int(too_long.sum()), "ratio": int(ratio_bad.sum()),
            "kept": len(keep),
        }
        ratio_note = (f", {self.filtered['ratio']:,} with a length ratio above {self.max_len_ratio:g}"
                      if self.max_len_ratio > 0 else "")
        self.log(
            f"train: kept {len(keep):,} of {len(src):,} pairs (dropped {self.filtered['blank']:,} blank, "
            f"{self.filtered['too_long']:,} longer than {self.max_len} tokens{ratio_note})"
        )
        if not len(keep):
            raise DataError(f"{self.corpus.file('train', self.corpus.src)}: no training pair left after filtering")
        return keep

    def references(self, split: str) -> list[str]:
        return self.raw[split][1]

    def sources(self, split: str) -> list[str]:
        return self.raw[split][0]

    def unknown_in_references(self, split: str) -> dict[str, int]:
        """How many references of ``split`` contain ``⁇`` after encoding and decoding, or change at all.

        With character coverage 1.0 and byte fallback both should be 0; SentencePiece's NFKC
        normalisation may still change a few (e.g. full-width characters), which this counts.
        """
        refs = self.references(split)
        pairs = self.datasets[split]
        decoded = self.tokenizer.decode([pairs.tgt.sentence(i).tolist() for i in range(len(refs))])
        unknown = sum("⁇" in d and "⁇" not in r for d, r in zip(decoded, refs))
        changed = sum(d != " ".join(r.split()) for d, r in zip(decoded, refs))
        return {"references": len(refs), "with_unknown": unknown, "changed": changed}

    def target_tokens_per_batch(self) -> float:
        """The mean number of non-padding target tokens (EOS included) in a training batch, as trained on."""
        _, tgt_lens = self.datasets["train"].lengths()
        return float(tgt_lens.sum()) / self._make_sampler("train", shuffle=True, world=1, rank=0).num_batches

    def describe_batches(self) -> str:
        sampler = self._make_sampler("train", shuffle=True, world=1, rank=0)
        share = sampler.padding()
        return (
            f"{sampler.num_batches:,} training batches per epoch; real tokens fill {100 * share['tgt']:.1f}% of the "
            f"padded target positions and {100 * share['src']:.1f}% of the source positions"
        )

    def first_training_batch(self) -> dict:
        """The first batch of epoch 0 in the seeded order of one process, whatever the number of processes: the
        same batch on every process of a run and in a run on one process (for data-dependent initialisation)."""
        sampler = self._make_sampler("train", shuffle=True, world=1, rank=0)
        sampler.set_epoch(0)
        return collate([self.datasets["train"][i] for i in next(iter(sampler))])

    # ------------------------------------------------------------ sampler position (for exact resume)
    def state_dict(self) -> dict:
        return {"train_sampler": self.train_sampler.state_dict()} if self.train_sampler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._sampler_state = state.get("train_sampler")
        if self.train_sampler is not None and self._sampler_state is not None:
            self.train_sampler.load_state_dict(self._sampler_state)

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Count a training batch as consumed when the loop takes it to train on (not when it is prefetched)."""
        trainer = self.trainer
        if trainer is not None and trainer.training and self.train_sampler is not None:
            self.train_sampler.consumed += 1
        return batch

    # ------------------------------------------------------------ loaders
    def _make_sampler(self, split: str, shuffle: bool, world: int, rank: int) -> TokenBatchSampler:
        """The split's batches for this process; sorted and cut once per split (seconds on WMT'14), then sharded."""
        key = (split, shuffle)
        if key not in self._batch_layouts:
            src_lens, tgt_lens = self.datasets[split].lengths()
            max_tokens = self.max_tokens
            if not shuffle:  # never refuse to translate a long evaluation sentence
                max_tokens = max(max_tokens, int(src_lens.max()), int(tgt_lens.max()))
            self._batch_layouts[key] = TokenBatchSampler(src_lens, tgt_lens, max_tokens, shuffle, self.seed)
        return self._batch_layouts[key].shard(world, rank)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = self._make_sampler(split, shuffle, world, rank)
        if shuffle:
            if self._sampler_state is not None:
                sampler.load_state_dict(self._sampler_state)
                self._sampler_state = None
            self.train_sampler = sampler
        return DataLoader(
            self.datasets[split],
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            # its own generator: creating an iterator must not draw from the global RNG, or a resumed run's
            # dropout masks would differ from the uninterrupted run's
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
