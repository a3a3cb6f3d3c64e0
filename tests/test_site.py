"""The lesson website, checked the way a learner meets it: in a real browser.

The site under test is the executed one (`make site-executed`: every episode with its figures and
printed results; inside `make test` it reuses the outputs of the nbval run, see site/executed.py).
It is served on 127.0.0.1 and opened with Playwright (pytest-playwright's fixtures) in Debian's
headless Chromium (/usr/bin/chromium: Playwright never downloads a browser of its own), with every
other host blocked. The tests check that:

* every page loads with no console error, and none of its links or images that point inside the
  site is broken (against the files, anchors included, and in the browser for images);
* axe (axe-playwright-python, which bundles axe-core) finds no serious or critical accessibility
  violation on any page, and no moderate one in the lesson's own content (the article, the banner);
  moderate findings in the theme's frame (e.g. its sidebar, axe's `region`) are reported, not failed;
* every <img> has an alt text (not empty, not the file's path that Sphinx writes when a figure cell
  has no alt metadata);
* every episode page shows its title, an overview box with its objectives at the top, a key points
  box at the end, challenges whose solutions are hidden until their summary is clicked, the
  "Open in Colab" link built from _config.yml, and the outputs of its notebook: every figure (as a
  loaded image with the cell's alt text) and every printed result;
* a site built with the offline stand-in weights carries the stand-in banner on every page
  (site/carpentries.py STAND_IN_BANNER), and a site built with the real weights does not.

Screenshots of every page (and of each episode's first opened solution) are kept in
_build/screenshots/. In CI (CI=true) a missing chromium is a failure; elsewhere the test is skipped.
"""

import ast
import functools
import html.parser
import http.server
import json
import os
import re
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest
import yaml

from lesson_helpers import lesson

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "executed"
HTML = EXECUTED / "_build" / "html"
SRC = EXECUTED / "src"
SHOTS = ROOT / "_build" / "screenshots"
EPISODES = [ep.stem for ep in lesson.episodes()]
CHROMIUM = "/usr/bin/chromium"
# Nothing but the test's own server: other hosts fail at once instead of waiting for a timeout.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
LOCAL_HOSTS = ("127.0.0.1",)
# Where a node sits decides whose an axe finding is: in these, the lesson's; elsewhere, the theme's.
LESSON_PARTS = "article.bd-article, .lesson-stand-in-banner"
REMOVED_TAGS = {"remove-cell", "remove-output", "remove_cell", "remove_output"}

pytestmark = pytest.mark.slow


def stand_in_banner_text():
    """STAND_IN_BANNER from site/carpentries.py (read, not imported: that module needs Sphinx)."""
    tree = ast.parse((ROOT / "site" / "carpentries.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "STAND_IN_BANNER" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("site/carpentries.py defines no STAND_IN_BANNER")


STAND_IN_BANNER = stand_in_banner_text()


# --- build and serve --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def site():
    """A fresh build of the executed site (make site-executed), served on localhost."""
    result = subprocess.run(["make", "--no-print-directory", "site-executed"], cwd=ROOT,
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, (f"make site-executed failed:\n{result.stdout[-4000:]}\n"
                                    f"{result.stderr[-4000:]}")
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def site_pages():
    """Every HTML page of the site (not the copied sources or the theme's assets)."""
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
                  if not p.relative_to(HTML).parts[0].startswith("_"))


def executed_notebook(stem):
    return json.loads((SRC / "lessons" / f"{stem}.ipynb").read_text(encoding="utf-8"))


def built_with_stand_in_weights():
    return any(executed_notebook(stem)["metadata"].get("lesson_site", {}).get("weights") == "stand-in"
               for stem in EPISODES)


# --- the browser (pytest-playwright's fixtures, Debian's chromium, offline) -------------------

@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not os.access(CHROMIUM, os.X_OK):
        message = f"headless Chromium is needed at {CHROMIUM}: install Debian's package (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; .ci/run installs it in CI")
        pytest.skip(message)
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True,
            "args": [*browser_type_launch_args.get("args", []), *CHROMIUM_ARGS]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}}


class Visit:
    """A page of the site open in the browser, with what went wrong while it loaded."""

    def __init__(self, page, base):
        self.page, self.base = page, base
        self.console_errors, self.page_errors, self.blocked = [], [], []
        page.on("console", lambda m: self.console_errors.append(f"{m.text} ({m.location.get('url')})")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.route("**/*", self._only_local)

    def _only_local(self, route):
        if urllib.parse.urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("blockedbyclient")

    def open(self, path):
        for record in (self.console_errors, self.page_errors, self.blocked):
            record.clear()
        self.page.goto(self.base + path, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        return self.page


@pytest.fixture
def visit(page, site):
    return Visit(page, site)


# --- links and images, from the files ----------------------------------------------------------

class LinkCollector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids, self.images = [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for attr in ("href", "src"):
            if attrs.get(attr) is not None:
                self.links.append((tag, attr, attrs[attr]))


@functools.cache
def parse_page(path):
    collector = LinkCollector()
    collector.feed(Path(path).read_text(encoding="utf-8"))
    return collector


def broken_internal_links(page):
    """Every href/src of a page that points inside the site but not to a file (or anchor) there."""
    broken = []
    source = HTML / page
    for tag, attr, value in parse_page(source).links:
        url = urllib.parse.urlsplit(value)
        if url.scheme or url.netloc or value.startswith(("mailto:", "javascript:", "data:")):
            continue  # external: not this site's business (and not reachable here)
        if not url.path:  # "#anchor" on the same page
            target = source
        else:
            target = (source.parent / urllib.parse.unquote(url.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
        if not target.is_file() or HTML.resolve() not in target.resolve().parents:
            broken.append(f"<{tag} {attr}={value!r}>: no file {target}")
        elif url.fragment and target.suffix == ".html" and url.fragment not in parse_page(target).ids:
            broken.append(f"<{tag} {attr}={value!r}>: no id {url.fragment!r} in {target.name}")
    return broken


# --- what the browser reads on a page ---------------------------------------------------------

PAGE_STATE = """() => {
  const visible = el => !!el && el.checkVisibility() && el.getBoundingClientRect().height > 0;
  const h1 = document.querySelector("article h1");
  const sameOrigin = img => new URL(img.currentSrc || img.src, location.href).origin === location.origin;
  const banner = document.querySelector(".lesson-stand-in-banner");
  return {
    title: h1 ? h1.innerText : null,
    text: document.querySelector("article") ? document.querySelector("article").innerText : "",
    brokenImages: [...document.images].filter(sameOrigin)
        .filter(img => img.complete && img.naturalWidth === 0).map(img => img.getAttribute("src")),
    banner: visible(banner) ? banner.innerText : null,
    overview: visible(document.querySelector("article .admonition.overview"))
        ? document.querySelector("article .admonition.overview").innerText : null,
    keypoints: visible(document.querySelector("article .admonition.keypoints"))
        ? document.querySelector("article .admonition.keypoints").innerText : null,
    overviewBeforeFirstSection: (() => {
      const box = document.querySelector("article .admonition.overview");
      const h2 = document.querySelector("article h2");
      return !!box && (!h2 || !!(box.compareDocumentPosition(h2) & Node.DOCUMENT_POSITION_FOLLOWING));
    })(),
    keypointsLast: (() => {
      const box = document.querySelector("article .admonition.keypoints");
      const all = [...document.querySelectorAll("article section.challenge, article details, article h2")];
      return !!box && all.every(el => !!(el.compareDocumentPosition(box) & Node.DOCUMENT_POSITION_FOLLOWING));
    })(),
    challenges: document.querySelectorAll("article section.challenge").length,
    colabLinks: [...document.querySelectorAll("a[href^='https://colab.research.google.com/']")].map(a => a.href),
  };
}"""

OUTPUTS = """() => {
  const outputs = [...document.querySelectorAll("article .cell_output")];
  return {
    images: outputs.flatMap(o => [...o.querySelectorAll("img")]).map(img => ({
      alt: img.getAttribute("alt") || "", loaded: img.complete && img.naturalWidth > 0,
      visible: img.checkVisibility() && img.getBoundingClientRect().height > 0})),
    text: outputs.map(o => o.innerText).join("\\n"),
  };
}"""

LESSON_MADE = """(targets) => targets.map(target => {
  const selector = Array.isArray(target) ? target[target.length - 1] : target;
  const el = document.querySelector(selector);
  return !!el && !!el.closest(arguments_selector);
})""".replace("arguments_selector", json.dumps(LESSON_PARTS))


def plain(text):
    """Text as a reader sees it, for comparing Markdown source with rendered text (which has
    typographic quotes and dashes)."""
    text = str(text).translate(str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                                              "\u2013": "-", "\u2014": "-", "\u2026": "..."}))
    text = text.replace("---", "-").replace("--", "-")
    return re.sub(r"\s+", " ", re.sub(r"[`*_]", "", text)).strip()


def front_matter(stem):
    return lesson.front_matter(ROOT / "lessons" / f"{stem}.ipynb")


colab_url = lesson.colab_url


def shown_outputs(stem):
    """What the executed notebook's shown cells put on the page: (alt texts of their images, printed lines)."""
    images, printed = [], []
    for cell in executed_notebook(stem)["cells"]:
        if cell["cell_type"] != "code" or REMOVED_TAGS & set(cell["metadata"].get("tags", [])):
            continue
        alt = cell["metadata"].get("mystnb", {}).get("image", {}).get("alt", "")
        for output in cell.get("outputs", []):
            if "image/png" in output.get("data", {}):
                images.append(alt)
            elif output.get("output_type") == "stream" and output.get("name") == "stdout":
                text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", "".join(output["text"]))  # terminal colours
                # Keras progress bars redraw lines with \r and \b: keep the lines a reader sees whole
                printed += [line for line in text.split("\n") if line.strip() and not re.search(r"[\r\b]", line)]
    return images, printed


# --- the tests --------------------------------------------------------------------------------

def toc_files(entry):
    """Every `file:` (and the `root:`) in _toc.yml, however deeply nested."""
    if isinstance(entry, dict):
        for key, value in entry.items():
            if key in ("root", "file"):
                yield str(value)
            else:
                yield from toc_files(value)
    elif isinstance(entry, list):
        for item in entry:
            yield from toc_files(item)


def test_site_has_every_page(site):
    """Every page of the table of contents (the Carpentries pages included) and every episode is built."""
    pages = site_pages()
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    expected = {f"{Path(name).with_suffix('')}.html" for name in toc_files(toc)}
    expected |= {"index.html", "learners/setup.html", *(f"lessons/{stem}.html" for stem in EPISODES)}
    missing = sorted(page for page in expected if page not in pages)
    assert not missing, f"pages missing from {HTML}: {missing}"


def test_no_broken_internal_links_or_images(site):
    broken = {page: b for page in site_pages() if (b := broken_internal_links(page))}
    assert not broken, "broken internal links or images:\n" + "\n".join(
        f"{page}: {item}" for page, items in broken.items() for item in items)


def test_every_image_has_alt_text(site):
    """An <img> needs a text alternative; Sphinx writes the file's path as alt when a figure cell has no
    mystnb={"image": {"alt": ...}} metadata, which is no text alternative either."""
    missing = []
    for page in site_pages():
        for image in parse_page(HTML / page).images:
            alt, src = (image.get("alt") or "").strip(), image.get("src") or ""
            if not alt or alt == src or re.search(r"\.(png|jpe?g|gif|svg|webp)$", alt, re.I):
                missing.append(f"{page}: <img src={src[:60]!r}> alt={alt[:60]!r}")
    assert not missing, (f"{len(missing)} images without alt text (a figure cell needs "
                         '```python mystnb={"image": {"alt": "..."}}):\n' + "\n".join(missing))


def test_every_page_in_chromium(visit):
    SHOTS.mkdir(parents=True, exist_ok=True)
    stand_in = built_with_stand_in_weights()
    problems = []
    for path in site_pages():
        page = visit.open(path)
        state = page.evaluate(PAGE_STATE)
        page.screenshot(path=SHOTS / (path.replace("/", "__").removesuffix(".html") + ".png"), full_page=True)
        if state["brokenImages"]:
            problems.append(f"{path}: images that did not load: {state['brokenImages']}")
        if not state["title"] and path not in ("genindex.html", "search.html"):
            problems.append(f"{path}: no title (h1)")
        if visit.page_errors:
            problems.append(f"{path}: JavaScript errors: {visit.page_errors}")
        if visit.console_errors:
            problems.append(f"{path}: console errors: {visit.console_errors}")
        if visit.blocked:
            problems.append(f"{path}: asks for other hosts when it loads (fails offline): {visit.blocked}")
        if stand_in and (not state["banner"] or STAND_IN_BANNER not in state["banner"]):
            problems.append(f"{path}: built with stand-in weights, but no visible banner {STAND_IN_BANNER!r}")
        if not stand_in and state["banner"] is not None:
            problems.append(f"{path}: the stand-in banner is shown, but the weights were real")
    assert not problems, "\n".join(problems)


def test_stand_in_banner_matches_the_weights(site):
    """Every page of a stand-in build contains the banner text (what the publishing workflow greps for)."""
    stand_in = built_with_stand_in_weights()
    pages = site_pages()
    with_banner = [p for p in pages if STAND_IN_BANNER in (HTML / p).read_text(encoding="utf-8")]
    assert with_banner == (pages if stand_in else []), (
        f"weights {'stand-in' if stand_in else 'real'}, but the banner is on {len(with_banner)} of {len(pages)} pages")


def test_accessibility_with_axe(visit):
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    failures, theme_findings = [], []
    for path in site_pages():
        page = visit.open(path)
        for violation in axe.run(page).response["violations"]:
            targets = [node["target"] for node in violation["nodes"]]
            ours = page.evaluate(LESSON_MADE, targets)
            line = f"{path}: {violation['impact']} {violation['id']} ({violation['help']}) at {targets[:5]}"
            if violation["impact"] in ("serious", "critical") or (violation["impact"] == "moderate" and any(ours)):
                failures.append(line)
            else:
                theme_findings.append(line)
    if theme_findings:
        print("axe findings not failed (minor, or in the theme's frame):\n" + "\n".join(theme_findings))
    assert not failures, "accessibility violations:\n" + "\n".join(failures)


@pytest.mark.parametrize("stem", EPISODES)
def test_episode_page_structure(visit, stem):
    meta = front_matter(stem)
    page = visit.open(f"lessons/{stem}.html")
    state = page.evaluate(PAGE_STATE)

    assert plain(meta["title"]) in plain(state["title"]), f"title {meta['title']!r} not shown"
    assert state["overview"], "no visible overview box (questions and objectives) at the top"
    assert state["overviewBeforeFirstSection"], "the overview box is not at the top of the page"
    for item in meta["questions"] + meta["objectives"]:
        assert plain(item) in plain(state["overview"]), f"overview lacks {item!r}"
    assert state["keypoints"], "no visible key points box"
    assert state["keypointsLast"], "the key points box is not at the end of the page"
    for item in meta["keypoints"]:
        assert plain(item) in plain(state["keypoints"]), f"key points lack {item!r}"
    assert colab_url(stem) in state["colabLinks"], f"no 'Open in Colab' link to {colab_url(stem)}"
    assert state["challenges"] >= 1, "no challenge on the page"

    solutions = page.locator("article details.solution")
    assert solutions.count() >= 1, "no challenge with a collapsible solution"
    for index in range(solutions.count()):  # every solution on the page, one click each
        details = solutions.nth(index)
        where = f"solution {index + 1} of {solutions.count()}"
        assert details.evaluate("d => !!d.closest('section.challenge')"), f"{where} is not inside a challenge"
        body = details.locator(".solution-body")
        assert not details.evaluate("d => d.open") and not body.is_visible(), f"{where} is visible before any click"
        details.locator("summary").click()
        assert details.evaluate("d => d.open") and body.is_visible(), f"{where} did not open when its summary was clicked"
        if index == 0:
            SHOTS.mkdir(parents=True, exist_ok=True)
            challenge = details.locator("xpath=ancestor::section[contains(@class, 'challenge')][1]")
            challenge.screenshot(path=SHOTS / f"lessons__{stem}__solution-open.png")


@pytest.mark.parametrize("stem", EPISODES)
def test_episode_page_shows_its_outputs(visit, stem):
    """The executed page shows what the notebook made: every figure, with its alt text, and every printed line."""
    images, printed = shown_outputs(stem)
    assert images and printed, f"{stem}: the executed notebook has no figures or no printed output"
    page = visit.open(f"lessons/{stem}.html")
    shown = page.evaluate(OUTPUTS)
    assert len(shown["images"]) == len(images), (
        f"{len(images)} figures in the executed notebook, {len(shown['images'])} on the page")
    for n, (image, alt) in enumerate(zip(shown["images"], images), 1):
        assert image["loaded"] and image["visible"], f"figure {n} is not shown"
        if alt:
            assert plain(image["alt"]) == plain(alt), f"figure {n}: alt {image['alt']!r}, cell metadata says {alt!r}"
    page_text = plain(shown["text"])
    missing = [line for line in printed if plain(line) not in page_text]
    assert not missing, f"{len(missing)} of {len(printed)} printed lines are not on the page, e.g. {missing[:3]}"
    if built_with_stand_in_weights():
        assert STAND_IN_BANNER in page.locator(".lesson-stand-in-banner").inner_text()



def test_stand_in_detection(site, tmp_path):
    """The banner's trigger (site/carpentries.py, run in the site's own environment): notebooks recorded as
    run with stand-in weights, or an output that mentions them; never plain notebooks or real weights."""
    def lessons_with(metadata, text):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        (folder / "lessons").mkdir(parents=True)
        cell = {"cell_type": "code", "metadata": {}, "source": "x", "execution_count": 1,
                "outputs": [{"output_type": "stream", "name": "stdout", "text": text}]}
        notebook = {"cells": [cell], "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}
        (folder / "lessons" / "01-x.ipynb").write_text(json.dumps(notebook))
        return folder

    cases = {
        "real weights": (lessons_with({"lesson_site": {"weights": "real"}}, "Episode 1: 12 files ready.\n"), False),
        "no record, plain output": (lessons_with({}, "predictions: (1, 1000)\n"), False),
        "recorded stand-in": (lessons_with({"lesson_site": {"weights": "stand-in"}}, "ok\n"), True),
        "the helpers' note": (lessons_with({}, "NOTE: offline stand-in weights are in use, so ...\n"), True),
    }
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import carpentries; "
              "print([carpentries.made_with_stand_in_weights(p) for p in sys.argv[2:]])")
    python = ROOT / os.environ.get("SITE_VENV", ".venv-site") / "bin" / "python"  # as in the Makefile
    result = subprocess.run([str(python), "-c", script, str(ROOT / "site"), *(str(f) for f, _ in cases.values())],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    found = dict(zip(cases, ast.literal_eval(result.stdout.strip().splitlines()[-1])))
    assert found == {name: expected for name, (_, expected) in cases.items()}
