"""Identity similarity: the cosine similarity of ArcFace embeddings (a user-supplied ONNX model, run by
onnxruntime) of the reference face and of each generated frame's face, both aligned by their five points."""
from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np

from ..landmarks import five_points, similarity_transform
from .weights import find_weights, require_module

ARCFACE_NAMES = ("arcface.onnx", "w600k_r50.onnx", "glintr100.onnx")
ARCFACE_SIZE = 112
# insightface's ``arcface_dst``: the eye on the image's left, the other eye, nose tip, mouth corners, at 112x112
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]])

Embedder = Callable[[np.ndarray], np.ndarray]  # aligned faces (K, 112, 112, 3) uint8 -> embeddings (K, D)


def aligned_face(image: np.ndarray, landmarks_px: np.ndarray) -> np.ndarray:
    """The 112x112 ArcFace crop of ``image`` for face landmarks (478, 2) in its pixels."""
    matrix = similarity_transform(five_points(landmarks_px), ARCFACE_TEMPLATE)
    return cv2.warpAffine(image, matrix, (ARCFACE_SIZE, ARCFACE_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)


def load_arcface(path: str | os.PathLike | None = None) -> Embedder:
    """An ArcFace ONNX model (insightface input: RGB, (x - 127.5) / 127.5, NCHW) as an ``Embedder``;
    ``MetricUnavailable`` without the model file or onnxruntime."""
    model = find_weights(path, ARCFACE_NAMES, "--arcface-onnx", "ArcFace ONNX model for identity similarity")
    ort = require_module("onnxruntime", "pip install onnxruntime")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def embed(faces: np.ndarray) -> np.ndarray:
        batch = ((faces.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
        return np.concatenate([session.run(None, {input_name: face[None]})[0] for face in batch])

    return embed


def identity_similarity(embed: Embedder, reference_face: np.ndarray, faces: np.ndarray) -> float:
    """The mean cosine similarity of each aligned face (K, 112, 112, 3) to the aligned reference face."""
    vectors = embed(np.concatenate([reference_face[None], faces]))
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return float(np.mean(vectors[1:] @ vectors[0]))
