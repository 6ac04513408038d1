"""Provenance: the commit a run came from and which tracked files differed from it, and how the report says so."""

import json
import subprocess
from pathlib import Path

from nmt.provenance import git_state
from nmt.report.readme import dirty_line, read_provenance


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_git_state_lists_the_changed_tracked_files(tmp_path):
    repo = tmp_path / "repo"
    (repo / "nmt").mkdir(parents=True)
    (repo / "docs").mkdir()
    (repo / "nmt" / "model.py").write_text("a = 1\n")
    (repo / "docs" / "state.json").write_text("{}\n")
    (repo / "old.md").write_text("x\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    clean = git_state(repo)
    assert len(clean["commit"]) == 40 and clean["dirty"] is False and clean["dirty_paths"] == []

    (repo / "docs" / "state.json").write_text('{"runs": 1}\n')  # modified, not staged: " M docs/state.json"
    git(repo, "mv", "old.md", "new.md")  # a rename: "R  old.md -> new.md"
    (repo / "untracked.txt").write_text("not counted\n")
    state = git_state(repo)
    assert state["dirty"] is True
    assert state["dirty_paths"] == ["docs/state.json", "new.md"] and state["dirty_paths_total"] == 2


def test_git_state_outside_a_repository(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}


def write_run(out: Path, name: str, *sessions: dict) -> None:
    """A run folder whose provenance.json holds these git states, the newest last (earlier ones under previous)."""
    records = [{"git": g, "packages": {}, "hardware": {"cpu_count": 2}} for g in sessions]
    record = {**records[-1], "previous": records[:-1]}
    (out / "runs" / name).mkdir(parents=True)
    (out / "runs" / name / "provenance.json").write_text(json.dumps(record))


def test_the_report_tells_a_study_state_from_a_code_change(tmp_path):
    write_run(tmp_path, "a", {"commit": "c1", "dirty": True},  # an old record: no list of files
              {"commit": "c2", "dirty": True, "dirty_paths": ["docs/state/sweep.json"], "dirty_paths_total": 1})
    write_run(tmp_path, "b", {"commit": "c2", "dirty": False, "dirty_paths": [], "dirty_paths_total": 0})
    provenance = read_provenance(tmp_path)
    assert provenance["sessions"] == 3
    assert provenance["dirty"] == {"sessions": 2, "unlisted": 1, "paths": ["docs/state/sweep.json"]}
    assert provenance["hardware"] == [{"hardware": {"cpu_count": 2}, "sessions": 3}]
    line = dirty_line(provenance["dirty"], provenance["sessions"])
    assert "in 2 of 3 run session(s)" in line and "`docs/state/sweep.json`" in line
    assert "code or configuration among them: none" in line
    assert "1 session(s) recorded no (or no complete) list of the files" in line

    line = dirty_line({"sessions": 1, "unlisted": 0, "paths": ["README.md", "nmt/model.py"]}, 4)
    assert "code or configuration among them: `nmt/model.py`" in line and "recorded no" not in line
    assert dirty_line({"sessions": 0, "unlisted": 0, "paths": []}, 4).endswith("none")
