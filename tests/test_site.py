"""The lesson website, checked the way a learner meets it: in a real browser.

`make site` builds the site into _build/html (Jupyter Book, notebooks not executed). This test
builds it afresh, serves it on localhost, opens every page in headless Debian Chromium (started
here, kept off the network) and checks that:

* every page loads, and none of its links or images that point inside the site is broken
  (checked against the files in _build/html, anchors included, and in the browser for images);
* every episode page shows its title, an overview box with its objectives at the top, a key
  points box at the end, and at least one challenge whose solution is hidden until its summary
  is clicked, and visible afterwards;
* every episode page has the "Open in Colab" launch link built from _config.yml.

A screenshot of every page (and of each episode's first opened solution) is kept in
_build/screenshots/. Chromium is driven with the DevTools protocol over a pipe
(--remote-debugging-pipe), so the test needs nothing beyond the standard library.
In CI (CI=true) a missing chromium is a failure; elsewhere the test is skipped with the reason.
"""

import base64
import fcntl
import functools
import html.parser
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from lesson_helpers import lesson

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
EPISODES = [ep.stem for ep in lesson.episodes()]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1280,900",
    # Nothing but the test's own server: other hosts fail at once instead of waiting for a timeout.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]

pytestmark = pytest.mark.slow


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    message = "headless Chromium is needed: install Debian's package (apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; .ci/run installs it in CI")
    pytest.skip(message)


# --- build and serve --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site():
    """A fresh build of the site (make site), served on localhost for the browser."""
    result = subprocess.run(["make", "--no-print-directory", "site"], cwd=ROOT,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"make site failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def site_pages():
    """Every HTML page of the site (not the copied sources or the theme's assets)."""
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
                  if not p.relative_to(HTML).parts[0].startswith("_"))


# --- links and images, from the files ----------------------------------------------------------

class LinkCollector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for attr in ("href", "src"):
            if attrs.get(attr) is not None:
                self.links.append((tag, attr, attrs[attr]))


@functools.lru_cache(maxsize=None)
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


# --- Chromium over the DevTools protocol ------------------------------------------------------

class Chromium:
    """Headless Chromium driven with the DevTools protocol over --remote-debugging-pipe."""

    def __init__(self, executable, profile):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds():
            # The browser reads commands on fd 3 and writes replies on fd 4. Move the pipe ends
            # out of the way first (either may be 3 or 4), then put them in place: dup2 makes the
            # copies inheritable, while Python's own descriptors are closed when Chromium starts.
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
             "about:blank"],
            close_fds=False, preexec_fn=child_fds,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events = []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Runtime.enable", session=True)

    def _read_message(self, deadline):
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (did it crash?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, session=False, timeout=60, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for_event(self, method, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def open(self, url):
        self.events.clear()
        self.send("Page.navigate", session=True, url=url)
        self.wait_for_event("Page.loadEventFired")

    def js(self, expression):
        result = self.send("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, x, y):
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y,
                      button="left", clickCount=1)

    def screenshot(self, path, clip=None):
        params = {"format": "png", "captureBeyondViewport": True}
        if clip is None:
            width, height = self.js("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            clip = {"x": 0, "y": 0, "width": width, "height": min(height, 12000)}
        params["clip"] = {**clip, "scale": 1}
        data = self.send("Page.captureScreenshot", session=True, **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture(scope="module")
def browser(site):
    executable = find_chromium()
    with tempfile.TemporaryDirectory(prefix="lesson-chromium-") as profile:
        chromium = Chromium(executable, profile)
        try:
            yield chromium
        finally:
            chromium.close()


# --- what the browser checks on every page ---------------------------------------------------

PAGE_STATE = """(() => {
  const visible = el => !!el && el.checkVisibility() && el.getBoundingClientRect().height > 0;
  const h1 = document.querySelector("article h1");
  const sameOrigin = img => new URL(img.currentSrc || img.src, location.href).origin === location.origin;
  return {
    title: h1 ? h1.innerText : null,
    text: document.querySelector("article") ? document.querySelector("article").innerText : "",
    brokenImages: [...document.images].filter(sameOrigin)
        .filter(img => img.complete && img.naturalWidth === 0).map(img => img.getAttribute("src")),
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
})()"""

SOLUTION_STATE = """((index) => {
  const all = document.querySelectorAll("article details.solution");
  const details = all[index];
  if (!details) return null;
  const body = details.querySelector(".solution-body");
  const summary = details.querySelector("summary");
  summary.scrollIntoView({block: "center"});
  const box = summary.getBoundingClientRect();
  const section = details.closest("section").getBoundingClientRect();
  return {
    count: all.length,
    inChallenge: !!details.closest("section.challenge"),
    open: details.open,
    bodyVisible: body.checkVisibility() && body.getBoundingClientRect().height > 0,
    summaryText: summary.innerText,
    x: box.left + box.width / 2, y: box.top + box.height / 2,
    clip: {x: 0, y: Math.max(0, section.top + window.scrollY - 10),
           width: document.documentElement.clientWidth, height: Math.min(section.height + 20, 4000)},
  };
})"""


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


# --- the tests --------------------------------------------------------------------------------

def test_site_has_every_page(site):
    pages = site_pages()
    expected = ["index.html", "learners/setup.html", "learners/reference.html",
                "instructors/instructor-notes.html"] + [f"lessons/{stem}.html" for stem in EPISODES]
    missing = [page for page in expected if page not in pages]
    assert not missing, f"pages missing from _build/html: {missing}"


def test_no_broken_internal_links_or_images(site):
    broken = {page: b for page in site_pages() if (b := broken_internal_links(page))}
    assert not broken, "broken internal links or images:\n" + "\n".join(
        f"{page}: {item}" for page, items in broken.items() for item in items)


def test_every_page_in_chromium(site, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for page in site_pages():
        browser.open(site + page)
        state = browser.js(PAGE_STATE)
        browser.screenshot(SHOTS / (page.replace("/", "__").removesuffix(".html") + ".png"))
        if state["brokenImages"]:
            problems.append(f"{page}: images that did not load: {state['brokenImages']}")
        if not state["title"] and page not in ("genindex.html", "search.html"):
            problems.append(f"{page}: no title (h1)")
        errors = [e["params"]["exceptionDetails"] for e in browser.events if e.get("method") == "Runtime.exceptionThrown"]
        if errors:
            problems.append(f"{page}: JavaScript errors: {[(e.get('text'), e.get('url'), e.get('exception', {}).get('description')) for e in errors]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("stem", EPISODES)
def test_episode_page_structure(site, browser, stem):
    meta = front_matter(stem)
    browser.open(f"{site}lessons/{stem}.html")
    state = browser.js(PAGE_STATE)

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

    first = browser.js(f"({SOLUTION_STATE})(0)")
    assert first is not None and first["inChallenge"], "no challenge with a collapsible solution"
    for index in range(first["count"]):  # every solution on the page, one click each
        before = browser.js(f"({SOLUTION_STATE})({index})")
        where = f"solution {index + 1} of {first['count']}"
        assert not before["open"] and not before["bodyVisible"], f"{where} is visible before any click"
        browser.click(before["x"], before["y"])
        after = browser.js(f"({SOLUTION_STATE})({index})")
        assert after["open"] and after["bodyVisible"], f"{where} did not open when its summary was clicked"
        if index == 0:
            browser.screenshot(SHOTS / f"lessons__{stem}__solution-open.png", clip=after["clip"])
