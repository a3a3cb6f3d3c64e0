"""Shared helpers for the tests: where the lesson's files are, and how to read an episode."""

from pathlib import Path

import jupytext

from lesson_helpers import lesson

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
EPISODES = [ep.source for ep in lesson.episodes()]


def front_matter(episode_md):
    """The Carpentries YAML header of an episode source."""
    assert Path(episode_md).read_text().startswith("---\n"), f"{episode_md} has no YAML front matter"
    return lesson.front_matter(episode_md)


def code_defining(episode_md, name):
    """The source of the episode's code cell that defines `name` (a function)."""
    notebook = jupytext.read(episode_md)
    cells = [c.source for c in notebook.cells if c.cell_type == "code" and f"def {name}(" in c.source]
    assert len(cells) == 1, f"expected one cell defining {name} in {episode_md}, found {len(cells)}"
    return cells[0]
