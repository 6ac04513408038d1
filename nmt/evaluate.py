"""``python evaluate.py RUN [RUN ...]``: a BLEU table per skip variant that can be compared with the literature.

For every run directory: load its best checkpoint (or the average of its last N periodic checkpoints),
translate the split with beam search, and score it with sacreBLEU (13a, cased, detokenized output
against the raw references) and chrF++, keeping their signatures, plus the extra scores of the corpus's
evaluation protocol (``nmt.data.protocol.Protocol``): for WMT'14 EN-DE, and any corpus into German, the
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

from nmt import atomic
from nmt.config import ConfigError, TrainConfig, read_saved_config
from nmt.eval_settings import EvalSettings, ScoringSettings, add_eval_args, add_scoring_args
from nmt.residual import BASELINE, variant_order
from nmt.tables import MISSING, cell, markdown_table, per_seed


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
    protocol: dict = field(default_factory=dict)  # the scoring protocol (nmt.data.protocol.Protocol.to_dict())
    hypotheses: list[str] = field(default_factory=list, repr=False)
    references: list[str] = field(default_factory=list, repr=False)
    diverged_at_step: int | None = None  # the update where the divergence began, when known
    skipped_updates: int = 0  # updates skipped for a non-finite loss or gradient (from the checkpoint)
    stop_reason: str | None = None  # why training ended (results.json): max_steps, max_epochs, patience, diverged, …
    best_step: int | None = None  # the update of the best validation BLEU
    last_step: int | None = None  # the last update trained

    def record(self) -> dict:
        """Everything but the hypotheses and references: what results.json says of the run."""
        return {k: v for k, v in asdict(self).items() if k not in ("hypotheses", "references")}


class RunNotEvaluable(Exception):
    """A run directory that cannot be evaluated (incomplete, unfinished, no loadable checkpoint); the message
    says why."""


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
    from nmt.data.protocol import Protocol

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


def evaluate_run(run: Path, settings: EvalSettings, scoring: ScoringSettings,
                 data: str | None = None, tokenized: bool = False) -> RunScore:
    """Translate and score one run on ``data`` (default: its own corpus); raises RunNotEvaluable when it cannot be
    evaluated. ``tokenized``: score the corpus as distributed tokenized (``--tokenized``)."""
    from nmt.metrics import chrf_pp_score, sacrebleu_score

    record = read_results(run)
    cfg = _evaluable_config(run, record)
    ckpt, translator, described = _load_weights(run, settings.average_last)
    corpus, sources, refs = _read_split(run, cfg, data, scoring)
    hyps = translator.translate(sources, **settings.decoding())
    bleu, chrf = sacrebleu_score(hyps, refs), chrf_pp_score(hyps, refs)
    protocol = scoring_protocol(corpus, tokenized)
    diverged, diverged_at = _diverged(run)
    return RunScore(
        run=str(run),
        skip=cfg.skip,
        lam=cfg.lam,
        seed=cfg.seed,
        arch=cfg.arch,
        parameters=translator.model.num_parameters(),  # parameters only, not buffers (Admin's init flag)
        updates=int(ckpt.get("global_step", 0)),
        tokens_seen=int(ckpt.get("tokens_seen", 0)),
        wall_time_s=record.get("wall_time_s"),
        diverged=diverged,
        diverged_at_step=diverged_at,
        skipped_updates=int(ckpt.get("nonfinite", {}).get("skipped", 0)),
        stop_reason=record.get("stop_reason") or ("diverged" if diverged else None),
        best_step=record.get("best_step"),
        last_step=record.get("steps"),
        checkpoint=described,
        bleu=bleu["score"],
        bleu_signature=bleu["signature"],
        chrf=chrf["score"],
        chrf_signature=chrf["signature"],
        extra=extra_scores(protocol, hyps, refs, corpus.tgt),
        comparable=comparability_key(run, refs, translator.tokenizer.model_bytes, settings, scoring, protocol),
        protocol=protocol.to_dict(),
        hypotheses=hyps,
        references=refs,
    )


def _evaluable_config(run: Path, record: dict) -> TrainConfig:
    """The run's config.yaml; raises RunNotEvaluable for a folder that is no run or, by its results.json
    ``record``, a run that has not finished."""
    if not (run / "config.yaml").is_file():
        raise RunNotEvaluable(f"{run}: no config.yaml (not a run directory, or an incomplete one)")
    if record.get("finished") is False and not record.get("diverged"):
        raise RunNotEvaluable(f"{run}: training was stopped by {record.get('stopped', 'a signal')} at update "
                              f"{record.get('steps', '?')} and has not finished; resume it with python train.py "
                              f"--resume --run-dir {run}")
    try:
        return read_saved_config(run / "config.yaml")
    except ConfigError as e:
        raise RunNotEvaluable(str(e)) from None


def _load_weights(run: Path, average_last: int):
    """(checkpoint dict, its Translator, how it is described in the tables): the run's best.ckpt, or with
    ``average_last`` N > 0 the average of its last N periodic checkpoints."""
    from nmt.average import average_checkpoints, last_checkpoints
    from nmt.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
    from nmt.translate import Translator

    try:
        if average_last:
            files = last_checkpoints(run, average_last)
            ckpt, described = average_checkpoints(files), f"average of {', '.join(p.name for p in files)}"
            file = files[-1]
        else:
            file = find_checkpoint(run, "best")
            ckpt, described = load_checkpoint(file), file.name
        return ckpt, Translator.from_checkpoint(ckpt, file), described
    except (CheckpointError, ValueError, OSError) as e:
        raise RunNotEvaluable(str(e)) from None


def _read_split(run: Path, cfg: TrainConfig, data: str | None, scoring: ScoringSettings):
    """(corpus, source lines, reference lines) of the split to score: ``data`` or the run's own corpus."""
    from nmt.data.catalog import resolve_corpus
    from nmt.data.corpus import DataError

    try:
        corpus = resolve_corpus(data or cfg.data, cfg.src, cfg.tgt)
        sources, refs = corpus.read_split(scoring.split)
    except DataError as e:
        raise RunNotEvaluable(f"{run}: {e}") from None
    if scoring.limit:
        sources, refs = sources[: scoring.limit], refs[: scoring.limit]
    return corpus, sources, refs


def comparability_key(run: Path, refs: list[str], spm_model: bytes, settings: EvalSettings,
                      scoring: ScoringSettings, protocol) -> str:
    """What runs must share to be compared in one table: the references, the SentencePiece model (the run's
    provenance says which, else ``spm_model`` is hashed), the decoding and the scoring protocol (e.g.
    ``test:21a592d6b528|spm:c23df4705086|beam4|lpgnmt0.6|tok:13a``)."""
    provenance = {}
    if (run / "provenance.json").is_file():
        provenance = json.loads((run / "provenance.json").read_text())
    ref_hash = hashlib.sha256("\n".join(refs).encode()).hexdigest()[:12]
    spm_hash = provenance.get("spm_model_sha256", hashlib.sha256(spm_model).hexdigest())[:12]
    key = (f"{scoring.split}:{ref_hash}|spm:{spm_hash}|beam{settings.beam}|lp{settings.lenpen_style}"
           f"{settings.lenpen:g}|{protocol.key()}")
    return key + (f"|first{scoring.limit}" if scoring.limit else "")


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
        trained = [r for r in runs if not r.diverged]
        bleu_mean, bleu_std = _mean_std([r.bleu for r in trained])
        chrf_mean, _ = _mean_std([r.chrf for r in trained])
        row = {
            "variant": skip,
            "lambda": lam,
            "parameters": runs[0].parameters,
            "updates": round(statistics.fmean(r.updates for r in runs)),
            "tokens_seen": round(statistics.fmean(r.tokens_seen for r in runs)),
            "wall_time_s": _mean_std([r.wall_time_s for r in runs if r.wall_time_s is not None])[0],
            "seeds": len(runs),
            "diverged": len(runs) - len(trained),
            "skipped_updates": sum(r.skipped_updates for r in runs),  # non-finite updates skipped, over all seeds
            "stopped": stop_summary(runs),
            "bleu_mean": bleu_mean,
            "bleu_std": bleu_std,
            "chrf_mean": chrf_mean,
            "delta_bleu": None,
            "p_value_max": None,
            "paired_seeds": 0,
        }
        for key in sorted({k for r in trained for k in r.extra}):
            row[key] = _mean_std([r.extra[key]["score"] for r in trained if key in r.extra])[0]
        if (skip, lam) != (BASELINE, 1.0) and baseline:
            pairs = [(baseline[r.seed], r) for r in trained if r.seed in baseline]
            if pairs:
                tests = [paired_bootstrap(b.hypotheses, r.hypotheses, r.references, n=bootstrap, seed=r.seed)
                         for b, r in pairs]
                row["delta_bleu"] = statistics.fmean(t["delta"] for t in tests)
                row["p_value_max"] = max(t["p_value"] for t in tests)
                row["paired_seeds"] = len(pairs)
        rows.append(row)
    return rows


def stop_summary(runs: list) -> str:
    """How the runs of a row ended, in seed order: "patience @ 3,400; max_steps @ 8,000", once for seeds that all
    ended alike: "max_steps @ 220 (all 3 seeds)" (— when unknown).

    ``runs`` are RunScores, or dicts with their ``seed``, ``stop_reason`` and ``last_step``."""
    def value(run, key):
        return run.get(key) if isinstance(run, dict) else getattr(run, key)

    parts = [f"{value(r, 'stop_reason')} @ {value(r, 'last_step'):,}"
             if value(r, "stop_reason") and value(r, "last_step") is not None else MISSING
             for r in sorted(runs, key=lambda r: value(r, "seed"))]
    return per_seed(parts) if any(p != MISSING for p in parts) else MISSING


def comparable_sets(scores: list[RunScore], largest_first: bool = False) -> list[tuple[str, list[RunScore]]]:
    """The scores grouped by comparability key, one table each: (key, its scores), by key (or largest first)."""
    keys = sorted({s.comparable for s in scores})
    if largest_first:
        keys.sort(key=lambda k: -sum(s.comparable == k for s in scores))
    return [(key, [s for s in scores if s.comparable == key]) for key in keys]


def table_title(split: str, runs: int, key: str) -> str:
    """A table's heading: the split, how many runs, and their comparability key (if any)."""
    return f"{split} set, {runs} runs" + (f" ({key})" if key else "")


def bleu_table_markdown(rows: list[dict], title: str) -> str:
    """The BLEU table of ``build_table``'s rows under a ``###`` title."""
    extra_keys = [k for k in rows[0] if k.endswith("_bleu") and k != "delta_bleu"] if rows else []
    head = ["variant", "λ", "params", "updates", "tgt tokens", "wall time", "seeds", "diverged", "skipped updates",
            "stopped (at update)", "BLEU", "chrF++",
            *[k.replace("_", " ") for k in extra_keys], "Δ BLEU vs post_ln", "p (max over seeds)"]
    cells = []
    for r in rows:
        bleu = MISSING if r["bleu_mean"] is None else f"{r['bleu_mean']:.2f} ± {r['bleu_std']:.2f}"
        wall = MISSING if r["wall_time_s"] is None else f"{r['wall_time_s'] / 60:.1f} min"
        cells.append([r["variant"], f"{r['lambda']:g}", f"{r['parameters']:,}", f"{r['updates']:,}",
                      f"{r['tokens_seen']:,}", wall, str(r["seeds"]), str(r["diverged"]),
                      str(r.get("skipped_updates", 0)), r.get("stopped", MISSING), bleu, cell(r["chrf_mean"]),
                      *[cell(r.get(k)) for k in extra_keys],
                      cell(r["delta_bleu"], "+.2f"), cell(r["p_value_max"], ".3f")])
    return f"### {title}\n\n" + markdown_table(head, cells)


def signatures_markdown(first: RunScore, with_extra: bool = True) -> str:
    """The protocol and metric signatures of a table's runs (they share them), one line each."""
    text = (f"protocol: {first.protocol.get('description', '')}  \nsacreBLEU: `{first.bleu_signature}`  "
            f"\nchrF++: `{first.chrf_signature}`")
    if with_extra:
        text += "".join(f"  \n{k}: `{v['signature']}`" for k, v in first.extra.items())
    return text


def write_results_csv(path: Path, tables: list[dict]) -> None:
    """Every row of every table in one CSV, each labelled with its table's comparability key (written beside and
    renamed into place, as every other table: a kill leaves the previous one)."""
    with atomic.replacing(path) as tmp, open(tmp, "w", newline="") as f:
        fieldnames = ["comparable"] + sorted({k for t in tables for r in t["rows"] for k in r})
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        for t in tables:
            for r in t["rows"]:
                writer.writerow({"comparable": t["comparable"], **r})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories")
    p.add_argument("--data", help="corpus to evaluate on (default: each run's own --data)")
    add_scoring_args(p)
    add_eval_args(p, with_average_last=True)
    p.add_argument("--tokenized", action="store_true",
                   help="override the corpus's protocol: its references are distributed tokenized, so report BLEU on "
                   "their whitespace tokens, without further tokenization (multi-bleu.perl style), instead of the "
                   "protocol's extra scores. Named datasets need no flag (--data iwslt15-en-vi is scored so already)")
    p.add_argument("--out", type=Path, default=Path("eval"),
                   help="folder for the tables and hypotheses (default: eval)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    settings, scoring = EvalSettings.from_args(args), ScoringSettings.from_args(args)
    scores, skipped = _evaluate_each(args.runs, settings, scoring, args.data, args.tokenized)
    if not scores:
        print("evaluate.py: error: no run could be evaluated", file=sys.stderr)
        return 2

    args.out.mkdir(parents=True, exist_ok=True)
    for score in scores:
        hypotheses = args.out / f"{Path(score.run).name}.{scoring.split}.hyp"
        atomic.write_text(hypotheses, "".join(h + "\n" for h in score.hypotheses))
    text, tables = _tables(scores, scoring)
    if skipped:
        text += "\n\nSkipped:\n" + "\n".join(f"- {entry['run']}: {entry['reason']}" for entry in skipped)
    print("\n" + text)
    atomic.write_text(args.out / "results.md", text + "\n")
    atomic.write_text(args.out / "results.json", json.dumps({"tables": tables, "skipped": skipped}, indent=2) + "\n")
    write_results_csv(args.out / "results.csv", tables)
    print(f"\nwritten to {args.out}/ (results.md, results.csv, results.json, hypotheses) in "
          f"{time.time() - started:.0f} s")
    return 0


def _evaluate_each(runs: list[Path], settings: EvalSettings, scoring: ScoringSettings, data: str | None,
                   tokenized: bool) -> tuple[list[RunScore], list[dict]]:
    """Every run's score, each printed as it comes, and the runs skipped with the reason."""
    scores, skipped = [], []
    for run in runs:
        try:
            score = evaluate_run(run, settings, scoring, data, tokenized)
        except RunNotEvaluable as e:
            skipped.append({"run": str(run), "reason": str(e)})
            print(f"skipped {run}: {e}", file=sys.stderr, flush=True)
            continue
        scores.append(score)
        diverged = ""
        if score.diverged:
            diverged = "  diverged" + (f" at update {score.diverged_at_step}" if score.diverged_at_step else "")
        print(f"{run}: BLEU {score.bleu:.2f}  chrF++ {score.chrf:.2f}  ({score.checkpoint}){diverged}", flush=True)
    return scores, skipped


def _tables(scores: list[RunScore], scoring: ScoringSettings) -> tuple[str, list[dict]]:
    """One table per set of comparable runs: the Markdown text and the tables of results.json."""
    sets = comparable_sets(scores)
    if len(sets) > 1:
        print(f"warning: these runs fall into {len(sets)} sets that are not comparable (different test data, "
              "tokenizer or protocol); each gets its own table", file=sys.stderr)
    tables, markdown = [], []
    for key, group in sets:
        rows = build_table(group, scoring.bootstrap)
        first = group[0]
        markdown.append(bleu_table_markdown(rows, table_title(scoring.split, len(group), key)))
        markdown.append("\n" + signatures_markdown(first))
        tables.append({"comparable": key, "protocol": first.protocol, "rows": rows,
                       "bleu_signature": first.bleu_signature, "chrf_signature": first.chrf_signature,
                       "runs": [s.record() for s in group]})
    return "\n\n".join(markdown), tables
