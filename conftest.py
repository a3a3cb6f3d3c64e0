"""Keep the outputs of the notebooks that nbval runs, for the executed website (site/executed.py).

`make test` runs every episode under nbval first; when a notebook passes, its cells' outputs are
written to _build/executed/nbval/, so that the website test builds the executed site without
running the notebooks a second time. Nothing here changes what nbval checks.
"""

import copy
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("lesson_site_executed", Path(__file__).parent / "site" / "executed.py")
executed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(executed)

_runs = {}  # notebook path -> {"outputs": {cell index: outputs}, "failed": bool}


def _is_notebook_cell(item):
    return type(item).__name__ == "IPyNbCell" and Path(str(item.parent.fspath)).parent == executed.ROOT / "lessons"


def pytest_runtest_logreport(report):
    # a failure in set-up or teardown makes the captured run incomplete too
    run = _runs.get(report.nodeid.split("::")[0])
    if run is not None and report.failed:
        run["failed"] = True


def pytest_runtest_setup(item):
    if _is_notebook_cell(item):
        _runs.setdefault(item.nodeid.split("::")[0], {"outputs": {}, "failed": False})


def pytest_runtest_teardown(item, nextitem):
    if not _is_notebook_cell(item):
        return
    key = item.nodeid.split("::")[0]
    run = _runs[key]
    cells = item.parent.nb.cells
    index = next(i for i, cell in enumerate(cells) if cell is item.cell)
    run["outputs"][index] = list(item.test_outputs or [])
    if nextitem is not None and nextitem.parent is item.parent:
        return
    # the notebook's last cell: write the executed copy, or remove a stale one
    path = Path(str(item.parent.fspath))
    target = executed.CAPTURE_DIR / path.name
    target.unlink(missing_ok=True)
    ran_all = all(i in run["outputs"] for i, c in enumerate(cells) if c.cell_type == "code")
    if run["failed"] or not ran_all:
        return
    import nbformat

    notebook = copy.deepcopy(item.parent.nb)
    count = 0
    for i, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            cell.outputs = [nbformat.from_dict(dict(out)) for out in run["outputs"][i]]
            for out in cell.outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = count
    executed.mark(notebook, "nbval", executed.fingerprint(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)
