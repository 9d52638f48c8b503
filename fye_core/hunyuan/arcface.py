"""The identity embedding HunyuanPortrait's ID adapters take: Arc2Face's ``arcface.onnx``, run by onnxruntime.

Both are optional: without the file (or without onnxruntime) the released code's ``use_arcface=False`` path
runs, a zero embedding, and the caller says so.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import FYEInputError

ARCFACE_FILE = "arcface.onnx"
ARCFACE_SOURCE = "arcface.onnx of HF FoivosPar/Arc2Face"
INSTALL_HINT = "pip install 'follow-your-emoji[arcface]' (onnxruntime; onnxruntime-gpu works too)"
NO_IDENTITY = (f"no {ARCFACE_FILE} beside the HunyuanPortrait weights: the identity adapters get no ArcFace "
               f"embedding (the released code's use_arcface=False path). For the official identity "
               f"conditioning put {ARCFACE_SOURCE} there and {INSTALL_HINT}")


def arcface_file(folder: str | os.PathLike) -> Path | None:
    """``arcface.onnx`` in a models folder (the official ``pretrained_weights`` layout), or None."""
    path = Path(folder) / ARCFACE_FILE
    return path if path.is_file() else None


class ArcFace:
    """An ArcFace ONNX model called as HunyuanPortrait calls it: the aligned 112 x 112 face as RGB in [0, 1]
    with no mean or std (what the adapters were trained with, unlike insightface's usual input), the output
    L2-normalised."""

    def __init__(self, path: str | os.PathLike):
        try:
            import onnxruntime
        except ImportError:
            raise FYEInputError(f"{path} needs onnxruntime: {INSTALL_HINT}; or remove the file to run without "
                                "the identity embedding") from None
        providers = [name for name in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if name in onnxruntime.get_available_providers()]
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, aligned: np.ndarray) -> torch.Tensor:
        """The embedding (1, 512) of an aligned face (112, 112, 3) float in [0, 1] (``preprocess.arcface_input``)."""
        pixels = np.ascontiguousarray(aligned.transpose(2, 0, 1)[None], dtype=np.float32)
        embedding = torch.from_numpy(self.session.run(None, {self.input_name: pixels})[0]).float()
        return embedding / embedding.norm(dim=1, keepdim=True)
