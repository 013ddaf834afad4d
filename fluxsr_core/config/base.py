"""The floor of the configuration: its error type and the section base class every section derives from."""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
)

from fluxsr_core.errors import FluxSRError


class ConfigError(FluxSRError, ValueError):
    """A configuration problem, with the file and key it concerns."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def deep_merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, nested mappings merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
