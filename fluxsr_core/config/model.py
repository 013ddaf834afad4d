"""The base model section: which backbone, at which size, from which weights."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from fluxsr_core.config.base import Section


class ModelConfig(Section):
    """Which teacher/student architecture to build or load."""

    preset: Literal["tiny", "micro", "flux-dev"] = Field(
        "tiny", description="'tiny': the backbone's architecture at a tiny size, built locally from a seed; 'micro': "
                            "a FLUX.1 transformer small enough to train from scratch on CPU, with TAEF1 (FLUX.1's "
                            "latent space); 'flux-dev': the backbone's full-size weights (FLUX.1-dev by default)."
    )
    backbone: str = Field(
        "flux1-dev", description="The base model family, a name of the registry fluxsr_core/backbones (BASES; checked "
                                 "before work starts): 'flux1-dev' (guidance embedding), "
                                 "'flux1-schnell' (none; Apache-2.0), 'z-image' (Z-Image, 6 B; Apache-2.0), "
                                 "'flux2-klein' (FLUX.2 [klein] 4B: 32-channel VAE, 128-channel latent at 1/16; "
                                 "Apache-2.0). Sizes come from model.preset."
    )
    path: str | None = Field(
        None, description="flux-dev: hub id or local directory of the backbone (default its hub id, e.g. "
                          "black-forest-labs/FLUX.1-dev); micro: the model folder of a pretrained base "
                          "(`fluxsr train --method base`), null = seeded weights."
    )
    vae: Literal["native", "taef1"] = Field(
        "native", description="'native': the preset's AutoencoderKL; 'taef1': the TAEF1 tiny autoencoder from taef1_path."
    )
    taef1_path: str | None = Field(
        None, description="Directory holding taef1_encoder.safetensors and taef1_decoder.safetensors."
    )
    seed: int = Field(0, description="Seed of the tiny preset's weights.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="'auto': bfloat16 on CUDA, float32 on CPU."
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    weights: Literal["full", "nf4", "fp8"] = Field(
        "full", description="The frozen transformer blocks' weights: 'full' (model.dtype), 'nf4' (bitsandbytes 4-bit "
                            "NormalFloat, QLoRA: ~0.56 byte a parameter) or 'fp8' (float8_e4m3fn storage, computed in "
                            "model.dtype: 1 byte). LoRA and fully trained modules stay in model.dtype/float32; a "
                            "trained LoRA applies to the full-precision base as well.")
    local_files_only: bool = Field(
        True, description="flux-dev: never try to download; a missing model is an error naming the path."
    )
