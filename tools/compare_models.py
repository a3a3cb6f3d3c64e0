"""Measure MobileNetV2 against VGG16 on this computer's CPU (the numbers in episode 1's callout).

    python tools/compare_models.py

Builds both networks with random weights (weights=None: the same computation,
no download) and times `predict` for one image on its own and per image in a
batch of 32, after one warm-up call. Prints a Markdown table.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def seconds_per_call(model, batch, repeats):
    model.predict(batch, verbose=0)  # warm-up: builds and optimises the computation
    start = time.perf_counter()
    for _ in range(repeats):
        model.predict(batch, verbose=0)
    return (time.perf_counter() - start) / repeats


def main():
    rows = []
    for build in (keras.applications.MobileNetV2, keras.applications.VGG16):
        model = build(weights=None)
        one = seconds_per_call(model, np.zeros((1, 224, 224, 3), "float32"), repeats=20)
        many = seconds_per_call(model, np.zeros((32, 224, 224, 3), "float32"), repeats=3) / 32
        rows.append((model.name, model.count_params(), one * 1000, many * 1000))
    print(f"{os.cpu_count()} CPU cores, Keras {keras.__version__}")
    print("| model | parameters | one image alone (ms) | per image, batch of 32 (ms) |")
    print("|---|---|---|---|")
    for name, params, one, many in rows:
        print(f"| {name} | {params:,} | {one:.0f} | {many:.0f} |")


if __name__ == "__main__":
    main()
