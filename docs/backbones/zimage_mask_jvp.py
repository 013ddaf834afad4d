"""Z-Image JVP with captions of different padded lengths (exercises the attention-mask path)."""
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
torch.set_num_threads(1)
import tiny_backbones as tb
from diffusers import ZImageTransformer2DModel
torch.manual_seed(0)
m = ZImageTransformer2DModel(**tb.ZIMAGE).eval()
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 16, 1, 8, 8, generator=g)
caps = [torch.randn(7, 16, generator=g), torch.randn(40, 16, generator=g)]  # pad to 32 and 64 -> mask
t = torch.tensor([0.3, 0.6])
f = lambda xx, tt: torch.stack(m(list(xx.unbind(0)), tt, caps, return_dict=False)[0])
with sdpa_kernel(SDPBackend.MATH):
    y, dy = torch.func.jvp(f, (x, t), (torch.randn_like(x), torch.ones_like(t)))
    # batch consistency: item 0 alone equals item 0 in the masked batch
    y0 = torch.stack(m([x[0]], t[:1], caps[:1], return_dict=False)[0])
print("z-image masked-batch jvp ok", tuple(dy.shape), "batch-vs-single maxdiff", float((y[0] - y0[0]).abs().max()))
