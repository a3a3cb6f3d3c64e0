"""Fuzz: damaged image files give the right pixels or a LessonImageError, never anything else.

Small valid files of every format load_image accepts are generated here, then
damaged at random (bit flips, byte changes, truncation, spans deleted, repeated,
inserted or zeroed, and for PNG whole chunks dropped, repeated, swapped or given
a bad checksum). Each damaged file is loaded with and without a target size, in
a worker process with a time limit per case (a hang or a crash fails the test
and names the case). A load must give

- exactly the pixels of the undamaged file, or a LessonImageError, wherever the
  damage can be detected: truncation in every format, and any damage to a PNG
  (every PNG chunk carries a CRC-32);
- otherwise (damage inside JPEG, WebP, GIF, TIFF, BMP or AVIF data, which carry
  no checksum and cannot tell damaged pixels from real ones), exactly what a
  plain, strict decode of the same bytes gives (one Pillow call after another,
  no error caught), or a LessonImageError, and an error whenever that decode fails.

Every LessonImageError must be one line, under 300 characters, and name the file.
check_image_folder must agree with load_image on each damaged file.

Seeded: LESSON_FUZZ_SEED (default 13) and LESSON_FUZZ_CASES (cases per sample
file) reproduce or widen a run; a failure prints the seed, the sample and the case.
By hand: python tests/test_image_fuzz.py PNG --seed 13 --cases 2000
"""

import argparse
import faulthandler
import io
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lesson_helpers import images  # noqa: E402
from lesson_helpers.images import LessonImageError, check_image_folder, load_image, open_image  # noqa: E402

SEED = int(os.environ.get("LESSON_FUZZ_SEED", "13"))
CASES = int(os.environ.get("LESSON_FUZZ_CASES", "200"))   # per sample file; 24 samples
FOLDER_CASES = 40                                         # damaged files per sample in one check_image_folder call
CASE_TIMEOUT_S = 20
SIZE = (12, 16)   # (height, width): smaller than the samples, so JPEG is decoded reduced (draft)
Image.init()
GROUPS = ["JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"] + (["AVIF"] if "AVIF" in images.FORMATS and
                                                          "AVIF" in Image.SAVE else [])


# ------------------------------------------------------------------ sample files


def picture(width=32, height=24, seed=0):
    """A small RGB picture with edges, gradients and some noise (all decoders do real work)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x * 255 // width, y * 255 // height, ((x // 4 + y // 4) % 2) * 200 + 20], axis=-1)
    array = array + rng.integers(-20, 20, array.shape)
    return np.clip(array, 0, 255).astype(np.uint8)


def encoded(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def samples():
    """{label: (format group, bytes)}: several kinds of file per format, all tiny."""
    rgb = Image.fromarray(picture())
    alpha = rgb.copy()
    alpha.putalpha(Image.fromarray((picture(seed=1)[..., 0] // 2 + 100).astype(np.uint8)))
    palette = rgb.quantize(16)
    turned = Image.Exif()
    turned[0x0112] = 6
    sixteen = Image.fromarray(picture(seed=2)[..., 0].astype(np.uint16) * 257 + 3)
    text = __import__("PIL.PngImagePlugin", fromlist=["PngInfo"]).PngInfo()
    text.add_text("Comment", "a dog at the door")
    found = {
        "JPEG": encoded(rgb, "JPEG", quality=90),
        "JPEG-progressive": encoded(rgb, "JPEG", quality=80, progressive=True),
        "JPEG-exif-rotated": encoded(rgb, "JPEG", quality=90, exif=turned),
        "JPEG-grey": encoded(rgb.convert("L"), "JPEG", quality=90),
        "JPEG-cmyk": encoded(rgb.convert("CMYK"), "JPEG", quality=90),
        "PNG": encoded(rgb, "PNG"),
        "PNG-alpha": encoded(alpha, "PNG"),
        "PNG-palette-transparent": encoded(palette, "PNG", transparency=0),
        "PNG-16bit": encoded(sixteen, "PNG"),
        "PNG-metadata-rotated": encoded(rgb, "PNG", exif=turned, pnginfo=text, dpi=(72, 72), gamma=0.45455),
        "WEBP": encoded(rgb, "WEBP", quality=90),
        "WEBP-lossless-alpha": encoded(alpha, "WEBP", lossless=True),
        "WEBP-exif-rotated": encoded(rgb, "WEBP", quality=90, exif=turned),
        "GIF": encoded(palette, "GIF"),
        "GIF-transparent": encoded(palette, "GIF", transparency=0),
        "TIFF": encoded(rgb, "TIFF"),
        "TIFF-lzw": encoded(rgb, "TIFF", compression="tiff_lzw"),
        "TIFF-deflate-16bit": encoded(sixteen, "TIFF", compression="tiff_adobe_deflate"),
        "TIFF-packbits-alpha": encoded(alpha, "TIFF", compression="packbits"),
        "BMP": encoded(rgb, "BMP"),
        "BMP-palette": encoded(palette, "BMP"),
        "BMP-grey": encoded(rgb.convert("L"), "BMP"),
    }
    if "AVIF" in GROUPS:
        found["AVIF"] = encoded(rgb, "AVIF", quality=90, speed=10)
        found["AVIF-alpha"] = encoded(alpha, "AVIF", quality=90, speed=10)
    return {label: (label.split("-")[0], data) for label, data in found.items()}


# ------------------------------------------------------------------ damage


def png_chunks(data):
    chunks, pos = [], 8
    while pos < len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        chunks.append(data[pos:pos + 12 + length])
        pos += 12 + length
    return chunks


def with_crc(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def damaged(data, fmt, rng):
    """(kind of damage, damaged bytes, strict): strict means it must be detected (or harmless)."""
    size = len(data)
    kinds = ["flip", "byte", "truncate", "delete", "repeat", "insert", "zero"]
    if fmt == "PNG":
        kinds += ["drop-chunk", "repeat-chunk", "swap-chunks", "bad-crc", "rewritten-chunk"]
    kind = rng.choice(kinds)
    out = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(size)] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        out[rng.randrange(size)] = rng.choice([0, 255, rng.randrange(256)])
    elif kind == "truncate":
        out = out[:rng.randrange(size)]
        return kind, bytes(out), True
    elif kind in ("delete", "repeat", "insert", "zero"):
        start = rng.randrange(size)
        end = min(size, start + rng.randint(1, 24))
        if kind == "delete":
            del out[start:end]
        elif kind == "repeat":
            out[start:start] = data[start:end]
        elif kind == "insert":
            out[start:start] = bytes(rng.randrange(256) for _ in range(end - start))
        else:
            out[start:end] = bytes(end - start)
    else:   # PNG chunk damage
        chunks = png_chunks(data)
        i = rng.randrange(1, len(chunks) - 1)       # keep IHDR first and IEND last for the interesting cases
        if kind == "drop-chunk":
            del chunks[i]
        elif kind == "repeat-chunk":
            chunks.insert(i, chunks[i])
        elif kind == "swap-chunks":
            chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
        elif kind == "bad-crc":
            chunk = bytearray(chunks[i])
            chunk[-1 - rng.randrange(4)] ^= 1 << rng.randrange(8)
            chunks[i] = bytes(chunk)
            return kind, data[:8] + b"".join(chunks), True
        else:   # content changed and the checksum rewritten to match: cannot be detected by checksum
            chunk = chunks[i]
            body = bytearray(chunk[8:-4])
            if body:
                body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            chunks[i] = with_crc(chunk[4:8], bytes(body))
            return kind, data[:8] + b"".join(chunks), False
        # A whole chunk dropped, repeated or moved keeps every checksum valid: a file
        # without its tRNS or eXIf chunk is a valid PNG with other pixels.
        return kind, data[:8] + b"".join(chunks), False
    return kind, bytes(out), fmt == "PNG"


# ------------------------------------------------------------------ the oracles


def reference(data, size):
    """A plain, strict decode: each Pillow call once, in order, nothing caught (None when it fails)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=images.FORMATS)
            if size is not None and image.format in ("JPEG", "MPO"):
                turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
                image.draft(None, (size[0], size[1]) if turned else (size[1], size[0]))
            image.load()
            image = ImageOps.exif_transpose(image)
            image = images._to_rgb(image)
            if size is not None:
                image = images._resized(image, size, False, "x")
            return np.asarray(image, dtype=np.float32)
    except Exception:  # noqa: BLE001 - the reference only says whether a strict decode succeeds
        return None


def loaded(path, size):
    """load_image's pixels, or the LessonImageError it raised (anything else propagates)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", images.LessonImageWarning)
        try:
            return load_image(path, size=size)
        except LessonImageError as err:
            return err


def message_problem(err, name):
    text = str(err)
    if "\n" in text or len(text) >= 300 or name not in text:
        return f"the message is not one line under 300 characters naming {name}: {text!r}"
    return None


def judge(result, expected, ref, strict, name):
    """None when the result is allowed, else what is wrong."""
    if isinstance(result, LessonImageError):
        return message_problem(result, name)
    if strict:
        if result.shape == expected.shape and np.array_equal(result, expected):
            return None
        return "a damaged file loaded with other pixels than the undamaged file (silent garbage)"
    if ref is None:
        return "loaded although a strict decode of the same bytes fails (half-decoded pixels?)"
    if result.shape == ref.shape and np.array_equal(result, ref):
        return None
    return "loaded with other pixels than a strict decode of the same bytes"


# ------------------------------------------------------------------ the worker (one process per group)


def worker(group, seed, cases, log):
    faulthandler.enable()
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    failures, tally = [], {}
    chosen = {label: data for label, (fmt, data) in samples().items() if fmt == group}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for label, data in chosen.items():
            original = tmp / f"{label}.img"
            original.write_bytes(data)
            print(f"seed={seed} sample={label} undamaged", file=log, flush=True)
            faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True, file=log)
            expected = {size: load_image(original, size=size) for size in (None, SIZE)}
            faulthandler.cancel_dump_traceback_later()
            rng = random.Random(f"{seed}-{label}")
            keep = []
            for case in range(cases):
                kind, bad, strict = damaged(data, group, rng)
                where = f"seed={seed} sample={label} case={case} damage={kind}"
                print(where, file=log, flush=True)
                faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True, file=log)
                path = tmp / f"case_{case}.png"
                path.write_bytes(bad)
                for size in (None, SIZE):
                    try:
                        result = loaded(path, size)
                        ref = None if strict else reference(bad, size)
                        problem = judge(result, expected[size], ref, strict, path.name)
                    except Exception as err:  # noqa: BLE001 - what the test is looking for
                        problem = f"raised {type(err).__name__}: {err}"
                    outcome = "error" if isinstance(result, LessonImageError) else "pixels"
                    tally[outcome] = tally.get(outcome, 0) + 1
                    if problem:
                        failures.append(f"{where} size={size}: {problem}")
                faulthandler.cancel_dump_traceback_later()
                if case < FOLDER_CASES:
                    keep.append(bad)
            print(f"seed={seed} sample={label} check_image_folder", file=log, flush=True)
            faulthandler.dump_traceback_later(CASE_TIMEOUT_S * 5, exit=True, file=log)
            failures += folder_check(tmp / f"folder_{label}", data, keep, f"seed={seed} sample={label}")
            faulthandler.cancel_dump_traceback_later()
    return {"group": group, "samples": list(chosen), "outcomes": tally, "failures": failures}


def folder_check(root, good, damaged_files, where):
    """check_image_folder counts exactly the damaged files load_image reads (in a format TF reads)."""
    (root / "damaged").mkdir(parents=True)
    (root / "good").mkdir()
    (root / "good" / "good.png").write_bytes(good)
    readable = set()
    for i, bad in enumerate(damaged_files):
        path = root / "damaged" / f"{i:03d}.png"
        path.write_bytes(bad)
        if _format_if_readable(path) in images.tensorflow_formats():
            readable.add(path.name)
    good_ok = _format_if_readable(root / "good" / "good.png") in images.tensorflow_formats()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", images.LessonImageWarning)
            counts = check_image_folder(root, verbose=False)
    except LessonImageError as err:
        reported = {Path(name).name for name in getattr(err, "files", {})}
        expected = {f"{i:03d}.png" for i in range(len(damaged_files))} - readable
        if not good_ok:
            expected.add("good.png")
        problems = [message_problem(err, "")] if message_problem(err, "") else []
        if reported != expected:
            problems.append(f"check_image_folder reported {sorted(reported ^ expected)} differently from load_image")
        return [f"{where} check_image_folder: {p}" for p in problems]
    except Exception as err:  # noqa: BLE001
        return [f"{where} check_image_folder raised {type(err).__name__}: {err}"]
    if counts != {"damaged": len(readable), "good": 1}:
        return [f"{where} check_image_folder counted {counts}, load_image reads {len(readable)} damaged files"]
    return []


def _format_if_readable(path):
    """The format of a file load_image reads (None when it raises LessonImageError)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", images.LessonImageWarning)
            open_image(path)
    except LessonImageError:
        return None
    head = path.read_bytes()[:16]
    for signature, fmt in ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
                           (b"II*\0", "TIFF"), (b"MM\0*", "TIFF")):
        if head.startswith(signature):
            return fmt
    return "WEBP" if head[8:12] == b"WEBP" else "AVIF" if head[4:8] == b"ftyp" else "?"


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("group", GROUPS)
def test_damaged_files_give_the_right_pixels_or_one_clear_error(group, tmp_path):
    log = tmp_path / "cases.log"
    run = subprocess.run([sys.executable, __file__, group, "--seed", str(SEED), "--cases", str(CASES),
                          "--log", str(log)], capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        last = log.read_text().splitlines()[-40:] if log.exists() else []
        pytest.fail(f"the worker died (rc={run.returncode}: a hang past {CASE_TIMEOUT_S} s or a crash) at:\n"
                    + "\n".join(last) + "\n" + run.stderr[-3000:])
    report = json.loads(run.stdout.splitlines()[-1])
    assert not report["failures"], (f"{len(report['failures'])} failure(s), reproduce with LESSON_FUZZ_SEED={SEED} "
                                    f"LESSON_FUZZ_CASES={CASES}:\n" + "\n".join(report["failures"][:20]))
    # Not vacuous: the damage was both detected and survived.
    assert report["outcomes"].get("error", 0) > 0 and report["outcomes"].get("pixels", 0) > 0, report


def test_the_samples_are_what_they_claim():
    """Each sample is read by Pillow as its format, and lossless ones load with their exact pixels."""
    found = samples()
    assert {fmt for fmt, _ in found.values()} == set(GROUPS)
    assert set(GROUPS) >= {"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"}
    for label, (fmt, data) in found.items():
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == fmt, label
        pixels = load_image(data, size=None)
        assert pixels.shape == ((32, 24, 3) if "rotated" in label else (24, 32, 3)), label
    assert np.array_equal(load_image(found["PNG"][1], size=None), picture())
    assert np.array_equal(load_image(found["BMP"][1], size=None), picture())
    assert np.array_equal(load_image(found["TIFF-lzw"][1], size=None), picture())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("group", choices=GROUPS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--cases", type=int, default=CASES)
    parser.add_argument("--log", default=os.devnull)
    args = parser.parse_args()
    with open(args.log, "w") as log:
        report = worker(args.group, args.seed, args.cases, log)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
