"""Preprocessing speed and memory: SentencePiece, encoding, the encoded cache and batching, as train.py runs them.

    python benchmarks/preprocess.py --data ../shared/data/multi30k-en-de
    python benchmarks/preprocess.py --generate 4500000      # a WMT'14-sized corpus generated here

Each phase is timed twice: *cold* (an empty cache folder: SentencePiece is trained and every split is
encoded) and *cached* (a second run on the same data, which is what every later training run pays).
Peak memory is measured per phase: the peak resident set size of this process (reset between phases
through ``/proc/self/clear_refs``, Linux only) and of every encoding worker (read from
``/proc/<pid>/status`` as it finishes). ``--generate N`` writes an N-pair corpus from the toy
generator's sentences (two sentences per line, so that lines are about as long as WMT news sentences)
under the data root and uses it.
Speed is measured here, never in tests. Prints a Markdown table and the hardware it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmt.bench import reset_peak_memory, vm_hwm_mb  # noqa: E402
from nmt.data.catalog import resolve_corpus  # noqa: E402
from nmt.data.corpus import data_root  # noqa: E402
from nmt.data.datamodule import TranslationData  # noqa: E402
from nmt.data.encoded import default_workers  # noqa: E402
from nmt.data.tokenizer import Tokenizer, spm_settings, train_or_load  # noqa: E402


def generate(folder: Path, pairs: int, seed: int = 7) -> Path:
    """An ``pairs``-line corpus in the --data layout, written in blocks (never held in memory whole)."""
    from nmt.data import synthetic

    if (folder / "test.de").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pool = synthetic.generate_pairs(100_000, seed=seed)
    en = np.array([e for e, _ in pool], dtype=object)
    de = np.array([d for _, d in pool], dtype=object)
    rng = np.random.default_rng(seed)
    for split, n in (("train", pairs), ("valid", 3000), ("test", 3003)):
        with (open(tmp / f"{split}.en", "w", encoding="utf-8") as fe,
              open(tmp / f"{split}.de", "w", encoding="utf-8") as fd):
            for start in range(0, n, 100_000):
                a = rng.integers(0, len(pool), min(100_000, n - start))
                b = rng.integers(0, len(pool), len(a))
                fe.write("".join(f"{x} {y}\n" for x, y in zip(en[a], en[b])))
                fd.write("".join(f"{x} {y}\n" for x, y in zip(de[a], de[b])))
    tmp.rename(folder)
    return folder


CPU = torch.device("cpu")
WORKER_PEAKS: list[float] = []


def _watch_workers() -> None:
    """Record each encoding worker's peak memory just before the pool shuts it down."""
    import multiprocessing.pool

    original = multiprocessing.pool.Pool.terminate  # what "with Pool() as pool" calls at its end

    def terminate(pool):
        for process in pool._pool:
            WORKER_PEAKS.append(vm_hwm_mb(str(process.pid)))
        original(pool)

    multiprocessing.pool.Pool.terminate = terminate


class Phase:
    """Times a phase and records this process's peak memory during it."""

    def __init__(self, name: str, times: dict, peaks: dict):
        self.name, self.times, self.peaks = name, times, peaks

    def __enter__(self):
        reset_peak_memory(CPU)
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.times[self.name] = time.perf_counter() - self.start
        self.peaks[self.name] = vm_hwm_mb()


def prepare(corpus, cache: Path, args) -> dict:
    """What train.py does before the model is built; seconds and peak MiB per phase."""
    times, peaks = {}, {}
    with Phase("hash files", times, peaks):
        hashes = corpus.hashes()
    with Phase("SentencePiece", times, peaks):
        files = [corpus.file("train", corpus.src), corpus.file("train", corpus.tgt)]
        settings = spm_settings(args.vocab_size, "unigram", args.spm_sample, seed=1)
        model = train_or_load(files, [hashes[str(f)] for f in files], cache, settings, log=lambda m: None)
    with Phase("encode all splits", times, peaks):
        data = TranslationData(corpus, Tokenizer(model), args.max_tokens, 256, seed=1, log=lambda m: None,
                               max_len_ratio=3.0, cache_root=cache, file_hashes=hashes)
        data.setup()
    with Phase("build batches", times, peaks):
        share = data._make_sampler("train", shuffle=True, world=1, rank=0).padding()
    unknown = data.unknown_in_references("test")
    return {"times": times, "peaks": peaks, "pairs": len(data.datasets["train"].src), "kept": data.filtered["kept"],
            "padding": share, "unknown": unknown}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="a corpus folder (or a name --data accepts)")
    src.add_argument("--generate", type=int, metavar="N", help="generate an N-pair corpus and use it")
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--spm-sample", type=int, default=2_000_000)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default: a fresh one under the data root)")
    args = p.parse_args()

    if args.generate:
        t = time.perf_counter()
        folder = generate(data_root() / f"generated-{args.generate}", args.generate)
        print(f"corpus: {folder} ({time.perf_counter() - t:.0f} s to generate or find)", flush=True)
        corpus = resolve_corpus(str(folder), "en", "de")
    else:
        corpus = resolve_corpus(args.data, None, None)
    cache = args.cache or data_root() / "cache-benchmark"
    shutil.rmtree(cache, ignore_errors=True)
    size = sum(f.stat().st_size for f in corpus.files())
    print(f"data: {corpus.path} ({corpus.src}→{corpus.tgt}), {size / 2**20:,.0f} MiB of text; "
          f"{default_workers()} encoding processes", flush=True)

    _watch_workers()
    runs = {}
    for label in ("cold", "cached"):
        start = time.perf_counter()
        runs[label] = prepare(corpus, cache, args)
        runs[label]["total"] = time.perf_counter() - start
        print(f"{label}: {runs[label]['total']:.1f} s", flush=True)

    pairs = runs["cold"]["pairs"]
    print("\n| phase | cold (s) | cold peak (MiB) | cached (s) | cached peak (MiB) |\n|---|---|---|---|---|")
    for phase in runs["cold"]["times"]:
        cold, cached = runs["cold"], runs["cached"]
        print(f"| {phase} | {cold['times'][phase]:.2f} | {cold['peaks'][phase]:,.0f} | "
              f"{cached['times'][phase]:.2f} | {cached['peaks'][phase]:,.0f} |")
    print(f"| **total** | **{runs['cold']['total']:.2f}** | | **{runs['cached']['total']:.2f}** | |")
    print(f"\ntraining pairs: {pairs:,} ({runs['cold']['kept']:,} kept after filtering)")
    print(f"throughput: {pairs / runs['cold']['total']:,.0f} pairs/s cold (SentencePiece included), "
          f"{pairs / runs['cold']['times']['encode all splits']:,.0f} pairs/s encoding, "
          f"{pairs / runs['cached']['total']:,.0f} pairs/s cached")
    share = runs["cold"]["padding"]
    print(f"non-padding share of the batches (--max-tokens {args.max_tokens}): target {100 * share['tgt']:.1f}%, "
          f"source {100 * share['src']:.1f}%")
    unk = runs["cold"]["unknown"]
    print(f"test references with ⁇ after encode→decode: {unk['with_unknown']} of {unk['references']:,} "
          f"({unk['changed']} changed by normalisation)")
    print(f"peak memory of an encoding worker: {max(WORKER_PEAKS, default=float('nan')):,.0f} MiB "
          f"({len(WORKER_PEAKS)} workers measured)")
    print(f"hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
