"""``python -m nmt.sweep``: train every residual variant × λ × seed once, evaluate them all, write a report.

    python -m nmt.sweep --config configs/multi30k.yaml --skip post_ln,pre_ln,rskip_ln --lambda 1,2 \\
        --seeds 1,2,3 --out study/multi30k [--max-steps N] [--parallel K] [-- other train.py flags]

- **Plan.** Every combination of ``--skip`` and ``--lambda`` that the variant accepts
  (the class's ``lambda_rule``) is trained once per seed; the others are listed with the reason. Identical
  models run once, under the canonical name, as the classes declare (``same_as``): ``xskip`` λ=1 is ``skip``,
  ``xskip_ln`` λ=1 and ``rskip_ln`` λ=1 are ``post_ln``. The plan is printed before anything runs
  (``--dry-run``: only the plan).
- **Fairness.** Every run gets the same ``--config``, the same extra train.py flags and ``--max-steps``:
  the same data, model size, number of updates and seeds. ``DIR/sweep.json`` records them, and a later
  sweep into the same ``--out`` with other training settings is refused, so several invocations with
  different ``--skip``/``--lambda``/``--seeds`` (per-variant seed counts) add to one comparable study. A larger
  ``--patience`` is the one change taken, while no run has stopped on the smaller one: it moves only where runs stop.
- **Runs.** ``train.py`` in a subprocess per run, in ``DIR/runs/<skip>-lambda<λ>-seed<s>`` with its output in
  ``DIR/logs/<name>.log``; one after another, or ``--parallel K`` at once with ``OMP_NUM_THREADS`` =
  cores / K each and, on a GPU machine, each its share of the GPUs (``CUDA_VISIBLE_DEVICES``, see ``gpu_slots``).
- **Interruptions.** A rerun of the same command skips finished runs and diverged runs (a divergence, exit
  status 3, is a result: recorded with its update, never retried), resumes unfinished ones from their
  checkpoint (``train.py --resume``), and starts again from scratch a run that was stopped before its
  first checkpoint. SIGINT/SIGTERM to the sweep stop its runs cleanly (each saves ``last.ckpt``); if the
  sweep is killed outright (SIGKILL), its runs get SIGTERM from the kernel (Linux ``PR_SET_PDEATHSIG``)
  and save likewise, and a new sweep on the same ``--out`` waits until they have exited. ``--until HH:MM`` stops
  it the same way at that time, and starts no run that would end past it (as long as its finished runs took, at the
  speed its runs have shown): on a machine whose files do not outlive a session, no run is half trained and lost.
- **Report.** All runs in ``DIR/runs`` are evaluated (``nmt.evaluate``; scores cached in ``DIR/eval``) and
  ``DIR/report/`` is written by ``nmt.report``: the BLEU table, the smallest detectable difference,
  figures and a README with setup, hardware, wall time and provenance. ``--report-only`` skips training.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from nmt import atomic
from nmt.eval_settings import EvalSettings, ScoringSettings, add_eval_args, add_scoring_args
from nmt.evaluate import read_results
from nmt.report import cli as report_cli
from nmt.report.write import write_report
from nmt.tables import count

ROOT = Path(__file__).resolve().parents[1]

RESERVED = ("--skip", "--lambda", "--seed", "--run-dir", "--resume", "--config", "--max-steps", "--patience",
            "--min-delta", "--patience-from")
"""train.py flags the sweep sets itself; they may not be passed through."""


class SweepError(Exception):
    """A bad sweep command; the message says what is wrong."""


@dataclass(frozen=True)
class Run:
    skip: str
    lam: float
    seed: int
    settings: tuple[tuple[str, str], ...] = ()
    """train.py flags of this run alone, as (flag, value) pairs: a grid point of ``nmt.pilot``, e.g.
    (("--lr", "0.001"),)."""

    @property
    def name(self) -> str:
        skip = self.skip.replace(":", "_").replace("/", "_")
        own = "".join(f"-{flag.lstrip('-')}{value}" for flag, value in self.settings)
        return f"{skip}-lambda{self.lam:g}-seed{self.seed}{own}"


@dataclass
class Plan:
    runs: list[Run]
    invalid: list[tuple[str, float, str]] = field(default_factory=list)  # (skip, λ, why not)
    merged: list[tuple[str, float, str]] = field(default_factory=list)  # (skip, λ, canonical name it runs as)

    def describe(self) -> str:
        combos = sorted({(r.skip, r.lam) for r in self.runs}, key=lambda c: self.runs.index(
            next(r for r in self.runs if (r.skip, r.lam) == c)))
        lines = [f"plan: {count(len(self.runs), 'run')} = "
                 f"{count(len(combos), 'variant/λ combination')} × their seeds"]
        for skip, lam in combos:
            seeds = [r.seed for r in self.runs if (r.skip, r.lam) == (skip, lam)]
            lines.append(f"  run    {skip} λ={lam:g}, seeds {', '.join(map(str, seeds))}")
        for skip, lam, canonical in self.merged:
            lines.append(f"  same   {skip} λ={lam:g} is the same model as {canonical} λ=1: runs once, as {canonical}")
        for skip, lam, why in self.invalid:
            lines.append(f"  skip   {skip} λ={lam:g}: {why}")
        return "\n".join(lines)


def make_plan(skips: list[str], lambdas: list[float], seeds: list[int]) -> Plan:
    """Every valid (skip, λ) once, identical ones merged under the canonical name, times every seed."""
    from nmt.residual import BadLambda, UnknownVariant, residual_class, same_model

    for skip in skips:
        try:
            residual_class(skip)
        except UnknownVariant as e:
            raise SweepError(f"--skip: {e}") from None
    combos: list[tuple[str, float]] = []
    plan = Plan(runs=[])
    for skip in skips:
        for lam in lambdas:
            try:
                canonical = same_model(skip, lam)
            except BadLambda as e:
                plan.invalid.append((skip, lam, e.reason))
                continue
            target = (skip, float(lam))
            if canonical is not None:
                plan.merged.append((skip, float(lam), canonical))
                target = (canonical, 1.0)
            if target not in combos:
                combos.append(target)
    plan.runs = [Run(skip, lam, seed) for seed in seeds for skip, lam in combos]
    return plan


# ------------------------------------------------------------------------------------------- run states
FINISHED, DIVERGED, RESUME, FRESH, RESTART = "finished", "diverged", "resume", "fresh", "restart"



def run_state(run_dir: Path) -> str:
    """What a rerun does with this run directory.

    finished (results.json with ``finished`` and a test score) and diverged (``diverged``): nothing; resume:
    it holds a run with a valid checkpoint; fresh: no run yet; restart: a run stopped before its first
    checkpoint (train.py would refuse to start it again in place, and has nothing to resume from).
    """
    from nmt.checkpoint import newest_valid_checkpoint

    record = read_results(run_dir)
    if record.get("finished") is True and "test" in record:
        return FINISHED
    if record.get("diverged"):
        return DIVERGED
    if not (run_dir / "config.yaml").is_file():
        return FRESH
    ckpt_dir = run_dir / "checkpoints"
    if ckpt_dir.is_dir() and newest_valid_checkpoint(ckpt_dir, ckpt_dir / "last.ckpt")[0] is not None:
        return RESUME
    return RESTART


BUDGET = ("max_steps", "patience", "min_delta", "patience_from")
"""The sweep's own flags that say when every run stops: recorded in sweep.json, passed to every run (fresh or
resumed)."""


def train_command(run: Run, run_dir: Path, state: str, config: str | None, train_args: list[str],
                  budget: dict) -> list[str]:
    """The train.py command of one run; ``budget`` maps BUDGET names to values (None: the preset's)."""
    script = ROOT / "train.py"
    base = [sys.executable, str(script)] if script.is_file() else [
        sys.executable, "-c", "import sys; from nmt.train import main; sys.exit(main())"]
    steps = [a for name, value in budget.items() if value is not None
             for a in ("--" + name.replace("_", "-"), f"{value:g}" if isinstance(value, float) else str(value))]
    if state == RESUME:
        return [*base, "--resume", "--run-dir", str(run_dir), *steps]
    own = [a for pair in run.settings for a in pair]
    return [*base, *(["--config", config] if config else []), *train_args, *own, "--skip", run.skip,
            "--lambda", f"{run.lam:g}", "--seed", str(run.seed), "--run-dir", str(run_dir), *steps]


def _die_with_parent(parent: int) -> None:
    """In the child: get SIGTERM when the sweep dies, even by SIGKILL (Linux), so the run saves and stops."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the sweep died before prctl: nobody will send the signal
        os.kill(os.getpid(), signal.SIGTERM)


# ------------------------------------------------------------------------------------------- the sweep
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _settings(args: argparse.Namespace) -> dict:
    """What every run of the study must share; recorded in DIR/sweep.json."""
    config = Path(args.config) if args.config else None
    return {
        "config": str(config) if config else None,
        "config_sha256": _sha256(config) if config else None,
        "train_args": args.train_args,
        **{name: getattr(args, name) for name in BUDGET},
    }


def _raised_patience(out: Path, before: int | None, asked: int | None, own: bool) -> int | None:
    """The study's ``--patience`` that this invocation raises (returned), or None when it does not raise it.

    Patience decides only when a run stops, never what it learns, so a larger one keeps a study comparable while
    none of its runs has stopped on the smaller one (such a run would end short of where the others go); a study
    with one is refused (SweepError) with the runs named. 0 (never stop) is not "larger"."""
    if own or not before or not asked or asked <= before:
        return None
    stopped = sorted(run.name for run in (out / "runs").glob("*")
                     if run.is_dir() and read_results(run).get("stop_reason") == "patience")
    if stopped:
        raise SweepError(f"{out}: --patience {asked} would raise the study's {before}, but "
                         f"{', '.join(stopped)} already stopped on {before}; its runs would not be comparable: "
                         "use another --out")
    return before


def record_invocation(out: Path, args: argparse.Namespace, argv: list[str]) -> dict:
    """Add this invocation to DIR/sweep.json; refuse (SweepError) one whose shared settings differ from the study's.
    With ``--own-budget`` the BUDGET flags are this invocation's own (recorded with it), not compared. A larger
    ``--patience`` is taken (``_raised_patience``) and recorded as the study's, with the invocation that raised it."""
    path = out / "sweep.json"
    settings = _settings(args)
    own = bool(getattr(args, "own_budget", False))
    record = json.loads(path.read_text()) if path.is_file() else {"settings": settings, "invocations": []}
    raised_from = _raised_patience(out, record["settings"].get("patience"), settings["patience"], own)
    if raised_from is not None:
        record["settings"]["patience"] = settings["patience"]
    # a setting a study recorded before it existed (an older sweep.json) was its default: None
    differs = "; ".join(f"{k}: study has {record['settings'].get(k)!r}, asked {v!r}" for k, v in settings.items()
                        if record["settings"].get(k) != v and not (own and k in BUDGET))
    if differs:
        hint = (" (a smaller budget for some variants: --own-budget)" if not own and all(
            record["settings"].get(k) == v for k, v in settings.items() if k not in BUDGET) else "")
        raise SweepError(f"{out} holds a study trained with other settings ({differs}); its runs would not be "
                         f"comparable: use another --out{hint}")
    _refuse_runs_of_another_budget(out, record, args, own)
    record["invocations"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": argv,
                                  "skip": args.skip, "lambda": args.lambdas, "seeds": args.seeds,
                                  "parallel": args.parallel, "wall_time_s": None,
                                  "budget": {name: getattr(args, name) for name in BUDGET},
                                  **({"own_budget": True} if own else {}),
                                  **({"patience_raised_from": raised_from} if raised_from is not None else {})})
    atomic.write_text(path, json.dumps(record, indent=2) + "\n")
    return record


def _refuse_runs_of_another_budget(out: Path, record: dict, args: argparse.Namespace, own: bool) -> None:
    """Refuse (SweepError) an invocation that plans a run an earlier one planned first with another budget, one of
    the two with ``--own-budget``: whichever trained it first would set its budget, and which one does depends on
    when each was run. A run belongs to the first invocation (in sweep.json) that planned it."""
    def budget_of(invocation: dict | None) -> dict:  # without --own-budget: the study's (its patience maybe raised)
        if invocation is not None and invocation.get("own_budget"):
            return invocation["budget"]
        return {name: record["settings"].get(name) for name in BUDGET}

    owners: dict[str, tuple[int, dict]] = {}
    for number, invocation in enumerate(record["invocations"], 1):
        try:
            planned = make_plan(invocation["skip"], invocation["lambda"], invocation["seeds"]).runs
        except (KeyError, SweepError):  # an older record, or a variant since removed: it owns nothing checkable
            continue
        for run in planned:
            owners.setdefault(run.name, (number, invocation))
    mine = budget_of({"own_budget": True, "budget": {name: getattr(args, name) for name in BUDGET}} if own else None)
    clashes: dict[int, list[str]] = {}
    for run in make_plan(args.skip, args.lambdas, args.seeds).runs:
        number, invocation = owners.get(run.name, (0, None))
        if invocation is not None and (own or invocation.get("own_budget")) and budget_of(invocation) != mine:
            clashes.setdefault(number, []).append(run.name)
    if clashes:
        number, names = min(clashes.items())
        first = record["invocations"][number - 1]
        def flags(budget: dict) -> str:
            return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in budget.items() if v is not None)

        one = len(names) == 1
        raise SweepError(f"{out}: {', '.join(names)} {'is' if one else 'are'} planned by command {number} of "
                         f"sweep.json (--skip {','.join(first['skip'])}) with {flags(budget_of(first))}, and this "
                         f"command asks {flags(mine)}: "
                         f"whichever trains {'it' if one else 'them'} first would set the budget. Leave "
                         f"{'it' if one else 'them'} out of this command's --skip/--lambda/--seeds: "
                         f"{'it trains' if one else 'they train'} with that command")


def finish_invocation(out: Path, started: float) -> None:
    """Record the wall time of the invocation that ``record_invocation`` added last."""
    path = out / "sweep.json"
    record = json.loads(path.read_text())
    record["invocations"][-1]["wall_time_s"] = round(time.time() - started, 1)
    atomic.write_text(path, json.dumps(record, indent=2) + "\n")


@contextlib.contextmanager
def study_lock(out: Path) -> Iterator[int]:
    """Hold DIR/.sweep.lock while the block runs (its descriptor is passed on to every run, so a killed sweep's runs
    hold it until they exit); let go at the block's end, so that one process can run several sweeps in turn."""
    fd = os.open(out / ".sweep.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting: another sweep, or runs of a sweep that was stopped, still use {out} ...", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


class Stop:
    """SIGINT/SIGTERM to the sweep, or its ``--until`` time: no new runs; running ones get SIGTERM (they save and
    stop). The time reads as SIGALRM (``stop_name`` says ``--until``)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.procs: list[subprocess.Popen] = []

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        print(f"\n{stop_name(signum)}: stopping the running runs (each saves its checkpoint) ...", flush=True)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)


NOT_STARTED = "not started"  # the outcome of a run that --until leaves for the next sweep


def stop_name(signum: int) -> str:
    """What stopped a sweep: a signal's name, or ``--until`` (SIGALRM: the sweep's own clock)."""
    return "--until" if signum == signal.SIGALRM else signal.Signals(signum).name


def parse_until(text: str) -> float:
    """``--until``: HH:MM (the next time the clock shows it, today or tomorrow) or an ISO date and time, as a Unix
    time."""
    try:
        if len(text) <= 5:
            hour, minute = (int(x) for x in text.split(":"))
            now = datetime.datetime.now()
            when = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
            return (when + datetime.timedelta(days=1 if when <= now else 0)).timestamp()
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HH:MM or an ISO date and time, got {text!r}") from None


def _median(values: list[float]) -> float | None:
    values = sorted(values)
    return values[len(values) // 2] if values else None


def seconds_per_update(runs_dir: Path) -> float | None:
    """The median wall time per update of the runs in ``runs_dir`` so far (their results.json, every session,
    validation included), None before any run has stopped once."""
    return _median([r["wall_time_s"] / r["steps"] for run in runs_dir.glob("*")
                    if (r := read_results(run)).get("steps") and r.get("wall_time_s")])


def expected_updates(runs_dir: Path, max_steps: int | None) -> int | None:
    """How many updates a run of this folder is expected to train: the median of its finished runs (most stop by
    patience before ``max_steps``), at most ``max_steps``; None (not known) before any has finished."""
    typical = _median([r["steps"] for run in runs_dir.glob("*")
                       if (r := read_results(run)).get("finished") is True and r.get("steps")])
    return None if typical is None else min(int(typical), max_steps or int(typical))


def ends_in_time(run_dir: Path, state: str, updates: int | None, rate: float | None, until: float) -> str | None:
    """Why a run should not start under ``--until`` (None: start it): past the time, or the ``updates`` it is
    expected to train (less those it has), at ``rate`` seconds each, would end past it. Unknown rate or length:
    start it."""
    now = time.time()
    if now >= until:
        return "the --until time has come"
    if rate is None or updates is None:
        return None
    left = max(0, updates - (read_results(run_dir).get("steps", 0) if state == RESUME else 0))
    if now + left * rate <= until:
        return None
    return (f"the ≈ {left:,} updates it is expected to train take ≈ {left * rate / 60:.0f} min at {rate:.2f} s an "
            f"update (this folder's runs so far), past --until {time.strftime('%H:%M', time.localtime(until))}")


def gpu_slots(parallel: int, environ=os.environ, count: int | None = None) -> list[str | None]:
    """The GPUs of each of the ``--parallel`` slots, as ``CUDA_VISIBLE_DEVICES`` values (None: no GPU).

    The visible GPUs (``CUDA_VISIBLE_DEVICES`` if set, else all ``count``) are dealt out: with K slots and
    at least K GPUs, slot i gets every K-th GPU from the i-th (a run may use its share with ``--devices``);
    with fewer GPUs than slots, runs share them round-robin.
    """
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    else:
        if count is None:
            try:
                import torch

                count = torch.cuda.device_count()
            except Exception:  # no usable CUDA: the runs train on the CPU
                count = 0
        ids = [str(i) for i in range(count)]
    if not ids:
        return [None] * parallel
    if parallel <= len(ids):
        return [",".join(ids[i::parallel]) for i in range(parallel)]
    return [ids[i % len(ids)] for i in range(parallel)]


def train_all(plan: Plan, args: argparse.Namespace, out: Path, lock_fd: int) -> tuple[dict, int | None]:
    """Run what the plan still needs; returns {run name: outcome} and the signal that stopped the sweep."""
    runs_dir, logs = out / "runs", out / "logs"
    runs_dir.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    todo, outcome = deque(), {}
    for run in plan.runs:
        run_dir = runs_dir / run.name
        state = run_state(run_dir)
        if state == FINISHED:
            outcome[run.name] = "finished earlier"
        elif state == DIVERGED:
            outcome[run.name] = f"diverged earlier at update {read_results(run_dir).get('diverged_at_step', '?')}"
        else:
            todo.append((run, state))
    done = len(plan.runs) - len(todo)
    print(f"{done} of {len(plan.runs)} runs already done (finished or diverged); {len(todo)} to train "
          f"({sum(s == RESUME for _, s in todo)} resumed from their checkpoint)", flush=True)
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // args.parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    gpus = gpu_slots(args.parallel)
    free_slots = list(range(args.parallel))
    stop = Stop()
    until = getattr(args, "until", None)
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    running: dict[subprocess.Popen, tuple[Run, float, int]] = {}
    try:
        while (todo and stop.signum is None) or running:
            if until is not None and time.time() >= until and running:
                stop(signal.SIGALRM, None)
            while todo and len(running) < args.parallel and stop.signum is None:
                run, state = todo.popleft()
                run_dir = runs_dir / run.name
                late = until is not None and ends_in_time(  # speed and length as the runs so far show them
                    run_dir, state, expected_updates(runs_dir, args.max_steps), seconds_per_update(runs_dir), until)
                if late:
                    outcome[run.name] = f"{NOT_STARTED}: {late}"
                    print(f"[{time.strftime('%H:%M:%S')}] {run.name}: {outcome[run.name]}", flush=True)
                    continue
                if state == RESTART:
                    shutil.rmtree(run_dir)
                    print(f"{run.name}: stopped before its first checkpoint; starting it again from scratch",
                          flush=True)
                command = train_command(run, run_dir, RESUME if state == RESUME else FRESH, args.config,
                                        args.train_args, {name: getattr(args, name) for name in BUDGET})
                with open(logs / f"{run.name}.log", "a") as log:
                    log.write(f"\n$ {' '.join(command)}\n")
                    log.flush()
                    slot = free_slots.pop(0)
                    run_env = env if gpus[slot] is None else {**env, "CUDA_VISIBLE_DEVICES": gpus[slot]}
                    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=run_env,
                                            pass_fds=(lock_fd,), start_new_session=True,
                                            preexec_fn=partial(_die_with_parent, os.getpid()))
                stop.procs.append(proc)
                running[proc] = (run, time.time(), slot)
                verb = "resuming" if state == RESUME else "training"
                where = f", GPU {gpus[slot]}" if gpus[slot] is not None else ""
                print(f"[{time.strftime('%H:%M:%S')}] {verb} {run.name} ({threads} threads{where})", flush=True)
            for proc in [p for p in running if p.poll() is not None]:
                run, began, slot = running.pop(proc)
                free_slots.append(slot)
                outcome[run.name] = _outcome(run, runs_dir / run.name, proc.returncode)
                print(f"[{time.strftime('%H:%M:%S')}] {run.name}: {outcome[run.name]} ({time.time() - began:.0f} s)",
                      flush=True)
            time.sleep(0.2)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if stop.signum is None and any(what.startswith(NOT_STARTED) for what in outcome.values()):
        stop.signum = signal.SIGALRM  # runs left for the next sweep by --until: as if its time had stopped it
    return outcome, stop.signum


def _outcome(run: Run, run_dir: Path, status: int) -> str:
    record = read_results(run_dir)
    if status == 0:
        return f"finished, test BLEU {record.get('test', {}).get('bleu', '?')} (greedy)"
    if status == 3 or record.get("diverged"):
        return f"diverged at update {record.get('diverged_at_step', '?')} (a result: recorded, not retried)"
    if status > 128:
        return f"stopped by {signal.Signals(status - 128).name}; the next sweep resumes it"
    return f"failed with exit status {status} (see logs/{run.name}.log); the next sweep tries it again"


# ------------------------------------------------------------------------------------------- command line
def comma_list(kind):
    def parse(text: str):
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
    return parse


def add_run_args(p: argparse.ArgumentParser) -> None:
    """How a study's runs are trained, the same flags for the sweep and the pilot (``nmt.pilot``): the shared
    preset, the budget every run gets (BUDGET), and how many run at once."""
    p.add_argument("--config", help="train.py --config preset shared by every run")
    p.add_argument("--max-steps", type=int, help="updates per run (default: the preset's)")
    p.add_argument("--patience", type=int, help="train.py --patience for every run: stop a run after N validations "
                   "without a new best validation BLEU (default: the preset's)")
    p.add_argument("--min-delta", type=float, help="train.py --min-delta for every run (default: the preset's)")
    p.add_argument("--patience-from", type=int, metavar="U", help="train.py --patience-from for every run: patience "
                   "counts the validations from update U on (default: the preset's)")
    p.add_argument("--parallel", type=int, default=1, metavar="K",
                   help="runs at once, each with cores/K threads and its share of the GPUs (default: 1)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads per run, and of the sweep's own evaluation and diagnoses once its runs are trained "
                   "(default: cores / --parallel per run, one per core for the evaluation)")
    p.add_argument("--until", type=parse_until, metavar="HH:MM",
                   help="stop at this time (HH:MM, the next time the clock shows it, or an ISO date and time): the "
                   "running runs save their checkpoint and stop, and a run starts only if it would end before it "
                   "(the median length of this folder's finished runs, at most --max-steps, at their median speed; "
                   "before any has finished, runs start); exit status 142, and the next sweep goes on (for machines "
                   "whose files do not outlive a session)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nmt.sweep", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every skip variant × λ × seed with the same data and number of updates, evaluate them "
        "and write a report. Flags after -- go to every train.py run.",
        epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--skip", type=comma_list(str), required=True,
                   help="comma-separated variants (post_ln,rskip_ln,...)")
    p.add_argument("--lambda", dest="lambdas", type=comma_list(float), default=[1.0],
                   help="comma-separated λ values; each variant runs with those it accepts (default: 1)")
    p.add_argument("--seeds", type=comma_list(int), default=[1], help="comma-separated seeds (default: 1)")
    p.add_argument("--out", type=Path, required=True, help="the study folder: runs/, logs/, eval/, report/")
    add_run_args(p)
    p.add_argument("--own-budget", action="store_true",
                   help="this invocation's runs train with their own --max-steps, --patience, --min-delta and "
                   "--patience-from instead of the study's (e.g. a cut budget for the one-seed variants when compute "
                   "is short); recorded in sweep.json and said in the report. A run planned first by an invocation "
                   "with another budget is refused")
    p.add_argument("--report-only", action="store_true", help="train nothing: evaluate the runs there and report")
    evaluation = p.add_argument_group("evaluation (as evaluate.py)")
    add_scoring_args(evaluation)
    add_eval_args(evaluation, with_average_last=True)
    report_cli.add_also_average_arg(evaluation)
    report_cli.add_pilot_arg(evaluation)
    report_cli.add_why_arg(evaluation)
    return p


SWEEP_FLAGS = (" (use the sweep's own --skip, --lambda, --seeds, --config, --out, --max-steps, --patience, "
               "--min-delta, --patience-from)")


def parse_args(argv: list[str], parser: argparse.ArgumentParser | None = None, reserved: tuple[str, ...] = RESERVED,
               who: str = "sweep", hint: str = SWEEP_FLAGS) -> argparse.Namespace:
    """The tool's own flags (before ``--``, by ``parser``: the sweep's by default) and the train.py flags after it
    (``args.train_args``), checked: none of ``reserved``, ``--parallel`` ≥ 1, the ``--config`` file exists."""
    own, train_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = (parser or build_parser()).parse_args(own)
    args.train_args = train_args
    for flag in train_args:
        if flag.split("=")[0] in reserved:
            raise SweepError(f"{flag.split('=')[0]} after --: the {who} sets it for every run{hint}")
    if args.parallel < 1:
        raise SweepError("--parallel must be ≥ 1")
    if args.config and not Path(args.config).is_file():
        raise SweepError(f"--config {args.config}: file not found")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        plan = make_plan(args.skip, args.lambdas, args.seeds)
        average, chosen_by = report_cli.also_average_last(args), report_cli.pilots(args)
    except (SweepError, report_cli.FlagError) as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    print(plan.describe(), flush=True)
    if args.dry_run:
        return 0
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with study_lock(out) as lock_fd:
        if not args.report_only:  # a report of the runs there, whatever trained them
            try:
                record_invocation(out, args, argv)
            except SweepError as e:
                print(f"sweep: error: {e}", file=sys.stderr)
                return 2
        signum, failed = None, []
        if not args.report_only:
            outcome, signum = train_all(plan, args, out, lock_fd)
            failed = [name for name, what in outcome.items() if what.startswith(("failed", "stopped"))]
            if signum is not None:
                finish_invocation(out, started)
                print(f"sweep stopped by {stop_name(signum)}; rerun the same command to continue",
                      flush=True)
                return 128 + signum
            if failed:
                print(f"{len(failed)} runs failed: {', '.join(failed)}; the report leaves them out, the next sweep "
                      "tries them again", file=sys.stderr)
        if not args.report_only:
            finish_invocation(out, started)
        report_cli.use_threads(args.threads)  # the evaluation shares the machine as the runs did
        folder = write_report(out, EvalSettings.from_args(args), ScoringSettings.from_args(args),
                              report_cli.why_settings(args), report_cli.why_only(args), average, chosen_by)
        print(f"report written to {folder}/", flush=True)
        return 1 if not args.report_only and failed else 0


if __name__ == "__main__":
    sys.exit(main())
