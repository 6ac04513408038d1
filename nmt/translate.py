"""Translate text with a trained model: ``python -m nmt.translate RUN_OR_CKPT``.

Reads sentences from stdin (or ``--input``), one per line, and writes their detokenized translations to
stdout (or ``--output``) in the same order. Sentences are batched by length (``--max-tokens`` source
tokens per batch) and decoded with the key/value cache: beam search by default (beam 4 and GNMT length
penalty α = 0.6, as Vaswani et al. 2017), greedy with ``--beam 1``. An empty or blank source line is
translated to an empty line without running the model.

``RUN_OR_CKPT`` is a run directory (its ``checkpoints/best.ckpt``, or ``--checkpoint last``) or a
checkpoint file. Checkpoints carry their SentencePiece model, so a file on its own is enough.

Several files at once (the model loaded once): ``--input a.en b.en --output DIR`` writes ``DIR/a.de`` and
``DIR/b.de`` (each input's name with the run's target language as suffix). Every output file is written whole
(a temporary file renamed into place), and every input is read before anything is written, so a bad input
line (named with its file and line) leaves no output behind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from nmt import atomic
from nmt.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from nmt.data.batching import length_batches
from nmt.data.corpus import DataError, read_lines
from nmt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from nmt.decode import beam_search, greedy_decode
from nmt.eval_settings import EvalSettings, add_eval_args
from nmt.model import ModelConfig, Transformer

DEFAULTS = EvalSettings()


class Translator:
    """A trained Transformer with its tokenizer: text in, text out."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer, max_len_a: float = 1.2, max_len_b: int = 10,
                 target_language: str | None = None):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_len_a, self.max_len_b = max_len_a, max_len_b
        self.target_language = target_language  # the run's --tgt, when the checkpoint records it

    @classmethod
    def load(cls, path: str | Path, which: str = "best", device: str = "cpu") -> Translator:
        file = find_checkpoint(Path(path), which)
        return cls.from_checkpoint(load_checkpoint(file), file, device)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, file: Path, device: str = "cpu") -> Translator:
        """A translator from a loaded checkpoint dict (``file`` locates a run's spm.model if it has none)."""
        hparams = ckpt.get("hyper_parameters")
        if not isinstance(hparams, dict) or "model" not in hparams:
            raise CheckpointError(file, "not an nmt checkpoint (no model hyper-parameters)")
        if "spm_model" in ckpt:
            tokenizer = Tokenizer(model_bytes=ckpt["spm_model"])
        elif (file.parent.parent / "spm.model").is_file():
            tokenizer = Tokenizer(file.parent.parent / "spm.model")
        else:
            raise CheckpointError(file, "without its SentencePiece model (none inside, no spm.model beside its run)")
        model = Transformer(ModelConfig(**hparams["model"]))
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
        model.load_state_dict(state)
        decoding = hparams.get("decoding", {})
        target = (ckpt.get("run_config") or {}).get("tgt")
        return cls(model.to(device), tokenizer, decoding.get("max_len_a", 1.2), decoding.get("max_len_b", 10), target)

    @torch.no_grad()
    def translate(
        self,
        lines: list[str],
        beam: int = DEFAULTS.beam,
        lenpen: float = DEFAULTS.lenpen,
        lenpen_style: str = DEFAULTS.lenpen_style,
        max_tokens: int = DEFAULTS.max_tokens,
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
    p = argparse.ArgumentParser(prog="python -m nmt.translate", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="run directory or checkpoint file")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="which checkpoint of a run directory (default: best)")
    p.add_argument("--input", nargs="+", help="file(s) to translate (default: stdin)")
    p.add_argument("--output", help="file to write (default: stdout); with several --input files, the folder "
                   "for their translations, each named as its input with the target language as suffix")
    add_eval_args(p, with_max_tokens=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where the model runs (default: cuda when a GPU is available, else cpu)")
    return p


def output_paths(inputs: list[str], output: str | None, target_language: str | None) -> list[Path | None]:
    """Where each input's translation goes (None: stdout); raises DataError for an unusable combination."""
    if len(inputs) <= 1:
        return [Path(output) if output else None]
    if not output:
        raise DataError("several --input files need --output DIR (the folder for their translations)")
    if not target_language:
        raise DataError("the checkpoint does not record its target language, so the translations of several --input "
                        "files cannot be named: translate them one at a time with --output FILE")
    paths = [Path(output) / f"{Path(name).stem}.{target_language}" for name in inputs]
    twice = sorted({p.name for p in paths if paths.count(p) > 1})
    if twice:
        raise DataError(f"several --input files would be written to the same file: {', '.join(twice)}")
    return paths


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    inputs = args.input or []
    try:
        translator = Translator.load(args.model, args.checkpoint, args.device)
        outputs = output_paths(inputs, args.output, translator.target_language)
        if inputs:
            sources = [read_lines(Path(name)) for name in inputs]  # all read (and checked) before any is written
        else:
            lines = sys.stdin.read().split("\n")  # "\n" only, as for corpus files
            sources = [lines[:-1] if lines and lines[-1] == "" else lines]
    except (CheckpointError, DataError) as e:
        print(f"nmt.translate: error: {e}", file=sys.stderr)
        return 2
    decoding = EvalSettings.from_args(args).decoding()
    for lines, path in zip(sources, outputs):
        text = "".join(line + "\n" for line in translator.translate(lines, **decoding))
        if path is None:
            sys.stdout.write(text)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, text)
        if len(inputs) > 1:
            print(f"{path}: {len(lines)} lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
