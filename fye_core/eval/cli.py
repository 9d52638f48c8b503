"""``fye eval``: scores generated videos (EmojiBench style), writes JSON and prints a table."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import FYEInputError
from ..image import REFERENCE_MODES
from .landmarks import DEFAULT_THRESHOLD_PX
from .run import (
    EvalOptions,
    EvalPair,
    find_pairs,
    folder_report,
    format_folder_table,
    format_pair_table,
    score_pairs,
    write_report,
)


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="score generated videos: L1/SSIM/PSNR, landmarks, identity, motion intensity",
                       description="Scores a generated video against its driving video and reference (cross-"
                                   "reenactment: landmark accuracy, identity, HunyuanPortrait's motion intensities) "
                                   "and, with --gt, against the video it should reproduce (self-reenactment: L1, "
                                   "SSIM, PSNR, LPIPS, FVD). LPIPS, FVD and identity need networks you supply; "
                                   "without them they are reported as unavailable. Writes JSON, prints a table.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--pred", type=Path, help="the generated video")
    what.add_argument("--bench", type=Path, metavar="DIR",
                      help="a benchmark folder: pairs.json, or one subfolder per pair with pred.mp4, driving.mp4, "
                           "reference.png (or .jpg) and/or gt.mp4; one row per pair plus the means")
    p.add_argument("--driving", type=Path, help="the driving video (with --pred)")
    p.add_argument("--reference", type=Path, default=None,
                   help="the portrait the video was made from (default: the first driving frame, self-reenactment)")
    p.add_argument("--gt", type=Path, default=None,
                   help="the ground-truth video (self-reenactment; usually the driving video)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file to write (default: PRED.eval.json beside the video, or DIR/eval.json)")
    p.add_argument("--reference-mode", choices=REFERENCE_MODES, default="letterbox",
                   help="how the reference was prepared when the video was made (default letterbox, 512x512)")
    p.add_argument("--drop-first-frame", action="store_true",
                   help="the video was made with --drop-first-frame (one frame fewer than the driving video)")
    p.add_argument("--max-frames", type=int, default=None, metavar="N",
                   help="score the first N frames only (the motion is aligned over those frames)")
    p.add_argument("--landmark-threshold", type=float, default=DEFAULT_THRESHOLD_PX, metavar="PX",
                   help=f"landmarks within this many pixels count as accurate (default {DEFAULT_THRESHOLD_PX:g})")
    p.add_argument("--lpips-weights", type=Path, default=None,
                   help="LPIPS linear layers (the lpips package's weights/v0.1/alex.pth), or a whole LPIPS state dict")
    p.add_argument("--lpips-backbone", type=Path, default=None,
                   help="AlexNet weights for LPIPS (torchvision's alexnet-owt-7be5be79.pth; default: torch's cache)")
    p.add_argument("--i3d-weights", type=Path, default=None, help="I3D weights for FVD (pytorch-i3d's rgb_imagenet.pt)")
    p.add_argument("--arcface-onnx", type=Path, default=None,
                   help="ArcFace ONNX model for identity similarity (needs onnxruntime)")
    p.add_argument("--face-landmarker", type=Path, default=None, help="MediaPipe face_landmarker .task file")
    p.add_argument("--device", default=None, help="device for LPIPS and I3D: cpu, cuda, ... (default: cuda if present)")
    p.set_defaults(run=run_eval)


def _options(args) -> EvalOptions:
    import torch

    if args.max_frames is not None and args.max_frames < 1:
        raise FYEInputError(f"--max-frames must be at least 1, got {args.max_frames}")
    return EvalOptions(reference_mode=args.reference_mode, drop_first_frame=args.drop_first_frame,
                       max_frames=args.max_frames, landmark_threshold_px=args.landmark_threshold,
                       lpips_weights=args.lpips_weights, lpips_backbone=args.lpips_backbone,
                       i3d_weights=args.i3d_weights, arcface_onnx=args.arcface_onnx,
                       face_landmarker=args.face_landmarker,
                       device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _progress(index: int, total: int, pair: EvalPair) -> None:
    print(f"scoring {index + 1}/{total}: {pair.name or pair.pred}", file=sys.stderr)


def run_eval(args) -> int:
    options = _options(args)
    if args.bench is not None:
        if args.driving is not None or args.gt is not None or args.reference is not None:
            raise FYEInputError("--bench takes each pair's videos from the folder; leave out --driving, --reference "
                                "and --gt")
        scores = score_pairs(find_pairs(args.bench), options, _progress)
        report = folder_report(args.bench, scores, options)
        table, out = format_folder_table(report), args.out or args.bench / "eval.json"
    else:
        if args.driving is None:
            raise FYEInputError("--pred needs --driving, the video that drove it")
        pair = EvalPair(pred=args.pred, driving=args.driving, reference=args.reference, gt=args.gt)
        report = score_pairs([pair], options)[0].as_json(options)
        table, out = format_pair_table(report), args.out or args.pred.with_suffix(".eval.json")
    print(table)
    print(f"wrote {write_report(report, out)}", file=sys.stderr)
    return 0
