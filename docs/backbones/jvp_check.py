"""JVP vs central finite differences in float64, tangent in x only and in t only."""
import torch, json
from torch.nn.attention import SDPBackend, sdpa_kernel
torch.set_num_threads(1)
import tiny_backbones as tb
from diffusers import FluxTransformer2DModel, Flux2Transformer2DModel, ZImageTransformer2DModel

def check(name, cls, cfg, make):
    torch.manual_seed(0)
    m = cls(**cfg).eval().double()
    x, t, kw = make(m)
    kw = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in kw.items()}
    if name == "z-image":
        kw["cap_feats"] = [c.double() for c in kw["cap_feats"]]
        xs = torch.stack(x).double()
        f = lambda xx, tt: torch.stack(m(list(xx.unbind(0)), tt, **kw)[0])
    else:
        xs = x.double()
        f = lambda xx, tt: m(hidden_states=xx, timestep=tt, **kw)[0]
    t = t.double()
    res = {}
    for label, tang in [("x", (torch.randn_like(xs), torch.zeros_like(t))), ("t", (torch.zeros_like(xs), torch.ones_like(t)))]:
        with sdpa_kernel(SDPBackend.MATH):
            _, dy = torch.func.jvp(f, (xs, t), tang)
            eps = 1e-6
            with torch.no_grad():
                fd = (f(xs + eps * tang[0], t + eps * tang[1]) - f(xs - eps * tang[0], t - eps * tang[1])) / (2 * eps)
        res[label] = f"rel err {float((dy - fd).norm() / fd.norm()):.1e}"
    print(json.dumps(dict(base=name, **res)))

check("flux1-dev", FluxTransformer2DModel, tb.FLUX1_DEV, lambda m: tb.flux1_inputs(m, True))
check("flux2-klein", Flux2Transformer2DModel, tb.FLUX2_KLEIN, tb.flux2_inputs)
check("z-image", ZImageTransformer2DModel, tb.ZIMAGE, tb.zimage_inputs)
