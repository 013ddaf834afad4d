"""Low-VRAM modes of the base transformer: its blocks' weights in NF4 or fp8, and block offloading for inference.

Only the Linear layers of the backbone's blocks change (11.83 B of FLUX.1-dev's 11.90 B transformer parameters; the
embedders, final norm and projection stay in ``model.dtype``): a method's extensions (a widened ``x_embedder``, an
interval embedding) and every trained module keep full precision, and peft puts its LoRA on a quantised layer
as on a plain one (QLoRA), so a trained LoRA also applies to the full-precision base.

- ``nf4``: bitsandbytes' ``Linear4bit`` (4-bit NormalFloat, blocks of 64 with a float32 absmax each: 0.5625 byte
  a parameter), dequantised on the fly in forward and backward. diffusers' ``BitsAndBytesConfig`` path refuses a
  machine without a GPU; replacing the layers here works on both, and on the meta device (``fluxsr plan``).
- ``fp8``: diffusers' layerwise casting: weights stored as ``float8_e4m3fn`` and cast to ``model.dtype`` for each
  layer's forward.
"""

from __future__ import annotations

import torch

NF4_BLOCKSIZE = 64
WEIGHT_MODES = ("full", "nf4", "fp8")


def block_linears(blocks: list[torch.nn.Module]) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    """(parent, attribute, layer) of every plain ``nn.Linear`` inside ``blocks`` (``Backbone.blocks``)."""
    out = []
    for block in blocks:
        for parent in block.modules():
            for name, child in parent.named_children():
                if type(child) is torch.nn.Linear:
                    out.append((parent, name, child))
    return out


def quantize_nf4(blocks: list[torch.nn.Module], device: torch.device, compute_dtype: torch.dtype) -> int:
    """Replace the blocks' Linear layers with bitsandbytes NF4 layers on ``device`` (quantised as each one moves
    there, so the full-precision copy never reaches it); returns how many were replaced."""
    import bitsandbytes as bnb

    layers = block_linears(blocks)
    for parent, name, layer in layers:
        q = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=layer.bias is not None,
                              compute_dtype=compute_dtype, quant_type="nf4", quant_storage=torch.uint8,
                              device="meta")
        weight = bnb.nn.Params4bit(layer.weight.data.to(compute_dtype), requires_grad=False, quant_type="nf4",
                                   blocksize=NF4_BLOCKSIZE, compress_statistics=False, quant_storage=torch.uint8,
                                   module=q)
        q.weight = weight._quantize(device)  # also on meta: bitsandbytes registers fake kernels
        if layer.in_features % NF4_BLOCKSIZE:  # bitsandbytes' AVX512-BF16 repacking (CPU inference) needs whole
            q.support_avx512bf16_for_cpu = False  # blocks along the input and fails on narrower layers (tiny preset)
        if layer.bias is not None:
            q.bias = torch.nn.Parameter(layer.bias.data.to(device=device, dtype=compute_dtype), requires_grad=False)
        setattr(parent, name, q)
    return len(layers)


def store_fp8(blocks: list[torch.nn.Module], compute_dtype: torch.dtype) -> int:
    """Store the blocks' Linear weights as float8_e4m3fn, cast to ``compute_dtype`` for each forward (diffusers'
    layerwise casting); returns how many layers."""
    from diffusers.hooks import apply_layerwise_casting

    layers = block_linears(blocks)
    for _, _, layer in layers:
        apply_layerwise_casting(layer, storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype,
                                skip_modules_pattern=None)
    return len(layers)


def apply_weights(transformer, blocks: list[torch.nn.Module], mode: str, device: torch.device, dtype: torch.dtype):
    """The transformer with the weights of its ``blocks`` (``Backbone.blocks``) in ``mode`` ("full", "nf4",
    "fp8"), on ``device``."""
    if mode == "nf4":
        quantize_nf4(blocks, device, dtype)
    elif mode == "fp8":
        store_fp8(blocks, dtype)
    elif mode != "full":
        raise ValueError(f"model.weights must be one of {WEIGHT_MODES}, got {mode!r}")
    return transformer


def offload_blocks(transformer, device: torch.device) -> None:
    """Keep the weights in CPU memory; each block moves to ``device`` while it runs (diffusers' group offloading)."""
    transformer.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                     offload_type="block_level", num_blocks_per_group=1)
