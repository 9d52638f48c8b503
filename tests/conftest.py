import shutil

import numpy as np
import pytest
from comfy_host import ComfyHost
from shared_data import FACE_LANDMARKER, golden, shared_path

from fye_core.landmarks import FaceTrack


@pytest.fixture(scope="session", autouse=True)
def face_landmarker_model(tmp_path_factory):
    """Points the core at the shared MediaPipe model and keeps any cache out of the user's home."""
    mp = pytest.MonkeyPatch()
    model = shared_path(*FACE_LANDMARKER)
    mp.setenv("FYE_FACE_LANDMARKER", str(model))
    mp.setenv("FYE_CACHE", str(tmp_path_factory.mktemp("fye-cache")))
    yield model
    mp.undo()


COMFY_NODE_IDS = ("FYE_PrepareReference", "FYE_FaceLandmarks", "FYE_MotionControls", "FYE_AlignMotion",
                  "FYE_RenderLandmarks",
                  "FYE_SaveTemplate", "FYE_LoadTemplate", "FYE_LoadModels", "FYE_Animate", "FYE_FaceCrop",
                  "FYE_PasteBack", "FYE_PlaceFace", "FYE_LoadHunyuanPortrait", "FYE_HunyuanPortraitAnimate")
COMFY_PORTRAIT, COMFY_VIDEO = "portrait_painting_s9.jpg", "lp_d0_driving.mp4"


@pytest.fixture(scope="session")
def host(tmp_path_factory, face_landmarker_model):
    """One real ComfyUI host with the pack for every ``comfyui`` test module, the MediaPipe model in models/fye
    and a portrait and a driving video in its input folder."""
    base = tmp_path_factory.mktemp("comfyui")
    (base / "models" / "fye").mkdir(parents=True)
    shutil.copy(face_landmarker_model, base / "models" / "fye" / face_landmarker_model.name)
    with ComfyHost(base, expected_nodes=COMFY_NODE_IDS) as running:
        for name in (COMFY_PORTRAIT, COMFY_VIDEO):
            shutil.copy(shared_path("data", name), running.input_dir / name)
        yield running


@pytest.fixture(scope="session")
def detector(face_landmarker_model):
    """One MediaPipe face landmarker in image mode (the official per-frame detection) for the whole run."""
    from fye_core.landmarks import FaceLandmarkDetector

    with FaceLandmarkDetector(mode="image") as found:
        yield found


@pytest.fixture(scope="session")
def tiny():
    """The tiny seeded official networks of golden/models, loaded by our loader (fp32)."""
    from models_fixtures import load_tiny_models

    return load_tiny_models()


@pytest.fixture(scope="session")
def golden_tensors():
    """golden/models/fixtures.safetensors: the official inputs and outputs on the tiny networks."""
    from models_fixtures import fixtures

    return fixtures()


def golden_track(name: str) -> FaceTrack:
    """A golden portrait_* or driving_* fixture as a FaceTrack (float64, as the official code computes)."""
    data = golden(name)
    single = data["lmks"].ndim == 2

    def arr(key):
        value = data[key].astype(np.float64)
        return value[None] if single else value

    return FaceTrack(landmarks=arr("lmks"), mesh=arr("lmks3d"), transforms=arr("trans_mat"),
                     blendshapes=arr("bs"), detected=np.ones(len(arr("lmks")), bool),
                     width=int(data["width"]), height=int(data["height"]))


def write_official_template(path, video: str = "lp_d0"):
    """An official-style template: a pickled object array of per-frame dicts, as make_temple.ipynb saves."""
    data = golden(f"driving_{video}")
    faces = golden("constants")["mesh_faces_1based"]
    entries = [{"lmks": data["lmks"][i].astype(np.float64), "lmks3d": data["lmks3d"][i].astype(np.float64),
                "trans_mat": data["trans_mat"][i].astype(np.float64), "faces": faces, "bs": list(data["bs"][i]),
                "width": int(data["width"]), "height": int(data["height"])} for i in range(len(data["lmks"]))]
    np.save(path, np.array(entries, dtype=object), allow_pickle=True)
    return path
