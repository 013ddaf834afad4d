"""A tiny-preset training run that works alone or under ``torchrun`` (gloo on CPU): the parity tests' worker.

``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_trainer.py OUT BATCH STEPS JOBS [RUN_DIR]``
runs each of JOBS (comma-separated ``strategy:method``, e.g. ``ddp:ftd,fsdp:ftd``, one after the other in the
same processes: one launch, one set of imports) with BATCH samples per process (with RUN_DIR, the fsdp jobs
checkpoint every 2 steps there and resume from it) and writes each rank's LoRA tensors and logged records to
``OUT/rank<r>-<strategy>-<method>.safetensors`` / ``.json``. A distilled method (oftsr) distils an untrained
teacher whose condition columns are made non-zero (``helpers.as_if_trained``), so its students' losses are not zero.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from fluxsr_core.config import FluxSRConfig, LoraConfig, ModelConfig, TrainConfig
from fluxsr_core.methods import build_method
from fluxsr_core.methods.ftd import FTD
from fluxsr_core.models import load_components, lora
from fluxsr_core.models.sr_model import SRModel
from fluxsr_core.train.loop import Trainer
from helpers import as_if_trained, latent_samples

N_SAMPLES = 8


def _method(name: str):
    if name == "ftd":
        return FTD(lpips_net="alex", allow_random_lpips_backbone=True)
    method = build_method(name, FluxSRConfig())
    if method.distils:
        teacher = SRModel(load_components(ModelConfig()))
        build_method(method.distils, FluxSRConfig()).extend(teacher)
        method.set_teacher(as_if_trained(teacher))
    return method


def build(batch: int, steps: int, strategy: str = "ddp", run_dir: str | None = None, method: str = "ftd") -> Trainer:
    """The Trainer of the parity runs, before any step."""
    train = TrainConfig(batch_size=batch, steps=steps, learning_rate=1e-3, lr_warmup_steps=2, seed=5,
                        strategy=strategy, checkpoint_every=2)
    return Trainer(_method(method), SRModel(load_components(ModelConfig())), latent_samples(N_SAMPLES, seed=321),
                   lora_cfg=LoraConfig(rank=4), train_cfg=train, run_dir=run_dir)


def run(batch: int, steps: int, strategy: str = "ddp", run_dir: str | None = None, method: str = "ftd") -> Trainer:
    trainer = build(batch, steps, strategy, run_dir, method)
    trainer.resume()
    trainer.fit()
    return trainer


def main(out: str, batch: int, steps: int, jobs: str, run_dir: str | None = None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        for job in jobs.split(","):
            strategy, method = job.split(":")
            trainer = run(batch, steps, strategy, run_dir if strategy == "fsdp" else None, method)
            rank = dist.get_rank()
            save_file({k: v.contiguous() for k, v in lora.lora_state_dict(trainer.transformer).items()},
                      str(Path(out) / f"rank{rank}-{strategy}-{method}.safetensors"))
            Path(out, f"rank{rank}-{strategy}-{method}.json").write_text(json.dumps(trainer.history))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], *sys.argv[5:6])
