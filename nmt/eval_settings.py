"""How trained models are decoded and scored: the settings ``nmt.translate``, ``evaluate.py``, the sweep and
the report share, with their flags, defaults and help written once.

- ``EvalSettings``, the model side: beam size, length penalty α and its style (``nmt.decode.LENPEN_STYLES``),
  the batch size of translation, and which weights of a run (``--average-last N``: the average of its last N
  periodic checkpoints instead of its ``best.ckpt``). ``add_eval_args`` adds the flags, with ``--max-tokens``
  and ``--average-last`` where the command has them (``nmt.translate`` translates one checkpoint, so it has
  no ``--average-last``; the others keep the default batch size).
- ``ScoringSettings``, the data side of ``evaluate.py``, the sweep and the report: the split, its first N
  sentences only, and the paired bootstrap's resamples (``add_scoring_args``).

``from_args`` reads either back from parsed flags; a flag the command does not have keeps its default.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from nmt.decode import LENPEN_STYLES


@dataclass(frozen=True)
class EvalSettings:
    """How a model translates (decoding, batch size) and, for a run directory, which of its weights."""

    beam: int = 4  # 1: greedy search
    lenpen: float = 0.6  # length penalty α; with gnmt and beam 4 as Vaswani et al. 2017
    lenpen_style: str = "gnmt"  # one of nmt.decode.LENPEN_STYLES
    max_tokens: int = 4096  # a translation batch's source tokens × beam
    average_last: int = 0  # N > 0: the average of a run's last N step-<N>.ckpt instead of its best.ckpt

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvalSettings:
        return _from_args(cls, args)

    def decoding(self) -> dict:
        """The keyword arguments of ``Translator.translate``."""
        return {"beam": self.beam, "lenpen": self.lenpen, "lenpen_style": self.lenpen_style,
                "max_tokens": self.max_tokens}


@dataclass(frozen=True)
class ScoringSettings:
    """Which sentences are scored, and how many resamples the paired bootstrap draws."""

    split: str = "test"  # valid or test
    limit: int = 0  # N > 0: the first N sentences only (labelled in the tables)
    bootstrap: int = 1000  # paired bootstrap resamples

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ScoringSettings:
        return _from_args(cls, args)


def _from_args(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def add_eval_args(parser, *, with_max_tokens: bool = False, with_average_last: bool = False) -> None:
    """Add ``--beam``, ``--lenpen``, ``--lenpen-style``, and ``--max-tokens``/``--average-last`` if asked for, to
    ``parser`` (an ``argparse.ArgumentParser`` or one of its argument groups)."""
    default = EvalSettings()
    parser.add_argument("--beam", type=int, default=default.beam, metavar="K",
                        help=f"beam size, 1 for greedy search (default: {default.beam})")
    parser.add_argument("--lenpen", type=float, default=default.lenpen, metavar="α",
                        help=f"length penalty α (default: {default.lenpen:g})")
    parser.add_argument("--lenpen-style", default=default.lenpen_style, choices=LENPEN_STYLES,
                        help="gnmt: ((5+len)/6)^α (Wu et al. 2016, as Vaswani et al. 2017); fairseq: len^α "
                        f"(default: {default.lenpen_style})")
    if with_max_tokens:
        parser.add_argument("--max-tokens", type=int, default=default.max_tokens, metavar="N",
                            help=f"a translation batch's size: source tokens × beam (default: {default.max_tokens})")
    if with_average_last:
        parser.add_argument("--average-last", type=int, default=default.average_last, metavar="N",
                            help="use the average of each run's last N periodic checkpoints (step-<N>.ckpt) instead "
                            "of its best.ckpt (default: best.ckpt)")


def add_scoring_args(parser) -> None:
    """Add ``--split``, ``--limit`` and ``--bootstrap`` to ``parser`` (a parser or one of its argument groups)."""
    default = ScoringSettings()
    parser.add_argument("--split", default=default.split, choices=["valid", "test"],
                        help=f"the split to translate and score (default: {default.split})")
    parser.add_argument("--limit", type=int, default=default.limit, metavar="N",
                        help="score the first N sentences only, labelled in the tables (default: every sentence)")
    parser.add_argument("--bootstrap", type=int, default=default.bootstrap, metavar="N",
                        help=f"paired bootstrap resamples of each p-value (default: {default.bootstrap})")
