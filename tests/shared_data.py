"""The one way tests find the shared data: ``$FYE_SHARED``, default ``../shared`` beside the repository."""
import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("FYE_SHARED") or REPO_ROOT.parent / "shared").resolve()


def shared_path(*parts: str) -> Path:
    """A file of the shared data; missing data fails the test (it is never a skip)."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.fail(f"shared test data missing: {path} (set FYE_SHARED to the shared folder)", pytrace=False)
    return path


def golden(name: str) -> dict:
    """A golden landmark fixture as a dict of arrays (loaded without pickle)."""
    with np.load(shared_path("golden", "landmarks", f"{name}.npz"), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


FACE_LANDMARKER = ("models", "face_landmarker_v2_with_blendshapes.task")
PORTRAITS = {"cartoon_s7": "portrait_cartoon_s7.jpg", "sculpture_s6": "portrait_sculpture_s6.jpg",
             "painting_s9": "portrait_painting_s9.jpg", "astronaut": None}
VIDEOS = {"lp_d0": "lp_d0_driving.mp4", "fye_temple": "fye_temple_driving.mp4"}
