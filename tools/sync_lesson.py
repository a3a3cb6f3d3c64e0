"""Write what follows from _config.yml: the README's table of episodes and the website's _toc.yml.

    python tools/sync_lesson.py          # rewrite them (what `make metadata` runs)
    python tools/sync_lesson.py --check  # exit 1 and say which is out of date (tests/test_lesson_metadata.py)

The README's table sits between the markers <!-- episodes:start --> and <!-- episodes:end -->;
the rest of the README is left alone. _toc.yml is written whole.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lesson_helpers import lesson  # noqa: E402

README = REPO / "README.md"
TOC = REPO / "_toc.yml"
START, END = "<!-- episodes:start -->", "<!-- episodes:end -->"


def episode_table():
    rows = ["| # | Episode | Skills | Teaching + exercises | Notebook run time* | Colab |",
            "|---|---|---|---|---|---|"]
    for ep in lesson.episodes():
        meta = ep.front_matter()
        runtime = f"{meta['runtime_cpu_seconds']} s" if meta.get("runtime_cpu_seconds") else "–"
        rows.append(f"| {ep.number} | [{meta.get('title', ep.stem)}](lessons/{ep.file}) | {ep.summary} | "
                    f"{meta.get('teaching', '?')} + {meta.get('exercises', '?')} min | {runtime} | "
                    f"{ep.colab_badge} |")
    return "\n".join(rows)


def readme_text(current):
    if current.count(START) != 1 or current.count(END) != 1:
        raise SystemExit(f"{README.name}: needs one {START} and one {END} line around the table of episodes")
    before, rest = current.split(START)
    _, after = rest.split(END)
    return f"{before}{START}\n{episode_table()}\n{END}{after}"


def toc_text():
    def chapters(files, indent="      "):
        return "".join(f"{indent}- file: {Path(f).with_suffix('')}\n" for f in files)

    parts = [("Learners", lesson.config().get("learners") or [], ""),
             ("Episodes", [ep.docname for ep in lesson.episodes()],
              "    numbered: 1          # \"1. Pretrained models...\" but no numbers on the sections inside\n"),
             ("Reference", (lesson.config().get("reference") or []) + (lesson.config().get("instructors") or [])
              + (lesson.config().get("profiles") or []), "")]
    text = ("# The website's pages, in order (Jupyter Book 1.x). Written by tools/sync_lesson.py from\n"
            "# _config.yml (`make metadata`): edit _config.yml, not this file.\n"
            "format: jb-book\nroot: index\nparts:\n")
    for caption, files, extra in parts:
        if files:
            text += f"  - caption: {caption}\n{extra}    chapters:\n{chapters(files)}"
    return text


def main(argv):
    check = "--check" in argv
    wanted = {README: readme_text(README.read_text(encoding="utf-8")), TOC: toc_text()}
    stale = [path.name for path, text in wanted.items() if path.read_text(encoding="utf-8") != text]
    if check:
        if stale:
            print(f"out of date with _config.yml and the episodes' front matter: {', '.join(stale)}; "
                  "run `make metadata`")
            return 1
        return 0
    for path, text in wanted.items():
        if path.name in stale:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
