"""``python -m nmt.report DIR``: rewrite a study's report; and the report flags that ``nmt.sweep`` shares."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nmt.diagnose.settings import DiagnosisSettings
from nmt.eval_settings import EvalSettings, ScoringSettings, add_eval_args, add_scoring_args
from nmt.report.why import WHY
from nmt.report.write import write_report
from nmt.residual import UnknownVariant, residual_class


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nmt.report", description="Rewrite DIR/report/ of a sweep.")
    p.add_argument("out", type=Path, help="the sweep's --out folder")
    add_scoring_args(p)
    add_eval_args(p, with_average_last=True)
    add_also_average_arg(p)
    add_pilot_arg(p)
    add_why_arg(p)
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="torch threads of the evaluation and the diagnoses (default: torch's, one per core). On a "
                   "machine that trains something else meanwhile, give the cores left free: two threads sharing one "
                   "free core translated 4× slower than one")
    return p


def use_threads(threads: int) -> None:
    """Evaluate and diagnose with ``threads`` torch threads (0: torch's default, one per core)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


class FlagError(ValueError):
    """Report flags that contradict each other; the message names them."""


def add_also_average_arg(parser) -> None:
    """``--also-average-last N``, shared by ``python -m nmt.report`` and ``python -m nmt.sweep``."""
    parser.add_argument("--also-average-last", type=int, default=0, metavar="N",
                        help="also score each run with the average of its last N periodic checkpoints "
                        "(step-<N>.ckpt: train with --save-every), in tables of their own after best.ckpt's; the "
                        "claims stay decided on best.ckpt (default: best.ckpt only)")


def add_pilot_arg(parser) -> None:
    """``--pilot DIR ...``, shared by ``python -m nmt.report`` and ``python -m nmt.sweep``."""
    parser.add_argument("--pilot", type=Path, nargs="+", default=[], metavar="DIR",
                        help="nmt.pilot folders (its --out) that chose this study's learning rate, warm-up and "
                        "budget: the report shows their tables and curves and checks the study against them")


def pilots(args) -> list[Path]:
    """``--pilot``'s folders, each checked for the pilot.json that nmt.pilot writes; raises FlagError naming it."""
    for folder in args.pilot:
        if not (folder / "pilot.json").is_file():
            raise FlagError(f"--pilot {folder}: no pilot.json there (python -m nmt.pilot --out {folder} writes it)")
    return list(args.pilot)


def also_average_last(args) -> int:
    """``--also-average-last``, checked against ``--average-last`` (which replaces best.ckpt: the two together
    would score one average twice over) and for a sign; raises FlagError with the flag's name."""
    if args.also_average_last < 0:
        raise FlagError(f"--also-average-last {args.also_average_last}: must be ≥ 0")
    if args.also_average_last and args.average_last:
        raise FlagError("--also-average-last and --average-last together: --average-last scores the average "
                         "instead of best.ckpt, --also-average-last beside it; use one")
    return args.also_average_last


def add_why_arg(parser) -> None:
    """``--no-why`` and ``--why-only``, shared by ``python -m nmt.report`` and ``python -m nmt.sweep``."""
    parser.add_argument("--no-why", action="store_true",
                        help="leave out the \"Why\" section (the diagnosis of each variant's best checkpoint, one "
                        "model at a time; cached in DIR/diagnosis/, so only new or changed checkpoints are diagnosed "
                        "again)")
    parser.add_argument("--why-only", type=_skip_names, default=None, metavar="SKIPS",
                        help="diagnose only these residual variants (comma-separated --skip names, every λ of each) "
                        "in the \"Why\" section, e.g. post_ln,pre_ln,rskip_ln: on deep models a diagnosis takes up "
                        "to an hour (default: every variant)")


def _skip_names(text: str) -> frozenset[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        try:
            residual_class(name)
        except UnknownVariant as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if not names:
        raise argparse.ArgumentTypeError("no variant named")
    return frozenset(names)


def why_settings(args) -> DiagnosisSettings | None:
    """The diagnosis settings of the "Why" section, None with ``--no-why``."""
    return None if args.no_why else WHY


def why_only(args) -> frozenset[str] | None:
    """The variants (``--skip`` names) the "Why" section diagnoses; None: all of them."""
    return args.why_only


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.out / "runs").is_dir():
        print(f"report: error: {args.out} holds no runs/ folder", file=sys.stderr)
        return 2
    try:
        average, chosen_by = also_average_last(args), pilots(args)
        if args.threads < 0:
            raise FlagError(f"--threads {args.threads}: must be ≥ 0 (0: one per core)")
    except FlagError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    use_threads(args.threads)
    folder = write_report(args.out, EvalSettings.from_args(args), ScoringSettings.from_args(args),
                          why_settings(args), why_only(args), average, chosen_by)
    print(f"report written to {folder}/")
    return 0
