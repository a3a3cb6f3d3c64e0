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
from PIL import Image, ImageDraw

import lesson_helpers
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
    with pytest.raises(LessonImageError, match=r"__MACOSX was left by unzipping a Mac zip file"):
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
