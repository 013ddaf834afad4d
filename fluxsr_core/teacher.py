"""Teacher sampling: noise ε -> clean latent z_0 -> image x_0, the records FTD trains on.

The schedule is the backbone's pipeline's (FLUX.1: sigmas linspace(1, 1/n, n), resolution-dependent
shift ``mu``, ``FlowMatchEulerDiscreteScheduler``, guidance embedding), and the
latents stay packed in the model dtype between steps as in the pipeline, so a record
generated here equals the pipeline's output for the same noise. Seeds are a pure
function of (run seed, record index): any record can be regenerated alone.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from fluxsr_core.models.codec import decode_latents
from fluxsr_core.models.velocity import TextCondition


def record_seed(run_seed: int, index: int) -> int:
    """The noise seed of record ``index``: independent of batch, shard and process order."""
    digest = hashlib.sha256(f"fluxsr-pairs:{run_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def initial_noise(seed: int, channels: int, height: int, width: int) -> torch.Tensor:
    """ε ~ N(0, I), (1, C, h, w) float32, drawn on the CPU so every device gets the same numbers."""
    g = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(1, channels, height, width, generator=g, dtype=torch.float32)


@torch.no_grad()
def sample_latents(components, noise: torch.Tensor, cond: TextCondition, steps: int, guidance: float) -> torch.Tensor:
    """Euler flow sampling from ε (B, C, h, w) at t = 1 to z_0 at t = 0, in the model dtype."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    backbone = components.backbone
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(components.scheduler.config)  # own state per call
    z = noise.to(device=components.device, dtype=components.dtype)
    b, _, h, w = z.shape
    sigmas, kwargs = backbone.sampling_sigmas(scheduler, (h // backbone.token_patch) * (w // backbone.token_patch), steps)
    scheduler.set_timesteps(sigmas=sigmas, device=z.device, **kwargs)
    velocity = backbone.velocity_call(components.transformer, h, w, cond, b, guidance, device=z.device)
    tokens = velocity.pack(z)  # stay packed between steps, as the pipeline does
    with velocity.rope_once():  # the positions never change between steps
        for t in scheduler.timesteps:
            v = velocity(tokens, t.expand(b).to(tokens.dtype) / 1000)
            tokens = scheduler.step(v, t, tokens, return_dict=False)[0]
    return velocity.unpack(tokens)


@dataclass
class Record:
    """One teacher record: exact initial noise, final latent, decoded image, and how it was made."""

    index: int
    seed: int
    prompt: str
    noise: np.ndarray  # (C, h, w) float32, the exact values the sampler started from
    latent: np.ndarray  # (C, h, w) float32, z_0
    image: np.ndarray  # (H, W, 3) uint8, x_0 = D(z_0)
    meta: dict = field(default_factory=dict)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8, rounded."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def generate_records(components, indices: list[int], prompts: list[str], *, resolution: int, steps: int,
                     guidance: float, run_seed: int, batch_size: int) -> list[Record]:
    """Sample, decode and package records ``indices``, ``prompts[j]`` being record ``indices[j]``'s prompt.

    On CPU the batches run concurrently, one per core (up to the caller's
    ``torch.get_num_threads()``), each on one intra-op thread: the
    tiny preset's ops are too small to split well across cores (2 single-threaded
    batches measured 1.3-1.4x the records/s of one 2-thread batch on 2 cores), and a
    record's bits then do not depend on the number of cores or streams. The model is
    shared read-only; each batch has its own scheduler and rotary pin (thread-local).
    """
    if len(prompts) != len(indices):
        raise ValueError(f"{len(indices)} records but {len(prompts)} prompts: give one prompt per record")
    prompt_of = dict(zip(indices, prompts))
    h = w = resolution // components.vae_factor
    settings = {
        "steps": steps, "guidance": guidance, "resolution": resolution, "run_seed": run_seed,
        "scheduler": {k: v for k, v in components.scheduler.config.items() if not k.startswith("_")},
        "dtype": str(components.dtype).replace("torch.", ""),
        "teacher": components.identity,
    }

    @torch.no_grad()  # grad mode is per thread too
    def batch_records(batch: list[int]) -> list[Record]:
        seeds = [record_seed(run_seed, i) for i in batch]
        texts = [prompt_of[i] for i in batch]
        if cpu:  # this pool thread's own count (OpenMP keeps it per thread)
            torch.set_num_threads(1)
        noise = torch.cat([initial_noise(s, components.latent_channels, h, w) for s in seeds]).to(components.dtype)
        emb, pooled = components.prompt_encoder.encode(texts, components.device)
        z0 = sample_latents(components, noise, TextCondition(emb, pooled), steps, guidance)
        images = to_uint8(decode_latents(components, z0))
        return [Record(index=i, seed=seeds[j], prompt=texts[j], noise=noise[j].float().cpu().numpy(),
                       latent=z0[j].float().cpu().numpy(), image=images[j],
                       meta={**settings, "index": i, "seed": seeds[j], "prompt": texts[j]})
                for j, i in enumerate(batch)]

    cpu = components.device.type == "cpu"
    batches = [indices[start:start + batch_size] for start in range(0, len(indices), batch_size)]
    if not cpu:  # a GPU is filled by one batch; stay on the caller's thread and its current device
        return [record for batch in batches for record in batch_records(batch)]
    try:
        with ThreadPoolExecutor(max(1, min(len(batches), torch.get_num_threads())), thread_name_prefix="teacher") as pool:
            return [record for records in pool.map(batch_records, batches) for record in records]
    finally:  # torch takes the last count set anywhere as the default of threads started later: put back ours
        torch.set_num_threads(torch.get_num_threads())
