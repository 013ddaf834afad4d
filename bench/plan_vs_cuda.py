"""The plan beside the peak of the same training step run for real.

``fluxsr plan`` traces a step on meta tensors. Here the same step (the Trainer's loss, backward and optimiser
step, the second step so the optimiser state exists) runs on real tensors of the same architecture, random
weights, and its peak is measured by the machine, not by fluxsr's tracker:

- CUDA: ``torch.cuda.max_memory_allocated()`` over the step (the caching allocator's own count; the CUDA
  context and allocator slack are not in it, nor in the plan).
- CPU: the kernel's peak resident set of the process during the step (``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before it) less the resident set before the model was built (the libraries):
  what the step's tensors made resident, allocator overhead included.

    .venv/bin/python bench/plan_vs_cuda.py                       # CUDA: every case; CPU: the CPU-sized ones
    .venv/bin/python bench/plan_vs_cuda.py --case reduced-flux --device cpu --json

Cases: ``tiny`` (the tiny preset; GPU only: its step's few MB are below what a process's resident set
resolves), ``reduced-flux`` (FLUX.1-dev's full width, hidden 3072, with 1 double and 1
single block: every layer shape of the real model; 0.55 B parameters), ``flux-dev`` (the whole architecture,
12 B: a GPU with > 40 GB). With no GPU at hand only the CPU figures are measured, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GiB = 2 ** 30
REDUCED_FLUX = {"num_layers": 1, "num_single_layers": 1}
CASES = {  # preset, architecture override, resolution, method, GPU only
    "tiny": ("tiny", None, 128, "ftd", True),  # its step holds a few MB: below what a process's RSS resolves
    "reduced-flux": ("tiny", "reduced", 64, "ftd", False),
    "flux-dev": ("flux-dev", None, 512, "ftd", True),
}


def architecture(name: str | None) -> dict | None:
    """The transformer config override of a case: FLUX.1-dev's width, reduced depth (on the tiny VAE)."""
    if name != "reduced":
        return None
    from fluxsr_core.backbones.flux1 import configs

    return {**configs.TRANSFORMER_CONFIG, **REDUCED_FLUX}


def real_model(cfg, arch: dict | None, device: torch.device, dtype: torch.dtype, guidance: float):
    """The plan's model on real tensors: the same meta-built architecture given storage on ``device`` and small
    random weights, then the blocks' weights in ``model.weights`` as ``load_components`` holds them."""
    from fluxsr_core.models import low_vram
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.models.velocity import TextCondition
    from fluxsr_core.plan import meta_components

    components, cond = meta_components(cfg.preset, dtype, "full", arch, cfg.model.backbone)
    g = torch.Generator(device).manual_seed(0)
    for module in (components.transformer, components.vae):
        module.to_empty(device=device)
        with torch.no_grad():
            for t in (*module.parameters(), *module.buffers()):
                if t.is_floating_point():
                    t.uniform_(-0.02, 0.02, generator=g)
    low_vram.apply_weights(components.transformer, components.backbone.blocks(components.transformer),
                           cfg.model.weights, device, dtype)
    components.device = device
    real_cond = TextCondition(torch.randn(cond.embeds.shape, generator=g, device=device, dtype=dtype),
                              torch.randn(cond.pooled.shape, generator=g, device=device, dtype=dtype))
    return SRModel(components, cond=real_cond, guidance=guidance)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(cfg, method_name: str, resolution: int, arch: dict | None, device: torch.device,
            dtype: torch.dtype, timing: dict | None = None) -> float:
    """GiB at the peak of the second training step, measured by the machine (see the module docstring);
    ``timing``, when given, gets the second step's wall seconds (``"step_seconds"``, synchronised on CUDA)."""
    import ctypes
    import gc

    from fluxsr_core.methods import build_method
    from fluxsr_core.train.loop import Trainer

    cfg = cfg.model_copy(deep=True)
    cfg.loss.allow_random_lpips_backbone = True
    gc.collect()
    baseline = _rss_bytes() if device.type == "cpu" else 0
    method = build_method(method_name, cfg)
    if method.distils:
        teacher = real_model(cfg, arch, device, dtype, method.guidance)
        build_method(method.distils, cfg).extend(teacher)
        method.set_teacher(teacher)
    model = real_model(cfg, arch, device, dtype, method.guidance)
    backbone = model.components.backbone
    h, c = resolution // backbone.vae_factor, backbone.latent_channels
    g = torch.Generator().manual_seed(1)
    sample = {"z_L": torch.randn(c, h, h, generator=g), "z0": torch.randn(c, h, h, generator=g),
              "noise": torch.randn(c, h, h, generator=g), "hr": torch.rand(3, resolution, resolution, generator=g)}
    trainer = Trainer(method, model, [sample] * cfg.train.batch_size, lora_cfg=cfg.lora, train_cfg=cfg.train)

    def step(k: int) -> None:
        terms, _ = trainer.compute_loss(trainer.batch_for_step(k), trainer.step_generator(k))
        terms["total"].backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    step(1)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        step(2)
        torch.cuda.synchronize()
        if timing is not None:
            timing["step_seconds"] = time.perf_counter() - t0
        return torch.cuda.max_memory_allocated() / GiB
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from now
    t0 = time.perf_counter()
    step(2)
    if timing is not None:
        timing["step_seconds"] = time.perf_counter() - t0
    return (_hwm_bytes() - baseline) / GiB


def run_case(name: str, device: torch.device, method: str | None = None) -> dict:
    from fluxsr_core.config import presets as configs
    from fluxsr_core.plan import size_train_step

    preset, arch_name, resolution, default_method, _ = CASES[name]
    cfg = configs.tiny() if preset == "tiny" else configs.flux_dev()
    cfg.train.batch_size = 1
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    arch = architecture(arch_name)
    method = method or default_method
    planned = size_train_step(cfg, method, resolution=resolution, dtype=dtype, architecture=arch)
    measured = measure(cfg, method, resolution, arch, device, dtype)
    return {"case": name, "method": method, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
            "resolution": resolution, "parameters": planned.parameters, "planned_peak_gib": planned.peak_gib,
            "measured_peak_gib": round(measured, 4), "ratio": round(planned.peak_gib / measured, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(CASES), action="append", help="repeatable; default every case the "
                                                                           "device can run")
    ap.add_argument("--method", default=None, help="the training method (default ftd)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    names = args.case or [n for n, c in CASES.items() if device.type == "cuda" or not c[4]]
    if device.type != "cuda":
        print("no CUDA device here: CPU figures only (peak resident memory); no GPU figure is measured",
              file=sys.stderr)
    rows = [run_case(n, device, args.method) for n in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'case':14s} {'method':8s} {'device':6s} {'res':>5s} {'params':>8s} {'planned GiB':>12s} "
          f"{'measured GiB':>13s} {'plan/measured':>14s}")
    for r in rows:
        print(f"{r['case']:14s} {r['method']:8s} {r['device']:6s} {r['resolution']:5d} {r['parameters'] / 1e9:7.3f}B "
              f"{r['planned_peak_gib']:12.3f} {r['measured_peak_gib']:13.3f} {r['ratio']:14.3f}")


if __name__ == "__main__":
    main()
