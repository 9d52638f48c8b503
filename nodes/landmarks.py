"""Landmark nodes: reference preparation, face landmarks, motion alignment, rendering, templates."""
import os
from dataclasses import replace

import folder_paths
import numpy as np
from comfy_api.v0_0_2 import io

from ..fye_core.errors import FYEInputError
from ..fye_core.image import REFERENCE_MODES, images_to_uint8, prepare_reference
from ..fye_core.landmarks import (
    CONTROL_HELP,
    DETECTION_MODES,
    FILL_MODES,
    FILTERS,
    MAX_STRENGTH,
    ONE_EURO_BETA,
    ONE_EURO_MIN_CUTOFF,
    RELATIVE_MODES,
    TEMPLATE_SUFFIXES,
    FaceLandmarkDetector,
    FacePlacement,
    MotionControls,
    align_motion,
    describe_missing,
    describe_reference,
    detect_face_track,
    detect_image,
    detect_reference,
    load_template,
    mask_box,
    parse_face_points,
    render_expression_landmarks,
    save_template,
)
from .convert import FrameProgress, flags_to_mask, uint8_to_images
from .models import model_dirs

CATEGORY = "FollowYourEmoji/landmarks"
FaceTrackType = io.Custom("FYE_FACE_TRACK")
MotionType = io.Custom("FYE_MOTION")
FacePlacementType = io.Custom("FYE_FACE_PLACEMENT")
MotionControlsType = io.Custom("FYE_MOTION_CONTROLS")
RELATIVE_FRAME = "frame"


def face_detector(mode: str):
    return FaceLandmarkDetector(mode=mode, search_dirs=model_dirs(), download_dir=model_dirs()[0])


class PrepareReference(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_PrepareReference",
            display_name="FYE Prepare Reference",
            category=CATEGORY,
            description="Brings a portrait to the size the model works at: the official 512x512 letterbox, "
                        "or its own size cropped to a multiple of 8.",
            inputs=[
                io.Image.Input("image", tooltip="The portrait (one image or a batch)."),
                io.Combo.Input("mode", options=list(REFERENCE_MODES), default="letterbox",
                               tooltip="letterbox: fit inside size x size with black bars, as the official code "
                                       "(parity). keep: original pixels, each side cropped to a multiple of 8."),
                io.Int.Input("size", default=512, min=64, max=2048, step=8,
                             tooltip="Side of the square letterbox (ignored by 'keep')."),
            ],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, image, mode, size) -> io.NodeOutput:
        prepared = np.stack([prepare_reference(frame, mode, size) for frame in images_to_uint8(image)])
        return io.NodeOutput(uint8_to_images(prepared))


class FaceLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_FaceLandmarks",
            display_name="FYE Face Landmarks",
            category=CATEGORY,
            description="MediaPipe face landmarks, blendshapes and metric face geometry for every frame. "
                        "Frames without a face are filled from their neighbours and flagged in the mask.",
            inputs=[
                io.Image.Input("images", tooltip="A portrait or the frames of a driving video."),
                io.Combo.Input("detection", options=list(DETECTION_MODES), default="image",
                               tooltip="image: detect every frame on its own, as the official code (parity). "
                                       "video: MediaPipe tracking between frames (faster, smoother)."),
                io.Combo.Input("fill", options=list(FILL_MODES), default="hold",
                               tooltip="Frames without a face take the nearest detected frame (hold) or a "
                                       "blend of the detected frames around them (interpolate)."),
                io.Float.Input("fps", default=30.0, min=0.0, max=240.0, step=0.001,
                               tooltip="Frame rate of the frames, kept with the track (connect the video's fps)."),
            ],
            outputs=[
                FaceTrackType.Output(display_name="face_track"),
                io.Image.Output(display_name="preview", tooltip="The landmarks drawn over the frames."),
                io.Mask.Output(display_name="detected",
                               tooltip="1 on frames where a face was found, 0 on filled ones."),
                io.String.Output(display_name="report", tooltip="Which frames had no face."),
            ],
        )

    @classmethod
    def execute(cls, images, detection, fill, fps) -> io.NodeOutput:
        frames = images_to_uint8(images)
        height, width = frames.shape[1:3]
        progress = FrameProgress(len(frames))

        def on_frame(done, total, frame, landmarks):
            preview = None
            if landmarks is not None:
                def preview():
                    return render_expression_landmarks(landmarks, width, height, normalized=True, background=frame)
            progress(done, total, preview)

        with face_detector(detection) as detector:
            if len(frames) == 1:  # a portrait: look harder for a small face
                track = replace(detect_image(frames[0], detector), fps=fps or None)
                report = describe_reference(track) if track.detected[0] else describe_missing(track)
                progress(1, 1)
            else:
                track = detect_face_track(frames, detector=detector, fill=fill, fps=fps or None, total=len(frames),
                                          progress=on_frame)
                report = describe_missing(track)
        preview = render_expression_landmarks(track.landmarks, width, height, normalized=True, background=frames)
        return io.NodeOutput(track, uint8_to_images(preview), flags_to_mask(track.detected, height, width), report)


class PlaceFace(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_PlaceFace",
            display_name="FYE Place Face",
            category=CATEGORY,
            description="For portraits MediaPipe cannot find (cats, llamas, cartoon animals): fits the canonical "
                        "face mesh to a face box or five face points and gives the reference face track. Check "
                        "the preview and adjust.",
            inputs=[
                io.Image.Input("image", tooltip="The portrait (the first image of a batch); positions are in its "
                                                "pixels."),
                io.Int.Input("x", default=0, min=0, max=16384, tooltip="Left of the face box."),
                io.Int.Input("y", default=0, min=0, max=16384, tooltip="Top of the face box."),
                io.Int.Input("width", default=0, min=0, max=16384, tooltip="Width of the face box (0: no box)."),
                io.Int.Input("height", default=0, min=0, max=16384, tooltip="Height of the face box (0: no box)."),
                io.String.Input("face_points", default="", multiline=True,
                                tooltip="Optional, wins over the box: five [x, y] points as JSON, "
                                        "[[x,y],[x,y],[x,y],[x,y],[x,y]]: eye on the image's left, eye on the "
                                        "image's right, nose tip, mouth corner left, mouth corner right."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional, instead of x/y/width/height: a mask painted over the face (e.g. "
                                      "in Load Image's mask editor); its bounding box is the face box. An "
                                      "empty mask is ignored."),
            ],
            outputs=[
                FaceTrackType.Output(display_name="face_track", tooltip="The fitted reference face track."),
                FacePlacementType.Output(display_name="placement",
                                         tooltip="The placement, for FYE Face Crop on the same image."),
                io.Image.Output(display_name="preview", tooltip="The fitted face mesh over the portrait."),
                io.String.Output(display_name="report"),
            ],
        )

    @classmethod
    def execute(cls, image, x, y, width, height, face_points, mask=None) -> io.NodeOutput:
        portrait = images_to_uint8(image[:1])[0]
        box = (x, y, width, height) if width > 0 and height > 0 else None
        if mask is not None and (mask[0] > 0.5).any():  # Load Image gives an empty mask when none is painted
            box = mask_box(mask[0].cpu().numpy(), portrait.shape[:2], "FYE Place Face")
        points = parse_face_points(face_points) if face_points.strip() else None
        if box is None and points is None:
            raise FYEInputError("FYE Place Face needs a face box (width and height above 0, or a mask painted over "
                                "the face) or five face points")
        placement = FacePlacement(box, points)
        with face_detector("image") as detector:
            track = detect_reference(portrait, name="the image", detector=detector, placement=placement)
        preview = render_expression_landmarks(track.landmarks, portrait.shape[1], portrait.shape[0], normalized=True,
                                              background=portrait[None])
        return io.NodeOutput(track, placement, uint8_to_images(preview),
                             f"{describe_reference(track)} {placement.describe()}")


def _sentence(help_line: str) -> str:
    return help_line[0].upper() + help_line[1:] + "."


def _strength(name: str, help_line: str) -> io.Float.Input:
    return io.Float.Input(name, default=1.0, min=0.0, max=MAX_STRENGTH, step=0.05, tooltip=_sentence(help_line))


class MotionControlsNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_MotionControls",
            display_name="FYE Motion Controls",
            category=CATEGORY,
            description="How much of the driving performance reaches the portrait: expression strength overall and "
                        "per region, head rotation and position strengths, relative motion and the landmark "
                        "filter. Feed FYE Align Motion and tune on its landmark preview before sampling; the "
                        "defaults are the official transfer.",
            inputs=[
                _strength("expression_strength", CONTROL_HELP["expression"]),
                _strength("brows", CONTROL_HELP["brows"]),
                _strength("eyelids", CONTROL_HELP["eyelids"]),
                _strength("pupils", CONTROL_HELP["pupils"]),
                _strength("mouth", CONTROL_HELP["mouth"]),
                _strength("rotation_strength", CONTROL_HELP["rotation"]),
                _strength("translation_strength", CONTROL_HELP["translation"]),
                io.Combo.Input("relative", options=[*RELATIVE_MODES, RELATIVE_FRAME], default="off",
                               tooltip=_sentence(CONTROL_HELP["relative"].replace("a frame number N",
                                                                                  "'frame' (relative_frame)"))),
                io.Int.Input("relative_frame", default=0, min=0, max=100000,
                             tooltip="With relative 'frame': the driving frame the motion starts from (0 = first)."),
                io.Combo.Input("filter", options=list(FILTERS), default="mean",
                               tooltip=_sentence(CONTROL_HELP["filter"].replace("--smooth",
                                                                                "FYE Align Motion's smooth_window"))),
                io.Float.Input("min_cutoff", default=ONE_EURO_MIN_CUTOFF, min=0.01, max=30.0, step=0.05,
                               tooltip=_sentence(CONTROL_HELP["min_cutoff"])),
                io.Float.Input("beta", default=ONE_EURO_BETA, min=0.0, max=100.0, step=0.5,
                               tooltip=_sentence(CONTROL_HELP["beta"])),
            ],
            outputs=[MotionControlsType.Output(display_name="controls")],
        )

    @classmethod
    def execute(cls, expression_strength, brows, eyelids, pupils, mouth, rotation_strength, translation_strength,
                relative, relative_frame, filter, min_cutoff, beta) -> io.NodeOutput:
        return io.NodeOutput(MotionControls(
            expression=expression_strength, brows=brows, eyelids=eyelids, pupils=pupils, mouth=mouth,
            rotation=rotation_strength, translation=translation_strength,
            relative=relative_frame if relative == RELATIVE_FRAME else relative, filter=filter,
            min_cutoff=min_cutoff, beta=beta))


class AlignMotion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_AlignMotion",
            display_name="FYE Align Motion",
            category=CATEGORY,
            description="Retargets the driving expressions, pupils and head motion onto the reference face "
                        "and renders the expression-aware landmark frames that condition the model.",
            inputs=[
                FaceTrackType.Input("reference_track", tooltip="Face track of the prepared reference image."),
                FaceTrackType.Input("driving_track", tooltip="Face track of the driving frames, or a loaded template."),
                io.Int.Input("smooth_window", default=1, min=1, max=31,
                             tooltip="Average the head pose over this many frames; 1 is off (official)."),
                io.Boolean.Input("drop_first_frame", default=False,
                                 tooltip="Drop the first driving frame as the official code does "
                                         "(N-1 frames). Off: one motion frame per driving frame."),
                MotionControlsType.Input("controls", optional=True,
                                         tooltip="Optional FYE Motion Controls; without them, the official transfer."),
            ],
            outputs=[
                MotionType.Output(display_name="motion"),
                io.Image.Output(display_name="landmark_frames", tooltip="Expression-aware landmark images."),
            ],
        )

    @classmethod
    def execute(cls, reference_track, driving_track, smooth_window, drop_first_frame,
                controls=None) -> io.NodeOutput:
        controls = replace(controls or MotionControls(), smooth_window=smooth_window)
        motion = align_motion(reference_track, driving_track, controls, drop_first_frame=drop_first_frame)
        return io.NodeOutput(motion, uint8_to_images(_render(motion)))


def _render(motion, background=None) -> np.ndarray:
    progress = FrameProgress(len(motion))
    frames = []
    for start in range(0, len(motion), 16):
        stop = min(start + 16, len(motion))
        frames.append(render_expression_landmarks(
            motion.points[start:stop], motion.width, motion.height,
            background=None if background is None else background[start:stop]))
        progress(stop, len(motion))
    return np.concatenate(frames)


class RenderLandmarks(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_RenderLandmarks",
            display_name="FYE Render Landmarks",
            category=CATEGORY,
            description="Draws aligned motion as expression-aware landmark images, on black or over frames.",
            inputs=[
                MotionType.Input("motion", tooltip="Aligned motion from FYE Align Motion."),
                io.Image.Input("background", optional=True,
                               tooltip="Frames to draw over, for checking (same size as the motion; one image "
                                       "is used for every frame)."),
            ],
            outputs=[io.Image.Output(display_name="images")],
        )

    @classmethod
    def execute(cls, motion, background=None) -> io.NodeOutput:
        if background is not None:
            background = images_to_uint8(background)
            if background.shape[1:3] != (motion.height, motion.width):
                raise FYEInputError(
                    f"background is {background.shape[2]}x{background.shape[1]} but the motion is "
                    f"{motion.width}x{motion.height}; use the prepared reference image or resize the frames")
            if len(background) not in (1, len(motion)):
                raise FYEInputError(f"background has {len(background)} frames, the motion {len(motion)}; "
                                    "give one image or one per motion frame")
            background = np.broadcast_to(background, (len(motion), *background.shape[1:]))
        return io.NodeOutput(uint8_to_images(_render(motion, background)))


class SaveTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FYE_SaveTemplate",
            display_name="FYE Save Template",
            category=CATEGORY,
            description="Saves a driving face track as a template (.npz, no pickle) in the output folder, "
                        "to animate other portraits without detecting the video again.",
            inputs=[
                FaceTrackType.Input("face_track", tooltip="Face track of the driving frames (FYE Face Landmarks)."),
                io.String.Input("filename_prefix", default="fye/template",
                                tooltip="Path under the output folder, without extension."),
            ],
            outputs=[io.String.Output(display_name="path")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, face_track, filename_prefix) -> io.NodeOutput:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory())
        path = save_template(face_track, os.path.join(folder, f"{name}_{counter:05}.npz"))
        return io.NodeOutput(str(path))


class LoadTemplate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        input_dir = folder_paths.get_input_directory()
        files = sorted(
            os.path.relpath(os.path.join(root, f), input_dir)
            for root, _, names in os.walk(input_dir) for f in names if f.endswith(TEMPLATE_SUFFIXES))
        return io.Schema(
            node_id="FYE_LoadTemplate",
            display_name="FYE Load Template",
            category=CATEGORY,
            description="Loads a driving template from the input folder: ours (.npz) or an official "
                        "make_temple .npy (pickled: only with allow_pickle, for files you trust).",
            inputs=[
                io.Combo.Input("template", options=files, tooltip="A .npz or .npy file in the input folder."),
                io.Boolean.Input("allow_pickle", default=False,
                                 tooltip="Official .npy templates are pickles, which can run code when loaded. "
                                         "Enable only for files from a source you trust."),
            ],
            outputs=[FaceTrackType.Output(display_name="face_track")],
        )

    @classmethod
    def execute(cls, template, allow_pickle) -> io.NodeOutput:
        return io.NodeOutput(load_template(folder_paths.get_annotated_filepath(template), allow_pickle=allow_pickle))


LANDMARK_NODES = (PrepareReference, FaceLandmarks, PlaceFace, MotionControlsNode, AlignMotion, RenderLandmarks,
                  SaveTemplate, LoadTemplate)
