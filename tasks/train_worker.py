"""The training process: ``python -m tasks.train_worker`` for one process, started by ``torchrun`` for several
(``python -m torch.distributed.run -m tasks.train_worker``).

No Prefect here: the ``train`` task launches this as a subprocess, so a cancelled
flow run kills it and a re-run resumes from the newest complete checkpoint in
``RUN_DIR/checkpoints``. Writes ``RUN_DIR/losses.jsonl`` (one line per step, with its
seconds: a log), ``RUN_DIR/loss.png`` and, last, ``RUN_DIR/final/`` (the model folder:
weights, ``fluxsr_model.json``, model card, loss plot, ``summary.json``) via a temporary
directory and a rename. Nothing under ``final/`` or ``checkpoints/`` depends on the clock,
so the same inputs give the same bytes.

With ``WORLD_SIZE > 1`` (``train.nproc_per_node``/``train.nnodes``) each process
joins torchrun's group (NCCL on GPUs, gloo on CPU); every rank trains on its
slice of the batch and only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path


def _records(path: Path) -> list[dict]:
    """Logged steps, the last line of each step winning (a resumed run re-logs from its checkpoint)."""
    by_step: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                by_step[r["step"]] = r
    return [by_step[k] for k in sorted(by_step)]


def check_store_backbone(store: str, backbone: str) -> None:
    """Latents encoded by another base's VAE are refused before any model loads, naming both (a store written
    before the backbone seam is FLUX.1's)."""
    from storage.latent_store import LatentStore

    encoded = LatentStore.open(store, mode="r").group.attrs.get("backbone", "flux1-dev")
    if encoded != backbone:
        sys.exit(f"--store {store} holds latents of backbone {encoded}, but this run's model.backbone is {backbone}: "
                 f"encode the data for {backbone} (`fluxsr run` does) or train with --set model.backbone={encoded}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="JSON of the FluxSR config")
    ap.add_argument("--method", default="ftd", help="the training method (fluxsr_core.methods)")
    ap.add_argument("--store", required=True, help="the encode-latents Zarr store")
    ap.add_argument("--latents-key", default=None, help="the encode-latents stage key (recorded in the model)")
    ap.add_argument("--records", type=int, default=None, help="train on the store's first N records (the dataset)")
    ap.add_argument("--init-from", default=None, help="a model folder to warm-start from (train.init_from, resolved)")
    ap.add_argument("--teacher", default=None, help="the frozen teacher's model folder, for a distilled method")
    ap.add_argument("--run-dir", required=True)
    args = ap.parse_args(argv)
    from fluxsr_core.model_stack import import_model_stack

    import_model_stack()  # before anything imports torch: the GC paused over the whole stack
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _distributed(args)
    return train(args)


def _distributed(args) -> int:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPU), one GPU per local rank, then train."""
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        if local_rank >= torch.cuda.device_count():
            sys.exit(f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible "
                     "(lower train.nproc_per_node to the GPUs of this machine)")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        return train(args, device=f"cuda:{local_rank}" if cuda else "cpu")
    finally:
        dist.destroy_process_group()


def train(args, device: str | None = None) -> int:
    from fluxsr_core import atomic, model_folder
    from fluxsr_core.config import FluxSRConfig
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import load_components
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.train.loop import TIMING_KEYS, Trainer
    from fluxsr_core.train.plots import plot_losses
    from storage.latent_dataset import LatentDataset

    cfg = FluxSRConfig.model_validate_json(Path(args.config).read_text())
    check_store_backbone(args.store, cfg.model.backbone)
    if device is not None:
        cfg.model.device = device
    run_dir = Path(args.run_dir)
    log_path = run_dir / "losses.jsonl"
    run_dir.mkdir(parents=True, exist_ok=True)

    def log(record: dict) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)

    method = build_method(args.method, cfg)
    if method.distils:
        from fluxsr_core.student import load_student

        if not args.teacher:
            sys.exit(f"method {method.name} distils a {method.distils} model: give --teacher MODEL_FOLDER")
        teacher = load_student(cfg, args.teacher)
        if teacher.info.method != method.distils:
            sys.exit(f"--teacher {args.teacher} is a {teacher.info.method} model; {method.name} distils {method.distils}")
        method.set_teacher(teacher.model)
    model = SRModel(load_components(cfg.model), guidance=method.guidance)
    init = {"init_from": model_folder.init_record(args.init_from)} if args.init_from else {}
    trainer = Trainer(method, model, LatentDataset(args.store, records=args.records), lora_cfg=cfg.lora,
                      train_cfg=cfg.train, run_dir=run_dir / "checkpoints", log_fn=log,
                      identity={"trained_on": {"latents_key": args.latents_key, "records": args.records}, **init})
    if trainer.resume():
        if trainer.rank == 0:
            print(f"resumed at step {trainer.step}", flush=True)
    elif args.init_from:
        trainer.warm_start(args.init_from)
    trainer.fit()
    final = run_dir / "final"
    if trainer.rank != 0:
        trainer.export(atomic.dir_temp(final))  # a collective when FSDP shards the weights: rank 0 writes
        return 0
    with atomic.atomic_dir(final) as tmp:  # final.tmp, renamed to final when whole (a previous final replaced)
        weights_file = trainer.export(tmp)
        records = _records(log_path)
        plot_losses(records, run_dir / model_folder.PLOT_FILE, method.term_names)
        shutil.copyfile(run_dir / model_folder.PLOT_FILE, tmp / model_folder.PLOT_FILE)
        last = {k: v for k, v in (records[-1] if records else {}).items() if k not in TIMING_KEYS}
        card = model_folder.model_card(trainer.model_info(), last, model_folder.PLOT_FILE)
        (tmp / model_folder.CARD_FILE).write_text(card)
        summary = {"method": method.name, "steps": trainer.step, "last": last, "terms": list(method.term_names),
                   "weights": weights_file.name}
        (tmp / model_folder.SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
