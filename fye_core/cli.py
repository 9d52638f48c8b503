"""``fye``: the headless command line."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .animate import LONG_VIDEO_MODES, OFFICIAL_SEED, AnimationOptions
from .crop import FaceCrop, crop_face, detect_face_crop, paste_back, reference_crop
from .errors import FYEInputError
from .eval.cli import add_eval_parser
from .files import atomic_output
from .hunyuan.config import INFERENCE
from .image import REFERENCE_MODES, images_to_uint8, load_image, prepare_reference
from .landmarks import (
    CONTROL_HELP,
    DETECTION_MODES,
    FILL_MODES,
    FILTERS,
    ONE_EURO_BETA,
    ONE_EURO_MIN_CUTOFF,
    TEMPLATE_SUFFIXES,
    FaceLandmarkDetector,
    FacePlacement,
    FaceTrack,
    Motion,
    MotionControls,
    align_motion,
    describe_missing,
    describe_reference,
    detect_face_track,
    detect_reference,
    load_template,
    parse_face_box,
    parse_face_points,
    parse_relative,
    render_expression_landmarks,
    save_motion,
    save_template,
)
from .sampling import FUSE_METHODS, KEYFRAME_CHOICES, PRESETS, SOLVERS, describe_presets, describe_speed
from .training.cli import add_train_parser
from .video import iter_video_frames, probe_video, write_video

RENDER_CHUNK = 32
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
BACKENDS = ("fye", "hunyuan-portrait")
# animate options that only one backend has (argparse destinations); the other refuses them
FYE_ONLY = ("reference_mode", "fill", "smooth", "drop_first_frame", "student_lora", "expression_strength", "brows",
            "eyelids", "pupils", "mouth", "rotation_strength", "translation_strength", "relative", "filter",
            "min_cutoff", "beta", "allow_pickle", "crop_margin", "feather", "cfg", "long_video", "keyframes", "fuse",
            "preset", "solver", "fp8_weights")
HUNYUAN_ONLY = ("appearance_cfg", "motion_cfg", "size", "shift_offset", "pad_frames", "yolo_face", "allow_torchscript")
# animate options whose default depends on the backend: fye's (official FYE) and hunyuan-portrait's (released config)
_FYE_DEFAULTS = AnimationOptions()
BACKEND_DEFAULTS = {"steps": (None, INFERENCE.num_inference_steps),  # fye: the preset's
                    "seed": (_FYE_DEFAULTS.seed, INFERENCE.seed),
                    "context_frames": (_FYE_DEFAULTS.context_frames, INFERENCE.frames_per_window),
                    "context_overlap": (_FYE_DEFAULTS.context_overlap, INFERENCE.overlap)}


def _add_motion_arguments(p) -> None:
    """The portrait, driving and landmark options shared by `landmarks` and `animate`."""
    p.add_argument("--portrait", required=True, type=Path, help="reference image (PNG, JPEG, ...)")
    p.add_argument("--driving", required=True, type=Path,
                   help="driving video, or a saved template (.npz; an official .npy needs --allow-pickle)")
    p.add_argument("--reference-mode", choices=REFERENCE_MODES, default="letterbox",
                   help="letterbox: the official 512x512 fit (default); keep: original size cropped to a multiple of 8")
    p.add_argument("--detection", choices=DETECTION_MODES, default="image",
                   help="image: detect every frame independently, as the official (default); video: MediaPipe tracking")
    p.add_argument("--fill", choices=FILL_MODES, default="hold",
                   help="what frames without a face get: the nearest detected frame, or interpolation")
    p.add_argument("--smooth", type=int, default=1, metavar="N",
                   help="--filter mean: average head poses over N frames (1 = off, the default)")
    p.add_argument("--drop-first-frame", action="store_true",
                   help="drop the first driving frame as the official code does (N-1 output frames)")
    p.add_argument("--face-box", default=None, metavar="X,Y,W,H",
                   help="where the face is in the portrait (pixels), for faces MediaPipe misses (animals, cartoons): "
                        "the canonical face is fitted into the box instead of detected")
    p.add_argument("--face-points", default=None, metavar="JSON",
                   help="five points of the face in the portrait as [[x,y],...]: eye on the image's left, eye on the "
                        "image's right, nose tip, mouth corner left, mouth corner right (wins over --face-box)")
    p.add_argument("--face-landmarker", type=Path, default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow unpickling an official .npy template (only for files you trust)")
    controls = p.add_argument_group(
        "motion controls",
        "how much of the driving performance reaches the portrait; the defaults are the official transfer")
    controls.add_argument("--expression-strength", type=float, default=1.0, metavar="S",
                          help=CONTROL_HELP["expression"])
    for region in ("brows", "eyelids", "pupils", "mouth"):
        controls.add_argument(f"--{region}", type=float, default=1.0, metavar="S", help=CONTROL_HELP[region])
    controls.add_argument("--rotation-strength", type=float, default=1.0, metavar="S", help=CONTROL_HELP["rotation"])
    controls.add_argument("--translation-strength", type=float, default=1.0, metavar="S",
                          help=CONTROL_HELP["translation"])
    controls.add_argument("--relative", default="off", metavar="off|first|neutral|N",
                          help=CONTROL_HELP["relative"])
    controls.add_argument("--filter", choices=FILTERS, default="mean", help=CONTROL_HELP["filter"])
    controls.add_argument("--min-cutoff", type=float, default=ONE_EURO_MIN_CUTOFF, metavar="HZ",
                          help=CONTROL_HELP["min_cutoff"] + f" (default {ONE_EURO_MIN_CUTOFF:g})")
    controls.add_argument("--beta", type=float, default=ONE_EURO_BETA, help=CONTROL_HELP["beta"] +
                          f" (default {ONE_EURO_BETA:g})")


def motion_controls(args) -> MotionControls:
    """The ``MotionControls`` of the command line's motion-control options."""
    return MotionControls(expression=args.expression_strength, brows=args.brows, eyelids=args.eyelids,
                          pupils=args.pupils, mouth=args.mouth, rotation=args.rotation_strength,
                          translation=args.translation_strength, relative=parse_relative(args.relative),
                          filter=args.filter, smooth_window=args.smooth, min_cutoff=args.min_cutoff, beta=args.beta)


def _add_landmarks_parser(sub) -> None:
    p = sub.add_parser("landmarks", help="portrait + driving video -> aligned expression-landmark video",
                       description="Writes the driving motion retargeted onto the portrait as an expression-aware "
                                   "landmark video (one frame per driving frame) and the driving template beside it.")
    _add_motion_arguments(p)
    p.add_argument("--out", required=True, type=Path,
                   help="output .mp4; the retargeted landmarks go to OUT.motion.npz, the template to OUT.template.npz")
    p.add_argument("--no-template", action="store_true", help="do not write OUT.template.npz")
    p.set_defaults(run=run_landmarks)


def _add_animate_parser(sub) -> None:
    p = sub.add_parser("animate", help="portrait + driving video -> animated portrait video",
                       description="Animates the portrait with the driving video's expressions, pupils and head "
                                   "motion (Follow-Your-Emoji, or HunyuanPortrait with --backend "
                                   "hunyuan-portrait) and writes an mp4 at the driving video's fps.")
    p.add_argument("--backend", choices=BACKENDS, default="fye",
                   help="fye: Follow-Your-Emoji, landmark-driven (default); hunyuan-portrait: HunyuanPortrait, "
                        "implicit motion on Stable Video Diffusion (its own weights, see README)")
    _add_motion_arguments(p)
    p.add_argument("--models", required=True, type=Path,
                   help="folder with the FYE weights, sd-vae-ft-mse/ and image_encoder/; hunyuan-portrait: the "
                        "released hyportrait/*.pth, stable-video-diffusion-img2vid-xt/vae/ and optionally "
                        "arcface.onnx (see README)")
    p.add_argument("--out", required=True, type=Path, help="output .mp4")
    p.add_argument("--crf", type=int, default=16, help="H.264 quality: 0 lossless, 16 (default) near lossless")
    p.add_argument("--paste-back", action="store_true",
                   help="animate a face crop of the portrait at 512x512 and paste it back into the full-resolution "
                        "portrait (instead of --reference-mode); hunyuan-portrait always animates its official "
                        "face crop and writes that crop unless this is given")
    p.add_argument("--crop-margin", type=float, default=0.5,
                   help="--paste-back: space around the face on each side, as a fraction of its size")
    p.add_argument("--feather", type=int, default=16, help="--paste-back: width in pixels of the blended edge")
    p.add_argument("--preset", choices=tuple(PRESETS), default="official",
                   help=f"speed ({describe_presets()}; guidance on every step; default official); README has what "
                        "each costs; the options below override single settings")
    p.add_argument("--steps", type=int, default=None,
                   help=f"solver steps (official {PRESETS['official'].steps}; default the preset's); hunyuan-portrait: "
                        f"Euler steps (official {INFERENCE.num_inference_steps})")
    p.add_argument("--solver", choices=SOLVERS, default=None,
                   help="ddim (official), dpmpp_2m (DPM-Solver++ 2M), unipc, euler, or lcm (a distilled student's "
                        "consistency sampler); default the preset's, lcm for a student")
    p.add_argument("--cfg-interval", type=float, nargs=2, default=None, metavar=("START", "END"),
                   help="run the unconditional pass only on steps in this part of the run (fractions, e.g. 0 0.5); "
                        "default the preset's (official: 0 1, every step; hunyuan-portrait: every step)")
    p.add_argument("--cfg-reuse", action=argparse.BooleanOptionalAction, default=None,
                   help="outside --cfg-interval keep guiding with the last guidance difference (default the preset's; "
                        "hunyuan-portrait: off)")
    p.add_argument("--cache-interval", type=int, default=None,
                   help="feature cache: the whole UNet every N steps, the deep features forecast between (1 = off; "
                        "default the preset's; hunyuan-portrait: off)")
    p.add_argument("--cache-order", type=int, default=None,
                   help="feature cache: order of the Taylor forecast (0 reuses the last value)")
    p.add_argument("--cache-depth", type=int, default=None,
                   help="feature cache: UNet level where the cached branch starts (1-3; 1 caches the most)")
    p.add_argument("--cache-warmup", type=int, default=None, help="feature cache: first steps always computed whole")
    p.add_argument("--cfg", type=float, default=None,
                   help="classifier-free guidance scale (official 3.5; a distilled student has its guidance folded in "
                        "and runs without the unconditional pass, 1)")
    p.add_argument("--student-lora", type=Path, default=None,
                   help="a distilled student's LoRA (fye train's distill stage) for the weights in --models; it "
                        "samples with its own steps and guidance unless --steps, --solver or --cfg say otherwise")
    p.add_argument("--seed", type=int, default=None,
                   help=f"noise seed (official {OFFICIAL_SEED}; hunyuan-portrait {BACKEND_DEFAULTS['seed'][1]})")
    p.add_argument("--long-video", choices=LONG_VIDEO_MODES, default="official",
                   help="official: cyclic 24-frame windows; overlap: overlapping windows fused; "
                        "tiles: the official Gaussian temporal tiling; progressive: keyframes first, then the "
                        "frames between them with both ends fixed (resumes when interrupted)")
    p.add_argument("--keyframes", choices=KEYFRAME_CHOICES, default="even",
                   help="progressive: keyframes evenly spaced, or moved to the most expressive frames near them")
    p.add_argument("--context-frames", type=int, default=None,
                   help=f"frames per window (official {_FYE_DEFAULTS.context_frames}, at most 32; hunyuan-portrait "
                        f"{INFERENCE.frames_per_window})")
    p.add_argument("--context-overlap", type=int, default=None,
                   help=f"overlap of windows or tiles (official {_FYE_DEFAULTS.context_overlap}; hunyuan-portrait "
                        f"{INFERENCE.overlap})")
    p.add_argument("--fuse", choices=FUSE_METHODS, default="flat", help="weights of overlapping windows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="weights and compute dtype (default fp16 on GPU, fp32 on CPU)")
    p.add_argument("--low-memory", action="store_true",
                   help="force the low-memory mode: CFG passes one after the other, attention and VAE decode in "
                        "chunks, the ReferenceNet streamed to the GPU layer by layer (same output, a little slower; "
                        "by default it is chosen when the GPU's free memory is short of what the run needs); "
                        "hunyuan-portrait: its guidance branches one after the other")
    p.add_argument("--fp8-weights", action="store_true",
                   help="keep the UNet's and ReferenceNet's weights in fp8 (e4m3), each layer cast to --dtype for "
                        "its forward: about half the weights' memory, at a small change of the output")
    hunyuan = p.add_argument_group("hunyuan-portrait")
    hunyuan.add_argument("--appearance-cfg", type=float, nargs="+", default=None, metavar="SCALE",
                         help=f"appearance guidance (official {INFERENCE.appearance_guidance}); two values ramp it "
                              "from the first step to the last")
    hunyuan.add_argument("--motion-cfg", type=float, nargs="+", default=None, metavar="SCALE",
                         help=f"motion guidance (official {INFERENCE.motion_guidance}); two values ramp it from the "
                              "first step to the last")
    hunyuan.add_argument("--size", type=int, default=INFERENCE.image_size,
                         help=f"side of the face crop the video is made at (official {INFERENCE.image_size}; a "
                              "multiple of 64)")
    hunyuan.add_argument("--shift-offset", type=int, default=INFERENCE.shift_offset,
                         help=f"how much further back the windows start at every step (official "
                              f"{INFERENCE.shift_offset})")
    hunyuan.add_argument("--pad-frames", type=int, default=INFERENCE.pad_frames,
                         help=f"frames faded in from and out to a still face at both ends (official "
                              f"{INFERENCE.pad_frames})")
    hunyuan.add_argument("--yolo-face", type=Path, default=None,
                         help="find faces with the official YOLOv5-face TorchScript file (yoloface_v5m.pt) instead "
                              "of MediaPipe; needs --allow-torchscript")
    hunyuan.add_argument("--allow-torchscript", action="store_true",
                         help="allow loading --yolo-face: TorchScript runs code stored in the file (only for files "
                              "you trust)")
    p.set_defaults(run=run_animate, option_defaults={dest: p.get_default(dest) for dest in (*FYE_ONLY,
                                                                                            *HUNYUAN_ONLY)})


def _progress_bar(label: str, total: int | None):
    bar = tqdm(total=total, desc=label, unit="frame", file=sys.stderr, leave=False)

    def update(done, total, *_):
        bar.update(done - bar.n)

    return bar, update


def _rendered(motion, chunk: int = RENDER_CHUNK) -> Iterator[np.ndarray]:
    for start in range(0, len(motion), chunk):
        yield from render_expression_landmarks(motion.points[start:start + chunk], motion.width, motion.height)


@dataclass
class PreparedMotion:
    """What the CLI arguments give: the portrait, the reference image made from it and its face track, the
    aligned motion, the driving track and, with ``--paste-back``, the face crop the reference was cut from."""

    portrait: np.ndarray
    reference: np.ndarray
    reference_track: FaceTrack
    motion: Motion
    driving: FaceTrack
    crop: FaceCrop | None


def _placement(args, portrait: np.ndarray, name: str) -> FacePlacement | None:
    """The hand-placed face of ``--face-box`` / ``--face-points``, if given."""
    if args.face_box is None and args.face_points is None:
        return None
    placement = FacePlacement(parse_face_box(args.face_box) if args.face_box else None,
                              parse_face_points(args.face_points) if args.face_points else None)
    placement.check_inside(portrait.shape[1], portrait.shape[0], name)
    return placement


def _motion(args) -> PreparedMotion:
    controls = motion_controls(args)
    crop = None
    portrait = load_image(args.portrait)
    name = f"the portrait {args.portrait}"
    placement = _placement(args, portrait, name)
    with FaceLandmarkDetector(args.face_landmarker, "image") as detector:
        if getattr(args, "paste_back", False):
            crop, reference_track, _, _ = detect_face_crop(portrait, args.crop_margin, detector=detector, name=name,
                                                           placement=placement)
            reference = crop_face(portrait, crop)
        else:
            reference = prepare_reference(portrait, args.reference_mode)
            if placement is not None:
                prepared = reference_crop(portrait.shape[1], portrait.shape[0], args.reference_mode)
                placement = placement.mapped(prepared.from_source)
            reference_track = detect_reference(reference, name=name, detector=detector, placement=placement)
    print(describe_reference(reference_track), file=sys.stderr)
    if args.driving.suffix in TEMPLATE_SUFFIXES:
        driving = load_template(args.driving, allow_pickle=args.allow_pickle)
    else:
        info = probe_video(args.driving)
        bar, update = _progress_bar("detecting", info.frame_count)
        with bar:
            driving = detect_face_track(iter_video_frames(args.driving), model_path=args.face_landmarker,
                                        mode=args.detection, fill=args.fill, fps=info.fps,
                                        total=info.frame_count, progress=update)
    print(f"driving: {describe_missing(driving)}", file=sys.stderr)
    if controls.changed():
        print("motion controls: " + ", ".join(controls.changed()), file=sys.stderr)
    motion = align_motion(reference_track, driving, controls, drop_first_frame=args.drop_first_frame)
    return PreparedMotion(portrait, reference, reference_track, motion, driving, crop)


def _audio(args, motion: Motion) -> dict:
    """``write_video`` arguments that keep the driving video's sound (templates have none) in step with the
    frames: from the first motion frame's time on (one frame in with ``--drop-first-frame``)."""
    if args.driving.suffix in TEMPLATE_SUFFIXES:
        return {}
    return {"audio_from": args.driving, "audio_start": motion.frame_index[0] / (motion.fps or 30.0)}


def _face_preview(args, prepared: PreparedMotion) -> list[Path]:
    """With a hand-placed face, ``OUT.face.png``: the fitted face over the reference, to check the placement."""
    track = prepared.reference_track
    if track.source not in ("face-box", "face-points"):
        return []
    path = args.out.with_suffix(".face.png")
    preview = render_expression_landmarks(track.landmarks, track.width, track.height, normalized=True,
                                          background=prepared.reference[None])[0]
    with atomic_output(path) as tmp:
        Image.fromarray(preview).save(tmp, format="PNG")
    return [path]


def run_landmarks(args) -> int:
    prepared = _motion(args)
    motion = prepared.motion
    count = write_video(args.out, _rendered(motion), motion.fps or 30.0, **_audio(args, motion))
    written = [args.out]
    try:
        written.append(save_motion(motion, args.out.with_suffix(".motion.npz")))
        if not args.no_template:
            written.append(save_template(prepared.driving, args.out.with_suffix(".template.npz")))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    written += _face_preview(args, prepared)
    print(f"wrote {count} frames ({motion.width}x{motion.height}): " + ", ".join(map(str, written)),
          file=sys.stderr)
    return 0


def _check_backend_options(args) -> None:
    """Options of the other backend are refused, not silently ignored; backend defaults are filled in."""
    foreign = FYE_ONLY if args.backend == "hunyuan-portrait" else HUNYUAN_ONLY
    given = [f"--{dest.replace('_', '-')}" for dest in foreign if getattr(args, dest) != args.option_defaults[dest]]
    if given:
        raise FYEInputError(f"{', '.join(given)}: not an option of --backend {args.backend}")
    for dest, defaults in BACKEND_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, defaults[BACKENDS.index(args.backend)])


def run_animate(args) -> int:
    _check_backend_options(args)
    if args.backend == "hunyuan-portrait":
        return run_hunyuan_animate(args)
    from .animate import (
        OFFICIAL_GUIDANCE,
        AnimationOptions,
        animate_motion,
        describe_student,
        load_diffusers_vae,
        memory_options,
        student_options,
    )
    from .landmarks.model_file import sha256_of
    from .memory import device_free_bytes, offload_weights, store_weights_fp8
    from .models.bundle import load_fye_models, locate_model_files
    from .models.image_encoder import clip_pixel_values, encode_clip_tokens, load_clip_image_encoder
    from .models.student import read_student_settings
    from .resume import ClipFolder

    files = locate_model_files(args.models)  # before the slow work: missing weights fail at once
    student = read_student_settings(files.fye, args.student_lora)
    options = AnimationOptions(steps=args.steps, guidance=OFFICIAL_GUIDANCE if args.cfg is None else args.cfg,
                               seed=args.seed, long_video=args.long_video,
                               context_frames=args.context_frames, context_overlap=args.context_overlap,
                               fuse=args.fuse, keyframes=args.keyframes, preset=args.preset, solver=args.solver,
                               cfg_interval=args.cfg_interval, cfg_reuse=args.cfg_reuse,
                               cache_interval=args.cache_interval, cache_order=args.cache_order,
                               cache_depth=args.cache_depth, cache_warmup=args.cache_warmup)
    options = student_options(options, student, guidance_given=args.cfg is not None)
    print(describe_speed(options.preset, options.speed), file=sys.stderr)
    if student is not None:
        print(describe_student(student, options), file=sys.stderr)
    prepared = _motion(args)
    reference, motion, crop = prepared.reference, prepared.motion, prepared.crop
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float16 if args.device.startswith("cuda") else torch.float32)
    store = None
    if options.long_video == "progressive":
        # the memory plan changes how, not what: a run resumes in either mode
        settings = {key: value for key, value in vars(options).items() if key != "memory"}
        run = {"options": settings, "portrait": sha256_of(args.portrait), "driving": sha256_of(args.driving),
               "reference_mode": args.reference_mode, "models": str(args.models.resolve()), "dtype": str(dtype),
               "frames": len(motion), "crop": crop.as_dict() if crop else None}
        store = ClipFolder(args.out.with_name(args.out.name + ".parts"), run)
        if len(store):
            print(f"resuming from {len(store)} finished clips in {store.folder}", file=sys.stderr)
    encoder = load_clip_image_encoder(files.clip, dtype, args.device)
    tokens = encode_clip_tokens(encoder, clip_pixel_values(reference))
    del encoder
    models = load_fye_models(files.fye, dtype, "cpu" if args.low_memory else args.device, args.student_lora)
    codec = load_diffusers_vae(files.vae, dtype, args.device)
    if args.fp8_weights:
        store_weights_fp8(models, dtype)
    if args.low_memory:
        offload_weights(models, args.device)
    options = memory_options(options, "low" if args.low_memory else "auto", device_free_bytes(args.device),
                             *reference.shape[:2], dtype)
    if options.memory.low and not args.low_memory:  # chosen for this run: the ReferenceNet goes to CPU memory
        offload_weights(models, args.device)
    with tqdm(desc="denoising", unit="step", file=sys.stderr, leave=False) as bar:
        def progress(event):
            if event["event"] == "step":
                bar.total = event["steps"]
                bar.update(event["step"] + 1 - bar.n)

        chunks = (images_to_uint8(chunk) for chunk in animate_motion(models, codec, tokens, reference, motion,
                                                                     options, progress, store))
        if crop is not None:
            chunks = (paste_back(chunk, prepared.portrait, crop, args.feather) for chunk in chunks)
        frames = (frame for chunk in chunks for frame in chunk)
        try:
            count = write_video(args.out, frames, motion.fps or 30.0, args.crf, **_audio(args, motion))
        except KeyboardInterrupt:
            if store is not None:
                print(f"fye animate: {len(store)} finished clips kept in {store.folder}; run the same command "
                      "again to resume", file=sys.stderr)
            raise
    if store is not None:
        store.remove()
    size = f"{crop.source_width}x{crop.source_height}" if crop else f"{motion.width}x{motion.height}"
    written = [args.out, *_face_preview(args, prepared)]
    print(f"wrote {count} frames ({size}): " + ", ".join(map(str, written)), file=sys.stderr)
    return 0


def _guidance(values: list[float] | None, option: str, default: float) -> tuple[float, float]:
    """``--appearance-cfg`` / ``--motion-cfg``: one scale for every step, or the first and the last step's."""
    if values is None:
        return default, default
    if len(values) > 2:
        raise FYEInputError(f"{option} takes one scale, or two (first and last step), got {len(values)}")
    return values[0], values[-1]


def _hunyuan_faces(args, portrait: np.ndarray, name: str):
    """The reference face (official crop) and the driving video's faces, with MediaPipe or ``--yolo-face``."""
    from .hunyuan.face import MediaPipeFaces, YoloFaces, driving_faces, reference_face

    placement = _placement(args, portrait, name)
    info = probe_video(args.driving)
    with ExitStack() as stack:
        if args.yolo_face is not None:
            finder = driving_finder = YoloFaces(args.yolo_face, allow_torchscript=args.allow_torchscript,
                                                device=args.device)
        else:
            finder = driving_finder = MediaPipeFaces(stack.enter_context(
                FaceLandmarkDetector(args.face_landmarker, "image")))
            if args.detection != "image":
                driving_finder = MediaPipeFaces(stack.enter_context(
                    FaceLandmarkDetector(args.face_landmarker, args.detection)))
        reference = reference_face(portrait, finder, name=name, placement=placement)
        print(reference.how, file=sys.stderr)
        bar, update = _progress_bar("detecting", info.frame_count)
        with bar:
            faces = driving_faces(iter_video_frames(args.driving), driving_finder, total=info.frame_count,
                                  progress=update)
    print(f"driving: {faces.report()}", file=sys.stderr)
    return reference, faces, info.fps


def hunyuan_options(args):
    """The ``HunyuanOptions`` of the animate arguments; the savings flags (``--cfg-interval``, ``--cfg-reuse``,
    ``--cache-*``) default to none, the released sampler."""
    from .hunyuan.pipeline import HunyuanOptions
    from .sampling import FULL_RUN
    from .sampling.cache import CachePlan

    cache = {name: getattr(args, f"cache_{name}") for name in ("interval", "order", "depth", "warmup")
             if getattr(args, f"cache_{name}") is not None}
    return HunyuanOptions(steps=args.steps, seed=args.seed, window=args.context_frames,
                          overlap=args.context_overlap, shift_offset=args.shift_offset, pad_frames=args.pad_frames,
                          appearance_guidance=_guidance(args.appearance_cfg, "--appearance-cfg",
                                                        INFERENCE.appearance_guidance),
                          motion_guidance=_guidance(args.motion_cfg, "--motion-cfg", INFERENCE.motion_guidance),
                          cfg_interval=tuple(args.cfg_interval or FULL_RUN), cfg_reuse=bool(args.cfg_reuse),
                          cache=CachePlan(**cache), low_memory=args.low_memory)


def run_hunyuan_animate(args) -> int:
    from .hunyuan.loader import locate_files
    from .hunyuan.models import CFG_BRANCHES
    from .hunyuan.pipeline import (
        SIZE_MULTIPLE,
        animate_frames,
        encode_driving,
        load_hunyuan_portrait,
        reference_tokens,
        truncated_uint8,
    )
    from .hunyuan.preprocess import paste_back as paste_back_official
    from .memory import device_free_bytes, hunyuan_low_memory

    locate_files(args.models)  # before the slow work: missing weights fail at once
    if args.driving.suffix in TEMPLATE_SUFFIXES:
        raise FYEInputError("--backend hunyuan-portrait needs the driving video itself (its motion encoders see the "
                            "frames), not a landmark template")
    if args.size < SIZE_MULTIPLE or args.size % SIZE_MULTIPLE:
        raise FYEInputError(f"--size must be a multiple of {SIZE_MULTIPLE}, got {args.size}")
    options = hunyuan_options(args)
    portrait = load_image(args.portrait)
    reference, faces, fps = _hunyuan_faces(args, portrait, f"the portrait {args.portrait}")
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float16 if args.device.startswith("cuda") else torch.float32)
    backend = load_hunyuan_portrait(args.models, dtype, args.device)
    models = backend.models
    if not options.low_memory and hunyuan_low_memory("auto", device_free_bytes(args.device), args.size, args.size,
                                                     options.window, len(CFG_BRANCHES), dtype):
        print("memory: low (the GPU's free memory is short of the guidance branches in one batch; they run one "
              "after the other)", file=sys.stderr)
        options = replace(options, low_memory=True)
    tokens, identity = reference_tokens(backend, reference.crop, lambda: reference.face.points)
    print(identity, file=sys.stderr)
    crop = reference.crop
    if args.size != INFERENCE.image_size:
        crop = np.asarray(Image.fromarray(crop).resize((args.size, args.size), Image.BICUBIC))
    with tqdm(desc="motion", unit="frame", total=len(faces), file=sys.stderr, leave=False) as bar:
        motion = encode_driving(models, iter_video_frames(args.driving), faces, options.window,
                                lambda event: bar.update(event["done"] - bar.n))
    with tqdm(desc="denoising", unit="window", file=sys.stderr, leave=False) as bar:
        def progress(event):
            if event["event"] == "window":
                bar.total = event["steps"] * event["windows"]
                bar.update(1)

        chunks = (truncated_uint8(chunk) for chunk in animate_frames(models, crop, tokens, motion, options, progress))
        if args.paste_back:
            chunks = (paste_back_official(portrait, chunk, reference.crop_box) for chunk in chunks)
        frames = (frame for chunk in chunks for frame in chunk)
        count = write_video(args.out, frames, fps, args.crf, audio_from=args.driving)
    height, width = portrait.shape[:2] if args.paste_back else crop.shape[:2]
    print(f"wrote {count} frames ({width}x{height}): {args.out}", file=sys.stderr)
    return 0


def _add_convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="official or kijai weights -> one FYE safetensors file",
                       description="Converts the official Follow-Your-Emoji weights (a folder with lmk_guider.pth, "
                                   "referencenet.pth and unet.pth, or kijai's per-network safetensors) into our "
                                   "single safetensors file, which loads faster and without pickle.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--official-dir", type=Path, help="folder with lmk_guider.pth, referencenet.pth, unet.pth")
    source.add_argument("--guider", type=Path, help="landmark guider weights (.pth or .safetensors)")
    p.add_argument("--referencenet", type=Path, help="ReferenceNet weights (with --guider)")
    p.add_argument("--unet", type=Path, help="denoising UNet weights (with --guider)")
    p.add_argument("--motion-module", type=Path, help="replace the UNet's motion modules (AnimateDiff v2 .ckpt)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp16", help="dtype of the written weights")
    p.add_argument("--out", required=True, type=Path, help="output .safetensors")
    p.set_defaults(run=run_convert)


def run_convert(args) -> int:
    from .models import load_motion_modules, load_official, load_official_dir, save_fye

    if args.official_dir is not None:
        models = load_official_dir(args.official_dir)
    else:
        if args.referencenet is None or args.unet is None:
            raise FYEInputError("--guider needs --referencenet and --unet too")
        models = load_official({"guider": args.guider, "referencenet": args.referencenet, "unet": args.unet})
    if args.motion_module is not None:
        load_motion_modules(models, args.motion_module)
    save_fye(models, args.out, DTYPES[args.dtype])
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fye", description="Follow-Your-Emoji portrait animation, headless.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_landmarks_parser(sub)
    _add_animate_parser(sub)
    _add_convert_parser(sub)
    add_eval_parser(sub)
    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FYEInputError as err:
        print(f"fye {args.command}: error: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"fye {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI promises a one-line reason, not a traceback
        print(f"fye {args.command}: error: {type(err).__name__}: {err}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
