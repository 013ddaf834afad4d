"""Scheduled retraining end to end: the nightly deployment on a real server through real workers, twice with the
dataset grown in between (every stage reuses its finished shards in place and computes only the new ones), the
second night's worker SIGKILLed mid-run and the night run again: nothing is computed twice, nothing doubled in the
registry (the resumed training equals an uninterrupted one: tests/flows/test_train_flow.py)."""

import json

import numpy as np
from deploying import kill_tree, run_deployment, start_worker, wait_finished, wait_for
from helpers import latest_artifact, run_cli_here, stop_process_group

NIGHTLY = "retrain/nightly"
CONFIG = ["pairs.num_records=4", "pairs.records_per_shard=2", "pairs.resolution=96", "pairs.steps=2",
          "pairs.batch_size=1", "encode.batch_size=1", "train.steps=4", "train.checkpoint_every=2",
          "train.batch_size=1", "train.init_from=latest", "retrain.grow_by=4", "retrain.test_images=2"]
STAGES = ("pairs", "degrade", "encode-latents")


def _night(deployed: dict, out, worker=None, log=None) -> dict:
    worker, log = worker or deployed["worker"], log or deployed["worker_log"]
    run_id = run_deployment(deployed["env"], NIGHTLY, out, CONFIG)
    state = wait_finished(deployed["env"], run_id, worker, log, 400)
    assert state["type"] == "COMPLETED", log.read_text()[-6000:]
    return json.loads((out / "retrain-summary.json").read_text())


def _registry(root) -> dict:
    """What the registry holds, without times or paths (those differ between two output roots)."""
    from storage.registry import ModelRegistry

    reg = ModelRegistry(root)
    keep = ("candidate_digest", "decision", "metric", "candidate_score", "current", "current_digest", "current_score")
    return {"versions": [(v.name, v.digest) for v in reg.versions("ftd")], "current": reg.current("ftd").name,
            "decisions": [{k: d[k] for k in keep} for d in reg.decisions("ftd")]}


def _files(root, stage: str) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.glob(f"{stage}/*/*.tar"))}


def _store(root) -> dict:
    import numpy as np
    import zarr

    (path,) = root.glob("latents/*/store.zarr")
    g = zarr.open(str(path), mode="r")
    return {k: np.asarray(g[k][:]) for k in ("z_L", "z0", "noise", "hr", "source", "done")}


def _checkpoints(root) -> int:
    return len(list(root.glob("train/*/checkpoints/step-*")))


def test_nightly_grows_reuses_retrains_promotes_and_survives_a_kill(deployed, tmp_path):
    env = deployed["env"]
    a = tmp_path / "a"
    first = _night(deployed, a)
    assert first["records"] == 4 and first["previous_records"] is None and first["retrained"] == ["ftd"]
    assert first["promotion"]["ftd"]["decision"] == "promoted" and first["promotion"]["ftd"]["version"] == "v0001"
    night1 = {stage: _files(a, stage) for stage in ("pairs", "lr")}
    z = _store(a)

    # the second night, its worker SIGKILLed mid-run (after a training checkpoint), then run again by a new worker
    before = _checkpoints(a)
    run_deployment(env, NIGHTLY, a, CONFIG)
    wait_for("a checkpoint of the second night", lambda: _checkpoints(a) > before, 400, deployed["worker"],
             deployed["worker_log"], every=0.02)
    kill_tree(deployed["worker"])
    assert json.loads((a / "retrain" / "state.json").read_text())["records"] == 4  # the night did not finish
    log = tmp_path / "worker2.log"
    worker = start_worker(env, log, tmp_path)
    try:
        second = _night(deployed, a, worker, log)
    finally:
        stop_process_group(worker)
    assert (second["previous_records"], second["records"]) == (4, 8)
    for stage in STAGES:  # the killed night finished every stage: nothing is computed again
        assert (second[stage]["computed"], second[stage]["cached"]) == (0, 4), (stage, second[stage])
        assert second[stage]["key"] == first[stage]["key"]  # the same directory, grown in place
    for stage, files in night1.items():  # night 1's shards reused in place: same bytes, never rewritten (same mtime)
        now = _files(a, stage)
        assert len(now) == 4 and all(now[name] == v for name, v in files.items()), stage
    grown = _store(a)
    assert grown["done"].shape[0] == 8 and grown["done"].all()
    for k, v in z.items():  # the first 4 records' latents were not encoded again
        np.testing.assert_array_equal(grown[k][:4], v, err_msg=k)
    assert second["train"]["ftd"]["init_from"].endswith("models/ftd/versions/v0001")
    decision = second["promotion"]["ftd"]
    assert decision["current"] == "v0001" and decision["decision"] in ("promoted", "kept")
    assert decision["candidate_score"] is not None and decision["current_score"] is not None
    artifact = latest_artifact(env, "promotion-ftd")
    assert f"**{decision['decision']}**" in artifact["data"]
    model = json.loads((a / second["train"]["ftd"]["model"] / "fluxsr_model.json").read_text())
    assert model["init_from"]["digest"] == first["promotion"]["ftd"]["candidate_digest"]
    assert model["trained_on"]["records"] == 8
    registry = _registry(a)  # one decision per candidate, one version per promotion: the kill doubled nothing
    assert [d["decision"] for d in registry["decisions"]] == ["promoted", decision["decision"]]
    assert len(registry["versions"]) == (2 if decision["decision"] == "promoted" else 1)

    # a night with nothing new retrains nothing, and says so; the registry is readable by a command
    quiet = run_cli_here(env, "retrain", "--out", str(a), *[x for o in CONFIG for x in ("--set", o)],
                    "--set", "retrain.grow_by=0")
    assert "no new data" in quiet.stdout and "nothing retrained" in quiet.stdout
    listing = run_cli_here(env, "models", "list", "--root", str(a)).stdout
    assert "v0001" in listing and listing.count("promoted") + listing.count("kept") == 2
    assert f"* {registry['current']}" in listing  # `fluxsr upscale --model ftd` runs that one (test_registry)
