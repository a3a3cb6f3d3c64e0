"""Ruff passes on the helpers, tests, tools, site and notebooks, and the pre-commit hooks work offline."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lesson_files import ROOT

BIN = Path(sys.executable).parent


def run(*args):
    # the lesson environment's tools first on PATH, as after `source .venv/bin/activate`
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


def test_ruff_check_passes():
    result = run(sys.executable, "-m", "ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, f"ruff check (config in pyproject.toml) found problems:\n{result.stdout}{result.stderr}"


def test_ruff_reads_the_lesson_code_and_notebooks():
    result = run(sys.executable, "-m", "ruff", "check", "--no-cache", "--show-files", ".")
    files = {Path(line.strip()).resolve().relative_to(ROOT).as_posix()
             for line in result.stdout.splitlines() if line.strip().startswith(str(ROOT))}
    expected = {"lesson_helpers/data.py", "tests/test_site.py", "site/carpentries.py", "tools/benchmark.py",
                *(p.relative_to(ROOT).as_posix() for p in (ROOT / "lessons").glob("[0-9]*.ipynb"))}
    assert expected <= files, f"ruff does not check {sorted(expected - files)}"


def test_pre_commit_hooks_are_local():
    """pre-commit fetches hook repositories from the internet unless they are `local`: keep them local."""
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    assert {repo["repo"] for repo in config["repos"]} == {"local"}
    ids = {hook["id"] for repo in config["repos"] for hook in repo["hooks"]}
    assert {"ruff", "notebooks-match-sources", "no-notebook-outputs"} <= ids


def test_pre_commit_hooks_pass():
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("pre-commit needs a git checkout")
    result = run(sys.executable, "-m", "pre_commit", "run", "--all-files", "--show-diff-on-failure")
    assert result.returncode == 0, f"pre-commit run --all-files failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"
