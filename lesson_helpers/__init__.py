"""Helpers for the "Pretrained models & transfer learning" lesson.

Only what learners should not have to type lives here:

- ``data``: fetching and verifying the lesson's data and pretrained weights;
- ``images``: loading learners' own photos safely, checking an image folder;
- ``results``: recording an episode's key numbers for the lesson's tests.

The episodes themselves use Keras directly.
"""

from .data import LessonDataError, check, data_dir, fetch, fetch_episode_data, keras_cache_dir
from .images import LessonImageError, check_image_folder, load_image, open_image
from .results import record_results

__all__ = ["LessonDataError", "check", "data_dir", "fetch", "fetch_episode_data", "keras_cache_dir", "record_results",
           "LessonImageError", "check_image_folder", "load_image", "open_image"]
