import numpy as np
import pytest
import torch
from PIL import Image

from fluxsr_core import latents
from fluxsr_core.backbones.flux1 import tokens
from fluxsr_core.config import ModelConfig
from fluxsr_core.models import ModelNotFoundError, load_components
from fluxsr_core.models.codec import decode_latents, encode_images
from fluxsr_core.models.velocity import TextCondition, predict_velocity


def test_pack_unpack_round_trip_and_match_diffusers_layout():
    from diffusers import FluxPipeline

    z = torch.randn(2, 16, 6, 10)
    packed = tokens.pack(z)
    assert packed.shape == (2, 15, 64)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(z, 2, 16, 6, 10))
    torch.testing.assert_close(tokens.unpack(packed, 6, 10), z)
    # diffusers' unpack takes pixel sizes (latent * vae factor 8)
    torch.testing.assert_close(FluxPipeline._unpack_latents(packed, 48, 80, 8), z)


def test_image_ids_match_diffusers():
    from diffusers import FluxPipeline

    ours = tokens.image_ids(6, 10)
    theirs = FluxPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32)
    torch.testing.assert_close(ours, theirs)


def test_normalize_denormalize_inverse():
    z = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(latents.denormalize(latents.normalize(z, 0.3611, 0.1159), 0.3611, 0.1159), z)


def test_tiny_build_is_deterministic_for_a_seed():
    a = load_components(ModelConfig(seed=3))
    b = load_components(ModelConfig(seed=3))
    c = load_components(ModelConfig(seed=4))
    for m in ("transformer", "vae"):
        sa, sb, sc = (getattr(x, m).state_dict() for x in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    ea = a.prompt_encoder.encode(["same prompt"], a.device)
    eb = b.prompt_encoder.encode(["same prompt"], b.device)
    assert all(torch.equal(x, y) for x, y in zip(ea, eb))


def test_tiny_transformer_forward_round_trips_shapes(tiny_components):
    c = tiny_components
    emb, pooled = c.prompt_encoder.encode(["a", "b"], c.device)
    z = torch.randn(2, 16, 12, 8)
    with torch.no_grad():
        v = predict_velocity(c.backbone, c.transformer, z, torch.tensor([0.2, 0.9]), TextCondition(emb, pooled), 3.5)
    assert v.shape == z.shape and torch.isfinite(v).all() and v.abs().sum() > 0


def test_tiny_vae_encode_decode_shapes(tiny_components):
    c = tiny_components
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        z = encode_images(c, x)
        y = decode_latents(c, z)
    assert z.shape == (2, 16, 8, 12)
    assert y.shape == x.shape
    with torch.no_grad():
        torch.testing.assert_close(encode_images(c, x), z)  # posterior mode: deterministic


def test_prompt_encoder_shapes_and_distinct_prompts(tiny_components):
    c = tiny_components
    emb, pooled = c.prompt_encoder.encode(["a red car", "a blue boat", ""], c.device)
    cfg = c.transformer.config
    assert emb.shape == (3, 16, cfg.joint_attention_dim) and pooled.shape == (3, cfg.pooled_projection_dim)
    assert not torch.equal(pooled[0], pooled[1])


def test_flux_dev_missing_weights_clear_error(tmp_path):
    missing = tmp_path / "FLUX.1-dev"
    with pytest.raises(ModelNotFoundError) as err:
        load_components(ModelConfig(preset="flux-dev", path=str(missing), device="cpu"))
    msg = str(err.value)
    assert str(missing) in msg and "huggingface-cli download" in msg and "model.path" in msg


def test_flux_dev_architecture_is_the_real_one():
    """The config builds FLUX.1-dev's transformer: 11.9 B parameters, 19 + 38 blocks, 3072 wide."""
    from diffusers import AutoencoderKL

    from fluxsr_core.backbones import flux1
    from fluxsr_core.backbones.flux1 import configs

    tr = flux1.random_transformer(device="meta")
    assert sum(p.numel() for p in tr.parameters()) == 11_901_408_320
    assert tr.inner_dim == 3072 and len(tr.transformer_blocks) == 19 and len(tr.single_transformer_blocks) == 38
    with torch.device("meta"):
        vae = AutoencoderKL(**configs.VAE_CONFIG)
    assert sum(p.numel() for p in vae.parameters()) == 83_819_683


def test_taef1_round_trip_on_real_image(shared):
    cfg = ModelConfig(vae="taef1", taef1_path=str(shared / "weights" / "taef1"))
    c = load_components(cfg)
    img = Image.open(shared / "data" / "RealSR_x4" / "test_HR" / "Canon_001_LR4.png").convert("RGB").crop((0, 0, 256, 256))
    x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        z = encode_images(c, x)
        y = decode_latents(c, z).clamp(0, 1)
    assert z.shape == (1, 16, 32, 32)
    assert 0.5 < z.std().item() < 2.0  # TAEF1 latents are FLUX-normalised (scale 1, shift 0)
    psnr = 10 * torch.log10(1 / torch.mean((y - x) ** 2)).item()
    assert psnr > 25, psnr


def test_taef1_missing_files_named(tmp_path):
    from fluxsr_core.models.taef1 import load_taef1

    with pytest.raises(FileNotFoundError, match="taef1_encoder.safetensors"):
        load_taef1(tmp_path)
