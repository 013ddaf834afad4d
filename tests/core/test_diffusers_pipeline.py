"""``FluxSRPipeline`` (a diffusers ``DiffusionPipeline``) and ``fluxsr export``: for every method the pipeline's
image equals the one ``fluxsr upscale``'s file path writes (``upscale_files``, the CLI's function; the CLI itself
against an exported folder: tests/flows/test_methods_flow.py); its output types; save/load; an exported folder with
its card loads again."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fluxsr_core import model_folder
from fluxsr_core.config import tiny
from fluxsr_core.diffusers_pipeline import FluxSRPipeline
from fluxsr_core.student import load_student
from fluxsr_core.upscale_files import upscale_files
from helpers import train_tiny_models

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# each method with knobs away from its defaults, and the seed of its source noise
KNOBS = {"ftd": {"step_fraction": 0.7}, "sr-teacher": {"steps": 2, "seed": 5}, "oftsr": {"tau": 0.3, "seed": 5},
         "meanflow": {"steps": 2, "guidance": 2.0, "seed": 5}}


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_torch_thread):
    return train_tiny_models(tmp_path_factory.mktemp("pipe"))


@pytest.fixture(scope="module")
def lr_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 5, generator=g), size=(24, 20), mode="bilinear")
    path = tmp_path_factory.mktemp("lr") / "lr.png"
    Image.fromarray((img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("method", list(KNOBS))
def test_pipeline_image_is_the_upscale_commands_image(models, lr_file, tmp_path, method):
    knobs = dict(KNOBS[method])
    cfg = tiny()
    cfg.infer = cfg.infer.model_copy(update={"tile": 4, "overlap": 2})  # several tiles, streamed by upscale_files
    student = load_student(cfg, models[method])
    with torch.inference_mode():
        (done,) = upscale_files(student, [lr_file], tmp_path, cfg.infer, knobs=knobs)
    expected = np.asarray(Image.open(done.output))
    pipe = FluxSRPipeline.from_pretrained(models[method])
    assert pipe.method == method and isinstance(pipe.transformer, torch.nn.Module)
    seed = knobs.pop("seed", None)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    out = pipe(Image.open(lr_file), generator=gen, tile=4, overlap=2, **knobs).images[0]
    assert out.size == (80, 96)  # 4x of 20 x 24
    np.testing.assert_array_equal(np.asarray(out), expected)
    if seed is not None:  # the seed is the source noise's: another one, another image
        other = pipe(Image.open(lr_file), generator=torch.Generator().manual_seed(seed + 1), tile=4, overlap=2,
                     **knobs).images[0]
        assert not np.array_equal(np.asarray(other), expected)


def test_output_types_batches_and_refused_knobs(models, lr_file):
    pipe = FluxSRPipeline.from_pretrained(models["oftsr"])
    image = Image.open(lr_file)
    pil = np.asarray(pipe(image, tau=0.5).images[0]).astype(np.float32) / 255
    arr = pipe([image, np.asarray(image)], tau=0.5, output_type="np").images
    pt = pipe(torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255.0, tau=0.5, output_type="pt",
              return_dict=False)[0]
    assert arr.shape == (2, 96, 80, 3) and pt.shape == (1, 3, 96, 80)
    np.testing.assert_allclose(arr[0], pil, atol=1e-6)
    np.testing.assert_allclose(arr[1], pil, atol=1e-6)  # a uint8 array is read like the PIL image
    np.testing.assert_allclose(pt[0].permute(1, 2, 0).numpy(), pil, atol=1e-6)
    no_fix = np.asarray(pipe(image, tau=0.5, color_fix="none").images[0]).astype(np.float32) / 255
    assert np.abs(no_fix - pil).max() > 1 / 255  # the colour fix is applied, and can be turned off
    tiled = np.asarray(pipe(image, tau=0.5, tile=4, overlap=2).images[0]).astype(np.float32) / 255
    assert tiled.shape == pil.shape and np.abs(tiled - pil).max() > 0  # tiles of 4 latent px blend differently
    with pytest.raises(ValueError, match="no inference knob.*step_fraction"):
        pipe(image, step_fraction=0.5)  # an FTD knob on an OFTSR model
    with pytest.raises(ValueError, match="output_type"):
        pipe(image, output_type="latent")


def test_save_pretrained_then_from_pretrained_gives_the_same_image(models, lr_file, tmp_path):
    pipe = FluxSRPipeline.from_pretrained(models["meanflow"])
    saved = pipe.save_pretrained(tmp_path / "saved")
    assert {model_folder.INFO_FILE, model_folder.MODULES_FILE, "pytorch_lora_weights.safetensors"} <= {
        p.name for p in saved.iterdir()}
    again = FluxSRPipeline.from_pretrained(saved)
    a = pipe(Image.open(lr_file), steps=4, seed=1).images[0]
    b = again(Image.open(lr_file), steps=4, seed=1).images[0]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert model_folder.model_digest(saved) == model_folder.model_digest(models["meanflow"])


def test_export_writes_a_folder_fit_to_share(models, lr_file, tmp_path):
    from fluxsr_core.errors import UsageError
    from flows.export import export_model

    run = models["ftd"].parent  # the run directory (its final/ is the model)
    done = export_model(run, tmp_path / "shared")
    out = tmp_path / "shared"
    assert done["benchmark"] is None  # never scored (a scored one: tests/flows/test_methods_flow.py)
    assert set(done["files"]) == {"README.md", "fluxsr_model.json", "pytorch_lora_weights.safetensors",
                                  "summary.json"}
    card = (out / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["library_name"] == "diffusers" and header["pipeline_tag"] == "image-to-image"
    assert header["license"] == "apache-2.0" and "ftd" in header["tags"] and header["base_model"] == "tiny"
    assert "## Training settings" in card and "| `learning_rate` | 0.01 |" in card and "| `processes` | 1 |" in card
    assert model_folder.model_digest(out) == model_folder.model_digest(models["ftd"])
    with pytest.raises(UsageError, match="not empty.*--force"):
        export_model(run, out)
    export_model(run, out, force=True)
    assert not list(tmp_path.glob(".*partial"))
    a = FluxSRPipeline.from_pretrained(out)(Image.open(lr_file)).images[0]
    b = FluxSRPipeline.from_pretrained(models["ftd"])(Image.open(lr_file)).images[0]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
