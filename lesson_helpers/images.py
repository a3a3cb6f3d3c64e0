"""Load learners' own images safely, and check a folder before training on it.

The episodes show the plain Keras calls (``keras.utils.load_img`` and
``img_to_array``). For your *own* photos use :func:`load_image` instead: it does
the same job and also

- reads a file by its content, not its name (a WebP saved as ``.jpg`` works),
  and also takes the bytes of an upload (on Colab: ``files.upload()``);
- turns the photo the right way up (phones store the rotation in EXIF);
- puts transparent images (PNG with alpha) on a white background;
- converts grayscale, CMYK and 16-bit images to ordinary 8-bit RGB;
- shrinks very large JPEG photos while decoding, and refuses images that would
  take more memory than a laptop or Colab can spare;
- never returns damaged pixels: a file is decoded completely, with every
  error reported, or not at all;
- explains in one line what to do when the file cannot be used (missing,
  not an image, cut off, damaged, far too large) by raising :class:`LessonImageError`.

:func:`check_image_folder` looks at a folder before
``keras.utils.image_dataset_from_directory`` reads it, and names the files
that would stop (or silently change) the training.

Only Pillow and NumPy are used here: no TensorFlow, so errors stay short.
"""

import contextlib
import difflib
import errno
import functools
import io
import os
import re
import stat
import struct
import threading
import unicodedata
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features

# A safety limit against files that would fill the memory when decoded. Larger
# than any phone camera's normal mode (a 50 MP photo is 8160x6120).
MAX_PIXELS = 150_000_000
# The most memory one load may take, estimated from width x height x channels
# before anything is decoded (the decoded pixels, their conversion to RGB and,
# with size=None, the float32 array returned). A learner's 8 GB laptop also runs
# TensorFlow and a browser; Colab's free machines have 12 GB. A 48 MP photo at
# full size needs about 1.1 GB; at 224x224 a JPEG needs a few MB.
MAX_MEMORY = 1_500_000_000
# Warn when an image is enlarged more than this many times to reach `size`.
MAX_UPSCALE = 4
# The formats load_image reads (what Pillow writes for the web, cameras and
# scanners). Others (PSD, EPS, ICO, ...) are refused with a clear message, so
# that every accepted format can be tested against damaged files.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP") + (("AVIF",) if features.check("avif") else ())
# Formats tf.image.decode_image (used by image_dataset_from_directory) can read, in the
# TensorFlow the lesson is pinned to; see tensorflow_formats() for the one installed here.
TF_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"}
# The oldest TensorFlow known to read WebP there: 2.21 does, 2.19 does not ("Unknown image file
# format. One of JPEG, PNG, GIF, BMP required."); 2.20 is untested, so it is treated as not.
TF_WEBP_SINCE = (2, 21)
# The names TensorFlow is installed under (pip, Apple's old build, nightly builds).
TF_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly")
# File name endings image_dataset_from_directory uses; it skips all other files.
KERAS_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
WHITE = (255, 255, 255)
# How much of a learner's argument a message echoes (a path, a repr).
ECHO_CHARS = 100


class LessonImageError(ValueError):
    """An image (or image folder) that cannot be used, with one line saying what to do.

    ``cause`` holds the few words saying what is wrong (used by check_image_folder's list).
    """

    def __init__(self, message, cause=None):
        super().__init__(message)
        self.cause = cause or message


class LessonImageWarning(UserWarning):
    """An image that can be used, but maybe not as the learner expects."""


def load_image(path, size=(224, 224), keep_aspect_ratio=False):
    """Read an image as a float32 array of shape (height, width, 3), values 0..255.

    The robust version of ``img_to_array(load_img(path, target_size=size))``,
    ready for a model's ``preprocess_input``. ``path`` is a file's path, the
    file's bytes, or an open file (on Colab: ``uploaded = files.upload()``,
    then ``load_image(uploaded["my_dog.jpg"])``). ``size`` is (height, width)
    like Keras's ``target_size``, or None to keep the image's own size. The
    image is stretched to ``size`` as Keras does, or, with
    ``keep_aspect_ratio=True``, cropped to the centre first so that nothing is
    distorted.
    """
    return np.asarray(open_image(path, size, keep_aspect_ratio), dtype=np.float32)


def open_image(path, size=None, keep_aspect_ratio=False):
    """Read an image as an upright 8-bit RGB ``PIL.Image`` (e.g. for ``plt.imshow``).

    Same sources, checks and conversions as :func:`load_image`, which builds on it.
    """
    size = _checked_size(size)
    name, data = _read_source(path)
    image = _decode(name, data, size, output_bytes_per_pixel=0 if size else 15)
    image = _to_rgb(image, name)
    if size is not None:
        image = _resized(image, size, keep_aspect_ratio, name)
    return image


def check_image_folder(path, verbose=True):
    """Check a folder for ``keras.utils.image_dataset_from_directory``.

    Returns {class name: number of images}, in Keras's class order. Raises
    :class:`LessonImageError` (one line; with ``verbose`` every problem is
    printed first) when Keras would fail or learn something else than
    intended: no class folders or only one, an empty class, files that are not
    images, are damaged, are not files at all (a FIFO, a broken link), or are
    in a format TensorFlow cannot read, folders that cannot be opened. Warns
    about files Keras silently skips.
    """
    folder = _existing_folder(path)
    try:
        entries = sorted(folder.iterdir())
        classes = [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]
        top_files = [p.name for p in entries if not p.is_dir() and not p.name.startswith(".")]
    except OSError as err:
        raise _fail(_shown(folder), f"cannot be listed ({_os_cause(err)})",
                    "ask its owner for access, or copy the pictures to a folder of yours") from None
    problems, notes, stray, unusable, counts = [], [], [], {}, {}

    if "__MACOSX" in classes:
        problems.append("__MACOSX (left by unzipping a Mac zip file) would be taken for a class by Keras: "
                        "delete that folder")
    top_images = [name for name in top_files if name.lower().endswith(KERAS_EXTENSIONS)]
    if not classes:
        hint = (f"it has {len(top_images)} images but no sub-folders" if top_images else "it has no sub-folders")
        raise _fail(_shown(folder), f"is not laid out for image_dataset_from_directory ({hint})",
                    "put each class's images in a sub-folder named after the class, e.g. cats/ and dogs/")
    if len(classes) == 1:
        raise _fail(_shown(folder), f"has only one class folder ({_shown(classes[0], 40)})",
                    "a classifier learns to tell classes apart, so make one sub-folder for each class, at least two")
    if top_files:
        notes.append(f"Keras ignores the files directly in {_shown(folder)} ({_some(top_files)}): "
                     "move each into its class folder, or delete it")

    closed = []
    for name in classes:
        counts[name] = 0
        # Keras walks the same way (os.walk, links to folders not followed), and
        # silently skips a folder it cannot open: we name it instead.
        walk = os.walk(folder / name, onerror=lambda err: closed.append(err))
        for root, _, files in sorted(walk, key=lambda step: step[0]):
            for file_name in sorted(files):
                file_path = Path(root, file_name)
                relative = file_path.relative_to(folder)
                if not file_name.lower().endswith(KERAS_EXTENSIONS):
                    if not file_name.startswith("."):  # .DS_Store and friends are harmless
                        stray.append(relative)
                    continue
                cause = _problem_for_keras(file_path, relative)
                if cause:
                    unusable[str(relative)] = cause
                else:
                    counts[name] += 1
    for err in closed:
        where = Path(err.filename).relative_to(folder) if err.filename else "?"
        problems.append(f"the folder {_shown(where, 60)} cannot be opened ({_os_cause(err)}), so Keras would "
                        "silently leave out its images: make it readable, or move its pictures elsewhere")
    if unusable:
        first, cause = next(iter(unusable.items()))
        others = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
        problems.append(f"{len(unusable)} file(s) cannot be used as images, e.g. {_shown(first, 50)} {{cause}}"
                        f"{others}: delete them, or replace each with a JPEG or PNG copy")
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        problems.append(f"class folder(s) with no usable image: {_some(empty)}: "
                        "add images (.jpg, .jpeg, .png, .gif, .bmp) or remove the folder")

    if stray:
        notes.append(f"image_dataset_from_directory skips {len(stray)} file(s) without an image "
                     f"extension it knows: {_some(stray)}: delete them, or convert wanted pictures to JPEG")
    for note in notes:
        warnings.warn(note, LessonImageWarning, stacklevel=2)
    if problems:
        if verbose and (len(problems) > 1 or len(unusable) > 1):
            print(f"Problems in {folder}:")
            for problem in problems:
                if not problem.startswith(f"{len(unusable)} file(s) cannot"):
                    print(f"  {problem}")
            for relative, cause in unusable.items():
                print(f"  {relative} {cause}")
        more = (f" (and {len(problems) - 1} more problem(s){', listed above' if verbose else ''})"
                if len(problems) > 1 else "")
        message = f"{_shown(folder, 50)}: {problems[0]}{more}"
        if "{cause}" in message:   # fit the first file's cause into one line under 300 characters
            room = 299 - len(message) + len("{cause}")
            message = message.replace("{cause}", _shown(next(iter(unusable.values())), max(room, 20), middle=False))
        if len(message) >= 300:   # a last resort: every learner-facing error is one line under 300 characters
            message = message[:296] + "..."
        error = LessonImageError(message)
        error.files = unusable
        error.problems = [p.replace("{cause}", next(iter(unusable.values()), "")) for p in problems]
        raise error
    if verbose:
        per_class = ", ".join(f"{name}: {n}" for name, n in counts.items())
        print(f"{folder}: {len(counts)} classes, {sum(counts.values())} images ({per_class}); "
              "all readable by Keras.")
    return counts


# ---------------------------------------------------------------- reading the source


def _fail(name, cause, fix):
    """The one-line error every problem becomes: what, why, and what to do (under 300 characters)."""
    room = 299 - len(cause) - len(fix) - 3
    if len(name) > room:
        name = _shown(name, max(room, 30))
    if len(name) + len(cause) + len(fix) + 3 > 299:
        cause = _shown(cause, max(299 - len(name) - len(fix) - 3, 30))
    return LessonImageError(f"{name} {cause}: {fix}", cause=cause)


def _shown(value, limit=ECHO_CHARS, middle=True):
    """A learner's argument as a message may echo it: one line, at most `limit` characters.

    Cut in the middle (paths keep their file name), or at the end with middle=False.
    """
    text = " ".join(str(value).split()) if isinstance(value, str) and "\n" in value else str(value)
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    if len(text) <= limit:
        return text
    keep = limit - 3
    if not middle:
        return f"{text[:keep]}..."
    return f"{text[:keep // 2]}...{text[-(keep - keep // 2):]}"


def _checked_size(size):
    if size is None:
        return None
    try:
        height, width = (int(n) for n in size)
    except (TypeError, ValueError):
        raise _fail(f"size={_shown(repr(size), 40)}", "is not (height, width)",
                    "write e.g. size=(224, 224)") from None
    if height < 1 or width < 1:
        raise _fail(f"size={_shown(repr(size), 40)}", "must be positive", "write e.g. size=(224, 224)")
    return height, width


def _read_source(source):
    """(name for messages, the file's bytes) from a path, bytes, an open file or Colab's upload dict."""
    if isinstance(source, dict):
        return _from_upload_dict(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not _is_path_bytes(data):
            return _from_memory(f"the image bytes given ({len(data):,} bytes)", data)
    if hasattr(source, "read") and not isinstance(source, (str, bytes, os.PathLike)):
        return _from_file_object(source)
    try:
        text = os.fspath(source)
    except TypeError:
        raise _fail(f"expected the path of an image file (a str or Path), its bytes or an open file, got a "
                    f"{_shown(type(source).__name__, 40)}", "instead",
                    "pass the file's path, e.g. 'data/my_dog.jpg'") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.startswith(("http://", "https://")):
        raise _fail(_shown(text), "is a web address",
                    "download the picture first, e.g. path = keras.utils.get_file(origin=url), then load that path")
    path = _expanded(text)
    return _shown(path), _read_file(path)


def _is_path_bytes(data):
    """Bytes naming an existing file (as os.fsencode gives), not an image's content."""
    if len(data) > 4096 or b"\0" in data:
        return False
    try:
        return os.path.lexists(os.fsdecode(data))
    except (ValueError, OSError):
        return False


def _from_upload_dict(uploaded):
    names = ", ".join(_shown(key, 40) for key in list(uploaded)[:3]) + (", ..." if len(uploaded) > 3 else "")
    if len(uploaded) == 1:
        (key, value), = uploaded.items()
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _from_memory(f"{_shown(key, 60)} (uploaded)", bytes(value))
    example = _shown(repr(next(iter(uploaded))), 40) if uploaded else "'my_dog.jpg'"
    raise _fail(f"expected one picture, got a dict of {len(uploaded)} entries ({names or 'empty'})",
                "(what google.colab.files.upload() returns)",
                f"pass one picture's bytes, e.g. load_image(uploaded[{example}])")


def _from_file_object(handle):
    name = getattr(handle, "name", None)
    name = _shown(name) if isinstance(name, (str, os.PathLike)) else f"the {type(handle).__name__} given"
    try:
        data = handle.read(MAX_MEMORY + 1)
    except OSError as err:
        raise _fail(name, f"cannot be read ({_os_cause(err)})", "open the file again, or pass its path") from None
    if isinstance(data, str):
        raise _fail(name, "was opened as text", "open it in binary mode, open(path, 'rb'), or pass its path")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _fail(name, f"gave a {type(data).__name__} when read, not bytes", "pass the file's path instead")
    return _from_memory(name, bytes(data))


def _from_memory(name, data):
    if len(data) > MAX_MEMORY:
        raise _fail(name, f"holds more than {MAX_MEMORY / 1e9:.1f} GB, this lesson's memory limit for one image",
                    "save a smaller copy, a few thousand pixels wide")
    return name, data


def _expanded(text):
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~someone" who does not exist
        return Path(text)


def _read_file(path):
    """The bytes of a regular file: never opens a FIFO or device, explains every OSError."""
    path, info = _stat(path)
    name = _shown(path)
    if stat.S_ISDIR(info.st_mode):
        raise _fail(name, "is a folder", "give the path of one image file in it")
    _require_regular(name, info.st_mode)
    if info.st_size > MAX_MEMORY:
        raise _fail(name, f"is {info.st_size / 1e9:.1f} GB, more than this lesson's memory limit of "
                    f"{MAX_MEMORY / 1e9:.1f} GB for one image", "save a smaller copy, a few thousand pixels wide")
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise _unreachable(path, err) from None
    with os.fdopen(fd, "rb") as handle:
        _require_regular(name, os.fstat(fd).st_mode)   # replaced since the stat: still never read a FIFO
        try:
            return handle.read(MAX_MEMORY + 1)
        except OSError as err:
            raise _fail(name, f"cannot be read ({_os_cause(err)})",
                        "copy it to a local folder, or download it again") from None


def _require_regular(name, mode):
    if stat.S_ISREG(mode):
        return
    kind = ("a named pipe (FIFO), and reading it would wait forever" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
    raise _fail(name, f"is not an image file but {kind}", "give the path of the picture file itself")


def _stat(path):
    """(path, os.stat result); a name in another Unicode normal form (NFD from a Mac zip) is found too."""
    try:
        return path, os.stat(path)
    except (OSError, ValueError) as err:
        first = err
    if isinstance(first, OSError) and first.errno in (errno.ENOENT, errno.ENOTDIR):
        other = _other_unicode_form(path)
        if other is not None:
            try:
                return other, os.stat(other)
            except OSError as err:
                raise _unreachable(other, err) from None
    raise _unreachable(path, first) from None


def _other_unicode_form(path):
    """The existing path whose names equal `path`'s up to Unicode normalisation, or None."""
    current = Path(path.anchor) if path.is_absolute() else Path(".")
    parts = path.parts[1:] if path.is_absolute() else path.parts
    changed = False
    for part in parts:
        candidate = current / part
        if not os.path.lexists(candidate):
            try:
                names = os.listdir(current)
            except OSError:
                return None
            key = unicodedata.normalize("NFC", part)
            same = [n for n in names if unicodedata.normalize("NFC", n) == key]
            if len(same) != 1:
                return None
            candidate, changed = current / same[0], True
        current = candidate
    return current if changed else None


def _unreachable(path, err):
    """One line for an OSError met while finding or opening `path`."""
    name = _shown(path)
    if isinstance(err, ValueError):  # an embedded NUL character
        return _fail(name, "is not a file name (it contains a NUL character)",
                     "pass the file's path as text, e.g. 'data/my_dog.jpg', or its bytes")
    code = err.errno
    if code == errno.ENOENT and os.path.islink(path):
        target = _shown(os.readlink(path))
        return _fail(name, f"is a link to {target}, which does not exist",
                     "point the link at the picture, or copy the picture itself here")
    if code == errno.ELOOP:
        return _fail(name, "is a symbolic link that leads back to itself (a loop)",
                     "replace the link with the picture file itself")
    if code == errno.ENAMETOOLONG:
        return _fail(name, "is too long a name for the file system (a name may have at most 255 bytes)",
                     "check the path, or rename the file shorter")
    if code in (errno.EACCES, errno.EPERM):
        closed = next((p for p in reversed(path.parents) if p.is_dir() and not os.access(p, os.X_OK)), None)
        where = f"you may not open the folder {_shown(closed)}" if closed else "you may not read it"
        return _fail(name, f"cannot be reached ({where})",
                     "ask its owner for access, or copy the picture to a folder of yours")
    if code == errno.ENOTDIR:
        return _fail(name, "cannot exist: a part of the path is a file, not a folder", "check the path")
    if code == errno.ENOENT:
        return LessonImageError(f"there is no file {name}: {_missing_hint(path)}", cause="does not exist")
    return _fail(name, f"cannot be read ({_os_cause(err)})", "check that you may open it, or copy it to another folder")


def _missing_hint(path):
    hint = f"check the name; relative paths start from {_shown(Path.cwd())}"
    parent = path.parent
    with contextlib.suppress(OSError):
        if parent.is_dir():
            close = difflib.get_close_matches(path.name, os.listdir(parent), n=1, cutoff=0.6)
            if close:
                hint = f"did you mean {_shown(parent / close[0])}?"
    return hint


def _os_cause(err):
    return _shown(err.strerror or type(err).__name__, 60).lower()


def _existing_folder(path):
    try:
        text = os.fspath(path)
    except TypeError:
        raise _fail(f"expected a folder's path, got a {_shown(type(path).__name__, 40)}", "instead",
                    "pass e.g. 'data/bo/train'") from None
    folder = _expanded(os.fsdecode(text))
    try:
        folder, info = _stat(folder)
    except LessonImageError as err:
        if str(err).startswith("there is no file"):
            raise _fail(_shown(folder), "does not exist",
                        "give the folder that holds one sub-folder per class "
                        f"(relative paths start from {_shown(Path.cwd(), 60)})") from None
        raise
    if not stat.S_ISDIR(info.st_mode):
        raise _fail(_shown(folder), "is a file, not a folder", "give the folder that holds one sub-folder per class")
    return folder


# ---------------------------------------------------------------- decoding


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Ancillary PNG chunks that cannot change the pixels this module returns: a damaged
# one (bad checksum) is dropped with a warning, as libpng (browsers, TensorFlow) does.
# A damaged tRNS (transparency), eXIf or text chunk (which may hold the EXIF
# rotation) or animation chunk could change them: those are errors, like any
# damaged critical chunk (IHDR, PLTE, IDAT, IEND).
PNG_METADATA = {b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"cICP": 4, b"cLLI": 8, b"mDCV": 24, b"pHYs": 9,
                b"tIME": 7, b"iCCP": None, b"sBIT": None, b"bKGD": None, b"hIST": None, b"sPLT": None}
PNG_CHUNKS = {b"IHDR": "header", b"PLTE": "palette", b"IDAT": "pixel data", b"IEND": "end marker",
              b"tRNS": "transparency", b"eXIf": "EXIF data", b"tEXt": "text", b"zTXt": "text", b"iTXt": "text",
              b"acTL": "animation", b"fcTL": "animation", b"fdAT": "animation"}
# Chunk types that must not hide inside a damaged chunk's claimed length.
PNG_VITAL = tuple(PNG_CHUNKS)
_STRICT = threading.Lock()


def _decode(name, data, size, output_bytes_per_pixel):
    """The upright, fully decoded image in `data`, or LessonImageError: nothing in between.

    Every Pillow call runs once, in order, on a fresh image; the first exception of
    any kind ends the load with an error (a swallowed one can leave Pillow in a
    state where a later load "succeeds" with half-decoded pixels).
    """
    if data.startswith(PNG_SIGNATURE):
        data = _checked_png(name, data)
    with _strict_pillow() as caught:
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError:
            raise _not_an_image(name, data) from None
        except Image.DecompressionBombError:
            raise _too_many_pixels(name, None) from None
        except MemoryError:
            raise _out_of_memory(name) from None
        except Exception as err:  # noqa: BLE001 - any failure to parse the header: the file is damaged
            raise _damaged(name, err) from None
        try:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise _too_many_pixels(name, image.size)
            if size is not None and image.format in ("JPEG", "MPO"):
                # Decode at 1/2, 1/4 or 1/8 scale, still at least `size`, in the
                # stored orientation (the EXIF rotation is applied afterwards).
                turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                image.draft(None, (size[0], size[1]) if turned else (size[1], size[0]))
            _check_memory(name, image, output_bytes_per_pixel)
            image.getexif()   # read (and check) the rotation note once; for PNG this decodes
            image.load()
            if image.info.get("exif"):   # Pillow quietly ignores an EXIF block it cannot parse: parse it again
                Image.Exif().load(image.info["exif"])
            _check_warnings(name, caught)
            ImageOps.exif_transpose(image, in_place=True)
            _check_warnings(name, caught)
        except LessonImageError:
            raise
        except MemoryError:
            raise _out_of_memory(name) from None
        except SyntaxError as err:
            if "exif" in image.info and "tiff" in str(err).lower():
                raise _damaged_exif(name) from None
            raise _damaged(name, err) from None
        except Exception as err:  # noqa: BLE001 - any failure while decoding: damaged, never half-decoded
            raise _damaged(name, err) from None
        return image


@contextlib.contextmanager
def _strict_pillow():
    """Pillow's truncated-image check on (other code may have switched it off), its warnings recorded."""
    with _STRICT, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        before, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            yield caught
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before


def _check_warnings(name, caught):
    """A damaged EXIF block may have lost the rotation note: an error, not a sideways picture."""
    for warning in caught:
        if "exif" in str(warning.message).lower():
            raise _damaged_exif(name)


def _damaged_exif(name):
    return _fail(name, "has a damaged EXIF block (the note saying which way up the picture is)",
                 "open it in an image viewer and save a copy, or use another copy")


def _check_memory(name, image, output_bytes_per_pixel):
    """Refuse, before decoding, a load that would take more than MAX_MEMORY."""
    width, height = image.size
    mode = image.mode
    stored = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4   # Pillow's bytes per pixel
    # Bytes per pixel of the copies made on the way to RGB (see _to_rgb): none for RGB,
    # the alpha composition, the 16- and 32-bit scaling, or one conversion.
    converted = (0 if mode == "RGB" else 9 if "A" in mode or "transparency" in image.info else
                 10 if mode.startswith("I;16") else 14 if mode in ("I", "F") else 4)
    # The stored pixels twice: turning a photo upright (EXIF) makes a turned copy.
    needed = width * height * (2 * stored + converted + output_bytes_per_pixel)
    if needed > MAX_MEMORY:
        bands = len(image.getbands())
        raise _fail(name, f"is {width}x{height} pixels with {bands} channel(s): loading it would take about "
                    f"{needed / 1e9:.1f} GB of memory, more than this lesson's limit of {MAX_MEMORY / 1e9:.1f} GB",
                    "save a smaller copy, a few thousand pixels wide")


def _checked_png(name, data):
    """`data` with every chunk's checksum verified; damaged metadata chunks dropped, anything else an error."""
    kept, pos, dropped = [data[:8]], 8, []
    while True:
        if pos + 12 > len(data):
            raise _incomplete(name)
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if not kind.isalpha() or length > 0x7FFFFFFF:
            raise _fail(name, "is damaged (a PNG chunk header is garbled)", "download or copy it again, "
                        "or use another copy")
        end = pos + 12 + length
        if end > len(data):
            raise _incomplete(name)
        body = data[pos + 8:end - 4]
        if pos == 8 and (kind != b"IHDR" or length != 13):
            raise _fail(name, f"is damaged (its PNG header chunk is {length} bytes of {_shown(kind.decode('latin-1'), 10)}, "
                        "not 13 bytes of IHDR)", "download or copy it again, or use another copy")
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack(">I", data[end - 4:end])[0]:
            if not _droppable(kind, body):
                what = PNG_CHUNKS.get(kind, "data")
                raise _fail(name, f"is damaged (a bad checksum in its {_shown(kind.decode('latin-1'), 10)} chunk: {what})",
                            "download or copy it again, or use another copy")
            dropped.append(kind.decode())
        else:
            kept.append(data[pos:end])
        if kind == b"IEND":
            break
        if kind == b"IDAT" and data[8 + 8 + 9] == 3 and not any(chunk[4:8] == b"PLTE" for chunk in kept):
            raise _fail(name, "is damaged (its palette, the PLTE chunk, is missing)",
                        "download or copy it again, or use another copy")
        pos = end
    if not dropped:
        return data
    warnings.warn(f"{name} has damaged metadata ({', '.join(sorted(set(dropped)))} chunk(s), not the pixels), "
                  "which was ignored: save a copy to repair it", LessonImageWarning, stacklevel=5)
    return b"".join(kept)


def _droppable(kind, body):
    """A damaged chunk that surely holds only metadata (its length is plausible, nothing vital inside)."""
    if kind not in PNG_METADATA:
        return False
    expected = PNG_METADATA[kind]
    if expected is not None and len(body) != expected and not (kind == b"bKGD" and len(body) in (1, 2, 6)):
        return False
    return not any(vital in body for vital in PNG_VITAL)


def _not_an_image(name, data):
    head = data[:512]
    if not head:
        return _fail(name, "is empty (0 bytes), probably an unfinished download or copy", "get the picture again")
    brands = _ftyp_brands(head)
    if brands & {b"avif", b"avis"} and "AVIF" in FORMATS:
        return _fail(name, "is an AVIF picture that is damaged or incomplete",
                     "download or copy it again, or export it as JPEG")
    if brands & {b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevx", b"mif1", b"msf1"}:
        return _fail(name, "is a HEIC photo (the iPhone default), which this lesson cannot read",
                     "export it as JPEG, or set the camera to 'Most Compatible'")
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return _fail(name, "is a web page or drawing, not a photo (often what you get from saving a link)",
                     "open the picture itself in the browser and use 'Save image as'")
    other = _other_format(data)
    if other:
        return _fail(name, f"is a {other} file, which this lesson does not read", "save it as JPEG or PNG")
    for signature, kind in ((b"\xff\xd8\xff", "JPEG"), (PNG_SIGNATURE, "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
                            (b"II*\0", "TIFF"), (b"MM\0*", "TIFF")):
        if head.startswith(signature):
            return _fail(name, f"is damaged: it starts like a {kind} file, but its header cannot be read",
                         "download or copy it again, or use another copy")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _fail(name, "is damaged: it starts like a WebP file, but its header cannot be read",
                     "download or copy it again, or use another copy")
    return _fail(name, "is not an image file this lesson can read (JPEG, PNG, WebP, GIF, TIFF, BMP, AVIF)",
                 "open it in an image viewer, and save it as JPEG or PNG")


def _ftyp_brands(head):
    """The brands an ISO media file (HEIC, AVIF) declares in its ftyp box."""
    if head[4:8] != b"ftyp":
        return set()
    size = min(struct.unpack(">I", head[:4])[0], len(head))
    return {head[i:i + 4] for i in range(8, size - 3, 4)} - {b"\0\0\0\0"}


def _other_format(data):
    """The name of a format Pillow knows but this lesson does not read, or None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.format if image.format not in FORMATS else None
        except Exception:  # noqa: BLE001 - only to name the format; the caller raises anyway
            return None


def _too_many_pixels(name, size):
    what = f"is {size[0]}x{size[1]} pixels" if size else "is far too large"
    return _fail(name, f"{what}, more than this lesson's limit of {MAX_PIXELS // 1_000_000} megapixels "
                 "(a guard against running out of memory)", "save a smaller copy, a few thousand pixels wide")


def _out_of_memory(name):
    return _fail(name, "does not fit in the memory left", "close other notebooks, or save a smaller copy")


def _incomplete(name):
    return _fail(name, "is incomplete (the image data stops early, e.g. an interrupted download or copy)",
                 "download or copy it again")


def _damaged(name, err):
    text = str(err) or type(err).__name__
    if isinstance(err, EOFError) or any(word in text.lower() for word in ("truncated", "premature end")):
        return _incomplete(name)
    return _fail(name, f"is damaged ({_shown(' '.join(text.split()), 60)})",
                 "open it in an image viewer, or use another copy")


# ---------------------------------------------------------------- converting


def _to_rgb(image, name="the image"):
    """Any Pillow mode to 8-bit RGB: alpha on white, 16-bit scaled, CMYK converted.

    One rule for every 16-bit image: its high byte (value // 256), as Pillow
    itself does for 16-bit colour PNGs; 32-bit integers must lie in 0..65535 and
    floats in 0..1 (x 255), otherwise the picture is refused rather than guessed.
    """
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if image.mode == "F":
            if not (0.0 <= low and high <= 1.0):  # also NaN
                raise _fail(name, f"holds floating-point values from {low:.3g} to {high:.3g}, not 0..1",
                            "save it as an ordinary 8-bit JPEG or PNG")
            eight = np.rint(values * 255.0)
        else:
            if low < 0 or high > 65535:
                raise _fail(name, f"holds values from {low:.0f} to {high:.0f}, outside the 16-bit range 0..65535",
                            "save it as an ordinary 8-bit JPEG or PNG")
            eight = values >> 8
        image = Image.fromarray(eight.astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA") if image.mode != "RGBA" else image
        flat = Image.new("RGB", rgba.size, WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError:
        raise _fail(name, f"uses the colour mode {image.mode}, which this lesson cannot convert",
                    "save it as an ordinary RGB JPEG or PNG") from None


def _resized(image, size, keep_aspect_ratio, name):
    height, width = size
    if width > MAX_UPSCALE * image.width or height > MAX_UPSCALE * image.height:
        warnings.warn(f"{name} is only {image.width}x{image.height} pixels; enlarged to {width}x{height} it "
                      "is blurry, so predictions may be poor: use a larger picture if you can",
                      LessonImageWarning, stacklevel=4)
    box = None
    if keep_aspect_ratio:  # the largest centred box with the target's proportions
        scale = min(image.width / width, image.height / height)
        crop_w, crop_h = width * scale, height * scale
        left, top = (image.width - crop_w) / 2, (image.height - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
    return image.resize((width, height), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)


# ---------------------------------------------------------------- checking a folder


def _problem_for_keras(path, relative):
    """Why TensorFlow could not use this file (a few words), or None. Never opens a FIFO."""
    try:
        name, data = _shown(relative), _read_file(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LessonImageWarning)
            # JPEG decoded at 1/8 scale: every byte of the data is still read and checked.
            image = _decode(name, data, (1, 1), output_bytes_per_pixel=0)
        fmt = image.format
        _to_rgb(image, name)
    except LessonImageError as err:
        return err.cause
    if fmt not in TF_FORMATS:
        return f"is a {fmt} file, which TensorFlow cannot read"
    if fmt not in tensorflow_formats():
        return (f"is a {fmt} file, which TensorFlow {_shown(tensorflow_version(), 20)} cannot read "
                f"({'.'.join(map(str, TF_WEBP_SINCE))} can)")
    return None


@functools.lru_cache(maxsize=1)
def tensorflow_version():
    """The installed TensorFlow's version (from its package metadata: TensorFlow is not imported), or None."""
    from importlib.metadata import PackageNotFoundError, version

    for distribution in TF_DISTRIBUTIONS:
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return None


def tensorflow_formats():
    """The formats image_dataset_from_directory reads with the TensorFlow installed here (TF_FORMATS
    without WebP before TensorFlow 2.21; all of TF_FORMATS where TensorFlow is absent or unreadable)."""
    found = re.match(r"(\d+)\.(\d+)", tensorflow_version() or "")
    if found and (int(found[1]), int(found[2])) < TF_WEBP_SINCE:
        return TF_FORMATS - {"WEBP"}
    return set(TF_FORMATS)


def _some(names, limit=3):
    names = [_shown(n, 50) for n in names]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
