"""Fetch, verify and locate the lesson's data and pretrained weights.

Every file the lesson uses is listed in ``registry.csv`` beside this module:
its path in a mirror (``data/...`` or ``keras/models/...``), its sha256 and
where it comes from on the internet. Files are fetched online with pooch, or
copied from a local mirror (a folder laid out like the registry paths), and
are always verified before they are put in place.

- ``data/...`` files go to the lesson's data folder (see :func:`data_dir`).
- ``keras/models/...`` files go to the Keras cache (see :func:`keras_cache_dir`),
  where ``keras.applications`` looks for weights before downloading them.
"""

import bz2
import contextlib
import csv
import errno
import hashlib
import importlib.util
import io
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import filelock

from . import lesson

DATA_DIR_ENV = "LESSON_DATA_DIR"
MIRROR_ENV = "LESSON_MIRROR"

# sha256 of the offline stand-in MobileNetV2 weights (see the offline mirror's
# MANIFEST.md): real convolutional features, but a head that knows 19 dog
# breeds only. Recognised so that nobody mistakes them for the real model.
STAND_IN_WEIGHTS_SHA256 = {
    "1c2a2f02daa6c910457db0a4f3a9bbcf88debb95a66956916245472d05855637",
    "1ec34c4e7a36fb63c9fa597dde10193cecf621b33f983301be676113785bbcf1",
    "a7ab2f82c669ada752850d7322f0fadbcc19b5ec5cb0442fc0f7a9503598058e",
}

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MIRROR_HINT = f"use a mirror (--mirror DIR or {MIRROR_ENV}=DIR)"
ONLINE_HINT = f"check your internet connection, or {MIRROR_HINT}"
# How long a fetch waits for another one (another notebook, a terminal) into the same folders.
LOCK_TIMEOUT_S = 900


class LessonDataError(RuntimeError):
    """A data problem with a one-line explanation of what to do."""


@dataclass(frozen=True)
class RegistryEntry:
    path: str    # path inside a mirror: data/... or keras/models/...
    sha256: str  # empty where the real file's hash is not known (Keras weights)
    how: str     # download | zip:<member> | scipy-face:<sha256 of face.dat>
    url: str

    @property
    def group(self):
        parts = self.path.split("/")
        if parts[0] == "data":
            return parts[1]
        name = parts[-1]
        if "no_top" in name:
            return "mobilenet_v2_no_top"
        return "mobilenet_v2_imagenet"  # the 1000-class model and its class names

    @property
    def target(self):
        """Where this file lives on this machine (never outside the data folder or the Keras cache)."""
        parts = self.path.split("/")
        if len(parts) >= 2 and parts[0] == "data":
            base, inside = data_dir(), parts[1:]
        elif len(parts) == 3 and parts[:2] == ["keras", "models"]:
            base, inside = keras_cache_dir(), parts[2:]
        else:
            base, inside = None, []
        if base is None or any(p in ("", ".", "..") or "\\" in p or ":" in p for p in inside):
            raise LessonDataError(f"{registry_file()}: {self.path!r} is not a plain data/... or keras/models/... "
                                  "path: fix that line")
        return base.joinpath(*inside)


def registry_file():
    """The registry CSV (a function, so that tests can point it at a small fake registry)."""
    return Path(__file__).with_name("registry.csv")


def registry():
    """All files the lesson uses, as a list of :class:`RegistryEntry`."""
    with open(registry_file(), newline="") as f:
        return [RegistryEntry(**row) for row in csv.DictReader(f)]


def entries_for(episodes=None):
    """Registry entries needed by the given episodes (all of them for None)."""
    entries = registry()
    if episodes is None:
        return entries
    groups = set()
    for episode in episodes:
        try:
            groups.update(lesson.episode(episode).data)  # the episode's `data:` in _config.yml
        except (KeyError, ValueError, TypeError):
            raise LessonDataError(f"there is no episode {episode!r}: choose from "
                                  f"{[e.number for e in lesson.episodes()]}") from None
    return [e for e in entries if e.group in groups]


def lesson_folder(name, env_var):
    """A folder of the lesson: ``$env_var`` if set; else ``name/`` of the lesson repository when
    the helpers are used from a checkout; else ``./name`` (e.g. on Colab)."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var]).expanduser().resolve()
    if lesson.in_checkout():
        return lesson.REPO / name
    return Path.cwd() / name


def data_dir():
    """The lesson's data folder: ``$LESSON_DATA_DIR``, else ``data/`` (see :func:`lesson_folder`)."""
    return lesson_folder("data", DATA_DIR_ENV)


def keras_cache_dir():
    """The folder where Keras looks for pretrained weights: ``$KERAS_HOME/models``.

    Keras uses ``$KERAS_HOME``, else ``~/.keras``, else ``/tmp/.keras`` when the
    home folder is not writable (the same rule as ``keras.src.backend.config``).
    """
    if "KERAS_HOME" in os.environ:
        home = Path(os.environ["KERAS_HOME"]).expanduser()
    else:
        base = Path("~").expanduser()
        home = (base if os.access(base, os.W_OK) else Path("/tmp")) / ".keras"
    return home / "models"


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_of(entry):
    """'ok', 'stand-in' (offline stand-in weights), 'missing' or 'corrupt'."""
    target = entry.target
    if not target.is_file():
        return "missing"
    try:
        if entry.sha256:
            return "ok" if sha256_of(target) == entry.sha256 else "corrupt"
        # Weights: the real hash is unknown; check the format and that the file is complete.
        with open(target, "rb") as f:
            if _hdf5_problem(f.read(64), target.stat().st_size):
                return "corrupt"
        return "stand-in" if sha256_of(target) in STAND_IN_WEIGHTS_SHA256 else "ok"
    except OSError:  # unreadable: as good as corrupt (the fix is the same)
        return "corrupt"


def _hdf5_problem(head, size):
    """Why these first bytes of a ``size``-byte file are not a complete HDF5 file, or None.

    HDF5's superblock records the file's end address, so a download or copy
    that stopped early is caught without reading the whole file.
    """
    if not head.startswith(HDF5_SIGNATURE) or len(head) < 48:
        return "is not an HDF5 weights file"
    version = head[8]
    if version in (0, 1):
        width = head[13]
        base_at = 24 + (4 if version == 1 else 0)
        end_at = base_at + 2 * width
    elif version in (2, 3):
        width = head[9]
        base_at = 12
        end_at = base_at + 2 * width
    else:
        return None  # a newer layout: the signature is all that can be checked here
    if width not in (2, 4, 8):
        return "has a damaged HDF5 header"
    base = int.from_bytes(head[base_at:base_at + width], "little")
    end = int.from_bytes(head[end_at:end_at + width], "little")
    if base + end > size:
        return f"is incomplete ({size:,} of {base + end:,} bytes)"
    return None


def _atomic_write(target, data):
    """Write bytes to target through a temporary file, so no half-written file is ever seen.

    Whatever stops the write (a full disk, Ctrl-C), the temporary file is
    removed and the target is either the old file or the complete new one.
    """
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except OSError as err:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise LessonDataError(_write_failure(target, err)) from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def _write_failure(target, err, elsewhere=None):
    """One line for an OSError while writing ``target``: what happened and what to do."""
    if elsewhere is None:
        variable = DATA_DIR_ENV if _inside(target, data_dir()) else "KERAS_HOME"
        elsewhere = f"set {variable} to a folder on a disk with space you can write to"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the disk while writing {target}: free some space "
                f"(the lesson needs about 120 MB), or {elsewhere}")
    return f"cannot write {target} ({err.strerror or err}): {elsewhere}"


def _inside(path, folder):
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def _verified(entry, data, source, expected=None):
    expected = expected or entry.sha256
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise LessonDataError(
            f"{entry.path} from {source} does not match its sha256 (corrupt or changed copy): "
            "replace that copy, or fetch online")
    problem = None if expected else _hdf5_problem(data[:64], len(data))
    if problem:
        raise LessonDataError(f"{entry.path} from {source} {problem}: replace that copy")
    return data


def _writable_or_explain(folder, what, env_hint):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LessonDataError(f"cannot create the {what} {folder} ({err.strerror}): {env_hint}") from None
    if not os.access(folder, os.W_OK):
        raise LessonDataError(f"the {what} {folder} is not writable: {env_hint}")


def _mirror_sums(mirror):
    """The mirror's own SHA256SUMS (path -> sha256), if it has one."""
    sums = {}
    sums_file = mirror / "SHA256SUMS"
    if sums_file.is_file():
        for line in sums_file.read_text().splitlines():
            if line.strip():
                sha, path = line.split(maxsplit=1)
                sums[path.strip().removeprefix("./")] = sha
    return sums


def _copy_from_mirror(entries, mirror, mirror_sums):
    """Copy (verified) what the mirror has; then name what it lacks in one line."""
    lacking = []
    for entry in entries:
        source = mirror / entry.path
        if not source.is_file():
            lacking.append(entry.path)
            continue
        expected = entry.sha256 or mirror_sums.get(entry.path)
        _atomic_write(entry.target, _verified(entry, source.read_bytes(), f"mirror {mirror}", expected))
    if lacking:
        more = f" and {len(lacking) - 1} more file(s)" if len(lacking) > 1 else ""
        raise LessonDataError(
            f"the mirror {mirror} has no {lacking[0]}{more}: copy that into the mirror, "
            f"or fetch online without a mirror")


def download_cache_dir():
    """Where pooch keeps downloads before they are verified and put in place."""
    import pooch

    return Path(pooch.os_cache("pretrained-transfer-learning"))


def _download(url, known_hash=None):
    """Download with pooch into its cache (progress bar, hash check) and return the local path.

    pooch downloads into a temporary file and moves it into place only when
    complete (and matching ``known_hash``), so an interrupted download leaves
    nothing that a later run would trust.
    """
    import pooch
    import requests

    cache = download_cache_dir()
    # pooch refuses progressbar=True without tqdm (a ValueError that looks like a hash mismatch).
    progressbar = importlib.util.find_spec("tqdm") is not None
    try:
        return Path(pooch.retrieve(url, known_hash=known_hash, progressbar=progressbar, path=cache))
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ReadTimeout) as err:
        raise LessonDataError(f"the download of {url} stopped before the end ({type(err).__name__}; "
                              f"nothing was kept): run the fetch again, or {MIRROR_HINT}") from None
    except requests.exceptions.RequestException as err:  # before OSError: it is one too
        raise LessonDataError(f"could not download {url} ({type(err).__name__}): {ONLINE_HINT}") from None
    except OSError as err:  # the download cache, not the network
        hint = f"use a mirror instead of downloading (--mirror DIR or {MIRROR_ENV}=DIR)"
        raise LessonDataError(_write_failure(cache / Path(url).name, err, hint)) from None
    except ValueError as err:  # pooch: hash mismatch (the partial file is deleted)
        raise LessonDataError(f"{url} did not match its sha256 ({err}): try again later") from None


def _forget_download(path, error):
    """Delete a bad download from pooch's cache (pooch would reuse it) and re-raise with that said."""
    Path(path).unlink(missing_ok=True)
    raise LessonDataError(f"{error} (the bad download was deleted: run the fetch again)") from None


def _fetch_online(entries):
    archives = {}
    try:
        for entry in entries:
            how = entry.how
            if how == "download":
                path = _download(entry.url, f"sha256:{entry.sha256}" if entry.sha256 else None)
                try:
                    data = _verified(entry, path.read_bytes(), entry.url)
                except LessonDataError as err:
                    _forget_download(path, err)
            elif how.startswith("zip:"):
                if entry.url not in archives:
                    path = _download(entry.url)
                    try:
                        archives[entry.url] = zipfile.ZipFile(path)
                    except zipfile.BadZipFile:
                        _forget_download(path, f"{entry.url} is not a complete zip file")
                # Read only the registered member, and write it to the entry's own target:
                # whatever names the archive holds, nothing lands outside data/.
                member = how.removeprefix("zip:")
                try:
                    data = archives[entry.url].read(member)
                except KeyError:
                    raise LessonDataError(f"{entry.url} has no {member}: the archive changed upstream; "
                                          "use a mirror") from None
                except (zipfile.BadZipFile, OSError, EOFError) as err:
                    archive = archives.pop(entry.url)
                    archive.close()
                    _forget_download(archive.filename, f"{entry.url} is damaged ({err})")
            elif how.startswith("scipy-face:"):
                raw = bz2.decompress(_download(entry.url, "sha256:" + how.removeprefix("scipy-face:")).read_bytes())
                data = _pixels_to_png(raw, (768, 1024, 3))
            else:
                raise LessonDataError(f"{registry_file()}: unknown source kind {how!r} for {entry.path}")
            _atomic_write(entry.target, _verified(entry, data, entry.url))
    finally:
        for archive in archives.values():
            archive.close()


def _pixels_to_png(raw, shape):
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.frombuffer(raw, dtype=np.uint8).reshape(shape)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def fetch(episodes=None, mirror=None):
    """Make sure every file the episodes need is present and valid; return the data folder.

    Files already present and valid are left alone, so this is quick to re-run.
    ``mirror`` (or ``$LESSON_MIRROR``) is a local folder to copy from instead of
    the internet.
    """
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror is not None:
        mirror = Path(mirror).expanduser().resolve()
        if not mirror.is_dir():
            raise LessonDataError(f"the mirror {mirror} is not a folder: check the path given to "
                                  f"--mirror or {MIRROR_ENV}")
    entries = entries_for(episodes)
    folder = data_dir()
    _writable_or_explain(folder, "data folder", f"set {DATA_DIR_ENV} to a folder you can write to")
    folders = [folder]
    if any(e.path.startswith("keras/") for e in entries):
        _writable_or_explain(keras_cache_dir(), "Keras cache", "set KERAS_HOME to a folder you can write to")
        folders.append(keras_cache_dir())
    # One fetch at a time per folder: two notebooks opened together wait for each other
    # (the Keras cache may be shared by several copies of the lesson, so it has its own lock).
    with _locked(folders):
        for each in folders:
            clear_partial_files(each)
        todo = [e for e in entries if state_of(e) not in ("ok", "stand-in")]
        if mirror is not None:
            _copy_from_mirror(todo, mirror, _mirror_sums(mirror))
        elif todo:
            _fetch_online(todo)
    return folder


@contextlib.contextmanager
def _locked(folders):
    """Hold a file lock in each folder (always in the same order), with a clear message on timeout."""
    with contextlib.ExitStack() as stack:
        for folder in folders:
            try:
                stack.enter_context(filelock.FileLock(Path(folder) / ".fetch.lock", timeout=LOCK_TIMEOUT_S))
            except filelock.Timeout as err:
                raise LessonDataError(
                    f"another fetch (another notebook or terminal) has held {err.lock_file} for "
                    f"{LOCK_TIMEOUT_S} s: wait for it to finish, or stop it and run this again") from None
        yield


def check(episodes=None):
    """Return a list of (entry, state) for the given episodes' files."""
    return [(entry, state_of(entry)) for entry in entries_for(episodes)]


def fix_for(entry, state):
    episode_hint = "python -m lesson_helpers fetch"
    if state == "missing":
        return f"run `{episode_hint}` (add --mirror DIR when offline)"
    if state == "corrupt":
        return f"delete {entry.target} and run `{episode_hint}`"
    if state == "stand-in":
        return ("offline stand-in weights: fine for testing that code runs; for real predictions "
                f"delete {entry.target} and let Keras download the real ones")
    return ""


def fetch_episode_data(episode, mirror=None):
    """Fetch (or verify) everything one episode needs and return the data folder.

    The one call a learner makes at the top of each episode.
    """
    folder = fetch([episode], mirror=mirror)
    states = check([episode])
    note = ""
    if any(state == "stand-in" for _, state in states):
        note = " NOTE: offline stand-in weights are in use, so predictions are not the real ImageNet model's."
    print(f"Episode {episode}: {len(states)} files ready; data in {folder}.{note}")
    return folder


def clear_partial_files(folder):
    """Remove temporary files left by an interrupted write (they are never trusted anyway)."""
    for tmp in Path(folder).rglob(".*.partial"):
        tmp.unlink(missing_ok=True)

