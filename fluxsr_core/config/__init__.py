"""Typed configuration for every stage, loaded from YAML with strict checking.

One root model, ``FluxSRConfig``, holds one section per stage. Every section
forbids unknown keys and validates types, so a typo (``loss.lamda``) or a wrong
type is an error that names the key and the file. Defaults are the tiny embedded
preset (what ``make run`` runs); ``presets`` names full-size runs.

The FluxSR paper does not publish T_L, λ, γ, μ, the LoRA rank or the learning
rate: the defaults are ours, documented in docs/methods.md and the generated docs/configuration.md.

This package's modules, one job each: ``base`` (the error and section types), ``model``, ``data`` (pairs,
degrade, encode), ``training`` (train, lora and each method's section), ``running`` (retrain, runner, bench,
infer), ``root`` (``FluxSRConfig`` and the presets' values), ``loading`` (YAML and overrides), ``presets``
(``tiny()``, ``micro()``, ``flux_dev()``).
"""

from fluxsr_core.config.base import ConfigError, Section
from fluxsr_core.config.data import (
    DegradationPass,
    DegradeConfig,
    EncodeConfig,
    PairsConfig,
)
from fluxsr_core.config.loading import (
    RENAMED_KEYS,
    RENAMED_SECTIONS,
    build_config,
    dump_config,
    load_config,
    parse_overrides,
)
from fluxsr_core.config.model import ModelConfig
from fluxsr_core.config.presets import NAMED, flux_dev, micro, named, tiny
from fluxsr_core.config.root import PRESET_VALUES, FluxSRConfig, PresetName
from fluxsr_core.config.running import (
    MAX_INPUT_PIXELS,
    BenchConfig,
    InferConfig,
    RetrainConfig,
    RunnerConfig,
    check_tiles,
)
from fluxsr_core.config.training import (
    LoraConfig,
    LossConfig,
    MeanflowConfig,
    OftsrConfig,
    SRTeacherConfig,
    TrainConfig,
)

__all__ = [
    "MAX_INPUT_PIXELS", "NAMED", "PRESET_VALUES", "RENAMED_KEYS", "RENAMED_SECTIONS", "BenchConfig", "ConfigError", "DegradationPass",
    "DegradeConfig", "EncodeConfig", "FluxSRConfig", "InferConfig", "LoraConfig", "LossConfig", "MeanflowConfig",
    "ModelConfig", "OftsrConfig", "PairsConfig", "PresetName", "RetrainConfig", "RunnerConfig", "Section",
    "SRTeacherConfig", "TrainConfig", "build_config", "check_tiles", "dump_config", "flux_dev", "load_config", "micro",
    "named", "parse_overrides", "tiny",
]
