"""How much of the driving performance reaches the portrait: expression and head-pose strengths, relative
motion and the landmark filter. The defaults are the official transfer, bit for bit."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..errors import FYEInputError
from .filters import ONE_EURO_BETA, ONE_EURO_MIN_CUTOFF

RELATIVE_MODES = ("off", "first", "neutral")  # or a driving frame number
FILTERS = ("none", "mean", "one-euro")
STRENGTHS = ("expression", "brows", "eyelids", "pupils", "mouth", "rotation", "translation")
MAX_STRENGTH = 5.0
# One line per control, for the CLI help, the node tooltips and the README.
CONTROL_HELP = {
    "expression": "expression strength, all regions: 0 keeps the portrait's own expression, 1 the official "
                  "transfer, above 1 exaggerates",
    "brows": "brows strength (times the expression strength)",
    "eyelids": "eyelids strength: blinks and eye opening (times the expression strength)",
    "pupils": "pupils strength: gaze (times the expression strength)",
    "mouth": "mouth strength: lips, jaw and cheeks (times the expression strength)",
    "rotation": "head rotation strength: 0 keeps the portrait's head rotation, 1 follows the driving video",
    "translation": "head position and scale strength: 0 keeps the portrait's place and size in the frame",
    "relative": "off: the official transfer (driving head rotation as is, expression from the driving video's "
                "most neutral frame); first, neutral or a frame number N: expression, pose and gaze as "
                "changes from that driving frame, applied to the portrait's own face",
    "filter": "mean: the official centred average of head poses over --smooth frames (1 = off); one-euro: a "
              "speed-adaptive filter on the landmarks (steady still faces, fast motion not lagged); none",
    "min_cutoff": "one-euro: cutoff in Hz of a still face; lower removes more jitter",
    "beta": "one-euro: how fast the cutoff rises with speed; higher lags less on fast motion",
}


@dataclass(frozen=True)
class MotionControls:
    """Strengths scale the driving motion: expression offsets per region in canonical face space (the overall
    strength times the region's), head rotation and translation as changes from the portrait's pose.
    ``relative``: "off", "first", "neutral" or a driving frame number. ``filter``: "mean" averages head
    poses over ``smooth_window`` frames (the official option), "one-euro" filters the landmarks."""

    expression: float = 1.0
    brows: float = 1.0
    eyelids: float = 1.0
    pupils: float = 1.0
    mouth: float = 1.0
    rotation: float = 1.0
    translation: float = 1.0
    relative: str | int = "off"
    filter: str = "mean"
    smooth_window: int = 1
    min_cutoff: float = ONE_EURO_MIN_CUTOFF
    beta: float = ONE_EURO_BETA

    def __post_init__(self):
        for name in STRENGTHS:
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= MAX_STRENGTH):
                raise FYEInputError(f"{name} strength must be between 0 and {MAX_STRENGTH:g}, got {value}")
        if isinstance(self.relative, str) and self.relative not in RELATIVE_MODES:
            raise FYEInputError(f"relative motion must be one of {', '.join(RELATIVE_MODES)} or a driving frame "
                                f"number, got {self.relative!r}")
        if not isinstance(self.relative, str) and self.relative < 0:
            raise FYEInputError(f"the relative motion frame must be 0 or more, got {self.relative}")
        if self.filter not in FILTERS:
            raise FYEInputError(f"filter must be one of {', '.join(FILTERS)}, got {self.filter!r}")
        if self.smooth_window < 1:
            raise FYEInputError(f"the smoothing window must be 1 or more frames, got {self.smooth_window}")
        if self.smooth_window > 1 and self.filter != "mean":
            raise FYEInputError(f"a smoothing window of {self.smooth_window} frames is the mean filter's; with "
                                f"filter {self.filter} set the window to 1")
        if not (self.min_cutoff > 0 and self.beta >= 0):
            raise FYEInputError(f"one-euro needs a cutoff above 0 Hz and a beta of 0 or more, got "
                                f"{self.min_cutoff} and {self.beta}")

    def region(self, name: str) -> float:
        """The strength of one expression region: the overall strength times the region's."""
        return self.expression * getattr(self, name)

    def changed(self) -> list[str]:
        """``name=value`` of every control away from the official default, for reports."""
        default = MotionControls()
        return [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)]


def parse_relative(text: str) -> str | int:
    """``off``, ``first``, ``neutral`` or a frame number (the command line's ``--relative``)."""
    if text in RELATIVE_MODES:
        return text
    try:
        return int(text)
    except ValueError:
        raise FYEInputError(f"--relative must be one of {', '.join(RELATIVE_MODES)} or a driving frame number, "
                            f"got {text!r}") from None
