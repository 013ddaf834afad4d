"""Widening the input projection for extra LR-latent channels with zero weights leaves the output unchanged."""
import torch
torch.set_num_threads(1)
import tiny_backbones as tb
from diffusers import Flux2Transformer2DModel, ZImageTransformer2DModel, Flux2KleinPipeline as P

g = torch.Generator().manual_seed(0)
# FLUX.2: tokens concatenated on the last dim, x_embedder Linear(128 -> inner, bias=False) -> Linear(256 -> inner)
torch.manual_seed(0)
m = Flux2Transformer2DModel(**tb.FLUX2_KLEIN).eval()
x, t, kw = tb.flux2_inputs(m)
with torch.no_grad():
    ref = m(hidden_states=x, timestep=t, **kw)[0]
    old = m.x_embedder
    new = torch.nn.Linear(256, old.out_features, bias=False)
    new.weight.zero_(); new.weight[:, :128] = old.weight
    m.x_embedder = new
    lr = P._pack_latents(P._patchify_latents(torch.randn(2, 32, 8, 8, generator=g)))
    out = m(hidden_states=torch.cat([x, lr], dim=2), timestep=t, **kw)[0]
print("flux2 widened x_embedder", tuple(old.weight.shape), "->", tuple(new.weight.shape), "max diff", float((out - ref).abs().max()), "out", tuple(out.shape))

# Z-Image: the transformer patchifies internally with channel FASTEST: feature = ((pf*p + ph)*p + pw)*C + c.
# Feed x with 32 channels (latent 16 + LR 16): columns of the widened Linear(128 -> dim) interleave.
torch.manual_seed(0)
m = ZImageTransformer2DModel(**tb.ZIMAGE).eval()
x, t, kw = tb.zimage_inputs(m)
with torch.no_grad():
    ref = torch.stack(m(x, t, **kw)[0])
    old = m.all_x_embedder["2-1"]
    C, Ce, p = 16, 16, 2
    new = torch.nn.Linear(p * p * (C + Ce), old.out_features, bias=True)
    new.weight.zero_(); new.bias.copy_(old.bias)
    w_old = old.weight.view(-1, p * p, C)
    new.weight.view(-1, p * p, C + Ce)[:, :, :C] = w_old
    m.all_x_embedder["2-1"] = new
    xe = [torch.cat([xi, torch.randn(Ce, 1, 8, 8, generator=g)], dim=0) for xi in x]
    out = torch.stack(m(xe, t, **kw)[0])
    # the naive layout (old weights in the first 64 columns) is wrong:
    new.weight.zero_(); new.weight[:, :64] = old.weight
    bad = torch.stack(m(xe, t, **kw)[0])
print("z-image widened all_x_embedder['2-1']", tuple(old.weight.shape), "->", tuple(new.weight.shape),
      "interleaved max diff", float((out - ref).abs().max()), "naive-first-64 max diff", float((bad - ref).abs().max()),
      "out", tuple(out.shape))
