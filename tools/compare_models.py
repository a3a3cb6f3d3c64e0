"""Measure pretrained networks on this computer's CPU, with random weights (the same computation, no download).

    python tools/compare_models.py              # MobileNetV2 against VGG16 (episode 1's callout)
    python tools/compare_models.py backbones    # door backbones at 160 px, no top (episode 4's table)

The first times `predict` for one 224 px image on its own and per image in a batch of 32, after one warm-up
call. The second builds each backbone as episode 4 uses one (160 x 160 pictures, include_top=False, average
pooling) and times one picture through `predict_on_batch` (a compiled graph, as a deployed model runs): the
median of 20 calls after 3 warm-up calls. Both print a
Markdown table. Offline only MobileNetV2's weights exist, which is why the weights are random: parameters and
latency do not depend on them.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

# ImageNet top-1 accuracy as published in the keras.applications documentation (224 px, with top).
BACKBONES = [("MobileNet", "70.4 %"), ("MobileNetV2", "71.3 %"), ("EfficientNetB0", "77.1 %"), ("ResNet50", "74.9 %")]


def seconds_per_call(model, batch, repeats):
    model.predict(batch, verbose=0)  # warm-up: builds and optimises the computation
    start = time.perf_counter()
    for _ in range(repeats):
        model.predict(batch, verbose=0)
    return (time.perf_counter() - start) / repeats


def median_ms(call, repeats=20, warm_up=3):
    for _ in range(warm_up):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def vgg_table():
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


def backbone_table():
    x = np.zeros((1, 160, 160, 3), "float32")
    print(f"{os.cpu_count()} CPU cores, Keras {keras.__version__}, load average {os.getloadavg()[0]:.1f}")
    print("| backbone (160 px, no top) | weights | one picture (ms) | ImageNet top-1 (published) |")
    print("|---|---:|---:|---:|")
    for name, top1 in BACKBONES:
        model = getattr(keras.applications, name)(input_shape=(160, 160, 3), include_top=False, weights=None,
                                                  pooling="avg")
        ms = median_ms(lambda model=model: model.predict_on_batch(x))
        print(f"| {name} | {model.count_params() / 1e6:.1f} M | {ms:.0f} | {top1} |", flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    backbone_table() if sys.argv[1:] == ["backbones"] else vgg_table()
