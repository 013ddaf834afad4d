"""A trained model carries its identity: the method and its parameters, the base, the LoRA settings; a model card."""

import json

import pytest
import torch
import yaml

from fluxsr_core import model_folder
from fluxsr_core.backbones.flux1 import LORA_TARGETS
from fluxsr_core.config import LoraConfig, ModelConfig, TrainConfig, load_config
from fluxsr_core.methods.ftd import FTD
from fluxsr_core.model_folder import ModelMismatchError
from fluxsr_core.models import load_components
from fluxsr_core.models.sr_model import SRModel
from fluxsr_core.student import load_student
from fluxsr_core.train.loop import Trainer
from helpers import latent_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_torch_thread):
    """An FTD model trained for 2 steps at T_L = 0.3 (not the default 0.5), exported with a card."""
    root = tmp_path_factory.mktemp("model")
    method = FTD(T_L=0.3, lambda_tv_lpips=0.0, mu_adl=0.0)
    tr = Trainer(method, SRModel(load_components(ModelConfig())), latent_samples(2, seed=1),
                 lora_cfg=LoraConfig(rank=4), train_cfg=TrainConfig(steps=2, learning_rate=1e-2),
                 identity={"trained_on": {"latents_key": "abc123"}})
    tr.fit()
    tr.export(root / "final")
    card = model_folder.model_card(tr.model_info(), {"total": 0.5, "ftd": 0.25}, "loss.png")
    (root / "final" / model_folder.CARD_FILE).write_text(card)
    return root / "final"


def test_the_folder_says_what_the_model_is(trained):
    info = json.loads((trained / model_folder.INFO_FILE).read_text())
    assert info["method"] == "ftd" and info["method_params"]["T_L"] == 0.3 and info["method_params"]["guidance"] == 3.5
    assert info["base"]["preset"] == "tiny" and info["base"]["seed"] == 0 and len(info["base"]["architecture_digest"]) == 16
    assert info["lora"] == {"rank": 4, "alpha": 4, "target_modules": sorted(LORA_TARGETS)}
    assert info["steps"] == 2 and info["trained_on"] == {"latents_key": "abc123", "samples": 2}
    assert info["knobs"] == {"step_fraction": 1.0}
    assert info["fluxsr_version"] and info["format"] == model_folder.FORMAT


def test_student_runs_the_model_as_trained(trained):
    student = load_student(load_config(), trained)  # the config says T_L 0.5 (its default): the model's 0.3 wins
    assert student.method.T_L == 0.3 and student.model.guidance == 3.5
    assert load_student(load_config(), trained / "pytorch_lora_weights.safetensors").method.T_L == 0.3  # the file too
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        at_03 = student.upscale(image, load_config().infer)
        forced = load_student(load_config(overrides=["infer.method_params.T_L=0.5"]), trained)
        assert forced.method.T_L == 0.5  # overridden on purpose
        assert not torch.equal(at_03, forced.upscale(image, load_config().infer))


def test_a_config_that_disagrees_is_an_error_naming_both(trained):
    with pytest.raises(ModelMismatchError) as err:
        load_student(load_config(overrides=["loss.T_L=0.4"]), trained)
    msg = str(err.value)
    assert "T_L=0.3" in msg and "loss.T_L=0.4" in msg and "infer.method_params.T_L" in msg
    assert load_student(load_config(overrides=["loss.T_L=0.3"]), trained).method.T_L == 0.3  # agreeing is fine
    with pytest.raises(ModelMismatchError, match="not parameters of method ftd"):
        load_student(load_config(overrides=["infer.method_params.steps=2"]), trained)


def test_another_base_architecture_is_refused(trained):
    with pytest.raises(ModelMismatchError) as err:
        load_student(load_config(overrides=["model.seed=1"]), trained)  # another tiny base (other weights)
    assert "seed 0" in str(err.value) and "seed 1" in str(err.value) and "--set model.seed=0" in str(err.value)
    info = model_folder.read_info(trained)
    other = {**info.base, "architecture_digest": "0" * 16}
    with pytest.raises(ModelMismatchError, match="architecture 0000000000000000"):
        info.check_base(other, "here")


def test_model_card_header_and_body(trained):
    text = (trained / model_folder.CARD_FILE).read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["library_name"] == "diffusers" and header["license"] == "apache-2.0"
    assert header["base_model"] == "tiny" and {"fluxsr", "ftd", "lora", "super-resolution"} <= set(header["tags"])
    assert "| `T_L` | 0.3 |" in text and "| total | 0.50000 |" in text and "load_lora_adapter" in text
    assert "![loss curves](loss.png)" in text and "`step_fraction` (default 1.0)" in text


def test_a_folder_without_identity_is_named(tmp_path, trained):
    (tmp_path / "pytorch_lora_weights.safetensors").write_bytes((trained / "pytorch_lora_weights.safetensors").read_bytes())
    with pytest.raises(FileNotFoundError, match="no fluxsr_model.json"):
        load_student(load_config(), tmp_path)
    with pytest.raises(FileNotFoundError, match="no trained model at"):
        load_student(load_config(), tmp_path / "missing")
