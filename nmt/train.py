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

Faults (see README, "Interrupted runs"):

- ``--resume`` checks ``last.ckpt`` first; if it is truncated or corrupt the run continues from the
  newest valid ``step-<N>.ckpt`` or ``best.ckpt``, with a warning naming both files; if no checkpoint
  is valid it stops with one line and status 2. It refuses a different number of processes.
- SIGTERM, SIGINT and SIGUSR1 (Lightning's SLURM auto-requeue is turned off) finish the current update, save
  ``last.ckpt``, skip the test translation, write a ``results.json`` with ``"finished": false``, print
  the command that resumes the run, and exit with 128 + the signal number (143 for SIGTERM).
- An update with a non-finite loss or gradient is skipped and counted; ``--max-nonfinite`` of them in
  a row stop the run as diverged: nothing is saved at the stop, ``results.json`` records
  ``"diverged": true`` and ``"diverged_at_step"``, and the exit status is 3.
- Several processes (``--devices``, ``--num-nodes``; Lightning's launcher, torchrun or SLURM): every process
  runs this file; they agree on the run directory and only global rank 0 writes into it (``nmt.launch``).
  ``--resume auto`` continues the run if it holds a checkpoint and starts it otherwise.
- A checkpoint that cannot be written (a full disk, a file size limit) stops the run with one line
  naming it, the previous checkpoint of that name intact, and status 1; so does any other OSError.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
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
from nmt import launch
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


def has_checkpoint(folder: Path) -> bool:
    """The run directory holds a checkpoint (last, best or step-N; corrupt or not)."""
    return any((folder / "checkpoints").glob("*.ckpt"))


def choose_run_dir(cfg: TrainConfig, data_name: str, resume: bool, by_rule: bool = False, first: bool = True,
                   restart: bool = False) -> Path:
    """The run directory: ``--run-dir``, or a fresh (or, on resume, the newest) ``runs/<name>[-N]``.

    Under data parallelism every process calls this by itself (see ``nmt.launch``). ``by_rule``: the
    processes cannot learn the first one's choice, so a fresh run without ``--run-dir`` goes to
    ``runs/<name>`` exactly. ``first``: this process creates the run directory; the others do not refuse
    a fresh run for its ``config.yaml`` (the first process may just have written it), only for a
    checkpoint, which no process writes before all of them train. ``restart``: ``--resume auto`` found
    no checkpoint, so a run directory without one is started again from scratch.
    """
    if cfg.run_dir:
        folder = Path(cfg.run_dir)
    else:
        base = Path("runs") / default_run_name(cfg, data_name)
        taken = [base] + [base.with_name(f"{base.name}-{i}") for i in range(2, 1000)]
        if resume:
            existing = [p for p in taken if is_run(p)]
            if not existing:
                raise ConfigError(f"--resume: no run to resume at {base} (give --run-dir)")
            folder = existing[-1]
        else:
            folder = base if by_rule else next(p for p in taken if not p.exists())
    if resume and not is_run(folder):
        raise ConfigError(f"--resume: {folder} holds no run (no config.yaml)")
    if not resume and not restart and (has_checkpoint(folder) or (first and is_run(folder))):
        raise ConfigError(f"--run-dir {folder} already holds a run: add --resume to continue it, or choose another --run-dir")
    return folder


def accumulation_for(update_tokens: int, tokens_per_batch: float, processes: int) -> int:
    """Batches per update (``--accumulate``) for ``--update-tokens``: ceil(update_tokens / (tokens_per_batch × processes)).

    ``tokens_per_batch`` is the mean number of non-padding target tokens in a training batch, measured on
    the data (``TranslationData.target_tokens_per_batch``), so an update holds on average at least
    ``update_tokens`` target tokens, whatever the number of processes.
    """
    return max(1, math.ceil(update_tokens / (tokens_per_batch * processes)))


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
    except OSError as e:  # the environment, not the code: a full disk, a file size limit, a vanished folder
        where = f": {e.filename}" if e.filename else ""
        print(f"train.py: error: {e.strerror or e}{where}", file=sys.stderr, flush=True)
        return 1


def run(argv: list[str]) -> int:
    started = time.time()
    cfg, explicit, args = parse_args(argv)
    resume = getattr(args, "resume", None)
    restart = False  # --resume auto, and the run directory holds no checkpoint: start (again) from scratch
    inherited = launch.detect(cfg.devices, cfg.num_nodes).inherited
    if inherited is not None:  # a copy started by Lightning's launcher: the first process chose for it
        cfg.run_dir, resume = inherited[0], inherited[1]
    elif resume == "auto":
        if not cfg.run_dir:
            raise ConfigError("--resume auto needs --run-dir: the run that the same command starts, then continues")
        resume = "last" if has_checkpoint(Path(cfg.run_dir)) else None
        restart = resume is None

    if resume:
        probe = choose_run_dir(cfg, Path(cfg.data).name if cfg.data != "toy" else "toy", resume=True)
        cfg = merge_for_resume(read_saved_config(probe / "config.yaml"), explicit)
        cfg.run_dir = str(probe)
    _check_model_flags(cfg)
    proc = launch.detect(cfg.devices, cfg.num_nodes)  # devices and nodes as resolved (on resume: the run's)
    from lightning.pytorch.utilities import rank_zero_only

    rank_zero_only.rank = proc.global_rank  # log() and _is_rank_zero() before the Trainer exists

    corpus = resolve_corpus(cfg.data, cfg.src, cfg.tgt)
    cfg.src, cfg.tgt = corpus.src, corpus.tgt
    if inherited is not None:
        run_dir = Path(cfg.run_dir)
    else:
        run_dir = choose_run_dir(cfg, corpus.name, resume=bool(resume), by_rule=proc.decides_alone,
                                 first=proc.is_first, restart=restart)
    cfg.run_dir = str(run_dir)
    if cfg.max_nonfinite < 0:
        raise ConfigError(f"--max-nonfinite must be ≥ 0 (0: never stop), got {cfg.max_nonfinite}")
    ckpt_path, resumed = (_checkpoint_to_resume(run_dir / "checkpoints", resume) if resume else (None, None))

    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from nmt.checkpoint import AtomicCheckpointIO, PeriodicCheckpoints
    from nmt.signals import GracefulStop, TrainingStopped
    from nmt.rng import RNGStates
    from nmt.wallclock import WallClock
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
    # val/bleu is computed from the hypotheses of all processes, gathered: the same value on every process
    warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\('val/bleu'.*sync_dist=True.*")
    # our loaders are resumable, though not in Lightning's way: the checkpoint holds the batch sampler's position
    # (TranslationData.state_dict), and a mid-epoch resume continues with the next batch not yet trained
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")

    log(f"run directory: {run_dir}" + (" (resuming)" if resume else ""))
    if corpus.is_toy:
        log(
            "data: the embedded toy corpus (generated en→de from a small grammar and lexicon, "
            f"in {corpus.path}). It is a toy for trying the framework, not a benchmark."
        )
    else:
        log(f"data: {corpus.path} ({corpus.src}→{corpus.tgt}); scored by {corpus.protocol.description()}")
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    # Everything that can fail on bad data happens before the run directory is created or touched.
    data_hashes = corpus.hashes()
    spm_path = run_dir / "spm.model"
    if resume:
        if not spm_path.is_file():
            raise ConfigError(f"--resume: {spm_path} is missing")
        spm_source = spm_path
    else:
        settings = spm_settings(cfg.vocab_size, cfg.spm_type, cfg.spm_sample, cfg.spm_seed)
        train_files = [corpus.file("train", corpus.src), corpus.file("train", corpus.tgt)]
        # under data parallelism the first process of each node builds the cache entries, the others wait for them
        spm_source = train_or_load(train_files, [data_hashes[str(f)] for f in train_files], data_root() / "cache", settings,
                                   log, build=proc.local_rank == 0)
    tokenizer = Tokenizer(spm_source)
    data = TranslationData(
        corpus, tokenizer, cfg.max_tokens, cfg.max_len, cfg.seed, cfg.num_workers, log,
        max_len_ratio=cfg.max_len_ratio, cache_root=data_root() / "cache", file_hashes=data_hashes,
        build_cache=proc.local_rank == 0,
    )
    data.setup()
    log(f"data: {data.describe_batches()}")
    unknown = data.unknown_in_references("test")
    log(f"data: {unknown['with_unknown']} of {unknown['references']:,} test references contain ⁇ after "
        f"encoding and decoding; {unknown['changed']} differ in any way (SentencePiece normalisation)")
    processes = cfg.devices * cfg.num_nodes
    per_batch = data.target_tokens_per_batch()
    accumulate = accumulation_for(cfg.update_tokens, per_batch, processes) if cfg.update_tokens else cfg.accumulate
    derived = f" (--update-tokens {cfg.update_tokens:,}: --accumulate {accumulate})" if cfg.update_tokens else ""
    log(f"update: {accumulate} batch{'es' if accumulate > 1 else ''} × {processes} process{'es' if processes > 1 else ''} "
        f"× {per_batch:,.0f} target tokens per batch on average = {accumulate * processes * per_batch:,.0f} target "
        f"tokens per update{derived}")
    if proc.is_first:  # the only process that writes into the run directory
        run_dir.mkdir(parents=True, exist_ok=True)
        if restart and is_run(run_dir):
            log(f"--resume auto: {run_dir} holds no checkpoint: starting the run again from scratch")
            (run_dir / "results.json").unlink(missing_ok=True)
        if not resume:
            tmp = spm_path.with_name(f".{spm_path.name}.tmp")
            shutil.copyfile(spm_source, tmp)
            os.replace(tmp, spm_path)
    if proc.starts_copies:  # the copies Lightning's launcher starts at trainer.fit follow this process's choice
        launch.hand_down(run_dir, ckpt_path)
    train_set = data.datasets["train"]
    mcfg = model_config(cfg.arch, tokenizer.vocab_size, **cfg.model_overrides())
    module = TranslationModule(
        mcfg.to_dict(),
        optim=dict(lr=cfg.lr, warmup=cfg.warmup, adam_betas=list(cfg.adam_betas), adam_eps=cfg.adam_eps,
                   weight_decay=cfg.weight_decay, label_smoothing=cfg.label_smoothing),
        decoding=dict(max_len_a=cfg.max_len_a, max_len_b=cfg.max_len_b, bleu_tokenize=corpus.protocol.bleu_tokenize),
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
    last = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=cfg.save_every or None,
                           enable_version_counter=False)  # never last-v1.ckpt: last.ckpt is always the newest
    clock = WallClock(started)  # the run's wall time over all its sessions, carried by the checkpoints
    callbacks = [best, last, RNGStates(), clock]  # RNG states of every process, for an exact resume
    if cfg.save_every:  # every --save-every updates *and* at the end of every epoch
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_epochs=1,
                                         enable_version_counter=False))
    if cfg.save_every and cfg.keep_last:  # step-<N>.ckpt every --save-every updates, for checkpoint averaging
        callbacks.append(PeriodicCheckpoints(ckpt_dir, cfg.save_every, cfg.keep_last))
    stopper = GracefulStop(ckpt_dir / "last.ckpt")  # SIGTERM/SIGINT: save last.ckpt after the update, stop
    callbacks.append(stopper)
    module.max_nonfinite = cfg.max_nonfinite
    module.log_layer_grads = cfg.log_layer_grads
    cluster = []
    if launch.slurm_detected():
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        # Lightning's auto-requeue saves a checkpoint inside its SIGUSR1 handler, i.e. wherever each process happens
        # to be: under DDP its collectives can interleave with the gradient all-reduce and hang. Instead GracefulStop
        # stops on SIGUSR1 at an update boundary (exit 138) and scripts/slurm.sbatch requeues the job.
        cluster.append(SLURMEnvironment(auto_requeue=False))
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy="ddp" if processes > 1 else "auto",
        precision=resolve_precision(cfg),
        max_steps=cfg.max_steps,
        max_epochs=cfg.max_epochs if cfg.max_epochs is not None else -1,
        val_check_interval=cfg.val_every * accumulate or None,  # Lightning counts batches; --val-every counts updates
        check_val_every_n_epoch=None if cfg.val_every else 1,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.log_every,
        gradient_clip_val=cfg.clip_norm or None,
        accumulate_grad_batches=accumulate,
        logger=[ResumableCSVLogger(run_dir, name="", version=""), TensorBoardLogger(run_dir, name="tb", version="")],
        callbacks=callbacks,
        enable_progress_bar=interactive,
        plugins=[AtomicCheckpointIO(), *cluster],
        use_distributed_sampler=False,
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    if resume:
        written_by = resumed.get("world_size")
        if written_by is not None and written_by != trainer.world_size:
            raise ConfigError(
                f"--resume cannot change the number of processes (--devices × nodes: run has {written_by}, asked "
                f"{trainer.world_size}): it changes the batch of an update and the data order; resume with the "
                "same number, or start a new --run-dir"
            )
        log(f"resuming from {ckpt_path} (update {resumed['global_step']})")
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=False)  # our own files
    except TrainingStopped as stop:  # every process stops at the same update (the decision is collective)
        status = _stopped(run_dir, trainer, stop, clock)
        trainer.strategy.barrier("stopped")  # the others wait until the first has written results.json
        return 0 if proc.copy else status  # a copy's non-zero status makes Lightning's launcher kill the first process
    except SIGTERMException:  # Lightning's own handler (a SIGTERM outside the training loop): nothing saved
        return _stopped(run_dir, trainer, _signal_stop(trainer.global_step), clock)
    trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)  # last.ckpt is the final state, whatever the interval
    received = stopper.received or 0  # a signal after the last update (during a validation, say), on any process
    if trainer.world_size > 1:
        import torch

        received = torch.tensor(received, device=trainer.strategy.root_device)
        received = int(trainer.strategy.reduce(received, reduce_op="max"))
    if received:
        status = _stopped(run_dir, trainer, _signal_stop(trainer.global_step, received, ckpt_dir / "last.ckpt"), clock)
        trainer.strategy.barrier("stopped")
        return 0 if proc.copy else status

    best_path = ckpt_dir / "best.ckpt" if (ckpt_dir / "best.ckpt").is_file() else None
    log(f"translating the test split with {best_path or 'the final weights'} (greedy) ...")
    try:
        trainer.test(module, datamodule=data, ckpt_path=best_path, verbose=False, weights_only=False)
    except SIGTERMException:  # training is over and saved; only the test translation is missing
        return _stopped(run_dir, trainer, _signal_stop(trainer.global_step, saved=ckpt_dir / "last.ckpt"), clock)
    result = module.test_result
    if _is_rank_zero():
        _report(run_dir, data, result, trainer, best, best_path, clock)
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
    from nmt.residual import BadLambda, UnknownVariant, check_lambda

    try:
        check_lambda(cfg.skip, cfg.lam)
    except UnknownVariant as e:
        raise ConfigError(f"--skip: {e}") from None
    except BadLambda as e:
        raise ConfigError(f"{flag_name('lam')}: {e}") from None
    if cfg.max_tokens < cfg.max_len:
        raise ConfigError(f"--max-tokens {cfg.max_tokens} is smaller than --max-len {cfg.max_len}: "
                          "a training pair of the longest allowed length would not fit in a batch")
    for name in ("devices", "num_nodes", "accumulate"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{flag_name(name)} must be ≥ 1, got {getattr(cfg, name)}")
    if cfg.layers is not None and cfg.layers < 1:
        raise ConfigError(f"--layers must be ≥ 1 (or left out for the --arch preset's), got {cfg.layers}")
    if cfg.update_tokens < 0:
        raise ConfigError(f"--update-tokens must be ≥ 0 (0: use --accumulate), got {cfg.update_tokens}")
    if cfg.update_tokens and cfg.accumulate != 1:
        raise ConfigError(f"--update-tokens {cfg.update_tokens} derives --accumulate, which is {cfg.accumulate}: give one "
                          "of them (--update-tokens 0 to use --accumulate)")


def _checkpoint_to_resume(ckpt_dir: Path, resume: str) -> tuple[Path, dict]:
    """The checkpoint ``--resume`` continues from, and its small fields (global_step, world_size).

    ``--resume`` (``last``): ``last.ckpt``, or when that is missing, truncated or corrupt the newest valid
    ``step-<N>.ckpt`` or ``best.ckpt``, with a warning naming both files. ``--resume PATH``: that file.
    Raises ConfigError (one line) when there is nothing valid to resume from.
    """
    from nmt.checkpoint import newest_valid_checkpoint, read_checkpoint

    if resume == "last":
        path, ckpt, skipped = newest_valid_checkpoint(ckpt_dir, ckpt_dir / "last.ckpt")
        if path is None:
            detail = "; ".join(f"{p.name}: {why}" for p, why in skipped) or "it holds no checkpoint"
            raise ConfigError(f"--resume: no valid checkpoint to resume from in {ckpt_dir} ({detail})")
        for bad, why in skipped:
            _warn(f"warning: --resume: {bad} is {why}; resuming from {path} (update {ckpt['global_step']}) instead")
    else:
        path = Path(resume)
        ckpt, why = read_checkpoint(path)
        if ckpt is None:
            raise ConfigError(f"--resume: checkpoint {path} is {why}")
    return path, {k: ckpt.get(k) for k in ("global_step", "epoch", "world_size")}


def _signal_stop(step: int, signum: int = signal.SIGTERM, saved: Path | None = None):
    """The TrainingStopped for a signal that ended a run outside GracefulStop's update boundary."""
    from nmt.signals import TrainingStopped

    name = signal.Signals(signum).name
    return TrainingStopped(f"stopped by {name} at update {step}", reason=name, step=step, exit_status=128 + signum,
                           saved=saved)


def _stopped(run_dir: Path, trainer, stop, clock) -> int:
    """Report a run that ended early (a signal, or divergence): results.json says so; no test translation."""
    module = trainer.lightning_module
    diverged = stop.reason == "diverged"
    resume = f"python train.py --resume --run-dir {shlex.quote(str(run_dir))}"
    summary = {
        "finished": False,
        "stopped": stop.reason,
        "steps": stop.step,
        "epochs": trainer.current_epoch,
        "checkpoint_saved_at_stop": str(stop.saved) if stop.saved else None,
        "nonfinite_skipped": module.nonfinite_skipped,
        "diverged": diverged,
        **({"diverged_at_step": stop.diverged_at_step} if diverged else {"resume": resume}),
        **_wall_time(clock),
    }
    if _is_rank_zero():
        (run_dir / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    if diverged:
        log(f"{stop}\nresults in {run_dir} (results.json records the divergence)")
    else:
        saved = f"; {stop.saved} saved" if stop.saved else "; no checkpoint written at the stop"
        log(f"{stop}{saved}; resume with: {resume}")
    return stop.exit_status


def _wall_time(clock) -> dict:
    """results.json's wall time: the run's, summed over its sessions (see nmt.wallclock), and this session's."""
    return {"wall_time_s": round(clock.total_s(), 1), "session_wall_time_s": round(clock.session_s(), 1),
            "sessions": clock.sessions}


def _warn(message: str) -> None:
    if _is_rank_zero():
        print(message, file=sys.stderr, flush=True)


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def _report(run_dir: Path, data, result: dict, trainer, best, best_path, clock) -> None:
    import sacrebleu

    (run_dir / "test.hyp").write_text("".join(h + "\n" for h in result["hypotheses"]), encoding="utf-8")
    protocol = data.corpus.protocol
    copy = sacrebleu.corpus_bleu(data.sources("test"), [data.references("test")], tokenize=protocol.bleu_tokenize,
                                 force=protocol.bleu_tokenize == "none")
    summary = {
        "protocol": protocol.to_dict(),
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
        "finished": True,
        "nonfinite_skipped": trainer.lightning_module.nonfinite_skipped,
        "diverged": False,
        **_wall_time(clock),
    }
    (run_dir / "results.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    log(
        f"\ntest BLEU {result['bleu']:.2f} ({result['bleu_signature']}), greedy, {result['sentences']} sentences\n"
        f"copy-source baseline BLEU {copy.score:.2f}\n"
        f"{trainer.global_step} updates in {summary['wall_time_s']:.0f} s"
        + (f" over {clock.sessions} sessions" if clock.sessions > 1 else "") + f"; results in {run_dir}"
    )
