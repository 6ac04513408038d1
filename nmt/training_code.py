"""The training code: the source files a training run executes, and whether git commits hold the same ones.

A study trained over many sessions comes from many commits (its report lists them); its comparison is fair only if
the code that trained every run was the same. The training code is ``train.py`` and every package module that
``nmt.train`` imports, directly or through others (``nmt.import_graph``: every import statement, those inside
functions included), as the checkout at hand has them. Two commits hold the same training code when each of those
files has the same git blob in both; a file missing from one of them is a difference.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from nmt.import_graph import ROOT, import_graph, imported_by, modules

TRAIN_MODULE = "nmt.train"
ENTRY_POINTS = ("train.py",)


def training_files(root: Path = ROOT) -> list[str]:
    """The training code's files, relative to ``root`` (the checkout), sorted."""
    paths = modules(root)
    files = {paths[name].relative_to(root).as_posix() for name in imported_by(import_graph(root), TRAIN_MODULE)
             if name in paths}
    return sorted(files | {e for e in ENTRY_POINTS if (root / e).is_file()})


def blobs(commit: str, files: list[str], repo: Path = ROOT) -> dict[str, str] | None:
    """{file: its git blob id at ``commit``}, the files absent there left out; None when git cannot read the commit
    here (no git, not a repository, or a commit this clone does not have)."""
    try:
        out = subprocess.run(["git", "ls-tree", "-z", commit, "--", *files], cwd=repo, capture_output=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    found = {}
    for entry in filter(None, out.stdout.split(b"\0")):  # "<mode> blob <id>\t<path>"
        meta, path = entry.split(b"\t", 1)
        found[path.decode()] = meta.split()[2].decode()
    return found


def compare(commits: list[str], root: Path = ROOT) -> dict:
    """Whether ``commits`` hold the same training code. Returns {"files": how many files it has, "versions": one
    entry per distinct training code in the order first met, {"commits": [...], "differs": the files in which it
    differs from the first}, "unreadable": the commits git cannot read here}."""
    files = training_files(root)
    versions: dict[tuple, list[str]] = {}
    unreadable = []
    for commit in commits:
        found = blobs(commit, files, root)
        if found is None:
            unreadable.append(commit)
        else:
            versions.setdefault(tuple(sorted(found.items())), []).append(commit)
    first = dict(next(iter(versions), ()))
    return {"files": len(files), "unreadable": unreadable,
            "versions": [{"commits": found_in, "differs": sorted(f for f in files if dict(key).get(f) != first.get(f))}
                         for key, found_in in versions.items()]}
