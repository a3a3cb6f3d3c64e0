"""The doggy door's routing, tested without a model: synthetic predictions at the class boundaries.

The function under test is the one learners write in episode 1, read from the episode source itself.
"""

import numpy as np
import pytest

from lesson_files import LESSONS, code_defining


@pytest.fixture(scope="module")
def door_decision():
    namespace = {"np": np}
    exec(code_defining(LESSONS / "01-pretrained-models.md", "door_decision"), namespace)
    return namespace["door_decision"]


def one_hot(position, size=1000):
    probabilities = np.full(size, 0.5 / (size - 1))
    probabilities[position] = 0.5
    return probabilities


@pytest.mark.parametrize("position, verdict", [
    (0, "not a dog"), (150, "not a dog"),
    (151, "dog"), (200, "dog"), (268, "dog"),
    (269, "not a dog"), (280, "not a dog"),
    (281, "cat"), (283, "cat"), (285, "cat"),
    (286, "not a dog"), (999, "not a dog"),
])
def test_door_routes_each_class_boundary(door_decision, position, verdict):
    message = door_decision(one_hot(position)).lower()
    assert message.startswith(verdict + ":"), f"class {position}: {message!r}"


def test_door_uses_the_most_likely_class_not_the_first_dog(door_decision):
    probabilities = np.zeros(1000)
    probabilities[[151, 294]] = [0.3, 0.7]  # a little Chihuahua, mostly brown bear
    assert door_decision(probabilities).lower().startswith("not a dog:")


def test_door_messages_differ(door_decision):
    messages = {door_decision(one_hot(p)) for p in (151, 281, 294)}
    assert len(messages) == 3
