"""Prompt encoders: text -> (prompt_embeds (B, T, D_joint), pooled (B, D_pooled)).

FLUX.1-dev uses CLIP-L (pooled) and T5-XXL (sequence) through diffusers'
``FluxPipeline.encode_prompt``. The tiny preset has no tokenizer files to load
offline, so it uses a byte-level encoder: UTF-8 bytes -> a seeded embedding table,
mean-pooled -> a seeded projection. Deterministic, offline, FLUX-shaped.
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


class FluxTextEncoders:
    """CLIP + T5 of FLUX.1-dev, loaded lazily on first use, encoding via ``FluxPipeline.encode_prompt``."""

    def __init__(self, path: str, dtype: torch.dtype, local_files_only: bool, max_sequence_length: int = 512):
        self.path, self.dtype, self.local_files_only = path, dtype, local_files_only
        self.max_sequence_length = max_sequence_length
        self._pipe = None

    def _pipeline(self):
        if self._pipe is None:
            from diffusers import FluxPipeline

            self._pipe = FluxPipeline.from_pretrained(
                self.path, transformer=None, vae=None, torch_dtype=self.dtype, local_files_only=self.local_files_only
            )
        return self._pipe

    @torch.no_grad()
    def encode(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        pipe = self._pipeline().to(device)
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=device, max_sequence_length=self.max_sequence_length
        )
        return embeds, pooled

    def release(self) -> None:
        """Move the encoders back to CPU memory (the next ``encode`` brings them to its device again)."""
        if self._pipe is not None:
            self._pipe.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
