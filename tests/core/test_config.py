import pytest

from fluxsr_core import configs
from fluxsr_core.config import ConfigError, FluxSRConfig, dump_config, load_config


def test_defaults_are_valid_and_documented():
    cfg = FluxSRConfig()
    assert cfg.model.preset == "tiny" and 0 < cfg.loss.T_L < 1
    for section in FluxSRConfig.model_fields:
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


def test_taef1_requires_path():
    with pytest.raises(ConfigError, match="taef1_path"):
        load_config(overrides=["model.vae=taef1"])
