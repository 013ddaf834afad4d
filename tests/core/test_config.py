import pytest

from fluxsr_core.config import presets as configs
from fluxsr_core.config import ConfigError, FluxSRConfig, dump_config, load_config


def test_defaults_are_valid_and_documented():
    cfg = FluxSRConfig()
    assert cfg.model.preset == "tiny" and 0 < cfg.loss.T_L < 1
    assert FluxSRConfig.model_fields["preset"].description
    for section in set(FluxSRConfig.model_fields) - {"preset"}:
        for name, field in type(getattr(cfg, section)).model_fields.items():
            assert field.description, f"{section}.{name} has no description"


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  lamda: 1.0\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "loss.lamda" in str(err.value) and str(p) in str(err.value)


def test_wrong_type_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("pairs:\n  num_records: many\n")
    with pytest.raises(ConfigError, match="pairs.num_records"):
        load_config(p)


def test_resolution_must_be_multiple_of_16():
    with pytest.raises(ConfigError, match="multiple of 16"):
        load_config(overrides=["pairs.resolution=100"])


def test_T_L_range_checked():
    with pytest.raises(ConfigError, match="loss.T_L"):
        load_config(overrides=["loss.T_L=1.5"])


@pytest.mark.parametrize("override", ["infer.tile=15", "infer.overlap=128"])
def test_infer_tiles_checked(override):
    with pytest.raises(ConfigError, match="must be even latent sizes with 0 <= overlap < tile"):
        load_config(overrides=[override])
    load_config(overrides=["infer.tile=null", "infer.overlap=3"])  # no tiles: overlap unused


def test_file_then_overrides_layering(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  T_L: 0.3\nlora:\n  rank: 4\n")
    cfg = load_config(p, ["lora.rank=16"], base=configs.tiny())
    assert cfg.loss.T_L == 0.3 and cfg.lora.rank == 16
    assert cfg.loss.allow_random_lpips_backbone is True  # kept from the base named config


def test_dump_then_load_round_trips(tmp_path):
    cfg = configs.flux_dev()
    p = tmp_path / "dump.yaml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


def test_section_hash_tracks_only_named_sections():
    a = FluxSRConfig()
    b = load_config(overrides=["loss.T_L=0.4"])
    assert a.section_hash("pairs") == b.section_hash("pairs")
    assert a.section_hash("loss") != b.section_hash("loss")


def test_taef1_requires_path_when_it_loads_and_micro_requires_taef1():
    """A config naming no TAEF1 folder is valid (a preset's defaults, a partial deployment parameter); loading the
    VAE without one is an error naming the key. The micro preset runs only through TAEF1."""
    from fluxsr_core.errors import InputNotFoundError
    from fluxsr_core.models.taef1 import load_taef1

    cfg = load_config(overrides=["model.vae=taef1"])
    with pytest.raises(InputNotFoundError, match="model.taef1_path is not set"):
        load_taef1(cfg.model.taef1_path)
    assert load_config(preset="micro").model.vae == "taef1"
    with pytest.raises(ConfigError, match="keep model.vae=taef1"):
        load_config(preset="micro", overrides=["model.vae=native"])


def test_a_config_is_a_preset_plus_overrides():
    """A partial mapping (a deployment's parameter) is the named preset with those values over it."""
    dev = FluxSRConfig.model_validate({"preset": "flux-dev", "model": {"path": "/models/flux"}})
    assert dev.model.preset == "flux-dev" and dev.lora.rank == 64 and dev.model.path == "/models/flux"
    assert dev == FluxSRConfig.model_validate(dev.model_dump())  # a full dump validates to itself
    assert FluxSRConfig() == configs.tiny() and configs.tiny().loss.lpips_net == "alex"
    assert load_config(overrides=["preset=flux-dev"]) == configs.flux_dev()  # naming a preset rebases
    assert load_config(overrides=["preset=flux-dev", "lora.rank=8"]).lora.rank == 8
    with pytest.raises(ConfigError, match="unknown named config"):
        configs.named("flux-schnell")


@pytest.mark.parametrize("old, knob", [("t", "step_fraction"), ("step_fraction", "step_fraction"), ("tau", "tau"),
                                       ("steps", "steps"), ("guidance_scale", "guidance_scale"), ("seed", "seed")])
def test_a_knob_key_of_the_infer_section_names_its_place_in_infer_knobs(tmp_path, old, knob):
    with pytest.raises(ConfigError, match=f"'infer.{old}' was renamed 'infer.knobs.{knob}'"):
        load_config(overrides=[f"infer.{old}=0.5"])
    p = tmp_path / "old.yaml"
    p.write_text(f"infer:\n  {old}: 0.5\n")
    with pytest.raises(ConfigError, match=f"{p}.*infer.knobs.{knob}"):
        load_config(p)
    assert load_config(overrides=[f"infer.knobs.{knob}=0.5"]).infer.knobs == {knob: 0.5}


def test_the_old_teacher_section_names_sr_teacher(tmp_path):
    p = tmp_path / "old.yaml"
    p.write_text("teacher:\n  lambda_pixel: 30\n")
    with pytest.raises(ConfigError, match=f"{p}: section 'teacher' was renamed 'sr_teacher'"):
        load_config(p)
    assert load_config(overrides=["sr_teacher.lambda_pixel=30"]).sr_teacher.lambda_pixel == 30
