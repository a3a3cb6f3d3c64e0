"""Record an episode's key numbers (wall times, accuracies) for the lesson's tests and benchmark.

Each episode's last cell calls :func:`record_results`; ``tests/test_targets.py``
and ``tools/benchmark.py`` read the file it writes.
"""

import json
import time

from .data import _atomic_write, lesson_folder

RESULTS_DIR_ENV = "LESSON_RESULTS_DIR"

# When the set-up cell imported the helpers: the start of the episode's wall time.
_IMPORTED_AT = time.perf_counter()


def results_dir():
    """``$LESSON_RESULTS_DIR`` if set; else ``results/`` of the lesson repository (``./results`` outside one)."""
    return lesson_folder("results", RESULTS_DIR_ENV)


def results_path(episode):
    return results_dir() / f"episode-{int(episode):02d}.json"


def _plain(value):
    """JSON-friendly: NumPy/TensorFlow scalars become Python floats; dicts are converted inside."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return round(float(value), 4)


def weights_in_use(episode):
    """'stand-in' when the pretrained weights of the episode in the Keras cache are the offline mirror's
    stand-ins, 'real' when they are verified real ones, else 'unknown'."""
    from .data import entries_for, state_of

    try:
        states = {state_of(entry) for entry in entries_for([episode]) if entry.is_weights}
    except Exception:  # noqa: BLE001 - a record must be written whatever the cache looks like
        return "unknown"
    if "stand-in" in states:
        return "stand-in"
    return "real" if states == {"ok"} else "unknown"


def record_results(episode, **numbers):
    """Write ``results/episode-NN.json`` with the given numbers and return its path.

    Adds ``wall_time_s`` (seconds since the set-up cell imported the helpers)
    unless given, ``weights`` (:func:`weights_in_use`: which targets apply) unless given, and
    ``recorded_at`` (Unix time) so that readers can tell a fresh file from a stale one. The
    file is replaced atomically.
    """
    record = {"episode": int(episode)}
    record.update({name: _plain(value) for name, value in numbers.items()})
    record.setdefault("wall_time_s", round(time.perf_counter() - _IMPORTED_AT, 2))
    record.setdefault("weights", weights_in_use(episode))
    record["recorded_at"] = time.time()
    target = results_path(episode)
    # phases stay in the order they ran; written as the data files are (atomically, with the umask's permissions)
    _atomic_write(target, (json.dumps(record, indent=2) + "\n").encode())
    return target
