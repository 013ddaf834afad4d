"""Plans of a training step and of an upscale call: the real step code run on meta tensors, measured.

The method and the Trainer's LoRA, unfrozen modules and AdamW are the real ones, and one step is the
Trainer's ``compute_loss`` + backward + optimiser step; the figures split what the step holds (weights,
trainable parameters, gradients, optimizer state, activations) and say what they assume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from fluxsr_core.plan.counters import (
    LiveStorages,
    flop_counter,
    held,
    parameter_count,
    tensor_bytes,
)
from fluxsr_core.plan.meta import Attention, attention_as, meta_sample, meta_sr_model

GiB = 2 ** 30


@dataclass
class Plan:
    """One planned call: sizes in GiB (``*_gib``), TFLOP, and what the figures assume."""

    what: str  # "train <method>" or "upscale"
    preset: str
    resolution: int
    batch: int
    attention: str
    parameters: int
    trainable_parameters: int
    weights_gib: float
    trainable_gib: float  # trainable parameters (fp32 master weights)
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float  # peak minus everything above: what the step itself holds at its peak
    peak_gib: float
    tflop: float
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gib(n: float) -> float:
    return round(n / GiB, 4)


def _allocate_optimizer_state(trainer) -> None:
    """AdamW's state as the first real step leaves it, without running that step: zero gradients, one
    optimiser step, gradients dropped (the state's tensors are what the optimiser allocates for them)."""
    for p in trainer.params:
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def size_train_step(cfg, method_name: str, *, resolution: int, dtype: torch.dtype = torch.bfloat16,
               attention: Attention = "flash", architecture: dict | None = None) -> Plan:
    """Memory and FLOPs of one steady-state training step of ``method_name`` (AdamW's state exists), per
    process, at ``train.batch_size`` samples of ``resolution``² and the config's LoRA, gradient checkpointing,
    ``model.weights``, ``train.optimizer`` and method settings. A distilled method holds its frozen teacher too.
    With more than one process (``train.nproc_per_node`` x ``train.nnodes``) the figures are one rank's
    (``per_rank``)."""
    from fluxsr_core.methods import build_method
    from fluxsr_core.train.loop import Trainer

    if resolution % 16:
        raise ValueError(f"resolution must be a multiple of 16, got {resolution}")
    cfg = cfg.model_copy(deep=True)
    cfg.loss.allow_random_lpips_backbone = True  # no weights are read in a plan; a random backbone costs the same
    world = cfg.train.nproc_per_node * cfg.train.nnodes
    train_cfg = cfg.train.model_copy(update={"nproc_per_node": 1, "nnodes": 1})  # one process traced; ranks derived
    with LiveStorages() as mem, attention_as(attention):
        method = build_method(method_name, cfg)
        if method.distils:
            teacher = meta_sr_model(cfg, dtype, method.guidance, architecture)
            build_method(method.distils, cfg).extend(teacher)
            method.set_teacher(teacher)
        model = meta_sr_model(cfg, dtype, method.guidance, architecture)
        dataset = [meta_sample(resolution, model.components.backbone)] * max(1, cfg.train.batch_size)
        trainer = Trainer(method, model, dataset, lora_cfg=cfg.lora, train_cfg=train_cfg)
        _allocate_optimizer_state(trainer)
        before, mem.peak = mem.live, mem.live
        with flop_counter() as flops:
            terms, _ = trainer.compute_loss(trainer.batch_for_step(2), trainer.step_generator(2))
            terms["total"].backward()
            trainer.optimizer.step()
        peak = mem.peak
    transformer = trainer.transformer
    trainable = trainer.params
    frozen = [t for t in held(transformer) if not t.requires_grad]
    others = [t for m in _other_modules(method, model) for t in held(m)]
    grads = tensor_bytes([p.grad for p in trainable if p.grad is not None])
    optimizer = tensor_bytes([t for s in trainer.optimizer.state.values() for t in s.values()
                              if torch.is_tensor(t) and t.dim() > 0])
    block = max((tensor_bytes(held(b)) for b in model.components.backbone.blocks(transformer)), default=0)
    plan = Plan(what=f"train {method_name}", preset=cfg.preset, resolution=resolution, batch=cfg.train.batch_size,
                attention=attention, parameters=parameter_count(transformer),
                trainable_parameters=sum(p.numel() for p in trainable),
                weights_gib=_gib(tensor_bytes(frozen) + tensor_bytes(others)), trainable_gib=_gib(tensor_bytes(trainable)),
                gradients_gib=_gib(grads), optimizer_gib=_gib(optimizer),
                activations_gib=_gib(max(0, peak - before - grads)), peak_gib=_gib(peak),
                tflop=round(flops.get_total_flops() / 1e12, 6),
                settings={"dtype": str(dtype).removeprefix("torch."), "weights": cfg.model.weights,
                          "optimizer": cfg.train.optimizer, "lora_rank": cfg.lora.rank,
                          "gradient_checkpointing": cfg.train.gradient_checkpointing,
                          "live_before_step_gib": _gib(before), "transformer_weights_gib": _gib(tensor_bytes(frozen)),
                          "largest_block_gib": _gib(block)})
    return per_rank(plan, cfg.train.strategy, world) if world > 1 else plan


def per_rank(plan: Plan, strategy: str, ranks: int) -> Plan:
    """One rank's figures of a data-parallel step over ``ranks`` processes (each on ``plan.batch`` samples),
    derived from the one-process plan (not traced: no process group runs in a plan).

    - DDP: every rank holds the whole plan, plus DDP's gradient buckets (a second copy of the trainable
      gradients: ``gradient_as_bucket_view`` is off).
    - FSDP (one shard group per block, ``parallelize.apply_fsdp``): the transformer's frozen weights, trainable
      parameters, gradients and optimizer state are split 1/ranks; two blocks are whole at a time (the one
      running and the next, prefetched); the VAE, a teacher and loss networks stay whole on every rank."""
    s = dict(plan.settings)
    derived = {"strategy": strategy, "ranks": ranks, "derived_from_one_process": True}
    if strategy == "ddp":
        extra = plan.gradients_gib
        return replace(plan, what=f"{plan.what} ddp/{ranks}", peak_gib=round(plan.peak_gib + extra, 4),
                       gradients_gib=round(plan.gradients_gib + extra, 4), settings={**s, "parallel": derived})
    sharded = s["transformer_weights_gib"] + plan.trainable_gib + plan.gradients_gib + plan.optimizer_gib
    whole_blocks = 2 * s["largest_block_gib"]
    weights = plan.weights_gib - s["transformer_weights_gib"] * (1 - 1 / ranks) + whole_blocks
    return replace(plan, what=f"{plan.what} fsdp/{ranks}", weights_gib=round(weights, 4),
                   trainable_gib=round(plan.trainable_gib / ranks, 4), gradients_gib=round(plan.gradients_gib / ranks, 4),
                   optimizer_gib=round(plan.optimizer_gib / ranks, 4),
                   peak_gib=round(plan.peak_gib - sharded * (1 - 1 / ranks) + whole_blocks, 4),
                   settings={**s, "parallel": derived})


# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' datasheets.
GPU_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "RTX4090": 165.2}


def seconds_at(tflop: float, gpu: str, fraction: float) -> float:
    """Seconds of ``tflop`` on ``gpu`` running at ``fraction`` of its dense bf16 peak: t = F / (peak · fraction)."""
    if gpu not in GPU_PEAK_TFLOPS:
        raise ValueError(f"unknown GPU {gpu!r}: one of {', '.join(GPU_PEAK_TFLOPS)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"the fraction of peak must be in (0, 1], got {fraction}")
    return tflop / (GPU_PEAK_TFLOPS[gpu] * fraction)


def _other_modules(method, model) -> list[torch.nn.Module]:
    """What a step holds besides the trained transformer: the VAE, a frozen teacher, loss networks."""
    out = [model.components.vae]
    teacher = getattr(method, "teacher", None)
    if teacher is not None:
        out += [teacher.transformer, teacher.components.vae]
    out += [m for m in vars(method).values() if isinstance(m, torch.nn.Module)]
    return out


def size_upscale(cfg, method_name: str = "ftd", *, size: int, dtype: torch.dtype = torch.bfloat16,
                 attention: Attention = "flash", tile: int | None = None, overlap: int = 16,
                 offload: bool = False) -> Plan:
    """Memory and FLOPs of one ``fluxsr upscale`` call of a ``size``² output by a model of ``method_name`` (its
    architecture extensions applied, LoRA merged cost-free: the base weights dominate), tiled at ``tile``, the
    blocks' weights in ``model.weights``. ``offload`` (``infer.offload``): only one block's weights are on the
    GPU at a time, derived from the traced call (its peak less every block's weights but the largest)."""
    from fluxsr_core.infer import upscale
    from fluxsr_core.methods import build_method

    with LiveStorages() as mem, attention_as(attention), torch.inference_mode():
        method = build_method(method_name, cfg)
        model = meta_sr_model(cfg, dtype, method.guidance)
        method.extend(model)
        with torch.device("meta"):
            image = torch.empty(1, 3, size // 4, size // 4)
        before, mem.peak = mem.live, mem.live
        with flop_counter() as flops:
            upscale(model, method, image, scale=4.0, tile=tile, overlap=overlap, color_fix="none")
        peak = mem.peak
    transformer = model.transformer
    weights = tensor_bytes([*held(transformer), *held(model.components.vae)])
    blocks = [tensor_bytes(held(b)) for b in model.components.backbone.blocks(transformer)]
    if offload:  # the GPU holds the non-block modules and one block
        weights, peak = weights - sum(blocks) + max(blocks), peak - sum(blocks) + max(blocks)
    return Plan(what=f"upscale {method_name}", preset=cfg.preset, resolution=size, batch=1, attention=attention,
                parameters=parameter_count(transformer), trainable_parameters=0,
                weights_gib=_gib(weights), trainable_gib=0.0, gradients_gib=0.0, optimizer_gib=0.0,
                activations_gib=_gib(peak - before), peak_gib=_gib(peak),
                tflop=round(flops.get_total_flops() / 1e12, 6),
                settings={"dtype": str(dtype).removeprefix("torch."), "weights": cfg.model.weights, "tile": tile,
                          "overlap": overlap, "offload": offload})
