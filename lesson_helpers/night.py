"""The door camera at night: day pictures turned into infrared-like night pictures (episodes 3 and 4).

Door and security cameras switch to infrared at night. Their pictures are grey, dark, low in
contrast, a little soft and noisy, and darker towards the corners, where the camera's own infrared
lamp lights the scene less. :func:`to_night` makes such a picture from a day picture. It is
deterministic: the same picture always gets the same noise (the noise is seeded by the picture's
pixels), so every run of the lesson sees the same night pictures.

Episode 3 prints this function's source (``inspect.getsource``) for learners to read.
"""

import zlib

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
