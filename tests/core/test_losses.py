import pytest
import torch

from fluxsr_core import losses
from fluxsr_core.models.velocity import TextCondition, predict_velocity
from fluxsr_core.perceptual import BACKBONE_FILES, build_lpips


def test_adl_is_one_for_identical_tokens():
    tok = torch.randn(2, 1, 64).expand(2, 100, 64)
    assert losses.adl([tok, 3 * tok]).item() == pytest.approx(1.0, abs=1e-5)


def test_adl_near_zero_for_zero_mean_random_tokens():
    tok = torch.randn(2, 4096, 512, generator=torch.Generator().manual_seed(0))
    value = losses.adl([tok]).item()
    assert 0 <= value < 0.05  # expected ≈ 1/sqrt(N) = 0.016


def test_adl_differentiable_and_reaches_every_block(tiny_components):
    c = tiny_components
    tr = c.transformer
    tr.requires_grad_(True)
    try:
        emb, pooled = c.prompt_encoder.encode(["a street"], c.device)
        z = torch.randn(1, 16, 8, 8)
        with losses.capture_block_tokens(tr, c.backbone) as feats:
            predict_velocity(c.backbone, tr, z, torch.tensor([0.5]), TextCondition(emb, pooled), 3.5)
        n_blocks = len(tr.transformer_blocks) + len(tr.single_transformer_blocks)
        assert len(feats) == n_blocks
        assert all(f.shape == (1, 16, tr.inner_dim) for f in feats)  # image tokens only
        tr.zero_grad()
        losses.adl(feats).backward()
        for name, block in [("double", b) for b in tr.transformer_blocks] + [("single", b) for b in tr.single_transformer_blocks]:
            grads = [p.grad for p in block.parameters() if p.grad is not None]
            assert grads and any(g.abs().sum() > 0 for g in grads), f"no gradient reached a {name} block"
    finally:
        tr.requires_grad_(False)
        tr.zero_grad(set_to_none=True)


def test_tv_map_definition():
    img = torch.zeros(1, 1, 3, 3)
    img[0, 0, 1, 1] = 1.0
    tv = losses.tv_map(img)
    expected = torch.tensor([[[[0.0, 1.0], [1.0, 2.0]]]])
    torch.testing.assert_close(tv, expected)


@pytest.fixture(scope="module")
def random_lpips():
    torch.manual_seed(0)
    return build_lpips("alex", backbone_path="/nonexistent/alex.pth", allow_random=True)


def test_tv_lpips_zero_for_identical_and_grows_with_high_frequency_noise(random_lpips):
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(2, 3, 16, 16, generator=g), size=64, mode="bilinear")
    assert losses.tv_lpips(random_lpips, base, base, gamma=1.0).item() == pytest.approx(0.0, abs=1e-7)
    values = []
    for sigma in (0.02, 0.08, 0.2):
        noisy = (base + sigma * torch.randn(base.shape, generator=g)).clamp(0, 1)
        values.append(losses.tv_lpips(random_lpips, noisy, base, gamma=1.0).item())
    assert values[0] > 0 and values[0] < values[1] < values[2]


def test_lpips_refuses_random_backbone_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        build_lpips("vgg", allow_random=False)
    msg = str(err.value)
    assert BACKBONE_FILES["vgg"] in msg and str(tmp_path) in msg and "allow_random_lpips_backbone" in msg


def test_lpips_loads_backbone_from_torch_hub_cache(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(1)
    alex = torchvision.models.alexnet()
    (tmp_path / "checkpoints").mkdir()
    torch.save(alex.state_dict(), tmp_path / "checkpoints" / BACKBONE_FILES["alex"])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = build_lpips("alex")
    torch.testing.assert_close(getattr(model.net.slice1, "0").weight, alex.features[0].weight)
    torch.testing.assert_close(getattr(model.net.slice5, "10").weight, alex.features[10].weight)


def test_ftd_total_combines_terms_with_its_weights(random_lpips):
    from fluxsr_core.methods.ftd import FTD, reconstruction_total

    g = torch.Generator().manual_seed(0)
    x_hat, x_hr = torch.rand(1, 3, 32, 32, generator=g), torch.rand(1, 3, 32, 32, generator=g)
    feats = [torch.randn(1, 10, 8, generator=g)]
    terms = reconstruction_total(torch.tensor(0.3), x_hat, x_hr, feats, random_lpips, lambda_tv_lpips=2.0, gamma_tv=1.0,
                                 mu_adl=0.5)
    expected = 0.3 + terms["mse"] + 2.0 * terms["tv_lpips"] + 0.5 * terms["adl"]
    torch.testing.assert_close(terms["total"], expected)
    assert terms["mse"] > 0 and terms["tv_lpips"] > 0 and terms["adl"] > 0
    assert tuple(terms) == FTD.term_names  # the method's names are the terms it returns


def test_random_lpips_backbone_is_the_same_whatever_the_callers_rng():
    torch.manual_seed(123)
    a = build_lpips("alex", backbone_path="/nonexistent", allow_random=True)
    torch.rand(1000)
    state = torch.random.get_rng_state()
    b = build_lpips("alex", backbone_path="/nonexistent", allow_random=True)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream is untouched
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k
