"""Checkpoint averaging: ``python -m nmt.average``.

Averaging the parameters of the last few checkpoints of a run (Vaswani et al. 2017 average the last 5
for base models, 20 for big ones, written every 10 minutes) usually gains a little BLEU over the last
checkpoint alone::

    python -m nmt.average --run runs/ende --last 5 --output runs/ende/checkpoints/avg5.ckpt
    python -m nmt.average a.ckpt b.ckpt c.ckpt --output avg.ckpt

``--run RUN --last N`` takes the N newest periodic checkpoints ``RUN/checkpoints/step-<N>.ckpt``
(written with ``--save-every``, kept with ``--keep-last``); explicit files can be given instead.

Every floating-point tensor of ``state_dict`` is averaged elementwise, accumulated in float64 and cast
back to its dtype. Integer and boolean tensors are not averaged: they must be identical in all
checkpoints. The checkpoints must be of the same model: same ``hyper_parameters["model"]``, same
state_dict keys, shapes and dtypes; otherwise the error names the two files and the first difference.

The result is for inference (``python -m nmt.translate avg.ckpt``), not for resuming training: it has
no optimizer or learning-rate scheduler state. Its other entries (hyper-parameters, tokenizer, …) and its
``global_step`` are those of the newest checkpoint (the highest ``global_step``; the first given on a
tie), and ``averaged_from`` lists the files averaged. It is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from nmt.checkpoint import CheckpointError, atomic_torch_save, load_checkpoint, periodic_checkpoints

DROPPED = ("optimizer_states", "lr_schedulers")  # training state: an average is not a point on the trajectory


class AverageError(ValueError):
    """Checkpoints that cannot be averaged together (of different models, too few); the message names the files.

    A file that is missing or does not load raises ``nmt.checkpoint.CheckpointError``."""


def _model_hparams(ckpt: dict):
    hp = ckpt.get("hyper_parameters")
    return hp.get("model") if isinstance(hp, dict) else None


def _first_difference(a, b) -> str | None:
    """The first key in which two model hyper-parameter dicts differ, described; None if they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b or a[key] != b[key]:
                return f"hyper_parameters['model'][{key!r}]: {a.get(key, '<missing>')!r} vs {b.get(key, '<missing>')!r}"
        return None
    return None if a == b else f"hyper_parameters['model']: {a!r} vs {b!r}"


def _check_same_model(ref_path: Path, ref: dict, path: Path, ckpt: dict) -> None:
    """Raise AverageError naming both files if ``ckpt`` is not of the same model as ``ref``."""
    pair = f"{ref_path} and {path}"
    diff = _first_difference(_model_hparams(ref), _model_hparams(ckpt))
    if diff is not None:
        raise AverageError(f"{pair} are different models: {diff}")
    a, b = ref["state_dict"], ckpt["state_dict"]
    for key in list(a) + [k for k in b if k not in a]:
        if key not in b or key not in a:
            where, other = (ref_path, path) if key in a else (path, ref_path)
            raise AverageError(f"{pair} are different models: state_dict key {key!r} is in {where} but not in {other}")
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            raise AverageError(f"{pair} are different models: state_dict[{key!r}] is a tensor in only one of them")
        if not isinstance(x, torch.Tensor):
            if x != y:
                raise AverageError(f"{pair} differ in the non-tensor state_dict[{key!r}]: {x!r} vs {y!r}")
            continue
        if x.shape != y.shape:
            raise AverageError(
                f"{pair} are different models: state_dict[{key!r}] has shape {tuple(x.shape)} vs {tuple(y.shape)}"
            )
        if x.dtype != y.dtype:
            raise AverageError(f"{pair} differ in the dtype of state_dict[{key!r}]: {x.dtype} vs {y.dtype}")
        if not _averaged(x) and not torch.equal(x, y):
            raise AverageError(
                f"{pair} differ in state_dict[{key!r}], a {x.dtype} tensor: integer and boolean tensors are not "
                "averaged and must be identical"
            )


def _averaged(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def average_checkpoints(paths: list[Path]) -> dict:
    """The elementwise average of the floating-point parameters of the Lightning checkpoints ``paths``.

    Checkpoints are loaded one at a time (memory: one checkpoint plus a float64 sum). Returns a
    checkpoint dict: the newest checkpoint's entries (highest ``global_step``, the first given on a tie)
    without ``optimizer_states`` and ``lr_schedulers``, with the averaged ``state_dict``,
    ``averaged_from`` (the paths, as strings, in the order given) and the newest ``global_step``.
    Integer/boolean tensors are copied (they must be identical). Raises ``CheckpointError`` for a missing or
    unloadable file and ``AverageError`` for checkpoints of different models.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise AverageError("no checkpoints to average")
    ref_path, ref = paths[0], load_checkpoint(paths[0])
    sums = {k: v.to(torch.complex128 if v.is_complex() else torch.float64, copy=True)
            for k, v in ref["state_dict"].items() if isinstance(v, torch.Tensor) and _averaged(v)}
    newest = {k: v for k, v in ref.items() if k != "state_dict"}
    for path in paths[1:]:
        ckpt = load_checkpoint(path)
        _check_same_model(ref_path, ref, path, ckpt)
        for key, acc in sums.items():
            acc += ckpt["state_dict"][key]
        if ckpt.get("global_step", 0) > newest.get("global_step", 0):
            newest = {k: v for k, v in ckpt.items() if k != "state_dict"}
        del ckpt
    state = {}
    for key, value in ref["state_dict"].items():
        state[key] = (sums[key] / len(paths)).to(value.dtype) if key in sums else value
    result = {k: v for k, v in newest.items() if k not in DROPPED}
    result["state_dict"] = state
    result["averaged_from"] = [str(p) for p in paths]
    result["global_step"] = newest.get("global_step", 0)
    return result


def last_checkpoints(run_dir: Path, n: int) -> list[Path]:
    """The ``n`` newest periodic checkpoints ``run_dir/checkpoints/step-<N>.ckpt``, oldest first.

    Ordered by the step number in the name (``step-900`` before ``step-1000``), not by name or mtime.
    Raises ``AverageError`` if fewer than ``n`` exist.
    """
    if n < 1:
        raise AverageError(f"--last must be at least 1, got {n}")
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        raise AverageError(f"{run_dir}: no checkpoints/ folder (is this a run directory?)")
    found = periodic_checkpoints(folder)
    if len(found) < n:
        raise AverageError(
            f"{folder}: found {len(found)} periodic checkpoint(s) step-<N>.ckpt, need {n} "
            "(train with --save-every and --keep-last >= N)"
        )
    return found[-n:]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nmt.average",
        description="Average the parameters of checkpoints of one run (for inference, not for resuming).",
    )
    p.add_argument("checkpoints", nargs="*", type=Path, metavar="CKPT", help="checkpoint files to average")
    p.add_argument("--run", type=Path, metavar="RUN_DIR", help="a run directory: average its newest step-<N>.ckpt")
    p.add_argument("--last", type=int, metavar="N", help="with --run: how many of the newest to average")
    p.add_argument("--output", type=Path, required=True, metavar="OUT.ckpt", help="the averaged checkpoint to write")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.run is None) != (args.last is None):
        parser.error("--run and --last go together")
    if (args.run is None) == (not args.checkpoints):
        parser.error("give either --run RUN_DIR --last N or checkpoint files (one of the two)")
    try:
        paths = last_checkpoints(args.run, args.last) if args.run is not None else args.checkpoints
        if any(p.resolve() == args.output.resolve() for p in paths):
            raise AverageError(f"--output {args.output} is one of the checkpoints to average")
        averaged = average_checkpoints(paths)
        atomic_torch_save(averaged, args.output)
    except (AverageError, CheckpointError, OSError) as e:
        print(f"nmt.average: error: {e}", file=sys.stderr)
        return 2
    print(f"averaged {len(paths)} checkpoints (newest at step {averaged['global_step']}) into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
