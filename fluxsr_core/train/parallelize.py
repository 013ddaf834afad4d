"""Parallelism and speed-ups as functions applied to a model (after torchtitan's ``parallelize``).

The trainer calls these; methods and models never import DDP or FSDP. ``blocks`` are the backbone's repeated
blocks (``Backbone.blocks``).
"""

from __future__ import annotations

import torch


def apply_activation_checkpointing(transformer, vae=None) -> None:
    """Recompute activations in backward: diffusers' gradient checkpointing of the transformer's blocks, and of the VAE's
    blocks (FTD decodes the one-step latent and back-propagates the image losses through the decoder: planned
    for FLUX.1-dev at 512², batch 1, 6.4 GiB of activations without it, 4.0 GiB with it, +1.2% FLOPs)."""
    transformer.enable_gradient_checkpointing()
    if vae is not None and getattr(vae, "_supports_gradient_checkpointing", False):
        vae.enable_gradient_checkpointing()


def apply_compile(blocks: list[torch.nn.Module]) -> None:
    """``torch.compile`` each block (same maths; slow first steps)."""
    for block in blocks:
        block.compile()


def apply_fsdp(transformer, blocks: list[torch.nn.Module]) -> None:
    """FSDP2: one all-gather group per block, then the rest; gradients are reduce-scattered (averaged)."""
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block)
    fully_shard(transformer)


def apply_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP over the trainable parameters only: frozen weights are identical on every rank by construction,
    so they are neither broadcast nor reduced."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    frozen += [n for n, _ in module.named_buffers()]
    DDP._set_params_and_buffers_to_ignore_for_model(module, frozen)
    device_ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=device_ids, broadcast_buffers=False)


def data_parallel(module: torch.nn.Module, transformer, blocks: list[torch.nn.Module], *, strategy: str, world: int,
                  device: torch.device) -> torch.nn.Module:
    """The module a training step calls: itself on one process, DDP-wrapped, or itself over an FSDP-sharded
    transformer."""
    if world == 1:
        return module
    if strategy == "fsdp":
        apply_fsdp(transformer, blocks)
        return module
    return apply_ddp(module, device)
