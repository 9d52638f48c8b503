"""Finding the networks that optional metrics need. Nothing is downloaded: a network is used only when the
user gives its file, or has put it in the cache, and its runtime package is importable. Otherwise the metric
is reported as unavailable, with the reason, never estimated some other way."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from ..errors import FYEInputError
from ..landmarks.model_file import default_cache_dir


class MetricUnavailable(Exception):
    """A metric that cannot be computed here; the message says why and how to make it available."""


def eval_cache_dir() -> Path:
    """Where ``fye eval`` looks for metric networks not given on the command line: ``$FYE_CACHE/eval``."""
    return default_cache_dir() / "eval"


def find_weights(path: str | os.PathLike | None, names: tuple[str, ...], option: str, what: str,
                 folders: tuple[Path, ...] = ()) -> Path:
    """``path`` when given (a missing file is an input error), else the first of ``names`` in the eval cache or
    ``folders``; without one, ``MetricUnavailable`` naming the option and the places looked in."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FYEInputError(f"{what} not found at {path} (from {option})")
        return path
    places = (eval_cache_dir(), *folders)
    for folder in places:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise MetricUnavailable(f"no {what}: pass {option}, or put {names[0]} in {places[0]}")


def require_module(name: str, install: str) -> ModuleType:
    """The runtime package a metric needs, or ``MetricUnavailable`` saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MetricUnavailable(f"{name} is not installed ({install})") from None

