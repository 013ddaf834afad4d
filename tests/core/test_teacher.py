from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from fluxsr_core import teacher
from fluxsr_core.backbones.flux1.tokens import PackedVelocity
from fluxsr_core.models.velocity import TextCondition
from fluxsr_core.prompts import PromptFileError, bundled_prompts, load_prompts

KW = dict(resolution=64, steps=4, guidance=3.5, run_seed=7)


def test_seeds_are_pure_functions_of_run_seed_and_index():
    assert teacher.record_seed(0, 5) == teacher.record_seed(0, 5)
    assert len({teacher.record_seed(s, i) for s in range(3) for i in range(50)}) == 150


def test_records_independent_of_batching(tiny_components):
    a = teacher.generate_records(tiny_components, [0, 1, 2], ["p"] * 3, batch_size=3, **KW)
    b = teacher.generate_records(tiny_components, [2], ["p"], batch_size=1, **KW)
    assert np.array_equal(a[2].noise, b[0].noise) and a[2].seed == b[0].seed
    np.testing.assert_allclose(a[2].latent, b[0].latent, atol=1e-5)
    assert a[0].image.shape == (64, 64, 3) and a[0].image.dtype == np.uint8
    assert a[0].meta["steps"] == 4 and a[0].meta["teacher"] == tiny_components.identity


def test_stored_noise_reproduces_the_latent(tiny_components):
    c = tiny_components
    rec = teacher.generate_records(c, [4], ["a harbour at dawn"], batch_size=1, **KW)[0]
    emb, pooled = c.prompt_encoder.encode([rec.prompt], c.device)
    z0 = teacher.sample_latents(c, torch.from_numpy(rec.noise)[None], TextCondition(emb, pooled), 4, 3.5)
    assert np.array_equal(z0[0].numpy(), rec.latent)
    assert not np.allclose(rec.latent, rec.noise)


def test_matches_the_backbones_diffusers_pipeline(backbone_components):
    """Our sampler is the backbone's own pipeline's (FluxPipeline, ZImagePipeline): the same schedule, shift,
    guidance, time convention and sign give the same z_0 (FLUX.1 bit for bit; Z-Image, whose pipeline computes
    its reversed time as (1000 - t)/1000, to float rounding)."""
    from helpers import pipeline_latents

    c = backbone_components
    recs = teacher.generate_records(c, [0, 1], ["a cat", "a dog"], batch_size=2, **KW)
    emb, pooled = c.prompt_encoder.encode(["a cat", "a dog"], c.device)
    noise = torch.from_numpy(np.stack([r.noise for r in recs]))
    ref = pipeline_latents(c, noise, emb, pooled, steps=4, guidance=3.5, size=64)
    exact = c.backbone.name.startswith("flux1")
    torch.testing.assert_close(ref, torch.from_numpy(np.stack([r.latent for r in recs])), rtol=0,
                               atol=0 if exact else 1e-5)


def test_cpu_batches_run_concurrently_and_records_do_not_depend_on_the_core_count(tiny_components):
    """On CPU each batch runs single-threaded, one per core: the bits are the same on 1 or 2 cores."""
    import threading
    from dataclasses import replace

    c = tiny_components
    threads = []

    class Recording:  # the real encoder, noting which thread each batch ran on
        def encode(self, texts, device):
            threads.append(threading.current_thread().name)
            return c.prompt_encoder.encode(texts, device)

    c2 = replace(c, prompt_encoder=Recording())
    kw = {**KW, "resolution": 256, "steps": 2}  # big enough that a 2-thread decode differs in a few pixels
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = teacher.generate_records(c2, [0, 1, 2, 3], ["a cat", "a dog"] * 2, batch_size=2, **kw)
        assert len(set(threads)) == 2 and torch.get_num_threads() == 2  # the caller's setting is kept
        with ThreadPoolExecutor(1) as pool:  # and so is the default of threads started later
            assert pool.submit(torch.get_num_threads).result() == 2
        torch.set_num_threads(1)
        threads.clear()
        one = teacher.generate_records(c2, [0, 1, 2, 3], ["a cat", "a dog"] * 2, batch_size=2, **kw)
        assert len(set(threads)) == 1
    finally:
        torch.set_num_threads(before)
    assert [r.index for r in two] == [0, 1, 2, 3]
    for a, b in zip(one, two):
        assert np.array_equal(a.latent, b.latent) and np.array_equal(a.image, b.image) and a.meta == b.meta


def test_rope_is_pinned_only_inside_the_sampler_and_on_its_thread(tiny_components):
    """The sampler computes the rotary embedding once; other callers of the shared model are unaffected."""
    c = tiny_components
    emb, pooled = c.prompt_encoder.encode(["p"], c.device)
    velocity = PackedVelocity(c.transformer, 8, 8, TextCondition(emb, pooled), 1, 3.5)
    other = torch.zeros(5, 3)  # ids of some other caller: 5 positions
    with velocity.rope_once():
        here = c.transformer.pos_embed(other)[0]
        with ThreadPoolExecutor(1) as pool:
            elsewhere = pool.submit(c.transformer.pos_embed, other).result()[0]
    assert here.shape[0] == emb.shape[1] + 16  # the pinned embedding: text tokens + 4x4 image tokens
    assert elsewhere.shape[0] == 5 and c.transformer.pos_embed(other)[0].shape[0] == 5


def test_prompt_files(tmp_path):
    assert len(bundled_prompts()) >= 20
    txt = tmp_path / "p.txt"
    txt.write_text("# comment\nfirst prompt\n\nsecond prompt\n")
    assert load_prompts(txt) == ["first prompt", "second prompt"]
    jl = tmp_path / "p.jsonl"
    jl.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    assert load_prompts(jl) == ["a", "b"]
    jl.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(PromptFileError, match="p.jsonl:2"):
        load_prompts(jl)
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    with pytest.raises(PromptFileError, match="no prompts"):
        load_prompts(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(PromptFileError, match="UTF-8"):
        load_prompts(tmp_path / "bin.txt")
    with pytest.raises(PromptFileError, match="not found"):
        load_prompts(tmp_path / "nope.txt")
