"""Finding the MediaPipe FaceLandmarker bundle: explicit path, environment, model folders, download."""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from ..errors import FYEInputError
from ..files import atomic_output

FACE_LANDMARKER_FILENAME = "face_landmarker_v2_with_blendshapes.task"
FACE_LANDMARKER_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
)
FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
ENV_VAR = "FYE_FACE_LANDMARKER"


def default_cache_dir() -> Path:
    base = os.environ.get("FYE_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "fye")
    return Path(base).expanduser()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_face_landmarker(target: Path) -> Path:
    """Downloads the bundle to ``target``, keeping it only if its sha256 matches."""
    with atomic_output(target) as tmp:
        urllib.request.urlretrieve(FACE_LANDMARKER_URL, tmp)
        digest = sha256_of(tmp)
        if digest != FACE_LANDMARKER_SHA256:
            raise FYEInputError(f"the downloaded face landmarker has sha256 {digest}, expected "
                                f"{FACE_LANDMARKER_SHA256}; it was discarded")
    return target


def resolve_face_landmarker(path: str | os.PathLike | None = None, search_dirs=(), download: bool = True,
                            download_dir: str | os.PathLike | None = None) -> Path:
    """The ``.task`` file to use: ``path``, else ``$FYE_FACE_LANDMARKER``, else ``face_landmarker*.task`` in
    ``search_dirs`` (ComfyUI passes its ``fye`` model folders) or the cache, else a checked download into
    ``download_dir`` (default: the cache). Offline, the error says where to put the file."""
    explicit = path or os.environ.get(ENV_VAR)
    if explicit:
        explicit = Path(explicit).expanduser()
        if not explicit.is_file():
            origin = "path" if path else f"${ENV_VAR}"
            raise FYEInputError(f"face landmarker model not found at {explicit} (from {origin})")
        return explicit
    cache = default_cache_dir()
    for folder in [*map(Path, search_dirs), cache]:
        for name in (FACE_LANDMARKER_FILENAME, "face_landmarker.task"):
            if (folder / name).is_file():
                return folder / name
    if download:
        try:
            return download_face_landmarker(Path(download_dir or cache) / FACE_LANDMARKER_FILENAME)
        except OSError as err:
            reason = f"download failed ({err})"
    else:
        reason = "downloads are off"
    places = ", ".join(str(p) for p in [*map(Path, search_dirs), cache])
    raise FYEInputError(
        f"the MediaPipe face landmarker model is missing and {reason}. Get {FACE_LANDMARKER_URL} "
        f"(sha256 {FACE_LANDMARKER_SHA256}) and save it as {FACE_LANDMARKER_FILENAME} in one of: {places}; "
        f"or point ${ENV_VAR} at it")
