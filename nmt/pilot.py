"""``python -m nmt.pilot``: fix a study's training setting on the validation set before the study runs.

    python -m nmt.pilot --config configs/multi30k.yaml --skip post_ln --lr 5e-4,1e-3,2e-3 --warmup 1000,4000 \\
        --max-steps 600 --out study/pilot-grid [--parallel 2] [-- other train.py flags]

Why: "variant A beats Post-LN" means little if Post-LN got a bad learning rate. A careful comparison tunes the
baseline's peak learning rate and warm-up on a small grid of short runs, then trains every variant with that one
setting, for a budget at which the baseline has stopped improving. This tool does both halves, judged on the
*validation* set (the greedy BLEU and loss that train.py logs at every validation), never on the test set:

- **The grid.** Every ``--skip`` × ``--lambda`` (as the sweep plans them) × ``--lr`` × ``--warmup`` is one train.py
  run of seed ``--seed``, in ``OUT/runs/<skip>-lambda<λ>-seed<s>-lr<lr>-warmup<w>``, run like the sweep's runs
  (``--parallel K``, one shared preset and flags, resumable: rerun the same command until it has finished).
- **The choice.** The grid point whose run of the first ``--skip`` (the baseline) reaches the highest validation
  BLEU (when none reaches 1 BLEU, where BLEU is noise: the lowest validation loss); a diverged run is never chosen.
- **The budget** (``plateau``): for a run long enough to flatten out, the first validation from which on the best
  validation BLEU so far gains less than ``--plateau-gain`` over the last quarter of the run so far; a study's
  ``--max-steps`` is chosen there. Train one long run per variant with the chosen setting (a grid of one point):
  pilot.md states the budget, the plateau of the baseline's run (none while it still gains).

Writes ``OUT/pilot.md`` (the table, the choice, the budget), ``OUT/pilot.json`` and ``OUT/pilot.png`` (validation
BLEU and loss against updates, one line per run); ``--report-only`` rewrites them from the runs there. The reading
side (the plateau rule, the choice, the budget, pilot.md and its section in a study's report) is
``nmt.pilot_summary``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nmt import sweep
from nmt.pilot_summary import write


def grid_runs(plan: sweep.Plan, lrs: list[float], warmups: list[int]) -> list[sweep.Run]:
    """Every run of the sweep's ``plan`` once per grid point (peak learning rate, warm-up)."""
    return [sweep.Run(run.skip, run.lam, run.seed, (("--lr", f"{lr:g}"), ("--warmup", str(warmup))))
            for run in plan.runs for lr in lrs for warmup in warmups]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nmt.pilot", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a grid of peak learning rate × warm-up for each variant and judge it on validation BLEU; "
        "read off the update at which a run stops improving. Flags after -- go to every train.py run.",
        epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--skip", type=sweep.comma_list(str), required=True,
                   help="comma-separated variants; the first is the baseline the setting is chosen for")
    p.add_argument("--lambda", dest="lambdas", type=sweep.comma_list(float), default=[1.0],
                   help="comma-separated λ values, as the sweep's (default: 1)")
    p.add_argument("--seed", type=int, default=1, help="the seed of every run (default: 1)")
    p.add_argument("--lr", type=sweep.comma_list(float), required=True, help="comma-separated peak learning rates")
    p.add_argument("--warmup", type=sweep.comma_list(int), required=True,
                   help="comma-separated warm-up lengths (updates)")
    p.add_argument("--out", type=Path, required=True, help="the pilot's folder: runs/, logs/, pilot.md")
    p.add_argument("--plateau-gain", type=float, default=0.3,
                   help="BLEU that the last quarter of a run must gain to count as still improving (default: 0.3)")
    sweep.add_run_args(p)
    p.add_argument("--report-only", action="store_true", help="train nothing: rewrite pilot.md from the runs there")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = sweep.parse_args(argv, build_parser(), (*sweep.RESERVED, "--lr", "--warmup"), who="pilot", hint="")
        args.seeds = [args.seed]  # what sweep.record_invocation records
        plan = sweep.make_plan(args.skip, args.lambdas, [args.seed])
    except sweep.SweepError as e:
        print(f"pilot: error: {e}", file=sys.stderr)
        return 2
    print(plan.describe(), flush=True)
    plan = sweep.Plan(runs=grid_runs(plan, args.lr, args.warmup))
    print(f"each at peak lr {', '.join(f'{x:g}' for x in args.lr)} × warm-up {', '.join(map(str, args.warmup))}: "
          f"{len(plan.runs)} runs", flush=True)
    if args.dry_run:
        return 0
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with sweep.study_lock(out) as lock_fd:
        if not args.report_only:
            started = time.time()
            try:
                sweep.record_invocation(out, args, argv)
            except sweep.SweepError as e:
                print(f"pilot: error: {e}", file=sys.stderr)
                return 2
            _, signum = sweep.train_all(plan, args, out, lock_fd)
            sweep.finish_invocation(out, started)
            if signum is not None:
                print(f"pilot stopped by {sweep.stop_name(signum)}; rerun the same command to continue", flush=True)
                return 128 + signum
        summary = write(out, args.plateau_gain, args.skip[0])
    chosen = summary["chosen"]
    print(f"{out / 'pilot.md'} written" + (f"; chosen: --lr {chosen['lr']:g} --warmup {chosen['warmup']}"
                                            if chosen else "")
          + (f" — on the edge of the grid ({', '.join(summary['edge'])}): extend it" if summary["edge"] else ""),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
