"""HunyuanPortrait's motion encoders and its intensity-aware motion refiner, with the official key names.

``HeadExpression`` (``expression.pth``): a ResNet-50 with GroupNorm(1, C) -> one expression feature per frame.
``HeadPose`` (``headpose.pth``): a ResNet-18 with GroupNorm(32, C) -> head rotation (degrees) and translation.
``IntensityAwareMotionRefiner`` (``motion_proj.pth``): a perceiver resampler whose memory latents and adaptive
layer norms are conditioned on the summed head- and expression-intensity embeddings; each frame is refined on
its own into ``num_queries`` tokens.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

INTENSITY_LEVELS = 128  # bucket ids 0..127


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck (stride on the 3x3 convolution) with GroupNorm named ``gn1..3``."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int, groups: int):
        super().__init__()
        c_out = planes * self.expansion
        self.conv1, self.gn1 = _conv(c_in, planes, 1), nn.GroupNorm(groups, planes)
        self.conv2, self.gn2 = _conv(planes, planes, 3, stride), nn.GroupNorm(groups, planes)
        self.conv3, self.gn3 = _conv(planes, c_out, 1), nn.GroupNorm(groups, c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(_conv(c_in, c_out, 1, stride), nn.GroupNorm(groups, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.gn1(self.conv1(x)))
        out = F.relu(self.gn2(self.conv2(out)))
        out = self.gn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(nn.Module):
    """ResNet-18's two 3x3 convolutions with GroupNorm named ``bn1``/``bn2`` and the projection named ``shortcut``."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, groups: int):
        super().__init__()
        self.conv1, self.bn1 = _conv(c_in, planes, 3, stride), nn.GroupNorm(groups, planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3), nn.GroupNorm(groups, planes)
        self.shortcut = None
        if stride != 1 or c_in != planes:
            self.shortcut = nn.Sequential(_conv(c_in, planes, 1, stride), nn.GroupNorm(groups, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class GroupNormResNet(nn.Module):
    """7x7/2 stem, 3x3/2 max-pool, four stages (the first at stride 1), global average pool, ``fc``."""

    def __init__(self, block: type[Bottleneck | BasicBlock], blocks_per_stage: list[int], stem_channels: int,
                 planes: list[int], num_outputs: int, groups: int, stem_norm: str):
        super().__init__()
        self.stem_norm = stem_norm
        self.conv1 = _conv(3, stem_channels, 7, 2)
        self.add_module(stem_norm, nn.GroupNorm(groups, stem_channels))
        c_in = stem_channels
        for index, (count, width) in enumerate(zip(blocks_per_stage, planes, strict=True)):
            blocks = []
            for position in range(count):
                blocks.append(block(c_in, width, 2 if position == 0 and index > 0 else 1, groups))
                c_in = width * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c_in, num_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(getattr(self, self.stem_norm)(self.conv1(images)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class HeadExpression(nn.Module):
    def __init__(self, stem_channels: int = 64, planes: tuple[int, ...] = (64, 128, 256, 512), out_features: int = 512):
        super().__init__()
        self.resnet50 = GroupNormResNet(Bottleneck, [3, 4, 6, 3], stem_channels, list(planes), out_features,
                                        groups=1, stem_norm="gn1")

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """Motion-face crops (T, 3, 256, 256), RGB in [0, 1] -> expression features (T, out_features)."""
        return self.resnet50(faces)


class HeadPose(nn.Module):
    def __init__(self, stem_channels: int = 64, planes: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        self.head_pose_net = GroupNormResNet(BasicBlock, [2, 2, 2, 2], stem_channels, list(planes), 6, groups=32,
                                             stem_norm="bn1")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input (T, 3, H, W) -> rotation in degrees (T, 3) in [-180, 180], translation (T, 3) in [-2, 2]."""
        out = torch.sigmoid(self.head_pose_net(images))
        return out[:, :3] * 360 - 180, out[:, 3:] * 4 - 2


class AdaptiveLayerNorm(nn.Module):
    """LayerNorm without affine parameters, then shift and scale predicted from the intensity embedding."""

    def __init__(self, width: int, condition_dim: int):
        super().__init__()
        self.linear = nn.Linear(condition_dim, 2 * width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        shift, scale = self.linear(F.silu(condition))[:, None].chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class SquaredReLUMLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(torch.square(F.relu(self.c_fc(x))))


class PerceiverBlock(nn.Module):
    def __init__(self, width: int, heads: int, condition_dim: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = SquaredReLUMLP(width)
        self.ln_1 = AdaptiveLayerNorm(width, condition_dim)
        self.ln_2 = AdaptiveLayerNorm(width, condition_dim)
        self.ln_ff = AdaptiveLayerNorm(width, condition_dim)

    def forward(self, features: torch.Tensor, latents: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        queries = self.ln_1(latents, condition)
        keys_values = torch.cat([queries, self.ln_2(features, condition)], dim=1)
        latents = latents + self.attn(queries, keys_values, keys_values, need_weights=False)[0]
        return latents + self.mlp(self.ln_ff(latents, condition))


class PerceiverResampler(nn.Module):
    def __init__(self, input_dim: int, output_dim: int, num_queries: int, condition_dim: int, width: int,
                 layers: int, heads: int):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_queries, width) * width ** -0.5)
        self.intensity_aware_linear = nn.Linear(condition_dim, width)
        self.proj_in = nn.Linear(input_dim, width)
        self.perceiver_blocks = nn.ModuleList(PerceiverBlock(width, heads, condition_dim) for _ in range(layers))
        self.proj_out = nn.Sequential(nn.Linear(width, output_dim), nn.LayerNorm(output_dim))

    def forward(self, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``features`` (B, N, input_dim), ``condition`` (B, condition_dim) -> (B, num_queries, output_dim)."""
        latents = self.latents[None] + self.intensity_aware_linear(F.silu(condition))[:, None]
        features = self.proj_in(features)
        for block in self.perceiver_blocks:
            latents = block(features, latents, condition)
        return self.proj_out(latents)


class IntensityAwareMotionRefiner(nn.Module):
    def __init__(self, input_dim: int = 512, output_dim: int = 1018, num_queries: int = 64,
                 intensity_embed_dim: int = 768, width: int = 768, layers: int = 6, heads: int = 8):
        super().__init__()
        self.position_head = nn.Embedding(INTENSITY_LEVELS, intensity_embed_dim)
        self.position_exp = nn.Embedding(INTENSITY_LEVELS, intensity_embed_dim)
        self.connector = PerceiverResampler(input_dim, output_dim, num_queries, intensity_embed_dim, width, layers,
                                            heads)

    def intensity_embedding(self, head_id: int, exp_id: int) -> torch.Tensor:
        """(1, intensity_embed_dim): the two bucket embeddings summed (the paper concatenates; the code sums)."""
        device = self.position_head.weight.device
        return (self.position_head(torch.tensor([head_id], device=device))
                + self.position_exp(torch.tensor([exp_id], device=device)))

    def forward(self, expression: torch.Tensor, head_id: int, exp_id: int) -> torch.Tensor:
        """Expression features (T, input_dim) of one chunk and its buckets -> (T, num_queries, output_dim).

        Every frame is one input token refined on its own; the chunk shares the intensity condition.
        """
        condition = self.intensity_embedding(head_id, exp_id).expand(len(expression), -1)
        return self.connector(expression[:, None], condition)
