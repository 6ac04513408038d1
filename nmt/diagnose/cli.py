"""``python -m nmt.diagnose RUN_OR_CKPT``: the command line of a diagnosis (see ``nmt.diagnose``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nmt.diagnose.settings import DiagnosisSettings

DEFAULTS = DiagnosisSettings()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _natural(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def _scale(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a perturbation size must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nmt.diagnose",
        description="Why a residual design works: gradient flow, hidden-state growth, shattered gradients, a lesion "
        "study and representation similarity of a trained model (or of its initialisation), as figures, a JSON of "
        "every number and a Markdown summary. The measurements are defined in the README's section on diagnosis.")
    p.add_argument("model", type=Path, help="run directory (its best.ckpt) or checkpoint file")
    p.add_argument("--init", action="store_true",
                   help="diagnose the model the run starts from (its config.yaml and seed), before any update")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="which checkpoint of a run directory (default: best)")
    p.add_argument("--out", type=Path,
                   help="folder for the files (default: RUN/diagnosis, RUN/diagnosis-init with --init, or "
                   "CKPT-diagnosis beside a checkpoint file)")
    p.add_argument("--data", help="corpus to measure on (default: the run's own --data)")
    p.add_argument("--split", default=DEFAULTS.split, choices=["valid", "test"],
                   help=f"the split to measure on (default: {DEFAULTS.split})")
    p.add_argument("--limit", type=_natural, default=DEFAULTS.limit, metavar="N",
                   help=f"the first N sentences of the split, 0 for all (default: {DEFAULTS.limit}); the lesion study "
                   "translates them all once per lesion")
    p.add_argument("--batches", type=_positive_int, default=DEFAULTS.batches, metavar="K",
                   help="batches of those sentences for the gradient, hidden-state, shattered-gradient and similarity "
                   f"measurements (default: {DEFAULTS.batches})")
    p.add_argument("--max-tokens", type=_positive_int, default=DEFAULTS.max_tokens, metavar="N",
                   help=f"padded tokens of such a batch (default: {DEFAULTS.max_tokens})")
    p.add_argument("--scales", type=_scale, nargs="+", default=list(DEFAULTS.scales), metavar="ε",
                   help="perturbation sizes of the shattered gradients, relative to the embeddings' RMS (default: "
                   + " ".join(f"{s:g}" for s in DEFAULTS.scales) + ")")
    p.add_argument("--lags", type=_positive_int, default=DEFAULTS.lags, metavar="N",
                   help=f"largest lag of the gradients' autocorrelation along the sentence (default: {DEFAULTS.lags})")
    p.add_argument("--max-k", type=_positive_int, default=DEFAULTS.max_k, metavar="K",
                   help=f"the lesion study deletes up to K sublayers at once (default: {DEFAULTS.max_k})")
    p.add_argument("--draws", type=_natural, default=DEFAULTS.draws, metavar="D",
                   help=f"random sets of k sublayers deleted, for each k ≥ 2 (default: {DEFAULTS.draws})")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help=f"seed of the perturbations and of the lesion draws (default: {DEFAULTS.seed})")
    return p


def default_out(model: Path, init: bool) -> Path:
    if model.is_dir():
        return model / ("diagnosis-init" if init else "diagnosis")
    return model.with_name(model.stem + ("-init" if init else "") + "-diagnosis")


def main(argv: list[str] | None = None) -> int:
    from nmt.checkpoint import CheckpointError, find_checkpoint
    from nmt.diagnose.diagnosis import diagnose, write_diagnosis
    from nmt.diagnose.subject import NotDiagnosable, load_subject

    args = build_parser().parse_args(argv)
    started = time.time()
    settings = DiagnosisSettings.from_args(args)
    try:
        path = args.model
        if path.is_dir() and not args.init:
            path = find_checkpoint(path, args.checkpoint)
        subject = load_subject(path if not args.init else args.model, init=args.init, split=settings.split,
                               limit=settings.limit, data=args.data)
    except (NotDiagnosable, CheckpointError) as e:
        print(f"nmt.diagnose: error: {e}", file=sys.stderr)
        return 2
    out = args.out or default_out(args.model, args.init)
    print(f"diagnosing {subject.label} ({subject.origin}) on {len(subject.sources):,} {settings.split} sentences",
          flush=True)
    result = diagnose(subject, settings, progress=lambda line: print(line, flush=True))
    pictures = write_diagnosis(result, out)
    print(f"diagnosis written to {out}/ (summary.md, diagnosis.json"
          + (", " + ", ".join(pictures) if pictures else ", no figures: pip install nmt[report]")
          + f") in {(time.time() - started) / 60:.1f} min")
    return 0
