"""Episodes: the Markdown source is the single source; its paired notebook must match it and carry no outputs."""

import json

import jupytext
import pytest

from lesson_files import EPISODES, front_matter

CARPENTRIES_KEYS = ("title", "teaching", "exercises", "questions", "objectives", "keypoints")


@pytest.mark.parametrize("episode", EPISODES, ids=lambda p: p.name)
def test_front_matter_is_complete(episode):
    meta = front_matter(episode)
    missing = [key for key in CARPENTRIES_KEYS if not meta.get(key)]
    assert not missing, f"{episode.name}: front matter lacks {missing}"
    assert isinstance(meta["teaching"], int) and isinstance(meta["exercises"], int)
    assert isinstance(meta.get("runtime_cpu_seconds"), int), f"{episode.name}: add the measured runtime_cpu_seconds"
    assert "FIX" not in json.dumps(meta), f"{episode.name}: placeholder left in the front matter"
    assert meta["jupyter"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("episode", EPISODES, ids=lambda p: p.name)
def test_notebook_matches_its_markdown_source(episode):
    notebook = episode.with_suffix(".ipynb")
    assert notebook.is_file(), f"{notebook.name} is missing: run `make notebooks`"
    expected = [(c.cell_type, c.source) for c in jupytext.read(episode).cells]
    actual = [(c.cell_type, c.source) for c in jupytext.read(notebook).cells]
    assert actual == expected, f"{notebook.name} is out of sync with {episode.name}: run `make notebooks`"


@pytest.mark.parametrize("episode", EPISODES, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(episode):
    cells = json.loads(episode.with_suffix(".ipynb").read_text())["cells"]
    with_outputs = [i for i, c in enumerate(cells)
                    if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not with_outputs, f"{episode.name}: cells {with_outputs} carry outputs; clear them before committing"


def test_every_episode_in_lessons_is_listed_in_config():
    on_disk = {p.name for p in EPISODES[0].parent.glob("[0-9][0-9]-*.md")}
    assert on_disk == {p.name for p in EPISODES}, "lessons/ and _config.yml `episodes` disagree"
