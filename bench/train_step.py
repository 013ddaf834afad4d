"""Benchmark: cost of one training step of each method against a plain flow-matching LoRA step.

What a FluxSR step costs is the question behind the training budget: Algorithm 1 runs
the transformer twice (the FTD pass at a random t ∈ [T_L, 1] and the one-step pass at
T_L), decodes the one-step latent with the VAE and back-propagates MSE + TV-LPIPS (two
LPIPS forwards) + ADL through all of it, where an ordinary LoRA fine-tune of the same
transformer runs it once on a latent. Both modes run in the same process on the same
model, the same LoRA adapter, the same batches, interleaved so that drift hits both:

  (a) plain flow-matching LoRA step: x_t = (1-t)·z0 + t·ε, t ~ U[0, 1], target ε - z0,
      MSE, backward, AdamW (its own optimiser, on the Trainer's LoRA parameters);
  (b) FluxSR step: ``fluxsr_core.train.loop.Trainer.train_step`` (Algorithm 1: FTD pass +
      one-step pass + VAE decode + MSE + TV-LPIPS + ADL, backward, AdamW);
  (c) SR-teacher step (method sr-teacher): one pass of the LR-conditioned flow, ℓ1, backward;
  (d) OFTSR distillation step (method oftsr): the student at τ and τ+dτ, the frozen teacher's
      step (Euler 1, midpoint 2 passes), L_distill + L_align + L_BC, backward;
  (e) MeanFlow distillation step (method meanflow): the teacher's guided velocity (2 passes),
      one student pass under torch.func.jvp (forward-mode AD, math attention: what the JVP
      costs is this row against the SR-teacher row), the adaptive MeanFlow loss, backward.

(b)-(d) each train their own copy of the transformer (the OFTSR one also holds its frozen
teacher): ``--methods`` picks some (the full-size model is 24 GB a copy in bf16).
Printed per mode: network evaluations per step (student and frozen-teacher transformer
forward passes, counted by a hook as the step runs), s/step (median over --steps timed steps after --warmup), peak memory
(CUDA: torch.cuda.max_memory_allocated, weights included, and its growth over the level
just before the step; CPU: peak process RSS sampled with psutil every ~1 ms during one
dedicated step, and its growth over the RSS just before it, after malloc_trim, so an
approximation), FLOPs of one step counted once with torch.utils.flop_counter.FlopCounterMode
(forward + backward, recomputation under gradient checkpointing included; attention
included on CPU too), and achieved TFLOP/s = FLOPs / median step time; then the ratios
FluxSR/plain. On CUDA both steps run under bf16 autocast with float32 LoRA weights, as
the Trainer does. The data are random in-memory tensors of the right shapes (no store
reads): this measures compute, not I/O (bench/data.py measures the store).

    .venv/bin/python bench/train_step.py                         # tiny preset, CPU, 256²
    .venv/bin/python bench/train_step.py --model flux-dev-random  # on a GPU: FLUX.1-dev architecture,
                                                                  # random weights, 1024², rank 64, grad. ckpt
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from measure import GiB, count_flops, device_name, measure_memory, sync, timed  # noqa: E402

MODE_NAMES = {"ftd": "FluxSR step (Algorithm 1)", "sr-teacher": "SR-teacher flow step",
              "oftsr": "OFTSR distillation step", "meanflow": "MeanFlow distillation step"}


# -- model --------------------------------------------------------------------------------------------
def config_for(model: str):
    """The named config the benchmark starts from: tiny() or flux_dev()."""
    from fluxsr_core.config import presets as configs

    cfg = configs.tiny() if model == "tiny" else configs.flux_dev()
    # The LPIPS backbone may be absent (no downloads); a random one costs exactly the same FLOPs.
    cfg.loss.allow_random_lpips_backbone = True
    return cfg


def build_components(model: str, cfg, device: str):
    """tiny: ``load_components(cfg.model)``; flux-dev-random: FLUX.1-dev architecture, random weights, bf16."""
    if model == "tiny":
        from fluxsr_core.models import load_components

        cfg.model.device = device
        return load_components(cfg.model)
    return flux_dev_random(device)


def flux_dev_random(device: str):
    """The full FLUX.1-dev architecture (transformer + VAE) with random weights in bf16 and random text embeddings
    (no weights can be downloaded here): what every ``--model flux-dev-random`` benchmark runs."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

    from fluxsr_core.backbones import flux1
    from fluxsr_core.backbones.flux1 import configs as flux_dev
    from fluxsr_core.models.presets import FluxComponents

    dtype = torch.bfloat16
    tr = flux1.random_transformer(dtype=dtype, device=device).eval().requires_grad_(False)
    with torch.device(device):
        vae = AutoencoderKL(**flux_dev.VAE_CONFIG).to(dtype).eval().requires_grad_(False)

    class RandomText:
        def encode(self, prompts, dev):
            g = torch.Generator("cpu").manual_seed(0)
            n = len(prompts)
            return (torch.randn(n, flux_dev.MAX_SEQUENCE_LENGTH, 4096, generator=g).to(dev, dtype),
                    torch.randn(n, 768, generator=g).to(dev, dtype))

    return FluxComponents(transformer=tr, vae=vae, prompt_encoder=RandomText(),
                          scheduler=FlowMatchEulerDiscreteScheduler(**flux_dev.SCHEDULER_CONFIG),
                          identity="flux-dev-random", device=torch.device(device), dtype=dtype,
                          backbone=flux1.FLUX1_DEV)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """The options every model benchmark takes: --model, --threads, --device."""
    ap.add_argument("--model", choices=["tiny", "flux-dev-random"], default="tiny",
                    help="tiny: configs.tiny() preset (CPU-sized); flux-dev-random: configs.flux_dev() with the full "
                         "FLUX.1-dev transformer + VAE built with random weights in bf16 (needs a GPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default=default_device(), help="cuda when available, else cpu")


def setup_device(args, ap: argparse.ArgumentParser) -> torch.device:
    """Apply --threads and check --model against --device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.model == "flux-dev-random" and device.type != "cuda":
        ap.error("--model flux-dev-random needs a CUDA device (12 B parameters); use --model tiny on CPU")
    return device


# -- the two steps --------------------------------------------------------------------------------------
def random_dataset(n: int, resolution: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` training samples of the Trainer's layout: z_L, z0, noise (16, h, w); hr (3, 8h, 8w) in [0, 1]."""
    h = resolution // 8
    g = torch.Generator().manual_seed(seed)
    return [{"z_L": torch.randn(16, h, h, generator=g), "z0": torch.randn(16, h, h, generator=g),
             "noise": torch.randn(16, h, h, generator=g), "hr": torch.rand(3, resolution, resolution, generator=g)}
            for _ in range(n)]


def method_trainer(name: str, args, cfg, dataset):
    """A Trainer of method ``name`` on its own copy of the model; a distilled method gets a frozen teacher of the
    method it distils (untrained: the cost is the same), built like the worker builds it."""
    from fluxsr_core.methods import build_method
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.train.loop import Trainer

    method = build_method(name, cfg)
    if method.distils:
        teacher = SRModel(build_components(args.model, cfg, args.device), guidance=method.guidance)
        build_method(method.distils, cfg).extend(teacher)
        method.set_teacher(teacher)
    model = SRModel(build_components(args.model, cfg, args.device), guidance=method.guidance)
    return Trainer(method, model, dataset, lora_cfg=cfg.lora, train_cfg=cfg.train)


def counted_step(fn, networks: dict[str, torch.nn.Module]) -> dict[str, int]:
    """Run ``fn`` once and count each network's forward passes in it (a pre-forward hook on each)."""
    from fluxsr_core.benchmark import counted_forwards

    with contextlib.ExitStack() as stack:
        calls = {name: stack.enter_context(counted_forwards(net)) for name, net in networks.items()}
        fn()
    return {name: c[0] for name, c in calls.items()}


def plain_step_fn(trainer, guidance: float):
    """A plain flow-matching LoRA step on the Trainer's transformer, LoRA parameters and condition."""
    from fluxsr_core.models.velocity import predict_velocity

    optimizer = torch.optim.AdamW(trainer.params, lr=trainer.train_cfg.learning_rate)
    device = trainer.device
    use_autocast = device.type == "cuda"

    def step(k: int, batch: dict[str, torch.Tensor]) -> float:
        optimizer.zero_grad(set_to_none=True)
        z0, eps = batch["z0"], batch["noise"]
        t = torch.rand(z0.shape[0], generator=torch.Generator().manual_seed(k)).to(device)
        tt = t.view(-1, 1, 1, 1)
        x_t = (1 - tt) * z0 + tt * eps
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_autocast else contextlib.nullcontext()
        with autocast:
            v = predict_velocity(trainer.model.components.backbone, trainer.transformer, x_t, t, trainer.model.cond, guidance).float()
        loss = torch.nn.functional.mse_loss(v, eps - z0)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


# -- main -------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--resolution", type=int, default=None,
                    help="HR side in pixels, multiple of 16 (default 256 tiny, 1024 flux-dev-random)")
    ap.add_argument("--batch", type=int, default=None, help="samples per step (default train.batch_size of the config)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per mode (the median is reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per mode")
    ap.add_argument("--rank", type=int, default=None, help="LoRA rank (default lora.rank of the config: 8 tiny, 64 flux-dev)")
    ap.add_argument("--methods", nargs="+", choices=list(MODE_NAMES), default=list(MODE_NAMES),
                    help="the methods whose training step is timed (default all; the plain step comes with ftd)")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                    help="recompute activations in backward (default train.gradient_checkpointing: off tiny, on flux-dev)")
    args = ap.parse_args()
    device = setup_device(args, ap)
    resolution = args.resolution or (256 if args.model == "tiny" else 1024)
    if resolution % 16:
        ap.error(f"--resolution must be a multiple of 16, got {resolution}")

    cfg = config_for(args.model)
    if args.batch is not None:
        cfg.train.batch_size = args.batch
    if args.rank is not None:
        cfg.lora.rank = args.rank
    if args.gradient_checkpointing is not None:
        cfg.train.gradient_checkpointing = args.gradient_checkpointing

    dataset = random_dataset(max(4, 2 * cfg.train.batch_size), resolution)
    trainers = {m: method_trainer(m, args, cfg, dataset) for m in args.methods}
    first = next(iter(trainers.values()))
    modes = {}
    if "ftd" in trainers:  # the plain step runs on the FTD trainer's (unwidened) transformer and LoRA
        modes["plain flow-matching LoRA"] = (trainers["ftd"], plain_step_fn(trainers["ftd"], cfg.train.guidance))
    for m, trainer in trainers.items():
        modes[MODE_NAMES[m]] = (trainer, lambda k, b, t=trainer: t.train_step(k, b))
    n_lora = {m: sum(p.numel() for p in t.params) for m, t in trainers.items()}

    def run(name: str, k: int):
        trainer, step = modes[name]
        batch = trainer.batch_for_step(k)  # outside the timing: data loading is not measured here
        for p in trainer.params:  # every step starts without gradients (each zero_grad(set_to_none) anyway)
            p.grad = None
        return lambda: step(k, batch)

    def networks(name: str) -> dict[str, torch.nn.Module]:
        trainer = modes[name][0]
        teacher = getattr(trainer.method, "teacher", None)
        return {"student": trainer.transformer, **({"teacher": teacher.transformer} if teacher is not None else {})}

    k = 0
    for _ in range(args.warmup):
        k += 1
        for name in modes:
            run(name, k)()
            sync(device)
    evaluations = {}
    for name in modes:
        k += 1
        evaluations[name] = counted_step(run(name, k), networks(name))
    memory, flops, parts = {}, {}, {}
    for name in modes:
        k += 1
        memory[name] = measure_memory(run(name, k), device)
    for name in modes:
        k += 1
        flops[name], parts[name] = count_flops(run(name, k))
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.steps):  # interleaved, so drift hits every mode alike
        k += 1
        for name in modes:
            times[name].append(timed(run(name, k), device))

    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"\ntrain-step benchmark: model={args.model} device={device_name(device)} res={resolution} "
          f"batch={cfg.train.batch_size} LoRA rank={cfg.lora.rank} "
          f"({', '.join(f'{m} {n / 1e6:.2f} M' for m, n in n_lora.items())} params) "
          f"grad-ckpt={cfg.train.gradient_checkpointing} dtype={first.model.components.dtype}"
          f"{' + bf16 autocast' if device.type == 'cuda' else ''} steps={args.steps} (median) warmup={args.warmup}")
    mem_what = "max_memory_allocated" if device.type == "cuda" else "process RSS"
    print(f"{'mode':28s} {'NFE/step':>12s} {'s/step':>9s} {'min':>9s} {'max':>9s} {'peak GiB':>9s} {'+GiB':>8s} "
          f"{'TFLOP/step':>11s} {'TFLOP/s':>9s}")
    for name in modes:
        peak, growth = memory[name]
        nfe = "+".join(f"{n}{'T' if net == 'teacher' else ''}" for net, n in evaluations[name].items())
        print(f"{name:28s} {nfe:>12s} {med[name]:9.4f} {min(times[name]):9.4f} {max(times[name]):9.4f} "
              f"{peak / GiB:9.3f} {growth / GiB:8.3f} {flops[name] / 1e12:11.5f} {flops[name] / med[name] / 1e12:9.4f}")
    plain = "plain flow-matching LoRA"
    if plain in modes:
        for name in modes:
            if name != plain:
                print(f"ratio {name} / plain: time {med[name] / med[plain]:.2f}x   FLOPs {flops[name] / flops[plain]:.2f}x   "
                      f"step memory (+GiB) {memory[name][1] / max(memory[plain][1], 1):.2f}x")
    for name in modes:
        print(f"FLOPs of {name} by part: " + ", ".join(
            f"{part} {n / 1e12:.5f} T ({100 * n / max(flops[name], 1):.0f}%)" for part, n in parts[name].items() if n))
    print(f"(NFE/step = student transformer forward passes, +nT = the frozen teacher's; peak GiB = {mem_what} "
          "during one step; +GiB = growth over the level just before it; FLOPs by FlopCounterMode, forward+backward; "
          "'transformer' is the student's, a frozen teacher's falls under 'other')")


if __name__ == "__main__":
    main()
