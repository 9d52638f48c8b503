"""Driving templates: a face track saved for reuse. Ours is a pickle-free ``.npz``; the official
``make_temple`` ``.npy`` (a pickled object array of dicts) loads only with explicit consent. And a run's
retargeted motion, saved as plain arrays so that it can be checked and reused."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FYEInputError
from ..files import atomic_output
from .track import NUM_BLENDSHAPES, FaceTrack, Motion

TEMPLATE_FORMAT = "fye-face-track/1"
MOTION_FORMAT = "fye-motion/1"
TEMPLATE_SUFFIXES = (".npz", ".npy")  # ours, and the official make_temple pickle
_ARRAYS = ("landmarks", "mesh", "transforms", "blendshapes", "detected")


def save_template(track: FaceTrack, path: str | os.PathLike) -> Path:
    """Writes ``track`` as ``.npz`` (plain arrays only; loads with ``allow_pickle=False``)."""
    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, format=np.array(TEMPLATE_FORMAT), width=np.int32(track.width), height=np.int32(track.height),
            fps=np.float64(track.fps or 0.0), source=np.array(track.source),
            **{name: getattr(track, name) for name in _ARRAYS})
    return path


def _official_template(path: Path, allow_pickle: bool) -> FaceTrack:
    if not allow_pickle:
        raise FYEInputError(
            f"{path} is an official make_temple template: a pickled object array, and unpickling a file can run "
            "arbitrary code. Load it only if you trust its source, by allowing unpickling (CLI --allow-pickle, "
            "node option allow_pickle); then save it again in our .npz format")
    entries = np.load(path, allow_pickle=True)
    if entries.dtype != object or not all(isinstance(e, dict) for e in entries.ravel()):
        raise FYEInputError(f"{path} is not a make_temple template (expected an array of per-frame dicts)")
    entries = list(entries.ravel())
    try:
        return FaceTrack(
            landmarks=np.stack([np.asarray(e["lmks"], np.float64) for e in entries]),
            mesh=np.stack([np.asarray(e["lmks3d"], np.float64) for e in entries]),
            transforms=np.stack([np.asarray(e["trans_mat"], np.float64) for e in entries]),
            blendshapes=np.stack([np.asarray(e["bs"], np.float64).reshape(NUM_BLENDSHAPES) for e in entries]),
            detected=np.ones(len(entries), bool),
            width=int(entries[0]["width"]), height=int(entries[0]["height"]), source="official-template")
    except (KeyError, ValueError) as err:
        raise FYEInputError(f"{path} is not a complete make_temple template: {err}") from None


def load_template(path: str | os.PathLike, allow_pickle: bool = False) -> FaceTrack:
    """Loads our ``.npz`` template, or an official ``.npy`` when ``allow_pickle`` is given."""
    path = Path(path)
    if not path.is_file():
        raise FYEInputError(f"template not found: {path}")
    if path.suffix == ".npy":
        return _official_template(path, allow_pickle)
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name] for name in data.files}
    except (ValueError, OSError) as err:
        raise FYEInputError(f"cannot read the template {path}: {err}") from None
    if str(fields.get("format", "")) != TEMPLATE_FORMAT or not set(_ARRAYS) <= set(fields):
        raise FYEInputError(f"{path} is not an FYE template (expected the '{TEMPLATE_FORMAT}' .npz format)")
    return FaceTrack(**{name: fields[name] for name in _ARRAYS}, width=int(fields["width"]),
                     height=int(fields["height"]), fps=float(fields["fps"]) or None, source=str(fields["source"]))


def save_motion(motion: Motion, path: str | os.PathLike) -> Path:
    """Writes ``motion`` as ``.npz``: ``landmarks`` (N, 478, 2) and ``reference`` (478, 2) in portrait pixels,
    ``poses`` (N, 6), ``frame_index``, ``detected``, ``width``, ``height``, ``fps`` (plain arrays only)."""
    path = Path(path)
    extra = {name: getattr(motion, name) for name in ("reference", "poses", "blendshapes")
             if getattr(motion, name) is not None}
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, format=np.array(MOTION_FORMAT), landmarks=motion.points, width=np.int32(motion.width),
                            height=np.int32(motion.height), fps=np.float64(motion.fps or 0.0),
                            frame_index=motion.frame_index, detected=motion.detected, **extra)
    return path


def load_motion(path: str | os.PathLike) -> Motion:
    """Loads a motion saved by ``save_motion``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            fields = {name: data[name] for name in data.files}
    except (ValueError, OSError) as err:
        raise FYEInputError(f"cannot read the motion {path}: {err}") from None
    if str(fields.get("format", "")) != MOTION_FORMAT:
        raise FYEInputError(f"{path} is not an FYE motion (expected the '{MOTION_FORMAT}' .npz format)")
    return Motion(points=fields["landmarks"], width=int(fields["width"]), height=int(fields["height"]),
                  detected=fields["detected"], frame_index=fields["frame_index"], fps=float(fields["fps"]) or None,
                  **{name: fields.get(name) for name in ("reference", "poses", "blendshapes")})
