"""A config from a preset, a YAML file and KEY=VALUE overrides, validated once; errors name the file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from fluxsr_core.config.base import ConfigError, deep_merge
from fluxsr_core.config.root import PRESET_VALUES, FluxSRConfig

# Keys that were renamed: the old name is an error naming the new one.
RENAMED_KEYS = {"infer.t": "infer.knobs.step_fraction", "infer.step_fraction": "infer.knobs.step_fraction",
                "infer.tau": "infer.knobs.tau", "infer.steps": "infer.knobs.steps",
                "infer.guidance_scale": "infer.knobs.guidance_scale", "infer.seed": "infer.knobs.seed"}
# Sections that were renamed (same keys inside): "teacher" was the SR teacher's, a word FluxSR uses for its base.
RENAMED_SECTIONS = {"teacher": "sr_teacher"}


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}' (check spelling; see `fluxsr config show` for valid keys)")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{source}: {key}: {e['msg']}{shown}")
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["loss.T_L=0.4", "pairs.num_records=32"]`` into a nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not KEY=VALUE (example: loss.T_L=0.4)")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def _check_renamed(data: dict[str, Any], source: str) -> None:
    for old, new in RENAMED_SECTIONS.items():
        if old in data:
            raise ConfigError(f"{source}: section '{old}' was renamed '{new}' (the same keys inside: "
                              f"{new}.sigma_p, {new}.lambda_pixel, ...)")
    for old, new in RENAMED_KEYS.items():
        section, key = old.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(f"{source}: key '{old}' was renamed '{new}'; use --set {new}=... (same meaning)")


def build_config(data: dict[str, Any] | None = None, source: str = "<config>") -> FluxSRConfig:
    """Validate a nested dict into a config, raising ConfigError that names source and key."""
    _check_renamed(data or {}, source)
    try:
        return FluxSRConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: FluxSRConfig | None = None, preset: str | None = None) -> FluxSRConfig:
    """Preset ``preset`` (or ``base``; default tiny) <- YAML file <- ``KEY=VALUE`` overrides, validated once.

    A file or override that sets ``preset`` changes the base the rest is layered on.
    """
    data: dict[str, Any] = base.model_dump(mode="json") if base is not None else {"preset": preset or "tiny"}
    source = f"preset {data['preset']}"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections (model:, pairs:, ...), got {type(loaded).__name__}")
        data = _rebase(data, loaded)
    if overrides:
        data = _rebase(data, parse_overrides(overrides))
        source += " + overrides"
    return build_config(data, source)


def _rebase(data: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``data``; when ``extra`` names another preset, over that preset's values instead."""
    if "preset" in extra and extra["preset"] != data.get("preset"):
        if extra["preset"] not in PRESET_VALUES:
            raise ConfigError(f"unknown preset {extra['preset']!r}; choose one of {sorted(PRESET_VALUES)}")
        return deep_merge({"preset": extra["preset"]}, extra)
    return deep_merge(data, extra)


def dump_config(cfg: FluxSRConfig) -> str:
    """YAML text of a config (what ``fluxsr config show`` prints)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
