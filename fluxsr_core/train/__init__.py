"""Prefect-free training core: Algorithm 1's loop, checkpoints, parallelism.

``loop.Trainer`` runs Algorithm 1, ``checkpoint`` saves and restores a run
atomically in safetensors + JSON, ``parallelize`` applies FSDP, compile and activation
checkpointing to a model. The LoRA adapters it trains are ``fluxsr_core.models.lora``
(inference loads them too). Orchestration (Prefect, torchrun) lives outside
``fluxsr_core``.
"""
