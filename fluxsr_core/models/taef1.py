"""TAEF1, the tiny autoencoder into the FLUX.1 latent space, as diffusers' ``AutoencoderTiny``.

The original checkpoints (madebyollin/taesd: ``taef1_encoder.safetensors``,
``taef1_decoder.safetensors``) hold the keys of plain ``nn.Sequential`` Encoder and
Decoder modules. diffusers keeps the same layers under ``encoder.layers`` and
``decoder.layers``, except that the original decoder's first module is a
parameter-free Clamp that diffusers applies in ``forward``: decoder indices shift
down by one. TAEF1 latents are already in FLUX's normalised space (scale 1, shift 0).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fluxsr_core.errors import InputNotFoundError

ENCODER_FILE = "taef1_encoder.safetensors"
DECODER_FILE = "taef1_decoder.safetensors"


def convert_original_keys(encoder_sd: dict, decoder_sd: dict) -> dict:
    """Original TAESD Sequential keys -> ``AutoencoderTiny`` state-dict keys."""
    out = {f"encoder.layers.{k}": v for k, v in encoder_sd.items()}
    for k, v in decoder_sd.items():
        index, rest = k.split(".", 1)
        out[f"decoder.layers.{int(index) - 1}.{rest}"] = v
    return out


def load_taef1(directory: str | Path, dtype: torch.dtype = torch.float32):
    """Build ``AutoencoderTiny(latent_channels=16)`` and load TAEF1 weights from ``directory``."""
    from diffusers import AutoencoderTiny
    from safetensors.torch import load_file

    if not directory:
        raise InputNotFoundError("model.vae is 'taef1' (the micro preset's VAE) but model.taef1_path is not set: "
                                 f"name the directory holding {ENCODER_FILE} and {DECODER_FILE} "
                                 "(--set model.taef1_path=DIR)")
    d = Path(directory).expanduser()
    missing = [f for f in (ENCODER_FILE, DECODER_FILE) if not (d / f).is_file()]
    if missing:
        raise InputNotFoundError(
            f"TAEF1 weights not found: {', '.join(str(d / f) for f in missing)}. "
            f"Put {ENCODER_FILE} and {DECODER_FILE} (from madebyollin/taesd) in that directory "
            "or set model.taef1_path to where they are."
        )
    vae = AutoencoderTiny(latent_channels=16, scaling_factor=1.0, shift_factor=0.0)
    state = convert_original_keys(load_file(str(d / ENCODER_FILE)), load_file(str(d / DECODER_FILE)))
    vae.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return (vae if dtype == torch.float32 else vae.to(dtype)).eval()
