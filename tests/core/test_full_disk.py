"""A full disk at every writer: the write fails whole, names what it was writing and where to free space, and leaves
nothing half-written (or, for a latent-store record, marked not done). The full disk is a file-size limit
(RLIMIT_FSIZE, SIGXFSZ ignored: the write fails with EFBIG, as it would with ENOSPC) in a forked child of the test
process, so the real writer runs without a fresh process's imports. (Shards: tests/storage/test_shards.py.)"""

import multiprocessing
import resource
import signal

import numpy as np
import pytest
import torch

from fluxsr_core.errors import StorageFullError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_a_full_disk(fn, limit: int) -> str:
    """Run ``fn`` in a forked child whose files may not grow past ``limit`` bytes; what it raised, as text."""
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()

    def child():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        try:
            fn()
            result.put("no error")
        except Exception as err:  # noqa: BLE001 - the test reads what it was
            result.put(f"{type(err).__name__}{' (StorageFullError)' if isinstance(err, StorageFullError) else ''}: {err}")

    p = ctx.Process(target=child)
    p.start()
    p.join(120)
    return result.get(timeout=10)


def test_latent_store_record_is_left_not_done(tmp_path):
    from storage.latent_store import LatentStore, StoreShape

    shape = StoreShape(records=2, variants=1, latent_channels=16, latent_size=(32, 32), image_size=(256, 256))
    store = LatentStore.create_or_open(tmp_path / "store.zarr", shape, {"key": "k"})
    z = np.zeros((16, 32, 32), np.float32)
    hr = np.random.default_rng(0).integers(0, 255, (3, 256, 256), dtype=np.uint8)  # ~190 KB: over the limit

    said = _with_a_full_disk(lambda: store.write_record(0, z0=z, noise=z, hr=hr, z_L=z[None]), 64_000)
    assert "(StorageFullError)" in said and "record 0 of the latent store" in said and "free space under" in said
    again = LatentStore.open(tmp_path / "store.zarr")
    assert not again.done_mask(slice(0, 1)).any()  # a reader never sees it; a re-run encodes it again
    again.write_record(0, z0=z, noise=z, hr=hr, z_L=z[None])  # with space, the same record is written whole
    assert again.done_mask(slice(0, 1)).all()


def test_training_checkpoint_is_not_left_half_written(tmp_path, tiny_components):
    from fluxsr_core.models import lora
    from fluxsr_core.train.checkpoint import latest_checkpoint, save_checkpoint
    from helpers import method_model

    model, _ = method_model(tiny_components, "ftd", lora_rank=8)
    params = [p for p in model.transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert lora.lora_state_dict(model.transformer)  # LoRA weights and optimizer state to write

    said = _with_a_full_disk(lambda: save_checkpoint(tmp_path, 1, transformer=model.transformer, optimizer=opt, pipeline="FluxPipeline"),
                             20_000)
    assert "(StorageFullError)" in said and "checkpoint" in said and "step-000001" in said
    assert "training resumes from it" in said
    assert list(tmp_path.iterdir()) == [] and latest_checkpoint(tmp_path) is None


def test_benchmark_report_is_whole_or_absent(tmp_path):
    from fluxsr_core.benchmark.report import write_report_text

    target = tmp_path / "summary.md"
    said = _with_a_full_disk(lambda: write_report_text(target, "| row |\n" * 20_000), 10_000)
    assert "(StorageFullError)" in said and f"benchmark report {target}" in said
    assert list(tmp_path.iterdir()) == []


def test_upscale_stops_on_a_full_disk_naming_the_output(tmp_path):
    from PIL import Image

    from fluxsr_core.config import tiny
    from fluxsr_core.student import load_student
    from fluxsr_core.upscale_files import upscale_files

    src = tmp_path / "in" / "photo.png"
    src.parent.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (44, 60, 3), dtype=np.uint8)).save(src)
    cfg = tiny()
    student = load_student(cfg, None)
    out = tmp_path / "out"
    out.mkdir()

    def run():
        with torch.inference_mode():
            upscale_files(student, [src], out, cfg.infer)

    said = _with_a_full_disk(run, 20_000)  # the 240 x 176 noisy PNG is ~120 KB
    assert "(StorageFullError)" in said and str(out / "photo.png") in said and "written before it are kept" in said
    assert list(out.iterdir()) == []  # no partial file


def test_an_output_folder_that_cannot_be_written_is_named_before_any_work(tmp_path):
    from helpers import run_cli_here

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for args in (["upscale", str(blocker)], ["pairs"], ["run", "--until", "pairs"]):
        r = run_cli_here({}, *args, "--out", str(blocker / "out"), check=False)
        assert r.returncode == 2 and f"--out {blocker / 'out'}: cannot write there" in r.stderr, r.stderr
