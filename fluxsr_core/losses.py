"""FluxSR's pixel and token losses (method.md): TV map, TV-LPIPS, ADL (the FTD method combines them).

Images are (B, 3, H, W) in [0, 1]; token features are (B, N, D).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


def tv_map(img: torch.Tensor) -> torch.Tensor:
    """Eq. 20: TV(I)[i, j] = |I[i+1, j] - I[i, j]| + |I[i, j+1] - I[i, j]|, per channel, (B, C, H-1, W-1)."""
    dh = (img[..., 1:, :-1] - img[..., :-1, :-1]).abs()
    dw = (img[..., :-1, 1:] - img[..., :-1, :-1]).abs()
    return dh + dw


def tv_lpips(lpips_model, img: torch.Tensor, ref: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. 19: LPIPS(I, I_0) + γ · LPIPS(TV(I), TV(I_0)), batch mean.

    Images in [0, 1] go to LPIPS as 2x - 1; TV maps of [0, 1] images lie in [0, 2]
    and go in as TV - 1, the same [-1, 1] range.
    """
    base = lpips_model(img * 2.0 - 1.0, ref * 2.0 - 1.0)
    if gamma == 0.0:
        return base.mean()
    tv = lpips_model(tv_map(img) - 1.0, tv_map(ref) - 1.0)
    return (base + gamma * tv).mean()


def adl_layer(tokens: torch.Tensor) -> torch.Tensor:
    """Eq. 22 for one block: (1/N) Σ_i cos(A_i, Ā) with Ā the token mean; (B, N, D) -> batch mean."""
    mean = tokens.mean(dim=1, keepdim=True)
    return F.cosine_similarity(tokens, mean.expand_as(tokens), dim=-1, eps=1e-8).mean()


def adl(features: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 23: L_ADL = (1/L) Σ_l L_ADL^(l) over the L blocks' image-token outputs."""
    if not features:
        raise ValueError("ADL needs at least one block's token features (were the hooks registered?)")
    return torch.stack([adl_layer(f.float()) for f in features]).mean()


@contextmanager
def capture_block_tokens(transformer, backbone):
    """Collect the image-token output of every block of the backbone during a forward pass.

    Forward hooks on ``backbone.blocks(transformer)``; ``backbone.block_image_tokens`` takes a block's output to
    its image tokens (FLUX.1: the second of ``(encoder_hidden_states, hidden_states)``). Yields the list the
    hooks append to.
    """
    outputs: list[torch.Tensor] = []

    def hook(_module, _args, out):
        outputs.append(backbone.block_image_tokens(out))

    blocks = backbone.blocks(transformer)
    handles = [b.register_forward_hook(hook) for b in blocks]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()
