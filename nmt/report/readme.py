"""The report's README.md, its sections top to bottom: setup (the preset and every sweep command), the pilot
that chose the setting and budget, hardware and wall time, provenance (commits, whether they hold the same training
code, uncommitted files, packages), results, figures, the "Why" figures, and how every number was obtained.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nmt.eval_settings import EvalSettings, ScoringSettings
from nmt.evaluate import RunScore
from nmt.pilot_summary import in_report
from nmt.report.runs import configured_runs
from nmt.residual import identities
from nmt.tables import count
from nmt.training_code import compare


def readme_text(out: Path, sweep: dict, settings: EvalSettings, scoring: ScoringSettings, results_md: str,
                pictures: list[str], scores: list[RunScore], unscored: list[dict], left_out: list[dict], eval_s: float,
                found: dict | None = None, also_average_last: int = 0, pilot_lines: Sequence[str] = ()) -> str:
    """The report's README.md (``sweep``: the study's sweep.json; ``results_md``: results.md's text, its Results
    section): setup, hardware and wall time, provenance, results, figures, and the protocol."""
    provenance = read_provenance(out)
    lines = [
        f"# Study report: {out.name}",
        "",
        (f"Written {time.strftime('%Y-%m-%d %H:%M %Z')} by `python -m nmt.sweep` / `python -m nmt.report`. "
         f"{count(len(scores), 'run')} evaluated, {len(unscored)} diverged before any checkpoint (counted, no BLEU), "
         f"{len(left_out)} left out (listed under Results)."),
        "",
        *setup_section(sweep),
        *pilot_lines,
        *_hardware_section(sweep, provenance, scores, eval_s),
        *_provenance_section(provenance),
        "## Results",
        "",
        results_md,
        "",
        *_figures_section(out, pictures),
        *_why_section(found),
        *_protocol_section(settings, scoring, also_average_last),
    ]
    return "\n".join(lines)


def setup_section(sweep: dict) -> list[str]:
    settings = sweep.get("settings", {})
    config_text = ""
    if settings.get("config") and Path(settings["config"]).is_file():
        config_text = "\n```yaml\n" + Path(settings["config"]).read_text() + "```\n"
    preset = (f"- Preset: `{settings['config']}` (sha256 `{settings['config_sha256'][:12]}`)" if settings.get("config")
              else "- Preset: none (train.py defaults)")
    commands = distinct_commands(sweep.get("invocations", []))
    own = [str(i + 1) for i, command in enumerate(commands) if command.own_budget]
    same = ("Every run has the same data, preset, flags and number of updates; only `--skip`, `--lambda` and "
            "`--seed` differ." if not own else
            f"Every run has the same data, preset and flags; the runs of command{'s' if len(own) > 1 else ''} "
            f"{', '.join(own)} had a budget of their own (`--own-budget`: its `--max-steps`, `--patience`, "
            "`--min-delta`, `--patience-from` in its command below), all others the study's; only `--skip`, "
            "`--lambda` and `--seed` differ otherwise.")
    return [
        "## Setup",
        "",
        preset + ", extra train.py flags:"
        f" `{' '.join(settings.get('train_args') or []) or 'none'}`, updates per run: "
        f"{settings.get('max_steps') or 'the preset’s'}. " + same,
        *[f"- Command {i + 1}: `python -m nmt.sweep {' '.join(command.argv)}`{command.how_run()}"
          for i, command in enumerate(commands)],
        ("- Identical models ran once under the canonical name ("
         + "; ".join(f"{name} λ={lam:g} = {other}" for name, lam, other in identities()) + ")."),
        config_text,
    ]


def pilot_sections(out: Path, folder: Path, pilots: Sequence[Path],
                   max_steps: int | None) -> tuple[list[str], list[dict]]:
    """The README's section on how the study's setting and budget were chosen, one subsection per ``nmt.pilot``
    folder (``--pilot``), checked against the study's own runs and its ``max_steps``; and the pilots' summaries
    for results.json."""
    if not pilots:
        return [], []
    study = next(iter(configured_runs(out).values()), None)
    texts, data = [], []
    for pilot_dir in pilots:
        commands = [f"- `python -m nmt.pilot {' '.join(command.argv)}`{command.how_run()}"
                    for command in distinct_commands(sweep_record(pilot_dir).get("invocations", []))]
        text, summary = in_report(pilot_dir, folder, commands, study, max_steps)
        texts.append(text)
        data.append({"folder": str(pilot_dir), **summary})
    intro = ("Chosen on the validation set before the study's runs (`python -m nmt.pilot`): the baseline's peak "
             "learning rate and warm-up from a grid of short runs, the budget from where a long run at that setting "
             "stops gaining. The tables and curves are read afresh from the pilots' runs.")
    return ["## How the setting and budget were chosen: the pilot", "", intro, "", "\n\n".join(texts), ""], data


def sweep_record(folder: Path) -> dict:
    """The sweep.json of a study or pilot folder (``nmt.sweep.record_invocation`` writes it), {} without one."""
    path = folder / "sweep.json"
    return json.loads(path.read_text()) if path.is_file() else {}


SCHEDULING = ("--parallel", "--threads", "--until")
"""Flags that say how many runs train at once, on how many threads and until when, not what they train: commands
differing only in these are one command of the study, rerun."""


@dataclass
class Command:
    """One command of a study (its flags other than SCHEDULING), as often as it was run, and how."""

    argv: tuple[str, ...]
    own_budget: bool = False
    schedules: Counter = field(default_factory=Counter)  # "--parallel 1 --threads 2" -> invocations run so
    untils: list[str] = field(default_factory=list)  # each invocation's --until, in order

    @property
    def times(self) -> int:
        return sum(self.schedules.values())

    def how_run(self) -> str:
        """" (run N times: ...; with `--parallel K --threads T` ...; `--until` first … last)", or "" for a command
        run once without scheduling flags."""
        parts = []
        if self.times > 1:
            parts.append(f"run {self.times} times: each rerun went on where the one before had stopped")
        schedules = [(flags, n) for flags, n in self.schedules.items() if flags]
        if len(schedules) == 1 and schedules[0][1] == self.times:
            parts.append(f"with `{schedules[0][0]}`")
        elif schedules:
            parts.append("with " + ", ".join(f"`{flags}` " + ("once" if n == 1 else f"{n} times")
                                             for flags, n in schedules))
        if len(self.untils) == 1:
            parts.append(f"`--until {self.untils[0]}`")
        elif self.untils:
            parts.append(f"`--until` {self.untils[0]} to {self.untils[-1]}"
                         + ("" if len(self.untils) == self.times else f" ({len(self.untils)} of them)"))
        return f" ({'; '.join(parts)})" if parts else ""


def split_scheduling(argv: Sequence[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    """``argv`` without the SCHEDULING flags (``--flag value`` or ``--flag=value``), and their values."""
    rest, found, i = [], {}, 0
    while i < len(argv) and argv[i] != "--":  # after --: train.py's flags, left as they are
        flag, equals, value = argv[i].partition("=")
        if flag not in SCHEDULING:
            rest.append(argv[i])
        elif equals:
            found[flag] = value
        elif i + 1 < len(argv):
            i += 1
            found[flag] = argv[i]
        i += 1
    return (*rest, *argv[i:]), found


def distinct_commands(invocations: list[dict]) -> list[Command]:
    """The study's commands in the order each was first run: rerunning the same command until the sweep has finished
    is how a study is resumed, and a rerun with another ``--until`` or another number of runs at once trains the same
    runs, so one line for them is enough (it says how often and how each was run)."""
    commands: dict[tuple[str, ...], Command] = {}
    for inv in invocations:
        argv, scheduling = split_scheduling(inv.get("argv", []))
        command = commands.setdefault(argv, Command(argv))
        command.own_budget = command.own_budget or bool(inv.get("own_budget"))
        command.schedules[" ".join(f"{flag} {scheduling[flag]}" for flag in SCHEDULING[:2]
                                   if flag in scheduling)] += 1
        if "--until" in scheduling:
            command.untils.append(scheduling["--until"])
    return list(commands.values())


def _hardware_section(sweep: dict, provenance: dict, scores: list[RunScore], eval_s: float) -> list[str]:
    train_s = sum(i.get("wall_time_s") or 0 for i in sweep.get("invocations", []))
    run_walls = [s.wall_time_s for s in scores if s.wall_time_s]
    return [
        "## Hardware and wall time",
        "",
        *[f"- {h['sessions']} run session(s) on: " + ", ".join(f"{k} {v}" for k, v in h["hardware"].items())
          for h in provenance["hardware"]],
        (f"- Sweep wall time (training, all invocations): {train_s / 3600:.2f} h; the evaluation for this report: "
         f"{eval_s / 60:.1f} min (cached evaluations are reused)."),
        (f"- Wall time of one run (over all its training sessions, results.json): median "
         f"{statistics.median(run_walls) / 60:.1f} min" if run_walls else "- No run wall time recorded."),
        "",
    ]


def read_provenance(out: Path) -> dict:
    commits, packages, hardware = {}, {}, {}
    sessions, dirty, unlisted, paths = 0, 0, 0, set()  # run sessions; dirty ones; dirty without a file list; files
    for run in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else []:
        path = run / "provenance.json"
        if not path.is_file():
            continue
        records = [json.loads(path.read_text())]
        records += records[0].get("previous", [])
        for record in records:
            git = record.get("git", {})
            commits.setdefault(git.get("commit") or "unknown", []).append(run.name)
            sessions += 1
            if git.get("dirty"):
                dirty += 1
                if "dirty_paths" in git:
                    paths.update(git["dirty_paths"])
                    unlisted += git.get("dirty_paths_total", 0) > len(git["dirty_paths"])
                else:
                    unlisted += 1  # recorded before provenance.json listed the files
            for name, version in record.get("packages", {}).items():
                packages.setdefault(name, set()).add(str(version))
            machine = json.dumps(record.get("hardware", {}), sort_keys=True)
            hardware.setdefault(machine, []).append(run.name)
    return {"commits": {c: sorted(r) for c, r in commits.items()}, "sessions": sessions,  # a run once a session
            "dirty": {"sessions": dirty, "unlisted": unlisted, "paths": sorted(paths)},
            "packages": {k: sorted(v) for k, v in packages.items()},
            "hardware": [{"hardware": json.loads(h), "sessions": len(r)} for h, r in hardware.items()]}


CODE_SUFFIXES = (".py", ".yaml", ".yml", ".toml", ".model")
"""Files whose change can alter what a run computes (code, presets, the package's metadata, a tokenizer model)."""


def dirty_line(dirty: dict, sessions: int) -> str:
    """Whether the runs' working trees differed from their commit, and in which files: a study that writes its
    own state into the tree (``--state docs/...``) is told apart from a change of the code."""
    if not dirty["sessions"]:
        return "- Uncommitted changes in a run's working tree: none"
    line = f"- Uncommitted changes in a run's working tree: in {dirty['sessions']} of {sessions} run session(s)"
    paths = dirty["paths"]
    if paths:
        shown = ", ".join(f"`{p}`" for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        code = [p for p in paths if p.endswith(CODE_SUFFIXES)]
        line += (f"; the files: {shown}; code or configuration among them: "
                 + (", ".join(f"`{p}`" for p in code) if code else "none"))
    if dirty["unlisted"]:
        line += (f"; {dirty['unlisted']} session(s) recorded no (or no complete) list of the files: which changed "
                 "is not known")
    return line


def training_code_line(found: dict) -> str:
    """Whether the runs' commits hold the same training code (``nmt.training_code.compare``'s ``found``)."""
    def commits(names: list[str]) -> str:
        return ", ".join(f"`{c[:7]}`" for c in names)

    versions, unreadable = found["versions"], found["unreadable"]
    if not versions:
        text = f"not compared: git cannot read {commits(unreadable) or 'the runs’ commits'} here"
    elif len(versions) == 1:
        n = len(versions[0]["commits"])
        text = f"the same in {'all ' if n > 1 else ''}{count(n, 'commit')}"
    else:
        text = f"{len(versions)} versions: {commits(versions[0]['commits'])} hold one; " + "; ".join(
            f"{commits(v['commits'])} differ{'s' if len(v['commits']) == 1 else ''} from it in "
            + ", ".join(f"`{f}`" for f in v["differs"]) for v in versions[1:])
    if unreadable and versions:
        text += f"; {commits(unreadable)} not compared: git cannot read {'it' if len(unreadable) == 1 else 'them'} here"
    return (f"- Training code (`train.py` and the modules of `nmt/` that `nmt.train` imports, {found['files']} files, "
            f"compared by their git blobs: `nmt/training_code.py`): {text}")


def _provenance_section(provenance: dict) -> list[str]:
    return [
        "## Provenance",
        "",
        *[f"- git commit `{c}`: {len(r)} run session(s) of {len(set(r))} run(s)"
          for c, r in provenance["commits"].items()],
        *([training_code_line(compare(list(provenance["commits"])))] if provenance["commits"] else []),
        dirty_line(provenance["dirty"], provenance["sessions"]),
        "- Packages: " + ", ".join(f"{k} {'/'.join(v)}" for k, v in sorted(provenance["packages"].items())),
        "- Each run's own `provenance.json` (command, data and tokenizer SHA-256) is in `runs/<run>/`.",
        "",
    ]


def _figures_section(out: Path, pictures: list[str]) -> list[str]:
    lines = ["## Figures", ""]
    if pictures:
        lines += [f"![{p}]({p})" for p in pictures]
        if "grad_norms.png" not in pictures:
            lines.append("No per-layer gradient norms were logged: train with `--log-layer-grads N` for that figure.")
    else:
        lines.append("The figures need matplotlib: `pip install nmt[report]` (or `pip install matplotlib`), then "
                     f"`python -m nmt.report {out}`.")
    return lines


def _why_section(found: dict | None) -> list[str]:
    """The figures of the diagnoses side by side, and a link to each one's own folder (the table is in Results)."""
    if found is None:
        return []
    lines = ["", "## Why: the diagnosis of each variant", "",
             ("What the residual literature measures to explain its results, on each variant's best checkpoint (first "
              "seed; the numbers are in the table \"Why: the diagnosis of each variant\" above): the gradient "
              "reaching each layer, the growth of the hidden states, whether the gradients are smooth or shattered "
              "(Balduzzi et al. 2017), how BLEU degrades when sublayers are deleted (Veit et al. 2016), and how "
              "similar the layers' representations are."), ""]
    if found["pictures"]:
        lines += [f"![{p}]({p})" for p in found["pictures"]]
    elif found["results"]:
        lines.append("The figures need matplotlib (`pip install nmt[report]`).")
    lines += ["", "Each diagnosis on its own: " + ", ".join(
        f"[{r['subject']['label']}](diagnosis/{run.name}/summary.md)" for run, r in found["results"]) + "."]
    return lines


def _protocol_section(settings: EvalSettings, scoring: ScoringSettings, also_average_last: int = 0) -> list[str]:
    return [
        "",
        "## How every number was obtained",
        "",
        f"- **BLEU** (table): test split `{scoring.split}`, "
        + (f"the average of each run's last {settings.average_last} periodic checkpoints" if settings.average_last
           else "each run's `best.ckpt` (best validation BLEU)")
        + f", beam {settings.beam}, length penalty {settings.lenpen_style} α {settings.lenpen:g}"
        + (f", first {scoring.limit} sentences only" if scoring.limit else "")
        + "; sacreBLEU on detokenized output against the raw references, signature above; chrF++ likewise; the "
        "dataset's extra protocol scores, if any, as named in the table."
        + (f" The tables headed \"average of the last {also_average_last} checkpoints\" score the same runs with "
           f"the elementwise average of the parameters of their newest {also_average_last} `step-<N>.ckpt` "
           "(`python -m nmt.average`; the run trained with `--save-every`), decoded alike; the claims are decided "
           "on the first table only." if also_average_last else ""),
        ("- **updates**, **tgt tokens**, **skipped updates**: those of the checkpoint evaluated (with `best.ckpt`, the "
         "update with the best validation BLEU, which may come before the last), mean over the seeds for the first "
         "two, summed for the updates skipped as non-finite up to it (a run's own total is in its results.json, "
         "`nonfinite_skipped`); **stopped (at update)**: how and where each run ended."),
        ("- **mean ± std**: over the seeds of a variant that did not diverge (sample standard deviation; 0 with one "
         "seed). **diverged**: runs stopped by `--max-nonfinite` consecutive non-finite updates, counted and never "
         "averaged in; a run that diverged before its first checkpoint has no BLEU."),
        (f"- **Δ BLEU vs post_ln**: mean over the seeds both variants share of (variant − post_ln) on the same test "
         f"set; **p**: paired bootstrap ({scoring.bootstrap} resamples, Koehn 2004) between the two outputs of the "
         "same seed, the largest p over the paired seeds."),
        ("- **Smallest detectable Δ**: see the formula under the table; σ is the seed standard deviation pooled over "
         "the variants with at least 2 seeds (`nmt.claims.seed_sigma`), n post_ln's number of seeds."),
        ("- **The paper's claims**: each claim of Liu et al. (COLING 2020) is a comparison \"A beats B\" between two "
         "cells; Δ is the mean over their shared seeds, p the largest one-sided paired-bootstrap p over those seeds, "
         "and the seed noise 1.96·σ·√(2/n) for n shared seeds. **supported** / **contradicted** needs p < 0.05 *and* "
         "|Δ| above the seed noise; anything less is **not resolved** (`nmt/claims.py`)."),
        ("- **Curves** (`curves.png`): validation loss (label-smoothed, per target token) and greedy validation BLEU "
         "from each run's `metrics.csv`, at every validation; `run_curves.png` the BLEU again, one panel per variant "
         "on shared axes, with each run's best validation (★, the update of its `best.ckpt`) and its last update "
         "(dotted), the stop reason from its results.json. **Bars** (`bleu.png`): the table's mean ± std. "
         "**Gradient norms** (`grad_norms.png`): the 2-norm of the gradient of all parameters of each encoder and "
         "decoder layer at each of the first `--log-layer-grads` updates, before clipping, per seed."),
        "- **Wall time**: a run's seconds of training summed over its train.py sessions, each counted up to its last "
        "checkpoint and the last one in full (results.json, `nmt/wallclock.py`); mean over the seeds in the tables.",
        ("- **Why** (`why_*.png`, the diagnosis table): `python -m nmt.diagnose` on each variant's first seed's "
         "`best.ckpt`, with its default settings; the measurements are defined in the README's section on "
         "diagnosis and in `nmt/diagnose/__init__.py`."),
        "",
    ]
