"""What several backbones do the same way: load a diffusers folder, widen an input projection by appended zero
columns, and run a pipeline's own prompt encoding from a lazily loaded text-only pipeline."""

from __future__ import annotations

import torch


def load_folder(path: str, transformer_class: str, vae_class: str, *, dtype: torch.dtype, device: torch.device,
                local_files_only: bool, transformer_device: torch.device | None = None):
    """Transformer, VAE and scheduler of a diffusers folder or hub id (the transformer to ``transformer_device``,
    default ``device``: the CPU when it is quantised or offloaded next)."""
    import diffusers

    kw = dict(torch_dtype=dtype, local_files_only=local_files_only)
    transformer = getattr(diffusers, transformer_class).from_pretrained(path, subfolder="transformer", **kw)
    vae = getattr(diffusers, vae_class).from_pretrained(path, subfolder="vae", **kw)
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler",
                                                                           local_files_only=local_files_only)
    return transformer.to(transformer_device or device), vae.to(device), scheduler


def unloaded(transformer_class: str, transformer_config: dict, vae_class: str, vae_config: dict,
             scheduler_config: dict, prompt: tuple[int, int, int]):
    """(transformer, VAE, scheduler, an empty text condition) from configs, weights neither read nor initialised
    beyond what the current default device does (``fluxsr plan`` builds on meta). ``prompt``: (tokens, sequence
    width, pooled width) of the text condition, returned as a prompt encoder's ``(embeds, pooled)``."""
    import diffusers

    transformer = getattr(diffusers, transformer_class)(**transformer_config).requires_grad_(False)
    vae = getattr(diffusers, vae_class)(**vae_config).requires_grad_(False)
    tokens, width, pooled = prompt
    cond = (torch.empty(1, tokens, width), torch.empty(1, pooled))
    return transformer, vae, diffusers.FlowMatchEulerDiscreteScheduler(**scheduler_config), cond


def append_zero_columns(transformer, name: str, extra: int) -> None:
    """Replace the Linear ``name`` of ``transformer`` by one with ``extra`` more input columns, zero, after the old
    ones (the condition's tokens concatenated after the state's), and record the width in the config as diffusers'
    Control-LoRA loader does: the widened model is exactly the base at initialisation."""
    old = getattr(transformer, name)
    if not isinstance(old, torch.nn.Linear):
        raise ValueError("widen the input projection before adding LoRA adapters")
    new = torch.nn.Linear(old.in_features + extra, old.out_features, bias=old.bias is not None,
                          device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_features] = old.weight
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.requires_grad_(False)
    setattr(transformer, name, new)
    transformer.register_to_config(in_channels=new.in_features)


class TextPipeline:
    """A base's text encoders, as its diffusers ``pipeline`` class loads them (no transformer, no VAE), on first
    use; ``release`` moves them back to CPU memory (the next ``encode`` brings them to its device again)."""

    pipeline: str  # the diffusers pipeline class

    def __init__(self, path: str, dtype: torch.dtype, local_files_only: bool):
        self.path, self.dtype, self.local_files_only = path, dtype, local_files_only
        self._pipe = None

    def _pipeline(self, device: torch.device):
        if self._pipe is None:
            import diffusers

            self._pipe = getattr(diffusers, self.pipeline).from_pretrained(
                self.path, transformer=None, vae=None, torch_dtype=self.dtype, local_files_only=self.local_files_only)
        return self._pipe.to(device)

    def release(self) -> None:
        if self._pipe is not None:
            self._pipe.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
