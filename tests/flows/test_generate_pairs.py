"""generate-pairs end to end: the real CLI, a real local Prefect server, real tar shards."""

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import BIN, run_cli, run_cli_here, summary_of

SMALL = ["--set", "pairs.num_records=8", "--set", "pairs.records_per_shard=1", "--set", "pairs.resolution=64",
         "--set", "pairs.steps=4", "--set", "pairs.batch_size=1"]


def _stage_dir(root: Path) -> Path:
    (d,) = list((root / "pairs").iterdir())
    return d


def _shard_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(_stage_dir(root).glob("pairs-*.tar"))}


@pytest.fixture(scope="module")
def reference(prefect_env, tmp_path_factory):
    """An uninterrupted run of the small config."""
    root = tmp_path_factory.mktemp("ref")
    r = run_cli({**prefect_env, "OMP_NUM_THREADS": "2"}, "pairs", "--out", str(root), *SMALL)
    s = summary_of(r)
    assert s["computed"] == 8 and s["cached"] == 0 and s["records"] == 8 and s["manifest"]
    assert "cores stay idle" in r.stdout + r.stderr  # one batch per shard leaves one of 2 threads idle: it says so
    return root


def test_truncated_shard_is_detected_and_regenerated(prefect_env, reference, tmp_path):
    import shutil

    shutil.copytree(reference, tmp_path / "run")
    root = tmp_path / "run"
    (victim,) = _stage_dir(root).glob("pairs-000003-*.tar")
    original = victim.read_bytes()
    victim.write_bytes(original[: len(original) // 3])
    s = summary_of(run_cli_here(prefect_env, "pairs", "--out", str(root), *SMALL))
    assert s["regenerated"] == 1 and s["cached"] == 7 and s["computed"] == 0
    assert victim.read_bytes() == original


def test_shards_read_back_with_plain_webdataset(reference):
    import webdataset as wds

    d = _stage_dir(reference)
    urls = [str(p) for p in sorted(d.glob("pairs-*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == 8
    first = samples[0]
    assert set(first) >= {"__key__", "noise.npy", "latent.npy", "hr.png", "json"}
    noise = np.load(io.BytesIO(first["noise.npy"]))
    latent = np.load(io.BytesIO(first["latent.npy"]))
    meta = json.loads(first["json"])
    assert noise.shape == latent.shape == (16, 8, 8) and noise.dtype == np.float32
    assert Image.open(io.BytesIO(first["hr.png"])).size == (64, 64)
    assert meta["index"] == 0 and meta["steps"] == 4 and meta["prompt"]
    assert sorted(s["__key__"] for s in samples) == [f"{i:08d}" for i in range(8)]


def test_bad_inputs_fail_clearly_and_write_no_shard(prefect_env, tmp_path):
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n")
    r = run_cli(prefect_env, "pairs", "--out", str(tmp_path / "a"), "--set", f"pairs.prompts={empty}", check=False)
    assert r.returncode == 2 and "no prompts" in r.stderr and str(empty) in r.stderr
    r = run_cli(prefect_env, "pairs", "--out", str(tmp_path / "b"), "--set", "pairs.resolution=100", check=False)
    assert r.returncode == 2 and "multiple of 16" in r.stderr
    assert "Beginning flow run" not in r.stdout + r.stderr  # checked before any flow run starts
    r = run_cli_here(prefect_env, "pairs", "--out", str(tmp_path / "c"), "--preset", "flux-dev",
                     "--set", f"model.path={tmp_path / 'no-such-model'}", "--set", "model.device=cpu", check=False)
    assert r.returncode == 2 and "no-such-model" in r.stderr and "huggingface-cli download" in r.stderr
    assert not list(tmp_path.rglob("*.tar"))


def test_idle_cores_note():
    from fluxsr_core.config import FluxSRConfig
    from tasks.pairs import idle_cores_note

    cfg = FluxSRConfig.model_validate({"model": {"preset": "tiny", "device": "cpu"},
                                       "pairs": {"records_per_shard": 4, "batch_size": 4}})
    assert "multiple of 8" in idle_cores_note(cfg, 2) and "1 of 2 cores" in idle_cores_note(cfg, 2)
    assert idle_cores_note(cfg, 1) is None
    cfg.pairs.batch_size = 2
    assert idle_cores_note(cfg, 2) is None


def test_help_lists_stage_commands():
    r = subprocess.run([str(BIN / "fluxsr"), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "pairs" in r.stdout and "run" in r.stdout and "config" in r.stdout


def test_unknown_method_lists_the_available_ones(prefect_env, tmp_path):
    for args in (["run", "--method", "oftsr-typo"], ["train", "--method", "nope"], ["run", "-m", "ftd", "-m", "ftd"]):
        r = run_cli(prefect_env, *args, "--out", str(tmp_path), check=False)
        assert r.returncode == 2, r.stderr
        assert ("available: base, ftd" in r.stderr) or ("named twice" in r.stderr), r.stderr
        assert "Beginning flow run" not in r.stdout + r.stderr and not list(tmp_path.iterdir())


def test_a_bug_is_a_traceback_not_a_usage_error():
    """Only errors a user can fix (FluxSRError) become one line and exit 2; a plain KeyError is a bug."""
    import pytest
    import typer

    from flows import cli_app
    from fluxsr_core.errors import UsageError

    def buggy():
        raise KeyError("internal")

    def usage():
        raise UsageError("bad value")

    with pytest.raises(KeyError):
        cli_app.run_flow(buggy)
    with pytest.raises(typer.Exit) as exit_:
        cli_app.run_flow(usage)
    assert exit_.value.exit_code == 2
