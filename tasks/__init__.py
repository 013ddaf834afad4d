"""tasks: Prefect tasks, each one resumable unit of work (a shard, a chunk range, a training run).

Tasks take and return paths, indices and small JSON dicts, never live tensors; their
results are persisted next to the outputs so a new flow run finds them in cache.
"""
