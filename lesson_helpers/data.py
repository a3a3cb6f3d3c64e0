"""Fetch, verify and locate the lesson's data and pretrained weights.

Every file the lesson uses is listed in ``registry.csv`` beside this module:
its path in a mirror (``data/...`` or ``keras/models/...``), a digest of its
content and where it comes from on the internet. Files are fetched online (few,
large downloads: one archive per data group where the source offers one), or
copied from a local mirror (a folder laid out like the registry paths), and are
always verified by their content before they are put in place.

- ``data/...`` files go to the lesson's data folder (see :func:`data_dir`).
- ``keras/models/...`` files go to the Keras cache (see :func:`keras_cache_dir`),
  where ``keras.applications`` looks for weights before downloading them.

Digests (the registry's ``digest`` column) never depend on a compressor:

- ``sha256:HEX``: the file's bytes;
- ``pixels-sha256:HEX``: the decoded RGB pixels (:func:`pixel_digest`), for the
  PNG files the helpers write themselves (any PNG writer gives the same pixels);
- ``git-blob-sha1:HEX``: git's blob id, for files known only by their commit's tree;
- empty: MobileNetV2 weights whose real hash was not yet recorded by a maintainer
  (``python -m lesson_helpers hash-weights --write``). Those are checked for the
  HDF5 layout Keras expects, and the sha256 of the first verified copy is kept in
  a local trust file beside them, so that later damage is still caught.
"""

import bz2
import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

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
# Files beside the weights in the Keras cache: sha256 of the first verified copy of each.
TRUST_FILE = "lesson_helpers.sha256"
# Downloads: urllib3 retries (exponential back-off, Retry-After honoured up to this many seconds;
# a server that asks for a longer wait gets a message instead), then pooch retries a cut-short body.
MAX_RETRY_AFTER_S = 120
HTTP_RETRIES = 4
DOWNLOAD_RETRIES = 2
TIMEOUT_S = 60
SHA256SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) ([ *])(.+)$")
GOOD_STATES = ("ok", "stand-in")


# Every message for a learner is one line shorter than this (long folder paths are shortened in the middle).
MESSAGE_LIMIT = 300


class LessonDataError(RuntimeError):
    """A data problem with a one-line explanation of what to do (one line, under MESSAGE_LIMIT characters)."""

    def __init__(self, message=""):
        super().__init__(_one_line(str(message)))


def _one_line(text, limit=MESSAGE_LIMIT - 1):
    """text on one line, at most limit characters: the longest paths lose their middle first (the file name at
    their end and the fix at the message's end stay), and only as a last resort the message its own middle."""
    text = re.sub(r"\s*[\r\n\t\v\f]+\s*", " ", text).strip()
    while len(text) > limit:
        words = text.split(" ")
        longest = max(range(len(words)), key=lambda i: len(words[i]) if re.search(r"[/\\]", words[i]) else 0)
        word = words[longest]
        if not re.search(r"[/\\]", word) or len(word) <= 40:
            break
        keep = max(36, len(word) - (len(text) - limit) - 3)
        words[longest] = f"{word[:keep // 2]}...{word[-(keep - keep // 2):]}"
        text = " ".join(words)
    if len(text) > limit:
        text = f"{text[:limit // 2 - 2]}...{text[-(limit - limit // 2 - 1):]}"
    return text


@dataclass(frozen=True)
class RegistryEntry:
    path: str                # path inside a mirror: data/... or keras/models/...
    digest: str              # sha256:/pixels-sha256:/git-blob-sha1:HEX, or empty (weights, see above)
    how: str                 # download | zip:<member> | tar:<member below the archive's top folder>
    url: str                 # the file, or the archive that holds it
    convert: str = ""        # "" | png (any image -> PNG) | png-from-bz2-rgb:HxW (scipy's face.dat)
    source_digest: str = ""  # digest of the downloaded bytes, when they are converted
    optional: str = ""       # "yes": absent from some mirrors; its absence fails nothing

    @property
    def group(self):
        parts = self.path.split("/")
        if parts[0] == "data":
            return parts[1]
        name = parts[-1]
        size = re.search(r"_(\d+)_no_top\.h5$", name)
        if size:
            return f"mobilenet_v2_no_top_{size.group(1)}"
        return "mobilenet_v2_imagenet"  # the 1000-class model and its class names

    @property
    def is_weights(self):
        return self.path.startswith("keras/") and self.path.endswith(".h5")

    @property
    def is_optional(self):
        return self.optional.strip().lower() in ("yes", "true", "1")

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

    @property
    def mirror_source(self):
        """Where a mirror may hold this file's source instead (for converted files fetched from an archive)."""
        if self.convert and self.how.startswith("tar:"):
            return self.how.removeprefix("tar:")
        return None


def registry_file():
    """The registry CSV (a function, so that tests can point it at a small fake registry)."""
    return Path(__file__).with_name("registry.csv")


def registry():
    """All files the lesson uses, as a list of :class:`RegistryEntry`."""
    with open(registry_file(), newline="") as f:
        reader = csv.DictReader(f)
        try:
            return [RegistryEntry(**{k: v or "" for k, v in row.items()}) for row in reader]
        except TypeError:
            raise LessonDataError(f"{registry_file()}: unexpected columns {reader.fieldnames}: rebuild it with "
                                  "tools/build_registry.py") from None


def episode_groups():
    """{episode number: the registry groups it needs}, from the episodes' `data` in _config.yml."""
    return {ep.number: ep.data for ep in lesson.episodes()}


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
    """The folder where Keras looks for pretrained weights.

    The same rule as Keras (``keras.src.backend.config`` and ``keras.utils.get_file``):
    ``$KERAS_HOME`` if set, else ``~/.keras`` (``/tmp/.keras`` when the home folder is
    not writable); and ``/tmp/.keras`` when that folder is empty (``KERAS_HOME=''``) or
    exists but is not writable. Weights go in its ``models`` sub-folder.
    """
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if not home or (os.path.exists(home) and not os.access(home, os.W_OK)):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(home) / "models"


# ------------------------------------------------------------------ digests


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pixel_digest(pixels):
    """sha256 of an RGB uint8 array (height x width x 3), shape included: the same for any lossless encoding."""
    height, width, bands = pixels.shape
    return hashlib.sha256(f"{height}x{width}x{bands}\n".encode() + pixels.tobytes()).hexdigest()


def _decoded_rgb(content):
    """The pixels of an image file's bytes, as an RGB uint8 array (any damage raises)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(content)) as image:
        image.load()
        return np.asarray(image.convert("RGB"))


def git_blob_sha1(content):
    """git's blob id of these bytes (what `git hash-object FILE` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def digest_matches(digest, content):
    """Whether these bytes have this registry digest (False for a file that cannot be decoded)."""
    kind, _, expected = digest.partition(":")
    if kind == "sha256":
        return hashlib.sha256(content).hexdigest() == expected
    if kind == "git-blob-sha1":
        return git_blob_sha1(content) == expected
    if kind == "pixels-sha256":
        try:
            return pixel_digest(_decoded_rgb(content)) == expected
        except Exception:  # Pillow raises many kinds for damaged files: all mean "not these pixels"
            return False
    raise LessonDataError(f"{registry_file()}: unknown digest {digest[:40]!r}: use sha256:, pixels-sha256: "
                          "or git-blob-sha1:")


# ------------------------------------------------------------------ SHA256SUMS files


def read_sha256sums(path, strict=True):
    """A ``SHA256SUMS`` file as {path: sha256}: lines ``HASH  path`` or ``HASH *path`` (``sha256sum -b``).

    Paths lose a leading ``./``; blank lines and Windows line ends are fine.
    Anything else raises a one-line error naming the file and the line.
    """
    sums = {}
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LessonDataError(f"cannot read {path} ({getattr(err, 'strerror', None) or err}): fix or delete "
                              "that file") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        match = SHA256SUMS_LINE.match(line)
        if not match:
            if not strict:
                continue
            raise LessonDataError(
                f"{path}, line {number}: not a checksum line (expected 'SHA256  path' or 'SHA256 *path', as "
                "sha256sum writes): fix or delete that line")
        sums[match.group(3).removeprefix("./")] = match.group(1).lower()
    return sums


def _trust_file():
    return keras_cache_dir() / TRUST_FILE


def _trusted():
    """{file name: sha256} of weights verified when they were put in the Keras cache."""
    path = _trust_file()
    return read_sha256sums(path, strict=False) if path.is_file() else {}


def _trust(target, sha):
    """Record a verified weights file's sha256 (best effort: a read-only shared cache just is not recorded)."""
    records = _trusted()
    if records.get(target.name) == sha:
        return
    records[target.name] = sha
    text = "".join(f"{h}  {name}\n" for name, h in sorted(records.items()))
    with contextlib.suppress(LessonDataError):
        _atomic_write(_trust_file(), text.encode())


# ------------------------------------------------------------------ the state of one file


def state_of(entry):
    """'ok', 'stand-in' (offline stand-in weights), 'missing', 'absent' (an optional file), 'folder'
    (a folder where the file should be) or 'corrupt'."""
    target = entry.target
    try:
        info = target.stat()
    except OSError:
        return "absent" if entry.is_optional else "missing"
    if stat.S_ISDIR(info.st_mode):
        return "folder"
    if not stat.S_ISREG(info.st_mode):
        return "corrupt"
    try:
        if entry.is_weights:
            return _weights_state(entry, target)
        if entry.digest.startswith("sha256:"):   # streamed: no need to hold a big file in memory
            return "ok" if sha256_of(target) == entry.digest.removeprefix("sha256:") else "corrupt"
        return "ok" if digest_matches(entry.digest, target.read_bytes()) else "corrupt"
    except OSError:  # unreadable: as good as corrupt (the fix is the same)
        return "corrupt"


def _weights_state(entry, target):
    sha = sha256_of(target)
    if sha in STAND_IN_WEIGHTS_SHA256:
        return "stand-in"
    if entry.digest and sha == entry.digest.removeprefix("sha256:"):
        return "ok"
    recorded = _trusted().get(target.name)
    if recorded is not None:
        return "ok" if sha == recorded else "corrupt"
    if entry.digest:
        return "corrupt"   # the registry knows the real file's hash, and this is not it
    # Put there by Keras itself or by an older version of the helpers: trust it once its layout is right.
    if _weights_problem(entry, target.read_bytes()):
        return "corrupt"
    _trust(target, sha)
    return "ok"


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


def expected_layout(name):
    """The weight shapes, layer by layer, that Keras expects in the MobileNetV2 weights file ``name``."""
    with open(Path(__file__).with_name("mobilenet_v2_layout.json")) as f:
        layout = json.load(f)
    layers = layout["no_top"] + ([] if "no_top" in name else layout["top"])
    return [[list(shape) for shape in shapes] for _, shapes in layers]


def weights_layout(content):
    """The weight shapes, layer by layer, in a Keras HDF5 weights file (read with h5py; raises if damaged)."""
    import h5py

    def text(value):
        return value.decode() if isinstance(value, bytes) else str(value)

    with h5py.File(io.BytesIO(content), "r") as f:
        group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        layers = []
        for name in group.attrs["layer_names"]:
            layer = group[text(name)]
            weights = [text(w) for w in layer.attrs["weight_names"]]
            if weights:
                layers.append([list(layer[w].shape) for w in weights])
        return layers


def _weights_problem(entry, content):
    """Why these bytes are not a MobileNetV2 weights file Keras can load, or None."""
    problem = _hdf5_problem(content[:64], len(content))
    if problem:
        return problem
    if importlib_find("h5py") is None:
        return None   # h5py comes with TensorFlow; without it the header check is all there is
    try:
        layout = weights_layout(content)
    except Exception:  # h5py raises OSError, KeyError, ValueError... for a damaged file
        return "is a damaged HDF5 file"
    if layout != expected_layout(Path(entry.path).name):
        return "does not hold the layers Keras's MobileNetV2 expects"
    return None


def importlib_find(name):
    import importlib.util

    return importlib.util.find_spec(name)


# ------------------------------------------------------------------ writing files


def _atomic_write(target, content):
    """Write bytes to target through a temporary file, so no half-written file is ever seen.

    Whatever stops the write (a full disk, Ctrl-C), the temporary file is
    removed and the target is either the old file or the complete new one.
    The file gets the permissions of any new file (0666 less the umask), so a
    data folder prepared by one account can be read by the others.
    """
    tmp = None
    try:
        if target.is_dir():
            raise LessonDataError(_folder_in_the_way(target))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.partial"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.replace(tmp, target)
    except OSError as err:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise LessonDataError(_write_failure(target, err)) from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def _folder_in_the_way(target):
    return f"{target} is a folder, but the lesson needs a file there: move or delete that folder, then fetch again"


def _write_failure(target, err, elsewhere=None):
    """One line for an OSError while writing ``target``: what happened and what to do."""
    variable = DATA_DIR_ENV if _inside(target, data_dir()) else "KERAS_HOME"
    if err.errno == errno.EISDIR:
        return _folder_in_the_way(target)
    if err.errno == errno.ENOTDIR or (err.errno == errno.EEXIST and _first_non_folder(target) != target):
        return (f"{_first_non_folder(target)} is a file, but a folder is needed there for {Path(target).name}: "
                f"move that file, or {elsewhere or f'set {variable} to another folder'}")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the disk while writing {target}: free some space (the lesson needs about "
                f"120 MB), or {elsewhere or f'set {variable} to a folder on a disk with space you can write to'}")
    elsewhere = elsewhere or f"set {variable} to a folder you can write to"
    return f"cannot write {target} ({err.strerror or err}): {elsewhere}"


def _first_non_folder(target):
    """The first part of target's path that exists but is not a folder (it stops a mkdir)."""
    for parent in reversed(Path(target).parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return target


def _inside(path, folder):
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def _writable_or_explain(folder, what, env_hint):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LessonDataError(f"the {what} {folder} is a file, not a folder: move that file, or {env_hint}") from None
    except OSError as err:
        raise LessonDataError(f"cannot create the {what} {folder} ({err.strerror}): {env_hint}") from None
    if not os.access(folder, os.W_OK):
        raise LessonDataError(f"the {what} {folder} is not writable: {env_hint}")


# ------------------------------------------------------------------ checking content before it is put in place


def _checked(entry, content, source, mirror_sha=None):
    """The bytes to write for ``entry``, verified (a one-line LessonDataError otherwise)."""
    name = entry.path
    from_mirror = source.startswith("mirror ")
    fix = "replace that copy, or fetch online" if from_mirror else f"fetch again later, or {MIRROR_HINT}"
    if entry.is_weights:
        expected = mirror_sha or entry.digest.removeprefix("sha256:")
        if expected:
            if hashlib.sha256(content).hexdigest() != expected:
                raise LessonDataError(f"{name} from {source} does not match its sha256 (a damaged or "
                                      f"changed copy): {fix}")
        else:
            problem = _weights_problem(entry, content)
            if problem:
                raise LessonDataError(f"{name} from {source} {problem}: {fix.split(', or ')[0]}")
        return content
    if not digest_matches(entry.digest, content):
        what = "pixels" if entry.digest.startswith("pixels-") else entry.digest.partition(":")[0]
        raise LessonDataError(f"{name} from {source} does not match its {what} (a damaged or changed copy): {fix}")
    return content


def _converted(entry, raw, source):
    """Verify the downloaded bytes of a converted entry, and convert them (to a lossless PNG)."""
    if not digest_matches(entry.source_digest, raw):
        raise LessonDataError(f"the source of {entry.path} from {source} does not match its "
                              f"{entry.source_digest.partition(':')[0]} (a damaged or changed copy): "
                              "fetch again, or use a mirror")
    if entry.convert == "png":
        pixels = _decoded_rgb(raw)
    elif entry.convert.startswith("png-from-bz2-rgb:"):
        import numpy as np

        height, width = (int(n) for n in entry.convert.partition(":")[2].split("x"))
        pixels = np.frombuffer(bz2.decompress(raw), dtype=np.uint8).reshape(height, width, 3)
    else:
        raise LessonDataError(f"{registry_file()}: unknown conversion {entry.convert!r} for {entry.path}")
    return write_png(pixels)


def write_png(pixels):
    """PNG bytes of an RGB array (checked later by its pixels, so any compressor will do)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _put(entry, content, source, mirror_sha=None):
    """Verify and write one file; remember the sha256 of verified weights."""
    content = _checked(entry, content, source, mirror_sha)
    _atomic_write(entry.target, content)
    if entry.is_weights:
        _trust(entry.target, hashlib.sha256(content).hexdigest())


# ------------------------------------------------------------------ mirrors


def _copy_from_mirror(entries, mirror):
    """Copy (verified) what the mirror has; then name what it lacks in one line."""
    sums_file = mirror / "SHA256SUMS"
    sums = read_sha256sums(sums_file) if sums_file.is_file() else {}
    lacking, skipped = [], []
    for entry in entries:
        source = mirror / entry.path
        if source.is_file():
            _put(entry, _read(source), f"mirror {mirror}", sums.get(entry.path))
        elif entry.mirror_source and (mirror / entry.mirror_source).is_file():
            raw = _read(mirror / entry.mirror_source)
            _put(entry, _converted(entry, raw, f"mirror {mirror}"), f"mirror {mirror}")
        elif entry.is_optional:
            skipped.append(entry.path)
        else:
            lacking.append(entry.path)
    if skipped:
        print(f"Note: the mirror has no {', '.join(Path(p).name for p in skipped)} (optional: fetched online only); "
              "going on without.")
    if lacking:
        more = f" and {len(lacking) - 1} more file(s)" if len(lacking) > 1 else ""
        raise LessonDataError(
            f"the mirror {mirror} has no {lacking[0]}{more}: copy that into the mirror, "
            f"or fetch online without a mirror")


def _read(path):
    try:
        return path.read_bytes()
    except OSError as err:
        raise LessonDataError(f"cannot read {path} ({err.strerror or err}): check that copy, or fetch online") from None


# ------------------------------------------------------------------ downloads


def download_cache_dir():
    """Where pooch keeps downloads before they are verified and put in place."""
    import pooch

    return Path(pooch.os_cache("pretrained-transfer-learning"))


def _session():
    """A requests session that retries with exponential back-off and honours Retry-After (urllib3's Retry)."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.exceptions import MaxRetryError
    from urllib3.util.retry import Retry

    class PatientRetry(Retry):
        """Retry, but give the answer back (no waiting) when the server asks for a long wait."""

        def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
            if response is not None and (self.get_retry_after(response) or 0) > MAX_RETRY_AFTER_S:
                raise MaxRetryError(_pool, url, error)
            return super().increment(method, url, response, error, _pool, _stacktrace)

    options = dict(total=HTTP_RETRIES, connect=2, read=2, status=HTTP_RETRIES, backoff_factor=1,
                   status_forcelist=(429, 500, 502, 503, 504), allowed_methods={"GET"},
                   respect_retry_after_header=True, raise_on_status=False)
    try:
        retry = PatientRetry(**options, backoff_max=30)
    except TypeError:   # urllib3 1.26 (its back-off is capped at 120 s)
        retry = PatientRetry(**options)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


@dataclass
class _Downloader:
    """A pooch downloader: one requests session, one progress bar per group, one-line errors."""

    session: object
    label: str
    progress: object = None

    def __call__(self, url, output_file, pooch_obj=None, check_only=False):
        import requests

        try:
            response = self.session.get(url, stream=True, timeout=TIMEOUT_S)
        except requests.exceptions.RequestException as err:
            raise LessonDataError(_network_problem(self.label, url, err)) from None
        with response:
            if response.status_code >= 400:
                raise LessonDataError(_http_problem(self.label, url, response))
            if self.progress is not None and response.headers.get("Content-Length", "").isdigit():
                self.progress.total = (self.progress.total or 0) + int(response.headers["Content-Length"])
                self.progress.refresh()
            with open(output_file, "wb") as out:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    if self.progress is not None:
                        self.progress.update(len(chunk))


def _host(url):
    return urlparse(url).netloc or url


def _http_problem(label, url, response):
    status, host = response.status_code, _host(url)
    remaining = response.headers.get("X-RateLimit-Remaining")
    if status == 429 or (status == 403 and remaining == "0"):
        wait = response.headers.get("Retry-After", "")
        asked = f", it asks to wait {wait} s" if wait.strip().isdigit() else ""
        return (f"{label}: {host} refused more downloads from your network (HTTP {status}, rate limit{asked}): "
                f"wait a few minutes and fetch again, or {MIRROR_HINT}")
    if status in (404, 410):
        return (f"{label}: {host} no longer has it (HTTP {status}: the source moved): {MIRROR_HINT}, "
                "and tell the lesson's maintainers")
    if status >= 500:
        return (f"{label}: {host} failed (HTTP {status}, after {HTTP_RETRIES} retries): try again later, "
                f"or {MIRROR_HINT}")
    return (f"{label}: {host} refused the download (HTTP {status}; a network filter?): "
            f"try another network, or {MIRROR_HINT}")


def _network_problem(label, url, err):
    import requests

    host = _host(url)
    text = f"{err!r} {err}"
    if isinstance(err, requests.exceptions.ProxyError):
        return (f"{label}: could not download from {host} through your proxy (ProxyError): check the HTTPS_PROXY "
                f"setting (or unset it), or {MIRROR_HINT}")
    if isinstance(err, requests.exceptions.SSLError):
        return (f"{label}: the secure connection to {host} was not trusted (SSL; networks that inspect traffic do "
                "this): set REQUESTS_CA_BUNDLE to your network's certificate file, "
                f"or {MIRROR_HINT}")
    if isinstance(err, requests.exceptions.Timeout):
        return f"{label}: {host} did not answer within {TIMEOUT_S} s: {ONLINE_HINT}"
    if re.search(r"NameResolution|resolve|getaddrinfo|Name or service not known|nodename nor servname", text):
        return f"{label}: cannot find {host} (no network, or DNS failed): {ONLINE_HINT}"
    return f"{label}: could not connect to {host} ({type(err).__name__}): {ONLINE_HINT}"


def _download(url, label, session, progress=None, known_hash=None):
    """Download with pooch into its cache (hash check, retries of a cut-short body) and return the path.

    pooch downloads into a temporary file and moves it into place only when
    complete (and matching ``known_hash``), so an interrupted download leaves
    nothing that a later run would trust.
    """
    import pooch
    import requests

    pooch.get_logger().setLevel("WARNING")   # no "Downloading ..." line per file: the progress bar says it
    cache = download_cache_dir()
    name = f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{Path(urlparse(url).path).name or 'download'}"
    fetcher = pooch.create(path=cache, base_url="", registry={name: known_hash}, urls={name: url},
                           retry_if_failed=DOWNLOAD_RETRIES)
    try:
        return Path(fetcher.fetch(name, downloader=_Downloader(session, label, progress)))
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as err:
        if isinstance(err, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in str(err):
            raise LessonDataError(f"{label}: the download from {_host(url)} stopped before the end "
                                  f"({1 + DOWNLOAD_RETRIES} tries; nothing was kept): fetch again, "
                                  f"or {MIRROR_HINT}") from None
        raise LessonDataError(_network_problem(label, url, err)) from None
    except requests.exceptions.RequestException as err:
        raise LessonDataError(_network_problem(label, url, err)) from None
    except ValueError:  # pooch: hash mismatch on every try (the partial file is deleted)
        raise LessonDataError(f"{label} from {_host(url)} does not match its sha256 ({1 + DOWNLOAD_RETRIES} tries; "
                              f"changed upstream, or altered on the way): try later, or {MIRROR_HINT}") from None
    except OSError as err:  # the download cache, not the network
        hint = f"use a mirror instead of downloading (--mirror DIR or {MIRROR_ENV}=DIR)"
        raise LessonDataError(_write_failure(cache / name, err, hint)) from None


def _forget(path):
    Path(path).unlink(missing_ok=True)


def _progress(group):
    """One progress bar per group (bytes), on stderr; none without tqdm."""
    try:
        from tqdm import tqdm  # text, also in notebooks (tqdm.auto would want ipywidgets)
    except ImportError:
        return contextlib.nullcontext(None)
    return tqdm(desc=group, unit="B", unit_scale=True, unit_divisor=1024, total=0, leave=True, file=sys.stderr)


def _fetch_online(entries):
    groups = {}
    for entry in entries:
        groups.setdefault(entry.group, []).append(entry)
    session = _session()
    with session:
        for group, members in groups.items():
            with _progress(group) as bar:
                _fetch_group(group, members, session, bar)


def _fetch_group(group, entries, session, bar):
    archives = {}
    for entry in entries:
        if entry.how == "download":
            known = entry.digest.removeprefix("sha256:") if entry.digest.startswith("sha256:") and not entry.convert \
                else None
            path = _download(entry.url, entry.path, session, bar, f"sha256:{known}" if known else None)
            try:   # verified, then written; the download itself is never kept (nor reused if bad)
                _put_member(entry, _read(path), entry.url)
            finally:
                _forget(path)
        elif entry.how.startswith(("zip:", "tar:")):
            archives.setdefault(entry.url, []).append(entry)
        else:
            raise LessonDataError(f"{registry_file()}: unknown source kind {entry.how!r} for {entry.path}")
    for url, members in archives.items():
        label = f"the {group} archive"
        path = _download(url, label, session, bar)
        try:   # what was in it is in place and verified (or it was bad): no second copy is kept
            _extract(path, url, label, members)
        finally:
            _forget(path)


def _extract(path, url, label, entries):
    """Put the registered members of a zip or tar.gz archive in place, each verified; nothing else is written."""
    wanted = {e.how.split(":", 1)[1]: e for e in entries}
    found = set()
    try:
        if entries[0].how.startswith("zip:"):
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                for member, entry in wanted.items():
                    if member in names:
                        _put_member(entry, archive.read(member), url)
                        found.add(member)
        else:
            with tarfile.open(path, mode="r|*") as archive:   # a stream: one pass, one member in memory
                for info in archive:
                    member = info.name.split("/", 1)[1] if "/" in info.name else ""   # below the top folder
                    if member in wanted and member not in found and info.isreg():
                        _put_member(wanted[member], archive.extractfile(info).read(), url)
                        found.add(member)
                        if len(found) == len(wanted):
                            break
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib_error()) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise   # a write failure was already turned into a LessonDataError; this is a read of our own cache
        raise LessonDataError(f"{label} from {_host(url)} is damaged ({type(err).__name__}; the download was "
                              f"deleted): fetch again, or {MIRROR_HINT}") from None
    missing = [m for m in wanted if m not in found]
    required = [m for m in missing if not wanted[m].is_optional]
    if missing and not required:
        print(f"Note: {label} has no {', '.join(Path(m).name for m in missing)} (optional); going on without.")
    if required:
        more = f" and {len(required) - 1} more" if len(required) > 1 else ""
        raise LessonDataError(f"{label} from {_host(url)} has no {required[0]}{more}: it changed upstream; "
                              f"{MIRROR_HINT}")


def zlib_error():
    import zlib

    return zlib.error


def _put_member(entry, raw, url):
    _put(entry, _converted(entry, raw, _host(url)) if entry.convert else raw, _host(url))


# ------------------------------------------------------------------ fetch and check


def fetch(episodes=None, mirror=None):
    """Make sure every file the episodes need is present and valid; return the data folder.

    Files already present and valid are left alone (nothing is written, so a
    complete read-only shared folder works). ``mirror`` (or ``$LESSON_MIRROR``)
    is a local folder to copy from instead of the internet.
    """
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror is not None:
        mirror = Path(mirror).expanduser().resolve()
        if not mirror.is_dir():
            raise LessonDataError(f"the mirror {mirror} is not a folder: check the path given to "
                                  f"--mirror or {MIRROR_ENV}")
    entries = entries_for(episodes)
    sums = _mirror_sums(mirror)
    todo = _todo(entries, mirror, sums)
    folder = data_dir()
    if not todo:
        _remove_replaced_sources(entries)
        return folder
    folders = [folder]
    _writable_or_explain(folder, "data folder", f"set {DATA_DIR_ENV} to a folder you can write to")
    if any(e.path.startswith("keras/") for e in todo):
        _writable_or_explain(keras_cache_dir(), "Keras cache", "set KERAS_HOME to a folder you can write to")
        folders.append(keras_cache_dir())
    # One fetch at a time per folder: two notebooks opened together wait for each other
    # (the Keras cache may be shared by several copies of the lesson, so it has its own lock).
    with _locked(folders):
        for each in folders:
            clear_partial_files(each)
        todo = _todo(todo, mirror, sums)   # another fetch may have done some of it meanwhile
        if mirror is not None:
            _copy_from_mirror(todo, mirror)
        elif todo:
            _fetch_online(todo)
        _remove_replaced_sources(entries)
    return folder


def _remove_replaced_sources(entries):
    """Delete an older version's copy of a file the helpers now store converted (bo_13.jpg, a WebP, once
    its PNG is in place): only when its bytes are exactly the known source, so nothing else is ever deleted."""
    for entry in entries:
        source = entry.mirror_source
        if not (source and source.startswith("data/") and entry.source_digest.startswith("sha256:")):
            continue
        old = data_dir().joinpath(*source.split("/")[1:])
        with contextlib.suppress(OSError):
            if old.is_file() and old != entry.target and state_of(entry) == "ok" \
                    and sha256_of(old) == entry.source_digest.removeprefix("sha256:"):
                old.unlink()


def _todo(entries, mirror=None, sums=None):
    todo = []
    for entry in entries:
        state = state_of(entry)
        if state == "folder":
            raise LessonDataError(_folder_in_the_way(entry.target))
        if state not in GOOD_STATES or _differs_from_mirror(entry, mirror, sums or {}):
            todo.append(entry)
    return todo


def _mirror_sums(mirror):
    """The mirror's SHA256SUMS as {path: sha256} ({} without a mirror or without that file)."""
    if mirror is None or not (mirror / "SHA256SUMS").is_file():
        return {}
    return read_sha256sums(mirror / "SHA256SUMS")


def _differs_from_mirror(entry, mirror, sums):
    """Weights the registry has no hash for, whose copy here is not the one the mirror's SHA256SUMS names.

    Such a copy was only checked by its layout (put there by Keras, by hand, or by an older version of
    the helpers, and then trusted on first sight), so a same-size copy damaged inside a kernel passes:
    the mirror's copy, verified by its sha256, replaces it. Real weights are never replaced by the
    mirror's offline stand-ins.
    """
    if mirror is None or not entry.is_weights or entry.digest:
        return False
    expected = sums.get(entry.path)
    if not expected or expected in STAND_IN_WEIGHTS_SHA256 or not (mirror / entry.path).is_file():
        return False
    try:
        return sha256_of(entry.target) != expected
    except OSError:
        return False


@contextlib.contextmanager
def _locked(folders):
    """Hold a file lock in each folder (always in the same order), with a clear message on timeout."""
    with contextlib.ExitStack() as stack:
        for folder in folders:
            lock_path = Path(folder) / ".fetch.lock"
            _replace_unusable_lock(lock_path)
            try:
                stack.enter_context(filelock.FileLock(lock_path, timeout=LOCK_TIMEOUT_S, mode=0o666))
            except filelock.Timeout as err:
                raise LessonDataError(
                    f"another fetch (another notebook or terminal) has held {err.lock_file} for "
                    f"{LOCK_TIMEOUT_S} s: wait for it to finish, or stop it and run this again") from None
            except IsADirectoryError:
                raise LessonDataError(_folder_in_the_way(lock_path)) from None
            except PermissionError:
                raise LessonDataError(f"cannot use the lock file {lock_path} (permission denied): delete it "
                                      "(no fetch is running), or ask its owner to") from None
        yield


def _replace_unusable_lock(lock_path):
    """A lock file left read-only (copied, or by another tool) cannot be locked: replace it.

    No running fetch holds such a file (a lock is opened for writing), so this is safe.
    """
    try:
        info = lock_path.lstat()
    except OSError:
        return
    if stat.S_ISREG(info.st_mode) and not os.access(lock_path, os.W_OK) and os.access(lock_path.parent, os.W_OK):
        with contextlib.suppress(OSError):
            lock_path.unlink()


def check(episodes=None):
    """Return a list of (entry, state) for the given episodes' files."""
    return [(entry, state_of(entry)) for entry in entries_for(episodes)]


def fix_for(entry, state):
    episode_hint = "python -m lesson_helpers fetch"
    if state == "missing":
        return f"run `{episode_hint}` (add --mirror DIR when offline)"
    if state == "corrupt":
        return f"delete {entry.target} and run `{episode_hint}`"
    if state == "folder":
        return f"a folder is where this file belongs: move or delete it, then run `{episode_hint}`"
    if state == "absent":
        return "optional, fetched online only"
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
    ready = sum(state in GOOD_STATES for _, state in states)
    print(f"Episode {episode}: {ready} files ready; data in {folder}.{note}")
    return folder


def clear_partial_files(folder):
    """Remove temporary files left by an interrupted write (they are never trusted anyway)."""
    for tmp in Path(folder).rglob(".*.partial"):
        with contextlib.suppress(OSError):
            tmp.unlink()


# ------------------------------------------------------------------ maintainers: the real weights' sha256


def hash_weights(write=False, out=print):
    """Download the real MobileNetV2 weights, verify their layout, and compare (or write) their sha256.

    Returns 0 when the registry holds every file's current hash (after writing, with ``write``).
    """
    entries = [e for e in registry() if e.is_weights]
    found = {}
    with _session() as session:
        for entry in entries:
            with _progress(Path(entry.path).name) as bar:
                path = _download(entry.url, entry.path, session, bar)
            content = path.read_bytes()
            _forget(path)
            problem = _weights_problem(entry, content)
            if problem:
                raise LessonDataError(f"{entry.path} from {_host(entry.url)} {problem}: the source changed; "
                                      "do not record it")
            found[entry.path] = "sha256:" + hashlib.sha256(content).hexdigest()
    status = 0
    for entry in entries:
        if entry.digest == found[entry.path]:
            out(f"same     {entry.path} {found[entry.path]}")
        else:
            out(f"{'written' if write else 'differs':8} {entry.path} {found[entry.path]} "
                f"(registry: {entry.digest or 'none'})")
            status = 0 if write else 1
    if write:
        _rewrite_registry(found)
    elif status:
        out("run `python -m lesson_helpers hash-weights --write` and commit lesson_helpers/registry.csv")
    return status


def _rewrite_registry(digests):
    path = registry_file()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    for row in rows:
        row["digest"] = digests.get(row["path"], row["digest"])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(buffer.getvalue())
    shutil.move(tmp, path)
