"""A prompt file that grows adds records, and an edited earlier prompt is named and its records are new work, in
every stage (the real CLI). Growth by pairs.num_records through every stage: tests/flows/test_retrain.py."""

import json
from pathlib import Path

import numpy as np
import zarr
from helpers import run_cli_here, summary_of

BASE = ["--set", "pairs.records_per_shard=2", "--set", "pairs.resolution=96", "--set", "pairs.steps=2",
        "--set", "pairs.batch_size=1", "--set", "encode.batch_size=1"]


def _store(root: Path):
    (path,) = root.glob("latents/*/store.zarr")
    return zarr.open(str(path), mode="r")


def _grow(env, root: Path, *sets: str) -> dict:
    return summary_of(run_cli_here(env, "run", "--out", str(root), *BASE, *sets, "--until", "encode-latents"))


def test_prompt_file_growth_adds_records_and_an_edited_prompt_is_named_and_redone(prefect_env, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# captions\na red fox\na quiet harbour\na mountain hut\n")
    sets = ["--set", f"pairs.prompts={prompts}", "--set", "pairs.num_records=null"]
    root = tmp_path / "out"
    first = _grow(prefect_env, root, *sets)
    assert first["pairs"]["records"] == 3 and first["pairs"]["computed"] == 2  # shards [0, 1], [2]
    old_store = {k: np.asarray(_store(root)[k][:3]) for k in ("z0", "source")}

    prompts.write_text(prompts.read_text() + "a rainy street\na desert road\n")  # appended: records 3 and 4
    grown = summary_of(run_cli_here(prefect_env, "pairs", "--out", str(root), *BASE, *sets))
    assert grown["records"] == 5 and (grown["computed"], grown["cached"]) == (2, 1)  # [2, 3] is new, [4] new
    assert "prompts_changed" not in grown

    prompts.write_text(prompts.read_text().replace("a red fox", "a red fox at dusk"))  # line 2: record 0
    edited = _grow(prefect_env, root, *sets)
    (change,) = edited["pairs"]["prompts_changed"]
    assert change.startswith("record 0: prompt line 2 of " + str(prompts)) and "'a red fox'" in change
    assert (edited["pairs"]["computed"], edited["pairs"]["cached"]) == (1, 2)  # only shard [0, 1] is new work
    names = sorted(p.name for p in root.glob("pairs/*/pairs-000000-*.tar"))
    assert len(names) == 2  # the edited shard is a new file; the old one stays for the datasets made with it
    manifest = json.loads(next(root.glob("pairs/*/manifest-00000005.json")).read_text())
    assert manifest["summary"]["prompts"][0] == "a red fox at dusk"
    g = _store(root)
    assert np.asarray(g["done"][:5]).all()
    assert not np.array_equal(np.asarray(g["z0"][0]), old_store["z0"][0])  # records 0, 1 re-encoded from new shards
    assert np.asarray(g["source"][0]) != old_store["source"][0]
    np.testing.assert_array_equal(np.asarray(g["z0"][2]), old_store["z0"][2])  # record 2: same record, its shard grew
