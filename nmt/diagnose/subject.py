"""What is diagnosed: a model with its tokenizer, the sentences it is measured on, and where it came from.

``load_subject(path, ...)`` takes what ``python -m nmt.diagnose`` takes: a run directory (its ``best.ckpt``, or
``last.ckpt`` if it has no best) or a checkpoint file; with ``init=True``, the model the run's configuration
starts from (its ``config.yaml``, or a checkpoint's own copy of it), drawn from the run's seed as train.py draws
it, before any update.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nmt.checkpoint import CheckpointError, find_checkpoint, load_checkpoint
from nmt.config import ConfigError, TrainConfig, make_config, read_saved_config
from nmt.data.batching import length_batches
from nmt.data.catalog import resolve_corpus
from nmt.data.corpus import DataError
from nmt.data.datamodule import collate
from nmt.data.tokenizer import Tokenizer
from nmt.model import Transformer, model_config
from nmt.translate import Translator


@dataclass
class Subject:
    """A model to diagnose and the sentences of the split it is measured on."""

    model: Transformer
    tokenizer: Tokenizer
    sources: list[str]
    references: list[str]
    skip: str
    lam: float
    label_smoothing: float
    max_len_a: float = 1.2
    max_len_b: int = 10
    origin: str = ""  # the checkpoint file, or "initialisation from <config>"
    step: int | None = None  # updates trained (0 at initialisation; None when unknown)
    run_dir: Path | None = None  # the run it belongs to, when known (for its metrics.csv)
    split: str = "valid"
    corpus: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """"rskip_ln λ=2" (λ only when it is not 1)."""
        return self.skip + (f" λ={self.lam:g}" if self.lam != 1 else "")

    def translator(self) -> Translator:
        return Translator(self.model, self.tokenizer, self.max_len_a, self.max_len_b)

    def batches(self, count: int, max_tokens: int) -> list[dict]:
        """The first ``count`` batches of the sentences, in their order (not sorted by length), each of at most
        ``max_tokens`` padded tokens (a longer sentence pair gets a batch of its own)."""
        src = [np.asarray(ids, dtype=np.int64) for ids in self.tokenizer.encode(self.sources)]
        tgt = [np.asarray(ids, dtype=np.int64) for ids in self.tokenizer.encode(self.references)]
        keep = [i for i in range(len(src)) if len(src[i]) and len(tgt[i])]  # blank lines teach nothing
        src_lens = np.array([len(s) + 1 for s in src])
        tgt_lens = np.array([len(t) + 1 for t in tgt])
        bound = max(max_tokens, int(np.maximum(src_lens, tgt_lens).max(initial=1)))
        groups = length_batches(src_lens, tgt_lens, bound, np.array(keep, dtype=np.int64))[:count]
        device = next(self.model.parameters()).device
        out = []
        for group in groups:
            batch = collate([(i, src[i], tgt[i]) for i in group])
            out.append({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
        return out


class NotDiagnosable(Exception):
    """A path or configuration that cannot be diagnosed; the message says why in one line."""


def load_subject(path: str | Path, init: bool = False, split: str = "valid", limit: int = 0, data: str | None = None,
                 device: str = "cpu") -> Subject:
    """The model of ``path`` (a run directory or a checkpoint file; with ``init``, its configuration's initial
    model) and the first ``limit`` sentences (0: all) of its corpus's ``split`` (or of ``data``'s)."""
    path = Path(path)
    try:
        if init:
            subject = _initial_subject(path)
        else:
            subject = _trained_subject(path)
    except (CheckpointError, ConfigError, DataError, ValueError, OSError) as e:
        raise NotDiagnosable(str(e)) from None
    cfg = subject.extra.pop("config")
    try:
        corpus = resolve_corpus(data or cfg.data, cfg.src, cfg.tgt)
        sources, references = corpus.read_split(split)
    except DataError as e:
        raise NotDiagnosable(f"{e} (the corpus of {path}; --data names another)") from None
    if limit:
        sources, references = sources[:limit], references[:limit]
    subject.sources, subject.references, subject.split, subject.corpus = sources, references, split, str(corpus.path)
    subject.model.to(device)
    return subject


def _trained_subject(path: Path) -> Subject:
    file = find_checkpoint(path, "best")
    ckpt = load_checkpoint(file)
    translator = Translator.from_checkpoint(ckpt, file)
    run_dir = file.parent.parent if file.parent.name == "checkpoints" else None
    cfg = _config_of(ckpt, run_dir, file)
    optim = ckpt["hyper_parameters"].get("optim", {})
    return Subject(model=translator.model, tokenizer=translator.tokenizer, sources=[], references=[],
                   skip=cfg.skip, lam=cfg.lam, label_smoothing=float(optim.get("label_smoothing", cfg.label_smoothing)),
                   max_len_a=translator.max_len_a, max_len_b=translator.max_len_b, origin=str(file),
                   step=ckpt.get("global_step"), run_dir=run_dir, extra={"config": cfg})


def _initial_subject(path: Path) -> Subject:
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise NotDiagnosable(f"{path}: no config.yaml (--init needs a run directory or a checkpoint file)")
        cfg, run_dir = read_saved_config(path / "config.yaml"), path
        if not (path / "spm.model").is_file():
            raise NotDiagnosable(f"{path}: no spm.model (the run's tokenizer)")
        tokenizer, origin = Tokenizer(path / "spm.model"), path / "config.yaml"
    else:
        ckpt = load_checkpoint(path)
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        cfg, origin = _config_of(ckpt, run_dir, path), path
        if "spm_model" in ckpt:
            tokenizer = Tokenizer(model_bytes=ckpt["spm_model"])
        elif run_dir is not None and (run_dir / "spm.model").is_file():
            tokenizer = Tokenizer(run_dir / "spm.model")
        else:
            raise CheckpointError(path, "without its SentencePiece model (none inside, no spm.model beside its run)")
    # train.py seeds every generator with the run's seed just before it builds the model
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model = Transformer(model_config(cfg.arch, tokenizer.vocab_size, **cfg.model_overrides()))
    return Subject(model=model.eval(), tokenizer=tokenizer, sources=[], references=[], skip=cfg.skip, lam=cfg.lam,
                   label_smoothing=cfg.label_smoothing, max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b,
                   origin=f"initialisation from {origin} (seed {cfg.seed})", step=0, run_dir=run_dir,
                   extra={"config": cfg})


def _config_of(ckpt: dict, run_dir: Path | None, file: Path) -> TrainConfig:
    """The run's configuration: the checkpoint's own copy, else its run's config.yaml."""
    if isinstance(ckpt.get("run_config"), dict):
        return make_config(ckpt["run_config"], origin=f"{file} (run_config)")
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        return read_saved_config(run_dir / "config.yaml")
    raise CheckpointError(file, "without its run's configuration (no run_config inside, no config.yaml beside it)")
