"""The Colab path: "Open in Colab" links, and the set-up cell that makes a notebook self-sufficient.

Links: every episode listed in _config.yml has an "Open in Colab" link built from `repository`
in _config.yml, in the README, under the title of the episode's .md (so in the notebook's first
markdown cell), and the notebook it points to exists. _toc.yml (the website) lists the same
episodes in the same order.

Set-up cell: the first code cell of every episode is the agreed one. It is then run for real,
offline, in a "Colab-like" Python: a fresh virtual environment that sees the lesson's
dependencies (as Colab has NumPy, Pillow, pooch... preinstalled) but not the lesson's helpers.
IPython runs the cell as written; its `%pip install "lesson-helpers @ git+<repository>"` is
pointed at a wheel built here from this checkout (GitHub is out of reach) with pip's index
switched off, and the episode's data comes from the offline mirror (LESSON_MIRROR) into
./data and ~/.keras, as on Colab. Run again, the cell installs nothing; and in the lesson's own
environment it installs nothing either.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import yaml

from lesson_helpers import lesson

ROOT = Path(__file__).resolve().parents[1]
REPO_URL, BRANCH = lesson.repository()
EPISODES = [ep.stem for ep in lesson.episodes()]
colab_url = lesson.colab_url


def badge(stem):
    return f"[![Open In Colab]({lesson.COLAB_BADGE_IMAGE})]({colab_url(stem)})"


def notebook(stem):
    return json.loads((ROOT / "lessons" / f"{stem}.ipynb").read_text(encoding="utf-8"))


def cells_of(stem, kind):
    return ["".join(c["source"]) for c in notebook(stem)["cells"] if c["cell_type"] == kind]


def episode_number(stem):
    return int(stem.split("-", 1)[0])


def expected_setup_cell(number):
    return textwrap.dedent(f"""\
        # Set-up: on Colab this installs the lesson's helpers; on your own machine it changes nothing.
        import importlib.util
        if importlib.util.find_spec("lesson_helpers") is None:
            %pip install --quiet "lesson-helpers @ git+{REPO_URL}"
        import lesson_helpers
        data_dir = lesson_helpers.fetch_episode_data({number})""")


# --- links --------------------------------------------------------------------------------------

def test_repository_url_is_a_github_repository():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPO_URL), (
        f"_config.yml repository.url must be https://github.com/OWNER/REPO, not {REPO_URL!r}")


@pytest.mark.parametrize("stem", EPISODES)
def test_colab_link_points_to_the_episode_notebook(stem):
    assert (ROOT / "lessons" / f"{stem}.ipynb").is_file(), f"lessons/{stem}.ipynb is missing"
    url = colab_url(stem)
    assert url.endswith(f"/blob/{BRANCH}/lessons/{stem}.ipynb")


@pytest.mark.parametrize("stem", EPISODES)
def test_episode_has_colab_badge_under_its_title(stem):
    source = (ROOT / "lessons" / f"{stem}.md").read_text(encoding="utf-8")
    body = source.split("\n---\n", 1)[1] if source.startswith("---\n") else source
    first_lines = [line for line in body.splitlines() if line.strip()][:2]
    assert badge(stem) in first_lines, (
        f"lessons/{stem}.md: the first line after the front matter (or after the '# title') must be\n"
        f"{badge(stem)}")
    first_markdown = cells_of(stem, "markdown")[0]
    assert badge(stem) in first_markdown.splitlines()[:3], (
        f"lessons/{stem}.ipynb: the first markdown cell lacks the Colab badge: run "
        f"`.venv/bin/jupytext --to ipynb --update lessons/{stem}.md`")


def test_readme_links_every_episode_to_colab():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [colab_url(stem) for stem in EPISODES if colab_url(stem) not in readme]
    assert not missing, "README.md has no 'Open in Colab' link to:\n" + "\n".join(missing)


def test_no_colab_link_to_another_repository_or_notebook():
    """Badges copied from another episode, or left over from a fork, point to the wrong place."""
    allowed = {colab_url(stem) for stem in EPISODES}
    found = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "lessons").glob("*.md"))]:
        for url in re.findall(r"https://colab\.research\.google\.com/github/[^\s)\"'>]+", path.read_text()):
            found.setdefault(url, path.relative_to(ROOT).as_posix())
    wrong = {url: where for url, where in found.items() if url not in allowed}
    assert not wrong, f"Colab links that match no episode of _config.yml: {wrong}"
    for stem in EPISODES:
        text = (ROOT / "lessons" / f"{stem}.md").read_text()
        others = [s for s in EPISODES if s != stem and colab_url(s) in text]
        assert not others, f"lessons/{stem}.md links to the Colab notebook of {others}"


def test_site_table_of_contents_lists_the_episodes_in_order():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))

    def files(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for item in node:
                yield from files(item)

    in_toc = [f for f in files(toc) if f.startswith("lessons/")]
    assert in_toc == [f"lessons/{stem}" for stem in EPISODES], (
        "_toc.yml must list the episodes of _config.yml, in the same order")


# --- the set-up cell ----------------------------------------------------------------------------

@pytest.mark.parametrize("stem", EPISODES)
def test_first_code_cell_is_the_setup_cell(stem):
    first_code = cells_of(stem, "code")[0]
    assert first_code.strip() == expected_setup_cell(episode_number(stem)), (
        f"lessons/{stem}: the first code cell must be the set-up cell:\n"
        f"{expected_setup_cell(episode_number(stem))}")


def find_mirror():
    for candidate in (os.environ.get("LESSON_MIRROR"), ROOT.parent / "shared" / "offline"):
        if candidate and (Path(candidate) / "data").is_dir():
            return Path(candidate).resolve()
    if os.environ.get("CI", "").lower() == "true":
        return None  # CI with internet (the GitHub workflow): the cell fetches online
    pytest.skip("no offline mirror: set LESSON_MIRROR to run the set-up cell without network")


def preinstalled_site(folder):
    """A folder that shows the lesson's dependencies, but not lesson_helpers, to another Python:
    links to everything in this environment's site-packages except the helpers themselves."""
    folder.mkdir()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for entry in site_packages.iterdir():
        name = entry.name.lower()
        if name.startswith(("lesson_helpers", "__editable__", "_distutils_hack", "distutils-precedence",
                            "pip", "setuptools")) or name.endswith(".pth"):
            continue
        (folder / entry.name).symlink_to(entry)
    return folder


def build_wheel(out):
    """The helpers' wheel, built from this checkout's package files with the pinned setuptools
    of .venv-site (what pip builds on Colab from the git URL)."""
    result = subprocess.run(["make", "--no-print-directory", ".venv-site/.installed"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "_config.yml"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "lesson_helpers", source / "lesson_helpers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([str(ROOT / ".venv-site" / "bin" / "python"), "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(out / "wheels"), str(source)],
                   check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (out / "wheels").glob("lesson_helpers-*.whl")
    return wheel


RUN_CELL = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell

cell = json.loads(sys.argv[1])
shell = InteractiveShell.instance()
pip_calls = []
real_pip = shell.find_line_magic("pip")

def pip(line):
    pip_calls.append(line)
    return real_pip(line)

shell.register_magic_function(pip, "line", "pip")
for run in (1, 2):
    result = shell.run_cell(cell)
    result.raise_error()
    print("RUN", run, "pip calls:", len(pip_calls), flush=True)
import lesson_helpers
print("HELPERS", lesson_helpers.__file__)
print("DATA_DIR", shell.user_ns["data_dir"])
"""


@pytest.mark.slow
def test_setup_cell_installs_helpers_and_fetches_data_like_on_colab(tmp_path):
    mirror = find_mirror()
    stem = EPISODES[0]
    cell = cells_of(stem, "code")[0]
    spec = f"lesson-helpers @ git+{REPO_URL}"
    assert f'"{spec}"' in cell

    wheel = build_wheel(tmp_path)
    venv = tmp_path / "colab-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    venv_site = Path(subprocess.check_output(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (venv_site / "preinstalled.pth").write_text(f"{preinstalled_site(tmp_path / 'preinstalled')}\n")

    content, home = tmp_path / "content", tmp_path / "home"  # Colab's working folder and home
    content.mkdir()
    home.mkdir()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LESSON_", "KERAS_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1")
    if mirror is not None:
        env["LESSON_MIRROR"] = str(mirror)
    offline_cell = cell.replace(spec, f"lesson-helpers @ {wheel.as_uri()}")
    result = subprocess.run([str(python), "-c", RUN_CELL, json.dumps(offline_cell)], cwd=content, env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    assert "RUN 1 pip calls: 1" in output, f"the first run did not install the helpers:\n{output}"
    assert "RUN 2 pip calls: 1" in output, f"the second run installed again:\n{output}"
    helpers = re.search(r"^HELPERS (.*)$", output, re.M).group(1)
    assert Path(helpers).is_relative_to(venv), f"lesson_helpers came from {helpers}, not from the install"
    assert re.search(r"^DATA_DIR (.*)$", output, re.M).group(1) == str(content / "data")
    assert f"Episode {episode_number(stem)}: " in output and " files ready" in output, output
    assert (content / "data" / "doggy_door_images" / "happy_dog.jpg").is_file()
    assert (home / ".keras" / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5").is_file()


LOCAL_RUN = """
import json, sys
from IPython.core.interactiveshell import InteractiveShell

shell = InteractiveShell.instance()
def pip(line):
    raise AssertionError("the set-up cell ran %pip in the lesson's own environment")
shell.register_magic_function(pip, "line", "pip")
shell.run_cell(json.loads(sys.argv[1])).raise_error()
print("DATA_DIR", shell.user_ns["data_dir"])
"""


@pytest.mark.slow
def test_setup_cell_changes_nothing_in_the_lessons_own_environment(tmp_path):
    mirror = find_mirror()
    env = dict(os.environ, LESSON_DATA_DIR=str(tmp_path / "data"), KERAS_HOME=str(tmp_path / "keras"))
    if mirror is not None:
        env["LESSON_MIRROR"] = str(mirror)
    cell = cells_of(EPISODES[0], "code")[0]
    result = subprocess.run([sys.executable, "-c", LOCAL_RUN, json.dumps(cell)], cwd=ROOT / "lessons",
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"DATA_DIR {tmp_path / 'data'}" in result.stdout
