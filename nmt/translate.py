"""Translate text with a trained model: ``python -m nmt.translate RUN_OR_CKPT``.

Reads sentences from stdin (or ``--input``), one per line, and writes their detokenized translations to
stdout (or ``--output``) in the same order. Sentences are batched by length (``--max-tokens`` source
tokens per batch) and decoded with the key/value cache: beam search by default (beam 4 and GNMT length
penalty α = 0.6, as Vaswani et al. 2017), greedy with ``--beam 1``. An empty or blank source line is
translated to an empty line without running the model.

``RUN_OR_CKPT`` is a run directory (its ``checkpoints/best.ckpt``, or ``--checkpoint last``) or a
checkpoint file. Checkpoints carry their SentencePiece model, so a file on its own is enough.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from nmt.data.batching import length_batches
from nmt.data.corpus import DataError, read_lines
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from nmt.decode import beam_search, greedy_decode
from nmt.model import ModelConfig, Transformer


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or not one of ours; the message names the file."""


def find_checkpoint(path: Path, which: str = "best") -> Path:
    """The checkpoint file meant by a run directory (``best`` or ``last``) or a file path."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints"
        for name in ([which] if which != "best" else ["best", "last"]):  # a run without validation has no best
            candidate = folder / f"{name}.ckpt"
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{path}: no checkpoints/{which}.ckpt (is this a run directory?)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    return path


def load_checkpoint(path: Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # our own files: they hold bytes and dicts
    except Exception as e:  # truncated, corrupt, not a torch file
        raise CheckpointError(f"{path}: cannot be loaded ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model" not in ckpt.get("hyper_parameters", {}):
        raise CheckpointError(f"{path}: not an nmt checkpoint (no state_dict / model hyper-parameters)")
    return ckpt


class Translator:
    """A trained Transformer with its tokenizer: text in, text out."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer, max_len_a: float = 1.2, max_len_b: int = 10):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_len_a, self.max_len_b = max_len_a, max_len_b

    @classmethod
    def load(cls, path: str | Path, which: str = "best", device: str = "cpu") -> Translator:
        file = find_checkpoint(Path(path), which)
        return cls.from_checkpoint(load_checkpoint(file), file, device)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, file: Path, device: str = "cpu") -> Translator:
        """A translator from a loaded checkpoint dict (``file`` locates a run's spm.model if it has none)."""
        if "spm_model" in ckpt:
            tokenizer = Tokenizer(model_bytes=ckpt["spm_model"])
        elif (file.parent.parent / "spm.model").is_file():
            tokenizer = Tokenizer(file.parent.parent / "spm.model")
        else:
            raise CheckpointError(f"{file}: carries no SentencePiece model and no spm.model is beside its run")
        model = Transformer(ModelConfig(**ckpt["hyper_parameters"]["model"]))
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
        model.load_state_dict(state)
        decoding = ckpt["hyper_parameters"].get("decoding", {})
        return cls(model.to(device), tokenizer, decoding.get("max_len_a", 1.2), decoding.get("max_len_b", 10))

    @torch.no_grad()
    def translate(
        self,
        lines: list[str],
        beam: int = 4,
        lenpen: float = 0.6,
        lenpen_style: str = "gnmt",
        max_tokens: int = 4096,
        use_cache: bool = True,
    ) -> list[str]:
        """Translations of ``lines`` in their order; blank lines give empty translations."""
        device = next(self.model.parameters()).device
        ids = self.tokenizer.encode(lines)
        todo = sorted((i for i, line in enumerate(lines) if line.strip()), key=lambda i: len(ids[i]))
        out: list[list[int]] = [[] for _ in lines]
        lengths = np.array([len(x) + 1 for x in ids])
        bound = max(max_tokens // max(beam, 1), int(lengths.max(initial=1)))  # never refuse one long sentence
        for batch in length_batches(lengths, lengths, bound, np.array(todo, dtype=np.int64)):
            src = torch.full((len(batch), max(len(ids[i]) for i in batch) + 1), PAD_ID, dtype=torch.long)
            for row, i in enumerate(batch):
                src[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                src[row, len(ids[i])] = EOS_ID
            src = src.to(device)
            if beam == 1:
                hyps = greedy_decode(self.model, src, BOS_ID, EOS_ID, self.max_len_a, self.max_len_b, use_cache)
            else:
                hyps = beam_search(self.model, src, BOS_ID, EOS_ID, beam, lenpen, lenpen_style,
                                   self.max_len_a, self.max_len_b, use_cache)
            for i, hyp in zip(batch, hyps):
                out[i] = hyp
        texts = self.tokenizer.decode(out)
        return [text if lines[i].strip() else "" for i, text in enumerate(texts)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nmt.translate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="run directory or checkpoint file")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint of a run directory")
    p.add_argument("--input", help="file to translate (default: stdin)")
    p.add_argument("--output", help="file to write (default: stdout)")
    p.add_argument("--beam", type=int, default=4, help="beam size (1: greedy)")
    p.add_argument("--lenpen", type=float, default=0.6, help="length penalty α")
    p.add_argument("--lenpen-style", default="gnmt", choices=["gnmt", "fairseq"],
                   help="gnmt: ((5+len)/6)^α (Wu et al. 2016); fairseq: len^α")
    p.add_argument("--max-tokens", type=int, default=4096, help="source tokens × beam per batch")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        translator = Translator.load(args.model, args.checkpoint, args.device)
        if args.input:
            lines = read_lines(Path(args.input))
        else:
            lines = sys.stdin.read().split("\n")  # "\n" only, as for corpus files
            if lines and lines[-1] == "":
                lines.pop()
    except (CheckpointError, DataError) as e:
        print(f"nmt.translate: error: {e}", file=sys.stderr)
        return 2
    outputs = translator.translate(lines, args.beam, args.lenpen, args.lenpen_style, args.max_tokens)
    text = "".join(line + "\n" for line in outputs)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
