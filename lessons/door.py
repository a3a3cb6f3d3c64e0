"""The doggy door, away from the notebook (episode 4): open for dogs, shut for cats.

    python door.py [--threshold T] MODEL.tflite PICTURE [PICTURE ...]

For each picture, one line: OPEN or SHUT, the probability that it shows a dog, and the file.
The door opens when the model's logit is at or above the threshold T: by default the "threshold" of
a file door.json in the model's folder (episode 3 chose it for a policy), else 0 (P(dog) >= 0.5).
A picture that cannot be read gets one line on stderr saying why, and the others are still
decided; the exit status is then 1 (2 when the model itself cannot be used).

The pictures are the door camera's own pictures: at night the camera already takes grey
infrared pictures, so this program does NOT apply the lesson's `to_night` (that function only
makes night pictures from day pictures, for training and testing). It prepares each picture
as the model expects: upright RGB, resized to the model's input size (160 x 160),
pixel values 0-255 as float32; the model rescales them itself.

Needs NumPy, Pillow, ai-edge-litert and the lesson's helpers (for reading pictures safely);
no TensorFlow, so it runs on a small computer by the door.
"""

import json
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from lesson_helpers import LessonImageError, load_image


def load_door(model_path):
    """The LiteRT interpreter for a door model, ready to run."""
    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    return interpreter


def default_threshold(model_path):
    """The threshold saved beside the model (door.json in its folder), else 0."""
    saved = Path(model_path).parent / "door.json"
    return float(json.loads(saved.read_text())["threshold"]) if saved.is_file() else 0.0


def door_logit(interpreter, picture):
    """The model's logit for one picture: an array (height, width, 3) of pixel values 0-255."""
    entry = interpreter.get_input_details()[0]
    exit_ = interpreter.get_output_details()[0]
    x = picture[np.newaxis].astype("float32")
    if entry["dtype"] != np.float32:  # a model with integer input: quantise the pixels as it expects
        scale, zero_point = entry["quantization"]
        info = np.iinfo(entry["dtype"])
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
    interpreter.set_tensor(entry["index"], x.astype(entry["dtype"]))
    interpreter.invoke()
    logit = interpreter.get_tensor(exit_["index"]).astype("float32")[0, 0]
    if exit_["dtype"] != np.float32:  # integer output: back to a logit
        scale, zero_point = exit_["quantization"]
        logit = (logit - zero_point) * scale
    return float(logit)


def main(argv):
    if len(argv) < 2 or argv[0] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    threshold = None
    if argv[0] == "--threshold" or argv[0].startswith("--threshold="):
        value, argv = (argv[1], argv[2:]) if argv[0] == "--threshold" else (argv[0].split("=", 1)[1], argv[1:])
        try:
            threshold = float(value)
        except ValueError:
            print(f"door.py: the threshold must be a number, not {value!r}", file=sys.stderr)
            return 2
    if len(argv) < 2:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    model_path, pictures = argv[0], argv[1:]
    try:
        interpreter = load_door(model_path)
        if threshold is None:
            threshold = default_threshold(model_path)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        print(f"door.py: cannot use the model {model_path}: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    height, width = interpreter.get_input_details()[0]["shape"][1:3]
    failed = 0
    for path in pictures:
        try:
            picture = load_image(path, size=(height, width))
        except LessonImageError as err:
            print(f"ERROR {err}", file=sys.stderr, flush=True)
            failed += 1
            continue
        logit = door_logit(interpreter, picture)
        p_dog = 1 / (1 + np.exp(-logit))
        print(f"{'OPEN' if logit >= threshold else 'SHUT'}  P(dog) = {p_dog:.2f}  {path}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
