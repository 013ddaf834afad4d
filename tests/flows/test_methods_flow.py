"""The training methods through the real CLI: one pipeline run trains FTD, the SR teacher and its OFTSR and MeanFlow
students and scores them in one table with each row's cost; the run SIGKILLed in each stage resumes to the same
bytes; `upscale` with each student's knobs; training under torchrun with two processes, its artifacts, and a cache
hit when finished.
(Every method's resume to the same weights, and DDP/FSDP parity: tests/core/test_train.py.)"""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import BIN, latest_artifact, run_cli_here, summary_of

CFG = ["--set", "pairs.num_records=4", "--set", "pairs.records_per_shard=2", "--set", "pairs.resolution=96",
       "--set", "pairs.steps=2", "--set", "pairs.batch_size=1", "--set", "encode.batch_size=1",
       "--set", "train.steps=4", "--set", "train.checkpoint_every=2", "--set", "train.batch_size=2"]
ROWS = ["bicubic", "ftd", "sr-teacher steps=4", "sr-teacher steps=8", "oftsr tau=0", "oftsr tau=0.5", "oftsr tau=1",
        "meanflow steps=1", "meanflow steps=2", "meanflow steps=4"]


@pytest.fixture(scope="module")
def trained(prefect_env, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("oftsr")
    s = summary_of(run_cli_here(prefect_env, "run", "--method", "ftd", "--method", "oftsr", "--method", "meanflow",
                           "--out", str(root), *CFG))
    return root, s


def test_one_table_scores_every_method_with_its_network_evaluations_and_time(trained):
    _, s = trained
    assert list(s["train"]) == ["ftd", "sr-teacher", "oftsr", "meanflow"]  # the teacher first, trained once
    bench = s["benchmark"]
    assert bench["methods"] == ROWS  # bench.knobs: the teacher at 4, 8 steps, OFTSR at τ 0, 0.5, 1, MeanFlow 1, 2, 4
    from fluxsr_core.methods.sr_teacher import evaluations

    nfe = {row: bench["cost"][row]["evaluations"] for row in ROWS}
    assert nfe == {"bicubic": 0, "ftd": 1, "sr-teacher steps=4": evaluations(4, "euler", 1.0),
                   "sr-teacher steps=8": evaluations(8, "euler", 1.0), "oftsr tau=0": 1, "oftsr tau=0.5": 1,
                   "oftsr tau=1": 1, "meanflow steps=1": 1, "meanflow steps=2": 2, "meanflow steps=4": 4}
    # counted as the transformer ran: one evaluation a step for the students
    assert all(bench["cost"][row]["seconds"] > 0 for row in ROWS)
    for rows in (ROWS[4:7], ROWS[7:]):  # τ, and the number of MeanFlow steps, change the output
        assert len({bench["summary"][row]["psnr"] for row in rows}) == 3, rows
    table = Path(bench["table"]).read_text()
    assert "| NFE | s/image |" in table and "| sr-teacher steps=8 |" in table


# where each kill of the sweep lands: the first moment each of these exists in the killed run's folder
KILLS = {"generate-pairs, one of two shards written": "pairs/*/pairs-000000-*.tar.json",
         "encode-latents, two of four records done": "latents/*/store.zarr/done/c/1/0",
         "the OFTSR distillation (third training), at its step-2 checkpoint": "train/*/checkpoints/step-000002",
         "the benchmark, its second image written": "bench/*/sr/*/00000001.png"}


def test_run_killed_in_every_stage_resumes_to_the_uninterrupted_bytes(prefect_env, trained, tmp_path):
    """#18 §4: SIGKILL the whole ``fluxsr run`` process group once in each stage, then let it finish: every output
    file is byte-identical to the uninterrupted run's, and no unit finished before a kill (a shard, a record's
    latents, a checkpoint) is written again: it comes from cache (bench/kill_sweep.py: the same at random moments)."""
    import os
    import signal
    import sys

    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    from kill_sweep import digests, finished_units, metric_values, rewritten

    done, _ = trained
    root = tmp_path / "killed"
    args = [str(BIN / "fluxsr"), "run", "--method", "ftd", "--method", "oftsr", "--method", "meanflow",
            "--out", str(root), *CFG]
    finished: dict[str, int] = {}
    for stage, pattern in KILLS.items():
        proc = subprocess.Popen(args, env=prefect_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        need = 3 if "third training" in stage else 1
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None and len(list(root.glob(pattern))) < need:
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed in {stage}"
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, the Prefect task runners, torchrun and the trainer
        proc.wait()
        finished.update(finished_units(root))
    assert not (root / "pipeline-summary.json").exists()
    stages = {Path(p).parts[0] for p in finished}
    assert stages == {"pairs", "lr", "latents", "train"} and any("step-000002" in p for p in finished), stages
    run_cli_here(prefect_env, *args[1:])
    ref, got = digests(done), digests(root)
    assert len(ref) > 60 and sorted(ref) == sorted(got)
    assert [p for p in ref if ref[p] != got[p]] == []  # shards, manifests, Zarr chunks, checkpoints, LoRA files, PNGs
    assert metric_values(root) == metric_values(done) != {}
    assert rewritten(finished, root) == []


def test_upscale_knobs_give_different_images_each_reproducible(prefect_env, trained, tmp_path):
    """`upscale --t 0.9` (OFTSR, on its `fluxsr export` folder) and `--steps 4 --guidance 2` (MeanFlow): each image
    equals an in-process run at its knobs and seed and `FluxSRPipeline`'s, and differs from one at other values
    (τ = 0.1; MeanFlow's default, one step at w = 1). The exported card carries the model's benchmark rows."""
    done, s = trained
    (lr,) = sorted(done.glob("testsets/*/lr/*.png"))[:1]
    exported = tmp_path / "oftsr-shared"
    said = run_cli_here(prefect_env, "export", s["train"]["oftsr"]["directory"], "-o", str(exported)).stdout
    assert f"written to {exported}" in said and "benchmark rows from" in said
    card = (exported / "README.md").read_text()
    assert "## Benchmark" in card and "| oftsr tau=0.5 |" in card and "| bicubic |" in card
    assert "| ftd |" not in card  # only this model's rows, beside bicubic
    cases = {"oftsr": (exported, ["--knob", "tau=0.9"], {"tau": 0.9}, {"tau": 0.1}),
             "meanflow": (Path(s["train"]["meanflow"]["directory"]) / "final",
                          ["--knob", "steps=4", "--knob", "guidance=2"],
                          {"steps": 4, "guidance": 2.0}, {})}
    from PIL import Image

    from fluxsr_core.config import tiny
    from fluxsr_core.imageio import read_image
    from fluxsr_core.diffusers_pipeline import FluxSRPipeline
    from fluxsr_core.student import load_student

    for method, (model, flags, knobs, other) in cases.items():
        run_cli_here(prefect_env, "upscale", str(lr), "--out", str(tmp_path / method), "--model", str(model), *flags,
                "--knob", "seed=3")
        saved = read_image(tmp_path / method / f"{lr.stem}.png")
        student = load_student(tiny(), Path(s["train"][method]["directory"]) / "final")
        with torch.inference_mode():  # the image is a function of its knobs and seed: made again here
            mine = student.upscale(read_image(lr), tiny().infer, seed=3, **knobs)
            elsewhere = student.upscale(read_image(lr), tiny().infer, seed=3, **other)
        assert (mine - saved).abs().max().item() <= 0.5 / 255 + 1e-6, method
        assert (elsewhere - saved).abs().max().item() > 1 / 255, method  # the knob moves the output
        piped = FluxSRPipeline.from_pretrained(model)(Image.open(lr), generator=torch.Generator().manual_seed(3),
                                                      **knobs).images[0]
        assert piped.tobytes() == Image.open(tmp_path / method / f"{lr.stem}.png").convert("RGB").tobytes(), method


def _losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "losses.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[r["step"]] = r["total"]
    return out


def test_two_process_train_then_rerun_is_cached_and_lora_loads(prefect_env, trained, tmp_path):
    """torchrun with 2 gloo processes x batch 1 through the real worker; artifacts on the server; cache hit."""
    root = tmp_path / "r"
    shutil.copytree(trained[0], root)
    ddp = ["--set", "train.steps=3", "--set", "train.nproc_per_node=2", "--set", "train.batch_size=1",
           "--set", "train.checkpoint_every=2"]
    s = summary_of(run_cli_here(prefect_env, "train", "--out", str(root), *CFG, *ddp))
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
    assert info["trained_on"]["latents_key"] == Path(next(root.glob("latents/*"))).name
    assert all((run / "checkpoints" / c / "fluxsr_model.json").is_file() for c in ("step-000002", "step-000003"))
    again = summary_of(run_cli_here(prefect_env, "train", "--out", str(root), *CFG, *ddp))
    assert again["cached"] == 1 and again["computed"] == 0 and again["weights"] == s["weights"]

    from fluxsr_core.config import ModelConfig
    from fluxsr_core.models import load_components, lora
    from fluxsr_core.models.velocity import TextCondition, predict_velocity

    c = load_components(ModelConfig())
    z, t = torch.randn(1, 16, 12, 12), torch.tensor([0.5])
    cond = TextCondition(*c.prompt_encoder.encode([""], c.device))
    with torch.no_grad():
        base = predict_velocity(c.backbone, c.transformer, z, t, cond, 3.5)
        lora.load_lora(c.transformer, s["weights"])
        tuned = predict_velocity(c.backbone, c.transformer, z, t, cond, 3.5)
    assert not torch.equal(base, tuned)
