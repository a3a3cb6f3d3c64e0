"""Rebuild lesson_helpers/registry.csv from an offline mirror's SHA256SUMS.

Maintainers run this when the lesson's data changes:

    python tools/build_registry.py ../shared/offline/SHA256SUMS

Each row says where one file comes from on the internet, so that learners
fetch exactly the bytes the mirror holds. The upstream locations are pinned
to a commit (GitHub) or to the canonical archive (cats_and_dogs_filtered).
"""

import csv
import sys
from pathlib import Path

DLI = ("https://raw.githubusercontent.com/igquinteroch/nvidia-dl-fundamentals/"
       "4a2ba791f00a527cd1df022fe9b880c4d7d4c340/")
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
    "sea_turtle.jpg":
        GITHUB + "IBM/MAX-ResNet-50/5d7955ad4448a63c6f3b972db461f3cb86496498/samples/turtle.jpg",
    "cow.jpg":
        GITHUB + "IBM/MAX-Image-Segmenter-Web-App/21b9def7796a37b55b769ee212c0196b8aa1df4a/assets/cow.jpg",
}
# raccoon.png is scipy.datasets.face(): bz2-compressed raw RGB pixels, saved as PNG.
SCIPY_FACE = GITHUB + "scipy/dataset-face/49ba9e3b8b21a71cdb039b341ce5c08cee4afd74/face.dat"
SCIPY_FACE_SHA256 = "9d8b0b4d081313e2b485748c770472e5a95ed1738146883d84c7030493e82886"


def source_of(path):
    """Return (how, url) for a mirror-relative path."""
    parts = path.split("/")
    if parts[0] == "keras":
        url = IMAGENET_CLASS_INDEX if parts[-1] == "imagenet_class_index.json" else KERAS_MOBILENET_V2 + parts[-1]
        return "download", url
    folder = parts[1]
    if folder in ("doggy_door_images", "presidential_doggy_door"):
        return "download", DLI + path
    if folder == "cats_and_dogs_filtered":
        return "zip:" + "/".join(parts[1:]), CATS_DOGS_ZIP
    if folder == "extra_animals":
        if parts[-1] == "raccoon.png":
            return "scipy-face:" + SCIPY_FACE_SHA256, SCIPY_FACE
        return "download", EXTRA_ANIMALS[parts[-1]]
    raise ValueError(f"no known source for {path}")


def main(sums_path):
    rows = []
    for line in Path(sums_path).read_text().splitlines():
        sha256, path = line.split(maxsplit=1)
        path = path.removeprefix("./")
        if path.endswith(".md"):
            continue  # the mirror's own documentation, not lesson data
        if path.startswith("keras/") and path.endswith(".h5"):
            sha256 = ""  # the mirror holds stand-ins; the real weights' hash is not known here
        how, url = source_of(path)
        rows.append((path, sha256, how, url))
    out = Path(__file__).resolve().parents[1] / "lesson_helpers" / "registry.csv"
    with open(out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["path", "sha256", "how", "url"])
        writer.writerows(sorted(rows))
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/offline/SHA256SUMS")
