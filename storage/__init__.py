"""storage: how fluxsr's stages persist their outputs.

``manifest`` (a stage's done mark and inventory), ``shards`` (atomic WebDataset tar
shards with sidecars), ``layout`` (stage directories addressed by key), ``latent_store``
(the zarr store of encoded latents) and ``latent_dataset`` (training's reader of it),
``registry`` (promoted model versions). They write through the core's ``fluxsr_core.atomic``
(temporary name, fsync, rename; checksums). Only ``latent_dataset`` and ``registry``
import torch.
"""

__all__ = ["latent_dataset", "latent_store", "layout", "manifest", "registry", "shards"]
