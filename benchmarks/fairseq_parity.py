"""Like-for-like BLEU against fairseq at equal updates: several seeds of each system, one machine, one table.

    python benchmarks/fairseq_parity.py --out parity --seeds 1,2,3 --systems fairseq,xavier,fairseq-init

Systems: ``fairseq`` (``benchmarks/fairseq_reference.sh BLEU=1``: fairseq-fixed trains the 3+3 model on the same
SentencePiece pieces) and ``xavier`` / ``fairseq-init`` (``train.py --init xavier`` / ``--init fairseq``, otherwise
the command of docs/benchmarks.md). Every run trains ``--updates`` updates with ``--threads`` threads (one by default:
then a run's numbers do not depend on what else the machine does), ``--parallel`` runs at a time. Each system's final
weights translate the valid and test splits with beam 5 and length penalty 1 (fairseq's defaults: score / length),
scored with sacreBLEU 13a on detokenized text against the raw references, with the brevity penalty and the
hypothesis/reference length ratio.

Interrupt and rerun at will: a run with ``scores.json`` is done; an unfinished one of ours resumes (``--resume
auto``), fairseq's starts again. ``OUT/parity.md`` and ``OUT/parity.json`` hold the table (mean ± std over seeds,
and the difference of each system's mean from fairseq's with its standard error and Welch's t).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's nmt, whatever the venv has installed (also in the processes it starts)
OURS = {"xavier": "xavier", "fairseq-init": "fairseq"}  # system name → train.py --init
SPLITS = ("valid", "test")


def ours_command(args, init: str, seed: int, run_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "--data", args.data, "--arch", "small",
            "--layers", str(args.layers), "--vocab-size", "8000", "--max-steps", str(args.updates),
            "--max-tokens", str(args.max_tokens), "--val-every", str(args.updates), "--seed", str(seed),
            "--init", init, "--run-dir", str(run_dir), "--resume", "auto"]


def run_one(args, system: str, seed: int) -> dict:
    """Train one system with one seed (unless done), translate valid and test, and return its scores."""
    folder = Path(args.out) / f"{system}-seed{seed}"
    done = folder / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(ROOT)}  # this checkout's nmt, whatever the venv has installed
    log = open(folder / "train.log", "a")
    if system == "fairseq":
        trained = (folder / "checkpoints" / "checkpoint_last.pt").is_file() and "done training" in (
            (folder / "train.log").read_text(errors="replace") if (folder / "train.log").is_file() else "")
        env.update(GENERATE_ONLY="1" if trained else "0")  # a finished training is not repeated
        env.update(BLEU="1", SEED=str(seed), LAYERS=str(args.layers), WORK=str(folder.resolve()),
                   THREADS=str(args.threads), MAX_TOKENS=str(args.fairseq_max_tokens), SUBSETS=" ".join(SPLITS),
                   NMT_PYTHON=sys.executable, DATA=str(Path(args.data).resolve()))
        command = ["bash", str(ROOT / "benchmarks" / "fairseq_reference.sh"), str(args.updates)]
    else:
        command = ours_command(args, OURS[system], seed, folder / "run")
    translated = all((folder / f"{split}{suffix}").is_file() for split in SPLITS for suffix in (".hyp", ".ours.hyp"))
    if system == "fairseq" or not translated:
        proc = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode:
            raise RuntimeError(f"{system} seed {seed} failed (status {proc.returncode}); see {folder / 'train.log'}")
        if system != "fairseq":
            translate_splits(args, folder, env)
    scores = {"system": system, "seed": seed,
              **{split: score(args, folder / f"{split}.hyp", split) for split in SPLITS}}
    if system != "fairseq":  # the same weights under our own output length limit
        scores["own_limit"] = {split: score(args, folder / f"{split}.ours.hyp", split) for split in SPLITS}
    done.write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def translate_splits(args, folder: Path, env: dict) -> None:
    """Our final weights (last.ckpt, as fairseq's checkpoint_last) translate valid and test, beam 5, score / length:
    ``SPLIT.hyp`` with fairseq's output length limit (200 tokens), ``SPLIT.ours.hyp`` with the checkpoint's own
    (1.2 · source length + 10)."""
    command = [sys.executable, __file__, "--translate", str(folder), "--data", args.data]
    subprocess.run(command, cwd=ROOT, env=env, check=True)


def translate_run(folder: Path, data: str) -> None:
    from nmt.data.catalog import resolve_corpus
    from nmt.data.corpus import read_lines
    from nmt.translate import Translator

    corpus = resolve_corpus(data, None, None)
    translator = Translator.load(folder / "run", "last")
    own = (translator.max_len_a, translator.max_len_b)
    for split in SPLITS:
        lines = read_lines(corpus.file(split, corpus.src))
        for suffix, (a, b) in ((".hyp", (0.0, 200)), (".ours.hyp", own)):
            translator.max_len_a, translator.max_len_b = a, b
            hyps = translator.translate(lines, beam=5, lenpen=1.0, lenpen_style="fairseq")
            (folder / f"{split}{suffix}").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")


def score(args, hyp_file: Path, split: str) -> dict:
    import sacrebleu

    from nmt.data.catalog import resolve_corpus
    from nmt.data.corpus import read_lines

    corpus = resolve_corpus(args.data, None, None)
    bleu = sacrebleu.BLEU().corpus_score(read_lines(hyp_file), [read_lines(corpus.file(split, corpus.tgt))])
    return {"bleu": round(bleu.score, 2), "bp": round(bleu.bp, 3), "ratio": round(bleu.sys_len / bleu.ref_len, 3)}


def summarise(results: list[dict], systems: list[str]) -> tuple[str, dict]:
    """Mean ± std per system and split, and every system's mean minus fairseq's with its standard error."""
    table, lines = {}, []
    for split in SPLITS:
        lines += [f"### {split} (beam 5, length penalty 1, sacreBLEU 13a)", "",
                  "| system | seeds | BLEU per seed | mean ± std | Δ vs fairseq (± s.e.) "
                  "| Welch t | BP | hyp/ref length |",
                  "|---|---|---|---|---|---|---|---|"]
        for system in systems:
            rows = sorted((r for r in results if r["system"] == system), key=lambda r: r["seed"])
            if not rows:
                continue
            bleus = [r[split]["bleu"] for r in rows]
            mean, std = statistics.mean(bleus), statistics.stdev(bleus) if len(bleus) > 1 else float("nan")
            entry = {"seeds": [r["seed"] for r in rows], "bleu": bleus, "mean": round(mean, 2), "std": round(std, 2),
                     "bp": [r[split]["bp"] for r in rows], "ratio": [r[split]["ratio"] for r in rows]}
            ref = [r[split]["bleu"] for r in results if r["system"] == "fairseq"]
            delta = t = ""
            if system != "fairseq" and len(ref) > 1 and len(bleus) > 1:
                se = math.sqrt(statistics.variance(bleus) / len(bleus) + statistics.variance(ref) / len(ref))
                d = mean - statistics.mean(ref)
                entry.update(delta=round(d, 2), se=round(se, 2), welch_t=round(d / se, 2) if se else None)
                delta, t = f"{d:+.2f} ± {se:.2f}", f"{d / se:+.2f}" if se else "—"
            table.setdefault(split, {})[system] = entry
            lines.append(f"| {system} | {len(rows)} | {', '.join(f'{b:.2f}' for b in bleus)} | "
                         f"{mean:.2f} ± {std:.2f} | {delta} | {t} | {statistics.mean(entry['bp']):.3f} | "
                         f"{statistics.mean(entry['ratio']):.3f} |")
        lines.append("")
    return "\n".join(lines), table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="folder of the runs and the table (required)")
    p.add_argument("--systems", default="fairseq,xavier,fairseq-init", help="fairseq, xavier, fairseq-init")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k-en-de"))
    p.add_argument("--updates", type=int, default=800)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=3600, help="ours (≈ fairseq's target tokens per update at 4096)")
    p.add_argument("--fairseq-max-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--translate", metavar="FOLDER", help=argparse.SUPPRESS)  # internal: one run's translations
    args = p.parse_args(argv)
    if args.translate:
        translate_run(Path(args.translate), args.data)
        return 0
    if not args.out:
        p.error("--out is required")
    systems = args.systems.split(",")
    unknown = set(systems) - {"fairseq", *OURS}
    if unknown:
        p.error(f"unknown system(s) {', '.join(sorted(unknown))}")
    jobs = [(system, int(seed)) for seed in args.seeds.split(",") for system in systems]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    def attempt(job):  # a failed run is reported, and the others go on (a rerun tries it again)
        try:
            return run_one(args, *job)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            print(f"{job[0]} seed {job[1]}: {e}", file=sys.stderr, flush=True)
            return None

    with ThreadPoolExecutor(args.parallel) as pool:
        results = [r for r in pool.map(attempt, jobs) if r is not None]
    if len(results) < len(jobs):
        print(f"{len(jobs) - len(results)} of {len(jobs)} runs failed; rerun the same command to retry them",
              file=sys.stderr)
    text, table = summarise(results, systems)
    (Path(args.out) / "parity.md").write_text(text)
    (Path(args.out) / "parity.json").write_text(json.dumps(table, indent=2) + "\n")
    print(text)
    return 0 if len(results) == len(jobs) else 1


if __name__ == "__main__":
    sys.exit(main())
