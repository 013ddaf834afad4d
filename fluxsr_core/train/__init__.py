"""Prefect-free training core: LoRA adapters, Algorithm 1's loop, checkpoints.

``lora`` adds/exports/loads the adapters (diffusers' FLUX LoRA format),
``loop.Trainer`` runs Algorithm 1, ``checkpoint`` saves and restores a run
atomically in safetensors + JSON. Orchestration (Prefect, torchrun) lives outside
``fluxsr_core``.
"""
