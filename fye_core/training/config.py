"""The training configuration: one TOML (or JSON) file of flat keys, every key documented here.

Defaults are the paper's recipe where it gives one (512 px centre crops, 16-frame clips in stage 2,
masked-latent strategies switched with p = 0.5) and AnimateAnyone's where it does not (AdamW at 1e-5,
10 % classifier-free dropout).
"""
from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from ..errors import FYEInputError

MIXED_PRECISION = ("no", "fp16", "bf16")
DISTILL = "distill"
LR_DECAYS = ("constant", "cosine")
STAGES = {1: "ReferenceNet, UNet spatial layers, guider, Q-Former", 2: "motion modules",
          DISTILL: "the student's LoRA (latent consistency distillation)"}


def _key(default=MISSING, doc: str = ""):
    return field(default=default, metadata={"doc": doc}) if default is not MISSING else field(metadata={"doc": doc})


@dataclass
class TrainingConfig:
    stage: int | str = _key(doc="1: ReferenceNet, UNet spatial layers, guider and Q-Former on single frames; "
                                "2: motion modules on clips (and conv_in with masked_latents); \"distill\": a few-step "
                                "student (a LoRA on the UNet) by latent consistency distillation from the init "
                                "weights, on clips")
    videos: str = _key(doc="folder of talking-head videos (searched recursively); frames without a face are skipped")
    output: str = _key(doc="run folder: checkpoints, log.jsonl, track cache, debug masks")
    init: str = _key(doc="weights to start from: a models folder (official .pth, kijai or fye.safetensors) or an "
                         "fye .safetensors file such as a stage-1 checkpoint's models.safetensors")
    vae: str = _key("", "sd-vae-ft-mse diffusers folder; default: the one in the init models folder")
    clip: str = _key("", "CLIP image encoder folder or file; default: the one in the init models folder")
    size: int = _key(512, "side of the centre crop the frames are resized to (multiple of 8)")
    clip_frames: int = _key(16, "frames per stage-2 clip (stage 1 always trains single frames)")
    clip_stride: int = _key(1, "frames between a stage-2 clip's frames in the source video (1 = consecutive, as "
                               "driving frames are at inference; AnimateAnyone's recipe takes every 4th)")
    qformer: dict | None = _key(None, "Q-Former settings (a table; {} = the paper's 4 layers, 16 queries); "
                                      "added when the init weights have none")
    masked_latents: bool = _key(False, "train the 9-channel masked-latent UNet (conv_in's extra channels start "
                                       "at zero when the init weights have 4)")
    known_frame_probability: float = _key(0.5, "masked latents: chance that a frame is known under the "
                                               "per-frame strategy")
    ends_strategy_probability: float = _key(0.5, "masked latents: chance of the first/last-frame strategy "
                                                 "instead of the per-frame one")
    steps: int = _key(1000, "optimizer steps (the paper: 30000 in stage 1, 10000 in stage 2)")
    batch_size: int = _key(1, "samples per device and micro-batch")
    gradient_accumulation: int = _key(1, "micro-batches per process and optimizer step")
    learning_rate: float = _key(1e-5, "AdamW learning rate")
    lr_warmup_steps: int = _key(0, "optimizer steps over which the learning rate rises linearly to learning_rate")
    lr_decay: str = _key("constant", "the learning rate after the warm-up: constant, or cosine (down to 0 at the "
                                     "last step)")
    weight_decay: float = _key(1e-2, "AdamW weight decay")
    max_grad_norm: float = _key(1.0, "gradient clipping norm (0 = off)")
    uncond_probability: float = _key(0.1, "classifier-free dropout: no reference features and zero CLIP tokens")
    ffg_weight: float = _key(1.0, "weight of L_FFG in L = L_LDM + w L_FFG (the paper: 1)")
    mixed_precision: str = _key("no", "no, fp16 or bf16 (accelerate's autocast; weights stay fp32)")
    gradient_checkpointing: bool = _key(False, "recompute the UNets' blocks in backward to save memory")
    ema_decay: float = _key(0.0, "keep an exponential moving average of the trained weights (0 = off, e.g. 0.9999); "
                                  "validation and previews then use it")
    seed: int = _key(0, "seeds the samples, noise, timesteps, dropout and masking of every step")
    dataloader_workers: int = _key(0, "worker processes decoding videos")
    log_every: int = _key(10, "steps between log lines (stdout and log.jsonl)")
    validate_every: int = _key(0, "steps between validation losses (0 = off; also before the first step): both "
                                  "loss terms on fixed samples with fixed noise, timesteps spread evenly over the "
                                  "schedule and no dropout, logged as validation_ldm/_ffg/_total")
    validation_videos: str = _key("", "held-out videos folder to validate on; default: samples of the training "
                                      "videos (an overfitting check)")
    validation_samples: int = _key(8, "samples per validation")
    preview_steps: int = _key(0, "DDIM steps of a self-reenactment preview at each validation (0 = none): the first "
                                 "validation sample's reference animated by its target's landmarks, written beside "
                                 "them to OUTPUT/validation/step-<step>.png (stage 1) or .mp4 (stage 2)")
    distill_steps: int = _key(4, "distill: the steps the student is made to sample in (recorded in its files)")
    distill_guidance: float = _key(3.5, "distill: the guidance scale folded into the student (the teacher's CFG at "
                                        "every distillation step; the student then samples without guidance)")
    distill_timesteps: tuple[int, ...] = _key((), "distill: the timesteps the student samples at, descending from "
                                                   "999, one per distill step (empty: LCM's, evenly over the skipping "
                                                   "schedule); on the skipping schedule, or, with teacher_steps = "
                                                   "distill_steps, the skipping schedule themselves (recorded in its "
                                                   "files)")
    teacher_steps: int = _key(50, "distill: the skipping schedule, every 1000 / teacher_steps-th timestep: the "
                                  "teacher takes one guided DDIM step of that size")
    teacher_substeps: int = _key(1, "distill: guided DDIM steps the teacher takes over one skip (1 as LCM; more give "
                                    "a more exact target, so a coarser schedule can shorten the chain of targets)")
    distill_from_noise: bool = _key(False, "distill: the student learns at the states of its teacher's guided "
                                           "trajectory from pure noise (the ones it meets when sampling) instead "
                                           "of at the clip's noised latents")
    distill_whole_trajectory: bool = _key(False, "distill, with distill_from_noise: each draw follows the teacher's "
                                                 "trajectory from pure noise to the clean latents and the student "
                                                 "learns at every skip on it (teacher_steps states a draw, batched, "
                                                 "for the teacher's cost of one trajectory)")
    lora_rank: int = _key(64, "distill: rank of the student's LoRA")
    target_ema_decay: float = _key(0.95, "distill: decay of the target network, an EMA of the student")
    huber_c: float = _key(0.001, "distill: the pseudo-Huber constant of the consistency distance (0 = squared "
                                 "error)")
    save_every: int = _key(1000, "steps between checkpoints (and one at the end)")
    keep_checkpoints: int = _key(3, "newest checkpoints kept (0 = all)")

    def __post_init__(self):
        problems = []
        if self.stage not in STAGES:
            problems.append(f"stage must be 1, 2 or \"distill\", got {self.stage!r}")
        if self.stage == DISTILL:
            if self.masked_latents:
                problems.append("distill takes a 4-channel UNet (the official one); set masked_latents = false")
            if not 1 <= self.distill_steps <= self.teacher_steps <= 1000 or 1000 % self.teacher_steps:
                problems.append(f"distill needs 1 <= distill_steps <= teacher_steps, teacher_steps dividing 1000; "
                                f"got {self.distill_steps} and {self.teacher_steps}")
            self.distill_timesteps = timesteps = tuple(self.distill_timesteps)
            stride = 1000 // max(self.teacher_steps, 1)
            well_formed = (len(timesteps) == self.distill_steps > 0 and timesteps[0] == 999 and timesteps[-1] >= 0
                           and sorted(set(timesteps), reverse=True) == list(timesteps))
            on_schedule = self.teacher_steps == self.distill_steps or all((t + 1) % stride == 0 for t in timesteps)
            if timesteps and not (well_formed and on_schedule):
                problems.append(f"distill_timesteps must be distill_steps ({self.distill_steps}) timesteps descending "
                                f"from 999 to 0 or more, on the skipping schedule (every {stride}th) unless "
                                f"teacher_steps = distill_steps; got {list(timesteps)}")
            if self.distill_whole_trajectory and not self.distill_from_noise:
                problems.append("distill_whole_trajectory learns along the teacher's trajectory from pure noise: set "
                                "distill_from_noise = true as well")
            if self.lora_rank < 1 or self.teacher_substeps < 1 or not 0 <= self.target_ema_decay < 1 \
                    or self.huber_c < 0:
                problems.append("distill needs lora_rank >= 1, teacher_substeps >= 1, 0 <= target_ema_decay < 1 and "
                                "huber_c >= 0")
        if self.size <= 0 or self.size % 8:
            problems.append(f"size must be a positive multiple of 8, got {self.size}")
        if self.mixed_precision not in MIXED_PRECISION:
            problems.append(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        for name in ("clip_frames", "clip_stride", "steps", "batch_size", "gradient_accumulation", "log_every",
                     "save_every", "validation_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("known_frame_probability", "ends_strategy_probability", "uncond_probability"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be between 0 and 1, got {getattr(self, name)}")
        for name in ("validate_every", "preview_steps", "lr_warmup_steps"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be 0 (off) or more, got {getattr(self, name)}")
        if self.preview_steps and not self.validate_every:
            problems.append("preview_steps needs validate_every (previews are written at each validation)")
        if self.lr_decay not in LR_DECAYS:
            problems.append(f"lr_decay must be one of {LR_DECAYS}, got {self.lr_decay!r}")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if problems:
            raise FYEInputError("training config: " + "; ".join(problems))

    @property
    def frames(self) -> int:
        return 1 if self.stage == 1 else self.clip_frames

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def describe_config() -> str:
    """Every key with its default and meaning, for ``fye train --help``."""
    lines = []
    for f in fields(TrainingConfig):
        default = "required" if f.default is MISSING else f"default {json.dumps(f.default)}"
        lines.append(f"  {f.name} ({default}): {f.metadata['doc']}")
    return "\n".join(lines)


def load_training_config(path: str | os.PathLike, overrides: dict | None = None) -> TrainingConfig:
    """A ``.toml`` or ``.json`` file of the keys above; relative paths are relative to the file."""
    path = Path(path)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        if path.suffix != ".json":
            raise FYEInputError(f"{path}: TOML configs need Python 3.11; write the config as JSON") from None
    try:
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except OSError as err:
        raise FYEInputError(f"cannot read the training config {path} ({err.strerror})") from None
    except ValueError as err:  # both decoders raise ValueError subclasses
        raise FYEInputError(f"the training config {path} is not valid {path.suffix.lstrip('.') or 'TOML'}: {err}") \
            from None
    values.update(overrides or {})
    known = {f.name: f for f in fields(TrainingConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FYEInputError(f"the training config {path} has unknown keys {unknown}; see `fye train --help`")
    missing = sorted(name for name, f in known.items() if f.default is MISSING and name not in values)
    if missing:
        raise FYEInputError(f"the training config {path} lacks {missing}; see `fye train --help`")
    for name in ("videos", "output", "init", "vae", "clip", "validation_videos"):
        if values.get(name):
            values[name] = str(path.parent / Path(values[name]).expanduser())
    return TrainingConfig(**values)
