"""L = L_LDM + L_FFG (paper eq. 1-2) for the v-prediction, zero-terminal-SNR schedule of inference."""
from __future__ import annotations

import torch
from torch.nn import functional as F

from ..sampling.schedule import x0_from_v


def v_target(latents: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The v the UNet learns: sqrt(a) * noise - sqrt(1 - a) * latents (``alpha``: cumulative, broadcastable)."""
    return alpha.sqrt() * noise - (1 - alpha).sqrt() * latents


def ffg_loss(latents: torch.Tensor, predicted: torch.Tensor, expression: torch.Tensor,
             facial: torch.Tensor) -> torch.Tensor:
    """E||M_e (z - z_hat) + M_f (z - z_hat)||^2, the mean over every latent element (as L_LDM's MSE), with
    masks broadcastable to the latents (1 inside, 0 outside)."""
    error = latents - predicted
    return (expression * error + facial * error).pow(2).mean()


def fye_loss(v: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor, noisy: torch.Tensor,
             alpha: torch.Tensor, expression: torch.Tensor, facial: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both terms and their sum for the UNet's ``v`` on ``noisy`` = sqrt(a) latents + sqrt(1 - a) noise."""
    ldm = F.mse_loss(v.float(), v_target(latents, noise, alpha).float())
    ffg = ffg_loss(latents.float(), x0_from_v(noisy, v, alpha).float(), expression, facial)
    return {"ldm": ldm, "ffg": ffg, "total": ldm + ffg}
