"""Sphinx extension that gives the lesson's pages the Carpentries structure.

The episodes are written so that they read well in JupyterLab, on Colab and on GitHub, with no
directives: plain front matter, ``### Challenge: ...`` headings, ``<details>`` solutions and
``> **Callout: ...**`` blockquotes. This extension turns those conventions into the site's
look, without changing the episode files:

* the front matter (the notebook's first raw cell) becomes an "Overview" box under the title
  (teaching/exercise minutes, questions, objectives) and a "Key points" box at the end;
* a section whose title starts with "Challenge" gets the class ``challenge``;
* ``<details><summary>Solution</summary>`` ... ``</details>``, even when the solution spans
  several notebook cells, becomes one ``<details class="solution">`` element, closed until
  clicked;
* a blockquote that starts with **Callout: ...** becomes a callout box;
* the ``{schedule}`` directive (used on the landing page) renders the schedule from the
  episodes' ``teaching`` and ``exercises`` minutes, in the order of ``episodes`` in _config.yml;
* when the episode notebooks carry outputs made with the offline stand-in weights (the executed
  site of ``make site-executed``, see site/executed.py), every page gets a banner saying so
  (``STAND_IN_BANNER``; the publishing workflow refuses a site that contains it).

Figures: a code cell's ``mystnb={"image": {"alt": "..."}}`` metadata (Jupytext, on the fence line)
becomes the alt text of its output images; MyST-NB does this itself.
"""

import html
import importlib.util
import json
import re
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)


def _load_lesson_metadata():
    """lesson_helpers/lesson.py, the one reader of _config.yml, loaded by path: this site's own
    environment does not have the lesson's helpers (or their dependencies) installed."""
    path = Path(__file__).resolve().parents[1] / "lesson_helpers" / "lesson.py"
    spec = importlib.util.spec_from_file_location("lesson_metadata", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lesson = _load_lesson_metadata()
STATIC = Path(__file__).parent / "static"
# Colab's badge image, and the copy the site shows instead (so that pages look right offline).
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = "/site/static/colab-badge.svg"
# Shown on every page of a site built from notebooks run with the offline stand-in weights. The
# publishing workflow fails when this text is in the built site: keep it exactly as it is.
STAND_IN_BANNER = "Built with stand-in weights: not for publication"
STAND_IN_DETAIL = ("The outputs on these pages were made offline with stand-in MobileNetV2 weights, not the "
                   "real ImageNet model: predictions and accuracies differ from what learners will see.")
DETAILS_OPEN = re.compile(r"^\s*<details>\s*(?:<summary>(?P<summary>.*?)</summary>)?\s*$", re.S | re.I)
DETAILS_CLOSE = re.compile(r"^\s*</details>\s*$", re.I)


# --- front matter -------------------------------------------------------------------------------

def notebook_front_matter(notebook):
    """The Carpentries front matter of a notebook (its first raw cell), or None."""
    for cell in notebook.get("cells", [])[:1]:
        if cell.get("cell_type") == "raw":
            return lesson.split_front_matter("".join(cell.get("source", "")))[0]
    return None


def _bullets(items):
    return "\n".join(f"- {item}" for item in items or [])


def overview_markdown(meta):
    minutes = f"**Teaching:** {meta.get('teaching', '?')} min · **Exercises:** {meta.get('exercises', '?')} min"
    if meta.get("runtime_cpu_seconds"):
        minutes += f" · **Notebook run time:** {meta['runtime_cpu_seconds']} s on a 2-core CPU"
    return (f"\n\n````{{admonition}} Overview\n:class: overview\n\n{minutes}\n\n"
            f"**Questions**\n\n{_bullets(meta.get('questions'))}\n\n"
            f"**Objectives**\n\n{_bullets(meta.get('objectives'))}\n````\n\n")


def keypoints_markdown(meta):
    return f"````{{admonition}} Key points\n:class: keypoints\n\n{_bullets(meta.get('keypoints'))}\n````\n"


def _markdown_cell(source, cell_id):
    return {"cell_type": "markdown", "id": cell_id, "metadata": {}, "source": source}


def split_badge(text):
    """(the "Open in Colab" badge line, the rest) of a markdown cell that starts with that badge."""
    stripped = text.lstrip("\n")
    first, _, rest = stripped.partition("\n")
    if "colab.research.google.com" in first:
        return first + "\n", rest
    return "", text


def add_episode_structure(app, docname, source):
    """source-read: turn an episode notebook's front matter into the overview and keypoints boxes."""
    if not str(app.env.doc2path(docname)).endswith(".ipynb"):
        return
    notebook = json.loads(source[0])
    meta = notebook_front_matter(notebook)
    if meta is None:
        return
    cells = notebook["cells"][1:]  # drop the raw front-matter cell: it is shown as boxes instead
    first_md = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"), None)
    text = "".join(cells[first_md]["source"]) if first_md is not None else ""
    if first_md is not None and text.lstrip().startswith("# "):
        title, _, rest = text.lstrip().partition("\n")
        badge, rest = split_badge(rest)
        cells[first_md]["source"] = title + "\n\n" + badge + overview_markdown(meta) + rest
    else:  # no title in the notebook: use the front matter's
        if first_md is not None:
            badge, rest = split_badge(text)
            cells[first_md]["source"] = rest
        else:
            badge = ""
        heading = f"# {meta.get('title', docname)}\n\n{badge}"
        cells.insert(0, _markdown_cell(heading + overview_markdown(meta), "site-overview"))
    cells.append(_markdown_cell(keypoints_markdown(meta), "site-keypoints"))
    for cell in cells:
        if cell["cell_type"] == "markdown":
            cell["source"] = "".join(cell["source"]).replace(COLAB_BADGE, LOCAL_BADGE)
    notebook["cells"] = cells
    source[0] = json.dumps(notebook)


# --- challenges, solutions, callouts ------------------------------------------------------------

class solution(nodes.General, nodes.Element):
    """A collapsible solution: <details class="solution"><summary>...</summary>...</details>."""


def visit_solution_html(self, node):
    self.body.append(f'<details class="solution"><summary>{html.escape(node["summary"])}</summary>'
                     '<div class="solution-body">\n')


def depart_solution_html(self, node):
    self.body.append("</div></details>\n")


def _skip(self, node):
    raise nodes.SkipNode


def wrap_solutions(doctree):
    """Wrap the nodes between raw ``<details>`` and ``</details>`` siblings into a solution node."""
    for opener in list(doctree.findall(nodes.raw)):
        match = DETAILS_OPEN.match(opener.astext()) if "html" in opener.get("format", "") else None
        parent = opener.parent
        if not match or parent is None:
            continue
        siblings = parent.children[parent.index(opener) + 1:]
        closer = next((n for n in siblings if isinstance(n, nodes.raw) and DETAILS_CLOSE.match(n.astext())), None)
        if closer is None:
            continue  # unbalanced: leave the raw HTML to the browser
        body = siblings[:siblings.index(closer)]
        node = solution(summary=html.unescape((match.group("summary") or "Details").strip()))
        for child in body:
            parent.remove(child)
        node.extend(body)
        parent.replace(opener, node)
        parent.remove(closer)


def mark_challenges(doctree):
    for section in doctree.findall(nodes.section):
        title = section.next_node(nodes.title)
        if title is not None and title.astext().lower().startswith("challenge"):
            section["classes"].append("challenge")


def make_callouts(doctree):
    """A blockquote starting with **Callout: title** becomes an admonition with that title."""
    for quote in list(doctree.findall(nodes.block_quote)):
        first = quote.children[0] if quote.children else None
        if not isinstance(first, nodes.paragraph) or not first.children:
            continue
        # the first child that is not empty text (MyST may start a paragraph with an empty Text node)
        strong = next((c for c in first.children if not (isinstance(c, nodes.Text) and not c.strip())), None)
        if not isinstance(strong, nodes.strong) or not strong.astext().lower().startswith("callout"):
            continue
        label = strong.astext()
        title = label.split(":", 1)[1].strip() if ":" in label else label
        box = nodes.admonition(classes=["callout"])
        box += nodes.title(text=f"Callout: {title}" if title != label else label)
        first.remove(strong)
        if not first.astext().strip():
            quote.remove(first)
        box.extend(quote.children)
        quote.replace_self(box)


def structure_doctree(app, doctree):
    wrap_solutions(doctree)
    mark_challenges(doctree)
    make_callouts(doctree)


# --- schedule -----------------------------------------------------------------------------------

class ScheduleDirective(SphinxDirective):
    """A table of the episodes with their times, from _config.yml and each episode's front matter."""

    def run(self):
        table = nodes.table(classes=["schedule"])
        group = nodes.tgroup(cols=4)
        table += group
        for width in (10, 50, 20, 20):
            group += nodes.colspec(colwidth=width)
        group += nodes.thead("", self._row(["Start", "Episode", "Teaching / exercises", "Questions"]))
        body = nodes.tbody()
        group += body
        elapsed = 0
        for ep in lesson.episodes():
            present = [p for p in (ep.source, ep.notebook) if p.is_file()]
            if not present:
                logger.warning(f"_config.yml lists the episode {ep.file}, but lessons/ has no such file",
                               location=(self.env.docname, self.lineno))
                continue
            for dependency in present:
                self.env.note_dependency(str(dependency))
            meta = ep.front_matter()
            docname = ep.docname
            link = addnodes.pending_xref("", refdomain="std", reftype="doc", reftarget=f"/{docname}",
                                         refexplicit=True, refdoc=self.env.docname)
            link += nodes.inline(text=meta.get("title", docname))
            teaching, exercises = int(meta.get("teaching", 0)), int(meta.get("exercises", 0))
            questions = nodes.bullet_list()
            for question in meta.get("questions", []):
                questions += nodes.list_item("", nodes.paragraph(text=question))
            body += self._row([_clock(elapsed), nodes.paragraph("", "", link),
                               f"{teaching} + {exercises} min", questions])
            elapsed += teaching + exercises
        body += self._row([_clock(elapsed), "Finish", f"{elapsed} min in all", ""])
        return [table]

    @staticmethod
    def _row(cells):
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += cell if isinstance(cell, nodes.Node) else nodes.paragraph(text=cell)
            row += entry
        return row


def _clock(minutes):
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --- set-up ---------------------------------------------------------------------------------------

def drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    """Keep one copy of each <script>: sphinx-thebe (loaded by Jupyter Book 1.x) adds its inline
    set-up script twice, and the second `const THEBE_JS_URL` is a JavaScript error on every page."""
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # an inline script has filename None or "" depending on who added it
        key = (getattr(script, "filename", None) or "", repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def add_static_path(app):
    app.config.html_static_path.append(str(STATIC))


def default_mode(app, pagename, templatename, context, doctree):
    """Light/dark mode follows the reader's system ("auto"): with no default, the theme logs a
    console error on a reader's first visit ("Got invalid theme mode")."""
    if not context.get("default_mode"):
        context["default_mode"] = "auto"


# --- the stand-in banner --------------------------------------------------------------------------

def made_with_stand_in_weights(srcdir):
    """True when an episode notebook under srcdir/lessons has outputs made with stand-in weights:
    recorded so by site/executed.py, or an output that mentions them (lesson_helpers prints a note)."""
    for path in sorted(Path(srcdir, "lessons").glob("*.ipynb")):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        if notebook.get("metadata", {}).get("lesson_site", {}).get("weights") == "stand-in":
            return True
        for cell in notebook.get("cells", []):
            for output in cell.get("outputs", []):
                text = json.dumps(output.get("text", "")) + json.dumps(output.get("data", {}).get("text/plain", ""))
                if "stand-in" in text.lower():
                    return True
    return False


def stand_in_banner(app, config):
    if made_with_stand_in_weights(app.srcdir):
        config.html_theme_options = {
            **(config.html_theme_options or {}),
            "announcement": (f'<p class="lesson-stand-in-banner"><strong>{STAND_IN_BANNER}.</strong> '
                             f"{html.escape(STAND_IN_DETAIL)}</p>"),
        }
        logger.info(f"carpentries: stand-in weights in the notebooks' outputs: banner {STAND_IN_BANNER!r}")


def favicon(app, config):
    if not config.html_favicon:  # browsers ask for one: a 404 is a console error on every first visit
        config.html_favicon = str(STATIC / "favicon.svg")


def setup(app):
    app.add_node(solution, html=(visit_solution_html, depart_solution_html),
                 latex=(_skip, None), text=(_skip, None), man=(_skip, None), texinfo=(_skip, None))
    app.add_directive("schedule", ScheduleDirective)
    app.connect("source-read", add_episode_structure)
    app.connect("doctree-read", structure_doctree)
    app.connect("builder-inited", add_static_path)
    app.connect("config-inited", stand_in_banner)
    app.connect("config-inited", favicon)
    app.connect("html-page-context", default_mode)
    app.connect("html-page-context", drop_duplicate_scripts, priority=100)  # early: a later handler may end the event
    app.add_css_file("carpentries.css")
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
