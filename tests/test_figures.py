"""Every figure the lesson draws has alt text, written where the figure is made.

The convention (all episodes): a code cell that draws a figure carries Jupytext metadata on its
fence line, ```python mystnb={"image": {"alt": "One sentence: what the figure shows."}}
MyST-NB puts it on the website's <img> (tests/test_site.py checks the built pages too).

A cell draws when, outside the functions it defines, it calls Matplotlib (``plt.*``, ``ax.plot``,
``imshow``, ``subplots``...) or a function defined in the episode that does. Cells removed from the
website (``remove-cell``/``remove-output`` tags) and calls inside a ``try`` block (cells that are
there to show an error message) are not counted.
"""

import ast
import re

import jupytext
import pytest

from lesson_files import EPISODES

DRAWING_METHODS = {"imshow", "subplots", "subplot", "plot", "scatter", "hist", "bar", "barh", "matshow",
                   "pcolormesh", "contour", "contourf", "errorbar", "fill_between", "plot_model"}
REMOVED_TAGS = {"remove-cell", "remove-output", "remove_cell", "remove_output"}


def parse(source):
    """The cell's code as a Python tree, with IPython magics (%pip, !ls) blanked out."""
    lines = [re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in source.splitlines()]
    return ast.parse("\n".join(lines))


def _calls(node, skip_defs=True):
    """The calls under node, not inside function/class bodies (when skip_defs) or try blocks."""
    if isinstance(node, ast.Try):
        children = node.handlers + node.orelse + node.finalbody  # the tried body may fail before it draws
    elif skip_defs and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
        return
    else:
        children = list(ast.iter_child_nodes(node))
    if isinstance(node, ast.Call):
        yield node
    for child in children:
        yield from _calls(child, skip_defs)


def _draws(calls, drawing_functions):
    for call in calls:
        func = call.func
        if isinstance(func, ast.Attribute):
            if func.attr in DRAWING_METHODS:
                return True
            if isinstance(func.value, ast.Name) and func.value.id == "plt":
                return True
        if isinstance(func, ast.Name) and func.id in drawing_functions:
            return True
    return False


def figure_cells(cells):
    """(index, cell) of each code cell that draws a figure, given the notebook's cells in order."""
    drawing_functions, found = set(), []
    for index, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        tree = parse(cell.source)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body_calls = [c for stmt in node.body for c in _calls(stmt, skip_defs=False)]
                if _draws(body_calls, drawing_functions):
                    drawing_functions.add(node.name)
        removed = REMOVED_TAGS & set(cell.metadata.get("tags", []))
        if not removed and _draws(list(_calls(tree)), drawing_functions):
            found.append((index, cell))
    return found


def alt_text(cell):
    image = cell.metadata.get("mystnb", {}).get("image", {})
    return image.get("alt", "").strip() if isinstance(image, dict) else ""


@pytest.mark.parametrize("episode", EPISODES, ids=lambda p: p.name)
def test_every_figure_cell_has_alt_text(episode):
    cells = jupytext.read(episode).cells
    missing = []
    for index, cell in figure_cells(cells):
        alt = alt_text(cell)
        if len(alt.split()) < 4:  # a sentence, not a placeholder
            first = cell.source.strip().splitlines()[0]
            missing.append(f"cell {index} ({first!r}): alt {alt!r}")
    assert not missing, (
        f"{episode.name}: figure cells without alt text; put it on the cell's fence line, e.g. "
        '```python mystnb={"image": {"alt": "What the figure shows."}}\n' + "\n".join(missing))


def _cells(*sources):
    return [jupytext.reads(f"```python\n{s}\n```", fmt="md").cells[0] for s in sources]


def test_figure_cells_are_found():
    """The detector sees direct and indirect drawing, and ignores definitions, errors and plain code."""
    cells = _cells(
        "plt.imshow(image)",                                      # 0: draws
        "def show(path):\n    plt.imshow(load(path))\n    plt.show()",  # 1: defines only
        "show('dog.jpg')",                                        # 2: draws through show()
        "for p in paths:\n    show(p)",                           # 3: draws in a loop
        "fig, axes = plt.subplots(1, 2)\naxes[0].plot(x)",        # 4: draws
        "try:\n    show('missing.jpg')\nexcept OSError as e:\n    print(e)",  # 5: shows an error
        "%pip install x\nprint(model.predict(x))",                # 6: no figure
        "def curves(h):\n    fig, ax = plt.subplots()\n\ndef twice(h):\n    curves(h)\n\ntwice(h)",  # 7
    )
    assert [i for i, _ in figure_cells(cells)] == [0, 2, 3, 4, 7]
