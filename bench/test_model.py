"""The test model: a small Follow-Your-Emoji trained here, the measuring stick for the quality cost of sampler
speed-ups (random weights cannot show one).

The recipe (``bench/test_model/``: ``recipe.toml``, the trainer configs ``stage1.toml`` and ``stage2.toml`` of the
full variant, and ``small.toml``, what the small variant changes in them):

1. data: every ``$FYE_SHARED/data/*_driving*.mp4`` split into its first frames (``data/train/<video>.mp4``,
   trained on) and its last ``held_out_fraction`` (``data/held_out/<video>.mp4``, never trained on); face tracks
   detected once (MediaPipe, image mode, as the trainer does).
2. a small VAE (diffusers ``AutoencoderKL``, 8x down, 4 latent channels) trained on the trainer's centre crops of
   the training frames (L1 + a 1e-6 KL), then rescaled exactly (``quant_conv`` / ``post_quant_conv``) so that its
   latents times 0.18215, the factor the sampler hard-codes as SD-1.5 does, have unit std.
3. a seeded one-layer CLIP image encoder (random; hidden 1024, 257 tokens; its tokens still depend on the image).
4. the FYE networks: the real architecture (``build_models``), narrower, seeded random init on the CPU, the
   motion modules' output projections zero as AnimateDiff initialises them (stage 2 starts from the stage-1
   network exactly) -> ``init/`` (a models folder: ``fye.safetensors``, ``sd-vae-ft-mse/``, ``image_encoder/``).
5. stage 1 (ReferenceNet, UNet spatial layers, guider; single frames) and stage 2 (motion modules; 8-frame clips)
   through the project's trainer: ``fye train --config stage1.toml`` / ``stage2.toml`` in the build folder.
6. the learned check: 30-step official samples (``AnimationOptions()``) of held-out frames of every video,
   against the real frames (PSNR, SSIM), for the trained networks and the same networks untrained (the init
   weights, decoded by the same trained VAE) -> ``learned.json`` and ``learned.png`` (per video, rows: reference
   then the real frames | landmark frames | trained sample | untrained sample).

Precision: everything trains in fp32. On a CPU with bf16 instructions accelerate's bf16 autocast is no faster for
networks this narrow (0.96 vs 0.97 s per stage-1 step, 0.98 vs 0.83 s per stage-2 step; the VAE 0.87 vs 1.1 s);
on one without them bf16 is emulated, about 50 times slower than fp32, and its rounding differs from the native
instructions', so a bf16 build would differ from machine to machine. Everything is seeded and runs on ``threads``
CPU threads: building twice on one machine gives bit-identical weights. The build goes to
``.cache/test-model/<variant>-<hash of the recipe files and this script>/`` (built in a hidden sibling folder and
renamed when complete), which is the models folder ``fye animate --models`` takes. The hash does not cover
``fye_core``: after a change to the trainer or the networks that should show, build again with ``--rebuild``.

API: ``test_model_dir(variant)`` (builds on first use), ``held_out(variant, video, frames, start)`` (what sampling
held-out frames needs), ``held_out_videos(variant)``, ``build(variant, folder)``, ``compare_builds(a, b)``.
Sampling the test model::

    folder = test_model_dir("full")
    files = locate_model_files(folder)
    held = held_out("full", "lp_d0", frames=8)
    tokens = encode_clip_tokens(load_clip_image_encoder(files.clip), clip_pixel_values(held.reference))
    frames = animate(load_fye_models(files.fye), load_diffusers_vae(files.vae), tokens, held.reference,
                     held.landmarks, AnimationOptions(preset="fast"))
    video_metrics(frames, held.frames)

    .venv/bin/python bench/test_model.py [--variant full|small] [--rebuild] [--into DIR] [--compare A B]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomllib

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RECIPE_DIR = Path(__file__).resolve().with_name("test_model")
CACHE = REPO / ".cache" / "test-model"
VARIANTS = ("full", "small")
FACE_MODEL = ("models", "face_landmarker_v2_with_blendshapes.task")
STAGES = ("stage1", "stage2")


def log(message: str) -> None:
    print(f"[test model] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- the recipe


def shared_dir() -> Path:
    """``$FYE_SHARED``, default ``../shared`` beside the repository."""
    folder = Path(os.environ.get("FYE_SHARED") or REPO.parent / "shared").resolve()
    if not (folder / "data").is_dir():
        raise FileNotFoundError(f"shared data missing: {folder}/data (set FYE_SHARED to the shared folder)")
    return folder


def driving_videos() -> dict[str, Path]:
    """The shared driving videos by short name (``fye_temple``, ``lp_d0``, ``lp_d11``)."""
    found = sorted((shared_dir() / "data").glob("*_driving*.mp4"))
    if not found:
        raise FileNotFoundError(f"no *_driving*.mp4 in {shared_dir() / 'data'}")
    return {path.name.split("_driving")[0]: path for path in found}


def _merge(base: dict, changes: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        merged[key] = _merge(merged.get(key, {}), value) if isinstance(value, dict) else value
    return merged


def load_recipe(variant: str = "full") -> dict:
    """``{"recipe": ..., "stage1": ..., "stage2": ...}``: the full variant's files with the variant's changes."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    recipe = {"recipe": tomllib.loads((RECIPE_DIR / "recipe.toml").read_text()),
              **{stage: tomllib.loads((RECIPE_DIR / f"{stage}.toml").read_text()) for stage in STAGES}}
    if variant != "full":
        recipe = _merge(recipe, tomllib.loads((RECIPE_DIR / f"{variant}.toml").read_text()))
    for stage in STAGES:
        if recipe[stage]["size"] != recipe["recipe"]["size"]:
            raise ValueError(f"{variant}: {stage} size {recipe[stage]['size']} != recipe size "
                             f"{recipe['recipe']['size']}")
    return recipe


def recipe_hash() -> str:
    """Short hash of this script and the recipe files: a changed recipe builds a new folder."""
    digest = hashlib.sha256(Path(__file__).resolve().read_bytes())
    for path in sorted(RECIPE_DIR.glob("*.toml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def network_config(recipe: dict) -> dict:
    """The ``build_models`` config of the recipe's networks."""
    from fye_core.models import configs

    networks, size = recipe["recipe"]["networks"], recipe["recipe"]["size"]
    unet2d = configs.unet2d_config({**configs.SD15_UNET, "block_out_channels": networks["block_out_channels"],
                                    "layers_per_block": networks["layers_per_block"],
                                    "attention_head_dim": networks["attention_head_dim"], "sample_size": size // 8})
    guider = {"conditioning_embedding_channels": networks["block_out_channels"][0], "conditioning_channels": 3,
              "block_out_channels": networks["guider_block_out_channels"]}
    return {"unet2d": unet2d, "motion": dict(configs.MOTION), "guider": guider}


def _toml(values: dict, header: str) -> str:
    """Flat TOML (strings, numbers, booleans) of a trainer config."""
    lines = [f"# {line}" for line in header.splitlines()]
    for key, value in values.items():
        if isinstance(value, dict):
            raise ValueError(f"{key}: tables are not written")
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def torch_threads(count: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------- data


def write_clip(path: Path, frames: np.ndarray, fps: float, gop: int, crf: int = 12) -> None:
    """H.264 (yuv420p) with a keyframe every ``gop`` frames, so that the trainer's samples seek."""
    from fractions import Fraction

    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": str(crf), "keyint_min": str(gop), "sc_threshold": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def centre_crops(frames: np.ndarray, size: int) -> np.ndarray:
    """The trainer's crops (``fye_core.training.data.centre_crop``) of frames (N, H, W, 3)."""
    from fye_core.crop import crop_face
    from fye_core.training.data import centre_crop

    crop = centre_crop(frames.shape[2], frames.shape[1], size)
    return np.stack([crop_face(frame, crop) for frame in frames])


def prepare_data(recipe: dict, folder: Path) -> dict:
    """Splits the driving videos into training and held-out clips, detects their faces (training tracks in the
    trainer's cache format in ``data/tracks``, held-out ones as ``data/held_out/<video>.track.npz``) and saves each
    video's reference (its first training frame with a face, centre-cropped). Returns per-video facts and the
    centre-cropped training frames for the VAE."""
    from PIL import Image

    from fye_core.landmarks import FaceLandmarkDetector, detect_face_track, save_template
    from fye_core.training.data import load_training_videos
    from fye_core.video import read_video

    settings, size = recipe["recipe"], recipe["recipe"]["size"]
    data = folder / "data"
    videos, crops = {}, []
    for name, path in driving_videos().items():
        frames, fps = read_video(path, "driving")
        held = int(round(len(frames) * settings["held_out_fraction"]))
        write_clip(data / "train" / f"{name}.mp4", frames[:-held], fps, settings["gop"])
        write_clip(data / "held_out" / f"{name}.mp4", frames[-held:], fps, settings["gop"])
        videos[name] = {"source": path.name, "fps": fps, "train_frames": len(frames) - held, "held_out_frames": held}
    with FaceLandmarkDetector(shared_dir().joinpath(*FACE_MODEL), mode="image") as detector:
        trained = load_training_videos(data / "train", data / "tracks", detector=detector)
        for video in trained:
            name = video.path.stem
            train, _ = read_video(video.path, "training")
            train_crops = centre_crops(train, size)
            crops.append(train_crops)
            reference = int(np.flatnonzero(video.track.detected)[0])
            Image.fromarray(train_crops[reference]).save(data / "held_out" / f"{name}.reference.png")
            held_frames, _ = read_video(data / "held_out" / f"{name}.mp4", "held-out")
            track = detect_face_track(iter(held_frames), detector=detector, fps=videos[name]["fps"])
            save_template(track, data / "held_out" / f"{name}.track.npz")
            videos[name].update(reference_frame=reference, train_faces=int(video.track.detected.sum()),
                                held_out_faces=int(track.detected.sum()))
    return {"videos": videos, "frames": np.concatenate(crops)}


# ----------------------------------------------------------------------------------------------------------- VAE


def build_vae(settings: dict, size: int):
    from diffusers import AutoencoderKL

    from fye_core.animate import LATENT_SCALE

    blocks = len(settings["block_out_channels"])
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * blocks,
                         up_block_types=("UpDecoderBlock2D",) * blocks,
                         block_out_channels=tuple(settings["block_out_channels"]),
                         layers_per_block=settings["layers_per_block"], latent_channels=4, norm_num_groups=32,
                         sample_size=size, scaling_factor=LATENT_SCALE)


def vae_means(vae, pixels, batch: int = 32):
    """Posterior means of (N, 3, H, W) pixels in [-1, 1]."""
    import torch

    with torch.no_grad():
        return torch.cat([vae.encode(pixels[i:i + batch]).latent_dist.mean for i in range(0, len(pixels), batch)])


def train_vae(frames: np.ndarray, settings: dict, seed: int, log_path: Path):
    """A small AutoencoderKL trained on uint8 crops (N, S, S, 3): L1 + ``kl_weight`` KL (summed, as SD's), Adam,
    random horizontal flips, the learning rate cosine-decayed to a tenth; then rescaled so that latents times
    0.18215 have unit std."""
    import torch

    from fye_core.animate import LATENT_SCALE

    torch.manual_seed(seed)
    vae = build_vae(settings, frames.shape[1]).train()
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1).contiguous()
    optimizer = torch.optim.Adam(vae.parameters(), lr=settings["learning_rate"])
    rng, noise = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    autocast = settings.get("mixed_precision", "no") == "bf16"
    steps, records = settings["steps"], []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = settings["learning_rate"] * (0.55 + 0.45 * math.cos(math.pi * step / steps))
        chosen = rng.integers(len(pixels), size=settings["batch_size"])
        flips = torch.from_numpy(rng.random(len(chosen)) < 0.5)
        x = pixels[chosen]
        x = torch.where(flips[:, None, None, None], x.flip(-1), x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=noise)
            reconstruction = vae.decode(z).sample
        l1 = (reconstruction.float() - x).abs().mean()
        kl = posterior.kl().float().mean()
        loss = l1 + settings["kl_weight"] * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            records.append({"step": step + 1, "l1": round(l1.item(), 6), "kl": round(kl.item(), 3)})
            log(f"VAE step {step + 1}/{steps}: L1 {l1.item():.4f}, KL {kl.item():.1f}")
    vae.eval()
    std = float(vae_means(vae, pixels).std())
    scale = 1 / (LATENT_SCALE * std)
    with torch.no_grad():  # mean' = scale * mean (logvar + 2 ln scale), and the decoder undoes it: the same images
        vae.quant_conv.weight[:4] *= scale
        vae.quant_conv.bias[:4] *= scale
        vae.quant_conv.bias[4:] += 2 * math.log(scale)
        vae.post_quant_conv.weight /= scale
    scaled_std = float(vae_means(vae, pixels).std()) * LATENT_SCALE
    records.append({"latent_std_before": std, "rescaled_by": scale, "scaled_latent_std": scaled_std})
    log_path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return vae, {"latent_std_before_rescale": std, "scaled_latent_std": scaled_std, "final_l1": records[-2]["l1"]}


# ----------------------------------------------------------------------------------------------- CLIP and FYE


def tiny_clip_encoder(seed: int):
    """A seeded one-layer CLIP vision encoder with the real token width (1024) and count (257)."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=256, num_hidden_layers=1, num_attention_heads=16,
                              image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    return CLIPVisionModelWithProjection(config).eval()


def initial_networks(recipe: dict):
    """The FYE networks, seeded random (CPU), the motion modules' ``proj_out`` zero (AnimateDiff's init)."""
    import torch

    from fye_core.models import build_models

    torch.manual_seed(recipe["recipe"]["seed"])
    models = build_models(network_config(recipe), device="cpu")
    with torch.no_grad():
        for name, parameter in models.unet.named_parameters():
            if "motion_modules" in name and ".proj_out." in name:
                parameter.zero_()
    return models


# ------------------------------------------------------------------------------------------------------ training


def train_stage(folder: Path, stage: str, settings: dict) -> Path:
    """Writes ``<stage>.toml`` into the build folder and runs it as ``fye train --config`` would, in that folder
    (its relative paths, and the absolute ones the trainer keeps in its checkpoint, stay relative); the last
    checkpoint's models file."""
    from accelerate.state import AcceleratorState

    from fye_core.training.config import load_training_config
    from fye_core.training.trainer import Trainer

    header = (f"{stage} of the test model (bench/test_model.py); paths are relative to this folder:\n"
              f"`fye train --config {stage}.toml` here runs it again")
    (folder / f"{stage}.toml").write_text(_toml(settings, header))
    output = folder / settings["output"]
    shutil.copytree(folder / "data" / "tracks", output / "tracks")  # detected once, in prepare_data
    AcceleratorState._reset_state(reset_partial_state=True)  # accelerate fixes the precision once per process
    try:
        with contextlib.chdir(folder):
            trainer = Trainer(load_training_config(f"{stage}.toml"))
            try:
                checkpoint = folder / trainer.run()
            finally:
                trainer.close()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return checkpoint / "models.safetensors"


# ----------------------------------------------------------------------------------------------------- held out


@dataclass(frozen=True)
class HeldOut:
    """Held-out frames of one trained identity and what sampling them takes.

    ``reference``: (S, S, 3) uint8, the video's first training frame with a face, centre-cropped as the trainer
    crops (a frame the model was trained on). ``landmarks``: (N, S, S, 3) uint8, the expression-aware landmark
    frames (``render_expression_landmarks``) of the held-out frames' face track, in the same crop. ``frames``:
    (N, S, S, 3) uint8, the real held-out frames, centre-cropped (the target of a self-reenactment).
    ``detected``: (N,) bool, frames whose face MediaPipe found (the others hold the last detection).
    ``start``: the first frame's place in the held-out clip; ``fps``: the video's frame rate.
    """

    video: str
    reference: np.ndarray
    landmarks: np.ndarray
    frames: np.ndarray
    detected: np.ndarray
    start: int
    fps: float


def held_out_videos(variant: str = "full", folder: str | os.PathLike | None = None) -> list[str]:
    """The short names of the videos with held-out frames (``fye_temple``, ``lp_d0``, ``lp_d11``)."""
    folder = Path(folder) if folder is not None else test_model_dir(variant)
    return sorted(json.loads((folder / "recipe.json").read_text())["videos"])


def held_out(variant: str = "full", video: str = "lp_d0", frames: int | None = 8, start: int = 0,
             folder: str | os.PathLike | None = None) -> HeldOut:
    """``frames`` consecutive held-out frames (all from ``start`` when None) of ``video`` with its reference and
    landmark frames, at the variant's size; builds the variant first if needed (``folder``: a build folder
    instead). Sample them with ``fye_core.animate.animate(models, codec, tokens, h.reference, h.landmarks, ...)``
    and compare with ``h.frames``."""
    from PIL import Image

    from fye_core.crop import crop_face
    from fye_core.landmarks import load_template, render_expression_landmarks
    from fye_core.training.data import centre_crop
    from fye_core.video import read_video

    folder = Path(folder) if folder is not None else test_model_dir(variant)
    size = json.loads((folder / "recipe.json").read_text())["recipe"]["size"]
    clips = folder / "data" / "held_out"
    if not (clips / f"{video}.mp4").is_file():
        raise ValueError(f"no held-out video {video!r}; there are {held_out_videos(folder=folder)}")
    clip, fps = read_video(clips / f"{video}.mp4", "held-out")
    stop = len(clip) if frames is None else start + frames
    if not 0 <= start < stop <= len(clip):
        raise ValueError(f"{video} has {len(clip)} held-out frames; frames {start}..{stop - 1} asked for")
    track = load_template(clips / f"{video}.track.npz")
    chosen = np.arange(start, stop)
    crop = centre_crop(track.width, track.height, size)
    points = crop.from_source(track.landmarks[chosen, :, :2] * [track.width, track.height])
    return HeldOut(video=video, reference=np.asarray(Image.open(clips / f"{video}.reference.png").convert("RGB")),
                   landmarks=render_expression_landmarks(points, size, size),
                   frames=np.stack([crop_face(clip[i], crop) for i in chosen]),
                   detected=track.detected[chosen].copy(), start=start, fps=fps)


# -------------------------------------------------------------------------------------------------- the check


def learned_check(folder: Path, frames: int) -> dict:
    """Official 30-step samples of ``frames`` held-out frames of every video, trained and untrained networks,
    against the real frames; writes ``learned.json`` and ``learned.png``."""
    import torch
    from PIL import Image

    from fye_core.animate import AnimationOptions, animate, load_diffusers_vae
    from fye_core.eval.metrics import video_metrics
    from fye_core.models.bundle import load_fye_models, locate_model_files
    from fye_core.models.image_encoder import clip_pixel_values, encode_clip_tokens, load_clip_image_encoder

    files = locate_model_files(folder)
    networks = {"trained": load_fye_models(files.fye),
                "untrained": load_fye_models(folder / "init" / "fye.safetensors")}
    codec = load_diffusers_vae(files.vae)
    encoder = load_clip_image_encoder(files.clip)
    report, blocks = {"frames": frames, "options": "AnimationOptions() (official: 30 DDIM steps, CFG 3.5, seed 12580)",
                      "videos": {}}, []
    for video in held_out_videos(folder=folder):
        sample = held_out(video=video, frames=frames, folder=folder)
        tokens = encode_clip_tokens(encoder, clip_pixel_values(sample.reference))
        outputs = {name: animate(models, codec, tokens, sample.reference, sample.landmarks, AnimationOptions())
                   for name, models in networks.items()}
        with torch.no_grad():  # the VAE's round trip: the ceiling of any sample
            real = torch.from_numpy(sample.frames).float().div(255)
            round_trip = (codec.decode(codec.encode(real)) * 255).round().byte().numpy()
        report["videos"][video] = {name: video_metrics(output, sample.frames) for name, output in outputs.items()}
        report["videos"][video]["vae_round_trip"] = video_metrics(round_trip, sample.frames)
        blank = np.zeros_like(sample.reference)
        rows = [[sample.reference, *sample.frames], [blank, *sample.landmarks], [blank, *outputs["trained"]],
                [blank, *outputs["untrained"]]]
        blocks.append(np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0))
        log(f"{video}: " + ", ".join(f"{name} PSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f}"
                                     for name, m in report["videos"][video].items()))
    for name in ("trained", "untrained", "vae_round_trip"):
        report[name] = {metric: float(np.mean([v[name][metric] for v in report["videos"].values()]))
                        for metric in ("psnr", "ssim", "l1")}
    report["strip"] = ("learned.png: per video, rows: reference + real held-out frames | landmark frames | "
                       "trained sample | untrained sample")
    Image.fromarray(np.concatenate(blocks, axis=0)).save(folder / "learned.png")
    (folder / "learned.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


# ----------------------------------------------------------------------------------------------------- building


def build(variant: str, folder: str | os.PathLike, max_steps: int | None = None, check: bool = True) -> dict:
    """Builds the variant into ``folder`` (new or empty); returns the timings. ``max_steps`` caps the VAE's and
    both stages' steps (a quick reproducibility check of the whole pipeline); ``check``: run the learned check."""
    from fye_core.models import save_fye

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty")
    recipe = load_recipe(variant)
    if max_steps is not None:
        recipe["recipe"]["vae"]["steps"] = min(recipe["recipe"]["vae"]["steps"], max_steps)
        for stage in STAGES:
            recipe[stage]["steps"] = min(recipe[stage]["steps"], max_steps)
    settings = recipe["recipe"]
    timings, start = {}, time.perf_counter()

    def done(name: str, since: float) -> float:
        timings[name] = round(time.perf_counter() - since, 1)
        log(f"{name}: {timings[name]:.1f} s")
        return time.perf_counter()

    with torch_threads(settings["threads"]):
        t = time.perf_counter()
        log(f"building the {variant} test model in {folder}")
        prepared = prepare_data(recipe, folder)
        t = done("data", t)

        vae, vae_facts = train_vae(prepared["frames"], settings["vae"], settings["seed"], folder / "vae_log.jsonl")
        init = folder / "init"
        vae.save_pretrained(init / "sd-vae-ft-mse")
        t = done("vae", t)

        tiny_clip_encoder(settings["seed"]).save_pretrained(init / "image_encoder")
        save_fye(initial_networks(recipe), init / "fye.safetensors", dtype=None)
        t = done("init", t)

        (folder / "recipe.json").write_text(json.dumps(
            {"variant": variant, "hash": recipe_hash(), **recipe, "videos": prepared["videos"],
             "networks": network_config(recipe), "vae": vae_facts}, indent=1) + "\n")
        stage1 = train_stage(folder, "stage1", recipe["stage1"])
        shutil.copyfile(stage1, folder / "runs" / "stage1.safetensors")
        t = done("stage1", t)
        stage2 = train_stage(folder, "stage2", recipe["stage2"])
        t = done("stage2", t)

        # the models folder: the stage-2 networks (fp32, as trained) with the VAE and CLIP encoder
        shutil.copyfile(stage2, folder / "fye.safetensors")
        for name in ("sd-vae-ft-mse", "image_encoder"):
            shutil.copytree(init / name, folder / name)
        timings["build"] = round(time.perf_counter() - start, 1)
        if check:
            learned_check(folder, settings["check"]["frames"])
            t = done("check", t)
    timings["total"] = round(time.perf_counter() - start, 1)
    (folder / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
    return timings


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def test_model_dir(variant: str = "full", rebuild: bool = False) -> Path:
    """The variant's models folder (``fye animate --models``), built on first use (minutes: ``full`` at most 30
    on two CPU threads, ``small`` about 3) under ``.cache/test-model/<variant>-<recipe hash>/`` and reused."""
    load_recipe(variant)
    final = CACHE / f"{variant}-{recipe_hash()}"
    if final.is_dir() and not rebuild:
        return final
    with _locked(CACHE / f".{final.name}.lock"):  # one build at a time; a waiting process then finds it built
        if final.is_dir() and not rebuild:
            return final
        partial = CACHE / f".{final.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        build(variant, partial)
        if final.is_dir():
            old = CACHE / f".{final.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(partial, final)
    return final


def weights_of(folder: str | os.PathLike) -> dict:
    """Every tensor a build's models folder holds, by file and name (FYE networks, VAE, CLIP encoder)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    files = ["fye.safetensors", "sd-vae-ft-mse/diffusion_pytorch_model.safetensors", "image_encoder/model.safetensors",
             "init/fye.safetensors"]
    return {f"{name}:{key}": tensor for name in files for key, tensor in load_file(str(folder / name)).items()}


def compare_builds(first: str | os.PathLike, second: str | os.PathLike) -> list[str]:
    """The tensors in which two builds differ (missing ones included); empty when bit-identical."""
    import torch

    a, b = weights_of(first), weights_of(second)
    return sorted(set(a) ^ set(b)) + sorted(key for key in set(a) & set(b)
                                           if a[key].dtype != b[key].dtype or not torch.equal(a[key], b[key]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=VARIANTS, default="full")
    parser.add_argument("--rebuild", action="store_true", help="build again even if cached")
    parser.add_argument("--into", type=Path, help="build into this new folder instead of the cache")
    parser.add_argument("--max-steps", type=int, help="with --into: cap the VAE's and stages' steps")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                        help="compare the weights of two builds bit for bit, then stop")
    args = parser.parse_args()
    if args.compare:
        different = compare_builds(*args.compare)
        print(json.dumps({"identical": not different, "different": different[:20],
                          "tensors": len(weights_of(args.compare[0]))}))
        sys.exit(1 if different else 0)
    if args.into:
        build(args.variant, args.into, max_steps=args.max_steps, check=args.max_steps is None)
        folder = args.into
    else:
        folder = test_model_dir(args.variant, rebuild=args.rebuild)
    if (folder / "timings.json").is_file():
        print("timings (s):", json.dumps(json.loads((folder / "timings.json").read_text())))
    if (folder / "learned.json").is_file():
        learned = json.loads((folder / "learned.json").read_text())
        print(f"learned check, {learned['frames']} held-out frames per video, {learned['options']}:")
        for video, results in [*learned["videos"].items(), ("mean", learned)]:
            print(f"  {video:10s} " + "  ".join(f"{name} PSNR {results[name]['psnr']:.2f} "
                                              f"SSIM {results[name]['ssim']:.3f}"
                                              for name in ("trained", "untrained", "vae_round_trip")))
    print(folder)


if __name__ == "__main__":
    main()
