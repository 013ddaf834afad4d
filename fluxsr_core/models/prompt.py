"""Prompt encoders: text -> (prompt_embeds (B, T, D_joint), pooled (B, D_pooled)).

A full-size backbone brings its own text encoders (``Backbone.text_encoders``: FLUX.1's CLIP-L + T5). The tiny
and micro presets have no tokenizer files to load offline, so they use a byte-level encoder: UTF-8 bytes -> a
seeded embedding table, mean-pooled -> a seeded projection. Deterministic, offline, shaped like the backbone's.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class PromptEncoder(Protocol):
    def encode(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]: ...


class BytePromptEncoder(nn.Module):
    """Offline prompt encoder of the tiny preset (see module docstring)."""

    def __init__(self, joint_dim: int, pooled_dim: int, max_tokens: int, seed: int):
        super().__init__()
        self.max_tokens = max_tokens
        gen = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(257, joint_dim, generator=gen), requires_grad=False)
        self.proj = nn.Parameter(torch.randn(joint_dim, pooled_dim, generator=gen) / joint_dim**0.5, requires_grad=False)

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(prompts), self.max_tokens), 256, dtype=torch.long)
        for i, p in enumerate(prompts):
            b = list(p.encode("utf-8"))[: self.max_tokens]
            ids[i, : len(b)] = torch.tensor(b, dtype=torch.long)
        return ids, ids != 256

    @torch.no_grad()
    def encode(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.tokenize(prompts)
        emb = self.table[ids]
        m = mask.unsqueeze(-1).float()
        pooled = (emb * m).sum(1) / m.sum(1).clamp(min=1.0)
        return emb.to(device), (pooled @ self.proj).to(device)
