"""Same inputs, same bytes: a LoRA export and a stage manifest do not depend on the process or the clock.

Each artifact is written by two fresh processes with different ``PYTHONHASHSEED``: peft keeps
``target_modules`` as a set (its order follows the hash seed) and safetensors orders the header
metadata at random per process, both of which used to change the LoRA file's bytes; the manifest
used to carry a wall-clock ``created`` field.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from storage.manifest import MANIFEST_NAME, manifest_digest, read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[2]

SAVE_LORA = """
import json, sys, torch
torch.set_num_threads(1)
from fluxsr_core.config import LoraConfig, ModelConfig
from fluxsr_core.models import load_components, lora
from fluxsr_core.backbones.flux1 import LORA_TARGETS
tr = load_components(ModelConfig()).transformer
lora.add_lora(tr, LoraConfig(rank=4, target_modules=list(LORA_TARGETS)), seed=0)
file = lora.save_lora(tr, sys.argv[1], "FluxPipeline")
loaded = {}
if len(sys.argv) > 2:  # read it back: the project's loader, and FluxPipeline's (which uses the metadata)
    from diffusers import FluxPipeline
    plain = load_components(ModelConfig()).transformer
    lora.load_lora(plain, file)
    pipe = load_components(ModelConfig()).transformer
    sd, alphas, meta = FluxPipeline.lora_state_dict(sys.argv[1], return_alphas=True, return_lora_metadata=True)
    FluxPipeline.load_lora_into_transformer(sd, network_alphas=alphas, transformer=pipe, metadata=meta,
                                            adapter_name=lora.ADAPTER)
    for name, t in (("load_lora", plain), ("pipeline", pipe)):
        c = t.peft_config[lora.ADAPTER]
        loaded[name] = {"r": c.r, "init": c.init_lora_weights, "targets": sorted(c.target_modules),
                        "lora_params": sum("lora_" in n for n, _ in t.named_parameters())}
print(json.dumps({"file": str(file), "loaded": loaded, "lora_params": len(lora.lora_parameters(tr))}))
"""

WRITE_MANIFEST = """
import sys
from fluxsr_core.atomic import sha256_file
from storage.manifest import FileEntry, Manifest, write_manifest
shard = sys.argv[1] + "/pairs-000000.tar"
open(shard, "wb").write(bytes(range(256)) * 4)
entry = FileEntry(name="pairs-000000.tar", bytes=1024, sha256=sha256_file(shard), records=3)
write_manifest(sys.argv[1], Manifest(stage="pairs", key="k", config={"b": [1, 2], "a": {"y": 1, "x": 2}},
                                      inputs={"up": "0" * 64}, files=[entry], summary={"records": 3}))
"""


def _start(code: str, *args, hash_seed: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, out + err
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _header(path: Path) -> bytes:
    data = path.read_bytes()
    return data[8:8 + int.from_bytes(data[:8], "little")]


def test_lora_export_bytes_do_not_depend_on_the_process(tmp_path):
    # run together: on 2 cores the two imports of torch/diffusers/peft overlap
    procs = [_start(SAVE_LORA, tmp_path / "seed1", hash_seed=1),
             _start(SAVE_LORA, tmp_path / "seed2", "load", hash_seed=2)]
    results = [json.loads(_wait(p).strip().splitlines()[-1]) for p in procs]
    files = [Path(r["file"]) for r in results]
    assert _header(files[0]) == _header(files[1])
    assert _sha256(files[0]) == _sha256(files[1])
    header = json.loads(_header(files[0]))
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    targets = json.loads(header["__metadata__"]["lora_adapter_metadata"])["transformer.target_modules"]
    assert targets == sorted(set(targets)) and "attn.to_q" in targets

    loaded = results[1]["loaded"]  # the canonical file still loads, both ways, with every adapter
    assert all(v["r"] == 4 and v["lora_params"] == results[1]["lora_params"] for v in loaded.values()), loaded
    assert loaded["pipeline"]["targets"] == targets and loaded["pipeline"]["init"] == "gaussian"


def test_manifest_bytes_do_not_depend_on_the_process_or_the_clock(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()
    _wait(_start(WRITE_MANIFEST, dirs[0], hash_seed=1))
    time.sleep(1.1)  # a wall-clock field would now differ by at least a second
    _wait(_start(WRITE_MANIFEST, dirs[1], hash_seed=2))
    assert (dirs[0] / MANIFEST_NAME).read_bytes() == (dirs[1] / MANIFEST_NAME).read_bytes()
    assert "created" not in json.loads((dirs[0] / MANIFEST_NAME).read_text())


def test_old_manifest_with_a_timestamp_reads_and_keeps_its_digest(tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    _wait(_start(WRITE_MANIFEST, new, hash_seed=1))
    digest = manifest_digest(new)
    old = tmp_path / "old"
    old.mkdir()
    (old / "pairs-000000.tar").write_bytes((new / "pairs-000000.tar").read_bytes())
    data = json.loads((new / MANIFEST_NAME).read_text())
    (old / MANIFEST_NAME).write_text(json.dumps({**data, "created": 1700000000.5}, indent=2, sort_keys=True) + "\n")
    assert read_manifest(old) == read_manifest(new)
    assert manifest_digest(old) == digest  # downstream keys of an existing run do not change
    write_manifest(old, read_manifest(new))  # re-finishing the stage drops the timestamp
    assert (old / MANIFEST_NAME).read_bytes() == (new / MANIFEST_NAME).read_bytes()
