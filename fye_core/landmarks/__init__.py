"""Expression-aware landmarks: detection, metric geometry, motion alignment, rendering, templates."""
from .align import align_motion
from .detect import DETECTION_MODES, FaceLandmarkDetector, detect_face_track
from .geometry import load_canonical_face_model, metric_face_geometry
from .model_file import resolve_face_landmarker
from .pipeline import NO_FACE_HELP, describe_missing, describe_reference, detect_image, detect_reference
from .placement import FacePlacement, fit_face_track, five_points, mask_box, parse_face_box, parse_face_points
from .render import render_expression_landmarks
from .templates import TEMPLATE_SUFFIXES, load_template, save_template
from .track import FILL_MODES, FaceTrack, Motion, fill_missing

__all__ = [
    "DETECTION_MODES", "FILL_MODES", "NO_FACE_HELP", "TEMPLATE_SUFFIXES", "FaceLandmarkDetector", "FacePlacement",
    "FaceTrack", "Motion", "align_motion", "describe_missing", "describe_reference", "detect_face_track",
    "detect_image", "detect_reference", "fill_missing", "fit_face_track", "five_points", "load_canonical_face_model",
    "load_template", "mask_box", "metric_face_geometry", "parse_face_box", "parse_face_points",
    "render_expression_landmarks", "resolve_face_landmarker", "save_template",
]
