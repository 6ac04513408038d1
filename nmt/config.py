"""The training configuration: defaults < YAML preset (``--config``) < command-line flags.

``TrainConfig`` is the single source of truth: every field is a flag (``lam`` is ``--lambda``), its
help text is the field's ``help`` metadata, and a YAML preset may set any field by name. The resolved
configuration is saved in the run directory as ``config.yaml``; ``--resume`` reads it back.

The defaults are a quick CPU run on the embedded toy corpus (the README's first command). Paper-scale
settings live in ``configs/*.yaml``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nmt import atomic
from nmt.model import ARCHS


def _opt(default: Any, help: str | Callable[[], str], **extra) -> Any:
    """A field with its flag's help text (or a function that writes it when the parser is built)."""
    return field(default=default, metadata={"help": help, **extra})


def _residual():
    """nmt.residual, imported when the help text is written (it imports torch): the variants' registry."""
    import nmt.residual

    return nmt.residual


@dataclass(frozen=True)
class OptimSettings:
    """The loss, optimiser and schedule of ``nmt.lit.TranslationModule``: a part of TrainConfig (its defaults are
    TrainConfig's) that the module takes as it is and stores in every checkpoint's hyper-parameters."""

    lr: float = 2e-3
    warmup: int = 200
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    fused_adam: bool = True  # Adam's single-kernel implementation (nmt.bench --levers measures the other one)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "adam_betas": list(self.adam_betas)}


@dataclass(frozen=True)
class ValidationSettings:
    """How validation and test translate and score during training: greedy output of at most
    ``max_len_a · source length + max_len_b`` tokens, sacreBLEU with the corpus's tokenization (see
    nmt.data.catalog: "none" for a corpus distributed tokenized). Stored in checkpoints as "decoding"."""

    max_len_a: float = 1.2
    max_len_b: int = 10
    bleu_tokenize: str = "13a"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MonitorSettings:
    """What a training run logs and when it gives up: metrics every ``log_every`` updates, per-layer gradient norms
    at each of the first ``log_layer_grads`` updates, a divergence stop after ``max_nonfinite`` non-finite updates
    in a row (0: never); ``echo_training`` prints the training rows too (not only validations)."""

    log_every: int = 50
    log_layer_grads: int = 0
    max_nonfinite: int = 5
    echo_training: bool = True


@dataclass
class TrainConfig:
    # --- data
    data: str = _opt("toy", "'toy' (the embedded generated corpus), a folder with train/valid/test.{src,tgt}, a named "
                     "dataset (wmt14-en-de, iwslt15-en-vi) or the name of a folder under data/ (see data/README.md)")
    src: str | None = _opt(None, "source language code (file suffix); inferred when the folder has en and one other")
    tgt: str | None = _opt(None, "target language code (file suffix)")
    vocab_size: int = _opt(2000, "joint SentencePiece vocabulary size (an upper bound on small corpora)")
    spm_type: str = _opt("unigram", "SentencePiece model type: unigram or bpe", choices=["unigram", "bpe"])
    spm_sample: int = _opt(2_000_000, "at most this many sentences sampled to train SentencePiece")
    spm_seed: int = _opt(1, "seed of SentencePiece's sentence sample; independent of --seed, so runs with different "
                         "seeds share one tokenizer and their BLEU scores stay comparable")
    max_len: int = _opt(256, "training pairs longer than this many tokens (either side) are dropped")
    max_len_ratio: float = _opt(3.0, "training pairs whose longer side has more than this many times the tokens of "
                                "the shorter (each counted with its EOS) are dropped (0: no ratio filter)")
    no_download: bool = _opt(False, "never download a named dataset missing from data/ (IWSLT'15 from Stanford, WMT'14 "
                             "from the Hugging Face hub; its local cache and $NMT_HF_MIRROR are still used); "
                             "NMT_NO_DOWNLOAD=1 in the environment does the same")
    # --- model
    arch: str = _opt("tiny", "size preset: tiny (2+2 layers, d 64), narrow (6+6, d 128), small (6+6, d 256), base or "
                     "big (Vaswani et al.)", choices=list(ARCHS))
    layers: int | None = _opt(None, "encoder and decoder layers each (default: the --arch preset's)")
    skip: str = _opt("post_ln", lambda: _residual().describe_variants())
    lam: float = _opt(1.0, lambda: _residual().describe_lambdas(), flag="--lambda")
    dropout: float | None = _opt(None, "residual and embedding dropout (default: the preset's)")
    attention_dropout: float = _opt(0.0, "dropout on attention weights")
    activation_dropout: float = _opt(0.0, "dropout after the feed-forward ReLU")
    init: str = _opt("fairseq", "initialisation of the linear layers: fairseq (fairseq's transformer: the feed-forward "
                     "layers and the Q/K/V biases keep PyTorch's default U(±1/√fan_in)) or xavier (every weight "
                     "Xavier-uniform, every bias 0; the default before issue #14)", choices=["fairseq", "xavier"])
    # --- optimisation
    lr: float = _opt(OptimSettings.lr, "peak learning rate, reached at the end of warm-up")
    warmup: int = _opt(OptimSettings.warmup, "linear warm-up steps; then lr·√(warmup/step) (inverse square root)")
    adam_betas: list[float] = _opt(OptimSettings.adam_betas, "Adam β₁ β₂", nargs=2)
    adam_eps: float = _opt(OptimSettings.adam_eps, "Adam ε")
    weight_decay: float = _opt(OptimSettings.weight_decay, "L2 weight decay (Adam's, not decoupled)")
    clip_norm: float = _opt(0.0, "clip the gradient norm to this value (0: no clipping)")
    max_nonfinite: int = _opt(MonitorSettings.max_nonfinite, "an update with a non-finite loss or gradient is "
                              "skipped; stop the run as diverged "
                              "after this many in a row (0: never stop)")
    label_smoothing: float = _opt(OptimSettings.label_smoothing, "label smoothing ε of the cross-entropy loss")
    max_tokens: int = _opt(4096, "a batch's padded size bound: max(source, target length) × sentences")
    accumulate: int = _opt(1, "gradient accumulation: batches per update")
    update_tokens: int = _opt(0, "target tokens per update (non-padding, summed over all processes): derive "
                              "--accumulate as ceil(N / (mean target tokens of a training batch × processes)) "
                              "(0: use --accumulate)")
    max_steps: int = _opt(1000, "stop after this many updates (-1: no limit)")
    max_epochs: int | None = _opt(None, "stop after this many epochs (default: no limit)")
    patience: int = _opt(0, "early stopping: stop after N validations in a row without a new best validation BLEU "
                         "(fairseq's --patience; 0: never)")
    min_delta: float = _opt(0.0, "early stopping: a validation BLEU counts as a new best for --patience only if it "
                            "beats the best by more than this many BLEU points")
    patience_from: int = _opt(0, "early stopping: --patience counts only the validations from update N on, so that "
                              "a slow start (BLEU near 0 and noisy before the model uses its source) is never taken "
                              "for a plateau (Keras's start_from_epoch, in updates)")
    # --- validation, decoding and logging
    val_every: int = _opt(500, "validate (loss and greedy BLEU) every N updates (0: once per epoch)")
    max_len_a: float = _opt(ValidationSettings.max_len_a, "decode at most a·source_length + b tokens: a")
    max_len_b: int = _opt(ValidationSettings.max_len_b, "decode at most a·source_length + b tokens: b")
    log_every: int = _opt(MonitorSettings.log_every, "log training metrics every N updates")
    log_layer_grads: int = _opt(MonitorSettings.log_layer_grads, "log the gradient norm of every encoder and "
                                "decoder layer (metrics.csv columns "
                                "grad_norm/encoder.I, grad_norm/decoder.I) at each of the first N updates (0: never)")
    save_every: int = _opt(0, "every N updates write last.ckpt and a step-<N>.ckpt (0: last.ckpt at each validation "
                           "and epoch end only)")
    keep_last: int = _opt(5, "keep the newest K step-<N>.ckpt files (for checkpoint averaging)")
    # --- run
    seed: int = _opt(1, "random seed (model initialisation, dropout, batch order)")
    run_dir: str | None = _opt(None, "run directory (default: runs/<data>-<arch>-<skip>[-lambda]-seed<seed>)")
    devices: int = _opt(1, "number of devices (processes) per node")
    num_nodes: int = _opt(1, "number of nodes (machines); processes in all: --devices × --num-nodes")
    accelerator: str = _opt("auto", "cpu, gpu or auto", choices=["cpu", "gpu", "auto"])
    precision: str | None = _opt(None, "32, bf16-mixed or 16-mixed (default: bf16-mixed on GPU, 32 on CPU)",
                                 choices=["32", "32-true", "bf16-mixed", "16-mixed"])
    num_workers: int = _opt(0, "background data-loading processes")

    def model_overrides(self) -> dict:
        """The model fields this config sets on top of its ``--arch`` preset: ``nmt.model.model_config``'s
        overrides (None keeps the preset's value). One place, so that train.py and whoever rebuilds a run's
        model from its config.yaml build the same model."""
        return dict(skip=self.skip, lam=self.lam, dropout=self.dropout, encoder_layers=self.layers,
                    decoder_layers=self.layers, attention_dropout=self.attention_dropout,
                    activation_dropout=self.activation_dropout, init=self.init)

    def optim_settings(self) -> OptimSettings:
        return OptimSettings(lr=self.lr, warmup=self.warmup, adam_betas=tuple(self.adam_betas), adam_eps=self.adam_eps,
                             weight_decay=self.weight_decay, label_smoothing=self.label_smoothing)

    def validation_settings(self, bleu_tokenize: str = "13a") -> ValidationSettings:
        return ValidationSettings(max_len_a=self.max_len_a, max_len_b=self.max_len_b, bleu_tokenize=bleu_tokenize)

    def monitor_settings(self, echo_training: bool = True) -> MonitorSettings:
        return MonitorSettings(log_every=self.log_every, log_layer_grads=self.log_layer_grads,
                               max_nonfinite=self.max_nonfinite, echo_training=echo_training)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(d["adam_betas"])
        return d


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

RESUMABLE = {"max_steps", "max_epochs", "log_every", "save_every", "keep_last", "val_every", "num_workers",
             "max_nonfinite", "log_layer_grads", "patience", "min_delta", "patience_from", "no_download"}
"""Fields that may change on ``--resume``: they say when to stop, log or save, not what is trained."""


def resolve_precision(precision: str | None, on_gpu: bool) -> str:
    """The Trainer's precision: the one asked for ("32" is "32-true"); by default ``bf16-mixed`` on a GPU that
    supports it and ``32-true`` otherwise (bf16 autocast made a small Transformer 4.5× slower on our CPU)."""
    if precision is not None:
        return "32-true" if precision == "32" else precision
    if on_gpu:
        import torch

        if torch.cuda.is_bf16_supported():
            return "bf16-mixed"
    return "32-true"


class ConfigError(Exception):
    """A bad preset or flag combination; the message names the file or the flag."""


def flag_name(name: str) -> str:
    return FIELDS[name].metadata.get("flag", "--" + name.replace("_", "-"))


def _scalar_type(f: dataclasses.Field) -> type:
    text = str(f.type)
    for name, kind in (("bool", bool), ("float", float), ("int", int)):
        if text.startswith(name) or text.startswith(f"list[{name}]"):
            return kind
    return str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a Transformer translation model with a pluggable residual (skip) connection. "
        "Flags override the --config preset, which overrides the defaults shown here.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--config", help="YAML preset (e.g. configs/multi30k.yaml)")
    parser.add_argument(
        "--resume", nargs="?", const="last",
        help="continue the run in --run-dir: 'last' (its newest checkpoint), a checkpoint path, or 'auto' "
        "(continue it if it holds a checkpoint, else start it: the same command starts and continues a run)",
    )
    for f in dataclasses.fields(TrainConfig):
        extra = {k: v for k, v in f.metadata.items() if k in ("choices", "nargs")}
        if _scalar_type(f) is bool:  # a switch: --no-download, or in a preset no_download: true
            extra["action"] = "store_true"
        else:
            extra["type"] = _scalar_type(f)
        default = f.default
        help_text = f.metadata["help"]() if callable(f.metadata["help"]) else f.metadata["help"]
        parser.add_argument(flag_name(f.name), dest=f.name, help=f"{help_text} (default: {default})", **extra)
    return parser


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    aliases = {"lambda": "lam"}
    values = {aliases.get(k, k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(unknown)}")
    return values


def make_config(values: dict, origin: str = "config") -> TrainConfig:
    """A TrainConfig from a mapping, with types checked and converted (ints accepted for floats)."""
    out = {}
    for name, value in values.items():
        kind = _scalar_type(FIELDS[name])
        if value is None or isinstance(value, (list, tuple)):
            out[name] = list(value) if isinstance(value, tuple) else value
            continue
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
        elif kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif kind is str and isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"{origin}: {name} must be {kind.__name__}, got {value!r}")
        choices = FIELDS[name].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{origin}: {name} must be one of {', '.join(choices)}, got {value!r}")
        out[name] = value
    return TrainConfig(**out)


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, dict, argparse.Namespace]:
    """Parse flags: the resolved config, the fields the user set explicitly, and the raw namespace."""
    args = build_parser().parse_args(argv)
    values: dict = {}
    if getattr(args, "config", None):
        values.update(load_yaml(args.config))
    flags = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    values.update(flags)
    return make_config(values, origin=getattr(args, "config", None) or "flags"), {**values}, args


def save_config(cfg: TrainConfig, path: Path) -> None:
    """Write ``config.yaml`` atomically: under data parallelism other processes may read it meanwhile."""
    atomic.write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True))


def read_saved_config(path: Path) -> TrainConfig:
    return make_config(load_yaml(path), origin=str(path))


def merge_for_resume(saved: TrainConfig, explicit: dict) -> TrainConfig:
    """The saved run's config with the explicitly given values that may change on resume.

    Raises ConfigError naming every other explicitly given value that differs from the saved run.
    """
    saved_dict = saved.to_dict()
    differs = {}
    for name, value in explicit.items():
        if name in ("run_dir",):
            continue
        new = make_config({name: value}).to_dict()[name]
        if new != saved_dict[name] and name not in RESUMABLE:
            differs[name] = (saved_dict[name], new)
    if differs:
        detail = "; ".join(f"{flag_name(k)}: run has {a!r}, asked {b!r}" for k, (a, b) in differs.items())
        raise ConfigError(f"--resume cannot change what is trained ({detail}); start a new --run-dir instead")
    allowed = {k: v for k, v in explicit.items() if k in RESUMABLE}
    return make_config({**saved_dict, **allowed})
