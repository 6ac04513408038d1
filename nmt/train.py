"""``python train.py``: train a model, validate it with BLEU, and score the test split at the end.

The run directory (``--run-dir``, by default under ``runs/``) holds everything about a run::

    config.yaml        the resolved configuration (defaults < --config preset < flags)
    provenance.json    git commit, package versions, hardware, command line, data and tokenizer hashes
    spm.model          the joint SentencePiece model
    checkpoints/       last.ckpt (always the newest) and best.ckpt (best validation BLEU)
    metrics.csv, tb/   training and validation metrics (CSV and TensorBoard)
    test.hyp           detokenized translations of the test split (best checkpoint, greedy)
    results.json       test BLEU with its sacreBLEU signature, copy-source baseline, steps, wall time

Errors in flags or data print one line naming the flag or file and exit with status 2; nothing
already in the run directory is removed.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from pathlib import Path

from nmt.config import (
    ConfigError,
    TrainConfig,
    flag_name,
    merge_for_resume,
    parse_args,
    read_saved_config,
    save_config,
)
from nmt.data.corpus import DataError, resolve_corpus, sha256_file


def log(message: str) -> None:
    """Print on the first process only."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print(message, flush=True)


def default_run_name(cfg: TrainConfig, data_name: str) -> str:
    lam = f"-lambda{cfg.lam:g}" if cfg.lam != 1 else ""
    skip = cfg.skip.replace(":", "_").replace("/", "_")
    return f"{data_name}-{cfg.arch}-{skip}{lam}-seed{cfg.seed}"


def is_run(folder: Path) -> bool:
    return (folder / "config.yaml").is_file()


def choose_run_dir(cfg: TrainConfig, data_name: str, resume: bool) -> Path:
    """The run directory: ``--run-dir``, or a fresh (or, on resume, the newest) ``runs/<name>[-N]``."""
    if cfg.run_dir:
        folder = Path(cfg.run_dir)
        if resume and not is_run(folder):
            raise ConfigError(f"--resume: {folder} holds no run (no config.yaml)")
        if not resume and is_run(folder):
            raise ConfigError(f"--run-dir {folder} already holds a run: add --resume to continue it, or choose another --run-dir")
        return folder
    base = Path("runs") / default_run_name(cfg, data_name)
    taken = [base] + [base.with_name(f"{base.name}-{i}") for i in range(2, 1000)]
    existing = [p for p in taken if is_run(p)]
    if resume:
        if not existing:
            raise ConfigError(f"--resume: no run to resume at {base} (give --run-dir)")
        return existing[-1]
    return next(p for p in taken if not p.exists())


def resolve_precision(cfg: TrainConfig) -> str:
    import torch

    if cfg.precision is not None:
        return "32-true" if cfg.precision == "32" else cfg.precision
    on_gpu = cfg.accelerator == "gpu" or (cfg.accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except (ConfigError, DataError) as e:
        print(f"train.py: error: {e}", file=sys.stderr, flush=True)
        return 2


def run(argv: list[str]) -> int:
    started = time.time()
    cfg, explicit, args = parse_args(argv)
    resume = getattr(args, "resume", None)

    if resume:
        probe = choose_run_dir(cfg, Path(cfg.data).name if cfg.data != "toy" else "toy", resume=True)
        cfg = merge_for_resume(read_saved_config(probe / "config.yaml"), explicit)
        cfg.run_dir = str(probe)
    _check_model_flags(cfg)

    corpus = resolve_corpus(cfg.data, cfg.src, cfg.tgt)
    cfg.src, cfg.tgt = corpus.src, corpus.tgt
    run_dir = choose_run_dir(cfg, corpus.name, resume=bool(resume))
    cfg.run_dir = str(run_dir)

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from nmt.checkpoint import AtomicCheckpointIO, PeriodicCheckpoints
    from nmt.csvlog import ResumableCSVLogger
    from nmt.data.datamodule import TranslationData
    from nmt.data.tokenizer import Tokenizer, spm_settings, train_or_load
    from nmt.data.corpus import data_root
    from nmt.lit import TranslationModule
    from nmt.model import model_config
    from nmt import provenance

    _quiet_lightning()
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")

    log(f"run directory: {run_dir}" + (" (resuming)" if resume else ""))
    if corpus.is_toy:
        log(
            "data: the embedded toy corpus (generated en→de from a small grammar and lexicon, "
            f"in {corpus.path}). It is a toy for trying the framework, not a benchmark."
        )
    else:
        log(f"data: {corpus.path} ({corpus.src}→{corpus.tgt})")
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    # Everything that can fail on bad data happens before the run directory is created or touched.
    data_hashes = corpus.hashes()
    spm_path = run_dir / "spm.model"
    if resume:
        if not spm_path.is_file():
            raise ConfigError(f"--resume: {spm_path} is missing")
        spm_source = spm_path
    else:
        settings = spm_settings(cfg.vocab_size, cfg.spm_type, cfg.spm_sample, cfg.seed)
        train_files = [corpus.file("train", corpus.src), corpus.file("train", corpus.tgt)]
        spm_source = train_or_load(train_files, [data_hashes[str(f)] for f in train_files], data_root() / "cache", settings, log)
    tokenizer = Tokenizer(spm_source)
    data = TranslationData(corpus, tokenizer, cfg.max_tokens, cfg.max_len, cfg.seed, cfg.num_workers, log)
    data.setup()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        shutil.copyfile(spm_source, spm_path)
    train_set = data.datasets["train"]
    mcfg = model_config(
        cfg.arch, tokenizer.vocab_size, skip=cfg.skip, lam=cfg.lam, dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout, activation_dropout=cfg.activation_dropout,
    )
    module = TranslationModule(
        mcfg.to_dict(),
        optim=dict(lr=cfg.lr, warmup=cfg.warmup, adam_betas=list(cfg.adam_betas), adam_eps=cfg.adam_eps,
                   weight_decay=cfg.weight_decay, label_smoothing=cfg.label_smoothing),
        decoding=dict(max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b),
        log_every=cfg.log_every,
    )
    log(
        f"model: {cfg.arch} (d {mcfg.d_model}, ff {mcfg.d_ff}, {mcfg.n_heads} heads, "
        f"{mcfg.encoder_layers}+{mcfg.decoder_layers} layers), skip {cfg.skip} λ={cfg.lam:g}, "
        f"{module.model.num_parameters():,} parameters, vocabulary {tokenizer.vocab_size:,}"
    )
    log(
        f"data: {len(train_set):,} training pairs, {len(data.datasets['valid']):,} valid, "
        f"{len(data.datasets['test']):,} test; batches of ≤ {cfg.max_tokens} padded tokens"
    )

    if _is_rank_zero():
        save_config(cfg, run_dir / "config.yaml")
        provenance.write(run_dir / "provenance.json", provenance.collect(["train.py", *argv], data_hashes, sha256_file(spm_path)))

    module.spm_model, module.run_config = tokenizer.model_bytes, cfg.to_dict()
    interactive = sys.stdout.isatty()
    module.echo, module.echo_training = log, not interactive  # with a progress bar, print validations only
    ckpt_dir = run_dir / "checkpoints"
    best = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor="val/bleu", mode="max", save_top_k=1,
        auto_insert_metric_name=False, enable_version_counter=False, save_on_train_epoch_end=False,
    )
    last = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=cfg.save_every or None)
    callbacks = [best, last]
    if cfg.save_every and cfg.keep_last:  # step-<N>.ckpt every --save-every updates, for checkpoint averaging
        callbacks.append(PeriodicCheckpoints(ckpt_dir, cfg.save_every, cfg.keep_last))
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=resolve_precision(cfg),
        max_steps=cfg.max_steps,
        max_epochs=cfg.max_epochs if cfg.max_epochs is not None else -1,
        val_check_interval=cfg.val_every or None,
        check_val_every_n_epoch=None if cfg.val_every else 1,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.log_every,
        gradient_clip_val=cfg.clip_norm or None,
        accumulate_grad_batches=cfg.accumulate,
        logger=[ResumableCSVLogger(run_dir, name="", version=""), TensorBoardLogger(run_dir, name="tb", version="")],
        callbacks=callbacks,
        enable_progress_bar=interactive,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    ckpt_path = None
    if resume:
        ckpt_path = ckpt_dir / "last.ckpt" if resume == "last" else Path(resume)
        if not ckpt_path.is_file():
            raise ConfigError(f"--resume: checkpoint {ckpt_path} not found")
        log(f"resuming from {ckpt_path}")
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=False)  # our own files
    trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)  # last.ckpt is the final state, whatever the interval

    best_path = ckpt_dir / "best.ckpt" if (ckpt_dir / "best.ckpt").is_file() else None
    log(f"translating the test split with {best_path or 'the final weights'} (greedy) ...")
    trainer.test(module, datamodule=data, ckpt_path=best_path, verbose=False, weights_only=False)
    result = module.test_result
    if _is_rank_zero():
        _report(run_dir, data, result, trainer, best, best_path, started)
    return 0


def _quiet_lightning() -> None:
    """Drop Lightning's advertisement for its cloud logger from the run's output."""
    import logging

    class DropTip(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in record.getMessage()

    for handler in logging.getLogger("lightning.pytorch").handlers:
        handler.addFilter(DropTip())


def _check_model_flags(cfg: TrainConfig) -> None:
    """Turn a bad --skip, --lambda or --max-tokens into a ConfigError before anything is written."""
    from nmt.residual import check_lambda

    try:
        check_lambda(cfg.skip, cfg.lam)
    except ValueError as e:
        flag = "--skip" if "--skip" in str(e) or "unknown skip" in str(e) else flag_name("lam")
        raise ConfigError(f"{flag}: {e}") from None
    if cfg.max_tokens < cfg.max_len:
        raise ConfigError(f"--max-tokens {cfg.max_tokens} is smaller than --max-len {cfg.max_len}: "
                          "a training pair of the longest allowed length would not fit in a batch")


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def _report(run_dir: Path, data, result: dict, trainer, best, best_path, started: float) -> None:
    import sacrebleu

    (run_dir / "test.hyp").write_text("".join(h + "\n" for h in result["hypotheses"]), encoding="utf-8")
    copy = sacrebleu.corpus_bleu(data.sources("test"), [data.references("test")])
    summary = {
        "test": {
            "bleu": round(result["bleu"], 2),
            "signature": result["bleu_signature"],
            "decoding": "greedy",
            "checkpoint": str(best_path) if best_path else "final weights",
            "sentences": result["sentences"],
            "copy_source_bleu": round(copy.score, 2),
        },
        "best_val_bleu": round(float(best.best_model_score), 2) if best.best_model_score is not None else None,
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "wall_time_s": round(time.time() - started, 1),
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    log(
        f"\ntest BLEU {result['bleu']:.2f} ({result['bleu_signature']}), greedy, {result['sentences']} sentences\n"
        f"copy-source baseline BLEU {copy.score:.2f}\n"
        f"{trainer.global_step} updates in {summary['wall_time_s']:.0f} s; results in {run_dir}"
    )
