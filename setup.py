"""Build hook for the helpers' wheel (all other settings are in pyproject.toml).

The wheel carries a copy of _config.yml, the lesson's metadata, as lesson_helpers/lesson_config.yml:
outside a checkout (Colab installs the helpers from the repository) lesson_helpers.lesson reads the
episodes and their data from that copy. In a checkout (`pip install -e .`) it reads _config.yml itself.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithLessonConfig(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "lesson_helpers" / "lesson_config.yml"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(__file__).resolve().with_name("_config.yml"), target)


setup(cmdclass={"build_py": BuildPyWithLessonConfig})
