"""Folders published whole or not at all (nmt.data.publish), as the caches and the datasets in data/ are."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nmt.data.publish import publishing

ROOT = Path(__file__).resolve().parents[1]


def test_the_folder_appears_only_when_complete(tmp_path):
    target = tmp_path / "cache" / "entry"
    with publishing(target) as built:
        (built / "a.txt").write_text("one")
        (built / "inner").mkdir()
        (built / "inner" / "b.txt").write_text("two")
        assert not target.exists() and built.parent == target.parent and built.name.startswith(".entry-")
    assert (target / "a.txt").read_text() == "one" and (target / "inner" / "b.txt").read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["entry"]  # the temporary folder became it
    assert target.stat().st_mode & 0o777 == 0o777 & ~_umask()  # the usual permissions, not a temporary's 0o700


def test_a_failed_build_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="half way"):
        with publishing(tmp_path / "entry") as built:
            (built / "half.txt").write_text("…")
            raise RuntimeError("half way")
    assert list(tmp_path.iterdir()) == []


def test_losing_the_race_keeps_the_winners_copy(tmp_path):
    target = tmp_path / "entry"
    with publishing(target) as slow:
        (slow / "who").write_text("slow")
        with publishing(target) as fast:  # another process, done first
            (fast / "who").write_text("fast")
    assert (target / "who").read_text() == "fast" and [p.name for p in tmp_path.iterdir()] == ["entry"]
    with pytest.raises(OSError):  # a folder that is there but not complete is not taken for the result
        with publishing(target, complete=lambda folder: (folder / "meta.json").is_file()) as other:
            (other / "who").write_text("other")
    assert (target / "who").read_text() == "fast" and [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_processes_racing_to_publish_one_folder(tmp_path):
    """Several processes publish the same folder at once: exactly one wins, the others are told and keep nothing."""
    code = "\n".join([
        "import sys",
        "from pathlib import Path",
        "from nmt.data.publish import publish",
        "built = Path(sys.argv[1]) / f'.entry-{sys.argv[2]}'",
        "built.mkdir()",
        "(built / 'who').write_text(sys.argv[2])",
        "print(publish(built, Path(sys.argv[1]) / 'entry'))",
    ])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(i)], stdout=subprocess.PIPE, text=True,
                              env=env) for i in range(4)]
    results = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert sorted(results) == ["False", "False", "False", "True"]
    winner = str(results.index("True"))
    assert (tmp_path / "entry" / "who").read_text() == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["entry", *(f".entry-{i}" for i in range(4) if str(i) != winner)])  # the losers' are left to their callers


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
