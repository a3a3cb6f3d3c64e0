"""Rebuild lesson_helpers/registry.csv from an offline mirror's SHA256SUMS.

Maintainers run this when the lesson's data changes:

    python tools/build_registry.py ../shared/offline/SHA256SUMS

Each row says what one file must contain (a digest that no compressor can
change) and where it comes from on the internet, pinned to a commit (GitHub)
or to the canonical archive (cats_and_dogs_filtered). Large groups come from
one archive each, so that a room of learners makes few requests:

- presidential_doggy_door: GitHub's tarball of the pinned commit (codeload);
- cats_and_dogs_filtered: the zip the TensorFlow tutorial uses.

The weights' sha256 already in the registry (written by
`python -m lesson_helpers hash-weights --write` on a machine with internet) are kept.
"""

import csv
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lesson_helpers.data import _decoded_rgb, pixel_digest, read_sha256sums, registry_file  # noqa: E402

DLI_REPO, DLI_COMMIT = "igquinteroch/nvidia-dl-fundamentals", "4a2ba791f00a527cd1df022fe9b880c4d7d4c340"
DLI_RAW = f"https://raw.githubusercontent.com/{DLI_REPO}/{DLI_COMMIT}/"
DLI_TARBALL = f"https://codeload.github.com/{DLI_REPO}/tar.gz/{DLI_COMMIT}"
CATS_DOGS_ZIP = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
KERAS_MOBILENET_V2 = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
IMAGENET_CLASS_INDEX = ("https://storage.googleapis.com/download.tensorflow.org/"
                        "data/imagenet_class_index.json")
GITHUB = "https://raw.githubusercontent.com/"
EXTRA_ANIMALS = {
    "american_black_bear.jpg":
        GITHUB + "google/cameratrapai/6520b8368750604257c87e59284c6c735d95b006/test_data/american_black_bear.jpg",
    "adelie_penguin.png":
        GITHUB + "IBM/MAX-Image-Resolution-Enhancer/8485fabcf16a8877a267eb3f4575da16832ce867/"
                 "samples/test_examples/original/penguin.png",
    # 5d7955a is the commit of an unmerged pull request (on no branch); see data/README.md.
    "sea_turtle.jpg":
        GITHUB + "IBM/MAX-ResNet-50/5d7955ad4448a63c6f3b972db461f3cb86496498/samples/turtle.jpg",
    "cow.jpg":
        GITHUB + "IBM/MAX-Image-Segmenter-Web-App/21b9def7796a37b55b769ee212c0196b8aa1df4a/assets/cow.jpg",
}
# raccoon.png is scipy.datasets.face(): bz2-compressed raw RGB pixels (768 x 1024), saved as PNG.
SCIPY_FACE = GITHUB + "scipy/dataset-face/49ba9e3b8b21a71cdb039b341ce5c08cee4afd74/face.dat"
SCIPY_FACE_SHA256 = "9d8b0b4d081313e2b485748c770472e5a95ed1738146883d84c7030493e82886"
# Files a WebP with a .jpg name upstream: stored as a lossless PNG (older TensorFlow reads no WebP).
TO_PNG = {"data/presidential_doggy_door/train/bo/bo_13.jpg"}
# At the pinned DLI commit, but over the size the offline mirror's sources kept: known by git blob id only.
ONLINE_ONLY = {
    "data/doggy_door_images/brown_bear.jpg": "96ab90680be707e7010307f11c6be5b584c95cda",
    "data/presidential_doggy_door/train/bo/bo_11.jpg": "e656bce713f8d4c89bc2990d78f6e2f73c369690",
}
FIELDS = ["path", "digest", "how", "url", "convert", "source_digest", "optional"]


def row_for(path, sha256, mirror):
    """The registry row of one mirror file."""
    parts = path.split("/")
    row = dict.fromkeys(FIELDS, "")
    row.update(path=path, digest=f"sha256:{sha256}", how="download")
    if parts[0] == "keras":
        is_index = parts[-1] == "imagenet_class_index.json"
        row["url"] = IMAGENET_CLASS_INDEX if is_index else KERAS_MOBILENET_V2 + parts[-1]
        if path.endswith(".h5"):
            row["digest"] = ""   # the mirror holds stand-ins; see `python -m lesson_helpers hash-weights`
        return row
    folder = parts[1]
    if folder == "doggy_door_images":
        row["url"] = DLI_RAW + path      # episode 1 needs 2 or 3 files: plain downloads
    elif folder == "presidential_doggy_door":
        row.update(how=f"tar:{path}", url=DLI_TARBALL)
        if path in TO_PNG:
            pixels = _decoded_rgb((mirror / path).read_bytes())
            row.update(path=str(Path(path).with_suffix(".png")), digest=f"pixels-sha256:{pixel_digest(pixels)}",
                       convert="png", source_digest=f"sha256:{sha256}")
    elif folder == "cats_and_dogs_filtered":
        row.update(how="zip:" + "/".join(parts[1:]), url=CATS_DOGS_ZIP)
    elif folder == "extra_animals" and parts[-1] == "raccoon.png":
        pixels = _decoded_rgb((mirror / path).read_bytes())
        row.update(digest=f"pixels-sha256:{pixel_digest(pixels)}", url=SCIPY_FACE,
                   convert=f"png-from-bz2-rgb:{pixels.shape[0]}x{pixels.shape[1]}",
                   source_digest=f"sha256:{SCIPY_FACE_SHA256}")
    elif folder == "extra_animals":
        row["url"] = EXTRA_ANIMALS[parts[-1]]
    else:
        raise ValueError(f"no known source for {path}")
    return row


def main(sums_path):
    sums_path = Path(sums_path)
    mirror = sums_path.parent
    old = {}
    if registry_file().is_file():
        with open(registry_file(), newline="") as f:
            old = {row["path"]: row for row in csv.DictReader(f)}
    rows = []
    for path, sha256 in read_sha256sums(sums_path).items():
        if path.endswith(".md"):
            continue  # the mirror's own documentation, not lesson data
        row = row_for(path, sha256, mirror)
        if row["path"].endswith(".h5") and old.get(row["path"], {}).get("digest"):
            row["digest"] = old[row["path"]]["digest"]   # recorded from the real files by a maintainer
        rows.append(row)
    for path, blob in ONLINE_ONLY.items():
        row = dict.fromkeys(FIELDS, "")
        tar = path.startswith("data/presidential_doggy_door/")
        row.update(path=path, digest=f"git-blob-sha1:{blob}", how=f"tar:{path}" if tar else "download",
                   url=DLI_TARBALL if tar else DLI_RAW + path, optional="yes")
        rows.append(row)
    with open(registry_file(), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["path"]))
    print(f"wrote {len(rows)} rows to {registry_file()} "
          f"(sha256 of the input: {hashlib.sha256(sums_path.read_bytes()).hexdigest()[:12]})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/offline/SHA256SUMS")
