"""``fye``: the headless command line."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .animate import LONG_VIDEO_MODES, OFFICIAL_SEED
from .crop import FaceCrop, crop_face, detect_face_crop, paste_back, reference_crop
from .errors import FYEInputError
from .eval.cli import add_eval_parser
from .files import atomic_output
from .image import REFERENCE_MODES, images_to_uint8, load_image, prepare_reference
from .landmarks import (
    DETECTION_MODES,
    FILL_MODES,
    TEMPLATE_SUFFIXES,
    FaceLandmarkDetector,
    FacePlacement,
    FaceTrack,
    Motion,
    align_motion,
    describe_missing,
    describe_reference,
    detect_face_track,
    detect_reference,
    load_template,
    parse_face_box,
    parse_face_points,
    render_expression_landmarks,
    save_template,
)
from .sampling import FUSE_METHODS, KEYFRAME_CHOICES
from .training.cli import add_train_parser
from .video import iter_video_frames, probe_video, write_video

RENDER_CHUNK = 32
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


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
    p.add_argument("--smooth", type=int, default=1, metavar="N", help="average head poses over N frames (1 = off)")
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


def _add_landmarks_parser(sub) -> None:
    p = sub.add_parser("landmarks", help="portrait + driving video -> aligned expression-landmark video",
                       description="Writes the driving motion retargeted onto the portrait as an expression-aware "
                                   "landmark video (one frame per driving frame) and the driving template beside it.")
    _add_motion_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="output .mp4; the template goes to OUT.template.npz")
    p.add_argument("--no-template", action="store_true", help="do not write OUT.template.npz")
    p.set_defaults(run=run_landmarks)


def _add_animate_parser(sub) -> None:
    p = sub.add_parser("animate", help="portrait + driving video -> animated portrait video",
                       description="Animates the portrait with the driving video's expressions, pupils and head "
                                   "motion (Follow-Your-Emoji) and writes an mp4 at the driving video's fps.")
    _add_motion_arguments(p)
    p.add_argument("--models", required=True, type=Path,
                   help="folder with the FYE weights, sd-vae-ft-mse/ and image_encoder/ (see README)")
    p.add_argument("--out", required=True, type=Path, help="output .mp4")
    p.add_argument("--crf", type=int, default=16, help="H.264 quality: 0 lossless, 16 (default) near lossless")
    p.add_argument("--paste-back", action="store_true",
                   help="animate a face crop of the portrait at 512x512 and paste it back into the full-resolution "
                        "portrait (instead of --reference-mode)")
    p.add_argument("--crop-margin", type=float, default=0.5,
                   help="--paste-back: space around the face on each side, as a fraction of its size")
    p.add_argument("--feather", type=int, default=16, help="--paste-back: width in pixels of the blended edge")
    p.add_argument("--steps", type=int, default=30, help="DDIM steps (official 30)")
    p.add_argument("--cfg", type=float, default=3.5, help="classifier-free guidance scale (official 3.5)")
    p.add_argument("--seed", type=int, default=OFFICIAL_SEED, help=f"noise seed (official {OFFICIAL_SEED})")
    p.add_argument("--long-video", choices=LONG_VIDEO_MODES, default="official",
                   help="official: cyclic 24-frame windows; overlap: overlapping windows fused; "
                        "tiles: the official Gaussian temporal tiling; progressive: keyframes first, then the "
                        "frames between them with both ends fixed (resumes when interrupted)")
    p.add_argument("--keyframes", choices=KEYFRAME_CHOICES, default="even",
                   help="progressive: keyframes evenly spaced, or moved to the most expressive frames near them")
    p.add_argument("--context-frames", type=int, default=24, help="frames per window (at most 32)")
    p.add_argument("--context-overlap", type=int, default=4, help="overlap of windows or tiles")
    p.add_argument("--fuse", choices=FUSE_METHODS, default="flat", help="weights of overlapping windows")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="weights and compute dtype (default fp16 on GPU, fp32 on CPU)")
    p.set_defaults(run=run_animate)


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


def _motion(args) -> PreparedMotion:
    crop = None
    portrait = load_image(args.portrait)
    name = f"the portrait {args.portrait}"
    placement = None
    if args.face_box is not None or args.face_points is not None:
        placement = FacePlacement(parse_face_box(args.face_box) if args.face_box else None,
                                  parse_face_points(args.face_points) if args.face_points else None)
        placement.check_inside(portrait.shape[1], portrait.shape[0], name)
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
    motion = align_motion(reference_track, driving, smooth_window=args.smooth,
                          drop_first_frame=args.drop_first_frame)
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
    if not args.no_template:
        try:
            written.append(save_template(prepared.driving, args.out.with_suffix(".template.npz")))
        except BaseException:
            args.out.unlink(missing_ok=True)
            raise
    written += _face_preview(args, prepared)
    print(f"wrote {count} frames ({motion.width}x{motion.height}): " + ", ".join(map(str, written)),
          file=sys.stderr)
    return 0


def run_animate(args) -> int:
    from .animate import AnimationOptions, animate_motion, load_diffusers_vae
    from .landmarks.model_file import sha256_of
    from .models.bundle import load_fye_models, locate_model_files
    from .models.image_encoder import clip_pixel_values, encode_clip_tokens, load_clip_image_encoder
    from .resume import ClipFolder

    files = locate_model_files(args.models)  # before the slow work: missing weights fail at once
    options = AnimationOptions(steps=args.steps, guidance=args.cfg, seed=args.seed, long_video=args.long_video,
                               context_frames=args.context_frames, context_overlap=args.context_overlap,
                               fuse=args.fuse, keyframes=args.keyframes)
    prepared = _motion(args)
    reference, motion, crop = prepared.reference, prepared.motion, prepared.crop
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float16 if args.device.startswith("cuda") else torch.float32)
    store = None
    if options.long_video == "progressive":
        run = {"options": vars(options), "portrait": sha256_of(args.portrait), "driving": sha256_of(args.driving),
               "reference_mode": args.reference_mode, "models": str(args.models.resolve()), "dtype": str(dtype),
               "frames": len(motion), "crop": crop.as_dict() if crop else None}
        store = ClipFolder(args.out.with_name(args.out.name + ".parts"), run)
        if len(store):
            print(f"resuming from {len(store)} finished clips in {store.folder}", file=sys.stderr)
    encoder = load_clip_image_encoder(files.clip, dtype, args.device)
    tokens = encode_clip_tokens(encoder, clip_pixel_values(reference))
    del encoder
    models = load_fye_models(files.fye, dtype, args.device)
    codec = load_diffusers_vae(files.vae, dtype, args.device)
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
