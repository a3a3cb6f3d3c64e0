"""The door camera at night: day pictures turned into infrared-like night pictures (episodes 3 and 4).

Door and security cameras switch to infrared at night. Their pictures are grey, dark, low in
contrast, a little soft and noisy, and darker towards the corners, where the camera's own infrared
lamp lights the scene less. :func:`to_night` makes such a picture from a day picture. It is
deterministic: the same picture always gets the same noise (the noise is seeded by the picture's
pixels), so every run of the lesson sees the same night pictures.

Episode 3 prints this function's source (``inspect.getsource``) for learners to read.
"""

import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def to_night(picture):
    """A night version of one picture (an array: height, width, 3 colours, values 0-255)."""
    day = np.asarray(picture).clip(0, 255).astype("uint8")
    grey = Image.fromarray(day).convert("L")                      # infrared: no colour
    soft = grey.filter(ImageFilter.GaussianBlur(radius=1.2))      # a cheap lens, slightly out of focus
    x = np.asarray(soft, dtype="float32") / 255
    x = x ** 1.5                                                  # darker: the dim parts get dimmer
    rows, cols = np.ogrid[-1:1:x.shape[0] * 1j, -1:1:x.shape[1] * 1j]
    x = x * (1 - 0.35 * (rows ** 2 + cols ** 2) / 2)              # the lamp lights the middle best
    x = x.mean() + 0.45 * (x - x.mean())                          # low contrast
    noise = np.random.default_rng(zlib.crc32(day.tobytes())).normal(0, 0.05, x.shape)
    x = (x + noise).clip(0, 1)                                    # sensor noise, the same for the same picture
    grey_8bit = (x * 255).round().astype("uint8")                 # 8-bit pixels, as a camera writes them
    return np.repeat(grey_8bit[..., np.newaxis], 3, axis=-1)      # three equal channels, as the model expects


def to_night_batch(pictures):
    """:func:`to_night` for each picture of an array (n, height, width, 3): an uint8 array of the same shape."""
    return np.stack([to_night(p) for p in pictures])


# --------------------------------------------------------------------------- episode 4: a door to start from

NIGHT_DOOR = "night_door.keras"          # episode 3 saves its fine-tuned night door under this name
QUICK_NIGHT_DOOR = "night_door_quick.keras"


def night_door_path(data_folder=None, pictures=400, verbose=True):
    """The night door episode 4 starts from: episode 3's ``night_door.keras`` in the data folder if it is
    there, else a quick stand-in (see :func:`quick_night_door`), trained once and kept as
    ``night_door_quick.keras`` so that episode 4 can be run on its own."""
    from .data import data_dir

    folder = Path(data_folder) if data_folder is not None else data_dir()
    saved = folder / NIGHT_DOOR
    if saved.is_file():
        if verbose:
            print(f"Using episode 3's night door: {saved}")
        return saved
    quick = folder / QUICK_NIGHT_DOOR
    if not quick.is_file():
        started = time.perf_counter()
        model = quick_night_door(folder / "cats_and_dogs_filtered" / "train", pictures=pictures)
        model.save(quick)
        if verbose:
            print(f"No {NIGHT_DOOR} from episode 3, so a quick night door was trained in "
                  f"{time.perf_counter() - started:.0f} s (frozen MobileNetV2, new head): {quick}")
    elif verbose:
        print(f"No {NIGHT_DOOR} from episode 3: using the quick night door trained earlier: {quick}")
    return quick


def quick_night_door(train_folder, pictures=400, epochs=20, seed=42):
    """A night door in seconds: a frozen MobileNetV2 base (160 px) with a new Dense(1) head trained on the
    cached features of ``pictures`` night training pictures. Same interface as episode 3's door: input
    (160, 160, 3), pixel values 0-255 of a night picture, one logit out (positive: dog).

    Night pictures are dark and low in contrast, so their pixels fill only a narrow band of the range the
    base was trained on. The door's Rescaling layer therefore stretches them: it maps the night pictures'
    mean and spread onto those of the day pictures (then to [-1, 1], as MobileNetV2 expects), which gains a
    little accuracy. Without fine-tuning it stays clearly less accurate than episode 3's door."""
    import keras  # lazily: the rest of this module needs only NumPy and Pillow

    keras.utils.set_random_seed(seed)
    dataset = keras.utils.image_dataset_from_directory(
        train_folder, image_size=(160, 160), label_mode="binary", batch_size=pictures, seed=seed, verbose=False)
    images, labels = next(iter(dataset))
    day = images.numpy()
    night = to_night_batch(day)
    labels = labels.numpy()

    stretch = float(day.std() / night.std())  # night pixel p -> day-like pixel (p - night mean) * stretch + day mean
    offset = float(day.mean() - night.mean() * stretch)
    inputs = keras.Input(shape=(160, 160, 3), name="night_picture")
    x = keras.layers.Rescaling(stretch / 127.5, offset=offset / 127.5 - 1, name="stretch")(inputs)  # then [-1, 1]
    base = keras.applications.MobileNetV2(input_shape=(160, 160, 3), include_top=False, weights="imagenet")
    base.trainable = False
    x = base(x, training=False)
    features = keras.layers.GlobalAveragePooling2D()(x)
    extractor = keras.Model(inputs, features)
    cached = extractor.predict(night, batch_size=50, verbose=0)

    head = keras.layers.Dense(1, name="logit")
    head_model = keras.Sequential([keras.Input(shape=(cached.shape[1],)), head])
    head_model.compile(optimizer=keras.optimizers.Adam(1e-3),
                       loss=keras.losses.BinaryCrossentropy(from_logits=True))
    head_model.fit(cached, labels, epochs=epochs, batch_size=32, verbose=0)
    return keras.Model(inputs, head(features), name="quick_night_door")
