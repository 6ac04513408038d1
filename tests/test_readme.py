"""The README's two set-up commands stay true (CI runs the test command verbatim), and the docs' links resolve."""

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


def test_every_relative_link_of_the_docs_resolves():
    """README, docs/ (generated reports included: they are moved there whole) and data/README.md link only to
    files that are there."""
    pages = [ROOT / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = [f"{page.relative_to(ROOT)}: {link}" for page in pages
              for link in re.findall(r"\]\(([^)#\s]+)", page.read_text())
              if "://" not in link and not link.startswith("mailto:") and not (page.parent / link).exists()]
    assert len(pages) > 10 and not broken, broken
