"""Load learners' own images safely, and check a folder before training on it.

The episodes show the plain Keras calls (``keras.utils.load_img`` and
``img_to_array``). For your *own* photos use :func:`load_image` instead: it does
the same job and also

- reads the file by its content, not its name (a WebP saved as ``.jpg`` works);
- turns the photo the right way up (phones store the rotation in EXIF);
- puts transparent images (PNG with alpha) on a white background;
- converts grayscale, CMYK and 16-bit images to ordinary 8-bit RGB;
- shrinks very large photos while decoding, so a 48-megapixel picture does not
  fill the memory;
- explains in one sentence what to do when the file cannot be used (missing,
  not an image, cut off, far too large) by raising :class:`LessonImageError`.

:func:`check_image_folder` looks at a folder before
``keras.utils.image_dataset_from_directory`` reads it, and names the files
that would stop (or silently change) the training.

Only Pillow and NumPy are used here: no TensorFlow, so errors stay short.
"""

import difflib
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# A safety limit against files that would fill the memory when decoded. Larger
# than any phone camera's normal mode (a 50 MP photo is 8160x6120).
MAX_PIXELS = 150_000_000
# Warn when an image is enlarged more than this many times to reach `size`.
MAX_UPSCALE = 4
# Formats tf.image.decode_image (used by image_dataset_from_directory) can read.
TF_FORMATS = {"JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP"}
# File name endings image_dataset_from_directory uses; it skips all other files.
KERAS_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
WHITE = (255, 255, 255)


class LessonImageError(ValueError):
    """An image (or image folder) that cannot be used, with one sentence saying what to do."""


class LessonImageWarning(UserWarning):
    """An image that can be used, but maybe not as the learner expects."""


def load_image(path, size=(224, 224), keep_aspect_ratio=False):
    """Read an image file as a float32 array of shape (height, width, 3), values 0..255.

    The robust version of ``img_to_array(load_img(path, target_size=size))``,
    ready for a model's ``preprocess_input``. ``size`` is (height, width) like
    Keras's ``target_size``, or None to keep the image's own size. The image is
    stretched to ``size`` as Keras does, or, with ``keep_aspect_ratio=True``,
    cropped to the centre first so that nothing is distorted.
    """
    return np.asarray(open_image(path, size, keep_aspect_ratio), dtype=np.float32)


def open_image(path, size=None, keep_aspect_ratio=False):
    """Read an image file as an upright 8-bit RGB ``PIL.Image`` (e.g. for ``plt.imshow``).

    Same checks and conversions as :func:`load_image`, which builds on it.
    """
    size = _checked_size(size)
    path = _existing_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except UnidentifiedImageError:
        raise LessonImageError(_not_an_image(path)) from None
    except Image.DecompressionBombError:
        raise LessonImageError(_too_large(path, None)) from None
    except OSError as err:
        raise LessonImageError(f"{path} cannot be read ({err.strerror or err}): "
                               "check that you may open it, or copy it to another folder") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise LessonImageError(_too_large(path, image.size))
        if size is not None:
            # JPEG only: decode at 1/2, 1/4 or 1/8 scale, still at least `size`.
            # The EXIF rotation is applied later, so ask for the stored orientation.
            turned = _exif_orientation(image) in (5, 6, 7, 8)
            image.draft(None, (size[0], size[1]) if turned else (size[1], size[0]))
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise LessonImageError(_damaged(path, err)) from None
        try:
            image = ImageOps.exif_transpose(image)  # a new, upright image
        except Exception:  # a damaged EXIF block: show the picture as stored
            image = image.copy()
    try:
        image = _to_rgb(image)
    except ValueError:
        raise LessonImageError(f"{path} uses the colour mode {image.mode}, which this lesson cannot convert: "
                               "save it as an ordinary RGB JPEG or PNG") from None
    if size is not None:
        image = _resized(image, size, keep_aspect_ratio, path)
    return image


def check_image_folder(path, verbose=True):
    """Check a folder for ``keras.utils.image_dataset_from_directory``.

    Returns {class name: number of images}, in Keras's class order. Raises
    :class:`LessonImageError` (one line per problem) when Keras would fail or
    learn something else than intended: no class folders or only one, an
    empty class, files that are not images or are damaged, or images in a
    format TensorFlow cannot read. Warns about files Keras silently skips.
    """
    folder = Path(path)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise LessonImageError(f"{folder} {what}: give the folder that holds one sub-folder per class "
                               f"(looked from {Path.cwd()})")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    top_files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    problems, notes, stray, unreadable, counts = [], [], [], [], {}

    if "__MACOSX" in classes:
        problems.append(f"{folder / '__MACOSX'} was left by unzipping a Mac zip file and Keras would take it "
                        "for a class: delete that folder")
    top_images = [name for name in top_files if name.lower().endswith(KERAS_EXTENSIONS)]
    if not classes:
        hint = (f"it has {len(top_images)} images but no sub-folders" if top_images else "it has no sub-folders")
        raise LessonImageError(f"{folder} is not laid out for image_dataset_from_directory ({hint}): "
                               "put each class's images in a sub-folder named after the class, "
                               f"e.g. {folder / 'cats'} and {folder / 'dogs'}")
    if len(classes) == 1:
        raise LessonImageError(f"{folder} has only one class folder ({classes[0]}): a classifier learns to tell "
                               "classes apart, so make one sub-folder for each class, at least two")
    if top_files:
        notes.append(f"Keras ignores the files directly in {folder} ({_some(top_files)}): "
                       "move each into its class folder, or delete it")

    for name in classes:
        counts[name] = 0
        for root, _, files in sorted(os.walk(folder / name), key=lambda walk: walk[0]):
            for file_name in sorted(files):
                file_path = Path(root, file_name)
                if not file_name.lower().endswith(KERAS_EXTENSIONS):
                    if not file_name.startswith("."):  # .DS_Store and friends are harmless
                        stray.append(str(file_path.relative_to(folder)))
                    continue
                problem = _problem_for_keras(file_path)
                if problem:
                    unreadable.append(f"{file_path.relative_to(folder)} ({problem})")
                else:
                    counts[name] += 1
    if unreadable:
        problems.append(f"{len(unreadable)} file(s) cannot be used as images: {_some(unreadable)}: "
                        "delete them, or replace each with a JPEG or PNG copy")
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        problems.append(f"class folder(s) with no usable image: {', '.join(empty)}: "
                        "add images (.jpg, .jpeg, .png, .gif, .bmp) or remove the folder")

    if stray:
        notes.append(f"image_dataset_from_directory skips {len(stray)} file(s) without an image "
                     f"extension it knows: {_some(stray)}: delete them, or convert wanted pictures to JPEG")
    for note in notes:
        warnings.warn(note, LessonImageWarning, stacklevel=2)
    if problems:
        raise LessonImageError("\n".join(problems))
    if verbose:
        per_class = ", ".join(f"{name}: {n}" for name, n in counts.items())
        print(f"{folder}: {len(counts)} classes, {sum(counts.values())} images ({per_class}); "
              "all readable by Keras.")
    return counts


# ---------------------------------------------------------------- internals


def _checked_size(size):
    if size is None:
        return None
    try:
        height, width = (int(n) for n in size)
    except (TypeError, ValueError):
        raise LessonImageError(f"size={size!r} is not (height, width): write e.g. size=(224, 224)") from None
    if height < 1 or width < 1:
        raise LessonImageError(f"size={size!r} must be positive: write e.g. size=(224, 224)")
    return height, width


def _existing_file(path):
    try:
        text = os.fspath(path)
    except TypeError:
        raise LessonImageError(f"expected the path of an image file (a str or Path), got a "
                               f"{type(path).__name__}: pass the file's path, e.g. 'data/my_dog.jpg'") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if isinstance(text, str) and text.startswith(("http://", "https://")):
        raise LessonImageError(f"{text} is a web address: download the picture first, e.g. "
                               "path = keras.utils.get_file(origin=url), then load that path")
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise LessonImageError(f"{path} is a folder: give the path of one image file in it")
    hint = f"check the name; relative paths start from {Path.cwd()}"
    parent = path.parent if path.parent.is_dir() else None
    if parent is not None:
        close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=1, cutoff=0.6)
        if close:
            hint = f"did you mean {parent / close[0]}?"
    raise LessonImageError(f"there is no file {path}: {hint}")


def _not_an_image(path):
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return f"{path} is empty (0 bytes), probably an unfinished download or copy: get the picture again"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"hevc", b"avif"):
        return (f"{path} is a HEIC/AVIF photo (the iPhone default), which this lesson cannot read: "
                "export it as JPEG, or set the camera to 'Most Compatible'")
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return (f"{path} is a web page or drawing, not a photo (often what you get from saving a link): "
                "open the picture itself in the browser and use 'Save image as'")
    return (f"{path} is not an image file Pillow can read: open it in an image viewer, "
            "and save it as JPEG or PNG")


def _too_large(path, size):
    what = f"is {size[0]}x{size[1]} pixels" if size else "is far too large"
    return (f"{path} {what}, more than this lesson's limit of {MAX_PIXELS // 1_000_000} megapixels "
            "(a guard against running out of memory): save a smaller copy, a few thousand pixels wide")


def _damaged(path, err):
    if _is_truncation(err):
        return (f"{path} is incomplete (the image data stops early, e.g. an interrupted download or copy): "
                "download or copy it again")
    return f"{path} is damaged ({err}): open it in an image viewer, or use another copy"


def _is_truncation(err):
    text = str(err).lower()
    return "truncated" in text or "premature end" in text


def _exif_orientation(image):
    try:
        return image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: keep the image as stored
        return 1


def _to_rgb(image):
    """Any Pillow mode to 8-bit RGB: alpha on white, 16-bit scaled, CMYK converted."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max()) if values.size else 0.0
        if image.mode == "F" and top <= 1.0:
            values = values * 255.0       # 0..1 floats
        elif top > 255:
            values = values / 257.0       # 16-bit: 65535 -> 255
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _resized(image, size, keep_aspect_ratio, path):
    height, width = size
    if width > MAX_UPSCALE * image.width or height > MAX_UPSCALE * image.height:
        warnings.warn(f"{path} is only {image.width}x{image.height} pixels; enlarged to {width}x{height} it "
                      "is blurry, so predictions may be poor: use a larger picture if you can",
                      LessonImageWarning, stacklevel=3)
    box = None
    if keep_aspect_ratio:  # the largest centred box with the target's proportions
        scale = min(image.width / width, image.height / height)
        crop_w, crop_h = width * scale, height * scale
        left, top = (image.width - crop_w) / 2, (image.height - crop_h) / 2
        box = (left, top, left + crop_w, top + crop_h)
    return image.resize((width, height), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)


def _problem_for_keras(path):
    """Why TensorFlow could not decode this file (a few words), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format not in TF_FORMATS:
                    return f"a {image.format} file, which TensorFlow cannot read"
                image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
    except UnidentifiedImageError:
        return "not an image"
    except Image.DecompressionBombError:
        return "far too large"
    except (OSError, SyntaxError, ValueError) as err:
        return "incomplete: the data stops early" if _is_truncation(err) else f"damaged: {err}"
    return None


def _some(names, limit=5):
    names = [str(n) for n in names]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more

