"""The Carpentries pages (setup, reference, learner profiles, contributing, code of conduct) say true things.

* The pages are on the website (_toc.yml) and the lesson's metadata in _config.yml is complete.
* The Code of Conduct names the contact of _config.yml.
* The setup page's commands "by hand" are the ones `make lab` runs (read from the Makefile), so that a
  learner without `make` (Windows) gets the same environment.
* What the reference page says about older Keras code and about BatchNormalization holds on the pinned
  Keras (slow: these import Keras and train tiny models for a few steps).
"""

import datetime
import re

import numpy as np
import pytest
import yaml

from lesson_files import ROOT

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
SETUP = (ROOT / "learners" / "setup.md").read_text(encoding="utf-8")
REFERENCE = (ROOT / "learners" / "reference.md").read_text(encoding="utf-8")
PAGES = ["learners/setup", "learners/reference", "profiles/learner-profiles", "CONTRIBUTING", "CODE_OF_CONDUCT"]
CARPENTRIES_COC = "https://docs.carpentries.org/policies/coc/"


def toc_files(node):
    if isinstance(node, dict):
        return ([node["file"]] if "file" in node else []) + [f for v in node.values() for f in toc_files(v)]
    if isinstance(node, list):
        return [f for item in node for f in toc_files(item)]
    return []


def test_carpentries_pages_are_on_the_website():
    listed = toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8")))
    missing = [page for page in PAGES if page not in listed]
    assert not missing, f"_toc.yml does not list {missing}"
    absent = [page for page in PAGES if not (ROOT / f"{page}.md").is_file()]
    assert not absent, f"pages listed but missing: {absent}"


def test_lesson_metadata_is_complete():
    assert datetime.date.fromisoformat(str(CONFIG["created"])), "_config.yml: `created` must be YYYY-MM-DD"
    keywords = CONFIG["keywords"]
    assert isinstance(keywords, list) and keywords and all(isinstance(k, str) and k for k in keywords), (
        "_config.yml: `keywords` must be a list of words")
    assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", CONFIG["contact"]), (
        "_config.yml: `contact` must be an e-mail address")
    assert CONFIG["life_cycle"] in ("pre-alpha", "alpha", "beta", "stable")


def test_code_of_conduct_names_the_contact_and_the_carpentries_code():
    text = (ROOT / "CODE_OF_CONDUCT.md").read_text(encoding="utf-8")
    assert CONFIG["contact"] in text, "CODE_OF_CONDUCT.md must name the `contact` of _config.yml"
    assert CARPENTRIES_COC in text


def makefile_commands():
    """The commands `make lab` runs, in order, as a learner types them in an activated environment."""
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    commands = []
    for target in (r"\$\(VENV\)/\.installed", "data", "lab"):
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
        assert recipe, f"no recipe for {target} in the Makefile"
        for line in recipe.group(1).splitlines():
            line = line.strip()
            if line.startswith("touch "):
                continue
            line = line.replace("$(PYTHON) -m venv $(VENV)", "python -m venv .venv")
            line = re.sub(r"\$\(BIN\)/", "", line).replace("$(LAB_FLAGS)", "")
            commands.append(" ".join(w for w in line.split() if w != "--quiet"))
    return commands


def code_blocks(section):
    """The fenced code blocks of one `## section` of the setup page, as lists of commands."""
    body = re.search(rf"^## {section}\n(.*?)(?=^## |\Z)", SETUP, re.M | re.S)
    assert body, f"learners/setup.md has no section '## {section}'"
    blocks = re.findall(r"^```\w*\n(.*?)^```", body.group(1), re.M | re.S)
    return [[" ".join(line.split("#")[0].split()) for line in block.splitlines()] for block in blocks]


@pytest.mark.parametrize("section, venv", [("Linux", "python3 -m venv .venv"), ("Windows", "py -m venv .venv")])
def test_setup_by_hand_runs_what_make_lab_runs(section, venv):
    wanted = [venv if c == "python -m venv .venv" else c for c in makefile_commands()]
    blocks = [b for b in code_blocks(section) if venv in b]
    assert blocks, f"setup.md, {section}: no code block creates the virtual environment with `{venv}`"
    typed = [line for line in blocks[0] if line and "activate" not in line.lower()]
    assert typed == wanted, f"setup.md, {section}: the steps by hand differ from `make lab`'s:\n{typed}\n{wanted}"


# --- the reference page's claims, on the pinned Keras -------------------------------------------

@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def tiny_model(keras):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


@pytest.mark.slow
def test_older_keras_calls_behave_as_the_reference_page_says(keras, tmp_path):
    assert "## Coming from older Keras code" in REFERENCE
    with pytest.raises(ImportError):
        from keras.preprocessing.image import ImageDataGenerator  # noqa: F401
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    assert ImageDataGenerator.__doc__.strip().startswith("DEPRECATED")
    model = tiny_model(keras)
    for old in ("fit_generator", "evaluate_generator", "predict_generator"):
        assert not hasattr(model, old), f"Keras has {old} again: update the reference page"
    with pytest.raises(ValueError, match=re.escape("Argument(s) not recognized: {'lr': 0.001}")):
        keras.optimizers.Adam(lr=0.001)
    assert "`ValueError: Argument(s) not recognized: {'lr': 0.001}`" in REFERENCE
    assert keras.preprocessing.image.load_img is keras.utils.load_img
    assert keras.preprocessing.image.img_to_array is keras.utils.img_to_array
    model.save(tmp_path / "model.h5")   # "still works, in Keras's legacy format"
    assert (tmp_path / "model.h5").stat().st_size > 0

    def batches():
        while True:
            yield np.zeros((4, 3), "float32"), np.zeros((4, 1), "float32")

    assert model.fit(batches(), steps_per_epoch=2, epochs=1, verbose=0).history["loss"]


@pytest.mark.slow
def test_augmentation_layers_change_pictures_only_in_training(keras):
    # The replacement for ImageDataGenerator given on the reference page.
    augment = keras.Sequential([keras.layers.RandomRotation(20 / 360), keras.layers.RandomTranslation(0.1, 0.1),
                                keras.layers.RandomFlip("horizontal"), keras.layers.RandomShear(0.2)])
    pictures = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    as_numpy = keras.ops.convert_to_numpy
    np.testing.assert_allclose(as_numpy(augment(pictures, training=False)), pictures)
    assert not np.allclose(as_numpy(augment(pictures, training=True)), pictures)


@pytest.mark.slow
def test_batchnormalization_rule_of_the_glossary(keras):
    seen = []

    class Probe(keras.layers.Layer):
        """Records the `training` value that reaches a layer inside the base (when `fit` traces it)."""

        def call(self, x, training=None):
            if training is not None:
                seen.append(bool(training))
            return x

    def base_model():
        inputs = keras.Input((4,))
        x = Probe()(keras.layers.Dense(4)(inputs))
        return keras.Model(inputs, keras.layers.BatchNormalization()(x))

    x = np.random.default_rng(0).normal(5, 3, (32, 4)).astype("float32")
    y = np.zeros((32, 1), "float32")

    def train(model, bn):
        seen.clear()
        before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        return not np.allclose(before, keras.ops.convert_to_numpy(bn.moving_mean)), set(seen)

    def functional(base):
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(1)(base(inputs, training=False)))

    # A functional model: training=False in the call does not protect a trainable BatchNormalization.
    base = base_model()
    moved, modes = train(functional(base), base.layers[-1])
    assert moved and modes == {True}
    # Frozen (trainable=False): always inference mode, although the layers inside get training=True
    # (so a Dropout layer inside a frozen base would still drop).
    base = base_model()
    base.trainable = False
    moved, modes = train(functional(base), base.layers[-1])
    assert not moved and modes == {True}

    # A subclassed model calling self.base(x, training=False) keeps it.
    class Door(keras.Model):
        def __init__(self, base):
            super().__init__()
            self.base, self.head = base, keras.layers.Dense(1)

        def call(self, inputs, training=None):
            return self.head(self.base(inputs, training=False))

    base = base_model()
    moved, modes = train(Door(base), base.layers[-1])
    assert not moved and modes == {False}
