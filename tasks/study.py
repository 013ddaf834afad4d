"""The study's own units: a method's untrained initialisation as a model folder, and the VAE round trip of a
test set's HR images (the latent-space ceiling row), each cached on what it is made of."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from fluxsr_core.config import FluxSRConfig, ModelConfig

CODE_MODULES = ("tasks.study",)


@task(name="export-initialisation", task_run_name="init-{method}")
def export_initialisation(directory: str, method: str, config: FluxSRConfig, init_dir: str | None = None,
                          init_digest: str | None = None) -> dict:
    """The model ``method`` starts its training from, exported before any step (0 steps): the base with the
    method's extensions (zero-initialised, so the SR teacher is the base), or the model it warm-starts from
    (``init_dir``: OFTSR and MeanFlow start as the SR teacher). Every trained row is compared with it."""
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import load_components
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.train.loop import Trainer

    m = build_method(method, config)
    trainer = Trainer(m, SRModel(load_components(config.model), guidance=m.guidance), [None], lora_cfg=config.lora,
                      train_cfg=config.train, identity={"trained_on": {"latents_key": "none (untrained)"}})
    if init_dir:
        trainer.warm_start(init_dir)
    trainer.export(directory)
    return {"model": directory, "init_digest": init_digest}


@task(name="vae-round-trip", task_run_name="vae-round-trip")
def vae_round_trip(directory: str, hr_dir: str, hr_digest: str, model: ModelConfig) -> dict:
    """D(E(x)) of every HR image of ``hr_dir`` as PNGs of the same names in ``directory``: what the latent space
    itself keeps of an image, the ceiling of any model working in it."""
    import io

    import torch
    from PIL import Image

    from fluxsr_core.imageio import read_image, to_uint8
    from fluxsr_core.models import load_components
    from fluxsr_core.models.codec import decode_latents, encode_images
    from fluxsr_core.atomic import write_bytes

    components = load_components(model)
    files = sorted(Path(hr_dir).glob("*.png"))
    for f in files:
        with torch.no_grad():
            x = decode_latents(components, encode_images(components, read_image(f)))
        buf = io.BytesIO()
        Image.fromarray(to_uint8(x)).save(buf, format="PNG")
        write_bytes(Path(directory) / f.name, buf.getvalue())
    return {"directory": directory, "images": len(files)}
