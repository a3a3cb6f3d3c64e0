"""Episode 3's fast way against the usual way: what `make bench` adds to the notebooks' own numbers.

    python tools/variants.py     # writes results/variants-03.json (tools/benchmark.py runs it)

Episode 3 fine-tunes on activations cached at the unfreeze point (the fast way). Here the same
fine-tuning runs end to end, on the night pictures, with random mirroring in the model (the usual way,
as in the TensorFlow tutorial and the episode's challenge), for as many passes over the pictures as the
episode's run saw (results/episode-03.json: each fast epoch holds every picture and its mirror image,
so it counts as two), with the same learning-rate schedule and early stopping. It also measures the floor for the fast way: one
forward pass of the whole model over the same pictures that the fast way reads (every training
picture and its mirror, the validation and the test pictures).
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lesson_helpers  # noqa: E402
from lesson_helpers.night import to_night_batch  # noqa: E402
from lesson_helpers.results import results_dir, results_path  # noqa: E402

SIZE = (160, 160)
CUT = "block_11_expand"


def arrays(dataset):
    pictures, labels = [], []
    for x, y in dataset:
        pictures.append(keras.ops.convert_to_numpy(x).astype("uint8"))
        labels.append(keras.ops.convert_to_numpy(y)[:, 0].astype(int))
    return np.concatenate(pictures), np.concatenate(labels)


def compiled(model, learning_rate):
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")])
    return model


def episode_3(fast_epochs):
    keras.utils.set_random_seed(42)
    root = lesson_helpers.fetch_episode_data(3) / "cats_and_dogs_filtered"
    train = keras.utils.image_dataset_from_directory(root / "train", image_size=SIZE, label_mode="binary", seed=42)
    valid, test = keras.utils.image_dataset_from_directory(root / "validation", image_size=SIZE, label_mode="binary",
                                                           validation_split=0.5, subset="both", seed=42)
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = arrays(train), arrays(valid), arrays(test)
    x_train, x_valid, x_test = to_night_batch(x_train), to_night_batch(x_valid), to_night_batch(x_test)

    base = keras.applications.MobileNetV2(input_shape=SIZE + (3,), include_top=False, weights="imagenet")
    base.trainable = False
    rescale = keras.layers.Rescaling(1 / 127.5, offset=-1)
    cut = base.get_layer(CUT).input
    bottom = keras.Sequential([keras.Input(SIZE + (3,)), rescale, keras.Model(base.input, cut)])
    top = keras.Model(cut, base.output)
    whole = keras.Sequential([bottom, top, keras.layers.GlobalAveragePooling2D()])

    # The floor: one forward pass over what the fast way reads (training pictures twice, valid, test).
    whole.predict(x_valid[:64], verbose=0)
    start = time.perf_counter()
    for pictures in (x_train, x_train[:, :, ::-1], x_valid, x_test):
        whole.predict(pictures, verbose=0)
    forward_pass_s = time.perf_counter() - start

    # Phase 1 as in the episode (a converged head on frozen features), then phase 2 end to end.
    head = keras.Sequential([keras.Input((1280,)), keras.layers.Dropout(0.2), keras.layers.Dense(1)])
    features = np.concatenate([whole.predict(x_train, verbose=0), whole.predict(x_train[:, :, ::-1], verbose=0)])
    compiled(head, 1e-3).fit(features, np.concatenate([y_train, y_train]), epochs=10, verbose=0)
    # Layer by layer: on a model built from base's layers, `top.trainable = True` while its own flag is still
    # True changes nothing (Keras 3.15), and its layers stay frozen by `base.trainable = False`.
    for layer in top.layers:
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    assert top.trainable_weights, "the top of the base is still frozen"
    epochs = 2 * fast_epochs  # a fast epoch holds every picture twice (and its mirror image)
    steps = int(np.ceil(len(x_train) / 32))
    schedule = keras.optimizers.schedules.CosineDecay(  # the episode's: warm-up for a fast epoch, then cosine
        initial_learning_rate=0.0, warmup_target=1e-4, warmup_steps=2 * steps, decay_steps=(epochs - 2) * steps)
    model = compiled(keras.Sequential([keras.Input(SIZE + (3,)), keras.layers.RandomFlip("horizontal"),
                                       bottom, top, keras.layers.GlobalAveragePooling2D(), head]), schedule)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=4, restore_best_weights=True)
    start = time.perf_counter()
    history = model.fit(x_train, y_train, validation_data=(x_valid, y_valid), epochs=epochs,
                        callbacks=[stop], verbose=2)
    end_to_end_s = time.perf_counter() - start
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    return {"forward_pass_s": round(forward_pass_s, 1), "end_to_end_fine_tuning_s": round(end_to_end_s, 1),
            "end_to_end_epochs": len(history.epoch), "end_to_end_test_accuracy": round(float(accuracy), 4)}


def main():
    record = json.loads(results_path(3).read_text())
    numbers = episode_3(record["fine_tune_epochs"])
    numbers["recorded_at"] = time.time()
    results_dir().mkdir(parents=True, exist_ok=True)
    (results_dir() / "variants-03.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
