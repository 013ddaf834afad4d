"""Flow ``fluxsr-pipeline``: the stages in order (generate-pairs -> degrade -> encode -> train -> benchmark).

Stages that have not landed yet are absent; each stage is its own subflow, so a
re-run takes every finished unit from cache.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from storage.atomic import write_json
from flows.degrade import degrade
from flows.encode_latents import encode_latents
from flows.generate_pairs import generate_pairs
from flows.train import train


SUMMARY_NAME = "pipeline-summary.json"


@flow(name="fluxsr-pipeline")
def pipeline(out: str = "runs/demo", preset: str = "tiny", config_path: str | None = None,
             overrides: list[str] | None = None) -> dict:
    args = dict(out=out, preset=preset, config_path=config_path, overrides=overrides)
    summary = {"pairs": generate_pairs(**args)}
    summary["degrade"] = degrade(**args)
    summary["encode-latents"] = encode_latents(**args)
    summary["train"] = train(**args)
    write_json(Path(out) / SUMMARY_NAME, summary)  # for deployment runs, whose return value no terminal shows
    return summary


if __name__ == "__main__":
    pipeline()
