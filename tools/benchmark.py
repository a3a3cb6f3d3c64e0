"""Run every episode notebook and print a table of wall times and accuracies.

    python tools/benchmark.py            # all episodes in _config.yml (what `make bench` runs)
    python tools/benchmark.py 02 03      # only the episodes whose file names start with these

Each notebook is executed from top to bottom with nbclient, in a fresh kernel
that uses this Python environment, with the notebook's folder as working
directory (as nbval does). The outputs are not saved: the notebooks in git stay
output-free. Wall time is measured here, around the whole run (kernel start
included). The accuracies and per-phase times come from the results file the
notebook's last cell writes (results/episode-NN.json, see
lesson_helpers/results.py). The table is printed and written to
results/benchmark.md. An episode slower than its `budget_s` in _config.yml is
marked OVER BUDGET, and so is one whose recorded phase (``phase_times_s``) took
over 60 s; the exit status is then 1. When episodes 2 and 3 ran, a second table compares their fast
and end-to-end ways (tools/variants.py) and the TensorFlow tutorial's recipe on the same machine
(tools/tutorial_anchor.py, run first when results/tutorial-anchor.json is missing or from another machine).
"""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import ipykernel.kernelspec
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from lesson_helpers import lesson  # noqa: E402
from lesson_helpers.results import results_dir, results_path  # noqa: E402

CURRENT_ENV = "lesson-benchmark-current-env"
PHASE_BUDGET_S = 60  # no single recorded phase (a training run, a caching pass) may take longer
MACHINE = f"{platform.node()} ({platform.processor() or platform.machine()})"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # kernels inherit it: no TensorFlow start-up chatter


class CurrentEnvKernelSpecs(KernelSpecManager):
    """Kernel specs that map CURRENT_ENV to an ipykernel running this very Python."""

    def get_kernel_spec(self, kernel_name):
        if kernel_name == CURRENT_ENV:
            return self.kernel_spec_class(resource_dir=ipykernel.kernelspec.RESOURCES,
                                          **ipykernel.kernelspec.get_kernel_dict())
        return super().get_kernel_spec(kernel_name)


def run(notebook, workdir=None):
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, kernel_name=CURRENT_ENV, timeout=1800,
                            resources={"metadata": {"path": str(workdir or notebook.parent)}},
                            kernel_manager_class=_kernel_manager_class())
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def _kernel_manager_class():
    from jupyter_client.manager import KernelManager

    class CurrentEnvKernelManager(KernelManager):
        def _kernel_spec_manager_default(self):
            return CurrentEnvKernelSpecs(data_dir=self.data_dir)

    return CurrentEnvKernelManager


def fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def _record(name):
    path = results_dir() / name
    return json.loads(path.read_text()) if path.is_file() else None


def variants_table(ran, walls):
    """Fast and end-to-end ways of episodes 2 and 3: time, accuracy, fast time / one forward pass, anchor."""
    lines = ["", "| episode | way | time (s) | accuracy | × one forward pass |", "|---|---|---:|---:|---:|"]
    two = _record("episode-02.json") if 2 in ran else None
    if two:
        phases = two.get("phase_times_s", {})
        floor = phases.get("cats_dogs_feature_extraction")
        fast = floor + phases.get("cats_dogs_cached_head_training", 0) if floor else None
        lines.append(f"| 02 | cached features (valid) | {fmt(fast, 0)} | "
                     f"{fmt(two.get('cats_dogs_cached_valid_accuracy'))} | {fmt(fast / floor if floor else None, 2)} |")
        lines.append(f"| 02 | end to end (valid) | {fmt(phases.get('cats_dogs_end_to_end_training'), 0)} | "
                     f"{fmt(two.get('cats_dogs_end_to_end_valid_accuracy'))} | |")
    three = _record("episode-03.json") if 3 in ran else None
    if three:
        print("running tools/variants.py (episode 3 end to end, and one forward pass) ...", flush=True)
        import variants  # tools/variants.py, beside this file

        variants.main()
        extra = _record("variants-03.json")
        phases = three.get("phase_times_s", {})
        fast = phases.get("caching", 0) + phases.get("fine_tuning", 0)
        floor = extra["forward_pass_s"]
        lines.append(f"| 03 | cached activations (test) | {fmt(fast, 0)} | {fmt(three.get('test_accuracy'))} | "
                     f"{fmt(fast / floor, 2)} |")
        lines.append(f"| 03 | end to end (test) | {fmt(extra['end_to_end_fine_tuning_s'], 0)} | "
                     f"{fmt(extra['end_to_end_test_accuracy'])} | |")
        lines.append(f"| 03 | one forward pass over the same pictures | {fmt(floor, 0)} | | 1.00 |")
    anchor = _record("tutorial-anchor.json")
    if 2 in walls and 3 in walls and (anchor or {}).get("machine") != MACHINE:
        print("running tools/tutorial_anchor.py (the TensorFlow tutorial's recipe, once per machine: "
              "5 to 10 minutes) ...", flush=True)
        subprocess.run([sys.executable, str(REPO / "tools" / "tutorial_anchor.py")], check=False)
        anchor = _record("tutorial-anchor.json")
    if anchor and anchor.get("machine") == MACHINE and 2 in walls and 3 in walls:
        lesson_s = walls[2] + walls[3]
        lines.append("")
        lines.append(f"The TensorFlow tutorial's recipe (tools/tutorial_anchor.py, results/tutorial-anchor.json): "
                     f"{anchor['total_s']:.0f} s of training; episodes 2 and 3 as whole runs: {lesson_s:.0f} s, "
                     f"{anchor['total_s'] / lesson_s:.1f}× faster.")
    else:
        lines.append("")
        lines.append("No tutorial anchor from this machine (results/tutorial-anchor.json): "
                     "`python tools/tutorial_anchor.py` writes it (5 to 10 minutes).")
    return lines


def main(prefixes):
    rows, failed = [], []
    for ep in lesson.episodes():
        if prefixes and not any(ep.file.startswith(p) for p in prefixes):
            continue
        notebook, number = ep.notebook, ep.number
        if not notebook.is_file():
            print(f"{ep.file}: no notebook yet, skipped", flush=True)
            continue
        print(f"running {notebook.name} ...", flush=True)
        started_at = time.time()
        try:
            wall = run(notebook)
        except Exception as err:  # report it and go on with the next episode
            print(f"  FAILED: {type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}",
                  flush=True)
            failed.append(number)
            rows.append((number, None, {}, {}))
            continue
        record = {}
        path = results_path(number)
        if path.is_file():
            record = json.loads(path.read_text())
            if record.get("recorded_at", 0) < started_at:
                record = {}  # left from an earlier run: not this one's numbers
        accuracies = {k: v for k, v in record.items() if "accuracy" in k}
        phases = record.get("phase_times_s", {})
        rows.append((number, wall, accuracies, phases))
        over = f" OVER BUDGET ({ep.budget_s} s in _config.yml)" if ep.budget_s and wall > ep.budget_s else ""
        slow = [f"{name} {seconds:.0f} s" for name, seconds in phases.items() if seconds > PHASE_BUDGET_S]
        if slow:
            over += f" PHASE OVER {PHASE_BUDGET_S} s: {', '.join(slow)}"
        if over:
            failed.append(number)
        print(f"  {wall:.0f} s{over}", flush=True)

    lines = [f"Benchmark on {MACHINE}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             "| episode | wall time (s) | phases (s) | accuracies |", "|---|---:|---|---|"]
    for number, wall, accuracies, phases in rows:
        phase_text = ", ".join(f"{k} {v:.0f}" for k, v in phases.items()) or "–"
        acc_text = ", ".join(f"{k} {fmt(v)}" for k, v in accuracies.items()) or "–"
        lines.append(f"| {number:02d} | {'FAILED' if wall is None else f'{wall:.0f}'} | {phase_text} | {acc_text} |")
    total = sum(wall for _, wall, _, _ in rows if wall is not None)
    lines.append(f"| all | {total:.0f} | | |")
    ran = {number for number, wall, _, _ in rows if wall is not None}
    lines += variants_table(ran, {number: wall for number, wall, _, _ in rows if wall is not None})
    table = "\n".join(lines)
    print()
    print(table)
    results_dir().mkdir(parents=True, exist_ok=True)
    (results_dir() / "benchmark.md").write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
