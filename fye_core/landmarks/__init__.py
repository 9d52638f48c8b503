"""Expression-aware landmarks: detection, metric geometry, motion alignment and controls, filters, rendering,
templates."""
from .align import align_motion, expressiveness, portrait_points
from .controls import CONTROL_HELP, FILTERS, MAX_STRENGTH, RELATIVE_MODES, MotionControls, parse_relative
from .detect import DETECTION_MODES, FaceLandmarkDetector, detect_face_track
from .filters import ONE_EURO_BETA, ONE_EURO_MIN_CUTOFF, one_euro, smooth_poses
from .geometry import load_canonical_face_model, metric_face_geometry, similarity_transform
from .model_file import resolve_face_landmarker
from .pipeline import NO_FACE_HELP, describe_missing, describe_reference, detect_image, detect_reference
from .placement import FacePlacement, fit_face_track, five_points, mask_box, parse_face_box, parse_face_points
from .regions import EXPRESSION_REGIONS
from .render import render_expression_landmarks
from .templates import TEMPLATE_SUFFIXES, load_motion, load_template, save_motion, save_template
from .track import FILL_MODES, FaceTrack, Motion, fill_missing

__all__ = [
    "CONTROL_HELP", "DETECTION_MODES", "EXPRESSION_REGIONS", "FILL_MODES", "FILTERS", "MAX_STRENGTH", "NO_FACE_HELP",
    "ONE_EURO_BETA", "ONE_EURO_MIN_CUTOFF", "RELATIVE_MODES", "TEMPLATE_SUFFIXES", "FaceLandmarkDetector",
    "FacePlacement", "FaceTrack", "Motion",
    "MotionControls", "align_motion", "describe_missing", "describe_reference", "detect_face_track", "detect_image",
    "detect_reference", "expressiveness", "fill_missing", "fit_face_track", "five_points",
    "load_canonical_face_model", "load_motion", "load_template", "mask_box", "metric_face_geometry", "one_euro",
    "parse_face_box", "parse_face_points", "parse_relative", "portrait_points", "render_expression_landmarks",
    "resolve_face_landmarker", "save_motion", "save_template", "similarity_transform", "smooth_poses",
]
