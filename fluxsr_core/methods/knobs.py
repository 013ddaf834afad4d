"""What a method lets a user turn: one ``Knob`` a setting, declared by the method, read by every front end.

A method's inference knobs (``Method.knobs``: FTD's step fraction, OFTSR's τ, the sampling steps of the SR
teacher and MeanFlow) and its training parameters (``Method.config_keys``: each read from one config key) are
the one list that ``fluxsr methods``, the CLI's ``--knob NAME=VALUE``, the config's ``infer.knobs``, the WebUI's
controls, ``FluxSRPipeline.__call__``, the benchmark's rows and the training stage's cache key are built from.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fluxsr_core.errors import UsageError


@dataclass(frozen=True)
class Knob:
    """One setting of a method: its name, type, default, range and help; with a config ``key`` it is a training
    parameter (``trains``: it shapes the trained model and is in the training stage's key), without one an
    inference knob (how the model is run)."""

    name: str
    kind: type  # int, float or str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    key: str | None = None  # a training parameter's config key (section.field)

    @property
    def trains(self) -> bool:
        return self.key is not None

    def check(self, value: Any, method: str) -> Any:
        """``value`` as this knob's type, inside its range; otherwise an error naming method, knob and range."""
        try:
            if self.kind is int and float(value) != int(float(value)):
                raise ValueError
            v = int(float(value)) if self.kind is int else self.kind(value)
        except (TypeError, ValueError):
            raise UsageError(f"{method} knob {self.name}={value!r}: not {'an' if self.kind is int else 'a'} "
                             f"{self.kind.__name__} ({self.describe()})") from None
        if (self.low is not None and v < self.low) or (self.high is not None and v > self.high) or \
                (self.choices is not None and v not in self.choices):
            raise UsageError(f"{method} knob {self.name}={value!r} is out of range: {self.describe()}")
        return v

    def range_text(self) -> str:
        if self.choices is not None:
            return " | ".join(map(str, self.choices))
        if self.kind is bool:
            return "true | false"
        if self.low is None and self.high is None:
            return "any"
        if self.high is None:
            return f">= {self.low:g}"
        if self.low is None:
            return f"<= {self.high:g}"
        return f"[{self.low:g}, {self.high:g}]"

    def describe(self) -> str:
        return f"{self.name}: {self.kind.__name__} {self.range_text()}, default {self.default!r}"


def field_knob(param: str, key: str, config_model) -> Knob:
    """The training parameter ``param`` of a method, read from the config key ``key`` (``section.field``) of
    ``config_model`` (``FluxSRConfig``): type, default, bounds and help from the field's declaration."""
    from typing import Literal, get_args, get_origin

    section, name = key.split(".")
    info = config_model.model_fields[section].annotation.model_fields[name]
    annotation, choices = info.annotation, None
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        annotation = type(choices[0])
    low = high = None
    for m in info.metadata:  # pydantic's bound markers for Field(ge=..., gt=..., le=..., lt=...)
        low = next((getattr(m, a) for a in ("ge", "gt") if hasattr(m, a)), low)
        high = next((getattr(m, a) for a in ("le", "lt") if hasattr(m, a)), high)
    kind = annotation if annotation in (int, float, str, bool) else str
    return Knob(param, kind, info.default, info.description or "", low=low, high=high, choices=choices, key=key)
