"""pytest plugin: how long each notebook (each test file) took, written to a JSON and a Markdown file.

    python -m pytest -p tools.notebook_times --notebook-times results/gpu-times.json lessons/

Under nbval every notebook cell is a test item; this adds up, per file, the time
pytest measured for each item (set-up, call and tear-down), so a notebook's time
includes its kernel's start. The JSON maps file names to seconds; the Markdown
file next to it (same name, .md) is a small table for the instructor notes,
headed with the machine and, where `nvidia-smi` answers, the GPU. CI uses this
for the GPU job and the oldest-versions job; `make bench` (tools/benchmark.py)
stays the tool for the CPU times quoted in the lesson.
"""

import json
import platform
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path



def pytest_addoption(parser):
    parser.addoption("--notebook-times", metavar="PATH", default=None,
                     help="write each test file's total time (seconds) to PATH (JSON) and PATH with .md")


def pytest_configure(config):
    target = config.getoption("notebook_times")
    if target:
        config.pluginmanager.register(NotebookTimes(Path(target)), "notebook-times-recorder")


def _gpu_name():
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return ", ".join(line.strip() for line in out.splitlines() if line.strip()) or None


class NotebookTimes:
    def __init__(self, path):
        self.path = path
        self.seconds = defaultdict(float)
        self.failed = set()

    def pytest_runtest_logreport(self, report):
        name = Path(report.nodeid.split("::", 1)[0]).name
        self.seconds[name] += report.duration
        if report.failed:
            self.failed.add(name)

    def pytest_sessionfinish(self):
        if not self.seconds:
            return
        gpu = _gpu_name()
        record = {
            "machine": f"{platform.node()} ({platform.machine()}, {platform.system()})",
            "gpu": gpu,
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seconds": {name: round(s, 1) for name, s in sorted(self.seconds.items())},
            "failed": sorted(self.failed),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record, indent=2) + "\n")
        lines = [f"Run under pytest on {record['machine']}, GPU: {gpu or 'none seen by nvidia-smi'}, "
                 f"{record['measured_at']}", "", "| file | seconds | |", "|---|---:|---|"]
        lines += [f"| {name} | {s:.0f} | {'FAILED' if name in self.failed else ''} |"
                  for name, s in record["seconds"].items()]
        self.path.with_suffix(".md").write_text("\n".join(lines) + "\n")
