"""train flow through the CLI: torchrun subprocess, cache hit when finished, resume after SIGKILL."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from helpers import BIN, latest_artifact, run_cli, summary_of

CFG = ["--set", "pairs.num_records=4", "--set", "pairs.records_per_shard=2", "--set", "pairs.resolution=96",
       "--set", "pairs.steps=2", "--set", "train.batch_size=2", "--set", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def latents(prefect_env, tmp_path_factory):
    """The training data, made by the pipeline run up to encode-latents (nothing after it runs)."""
    root = tmp_path_factory.mktemp("latents")
    summary = summary_of(run_cli(prefect_env, "run", "--until", "encode-latents", "--out", str(root), *CFG))
    assert list(summary) == ["pairs", "degrade", "encode-latents"] and summary["encode-latents"]["computed"] == 2  # a unit per shard
    written = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))  # .prefect-results: task results
    assert written == ["latents", "lr", "pairs", "pipeline-summary.json"]
    return root


def _losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "losses.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[r["step"]] = r["total"]
    return out


def test_two_process_train_then_rerun_is_cached_and_lora_loads(prefect_env, latents, tmp_path):
    """torchrun with 2 gloo processes x batch 1 through the real worker; artifacts on the server; cache hit."""
    root = tmp_path / "r"
    shutil.copytree(latents, root)
    ddp = ["--set", "train.steps=3", "--set", "train.nproc_per_node=2", "--set", "train.batch_size=1"]
    s = summary_of(run_cli(prefect_env, "train", "--out", str(root), *CFG, *ddp))
    assert s["computed"] == 1 and s["steps"] == 3 and Path(s["loss_plot"]).stat().st_size > 1000
    run = Path(s["directory"])
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    logged = [json.loads(line)["step"] for line in (run / "losses.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]  # rank 0 alone logs
    table = latest_artifact(prefect_env, "train-loss-table-ftd")
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["total"] == pytest.approx(_losses(run)[3])
    assert "data:image/png;base64," in latest_artifact(prefect_env, "train-losses-ftd")["data"]
    final = run / "final"  # the model folder: weights, identity, card and plot
    assert sorted(p.name for p in final.iterdir()) == ["README.md", "fluxsr_model.json", "loss.png",
                                                      "pytorch_lora_weights.safetensors", "summary.json"]
    info = json.loads((final / "fluxsr_model.json").read_text())
    assert info["method"] == "ftd" and info["steps"] == 3 and info["trained_on"]["samples"] == 4  # 4 records x 1 variant
    assert info["trained_on"]["latents_key"] == Path(next(latents.glob("latents/*"))).name
    assert all((run / "checkpoints" / c / "fluxsr_model.json").is_file() for c in ("step-000002", "step-000003"))
    again = summary_of(run_cli(prefect_env, "train", "--out", str(root), *CFG, *ddp))
    assert again["cached"] == 1 and again["computed"] == 0 and again["weights"] == s["weights"]

    from fluxsr_core.config import ModelConfig
    from fluxsr_core.models import load_components
    from fluxsr_core.models.velocity import TextCondition, predict_velocity
    from fluxsr_core.train import lora

    c = load_components(ModelConfig())
    z, t = torch.randn(1, 16, 12, 12), torch.tensor([0.5])
    cond = TextCondition(*c.prompt_encoder.encode([""], c.device))
    with torch.no_grad():
        base = predict_velocity(c.transformer, z, t, cond, 3.5)
        lora.load_lora(c.transformer, s["weights"])
        tuned = predict_velocity(c.transformer, z, t, cond, 3.5)
    assert not torch.equal(base, tuned)


def test_sigkill_mid_training_resumes_to_the_same_result(prefect_env, latents, tmp_path):
    steps = ["--set", "train.steps=6"]
    ref_root = tmp_path / "ref"
    shutil.copytree(latents, ref_root)
    ref = summary_of(run_cli(prefect_env, "train", "--out", str(ref_root), *CFG, *steps))

    root = tmp_path / "killed"
    shutil.copytree(latents, root)
    proc = subprocess.Popen([str(BIN / "fluxsr"), "train", "--out", str(root), *CFG, *steps], env=prefect_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list(root.glob("train/*/checkpoints/step-000002")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    parent = psutil.Process(proc.pid)
    for p in [*parent.children(recursive=True), parent]:  # the CLI, torchrun and the trainer
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    run = next(root.glob("train/*"))
    assert not (run / "final").exists()

    s = summary_of(run_cli(prefect_env, "train", "--out", str(root), *CFG, *steps))
    assert s["computed"] == 1 and s["key"] == ref["key"]
    ref_run = Path(ref["directory"])
    assert _losses(run) == _losses(ref_run)  # steps after the resume point equal the uninterrupted run
    for name in ("pytorch_lora_weights.safetensors", "fluxsr_model.json", "summary.json", "README.md", "loss.png"):
        assert (run / "final" / name).read_bytes() == (ref_run / "final" / name).read_bytes(), name  # same bytes
