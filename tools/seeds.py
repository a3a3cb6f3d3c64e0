"""Run episode 3 with other random seeds: how much does fine-tuning gain over the frozen base, run to run?

    python tools/seeds.py              # seeds 1, 2, 3 (what `make seeds` runs)
    python tools/seeds.py 7 8 9 10     # other seeds

Each run executes lessons/03-fine-tuning.ipynb top to bottom in a fresh kernel (as tools/benchmark.py
does), with ``keras.utils.set_random_seed(42)`` replaced by the seed, and reads the numbers its last cell
records. The runs read the lesson's data through a scratch data folder (links to its folders), so the doors
they save never replace episode 3's own ``night_door.keras``, which episode 4 uses. The table (frozen and
fine-tuned test accuracy, the gain in test pictures) is printed and written to
results/episode-03-seeds.json with the sha256 of the episode's source; tests/test_targets.py runs this
tool when that file is missing or was made from another version of the episode, and checks it: a mean
gain of at least 3 points and no seed below the frozen door. The episode's own seed (42) is checked on
every test run through results/episode-03.json.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lesson_helpers import lesson  # noqa: E402
from lesson_helpers.data import DATA_DIR_ENV, data_dir, sha256_of  # noqa: E402
from lesson_helpers.results import RESULTS_DIR_ENV, results_dir  # noqa: E402
from tools.benchmark import run  # noqa: E402

SEED_LINE = "keras.utils.set_random_seed(42)"
RESULTS_FILE = "episode-03-seeds.json"


def source_sha256():
    """The sha256 of episode 3's source (its .md): which version of the episode the seeds' numbers are of."""
    return sha256_of(lesson.episode(3).source)


def scratch_data(scratch):
    """A data folder in `scratch` whose sub-folders link to the lesson's data folder's."""
    folder = Path(scratch) / "data"
    folder.mkdir()
    for item in data_dir().iterdir():
        if item.is_dir():
            (folder / item.name).symlink_to(item, target_is_directory=True)
    return folder


def run_with_seed(notebook, seed):
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and SEED_LINE in c.source]
    if len(cells) != 1:
        raise SystemExit(f"{notebook.name}: expected one cell with {SEED_LINE!r}, found {len(cells)}")
    cells[0].source = cells[0].source.replace(SEED_LINE, f"keras.utils.set_random_seed({seed})")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / notebook.name  # run with lessons/ as its working directory, as tools/benchmark.py does
        nbformat.write(nb, copy)
        saved = {name: os.environ.get(name) for name in (RESULTS_DIR_ENV, DATA_DIR_ENV)}
        os.environ[RESULTS_DIR_ENV] = scratch
        os.environ[DATA_DIR_ENV] = str(scratch_data(scratch))
        try:
            wall = run(copy, workdir=notebook.parent)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        record = json.loads((Path(scratch) / "episode-03.json").read_text())
    record["wall_time_s"] = round(wall, 1)
    return record


def main(seeds):
    notebook = next(ep.notebook for ep in lesson.episodes() if ep.number == 3)
    rows = []
    for seed in seeds:
        print(f"seed {seed}: running {notebook.name} ...", flush=True)
        record = run_with_seed(notebook, seed)
        rows.append({"seed": seed, **{k: record[k] for k in (
            "frozen_test_accuracy", "test_accuracy", "test_gain_pictures", "fine_tune_epochs", "wall_time_s")}})
        print(f"  frozen {record['frozen_test_accuracy']:.3f}, fine-tuned {record['test_accuracy']:.3f}, "
              f"gain {record['test_gain_pictures']:+d} pictures, {record['wall_time_s']:.0f} s", flush=True)
    gains = [row["test_gain_pictures"] for row in rows]
    summary = {"seeds": rows, "mean_gain_points": round(sum(gains) / len(gains) / 5, 2),
               "min_gain_pictures": min(gains), "source_sha256": source_sha256(), "recorded_at": time.time()}
    results_dir().mkdir(parents=True, exist_ok=True)
    (results_dir() / RESULTS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"mean gain {summary['mean_gain_points']:.2f} points (of 500 test pictures: 1 picture = 0.2 points), "
          f"smallest {min(gains):+d} pictures")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [1, 2, 3])
