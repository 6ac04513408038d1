"""The README's two set-up commands stay true: CI runs the test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_opens_with_the_main_job_and_the_test_command():
    main_job, tests = readme_commands()[:2]
    assert main_job.endswith("train.py") and "pip install torch==2.13.0" in main_job
    assert tests.endswith("-m pytest -q") and ".[test]" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_readme_documents_every_registered_variant():
    from nmt.residual import RESIDUALS

    text = (ROOT / "README.md").read_text()
    for name in RESIDUALS:
        assert f"`{name}`" in text
