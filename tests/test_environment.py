"""pip (requirements.txt, what CI uses) and conda (environment.yml) must declare the same versions."""

import yaml

from lesson_files import ROOT


def pins(lines):
    result = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"unpinned requirement: {line!r}"
            result[name.lower()] = version
    return result


def test_pip_and_conda_pin_the_same_versions():
    pip_pins = pins((ROOT / "requirements.txt").read_text().splitlines())
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pins(pip_section) == pip_pins
    assert pip_pins["tensorflow"].startswith("2.21") and pip_pins["keras"].startswith("3.")
