"""Face geometry: MediaPipe's face-geometry step, ported (screen landmarks -> metric mesh and pose), and the
2D similarity transform that aligns faces.

mediapipe 1.2 no longer returns the face-geometry mesh that Follow-Your-Emoji retargets, so we rebuild it
from the public landmarks and the canonical face model inside the ``.task`` bundle, following
``mediapipe/tasks/cc/vision/face_geometry/libs/{geometry_pipeline,procrustes_solver}.cc``
(TOP_LEFT_CORNER origin, perspective camera with a 63 degree vertical field of view, near 1, far 10000).
Everything is batched over frames and done in float64.
"""
from __future__ import annotations

import functools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VERTICAL_FOV_DEGREES = 63.0
NEAR = 1.0
FAR = 10000.0
NUM_MESH_LANDMARKS = 468
GEOMETRY_METADATA_NAME = "geometry_pipeline_metadata_landmarks.binarypb"


@dataclass(frozen=True)
class CanonicalFaceModel:
    vertices: np.ndarray  # (468, 3) cm
    uv: np.ndarray  # (468, 2)
    triangles: np.ndarray  # (898, 3) 0-based vertex ids
    procrustes_ids: np.ndarray  # (K,) landmark ids with a non-zero Procrustes weight
    procrustes_weights: np.ndarray  # (K,)
    input_source: int


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _protobuf_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """Decodes one protobuf message level into (field number, wire type, raw value) triples."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _repeated(fields, number: int, scalar: str) -> np.ndarray:
    """A repeated float ('f') or uint32 ('I') field, packed or not."""
    values = []
    for num, wire, raw in fields:
        if num != number:
            continue
        if scalar == "f":
            values.extend(np.frombuffer(raw, "<f4") if wire == 2 else struct.unpack("<f", raw))
        elif wire == 2:
            pos = 0
            while pos < len(raw):
                value, pos = _read_varint(raw, pos)
                values.append(value)
        else:
            values.append(raw)
    return np.asarray(values, np.float32 if scalar == "f" else np.int64)


def parse_geometry_metadata(data: bytes) -> CanonicalFaceModel:
    """Parses a ``GeometryPipelineMetadata`` proto (mesh, Procrustes basis, input source)."""
    top = _protobuf_fields(data)
    mesh = next(_protobuf_fields(raw) for num, _, raw in top if num == 1)
    vertex_buffer = _repeated(mesh, 3, "f").reshape(-1, 5)
    triangles = _repeated(mesh, 4, "I").reshape(-1, 3)
    ids, weights = [], []
    for num, _, raw in top:
        if num == 2:
            ref = _protobuf_fields(raw)
            ids.append(next((v for n, _, v in ref if n == 1), 0))
            weights.append(next((struct.unpack("<f", v)[0] for n, _, v in ref if n == 2), 0.0))
    source = next((v for num, _, v in top if num == 3), 0)
    return CanonicalFaceModel(
        vertices=vertex_buffer[:, :3].copy(),
        uv=vertex_buffer[:, 3:5].copy(),
        triangles=triangles,
        procrustes_ids=np.asarray(ids, np.int64),
        procrustes_weights=np.asarray(weights, np.float32),
        input_source=int(source),
    )


@functools.lru_cache(maxsize=4)
def load_canonical_face_model(task_path: str | Path) -> CanonicalFaceModel:
    """Reads the canonical face model from a FaceLandmarker ``.task`` bundle (a zip)."""
    with zipfile.ZipFile(task_path) as bundle:
        return parse_geometry_metadata(bundle.read(GEOMETRY_METADATA_NAME))


def frustum(width: int, height: int) -> tuple[float, float]:
    """Width and height of the camera frustum at the near plane."""
    height_at_near = 2.0 * NEAR * np.tan(0.5 * np.deg2rad(VERTICAL_FOV_DEGREES))
    return width * height_at_near / height, height_at_near


def solve_weighted_procrustes(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Similarity transform (N, 4, 4) taking ``source`` (K, 3) onto each ``target`` (N, K, 3).

    MediaPipe's weighted orthogonal Procrustes: rotation from the SVD of the weighted design matrix with
    reflections removed, scale from the trace ratio, translation from the weighted residual mean.
    """
    sqrt_w = np.sqrt(weights.astype(np.float64))
    total = np.sum(sqrt_w * sqrt_w)
    src_w = source.T * sqrt_w  # (3, K)
    tgt_w = np.swapaxes(target, 1, 2) * sqrt_w  # (N, 3, K)
    center = (src_w * sqrt_w).sum(axis=1) / total
    src_c = src_w - center[:, None] * sqrt_w[None, :]
    u, _, vt = np.linalg.svd(tgt_w @ src_c.T)
    flip = np.linalg.det(u) * np.linalg.det(vt) < 0
    u[flip, :, 2] *= -1.0
    rotation = u @ vt
    scale = np.sum((rotation @ src_c) * tgt_w, axis=(1, 2)) / np.sum(src_c * src_w)
    residual = tgt_w - scale[:, None, None] * (rotation @ src_w)
    translation = residual @ sqrt_w / total
    transform = np.zeros((len(target), 4, 4))
    transform[:, :3, :3] = scale[:, None, None] * rotation
    transform[:, :3, 3] = translation
    transform[:, 3, 3] = 1.0
    return transform


def metric_face_geometry(
    landmarks: np.ndarray, width: int, height: int, model: CanonicalFaceModel
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical-space metric mesh and pose from normalised landmarks.

    ``landmarks``: (N, >=468, 3) MediaPipe normalised landmarks of images of ``width`` x ``height``.
    Returns ``mesh`` (N, 468, 3) in cm with the head pose removed and ``transform`` (N, 4, 4), the
    canonical -> camera similarity, so that ``transform @ [mesh, 1]`` are the metric landmarks.
    """
    screen = np.asarray(landmarks, np.float64)[:, :NUM_MESH_LANDMARKS].copy()
    w_n, h_n = frustum(width, height)
    screen[..., 0] = screen[..., 0] * w_n - 0.5 * w_n
    screen[..., 1] = (1.0 - screen[..., 1]) * h_n - 0.5 * h_n
    screen[..., 2] = screen[..., 2] * w_n
    depth_offset = screen[..., 2].mean(axis=1, keepdims=True)

    canonical = model.vertices.astype(np.float64)
    basis_src = canonical[model.procrustes_ids]
    weights = model.procrustes_weights

    def estimate_scale(points: np.ndarray) -> np.ndarray:
        transform = solve_weighted_procrustes(basis_src, points[:, model.procrustes_ids], weights)
        return np.linalg.norm(transform[:, :3, 0], axis=1)

    def unproject(scale: np.ndarray) -> np.ndarray:
        points = screen.copy()
        points[..., 2] = (points[..., 2] - depth_offset + NEAR) / scale[:, None]
        points[..., :2] *= points[..., 2:3] / NEAR
        points[..., 2] *= -1.0
        return points

    first = screen * np.array([1.0, 1.0, -1.0])
    first_scale = estimate_scale(first)
    second_scale = estimate_scale(unproject(first_scale))
    metric = unproject(first_scale * second_scale)

    transform = solve_weighted_procrustes(basis_src, metric[:, model.procrustes_ids], weights)
    linear = transform[:, :3, :3]
    mesh = np.linalg.solve(linear[:, None], (metric - transform[:, None, :3, 3])[..., None])[..., 0]
    return mesh, transform


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation taking ``source`` points (K, 2) closest to ``target`` in
    the least-squares sense (Umeyama 1991, reflections excluded), as insightface aligns faces."""
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    centred_s, centred_t = source - mean_s, target - mean_t
    u, singular, vt = np.linalg.svd(centred_t.T @ centred_s / len(source))
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / centred_s.var(axis=0).sum()
    return np.hstack([scale * rotation, (mean_t - scale * rotation @ mean_s)[:, None]])
