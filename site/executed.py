"""The executed website's sources: the lesson with every episode notebook run, in order.

``make site-executed`` runs ``python site/executed.py`` (in the lesson's .venv, which has TensorFlow
and the helpers), then Jupyter Book builds the copy it writes. The copy lives in
``_build/executed/src`` (the lesson's pages, with the episode notebooks replaced by executed ones);
the repository's own notebooks are never touched.

An episode notebook comes from one of two places:

* the notebook run that ``make test`` has just done under nbval: the root ``conftest.py`` keeps the
  outputs of every cell in ``_build/executed/nbval/`` when a notebook passes, with a fingerprint of
  the notebook and of the helper package. Used only when that fingerprint still matches, so the
  test suite does not run the notebooks twice;
* else the notebook as an earlier ``make site-executed`` ran it (kept in ``_build/executed/notebooks/``),
  under the same condition;
* otherwise a fresh run with nbclient (in episode order, from ``lessons/``, as a learner runs them).

Outputs are reused only with the same kind of weights (stand-in or real) as are on disk now.

Every executed notebook records in its metadata (``lesson_site``) whether the MobileNetV2 weights on
this machine were the offline stand-ins (``lesson_helpers.check``). The site extension
(site/carpentries.py) then puts the stand-in banner on every page.
"""

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "_build" / "executed"
CAPTURE_DIR = OUT / "nbval"
CACHE_DIR = OUT / "notebooks"
# Top-level paths never copied into the executed site's sources (the build, caches, data).
NOT_COPIED = {".git", ".venv", ".venv-site", "_build", "results", "__pycache__", ".ipynb_checkpoints",
              ".pytest_cache", ".ruff_cache", "lesson_helpers.egg-info"}
CELL_TIMEOUT_S = 1800


def episodes():
    """The episode notebooks, in the order of ``episodes`` in _config.yml."""
    sys.path.insert(0, str(ROOT))
    from lesson_helpers import lesson

    return [ep.notebook for ep in lesson.episodes()]


def fingerprint(notebook):
    """sha256 of the notebook file, of the helper package and of the TensorFlow/Keras versions: outputs
    are only reused while all match (so `make test-oldest` never feeds the published site)."""
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(Path(notebook).read_bytes())
    for package in ("tensorflow", "keras"):
        try:
            digest.update(f"{package}=={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package} absent".encode())
    for path in sorted((ROOT / "lesson_helpers").glob("*")):
        if path.is_file() and path.suffix in (".py", ".csv"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def weights_state():
    """'stand-in' when any of the lesson's MobileNetV2 weights here are the offline stand-ins, else 'real'."""
    import lesson_helpers

    return "stand-in" if any(state == "stand-in" for _, state in lesson_helpers.check()) else "real"


def mark(notebook, executed_by, fingerprint_value):
    """Record in the notebook's metadata how it was executed, and with which weights."""
    notebook.metadata["lesson_site"] = {
        "executed_by": executed_by, "weights": weights_state(), "fingerprint": fingerprint_value,
        "executed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return notebook


def reusable(notebook_path, folder):
    """The executed copy of the notebook in folder, or None if there is none or it is stale."""
    import nbformat

    path = Path(folder) / Path(notebook_path).name
    if not path.is_file():
        return None
    notebook = nbformat.read(path, as_version=4)
    record = notebook.metadata.get("lesson_site", {})
    if record.get("fingerprint") != fingerprint(notebook_path) or record.get("weights") != weights_state():
        return None
    return notebook


def execute(notebook_path):
    """Run a notebook top to bottom with nbclient, from lessons/ as a learner would."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(notebook_path).parent)}})
    client.execute()
    return mark(notebook, "nbclient", fingerprint(notebook_path))


def copy_sources(target):
    """A copy of the lesson's pages (not the build, the virtual environments or the data) into target."""
    def ignore(folder, names):
        folder = Path(folder).resolve()
        if folder == ROOT:
            return [n for n in names if n in NOT_COPIED]
        if folder == ROOT / "data":  # the data's README, not the data
            return [n for n in names if (folder / n).is_dir()]
        return [n for n in names if n in ("__pycache__", ".ipynb_checkpoints")]

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(ROOT, target, ignore=ignore, symlinks=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=OUT / "src", help="where to write the executed sources")
    parser.add_argument("--reexecute", action="store_true",
                        help="run every notebook again, even when nbval's outputs are fresh")
    args = parser.parse_args(argv)
    # A re-run for the website must not replace the numbers that `make test` recorded.
    os.environ.setdefault("LESSON_RESULTS_DIR", str(OUT / "results"))
    copy_sources(args.src)
    import nbformat

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for notebook_path in episodes():
        start = time.perf_counter()
        notebook, how = None, ""
        for folder, source in ((CAPTURE_DIR, "outputs of the nbval run"), (CACHE_DIR, "outputs of an earlier run")):
            notebook = None if args.reexecute else reusable(notebook_path, folder)
            if notebook is not None:
                how = source
                break
        if notebook is None:
            notebook, how = execute(notebook_path), "executed with nbclient"
            nbformat.write(notebook, CACHE_DIR / notebook_path.name)
        nbformat.write(notebook, args.src / "lessons" / notebook_path.name)
        state = notebook.metadata["lesson_site"]["weights"]
        print(f"{notebook_path.name}: {how} ({time.perf_counter() - start:.0f} s, weights: {state})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
