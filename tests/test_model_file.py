"""Finding the MediaPipe model: explicit path, environment, model folders, checked download, offline help."""
import shutil

import pytest

from fye_core.errors import FYEInputError
from fye_core.landmarks import model_file
from fye_core.landmarks.model_file import FACE_LANDMARKER_FILENAME, resolve_face_landmarker


def test_explicit_path_then_environment_then_folders(tmp_path, monkeypatch, face_landmarker_model):
    assert resolve_face_landmarker(face_landmarker_model) == face_landmarker_model
    assert resolve_face_landmarker() == face_landmarker_model  # $FYE_FACE_LANDMARKER (set by conftest)
    monkeypatch.delenv("FYE_FACE_LANDMARKER")
    folder = tmp_path / "models" / "fye"
    folder.mkdir(parents=True)
    shutil.copy(face_landmarker_model, folder / FACE_LANDMARKER_FILENAME)
    assert resolve_face_landmarker(search_dirs=[tmp_path / "elsewhere", folder]) == folder / FACE_LANDMARKER_FILENAME
    with pytest.raises(FYEInputError, match="not found at"):
        resolve_face_landmarker(tmp_path / "nope.task")


def test_download_is_checked_and_kept_only_when_it_matches(tmp_path, monkeypatch, face_landmarker_model):
    monkeypatch.delenv("FYE_FACE_LANDMARKER")
    monkeypatch.setenv("FYE_CACHE", str(tmp_path / "cache"))
    wrong = tmp_path / "wrong.task"
    wrong.write_bytes(b"not the model")
    monkeypatch.setattr(model_file, "FACE_LANDMARKER_URL", wrong.as_uri())
    with pytest.raises(FYEInputError, match="sha256"):
        resolve_face_landmarker(download_dir=tmp_path / "dl")
    assert not any((tmp_path / "dl").iterdir())  # nothing half-written left behind
    monkeypatch.setattr(model_file, "FACE_LANDMARKER_URL", face_landmarker_model.as_uri())
    got = resolve_face_landmarker(download_dir=tmp_path / "dl")
    assert got == tmp_path / "dl" / FACE_LANDMARKER_FILENAME and got.read_bytes() == face_landmarker_model.read_bytes()


def test_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("FYE_FACE_LANDMARKER")
    monkeypatch.setenv("FYE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_file, "FACE_LANDMARKER_URL", "http://127.0.0.1:9/face_landmarker.task")
    with pytest.raises(FYEInputError) as err:
        resolve_face_landmarker(search_dirs=[tmp_path / "models" / "fye"])
    message = str(err.value)
    assert "download failed" in message and FACE_LANDMARKER_FILENAME in message
    assert str(tmp_path / "models" / "fye") in message and "FYE_FACE_LANDMARKER" in message
