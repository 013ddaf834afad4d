"""FLUX.2 patchify+pack == FLUX.1 pack on the raw 32-channel latent; unpack_with_ids == plain inverse."""
import torch
import sys; sys.path.insert(0, ".")  # run from the checkout
from diffusers import FluxPipeline, Flux2KleinPipeline as P
from fluxsr_core.latents import pack, unpack
z = torch.randn(2, 32, 12, 8)
a = P._pack_latents(P._patchify_latents(z))
b = FluxPipeline._pack_latents(z, 2, 32, 12, 8)
print("flux2 patchify+pack == flux1 pack:", torch.equal(a, b), "== fluxsr pack:", torch.equal(a, pack(z, 2)), tuple(a.shape))
ids = P._prepare_latent_ids(P._patchify_latents(z))
u = P._unpatchify_latents(P._unpack_latents_with_ids(a, ids, 6, 4))
print("unpack_with_ids+unpatchify == z:", torch.equal(u, z), "fluxsr unpack == z:", torch.equal(unpack(a, 12, 8, 2), z))
print("flux2 latent ids first rows:", ids[0, :3].tolist(), ids.dtype, tuple(ids.shape))
print("flux2 text ids first rows:", P._prepare_text_ids(torch.zeros(2, 5, 3))[0, :3].tolist())
print("flux1 image ids first rows:", FluxPipeline._prepare_latent_image_ids(2, 6, 4, "cpu", torch.float32)[:3].tolist())
