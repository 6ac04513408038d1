"""Which files are the training code, and whether commits hold the same (``nmt.training_code``), on a small repository
made here; and the project's own training code, found from its source."""

import subprocess
from pathlib import Path

from nmt.report.readme import training_code_line
from nmt.training_code import compare, training_files


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "."], cwd=repo, check=True, capture_output=True)
    subprocess.run([*git, "commit", "-q", "-m", message], cwd=repo, check=True, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_the_training_code_is_what_train_imports_and_commits_compare_by_it(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    first = commit(repo, {
        "nmt/__init__.py": "", "train.py": "from nmt.train import main\n",
        "nmt/train.py": "def main():\n    from nmt import model  # a function-level import counts\n",
        "nmt/model.py": "from nmt.residual import Block\n", "nmt/residual.py": "class Block: ...\n",
        "nmt/report.py": "from nmt import model\n",  # imports the training code, is not imported by it
    }, "first")
    assert training_files(repo) == ["nmt/__init__.py", "nmt/model.py", "nmt/residual.py", "nmt/train.py", "train.py"]
    report_only = commit(repo, {"nmt/report.py": "from nmt import model  # changed\n"}, "the report changes")
    residual = commit(repo, {"nmt/residual.py": "class Block:\n    scale = 2\n"}, "the training code changes")
    found = compare([first, report_only, residual, "0" * 40], repo)
    assert found == {"files": 5, "unreadable": ["0" * 40],
                     "versions": [{"commits": [first, report_only], "differs": []},
                                  {"commits": [residual], "differs": ["nmt/residual.py"]}]}
    line = training_code_line(found)
    assert f"2 versions: `{first[:7]}`, `{report_only[:7]}` hold one; `{residual[:7]}` differs from it in " \
           "`nmt/residual.py`; `0000000` not compared: git cannot read it here" in line
    assert training_code_line(compare([first, report_only], repo)).endswith("the same in all 2 commits")
    assert training_code_line(compare([residual], repo)).endswith("the same in 1 commit")
    assert training_code_line(compare(["unknown"], tmp_path)).endswith("not compared: git cannot read `unknown` here")


def test_the_projects_training_code():
    files = training_files()
    assert {"train.py", "nmt/train.py", "nmt/model.py", "nmt/residual.py", "nmt/lit.py",
            "nmt/data/batching.py"} <= set(files)
    assert not any(f.startswith(("nmt/report/", "nmt/diagnose/")) or f in ("nmt/sweep.py", "nmt/pilot.py")
                   for f in files)
