"""The two-stage FYE trainer (paper 3.2-3.3 and 4.1) on HF accelerate: one CPU, one GPU or many.

Stage 1 trains the ReferenceNet, the UNet's spatial layers, the landmark guider and the optional Q-Former
on single frames, with the motion modules bypassed (the 2D UNet of that stage); stage 2 trains the motion
modules on clips (and ``conv_in`` of the masked-latent variant, whose extra channels would otherwise stay
zero). The distill stage trains a few-step student, a LoRA on the UNet, by latent consistency distillation
from the init weights (``distill.py``). Every random draw of a step (samples, noise, timesteps, dropout,
masking) comes from the seed and the step number, so a resumed run continues exactly as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..animate import AnimationOptions, animate, load_diffusers_vae, student_options
from ..errors import FYEInputError
from ..models import FYEModels, load_fye, save_fye
from ..models.bundle import WHERE, find_fye_weights, locate_fye_weights, locate_model_files
from ..models.checkpoints import load_official
from ..models.configs import LATENT_CHANNELS
from ..models.image_encoder import clip_pixel_values, encode_clip_tokens, load_clip_image_encoder
from ..models.qformer import QFormer
from ..models.student import (
    StudentSettings,
    add_student_adapter,
    lora_state,
    merged_student,
    read_student_lora,
    save_student_lora,
)
from ..sampling import OFFICIAL_SCHEDULER, KnownFrames, Schedule
from ..video import write_video
from .config import DISTILL, STAGES, TrainingConfig
from .data import FaceClipDataset, load_run_videos
from .distill import DistillationNetworks, skipping_timesteps, student_parameters, update_target
from .loss import fye_loss
from .state import (
    EMA_FILE,
    EMA_LORA_FILE,
    MODELS_FILE,
    STATE_FILE,
    STUDENT_LORA_FILE,
    TARGET_LORA_FILE,
    TrainingState,
    checkpoint_folder,
    checkpoints,
    ema_weights,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    write_networks,
)

STUDENT_FILE = "student.safetensors"


def trainable_parameters(models: FYEModels, stage: int | str) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of what a stage trains, in a fixed order (the optimizer state follows it)."""
    if stage == DISTILL:
        return [(f"unet.{name}", parameter) for name, parameter in student_parameters(models.unet)]

    def trains(network: str, name: str) -> bool:
        if stage == 1:
            return not (network == "unet" and "motion_modules" in name)
        return network == "unet" and ("motion_modules" in name
                                      or (models.unet.takes_masked_latents and name.startswith("conv_in.")))

    return [(f"{network}.{name}", parameter) for network, module in models.networks().items()
            for name, parameter in module.named_parameters() if trains(network, name)]


def add_masked_latent_channels(models: FYEModels) -> None:
    """Widens a 4-channel UNet's ``conv_in`` to the masked-latent input, the new channels zero: the network
    computes exactly what it did until training teaches it to use the known frames."""
    conv = models.unet.conv_in
    wider = torch.zeros(conv.out_channels, 2 * LATENT_CHANNELS + 1, *conv.kernel_size, dtype=conv.weight.dtype)
    wider[:, :conv.in_channels] = conv.weight.detach()
    # the parameter is replaced, not the layer: the landmark-feature hook stays on conv_in
    conv.weight = nn.Parameter(wider)
    conv.in_channels = wider.shape[1]
    models.unet.register_to_config(in_channels=conv.in_channels)
    models.config["unet_in_channels"] = conv.in_channels


def add_qformer(models: FYEModels, settings: dict, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        models.qformer = QFormer(**settings)
    models.config["qformer"] = dict(settings)


def load_initial_models(config: TrainingConfig) -> FYEModels:
    """The weights a run starts from (``init``), with the Q-Former and masked-latent input the config asks
    for added when they lack them."""
    init = Path(config.init)
    weights = find_fye_weights(init) if init.is_dir() else locate_fye_weights(init)
    if weights is None:
        raise FYEInputError(f"{init} holds no FYE weights; put into it {WHERE['fye']}")
    models = load_fye(weights) if isinstance(weights, Path) else load_official(weights)
    models.to(dtype=torch.float32)
    if config.qformer is not None and models.qformer is None:
        add_qformer(models, config.qformer, config.seed)
    if config.masked_latents and not models.unet.takes_masked_latents:
        add_masked_latent_channels(models)
    if models.unet.takes_masked_latents and not config.masked_latents:
        raise FYEInputError(f"{config.init} is a masked-latent (9-channel) UNet; set masked_latents = true")
    return models


def frozen_encoder_paths(config: TrainingConfig) -> tuple[Path, Path]:
    """The VAE and CLIP image encoder: the config's, else those of the init models folder."""
    if config.vae and config.clip:
        return Path(config.vae), Path(config.clip)
    init = Path(config.init)
    folder = init if init.is_dir() else init.parent
    try:
        found = locate_model_files(folder)
    except FYEInputError as err:
        raise FYEInputError(f"set vae and clip in the training config, or put them beside the init weights: {err}") \
            from None
    return Path(config.vae or found.vae), Path(config.clip or found.clip)


def progressive_known_frames(batch: int, frames: int, generator: torch.Generator, known_probability: float = 0.5,
                             ends_probability: float = 0.5) -> torch.Tensor:
    """(B, F) bool, the frames whose latents the masked-latent UNet sees (paper 3.3): the first and last
    frame, or each frame with ``known_probability``; one strategy or the other with ``ends_probability``."""
    ends = torch.zeros(frames, dtype=torch.bool)
    ends[[0, -1]] = True
    each = torch.rand(batch, frames, generator=generator) < known_probability
    use_ends = torch.rand(batch, generator=generator) < ends_probability
    return torch.where(use_ends[:, None], ends, each)


@contextlib.contextmanager
def motion_modules_bypassed(models: FYEModels) -> Iterator[None]:
    """The UNet as the 2D network of stage 1: every motion module passes its input through."""
    modules = [module for name, module in models.unet.named_modules()
               if name.rsplit(".", 2)[-2:-1] == ["motion_modules"]]
    handles = [module.register_forward_hook(lambda module, args, output: args[0]) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class StepInputs:
    """One micro-batch ready for the networks; the first ``plain_items`` items are dropped for CFG."""
    latents: torch.Tensor  # (B, 4, F, h, w)
    reference_latents: torch.Tensor  # (B, 4, h, w)
    clip_tokens: torch.Tensor  # (B, 257, 1024), zero for the dropped items
    landmarks: torch.Tensor  # (B, 3, F, H, W) in [0, 1]
    expression_mask: torch.Tensor  # (B, 1, F, h, w)
    facial_mask: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor  # (B,)
    alpha: torch.Tensor  # (B, 1, 1, 1, 1) cumulative alpha at the timesteps
    plain_items: int
    known: torch.Tensor | None  # (B, F) masked-latent strategy, or None


class TrainingNetworks(nn.Module):
    """The trained networks as one module (what accelerate wraps for data parallelism); forward gives the
    loss terms of a micro-batch."""

    def __init__(self, models: FYEModels, ffg_weight: float):
        super().__init__()
        self.guider, self.referencenet, self.unet = models.guider, models.referencenet, models.unet
        self.qformer = models.qformer
        self.models, self.ffg_weight = models, ffg_weight

    def forward(self, inputs: StepInputs) -> dict[str, torch.Tensor]:
        plain = inputs.plain_items
        reference_context, context = self.models.encode_context(inputs.clip_tokens)
        reference = None
        if plain < len(inputs.latents):
            reference = self.referencenet.reference_features(inputs.reference_latents[plain:],
                                                             reference_context[plain:], 0)
        features = self.guider(inputs.landmarks)
        alpha = inputs.alpha
        noisy = alpha.sqrt() * inputs.latents + (1 - alpha).sqrt() * inputs.noise
        masked = None if inputs.known is None else KnownFrames(inputs.latents, inputs.known).masked_latents()
        v = self.unet(noisy, inputs.timesteps, context, features, reference, plain_items=plain,
                      masked_latents=masked)
        losses = fye_loss(v, inputs.latents, inputs.noise, noisy, alpha, inputs.expression_mask,
                          inputs.facial_mask)
        losses["total"] = losses["ldm"] + self.ffg_weight * losses["ffg"]
        return losses


TRAINING_DRAWS, VALIDATION_DRAWS = 0, 1
PREVIEW_FPS = 25  # training clips carry no frame rate; 25 is the usual one of talking-head videos


def step_generator(seed: int, step: int, draw: int, purpose: int = TRAINING_DRAWS) -> torch.Generator:
    """The random draws of one micro-batch, a function of where it is in the run only: ``draw`` numbers the
    micro-batches of a step over all processes in the data loader's order."""
    state = np.random.SeedSequence((seed, purpose, step, draw)).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> 1))


class Trainer:
    """``run()`` trains ``config.steps`` steps from ``init``, or from the checkpoint ``resume`` names."""

    def __init__(self, config: TrainingConfig, resume: str | Path | None = None):
        from accelerate import Accelerator, DistributedDataParallelKwargs

        self.config = config
        self.output = Path(config.output)
        # TensorBoard logs (OUTPUT/fye-train) when it is installed; log.jsonl always
        tracker = "tensorboard" if importlib.util.find_spec("tensorboard") else None
        self.accelerator = Accelerator(
            log_with=tracker, project_dir=str(self.output),
            mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation,
            # accelerate runs the processes of a distributed launch (torchrun, accelerate launch) as independent
            # single-process runs when there is no GPU unless told to use the CPU (gloo)
            cpu=int(os.environ.get("WORLD_SIZE", 1)) > 1 and not torch.cuda.is_available(),
            # stage 1 leaves parts of the ReferenceNet unused (nothing after its last feature is computed)
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        state = folder = None
        self.distilling = config.stage == DISTILL
        if resume is not None:
            folder = resolve_resume(resume)
            state = load_checkpoint(folder)
            check_same_run(state.config, config, self.accelerator.num_processes, folder)
        if resume is not None and not self.distilling:
            self.models = load_fye(folder / MODELS_FILE).to(dtype=torch.float32)
        else:  # a student resumes from its teacher (the init weights) and its adapter in the checkpoint
            self.models = load_initial_models(config)
        if self.distilling:
            add_student_adapter(self.models.unet, config.lora_rank, config.seed)
            self.student = StudentSettings(config.distill_steps, config.distill_guidance, config.teacher_steps,
                                           config.lora_rank, config.distill_timesteps or None)
            self.skipping = skipping_timesteps(config.teacher_steps, config.distill_timesteps)
        device = self.accelerator.device
        vae_path, clip_path = frozen_encoder_paths(config)
        self.codec = load_diffusers_vae(vae_path, device=device)
        self.clip_encoder = load_clip_image_encoder(clip_path, device=device)
        self.alphas_cumprod = Schedule(1, OFFICIAL_SCHEDULER).alphas_cumprod.float()

        for network in self.models.networks().values():
            network.requires_grad_(False).train()
        self.trained = trainable_parameters(self.models, config.stage)
        self.trained_parameters = [parameter.requires_grad_(True) for _, parameter in self.trained]
        self.models.unet.set_conditioning_cache(False)  # the weights change every step
        if config.gradient_checkpointing:
            self.models.unet.enable_gradient_checkpointing()
            self.models.referencenet.enable_gradient_checkpointing()

        self.target = [parameter.detach().clone() for parameter in self.trained_parameters]
        if self.distilling:
            network = DistillationNetworks(self.models, self.target, config.distill_guidance, config.distill_steps,
                                           config.teacher_steps, config.ffg_weight, config.huber_c,
                                           self.alphas_cumprod, config.teacher_substeps,
                                           config.distill_from_noise, config.distill_timesteps,
                                           config.distill_whole_trajectory)
        else:
            network = TrainingNetworks(self.models, config.ffg_weight)
        optimizer = torch.optim.AdamW(self.trained_parameters, lr=config.learning_rate,
                                      weight_decay=config.weight_decay)
        self.network, self.optimizer = self.accelerator.prepare(network, optimizer)
        self.ema = None
        if config.ema_decay:
            from diffusers.training_utils import EMAModel

            # after prepare: the averages live on the device the parameters were moved to
            self.ema = EMAModel(self.trained_parameters, decay=config.ema_decay)
        self.step = 0
        if state is not None:
            self._restore(state, folder)
        if tracker is not None:
            settings = json.loads(config.to_json())
            self.accelerator.init_trackers("fye-train", config={key: value for key, value in settings.items()
                                                                if isinstance(value, (int, float, str, bool))})
        self._dataset: FaceClipDataset | None = None
        self._validation_dataset: FaceClipDataset | None = None
        self._hooks = contextlib.ExitStack()
        if config.stage == 1:
            self._hooks.enter_context(motion_modules_bypassed(self.models))

    def close(self) -> None:
        """Gives the networks back as they were loaded (motion modules on)."""
        self._hooks.close()

    @property
    def dataset(self) -> FaceClipDataset:
        if self._dataset is None:
            config = self.config
            with self.accelerator.main_process_first():  # the other processes read the tracks it caches
                videos = load_run_videos(config.videos, config)
            per_step = config.batch_size * config.gradient_accumulation * self.accelerator.num_processes
            self._dataset = FaceClipDataset.for_run(videos, config, config.steps * per_step)
        return self._dataset

    @property
    def validation_dataset(self) -> FaceClipDataset:
        """``validation_samples`` samples of ``validation_videos``, or else the training dataset's first ones."""
        if self._validation_dataset is None:
            config = self.config
            videos = load_run_videos(config.validation_videos, config) if config.validation_videos \
                else self.dataset.videos
            self._validation_dataset = FaceClipDataset.for_run(videos, config, config.validation_samples)
        return self._validation_dataset

    def _restore(self, state: TrainingState, folder: Path) -> None:
        self.optimizer.load_state_dict(state.optimizer)
        if self.distilling:
            with torch.no_grad():
                for values, file in ((self.trained_parameters, STUDENT_LORA_FILE), (self.target, TARGET_LORA_FILE)):
                    torch._foreach_copy_([v.data for v in values], self._adapter_values(folder / file))
        if self.ema is not None:
            if self.distilling:
                shadow_params = self._adapter_values(folder / EMA_LORA_FILE)
            else:
                shadow = dict(trainable_parameters(load_fye(folder / EMA_FILE), self.config.stage))
                shadow_params = [shadow[name].float() for name, _ in self.trained]
            self.ema.load_state_dict({**state.ema, "shadow_params": shadow_params})
            self.ema.to(self.accelerator.device)
        if state.scaler is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state.scaler)
        self.step = state.step

    def _adapter_values(self, path: Path) -> list[torch.Tensor]:
        """A student LoRA file's weights in the order of the trained parameters."""
        tensors, _ = read_student_lora(path)
        keys = list(lora_state(self.models.unet))
        return [tensors[key].to(parameter.device) for key, parameter in zip(keys, self.trained_parameters, strict=True)]

    def batches(self, first_step: int = 0) -> Iterator[dict]:
        """The micro-batches from optimizer step ``first_step`` on (the ones before are skipped unread)."""
        # spawned, not forked workers: a worker forked after the validation decoded video deadlocks in FFmpeg's
        # scaler (its threads do not exist in the child; seen hanging in to_ndarray under torchrun)
        workers = self.config.dataloader_workers
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.config.batch_size, num_workers=workers,
                                             multiprocessing_context="spawn" if workers else None)
        loader = self.accelerator.prepare(loader)
        return iter(self.accelerator.skip_first_batches(loader, first_step * self.config.gradient_accumulation))

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> scaled VAE latents (N, 4, h, w)."""
        images = frames.to(self.accelerator.device).float().div(255)
        return self.codec.encode(images).float()

    def inputs(self, batch: dict, generator: torch.Generator, dropout: bool = True,
               timesteps: torch.Tensor | None = None) -> StepInputs:
        """The frozen encoders' outputs and the step's random draws for a collated batch of samples
        (``dropout``: classifier-free dropout with ``uncond_probability``; ``timesteps``: given, not drawn)."""
        device = self.accelerator.device
        target = batch["target"]
        items, frames = target.shape[:2]
        with torch.no_grad():
            latents = self._encode(target.flatten(0, 1)).unflatten(0, (items, frames)).transpose(1, 2)
            reference_latents = self._encode(batch["reference"])
            tokens = encode_clip_tokens(self.clip_encoder, clip_pixel_values(batch["reference"].cpu().numpy()))
        drawn = torch.randint(0, len(self.alphas_cumprod), (items,), generator=generator)
        timesteps = drawn if timesteps is None else timesteps
        if self.distilling:  # the same draw, onto the skipping schedule
            timesteps = self.skipping[timesteps * len(self.skipping) // len(self.alphas_cumprod)]
        noise = torch.randn(latents.shape, generator=generator)
        dropout = dropout and not self.distilling  # the student is guided by its teacher, not by dropout
        dropped = torch.rand(items, generator=generator) < (self.config.uncond_probability if dropout else 0)
        known = None
        if self.models.unet.takes_masked_latents and self.config.stage == 2:
            known = progressive_known_frames(items, frames, generator, self.config.known_frame_probability,
                                             self.config.ends_strategy_probability)
        order = torch.argsort((~dropped).int(), stable=True)  # dropped items first: the UNet's plain rows

        def ordered(x: torch.Tensor) -> torch.Tensor:
            return x[order.to(x.device)].to(device)

        tokens = torch.where(dropped[:, None, None].to(tokens.device), 0, tokens.float())
        return StepInputs(
            latents=ordered(latents), reference_latents=ordered(reference_latents), clip_tokens=ordered(tokens),
            landmarks=ordered(batch["landmarks"].permute(0, 4, 1, 2, 3).float().div(255)),
            expression_mask=ordered(batch["expression_mask"][:, None].float()),
            facial_mask=ordered(batch["facial_mask"][:, None].float()),
            noise=ordered(noise), timesteps=ordered(timesteps),
            alpha=ordered(self.alphas_cumprod[timesteps]).reshape(-1, 1, 1, 1, 1),
            plain_items=int(dropped.sum()), known=None if known is None else ordered(known))

    def _generator(self, step: int, micro_batch: int) -> torch.Generator:
        # the sharded loader gives process p the batches p, p + n, ... of the one global order, so N processes
        # with accumulation A draw as one process with accumulation N * A (same samples, same noise)
        accelerator = self.accelerator
        return step_generator(self.config.seed, step, micro_batch * accelerator.num_processes
                              + accelerator.process_index)

    def learning_rate(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant or a cosine down to
        zero at the last step."""
        config = self.config
        if step < config.lr_warmup_steps or config.lr_decay == "constant":
            return config.learning_rate * min(1.0, (step + 1) / (config.lr_warmup_steps + 1))
        progress = (step - config.lr_warmup_steps) / max(1, config.steps - config.lr_warmup_steps)
        return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))

    def train_step(self, batches: Iterator[dict]) -> dict[str, float]:
        """One optimizer step over ``gradient_accumulation`` micro-batches; the mean loss terms."""
        sums: dict[str, float] = {}
        for group in self.optimizer.param_groups:  # a function of the step alone, so a resumed run follows it
            group["lr"] = self.learning_rate(self.step)
        for micro_batch in range(self.config.gradient_accumulation):
            inputs = self.inputs(next(batches), self._generator(self.step, micro_batch))
            with self.accelerator.accumulate(self.network), self.models.unet.conditioning_kept():
                losses = self.network(inputs)
                self.accelerator.backward(losses["total"])
                if self.accelerator.sync_gradients and self.config.max_grad_norm:
                    self.accelerator.clip_grad_norm_(self.trained_parameters, self.config.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(self.accelerator.gather(value.detach()[None]).mean())
        if self.distilling:
            update_target(self.target, self.trained_parameters, self.config.target_ema_decay)
        if self.ema is not None:
            self.ema.step(self.trained_parameters)
        self.step += 1
        return {key: value / self.config.gradient_accumulation for key, value in sums.items()}

    def validation_loss(self, seed: int = 0) -> dict[str, float]:
        """The loss terms on the validation samples with fixed noise and no dropout, comparable across steps:
        the samples' timesteps are spread evenly over the schedule (a stratified estimate of the expected loss
        under training's uniform timesteps). Runs in the calling process alone (the unwrapped networks)."""
        network = self.accelerator.unwrap_model(self.network)
        dataset = self.validation_dataset
        sums: dict[str, float] = {}
        count = len(self.alphas_cumprod)
        for item in range(len(dataset)):
            batch = torch.utils.data.default_collate([dataset[item]])
            timestep = torch.tensor([int((item + 0.5) * count / len(dataset))])
            inputs = self.inputs(batch, step_generator(seed, 0, item, VALIDATION_DRAWS), dropout=False,
                                 timesteps=timestep)
            with torch.no_grad():
                losses = network(inputs)
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value) / len(dataset)
        return sums

    def preview(self) -> Path:
        """A self-reenactment of the first validation sample with the networks as they are: its reference
        animated by its target's landmarks (``preview_steps`` DDIM steps, the official CFG, ``seed``), written
        as target | landmarks | generated to OUTPUT/validation/step-<step>.png (one frame) or .mp4 (a clip)."""
        sample = self.validation_dataset[0]
        reference = sample["reference"]
        tokens = encode_clip_tokens(self.clip_encoder, clip_pixel_values(reference[None]))
        options = AnimationOptions(steps=self.config.preview_steps, seed=self.config.seed,
                                   context_frames=len(sample["target"]))
        if self.distilling:  # the student as it samples: its own steps, no guidance pass
            options = student_options(replace(options, steps=None), self.student)
        generated = animate(self.models, self.codec, tokens, reference, sample["landmarks"], options)
        panels = np.concatenate([sample["target"], sample["landmarks"], generated], axis=2)
        self._log_images("preview", np.concatenate(list(panels), axis=0))  # a clip's frames one under another
        path = self.output / "validation" / f"step-{self.step:07d}.{'png' if len(panels) == 1 else 'mp4'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if len(panels) == 1:
            Image.fromarray(panels[0]).save(path)
        else:
            write_video(path, iter(panels), PREVIEW_FPS)
        return path

    def _log(self, record: dict) -> None:
        print(json.dumps(record), flush=True)
        with open(self.output / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        values = {key: value for key, value in record.items() if key != "step" and isinstance(value, (int, float))}
        self.accelerator.log(values, step=record["step"])

    def _log_images(self, name: str, image: np.ndarray) -> None:
        """An image (H, W, 3) uint8 into the TensorBoard log, when there is one."""
        if self.accelerator.trackers:
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image(name, image, self.step, dataformats="HWC")

    def _validate(self) -> None:
        """Logs the validation loss terms of the current step and writes its preview, with the EMA weights
        when there are (the ones to deploy); main process, the others wait."""
        if self.accelerator.is_main_process:
            with ema_weights(self.ema, self.trained_parameters):
                losses = self.validation_loss()
                record = {"step": self.step, **{f"validation_{k}": round(v, 6) for k, v in losses.items()}}
                if self.config.preview_steps:
                    record["preview"] = str(self.preview().relative_to(self.output))
            self._log(record)
        self.accelerator.wait_for_everyone()

    def save(self) -> Path:
        """A checkpoint of the current step (main process only writes)."""
        folder = checkpoint_folder(self.output, self.step)
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            ema_state = None
            if self.ema is not None:
                ema_state = {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}
            scaler = self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None
            state = TrainingState(step=self.step, optimizer=self.optimizer.state_dict(), ema=ema_state,
                                  scaler=scaler,
                                  config={**json.loads(self.config.to_json()),
                                          "processes": self.accelerator.num_processes})
            save_checkpoint(folder, state, self._write_networks)
            prune_checkpoints(self.output, self.config.keep_checkpoints)
        self.accelerator.wait_for_everyone()
        return folder

    def _write_networks(self, folder: Path) -> None:
        """A checkpoint's networks: the models (and their EMA); a student merged into full FYE weights (loads
        anywhere the teacher does) and its adapters as LoRA files (the EMA's, the target network's)."""
        if not self.distilling:
            write_networks(folder, self.models, self.ema, self.trained_parameters)
            return
        unet = self.models.unet
        keys = list(lora_state(unet))
        save_fye(merged_student(self.models, self.student), folder / MODELS_FILE, dtype=None)
        save_student_lora(unet, self.student, folder / STUDENT_LORA_FILE)
        save_student_lora(unet, self.student, folder / TARGET_LORA_FILE, dict(zip(keys, self.target, strict=True)))
        if self.ema is not None:
            with ema_weights(self.ema, self.trained_parameters):
                save_fye(merged_student(self.models, self.student), folder / EMA_FILE, dtype=None)
                save_student_lora(unet, self.student, folder / EMA_LORA_FILE)

    def run(self) -> Path:
        """Trains to ``config.steps``, logging both loss terms and saving checkpoints; the last checkpoint."""
        config = self.config
        if self.step >= config.steps:
            raise FYEInputError(f"the run is already at step {self.step} of {config.steps}; raise steps to go on")
        batches = self.batches(self.step)
        if self.accelerator.is_main_process:
            self.output.mkdir(parents=True, exist_ok=True)
            print(f"stage {config.stage} ({STAGES[config.stage]}): {sum(p.numel() for p in self.trained_parameters):,} "
                  f"parameters trained, steps {self.step + 1}-{config.steps}, "
                  f"{self.accelerator.num_processes} process(es) on {self.accelerator.device}", file=sys.stderr)
        last = None
        if config.validate_every and self.step == 0:
            self._validate()
        while self.step < config.steps:
            losses = self.train_step(batches)
            if not all(math.isfinite(v) for v in losses.values()):
                raise FloatingPointError(f"step {self.step}: the loss is not finite ({losses}); lower learning_rate "
                                         "or use mixed_precision = \"bf16\"")
            if self.accelerator.is_main_process and (self.step % config.log_every == 0 or self.step == config.steps):
                self._log({"step": self.step, **{k: round(v, 6) for k, v in losses.items()},
                           "lr": self.learning_rate(self.step - 1)})
            if config.validate_every and (self.step % config.validate_every == 0 or self.step == config.steps):
                self._validate()
            if self.step % config.save_every == 0 or self.step == config.steps:
                last = self.save()
        if self.distilling and self.accelerator.is_main_process:
            self.save_student(self.output)
        self.accelerator.end_training()
        return last

    def save_student(self, folder: Path) -> tuple[Path, Path]:
        """The student as it ships, with the EMA weights when there are: ``student.safetensors`` (full FYE
        weights, loads anywhere the teacher's do) and ``student_lora.safetensors`` (the adapter alone, for the
        teacher's weights), both recording the steps and guidance it was made for."""
        with ema_weights(self.ema, self.trained_parameters):
            full = save_fye(merged_student(self.models, self.student), folder / STUDENT_FILE)
            lora = save_student_lora(self.models.unet, self.student, folder / STUDENT_LORA_FILE)
        return full, lora


RUN_KEYS = ("stage", "size", "clip_frames", "clip_stride", "masked_latents", "seed", "batch_size")


def check_same_run(saved: dict, config: TrainingConfig, processes: int, folder: Path) -> None:
    """A resumed run must draw the same samples and train the same parameters (steps may grow). How a step's
    micro-batches are split over processes and accumulation may change (e.g. half the GPUs, twice the
    accumulation): their number may not."""
    # a key newer than the checkpoint had its default then
    changed = [f"{key} {saved.get(key)!r} -> {getattr(config, key)!r}" for key in RUN_KEYS
               if saved.get(key, getattr(TrainingConfig, key, None)) != getattr(config, key)]
    saved_split = saved["gradient_accumulation"], saved.get("processes", 1)
    if saved_split[0] * saved_split[1] != config.gradient_accumulation * processes:
        changed.append("gradient_accumulation x processes {} x {} -> {} x {}".format(
            *saved_split, config.gradient_accumulation, processes))
    if changed:
        raise FYEInputError(f"{folder} was trained with other settings ({'; '.join(changed)}); resume with its "
                            "settings, or start a new run from its models.safetensors as init")


def resolve_resume(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder standing for its newest checkpoint."""
    path = Path(path)
    if path.is_dir() and not (path / STATE_FILE).is_file():
        found = checkpoints(path)
        if not found:
            raise FYEInputError(f"{path} holds no trainer checkpoint to resume from")
        return found[-1]
    return path
