"""Learners' own images: lesson_helpers.load_image / open_image / check_image_folder.

Every image is generated here with Pillow and NumPy in tmp_path; nothing is
downloaded. Only the tests marked slow import TensorFlow.
"""

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, features

import lesson_helpers
from lesson_helpers import images
from lesson_helpers.images import (MAX_PIXELS, LessonImageError, LessonImageWarning, check_image_folder,
                                   load_image, open_image)

REPO = Path(__file__).resolve().parents[1]
RED, BLUE = (220, 20, 20), (20, 20, 220)


# ------------------------------------------------------------------ fixtures


def halves(size=(80, 60), left=BLUE, right=RED):
    """An RGB image, left half one colour and right half another (easy to check after rotation)."""
    width, height = size
    image = Image.new("RGB", size, right)
    ImageDraw.Draw(image).rectangle((0, 0, width // 2 - 1, height - 1), fill=left)
    return image


def jpeg(path, image=None, **save):
    (image or halves()).save(path, format="JPEG", quality=95, **save)
    return path


def png_header_only(path, width, height):
    """A PNG that declares width x height but holds no pixels: cheap stand-in for a huge file."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


def mean_colour(array, columns):
    return array[:, columns].reshape(-1, 3).mean(axis=0)


def assert_close(colour, expected, tolerance=12):
    assert np.all(np.abs(np.asarray(colour) - np.asarray(expected)) <= tolerance), (colour, expected)


def raised(path, **kwargs):
    with pytest.raises(LessonImageError) as info:
        load_image(path, **kwargs)
    err = info.value
    # One sentence for the learner, no chained traceback from Pillow behind it.
    assert isinstance(err, ValueError)
    assert "\n" not in str(err)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return str(err)


# ------------------------------------------------------------------ the API


def test_exported_from_the_package():
    for name in ("load_image", "open_image", "check_image_folder", "LessonImageError"):
        assert name in lesson_helpers.__all__
        assert getattr(lesson_helpers, name) is getattr(lesson_helpers.images, name)


def test_plain_jpeg_gives_float32_hw3_in_0_255(tmp_path):
    array = load_image(jpeg(tmp_path / "photo.jpg"), size=(224, 224))
    assert array.shape == (224, 224, 3) and array.dtype == np.float32
    assert 0 <= array.min() and array.max() <= 255
    assert_close(mean_colour(array, slice(0, 100)), BLUE)
    assert_close(mean_colour(array, slice(124, 224)), RED)


def test_size_is_height_width_like_keras(tmp_path):
    assert load_image(jpeg(tmp_path / "p.jpg"), size=(100, 50)).shape == (100, 50, 3)
    assert load_image(tmp_path / "p.jpg", size=None).shape == (60, 80, 3)  # its own size


def test_keep_aspect_ratio_crops_the_centre(tmp_path):
    # 3 vertical bands: blue | red | blue. A square centre crop sees mostly red.
    image = Image.new("RGB", (300, 100), BLUE)
    ImageDraw.Draw(image).rectangle((100, 0, 199, 99), fill=RED)
    path = jpeg(tmp_path / "wide.jpg", image)
    cropped = load_image(path, size=(50, 50), keep_aspect_ratio=True)
    stretched = load_image(path, size=(50, 50))
    assert_close(mean_colour(cropped, slice(5, 45)), RED)
    assert_close(mean_colour(stretched, slice(0, 10)), BLUE)


def test_open_image_gives_an_upright_rgb_pil_image(tmp_path):
    image = open_image(jpeg(tmp_path / "p.jpg"))
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (80, 60)


@pytest.mark.parametrize("size", [(224,), "big", (0, 224), (224, -1)])
def test_bad_size_says_how_to_write_it(tmp_path, size):
    assert "size=(224, 224)" in raised(jpeg(tmp_path / "p.jpg"), size=size)


# ------------------------------------------------------------------ cannot be used: one sentence


def test_missing_file_names_the_path_and_suggests_a_close_name(tmp_path):
    jpeg(tmp_path / "happy_dog.jpg")
    message = raised(tmp_path / "happy_dgo.jpg")
    assert message.startswith(f"there is no file {tmp_path / 'happy_dgo.jpg'}")
    assert f"did you mean {tmp_path / 'happy_dog.jpg'}?" in message


def test_missing_file_in_missing_folder_says_where_relative_paths_start(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = raised("my_photos/dog.jpg")
    assert "there is no file my_photos/dog.jpg" in message and str(tmp_path) in message


def test_folder_instead_of_file(tmp_path):
    assert "is a folder: give the path of one image file" in raised(tmp_path)


def test_not_a_path_at_all(tmp_path):
    assert "expected the path of an image file (a str or Path), its bytes or an open file, got a Image" in raised(Image.new("RGB", (4, 4)))


def test_web_address_says_download_first():
    assert "download the picture first" in raised("https://example.org/dog.jpg")


@pytest.mark.parametrize("content, expected", [
    (b"", "is empty (0 bytes)"),
    (b"Shopping list: dog food\n", "is not an image file this lesson can read"),
    (b"<!DOCTYPE html><html><body>Dog</body></html>", "is a web page or drawing"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "is a HEIC photo"),
])
def test_not_an_image(tmp_path, content, expected):
    path = tmp_path / "dog.jpg"
    path.write_bytes(content)
    message = raised(path)
    assert message.startswith(str(path)) and expected in message


def test_truncated_jpeg_says_get_it_again(tmp_path):
    full = jpeg(tmp_path / "full.jpg", halves((400, 300))).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full[: len(full) // 2])
    message = raised(cut)
    assert message == (f"{cut} is incomplete (the image data stops early, e.g. an interrupted download or "
                       "copy): download or copy it again")
    assert "incomplete" in raised(cut, size=None)  # also without the reduced (draft) decoding


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    over_pillow = png_header_only(tmp_path / "bomb.png", 20_000, 20_000)   # Pillow itself refuses this
    over_ours = png_header_only(tmp_path / "panorama.png", 13_000, 12_000)  # 156 MP: we refuse
    assert "is far too large, more than this lesson's limit of 150 megapixels" in raised(over_pillow)
    message = raised(over_ours)
    assert "is 13000x12000 pixels, more than this lesson's limit of 150 megapixels" in message
    assert "save a smaller copy" in message
    assert 13_000 * 12_000 > MAX_PIXELS > 8000 * 6000


# ------------------------------------------------------------------ made to work


def test_webp_named_jpg_is_read_by_content(tmp_path):
    path = tmp_path / "bo_13.jpg"
    halves().save(path, format="WEBP", quality=95)
    assert Image.open(path).format == "WEBP"
    array = load_image(path, size=(60, 80))
    assert_close(mean_colour(array, slice(0, 35)), BLUE)
    assert_close(mean_colour(array, slice(45, 80)), RED)


def test_png_with_alpha_is_put_on_white(tmp_path):
    rgba = Image.new("RGBA", (80, 60), (0, 0, 0, 0))             # transparent black...
    ImageDraw.Draw(rgba).rectangle((40, 0, 79, 59), fill=RED + (255,))  # ...and an opaque red half
    rgba.save(tmp_path / "penguin.png")
    array = load_image(tmp_path / "penguin.png", size=None)
    assert array.shape == (60, 80, 3)
    assert np.all(array[:, :40] == 255)   # transparent -> white, not black
    assert np.all(array[:, 40:] == RED)


def test_palette_png_with_transparency(tmp_path):
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 220, 20, 20] + [0] * 762)
    ImageDraw.Draw(image).rectangle((10, 0, 19, 19), fill=1)
    image.save(tmp_path / "p.png", transparency=0)
    array = load_image(tmp_path / "p.png", size=None)
    assert np.all(array[:, :10] == 255) and np.all(array[:, 10:] == RED)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    Image.fromarray(np.tile(np.arange(0, 250, 5, dtype=np.uint8), (10, 1)), mode="L").save(tmp_path / "g.png")
    array = load_image(tmp_path / "g.png", size=None)
    assert array.shape == (10, 50, 3)
    assert np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2])
    assert array[0, 0, 0] == 0 and array[0, -1, 0] == 245


def test_cmyk_jpeg_colours_survive(tmp_path):
    path = jpeg(tmp_path / "print.jpg", halves().convert("CMYK"))
    assert Image.open(path).mode == "CMYK"
    array = load_image(path, size=None)
    assert_close(mean_colour(array, slice(0, 35)), BLUE, tolerance=20)
    assert_close(mean_colour(array, slice(45, 80)), RED, tolerance=20)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.array([[0, 257 * 64, 257 * 128, 257 * 200, 65535]], dtype=np.uint16)
    Image.fromarray(ramp).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode == "I;16"
    array = load_image(tmp_path / "scan.png", size=None)
    assert array[0, :, 0].tolist() == [0, 64, 128, 200, 255]   # Pillow's convert("RGB") would clip to 255


def test_exif_orientation_6_is_turned_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display", as phones write it
    path = jpeg(tmp_path / "phone.jpg", halves((80, 40), left=BLUE, right=RED).transpose(Image.Transpose.ROTATE_90),
                exif=exif)
    stored = np.asarray(Image.open(path))
    assert stored.shape == (80, 40, 3)     # stored sideways: blue at the bottom
    array = load_image(path, size=None)
    assert array.shape == (40, 80, 3)      # shown upright: wide again
    assert_close(mean_colour(array, slice(0, 35)), BLUE)
    assert_close(mean_colour(array, slice(45, 80)), RED)
    # ... also through the reduced (draft) decoding used with a target size
    small = load_image(path, size=(20, 40))
    assert_close(mean_colour(small, slice(0, 15)), BLUE)


def test_tiny_image_works_with_a_warning(tmp_path):
    path = jpeg(tmp_path / "icon.jpg", halves((8, 6)))
    with pytest.warns(LessonImageWarning, match=r"icon.jpg is only 8x6 pixels; enlarged to 224x224"):
        array = load_image(path)
    assert array.shape == (224, 224, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(path, size=None)                                    # own size: nothing to warn about
        load_image(jpeg(tmp_path / "ok.jpg", halves((100, 100))))      # 2.24x: fine


def test_very_large_photo_is_decoded_reduced_and_memory_safe(tmp_path):
    """An 8000x6000 JPEG (48 MP, 144 MB as RGB) loads at 224x224 using a few MB."""
    path = tmp_path / "camera.jpg"
    halves((8000, 6000)).save(path, quality=60)
    probe = (
        "import json, resource, sys\n"
        "from lesson_helpers.images import load_image\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "array = load_image(sys.argv[1], size=(224, 224))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'grown_mb': (after - before) / 1024, 'shape': array.shape,\n"
        "                  'left': array[:, :100].mean(axis=(0, 1)).tolist(),\n"
        "                  'right': array[:, 124:].mean(axis=(0, 1)).tolist()}))\n")
    run = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["grown_mb"] < 50, f"peak memory grew by {result['grown_mb']:.0f} MB (a full decode: 144 MB)"
    assert result["shape"] == [224, 224, 3]
    assert_close(result["left"], BLUE)
    assert_close(result["right"], RED)


# ------------------------------------------------------------------ check_image_folder


def make_dataset(root, classes=("bo", "not_bo"), per_class=3):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            jpeg(root / name / f"{name}_{i}.jpg", halves((40, 30)))
    return root


def test_good_folder_returns_counts_in_keras_order(tmp_path, capsys):
    root = make_dataset(tmp_path / "train")
    (root / ".ipynb_checkpoints").mkdir()   # hidden: Keras skips it, so do we
    (root / "bo" / ".DS_Store").write_bytes(b"\0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        counts = check_image_folder(root)
    assert counts == {"bo": 3, "not_bo": 3} and list(counts) == ["bo", "not_bo"]
    assert capsys.readouterr().out == f"{root}: 2 classes, 6 images (bo: 3, not_bo: 3); all readable by Keras.\n"


def test_webp_named_jpg_and_nested_folders_count(tmp_path):
    root = make_dataset(tmp_path / "train")
    (root / "bo" / "more").mkdir()
    halves().save(root / "bo" / "more" / "bo_13.jpg", format="WEBP")
    assert check_image_folder(root, verbose=False) == {"bo": 4, "not_bo": 3}


@pytest.mark.parametrize("tensorflow, readable", [("2.19.1", False), ("2.20.0", False), ("2.21.0", True),
                                                   ("2.22.0rc1", True), (None, True)])
def test_webp_named_jpg_is_refused_where_the_installed_tensorflow_cannot_read_it(tmp_path, monkeypatch,
                                                                                 tensorflow, readable):
    """TensorFlow 2.19 (the oldest the lesson supports, a Colab version) fails on a WebP file in
    image_dataset_from_directory: the check must say so there, not count it."""
    monkeypatch.setattr(images, "tensorflow_version", lambda: tensorflow)
    root = make_dataset(tmp_path / "train")
    halves().save(root / "bo" / "bo_13.jpg", format="WEBP")
    if readable:
        assert check_image_folder(root, verbose=False) == {"bo": 4, "not_bo": 3}
        return
    with pytest.raises(LessonImageError) as info:
        check_image_folder(root, verbose=False)
    message = str(info.value)
    assert f"bo/bo_13.jpg is a WEBP file, which TensorFlow {tensorflow} cannot read (2.21 can)" in message, message
    assert "\n" not in message and len(message) < 300 and "replace each with a JPEG or PNG copy" in message


def test_tensorflow_version_is_read_without_importing_tensorflow():
    images.tensorflow_version.cache_clear()
    code = ("import sys; from lesson_helpers import images; v = images.tensorflow_version(); "
            "print(v, 'tensorflow' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(images.__file__).parents[1])
    version, imported = run.stdout.split()
    assert imported == "False" and version.startswith("2."), run.stdout + run.stderr


def test_stray_files_are_named_in_a_warning(tmp_path):
    root = make_dataset(tmp_path / "train")
    (root / "bo" / "notes.txt").write_text("x")
    halves().save(root / "not_bo" / "cat.webp", format="WEBP")
    jpeg(root / "loose.jpg")
    with pytest.warns(LessonImageWarning) as record:
        assert check_image_folder(root, verbose=False) == {"bo": 3, "not_bo": 3}
    messages = [str(w.message) for w in record]
    assert any("skips 2 file(s)" in m and "bo/notes.txt" in m and "not_bo/cat.webp" in m for m in messages)
    assert any(f"Keras ignores the files directly in {root} (loose.jpg)" in m for m in messages)


def test_unreadable_images_are_listed_with_the_fix(tmp_path, capsys):
    root = make_dataset(tmp_path / "train")
    (root / "bo" / "broken.jpg").write_text("not a picture")
    full = jpeg(root / "bo" / "bo_0.jpg").read_bytes()
    (root / "bo" / "cut.jpg").write_bytes(full[: len(full) // 2])
    halves().save(root / "not_bo" / "scan.png", format="TIFF")   # Pillow reads it; TensorFlow cannot
    (root / "not_bo" / "._bo_1.jpg").write_bytes(b"\0\5\26\7Mac OS X")  # macOS resource fork
    with pytest.raises(LessonImageError) as info:
        check_image_folder(root)
    message = str(info.value)
    assert ": 4 file(s) cannot be used as images, e.g. bo/broken.jpg is not an image" in message
    assert message.endswith("(and 3 more): delete them, or replace each with a JPEG or PNG copy")
    assert "\n" not in message and len(message) < 300
    assert info.value.files == {
        "bo/broken.jpg": "is not an image file this lesson can read (JPEG, PNG, WebP, GIF, TIFF, BMP, AVIF)",
        "bo/cut.jpg": "is incomplete (the image data stops early, e.g. an interrupted download or copy)",
        "not_bo/._bo_1.jpg": "is not an image file this lesson can read (JPEG, PNG, WebP, GIF, TIFF, BMP, AVIF)",
        "not_bo/scan.png": "is a TIFF file, which TensorFlow cannot read"}
    printed = capsys.readouterr().out   # every file, one per line, before the one-line error
    for relative, cause in info.value.files.items():
        assert f"  {relative} {cause}\n" in printed


def test_only_one_class(tmp_path):
    root = make_dataset(tmp_path / "train", classes=("bo",))
    with pytest.raises(LessonImageError, match=r"has only one class folder \(bo\): .* at least two"):
        check_image_folder(root)


def test_images_without_class_folders(tmp_path):
    for i in range(3):
        jpeg(tmp_path / f"{i}.jpg")
    with pytest.raises(LessonImageError, match=r"\(it has 3 images but no sub-folders\): put each class"):
        check_image_folder(tmp_path)


def test_empty_class_is_named(tmp_path):
    root = make_dataset(tmp_path / "train", classes=("bo", "not_bo", "maybe_bo"))
    for f in (root / "maybe_bo").iterdir():
        f.unlink()
    (root / "maybe_bo" / "readme.txt").write_text("todo")
    with pytest.raises(LessonImageError, match=r"no usable image: maybe_bo: add images"), \
            pytest.warns(LessonImageWarning, match="maybe_bo/readme.txt"):
        check_image_folder(root)


def test_macosx_folder_from_a_mac_zip(tmp_path):
    root = make_dataset(tmp_path / "train")
    (root / "__MACOSX" / "bo").mkdir(parents=True)
    (root / "__MACOSX" / "bo" / "._bo_0.jpg").write_bytes(b"\0\5\26\7")
    with pytest.raises(LessonImageError, match=r"__MACOSX \(left by unzipping a Mac zip file\) would be taken for a class by Keras: delete that folder"):
        check_image_folder(root)


def test_missing_folder(tmp_path):
    with pytest.raises(LessonImageError, match=r"does not exist: give the folder that holds one sub-folder"):
        check_image_folder(tmp_path / "trian")
    with pytest.raises(LessonImageError, match=r"is a file, not a folder"):
        check_image_folder(jpeg(tmp_path / "p.jpg"))


@pytest.mark.slow
def test_check_agrees_with_keras_image_dataset_from_directory(tmp_path):
    """What the check accepts, Keras reads; what it refuses (a truncated JPEG), Keras fails on."""
    root = make_dataset(tmp_path / "train")
    halves().save(root / "bo" / "bo_13.jpg", format="WEBP")
    code = (
        "import sys, keras\n"
        "ds = keras.utils.image_dataset_from_directory(sys.argv[1], image_size=(32, 32), batch_size=2)\n"
        "print(ds.class_names, sum(int(x.shape[0]) for x, _ in ds))\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def keras_reads(folder):
        return subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env)

    counts = check_image_folder(root, verbose=False)
    run = keras_reads(root)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == f"{list(counts)} {sum(counts.values())}"

    full = (root / "bo" / "bo_0.jpg").read_bytes()
    (root / "bo" / "bo_0.jpg").write_bytes(full[: len(full) // 2])
    with pytest.raises(LessonImageError, match="bo/bo_0.jpg"):
        check_image_folder(root)
    run = keras_reads(root)
    assert run.returncode != 0 and "jpeg" in run.stderr.lower()


# ------------------------------------------------------------------ robustness, round 2 (issue 13)


def flipped(data, position, bit=0):
    damaged = bytearray(data)
    damaged[position] ^= 1 << bit
    return bytes(damaged)


def png_chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def noisy(size=(64, 48), seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def one_line(message, name):
    assert "\n" not in message and len(message) < 300 and name in message, message
    return message


def test_damaged_png_data_never_loads_with_a_size(tmp_path):
    """The issue's case: a flipped bit in a PNG's pixel data loaded as noise through load_image(path, (224, 224))."""
    noisy().save(tmp_path / "dog.png")
    data = (tmp_path / "dog.png").read_bytes()
    start = data.index(b"IDAT") + 4
    end = start + struct.unpack(">I", data[start - 8:start - 4])[0]
    bad = tmp_path / "bad.png"
    for position in range(start, end, (end - start) // 40):
        bad.write_bytes(flipped(data, position, bit=position % 8))
        for size in ((224, 224), None):
            message = raised(bad, size=size)
            assert message.startswith(f"{bad} is damaged (a bad checksum in its IDAT chunk: pixel data)"), message


def test_pillows_load_truncated_images_switch_does_not_let_damage_through(tmp_path, monkeypatch):
    from PIL import ImageFile
    full = jpeg(tmp_path / "full.jpg", noisy((400, 300))).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(full[: len(full) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)    # set by some other code in the notebook
    assert "is incomplete" in raised(tmp_path / "cut.jpg")
    assert "is incomplete" in raised(tmp_path / "cut.jpg", size=None)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True                   # left as it was


def test_a_broken_exif_block_is_an_error_not_a_sideways_picture(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    data = jpeg(tmp_path / "phone.jpg", halves((80, 40)), exif=exif).read_bytes()
    start = data.index(b"Exif\0\0") + 6      # the TIFF header of the EXIF block: "MM\0*" or "II*\0"
    (tmp_path / "broken.jpg").write_bytes(data[:start] + b"XX" + data[start + 2:])
    message = raised(tmp_path / "broken.jpg")
    assert "damaged" in message and "EXIF" in message


# ---- special files and names


def test_symlink_loop(tmp_path):
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    assert raised(tmp_path / "loop.jpg") == (f"{tmp_path / 'loop.jpg'} is a symbolic link that leads back to itself "
                                             "(a loop): replace the link with the picture file itself")


def test_dangling_symlink_names_its_target(tmp_path):
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dog.jpg")
    assert raised(tmp_path / "dog.jpg") == (f"{tmp_path / 'dog.jpg'} is a link to {tmp_path / 'gone.jpg'}, which does "
                                            "not exist: point the link at the picture, or copy the picture itself here")


@pytest.fixture
def deadline():
    """Fail a test that blocks (e.g. reading a FIFO) instead of hanging the test run."""
    import signal

    def expired(*_):
        raise TimeoutError("blocked for 10 s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_never_opened(tmp_path, deadline):
    os.mkfifo(tmp_path / "dog.jpg")
    assert raised(tmp_path / "dog.jpg") == (f"{tmp_path / 'dog.jpg'} is not an image file but a named pipe (FIFO), "
                                            "and reading it would wait forever: give the path of the picture "
                                            "file itself")


def test_name_in_decomposed_unicode_is_found(tmp_path):
    import unicodedata
    nfd = unicodedata.normalize("NFD", "café_photos")
    (tmp_path / nfd).mkdir()
    jpeg(tmp_path / nfd / unicodedata.normalize("NFD", "chien_noël.jpg"))   # as unzipped from a Mac zip file
    typed = tmp_path / "café_photos" / "chien_noël.jpg"                    # as typed (NFC)
    assert not os.path.exists(typed)
    assert load_image(typed, size=None).shape == (60, 80, 3)


def test_name_longer_than_the_file_system_allows(tmp_path):
    long_name = tmp_path / ("dog" * 90 + ".jpg")
    message = raised(long_name)
    one_line(message, "...")
    assert "is too long a name for the file system (a name may have at most 255 bytes)" in message


def test_unreadable_parent_folder(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    jpeg(locked / "dog.jpg")
    if getattr(os, "geteuid", lambda: -1)() == 0:   # root may read everything: make the file system say no, as it does to others
        real_stat, real_access = os.stat, os.access

        def stat(path, *args, **kwargs):
            if str(path).startswith(str(locked) + os.sep):
                raise PermissionError(13, "Permission denied", str(path))
            return real_stat(path, *args, **kwargs)
        monkeypatch.setattr(os, "stat", stat)
        monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(locked) and real_access(path, mode))
    else:
        locked.chmod(0o600)
        monkeypatch.chdir(tmp_path)   # and give it back its permissions afterwards
    try:
        assert raised(locked / "dog.jpg") == (f"{locked / 'dog.jpg'} cannot be reached (you may not open the folder "
                                              f"{locked}): ask its owner for access, or copy the picture to a "
                                              "folder of yours")
    finally:
        locked.chmod(0o755)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_check_image_folder_names_special_files_and_does_not_hang(tmp_path, deadline):
    root = make_dataset(tmp_path / "train")
    os.mkfifo(root / "bo" / "pipe.jpg")
    os.symlink("loop.jpg", root / "bo" / "loop.jpg")
    os.symlink(tmp_path / "gone.jpg", root / "not_bo" / "gone.jpg")
    with pytest.raises(LessonImageError) as info:
        check_image_folder(root, verbose=False)
    assert info.value.files == {
        "bo/loop.jpg": "is a symbolic link that leads back to itself (a loop)",
        "bo/pipe.jpg": "is not an image file but a named pipe (FIFO), and reading it would wait forever",
        "not_bo/gone.jpg": f"is a link to {tmp_path / 'gone.jpg'}, which does not exist"}
    one_line(str(info.value), "bo/loop.jpg")


def test_check_image_folder_names_a_folder_it_cannot_open(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "train")
    (root / "bo" / "more").mkdir()
    jpeg(root / "bo" / "more" / "bo_9.jpg")
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path) == str(root / "bo" / "more"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)
    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(LessonImageError) as info:
        check_image_folder(root, verbose=False)
    assert one_line(str(info.value), "bo/more").endswith(
        "the folder bo/more cannot be opened (permission denied), so Keras would silently leave out its images: "
        "make it readable, or move its pictures elsewhere")


def test_check_image_folder_finds_a_folder_typed_in_composed_unicode(tmp_path):
    import unicodedata
    make_dataset(tmp_path / unicodedata.normalize("NFD", "entraînement"))
    assert check_image_folder(tmp_path / "entraînement", verbose=False) == {"bo": 3, "not_bo": 3}


# ---- other formats


def avif_bytes(image):
    import io
    buffer = io.BytesIO()
    image.save(buffer, format="AVIF", quality=90, speed=10)
    return buffer.getvalue()


needs_avif = pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")


@needs_avif
def test_avif_loads(tmp_path):
    (tmp_path / "dog.avif").write_bytes(avif_bytes(halves()))
    array = load_image(tmp_path / "dog.avif", size=None)
    assert_close(mean_colour(array, slice(0, 35)), BLUE, tolerance=20)


@needs_avif
def test_damaged_avif_is_one_clear_error(tmp_path):
    import io
    data = avif_bytes(noisy())
    path = tmp_path / "dog.avif"
    for position in range(len(data)):   # find a damage that makes Pillow raise a RuntimeError
        bad = data[:position] + b"\0" + data[position + 1:]
        try:
            Image.open(io.BytesIO(bad)).load()
        except RuntimeError:
            break
        except Exception:  # noqa: BLE001 - other damage: look further
            pass
    else:
        pytest.fail("no damage gives a RuntimeError")
    path.write_bytes(bad)
    assert raised(path).startswith(f"{path} is damaged (")


@needs_avif
def test_truncated_avif_is_called_incomplete_not_unreadable(tmp_path):
    data = avif_bytes(noisy())
    path = tmp_path / "dog.avif"
    path.write_bytes(data[: len(data) // 2])
    assert raised(path) == (f"{path} is an AVIF picture that is damaged or incomplete: download or copy it again, "
                            "or export it as JPEG")


def png_with(tmp_path, extra, kind_after=b"IHDR", image=None):
    """A PNG with `extra` (raw chunk bytes) inserted after the chunk `kind_after`."""
    path = tmp_path / "dog.png"
    (image or halves()).save(path)
    data = path.read_bytes()
    at = data.index(kind_after) + 4 + struct.unpack(">I", data[data.index(kind_after) - 4:data.index(kind_after)])[0] + 4
    path.write_bytes(data[:at] + extra + data[at:])
    return path


def test_bad_checksum_in_a_metadata_chunk_loads_the_pixels_with_a_warning(tmp_path):
    good = load_image(png_with(tmp_path, png_chunk(b"gAMA", struct.pack(">I", 45455))), size=None)
    bad_chunk = png_chunk(b"gAMA", struct.pack(">I", 45455))[:-1] + b"\0"     # the checksum's last byte changed
    path = png_with(tmp_path, bad_chunk)
    with pytest.warns(LessonImageWarning, match=r"dog.png has damaged metadata \(gAMA chunk\(s\), not the pixels\)"):
        array = load_image(path, size=None)
    assert np.array_equal(array, good)


def test_bad_checksum_in_the_transparency_chunk_is_a_clear_error(tmp_path):
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 220, 20, 20] + [0] * 762)
    path = tmp_path / "p.png"
    image.save(path, transparency=0)
    data = path.read_bytes()
    at = data.index(b"tRNS")
    path.write_bytes(flipped(data, at + 4))   # the chunk's only byte: "colour 0 is transparent"
    assert raised(path) == (f"{path} is damaged (a bad checksum in its tRNS chunk: transparency): download or copy "
                            "it again, or use another copy")


def test_short_ihdr_is_a_clear_error(tmp_path):
    path = tmp_path / "dog.png"
    halves().save(path)
    data = path.read_bytes()
    body = data[16:16 + 13][:12]
    path.write_bytes(data[:8] + png_chunk(b"IHDR", body) + data[8 + 25:])
    assert raised(path) == (f"{path} is damaged (its PNG header chunk is 12 bytes of IHDR, not 13 bytes of IHDR): "
                            "download or copy it again, or use another copy")


def test_16_bit_images_follow_one_rule(tmp_path):
    """The high byte of every 16-bit value, whatever the largest value in the picture (was: 200 -> 200, 300 -> 1)."""
    for values, expected in (([200, 200], [0, 0]), ([300, 300], [1, 1]), ([0, 65535], [0, 255]),
                             ([257 * 128, 257 * 128 + 255], [128, 129])):
        Image.fromarray(np.array([values], dtype=np.uint16)).save(tmp_path / "scan.png")
        assert load_image(tmp_path / "scan.png", size=None)[0, :, 0].tolist() == expected, values


def test_16_bit_colour_png_follows_the_same_rule(tmp_path):
    """Pillow itself keeps the high byte of 16-bit colour samples: grey ones now get the same treatment."""
    samples = np.array([[[300, 200, 51400], [65535, 0, 257 * 128]]], dtype=">u2")     # 2 pixels, RGB
    raw = b"".join(b"\0" + row.tobytes() for row in samples)
    header = struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0)
    path = tmp_path / "colour16.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
                     + png_chunk(b"IEND", b""))
    assert load_image(path, size=None)[0].tolist() == [[1, 0, 200], [255, 0, 128]]
    grey = np.array([[300, 200, 51400, 65535, 0, 257 * 128]], dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert load_image(tmp_path / "grey16.png", size=None)[0, :, 0].tolist() == [1, 0, 200, 255, 0, 128]


def test_16_bit_big_endian_and_32_bit_integers_follow_the_same_rule(tmp_path):
    ramp = np.array([[0, 300, 51400, 65535]], dtype=">u2")
    Image.frombytes("I;16B", (4, 1), ramp.tobytes()).save(tmp_path / "big.tif")
    assert Image.open(tmp_path / "big.tif").mode == "I;16B"
    assert load_image(tmp_path / "big.tif", size=None)[0, :, 0].tolist() == [0, 1, 200, 255]
    Image.fromarray(np.array([[0, 300, 51400, 65535]], dtype=np.int32)).save(tmp_path / "int.tif")
    assert Image.open(tmp_path / "int.tif").mode == "I"
    assert load_image(tmp_path / "int.tif", size=None)[0, :, 0].tolist() == [0, 1, 200, 255]
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(tmp_path / "wide.tif")
    assert raised(tmp_path / "wide.tif") == (f"{tmp_path / 'wide.tif'} holds values from 0 to 70000, outside the "
                                             "16-bit range 0..65535: save it as an ordinary 8-bit JPEG or PNG")


def test_floating_point_images_must_lie_in_0_to_1(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "f.tif")
    assert load_image(tmp_path / "f.tif", size=None)[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[0.0, 200.0]], dtype=np.float32)).save(tmp_path / "g.tif")
    assert "holds floating-point values from 0 to 200, not 0..1" in raised(tmp_path / "g.tif")


def test_formats_the_lesson_does_not_read_are_named(tmp_path):
    halves().save(tmp_path / "dog.jpg", format="PPM")
    assert raised(tmp_path / "dog.jpg") == (f"{tmp_path / 'dog.jpg'} is a PPM file, which this lesson does not read: "
                                            "save it as JPEG or PNG")


# ---- memory


def big_png(path, width, height, mode_byte=6):
    """A real width x height RGBA PNG (all transparent), streamed: small on disk, huge when decoded."""
    compressor, row = zlib.compressobj(9), bytes(1 + 4 * width)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0,
                                                                          0, 0))
                     + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))
    return path


def test_memory_is_bounded_before_decoding(tmp_path):
    """The issue's 12000x12000 RGBA PNG (under the 150 MP limit) took 3 GB and 12 s; now it is refused at once."""
    path = big_png(tmp_path / "poster.png", 12_000, 12_000)
    assert path.stat().st_size < 2_000_000
    probe = ("import json, resource, sys, time\n"
             "from lesson_helpers.images import load_image, LessonImageError\n"
             "before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()\n"
             "try:\n    load_image(sys.argv[1], size=(224, 224))\nexcept LessonImageError as err:\n    message = str(err)\n"
             "print(json.dumps({'grown_mb': (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024,\n"
             "                  'seconds': time.perf_counter() - start, 'message': message}))\n")
    run = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["message"] == (f"{path} is 12000x12000 pixels with 4 channel(s): loading it would take about 2.4 GB "
                                 "of memory, more than this lesson's limit of 1.5 GB: save a smaller copy, a few "
                                 "thousand pixels wide")
    assert result["grown_mb"] < 50 and result["seconds"] < 5, result


def test_a_large_jpeg_is_still_shrunk_while_decoding(tmp_path):
    """JPEG draft decoding keeps a 100 MP photo (too large at full size) usable at 224x224."""
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (10_000, 10_000), RED).save(path, quality=50)
    assert "more than this lesson's limit of 1.5 GB" in raised(path, size=None)
    assert_close(load_image(path).mean(axis=(0, 1)), RED)


# ---- Colab uploads, bytes and open files


def test_bytes_and_open_files_load_like_the_path(tmp_path):
    import io
    path = jpeg(tmp_path / "dog.jpg")
    expected = load_image(path)
    assert np.array_equal(load_image(path.read_bytes()), expected)
    assert np.array_equal(load_image(io.BytesIO(path.read_bytes())), expected)
    with open(path, "rb") as handle:
        assert np.array_equal(load_image(handle), expected)
    assert np.array_equal(load_image(str(path).encode()), expected)        # a path given as bytes still works


def test_colab_upload_dict(tmp_path):
    data = jpeg(tmp_path / "dog.jpg").read_bytes()
    expected = load_image(data)
    assert np.array_equal(load_image({"dog.jpg": data}), expected)            # load_image(files.upload())
    message = raised({"dog.jpg": data, "cat.jpg": data})
    assert message == ("expected one picture, got a dict of 2 entries (dog.jpg, cat.jpg) (what google.colab.files."
                       "upload() returns): pass one picture's bytes, e.g. load_image(uploaded['dog.jpg'])")
    heic = {"IMG_0001.HEIC": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100)}
    assert raised(heic).startswith("IMG_0001.HEIC (uploaded) is a HEIC photo")


def test_uploaded_bytes_that_are_not_an_image_give_a_short_message():
    """Was: a 24,000-character 'there is no file ...' message with 102 line breaks."""
    upload = b"".join(f"line {i}: not a picture\n".encode() for i in range(1000))
    message = raised(upload)
    assert message == (f"the image bytes given ({len(upload):,} bytes) is not an image file this lesson can read "
                       "(JPEG, PNG, WebP, GIF, TIFF, BMP, AVIF): open it in an image viewer, and save it as JPEG or PNG")


def test_file_opened_as_text(tmp_path):
    path = jpeg(tmp_path / "dog.jpg")
    with open(path, encoding="latin-1") as handle:
        assert raised(handle) == (f"{path} was opened as text: open it in binary mode, open(path, 'rb'), or pass "
                                  "its path")


def test_every_message_is_one_short_line_naming_the_file(tmp_path):
    deep = tmp_path.joinpath(*["a_rather_long_folder_name"] * 8)
    deep.mkdir(parents=True)
    assert len(str(deep)) > 200
    (deep / "empty.jpg").write_bytes(b"")
    (deep / "text.jpg").write_text("hello\n" * 5000)
    full = jpeg(deep / "full.jpg").read_bytes()
    (deep / "cut.jpg").write_bytes(full[:len(full) // 2])
    os.symlink("loop.jpg", deep / "loop.jpg")
    cases = ["empty.jpg", "text.jpg", "cut.jpg", "loop.jpg", "missing.jpg", "x" * 300 + ".jpg"]
    for name in cases:
        message = raised(deep / name)
        one_line(message, name[-20:])
    for size in [("a" * 5000,), {"h": 1}, (224, -1) * 2000]:
        one_line(raised(deep / "full.jpg", size=size), "size=")
    one_line(raised(b"\n" * 30_000), "bytes")
    one_line(raised(list(range(10_000))), "list")
