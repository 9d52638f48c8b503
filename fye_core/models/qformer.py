"""The paper's 4-layer Q-Former: learned queries that fuse all 257 CLIP tokens of the reference.

The official weights have none; a checkpoint that carries one (``qformer.*`` in our format) gets its
query tokens appended to the ``clip_fc`` context of both networks. Built on diffusers' perceiver
resampler (IP-Adapter Plus), which is this architecture.
"""
from __future__ import annotations

from diffusers.models.embeddings import IPAdapterPlusImageProjection

from .configs import CLIP_TOKEN_DIM

QFORMER = {"embed_dims": CLIP_TOKEN_DIM, "output_dims": 768, "hidden_dims": 768, "depth": 4, "dim_head": 64,
           "heads": 12, "num_queries": 16, "ffn_ratio": 4}


class QFormer(IPAdapterPlusImageProjection):
    """(B, 257, 1024) CLIP tokens -> (B, num_queries, 768) context tokens."""

    def __init__(self, **config):
        super().__init__(**{**QFORMER, **config})
