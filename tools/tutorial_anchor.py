"""Time the TensorFlow transfer-learning tutorial's recipe on this machine: the anchor for episodes 2-3.

    python tools/tutorial_anchor.py

Measured on the 2-core CPU machine that tests the lesson (2026-11-22, offline stand-in weights): 199 s of
end-to-end feature extraction + 349 s of fine-tuning = 548 s, test accuracy 0.979 (192 test images).
Episodes 2 and 3 together take 183 s (`make bench`), and episode 3 alone reaches a test accuracy of 0.984
(500 test images) in 100 s.

The recipe (written here in Keras 3, from the tutorial's description): cats_and_dogs_filtered at 160 px,
batch 32; a fifth of the validation batches held out as test; augmentation (horizontal flip, rotation 0.2)
in the model; frozen MobileNetV2 base, global average pooling, dropout 0.2, Dense(1) logits; Adam 1e-4 for
10 epochs trained end to end; then layers from 100 on unfrozen, RMSprop 1e-5, 10 more epochs. Prints the
wall time of each phase and the test accuracy, and writes them to results/tutorial-anchor.json,
which `make bench` compares with episodes 2 and 3 (it runs this script first when that file is missing or
was written on another machine).
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import lesson_helpers  # noqa: E402
from lesson_helpers.results import results_dir  # noqa: E402
from tools.benchmark import MACHINE  # noqa: E402

SIZE = (160, 160)


def main():
    keras.utils.set_random_seed(1)
    root = lesson_helpers.fetch_episode_data(3) / "cats_and_dogs_filtered"
    train = keras.utils.image_dataset_from_directory(root / "train", image_size=SIZE, seed=1)
    valid = keras.utils.image_dataset_from_directory(root / "validation", image_size=SIZE, seed=1)
    batches = int(valid.cardinality())
    test, valid = valid.take(batches // 5), valid.skip(batches // 5)
    train, valid, test = (d.prefetch(tf.data.AUTOTUNE) for d in (train, valid, test))

    base = keras.applications.MobileNetV2(input_shape=SIZE + (3,), include_top=False, weights="imagenet")
    base.trainable = False
    inputs = keras.Input(SIZE + (3,))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = keras.layers.RandomRotation(0.2)(x)
    x = keras.applications.mobilenet_v2.preprocess_input(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))

    def compile_with(optimizer):
        model.compile(optimizer=optimizer, loss=keras.losses.BinaryCrossentropy(from_logits=True),
                      metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")])

    numbers = {}
    compile_with(keras.optimizers.Adam(1e-4))
    start = time.perf_counter()
    model.fit(train, validation_data=valid, epochs=10, verbose=2)
    numbers["feature_extraction_s"] = time.perf_counter() - start

    base.trainable = True
    for layer in base.layers[:100]:
        layer.trainable = False
    compile_with(keras.optimizers.RMSprop(1e-5))
    start = time.perf_counter()
    model.fit(train, validation_data=valid, initial_epoch=10, epochs=20, verbose=2)
    numbers["fine_tuning_s"] = time.perf_counter() - start
    numbers["test_accuracy"] = model.evaluate(test, verbose=0)[1]
    numbers["total_s"] = numbers["feature_extraction_s"] + numbers["fine_tuning_s"]
    numbers["machine"] = MACHINE  # make bench compares the anchor with episodes run on the same machine
    numbers["recorded_at"] = time.time()
    print(json.dumps(numbers, indent=2))
    results_dir().mkdir(parents=True, exist_ok=True)
    (results_dir() / "tutorial-anchor.json").write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
