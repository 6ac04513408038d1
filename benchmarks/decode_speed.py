"""Decoding speed: sentences/s of greedy and beam search, with and without the key/value cache.

    python benchmarks/decode_speed.py --data ../shared/data/wmt-news-en-de --lines 1000 [--run RUN]

Translates the first ``--lines`` lines of the test split (newstest2014 for the WMT news folder). With
``--run`` it uses that trained model; without, a randomly initialised model of ``--arch`` (default
``small``) whose output length is pinned to the source length (``max_len_a=1, max_len_b=0``: an
untrained model practically never emits EOS early), so every configuration decodes the same number of
tokens. The uncached runs recompute every prefix and are slow: ``--uncached-lines`` limits them.
Speed is measured here, never in tests. Prints a Markdown table and the hardware it ran on.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmt.bench import decode_translator  # noqa: E402  (the model and lines, shared with python -m nmt.bench)
from nmt.data.catalog import resolve_corpus  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--run", help="a trained run directory (default: an untrained model, length pinned)")
    p.add_argument("--arch", default="small")
    p.add_argument("--lines", type=int, default=1000)
    p.add_argument("--uncached-lines", type=int, default=200)
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    corpus = resolve_corpus(args.data, None, None)
    translator, lines, what = decode_translator(args.data, args.run, args.arch, vocab_size=8000)

    def run(beam: int, cached: bool, n: int) -> tuple[int, bool, int, float, float]:
        start = time.perf_counter()
        translator.translate(lines[:n], beam=beam, max_tokens=args.max_tokens, use_cache=cached)
        elapsed = time.perf_counter() - start
        print(f"beam {beam} {'cached' if cached else 'uncached'}: {n} sentences in {elapsed:.1f} s", flush=True)
        return beam, cached, n, elapsed, n / elapsed

    small = min(args.lines, args.uncached_lines)
    rows = []
    for beam in (1, 4):
        rows.append(run(beam, True, args.lines))
        same = run(beam, True, small) if small < args.lines else rows[-1]  # the cache's speed-up on the same lines
        uncached = run(beam, False, small)
        rows.append(uncached)
        rows[-1] = (*uncached, same[4] / uncached[4])
    print(f"\n{what}; first lines of {corpus.file('test', corpus.src)}; torch {torch.__version__}; "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads\n")
    print("| search | cache | sentences | seconds | sentences/s | cache speed-up (same sentences) |")
    print("|---|---|---|---|---|---|")
    for beam, cached, n, elapsed, sps, *up in rows:
        name = "greedy" if beam == 1 else f"beam {beam}"
        print(f"| {name} | {'yes' if cached else 'no'} | {n} | {elapsed:.1f} | {sps:.1f} | "
              f"{f'{up[0]:.1f}×' if up else ''} |")


if __name__ == "__main__":
    main()
