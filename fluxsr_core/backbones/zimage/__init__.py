"""Z-Image (Tongyi-MAI, 6 B, Apache-2.0): ``ZImageTransformer2DModel`` on FLUX.1's 16-channel ``AutoencoderKL``.

Its conventions, as read from diffusers' ``ZImagePipeline`` (``docs/backbones.md`` section 3), differ from fluxsr's and
are converted here only: the model takes a *list* of per-sample latents (C, 1, H, W) and patchifies them itself
(2x2, channel fastest), its time runs the other way (it is given 1 - σ: 0 is noise, 1 is data) and it predicts
x_0 - ε (the pipeline negates it). Text features are Qwen3's penultimate layer as a list of (L_i, 2560), no pooled
vector; there is no guidance embedding (classifier-free guidance only).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from fluxsr_core.backbones.spec import Backbone
from fluxsr_core.backbones.common import TextPipeline, load_folder, unloaded

HUB_ID = "Tongyi-MAI/Z-Image-Turbo"
PATCH = 2
INPUT_PROJECTION = "all_x_embedder.2-1"
LORA_TARGETS = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0",
                "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")

TRANSFORMER_CONFIG = dict(  # Z-Image (Turbo): dim 3840, 30 layers + 2 + 2 refiners, Qwen3-4B features
    all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840, n_layers=30, n_refiner_layers=2,
    n_heads=30, n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0, t_scale=1000.0,
    axes_dims=[32, 48, 48], axes_lens=[1024, 512, 512])
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)  # Turbo's

TINY_TRANSFORMER_CONFIG = dict(  # rope tables long enough for a 517-px side untiled (65 latent px, 33 tokens)
    all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
    n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
    axes_dims=[8, 4, 4], axes_lens=[64, 256, 256])
TINY_PROMPT_TOKENS = 8
MAX_SEQUENCE_LENGTH = 512


def build_tiny(seed: int):
    """(transformer, vae, scheduler) in float32 on CPU from ``seed``: Z-Image's classes at a tiny size (FLUX.1's
    tiny VAE: Z-Image runs on FLUX.1's autoencoder)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageTransformer2DModel

    from fluxsr_core.backbones.flux1.configs import TINY_VAE_CONFIG

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = ZImageTransformer2DModel(**TINY_TRANSFORMER_CONFIG)
        with torch.no_grad():  # diffusers zero-initialises the pad tokens: give them values, as training would
            transformer.x_pad_token.normal_(0, 0.02)
            transformer.cap_pad_token.normal_(0, 0.02)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
    return transformer.eval(), vae.eval(), FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def build_unloaded(size: str, overrides: dict | None = None):
    """(transformer, vae, scheduler, empty text condition) from the configs on the current default device and
    dtype (``fluxsr plan`` on meta); the VAE is FLUX.1's."""
    from fluxsr_core.backbones.flux1 import configs as flux1

    tiny = size == "tiny"
    tc = {**(TINY_TRANSFORMER_CONFIG if tiny else TRANSFORMER_CONFIG), **(overrides or {})}
    tokens = TINY_PROMPT_TOKENS if tiny else MAX_SEQUENCE_LENGTH
    return unloaded("ZImageTransformer2DModel", tc, "AutoencoderKL", flux1.TINY_VAE_CONFIG if tiny else flux1.VAE_CONFIG,
                    SCHEDULER_CONFIG, (tokens, tc["cap_feat_dim"], 1))


def load(path: str, **kw):
    """Transformer, VAE and scheduler of a Z-Image diffusers folder or hub id."""
    return load_folder(path, "ZImageTransformer2DModel", "AutoencoderKL", **kw)


class ZImageTextEncoder(TextPipeline):
    """Qwen3 of a Z-Image folder through ``ZImagePipeline.encode_prompt``: each prompt's features (L_i, 2560),
    padded with zeros to one (B, L, 2560) tensor (fluxsr encodes one fixed prompt), and a placeholder pooled
    vector (Z-Image has none)."""

    pipeline = "ZImagePipeline"

    @torch.no_grad()
    def encode(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, _ = self._pipeline(device).encode_prompt(prompts, device=device, do_classifier_free_guidance=False)
        padded = torch.nn.utils.rnn.pad_sequence(list(embeds), batch_first=True)
        return padded, torch.zeros(len(prompts), 1, device=device, dtype=padded.dtype)


class ListVelocity:
    """Z-Image's transformer as fluxsr's v(x_t, t): tokens are the unpacked latents (the model patchifies), the
    time is given as 1 - t and the output negated (Z-Image predicts x_0 - ε); an LR condition is concatenated
    along the latent channels before the model's patchify (``widen_input`` interleaves its columns to match)."""

    def __init__(self, transformer, height: int, width: int, cond, batch: int, guidance=None, device=None):
        self.transformer, self.dtype = transformer, transformer.dtype
        embeds = cond.expand(batch).embeds.to(device=device, dtype=self.dtype)
        self.caption = list(embeds.unbind(0))

    def pack(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def unpack(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def rope_once(self):
        return nullcontext()  # Z-Image caches its rotary table itself

    def __call__(self, tokens: torch.Tensor, t: torch.Tensor, control: torch.Tensor | None = None) -> torch.Tensor:
        x = tokens if control is None else torch.cat([tokens, control.to(tokens.dtype)], dim=1)
        out = self.transformer(list(x.to(self.dtype).unsqueeze(2).unbind(0)), 1.0 - t.to(tokens.device, self.dtype),
                               self.caption, return_dict=False)[0]
        return -torch.stack(out).squeeze(2)


def widen_input(transformer, extra_channels: int) -> None:
    """Widen ``all_x_embedder["2-1"]`` to the state's and the condition's channels with zero weights for the
    condition. Z-Image patchifies channel-fastest (feature ((ph·2 + pw)·C + c)), so each 2x2 position's old
    columns keep their place among the new ones, interleaved (copying them into the first columns would be wrong)."""
    old = transformer.all_x_embedder["2-1"]
    if not isinstance(old, torch.nn.Linear):
        raise ValueError("widen the input projection before adding LoRA adapters")
    positions, channels = PATCH * PATCH, old.in_features // (PATCH * PATCH)
    new = torch.nn.Linear(positions * (channels + extra_channels), old.out_features, bias=True,
                          device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight.view(old.out_features, positions, channels + extra_channels)[:, :, :channels] = \
            old.weight.view(old.out_features, positions, channels)
        new.bias.copy_(old.bias)
    new.requires_grad_(False)
    transformer.all_x_embedder["2-1"] = new  # config.in_channels stays: the output (and its unpatchify) is 16


def time_embedding(transformer) -> tuple[torch.nn.Module, int]:
    """``t_embedder``: its output (the adaLN input) modulates the noise refiner and every main layer."""
    return transformer.t_embedder, transformer.t_embedder.mlp[-1].out_features


def blocks(transformer) -> list[torch.nn.Module]:
    """The noise refiner (image tokens), the context refiner (caption tokens) and the main layers."""
    return [*transformer.noise_refiner, *transformer.context_refiner, *transformer.layers]


def block_image_tokens(output) -> torch.Tensor:
    """A Z-Image block returns one (B, N, D) tensor (image, then caption tokens in the main layers)."""
    return output


def sampling_sigmas(scheduler, tokens: int, steps: int) -> tuple[list[float], dict]:
    """ZImagePipeline's schedule: sigmas linspace(1, 1/n, n), shifted by the scheduler's static shift (3.0)."""
    import numpy as np

    return np.linspace(1.0, 1.0 / steps, steps).tolist(), {}


Z_IMAGE = Backbone(
    name="z-image", description="Z-Image (6 B, Tongyi-MAI; no guidance embedding; Apache-2.0)",
    transformer_class="ZImageTransformer2DModel", pipeline="ZImagePipeline", hub_id=HUB_ID, licence="apache-2.0",
    latent_channels=16, vae_factor=8, token_patch=PATCH, lora_targets=LORA_TARGETS,
    condition_module=INPUT_PROJECTION, build_tiny=build_tiny, tiny_prompt=(16, 1, TINY_PROMPT_TOKENS), load=load,
    text_encoders=ZImageTextEncoder, velocity_call=ListVelocity,
    widen_input=widen_input, has_guidance=lambda transformer: False, time_embedding=time_embedding, blocks=blocks,
    block_image_tokens=block_image_tokens, sampling_sigmas=sampling_sigmas, build_unloaded=build_unloaded)
