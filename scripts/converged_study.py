"""The converged study of issue #14 as one resumable command: grid → long run → budget → study → held-out
sets → second long run → report.

    python scripts/converged_study.py --data data/multi30k-en-de --out study --parallel 2 --threads 1

Rerun the same command until it prints "converged study: done": every stage resumes where it stopped (the runs
from their checkpoints, the translations by skipping the files already complete), and a stage whose outcome is
on disk is not redone. The stages, with the rules fixed before the runs were seen
(docs/study-multi30k-converged/plan.md):

1. **grid** (``OUT/pilot-grid``): post_ln, seed 1, ``--grid-steps`` updates, peak learning rate ``--grid-lr``
   {5e-4, 1e-3, 2e-3} × warm-up ``--grid-warmup`` {200, 500}, validation every ``--grid-val-every``. The choice is
   the highest validation BLEU; a choice on the grid's lowest or highest learning rate extends it once that way
   (half or double, both warm-ups).
2. **long run** (``OUT/pilot-long``): post_ln at the chosen setting, alone with every thread of the study's slots,
   validation every ``--val-every``, ``--patience 17``, at most ``--long-steps`` updates.
3. **budget** (``OUT/budget.json``): ``nmt.pilot_summary.study_budget`` on post_ln's long run: T (its plateau),
   P = 4, U, and the one-seed runs' cut when 17 runs of T updates exceed ``--capacity``.
4. **study** (``OUT/multi30k-converged``): four ``nmt.sweep`` invocations — post_ln, pre_ln, rskip_ln λ=2 and
   xskip_ln λ=2 with seeds 1, 2, 3; skip and xskip λ ∈ {0.5, 2} with seed 1; xskip_ln λ=0.5 with seed 1; rskip_ln
   λ=3 with seed 1 (the last three with ``--own-budget`` when cut; no run in two of them) — saving a checkpoint
   every ``--val-every`` updates (the last 5 kept) and reporting test BLEU (beam 4, α 0.6) on best.ckpt and on the
   average of the last 5.
5. **held-out** (``OUT/multi30k-converged/heldout/<run>/<test set>.de``): every study run's best.ckpt translates
   each source in ``--heldout`` (beam 4, α 0.6, detokenized as evaluate.py scores it).
6. **second long run** (``OUT/pilot-long``): rskip_ln λ=2 as post_ln's long run. It decides nothing (the budget is
   post_ln's), so it comes last: a session's hours go first to study runs that end within them.
7. **report**: the study's report written again (``--report-only``), with both long runs' curves.
8. **publish** (``--publish DIR``, the issue's ``docs/study-multi30k-converged``): the report's files copied into DIR
   and the held-out translations into ``DIR/heldout/<run>/<test set>.de``, where the issue asks for them (``publish``).

``--state DIR`` keeps a light copy of OUT in DIR (no checkpoints: a few MB, for git) after every stage and restores
from it first: on machines whose files do not outlive a session, commit DIR and the next session goes on from it
(a run counts once it has been scored and has translated the held-out sets; one cut short is trained again).
``--until HH:MM`` stops the runs at that time and starts none that would end after it, then scores, translates and
keeps the runs that finished (exit status 142: rerun later to go on): a session's runs end inside it. A study
invocation that leaves runs for later before the time has come does not end the session's work: the next
invocations' runs (the one-seed runs' cut budget is shorter) may still fit before it, and are tried first.
``--setting LR,WU`` skips the grid (its choice made and documented already, its runs not at hand).
``--dry-run`` prints the commands and stops; once OUT/budget.json (or the ``--state`` copy's) holds T, P, U and the
cut, they are the exact commands the study runs. Flags after ``--`` go to every train.py run after the script's
own. A check of the whole chain on the toy corpus with a tiny budget (about 40 minutes on one core; plan.md)::

    python scripts/converged_study.py --data toy --out /tmp/tiny --parallel 1 --threads 1 --grid-lr 1e-3,2e-3,4e-3 \
        --grid-warmup 20,50 --grid-steps 40 --grid-val-every 20 --long-steps 300 --val-every 30 --plateau-gain 50 \
        --capacity 1500 --heldout A.en B.en -- --arch tiny --vocab-size 2000

On one GPU: ``--parallel 8 --threads 2`` (the runs share the GPU; bf16 is train.py's default there) and a
``--capacity`` measured on that GPU; its report names the GPU, and its runs are not mixed into a CPU study's folder.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from nmt import atomic, pilot, sweep, translate
from nmt.evaluate import read_results
from nmt.pilot_summary import grid_edge, study_budget, summarise
from nmt.tables import markdown_table

GRID_LR = [5e-4, 1e-3, 2e-3]
GRID_WARMUP = [200, 500]
BASELINE_LONG, SECOND_LONG = ("post_ln", "1"), ("rskip_ln", "2")  # --skip, --lambda of the two long runs
UNTIL_STATUS = 128 + signal.SIGALRM  # a sweep or pilot stopped by its --until (nmt.sweep.stop_name)
PATIENCE_LONG = 17
"""Validations without a new best before a long run stops: the plateau rule needs a run to reach 4/3 of its best
update, so 17 × 60 updates cover a best up to 3,000 of the 4,000 (10, the first choice, one up to 1,800: plan.md)."""
PATIENCE = 4
PLATEAU_GAIN = 0.3
# (--skip, --lambda, --seeds, cut when short of compute): 12 runs of three seeds, then the five one-seed runs;
# no run in two invocations (xskip_ln λ=2 and λ=1 = post_ln are three-seed runs): an invocation that goes on while
# an earlier one has runs left for later (--until) would train them at its own, cut budget
INVOCATIONS = [("post_ln,pre_ln,rskip_ln,xskip_ln", "1,2", "1,2,3", False),
               ("skip,xskip", "0.5,1,2", "1", True),
               ("xskip_ln", "0.5", "1", True),
               ("rskip_ln", "3", "1", True)]
FULL_RUNS, CUT_RUNS = 12, 5
AVERAGE_LAST = 5
CAPACITY = 18_782
"""Updates that 12 hours of the 2-core CPU train: two one-thread runs at a time at 4.6 s an update (plan.md)."""


class StageError(Exception):
    """A stage cannot go on (its message says why and what to do); ``status``: the script's exit status."""

    status = 2


class StoppedAtUntil(StageError):
    """A stage stopped at ``--until``: the next run of the same command goes on from there."""

    status = UNTIL_STATUS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/converged_study.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", default="data/multi30k-en-de", help="the corpus (default: data/multi30k-en-de)")
    p.add_argument("--out", type=Path, default=Path("study"), help="the study's root folder (default: study)")
    p.add_argument("--config", default="configs/multi30k.yaml", help="the preset of every run")
    p.add_argument("--heldout", nargs="*", default=None,
                   help="sources to translate with every study run (default: DATA/extra/*.en)")
    p.add_argument("--parallel", type=int, default=2, help="runs at once (default: 2)")
    p.add_argument("--threads", type=int, default=1, help="threads per run (default: 1)")
    p.add_argument("--grid-lr", type=sweep.comma_list(float), default=GRID_LR,
                   help="the grid's peak learning rates (default: 5e-4,1e-3,2e-3)")
    p.add_argument("--grid-warmup", type=sweep.comma_list(int), default=GRID_WARMUP,
                   help="the grid's warm-ups (default: 200,500)")
    p.add_argument("--setting", metavar="LR,WU",
                   help="skip the grid: train the long runs and the study at this peak learning rate and warm-up "
                   "(a grid's documented choice whose runs are not at hand; the report then shows no grid)")
    p.add_argument("--grid-steps", type=int, default=800, help="updates of a grid run (default: 800)")
    p.add_argument("--grid-val-every", type=int, default=100, help="validation interval of the grid (default: 100)")
    p.add_argument("--long-steps", type=int, default=4000, help="at most this many updates of a long run (4000)")
    p.add_argument("--val-every", type=int, default=60,
                   help="validation and checkpoint interval of the long runs and the study (default: 60)")
    p.add_argument("--plateau-gain", type=float, default=PLATEAU_GAIN,
                   help="the plateau rule's gain over the last quarter of post_ln's long run (default: 0.3)")
    p.add_argument("--capacity", type=int, default=CAPACITY,
                   help=f"updates the study's hours allow, all runs together (default: {CAPACITY:,}, 12 h of CPU)")
    p.add_argument("--state", type=Path,
                   help="keep a light copy of OUT here (every file but checkpoints and TensorBoard logs: a few MB, "
                   "for git), written after every stage; files missing from OUT are restored from it first, so that "
                   "a study goes on from a fresh clone (runs in it count only once scored and translated)")
    p.add_argument("--until", type=until_time, metavar="HH:MM",
                   help="stop the runs at this time (HH:MM or an ISO date and time) and start none that would end "
                   "after it (nmt.sweep --until); finished runs are still scored, translated and kept, so leave a "
                   "few minutes for that before a session's end; exit status 142, and the same command goes on")
    p.add_argument("--publish", type=Path, metavar="DIR",
                   help="once the study is done, copy its report into DIR and the held-out translations into "
                   "DIR/heldout/<run>/ (each file written whole; DIR's other files are left alone)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    return p


def until_time(text: str) -> str:
    """``--until`` as an ISO date and time, so that every stage reads the same moment (HH:MM: the next one)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(sweep.parse_until(text)))


def until(args) -> list[str]:
    return ["--until", args.until] if args.until else []


def grid_command(args, lrs: list[float], train: list[str]) -> list[str]:
    return ["--config", args.config, "--parallel", str(args.parallel), "--threads", str(args.threads), *until(args),
            "--skip", "post_ln", "--lr", ",".join(f"{x:g}" for x in lrs),
            "--warmup", ",".join(map(str, args.grid_warmup)), "--max-steps", str(args.grid_steps),
            "--plateau-gain", str(args.plateau_gain),
            "--out", str(args.out / "pilot-grid"), "--", "--data", args.data,
            "--val-every", str(args.grid_val_every), *train]


def extended(lrs: list[float], edge: list[str]) -> list[float]:
    """The grid's learning rates one step beyond the edge its choice sits on (half the lowest or double the highest);
    ``lrs`` as they are when the choice is inside them (a warm-up on the edge is not extended: plan.md)."""
    if any(e.startswith("lowest peak learning rate") for e in edge):
        return [min(lrs) / 2, *lrs]
    if any(e.startswith("highest peak learning rate") for e in edge):
        return [*lrs, max(lrs) * 2]
    return lrs


def long_command(args, lr: str, warmup: str, train: list[str], which: tuple[str, str]) -> list[str]:
    """One long run (``which``: --skip, --lambda) alone, with the threads of all the study's slots."""
    return ["--config", args.config, "--parallel", "1", "--threads", str(args.parallel * args.threads), *until(args),
            "--skip", which[0], "--lambda", which[1], "--lr", lr, "--warmup", warmup,
            "--max-steps", str(args.long_steps), "--patience", str(PATIENCE_LONG),
            "--plateau-gain", str(args.plateau_gain), "--out", str(args.out / "pilot-long"),
            "--", "--data", args.data, "--val-every", str(args.val_every), *train]


def study_commands(args, lr: str, warmup: str, budget: dict, train: list[str]) -> list[list[str]]:
    """The study's nmt.sweep invocations at peak learning rate ``lr`` and ``warmup`` (as written on the command
    line) for ``budget`` (study_budget's dict)."""
    out = []
    for skip, lambdas, seeds, cuttable in INVOCATIONS:
        steps = ["--max-steps", str(budget["max_steps"]), "--patience", str(budget["patience"]),
                 "--patience-from", str(budget["patience_from"])]
        if cuttable and budget.get("cut_max_steps"):
            steps = ["--own-budget", "--max-steps", str(budget["cut_max_steps"]), *steps[2:]]
        out.append(["--config", args.config, "--out", str(args.out / "multi30k-converged"),
                    "--parallel", str(args.parallel), "--threads", str(args.threads), *until(args), *steps,
                    "--also-average-last", str(AVERAGE_LAST),
                    "--pilot", *([] if args.setting else [str(args.out / "pilot-grid")]), str(args.out / "pilot-long"),
                    "--skip", skip, "--lambda", lambdas, "--seeds", seeds,
                    "--", "--data", args.data, "--lr", lr, "--warmup", warmup,
                    "--val-every", str(args.val_every), "--save-every", str(args.val_every),
                    "--keep-last", str(AVERAGE_LAST), *train])
    return out


def baseline_run(folder: Path, gain: float, name: str = "post_ln") -> dict:
    """The pilot's post_ln row (summarise), with its folder named in the error when there is none."""
    rows = [r for r in summarise(folder, gain, name)["runs"] if r["skip"] == name]
    if not rows:
        raise StageError(f"{folder}: no {name} run")
    return rows[0]


def heldout_sources(args) -> list[Path]:
    sources = [Path(s) for s in args.heldout] if args.heldout is not None else sorted(
        (Path(args.data) / "extra").glob("*.en"))
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        raise StageError(f"--heldout: no such file: {', '.join(missing)}")
    return sources


def line_count(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def translate_heldout(args, sources: list[Path]) -> int:
    """Every ended study run's best.ckpt (finished or diverged: a run stopped to be resumed has a best.ckpt that may
    change) translates ``sources``; files already complete (as many lines as their source) and newer than best.ckpt
    are kept. Returns the number of runs translated now."""
    import torch

    torch.set_num_threads(max(1, args.threads * args.parallel))
    study = args.out / "multi30k-converged"
    done = 0
    for run in sorted((study / "runs").iterdir()):
        record, best = read_results(run), run / "checkpoints" / "best.ckpt"
        if not (record.get("finished") is True or record.get("diverged")) or not best.is_file():
            continue  # still training or stopped to be resumed, or diverged before its first validation
        folder = study / "heldout" / run.name
        wanted = [folder / f"{s.stem}.de" for s in sources]
        if all(w.is_file() and line_count(w) == line_count(s) and w.stat().st_mtime >= best.stat().st_mtime
               for w, s in zip(wanted, sources)):
            continue
        print(f"[held-out] {run.name}", flush=True)
        if translate.main([str(run), "--input", *map(str, sources), "--output", str(folder)]) != 0:
            raise StageError(f"{run}: translating the held-out sources failed")
        done += 1
    return done


HEAVY_PARTS = {"checkpoints", "tb", "report"}
"""Folders a light copy leaves out: checkpoints (hundreds of MB a run), TensorBoard logs, generated reports."""
HEAVY_NAMES = {".sweep.lock", "spm.model"}


def run_is_kept(run: Path, study: Path, sources: list[Path]) -> bool:
    """Whether a light copy keeps ``run`` (a folder in some ``runs/``): once it has ended, and for a run of the
    ``study`` folder once it has been scored (best.ckpt, and the average of the last checkpoints when it has enough
    of them) and has translated every held-out source — what needs its checkpoints, which a light copy does not
    keep. A run not kept is trained again from the start by a later session that has only the light copy."""
    record = run / "results.json"
    if not record.is_file():
        return False
    if run.parent.parent != study or json.loads(record.read_text()).get("diverged"):
        return True
    heldout = study / "heldout" / run.name
    averaged = (len(list((run / "checkpoints").glob("step-*.ckpt"))) < AVERAGE_LAST  # too few to average
                or (study / "eval" / f"{run.name}.avg{AVERAGE_LAST}.json").is_file())
    return ((study / "eval" / f"{run.name}.json").is_file() and averaged
            and all((heldout / f"{s.stem}.de").is_file() for s in sources))


def light_files(out: Path, study: Path, sources: list[Path]) -> list[Path]:
    """The files of ``out`` that a light copy keeps, relative to ``out``."""
    kept = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if (not path.is_file() or HEAVY_PARTS & set(rel.parts) or path.suffix in (".ckpt", ".tmp")
                or path.name in HEAVY_NAMES):
            continue
        if "runs" in rel.parts[:-2]:
            i = rel.parts.index("runs")
            if not run_is_kept(out.joinpath(*rel.parts[: i + 2]), study, sources):
                continue
        kept.append(rel)
    return kept


def copy_into_place(data: bytes, target: Path) -> None:
    """``data`` written to ``target`` whole or not at all, its folder made first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replacing(target) as tmp:
        tmp.write_bytes(data)


def write_changed(files: dict, root: Path) -> int:
    """Write each of ``files`` ({path relative to ``root``: its bytes}) whose file under ``root`` differs, whole;
    returns how many were written."""
    changed = 0
    for rel, data in files.items():
        target = root / rel
        if target.is_file() and target.read_bytes() == data:
            continue
        copy_into_place(data, target)
        changed += 1
    return changed


def save_state(out: Path, state: Path, study: Path, sources: list[Path]) -> int:
    """Copy the light files of ``out`` into ``state`` (each written whole); returns how many changed."""
    return write_changed({rel: (out / rel).read_bytes() for rel in light_files(out, study, sources)}, state)


def restore_state(state: Path, out: Path) -> int:
    """Copy the files of ``state`` that ``out`` lacks into it; returns how many."""
    restored = 0
    for path in sorted(state.rglob("*")) if state.is_dir() else []:
        target = out / path.relative_to(state)
        if path.is_file() and not target.exists():
            copy_into_place(path.read_bytes(), target)
            restored += 1
    return restored


PUBLISHED = ".published.json"
"""The list of files ``publish`` wrote into its folder: the next publish removes those the study no longer has."""


def heldout_table(study: Path, sources: list[Path]) -> str:
    """``heldout/README.md``: which run translated which held-out source, and whether each output has as many lines
    as its source (the issue's check), one row per ended run of the study."""
    runs = sorted(r.name for r in (study / "runs").iterdir() if (r / "results.json").is_file()) \
        if (study / "runs").is_dir() else []
    wanted = {s.stem: line_count(s) for s in sources}
    rows = []
    for run in runs:
        cells = []
        for stem, lines in wanted.items():
            out = study / "heldout" / run / f"{stem}.de"
            got = line_count(out) if out.is_file() else None
            cells.append("missing" if got is None else f"{got:,}" + ("" if got == lines else f" (**not {lines:,}**)"))
        rows.append([run, *cells])
    complete = all(c == f"{n:,}" for row in rows for c, n in zip(row[1:], wanted.values()))
    head = ["run", *[f"{stem}.de ({n:,} source lines)" for stem, n in wanted.items()]]
    return "\n".join([
        "# Held-out translations", "",
        "Every study run's `best.ckpt` translated each held-out source (beam 4, α 0.6; detokenized text, as "
        "evaluate.py scores it: `python -m nmt.translate RUN --input SOURCES --output heldout/RUN`). The references "
        "are kept elsewhere; nothing here was tuned on them.", "",
        markdown_table(head, rows), "",
        ("Every run translated every source, each output as many lines as its source." if complete and rows else
         "**Not complete**: the cells in bold or missing above."), ""])


def publish(study: Path, target: Path, sources: list[Path]) -> int:
    """The finished study's record copied where readers find it: every file of ``study/report/`` into ``target``, and
    ``study/heldout/<run>/<test set>.de`` into ``target/heldout/`` with a ``README.md`` of their line counts against
    the ``sources`` (``heldout_table``), each written whole. ``target``'s other files (the plan, the ``--state``
    copy) are left alone; a file published before that the study no longer has (a figure the report dropped, say)
    is removed (``target/.published.json`` lists what was published). Returns how many files changed."""
    if not (study / "report" / "README.md").is_file():
        raise StageError(f"publish: {study / 'report'} holds no report (the report stage writes it)")
    files = {}
    for base, prefix in ((study / "report", ""), (study / "heldout", "heldout/")):
        for path in sorted(base.rglob("*")) if base.is_dir() else []:
            if path.is_file():
                files[prefix + path.relative_to(base).as_posix()] = path.read_bytes()
    files["heldout/README.md"] = heldout_table(study, sources).encode()
    manifest = target / PUBLISHED
    before = set(json.loads(manifest.read_text())) if manifest.is_file() else set()
    changed = write_changed(files, target)
    for rel in sorted(before - set(files)):
        if (target / rel).is_file():
            (target / rel).unlink()
            changed += 1
    atomic.write_text(manifest, json.dumps(sorted(files), indent=1) + "\n")
    return changed


def with_flags(command: list[str], *flags: str) -> list[str]:
    """A study sweep's ``command`` with more of nmt.sweep's own ``flags`` (those it lacks), before its ``--``."""
    dashes = command.index("--")
    return [*command[:dashes], *(f for f in flags if f not in command[:dashes]), *command[dashes:]]


def report_only(command: list[str], *flags: str) -> list[str]:
    """A study sweep's ``command`` that trains nothing: it evaluates the runs there and writes the report."""
    return with_flags(command, "--report-only", *flags)


def run_stage(name: str, main, argv: list[str], dry_run: bool) -> None:
    print(f"[{name}] python -m {main.__module__} {' '.join(argv)}", flush=True)
    if dry_run:
        return
    status = main(argv)
    if status == UNTIL_STATUS:
        raise StoppedAtUntil(f"{name}: stopped at --until {argv[argv.index('--until') + 1]}; rerun this command "
                             "(with a later --until) to continue")
    if status == 2:  # refused: its own error says why, and rerunning the same command would be refused again
        raise StageError(f"{name}: refused (exit status 2, its error above)")
    if status != 0:
        raise StageError(f"{name}: exit status {status}; rerun this command to continue")


def run_study(commands: list[list[str]], until: str | None, dry_run: bool, after_sweep, run_sweep=sweep.main) -> None:
    """The study's sweeps (``commands``, nmt.sweep invocations, run by ``run_sweep``) in order, ``after_sweep()``
    after each. One stopped by ``until`` has its finished runs scored (``--report-only --no-why``); if its time has
    come, the study stops there, else the sweep only left runs that would end after it, and the next invocations go
    on (their runs may be shorter), without the report's Why section, whose variants' runs are not all done; the study
    stops after them (StoppedAtUntil)."""
    left = None
    for command in commands:
        if left is not None:
            command = with_flags(command, "--no-why")
        try:
            run_stage("study", run_sweep, command, dry_run)
        except StoppedAtUntil as e:  # score the runs that finished, so that the light copy keeps them
            run_sweep(report_only(command, "--no-why"))
            if time.time() >= sweep.parse_until(until):
                raise
            left = left or e
        finally:
            after_sweep()
    if left is not None:
        raise left


def choose_setting(args, train: list[str]) -> tuple[str, str]:
    """The grid stage: (peak learning rate, warm-up) as written on a command line, read off the grid's runs after
    extending it one step when its choice is on the learning-rate edge (or ``--setting``, without a grid)."""
    if args.setting:
        try:
            lr, warmup = args.setting.split(",")
            return f"{float(lr):g}", str(int(warmup))
        except ValueError:
            raise StageError(f"--setting {args.setting}: expected a peak learning rate and a warm-up, e.g. 1e-3,500") \
                from None
    lrs = list(args.grid_lr)
    run_stage("grid", pilot.main, grid_command(args, lrs, train), args.dry_run)
    if args.dry_run:  # what the later stages read off the earlier ones' runs
        return "LR", "WU"
    found = summarise(args.out / "pilot-grid", args.plateau_gain, "post_ln")
    wider = extended(lrs, grid_edge(found["chosen"], found["runs"]))
    if wider != lrs:
        print(f"[grid] the choice is on the grid's edge ({', '.join(found['edge'])}): one more step", flush=True)
        run_stage("grid", pilot.main, grid_command(args, wider, train), False)
        found = summarise(args.out / "pilot-grid", args.plateau_gain, "post_ln")
    if found["chosen"] is None:
        raise StageError(f"{args.out / 'pilot-grid'}: no run of post_ln has a validation BLEU")
    return f"{found['chosen']['lr']:g}", str(found["chosen"]["warmup"])


def choose_budget(args, lr: str, warmup: str) -> dict:
    """The budget stage: study_budget on post_ln's long run, written to OUT/budget.json."""
    if args.dry_run:  # the budget a study under way has chosen (in OUT, or in the --state copy it restores from)
        known = [d / "budget.json" for d in (args.out, args.state) if d is not None and (d / "budget.json").is_file()]
        if known:
            budget = json.loads(known[0].read_text())
            print(f"[budget] {known[0]}: {budget_flags(budget)}", flush=True)
            return budget
        print("[budget] T, P, U from post_ln's long run; the one-seed invocations with --own-budget --max-steps T1 "
              "when 17 runs of T updates exceed --capacity", flush=True)
        return {"max_steps": "T", "patience": PATIENCE, "patience_from": "U", "cut_max_steps": None}
    long_run = baseline_run(args.out / "pilot-long", args.plateau_gain)
    try:
        budget = study_budget(long_run, args.val_every, PATIENCE, args.capacity, FULL_RUNS, CUT_RUNS)
    except ValueError as e:
        raise StageError(f"budget: {e}; raise --long-steps and rerun") from None
    budget.update(lr=float(lr), warmup=int(warmup), long_run=long_run["run"], best_bleu=long_run["best_bleu"],
                  best_step=long_run["best_step"])
    atomic.write_text(args.out / "budget.json", json.dumps(budget, indent=2) + "\n")
    print(f"[budget] {args.out / 'budget.json'}: {budget_flags(budget)}", flush=True)
    return budget


def budget_flags(budget: dict) -> str:
    """study_budget's dict as the [budget] line says it."""
    return (f"--max-steps {budget['max_steps']} --patience {budget['patience']} "
            f"--patience-from {budget['patience_from']}"
            + (f"; one-seed runs cut to {budget['cut_max_steps']}" if budget["cut_max_steps"] else "")
            + (f"; {budget['over_capacity']:,} updates over --capacity" if budget.get("over_capacity") else ""))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, train = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = build_parser().parse_args(own)
    study = args.out / "multi30k-converged"
    try:
        sources = heldout_sources(args)
    except StageError as e:
        print(f"converged study: error: {e}", file=sys.stderr)
        return 2

    def keep() -> None:  # the light copy, after every stage
        if args.state is not None and not args.dry_run and args.out.is_dir():
            print(f"[state] {args.state}: {save_state(args.out, args.state, study, sources)} files written", flush=True)

    if args.state is not None and not args.dry_run:
        print(f"[state] {restore_state(args.state, args.out)} files restored from {args.state}", flush=True)
    try:
        lr, warmup = choose_setting(args, train)
        keep()
        run_stage("long run", pilot.main, long_command(args, lr, warmup, train, BASELINE_LONG), args.dry_run)
        keep()
        budget = choose_budget(args, lr, warmup)
        commands = study_commands(args, lr, warmup, budget, train)

        def after_sweep() -> None:  # the runs that finished are translated and kept, whatever stopped the sweep
            if not args.dry_run and (study / "runs").is_dir():
                translate_heldout(args, sources)
            keep()

        run_study(commands, args.until, args.dry_run, after_sweep)
        print(f"[held-out] every run of {study} translates {', '.join(map(str, sources))} into {study / 'heldout'}",
              flush=True)
        # rskip_ln's long run decides nothing (the budget is post_ln's): it trains last, and the study's report is
        # written again to show its curve beside post_ln's
        run_stage("second long run", pilot.main, long_command(args, lr, warmup, train, SECOND_LONG), args.dry_run)
        keep()
        run_stage("report", sweep.main, report_only(commands[0]), args.dry_run)
        keep()
        if args.publish is not None:
            written = "" if args.dry_run else f": {publish(study, args.publish, sources)} files written"
            print(f"[publish] the report into {args.publish}, the held-out translations into "
                  f"{args.publish / 'heldout'}{written}", flush=True)
    except StageError as e:  # StoppedAtUntil too: not an error, and the same command goes on later
        keep()
        stopped = isinstance(e, StoppedAtUntil)
        print(f"converged study: {'' if stopped else 'error: '}{e}", file=sys.stdout if stopped else sys.stderr,
              flush=True)
        return e.status
    print("converged study: " + ("dry run" if args.dry_run else "done"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
