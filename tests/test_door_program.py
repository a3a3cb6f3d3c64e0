"""lessons/door.py, the door program of episode 4, run from a terminal as learners run it.

The model is a tiny stand-in with the door's interface (input 160 x 160 x 3, pixel values 0-255, one
logit out), converted here to LiteRT: bright pictures open the door, dark ones keep it shut. So the
tests need no trained door and check the program itself: its decisions, its one-line errors, its exit
status, and that it runs without TensorFlow.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lesson_files import LESSONS, ROOT
from lesson_helpers import lesson

DOOR = LESSONS / "door.py"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A LiteRT model: logit = 4 * (mean red + mean green + mean blue, each 0-1) - 6."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    inputs = keras.Input(shape=(160, 160, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(1)
    outputs = dense(x)
    dense.set_weights([np.full((3, 1), 4.0, "float32"), np.array([-6.0], "float32")])
    path = tmp_path_factory.mktemp("door") / "brightness.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert())
    return path


@pytest.fixture(scope="module")
def integer_model(tmp_path_factory):
    """The same door quantised to integers throughout, uint8 input and output (as for a microcontroller)."""
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    inputs = keras.Input(shape=(160, 160, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(1)
    outputs = dense(x)
    dense.set_weights([np.full((3, 1), 4.0, "float32"), np.array([-6.0], "float32")])
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.full((1, 160, 160, 3), v, "float32")] for v in range(0, 256, 15))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    path = tmp_path_factory.mktemp("door") / "brightness_uint8.tflite"
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    Image.new("RGB", (200, 150), (250, 250, 250)).save(folder / "bright.png")
    Image.new("L", (90, 120), 10).save(folder / "dark night.jpg")  # grey, like an infrared camera's
    (folder / "notes.jpg").write_text("this is not a picture")
    full = folder / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(full)
    (folder / "cut.jpg").write_bytes(full.read_bytes()[:2000])
    return folder


def messages(stderr):
    """The program's own lines on stderr: without LiteRT's note that it uses XNNPACK (printed by its C++ core)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("INFO: Created TensorFlow Lite")]


def run_door(*args, block=("tensorflow", "keras")):
    """door.py in a fresh Python, from the lessons folder; `block` packages cannot be imported there."""
    blocker = ROOT / "build" / "import-blocker"
    for name in block:
        (blocker / name).mkdir(parents=True, exist_ok=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('door.py must not import {name}')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    return subprocess.run([sys.executable, str(DOOR), *map(str, args)], cwd=LESSONS, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_decides_each_good_picture(model, pictures):
    result = run_door(model, pictures / "bright.png", pictures / "dark night.jpg")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout
    assert lines[0].startswith("OPEN") and "P(dog) = 1.00" in lines[0] and lines[0].endswith("bright.png")
    assert lines[1].startswith("SHUT") and "P(dog) = 0.00" in lines[1] and lines[1].endswith("dark night.jpg")
    assert messages(result.stderr) == []


@pytest.mark.slow
def test_a_model_with_integer_input_and_output_decides_the_same(integer_model, pictures):
    result = run_door(integer_model, pictures / "bright.png", pictures / "dark night.jpg")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["OPEN", "SHUT"], result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name, words", [
    ("missing.jpg", "there is no file"),
    ("notes.jpg", "is not an image file"),
    ("cut.jpg", "is incomplete"),
])
def test_bad_picture_is_one_line_and_the_others_are_still_decided(model, pictures, name, words):
    result = run_door(model, pictures / "bright.png", pictures / name, pictures / "dark night.jpg")
    assert result.returncode == 1, result.stdout + result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["OPEN", "SHUT"]
    errors = messages(result.stderr)
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("ERROR ") and words in errors[0] and name in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_model_that_cannot_be_used_is_one_line(pictures):
    result = run_door(pictures / "no-such-model.tflite", pictures / "bright.png")
    assert result.returncode == 2
    assert result.stdout == "" and len(messages(result.stderr)) == 1, result.stderr
    assert "cannot use the model" in result.stderr and "Traceback" not in result.stderr


def test_usage_without_pictures():
    result = run_door("door.tflite")
    assert result.returncode == 2 and "python door.py [--threshold T] MODEL.tflite PICTURE" in result.stderr


@pytest.mark.slow
def test_threshold_from_the_command_line(model, pictures):
    """The bright picture's logit is about +5.8: a threshold of 6 keeps the door shut, --threshold=-6 opens it for both."""
    result = run_door("--threshold", "6", model, pictures / "bright.png")
    assert result.returncode == 0 and result.stdout.startswith("SHUT  P(dog) = 1.00"), result.stdout + result.stderr
    result = run_door("--threshold=-6", model, pictures / "bright.png", pictures / "dark night.jpg")
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["OPEN", "OPEN"], result.stdout
    result = run_door("--threshold", "high", model, pictures / "bright.png")
    assert result.returncode == 2 and "must be a number" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_threshold_from_door_json_beside_the_model(model, pictures, tmp_path):
    """Without --threshold, door.json in the model's folder sets it (as episode 4 writes it); the option wins."""
    (tmp_path / model.name).write_bytes(model.read_bytes())
    (tmp_path / "door.json").write_text('{"threshold": 6.0, "policy": 0.02}')
    result = run_door(tmp_path / model.name, pictures / "bright.png")
    assert result.returncode == 0 and result.stdout.startswith("SHUT"), result.stdout + result.stderr
    result = run_door("--threshold", "0", tmp_path / model.name, pictures / "bright.png")
    assert result.stdout.startswith("OPEN"), result.stdout + result.stderr


def test_blocker_works():
    """The import blocker used above does stop an import of TensorFlow (so the other tests mean something)."""
    blocker = ROOT / "build" / "import-blocker"
    run_door("door.tflite")  # creates the blocker
    result = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(blocker)}, timeout=60)
    assert result.returncode != 0 and "door.py must not import tensorflow" in result.stderr


def test_episode_finds_the_program_in_a_checkout():
    """Episode 4 runs door.py through lesson_file: in a checkout, the checkout's own copy (on Colab, a download)."""
    assert lesson.lesson_file("lessons/door.py") == DOOR
