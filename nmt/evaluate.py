"""``python evaluate.py RUN [RUN ...]``: a BLEU table per skip variant that can be compared with the literature.

For every run directory: load its best checkpoint (or the average of its last N periodic checkpoints),
translate the split with beam search, and score it with sacreBLEU (13a, cased, detokenized output
against the raw references) and chrF++, keeping their signatures, plus the extra scores of the corpus's
evaluation protocol (``nmt.data.catalog.Protocol``): for WMT'14 EN-DE, and any corpus into German, the
literature's tokenized BLEU with compound splitting (what Vaswani et al.'s 27.3/28.4 are); for IWSLT'15
EN-VI, distributed tokenized, the BLEU of its own tokens. ``--tokenized`` forces the latter protocol on
any corpus. The protocol is stated with the scores. Hypotheses are written next to the scores.

The table groups runs by skip variant and λ: parameters, updates, target tokens seen, wall time, seeds,
diverged runs (shown, never silently dropped: the mean is over the runs that did not diverge, and the
count says how many did), BLEU mean ± std, chrF++, and Δ BLEU against ``post_ln`` with the paired
bootstrap p-value between the two systems' outputs of the same seed. Printed, and written as Markdown,
CSV and JSON.

Runs whose test references, SentencePiece model or scoring protocol differ are never mixed in one table:
each comparable set gets its own. A run directory that is incomplete, or whose checkpoint does not load,
is reported and skipped.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from nmt.residual import BASELINE, variant_order


@dataclass
class RunScore:
    """One run's evaluation."""

    run: str
    skip: str
    lam: float
    seed: int
    arch: str
    parameters: int
    updates: int
    tokens_seen: int
    wall_time_s: float | None
    diverged: bool
    checkpoint: str
    bleu: float
    bleu_signature: str
    chrf: float
    chrf_signature: str
    extra: dict = field(default_factory=dict)  # protocol-specific scores (e.g. compound-split BLEU)
    comparable: str = ""  # key of the set of runs this one may be compared with
    protocol: dict = field(default_factory=dict)  # the scoring protocol (nmt.data.catalog.Protocol.to_dict())
    hypotheses: list[str] = field(default_factory=list, repr=False)
    references: list[str] = field(default_factory=list, repr=False)
    diverged_at_step: int | None = None  # the update where the divergence began, when known
    skipped_updates: int = 0  # updates skipped for a non-finite loss or gradient (from the checkpoint)
    stop_reason: str | None = None  # why training ended (results.json): max_steps, max_epochs, patience, diverged, …
    best_step: int | None = None  # the update of the best validation BLEU
    last_step: int | None = None  # the last update trained


class SkipRun(Exception):
    """A run that cannot be evaluated; the message says why."""


def _read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SkipRun(f"{path}: {e}") from None


def read_results(run: Path) -> dict:
    """The run's results.json, or {} when it has none (or an unreadable one)."""
    try:
        record = json.loads((run / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _diverged(run: Path) -> tuple[bool, int | None]:
    """Whether the run diverged, and the update where the divergence began when that is known.

    results.json decides when it says: train.py records ``diverged`` and ``diverged_at_step`` (a skipped
    update with a non-finite loss is not a divergence: training went on). Without that record (older
    runs, runs still training or killed), the first non-finite training loss in metrics.csv.
    """
    record = read_results(run)
    if "diverged" in record:
        return bool(record["diverged"]), record.get("diverged_at_step")
    metrics = run / "metrics.csv"
    if metrics.is_file():
        with open(metrics, newline="") as f:
            for row in csv.DictReader(f):
                value = row.get("train/loss") or ""
                if value and not math.isfinite(float(value)):
                    step = row.get("step") or ""
                    return True, int(float(step)) if step else None
    return False, None


def scoring_protocol(corpus, tokenized: bool = False):
    """The protocol a corpus is scored with; ``tokenized`` (``--tokenized``) forces BLEU on its own tokens."""
    from nmt.data.catalog import Protocol

    if tokenized:
        return Protocol(corpus.protocol.test_set, bleu_tokenize="none", extra=("tokenized_bleu",))
    return corpus.protocol


def extra_scores(protocol, hyps: list[str], refs: list[str], tgt: str) -> dict:
    """The scores ``protocol.extra`` names, each a dict with ``score`` and ``signature``."""
    from nmt.metrics import compound_split_bleu, tokenized_bleu

    metrics = {
        "compound_split_bleu": lambda: compound_split_bleu(hyps, refs, tgt),
        "tokenized_bleu": lambda: tokenized_bleu(hyps, refs),
    }
    return {name: metrics[name]() for name in protocol.extra}


def evaluate_run(run: Path, args: argparse.Namespace) -> RunScore:
    """Translate and score one run; raises SkipRun when it cannot be evaluated."""
    from nmt.average import average_checkpoints, last_checkpoints
    from nmt.data.corpus import DataError, resolve_corpus
    from nmt.metrics import chrf_pp_score, sacrebleu_score
    from nmt.translate import CheckpointError, Translator, find_checkpoint, load_checkpoint

    if not (run / "config.yaml").is_file():
        raise SkipRun(f"{run}: no config.yaml (not a run directory, or an incomplete one)")
    record = read_results(run)
    if record.get("finished") is False and not record.get("diverged"):
        raise SkipRun(f"{run}: training was stopped by {record.get('stopped', 'a signal')} at update "
                      f"{record.get('steps', '?')} and has not finished; resume it with python train.py --resume "
                      f"--run-dir {run}")
    cfg = _read_yaml(run / "config.yaml")
    try:
        if args.average_last:
            files = last_checkpoints(run, args.average_last)
            ckpt, described = average_checkpoints(files), f"average of {', '.join(p.name for p in files)}"
            file = files[-1]
        else:
            file = find_checkpoint(run, "best")
            ckpt, described = load_checkpoint(file), file.name
        translator = Translator.from_checkpoint(ckpt, file)
    except (CheckpointError, ValueError, OSError) as e:
        raise SkipRun(str(e)) from None

    try:
        corpus = resolve_corpus(args.data or cfg["data"], cfg.get("src"), cfg.get("tgt"))
        sources, refs = corpus.read_split(args.split)
    except DataError as e:
        raise SkipRun(f"{run}: {e}") from None
    if args.limit:
        sources, refs = sources[: args.limit], refs[: args.limit]

    hyps = translator.translate(sources, beam=args.beam, lenpen=args.lenpen, lenpen_style=args.lenpen_style)
    bleu, chrf = sacrebleu_score(hyps, refs), chrf_pp_score(hyps, refs)
    scoring = scoring_protocol(corpus, args.tokenized)
    extra = extra_scores(scoring, hyps, refs, corpus.tgt)

    prov = {}
    if (run / "provenance.json").is_file():
        prov = json.loads((run / "provenance.json").read_text())
    results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    ref_hash = hashlib.sha256("\n".join(refs).encode()).hexdigest()[:12]
    spm_hash = prov.get("spm_model_sha256", hashlib.sha256(translator.tokenizer.model_bytes).hexdigest())[:12]
    protocol = f"{args.split}:{ref_hash}|spm:{spm_hash}|beam{args.beam}|lp{args.lenpen_style}{args.lenpen:g}|{scoring.key()}"
    if args.limit:
        protocol += f"|first{args.limit}"
    diverged, diverged_at = _diverged(run)
    return RunScore(
        run=str(run),
        skip=cfg.get("skip", "?"),
        lam=float(cfg.get("lam", 1.0)),
        seed=int(cfg.get("seed", 0)),
        arch=cfg.get("arch", "?"),
        parameters=translator.model.num_parameters(),  # parameters only, not buffers (Admin's init flag)
        updates=int(ckpt.get("global_step", 0)),
        tokens_seen=int(ckpt.get("tokens_seen", 0)),
        wall_time_s=results.get("wall_time_s"),
        diverged=diverged,
        diverged_at_step=diverged_at,
        skipped_updates=int(ckpt.get("nonfinite", {}).get("skipped", 0)),
        stop_reason=results.get("stop_reason") or ("diverged" if diverged else None),
        best_step=results.get("best_step"),
        last_step=results.get("steps"),
        checkpoint=described,
        bleu=bleu["score"],
        bleu_signature=bleu["signature"],
        chrf=chrf["score"],
        chrf_signature=chrf["signature"],
        extra=extra,
        comparable=protocol,
        protocol=scoring.to_dict(),
        hypotheses=hyps,
        references=refs,
    )


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def build_table(scores: list[RunScore], bootstrap: int) -> list[dict]:
    """One row per (skip, λ) among comparable runs, with Δ BLEU and bootstrap p against post_ln."""
    from nmt.metrics import paired_bootstrap

    groups: dict[tuple[str, float], list[RunScore]] = {}
    for s in scores:
        groups.setdefault((s.skip, s.lam), []).append(s)
    baseline = {s.seed: s for s in groups.get((BASELINE, 1.0), []) if not s.diverged}
    rows = []
    for (skip, lam), runs in sorted(groups.items(), key=lambda kv: variant_order(*kv[0])):
        ok = [r for r in runs if not r.diverged]
        bleu_mean, bleu_std = _mean_std([r.bleu for r in ok])
        chrf_mean, _ = _mean_std([r.chrf for r in ok])
        row = {
            "variant": skip,
            "lambda": lam,
            "parameters": runs[0].parameters,
            "updates": round(statistics.fmean(r.updates for r in runs)),
            "tokens_seen": round(statistics.fmean(r.tokens_seen for r in runs)),
            "wall_time_s": _mean_std([r.wall_time_s for r in runs if r.wall_time_s is not None])[0],
            "seeds": len(runs),
            "diverged": len(runs) - len(ok),
            "skipped_updates": sum(r.skipped_updates for r in runs),  # non-finite updates skipped, over all seeds
            "stopped": stop_summary(runs),
            "bleu_mean": bleu_mean,
            "bleu_std": bleu_std,
            "chrf_mean": chrf_mean,
            "delta_bleu": None,
            "p_value_max": None,
            "paired_seeds": 0,
        }
        for key in sorted({k for r in ok for k in r.extra}):
            row[key] = _mean_std([r.extra[key]["score"] for r in ok if key in r.extra])[0]
        if (skip, lam) != (BASELINE, 1.0) and baseline:
            pairs = [(baseline[r.seed], r) for r in ok if r.seed in baseline]
            if pairs:
                tests = [paired_bootstrap(b.hypotheses, r.hypotheses, r.references, n=bootstrap, seed=r.seed)
                         for b, r in pairs]
                row["delta_bleu"] = statistics.fmean(t["delta"] for t in tests)
                row["p_value_max"] = max(t["p_value"] for t in tests)
                row["paired_seeds"] = len(pairs)
        rows.append(row)
    return rows


def stop_summary(runs: list) -> str:
    """How the runs of a row ended, in seed order: "patience @ 3,400; max_steps @ 8,000" (— when unknown).

    ``runs`` are RunScores, or dicts with their ``seed``, ``stop_reason`` and ``last_step``."""
    def get(r, key):
        return r.get(key) if isinstance(r, dict) else getattr(r, key)

    parts = [f"{get(r, 'stop_reason')} @ {get(r, 'last_step'):,}" if get(r, "stop_reason") and get(r, "last_step")
             is not None else "—" for r in sorted(runs, key=lambda r: get(r, "seed"))]
    return "; ".join(parts) if any(p != "—" for p in parts) else "—"


def _fmt(value, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def markdown_table(rows: list[dict], title: str) -> str:
    extra_keys = [k for k in rows[0] if k.endswith("_bleu") and k != "delta_bleu"] if rows else []
    head = ["variant", "λ", "params", "updates", "tgt tokens", "wall time", "seeds", "diverged", "skipped updates",
            "stopped (at update)", "BLEU", "chrF++",
            *[k.replace("_", " ") for k in extra_keys], "Δ BLEU vs post_ln", "p (max over seeds)"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        bleu = "—" if r["bleu_mean"] is None else f"{r['bleu_mean']:.2f} ± {r['bleu_std']:.2f}"
        wall = "—" if r["wall_time_s"] is None else f"{r['wall_time_s'] / 60:.1f} min"
        cells = [r["variant"], f"{r['lambda']:g}", f"{r['parameters']:,}", f"{r['updates']:,}", f"{r['tokens_seen']:,}",
                 wall, str(r["seeds"]), str(r["diverged"]), str(r.get("skipped_updates", 0)), r.get("stopped", "—"), bleu,
                 _fmt(r["chrf_mean"]),
                 *[_fmt(r.get(k)) for k in extra_keys],
                 _fmt(r["delta_bleu"], "+.2f"), _fmt(r["p_value_max"], ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results_csv(path: Path, tables: list[dict]) -> None:
    """Every row of every table in one CSV, each labelled with its table's comparability key."""
    with open(path, "w", newline="") as f:
        fieldnames = ["comparable"] + sorted({k for t in tables for r in t["rows"] for k in r})
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        for t in tables:
            for r in t["rows"]:
                writer.writerow({"comparable": t["comparable"], **r})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--data", help="corpus to evaluate on (default: each run's own --data)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lenpen", type=float, default=0.6, help="length penalty α")
    p.add_argument("--lenpen-style", default="gnmt", choices=["gnmt", "fairseq"],
                   help="gnmt: ((5+len)/6)^α (Wu et al. 2016, as Vaswani et al.); fairseq: len^α")
    p.add_argument("--average-last", type=int, default=0, metavar="N",
                   help="average the last N step-<N>.ckpt checkpoints instead of using best.ckpt")
    p.add_argument("--tokenized", action="store_true",
                   help="override the corpus's protocol: its references are distributed tokenized, so report BLEU on "
                   "their whitespace tokens, without further tokenization (multi-bleu.perl style), instead of the "
                   "protocol's extra scores. Named datasets need no flag (--data iwslt15-en-vi is scored so already)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    p.add_argument("--limit", type=int, default=0, help="evaluate the first N sentences only (labelled in the table)")
    p.add_argument("--out", type=Path, default=Path("eval"), help="folder for the tables and hypotheses")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    scores, skipped = [], []
    for run in args.runs:
        try:
            score = evaluate_run(run, args)
        except SkipRun as e:
            skipped.append({"run": str(run), "reason": str(e)})
            print(f"skipped {run}: {e}", file=sys.stderr, flush=True)
            continue
        scores.append(score)
        diverged = ""
        if score.diverged:
            diverged = "  diverged" + (f" at update {score.diverged_at_step}" if score.diverged_at_step else "")
        print(f"{run}: BLEU {score.bleu:.2f}  chrF++ {score.chrf:.2f}  ({score.checkpoint}){diverged}", flush=True)
    if not scores:
        print("evaluate.py: error: no run could be evaluated", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    for s in scores:
        name = Path(s.run).name
        (args.out / f"{name}.{args.split}.hyp").write_text("".join(h + "\n" for h in s.hypotheses), encoding="utf-8")

    keys = sorted(set(s.comparable for s in scores))
    if len(keys) > 1:
        print(f"warning: these runs fall into {len(keys)} sets that are not comparable (different test data, "
              "tokenizer or protocol); each gets its own table", file=sys.stderr)
    tables, markdown = [], []
    for key in keys:
        group = [s for s in scores if s.comparable == key]
        rows = build_table(group, args.bootstrap)
        first = group[0]
        title = f"{args.split} set, {len(group)} runs ({key})"
        markdown.append(markdown_table(rows, title))
        markdown.append(f"\nprotocol: {first.protocol['description']}"
                        f"  \nsacreBLEU: `{first.bleu_signature}`  \nchrF++: `{first.chrf_signature}`"
                        + "".join(f"  \n{k}: `{v['signature']}`" for k, v in first.extra.items()))
        tables.append({"comparable": key, "protocol": first.protocol, "rows": rows, "bleu_signature": first.bleu_signature,
                       "chrf_signature": first.chrf_signature,
                       "runs": [{k: v for k, v in asdict(s).items() if k not in ("hypotheses", "references")} for s in group]})
    text = "\n\n".join(markdown)
    if skipped:
        text += "\n\nSkipped:\n" + "\n".join(f"- {s['run']}: {s['reason']}" for s in skipped)
    print("\n" + text)
    (args.out / "results.md").write_text(text + "\n", encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps({"tables": tables, "skipped": skipped}, indent=2) + "\n")
    write_results_csv(args.out / "results.csv", tables)
    print(f"\nwritten to {args.out}/ (results.md, results.csv, results.json, hypotheses) in {time.time() - started:.0f} s")
    return 0
