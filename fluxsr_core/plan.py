"""Plans of memory and FLOPs for a training step or an inference call, without a GPU and without weights.

The real step code runs on meta tensors (shapes and dtypes, no data): the preset's transformer and VAE are
built from their configs under ``torch.device("meta")``, the method and the Trainer's LoRA, unfrozen modules
and AdamW are the real ones, and one step is the Trainer's ``compute_loss`` + backward + optimiser step.

- Memory: ``LiveStorages``, a dispatch mode that counts the bytes of every storage alive (each op's outputs,
  freed when the storage is: a weakref finalizer) and keeps the peak. The figure is what the caching allocator
  would have to hold at least (no fragmentation, no CUDA context, no workspace): a lower bound of
  ``torch.cuda.max_memory_allocated`` by construction, and equal to it up to those.
- Attention: on meta, SDPA falls back to a math path that materialises the N×N scores, which no GPU run of
  FLUX does. ``attention="flash"`` (the default) runs SDPA as the flash kernel does (its meta kernel keeps
  O(N) memory: output + log-sum-exp), except where the code forces the math backend (MeanFlow's JVP pass,
  which materialises the scores on a GPU too); ``attention="math"`` keeps the fallback. The figure says which.
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over the same step (matmuls, convolutions, attention).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode


GiB = 2 ** 30
Attention = Literal["flash", "math"]


class LiveStorages(TorchDispatchMode):
    """Bytes of the storages alive while the mode is on (plus ``baseline``), and their peak.

    Every tensor an op returns is looked at once per storage; its bytes count until the storage is freed
    (``weakref.finalize`` on the storage, which PyTorch keeps as one Python object while it lives)."""

    def __init__(self, baseline: int = 0):
        super().__init__()
        self.live = self.peak = baseline
        self._seen: set[int] = set()

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._seen:
            return
        self._seen.add(key)
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and not t.is_sparse:
                self._track(t)
        return out


def tensor_bytes(tensors) -> int:
    """Bytes of distinct storages among ``tensors``."""
    seen, total = set(), 0
    for t in tensors:
        s = t.untyped_storage()
        if id(s) not in seen:
            seen.add(id(s))
            total += s.nbytes()
    return total


def _flash_sdpa(original: Callable) -> Callable:
    """SDPA as the flash kernel runs it, on meta: O(N) memory (output + log-sum-exp saved for backward), where the
    backend is not forced to math (``sdpa_kernel(SDPBackend.MATH)`` turns flash off: then the original runs)."""
    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if query.device.type != "meta" or attn_mask is not None or not torch.backends.cuda.flash_sdp_enabled():
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, enable_gqa=enable_gqa)
        return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal,
                                                                   False, scale=scale)[0]

    return sdpa


@contextlib.contextmanager
def attention_as(kind: Attention):
    """Within this block meta SDPA runs as ``kind`` ("flash": the GPU's kernel; "math": the N×N fallback)."""
    if kind == "math":
        yield
        return
    with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention",
                           _flash_sdpa(torch.nn.functional.scaled_dot_product_attention)):
        yield


def nf4_matmul_flops(a_shape, b_shape, shape_b, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of bitsandbytes' fused 4-bit matmuls (``gemm_4bit``, ``gemv_4bit``): 2·M·K·N, as a dense matmul
    of A (M, K) by the dequantised (N, K) weight; ``FlopCounterMode`` does not know these ops."""
    m = 1
    for d in a_shape[:-1]:
        m *= d
    return 2 * m * a_shape[-1] * shape_b[0]


class _NoModuleTracking:
    """Stands in for ``FlopCounterMode``'s module tracker: every count goes to the total ("Global"). The tracker's
    backward hooks on module outputs keep gradient checkpointing's recomputed activations alive until the step
    ends, which the memory count then sees (measured: a plan's activations grew with every checkpointed block)."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def flop_counter():
    """``FlopCounterMode`` for totals only (``_NoModuleTracking``), also counting bitsandbytes' 4-bit matmuls."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    for name in ("gemm_4bit", "gemv_4bit"):  # registered once bitsandbytes is imported (diffusers imports it)
        op = getattr(torch.ops.bitsandbytes, name, None)
        if op is not None:
            mapping[op] = nf4_matmul_flops  # keyed by the overload packet, as FlopCounterMode looks ops up
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    counter.mod_tracker = _NoModuleTracking()
    return counter


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


def _gib(n: int | float) -> float:
    return round(n / GiB, 4)


def meta_components(preset: str, dtype: torch.dtype, weights: str = "full", architecture: dict | None = None,
                    backbone: str = "flux1-dev"):
    """The backbone's transformer and VAE at the preset's size built from their configs on the meta device (no
    weights read, none allocated), the blocks' weights in ``weights`` as ``load_components`` holds them
    (bitsandbytes' NF4 layers quantise on meta through its fake kernels), and a meta text condition of the
    preset's shape. ``architecture`` overrides entries of the transformer config (a reduced depth, checked against
    a real step)."""
    from fluxsr_core import backbones
    from fluxsr_core.config import ModelConfig
    from fluxsr_core.models import low_vram
    from fluxsr_core.models.presets import FluxComponents
    from fluxsr_core.models.velocity import TextCondition

    spec = backbones.get(backbone)
    meta = torch.device("meta")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in the dtype: no float32 copy first
    try:
        with meta:
            transformer, vae, scheduler, prompt = spec.build_unloaded("tiny" if preset == "tiny" else "full",
                                                                      architecture)
    finally:
        torch.set_default_dtype(previous)
    low_vram.apply_weights(transformer, spec.blocks(transformer), weights, meta, dtype)
    components = FluxComponents(transformer=transformer, vae=vae, prompt_encoder=None, scheduler=scheduler,
                                identity=f"{preset}-meta", device=meta,
                                dtype=dtype, backbone=spec,
                                config=ModelConfig(preset=preset, weights=weights, backbone=backbone))
    return components, TextCondition(*prompt)


def _meta_sample(resolution: int, backbone) -> dict[str, torch.Tensor]:
    h, c = resolution // backbone.vae_factor, backbone.latent_channels
    with torch.device("meta"):
        return {"z_L": torch.empty(c, h, h), "z0": torch.empty(c, h, h), "noise": torch.empty(c, h, h),
                "hr": torch.empty(3, resolution, resolution)}


def _sr_model(cfg, dtype: torch.dtype, guidance: float, architecture: dict | None = None):
    from fluxsr_core.models.sr_model import SRModel

    components, cond = meta_components(cfg.preset, dtype, cfg.model.weights, architecture, cfg.model.backbone)
    return SRModel(components, cond=cond, guidance=guidance)


def _allocate_optimizer_state(trainer) -> None:
    """AdamW's state as the first real step leaves it, without running that step: zero gradients, one
    optimiser step, gradients dropped (the state's tensors are what the optimiser allocates for them)."""
    for p in trainer.params:
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def plan_train(cfg, method_name: str, *, resolution: int, dtype: torch.dtype = torch.bfloat16,
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
            teacher = _sr_model(cfg, dtype, method.guidance, architecture)
            build_method(method.distils, cfg).extend(teacher)
            method.set_teacher(teacher)
        model = _sr_model(cfg, dtype, method.guidance, architecture)
        dataset = [_meta_sample(resolution, model.components.backbone)] * max(1, cfg.train.batch_size)
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
                attention=attention, parameters=_parameters(transformer),
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


def held(module: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors a module holds: parameters, buffers, and its NF4 layers' quantisation state (absmax, code),
    which bitsandbytes keeps beside the packed weights rather than as parameters."""
    out = [*module.parameters(), *module.buffers()]
    for m in module.modules():
        qs = getattr(getattr(m, "weight", None), "quant_state", None)
        if qs is not None:
            out += [t for t in (qs.absmax, qs.code) if torch.is_tensor(t)]
    return out


def _parameters(module: torch.nn.Module) -> int:
    """Parameters as the unquantised model counts them (a packed NF4 weight holds two a byte)."""
    total = 0
    for m in module.modules():
        for p in m.parameters(recurse=False):
            shape = getattr(getattr(p, "quant_state", None), "shape", None)
            total += shape.numel() if shape is not None else p.numel()
    return total


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


def plan_upscale(cfg, method_name: str = "ftd", *, size: int, dtype: torch.dtype = torch.bfloat16,
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
        model = _sr_model(cfg, dtype, method.guidance)
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
                parameters=_parameters(transformer), trainable_parameters=0,
                weights_gib=_gib(weights), trainable_gib=0.0, gradients_gib=0.0, optimizer_gib=0.0,
                activations_gib=_gib(peak - before), peak_gib=_gib(peak),
                tflop=round(flops.get_total_flops() / 1e12, 6),
                settings={"dtype": str(dtype).removeprefix("torch."), "weights": cfg.model.weights, "tile": tile,
                          "overlap": overlap, "offload": offload})
