"""Provenance of a run: what code, packages, hardware, command and data produced it.

Written to ``provenance.json`` in the run directory so that a result can be traced and so that runs
trained on different data or tokenizers are never silently compared.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from nmt import atomic

MAX_DIRTY_PATHS = 50
"""At most this many changed files are listed in provenance.json (their total count is always written)."""

PACKAGES = ("torch", "lightning", "sentencepiece", "sacrebleu", "torchmetrics", "numpy", "nmt")


def git_state(cwd: Path) -> dict:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip() or None
    status = git("status", "--porcelain", "--untracked-files=no")
    if status is None:
        return {"commit": commit, "dirty": None}
    # which tracked files differ from the commit ("XY path" or "XY old -> new"): a study that writes its own state
    # into the tree is not a change of the code, and a reader can only tell the two apart by the files
    paths = sorted(line[3:].split(" -> ")[-1] for line in status.splitlines() if line.strip())
    return {"commit": commit, "dirty": bool(paths), "dirty_paths": paths[:MAX_DIRTY_PATHS],
            "dirty_paths_total": len(paths)}


def package_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), None where it cannot be read. Recorded because float results
    are reproducible bit for bit on one kind of CPU, not across kinds (e.g. AMD EPYC against Intel Xeon)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def hardware() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def collect(argv: list[str], data_hashes: dict[str, str], spm_hash: str) -> dict:
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [sys.executable, *argv],
        "cwd": os.getcwd(),
        "git": git_state(Path(__file__).resolve().parent),
        "packages": package_versions(),
        "hardware": hardware(),
        "data_sha256": data_hashes,
        "spm_model_sha256": spm_hash,
    }


def write(path: Path, record: dict) -> None:
    """Write ``record``; on resume the earlier records are kept under ``"previous"``."""
    if path.exists():
        try:
            old = json.loads(path.read_text())
            record["previous"] = [*old.pop("previous", []), old]
        except (OSError, ValueError):
            pass
    atomic.write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
