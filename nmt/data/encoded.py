"""Token ids of every sentence of a corpus, encoded once and cached on disk as memory-mapped arrays.

Encoding streams each file in chunks of lines (``nmt.data.corpus.iter_line_chunks``) through a pool of
processes, one SentencePiece encoder each, and appends the ids to flat arrays on disk. Nothing holds a
Python list of the whole corpus, so WMT'14's 4.5M pairs encode within a few hundred MB of memory
(``benchmarks/preprocess.py`` measures it). Each side of a split is stored as::

    <split>.<lang>.ids     int32   the ids of all sentences, one after another (no BOS/EOS)
    <split>.<lang>.len     int32   the number of ids of each sentence
    <split>.<lang>.blank   uint8   1 where the raw line is empty or whitespace only

The cache folder ``<cache_root>/encoded/<key>/`` is keyed by the SHA-256 of every data file and of the
SentencePiece model, so changing either encodes again; it is built in a temporary folder and renamed
into place (``nmt.data.publish``), so a killed run never leaves half a cache. A second run on the same
data only maps the files.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmt.data.corpus import SPLITS, Corpus, DataError, decode_chunk, iter_line_chunks
from nmt.data.publish import publishing

FORMAT = 1
"""Bumped whenever the stored layout changes, so that an old cache is never misread."""

_PARALLEL_BYTES = 8 << 20
"""Files smaller than this are encoded in-process: starting workers would cost more than it saves."""


@dataclass
class EncodedSide:
    """One side of a split: sentence ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    ids: np.ndarray
    lengths: np.ndarray
    blank: np.ndarray

    def __post_init__(self) -> None:
        self.offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])

    def __len__(self) -> int:
        return len(self.lengths)

    def sentence(self, i: int) -> np.ndarray:
        return np.array(self.ids[self.offsets[i] : self.offsets[i + 1]], dtype=np.int64)

    @classmethod
    def from_lists(cls, sentences: list[list[int]], blank: list[bool] | None = None) -> EncodedSide:
        """An in-memory side (for a few sentences, e.g. in tests or for translation)."""
        lengths = np.array([len(s) for s in sentences], dtype=np.int32)
        ids = np.array([i for s in sentences for i in s], dtype=np.int32)
        flags = np.zeros(len(sentences), dtype=bool) if blank is None else np.asarray(blank, dtype=bool)
        return cls(ids, lengths, flags)

    @classmethod
    def load(cls, prefix: Path) -> EncodedSide:
        lengths = np.fromfile(f"{prefix}.len", dtype=np.int32)
        blank = np.fromfile(f"{prefix}.blank", dtype=np.uint8).astype(bool)
        ids_path = Path(f"{prefix}.ids")
        if ids_path.stat().st_size:
            ids = np.memmap(ids_path, dtype=np.int32, mode="r")
        else:  # an empty file cannot be mapped
            ids = np.zeros(0, dtype=np.int32)
        return cls(ids, lengths, blank)


# ---------------------------------------------------------------- encoding in worker processes
_worker_sp = None


def _init_worker(model_bytes: bytes) -> None:
    global _worker_sp
    import sentencepiece as spm

    _worker_sp = spm.SentencePieceProcessor(model_proto=model_bytes)


def _encode_chunk(job: tuple[str, int, bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode and encode one chunk of lines: (flat ids, lengths, blank flags)."""
    path, first_line, raw = job
    lines = decode_chunk(Path(path), first_line, raw)
    pieces = _worker_sp.encode(lines)
    lengths = np.fromiter(map(len, pieces), dtype=np.int32, count=len(pieces))
    ids = np.fromiter((i for p in pieces for i in p), dtype=np.int32, count=int(lengths.sum()))
    blank = np.fromiter((not s.strip() for s in lines), dtype=np.uint8, count=len(lines))
    return ids, lengths, blank


def encode_file(path: Path, model_bytes: bytes, prefix: Path, workers: int) -> int:
    """Encode every line of ``path`` into ``prefix.{ids,len,blank}``; returns the number of lines."""
    chunks: Iterator[tuple[str, int, bytes]] = ((str(path), first, raw) for first, raw in iter_line_chunks(path))
    count = 0
    with (
        open(f"{prefix}.ids", "wb") as ids_f,
        open(f"{prefix}.len", "wb") as len_f,
        open(f"{prefix}.blank", "wb") as blank_f,
    ):
        if workers > 1 and path.stat().st_size > _PARALLEL_BYTES:
            context = multiprocessing.get_context("spawn")  # never fork a process that may hold threads
            with context.Pool(workers, initializer=_init_worker, initargs=(model_bytes,)) as pool:
                count = _write_results(_bounded_map(pool, chunks, 2 * workers), ids_f, len_f, blank_f)
        else:
            _init_worker(model_bytes)
            count = _write_results(map(_encode_chunk, chunks), ids_f, len_f, blank_f)
    return count


def _bounded_map(pool, jobs: Iterator, window: int) -> Iterator:
    """``pool.imap(_encode_chunk, jobs)`` with at most ``window`` chunks in memory at a time.

    (``Pool.imap`` itself reads its whole input ahead, which for a large file is the whole file.)
    """
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.apply_async(_encode_chunk, (job,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _write_results(results, ids_f, len_f, blank_f) -> int:
    count = 0
    for ids, lengths, blank in results:
        ids_f.write(ids.tobytes())
        len_f.write(lengths.tobytes())
        blank_f.write(blank.tobytes())
        count += len(lengths)
    return count


def default_workers() -> int:
    """Encoding processes: one per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- the cache
def cache_key(file_hashes: dict[str, str], corpus: Corpus, model_bytes: bytes) -> str:
    files = {
        f"{split}.{lang}": file_hashes[str(corpus.file(split, lang))]
        for split in SPLITS
        for lang in (corpus.src, corpus.tgt)
    }
    spm_hash = hashlib.sha256(model_bytes).hexdigest()
    text = json.dumps({"format": FORMAT, "files": files, "spm": spm_hash}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_or_encode(
    corpus: Corpus, file_hashes: dict[str, str], model_bytes: bytes, cache_root: Path, workers: int | None = None,
    log=print, build: bool = True,
) -> dict[str, tuple[EncodedSide, EncodedSide]]:
    """Every split of ``corpus`` as (source, target) ``EncodedSide``s, encoded now or read from the cache.

    Raises ``DataError`` for unaligned or empty splits and for unreadable files (naming file and line);
    then nothing is left in the cache. ``build=False`` (the other processes of a node under data
    parallelism): wait until the node's first process has put the encoding into the cache (``nmt.launch``).
    """
    key = cache_key(file_hashes, corpus, model_bytes)
    folder = cache_root / "encoded" / key
    if not build:
        from nmt.launch import wait_for

        wait_for(folder / "meta.json")
    if not (folder / "meta.json").is_file():
        workers = workers or default_workers()
        log(f"encoding {corpus.path} with {workers} process{'es' if workers > 1 else ''} (cached in {folder}) ...")
        with publishing(folder, complete=lambda f: (f / "meta.json").is_file()) as tmp:
            counts = {}
            for split in SPLITS:
                for lang in (corpus.src, corpus.tgt):
                    name = f"{split}.{lang}"
                    counts[name] = encode_file(corpus.file(split, lang), model_bytes, tmp / name, workers)
                _check_aligned(corpus, split, counts[f"{split}.{corpus.src}"], counts[f"{split}.{corpus.tgt}"])
            meta = {"format": FORMAT, "lines": counts, "source": str(corpus.path)}
            (tmp / "meta.json").write_text(json.dumps(meta) + "\n")
    else:
        log(f"encoded data: using cached {folder}")
    return {
        split: (EncodedSide.load(folder / f"{split}.{corpus.src}"), EncodedSide.load(folder / f"{split}.{corpus.tgt}"))
        for split in SPLITS
    }


def _check_aligned(corpus: Corpus, split: str, n_src: int, n_tgt: int) -> None:
    src_path, tgt_path = corpus.file(split, corpus.src), corpus.file(split, corpus.tgt)
    if n_src == 0:
        raise DataError(f"{src_path}: the {split} split is empty")
    if n_src != n_tgt:
        raise DataError(
            f"{src_path} has {n_src:,} lines but {tgt_path} has {n_tgt:,}: source and target files must be line-aligned"
        )
