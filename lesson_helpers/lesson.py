"""The lesson's metadata, read from one place: ``_config.yml``.

``_config.yml`` lists the lesson's pages as the Carpentries Workbench's ``config.yaml`` does:
``episodes`` in order, then ``learners``, ``instructors`` and ``profiles`` pages. Each episode
entry names its file in ``lessons/``, the data it needs (groups of ``registry.csv``) and its
``targets``: Python expressions over the numbers the episode's last cell records (see
``results.py``), checked by ``tests/test_targets.py``; ``stand_in_targets`` are checked only when
the numbers were measured with the offline stand-in weights (they describe those weights). Each episode's Carpentries metadata
(title, minutes, questions, objectives, keypoints) is in its own front matter.

Everything that lists episodes follows from here: the data each episode fetches, the tests, the
benchmark, the README's tables and the website's table of contents (``tools/sync_lesson.py``
writes those two and a test checks them), and the "Open in Colab" links.

This module needs only the standard library and PyYAML, so that the website's build (which runs
in its own environment) can load it by file path. Outside a checkout (the wheel that Colab
installs), ``_config.yml`` is read from the copy packaged beside this module (see ``setup.py``).
"""

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGED_CONFIG = Path(__file__).with_name("lesson_config.yml")
COLAB_BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


def in_checkout():
    """True when the helpers are used from a checkout of the lesson (not an installed wheel)."""
    return (REPO / "_config.yml").is_file() and (REPO / "lessons").is_dir()


@cache
def config():
    """The parsed ``_config.yml`` (the checkout's, else the packaged copy)."""
    path = REPO / "_config.yml" if in_checkout() else PACKAGED_CONFIG
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def split_front_matter(text):
    """(front matter dict, rest) of a text that starts with a ``---`` YAML block, else (None, text)."""
    match = re.match(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", text, re.S)
    if not match:
        return None, text
    return yaml.safe_load(match.group(1)) or {}, text[match.end():]


def front_matter(path):
    """The Carpentries front matter of an episode: from its ``.md``, or from a notebook's first raw cell."""
    path = Path(path)
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        if cells and cells[0].get("cell_type") == "raw":
            return split_front_matter("".join(cells[0].get("source", "")))[0] or {}
        return {}
    return split_front_matter(path.read_text(encoding="utf-8"))[0] or {}


@dataclass(frozen=True)
class Episode:
    file: str                       # e.g. "03-fine-tuning.md", in lessons/
    summary: str = ""               # one line for the README's table of episodes
    data: tuple = ()                # registry groups the episode fetches
    targets: tuple = ()             # expressions over results/episode-NN.json, for any weights
    stand_in_targets: tuple = ()    # the same, checked only with the offline stand-in weights
    budget_s: int = 0               # `make bench` fails an episode slower than this (2-core CPU)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def number(self):
        return int(self.file.split("-", 1)[0])

    @property
    def stem(self):
        return Path(self.file).stem

    @property
    def source(self):
        return REPO / "lessons" / self.file

    @property
    def notebook(self):
        return self.source.with_suffix(".ipynb")

    @property
    def docname(self):
        """The page's name on the website (and in _toc.yml)."""
        return f"lessons/{self.stem}"

    def front_matter(self):
        return front_matter(self.source if self.source.is_file() else self.notebook)

    @property
    def colab_url(self):
        return colab_url(self.stem)

    @property
    def colab_badge(self):
        return f"[![Open In Colab]({COLAB_BADGE_IMAGE})]({self.colab_url})"


def _episode(entry, index):
    where = f"_config.yml, episodes, entry {index + 1}"
    if isinstance(entry, str):
        entry = {"file": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise ValueError(f"{where}: each episode needs `file: NN-name.md`")
    if not re.fullmatch(r"\d\d-[\w-]+\.md", entry["file"]):
        raise ValueError(f"{where}: {entry['file']!r} is not of the form NN-name.md")
    known = {"file", "summary", "data", "targets", "stand_in_targets", "budget_s"}
    return Episode(file=entry["file"], summary=str(entry.get("summary") or ""), data=tuple(entry.get("data") or ()),
                   targets=tuple(entry.get("targets") or ()),
                   stand_in_targets=tuple(entry.get("stand_in_targets") or ()), budget_s=int(entry.get("budget_s") or 0),
                   extra={k: v for k, v in entry.items() if k not in known})


def episodes():
    """The episodes, in the order ``_config.yml`` lists them."""
    found = [_episode(entry, i) for i, entry in enumerate(config().get("episodes") or [])]
    numbers = [e.number for e in found]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"_config.yml: two episodes share a number: {numbers}")
    return found


def episode(number):
    """The episode with this number (an int, or a string like "03")."""
    for candidate in episodes():
        if candidate.number == int(number):
            return candidate
    raise KeyError(f"there is no episode {number}: choose from {[e.number for e in episodes()]}")


def pages(section):
    """The ``learners``, ``instructors`` or ``profiles`` pages of ``_config.yml`` (paths without suffix)."""
    return [str(Path(p).with_suffix("")) for p in config().get(section) or []]


def repository():
    """(https://github.com/OWNER/REPO, branch) from ``_config.yml``."""
    repo = config()["repository"]
    return repo["url"].removesuffix(".git").rstrip("/"), repo.get("branch", "main")


def colab_url(stem):
    url, branch = repository()
    return f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/{branch}/lessons/{stem}.ipynb"


def lesson_file(relative):
    """A file of the lesson's repository (e.g. ``"lessons/door.py"``): the checkout's own copy, else (on Colab,
    where a notebook arrives alone) a copy downloaded from the repository of ``_config.yml`` into the current folder."""
    if in_checkout():
        return REPO / relative
    target = Path.cwd() / Path(relative).name
    if not target.is_file():
        import urllib.request

        url, branch = repository()
        raw = f"https://raw.githubusercontent.com/{url.removeprefix('https://github.com/')}/{branch}/{relative}"
        with urllib.request.urlopen(raw, timeout=60) as response:
            target.write_bytes(response.read())
    return target
