"""HunyuanPortrait's appearance encoder: DINOv2 ViT-L/14 with 4 registers and ID adapters, and the image projector.

Key names are those of ``dino.pth`` (DINOv2's own plus ``blocks.{i}.adapter.*``) and ``image_proj.pth``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ID_DIM = 512  # ArcFace embedding
ID_ATTENTION_DIM, ID_ATTENTION_HEADS = 256, 8
ADAPTER_WEIGHT = 0.2  # the block adds 0.2 * adapter(x) to its MLP output
POSITION_INTERPOLATE_OFFSET = 0.1  # DINOv2's legacy offset: the bicubic grid is sampled at scale (n + 0.1) / N


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(query, key, value).transpose(1, 2).flatten(2))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class BasicConv2d(nn.Module):
    """Convolution, BatchNorm (eps 1e-3), ReLU of the adapter's inception branches: held for their weights only."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)


class IdCrossAttention(nn.Module):
    """Patch features (queries) attend to the ArcFace embedding (keys and values)."""

    def __init__(self, image_dim: int):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(ID_ATTENTION_DIM, ID_ATTENTION_HEADS)
        self.image_proj = nn.Linear(image_dim, ID_ATTENTION_DIM)
        self.id_proj = nn.Linear(ID_DIM, ID_ATTENTION_DIM)
        self.back_proj = nn.Linear(ID_ATTENTION_DIM, image_dim)

    def identity_offset(self, identity: torch.Tensor) -> torch.Tensor:
        """(B, 1, 512) -> (B, 1, image_dim): the attention output of every query.

        With one key the softmax is 1, so each query receives the projected value whatever it is.
        """
        attention = self.multihead_attn
        value_weight, value_bias = attention.in_proj_weight.chunk(3)[2], attention.in_proj_bias.chunk(3)[2]
        value = F.linear(self.id_proj(identity), value_weight, value_bias)
        return self.back_proj(attention.out_proj(value))


class IMAdapter(nn.Module):
    """The ID adapter of a DINO block: ``D_fc2(x0 + [x0 of cls/registers ; ID attention of the patches])``,
    ``x0 = relu(D_fc1(x))``.

    The inception branches (``branch1..3``) only compute the attention queries, which a single ID key makes
    irrelevant; they are kept for the checkpoint's keys and not run.
    """

    def __init__(self, dim: int, adapter_dim: int):
        super().__init__()
        reduced, wide = adapter_dim // 16, adapter_dim // 4
        self.branch1 = BasicConv2d(adapter_dim, adapter_dim // 2, 1)
        self.branch2 = nn.Sequential(BasicConv2d(adapter_dim, reduced, 1), BasicConv2d(reduced, wide, 3))
        self.branch3 = nn.Sequential(BasicConv2d(adapter_dim, reduced, 1), BasicConv2d(reduced, wide, 5))
        self.D_fc1 = nn.Linear(dim, adapter_dim)
        self.D_fc2 = nn.Linear(adapter_dim, dim)
        self.cross_attn = IdCrossAttention(adapter_dim)

    def forward(self, x: torch.Tensor, identity: torch.Tensor, prefix_tokens: int) -> torch.Tensor:
        x0 = F.relu(self.D_fc1(x))
        patches = x0.shape[1] - prefix_tokens
        attended = self.cross_attn.identity_offset(identity).expand(-1, patches, -1)
        return self.D_fc2(x0 + torch.cat([x0[:, :prefix_tokens], attended], dim=1))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, adapter_dim: int | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)
        self.adapter = None if adapter_dim is None else IMAdapter(dim, adapter_dim)

    def forward(self, x: torch.Tensor, identity: torch.Tensor, prefix_tokens: int) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        normed = self.norm2(x)
        update = self.mlp(normed)
        if self.adapter is not None:
            update = update + ADAPTER_WEIGHT * self.adapter(normed, identity, prefix_tokens)
        return x + self.ls2(update)


class AppearanceEncoder(nn.Module):
    """DINOv2 with registers whose adapter blocks mix in the ArcFace identity; returns every token after ``norm``."""

    def __init__(self, image_size: int = 526, patch_size: int = 14, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, num_register_tokens: int = 4,
                 adapter_layers: tuple[int, ...] = (3, 7, 11, 15, 19, 23), adapter_dim: int = 384):
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image_size // patch_size) ** 2, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # training-time masking; in the checkpoint
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, adapter_dim if index in adapter_layers else None)
                                    for index in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def position_embedding(self, grid_height: int, grid_width: int) -> torch.Tensor:
        """(1, 1 + grid_height * grid_width, C): the cls row and the patch table resampled to the grid."""
        table = self.pos_embed.float()
        side = int((table.shape[1] - 1) ** 0.5)
        if grid_height == grid_width == side:
            return self.pos_embed
        patches = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        scale = ((grid_height + POSITION_INTERPOLATE_OFFSET) / side, (grid_width + POSITION_INTERPOLATE_OFFSET) / side)
        patches = F.interpolate(patches, scale_factor=scale, mode="bicubic", antialias=False)
        if patches.shape[-2:] != (grid_height, grid_width):
            raise ValueError(f"position table of {side}x{side} cannot be resampled to {grid_height}x{grid_width}")
        return torch.cat([table[:, :1], patches.flatten(2).transpose(1, 2)], dim=1).to(self.pos_embed.dtype)

    def forward(self, images: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised images (B, 3, H, W) and ArcFace embeddings (B, 1, 512), zeros for none ->
        tokens (B, 1 + registers + patches, C): cls, registers, patches."""
        grid = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.position_embedding(*grid)
        x = torch.cat([x[:, :1], self.register_tokens.expand(len(x), -1, -1), x[:, 1:]], dim=1)
        identity = identity.to(x.dtype)
        prefix_tokens = 1 + self.register_tokens.shape[1]
        for block in self.blocks:
            x = block(x, identity, prefix_tokens)
        return self.norm(x)


class ImageProjector(nn.Linear):
    """Mixes the encoder's tokens into fewer ones: a linear map over the token axis (keys ``weight``, ``bias``)."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, in_features, C) -> (B, out_features, C)."""
        return super().forward(tokens.transpose(1, 2)).transpose(1, 2)
