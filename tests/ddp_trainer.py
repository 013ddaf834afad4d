"""A tiny-preset training run that works alone or under ``torchrun`` (gloo on CPU): the parity tests' worker.

``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_trainer.py OUT BATCH STEPS [STRATEGY [RUN_DIR]]``
trains with BATCH samples per process (DDP, or FSDP with STRATEGY=fsdp; with RUN_DIR
it checkpoints every 2 steps there and resumes from it) and writes each rank's LoRA
tensors and logged records to ``OUT/rank<r>.safetensors`` / ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from fluxsr_core.config import LoraConfig, ModelConfig, TrainConfig
from fluxsr_core.methods.ftd import FTD
from fluxsr_core.models import load_components
from fluxsr_core.models.sr_model import SRModel
from fluxsr_core.train import lora
from fluxsr_core.train.loop import Trainer
from helpers import latent_samples

N_SAMPLES = 8


def run(batch: int, steps: int, strategy: str = "ddp", run_dir: str | None = None) -> Trainer:
    method = FTD(lpips_net="alex", allow_random_lpips_backbone=True)
    train = TrainConfig(batch_size=batch, steps=steps, learning_rate=1e-3, lr_warmup_steps=2, seed=5,
                        strategy=strategy, checkpoint_every=2)
    trainer = Trainer(method, SRModel(load_components(ModelConfig())), latent_samples(N_SAMPLES, seed=321),
                      lora_cfg=LoraConfig(rank=4), train_cfg=train, run_dir=run_dir)
    trainer.resume()
    trainer.fit()
    return trainer


def main(out: str, batch: int, steps: int, strategy: str = "ddp", run_dir: str | None = None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        trainer = run(batch, steps, strategy, run_dir)
        rank = dist.get_rank()
        save_file({k: v.contiguous() for k, v in lora.lora_state_dict(trainer.transformer).items()},
                  str(Path(out) / f"rank{rank}.safetensors"))
        Path(out, f"rank{rank}.json").write_text(json.dumps(trainer.history))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6])
