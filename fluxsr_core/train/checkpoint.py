"""Training checkpoints: one directory per step, written atomically, no pickle.

Layout of ``<run_dir>/step-000012/``::

    pytorch_lora_weights.safetensors   LoRA in diffusers' FLUX format (loads for inference as is)
    fluxsr_modules.safetensors         modules the method trains in full besides LoRA (if any)
    fluxsr_model.json                  the model's identity (``fluxsr_core.model_folder``)
    optimizer.safetensors              AdamW per-parameter tensors, keys ``state.<i>.<name>``
    rng.safetensors                    torch CPU RNG state (uint8)
    state.json                         step, optimizer param_groups, LR scheduler state, a user dict

The directory is written as ``step-000012.tmp`` and renamed when complete
(``fluxsr_core.atomic.atomic_dir``), so a directory named ``step-N`` is always a whole
checkpoint; ``*.tmp`` leftovers of a killed writer are removed by ``latest_checkpoint(clean=True)``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from fluxsr_core import atomic, model_folder
from fluxsr_core.models import lora

STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f"step-{step:06d}"


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Split ``optimizer.state_dict()`` into flat tensors (safetensors) and JSON-able param groups.

    A nested dict in a parameter's state (bitsandbytes' 8-bit AdamW wraps its quantisation state in one) is
    flattened as ``state.<idx>.<name>/<key>``."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()  # storages already written (8-bit AdamW shares its quantisation maps): copy repeats
    for idx, entry in sd["state"].items():
        flat = {}
        for name, value in entry.items():
            flat.update({f"{name}/{k}": v for k, v in value.items()} if isinstance(value, dict) else {name: value})
        for name, value in flat.items():
            if not torch.is_tensor(value):
                value = torch.tensor(value)
            value = lora.full_tensor(value).detach().to("cpu").contiguous()
            ptr = value.untyped_storage().data_ptr()
            tensors[f"state.{idx}.{name}"] = value.clone() if ptr in seen else value
            seen.add(ptr)
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], groups: list[dict],
                           params: list[torch.Tensor] | None = None) -> dict:
    """The optimizer state dict; with ``params`` (the optimizer's, in order), state tensors are sharded like them."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key in sorted(tensors, key=lambda k: (int(k.split(".")[1]), k)):  # one order on every rank
        _, idx, name = key.split(".", 2)
        value = tensors[key]
        if params is not None and value.shape == params[int(idx)].shape and value.dim() > 0:
            value = lora.shard_like(value, params[int(idx)])
        entry = state.setdefault(int(idx), {})
        if "/" in name:  # a nested dict of the optimizer's own (optimizer_to_tensors)
            outer, inner = name.split("/", 1)
            entry.setdefault(outer, {})[inner] = value
        else:
            entry[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": groups}


def save_checkpoint(run_dir: str | Path, step: int, *, transformer, optimizer: torch.optim.Optimizer, pipeline: str,
                    scheduler=None, modules: dict[str, torch.nn.Module] | None = None,
                    info: model_folder.ModelInfo | None = None, extra: dict[str, Any] | None = None,
                    write: bool = True) -> Path:
    """Write checkpoint ``step`` under ``run_dir`` atomically; returns the final directory.

    The state is gathered first (a collective when FSDP shards it: every rank calls
    this, and only the one with ``write=True`` writes). ``modules``: the method's fully
    trained modules; ``info``: the model's identity, so a checkpoint is a model folder.
    """
    from safetensors.torch import save_file

    weights = lora.lora_state_dict(transformer)
    module_weights = model_folder.module_state_dict(modules or {})
    tensors, groups = optimizer_to_tensors(optimizer)
    final = step_dir(run_dir, step)
    if not write:
        return final
    # a finished checkpoint of the same step (a re-run) is replaced whole
    with atomic.atomic_dir(final, what=f"checkpoint {final}",
                           kept="the last complete checkpoint is kept and training resumes from it") as tmp:
        model_folder.write_weights(tmp, transformer, weights, module_weights, pipeline)
        if info is not None:
            model_folder.write_info(tmp, info)
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        save_file({"cpu": torch.get_rng_state()}, str(tmp / RNG_FILE))
        state = {"step": step, "param_groups": groups, "extra": extra or {},
                 "scheduler": scheduler.state_dict() if scheduler is not None else None}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    return final


def latest_checkpoint(run_dir: str | Path, clean: bool = False) -> Path | None:
    """The highest complete ``step-N`` directory in ``run_dir`` (None if none); ``clean`` deletes ``*.tmp`` dirs."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for p in run_dir.iterdir():
        if clean and p.is_dir() and p.name.startswith("step-") and p.name.endswith(atomic.DIR_TMP_SUFFIX):
            shutil.rmtree(p, ignore_errors=True)
            continue
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return best[1] if best else None


def load_checkpoint(path: str | Path, *, transformer, optimizer: torch.optim.Optimizer, scheduler=None,
                    modules: dict[str, torch.nn.Module] | None = None, restore_rng: bool = True) -> dict[str, Any]:
    """Restore LoRA values, optimizer and LR-scheduler state and (optionally) the CPU RNG; returns state.json's dict.

    ``transformer`` must already carry the adapter made by ``lora.add_lora`` with
    the same LoraConfig (and the method's ``modules``), and ``optimizer`` must be built over
    ``trainable_parameters`` of the same model.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {STATE_FILE})")
    state = json.loads((path / STATE_FILE).read_text())
    if lora.has_adapter(transformer):
        lora.set_lora_weights(transformer, path)
    if modules:
        model_folder.load_module_state(modules, path / model_folder.MODULES_FILE)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    optimizer.load_state_dict(optimizer_from_tensors(load_file(str(path / OPTIMIZER_FILE)), state["param_groups"],
                                                     params))
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        torch.set_rng_state(load_file(str(path / RNG_FILE))["cpu"])
    return state
