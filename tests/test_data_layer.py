"""The data layer (lesson_helpers.data and its command line) against bad input.

Each test builds a small fake registry and a mirror in tmp_path, and points
LESSON_DATA_DIR and KERAS_HOME at tmp dirs: the real data/ and ~/.keras are
never touched. No test uses the network: pooch.retrieve is replaced, except in
the one test that serves a broken download from a local HTTP server.
"""

import errno
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import filelock
import pytest

from lesson_helpers import data, lesson as lesson_config
from lesson_helpers.__main__ import main

REPO = Path(__file__).resolve().parents[1]
OFFLINE = REPO.parent / "shared" / "offline"
MESSAGES = []   # every learner-facing error a test provoked (checked together at the end)
WEIGHTS = "keras/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"


def fake_h5(size, seed=0):
    """Bytes laid out like an HDF5 file (version-0 superblock that records its own length)."""
    head = (data.HDF5_SIGNATURE + bytes([0, 0, 0, 0, 0, 8, 8, 0]) + bytes([4, 0, 16, 0]) + bytes(4)
            + bytes(8) + b"\xff" * 8 + size.to_bytes(8, "little") + b"\xff" * 8)
    body = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return (head + body)[:size]


def sha(content):
    return hashlib.sha256(content).hexdigest()


FIELDS = "path,digest,how,url,convert,source_digest,optional"


def write_registry(path, rows):
    """rows: (path, digest, how, url[, convert, source_digest, optional]); a bare 64-hex digest means sha256."""
    lines = [FIELDS]
    for row in rows:
        row = list(row) + [""] * (7 - len(row))
        if len(row[1]) == 64 and ":" not in row[1]:
            row[1] = "sha256:" + row[1]
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def lesson(tmp_path, monkeypatch):
    """A fake lesson: 5 files in a registry (episode 1's groups), a mirror of them, empty target dirs."""
    files = {
        "data/doggy_door_images/happy_dog.jpg": b"dog" * 700,
        "data/doggy_door_images/sleepy_cat.jpg": b"cat" * 500,
        "data/extra_animals/cow.jpg": b"moo" * 300,
        "keras/models/imagenet_class_index.json": b'{"0": ["n01440764", "tench"]}',
        WEIGHTS: fake_h5(4096),
    }
    mirror = tmp_path / "mirror"
    for rel, content in files.items():
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_bytes(content)
    (mirror / "SHA256SUMS").write_text("".join(f"{sha(c)}  {rel}\n" for rel, c in files.items()))
    rows = [(rel, "" if rel == WEIGHTS else sha(c), "download", f"https://example.invalid/{Path(rel).name}")
            for rel, c in files.items()]
    registry = write_registry(tmp_path / "registry.csv", rows)
    monkeypatch.setattr(data, "registry_file", lambda: registry)
    monkeypatch.setattr(data, "download_cache_dir", lambda: tmp_path / "downloads")
    monkeypatch.setenv("LESSON_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("LESSON_MIRROR", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to download")
    monkeypatch.setattr(data, "_session", no_network)
    return SimpleNamespace(files=files, mirror=mirror, registry=registry, tmp=tmp_path,
                           data=tmp_path / "data", models=tmp_path / "keras_home" / "models")


def target(lesson, rel):
    return (lesson.data / rel.removeprefix("data/")) if rel.startswith("data/") else lesson.models / Path(rel).name


def states(lesson):
    return {entry.path: state for entry, state in data.check()}


def leftovers(folder):
    """Temporary files a write left behind."""
    return sorted(str(p) for p in Path(folder).rglob("*.partial")) if Path(folder).exists() else []


def all_ok(lesson):
    return set(states(lesson).values()) == {"ok"}


def error_of(call, *args, **kwargs):
    with pytest.raises(data.LessonDataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300, message
    MESSAGES.append(message)
    return message


# ------------------------------------------------------------------ mirror mode and check


def test_fetch_from_mirror_then_a_second_fetch_writes_nothing(lesson, monkeypatch):
    assert set(states(lesson).values()) == {"missing"}
    assert data.fetch(mirror=lesson.mirror) == lesson.data
    for rel, content in lesson.files.items():
        assert target(lesson, rel).read_bytes() == content
    assert all_ok(lesson) and leftovers(lesson.tmp) == []

    def must_not_write(*args):
        raise AssertionError("a valid file was written again")
    monkeypatch.setattr(data, "_atomic_write", must_not_write)
    data.fetch(mirror=lesson.mirror)


def test_mirror_from_the_environment_variable(lesson, monkeypatch):
    monkeypatch.setenv("LESSON_MIRROR", str(lesson.mirror))
    data.fetch()
    assert all_ok(lesson)


def test_fetch_episode_data_says_how_many_files_are_ready(lesson, capsys):
    data.fetch_episode_data(1, mirror=lesson.mirror)
    assert capsys.readouterr().out == f"Episode 1: 5 files ready; data in {lesson.data}.\n"


def test_weights_file_name_is_the_one_keras_looks_for(lesson):
    entry = next(e for e in data.registry() if e.path == WEIGHTS)
    assert entry.target == lesson.models / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"


# ------------------------------------------------------------------ corrupt and partial files


def test_corrupted_file_in_data_is_reported_then_replaced(lesson, capsys):
    data.fetch(mirror=lesson.mirror)
    dog = target(lesson, "data/doggy_door_images/happy_dog.jpg")
    dog.write_bytes(b"cat" + dog.read_bytes()[3:])  # same size, different content
    assert states(lesson)["data/doggy_door_images/happy_dog.jpg"] == "corrupt"
    assert main(["check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"corrupt   {dog}  -> delete {dog} and run `python -m lesson_helpers fetch`"
    assert out[1] == "episode 1: 1 corrupt of 5 files: see the lines above"
    assert out[2].startswith("5 files: 1 corrupt, 4 ok")
    data.fetch(mirror=lesson.mirror)
    assert dog.read_bytes() == lesson.files["data/doggy_door_images/happy_dog.jpg"] and all_ok(lesson)


@pytest.mark.parametrize("damage", ["truncated", "not hdf5", "empty"])
def test_corrupted_weights_in_keras_cache_are_never_trusted(lesson, damage):
    data.fetch(mirror=lesson.mirror)
    weights = target(lesson, WEIGHTS)
    good = weights.read_bytes()
    weights.write_bytes({"truncated": good[:3000], "not hdf5": b"<html>Error 503</html>", "empty": b""}[damage])
    assert states(lesson)[WEIGHTS] == "corrupt"
    data.fetch(mirror=lesson.mirror)
    assert weights.read_bytes() == good and states(lesson)[WEIGHTS] == "ok"


def test_hdf5_completeness_check_on_files_written_by_h5py(tmp_path):
    h5py = pytest.importorskip("h5py")
    for libver in ("earliest", "latest"):   # superblock versions 0 and 3
        path = tmp_path / f"{libver}.h5"
        with h5py.File(path, "w", libver=libver) as f:
            f["kernel"] = list(range(5000))
        content = path.read_bytes()
        assert data._hdf5_problem(content[:64], len(content)) is None
        assert "is incomplete" in data._hdf5_problem(content[:64], len(content) - 100)
    assert data._hdf5_problem(b"PK\x03\x04" + bytes(60), 64) == "is not an HDF5 weights file"


@pytest.mark.skipif(not (OFFLINE / "keras" / "models").is_dir(), reason="no offline mirror beside the repo")
def test_hdf5_check_accepts_the_offline_stand_in_weights():
    for path in (OFFLINE / "keras" / "models").glob("*.h5"):
        with open(path, "rb") as f:
            assert data._hdf5_problem(f.read(64), path.stat().st_size) is None, path


def test_partial_files_from_an_interrupted_run_are_cleared_and_replaced(lesson):
    dog = target(lesson, "data/doggy_door_images/happy_dog.jpg")
    dog.parent.mkdir(parents=True)
    full = lesson.files["data/doggy_door_images/happy_dog.jpg"]
    dog.write_bytes(full[: len(full) // 2])                     # cut short by an older tool
    (dog.parent / ".happy_dog.jpg.x1y2.partial").write_bytes(full[:100])
    lesson.models.mkdir(parents=True)
    (lesson.models / f".{Path(WEIGHTS).name}.abc.partial").write_bytes(b"\x89HDF")
    assert states(lesson)["data/doggy_door_images/happy_dog.jpg"] == "corrupt"
    data.fetch(mirror=lesson.mirror)
    assert dog.read_bytes() == full and all_ok(lesson) and leftovers(lesson.tmp) == []


class FailingWriter(io.BytesIO):
    """A file that takes part of the data, then fails like a full disk (or a Ctrl-C)."""

    def __init__(self, real, error):
        super().__init__()
        self.real, self.error = real, error

    def write(self, content):
        self.real.write(content[: len(content) // 2])
        self.real.flush()
        raise self.error

    def close(self):
        self.real.close()


def fail_writes(monkeypatch, error):
    real_fdopen = os.fdopen
    monkeypatch.setattr(data.os, "fdopen", lambda fd, mode: FailingWriter(real_fdopen(fd, mode), error))


def test_disk_full_gives_one_line_and_leaves_no_partial_file(lesson, monkeypatch, capsys):
    fail_writes(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    first = target(lesson, "data/doggy_door_images/happy_dog.jpg")
    message = error_of(data.fetch, mirror=lesson.mirror)
    assert message == (f"no space left on the disk while writing {first}: free some space (the lesson needs "
                       "about 120 MB), or set LESSON_DATA_DIR to a folder on a disk with space you can write to")
    assert not first.exists() and leftovers(lesson.tmp) == []
    assert main(["fetch", "--mirror", str(lesson.mirror)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no space left on the disk while writing")


def test_disk_full_in_the_keras_cache_names_keras_home(lesson, monkeypatch):
    data.fetch(mirror=lesson.mirror)
    target(lesson, WEIGHTS).write_bytes(b"junk")
    fail_writes(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    message = error_of(data.fetch, mirror=lesson.mirror)
    assert "or set KERAS_HOME to a folder on a disk with space" in message
    assert target(lesson, WEIGHTS).read_bytes() == b"junk"   # the old file stays as it was...
    assert states(lesson)[WEIGHTS] == "corrupt"              # ...and is still not trusted
    assert leftovers(lesson.tmp) == []


def test_interrupted_write_leaves_the_target_absent(lesson, monkeypatch):
    fail_writes(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        data.fetch(mirror=lesson.mirror)
    assert not target(lesson, "data/doggy_door_images/happy_dog.jpg").exists()
    assert leftovers(lesson.tmp) == []


# ------------------------------------------------------------------ unwritable places


def test_keras_cache_that_cannot_be_created(lesson, monkeypatch):
    (lesson.tmp / "a_file").write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(lesson.tmp / "a_file" / "keras"))
    message = error_of(data.fetch, mirror=lesson.mirror)
    assert message.startswith(f"cannot create the Keras cache {lesson.tmp / 'a_file' / 'keras' / 'models'} (")
    assert message.endswith("set KERAS_HOME to a folder you can write to")


def test_read_only_folders_are_named(lesson, monkeypatch):
    lesson.models.mkdir(parents=True)
    lesson.data.mkdir(parents=True)
    real_access = os.access   # chmod does not stop root, so ask os.access to say "read-only"
    read_only = {lesson.models}
    monkeypatch.setattr(data.os, "access", lambda p, mode: Path(p) not in read_only and real_access(p, mode))
    assert error_of(data.fetch, mirror=lesson.mirror) == (
        f"the Keras cache {lesson.models} is not writable: set KERAS_HOME to a folder you can write to")
    read_only = {lesson.data}
    assert error_of(data.fetch, mirror=lesson.mirror) == (
        f"the data folder {lesson.data} is not writable: set LESSON_DATA_DIR to a folder you can write to")
    assert not any(lesson.models.iterdir())


# ------------------------------------------------------------------ network and mirror problems


def test_mirror_missing_a_file(lesson):
    (lesson.mirror / "data/extra_animals/cow.jpg").unlink()
    assert error_of(data.fetch, mirror=lesson.mirror) == (
        f"the mirror {lesson.mirror} has no data/extra_animals/cow.jpg: copy that into the mirror, "
        "or fetch online without a mirror")
    assert states(lesson) == {**{rel: "ok" for rel in lesson.files}, "data/extra_animals/cow.jpg": "missing"}
    (lesson.mirror / "data/doggy_door_images/sleepy_cat.jpg").unlink()
    target(lesson, "data/doggy_door_images/sleepy_cat.jpg").unlink()
    assert "has no data/doggy_door_images/sleepy_cat.jpg and 1 more file(s): " in error_of(
        data.fetch, mirror=lesson.mirror)


def test_mirror_that_is_not_a_folder(lesson, capsys):
    assert main(["fetch", "--mirror", str(lesson.tmp / "no_such_mirror")]) == 1
    assert capsys.readouterr().err == (f"error: the mirror {lesson.tmp / 'no_such_mirror'} is not a folder: "
                                       "check the path given to --mirror or LESSON_MIRROR\n")


def test_hash_mismatch_in_the_mirror_writes_nothing(lesson):
    (lesson.mirror / "data/doggy_door_images/happy_dog.jpg").write_bytes(b"not the dog")
    assert error_of(data.fetch, mirror=lesson.mirror) == (
        f"data/doggy_door_images/happy_dog.jpg from mirror {lesson.mirror} does not match its sha256 "
        "(a damaged or changed copy): replace that copy, or fetch online")
    assert not target(lesson, "data/doggy_door_images/happy_dog.jpg").exists() and leftovers(lesson.tmp) == []


def test_weights_in_the_mirror_are_checked_against_its_sha256sums(lesson):
    weights = lesson.mirror / WEIGHTS
    weights.write_bytes(fake_h5(4096, seed=1))  # a valid-looking HDF5 file, but not the listed one
    assert "does not match its sha256" in error_of(data.fetch, mirror=lesson.mirror)
    assert not target(lesson, WEIGHTS).exists()


def test_truncated_weights_in_a_mirror_without_sums_are_refused(lesson):
    (lesson.mirror / "SHA256SUMS").unlink()
    (lesson.mirror / WEIGHTS).write_bytes(fake_h5(4096)[:2000])
    assert error_of(data.fetch, mirror=lesson.mirror) == (
        f"{WEIGHTS} from mirror {lesson.mirror} is incomplete (2,000 of 4,096 bytes): replace that copy")


# ------------------------------------------------------------------ archives


@pytest.mark.parametrize("bad_path", ["data/../../escaped.txt", "data/dogs/../../../escaped.txt",
                                      "keras/models/../../escaped.h5", "/etc/escaped.txt", "other/x.jpg"])
def test_registry_paths_cannot_leave_their_folders(lesson, bad_path):
    write_registry(lesson.registry, [(bad_path, sha(b"x"), "download", "https://example.invalid/x")])
    (lesson.mirror / "escaped.txt").write_bytes(b"x")
    message = error_of(data.fetch, mirror=lesson.mirror)
    assert message == f"{lesson.registry}: {bad_path!r} is not a plain data/... or keras/models/... path: fix that line"
    assert list(lesson.tmp.rglob("escaped*")) == [lesson.mirror / "escaped.txt"]
    assert not list(lesson.tmp.parent.glob("escaped*"))


# ------------------------------------------------------------------ an interrupted download, for real


# ------------------------------------------------------------------ two processes at once


CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from lesson_helpers import data

    registry, mirror, log, go = sys.argv[1:5]
    data.registry_file = lambda: Path(registry)
    real_write = data._atomic_write

    def logged_write(target, content):   # slow, and logged, so overlapping writers would show
        with open(log, "a") as f:
            f.write(f"{os.getpid()} start {target.name} {time.monotonic()}\\n")
        time.sleep(0.02)
        real_write(target, content)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} end {target.name} {time.monotonic()}\\n")
    data._atomic_write = logged_write
    while not os.path.exists(go):
        time.sleep(0.005)
    data.fetch(mirror=mirror)
    print("done")
""")


def test_two_processes_fetching_at_once_do_not_corrupt_each_other(lesson):
    log, go = lesson.tmp / "writes.log", lesson.tmp / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(lesson.registry), str(lesson.mirror), str(log),
                                  str(go)], env=env, cwd=lesson.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(3)]
    time.sleep(0.5)   # let all three import and wait at the start line
    go.touch()
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0 and out == "done\n", err
    events = [line.split() for line in log.read_text().splitlines()]
    # Each file was written exactly once (the first process did it all; the others found it valid) ...
    assert sorted(name for _, kind, name, _ in events if kind == "start" and name != data.TRUST_FILE) == sorted(
        Path(rel).name for rel in lesson.files)
    # ... and the writes never overlapped.
    kinds = [kind for _, kind, _, _ in sorted(events, key=lambda e: float(e[3]))]
    assert kinds == ["start", "end"] * (len(kinds) // 2) and len(kinds) == 2 * (len(lesson.files) + 1)  # + trust file
    assert all_ok(lesson) and leftovers(lesson.tmp) == []


def test_a_fetch_that_waits_too_long_says_so(lesson, monkeypatch):
    lesson.data.mkdir(parents=True)
    monkeypatch.setattr(data, "LOCK_TIMEOUT_S", 0.2)
    holder = subprocess.Popen([sys.executable, "-c", "import filelock, sys, time\n"
                               "with filelock.FileLock(sys.argv[1]):\n    print('held', flush=True)\n"
                               "    time.sleep(30)\n", str(lesson.data / ".fetch.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert error_of(data.fetch, mirror=lesson.mirror) == (
            f"another fetch (another notebook or terminal) has held {lesson.data / '.fetch.lock'} for 0.2 s: "
            "wait for it to finish, or stop it and run this again")
    finally:
        holder.kill()
        holder.wait()
    assert not lesson.models.exists() or not any(lesson.models.iterdir())


# ------------------------------------------------------------------ the command line


def test_cli_check_exit_codes_and_lines(lesson, capsys):
    assert main(["check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 7 and all(line.startswith("missing   ") for line in out[:5])
    assert out[5] == "episode 1: not fetched yet: run `python -m lesson_helpers fetch --episode 1`"
    assert out[6] == f"5 files: 5 missing (data: {lesson.data}, weights: {lesson.models})"
    assert main(["fetch", "--mirror", str(lesson.mirror)]) == 0
    assert capsys.readouterr().out == (f"episode 1: ready (5 files)\n"
                                       f"5 files: 5 ok (data: {lesson.data}, weights: {lesson.models})\n")
    assert main(["check", "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 7


def test_cli_unknown_episode(lesson, capsys):
    assert main(["check", "--episode", "9"]) == 1
    numbers = [ep.number for ep in lesson_config.episodes()]  # the episodes of _config.yml, however many
    assert capsys.readouterr().err == f"error: there is no episode 9: choose from {numbers}\n"


def run_cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "lesson_helpers", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_cli_as_a_process_with_the_real_registry(tmp_path):
    env = {"LESSON_DATA_DIR": str(tmp_path / "data"), "KERAS_HOME": str(tmp_path / "keras_home"), "LESSON_MIRROR": ""}
    run = run_cli("fetch", "--episode", "1", "--mirror", str(tmp_path / "nowhere"), **env)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr == (f"error: the mirror {tmp_path / 'nowhere'} is not a folder: check the path given to "
                          "--mirror or LESSON_MIRROR\n")
    run = run_cli("check", "--episode", "1", **env)
    assert run.returncode == 1
    assert run.stdout.splitlines()[-1].startswith("10 files: 1 absent, 9 missing (data: " + str(tmp_path / "data"))


@pytest.mark.skipif(not (OFFLINE / "SHA256SUMS").is_file(), reason="no offline mirror beside the repo")
def test_cli_fetch_episode_1_from_the_offline_mirror(tmp_path):
    env = {"LESSON_DATA_DIR": str(tmp_path / "data"), "KERAS_HOME": str(tmp_path / "keras_home")}
    run = run_cli("fetch", "--episode", "1", "--mirror", str(OFFLINE), **env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == ("Note: the mirror has no brown_bear.jpg (optional: fetched online only); "
                                          "going on without.")
    assert run.stdout.splitlines()[-1] == (f"10 files: 1 absent, 8 ok, 1 stand-in (data: {tmp_path / 'data'}, "
                                           f"weights: {tmp_path / 'keras_home' / 'models'})")
    assert (tmp_path / "data" / "doggy_door_images" / "happy_dog.jpg").is_file()


# ------------------------------------------------------------------ where Keras looks for weights


def test_keras_cache_dir_falls_back_to_tmp_when_home_is_read_only(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.keras_cache_dir() == tmp_path / ".keras" / "models"
    real_access = os.access
    monkeypatch.setattr(data.os, "access", lambda p, mode: Path(p) != tmp_path and real_access(p, mode))
    assert data.keras_cache_dir() == Path("/tmp/.keras/models")


@pytest.mark.slow
@pytest.mark.parametrize("keras_home", ["set", "unset", "empty"])
def test_keras_cache_dir_agrees_with_keras(tmp_path, keras_home):
    """Where keras.utils.get_file (what keras.applications uses) really puts a file, and ours."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_HOME"}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    (tmp_path / "home").mkdir()
    if keras_home != "unset":
        env["KERAS_HOME"] = str(tmp_path / "keras_home") if keras_home == "set" else ""
    name = f"lesson-test-{os.getpid()}-{keras_home}.txt"
    code = ("import json, pathlib, sys\nimport keras\nfrom lesson_helpers import data\n"
            "source = pathlib.Path(sys.argv[1])\nsource.write_text('x')\n"
            "path = pathlib.Path(keras.utils.get_file(source.name, origin=source.resolve().as_uri(), "
            "cache_subdir='models'))\nprint(json.dumps([str(path.parent), str(data.keras_cache_dir())]))\n"
            "path.unlink()")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    keras_models, ours = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(ours) == Path(keras_models)
    assert not (tmp_path / "models").exists()


# ------------------------------------------------------------------ SHA256SUMS in both formats


def test_sha256sums_in_binary_mode_format_is_read_and_enforced(lesson):
    """`sha256sum -b` (Git Bash's default) writes 'HASH *path': those lines count too."""
    sums = lesson.mirror / "SHA256SUMS"
    sums.write_text("".join(f"{sha(c)} *./{rel}\r\n" for rel, c in lesson.files.items()))
    assert data.read_sha256sums(sums)[WEIGHTS] == sha(lesson.files[WEIGHTS])
    (lesson.mirror / WEIGHTS).write_bytes(fake_h5(4096, seed=1))   # valid-looking, but not the listed file
    assert "does not match its sha256" in error_of(data.fetch, mirror=lesson.mirror)
    assert not target(lesson, WEIGHTS).exists()


@pytest.mark.parametrize("bad_line", ["not a checksum", "abc123  data/x.jpg", f"{'0' * 64} data/x.jpg",
                                      f"{'0' * 64}\tdata/x.jpg", f"SHA256 (data/x.jpg) = {'0' * 64}"])
def test_sha256sums_with_another_line_is_refused_naming_the_line(lesson, bad_line):
    sums = lesson.mirror / "SHA256SUMS"
    sums.write_text(f"\n{sha(b'x')}  data/ok.jpg\n{bad_line}\n")
    assert error_of(data.fetch, mirror=lesson.mirror) == (
        f"{sums}, line 3: not a checksum line (expected 'SHA256  path' or 'SHA256 *path', as sha256sum writes): "
        "fix or delete that line")
    assert not lesson.data.exists() or not any(p.is_file() and p.name != ".fetch.lock" for p in lesson.data.rglob("*"))


# ------------------------------------------------------------------ shared and odd set-ups


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_fetched_files_get_the_permissions_of_ordinary_files(lesson, umask):
    old = os.umask(umask)
    try:
        data.fetch(mirror=lesson.mirror)
    finally:
        os.umask(old)
    for rel in lesson.files:
        assert target(lesson, rel).stat().st_mode & 0o777 == 0o666 & ~umask, rel
    assert (lesson.data / "doggy_door_images").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_complete_read_only_shared_folder_needs_no_writing(lesson, monkeypatch):
    data.fetch(mirror=lesson.mirror)
    for path in [lesson.data, *lesson.data.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    enforce_permission_bits(monkeypatch, lesson.data)
    try:
        data.fetch_episode_data(1)   # nothing to do: no lock, no write, no error
    finally:
        for path in [lesson.data, *lesson.data.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)


def enforce_permission_bits(monkeypatch, folder):
    """Under folder, make os.open and os.access honour the owner's mode bits, as they do for an ordinary
    account (root, who runs these tests in CI, writes through any mode bits)."""
    real_open, real_access = os.open, os.access
    writes = os.O_WRONLY | os.O_RDWR

    def read_only(path):
        try:
            return Path(path).is_relative_to(folder) and not os.stat(path).st_mode & stat.S_IWUSR
        except OSError:
            return False

    def fake_open(path, flags, *args, **kwargs):
        if flags & writes and read_only(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_access(path, mode, *args, **kwargs):
        return False if mode & os.W_OK and read_only(path) else real_access(path, mode, *args, **kwargs)
    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "access", fake_access)


def test_a_leftover_read_only_lock_file_is_replaced(lesson, monkeypatch):
    lesson.data.mkdir(parents=True)
    lock = lesson.data / ".fetch.lock"
    lock.write_text("")
    lock.chmod(0o444)
    enforce_permission_bits(monkeypatch, lesson.tmp)
    with pytest.raises(PermissionError):   # what filelock does with it (the crash of the issue)
        filelock.FileLock(lock, timeout=0.1).acquire()
    data.fetch(mirror=lesson.mirror)
    assert all_ok(lesson)


def test_keras_home_empty_is_handled_like_keras(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_HOME", "")
    assert data.keras_cache_dir() == Path("/tmp/.keras/models")   # Keras: os.access('') is False -> /tmp/.keras
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert data.keras_cache_dir() == tmp_path / "kh" / "models"


def test_a_folder_where_a_file_should_be(lesson, capsys):
    dog = target(lesson, "data/doggy_door_images/happy_dog.jpg")
    dog.mkdir(parents=True)
    assert states(lesson)["data/doggy_door_images/happy_dog.jpg"] == "folder"
    message = error_of(data.fetch, mirror=lesson.mirror)
    assert message == (f"{dog} is a folder, but the lesson needs a file there: move or delete that folder, "
                       "then fetch again")
    assert main(["check"]) == 1
    assert f"folder    {dog}  -> a folder is where this file belongs: move or delete it" in capsys.readouterr().out


def test_messages_stay_one_short_line_with_a_long_data_folder(lesson, monkeypatch):
    """A data folder deep in a long path (a Windows profile in OneDrive, a shared drive): every message is still
    one line under 300 characters, with the file's name and the fix; the path loses its middle."""
    deep = lesson.tmp / "OneDrive - A University With A Long Name" / "Documents" / ("workshop_" * 12) / ("x" * 60)
    monkeypatch.setenv("LESSON_DATA_DIR", str(deep / "data"))
    fail_writes(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    message = error_of(data.fetch, mirror=lesson.mirror)
    assert message.startswith(f"no space left on the disk while writing {lesson.tmp}") and "..." in message
    assert message.endswith("happy_dog.jpg: free some space (the lesson needs about 120 MB), or set LESSON_DATA_DIR "
                            "to a folder on a disk with space you can write to"), message
    monkeypatch.undo()
    monkeypatch.setattr(data, "registry_file", lambda: lesson.registry)
    monkeypatch.setenv("KERAS_HOME", str(lesson.tmp / "keras_home"))
    monkeypatch.setenv("LESSON_DATA_DIR", str(deep / "data"))
    (deep / "data" / "doggy_door_images" / "happy_dog.jpg").mkdir(parents=True)
    message = error_of(data.fetch, mirror=lesson.mirror)
    assert message.endswith("happy_dog.jpg is a folder, but the lesson needs a file there: move or delete that "
                            "folder, then fetch again"), message


def test_one_line_keeps_short_messages_and_cuts_long_ones():
    assert data._one_line("a\n  b  c\r\n") == "a b  c"   # line breaks go; other spacing stays (SHA256  path)
    assert data.LessonDataError("fine: as it is").args == ("fine: as it is",)
    long = data._one_line("x" * 500)
    assert len(long) < 300 and long.startswith("xxx") and "..." in long


def test_a_file_where_the_data_folder_should_be(lesson, monkeypatch):
    (lesson.tmp / "a_file").write_text("x")
    monkeypatch.setenv("LESSON_DATA_DIR", str(lesson.tmp / "a_file"))
    assert error_of(data.fetch, mirror=lesson.mirror) == (
        f"the data folder {lesson.tmp / 'a_file'} is a file, not a folder: move that file, or set LESSON_DATA_DIR "
        "to a folder you can write to")


def test_check_summarises_a_group_of_many_missing_files(lesson, capsys):
    rows = [(f"data/cats_and_dogs_filtered/c{i}.jpg", sha(b"x"), "download", "https://example.invalid/x")
            for i in range(50)]
    write_registry(lesson.registry, rows + [(rel, sha(c), "download", "https://example.invalid/y")
                                            for rel, c in lesson.files.items() if rel != WEIGHTS])
    data.fetch([1], mirror=lesson.mirror)
    assert main(["check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["missing   50 files of cats_and_dogs_filtered/  -> run `python -m lesson_helpers fetch --episode 2` "
                   "(add --mirror DIR when offline)",
                   "episode 1: ready (4 files)",
                   *(f"episode {ep.number}: not fetched yet: run `python -m lesson_helpers fetch --episode {ep.number}`"
                     for ep in lesson_config.episodes()[1:]),  # the other episodes of _config.yml
                   f"54 files: 50 missing, 4 ok (data: {lesson.data}, weights: {lesson.models})"]


@pytest.mark.skipif(not (OFFLINE / "SHA256SUMS").is_file(), reason="no offline mirror beside the repo")
def test_check_after_fetching_episode_1_is_a_short_summary(tmp_path):
    env = {"LESSON_DATA_DIR": str(tmp_path / "data"), "KERAS_HOME": str(tmp_path / "keras_home")}
    assert run_cli("fetch", "--episode", "1", "--mirror", str(OFFLINE), **env).returncode == 0
    run = run_cli("check", **env)
    lines = run.stdout.splitlines()
    assert run.returncode == 1 and len(lines) <= 12, run.stdout
    assert "episode 1: ready (9 files; 1 optional file(s) absent)" in lines
    assert "episode 2: not fetched yet: run `python -m lesson_helpers fetch --episode 2`" in lines


def test_a_file_where_a_data_sub_folder_should_be(lesson):
    lesson.data.mkdir(parents=True)
    (lesson.data / "doggy_door_images").write_text("not a folder")
    message = error_of(data.fetch, mirror=lesson.mirror)
    assert message == (f"{lesson.data / 'doggy_door_images'} is a file, but a folder is needed there for "
                       "happy_dog.jpg: "
                       "move that file, or set LESSON_DATA_DIR to another folder")
    assert "disk with space" not in message
