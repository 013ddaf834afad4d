"""peft LoRA adapters on the FLUX transformer, exported in diffusers' FLUX LoRA format.

The student is the teacher's transformer plus LoRA (method.md section 1):
``add_lora`` freezes every base weight and adds trainable adapters with
``init_lora_weights="gaussian"`` (A gaussian, B zero), so the student starts
exactly at the teacher. The effective LoRA scale is ``alpha / rank`` (1.0 with the
default alpha = rank).

Exports go through ``get_peft_model_state_dict`` and
``FluxPipeline.save_lora_weights`` (safetensors, keys ``transformer.<module>.lora_A/B.weight``,
adapter config stored as metadata), so ``FluxPipeline.load_lora_weights(dir)`` and
``transformer.load_lora_adapter(file, prefix="transformer")`` both read them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fluxsr_core.atomic import atomic_path
from fluxsr_core.config import LoraConfig
from fluxsr_core.errors import InputNotFoundError, UsageError

ADAPTER = "default"
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def add_lora(transformer, cfg: LoraConfig, seed: int | None = None) -> list[torch.nn.Parameter]:
    """Freeze ``transformer`` and add adapter ``"default"``; returns the trainable LoRA parameters (in order).

    ``seed`` makes the gaussian init of lora_A reproducible without touching the caller's RNG stream.
    """
    from peft import LoraConfig as PeftLoraConfig

    if cfg.target_modules is None:
        raise ValueError("lora.target_modules is unresolved: a method's lora_targets(targets, backbone) names them "
                         "(null = the backbone's)")
    transformer.requires_grad_(False)
    peft_cfg = PeftLoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha if cfg.alpha is not None else cfg.rank,
        init_lora_weights="gaussian", target_modules=list(cfg.target_modules),
    )
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        transformer.add_adapter(peft_cfg, adapter_name=ADAPTER)
    lift_float8_adapters(transformer)
    params = lora_parameters(transformer)
    for p in params:
        p.requires_grad_(True)
    if not params:
        raise ValueError(f"no LoRA parameters were added: no module matched target_modules {cfg.target_modules}")
    return params


FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def lift_float8_adapters(transformer) -> bool:
    """peft gives an adapter its base layer's dtype: over fp8-stored weights (``model.weights=fp8``) the LoRA
    would be fp8 too. Adapters go to the dtype the model computes in (that of its first floating weight neither
    fp8 nor LoRA: the embedders, which no low-VRAM mode stores in fp8); True if any did."""
    dtype = next(p.dtype for n, p in transformer.named_parameters()
                 if p.is_floating_point() and p.dtype not in FLOAT8 and "lora_" not in n)
    lifted = [p for p in lora_parameters(transformer) if p.dtype in FLOAT8]
    for p in lifted:
        p.data = p.data.to(dtype)
    return bool(lifted)


def has_adapter(transformer) -> bool:
    """Whether ``add_lora`` gave the transformer its adapter (a full fine-tune, ``lora.rank: 0``, has none)."""
    return ADAPTER in (getattr(transformer, "peft_config", None) or {})


def full_modules(transformer) -> dict[str, torch.nn.Module]:
    """Every top-level child of the transformer that holds parameters, by name: what a full fine-tune (or base
    pretraining) trains, checkpoints and exports as its modules."""
    return {name: m for name, m in transformer.named_children() if any(True for _ in m.parameters())}


def lora_parameters(transformer) -> list[torch.nn.Parameter]:
    """The LoRA parameters, in ``named_parameters`` order (stable across processes)."""
    return [p for n, p in transformer.named_parameters() if "lora_" in n]


def lora_state_dict(transformer) -> dict[str, torch.Tensor]:
    """peft state dict of the adapter: ``<module>.lora_A.weight`` ... (no adapter name, no prefix), detached on CPU;
    empty without an adapter."""
    from peft.utils import get_peft_model_state_dict

    if not has_adapter(transformer):
        return {}
    sd = get_peft_model_state_dict(transformer, adapter_name=ADAPTER)
    return {k: full_tensor(v).detach().to("cpu").contiguous() for k, v in sd.items()}


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP-sharded DTensor (a collective: every rank must call it), else ``value``."""
    from torch.distributed.tensor import DTensor

    return value.full_tensor() if isinstance(value, DTensor) else value


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor) laid out as ``like``: sharded the same way when ``like`` is a DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(like, DTensor):
        return distribute_tensor(value.to(like.device, like.dtype), like.device_mesh, like.placements)
    return value


def adapter_metadata(transformer) -> dict:
    """The adapter's peft config as a dict (rank, alpha, targets), saved beside the weights.

    Canonical (``canonical_metadata``): peft keeps ``target_modules`` as a set, whose order
    follows the process's hash seed, so without sorting two identical trainings would write
    safetensors headers, and so files, with different bytes.
    """
    return canonical_metadata(transformer.peft_config[ADAPTER].to_dict())


def canonical_metadata(value):
    """``value`` with every set (at any depth) as a sorted list and every dict with sorted keys.

    Lists and tuples keep their order (it means something: ``layers_to_transform``); the result
    serialises to the same JSON in every process, whatever ``PYTHONHASHSEED`` is.
    """
    if isinstance(value, dict):
        return {k: canonical_metadata(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (set, frozenset)):
        items = [canonical_metadata(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if isinstance(value, (list, tuple)):
        return [canonical_metadata(v) for v in value]
    return value


def save_lora(transformer, directory: str | Path, pipeline: str,
              tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``directory/pytorch_lora_weights.safetensors`` in the LoRA format of the diffusers ``pipeline`` class
    (the backbone's ``Backbone.pipeline``: its ``load_lora_weights`` reads the file); returns the file.

    ``tensors``: the adapter's ``lora_state_dict``, when already gathered (FSDP: on every rank).
    """
    import diffusers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    getattr(diffusers, pipeline).save_lora_weights(
        str(directory), transformer_lora_layers=tensors if tensors is not None else lora_state_dict(transformer),
        transformer_lora_adapter_metadata=adapter_metadata(transformer),
        weight_name=LORA_WEIGHT_NAME, safe_serialization=True,
    )
    canonical_safetensors_header(directory / LORA_WEIGHT_NAME)
    return directory / LORA_WEIGHT_NAME


def canonical_safetensors_header(path: str | Path) -> None:
    """Rewrite the header of the safetensors file ``path`` with its ``__metadata__`` keys sorted.

    safetensors (0.8) keeps the metadata in a Rust ``HashMap`` with a random per-process
    order (safetensors issue #584), so a file with two metadata entries (diffusers writes
    ``format`` and ``lora_adapter_metadata``) gets one of two headers at random. The tensor
    entries and data are untouched; the header is canonical compact JSON, space-padded to a
    multiple of 8 bytes as safetensors pads it (data offsets are relative to the data, so they hold).
    """
    import struct

    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", None)
    canonical = {**({"__metadata__": dict(sorted(meta.items()))} if meta else {}), **header}
    raw = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode()
    raw += b" " * (-len(raw) % 8)
    if len(raw) == n:  # the usual case: same JSON, keys reordered; rewrite the header in place
        with open(path, "r+b") as f:
            f.seek(8)
            f.write(raw)
        return
    with atomic_path(path) as tmp, open(path, "rb") as src, open(tmp, "wb") as dst:
        src.seek(8 + n)
        dst.write(struct.pack("<Q", len(raw)) + raw)
        while block := src.read(1 << 24):
            dst.write(block)


def weight_file(path: str | Path) -> Path:
    """The LoRA weights file of ``path`` (the file itself, or the one inside a directory); FileNotFoundError naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
    if not path.is_file():
        raise InputNotFoundError(f"no LoRA weights at {path}: expected a {LORA_WEIGHT_NAME} written by save_lora / training")
    return path


def load_lora(transformer, path: str | Path, adapter_name: str = ADAPTER) -> None:
    """Add the exported LoRA at ``path`` (file or directory) to a plain transformer, for inference.

    Uses diffusers' ``load_lora_adapter(prefix="transformer")``, the same path as
    ``FluxPipeline.load_lora_weights``; the weights are frozen.
    """
    transformer.load_lora_adapter(str(weight_file(path)), prefix="transformer", adapter_name=adapter_name)
    if lift_float8_adapters(transformer) and adapter_name == ADAPTER:
        set_lora_weights(transformer, path)  # the file's values again, into the lifted (full-precision) adapters
    transformer.requires_grad_(False)


def set_lora_weights(transformer, path: str | Path) -> None:
    """Overwrite the values of the existing adapter ``"default"`` (made by ``add_lora``) from an export: resume."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    raw = load_file(str(weight_file(path)))
    sd = {k[len("transformer."):]: v for k, v in raw.items() if k.startswith("transformer.")}
    current = get_peft_model_state_dict(transformer, adapter_name=ADAPTER)
    expected = set(current)
    if set(sd) != expected:
        missing, extra = sorted(expected - set(sd))[:3], sorted(set(sd) - expected)[:3]
        raise UsageError(f"LoRA file {path} does not match this adapter (missing {missing}, unexpected {extra}): "
                         "different lora.rank/target_modules or model?")
    sd = {k: shard_like(v, current[k]) for k, v in sorted(sd.items())}  # same order on every rank (collectives)
    result = set_peft_model_state_dict(transformer, sd, adapter_name=ADAPTER)
    bad = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if bad:
        raise ValueError(f"LoRA keys not loaded from {path}: {bad[:3]}")
