"""The configuration reference, docs/configuration.md, generated from the config models.

Walks ``FluxSRConfig``'s fields (each section a pydantic model, nested ones recursed into) and prints, per
section, every key with its type, constraints, default and ``Field(description=...)``, then what each preset in
``PRESET_VALUES`` sets over those defaults. Nothing here names a key, so a key added to ``fluxsr_core/config/``
appears on the next run: ``python -m flows.config_reference > docs/configuration.md``
(tests/flows/test_config_reference.py fails while the checked-in page differs).
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fluxsr_core.config import PRESET_VALUES, RENAMED_KEYS, RENAMED_SECTIONS, FluxSRConfig

REGENERATE = "python -m flows.config_reference > docs/configuration.md"

INTRO = f"""\
# Configuration reference

Generated from `fluxsr_core/config/` by `{REGENERATE}`; edit the models' `Field(description=...)`, not this page.

A config is a preset plus values over it. Every command takes `--preset NAME`, `--config FILE.yaml` (sections as
below, layered over the preset) and `--set KEY=VALUE` (repeatable; the value is read as YAML). A file or
`--set preset=...` that names another preset rebases the rest on it. An unknown key or a wrong type is an error
naming the file and the key. `fluxsr config show [--preset NAME]` prints every key with its value in force.

The **default** column is the model's own default; the preset in force (the tiny one unless named) may set
another value: see [Presets](#presets) at the end.
"""


def _cell(text: str) -> str:
    """Text fit for a Markdown table cell: pipes escaped, on one line."""
    return " ".join(text.split()).replace("|", "\\|")


def type_name(tp: Any) -> str:
    """A type annotation as a reader writes it: ``int``, ``str | null``, ``list[float]``, ``"ddp" | "fsdp"``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    return getattr(tp, "__name__", str(tp))


# pydantic's constraint metadata (annotated_types) by attribute, as written in the reference.
_BOUNDS = {"ge": "≥ {}", "gt": "> {}", "le": "≤ {}", "lt": "< {}", "min_length": "at least {} items",
           "max_length": "at most {} items"}


def constraints(field: FieldInfo) -> list[str]:
    """The field's bounds (``≥ 1``, ``< 1.0``), from its metadata."""
    out = []
    for meta in field.metadata:
        for attr, form in _BOUNDS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(form.format(value))
    return out


def default_text(field: FieldInfo) -> str:
    """The default as YAML/JSON would write it (``null``, ``true``, ``[0.2, 3.0]``), or ``required``."""
    if field.is_required():
        return "required"
    return json.dumps(field.get_default(call_default_factory=True), ensure_ascii=False)


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    tp = field.annotation
    return tp if inspect.isclass(tp) and issubclass(tp, BaseModel) else None


def sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """``(dotted name, model)`` of a model and every section nested in it, in definition order."""
    out = [(prefix, model)]
    for name, field in model.model_fields.items():
        sub = _section_model(field)
        if sub is not None:
            out += sections(sub, f"{prefix}.{name}" if prefix else name)
    return out


def section_table(model: type[BaseModel]) -> list[str]:
    """One row per key of a section (its nested sections have their own table)."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if _section_model(field) is not None:
            continue
        kind = ", ".join([type_name(field.annotation), *constraints(field)])
        rows.append(f"| `{name}` | {_cell(kind)} | `{_cell(default_text(field))}` | "
                    f"{_cell(field.description or '')} |")
    return rows


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def leaf_fields() -> dict[str, FieldInfo]:
    """Every key of the config, dotted (``train.steps``), in the order of the sections' tables."""
    return {f"{dotted}.{name}" if dotted else name: field
            for dotted, model in sections(FluxSRConfig)
            for name, field in model.model_fields.items() if _section_model(field) is None}


def preset_table() -> list[str]:
    """Every key a preset sets, one column per preset beside the default (blank: the preset leaves it)."""
    names = list(PRESET_VALUES)
    values = {name: _flatten(PRESET_VALUES[name]) for name in names}
    fields = leaf_fields()
    rows = ["| key | default | " + " | ".join(f"`{n}`" for n in names) + " |",
            "|---|---|" + "---|" * len(names)]
    for key, field in fields.items():
        if not any(key in values[n] for n in names):
            continue
        cells = [f"`{_cell(json.dumps(values[n][key], ensure_ascii=False))}`" if key in values[n] else ""
                 for n in names]
        rows.append(f"| `{key}` | `{_cell(default_text(field))}` | " + " | ".join(cells) + " |")
    return rows


def method_knob_tables() -> list[str]:
    """Per registered method, its knobs as the method declares them (``Method.knobs``, ``config_keys``)."""
    from fluxsr_core.methods import METHODS, method_class

    rows = ["## Method knobs", "",
            "Declared by each method (`fluxsr methods` prints the same). Inference knobs: `infer.knobs.NAME`, "
            "`fluxsr upscale --knob NAME=VALUE`, the WebUI, `FluxSRPipeline(image, NAME=VALUE)`, `bench.knobs`. "
            "Training parameters: the config key each is read from (in the training stage's key).", ""]
    for name in sorted(METHODS):
        cls = method_class(name)
        rows += [f"### {name}", "", "| knob | kind | type | range | default | what it does |", "|---|---|---|---|---|---|"]
        rows += [f"| `{k.name}` | inference | {k.kind.__name__} | {_cell(k.range_text())} | `{k.default!r}` | "
                 f"{_cell(k.help)} |" for k in cls.knobs]
        rows += [f"| `{k.name}` | training: `{k.key}` | {k.kind.__name__} | {_cell(k.range_text())} | "
                 f"`{k.default!r}` | see `{k.key}` above |" for k in cls.training_knobs()]
        rows.append("")
    return rows


def render() -> str:
    """The whole page."""
    lines = [INTRO]
    for dotted, model in sections(FluxSRConfig):
        title = f"`{dotted}`" if dotted else "Top level"
        lines += [f"## {title}", ""]
        doc = inspect.cleandoc(model.__doc__ or "")
        if doc:
            lines += [doc, ""]
        lines += [*section_table(model), ""]
    lines += ["## Presets", "",
              "What each preset sets over the defaults above; every other key keeps its default.", "",
              *preset_table(), ""]
    lines += [*method_knob_tables(), ""]
    if RENAMED_KEYS:
        lines += ["## Renamed keys", "", "An old name is an error that names the new one.", "",
                  "| old | new |", "|---|---|",
                  *(f"| `{old}` | `{new}` |" for old, new in {**RENAMED_SECTIONS, **RENAMED_KEYS}.items()), ""]
    return "\n".join(lines)


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
