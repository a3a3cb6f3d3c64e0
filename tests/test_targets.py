"""Each episode's targets, from _config.yml, checked on the numbers its notebook records.

An episode's entry in _config.yml lists `targets`: Python expressions over the keys of
``results/episode-NN.json``, which the notebook's last cell writes with
``lesson_helpers.record_results`` (nested records read with dots: ``variants.fast.time_s``).
pytest runs ``lessons/`` before ``tests/`` (pyproject.toml), so in a full run (``make test``)
the notebooks have just written these files:

- if a notebook ran in this pytest session, its file must exist and be newer than the start of
  the session (otherwise the notebook stopped before its last cell, and the test fails);
- if the notebooks were not part of the session (``pytest tests``), the files from an earlier
  run (``make bench``) are checked, and the tests are skipped when there are none.

Wall times are not targets here (a loaded machine would fail them): ``make bench`` checks each
episode's ``budget_s``.
"""

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lesson_helpers import lesson
from lesson_helpers.results import RESULTS_DIR_ENV, record_results, results_dir, results_path

REPO = Path(__file__).resolve().parents[1]
# This module is imported while pytest collects, before any notebook cell runs.
SESSION_START = time.time()
ALLOWED_FUNCTIONS = {"abs": abs, "min": min, "max": max, "all": all, "any": any, "len": len, "sum": sum}
TARGETS = [(ep, target) for ep in lesson.episodes() for target in ep.targets]
STAND_IN_TARGETS = [(ep, target) for ep in lesson.episodes() for target in ep.stand_in_targets]


def notebook_ran_in_session(request, notebook):
    return any(Path(str(item.path)).name == notebook for item in request.session.items)


def results(request, ep):
    path = results_path(ep.number)
    if notebook_ran_in_session(request, ep.notebook.name):
        assert path.is_file(), f"{ep.notebook.name} ran in this session but did not write {path}"
        record = json.loads(path.read_text())
        assert record.get("recorded_at", 0) >= SESSION_START, (
            f"{path} is older than this test session: {ep.notebook.name} did not reach its last cell")
        return record
    if not path.is_file():
        pytest.skip(f"no {path}: {ep.notebook.name} was not run in this session and has no earlier results "
                    "(run `make test` or `make bench`)")
    return json.loads(path.read_text())


def namespace(value):
    """A record with dots for nested keys: record["variants"]["fast"] -> variants.fast."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: namespace(v) for k, v in value.items()})
    if isinstance(value, list):
        return [namespace(v) for v in value]
    return value


def names_in(expression):
    """The dotted names an expression reads, e.g. ['variants.fast.time_s', 'wall_time_s']."""
    found = []
    for node in ast.walk(ast.parse(expression, mode="eval")):
        if isinstance(node, (ast.Name, ast.Attribute)):
            parts = []
            while isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name) and node.id not in ALLOWED_FUNCTIONS:
                found.append(".".join([node.id, *reversed(parts)]))
    return sorted({n for n in found if not any(o != n and o.startswith(n + ".") for o in found)})


def evaluate(expression, record):
    """The value of a target expression over a record (only the record's keys and a few built-ins)."""
    scope = {k: namespace(v) for k, v in record.items()}
    return eval(compile(expression, "<target>", "eval"), {"__builtins__": ALLOWED_FUNCTIONS}, scope)


def lookup(record, dotted):
    value = record
    for part in dotted.split("."):
        value = value.get(part, "<missing>") if isinstance(value, dict) else "<missing>"
    return value


def check(record, ep, target):
    missing = [n for n in names_in(target) if lookup(record, n) == "<missing>"]
    assert not missing, f"results/episode-{ep.number:02d}.json records no {missing} (target {target!r})"
    values = ", ".join(f"{n} = {lookup(record, n)}" for n in names_in(target))
    assert evaluate(target, record), f"target missed: {target}, with {values}"


@pytest.mark.parametrize("ep, target", TARGETS, ids=[f"{ep.number:02d}: {t}" for ep, t in TARGETS])
def test_episode_target(request, ep, target):
    check(results(request, ep), ep, target)


@pytest.mark.parametrize("ep, target", STAND_IN_TARGETS,
                         ids=[f"{ep.number:02d} (stand-in weights): {t}" for ep, t in STAND_IN_TARGETS])
def test_episode_target_with_stand_in_weights(request, ep, target):
    """What the episode reports as measured with the offline stand-in weights; the real weights may differ."""
    record = results(request, ep)
    if record.get("weights") != "stand-in":
        pytest.skip(f"results/episode-{ep.number:02d}.json was recorded with {record.get('weights', 'unknown')} "
                    "weights: this target describes the offline stand-in weights")
    check(record, ep, target)


# --- the machinery itself -----------------------------------------------------------------------

@pytest.mark.parametrize("ep, target", TARGETS + STAND_IN_TARGETS,
                         ids=[f"{ep.number:02d}: {t}" for ep, t in TARGETS + STAND_IN_TARGETS])
def test_target_is_a_comparison_over_recorded_names(ep, target):
    tree = ast.parse(target, mode="eval")
    assert isinstance(tree.body, (ast.Compare, ast.BoolOp)), f"{target!r} is not a comparison"
    assert names_in(target), f"{target!r} reads no recorded number"
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert calls <= set(ALLOWED_FUNCTIONS), f"{target!r} calls {calls - set(ALLOWED_FUNCTIONS)}"


def test_evaluation_reads_nested_records_and_fails_when_it_should():
    record = {"gain": 0.05, "variants": {"fast": {"time_s": 12.0}}, "forward_pass_s": 10.0}
    assert evaluate("variants.fast.time_s <= 1.3 * forward_pass_s", record)
    assert not evaluate("variants.fast.time_s <= 1.1 * forward_pass_s", record)
    assert evaluate("gain >= 0.04 and max(gain, 0) > 0", record)
    assert names_in("variants.fast.time_s <= 1.3 * forward_pass_s") == ["forward_pass_s", "variants.fast.time_s"]
    with pytest.raises(NameError):
        evaluate("__import__('os')", record)


def test_record_results_writes_fresh_json(tmp_path, monkeypatch):
    monkeypatch.setenv(RESULTS_DIR_ENV, str(tmp_path))
    before = time.time()
    path = record_results(7, accuracy=0.5, phase_times_s={"training": 1.25})
    assert path == tmp_path / "episode-07.json"
    record = json.loads(path.read_text())
    assert record["accuracy"] == 0.5 and record["phase_times_s"] == {"training": 1.25}
    assert record["episode"] == 7 and record["recorded_at"] >= before and record["wall_time_s"] >= 0
    assert [p.name for p in tmp_path.iterdir()] == ["episode-07.json"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file: others can read it, as for data files


def test_record_says_which_weights_it_was_measured_with(tmp_path, monkeypatch):
    """`weights` decides whether the stand-in targets apply: 'stand-in' if any of the episode's weights is one."""
    from lesson_helpers import data

    monkeypatch.setenv(RESULTS_DIR_ENV, str(tmp_path))
    entries = [SimpleNamespace(is_weights=True, name="a.h5"), SimpleNamespace(is_weights=True, name="b.h5"),
               SimpleNamespace(is_weights=False, name="picture.jpg")]
    monkeypatch.setattr(data, "entries_for", lambda episodes: entries)
    for states, expected in [({"a.h5": "ok", "b.h5": "ok"}, "real"), ({"a.h5": "ok", "b.h5": "stand-in"}, "stand-in"),
                             ({"a.h5": "ok", "b.h5": "missing"}, "unknown")]:
        monkeypatch.setattr(data, "state_of", lambda entry, states=states: states.get(entry.name, "corrupt"))
        assert json.loads(record_results(7).read_text())["weights"] == expected, states
    assert json.loads(record_results(7, weights="real").read_text())["weights"] == "real"  # given: kept


@pytest.mark.slow
def test_fine_tuning_gain_holds_over_other_seeds():
    """Episode 3's gain over the frozen door, over three other seeds (tools/seeds.py, `make seeds`): run here
    when results/episode-03-seeds.json is missing or was made from another version of the episode."""
    seeds = _seeds_tool()
    path = results_dir() / seeds.RESULTS_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    if record.get("source_sha256") != seeds.source_sha256():
        run = subprocess.run([sys.executable, str(REPO / "tools" / "seeds.py")], capture_output=True, text=True)
        assert run.returncode == 0, f"tools/seeds.py failed:\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
        record = json.loads(path.read_text())
    gains = {row["seed"]: row["test_gain_pictures"] for row in record["seeds"]}
    assert len(gains) >= 3 and 42 not in gains, f"{path}: needs three seeds other than the episode's, has {gains}"
    assert record["mean_gain_points"] >= 3, f"mean gain {record['mean_gain_points']} points < 3 (gains {gains})"
    assert min(gains.values()) >= 0, f"a seed ends below the frozen door: gains in test pictures {gains}"


def _seeds_tool():
    spec = importlib.util.spec_from_file_location("seeds_tool", REPO / "tools" / "seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
