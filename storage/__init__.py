"""storage: how fluxsr's stages persist their outputs.

``atomic`` (temp file + fsync + rename, checksums), ``manifest`` (a stage's done
mark and inventory), ``shards`` (atomic WebDataset tar shards with sidecars),
``layout`` (stage directories addressed by key). Nothing here imports torch.
"""
