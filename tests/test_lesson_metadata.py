"""_config.yml is the one place for the episodes: what follows from it must agree with it."""

import subprocess
import sys

import pytest

from lesson_helpers import data, lesson
from lesson_files import ROOT

EPISODES = lesson.episodes()


def test_readme_table_and_toc_are_written_from_config():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "sync_lesson.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("ep", EPISODES, ids=lambda ep: ep.stem)
def test_episode_entry_is_complete(ep):
    assert ep.source.is_file(), f"_config.yml lists {ep.file}, but lessons/ has no such file"
    assert ep.summary, f"_config.yml: give {ep.file} a one-line `summary` for the README"
    assert ep.budget_s > 0, f"_config.yml: give {ep.file} a `budget_s` (seconds on a 2-core CPU)"
    assert ep.data, f"_config.yml: list the data groups {ep.file} needs under `data`"
    assert not ep.extra, f"_config.yml: unknown keys for {ep.file}: {sorted(ep.extra)}"


@pytest.mark.parametrize("ep", EPISODES, ids=lambda ep: ep.stem)
def test_episode_data_groups_exist_in_the_registry(ep):
    groups = {entry.group for entry in data.registry()}
    unknown = [g for g in ep.data if g not in groups]
    assert not unknown, f"_config.yml: {ep.file} needs data groups that registry.csv lacks: {unknown}"


def test_episode_numbers_follow_the_order():
    assert [ep.number for ep in EPISODES] == list(range(1, len(EPISODES) + 1))


def test_unknown_episode_is_one_clear_line():
    with pytest.raises(data.LessonDataError, match=r"there is no episode 99: choose from \[1, "):
        data.entries_for([99])
