"""docs/configuration.md is the generator's output, and the generator documents every key of the config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from flows import config_reference
from fluxsr_core.config import PRESET_VALUES, FluxSRConfig

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_checked_in_page_is_the_generators_output():
    assert PAGE.read_text() == config_reference.render(), (
        f"docs/configuration.md is out of date with fluxsr_core/config/: regenerate it with "
        f"`{config_reference.REGENERATE}`")


def _keys_by_section(page: str) -> dict[str, set[str]]:
    """The rows of each section table of the page: {'train': {'steps', ...}, '': {'preset'}}."""
    out: dict[str, set[str]] = {}
    section = None
    for line in page.splitlines():
        heading = re.fullmatch(r"## (?:`(.+)`|Top level)", line)
        if heading:
            section = heading.group(1) or ""
            out[section] = set()
        elif line.startswith("## "):
            section = None
        elif section is not None and (row := re.match(r"\| `([^`]+)` \|", line)):
            out[section].add(row.group(1))
    return out


def _dotted(config: BaseModel, prefix: str = "") -> set[str]:
    """Every key of a config instance as ``fluxsr config show`` would print it, sections recursed into."""
    keys = set()
    for name in config.model_dump(mode="json"):
        value, dotted = getattr(config, name), f"{prefix}.{name}" if prefix else name
        keys |= _dotted(value, dotted) if isinstance(value, BaseModel) else {dotted}
    return keys


def test_every_key_of_a_dumped_config_has_a_row_in_its_section():
    """Cross-check against what ``fluxsr config show`` prints (a dump of the config), not the generator's walk."""
    documented = {f"{section}.{key}" if section else key
                  for section, keys in _keys_by_section(config_reference.render()).items() for key in keys}
    assert _dotted(FluxSRConfig()) == documented


def test_every_preset_override_is_in_the_preset_table():
    page = config_reference.render()
    table = page[page.index("## Presets"):]
    header = next(line for line in table.splitlines() if line.startswith("| key | default |"))
    for preset, values in PRESET_VALUES.items():
        assert f"`{preset}`" in header
        for key in _flatten(values):
            assert f"| `{key}` |" in table, f"{preset} sets {key}, missing from the preset table"


def _flatten(values: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else key
        out += _flatten(value, dotted) if isinstance(value, dict) else [dotted]
    return out


class _Inner(BaseModel):
    """An inner section."""

    depth: int = Field(3, ge=1, lt=9, description="How deep | really.")


class _Outer(BaseModel):
    """A section holding a nested one."""

    mode: Literal["a", "b"] = Field("a", description="Which mode.")
    names: list[str] | None = Field(default_factory=lambda: ["x"], description="Some names.")
    inner: _Inner = Field(default_factory=_Inner)


def test_nested_sections_types_bounds_and_defaults_are_walked_generically():
    assert [(name, model) for name, model in config_reference.sections(_Outer)] == [("", _Outer), ("inner", _Inner)]
    outer = config_reference.section_table(_Outer)
    assert outer[2:] == ['| `mode` | "a" \\| "b" | `"a"` | Which mode. |',
                         '| `names` | list[str] \\| null | `["x"]` | Some names. |']
    assert config_reference.section_table(_Inner)[2:] == ["| `depth` | int, ≥ 1, < 9 | `3` | How deep \\| really. |"]
