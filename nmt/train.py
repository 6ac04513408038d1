"""``python train.py``: train a model, validate it with BLEU, and score the test split at the end.

The run directory (``--run-dir``, by default under ``runs/``) holds everything about a run::

    config.yaml        the resolved configuration (defaults < --config preset < flags)
    provenance.json    git commit, package versions, hardware, command line, data and tokenizer hashes
    spm.model          the joint SentencePiece model
    checkpoints/       last.ckpt (always the newest) and best.ckpt (best validation BLEU)
    metrics.csv, tb/   training and validation metrics (CSV and TensorBoard)
    test.hyp           detokenized translations of the test split (best checkpoint, greedy)
    results.json       test BLEU with its sacreBLEU signature, copy-source baseline, why and where the run
                       stopped, the update of its best validation, wall time

A run is five steps, each a function below, in the order they run (``run``):

1. ``resolve_run``: flags and preset → a ``TrainConfig``; ``--resume`` → the run and the checkpoint to continue;
   the corpus; the run directory; which process this is. Nothing is written.
2. ``prepare_data``: the tokenizer (trained once and cached), the encoded splits, the batches, the gradient
   accumulation. Nothing is written into the run directory: bad data stops the run before it exists.
3. ``create_run``: the run directory, its ``spm.model``, ``config.yaml`` and ``provenance.json`` (first process).
4. ``build_module`` and ``build_trainer``: the model with its loss and optimiser, the Lightning Trainer with
   its checkpoints, early stopping, signal handling and loggers.
5. ``fit_and_report``: training, then the test translation and ``results.json`` (or the record of a stop).

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

import enum
import json
import math
import shlex
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from nmt import atomic, launch
from nmt.config import (
    ConfigError,
    TrainConfig,
    flag_name,
    merge_for_resume,
    parse_args,
    read_saved_config,
    resolve_precision,
    save_config,
)
from nmt.data.catalog import resolve_corpus
from nmt.data.corpus import Corpus, DataError, sha256_file


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
    """Train one run from its command line to its results.json; returns the exit status."""
    started = time.time()
    setup = resolve_run(argv)
    _quiet_warnings()
    announce(setup)
    import lightning as L

    L.seed_everything(setup.cfg.seed, workers=True, verbose=False)  # before the model is built: its initialisation
    prepared = prepare_data(setup)
    create_run(setup, prepared)
    module = build_module(setup, prepared)
    trainer, parts = build_trainer(setup, prepared.accumulate, started)
    return fit_and_report(setup, prepared, module, trainer, parts)


# ------------------------------------------------------------------------------------------- 1. resolve the run
class Start(enum.Enum):
    """How this command treats its run directory."""

    NEW = "new"  # a run that does not exist yet
    RESUME = "resume"  # continue the run from its checkpoint (--resume, or --resume auto with a checkpoint)
    RESTART = "restart"  # --resume auto found no checkpoint: start the run (again) from scratch


@dataclass
class RunSetup:
    """What a run has resolved before anything is written."""

    cfg: TrainConfig  # the configuration to train with (on resume: the run's own, with what may change)
    argv: list[str]
    corpus: Corpus
    run_dir: Path
    start: Start
    proc: launch.Launch  # which process this is
    checkpoint: Path | None = None  # the checkpoint to continue from (Start.RESUME)
    resumed_step: int | None = None  # its update

    @property
    def resuming(self) -> bool:
        return self.start is Start.RESUME


def resolve_run(argv: list[str]) -> RunSetup:
    """The configuration, corpus, run directory and checkpoint of this command; raises ConfigError or DataError."""
    cfg, explicit, args = parse_args(argv)
    start, resume = Start.NEW, getattr(args, "resume", None)
    inherited = launch.detect(cfg.devices, cfg.num_nodes).inherited
    if inherited is not None:  # a copy started by Lightning's launcher: the first process chose for it
        cfg.run_dir, resume = inherited[0], inherited[1]
    elif resume == "auto":
        if not cfg.run_dir:
            raise ConfigError("--resume auto needs --run-dir: the run that the same command starts, then continues")
        resume = "last" if has_checkpoint(Path(cfg.run_dir)) else None
        start = Start.NEW if resume else Start.RESTART
    if resume:
        start = Start.RESUME
        saved = choose_run_dir(cfg, Path(cfg.data).name if cfg.data != "toy" else "toy", start)
        cfg = merge_for_resume(read_saved_config(saved / "config.yaml"), explicit)
        cfg.run_dir = str(saved)
    check_settings(cfg)
    proc = launch.detect(cfg.devices, cfg.num_nodes)  # devices and nodes as resolved (on resume: the run's)
    from lightning.pytorch.utilities import rank_zero_only

    rank_zero_only.rank = proc.global_rank  # log() and _is_rank_zero() before the Trainer exists
    # a named dataset missing from data/ is fetched by the first process of each node while the others wait for it
    corpus = resolve_corpus(cfg.data, cfg.src, cfg.tgt, download=not cfg.no_download, wait=proc.local_rank != 0)
    cfg.src, cfg.tgt = corpus.src, corpus.tgt
    run_dir = Path(cfg.run_dir) if inherited is not None else choose_run_dir(cfg, corpus.name, start, proc)
    cfg.run_dir = str(run_dir)
    setup = RunSetup(cfg, argv, corpus, run_dir, start, proc)
    if resume:
        setup.checkpoint, written = _checkpoint_to_resume(run_dir / "checkpoints", resume)
        setup.resumed_step = written["global_step"]
        processes = cfg.devices * cfg.num_nodes
        if written.get("world_size") is not None and written["world_size"] != processes:
            raise ConfigError(
                f"--resume cannot change the number of processes (--devices × nodes: run has {written['world_size']}, "
                f"asked {processes}): it changes the batch of an update and the data order; resume with the same "
                "number, or start a new --run-dir"
            )
    return setup


def check_settings(cfg: TrainConfig) -> None:
    """Turn a bad --skip, --lambda, --max-tokens or count into a ConfigError before anything is written."""
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
        raise ConfigError(f"--update-tokens {cfg.update_tokens} derives --accumulate, which is {cfg.accumulate}: give "
                          "one of them (--update-tokens 0 to use --accumulate)")
    if cfg.max_nonfinite < 0:
        raise ConfigError(f"--max-nonfinite must be ≥ 0 (0: never stop), got {cfg.max_nonfinite}")
    for name in ("patience", "min_delta", "patience_from"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{flag_name(name)} must be ≥ 0 (--patience 0: never stop early), got "
                              f"{getattr(cfg, name)}")


def default_run_name(cfg: TrainConfig, data_name: str) -> str:
    lam = f"-lambda{cfg.lam:g}" if cfg.lam != 1 else ""
    skip = cfg.skip.replace(":", "_").replace("/", "_")
    return f"{data_name}-{cfg.arch}-{skip}{lam}-seed{cfg.seed}"


def is_run(folder: Path) -> bool:
    return (folder / "config.yaml").is_file()


def has_checkpoint(folder: Path) -> bool:
    """The run directory holds a checkpoint (last, best or step-N; corrupt or not)."""
    return any((folder / "checkpoints").glob("*.ckpt"))


def choose_run_dir(cfg: TrainConfig, data_name: str, start: Start, proc: launch.Launch = launch.Launch()) -> Path:
    """The run directory: ``--run-dir``, or a fresh (or, to resume, the newest) ``runs/<name>[-N]``.

    Under data parallelism every process calls this by itself (see ``nmt.launch``). When the processes cannot
    learn the first one's choice (``proc.decides_alone``), a new run without ``--run-dir`` goes to ``runs/<name>``
    exactly. Only the first process (``proc.is_first``), which creates the directory, refuses a new run in a folder
    that holds a ``config.yaml`` (another run) or other files; every process refuses one that holds a checkpoint,
    which no process writes before all of them train. ``Start.RESTART`` starts a run without a checkpoint again.
    """
    if cfg.run_dir:
        folder = Path(cfg.run_dir)
    else:
        base = Path("runs") / default_run_name(cfg, data_name)
        taken = [base] + [base.with_name(f"{base.name}-{i}") for i in range(2, 1000)]
        if start is Start.RESUME:
            existing = [p for p in taken if is_run(p)]
            if not existing:
                raise ConfigError(f"--resume: no run to resume at {base} (give --run-dir)")
            folder = existing[-1]
        else:
            folder = base if proc.decides_alone else next(p for p in taken if not p.exists())
    if start is Start.RESUME:
        if not is_run(folder):
            raise ConfigError(f"--resume: {folder} holds no run (no config.yaml)")
        return folder
    if start is Start.NEW and (has_checkpoint(folder) or (proc.is_first and is_run(folder))):
        raise ConfigError(f"--run-dir {folder} already holds a run: add --resume to continue it, or choose another "
                          "--run-dir")
    if start is Start.NEW and proc.is_first and not is_run(folder) and folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(f"--run-dir {folder} is a folder that holds other files but no run: choose an empty or new "
                          "--run-dir")
    return folder


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


def announce(setup: RunSetup) -> None:
    log(f"run directory: {setup.run_dir}" + (" (resuming)" if setup.resuming else ""))
    log(f"data: {setup.corpus.description()}")


# ------------------------------------------------------------------------------------------- 2. prepare the data
@dataclass
class PreparedData:
    """The run's tokenizer and data, ready to train on."""

    tokenizer: object  # nmt.data.tokenizer.Tokenizer
    spm_source: Path  # the SentencePiece model file it was loaded from (the cache's, or the run's on resume)
    data: object  # nmt.data.datamodule.TranslationData, set up
    file_hashes: dict[str, str]  # SHA-256 of every data file (provenance)
    accumulate: int  # batches per update


def prepare_data(setup: RunSetup) -> PreparedData:
    """Tokenizer, encoded splits and batches; everything that can fail on bad data, before the run directory exists.

    Under data parallelism the first process of each node builds the cache entries while the others wait for them.
    """
    from nmt.data.corpus import data_root
    from nmt.data.datamodule import TranslationData
    from nmt.data.tokenizer import Tokenizer, spm_settings, train_or_load

    cfg, corpus, builds = setup.cfg, setup.corpus, setup.proc.local_rank == 0
    hashes = corpus.hashes()
    if setup.resuming:
        spm_source = setup.run_dir / "spm.model"
        if not spm_source.is_file():
            raise ConfigError(f"--resume: {spm_source} is missing")
    else:
        settings = spm_settings(cfg.vocab_size, cfg.spm_type, cfg.spm_sample, cfg.spm_seed)
        train_files = [corpus.file("train", corpus.src), corpus.file("train", corpus.tgt)]
        spm_source = train_or_load(train_files, [hashes[str(f)] for f in train_files], data_root() / "cache", settings,
                                   log, build=builds)
    tokenizer = Tokenizer(spm_source)
    data = TranslationData(corpus, tokenizer, cfg.max_tokens, cfg.max_len, cfg.seed, cfg.num_workers, log,
                           max_len_ratio=cfg.max_len_ratio, cache_root=data_root() / "cache", file_hashes=hashes,
                           build_cache=builds)
    data.setup()
    log(f"data: {data.describe_batches()}")
    unknown = data.unknown_in_references("test")
    log(f"data: {unknown['with_unknown']} of {unknown['references']:,} test references contain ⁇ after "
        f"encoding and decoding; {unknown['changed']} differ in any way (SentencePiece normalisation)")
    return PreparedData(tokenizer, spm_source, data, hashes, _accumulation(cfg, data.target_tokens_per_batch()))


def accumulation_for(update_tokens: int, tokens_per_batch: float, processes: int) -> int:
    """Batches per update (``--accumulate``) for ``--update-tokens``:
    ceil(update_tokens / (tokens_per_batch × processes)).

    ``tokens_per_batch`` is the mean number of non-padding target tokens in a training batch, measured on
    the data (``TranslationData.target_tokens_per_batch``), so an update holds on average at least
    ``update_tokens`` target tokens, whatever the number of processes.
    """
    return max(1, math.ceil(update_tokens / (tokens_per_batch * processes)))


def _accumulation(cfg: TrainConfig, per_batch: float) -> int:
    """``--accumulate``, or the one ``--update-tokens`` derives; logged with the update's size."""
    processes = cfg.devices * cfg.num_nodes
    accumulate = accumulation_for(cfg.update_tokens, per_batch, processes) if cfg.update_tokens else cfg.accumulate
    derived = f" (--update-tokens {cfg.update_tokens:,}: --accumulate {accumulate})" if cfg.update_tokens else ""
    log(f"update: {accumulate} batch{'es' if accumulate > 1 else ''} × {processes} "
        f"process{'es' if processes > 1 else ''} "
        f"× {per_batch:,.0f} target tokens per batch on average = {accumulate * processes * per_batch:,.0f} target "
        f"tokens per update{derived}")
    return accumulate


# ------------------------------------------------------------------------------------------- 3. create the run
def create_run(setup: RunSetup, prepared: PreparedData) -> None:
    """The run directory and its spm.model (first process only); the launcher's copies learn the choice."""
    run_dir, proc = setup.run_dir, setup.proc
    if proc.is_first:  # the only process that writes into the run directory
        run_dir.mkdir(parents=True, exist_ok=True)
        if setup.start is Start.RESTART and is_run(run_dir):
            log(f"--resume auto: {run_dir} holds no checkpoint: starting the run again from scratch")
            (run_dir / "results.json").unlink(missing_ok=True)
        if not setup.resuming:
            spm_path = run_dir / "spm.model"
            with atomic.replacing(spm_path) as tmp:
                shutil.copyfile(prepared.spm_source, tmp)
    if proc.starts_copies:  # the copies Lightning's launcher starts at trainer.fit follow this process's choice
        launch.hand_down(run_dir, setup.checkpoint)


def write_run_record(setup: RunSetup, prepared: PreparedData) -> None:
    """config.yaml and provenance.json (first process)."""
    from nmt import provenance

    if _is_rank_zero():
        run_dir = setup.run_dir
        save_config(setup.cfg, run_dir / "config.yaml")
        provenance.write(run_dir / "provenance.json", provenance.collect(
            ["train.py", *setup.argv], prepared.file_hashes, sha256_file(run_dir / "spm.model")))


# ------------------------------------------------------------------------------------------- 4. module and trainer
def build_module(setup: RunSetup, prepared: PreparedData):
    """The TranslationModule of the run's config; logs the model and data sizes, then writes the run's record."""
    from nmt.lit import TranslationModule
    from nmt.model import model_config

    cfg, tokenizer, data = setup.cfg, prepared.tokenizer, prepared.data
    mcfg = model_config(cfg.arch, tokenizer.vocab_size, **cfg.model_overrides())
    interactive = sys.stdout.isatty()  # with a progress bar, print validations only
    module = TranslationModule(
        mcfg, cfg.optim_settings(), cfg.validation_settings(setup.corpus.protocol.bleu_tokenize),
        cfg.monitor_settings(echo_training=not interactive), spm_model=tokenizer.model_bytes,
        run_config=cfg.to_dict(), echo=log,
    )
    log(f"model: {cfg.arch} (d {mcfg.d_model}, ff {mcfg.d_ff}, {mcfg.n_heads} heads, "
        f"{mcfg.encoder_layers}+{mcfg.decoder_layers} layers), skip {cfg.skip} λ={cfg.lam:g}, "
        f"{module.model.num_parameters():,} parameters, vocabulary {tokenizer.vocab_size:,}")
    log(f"data: {len(data.datasets['train']):,} training pairs, {len(data.datasets['valid']):,} valid, "
        f"{len(data.datasets['test']):,} test; batches of ≤ {cfg.max_tokens} padded tokens")
    write_run_record(setup, prepared)
    return module


@dataclass
class TrainerParts:
    """The callbacks that fit_and_report asks after training."""

    best: object  # ModelCheckpoint of best.ckpt
    clock: object  # nmt.wallclock.WallClock
    stopper: object  # nmt.signals.GracefulStop


def build_trainer(setup: RunSetup, accumulate: int, started: float):
    """The Lightning Trainer of the run, and the callbacks asked after training."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from nmt.checkpoint import AtomicCheckpointIO
    from nmt.csvlog import ResumableCSVLogger

    cfg, run_dir = setup.cfg, setup.run_dir
    ckpt_dir = run_dir / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/bleu", mode="max", save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False, save_on_train_epoch_end=False)
    callbacks, parts = _callbacks(cfg, ckpt_dir, best, started)
    processes = cfg.devices * cfg.num_nodes
    import torch

    on_gpu = cfg.accelerator == "gpu" or (cfg.accelerator == "auto" and torch.cuda.is_available())
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy="ddp" if processes > 1 else "auto",
        precision=resolve_precision(cfg.precision, on_gpu),
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
        enable_progress_bar=sys.stdout.isatty(),
        plugins=[AtomicCheckpointIO(), *_cluster_plugins()],
        use_distributed_sampler=False,
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    return trainer, parts


def _callbacks(cfg: TrainConfig, ckpt_dir: Path, best, started: float) -> tuple[list, TrainerParts]:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from nmt.checkpoint import PeriodicCheckpoints
    from nmt.early_stopping import EarlyStopping
    from nmt.rng import RNGStates
    from nmt.signals import GracefulStop
    from nmt.wallclock import WallClock

    last = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=cfg.save_every or None,
                           enable_version_counter=False)  # never last-v1.ckpt: last.ckpt is always the newest
    clock = WallClock(started)  # the run's wall time over all its sessions, carried by the checkpoints
    # --patience, and the best validation's update (always)
    early = EarlyStopping(cfg.patience, cfg.min_delta, start=cfg.patience_from, echo=log)
    callbacks = [best, last, RNGStates(), clock, early]  # RNG states of every process, for an exact resume
    if cfg.save_every:  # every --save-every updates *and* at the end of every epoch
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_epochs=1,
                                         enable_version_counter=False))
    if cfg.save_every and cfg.keep_last:  # step-<N>.ckpt every --save-every updates, for checkpoint averaging
        callbacks.append(PeriodicCheckpoints(ckpt_dir, cfg.save_every, cfg.keep_last))
    stopper = GracefulStop(ckpt_dir / "last.ckpt")  # SIGTERM/SIGINT: save last.ckpt after the update, stop
    callbacks.append(stopper)
    return callbacks, TrainerParts(best, clock, stopper)


def _cluster_plugins() -> list:
    if not launch.slurm_detected():
        return []
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    # Lightning's auto-requeue saves a checkpoint inside its SIGUSR1 handler, i.e. wherever each process happens
    # to be: under DDP its collectives can interleave with the gradient all-reduce and hang. Instead GracefulStop
    # stops on SIGUSR1 at an update boundary (exit 138) and scripts/slurm.sbatch requeues the job.
    return [SLURMEnvironment(auto_requeue=False)]


# ------------------------------------------------------------------------------------------- 5. fit and report
def fit_and_report(setup: RunSetup, prepared: PreparedData, module, trainer, parts: TrainerParts) -> int:
    """Train; then translate the test split with the best checkpoint and write results.json (or record a stop)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from nmt.signals import TrainingStopped

    run_dir, proc, clock = setup.run_dir, setup.proc, parts.clock
    last = run_dir / "checkpoints" / "last.ckpt"
    if setup.resuming:
        log(f"resuming from {setup.checkpoint} (update {setup.resumed_step})")
    try:
        trainer.fit(module, datamodule=prepared.data, ckpt_path=setup.checkpoint, weights_only=False)  # our files
    except TrainingStopped as stop:  # every process stops at the same update (the decision is collective)
        status = _stopped(run_dir, trainer, stop, clock)
        trainer.strategy.barrier("stopped")  # the others wait until the first has written results.json
        return 0 if proc.copy else status  # a copy's non-zero status makes Lightning's launcher kill the first process
    except SIGTERMException:  # Lightning's own handler (a SIGTERM outside the training loop): nothing saved
        return _stopped(run_dir, trainer, _signal_stop(trainer.global_step), clock)
    trainer.save_checkpoint(last, weights_only=False)  # last.ckpt is the final state, whatever the interval
    received = _signal_received(trainer, parts.stopper)
    if received:
        status = _stopped(run_dir, trainer, _signal_stop(trainer.global_step, received, last), clock)
        trainer.strategy.barrier("stopped")
        return 0 if proc.copy else status

    ended = _stop_record(trainer)  # before trainer.test, which restores the callbacks' states of best.ckpt
    best_path = run_dir / "checkpoints" / "best.ckpt"
    best_path = best_path if best_path.is_file() else None
    log(f"translating the test split with {best_path or 'the final weights'} (greedy) ...")
    try:
        trainer.test(module, datamodule=prepared.data, ckpt_path=best_path, verbose=False, weights_only=False)
    except SIGTERMException:  # training is over and saved; only the test translation is missing
        return _stopped(run_dir, trainer, _signal_stop(trainer.global_step, saved=last), clock)
    if _is_rank_zero():
        _report(run_dir, prepared.data, module.test_result, trainer, parts.best, best_path, clock, ended)
    return 0


def _signal_received(trainer, stopper) -> int:
    """A stop signal that arrived after the last update (during a validation, say), on any process (0: none)."""
    received = stopper.received or 0
    if trainer.world_size > 1:
        import torch

        received = torch.tensor(received, device=trainer.strategy.root_device)
        received = int(trainer.strategy.reduce(received, reduce_op="max"))
    return received


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
        **_stop_record(trainer, stop.reason),
        "steps": stop.step,
        "epochs": trainer.current_epoch,
        "checkpoint_saved_at_stop": str(stop.saved) if stop.saved else None,
        "nonfinite_skipped": module.nonfinite_skipped,
        "diverged": diverged,
        **({"diverged_at_step": stop.diverged_at_step} if diverged else {"resume": resume}),
        **_wall_time(clock),
    }
    if _is_rank_zero():
        atomic.write_text(run_dir / "results.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    if diverged:
        log(f"{stop}\nresults in {run_dir} (results.json records the divergence)")
    else:
        saved = f"; {stop.saved} saved" if stop.saved else "; no checkpoint written at the stop"
        log(f"{stop}{saved}; resume with: {resume}")
    return stop.exit_status


def _stop_record(trainer, reason: str | None = None) -> dict:
    """results.json's account of the end: why the run stopped (``max_steps``, ``max_epochs``, ``patience``,
    ``diverged`` or the signal's name) and the update of its best validation BLEU (None without validation)."""
    from nmt.early_stopping import EarlyStopping

    early = next(c for c in trainer.callbacks if isinstance(c, EarlyStopping))
    if reason is None:
        if early.stopped_at is not None:
            reason = "patience"
        elif 0 < trainer.max_steps <= trainer.global_step:
            reason = "max_steps"
        else:
            reason = "max_epochs"
    return {"stop_reason": reason, "best_step": early.best_step}


def _wall_time(clock) -> dict:
    """results.json's wall time: the run's, summed over its sessions (see nmt.wallclock), and this session's."""
    return {"wall_time_s": round(clock.total_s(), 1), "session_wall_time_s": round(clock.session_s(), 1),
            "sessions": clock.sessions}


def _report(run_dir: Path, data, result: dict, trainer, best, best_path, clock, ended: dict) -> None:
    import sacrebleu

    atomic.write_text(run_dir / "test.hyp", "".join(h + "\n" for h in result["hypotheses"]))
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
        **ended,
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "finished": True,
        "nonfinite_skipped": trainer.lightning_module.nonfinite_skipped,
        "diverged": False,
        **_wall_time(clock),
    }
    atomic.write_text(run_dir / "results.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    log(
        f"\ntest BLEU {result['bleu']:.2f} ({result['bleu_signature']}), greedy, {result['sentences']} sentences\n"
        f"copy-source baseline BLEU {copy.score:.2f}\n"
        f"{trainer.global_step} updates in {summary['wall_time_s']:.0f} s"
        + (f" over {clock.sessions} sessions" if clock.sessions > 1 else "")
        + (f" (stopped early by --patience; best validation at update {summary['best_step']})"
           if summary["stop_reason"] == "patience" else "") + f"; results in {run_dir}"
    )


# ------------------------------------------------------------------------------------------- console
def log(message: str) -> None:
    """Print on the first process only."""
    if _is_rank_zero():
        print(message, flush=True)


def _warn(message: str) -> None:
    if _is_rank_zero():
        print(message, file=sys.stderr, flush=True)


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank == 0


def _quiet_warnings() -> None:
    """Lightning's messages that do not apply to these runs, and its advertisement, out of the run's output."""
    from nmt.progress import quiet_lightning

    quiet_lightning()
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
    # val/bleu is computed from the hypotheses of all processes, gathered: the same value on every process
    warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\('val/bleu'.*sync_dist=True.*")
    # our loaders are resumable, though not in Lightning's way: the checkpoint holds the batch sampler's position
    # (TranslationData.state_dict), and a mid-epoch resume continues with the next batch not yet trained
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
