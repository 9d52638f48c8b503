"""Finished clips of a progressive run, kept beside the output so that an interrupted run resumes."""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import FYEInputError
from .files import atomic_output

RUN_FILE = "run.json"


class ClipFolder:
    """A ``ClipStore`` in ``folder``; ``run`` (JSON-able) names the run, and a folder of another run is
    refused rather than mixed in."""

    def __init__(self, folder: str | Path, run: dict):
        self.folder = Path(folder)
        self.run = json.dumps(run, sort_keys=True)
        marker = self.folder / RUN_FILE
        if self.folder.exists():
            if not marker.is_file() or marker.read_text() != self.run:
                raise FYEInputError(f"{self.folder} holds clips of another run (other inputs or settings); delete "
                                    "it, or rerun with the inputs and settings it was made with")
        else:
            self.folder.mkdir(parents=True)
            marker.write_text(self.run)

    def _path(self, frames: Sequence[int]) -> Path:
        digest = hashlib.sha1(np.asarray(frames, dtype=np.int64).tobytes()).hexdigest()[:16]
        return self.folder / f"clip-{frames[0]:06d}-{frames[-1]:06d}-{digest}.safetensors"

    def get(self, frames: Sequence[int]) -> torch.Tensor | None:
        path = self._path(frames)
        return load_file(str(path))["latents"] if path.is_file() else None

    def put(self, frames: Sequence[int], latents: torch.Tensor) -> None:
        with atomic_output(self._path(frames)) as tmp:
            save_file({"latents": latents.detach().cpu().contiguous()}, str(tmp))

    def __len__(self) -> int:
        return len(list(self.folder.glob("clip-*.safetensors")))

    def remove(self) -> None:
        shutil.rmtree(self.folder)

